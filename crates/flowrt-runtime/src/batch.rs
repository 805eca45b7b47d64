//! The batch engine: a flow over every row of a data file, as `run create` (embedded) and a
//! session's agent (in-process) run it. It owns the line loop (bounded concurrency, the per-line
//! timeout, the batch timeout, cancel), resume (lines that completed in the run resumed are kept
//! and not run again), the ordered writer (outputs in line order whatever order lines finish in)
//! and the run folder (`run.json`, `flow_outputs/output.jsonl`, `line_runs.jsonl`, `logs.txt`,
//! `metrics.json`, `error.json`, `data.jsonl`, `snapshot/`).
//!
//! It prints nothing: progress, warnings and streamed outputs go to a [`Reporter`] (the CLI draws
//! a progress line; an agent writes its session log). Stopping is asked through [`Cancel`] (the
//! CLI on Ctrl-C or SIGTERM, an agent when its session stops or the run is canceled).
//!
//! [`create`] is the whole of a run from a [`BatchRequest`]: it opens the flow with its
//! connections and environment and then calls [`execute`], the loop proper, which is generic over
//! the [`ToolInvoker`] so its tests drive it with a fake one.

use crate::invoker::{self, FlowInvoker};
use crate::runs::{self, RunMeta, RunStatus};
use anyhow::{anyhow, bail, Context, Result};
use flowrt_api::responses::LineRecord;
use flowrt_api::Connection;
use flowrt_executor::{
    prepare_inputs, ColumnMapping, Executor, ExecutorOptions, LineResult, LineSources, NodeRun,
    RunObserver, ToolInvoker,
};
use flowrt_flow::{Flow, LoadOptions};
use indexmap::IndexMap;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// What a run is asked to do: `run create`'s options, or what a session's agent was sent.
#[derive(Clone, Debug, Default)]
pub struct BatchRequest {
    /// The flow folder or `.prompty` file (default: the resumed run's flow).
    pub flow: Option<PathBuf>,
    /// The data file (default: the resumed run's copy of its data).
    pub data: Option<PathBuf>,
    /// Flow input → `${data.COLUMN}`, `${run.outputs.NAME}`, `${run.inputs.COLUMN}` or a
    /// literal: the request's map, parsed once by the engine.
    pub column_mapping: IndexMap<String, String>,
    /// The base run of an evaluation.
    pub run: Option<String>,
    /// The run's name (default: the flow's name and the time).
    pub name: Option<String>,
    /// The run folder (default: `FLOWRT_HOME/runs/NAME`).
    pub output_dir: Option<PathBuf>,
    pub variant: Option<String>,
    pub resume_from: Option<String>,
    /// A flex class entry's constructor kwargs (default: the resumed run's, else `sample.init`).
    pub init: Option<Map<String, Value>>,
    pub concurrency: Option<usize>,
    /// Seconds (default: `PF_LINE_TIMEOUT_SEC`, else 600).
    pub line_timeout: Option<f64>,
    /// Seconds (default: `PF_BATCH_TIMEOUT_SEC`, else none).
    pub batch_timeout: Option<f64>,
    /// Seconds between "NODE has been running for N seconds" warnings.
    pub long_running_interval: f64,
    /// Report each completed line's outputs ([`Reporter::output`]).
    pub stream: bool,
    /// Run only lines `start..end` of the data: one chunk of a run spread over several sessions.
    /// Only those lines are run and written, and there is no aggregation (it needs every line).
    pub lines: Option<(usize, usize)>,
    /// Line records (as in `line_runs.jsonl`) kept as they are, whatever their status, and not
    /// run: the chunks of a spread run, which this run gathers, aggregates and records.
    pub prior_records: Option<PathBuf>,
    /// Record each line's spans in the run folder's `spans.jsonl`, as `trace` names the run (a
    /// session's run: its server exports them). `None`: exported from here when the
    /// OpenTelemetry variables name a receiver.
    pub trace: Option<flowrt_api::trace::TraceAs>,
}

/// The run folder's file of recorded spans: a [`flowrt_api::trace::LineSpans`] a line.
pub use flowrt_api::agent::SPANS_FILE;

/// What becomes of each line's spans.
#[derive(Clone, Debug)]
pub enum Tracing {
    /// Nothing is built.
    Off,
    /// Handed to the exporter as each line ends.
    Export(crate::otel::Exporter, flowrt_api::trace::TraceAs),
    /// Written to the run folder's [`SPANS_FILE`].
    Record(flowrt_api::trace::TraceAs),
}

impl Tracing {
    fn trace_as(&self) -> Option<&flowrt_api::trace::TraceAs> {
        match self {
            Tracing::Off => None,
            Tracing::Export(_, t) | Tracing::Record(t) => Some(t),
        }
    }
}

/// Where the lines run: the interpreter, the connections and how many Python workers.
pub struct Compute {
    /// An environment's interpreter (a session's); `None` resolves the flow's requirements here.
    pub python: Option<PathBuf>,
    pub connections: HashMap<String, Connection>,
    pub workers: usize,
}

/// How the line loop runs.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub concurrency: usize,
    pub line_timeout: Option<Duration>,
    pub batch_timeout: Option<Duration>,
    pub long_running_interval: Duration,
    pub stream: bool,
    pub tracing: Tracing,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            concurrency: 16,
            line_timeout: Some(Duration::from_secs(600)),
            batch_timeout: None,
            long_running_interval: Duration::from_secs(60),
            stream: false,
            tracing: Tracing::Off,
        }
    }
}

/// What each line reads: its data row (and the columns of all rows), an evaluation's base run,
/// and the lines kept from a resumed run.
#[derive(Default)]
pub struct Lines {
    /// Read as lines run, not held: memory does not grow with the data.
    pub rows: crate::data::Rows,
    pub mapping: ColumnMapping,
    /// An evaluation's base run, read as lines need it too.
    pub base: Option<BaseRun>,
    /// Completed line records (as in `line_runs.jsonl`) of the resumed run, by line number.
    pub kept: BTreeMap<usize, Value>,
    /// Only these lines run (a chunk of a spread run); `None`: every line.
    pub range: Option<std::ops::Range<usize>>,
}

/// An evaluation's base run: its outputs (`flow_outputs/output.jsonl`, shaped as promptflow's
/// pandas reading shapes them) and its data rows, read in line order as the evaluation's lines
/// start, so a million-line evaluation holds one line of each at a time.
pub struct BaseRun {
    outputs: crate::data::Rows,
    rows: crate::data::Rows,
    /// Output names any line has (`line_number` aside).
    output_names: HashSet<String>,
}

impl BaseRun {
    /// Open the base run whose folder is `dir`: its outputs must be in line order, as every run
    /// writes them.
    pub fn open(dir: &Path) -> Result<BaseRun> {
        let path = dir.join("flow_outputs").join("output.jsonl");
        let outputs = crate::data::Rows::open(&path)?;
        let mut last = None;
        for row in outputs.iter()? {
            let n = row?.get("line_number").and_then(Value::as_u64);
            let Some(n) = n else {
                bail!("{}: a record without its line_number", path.display());
            };
            if last.is_some_and(|l| n <= l) {
                bail!(
                    "{}: line {n} comes after line {}; a run writes its outputs in line order",
                    path.display(),
                    last.unwrap_or(0)
                );
            }
            last = Some(n);
        }
        let mut output_names = outputs.columns();
        output_names.remove("line_number");
        let data = dir.join("data.jsonl");
        let rows = if data.is_file() {
            crate::data::Rows::open(&data)?
        } else {
            crate::data::Rows::default()
        };
        Ok(BaseRun {
            outputs,
            rows,
            output_names,
        })
    }

