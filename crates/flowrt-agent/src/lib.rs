//! The agent: one compute session's process (`flowrt agent`). The control plane starts it in the session's
//! folder and environment (`flowrt agent`); it loads the flow once, keeps its Python workers warm,
//! runs batch runs in-process through the shared engine (`flowrt_runtime::batch`), and answers the
//! server on 127.0.0.1 only: `GET /health`, `GET /status` (activity for idle shutdown),
//! `POST /lines` and `/lines/stream` (one line), `POST /batch` (start a run),
//! `POST /batch/{name}/cancel`, `POST /shutdown`, and what moves runs between the session and
//! the workspace (`POST /runs/tail`, `POST /runs/import`, `GET|PUT /data/{file}`; see
//! `run_files`). User code runs here, never in the server.
//!
//! It stops by itself when its session folder disappears or, with an idle exit, after that long
//! without a run: the backstop for an agent whose server is gone for good.

mod drafts;
mod loaded;
mod run_files;

use anyhow::{Context, Result};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flowrt_api::agent::{
    AgentError, AgentHealth, AgentStatus, BatchRequest, BatchStarted, DataKept, LineRequest,
    LogPiece,
};
use flowrt_api::responses::{LineFailure, LineResult, PackageOrigin, PackageView};
use flowrt_api::ErrorCode;
use flowrt_executor::{prepare_inputs, NodeRun, RunObserver};
use flowrt_flow::LoadOptions;
use flowrt_runtime::batch::{self, Cancel};
use flowrt_runtime::invoker;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the agent was started (`flowrt agent`'s arguments).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The session this agent serves (answered by /health so a restarted server can re-adopt it).
    pub session_id: String,
    /// Where its flow and environment come from.
    pub source: FlowSource,
    /// How many Python workers to keep.
    pub workers: usize,
    /// Where to write the address it listens on (`127.0.0.1:PORT`).
    pub addr_file: PathBuf,
    /// A file holding the bearer token every request must carry; its disappearance means the
    /// session folder is gone. A joining agent has none: it draws its token and hands it over.
    pub token_file: Option<PathBuf>,
    /// Seconds between "NODE has been running for N seconds" log lines for a slow node.
    pub long_running_interval: f64,
    /// Read the connections the flow uses (a JSON list) from stdin, not from FLOWRT_HOME.
    pub connections_stdin: bool,
    /// Seal this agent and everything it starts (Landlock) before any user code is loaded.
    pub seal: bool,
    /// Run as this user (and group) of its own, dropped to once the agent has done what needs
    /// the server's privileges (reading its token, entering its namespaces); its folder is that
    /// user's.
    pub run_as_uid: Option<u32>,
    /// With `seal`: TCP ports no process of the session may connect to (a Ray cluster's control
    /// plane).
    pub deny_connect_ports: Vec<u16>,
    /// Exit after this many seconds without a run (0: only when the session folder is gone).
    pub idle_exit: f64,
    /// How often the watchdog looks at the folder and the idle time.
    pub watch_interval: Duration,
    /// Where to listen (`127.0.0.1:0`; a Ray session's agent listens where its server reaches it).
    pub bind: String,
    /// Dial the server to join it (a Ray session's agent): say where this agent listens and
    /// receive the connections its flow uses, with a one-time token.
    pub join: Option<Join>,
}

/// Where an agent's flow and environment come from.
#[derive(Clone, Debug)]
pub enum FlowSource {
    /// A flow folder (or `.prompty` file) and an environment's interpreter on this machine.
    Local { flow: PathBuf, python: PathBuf },
    /// Received from the server when the agent joins it (a Ray node shares no disk with its
    /// server): the snapshot is unpacked into the agent's folder, and the environment built under
    /// this node-local cache folder, per session owner.
    FromServer { node_cache: PathBuf },
}

/// How an agent started away from its server (on a Ray node) reaches it: only the server's URL,
/// which is no secret (see `flowrt_session::ray` for how the join is proved).
#[derive(Clone, Debug)]
pub struct Join {
    /// The server's URL, as its nodes reach it.
    pub url: String,
}

/// Write the join commitment, `sha256(secret)`, as the first line of the job's log (this
/// process's stdout), where the server reads it from Ray.
fn commit_to_join(secret: &str) -> Result<()> {
    use sha2::Digest;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}{}",
        flowrt_session::ray::COMMITMENT_PREFIX,
        hex::encode(sha2::Sha256::digest(secret.as_bytes()))
    )?;
    out.flush()?;
    Ok(())
}

/// Dial the server at `join.url`: this agent of `session_id` listens at `addr`, proves it is the
/// job Ray started with `secret`, and hands over the token the server must call it with. The
/// server answers with the connections the flow uses (they never pass through Ray).
fn join_server(
    join: &Join,
    session_id: &str,
    addr: &str,
    secret: &str,
    token: &str,
) -> Result<flowrt_api::responses::AgentJoined> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let resp = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()?
            .post(format!(
                "{}/api/v1/agents/join",
                join.url.trim_end_matches('/')
            ))
            .json(&flowrt_api::requests::AgentJoin {
                session_id: session_id.to_string(),
                addr: addr.to_string(),
                secret: secret.to_string(),
                token: token.to_string(),
            })
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", join.url))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!(
                "the server at {} refused this agent ({status}): {}",
                join.url,
                v["message"].as_str().unwrap_or("")
            );
        }
        serde_json::from_value(v)
            .with_context(|| format!("the server at {} answered the join oddly", join.url))
    })
}

