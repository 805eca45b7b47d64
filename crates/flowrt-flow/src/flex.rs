//! Flex flows (`flow.flex.yaml`, promptflow's "eager" flows): a Python entry (`module:function` or
//! `module:Class`) run as one python node whose value is the flow's single output.
//!
//! Loading reads the YAML only. The entry's signature (its parameters, their annotations and code
//! defaults, whether it is a class with `__aggregate__`) needs Python, so the caller asks the
//! Python worker for an [`EntrySignature`] and finishes the flow with [`complete_flex`].

use crate::convert::{convert_value, ValueType};
use crate::load::{as_str, key_string, to_json, Loader};
use crate::reference::parse_reference;
use crate::{Flow, FlowInput, FlowKind, FlowOutput, InputValue, Node, NodeKind, ToolSource};
use flowrt_yaml::{Node as Yaml, Value as Y};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

type Object = Map<String, Value>;

/// The node running a class entry's `__aggregate__` over a batch's results.
pub const AGGREGATE_NODE: &str = "__aggregate__";

/// Top-level keys promptflow accepts in `flow.flex.yaml`.
const FLEX_KEYS: &[&str] = &[
    "$schema",
    "entry",
    "inputs",
    "outputs",
    "init",
    "sample",
    "environment_variables",
    "environment",
    "additional_includes",
    "description",
    "display_name",
    "name",
    "tags",
    "language",
    "type",
    "version",
    "properties",
];

/// An `init:` declaration of a class entry's constructor keyword argument.
#[derive(Clone, Debug, PartialEq)]
pub struct InitInput {
    /// As written (`string`, `int`, `OpenAIModelConfiguration`, ...): init values are not converted.
    pub ty: Option<String>,
    pub default: Option<Value>,
}

/// What `flow.flex.yaml` says beyond the flow's inputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlexSpec {
    /// `module:function` or `module:Class`.
    pub entry: String,
    /// `inputs:` was written: it must then list exactly the entry's parameters.
    pub inputs_declared: bool,
    /// `init:`, in order.
    pub init: IndexMap<String, InitInput>,
    pub init_declared: bool,
    /// `outputs:` names and types, when written.
    pub outputs: Option<IndexMap<String, Option<String>>>,
    /// `sample.inputs`: used when a test passes no inputs at all.
    pub sample_inputs: Option<Map<String, Value>>,
    /// `sample.init`: used when no init kwargs are given.
    pub sample_init: Option<Map<String, Value>>,
    /// Set by [`complete_flex`]: the entry is a class (constructed once with the init kwargs).
    pub is_class: bool,
}

impl FlexSpec {
    /// The module part of the entry.
    pub fn module(&self) -> &str {
        self.entry.split_once(':').map_or("", |(m, _)| m)
    }

    /// The constructor kwargs of a run: those `given` (else `sample.init`), with the YAML defaults
    /// for the rest. They are passed as they are (promptflow does not convert init values).
    pub fn init_kwargs(&self, given: Option<&Map<String, Value>>) -> Map<String, Value> {
        let mut out = given
            .or(self.sample_init.as_ref())
            .cloned()
            .unwrap_or_default();
        for (name, decl) in &self.init {
            if let (false, Some(d)) = (out.contains_key(name), &decl.default) {
                out.insert(name.clone(), d.clone());
            }
        }
        out
    }

    /// `init:` types by name, for the worker (model configurations are built from dicts).
    pub fn init_types(&self) -> Map<String, Value> {
        self.init
            .iter()
            .filter_map(|(k, d)| d.ty.clone().map(|t| (k.clone(), Value::String(t))))
            .collect()
    }
}

/// One parameter of the entry, as the Python worker reports it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct EntryPort {
    pub name: String,
    /// The flow type the annotation maps to (`int`, `double`, `bool`, `string`, `list`, `object`),
    /// or none when unannotated or of another type.
    #[serde(default, rename = "type")]
    pub ty: Option<String>,
    #[serde(default)]
    pub has_default: bool,
    /// The code default, when JSON-representable.
    #[serde(default)]
    pub default: Value,
}

/// The entry's signature, as the Python worker reports it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct EntrySignature {
    /// The function's or class's name.
    #[serde(default)]
    pub name: String,
    pub inputs: Vec<EntryPort>,
    #[serde(default)]
    pub init: Vec<EntryPort>,
    #[serde(default)]
    pub is_class: bool,
    #[serde(default)]
    pub has_aggregate: bool,
    /// The outputs the return annotation implies (dataclass or TypedDict fields, else `output`);
    /// none when the entry is unannotated.
    #[serde(default)]
    pub outputs: Option<Vec<String>>,
}

