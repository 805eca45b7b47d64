//! Names users give things (runs, flows, users, computes) end up in file names, URLs, references
//! and tables: one rule for all of them, so none can leave a folder or break a path.

/// How long each kind of name may be.
pub const RUN_NAME_MAX: usize = 200;
pub const FLOW_NAME_MAX: usize = 100;
pub const USER_NAME_MAX: usize = 64;

/// `Ok` when `name` is a word of ASCII letters, digits, `_`, `-` and `.`, of 1 to `max`
/// characters, not starting with `.` or `-`; else the message saying so, naming `what`.
pub fn check(what: &str, name: &str, max: usize) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= max
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(80).collect();
        Err(format!(
            "invalid {what} name '{}': use up to {max} letters, digits, '_', '-' and '.' (not leading '.' or '-')",
            shown.escape_debug()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_pass_and_paths_do_not() {
        assert!(check("run", "base_2026-12.v1", RUN_NAME_MAX).is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "-flag", "nul\0", "sp ace"] {
            assert!(check("run", bad, RUN_NAME_MAX).is_err(), "{bad:?}");
        }
        assert!(check("flow", &"a".repeat(101), FLOW_NAME_MAX).is_err());
        assert_eq!(
            check("flow", "a/b", FLOW_NAME_MAX).unwrap_err(),
            "invalid flow name 'a/b': use up to 100 letters, digits, '_', '-' and '.' (not leading '.' or '-')"
        );
    }
}
