//! The response bodies of the control plane's API, typed once: the server builds them, and the
//! OpenAPI document's response schemas are generated from them, so the two cannot drift.
//!
//! Records the server passes through from a session's run folder (a run's line records, its
//! metrics, a single-line test's result) are open objects: their schemas name the fields flowrt
//! writes, and further fields (a flow's own outputs) are allowed.

use crate::session::{PreparingPhase, SessionSize, SessionStatus};
use crate::workspace::{ComputeKind, ComputeStatus, Role};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the server answers.
    pub status: String,
}

/// A user (`GET /api/v1/me`, `GET /api/v1/users`). Tokens are never part of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    /// `u-<12 hex>`.
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Roles held besides `role` (`access-admin`).
    pub extra_roles: Vec<Role>,
    /// A disabled user's requests get 401.
    pub disabled: bool,
    /// A service principal (a pipeline's identity), not a person.
    pub service: bool,
    /// Unix milliseconds.
    pub created: i64,
}

/// `GET /api/v1/me`: the calling user, and what they may start in the workspace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CallerView {
    #[serde(flatten)]
    pub user: UserView,
    /// What the caller may create now (the server still checks every request): clients offer
    /// these, and only these, rather than deciding from the caller's roles.
    #[serde(default)]
    pub actions: Vec<WorkspaceAction>,
}

/// Something a caller may start in the workspace, given their roles and the server's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceAction {
    /// Start a compute session (`POST /api/v1/sessions`).
    StartSession,
    /// Run lines and submit batch runs in sessions they may use (`POST /api/v1/runs`).
    SubmitRun,
    /// Create an endpoint (`POST /api/v1/endpoints`).
    CreateEndpoint,
    /// Deploy a flow version behind an endpoint of theirs (a new one, or one they manage).
    Deploy,
    /// Manage the team: users, their roles, compute instances and identities (`/api/v1/users`).
    ManageTeam,
}

/// A workspace connection, its secrets masked: they are never returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionView {
    pub name: String,
    /// `open_ai`, `azure_open_ai`, `custom`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The name of the user it belongs to.
    pub owner: String,
    /// Every data scientist's flows may use it.
    pub shared: bool,
    /// Its plain fields (endpoints, API versions, a custom connection's configs).
    pub configs: BTreeMap<String, String>,
    /// Each secret field, as `******`.
    pub secrets: BTreeMap<String, String>,
    /// Unix milliseconds.
    pub created: i64,
}

/// `GET /api/v1/limits`: what the server bounds, as a page tells its users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Limits {
    /// An interactive (single-line) test fails after this many seconds.
    pub interactive_timeout_s: f64,
}

/// `GET /api/v1/sessions/{id}/requirements`: a session's requirements file, as saved in the
/// snapshot it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Requirements {
    /// The file's path inside the flow (`requirements.txt` unless the flow names another).
    pub path: String,
    /// Its text; empty when the flow has none.
    pub text: String,
    /// The flow version it was read from (`name@vN`).
    pub flow_ref: Option<String>,
}

/// An API token's record; the token itself is shown once, when created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// `t-<12 hex>`.
    pub id: String,
    /// The name of the user it acts as.
    pub user: String,
    /// Unix milliseconds.
    pub created: i64,
    /// Unix milliseconds after which it is refused.
    pub expires: Option<i64>,
    /// Unix milliseconds when it was revoked.
    pub revoked: Option<i64>,
}

/// `POST /api/v1/tokens`: the token, shown this once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub record: TokenView,
    pub token: String,
}

/// One state-changing request of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// The caller's name (none: the request had no valid token).
    pub user: Option<String>,
    pub method: String,
    pub path: String,
    /// The answer's HTTP status.
    pub status: u16,
}

/// `POST /api/v1/users`: the new user and its token, shown this once (only its hash is kept).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedUser {
    pub user: UserView,
    pub token: String,
}

/// A version of the built-in base environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BaseEnvironment {
    /// Always `default`.
    pub name: String,
    pub version: String,
    /// `default@VERSION`.
    pub reference: String,
    /// The Python it asks for.
    pub python: String,
    /// Whether it is the newest base version.
    pub latest: bool,
    /// The packages it gives every flow (with their pinned dependencies).
    #[serde(default)]
    pub packages: Vec<String>,
}

/// A published custom environment `name@vN`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CustomEnvironment {
    pub name: String,
    pub version: u32,
    /// The base environment version it builds on.
    pub base_version: String,
    /// Its requirements file, as published.
    pub requirements: String,
    /// Unix milliseconds.
    pub created: i64,
}

