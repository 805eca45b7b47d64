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
        // NaN and Infinity are read as promptflow (pandas) reads them.
        let v: Value = flowrt_flow::nonfinite::from_json_text(line)
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
    tabulate(rows.iter_mut(), true);
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

/// Give rows the shape promptflow's pandas tables give them, which flows observe:
/// - a row without a column that other rows have holds NaN there (`"nan"` once it is text);
/// - with `infer_numbers` (JSONL data and a base run's outputs; pandas' JSON reader infers number
///   columns even where promptflow asks for objects, while CSV/TSV cells stay text): a column whose
///   values are all numbers, with some floats or some gaps, holds floats (`20` becomes `20.0`), and
///   its gaps (null or missing) are NaN;
/// - otherwise values stay as they are, null included (a string input sees `"None"`).
pub fn tabulate<'a>(
    rows: impl IntoIterator<Item = &'a mut Map<String, Value>>,
    infer_numbers: bool,
) {
    let mut rows: Vec<&mut Map<String, Value>> = rows.into_iter().collect();
    let mut columns: Vec<String> = Vec::new();
    for row in rows.iter() {
        for k in row.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    for col in &columns {
        let (mut numbers, mut others, mut floats, mut gaps) = (0usize, 0usize, false, false);
        for row in rows.iter() {
            match row.get(col) {
                None | Some(Value::Null) => gaps = true,
                Some(Value::Number(n)) => {
                    numbers += 1;
                    floats |= n.is_f64();
                }
                Some(_) => others += 1,
            }
        }
        let numeric = infer_numbers && numbers > 0 && others == 0;
        let upcast = numeric && (floats || gaps);
        for row in rows.iter_mut() {
            match row.get(col) {
                None => {
                    row.insert(col.clone(), Value::String("nan".into()));
                }
                Some(Value::Null) if numeric => {
                    row.insert(col.clone(), Value::String("nan".into()));
                }
                Some(Value::Number(n)) if upcast && !n.is_f64() => {
                    let f = n.as_f64().and_then(serde_json::Number::from_f64);
                    if let Some(f) = f {
                        row.insert(col.clone(), Value::Number(f));
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(v: Value) -> Vec<Map<String, Value>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_object().unwrap().clone())
            .collect()
    }

    #[test]
    fn without_inference_only_missing_columns_gain_nan() {
        let mut r = rows(json!([{"n": 1, "s": null}, {"n": 2.5}]));
        tabulate(r.iter_mut(), false);
        assert_eq!(
            Value::Array(r.into_iter().map(Value::Object).collect()),
            json!([{"n": 1, "s": null}, {"n": 2.5, "s": "nan"}])
        );
    }

    #[test]
    fn run_outputs_follow_pandas_inference() {
        let mut r = rows(json!([
            {"n": 1, "s": "a", "b": true, "mix": 1, "f": 1, "none": null},
            {"n": 2, "s": null, "mix": "x", "f": 2.5, "none": null},
            {"s": "c", "b": false, "n": null, "mix": 3, "f": 3}
        ]));
        tabulate(r.iter_mut(), true);
        assert_eq!(
            Value::Array(r.into_iter().map(Value::Object).collect()),
            json!([
                {"n": 1.0, "s": "a", "b": true, "mix": 1, "f": 1.0, "none": null},
                {"n": 2.0, "s": null, "mix": "x", "f": 2.5, "none": null, "b": "nan"},
                {"s": "c", "b": false, "n": "nan", "mix": 3, "f": 3.0, "none": "nan"}
            ])
        );
    }
}
