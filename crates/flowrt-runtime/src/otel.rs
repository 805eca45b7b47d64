//! Tracing: each line becomes OpenTelemetry spans (the flow, then one span per node: `LLM` for
//! llm and prompty nodes, `Function` for the rest) with promptflow's attributes (`span_type`,
//! `node_name`, `line_run_id`, `batch_run_id`, `line_number`, `llm.usage.*`, cumulative token
//! counts, inputs and outputs as events) and the GenAI conventions (`gen_ai.*`), exported as
//! OTLP/HTTP JSON when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set. Nothing is built when neither is: tracing costs nothing when it is off.

use flowrt_executor::{LineResult, NodeRun, NodeStatus};
use flowrt_flow::{Flow, NodeKind};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where spans go.
#[derive(Clone)]
pub struct Exporter {
    url: String,
    http: reqwest::Client,
    service: String,
}

impl Exporter {
    /// From the standard OpenTelemetry variables; `None` when tracing is off.
    pub fn from_env(service: &str) -> Option<Exporter> {
        let url = match std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Ok(u) if !u.trim().is_empty() => u.trim().to_string(),
            _ => {
                let base = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
                let base = base.trim().trim_end_matches('/');
                if base.is_empty() {
                    return None;
                }
                format!("{base}/v1/traces")
            }
        };
        Some(Exporter {
            url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
            service: service.to_string(),
        })
    }

    /// Send spans in one OTLP request. A collector that is down costs a warning, never a line.
    pub async fn export(&self, spans: Vec<Value>) {
        if spans.is_empty() {
            return;
        }
        let body = json!({"resourceSpans": [{
            "resource": {"attributes": [attr("service.name", json!(self.service))]},
            "scopeSpans": [{"scope": {"name": "flowrt", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
        }]});
        match self.http.post(&self.url).json(&body).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => eprintln!(
                "warning: the trace collector at {} answered {}",
                self.url,
                r.status()
            ),
            Err(e) => eprintln!("warning: cannot export traces to {}: {e}", self.url),
        }
    }
}

/// An OTLP attribute: `{key, value: {stringValue|intValue|doubleValue|boolValue}}`.
fn attr(key: &str, value: Value) -> Value {
    let v = match value {
        Value::Bool(b) => json!({"boolValue": b}),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({"intValue": n.to_string()}),
        Value::Number(n) => json!({"doubleValue": n.as_f64()}),
        Value::String(s) => json!({"stringValue": s}),
        other => json!({"stringValue": other.to_string()}),
    };
    json!({"key": key, "value": v})
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string()
}

/// A random-enough id of `bytes` bytes, hex: splitmix64 over the time, the process and a counter.
pub fn new_id(bytes: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    let mut state = seed;
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.push_str(&format!("{z:016x}"));
    }
    out.truncate(bytes * 2);
    out
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

fn event(name: &str, payload: &Value, at: SystemTime) -> Value {
    json!({"name": name, "timeUnixNano": nanos(at), "attributes": [attr("payload", json!(payload.to_string()))]})
}

/// The spans of one finished line: the flow span first, then its nodes' spans under it.
pub fn line_spans(flow: &Flow, line: &LineResult, batch_run_id: Option<&str>) -> Vec<Value> {
    let trace_id = new_id(16);
    let root_id = new_id(8);
    let line_run_id = match batch_run_id {
        Some(b) => format!("{b}_{}", line.line_number),
        None => new_id(16),
    };
    let start = line
        .node_runs
        .iter()
        .map(|n| n.start)
        .min()
        .unwrap_or_else(|| SystemTime::now() - line.duration);
    let end = start + line.duration;
    let mut common = vec![
        attr("line_run_id", json!(line_run_id)),
        attr("line_number", json!(line.line_number)),
    ];
    if let Some(b) = batch_run_id {
        common.push(attr("batch_run_id", json!(b)));
    }
    let mut spans = Vec::with_capacity(line.node_runs.len() + 1);
    let (mut prompt, mut completion, mut total) = (0u64, 0u64, 0u64);
    for run in &line.node_runs {
        let span = node_span(flow, run, &trace_id, &root_id, &common);
        let node_id = span["spanId"].as_str().unwrap_or_default().to_string();
        spans.push(span);
        spans.extend(traced_spans(run, &trace_id, &node_id, &common));
        if let Some(u) = &run.usage {
            let (p, c, t) = usage_numbers(u);
            prompt += p;
            completion += c;
            total += t;
        }
    }
    let flow_name = flow
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "flow".into());
    let mut attributes = common.clone();
    attributes.extend([
        attr("span_type", json!("Flow")),
        attr("framework", json!("promptflow")),
        attr("function", json!(flow_name)),
    ]);
    if total > 0 {
        attributes.extend([
            attr("__computed__.cumulative_token_count.prompt", json!(prompt)),
            attr(
                "__computed__.cumulative_token_count.completion",
                json!(completion),
            ),
            attr("__computed__.cumulative_token_count.total", json!(total)),
        ]);
    }
    let outputs = serde_json::to_value(&line.outputs).unwrap_or(Value::Null);
    let inputs = serde_json::to_value(&line.inputs).unwrap_or(Value::Null);
    let mut events = vec![event("promptflow.function.inputs", &inputs, start)];
    if line.error.is_none() {
        events.push(event("promptflow.function.output", &outputs, end));
    }
    let status = match &line.error {
        None => json!({"code": 1}),
        Some(e) => json!({"code": 2, "message": e.to_string()}),
    };
    spans.insert(
        0,
        json!({
            "traceId": trace_id,
            "spanId": root_id,
            "name": flow_name,
            "kind": 1,
            "startTimeUnixNano": nanos(start),
            "endTimeUnixNano": nanos(end),
            "attributes": attributes,
            "events": events,
            "status": status,
        }),
    );
    spans
}

