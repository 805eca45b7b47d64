//! The request bodies of the control plane's API, typed once: the server deserializes them, the
//! CLI builds them, and the OpenAPI document's schemas are generated from them.

use crate::session::SessionSize;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/sessions`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSession {
    /// A workspace flow: `NAME` (its latest version) or `NAME@vN`. Never a path.
    pub flow: String,
    #[serde(default)]
    pub size: SessionSize,
    /// Seconds without runs before the session stops; default 3600; 0 never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<u64>,
    /// An identity the session acts as (its feed token unlocks `{private}` package indexes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// `default`, `default@VERSION` or `NAME@vN`; default: the flow's `environment.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// A compute instance of the caller's to run on, instead of serverless compute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<String>,
    /// Share this serverless session with the workspace: every data scientist may see it and
    /// run flows on it (a pipeline's service principal, say); only its owner and admins change it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

/// `PATCH /api/v1/sessions/{id}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditSession {
    /// Takes effect at the next reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SessionSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<u64>,
}

/// `POST /api/v1/sessions/{id}/install`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallRequirements {
    /// The new requirements.txt text (at most 1 MiB); saved as the flow's next version.
    pub requirements: String,
    /// Save only: install at the next start or reset.
    #[serde(default)]
    pub save_only: bool,
}

/// `POST /api/v1/sessions/{id}/test`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestLine {
    /// The flow inputs, an object (missing or null: none).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub inputs: serde_json::Value,
}

/// `POST /api/v1/runs`: a batch or evaluation run in a session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    /// The session to run in; the flow is the session's.
    pub session: String,
    /// The workspace flow (`NAME` or `NAME@vN`) the caller means to run: refused, naming both,
    /// when it is not the session's flow (a session runs its own flow, never another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// Letters, digits, `_`, `-` and `.`; unique in the workspace.
    pub name: String,
    /// The data file's text. Without data, a resumed run reuses its predecessor's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// `jsonl` (default), `csv` or `tsv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_format: Option<String>,
    /// Data uploaded before (`POST /api/v1/data`, `flowrt data push`): `data:sha256:HEX.EXT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_ref: Option<String>,
    /// Flow input → `${data.COLUMN}`, `${run.outputs.NAME}`, `${run.inputs.COLUMN}` or a literal.
    #[serde(default)]
    #[schema(value_type = std::collections::HashMap<String, String>)]
    pub column_mapping: indexmap::IndexMap<String, String>,
    /// The base run of an evaluation (a workspace run of the caller's, whichever session ran it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// `${node.variant_id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Re-run only the lines of this workspace run that did not complete (its mapping, base run
    /// and variant unless given again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<String>,
    /// Seconds a line may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_timeout: Option<f64>,
    /// Lines at once (1 to 1024), in each session the run is spread over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// More sessions (of the same flow) to spread the lines over: the lines are cut into chunks
    /// that each session's server claims and runs; the run's record is in `session`'s folder,
    /// as if it ran there alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_sessions: Vec<String>,
    /// Spread the lines over this many sessions (1 to 64): `session` and as many more started
    /// like it (same flow, environment and size; on Ray, each where Ray finds room), which stop
    /// after 5 idle minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
}

/// `POST /api/v1/users` (admins).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Letters, digits, `_`, `-` and `.`, at most 64.
    pub name: String,
    /// `admin`, `user` or `viewer` (there is one owner).
    pub role: crate::workspace::Role,
    /// A service principal (a pipeline's identity) rather than a person.
    #[serde(default)]
    pub service: bool,
}

/// `POST /api/v1/connections`: create or replace one of the caller's workspace connections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnection {
    /// promptflow's connection YAML (`name`, `type` and the type's fields), at most 64 KiB.
    pub yaml: String,
    /// Let every data scientist's flows use it, not only the caller's.
    #[serde(default)]
    pub shared: bool,
}

/// `POST /api/v1/tokens`: a new API token.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// The user or service principal it acts as (admins); default: the caller.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_user: Option<String>,
    /// Seconds until it is refused; default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
}

