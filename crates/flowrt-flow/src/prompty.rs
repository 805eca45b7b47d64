//! `.prompty` files (promptflow 1.18.5's format): a YAML front matter between `---` lines (name,
//! model, inputs, outputs, sample) followed by a Jinja2 prompt body. [`Prompty::load`] reads one
//! into a [`Prompty`]; [`prompty_flow`] turns that into a one-node [`Flow`] so the executor, batch
//! runs and serving treat it like any other flow.
//!
//! Loading follows promptflow where it is surprising:
//! - the file is split at the *first* and the *last* `---` line, so a `---` line inside the body
//!   makes the front matter hold two YAML documents and loading fails;
//! - `model.parameters` is required;
//! - a string that is exactly `${env:NAME}` becomes the variable's value when it is set and stays
//!   as written otherwise; `${file:path}` becomes the content of that file (JSON and YAML parsed),
//!   relative to the prompty's folder.

use crate::convert::{convert_value, ValueType};
use crate::error::{FlowError, Problem};
use crate::load::to_json;
use crate::reference::{RefSource, Reference};
use crate::{Environment, Flow, FlowInput, FlowKind, FlowOutput, InputValue, Node, NodeKind};
use flowrt_yaml::Node as Yaml;
use indexmap::IndexMap;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Which OpenAI API a prompty calls (`model.api`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PromptyApi {
    #[default]
    Chat,
    Completion,
}

/// What a prompty returns (`model.response`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PromptyResponse {
    /// The first choice's text (or, with `response_format: json_object`, its parsed object).
    #[default]
    First,
    /// The raw completion object as the service returned it.
    All,
}

/// `model:` of a prompty.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PromptyModel {
    pub api: PromptyApi,
    /// `model.configuration` as written (after `${env:...}` substitution): `type` (`openai` or
    /// `azure_openai`), `connection`, or inline keys such as `api_key`, `base_url`,
    /// `azure_endpoint`, `api_version`, `azure_deployment`, `model`.
    pub configuration: Map<String, Value>,
    /// `model.parameters`: sent to the API as they are (`max_tokens`, `temperature`, `stop`,
    /// `response_format`, `stream`, ...).
    pub parameters: Map<String, Value>,
    pub response: PromptyResponse,
}

