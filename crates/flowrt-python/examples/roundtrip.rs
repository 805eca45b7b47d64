//! Mean round trip of sequential calls of a trivial Python tool through a warm worker.
//!
//! `cargo run -p flowrt-python --example roundtrip --release [-- N]`

use flowrt_python::{default_python, Arg, ToolCall, ToolSource, WorkerPool, WorkerSpec};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let per_call = current.block_on(measure(n))?;
    println!("python worker round trip: {per_call:.1} µs/call ({n} sequential calls, current-thread runtime)");
    let multi = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let per_call = multi.block_on(measure(n))?;
    println!("python worker round trip: {per_call:.1} µs/call ({n} sequential calls, multi-thread runtime)");
    Ok(())
}

async fn measure(n: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let flow_dir = tempfile::tempdir()?;
    std::fs::write(
        flow_dir.path().join("trivial.py"),
        "from promptflow.core import tool\n\n\n@tool\ndef trivial(x: int) -> int:\n    return x + 1\n",
    )?;
    let state = tempfile::tempdir()?;
    let pool = WorkerPool::new(
        WorkerSpec {
            python: default_python(),
            flow_dir: flow_dir.path().to_path_buf(),
            env: vec![],
            state_dir: state.path().to_path_buf(),
        },
        1,
    );
    let call = |i: usize| ToolCall {
        node: "trivial".into(),
        source: ToolSource::Code {
            path: "trivial.py".into(),
        },
        args: vec![("x".into(), Arg::Value(serde_json::json!(i)))],
        timeout: None,
    };
    for i in 0..1000 {
        pool.call(call(i)).await?;
    }
    let started = Instant::now();
    for i in 0..n {
        pool.call(call(i)).await?;
    }
    let per_call = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    pool.shutdown().await;
    Ok(per_call)
}