/// `POST /api/v1/users/{name}/roles`: grant a role (`roleAssignments/write`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRole {
    /// `admin`, `user` or `viewer` replace the user's role; `access-admin` is held besides it.
    pub role: crate::workspace::Role,
}

/// `POST /api/v1/environments`: publish the next version of a custom environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishEnvironment {
    /// Letters, digits, `_` and `-`; not `default`.
    pub name: String,
    /// Its requirements.txt text.
    pub requirements: String,
    /// `default` (the latest base) or `default@VERSION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// `POST /api/v1/computes`: a compute instance, assigned to one user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCompute {
    pub name: String,
    #[serde(default)]
    pub size: SessionSize,
    /// Assign to this user name (admins only); default: the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `POST /api/v1/identities` (admins).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentity {
    pub name: String,
    /// A private package feed's token, put in for `{private}` in index URLs at install time;
    /// stored encrypted, never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_token: Option<String>,
    /// The hosts the token may be sent to (`feed.example.com`); a `{private}` index URL on any
    /// other host is refused, so a requirements file cannot send the token where it likes.
    #[serde(default)]
    pub feed_hosts: Vec<String>,
    /// A Microsoft Entra ID service principal the identity's sessions sign in with for Azure
    /// endpoints called without a key; its secret stored encrypted, never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra: Option<crate::EntraServicePrincipal>,
}

/// `POST /api/v1/identities/{name}/grants`: let a user start sessions acting as the identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantIdentity {
    /// The user's name.
    pub user: String,
}

/// `POST /api/v1/agents/join`: a Ray session's agent proves it is the job the server submitted.
/// No user token opens this route; the proof is the secret whose hash the job wrote first in
/// its Ray log, sent from the node Ray placed the job on.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentJoin {
    /// The session whose agent this is.
    pub session_id: String,
    /// `IP:PORT` the agent listens on; the IP must be its node's.
    pub addr: String,
    /// 64 hex digits whose SHA-256 the job's log starts with.
    pub secret: String,
    /// 64 hex digits: the bearer token the server will call the agent with.
    pub token: String,
}

impl std::fmt::Debug for AgentJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentJoin")
            .field("session_id", &self.session_id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The schemas of every request body, by name, for the OpenAPI document.
pub fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    fn one<T: utoipa::PartialSchema>(name: &'static str) -> (&'static str, serde_json::Value) {
        (name, serde_json::to_value(T::schema()).unwrap_or_default())
    }
    vec![
        one::<StartSession>("StartSession"),
        one::<EditSession>("EditSession"),
        one::<InstallRequirements>("InstallRequirements"),
        one::<TestLine>("TestLine"),
        one::<CreateRun>("CreateRun"),
        one::<CreateUser>("CreateUser"),
        one::<CreateToken>("CreateToken"),
        one::<CreateConnection>("CreateConnection"),
        one::<AssignRole>("AssignRole"),
        one::<PublishEnvironment>("PublishEnvironment"),
        one::<CreateCompute>("CreateCompute"),
        one::<CreateIdentity>("CreateIdentity"),
        one::<GrantIdentity>("GrantIdentity"),
        one::<crate::EntraServicePrincipal>("EntraServicePrincipal"),
        one::<AgentJoin>("AgentJoin"),
        one::<EditPathSeg>("EditPathSeg"),
        one::<FlowEdit>("FlowEdit"),
        one::<DraftVariant>("DraftVariant"),
        one::<FlowDraft>("FlowDraft"),
        one::<SaveFlow>("SaveFlow"),
        one::<TestDraft>("TestDraft"),
        one::<PartialTest>("PartialTest"),
        one::<SwitchSession>("SwitchSession"),
    ]
}

/// One step of a path into a flow file, from its top: a mapping key (`"inputs"`), a sequence
/// item by position (`2`; the sequence's length appends one), or the item whose `name` is this
/// (`{"name": "summarize"}`: a node).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EditPathSeg {
    Index(usize),
    Key(String),
    Named { name: String },
}

