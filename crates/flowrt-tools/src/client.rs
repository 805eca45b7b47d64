//! The LLM and embedding HTTP clients: endpoints per connection kind, request bodies, retries.

use crate::chat::{build_chat_messages_for, ChatFlavor, TemplateVar};
use crate::error::ToolError;
use crate::params::{chat_body, completion_body, split_inputs};
use crate::pyfmt::ListStyle;
use crate::render::render_with;
use flowrt_api::connection::{Connection, ConnectionKind};
use futures::Stream;
use indexmap::IndexMap;
use serde_json::{json, Value};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Which OpenAI API an `llm` node calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LlmApi {
    Chat,
    Completion,
}

/// One `llm` node invocation.
#[derive(Debug)]
pub struct LlmCall<'a> {
    pub api: LlmApi,
    pub connection: &'a Connection,
    /// The node's prompt template (Jinja2).
    pub template: &'a str,
    /// All node inputs: API parameters (`model`, `deployment_name`, `temperature`, `max_tokens`, ...)
    /// are split off and converted; every other input is a template variable.
    pub inputs: IndexMap<String, TemplateVar>,
    /// Set for promptflow-tools' vision chat tools (`aoai_gpt4v`, `openai_gpt4v`): image inputs
    /// (promptflow's `{"data:image/<fmt>;path|url|base64": ...}` values, alone or in lists) are
    /// sent as image parts of their message, lists render one item a line, and `path` images
    /// are read from this folder (the flow's).
    pub vision: Option<&'a std::path::Path>,
}

/// Token counts reported by the service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// What an `llm` node returns.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmResult {
    /// The assistant's content (a string, `null` when the reply has none), the completion text, or
    /// — when functions or tools were passed — the whole message object as promptflow returns it.
    pub output: Value,
    pub usage: Option<Usage>,
    /// The request body sent (model, messages or prompt, parameters): what a trace shows of the
    /// call. It holds no credential (those travel in headers).
    pub request: Value,
}

/// How long a plain-`http` (local) endpoint may take to accept a connection before it is asked
/// again. A small server's full accept queue drops the attempt, and the kernel would only resend
/// it after a second: asking again at once costs nothing.
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// How many times in a row a request re-asks for a connection that was not accepted in time.
const LOCAL_CONNECT_REASKS: u32 = 5;

/// How failed requests are retried: HTTP 429, 5xx (and up to 3 consecutive 422s) and timeouts are
/// retried up to `max_retries` times, waiting what `Retry-After` / `retry-after-ms` says or else
/// `base_delay * 2^n` with jitter, never longer than `max_delay`. A request that never reached a
/// server (connection refused, no such host) is tried only `max_connect_retries` more times, after
/// `connect_delay`: a dead endpoint stays dead, and waiting minutes for it helps nobody.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_connect_retries: u32,
    pub connect_delay: Duration,
    /// How long one request may keep getting HTTP 429 before it fails. A 429 is the quota
    /// speaking, not a failure: it does not count against `max_retries`, and the endpoint's
    /// governor paces every request after it.
    pub rate_limit_budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_connect_retries: 2,
            connect_delay: Duration::from_millis(250),
            rate_limit_budget: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            max_connect_retries: 0,
            connect_delay: Duration::ZERO,
            rate_limit_budget: Duration::ZERO,
        }
    }

    /// The wait before retry number `retry` (0-based) when the server gave no `Retry-After`:
    /// exponential, capped, with jitter in `[d/2, d]`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.min(30)));
        let capped = exp.min(self.max_delay);
        let jitter = 0.5 + 0.5 * random_unit();
        capped.mul_f64(jitter)
    }
}

fn random_unit() -> f64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Why a request is being retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryCause {
    /// HTTP 429: the service asked us to slow down.
    RateLimited,
    /// 5xx or 422: the service failed this time.
    ServerError,
    /// The request never reached a server (refused, no such host).
    Unreachable,
    /// The request timed out or broke off mid-way.
    Network,
}

/// One retry about to happen: what failed and how long the client waits before the next attempt.
/// URLs are redacted (no keys in query strings).
#[derive(Clone, Debug)]
pub struct RetryEvent {
    pub url: String,
    pub cause: RetryCause,
    /// What failed, e.g. `HTTP 429: Rate limit reached` or `connection refused`.
    pub failure: String,
    /// The attempt that just failed (1-based) and the most attempts this cause allows (0 for a
    /// 429: rate limits are bounded by time, `RetryPolicy::rate_limit_budget`).
    pub attempt: u32,
    pub max_attempts: u32,
    pub wait: Duration,
}

impl fmt::Display for RetryEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.max_attempts == 0 {
            return write!(
                f,
                "{} is over its quota (attempt {}): {}; requests there are paced to it, retrying in {:.1} s or when its turn comes",
                self.url,
                self.attempt,
                self.failure,
                self.wait.as_secs_f64()
            );
        }
        write!(
            f,
            "{} failed (attempt {} of {}): {}; retrying in {:.1} s",
            self.url,
            self.attempt,
            self.max_attempts,
            self.failure,
            self.wait.as_secs_f64()
        )
    }
}

