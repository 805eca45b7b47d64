//! `flowrt flow test`: one line, embedded (executor and Python worker in this process tree, no server).

use crate::invoker::{self, FlowInvoker};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use flowrt_executor::{
    prepare_inputs, Executor, ExecutorOptions, InputError, NodeRun, RunObserver,
};
use flowrt_flow::LoadOptions;
use indexmap::IndexMap;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct TestArgs {
    /// The flow folder (holding flow.dag.yaml or flow.flex.yaml), that file, or a .prompty file.
    pub flow: PathBuf,
    /// Flow inputs as NAME=VALUE; values are converted to the inputs' declared types.
    #[arg(long, num_args = 1.., value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,
    /// A JSON file holding an object of flow inputs (--inputs given too override its keys).
    #[arg(long, value_name = "FILE.json")]
    pub inputs_file: Option<PathBuf>,
    /// Run the line inside this compute session (on the server at --server / FLOWRT_SERVER).
    #[arg(long, value_name = "SESSION_ID")]
    pub session: Option<String>,
    /// The server's URL, with --session.
    #[arg(long)]
    pub server: Option<String>,
    /// Use another variant of a node: '${node_name.variant_id}'.
    #[arg(long, value_name = "${NODE.VARIANT}")]
    pub variant: Option<String>,
    /// A flex flow's class entry: a JSON file holding an object of constructor kwargs (default:
    /// the flow's sample.init; `init:` defaults fill in the rest).
    #[arg(long, value_name = "FILE.json")]
    pub init: Option<PathBuf>,
    /// Print the outputs as one JSON object whatever the flow returned (a prompty's or flex
    /// flow's plain value as {"output": VALUE}), for scripts. Without it the result prints as
    /// `pf flow test` prints it: a plain value bare, a dict as indented JSON.
    #[arg(long)]
    pub json: bool,
}

/// The line's outputs as `flow test` prints them (see [`TestArgs::json`]).
pub fn result_text(outputs: &Value, bare: bool, repr: Option<&str>, json: bool) -> String {
    if json {
        flowrt_flow::nonfinite::to_json_indent4(outputs)
    } else {
        flowrt_flow::pyvalue::flow_test_text(outputs, bare, repr)
    }
}

/// Prints each node's captured print() output to stderr as it finishes.
struct LogToStderr;
impl RunObserver for LogToStderr {
    fn node_finished(&self, _line: Option<usize>, run: &NodeRun) {
        for line in run.logs.lines() {
            eprintln!("[{}] {line}", run.node);
        }
    }
}

fn parse_inputs(args: &TestArgs) -> Result<IndexMap<String, Value>> {
    let mut inputs: IndexMap<String, Value> = IndexMap::new();
    if let Some(file) = &args.inputs_file {
        let text = fs_err::read_to_string(file).context("cannot read --inputs-file")?;
        // Python's json (promptflow's) also reads NaN and Infinity.
        let v: Value = flowrt_flow::nonfinite::from_json_text(&text)
            .with_context(|| format!("{} is not valid JSON", file.display()))?;
        match v {
            Value::Object(m) => inputs.extend(m),
            _ => bail!(
                "{} must hold a JSON object of flow inputs, e.g. {{\"question\": \"hi\"}}",
                file.display()
            ),
        }
    }
    for pair in &args.inputs {
        let (k, v) =
            input_pair(pair).ok_or_else(|| anyhow!("--inputs '{pair}' must be NAME=VALUE"))?;
        inputs.insert(k, v);
    }
    Ok(inputs)
}

/// One `--inputs NAME=VALUE`: the value a string, which the flow's declared input type
/// converts. `None` without an `=`.
pub(super) fn input_pair(pair: &str) -> Option<(String, Value)> {
    let (k, v) = pair.split_once('=')?;
    Some((k.trim().to_string(), Value::String(v.to_string())))
}

