//! Edits that know what a flow is, over `flowrt_yaml::edit`'s text edits: renaming a node
//! renames every reference to it, so a flow edited in the browser stays consistent.

use flowrt_yaml::edit::{apply, string_scalars, Edit, Seg};
use flowrt_yaml::Error;
use serde_json::Value;

/// Whether `name` can name a node: a `${name.output}` reference must be able to spell it.
pub fn is_node_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

/// Rename node `from` to `to` in a `flow.dag.yaml` text, with every `${from...}` reference (node
/// inputs, outputs, activate conditions) and its `node_variants` entry. Only those lines change.
pub fn rename_node(text: &str, from: &str, to: &str) -> Result<String, Error> {
    if !is_node_name(to) {
        return Err(refuse(format!(
            "'{to}' cannot name a node: use letters, digits and '_', starting with a letter"
        )));
    }
    let doc = flowrt_yaml::parse(text)?;
    let names: Vec<&str> = doc
        .get("nodes")
        .and_then(|n| n.as_sequence())
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.get("name").and_then(|v| v.as_str()))
        .collect();
    if !names.contains(&from) {
        return Err(refuse(format!("there is no node '{from}' to rename")));
    }
    if names.contains(&to) {
        return Err(refuse(format!(
            "a node is already named '{to}'; pick another name"
        )));
    }
    let mut text = apply(
        text,
        &Edit::Set {
            path: vec![
                Seg::Key("nodes".into()),
                Seg::Named(from.into()),
                Seg::Key("name".into()),
            ],
            value: Value::String(to.into()),
        },
    )?;
    for (path, value) in string_scalars(&text.clone())? {
        let renamed = rename_references(&value, from, to);
        if renamed != value {
            text = apply(
                &text,
                &Edit::Set {
                    path,
                    value: Value::String(renamed),
                },
            )?;
        }
    }
    let has_variants = doc
        .get("node_variants")
        .is_some_and(|v| v.get(from).is_some());
    if has_variants {
        text = apply(
            &text,
            &Edit::RenameKey {
                path: vec![Seg::Key("node_variants".into()), Seg::Key(from.into())],
                to: to.into(),
            },
        )?;
    }
    Ok(text)
}

/// An edit refused as a whole (no such node, a name taken), not for one line of the file: it is
/// reported at the file's start.
fn refuse(message: String) -> Error {
    Error {
        line: 1,
        column: 1,
        message,
    }
}