/// Told about every retry, so a CLI can say what it is waiting for instead of going silent.
pub type RetryListener = Arc<dyn Fn(&RetryEvent) + Send + Sync>;

/// A stream of content pieces from a streamed LLM reply.
pub type ContentStream = Pin<Box<dyn Stream<Item = Result<String, ToolError>> + Send>>;

/// The HTTP client for LLM and embedding calls. Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct LlmClient {
    /// For `https` endpoints: keeps connections alive (a TLS handshake costs a round trip or more).
    http: reqwest::Client,
    /// For plain `http` endpoints, which are local model servers (Ollama, vLLM, llama.cpp, test
    /// servers): a fresh connection per request. Connecting costs microseconds there, while reusing
    /// a connection stalls ~40 ms per reply against servers that write headers and body separately
    /// without TCP_NODELAY (Nagle meeting delayed ACK), as Python's http.server does.
    http_local: reqwest::Client,
    /// The same with the usual connect timeout: for a plain-`http` endpoint that is far away
    /// after all (it did not accept within `LOCAL_CONNECT_TIMEOUT`, again and again).
    http_far: reqwest::Client,
    policy: RetryPolicy,
    listener: Option<RetryListener>,
}

impl fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmClient")
            .field("policy", &self.policy)
            .finish()
    }
}

impl Default for LlmClient {
    fn default() -> Self {
        LlmClient::new(RetryPolicy::default())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Chat,
    Completion,
    Embedding,
}

impl Op {
    fn path(self) -> &'static str {
        match self {
            Op::Chat => "chat/completions",
            Op::Completion => "completions",
            Op::Embedding => "embeddings",
        }
    }
}

#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) secret: Option<String>,
    /// Sign each request with a Microsoft Entra ID bearer token (an Azure endpoint without a
    /// key), fetched per attempt from the credential chain's cache.
    pub(crate) entra_id: bool,
    /// The quota its connection declares (`rpm`, `tpm`), the governor's start.
    pub(crate) declared: crate::governor::Declared,
}

impl Endpoint {
    /// Remove the API key from text that is about to go into an error.
    fn redact(&self, text: &str) -> String {
        match &self.secret {
            Some(secret) if !secret.is_empty() => text.replace(secret.as_str(), "******"),
            _ => text.to_string(),
        }
    }
}

fn flavor_of(conn: &Connection, tool: &str) -> Result<ChatFlavor, ToolError> {
    match conn.kind {
        ConnectionKind::OpenAi | ConnectionKind::Serverless => Ok(ChatFlavor::OpenAi),
        ConnectionKind::AzureOpenAi => Ok(ChatFlavor::AzureOpenAi),
        // Not a model endpoint: a search, a vector store, a custom service.
        _ => Err(ToolError::UnsupportedConnection {
            connection: conn.name.clone(),
            kind: conn.kind.as_str().to_string(),
            tool: tool.to_string(),
            expected: "open_ai, azure_open_ai or serverless".into(),
        }),
    }
}

/// The quota a connection declares: requests (`rpm: 1200`) and tokens (`tpm: 120000`) a minute,
/// and how long a call may keep meeting it (`rate_limit_budget_s: 1800`).
fn declared(conn: &Connection) -> crate::governor::Declared {
    let per_minute = |key: &str| {
        non_empty(conn, key)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|r| r.is_finite() && *r > 0.0)
    };
    crate::governor::Declared {
        rpm: per_minute("rpm"),
        tpm: per_minute("tpm"),
        rate_limit_budget: per_minute("rate_limit_budget_s").map(Duration::from_secs_f64),
    }
}

/// The tokens a quota counts for a request, as Azure estimates them at admission: its prompt's
/// text at four characters a token, plus the `max_tokens` it may generate.
fn request_tokens(body: &Value) -> f64 {
    fn chars(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(chars).sum(),
            Value::Object(m) => m.values().map(chars).sum(),
            _ => 0,
        }
    }
    let prompt = body
        .get("messages")
        .or_else(|| body.get("prompt"))
        .or_else(|| body.get("input"))
        .map_or(0, chars);
    prompt as f64 / 4.0
        + body
            .get("max_tokens")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
}

fn non_empty<'c>(conn: &'c Connection, key: &str) -> Option<&'c str> {
    conn.get(key).map(str::trim).filter(|s| !s.is_empty())
}

fn required<'c>(conn: &'c Connection, key: &str) -> Result<&'c str, ToolError> {
    non_empty(conn, key).ok_or_else(|| ToolError::ConnectionField {
        connection: conn.name.clone(),
        field: key.to_string(),
    })
}

/// Whether an Azure connection is called with an Entra ID token rather than a key: promptflow's
/// `auth_mode: meid_token`, or no key at all (a prompty configuration naming none).
fn keyless(conn: &Connection) -> bool {
    conn.config("auth_mode") == Some("meid_token") || non_empty(conn, "api_key").is_none()
}

