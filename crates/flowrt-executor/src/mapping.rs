//! Column mapping for batch and evaluation runs: which value each flow input takes on a line,
//! from the data row (`${data.col}`), the base run (`${run.outputs.x}`, `${run.inputs.col}`) or a
//! literal — following promptflow 1.18.5.

use flowrt_flow::reference::reference_body;
use flowrt_flow::Flow;
use indexmap::IndexMap;
use serde_json::{Map, Value};

/// Where a mapped value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MappingSource {
    Data(String),
    RunOutputs(String),
    RunInputs(String),
    Literal(String),
}

/// A checked column mapping (`--column-mapping input='${data.col}'`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColumnMapping {
    pub entries: IndexMap<String, MappingSource>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("--column-mapping '{0}' must be NAME=VALUE, e.g. question='${{data.question}}'")]
    Syntax(String),
    #[error("--column-mapping {input}='{value}': unknown source '{source_name}'; use ${{data.COLUMN}}, ${{run.outputs.NAME}} or ${{run.inputs.COLUMN}}")]
    UnknownSource {
        input: String,
        value: String,
        source_name: String,
    },
    #[error("--column-mapping {input}='{value}' reads the base run, but no base run was given; add --run BASE_RUN")]
    NoBaseRun { input: String, value: String },
    /// A source no line has; `detail` says which and lists what there is.
    #[error("--column-mapping {input}='{value}': {detail}")]
    NoSuchName {
        input: String,
        value: String,
        detail: String,
    },
}

/// The names each source of a run offers on at least one line, for checking a mapping before any
/// line runs.
#[derive(Debug, Default)]
pub struct KnownNames<'a> {
    pub data_columns: Option<&'a std::collections::HashSet<String>>,
    pub base_outputs: Option<&'a std::collections::HashSet<String>>,
    pub base_data_columns: Option<&'a std::collections::HashSet<String>>,
}

/// One line's sources: its data row and, for evaluation runs, the base run's line.
pub struct LineSources<'a> {
    pub data: &'a Map<String, Value>,
    /// Every column any row of the data has. promptflow reads data as a table, so a row without a
    /// column other rows have holds NaN there, which reaches a string input as "nan".
    pub columns: Option<&'a std::collections::HashSet<String>>,
    /// The base run's outputs for this line.
    pub run_outputs: Option<&'a Map<String, Value>>,
    /// The base run's data row for this line.
    pub run_inputs: Option<&'a Map<String, Value>>,
}

impl LineSources<'_> {
    /// A data cell as promptflow's table sees it: the row's value, NaN (as `"nan"`) where the row
    /// lacks a column that other rows have, nothing where no row has it.
    fn cell(&self, col: &str) -> Option<Value> {
        match self.data.get(col) {
            Some(v) => Some(v.clone()),
            None if self.columns.is_some_and(|c| c.contains(col)) => {
                Some(Value::String("nan".into()))
            }
            None => None,
        }
    }
}

/// `NAME=VALUE` pairs (`--column-mapping`) as a map in their order; a pair without `=` or with
/// no name is refused, naming it.
pub fn parse_mapping_pairs<S: AsRef<str>>(
    pairs: &[S],
) -> Result<IndexMap<String, String>, MappingError> {
    let mut map = IndexMap::new();
    for pair in pairs {
        let pair = pair.as_ref();
        let (input, value) = pair
            .split_once('=')
            .ok_or_else(|| MappingError::Syntax(pair.to_string()))?;
        let input = input.trim();
        if input.is_empty() {
            return Err(MappingError::Syntax(pair.to_string()));
        }
        map.insert(input.to_string(), value.to_string());
    }
    Ok(map)
}

impl ColumnMapping {
    /// Parse `NAME=VALUE` pairs (as `--column-mapping` gives them).
    pub fn parse<S: AsRef<str>>(pairs: &[S], has_base_run: bool) -> Result<Self, MappingError> {
        Self::from_map(&parse_mapping_pairs(pairs)?, has_base_run)
    }

