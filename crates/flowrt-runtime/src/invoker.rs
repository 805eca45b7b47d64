//! The one place that wires tools to the executor: python nodes go to the flow's Python workers,
//! prompt and llm nodes (and the embedding package tool) to the built-in Rust tools.

use anyhow::{anyhow, bail, Context, Result};
use flowrt_api::Connection;
use flowrt_executor::{
    ArgOrigin, Attachment, Invocation, NodeArg, NodeValue, ToolFailure, ToolInvoker, ToolOutcome,
    DEADLINE_EXCEEDED,
};
use flowrt_flow::{
    env_var_reference, Flow, NodeKind, Prompty, PromptyResponse, RefSource, ToolSource,
};
use flowrt_python::{Arg, CallError, Output, ToolCall, WorkerPool, WorkerSpec};
use flowrt_tools::{LlmApi, LlmCall, LlmClient, PromptEscape, RetryPolicy, TemplateVar};
use indexmap::IndexMap;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// Package tool ids served by the built-in Rust tools instead of Python.
const EMBEDDING_TOOL: &str = "promptflow.tools.embedding.embedding";
/// promptflow-tools' unified LLM tool (`type: custom_llm`, `source.type: package_with_prompt`):
/// its `connection` and `api` arrive as node inputs instead of node fields.
const LLM_TOOL: &str = "promptflow.tools.llm.llm";
/// promptflow-tools' vision chat tools (`type: custom_llm`): a chat call whose template may hold
/// images, with the connection (and the deployment or model) as node inputs. They run as the
/// unified tool's chat does.
const VISION_CHAT_TOOLS: &[&str] = &[
    "promptflow.tools.aoai_gpt4v.AzureOpenAI.chat",
    "promptflow.tools.openai_gpt4v.OpenAI.chat",
    "promptflow.tools.llm_vision.llm_vision",
];
/// promptflow-tools' SerpAPI search (`type: python`, `source.type: package`), served in Rust: the
/// `serpapi` Python client it needs is not in flowrt's environments.
const SERPAPI_TOOL: &str = "promptflow.tools.serpapi.SerpAPI.search";
/// promptflow-tools' Azure AI Content Safety text check, served in Rust (one HTTP call).
const CONTENT_SAFETY_TOOL: &str = "promptflow.tools.azure_content_safety.analyze_text";

/// Package tools of `type: python` that the host serves without a Python worker.
fn is_host_package_tool(tool: &str) -> bool {
    [EMBEDDING_TOOL, SERPAPI_TOOL, CONTENT_SAFETY_TOOL].contains(&tool)
}

/// promptflow-tools' Open Model LLM tool (`type: custom_llm`): a prompt sent to an Azure ML
/// online or serverless endpoint in its model family's request shape.
const OPEN_MODEL_TOOL: &str = "promptflow.tools.open_model_llm.OpenModelLLM.call";

/// A custom_llm tool that the built-in LLM call serves.
fn is_builtin_chat_tool(tool: &str) -> bool {
    tool == LLM_TOOL || VISION_CHAT_TOOLS.contains(&tool)
}

/// Where a line's streamed LLM replies go: set for the duration of one line with
/// `STREAM_SINK.scope(...)` (the executor polls node calls on the line's own task, so a task-local
/// reaches exactly that line's calls, even with many lines sharing one invoker).
pub struct StreamSink {
    /// The nodes whose replies are streamed.
    pub nodes: std::collections::HashSet<String>,
    pub tx: tokio::sync::mpsc::UnboundedSender<String>,
}

tokio::task_local! {
    pub static STREAM_SINK: StreamSink;
}

/// The output promptflow would stream: the whole reply of an LLM node that no other node reads.
pub fn stream_output(flow: &Flow) -> Option<(String, String)> {
    let read_by_nodes: HashSet<&str> = flow.nodes.iter().flat_map(|n| n.dependencies()).collect();
    flow.outputs.iter().find_map(|(name, out)| {
        let RefSource::Node(node) = &out.reference.source else {
            return None;
        };
        let n = flow.node(node)?;
        let is_llm = match n.kind {
            NodeKind::Llm | NodeKind::CustomLlm => true,
            // A prompty streams its text reply when it asks for `stream: true`.
            NodeKind::Prompty => flowrt_flow::Prompty::load(&flow.file)
                .is_ok_and(|p| p.model.streams() && !p.model.json_response()),
            _ => false,
        };
        (is_llm && out.reference.path.is_empty() && !read_by_nodes.contains(node.as_str()))
            .then(|| (name.clone(), node.clone()))
    })
}

/// The connections a flow's tools read, which a deployment replaces while it serves (its
/// owner rotated a key): readers take the current map; a line that started with the old one
/// finishes with it.
#[derive(Clone, Default)]
pub struct SharedConnections(Arc<std::sync::RwLock<Arc<HashMap<String, Connection>>>>);