/// `${from}` and `${from.x...}` in `value` written for `to`; anything else as it was.
fn rename_references(value: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let open = format!("${{{from}");
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        out.push_str(&rest[..at]);
        if after.starts_with('.') || after.starts_with('}') {
            out.push_str(&format!("${{{to}"));
        } else {
            out.push_str(&open);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: &str = "\
inputs:
  q:
    type: string
outputs:
  answer:
    type: string
    reference: ${answer.output}   # what the user sees
nodes:
- name: answer
  type: llm
  inputs:
    question: ${inputs.q}
  use_variants: true
- name: answer_check
  type: python
  inputs:
    text: ${answer.output}
    other: ${answer_extra.output}
  activate:
    when: ${answer}
    is: true
node_variants:
  answer:
    default_variant_id: variant_0
";

    #[test]
    fn renaming_a_node_renames_its_references_and_nothing_else() {
        let out = rename_node(FLOW, "answer", "reply").expect("renames");
        let expected = FLOW
            .replace("${answer.output}", "${reply.output}")
            .replace("- name: answer\n", "- name: reply\n")
            .replace("when: ${answer}", "when: ${reply}")
            .replace("node_variants:\n  answer:", "node_variants:\n  reply:");
        assert_eq!(out, expected);
        assert!(
            out.contains("${answer_extra.output}"),
            "a longer name is another node"
        );
        assert!(out.contains("# what the user sees"));
    }

    #[test]
    fn a_rename_that_cannot_apply_says_why() {
        let e = rename_node(FLOW, "answer", "answer_check").expect_err("taken");
        assert!(e.message.contains("already named"), "{e}");
        let e = rename_node(FLOW, "nope", "x").expect_err("missing");
        assert!(e.message.contains("no node 'nope'"), "{e}");
        let e = rename_node(FLOW, "answer", "a-b").expect_err("bad name");
        assert!(e.message.contains("cannot name a node"), "{e}");
    }
}

/// What adding a variant did: the new variant's id, and the prompt file it copied for itself
/// (`(from, to)`, relative to the flow folder) when the node reads one.
#[derive(Clone, Debug, PartialEq)]
pub struct AddedVariant {
    pub text: String,
    pub id: String,
    pub copy: Option<(String, String)>,
}

/// Add a variant to node `node` as a copy of variant `from` (its default when `None`), as
/// promptflow's variants are written: the first time, the node's settings move into
/// `node_variants.<node>.variants.variant_0.node` and the node keeps `use_variants: true`. An
/// llm or prompt node's copy reads a prompt file of its own (`<stem>__<id>.<ext>`), so the two
/// can differ.
pub fn add_variant(text: &str, node: &str, from: Option<&str>) -> Result<AddedVariant, Error> {
    let doc = flowrt_yaml::parse(text)?;
    let item = doc
        .get("nodes")
        .and_then(|n| n.as_sequence())
        .unwrap_or_default()
        .iter()
        .find(|n| n.get("name").and_then(|v| v.as_str()) == Some(node))
        .ok_or_else(|| refuse(format!("there is no node '{node}'")))?
        .clone();
    let uses = item.get("use_variants").and_then(|v| v.as_bool()) == Some(true);
    let (mut text, mut variants) = if uses {
        let variants = doc
            .get("node_variants")
            .and_then(|v| v.get(node))
            .and_then(|v| v.get("variants"))
            .map(|v| v.to_json())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        (text.to_string(), variants)
    } else {
        move_settings_into_first_variant(text, node, &item)?
    };
    let default = doc
        .get("node_variants")
        .and_then(|v| v.get(node))
        .and_then(|v| v.get("default_variant_id"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| "variant_0".into());
    let from = from.map(str::to_string).unwrap_or(default);
    let mut clone = variants
        .get(&from)
        .and_then(|v| v.get("node"))
        .cloned()
        .ok_or_else(|| refuse(format!("node '{node}' has no variant '{from}'")))?;
    let id = (1..)
        .map(|i| format!("variant_{i}"))
        .find(|id| !variants.contains_key(id))
        .unwrap_or_else(|| "variant_new".into());
    let copy = point_at_own_prompt(&mut clone, &id);
    variants.insert(id.clone(), serde_json::json!({"node": clone.clone()}));
    text = apply(
        &text,
        &Edit::Set {
            path: variants_path(node, &["variants", &id]),
            value: serde_json::json!({"node": clone}),
        },
    )?;
    Ok(AddedVariant { text, id, copy })
}

/// A node's first variant, as promptflow writes it: the node's settings (`item`) move into
/// `node_variants.<node>` as `variant_0`, its default, and the node keeps its name and
/// `use_variants: true`. Returns the text so edited and the node's variants (`variant_0` alone).
fn move_settings_into_first_variant(
    text: &str,
    node: &str,
    item: &flowrt_yaml::Node,
) -> Result<(String, serde_json::Map<String, Value>), Error> {
    let mut body = item.to_json();
    if let Some(m) = body.as_object_mut() {
        m.shift_remove("name");
    }
    let keys: Vec<String> = body
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let first = serde_json::json!({"default_variant_id": "variant_0", "variants": {"variant_0": {"node": body}}});
    let mut text = apply(
        text,
        &Edit::Set {
            path: variants_path(node, &[]),
            value: first,
        },
    )?;
    for k in keys.iter().rev() {
        text = apply(
            &text,
            &Edit::Remove {
                path: node_path(node, &[k]),
            },
        )?;
    }
    text = apply(
        &text,
        &Edit::Set {
            path: node_path(node, &["use_variants"]),
            value: Value::Bool(true),
        },
    )?;
    let mut variants = serde_json::Map::new();
    variants.insert("variant_0".into(), serde_json::json!({"node": body}));
    Ok((text, variants))
}

/// Give a copied llm or prompt variant (`settings`, to be variant `id`) a prompt file of its own,
/// so the two prompts can differ: its `source.path` becomes `<stem>__<id>.<ext>` (the stem
/// without an earlier variant's suffix). Returns the file to copy, `(from, to)`, if any.
fn point_at_own_prompt(settings: &mut Value, id: &str) -> Option<(String, String)> {
    let kind = settings
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !matches!(kind, "llm" | "prompt") {
        return None;
    }
    let path = settings
        .pointer("/source/path")
        .and_then(Value::as_str)
        .map(str::to_string)?;
    let stem_end = path
        .rfind('.')
        .filter(|i| !path[*i..].contains('/'))
        .unwrap_or(path.len());
    let base = path[..stem_end]
        .split("__variant_")
        .next()
        .unwrap_or(&path[..stem_end]);
    let to = format!("{base}__{id}{}", &path[stem_end..]);
    if let Some(p) = settings.pointer_mut("/source/path") {
        *p = Value::String(to.clone());
    }
    Some((path, to))
}

/// The path of setting `rest` of node `node` in `nodes` (the node itself when `rest` is empty).
fn node_path(node: &str, rest: &[&str]) -> Vec<Seg> {
    let mut p = vec![Seg::Key("nodes".into()), Seg::Named(node.into())];
    p.extend(rest.iter().map(|k| Seg::Key((*k).into())));
    p
}

/// The path of `rest` in `node_variants.<node>` (that entry itself when `rest` is empty).
fn variants_path(node: &str, rest: &[&str]) -> Vec<Seg> {
    let mut p = vec![Seg::Key("node_variants".into()), Seg::Key(node.into())];
    p.extend(rest.iter().map(|k| Seg::Key((*k).into())));
    p
}

/// The variants of each node that has them: `(default, ids in order)`, from `node_variants`.
pub fn variants_of(text: &str) -> Vec<(String, String, Vec<String>)> {
    let Ok(doc) = flowrt_yaml::parse(text) else {
        return Vec::new();
    };
    doc.get("node_variants")
        .and_then(|v| v.as_mapping())
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| {
            let ids: Vec<String> = v
                .get("variants")
                .and_then(|vs| vs.as_mapping())
                .unwrap_or_default()
                .iter()
                .map(|(id, _)| id.key_string())
                .collect();
            let default = v
                .get("default_variant_id")
                .and_then(|d| d.as_str())
                .map(str::to_string)
                .or_else(|| ids.first().cloned())
                .unwrap_or_default();
            (k.key_string(), default, ids)
        })
        .collect()
}

#[cfg(test)]
mod variant_tests {
    use super::*;

    const FLOW: &str = "\
inputs:
  q:
    type: string
outputs:
  a:
    type: string
    reference: ${ask.output}
nodes:
- name: ask
  type: llm
  source:
    type: code
    path: ask.jinja2
  inputs:
    temperature: 0.2
    question: ${inputs.q}
  connection: c
  api: chat
";

    #[test]
    fn a_first_variant_moves_the_node_into_node_variants_and_copies_its_prompt() {
        let added = add_variant(FLOW, "ask", None).expect("adds");
        assert_eq!(added.id, "variant_1");
        assert_eq!(
            added.copy,
            Some(("ask.jinja2".into(), "ask__variant_1.jinja2".into()))
        );
        let doc = flowrt_yaml::parse(&added.text).expect("parses");
        let node = &doc
            .get("nodes")
            .and_then(|n| n.as_sequence())
            .expect("nodes")[0];
        assert_eq!(
            node.to_json(),
            serde_json::json!({"name": "ask", "use_variants": true})
        );
        let variants = doc
            .get("node_variants")
            .and_then(|v| v.get("ask"))
            .expect("variants");
        assert_eq!(
            variants.get("default_variant_id").and_then(|d| d.as_str()),
            Some("variant_0")
        );
        let v1 = variants
            .get("variants")
            .and_then(|v| v.get("variant_1"))
            .expect("v1")
            .to_json();
        assert_eq!(v1["node"]["source"]["path"], "ask__variant_1.jinja2");
        assert_eq!(v1["node"]["inputs"]["temperature"], 0.2);
        assert_eq!(
            variants_of(&added.text),
            [(
                "ask".to_string(),
                "variant_0".to_string(),
                vec!["variant_0".to_string(), "variant_1".to_string()]
            )]
        );
        // A second variant is copied from the one named.
        let again = add_variant(&added.text, "ask", Some("variant_1")).expect("adds");
        assert_eq!(again.id, "variant_2");
        assert_eq!(
            again.copy,
            Some((
                "ask__variant_1.jinja2".into(),
                "ask__variant_2.jinja2".into()
            ))
        );
        let e = add_variant(FLOW, "nope", None).expect_err("no node");
        assert!(e.message.contains("no node 'nope'"), "{e}");
    }
}

/// How much of a flow a partial test runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Partial<'a> {
    /// Only this node, with these inputs (literal values, as a user typed them).
    Node {
        node: &'a str,
        inputs: &'a serde_json::Map<String, Value>,
    },
    /// This node and every node after it; what they read of the nodes before it is the output
    /// those nodes gave in the last test (`upstream`, by node name).
    From {
        node: &'a str,
        upstream: &'a serde_json::Map<String, Value>,
    },
}

