//! Reading `flow.dag.yaml` into a [`Flow`]: YAML syntax, then shape, then meaning (references,
//! names, files, cycles). Problems of shape and meaning are collected so one run reports them all.

use crate::convert::{convert_value, ValueType};
use crate::error::{FlowError, Problem};
use crate::reference::{parse_reference, reference_body, Reference};
use crate::{
    Activate, Environment, Flow, FlowInput, FlowOutput, InputValue, Node, NodeKind, ToolSource,
};
use flowrt_yaml::{Node as Yaml, Value as Y};
use indexmap::{IndexMap, IndexSet};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Top-level keys promptflow accepts in `flow.dag.yaml`.
/// Top-level keys promptflow accepts in `flow.dag.yaml`: what its flow contract reads (`id`, `name`,
/// `message_format`, `tools`, ...) and what its flow schema declares (`display_name`, `tags`, ...).
/// Keys flowrt has no use for are accepted and ignored, as promptflow does.
const TOP_LEVEL_KEYS: &[&str] = &[
    "$schema",
    "id",
    "name",
    "display_name",
    "version",
    "description",
    "tags",
    "type",
    "language",
    "message_format",
    "inputs",
    "outputs",
    "nodes",
    "node_variants",
    "tools",
    "environment_variables",
    "additional_includes",
    "environment",
    "provider",
    "module",
];

/// Node keys promptflow reads (`reduce` is its old name of `aggregation`; `skip` is an old
/// setting it no longer acts on) or that flow editors write (`comment`, `description`).
const NODE_KEYS: &[&str] = &[
    "name",
    "type",
    "source",
    "inputs",
    "connection",
    "api",
    "provider",
    "module",
    "activate",
    "aggregation",
    "reduce",
    "use_variants",
    "enable_cache",
    "comment",
    "description",
    "display_name",
    "tool",
    "enable_kwargs",
    "skip",
];

/// Choices made when loading.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `--variant '${node.variant_id}'`: use this variant of this node instead of its default.
    pub variant: Option<(String, String)>,
}

impl LoadOptions {
    /// Parse `${node.variant_id}` as given to `--variant`.
    pub fn parse_variant(text: &str) -> Result<(String, String), String> {
        let body = reference_body(text.trim()).unwrap_or(text.trim());
        match body.split_once('.') {
            Some((node, variant))
                if !node.is_empty() && !variant.is_empty() && !variant.contains('.') =>
            {
                Ok((node.to_string(), variant.to_string()))
            }
            _ => Err(format!(
                "--variant '{text}' must look like '${{node_name.variant_id}}'"
            )),
        }
    }
}

/// The flow files a folder is searched for, in order.
const FLOW_FILES: &[&str] = &[
    "flow.dag.yaml",
    "flow.dag.yml",
    "flow.flex.yaml",
    "flow.flex.yml",
];

/// Is this the file of a flex flow (`flow.flex.yaml`)?
fn is_flex_file(file: &Path) -> bool {
    file.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".flex.yaml") || n.ends_with(".flex.yml"))
}

/// Load and check the flow at `path`: a folder holding `flow.dag.yaml` (or `flow.flex.yaml`), or
/// that file, or a `.prompty` file.
pub fn load_flow(path: &Path, options: &LoadOptions) -> Result<Flow, FlowError> {
    if path.is_file() && is_prompty(path) {
        if let Some((node, _)) = &options.variant {
            return Err(FlowError::Invalid {
                path: path.to_path_buf(),
                problems: vec![Problem::new(
                    None,
                    format!("--variant names node '{node}', but a prompty flow has no variants"),
                )],
            });
        }
        return crate::prompty::Prompty::load(path).map(|p| crate::prompty::prompty_flow(&p));
    }
    let file = if path.is_dir() {
        FLOW_FILES
            .iter()
            .map(|n| path.join(n))
            .find(|p| p.is_file())
    } else if path.is_file() {
        Some(path.to_path_buf())
    } else {
        None
    };
    let Some(file) = file else {
        return Err(not_found(path));
    };
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let text = fs_err::read_to_string(&file).map_err(|e| FlowError::Io {
        path: file.clone(),
        source: e,
    })?;
    let yaml = flowrt_yaml::parse(&text).map_err(|e| FlowError::Yaml {
        path: file.clone(),
        line: e.line,
        column: e.column,
        message: e.message,
    })?;
    let mut loader = Loader::default();
    // promptflow reads a flow.dag.yaml that names an `entry` and no `nodes` as a flex flow (its
    // older "eager flow" spelling).
    let written_as_flex = yaml.get("entry").is_some() && yaml.get("nodes").is_none();
    let flow = if is_flex_file(&file) || written_as_flex {
        loader.flex_flow(&yaml, dir, file.clone())
    } else {
        loader.flow(&yaml, dir, file.clone(), options)
    };
    if loader.problems.is_empty() {
        if let Some(flow) = flow {
            return Ok(flow);
        }
    }
    Err(FlowError::Invalid {
        path: file,
        problems: loader.problems,
    })
}

