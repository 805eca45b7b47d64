//! flowrt's built-in tools, in Rust: what promptflow's `prompt`, `llm` and `embedding` tools do.
//!
//! This crate owns
//! - Jinja2-compatible prompt rendering ([`render_prompt`]): minijinja with promptflow's settings
//!   (`trim_blocks`, `keep_trailing_newline`, no `lstrip_blocks`), Python-style printing of values
//!   (`True`, `None`, `0.1`, `['a', 1]`) and Jinja2's flavours of `round`, `title`, `join`, `string`,
//!   `replace` and `tojson`;
//! - chat prompts ([`build_chat_messages`], [`parse_chat`]): role lines (`# system:`, `user:`, ...),
//!   `name:`/`tool_call_id:`/`tool_calls:` sections, and escaping of role markers inside flow inputs;
//! - the LLM and embedding HTTP clients ([`LlmClient`]) for `open_ai`, `azure_open_ai` and
//!   `serverless` connections, with promptflow's parameter handling and retries that honour
//!   `Retry-After`;
//! - `.prompty` files ([`execute_prompty`]): render a loaded [`flowrt_flow::Prompty`], call its
//!   model and shape the reply as promptflow's `Prompty` does.
//!
//! It does not own flow parsing, scheduling, connection storage or Python tools: the executor decides
//! what to call and passes connections in.

mod chat;
mod client;
mod entra;
mod error;
mod governor;
mod open_model;
mod params;
mod prompty;
mod prompty_images;
mod pyfmt;
mod pylit;
mod render;

pub use chat::{
    build_chat_messages, build_chat_messages_for, parse_chat, render_prompt_result, ChatFlavor,
    PromptEscape, TemplateVar, VALID_ROLES,
};
pub use client::{
    ContentStream, LlmApi, LlmCall, LlmClient, LlmResult, RetryCause, RetryEvent, RetryListener,
    RetryPolicy, Usage,
};
pub use entra::sign_in_as_session_identity;
pub use error::ToolError;
pub use governor::{counting_answers, rate_statuses, RateStatus};
pub use open_model::{ModelFamily, OpenModelEndpoint};
pub use prompty::{
    execute_prompty, execute_prompty_streamed, render_prompt_template, render_prompty,
    resolve_prompty_connection, resolve_prompty_inputs, PromptyOutcome,
};
pub use pyfmt::py_float_repr;
pub use render::{render_prompt, template_variables};
