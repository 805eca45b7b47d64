//! Jinja2-compatible prompt rendering on minijinja: promptflow's settings (`trim_blocks`,
//! `keep_trailing_newline`, no `lstrip_blocks`, no autoescape), Python-style value printing and the
//! Jinja2 flavours of the filters where minijinja's differ.

use crate::error::ToolError;
use crate::pyfmt::{py_float_repr, py_str, ListStyle};
use indexmap::IndexMap;
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};
use std::sync::OnceLock;

fn build_env(lists: ListStyle) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_keep_trailing_newline(true);
    env.set_lstrip_blocks(false);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(move |out, _state, value| {
        if value.is_undefined() {
            return Ok(());
        }
        out.write_str(&py_str(value, lists))
            .map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()))
    });
    env.add_filter("string", |v: Value| py_str(&v, ListStyle::Repr));
    env.add_filter("join", join);
    env.add_filter("title", |v: Value| title(&py_str(&v, ListStyle::Repr)));
    env.add_filter("round", round);
    env.add_filter("replace", replace);
    env.add_filter("tojson", tojson);
    env.add_filter("wordcount", |v: Value| {
        // Jinja2 counts runs of word characters (`\w+`).
        let text = py_str(&v, ListStyle::Repr);
        text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .count()
    });
    env.add_filter("center", |v: Value, width: Option<usize>| {
        // Python's str.center: extra padding goes to the right when it cannot split evenly.
        let text = py_str(&v, ListStyle::Repr);
        let width = width.unwrap_or(80);
        let len = text.chars().count();
        if width <= len {
            return text;
        }
        let pad = width - len;
        let left = pad / 2 + (pad & width & 1);
        format!("{}{}{}", " ".repeat(left), text, " ".repeat(pad - left))
    });
    env
}

fn env_for(lists: ListStyle) -> &'static Environment<'static> {
    static REPR: OnceLock<Environment<'static>> = OnceLock::new();
    static CHAT: OnceLock<Environment<'static>> = OnceLock::new();
    match lists {
        ListStyle::Repr => REPR.get_or_init(|| build_env(ListStyle::Repr)),
        ListStyle::ChatLines => CHAT.get_or_init(|| build_env(ListStyle::ChatLines)),
    }
}

/// Render a prompt template as promptflow does (Jinja2 sandbox, `trim_blocks=True`,
/// `keep_trailing_newline=True`, `lstrip_blocks` off). Undefined variables render empty.
pub fn render_prompt(
    template: &str,
    vars: &IndexMap<String, serde_json::Value>,
) -> Result<String, ToolError> {
    render_with(template, Value::from_serialize(vars), ListStyle::Repr)
}

pub(crate) fn render_with(
    template: &str,
    ctx: Value,
    lists: ListStyle,
) -> Result<String, ToolError> {
    env_for(lists)
        .render_str(template, ctx)
        .map_err(template_error)
}

fn template_error(err: Error) -> ToolError {
    let line = err.line();
    let mut message = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ToolError::Template { message, line }
}

/// Jinja2 `join(value, d='', attribute=None)`: items printed with Python's `str()`.
fn join(value: Value, sep: Option<String>, kwargs: Kwargs) -> Result<String, Error> {
    let attribute: Option<String> = kwargs.get("attribute")?;
    let sep = match sep {
        Some(s) => s,
        None => kwargs.get::<Option<String>>("d")?.unwrap_or_default(),
    };
    kwargs.assert_all_used()?;
    if value.is_undefined() || value.is_none() {
        return Ok(String::new());
    }
    if let Some(s) = value.as_str() {
        // Jinja2 iterates the characters of a string.
        let chars: Vec<String> = s.chars().map(String::from).collect();
        return Ok(chars.join(&sep));
    }
    let mut parts = Vec::new();
    for item in value.try_iter()? {
        let item = match &attribute {
            Some(attr) => item.get_attr(attr)?,
            None => item,
        };
        parts.push(py_str(&item, ListStyle::Repr));
    }
    Ok(parts.join(&sep))
}

/// Jinja2 `title`: split on runs of `-`, whitespace, `(`, `{`, `[`, `<`; upper-case the first
/// character of every piece and lower-case the rest.
pub(crate) fn title(s: &str) -> String {
    let is_sep = |c: char| c == '-' || c.is_whitespace() || matches!(c, '(' | '{' | '[' | '<');
    let mut out = String::with_capacity(s.len());
    let mut piece = String::new();
    let mut piece_is_sep = false;
    let flush = |piece: &mut String, out: &mut String| {
        let mut chars = piece.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(&chars.as_str().to_lowercase());
        }
        piece.clear();
    };
    for c in s.chars() {
        let sep = is_sep(c);
        if !piece.is_empty() && sep != piece_is_sep {
            flush(&mut piece, &mut out);
        }
        piece_is_sep = sep;
        piece.push(c);
    }
    flush(&mut piece, &mut out);
    out
}