impl SharedConnections {
    pub fn new(connections: HashMap<String, Connection>) -> Self {
        SharedConnections(Arc::new(std::sync::RwLock::new(Arc::new(connections))))
    }

    /// The connections now.
    pub fn current(&self) -> Arc<HashMap<String, Connection>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, connections: HashMap<String, Connection>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(connections);
    }
}

/// Calls the tools of one flow.
pub struct FlowInvoker {
    templates: HashMap<String, String>,
    /// Prompty nodes: the loaded file and the connection its configuration resolves to.
    prompties: std::sync::RwLock<HashMap<String, (Arc<Prompty>, Connection)>>,
    connections: SharedConnections,
    /// `(connection, key)` read by the flow's `environment_variables`: given to the Python
    /// workers when they start, so a changed value reaches them only when they restart.
    environment_reads: Vec<(String, String)>,
    pool: Option<WorkerPool>,
    llm: LlmClient,
    /// A flex class entry's constructor kwargs (set once the flow is completed).
    flex_init: std::sync::RwLock<Option<serde_json::Map<String, Value>>>,
    /// `init:` types of a flex flow, by name.
    flex_init_types: serde_json::Map<String, Value>,
    /// Where the flow's relative image paths are read from.
    flow_dir: std::path::PathBuf,
}

/// Does this flow need a Python worker at all?
pub fn needs_python(flow: &Flow) -> bool {
    flow.nodes.iter().any(|n| match (&n.kind, &n.source) {
        (NodeKind::Python, ToolSource::Package { tool }) => !is_host_package_tool(tool),
        (NodeKind::Python, _) => true,
        (NodeKind::CustomLlm, ToolSource::PackageWithPrompt { tool, .. }) => {
            !is_builtin_chat_tool(tool) && tool != OPEN_MODEL_TOOL
        }
        _ => false,
    })
}

/// The flow's `environment_variables` as strings, `${conn.key}` resolved from the connections.
pub fn environment(
    flow: &Flow,
    connections: &HashMap<String, Connection>,
) -> Result<Vec<(String, String)>> {
    flow.environment_strings()
        .into_iter()
        .map(|(k, v)| match env_var_reference(&v) {
            Some((conn, key)) => {
                let c = connections.get(conn).ok_or_else(|| {
                    anyhow!("environment variable {k} reads connection '{conn}', which does not exist\nhint: create it with `flowrt connection create --file CONN.yaml`")
                })?;
                let value = c
                    .get(key)
                    .ok_or_else(|| anyhow!("environment variable {k} reads '{key}' of connection '{conn}', which has no such key"))?;
                Ok((k, value.to_string()))
            }
            None => Ok((k, v)),
        })
        .collect()
}

impl FlowInvoker {
    pub fn new(
        flow: &Flow,
        connections: HashMap<String, Connection>,
        python: Option<WorkerSpec>,
        workers: usize,
    ) -> Result<Self> {
        let mut templates = HashMap::new();
        let mut prompties = HashMap::new();
        for node in &flow.nodes {
            if node.kind == NodeKind::Prompty {
                let rel = node.source.path().unwrap_or_default();
                let prompty = Prompty::load(&flow.dir.join(rel))?;
                let conn = flowrt_tools::resolve_prompty_connection(&prompty, |name| {
                    connections.get(name).cloned()
                })?;
                prompties.insert(node.name.clone(), (Arc::new(prompty), conn));
            }
            if matches!(
                node.kind,
                NodeKind::Prompt | NodeKind::Llm | NodeKind::CustomLlm
            ) {
                let rel = node.source.path().unwrap_or_default();
                let text = fs_err::read_to_string(flow.dir.join(rel))
                    .with_context(|| format!("reading the template of node '{}'", node.name))?;
                // promptflow reads a template with Python's universal newlines.
                templates.insert(node.name.clone(), flowrt_flow::universal_newlines(&text));
            }
            // The unified llm tool and the embedding tool take their connection as an input.
            let input_connection = match (&node.kind, &node.source) {
                (NodeKind::CustomLlm, ToolSource::PackageWithPrompt { tool, .. })
                    if is_builtin_chat_tool(tool) =>
                {
                    true
                }
                (NodeKind::Python, ToolSource::Package { tool }) => is_host_package_tool(tool),
                _ => false,
            };
            let named = match node.inputs.get("connection") {
                Some(flowrt_flow::InputValue::Literal(Value::String(s))) if input_connection => {
                    Some(s)
                }
                _ => None,
            };
            if let Some(conn) = node.connection.as_ref().or(named) {
                if !connections.contains_key(conn) {
                    bail!(
                        "node '{}' uses connection '{conn}', which does not exist\nhint: create it with `flowrt connection create --file CONN.yaml`",
                        node.name
                    );
                }
            }
        }
        let llm = LlmClient::new(RetryPolicy::default());
        let connections = SharedConnections::new(connections);
        let callbacks: Arc<dyn flowrt_python::HostCallbacks> =
            Arc::new(crate::flex::FlexHost::new(connections.clone(), llm.clone()));
        let environment_reads = flow
            .environment_strings()
            .into_iter()
            .filter_map(|(_, v)| env_var_reference(&v).map(|(c, k)| (c.to_string(), k.to_string())))
            .collect();
        Ok(FlowInvoker {
            templates,
            prompties: std::sync::RwLock::new(prompties),
            connections,
            environment_reads,
            pool: python
                .map(|spec| WorkerPool::new(spec, workers.max(1)).with_callbacks(callbacks)),
            llm,
            flex_init: std::sync::RwLock::new(None),
            flex_init_types: flow
                .flex
                .as_ref()
                .map(|f| f.init_types())
                .unwrap_or_default(),
            flow_dir: flow.dir.clone(),
        })
    }

