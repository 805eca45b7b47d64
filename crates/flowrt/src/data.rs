//! Reading batch data files (JSONL, CSV, TSV) into rows.

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// Read every row of a data file. CSV/TSV cells are strings (the flow's input types convert them).
pub fn read_rows(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "csv" => read_delimited(path, b','),
        "tsv" => read_delimited(path, b'\t'),
        "jsonl" | "json" | "" => read_jsonl(path),
        other => bail!(
            "{}: unsupported data format '.{other}'\nhint: use a .jsonl file (one JSON object per line), .csv or .tsv",
            path.display()
        ),
    }
}

fn read_jsonl(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let text = fs_err::read_to_string(path)?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))?;
        match v {
            Value::Object(m) => rows.push(m),
            _ => bail!(
                "{}:{}: each line must be a JSON object like {{\"question\": \"...\"}}",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(rows)
}

fn read_delimited(path: &Path, delimiter: u8) -> Result<Vec<Map<String, Value>>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("{}: no header row", path.display()))?
        .clone();
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
        rows.push(
            headers
                .iter()
                .zip(record.iter())
                .map(|(h, v)| (h.to_string(), Value::String(v.to_string())))
                .collect(),
        );
    }
    Ok(rows)
}
