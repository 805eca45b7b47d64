//! A flow's line or batch run in a server's compute session (`flow test --session`, `run create
//! --session`): the data goes up once by its hash, a folder is pushed first, and the command
//! waits and reports as a run on this machine would.

use super::data::push_data;
use super::session::{flow_reference, session_path};
use crate::client::{block, Remote};
use anyhow::{bail, Result};
use flowrt_api::requests::{CreateRun, TestLine};
use flowrt_api::responses::{
    FlowVersion, LineResult, RunProgress, RunStarted, RunView, SessionView,
};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// `flow test --session ID`: the line runs inside the session.
pub fn test_line(
    id: &str,
    inputs: Value,
    server: Option<&str>,
    flow: &Path,
    json: bool,
) -> Result<u8> {
    let remote = Remote::for_server(server)?;
    block(async move {
        warn_if_changed(&remote, id, flow).await;
        let r: LineResult = remote
            .post(&format!("{}/test", session_path(id)), &TestLine { inputs })
            .await?;
        if let Some(e) = &r.error {
            eprintln!("error: flow test failed: {}", e.display);
            return Ok(1);
        }
        print_node_logs(&r.node_runs);
        let text = super::flow_test::result_text(
            &r.outputs,
            r.bare_output,
            r.result_repr.as_deref(),
            json,
        );
        println!("{text}");
        Ok(0)
    })
}

/// What each node printed, on stderr, prefixed with the node's name.
fn print_node_logs(node_runs: &Value) {
    #[derive(serde::Deserialize)]
    struct NodeLogs {
        #[serde(default)]
        node: String,
        #[serde(default)]
        logs: Option<String>,
    }
    let runs: Vec<NodeLogs> = serde_json::from_value(node_runs.clone()).unwrap_or_default();
    for n in runs {
        for l in n.logs.as_deref().unwrap_or("").lines() {
            eprintln!("[{}] {l}", n.node);
        }
    }
}

/// When `flow` is a folder whose files are not what the session runs, say so: the session runs
/// the version it was started on, so the user knows which code answered.
async fn warn_if_changed(remote: &Remote, id: &str, flow: &Path) {
    if !flow.exists() {
        return;
    }
    let Ok(session) = remote.get::<SessionView>(&session_path(id)).await else {
        return;
    };
    let Some(running) = session.flow_ref else {
        return;
    };
    let Ok(described) = remote
        .get::<FlowVersion>(&format!("/api/v1/flows/{running}"))
        .await
    else {
        return;
    };
    let home = flowrt_store::flowrt_home();
    let Ok(merged) = crate::includes::Merged::new(flow, &home) else {
        return;
    };
    let limits = flowrt_store::snapshot::SnapshotLimits::default();
    let local = flowrt_store::snapshot::collect(&merged.dir, &limits)
        .and_then(|files| flowrt_store::snapshot::hash_files(&files));
    if let Ok(hash) = local {
        if described.hash != hash {
            eprintln!(
                "note: session {id} runs {running}, and {} has changed since; `flowrt session start --flow {}` starts a session on the new version",
                flow.display(),
                flow.display()
            );
        }
    }
}