fn names<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = items.map(String::as_str).collect();
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

/// Finish a flex flow from its entry's signature: check `inputs:`/`init:` against the parameters,
/// type the inputs (YAML types, else annotations; YAML defaults beat code defaults), wire the
/// entry node's inputs and add the `__aggregate__` node of a class that has one.
pub fn complete_flex(flow: &mut Flow, signature: &EntrySignature) -> Result<(), String> {
    let file = flow.file.display().to_string();
    let Some(spec) = flow.flex.as_mut() else {
        return Err(format!("{file} is not a flex flow"));
    };
    let entry = spec.entry.clone();
    let code: IndexMap<&String, &EntryPort> =
        signature.inputs.iter().map(|p| (&p.name, p)).collect();
    if spec.inputs_declared {
        let mut declared: Vec<&String> = flow.inputs.keys().collect();
        let mut wanted: Vec<&String> = code.keys().copied().collect();
        declared.sort();
        wanted.sort();
        if declared != wanted {
            return Err(format!(
                "{file}: Provided signature of inputs does not match the entry '{entry}': the YAML declares {}, the entry takes {}\nhint: list exactly the entry's parameters under `inputs:`, or remove `inputs:` to use the entry's signature",
                names(flow.inputs.keys()),
                names(code.keys().copied())
            ));
        }
    }
    if spec.init_declared && signature.is_class {
        let mut declared: Vec<&String> = spec.init.keys().collect();
        let mut wanted: Vec<&String> = signature.init.iter().map(|p| &p.name).collect();
        declared.sort();
        wanted.sort();
        if declared != wanted {
            return Err(format!(
                "{file}: Provided signature of init does not match the entry '{entry}': the YAML declares {}, __init__ takes {}\nhint: list exactly the constructor's keyword arguments under `init:`",
                names(spec.init.keys()),
                names(signature.init.iter().map(|p| &p.name))
            ));
        }
    }
    if let (Some(declared), Some(wanted)) = (&spec.outputs, &signature.outputs) {
        let mut declared: Vec<&String> = declared.keys().collect();
        let mut wanted: Vec<&String> = wanted.iter().collect();
        declared.sort();
        wanted.sort();
        if declared != wanted {
            return Err(format!(
                "{file}: Provided signature of outputs does not match the entry '{entry}': the YAML declares {}, the return annotation gives {}\nhint: list the fields of the returned dataclass/TypedDict under `outputs:` (`output` for a str), or remove `outputs:`",
                names(declared.into_iter()),
                names(wanted.into_iter())
            ));
        }
    }
    spec.is_class = signature.is_class;
    let code_default = |port: &EntryPort, ty: ValueType| -> Result<Option<Value>, String> {
        if !port.has_default {
            return Ok(None);
        }
        if port.default.is_null() {
            return Ok(Some(Value::Null));
        }
        convert_value(ty, &port.default)
            .map(Some)
            .map_err(|e| format!("{file}: the code default of input '{}': {e}", port.name))
    };
    if spec.inputs_declared {
        for (name, decl) in flow.inputs.iter_mut() {
            if decl.default.is_none() {
                if let Some(port) = code.get(name) {
                    decl.default = code_default(port, decl.ty)?;
                }
            }
        }
    } else {
        let mut inputs = IndexMap::new();
        for port in &signature.inputs {
            let ty = port
                .ty
                .as_deref()
                .and_then(ValueType::parse)
                .unwrap_or(ValueType::Object);
            inputs.insert(
                port.name.clone(),
                FlowInput {
                    ty,
                    default: code_default(port, ty)?,
                    description: None,
                    is_chat_input: false,
                    is_chat_history: false,
                },
            );
        }
        flow.inputs = inputs;
    }
    let mut node_inputs = IndexMap::new();
    for name in flow.inputs.keys() {
        let reference = parse_reference(&format!("${{inputs.{name}}}"))
            .map_err(|e| format!("{file}: input '{name}' cannot be passed to the entry: {e}"))?;
        node_inputs.insert(name.clone(), InputValue::Reference(reference));
    }
    let Some(node) = flow.nodes.first_mut() else {
        return Err(format!("{file}: the flex flow has no entry node"));
    };
    node.inputs = node_inputs;
    let entry_node = node.name.clone();
    flow.nodes.truncate(1);
    if signature.is_class && signature.has_aggregate {
        let reference = parse_reference(&format!("${{{entry_node}.output}}"))
            .map_err(|e| format!("{file}: {e}"))?;
        flow.nodes.push(Node {
            name: AGGREGATE_NODE.into(),
            kind: NodeKind::Python,
            source: ToolSource::Entry {
                entry,
                aggregate: true,
            },
            inputs: IndexMap::from([("results".to_string(), InputValue::Reference(reference))]),
            connection: None,
            api: None,
            activate: None,
            aggregation: true,
            variant: None,
            line: None,
        });
    }
    Ok(())
}

