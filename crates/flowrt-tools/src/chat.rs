//! Chat prompts: promptflow's `parse_chat` (role lines such as `# user:`), and the escaping of role
//! markers inside user-provided values so that they cannot open new messages.

use crate::error::ToolError;
use crate::pyfmt::ListStyle;
use crate::pylit;
use crate::render::render_with;
use indexmap::IndexMap;
use regex::Regex;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::sync::OnceLock;

/// The roles the Chat API accepts, in promptflow's order.
pub const VALID_ROLES: [&str; 5] = ["system", "user", "assistant", "function", "tool"];

/// A template variable of an LLM node.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateVar {
    pub value: Value,
    /// `true` for values that come from flow inputs: role markers inside them are escaped so they
    /// stay inside the message they are rendered into. `false` for values from other nodes.
    pub escape_roles: bool,
    /// Set when the value is a prompt node's output whose flow-input values carried role markers:
    /// those markers stay escaped here too (promptflow's `PromptResult`).
    pub prompt: Option<Arc<PromptEscape>>,
}

impl TemplateVar {
    /// A value whose role markers are escaped (a flow input).
    pub fn escaped(value: Value) -> Self {
        TemplateVar {
            value,
            escape_roles: true,
            prompt: None,
        }
    }

    /// A value used as it is (a literal or another node's output).
    pub fn plain(value: Value) -> Self {
        TemplateVar {
            value,
            escape_roles: false,
            prompt: None,
        }
    }
}

/// What promptflow's `PromptResult` adds to a prompt node's text: the same rendering with the role
/// markers of its flow-input values escaped, and the tokens that undo it.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptEscape {
    escaped: String,
    dict: EscapeDict,
}

/// Render a prompt node's template. Besides the text (the node's output), returns the escaped
/// rendering when flow-input values (or prompt results it reads) carried role markers, so an LLM
/// node reading this output keeps them inside their message, as promptflow does.
pub fn render_prompt_result(
    template: &str,
    vars: &IndexMap<String, TemplateVar>,
) -> Result<(String, Option<PromptEscape>), ToolError> {
    let plain: IndexMap<String, Value> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    let text = crate::render_prompt(template, &plain)?;
    let dict = escape_dict(vars, Walk::OPEN_AI);
    if dict.is_empty() {
        return Ok((text, None));
    }
    let ctx = escaped_context(vars, Walk::OPEN_AI, &dict);
    let escaped = render_with(
        template,
        minijinja::Value::from_serialize(&ctx),
        ListStyle::Repr,
    )?;
    Ok((text, Some(PromptEscape { escaped, dict })))
}

/// The escape tokens for these variables: roles found in flow-input values, plus those carried by
/// prompt results.
fn escape_dict(vars: &IndexMap<String, TemplateVar>, walk: Walk) -> EscapeDict {
    let mut dict = EscapeDict::new();
    for var in vars.values() {
        if let Some(p) = &var.prompt {
            dict.extend(p.dict.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    for var in vars.values().filter(|v| v.escape_roles) {
        collect_roles(&var.value, walk, &mut dict);
    }
    dict
}

/// The variables as the template sees them while escaping: flow inputs escaped, prompt results
/// replaced by their escaped rendering.
fn escaped_context<'a>(
    vars: &'a IndexMap<String, TemplateVar>,
    walk: Walk,
    dict: &EscapeDict,
) -> IndexMap<&'a str, Value> {
    vars.iter()
        .map(|(k, v)| {
            let value = match &v.prompt {
                Some(p) => Value::String(p.escaped.clone()),
                None if v.escape_roles && !dict.is_empty() => escape_value(&v.value, walk, dict),
                None => v.value.clone(),
            };
            (k.as_str(), value)
        })
        .collect()
}

/// Which promptflow tool's chat behaviour to follow. They differ in how list values are treated:
/// the Azure OpenAI tool turns every list into a `ChatInputList` (printed as its items' `str()`
/// joined by newlines, and escaped item by item), the OpenAI tool leaves lists alone (printed as
/// Python lists, role markers inside them are not escaped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ChatFlavor {
    #[default]
    OpenAi,
    AzureOpenAi,
}

/// Which containers role escaping looks into.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Walk {
    lists: bool,
    objects: bool,
}

impl Walk {
    const OPEN_AI: Walk = Walk {
        lists: false,
        objects: true,
    };
    /// A `.prompty` (promptflow-core's `Escaper`) escapes top-level strings only: values inside
    /// lists and dicts are left as they are.
    pub(crate) const PROMPTY: Walk = Walk {
        lists: false,
        objects: false,
    };
}

