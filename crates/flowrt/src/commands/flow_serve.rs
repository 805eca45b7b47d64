//! `flowrt flow serve`: promptflow's serving contract over HTTP. `POST /score` runs one line with
//! the JSON body as inputs and answers the outputs; with `Accept: text/event-stream` an LLM reply
//! that is a flow output streams as server-sent events (`data: {"<output>": "<chunk>"}`), after one
//! event with the other outputs, as promptflow does. `GET /health`, `/version` and `/swagger.json`
//! complete the contract. All requests share one executor and its Python workers.
//!
//! Like `pf flow serve` it listens on 127.0.0.1 by default; set `FLOWRT_SERVE_TOKEN` to require
//! `Authorization: Bearer <token>` on `/score` when you listen elsewhere.

use crate::invoker::{self, FlowInvoker, StreamSink, STREAM_SINK};
use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use flowrt_executor::{prepare_inputs, Executor, ExecutorOptions, NoObserver};
use flowrt_flow::pyvalue::py_json_dumps;
use flowrt_flow::{Flow, LoadOptions};
use indexmap::IndexMap;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct ServeArgs {
    /// The flow folder, or a .prompty file.
    pub flow: PathBuf,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Use another variant of a node: '${node_name.variant_id}'.
    #[arg(long)]
    pub variant: Option<String>,
    /// A flex flow's class entry: a JSON file holding an object of constructor kwargs (default:
    /// the flow's sample.init).
    #[arg(long, value_name = "FILE.json")]
    pub init: Option<PathBuf>,
}

struct Served {
    flow: Arc<Flow>,
    executor: Executor<FlowInvoker>,
    /// The output that streams, with the node it reads.
    stream: Option<(String, String)>,
    swagger: Value,
    token: Option<String>,
}

type Shared = Arc<Served>;

pub fn run(args: ServeArgs) -> Result<u8> {
    let home = flowrt_store::flowrt_home();
    let mut options = LoadOptions::default();
    if let Some(v) = &args.variant {
        options.variant = Some(LoadOptions::parse_variant(v).map_err(|e| anyhow::anyhow!(e))?);
    }
    let merged = crate::includes::Merged::new(&args.flow, &home)?;
    let mut flow = merged.load(&options)?;
    let init = crate::flex::read_init(args.init.as_deref())?;
    let connections = invoker::load_connections(&home)?;
    let env = invoker::environment(&flow, &connections)?;
    let spec = invoker::python_spec(&flow, &home, env, &mut |m| eprintln!("{m}"))?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // Every LLM retry says what failed and how long it waits (on stderr: the server's or the
    // session's log).
    let invoker = Arc::new(
        FlowInvoker::new(&flow, connections, spec, workers)?
            .with_retry_listener(Arc::new(|e| eprintln!("warning: {e}"))),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Err(e) = runtime.block_on(crate::flex::finish(&mut flow, &invoker, init.as_ref())) {
        runtime.block_on(invoker.shutdown());
        return Err(e);
    }
    // As `pf flow serve`, refuse to serve a flow whose tools name connections that do not exist.
    if let Err(e) = runtime.block_on(invoker.preflight(&flow)) {
        runtime.block_on(invoker.shutdown());
        return Err(e);
    }
    let flow = Arc::new(flow);
    let executor = Executor::new(
        flow.clone(),
        invoker.clone(),
        Arc::new(NoObserver),
        ExecutorOptions::default(),
    );
    let token = std::env::var("FLOWRT_SERVE_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let loopback = matches!(args.host.as_str(), "127.0.0.1" | "localhost" | "::1");
    if !loopback && token.is_none() {
        eprintln!("warning: serving on {} without authentication; set FLOWRT_SERVE_TOKEN to require a bearer token", args.host);
    }
    let served = Arc::new(Served {
        stream: invoker::stream_output(&flow),
        swagger: super::flow_swagger::swagger(&flow),
        flow: flow.clone(),
        executor,
        token,
    });
    let app = Router::new()
        .route("/score", post(score))
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/swagger.json", get(swagger_json))
        .with_state(served);
    runtime.block_on(async {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        eprintln!(
            "serving flow {} on http://{}",
            args.flow.display(),
            listener.local_addr()?
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(flowrt_server::shutdown_signal())
            .await?;
        invoker.shutdown().await;
        Ok::<_, anyhow::Error>(())
    })?;
    drop(merged);
    Ok(0)
}

fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn health() -> Json<Value> {
    Json(json!({"status": "Healthy", "version": env!("CARGO_PKG_VERSION")}))
}

async fn version() -> Json<Value> {
    Json(
        json!({"status": "Healthy", "build_info": "", "version": env!("CARGO_PKG_VERSION"), "runtime": "flowrt"}),
    )
}

async fn swagger_json(State(s): State<Shared>) -> Json<Value> {
    Json(s.swagger.clone())
}

async fn score(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(token) = &s.token {
        let ok = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|t| t.trim() == token);
        if !ok {
            return error_response(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "send 'Authorization: Bearer <FLOWRT_SERVE_TOKEN>'".into(),
            );
        }
    }
    let given: IndexMap<String, Value> = if s.flow.inputs.is_empty() {
        IndexMap::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => m.into_iter().collect(),
            Ok(_) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "UserError",
                    "the request body must be a JSON object of flow inputs".into(),
                )
            }
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "UserError",
                    format!("the request body is not valid JSON: {e}"),
                )
            }
        }
    };
    let inputs = match prepare_inputs(&s.flow, &given) {
        Ok(i) => i,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "UserError", e.to_string()),
    };
    // A request's image is its data or a URL: a file path would read a file of this machine's
    // for whoever sends the request (a default path written in the flow itself is the author's).
    for (name, value) in &given {
        let converted = inputs.get(name).unwrap_or(value);
        if let Some(path) = flowrt_flow::file_image_reference(converted) {
            return error_response(
                StatusCode::BAD_REQUEST,
                "UserError",
                format!(
                    "input '{name}' names the image file '{path}'; a served flow takes images as a URL or as base64 data (\"data:image/png;base64,...\" or {{\"data:image/png;base64\": \"...\"}}), never a path on the server"
                ),
            );
        }
    }
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    match (&s.stream, wants_stream) {
        (Some((output, node)), true) => {
            stream_score(s.clone(), inputs, output.clone(), node.clone()).await
        }
        _ => {
            let line = s.executor.run_line(0, inputs).await;
            match &line.error {
                Some(err) => error_response(StatusCode::BAD_REQUEST, "UserError", err.to_string()),
                // A prompty's or flex flow's plain value is answered as it is, as
                // `pf flow serve` answers it; other results are their outputs.
                None if line.bare_output => {
                    let mut outputs = line.outputs;
                    Json(
                        outputs
                            .shift_remove(flowrt_flow::VALUE_OUTPUT)
                            .unwrap_or(Value::Null),
                    )
                    .into_response()
                }
                None => Json(Value::Object(
                    line.outputs.into_iter().collect::<Map<_, _>>(),
                ))
                .into_response(),
            }
        }
    }
}

