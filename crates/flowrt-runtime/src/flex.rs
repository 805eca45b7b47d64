//! Flex flows (`flow.flex.yaml`): finishing a loaded flow from its entry's Python signature, the
//! constructor kwargs of a class entry (`--init FILE.json`), and the host side of the worker's
//! callback channel (connection look-ups by model configurations, `Prompty.__call__`).

use crate::invoker::{FlowInvoker, SharedConnections};
use anyhow::{anyhow, bail, Context, Result};
use flowrt_api::Connection;
use flowrt_flow::{Flow, FlowKind, Prompty, PromptyResponse};
use flowrt_python::{CallbackFuture, HostCallbacks};
use flowrt_tools::LlmClient;
use indexmap::IndexMap;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Runs a prompty for Python's `Prompty.__call__`: the request is
/// `{"source": <absolute .prompty path>, "model": {parameters?, response?, api?, configuration?},
/// "configuration": <a model configuration object's fields with "type">|null, "overrides": {...},
/// "inputs": {...}}` and the answer `{"output": <value>, "raw": <bool>}` (`raw` when the value is
/// the model's whole reply, `response: all`, which Python wraps for attribute access).
pub type PromptyHandler = Arc<dyn Fn(Value) -> CallbackFuture + Send + Sync>;

/// The handler that runs prompties in Rust: the file is loaded, the `model` dict merged over its
/// model key by key, a configuration object (`OpenAIModelConfiguration(...)`, sent apart as
/// `configuration`) replacing its configuration whole, then its connection is resolved from
/// `connections` and the model called with `client`. Errors become the message Python raises.
pub fn prompty_handler(connections: SharedConnections, client: LlmClient) -> PromptyHandler {
    Arc::new(move |request: Value| {
        let connections = connections.current();
        let client = client.clone();
        Box::pin(async move { run_prompty(&request, &connections, &client).await })
    })
}

