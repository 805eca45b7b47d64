//! Talking to a flowrt server: where it is (`--server` / `FLOWRT_SERVER`, default
//! http://127.0.0.1:7878), who we are (`FLOWRT_TOKEN`, or the owner token the local server wrote to
//! FLOWRT_HOME/owner.token), and one call that turns API errors into messages with hints.

use anyhow::{anyhow, bail, Result};
use serde_json::Value;
use std::path::Path;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

pub struct Remote {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Remote {
    pub fn from_env(server: Option<&str>, home: &Path) -> Result<Remote> {
        let base = server
            .map(str::to_string)
            .or_else(|| {
                std::env::var("FLOWRT_SERVER")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| DEFAULT_SERVER.to_string())
            .trim_end_matches('/')
            .to_string();
        let token = match std::env::var("FLOWRT_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(t) => t,
            None => std::fs::read_to_string(home.join("owner.token")).map(|t| t.trim().to_string()).map_err(|_| {
                anyhow!(
                    "no token for {base}\nhint: set FLOWRT_TOKEN (an admin creates users with tokens), or start `flowrt server` with this FLOWRT_HOME so its owner token is in {}",
                    home.join("owner.token").display()
                )
            })?,
        };
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| anyhow!("cannot create an HTTP client: {e}"))?;
        Ok(Remote { base, token, http })
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| anyhow!("{e}"))?;
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    /// POST raw bytes (a snapshot archive) and read the JSON reply.
    pub async fn post_bytes(&self, path: &str, content_type: &str, body: Vec<u8>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let req = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.send(req).await
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
        let message = value["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        if status.as_u16() == 401 {
            bail!("the server refused the token: {message}\nhint: check FLOWRT_TOKEN");
        }
        bail!("{message}")
    }
}