/// A flow file that runs part of `text`'s flow, for a test while editing: the nodes kept,
/// references to the nodes left out replaced by the values they gave, and the flow's outputs
/// that the kept nodes give (for one node alone: its output, as `output`). Written as JSON,
/// which is YAML; it is never saved.
pub fn partial_flow(
    text: &str,
    partial: &Partial<'_>,
    variant: Option<(&str, &str)>,
) -> Result<PartialFlow, Error> {
    let mut doc = flowrt_yaml::parse(text)?.to_json();
    let nodes: Vec<Value> = doc
        .get("nodes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let start = match partial {
        Partial::Node { node, .. } | Partial::From { node, .. } => *node,
    };
    if !nodes
        .iter()
        .any(|n| n.get("name").and_then(Value::as_str) == Some(start))
    {
        return Err(refuse(format!("there is no node '{start}'")));
    }
    let kept = kept_node_names(&doc, &nodes, partial, start);
    let empty = serde_json::Map::new();
    let upstream = match partial {
        Partial::From { upstream, .. } => *upstream,
        Partial::Node { .. } => &empty,
    };
    let mut kept_nodes = Vec::new();
    for n in &nodes {
        let name = n.get("name").and_then(Value::as_str).unwrap_or_default();
        if !kept.iter().any(|k| k == name) {
            continue;
        }
        if let (Partial::Node { inputs, .. }, true) = (partial, name == start) {
            kept_nodes.push(node_alone(&doc, n, inputs, variant)?);
            continue;
        }
        let mut n = n.clone();
        substitute(&mut n, &kept, upstream)?;
        kept_nodes.push(n);
    }
    // Variants of kept nodes read the left-out nodes' values too.
    if let Some(variants) = doc.get_mut("node_variants").and_then(Value::as_object_mut) {
        substitute_in_variants(variants, &kept, upstream)?;
    }
    let outputs = partial_outputs(&doc, partial, &kept);
    if let Some(m) = doc.as_object_mut() {
        m.insert("nodes".into(), Value::Array(kept_nodes));
        m.insert("outputs".into(), outputs);
        if matches!(partial, Partial::Node { .. }) {
            // The node alone runs the settings chosen above, not its variants.
            m.shift_remove("node_variants");
        }
    }
    let text = serde_json::to_string_pretty(&doc).map_err(|e| refuse(e.to_string()))?;
    // A variant chosen for a node still there (with its variants) still applies.
    let variant_applies = variant.is_some_and(|(n, _)| {
        matches!(partial, Partial::From { .. }) && kept.iter().any(|k| k == n)
    });
    Ok(PartialFlow {
        text,
        variant_applies,
    })
}

