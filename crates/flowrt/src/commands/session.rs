//! `flowrt session ...`: compute sessions on a server: started (a folder pushed first), listed,
//! shown, edited, their packages listed and installed, reset, updated to the latest base
//! environment, their logs followed, stopped and deleted. Sessions exist only on a server.

use super::session_show::{list, print_session, wait_running};
use crate::client::{block, Ignored, Remote};
use anyhow::{anyhow, Result};
use clap::Subcommand;
use flowrt_api::requests::{EditSession, InstallRequirements, StartSession};
use flowrt_api::responses::{LogChunk, PackageView, SessionView};
use flowrt_api::SessionSize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum SessionCommand {
    /// Start a compute session for a flow; prints its id as the last line.
    ///
    /// Example: flowrt session start --flow ./my_flow --size medium --idle-timeout 30m
    Start {
        /// The flow: a folder (pushed to the workspace first, under its folder's name; nothing is
        /// sent when unchanged) or a workspace flow, NAME or NAME@vN. Its requirements.txt
        /// customizes the environment.
        #[arg(long)]
        flow: PathBuf,
        /// small, medium or large (resource limits: see README).
        #[arg(long, default_value = "small")]
        size: String,
        /// Stop after this long without runs: 30m, 2h, 90s, 0 = never (default 60m).
        #[arg(long)]
        idle_timeout: Option<String>,
        /// Act as this identity (its feed token unlocks {private} package indexes).
        #[arg(long)]
        identity: Option<String>,
        /// default, default@VERSION or NAME@vN (default: the flow's environment.image, else default).
        #[arg(long)]
        env: Option<String>,
        /// Run on this compute instance (yours, running) instead of serverless compute.
        #[arg(long)]
        compute: Option<String>,
        /// Share this (serverless) session with the workspace: every data scientist may see it
        /// and run flows on it, e.g. a pipeline's service principal; only you and admins change it.
        #[arg(long, conflicts_with = "compute")]
        shared: bool,
        /// Return at once instead of waiting for Running.
        #[arg(long)]
        no_wait: bool,
    },
    /// List your sessions.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show a session.
    Show {
        /// The session's id (`flowrt session list` shows them).
        id: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Change a session's size or idle timeout.
    Edit {
        /// The session's id.
        id: String,
        /// small, medium or large; takes effect at the next `session reset`.
        #[arg(long)]
        size: Option<String>,
        /// Stop after this long without runs: 30m, 2h, 90s, 0 = never.
        #[arg(long)]
        idle_timeout: Option<String>,
    },
    /// List the packages installed in a session's environment.
    Packages {
        /// The session's id.
        id: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Save requirements into the session's flow and install them (or --save-only).
    Install {
        /// The session's id.
        id: String,
        /// A requirements.txt (pip's format) to become the session flow's requirements.
        #[arg(long)]
        requirements: PathBuf,
        /// Save the requirements without installing; the next `session reset` installs them.
        #[arg(long)]
        save_only: bool,
    },
    /// Recreate a session's agent with the same environment; starts a stopped or failed session again.
    Reset {
        /// The session's id.
        id: String,
    },
    /// Move a session to the latest base environment.
    Update {
        /// The session's id.
        id: String,
    },
    /// Print a session's log.
    Logs {
        /// The session's id.
        id: String,
        /// Keep printing as the log grows (Ctrl-C to stop).
        #[arg(long, short)]
        follow: bool,
    },
    /// Stop a session (its environment stays cached; `session reset` starts it again).
    Stop {
        /// The session's id.
        id: String,
    },
    /// Stop a session and forget it. Its runs stay in the workspace (`run list`): a session is
    /// the compute, not the history.
    Delete {
        /// The session's id.
        id: String,
    },
}

/// Each `session` command.
pub fn run(cmd: SessionCommand, server: Option<&str>) -> Result<u8> {
    let remote = Remote::for_server(server)?;
    block(async move {
        match cmd {
            SessionCommand::Start {
                flow,
                size,
                idle_timeout,
                identity,
                env,
                compute,
                shared,
                no_wait,
            } => {
                let body = StartSession {
                    flow: flow_reference(&remote, &flow).await?,
                    size: size_of(&size)?,
                    idle_timeout_s: idle_timeout.map(|t| parse_idle(&t)).transpose()?,
                    identity,
                    env,
                    compute,
                    shared,
                };
                let s: SessionView = remote.post("/api/v1/sessions", &body).await?;
                if !no_wait {
                    wait_running(&remote, &s.id).await?;
                }
                println!("{}", s.id);
            }
            SessionCommand::List { json } => list(&remote, json).await?,
            SessionCommand::Show { id, json } => {
                let s: SessionView = remote.get(&session_path(&id)).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                } else {
                    print_session(&s);
                }
            }
            SessionCommand::Edit {
                id,
                size,
                idle_timeout,
            } => {
                let body = EditSession {
                    size: size.map(|s| size_of(&s)).transpose()?,
                    idle_timeout_s: idle_timeout.map(|t| parse_idle(&t)).transpose()?,
                };
                let s: SessionView = remote.patch(&session_path(&id), &body).await?;
                if let Some(n) = &s.note {
                    eprintln!("note: {n}");
                }
                print_session(&s);
            }
            SessionCommand::Packages { id, json } => packages(&remote, &id, json).await?,
            SessionCommand::Install {
                id,
                requirements,
                save_only,
            } => install(&remote, &id, &requirements, save_only).await?,
            SessionCommand::Reset { id } => {
                let _: Ignored = remote
                    .post_empty(&format!("{}/reset", session_path(&id)))
                    .await?;
                wait_running(&remote, &id).await?;
            }
            SessionCommand::Update { id } => {
                let _: Ignored = remote
                    .post_empty(&format!("{}/update", session_path(&id)))
                    .await?;
                let s = wait_running(&remote, &id).await?;
                eprintln!("session {id} now runs base environment {}", s.base_version);
            }
            SessionCommand::Logs { id, follow } => logs(&remote, &id, follow).await?,
            SessionCommand::Stop { id } => {
                let s: SessionView = remote
                    .post_empty(&format!("{}/stop", session_path(&id)))
                    .await?;
                eprintln!("session {id} is {}", s.status);
            }
            SessionCommand::Delete { id } => {
                remote.delete(&session_path(&id)).await?;
                eprintln!("session {id} is deleted; its runs stay in the workspace");
            }
        }
        Ok(0)
    })
}

/// The API path of session `id`.
pub fn session_path(id: &str) -> String {
    format!("/api/v1/sessions/{id}")
}

/// The workspace flow `flow` names: a folder here is pushed first (nothing is sent when it is
/// unchanged); anything else names a workspace flow, NAME or NAME@vN.
pub async fn flow_reference(remote: &Remote, flow: &std::path::Path) -> Result<String> {
    if !flow.exists() {
        return Ok(flow.display().to_string());
    }
    let name = crate::push::default_name(flow);
    let pushed = crate::push::push(remote, flow, &name, &flowrt_store::flowrt_home()).await?;
    if !pushed.unchanged {
        eprintln!("pushed {} ({} bytes)", pushed.reference, pushed.bytes_sent);
    }
    Ok(pushed.reference)
}

/// `session packages`: what the session's environment has installed.
async fn packages(remote: &Remote, id: &str, json: bool) -> Result<()> {
    let list: Vec<PackageView> = remote
        .get(&format!("{}/packages", session_path(id)))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let mut t = crate::fmt::table(&["NAME", "VERSION", "SOURCE"], &[]);
    for p in &list {
        let source = match p.source {
            flowrt_api::responses::PackageOrigin::Base => "base",
            flowrt_api::responses::PackageOrigin::Requirements => "requirements",
        };
        t.add_row(vec![p.name.as_str(), p.version.as_str(), source]);
    }
    crate::fmt::print_table(&t);
    Ok(())
}

/// `session install`: the requirements become the session flow's, and are installed (the
/// session prepares again) unless `save_only`.
async fn install(
    remote: &Remote,
    id: &str,
    requirements: &std::path::Path,
    save_only: bool,
) -> Result<()> {
    let text = std::fs::read_to_string(requirements)
        .map_err(|e| anyhow!("cannot read {}: {e}", requirements.display()))?;
    let body = InstallRequirements {
        requirements: text,
        save_only,
    };
    let s: SessionView = remote
        .post(&format!("{}/install", session_path(id)), &body)
        .await?;
    if save_only {
        eprintln!("{}", s.note.as_deref().unwrap_or("saved"));
    } else {
        wait_running(remote, id).await?;
        eprintln!("installed; session {id} is running");
    }
    Ok(())
}

/// `session logs [--follow]`: the log from its start, then (following) as it grows, until the
/// session is no longer running.
async fn logs(remote: &Remote, id: &str, follow: bool) -> Result<()> {
    let mut offset = 0u64;
    loop {
        let chunk: LogChunk = remote
            .get(&format!("{}/logs?offset={offset}", session_path(id)))
            .await?;
        print!("{}", chunk.text);
        offset = chunk.offset;
        let done = !matches!(chunk.status.as_str(), "Running" | "Preparing" | "Stopping");
        if !follow || done {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `small`, `medium` or `large`.
pub fn size_of(s: &str) -> Result<SessionSize> {
    SessionSize::parse(s).ok_or_else(|| anyhow!("unknown size '{s}'; use small, medium or large"))
}

/// `30m`, `2h`, `90s`, `0` (never) as seconds.
fn parse_idle(s: &str) -> Result<u64> {
    flowrt_session::idle::parse_duration(s)
        .map(|d| d.as_secs())
        .map_err(|e| anyhow!(e))
}
