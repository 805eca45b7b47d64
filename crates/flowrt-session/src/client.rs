//! The control plane's client for its agents: one typed function per call of the agent protocol
//! ([`flowrt_api::agent`], re-exported here), each a JSON request with the agent's bearer token
//! over one shared reqwest connection pool.

pub use flowrt_api::agent::*;
use flowrt_api::responses::{LineResult, PackageView};
use serde_json::Value;
use std::sync::OnceLock;
use std::time::Duration;

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

/// Send `method path` with an optional JSON body (already encoded) and the agent's token;
/// returns the status and the reply's bytes.
async fn request(
    addr: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(u16, axum::body::Bytes), ClientError> {
    let mut req = http()
        .request(method, format!("http://{addr}{path}"))
        .bearer_auth(token)
        .timeout(timeout);
    if let Some(body) = body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
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
    Ok((status, bytes))
}

/// `POST /lines/stream`: one line, the agent's streamed reply (server-sent events: reply chunks,
/// then the result) handed back as it comes; `timeout` bounds the whole exchange, body included.
pub async fn stream_line(
    addr: &str,
    token: &str,
    req: &LineRequest,
    timeout: Duration,
) -> Result<reqwest::Response, ClientError> {
    http()
        .post(format!("http://{addr}/lines/stream"))
        .bearer_auth(token)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .timeout(timeout)
        .json(req)
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

/// A typed call to an agent: `body` encoded straight to JSON bytes and the reply decoded
/// straight as `T` when the agent answers 200 (an empty reply is `null`), else its status and
/// message as the error. No `Value` in between: a scored line's reply is decoded once.
async fn typed<B: serde::Serialize + ?Sized, T: serde::de::DeserializeOwned>(
    addr: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&B>,
    timeout: Duration,
) -> Result<T, ClientError> {
    let malformed = |message: String| ClientError::Malformed {
        addr: addr.into(),
        message,
    };
    let body = body
        .map(serde_json::to_vec)
        .transpose()
        .map_err(|e| malformed(format!("the request does not encode: {e}")))?;
    let (status, bytes) = request(addr, token, method, path, body, timeout).await?;
    if status != 200 {
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        return Err(ClientError::Refused {
            addr: addr.into(),
            status,
            message: v["message"].as_str().unwrap_or("").to_string(),
        });
    }
    let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
    serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))
}

/// `GET path` of an agent, its reply decoded as `T` (see [`typed`]).
async fn get<T: serde::de::DeserializeOwned>(
    addr: &str,
    token: &str,
    path: &str,
    timeout: Duration,
) -> Result<T, ClientError> {
    typed::<(), T>(addr, token, reqwest::Method::GET, path, None, timeout).await
}

/// `POST path` of an agent with `body` (`None`: no body), its reply decoded as `T`.
async fn post<B: serde::Serialize + ?Sized, T: serde::de::DeserializeOwned>(
    addr: &str,
    token: &str,
    path: &str,
    body: Option<&B>,
    timeout: Duration,
) -> Result<T, ClientError> {
    typed(addr, token, reqwest::Method::POST, path, body, timeout).await
}

/// `GET /health`: the agent's answer, when it answers.
pub async fn health(addr: &str, token: &str) -> Result<AgentHealth, ClientError> {
    get(addr, token, "/health", Duration::from_secs(2)).await
}

/// `GET /status`: how busy and how idle the agent is.
pub async fn status(addr: &str, token: &str) -> Result<AgentStatus, ClientError> {
    get(addr, token, "/status", Duration::from_secs(2)).await
}

/// `POST /lines`: run one line; bad inputs are [`ClientError::Refused`] with status 400. The
/// reply is read as `T`: a [`LineResult`], or a type that keeps parts of it as raw JSON.
pub async fn run_line<T: serde::de::DeserializeOwned>(
    addr: &str,
    token: &str,
    req: &LineRequest,
    timeout: Duration,
) -> Result<T, ClientError> {
    post(addr, token, "/lines", Some(req), timeout).await
}