    /// A mapping from flow input to `${data.COLUMN}`, `${run.outputs.NAME}`,
    /// `${run.inputs.COLUMN}` or a literal, as a request carries it.
    pub fn from_map(
        map: &IndexMap<String, String>,
        has_base_run: bool,
    ) -> Result<Self, MappingError> {
        let mut entries = IndexMap::new();
        for (input, value) in map {
            let (input, value) = (input.clone(), value.as_str());
            if input.is_empty() || input.contains('=') {
                return Err(MappingError::Syntax(format!("{input}={value}")));
            }
            let source = match reference_body(value) {
                None => MappingSource::Literal(value.to_string()),
                Some(body) => {
                    let (head, rest) = body.split_once('.').unwrap_or((body, ""));
                    match (head, rest.split_once('.')) {
                        ("data", _) if !rest.is_empty() => MappingSource::Data(rest.to_string()),
                        ("run", Some(("outputs", name))) => {
                            MappingSource::RunOutputs(name.to_string())
                        }
                        ("run", Some(("inputs", name))) => {
                            MappingSource::RunInputs(name.to_string())
                        }
                        _ => {
                            return Err(MappingError::UnknownSource {
                                input,
                                value: value.to_string(),
                                source_name: head.to_string(),
                            })
                        }
                    }
                }
            };
            if matches!(
                source,
                MappingSource::RunOutputs(_) | MappingSource::RunInputs(_)
            ) && !has_base_run
            {
                return Err(MappingError::NoBaseRun {
                    input,
                    value: value.to_string(),
                });
            }
            entries.insert(input, source);
        }
        Ok(ColumnMapping { entries })
    }

