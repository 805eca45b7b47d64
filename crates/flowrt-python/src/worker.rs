//! The pool of long-lived Python worker processes and the JSON-lines protocol spoken with them.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{oneshot, watch};

/// How many stderr lines of a worker are kept for crash reports.
const STDERR_TAIL_LINES: usize = 50;

/// How to start worker processes.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    /// Interpreter to run the worker with.
    pub python: PathBuf,
    /// Tools' `source.path` are relative to this; also the worker's cwd and first on `sys.path`.
    pub flow_dir: PathBuf,
    /// Extra environment variables (the flow's `environment_variables`, already stringified).
    pub env: Vec<(String, String)>,
    /// A folder where the embedded Python files may be unpacked.
    pub state_dir: PathBuf,
}

/// One tool invocation.
#[derive(Clone, Debug)]
pub struct ToolCall {
    /// Node name (for errors, and per-node instance caching of class tools).
    pub node: String,
    pub source: ToolSource,
    pub args: Vec<(String, Arg)>,
    /// On timeout the call fails with [`CallError::Timeout`] and the worker is killed and replaced.
    pub timeout: Option<Duration>,
}

/// Where the tool lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolSource {
    /// A `.py` file relative to `flow_dir` with one `@tool` function or one `ToolProvider` subclass
    /// with an `@tool` method.
    Code { path: String },
    /// A package tool id: `module.path.function` or `module.path.Class.method`.
    Package { tool: String },
    /// A `custom_llm` package tool: `template` (the node's prompt file, read) is passed as a
    /// `PromptTemplate` to the tool's parameter annotated with that type, as promptflow does.
    PackageWithPrompt { tool: String, template: String },
    /// A flex flow's entry (`module:function` or `module:Class`, imported with the flow folder on
    /// `sys.path`), called with the already converted flow inputs as keyword arguments. A class is
    /// constructed once per worker and `init` (kwargs passed unconverted; dicts for parameters typed
    /// as model configurations, by annotation or `init_types`, become configurations).
    /// `aggregate` calls the instance's `__aggregate__` with the `results` argument instead
    /// (dicts are rebuilt into the entry's dataclass return type).
    Entry {
        entry: String,
        init: Option<Map<String, Value>>,
        init_types: Map<String, Value>,
        aggregate: bool,
    },
    /// Import the entry and answer its signature as the output (see `flowrt_flow::EntrySignature`);
    /// an unsupported return annotation or a missing module is a [`CallError::Load`].
    Signature { entry: String },
    /// Import a code tool from `path` inside `dir` (relative to the pool's folder: a draft of the
    /// flow) and answer its inputs (`{path, function, inputs: {name: {type, required, default}}}`)
    /// or where loading it failed (`{path, error: {file, line, message}}`), as promptflow's
    /// tool-meta generation reads them. What it imported from `dir` is forgotten afterwards.
    Meta { dir: String, path: String },
    /// List the tools installed packages declare (`package_tools` entry points), with `dir`
    /// searched too: `{tools: [{id, name, description, type, inputs}], errors: [...]}`.
    PackageTools { dir: Option<String> },
}

/// The future a [`HostCallbacks`] handler returns: the result, or a message the Python caller
/// raises as an exception.
pub type CallbackFuture = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;

/// Requests from Python code back to the host (`Prompty.__call__`, model configurations looking a
/// connection up). The worker writes `{"cb": n, "op": ..., "args": ...}` on its protocol pipe; the
/// pool calls [`HostCallbacks::call`] and writes `{"cb": n, "ok": true, "result": ...}` (or
/// `{"cb": n, "ok": false, "message": ...}`) to the worker's stdin while the Python call waits.
pub trait HostCallbacks: Send + Sync {
    fn call(&self, op: &str, args: Value) -> CallbackFuture;
}

/// One argument value and how it must be passed.
#[derive(Clone, Debug)]
pub enum Arg {
    /// A value from a reference: passed unchanged.
    Value(Value),
    /// A literal from the YAML: converted to the parameter's annotation (`""`/null dropped).
    Literal(Value),
    /// Its source node was bypassed: the parameter default applies, else `None`.
    Bypassed,
    /// A stored connection: a connection object for connection-annotated parameters, else its name.
    Connection(flowrt_api::Connection),
}