    /// Use `connections` from the next tool call on (a deployment's connections, resolved again
    /// when their owner changes one). The prompty nodes' connections are resolved again; a
    /// prompty whose connection is gone keeps its last one, with the error. Returns the
    /// `environment_variables` whose values changed: the running Python workers keep the values
    /// they started with.
    pub fn set_connections(&self, connections: HashMap<String, Connection>) -> Result<Vec<String>> {
        let old = self.connections.current();
        let mut prompties = self.prompties.write().unwrap_or_else(|e| e.into_inner());
        for (prompty, conn) in prompties.values_mut() {
            *conn = flowrt_tools::resolve_prompty_connection(prompty, |name| {
                connections.get(name).cloned()
            })?;
        }
        let stale = self
            .environment_reads
            .iter()
            .filter(|(c, k)| {
                old.get(c).and_then(|x| x.get(k)) != connections.get(c).and_then(|x| x.get(k))
            })
            .map(|(c, k)| format!("{c}.{k}"))
            .collect();
        self.connections.replace(connections);
        Ok(stale)
    }

    /// The constructor kwargs a flex class entry is built with.
    pub fn set_flex_init(&self, init: serde_json::Map<String, Value>) {
        *self.flex_init.write().unwrap_or_else(|e| e.into_inner()) = Some(init);
    }

    /// Import a flex flow's entry in a worker and read its signature.
    pub async fn flex_signature(&self, entry: &str) -> Result<flowrt_flow::EntrySignature> {
        let pool = self
            .pool
            .as_ref()
            .ok_or_else(|| anyhow!("no Python worker was configured for this flex flow"))?;
        let out = pool
            .call(ToolCall {
                node: entry.to_string(),
                source: flowrt_python::ToolSource::Signature {
                    entry: entry.to_string(),
                },
                args: Vec::new(),
                timeout: Some(std::time::Duration::from_secs(600)),
            })
            .await
            .map_err(|e| match e {
                CallError::Load { message } => anyhow!(message),
                CallError::Tool {
                    error_type,
                    message,
                    traceback,
                } => anyhow!("{error_type}: {message}\n{traceback}"),
                other => anyhow!(other),
            })?;
        let value = match out.output {
            Output::Value(v) => v,
            Output::Generator { .. } => {
                bail!("the python worker answered a generator for the signature of '{entry}'")
            }
        };
        serde_json::from_value(value)
            .with_context(|| format!("the python worker's signature of the flex entry '{entry}'"))
    }

    /// Tell `listener` about every LLM retry (what failed, how long the wait is).
    pub fn with_retry_listener(mut self, listener: flowrt_tools::RetryListener) -> Self {
        self.llm = self.llm.with_retry_listener(listener);
        self
    }