async fn run_prompty(
    request: &Value,
    connections: &HashMap<String, Connection>,
    client: &LlmClient,
) -> Result<Value, String> {
    let source = request["source"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("a Prompty call needs the path of its .prompty file")?;
    if let Some(keys) = request["overrides"].as_object().filter(|m| !m.is_empty()) {
        let names: Vec<&str> = keys.keys().map(String::as_str).collect();
        return Err(format!(
            "Prompty.load({source}, {}=...): flowrt overrides only `model=` of a prompty\nhint: write the other keys in the .prompty file",
            names.join("=..., ")
        ));
    }
    // The file is checked with what `model=` gives it: a file may leave its parameters or
    // configuration to the caller, as promptflow allows.
    let model = match &request["model"] {
        Value::Object(model) if !model.is_empty() => Some(model),
        Value::Object(_) | Value::Null => None,
        other => {
            return Err(format!(
                "Prompty.load(model=...) must be a dict, not {other}"
            ))
        }
    };
    let configuration = match &request["configuration"] {
        Value::Object(configuration) => Some(configuration),
        Value::Null => None,
        other => {
            return Err(format!(
                "a model configuration must be an object, not {other}"
            ))
        }
    };
    let prompty = Prompty::load_overridden(Path::new(source), model, configuration)
        .map_err(|e| e.to_string())?;
    let connection =
        flowrt_tools::resolve_prompty_connection(&prompty, |n| connections.get(n).cloned())
            .map_err(|e| tool_message(&e))?;
    let inputs: IndexMap<String, Value> = match &request["inputs"] {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => IndexMap::new(),
    };
    let raw = prompty.model.response == PromptyResponse::All;
    if prompty.model.streams() && !raw {
        // A streamed reply reaches Python as the model's own chunks, which promptflow's Prompty
        // yields one by one (a caller counting or showing them sees the same pieces).
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let outcome = flowrt_tools::execute_prompty_streamed(
            client,
            &prompty,
            &inputs,
            &connection,
            Some(tx),
        )
        .await
        .map_err(|e| tool_message(&e))?;
        let mut chunks = Vec::new();
        while let Ok(piece) = rx.try_recv() {
            chunks.push(piece);
        }
        if outcome.output.is_string() {
            return Ok(json!({"output": outcome.output, "chunks": chunks, "raw": false}));
        }
        return Ok(json!({"output": outcome.output, "raw": false}));
    }
    let output = flowrt_tools::execute_prompty(client, &prompty, &inputs, &connection)
        .await
        .map_err(|e| tool_message(&e))?;
    Ok(json!({
        "output": output,
        "raw": raw,
    }))
}

/// A prompty failure as Python sees it: promptflow's exception name first, when there is one.
fn tool_message(e: &flowrt_tools::ToolError) -> String {
    match e.python_type() {
        Some(kind) => format!("{kind}: {e}"),
        None => e.to_string(),
    }
}

/// Answers the Python workers' host callbacks for one flow.
pub struct FlexHost {
    connections: SharedConnections,
    prompty: PromptyHandler,
    client: LlmClient,
}

impl FlexHost {
    /// Callbacks answered from `connections`; `Prompty.__call__` runs in Rust with `client`.
    pub fn new(connections: SharedConnections, client: LlmClient) -> Self {
        FlexHost {
            prompty: prompty_handler(connections.clone(), client.clone()),
            connections,
            client,
        }
    }
}

impl HostCallbacks for FlexHost {
    fn call(&self, op: &str, args: Value) -> CallbackFuture {
        match op {
            "connection" => {
                let name = args["name"].as_str().unwrap_or_default().to_string();
                let connections = self.connections.current();
                let answer = match connections.get(&name) {
                    // The whole record: a connection-typed init kwarg becomes a connection object.
                    Some(c) => Ok(json!({
                        "name": c.name,
                        "type": c.kind.as_str(),
                        "class": c.kind.python_class(),
                        "configs": c.configs,
                        "secrets": c.secrets,
                    })),
                    None => {
                        let mut known: Vec<&str> = connections.keys().map(String::as_str).collect();
                        known.sort_unstable();
                        Err(format!(
                            "Connection '{name}' is not found; stored connections: {}. Create it with `flowrt connection create --file CONN.yaml`",
                            if known.is_empty() { "(none)".to_string() } else { known.join(", ") }
                        ))
                    }
                };
                Box::pin(async move { answer })
            }
            "prompty" => (self.prompty)(args),
            // promptflow.core._prompty_utils, which flows import to render prompts themselves.
            "render_prompt_template" | "parse_chat" | "prompty_template" => {
                let answer = prompt_util(op, &args);
                Box::pin(async move { answer })
            }
            "llm" => {
                let client = self.client.clone();
                Box::pin(async move { run_llm_callback(&args, &client).await })
            }
            other => {
                let message = format!("unknown host callback '{other}' from the python worker");
                Box::pin(async move { Err(message) })
            }
        }
    }
}

/// The rendering helpers of `promptflow.core._prompty_utils` (and `Prompty._template`), done by
/// the same code that renders prompties and llm nodes:
/// - `render_prompt_template` `{template, inputs, api, dir}`: `convert_prompt_template`, chat
///   messages or the completion prompt;
/// - `parse_chat` `{chat}`: a rendered chat prompt split into messages;
/// - `prompty_template` `{source}`: a prompty file's body as promptflow reads it.
fn prompt_util(op: &str, args: &Value) -> Result<Value, String> {
    let text = |key: &str| args[key].as_str().unwrap_or_default();
    match op {
        "render_prompt_template" => {
            let api = match text("api") {
                "chat" => flowrt_flow::PromptyApi::Chat,
                "completion" => flowrt_flow::PromptyApi::Completion,
                other => return Err(format!("api must be 'chat' or 'completion', not {other:?}")),
            };
            let inputs: IndexMap<String, Value> = args["inputs"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            flowrt_tools::render_prompt_template(
                text("template"),
                &inputs,
                api,
                Path::new(text("dir")),
            )
            .map_err(|e| tool_message(&e))
        }
        "parse_chat" => flowrt_tools::parse_chat(text("chat"))
            .map(Value::Array)
            .map_err(|e| tool_message(&e)),
        _ => Prompty::load(Path::new(text("source")))
            .map(|p| Value::String(p.template))
            .map_err(|e| e.to_string()),
    }
}

/// `promptflow.tools.openai.chat(...)` / `promptflow.tools.aoai.chat(...)` called from Python: the
/// connection object the code built, the prompt template and the other arguments (API parameters
/// and template variables) run as an `llm` node runs, in Rust.
async fn run_llm_callback(request: &Value, client: &LlmClient) -> Result<Value, String> {
    let record = &request["connection"];
    let kind_text = record["type"].as_str().unwrap_or("");
    let kind = flowrt_api::ConnectionKind::parse(kind_text).ok_or_else(|| {
        format!("the llm tool needs an OpenAI or Azure OpenAI connection, not `{kind_text}`")
    })?;
    let strings = |v: &Value| -> indexmap::IndexMap<String, String> {
        v.as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k.clone(), s.clone())),
                Value::Null => None,
                other => Some((k.clone(), other.to_string())),
            })
            .collect()
    };
    let connection = Connection {
        name: record["name"].as_str().unwrap_or("inline").to_string(),
        kind,
        configs: strings(&record["configs"]),
        secrets: strings(&record["secrets"]),
    };
    let api = match request["api"].as_str() {
        Some("completion") => flowrt_tools::LlmApi::Completion,
        _ => flowrt_tools::LlmApi::Chat,
    };
    let template = request["prompt"]
        .as_str()
        .ok_or("the llm tool needs a prompt (a Jinja2 template)")?;
    let inputs = request["inputs"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), flowrt_tools::TemplateVar::plain(v.clone())))
        .collect();
    let result = client
        .run_llm(flowrt_tools::LlmCall {
            vision: None,
            api,
            connection: &connection,
            template,
            inputs,
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(json!({"output": result.output}))
}

/// Read `--init FILE.json`: a JSON object of constructor kwargs.
pub fn read_init(file: Option<&Path>) -> Result<Option<Map<String, Value>>> {
    let Some(file) = file else { return Ok(None) };
    let text = fs_err::read_to_string(file)?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("--init {} is not valid JSON", file.display()))?;
    match v {
        Value::Object(m) => Ok(Some(m)),
        _ => bail!(
            "--init {} must hold a JSON object of the entry's constructor arguments, e.g. {{\"tolerance\": 0.1}}",
            file.display()
        ),
    }
}