    /// A reader that hands out line `n`'s outputs and data row, for ascending `n`.
    fn cursor(&self) -> Result<BaseCursor> {
        Ok(BaseCursor {
            outputs: self.outputs.iter()?.peekable(),
            rows: self.rows.iter()?.enumerate(),
        })
    }
}

struct BaseCursor {
    outputs: std::iter::Peekable<crate::data::RowIter>,
    rows: std::iter::Enumerate<crate::data::RowIter>,
}

type BaseLine = (Option<Map<String, Value>>, Option<Map<String, Value>>);

impl BaseCursor {
    /// Line `n`'s outputs (none when it failed in the base run) and data row.
    fn at(&mut self, n: usize) -> Result<BaseLine> {
        let line_of = |r: &Result<Map<String, Value>>| {
            r.as_ref()
                .ok()
                .and_then(|m| m.get("line_number"))
                .and_then(Value::as_u64)
                .map(|l| l as usize)
        };
        let mut outputs = None;
        while let Some(next) = self.outputs.peek() {
            match line_of(next) {
                Some(l) if l < n => {
                    self.outputs.next();
                }
                Some(l) if l == n => {
                    let mut m = self.outputs.next().transpose()?.unwrap_or_default();
                    m.remove("line_number");
                    outputs = Some(m);
                    break;
                }
                Some(_) => break,
                None => {
                    // A read error: surface it.
                    self.outputs.next().transpose()?;
                }
            }
        }
        let mut row = None;
        for (i, r) in self.rows.by_ref() {
            if i == n {
                row = Some(r?);
                break;
            }
        }
        Ok((outputs, row))
    }
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct BatchOutcome {
    /// The final record (as saved in `run.json`).
    pub meta: RunMeta,
}

/// Counts for a progress line.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub total: usize,
    /// Lines finished, including those kept from a resumed run.
    pub done: usize,
    pub failed: usize,
    /// Lines kept from a resumed run.
    pub kept: usize,
    pub elapsed: Duration,
    /// LLM retries, and how many of them waited out a rate limit.
    pub retries: u64,
    pub rate_limited: u64,
    /// The model endpoint whose quota paces this run, when one does.
    pub quota: Option<QuotaPace>,
}

/// A quota pacing a run's model calls: part of the agent protocol (it travels with a run's tail).
pub use flowrt_api::agent::QuotaPace;

/// The run folder's file holding its current [`QuotaPace`].
pub const PACE_FILE: &str = "pace.json";

impl Progress {
    /// Everything but the line counts: failures, speed, time left, retries.
    pub fn details(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        let rate = (self.done - self.kept.min(self.done)) as f64 / secs;
        let left = self.total.saturating_sub(self.done) as f64;
        // Paced by a quota, the time left is the calls left at the quota's pace.
        let eta = if let Some(q) = self
            .quota
            .as_ref()
            .filter(|q| q.pace > 0.0 && q.calls_per_line > 0.0)
        {
            format!("{:.0}s", left * q.calls_per_line / q.pace)
        } else if rate > 0.0 {
            format!(
                "{:.0}s",
                (self.total.saturating_sub(self.done)) as f64 / rate
            )
        } else {
            "unknown".to_string()
        };
        let mut text = format!("{} failed, {rate:.1} lines/s, ETA {eta}", self.failed);
        if self.retries > 0 {
            text.push_str(&format!(
                ", {} LLM {} ({} rate-limited)",
                self.retries,
                if self.retries == 1 {
                    "retry"
                } else {
                    "retries"
                },
                self.rate_limited
            ));
        }
        if let Some(q) = &self.quota {
            text.push_str(&format!(
                "; paced to {:.1} requests/s by the quota of {} (a call waits {:.2} s for its turn)",
                q.pace,
                q.endpoint,
                q.wait_per_call.as_secs_f64()
            ));
        }
        text
    }

    /// `DONE/TOTAL lines, ...details`.
    pub fn text(&self) -> String {
        format!("{}/{} lines, {}", self.done, self.total, self.details())
    }
}

/// Where a run's progress goes. Every method has a no-op default; all may be called from any
/// thread.
pub trait Reporter: Send + Sync {
    /// A message on the way (an environment being built).
    fn note(&self, _msg: &str) {}
    /// A warning (a slow node, an LLM retry, a suspicious mapping); already in the run's log.
    fn warn(&self, _msg: &str) {}
    /// An error that does not stop the run (a failed aggregation); already in the run's log.
    fn error(&self, _msg: &str) {}
    /// The run has recorded itself (`run.json` says Running) and its lines start.
    fn started(&self, _meta: &RunMeta, _progress: &Progress) {}
    /// A line finished.
    fn line_finished(&self, _progress: &Progress) {}
    /// A few times a second while lines run.
    fn tick(&self, _progress: &Progress) {}
    /// A completed line's outputs as a JSON line (with [`EngineOptions::stream`]).
    fn output(&self, _line: &str) {}
    /// No line runs any more (before aggregation and the final record).
    fn lines_done(&self, _progress: &Progress) {}
}

/// A reporter that drops everything.
pub struct Quiet;
impl Reporter for Quiet {}

/// Asks a run to stop: lines still running are stopped, finished ones are kept, and the run
/// ends Canceled (resumable). Cheap to clone; every clone cancels the same run.
#[derive(Clone)]
pub struct Cancel(Arc<tokio::sync::watch::Sender<Option<String>>>);

