//! Tracing: each line becomes OpenTelemetry spans (the flow, then one span per node: `LLM` for
//! llm and prompty nodes, `Function` for the rest, and under them the spans Python code recorded)
//! with the attributes promptflow's own trace viewer reads (`span_type`, `function`,
//! `node_name`, `line_run_id`, `batch_run_id`, `line_number`, `referenced.batch_run_id`,
//! `llm.usage.*`, cumulative token counts on the flow span, inputs and output as
//! `promptflow.function.inputs` / `promptflow.function.output` events, the resource's
//! `collection`) and the GenAI conventions (`gen_ai.*`).
//!
//! Spans leave through the OpenTelemetry project's OTLP exporter, configured as its SDKs are:
//! `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`, `..._PROTOCOL` (`http/protobuf`, the default, or
//! `http/json`), `..._HEADERS`, `..._COMPRESSION` (`gzip`), `..._TIMEOUT`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`. A batch processor on its own thread sends them: a
//! line hands its spans to a bounded queue and goes on, whether the receiver is fast, slow or
//! gone (spans beyond the queue are dropped, and a receiver that fails is named once). Nothing is
//! built when no endpoint is set: tracing costs nothing when it is off.

use flowrt_api::trace::{TraceAs, TraceEvent, TraceSpan};
use flowrt_executor::{LineResult, NodeRun, NodeStatus};
use flowrt_flow::nonfinite::object_to_json_line;
use flowrt_flow::{Flow, FlowKind, NodeKind};
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanExporter,
    SpanLinks, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most a process waits, when it ends, for the spans still queued to leave.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(5);

/// Where spans go: a batch processor over the OTLP exporter.
#[derive(Clone, Debug)]
pub struct Exporter {
    processor: Arc<BatchSpanProcessor>,
    counts: Arc<Counts>,
    endpoint: String,
}

