//! Python-flavoured printing of template values, so rendered prompts match Jinja2 running in Python:
//! `True`/`None`, floats as `repr(float)`, lists and dicts as their Python `repr`.

use minijinja::value::{Value, ValueKind};
use std::fmt::Write;

/// How a list is printed when it is printed whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListStyle {
    /// Python's `repr(list)`: `['a', 1]`.
    Repr,
    /// promptflow's `ChatInputList.__str__` (Azure OpenAI chat): items' `str()` joined by newlines.
    ChatLines,
}

/// Python's `str(value)`.
pub(crate) fn py_str(value: &Value, lists: ListStyle) -> String {
    let mut out = String::new();
    write_str(&mut out, value, lists);
    out
}

fn write_str(out: &mut String, value: &Value, lists: ListStyle) {
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::String => out.push_str(value.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable if lists == ListStyle::ChatLines => {
            if let Ok(iter) = value.try_iter() {
                for (i, item) in iter.enumerate() {
                    if i > 0 {
                        out.push('\n');
                    }
                    write_str(out, &item, lists);
                }
            }
        }
        _ => write_repr(out, value),
    }
}

fn write_repr(out: &mut String, value: &Value) {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => {
            if value.is_integer() {
                let _ = write!(out, "{value}");
            } else {
                match f64::try_from(value.clone()) {
                    Ok(f) => out.push_str(&py_float_repr(f)),
                    Err(_) => {
                        let _ = write!(out, "{value}");
                    }
                }
            }
        }
        ValueKind::String => out.push_str(&py_str_repr(value.as_str().unwrap_or_default())),
        ValueKind::Bytes => {
            let _ = write!(out, "{value}");
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            if let Ok(iter) = value.try_iter() {
                for (i, item) in iter.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_repr(out, &item);
                }
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            if let Ok(iter) = value.try_iter() {
                for (i, key) in iter.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_repr(out, &key);
                    out.push_str(": ");
                    let item = value.get_item(&key).unwrap_or(Value::UNDEFINED);
                    write_repr(out, &item);
                }
            }
            out.push('}');
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

/// Python's `repr(str)` (shared with the flow engine's value rules).
pub(crate) fn py_str_repr(s: &str) -> String {
    flowrt_flow::pyvalue::str_repr(s)
}

/// Python's `repr(float)`: the shortest round-tripping digits, `1.0` for integral values, scientific
/// notation below 1e-4 and from 1e16 on (`1e-05`, `1e+16`).
pub fn py_float_repr(f: f64) -> String {
    flowrt_flow::pyvalue::float_repr(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (1.0, "1.0"),
            (0.88, "0.88"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1.5e20, "1.5e+20"),
            (123456789012345.6, "123456789012345.6"),
            (-2.5, "-2.5"),
            (100.0, "100.0"),
            (f64::INFINITY, "inf"),
        ];
        for (f, want) in cases {
            assert_eq!(py_float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn str_repr_matches_python() {
        assert_eq!(py_str_repr("a"), "'a'");
        assert_eq!(py_str_repr("it's"), "\"it's\"");
        assert_eq!(py_str_repr("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(py_str_repr("x\ny"), "'x\\ny'");
        assert_eq!(py_str_repr("déjà"), "'déjà'");
    }
}
