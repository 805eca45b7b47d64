//! `flowrt agent`: one compute session. The control plane starts it as a separate process in the
//! session's working folder and environment; it loads the flow once, keeps its Python workers warm,
//! and answers the server on 127.0.0.1 only:
//! `GET /health`, `GET /status` (activity for idle shutdown), `POST /lines` (one line),
//! `POST /shutdown`.
//! User code runs here, never in the server.

use crate::invoker::{self, FlowInvoker};
use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use flowrt_executor::{prepare_inputs, Executor, ExecutorOptions, NodeRun, RunObserver};
use flowrt_flow::LoadOptions;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct AgentArgs {
    /// The session this agent serves (answered by /health so a restarted server can re-adopt it).
    #[arg(long)]
    pub session_id: String,
    /// The flow folder.
    #[arg(long)]
    pub flow: PathBuf,
    /// The environment's Python interpreter.
    #[arg(long)]
    pub python: PathBuf,
    /// How many Python workers to keep.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Where to write the address it listens on (`127.0.0.1:PORT`).
    #[arg(long)]
    pub addr_file: PathBuf,
    /// A file holding the bearer token every request must carry (other local users can reach
    /// 127.0.0.1 too).
    #[arg(long)]
    pub token_file: PathBuf,
    /// Seconds between "NODE has been running for N seconds" log lines for a slow node.
    #[arg(long, default_value_t = 60.0)]
    pub long_running_interval: f64,
    /// Read the connections the flow uses (a JSON list) from stdin: the server hands them over this
    /// way, so no secret is written into the session folder.
    #[arg(long)]
    pub connections_stdin: bool,
    /// Seal this agent and everything it starts (Landlock) to its session folder, its Python and
    /// the system, before any user code is loaded.
    #[arg(long)]
    pub seal: bool,
    /// Exit after this many seconds without a run, or once the session folder is gone, even if no
    /// server says so (0: only the folder check): the backstop for an agent whose server is gone.
    #[arg(long, default_value_t = 0.0)]
    pub idle_exit: f64,
}

struct Agent {
    session_id: String,
    token: String,
    /// The flow folder as given (batch runs resolve includes themselves).
    flow_dir: PathBuf,
    python: PathBuf,
    /// The connections the flow uses, handed to each batch run over its stdin.
    connections_json: String,
    /// Batch runs started in this session, still running.
    batches: Mutex<Vec<std::process::Child>>,
    executor: Executor<FlowInvoker>,
    running: AtomicUsize,
    runs_total: AtomicU64,
    last_activity: Mutex<Instant>,
    shutdown: tokio::sync::Notify,
}

/// Logs node output and the long-running warnings to the agent log (stderr).
#[derive(Default)]
struct AgentLog {
    running: flowrt_executor::LongRunning,
}

impl RunObserver for AgentLog {
    fn node_started(&self, line: Option<usize>, node: &str) {
        self.running.started(line, node);
    }
    fn node_finished(&self, line: Option<usize>, run: &NodeRun) {
        self.running.finished(line, &run.node);
        for l in run.logs.lines() {
            eprintln!("[{}] {l}", run.node);
        }
    }
}

impl Agent {
    /// Whether a batch run started here is still running (finished ones are reaped).
    fn batch_running(&self) -> bool {
        let Ok(mut batches) = self.batches.lock() else {
            return false;
        };
        batches.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        !batches.is_empty()
    }

