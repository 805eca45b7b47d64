//! Untrusted YAML — flow files, prompty front matter, connection files — read into values that
//! know where they were written, so an error can name the line of the offending key or value.
//!
//! Parsing is saphyr's (a maintained YAML 1.2 parser). This crate owns what flowrt needs around
//! it: the bounds applied before the parser sees the text ([`limits`]), one document per file,
//! duplicate keys and unknown aliases as errors, and a small value type ([`Node`]) that the rest
//! of flowrt matches on without depending on saphyr's API.

pub mod edit;
pub mod limits;

use saphyr::{MarkedYaml, Scalar, YamlData};
use serde_json::Value as Json;
use std::fmt;

/// A YAML value and where it starts: 1-based line and column.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: usize,
    pub column: usize,
}

/// What a [`Node`] holds. Scalars are resolved by YAML 1.2's core schema (`true`, `~`, `0x1F`,
/// `.inf`, …); quoted scalars are always strings.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    /// Entries in the order written; keys are unique (a repeated key is a parse error).
    Map(Vec<(Node, Node)>),
}

/// Why a text is not YAML flowrt reads, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (line {} column {})",
            self.message, self.line, self.column
        )
    }
}

impl std::error::Error for Error {}

/// Nodes alias expansion may produce across one file. Real flows use a handful of anchors; the
/// bound stops an "billion laughs" file from expanding into gigabytes.
const ALIAS_NODE_BUDGET: usize = 10_000;

/// Parse a text holding at most one YAML document (an empty text is `null`).
pub fn parse(text: &str) -> Result<Node, Error> {
    let mut docs = parse_documents(text)?;
    if docs.len() > 1 {
        let second = &docs[1];
        return Err(Error {
            line: second.line,
            column: second.column,
            message: "expected a single YAML document, but found another one (a '---' line starts a new document)".to_string(),
        });
    }
    Ok(docs.pop().unwrap_or(Node {
        value: Value::Null,
        line: 1,
        column: 1,
    }))
}

/// Parse every document of a YAML stream, after the bounds of [`limits::check_yaml_limits`].
///
/// A text that fails only because lines inside a flow collection are not indented past their
/// block (which libyaml, and so promptflow, accepts) is read as promptflow reads it.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, Error> {
    if let Err((line, message)) = limits::check_yaml_limits(text) {
        return Err(Error {
            line,
            column: 1,
            message,
        });
    }
    let strict = parse_checked(text);
    match (&strict, limits::indent_flow_lines(text)) {
        (Err(_), Some(lenient)) => parse_checked(&lenient).or(strict),
        _ => strict,
    }
}

/// Parse a text already within the bounds.
fn parse_checked(text: &str) -> Result<Vec<Node>, Error> {
    let mut loader = saphyr::YamlLoader::<MarkedYaml>::default();
    loader.alias_limit(ALIAS_NODE_BUDGET);
    let mut parser = saphyr_parser::Parser::new_from_str(text);
    let scanned = parser.load(&mut loader, true);
    let from_scan = |e: &saphyr::ScanError| {
        let (line, column) = (e.marker().line().max(1), e.marker().col() + 1);
        let mut message = e.info().to_string();
        if message.starts_with("duplicated key") {
            if let Some(key) = key_written_at(text, line, column) {
                message = format!("'{key}' is written twice in one mapping; keep one of them");
            }
        }
        // The parser names the token it choked on; an unclosed `[` or `{` before it is usually
        // what the writer has to fix.
        if let Some((bracket, l, c)) = limits::unclosed_bracket_at(text, line, column) {
            if l < line {
                let close = if bracket == '[' { ']' } else { '}' };
                message.push_str(&format!(
                    ", inside the '{bracket}' opened at line {l} column {c} (is its '{close}' missing?)"
                ));
            }
        }
        Error {
            line,
            column,
            message,
        }
    };
    if let Some(e) = loader.error() {
        return Err(from_scan(e));
    }
    scanned.map_err(|e| from_scan(&e))?;
    loader
        .into_documents()
        .iter()
        .map(|doc| convert(doc, 0))
        .collect()
}