/// `GET /api/v1/environments`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Environments {
    pub base: Vec<BaseEnvironment>,
    pub custom: Vec<CustomEnvironment>,
}

/// `POST /api/v1/environments`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PublishedEnvironment {
    pub name: String,
    pub version: u32,
    /// `name@vN`.
    pub reference: String,
    pub base_version: String,
}

/// A compute instance (or serverless compute).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComputeView {
    pub name: String,
    pub kind: ComputeKind,
    pub size: SessionSize,
    /// The id of the user it is assigned to.
    pub owner: String,
    pub status: ComputeStatus,
    /// Unix milliseconds.
    pub created: i64,
}

/// An identity sessions may act as. Its feed token is never returned, only whether one is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IdentityView {
    pub name: String,
    /// The id of the user that created it.
    pub owner: String,
    /// A mask (`******`) when a feed token is stored.
    pub feed_token: Option<String>,
    /// The hosts its token may be sent to: `{private}` index URLs on other hosts are refused.
    pub feed_hosts: Vec<String>,
    /// The application (client) id of its Microsoft Entra ID service principal, when it has one
    /// (its secret is never returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra_client_id: Option<String>,
    /// The ids of the users besides its owner who may start sessions acting as it.
    pub granted: Vec<String>,
    /// Unix milliseconds.
    pub created: i64,
}

/// A compute session as clients see it. Where its agent listens and its process id are not
/// part of it: with them, code in one session could look for another's agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// `s-<12 hex>`.
    pub id: String,
    /// The id of the user that started it.
    pub owner: String,
    /// The workspace flow it runs, `name@vN`.
    pub flow_ref: Option<String>,
    /// `default@VERSION` or `NAME@vN`.
    pub env_ref: String,
    /// The environment's content key once resolved.
    pub env_key: Option<String>,
    pub base_version: String,
    pub size: SessionSize,
    /// Seconds without runs before it stops; 0: never.
    pub idle_timeout_s: u64,
    pub identity: Option<String>,
    /// The compute instance it runs on; none: serverless.
    pub compute: Option<String>,
    /// Shared with the workspace: every data scientist may see it and run flows on it.
    pub shared: bool,
    pub status: SessionStatus,
    /// Set while `Preparing`.
    pub phase: Option<PreparingPhase>,
    /// Why it failed or stopped.
    pub reason: Option<String>,
    /// The last lines of its log, kept for `Failed` sessions.
    pub log_tail: Option<String>,
    /// Unix milliseconds.
    pub created: i64,
    /// Unix milliseconds of the last test or run.
    pub last_activity: i64,
    /// Unix milliseconds of the last change.
    pub updated: i64,
    /// The newest base version, when the session runs an older one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_available: Option<String>,
    /// What the request changed that is not visible yet (a size applies at the next reset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What the caller may do with it now: clients show these actions, and only these, rather
    /// than repeating the server's rules (the server still checks every request).
    #[serde(default)]
    pub actions: Vec<SessionAction>,
}

/// Something a caller may do with a session, given its status and who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionAction {
    /// Run lines and batches on it (it is running, and theirs or shared).
    Test,
    /// Stop it (running or preparing).
    Stop,
    /// Recreate its agent (start it again when stopped or failed).
    Reset,
    /// Move it to the newest base environment.
    Update,
    /// Change its size or idle timeout, install requirements.
    Edit,
    /// Switch it to another version of its flow without a restart (running).
    Switch,
    /// Stop it and forget it.
    Delete,
}

/// Where an installed package came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PackageOrigin {
    /// The interpreter or base environment (including dependencies of requirements).
    Base,
    /// Named by the flow's or the custom environment's requirements.
    Requirements,
}

/// One installed package of a session's environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PackageView {
    pub name: String,
    pub version: String,
    pub source: PackageOrigin,
}

/// A piece of a log from a byte offset: poll again from `offset` to follow it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogChunk {
    pub text: String,
    /// Where the next call goes on.
    pub offset: u64,
    /// The session's (or run's) status when read.
    pub status: String,
}

