//! Sessions as Ray jobs: the Ray backend speaks Ray's Jobs REST API (no Python bindings) to run
//! each session's agent as a job whose entrypoint resources are the session size's CPUs and
//! memory, so Ray places it on a node with room.
//!
//! How flowrt reaches a node: the server uploads its own binary to the cluster once, as a Ray
//! package (`PUT /api/packages/gcs/_ray_pkg_<hash>.zip`, named by the binary's content hash), and
//! every session job names it as its `working_dir`; Ray unpacks it on the node the job lands on.
//! A node needs nothing but Ray. The agent then dials the server (the URL and a one-time join
//! token are in the job's environment) to say where it listens and to receive its connections,
//! which never pass through Ray.
//!
//! The session's folder is FLOWRT_HOME's on a volume the nodes share with the server, as servers
//! sharing a database share it.

use crate::backend::{AgentSpec, BackendError, PASSED_ENV, TOKEN_FILE};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;
use tokio::sync::OnceCell;

/// A Ray cluster's Jobs API.
pub struct RayBackend {
    /// `http://HEAD:8265`.
    pub address: String,
    http: reqwest::Client,
    /// The `gcs://` URI of this server's binary, uploaded once.
    package: OnceCell<String>,
}

/// What Ray says of a job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobState {
    /// `PENDING`, `RUNNING`, `STOPPED`, `SUCCEEDED` or `FAILED`.
    pub status: String,
    pub message: String,
    /// The node it runs on.
    pub node: Option<String>,
}

impl JobState {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "STOPPED" | "SUCCEEDED" | "FAILED")
    }
}

fn ray_err(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Ray(format!("{what}: {e}"))
}

impl RayBackend {
    pub fn new(address: &str) -> RayBackend {
        RayBackend {
            address: address.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
            package: OnceCell::new(),
        }
    }

    /// The cluster answers its Jobs API.
    pub async fn check(&self) -> Result<(), BackendError> {
        let url = format!("{}/api/jobs/", self.address);
        let resp = self.http.get(&url).send().await.map_err(|e| {
            ray_err(
                &format!("cannot reach the Ray cluster at {}", self.address),
                e,
            )
        })?;
        if !resp.status().is_success() {
            return Err(BackendError::Ray(format!(
                "the Ray cluster at {} answered {} to GET /api/jobs/",
                self.address,
                resp.status()
            )));
        }
        Ok(())
    }