/// Unpack the flow the server sent into `dest` (checked as any upload is, its hash compared)
/// and build its environment under `node_cache/OWNER` (sealed to that cache and `tmp` when
/// `seal`). Returns the flow's path (a prompty flow's file) and the environment's interpreter.
fn receive_flow(
    flow: &flowrt_api::responses::AgentFlow,
    dest: &std::path::Path,
    node_cache: &std::path::Path,
    seal: Option<&[u16]>,
) -> Result<(PathBuf, PathBuf)> {
    use base64::Engine as _;
    let archive = base64::engine::general_purpose::STANDARD
        .decode(flow.archive_base64.as_bytes())
        .context("the server sent a flow that is not base64")?;
    let _ = std::fs::remove_dir_all(dest);
    let info = flowrt_store::snapshot::unpack(
        archive.as_slice(),
        dest,
        &flowrt_store::snapshot::SnapshotLimits::default(),
    )
    .context("cannot unpack the flow the server sent")?;
    if info.hash != flow.hash {
        anyhow::bail!(
            "the flow arrived damaged: its files hash to {}, the server sent {}",
            info.hash,
            flow.hash
        );
    }
    let flow_path = match &flow.entry {
        Some(entry) => {
            // A file of the snapshot's top folder, by name only.
            let mut parts = std::path::Path::new(entry).components();
            match (parts.next(), parts.next()) {
                (Some(std::path::Component::Normal(name)), None) => dest.join(name),
                _ => anyhow::bail!("the server named the flow file '{entry}', not a file name"),
            }
        }
        None => dest.to_path_buf(),
    };
    // The owner names a folder of the node's cache: a plain name, never a path.
    flowrt_api::names::check("owner", &flow.owner, flowrt_api::names::USER_NAME_MAX)
        .map_err(anyhow::Error::msg)?;
    let cache = node_cache.join(&flow.owner);
    let requirements = flowrt_flow::load_flow(&flow_path, &LoadOptions::default())
        .context("the session's flow does not load")?
        .requirements_file();
    let exe = std::env::current_exe()?;
    let uv_cache = cache.join("uv-cache");
    // The node's cache outlives sessions (a session's HOME does not): its base environments are
    // built once per node and owner.
    let base_cache = cache.join("base-envs");
    let opts = flowrt_python::EnvOptions {
        base_cache: Some(&base_cache),
        base_version: Some(flow.base_version.as_str()),
        extra_requirements: flow.extra_requirements.as_deref().map(|text| {
            flowrt_python::ExtraRequirements {
                label: &flow.extra_label,
                text,
            }
        }),
        private_token: flow.private_token.as_deref(),
        private_hosts: &flow.private_hosts,
        sandbox: seal.map(|deny_connect_ports| flowrt_python::Sandbox {
            exe: &exe,
            cache: &uv_cache,
            deny_connect_ports,
        }),
    };
    let python = flowrt_python::ensure_env_with(
        flowrt_python::EnvRequest {
            requirements: requirements.as_deref(),
            flowrt_home: &cache,
        },
        &opts,
        &mut |m| eprintln!("{m}"),
    )
    .map_err(|e| anyhow::anyhow!("cannot build the session's environment: {e}"))?;
    Ok((flow_path, python))
}

/// The address to tell the server: the bound one, or, bound to every interface, the local
/// address this machine reaches `server_url` from (the interface its nodes share).
fn advertised(bound: std::net::SocketAddr, server_url: &str) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let host = server_url
        .split("://")
        .nth(1)
        .unwrap_or(server_url)
        .split('/')
        .next()
        .unwrap_or("");
    let ip = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|u| u.connect(host).map(|_| u))
        .and_then(|u| u.local_addr())
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    std::net::SocketAddr::new(ip, bound.port()).to_string()
}