impl Exporter {
    /// From the standard OpenTelemetry variables, for the spans of the flow `collection` (the
    /// name promptflow's viewer groups them under); `None` when tracing is off, or when it is
    /// asked in a way flowrt cannot export (said once, on stderr).
    pub fn from_env(collection: &str) -> Option<Exporter> {
        let var = |name: &str| {
            std::env::var(format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
                .or_else(|_| std::env::var(format!("OTEL_EXPORTER_OTLP_{name}")))
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let endpoint = var("ENDPOINT")?;
        let protocol = match protocol_from_env() {
            Ok(p) => p,
            Err(why) => {
                eprintln!("warning: traces are not exported: {why}");
                return None;
            }
        };
        // Headers, compression and the timeout are read from the environment by the exporter.
        use opentelemetry_otlp::WithExportConfig;
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .build()
        {
            Ok(e) => e,
            Err(e) => {
                eprintln!("warning: traces are not exported to {endpoint}: {e}");
                return None;
            }
        };
        let counts = Arc::new(Counts::default());
        let reporting = ReportOnce {
            inner: exporter,
            endpoint: endpoint.clone(),
            warned: AtomicBool::new(false),
            counts: counts.clone(),
        };
        // Spans leave within a second, as promptflow's do (the SDK's default waits 5 s), unless
        // OTEL_BSP_SCHEDULE_DELAY says otherwise.
        let mut batching = opentelemetry_sdk::trace::BatchConfigBuilder::default();
        if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
            batching = batching.with_scheduled_delay(Duration::from_secs(1));
        }
        let mut processor = BatchSpanProcessor::builder(reporting)
            .with_batch_config(batching.build())
            .build();
        processor.set_resource(&resource(collection));
        Some(Exporter {
            processor: Arc::new(processor),
            counts,
            endpoint,
        })
    }

    /// Hand recorded spans (a session's) to the queue: never waits for the receiver.
    pub fn export(&self, spans: Vec<TraceSpan>) {
        for span in spans {
            if let Some(data) = span_data(span) {
                self.hand(data);
            }
        }
    }

    /// Hand a finished line's spans to the queue: built straight into the SDK's form (the
    /// cheapest way to export a line), never waits for the receiver.
    pub fn export_line(&self, flow: &Flow, line: &LineResult, trace: &TraceAs) {
        for data in built_line_spans(flow, line, trace) {
            self.hand(data);
        }
    }

    /// Hand a batch run's aggregation spans to the queue.
    pub fn export_aggregation(&self, flow: &Flow, runs: &[NodeRun], trace: &TraceAs) {
        for data in built_aggregation_spans(flow, runs, trace) {
            self.hand(data);
        }
    }

    fn hand(&self, span: SpanData) {
        self.counts.handed.fetch_add(1, Ordering::Relaxed);
        self.processor.on_end(span);
    }

    /// Send what is queued now (blocking: call it off the async threads), for a run that just
    /// ended: its spans are in the viewer when it says it ended.
    pub fn flush(&self) {
        let _ = self.processor.force_flush();
    }

    /// Send what is queued, waiting at most a few seconds (a process that ends calls this, off
    /// its async threads: it blocks).
    pub fn finish(&self) {
        if self.counts.finished.swap(true, Ordering::Relaxed) {
            return;
        }
        let _ = self.processor.shutdown_with_timeout(FLUSH_AT_EXIT);
        let handed = self.counts.handed.load(Ordering::Relaxed);
        let dropped = handed.saturating_sub(self.counts.sent.load(Ordering::Relaxed));
        if dropped > 0 {
            eprintln!(
                "warning: {dropped} of {handed} spans did not reach {} (it failed, or did not keep up with the queue: OTEL_BSP_MAX_QUEUE_SIZE is its size, 2048 by default)",
                self.endpoint
            );
        }
    }
}

/// The OTLP protocol the environment asks for, or why flowrt cannot speak it.
fn protocol_from_env() -> Result<opentelemetry_otlp::Protocol, String> {
    let asked = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    match asked.trim() {
        "" | "http/protobuf" => Ok(opentelemetry_otlp::Protocol::HttpBinary),
        "http/json" => Ok(opentelemetry_otlp::Protocol::HttpJson),
        other => Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not one flowrt speaks; use http/protobuf (the default) or http/json, on the receiver's HTTP port (usually 4318)"
        )),
    }
}

/// The resource every span of this process carries: `service.name` (`OTEL_SERVICE_NAME`, else
/// `flowrt`), `collection`, and what `OTEL_RESOURCE_ATTRIBUTES` adds (which wins).
fn resource(collection: &str) -> Resource {
    let env_attrs = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    let names = |key: &str| {
        env_attrs
            .split(',')
            .any(|kv| kv.split('=').next().is_some_and(|k| k.trim() == key))
    };
    let mut builder = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() && !names("service.name") {
        builder = builder.with_service_name("flowrt");
    }
    if !names("collection") {
        builder = builder.with_attribute(KeyValue::new("collection", collection.to_string()));
    }
    builder.build()
}

/// The OTLP exporter, naming its receiver once when it fails (the batch processor's own
/// diagnostics go nowhere a user looks).
#[derive(Debug)]
struct ReportOnce<E> {
    inner: E,
    endpoint: String,
    warned: AtomicBool,
    counts: Arc<Counts>,
}

/// Spans handed to the queue and spans the receiver took: the difference was dropped (a full
/// queue, a failed request), which [`Exporter::finish`] says.
#[derive(Debug, Default)]
struct Counts {
    handed: AtomicU64,
    sent: AtomicU64,
    /// [`Exporter::finish`] ran: a second call has nothing to send or say.
    finished: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for ReportOnce<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len() as u64;
        let sent = self.inner.export(batch).await;
        if sent.is_ok() {
            self.counts.sent.fetch_add(count, Ordering::Relaxed);
        }
        if let Err(e) = &sent {
            if !self.warned.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "warning: cannot export traces to {}: {e} (lines go on; their spans are dropped while it fails)",
                    self.endpoint
                );
            }
        }
        sent
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporters of a process that sends spans of several flows (a server): one per collection,
/// since the collection is the resource's. The least recently used goes beyond a few dozen.
pub struct Exporters {
    by_collection: Mutex<Vec<(String, Exporter)>>,
}