    /// What promptflow checks when it loads a flow and flowrt can only learn from the tools'
    /// signatures: a literal given to a python tool's connection-typed parameter must name a
    /// stored connection. Run before any line, so the flow fails at once, naming node and
    /// connection, instead of each line failing (or the tool getting a plain string).
    pub async fn preflight(&self, flow: &Flow) -> Result<()> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let mut problems = Vec::new();
        let connections = self.connections.current();
        for node in &flow.nodes {
            let source = match &node.source {
                ToolSource::Package { tool } if is_host_package_tool(tool) => continue,
                // A flex entry's inputs are the flow's inputs (its init is checked by flex).
                ToolSource::Entry { .. } => continue,
                _ if node.kind != NodeKind::Python => continue,
                ToolSource::Code { path } => flowrt_python::ToolSource::Code { path: path.clone() },
                ToolSource::Package { tool } | ToolSource::PackageWithPrompt { tool, .. } => {
                    flowrt_python::ToolSource::Package { tool: tool.clone() }
                }
            };
            // Only literal strings that name no stored connection can be a missing connection.
            let args: Vec<(String, Arg)> = node
                .inputs
                .iter()
                .filter_map(|(name, input)| match input {
                    flowrt_flow::InputValue::Literal(Value::String(s))
                        if !s.is_empty() && !connections.contains_key(s) =>
                    {
                        Some((name.clone(), Arg::Literal(Value::String(s.clone()))))
                    }
                    _ => None,
                })
                .collect();
            if args.is_empty() {
                continue;
            }
            let check = pool.check(ToolCall {
                node: node.name.clone(),
                source,
                args,
                timeout: None,
            });
            match check.await {
                Ok(printed) => {
                    for line in printed.lines() {
                        eprintln!("[{}] {line}", node.name);
                    }
                }
                Err(CallError::Load { message }) => problems.push(message),
                // Anything else (a tool that does not load, a crash) is reported by its call.
                Err(_) => {}
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("{}", problems.join("\n")))
        }
    }

    /// Start up to `workers` Python workers with the flow's tools loaded (see
    /// [`WorkerPool::warm`]); nothing for a flow without Python. What loading a tool printed goes
    /// to stderr under its node's name, as [`FlowInvoker::preflight`] prints it.
    pub async fn warm(&self, flow: &Flow, workers: usize) {
        let Some(pool) = &self.pool else { return };
        let loads: Vec<ToolCall> = flow
            .nodes
            .iter()
            .filter_map(|node| {
                let source = match &node.source {
                    _ if node.kind != NodeKind::Python => return None,
                    ToolSource::Code { path } => {
                        flowrt_python::ToolSource::Code { path: path.clone() }
                    }
                    ToolSource::Package { tool } if !is_host_package_tool(tool) => {
                        flowrt_python::ToolSource::Package { tool: tool.clone() }
                    }
                    _ => return None,
                };
                Some(ToolCall {
                    node: node.name.clone(),
                    source,
                    args: Vec::new(),
                    timeout: Some(std::time::Duration::from_secs(600)),
                })
            })
            .collect();
        for (node, printed) in pool.warm(workers, &loads).await {
            for line in printed.lines() {
                eprintln!("[{node}] {line}");
            }
        }
    }

    pub async fn shutdown(&self) {
        if let Some(pool) = &self.pool {
            pool.shutdown().await;
        }
    }

    fn connection_named(&self, node: &str, name: &str) -> Result<Connection, ToolFailure> {
        self.connections.current().get(name).cloned().ok_or_else(|| {
            ToolFailure::new(
                "ConnectionNotFound",
                format!("node '{node}' uses connection '{name}', which does not exist; create it with `flowrt connection create --file CONN.yaml`"),
            )
        })
    }

    async fn python(&self, call: Invocation<'_>) -> Result<ToolOutcome, ToolFailure> {
        let pool = self.pool.as_ref().ok_or_else(|| {
            ToolFailure::new(
                "PythonUnavailable",
                "no Python worker was configured for this flow",
            )
        })?;
        let source = match &call.node.source {
            ToolSource::Code { path } => flowrt_python::ToolSource::Code { path: path.clone() },
            ToolSource::PackageWithPrompt { tool, .. } if call.node.kind == NodeKind::CustomLlm => {
                flowrt_python::ToolSource::PackageWithPrompt {
                    tool: tool.clone(),
                    template: self
                        .templates
                        .get(&call.node.name)
                        .cloned()
                        .unwrap_or_default(),
                }
            }
            ToolSource::Package { tool } | ToolSource::PackageWithPrompt { tool, .. } => {
                flowrt_python::ToolSource::Package { tool: tool.clone() }
            }
            ToolSource::Entry { entry, aggregate } => flowrt_python::ToolSource::Entry {
                entry: entry.clone(),
                init: self
                    .flex_init
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
                init_types: self.flex_init_types.clone(),
                aggregate: *aggregate,
            },
        };
        // `__aggregate__`'s dict is the run's metrics, as it is.
        let aggregate = matches!(
            call.node.source,
            ToolSource::Entry {
                aggregate: true,
                ..
            }
        );
        let connections = self.connections.current();
        let args = call
            .args
            .into_iter()
            .map(|(name, arg)| {
                let arg = match arg {
                    NodeArg::Value { value, .. } => Arg::Value(value),
                    NodeArg::Literal(Value::String(s)) if connections.contains_key(&s) => {
                        Arg::Connection(connections[&s].clone())
                    }
                    NodeArg::Literal(v) => Arg::Literal(v),
                    NodeArg::Bypassed => Arg::Bypassed,
                };
                (name, arg)
            })
            .collect();
        // At the line's deadline the pool replaces the worker running the call.
        let timeout = call
            .deadline
            .map(|d| d.saturating_duration_since(std::time::Instant::now()));
        let out = pool
            .call(ToolCall {
                node: call.node.name.clone(),
                source,
                args,
                timeout,
            })
            .await
            .map_err(python_failure)?;
        let mut metrics = out.metrics;
        if aggregate {
            match &out.output {
                Output::Value(Value::Object(m)) => {
                    metrics.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())))
                }
                Output::Value(Value::Null) => {}
                other => {
                    return Err(ToolFailure::new(
                        "AggregationError",
                        format!("__aggregate__ must return a dict of metrics, got {other:?}"),
                    ))
                }
            }
        }
        Ok(ToolOutcome {
            output: match out.output {
                Output::Value(v) => NodeValue::Value(v),
                Output::Generator { chunks, joined } => NodeValue::Generator { chunks, joined },
            },
            logs: out.stdout,
            metrics,
            usage: None,
            llm_request: None,
            spans: out.spans,
            attachment: None,
            repr: out.repr,
            function: out.function,
        })
    }

    async fn llm(&self, call: Invocation<'_>) -> Result<ToolOutcome, ToolFailure> {
        let node = call.node;
        let template = self
            .templates
            .get(&node.name)
            .map(String::as_str)
            .unwrap_or_default();
        let mut conn_name = node.connection.clone().unwrap_or_default();
        let mut api_name = node.api.clone();
        let mut inputs = IndexMap::new();
        for (k, a) in call.args {
            let var = template_var(a);
            // The unified llm tool takes its connection and api as inputs.
            match (k.as_str(), &var.value) {
                ("connection", Value::String(s)) if node.kind == NodeKind::CustomLlm => {
                    conn_name = s.clone()
                }
                ("api", Value::String(s)) if node.kind == NodeKind::CustomLlm => {
                    api_name = Some(s.clone())
                }
                _ => {
                    inputs.insert(k, var);
                }
            }
        }
        // As in promptflow, where the template is bound to the tool's `prompt` parameter before
        // the node's inputs: a `prompt` input replaces the template file (it is still rendered
        // as a template, with the other inputs).
        let prompt_input = inputs
            .shift_remove("prompt")
            .map(|v| flowrt_flow::pyvalue::py_str(&v.value));
        let template = prompt_input.as_deref().unwrap_or(template);
        let connection = self.connection_named(&node.name, &conn_name)?;
        let api = match api_name.as_deref() {
            Some("completion") => LlmApi::Completion,
            _ => LlmApi::Chat,
        };
        let vision = match &node.source {
            ToolSource::PackageWithPrompt { tool, .. }
                if VISION_CHAT_TOOLS.contains(&tool.as_str()) =>
            {
                Some(self.flow_dir.as_path())
            }
            _ => None,
        };
        let call = LlmCall {
            api,
            connection: &connection,
            template,
            inputs,
            vision,
        };
        let sink = STREAM_SINK
            .try_with(|s| s.nodes.contains(&node.name).then(|| s.tx.clone()))
            .ok()
            .flatten();
        if let Some(tx) = sink {
            return self.llm_streamed(call, tx).await;
        }
        let result = self
            .llm
            .run_llm(call)
            .await
            .map_err(|e| ToolFailure::new("LlmError", e.to_string()))?;
        Ok(ToolOutcome {
            output: NodeValue::Value(result.output),
            logs: String::new(),
            metrics: Vec::new(),
            usage: result.usage.map(|u| {
                serde_json::json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens})
            }),
            llm_request: Some(result.request),
            spans: Vec::new(),
            attachment: None,
            repr: None,
            function: None,
        })
    }

    /// Stream the reply's pieces to `tx` as they arrive; the node's output is their concatenation.
    async fn llm_streamed(
        &self,
        call: LlmCall<'_>,
        tx: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<ToolOutcome, ToolFailure> {
        use futures::StreamExt;
        let (mut stream, request) = self
            .llm
            .run_llm_stream_traced(call)
            .await
            .map_err(|e| ToolFailure::new("LlmError", e.to_string()))?;
        let mut whole = String::new();
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| ToolFailure::new("LlmError", e.to_string()))?;
            whole.push_str(&piece);
            // A client that went away does not stop the node: its output is still the whole reply.
            let _ = tx.send(piece);
        }
        Ok(ToolOutcome {
            llm_request: Some(request),
            ..ToolOutcome::value(Value::String(whole))
        })
    }

    /// A prompty flow's node: render the file with the line's inputs and call its model.
    async fn prompty(&self, call: Invocation<'_>) -> Result<ToolOutcome, ToolFailure> {
        let node = call.node;
        let found = self
            .prompties
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node.name)
            .cloned();
        let (prompty, connection) = found.ok_or_else(|| {
            ToolFailure::new(
                "PromptyNotLoaded",
                format!("node '{}': its .prompty file was not loaded", node.name),
            )
        })?;
        let inputs: IndexMap<String, Value> = call
            .args
            .into_iter()
            .map(|(k, a)| (k, template_var(a).value))
            .collect();
        let sink = STREAM_SINK
            .try_with(|s| s.nodes.contains(&node.name).then(|| s.tx.clone()))
            .ok()
            .flatten();
        let outcome =
            flowrt_tools::execute_prompty_streamed(&self.llm, &prompty, &inputs, &connection, sink)
                .await
                .map_err(|e| {
                    ToolFailure::new(e.python_type().unwrap_or("PromptyError"), e.to_string())
                })?;
        if prompty.model.response == PromptyResponse::All {
            // promptflow returns the SDK's ChatCompletion object, which a flow cannot output.
            return Err(ToolFailure::new(
                "TypeError",
                format!(
                    "Object of type {} is not JSON serializable: {} has `response: all`, which returns the raw completion; a flow output must be JSON\nhint: use `response: first` (the default) to output the reply's text",
                    if prompty.model.api == flowrt_flow::PromptyApi::Chat { "ChatCompletion" } else { "Completion" },
                    prompty.path.display()
                ),
            ));
        }
        Ok(ToolOutcome {
            usage: outcome.usage.map(|u| {
                serde_json::json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens})
            }),
            llm_request: Some(outcome.request),
            ..ToolOutcome::value(outcome.output)
        })
    }

    /// promptflow-tools' Open Model LLM call: the node's template rendered with its other inputs,
    /// sent to the endpoint its `endpoint_name` (or its endpoint inputs) name.
    async fn open_model(&self, call: Invocation<'_>) -> Result<ToolOutcome, ToolFailure> {
        const PARAMS: &[&str] = &[
            "api",
            "endpoint_name",
            "deployment_name",
            "temperature",
            "max_new_tokens",
            "top_p",
            "model_kwargs",
            "endpoint_url",
            "endpoint_api_key",
            "model_family",
        ];
        let node = call.node;
        let user_error = |m: String| ToolFailure::new("OpenModelLLMUserError", m);
        let mut params: IndexMap<String, Value> = IndexMap::new();
        let mut vars: IndexMap<String, Value> = IndexMap::new();
        for (k, a) in call.args {
            let v = template_var(a).value;
            if PARAMS.contains(&k.as_str()) {
                params.insert(k, v);
            } else {
                vars.insert(k, v);
            }
        }
        let text = |k: &str| params.get(k).and_then(Value::as_str).map(str::trim);
        let chat = match text("api") {
            Some("chat") => true,
            Some("completion") => false,
            Some(other) => {
                return Err(user_error(format!(
                    "node '{}': api '{other}' is not supported; set its input api to chat or completion",
                    node.name
                )))
            }
            None => {
                return Err(user_error(format!(
                    "node '{}' needs an input api: chat or completion",
                    node.name
                )))
            }
        };
        let given: Vec<&str> = ["endpoint_url", "endpoint_api_key", "model_family"]
            .into_iter()
            .filter(|k| params.contains_key(*k))
            .collect();
        let endpoint = if given.len() == 3 {
            flowrt_tools::OpenModelEndpoint {
                url: text("endpoint_url").unwrap_or_default().to_string(),
                api_key: text("endpoint_api_key").unwrap_or_default().to_string(),
                family: flowrt_tools::ModelFamily::parse(text("model_family").unwrap_or_default())
                    .map_err(|e| user_error(e.to_string()))?,
            }
        } else if !given.is_empty() {
            return Err(user_error(
                "Endpoint connection via inputs not fully set: endpoint_url, endpoint_api_key and model_family must all be set".to_string(),
            ));
        } else {
            let name = text("endpoint_name").unwrap_or_default();
            let (kind, conn) = name.split_once('/').unwrap_or((name, ""));
            match kind.to_ascii_lowercase().as_str() {
                "localconnection" | "connection" => {
                    flowrt_tools::OpenModelEndpoint::from_connection(&self.connection_named(&node.name, conn)?)
                        .map_err(|e| user_error(e.to_string()))?
                }
                "onlineendpoint" | "serverlessendpoint" => {
                    return Err(user_error(format!(
                        "node '{}': endpoint '{name}' is looked up through Azure Resource Manager, which flowrt does not reach; store the endpoint in a custom connection (configs endpoint_url and model_family, secret endpoint_api_key) and name it as localConnection/NAME",
                        node.name
                    )))
                }
                _ => {
                    return Err(user_error(format!(
                        "node '{}': invalid endpoint connection type in '{name}'; use localConnection/NAME (a custom connection)",
                        node.name
                    )))
                }
            }
        };
        // An empty deployment, or "default", is the endpoint's default deployment.
        let deployment = text("deployment_name").filter(|d| !d.is_empty() && *d != "default");
        let template = self
            .templates
            .get(&node.name)
            .map(String::as_str)
            .unwrap_or_default();
        let prompt = flowrt_tools::render_prompt(template, &vars)
            .map_err(|e| ToolFailure::new("TemplateError", e.to_string()))?;
        let output = self
            .llm
            .open_model_llm(&endpoint, chat, &prompt, deployment, &params)
            .await
            .map_err(|e| {
                service_failure(
                    e,
                    "OpenModelLLMUserError",
                    "OpenModelLLMOnlineEndpointError",
                )
            })?;
        Ok(ToolOutcome::value(output))
    }

    /// A host-served package tool's `connection` input and its other inputs.
    fn connection_and_inputs(
        &self,
        call: Invocation<'_>,
        tool: &str,
        kind: &str,
    ) -> Result<(Connection, IndexMap<String, Value>), ToolFailure> {
        let mut inputs: IndexMap<String, Value> = IndexMap::new();
        let mut connection = None;
        for (k, a) in call.args {
            let v = template_var(a).value;
            if k == "connection" {
                let name = v.as_str().unwrap_or_default().to_string();
                connection = Some(self.connection_named(&call.node.name, &name)?);
            } else {
                inputs.insert(k, v);
            }
        }
        let connection = connection.ok_or_else(|| {
            ToolFailure::new(
                "MissingInput",
                format!(
                    "node '{}': the {tool} tool needs a 'connection' input naming {kind} connection",
                    call.node.name
                ),
            )
        })?;
        Ok((connection, inputs))
    }

    async fn serpapi(&self, call: Invocation<'_>) -> Result<ToolOutcome, ToolFailure> {
        let (connection, inputs) = self.connection_and_inputs(call, "serpapi", "a serp")?;
        let v = self
            .llm
            .serpapi_search(&connection, &inputs)
            .await
            .map_err(|e| service_failure(e, "SerpAPIUserError", "SerpAPISystemError"))?;
        Ok(ToolOutcome::value(v))
    }

    async fn content_safety(&self, call: Invocation<'_>) -> Result<ToolOutcome, ToolFailure> {
        let (connection, inputs) =
            self.connection_and_inputs(call, "azure_content_safety", "an azure_content_safety")?;
        let v = self
            .llm
            .content_safety_analyze_text(&connection, &inputs)
            .await
            .map_err(|e| {
                service_failure(
                    e,
                    "AzureContentSafetyInputValueError",
                    "AzureContentSafetySystemError",
                )
            })?;
        Ok(ToolOutcome::value(v))
    }

    async fn embedding(&self, call: Invocation<'_>) -> Result<ToolOutcome, ToolFailure> {
        let (connection, inputs) =
            self.connection_and_inputs(call, "embedding", "an open_ai or azure_open_ai")?;
        let v = self
            .llm
            .embedding(&connection, &inputs)
            .await
            .map_err(|e| ToolFailure::new("LlmError", e.to_string()))?;
        Ok(ToolOutcome::value(v))
    }
}

