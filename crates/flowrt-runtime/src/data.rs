//! Reading batch data files (JSONL, CSV, TSV) into rows: whole ([`read_rows`]) or as lines need
//! them ([`Rows`]), so a batch's memory does not grow with its data.

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Read every row of a data file. CSV/TSV cells are strings (the flow's input types convert them).
pub fn read_rows(path: &Path) -> Result<Vec<Map<String, Value>>> {
    Rows::open(path)?.iter()?.collect()
}

/// Rows one at a time, each checked as it is read.
pub type RowIter = Box<dyn Iterator<Item = Result<Map<String, Value>>> + Send>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Jsonl,
    Delimited(u8),
}

fn format_of(path: &Path) -> Result<Format> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "csv" => Ok(Format::Delimited(b',')),
        "tsv" => Ok(Format::Delimited(b'\t')),
        "jsonl" | "json" | "" => Ok(Format::Jsonl),
        other => bail!(
            "{}: unsupported data format '.{other}'\nhint: use a .jsonl file (one JSON object per line), .csv or .tsv",
            path.display()
        ),
    }
}

/// What pandas makes of a column, learnt over all rows (see [`tabulate`]).
#[derive(Clone, Debug, Default)]
struct ColumnShape {
    numbers: usize,
    others: usize,
    floats: bool,
    gaps: bool,
}

impl ColumnShape {
    fn see(&mut self, v: Option<&Value>) {
        match v {
            None | Some(Value::Null) => self.gaps = true,
            Some(Value::Number(n)) => {
                self.numbers += 1;
                self.floats |= n.is_f64();
            }
            Some(_) => self.others += 1,
        }
    }
}

/// Every column of a table, in the order first seen, with its shape.
#[derive(Clone, Debug, Default)]
struct Shapes {
    columns: Vec<String>,
    shapes: Vec<ColumnShape>,
    index: std::collections::HashMap<String, usize>,
}

impl Shapes {
    /// Learn one row: its columns, and for every column known so far, its value (a row that
    /// lacks a column is a gap there, whether the column was seen before or after it).
    fn learn(&mut self, row: &Map<String, Value>, rows_before: usize) {
        for k in row.keys() {
            if !self.index.contains_key(k) {
                self.index.insert(k.clone(), self.columns.len());
                self.columns.push(k.clone());
                let mut shape = ColumnShape::default();
                // The rows before this one lacked it.
                if rows_before > 0 {
                    shape.gaps = true;
                }
                self.shapes.push(shape);
            }
        }
        for (i, col) in self.columns.iter().enumerate() {
            self.shapes[i].see(row.get(col));
        }
    }

    /// Shape `row` as [`tabulate`] does, from what was learnt over every row.
    fn apply(&self, row: &mut Map<String, Value>, infer_numbers: bool) {
        for (col, s) in self.columns.iter().zip(&self.shapes) {
            let numeric = infer_numbers && s.numbers > 0 && s.others == 0;
            let upcast = numeric && (s.floats || s.gaps);
            fix(row, col, numeric, upcast);
        }
    }
}

/// Make `row`'s value of `col` what pandas shows (see [`tabulate`]).
fn fix(row: &mut Map<String, Value>, col: &str, numeric: bool, upcast: bool) {
    match row.get(col) {
        None => {
            row.insert(col.to_string(), Value::String("nan".into()));
        }
        Some(Value::Null) if numeric => {
            row.insert(col.to_string(), Value::String("nan".into()));
        }
        Some(Value::Number(n)) if upcast && !n.is_f64() => {
            let f = n.as_f64().and_then(serde_json::Number::from_f64);
            if let Some(f) = f {
                row.insert(col.to_string(), Value::Number(f));
            }
        }
        _ => {}
    }
}

/// A batch's data rows, read as its lines need them: a file is read once through to count its
/// rows, check each one and learn its columns' shapes, then again in order as lines run, so
/// memory does not grow with the number of lines.
#[derive(Clone, Debug, Default)]
pub struct Rows(Source);

#[derive(Clone, Debug)]
enum Source {
    /// Rows already in memory.
    Memory(Arc<Vec<Map<String, Value>>>),
    /// A data file.
    File {
        path: PathBuf,
        format: Format,
        len: usize,
        shapes: Arc<Shapes>,
    },
}

impl Default for Source {
    fn default() -> Self {
        Source::Memory(Arc::default())
    }
}

