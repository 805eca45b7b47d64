//! The one client every server command talks through: where the server is (`--server` /
//! `FLOWRT_SERVER`, default http://127.0.0.1:7878), who we are (`FLOWRT_TOKEN`, or the owner
//! token the local server wrote to FLOWRT_HOME/owner.token), typed calls that send `flowrt_api`
//! request bodies and decode its response types, and one place that turns a refused call into a
//! message with hints.

use anyhow::{anyhow, bail, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// `--server URL`, shared by every command that talks to a server.
#[derive(clap::Args)]
pub struct ServerOpt {
    /// The server's URL (default: FLOWRT_SERVER, else http://127.0.0.1:7878).
    #[arg(long, global = true)]
    pub server: Option<String>,
}

/// Run one command's calls to completion on a runtime of their own (a CLI command is one task).
pub fn block<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// A response whose body the command does not need (it is still read and checked).
pub type Ignored = serde::de::IgnoredAny;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

pub struct Remote {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Remote {
    pub fn from_env(server: Option<&str>, home: &Path) -> Result<Remote> {
        let named = server.map(str::to_string).or_else(|| {
            std::env::var("FLOWRT_SERVER")
                .ok()
                .filter(|s| !s.is_empty())
        });
        let base = named
            .clone()
            .unwrap_or_else(|| DEFAULT_SERVER.to_string())
            .trim_end_matches('/')
            .to_string();
        // A typo here otherwise surfaces later as a token or connection error about a "server"
        // the user never meant.
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!(
                "server '{base}' is not a URL\nhint: --server and FLOWRT_SERVER take the server's address, like {DEFAULT_SERVER}"
            );
        }
        let token = match std::env::var("FLOWRT_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(t) => t,
            None => std::fs::read_to_string(home.join("owner.token")).map(|t| t.trim().to_string()).map_err(|_| {
                let owner = home.join("owner.token");
                // With no server named, the user may not know this command needs one at all.
                match named {
                    Some(_) => anyhow!(
                        "no token for {base}\nhint: set FLOWRT_TOKEN (an admin creates users with tokens), or start `flowrt server` with this FLOWRT_HOME so its owner token is in {}",
                        owner.display()
                    ),
                    None => anyhow!(
                        "this command needs a flowrt server, and none is set (the default, {base}, has no token here)\nhint: set FLOWRT_SERVER (or pass --server) to the server's URL and FLOWRT_TOKEN to your token; or start `flowrt server` with this FLOWRT_HOME, which writes its owner token to {}",
                        owner.display()
                    ),
                }
            })?,
        };
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| anyhow!("cannot create an HTTP client: {e}"))?;
        Ok(Remote { base, token, http })
    }

    /// The server's URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The bearer token this client sends.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The client for the server named by `--server` (else FLOWRT_SERVER) with this home's token.
    pub fn for_server(server: Option<&str>) -> Result<Remote> {
        Remote::from_env(server, &flowrt_store::flowrt_home())
    }

    /// `GET path`, decoded as the API's type for it.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.typed("GET", path, None).await
    }

    /// `POST path` with a typed body.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.typed("POST", path, Some(to_body(body)?)).await
    }

    /// `POST path` with no body (an action: start, stop, reset, ...).
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.typed("POST", path, None).await
    }

    /// `PATCH path` with a typed body.
    pub async fn patch<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.typed("PATCH", path, Some(to_body(body)?)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.call("DELETE", path, None).await.map(drop)
    }

    /// `DELETE path` whose answer is the resource as it is now (a user without a role).
    pub async fn delete_returning<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.typed("DELETE", path, None).await
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| anyhow!("{e}"))?;
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    /// A call whose reply is decoded as the API's type for it (`flowrt_api`).
    async fn typed<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<T> {
        decode(method, path, self.call(method, path, body).await?)
    }

    /// GET a binary body (a snapshot archive) with the answer's headers.
    pub async fn get_bytes(&self, path: &str) -> Result<(Vec<u8>, reqwest::header::HeaderMap)> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| {
                anyhow!("cannot reach the flowrt server at {}: {e}\nhint: start it with `flowrt server`, or set FLOWRT_SERVER", self.base)
            })?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            return Err(refusal(status, &value));
        }
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| anyhow!("the download from {url} was cut off: {e}"))?;
        Ok((body.to_vec(), headers))
    }

    /// POST raw bytes (a snapshot archive) and decode the reply.
    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let req = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        decode("POST", path, self.send(req).await?)
    }

    /// POST a file's bytes as a stream (never whole in memory) and decode the reply.
    pub async fn post_file<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        file: &std::path::Path,
    ) -> Result<T> {
        use futures::StreamExt;
        use tokio::io::AsyncReadExt;
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|e| anyhow!("cannot read {}: {e}", file.display()))?;
        let len = f.metadata().await.map(|m| m.len()).ok();
        // 256 KiB pieces, read as the request is sent.
        let pieces = futures::stream::unfold(f, |mut f| async move {
            let mut buf = vec![0u8; 256 * 1024];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(buf), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        })
        .boxed();
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(reqwest::Body::wrap_stream(pieces));
        if let Some(len) = len {
            req = req.header(reqwest::header::CONTENT_LENGTH, len);
        }
        decode("POST", path, self.send(req).await?)
    }

    /// Follow a server-sent event stream, calling `on_event(event, data)` for each event, until
    /// the stream ends or `on_event` returns `false`.
    pub async fn events(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, &Value) -> bool,
    ) -> Result<()> {
        use futures::StreamExt;
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| anyhow!("cannot follow {path}: {e}"))?;
        if !resp.status().is_success() {
            bail!("cannot follow {path}: HTTP {}", resp.status());
        }
        let mut body = resp.bytes_stream();
        let mut pending = String::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| anyhow!("the event stream broke off: {e}"))?;
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let block: String = pending.drain(..end + 2).collect();
                let mut event = "message".to_string();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_string();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let value: Value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                if !on_event(&event, &value) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let resp = req.send().await.map_err(|e| {
            anyhow!("cannot reach the flowrt server at {}: {e}\nhint: start it with `flowrt server`, or set FLOWRT_SERVER", self.base)
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(value);
        }
        Err(refusal(status, &value))
    }
}

/// A typed request body as the JSON the client sends.
pub fn to_body<T: Serialize>(body: &T) -> Result<Value> {
    serde_json::to_value(body).map_err(|e| anyhow!("cannot encode the request: {e}"))
}

/// A reply decoded as the API's type for it (`flowrt_api`).
fn decode<T: DeserializeOwned>(method: &str, path: &str, reply: Value) -> Result<T> {
    serde_json::from_value(reply)
        .map_err(|e| anyhow!("the server's answer to {method} {path} is not what this flowrt expects ({e}); are the server and the CLI the same version?"))
}

/// The message of a refusal's body: every refusal is `{code, message}` (`flowrt_api::ApiError`);
/// anything else (a proxy's page) is `None`.
pub fn refusal_message(body: &Value) -> Option<String> {
    #[derive(Deserialize)]
    struct Refusal {
        message: String,
    }
    Refusal::deserialize(body).ok().map(|r| r.message)
}

/// A refused call as the error to show: the server's message, and for 401 what to check.
fn refusal(status: reqwest::StatusCode, body: &Value) -> anyhow::Error {
    let message = refusal_message(body).unwrap_or_else(|| body.to_string());
    if status.as_u16() == 401 {
        return anyhow!("the server refused the token: {message}\nhint: check FLOWRT_TOKEN");
    }
    anyhow!("{message}")
}
