//! The protocol between the control plane and a session's agent: every request and reply body,
//! typed once here and used by both sides (the agent's handlers and the server's client). The
//! agent answers errors as [`AgentError`]; paths the server names are inside the session's
//! folder, where the agent put them.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// What a session's agent receives from the server before anything else, over a pipe only the
/// server holds (a local agent's stdin) or its join reply (a Ray agent): the connections its
/// flow names, and the session identity's Entra ID service principal, when it has one. Written
/// as a JSON object; a bare JSON list is the connections alone (what earlier servers sent).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionSecrets {
    pub connections: Vec<crate::Connection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra: Option<crate::EntraServicePrincipal>,
}

impl SessionSecrets {
    /// Read the object, or a bare list of connections.
    pub fn from_json(text: &str) -> Result<SessionSecrets, serde_json::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Secrets(SessionSecrets),
            Connections(Vec<crate::Connection>),
        }
        Ok(match serde_json::from_str(text)? {
            Either::Secrets(s) => s,
            Either::Connections(connections) => SessionSecrets {
                connections,
                entra: None,
            },
        })
    }
}

/// `GET /health`: the agent is up, serving `session_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentHealth {
    /// `ok`.
    pub status: String,
    pub session_id: String,
    /// The agent's pid as the server's machine sees it (a waiter outside its PID namespace).
    pub pid: u32,
}

/// `GET /status`: what the server's idle shutdown looks at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Lines running now (interactive tests).
    pub running: usize,
    /// Seconds since the last line or run.
    pub idle_seconds: f64,
    pub runs_total: u64,
}

/// `POST /lines` and `/lines/stream`: one line of the session's flow.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LineRequest {
    /// The flow's inputs; missing ones take their defaults.
    #[serde(default)]
    pub inputs: IndexMap<String, Value>,
    /// Answer the line's spans too ([`crate::responses::LineResult::spans`]), named so: the
    /// server exports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::TraceAs>,
    /// The connections to use from this line on, in place of those the agent holds: a
    /// deployment's server sends them again after their owner changes one, so a rotated key
    /// is used without restarting the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<crate::Connection>>,
}

/// `POST /batch`'s answer: the run has recorded itself (or is still opening its flow).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchStarted {
    pub name: String,
}

/// `GET /log?offset=N`: the session log from `offset`; ask again from the returned `offset`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogPiece {
    pub text: String,
    pub offset: u64,
}

/// `GET /data/{file}` and `PUT /data/{file}`: where the agent keeps a data file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataKept {
    pub path: std::path::PathBuf,
}

/// Every refusal an agent answers, with a status other than 200.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentError {
    /// `Unauthorized`, `BadInputs`, `Conflict`, `BadRun`, `BatchFailed`, `NotFound`, `RunFiles`,
    /// `Log`, `Packages`, ... (one table with the server's: [`crate::ErrorCode`]).
    pub code: crate::ErrorCode,
    pub message: String,
}

impl AgentError {
    pub fn new(code: crate::ErrorCode, message: impl Into<String>) -> Self {
        AgentError {
            code,
            message: message.into(),
        }
    }
}

/// A quota pacing a run's model calls (see `flowrt_tools::RateStatus`), written each second to
/// the run folder's `pace.json` while one paces it, and sent with the run's tail.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QuotaPace {
    pub endpoint: String,
    /// Requests a second the endpoint's governor lets through.
    pub pace: f64,
    /// This run's calls to it a line, so far.
    pub calls_per_line: f64,
    /// How long this run's calls waited for their turn there, on average.
    pub wait_per_call: Duration,
}

impl QuotaPace {
    /// Seconds left for `lines` more lines at this pace.
    pub fn seconds_for(&self, lines: usize) -> Option<f64> {
        (self.pace > 0.0 && self.calls_per_line > 0.0)
            .then(|| lines as f64 * self.calls_per_line / self.pace)
    }
}

/// `POST /batch` to an agent: a batch run in its session, typed (no command line passes through).
/// Paths are inside the session's folder, where the server put them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub name: String,
    /// The data file (absent: the resumed run's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<std::path::PathBuf>,
    /// Flow input → `${data.COLUMN}`, `${run.outputs.NAME}`, `${run.inputs.COLUMN}` or a
    /// literal.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub column_mapping: IndexMap<String, String>,
    /// An evaluation's base run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_timeout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Python workers (the session's size's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Run only lines `start..end`: one chunk of a run spread over several sessions. Its folder
    /// is under the session's `chunks/`, not among its runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<(usize, usize)>,
    /// A `line_runs.jsonl` of a spread run's chunks, gathered by the server: kept as they are, not
    /// run; the run aggregates them and records itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_records: Option<std::path::PathBuf>,
    /// Record each line's spans (the run folder's `spans.jsonl`), named so: the server exports
    /// them. Absent: none are built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::TraceAs>,
}

