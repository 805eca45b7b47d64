//! `flowrt run ...`: batch and evaluation runs. Lines run concurrently (LLM-bound lines are async
//! tasks, not threads; Python work spreads over a pool of workers sized to the cores), results are
//! written in line order as they complete, and a run can be canceled and resumed without losing
//! finished lines.

use crate::invoker::{self, FlowInvoker};
use crate::runs::{self, RunMeta, RunStatus};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use flowrt_executor::{
    prepare_inputs, ColumnMapping, Executor, ExecutorOptions, LineResult, LineSources, NodeRun,
    RunObserver,
};
use flowrt_flow::LoadOptions;
use indexmap::IndexMap;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

#[derive(Subcommand)]
pub enum RunCommand {
    /// Run a flow over every row of a data file (a bulk test), or evaluate a base run (--run).
    ///
    /// Example: flowrt run create --flow ./qa --data questions.jsonl --column-mapping question='${data.q}'
    ///
    /// Exit codes: 0 the run completed (lines that failed are counted on the status line and listed
    /// by `run show-details`); 1 the run failed (every line failed), or any line failed with
    /// --strict; 2 bad input (flow, data, mapping); 130 canceled (resume it with --resume-from).
    Create(Box<CreateArgs>),
    /// List runs: those made here and, with a server configured, those in your sessions.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// The server whose session runs to list too (default: FLOWRT_SERVER, when set).
        #[arg(long)]
        server: Option<String>,
    },
    /// Show a run's status and counts.
    Show {
        /// The run's name (`flowrt run list` shows them).
        name: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// The server to ask when the run was not made here (default: FLOWRT_SERVER).
        #[arg(long)]
        server: Option<String>,
    },
    /// Show a table of a run's lines: status, inputs, outputs, errors.
    ShowDetails {
        /// The run's name.
        name: String,
        /// Show at most this many lines.
        #[arg(long, default_value_t = 50)]
        max_lines: usize,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// The server to ask when the run was not made here (default: FLOWRT_SERVER).
        #[arg(long)]
        server: Option<String>,
    },
    /// Show a run's metrics (from its aggregation nodes' log_metric calls).
    ShowMetrics {
        /// The run's name.
        name: String,
        /// The server to ask when the run was not made here (default: FLOWRT_SERVER).
        #[arg(long)]
        server: Option<String>,
    },
    /// Cancel a running run: finished lines are kept and `--resume-from` continues it.
    Cancel {
        /// The run's name.
        name: String,
        /// The server to ask when the run was not made here (default: FLOWRT_SERVER).
        #[arg(long)]
        server: Option<String>,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// The flow folder or .prompty file (with --resume-from: default the resumed run's flow).
    #[arg(long, required_unless_present_any = ["resume_from", "session"])]
    pub flow: Option<PathBuf>,
    /// The data: .jsonl (one JSON object per line), .csv or .tsv (with --resume-from: default the
    /// resumed run's data).
    #[arg(long, required_unless_present = "resume_from")]
    pub data: Option<PathBuf>,
    /// Map flow inputs to data: NAME='${data.COLUMN}', '${run.outputs.NAME}', '${run.inputs.COLUMN}' or a literal.
    /// Unmapped inputs without a default read the column of the same name.
    #[arg(long, num_args = 1.., action = clap::ArgAction::Append, value_name = "NAME=VALUE")]
    pub column_mapping: Vec<String>,
    /// Evaluate this base run: its outputs and data join this run's lines by line number.
    #[arg(long, value_name = "BASE_RUN")]
    pub run: Option<String>,
    /// The run's name (default: the flow folder's name and the time).
    #[arg(long)]
    pub name: Option<String>,
    /// Where to write the run folder (default: FLOWRT_HOME/runs/NAME).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Use another variant of a node: '${node_name.variant_id}'.
    #[arg(long)]
    pub variant: Option<String>,
    /// Re-run only the lines of RUN that did not complete, keeping its completed lines. The flow,
    /// data, column mapping, base run and variant default to RUN's.
    #[arg(long, value_name = "RUN")]
    pub resume_from: Option<String>,
    /// A flex flow's class entry: a JSON file holding an object of constructor kwargs (default:
    /// the flow's sample.init; with --resume-from: the resumed run's).
    #[arg(long, value_name = "FILE.json")]
    pub init: Option<PathBuf>,
    /// How many lines run at once (default 16: suits LLM-bound flows).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Seconds a line may run before it is stopped and marked failed (default 600, or PF_LINE_TIMEOUT_SEC).
    #[arg(long)]
    pub line_timeout: Option<f64>,
    /// Seconds the whole run may take (default: no limit, or PF_BATCH_TIMEOUT_SEC).
    #[arg(long)]
    pub batch_timeout: Option<f64>,
    /// Seconds between "NODE has been running for N seconds" warnings for a slow node.
    #[arg(long, default_value_t = 60.0)]
    pub long_running_interval: f64,
    /// Print each line's outputs as it completes.
    #[arg(long)]
    pub stream: bool,
    /// Exit 1 when any line fails (for CI), not only when every line fails.
    #[arg(long)]
    pub strict: bool,
    /// Run the flow's Python tools with this interpreter (a compute session passes its
    /// environment's) instead of resolving the flow's requirements here.
    #[arg(long, hide = true)]
    pub python: Option<PathBuf>,
    /// Read the connections from stdin (a JSON list) instead of FLOWRT_HOME: how a session's agent
    /// hands them to a batch run.
    #[arg(long, hide = true)]
    pub connections_stdin: bool,
    /// Python workers to run (default: one per core); a session passes its size's.
    #[arg(long, hide = true)]
    pub workers: Option<usize>,
    /// Run the batch inside this compute session (on the server at --server / FLOWRT_SERVER).
    #[arg(long, value_name = "SESSION_ID")]
    pub session: Option<String>,
    /// The server's URL, with --session.
    #[arg(long)]
    pub server: Option<String>,
}