/// How many collections a server exports at once before it finishes the oldest one's exporter.
const MOST_COLLECTIONS: usize = 32;

impl Exporters {
    /// `None` when no OTLP endpoint is configured.
    pub fn from_env() -> Option<Exporters> {
        let configured = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| !v.trim().is_empty()));
        configured.then(|| Exporters {
            by_collection: Mutex::new(Vec::new()),
        })
    }

    /// Send what every exporter has queued (blocking: call it off the async threads).
    pub fn flush(&self) {
        for exporter in self.all() {
            exporter.flush();
        }
    }

    /// Send what is queued and stop (a server that shuts down), a few seconds at most each.
    pub fn finish(&self) {
        for exporter in self.all() {
            exporter.finish();
        }
    }

    fn all(&self) -> Vec<Exporter> {
        self.by_collection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Export `spans` of the flow `collection`.
    pub fn export(&self, collection: &str, spans: Vec<TraceSpan>) {
        let exporter = {
            let mut all = self.by_collection.lock().unwrap_or_else(|p| p.into_inner());
            match all.iter().position(|(c, _)| c == collection) {
                Some(i) => {
                    let entry = all.remove(i);
                    let exporter = entry.1.clone();
                    all.push(entry);
                    Some(exporter)
                }
                None => match Exporter::from_env(collection) {
                    Some(exporter) => {
                        if all.len() >= MOST_COLLECTIONS {
                            let (_, oldest) = all.remove(0);
                            std::thread::spawn(move || oldest.finish());
                        }
                        all.push((collection.to_string(), exporter.clone()));
                        Some(exporter)
                    }
                    None => None,
                },
            }
        };
        if let Some(exporter) = exporter {
            exporter.export(spans);
        }
    }
}

/// An attribute value as OpenTelemetry carries it: numbers, booleans and strings keep their type;
/// anything else is its JSON text.
fn otel_value(value: Value) -> opentelemetry::Value {
    match value {
        Value::Bool(b) => b.into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(0.0).into(),
        },
        Value::String(s) => s.into(),
        other => payload(&other).into(),
    }
}

fn key_values(attributes: Map<String, Value>) -> Vec<KeyValue> {
    attributes
        .into_iter()
        .map(|(k, v)| KeyValue::new(k, otel_value(v)))
        .collect()
}

/// A count as an attribute (OpenTelemetry's integers are signed).
fn count(n: u64) -> opentelemetry::Value {
    match i64::try_from(n) {
        Ok(i) => i.into(),
        Err(_) => (n as f64).into(),
    }
}