/// A batch run going on in this session.
struct Batch {
    cancel: Cancel,
    /// Set when its thread has finished with it.
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl Batch {
    fn is_finished(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

struct Agent {
    session_id: String,
    token: String,
    home: PathBuf,
    python: PathBuf,
    /// The session log (this process's stderr), which the server reads through `GET /log`.
    log_file: PathBuf,
    workers: usize,
    /// The connections the flow uses, given to each batch run.
    connections: HashMap<String, flowrt_api::Connection>,
    /// Batch runs started in this session, by name (finished ones are reaped).
    batches: Mutex<HashMap<String, Batch>>,
    /// The flow lines run on: the session's, or the version it was switched to since. A
    /// deployment's server replaces its invoker's connections.
    current: std::sync::RwLock<Arc<loaded::Loaded>>,
    /// Where node output and long-running warnings go (the session log).
    log: Arc<AgentLog>,
    running: AtomicUsize,
    runs_total: AtomicU64,
    last_activity: Mutex<Instant>,
    shutdown: tokio::sync::Notify,
    /// Drafts of the flow being edited in the browser, whose tools are read here.
    drafts: drafts::Drafts,
}

impl Agent {
    /// The flow lines run on now: a line keeps the one it started with through a switch.
    fn loaded(&self) -> Arc<loaded::Loaded> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Logs node output and the long-running warnings to the agent log (stderr).
#[derive(Default)]
struct AgentLog {
    running: flowrt_executor::LongRunning,
}

tokio::task_local! {
    /// Where a streamed single-line test wants its nodes' starts and ends (`node` events), so a
    /// page colours each node as it runs.
    static NODE_EVENTS: tokio::sync::mpsc::UnboundedSender<String>;
}

/// Node events share the channel of the reply's pieces, so the stream keeps the order they
/// happened in (a node's end after its last piece); they are told apart by a leading SOH, which
/// no piece of text a model sends starts with and also parses as a node event.
const NODE_EVENT_MARK: char = '\u{1}';

fn node_event(v: &Value) -> String {
    format!("{NODE_EVENT_MARK}{v}")
}

impl RunObserver for AgentLog {
    fn node_started(&self, line: Option<usize>, node: &str) {
        self.running.started(line, node);
        let _ = NODE_EVENTS
            .try_with(|tx| tx.send(node_event(&json!({"node": node, "status": "Running"}))));
    }
    fn node_finished(&self, line: Option<usize>, run: &NodeRun) {
        self.running.finished(line, &run.node);
        let _ = NODE_EVENTS.try_with(|tx| {
            tx.send(node_event(&json!({"node": run.node, "status": run.status, "duration": run.duration.as_secs_f64()})))
        });
        for l in run.logs.lines() {
            eprintln!("[{}] {l}", run.node);
        }
    }
}

/// A batch run's reports: its warnings go to the session log (which the server serves), and its
/// start is told to the request that started it.
struct BatchLog {
    name: String,
    started: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl batch::Reporter for BatchLog {
    fn note(&self, msg: &str) {
        eprintln!("run {}: {msg}", self.name);
    }
    fn warn(&self, msg: &str) {
        eprintln!("run {}: warning: {msg}", self.name);
    }
    fn error(&self, msg: &str) {
        eprintln!("run {}: error: {msg}", self.name);
    }
    fn started(&self, meta: &flowrt_runtime::runs::RunMeta, progress: &batch::Progress) {
        eprintln!(
            "batch run {} started: {} lines ({} kept), concurrency: {}",
            self.name, meta.total_lines, progress.kept, meta.concurrency
        );
        if let Some(tx) = self.started.lock().ok().and_then(|mut s| s.take()) {
            let _ = tx.send(());
        }
    }
}

impl Agent {
    /// Whether a batch run started here is still running (finished ones are reaped).
    fn batch_running(&self) -> bool {
        let Ok(mut batches) = self.batches.lock() else {
            return false;
        };
        batches.retain(|_, b| !b.is_finished());
        !batches.is_empty()
    }

    /// A stopping session ends its batch runs: each is canceled (finished lines are kept and
    /// `--resume-from` continues it, its workers are stopped), waiting up to 5 s for them (what
    /// is left then ends with the process).
    async fn stop_batches(&self) {
        let batches: Vec<Batch> = match self.batches.lock() {
            Ok(mut b) => b.drain().map(|(_, b)| b).collect(),
            Err(_) => return,
        };
        for b in &batches {
            b.cancel.cancel("the session is stopping");
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) && batches.iter().any(|b| !b.is_finished()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

type Shared = Arc<Agent>;

/// Run the agent until it is told to stop (`POST /shutdown`, SIGTERM), its session folder
/// disappears, or it has been idle for its idle exit.
pub fn run(config: AgentConfig) -> Result<()> {
    let token = agent_token(&config)?;
    let home = flowrt_store::flowrt_home();
    // Bound before anything else: a joining agent tells the server this address.
    let std_listener = std::net::TcpListener::bind(&config.bind)
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    std_listener.set_nonblocking(true)?;
    let mut connections = initial_connections(&config, &home)?;
    isolate(&config)?;
    // A joining agent (Ray) dials its server before anything of the session's runs: it receives
    // the connections and, when the node shares no disk with the server, the flow itself.
    let mut received = None;
    if let Some(join) = &config.join {
        let addr = advertised(std_listener.local_addr()?, &join.url);
        let (joined_connections, flow) = join_and_receive(join, &config.session_id, &addr, &token)?;
        connections = joined_connections;
        received = Some(flow);
    }
    let (flow_path, python) = flow_and_python(&config, received)?;
    let python = seal_if_asked(&config, &home, python)?;
    // Small sessions idle in a few MB: two runtime threads are plenty for one session's traffic.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let log = Arc::new(AgentLog::default());
    let loaded = runtime.block_on(loaded::Loaded::open(loaded::OpenFlow {
        path: &flow_path,
        home: &home,
        python: &python,
        connections: &connections,
        workers: config.workers,
        observer: log.clone(),
        variant: None,
    }))?;
    let drafts = drafts::Drafts::new(&std::env::current_dir()?, python.clone(), home.clone());
    let agent = Arc::new(Agent {
        session_id: config.session_id.clone(),
        token,
        home,
        log_file: std::env::current_dir()?.join("agent.log"),
        python,
        workers: config.workers,
        connections,
        batches: Mutex::new(HashMap::new()),
        current: std::sync::RwLock::new(Arc::new(loaded)),
        log: log.clone(),
        running: AtomicUsize::new(0),
        runs_total: AtomicU64::new(0),
        last_activity: Mutex::new(Instant::now()),
        shutdown: tokio::sync::Notify::new(),
        drafts,
    });
    let app = router(agent.clone());
    runtime.block_on(serve(config, std_listener, app, agent, log))?;
    Ok(())
}

/// The bearer token every request must carry: read from the token file, or drawn here by a
/// joining agent (it gives it to the server once it is verified).
fn agent_token(config: &AgentConfig) -> Result<String> {
    let token = match (&config.token_file, &config.join) {
        (Some(file), _) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the agent token {}", file.display()))?
            .trim()
            .to_string(),
        // A joining agent draws its own token and gives it to the server once it is verified.
        (None, Some(_)) => flowrt_session::backend::random_hex(32)?,
        (None, None) => anyhow::bail!("an agent needs --token-file unless it joins a server"),
    };
    if token.is_empty() {
        anyhow::bail!("the agent token file is empty");
    }
    Ok(token)
}

/// The connections the flow uses, by name, as the agent starts: from stdin (with the session
/// identity's service principal, signed in at once), none yet for a joining agent (the server
/// sends them), else `FLOWRT_HOME`'s.
fn initial_connections(
    config: &AgentConfig,
    home: &std::path::Path,
) -> Result<HashMap<String, flowrt_api::Connection>> {
    if config.connections_stdin {
        let secrets = invoker::secrets_from_stdin()?;
        if let Some(principal) = secrets.entra {
            flowrt_tools::sign_in_as_session_identity(principal);
        }
        Ok(secrets
            .connections
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect())
    } else if config.join.is_some() {
        Ok(HashMap::new())
    } else {
        invoker::load_connections(home)
    }
}

/// Keep the session to itself: its memory hidden from processes of the same user, its own PID
/// namespace when sealed, and its own user with `--run-as-uid`.
fn isolate(config: &AgentConfig) -> Result<()> {
    // The agent holds its session's connections: no other session's code may read its memory.
    if let Err(e) = flowrt_session::isolate::hide_from_same_user() {
        eprintln!("warning: cannot hide the agent's memory: {e}");
    }
    if config.seal {
        // Its own PID namespace and /proc first: a sealed process may no longer mount.
        let view = flowrt_session::isolate::enter_own_pid_namespace()
            .context("cannot give the session a PID namespace of its own")?;
        eprintln!("session {}: {}", config.session_id, view.describe());
    }
    if let Some(uid) = config.run_as_uid {
        flowrt_session::isolate::become_user(uid)
            .with_context(|| format!("cannot run the session as user {uid}"))?;
        // A change of user makes a process dumpable again.
        if let Err(e) = flowrt_session::isolate::hide_from_same_user() {
            eprintln!("warning: cannot hide the agent's memory: {e}");
        }
        eprintln!(
            "session {}: runs as user {uid} of its own",
            config.session_id
        );
    }
    Ok(())
}

/// Join the server at `join` as the agent of `session_id` listening at `addr`: commit to a
/// fresh secret in the job's log, then receive the connections (by name) and the flow. The
/// identity's service principal, when it has one, is signed in at once.
fn join_and_receive(
    join: &Join,
    session_id: &str,
    addr: &str,
    token: &str,
) -> Result<(
    HashMap<String, flowrt_api::Connection>,
    flowrt_api::responses::AgentFlow,
)> {
    let secret = flowrt_session::backend::random_hex(32)?;
    commit_to_join(&secret)?;
    let joined = join_server(join, session_id, addr, &secret, token)?;
    let connections = joined
        .connections
        .into_iter()
        .map(|c| (c.name.clone(), c))
        .collect();
    if let Some(principal) = joined.entra {
        flowrt_tools::sign_in_as_session_identity(principal);
    }
    eprintln!("session {session_id}: joined its server");
    Ok((connections, joined.flow))
}

/// The flow to load and the interpreter to run it with: given on this machine, or received
/// from the server (`received`), unpacked here and its environment built on this node.
fn flow_and_python(
    config: &AgentConfig,
    received: Option<flowrt_api::responses::AgentFlow>,
) -> Result<(PathBuf, PathBuf)> {
    match (&config.source, received) {
        (FlowSource::Local { flow, python }, _) => Ok((flow.clone(), python.clone())),
        (FlowSource::FromServer { node_cache }, Some(flow)) => {
            eprintln!(
                "session {}: received flow {}; preparing its environment on this node",
                config.session_id, flow.hash
            );
            // Installs run sealed, as the session will: a build script is its user's code.
            let deny = config.deny_connect_ports.clone();
            receive_flow(
                &flow,
                &std::env::current_dir()?.join("flow"),
                node_cache,
                config.seal.then_some(deny.as_slice()),
            )
        }
        (FlowSource::FromServer { .. }, None) => {
            anyhow::bail!("--flow-from-server needs a server to join (FLOWRT_JOIN_URL)")
        }
    }
}

/// With `--seal`, seal this process (and what it starts) to its folder, `home`, its Python and
/// the agent's executable, denying the ports asked: the interpreter it then runs (the resolved
/// executable the seal allows). Without it, `python` as it is; denying ports needs a seal.
fn seal_if_asked(config: &AgentConfig, home: &std::path::Path, python: PathBuf) -> Result<PathBuf> {
    if !config.seal {
        if !config.deny_connect_ports.is_empty() {
            anyhow::bail!("--deny-connect-ports needs --seal: only a sealed agent can deny ports");
        }
        return Ok(python);
    }
    // While this process has one thread: a seal covers the calling thread and what it starts.
    let paths = flowrt_session::seal::python_paths(&python)?;
    let mut read_exec = paths.read;
    read_exec.push(std::env::current_exe()?);
    let policy = flowrt_session::seal::SealPolicy {
        read_write: vec![std::env::current_dir()?, home.to_path_buf()],
        read_exec,
        deny_connect_ports: config.deny_connect_ports.clone(),
    };
    let sealed = flowrt_session::seal::seal_self(&policy)?;
    eprintln!("session {}: {}", config.session_id, sealed.describe());
    if !policy.deny_connect_ports.is_empty() {
        let ports = policy.deny_connect_ports.len();
        if flowrt_session::seal::filters_connections() {
            eprintln!(
                "session {}: connections to the cluster's {ports} control ports are refused",
                config.session_id
            );
        } else {
            eprintln!(
                "session {}: warning: this kernel cannot filter connections (Landlock before Linux 6.7): the session's code can reach the cluster's {ports} control ports",
                config.session_id
            );
        }
    }
    Ok(paths.executable)
}

/// The agent's routes, each behind its bearer token.
fn router(agent: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/lines", post(lines))
        .route("/lines/stream", post(lines_stream))
        .route("/batch", post(start_batch))
        .route("/batch/{name}/cancel", post(cancel_batch))
        .route("/runs/tail", post(tail_run))
        // An import names data files sent before (streamed): its body is small.
        .route("/runs/import", post(import_run))
        .route("/data/{file}", get(has_data).put(put_data))
        .route("/log", get(read_log))
        .route("/packages", get(packages))
        .route("/draft/inspect", post(inspect_draft))
        .route("/draft/line", post(draft_line))
        .route("/flow", post(switch_flow))
        .route("/tools", get(package_tools))
        .route("/shutdown", post(shutdown))
        .layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            require_token,
        ))
        .with_state(agent)
}

/// Serve `app` until the agent is told to stop, having said where it listens (the address file,
/// the server's sign that it is ready) and started the long-running warnings and the watchdog;
/// then end its batch runs, drafts and workers.
async fn serve(
    config: AgentConfig,
    std_listener: std::net::TcpListener,
    app: Router,
    agent: Shared,
    log: Arc<AgentLog>,
) -> Result<()> {
    let interval = Duration::from_secs_f64(config.long_running_interval.max(0.05));
    let listener = tokio::net::TcpListener::from_std(std_listener).context("cannot listen")?;
    let addr = listener.local_addr()?;
    // Written last and atomically: the server reads it as "the agent is listening".
    let tmp = config.addr_file.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{addr}")?;
    drop(f);
    std::fs::rename(&tmp, &config.addr_file)?;
    // The session log is its owner's to read: no address or server path in it.
    eprintln!("agent for session {} is ready", config.session_id);
    tokio::spawn(warn_long_running(log, interval));
    tokio::spawn(watchdog(
        agent.clone(),
        // Either file goes with the session folder; a joining agent has no token file.
        config
            .token_file
            .clone()
            .unwrap_or_else(|| config.addr_file.clone()),
        config.idle_exit,
        config.watch_interval,
    ));
    let stop = agent.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = stop.shutdown.notified() => {}
                _ = flowrt_session::shutdown_signal() => {}
            }
        })
        .await?;
    agent.stop_batches().await;
    agent.drafts.shutdown().await;
    agent.loaded().invoker.shutdown().await;
    eprintln!("agent for session {} stopped", config.session_id);
    Ok(())
}

/// Say in the session log, at most each second, which nodes have been running for another
/// `interval`.
async fn warn_long_running(log: Arc<AgentLog>, interval: Duration) {
    let mut tick = tokio::time::interval(interval.min(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        for d in log.running.due(interval) {
            eprintln!("{d}");
        }
    }
}

/// An agent whose server is gone for good stops by itself: when its session folder is deleted
/// (its token file goes with it), or after `idle_exit` seconds without a run (well past the
/// server's own idle timeout).
async fn watchdog(agent: Shared, token_file: PathBuf, idle_exit: f64, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if !token_file.exists() {
            eprintln!("the session folder is gone: stopping");
            agent.shutdown.notify_one();
            return;
        }
        let idle = agent
            .last_activity
            .lock()
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let busy = agent.running.load(Ordering::SeqCst) > 0 || agent.batch_running();
        if idle_exit > 0.0 && !busy && idle > idle_exit {
            eprintln!("idle for {idle:.0} s with no word from the server: stopping");
            agent.shutdown.notify_one();
            return;
        }
    }
}

/// Every request carries the session's token: the agent runs user code as its owner.
async fn require_token(
    State(a): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    // Compare in time independent of where the first difference is.
    let same = given.len() == a.token.len()
        && given
            .bytes()
            .zip(a.token.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0;
    if !same {
        return error_reply(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "this agent answers its server only",
        );
    }
    next.run(req).await
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    offset: u64,
}

/// The session log from `offset`, at most 1 MiB: `{text, offset}` with the offset to ask next.
/// The server reads it here, not from a disk it shares with this node.
async fn read_log(
    State(a): State<Shared>,
    axum::extract::Query(q): axum::extract::Query<LogQuery>,
) -> Response {
    use std::io::{Read, Seek};
    let path = a.log_file.clone();
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        f.seek(std::io::SeekFrom::Start(q.offset))?;
        let mut bytes = Vec::new();
        f.take(1024 * 1024).read_to_end(&mut bytes)?;
        Ok(bytes)
    })
    .await;
    match read {
        Ok(Ok(bytes)) => Json(LogPiece {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            offset: q.offset + bytes.len() as u64,
        })
        .into_response(),
        Ok(Err(e)) => error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Log,
            &e.to_string(),
        ),
        Err(e) => error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Log,
            &e.to_string(),
        ),
    }
}