    /// A stopping session ends its batch runs: SIGTERM cancels each (finished lines are kept and
    /// `--resume-from` continues it), then SIGKILL for any that has not ended within 5 s.
    fn stop_batches(&self) {
        let Ok(mut batches) = self.batches.lock() else {
            return;
        };
        for child in batches.iter() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5)
            && batches.iter_mut().any(|c| matches!(c.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for child in batches.iter_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        batches.clear();
    }
}

type Shared = Arc<Agent>;

pub fn run(args: AgentArgs) -> Result<u8> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("cannot read the agent token {}", args.token_file.display()))?
        .trim()
        .to_string();
    if token.is_empty() {
        anyhow::bail!(
            "the agent token file {} is empty",
            args.token_file.display()
        );
    }
    let home = flowrt_store::flowrt_home();
    let connections = if args.connections_stdin {
        invoker::connections_from_stdin()?
    } else {
        invoker::load_connections(&home)?
    };
    let mut python = args.python.clone();
    if args.seal {
        // While this process has one thread: a seal covers the calling thread and what it starts.
        let paths = flowrt_session::seal::python_paths(&args.python)?;
        python = paths.executable.clone();
        let mut read_exec = paths.read;
        read_exec.push(std::env::current_exe()?);
        let policy = flowrt_session::seal::SealPolicy {
            read_write: vec![std::env::current_dir()?, home.clone()],
            read_exec,
        };
        let status = flowrt_session::seal::seal_self(&policy)?;
        eprintln!("session {}: {}", args.session_id, status.describe());
    }
    let merged = crate::includes::Merged::new(&args.flow, &home)?;
    let mut flow = merged.load(&LoadOptions::default())?;
    let connections_json = serde_json::to_string(&connections.values().collect::<Vec<_>>())?;
    let env = invoker::environment(&flow, &connections)?;
    let spec = invoker::needs_python(&flow).then(|| flowrt_python::WorkerSpec {
        python: python.clone(),
        flow_dir: flow.dir.clone(),
        env,
        state_dir: home.clone(),
    });
    // Every LLM retry says what failed and how long it waits (on stderr: the server's or the
    // session's log).
    let invoker = Arc::new(
        FlowInvoker::new(&flow, connections, spec, args.workers)?
            .with_retry_listener(Arc::new(|e| eprintln!("warning: {e}"))),
    );
    // Small sessions idle in a few MB: two runtime threads are plenty for one session's traffic.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // A flex flow is typed by its entry's signature (a class entry uses its sample.init).
    if let Err(e) = runtime.block_on(crate::flex::finish(&mut flow, &invoker, None)) {
        runtime.block_on(invoker.shutdown());
        return Err(e);
    }
    let flow = Arc::new(flow);
    let log = Arc::new(AgentLog::default());
    let executor = Executor::new(
        flow.clone(),
        invoker.clone(),
        log.clone(),
        ExecutorOptions::default(),
    );
    let agent = Arc::new(Agent {
        session_id: args.session_id.clone(),
        token,
        flow_dir: args.flow.clone(),
        python: python.clone(),
        connections_json,
        batches: Mutex::new(Vec::new()),
        executor,
        running: AtomicUsize::new(0),
        runs_total: AtomicU64::new(0),
        last_activity: Mutex::new(Instant::now()),
        shutdown: tokio::sync::Notify::new(),
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/lines", post(lines))
        .route("/lines/stream", post(lines_stream))
        .route("/batch", post(batch))
        .route("/shutdown", post(shutdown))
        .layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            require_token,
        ))
        .with_state(agent.clone());
    let interval = Duration::from_secs_f64(args.long_running_interval.max(0.05));
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        // Written last and atomically: the server reads it as "the agent is listening".
        let tmp = args.addr_file.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{addr}")?;
        drop(f);
        std::fs::rename(&tmp, &args.addr_file)?;
        eprintln!(
            "agent for session {} listening on {addr} (flow {})",
            args.session_id,
            flow.dir.display()
        );
        let warn_log = log.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval.min(Duration::from_secs(1)));
            loop {
                tick.tick().await;
                for d in warn_log.running.due(interval) {
                    eprintln!("{d}");
                }
            }
        });
        // An agent whose server is gone for good stops by itself: when its session folder is
        // deleted, or after a long idle spell (well past the server's own idle timeout).
        let watchdog = agent.clone();
        let token_file = args.token_file.clone();
        let idle_exit = args.idle_exit;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                if !token_file.exists() {
                    eprintln!("the session folder is gone: stopping");
                    watchdog.shutdown.notify_one();
                    return;
                }
                let idle = watchdog
                    .last_activity
                    .lock()
                    .map(|t| t.elapsed().as_secs_f64())
                    .unwrap_or(0.0);
                let busy = watchdog.running.load(Ordering::SeqCst) > 0 || watchdog.batch_running();
                if idle_exit > 0.0 && !busy && idle > idle_exit {
                    eprintln!("idle for {idle:.0} s with no word from the server: stopping");
                    watchdog.shutdown.notify_one();
                    return;
                }
            }
        });
        let stop = agent.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = stop.shutdown.notified() => {}
                    _ = flowrt_server::shutdown_signal() => {}
                }
            })
            .await?;
        agent.stop_batches();
        invoker.shutdown().await;
        eprintln!("agent for session {} stopped", args.session_id);
        Ok::<_, anyhow::Error>(())
    })?;
    drop(merged);
    Ok(0)
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
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"code": "Unauthorized", "message": "this agent answers its server only"})),
        )
            .into_response();
    }
    next.run(req).await
}

