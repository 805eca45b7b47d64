//! Vocabulary shared by every role: connection records, session status and sizes, API errors, and
//! the API's request and response bodies (with their OpenAPI schemas). No IO, no async.

pub mod agent;
pub mod connection;
pub mod endpoints;
pub mod errors;
pub mod names;
pub mod requests;
pub mod responses;
pub mod session;
pub mod trace;
pub mod workspace;

pub use connection::{Connection, ConnectionKind, EntraServicePrincipal};
pub use errors::ErrorCode;
pub use session::{ApiError, PreparingPhase, SessionSize, SessionStatus, SizeLimits};
