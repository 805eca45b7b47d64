//! Sessions as `flowrt session` shows them: a table, one session's fields, its status with the
//! phase it prepares in, and the wait for Running that prints each phase as it begins.

use super::session::session_path;
use crate::client::Remote;
use anyhow::{bail, Result};
use flowrt_api::responses::SessionView;
use flowrt_api::SessionStatus;
use std::time::{Duration, Instant};

/// `session list`: a table, or JSON for scripts.
pub async fn list(remote: &Remote, json: bool) -> Result<()> {
    let sessions: Vec<SessionView> = remote.get("/api/v1/sessions").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&sessions)?);
        return Ok(());
    }
    if sessions.is_empty() {
        eprintln!("no sessions; start one with `flowrt session start --flow DIR`");
        return Ok(());
    }
    let header = [
        "ID",
        "STATUS",
        "SIZE",
        "ENVIRONMENT",
        "IDLE TIMEOUT",
        "FLOW",
    ];
    let mut t = crate::fmt::table(&header, &[]);
    for s in sessions {
        t.add_row(vec![
            s.id.clone(),
            status_text(&s),
            s.size.as_str().to_string(),
            s.env_ref.clone(),
            idle_text(s.idle_timeout_s),
            s.flow_ref.clone().unwrap_or_default(),
        ]);
    }
    crate::fmt::print_table(&t);
    Ok(())
}

/// Poll until the session leaves Preparing, printing each phase as it begins.
pub async fn wait_running(remote: &Remote, id: &str) -> Result<SessionView> {
    let started = Instant::now();
    let mut last = String::new();
    let mut stopped_since = None;
    loop {
        let s: SessionView = remote.get(&session_path(id)).await?;
        let now = status_text(&s);
        if now != last {
            eprintln!("{:>6.2}s  {now}", started.elapsed().as_secs_f64());
            last = now;
        }
        match s.status {
            SessionStatus::Running => return Ok(s),
            SessionStatus::Failed => {
                let tail = s.log_tail.as_deref().unwrap_or("").trim();
                bail!(
                    "session {id} failed: {}{}",
                    s.reason.as_deref().unwrap_or("unknown reason"),
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!("\nlast log lines:\n{tail}")
                    }
                );
            }
            SessionStatus::Stopped => {
                let since = *stopped_since.get_or_insert_with(Instant::now);
                if since.elapsed() > STOPPED_FOR_GOOD {
                    bail!(
                        "session {id} stopped: {}",
                        s.reason.as_deref().unwrap_or("")
                    );
                }
            }
            _ => stopped_since = None,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a session stays Stopped before a wait for Running gives up. Stopped is also a
/// moment on the way: before the start a request asked for begins, and while another server
/// takes over a preparation whose server's lease ended ("preparing it again"), which can come
/// long after the wait began.
const STOPPED_FOR_GOOD: Duration = Duration::from_secs(2);

/// `Running`, or `Preparing (installing)` while it prepares.
fn status_text(s: &SessionView) -> String {
    match s.phase {
        Some(p) => format!("{} ({})", s.status, phase_text(p)),
        None => s.status.to_string(),
    }
}

/// A preparing phase as the API writes it.
fn phase_text(p: flowrt_api::PreparingPhase) -> &'static str {
    match p {
        flowrt_api::PreparingPhase::Resolving => "resolving",
        flowrt_api::PreparingPhase::Installing => "installing",
        flowrt_api::PreparingPhase::Starting => "starting",
    }
}

/// An idle timeout for people: `never`, `30m 00s`, `2h 00m`.
fn idle_text(seconds: u64) -> String {
    if seconds == 0 {
        "never".to_string()
    } else {
        crate::fmt::seconds(seconds as f64)
    }
}

pub fn print_session(s: &SessionView) {
    println!("id:            {}", s.id);
    println!("status:        {}", status_text(s));
    if let Some(r) = &s.reason {
        println!("reason:        {r}");
    }
    println!("flow:          {}", s.flow_ref.as_deref().unwrap_or(""));
    println!("environment:   {} (base {})", s.env_ref, s.base_version);
    if let Some(u) = &s.update_available {
        println!("update available: {u}");
    }
    println!("size:          {}", s.size.as_str());
    println!("idle timeout:  {}", idle_text(s.idle_timeout_s));
    if let Some(c) = &s.compute {
        println!("compute:       {c}");
    }
    if let Some(i) = &s.identity {
        println!("identity:      {i}");
    }
}
