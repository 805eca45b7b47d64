//! Errors from loading a flow: every message names the file, the line where it can be found, and
//! what to change.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a flow, with the line it was found on when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    pub fn new(line: Option<usize>, message: impl Into<String>) -> Self {
        Problem {
            line,
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("no flow found at {}\nhint: a flow is a folder holding flow.dag.yaml or flow.flex.yaml (or the path of that file), or a .prompty file", path.display())]
    NotFound { path: PathBuf },
    /// A folder without `flow.dag.yaml` that holds `.prompty` files (which run by their path).
    #[error("no flow.dag.yaml in {}; it holds {}\nhint: a .prompty flow is run by its file, e.g. {}", path.display(), files.join(", "), path.join(files.first().map(String::as_str).unwrap_or("NAME.prompty")).display())]
    PromptyInFolder { path: PathBuf, files: Vec<String> },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: invalid YAML: {message}", path.display())]
    Yaml {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render_problems(path: &std::path::Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match p.line {
            Some(line) => out.push_str(&format!("{}:{line}: {}", path.display(), p.message)),
            None => out.push_str(&format!("{}: {}", path.display(), p.message)),
        }
    }
    out
}

impl FlowError {
    /// The problems, for callers that present them one by one.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            FlowError::Invalid { problems, .. } => problems.clone(),
            other => vec![Problem::new(None, other.to_string())],
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}
