//! The records the control-plane store keeps, as plain serde structs, and the enums only the store
//! and its callers need (session status, phases and sizes come from [`flowrt_api::session`]).
//! Times are Unix milliseconds.

pub use flowrt_api::workspace::{ComputeKind, ComputeStatus, Role};
use flowrt_api::{PreparingPhase, SessionSize, SessionStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A user of the control plane. The bearer token is never stored, only its sha256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// `u-<12 hex>`.
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Roles held besides `role` (`access-admin`).
    #[serde(default)]
    pub extra_roles: Vec<Role>,
    /// A disabled user's tokens are refused.
    #[serde(default)]
    pub disabled: bool,
    /// A service principal (a pipeline's identity), not a person.
    #[serde(default)]
    pub service: bool,
    pub created: i64,
}

impl User {
    /// Whether any of the user's roles holds `p`.
    pub fn has(&self, p: flowrt_api::workspace::Permission) -> bool {
        std::iter::once(self.role)
            .chain(self.extra_roles.iter().copied())
            .any(|r| r.permissions().contains(&p))
    }
}

/// An API token as kept: never the token itself, only what it is for and whether it still works.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// `t-<12 hex>`: what `token revoke` names.
    pub id: String,
    pub user_id: String,
    pub user: String,
    pub created: i64,
    pub expires: Option<i64>,
    pub revoked: Option<i64>,
}

/// One state-changing request, as the audit log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    /// Unix ms.
    pub at: i64,
    pub user_id: Option<String>,
    pub user: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// A compute instance or a serverless compute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compute {
    pub name: String,
    pub kind: ComputeKind,
    pub size: SessionSize,
    /// The user id it is assigned to.
    pub owner: String,
    pub status: ComputeStatus,
    pub created: i64,
}

/// What a new session is asked to be; [`crate::Store::insert_session`] adds the id, status and times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSession {
    /// The owning user id.
    pub owner: String,
    /// The snapshot folder the session runs (the server's, never a client's path).
    pub flow_dir: String,
    /// The workspace flow it runs, `name@vN`.
    pub flow_ref: Option<String>,
    /// `default@1.1.0`, `myenv@v2`, ...
    pub env_ref: String,
    /// The environment's content key once resolved.
    pub env_key: Option<String>,
    pub base_version: String,
    pub size: SessionSize,
    /// 0 disables idle shutdown.
    pub idle_timeout_s: u64,
    pub identity: Option<String>,
    pub compute: Option<String>,
    /// Shared with the workspace: every data scientist may see it and run flows on it.
    pub shared: bool,
}

/// A compute session as the server keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// `s-<12 hex>`.
    pub id: String,
    pub owner: String,
    /// The snapshot folder the session runs (the server's, never a client's path).
    pub flow_dir: String,
    /// The workspace flow it runs, `name@vN`.
    pub flow_ref: Option<String>,
    pub env_ref: String,
    pub env_key: Option<String>,
    pub base_version: String,
    pub size: SessionSize,
    pub idle_timeout_s: u64,
    pub identity: Option<String>,
    pub compute: Option<String>,
    /// Shared with the workspace (see [`NewSession::shared`]).
    #[serde(default)]
    pub shared: bool,
    pub status: SessionStatus,
    /// Set while `Preparing`.
    pub phase: Option<PreparingPhase>,
    /// Why it failed or stopped.
    pub reason: Option<String>,
    /// The last lines of its log, kept for `Failed` sessions.
    pub log_tail: Option<String>,
    pub agent_pid: Option<u32>,
    /// `127.0.0.1:PORT` of its agent.
    pub agent_addr: Option<String>,
    pub created: i64,
    pub last_activity: i64,
    pub updated: i64,
    /// The server managing it (its lifecycle and agent), and until when (Unix ms) its lease
    /// holds; `None` on a session no server has claimed.
    #[serde(default)]
    pub manager: Option<String>,
    #[serde(default)]
    pub manager_lease: Option<i64>,
}

/// A flow version in the workspace: `name@v<version>`, naming a content-addressed snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub name: String,
    pub version: u32,
    /// `sha256:<hex>` of the snapshot's files.
    pub hash: String,
    /// The flow file inside the snapshot when it is not the folder itself (a `.prompty`).
    pub entry: Option<String>,
    /// The user id that pushed it.
    pub owner: String,
    pub files: u64,
    pub bytes: u64,
    pub created: i64,
    /// Why this version was made, when its author said (a save in the browser always does).
    pub message: Option<String>,
}

/// A new flow version to record ([`crate::Store::save_flow`]).
#[derive(Clone, Debug)]
pub struct NewFlowVersion<'a> {
    pub name: &'a str,
    pub owner: &'a str,
    pub hash: &'a str,
    pub entry: Option<&'a str>,
    pub files: u64,
    pub bytes: u64,
    pub message: Option<&'a str>,
    /// Record it only if the latest version is still this one (0: the flow has none): a save
    /// made from an older version is refused rather than silently winning.
    pub expect_latest: Option<u32>,
}

