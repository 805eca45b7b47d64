//! Flow input types and the conversion of line values to them, following promptflow 1.18.5
//! (which converts with Python: `int(v)`, `float(v)`, `str(v)`, `json.loads(v)`).

use crate::pyvalue::py_str;
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use std::fmt;

/// The type of a flow input (`type:` in `flow.dag.yaml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    Int,
    Double,
    Bool,
    String,
    List,
    Object,
    /// promptflow's `image`: a path, URL or data URI, or a `{"data:image/<format>;path|url|base64":
    /// value}` dict; Python tools receive an `Image`.
    Image,
}

impl ValueType {
    pub const ALL: [ValueType; 7] = [
        ValueType::Int,
        ValueType::Double,
        ValueType::Bool,
        ValueType::String,
        ValueType::List,
        ValueType::Object,
        ValueType::Image,
    ];

    pub fn parse(s: &str) -> Option<ValueType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Int => "int",
            ValueType::Double => "double",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::List => "list",
            ValueType::Object => "object",
            ValueType::Image => "image",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Convert `value` to `ty` as promptflow does; the error says why (the caller names the input).
pub fn convert_value(ty: ValueType, value: &Value) -> Result<Value, String> {
    let fail = || {
        format!(
            "value {} is not a valid {ty}",
            crate::pyvalue::py_repr(value)
        )
    };
    match ty {
        ValueType::String => Ok(Value::String(py_str(value))),
        ValueType::Int => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value.clone()),
            Value::Number(n) => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.is_finite() {
                    Ok(Value::from(f.trunc() as i64))
                } else {
                    Err(fail())
                }
            }
            Value::Bool(b) => Ok(Value::from(i64::from(*b))),
            Value::String(s) => parse_python_int(s).map(Value::from).ok_or_else(fail),
            _ => Err(fail()),
        },
        ValueType::Double => match value {
            Value::Number(n) => n
                .as_f64()
                .and_then(Number::from_f64)
                .map(Value::Number)
                .ok_or_else(fail),
            Value::Bool(b) => Ok(Value::from(if *b { 1.0 } else { 0.0 })),
            // `float("nan")`, `float("inf")`: kept as flowrt carries such floats.
            Value::String(s) => parse_python_float(s)
                .map(|f| match Number::from_f64(f) {
                    Some(n) => Value::Number(n),
                    None => crate::nonfinite::nonfinite_value(f),
                })
                .ok_or_else(fail),
            other if crate::nonfinite::as_nonfinite(other).is_some() => Ok(other.clone()),
            _ => Err(fail()),
        },
        ValueType::Bool => match value {
            Value::Bool(_) => Ok(value.clone()),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(fail()),
        },
        ValueType::List => match value {
            Value::Array(_) => Ok(value.clone()),
            Value::String(s) => match serde_json::from_str::<Value>(s) {
                Ok(v @ Value::Array(_)) => Ok(v),
                _ => Err(fail()),
            },
            _ => Err(fail()),
        },
        ValueType::Image => match value {
            Value::String(s) => Ok(image_reference(s)),
            Value::Object(o) if is_multimedia_dict(o) => Ok(value.clone()),
            _ => Err(format!(
                "value {} is not a valid image: give a path, a URL, a data URI or a {{\"data:image/<format>;path\": ...}} dict",
                crate::pyvalue::py_repr(value)
            )),
        },
        ValueType::Object => match value {
            Value::String(s) => {
                Ok(serde_json::from_str::<Value>(s).unwrap_or_else(|_| value.clone()))
            }
            _ => Ok(value.clone()),
        },
    }
}

/// promptflow's multimedia dicts: one key `data:image/<format>;path|base64|url`, or (the
/// `openai-vision` format) `{"type": "image_url", "image_url": {"url"}}` /
/// `{"type": "image_file", "image_file": {"path"}}`.
pub fn is_multimedia_dict(o: &serde_json::Map<String, Value>) -> bool {
    let basic = o.len() == 1
        && o.keys().all(|k| {
            k.strip_prefix("data:image/")
                .and_then(|rest| rest.rsplit_once(';'))
                .is_some_and(|(_, kind)| matches!(kind, "path" | "base64" | "url"))
        });
    let vision = o.len() == 2
        && match o.get("type").and_then(Value::as_str) {
            Some("image_url") => o["image_url"].get("url").is_some(),
            Some("image_file") => o.get("image_file").is_some_and(|f| f.get("path").is_some()),
            _ => false,
        };
    basic || vision
}