/// What a successful call produced.
#[derive(Clone, Debug, PartialEq)]
pub struct CallOutput {
    pub output: Output,
    /// Everything the tool `print()`ed during this call.
    pub stdout: String,
    /// `log_metric(key, value)` calls made during this call, in order.
    pub metrics: Vec<(String, Value)>,
    /// Spans `@trace`d functions recorded during this call.
    pub spans: Vec<Value>,
    /// A flex entry's dataclass result as Python's `repr()` writes it (`output` holds its fields).
    pub repr: Option<String>,
    /// The tool's Python function (its qualified name), for its trace.
    pub function: Option<String>,
}

/// The tool's return value.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Value(Value),
    /// The tool returned a generator/iterator: drained; `joined` = `"".join(str(c) for c in chunks)`.
    Generator {
        chunks: Vec<Value>,
        joined: String,
    },
}

/// Why a call failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CallError {
    /// The tool raised an exception.
    #[error("{error_type}: {message}")]
    Tool {
        error_type: String,
        message: String,
        traceback: String,
    },
    /// The tool could not be loaded or its inputs did not fit its signature.
    #[error("{message}")]
    Load { message: String },
    /// The worker process died during the call.
    #[error("python worker crashed: {detail}")]
    Crashed { detail: String },
    /// The call exceeded its timeout.
    #[error("python tool call timed out after {seconds} seconds")]
    Timeout { seconds: f64 },
    /// The worker process could not be started.
    #[error("cannot start python worker with {}: {message}", python.display())]
    Spawn { python: PathBuf, message: String },
    /// The worker sent something that is not a valid protocol message.
    #[error("python worker protocol error: {message}")]
    Protocol { message: String },
}

/// A pool of up to `size` worker processes, spawned lazily, each running many calls concurrently.
pub struct WorkerPool {
    spec: WorkerSpec,
    size: usize,
    slots: Mutex<Vec<Option<Arc<Worker>>>>,
    next_id: AtomicU64,
    next_worker: AtomicU64,
    script: OnceLock<PathBuf>,
    /// Set by [`WorkerPool::shutdown`]: calls failing from then on are not retried.
    closing: AtomicBool,
    callbacks: Option<Arc<dyn HostCallbacks>>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("python", &self.spec.python)
            .field("flow_dir", &self.spec.flow_dir)
            .field("size", &self.size)
            .finish()
    }
}

type Reply = Result<Response, CallError>;

/// State shared between a worker handle and its reader tasks.
struct Shared {
    pending: Mutex<Pending>,
    stderr_tail: Mutex<VecDeque<String>>,
    /// Asks the task owning the child process to kill it.
    kill: Mutex<Option<oneshot::Sender<()>>>,
    /// How many calls were waiting for an answer when the worker died.
    orphaned: AtomicUsize,
}

impl Shared {
    fn request_kill(&self) {
        if let Some(tx) = lock(&self.kill).take() {
            let _ = tx.send(());
        }
    }
}

struct Pending {
    dead: bool,
    calls: HashMap<u64, oneshot::Sender<Reply>>,
}

struct Worker {
    id: u64,
    pid: Option<u32>,
    stdin: Arc<tokio::sync::Mutex<ChildStdin>>,
    shared: Arc<Shared>,
    inflight: AtomicUsize,
    alive: Arc<AtomicBool>,
    /// Out of the pool: killed as soon as no call is in flight on it.
    retiring: AtomicBool,
    exited: watch::Receiver<Option<ExitStatus>>,
}

impl Worker {
    fn request_kill(&self) {
        self.alive.store(false, Ordering::SeqCst);
        self.shared.request_kill();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.request_kill();
    }
}

#[derive(Deserialize)]
struct Response {
    id: Option<u64>,
    ok: bool,
    #[serde(default)]
    output: Value,
    #[serde(default)]
    generator: bool,
    #[serde(default)]
    chunks: Vec<Value>,
    #[serde(default)]
    joined: String,
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    metrics: Vec<(String, Value)>,
    #[serde(default)]
    spans: Vec<Value>,
    #[serde(default)]
    repr: Option<String>,
    #[serde(default)]
    function: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    traceback: Option<String>,
}

/// Lock a std mutex, recovering from poisoning (the protected data stays consistent in this module).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decrements a worker's in-flight count when a call ends.
struct InflightGuard(Arc<Worker>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.retiring.load(Ordering::SeqCst)
        {
            self.0.request_kill();
        }
    }
}

/// Removes a pending entry if the call future is dropped or times out.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).calls.remove(&self.id);
    }
}

