//! Sessions as Ray jobs: the Ray backend speaks Ray's Jobs REST API (no Python bindings) to run
//! each session's agent as a job whose entrypoint resources are the session size's CPUs and
//! memory, so Ray places it on a node with room.
//!
//! How flowrt reaches a node: the server uploads its own binary to the cluster once, as a Ray
//! package (`PUT /api/packages/gcs/_ray_pkg_<hash>.zip`, named by the binary's content hash), and
//! every session job names it as its `working_dir`; Ray unpacks it on the node the job lands on.
//! A node needs nothing but Ray.
//!
//! How an agent joins without a secret Ray could show: everyone who can read the cluster's job
//! list sees each job's entrypoint and environment, so neither holds anything usable. The agent
//! draws a one-time join secret and its own agent token, writes `sha256(secret)` (a commitment)
//! as the first line of its job's log, then dials the server with the secret. The server reads
//! the commitment from the log of the job it submitted (only that job's process writes there)
//! and checks that the call comes from, and names an address on, the node Ray placed the job
//! on. Only then does it hand over the connections and keep the agent's token; a reader of the
//! job list holds a hash it cannot invert and a job it cannot write to.
//!
//! User code must not reach the cluster's control endpoints either (the dashboard and its job
//! API, GCS, the raylets' and agents' ports, Ray Client): each job is told the ports the cluster
//! reports, and a sealed agent denies TCP connections to them with Landlock's network rules
//! where the kernel has them (Linux 6.7+).
//!
//! A node shares no disk with its server: the agent's folder is a fresh one under the node's
//! temporary folder, it receives its flow's snapshot and its environment's recipe when it joins,
//! builds the environment in a node-local cache (per session owner, keyed by the environment's
//! hash), and everything the server keeps (run records, logs, packages) comes over its channel.

use crate::backend::{AgentSpec, BackendError, PASSED_ENV};
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

    /// Submit the agent of `spec` as job `submission_id`; the agent dials `join_url` and may not
    /// connect to `control_ports`.
    pub async fn submit(
        &self,
        spec: &AgentSpec,
        join_url: &str,
        submission_id: &str,
        control_ports: &[u16],
    ) -> Result<String, BackendError> {
        let package = self.package(&spec.exe).await?;
        let limits = spec.size.limits();
        let mut agent = format!(
            "exec \"$pkg/flowrt\" agent --session-id {} --flow-from-server \"$node\" --workers {} --addr-file agent.addr --long-running-interval {} --idle-exit {}",
            shell_quote(&spec.session_id),
            limits.workers,
            spec.long_running_interval,
            spec.idle_exit_s,
        );
        if spec.seal {
            agent.push_str(" --seal");
            if !control_ports.is_empty() {
                let ports: Vec<String> = control_ports.iter().map(u16::to_string).collect();
                agent.push_str(&format!(" --deny-connect-ports {}", ports.join(",")));
            }
        }
        // The session's folder is the node's: a fresh one (mode 0700) under its temporary folder,
        // its environment cache beside it. `exec`: the agent is the job's process, so it dies
        // with its node's raylet. Its stdout is the job's log, where it writes its join
        // commitment; everything else goes to the session log, which the server reads from it.
        let session_dir = shell_quote(&format!("flowrt-session-{}-XXXXXX", spec.session_id));
        let entrypoint = format!(
            "pkg=\"$PWD\"; node=\"${{TMPDIR:-/tmp}}/flowrt-node\"; mkdir -p \"$node\" && chmod 700 \"$node\" && wd=$(mktemp -d \"$node\"/{session_dir}) && cd \"$wd\" && mkdir tmp && export HOME=\"$wd\" FLOWRT_HOME=\"$wd\" TMPDIR=\"$wd/tmp\" && {agent} 2>>agent.log"
        );
        let mut env = serde_json::Map::new();
        for key in PASSED_ENV {
            if let Ok(v) = std::env::var(key) {
                env.insert(key.to_string(), json!(v));
            }
        }
        for (k, v) in [
            // The server reaches the agent from another machine: it listens on every interface
            // (every request needs its token) and says which address it dialled out from.
            ("FLOWRT_AGENT_BIND", "0.0.0.0:0".to_string()),
            ("FLOWRT_JOIN_URL", join_url.to_string()),
        ] {
            env.insert(k.into(), json!(v));
        }
        let body = json!({
            "entrypoint": entrypoint,
            "submission_id": submission_id,
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

    /// The first join commitment in a job's log (`flowrt-join-commitment HEX`), if it wrote one.
    pub async fn join_commitment(&self, job: &str) -> Result<Option<String>, BackendError> {
        let v: Value = self
            .http
            .get(format!("{}/api/jobs/{job}/logs", self.address))
            .send()
            .await
            .map_err(|e| ray_err("asking Ray for a job's log", e))?
            .json()
            .await
            .map_err(|e| ray_err("Ray's answer", e))?;
        Ok(v["logs"].as_str().and_then(first_commitment))
    }

    /// The cluster's nodes: id, address and the ports Ray's own services listen on.
    pub async fn nodes(&self) -> Result<Vec<RayNode>, BackendError> {
        let v: Value = self
            .http
            .get(format!("{}/nodes?view=summary", self.address))
            .send()
            .await
            .map_err(|e| ray_err("asking Ray for its nodes", e))?
            .json()
            .await
            .map_err(|e| ray_err("Ray's answer", e))?;
        Ok(v["data"]["summary"]
            .as_array()
            .map(|nodes| nodes.iter().filter_map(RayNode::from_summary).collect())
            .unwrap_or_default())
    }

    /// Every port of the cluster's control plane that user code must not reach: the dashboard's
    /// (from the address flowrt talks to), GCS, each node's raylet, object manager, dashboard
    /// agent, runtime-env agent and metrics ports, Ray Client's, and `extra` the operator names.
    pub async fn control_ports(&self, extra: &[u16]) -> Result<Vec<u16>, BackendError> {
        let mut ports: Vec<u16> = extra.to_vec();
        ports.push(DEFAULT_RAY_CLIENT_PORT);
        if let Some(port) = self
            .address
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
        {
            ports.push(port);
        }
        for node in self.nodes().await? {
            ports.extend(node.ports);
        }
        ports.retain(|p| *p != 0);
        ports.sort_unstable();
        ports.dedup();
        Ok(ports)
    }

    pub async fn stop(&self, job: &str) {
        let _ = self
            .http
            .post(format!("{}/api/jobs/{job}/stop", self.address))
            .send()
            .await;
    }
}

/// Ray Client's port unless the cluster was started with another (`--ray-control-ports` adds it).
const DEFAULT_RAY_CLIENT_PORT: u16 = 10001;

/// The line an agent starts its job's log with.
pub const COMMITMENT_PREFIX: &str = "flowrt-join-commitment ";

/// The commitment of the first line that holds one: later lines (anything the job printed after
/// joining) cannot replace it.
fn first_commitment(log: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.trim().strip_prefix(COMMITMENT_PREFIX))
        .map(|c| c.trim().to_string())
}

/// One node of the cluster, as its dashboard reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RayNode {
    pub id: String,
    /// The address its raylet (and the jobs it runs) use.
    pub ip: std::net::IpAddr,
    /// Ports of Ray's services on it (GCS's on the head).
    pub ports: Vec<u16>,
}

