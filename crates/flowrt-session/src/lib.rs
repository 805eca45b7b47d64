//! Compute sessions: the lifecycle state machine (`lifecycle`, pure), idle-shutdown decisions
//! (`idle`, pure), and the local backend that runs each session as a `flowrt agent` process with
//! its own folder, a scrubbed environment and resource limits (`backend`), plus the small HTTP
//! client the control plane uses to talk to agents (`client`).
//!
//! It does not store anything or serve the API: the server (`flowrt-server`) drives it.

pub mod backend;
pub mod client;
pub mod idle;
pub mod lifecycle;
pub mod seal;

pub use backend::{AgentHandle, AgentSpec, BackendError, LocalBackend, SecretText};
pub use lifecycle::{Event, InvalidTransition, State};