impl Default for Cancel {
    fn default() -> Self {
        Cancel(Arc::new(tokio::sync::watch::channel(None).0))
    }
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancel, saying why (`interrupted`, `terminated`, ...) for the run's log. The first reason
    /// wins.
    pub fn cancel(&self, reason: &str) {
        self.0.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason.to_string());
                true
            } else {
                false
            }
        });
    }

    pub fn is_canceled(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Resolves with the reason once canceled.
    pub async fn canceled(&self) -> String {
        let mut rx = self.0.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            // The sender lives in `self`, so this only ends by a change.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Counts the LLM client's retries and puts each in the run's log and the reporter. The invoker
/// exists before the run log does (a flex flow needs its worker for the signature): retries reach
/// the log once [`execute`] has one.
#[derive(Default)]
pub struct RetryHub {
    sink: OnceLock<(Arc<RunLog>, Arc<dyn Reporter>)>,
    retries: AtomicU64,
    rate_limited: AtomicU64,
}

impl RetryHub {
    /// The listener to give the LLM client.
    pub fn listener(self: &Arc<Self>) -> flowrt_tools::RetryListener {
        let hub = self.clone();
        Arc::new(move |e| hub.record(e))
    }

    fn record(&self, e: &flowrt_tools::RetryEvent) {
        if let Some((log, reporter)) = self.sink.get() {
            self.retries.fetch_add(1, Relaxed);
            if e.cause == flowrt_tools::RetryCause::RateLimited {
                self.rate_limited.fetch_add(1, Relaxed);
            }
            log.log(&e.to_string());
            reporter.warn(&e.to_string());
        }
    }
}

/// A run's `logs.txt`, its `node_events.jsonl` (each node's start and end, for a page that
/// follows the run), and the running nodes for the "has been running" warnings.
pub struct RunLog {
    file: Mutex<Option<std::fs::File>>,
    running: flowrt_executor::LongRunning,
    reporter: Arc<dyn Reporter>,
    nodes: Mutex<NodeEvents>,
}

/// One node's start (no status yet: `Running`, no duration) or end.
#[derive(serde::Serialize)]
struct NodeEvent<'a> {
    line_number: Option<usize>,
    node: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<f64>,
}

/// Buffered node events, flushed at most every 50 ms (and at the end) so that a run of many
/// short lines does not pay a write per node, while a long node's start still shows at once.
struct NodeEvents {
    out: Option<std::io::BufWriter<std::fs::File>>,
    flushed: std::time::Instant,
}

impl NodeEvents {
    fn open(path: &Path) -> Self {
        NodeEvents {
            out: std::fs::File::create(path)
                .ok()
                .map(std::io::BufWriter::new),
            flushed: std::time::Instant::now(),
        }
    }

    fn write(&mut self, event: &NodeEvent<'_>) {
        if let Some(out) = self.out.as_mut() {
            // Serialized straight into the buffer: no JSON value is built per node.
            let _ = serde_json::to_writer(&mut *out, event);
            let _ = out.write_all(b"\n");
            if self.flushed.elapsed() >= std::time::Duration::from_millis(50) {
                let _ = out.flush();
                self.flushed = std::time::Instant::now();
            }
        }
    }

    fn flush(&mut self) {
        if let Some(out) = self.out.as_mut() {
            let _ = out.flush();
        }
    }
}

impl RunLog {
    /// A new run log in `output_dir`: its `logs.txt` and `node_events.jsonl` created empty.
    fn create(output_dir: &Path, reporter: Arc<dyn Reporter>) -> Result<RunLog> {
        Ok(RunLog {
            file: Mutex::new(Some(
                fs_err::File::create(output_dir.join("logs.txt"))?
                    .into_parts()
                    .0,
            )),
            running: flowrt_executor::LongRunning::default(),
            reporter,
            nodes: Mutex::new(NodeEvents::open(&output_dir.join("node_events.jsonl"))),
        })
    }

    fn log(&self, msg: &str) {
        let line = format!("{} {msg}\n", runs::utc_now());
        if let Ok(mut f) = self.file.lock() {
            if let Some(f) = f.as_mut() {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }

    fn warn(&self, msg: &str) {
        self.log(msg);
        self.reporter.warn(msg);
    }
}

impl RunLog {
    fn node_event(&self, event: NodeEvent<'_>) {
        if let Ok(mut n) = self.nodes.lock() {
            n.write(&event);
        }
    }

    /// Write out the node events still buffered (the run is ending).
    fn flush_node_events(&self) {
        if let Ok(mut n) = self.nodes.lock() {
            n.flush();
        }
    }
}

impl RunObserver for RunLog {
    fn node_started(&self, line: Option<usize>, node: &str) {
        self.running.started(line, node);
        self.node_event(NodeEvent {
            line_number: line,
            node,
            status: "Running",
            duration: None,
        });
    }
    fn node_finished(&self, line: Option<usize>, run: &NodeRun) {
        self.running.finished(line, &run.node);
        self.node_event(NodeEvent {
            line_number: line,
            node: &run.node,
            status: run.status.as_str(),
            duration: Some(run.duration.as_secs_f64()),
        });
        for l in run.logs.lines() {
            self.log(&format!(
                "line {}: [{}] {l}",
                line.map(|l| l.to_string())
                    .unwrap_or_else(|| "aggregation".into()),
                run.node
            ));
        }
    }
}

fn env_seconds(name: &str) -> Option<f64> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
}

/// promptflow's default run name: `FLOW_YYYYMMDD_HHMMSS_micros`, in UTC.
pub fn default_name(flow: &Path) -> String {
    let base = flow
        .canonicalize()
        .ok()
        .and_then(|p| {
            // A .prompty (or flow.dag.yaml) file: named after the file, or its folder.
            let name = match p.extension() {
                _ if !p.is_file() => p.file_name(),
                Some(e) if e.eq_ignore_ascii_case("prompty") => p.file_stem(),
                _ => p.parent().and_then(Path::file_name),
            };
            name.map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "flow".into());
    let base: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let now = jiff::Timestamp::now();
    let stamp = now.strftime("%Y%m%d_%H%M%S");
    let micros = now.subsec_microsecond();
    format!("{base}_{stamp}_{micros:06}")
}

/// A whole run: what is not given is taken from the run resumed (its data from the copy in its
/// folder, so the original file may have moved); the flow is opened with its connections and
/// environment; bad input (flow, data, mapping) fails here, before the run records itself.
pub async fn create(
    mut req: BatchRequest,
    compute: Compute,
    home: &Path,
    reporter: Arc<dyn Reporter>,
    cancel: Cancel,
) -> Result<BatchOutcome> {
    let named = NamedRun::resolve(&mut req, home)?;
    let mut options = LoadOptions::default();
    if let Some(v) = &req.variant {
        options.variant = Some(LoadOptions::parse_variant(v).map_err(|e| anyhow!(e))?);
    }
    // A flow with additional_includes runs from a merged copy (removed when the run ends).
    let merged = crate::includes::Merged::new(&named.flow_dir, home)?;
    let mut flow = merged.load(&options)?;
    let workers = compute.workers;
    let (invoker, retries) = open_invoker(&flow, compute, home, reporter.as_ref())?;
    // The invoker's workers end with the run, however it ends.
    let opened = open_lines(
        &mut flow,
        &invoker,
        &req,
        &named.data_file,
        home,
        &*reporter,
    )
    .await;
    let lines = match opened {
        Ok(lines) => lines,
        Err(e) => {
            invoker.shutdown().await;
            return Err(e);
        }
    };
    let flow = Arc::new(flow);
    let output_dir = req
        .output_dir
        .clone()
        .unwrap_or_else(|| runs::runs_dir(home).join(&named.name));
    let prepared = prepare_folder(&output_dir, &flow, &lines.rows);
    let concurrency = req.concurrency.unwrap_or(16).max(1);
    // The workers start, with the flow's tools loaded, before the first line's clock does, as
    // promptflow starts its processes and loads the tools before it runs lines.
    invoker
        .warm(&flow, concurrency.min(workers).min(lines.rows.len()))
        .await;
    let meta = named.running_meta(&req, &output_dir, lines.rows.len(), concurrency);
    let engine = engine_options(&req, concurrency, run_tracing(&req, &flow, &named.name));
    let outcome = match prepared {
        Ok(()) => {
            execute(
                flow,
                invoker.clone(),
                lines,
                meta,
                home,
                engine,
                reporter,
                cancel,
                retries,
            )
            .await
        }
        Err(e) => Err(e),
    };
    invoker.shutdown().await;
    drop(merged);
    outcome
}

/// A run's flow, data and name, as the request gives them or the run it resumes had them.
struct NamedRun {
    flow_dir: PathBuf,
    /// The file the rows are read from (a resumed run's copy of its data).
    data_file: PathBuf,
    /// The data as the run's record names it (a resumed run's original file).
    data_shown: PathBuf,
    name: String,
}

impl NamedRun {
    /// Complete `req` from the run it resumes, then check that it names a flow and data and a
    /// run name that is valid and not taken.
    fn resolve(req: &mut BatchRequest, home: &Path) -> Result<NamedRun> {
        let (data_file, data_shown) = inherit_from_resumed(req, home)?;
        let (Some(flow_dir), Some(data_file), Some(data_shown)) =
            (req.flow.clone(), data_file, data_shown)
        else {
            bail!("--flow and --data are required (unless resuming a run with --resume-from)");
        };
        let name = req.name.clone().unwrap_or_else(|| default_name(&flow_dir));
        runs::check_name(&name)?;
        if runs::exists(home, &name) {
            bail!(
                "run '{name}' already exists\nhint: pick another --name, or `flowrt run show {name}`"
            );
        }
        Ok(NamedRun {
            flow_dir,
            data_file,
            data_shown,
            name,
        })
    }

    /// The record a run starts with (`Running`, nothing counted yet).
    fn running_meta(
        &self,
        req: &BatchRequest,
        output_dir: &Path,
        total_lines: usize,
        concurrency: usize,
    ) -> RunMeta {
        let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        RunMeta {
            name: self.name.clone(),
            status: RunStatus::Running,
            flow: canonical(&self.flow_dir),
            data: canonical(&self.data_shown),
            output_dir: canonical(output_dir),
            base_run: req.run.clone(),
            resumed_from: req.resume_from.clone(),
            variant: req.variant.clone(),
            init: req.init.clone(),
            column_mapping: req
                .column_mapping
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            created: runs::utc_now(),
            finished: None,
            duration_s: 0.0,
            total_lines,
            completed_lines: 0,
            failed_lines: 0,
            concurrency,
            pid: std::process::id(),
            error: None,
        }
    }
}

/// What a resumed run gives a request that does not say otherwise: its `init`, its data (read
/// from the copy in its folder, shown as it named it), and, when the flow is not given, its
/// flow, mapping, base run and variant. Returns the data file to read and the data to show.
fn inherit_from_resumed(
    req: &mut BatchRequest,
    home: &Path,
) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
    let (mut data_file, mut data_shown) = (req.data.clone(), req.data.clone());
    let Some(prev) = &req.resume_from else {
        return Ok((data_file, data_shown));
    };
    let meta = runs::load(home, prev)?;
    if req.init.is_none() {
        req.init = meta.init.clone();
    }
    if data_file.is_none() {
        data_file = Some(meta.output_dir.join("data.jsonl"));
        data_shown = Some(meta.data.clone());
    }
    if req.flow.is_none() {
        req.flow = Some(meta.flow.clone());
        if req.column_mapping.is_empty() {
            req.column_mapping = meta
                .column_mapping
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        req.run = req.run.take().or(meta.base_run.clone());
        req.variant = req.variant.take().or(meta.variant.clone());
    }
    Ok((data_file, data_shown))
}

/// The flow's tool invoker, with its Python workers when the flow needs them (a session's
/// interpreter, else an environment resolved here from the flow's requirements), and the hub
/// that counts its LLM retries.
fn open_invoker(
    flow: &Flow,
    compute: Compute,
    home: &Path,
    reporter: &dyn Reporter,
) -> Result<(Arc<FlowInvoker>, Arc<RetryHub>)> {
    let env = invoker::environment(flow, &compute.connections)?;
    let spec = match &compute.python {
        Some(python) if invoker::needs_python(flow) => Some(flowrt_python::WorkerSpec {
            python: python.clone(),
            flow_dir: flow.dir.clone(),
            env,
            state_dir: home.to_path_buf(),
        }),
        Some(_) => None,
        None => invoker::python_spec(flow, home, env, &mut |m| reporter.note(m))?,
    };
    let retries = Arc::new(RetryHub::default());
    let invoker = Arc::new(
        FlowInvoker::new(flow, compute.connections, spec, compute.workers)?
            .with_retry_listener(retries.listener()),
    );
    Ok((invoker, retries))
}

/// Everything that may refuse the run before it records itself: a flex flow typed by its
/// entry's signature, a flow promptflow would refuse to load, and the data and mapping.
async fn open_lines(
    flow: &mut Flow,
    invoker: &FlowInvoker,
    req: &BatchRequest,
    data_file: &Path,
    home: &Path,
    reporter: &dyn Reporter,
) -> Result<Lines> {
    // A flex flow is typed by its entry's signature before any line runs.
    crate::flex::finish(flow, invoker, req.init.as_ref()).await?;
    // A flow promptflow would refuse to load (a tool's connection that does not exist)
    // fails before any line runs.
    invoker.preflight(flow).await?;
    let lines = read_lines(req, data_file, home, reporter)?;
    warn_unknown_mapped_inputs(flow, &req.column_mapping, reporter);
    Ok(lines)
}

/// A mapping to an input the flow does not have reaches no line (promptflow accepts it too, so
/// the run goes on): said once, with the inputs there are, since it is most often a typo.
/// Flex flows are left out: an entry taking `**kwargs` accepts any name.
fn warn_unknown_mapped_inputs(
    flow: &Flow,
    mapping: &IndexMap<String, String>,
    reporter: &dyn Reporter,
) {
    if flow.kind == flowrt_flow::FlowKind::Flex || flow.inputs.is_empty() {
        return;
    }
    let unknown: Vec<&str> = mapping
        .keys()
        .filter(|k| !flow.inputs.contains_key(*k))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return;
    }
    let inputs: Vec<&str> = flow.inputs.keys().map(String::as_str).collect();
    reporter.warn(&format!(
        "--column-mapping {}: the flow has no such input, so no line uses it (its inputs: {})",
        unknown.join(", "),
        inputs.join(", ")
    ));
}

/// What becomes of the run's spans: recorded in its folder when the request names the trace
/// (a session's run), else exported when the OpenTelemetry variables name a receiver.
fn run_tracing(req: &BatchRequest, flow: &Flow, name: &str) -> Tracing {
    if let Some(trace) = &req.trace {
        return Tracing::Record(trace.clone());
    }
    let collection = crate::otel::flow_name(flow);
    match crate::otel::Exporter::from_env(&collection) {
        Some(exporter) => Tracing::Export(
            exporter,
            flowrt_api::trace::TraceAs {
                collection,
                run: Some(name.to_string()),
                base_run: req.run.clone(),
            },
        ),
        None => Tracing::Off,
    }
}

/// The line loop's options: the request's timeouts (else `PF_LINE_TIMEOUT_SEC`, 600 s, and
/// `PF_BATCH_TIMEOUT_SEC`), its concurrency, streaming and tracing.
fn engine_options(req: &BatchRequest, concurrency: usize, tracing: Tracing) -> EngineOptions {
    let line_timeout = req
        .line_timeout
        .or_else(|| env_seconds("PF_LINE_TIMEOUT_SEC"))
        .unwrap_or(600.0);
    let batch_timeout = req
        .batch_timeout
        .or_else(|| env_seconds("PF_BATCH_TIMEOUT_SEC"));
    EngineOptions {
        concurrency,
        line_timeout: Some(Duration::from_secs_f64(line_timeout)),
        batch_timeout: batch_timeout.map(Duration::from_secs_f64),
        long_running_interval: Duration::from_secs_f64(req.long_running_interval.max(0.01)),
        stream: req.stream,
        tracing,
    }
}

/// The data rows, the mapping (checked against the columns and base outputs there are), the base
/// run of an evaluation and the lines kept from a resumed run.
fn read_lines(
    req: &BatchRequest,
    data_file: &Path,
    home: &Path,
    reporter: &dyn Reporter,
) -> Result<Lines> {
    let rows = crate::data::Rows::open(data_file)?;
    let mapping = ColumnMapping::from_map(&req.column_mapping, req.run.is_some())?;
    // Evaluation runs join the base run's outputs and data rows by line number.
    let base = match &req.run {
        Some(base) => {
            let meta = runs::load(home, base)?;
            Some(
                BaseRun::open(&meta.output_dir)
                    .with_context(|| format!("reading the outputs of base run '{base}'"))?,
            )
        }
        None => None,
    };
    // A mapping that reads a column or output no line has would fail every line: say so now.
    let data_columns: HashSet<String> = rows.columns();
    let base_data_columns: HashSet<String> =
        base.as_ref().map(|b| b.rows.columns()).unwrap_or_default();
    mapping.check_names(&flowrt_executor::KnownNames {
        data_columns: Some(&data_columns),
        base_outputs: base
            .as_ref()
            .filter(|b| !b.outputs.is_empty())
            .map(|b| &b.output_names),
        base_data_columns: base
            .as_ref()
            .filter(|b| !b.rows.is_empty())
            .map(|_| &base_data_columns),
    })?;
    for (input, value) in mapping.suspicious_literals() {
        reporter.warn(&format!(
            "--column-mapping {input}='{value}' is not a reference (they look like '${{data.COLUMN}}'), so every line gets this text as it is"
        ));
    }
    // Resumed runs keep the lines that completed; a spread run's gathering keeps every line.
    let kept: BTreeMap<usize, Value> = match (&req.prior_records, &req.resume_from) {
        (Some(file), _) => runs::read_line_records(file)?
            .into_iter()
            .filter(|(n, _)| *n < rows.len())
            .collect(),
        (None, Some(prev)) => {
            let meta = runs::load(home, prev)?;
            runs::line_records(&meta.output_dir)?
                .into_iter()
                .filter(|(n, r)| r["status"] == "Completed" && *n < rows.len())
                .collect()
        }
        (None, None) => BTreeMap::new(),
    };
    let range = match req.lines {
        Some((start, end)) if start < end && end <= rows.len() => Some(start..end),
        Some((start, end)) => bail!(
            "lines {start}..{end} are not within the data's {} lines",
            rows.len()
        ),
        None => None,
    };
    Ok(Lines {
        rows,
        mapping,
        base,
        kept,
        range,
    })
}

/// The run folder's inputs: a snapshot of the flow (so the run records what it ran) and the data
/// as read (`data.jsonl`, what a resume and an evaluation read back).
fn prepare_folder(output_dir: &Path, flow: &Flow, rows: &crate::data::Rows) -> Result<()> {
    fs_err::create_dir_all(output_dir.join("flow_outputs"))?;
    let snapshot = output_dir.join("snapshot");
    if flow.kind == flowrt_flow::FlowKind::Prompty {
        // A .prompty is self-contained; its folder may be anything (the current directory).
        fs_err::create_dir_all(&snapshot)?;
        fs_err::copy(
            &flow.file,
            snapshot.join(flow.file.file_name().unwrap_or_default()),
        )?;
    } else {
        // The output folder may lie inside the flow folder (`--output-dir out` next to a
        // .prompty): the snapshot leaves it out, with bulky and generated folders.
        let skip = output_dir.canonicalize().ok();
        let filter = flowrt_store::fsutil::CopyFilter {
            skip_names: &["__pycache__", "node_modules"],
            skip_hidden: true,
            skip_dir: skip.as_deref(),
            symlinks: false,
        };
        flowrt_store::fsutil::copy_tree(&flow.dir, &snapshot, &filter)?;
    }
    write_jsonl(&output_dir.join("data.jsonl"), rows)
}

fn write_jsonl(path: &Path, rows: &crate::data::Rows) -> Result<()> {
    let mut f = std::io::BufWriter::new(fs_err::File::create(path)?);
    for r in rows.iter()? {
        writeln!(f, "{}", serde_json::to_string(&r?)?)?;
    }
    f.flush()?;
    Ok(())
}

/// One finished line as written to `line_runs.jsonl`.
fn line_record(r: &LineResult) -> LineRecord {
    let nodes: Vec<Value> = r
        .node_runs
        .iter()
        .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
        .collect();
    LineRecord {
        line_number: r.line_number as u64,
        status: if r.succeeded() {
            LineRecord::COMPLETED
        } else {
            LineRecord::FAILED
        }
        .into(),
        inputs: serde_json::to_value(&r.inputs).unwrap_or(Value::Null),
        outputs: r
            .succeeded()
            .then(|| serde_json::to_value(&r.outputs).unwrap_or(Value::Null)),
        error: r.error.as_ref().map(|e| {
            json!({"node": e.node, "error_type": e.failure.error_type, "message": e.failure.message, "traceback": e.failure.traceback})
        }),
        duration: r.duration.as_secs_f64(),
        nodes,
        aggregation_inputs: Some(serde_json::to_value(&r.aggregation_inputs).unwrap_or(Value::Null)),
        more: Map::new(),
    }
}

/// A line that failed before it could run (bad mapping or inputs).
fn failed_record(
    line: usize,
    inputs: &IndexMap<String, Value>,
    error_type: &str,
    message: String,
) -> LineRecord {
    LineRecord {
        line_number: line as u64,
        status: LineRecord::FAILED.into(),
        inputs: serde_json::to_value(inputs).unwrap_or(Value::Null),
        outputs: None,
        error: Some(
            json!({"node": null, "error_type": error_type, "message": message, "traceback": null}),
        ),
        duration: 0.0,
        nodes: Vec::new(),
        aggregation_inputs: None,
        more: Map::new(),
    }
}

/// Writes records in line order as lines finish in any order.
struct OrderedWriter {
    outputs: std::io::BufWriter<fs_err::File>,
    records: std::io::BufWriter<fs_err::File>,
    pending: BTreeMap<usize, LineRecord>,
    next: usize,
    completed: usize,
    failed: Vec<Value>,
    /// Per aggregation node, per input: the completed lines' values in line order.
    aggregation: flowrt_executor::AggregationInputs,
    stream: bool,
    reporter: Arc<dyn Reporter>,
    /// Where images in a line's record are saved (`flow_outputs`, as promptflow saves them).
    images_dir: std::path::PathBuf,
    /// How their references are written (the flow's `message_format`).
    image_format: crate::images::MessageFormat,
}

impl OrderedWriter {
    fn open(
        output_dir: &Path,
        stream: bool,
        reporter: Arc<dyn Reporter>,
        image_format: crate::images::MessageFormat,
    ) -> Result<Self> {
        Ok(OrderedWriter {
            outputs: std::io::BufWriter::new(fs_err::File::create(
                output_dir.join("flow_outputs").join("output.jsonl"),
            )?),
            records: std::io::BufWriter::new(fs_err::File::create(
                output_dir.join("line_runs.jsonl"),
            )?),
            pending: BTreeMap::new(),
            next: 0,
            completed: 0,
            failed: Vec::new(),
            aggregation: Default::default(),
            stream,
            reporter,
            images_dir: output_dir.join("flow_outputs"),
            image_format,
        })
    }

    fn push(&mut self, record: LineRecord) -> Result<()> {
        let n = record.line_number as usize;
        self.pending.insert(n, record);
        while let Some(rec) = self.pending.remove(&self.next) {
            self.write(rec)?;
            self.next += 1;
        }
        Ok(())
    }

    /// Lines that will never come (canceled) leave gaps: write what is there, in order.
    fn drain(&mut self) -> Result<()> {
        let rest = std::mem::take(&mut self.pending);
        for (_, rec) in rest {
            self.write(rec)?;
        }
        Ok(())
    }

    /// An image in a line's record is written as promptflow writes it in a batch: a file in
    /// flow_outputs, referenced by its name there.
    fn persist_images(&self, rec: &mut LineRecord) -> Result<()> {
        let values = [&mut rec.inputs]
            .into_iter()
            .chain(rec.outputs.as_mut())
            .chain(rec.aggregation_inputs.as_mut())
            .chain(rec.nodes.iter_mut())
            .chain(rec.more.values_mut());
        for value in values {
            if crate::images::has_images(value) {
                *value = crate::images::persist_images(
                    value,
                    &self.images_dir,
                    Some(&self.images_dir),
                    self.image_format,
                )
                .with_context(|| {
                    format!("saving a line's images in {}", self.images_dir.display())
                })?;
            }
        }
        Ok(())
    }

    fn write(&mut self, mut rec: LineRecord) -> Result<()> {
        self.persist_images(&mut rec)?;
        let n = Value::from(rec.line_number);
        if rec.completed() {
            self.completed += 1;
            let mut out = Map::new();
            out.insert("line_number".into(), n);
            if let Some(o) = rec.outputs.as_ref().and_then(Value::as_object) {
                out.extend(o.clone());
            }
            // NaN and the infinities written as promptflow writes them (`NaN`, `Infinity`).
            let text = flowrt_flow::nonfinite::to_json_line(&Value::Object(out));
            if self.stream {
                self.reporter.output(&text);
            }
            writeln!(self.outputs, "{text}")?;
            if let Some(a) = rec
                .aggregation_inputs
                .as_ref()
                .filter(|a| a.as_object().is_some_and(|m| !m.is_empty()))
            {
                self.aggregation.push_json(a.clone());
            }
        } else {
            let mut e = rec.error.clone().unwrap_or(Value::Null);
            if let Some(o) = e.as_object_mut() {
                o.insert("line_number".into(), n);
            }
            self.failed.push(e);
        }
        // A line that gives aggregation nothing says nothing about it.
        if rec
            .aggregation_inputs
            .as_ref()
            .is_some_and(|a| a.as_object().is_none_or(|m| m.is_empty()))
        {
            rec.aggregation_inputs = None;
        }
        writeln!(self.records, "{}", serde_json::to_string(&rec)?)?;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.outputs.flush()?;
        self.records.flush()?;
        Ok(())
    }
}

/// The counts the reporter sees.
struct Counter {
    progress: Progress,
    started: Instant,
    last_logged: Instant,
    /// When the run folder's pace file was last written, and the folder.
    last_paced: Instant,
    dir: PathBuf,
    retries: Arc<RetryHub>,
    /// Each endpoint's (requests, 429s, time waited) when the run started: the process may have
    /// sent others (a session's earlier runs and tests).
    calls_before: HashMap<String, (u64, u64, Duration)>,
    /// Model calls answered to the lines that finished (each line counts its own).
    answered_to_finished_lines: u64,
}

impl Counter {
    /// The counts as a run of `total` lines starts, the lines `kept` from a resumed run done
    /// already; the model calls the process made before are set aside.
    fn start(
        total: usize,
        kept: &BTreeMap<usize, Value>,
        dir: &Path,
        retries: Arc<RetryHub>,
    ) -> Counter {
        let calls_before = flowrt_tools::rate_statuses()
            .into_iter()
            .map(|st| (st.endpoint, (st.requests, st.rate_limited, st.waited)))
            .collect();
        Counter {
            calls_before,
            answered_to_finished_lines: 0,
            progress: Progress {
                total,
                done: kept.len(),
                kept: kept.len(),
                failed: kept.values().filter(|r| r["status"] != "Completed").count(),
                ..Progress::default()
            },
            started: Instant::now(),
            last_logged: Instant::now(),
            last_paced: Instant::now(),
            dir: dir.to_path_buf(),
            retries,
        }
    }

    fn snapshot(&mut self) -> &Progress {
        self.progress.elapsed = self.started.elapsed();
        self.progress.retries = self.retries.retries.load(Relaxed);
        self.progress.rate_limited = self.retries.rate_limited.load(Relaxed);
        let ran = self.progress.done.saturating_sub(self.progress.kept);
        self.progress.quota = flowrt_tools::rate_statuses().into_iter().find_map(|st| {
            let pace = st.pace?;
            let (requests, limited, waited) = self
                .calls_before
                .get(&st.endpoint)
                .copied()
                .unwrap_or_default();
            let served = st
                .requests
                .saturating_sub(requests)
                .saturating_sub(st.rate_limited.saturating_sub(limited));
            (served > 0).then(|| QuotaPace {
                endpoint: st.endpoint.clone(),
                pace,
                calls_per_line: if ran > 0 {
                    self.answered_to_finished_lines as f64 / ran as f64
                } else {
                    0.0
                },
                wait_per_call: st.waited.saturating_sub(waited)
                    / u32::try_from(served).unwrap_or(u32::MAX).max(1),
            })
        });
        &self.progress
    }
}

/// Run the lines of a prepared run folder and record the run: `run.json` says Running first and
/// the final status last; lines run at most `concurrency` at a time, each stopped at its timeout;
/// kept lines are written as they were and not run; a cancel (or the batch timeout) stops the
/// lines still running and ends the run Canceled.
#[allow(clippy::too_many_arguments)]
pub async fn execute<I: ToolInvoker + 'static>(
    flow: Arc<Flow>,
    invoker: Arc<I>,
    lines: Lines,
    mut meta: RunMeta,
    home: &Path,
    options: EngineOptions,
    reporter: Arc<dyn Reporter>,
    cancel: Cancel,
    retries: Arc<RetryHub>,
) -> Result<BatchOutcome> {
    let started = Instant::now();
    let output_dir = meta.output_dir.clone();
    fs_err::create_dir_all(output_dir.join("flow_outputs"))?;
    meta.status = RunStatus::Running;
    let chunk = lines.range.clone();
    meta.total_lines = chunk.as_ref().map_or(lines.rows.len(), |r| r.len());
    runs::save(home, &meta)?;
    let log = Arc::new(RunLog::create(&output_dir, reporter.clone())?);
    let _ = retries.sink.set((log.clone(), reporter.clone()));
    let name = meta.name.clone();
    let total = meta.total_lines;
    log.log(&format!(
        "run {name}: flow {}, data {} ({total} lines)",
        meta.flow.display(),
        meta.data.display(),
    ));
    log.log(&format!("concurrency: {}", options.concurrency));
    if !lines.kept.is_empty() {
        log.log(&format!(
            "resuming from {}: {} completed lines kept",
            meta.resumed_from.as_deref().unwrap_or(""),
            lines.kept.len()
        ));
    }
    let mut counter = Counter::start(total, &lines.kept, &output_dir, retries.clone());
    reporter.started(&meta, counter.snapshot());
    let executor = Arc::new(Executor::new(
        flow.clone(),
        invoker,
        log.clone(),
        ExecutorOptions {
            line_timeout: options.line_timeout,
            record_node_inputs: options.tracing.trace_as().is_some(),
        },
    ));
    let mut writer = OrderedWriter::open(
        &output_dir,
        options.stream,
        reporter.clone(),
        flow.message_format,
    )?;
    writer.next = chunk.as_ref().map_or(0, |r| r.start);
    let status = run_lines(
        &executor,
        lines,
        &options,
        &mut writer,
        &mut counter,
        &log,
        &cancel,
    )
    .await;
    reporter.lines_done(counter.snapshot());
    // What finished is written whatever else went wrong.
    log.flush_node_events();
    let written = writer.drain().and_then(|_| writer.flush());
    let ended = match (status, written) {
        (Ok(status), Ok(())) => {
            let end = RunEnd {
                home,
                log: &log,
                started,
                aggregate: chunk.is_none(),
                tracing: &options.tracing,
            };
            record_end(&executor, &mut writer, status, &mut meta, end).await
        }
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    };
    if ended.is_err() {
        finish_tracing(&options.tracing).await;
    }
    match ended {
        Ok(()) => Ok(BatchOutcome { meta }),
        Err(e) => {
            // The record says how it ended, so it does not stay Running.
            log.log(&format!("run {name} failed: {e:#}"));
            meta.status = RunStatus::Failed;
            meta.error = Some(format!("{e:#}"));
            meta.finished = Some(runs::utc_now());
            let _ = runs::save(home, &meta);
            Err(e)
        }
    }
}

/// How the end of a run is recorded: in which home and log, since when the run started,
/// whether it aggregates, and what becomes of its spans.
struct RunEnd<'a> {
    home: &'a Path,
    log: &'a RunLog,
    started: Instant,
    /// Not for a chunk of a spread run: aggregation needs every line.
    aggregate: bool,
    tracing: &'a Tracing,
}