/// The nodes a partial test keeps: the start, and (from it) every node that reads a kept node,
/// in the order they are found.
fn kept_node_names(
    doc: &Value,
    nodes: &[Value],
    partial: &Partial<'_>,
    start: &str,
) -> Vec<String> {
    let mut kept: Vec<String> = vec![start.to_string()];
    if matches!(partial, Partial::From { .. }) {
        let mut grew = true;
        while grew {
            grew = false;
            for n in nodes {
                let name = n.get("name").and_then(Value::as_str).unwrap_or_default();
                if !kept.iter().any(|k| k == name)
                    && nodes_read_by(doc, n).iter().any(|r| kept.contains(r))
                {
                    kept.push(name.to_string());
                    grew = true;
                }
            }
        }
    }
    kept
}

/// The nodes node `n` reads in its inputs and its `activate.when`, in each of its variants.
fn nodes_read_by(doc: &Value, n: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for body in bodies(doc, n) {
        let mut texts = Vec::new();
        collect_texts(body.get("inputs").unwrap_or(&Value::Null), &mut texts);
        if let Some(w) = body.pointer("/activate/when").and_then(Value::as_str) {
            texts.push(w.to_string());
        }
        out.extend(texts.iter().filter_map(|t| {
            crate::parse_reference(t)
                .ok()
                .and_then(|r| r.node().map(str::to_string))
        }));
    }
    out
}