impl RayNode {
    fn from_summary(v: &Value) -> Option<RayNode> {
        let raylet = &v["raylet"];
        let id = raylet["nodeId"].as_str()?.to_string();
        let ip = raylet["nodeManagerAddress"]
            .as_str()
            .or(v["ip"].as_str())?
            .parse()
            .ok()?;
        let mut ports: Vec<u16> = [
            "nodeManagerPort",
            "objectManagerPort",
            "metricsExportPort",
            "metricsAgentPort",
            "runtimeEnvAgentPort",
            "dashboardAgentListenPort",
        ]
        .iter()
        .filter_map(|k| raylet[*k].as_u64())
        .filter_map(|p| u16::try_from(p).ok())
        .collect();
        // GCS listens where the head's gcs_server was told to.
        if let Some(args) = v["gcs"]["cmdline"].as_array() {
            ports.extend(
                args.iter()
                    .filter_map(Value::as_str)
                    .filter_map(|a| a.strip_prefix("--gcs_server_port="))
                    .filter_map(|p| p.parse::<u16>().ok()),
            );
        }
        Some(RayNode { id, ip, ports })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_commitment_of_a_job_log_counts() {
        let log = "\nflowrt-join-commitment abc123\nuser output\nflowrt-join-commitment evil\n";
        assert_eq!(first_commitment(log).as_deref(), Some("abc123"));
        assert_eq!(first_commitment("nothing here\n"), None);
    }

    #[test]
    fn a_node_summary_gives_its_address_and_the_ports_of_rays_services() {
        let v = json!({
            "ip": "10.0.0.9",
            "raylet": {
                "nodeId": "n1", "nodeManagerAddress": "10.0.0.5", "nodeManagerPort": 6380,
                "objectManagerPort": 6381, "metricsExportPort": 6384, "metricsAgentPort": 6382,
                "runtimeEnvAgentPort": 6383, "dashboardAgentListenPort": 52365
            },
            "gcs": {"cmdline": ["gcs_server", "--gcs_server_port=6379", "--x=1"]}
        });
        let node = RayNode::from_summary(&v).unwrap();
        assert_eq!(node.id, "n1");
        assert_eq!(node.ip.to_string(), "10.0.0.5");
        let mut ports = node.ports;
        ports.sort_unstable();
        assert_eq!(ports, vec![6379, 6380, 6381, 6382, 6383, 6384, 52365]);
        assert_eq!(RayNode::from_summary(&json!({"raylet": {}})), None);
    }
}