/// An attribute value as a recorded span keeps it (JSON).
fn json_value(value: &opentelemetry::Value) -> Value {
    match value {
        opentelemetry::Value::Bool(b) => (*b).into(),
        opentelemetry::Value::I64(i) => (*i).into(),
        opentelemetry::Value::F64(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        other => Value::String(other.as_str().into_owned()),
    }
}

fn json_attributes(attributes: &[KeyValue]) -> Map<String, Value> {
    attributes
        .iter()
        .map(|kv| (kv.key.as_str().to_string(), json_value(&kv.value)))
        .collect()
}

fn time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The instrumentation scope of every span flowrt makes.
static SCOPE: std::sync::LazyLock<InstrumentationScope> = std::sync::LazyLock::new(|| {
    InstrumentationScope::builder("flowrt")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
});

/// A recorded span (one a session wrote, or one sent to the server) as the OpenTelemetry SDK
/// exports it; `None` when its ids are not hex of the right length (a span that came from
/// elsewhere).
fn span_data(span: TraceSpan) -> Option<SpanData> {
    let trace_id = TraceId::from_hex(&span.trace_id).ok()?;
    let span_id = SpanId::from_hex(&span.span_id).ok()?;
    let parent = match &span.parent_span_id {
        Some(p) => SpanId::from_hex(p).ok()?,
        None => SpanId::INVALID,
    };
    let events = span
        .events
        .into_iter()
        .map(|e| {
            Event::new(
                Cow::Owned(e.name),
                time(e.time_unix_nano),
                key_values(e.attributes),
                0,
            )
        })
        .collect();
    Some(finished(
        (trace_id, span_id, parent),
        Cow::Owned(span.name),
        time(span.start_unix_nano),
        time(span.end_unix_nano),
        key_values(span.attributes),
        events,
        span.error,
    ))
}

/// A span as a session records it for its server (see [`line_spans`]).
fn recorded(span: &SpanData) -> TraceSpan {
    let parent = span.parent_span_id;
    TraceSpan {
        trace_id: span.span_context.trace_id().to_string(),
        span_id: span.span_context.span_id().to_string(),
        parent_span_id: (parent != SpanId::INVALID).then(|| parent.to_string()),
        name: span.name.to_string(),
        start_unix_nano: nanos(span.start_time),
        end_unix_nano: nanos(span.end_time),
        attributes: json_attributes(&span.attributes),
        events: span
            .events
            .events
            .iter()
            .map(|e| TraceEvent {
                name: e.name.to_string(),
                time_unix_nano: nanos(e.timestamp),
                attributes: json_attributes(&e.attributes),
            })
            .collect(),
        error: match &span.status {
            Status::Error { description } => Some(description.to_string()),
            _ => None,
        },
    }
}

/// A finished span: its ids (trace, own, parent: `INVALID` for a root), name, times,
/// attributes, events, and why it failed.
fn finished(
    (trace_id, span_id, parent): (TraceId, SpanId, SpanId),
    name: Cow<'static, str>,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
    events: Vec<Event>,
    error: Option<String>,
) -> SpanData {
    let mut span_events = SpanEvents::default();
    span_events.events = events;
    SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name,
        start_time: start,
        end_time: end.max(start),
        attributes,
        dropped_attributes_count: 0,
        events: span_events,
        links: SpanLinks::default(),
        // Set either way: a viewer shows an unset status as neither passed nor failed.
        status: match error {
            Some(message) => Status::error(message),
            None => Status::Ok,
        },
        instrumentation_scope: SCOPE.clone(),
    }
}

/// A value as promptflow writes it in an event's `payload` (JSON; `NaN` and the infinities as
/// Python writes them), shared by the event and the attribute that carry it.
fn payload(value: &Value) -> Arc<str> {
    Arc::from(flowrt_flow::nonfinite::to_json_line(value))
}

/// A span's inputs or output, as each viewer reads them: promptflow's event
/// (`promptflow.function.inputs` / `.output`, its `payload`) and OpenInference's attributes
/// (`input.value` / `output.value`, JSON), which Phoenix and others show.
#[derive(Clone, Copy)]
enum Io {
    Inputs,
    Output,
}

fn record_io(
    io: Io,
    value: &Value,
    at: SystemTime,
    attributes: &mut Attributes,
    events: &mut Vec<Event>,
) {
    record_io_text(io, payload(value), at, attributes, events);
}

/// [`record_io`] of a value already written as JSON.
fn record_io_text(
    io: Io,
    text: Arc<str>,
    at: SystemTime,
    attributes: &mut Attributes,
    events: &mut Vec<Event>,
) {
    let (event_name, value_key, type_key) = match io {
        Io::Inputs => (
            "promptflow.function.inputs",
            "input.value",
            "input.mime_type",
        ),
        Io::Output => (
            "promptflow.function.output",
            "output.value",
            "output.mime_type",
        ),
    };
    attributes
        .push(value_key, text.clone())
        .push(type_key, "application/json");
    events.push(Event::new(
        event_name,
        at,
        vec![KeyValue::new("payload", text)],
        0,
    ));
}