pub(crate) fn endpoint(conn: &Connection, op: Op, deployment: &str) -> Result<Endpoint, ToolError> {
    let api_key = || required(conn, "api_key").map(str::to_string);
    match conn.kind {
        ConnectionKind::AzureOpenAi => {
            let base = required(conn, "api_base")?.trim_end_matches('/');
            let version = non_empty(conn, "api_version").unwrap_or("2024-02-01");
            if deployment.is_empty() {
                return Err(ToolError::bad_param(
                    "deployment_name",
                    "is required with an azure_open_ai connection",
                ));
            }
            let entra_id = keyless(conn);
            let mut headers = vec![("ms-azure-ai-promptflow-called-from", "aoai-tool".into())];
            let secret = if entra_id {
                None
            } else {
                let key = api_key()?;
                headers.insert(0, ("api-key", key.clone()));
                Some(key)
            };
            Ok(Endpoint {
                url: format!(
                    "{base}/openai/deployments/{}/{}?api-version={}",
                    encode_segment(deployment),
                    op.path(),
                    encode_segment(version)
                ),
                headers,
                secret,
                entra_id,
                declared: declared(conn),
            })
        }
        ConnectionKind::OpenAi => {
            let api_key = api_key()?;
            let base = non_empty(conn, "base_url")
                .unwrap_or("https://api.openai.com/v1")
                .trim_end_matches('/');
            let mut headers = vec![("authorization", format!("Bearer {api_key}"))];
            if let Some(org) = non_empty(conn, "organization") {
                headers.push(("openai-organization", org.to_string()));
            }
            Ok(Endpoint {
                url: format!("{base}/{}", op.path()),
                headers,
                secret: Some(api_key),
                entra_id: false,
                declared: declared(conn),
            })
        }
        ConnectionKind::Serverless => {
            let api_key = api_key()?;
            let mut base = required(conn, "api_base")?
                .trim_end_matches('/')
                .to_string();
            if !base.ends_with("/v1") {
                base.push_str("/v1");
            }
            Ok(Endpoint {
                url: format!("{base}/{}", op.path()),
                headers: vec![("authorization", format!("Bearer {api_key}"))],
                secret: Some(api_key),
                entra_id: false,
                declared: declared(conn),
            })
        }
        _ => Err(ToolError::UnsupportedConnection {
            connection: conn.name.clone(),
            kind: conn.kind.as_str().to_string(),
            tool: "llm".into(),
            expected: "open_ai, azure_open_ai or serverless".into(),
        }),
    }
}

fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A service tool's connection must be of the kind the tool reads.
pub(crate) fn require_kind(
    connection: &Connection,
    kind: ConnectionKind,
    tool: &str,
) -> Result<(), ToolError> {
    if connection.kind == kind {
        return Ok(());
    }
    Err(ToolError::UnsupportedConnection {
        connection: connection.name.clone(),
        kind: connection.kind.as_str().to_string(),
        tool: tool.to_string(),
        expected: kind.as_str().to_string(),
    })
}

pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max).collect();
    out.push_str("...");
    out
}

/// The server's error message (`{"error": {"message": ...}}`), else an excerpt of the body.
fn error_message(body: &str) -> (String, Option<String>) {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let err = v.get("error").unwrap_or(&v);
        let kind = err
            .get("type")
            .or_else(|| err.get("code"))
            .and_then(Value::as_str)
            .map(String::from);
        if let Some(msg) = err.get("message").and_then(Value::as_str) {
            return (msg.to_string(), kind);
        }
        if let Some(msg) = err.as_str() {
            return (msg.to_string(), kind);
        }
    }
    if body.trim().is_empty() {
        return ("(empty body)".into(), None);
    }
    (excerpt(body, 500), None)
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let secs = get("retry-after")?.parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// When a successful reply says the quota is spent (`x-ratelimit-remaining-requests` or
/// `-tokens` is 0), how long until it has room again (`x-ratelimit-reset-requests` / `-tokens`,
/// as OpenAI writes them: `1s`, `6m0s`, `20ms`), else a second.
fn quota_spent(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    ["requests", "tokens"].iter().find_map(|what| {
        let left: f64 = get(&format!("x-ratelimit-remaining-{what}"))?
            .parse()
            .ok()?;
        (left <= 0.0).then(|| {
            get(&format!("x-ratelimit-reset-{what}"))
                .and_then(parse_reset)
                .unwrap_or(Duration::from_secs(1))
        })
    })
}

/// `6m0s`, `1.5s`, `20ms`, `1h2m` or plain seconds.
fn parse_reset(text: &str) -> Option<Duration> {
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        total += value * unit;
        rest = &rest[len..];
    }
    Some(Duration::from_secs_f64(total))
}

fn describe(err: &reqwest::Error) -> String {
    let mut msg = if err.is_timeout() {
        "request timed out".to_string()
    } else if err.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(err);
    let mut last = String::new();
    while let Some(s) = source {
        let text = s.to_string();
        if text != last {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        last = text;
        source = s.source();
    }
    msg
}

pub(crate) fn usage_of(resp: &Value) -> Option<Usage> {
    let u = resp.get("usage")?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt_tokens: n("prompt_tokens"),
        completion_tokens: n("completion_tokens"),
        total_tokens: n("total_tokens"),
    })
}

pub(crate) fn first_choice<'v>(resp: &'v Value, url: &str) -> Result<&'v Value, ToolError> {
    resp.get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| ToolError::BadResponse {
            url: url.to_string(),
            message: format!("no choices in {}", excerpt(&resp.to_string(), 300)),
        })
}