/// After the lines: aggregation (`metrics.json`, `aggregation.json`; not for a chunk of a spread
/// run), `error.json`, and the final record.
async fn record_end<I: ToolInvoker + 'static>(
    executor: &Executor<I>,
    writer: &mut OrderedWriter,
    status: RunStatus,
    meta: &mut RunMeta,
    end: RunEnd<'_>,
) -> Result<()> {
    let RunEnd {
        home,
        log,
        started,
        aggregate,
        tracing,
    } = end;
    let output_dir = meta.output_dir.clone();
    let name = meta.name.clone();
    let reporter = &log.reporter;
    if aggregate && status == RunStatus::Completed && executor.has_aggregation() {
        let lines = std::mem::take(&mut writer.aggregation);
        let agg = executor.run_aggregation_of(lines).await;
        // Traces are extra: the run's record and metrics do not depend on them.
        if let Err(e) = trace_aggregation(tracing, executor.flow(), &agg.node_runs, &output_dir) {
            log.log(&format!(
                "warning: the aggregation's spans were not recorded: {e:#}"
            ));
        }
        fs_err::write(
            output_dir.join("metrics.json"),
            serde_json::to_string_pretty(&agg.metrics)?,
        )?;
        fs_err::write(
            output_dir.join("aggregation.json"),
            serde_json::to_string_pretty(&agg.node_runs)?,
        )?;
        if let Some(e) = agg.error {
            log.log(&format!("aggregation failed: {e}"));
            reporter.error(&format!("aggregation failed: {e}"));
        }
    } else if !output_dir.join("metrics.json").exists() {
        fs_err::write(output_dir.join("metrics.json"), "{}")?;
    }
    let mut status = status;
    // A run none of whose lines succeeded produced nothing: it failed, whatever the reason.
    if status == RunStatus::Completed && writer.completed == 0 && meta.total_lines > 0 {
        status = RunStatus::Failed;
        let first = writer
            .failed
            .first()
            .and_then(|e| e["message"].as_str())
            .unwrap_or("no line ran");
        meta.error = Some(format!(
            "every line failed; line {}: {first}",
            writer
                .failed
                .first()
                .map(|e| e["line_number"].to_string())
                .unwrap_or_else(|| "0".into())
        ));
    }
    if !writer.failed.is_empty() {
        fs_err::write(
            output_dir.join("error.json"),
            serde_json::to_string_pretty(&writer.failed)?,
        )?;
    }
    meta.status = status;
    meta.completed_lines = writer.completed;
    meta.failed_lines = writer.failed.len();
    meta.finished = Some(runs::utc_now());
    meta.duration_s = started.elapsed().as_secs_f64();
    finish_tracing(tracing).await;
    runs::save(home, meta)?;
    log.log(&format!(
        "run {name} {:?}: {} completed, {} failed, {} not run, {:.2} s",
        status,
        meta.completed_lines,
        meta.failed_lines,
        meta.total_lines - meta.completed_lines - meta.failed_lines,
        meta.duration_s
    ));
    Ok(())
}