pub fn run(args: TestArgs) -> Result<u8> {
    if let Some(id) = &args.session {
        if args.init.is_some() {
            bail!("--init cannot be combined with --session: a session's flex flow uses its sample.init\nhint: run the flow locally to pass constructor kwargs");
        }
        let inputs = Value::Object(parse_inputs(&args)?.into_iter().collect());
        return super::in_session::test_line(
            id,
            inputs,
            args.server.as_deref(),
            &args.flow,
            args.json,
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // `merged` is the flow folder with its additional includes: it lives until the line ends.
    let Opened {
        flow,
        invoker,
        inputs,
        merged: _merged,
    } = open(&args, &runtime)?;
    let flow = Arc::new(flow);
    let executor = Executor::new(
        flow.clone(),
        invoker.clone(),
        Arc::new(LogToStderr),
        // A test line's spans show each node's inputs (one line: keeping them costs nothing).
        ExecutorOptions {
            record_node_inputs: true,
            ..ExecutorOptions::default()
        },
    );
    if let Err(e) = runtime.block_on(invoker.preflight(&flow)) {
        runtime.block_on(invoker.shutdown());
        return Err(e);
    }
    Ok(runtime.block_on(run_line(&executor, &invoker, inputs, args.json)))
}

/// A flow ready for its test line.
struct Opened {
    flow: flowrt_flow::Flow,
    invoker: Arc<FlowInvoker>,
    inputs: IndexMap<String, Value>,
    /// The folder the flow runs in (a temporary copy when it has additional includes, removed
    /// when this is dropped).
    merged: crate::includes::Merged,
}

/// The flow loaded (its variant, includes and a flex entry's init applied), its tools' invoker
/// started, and the line's inputs checked against it; the invoker is shut down on an error.
fn open(args: &TestArgs, runtime: &tokio::runtime::Runtime) -> Result<Opened> {
    let mut options = LoadOptions::default();
    if let Some(v) = &args.variant {
        options.variant = Some(LoadOptions::parse_variant(v).map_err(|e| anyhow!(e))?);
    }
    let home = flowrt_store::flowrt_home();
    let merged = crate::includes::Merged::new(&args.flow, &home)?;
    let mut flow = merged.load(&options)?;
    let init = crate::flex::read_init(args.init.as_deref())?;
    let given = parse_inputs(args)?;
    let connections = invoker::load_connections(&home)?;
    let env = invoker::environment(&flow, &connections)?;
    let spec = invoker::python_spec(&flow, &home, env, &mut |msg| eprintln!("{msg}"))?;
    let invoker = Arc::new(
        FlowInvoker::new(&flow, connections, spec, 1)?.with_retry_listener(Arc::new(|e| {
            eprintln!("warning: {e}");
        })),
    );
    if let Err(e) = runtime.block_on(crate::flex::finish(&mut flow, &invoker, init.as_ref())) {
        runtime.block_on(invoker.shutdown());
        return Err(e);
    }
    let given: IndexMap<String, Value> =
        crate::flex::test_inputs(&flow, given.into_iter().collect())
            .into_iter()
            .collect();
    match prepare_inputs(&flow, &given) {
        Ok(inputs) => Ok(Opened {
            flow,
            invoker,
            inputs,
            merged,
        }),
        Err(e) => {
            runtime.block_on(invoker.shutdown());
            Err(input_error(e, &flow))
        }
    }
}

/// A missing or invalid input, with how to give it.
fn input_error(e: InputError, flow: &flowrt_flow::Flow) -> anyhow::Error {
    match &e {
        // promptflow words this "The value for flow input 'x' is not provided"; prompty
        // users see that wording, and where a default would go.
        InputError::Missing { name, ty } if flow.kind == flowrt_flow::FlowKind::Prompty => anyhow!(
            "flow input '{name}' ({ty}) is not provided\nhint: pass it with --inputs {name}=VALUE or in --inputs-file, or give it a default under inputs: in {}",
            flow.file.display()
        ),
        InputError::Missing { name, .. } => {
            anyhow!("{e}\nhint: pass it with --inputs {name}=VALUE or in --inputs-file")
        }
        InputError::Invalid { .. } => anyhow!(e),
    }
}

/// Run the line (and a DAG's aggregation), export its spans when OTLP is configured, print its
/// outputs; the exit code.
async fn run_line(
    executor: &Executor<FlowInvoker>,
    invoker: &Arc<FlowInvoker>,
    inputs: IndexMap<String, Value>,
    json: bool,
) -> u8 {
    let flow = executor.flow().clone();
    let flex = flow.kind == flowrt_flow::FlowKind::Flex;
    let line = executor.run_line(0, inputs).await;
    export_spans(executor, &line).await;
    if let Some(err) = &line.error {
        if flex {
            // The message names the entry (promptflow's wording); no node to speak of.
            eprintln!("error: flow test failed: {}", err.failure.message);
            if let Some(tb) = err
                .failure
                .traceback
                .as_deref()
                .filter(|t| !t.trim().is_empty())
            {
                eprintln!("{}", tb.trim_end());
            }
        } else {
            eprintln!("error: flow test failed: {err}");
        }
        invoker.shutdown().await;
        return 1;
    }
    // A flex flow's __aggregate__ runs for batches only.
    if executor.has_aggregation() && !flex {
        let agg = executor.run_aggregation(&[&line]).await;
        // As in `pf flow test`, a failing aggregation node is reported but does not fail
        // the test: the line's outputs are still printed and the exit code is 0.
        if let Some(err) = &agg.error {
            eprintln!("error: aggregation failed: {err}");
        }
        if !agg.metrics.is_empty() {
            eprintln!(
                "metrics: {}",
                serde_json::to_string(&agg.metrics).unwrap_or_default()
            );
        }
    }
    invoker.shutdown().await;
    // NaN and the infinities are printed as promptflow prints them (`NaN`, `Infinity`).
    let outputs = Value::Object(line.outputs.into_iter().collect());
    let Some(outputs) = saved_images(outputs, &flow) else {
        return 1;
    };
    // As `pf flow test` prints it: a prompty's or flex flow's plain value bare.
    println!(
        "{}",
        result_text(
            &outputs,
            line.bare_output,
            line.result_repr.as_deref(),
            json
        )
    );
    0
}

/// The line's spans to the OTLP receiver the environment names, if any, sent before the process
/// ends (off the async threads: it waits, a few seconds at most).
async fn export_spans(executor: &Executor<FlowInvoker>, line: &flowrt_executor::LineResult) {
    let collection = crate::otel::flow_name(executor.flow());
    if let Some(exporter) = crate::otel::Exporter::from_env(&collection) {
        let trace = flowrt_api::trace::TraceAs {
            collection,
            ..Default::default()
        };
        exporter.export_line(executor.flow(), line, &trace);
        let _ = tokio::task::spawn_blocking(move || exporter.finish()).await;
    }
}

/// Images in the outputs saved as `pf flow test` saves them: under the flow's
/// .promptflow/output, referenced by absolute path. `None` (said on stderr) when they cannot be.
fn saved_images(outputs: Value, flow: &flowrt_flow::Flow) -> Option<Value> {
    if !flowrt_runtime::images::has_images(&outputs) {
        return Some(outputs);
    }
    let base = std::fs::canonicalize(&flow.dir).unwrap_or_else(|_| flow.dir.clone());
    let dir = base.join(".promptflow").join("output");
    match flowrt_runtime::images::persist_images(&outputs, &dir, None, flow.message_format) {
        Ok(saved) => Some(saved),
        Err(e) => {
            eprintln!(
                "error: cannot save the line's images in {}: {e}",
                dir.display()
            );
            None
        }
    }
}