fn usage_numbers(usage: &Value) -> (u64, u64, u64) {
    let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (p, c) = (n("prompt_tokens"), n("completion_tokens"));
    let t = usage
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(p + c);
    (p, c, t)
}

/// The attributes a span is built with, in the order they are set. flowrt's names are static
/// and the values a line's spans share are counted references: a line's spans are built with
/// few allocations, on the line's own thread.
#[derive(Clone, Default)]
struct Attributes(Vec<KeyValue>);

impl Attributes {
    /// Add an attribute this span does not have yet.
    fn push(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) -> &mut Self {
        self.0.push(KeyValue::new(key, value));
        self
    }

    /// Set an attribute, replacing the one of that name (where code's own attributes meet
    /// flowrt's).
    fn set(&mut self, key: opentelemetry::Key, value: opentelemetry::Value) -> &mut Self {
        match self.0.iter_mut().find(|kv| kv.key == key) {
            Some(kv) => kv.value = value,
            None => self.0.push(KeyValue::new(key, value)),
        }
        self
    }
}

/// The ids of one line's trace.
struct Ids {
    trace: TraceId,
    random: RandomIdGenerator,
}

impl Ids {
    fn new() -> Ids {
        let random = RandomIdGenerator::default();
        Ids {
            trace: random.new_trace_id(),
            random,
        }
    }

    fn span(&self) -> SpanId {
        self.random.new_span_id()
    }
}

/// A failed span's message, and the `exception` event promptflow records with it.
fn failed(message: String, at: SystemTime, events: &mut Vec<Event>) -> Option<String> {
    let (kind, text) = match message.split_once(": ") {
        Some((k, t)) if !k.is_empty() && !k.contains(' ') => (k.to_string(), t.to_string()),
        _ => ("Exception".to_string(), message.clone()),
    };
    events.push(Event::new(
        "exception",
        at,
        vec![
            KeyValue::new("exception.type", kind),
            KeyValue::new("exception.message", text),
            KeyValue::new("exception.escaped", false),
        ],
        0,
    ));
    Some(message)
}

/// The name promptflow's viewer gives a flow's traces: its folder's (a `.prompty`'s file stem).
pub fn flow_name(flow: &Flow) -> String {
    let path = if flow.kind == FlowKind::Prompty {
        flow.file.clone()
    } else {
        flow.dir.clone()
    };
    path.file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "flow".into())
}

/// The spans of one finished line, as a session records them for its server (see
/// [`Exporter::export_line`] for a line whose spans leave at once).
pub fn line_spans(flow: &Flow, line: &LineResult, trace: &TraceAs) -> Vec<TraceSpan> {
    built_line_spans(flow, line, trace)
        .iter()
        .map(recorded)
        .collect()
}