impl WorkerPool {
    /// A pool of at most `size` (at least 1) workers; nothing is spawned until the first call.
    pub fn new(spec: WorkerSpec, size: usize) -> Self {
        WorkerPool {
            spec,
            size: size.max(1),
            slots: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            next_worker: AtomicU64::new(1),
            script: OnceLock::new(),
            closing: AtomicBool::new(false),
            callbacks: None,
        }
    }

    /// Answer the workers' host callbacks with `callbacks` (without them, every callback fails
    /// with a message saying so).
    pub fn with_callbacks(mut self, callbacks: Arc<dyn HostCallbacks>) -> Self {
        self.callbacks = Some(callbacks);
        self
    }

    /// Run one tool call on the least busy worker.
    ///
    /// A worker runs many calls at once, so when it dies with several calls in flight, which one
    /// killed it is unknown: each of them is then retried once on a worker of its own, where only
    /// the culprit fails again (with [`CallError::Crashed`]).
    pub async fn call(&self, call: ToolCall) -> Result<CallOutput, CallError> {
        let started = tokio::time::Instant::now();
        let worker = self.pick_worker()?;
        let first = self.call_on(worker.clone(), &call, call.timeout).await;
        let shared_crash = matches!(first, Err(CallError::Crashed { .. }))
            && worker.shared.orphaned.load(Ordering::SeqCst) > 1
            && !self.closing.load(Ordering::SeqCst);
        if !shared_crash {
            return first;
        }
        let timeout = call.timeout.map(|t| t.saturating_sub(started.elapsed()));
        let solo = Arc::new(self.spawn(&self.script()?)?);
        solo.retiring.store(true, Ordering::SeqCst);
        solo.inflight.fetch_add(1, Ordering::SeqCst);
        self.call_on(solo, &call, timeout).await
    }

    /// Check a call before any line runs, as promptflow checks a flow's tools when it loads it:
    /// a literal given to a connection-typed parameter must name a stored connection (literals
    /// that do are sent as [`Arg::Connection`]). The tool is loaded but not called; a tool that
    /// cannot be loaded passes here and fails on its first call. Returns what loading the tool
    /// printed.
    pub async fn check(&self, call: ToolCall) -> Result<String, CallError> {
        let worker = self.pick_worker()?;
        self.send_on(worker, &call, call.timeout, true)
            .await
            .map(|out| out.stdout)
    }

    /// Start up to `workers` workers (never more than the pool's size) and have each load the
    /// tools of `loads` (checks, as [`WorkerPool::check`]), as promptflow starts its processes
    /// and loads a flow's tools before a batch's first line: a line's time then starts when a
    /// ready worker can take it, so Python's start-up and the tools' imports are not counted
    /// against the first lines' timeout. With no tools, each worker answers a probe that loads
    /// nothing. Returns, per node, what loading its tool printed (once, not once per worker).
    /// Failures are left to the calls that meet them.
    pub async fn warm(&self, workers: usize, loads: &[ToolCall]) -> Vec<(String, String)> {
        let Ok(script) = self.script() else {
            return Vec::new();
        };
        let ready: Vec<Arc<Worker>> = {
            let mut slots = lock(&self.slots);
            slots.retain(|s| s.as_ref().is_some_and(|w| w.alive.load(Ordering::SeqCst)));
            while slots.len() < workers.min(self.size) {
                match self.spawn(&script) {
                    Ok(w) => slots.push(Some(Arc::new(w))),
                    Err(_) => break,
                }
            }
            slots.iter().flatten().cloned().collect()
        };
        // A check of no tool: the worker answers once it reads requests, and loads nothing.
        let probe = [ToolCall {
            node: String::new(),
            source: ToolSource::Package {
                tool: String::new(),
            },
            args: Vec::new(),
            timeout: Some(Duration::from_secs(60)),
        }];
        let calls = if loads.is_empty() { &probe[..] } else { loads };
        let sent = ready.iter().flat_map(|worker| {
            calls.iter().map(move |call| {
                worker.inflight.fetch_add(1, Ordering::SeqCst);
                self.send_on(worker.clone(), call, call.timeout, true)
            })
        });
        let answers = futures::future::join_all(sent).await;
        // The answers come worker by worker, each in `calls` order.
        let mut printed: Vec<(String, String)> = Vec::new();
        for (i, answer) in answers.into_iter().enumerate() {
            let node = &calls[i % calls.len()].node;
            match answer {
                Ok(out) if !out.stdout.is_empty() && !printed.iter().any(|(n, _)| n == node) => {
                    printed.push((node.clone(), out.stdout));
                }
                _ => {}
            }
        }
        printed
    }

