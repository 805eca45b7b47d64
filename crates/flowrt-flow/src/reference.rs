//! References: `${inputs.x}`, `${node}`, `${node.output}`, `${node.output.a['k'][0]}`.
//!
//! A string is a reference only when the whole of it is `${...}` with no whitespace inside, as in
//! promptflow; anything else (`"hello ${inputs.x}"`) is a literal.

use std::fmt;

/// One step into a value: a mapping key or a list index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(i64),
}

/// Where a reference points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefSource {
    /// `${inputs.NAME}`
    FlowInput(String),
    /// `${NODE}` or `${NODE.output...}`
    Node(String),
    /// A value written where a reference usually stands (a flow output's `reference: 42`, an
    /// `activate.when: dummy`): promptflow uses the value itself.
    Literal(serde_json::Value),
}

/// A parsed `${...}` reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub source: RefSource,
    /// Steps into the referenced value (after `output` for nodes, after the input name for inputs).
    pub path: Vec<PathSeg>,
    /// `${node.output[0]}` / `${node.output['k']}`: a bracket right after `output`. promptflow 1.18.5
    /// ignores it in flow outputs (the whole output is used) and rejects it in node inputs.
    pub bracket_after_output: bool,
    /// The text as written, for messages.
    pub text: String,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Reference {
    /// The node this reference reads, if any.
    /// A value used as it is, written as `text` in the flow.
    pub fn literal(value: serde_json::Value, text: impl Into<String>) -> Self {
        Reference {
            source: RefSource::Literal(value),
            path: Vec::new(),
            bracket_after_output: false,
            text: text.into(),
        }
    }

    pub fn node(&self) -> Option<&str> {
        match &self.source {
            RefSource::Node(n) => Some(n),
            RefSource::FlowInput(_) | RefSource::Literal(_) => None,
        }
    }
}

/// If `text` is written as a reference (`${...}` as the whole string), the inside of the braces.
pub fn reference_body(text: &str) -> Option<&str> {
    let body = text.strip_prefix("${")?.strip_suffix('}')?;
    if body.is_empty() {
        return None;
    }
    // Whitespace and braces are allowed only inside quoted keys: `${n.output.m['a key']}`.
    let mut quote: Option<char> = None;
    for c in body.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c.is_whitespace() || c == '{' || c == '}' => return None,
            None => {}
        }
    }
    quote.is_none().then_some(body)
}

/// Parse the inside of `${...}` (for flows: `inputs.x` or `node.output...`).
pub fn parse_reference(text: &str) -> Result<Reference, String> {
    let body = reference_body(text).ok_or_else(|| format!("'{text}' is not a reference"))?;
    let (head, rest) = split_head(body);
    if head.is_empty() {
        return Err(format!("reference '{text}' has no name"));
    }
    // `${flow.x}` is promptflow's older spelling of `${inputs.x}` (it still accepts both).
    if head == "inputs" || head == "flow" {
        // promptflow takes everything after `inputs.` as the input's name: `${inputs.x.a}` names
        // an input called "x.a" (and fails as undeclared), it does not read key `a` of `x`.
        let name = rest
            .strip_prefix('.')
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                format!("reference '{text}' names no flow input (write ${{inputs.NAME}})")
            })?;
        return Ok(Reference {
            source: RefSource::FlowInput(name.to_string()),
            path: Vec::new(),
            bracket_after_output: false,
            text: text.to_string(),
        });
    }
    let source = RefSource::Node(head.to_string());
    if rest.is_empty() {
        return Ok(Reference {
            source,
            path: Vec::new(),
            bracket_after_output: false,
            text: text.to_string(),
        });
    }
    let rest = rest.strip_prefix('.').ok_or_else(|| {
        format!("reference '{text}': write ${{{head}.output...}} to read node '{head}'")
    })?;
    let (section, after) = split_head(rest);
    if section != "output" {
        return Err(format!(
            "reference '{text}': unknown section '{section}' of node '{head}' (only 'output' can be referenced)"
        ));
    }
    // promptflow reads `${node.output.}` as the whole output (its property is then empty).
    let after = if after == "." { "" } else { after };
    let path = parse_path(after).map_err(|e| format!("reference '{text}': {e}"))?;
    Ok(Reference {
        source,
        path,
        bracket_after_output: after.starts_with('['),
        text: text.to_string(),
    })
}

/// Split `name.rest` / `name[..]rest` at the first `.` or `[`.
fn split_head(s: &str) -> (&str, &str) {
    match s.find(['.', '[']) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

/// Parse `.a.b['k'][0]` into steps.
pub fn parse_path(mut s: &str) -> Result<Vec<PathSeg>, String> {
    let mut path = Vec::new();
    while !s.is_empty() {
        if let Some(rest) = s.strip_prefix('.') {
            let (name, after) = split_head(rest);
            if name.is_empty() {
                return Err("empty property name".to_string());
            }
            path.push(PathSeg::Key(name.to_string()));
            s = after;
        } else if let Some(rest) = s.strip_prefix('[') {
            let close = find_bracket_end(rest).ok_or_else(|| "unclosed '['".to_string())?;
            let inner = rest[..close].trim();
            path.push(parse_bracket(inner)?);
            s = &rest[close + 1..];
        } else {
            return Err(format!("unexpected text '{s}'"));
        }
    }
    Ok(path)
}

fn find_bracket_end(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == ']' => return Some(i),
            None => {}
        }
    }
    None
}

fn parse_bracket(inner: &str) -> Result<PathSeg, String> {
    for q in ['\'', '"'] {
        if let Some(key) = inner.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return Ok(PathSeg::Key(key.to_string()));
        }
    }
    inner
        .parse::<i64>()
        .map(PathSeg::Index)
        .map_err(|_| format!("'[{inner}]' is neither a quoted key nor an integer index"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_node_paths() {
        let r = parse_reference("${n.output.a['k-ey'][1].b}").unwrap();
        assert_eq!(r.source, RefSource::Node("n".into()));
        assert_eq!(
            r.path,
            vec![
                PathSeg::Key("a".into()),
                PathSeg::Key("k-ey".into()),
                PathSeg::Index(1),
                PathSeg::Key("b".into())
            ]
        );
        assert!(!r.bracket_after_output);
        assert!(
            parse_reference("${n.output[0]}")
                .unwrap()
                .bracket_after_output
        );
        assert_eq!(parse_reference("${n}").unwrap().path, vec![]);
        // As promptflow reads it (issue 21, checked with pf 1.18.5): a trailing `.` after
        // `output` is the whole output; anywhere else an empty name is an error.
        assert_eq!(parse_reference("${n.output.}").unwrap().path, vec![]);
        assert!(parse_reference("${n.output..a}").is_err());
    }

    #[test]
    fn literals_are_not_references() {
        assert!(reference_body("hello ${inputs.x}").is_none());
        assert!(reference_body("${ inputs.x }").is_none());
        assert!(reference_body("${}").is_none());
    }

    #[test]
    fn flow_prefix_reads_a_flow_input() {
        let r = parse_reference("${flow.question}").unwrap();
        assert_eq!(r.source, RefSource::FlowInput("question".into()));
        assert_eq!(r.text, "${flow.question}");
    }

    #[test]
    fn rejects_other_sections() {
        assert!(parse_reference("${n.outputs}").is_err());
        assert!(parse_reference("${inputs}").is_err());
    }
}