pub fn run(cmd: RunCommand) -> Result<u8> {
    let home = flowrt_store::flowrt_home();
    match cmd {
        RunCommand::Create(args) if args.session.is_some() => {
            if args.init.is_some() {
                bail!("--init cannot be combined with --session: a session's flex flow uses its sample.init\nhint: run the batch locally to pass constructor kwargs");
            }
            crate::session_cmd::batch_in_session(*args)
        }
        RunCommand::Create(args) => create(*args, &home),
        RunCommand::List { json, server } => crate::run_view::list(json, server.as_deref(), &home),
        RunCommand::Show { name, json, server } => {
            crate::run_view::show(&name, json, server.as_deref(), &home)
        }
        RunCommand::ShowDetails {
            name,
            max_lines,
            json,
            server,
        } => crate::run_view::show_details(&name, max_lines, json, server.as_deref(), &home),
        RunCommand::ShowMetrics { name, server } => {
            crate::run_view::show_metrics(&name, server.as_deref(), &home)
        }
        RunCommand::Cancel { name, server } => {
            crate::run_view::cancel(&name, server.as_deref(), &home)
        }
    }
}

fn env_seconds(name: &str) -> Option<f64> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
}

/// Tracks running nodes for the "has been running" warnings and writes the run log. Warnings (slow
/// nodes, retries) also reach the terminal, above the progress bar when there is one.
struct RunLog {
    file: Mutex<Option<std::fs::File>>,
    running: flowrt_executor::LongRunning,
    terminal: indicatif::ProgressBar,
}