impl ChatFlavor {
    pub(crate) fn walk(self) -> Walk {
        match self {
            ChatFlavor::OpenAi => Walk::OPEN_AI,
            ChatFlavor::AzureOpenAi => Walk {
                lists: true,
                objects: true,
            },
        }
    }
}

fn cached(cell: &'static OnceLock<Option<Regex>>, pattern: &str) -> Option<&'static Regex> {
    cell.get_or_init(|| Regex::new(pattern).ok()).as_ref()
}

fn separator_re() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    cached(
        &RE,
        r"(?im)^\s*#?\s*(system|user|assistant|function|tool)\s*:\s*\n",
    )
}

fn name_content_re() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    cached(
        &RE,
        r"(?s)\n*#{0,2}\s*name\s*:\s*\n+\s*(\S+)\s*\n*#{0,2}\s*content\s*:\s*\n?(.*)",
    )
}

fn tool_call_id_re() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    cached(
        &RE,
        r"(?s)\n*#{0,2}\s*tool_call_id\s*:\s*\n+\s*(\S+)\s*\n*#{0,2}\s*content\s*:\s*\n?(.*)",
    )
}

fn tool_calls_re() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    cached(&RE, r"(?s)\n*#{0,2}\s*tool_calls\s*:\s*\n+\s*(\[.*?\])")
}

/// Role names mapped from their escape tokens (token -> role as written, e.g. `"Assistant"`).
pub(crate) type EscapeDict = IndexMap<String, String>;

fn new_token() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut words = [0u64; 2];
    for (i, w) in words.iter_mut().enumerate() {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_usize(i);
        *w = h.finish();
    }
    let hex = format!("{:016x}{:016x}", words[0], words[1]);
    // uuid4-shaped, like promptflow's tokens.
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

fn collect_roles(value: &Value, walk: Walk, dict: &mut EscapeDict) {
    match value {
        Value::String(s) => {
            let Some(re) = separator_re() else { return };
            for caps in re.captures_iter(s) {
                if let Some(role) = caps.get(1) {
                    let role = role.as_str();
                    if !dict.values().any(|r| r == role) {
                        dict.insert(new_token(), role.to_string());
                    }
                }
            }
        }
        Value::Object(map) if walk.objects => {
            map.values().for_each(|v| collect_roles(v, walk, dict))
        }
        Value::Array(items) if walk.lists => {
            items.iter().for_each(|v| collect_roles(v, walk, dict))
        }
        _ => {}
    }
}

fn escape_value(value: &Value, walk: Walk, dict: &EscapeDict) -> Value {
    match value {
        Value::String(s) => {
            let mut s = s.clone();
            for (token, role) in dict {
                s = s.replace(role.as_str(), token);
            }
            Value::String(s)
        }
        Value::Object(map) if walk.objects => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), escape_value(v, walk, dict)))
                .collect(),
        ),
        Value::Array(items) if walk.lists => {
            Value::Array(items.iter().map(|v| escape_value(v, walk, dict)).collect())
        }
        other => other.clone(),
    }
}

pub(crate) fn unescape(s: &str, dict: &EscapeDict) -> String {
    let mut s = s.to_string();
    for (token, role) in dict {
        s = s.replace(token.as_str(), role);
    }
    s
}

/// Render a chat template and split it into OpenAI message objects, as promptflow's OpenAI tool does.
pub fn build_chat_messages(
    template: &str,
    vars: &IndexMap<String, TemplateVar>,
) -> Result<Vec<Value>, ToolError> {
    build_chat_messages_for(template, vars, ChatFlavor::OpenAi)
}

/// [`build_chat_messages`] following the given tool's treatment of list values.
pub fn build_chat_messages_for(
    template: &str,
    vars: &IndexMap<String, TemplateVar>,
    flavor: ChatFlavor,
) -> Result<Vec<Value>, ToolError> {
    let style = match flavor {
        ChatFlavor::OpenAi => ListStyle::Repr,
        ChatFlavor::AzureOpenAi => ListStyle::ChatLines,
    };
    build_messages_with(template, vars, flavor.walk(), style)
}

/// Render and split a chat template, escaping role markers in the containers `walk` names and
/// printing lists in `style`.
pub(crate) fn build_messages_with(
    template: &str,
    vars: &IndexMap<String, TemplateVar>,
    walk: Walk,
    style: ListStyle,
) -> Result<Vec<Value>, ToolError> {
    let dict = escape_dict(vars, walk);
    let ctx = escaped_context(vars, walk, &dict);
    let rendered = render_with(template, minijinja::Value::from_serialize(&ctx), style).map_err(
        |e| match e {
            ToolError::Template { message, line } => ToolError::Template {
                message: unescape(&message, &dict),
                line,
            },
            other => other,
        },
    )?;
    let mut messages = parse_chat_escaped(&rendered, &dict)?;
    if !dict.is_empty() {
        for message in &mut messages {
            if let Value::Object(map) = message {
                for v in map.values_mut() {
                    if let Value::String(s) = v {
                        *s = unescape(s, &dict);
                    }
                }
            }
        }
    }
    Ok(messages)
}