/// A line's record, and its spans when the run records them.
type FinishedLine = (LineRecord, Option<Vec<flowrt_api::trace::TraceSpan>>);

/// The line loop: keeps `concurrency` lines running until none is left or the run is canceled.
async fn run_lines<I: ToolInvoker + 'static>(
    executor: &Arc<Executor<I>>,
    lines: Lines,
    options: &EngineOptions,
    writer: &mut OrderedWriter,
    counter: &mut Counter,
    log: &Arc<RunLog>,
    cancel: &Cancel,
) -> Result<RunStatus> {
    let mut spans = RunSpans::open(&options.tracing, &counter.dir)?;
    let mut feed = LineFeed::open(lines, writer)?;
    // Each line's record, and the model calls answered to it.
    let mut set: JoinSet<(FinishedLine, u64)> = JoinSet::new();
    let warn_interval = options.long_running_interval;
    let mut ticker = tokio::time::interval(Duration::from_millis(200).min(warn_interval));
    let deadline = options
        .batch_timeout
        .map(|d| tokio::time::Instant::now() + d);
    let concurrency = options.concurrency.max(1);
    let status = loop {
        while set.len() < concurrency {
            let Some(job) = feed.next_job()? else { break };
            let line = run_line(executor.clone(), job, spans.line.clone());
            set.spawn(flowrt_tools::counting_answers(line));
        }
        if set.is_empty() {
            break RunStatus::Completed;
        }
        tokio::select! {
            joined = set.join_next() => {
                if let Some(joined) = joined {
                    let finished = joined.map_err(|e| anyhow!("a line task failed: {e}"))?;
                    line_finished(finished, &mut spans, writer, counter, log)?;
                }
            }
            _ = ticker.tick() => {
                tick(counter, log, warn_interval);
            }
            reason = cancel.canceled() => {
                log.log(&format!("{reason}: canceling the run"));
                set.abort_all();
                break RunStatus::Canceled;
            }
            _ = sleep_until(deadline) => {
                log.log(&format!("the run exceeded --batch-timeout ({} s): canceling the remaining lines", options.batch_timeout.map(|d| d.as_secs_f64()).unwrap_or(0.0)));
                set.abort_all();
                break RunStatus::Canceled;
            }
        }
    };
    // Aborted lines are gone before the run records itself: nothing of theirs runs on.
    while set.join_next().await.is_some() {}
    // The pace as the run ended: the last a reader of the run folder sees.
    if let Some(q) = counter.snapshot().quota.clone() {
        write_pace(&counter.dir, &q);
    }
    Ok(status)
}

