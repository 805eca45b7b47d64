//! Compute sessions: the lifecycle state machine (`lifecycle`, pure), idle-shutdown decisions
//! (`idle`, pure), and the local backend that runs each session as a `flowrt agent` process with
//! its own folder, a scrubbed environment and resource limits (`backend`), plus the small HTTP
//! client the control plane uses to talk to agents (`client`), and the agent itself (`agent`: the
//! process that is a session, running lines and batch runs through `flowrt-runtime`; `run_files`:
//! what it reads and writes in its folder for the server, which never opens a path there).
//!
//! It does not store anything or serve the API: the server (`flowrt-server`) drives it, through
//! `backend` and `client` only (never `agent`, which runs in the session's own process).

pub mod agent;
pub mod backend;
pub mod client;
pub mod idle;
pub mod isolate;
pub mod lifecycle;
pub mod run_files;
pub mod seal;
pub mod session_files;

pub mod ray;

pub use backend::{AgentHandle, AgentSpec, BackendError, LocalBackend, SecretText};
pub use lifecycle::{Event, InvalidTransition, State};

/// Resolves on SIGINT or SIGTERM: every long-running flowrt role (the server, an agent, serving)
/// stops cleanly on either.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
