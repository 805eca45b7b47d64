//! The control plane's client for its agents: JSON requests with the agent's bearer token, over
//! one shared reqwest connection pool.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::OnceLock;
use std::time::Duration;

/// `POST /batch` to an agent: a batch run in its session, typed (no command line passes through).
/// Paths are inside the session's folder, where the server put them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub name: String,
    /// The data file (absent: the resumed run's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<std::path::PathBuf>,
    /// `INPUT=VALUE` pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub column_mapping: Vec<String>,
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
}

/// Where an agent runs a chunk of a spread run: `<session folder>/chunks`, a home of its own so
/// chunks are not listed among the session's runs.
pub const CHUNKS_DIR: &str = "chunks";

/// The files of a run's folder that an agent streams back as they grow (the server appends them
/// to the workspace's copy of the run): line records, node events, the log, the outputs, and the
/// data as the run read it.
pub const TAILED_FILES: [&str; 5] = [
    "line_runs.jsonl",
    "node_events.jsonl",
    "logs.txt",
    "flow_outputs/output.jsonl",
    "data.jsonl",
];

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
    pub pace: Option<flowrt_runtime::batch::QuotaPace>,
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
    /// `line_runs.jsonl`, `flow_outputs/output.jsonl` and `data.jsonl`, as text.
    pub files: std::collections::BTreeMap<String, String>,
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

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("the agent at {addr} did not answer within {seconds} s")]
    Timeout { addr: String, seconds: f64 },
    #[error("the agent at {addr} sent a malformed reply: {message}")]
    Malformed { addr: String, message: String },
    #[error("the agent at {addr} answered {status}: {message}")]
    Refused {
        addr: String,
        status: u16,
        message: String,
    },
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            // Agents are local processes: nothing to proxy, and replies are small JSON.
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

/// Send `method path` with an optional JSON body and the agent's token; returns the status and
/// the JSON reply (`null` for an empty body).
pub async fn request(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<(u16, Value), ClientError> {
    let malformed = |message: String| ClientError::Malformed {
        addr: addr.into(),
        message,
    };
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|e| malformed(format!("bad method {method}: {e}")))?;
    let mut req = http()
        .request(method, format!("http://{addr}{path}"))
        .bearer_auth(token)
        .timeout(timeout);
    if let Some(body) = body {
        req = req.json(body);
    }
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            ClientError::Timeout {
                addr: addr.into(),
                seconds: timeout.as_secs_f64(),
            }
        } else {
            ClientError::Connect {
                addr: addr.into(),
                message: e.to_string(),
            }
        }
    };
    let resp = req.send().await.map_err(failed)?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(failed)?;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?
    };
    Ok((status, value))
}

/// POST a JSON body and hand back the agent's streamed reply (server-sent events) as it comes;
/// `timeout` bounds the whole exchange, body included.
pub async fn stream(
    addr: &str,
    token: &str,
    path: &str,
    body: &Value,
    timeout: Duration,
) -> Result<reqwest::Response, ClientError> {
    http()
        .post(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .timeout(timeout)
        .json(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                ClientError::Timeout {
                    addr: addr.into(),
                    seconds: timeout.as_secs_f64(),
                }
            } else {
                ClientError::Connect {
                    addr: addr.into(),
                    message: e.to_string(),
                }
            }
        })
}

/// A typed call to an agent: the reply decoded as `T` when the agent answers 200, else its
/// status and reply as the error.
async fn typed<T: serde::de::DeserializeOwned>(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<T, ClientError> {
    let (status, v) = request(addr, token, method, path, body, timeout).await?;
    if status != 200 {
        return Err(ClientError::Refused {
            addr: addr.into(),
            status,
            message: v["message"].as_str().unwrap_or("").to_string(),
        });
    }
    serde_json::from_value(v).map_err(|e| ClientError::Malformed {
        addr: addr.into(),
        message: e.to_string(),
    })
}

/// What is new in a run of the agent's session (`POST /runs/tail`).
pub async fn tail(addr: &str, token: &str, req: &TailRequest) -> Result<TailReply, ClientError> {
    let body = serde_json::to_value(req).unwrap_or(Value::Null);
    typed(
        addr,
        token,
        "POST",
        "/runs/tail",
        Some(&body),
        Duration::from_secs(30),
    )
    .await
}

/// Give the agent's session a workspace run to read (`POST /runs/import`).
pub async fn import(addr: &str, token: &str, req: &ImportRun) -> Result<(), ClientError> {
    let body = serde_json::to_value(req).unwrap_or(Value::Null);
    let _: Value = typed(
        addr,
        token,
        "POST",
        "/runs/import",
        Some(&body),
        Duration::from_secs(300),
    )
    .await?;
    Ok(())
}

#[derive(Deserialize)]
struct DataPath {
    path: std::path::PathBuf,
}

/// What to send as a data file: a file of the server's, streamed, or bytes in hand.
pub enum Upload {
    File(std::path::PathBuf),
    Bytes(Vec<u8>),
}

/// Make sure the agent's session has data file `name` (named by its content's hash, so one it
/// has is the same), sending `upload` only when it does not. Where the agent keeps it.
pub async fn ensure_data(
    addr: &str,
    token: &str,
    name: &str,
    upload: Upload,
) -> Result<std::path::PathBuf, ClientError> {
    let path = format!("/data/{name}");
    if let Ok(found) =
        typed::<DataPath>(addr, token, "GET", &path, None, Duration::from_secs(10)).await
    {
        return Ok(found.path);
    }
    let body = match upload {
        Upload::Bytes(bytes) => reqwest::Body::from(bytes),
        // Streamed from disk: a large data file is never held in memory.
        Upload::File(file) => {
            let f = tokio::fs::File::open(&file)
                .await
                .map_err(|e| ClientError::Malformed {
                    addr: addr.into(),
                    message: format!("cannot read data {name}: {e}"),
                })?;
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f))
        }
    };
    let resp = http()
        .put(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(1800))
        .body(body)
        .send()
        .await
        .map_err(|e| ClientError::Connect {
            addr: addr.into(),
            message: e.to_string(),
        })?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if status != 200 {
        return Err(ClientError::Refused {
            addr: addr.into(),
            status,
            message: v["message"].as_str().unwrap_or("").to_string(),
        });
    }
    serde_json::from_value::<DataPath>(v)
        .map(|d| d.path)
        .map_err(|e| ClientError::Malformed {
            addr: addr.into(),
            message: e.to_string(),
        })
}
