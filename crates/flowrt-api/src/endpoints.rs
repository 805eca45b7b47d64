//! Endpoints and deployments: the request and response bodies of `/api/v1/endpoints` (a named,
//! authenticated scoring URL, the flow versions deployed behind it, their traffic and the trace
//! of every request), typed once for the server, the CLI and the OpenAPI document.

use crate::session::{SessionSize, SessionStatus};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /api/v1/endpoints`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Letters, digits, `-` and `_`; the scoring URL is `/endpoints/NAME/score`.
    pub name: String,
    /// Days each scoring request's record is kept; default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

/// `PATCH /api/v1/endpoints/{name}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    /// Deployment → percent of the requests that name no deployment; the percents add up to
    /// 100 (or the map is empty: no traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, u32>>)]
    pub traffic: Option<IndexMap<String, u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

/// `POST /api/v1/endpoints/{name}/keys`: replace one key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegenerateKey {
    /// `primary` or `secondary`.
    pub key: String,
}

/// An endpoint as the API shows it (never its keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointView {
    pub name: String,
    /// The owner's user name.
    pub owner: String,
    /// `/endpoints/NAME/score`, on this server.
    pub scoring_uri: String,
    #[schema(value_type = std::collections::BTreeMap<String, u32>)]
    pub traffic: IndexMap<String, u32>,
    pub retention_days: u32,
    pub deployments: Vec<DeploymentView>,
    pub created: i64,
    pub updated: i64,
    /// What the caller may do with it (the server still checks every request): clients show
    /// these, and only these, rather than repeating the server's rules.
    #[serde(default)]
    pub actions: Vec<EndpointAction>,
}

/// Something a caller may do with an endpoint, given who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointAction {
    /// Score it with their own token (`POST /endpoints/{name}/score`); anyone holding one of
    /// its keys scores it with that.
    Score,
    /// Change its traffic split and retention (`PATCH /api/v1/endpoints/{name}`).
    Update,
    /// Replace its primary or secondary key.
    RegenerateKeys,
    /// Deploy a flow version behind it (a new deployment).
    Deploy,
    /// Delete it, its deployments and its request records.
    Delete,
}

/// An endpoint's keys, shown once: when it is made or a key is replaced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointKeys {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<String>,
}

/// `POST /api/v1/endpoints`' answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedEndpoint {
    pub endpoint: EndpointView,
    pub keys: EndpointKeys,
}

/// `POST /api/v1/endpoints/{name}/deployments`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    /// Letters, digits, `-` and `_` (`blue`, `green`).
    pub name: String,
    /// A workspace flow version: `NAME@vN` (or `NAME`: its latest version, fixed now).
    pub flow: String,
    /// Instances to start; default 1 (with `min_instances`, at least that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    #[serde(default)]
    pub size: SessionSize,
    /// With `max_instances`: the count follows the load between the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// Concurrent requests an instance should carry before the deployment grows; default 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_concurrency: Option<u32>,
    /// Share of requests whose trace (inputs, outputs, nodes, spans) is kept, 0 to 1; default 1.
    /// Every request is counted either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<f64>,
    /// Keep traces without the requests' inputs and outputs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redact_payloads: bool,
}

/// `PATCH /api/v1/endpoints/{name}/deployments/{deployment}`: what is given changes; a new
/// `flow` rolls the instances over without downtime.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDeployment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redact_payloads: Option<bool>,
}

/// A deployment as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentView {
    pub endpoint: String,
    pub name: String,
    pub owner: String,
    /// `NAME@vN`.
    pub flow: String,
    /// Grows with each move to another flow version.
    pub revision: i64,
    /// Instances wanted now.
    pub instances: u32,
    pub min_instances: u32,
    pub max_instances: u32,
    pub target_concurrency: u32,
    pub size: SessionSize,
    pub sample_rate: f64,
    pub redact_payloads: bool,
    /// `Creating` (no instance serves yet), `Updating` (moving to a new version or count),
    /// `Succeeded` (every wanted instance serves) or `Degraded` (some do not).
    pub status: String,
    /// How many instances answer requests now.
    pub ready: u32,
    /// Why its instances fail to start, while they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Its share of the endpoint's traffic.
    pub traffic: u32,
    pub replicas: Vec<InstanceView>,
    pub created: i64,
    pub updated: i64,
    /// What the caller may do with it (the server still checks every request).
    #[serde(default)]
    pub actions: Vec<DeploymentAction>,
}

