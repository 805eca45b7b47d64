//! Drafts of the session's flow, read in the session: the server sends a draft being edited in
//! the browser (its files as a snapshot archive), and the agent imports its code tools in a
//! Python worker of their own to answer their inputs, as promptflow's tool-meta generation does.
//! Importing a tool runs its author's code, so it happens here, in the sealed session, never in
//! the server. A line of a draft also runs here (`run_line`), with the session's environment and
//! connections, so a change is tried before it is saved. Drafts are unpacked under
//! `drafts/<hash>/` in the session folder; the few latest are kept, so checking the same files
//! again unpacks nothing, and the last draft run stays loaded for the next test.

use crate::loaded::{Loaded, OpenFlow};
use flowrt_api::agent::{DraftInspect, DraftLine};
use flowrt_api::responses::{DraftProblem, ToolMeta};
use flowrt_executor::NoObserver;
use flowrt_python::{CallError, ToolCall, ToolSource, WorkerPool, WorkerSpec};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Drafts kept unpacked at once; older ones are removed.
const KEPT_DRAFTS: usize = 8;
/// Tool files one check may read.
const MAX_TOOLS: usize = 100;

pub struct Drafts {
    dir: PathBuf,
    python: PathBuf,
    home: PathBuf,
    /// Started at the first check, kept warm for the next (a check is then one import).
    pool: tokio::sync::OnceCell<WorkerPool>,
    /// The last draft a line ran on, loaded with its own tools' workers.
    runner: tokio::sync::Mutex<Option<DraftRunner>>,
}

/// A draft opened to run lines (one variant of it): its flow, executor and workers.
pub struct DraftRunner {
    hash: String,
    variant: Option<(String, String)>,
    loaded: Loaded,
}

/// Why a draft could not be read at all (a single tool's failure is its [`ToolMeta::error`]).
#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    #[error("{0}")]
    Bad(String),
    #[error("{0}")]
    Io(String),
}

impl Drafts {
    pub fn new(session_dir: &Path, python: PathBuf, home: PathBuf) -> Self {
        Drafts {
            dir: session_dir.join("drafts"),
            python,
            home,
            pool: tokio::sync::OnceCell::new(),
            runner: tokio::sync::Mutex::new(None),
        }
    }

    /// Unpack a draft (once) and answer its folder.
    async fn unpacked(&self, hash: &str, archive: String) -> Result<PathBuf, DraftError> {
        unpack_once(&self.dir, hash, archive).await
    }

    /// Run one line of a draft with the session's connections; the draft stays loaded for the
    /// next line (another draft replaces it, and its workers stop).
    pub async fn run_line(
        &self,
        req: DraftLine,
        connections: &HashMap<String, flowrt_api::Connection>,
    ) -> Result<(flowrt_executor::LineResult, Arc<flowrt_flow::Flow>), DraftError> {
        let folder = self.unpacked(&req.hash, req.archive_base64).await?;
        let mut runner = self.runner.lock().await;
        if runner
            .as_ref()
            .is_none_or(|r| r.hash != req.hash || r.variant != req.variant)
        {
            if let Some(old) = runner.take() {
                old.loaded.invoker.shutdown().await;
            }
            let entry = match &req.entry {
                Some(e) if inside_flow(e) && !e.contains('/') => folder.join(e),
                Some(e) => return Err(DraftError::Bad(format!("'{e}' is not a file of the flow"))),
                None => folder.clone(),
            };
            *runner = Some(
                self.open(&entry, &req.hash, req.variant.clone(), connections)
                    .await?,
            );
        }
        let Some(r) = runner.as_ref() else {
            return Err(DraftError::Io("the draft did not open".into()));
        };
        let flow = r.loaded.executor.flow().clone();
        let inputs = flowrt_executor::prepare_inputs(&flow, &req.inputs).map_err(|e| {
            let shown = format!("{}/", self.dir.display());
            DraftError::Bad(e.to_string().replace(&shown, ""))
        })?;
        Ok((r.loaded.executor.run_line(0, inputs).await, flow))
    }

    async fn open(
        &self,
        flow_path: &Path,
        hash: &str,
        variant: Option<(String, String)>,
        connections: &HashMap<String, flowrt_api::Connection>,
    ) -> Result<DraftRunner, DraftError> {
        let loaded = Loaded::open(OpenFlow {
            path: flow_path,
            home: &self.home,
            python: &self.python,
            connections,
            workers: 1,
            observer: Arc::new(NoObserver),
            variant: variant.clone(),
        })
        .await
        .map_err(|e| {
            // Where the session keeps the draft is nothing the author needs (or should see).
            let shown = self.dir.display().to_string();
            DraftError::Bad(
                format!("{e:#}")
                    .replace(&format!("{shown}/"), "")
                    .replace(&shown, "drafts"),
            )
        })?;
        Ok(DraftRunner {
            hash: hash.to_string(),
            variant,
            loaded,
        })
    }

    /// Read the draft's tools: their inputs, or where importing each failed.
    pub async fn inspect(&self, req: DraftInspect) -> Result<Vec<ToolMeta>, DraftError> {
        if req.tools.len() > MAX_TOOLS {
            return Err(DraftError::Bad(format!(
                "a check reads at most {MAX_TOOLS} tool files"
            )));
        }
        self.unpacked(&req.hash, req.archive_base64.clone()).await?;
        let pool = self.pool().await?;
        let timeout = Duration::from_secs_f64(req.timeout_s.clamp(0.5, 60.0));
        let dir_name = req.hash.trim_start_matches("sha256:").to_string();
        let mut metas = Vec::with_capacity(req.tools.len());
        for path in req.tools {
            metas.push(read_tool(pool, &dir_name, path, timeout).await);
        }
        Ok(metas)
    }