/// A single-line test's result, as the session's agent returns it (`POST /lines` of the agent
/// protocol, passed through by the server).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LineResult {
    /// The flow's outputs by name (`null` when the line failed).
    #[schema(value_type = Object)]
    pub outputs: Value,
    /// Why the line failed, when it did.
    #[serde(default)]
    pub error: Option<LineFailure>,
    /// Each node's run: its status, timing and output.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub node_runs: Value,
    /// Seconds the line took.
    #[serde(default)]
    pub duration: f64,
    /// A prompty or flex flow returned a value other than a dict: `outputs` is
    /// `{"output": value}`, and the value itself is the flow's result.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bare_output: bool,
    /// A flex entry returned a dataclass: Python's `repr()` of it (`outputs` holds its fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_repr: Option<String>,
    /// The line's spans, from an agent asked for them; its server exports them and answers
    /// clients without them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(ignore)]
    pub spans: Vec<crate::trace::TraceSpan>,
}

/// The error of a failed line: the node it failed in and the tool's error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LineFailure {
    pub node: Option<String>,
    /// `ValueError`, `ToolLoadError`, `LlmError`, ...
    pub error_type: String,
    pub message: String,
    /// The Python traceback, where one was asked for and there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
    /// The whole error as one text, as `flowrt flow test` prints it.
    pub display: String,
}

/// A flow version in the workspace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowVersion {
    pub name: String,
    pub version: u32,
    /// `name@vN`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// `sha256:<hex>` of its files.
    pub hash: String,
    /// The flow file inside the snapshot when it is not the folder itself (a `.prompty`).
    pub entry: Option<String>,
    /// The id of the user that pushed it.
    pub owner: String,
    pub files: u64,
    pub bytes: u64,
    /// Unix milliseconds.
    pub created: i64,
    /// Why this version was made, when its author said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /api/v1/flows/{name}`: the version the push made, or the existing one it matched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PushedFlow {
    #[serde(flatten)]
    pub flow: FlowVersion,
    /// The snapshot matched the latest version: nothing new was stored.
    pub unchanged: bool,
}

/// A flow input as a UI draws it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowInputView {
    /// `string`, `int`, `double`, `bool`, `list`, `object`, ...
    #[serde(rename = "type")]
    pub ty: String,
    pub default: Option<Value>,
    pub is_chat_input: bool,
    pub is_chat_history: bool,
}

/// A flow output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowOutputView {
    /// `${node.output}` or `${inputs.name}`.
    pub reference: String,
    #[serde(rename = "type")]
    pub ty: Option<String>,
    pub is_chat_output: bool,
}

/// A node's `activate` condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActivateView {
    pub when: String,
    pub is: Value,
}

/// A node of a DAG flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowNodeView {
    pub name: String,
    /// `python`, `llm`, `prompt`, ...
    #[serde(rename = "type")]
    pub ty: String,
    /// Its source file, or a package tool's name.
    pub source: Option<String>,
    pub connection: Option<String>,
    pub api: Option<String>,
    pub aggregation: bool,
    pub variant: Option<String>,
    pub activate: Option<ActivateView>,
    /// Each input's reference (`${...}`) or literal value.
    pub inputs: BTreeMap<String, Value>,
}

/// An edge of the graph: from `inputs` or a node, to a node or `outputs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowEdge {
    pub from: String,
    pub to: String,
    /// The node input it feeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The flow output it feeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// It is the node's activate condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activate: Option<bool>,
}

/// `GET /api/v1/flows/{name}`: a version and its graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowDetail {
    #[serde(flatten)]
    pub flow: FlowVersion,
    pub inputs: BTreeMap<String, FlowInputView>,
    pub outputs: BTreeMap<String, FlowOutputView>,
    pub nodes: Vec<FlowNodeView>,
    pub edges: Vec<FlowEdge>,
    /// What the caller may do with this flow now (the server still checks every request).
    #[serde(default)]
    pub actions: Vec<FlowAction>,
}

/// Something a caller may do with a workspace flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlowAction {
    /// Edit it and save its next version (it is theirs, or they are an admin).
    Edit,
    /// Deploy a version behind an endpoint.
    Deploy,
    /// Start a compute session on a version of it.
    StartSession,
}

/// `GET /api/v1/flows/{ref}/files`: the files of a version, by path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowFiles {
    pub flow: FlowVersion,
    pub files: Vec<FlowFileEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowFileEntry {
    /// Relative to the flow folder, `/`-separated.
    pub path: String,
    pub bytes: u64,
}

/// `GET /api/v1/flows/{ref}/files/{path}`: one file's text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowFileContent {
    pub path: String,
    pub bytes: u64,
    /// The file's text; null when it is not UTF-8 text or is larger than an editor opens (1 MiB).
    pub text: Option<String>,
}