    /// Run a call on `worker`, whose in-flight count already includes it.
    async fn call_on(
        &self,
        worker: Arc<Worker>,
        call: &ToolCall,
        timeout: Option<Duration>,
    ) -> Result<CallOutput, CallError> {
        self.send_on(worker, call, timeout, false).await
    }

    /// Send a call (or, with `check`, a check of it) to `worker`, whose in-flight count already
    /// includes it, and wait for the answer.
    async fn send_on(
        &self,
        worker: Arc<Worker>,
        call: &ToolCall,
        timeout: Option<Duration>,
        check: bool,
    ) -> Result<CallOutput, CallError> {
        let guard = InflightGuard(worker.clone());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let line = encode_request_as(id, call, check)?;

        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&worker.shared.pending);
            if pending.dead {
                drop(pending);
                return Err(CallError::Crashed {
                    detail: "the python worker exited before the call could be sent".into(),
                });
            }
            pending.calls.insert(id, tx);
        }
        let _pending_guard = PendingGuard {
            shared: &worker.shared,
            id,
        };

        let write_result = {
            let mut stdin = worker.stdin.lock().await;
            match stdin.write_all(line.as_bytes()).await {
                Ok(()) => stdin.flush().await,
                Err(e) => Err(e),
            }
        };
        if write_result.is_err() {
            // The worker is going away; its reader will fail this call with the exit details.
            return match tokio::time::timeout(Duration::from_secs(10), rx).await {
                Ok(Ok(reply)) => finish(reply?),
                _ => Err(CallError::Crashed {
                    detail: format!(
                        "cannot write to the python worker{}",
                        pid_suffix(worker.pid)
                    ),
                }),
            };
        }

        let reply = match timeout {
            Some(limit) => match tokio::time::timeout(limit, rx).await {
                Ok(r) => r,
                Err(_) => {
                    self.retire(&worker);
                    drop(guard);
                    return Err(CallError::Timeout {
                        seconds: limit.as_secs_f64(),
                    });
                }
            },
            None => rx.await,
        };
        drop(guard);
        match reply {
            Ok(reply) => finish(reply?),
            Err(_) => Err(CallError::Crashed {
                detail: format!(
                    "the python worker{} went away without answering",
                    pid_suffix(worker.pid)
                ),
            }),
        }
    }

    /// End all worker processes (in-flight calls fail with [`CallError::Crashed`]).
    pub async fn shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let workers: Vec<Arc<Worker>> = lock(&self.slots).drain(..).flatten().collect();
        for worker in &workers {
            worker.request_kill();
        }
        for worker in workers {
            let mut exited = worker.exited.clone();
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                exited.wait_for(|status| status.is_some()),
            )
            .await;
        }
    }

    /// Remove a worker from the pool (the next call spawns a fresh one) and kill it once the
    /// other calls in flight on it have finished (they are not failed by a neighbour's timeout).
    fn retire(&self, worker: &Arc<Worker>) {
        worker.retiring.store(true, Ordering::SeqCst);
        {
            let mut slots = lock(&self.slots);
            for slot in slots.iter_mut() {
                if slot.as_ref().is_some_and(|w| w.id == worker.id) {
                    *slot = None;
                }
            }
        }
        if worker.inflight.load(Ordering::SeqCst) == 0 {
            worker.request_kill();
        }
    }

    fn script(&self) -> Result<PathBuf, CallError> {
        if let Some(path) = self.script.get() {
            return Ok(path.clone());
        }
        let path = crate::embed::unpack(&self.spec.state_dir).map_err(|e| CallError::Spawn {
            python: self.spec.python.clone(),
            message: format!(
                "cannot unpack the worker's Python files into {}: {e}",
                self.spec.state_dir.display()
            ),
        })?;
        Ok(self.script.get_or_init(|| path).clone())
    }

    fn pick_worker(&self) -> Result<Arc<Worker>, CallError> {
        let script = self.script()?;
        let mut slots = lock(&self.slots);
        for slot in slots.iter_mut() {
            if slot
                .as_ref()
                .is_some_and(|w| !w.alive.load(Ordering::SeqCst))
            {
                *slot = None;
            }
        }
        let best = slots
            .iter()
            .flatten()
            .min_by_key(|w| w.inflight.load(Ordering::SeqCst))
            .cloned();
        let has_room = slots.iter().filter(|s| s.is_some()).count() < self.size;
        let chosen = match best {
            Some(w) if w.inflight.load(Ordering::SeqCst) == 0 || !has_room => w,
            _ => {
                let worker = Arc::new(self.spawn(&script)?);
                if let Some(slot) = slots.iter_mut().find(|s| s.is_none()) {
                    *slot = Some(worker.clone());
                } else {
                    slots.push(Some(worker.clone()));
                }
                worker
            }
        };
        chosen.inflight.fetch_add(1, Ordering::SeqCst);
        Ok(chosen)
    }

    fn spawn(&self, script: &std::path::Path) -> Result<Worker, CallError> {
        let spec = &self.spec;
        let mut cmd = Command::new(&spec.python);
        cmd.arg("-u")
            .arg(script)
            .current_dir(&spec.flow_dir)
            .env("PYTHONIOENCODING", "utf-8")
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| CallError::Spawn {
            python: spec.python.clone(),
            message: format!("{e} (flow folder {})", spec.flow_dir.display()),
        })?;
        let missing = |what: &str| CallError::Spawn {
            python: spec.python.clone(),
            message: format!("the worker's {what} pipe is missing"),
        };
        let stdin = Arc::new(tokio::sync::Mutex::new(
            child.stdin.take().ok_or_else(|| missing("stdin"))?,
        ));
        let stdout = child.stdout.take().ok_or_else(|| missing("stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| missing("stderr"))?;
        let pid = child.id();
        let (kill_tx, kill_rx) = oneshot::channel::<()>();

        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                dead: false,
                calls: HashMap::new(),
            }),
            stderr_tail: Mutex::new(VecDeque::new()),
            kill: Mutex::new(Some(kill_tx)),
            orphaned: AtomicUsize::new(0),
        });
        let alive = Arc::new(AtomicBool::new(true));
        let (exit_tx, exit_rx) = watch::channel::<Option<ExitStatus>>(None);
        let (stderr_done_tx, stderr_done_rx) = oneshot::channel::<()>();

        // Owns the child: waits for it to exit, or kills it when asked (or when the handle is dropped).
        tokio::spawn(wait_child(child, kill_rx, exit_tx));

        // Collects the tail of stderr.
        let shared_err = shared.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut tail = lock(&shared_err.stderr_tail);
                if tail.len() >= STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            let _ = stderr_done_tx.send(());
        });

        // Routes responses to callers; on EOF fails every pending call with the exit details.
        let shared_out = shared.clone();
        let alive_out = alive.clone();
        let exit_rx_out = exit_rx.clone();
        let host = Host {
            stdin: stdin.clone(),
            callbacks: self.callbacks.clone(),
        };
        tokio::spawn(async move {
            read_responses(
                stdout,
                shared_out,
                alive_out,
                exit_rx_out,
                stderr_done_rx,
                pid,
                host,
            )
            .await;
        });

        Ok(Worker {
            id: self.next_worker.fetch_add(1, Ordering::Relaxed),
            pid,
            stdin,
            shared,
            inflight: AtomicUsize::new(0),
            alive,
            retiring: AtomicBool::new(false),
            exited: exit_rx,
        })
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        for worker in lock(&self.slots).drain(..).flatten() {
            worker.request_kill();
        }
    }
}