/// Where an agent runs a chunk of a spread run: `<session folder>/chunks`, a home of its own so
/// chunks are not listed among the session's runs.
pub const CHUNKS_DIR: &str = "chunks";

/// The files of a run's folder that an agent streams back as they grow (the server appends them
/// to the workspace's copy of the run): line records, node events, the log, the outputs, the
/// data as the run read it, and the lines' spans when it records them.
pub const TAILED_FILES: [&str; 6] = [
    "line_runs.jsonl",
    "node_events.jsonl",
    "logs.txt",
    "flow_outputs/output.jsonl",
    "data.jsonl",
    SPANS_FILE,
];

/// A run folder's recorded spans: one [`crate::trace::LineSpans`] a line.
pub const SPANS_FILE: &str = "spans.jsonl";

/// The small files of a run's folder sent whole once the run has ended.
pub const FINAL_FILES: [&str; 2] = ["metrics.json", "error.json"];

/// The most of one file an agent sends in one [`TailReply`]: the server asks again at once for
/// the rest.
pub const TAIL_CHUNK: u64 = 1024 * 1024;

/// `POST /runs/tail` to an agent: what is new in one of its runs since `offsets`. The server
/// reads a session's runs only this way, never from the session's folder, which the session's
/// own code can change (a link there could point anywhere the server may read).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailRequest {
    pub name: String,
    /// A chunk of a spread run (under the session's `chunks/`), not one of its runs.
    #[serde(default)]
    pub chunk: bool,
    /// Bytes of each of [`TAILED_FILES`] the server already has.
    #[serde(default)]
    pub offsets: std::collections::BTreeMap<String, u64>,
    /// Also send these of [`FINAL_FILES`] whole.
    #[serde(default)]
    pub whole: Vec<String>,
}

/// What is new in a run: its record (`run.json`, absent while the run has not recorded itself)
/// and each file's next piece (whole lines only for JSON lines files).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TailReply {
    #[serde(default)]
    pub record: Option<Value>,
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, FilePiece>,
    /// The quota pacing the run's model calls, while one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace: Option<QuotaPace>,
}

/// Part of a run file: its text from the requested offset, and the offset after it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FilePiece {
    pub text: String,
    pub offset: u64,
}

impl TailReply {
    /// Whether a file's piece filled the chunk: there is more to ask for at once.
    pub fn is_full(&self) -> bool {
        self.files
            .values()
            .any(|p| p.text.len() as u64 >= TAIL_CHUNK / 2)
    }
}

/// `POST /runs/import` to an agent: a workspace run an evaluation or a resume in this session
/// reads (its record and files, from the server's copy), written into the session's folder by
/// the agent itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRun {
    pub name: String,
    /// The run's record as the workspace keeps it.
    pub record: Value,
    /// Its files (`line_runs.jsonl`, `flow_outputs/output.jsonl`, `data.jsonl`), each as the name
    /// of a data file the session was given beforehand (`PUT /data/NAME`, streamed from disk): a
    /// large run never travels in one request, nor is held in memory on either side.
    pub data_files: std::collections::BTreeMap<String, String>,
}

/// Whether `name` may name a file an agent keeps for the server (`data/NAME`): one plain name.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `POST /draft/inspect`: read the code tools of a draft of the session's flow (a gzip-compressed
/// tar of its files, as a push uploads them), in the session, with a timeout: their inputs or
/// where loading them failed ([`crate::responses::ToolMeta`], one per path, in order).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DraftInspect {
    pub archive_base64: String,
    /// `sha256:<hex>` of the draft's files: where the agent keeps the draft, so a check of the
    /// same files unpacks nothing.
    pub hash: String,
    /// The tool files to read (`source.path` of python nodes), relative to the flow folder.
    pub tools: Vec<String>,
    /// Seconds one tool may take to import.
    #[serde(default = "default_inspect_timeout")]
    pub timeout_s: f64,
}

fn default_inspect_timeout() -> f64 {
    10.0
}

/// `POST /draft/line`: one line of a draft of the session's flow (its files as in
/// [`DraftInspect`]), with the session's environment and connections; answers what `/lines` does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DraftLine {
    pub archive_base64: String,
    pub hash: String,
    /// The flow file inside the draft when it is not the folder (a `.prompty`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    #[serde(default)]
    pub inputs: IndexMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::TraceAs>,
    /// `(node, variant id)`: run this variant of its node instead of the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<(String, String)>,
}

/// `POST /flow`: switch the session to another version of its flow (its files as in
/// [`DraftInspect`]) whose environment is the session's: lines from now on run on it, lines
/// already running finish on the old one, whose workers then stop. No restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SwitchFlow {
    pub archive_base64: String,
    pub hash: String,
    /// The flow file inside the snapshot when it is not the folder (a `.prompty`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// `NAME@vN`, for the session log.
    pub reference: String,
}