/// No flow at `path`; a folder holding `.prompty` files says which to pass.
fn not_found(path: &Path) -> FlowError {
    let mut files: Vec<String> = fs_err::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file() && is_prompty(p))
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    if files.is_empty() {
        FlowError::NotFound {
            path: path.to_path_buf(),
        }
    } else {
        FlowError::PromptyInFolder {
            path: path.to_path_buf(),
            files,
        }
    }
}

/// A `.prompty` file (by its extension).
pub(crate) fn is_prompty(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("prompty"))
}

/// Reads one parsed flow file, collecting every problem with the line of the setting it is about.
#[derive(Default)]
pub(crate) struct Loader {
    pub(crate) problems: Vec<Problem>,
    /// What promptflow ignores, reported beside the flow.
    pub(crate) warnings: Vec<Problem>,
    /// Every node name declared, including nodes too broken to load, so their readers are not
    /// also reported as reading a missing node.
    declared: IndexSet<String>,
    /// Where settings checked after loading were written, so those problems point at them:
    /// (node, input) → the input's value, node → its `activate.when` and its `source.path`,
    /// output → its `reference`.
    input_lines: HashMap<(String, String), usize>,
    activate_lines: HashMap<String, usize>,
    source_lines: HashMap<String, usize>,
    output_lines: HashMap<String, usize>,
    requirements_line: Option<usize>,
}

/// YAML → JSON for values (keys stringified, YAML 1.2 scalars kept as typed).
pub(crate) fn to_json(y: &Yaml) -> Value {
    y.to_json()
}

pub(crate) fn key_string(k: &Yaml) -> String {
    k.key_string()
}

pub(crate) fn as_str(y: &Yaml) -> Option<&str> {
    y.as_str()
}

impl Loader {
    pub(crate) fn problem(&mut self, line: Option<usize>, message: impl Into<String>) {
        self.problems.push(Problem::new(line, message));
    }