/// A change to one setting of a draft's YAML file (`flow.dag.yaml` unless `file` says), made in
/// its text: every other line stays as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum FlowEdit {
    /// Set a value, creating the mappings on the way.
    Set {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        path: Vec<EditPathSeg>,
        #[schema(value_type = Object)]
        value: serde_json::Value,
    },
    /// Remove a mapping entry or a sequence item.
    Remove {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        path: Vec<EditPathSeg>,
    },
    /// Rename a mapping key in place.
    RenameKey {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        path: Vec<EditPathSeg>,
        to: String,
    },
    /// Rename a node of `flow.dag.yaml`, and every `${node...}` reference to it.
    RenameNode { from: String, to: String },
    /// Add a variant to a node, copied from variant `from` (its default when absent); an llm or
    /// prompt node's copy gets a prompt file of its own (`<stem>__<id>.<ext>`).
    AddVariant {
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    /// Make `variant` the node's default (what runs unless a run names another).
    SetDefaultVariant { node: String, variant: String },
}

/// One variant of one node: what a draft shows and a draft test runs instead of the default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftVariant {
    pub node: String,
    pub id: String,
}

/// `POST /api/v1/flows/{ref}/draft`: a version with changes not yet saved. The answer is the
/// draft's changed files after `edits`, and the flow as it would load (or its problems).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowDraft {
    /// Files changed from the version: path to its whole new text, or null to delete it.
    #[serde(default)]
    #[schema(value_type = std::collections::HashMap<String, Option<String>>)]
    pub files: std::collections::BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub edits: Vec<FlowEdit>,
    /// Also read each node's tool (templates here; python code in `session`, which runs it) and
    /// add the inputs a tool takes that its node lacks, as promptflow's tool-meta generation does.
    #[serde(default)]
    pub validate: bool,
    /// The caller's running session on this flow, where python tools are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Show this variant of its node in `flow` instead of the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<DraftVariant>,
}

/// `POST /api/v1/flows/{name}/versions`: save a draft as the next version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveFlow {
    /// The version the draft started from (`NAME@vN`). Saving under the same name is refused
    /// (409, with the difference) when another version was saved after it.
    pub base: String,
    /// Why: shown in the flow's history.
    pub message: String,
    /// Files changed from `base`: path to its whole new text, or null to delete it.
    #[serde(default)]
    #[schema(value_type = std::collections::HashMap<String, Option<String>>)]
    pub files: std::collections::BTreeMap<String, Option<String>>,
}

/// `POST /api/v1/flows/{ref}/draft/test`: run one line of a draft (not yet saved) in a session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestDraft {
    /// Files changed from the version: path to its whole new text, or null to delete it.
    #[serde(default)]
    #[schema(value_type = std::collections::HashMap<String, Option<String>>)]
    pub files: std::collections::BTreeMap<String, Option<String>>,
    /// The caller's running session to run it in. Its environment is used as it is: a draft
    /// that changes requirements.txt is refused until it is saved and installed.
    pub session: String,
    /// The flow inputs, an object (missing: their defaults).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub inputs: serde_json::Map<String, serde_json::Value>,
    /// Run this variant of its node instead of the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<DraftVariant>,
    /// Run part of the flow only: one node alone, or from a node on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialTest>,
}

/// Part of a flow to test while editing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PartialTest {
    /// One node alone with these inputs (literal values); its output is the line's `output`.
    Node {
        node: String,
        #[schema(value_type = Object)]
        inputs: serde_json::Map<String, serde_json::Value>,
    },
    /// This node and the nodes after it; the nodes before it are not run, and what the kept
    /// nodes read of them is `upstream` (their outputs in the last test, by node name).
    From {
        node: String,
        #[schema(value_type = Object)]
        upstream: serde_json::Map<String, serde_json::Value>,
    },
}

/// `POST /api/v1/sessions/{id}/switch`: run another version of the session's flow from now on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchSession {
    /// `NAME@vN` of the session's flow. Its requirements must be the session's: a version that
    /// changes them is installed with `install` (or a new session) instead.
    pub flow: String,
}
