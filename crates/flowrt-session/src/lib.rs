//! Compute sessions: the lifecycle state machine (`lifecycle`, pure), idle-shutdown decisions
//! (`idle`, pure), and the local backend that runs each session as a `flowrt agent` process with
//! its own folder, a scrubbed environment and resource limits (`backend`), the Ray backend
//! (`ray`), what seals a session (`seal`, `isolate`), and the client the control plane talks to
//! agents with (`client`, over the protocol typed in `flowrt_api::agent`), and the session
//! manager that drives them all from the store (`manager`). The agent itself is the
//! `flowrt-agent` crate, which the server does not depend on.
//!
//! It serves no API: the server's routes (`flowrt-server`) call the manager and answer in the
//! API's shapes.

pub mod backend;
pub mod client;
pub mod idle;
pub mod isolate;
pub mod lifecycle;
pub mod manager;
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