    fn flow(
        &mut self,
        root: &Yaml,
        dir: PathBuf,
        file: PathBuf,
        options: &LoadOptions,
    ) -> Option<Flow> {
        let Some(map) = root.as_mapping() else {
            self.problem(
                Some(1),
                "flow.dag.yaml must be a mapping with inputs, outputs and nodes",
            );
            return None;
        };
        for (key, _) in map {
            let k = key_string(key);
            if !TOP_LEVEL_KEYS.contains(&k.as_str()) {
                self.problem(
                    Some(key.line),
                    format!(
                        "unknown top-level key '{k}'; allowed keys are: {}",
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                );
            }
        }
        if let Some(language_node) = root.get("language") {
            let language = language_node.as_str().unwrap_or_default();
            if !language.eq_ignore_ascii_case("python") {
                self.problem(
                    Some(language_node.line),
                    format!("language '{language}' is not supported: flowrt runs Python flows (language: python)"),
                );
            }
        }
        let inputs = self.inputs(root.get("inputs"));
        let variants = self.node_variants(root.get("node_variants"));
        let nodes = self.nodes(root.get("nodes"), &variants, options);
        let outputs = self.outputs(root.get("outputs"));
        let environment_variables = self.environment_variables(root.get("environment_variables"));
        let environment = self.environment(root.get("environment"));
        let additional_includes = self.additional_includes(root.get("additional_includes"));
        let mut flow = Flow {
            kind: crate::FlowKind::Dag,
            dir,
            file,
            inputs,
            outputs,
            nodes,
            environment_variables,
            environment,
            additional_includes,
            sample: None,
            flex: None,
            message_format: match root.get("message_format").and_then(as_str) {
                Some("openai-vision") => crate::MessageFormat::OpenaiVision,
                _ => crate::MessageFormat::Basic,
            },
            warnings: std::mem::take(&mut self.warnings),
        };
        self.check(&mut flow);
        Some(flow)
    }

    pub(crate) fn inputs(&mut self, y: Option<&Yaml>) -> IndexMap<String, FlowInput> {
        let mut out = IndexMap::new();
        let Some(y) = y else { return out };
        let Some(map) = y.as_mapping() else {
            if !y.is_null() {
                self.problem(
                    Some(y.line),
                    "inputs must be a mapping of input name to {type, default}",
                );
            }
            return out;
        };
        for (k, decl) in map {
            let name = key_string(k);
            let line = Some(k.line);
            let ty_node = decl.get("type");
            let ty_text = ty_node.and_then(as_str).unwrap_or("string");
            let ty = match ValueType::parse(ty_text) {
                Some(t) => t,
                None => {
                    self.problem(
                        ty_node.map(|t| t.line).or(line),
                        format!(
                            "input '{name}' has unknown type '{ty_text}'; use one of: int, double, bool, string, list, object, image"
                        ),
                    );
                    ValueType::String
                }
            };
            let get_bool = |key: &str| decl.get(key).and_then(Yaml::as_bool).unwrap_or(false);
            // `default: null` declares no default, as in promptflow (the input is required).
            let default = match decl.get("default") {
                None => None,
                Some(d) if d.is_null() => None,
                Some(d) => {
                    let raw = to_json(d);
                    match convert_value(ty, &raw) {
                        Ok(v) => Some(v),
                        // promptflow keeps a list's or object's default text as it is and
                        // parses it only when the input is not given (failing then): the flow
                        // runs whenever the input is given.
                        Err(e)
                            if raw.is_string()
                                && matches!(ty, ValueType::List | ValueType::Object) =>
                        {
                            self.warnings.push(Problem::new(
                                Some(d.line),
                                format!("default of input '{name}': {e}; the input must be given"),
                            ));
                            None
                        }
                        Err(e) => {
                            self.problem(Some(d.line), format!("default of input '{name}': {e}"));
                            None
                        }
                    }
                }
            };
            out.insert(
                name,
                FlowInput {
                    ty,
                    default,
                    description: decl.get("description").and_then(as_str).map(str::to_string),
                    is_chat_input: get_bool("is_chat_input"),
                    is_chat_history: get_bool("is_chat_history"),
                },
            );
        }
        out
    }

    fn outputs(&mut self, y: Option<&Yaml>) -> IndexMap<String, FlowOutput> {
        let mut out = IndexMap::new();
        let Some(y) = y else { return out };
        let Some(map) = y.as_mapping() else {
            if !y.is_null() {
                self.problem(
                    Some(y.line),
                    "outputs must be a mapping of output name to {type, reference}",
                );
            }
            return out;
        };
        for (k, decl) in map {
            let name = key_string(k);
            let reference_node = decl.get("reference");
            // Problems point at the reference itself, or at the output's name when it has none.
            let line = Some(reference_node.map_or(k.line, |r| r.line));
            self.output_lines
                .insert(name.clone(), reference_node.map_or(k.line, |r| r.line));
            // As in promptflow, a value that is not `${...}` is the output's value itself.
            let parsed = match reference_node.map(|r| (r, &r.value)) {
                None => None,
                Some((_, Y::String(text))) if text.is_empty() => None,
                Some((_, Y::String(text))) if reference_body(text).is_some() => {
                    Some(parse_reference(text))
                }
                Some((other, _)) => Some(Ok(Reference::literal(
                    to_json(other),
                    as_str(other).map_or_else(|| to_json(other).to_string(), str::to_string),
                ))),
            };
            let Some(parsed) = parsed else {
                self.problem(
                    line,
                    format!("output '{name}' needs a reference such as ${{node_name.output}}"),
                );
                continue;
            };
            match parsed {
                Ok(reference) => {
                    out.insert(
                        name,
                        FlowOutput {
                            reference,
                            ty: decl.get("type").and_then(as_str).map(str::to_string),
                            is_chat_output: decl
                                .get("is_chat_output")
                                .and_then(Yaml::as_bool)
                                .unwrap_or(false),
                        },
                    );
                }
                Err(e) => self.problem(line, format!("output '{name}': {e}")),
            }
        }
        out
    }

    fn node_variants(
        &mut self,
        y: Option<&Yaml>,
    ) -> HashMap<String, (String, IndexMap<String, Yaml>)> {
        let mut out = HashMap::new();
        let Some(map) = y.and_then(Yaml::as_mapping) else {
            return out;
        };
        for (k, v) in map {
            let node = key_string(k);
            let line = Some(k.line);
            let default = v
                .get("default_variant_id")
                .and_then(as_str)
                .map(str::to_string);
            let mut variants = IndexMap::new();
            if let Some(vs) = v.get("variants").and_then(Yaml::as_mapping) {
                for (vk, vv) in vs {
                    match vv.get("node") {
                        Some(n) => {
                            variants.insert(key_string(vk), n.clone());
                        }
                        None => self.problem(
                            Some(vk.line),
                            format!(
                                "variant '{}' of node '{node}' has no 'node:' section",
                                key_string(vk)
                            ),
                        ),
                    }
                }
            }
            let Some(default) = default.or_else(|| variants.keys().next().cloned()) else {
                self.problem(line, format!("node_variants of '{node}' lists no variants"));
                continue;
            };
            out.insert(node, (default, variants));
        }
        out
    }

    fn nodes(
        &mut self,
        y: Option<&Yaml>,
        variants: &HashMap<String, (String, IndexMap<String, Yaml>)>,
        options: &LoadOptions,
    ) -> Vec<Node> {
        let mut out: Vec<Node> = Vec::new();
        let Some(y) = y else {
            self.problem(None, "the flow has no 'nodes' list");
            return out;
        };
        let Some(items) = y.as_sequence() else {
            self.problem(Some(y.line), "nodes must be a list of nodes");
            return out;
        };
        let mut seen: IndexSet<String> = IndexSet::new();
        if let Some((node, variant)) = &options.variant {
            match variants.get(node) {
                None => self.problem(
                    None,
                    format!("--variant names node '{node}', which has no node_variants"),
                ),
                Some((_, vs)) if !vs.contains_key(variant) => self.problem(
                    None,
                    format!(
                        "node '{node}' has no variant '{variant}'; its variants are: {}",
                        vs.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ),
                _ => {}
            }
        }
        for item in items {
            let Some(name) = item.get("name").and_then(as_str).map(str::to_string) else {
                self.problem(Some(item.line), "a node has no 'name'");
                continue;
            };
            let line = item.get("name").map(|n| n.line);
            self.declared.insert(name.clone());
            if !seen.insert(name.clone()) {
                self.problem(
                    line,
                    format!("duplicate node name '{name}': node names must be unique"),
                );
                continue;
            }
            let uses_variants = item
                .get("use_variants")
                .and_then(Yaml::as_bool)
                .unwrap_or(false);
            let (body, variant) = if uses_variants {
                let Some((default, vs)) = variants.get(&name) else {
                    self.problem(
                        line,
                        format!(
                            "node '{name}' has use_variants but node_variants has no entry for it"
                        ),
                    );
                    continue;
                };
                let chosen = match &options.variant {
                    Some((n, v)) if n == &name => v.clone(),
                    _ => default.clone(),
                };
                let Some(body) = vs.get(&chosen) else {
                    self.problem(
                        line,
                        format!(
                            "node '{name}': default variant '{chosen}' is not among its variants"
                        ),
                    );
                    continue;
                };
                (body, Some(chosen))
            } else {
                (item, None)
            };
            if let Some(map) = item.as_mapping() {
                for (key, _) in map {
                    let k = key_string(key);
                    if !NODE_KEYS.contains(&k.as_str()) {
                        // promptflow loads the node and ignores the key (a stray `variants:`
                        // or `outputs:`, a misspelling): so does flowrt, and says so.
                        self.warnings.push(Problem::new(
                            Some(key.line),
                            format!("node '{name}' has unknown key '{k}', which is ignored"),
                        ));
                    }
                }
            }
            if let Some(node) = self.node(&name, body, line, variant) {
                out.push(node);
            }
        }
        out
    }

    fn node(
        &mut self,
        name: &str,
        y: &Yaml,
        line: Option<usize>,
        variant: Option<String>,
    ) -> Option<Node> {
        let kind = self.node_kind(name, y, line)?;
        let source = self.node_source(name, y, line)?;
        let inputs = self.node_inputs(name, y, line);
        let activate = self.node_activate(name, y);
        let connection = y.get("connection").and_then(as_str).map(str::to_string);
        let api = y.get("api").and_then(as_str).map(str::to_string);
        if kind == NodeKind::Llm {
            self.check_llm_settings(name, y, line, connection.is_some(), api.as_deref());
        }
        Some(Node {
            name: name.to_string(),
            kind,
            source,
            inputs,
            connection,
            api,
            activate,
            // `reduce` is promptflow's older name for `aggregation`; either makes one.
            aggregation: ["aggregation", "reduce"]
                .iter()
                .any(|k| y.get(k).and_then(Yaml::as_bool).unwrap_or(false)),
            variant,
            line,
        })
    }

    /// The node's `type`, or `None` (with the problem) when it has none or one flowrt does not
    /// run.
    fn node_kind(&mut self, name: &str, y: &Yaml, line: Option<usize>) -> Option<NodeKind> {
        let at = setting_line(y, "type", line);
        match y.get("type").and_then(as_str).unwrap_or("") {
            "python" => Some(NodeKind::Python),
            "llm" => Some(NodeKind::Llm),
            "prompt" => Some(NodeKind::Prompt),
            "custom_llm" => Some(NodeKind::CustomLlm),
            "" => {
                self.problem(
                    at,
                    format!("node '{name}' has no type; use python, llm or prompt"),
                );
                None
            }
            // Tool types promptflow knows but flowrt does not run.
            other @ ("csharp" | "typescript" | "action") => {
                self.problem(
                    at,
                    format!(
                        "node '{name}' has type '{other}', which flowrt does not support; flowrt runs python, llm, prompt and custom_llm nodes"
                    ),
                );
                None
            }
            other => {
                self.problem(
                    at,
                    format!("node '{name}' has unknown type '{other}'; use python, llm or prompt"),
                );
                None
            }
        }
    }

    /// Where the node's tool comes from (`source`), or `None` (with the problem) when it is
    /// missing or incomplete. The line of its `path` is kept for the file checks after loading.
    fn node_source(&mut self, name: &str, y: &Yaml, line: Option<usize>) -> Option<ToolSource> {
        let Some(src) = y.get("source") else {
            self.problem(line, format!("node '{name}' has no 'source' (for example source: {{type: code, path: tool.py}})"));
            return None;
        };
        let path_line = src.get("path").map_or(src.line, |p| p.line);
        self.source_lines.insert(name.to_string(), path_line);
        let at = setting_line(y, "source", line);
        let ty = src.get("type").and_then(as_str).unwrap_or("code");
        let path = src.get("path").and_then(as_str).map(str::to_string);
        let tool = src.get("tool").and_then(as_str).map(str::to_string);
        match (ty, path, tool) {
            ("code", Some(path), _) => Some(ToolSource::Code { path }),
            ("package", _, Some(tool)) => Some(ToolSource::Package { tool }),
            ("package_with_prompt", Some(path), Some(tool)) => {
                Some(ToolSource::PackageWithPrompt { tool, path })
            }
            ("code", None, _) => {
                self.problem(
                    at,
                    format!("node '{name}': source of type code needs a 'path'"),
                );
                None
            }
            ("package" | "package_with_prompt", _, None) => {
                self.problem(
                    at,
                    format!("node '{name}': source of type {ty} needs a 'tool'"),
                );
                None
            }
            (other, _, _) => {
                self.problem(
                    at,
                    format!(
                        "node '{name}': unknown source type '{other}'; use code, package or package_with_prompt"
                    ),
                );
                None
            }
        }
    }

    /// The node's `inputs`: `${...}` values as references, anything else as literals. An input
    /// whose reference does not parse is left out (with the problem); each input's line is kept
    /// for the reference checks after loading.
    fn node_inputs(
        &mut self,
        name: &str,
        y: &Yaml,
        line: Option<usize>,
    ) -> IndexMap<String, InputValue> {
        let mut inputs = IndexMap::new();
        match y.get("inputs").map(|i| (i, &i.value)) {
            None | Some((_, Y::Null)) => {}
            Some((_, Y::Map(m))) => {
                for (k, v) in m {
                    let input = key_string(k);
                    self.input_lines
                        .insert((name.to_string(), input.clone()), v.line);
                    let value = match &v.value {
                        Y::String(s) if reference_body(s).is_some() => match parse_reference(s) {
                            Ok(r) => InputValue::Reference(r),
                            Err(e) => {
                                self.problem(
                                    Some(v.line),
                                    format!("node '{name}' input '{input}': {e}"),
                                );
                                continue;
                            }
                        },
                        _ => InputValue::Literal(to_json(v)),
                    };
                    inputs.insert(input, value);
                }
            }
            Some(_) => self.problem(
                setting_line(y, "inputs", line),
                format!("node '{name}': inputs must be a mapping of name: value"),
            ),
        }
        inputs
    }

    /// The node's `activate` condition, if it has a complete one (else the problem); the line of
    /// its `when` is kept for the reference checks after loading.
    fn node_activate(&mut self, name: &str, y: &Yaml) -> Option<Activate> {
        let a = y.get("activate").filter(|a| !a.is_null())?;
        let when_line = a.get("when").map_or(a.line, |w| w.line);
        self.activate_lines.insert(name.to_string(), when_line);
        // promptflow compares a `when` that is not `${...}` as written: `when: dummy`
        // with `is: dummy` always runs the node.
        let when = a.get("when").map(|w| match &w.value {
            Y::String(s) if reference_body(s).is_some() => parse_reference(s),
            _ => Ok(Reference::literal(
                to_json(w),
                as_str(w).map_or_else(|| to_json(w).to_string(), str::to_string),
            )),
        });
        let is = a.get("is").map(to_json);
        match (when, is) {
            (Some(Ok(when)), Some(is)) => Some(Activate { when, is }),
            (Some(Err(e)), _) => {
                self.problem(Some(when_line), format!("node '{name}' activate.when: {e}"));
                None
            }
            _ => {
                self.problem(
                    Some(a.line),
                    format!("node '{name}': activate needs both 'when' (usually a reference) and 'is' (a value)"),
                );
                None
            }
        }
    }

    /// What an llm node needs besides its source: a `connection`, and `api: chat` or
    /// `api: completion`.
    fn check_llm_settings(
        &mut self,
        name: &str,
        y: &Yaml,
        line: Option<usize>,
        has_connection: bool,
        api: Option<&str>,
    ) {
        if !has_connection {
            self.problem(line, format!("llm node '{name}' needs a 'connection'"));
        }
        match api {
            Some("chat" | "completion") => {}
            Some(other) => self.problem(
                setting_line(y, "api", line),
                format!("llm node '{name}': unknown api '{other}'; use chat or completion"),
            ),
            None => self.problem(
                line,
                format!("llm node '{name}' needs 'api: chat' or 'api: completion'"),
            ),
        }
    }

    pub(crate) fn environment_variables(&mut self, y: Option<&Yaml>) -> IndexMap<String, Value> {
        match y.map(|v| (v, &v.value)) {
            None | Some((_, Y::Null)) => IndexMap::new(),
            Some((_, Y::Map(m))) => m.iter().map(|(k, v)| (key_string(k), to_json(v))).collect(),
            Some((v, _)) => {
                self.problem(
                    Some(v.line),
                    "environment_variables must be a mapping of NAME: value",
                );
                IndexMap::new()
            }
        }
    }

    pub(crate) fn additional_includes(&mut self, y: Option<&Yaml>) -> Vec<String> {
        match y.map(|v| (v, &v.value)) {
            None | Some((_, Y::Null)) => Vec::new(),
            Some((_, Y::Seq(items))) => items
                .iter()
                .filter_map(as_str)
                .map(str::to_string)
                .collect(),
            Some((v, _)) => {
                self.problem(Some(v.line), "additional_includes must be a list of paths");
                Vec::new()
            }
        }
    }

    pub(crate) fn environment(&mut self, y: Option<&Yaml>) -> Environment {
        let Some(m) = y.filter(|m| m.is_mapping()) else {
            return Environment::default();
        };
        if let Some(r) = m.get("python_requirements_txt") {
            self.requirements_line = Some(r.line);
        }
        Environment {
            python_requirements_txt: m
                .get("python_requirements_txt")
                .and_then(as_str)
                .map(str::to_string),
            image: m.get("image").and_then(as_str).map(str::to_string),
        }
    }

    /// Meaning: references, files, cycles, aggregation rules. Reorders `flow.nodes` topologically.
    fn check(&mut self, flow: &mut Flow) {
        self.check_requirements_file(flow);
        let found = self.reference_problems(flow);
        self.problems.extend(found);
        if let Some(cycle) = find_cycle(&flow.nodes) {
            let line = flow
                .nodes
                .iter()
                .find(|n| n.name == cycle[0])
                .and_then(|n| n.line);
            self.problem(
                line,
                format!(
                    "the nodes form a cycle: {}; a node cannot depend on itself through other nodes",
                    cycle.join(" -> ")
                ),
            );
            return;
        }
        flow.nodes = topological(std::mem::take(&mut flow.nodes));
    }

    /// The requirements file is read by whoever builds the environment (the server, for a
    /// session): it must be the flow's own file, not a path to anyone else's.
    fn check_requirements_file(&mut self, flow: &Flow) {
        let Some(rel) = flow.environment.python_requirements_txt.clone() else {
            return;
        };
        let inside = crate::requirements_in_folder(&rel);
        if inside != rel && !flow.dir.join(&inside).is_file() {
            self.problem(
                self.requirements_line,
                format!(
                    "environment.python_requirements_txt '{rel}' leaves the flow folder, and no copy named '{inside}' is in it: flowrt copies the file in when it runs or pushes the flow from its folder, so check that '{rel}' exists there, or put the file inside the folder"
                ),
            );
        } else if let Some(message) = check_inside(&flow.dir, &inside) {
            self.problem(
                self.requirements_line,
                format!("environment.python_requirements_txt {message}"),
            );
        }
    }

    /// What the nodes and outputs read that is not there, nodes' source files that are not
    /// usable, and line nodes reading aggregation nodes: node by node, then the outputs.
    fn reference_problems(&self, flow: &Flow) -> Vec<Problem> {
        let refs = ReferenceCheck {
            flow,
            names: self.declared.iter().map(String::as_str).collect(),
        };
        let mut found: Vec<Problem> = Vec::new();
        for node in &flow.nodes {
            self.input_problems(&refs, node, &mut found);
            if let Some(a) = &node.activate {
                refs.check(
                    &a.when,
                    &format!("node '{}' activate.when", node.name),
                    self.activate_lines.get(&node.name).copied().or(node.line),
                    &mut found,
                );
            }
            if let Some(rel) = node.source.path() {
                if let Some(p) = check_source_path(&flow.dir, rel, &node.name) {
                    let line = self.source_lines.get(&node.name).copied().or(node.line);
                    found.push(Problem::new(line, p));
                }
            }
            if !node.aggregation {
                for dep in node.input_dependencies() {
                    if flow.nodes.iter().any(|n| n.name == dep && n.aggregation) {
                        found.push(Problem::new(
                            node.line,
                            format!(
                                "node '{}' reads aggregation node '{dep}': only other aggregation nodes can use an aggregation node's output",
                                node.name
                            ),
                        ));
                    }
                }
            }
        }
        for (name, out) in &flow.outputs {
            let line = self.output_lines.get(name).copied();
            refs.check(
                &out.reference,
                &format!("output '{name}'"),
                line,
                &mut found,
            );
        }
        found
    }

    /// Problems with what `node`'s inputs reference: what does not exist, an index right after
    /// `output`, the node itself.
    fn input_problems(&self, refs: &ReferenceCheck<'_>, node: &Node, found: &mut Vec<Problem>) {
        for (input, value) in &node.inputs {
            let InputValue::Reference(r) = value else {
                continue;
            };
            let line = self
                .input_lines
                .get(&(node.name.clone(), input.clone()))
                .copied()
                .or(node.line);
            refs.check(
                r,
                &format!("node '{}' input '{input}'", node.name),
                line,
                found,
            );
            if r.bracket_after_output {
                found.push(Problem::new(
                    line,
                    format!(
                        "node '{}' input '{input}': '{r}' is not supported: a key or index cannot follow 'output' directly in a node input; read a property first, e.g. ${{{}.output.items[0]}}",
                        node.name,
                        r.node().unwrap_or("node")
                    ),
                ));
            }
            if r.node() == Some(node.name.as_str()) {
                found.push(Problem::new(
                    line,
                    format!(
                        "node '{}' input '{input}' references the node itself",
                        node.name
                    ),
                ));
            }
        }
    }
}

/// The line of setting `key` of a node (`y`), else `fallback` (the node's name): a problem with
/// one setting points at that setting.
fn setting_line(y: &Yaml, key: &str, fallback: Option<usize>) -> Option<usize> {
    y.get(key).map(|v| v.line).or(fallback)
}

/// Whether a reference reads something that exists: a declared flow input, a declared node.
struct ReferenceCheck<'a> {
    flow: &'a Flow,
    /// Every node name declared, loaded or not.
    names: IndexSet<&'a str>,
}

impl ReferenceCheck<'_> {
    /// Add to `found` the problem with `r` (written by `what`, at `line`) when it reads a flow
    /// input or a node that does not exist.
    fn check(&self, r: &Reference, what: &str, line: Option<usize>, found: &mut Vec<Problem>) {
        match &r.source {
            crate::RefSource::FlowInput(i) if !self.flow.inputs.contains_key(i) => {
                found.push(Problem::new(
                    line,
                    format!(
                        "{what} references flow input '{i}', which is not declared; declared inputs: {}",
                        list_or_none(self.flow.inputs.keys())
                    ),
                ))
            }
            crate::RefSource::Node(n) if !self.names.contains(n.as_str()) => {
                found.push(Problem::new(
                    line,
                    format!(
                        "{what} references node '{n}', which does not exist; nodes: {}",
                        list_or_none(self.names.iter())
                    ),
                ))
            }
            _ => {}
        }
    }
}

