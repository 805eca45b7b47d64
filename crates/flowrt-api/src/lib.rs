//! Vocabulary shared by every role: connection records today, HTTP request/response types later.
//! serde only: no IO, no async.

pub mod connection;

pub use connection::{Connection, ConnectionKind};
