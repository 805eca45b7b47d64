//! The workspace's runs as a server keeps them.
//!
//! Every batch or evaluation run is a record in the store and a folder of blobs only the server
//! writes ([`runs`]): the server follows each run in the session that executes it, over the
//! agent's channel, and gives the runs an evaluation or a resume reads to the session that needs
//! them. A run spread over several sessions is cut into chunks claimed through the store
//! ([`spread`]). The HTTP layer decides who may do what and calls in here; this crate meets the
//! sessions only through the session manager, the store and the agent protocol.

pub mod runs;
pub mod spread;

use flowrt_session::manager::Manager;
use flowrt_store::{Blobs, Store};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Where this server keeps the workspace's runs, and how it knows itself among the servers that
/// share the database.
#[derive(Clone, Debug)]
pub struct Config {
    /// `FLOWRT_HOME`: the runs' blobs are under `workspace/runs/` (a cache of the database's
    /// with `--blobs database`).
    pub home: PathBuf,
    /// This server's name in the database: sessions and chunk claims are leased to it.
    pub server_id: String,
    /// How long a lease lasts unless renewed.
    pub lease: Duration,
}

/// The runs this server follows and the spread-run workers it runs, over the store, the
/// workspace's files and the session manager.
pub struct Workspace {
    pub store: Store,
    pub blobs: Blobs,
    pub sessions: Arc<Manager>,
    pub config: Config,
    followers: runs::Followers,
    workers: spread::Workers,
    /// Held while this server writes a run's cached folder: catching it up from the database
    /// and appending what it pulls from an agent. Two writers of one folder at once (an event
    /// stream's catch-up beside a gathering pull) appended the same bytes twice, or indexed
    /// lines twice. A run takes the lock its name hashes to ([`Workspace::run_files`]), so
    /// other runs' followers do not wait on it.
    run_files: [tokio::sync::Mutex<()>; RUN_FILE_LOCKS],
    /// The name of each run whose record just changed: event streams wake at once.
    pub run_changes: tokio::sync::broadcast::Sender<String>,
    /// Set when the server begins to shut down: followers and workers stop where they are (the
    /// next server goes on from what was stored).
    pub stopping: Arc<AtomicBool>,
    /// Where the spans sessions record go, when this server's OpenTelemetry variables name a
    /// receiver: runs then record them, and the server exports what it pulls.
    pub exporters: Option<Arc<flowrt_runtime::otel::Exporters>>,
}

/// How many locks the runs' cached folders share (see `Workspace::run_files`).
const RUN_FILE_LOCKS: usize = 64;

impl Workspace {
    /// The lock of run `name`'s cached folder, held while this server writes it.
    fn run_files(&self, name: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(name);
        &self.run_files[(hash % RUN_FILE_LOCKS as u64) as usize]
    }

    pub fn new(
        store: Store,
        blobs: Blobs,
        sessions: Arc<Manager>,
        config: Config,
        stopping: Arc<AtomicBool>,
    ) -> Arc<Self> {
        Arc::new(Workspace {
            store,
            blobs,
            sessions,
            config,
            followers: runs::Followers::default(),
            run_files: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
            workers: spread::Workers::default(),
            run_changes: tokio::sync::broadcast::channel(256).0,
            stopping,
            exporters: flowrt_runtime::otel::Exporters::from_env().map(Arc::new),
        })
    }

    /// What a run's spans say of it, when this server exports them (`None`: the session
    /// records none).
    pub fn trace_as(
        &self,
        flow_ref: Option<&str>,
        run: &str,
        base_run: Option<&str>,
    ) -> Option<flowrt_api::trace::TraceAs> {
        self.exporters.as_ref()?;
        Some(flowrt_api::trace::TraceAs {
            collection: collection_of(flow_ref),
            run: Some(run.to_string()),
            base_run: base_run.map(str::to_string),
        })
    }

    /// Send the spans exported so far now, for a run that just ended: they are in the viewer
    /// when the run says it ended (an evaluation started next finds its base run's lines).
    pub async fn flush_spans(&self) {
        if let Some(exporters) = self.exporters.clone() {
            let _ = tokio::task::spawn_blocking(move || exporters.flush()).await;
        }
    }

    /// Export the spans of `text`, whole lines of workspace run `run`'s `spans.jsonl`, which a
    /// session recorded. That file is in the session's folder, where its code may write
    /// anything: a line that is not spans is skipped, and what the spans say of their flow and
    /// run is the workspace's record of the run, not theirs.
    pub async fn export_recorded_spans(&self, run: &str, text: &str) {
        let Some(exporters) = &self.exporters else {
            return;
        };
        let Ok(Some(record)) = self.store.get_workspace_run(run).await else {
            return;
        };
        let trace = flowrt_api::trace::TraceAs {
            collection: collection_of(record.record["flow"].as_str()),
            run: Some(run.to_string()),
            base_run: record.record["base_run"].as_str().map(str::to_string),
        };
        for line in text.lines() {
            if let Ok(mut spans) = serde_json::from_str::<flowrt_api::trace::LineSpans>(line) {
                spans.spans.iter_mut().for_each(|s| trace.stamp(s));
                exporters.export(&trace.collection, spans.spans);
            }
        }
    }
}

/// The name a session's flow's traces are grouped under (the resource's `collection`): the
/// workspace flow's, without its version.
pub fn collection_of(flow_ref: Option<&str>) -> String {
    flow_ref
        .and_then(|r| r.split('@').next())
        .filter(|n| !n.is_empty())
        .unwrap_or("flow")
        .to_string()
}

/// Now, in Unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
