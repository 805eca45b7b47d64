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
