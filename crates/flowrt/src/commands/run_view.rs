//! `flowrt run list|show|show-details|show-metrics|cancel`: the same commands for a run made here
//! (its folder under FLOWRT_HOME) and for a run in a compute session (read through the server's
//! `/api/v1/runs`). A name not found here is looked up on the server when one is configured
//! (`--server` or `FLOWRT_SERVER`).

use super::run_summary::{print_list, print_summary, Summary};
use crate::client::{block, Remote};
use crate::runs::{self, RunStatus};
use anyhow::{anyhow, bail, Result};
use flowrt_api::responses::{CancelingRun, LinePage, LineRecord, RunView};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// The server to ask, when one is configured.
fn configured_server(server: Option<&str>, home: &Path) -> Option<Remote> {
    let named =
        server.is_some() || std::env::var("FLOWRT_SERVER").is_ok_and(|s| !s.trim().is_empty());
    if !named {
        return None;
    }
    Remote::from_env(server, home).ok()
}

/// Where a run's records are.
enum Found {
    Local(Box<runs::RunMeta>),
    Remote {
        remote: Remote,
        record: Box<RunView>,
    },
}

fn find(name: &str, server: Option<&str>, home: &Path) -> Result<Found> {
    match runs::load(home, name) {
        Ok(meta) => Ok(Found::Local(Box::new(meta))),
        Err(local) => {
            let Some(remote) = configured_server(server, home) else {
                return Err(local);
            };
            let record: RunView =
                block(remote.get(&format!("/api/v1/runs/{name}"))).map_err(|e| {
                    anyhow!("run '{name}' is not a run made here, and the server says: {e}")
                })?;
            Ok(Found::Remote {
                remote,
                record: Box::new(record),
            })
        }
    }
}

/// `run list`: runs made here, then (with a server configured) the workspace's runs.
pub fn list(json: bool, archived: bool, server: Option<&str>, home: &Path) -> Result<u8> {
    let here = runs::list(home)?;
    let mut workspace: Vec<RunView> = Vec::new();
    if let Some(remote) = configured_server(server, home) {
        let path = if archived {
            "/api/v1/runs?archived=true"
        } else {
            "/api/v1/runs"
        };
        match block(remote.get::<Vec<RunView>>(path)) {
            Ok(runs) => workspace = runs,
            Err(e) => eprintln!("warning: cannot list the server's runs: {e}"),
        }
    }
    if json {
        let mut all: Vec<Value> = Vec::new();
        for m in &here {
            all.push(serde_json::to_value(m)?);
        }
        for r in &workspace {
            all.push(serde_json::to_value(r)?);
        }
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(0);
    }
    let summaries: Vec<Summary> = here
        .iter()
        .map(Summary::from)
        .chain(workspace.iter().map(Summary::from))
        .collect();
    if summaries.is_empty() {
        eprintln!("no runs yet; start one with `flowrt run create --flow DIR --data FILE`");
        return Ok(0);
    }
    print_list(&summaries);
    Ok(0)
}

/// `run show`.
pub fn show(name: &str, json: bool, server: Option<&str>, home: &Path) -> Result<u8> {
    let found = find(name, server, home)?;
    let r = match &found {
        Found::Local(meta) => {
            if json {
                println!("{}", serde_json::to_string_pretty(meta)?);
                return Ok(0);
            }
            Summary::from(meta.as_ref())
        }
        Found::Remote { record, .. } => {
            if json {
                println!("{}", serde_json::to_string_pretty(record)?);
                return Ok(0);
            }
            Summary::from(record.as_ref())
        }
    };
    print_summary(&r);
    Ok(0)
}

/// `run show-details`.
pub fn show_details(
    name: &str,
    max_lines: usize,
    json: bool,
    server: Option<&str>,
    home: &Path,
) -> Result<u8> {
    let (records, total): (Vec<Value>, usize) = match find(name, server, home)? {
        Found::Local(meta) => {
            let all = runs::line_records(&meta.output_dir)?;
            let total = all.len();
            let page = all
                .into_values()
                .take(max_lines)
                .map(|mut r| {
                    if let Some(o) = r.as_object_mut() {
                        o.remove("aggregation_inputs");
                    }
                    r
                })
                .collect();
            (page, total)
        }
        Found::Remote { remote, .. } => {
            let page: LinePage =
                block(remote.get(&format!("/api/v1/runs/{name}/lines?limit={max_lines}")))?;
            let lines = page
                .lines
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?;
            (lines, page.total)
        }
    };
    // NaN and the infinities are printed as promptflow prints them (`NaN`, `Infinity`).
    if json {
        println!(
            "{}",
            flowrt_flow::nonfinite::to_json_pretty(&Value::Array(records))
        );
        return Ok(0);
    }
    print_lines(&records)?;
    if total > records.len() {
        println!("... {} more lines (--max-lines N)", total - records.len());
    }
    Ok(0)
}