/// Something a caller may do with a deployment, given who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentAction {
    /// Change it: another flow version, instances, sampling, redaction.
    Update,
    /// Delete it (the server refuses while it takes traffic beside another deployment).
    Delete,
}

/// One session serving a deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceView {
    pub session_id: String,
    pub revision: i64,
    pub slot: u32,
    pub status: SessionStatus,
    /// This server sends it requests now: its session runs and the routing table the server
    /// scores through holds it. A deployment's `ready` counts these, so a deployment reported
    /// ready answers its next request.
    #[serde(default)]
    pub routed: bool,
    /// Requests it is answering for this server now.
    pub in_flight: u32,
}

/// One scoring request, as a list shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScoreRequestView {
    pub id: String,
    pub deployment: String,
    /// The session that answered.
    pub session_id: String,
    /// Unix ms.
    pub started: i64,
    pub latency_ms: f64,
    /// The HTTP status answered.
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub streamed: bool,
    /// Its trace was kept (the deployment samples it).
    pub sampled: bool,
}

/// One node of a scored line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeTiming {
    pub node: String,
    pub status: String,
    pub duration_ms: f64,
    #[serde(default)]
    pub total_tokens: u64,
}

/// `GET /api/v1/endpoints/{name}/requests/{id}`: a request with its trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScoreRequestDetail {
    #[serde(flatten)]
    pub request: ScoreRequestView,
    /// The flow's inputs (absent when not sampled or redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub outputs: Option<Value>,
    #[serde(default)]
    pub nodes: Vec<NodeTiming>,
    /// Each node's run as a line's record has it (start, duration, status, usage; outputs and
    /// logs unless redacted): what a trace view draws.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub node_runs: Vec<Value>,
    /// Seconds the line took in its instance.
    #[serde(default)]
    pub duration: f64,
    /// The line's spans (OpenTelemetry, as flowrt exports them).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub spans: Vec<Value>,
}

/// One time bucket of an endpoint's dashboard.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatsBucket {
    /// Unix ms the bucket starts at.
    pub start: i64,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub tokens: u64,
}

/// `GET /api/v1/endpoints/{name}/stats`: requests/s, latency percentiles, errors and tokens
/// over time, and over the whole window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointStats {
    pub window_s: u64,
    pub bucket_s: u64,
    pub buckets: Vec<StatsBucket>,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub tokens: u64,
    /// Requests this server answered but could not record (its queue was full).
    #[serde(default)]
    pub dropped: u64,
}

/// The schemas of this module's bodies, by name, for the OpenAPI document.
pub fn schemas() -> Vec<(&'static str, Value)> {
    fn one<T: utoipa::PartialSchema>(name: &'static str) -> (&'static str, Value) {
        (name, serde_json::to_value(T::schema()).unwrap_or_default())
    }
    vec![
        one::<CreateEndpoint>("CreateEndpoint"),
        one::<UpdateEndpoint>("UpdateEndpoint"),
        one::<RegenerateKey>("RegenerateKey"),
        one::<EndpointView>("EndpointView"),
        one::<EndpointAction>("EndpointAction"),
        one::<EndpointKeys>("EndpointKeys"),
        one::<CreatedEndpoint>("CreatedEndpoint"),
        one::<CreateDeployment>("CreateDeployment"),
        one::<UpdateDeployment>("UpdateDeployment"),
        one::<DeploymentView>("DeploymentView"),
        one::<DeploymentAction>("DeploymentAction"),
        one::<InstanceView>("InstanceView"),
        one::<ScoreRequestView>("ScoreRequestView"),
        one::<ScoreRequestDetail>("ScoreRequestDetail"),
        one::<NodeTiming>("NodeTiming"),
        one::<StatsBucket>("StatsBucket"),
        one::<EndpointStats>("EndpointStats"),
    ]
}