/// The plain or quoted key that starts at `line`/`column` (1-based), for messages.
fn key_written_at(text: &str, line: usize, column: usize) -> Option<String> {
    let rest: String = text
        .lines()
        .nth(line.checked_sub(1)?)?
        .chars()
        .skip(column.checked_sub(1)?)
        .collect();
    let key = rest
        .split(':')
        .next()?
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty() && key.len() <= 200).then(|| key.to_string())
}

fn convert(node: &MarkedYaml<'_>, depth: usize) -> Result<Node, Error> {
    let start = node.span.start;
    let at = |message: String| Error {
        line: start.line().max(1),
        column: start.col() + 1,
        message,
    };
    if depth > limits::MAX_YAML_DEPTH {
        return Err(at(format!(
            "values nested more than {} deep",
            limits::MAX_YAML_DEPTH
        )));
    }
    let value = match &node.data {
        YamlData::Value(scalar) => scalar_value(scalar),
        // A scalar under a tag outside the core schema (`!foo bar`) keeps its text.
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Sequence(items) => Value::Seq(
            items
                .iter()
                .map(|i| convert(i, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        YamlData::Mapping(map) => Value::Map(
            map.iter()
                .map(|(k, v)| Ok((convert(k, depth + 1)?, convert(v, depth + 1)?)))
                .collect::<Result<_, Error>>()?,
        ),
        YamlData::Tagged(_, inner) => return convert(inner, depth),
        YamlData::Alias(_) | YamlData::BadValue => return Err(at(
            "an alias (*name) that names no anchor (&name) before it, or one that expands too far"
                .to_string(),
        )),
    };
    Ok(Node {
        value,
        line: start.line().max(1),
        column: start.col() + 1,
    })
}

fn scalar_value(scalar: &Scalar<'_>) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Int(*i),
        Scalar::FloatingPoint(f) => Value::Float(f.into_inner()),
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

impl Node {
    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node and value of `key` in a mapping: the key knows the line it is written on.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        self.as_mapping()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, v)| (k, v))
    }

    pub fn as_mapping(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_sequence(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    pub fn is_mapping(&self) -> bool {
        matches!(self.value, Value::Map(_))
    }

    /// The line of the key at `path` (mapping keys, outermost first), or of the deepest key of it
    /// that exists: where an error about that setting should point.
    pub fn line_at(&self, path: &[&str]) -> Option<usize> {
        let (first, rest) = path.split_first()?;
        let (key, value) = self.entry(first)?;
        Some(value.line_at(rest).unwrap_or(key.line))
    }

    /// The value as JSON: keys as strings, scalars typed. A float JSON cannot hold (`.nan`,
    /// `.inf`) becomes `null`, as JSON has no such numbers.
    pub fn to_json(&self) -> Json {
        match &self.value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .unwrap_or(Json::Null),
            Value::String(s) => Json::String(s.clone()),
            Value::Seq(items) => Json::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_string(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// A mapping key as the string promptflow would see (`1: x` has key `"1"`).
    pub fn key_string(&self) -> String {
        match &self.value {
            Value::String(s) => s.clone(),
            _ => match self.to_json() {
                Json::String(s) => s,
                Json::Null => "null".to_string(),
                v => v.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_know_their_lines_and_columns() {
        let doc =
            parse("inputs:\n  q:\n    type: string\nnodes:\n- name: a\n  x: [1, 2.5, ~, true]\n")
                .expect("parses");
        let (key, q) = doc
            .get("inputs")
            .and_then(|i| i.entry("q"))
            .expect("inputs.q");
        assert_eq!((key.line, key.column), (2, 3));
        assert_eq!(q.get("type").map(|t| t.line), Some(3));
        let node = &doc.get("nodes").and_then(Node::as_sequence).expect("nodes")[0];
        assert_eq!(node.get("name").map(|n| (n.line, n.column)), Some((5, 9)));
        assert_eq!(
            node.get("x").map(Node::to_json),
            Some(serde_json::json!([1, 2.5, null, true]))
        );
        assert_eq!(doc.line_at(&["inputs", "q", "type"]), Some(3));
        assert_eq!(doc.line_at(&["inputs", "q", "default"]), Some(2));
        assert_eq!(doc.line_at(&["outputs"]), None);
    }

    #[test]
    fn quoted_scalars_stay_strings_and_plain_ones_are_typed() {
        let doc = parse("a: '1'\nb: 1\nc: \"true\"\nd: yes\ne: 0x10\nf: .inf\ng: 2024-01-01\n")
            .expect("parses");
        let json = doc.to_json();
        assert_eq!(json["a"], "1");
        assert_eq!(json["b"], 1);
        assert_eq!(json["c"], "true");
        // YAML 1.2: `yes` is a string, as ruamel (promptflow's YAML reader) reads it.
        assert_eq!(json["d"], "yes");
        assert_eq!(json["e"], 16);
        assert_eq!(json["f"], Json::Null);
        assert!(matches!(doc.get("f").map(|f| &f.value), Some(Value::Float(f)) if f.is_infinite()));
        assert_eq!(json["g"], "2024-01-01");
    }

    #[test]
    fn syntax_errors_say_where() {
        let e = parse("a: 1\nb: [1, 2\nc: 3\n").expect_err("unclosed");
        assert!(e.line >= 2, "{e:?}");
        assert!(
            e.message
                .contains("inside the '[' opened at line 2 column 4 (is its ']' missing?)"),
            "{e:?}"
        );
        let e = parse("a: 1\nb:\n  c: 1\n c: 2\n").expect_err("bad indent");
        assert!(e.line >= 3, "{e:?}");
    }

    #[test]
    fn a_repeated_key_is_an_error_on_its_line() {
        let e = parse("name: a\ntype: b\nname: c\n").expect_err("duplicate");
        assert_eq!(e.line, 3, "{e:?}");
        assert_eq!(
            e.message,
            "'name' is written twice in one mapping; keep one of them"
        );
    }

    #[test]
    fn a_second_document_is_an_error_but_parse_documents_reads_all() {
        let e = parse("a: 1\n---\nb: 2\n").expect_err("two documents");
        assert_eq!(e.line, 3, "{e:?}");
        assert_eq!(parse_documents("a: 1\n---\nb: 2\n").map(|d| d.len()), Ok(2));
        assert_eq!(parse("").map(|n| n.value), Ok(Value::Null));
    }

    #[test]
    fn aliases_expand_within_a_budget() {
        let doc = parse("base: &b {x: 1}\nuse: *b\n").expect("parses");
        assert_eq!(
            doc.get("use").map(Node::to_json),
            Some(serde_json::json!({"x": 1}))
        );
        // Nine levels of ten aliases each would be a billion nodes.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let started = std::time::Instant::now();
        let e = parse(&text).expect_err("expands too far");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(
            e.message.contains("alias") || e.message.contains("limit"),
            "{e:?}"
        );
        assert!(parse("a: *nowhere\n").is_err());
    }

    #[test]
    fn a_flow_collection_closed_under_its_key_reads_as_promptflow_reads_it() {
        // As promptflow's own prompty files write a default list.
        let text = "inputs:\n  history:\n    type: list\n    default: [\n        {\n          \"role\": \"user\"\n        }\n    ]\n  q: 1\n";
        let doc = parse(text).expect("parses");
        assert_eq!(
            doc.get("inputs").map(Node::to_json),
            Some(
                serde_json::json!({"history": {"type": "list", "default": [{"role": "user"}]}, "q": 1})
            )
        );
        // Lines keep their numbers.
        assert_eq!(doc.line_at(&["inputs", "q"]), Some(9));
        // A text that is broken otherwise still reports its own error.
        assert!(parse("a: [\n  1,\nb: 2\n").is_err());
    }

    #[test]
    fn the_bounds_apply_before_parsing() {
        let e = parse(&format!("a: 1\nb: {}\n", "[".repeat(10_000))).expect_err("deep");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("nested more than 64"), "{e:?}");
    }
}