impl PromptyModel {
    /// The model as the mapping a front matter would write.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let api = match self.api {
            PromptyApi::Chat => "chat",
            PromptyApi::Completion => "completion",
        };
        let response = match self.response {
            PromptyResponse::First => "first",
            PromptyResponse::All => "all",
        };
        m.insert("api".into(), Value::String(api.into()));
        m.insert(
            "configuration".into(),
            Value::Object(self.configuration.clone()),
        );
        m.insert("parameters".into(), Value::Object(self.parameters.clone()));
        m.insert("response".into(), Value::String(response.into()));
        m
    }

    /// The configuration's `type`, or the one its keys imply (`azure_openai` when it names an
    /// `azure_endpoint` or `azure_deployment`, else `openai`).
    pub fn configuration_type(&self) -> &str {
        match self.configuration.get("type").and_then(Value::as_str) {
            Some(t) => t,
            None if self.configuration.contains_key("azure_endpoint")
                || self.configuration.contains_key("azure_deployment") =>
            {
                "azure_openai"
            }
            None => "openai",
        }
    }

    /// `parameters.stream` is true.
    pub fn streams(&self) -> bool {
        matches!(self.parameters.get("stream"), Some(Value::Bool(true)))
    }

    /// `parameters.response_format` is `{type: json_object}`.
    pub fn json_response(&self) -> bool {
        match self.parameters.get("response_format") {
            Some(Value::Object(m)) => m.get("type").and_then(Value::as_str) == Some("json_object"),
            _ => false,
        }
    }

    /// The deployment (azure) or model (openai) to call: `azure_deployment`, else `model`.
    pub fn model_name(&self) -> Option<&str> {
        ["azure_deployment", "model"].iter().find_map(|k| {
            self.configuration
                .get(*k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
    }

    /// A configuration names a stored `connection` or writes the endpoint inline, not both.
    pub fn check_configuration(&self) -> Result<(), String> {
        let named = self
            .configuration
            .get("connection")
            .is_some_and(|v| !v.is_null() && v.as_str() != Some(""));
        let inline: Vec<&str> = self
            .configuration
            .iter()
            .filter(|(k, v)| {
                !["type", "connection", "model", "azure_deployment"].contains(&k.as_str())
                    && truthy(v)
            })
            .map(|(k, _)| k.as_str())
            .collect();
        if named && !inline.is_empty() {
            return Err(format!(
                "Cannot configure model config and connection in \
                configuration at the same time: model.configuration names a \
                connection and also sets {}\nhint: keep either `connection:` \
                (plus model or azure_deployment) or the inline keys",
                inline.join(", ")
            ));
        }
        Ok(())
    }
}

/// A loaded `.prompty` file.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompty {
    /// The file.
    pub path: PathBuf,
    pub name: Option<String>,
    pub description: Option<String>,
    pub model: PromptyModel,
    /// Declared inputs, defaults already converted to their types.
    pub inputs: IndexMap<String, FlowInput>,
    /// The keys `outputs:` selects from a JSON reply (empty: the whole reply).
    pub outputs: Vec<String>,
    /// `sample:`: the inputs used when a call passes none.
    pub sample: Option<IndexMap<String, Value>>,
    /// The prompt body (Jinja2).
    pub template: String,
}

/// Front matter keys promptflow reads; others (`authors`, `tags`, `version`, ...) are ignored.
const MODEL_KEYS: &[&str] = &["api", "configuration", "parameters", "response"];

/// Split a prompty's text into (front matter, body) the way promptflow does: at the first run of
/// three or more `-` followed by a newline, and at the *last* such run after it.
pub fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    // Positions of every `-{3,}\n`: (start of the dashes that can match, index after the '\n').
    let bytes = text.as_bytes();
    let mut runs: Vec<(usize, usize, usize)> = Vec::new(); // (run start, run end = '\n' index)
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'-' {
            let start = i;
            while i < bytes.len() && bytes[i] == b'-' {
                i += 1;
            }
            if i - start >= 3 && i < bytes.len() && bytes[i] == b'\n' {
                runs.push((start, i, i + 1));
            }
        } else {
            i += 1;
        }
    }
    let first = runs.first()?;
    let front_start = first.2;
    // The greedy `(.*)` takes everything up to the last `---\n`, whose dashes are its last three.
    let last = runs.iter().rev().find(|r| r.1 - 3 >= front_start)?;
    let front_end = last.1 - 3;
    Some((&text[front_start..front_end], &text[last.2..]))
}

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn problem(path: &Path, message: impl Into<String>) -> FlowError {
    FlowError::Invalid {
        path: path.to_path_buf(),
        problems: vec![Problem::new(None, message)],
    }
}