async fn wait_child(
    mut child: Child,
    kill_rx: oneshot::Receiver<()>,
    exit_tx: watch::Sender<Option<ExitStatus>>,
) {
    let status = tokio::select! {
        status = child.wait() => status,
        _ = kill_rx => {
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let _ = exit_tx.send(status.ok());
}

/// What a worker's reader needs to answer host callbacks.
struct Host {
    stdin: Arc<tokio::sync::Mutex<ChildStdin>>,
    callbacks: Option<Arc<dyn HostCallbacks>>,
}

#[derive(Deserialize)]
struct CallbackRequest {
    cb: u64,
    op: String,
    #[serde(default)]
    args: Value,
}

impl Host {
    /// Answer one callback line from the worker on a task of its own (the handler may take long,
    /// e.g. an LLM call, while other responses keep flowing).
    fn answer(&self, text: &str) -> Result<(), String> {
        let request: CallbackRequest = serde_json::from_str(text)
            .map_err(|e| format!("invalid host callback from the python worker ({e})"))?;
        let stdin = self.stdin.clone();
        let callbacks = self.callbacks.clone();
        tokio::spawn(async move {
            let result = match &callbacks {
                // On a task of its own, so a handler that panics still gets the caller an answer.
                Some(cb) => match tokio::spawn(cb.call(&request.op, request.args)).await {
                    Ok(result) => result,
                    Err(e) => Err(format!(
                        "host callback '{}' failed inside flowrt: {e}",
                        request.op
                    )),
                },
                None => Err(format!(
                    "host callback '{}' is not available: this worker pool was created without host callbacks",
                    request.op
                )),
            };
            let reply = match result {
                Ok(result) => json!({"cb": request.cb, "ok": true, "result": result}),
                Err(message) => json!({"cb": request.cb, "ok": false, "message": message}),
            };
            let mut line = reply.to_string();
            line.push('\n');
            let mut stdin = stdin.lock().await;
            // A worker that went away fails its pending calls through the reader.
            if stdin.write_all(line.as_bytes()).await.is_ok() {
                let _ = stdin.flush().await;
            }
        });
        Ok(())
    }
}

async fn read_responses(
    stdout: tokio::process::ChildStdout,
    shared: Arc<Shared>,
    alive: Arc<AtomicBool>,
    mut exited: watch::Receiver<Option<ExitStatus>>,
    stderr_done: oneshot::Receiver<()>,
    pid: Option<u32>,
    host: Host,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut buf = String::new();
    let mut protocol_error: Option<String> = None;
    loop {
        buf.clear();
        match reader.read_line(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                protocol_error = Some(format!("cannot read from the python worker: {e}"));
                break;
            }
        }
        let text = buf.trim();
        if text.is_empty() {
            continue;
        }
        if text.starts_with("{\"cb\"") {
            if let Err(message) = host.answer(text) {
                protocol_error = Some(message);
                break;
            }
            continue;
        }
        match parse_response(text) {
            Ok((id, reply)) => {
                let tx = lock(&shared.pending).calls.remove(&id);
                if let Some(tx) = tx {
                    let _ = tx.send(Ok(reply));
                }
            }
            Err(message) => {
                protocol_error = Some(message);
                break;
            }
        }
    }
    alive.store(false, Ordering::SeqCst);

    let error = if let Some(message) = protocol_error {
        // The stream is unusable: kill the worker; every in-flight call gets the protocol error.
        shared.request_kill();
        CallError::Protocol { message }
    } else {
        let status =
            match tokio::time::timeout(Duration::from_secs(5), exited.wait_for(|s| s.is_some()))
                .await
            {
                Ok(Ok(status)) => *status,
                _ => None,
            };
        let _ = tokio::time::timeout(Duration::from_secs(2), stderr_done).await;
        let tail: Vec<String> = lock(&shared.stderr_tail).iter().cloned().collect();
        CallError::Crashed {
            detail: crash_detail(pid, status, &tail),
        }
    };
    let calls: Vec<oneshot::Sender<Reply>> = {
        let mut pending = lock(&shared.pending);
        pending.dead = true;
        shared.orphaned.store(pending.calls.len(), Ordering::SeqCst);
        pending.calls.drain().map(|(_, tx)| tx).collect()
    };
    for tx in calls {
        let _ = tx.send(Err(error.clone()));
    }
}

fn parse_response(text: &str) -> Result<(u64, Response), String> {
    let short = || {
        let mut s: String = text.chars().take(200).collect();
        if s.len() < text.len() {
            s.push_str("...");
        }
        s
    };
    let response: Response = serde_json::from_str(text)
        .map_err(|e| format!("invalid JSON from the python worker ({e}): {}", short()))?;
    let id = response
        .id
        .ok_or_else(|| format!("python worker response without an id: {}", short()))?;
    Ok((id, response))
}

fn pid_suffix(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

fn crash_detail(pid: Option<u32>, status: Option<ExitStatus>, tail: &[String]) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig} ({})", signal_name(sig)),
            _ => format!("exited ({s})"),
        },
        None => "closed its output".to_string(),
    };
    let mut detail = format!("the python worker{} {how}", pid_suffix(pid));
    if tail.is_empty() {
        detail.push_str("; stderr was empty");
    } else {
        detail.push_str("; last stderr lines:\n");
        detail.push_str(&tail.join("\n"));
    }
    detail
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGKILL => "SIGKILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGINT => "SIGINT",
        _ => "signal",
    }
}