/// The packages installed in the session's environment (built on this node).
async fn packages(State(a): State<Shared>) -> Response {
    let python = a.python.clone();
    match tokio::task::spawn_blocking(move || flowrt_python::installed_packages_by_python(&python))
        .await
    {
        Ok(Ok(list)) => Json(
            list.into_iter()
                .map(|p| PackageView {
                    name: p.name,
                    version: p.version,
                    source: match p.source {
                        flowrt_python::PackageSource::Base => PackageOrigin::Base,
                        flowrt_python::PackageSource::Requirements => PackageOrigin::Requirements,
                    },
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Ok(Err(e)) => error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Packages,
            &e.to_string(),
        ),
        Err(e) => error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Packages,
            &e.to_string(),
        ),
    }
}

/// A refusal, as the agent protocol has them ([`AgentError`]).
fn error_reply(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (status, Json(AgentError::new(code, message))).into_response()
}

async fn health(State(a): State<Shared>) -> Json<AgentHealth> {
    Json(AgentHealth {
        status: "ok".into(),
        session_id: a.session_id.clone(),
        pid: flowrt_session::isolate::visible_pid(),
    })
}

async fn status(State(a): State<Shared>) -> Json<AgentStatus> {
    let idle = a
        .last_activity
        .lock()
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or(0.0);
    Json(AgentStatus {
        running: a.running.load(Ordering::SeqCst),
        idle_seconds: idle,
        runs_total: a.runs_total.load(Ordering::SeqCst),
    })
}

fn touch(a: &Agent) {
    if let Ok(mut t) = a.last_activity.lock() {
        *t = Instant::now();
    }
}

/// Counts a run as active while it lives, so idle shutdown never stops a busy session.
struct Active<'a>(&'a Agent);
impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        touch(self.0);
    }
}