impl Prompty {
    /// Read and check a `.prompty` file.
    pub fn load(path: &Path) -> Result<Prompty, FlowError> {
        let text = fs_err::read_to_string(path).map_err(|e| FlowError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Prompty::parse(&text, path)
    }

    /// Read a `.prompty` file as `Prompty.load(source, model=...)` does: `model` (a dict) merged
    /// over the file's `model` key by key, and `configuration` (a model configuration object's
    /// fields) replacing its configuration whole, before anything is checked: a file that
    /// lacks its parameters or configuration loads when they are given here.
    pub fn load_overridden(
        path: &Path,
        model: Option<&Map<String, Value>>,
        configuration: Option<&Map<String, Value>>,
    ) -> Result<Prompty, FlowError> {
        let text = fs_err::read_to_string(path).map_err(|e| FlowError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Prompty::parse_overridden(&text, path, model, configuration)
    }

    /// Parse a prompty's text; `path` names the file in messages and anchors `${file:...}`.
    pub fn parse(text: &str, path: &Path) -> Result<Prompty, FlowError> {
        Prompty::parse_overridden(text, path, None, None)
    }

    fn parse_overridden(
        text: &str,
        path: &Path,
        model_override: Option<&Map<String, Value>>,
        configuration: Option<&Map<String, Value>>,
    ) -> Result<Prompty, FlowError> {
        // Python reads text files with universal newlines.
        let text = crate::universal_newlines(text);
        let Some((front, body)) = split_front_matter(&text) else {
            return Err(problem(
                path,
                "a prompty file must start with its YAML front matter between \
                two '---' lines, followed by the prompt",
            ));
        };
        let front_line = text[..text.len() - body.len() - front.len()]
            .matches('\n')
            .count();
        // The front matter is untrusted YAML, bounded by the parser; the body is bounded here.
        if text.len() > flowrt_yaml::limits::MAX_YAML_BYTES {
            return Err(problem(
                path,
                format!(
                    "the file is {} bytes; flowrt reads prompty files of at most {} bytes",
                    text.len(),
                    flowrt_yaml::limits::MAX_YAML_BYTES
                ),
            ));
        }
        let yaml = single_document(front, path, front_line)?;
        let lines = Lines {
            root: Some(&yaml),
            offset: front_line,
        };
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut config = resolved_front_matter(&yaml, &dir, path)?;
        if model_override.is_some() || configuration.is_some() {
            override_model(&mut config, model_override, configuration, &dir, path)?;
        }
        let mut problems = Vec::new();
        let model = parse_model(config.get("model"), &lines, &mut problems);
        let inputs = parse_inputs(config.get("inputs"), &lines, &mut problems);
        let outputs = parse_outputs(config.get("outputs"), &lines, &mut problems);
        let sample = parse_sample(config.get("sample"), &lines, &dir, &mut problems);
        if !problems.is_empty() {
            return Err(FlowError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        let text_of = |k: &str| config.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(Prompty {
            path: path.to_path_buf(),
            name: text_of("name"),
            description: text_of("description"),
            model,
            inputs,
            outputs,
            sample,
            template: body.to_string(),
        })
    }

    /// This prompty with its model overridden, as `Prompty.load(source, model={...})` does with
    /// a dict: merged recursively over the file's `model` (a mapping merges key by key, anything
    /// else replaces), after `${env:...}`/`${file:...}` references in it are resolved. A model
    /// configuration *object* (`OpenAIModelConfiguration(...)`) is not a dict and replaces the
    /// file's configuration whole: pass it to [`Prompty::with_configuration`] instead.
    pub fn with_model_override(&self, model: &Map<String, Value>) -> Result<Prompty, String> {
        let dir = self.dir();
        let overrides = match resolve_references(Value::Object(model.clone()), &dir)? {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let merged = merge_recursively(self.model.to_map(), &overrides);
        let mut problems = Vec::new();
        let no_lines = Lines {
            root: None,
            offset: 0,
        };
        let parsed = parse_model(Some(&Value::Object(merged)), &no_lines, &mut problems);
        if !problems.is_empty() {
            let text: Vec<String> = problems.iter().map(|p| p.message.clone()).collect();
            return Err(text.join("\n"));
        }
        let mut out = self.clone();
        out.model = parsed;
        Ok(out)
    }

    /// This prompty with `configuration` (a model configuration object's fields, e.g.
    /// `{"type": "openai", "connection": "oai_conn", "model": "gpt-4o-mini"}`) replacing the
    /// file's configuration whole.
    pub fn with_configuration(&self, configuration: Map<String, Value>) -> Result<Prompty, String> {
        let configuration = match resolve_references(Value::Object(configuration), &self.dir())? {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let mut out = self.clone();
        out.model.configuration = configuration;
        out.model.check_configuration()?;
        Ok(out)
    }

    /// The folder of the prompty file (`${file:...}` references are relative to it).
    pub fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// The name of the flow node a prompty flow runs: the file's stem.
    pub fn node_name(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "prompty".into())
    }
}

/// The front matter as a mapping, its `${env:...}` and `${file:...}` references resolved.
/// `sample` is only a fallback for a test without inputs: a sample file that cannot be read
/// leaves the prompty without one (promptflow reads it only when it needs it), while every other
/// reference must resolve.
fn resolved_front_matter(
    yaml: &Yaml,
    dir: &Path,
    path: &Path,
) -> Result<Map<String, Value>, FlowError> {
    let mut front_json = to_json(yaml);
    let sample_raw = front_json.as_object_mut().and_then(|m| m.remove("sample"));
    let config = match resolve_references(front_json, dir) {
        Ok(v) => v,
        Err(message) => return Err(problem(path, message)),
    };
    let config = match (config, sample_raw) {
        (Value::Object(mut m), Some(raw)) => {
            if let Ok(sample) = resolve_references(raw, dir) {
                m.insert("sample".into(), sample);
            }
            Value::Object(m)
        }
        (other, _) => other,
    };
    match config {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        _ => Err(problem(
            path,
            "the front matter must be a YAML mapping (name, model, \
            inputs, ...)",
        )),
    }
}

/// The overrides of `Prompty.load(source, model=..., configuration=...)` applied to the front
/// matter `config`, their references resolved: `model_override` merged over the file's `model`
/// key by key, then `configuration` replacing its configuration whole.
fn override_model(
    config: &mut Map<String, Value>,
    model_override: Option<&Map<String, Value>>,
    configuration: Option<&Map<String, Value>>,
    dir: &Path,
    path: &Path,
) -> Result<(), FlowError> {
    let resolved =
        |m: Option<&Map<String, Value>>| -> Result<Option<Map<String, Value>>, FlowError> {
            match m.map(|m| resolve_references(Value::Object(m.clone()), dir)) {
                None => Ok(None),
                Some(Ok(Value::Object(m))) => Ok(Some(m)),
                Some(Ok(_)) => Ok(Some(Map::new())),
                Some(Err(message)) => Err(problem(path, message)),
            }
        };
    let file_model = match config.remove("model") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut model = match resolved(model_override)? {
        Some(o) => merge_recursively(file_model, &o),
        None => file_model,
    };
    if let Some(c) = resolved(configuration)? {
        model.insert("configuration".into(), Value::Object(c));
    }
    config.insert("model".into(), Value::Object(model));
    Ok(())
}

/// The names of the prompty's `outputs` (a mapping of output name to `{type: ...}`).
fn parse_outputs(v: Option<&Value>, lines: &Lines, problems: &mut Vec<Problem>) -> Vec<String> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        Some(_) => {
            problems.push(Problem::new(
                lines.at(&["outputs"]),
                "outputs must be a mapping of output name to {type: ...}",
            ));
            Vec::new()
        }
    }
}

/// The prompty's `sample`: a mapping of input values, or a JSON file of them next to the prompty
/// (`sample: sample.json`).
fn parse_sample(
    v: Option<&Value>,
    lines: &Lines,
    dir: &Path,
    problems: &mut Vec<Problem>,
) -> Option<IndexMap<String, Value>> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone().into_iter().collect()),
        Some(Value::String(f)) if f.to_ascii_lowercase().ends_with(".json") => {
            match read_file_reference(dir, f) {
                Ok(Value::Object(m)) => Some(m.into_iter().collect()),
                Ok(_) => {
                    problems.push(Problem::new(
                        lines.at(&["sample"]),
                        format!("sample file '{f}' must hold a JSON object of input values"),
                    ));
                    None
                }
                // Read only when a test has no inputs, as promptflow does: a missing file
                // just means there is no sample.
                Err(_) => None,
            }
        }
        Some(_) => {
            problems.push(Problem::new(
                lines.at(&["sample"]),
                "sample must be a mapping of input name to value, or a .json \
                file (sample: ${file:sample.json})",
            ));
            None
        }
    }
}