/// promptflow's `parse_chat`: split a rendered chat prompt on role lines (`system:`, `# user:`, ...,
/// case-insensitive, alone on their line) into message objects with stripped contents. Text before
/// the first role line is an error, as is a prompt without any.
pub fn parse_chat(chat: &str) -> Result<Vec<Value>, ToolError> {
    parse_chat_escaped(chat, &EscapeDict::new())
}

fn invalid_role(role: &str, dict: &EscapeDict) -> ToolError {
    let valid = VALID_ROLES
        .iter()
        .map(|r| format!("'{r}:\\n'"))
        .collect::<Vec<_>>()
        .join(",");
    ToolError::ChatFormat {
        message: format!(
            "The Chat API requires a specific format for prompt definition, and the prompt should \
             include separate lines as role delimiters: {valid}. Current parsed role '{}' does not \
             meet the requirement. If you intend to use the Completion API, please select the \
             appropriate API type and deployment name. If you do intend to use the Chat API, please \
             refer to the guideline at https://aka.ms/pfdoc/chat-prompt or view the samples in our \
             gallery that contain 'Chat' in the name.",
            unescape(role, dict)
        ),
    }
}

/// Python's `re.split` with one capturing group: text, role, text, role, ..., text.
fn split_on_roles(chat: &str) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut last = 0;
    let Some(re) = separator_re() else {
        return vec![chat];
    };
    for caps in re.captures_iter(chat) {
        let (Some(whole), Some(role)) = (caps.get(0), caps.get(1)) else {
            continue;
        };
        chunks.push(&chat[last..whole.start()]);
        chunks.push(role.as_str());
        last = whole.end();
    }
    chunks.push(&chat[last..]);
    chunks
}

fn parse_chat_escaped(chat: &str, dict: &EscapeDict) -> Result<Vec<Value>, ToolError> {
    let mut messages: Vec<Map<String, Value>> = Vec::new();
    for chunk in split_on_roles(chat) {
        if let Some(last) = messages.last_mut() {
            let role = last
                .get("role")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let open = !last.contains_key("content") && !last.contains_key("tool_calls");
            if role == "tool" && open {
                let caps = tool_call_id_re().and_then(|re| re.captures(chunk)).ok_or_else(|| ToolError::ChatFormat {
                    message: "Failed to parse tool role prompt. Please make sure the prompt follows \
                              the format: 'tool_call_id:\\ntool_call_id\\ncontent:\\ntool_content'. \
                              'tool_call_id' is required if role is tool, and it should be the tool \
                              call that this message is responding to."
                        .into(),
                })?;
                last.insert("tool_call_id".into(), json!(cap(&caps, 1)));
                last.insert("content".into(), json!(cap(&caps, 2).trim()));
                continue;
            }
            if role == "assistant" {
                if let Some(calls) = tool_calls_re()
                    .and_then(|re| re.captures(chunk))
                    .and_then(|caps| pylit::parse(cap(&caps, 1)))
                {
                    last.insert("tool_calls".into(), calls);
                    continue;
                }
            }
            if open {
                match name_content_re().and_then(|re| re.captures(chunk)) {
                    Some(caps) => {
                        last.insert("name".into(), json!(cap(&caps, 1)));
                        last.insert("content".into(), json!(cap(&caps, 2).trim()));
                    }
                    None if role == "function" => {
                        return Err(ToolError::ChatFormat {
                            message: "Failed to parse function role prompt. Please make sure the \
                                      prompt follows the format: 'name:\\nfunction_name\\ncontent:\\n\
                                      function_content'. 'name' is required if role is function, and \
                                      it should be the name of the function whose response is in the \
                                      content."
                                .into(),
                        });
                    }
                    None => {
                        last.insert("content".into(), json!(chunk.trim()));
                    }
                }
                continue;
            }
        }
        if chunk.trim().is_empty() {
            continue;
        }
        let role = chunk.trim().to_lowercase();
        if !VALID_ROLES.contains(&role.as_str()) {
            return Err(invalid_role(&role, dict));
        }
        let mut message = Map::new();
        message.insert("role".into(), Value::String(role));
        messages.push(message);
    }
    Ok(messages.into_iter().map(Value::Object).collect())
}

fn cap<'h>(caps: &regex::Captures<'h>, i: usize) -> &'h str {
    caps.get(i).map(|m| m.as_str()).unwrap_or("")
}
