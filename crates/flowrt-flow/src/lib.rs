//! flowrt's vocabulary for flows: parse `flow.dag.yaml` (promptflow 1.18.5's format) into a checked
//! [`Flow`] whose references, node names, tool files and dependency graph are known to be valid, and
//! the Python-compatible value rules (input conversion, `str()`, `==`) that running it relies on.
//! A `.prompty` file loads into a [`Prompty`] and, through [`prompty_flow`], into a one-node flow.
//! `flow.flex.yaml` loads into a one-node flow that [`complete_flex`] finishes from the entry's
//! signature (which the caller gets from Python).
//!
//! It reads the flow folder and nothing else: no processes, no network, no async.

mod convert;
pub mod edit;
mod error;
mod flex;

mod load;
pub mod nonfinite;
mod prompty;
pub mod pyvalue;
pub mod reference;

pub use convert::{convert_value, file_image_reference, ValueType};
pub use error::{FlowError, Problem};
pub use flex::{complete_flex, EntryPort, EntrySignature, FlexSpec, InitInput, AGGREGATE_NODE};
pub use load::{load_flow, LoadOptions};
pub use prompty::{
    prompty_flow, split_front_matter, Prompty, PromptyApi, PromptyModel, PromptyResponse,
};
pub use reference::{parse_reference, PathSeg, RefSource, Reference};

/// Text as Python reads a file in text mode (universal newlines, as promptflow reads templates and
/// prompty files): `\r\n` and a lone `\r` both become `\n`, so a template saved on Windows renders
/// as the same template saved anywhere else.
pub fn universal_newlines(text: &str) -> String {
    if !text.contains('\r') {
        return text.to_string();
    }
    text.replace("\r\n", "\n").replace('\r', "\n")
}

use indexmap::IndexMap;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A flow input declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowInput {
    pub ty: ValueType,
    /// Already converted to `ty`.
    pub default: Option<Value>,
    pub description: Option<String>,
    pub is_chat_input: bool,
    pub is_chat_history: bool,
}

/// A flow output: what it reads.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowOutput {
    pub reference: Reference,
    pub ty: Option<String>,
    pub is_chat_output: bool,
}

/// The kind of a node (`type:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Python,
    Llm,
    Prompt,
    /// `custom_llm`: a package tool with a prompt template (`package_with_prompt`).
    CustomLlm,
    /// The one node of a prompty flow: renders the `.prompty` file named by its source and calls
    /// its model.
    Prompty,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Python => "python",
            NodeKind::Llm => "llm",
            NodeKind::Prompt => "prompt",
            NodeKind::CustomLlm => "custom_llm",
            NodeKind::Prompty => "prompty",
        }
    }
}

/// Where a node's tool comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolSource {
    /// A file in the flow folder (`.py` or a template), relative to it.
    Code { path: String },
    /// A package tool id such as `promptflow.tools.embedding.embedding`.
    Package { tool: String },
    /// A package tool with a prompt template file (`package_with_prompt`).
    PackageWithPrompt { tool: String, path: String },
    /// A flex flow's entry (`module:function` or `module:Class`); `aggregate` calls the class's
    /// `__aggregate__` instead of the entry itself.
    Entry { entry: String, aggregate: bool },
}

impl ToolSource {
    /// The flow-relative file this source reads, if any.
    pub fn path(&self) -> Option<&str> {
        match self {
            ToolSource::Code { path } | ToolSource::PackageWithPrompt { path, .. } => Some(path),
            ToolSource::Package { .. } | ToolSource::Entry { .. } => None,
        }
    }
}

/// A node input: a reference resolved per line, or a literal from the YAML.
#[derive(Clone, Debug, PartialEq)]
pub enum InputValue {
    Reference(Reference),
    Literal(Value),
}

/// `activate: {when, is}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Activate {
    pub when: Reference,
    pub is: Value,
}

/// One node, with its variant already chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    pub source: ToolSource,
    pub inputs: IndexMap<String, InputValue>,
    pub connection: Option<String>,
    pub api: Option<String>,
    pub activate: Option<Activate>,
    pub aggregation: bool,
    /// The variant in use, when the node has variants.
    pub variant: Option<String>,
    /// The line of `flow.dag.yaml` the node starts on, for messages.
    pub line: Option<usize>,
}

impl Node {
    /// Every node this node needs before it can start: the nodes its inputs and `activate.when` read.
    pub fn dependencies(&self) -> impl Iterator<Item = &str> {
        self.input_dependencies()
            .chain(self.activate.as_ref().and_then(|a| a.when.node()))
    }

    /// The nodes its inputs read (not counting `activate.when`).
    pub fn input_dependencies(&self) -> impl Iterator<Item = &str> {
        self.inputs.values().filter_map(|v| match v {
            InputValue::Reference(r) => r.node(),
            InputValue::Literal(_) => None,
        })
    }
}

/// `environment:` settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    /// `python_requirements_txt`, relative to the flow folder.
    pub python_requirements_txt: Option<String>,
    pub image: Option<String>,
}

/// Which of promptflow's formats a flow was written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlowKind {
    /// `flow.dag.yaml`: named outputs read from nodes.
    #[default]
    Dag,
    /// A single `.prompty` file, loaded as one prompty node.
    Prompty,
    /// `flow.flex.yaml`: a Python entry, loaded as one python node.
    Flex,
}

