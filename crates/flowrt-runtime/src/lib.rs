//! The runtime every role shares: opening a flow with its connections and environment
//! (`invoker`: python nodes to workers, built-in tools to Rust, flex entries and their host
//! callbacks in `flex`), batch data read as promptflow's tables read it (`data`), the run records
//! under FLOWRT_HOME (`runs`), `additional_includes` (`includes`), and OpenTelemetry export
//! (`otel`). The CLI, the session agent and serving call it; it prints nothing but warnings.
//!
//! Not here yet: the batch engine itself (concurrency, cancel, resume, the ordered writer), which
//! still lives in the binary's `run create`.

pub mod data;
pub mod flex;
pub mod images;
pub mod includes;
pub mod invoker;
pub mod otel;
pub mod runs;