impl<'a> Active<'a> {
    /// Count a line run from now until the guard drops.
    fn begin(a: &'a Agent) -> Self {
        a.running.fetch_add(1, Ordering::SeqCst);
        a.runs_total.fetch_add(1, Ordering::SeqCst);
        touch(a);
        Active(a)
    }
}

/// A line request's inputs checked against the flow, or the 400 that says why not.
fn line_inputs(
    cur: &loaded::Loaded,
    req: &LineRequest,
) -> Result<IndexMap<String, Value>, Box<Response>> {
    prepare_inputs(cur.executor.flow(), &req.inputs).map_err(|e| {
        Box::new(error_reply(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadInputs,
            &e.to_string(),
        ))
    })
}

/// What a line run answers: outputs, error, node runs with their logs and timings, duration.
fn line_reply(line: &flowrt_executor::LineResult, traceback: bool) -> LineResult {
    let error = line.error.as_ref().map(|e| LineFailure {
        node: e.node.clone(),
        error_type: e.failure.error_type.clone(),
        message: e.failure.message.clone(),
        traceback: e.failure.traceback.clone().filter(|_| traceback),
        display: e.to_string(),
    });
    LineResult {
        outputs: match error {
            None => serde_json::to_value(&line.outputs).unwrap_or(Value::Null),
            Some(_) => Value::Null,
        },
        error,
        node_runs: serde_json::to_value(&line.node_runs).unwrap_or(Value::Null),
        duration: line.duration.as_secs_f64(),
        bare_output: line.bare_output,
        result_repr: line.result_repr.clone(),
        spans: Vec::new(),
    }
}