/// promptflow's `update_dict_recursively`: mappings merge key by key, other values replace.
fn merge_recursively(
    mut base: Map<String, Value>,
    overrides: &Map<String, Value>,
) -> Map<String, Value> {
    for (k, v) in overrides {
        let merged = match (base.remove(k), v) {
            (Some(Value::Object(old)), Value::Object(new)) => {
                Value::Object(merge_recursively(old, new))
            }
            (_, Value::Object(new)) => Value::Object(merge_recursively(Map::new(), new)),
            (_, other) => other.clone(),
        };
        base.insert(k.clone(), merged);
    }
    base
}

/// Lines of the front matter's settings in the file, for problems found after it is read as
/// JSON.
struct Lines<'a> {
    /// None for settings given in code (`Prompty.load(..., model={...})`), which have no lines.
    root: Option<&'a Yaml>,
    /// Lines of the file before the front matter.
    offset: usize,
}

impl Lines<'_> {
    /// The file line of the setting at `path` (or of the deepest part of it that is written).
    fn at(&self, path: &[&str]) -> Option<usize> {
        self.root?.line_at(path).map(|l| l + self.offset)
    }
}

/// The front matter as one YAML document; two documents (a `---` line in the body) fail as they
/// do in promptflow, with a hint.
fn single_document(front: &str, path: &Path, offset: usize) -> Result<Yaml, FlowError> {
    let mut docs = flowrt_yaml::parse_documents(front).map_err(|e| FlowError::Yaml {
        path: path.to_path_buf(),
        line: e.line + offset,
        column: e.column,
        message: e.message,
    })?;
    if docs.len() > 1 {
        return Err(problem(
            path,
            "the front matter is not a single YAML document (expected a single document in the \
             stream, but found another document): a prompty is split at its first and its LAST \
             '---' line, so a '---' line in the prompt body ends the front matter there\n\
            hint: remove the '---' line from the body, or write the rule differently (e.g. '***')",
        ));
    }
    Ok(docs.pop().unwrap_or(Yaml {
        value: flowrt_yaml::Value::Null,
        line: 1,
        column: 1,
    }))
}