/// Something wrong with a draft, where it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DraftProblem {
    /// The file it is in (`flow.dag.yaml`, a template, ...).
    pub file: String,
    /// 1-based, when known.
    pub line: Option<usize>,
    pub message: String,
}

/// `POST /api/v1/flows/{ref}/draft`: the draft's changed files after its edits, and the flow
/// as it loads (null with `problems` when it does not).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DraftView {
    #[schema(value_type = std::collections::HashMap<String, Option<String>>)]
    pub files: BTreeMap<String, Option<String>>,
    pub flow: Option<FlowDetail>,
    pub problems: Vec<DraftProblem>,
    /// With `validate`: each node's tool as read from its code (in the session) or template, by
    /// node name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, ToolMeta>,
    /// With `validate`: the inputs added to nodes because their tool takes them, as `node.input`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added_inputs: Vec<String>,
    /// The nodes that have variants: their default and every variant's id, in order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<String, NodeVariants>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeVariants {
    pub default: String,
    pub ids: Vec<String>,
}

/// A tool's inputs as its code or template declares them (promptflow's tool meta), or why it
/// could not be read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolMeta {
    /// The tool's file, relative to the flow folder.
    pub path: String,
    /// The `@tool` function (or `Class.method`), for code tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// By parameter (or template variable), in the order declared.
    #[serde(default)]
    #[schema(value_type = std::collections::HashMap<String, ToolInputMeta>)]
    pub inputs: indexmap::IndexMap<String, ToolInputMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DraftProblem>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolInputMeta {
    /// promptflow's value types (`string`, `int`, `double`, `bool`, `list`, `object`, `image`),
    /// or the connection classes the parameter takes.
    #[serde(rename = "type")]
    pub types: Vec<String>,
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub default: Option<Value>,
}

/// `GET /api/v1/sessions/{id}/tools`: the tools the session's installed packages declare, as
/// a node's `source: {type: package, tool: ID}` names them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PackageTools {
    pub tools: Vec<PackageTool>,
    /// Packages whose list could not be read, and why.
    #[serde(default)]
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PackageTool {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `python`, `llm` or `custom_llm`, as the package says.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    #[schema(value_type = std::collections::HashMap<String, ToolInputMeta>)]
    pub inputs: indexmap::IndexMap<String, ToolInputMeta>,
}

/// `GET /api/v1/flows/{name}/compare`: what changed from one version to another, file by file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowComparison {
    pub from: FlowVersion,
    pub to: FlowVersion,
    /// The files that differ (unchanged ones are left out).
    pub files: Vec<FileDiff>,
}

/// One file's difference: `added`, `removed` or `changed`, with its changed lines in context.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileDiff {
    pub path: String,
    pub status: String,
    /// Empty when either side is not text.
    pub hunks: Vec<DiffHunk>,
}

/// Consecutive changed lines with up to three unchanged lines around them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiffHunk {
    /// 1-based first line of the hunk in the older file, and in the newer.
    pub from_line: usize,
    pub to_line: usize,
    pub lines: Vec<DiffLine>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiffLine {
    /// ` ` unchanged, `-` only in the older file, `+` only in the newer.
    pub op: String,
    pub text: String,
}

/// 409 from `POST /api/v1/flows/{name}/versions`: another version was saved after the draft's
/// base. `changes` is what that save changed (base to latest), to merge by hand or save under
/// another name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SaveConflict {
    /// `FlowChanged`.
    pub code: crate::ErrorCode,
    pub message: String,
    pub latest: FlowVersion,
    pub changes: Vec<FileDiff>,
}

/// `POST /api/v1/data`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UploadedData {
    /// `data:sha256:HEX.EXT`: what a run's `data_ref` names.
    #[serde(rename = "ref")]
    pub reference: String,
    /// `jsonl`, `csv` or `tsv`.
    pub format: String,
    pub lines: usize,
    pub bytes: usize,
    /// It was uploaded before: nothing new was stored.
    pub unchanged: bool,
}

/// `GET /api/v1/data/{reference}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DataInfo {
    #[serde(rename = "ref")]
    pub reference: String,
    pub format: String,
    pub bytes: u64,
}

/// `POST /api/v1/runs`: the run was handed to its session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunStarted {
    pub name: String,
    pub session: String,
}