/// Resolves at `deadline`; never without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What a line does with its spans: nothing, hand them to the exporter, or return them to be
/// recorded in the run folder.
#[derive(Clone)]
struct LineTrace {
    trace_as: Option<Arc<flowrt_api::trace::TraceAs>>,
    exporter: Option<crate::otel::Exporter>,
}

impl LineTrace {
    /// A finished line's spans when the run records them (exported ones are handed over here).
    fn spans_of(
        &self,
        flow: &Flow,
        line: &LineResult,
    ) -> Option<Vec<flowrt_api::trace::TraceSpan>> {
        match (self.trace_as.as_deref(), &self.exporter) {
            (Some(t), Some(exporter)) => {
                exporter.export_line(flow, line, t);
                None
            }
            (Some(t), None) => Some(crate::otel::line_spans(flow, line, t)),
            (None, _) => None,
        }
    }
}

/// The line loop's tracing, only when asked: an exporter takes each line's spans as it ends
/// (into its bounded queue, never waiting); a recorded run writes them beside its line records.
struct RunSpans {
    /// What each line is given.
    line: LineTrace,
    /// The run folder's [`SPANS_FILE`], when the run records its spans.
    file: Option<std::io::BufWriter<fs_err::File>>,
}

impl RunSpans {
    /// Tracing as `tracing` asks, creating the spans file in `dir` when spans are recorded.
    fn open(tracing: &Tracing, dir: &Path) -> Result<Self> {
        let exporter = match tracing {
            Tracing::Export(exporter, _) => Some(exporter.clone()),
            _ => None,
        };
        let file = match tracing {
            Tracing::Record(_) => Some(std::io::BufWriter::new(fs_err::File::create(
                dir.join(SPANS_FILE),
            )?)),
            _ => None,
        };
        Ok(RunSpans {
            line: LineTrace {
                trace_as: tracing.trace_as().cloned().map(Arc::new),
                exporter,
            },
            file,
        })
    }