/// A line request that brings connections: the lines from now on use them (a deployment's
/// owner changed one). Their names only are logged.
fn take_connections(a: &Agent, req: &mut LineRequest) -> Result<(), Box<Response>> {
    let Some(list) = req.connections.take() else {
        return Ok(());
    };
    let names: Vec<String> = list.iter().map(|c| c.name.clone()).collect();
    let map = list.into_iter().map(|c| (c.name.clone(), c)).collect();
    match a.loaded().invoker.set_connections(map) {
        Ok(stale) => {
            eprintln!("connections updated: {}", names.join(", "));
            if !stale.is_empty() {
                eprintln!(
                    "warning: environment variables read {} at start: the Python workers keep the old values until this session restarts",
                    stale.join(", ")
                );
            }
            Ok(())
        }
        Err(e) => Err(Box::new(error_reply(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadConnections,
            &format!("the new connections do not fit the flow: {e}"),
        ))),
    }
}

async fn lines(State(a): State<Shared>, Json(mut req): Json<LineRequest>) -> Response {
    let _active = Active::begin(&a);
    if let Err(response) = take_connections(&a, &mut req) {
        return *response;
    }
    let cur = a.loaded();
    let inputs = match line_inputs(&cur, &req) {
        Ok(i) => i,
        Err(response) => return *response,
    };
    let line = cur.executor.run_line(0, inputs).await;
    let mut reply = line_reply(&line, true);
    if let Some(trace) = &req.trace {
        reply.spans = flowrt_runtime::otel::line_spans(cur.executor.flow(), &line, trace);
    }
    Json(reply).into_response()
}