impl From<Vec<Map<String, Value>>> for Rows {
    fn from(rows: Vec<Map<String, Value>>) -> Self {
        Rows(Source::Memory(Arc::new(rows)))
    }
}

impl Rows {
    /// Check data file `path` (a bad row is named with its line) and learn its size and columns.
    pub fn open(path: &Path) -> Result<Rows> {
        let format = format_of(path)?;
        let mut shapes = Shapes::default();
        let mut len = 0;
        for row in raw_rows(path, format)? {
            let row = row?;
            shapes.learn(&row, len);
            len += 1;
        }
        Ok(Rows(Source::File {
            path: path.to_path_buf(),
            format,
            len,
            shapes: Arc::new(shapes),
        }))
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Source::Memory(rows) => rows.len(),
            Source::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every column some row has.
    pub fn columns(&self) -> std::collections::HashSet<String> {
        match &self.0 {
            Source::Memory(rows) => rows.iter().flat_map(|r| r.keys().cloned()).collect(),
            Source::File { shapes, .. } => shapes.columns.iter().cloned().collect(),
        }
    }

    /// The rows in order, shaped as promptflow's tables shape them.
    pub fn iter(&self) -> Result<RowIter> {
        match &self.0 {
            Source::Memory(rows) => {
                let rows = rows.clone();
                Ok(Box::new((0..rows.len()).map(move |i| Ok(rows[i].clone()))))
            }
            Source::File {
                path,
                format,
                shapes,
                ..
            } => {
                let (shapes, infer) = (shapes.clone(), *format == Format::Jsonl);
                Ok(Box::new(raw_rows(path, *format)?.map(move |row| {
                    let mut row = row?;
                    // CSV/TSV rows have every column as text: nothing to shape.
                    if infer {
                        shapes.apply(&mut row, true);
                    }
                    Ok(row)
                })))
            }
        }
    }
}

/// A data file's rows as written (no shaping), one at a time.
fn raw_rows(path: &Path, format: Format) -> Result<RowIter> {
    match format {
        Format::Jsonl => {
            let file = fs_err::File::open(path)?;
            let shown = path.display().to_string();
            let lines = std::io::BufReader::new(file).lines().enumerate();
            Ok(Box::new(lines.filter_map(move |(i, line)| {
                let line = match line {
                    Ok(l) => l,
                    Err(e) => return Some(Err(anyhow::anyhow!("{shown}:{}: {e}", i + 1))),
                };
                if line.trim().is_empty() {
                    return None;
                }
                // NaN and Infinity are read as promptflow (pandas) reads them.
                let v = flowrt_flow::nonfinite::from_json_text(&line)
                    .with_context(|| format!("{shown}:{}: not a JSON object", i + 1));
                Some(match v {
                    Ok(Value::Object(m)) => Ok(m),
                    Ok(_) => Err(anyhow::anyhow!(
                        "{shown}:{}: each line must be a JSON object like {{\"question\": \"...\"}}",
                        i + 1
                    )),
                    Err(e) => Err(e),
                })
            })))
        }
        Format::Delimited(delimiter) => Ok(Box::new(
            read_delimited(path, delimiter)?.into_iter().map(Ok),
        )),
    }
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
    let mut shapes = Shapes::default();
    for (i, row) in rows.iter().enumerate() {
        shapes.learn(row, i);
    }
    for row in rows.iter_mut() {
        shapes.apply(row, infer_numbers);
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
    fn rows_read_from_a_file_are_shaped_as_the_whole_table_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.jsonl");
        // A late column, a gap, a null in a number column, ints beside a float, text.
        let text = [
            r#"{"a": 1, "b": "x", "n": null}"#,
            "",
            r#"{"a": 2.5, "b": "y", "n": 3}"#,
            r#"{"a": 3, "n": 4, "late": true}"#,
        ]
        .join("\n");
        std::fs::write(&path, &text).unwrap();
        let rows = Rows::open(&path).unwrap();
        assert_eq!(rows.len(), 3);
        let streamed: Vec<Map<String, Value>> = rows.iter().unwrap().map(|r| r.unwrap()).collect();
        let mut whole: Vec<Map<String, Value>> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        tabulate(whole.iter_mut(), true);
        assert_eq!(streamed, whole);
        assert_eq!(
            Value::Object(streamed[0].clone()),
            json!({"a": 1.0, "b": "x", "n": "nan", "late": "nan"})
        );
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"a\": 1}\n[2]\n").unwrap();
        let e = Rows::open(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl:2"), "{e}");
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