/// For a flex flow, ask a worker for the entry's signature, complete the flow with it and give
/// the invoker the class's constructor kwargs (`init`, else `sample.init`, plus YAML defaults).
/// Other flows are left as they are (`init` must then be absent).
pub async fn finish(
    flow: &mut Flow,
    invoker: &FlowInvoker,
    init: Option<&Map<String, Value>>,
) -> Result<()> {
    if flow.kind != FlowKind::Flex {
        if init.is_some() {
            bail!(
                "--init is for flex flows (flow.flex.yaml) with a class entry; {} is not one",
                flow.file.display()
            );
        }
        return Ok(());
    }
    let spec = flow
        .flex
        .clone()
        .ok_or_else(|| anyhow!("{} is a flex flow without an entry", flow.file.display()))?;
    let signature = invoker.flex_signature(&spec.entry).await.with_context(|| {
        format!(
            "loading the entry '{}' of {}",
            spec.entry,
            flow.file.display()
        )
    })?;
    flowrt_flow::complete_flex(flow, &signature).map_err(|e| anyhow!(e))?;
    if signature.is_class {
        invoker.set_flex_init(spec.init_kwargs(init));
    } else if init.is_some_and(|m| !m.is_empty()) {
        bail!(
            "--init was given, but the entry '{}' of {} is a function; init kwargs are for class entries",
            spec.entry,
            flow.file.display()
        );
    }
    Ok(())
}

/// The inputs a single-line test runs with when none are given: `sample.inputs` of a flex flow,
/// or a prompty's `sample` (as `pf flow test` does).
pub fn test_inputs(flow: &Flow, given: Map<String, Value>) -> Map<String, Value> {
    if !given.is_empty() {
        return given;
    }
    if let Some(sample) = flow.flex.as_ref().and_then(|f| f.sample_inputs.as_ref()) {
        return sample.clone();
    }
    match &flow.sample {
        Some(sample) => sample.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        None => given,
    }
}

/// `flow validate` of a flex flow: import the entry in a worker and check its signature against
/// the YAML (without running it).
pub fn check_entry(flow: &mut Flow, home: &Path) -> Result<()> {
    let connections = crate::invoker::load_connections(home)?;
    let env = crate::invoker::environment(flow, &connections)?;
    let spec = crate::invoker::python_spec(flow, home, env, &mut |m| eprintln!("{m}"))?;
    let invoker = FlowInvoker::new(flow, connections, spec, 1)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let result = finish(flow, &invoker, None).await;
        invoker.shutdown().await;
        result
    })
}