/// A batch or evaluation run: a workspace record, whichever session executed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    pub name: String,
    /// The session that executes (or executed) it; the run outlives it.
    pub session: String,
    /// The workspace flow it runs (`NAME@vN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// `Running`, `Completed`, `Failed` or `Canceled`.
    pub status: String,
    /// The run an evaluation reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_run: Option<String>,
    /// The run whose unfinished lines this one re-runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// A flex class entry's constructor kwargs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub column_mapping: BTreeMap<String, String>,
    /// RFC 3339.
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    pub duration_s: f64,
    pub total_lines: usize,
    pub completed_lines: usize,
    pub failed_lines: usize,
    pub concurrency: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the caller may do with it now (the server still checks every request).
    #[serde(default)]
    pub actions: Vec<RunAction>,
}

/// Something a caller may do with a workspace run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunAction {
    /// Stop it: it is running, and theirs.
    Cancel,
    /// Re-run its unfinished or failed lines in its session (which still runs, and they may
    /// use).
    Resume,
    /// Archive or restore it.
    Archive,
    /// Delete its record and files.
    Delete,
    /// Deploy the flow version it ran behind an endpoint.
    Deploy,
}

/// A `progress` event of `GET /api/v1/runs/{name}/events`: how far the run is, sent as its lines
/// are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunProgress {
    /// Lines finished, completed or failed.
    pub done: u64,
    pub failed: u64,
    pub total: u64,
    pub lines_per_second: f64,
    /// Seconds left: from a quota's pace when one paces the run's model calls, else from the rate.
    pub eta_seconds: Option<f64>,
    /// The quota pacing the run's model calls, when one does.
    #[serde(default)]
    pub quota: Option<QuotaProgress>,
}

/// The quota that paces a run's model calls (answers of 429 with `Retry-After`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaProgress {
    pub endpoint: String,
    pub requests_per_second: f64,
    pub calls_per_line: f64,
    pub wait_per_call_seconds: f64,
}

/// One line's record (`line_runs.jsonl`): inputs, outputs, error and node runs. The engine
/// writes it, the server stores and pages it, the UI shows it: one type throughout. Open: fields
/// a record of another version carries come along.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LineRecord {
    pub line_number: u64,
    /// `Completed` or `Failed`.
    pub status: String,
    #[schema(value_type = Object)]
    pub inputs: Value,
    /// The flow's outputs (a completed line; `null` for a failed one), as the engine writes them.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub outputs: Option<Value>,
    /// Why the line failed: `{node, error_type, message, traceback}` (`node` is `null` when the
    /// line failed before a node ran: its mapping or inputs).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// Seconds the line took.
    #[serde(default)]
    pub duration: f64,
    /// The line's node runs, in the order they ended: name, status, inputs, output, timings,
    /// token counts.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub nodes: Vec<Value>,
    /// What the line gives the flow's aggregation nodes (absent when they take nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub aggregation_inputs: Option<Value>,
    #[serde(flatten)]
    #[schema(ignore)]
    pub more: serde_json::Map<String, Value>,
}

impl LineRecord {
    pub const COMPLETED: &'static str = "Completed";
    pub const FAILED: &'static str = "Failed";

    pub fn completed(&self) -> bool {
        self.status == Self::COMPLETED
    }

    /// The error's message, when the line failed.
    pub fn error_message(&self) -> &str {
        self.error
            .as_ref()
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// `GET /api/v1/runs/{name}/lines`: a page of line records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LinePage {
    /// How many lines match the filter.
    pub total: usize,
    pub offset: usize,
    pub lines: Vec<LineRecord>,
}

/// `POST /api/v1/runs/{name}/cancel`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CancelingRun {
    pub name: String,
    pub session: String,
    /// `Canceling`: lines in flight finish or stop; the rest do not start.
    pub status: String,
    pub hint: String,
}

/// `POST /api/v1/agents/join`, once the agent is verified: the connections its flow uses, with
/// their secrets (they never pass through Ray), and the flow itself with what its environment is
/// built from: a Ray node shares no disk with its server.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentJoined {
    #[schema(value_type = Vec<Object>)]
    pub connections: Vec<crate::Connection>,
    /// The session identity's Entra ID service principal, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra: Option<crate::EntraServicePrincipal>,
    pub flow: AgentFlow,
}