/// A service tool's error under promptflow-tools' exception names: the caller's fault (a bad
/// parameter, a refused key or request) or the service's.
fn service_failure(e: flowrt_tools::ToolError, user: &str, system: &str) -> ToolFailure {
    let kind = match &e {
        flowrt_tools::ToolError::Http { status, .. } if *status < 500 => user,
        flowrt_tools::ToolError::BadParameter { .. }
        | flowrt_tools::ToolError::UnsupportedConnection { .. } => user,
        _ => system,
    };
    ToolFailure::new(kind, e.to_string())
}

/// A template variable. As in promptflow, role markers are escaped only in values that come
/// straight from flow inputs (`${inputs.x}`): user text cannot add messages, while text produced
/// by the flow's own nodes is trusted.
fn template_var(arg: NodeArg) -> TemplateVar {
    match arg {
        NodeArg::Value {
            value,
            origin,
            attachment,
        } => TemplateVar {
            value,
            escape_roles: origin == ArgOrigin::FlowInput,
            // A prompt node's output keeps its flow inputs' role markers escaped.
            prompt: attachment.and_then(|a| a.0.downcast::<PromptEscape>().ok()),
        },
        NodeArg::Literal(value) => TemplateVar::plain(value),
        NodeArg::Bypassed => TemplateVar::plain(Value::Null),
    }
}