/// `${env:NAME}` and `${file:path}` in every string of the front matter.
fn resolve_references(v: Value, dir: &Path) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => match reference_parts(&s) {
            Some(("env", name)) => match std::env::var(name) {
                Ok(value) => Value::String(value),
                Err(_) => Value::String(s),
            },
            Some(("file", rel)) => read_file_reference(dir, rel)?,
            _ => Value::String(s),
        },
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| resolve_references(i, dir))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| resolve_references(v, dir).map(|v| (k, v)))
                .collect::<Result<_, _>>()?,
        ),
        other => other,
    })
}

/// `${type:value}` as promptflow's `re.match(r"\$\{(\w+):(.*)\}", s)` reads it: anchored at the
/// start only, `value` running to the *last* `}` (so `${env:BASE}/v1` reads the variable `BASE`,
/// and what follows the `}` is dropped, as in promptflow).
fn reference_parts(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix("${")?;
    let colon = rest.find(':')?;
    let ty = &rest[..colon];
    if ty.is_empty() || !ty.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    let after = &rest[colon + 1..];
    let close = after.rfind('}')?;
    Some((ty, &after[..close]))
}

fn read_file_reference(dir: &Path, rel: &str) -> Result<Value, String> {
    let file = dir.join(rel.trim());
    let text = fs_err::read_to_string(&file)
        .map_err(|e| format!("${{file:{rel}}}: cannot read {}: {e}", file.display()))?;
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "json" => serde_json::from_str(&text)
            .map_err(|e| format!("${{file:{rel}}}: {} is not valid JSON: {e}", file.display())),
        "yaml" | "yml" => flowrt_yaml::parse(&text)
            .map(|y| to_json(&y))
            .map_err(|e| format!("${{file:{rel}}}: {} is not valid YAML: {e}", file.display())),
        _ => Ok(Value::String(text)),
    }
}

fn parse_api(v: &Value) -> Result<PromptyApi, String> {
    match v.as_str() {
        Some("chat") => Ok(PromptyApi::Chat),
        Some("completion") => Ok(PromptyApi::Completion),
        _ => Err(format!(
            "model.api {} is not supported; use chat or completion",
            crate::pyvalue::py_repr(v)
        )),
    }
}

fn parse_response(v: &Value) -> Result<PromptyResponse, String> {
    match v.as_str() {
        Some("first") => Ok(PromptyResponse::First),
        Some("all") => Ok(PromptyResponse::All),
        _ => Err(format!(
            "model.response {} is not supported; use first or all",
            crate::pyvalue::py_repr(v)
        )),
    }
}

fn parse_model(v: Option<&Value>, lines: &Lines, problems: &mut Vec<Problem>) -> PromptyModel {
    let mut model = PromptyModel::default();
    let empty = Map::new();
    let m = match v {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => &empty,
        Some(_) => {
            problems.push(Problem::new(
                lines.at(&["model"]),
                "model must be a mapping with api, configuration and parameters",
            ));
            return model;
        }
    };
    if let Some(api) = m.get("api").filter(|v| !v.is_null()) {
        match parse_api(api) {
            Ok(a) => model.api = a,
            Err(e) => problems.push(Problem::new(lines.at(&["model", "api"]), e)),
        }
    }
    if let Some(r) = m.get("response").filter(|v| !v.is_null()) {
        match parse_response(r) {
            Ok(r) => model.response = r,
            Err(e) => problems.push(Problem::new(lines.at(&["model", "response"]), e)),
        }
    }
    match m.get("configuration") {
        None | Some(Value::Null) => problems.push(Problem::new(
            lines.at(&["model", "configuration"]),
            "model.configuration is missing: promptflow requires the 'configuration' of the model \
             (TypeError: missing argument 'configuration')\n\
             hint: add it under model:, for example \
             `configuration: {type: openai, connection: my_conn, model: gpt-4o-mini}`",
        )),
        Some(Value::Object(c)) => {
            model.configuration = c.clone();
            if let Err(e) = model.check_configuration() {
                problems.push(Problem::new(lines.at(&["model", "configuration"]), e));
            }
        }
        Some(_) => problems.push(Problem::new(
            lines.at(&["model", "configuration"]),
            "model.configuration must be a mapping (type: openai or \
            azure_openai, connection or api_key, ...)",
        )),
    }
    match m.get("parameters") {
        Some(Value::Object(p)) => model.parameters = p.clone(),
        None | Some(Value::Null) => problems.push(Problem::new(
            lines.at(&["model", "parameters"]),
            "model.parameters is missing: promptflow requires the 'parameters' of the model \
             (TypeError: missing argument 'parameters')\n\
             hint: add it under model:, for example `parameters: {max_tokens: 256}` \
             (an empty mapping `parameters: {}` is fine)",
        )),
        Some(_) => problems.push(Problem::new(
            lines.at(&["model", "parameters"]),
            "model.parameters must be a mapping of API parameters \
            (max_tokens, temperature, ...)",
        )),
    }
    for key in m.keys() {
        if !MODEL_KEYS.contains(&key.as_str()) {
            problems.push(Problem::new(
                lines.at(&["model", key]),
                format!(
                    "model has unknown key '{key}'; use: {}",
                    MODEL_KEYS.join(", ")
                ),
            ));
        }
    }
    model
}

