//! A minimal HTTP/1.1 client for talking to agents on 127.0.0.1: one request per connection, JSON
//! in and out. Agents answer small JSON bodies, so this avoids a full HTTP client in the control
//! plane's hot path and its dependency weight.

use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("the agent at {addr} did not answer within {seconds} s")]
    Timeout { addr: String, seconds: f64 },
    #[error("the agent at {addr} sent a malformed reply: {message}")]
    Malformed { addr: String, message: String },
}

/// Send `method path` with an optional JSON body and the agent's token; returns the status and
/// the JSON reply.
pub async fn request(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<(u16, Value), ClientError> {
    let work = async {
        let mut stream =
            tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| ClientError::Connect {
                    addr: addr.into(),
                    message: e.to_string(),
                })?;
        let payload = body.map(Value::to_string).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            payload.len()
        );
        stream
            .write_all([head.as_bytes(), payload.as_bytes()].concat().as_slice())
            .await
            .map_err(|e| ClientError::Connect {
                addr: addr.into(),
                message: e.to_string(),
            })?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| ClientError::Connect {
                addr: addr.into(),
                message: e.to_string(),
            })?;
        parse(addr, &raw)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ClientError::Timeout {
            addr: addr.into(),
            seconds: timeout.as_secs_f64(),
        })?
}

fn parse(addr: &str, raw: &[u8]) -> Result<(u16, Value), ClientError> {
    let bad = |m: &str| ClientError::Malformed {
        addr: addr.into(),
        message: m.into(),
    };
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| bad(&e.to_string()))?
    };
    Ok((status, value))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).ok()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