fn python_failure(e: CallError) -> ToolFailure {
    match e {
        CallError::Tool {
            error_type,
            message,
            traceback,
        } => ToolFailure {
            error_type,
            message,
            traceback: Some(traceback).filter(|t| !t.is_empty()),
        },
        CallError::Load { message } => ToolFailure::new("ToolLoadError", message),
        CallError::Crashed { detail } => ToolFailure::new("WorkerCrashed", detail),
        // Calls carry a timeout only for the line's deadline.
        CallError::Timeout { seconds } => ToolFailure::new(
            DEADLINE_EXCEEDED,
            format!("the tool did not finish within {seconds:.3} seconds; its python worker was replaced"),
        ),
        other => ToolFailure::new("PythonWorkerError", other.to_string()),
    }
}

impl ToolInvoker for FlowInvoker {
    async fn invoke(&self, call: Invocation<'_>) -> Result<ToolOutcome, ToolFailure> {
        let deadline = call.deadline;
        let python = call.node.kind == NodeKind::Python
            && !matches!(&call.node.source, ToolSource::Package { tool } if tool == EMBEDDING_TOOL);
        match deadline {
            // Python calls are stopped by the worker pool; built-in tools by dropping them.
            Some(d) if !python => {
                let d = tokio::time::Instant::from_std(d);
                match tokio::time::timeout_at(d, self.invoke_tool(call)).await {
                    Ok(r) => r,
                    Err(_) => Err(ToolFailure::new(
                        DEADLINE_EXCEEDED,
                        "the tool did not finish before the line's deadline",
                    )),
                }
            }
            _ => self.invoke_tool(call).await,
        }
    }
}

