//! Running a loaded `.prompty` ([`flowrt_flow::Prompty`]) as promptflow 1.18.5 does: inputs
//! resolved (sample, defaults), the body rendered (chat: split at role lines with role markers in
//! inputs escaped; completion: sent unstripped), `model.parameters` sent as written, and the reply
//! shaped by `model.response`, `response_format` and `outputs`.

use crate::chat::{build_messages_with, TemplateVar, Walk};
use crate::client::{endpoint, excerpt, first_choice, sse_pieces, usage_of, LlmClient, Op, Usage};
use crate::error::ToolError;
use crate::params::{function_call, tool_choice, validate_functions, validate_tools};
use crate::pyfmt::ListStyle;
use crate::render::render_with;
use flowrt_api::connection::{Connection, ConnectionKind};
use flowrt_flow::pyvalue::py_repr;
use flowrt_flow::{Prompty, PromptyApi, PromptyResponse};
use indexmap::IndexMap;
use serde_json::{Map, Value};

/// What running a prompty produced.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptyOutcome {
    /// See [`execute_prompty`].
    pub output: Value,
    pub usage: Option<Usage>,
    /// The request body sent to the model (model, messages or prompt, parameters): what a trace
    /// shows of the call. It holds no credential (those travel in headers).
    pub request: Value,
}

/// A failure of prompty `p`: `kind` is promptflow's exception name, `message` follows the file.
fn fail(p: &Prompty, kind: &'static str, message: String) -> ToolError {
    ToolError::Prompty {
        kind,
        message: format!("{}: {message}", p.path.display()),
    }
}

fn file_label(p: &Prompty) -> String {
    p.path.display().to_string()
}

/// The connection a prompty's `model.configuration` describes: the stored connection it names
/// (`connection: NAME`, looked up with `lookup`), else one built from its inline keys —
/// `type: azure_openai` with `azure_endpoint`, `api_key`, `api_version`; `type: openai` with
/// `api_key`, `base_url`, `organization`.
pub fn resolve_prompty_connection(
    p: &Prompty,
    lookup: impl Fn(&str) -> Option<Connection>,
) -> Result<Connection, ToolError> {
    if let Some(name) = configured(p, "connection") {
        return lookup(&name).ok_or_else(|| {
            fail(
                p,
                "ConnectionNotFound",
                format!(
                    "model.configuration uses connection '{name}', which does not exist\nhint: \
                    create it with `flowrt connection create --file CONN.yaml`, or write the \
                    endpoint and key inline",
                ),
            )
        });
    }
    let ty = p.model.configuration_type();
    let kind = match ty {
        "azure_openai" | "azure_open_ai" => ConnectionKind::AzureOpenAi,
        "openai" | "open_ai" => ConnectionKind::OpenAi,
        other => {
            return Err(fail(
                p,
                "UnknownConnectionType",
                format!(
                    "model.configuration type '{other}' is not supported; use \
                    openai or azure_openai",
                ),
            ))
        }
    };
    let mut connection = Connection {
        name: format!("{} model.configuration", file_label(p)),
        kind,
        configs: IndexMap::new(),
        secrets: IndexMap::new(),
    };
    // A configuration that names nothing but the model is promptflow's `from_env()` connection:
    // endpoint and key both from the environment.
    let names_nothing = p.model.configuration.iter().all(|(k, _)| {
        matches!(k.as_str(), "type" | "azure_deployment" | "model") || configured(p, k).is_none()
    });
    match kind {
        ConnectionKind::AzureOpenAi if names_nothing => azure_openai_from_env(p, &mut connection)?,
        ConnectionKind::AzureOpenAi => azure_openai_configured(p, &mut connection)?,
        _ => openai_configured(p, &mut connection)?,
    }
    Ok(connection)
}

/// Setting `key` of the prompty's `model.configuration` as text (`str()` of a value that is not
/// a string); `None` when it is missing, null or blank.
fn configured(p: &Prompty, key: &str) -> Option<String> {
    match p.model.configuration.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(Value::String(_)) => None,
        Some(other) => Some(flowrt_flow::pyvalue::py_str(other)),
    }
}