/// The spans of one finished line: the flow span, its nodes' spans under it, and the spans
/// Python code recorded under those.
fn built_line_spans(flow: &Flow, line: &LineResult, trace: &TraceAs) -> Vec<SpanData> {
    let ids = Ids::new();
    let root_id = ids.span();
    let start = line
        .node_runs
        .iter()
        .map(|n| n.start)
        .min()
        .unwrap_or_else(|| SystemTime::now() - line.duration);
    let end = start + line.duration;
    let mut common = framework_attributes(flow);
    common.push("line_number", count(line.line_number as u64));
    match &trace.run {
        Some(run) => {
            common
                .push("batch_run_id", Arc::<str>::from(run.as_str()))
                .push(
                    "line_run_id",
                    Arc::<str>::from(format!("{run}_{}", line.line_number)),
                );
        }
        None => {
            common.push("line_run_id", Arc::<str>::from(ids.trace.to_string()));
        }
    }
    if let Some(base) = &trace.base_run {
        common.push("referenced.batch_run_id", Arc::<str>::from(base.as_str()));
    }
    let mut spans = Vec::with_capacity(line.node_runs.len() + 1);
    let (mut prompt, mut completion, mut total) = (0u64, 0u64, 0u64);
    // A bypassed node ran no tool: promptflow's spans come from the tool call, so it has none.
    for run in line
        .node_runs
        .iter()
        .filter(|r| r.status != NodeStatus::Bypassed)
    {
        let node_id = ids.span();
        spans.push(node_span(flow, run, (ids.trace, node_id, root_id), &common));
        traced_spans(run, &ids, node_id, &common, &mut spans);
        if let Some(u) = &run.usage {
            let (p, c, t) = usage_numbers(u);
            prompt += p;
            completion += c;
            total += t;
        }
    }
    let mut attributes = common;
    attributes
        .push("span_type", "Flow")
        .push("openinference.span.kind", "CHAIN");
    if total > 0 {
        attributes
            .push("__computed__.cumulative_token_count.prompt", count(prompt))
            .push(
                "__computed__.cumulative_token_count.completion",
                count(completion),
            )
            .push("__computed__.cumulative_token_count.total", count(total))
            .push("llm.token_count.prompt", count(prompt))
            .push("llm.token_count.completion", count(completion))
            .push("llm.token_count.total", count(total));
    }
    // A batch line's inputs name their line, as promptflow's do (the number replaces an input
    // of that name). Written from the line's values, not a copy of them.
    let number = Value::from(line.line_number);
    let batch = trace.run.is_some();
    let given = line.inputs.iter().map(|(k, v)| {
        let v = if batch && k == "line_number" {
            &number
        } else {
            v
        };
        (k.as_str(), v)
    });
    let appended =
        (batch && !line.inputs.contains_key("line_number")).then_some(("line_number", &number));
    let inputs = object_to_json_line(given.chain(appended));
    let mut events = Vec::with_capacity(2);
    record_io_text(
        Io::Inputs,
        inputs.into(),
        start,
        &mut attributes,
        &mut events,
    );
    let error = match &line.error {
        None => {
            let outputs = object_to_json_line(line.outputs.iter().map(|(k, v)| (k.as_str(), v)));
            record_io_text(
                Io::Output,
                outputs.into(),
                end,
                &mut attributes,
                &mut events,
            );
            None
        }
        Some(e) => failed(e.to_string(), end, &mut events),
    };
    // The flow span first: a viewer that starts a line at its first span stored starts it there.
    spans.insert(
        0,
        finished(
            (ids.trace, root_id, SpanId::INVALID),
            Cow::Owned(trace.collection.clone()),
            start,
            end,
            attributes.0,
            events,
            error,
        ),
    );
    spans
}

/// The attributes every span of a flow's run starts with, as promptflow's.
fn framework_attributes(flow: &Flow) -> Attributes {
    let target = if flow.kind == FlowKind::Flex {
        "flex"
    } else {
        "dag"
    };
    let mut attributes = Attributes::default();
    attributes
        .push("framework", "promptflow")
        .push("execution_target", target);
    attributes
}

/// The spans of a batch run's aggregation: each aggregation node's span as promptflow makes it,
/// the root of a trace of its own (it belongs to the run, not to a line: `is_aggregation`,
/// `batch_run_id`, no `line_run_id`), with the spans its Python code recorded under it.
fn built_aggregation_spans(flow: &Flow, runs: &[NodeRun], trace: &TraceAs) -> Vec<SpanData> {
    let mut spans = Vec::with_capacity(runs.len());
    for run in runs {
        let ids = Ids::new();
        let mut common = framework_attributes(flow);
        common.push("is_aggregation", true);
        if let Some(run) = &trace.run {
            common.push("batch_run_id", Arc::<str>::from(run.as_str()));
        }
        if let Some(base) = &trace.base_run {
            common.push("referenced.batch_run_id", Arc::<str>::from(base.as_str()));
        }
        let node_id = ids.span();
        spans.push(node_span(
            flow,
            run,
            (ids.trace, node_id, SpanId::INVALID),
            &common,
        ));
        traced_spans(run, &ids, node_id, &common, &mut spans);
    }
    spans
}

