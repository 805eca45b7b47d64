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
    let refuse = |message: String| Error {
        line: 1,
        column: 1,
        message,
    };
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
    let refuse = |message: String| Error {
        line: 1,
        column: 1,
        message,
    };
    let doc = flowrt_yaml::parse(text)?;
    let item = doc
        .get("nodes")
        .and_then(|n| n.as_sequence())
        .unwrap_or_default()
        .iter()
        .find(|n| n.get("name").and_then(|v| v.as_str()) == Some(node))
        .ok_or_else(|| refuse(format!("there is no node '{node}'")))?
        .clone();
    let node_path = |rest: &[&str]| {
        let mut p = vec![Seg::Key("nodes".into()), Seg::Named(node.into())];
        p.extend(rest.iter().map(|k| Seg::Key((*k).into())));
        p
    };
    let variants_path = |rest: &[&str]| {
        let mut p = vec![Seg::Key("node_variants".into()), Seg::Key(node.into())];
        p.extend(rest.iter().map(|k| Seg::Key((*k).into())));
        p
    };
    let mut text = text.to_string();
    let uses = item.get("use_variants").and_then(|v| v.as_bool()) == Some(true);
    let mut variants: serde_json::Map<String, Value> = if uses {
        doc.get("node_variants")
            .and_then(|v| v.get(node))
            .and_then(|v| v.get("variants"))
            .map(|v| v.to_json())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default()
    } else {
        // The node's settings become its first variant.
        let mut body = item.to_json();
        if let Some(m) = body.as_object_mut() {
            m.shift_remove("name");
        }
        let keys: Vec<String> = body
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let first = serde_json::json!({"default_variant_id": "variant_0", "variants": {"variant_0": {"node": body}}});
        text = apply(
            &text,
            &Edit::Set {
                path: variants_path(&[]),
                value: first,
            },
        )?;
        for k in keys.iter().rev() {
            text = apply(
                &text,
                &Edit::Remove {
                    path: node_path(&[k]),
                },
            )?;
        }
        text = apply(
            &text,
            &Edit::Set {
                path: node_path(&["use_variants"]),
                value: Value::Bool(true),
            },
        )?;
        let mut m = serde_json::Map::new();
        m.insert("variant_0".into(), serde_json::json!({"node": body}));
        m
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
    let kind = clone
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut copy = None;
    if matches!(kind.as_str(), "llm" | "prompt") {
        if let Some(path) = clone
            .pointer("/source/path")
            .and_then(Value::as_str)
            .map(str::to_string)
        {
            let stem_end = path
                .rfind('.')
                .filter(|i| !path[*i..].contains('/'))
                .unwrap_or(path.len());
            let base = path[..stem_end]
                .split("__variant_")
                .next()
                .unwrap_or(&path[..stem_end]);
            let to = format!("{base}__{id}{}", &path[stem_end..]);
            if let Some(p) = clone.pointer_mut("/source/path") {
                *p = Value::String(to.clone());
            }
            copy = Some((path, to));
        }
    }
    variants.insert(id.clone(), serde_json::json!({"node": clone.clone()}));
    text = apply(
        &text,
        &Edit::Set {
            path: variants_path(&["variants", &id]),
            value: serde_json::json!({"node": clone}),
        },
    )?;
    Ok(AddedVariant { text, id, copy })
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