/// SSE: one event with the other outputs (when there are any), then one event per reply chunk.
/// With other outputs the line must finish first (they are part of the first event), so chunks
/// are collected and sent after it; a flow whose only output is the reply streams live.
async fn stream_score(
    s: Shared,
    inputs: IndexMap<String, Value>,
    output: String,
    node: String,
) -> Response {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (events_tx, events_rx) =
        tokio::sync::mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let only_output = s.flow.outputs.len() == 1;
    let sink = StreamSink {
        nodes: HashSet::from([node]),
        tx,
    };
    let served = s.clone();
    let line_task =
        tokio::spawn(STREAM_SINK.scope(
            sink,
            async move { served.executor.run_line(0, inputs).await },
        ));
    let event = |v: Value| Ok(Bytes::from(format!("data: {}\n\n", py_json_dumps(&v))));
    if only_output {
        let field = output.clone();
        let events = events_tx.clone();
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if events
                    .send(event(json!({ field.as_str(): chunk })))
                    .is_err()
                {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            if let Ok(line) = line_task.await {
                if let Some(err) = line.error {
                    let _ = events_tx.send(event(
                        json!({"error": {"code": "UserError", "message": err.to_string()}}),
                    ));
                }
            }
        });
    } else {
        let line = match line_task.await {
            Ok(l) => l,
            Err(e) => {
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "SystemError",
                    format!("the line did not finish: {e}"),
                )
            }
        };
        if let Some(err) = &line.error {
            return error_response(StatusCode::BAD_REQUEST, "UserError", err.to_string());
        }
        let others: Map<String, Value> = line
            .outputs
            .into_iter()
            .filter(|(k, _)| k != &output)
            .collect();
        let _ = events_tx.send(event(Value::Object(others)));
        while let Ok(chunk) = rx.try_recv() {
            let _ = events_tx.send(event(json!({ output.as_str(): chunk })));
        }
        drop(events_tx);
    }
    let stream = tokio_stream_from(events_rx);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| {
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SystemError",
                "cannot build the response".into(),
            )
        })
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