/// The spans of a batch run's aggregation nodes, as a session records them (see
/// [`Exporter::export_aggregation`]).
pub fn aggregation_spans(flow: &Flow, runs: &[NodeRun], trace: &TraceAs) -> Vec<TraceSpan> {
    built_aggregation_spans(flow, runs, trace)
        .iter()
        .map(recorded)
        .collect()
}

/// The spans Python code recorded in a node (`@trace`d functions, spans made with the
/// OpenTelemetry API), under the node's span or under the span they were started in.
fn traced_spans(
    run: &NodeRun,
    ids: &Ids,
    node_id: SpanId,
    common: &Attributes,
    spans: &mut Vec<SpanData>,
) {
    if run.spans.is_empty() {
        return;
    }
    let at = |v: &Value| {
        let secs = v.as_f64().unwrap_or(0.0).max(0.0);
        UNIX_EPOCH + Duration::from_secs_f64(secs)
    };
    let span_ids: std::collections::HashMap<u64, SpanId> = run
        .spans
        .iter()
        .filter_map(|s| s["id"].as_u64())
        .map(|id| (id, ids.span()))
        .collect();
    let node_name: Arc<str> = Arc::from(run.node.as_str());
    for s in &run.spans {
        let Some(id) = s["id"].as_u64().and_then(|id| span_ids.get(&id)) else {
            continue;
        };
        let parent = s["parent"]
            .as_u64()
            .and_then(|p| span_ids.get(&p))
            .copied()
            .unwrap_or(node_id);
        let (start, end) = (at(&s["start"]), at(&s["end"]));
        let name: Arc<str> = Arc::from(s["name"].as_str().unwrap_or("function"));
        let mut attributes = common.clone();
        // What the code set on a span it made with the OpenTelemetry API; promptflow's
        // names, set after, are flowrt's to keep.
        if let Some(own) = s.get("attributes").and_then(Value::as_object) {
            for (k, v) in own.iter().take(128) {
                attributes.set(k.clone().into(), otel_value(v.clone()));
            }
        }
        attributes
            .set("span_type".into(), "Function".into())
            .set("openinference.span.kind".into(), "CHAIN".into())
            .set("function".into(), name.clone().into())
            .set("node_name".into(), node_name.clone().into());
        let mut events = Vec::with_capacity(2);
        record_io(
            Io::Inputs,
            &s["inputs"],
            start,
            &mut attributes,
            &mut events,
        );
        let error = match s.get("error").and_then(Value::as_str) {
            Some(e) => failed(e.to_string(), end, &mut events),
            None => {
                record_io(Io::Output, &s["output"], end, &mut attributes, &mut events);
                None
            }
        };
        spans.push(finished(
            (ids.trace, *id, parent),
            Cow::Owned(name.to_string()),
            start,
            end,
            attributes.0,
            events,
            error,
        ));
    }
}