    /// Upload `exe` (this server's flowrt) as a Ray package unless the cluster has it; its URI.
    pub async fn package(&self, exe: &Path) -> Result<String, BackendError> {
        self.package
            .get_or_try_init(|| async {
                let exe = exe.to_path_buf();
                let (name, zip) = tokio::task::spawn_blocking(move || package_zip(&exe))
                    .await
                    .map_err(|e| ray_err("packaging flowrt", e))??;
                let url = format!("{}/api/packages/gcs/{name}", self.address);
                let have = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| ray_err("asking Ray for the flowrt package", e))?;
                if !have.status().is_success() {
                    let resp = self
                        .http
                        .put(&url)
                        .body(zip)
                        .send()
                        .await
                        .map_err(|e| ray_err("uploading flowrt to Ray", e))?;
                    if !resp.status().is_success() {
                        let text = resp.text().await.unwrap_or_default();
                        return Err(BackendError::Ray(format!(
                            "Ray refused the flowrt package: {}",
                            text.lines().last().unwrap_or("")
                        )));
                    }
                }
                Ok(format!("gcs://{name}"))
            })
            .await
            .cloned()
    }

    /// Submit the agent of `spec` as a job (its id is the session's); the agent dials `join_url`
    /// with `join_token`.
    pub async fn submit(
        &self,
        spec: &AgentSpec,
        join_url: &str,
        join_token: &str,
        attempt: u32,
    ) -> Result<String, BackendError> {
        let package = self.package(&spec.exe).await?;
        let limits = spec.size.limits();
        let wd = &spec.workdir;
        let q = |p: &Path| shell_quote(&p.display().to_string());
        let mut agent = format!(
            "exec \"$pkg/flowrt\" agent --session-id {} --flow {} --python {} --workers {} --addr-file {} --token-file {} --long-running-interval {} --idle-exit {}",
            shell_quote(&spec.session_id),
            q(&spec.flow_dir),
            q(&spec.python),
            limits.workers,
            q(&wd.join("agent.addr")),
            q(&wd.join(TOKEN_FILE)),
            spec.long_running_interval,
            spec.idle_exit_s,
        );
        if spec.seal {
            agent.push_str(" --seal");
        }
        // `exec`: the agent is the job's process, so it dies with its node's raylet.
        let entrypoint = format!("pkg=\"$PWD\"; cd {} && {agent} >>agent.log 2>&1", q(wd));
        let mut env = serde_json::Map::new();
        for key in PASSED_ENV {
            if let Ok(v) = std::env::var(key) {
                env.insert(key.to_string(), json!(v));
            }
        }
        let tmp = wd.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| BackendError::Workdir {
            path: tmp.clone(),
            source: e,
        })?;
        for (k, v) in [
            ("HOME", wd.display().to_string()),
            ("FLOWRT_HOME", wd.display().to_string()),
            ("TMPDIR", tmp.display().to_string()),
            // The server reaches the agent from another machine: it listens on every interface
            // (every request needs its token) and says which address it dialled out from.
            ("FLOWRT_AGENT_BIND", "0.0.0.0:0".to_string()),
            ("FLOWRT_JOIN_URL", join_url.to_string()),
            // One-time: spent by the agent's first call, so Ray showing it to its users gives
            // them nothing.
            ("FLOWRT_JOIN_TOKEN", join_token.to_string()),
        ] {
            env.insert(k.into(), json!(v));
        }
        let body = json!({
            "entrypoint": entrypoint,
            "submission_id": format!("flowrt-{}-{attempt}", spec.session_id),
            "entrypoint_num_cpus": limits.workers,
            "entrypoint_memory": limits.memory_mib * 1024 * 1024,
            "runtime_env": {"working_dir": package, "env_vars": env},
            "metadata": {"flowrt_session": spec.session_id},
        });
        let resp = self
            .http
            .post(format!("{}/api/jobs/", self.address))
            .json(&body)
            .send()
            .await
            .map_err(|e| ray_err("submitting the session to Ray", e))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(BackendError::Ray(format!(
                "Ray refused the session's job ({status}): {}",
                text.lines().last().unwrap_or("")
            )));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| ray_err("Ray's answer", e))?;
        Ok(v["submission_id"]
            .as_str()
            .or(v["job_id"].as_str())
            .unwrap_or_default()
            .to_string())
    }

    pub async fn state(&self, job: &str) -> Result<JobState, BackendError> {
        let v: Value = self
            .http
            .get(format!("{}/api/jobs/{job}", self.address))
            .send()
            .await
            .map_err(|e| ray_err("asking Ray for a job", e))?
            .json()
            .await
            .map_err(|e| ray_err("Ray's answer", e))?;
        Ok(JobState {
            status: v["status"].as_str().unwrap_or("UNKNOWN").to_string(),
            message: v["message"].as_str().unwrap_or("").to_string(),
            node: v["driver_node_id"].as_str().map(str::to_string),
        })
    }

    pub async fn stop(&self, job: &str) {
        let _ = self
            .http
            .post(format!("{}/api/jobs/{job}/stop", self.address))
            .send()
            .await;
    }
}

/// `'text'` for sh, with `'` escaped.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// A zip holding `exe` as `flowrt`, named as Ray names packages, by content. Deflated: Ray's
/// upload takes at most 100 MiB, which a debug build exceeds uncompressed.
fn package_zip(exe: &Path) -> Result<(String, Vec<u8>), BackendError> {
    use std::io::Write;
    let bytes = std::fs::read(exe).map_err(|e| BackendError::Spawn {
        exe: exe.to_path_buf(),
        source: e,
    })?;
    let mut buf = std::io::Cursor::new(Vec::with_capacity(bytes.len() + 1024));
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o755)
            .large_file(bytes.len() > u32::MAX as usize);
        zip.start_file("flowrt", options)
            .map_err(|e| ray_err("packaging flowrt", e))?;
        zip.write_all(&bytes)
            .map_err(|e| ray_err("packaging flowrt", e))?;
        zip.finish().map_err(|e| ray_err("packaging flowrt", e))?;
    }
    let zip = buf.into_inner();
    let hash = hex::encode(&Sha256::digest(&zip)[..20]);
    Ok((format!("_ray_pkg_{hash}.zip"), zip))
}