    /// The tools the session's installed packages declare (its flow folder searched too).
    pub async fn package_tools(
        &self,
        flow_dir: &Path,
    ) -> Result<flowrt_api::responses::PackageTools, DraftError> {
        let pool = self.pool().await?;
        let dir = if flow_dir.is_file() {
            flow_dir.parent().unwrap_or(flow_dir)
        } else {
            flow_dir
        };
        let call = ToolCall {
            node: "package tools".into(),
            source: ToolSource::PackageTools {
                dir: Some(dir.display().to_string()),
            },
            args: Vec::new(),
            timeout: Some(Duration::from_secs(60)),
        };
        match pool.call(call).await {
            Ok(flowrt_python::CallOutput {
                output: flowrt_python::Output::Value(v),
                ..
            }) => serde_json::from_value(v).map_err(|e| DraftError::Io(e.to_string())),
            Ok(_) => Err(DraftError::Io("the worker answered a stream".into())),
            Err(e) => Err(DraftError::Bad(e.to_string())),
        }
    }

    /// The worker that reads drafts' tools, started at its first use.
    async fn pool(&self) -> Result<&WorkerPool, DraftError> {
        self.pool
            .get_or_try_init(|| async {
                std::fs::create_dir_all(&self.dir).map_err(|e| DraftError::Io(e.to_string()))?;
                Ok::<_, DraftError>(WorkerPool::new(
                    WorkerSpec {
                        python: self.python.clone(),
                        flow_dir: self.dir.clone(),
                        env: Vec::new(),
                        state_dir: self.home.clone(),
                    },
                    1,
                ))
            })
            .await
    }

    pub async fn shutdown(&self) {
        if let Some(pool) = self.pool.get() {
            pool.shutdown().await;
        }
        if let Some(r) = self.runner.lock().await.take() {
            r.loaded.invoker.shutdown().await;
        }
    }
}

/// Unpack a snapshot archive the server sent into `dir/<hex of its hash>` (once), checking that
/// its files hash to what the server said; answers that folder.
pub async fn unpack_once(dir: &Path, hash: &str, archive: String) -> Result<PathBuf, DraftError> {
    let hex = draft_name(hash)?;
    let folder = dir.join(&hex);
    if !folder.exists() {
        let (dir, hash) = (dir.to_path_buf(), hash.to_string());
        tokio::task::spawn_blocking(move || unpack(&dir, &hex, &hash, &archive))
            .await
            .map_err(|e| DraftError::Io(e.to_string()))??;
    }
    Ok(folder)
}

/// The folder a draft is unpacked in: its hash's hex digits, never a path.
fn draft_name(hash: &str) -> Result<String, DraftError> {
    let hex = hash.trim_start_matches("sha256:");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DraftError::Bad(format!("'{hash}' is not a snapshot hash")));
    }
    Ok(hex.to_ascii_lowercase())
}

fn unpack(dir: &Path, hex: &str, hash: &str, archive: &str) -> Result<(), DraftError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(archive.as_bytes())
        .map_err(|_| DraftError::Bad("the draft is not base64".into()))?;
    std::fs::create_dir_all(dir).map_err(|e| DraftError::Io(e.to_string()))?;
    let incoming = dir.join(format!(".incoming-{hex}"));
    let _ = std::fs::remove_dir_all(&incoming);
    let info = flowrt_store::snapshot::unpack(
        bytes.as_slice(),
        &incoming,
        &flowrt_store::snapshot::SnapshotLimits::default(),
    )
    .map_err(|e| DraftError::Bad(format!("the draft cannot be unpacked: {e}")))?;
    if info.hash != hash {
        let _ = std::fs::remove_dir_all(&incoming);
        return Err(DraftError::Bad(format!(
            "the draft's files hash to {}, not {hash}",
            info.hash
        )));
    }
    std::fs::rename(&incoming, dir.join(hex)).map_err(|e| DraftError::Io(e.to_string()))?;
    prune(dir);
    Ok(())
}

/// Keep the latest drafts only.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut drafts: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    drafts.sort();
    let excess = drafts.len().saturating_sub(KEPT_DRAFTS);
    for (_, path) in drafts.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(path);
    }
}

fn inside_flow(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

async fn read_tool(pool: &WorkerPool, dir: &str, path: String, timeout: Duration) -> ToolMeta {
    let failed = |message: String| ToolMeta {
        path: path.clone(),
        error: Some(DraftProblem {
            file: path.clone(),
            line: None,
            message,
        }),
        ..Default::default()
    };
    if !inside_flow(&path) {
        return failed(format!("'{path}' is not a file of the flow"));
    }
    let call = ToolCall {
        node: path.clone(),
        source: ToolSource::Meta {
            dir: dir.to_string(),
            path: path.clone(),
        },
        args: Vec::new(),
        timeout: Some(timeout),
    };
    match pool.call(call).await {
        Ok(flowrt_python::CallOutput {
            output: flowrt_python::Output::Value(v),
            ..
        }) => serde_json::from_value(v)
            .unwrap_or_else(|e| failed(format!("the worker's answer is not a tool's inputs: {e}"))),
        Ok(_) => failed("the worker answered a stream, not a tool's inputs".into()),
        Err(CallError::Timeout { .. }) => failed(format!(
            "importing {path} took more than {} s (does it do work at import time?)",
            timeout.as_secs_f64()
        )),
        Err(e) => failed(e.to_string()),
    }
}
