//! Bounds on untrusted YAML before it reaches the parser. A flow file is user input: a few hundred
//! kilobytes of `[` would otherwise keep a parser busy for a minute, on whatever thread called it.

/// The largest flow or prompty file accepted. Real flows are a few kilobytes; templates with long
/// few-shot examples stay far below this.
pub const MAX_YAML_BYTES: usize = 4 * 1024 * 1024;

/// The deepest nesting of flow-style collections (`[` / `{`) or of indentation levels accepted.
/// promptflow's own schemas nest a handful of levels.
pub const MAX_YAML_DEPTH: usize = 64;

/// Where untrusted YAML exceeds a bound: `(line, message)`, line 1-based.
pub fn check_yaml_limits(text: &str) -> Result<(), (usize, String)> {
    if text.len() > MAX_YAML_BYTES {
        return Err((
            1,
            format!(
                "the file is {} bytes; flowrt reads flow files of at most {} bytes",
                text.len(),
                MAX_YAML_BYTES
            ),
        ));
    }
    let mut depth = 0usize;
    let mut refused = None;
    walk(text, |event| match event {
        Walk::Line { quoted: true, .. } => true,
        Walk::Line { line, indent, .. } => {
            // Two spaces a level is the usual YAML style; one space a level is the worst case.
            if indent / 2 > MAX_YAML_DEPTH * 2 {
                refused = Some((
                    line,
                    format!("indented {indent} spaces deep; flowrt reads YAML nested at most {MAX_YAML_DEPTH} levels"),
                ));
                return false;
            }
            true
        }
        Walk::Open { line, .. } => {
            depth += 1;
            if depth > MAX_YAML_DEPTH {
                refused = Some((
                    line,
                    format!("collections nested more than {MAX_YAML_DEPTH} deep"),
                ));
                return false;
            }
            true
        }
        Walk::Close => {
            depth = depth.saturating_sub(1);
            true
        }
    });
    refused.map_or(Ok(()), Err)
}

/// The innermost flow collection (`[` or `{`) still open at `line`/`column` (1-based), as
/// `(bracket, line, column)`: a parse error inside one is usually its missing close.
pub fn unclosed_bracket_at(text: &str, line: usize, column: usize) -> Option<(char, usize, usize)> {
    let mut open: Vec<(char, usize, usize)> = Vec::new();
    walk(text, |event| match event {
        Walk::Line { line: l, .. } => l <= line,
        Walk::Open {
            bracket,
            line: l,
            column: c,
        } => {
            if (l, c) >= (line, column) {
                return false;
            }
            open.push((bracket, l, c));
            true
        }
        Walk::Close => {
            open.pop();
            true
        }
    });
    open.pop()
}

/// `text` with the lines inside a flow collection (`[ ... ]`, `{ ... }` over several lines)
/// indented past the line that opened it, when some are not; `None` when none needs it.
///
/// YAML wants such lines indented more than the block they sit in, and saphyr holds to that,
/// while libyaml (PyYAML, and so promptflow) reads `default: [` ... `]` with the closing bracket
/// under the key. promptflow's own test prompty files are written so. Only the leading spaces of
/// those lines change, so every line keeps its number.
pub fn indent_flow_lines(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let indent_of = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let mut depth = 0usize;
    let mut opener_indent: Option<usize> = None;
    let mut pad: Vec<usize> = vec![0; lines.len()];
    walk(text, |event| {
        match event {
            Walk::Line { line, indent, .. } => {
                if let (Some(base), Some(l)) = (opener_indent, lines.get(line - 1)) {
                    if depth > 0 && !l.trim().is_empty() && indent <= base {
                        pad[line - 1] = base + 1 - indent;
                    }
                }
            }
            Walk::Open { line, .. } => {
                if depth == 0 {
                    opener_indent = lines.get(line - 1).map(|l| indent_of(l));
                }
                depth += 1;
            }
            Walk::Close => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    opener_indent = None;
                }
            }
        }
        true
    });
    if pad.iter().all(|p| *p == 0) {
        return None;
    }
    let out: Vec<String> = lines
        .iter()
        .zip(pad)
        .map(|(l, p)| format!("{}{l}", " ".repeat(p)))
        .collect();
    Some(out.join("\n"))
}