/// Node `n` set up to run alone: exactly the inputs given, and no condition to wait on. A node
/// with variants runs the one chosen for it in `variant`, else its default.
fn node_alone(
    doc: &Value,
    n: &Value,
    inputs: &serde_json::Map<String, Value>,
    variant: Option<(&str, &str)>,
) -> Result<Value, Error> {
    let name = n.get("name").and_then(Value::as_str).unwrap_or_default();
    let mut body = if n.get("use_variants").and_then(Value::as_bool) == Some(true) {
        let chosen = variant
            .filter(|(v_node, _)| *v_node == name)
            .map(|(_, id)| id);
        variant_body(doc, name, chosen)
            .ok_or_else(|| refuse(format!("node '{name}' has no such variant to run")))?
    } else {
        n.clone()
    };
    if let Some(m) = body.as_object_mut() {
        m.insert("name".into(), Value::String(name.into()));
        m.insert("inputs".into(), Value::Object(inputs.clone()));
        m.shift_remove("activate");
        m.shift_remove("use_variants");
    }
    Ok(body)
}

/// Keep only the `node_variants` of kept nodes, their references to the nodes left out replaced
/// with the values those gave (see [`substitute`]).
fn substitute_in_variants(
    variants: &mut serde_json::Map<String, Value>,
    kept: &[String],
    upstream: &serde_json::Map<String, Value>,
) -> Result<(), Error> {
    variants.retain(|k, _| kept.iter().any(|n| n == k));
    for spec in variants.values_mut() {
        if let Some(vs) = spec.get_mut("variants").and_then(Value::as_object_mut) {
            for v in vs.values_mut() {
                if let Some(node) = v.get_mut("node") {
                    substitute(node, kept, upstream)?;
                }
            }
        }
    }
    Ok(())
}

/// The outputs of a partial flow: a node alone gives its output as `output`; a flow from a node
/// keeps the outputs of flow inputs and of kept nodes (the rest were not run).
fn partial_outputs(doc: &Value, partial: &Partial<'_>, kept: &[String]) -> Value {
    match partial {
        Partial::Node { node, .. } => {
            serde_json::json!({"output": {"type": "object", "reference": format!("${{{node}.output}}")}})
        }
        Partial::From { .. } => {
            let mut out = serde_json::Map::new();
            for (k, o) in doc
                .get("outputs")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
            {
                let source = o
                    .get("reference")
                    .and_then(Value::as_str)
                    .and_then(|r| crate::parse_reference(r).ok())
                    .map(|r| r.node().map(str::to_string));
                if matches!(&source, Some(None))
                    || matches!(&source, Some(Some(n)) if kept.contains(n))
                {
                    out.insert(k, o);
                }
            }
            Value::Object(out)
        }
    }
}

/// A flow file for a partial test, and whether the variant asked for still applies to it.
#[derive(Clone, Debug, PartialEq)]
pub struct PartialFlow {
    pub text: String,
    pub variant_applies: bool,
}

/// The settings a node runs with: itself, or each of its variants' nodes.
fn bodies<'d>(doc: &'d Value, n: &'d Value) -> Vec<&'d Value> {
    let name = n.get("name").and_then(Value::as_str).unwrap_or_default();
    if n.get("use_variants").and_then(Value::as_bool) != Some(true) {
        return vec![n];
    }
    doc.get("node_variants")
        .and_then(|v| v.get(name))
        .and_then(|v| v.get("variants"))
        .and_then(Value::as_object)
        .map(|vs| vs.values().filter_map(|v| v.get("node")).collect())
        .unwrap_or_default()
}