/// Jinja2 `round(value, precision=0, method='common')`: `common` rounds like Python's `round`
/// (an int stays an int), `ceil`/`floor` always return a float.
fn round(
    value: Value,
    precision: Option<i32>,
    method: Option<String>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let precision = match precision {
        Some(p) => p,
        None => kwargs.get::<Option<i32>>("precision")?.unwrap_or(0),
    };
    let method = match method {
        Some(m) => m,
        None => kwargs
            .get::<Option<String>>("method")?
            .unwrap_or_else(|| "common".into()),
    };
    kwargs.assert_all_used()?;
    if !matches!(method.as_str(), "common" | "ceil" | "floor") {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "method must be common, ceil or floor",
        ));
    }
    if value.kind() != ValueKind::Number && value.kind() != ValueKind::Bool {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("type {} doesn't define __round__ method", value.kind()),
        ));
    }
    if method == "common" && (value.is_integer() || value.kind() == ValueKind::Bool) {
        let i = i64::try_from(value.clone()).unwrap_or(0);
        if precision >= 0 {
            return Ok(Value::from(i));
        }
        let factor = 10f64.powi(-precision);
        let r = round_half_even(i as f64 / factor) * factor;
        return Ok(Value::from(r as i64));
    }
    let f = f64::try_from(value)?;
    let out = match method.as_str() {
        "common" => py_round(f, precision),
        other => {
            let factor: f64 = format!("1e{precision}").parse().unwrap_or(1.0);
            let scaled = f * factor;
            let r = if other == "ceil" {
                scaled.ceil()
            } else {
                scaled.floor()
            };
            r / factor
        }
    };
    Ok(Value::from(out))
}

fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// Python's `round(float, ndigits)`: correctly rounded on the exact binary value, ties to even.
pub(crate) fn py_round(f: f64, ndigits: i32) -> f64 {
    if !f.is_finite() {
        return f;
    }
    if ndigits >= 0 {
        let digits = ndigits.min(330) as usize;
        format!("{f:.digits$}").parse().unwrap_or(f)
    } else {
        let factor: f64 = format!("1e{}", -ndigits).parse().unwrap_or(1.0);
        round_half_even(f / factor) * factor
    }
}

/// Jinja2 `replace(s, old, new, count=None)` on `str(value)`.
fn replace(value: Value, old: String, new: String, count: Option<usize>) -> String {
    let s = py_str(&value, ListStyle::Repr);
    match count {
        Some(n) => s.replacen(&old, &new, n),
        None => s.replace(&old, &new),
    }
}

/// Jinja2 `tojson(value, indent=None)`: `json.dumps(sort_keys=True)` made HTML-safe.
fn tojson(value: Value, indent: Option<usize>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match indent {
        Some(i) => Some(i),
        None => kwargs.get::<Option<usize>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot serialize to JSON: {e}"),
        )
    })?;
    let mut out = String::new();
    py_json_dump(&mut out, &json, indent, 0, true);
    let safe = out
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\'', "\\u0027");
    Ok(Value::from_safe_string(safe))
}

/// `json.dumps` with Python's defaults (`ensure_ascii=True`, `", "`/`": "` separators, or `","`
/// and newlines when indenting).
pub(crate) fn py_json_dump(
    out: &mut String,
    v: &serde_json::Value,
    indent: Option<usize>,
    level: usize,
    sort_keys: bool,
) {
    use serde_json::Value as J;
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64().unwrap_or(0.0);
                let r = py_float_repr(f);
                out.push_str(match r.as_str() {
                    "inf" => "Infinity",
                    "-inf" => "-Infinity",
                    "nan" => "NaN",
                    other => other,
                });
            } else {
                out.push_str(&n.to_string());
            }
        }
        J::String(s) => json_ascii_string(out, s),
        J::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                py_json_dump(out, item, indent, level + 1, sort_keys);
            }
            newline(out, level);
            out.push(']');
        }
        J::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            if sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                json_ascii_string(out, k);
                out.push_str(": ");
                py_json_dump(out, item, indent, level + 1, sort_keys);
            }
            newline(out, level);
            out.push('}');
        }
    }
}

fn json_ascii_string(out: &mut String, s: &str) {
    out.push_str(&flowrt_flow::pyvalue::json_string(s));
}

/// The variables a prompt template reads that it does not set itself, in the order they first
/// appear: the inputs of an llm or prompt node, as promptflow's tool-meta generation finds them.
/// A template that does not parse is its error, with the line when known.
pub fn template_variables(template: &str) -> Result<Vec<String>, ToolError> {
    let env = env_for(ListStyle::Repr);
    let tmpl = env.template_from_str(template).map_err(template_error)?;
    let mut names: Vec<String> = tmpl.undeclared_variables(false).into_iter().collect();
    // Names the environment provides (`range`, `loop`, ...) are not inputs.
    names.retain(|n| env.globals().all(|(g, _)| g != n.as_str()));
    names.sort_by_key(|n| (first_use(template, n), n.clone()));
    Ok(names)
}

/// Where `name` is first read in a template, as a whole word: the order a reader sees inputs.
fn first_use(template: &str, name: &str) -> usize {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut from = 0;
    while let Some(at) = template[from..].find(name) {
        let start = from + at;
        let end = start + name.len();
        if !word(template[..start].chars().next_back()) && !word(template[end..].chars().next()) {
            return start;
        }
        from = end;
    }
    usize::MAX
}

#[cfg(test)]
mod variable_tests {
    use super::template_variables;

    #[test]
    fn a_templates_inputs_are_its_undeclared_variables_in_reading_order() {
        let t = "# system:\n{% for x in items %}{{x}} {{ loop.index }}{% endfor %}\n# user:\n{{question}} {{ chat_history | length }}{% set y = 1 %}{{y}}";
        assert_eq!(
            template_variables(t).expect("parses"),
            ["items", "question", "chat_history"]
        );
        let e = template_variables("line one\n{{ oops(").expect_err("does not parse");
        assert!(
            e.to_string().contains("line 2") || format!("{e:?}").contains("Some(2)"),
            "{e:?}"
        );
    }
}
