//! How the CLI shows numbers, times and tables to people: one place, so every command agrees.

use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};

/// A duration for people: `0.42 ms`, `12 ms`, `3.21 s`, `4m 05s`, `2h 03m`. Sub-millisecond lines
/// are common (built-in tools only), so never round them to zero.
pub fn seconds(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "-".into();
    }
    if s < 0.001 {
        format!("{:.2} ms", s * 1e3)
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else if s < 60.0 {
        format!("{s:.2} s")
    } else if s < 3600.0 {
        let whole = s.round() as u64;
        format!("{}m {:02}s", whole / 60, whole % 60)
    } else {
        let whole = s.round() as u64;
        format!("{}h {:02}m", whole / 3600, whole % 3600 / 60)
    }
}

/// An RFC 3339 timestamp as local-free, second-precision text (`2026-12-01 10:20:33`); text that
/// does not parse is shown as it is.
pub fn timestamp(rfc3339: &str) -> String {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => rfc3339.to_string(),
    }
}

/// A plain table (no borders, aligned columns) that fits the terminal when there is one.
/// `right` names the columns to right-align (numbers).
pub fn table(header: &[&str], right: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().map(Cell::new));
    if std::env::var_os("COLUMNS").is_none()
        && !std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        // Piped output keeps whole cells; a terminal wraps them to its width.
        t.set_content_arrangement(ContentArrangement::Disabled);
    }
    for (i, h) in header.iter().enumerate() {
        if let Some(c) = t.column_mut(i) {
            // Flush left, two spaces between columns.
            c.set_padding((0, 2));
            if right.contains(h) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    t
}

/// Print a table with its trailing spaces trimmed (snapshot- and diff-friendly).
pub fn print_table(t: &Table) {
    for line in t.lines() {
        println!("{}", line.trim_end());
    }
}

/// Clip `s` to `n` characters, marking the cut with `…`.
pub fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_never_read_zero() {
        assert_eq!(seconds(0.000_42), "0.42 ms");
        assert_eq!(seconds(0.0123), "12 ms");
        assert_eq!(seconds(3.214), "3.21 s");
        assert_eq!(seconds(245.0), "4m 05s");
        assert_eq!(seconds(7380.0), "2h 03m");
    }

    #[test]
    fn timestamps_read_as_dates() {
        assert_eq!(timestamp("2026-12-01T10:20:33Z"), "2026-12-01 10:20:33");
        assert_eq!(timestamp("soon"), "soon");
    }
}
