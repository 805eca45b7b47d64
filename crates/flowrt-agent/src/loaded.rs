//! A flow opened to run lines in this session: the flow, its tool invoker (with its Python
//! workers) and the executor over them. The session's own flow is one; a session switched to a
//! newer version of its flow opens the new one and swaps it in, and a draft tested before it is
//! saved is another.

use anyhow::Result;
use flowrt_executor::{Executor, ExecutorOptions, RunObserver};
use flowrt_flow::LoadOptions;
use flowrt_runtime::invoker::{self, FlowInvoker};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Loaded {
    /// The flow folder (or `.prompty` file) as given: batch runs load it themselves.
    pub flow_dir: PathBuf,
    pub invoker: Arc<FlowInvoker>,
    pub executor: Executor<FlowInvoker>,
    // Merged `additional_includes` live as long as the flow runs from them.
    _merged: flowrt_runtime::includes::Merged,
}

/// Where a flow is, and what it runs with.
pub struct OpenFlow<'a> {
    pub path: &'a Path,
    pub home: &'a Path,
    pub python: &'a Path,
    pub connections: &'a HashMap<String, flowrt_api::Connection>,
    pub workers: usize,
    pub observer: Arc<dyn RunObserver>,
    /// `(node, variant id)` to run instead of the node's default variant.
    pub variant: Option<(String, String)>,
}

impl Loaded {
    pub async fn open(how: OpenFlow<'_>) -> Result<Loaded> {
        let merged = flowrt_runtime::includes::Merged::new(how.path, how.home)?;
        let mut flow = merged.load(&LoadOptions {
            variant: how.variant.clone(),
        })?;
        let env = invoker::environment(&flow, how.connections)?;
        let spec = invoker::needs_python(&flow).then(|| flowrt_python::WorkerSpec {
            python: how.python.to_path_buf(),
            flow_dir: flow.dir.clone(),
            env,
            state_dir: how.home.to_path_buf(),
        });
        // Every LLM retry says what failed and how long it waits (on stderr: the session's log).
        let invoker = Arc::new(
            FlowInvoker::new(&flow, how.connections.clone(), spec, how.workers)?
                .with_retry_listener(Arc::new(|e| eprintln!("warning: {e}"))),
        );
        // A flex flow is typed by its entry's signature (a class entry uses its sample.init).
        if let Err(e) = flowrt_runtime::flex::finish(&mut flow, &invoker, None).await {
            invoker.shutdown().await;
            return Err(e);
        }
        let executor = Executor::new(
            Arc::new(flow),
            invoker.clone(),
            how.observer,
            // A test line's spans show each node's inputs (one line: keeping them costs nothing).
            ExecutorOptions {
                record_node_inputs: true,
                ..ExecutorOptions::default()
            },
        );
        Ok(Loaded {
            flow_dir: how.path.to_path_buf(),
            invoker,
            executor,
            _merged: merged,
        })
    }
}