/// What [`crate::Store::save_flow`] did.
#[derive(Clone, Debug)]
pub enum FlowSaved {
    Created(FlowRecord),
    /// The latest version already holds these files: nothing was recorded.
    Unchanged(FlowRecord),
    /// Someone saved another version since `expect_latest`: this one is the latest now.
    Stale(Option<FlowRecord>),
}

impl FlowRecord {
    /// `name@vN`.
    pub fn reference(&self) -> String {
        format!("{}@v{}", self.name, self.version)
    }
}

/// A published custom environment `name@v<version>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentRecord {
    pub name: String,
    /// 1, 2, ... (`v1`, `v2`).
    pub version: u32,
    /// The user id that published it (`None`: published on the server's machine by its owner).
    pub owner: Option<String>,
    /// The base environment version it builds on (`1.1.0`).
    pub base_version: String,
    /// Its requirements file, as published.
    pub requirements: String,
    pub created: i64,
}

impl EnvironmentRecord {
    /// `name@vN`.
    pub fn reference(&self) -> String {
        format!("{}@v{}", self.name, self.version)
    }
}

/// Whom a session acts as. The feed token is never in this record in plain text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub name: String,
    /// The owning user id.
    pub owner: String,
    /// [`crate::MASK`] when a feed token is stored, `None` otherwise.
    pub feed_token: Option<String>,
    /// The hosts its feed token may be sent to (in `{private}` index URLs).
    pub feed_hosts: Vec<String>,
    /// Its Entra ID service principal's application id, when it has one.
    pub entra_client_id: Option<String>,
    /// The ids of the users besides its owner who may start sessions acting as it.
    pub granted: Vec<String>,
    pub created: i64,
}

/// An interactive test or a batch run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Test,
    Batch,
}

/// Where a run is in its life. `Queued` and `Running` are unfinished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl RunStatus {
    /// `Completed`, `Failed` or `Canceled`.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Canceled
        )
    }
}

/// A run sent to a session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub session_id: String,
    pub kind: RunKind,
    pub status: RunStatus,
    /// What was asked (flow, inputs, data, ...), as the API received it.
    pub request: Value,
    /// What came out, once finished.
    pub result: Option<Value>,
    pub created: i64,
    pub finished: Option<i64>,
}

// What clients see of each record: the API's response types, built here so that a field added
// to a record is a decision about whether clients see it.

impl From<&User> for flowrt_api::responses::UserView {
    fn from(u: &User) -> Self {
        flowrt_api::responses::UserView {
            id: u.id.clone(),
            name: u.name.clone(),
            role: u.role,
            extra_roles: u.extra_roles.clone(),
            disabled: u.disabled,
            service: u.service,
            created: u.created,
        }
    }
}

impl From<&Compute> for flowrt_api::responses::ComputeView {
    fn from(c: &Compute) -> Self {
        flowrt_api::responses::ComputeView {
            name: c.name.clone(),
            kind: c.kind,
            size: c.size,
            owner: c.owner.clone(),
            status: c.status,
            created: c.created,
        }
    }
}

impl From<&Identity> for flowrt_api::responses::IdentityView {
    fn from(i: &Identity) -> Self {
        flowrt_api::responses::IdentityView {
            name: i.name.clone(),
            owner: i.owner.clone(),
            feed_token: i.feed_token.clone(),
            feed_hosts: i.feed_hosts.clone(),
            entra_client_id: i.entra_client_id.clone(),
            granted: i.granted.clone(),
            created: i.created,
        }
    }
}

impl From<&EnvironmentRecord> for flowrt_api::responses::CustomEnvironment {
    fn from(e: &EnvironmentRecord) -> Self {
        flowrt_api::responses::CustomEnvironment {
            name: e.name.clone(),
            version: e.version,
            base_version: e.base_version.clone(),
            requirements: e.requirements.clone(),
            created: e.created,
        }
    }
}

impl From<&FlowRecord> for flowrt_api::responses::FlowVersion {
    fn from(r: &FlowRecord) -> Self {
        flowrt_api::responses::FlowVersion {
            name: r.name.clone(),
            version: r.version,
            reference: r.reference(),
            hash: r.hash.clone(),
            entry: r.entry.clone(),
            owner: r.owner.clone(),
            files: r.files,
            bytes: r.bytes,
            created: r.created,
            message: r.message.clone(),
        }
    }
}

/// Whose a workspace connection is, and whether the workspace may use it. Its fields and sealed
/// secrets are in the owner's connection folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// The owning user id.
    pub owner: String,
    pub name: String,
    /// `open_ai`, `azure_open_ai`, `custom`, ...
    pub kind: String,
    /// Every data scientist's flows may use it, not only its owner's.
    pub shared: bool,
    pub created: i64,
}
