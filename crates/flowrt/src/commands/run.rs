//! `flowrt run ...`: batch and evaluation runs. The arguments and what the terminal shows (the
//! progress line, warnings, the closing status line and exit code); the engine (concurrency,
//! timeouts, cancel, resume, the ordered writer, the run folder) is `flowrt_runtime::batch`.

use crate::invoker;
use crate::runs::RunStatus;
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use flowrt_runtime::batch;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// List runs: those made here and, with a server configured, the workspace's runs you may see.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Also list archived workspace runs.
        #[arg(long)]
        archived: bool,
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
    /// Delete a finished run: its record and everything it wrote (a workspace run: on the server,
    /// audited; a running one is refused, cancel it first).
    Delete {
        /// The run's name.
        name: String,
        /// The server to ask when the run was not made here (default: FLOWRT_SERVER).
        #[arg(long)]
        server: Option<String>,
    },
    /// Archive a workspace run: `run list` leaves it out unless --archived; `run restore` undoes it.
    Archive {
        /// The run's name.
        name: String,
        /// The server the run is on (default: FLOWRT_SERVER).
        #[arg(long)]
        server: Option<String>,
    },
    /// Restore an archived workspace run to `run list`.
    Restore {
        /// The run's name.
        name: String,
        /// The server the run is on (default: FLOWRT_SERVER).
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
    /// Run the batch inside this compute session (on the server at --server / FLOWRT_SERVER).
    #[arg(long, value_name = "SESSION_ID")]
    pub session: Option<String>,
    /// With --session: spread the lines over these sessions too (of the same flow; on any
    /// server sharing the database). The lines are cut into chunks that each session's server
    /// claims; the run's record is in --session's, as if it ran there alone.
    #[arg(
        long,
        value_name = "SESSION_ID",
        value_delimiter = ',',
        requires = "session"
    )]
    pub also_on: Vec<String>,
    /// With --session: spread the lines over N sessions, starting N-1 more like it (on a Ray
    /// backend each lands where Ray finds room; they stop after 5 idle minutes).
    #[arg(long, value_name = "N", requires = "session")]
    pub nodes: Option<u32>,
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
            super::in_session::batch(*args)
        }
        RunCommand::Create(args) => create(*args, &home),
        RunCommand::List {
            json,
            archived,
            server,
        } => super::run_view::list(json, archived, server.as_deref(), &home),
        RunCommand::Show { name, json, server } => {
            super::run_view::show(&name, json, server.as_deref(), &home)
        }
        RunCommand::ShowDetails {
            name,
            max_lines,
            json,
            server,
        } => super::run_view::show_details(&name, max_lines, json, server.as_deref(), &home),
        RunCommand::ShowMetrics { name, server } => {
            super::run_view::show_metrics(&name, server.as_deref(), &home)
        }
        RunCommand::Cancel { name, server } => {
            super::run_view::cancel(&name, server.as_deref(), &home)
        }
        RunCommand::Delete { name, server } => {
            super::run_view::delete(&name, server.as_deref(), &home)
        }
        RunCommand::Archive { name, server } => {
            super::run_view::archive(&name, true, server.as_deref(), &home)
        }
        RunCommand::Restore { name, server } => {
            super::run_view::archive(&name, false, server.as_deref(), &home)
        }
    }
}

/// `run create` embedded: the batch engine runs here, its progress on the terminal.
fn create(args: CreateArgs, home: &Path) -> Result<u8> {
    // Said here, naming the option: the engine's own error is a bare "failed to open file".
    if let Some(data) = args.data.as_deref().filter(|d| !d.exists()) {
        bail!(
            "--data {}: no such file\nhint: --data takes a .jsonl, .csv or .tsv file of rows, one line of the flow each",
            data.display()
        );
    }
    let init = crate::flex::read_init(args.init.as_deref())?;
    // Python tools run in the flow's own environment, one worker per core.
    let compute = batch::Compute {
        python: None,
        connections: invoker::load_connections(home)?,
        workers: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
    };
    let request = batch::BatchRequest {
        flow: args.flow.clone(),
        data: args.data.clone(),
        column_mapping: flowrt_executor::parse_mapping_pairs(&args.column_mapping)?,
        run: args.run.clone(),
        name: args.name.clone(),
        output_dir: args.output_dir.clone(),
        variant: args.variant.clone(),
        resume_from: args.resume_from.clone(),
        init,
        concurrency: args.concurrency,
        line_timeout: args.line_timeout,
        batch_timeout: args.batch_timeout,
        long_running_interval: args.long_running_interval,
        stream: args.stream,
        lines: None,
        prior_records: None,
        trace: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let reporter = Arc::new(super::run_progress::Terminal::default());
    let cancel = batch::Cancel::new();
    let outcome = runtime.block_on(async {
        // Ctrl-C and SIGTERM cancel the run: finished lines are kept for --resume-from.
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let on_signal = cancel.clone();
        let signals = tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => on_signal.cancel("interrupted"),
                _ = sigterm.recv() => on_signal.cancel("terminated"),
            }
        });
        let outcome = batch::create(request, compute, home, reporter.clone(), cancel).await;
        signals.abort();
        outcome
    })?;
    let meta = outcome.meta;
    let name = &meta.name;
    eprintln!(
        "run {name} {:?}: {} of {} lines completed, {} failed ({}); outputs in {}",
        meta.status,
        meta.completed_lines,
        meta.total_lines,
        meta.failed_lines,
        crate::fmt::seconds(meta.duration_s),
        meta.output_dir
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
    Ok(exit_code(meta.status, meta.failed_lines, args.strict))
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
