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
