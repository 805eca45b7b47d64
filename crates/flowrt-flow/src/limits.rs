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
    let (mut single, mut double) = (false, false);
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        // Two spaces a level is the usual YAML style; one space a level is the worst case.
        if !single && !double && indent / 2 > MAX_YAML_DEPTH * 2 {
            return Err((
                line_no,
                format!("indented {indent} spaces deep; flowrt reads YAML nested at most {MAX_YAML_DEPTH} levels"),
            ));
        }
        let mut prev = ' ';
        let mut escaped = false;
        for c in raw.chars() {
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
                        if depth > MAX_YAML_DEPTH {
                            return Err((
                                line_no,
                                format!("collections nested more than {MAX_YAML_DEPTH} deep"),
                            ));
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
            prev = c;
        }
    }
    Ok(())
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
    fn huge_files_are_refused() {
        let text = "a".repeat(MAX_YAML_BYTES + 1);
        assert!(check_yaml_limits(&text).is_err());
    }
}
