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
    let mut out = Vec::new();
    write(v, Some(0), 2, &mut out);
    text(out)
}

/// Python's `json.dumps(v, indent=4, ensure_ascii=False)`, as `pf flow test` prints a result:
/// four spaces a level, `NaN` and the infinities as Python writes them.
pub fn to_json_indent4(v: &Value) -> String {
    let mut out = Vec::new();
    write(v, Some(0), 4, &mut out);
    text(out)
}

/// `serde_json::to_string` (one line), with marker objects written as `NaN` and the infinities.
pub fn to_json_line(v: &Value) -> String {
    let mut out = Vec::new();
    write(v, None, 0, &mut out);
    text(out)
}

/// The object of `entries`, written as [`to_json_line`] writes it, without building it (a
/// traced line's inputs and outputs are written this way, from the values they borrow).
pub fn object_to_json_line<'a>(entries: impl IntoIterator<Item = (&'a str, &'a Value)>) -> String {
    let mut out = Vec::with_capacity(128);
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_leaf(&key, &mut out);
        out.push(b':');
        write(value, None, 0, &mut out);
    }
    out.push(b'}');
    text(out)
}

/// What the writers wrote: always UTF-8 (serde_json writes the strings, the rest is ASCII).
fn text(out: Vec<u8>) -> String {
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A string, number, boolean or null (or an empty container) as serde_json writes it.
fn json_leaf<T: serde::Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail, and these values always serialize.
    let _ = serde_json::to_writer(&mut *out, v);
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
fn newline(indent: Option<usize>, out: &mut Vec<u8>) {
    if let Some(spaces) = indent {
        out.push(b'\n');
        out.resize(out.len() + spaces, b' ');
    }
}

/// `v` at `indent` spaces (`None`: on one line), each level `step` spaces further in.
fn write(v: &Value, indent: Option<usize>, step: usize, out: &mut Vec<u8>) {
    if let Some(f) = as_nonfinite(v) {
        out.extend_from_slice(json_token(f).as_bytes());
        return;
    }
    let inner = indent.map(|l| l + step);
    let colon: &[u8] = if indent.is_some() { b": " } else { b":" };
    match v {
        Value::Array(items) if !items.is_empty() => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                newline(inner, out);
                write(item, inner, step, out);
            }
            newline(indent, out);
            out.push(b']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                newline(inner, out);
                json_leaf(k, out);
                out.extend_from_slice(colon);
                write(item, inner, step, out);
            }
            newline(indent, out);
            out.push(b'}');
        }
        other => json_leaf(other, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_of_borrowed_entries_is_written_as_the_object_would_be() {
        let v = json!({"t\u{e9}xt \"q\"": "a\nb", "n": nonfinite_value(f64::NAN), "l": [1.5, {"x": null}]});
        let Value::Object(map) = &v else { panic!() };
        let borrowed = object_to_json_line(map.iter().map(|(k, v)| (k.as_str(), v)));
        assert_eq!(borrowed, to_json_line(&v));
        assert_eq!(object_to_json_line([]), "{}");
    }

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