    /// Add a finished line's spans to the spans file (at once: the server reads them from there).
    fn record(&mut self, spans: Option<Vec<flowrt_api::trace::TraceSpan>>) -> Result<()> {
        if let (Some(file), Some(spans), Some(trace)) = (&mut self.file, spans, &self.line.trace_as)
        {
            let line = flowrt_api::trace::LineSpans {
                collection: trace.collection.clone(),
                spans,
            };
            writeln!(file, "{}", serde_json::to_string(&line)?)?;
            file.flush()?;
        }
        Ok(())
    }
}

/// One line to run: its number, its data row (with the columns any row has), its base run's
/// outputs and data row, and the mapping that makes its inputs.
struct LineJob {
    number: usize,
    row: Map<String, Value>,
    base_outputs: Option<Map<String, Value>>,
    base_row: Option<Map<String, Value>>,
    columns: Arc<HashSet<String>>,
    mapping: Arc<ColumnMapping>,
}

/// Hands out the lines still to run in line order, reading their data rows (and base run lines)
/// as they start, so the data is never held whole.
struct LineFeed {
    /// The lines of the run (or of its chunk); kept ones are skipped.
    todo: std::ops::Range<usize>,
    kept: BTreeMap<usize, Value>,
    rows: std::iter::Enumerate<crate::data::RowIter>,
    base: Option<BaseCursor>,
    columns: Arc<HashSet<String>>,
    mapping: Arc<ColumnMapping>,
}