/// The first image in `value` (anywhere inside it) that names a file rather than carrying its
/// data or a URL: a `;path` dict, an openai-vision `image_file`, or a prompty's
/// `data:image/<fmt>;path: FILE` string. Where inputs come from someone other than the flow's
/// author (a served flow's HTTP clients), such a reference would read a file of the server's.
pub fn file_image_reference(value: &Value) -> Option<String> {
    match value {
        Value::Object(o) if is_multimedia_dict(o) => {
            let path = o
                .iter()
                .find(|(k, _)| k.ends_with(";path"))
                .map(|(_, v)| v)
                .or_else(|| o.get("image_file").and_then(|f| f.get("path")));
            path.map(|p| {
                p.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| p.to_string())
            })
        }
        Value::Object(o) => o.values().find_map(file_image_reference),
        Value::Array(a) => a.iter().find_map(file_image_reference),
        Value::String(s) if s.starts_with("data:image/") && s.contains(";path:") => Some(s.clone()),
        _ => None,
    }
}

/// A string given for an image, as the dict promptflow would read it as: a data URI, a URL, or
/// a path (relative to the flow's folder).
fn image_reference(s: &str) -> Value {
    let mut o = serde_json::Map::new();
    if let Some((head, data)) = s.split_once(',') {
        if let Some(mime) = head
            .strip_prefix("data:")
            .and_then(|h| h.strip_suffix(";base64"))
            .filter(|m| m.starts_with("image/"))
        {
            o.insert(
                format!("data:{mime};base64"),
                Value::String(data.to_string()),
            );
            return Value::Object(o);
        }
    }
    let kind = if s.starts_with("http://") || s.starts_with("https://") {
        "url"
    } else {
        "path"
    };
    o.insert(format!("data:image/*;{kind}"), Value::String(s.to_string()));
    Value::Object(o)
}

/// Python's `int(str)`: optional sign, digits and underscores between digits, surrounding whitespace.
fn parse_python_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    if !clean.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n: i64 = clean.parse().ok()?;
    Some(if neg { -n } else { n })
}

/// Python's `float(str)`.
fn parse_python_float(s: &str) -> Option<f64> {
    let t = s.trim().to_ascii_lowercase();
    // `inf`, `infinity`, `nan` (signed) parse as in Python; see `crate::nonfinite`.
    t.replace('_', "").parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conversions_follow_python() {
        let ok = |t, v: Value| convert_value(t, &v).unwrap();
        assert_eq!(ok(ValueType::Int, json!("41")), json!(41));
        assert_eq!(ok(ValueType::Int, json!(3.7)), json!(3));
        assert!(convert_value(ValueType::Int, &json!("2.0")).is_err());
        assert!(convert_value(ValueType::Int, &json!("seven")).is_err());
        assert_eq!(ok(ValueType::Double, json!(0)), json!(0.0));
        assert_eq!(ok(ValueType::Double, json!("0.25")), json!(0.25));
        let inf = crate::nonfinite::nonfinite_value(f64::INFINITY);
        assert_eq!(
            ok(ValueType::Double, json!("-Infinity")),
            crate::nonfinite::nonfinite_value(f64::NEG_INFINITY)
        );
        assert_eq!(ok(ValueType::Double, json!(" inf ")), inf);
        assert_eq!(ok(ValueType::Double, inf.clone()), inf);
        assert_eq!(ok(ValueType::String, json!(["nan"])), json!("['nan']"));
        assert_eq!(ok(ValueType::String, inf.clone()), json!("inf"));
        assert!(convert_value(ValueType::Int, &inf).is_err());
        assert_eq!(ok(ValueType::Bool, json!("False")), json!(false));
        assert!(convert_value(ValueType::Bool, &json!("yes")).is_err());
        assert_eq!(ok(ValueType::String, json!(42)), json!("42"));
        assert_eq!(ok(ValueType::String, json!(true)), json!("True"));
        assert_eq!(ok(ValueType::String, json!(["a", 1])), json!("['a', 1]"));
        assert_eq!(ok(ValueType::List, json!("[10, 20]")), json!([10, 20]));
        assert!(convert_value(ValueType::List, &json!("not a list")).is_err());
        assert_eq!(ok(ValueType::Object, json!("{\"b\": 1}")), json!({"b": 1}));
        assert_eq!(ok(ValueType::Object, json!("plain")), json!("plain"));
        assert_eq!(ok(ValueType::Object, json!([1])), json!([1]));
    }
}
