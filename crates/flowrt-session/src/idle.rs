//! Idle shutdown: the decision alone, so it is tested without clocks or processes.

use std::time::Duration;

/// Should a session be stopped for idleness? `idle_timeout` 0 disables it; a session with a run in
/// progress is never idle.
pub fn should_stop(idle_timeout: Duration, idle_for: Duration, running: usize) -> bool {
    !idle_timeout.is_zero() && running == 0 && idle_for >= idle_timeout
}

/// Parse `30m`, `2s`, `1h`, `90` (seconds) or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = t
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| (&t[..i], &t[i..]))
        .unwrap_or((t, "s"));
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a duration; use e.g. 30m, 2h, 90s, 7d or 0"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("'{s}': unknown unit '{unit}'; use s, m, h or d")),
    };
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("'{s}' is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides() {
        let s = Duration::from_secs;
        assert!(should_stop(s(2), s(3), 0));
        assert!(!should_stop(s(2), s(1), 0));
        assert!(!should_stop(s(2), s(300), 1), "a busy session is not idle");
        assert!(!should_stop(s(0), s(10_000), 0), "0 disables idle shutdown");
    }

    #[test]
    fn parses() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("3d"), Ok(Duration::from_secs(3 * 86400)));
        assert!(parse_duration("3w").is_err());
    }
}