async fn health(State(a): State<Shared>) -> Json<Value> {
    Json(json!({"status": "ok", "session_id": a.session_id, "pid": std::process::id()}))
}

async fn status(State(a): State<Shared>) -> Json<Value> {
    let idle = a
        .last_activity
        .lock()
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or(0.0);
    Json(json!({
        "running": a.running.load(Ordering::SeqCst),
        "idle_seconds": idle,
        "runs_total": a.runs_total.load(Ordering::SeqCst),
    }))
}

#[derive(Deserialize)]
struct LineRequest {
    #[serde(default)]
    inputs: IndexMap<String, Value>,
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

async fn lines(State(a): State<Shared>, Json(req): Json<LineRequest>) -> Response {
    a.running.fetch_add(1, Ordering::SeqCst);
    a.runs_total.fetch_add(1, Ordering::SeqCst);
    touch(&a);
    let _active = Active(&a);
    let inputs = match prepare_inputs(a.executor.flow(), &req.inputs) {
        Ok(i) => i,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"code": "BadInputs", "message": e.to_string()})),
            )
                .into_response()
        }
    };
    let line = a.executor.run_line(0, inputs).await;
    let error = line.error.as_ref().map(|e| json!({"node": e.node, "error_type": e.failure.error_type, "message": e.failure.message, "traceback": e.failure.traceback, "display": e.to_string()}));
    Json(json!({
        "outputs": if error.is_none() { serde_json::to_value(&line.outputs).unwrap_or(Value::Null) } else { Value::Null },
        "error": error,
        "node_runs": line.node_runs,
        "duration": line.duration.as_secs_f64(),
    }))
    .into_response()
}