impl RunLog {
    fn log(&self, msg: &str) {
        let line = format!("{} {msg}\n", runs::utc_now());
        if let Ok(mut f) = self.file.lock() {
            if let Some(f) = f.as_mut() {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }

    /// Log `msg` and print it on the terminal as `warning: msg`.
    fn warn(&self, msg: &str) {
        self.log(msg);
        let text = format!("warning: {msg}");
        if self.terminal.is_hidden() {
            eprintln!("{text}");
        } else {
            self.terminal.println(text);
        }
    }

    /// Warn about each node that has run for another whole interval.
    fn warn_long_running(&self, interval: Duration) {
        for d in self.running.due(interval) {
            self.warn(&d);
        }
    }
}

impl RunObserver for RunLog {
    fn node_started(&self, line: Option<usize>, node: &str) {
        self.running.started(line, node);
    }
    fn node_finished(&self, line: Option<usize>, run: &NodeRun) {
        self.running.finished(line, &run.node);
        if !run.logs.is_empty() {
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
}

/// One finished line as written to `line_runs.jsonl`.
fn line_record(r: &LineResult) -> Value {
    let nodes: Vec<Value> = r
        .node_runs
        .iter()
        .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
        .collect();
    json!({
        "line_number": r.line_number,
        "status": if r.succeeded() { "Completed" } else { "Failed" },
        "inputs": r.inputs,
        "outputs": if r.succeeded() { serde_json::to_value(&r.outputs).unwrap_or(Value::Null) } else { Value::Null },
        "error": r.error.as_ref().map(|e| json!({"node": e.node, "error_type": e.failure.error_type, "message": e.failure.message, "traceback": e.failure.traceback})),
        "duration": r.duration.as_secs_f64(),
        "nodes": nodes,
        "aggregation_inputs": r.aggregation_inputs,
    })
}

/// A line that failed before it could run (bad mapping or inputs).
fn failed_record(
    line: usize,
    inputs: &IndexMap<String, Value>,
    error_type: &str,
    message: String,
) -> Value {
    json!({
        "line_number": line,
        "status": "Failed",
        "inputs": inputs,
        "outputs": null,
        "error": {"node": null, "error_type": error_type, "message": message, "traceback": null},
        "duration": 0.0,
        "nodes": [],
        "aggregation_inputs": {},
    })
}

/// Writes records in line order as lines finish in any order.
struct OrderedWriter {
    outputs: std::io::BufWriter<std::fs::File>,
    records: std::io::BufWriter<std::fs::File>,
    pending: BTreeMap<usize, Value>,
    next: usize,
    total: usize,
    completed: usize,
    failed: Vec<Value>,
    /// Per aggregation node, per input: the completed lines' values in line order.
    aggregation: Vec<Value>,
    stream: bool,
}

impl OrderedWriter {
    fn push(&mut self, record: Value) -> Result<()> {
        let n = record["line_number"].as_u64().unwrap_or(0) as usize;
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

    fn write(&mut self, mut rec: Value) -> Result<()> {
        let n = rec["line_number"].clone();
        if rec["status"] == "Completed" {
            self.completed += 1;
            let mut out = Map::new();
            out.insert("line_number".into(), n);
            if let Some(o) = rec["outputs"].as_object() {
                out.extend(o.clone());
            }
            // NaN and the infinities written as promptflow writes them (`NaN`, `Infinity`).
            let text = flowrt_flow::nonfinite::to_json_line(&Value::Object(out));
            if self.stream {
                println!("{text}");
            }
            writeln!(self.outputs, "{text}")?;
            if let Some(a) = rec
                .get("aggregation_inputs")
                .filter(|a| a.as_object().is_some_and(|m| !m.is_empty()))
            {
                self.aggregation.push(a.clone());
            }
        } else if let Some(e) = rec.get("error") {
            let mut e = e.clone();
            if let Some(o) = e.as_object_mut() {
                o.insert("line_number".into(), n);
            }
            self.failed.push(e);
        }
        if let Some(o) = rec.as_object_mut() {
            if o.get("aggregation_inputs")
                .is_some_and(|a| a.as_object().is_some_and(|m| m.is_empty()))
            {
                o.remove("aggregation_inputs");
            }
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

fn default_name(flow: &Path) -> String {
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
    // promptflow's shape: NAME_YYYYMMDD_HHMMSS_micros, in UTC.
    let now = jiff::Timestamp::now();
    let stamp = now.strftime("%Y%m%d_%H%M%S");
    let micros = now.subsec_microsecond();
    format!("{base}_{stamp}_{micros:06}")
}

fn create(mut args: CreateArgs, home: &Path) -> Result<u8> {
    let started = Instant::now();
    // What is not given again is taken from the run being resumed (its data from the copy in
    // its folder, so the original file may have moved).
    let (mut data_file, mut data_shown) = (args.data.clone(), args.data.clone());
    let mut init = crate::flex::read_init(args.init.as_deref())?;
    if let Some(prev) = &args.resume_from {
        let meta = runs::load(home, prev)?;
        if init.is_none() {
            init = meta.init.clone();
        }
        if data_file.is_none() {
            data_file = Some(meta.output_dir.join("data.jsonl"));
            data_shown = Some(meta.data.clone());
        }
        if args.flow.is_none() {
            args.flow = Some(meta.flow.clone());
            if args.column_mapping.is_empty() {
                args.column_mapping = meta
                    .column_mapping
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
            }
            args.run = args.run.take().or(meta.base_run.clone());
            args.variant = args.variant.take().or(meta.variant.clone());
        }
    }
    let (Some(flow_dir), Some(data_file), Some(data_shown)) =
        (args.flow.clone(), data_file, data_shown)
    else {
        bail!("--flow and --data are required (unless resuming a run with --resume-from)");
    };
    let name = args.name.clone().unwrap_or_else(|| default_name(&flow_dir));
    runs::check_name(&name)?;
    if runs::exists(home, &name) {
        bail!(
            "run '{name}' already exists\nhint: pick another --name, or `flowrt run show {name}`"
        );
    }
    let mut options = LoadOptions::default();
    if let Some(v) = &args.variant {
        options.variant = Some(LoadOptions::parse_variant(v).map_err(|e| anyhow!(e))?);
    }
    // A flow with additional_includes runs from a merged copy (removed when the run ends).
    let merged = crate::includes::Merged::new(&flow_dir, home)?;
    let mut flow = merged.load(&options)?;
    let connections = if args.connections_stdin {
        // Started by a session's agent: a batch never outlives the session that runs it.
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
        if nix::unistd::getppid() == nix::unistd::Pid::from_raw(1) {
            bail!("the session that started this run is gone");
        }
        invoker::connections_from_stdin()?
    } else {
        invoker::load_connections(home)?
    };
    let env = invoker::environment(&flow, &connections)?;
    let spec = match &args.python {
        Some(python) if invoker::needs_python(&flow) => Some(flowrt_python::WorkerSpec {
            python: python.clone(),
            flow_dir: flow.dir.clone(),
            env,
            state_dir: home.to_path_buf(),
        }),
        Some(_) => None,
        None => invoker::python_spec(&flow, home, env, &mut |m| eprintln!("{m}"))?,
    };
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let retry_slot: Arc<std::sync::OnceLock<(Arc<RunLog>, Arc<RetryCounts>)>> =
        Arc::new(std::sync::OnceLock::new());
    let slot = retry_slot.clone();
    let invoker = Arc::new(
        FlowInvoker::new(&flow, connections, spec, workers)?.with_retry_listener(Arc::new(
            move |e| {
                if let Some((log, retries)) = slot.get() {
                    retries.record(e);
                    log.warn(&e.to_string());
                }
            },
        )),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // A flex flow is typed by its entry's signature before any line runs.
    if let Err(e) = runtime.block_on(crate::flex::finish(&mut flow, &invoker, init.as_ref())) {
        runtime.block_on(invoker.shutdown());
        return Err(e);
    }
    // A flow promptflow would refuse to load (a tool's connection that does not exist) fails
    // before any line runs.
    if let Err(e) = runtime.block_on(invoker.preflight(&flow)) {
        runtime.block_on(invoker.shutdown());
        return Err(e);
    }
    let flow = Arc::new(flow);
    let rows = crate::data::read_rows(&data_file)?;
    let mapping = ColumnMapping::parse(&args.column_mapping, args.run.is_some())?;

    // Evaluation runs join the base run's outputs and data rows by line number.
    let (base_outputs, base_rows) = match &args.run {
        Some(base) => {
            let meta = runs::load(home, base)?;
            let mut outputs = runs::outputs(&meta.output_dir)
                .with_context(|| format!("reading the outputs of base run '{base}'"))?;
            // promptflow reads the base run's outputs with pandas' type inference.
            crate::data::tabulate(outputs.values_mut(), true);
            let rows =
                crate::data::read_rows(&meta.output_dir.join("data.jsonl")).unwrap_or_default();
            (outputs, rows)
        }
        None => (BTreeMap::new(), Vec::new()),
    };
    // A mapping that reads a column or output no line has would fail every line: say so now.
    let data_columns: std::collections::HashSet<String> =
        rows.iter().flat_map(|r| r.keys().cloned()).collect();
    let base_output_names: std::collections::HashSet<String> = base_outputs
        .values()
        .flat_map(|o| o.keys().cloned())
        .collect();
    let base_data_columns: std::collections::HashSet<String> =
        base_rows.iter().flat_map(|r| r.keys().cloned()).collect();
    mapping.check_names(&flowrt_executor::KnownNames {
        data_columns: Some(&data_columns),
        base_outputs: (!base_outputs.is_empty()).then_some(&base_output_names),
        base_data_columns: (!base_rows.is_empty()).then_some(&base_data_columns),
    })?;
    for (input, value) in mapping.suspicious_literals() {
        eprintln!(
            "warning: --column-mapping {input}='{value}' is not a reference (they look like '${{data.COLUMN}}'), so every line gets this text as it is"
        );
    }
    // Resumed runs keep the lines that completed.
    let kept: BTreeMap<usize, Value> = match &args.resume_from {
        Some(prev) => {
            let meta = runs::load(home, prev)?;
            runs::line_records(&meta.output_dir)?
                .into_iter()
                .filter(|(n, r)| r["status"] == "Completed" && *n < rows.len())
                .collect()
        }
        None => BTreeMap::new(),
    };

    let output_dir = args
        .output_dir
        .clone()
        .unwrap_or_else(|| runs::runs_dir(home).join(&name));
    fs_err::create_dir_all(output_dir.join("flow_outputs"))?;
    // The output folder may lie inside the flow folder (`--output-dir out` next to a .prompty):
    // the snapshot leaves it out.
    let skip = output_dir.canonicalize().ok();
    if flow.kind == flowrt_flow::FlowKind::Prompty {
        // A .prompty is self-contained; its folder may be anything (the current directory).
        let snapshot = output_dir.join("snapshot");
        fs_err::create_dir_all(&snapshot)?;
        fs_err::copy(
            &flow.file,
            snapshot.join(flow.file.file_name().unwrap_or_default()),
        )?;
    } else {
        copy_snapshot(&flow.dir, &output_dir.join("snapshot"), skip.as_deref())?;
    }
    write_jsonl(&output_dir.join("data.jsonl"), &rows)?;

    let concurrency = args.concurrency.unwrap_or(16).max(1);
    let line_timeout = args
        .line_timeout
        .or_else(|| env_seconds("PF_LINE_TIMEOUT_SEC"))
        .unwrap_or(600.0);
    let batch_timeout = args
        .batch_timeout
        .or_else(|| env_seconds("PF_BATCH_TIMEOUT_SEC"));
    let mut meta = RunMeta {
        name: name.clone(),
        status: RunStatus::Running,
        flow: flow_dir.canonicalize().unwrap_or_else(|_| flow_dir.clone()),
        data: data_shown
            .canonicalize()
            .unwrap_or_else(|_| data_shown.clone()),
        output_dir: output_dir
            .canonicalize()
            .unwrap_or_else(|_| output_dir.clone()),
        base_run: args.run.clone(),
        resumed_from: args.resume_from.clone(),
        variant: args.variant.clone(),
        init: init.clone(),
        column_mapping: args
            .column_mapping
            .iter()
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        created: runs::utc_now(),
        finished: None,
        duration_s: 0.0,
        total_lines: rows.len(),
        completed_lines: 0,
        failed_lines: 0,
        concurrency,
        pid: std::process::id(),
        error: None,
    };
    runs::save(home, &meta)?;

    let bar = Progress::bar(rows.len());
    let log = Arc::new(RunLog {
        file: Mutex::new(Some(std::fs::File::create(output_dir.join("logs.txt"))?)),
        running: flowrt_executor::LongRunning::default(),
        terminal: bar.clone(),
    });
    let retries = Arc::new(RetryCounts::default());
    log.log(&format!(
        "run {name}: flow {}, data {} ({} lines)",
        flow_dir.display(),
        data_shown.display(),
        rows.len()
    ));
    log.log(&format!("concurrency: {concurrency}"));
    eprintln!(
        "run {name}: {} lines, concurrency: {concurrency}",
        rows.len()
    );
    if !kept.is_empty() {
        log.log(&format!(
            "resuming from {}: {} completed lines kept",
            args.resume_from.as_deref().unwrap_or(""),
            kept.len()
        ));
        eprintln!(
            "resuming: {} of {} lines already completed",
            kept.len(),
            rows.len()
        );
    }

    // The invoker exists before the run log (a flex flow needs its worker for the signature):
    // its retries reach the log once there is one.
    let _ = retry_slot.set((log.clone(), retries.clone()));
    let executor = Arc::new(Executor::new(
        flow.clone(),
        invoker.clone(),
        log.clone(),
        ExecutorOptions {
            line_timeout: Some(Duration::from_secs_f64(line_timeout)),
        },
    ));

    let mut writer = OrderedWriter {
        outputs: std::io::BufWriter::new(std::fs::File::create(
            output_dir.join("flow_outputs").join("output.jsonl"),
        )?),
        records: std::io::BufWriter::new(std::fs::File::create(
            output_dir.join("line_runs.jsonl"),
        )?),
        pending: BTreeMap::new(),
        next: 0,
        total: rows.len(),
        completed: 0,
        failed: Vec::new(),
        aggregation: Vec::new(),
        stream: args.stream,
    };

    let columns: Arc<std::collections::HashSet<String>> =
        Arc::new(rows.iter().flat_map(|r| r.keys().cloned()).collect());
    let rows = Arc::new(rows);
    let base_outputs = Arc::new(base_outputs);
    let base_rows = Arc::new(base_rows);
    let mapping = Arc::new(mapping);
    let warn_interval = Duration::from_secs_f64(args.long_running_interval.max(0.01));
    // Tracing, only when a collector is configured: spans leave in batches from one task.
    let tracer = crate::otel::Exporter::from_env("flowrt");
    let batch_run_id = Arc::new(name.clone());
    let outcome: Result<RunStatus> = runtime.block_on(async {
        let (span_tx, flusher) = match tracer.clone() {
            Some(exporter) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Value>>();
                let task = tokio::spawn(async move {
                    let mut batch: Vec<Value> = Vec::new();
                    loop {
                        let tick = tokio::time::sleep(Duration::from_millis(200));
                        tokio::select! {
                            got = rx.recv() => match got {
                                Some(spans) => {
                                    batch.extend(spans);
                                    if batch.len() >= 2000 {
                                        exporter.export(std::mem::take(&mut batch)).await;
                                    }
                                }
                                None => break,
                            },
                            _ = tick => exporter.export(std::mem::take(&mut batch)).await,
                        }
                    }
                    exporter.export(batch).await;
                });
                (Some(tx), Some(task))
            }
            None => (None, None),
        };
        for rec in kept.values() {
            writer.push(rec.clone())?;
        }
        let mut todo = (0..rows.len()).filter(|n| !kept.contains_key(n));
        let mut set: JoinSet<Value> = JoinSet::new();
        let mut progress = Progress::new(bar, rows.len(), kept.len(), retries.clone());
        let mut ticker = tokio::time::interval(Duration::from_millis(200).min(warn_interval));
        let deadline = batch_timeout.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s));
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let status = loop {
            while set.len() < concurrency {
                let Some(n) = todo.next() else { break };
                let (executor, rows, columns, base_outputs, base_rows, mapping) = (
                    executor.clone(),
                    rows.clone(),
                    columns.clone(),
                    base_outputs.clone(),
                    base_rows.clone(),
                    mapping.clone(),
                );
                let (span_tx, batch_run_id) = (span_tx.clone(), batch_run_id.clone());
                set.spawn(async move {
                    let sources = LineSources {
                        data: &rows[n],
                        columns: Some(columns.as_ref()),
                        run_outputs: base_outputs.get(&n),
                        run_inputs: base_rows.get(n),
                    };
                    let raw = match mapping.line_inputs(executor.flow(), &sources) {
                        Ok(r) => r,
                        Err(message) => return failed_record(n, &IndexMap::new(), "MappingError", message),
                    };
                    match prepare_inputs(executor.flow(), &raw) {
                        Ok(inputs) => {
                            let line = executor.run_line(n, inputs).await;
                            if let Some(tx) = &span_tx {
                                let _ = tx.send(crate::otel::line_spans(executor.flow(), &line, Some(&batch_run_id)));
                            }
                            line_record(&line)
                        }
                        Err(e) => failed_record(n, &raw, "InputError", e.to_string()),
                    }
                });
            }
            if set.is_empty() {
                break RunStatus::Completed;
            }
            tokio::select! {
                joined = set.join_next() => {
                    if let Some(joined) = joined {
                        let rec = joined.map_err(|e| anyhow!("a line task failed: {e}"))?;
                        progress.record(rec["status"] == "Completed");
                        if rec["status"] != "Completed" {
                            log.log(&format!("line {} failed: {}", rec["line_number"], rec["error"]["message"].as_str().unwrap_or("")));
                        }
                        writer.push(rec)?;
                    }
                }
                _ = ticker.tick() => {
                    log.warn_long_running(warn_interval);
                    // Finished lines reach the disk within a tick (cheap: one write per tick, not
                    // per line), so a killed run loses little and can be resumed.
                    writer.flush()?;
                    if let Some(line) = progress.tick() {
                        log.log(&line);
                    }
                }
                _ = tokio::signal::ctrl_c() => {
                    log.log("interrupted: canceling the run");
                    set.abort_all();
                    break RunStatus::Canceled;
                }
                _ = sigterm.recv() => {
                    log.log("terminated: canceling the run");
                    set.abort_all();
                    break RunStatus::Canceled;
                }
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    log.log(&format!("the run exceeded --batch-timeout ({} s): canceling the remaining lines", batch_timeout.unwrap_or(0.0)));
                    set.abort_all();
                    break RunStatus::Canceled;
                }
            }
        };
        progress.finish();
        writer.drain()?;
        writer.flush()?;

        if status == RunStatus::Completed && executor.has_aggregation() {
            let lines: Vec<LineResult> = writer.aggregation.iter().enumerate().map(|(i, a)| LineResult {
                line_number: i,
                inputs: IndexMap::new(),
                outputs: IndexMap::new(),
                error: None,
                node_runs: Vec::new(),
                aggregation_inputs: serde_json::from_value(a.clone()).unwrap_or_default(),
                duration: Duration::ZERO,
            }).collect();
            let refs: Vec<&LineResult> = lines.iter().collect();
            let agg = executor.run_aggregation(&refs).await;
            fs_err::write(output_dir.join("metrics.json"), serde_json::to_string_pretty(&agg.metrics)?)?;
            fs_err::write(output_dir.join("aggregation.json"), serde_json::to_string_pretty(&agg.node_runs)?)?;
            if let Some(e) = agg.error {
                log.log(&format!("aggregation failed: {e}"));
                eprintln!("error: aggregation failed: {e}");
            }
        } else if !output_dir.join("metrics.json").exists() {
            fs_err::write(output_dir.join("metrics.json"), "{}")?;
        }
        invoker.shutdown().await;
        drop(span_tx);
        if let Some(task) = flusher {
            let _ = task.await;
        }
        Ok(status)
    });
    let mut status = outcome?;
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
    runs::save(home, &meta)?;
    let _ = writer.total;
    log.log(&format!(
        "run {name} {:?}: {} completed, {} failed, {} not run, {:.2} s",
        status,
        meta.completed_lines,
        meta.failed_lines,
        meta.total_lines - meta.completed_lines - meta.failed_lines,
        meta.duration_s
    ));
    eprintln!(
        "run {name} {:?}: {} of {} lines completed, {} failed ({}); outputs in {}",
        status,
        meta.completed_lines,
        meta.total_lines,
        meta.failed_lines,
        crate::fmt::seconds(meta.duration_s),
        output_dir
            .join("flow_outputs")
            .join("output.jsonl")
            .display()
    );
    if let Some(e) = &meta.error {
        eprintln!("error: {e}");
    }
    if meta.failed_lines > 0 {
        eprintln!("hint: `flowrt run show-details {name}` lists the failed lines; `--resume-from {name}` re-runs them");
    }
    println!("{}", serde_json::to_string_pretty(&meta)?);
    Ok(exit_code(status, meta.failed_lines, args.strict))
}

/// Retries the LLM client made during a run, for the progress line.
#[derive(Default)]
struct RetryCounts {
    retries: std::sync::atomic::AtomicU64,
    rate_limited: std::sync::atomic::AtomicU64,
}

impl RetryCounts {
    fn record(&self, e: &flowrt_tools::RetryEvent) {
        use std::sync::atomic::Ordering::Relaxed;
        self.retries.fetch_add(1, Relaxed);
        if e.cause == flowrt_tools::RetryCause::RateLimited {
            self.rate_limited.fetch_add(1, Relaxed);
        }
    }
}

/// The documented rule (README, `run create --help`): 0 when the run completed, even if some of its
/// lines failed (promptflow's `pf run create` does the same, and the counts are on the status line);
/// 1 when it failed (every line failed, or it could not finish), or with `--strict` when any line
/// failed; 130 when it was canceled. Bad input never gets this far: it exits 2.
fn exit_code(status: RunStatus, failed_lines: usize, strict: bool) -> u8 {
    match status {
        RunStatus::Completed if strict && failed_lines > 0 => 1,
        RunStatus::Completed => 0,
        RunStatus::Canceled => 130,
        RunStatus::Failed | RunStatus::Running => 1,
    }
}

/// Progress: an indicatif bar on a terminal, a plain line every few seconds otherwise (CI logs).
struct Progress {
    bar: indicatif::ProgressBar,
    total: usize,
    done: usize,
    failed: usize,
    start_done: usize,
    started: Instant,
    last_line: Instant,
    retries: Arc<RetryCounts>,
}

impl Progress {
    /// A bar drawn on stderr when it is a terminal, else hidden.
    fn bar(total: usize) -> indicatif::ProgressBar {
        if !std::io::stderr().is_terminal() {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(total as u64);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("[{bar:30}] {pos}/{len} lines, {msg}")
        {
            bar.set_style(style.progress_chars("#>."));
        }
        bar
    }

    fn new(
        bar: indicatif::ProgressBar,
        total: usize,
        already: usize,
        retries: Arc<RetryCounts>,
    ) -> Self {
        bar.set_position(already as u64);
        Progress {
            bar,
            total,
            done: already,
            failed: 0,
            start_done: already,
            started: Instant::now(),
            last_line: Instant::now(),
            retries,
        }
    }

    fn record(&mut self, ok: bool) {
        self.done += 1;
        if !ok {
            self.failed += 1;
        }
        self.bar.set_position(self.done as u64);
    }

    /// Everything but the line counts: failures, speed, time left, retries.
    fn details(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let secs = self.started.elapsed().as_secs_f64().max(1e-6);
        let rate = (self.done - self.start_done) as f64 / secs;
        let eta = if rate > 0.0 {
            format!("{:.0}s", (self.total - self.done) as f64 / rate)
        } else {
            "unknown".to_string()
        };
        let mut text = format!("{} failed, {rate:.1} lines/s, ETA {eta}", self.failed);
        let retries = self.retries.retries.load(Relaxed);
        if retries > 0 {
            let limited = self.retries.rate_limited.load(Relaxed);
            text.push_str(&format!(
                ", {retries} LLM {} ({limited} rate-limited)",
                if retries == 1 { "retry" } else { "retries" }
            ));
        }
        text
    }

    fn text(&self) -> String {
        format!("{}/{} lines, {}", self.done, self.total, self.details())
    }

    /// Redraw the bar, or return a periodic plain line for the log.
    fn tick(&mut self) -> Option<String> {
        if !self.bar.is_hidden() {
            self.bar.set_message(self.details());
            None
        } else if self.last_line.elapsed() >= Duration::from_secs(5) {
            self.last_line = Instant::now();
            let t = self.text();
            eprintln!("progress: {t}");
            Some(format!("progress: {t}"))
        } else {
            None
        }
    }

    fn finish(&mut self) {
        if !self.bar.is_hidden() {
            self.bar.finish_and_clear();
        }
    }
}

fn write_jsonl(path: &Path, rows: &[Map<String, Value>]) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in rows {
        writeln!(f, "{}", serde_json::to_string(r)?)?;
    }
    f.flush()?;
    Ok(())
}

/// Copy the flow folder (without bulky or generated folders, and without `skip`, the run's own
/// output folder) so the run records what it ran.
fn copy_snapshot(src: &Path, dst: &Path, skip: Option<&Path>) -> Result<()> {
    fs_err::create_dir_all(dst)?;
    for entry in fs_err::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        let n = name.to_string_lossy();
        if n.starts_with('.') || n == "__pycache__" || n == "node_modules" {
            continue;
        }
        let ty = entry.file_type()?;
        if ty.is_dir() {
            if skip.is_some() && entry.path().canonicalize().ok().as_deref() == skip {
                continue;
            }
            copy_snapshot(&entry.path(), &dst.join(&name), skip)?;
        } else if ty.is_file() {
            fs_err::copy(entry.path(), dst.join(&name))?;
        }
    }
    Ok(())
}