/// What [`walk`] reports, in text order.
enum Walk {
    /// A line starts, indented this many spaces; `quoted` when it continues a quoted scalar.
    Line {
        line: usize,
        indent: usize,
        quoted: bool,
    },
    /// `[` or `{` outside quotes and comments (1-based position).
    Open {
        bracket: char,
        line: usize,
        column: usize,
    },
    /// `]` or `}` outside quotes and comments.
    Close,
}

/// Walk the flow-collection brackets of `text`, skipping quoted scalars and comments, until
/// `visit` returns false. A cheap, approximate reading of YAML's lexical rules: enough to bound
/// nesting before the real parser runs and to point at an unclosed bracket after it fails.
fn walk(text: &str, mut visit: impl FnMut(Walk) -> bool) {
    let (mut single, mut double) = (false, false);
    let mut depth = 0usize;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let quoted = single || double;
        if !visit(Walk::Line {
            line,
            indent,
            quoted,
        }) {
            return;
        }
        let mut prev = ' ';
        let mut escaped = false;
        for (col, c) in raw.chars().enumerate() {
            if double {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    double = false;
                }
            } else if single {
                if c == '\'' {
                    single = false;
                }
            } else {
                match c {
                    '#' if prev.is_whitespace() => break,
                    '"' if depth > 0 || prev.is_whitespace() || prev == ':' => double = true,
                    '\'' if depth > 0 || prev.is_whitespace() || prev == ':' => single = true,
                    '[' | '{' => {
                        depth += 1;
                        let open = Walk::Open {
                            bracket: c,
                            line,
                            column: col + 1,
                        };
                        if !visit(open) {
                            return;
                        }
                    }
                    ']' | '}' => {
                        depth = depth.saturating_sub(1);
                        if !visit(Walk::Close) {
                            return;
                        }
                    }
                    _ => {}
                }
            }
            prev = c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_yaml_passes() {
        let text = "inputs:\n  q: {type: string, default: \"[{\"}\nnodes:\n- name: a\n  inputs: {x: [1, [2, {y: 3}]]}\n  # a comment with [[[[\n";
        assert_eq!(check_yaml_limits(text), Ok(()));
    }

    #[test]
    fn deep_brackets_are_refused_at_once_with_their_line() {
        let text = format!("a: 1\nb: {}\n", "[".repeat(100_000));
        let started = std::time::Instant::now();
        let (line, message) = check_yaml_limits(&text).expect_err("too deep");
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert_eq!(line, 2);
        assert!(message.contains("nested more than 64"), "{message}");
    }

    #[test]
    fn the_innermost_open_bracket_before_a_position_is_found() {
        let text = "a: [1, {b: 2}\nc: \"[\" # [\nd: {e: [x\n";
        assert_eq!(unclosed_bracket_at(text, 2, 1), Some(('[', 1, 4)));
        assert_eq!(unclosed_bracket_at(text, 3, 9), Some(('[', 3, 8)));
        assert_eq!(unclosed_bracket_at(text, 3, 5), Some(('{', 3, 4)));
        assert_eq!(unclosed_bracket_at(text, 3, 4), Some(('[', 1, 4)));
        assert_eq!(unclosed_bracket_at("a: [1]\nb: 2\n", 2, 3), None);
    }

    #[test]
    fn lines_of_a_flow_collection_are_indented_past_their_opener_when_they_are_not() {
        let text = "a:\n  b: [\n      1,\n    2\n  ]\n  c: {x: 1}\n";
        assert_eq!(
            indent_flow_lines(text).as_deref(),
            Some("a:\n  b: [\n      1,\n    2\n   ]\n  c: {x: 1}\n")
        );
        assert_eq!(indent_flow_lines("a: [1,\n  2]\n"), None);
        // A quoted scalar's continuation inside the collection is a line of it too.
        assert_eq!(
            indent_flow_lines("k:\n  v: [\"a\n b\"\n  ]\n").as_deref(),
            Some("k:\n  v: [\"a\n   b\"\n   ]\n")
        );
    }

    #[test]
    fn huge_files_are_refused() {
        let text = "a".repeat(MAX_YAML_BYTES + 1);
        assert!(check_yaml_limits(&text).is_err());
    }
}