/// `POST /lines/stream`: one line as server-sent events: `chunk` events carry the streamed LLM
/// reply as it arrives (`{"output", "text"}`), then one `result` event with what `/lines` answers
/// (outputs, error, node runs with their logs and timings, duration).
async fn lines_stream(State(a): State<Shared>, Json(req): Json<LineRequest>) -> Response {
    let inputs = match prepare_inputs(a.executor.flow(), &req.inputs) {
        Ok(i) => i,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"code": "BadInputs", "message": e.to_string()})),
            )
                .into_response()
        }
    };
    let (events_tx, mut events_rx) =
        tokio::sync::mpsc::unbounded_channel::<Result<axum::body::Bytes, std::io::Error>>();
    let event = |name: &str, v: &Value| {
        Ok(axum::body::Bytes::from(format!(
            "event: {name}\ndata: {}\n\n",
            flowrt_flow::pyvalue::py_json_dumps(v)
        )))
    };
    let target = crate::invoker::stream_output(a.executor.flow());
    let agent = a.clone();
    tokio::spawn(async move {
        agent.running.fetch_add(1, Ordering::SeqCst);
        agent.runs_total.fetch_add(1, Ordering::SeqCst);
        touch(&agent);
        let _active = Active(&agent);
        let line = match &target {
            Some((output, node)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let sink = crate::invoker::StreamSink {
                    nodes: std::collections::HashSet::from([node.clone()]),
                    tx,
                };
                let forward = events_tx.clone();
                let output = output.clone();
                let relay = tokio::spawn(async move {
                    while let Some(text) = rx.recv().await {
                        if forward
                            .send(event("chunk", &json!({"output": output, "text": text})))
                            .is_err()
                        {
                            break;
                        }
                    }
                });
                let line = crate::invoker::STREAM_SINK
                    .scope(sink, agent.executor.run_line(0, inputs))
                    .await;
                let _ = relay.await;
                line
            }
            None => agent.executor.run_line(0, inputs).await,
        };
        let error = line.error.as_ref().map(|e| json!({"node": e.node, "error_type": e.failure.error_type, "message": e.failure.message, "display": e.to_string()}));
        let result = json!({
            "outputs": if error.is_none() { serde_json::to_value(&line.outputs).unwrap_or(Value::Null) } else { Value::Null },
            "error": error,
            "node_runs": line.node_runs,
            "duration": line.duration.as_secs_f64(),
        });
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

#[derive(Deserialize)]
struct BatchRequest {
    name: String,
    /// `run create` options after `--flow`, `--name` and `--python` (data, mapping, ...).
    args: Vec<String>,
}

/// Start a batch run in this session: `flowrt run create` as the agent's child, in the session's
/// environment and limits. It outlives a server restart; its records are the run's usual folder.
async fn batch(State(a): State<Shared>, Json(req): Json<BatchRequest>) -> Response {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"code": "Spawn", "message": e.to_string()})),
            )
                .into_response()
        }
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("run")
        .arg("create")
        .arg("--flow")
        .arg(&a.flow_dir)
        .arg("--name")
        .arg(&req.name)
        .arg("--python")
        .arg(&a.python)
        .args(&req.args)
        .arg("--connections-stdin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    // Its own log, so a run that cannot start says why to whoever started it.
    let log_path = PathBuf::from(format!("batch-{}.log", req.name));
    if let Ok(log) = std::fs::File::create(&log_path) {
        cmd.stderr(log);
    }
    match cmd.spawn() {
        Ok(mut child) => {
            if let Some(mut stdin) = child.stdin.take() {
                // A pipe only this agent holds: the secrets never touch a file.
                let _ = stdin.write_all(a.connections_json.as_bytes());
            }
            // Bad input (data, mapping, flow) fails within moments, before the run records
            // itself: answer with the reason, or as soon as the run's record says it started.
            let record = PathBuf::from("runs").join(format!("{}.json", req.name));
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) && !record.exists() {
                match child.try_wait() {
                    Ok(Some(status)) if status.code() == Some(2) => {
                        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                        let reason: Vec<&str> = text
                            .lines()
                            .filter(|l| {
                                l.starts_with("error:")
                                    || l.starts_with("hint:")
                                    || l.starts_with("  ")
                            })
                            .collect();
                        return (
                            StatusCode::BAD_REQUEST,
                            Json(json!({"code": "BadRun", "message": reason.join("\n")})),
                        )
                            .into_response();
                    }
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            eprintln!("batch run {} started (pid {})", req.name, child.id());
            touch(&a);
            if let Ok(mut b) = a.batches.lock() {
                b.push(child);
            }
            Json(json!({"name": req.name})).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"code": "Spawn", "message": e.to_string()})),
        )
            .into_response(),
    }
}

async fn shutdown(State(a): State<Shared>) -> Json<Value> {
    a.shutdown.notify_one();
    Json(json!({"status": "stopping"}))
}