/// The node name for an entry: its function or class name (what promptflow's messages show).
fn node_name(entry: &str) -> String {
    let attr = entry.rsplit_once(':').map_or(entry, |(_, a)| a).trim();
    if attr.is_empty() {
        "entry".into()
    } else {
        attr.to_string()
    }
}

impl Loader {
    pub(crate) fn flex_flow(&mut self, root: &Yaml, dir: PathBuf, file: PathBuf) -> Option<Flow> {
        let Some(map) = root.as_mapping() else {
            self.problem(
                Some(1),
                "flow.flex.yaml must be a mapping with at least `entry: module:function`",
            );
            return None;
        };
        for (key, _) in map {
            let k = key_string(key);
            if !FLEX_KEYS.contains(&k.as_str()) {
                self.problem(
                    Some(key.line),
                    format!(
                        "unknown top-level key '{k}' in a flex flow; allowed keys are: {}",
                        FLEX_KEYS.join(", ")
                    ),
                );
            }
        }
        let entry_line = root.get("entry").map(|e| e.line);
        let entry = match root.get("entry").and_then(as_str).map(str::trim) {
            Some(e) => match e.split_once(':') {
                Some((m, a)) if !m.trim().is_empty() && !a.trim().is_empty() => e.to_string(),
                _ => {
                    self.problem(
                        entry_line,
                        format!("entry '{e}' must look like 'module:function' or 'module:Class' (the module is a .py file in the flow folder, without .py)"),
                    );
                    return None;
                }
            },
            None => {
                self.problem(
                    entry_line.or(Some(1)),
                    "a flex flow needs `entry: module:function` (or `module:Class`)",
                );
                return None;
            }
        };
        let inputs_declared = root.get("inputs").is_some_and(Yaml::is_mapping);
        let mut inputs = self.inputs(root.get("inputs"));
        // promptflow reads a flex flow's `default: ""` as no default at all: the code's applies.
        for decl in inputs.values_mut() {
            if decl.default.as_ref().is_some_and(|d| d == "") {
                decl.default = None;
            }
        }
        let init = self.init(root.get("init"));
        let init_declared = root.get("init").is_some_and(Yaml::is_mapping);
        let outputs = root.get("outputs").and_then(Yaml::as_mapping).map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        key_string(k),
                        v.get("type").and_then(as_str).map(str::to_string),
                    )
                })
                .collect()
        });
        let (sample_inputs, sample_init) = self.sample(root.get("sample"), &dir);
        let environment_variables = self.environment_variables(root.get("environment_variables"));
        let environment = self.environment(root.get("environment"));
        let additional_includes = self.additional_includes(root.get("additional_includes"));
        let name = node_name(&entry);
        let reference = match parse_reference(&format!("${{{name}.output}}")) {
            Ok(r) => r,
            Err(e) => {
                self.problem(entry_line, format!("entry '{entry}': {e}"));
                return None;
            }
        };
        let node = Node {
            name: name.clone(),
            kind: NodeKind::Python,
            source: ToolSource::Entry {
                entry: entry.clone(),
                aggregate: false,
            },
            inputs: IndexMap::new(),
            connection: None,
            api: None,
            activate: None,
            aggregation: false,
            variant: None,
            line: entry_line,
        };
        let output_type = outputs
            .as_ref()
            .and_then(|o: &IndexMap<String, Option<String>>| o.get(crate::VALUE_OUTPUT).cloned())
            .flatten();
        Some(Flow {
            kind: FlowKind::Flex,
            dir,
            file,
            inputs,
            outputs: IndexMap::from([(
                crate::VALUE_OUTPUT.to_string(),
                FlowOutput {
                    reference,
                    ty: output_type,
                    is_chat_output: false,
                },
            )]),
            nodes: vec![node],
            environment_variables,
            environment,
            additional_includes,
            sample: None,
            flex: Some(FlexSpec {
                entry,
                inputs_declared,
                init,
                init_declared,
                outputs,
                sample_inputs,
                sample_init,
                is_class: false,
            }),
            message_format: crate::MessageFormat::Basic,
            warnings: Vec::new(),
        })
    }

    fn init(&mut self, y: Option<&Yaml>) -> IndexMap<String, InitInput> {
        let mut out = IndexMap::new();
        let Some(y) = y else { return out };
        let Some(map) = y.as_mapping() else {
            if !y.is_null() {
                self.problem(
                    Some(y.line),
                    "init must be a mapping of constructor argument to {type, default}",
                );
            }
            return out;
        };
        for (k, decl) in map {
            out.insert(
                key_string(k),
                InitInput {
                    ty: decl.get("type").and_then(as_str).map(str::to_string),
                    // `default: ""` is no default, as for inputs.
                    default: decl
                        .get("default")
                        .filter(|d| !d.is_null() && d.as_str() != Some(""))
                        .map(to_json),
                },
            );
        }
        out
    }

    /// `sample:` as a mapping, or `${file:sample.json}` naming a JSON/YAML file next to the flow.
    fn sample(&mut self, y: Option<&Yaml>, dir: &Path) -> (Option<Object>, Option<Object>) {
        let line = y.map(|v| v.line);
        let value = match y.map(|v| (v, &v.value)) {
            None | Some((_, Y::Null)) => return (None, None),
            Some((_, Y::String(s))) => {
                let body = s.trim();
                let Some(rel) = body
                    .strip_prefix("${file:")
                    .and_then(|r| r.strip_suffix('}'))
                    .map(str::trim)
                else {
                    self.problem(
                        line,
                        format!("sample '{s}' must be a mapping {{inputs, init}} or '${{file:sample.json}}'"),
                    );
                    return (None, None);
                };
                let rel_path = Path::new(rel);
                if rel_path.is_absolute()
                    || rel_path
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    self.problem(
                        line,
                        format!("sample file '{rel}' leaves the flow folder; name a file next to flow.flex.yaml"),
                    );
                    return (None, None);
                }
                let path = dir.join(rel_path);
                let text = match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        self.problem(
                            line,
                            format!("cannot read the sample file {}: {e}", path.display()),
                        );
                        return (None, None);
                    }
                };
                // JSON is YAML: one parser reads either, with the same bounds as a flow file.
                match flowrt_yaml::parse(&text) {
                    Ok(v) => to_json(&v),
                    Err(e) => {
                        self.problem(
                            line,
                            format!(
                                "the sample file {}:{}: {}",
                                path.display(),
                                e.line,
                                e.message
                            ),
                        );
                        return (None, None);
                    }
                }
            }
            Some((other, _)) => to_json(other),
        };
        let Value::Object(map) = value else {
            self.problem(
                line,
                "sample must be a mapping with `inputs:` and/or `init:`",
            );
            return (None, None);
        };
        let part = |key: &str| match map.get(key) {
            Some(Value::Object(m)) => Some(m.clone()),
            _ => None,
        };
        (part("inputs"), part("init"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load_flow, LoadOptions};
    use serde_json::json;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn port(name: &str, ty: Option<&str>, default: Option<Value>) -> EntryPort {
        EntryPort {
            name: name.into(),
            ty: ty.map(str::to_string),
            has_default: default.is_some(),
            default: default.unwrap_or(Value::Null),
        }
    }

    #[test]
    fn yaml_inputs_type_the_entry_and_their_defaults_win() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "flow.flex.yaml",
            "entry: calc:quote\ninputs:\n  w:\n    type: double\n  zone:\n    type: string\n    default: EU\n  n:\n    type: int\n",
        );
        let mut flow = load_flow(dir.path(), &LoadOptions::default()).unwrap();
        assert_eq!(flow.kind, FlowKind::Flex);
        assert_eq!(flow.nodes[0].name, "quote");
        let sig = EntrySignature {
            name: "quote".into(),
            inputs: vec![
                port("w", None, None),
                port("zone", Some("string"), Some(json!("US"))),
                port("n", None, Some(json!("3"))),
            ],
            ..Default::default()
        };
        complete_flex(&mut flow, &sig).unwrap();
        assert_eq!(flow.inputs["w"].ty, ValueType::Double);
        assert_eq!(flow.inputs["zone"].default, Some(json!("EU")));
        assert_eq!(flow.inputs["n"].default, Some(json!(3)));
        assert_eq!(flow.nodes[0].inputs.len(), 3);
    }

    #[test]
    fn inputs_must_match_the_signature() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "flow.flex.yaml",
            "entry: calc:quote\ninputs:\n  w:\n    type: double\n",
        );
        let mut flow = load_flow(&dir.path().join("flow.flex.yaml"), &Default::default()).unwrap();
        let sig = EntrySignature {
            inputs: vec![port("weight", None, None)],
            ..Default::default()
        };
        let e = complete_flex(&mut flow, &sig).unwrap_err();
        assert!(
            e.contains("Provided signature of inputs does not match the entry"),
            "{e}"
        );
        assert!(e.contains("weight"), "{e}");
    }

    #[test]
    fn signature_types_inputs_and_a_class_gets_an_aggregate_node() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "flow.flex.yaml",
            "entry: grader:Grader\ninit:\n  tolerance:\n    type: double\n    default: 0.01\nsample: ${file:sample.json}\n",
        );
        write(
            dir.path(),
            "sample.json",
            r#"{"inputs": {"x": "1"}, "init": {"tolerance": 0.5}}"#,
        );
        let mut flow = load_flow(dir.path(), &Default::default()).unwrap();
        let spec = flow.flex.clone().unwrap();
        assert_eq!(
            spec.sample_inputs,
            Some(json!({"x": "1"}).as_object().unwrap().clone())
        );
        assert_eq!(
            spec.init_kwargs(None),
            *json!({"tolerance": 0.5}).as_object().unwrap()
        );
        let given = json!({}).as_object().unwrap().clone();
        assert_eq!(
            spec.init_kwargs(Some(&given)),
            *json!({"tolerance": 0.01}).as_object().unwrap()
        );
        let sig = EntrySignature {
            name: "Grader".into(),
            inputs: vec![port("x", Some("int"), Some(json!(2)))],
            init: vec![port("tolerance", Some("double"), Some(json!(0.0)))],
            is_class: true,
            has_aggregate: true,
            outputs: None,
        };
        complete_flex(&mut flow, &sig).unwrap();
        assert_eq!(flow.inputs["x"].ty, ValueType::Int);
        assert_eq!(flow.inputs["x"].default, Some(json!(2)));
        assert_eq!(flow.nodes.len(), 2);
        assert!(flow.nodes[1].aggregation);
    }

    #[test]
    fn outputs_must_match_the_return_annotation() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "flow.flex.yaml",
            "entry: m:f\noutputs:\n  answer:\n    type: string\n",
        );
        let mut flow = load_flow(dir.path(), &Default::default()).unwrap();
        let mut sig = EntrySignature {
            outputs: Some(vec!["answer".into(), "score".into()]),
            ..Default::default()
        };
        let e = complete_flex(&mut flow.clone(), &sig).unwrap_err();
        assert!(
            e.contains("Provided signature of outputs does not match"),
            "{e}"
        );
        sig.outputs = None; // unannotated: nothing to check
        complete_flex(&mut flow, &sig).unwrap();
    }

    #[test]
    fn sample_file_stays_in_the_flow_folder() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "flow.flex.yaml",
            "entry: m:f\nsample: ${file:../secret.json}\n",
        );
        let e = load_flow(dir.path(), &Default::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("leaves the flow folder"), "{e}");
    }

    #[test]
    fn entry_must_name_module_and_attribute() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "flow.flex.yaml", "entry: just_a_module\n");
        let e = load_flow(dir.path(), &Default::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("module:function"), "{e}");
    }

    #[test]
    fn problems_point_at_the_lines_of_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "flow.flex.yaml",
            "$schema: x\ninputs:\n  q:\n    type: strin\nentri: m:f\nentry: just_a_module\n",
        );
        let e = load_flow(dir.path(), &Default::default())
            .unwrap_err()
            .to_string()
            .replace(&dir.path().display().to_string(), "FLOW");
        assert!(
            e.contains("FLOW/flow.flex.yaml:5: unknown top-level key 'entri'"),
            "{e}"
        );
        assert!(
            e.contains("FLOW/flow.flex.yaml:6: entry 'just_a_module'"),
            "{e}"
        );
    }
}
