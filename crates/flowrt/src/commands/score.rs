//! `flowrt endpoint score`: one request to an endpoint's scoring URL with promptflow's serving
//! contract, as a caller of the endpoint makes it (an endpoint key, or the user's token).

use crate::client::Remote;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// `endpoint score`: what to send, where, and as whom.
#[derive(clap::Args)]
pub struct ScoreArgs {
    pub name: String,
    /// The inputs: NAME=VALUE pairs, as `flow test` takes them, or one JSON object
    /// (`--inputs '{"question": "hi"}'`).
    #[arg(long, num_args = 1.., value_name = "NAME=VALUE|JSON", conflicts_with = "inputs_file")]
    pub inputs: Vec<String>,
    /// A file holding the inputs as a JSON object.
    #[arg(long, value_name = "FILE")]
    pub inputs_file: Option<std::path::PathBuf>,
    /// Send to this deployment (the azureml-model-deployment header), not by traffic.
    #[arg(long)]
    pub deployment: Option<String>,
    /// The environment variable holding an endpoint key (default: FLOWRT_ENDPOINT_KEY,
    /// else your user token).
    #[arg(long, value_name = "VAR")]
    pub key_env: Option<String>,
    /// Stream the reply (server-sent events), printing pieces as they come.
    #[arg(long)]
    pub stream: bool,
}

/// The request's JSON object: `--inputs` as NAME=VALUE pairs (strings, which the flow's
/// declared input types convert, as a line test's do) or as one JSON object, else the file's.
fn request_body(inputs: Vec<String>, inputs_file: Option<std::path::PathBuf>) -> Result<Value> {
    let text = match (inputs.as_slice(), inputs_file) {
        ([one], _) if one.trim_start().starts_with('{') => one.clone(),
        ([], Some(f)) => {
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?
        }
        ([], None) => "{}".to_string(),
        (pairs, _) => {
            let mut body = serde_json::Map::new();
            for pair in pairs {
                let (k, v) = super::flow_test::input_pair(pair).ok_or_else(|| {
                    anyhow!("--inputs '{pair}' must be NAME=VALUE, or one JSON object like '{{\"question\": \"hi\"}}'")
                })?;
                body.insert(k, v);
            }
            return Ok(Value::Object(body));
        }
    };
    let body: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow!("the inputs are not JSON: {e}\nhint: give an object, like --inputs '{{\"question\": \"hi\"}}', or NAME=VALUE pairs"))?;
    if !body.is_object() {
        bail!(
            "the inputs must be a JSON object of the flow's inputs, like {{\"question\": \"hi\"}}"
        );
    }
    Ok(body)
}

/// `endpoint score`: one request to the scoring URL, its answer (or its stream) on stdout.
pub async fn run(remote: &Remote, args: ScoreArgs) -> Result<u8> {
    let base = remote.base();
    let ScoreArgs {
        name,
        inputs,
        inputs_file,
        deployment,
        key_env,
        stream,
    } = args;
    let body = request_body(inputs, inputs_file)?;
    let var = key_env.unwrap_or_else(|| "FLOWRT_ENDPOINT_KEY".into());
    let key = std::env::var(&var).ok().filter(|k| !k.is_empty());
    let http = reqwest::Client::new();
    let mut req = http
        .post(format!("{base}/endpoints/{name}/score"))
        .json(&body);
    req = match &key {
        Some(k) => req.bearer_auth(k),
        None => req.bearer_auth(remote.token()),
    };
    if let Some(d) = &deployment {
        req = req.header("azureml-model-deployment", d);
    }
    if stream {
        req = req.header(reqwest::header::ACCEPT, "text/event-stream");
    }
    let resp = req
        .send()
        .await
        .map_err(|e| anyhow!("cannot reach {base}: {e}"))?;
    let status = resp.status();
    let served_by = resp
        .headers()
        .get("azureml-model-deployment")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let is_stream = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    if is_stream {
        use futures::StreamExt;
        use std::io::Write;
        let mut body = resp.bytes_stream();
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| anyhow!("the stream broke off: {e}"))?;
            std::io::stdout().write_all(&piece)?;
            std::io::stdout().flush()?;
        }
        return Ok(0);
    }
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        let message = serde_json::from_str(&text)
            .ok()
            .and_then(|v| crate::client::refusal_message(&v))
            .unwrap_or(text);
        bail!("endpoint {name} answered {status}: {message}");
    }
    println!("{text}");
    if let Some(d) = served_by {
        eprintln!("answered by deployment {d}");
    }
    Ok(0)
}