/// The spans `@trace`d Python functions recorded in a node, under the node's span (or under the
/// traced function that called them).
fn traced_spans(run: &NodeRun, trace_id: &str, node_id: &str, common: &[Value]) -> Vec<Value> {
    let at = |v: &Value| {
        let secs = v.as_f64().unwrap_or(0.0).max(0.0);
        UNIX_EPOCH + std::time::Duration::from_secs_f64(secs)
    };
    let ids: std::collections::HashMap<u64, String> = run
        .spans
        .iter()
        .filter_map(|s| s["id"].as_u64())
        .map(|id| (id, new_id(8)))
        .collect();
    run.spans
        .iter()
        .filter_map(|s| {
            let id = ids.get(&s["id"].as_u64()?)?;
            let parent = s["parent"]
                .as_u64()
                .and_then(|p| ids.get(&p))
                .map(String::as_str)
                .unwrap_or(node_id);
            let (start, end) = (at(&s["start"]), at(&s["end"]));
            let name = s["name"].as_str().unwrap_or("function");
            let mut attributes = common.to_vec();
            attributes.extend([
                attr("span_type", json!("Function")),
                attr("function", json!(name)),
                attr("node_name", json!(run.node)),
            ]);
            let mut events = vec![event("promptflow.function.inputs", &s["inputs"], start)];
            let status = match s.get("error").and_then(Value::as_str) {
                Some(e) => json!({"code": 2, "message": e}),
                None => {
                    events.push(event("promptflow.function.output", &s["output"], end));
                    json!({"code": 1})
                }
            };
            Some(json!({
                "traceId": trace_id,
                "spanId": id,
                "parentSpanId": parent,
                "name": name,
                "kind": 1,
                "startTimeUnixNano": nanos(start),
                "endTimeUnixNano": nanos(end),
                "attributes": attributes,
                "events": events,
                "status": status,
            }))
        })
        .collect()
}

fn node_span(flow: &Flow, run: &NodeRun, trace_id: &str, parent: &str, common: &[Value]) -> Value {
    let node = flow.node(&run.node);
    let is_llm = node.is_some_and(|n| matches!(n.kind, NodeKind::Llm | NodeKind::CustomLlm))
        || run.usage.is_some();
    let mut attributes = common.to_vec();
    attributes.extend([
        attr("span_type", json!(if is_llm { "LLM" } else { "Function" })),
        attr("node_name", json!(run.node)),
        attr(
            "function",
            json!(node.map(|n| n.kind.as_str()).unwrap_or("python")),
        ),
    ]);
    if let Some(n) = node {
        if let Some(api) = &n.api {
            attributes.push(attr("gen_ai.operation.name", json!(api)));
        }
        if let Some(flowrt_flow::InputValue::Literal(Value::String(m))) = n
            .inputs
            .get("model")
            .or_else(|| n.inputs.get("deployment_name"))
        {
            attributes.push(attr("gen_ai.request.model", json!(m)));
        }
    }
    if is_llm {
        attributes.push(attr("gen_ai.system", json!("openai")));
    }
    if let Some(u) = &run.usage {
        let (p, c, t) = usage_numbers(u);
        attributes.extend([
            attr("llm.usage.prompt_tokens", json!(p)),
            attr("llm.usage.completion_tokens", json!(c)),
            attr("llm.usage.total_tokens", json!(t)),
            attr("gen_ai.usage.input_tokens", json!(p)),
            attr("gen_ai.usage.output_tokens", json!(c)),
        ]);
    }
    let end = run.start + run.duration;
    let mut events = Vec::new();
    if let Some(o) = &run.output {
        events.push(event("promptflow.function.output", o, end));
    }
    let status = match (&run.status, &run.error) {
        (NodeStatus::Completed | NodeStatus::Bypassed, _) => json!({"code": 1}),
        (_, Some(e)) => json!({"code": 2, "message": format!("{}: {}", e.error_type, e.message)}),
        _ => json!({"code": 2}),
    };
    json!({
        "traceId": trace_id,
        "spanId": new_id(8),
        "parentSpanId": parent,
        "name": run.node,
        "kind": 1,
        "startTimeUnixNano": nanos(run.start),
        "endTimeUnixNano": nanos(end),
        "attributes": attributes,
        "events": events,
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_of_the_asked_length_and_differ() {
        let a = new_id(16);
        let b = new_id(16);
        assert_eq!(a.len(), 32);
        assert_eq!(new_id(8).len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn attributes_keep_their_types() {
        assert_eq!(attr("n", json!(3))["value"], json!({"intValue": "3"}));
        assert_eq!(attr("s", json!("x"))["value"], json!({"stringValue": "x"}));
        assert_eq!(attr("b", json!(true))["value"], json!({"boolValue": true}));
    }
}