/// Environment variable `name`, when it is set and not blank.
fn env_setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// promptflow's `AzureOpenAIConnection.from_env()`: endpoint, key (and API version) from the
/// environment.
fn azure_openai_from_env(p: &Prompty, connection: &mut Connection) -> Result<(), ToolError> {
    let (Some(base), Some(key)) = (
        env_setting("AZURE_OPENAI_ENDPOINT"),
        env_setting("AZURE_OPENAI_API_KEY"),
    ) else {
        return Err(fail(
            p,
            "RequiredEnvironmentVariablesNotSetError",
            "Required environment variables ['AZURE_OPENAI_ENDPOINT', \
            'AZURE_OPENAI_API_KEY'] to build AzureOpenAIConnection not set.\nhint: set \
            them, or write azure_endpoint (and api_key, or none to sign in with \
            Microsoft Entra ID) in model.configuration"
                .to_string(),
        ));
    };
    connection.configs.insert("api_base".to_string(), base);
    if let Some(v) = env_setting("OPENAI_API_VERSION") {
        connection.configs.insert("api_version".to_string(), v);
    }
    connection.secrets.insert("api_key".to_string(), key);
    Ok(())
}

/// An Azure OpenAI connection from the configuration's endpoint, API version and key; without
/// a key, one that signs in with Microsoft Entra ID.
fn azure_openai_configured(p: &Prompty, connection: &mut Connection) -> Result<(), ToolError> {
    // The openai client promptflow builds reads the endpoint from the environment when the
    // configuration has none, whatever else it names.
    let base = configured(p, "azure_endpoint")
        .or_else(|| configured(p, "api_base"))
        .or_else(|| env_setting("AZURE_OPENAI_ENDPOINT"));
    let Some(base) = base else {
        return Err(fail(
            p,
            "InvalidConnectionError",
            "model.configuration of type azure_openai needs 'azure_endpoint' (or \
            'connection: NAME'; without either, AZURE_OPENAI_ENDPOINT is read from the \
            environment)"
                .to_string(),
        ));
    };
    connection.configs.insert("api_base".to_string(), base);
    if let Some(v) = configured(p, "api_version") {
        connection.configs.insert("api_version".to_string(), v);
    }
    // Without a key promptflow signs in with Microsoft Entra ID (even when
    // AZURE_OPENAI_API_KEY is set: its token provider wins over the client's key).
    match configured(p, "api_key") {
        Some(key) => {
            connection.secrets.insert("api_key".to_string(), key);
        }
        None => {
            connection
                .configs
                .insert("auth_mode".to_string(), "meid_token".to_string());
        }
    }
    Ok(())
}

/// An OpenAI connection from the configuration's base URL, organization and key; what it
/// leaves out comes from the environment, as the openai client promptflow builds reads it.
fn openai_configured(p: &Prompty, connection: &mut Connection) -> Result<(), ToolError> {
    let pick = |key: &str, var: &str| configured(p, key).or_else(|| env_setting(var));
    if let Some(base) = pick("base_url", "OPENAI_BASE_URL") {
        connection.configs.insert("base_url".to_string(), base);
    }
    if let Some(org) = pick("organization", "OPENAI_ORG_ID") {
        connection.configs.insert("organization".to_string(), org);
    }
    match pick("api_key", "OPENAI_API_KEY") {
        Some(key) => {
            connection.secrets.insert("api_key".to_string(), key);
            Ok(())
        }
        None => Err(fail(
            p,
            "InvalidConnectionError",
            "model.configuration needs 'api_key' (for example api_key: \
            ${env:OPENAI_API_KEY}) or 'connection: NAME'"
                .to_string(),
        )),
    }
}