/// The settings of variant `id` of a node (its default when `None`).
fn variant_body(doc: &Value, name: &str, id: Option<&str>) -> Option<Value> {
    let spec = doc.get("node_variants")?.get(name)?;
    let vs = spec.get("variants")?.as_object()?;
    let id = id
        .map(str::to_string)
        .or_else(|| {
            spec.get("default_variant_id")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .or_else(|| vs.keys().next().cloned())?;
    vs.get(&id)?.get("node").cloned()
}

fn collect_texts(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Object(m) => m.values().for_each(|x| collect_texts(x, out)),
        Value::Array(a) => a.iter().for_each(|x| collect_texts(x, out)),
        _ => {}
    }
}

/// Replace, in a node's inputs and condition, each reference to a node not kept with the value
/// it gave in the last test.
fn substitute(
    node: &mut Value,
    kept: &[String],
    upstream: &serde_json::Map<String, Value>,
) -> Result<(), Error> {
    let replace = |v: &mut Value| -> Result<(), Error> {
        let Some(text) = v.as_str() else {
            return Ok(());
        };
        let Ok(r) = crate::parse_reference(text) else {
            return Ok(());
        };
        let Some(source) = r.node() else {
            return Ok(());
        };
        if kept.iter().any(|k| k == source) {
            return Ok(());
        }
        let Some(mut value) = upstream.get(source).cloned() else {
            return Err(Error {
                line: 1,
                column: 1,
                message: format!(
                    "the last test has no output of node '{source}', which this part of the flow reads; test the whole line first"
                ),
            });
        };
        for seg in &r.path {
            value = match seg {
                crate::PathSeg::Key(k) => value.get(k).cloned().unwrap_or(Value::Null),
                crate::PathSeg::Index(i) => usize::try_from(*i)
                    .ok()
                    .and_then(|i| value.get(i).cloned())
                    .unwrap_or(Value::Null),
            };
        }
        *v = value;
        Ok(())
    };
    if let Some(inputs) = node.get_mut("inputs").and_then(Value::as_object_mut) {
        for v in inputs.values_mut() {
            replace(v)?;
        }
    }
    if let Some(when) = node.pointer_mut("/activate/when") {
        replace(when)?;
    }
    Ok(())
}

#[cfg(test)]
mod partial_tests {
    use super::*;
    use serde_json::json;

    const FLOW: &str = "\
inputs:
  q:
    type: string
outputs:
  first:
    type: string
    reference: ${a.output}
  last:
    type: string
    reference: ${c.output}
nodes:
- name: a
  type: python
  source: {type: code, path: a.py}
  inputs: {x: '${inputs.q}'}
- name: b
  type: python
  source: {type: code, path: b.py}
  inputs: {x: '${a.output.text}', y: 3}
- name: c
  type: python
  source: {type: code, path: c.py}
  inputs: {x: '${b.output}', q: '${inputs.q}'}
";

    #[test]
    fn rerunning_from_a_node_reads_the_earlier_nodes_last_outputs() {
        let upstream = json!({"a": {"text": "from a"}})
            .as_object()
            .cloned()
            .expect("map");
        let text = partial_flow(
            FLOW,
            &Partial::From {
                node: "b",
                upstream: &upstream,
            },
            None,
        )
        .expect("builds")
        .text;
        let doc = flowrt_yaml::parse(&text).expect("parses").to_json();
        let names: Vec<&str> = doc["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(doc["nodes"][0]["inputs"], json!({"x": "from a", "y": 3}));
        assert_eq!(
            doc["nodes"][1]["inputs"],
            json!({"x": "${b.output}", "q": "${inputs.q}"})
        );
        assert_eq!(
            doc["outputs"]
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["last".to_string()])
        );
        let none = serde_json::Map::new();
        let e = partial_flow(
            FLOW,
            &Partial::From {
                node: "b",
                upstream: &none,
            },
            None,
        )
        .expect_err("no output of a");
        assert!(e.message.contains("no output of node 'a'"), "{e}");
    }

    #[test]
    fn one_node_runs_alone_with_the_inputs_given() {
        let inputs = json!({"x": "typed", "y": 4})
            .as_object()
            .cloned()
            .expect("map");
        let text = partial_flow(
            FLOW,
            &Partial::Node {
                node: "b",
                inputs: &inputs,
            },
            None,
        )
        .expect("builds")
        .text;
        let doc = flowrt_yaml::parse(&text).expect("parses").to_json();
        assert_eq!(doc["nodes"].as_array().map(Vec::len), Some(1));
        assert_eq!(doc["nodes"][0]["inputs"], json!({"x": "typed", "y": 4}));
        assert_eq!(
            doc["outputs"],
            json!({"output": {"type": "object", "reference": "${b.output}"}})
        );
    }
}