/// Line records as a table: status, duration, inputs, and outputs or the error.
fn print_lines(records: &[Value]) -> Result<()> {
    let mut t = crate::fmt::table(
        &["LINE", "STATUS", "DURATION", "INPUTS", "OUTPUTS / ERROR"],
        &["LINE", "DURATION"],
    );
    for record in records {
        let r = LineRecord::deserialize(record)?;
        let detail = match &r.error {
            Some(_) => format!("{}: {}", error_type(&r), r.error_message()),
            None => r
                .outputs
                .as_ref()
                .map(flowrt_flow::nonfinite::to_json_line)
                .unwrap_or_default(),
        };
        t.add_row(vec![
            r.line_number.to_string(),
            r.status.clone(),
            // Lines that failed before running (mapping, inputs) took no time.
            if r.duration > 0.0 {
                crate::fmt::seconds(r.duration)
            } else {
                "-".into()
            },
            crate::fmt::clip(&r.inputs.to_string(), 40),
            crate::fmt::clip(&detail, 100),
        ]);
    }
    crate::fmt::print_table(&t);
    Ok(())
}

/// A failed line's error type (`ValueError`, ...).
fn error_type(r: &LineRecord) -> &str {
    r.error
        .as_ref()
        .and_then(|e| e.get("error_type"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `run show-metrics`.
pub fn show_metrics(name: &str, server: Option<&str>, home: &Path) -> Result<u8> {
    let v: Value = match find(name, server, home)? {
        Found::Local(meta) => {
            let text = fs_err::read_to_string(meta.output_dir.join("metrics.json"))
                .unwrap_or_else(|_| "{}".into());
            serde_json::from_str(&text)?
        }
        Found::Remote { remote, .. } => block(remote.get(&format!("/api/v1/runs/{name}/metrics")))?,
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(0)
}

/// `run cancel`.
pub fn cancel(name: &str, server: Option<&str>, home: &Path) -> Result<u8> {
    match find(name, server, home)? {
        Found::Local(meta) => {
            if meta.status != RunStatus::Running {
                bail!("run '{name}' is {:?}, not running", meta.status);
            }
            let pid = i32::try_from(meta.pid)
                .map(nix::unistd::Pid::from_raw)
                .map_err(|_| {
                    anyhow!("run '{name}' records an impossible process id {}", meta.pid)
                })?;
            if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
                bail!("could not signal run '{name}' (process {}): {e}", meta.pid);
            }
            eprintln!("cancel requested for run '{name}'; finished lines are kept (resume with --resume-from {name})");
        }
        Found::Remote { remote, record } => {
            let canceling: CancelingRun =
                block(remote.post_empty(&format!("/api/v1/runs/{name}/cancel")))?;
            eprintln!(
                "cancel requested for run '{name}' in session {}; {}",
                record.session, canceling.hint
            );
        }
    }
    Ok(0)
}

/// `run delete`: a run made here loses its folder; a workspace run its record and blobs (on the
/// server, audited). A running run is refused: cancel it first.
pub fn delete(name: &str, server: Option<&str>, home: &Path) -> Result<u8> {
    match find(name, server, home)? {
        Found::Local(meta) => {
            if meta.status == RunStatus::Running {
                bail!("run '{name}' is running; cancel it first (`flowrt run cancel {name}`)");
            }
            runs::delete(home, &meta)?;
            eprintln!(
                "deleted run '{name}' and its folder {}",
                meta.output_dir.display()
            );
        }
        Found::Remote { remote, .. } => {
            block(remote.delete(&format!("/api/v1/runs/{name}")))?;
            eprintln!("deleted run '{name}' from the workspace");
        }
    }
    Ok(0)
}

/// `run archive` / `run restore`: a workspace run left out of `run list` (or back in it).
pub fn archive(name: &str, archived: bool, server: Option<&str>, home: &Path) -> Result<u8> {
    let remote = configured_server(server, home).ok_or_else(|| {
        anyhow!("archiving is for workspace runs: name the server with --server or FLOWRT_SERVER")
    })?;
    let action = if archived { "archive" } else { "restore" };
    let _: RunView = block(remote.post_empty(&format!("/api/v1/runs/{name}/{action}")))?;
    eprintln!(
        "run '{name}' {}",
        if archived {
            "archived; `flowrt run list --archived` still lists it"
        } else {
            "restored"
        }
    );
    Ok(0)
}