fn list_or_none<'a>(items: impl Iterator<Item = impl AsRef<str> + 'a>) -> String {
    let v: Vec<String> = items.map(|s| s.as_ref().to_string()).collect();
    if v.is_empty() {
        "(none)".to_string()
    } else {
        v.join(", ")
    }
}

/// Whether `rel`, read lexically, names something outside its folder (absolute, or with `..`).
pub(crate) fn leaves_lexically(rel: &Path) -> bool {
    rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
}

/// Where `full` really is, when that is outside `dir` (a symlink inside may point out); `Err` when
/// it cannot be resolved (a dangling link).
fn resolves_outside(dir: &Path, full: &Path) -> Result<Option<PathBuf>, ()> {
    match (full.canonicalize(), dir.canonicalize()) {
        (Ok(f), Ok(d)) if f.starts_with(&d) => Ok(None),
        (Ok(f), Ok(_)) => Ok(Some(f)),
        _ => Err(()),
    }
}

/// Why `rel` is not a path inside `dir` (absolute, `..`, or a symlink out), if it is not. A path
/// that does not exist is inside as far as this check goes.
pub(crate) fn check_inside(dir: &Path, rel: &str) -> Option<String> {
    if leaves_lexically(Path::new(rel)) {
        return Some(format!(
            "'{rel}' leaves the flow folder; use a path inside it, relative to the flow file, without '..'"
        ));
    }
    let full = dir.join(rel);
    if full.symlink_metadata().is_err() {
        return None;
    }
    match resolves_outside(dir, &full) {
        Ok(None) => None,
        Ok(Some(f)) => Some(format!(
            "'{rel}' resolves to {}, outside the flow folder",
            f.display()
        )),
        // A dangling symlink: whatever it names later is not the flow's.
        Err(()) => Some(format!("'{rel}' is a broken link")),
    }
}