fn finish(response: Response) -> Result<CallOutput, CallError> {
    if response.ok {
        let output = if response.generator {
            Output::Generator {
                chunks: response.chunks,
                joined: response.joined,
            }
        } else {
            Output::Value(response.output)
        };
        return Ok(CallOutput {
            output,
            stdout: response.stdout,
            metrics: response.metrics,
            spans: response.spans,
            repr: response.repr,
            function: response.function,
        });
    }
    let message = response.message.unwrap_or_default();
    match response.kind.as_deref() {
        Some("load") => Err(CallError::Load { message }),
        Some("tool") => Err(CallError::Tool {
            error_type: response.error_type.unwrap_or_else(|| "Exception".into()),
            message,
            traceback: response.traceback.unwrap_or_default(),
        }),
        other => Err(CallError::Protocol {
            message: format!(
                "unknown error kind {:?} from the python worker: {message}",
                other.unwrap_or("")
            ),
        }),
    }
}

#[cfg(test)]
fn encode_request(id: u64, call: &ToolCall) -> Result<String, CallError> {
    encode_request_as(id, call, false)
}

/// The request line for `call`; with `check`, a request to check it without calling the tool.
fn encode_request_as(id: u64, call: &ToolCall, check: bool) -> Result<String, CallError> {
    let source = match &call.source {
        ToolSource::Code { path } => json!({"type": "code", "path": path}),
        ToolSource::Package { tool } => json!({"type": "package", "tool": tool}),
        ToolSource::PackageWithPrompt { tool, template } => {
            json!({"type": "package", "tool": tool, "prompt_template": template})
        }
        ToolSource::Entry {
            entry,
            init,
            init_types,
            aggregate,
        } => {
            json!({"type": "entry", "entry": entry, "init": init, "init_types": init_types, "aggregate": aggregate})
        }
        ToolSource::Signature { entry } => json!({"type": "signature", "entry": entry}),
        ToolSource::Meta { dir, path } => json!({"type": "meta", "dir": dir, "path": path}),
        ToolSource::PackageTools { dir } => json!({"type": "package_tools", "dir": dir}),
    };
    let args: Vec<Value> = call
        .args
        .iter()
        .map(|(name, arg)| {
            let encoded = match arg {
                Arg::Value(v) => json!({"k": "v", "v": v}),
                Arg::Literal(v) => json!({"k": "l", "v": v}),
                Arg::Bypassed => json!({"k": "b"}),
                Arg::Connection(c) => {
                    let mut m = Map::new();
                    m.insert("k".into(), Value::from("c"));
                    m.insert("name".into(), Value::from(c.name.clone()));
                    m.insert("type".into(), Value::from(c.kind.as_str()));
                    m.insert("class".into(), Value::from(c.kind.python_class()));
                    m.insert("configs".into(), json!(c.configs));
                    m.insert("secrets".into(), json!(c.secrets));
                    Value::Object(m)
                }
            };
            json!([name, encoded])
        })
        .collect();
    let mut request = json!({"id": id, "node": call.node, "source": source, "args": args});
    if check {
        request["check"] = Value::Bool(true);
    }
    let mut line = serde_json::to_string(&request).map_err(|e| CallError::Protocol {
        message: format!("cannot encode the request for node '{}': {e}", call.node),
    })?;
    line.push('\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_detail_names_signal_and_tail() {
        use std::os::unix::process::ExitStatusExt;
        let status = ExitStatus::from_raw(libc::SIGSEGV);
        let d = crash_detail(Some(7), Some(status), &["Fatal Python error".into()]);
        assert!(d.contains("signal 11 (SIGSEGV)"), "{d}");
        assert!(d.contains("Fatal Python error"), "{d}");
        let d = crash_detail(None, Some(ExitStatus::from_raw(3 << 8)), &[]);
        assert!(d.contains("exited with code 3"), "{d}");
    }

    #[test]
    fn request_encoding_keeps_arg_order() {
        let call = ToolCall {
            node: "n".into(),
            source: ToolSource::Code {
                path: "a.py".into(),
            },
            args: vec![
                ("z".into(), Arg::Literal(json!("1"))),
                ("a".into(), Arg::Bypassed),
            ],
            timeout: None,
        };
        let line = encode_request(5, &call).unwrap();
        assert!(line.ends_with('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["args"][0][0], "z");
        assert_eq!(v["args"][1][1]["k"], "b");
    }
}