/// `POST /lines/stream`: one line as server-sent events: `node` events as each node starts and
/// ends (`{"node", "status", "duration"}`), `chunk` events with the streamed LLM reply as it
/// arrives (`{"output", "text"}`), then one `result` event with what `/lines` answers (outputs,
/// error, node runs with their logs and timings, duration).
async fn lines_stream(State(a): State<Shared>, Json(mut req): Json<LineRequest>) -> Response {
    if let Err(response) = take_connections(&a, &mut req) {
        return *response;
    }
    let cur = a.loaded();
    let inputs = match line_inputs(&cur, &req) {
        Ok(i) => i,
        Err(response) => return *response,
    };
    let trace = req.trace.clone();
    let (events_tx, mut events_rx) =
        tokio::sync::mpsc::unbounded_channel::<Result<axum::body::Bytes, std::io::Error>>();
    let event = |name: &str, v: &Value| {
        Ok(axum::body::Bytes::from(format!(
            "event: {name}\ndata: {}\n\n",
            flowrt_flow::pyvalue::py_json_dumps(v)
        )))
    };
    let target = invoker::stream_output(cur.executor.flow());
    let agent = a.clone();
    tokio::spawn(async move {
        let _active = Active::begin(&agent);
        // One channel for the reply's pieces and the nodes' starts and ends, relayed in order.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let forward = events_tx.clone();
        let output = target.as_ref().map(|(o, _)| o.clone());
        let relay = tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                let node = text
                    .strip_prefix(NODE_EVENT_MARK)
                    .and_then(|t| serde_json::from_str::<Value>(t).ok())
                    .filter(|v| v.get("node").is_some());
                let sent = match node {
                    Some(v) => forward.send(event("node", &v)),
                    None => forward.send(event("chunk", &json!({"output": output, "text": text}))),
                };
                if sent.is_err() {
                    break;
                }
            }
        });
        let sink_tx = tx.clone();
        let runner = cur.clone();
        let run = async move {
            match &target {
                Some((_, node)) => {
                    let sink = invoker::StreamSink {
                        nodes: std::collections::HashSet::from([node.clone()]),
                        tx: sink_tx,
                    };
                    invoker::STREAM_SINK
                        .scope(sink, runner.executor.run_line(0, inputs))
                        .await
                }
                None => runner.executor.run_line(0, inputs).await,
            }
        };
        // Every sender goes with the line (the scope's and the sink's), so the relay ends then.
        let line = NODE_EVENTS.scope(tx, run).await;
        let _ = relay.await;
        let mut reply = line_reply(&line, false);
        if let Some(trace) = &trace {
            reply.spans = flowrt_runtime::otel::line_spans(cur.executor.flow(), &line, trace);
        }
        let result = serde_json::to_value(reply).unwrap_or(Value::Null);
        let _ = events_tx.send(event("result", &result));
    });
    let stream = futures::stream::poll_fn(move |cx| events_rx.poll_recv(cx));
    Response::builder()
        .status(StatusCode::OK)
        .header(axum::http::header::CONTENT_TYPE, "text/event-stream")
        .header(axum::http::header::CACHE_CONTROL, "no-cache")
        .body(axum::body::Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `error: ...` with any `hint:` lines and causes, as the CLI prints a run that cannot start.
fn reason(e: &anyhow::Error) -> String {
    let mut text = format!("error: {e}");
    for cause in e.chain().skip(1) {
        text.push_str(&format!("\n  caused by: {cause}"));
    }
    text
}

/// Start a batch run in this session, in-process: its lines run on this agent's runtime with
/// their own Python workers (in the session's environment and limits), its records in the
/// run's usual folder under the session's. Bad input (data, mapping, flow) is answered with the
/// reason; otherwise the answer comes once the run has recorded itself.
async fn start_batch(State(a): State<Shared>, Json(req): Json<BatchRequest>) -> Response {
    let name = req.name.clone();
    if a.batches
        .lock()
        .is_ok_and(|b| b.get(&name).is_some_and(|b| !b.is_finished()))
    {
        return error_reply(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            &format!("run '{name}' is already running"),
        );
    }
    let request = batch::BatchRequest {
        flow: Some(a.loaded().flow_dir.clone()),
        data: req.data.clone(),
        column_mapping: req.column_mapping.clone(),
        run: req.run.clone(),
        name: Some(name.clone()),
        output_dir: None,
        variant: req.variant.clone(),
        resume_from: req.resume_from.clone(),
        init: None,
        concurrency: req.concurrency,
        line_timeout: req.line_timeout,
        batch_timeout: None,
        long_running_interval: 60.0,
        stream: false,
        lines: req.lines,
        prior_records: req.prior_records.clone(),
        trace: req.trace.clone(),
    };
    let compute = batch::Compute {
        python: Some(a.python.clone()),
        connections: a.connections.clone(),
        workers: req.workers.unwrap_or(a.workers).max(1),
    };
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let reporter = Arc::new(BatchLog {
        name: name.clone(),
        started: Mutex::new(Some(started_tx)),
    });
    let cancel = Cancel::new();
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<String>();
    let agent = a.clone();
    let run_name = name.clone();
    let run_cancel = cancel.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finished = done.clone();
    // A batch runs on its own thread and runtime, as an embedded `run create` does: its line
    // loop and writer neither compete with this agent's request handling on the agent's two
    // runtime threads nor hold it up (it reads and writes files as it goes).
    let thread = std::thread::Builder::new()
        .name(format!("batch {name}"))
        .spawn(move || {
            let ran = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| {
                    let home = match request.lines {
                        Some(_) => agent.home.join(flowrt_session::client::CHUNKS_DIR),
                        None => agent.home.clone(),
                    };
                    rt.block_on(batch::create(request, compute, &home, reporter, run_cancel))
                });
            match ran {
                Ok(outcome) => {
                    let m = outcome.meta;
                    eprintln!(
                        "batch run {run_name} {:?}: {} of {} lines completed, {} failed",
                        m.status, m.completed_lines, m.total_lines, m.failed_lines
                    );
                }
                Err(e) => {
                    let text = reason(&e);
                    eprintln!("batch run {run_name}: {text}");
                    let _ = failed_tx.send(text);
                }
            }
            touch(&agent);
            finished.store(true, Ordering::SeqCst);
        });
    if let Err(e) = thread {
        return error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::BatchFailed,
            &format!("cannot start run '{name}': {e}"),
        );
    }
    touch(&a);
    if let Ok(mut b) = a.batches.lock() {
        b.insert(name.clone(), Batch { cancel, done });
    }
    // Within moments a run has either recorded itself or failed on bad input; one still opening
    // its flow after that is answered as started (the server's request does not wait longer).
    match tokio::time::timeout(Duration::from_secs(8), started_rx).await {
        Ok(Ok(())) | Err(_) => return Json(BatchStarted { name }).into_response(),
        Ok(Err(_)) => {}
    }
    // The run ended before it started: its reason follows.
    match failed_rx.await {
        Ok(message) => error_reply(StatusCode::BAD_REQUEST, ErrorCode::BadRun, &message),
        Err(_) => error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::BatchFailed,
            &format!("run '{name}' ended before it started"),
        ),
    }
}

/// Cancel a batch run of this session: its lines and workers stop, finished lines are kept.
async fn cancel_batch(State(a): State<Shared>, UrlPath(name): UrlPath<String>) -> Response {
    let found = a.batches.lock().ok().and_then(|b| {
        b.get(&name)
            .filter(|b| !b.is_finished())
            .map(|b| b.cancel.clone())
    });
    match found {
        Some(cancel) => {
            cancel.cancel("canceled");
            eprintln!("batch run {name}: canceling");
            Json(json!({"name": name, "status": "Canceling"})).into_response()
        }
        None => error_reply(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            &format!("run '{name}' is not running in this session"),
        ),
    }
}

