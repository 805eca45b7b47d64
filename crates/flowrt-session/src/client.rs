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

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("the agent at {addr} did not answer within {seconds} s")]
    Timeout { addr: String, seconds: f64 },
    #[error("the agent at {addr} sent a malformed reply: {message}")]
    Malformed { addr: String, message: String },
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
