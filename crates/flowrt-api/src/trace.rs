//! A finished span as flowrt's roles pass it on: from the engine to the exporter, from a
//! session's agent to its server (a run's `spans.jsonl`, a line's reply), which keeps it with
//! the run and exports it. The OTLP encoding happens only at the edge, in the exporter.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One span of a line's trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// Absent on a line's flow span, the root of its trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    pub name: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// Strings, integers, floats and booleans (promptflow's attributes and the GenAI ones).
    pub attributes: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<TraceEvent>,
    /// Why the span failed (`Type: message`); absent: it ended well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Something that happened during a span: its inputs, its output, an exception.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    pub name: String,
    pub time_unix_nano: u64,
    pub attributes: Map<String, Value>,
}

/// What a line's spans say of the run it belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceAs {
    /// The flow's name, as the viewer groups its traces (the resource's `collection`).
    pub collection: String,
    /// The batch run (`batch_run_id`); absent for a single test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The run an evaluation reads (`referenced.batch_run_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_run: Option<String>,
}

impl TraceAs {
    /// Overwrite what `span` says of its run with what this says: spans a session recorded are
    /// its code's to write, so the server names their run (and the run an evaluation reads).
    pub fn stamp(&self, span: &mut TraceSpan) {
        for (key, value) in [
            ("batch_run_id", &self.run),
            ("referenced.batch_run_id", &self.base_run),
        ] {
            match value {
                Some(v) => {
                    span.attributes.insert(key.into(), Value::String(v.clone()));
                }
                None => {
                    span.attributes.remove(key);
                }
            }
        }
    }
}

/// One line of a run's `spans.jsonl`: a finished line's spans.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineSpans {
    pub collection: String,
    pub spans: Vec<TraceSpan>,
}

/// Attributes a redacted span keeps (exact keys, or prefixes ending in `.`): what the span is,
/// where it belongs, its model and its token counts. Everything else may carry what went in or
/// out of it (`input.value`, `output.value`, a tool's own attributes) and is dropped.
const KEPT_WHEN_REDACTED: &[&str] = &[
    "span_type",
    "function",
    "node_name",
    "line_run_id",
    "batch_run_id",
    "line_number",
    "framework",
    "endpoint.",
    "openinference.span.kind",
    "referenced.",
    "llm.usage.",
    "llm.token_count.",
    "llm.model_name",
    "__computed__.",
    "gen_ai.system",
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.",
];

impl TraceSpan {
    /// Drop what went in and out of this span, keeping its timing, status, error and tokens:
    /// a deployment that redacts payloads sends its spans on without them. Of its events only
    /// an `exception` is kept (a failure is a status, recorded with the request either way).
    pub fn redact_payloads(&mut self) {
        self.attributes.retain(|key, _| {
            KEPT_WHEN_REDACTED
                .iter()
                .any(|kept| match kept.strip_suffix('.') {
                    Some(_) => key.starts_with(kept),
                    None => key == kept,
                })
        });
        self.events.retain(|event| event.name == "exception");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_redacted_span_keeps_its_shape_status_and_tokens_but_no_payload() {
        let attributes = json!({
            "span_type": "LLM",
            "node_name": "chat",
            "line_run_id": "r1",
            "referenced.batch_run_id": "base",
            "llm.usage.total_tokens": 12,
            "gen_ai.usage.input_tokens": 7,
            "gen_ai.request.model": "gpt-4o",
            "input.value": "{\"question\": \"my card number\"}",
            "output.value": "\"an answer\"",
            "user.secret_attribute": "hunter2",
            "llm.prompt": "my card number",
            "referenced": "not a prefix match",
        });
        let event = |name: &str| TraceEvent {
            name: name.into(),
            time_unix_nano: 1,
            attributes: json!({"payload": "my card number"})
                .as_object()
                .cloned()
                .unwrap(),
        };
        let mut span = TraceSpan {
            name: "chat".into(),
            start_unix_nano: 1,
            end_unix_nano: 2,
            attributes: attributes.as_object().cloned().unwrap(),
            events: vec![
                event("promptflow.function.inputs"),
                event("promptflow.function.output"),
                event("exception"),
            ],
            error: Some("ValueError: bad".into()),
            ..Default::default()
        };
        span.redact_payloads();
        let mut kept: Vec<_> = span.attributes.keys().map(String::as_str).collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            [
                "gen_ai.request.model",
                "gen_ai.usage.input_tokens",
                "line_run_id",
                "llm.usage.total_tokens",
                "node_name",
                "referenced.batch_run_id",
                "span_type"
            ]
        );
        let events: Vec<_> = span.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(events, ["exception"]);
        assert_eq!(span.error.as_deref(), Some("ValueError: bad"));
        assert_eq!((span.start_unix_nano, span.end_unix_nano), (1, 2));
    }
}