/// The values the prompt is rendered with, as promptflow's `Prompty` resolves them: the `sample`
/// when no inputs are given, then each declared input from the given values or its default
/// (undeclared values are dropped). A prompty that declares no inputs takes the sample's keys as
/// its inputs (none without a sample). Values are not type-converted here (the flow layer
/// converts).
pub fn resolve_prompty_inputs(
    p: &Prompty,
    given: &IndexMap<String, Value>,
) -> Result<IndexMap<String, Value>, ToolError> {
    let given = match &p.sample {
        Some(sample) if given.is_empty() => sample,
        _ => given,
    };
    // Without declared inputs, the sample's keys are the inputs (without defaults).
    let sample_keys: Vec<(&String, Option<&Value>)> = match (&p.sample, p.inputs.is_empty()) {
        (Some(sample), true) => sample.keys().map(|k| (k, None)).collect(),
        _ => Vec::new(),
    };
    let declared = p
        .inputs
        .iter()
        .map(|(k, d)| (k, d.default.as_ref()))
        .chain(sample_keys);
    let mut out = IndexMap::new();
    let mut missing = Vec::new();
    for (name, default) in declared {
        match given.get(name).or(default) {
            Some(v) => {
                out.insert(name.clone(), v.clone());
            }
            None => missing.push(name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(fail(
            p,
            "MissingRequiredInputError",
            format!(
                "Missing required inputs: {}\nhint: pass them, or give them a \
                default under inputs:",
                py_repr(&Value::Array(
                    missing.into_iter().map(Value::String).collect()
                ))
            ),
        ));
    }
    Ok(out)
}

/// Render the prompty's body with `inputs`: chat messages, or the completion prompt.
pub fn render_prompty(p: &Prompty, inputs: &IndexMap<String, Value>) -> Result<Value, ToolError> {
    let dir = p.path.parent().unwrap_or(std::path::Path::new("."));
    render_prompt_template(&p.template, inputs, p.model.api, dir)
}

/// promptflow's `convert_prompt_template(template, inputs, api)`: a prompty body rendered as a
/// prompty renders it, chat messages (images resolved against `dir`) or the completion prompt.
pub fn render_prompt_template(
    template: &str,
    inputs: &IndexMap<String, Value>,
    api: PromptyApi,
    dir: &std::path::Path,
) -> Result<Value, ToolError> {
    match api {
        PromptyApi::Chat => {
            let (inputs, images) = crate::prompty_images::take_images(inputs, dir);
            let vars: IndexMap<String, TemplateVar> = inputs
                .iter()
                .map(|(k, v)| (k.clone(), TemplateVar::escaped(v.clone())))
                .collect();
            if images.is_empty() {
                return build_messages_with(template, &vars, Walk::PROMPTY, ListStyle::Repr)
                    .map(Value::Array);
            }
            let template = crate::prompty_images::image_lines(template);
            let messages = build_messages_with(&template, &vars, Walk::PROMPTY, ListStyle::Repr)?;
            Ok(Value::Array(crate::prompty_images::with_image_parts(
                messages, &images,
            )))
        }
        PromptyApi::Completion => {
            let ctx = minijinja::Value::from_serialize(inputs);
            render_with(template, ctx, ListStyle::Repr).map(Value::String)
        }
    }
}

/// Run a loaded prompty once with `inputs` (see [`resolve_prompty_inputs`]) over `connection`
/// (see [`resolve_prompty_connection`]) and return what promptflow's `Prompty.__call__` returns,
/// as JSON:
/// - `response: first` (the default): the first choice's text (chat content or completion text),
///   streamed pieces joined when `parameters.stream` is true; with
///   `response_format: {type: json_object}` the reply parsed as JSON, reduced to the keys listed
///   under `outputs` when there are any; the whole message object when the model called a
///   function or tool;
/// - `response: all`: the raw completion object the service returned.
///
/// Errors name the prompty file and say what to change. To apply a caller's model (as
/// `Prompty.load(source, model={...})` does), pass `p.with_model_override(...)` (a dict) or
/// `p.with_configuration(...)` (a model configuration object):
///
/// ```no_run
/// # async fn demo(
/// #     connections: std::collections::HashMap<String, flowrt_api::Connection>,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// use flowrt_flow::Prompty;
/// use flowrt_tools::{execute_prompty, resolve_prompty_connection, LlmClient};
///
/// let prompty = Prompty::load(std::path::Path::new("chat.prompty"))?;
/// // `model={"parameters": ..., "response": ...}` merges over the file's model, key by key...
/// let model = serde_json::json!({"parameters": {"max_tokens": 64}, "response": "all"});
/// let prompty = prompty.with_model_override(model.as_object().ok_or("not an object")?)?;
/// // ...while a configuration object (`OpenAIModelConfiguration(...)`) replaces it whole.
/// let configuration = serde_json::json!({"type": "openai", "connection": "oai_conn", "model": "gpt-4o-mini"});
/// let prompty = prompty.with_configuration(configuration.as_object().ok_or("not an object")?.clone())?;
/// let connection = resolve_prompty_connection(&prompty, |name| connections.get(name).cloned())?;
/// let mut inputs = indexmap::IndexMap::new();
/// inputs.insert("question".to_string(), serde_json::json!("What is a DAG?"));
/// let completion = execute_prompty(&LlmClient::default(), &prompty, &inputs, &connection).await?;
/// println!("{}", completion["usage"]["prompt_tokens"]);
/// # Ok(())
/// # }
/// ```
pub async fn execute_prompty(
    client: &LlmClient,
    p: &Prompty,
    inputs: &IndexMap<String, Value>,
    connection: &Connection,
) -> Result<Value, ToolError> {
    execute_prompty_streamed(client, p, inputs, connection, None)
        .await
        .map(|o| o.output)
}

/// [`execute_prompty`] that also reports token usage, and, when `parameters.stream` is true and
/// `pieces` is given, sends each piece of the reply there as it arrives.
pub async fn execute_prompty_streamed(
    client: &LlmClient,
    p: &Prompty,
    inputs: &IndexMap<String, Value>,
    connection: &Connection,
    pieces: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Result<PromptyOutcome, ToolError> {
    if connection.kind == ConnectionKind::Custom {
        return Err(ToolError::UnsupportedConnection {
            connection: connection.name.clone(),
            kind: connection.kind.as_str().to_string(),
            tool: format!("prompty {}", file_label(p)),
            expected: "open_ai, azure_open_ai or serverless".into(),
        });
    }
    let values = resolve_prompty_inputs(p, inputs)?;
    let rendered = render_prompty(p, &values)?;
    let model = p
        .model
        .model_name()
        .or_else(|| p.model.parameters.get("model").and_then(Value::as_str))
        .unwrap_or_default()
        .to_string();
    if connection.kind == ConnectionKind::AzureOpenAi && model.is_empty() {
        return Err(fail(
            p,
            "InvalidConnectionError",
            "an azure_openai model.configuration needs 'azure_deployment' (the deployment to \
             call)"
                .to_string(),
        ));
    }
    let chat = p.model.api == PromptyApi::Chat;
    let op = if chat { Op::Chat } else { Op::Completion };
    let mut ep = endpoint(connection, op, &model)?;
    for (name, value) in &mut ep.headers {
        if *name == "ms-azure-ai-promptflow-called-from" {
            *value = "promptflow-core".into();
        }
    }
    let mut body = Map::new();
    for (k, v) in &p.model.parameters {
        body.insert(k.clone(), v.clone());
    }
    // Tools win over the deprecated functions; both are checked and their choice defaults to auto.
    if let Some(tools) = p.model.parameters.get("tools") {
        validate_tools(tools)?;
        body.insert(
            "tool_choice".into(),
            tool_choice(p.model.parameters.get("tool_choice"))?,
        );
    } else if let Some(functions) = p.model.parameters.get("functions") {
        validate_functions(functions)?;
        body.insert(
            "function_call".into(),
            function_call(p.model.parameters.get("function_call"))?,
        );
    }
    // The configuration's model (or deployment) and the rendered prompt win over parameters.
    body.insert("model".into(), Value::String(model));
    body.insert(if chat { "messages" } else { "prompt" }.into(), rendered);
    let body = Value::Object(body);
    if p.model.streams() {
        use futures::StreamExt;
        let resp = client.send(&ep, &body).await?;
        let mut stream = sse_pieces(resp, ep.url.clone(), chat);
        let mut whole = String::new();
        while let Some(piece) = stream.next().await {
            let piece = piece?;
            // promptflow yields only chunks with content.
            if piece.is_empty() {
                continue;
            }
            if let Some(tx) = &pieces {
                // A listener that went away does not stop the call.
                let _ = tx.send(piece.clone());
            }
            whole.push_str(&piece);
        }
        let output = if p.model.json_response() {
            select_outputs(p, parse_json_reply(p, &whole)?)?
        } else {
            Value::String(whole)
        };
        return Ok(PromptyOutcome {
            output,
            usage: None,
            request: body,
        });
    }
    let resp = client.post_json(&ep, &body).await?;
    let usage = usage_of(&resp);
    if p.model.response == PromptyResponse::All {
        return Ok(PromptyOutcome {
            output: resp,
            usage,
            request: body,
        });
    }
    let choice = first_choice(&resp, &ep.url)?;
    let output = if chat {
        let message = choice.get("message").cloned().unwrap_or(Value::Null);
        // A tool or function call returns the whole message, as promptflow does.
        let called = matches!(
            choice.get("finish_reason").and_then(Value::as_str),
            Some("tool_calls" | "function_calls")
        );
        let reply = if called {
            message
        } else {
            message.get("content").cloned().unwrap_or(Value::Null)
        };
        format_choice(p, reply)?
    } else {
        format_choice(
            p,
            choice
                .get("text")
                .cloned()
                .unwrap_or_else(|| Value::String(String::new())),
        )?
    };
    Ok(PromptyOutcome {
        output,
        usage,
        request: body,
    })
}

/// The reply text as the caller gets it: as it is, or parsed and reduced to `outputs`.
fn format_choice(p: &Prompty, text: Value) -> Result<Value, ToolError> {
    if !p.model.json_response() {
        return Ok(text);
    }
    let Value::String(text) = text else {
        return Err(fail(
            p,
            "TypeError",
            format!(
                "response_format is json_object but the reply has no text (the JSON object \
                must be str, bytes or bytearray, not {})",
                if text.is_null() {
                    "NoneType".to_string()
                } else {
                    py_repr(&text)
                }
            ),
        ));
    };
    select_outputs(p, parse_json_reply(p, &text)?)
}

/// `json.loads` of the reply, with Python's error wording.
fn parse_json_reply(p: &Prompty, text: &str) -> Result<Value, ToolError> {
    serde_json::from_str::<Value>(text).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        let char_index: usize = text
            .split('\n')
            .take(line.saturating_sub(1))
            .map(|l| l.chars().count() + 1)
            .sum::<usize>()
            + column.saturating_sub(1);
        let detail = e.to_string();
        let what = if detail.starts_with("trailing characters") {
            "Extra data"
        } else if detail.starts_with("expected value")
            || detail.starts_with("EOF while parsing a value")
        {
            "Expecting value"
        } else {
            detail.split(" at line ").next().unwrap_or(&detail)
        };
        fail(
            p,
            "JSONDecodeError",
            format!(
                "response_format is json_object but the reply is not JSON ({what}: line \
                {line} column {column} (char {char_index})); the reply was: {}\nhint: ask \
                the model for a JSON object in the prompt, or remove response_format",
                excerpt(text, 300)
            ),
        )
    })
}

/// Only the keys listed under `outputs`, when there are any.
fn select_outputs(p: &Prompty, reply: Value) -> Result<Value, ToolError> {
    if p.outputs.is_empty() {
        return Ok(reply);
    }
    let Value::Object(fields) = &reply else {
        return Err(fail(
            p,
            "InvalidOutputKeyError",
            format!(
                "outputs lists {} but the reply is not a JSON object: {}",
                p.outputs.join(", "),
                excerpt(&reply.to_string(), 300)
            ),
        ));
    };
    let mut out = Map::new();
    for key in &p.outputs {
        match fields.get(key) {
            Some(v) => {
                out.insert(key.clone(), v.clone());
            }
            None => {
                let keys: Vec<Value> = fields.keys().cloned().map(Value::String).collect();
                return Err(fail(
                    p,
                    "InvalidOutputKeyError",
                    format!(
                        "Cannot find {key} in response {}\nhint: list only keys the \
                        model returns under outputs:",
                        py_repr(&Value::Array(keys))
                    ),
                ));
            }
        }
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(text: &str) -> Prompty {
        Prompty::parse(text, Path::new("/p/t.prompty")).expect("parses")
    }

    const HEAD: &str = "---\nmodel:\n  configuration: {type: openai, connection: c, model: m}\n";

    #[test]
    fn inputs_come_from_the_sample_then_defaults() {
        let p = load(&format!(
            "{HEAD}  parameters: {{}}\ninputs:\n  a: {{type: string}}\n  b: {{type: int, default: 2}}\nsample:\n  a: s\n  zz: dropped\n---\nuser:\n{{{{a}}}}\n"
        ));
        let none = IndexMap::new();
        let got = resolve_prompty_inputs(&p, &none).expect("sample");
        assert_eq!(
            serde_json::to_value(&got).ok(),
            Some(serde_json::json!({"a": "s", "b": 2}))
        );
        let mut given = IndexMap::new();
        given.insert("b".to_string(), Value::from(5));
        let err = resolve_prompty_inputs(&p, &given).expect_err("a is missing");
        assert!(
            err.to_string().contains("Missing required inputs: ['a']"),
            "{err}"
        );
        assert_eq!(err.python_type(), Some("MissingRequiredInputError"));
    }

    #[test]
    fn a_prompty_without_inputs_renders_its_sample_as_is() {
        let p = load(&format!(
            "{HEAD}  parameters: {{}}\nsample:\n  x: 1\n---\nuser:\n{{{{x}}}}\n"
        ));
        let mut given = IndexMap::new();
        given.insert("y".to_string(), Value::from(2));
        let err = resolve_prompty_inputs(&p, &given).expect_err("x is an input now");
        assert!(err.to_string().contains("['x']"), "{err}");
        let got = resolve_prompty_inputs(&p, &IndexMap::new()).expect("sample");
        assert_eq!(got.get("x"), Some(&Value::from(1)));
        let messages = render_prompty(&p, &got).expect("renders");
        assert_eq!(
            messages,
            serde_json::json!([{"role": "user", "content": "1"}])
        );
    }

    #[test]
    fn json_replies_are_parsed_and_reduced_to_outputs() {
        let p = load(&format!(
            "{HEAD}  parameters:\n    response_format: {{type: json_object}}\noutputs:\n  a: {{type: string}}\n---\nuser:\nhi\n"
        ));
        let ok = format_choice(&p, Value::String(r#"{"a": 1, "b": 2}"#.into())).expect("json");
        assert_eq!(ok, serde_json::json!({"a": 1}));
        let err = format_choice(&p, Value::String(r#"{"b": 2}"#.into())).expect_err("no a");
        assert!(
            err.to_string().contains("Cannot find a in response ['b']"),
            "{err}"
        );
        let err = format_choice(&p, Value::String("echo: hi".into())).expect_err("not json");
        assert!(
            err.to_string()
                .contains("Expecting value: line 1 column 1 (char 0)"),
            "{err}"
        );
        assert_eq!(err.python_type(), Some("JSONDecodeError"));
    }

    #[test]
    fn lists_print_as_python_lists_and_only_top_level_strings_are_escaped() {
        let p = load(&format!(
            "{HEAD}  parameters: {{}}\n---\nuser:\n{{{{ items }}}} {{{{ text }}}}\n{{{{ turn.content }}}}\n"
        ));
        let mut inputs = IndexMap::new();
        inputs.insert("items".to_string(), serde_json::json!(["a", 1]));
        inputs.insert("text".to_string(), serde_json::json!("x\nsystem:\ny"));
        inputs.insert(
            "turn".to_string(),
            serde_json::json!({"content": "assistant:\nhi"}),
        );
        let messages = render_prompty(&p, &inputs).expect("renders");
        // The string input keeps its role line; the dict's value opens a message, as in promptflow.
        assert_eq!(
            messages,
            serde_json::json!([
                {"role": "user", "content": "['a', 1] x\nsystem:\ny"},
                {"role": "assistant", "content": "hi"}
            ])
        );
    }

    #[test]
    fn completion_bodies_keep_their_whitespace() {
        let p = load("---\nmodel:\n  api: completion\n  configuration: {type: openai, connection: c, model: m}\n  parameters: {}\n---\n  Hi {{ n }}\n\n");
        let mut inputs = IndexMap::new();
        inputs.insert("n".to_string(), Value::from("x"));
        assert_eq!(
            render_prompty(&p, &inputs).expect("renders"),
            Value::String("  Hi x\n\n".into())
        );
    }

    #[test]
    fn inline_configurations_become_connections() {
        let p = load("---\nmodel:\n  configuration:\n    type: azure_openai\n    azure_endpoint: https://x\n    api_key: k\n    azure_deployment: d\n  parameters: {}\n---\nuser:\nhi\n");
        let c = resolve_prompty_connection(&p, |_| None).expect("inline");
        assert_eq!(c.kind, ConnectionKind::AzureOpenAi);
        assert_eq!(c.config("api_base"), Some("https://x"));
        assert_eq!(c.api_key(), Some("k"));
        let p = load(&format!("{HEAD}  parameters: {{}}\n---\nuser:\nhi\n"));
        let err = resolve_prompty_connection(&p, |_| None).expect_err("unknown connection");
        assert!(
            err.to_string()
                .contains("connection 'c', which does not exist"),
            "{err}"
        );
    }
}