fn files_error(e: crate::run_files::RunFilesError) -> Response {
    use crate::run_files::RunFilesError as E;
    let status = match e {
        E::BadName(_) | E::BadFile(_) => StatusCode::BAD_REQUEST,
        E::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_reply(status, ErrorCode::RunFiles, &e.to_string())
}

/// What is new in one of this session's runs, for the server that keeps it in the workspace.
async fn tail_run(
    State(a): State<Shared>,
    Json(req): Json<flowrt_session::client::TailRequest>,
) -> Response {
    let home = a.home.clone();
    match tokio::task::spawn_blocking(move || crate::run_files::tail(&home, &req)).await {
        Ok(Ok(reply)) => Json(reply).into_response(),
        Ok(Err(e)) => files_error(e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A workspace run an evaluation or a resume here reads, written into this session's runs.
async fn import_run(
    State(a): State<Shared>,
    Json(req): Json<flowrt_session::client::ImportRun>,
) -> Response {
    let (home, flow) = (a.home.clone(), a.loaded().flow_dir.clone());
    match tokio::task::spawn_blocking(move || crate::run_files::import(&home, &flow, &req)).await {
        Ok(Ok(())) => Json(json!({"status": "imported"})).into_response(),
        Ok(Err(e)) => files_error(e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Whether this session has data file `file`, and where (data files are named by their hash).
async fn has_data(State(a): State<Shared>, UrlPath(file): UrlPath<String>) -> Response {
    match crate::run_files::data_file(&a.home, &file) {
        Some(path) => Json(DataKept { path }).into_response(),
        None => error_reply(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            &format!("no data file '{file}' here"),
        ),
    }
}

/// Keep data file `file` the server sends, for a batch run here: written as it arrives (a large
/// file is never held in memory), then moved into place.
async fn put_data(
    State(a): State<Shared>,
    UrlPath(file): UrlPath<String>,
    body: axum::body::Body,
) -> Response {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let (tmp, path) = match crate::run_files::data_target(&a.home, &file) {
        Ok(t) => t,
        Err(e) => return files_error(e),
    };
    let failed = |e: String| {
        error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::RunFiles,
            &format!("{}: {e}", path.display()),
        )
    };
    let mut out = match tokio::fs::File::create(&tmp).await {
        Ok(f) => f,
        Err(e) => return failed(e.to_string()),
    };
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let written = match chunk {
            Ok(bytes) => out.write_all(&bytes).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return failed(e);
        }
    }
    if let Err(e) = out.flush().await {
        return failed(e.to_string());
    }
    drop(out);
    match tokio::fs::rename(&tmp, &path).await {
        Ok(()) => Json(DataKept { path }).into_response(),
        Err(e) => failed(e.to_string()),
    }
}

/// Read a draft's code tools in this session (`POST /draft/inspect`).
async fn inspect_draft(
    State(a): State<Shared>,
    Json(req): Json<flowrt_api::agent::DraftInspect>,
) -> Response {
    touch(&a);
    match a.drafts.inspect(req).await {
        Ok(metas) => Json(metas).into_response(),
        Err(drafts::DraftError::Bad(m)) => {
            error_reply(StatusCode::BAD_REQUEST, ErrorCode::BadDraft, &m)
        }
        Err(drafts::DraftError::Io(m)) => error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::DraftFailed,
            &m,
        ),
    }
}

/// The tools the session's installed packages declare (`GET /tools`).
async fn package_tools(State(a): State<Shared>) -> Response {
    touch(&a);
    let flow_dir = a.loaded().flow_dir.clone();
    match a.drafts.package_tools(&flow_dir).await {
        Ok(tools) => Json(tools).into_response(),
        Err(e) => error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ToolsFailed,
            &e.to_string(),
        ),
    }
}

/// Switch the session to another version of its flow (`POST /flow`), without a restart.
async fn switch_flow(
    State(a): State<Shared>,
    Json(req): Json<flowrt_api::agent::SwitchFlow>,
) -> Response {
    touch(&a);
    let versions = match std::env::current_dir() {
        Ok(d) => d.join("versions"),
        Err(e) => {
            return error_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::SwitchFailed,
                &e.to_string(),
            )
        }
    };
    let folder = match drafts::unpack_once(&versions, &req.hash, req.archive_base64).await {
        Ok(f) => f,
        Err(drafts::DraftError::Bad(m)) => {
            return error_reply(StatusCode::BAD_REQUEST, ErrorCode::BadFlow, &m)
        }
        Err(drafts::DraftError::Io(m)) => {
            return error_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::SwitchFailed,
                &m,
            )
        }
    };
    let path = match req.entry.as_deref() {
        Some(e) if !e.contains('/') && !e.starts_with('.') => folder.join(e),
        Some(e) => {
            return error_reply(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadFlow,
                &format!("'{e}' is not a flow file"),
            )
        }
        None => folder,
    };
    let opened = loaded::Loaded::open(loaded::OpenFlow {
        path: &path,
        home: &a.home,
        python: &a.python,
        connections: &a.connections,
        workers: a.workers,
        observer: a.log.clone(),
        variant: None,
    })
    .await;
    let new = match opened {
        Ok(l) => Arc::new(l),
        Err(e) => {
            let message = format!("{} does not open in this session: {e:#}", req.reference);
            return error_reply(StatusCode::BAD_REQUEST, ErrorCode::BadFlow, &message);
        }
    };
    let old = match a.current.write() {
        Ok(mut cur) => std::mem::replace(&mut *cur, new),
        Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), new),
    };
    eprintln!("session {}: now runs flow {}", a.session_id, req.reference);
    // Lines that started on the old version finish on it; then its workers stop.
    tokio::spawn(async move {
        let t = Instant::now();
        while Arc::strong_count(&old) > 1 && t.elapsed() < Duration::from_secs(3600) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        old.invoker.shutdown().await;
    });
    Json(json!({"status": "switched", "flow": req.reference})).into_response()
}

/// Run a line of a draft in this session (`POST /draft/line`).
async fn draft_line(
    State(a): State<Shared>,
    Json(mut req): Json<flowrt_api::agent::DraftLine>,
) -> Response {
    let _active = Active::begin(&a);
    let trace = req.trace.take();
    match a.drafts.run_line(req, &a.connections).await {
        Ok((line, flow)) => {
            let mut reply = line_reply(&line, true);
            if let Some(trace) = &trace {
                reply.spans = flowrt_runtime::otel::line_spans(&flow, &line, trace);
            }
            Json(reply).into_response()
        }
        Err(drafts::DraftError::Bad(m)) => {
            error_reply(StatusCode::BAD_REQUEST, ErrorCode::BadDraft, &m)
        }
        Err(drafts::DraftError::Io(m)) => error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::DraftFailed,
            &m,
        ),
    }
}

async fn shutdown(State(a): State<Shared>) -> Json<Value> {
    a.shutdown.notify_one();
    Json(json!({"status": "stopping"}))
}
