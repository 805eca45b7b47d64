//! The heart of flowrt: runs one line of a checked [`Flow`] — nodes start as soon as their
//! dependencies finish, `activate` and bypass rules decide what runs, a failing node fails the line —
//! and runs aggregation nodes over the lists of many lines' values.
//!
//! It is pure: it opens no files, sockets or processes. Tools are called through a [`ToolInvoker`]
//! (Python workers, the built-in LLM and prompt tools, or a fake in tests), and progress is reported
//! to a [`RunObserver`].

mod inputs;
mod line;
mod long_running;
mod mapping;
mod value;

pub use inputs::{prepare_inputs, InputError};
pub use line::{AggregationInputs, AggregationResult, Executor, ExecutorOptions, LineResult};
pub use long_running::LongRunning;
pub use mapping::{
    parse_mapping_pairs, ColumnMapping, KnownNames, LineSources, MappingError, MappingSource,
};
pub use value::{value_at, ValueError};

use flowrt_flow::{Node, NodeKind};
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use std::time::{Duration, SystemTime};

/// Where a resolved argument came from (LLM tools escape role markers in values that did not come
/// from a prompt node).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgOrigin {
    FlowInput,
    Node(NodeKind),
}

/// Opaque data a tool attaches to its output for the tools that read that output whole; the
/// executor carries it and never looks inside (a prompt node's escaped rendering, for instance).
#[derive(Clone)]
pub struct Attachment(pub std::sync::Arc<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attachment")
    }
}

impl PartialEq for Attachment {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// One argument for a tool call.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeArg {
    /// From a reference: pass unchanged.
    Value {
        value: Value,
        origin: ArgOrigin,
        /// The producing tool's attachment, when this argument reads a node's whole output.
        attachment: Option<Attachment>,
    },
    /// Written in the YAML: the tool converts it to its parameter's type.
    Literal(Value),
    /// Read from a node that was bypassed: the parameter's default if it has one, else null.
    Bypassed,
}

/// A tool call the executor asks for.
#[derive(Debug)]
pub struct Invocation<'a> {
    pub node: &'a Node,
    pub args: Vec<(String, NodeArg)>,
    /// The line number, or `None` for an aggregation call.
    pub line: Option<usize>,
    /// When the line times out. An invoker that can stop a call (e.g. by replacing the Python
    /// worker running it) stops it then and fails it with [`DEADLINE_EXCEEDED`]; the executor
    /// reports that as the line's timeout. Calls still running a little after the deadline are
    /// abandoned.
    pub deadline: Option<std::time::Instant>,
}

/// The `error_type` of a [`ToolFailure`] for a call stopped at its [`Invocation::deadline`].
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

/// What a node produced.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeValue {
    Value(Value),
    /// A generator tool's drained chunks, and their concatenation.
    Generator {
        chunks: Vec<Value>,
        joined: String,
    },
}

impl NodeValue {
    /// The value another node receives.
    pub fn as_input(&self) -> Value {
        match self {
            NodeValue::Value(v) => v.clone(),
            NodeValue::Generator { chunks, .. } => Value::Array(chunks.clone()),
        }
    }
}

/// A successful tool call.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolOutcome {
    pub output: NodeValue,
    /// What the tool printed.
    pub logs: String,
    /// `log_metric` calls, in order.
    pub metrics: Vec<(String, Value)>,
    /// LLM token usage, when the tool called a model.
    pub usage: Option<Value>,
    /// The request sent to the model (messages, parameters), when the tool called one.
    pub llm_request: Option<Value>,
    /// The spans `@trace`d functions recorded during the call (id, parent, name, start, end,
    /// inputs, output or error).
    pub spans: Vec<Value>,
    /// Passed to tools that read this output whole.
    pub attachment: Option<Attachment>,
    /// A flex entry's dataclass result as Python writes it (`repr()`), for `flow test`.
    pub repr: Option<String>,
    /// The Python function the tool is (its qualified name), for its trace.
    pub function: Option<String>,
}

impl ToolOutcome {
    pub fn value(v: Value) -> Self {
        ToolOutcome {
            output: NodeValue::Value(v),
            logs: String::new(),
            metrics: Vec::new(),
            usage: None,
            llm_request: None,
            spans: Vec::new(),
            attachment: None,
            repr: None,
            function: None,
        }
    }
}

/// A failed tool call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ToolFailure {
    /// `ValueError`, `ToolLoadError`, `WorkerCrashed`, `LlmError`, ...
    pub error_type: String,
    pub message: String,
    pub traceback: Option<String>,
}

impl ToolFailure {
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        ToolFailure {
            error_type: error_type.into(),
            message: message.into(),
            traceback: None,
        }
    }
}

/// Calls tools. Implementations may be called concurrently for independent nodes.
pub trait ToolInvoker: Send + Sync {
    fn invoke(
        &self,
        call: Invocation<'_>,
    ) -> impl Future<Output = Result<ToolOutcome, ToolFailure>> + Send;
}

/// How a node run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum NodeStatus {
    Completed,
    Bypassed,
    Failed,
    Canceled,
}

impl NodeStatus {
    /// As it is serialized: `Completed`, `Bypassed`, `Failed`, `Canceled`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Completed => "Completed",
            NodeStatus::Bypassed => "Bypassed",
            NodeStatus::Failed => "Failed",
            NodeStatus::Canceled => "Canceled",
        }
    }
}

/// The record of one node on one line (or of one aggregation node).
#[derive(Clone, Debug, Serialize)]
pub struct NodeRun {
    pub node: String,
    pub status: NodeStatus,
    #[serde(with = "unix_seconds")]
    pub start: SystemTime,
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ToolFailure>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub logs: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    /// The request an LLM node sent (messages or prompt, model, parameters), for its trace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm_request: Option<Value>,
    /// The node's inputs as JSON text, when the executor keeps them
    /// ([`ExecutorOptions::record_node_inputs`]): its trace shows them; records do not.
    #[serde(skip)]
    pub inputs: Option<String>,
    /// The Python function the node's tool is, when the tool said (its trace's `function`).
    #[serde(skip)]
    pub function: Option<String>,
    /// What `@trace`d Python functions recorded during the node, as child spans of it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<Value>,
    /// A flex entry's dataclass result as Python writes it (not recorded: `output` holds its
    /// fields).
    #[serde(skip)]
    pub repr: Option<String>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

mod unix_seconds {
    use std::time::{SystemTime, UNIX_EPOCH};
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        )
    }
}

/// Progress events. Every method has a no-op default.
pub trait RunObserver: Send + Sync {
    fn node_started(&self, _line: Option<usize>, _node: &str) {}
    fn node_finished(&self, _line: Option<usize>, _run: &NodeRun) {}
}

/// An observer that ignores everything.
pub struct NoObserver;
impl RunObserver for NoObserver {}