struct Prepared {
    endpoint: Endpoint,
    body: Value,
    whole_message: bool,
    chat: bool,
}

impl LlmClient {
    /// A client with its own connection pool and the given retry policy.
    pub fn new(policy: RetryPolicy) -> Self {
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(30))
                .timeout(Duration::from_secs(600))
                .tcp_nodelay(true)
        };
        let http = builder().build().unwrap_or_else(|_| reqwest::Client::new());
        let http_local = builder()
            .pool_max_idle_per_host(0)
            .connect_timeout(LOCAL_CONNECT_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let http_far = builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        LlmClient {
            http,
            http_local,
            http_far,
            policy,
            listener: None,
        }
    }

    /// The same client, telling `listener` about every retry before it waits.
    pub fn with_retry_listener(mut self, listener: RetryListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// The retry policy in use.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    fn prepare(&self, call: LlmCall<'_>, stream: bool) -> Result<Prepared, ToolError> {
        let flavor = flavor_of(call.connection, "llm")?;
        let chat = call.api == LlmApi::Chat;
        let split = split_inputs(call.inputs, flavor, chat)?;
        let deployment = split
            .params
            .get("deployment_name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let (mut body, whole_message, op) = if chat {
            let (mut body, whole) = chat_body(&split.params, flavor)?;
            if stream && whole {
                return Err(ToolError::bad_param(
                    "stream",
                    "function calling is not supported in stream mode",
                ));
            }
            let messages = match call.vision {
                None => build_chat_messages_for(call.template, &split.vars, flavor)?,
                Some(dir) => {
                    crate::prompty_images::vision_messages(call.template, split.vars, flavor, dir)?
                }
            };
            body.insert("messages".into(), Value::Array(messages));
            (body, whole, Op::Chat)
        } else {
            let mut body = completion_body(&split.params, flavor)?;
            let vars: IndexMap<&str, &Value> = split
                .vars
                .iter()
                .map(|(k, v)| (k.as_str(), &v.value))
                .collect();
            let prompt = render_with(
                call.template,
                minijinja::Value::from_serialize(&vars),
                ListStyle::Repr,
            )?;
            body.insert("prompt".into(), Value::String(prompt));
            (body, false, Op::Completion)
        };
        if stream {
            body.insert("stream".into(), json!(true));
        }
        Ok(Prepared {
            endpoint: endpoint(call.connection, op, &deployment)?,
            body: Value::Object(body),
            whole_message,
            chat,
        })
    }

    /// Run an `llm` node: render the template, call the chat or completion API, return the reply.
    pub async fn run_llm(&self, call: LlmCall<'_>) -> Result<LlmResult, ToolError> {
        let prepared = self.prepare(call, false)?;
        let resp = self.post_json(&prepared.endpoint, &prepared.body).await?;
        let choice = first_choice(&resp, &prepared.endpoint.url)?;
        let output = if prepared.chat {
            let message = choice.get("message").cloned().unwrap_or(Value::Null);
            if prepared.whole_message {
                let mut message = message;
                if let Value::Object(map) = &mut message {
                    for key in ["content", "function_call", "tool_calls"] {
                        map.entry(key).or_insert(Value::Null);
                    }
                }
                message
            } else {
                message.get("content").cloned().unwrap_or(Value::Null)
            }
        } else {
            choice.get("text").cloned().unwrap_or_else(|| json!(""))
        };
        Ok(LlmResult {
            output,
            usage: usage_of(&resp),
            request: prepared.body.clone(),
        })
    }

    /// Run an `llm` node with `stream: true`: the reply's content pieces as they arrive
    /// (chat: `delta.content`, completion: `text`). Retries apply until the response starts.
    pub async fn run_llm_stream(&self, call: LlmCall<'_>) -> Result<ContentStream, ToolError> {
        Ok(self.run_llm_stream_traced(call).await?.0)
    }

    /// [`LlmClient::run_llm_stream`], with the request body it sent (for the call's trace).
    pub async fn run_llm_stream_traced(
        &self,
        call: LlmCall<'_>,
    ) -> Result<(ContentStream, Value), ToolError> {
        let prepared = self.prepare(call, true)?;
        let resp = self.send(&prepared.endpoint, &prepared.body).await?;
        let stream = sse_pieces(resp, prepared.endpoint.url.clone(), prepared.chat);
        Ok((stream, prepared.body))
    }

    /// promptflow-tools' `analyze_text(connection, text, hate_category, sexual_category,
    /// self_harm_category, violence_category)`: Azure AI Content Safety's verdict on `text`, as
    /// `{"suggested_action": "Accept"|"Reject", "action_by_category": {"Hate": ..., "SelfHarm":
    /// ..., "Sexual": ..., "Violence": ...}}`. A category is rejected when its severity reaches
    /// the threshold of its sensitivity (low 6, medium 4 (the default), high 2; `disable` never);
    /// any rejection or blocklist match rejects the text.
    pub async fn content_safety_analyze_text(
        &self,
        connection: &Connection,
        inputs: &IndexMap<String, Value>,
    ) -> Result<Value, ToolError> {
        require_kind(
            connection,
            ConnectionKind::AzureContentSafety,
            "azure_content_safety",
        )?;
        let text = match inputs.get("text") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => return Err(ToolError::bad_param("text", "is required")),
            Some(other) => other.to_string(),
        };
        // (promptflow's category name, the input that sets its sensitivity, the response keys of
        // the 2023-10-01 API and of the older ones)
        const CATEGORIES: [(&str, &str, &str); 4] = [
            ("Hate", "hate_category", "hateResult"),
            ("SelfHarm", "self_harm_category", "selfHarmResult"),
            ("Sexual", "sexual_category", "sexualResult"),
            ("Violence", "violence_category", "violenceResult"),
        ];
        let mut thresholds = Vec::new();
        for (category, input, _) in CATEGORIES {
            let sensitivity = match inputs.get(input) {
                None | Some(Value::Null) => "medium_sensitivity".to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            let threshold: i64 = match sensitivity.as_str() {
                "disable" => -1,
                "low_sensitivity" => 6,
                "medium_sensitivity" => 4,
                "high_sensitivity" => 2,
                other => {
                    return Err(ToolError::bad_param(
                        input,
                        format!("sensitivity '{other}' is not supported; use disable, low_sensitivity, medium_sensitivity or high_sensitivity"),
                    ))
                }
            };
            thresholds.push((category, threshold));
        }
        let api_key = connection.api_key().unwrap_or_default().to_string();
        let base = required(connection, "endpoint")?.trim_end_matches('/');
        let version = non_empty(connection, "api_version").unwrap_or("2023-10-01");
        let endpoint = Endpoint {
            url: format!(
                "{base}/contentsafety/text:analyze?api-version={}",
                encode_segment(version)
            ),
            headers: vec![
                ("ocp-apim-subscription-key", api_key.clone()),
                ("ms-azure-ai-sender", "prompt_flow".into()),
            ],
            secret: Some(api_key),
            entra_id: false,
            declared: declared(connection),
        };
        let detection = self
            .post_json(&endpoint, &json!({"text": text, "blocklistNames": []}))
            .await?;
        let latest = version == "2023-10-01";
        let mut by_category = serde_json::Map::new();
        let mut rejected = false;
        for ((category, threshold), (_, _, old_key)) in thresholds.into_iter().zip(CATEGORIES) {
            let result = if latest {
                detection
                    .get("categoriesAnalysis")
                    .and_then(Value::as_array)
                    .and_then(|all| all.iter().find(|r| r["category"] == category))
            } else {
                detection.get(old_key)
            };
            let severity = result
                .and_then(|r| r.get("severity"))
                .and_then(Value::as_i64)
                .ok_or_else(|| ToolError::BadResponse {
                    url: endpoint.url.clone(),
                    message: format!("no severity for category {category}"),
                })?;
            let reject = threshold != -1 && severity >= threshold;
            rejected |= reject;
            by_category.insert(
                category.to_string(),
                json!(if reject { "Reject" } else { "Accept" }),
            );
        }
        let blocklist_key = if latest {
            "blocklistsMatch"
        } else {
            "blocklistsMatchResults"
        };
        if detection
            .get(blocklist_key)
            .and_then(Value::as_array)
            .is_some_and(|m| !m.is_empty())
        {
            rejected = true;
        }
        Ok(json!({
            "suggested_action": if rejected { "Reject" } else { "Accept" },
            "action_by_category": by_category,
        }))
    }

    /// promptflow-tools' `SerpAPI.search(connection, query, location, safe, num, engine)`: the
    /// search's JSON as SerpAPI returns it. The endpoint is `https://serpapi.com/search`, or the
    /// connection's `api_base` (a proxy, or a test server) followed by `/search`.
    pub async fn serpapi_search(
        &self,
        connection: &Connection,
        inputs: &IndexMap<String, Value>,
    ) -> Result<Value, ToolError> {
        require_kind(connection, ConnectionKind::Serp, "serpapi")?;
        let api_key = connection.api_key().unwrap_or_default().to_string();
        let text = |key: &str| match inputs.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        let query = text("query").ok_or_else(|| ToolError::bad_param("query", "is required"))?;
        let engine = text("engine").unwrap_or_else(|| "google".to_string());
        let google = engine.eq_ignore_ascii_case("google");
        let mut params: Vec<(&str, String)> = vec![("q", query), ("engine", engine.clone())];
        if let Some(location) = text("location") {
            params.push(("location", location));
        }
        // As promptflow-tools: only `safe: active` is sent; google and bing name it differently.
        if text("safe").is_some_and(|s| s.eq_ignore_ascii_case("active")) {
            params.push(if google {
                ("safe", "Active".to_string())
            } else {
                ("safeSearch", "Strict".to_string())
            });
        }
        let num = match inputs.get("num") {
            None | Some(Value::Null) => 10,
            // Python's `int(num)`: an integer, a float (truncated) or an integer's text.
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_f64().map(|f| f as i64))
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| ToolError::bad_param("num", format!("value {v} is not an int")))?,
        };
        if num > 0 {
            params.push((if google { "num" } else { "count" }, num.to_string()));
        }
        params.push(("output", "json".to_string()));
        params.push(("api_key", api_key.clone()));
        let base = connection
            .configs
            .get("api_base")
            .map(|b| b.trim_end_matches('/').to_string())
            .unwrap_or_else(|| "https://serpapi.com".to_string());
        let url = format!("{base}/search");
        let redact = |text: &str| {
            if api_key.is_empty() {
                text.to_string()
            } else {
                text.replace(&api_key, "***")
            }
        };
        let client = if url.starts_with("http://") {
            &self.http_far
        } else {
            &self.http
        };
        let resp =
            client
                .get(&url)
                .query(&params)
                .send()
                .await
                .map_err(|e| ToolError::Network {
                    url: url.clone(),
                    message: redact(&describe(&e)),
                    attempts: 1,
                })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| ToolError::Network {
            url: url.clone(),
            message: redact(&describe(&e)),
            attempts: 1,
        })?;
        if !(200..300).contains(&status) {
            // SerpAPI says what went wrong in `error` (a rejected key, a bad parameter).
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| {
                    format!("SerpAPI search request failed: {}", excerpt(&body, 300))
                });
            return Err(ToolError::Http {
                url,
                status,
                message: redact(&message),
                attempts: 1,
            });
        }
        serde_json::from_str(&body).map_err(|e| ToolError::BadResponse {
            url,
            message: format!("not JSON: {e}"),
        })
    }

    /// promptflow's `embedding(connection, input, deployment_name, model)`: the embedding vector
    /// of `input` (a list of floats).
    pub async fn embedding(
        &self,
        connection: &Connection,
        inputs: &IndexMap<String, Value>,
    ) -> Result<Value, ToolError> {
        flavor_of(connection, "embedding")?;
        let input = match inputs.get("input") {
            Some(Value::String(s)) => Value::String(s.clone()),
            Some(Value::Array(a)) => Value::Array(a.clone()),
            Some(Value::Null) | None => return Err(ToolError::bad_param("input", "is required")),
            Some(other) => Value::String(other.to_string()),
        };
        let text = |key: &str| match inputs.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let deployment = text("deployment_name");
        let model = Some(text("model"))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "text-embedding-ada-002".into());
        let endpoint = endpoint(connection, Op::Embedding, &deployment)?;
        let body = match connection.kind {
            ConnectionKind::AzureOpenAi => json!({"input": input, "model": deployment}),
            ConnectionKind::Serverless => {
                json!({"input": [input], "model": model, "encoding_format": "float"})
            }
            _ => json!({"input": input, "model": model}),
        };
        let resp = self.post_json(&endpoint, &body).await?;
        resp.get("data")
            .and_then(|d| d.get(0))
            .and_then(|d| d.get("embedding"))
            .cloned()
            .ok_or_else(|| ToolError::BadResponse {
                url: endpoint.url.clone(),
                message: format!(
                    "no data[0].embedding in {}",
                    excerpt(&resp.to_string(), 300)
                ),
            })
    }

    pub(crate) async fn post_json(
        &self,
        endpoint: &Endpoint,
        body: &Value,
    ) -> Result<Value, ToolError> {
        let resp = self.send(endpoint, body).await?;
        let text = resp.text().await.map_err(|e| ToolError::Network {
            url: endpoint.url.clone(),
            message: describe(&e),
            attempts: 1,
        })?;
        serde_json::from_str(&text).map_err(|e| ToolError::BadResponse {
            url: endpoint.url.clone(),
            message: format!(
                "body is not JSON ({e}): {}",
                endpoint.redact(&excerpt(&text, 300))
            ),
        })
    }

    /// POST with retries; returns the first 2xx response.
    pub(crate) async fn send(
        &self,
        unsigned: &Endpoint,
        body: &Value,
    ) -> Result<reqwest::Response, ToolError> {
        let mut state = RetryState::default();
        let model = body.get("model").and_then(Value::as_str).unwrap_or("");
        let governor = crate::governor::governor(
            &format!("{} {model}", unsigned.redact(&unsigned.url)),
            unsigned.declared,
        );
        let tokens = request_tokens(body);
        loop {
            state.attempts += 1;
            governor.admit(tokens).await;
            let client = self.http_for(&unsigned.url, state.reasks);
            let signed = self.signed(unsigned).await?;
            let endpoint = signed.as_ref().unwrap_or(unsigned);
            let mut req = client.post(&endpoint.url).json(body);
            for (name, value) in &endpoint.headers {
                req = req.header(*name, value);
            }
            let retry = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    governor.succeeded();
                    if let Some(reset) = quota_spent(resp.headers()) {
                        // The server says the next request would be refused: wait it out
                        // together instead of spending a 429 on it.
                        governor.quota_spent(reset);
                    }
                    return Ok(resp);
                }
                Ok(resp) => {
                    let refusal = Refusal::read(resp).await;
                    if refusal.status == 429 && !refusal.insufficient_quota {
                        self.rate_limited(endpoint, &refusal, &governor, &mut state)?;
                        // The governor holds this request (and every other) back.
                        continue;
                    }
                    self.http_retry(endpoint, refusal, &mut state)?
                }
                Err(e)
                    if e.is_connect()
                        && e.is_timeout()
                        && endpoint.url.starts_with("http://")
                        && state.reasks < LOCAL_CONNECT_REASKS =>
                {
                    state.reasks += 1;
                    continue;
                }
                Err(e) => self.network_retry(endpoint, &e, &mut state)?,
            };
            if let Some(listener) = &self.listener {
                listener(&RetryEvent {
                    url: endpoint.redact(&endpoint.url),
                    cause: retry.cause,
                    failure: retry.failure,
                    attempt: state.attempts,
                    max_attempts: retry.max_attempts,
                    wait: retry.wait,
                });
            }
            tokio::time::sleep(retry.wait).await;
        }
    }

    /// The client for an attempt at `url`: plain `http` is a local server, connected afresh with
    /// a short connect timeout until it has been re-asked too often (then it is far after all).
    fn http_for(&self, url: &str, reasks: u32) -> &reqwest::Client {
        match (url.starts_with("http://"), reasks) {
            (true, n) if n < LOCAL_CONNECT_REASKS => &self.http_local,
            (true, _) => &self.http_far,
            (false, _) => &self.http,
        }
    }

    /// The endpoint an attempt sends to when it is not `unsigned` itself: a keyless Azure
    /// endpoint is signed with a token of the credential chain (cached there), asked each
    /// attempt as a long wait can outlive one; errors of this attempt redact it as they redact a
    /// key.
    async fn signed(&self, unsigned: &Endpoint) -> Result<Option<Endpoint>, ToolError> {
        if !unsigned.entra_id {
            return Ok(None);
        }
        let token = crate::entra::cognitive_services_token(&self.http).await?;
        Ok(Some(Endpoint {
            headers: [("authorization", format!("Bearer {token}"))]
                .into_iter()
                .chain(unsigned.headers.iter().cloned())
                .collect(),
            secret: Some(token),
            ..unsigned.clone()
        }))
    }

    /// An HTTP 429: the quota speaking. The endpoint's governor paces the request (and every
    /// other) from here, and the listener hears of it; the request fails once it has been rate
    /// limited for longer than its budget.
    fn rate_limited(
        &self,
        endpoint: &Endpoint,
        refusal: &Refusal,
        governor: &crate::governor::Governor,
        state: &mut RetryState,
    ) -> Result<(), ToolError> {
        governor.rate_limited(refusal.hinted);
        let since = *state.first_429.get_or_insert_with(std::time::Instant::now);
        let budget = endpoint
            .declared
            .rate_limit_budget
            .unwrap_or(self.policy.rate_limit_budget);
        if since.elapsed() >= budget {
            return Err(ToolError::Http {
                url: endpoint.url.clone(),
                status: refusal.status,
                message: format!(
                    "{} (rate limited for {:.0} s, the budget of one request: the deployment's quota is used up by this run and whatever else shares it; raise the quota, lower --concurrency, give the connection a longer rate_limit_budget_s, or resume later with --resume-from)",
                    endpoint.redact(&refusal.message),
                    since.elapsed().as_secs_f64()
                ),
                attempts: state.attempts,
            });
        }
        if let Some(listener) = &self.listener {
            listener(&RetryEvent {
                url: endpoint.redact(&endpoint.url),
                cause: RetryCause::RateLimited,
                failure: format!(
                    "HTTP 429: {}",
                    excerpt(&endpoint.redact(&refusal.message), 200)
                ),
                attempt: state.attempts,
                max_attempts: 0,
                wait: refusal.hinted.unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// The retry after an HTTP error other than a rate limit: 5xx, and up to 3 consecutive 422s,
    /// are retried while `max_retries` allows (after what the server asked, else the backoff);
    /// anything else fails the request.
    fn http_retry(
        &self,
        endpoint: &Endpoint,
        refusal: Refusal,
        state: &mut RetryState,
    ) -> Result<Retry, ToolError> {
        let Refusal {
            status,
            hinted,
            message,
            ..
        } = refusal;
        let retries_left = state.failures < self.policy.max_retries;
        state.failures += 1;
        state.consecutive_422 = if status == 422 {
            state.consecutive_422 + 1
        } else {
            0
        };
        let retriable = status >= 500 || (status == 422 && state.consecutive_422 < 3);
        if !retriable || !retries_left {
            return Err(ToolError::Http {
                url: endpoint.url.clone(),
                status,
                message: endpoint.redact(&message),
                attempts: state.attempts,
            });
        }
        let wait = hinted
            .map(|d| d.min(self.policy.max_delay))
            .unwrap_or_else(|| self.policy.backoff(state.failures - 1));
        Ok(Retry {
            wait,
            cause: RetryCause::ServerError,
            failure: format!(
                "HTTP {status}: {}",
                excerpt(&endpoint.redact(&message), 200)
            ),
            max_attempts: self.policy.max_retries + 1,
        })
    }

    /// The retry after a request that got no response. Refused or unresolvable: no server is
    /// there to recover, so only `max_connect_retries`, after `connect_delay`. Timeouts and
    /// connections cut mid-reply get the full policy.
    fn network_retry(
        &self,
        endpoint: &Endpoint,
        e: &reqwest::Error,
        state: &mut RetryState,
    ) -> Result<Retry, ToolError> {
        state.failures += 1;
        let unreachable = e.is_connect() && !e.is_timeout();
        let allowed = if unreachable {
            self.policy.max_connect_retries.min(self.policy.max_retries)
        } else {
            self.policy.max_retries
        };
        if e.is_builder() || state.failures > allowed {
            return Err(ToolError::Network {
                url: endpoint.url.clone(),
                message: endpoint.redact(&describe(e)),
                attempts: state.attempts,
            });
        }
        let (wait, cause) = if unreachable {
            (
                self.policy.connect_delay.saturating_mul(state.failures),
                RetryCause::Unreachable,
            )
        } else {
            (self.policy.backoff(state.failures - 1), RetryCause::Network)
        };
        Ok(Retry {
            wait,
            cause,
            failure: endpoint.redact(&describe(e)),
            max_attempts: allowed + 1,
        })
    }
}

/// Where one request's attempts stand, for [`LlmClient::send`]'s retry decisions.
#[derive(Default)]
struct RetryState {
    attempts: u32,
    /// Failures other than 429: what `max_retries` counts.
    failures: u32,
    consecutive_422: u32,
    first_429: Option<std::time::Instant>,
    /// Connection attempts a local server did not accept in time, asked again at once.
    reasks: u32,
}

/// A response that is not a success, as the retry decisions read it.
struct Refusal {
    status: u16,
    /// The wait the server asked for (`Retry-After`, `retry-after-ms`).
    hinted: Option<Duration>,
    /// The error message of its body.
    message: String,
    /// The error is `insufficient_quota`: the quota is gone, not spent for now.
    insufficient_quota: bool,
}

impl Refusal {
    /// Read the status, the wait asked for and the error of `resp`.
    async fn read(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let hinted = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        let (message, kind) = error_message(&text);
        Refusal {
            status,
            hinted,
            message,
            insufficient_quota: kind.as_deref() == Some("insufficient_quota"),
        }
    }
}

/// A retry about to happen: the wait before it, and what the listener is told.
struct Retry {
    wait: Duration,
    cause: RetryCause,
    failure: String,
    max_attempts: u32,
}

/// The content pieces of a server-sent-events reply (chat: `delta.content`, completion: `text`),
/// until `[DONE]` or the end of the body.
pub(crate) fn sse_pieces(resp: reqwest::Response, url: String, chat: bool) -> ContentStream {
    use futures::StreamExt;
    let state = (resp.bytes_stream().boxed(), Vec::<u8>::new(), false);
    let stream = futures::stream::unfold(state, move |(mut bytes, mut buf, done)| {
        let url = url.clone();
        async move {
            if done {
                return None;
            }
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim();
                    let Some(data) = line.strip_prefix("data:") else {
                        continue;
                    };
                    let data = data.trim();
                    if data == "[DONE]" {
                        return None;
                    }
                    let piece = match serde_json::from_str::<Value>(data) {
                        Ok(event) => event
                            .get("choices")
                            .and_then(|c| c.get(0))
                            .and_then(|c| {
                                if chat {
                                    c.get("delta").and_then(|d| d.get("content"))
                                } else {
                                    c.get("text")
                                }
                            })
                            .and_then(Value::as_str)
                            .map(String::from),
                        Err(e) => {
                            let err = ToolError::BadResponse {
                                url: url.clone(),
                                message: format!("bad stream event: {e}"),
                            };
                            return Some((Err(err), (bytes, buf, true)));
                        }
                    };
                    match piece {
                        Some(p) => return Some((Ok(p), (bytes, buf, false))),
                        None => continue,
                    }
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        let err = ToolError::Network {
                            url: url.clone(),
                            message: describe(&e),
                            attempts: 1,
                        };
                        return Some((Err(err), (bytes, buf, true)));
                    }
                    None => return None,
                }
            }
        }
    });
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_exponential_jittered_and_capped() {
        let policy = RetryPolicy {
            max_retries: 8,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        for retry in 0..12 {
            let full = Duration::from_millis(100 * 2u64.pow(retry.min(20))).min(policy.max_delay);
            let d = policy.backoff(retry);
            assert!(
                d <= full && d >= full / 2,
                "retry {retry}: {d:?} vs {full:?}"
            );
        }
    }

    #[test]
    fn retry_after_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "2".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        assert_eq!(retry_after(&reqwest::header::HeaderMap::new()), None);
    }

    #[test]
    fn a_spent_quota_is_read_from_the_rate_limit_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "x-ratelimit-remaining-requests",
            "3".parse().expect("header"),
        );
        assert_eq!(quota_spent(&h), None);
        h.insert("x-ratelimit-remaining-tokens", "0".parse().expect("header"));
        assert_eq!(quota_spent(&h), Some(Duration::from_secs(1)));
        h.insert("x-ratelimit-reset-tokens", "6m0s".parse().expect("header"));
        assert_eq!(quota_spent(&h), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_reset("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_reset("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(parse_reset("soon"), None);
    }

    #[test]
    fn server_error_messages_are_extracted() {
        assert_eq!(
            error_message(r#"{"error": {"message": "bad thing", "type": "insufficient_quota"}}"#),
            (
                "bad thing".to_string(),
                Some("insufficient_quota".to_string())
            )
        );
        assert_eq!(error_message("plain text").0, "plain text");
    }
}
