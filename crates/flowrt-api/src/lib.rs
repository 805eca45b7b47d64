//! Vocabulary shared by every role: connection records, session status and sizes, API errors.
//! serde only: no IO, no async.

pub mod connection;
pub mod session;

pub use connection::{Connection, ConnectionKind};
pub use session::{ApiError, PreparingPhase, SessionSize, SessionStatus, SizeLimits};
