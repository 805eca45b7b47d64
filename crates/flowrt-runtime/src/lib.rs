//! The runtime every role shares: opening a flow with its connections and environment
//! (`invoker`: python nodes to workers, built-in tools to Rust, flex entries and their host
//! callbacks in `flex`), batch data read as promptflow's tables read it (`data`), the run records
//! under FLOWRT_HOME (`runs`), `additional_includes` (`includes`), OpenTelemetry export
//! (`otel`), and the batch engine (`batch`: concurrency, timeouts, cancel, resume, the ordered
//! writer, the run folder). The CLI, the session agent and serving call it; it prints nothing
//! (progress and warnings go to the caller's `batch::Reporter`).

pub mod batch;
pub mod data;
pub mod flex;
pub mod images;
pub mod includes;
pub mod invoker;
pub mod otel;
pub mod runs;
