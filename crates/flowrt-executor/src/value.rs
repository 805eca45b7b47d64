//! Reading a step path (`.a['k'][0]`) out of a value.

use flowrt_flow::PathSeg;
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("key '{key}' not found (available keys: {available})")]
    MissingKey { key: String, available: String },
    #[error("index {index} is out of range for a list of {len}")]
    OutOfRange { index: i64, len: usize },
    #[error("cannot read {step} from a value of type {kind}")]
    WrongKind { step: String, kind: &'static str },
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "None",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// The value at `path` inside `root` (Python-style negative indexes allowed).
pub fn value_at<'v>(root: &'v Value, path: &[PathSeg]) -> Result<&'v Value, ValueError> {
    let mut cur = root;
    for seg in path {
        cur = match (seg, cur) {
            (PathSeg::Key(k), Value::Object(m)) => {
                m.get(k).ok_or_else(|| ValueError::MissingKey {
                    key: k.clone(),
                    available: m.keys().cloned().collect::<Vec<_>>().join(", "),
                })?
            }
            (PathSeg::Index(i), Value::Array(items)) => {
                let len = items.len();
                let idx = if *i < 0 { *i + len as i64 } else { *i };
                usize::try_from(idx)
                    .ok()
                    .and_then(|u| items.get(u))
                    .ok_or(ValueError::OutOfRange { index: *i, len })?
            }
            (PathSeg::Index(i), Value::Object(m)) => {
                m.get(&i.to_string())
                    .ok_or_else(|| ValueError::MissingKey {
                        key: i.to_string(),
                        available: m.keys().cloned().collect::<Vec<_>>().join(", "),
                    })?
            }
            (seg, other) => {
                let step = match seg {
                    PathSeg::Key(k) => format!("key '{k}'"),
                    PathSeg::Index(i) => format!("index [{i}]"),
                };
                return Err(ValueError::WrongKind {
                    step,
                    kind: kind(other),
                });
            }
        };
    }
    Ok(cur)
}