/// A session's flow as its agent receives it: the snapshot and the environment's recipe. The
/// agent unpacks the one and builds the other on its own node's disk.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentFlow {
    /// The snapshot's files as a gzip-compressed tar, base64-encoded.
    pub archive_base64: String,
    /// The snapshot's content hash (`sha256:...`), which the agent checks after unpacking.
    pub hash: String,
    /// A prompty flow: its file inside the snapshot.
    pub entry: Option<String>,
    /// The session owner's name: environments are cached per owner on a node, so one user's
    /// build scripts never write into what another user's sessions run.
    pub owner: String,
    /// The base environment version (`1.0.0`).
    pub base_version: String,
    /// A custom environment's requirements, merged before the flow's, and how to name them.
    pub extra_requirements: Option<String>,
    pub extra_label: String,
    /// The session identity's feed token for `{private}` index URLs, and the hosts it may go to.
    pub private_token: Option<String>,
    pub private_hosts: Vec<String>,
}

impl std::fmt::Debug for AgentFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentFlow")
            .field("hash", &self.hash)
            .field("entry", &self.entry)
            .field("owner", &self.owner)
            .field("base_version", &self.base_version)
            .finish_non_exhaustive()
    }
}

/// The schemas of every response body, by name, for the OpenAPI document.
pub fn schemas() -> Vec<(&'static str, Value)> {
    fn one<T: utoipa::PartialSchema>(name: &'static str) -> (&'static str, Value) {
        (name, serde_json::to_value(T::schema()).unwrap_or_default())
    }
    vec![
        one::<Health>("Health"),
        one::<FlowFiles>("FlowFiles"),
        one::<FlowFileEntry>("FlowFileEntry"),
        one::<FlowFileContent>("FlowFileContent"),
        one::<DraftProblem>("DraftProblem"),
        one::<DraftView>("DraftView"),
        one::<ToolMeta>("ToolMeta"),
        one::<NodeVariants>("NodeVariants"),
        one::<PackageTools>("PackageTools"),
        one::<PackageTool>("PackageTool"),
        one::<ToolInputMeta>("ToolInputMeta"),
        one::<FlowComparison>("FlowComparison"),
        one::<FileDiff>("FileDiff"),
        one::<DiffHunk>("DiffHunk"),
        one::<DiffLine>("DiffLine"),
        one::<SaveConflict>("SaveConflict"),
        one::<AgentJoined>("AgentJoined"),
        one::<AgentFlow>("AgentFlow"),
        one::<UserView>("UserView"),
        one::<CallerView>("CallerView"),
        one::<WorkspaceAction>("WorkspaceAction"),
        one::<TokenView>("TokenView"),
        one::<Limits>("Limits"),
        one::<Requirements>("Requirements"),
        one::<ConnectionView>("ConnectionView"),
        one::<CreatedToken>("CreatedToken"),
        one::<AuditView>("AuditView"),
        one::<crate::workspace::Permission>("Permission"),
        one::<CreatedUser>("CreatedUser"),
        one::<BaseEnvironment>("BaseEnvironment"),
        one::<CustomEnvironment>("CustomEnvironment"),
        one::<Environments>("Environments"),
        one::<PublishedEnvironment>("PublishedEnvironment"),
        one::<ComputeView>("ComputeView"),
        one::<IdentityView>("IdentityView"),
        one::<SessionView>("SessionView"),
        one::<SessionAction>("SessionAction"),
        one::<PackageOrigin>("PackageOrigin"),
        one::<PackageView>("PackageView"),
        one::<LogChunk>("LogChunk"),
        one::<LineResult>("LineResult"),
        one::<LineFailure>("LineFailure"),
        one::<FlowVersion>("FlowVersion"),
        one::<PushedFlow>("PushedFlow"),
        one::<FlowInputView>("FlowInputView"),
        one::<FlowOutputView>("FlowOutputView"),
        one::<ActivateView>("ActivateView"),
        one::<FlowNodeView>("FlowNodeView"),
        one::<FlowEdge>("FlowEdge"),
        one::<FlowDetail>("FlowDetail"),
        one::<FlowAction>("FlowAction"),
        one::<UploadedData>("UploadedData"),
        one::<DataInfo>("DataInfo"),
        one::<RunStarted>("RunStarted"),
        one::<RunView>("RunView"),
        one::<RunAction>("RunAction"),
        one::<LineRecord>("LineRecord"),
        one::<LinePage>("LinePage"),
        one::<CancelingRun>("CancelingRun"),
        one::<Role>("Role"),
        one::<ComputeKind>("ComputeKind"),
        one::<ComputeStatus>("ComputeStatus"),
        one::<SessionStatus>("SessionStatus"),
        one::<PreparingPhase>("PreparingPhase"),
        one::<SessionSize>("SessionSize"),
    ]
}
