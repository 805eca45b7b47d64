//! What each command does, one module per resource. Every module that talks to a server does so
//! through `crate::client::Remote`, sending `flowrt_api` request bodies and decoding its
//! response types.

pub mod agent;
pub mod compute;
pub mod connection;
pub mod data;
pub mod deployment;
pub mod endpoint;
pub mod endpoint_requests;
pub mod env;
pub mod flow;
pub mod flow_serve;
pub mod flow_swagger;
pub mod flow_test;
pub mod flow_versions;
pub mod identity;
pub mod in_session;
pub mod run;
pub mod run_progress;
pub mod run_summary;
pub mod run_view;
pub mod score;
pub mod server;
pub mod session;
pub mod session_show;
pub mod team;