fn parse_inputs(
    v: Option<&Value>,
    lines: &Lines,
    problems: &mut Vec<Problem>,
) -> IndexMap<String, FlowInput> {
    let mut out = IndexMap::new();
    let m = match v {
        None | Some(Value::Null) => return out,
        Some(Value::Object(m)) => m,
        Some(_) => {
            problems.push(Problem::new(
                lines.at(&["inputs"]),
                "inputs must be a mapping of input name to {type, default}",
            ));
            return out;
        }
    };
    for (name, decl) in m {
        // `name: value` (not a mapping) declares an input of the value's type defaulting to it.
        let shorthand;
        let d = match decl {
            Value::Object(d) => d,
            value => {
                let ty = match value {
                    Value::Bool(_) => "bool",
                    Value::Number(n) if n.is_i64() || n.is_u64() => "int",
                    Value::Number(_) => "double",
                    Value::Array(_) => "list",
                    _ => "string",
                };
                let mut m = Map::new();
                m.insert("type".into(), Value::String(ty.into()));
                m.insert("default".into(), value.clone());
                shorthand = m;
                &shorthand
            }
        };
        let ty_text = d.get("type").and_then(Value::as_str).unwrap_or("string");
        let default = d.get("default").filter(|v| !v.is_null()).cloned();
        let flag = |k: &str| d.get(k).and_then(Value::as_bool).unwrap_or(false);
        let Some(ty) = ValueType::parse(ty_text) else {
            problems.push(Problem::new(
                lines.at(&["inputs", name, "type"]),
                format!(
                    "input '{name}' has unknown type '{ty_text}'; use one of: int, double, bool, \
                     string, list, object"
                ),
            ));
            continue;
        };
        let default = match default.map(|d| convert_value(ty, &d)) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                problems.push(Problem::new(
                    lines.at(&["inputs", name, "default"]),
                    format!("default of input '{name}': {e}"),
                ));
                None
            }
        };
        out.insert(
            name.clone(),
            FlowInput {
                ty,
                default,
                description: d
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                is_chat_input: flag("is_chat_input"),
                is_chat_history: flag("is_chat_history"),
            },
        );
    }
    out
}