/// A tool file must be a relative path that stays in the flow folder and exists.
fn check_source_path(dir: &Path, rel: &str, node: &str) -> Option<String> {
    if leaves_lexically(Path::new(rel)) {
        return Some(format!(
            "node '{node}': source path '{rel}' leaves the flow folder; tool files must be inside it (use a path relative to flow.dag.yaml without '..')"
        ));
    }
    let full = dir.join(rel);
    if !full.is_file() {
        return Some(format!(
            "node '{node}': source file '{rel}' does not exist in {}",
            dir.display()
        ));
    }
    match resolves_outside(dir, &full) {
        Ok(Some(f)) => Some(format!(
            "node '{node}': source path '{rel}' resolves to {}, outside the flow folder",
            f.display()
        )),
        _ => None,
    }
}

/// A dependency cycle as node names, first node repeated at the end, if there is one.
fn find_cycle(nodes: &[Node]) -> Option<Vec<String>> {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on stack, 2 = done
    let mut state = vec![0u8; nodes.len()];
    let mut stack: Vec<usize> = Vec::new();
    fn visit(
        i: usize,
        nodes: &[Node],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        state[i] = 1;
        stack.push(i);
        for dep in nodes[i].dependencies() {
            let Some(&j) = index.get(dep) else { continue };
            if state[j] == 1 {
                let start = stack.iter().position(|&k| k == j).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..]
                    .iter()
                    .rev()
                    .map(|&k| nodes[k].name.clone())
                    .collect();
                cycle.rotate_right(1);
                cycle.push(cycle[0].clone());
                return Some(cycle);
            }
            if state[j] == 0 {
                if let Some(c) = visit(j, nodes, index, state, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        state[i] = 2;
        None
    }
    (0..nodes.len()).find_map(|i| {
        if state[i] == 0 {
            visit(i, nodes, &index, &mut state, &mut stack)
        } else {
            None
        }
    })
}

/// Order nodes so each follows its dependencies, keeping declaration order otherwise.
fn topological(nodes: Vec<Node>) -> Vec<Node> {
    let mut done: IndexSet<String> = IndexSet::new();
    let mut remaining = nodes;
    let mut ordered = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let before = remaining.len();
        let mut i = 0;
        while i < remaining.len() {
            let ready = remaining[i].dependencies().all(|d| done.contains(d));
            if ready {
                let n = remaining.remove(i);
                done.insert(n.name.clone());
                ordered.push(n);
            } else {
                i += 1;
            }
        }
        if remaining.len() == before {
            // Unknown dependencies were reported already; keep the rest in declaration order.
            ordered.append(&mut remaining);
        }
    }
    ordered
}