impl FlowInvoker {
    async fn invoke_tool(&self, call: Invocation<'_>) -> Result<ToolOutcome, ToolFailure> {
        match (&call.node.kind, &call.node.source) {
            (NodeKind::Prompt, _) => {
                let template = self
                    .templates
                    .get(&call.node.name)
                    .map(String::as_str)
                    .unwrap_or_default();
                let vars = call
                    .args
                    .into_iter()
                    .map(|(k, a)| (k, template_var(a)))
                    .collect();
                flowrt_tools::render_prompt_result(template, &vars)
                    .map(|(text, escape)| ToolOutcome {
                        attachment: escape.map(|e| Attachment(Arc::new(e))),
                        ..ToolOutcome::value(Value::String(text))
                    })
                    .map_err(|e| ToolFailure::new("TemplateError", e.to_string()))
            }
            (NodeKind::Llm, _) => self.llm(call).await,
            (NodeKind::Prompty, _) => self.prompty(call).await,
            (NodeKind::Python, ToolSource::Package { tool }) if tool == EMBEDDING_TOOL => {
                self.embedding(call).await
            }
            (NodeKind::Python, ToolSource::Package { tool }) if tool == SERPAPI_TOOL => {
                self.serpapi(call).await
            }
            (NodeKind::Python, ToolSource::Package { tool }) if tool == CONTENT_SAFETY_TOOL => {
                self.content_safety(call).await
            }
            (NodeKind::Python, _) => self.python(call).await,
            (NodeKind::CustomLlm, ToolSource::PackageWithPrompt { tool, .. })
                if is_builtin_chat_tool(tool) =>
            {
                self.llm(call).await
            }
            (NodeKind::CustomLlm, ToolSource::PackageWithPrompt { tool, .. })
                if tool == OPEN_MODEL_TOOL =>
            {
                self.open_model(call).await
            }
            // Any other package's LLM-like tool runs in Python with its template, as promptflow
            // runs it.
            (NodeKind::CustomLlm, ToolSource::PackageWithPrompt { .. }) => self.python(call).await,
            (NodeKind::CustomLlm, source) => Err(ToolFailure::new(
                "UnsupportedTool",
                format!(
                    "node '{}': custom_llm tool {source:?} is not supported; a custom_llm node names a package tool and its prompt file (source type package_with_prompt)",
                    call.node.name,
                ),
            )),
        }
    }
}