/// The one-node flow that runs a prompty: its inputs are the prompty's, its single node (of kind
/// [`NodeKind::Prompty`], named after the file) reads every input, and its output `output` is the
/// node's result.
pub fn prompty_flow(prompty: &Prompty) -> Flow {
    let node_name = prompty.node_name();
    let inputs: IndexMap<String, InputValue> = prompty
        .inputs
        .keys()
        .map(|k| {
            (
                k.clone(),
                InputValue::Reference(Reference {
                    source: RefSource::FlowInput(k.clone()),
                    path: Vec::new(),
                    bracket_after_output: false,
                    text: format!("${{inputs.{k}}}"),
                }),
            )
        })
        .collect();
    let file_name = prompty
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let node = Node {
        name: node_name.clone(),
        kind: NodeKind::Prompty,
        source: crate::ToolSource::Code { path: file_name },
        inputs,
        // The stored connection it names, so a session is handed it (`connection_candidates`).
        connection: prompty
            .model
            .configuration
            .get("connection")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_string),
        api: Some(
            match prompty.model.api {
                PromptyApi::Chat => "chat",
                PromptyApi::Completion => "completion",
            }
            .to_string(),
        ),
        activate: None,
        aggregation: false,
        variant: None,
        line: None,
    };
    let mut outputs = IndexMap::new();
    outputs.insert(
        crate::VALUE_OUTPUT.to_string(),
        FlowOutput {
            reference: Reference {
                text: format!("${{{node_name}.output}}"),
                source: RefSource::Node(node_name),
                path: Vec::new(),
                bracket_after_output: false,
            },
            ty: None,
            is_chat_output: false,
        },
    );
    Flow {
        kind: FlowKind::Prompty,
        dir: prompty
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        file: prompty.path.clone(),
        inputs: prompty.inputs.clone(),
        outputs,
        nodes: vec![node],
        environment_variables: IndexMap::new(),
        environment: Environment::default(),
        additional_includes: Vec::new(),
        sample: prompty.sample.clone(),
        flex: None,
        message_format: crate::MessageFormat::Basic,
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_first_and_last_rule() {
        let (front, body) = split_front_matter("---\nname: x\n---\nbody\n").expect("splits");
        assert_eq!(front, "name: x\n");
        assert_eq!(body, "body\n");
        // A rule in the body moves the split there: the front matter swallows the first body part.
        let (front, body) =
            split_front_matter("---\nname: x\n---\nAgenda\n---\nNotes:\n").expect("splits");
        assert_eq!(front, "name: x\n---\nAgenda\n");
        assert_eq!(body, "Notes:\n");
        // Longer runs work; their extra dashes stay with the text before the last one.
        let (front, body) = split_front_matter("-----\na: 1\n-----\nb").expect("splits");
        assert_eq!(front, "a: 1\n--");
        assert_eq!(body, "b");
    }

    #[test]
    fn no_front_matter_is_no_split() {
        assert_eq!(split_front_matter("just text\n"), None);
        assert_eq!(split_front_matter("---\nonly one rule\n"), None);
        // The closing rule needs a newline after it.
        assert_eq!(split_front_matter("---\na: 1\n---"), None);
    }

    fn parse(text: &str) -> Result<Prompty, FlowError> {
        Prompty::parse(text, Path::new("/nowhere/t.prompty"))
    }

    #[test]
    fn rule_in_body_fails_as_two_documents() {
        let err =
            parse("---\nmodel:\n  parameters: {}\n---\nA\n---\nB\n").expect_err("two documents");
        assert!(err.to_string().contains("single document"), "{err}");
    }

    #[test]
    fn deeply_nested_front_matter_is_refused_before_parsing() {
        let text = format!(
            "---\nmodel:\n  parameters: {}{}\n---\nuser:\nhi\n",
            "[".repeat(200),
            "]".repeat(200)
        );
        let err = parse(&text).expect_err("too deep");
        assert!(err.to_string().contains("t.prompty:3:"), "{err}");
    }

    #[test]
    fn each_problem_names_the_line_of_its_setting_in_the_file() {
        let err = parse(
            "---\nname: N\nmodel:\n  api: chatty\n  configuration:\n    type: openai\n    connection: c\n  parameters: {}\n  temprature: 1\ninputs:\n  n:\n    type: number\n---\nuser:\n{{n}}\n",
        )
        .expect_err("three problems");
        let text = err.to_string().replace("/nowhere/", "");
        assert_eq!(
            text,
            "t.prompty:4: model.api 'chatty' is not supported; use chat or completion\n\
             t.prompty:9: model has unknown key 'temprature'; use: api, configuration, parameters, response\n\
             t.prompty:12: input 'n' has unknown type 'number'; use one of: int, double, bool, string, list, object"
        );
    }

    #[test]
    fn parameters_are_required() {
        let err = parse("---\nmodel:\n  api: chat\n---\nuser:\nhi\n").expect_err("no parameters");
        assert!(err.to_string().contains("parameters"), "{err}");
    }

    #[test]
    fn parses_model_inputs_outputs_sample() {
        let p = parse(
            "---\nname: N\nmodel:\n  api: completion\n  response: all\n  configuration:\n    type: openai\n    connection: c\n  parameters:\n    max_tokens: 5\ninputs:\n  n:\n    type: double\n    default: 2\noutputs:\n  a: {type: string}\nsample:\n  n: 3\n---\nbody {{n}}\n",
        )
        .expect("parses");
        assert_eq!(p.name.as_deref(), Some("N"));
        assert_eq!(p.model.api, PromptyApi::Completion);
        assert_eq!(p.model.response, PromptyResponse::All);
        assert_eq!(p.model.configuration_type(), "openai");
        assert_eq!(p.inputs["n"].default, Some(serde_json::json!(2.0)));
        assert_eq!(p.outputs, vec!["a".to_string()]);
        assert_eq!(
            p.sample.as_ref().map(|s| s["n"].clone()),
            Some(serde_json::json!(3))
        );
        assert_eq!(p.template, "body {{n}}\n");
    }

    #[test]
    fn an_input_written_as_a_value_defaults_to_it() {
        let p = parse(
            "---\nmodel:\n  configuration: {}\n  parameters: {}\ninputs:\n  n: 3\n  q: hi\n---\nuser:\nhi\n",
        )
        .expect("parses");
        assert_eq!(p.inputs["n"].ty, ValueType::Int);
        assert_eq!(p.inputs["n"].default, Some(serde_json::json!(3)));
        assert_eq!(p.inputs["q"].default, Some(serde_json::json!("hi")));
    }

    #[test]
    fn a_prompty_flow_names_its_connection() {
        let p = parse(
            "---\nmodel:\n  configuration: {type: openai, connection: my_conn, model: m}\n  parameters: {}\n---\nuser:\nhi\n",
        )
        .expect("parses");
        let flow = prompty_flow(&p);
        assert!(flow.connection_candidates().contains("my_conn"));
        assert_eq!(flow.nodes[0].kind, NodeKind::Prompty);
        assert_eq!(flow.outputs.keys().collect::<Vec<_>>(), vec!["output"]);
    }

    #[test]
    fn env_references_resolve_when_set() {
        std::env::set_var("FLOWRT_PROMPTY_TEST_VAR", "http://x");
        let p = parse(
            "---\nmodel:\n  configuration:\n    azure_endpoint: ${env:FLOWRT_PROMPTY_TEST_VAR}\n    api_key: ${env:FLOWRT_PROMPTY_UNSET_VAR}\n  parameters: {}\n---\nuser:\nhi\n",
        )
        .expect("parses");
        assert_eq!(p.model.configuration["azure_endpoint"], "http://x");
        assert_eq!(
            p.model.configuration["api_key"],
            "${env:FLOWRT_PROMPTY_UNSET_VAR}"
        );
        assert_eq!(p.model.configuration_type(), "azure_openai");
    }

    #[test]
    fn model_overrides_merge_and_configuration_objects_replace() {
        std::env::set_var("FLOWRT_PROMPTY_OVERRIDE_VAR", "k2");
        let p = parse(
            "---\nmodel:\n  configuration:\n    type: azure_openai\n    azure_deployment: d\n    azure_endpoint: https://x\n    api_key: k\n  parameters: {max_tokens: 3, temperature: 0, response_format: {type: text}}\n---\nuser:\nhi\n",
        )
        .expect("parses");
        // A dict merges recursively, references resolved.
        let o = serde_json::json!({"configuration": {"api_key": "${env:FLOWRT_PROMPTY_OVERRIDE_VAR}"}, "parameters": {"max_tokens": 9, "response_format": {"type": "json_object"}}, "response": "all"});
        let q = p
            .with_model_override(o.as_object().expect("object"))
            .expect("overrides");
        assert_eq!(q.model.configuration["azure_deployment"], "d");
        assert_eq!(q.model.configuration["api_key"], "k2");
        assert_eq!(q.model.parameters["max_tokens"], 9);
        assert_eq!(q.model.parameters["temperature"], 0);
        assert!(q.model.json_response());
        assert_eq!(q.model.response, PromptyResponse::All);
        // A configuration object replaces the file's whole.
        let c = serde_json::json!({"connection": "c", "model": "m"});
        let r = p
            .with_configuration(c.as_object().expect("object").clone())
            .expect("replaces");
        assert_eq!(r.model.configuration_type(), "openai");
        assert!(!r.model.configuration.contains_key("azure_deployment"));
        // Unknown model keys fail as promptflow's dataclass does.
        let bad = serde_json::json!({"temperature": 1});
        let err = p
            .with_model_override(bad.as_object().expect("object"))
            .expect_err("unknown key");
        assert!(err.contains("unknown key 'temperature'"), "{err}");
    }

    #[test]
    fn references_read_to_the_last_brace_like_promptflow() {
        assert_eq!(reference_parts("${env:BASE}/v1"), Some(("env", "BASE")));
        assert_eq!(reference_parts("${file:a.json}"), Some(("file", "a.json")));
        assert_eq!(reference_parts("x${env:BASE}"), None);
        assert_eq!(reference_parts("${env:BASE"), None);
    }
}