    /// Literal values that look like a reference but do not parse as one (`'${data.q'`): every line
    /// would get the text itself, which is rarely what was meant. `(input, value)` pairs.
    pub fn suspicious_literals(&self) -> Vec<(&str, &str)> {
        self.entries
            .iter()
            .filter_map(|(input, source)| match source {
                MappingSource::Literal(v) if v.contains("${") => Some((input.as_str(), v.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Fail before any line runs when a mapping reads a column or output that no line has (a typo
    /// would otherwise fail every line, one by one). Sources given as `None` are not checked.
    pub fn check_names(&self, known: &KnownNames<'_>) -> Result<(), MappingError> {
        for (input, source) in &self.entries {
            let (set, place, what, name, prefix) = match source {
                MappingSource::Data(c) => (known.data_columns, "the data", "column", c, "data"),
                MappingSource::RunOutputs(o) => (
                    known.base_outputs,
                    "the base run",
                    "output",
                    o,
                    "run.outputs",
                ),
                MappingSource::RunInputs(c) => (
                    known.base_data_columns,
                    "the base run's data",
                    "column",
                    c,
                    "run.inputs",
                ),
                MappingSource::Literal(_) => continue,
            };
            let Some(set) = set else { continue };
            if !set.contains(name) {
                let mut names: Vec<String> = set.iter().cloned().collect();
                names.sort();
                let listing = if names.is_empty() {
                    format!("it has no {what}s at all")
                } else {
                    format!("its {what}s are: {}", names.join(", "))
                };
                return Err(MappingError::NoSuchName {
                    input: input.clone(),
                    value: format!("${{{prefix}.{name}}}"),
                    detail: format!("{place} has no {what} '{name}' on any line; {listing}"),
                });
            }
        }
        Ok(())
    }

    /// The raw (unconverted) inputs of one line. Mapped inputs read their source; an unmapped
    /// input with a default is left out (its default applies even when the data has a column of
    /// that name); an unmapped input without a default reads the same-named column. A source that
    /// is missing on this line is an error naming it.
    pub fn line_inputs(
        &self,
        flow: &Flow,
        line: &LineSources<'_>,
    ) -> Result<IndexMap<String, Value>, String> {
        let mut out = IndexMap::new();
        for (input, source) in &self.entries {
            let value = match source {
                MappingSource::Literal(s) => Value::String(s.clone()),
                MappingSource::Data(col) => line
                    .cell(col)
                    .ok_or_else(|| format!("input '{input}': the data has no column '{col}'"))?,
                MappingSource::RunOutputs(name) => line
                    .run_outputs
                    .ok_or_else(|| {
                        format!("input '{input}': the base run has no completed line here")
                    })?
                    .get(name)
                    .cloned()
                    .ok_or_else(|| {
                        format!("input '{input}': the base run has no output '{name}'")
                    })?,
                MappingSource::RunInputs(col) => line
                    .run_inputs
                    .ok_or_else(|| format!("input '{input}': the base run has no line here"))?
                    .get(col)
                    .cloned()
                    .ok_or_else(|| {
                        format!("input '{input}': the base run's data has no column '{col}'")
                    })?,
            };
            out.insert(input.clone(), value);
        }
        for (name, decl) in &flow.inputs {
            if out.contains_key(name) || decl.default.is_some() {
                continue;
            }
            if let Some(v) = line.cell(name) {
                out.insert(name.clone(), v);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        let m = ColumnMapping::parse(
            &[
                "a=${data.x}",
                "b=${run.outputs.y}",
                "c=${run.inputs.z}",
                "d=plain",
            ],
            true,
        )
        .unwrap();
        assert_eq!(m.entries["a"], MappingSource::Data("x".into()));
        assert_eq!(m.entries["b"], MappingSource::RunOutputs("y".into()));
        assert_eq!(m.entries["c"], MappingSource::RunInputs("z".into()));
        assert_eq!(m.entries["d"], MappingSource::Literal("plain".into()));
        assert_eq!(
            ColumnMapping::parse(&["a=${run.outputs.y}"], false).unwrap_err().to_string(),
            "--column-mapping a='${run.outputs.y}' reads the base run, but no base run was given; add --run BASE_RUN"
        );
        assert!(ColumnMapping::parse(&["a=${foo.x}"], false).is_err());
        assert!(ColumnMapping::parse(&["novalue"], false).is_err());
    }
}

#[cfg(test)]
mod check_tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn a_column_no_row_has_is_named_with_the_columns_there_are() {
        let m = ColumnMapping::parse(&["q=${data.qestion}", "n=3"], false).expect("parse");
        let cols: HashSet<String> = ["question".to_string(), "answer".to_string()].into();
        let err = m
            .check_names(&KnownNames {
                data_columns: Some(&cols),
                ..Default::default()
            })
            .expect_err("typo");
        assert_eq!(
            err.to_string(),
            "--column-mapping q='${data.qestion}': the data has no column 'qestion' on any line; its columns are: answer, question"
        );
        let ok = ColumnMapping::parse(&["q=${data.question}"], false).expect("parse");
        assert!(ok
            .check_names(&KnownNames {
                data_columns: Some(&cols),
                ..Default::default()
            })
            .is_ok());
    }

    #[test]
    fn base_run_outputs_are_checked_too() {
        let m = ColumnMapping::parse(&["a=${run.outputs.answr}"], true).expect("parse");
        let outs: HashSet<String> = ["answer".to_string()].into();
        let err = m
            .check_names(&KnownNames {
                base_outputs: Some(&outs),
                ..Default::default()
            })
            .expect_err("typo");
        assert!(
            err.to_string()
                .contains("the base run has no output 'answr'"),
            "{err}"
        );
    }

    #[test]
    fn an_unclosed_reference_is_flagged_as_a_literal() {
        let m =
            ColumnMapping::parse(&["q=${data.q", "r=${data.r}", "s=plain"], false).expect("parse");
        assert_eq!(m.suspicious_literals(), vec![("q", "${data.q")]);
    }
}

#[cfg(test)]
mod cell_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_row_without_a_column_others_have_holds_nan() {
        let row = json!({"a": 1}).as_object().cloned().unwrap();
        let columns: std::collections::HashSet<String> = ["a".to_string(), "b".to_string()].into();
        let line = LineSources {
            data: &row,
            columns: Some(&columns),
            run_outputs: None,
            run_inputs: None,
        };
        assert_eq!(line.cell("a"), Some(json!(1)));
        assert_eq!(line.cell("b"), Some(json!("nan")));
        assert_eq!(line.cell("zz"), None);
    }
}
