//! `NaN`, `Infinity` and `-Infinity`: Python tools return them and promptflow prints them (its
//! `json.dumps` allows them), but JSON, and so `serde_json::Value`, has no such numbers. Inside
//! flowrt they travel as a one-key object, `{"__flowrt_float__": "nan" | "inf" | "-inf"}` (the
//! Python worker writes and reads that form), and are written back as Python writes them.

use serde_json::Value;
use std::fmt::Write as _;

/// The key of the object standing for a float JSON cannot hold.
pub const NONFINITE_KEY: &str = "__flowrt_float__";

/// The float a marker object stands for, if `v` is one.
pub fn as_nonfinite(v: &Value) -> Option<f64> {
    let Value::Object(m) = v else { return None };
    if m.len() != 1 {
        return None;
    }
    match m.get(NONFINITE_KEY)?.as_str()? {
        "nan" => Some(f64::NAN),
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// The marker object for a float that is not finite.
pub fn nonfinite_value(f: f64) -> Value {
    let text = if f.is_nan() {
        "nan"
    } else if f > 0.0 {
        "inf"
    } else {
        "-inf"
    };
    serde_json::json!({ NONFINITE_KEY: text })
}

/// How Python's `json.dumps` writes a float that is not finite.
pub(crate) fn json_token(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// `serde_json::to_string_pretty`, except that marker objects are written `NaN`, `Infinity`,
/// `-Infinity`, as promptflow prints them.
pub fn to_json_pretty(v: &Value) -> String {
    let mut out = String::new();
    write(v, Some(0), 2, &mut out);
    out
}

/// Python's `json.dumps(v, indent=4, ensure_ascii=False)`, as `pf flow test` prints a result:
/// four spaces a level, `NaN` and the infinities as Python writes them.
pub fn to_json_indent4(v: &Value) -> String {
    let mut out = String::new();
    write(v, Some(0), 4, &mut out);
    out
}

/// `serde_json::to_string` (one line), with marker objects written as `NaN` and the infinities.
pub fn to_json_line(v: &Value) -> String {
    let mut out = String::new();
    write(v, None, 0, &mut out);
    out
}

/// Parse JSON that may hold Python's `NaN`, `Infinity` and `-Infinity` (as [`to_json_line`]
/// writes them); they become marker objects.
pub fn from_json_text(text: &str) -> serde_json::Result<Value> {
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(e) => {
            let rewritten = markers_for_tokens(text);
            if rewritten.len() == text.len() {
                return Err(e);
            }
            serde_json::from_str(&rewritten)
        }
    }
}

/// `text` with every `NaN`, `Infinity`, `-Infinity` outside strings replaced by its marker object.
fn markers_for_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else {
            let token = [("NaN", "nan"), ("-Infinity", "-inf"), ("Infinity", "inf")]
                .into_iter()
                .find(|(t, _)| rest.starts_with(t));
            if let Some((t, name)) = token {
                let _ = write!(out, "{{\"{NONFINITE_KEY}\":\"{name}\"}}");
                rest = &rest[t.len()..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A new line, then `indent` spaces (none when writing one line).
fn newline(indent: Option<usize>, out: &mut String) {
    if let Some(spaces) = indent {
        out.push('\n');
        for _ in 0..spaces {
            out.push(' ');
        }
    }
}

/// `v` at `indent` spaces (`None`: on one line), each level `step` spaces further in.
fn write(v: &Value, indent: Option<usize>, step: usize, out: &mut String) {
    if let Some(f) = as_nonfinite(v) {
        out.push_str(json_token(f));
        return;
    }
    let inner = indent.map(|l| l + step);
    let colon = if indent.is_some() { ": " } else { ":" };
    match v {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(inner, out);
                write(item, inner, step, out);
            }
            newline(indent, out);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(inner, out);
                let _ = write!(out, "{}{colon}", Value::String(k.clone()));
                write(item, inner, step, out);
            }
            newline(indent, out);
            out.push('}');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_like_serde_json_with_python_floats() {
        let v = json!({"a": [1, "x", {}, []], "b": {"c": null}, "n": nonfinite_value(f64::NAN),
                       "i": [nonfinite_value(f64::INFINITY), nonfinite_value(f64::NEG_INFINITY)]});
        let plain = json!({"a": [1, "x", {}, []], "b": {"c": null}});
        assert_eq!(
            to_json_pretty(&plain),
            serde_json::to_string_pretty(&plain).unwrap()
        );
        assert_eq!(to_json_line(&plain), serde_json::to_string(&plain).unwrap());
        assert_eq!(
            to_json_line(&v),
            r#"{"a":[1,"x",{},[]],"b":{"c":null},"n":NaN,"i":[Infinity,-Infinity]}"#
        );
        assert!(to_json_pretty(&v).contains("\"n\": NaN,"));
        assert_eq!(as_nonfinite(&json!({NONFINITE_KEY: "x"})), None);
        assert_eq!(from_json_text(&to_json_line(&v)).unwrap(), v);
        let s = json!({"s": "NaN \" Infinity"});
        assert_eq!(from_json_text(&to_json_line(&s)).unwrap(), s);
    }
}