/// `POST /batch`: start a batch run in the session; a run refused on its inputs is
/// [`ClientError::Refused`] with status 400 and the reason.
pub async fn start_batch(
    addr: &str,
    token: &str,
    req: &BatchRequest,
    timeout: Duration,
) -> Result<BatchStarted, ClientError> {
    post(addr, token, "/batch", Some(req), timeout).await
}

/// `POST /batch/{name}/cancel`: stop a batch run, keeping its finished lines.
pub async fn cancel_batch(
    addr: &str,
    token: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), ClientError> {
    let path = format!("/batch/{name}/cancel");
    let _: Value = post(addr, token, &path, None::<&()>, timeout).await?;
    Ok(())
}

/// `POST /shutdown`: ask the agent to stop.
pub async fn shutdown(addr: &str, token: &str) -> Result<(), ClientError> {
    let _: Value = post(
        addr,
        token,
        "/shutdown",
        None::<&()>,
        Duration::from_secs(2),
    )
    .await?;
    Ok(())
}

/// `GET /log?offset=N`: the session log from `offset`.
pub async fn log(addr: &str, token: &str, offset: u64) -> Result<LogPiece, ClientError> {
    let path = format!("/log?offset={offset}");
    get(addr, token, &path, Duration::from_secs(30)).await
}

/// `GET /packages`: the packages of the session's environment, listed where it is.
pub async fn packages(addr: &str, token: &str) -> Result<Vec<PackageView>, ClientError> {
    get(addr, token, "/packages", Duration::from_secs(60)).await
}

/// What is new in a run of the agent's session (`POST /runs/tail`).
pub async fn tail(addr: &str, token: &str, req: &TailRequest) -> Result<TailReply, ClientError> {
    post(
        addr,
        token,
        "/runs/tail",
        Some(req),
        Duration::from_secs(30),
    )
    .await
}

/// Give the agent's session a workspace run to read (`POST /runs/import`).
pub async fn import(addr: &str, token: &str, req: &ImportRun) -> Result<(), ClientError> {
    let _: Value = post(
        addr,
        token,
        "/runs/import",
        Some(req),
        Duration::from_secs(300),
    )
    .await?;
    Ok(())
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
    if let Ok(found) = get::<DataKept>(addr, token, &path, Duration::from_secs(10)).await {
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
    serde_json::from_value::<DataKept>(v)
        .map(|d| d.path)
        .map_err(|e| ClientError::Malformed {
            addr: addr.into(),
            message: e.to_string(),
        })
}

/// Read a draft's code tools in the agent's session (`POST /draft/inspect`).
pub async fn inspect_draft(
    addr: &str,
    token: &str,
    req: &flowrt_api::agent::DraftInspect,
) -> Result<Vec<flowrt_api::responses::ToolMeta>, ClientError> {
    // Each tool has its own timeout; the first check also starts the session's Python.
    let within = Duration::from_secs_f64(req.timeout_s * req.tools.len().max(1) as f64 + 30.0);
    post(addr, token, "/draft/inspect", Some(req), within).await
}

/// Run one line of a draft in the agent's session (`POST /draft/line`).
pub async fn draft_line(
    addr: &str,
    token: &str,
    req: &flowrt_api::agent::DraftLine,
    timeout: Duration,
) -> Result<LineResult, ClientError> {
    post(addr, token, "/draft/line", Some(req), timeout).await
}

/// Switch the agent's session to another version of its flow (`POST /flow`).
pub async fn switch_flow(
    addr: &str,
    token: &str,
    req: &flowrt_api::agent::SwitchFlow,
) -> Result<Value, ClientError> {
    // Opening the version starts its Python workers and imports its tools.
    post(addr, token, "/flow", Some(req), Duration::from_secs(120)).await
}

/// The tools the agent's session has installed (`GET /tools`).
pub async fn package_tools(
    addr: &str,
    token: &str,
) -> Result<flowrt_api::responses::PackageTools, ClientError> {
    get(addr, token, "/tools", Duration::from_secs(90)).await
}