impl FlowKind {
    /// Prompty and flex flows return one value instead of named outputs: the line's outputs are the
    /// value itself when it is an object, else `{"output": value}` (promptflow's `output.jsonl` shape).
    pub fn returns_value(self) -> bool {
        matches!(self, FlowKind::Prompty | FlowKind::Flex)
    }
}

/// Whether `rel` (a path a flow file names) leaves the flow folder: `..` or absolute.
pub fn leaves_folder(rel: &str) -> bool {
    load::leaves_lexically(Path::new(rel))
}

/// Where a flow's `python_requirements_txt` is inside its folder: the path itself, or for a file
/// outside the folder (`../requirements.txt`, one file for a repository's flows), its name at
/// the folder's root, where flowrt takes it in (as promptflow's `additional_includes` would)
/// when it runs or pushes the flow from its folder.
pub fn requirements_in_folder(rel: &str) -> String {
    if leaves_folder(rel) {
        Path::new(rel)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| rel.to_string())
    } else {
        rel.to_string()
    }
}

/// The output name a value-returning flow (prompty, flex) wraps a non-object value in.
pub const VALUE_OUTPUT: &str = "output";

/// A checked flow: every reference resolves, names are unique, tool files exist inside the flow
/// folder and the nodes form a DAG. `nodes` is in an order where every node follows its dependencies.
#[derive(Clone, Debug)]
pub struct Flow {
    pub kind: FlowKind,
    /// The flow folder.
    pub dir: PathBuf,
    /// The `flow.dag.yaml`, `flow.flex.yaml` or `.prompty` file.
    pub file: PathBuf,
    pub inputs: IndexMap<String, FlowInput>,
    pub outputs: IndexMap<String, FlowOutput>,
    pub nodes: Vec<Node>,
    pub environment_variables: IndexMap<String, Value>,
    pub environment: Environment,
    pub additional_includes: Vec<String>,
    /// The inputs a single-line test (`flow test`) uses when given none at all: a prompty's
    /// `sample`, as `pf flow test` does. Batch runs and serving do not use it.
    pub sample: Option<IndexMap<String, Value>>,
    /// What a flex flow's `flow.flex.yaml` says beyond inputs (`kind` is [`FlowKind::Flex`]).
    pub flex: Option<FlexSpec>,
    /// How images are written in the flow's values (`message_format:`).
    pub message_format: MessageFormat,
    /// What the file holds that promptflow accepts and ignores (a node key it does not know):
    /// reported, with its line, and the flow runs on.
    pub warnings: Vec<Problem>,
}

/// promptflow's `message_format`: the shape of an image reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MessageFormat {
    /// `{"data:image/png;path": PATH}`.
    #[default]
    Basic,
    /// `{"type": "image_file", "image_file": {"path": PATH}}` (`openai-vision`).
    OpenaiVision,
}

impl Flow {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Every name the flow could use as a connection: nodes' `connection`, literal string inputs
    /// (a python tool's connection parameter, the unified llm tool's `connection`) and
    /// `${conn.key}` environment variables. A server hands a session only the stored connections
    /// among these, never the rest.
    pub fn connection_candidates(&self) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        for node in &self.nodes {
            names.extend(node.connection.iter().cloned());
            for value in node.inputs.values() {
                if let InputValue::Literal(Value::String(s)) = value {
                    names.insert(s.clone());
                }
            }
        }
        for (_, value) in self.environment_strings() {
            if let Some((conn, _)) = env_var_reference(&value) {
                names.insert(conn.to_string());
            }
        }
        names
    }

    /// The path of the requirements file the flow asks for, if it exists: inside the flow
    /// folder, where a file named outside it (`../requirements.txt`) is taken in under its own
    /// name (see [`requirements_in_folder`]). Nothing outside the folder is ever named.
    pub fn requirements_file(&self) -> Option<PathBuf> {
        let rel = self.requirements_rel();
        // The loader refused paths that leave the folder; checked again for flows built by hand.
        if load::check_inside(&self.dir, &rel).is_some() {
            return None;
        }
        let path = self.dir.join(rel);
        path.is_file().then_some(path)
    }

    /// The requirements file's path inside the flow folder, found or not (`requirements.txt` when
    /// the flow names none): read or write the flow's requirements only here.
    pub fn requirements_rel(&self) -> String {
        requirements_in_folder(
            self.environment
                .python_requirements_txt
                .as_deref()
                .unwrap_or("requirements.txt"),
        )
    }

    /// `environment_variables` as promptflow passes them to tools: scalars as `str(v)`, lists and
    /// maps as `json.dumps(v)`. `${conn.key}` values are returned as written; see [`env_var_reference`].
    pub fn environment_strings(&self) -> Vec<(String, String)> {
        self.environment_variables
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::Array(_) | Value::Object(_) => pyvalue::py_json_dumps(v),
                    other => pyvalue::py_str(other),
                };
                (k.clone(), s)
            })
            .collect()
    }
}

/// `${connection.key}` in an environment variable value: `(connection, key)`.
pub fn env_var_reference(value: &str) -> Option<(&str, &str)> {
    let body = reference::reference_body(value)?;
    let (conn, key) = body.split_once('.')?;
    (!conn.is_empty() && !key.is_empty() && !key.contains('.')).then_some((conn, key))
}
