//! `flowrt run list|show|show-details|show-metrics|cancel`: the same commands for a run made here
//! (its folder under FLOWRT_HOME) and for a run in a compute session (read through the server's
//! `/api/v1/runs`). A name not found here is looked up on the server when one is configured
//! (`--server` or `FLOWRT_SERVER`).

use crate::remote::Remote;
use crate::runs::{self, RunStatus};
use anyhow::{anyhow, bail, Result};
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

fn block<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Where a run's records are.
enum Found {
    Local(Box<runs::RunMeta>),
    Remote { remote: Remote, record: Value },
}

impl Found {
    fn record(&self) -> Value {
        match self {
            Found::Local(meta) => serde_json::to_value(meta).unwrap_or(Value::Null),
            Found::Remote { record, .. } => record.clone(),
        }
    }
}

fn find(name: &str, server: Option<&str>, home: &Path) -> Result<Found> {
    match runs::load(home, name) {
        Ok(meta) => Ok(Found::Local(Box::new(meta))),
        Err(local) => {
            let Some(remote) = configured_server(server, home) else {
                return Err(local);
            };
            let record =
                block(remote.call("GET", &format!("/api/v1/runs/{name}"), None)).map_err(|e| {
                    anyhow!("run '{name}' is not a run made here, and the server says: {e}")
                })?;
            Ok(Found::Remote { remote, record })
        }
    }
}

/// `run list`: runs made here, then (with a server configured) the workspace's runs.
pub fn list(json: bool, archived: bool, server: Option<&str>, home: &Path) -> Result<u8> {
    let mut all: Vec<Value> = runs::list(home)?
        .iter()
        .map(|m| serde_json::to_value(m).unwrap_or(Value::Null))
        .collect();
    if let Some(remote) = configured_server(server, home) {
        let path = if archived {
            "/api/v1/runs?archived=true"
        } else {
            "/api/v1/runs"
        };
        match block(remote.call("GET", path, None)) {
            Ok(Value::Array(remote_runs)) => all.extend(remote_runs),
            Ok(_) => {}
            Err(e) => eprintln!("warning: cannot list the server's runs: {e}"),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(0);
    }
    if all.is_empty() {
        eprintln!("no runs yet; start one with `flowrt run create --flow DIR --data FILE`");
        return Ok(0);
    }
    let with_sessions = all.iter().any(|r| r["session"].is_string());
    let mut header = vec![
        "NAME", "STATUS", "LINES", "DONE", "FAILED", "DURATION", "CREATED",
    ];
    if with_sessions {
        header.push("FLOW");
        header.push("SESSION");
    }
    let mut t = crate::fmt::table(&header, &["LINES", "DONE", "FAILED", "DURATION"]);
    for r in &all {
        let status = r["status"].as_str().unwrap_or("");
        let mut row = vec![
            r["name"].as_str().unwrap_or("").to_string(),
            status.to_string(),
            r["total_lines"].to_string(),
            r["completed_lines"].to_string(),
            r["failed_lines"].to_string(),
            if status == "Running" {
                "-".into()
            } else {
                crate::fmt::seconds(r["duration_s"].as_f64().unwrap_or(0.0))
            },
            crate::fmt::timestamp(r["created"].as_str().unwrap_or("")),
        ];
        if with_sessions {
            // A workspace run names its flow version; a run made here, its folder.
            let flow = match (r["session"].is_string(), r["flow"].as_str()) {
                (true, Some(f)) => f.to_string(),
                _ => "-".to_string(),
            };
            row.push(flow);
            row.push(r["session"].as_str().unwrap_or("-").to_string());
        }
        t.add_row(row);
    }
    crate::fmt::print_table(&t);
    Ok(0)
}

/// `run show`.
pub fn show(name: &str, json: bool, server: Option<&str>, home: &Path) -> Result<u8> {
    let r = find(name, server, home)?.record();
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(0);
    }
    let text = |k: &str| r[k].as_str().map(str::to_string);
    println!("name:        {}", text("name").unwrap_or_default());
    println!("status:      {}", text("status").unwrap_or_default());
    if let Some(s) = text("session") {
        println!("session:     {s}");
    }
    if let Some(f) = text("flow") {
        println!("flow:        {f}");
    }
    if let Some(d) = text("data") {
        println!("data:        {d}");
    }
    if let Some(b) = text("base_run") {
        println!("base run:    {b}");
    }
    println!(
        "lines:       {} total, {} completed, {} failed",
        r["total_lines"], r["completed_lines"], r["failed_lines"]
    );
    println!(
        "created:     {}",
        crate::fmt::timestamp(&text("created").unwrap_or_default())
    );
    if let Some(f) = text("finished") {
        println!("finished:    {}", crate::fmt::timestamp(&f));
    }
    println!(
        "duration:    {}",
        crate::fmt::seconds(r["duration_s"].as_f64().unwrap_or(0.0))
    );
    println!("concurrency: {}", r["concurrency"]);
    if let Some(o) = text("output_dir") {
        println!("output dir:  {o}");
    }
    if let Some(e) = text("error") {
        println!("error:       {e}");
    }
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
            let v = block(remote.call(
                "GET",
                &format!("/api/v1/runs/{name}/lines?limit={max_lines}"),
                None,
            ))?;
            let total = v["total"].as_u64().unwrap_or(0) as usize;
            (v["lines"].as_array().cloned().unwrap_or_default(), total)
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
    let mut t = crate::fmt::table(
        &["LINE", "STATUS", "DURATION", "INPUTS", "OUTPUTS / ERROR"],
        &["LINE", "DURATION"],
    );
    for r in &records {
        let detail = match r.get("error").filter(|e| !e.is_null()) {
            Some(e) => format!(
                "{}: {}",
                e["error_type"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            ),
            None => r
                .get("outputs")
                .map(flowrt_flow::nonfinite::to_json_line)
                .unwrap_or_default(),
        };
        t.add_row(vec![
            r["line_number"].to_string(),
            r["status"].as_str().unwrap_or("").to_string(),
            match r["duration"].as_f64() {
                // Lines that failed before running (mapping, inputs) took no time.
                Some(d) if d > 0.0 => crate::fmt::seconds(d),
                _ => "-".into(),
            },
            crate::fmt::clip(&r["inputs"].to_string(), 40),
            crate::fmt::clip(&detail, 100),
        ]);
    }
    crate::fmt::print_table(&t);
    if total > records.len() {
        println!("... {} more lines (--max-lines N)", total - records.len());
    }
    Ok(0)
}

/// `run show-metrics`.
pub fn show_metrics(name: &str, server: Option<&str>, home: &Path) -> Result<u8> {
    let v: Value = match find(name, server, home)? {
        Found::Local(meta) => {
            let text = fs_err::read_to_string(meta.output_dir.join("metrics.json"))
                .unwrap_or_else(|_| "{}".into());
            serde_json::from_str(&text)?
        }
        Found::Remote { remote, .. } => {
            block(remote.call("GET", &format!("/api/v1/runs/{name}/metrics"), None))?
        }
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
            let session = record["session"].as_str().unwrap_or("").to_string();
            let v = block(remote.call("POST", &format!("/api/v1/runs/{name}/cancel"), None))?;
            eprintln!(
                "cancel requested for run '{name}' in session {session}; {}",
                v["hint"].as_str().unwrap_or("finished lines are kept")
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
            block(remote.call("DELETE", &format!("/api/v1/runs/{name}"), None))?;
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
    block(remote.call("POST", &format!("/api/v1/runs/{name}/{action}"), None))?;
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