fn node_span(
    flow: &Flow,
    run: &NodeRun,
    ids: (TraceId, SpanId, SpanId),
    common: &Attributes,
) -> SpanData {
    let node = flow.node(&run.node);
    let is_llm = node.is_some_and(|n| matches!(n.kind, NodeKind::Llm | NodeKind::CustomLlm))
        || run.usage.is_some();
    let mut attributes = common.clone();
    attributes
        .push("span_type", if is_llm { "LLM" } else { "Function" })
        .push(
            "openinference.span.kind",
            if is_llm { "LLM" } else { "TOOL" },
        )
        .push("node_name", Arc::<str>::from(run.node.as_str()));
    // The tool's Python function, as promptflow names it; a built-in tool's kind.
    match &run.function {
        Some(function) => attributes.push("function", function.clone()),
        None => attributes.push(
            "function",
            node.map(|n| n.kind.as_str()).unwrap_or("python"),
        ),
    };
    if let Some(n) = node {
        if let Some(api) = &n.api {
            attributes.push("gen_ai.operation.name", api.clone());
        }
        if let Some(flowrt_flow::InputValue::Literal(Value::String(m))) = n
            .inputs
            .get("model")
            .or_else(|| n.inputs.get("deployment_name"))
        {
            let model: Arc<str> = Arc::from(m.as_str());
            attributes
                .push("gen_ai.request.model", model.clone())
                .push("llm.model_name", model);
        }
    }
    if is_llm {
        attributes.push("gen_ai.system", "openai");
    }
    if let Some(u) = &run.usage {
        let (p, c, t) = usage_numbers(u);
        attributes
            .push("llm.usage.prompt_tokens", count(p))
            .push("llm.usage.completion_tokens", count(c))
            .push("llm.usage.total_tokens", count(t))
            .push("gen_ai.usage.input_tokens", count(p))
            .push("gen_ai.usage.output_tokens", count(c))
            .push("__computed__.cumulative_token_count.prompt", count(p))
            .push("__computed__.cumulative_token_count.completion", count(c))
            .push("__computed__.cumulative_token_count.total", count(t))
            .push("llm.token_count.prompt", count(p))
            .push("llm.token_count.completion", count(c))
            .push("llm.token_count.total", count(t));
    }
    let end = run.start + run.duration;
    let mut events = Vec::with_capacity(2);
    // An LLM node shows the request it sent (promptflow's LLM span does), others their inputs.
    match (&run.llm_request, &run.inputs) {
        (Some(request), _) => {
            record_io(Io::Inputs, request, run.start, &mut attributes, &mut events)
        }
        (None, Some(inputs)) => record_io_text(
            Io::Inputs,
            Arc::from(inputs.as_str()),
            run.start,
            &mut attributes,
            &mut events,
        ),
        (None, None) => {}
    }
    let error = match (&run.status, &run.error) {
        (NodeStatus::Completed | NodeStatus::Bypassed, _) => {
            if let Some(o) = &run.output {
                record_io(Io::Output, o, end, &mut attributes, &mut events);
            }
            None
        }
        (_, Some(e)) => failed(format!("{}: {}", e.error_type, e.message), end, &mut events),
        (status, None) => Some(format!("{status:?}")),
    };
    finished(
        ids,
        Cow::Owned(run.node.clone()),
        run.start,
        end,
        attributes.0,
        events,
        error,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_keep_their_ids_times_types_and_status_on_the_way_to_the_sdk() {
        let mut attributes = Map::new();
        attributes.insert("line_number".into(), 3.into());
        attributes.insert("ratio".into(), 0.5.into());
        attributes.insert("flag".into(), true.into());
        attributes.insert("inputs".into(), serde_json::json!({"a": 1}));
        let span = TraceSpan {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            parent_span_id: Some("00f067aa0ba902b7".into()),
            name: "node".into(),
            start_unix_nano: 1_000,
            end_unix_nano: 500,
            attributes,
            events: Vec::new(),
            error: Some("ValueError: bad".into()),
        };
        let data = span_data(span).unwrap();
        assert_eq!(
            data.span_context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(data.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert!(
            data.end_time >= data.start_time,
            "an end before the start is clamped"
        );
        let get = |k: &str| {
            data.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.clone())
        };
        assert_eq!(get("line_number"), Some(opentelemetry::Value::I64(3)));
        assert_eq!(get("ratio"), Some(opentelemetry::Value::F64(0.5)));
        assert_eq!(get("flag"), Some(opentelemetry::Value::Bool(true)));
        assert_eq!(get("inputs"), Some(opentelemetry::Value::from("{\"a\":1}")));
        assert_eq!(data.status, Status::error("ValueError: bad"));
        let bad = TraceSpan {
            trace_id: "not hex".into(),
            span_id: "b7ad6b7169203331".into(),
            ..TraceSpan::default()
        };
        assert!(span_data(bad).is_none());
    }
}