/// `run create --session ID`: the batch runs inside the session (as its agent's child); this
/// command waits for it and reports like a local run.
pub fn batch(args: super::run::CreateArgs) -> Result<u8> {
    let id = args.session.clone().unwrap_or_default();
    let remote = Remote::for_server(args.server.as_deref())?;
    if args.output_dir.is_some() {
        bail!("--output-dir cannot be used with --session: a session's runs stay in the session\nhint: `flowrt run show NAME` reads it through the server");
    }
    let request = block(run_request(&remote, &args, &id))?;
    let name = request.name.clone();
    let spread = !args.also_on.is_empty() || args.nodes.is_some_and(|n| n > 1);
    block(async {
        let _: RunStarted = remote.post("/api/v1/runs", &request).await?;
        if let Some(n) = args.nodes.filter(|n| *n > 1) {
            eprintln!("batch run {name} started, spread over {n} sessions like {id}");
        } else if spread {
            eprintln!(
                "batch run {name} started, spread over sessions {id},{}",
                args.also_on.join(",")
            );
        } else {
            eprintln!("batch run {name} started in session {id}");
        }
        // A spread run's progress is in its chunks, not one session's log: its record is polled.
        if !spread {
            if let Err(e) = follow_progress(&remote, &name).await {
                eprintln!("warning: {e}; waiting for the run to end");
            }
        }
        let meta = wait_ended(&remote, &name, &id).await?;
        println!("{}", serde_json::to_string_pretty(&meta)?);
        eprintln!(
            "run {name} {}: {} of {} lines completed, {} failed",
            meta.status, meta.completed_lines, meta.total_lines, meta.failed_lines
        );
        Ok(match meta.status.as_str() {
            "Completed" if args.strict && meta.failed_lines > 0 => 1,
            "Completed" => 0,
            "Canceled" => 130,
            _ => 1,
        })
    })
}

/// The run to ask the server for: its name (default `<session>_<ms>`), its data uploaded (once,
/// by its hash: the session cannot read files on this machine) and its flow, a folder pushed
/// first (the server refuses the run, naming both, when the session runs another flow).
async fn run_request(
    remote: &Remote,
    args: &super::run::CreateArgs,
    id: &str,
) -> Result<CreateRun> {
    let name = args.name.clone().unwrap_or_else(|| {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        format!("{id}_{ms}")
    });
    let data_ref = match &args.data {
        Some(d) => Some(push_data(remote, d).await?.0),
        None => None,
    };
    let column_mapping = flowrt_executor::parse_mapping_pairs(&args.column_mapping)?;
    let flow = match &args.flow {
        Some(flow) => Some(flow_reference(remote, flow).await?),
        None => None,
    };
    Ok(CreateRun {
        session: id.to_string(),
        flow,
        name,
        data: None,
        data_format: None,
        data_ref,
        column_mapping,
        run: args.run.clone(),
        variant: args.variant.clone(),
        resume_from: args.resume_from.clone(),
        line_timeout: args.line_timeout,
        concurrency: args.concurrency,
        more_sessions: args.also_on.clone(),
        nodes: args.nodes,
    })
}

/// Progress as the session reports it, a plain line every few seconds, until the run ends.
async fn follow_progress(remote: &Remote, name: &str) -> Result<()> {
    let mut last = Instant::now();
    remote
        .events(&format!("/api/v1/runs/{name}/events"), |event, v| {
            if event == "progress" && last.elapsed() >= Duration::from_secs(5) {
                if let Ok(p) = serde_json::from_value::<RunProgress>(v.clone()) {
                    last = Instant::now();
                    let eta = p
                        .eta_seconds
                        .map(|s| format!("{s:.0}s"))
                        .unwrap_or_else(|| "unknown".into());
                    eprintln!(
                        "progress: {}/{} lines, {} failed, {:.1} lines/s, ETA {eta}",
                        p.done, p.total, p.failed, p.lines_per_second
                    );
                }
            }
            event != "end"
        })
        .await
}

/// The run's record once it is no longer running (read through the server: it lives in the
/// session's workspace record).
async fn wait_ended(remote: &Remote, name: &str, id: &str) -> Result<RunView> {
    let started = Instant::now();
    let mut first = true;
    loop {
        // Right away after the end event; a moment later when the stream could not tell.
        if !first {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        first = false;
        match remote.get::<RunView>(&format!("/api/v1/runs/{name}")).await {
            Ok(meta) if meta.status != "Running" => return Ok(meta),
            Ok(_) => {}
            Err(_) if started.elapsed() > Duration::from_secs(60) => {
                bail!("batch run {name} did not start in session {id}; see `flowrt session logs {id}`");
            }
            Err(_) => {}
        }
    }
}