/// The worker settings for a flow, or `None` when it has no Python nodes.
pub fn python_spec(
    flow: &Flow,
    home: &Path,
    env: Vec<(String, String)>,
    progress: &mut dyn FnMut(&str),
) -> Result<Option<WorkerSpec>> {
    if !needs_python(flow) {
        return Ok(None);
    }
    let requirements = flow.requirements_file();
    let python = flowrt_python::ensure_env(
        flowrt_python::EnvRequest {
            requirements: requirements.as_deref(),
            flowrt_home: home,
        },
        progress,
    )?;
    Ok(Some(WorkerSpec {
        python,
        flow_dir: flow.dir.clone(),
        env,
        state_dir: home.to_path_buf(),
    }))
}

/// Load every stored connection (connections are few; flows name them in many places).
/// Connections handed over stdin as a JSON list (by a server to its agent, by an agent to a batch
/// run): read to the end, so the writer's close marks the end.
/// What a session's server hands its agent on stdin (see [`flowrt_api::agent::SessionSecrets`]).
pub fn secrets_from_stdin() -> Result<flowrt_api::agent::SessionSecrets> {
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin()
        .take(16 * 1024 * 1024)
        .read_to_string(&mut text)
        .context("reading connections from stdin")?;
    if text.trim().is_empty() {
        return Ok(Default::default());
    }
    flowrt_api::agent::SessionSecrets::from_json(&text)
        .context("the connections on stdin are not a JSON object or list")
}

pub fn load_connections(home: &Path) -> Result<HashMap<String, Connection>> {
    let store = flowrt_store::ConnectionStore::open(home)?;
    Ok(store
        .list()?
        .into_iter()
        .map(|c| (c.name.clone(), c))
        .collect())
}