impl LineFeed {
    /// Write the kept lines' records as they were, and get ready to read the others.
    fn open(lines: Lines, writer: &mut OrderedWriter) -> Result<Self> {
        let Lines {
            rows,
            mapping,
            base,
            kept,
            range,
        } = lines;
        for rec in kept.values() {
            writer.push(
                serde_json::from_value(rec.clone())
                    .context("reading a line record of the run it resumes")?,
            )?;
        }
        let columns: Arc<HashSet<String>> = Arc::new(rows.columns());
        let mapping = Arc::new(mapping);
        let base = base.as_ref().map(BaseRun::cursor).transpose()?;
        let todo = range.unwrap_or(0..rows.len());
        Ok(LineFeed {
            todo,
            kept,
            rows: rows.iter()?.enumerate(),
            base,
            columns,
            mapping,
        })
    }

    /// The next line to run, with what it reads; `None` when every line has started.
    fn next_job(&mut self) -> Result<Option<LineJob>> {
        let kept = &self.kept;
        let Some(number) = self.todo.find(|n| !kept.contains_key(n)) else {
            return Ok(None);
        };
        let row = self.row_at(number)?;
        let (base_outputs, base_row) = match self.base.as_mut() {
            Some(cursor) => cursor.at(number)?,
            None => (None, None),
        };
        Ok(Some(LineJob {
            number,
            row,
            base_outputs,
            base_row,
            columns: self.columns.clone(),
            mapping: self.mapping.clone(),
        }))
    }

    /// Data row `n`: rows are read in order as their lines start (lines start in line order).
    fn row_at(&mut self, n: usize) -> Result<Map<String, Value>> {
        for (i, row) in self.rows.by_ref() {
            if i == n {
                return row;
            }
        }
        bail!("the data has no line {n}")
    }
}

/// Run one line: its inputs mapped from its sources and checked (a line whose mapping or inputs
/// fail is recorded as failed without running), then the flow.
async fn run_line<I: ToolInvoker + 'static>(
    executor: Arc<Executor<I>>,
    job: LineJob,
    trace: LineTrace,
) -> FinishedLine {
    let n = job.number;
    let sources = LineSources {
        data: &job.row,
        columns: Some(job.columns.as_ref()),
        run_outputs: job.base_outputs.as_ref(),
        run_inputs: job.base_row.as_ref(),
    };
    let raw = match job.mapping.line_inputs(executor.flow(), &sources) {
        Ok(r) => r,
        Err(message) => {
            return (
                failed_record(n, &IndexMap::new(), "MappingError", message),
                None,
            )
        }
    };
    match prepare_inputs(executor.flow(), &raw) {
        Ok(inputs) => {
            let line = executor.run_line(n, inputs).await;
            let spans = trace.spans_of(executor.flow(), &line);
            (line_record(&line), spans)
        }
        Err(e) => (failed_record(n, &raw, "InputError", e.to_string()), None),
    }
}

/// A line has finished: its spans recorded, counted, its failure logged, its record written in
/// line order, and the reporter told.
fn line_finished(
    finished: (FinishedLine, u64),
    spans: &mut RunSpans,
    writer: &mut OrderedWriter,
    counter: &mut Counter,
    log: &RunLog,
) -> Result<()> {
    let ((rec, line_spans), answered) = finished;
    spans.record(line_spans)?;
    counter.progress.done += 1;
    counter.answered_to_finished_lines += answered;
    if !rec.completed() {
        counter.progress.failed += 1;
        log.log(&format!(
            "line {} failed: {}",
            rec.line_number,
            rec.error_message()
        ));
    }
    writer.push(rec)?;
    // A finished line is on disk at once: a session streams its records to the server from
    // there, and what a killed agent had not sent runs again.
    writer.flush()?;
    log.reporter.line_finished(counter.snapshot());
    Ok(())
}

/// A few times a second while lines run: warnings for nodes running long, progress to the
/// reporter, the pace file at most each second, a progress line in the log every 5 s.
fn tick(counter: &mut Counter, log: &RunLog, warn_interval: Duration) {
    for d in log.running.due(warn_interval) {
        log.warn(&d);
    }
    log.reporter.tick(counter.snapshot());
    if counter.last_paced.elapsed() >= Duration::from_secs(1) {
        counter.last_paced = Instant::now();
        if let Some(q) = &counter.progress.quota {
            write_pace(&counter.dir, q);
        }
    }
    if counter.last_logged.elapsed() >= Duration::from_secs(5) {
        counter.last_logged = Instant::now();
        let text = counter.snapshot().text();
        log.log(&format!("progress: {text}"));
    }
}

/// Send what the run's exporter has queued (its record says it ended after that: an
/// evaluation's spans find the base run's in the viewer), waiting at most a few seconds for a
/// slow receiver.
async fn finish_tracing(tracing: &Tracing) {
    if let Tracing::Export(exporter, _) = tracing {
        let exporter = exporter.clone();
        let _ = tokio::task::spawn_blocking(move || exporter.finish()).await;
    }
}

/// The aggregation's spans: handed to the exporter, or added to the run's [`SPANS_FILE`].
fn trace_aggregation(
    tracing: &Tracing,
    flow: &flowrt_flow::Flow,
    runs: &[NodeRun],
    output_dir: &Path,
) -> Result<()> {
    match tracing {
        Tracing::Off => {}
        Tracing::Export(exporter, trace) => exporter.export_aggregation(flow, runs, trace),
        Tracing::Record(trace) => {
            let line = flowrt_api::trace::LineSpans {
                collection: trace.collection.clone(),
                spans: crate::otel::aggregation_spans(flow, runs, trace),
            };
            let mut file = fs_err::OpenOptions::new()
                .append(true)
                .create(true)
                .open(output_dir.join(SPANS_FILE))?;
            writeln!(file, "{}", serde_json::to_string(&line)?)?;
        }
    }
    Ok(())
}

/// Replace the run folder's pace file (written aside, then renamed: a reader never sees half).
fn write_pace(dir: &Path, pace: &QuotaPace) {
    let tmp = dir.join(format!("{PACE_FILE}.tmp"));
    if let Ok(text) = serde_json::to_string(pace) {
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, dir.join(PACE_FILE));
        }
    }
}
