//! The session manager: drives each compute session through the lifecycle state machine
//! ([`crate::lifecycle`]), builds its environment, starts its agent through the local backend (or
//! as a Ray job that joins the server), watches it (a crash turns the session `Failed` with the
//! reason and the log tail), stops idle sessions, forwards interactive tests to the agent under
//! the request timeout, re-adopts agents that outlived a server restart and takes over the
//! sessions of servers whose leases ended. It meets the API only through the store and its
//! callers: the HTTP routes live in `flowrt-server`, which maps [`ManageError`] to responses.

use crate::backend::{self, describe_exit, log_tail};
use crate::{client, idle, AgentHandle, AgentSpec, Event, LocalBackend, State as Life};
use base64::Engine as _;
use flowrt_api::responses::AgentFlow;
use flowrt_api::{Connection, SessionStatus};
use flowrt_python::{EnvOptions, EnvRef, EnvRequest, ExtraRequirements};
use flowrt_store::{ConnectionStore, Session, Store};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a session operation did not happen, as the API answers it.
#[derive(Debug)]
pub struct ManageError {
    pub kind: ErrorKind,
    pub message: String,
}

/// The kinds of [`ManageError`], each an HTTP status in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Forbidden,
    NotFound,
    Conflict,
    /// A failure of flowrt itself: the details are in the server log, not in the message.
    Internal,
}

pub type ManageResult<T> = Result<T, ManageError>;

impl ManageError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ManageError {
            kind,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    /// A failure of flowrt itself: the details go to the server log, not to the client.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        eprintln!("error: {context}: {err}");
        Self::new(
            ErrorKind::Internal,
            format!("{context} failed; see the server log"),
        )
    }
}

impl std::fmt::Display for ManageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<flowrt_store::StoreError> for ManageError {
    fn from(e: flowrt_store::StoreError) -> Self {
        use flowrt_store::StoreError as E;
        match e {
            E::Exists { .. } => ManageError::conflict(e.to_string()),
            E::NotFound { .. } => ManageError::not_found(e.to_string()),
            E::InvalidName { .. } | E::BadValue { .. } | E::NulInText { .. } => {
                ManageError::bad_request(e.to_string())
            }
            other => ManageError::internal("the store", other),
        }
    }
}

/// Now, in Unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Live agents and the machinery to start and stop them.
pub struct Manager {
    store: Store,
    home: PathBuf,
    exe: PathBuf,
    backend: LocalBackend,
    agents: Mutex<HashMap<String, AgentHandle>>,
    /// Serializes lifecycle operations per session.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub long_running_interval: f64,
    /// Whether agents are sealed (the kernel enforces Landlock here).
    pub seal: bool,
    /// The id of every session whose state just changed, for the event streams.
    pub changes: tokio::sync::broadcast::Sender<String>,
    /// This server's name in session leases, and how long they hold.
    server_id: String,
    lease: Duration,
    /// Where sessions run when not on this machine: a Ray cluster.
    pub ray: Option<Arc<crate::ray::RayBackend>>,
    /// The URL Ray sessions' agents dial to join this server.
    pub join_url: String,
    /// Agents started on Ray that have not joined yet, by session.
    joins: Mutex<HashMap<String, PendingJoin>>,
    /// Joins checked at once (each asks Ray a few things).
    pub join_checks: tokio::sync::Semaphore,
    /// Ports of the Ray cluster's control plane besides those it reports (`--ray-control-ports`).
    pub ray_control_ports: Vec<u16>,
    /// User ids sessions run as (`--session-uids`), and which session holds which.
    pub session_uids: Option<std::ops::RangeInclusive<u32>>,
    uids: Mutex<HashMap<String, u32>>,
    /// The workspace's files (flow snapshots, connections), cached in `home`.
    pub blobs: flowrt_store::Blobs,
}

/// A Ray session's agent this server waits for.
struct PendingJoin {
    /// The Ray job it runs as: the agent proves itself through this job's log.
    job: String,
    /// What it receives when it joins: its flow's connections, and the flow with its
    /// environment's recipe.
    connections: backend::SecretText,
    flow: AgentFlow,
    joined: tokio::sync::oneshot::Sender<Joined>,
}

/// How long a joined Ray agent may take to build its environment on its node and load its flow.
const RAY_PREPARE_LIMIT: Duration = Duration::from_secs(30 * 60);

/// A verified agent: where it listens and the token it is called with.
struct Joined {
    addr: String,
    token: String,
}

/// Why a join is refused. The caller hears only that it was refused; the server's log says why.
#[derive(Debug, thiserror::Error)]
pub enum JoinRefused {
    #[error("no session is waiting for its agent")]
    NotPending,
    #[error("its job wrote no join commitment, or another one")]
    Commitment,
    #[error("it did not come from the node Ray placed its job on ({0})")]
    WrongNode(String),
    #[error("Ray could not say where the job runs: {0}")]
    Ray(String),
}

/// The file in a Ray session's folder naming its job.
const RAY_JOB_FILE: &str = "ray.job";

impl Manager {
    pub fn new(
        store: Store,
        home: PathBuf,
        exe: PathBuf,
        server_id: String,
        lease: Duration,
        blobs: flowrt_store::Blobs,
    ) -> Arc<Self> {
        Arc::new(Manager {
            blobs,
            store,
            home,
            exe,
            server_id,
            lease,
            ray: None,
            join_url: String::new(),
            joins: Mutex::new(HashMap::new()),
            join_checks: tokio::sync::Semaphore::new(8),
            ray_control_ports: Vec::new(),
            session_uids: None,
            uids: Mutex::new(HashMap::new()),
            backend: LocalBackend,
            agents: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            long_running_interval: 60.0,
            seal: crate::seal::probe() != crate::seal::SealStatus::None,
            changes: tokio::sync::broadcast::channel(1024).0,
        })
    }

    /// Where this server has the flow snapshot a session's record names (`flow_dir`, a path in
    /// the home of the server that started it): in this server's own home, fetched from the
    /// workspace's files when another server stored it.
    pub async fn local_flow_dir(&self, stored: &str) -> ManageResult<PathBuf> {
        let not_a_snapshot = || {
            ManageError::internal(
                "finding the session's flow",
                format!("{stored} is not a flow snapshot"),
            )
        };
        let here =
            flowrt_store::blobs::rebase(&self.home, std::path::Path::new(stored), "snapshots")
                .ok_or_else(not_a_snapshot)?;
        let root = self.home.join("snapshots");
        let snapshot = here
            .strip_prefix(&root)
            .ok()
            .and_then(|rel| rel.components().next())
            .map(|hash| root.join(hash))
            .ok_or_else(not_a_snapshot)?;
        self.blobs
            .fetch_tree(&snapshot)
            .await
            .map_err(|e| ManageError::internal("fetching the session's flow", e))?;
        Ok(here)
    }

    /// The user session `id` runs as: the one it holds, else a free one of the range, starting
    /// from a place its id picks (so ids spread over the range). `None` without `--session-uids`.
    fn uid_for(&self, id: &str) -> ManageResult<Option<u32>> {
        let Some(range) = &self.session_uids else {
            return Ok(None);
        };
        let mut uids = self.uids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(uid) = uids.get(id) {
            return Ok(Some(*uid));
        }
        let (start, len) = (*range.start(), u64::from(range.end() - range.start()) + 1);
        let taken: std::collections::HashSet<u32> = uids.values().copied().collect();
        let first = u64::from_str_radix(&sha256_hex(id)[..12], 16).unwrap_or(0) % len;
        let free = (0..len)
            .map(|i| start + ((first + i) % len) as u32)
            .find(|uid| !taken.contains(uid))
            .ok_or_else(|| {
                ManageError::conflict(format!(
                    "every user id of --session-uids ({} sessions) is held by a session; delete sessions or give the server a wider range",
                    len
                ))
            })?;
        uids.insert(id.to_string(), free);
        Ok(Some(free))
    }

    /// Session `id` (re-adopted) runs as `uid`: no other session is given it.
    fn hold_uid(&self, id: &str, uid: u32) {
        if self.session_uids.as_ref().is_some_and(|r| r.contains(&uid)) {
            self.uids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.to_string(), uid);
        }
    }

    /// Session `id` is gone: its user id is free again.
    pub fn release_uid(&self, id: &str) {
        self.uids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    fn agent(&self, id: &str) -> Option<AgentHandle> {
        self.agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn set_agent(&self, id: &str, handle: Option<AgentHandle>) {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        match handle {
            Some(h) => agents.insert(id.to_string(), h),
            None => agents.remove(id),
        };
    }

    pub fn workdir(&self, id: &str) -> PathBuf {
        self.home.join("sessions").join(id)
    }

    /// The bearer token of session `id`'s agent, as the server keeps it (sealed in the store):
    /// never read back from the session's folder, but for an agent started before the server
    /// kept its agents' tokens (and then without following a link).
    pub async fn agent_token(&self, id: &str) -> String {
        match self.store.agent_token(id).await {
            Ok(Some(token)) => token,
            _ => backend::read_token(&self.workdir(id)),
        }
    }

    /// Apply a lifecycle event and store the result; an impossible event is an error for the caller.
    /// Every status change of a session goes through here.
    async fn transition(&self, id: &str, event: Event) -> ManageResult<Life> {
        self.transition_noted(id, event, None).await
    }

    /// [`Self::transition`], storing `note` as the reason of a state that has none of its own
    /// (why a session stopped).
    async fn transition_noted(
        &self,
        id: &str,
        event: Event,
        note: Option<&str>,
    ) -> ManageResult<Life> {
        let s = self.get(id).await?;
        let now = Life::from_status(s.status, s.phase, s.reason.as_deref());
        let next = now
            .apply(&event)
            .map_err(|e| ManageError::conflict(e.to_string()))?;
        let (status, phase) = next.status();
        let reason = match &next {
            Life::Failed { reason } => Some(reason.as_str()),
            _ => note,
        };
        self.store
            .update_session_status(id, status, phase, reason)
            .await?;
        let _ = self.changes.send(id.to_string());
        Ok(next)
    }

    pub async fn get(&self, id: &str) -> ManageResult<Session> {
        self.store.get_session(id).await?.ok_or_else(|| {
            ManageError::not_found(format!(
                "session '{id}' does not exist; `flowrt session list` shows yours"
            ))
        })
    }

    /// Take a session from NotAvailable/Stopped/Failed to Running. Runs in the background after
    /// `start` returns; every phase is stored as it begins, so `show` and `start` report it.
    pub async fn prepare(self: Arc<Self>, id: String) {
        let lock = self.lock(&id);
        let _guard = lock.lock().await;
        if let Err(e) = self.prepare_locked(&id).await {
            // Only a preparation that began fails the session; a refused start leaves it as it was.
            let preparing = self
                .get(&id)
                .await
                .is_ok_and(|s| s.status == SessionStatus::Preparing);
            if preparing {
                let reason = e.message.clone();
                let _ = self.transition(&id, Event::PrepareFailed { reason }).await;
                let _ = self
                    .store
                    .set_session_log_tail(&id, Some(&log_tail(&self.workdir(&id), 20)))
                    .await;
                // Event streams show the failure and its log tail as it happens, not at the next change.
                let _ = self.changes.send(id.clone());
            }
        }
    }

    /// The other live server managing `s`, if one does (its lease has not ended).
    pub fn managed_elsewhere(&self, s: &Session) -> Option<String> {
        let live = s.manager_lease.is_some_and(|t| t >= now_ms());
        s.manager.clone().filter(|m| live && *m != self.server_id)
    }

    /// Until when a lease taken now holds.
    fn lease_until(&self) -> i64 {
        now_ms() + i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// [`Self::prepare`] under the session's lock: claim the session, resolve (and build) its
    /// environment, and start its agent here or on Ray.
    async fn prepare_locked(self: &Arc<Self>, id: &str) -> ManageResult<()> {
        // The server that prepares a session manages it from then on.
        if !self
            .store
            .claim_session(id, &self.server_id, self.lease_until())
            .await?
        {
            return Err(ManageError::conflict(format!(
                "session '{id}' is managed by another server sharing this database; try again there, or once that server is gone"
            )));
        }
        self.transition(id, Event::StartRequested).await?;
        let s = self.get(id).await?;
        // Resolving: which environment, and is it built?
        let flow_dir = self.local_flow_dir(&s.flow_dir).await?;
        let flow = flowrt_flow::load_flow(&flow_dir, &Default::default()).map_err(|e| {
            ManageError::bad_request(format!("the session's flow no longer loads: {e}"))
        })?;
        let recipe = self.env_recipe(&s).await?;
        let python = self
            .prepare_env(id, &s, &recipe, flow.requirements_file())
            .await?;
        // Starting: the agent process, on its own copy of the flow (a sealed agent reads nothing
        // outside its folder, and a tool writing into its flow folder touches no one else's). A
        // Ray agent receives the snapshot when it joins and unpacks it on its node.
        let workdir = self.workdir(id);
        let run_flow = workdir.join("flow");
        if self.ray.is_none() {
            let (src, dst) = (flow.dir.clone(), run_flow.clone());
            tokio::task::spawn_blocking(move || copy_flow(&src, &dst))
                .await
                .map_err(|e| ManageError::internal("copying the flow", e))?
                .map_err(|e| {
                    ManageError::bad_request(format!("cannot copy the flow into the session: {e}"))
                })?;
        }
        let connections = self.session_secrets(&s, &flow).await?;
        // A prompty flow is a file in its snapshot: the agent loads that file of its copy.
        let entry = flow_dir
            .is_file()
            .then(|| flow_dir.file_name().map(|n| n.to_owned()))
            .flatten();
        let entry_name = entry.as_ref().map(|e| e.to_string_lossy().into_owned());
        let agent_flow = match entry {
            Some(e) => run_flow.join(e),
            None => run_flow,
        };
        let spec = self.agent_spec(id, &s, agent_flow, python, connections)?;
        if spec.uid.is_some() {
            self.open_environment_to_session_users(&spec.python).await?;
        }
        if let Some(ray) = self.ray.clone() {
            let flow = flow_for_ray(&s, &flow.dir, entry_name, recipe).await?;
            return self.start_on_ray(&ray, spec, flow).await;
        }
        self.start_locally(spec).await
    }

    /// The recipe of session `s`'s environment: its base version, its custom environment's
    /// requirements, and its identity's feed token with the hosts the token may go to.
    async fn env_recipe(&self, s: &Session) -> ManageResult<EnvRecipe> {
        let custom = match EnvRef::parse(&s.env_ref) {
            Ok(EnvRef::Custom { name, version }) => {
                self.store.get_environment(&name, version).await?
            }
            _ => None,
        };
        let extra_label = custom
            .as_ref()
            .map(|c| format!("environment {}@v{}", c.name, c.version))
            .unwrap_or_default();
        let (private_token, private_hosts) = match &s.identity {
            Some(identity) => {
                let hosts = self
                    .store
                    .list_identities()
                    .await?
                    .into_iter()
                    .find(|i| &i.name == identity)
                    .map(|i| i.feed_hosts)
                    .unwrap_or_default();
                (
                    self.store.identity_feed_token_for_install(identity).await?,
                    hosts,
                )
            }
            None => (None, Vec::new()),
        };
        Ok(EnvRecipe {
            base_version: s.base_version.clone(),
            extra_requirements: custom.map(|c| c.requirements),
            extra_label,
            private_token,
            private_hosts,
        })
    }

    /// Resolve session `s`'s environment and record it, then build it unless it is built
    /// already (or a Ray node builds it): the interpreter the agent runs.
    async fn prepare_env(
        &self,
        id: &str,
        s: &Session,
        recipe: &EnvRecipe,
        requirements: Option<PathBuf>,
    ) -> ManageResult<PathBuf> {
        let resolved = flowrt_python::resolve_env(
            EnvRequest {
                requirements: requirements.as_deref(),
                flowrt_home: &self.home,
            },
            &recipe.options(None),
        )
        .map_err(|e| ManageError::bad_request(e.to_string()))?;
        // A Ray session's node builds its own environment (it shares no disk with this server).
        let cached = resolved.is_built(&self.home) || self.ray.is_some();
        self.store
            .update_session_env(id, &s.env_ref, resolved.key.as_deref(), &s.base_version)
            .await?;
        self.transition(id, Event::EnvResolved { cached }).await?;
        if self.ray.is_some() {
            // Decided on the node, which builds the environment itself.
            return Ok(resolved.python.clone());
        }
        if cached {
            // Built by an earlier session: its interpreter, with the flow's requirements.
            return Ok(resolved.built_python(&self.home));
        }
        // Installing: uv builds the environment once per key; other sessions keep running.
        let python = self
            .build_env(id, &s.owner, recipe.clone(), requirements)
            .await?;
        self.transition(id, Event::EnvBuilt).await?;
        Ok(python)
    }

    /// Build session `id`'s environment off the async threads, its progress in the session's
    /// log; sealed when sessions are (build scripts are user code), with uv's cache of the
    /// session's owner alone.
    async fn build_env(
        &self,
        id: &str,
        owner: &str,
        recipe: EnvRecipe,
        requirements: Option<PathBuf>,
    ) -> ManageResult<PathBuf> {
        let workdir = self.workdir(id);
        let _ = std::fs::create_dir_all(&workdir);
        let home = self.home.clone();
        // Sealed sessions' installs are sealed too: build scripts are user code.
        let seal_installs = self.seal;
        let exe = self.exe.clone();
        // uv's cache for this owner's installs alone (see flowrt_python::Sandbox).
        let install_cache = home.join("uv-cache").join(owner);
        let built = tokio::task::spawn_blocking(move || {
            let opts = recipe.options(seal_installs.then_some(flowrt_python::Sandbox {
                exe: &exe,
                cache: &install_cache,
                deny_connect_ports: &[],
            }));
            let mut log = crate::session_files::append(&workdir, "agent.log").ok();
            flowrt_python::ensure_env_with(
                EnvRequest {
                    requirements: requirements.as_deref(),
                    flowrt_home: &home,
                },
                &opts,
                &mut |m| {
                    if let Some(f) = log.as_mut() {
                        use std::io::Write;
                        let _ = writeln!(f, "{}", without_home(m, &home));
                    }
                },
            )
        })
        .await
        .map_err(|e| ManageError::internal("building the environment", e))?;
        built.map_err(|e| ManageError::bad_request(without_home(&e.to_string(), &self.home)))
    }

    /// What session `s` receives over its agent's stdin, decrypted: the connections its flow
    /// names that its owner may use, and its identity's Entra ID service principal. Nothing
    /// else of the store reaches a session.
    async fn session_secrets(
        &self,
        s: &Session,
        flow: &flowrt_flow::Flow,
    ) -> ManageResult<backend::SecretText> {
        // The server's connections were made on its machine by its owner (`flowrt connection
        // create` with this FLOWRT_HOME): they are the owner's, and reach only the owner's
        // sessions. Another user's flow naming one gets none: its node says the connection does
        // not exist rather than handing the owner's secret to someone else's code.
        let owners_session = self
            .store
            .list_users()
            .await?
            .iter()
            .any(|u| u.id == s.owner && u.role == flowrt_store::Role::Owner);
        // Of the connections the flow names, only those its owner may use reach the session,
        // decrypted, over the agent's stdin: nothing else of the store does.
        let used = connections_for_session(
            &self.store,
            &self.blobs,
            &self.home,
            &s.owner,
            owners_session,
            &flow.connection_candidates().into_iter().collect::<Vec<_>>(),
        )
        .await?;
        // The identity's Entra ID service principal goes the same way, to the agent alone.
        let entra = match &s.identity {
            Some(identity) => self.store.identity_entra_for_session(identity).await?,
            None => None,
        };
        let secrets = flowrt_api::agent::SessionSecrets {
            connections: used,
            entra,
        };
        serde_json::to_string(&secrets)
            .map(backend::SecretText)
            .map_err(|e| ManageError::internal("handing over connections", e))
    }

    /// How session `id`'s agent is started: its flow, interpreter, folder and connections, and
    /// the user it runs as (a local session, with `--session-uids`).
    fn agent_spec(
        &self,
        id: &str,
        s: &Session,
        flow_dir: PathBuf,
        python: PathBuf,
        connections: backend::SecretText,
    ) -> ManageResult<AgentSpec> {
        Ok(AgentSpec {
            session_id: id.to_string(),
            flow_dir,
            python,
            workdir: self.workdir(id),
            size: s.size,
            exe: self.exe.clone(),
            long_running_interval: self.long_running_interval,
            connections,
            seal: self.seal,
            // A backstop for an agent whose server is gone: well after the server would have
            // stopped it.
            idle_exit_s: if s.idle_timeout_s == 0 {
                0.0
            } else {
                (s.idle_timeout_s as f64) * 2.0 + 60.0
            },
            uid: match self.ray {
                Some(_) => None,
                None => self.uid_for(id)?,
            },
        })
    }

    /// Let the users sessions run as read and run the environment of `python`.
    async fn open_environment_to_session_users(
        &self,
        python: &std::path::Path,
    ) -> ManageResult<()> {
        let (home, python) = (self.home.clone(), python.to_path_buf());
        tokio::task::spawn_blocking(move || open_to_session_users(&home, &python))
            .await
            .map_err(|e| ManageError::internal("opening the environment to the session", e))?
            .map_err(|e| ManageError::internal("opening the environment to the session", e))
    }

    /// Start the session's agent on this machine and record where it listens; then watch the
    /// process: an exit nobody asked for fails the session with the reason.
    async fn start_locally(self: &Arc<Self>, spec: AgentSpec) -> ManageResult<()> {
        let id = spec.session_id.as_str();
        let (handle, mut child) = self
            .backend
            .start(&spec, Duration::from_secs(60))
            .await
            .map_err(|e| ManageError::bad_request(e.to_string()))?;
        self.store.set_agent_token(id, Some(&handle.token)).await?;
        self.store
            .update_session_agent(id, Some(handle.pid), Some(&handle.addr))
            .await?;
        self.set_agent(id, Some(handle.clone()));
        self.store.touch_session(id).await?;
        self.transition(id, Event::AgentReady).await?;
        // Watch the process: an exit nobody asked for fails the session with the reason.
        let me = self.clone();
        let sid = id.to_string();
        tokio::spawn(async move {
            let status = child.wait().await;
            let reason = status
                .map(|s| describe_exit(&s))
                .unwrap_or_else(|e| format!("lost: {e}"));
            me.agent_exited(&sid, handle.pid, reason).await;
        });
        Ok(())
    }

    /// Start the session's agent as a Ray job and wait until it has joined and answers. Ray's
    /// own reason fails the start when the job does not run (no node with room, a lost node).
    async fn start_on_ray(
        self: &Arc<Self>,
        ray: &crate::ray::RayBackend,
        spec: AgentSpec,
        flow: AgentFlow,
    ) -> ManageResult<()> {
        let id = spec.session_id.clone();
        let wd = spec.workdir.clone();
        std::fs::create_dir_all(&wd)
            .map_err(|e| ManageError::internal("preparing the session", e))?;
        // No token file for a Ray agent: it draws its token and hands it over when it joins.
        let _ = std::fs::remove_file(wd.join(backend::TOKEN_FILE));
        let control_ports = ray
            .control_ports(&self.ray_control_ports)
            .await
            .map_err(|e| ManageError::bad_request(e.to_string()))?;
        let job = format!("flowrt-{id}-{}", now_ms());
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.joins.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id.clone(),
            PendingJoin {
                job: job.clone(),
                connections: spec.connections.clone(),
                flow,
                joined: tx,
            },
        );
        if let Err(e) = ray
            .submit(&spec, &self.join_url, &job, &control_ports)
            .await
        {
            self.joins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(ManageError::bad_request(e.to_string()));
        }
        let _ = crate::session_files::replace(&wd, RAY_JOB_FILE, &job);
        let started = std::time::Instant::now();
        let Joined { addr, token } = loop {
            tokio::select! {
                joined = &mut rx => match joined {
                    Ok(joined) => break joined,
                    // Stopped or deleted while it waited.
                    Err(_) => {
                        ray.stop(&job).await;
                        return Err(ManageError::conflict("the session was stopped before its agent joined"));
                    }
                },
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    let state = ray.state(&job).await.ok();
                    let failed = state.as_ref().filter(|s| s.is_terminal());
                    if failed.is_some() || started.elapsed() > Duration::from_secs(180) {
                        self.joins.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                        ray.stop(&job).await;
                        // Ray's message holds the end of the job's log, where an agent that
                        // stops says why.
                        return Err(ManageError::bad_request(format!(
                            "the session's Ray job {job} {}",
                            match failed {
                                Some(s) => format!("is {}: {}", s.status, s.message),
                                None => "did not join within 180 s".into(),
                            },
                        )));
                    }
                }
            }
        };
        self.store.set_agent_token(&id, Some(&token)).await?;
        // Joined: it answers once its node has built its environment and loaded its flow. An
        // install may take a while; a job that ends meanwhile says why in Ray's message.
        let joined_at = std::time::Instant::now();
        let mut last_look = joined_at;
        let failed = loop {
            if backend::health(&addr, &token, &id).await.is_some() {
                break None;
            }
            if joined_at.elapsed() > RAY_PREPARE_LIMIT {
                break Some(format!(
                    "joined from {addr} but was not ready within {} minutes",
                    RAY_PREPARE_LIMIT.as_secs() / 60
                ));
            }
            if last_look.elapsed() > Duration::from_secs(1) {
                last_look = std::time::Instant::now();
                if let Ok(state) = ray.state(&job).await {
                    if state.is_terminal() {
                        break Some(format!(
                            "joined from {addr}, then its Ray job {job} became {}: {}",
                            state.status, state.message
                        ));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Some(why) = failed {
            ray.stop(&job).await;
            return Err(ManageError::bad_request(format!(
                "the session's agent {why}"
            )));
        }
        // Ray agents have no process of this machine's: pid 0 says so.
        self.store
            .update_session_agent(&id, Some(0), Some(&addr))
            .await?;
        self.set_agent(
            &id,
            Some(AgentHandle {
                pid: 0,
                addr,
                token,
            }),
        );
        self.store.touch_session(&id).await?;
        self.transition(&id, Event::AgentReady).await?;
        self.watch_ray_job(id, job);
        Ok(())
    }

    /// Follow a Ray session's job: when Ray says it ended (its node lost, stopped), the session
    /// fails with Ray's reason.
    fn watch_ray_job(self: &Arc<Self>, id: String, job: String) {
        let (me, Some(ray)) = (self.clone(), self.ray.clone()) else {
            return;
        };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let current =
                    crate::session_files::read_small(&me.workdir(&id), RAY_JOB_FILE, 1024)
                        .unwrap_or_default();
                if current.trim() != job {
                    return; // the session was reset: another job is watched
                }
                match ray.state(&job).await {
                    Ok(state) if state.is_terminal() => {
                        let reason =
                            format!("Ray job {job} is {}: {}", state.status, state.message);
                        me.agent_exited(&id, 0, reason).await;
                        return;
                    }
                    _ => {}
                }
            }
        });
    }

    /// A Ray session's agent dials in from `peer`. It is the job this server submitted when the
    /// first line of that job's log is the SHA-256 of `req.secret` (a reader of Ray's job list
    /// sees only the hash), and when it calls from, and listens on, the node Ray placed the job
    /// on. Only then is the join spent: the agent's address and token go to the waiting start,
    /// and its connections are returned.
    pub async fn complete_join(
        &self,
        req: &flowrt_api::requests::AgentJoin,
        addr: std::net::SocketAddr,
        peer: std::net::IpAddr,
    ) -> Result<(backend::SecretText, AgentFlow), JoinRefused> {
        let ray = self.ray.as_ref().ok_or(JoinRefused::NotPending)?;
        let job = self
            .joins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&req.session_id)
            .map(|p| p.job.clone())
            .ok_or(JoinRefused::NotPending)?;
        let ray_err = |e: crate::backend::BackendError| JoinRefused::Ray(e.to_string());
        // Where Ray placed the job, first: a caller elsewhere (or a job not running yet) is
        // refused at once, so no false join makes the checks below wait. The job runs before
        // its agent can call; Ray may take a moment to say so.
        let mut node = None;
        for _ in 0..5 {
            node = ray.state(&job).await.map_err(ray_err)?.node;
            if node.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let node =
            node.ok_or_else(|| JoinRefused::Ray(format!("job {job} runs on no node yet")))?;
        let ip = ray
            .nodes()
            .await
            .map_err(ray_err)?
            .into_iter()
            .find(|n| n.id == node)
            .map(|n| n.ip)
            .ok_or_else(|| JoinRefused::Ray(format!("node {node} is not in the cluster")))?;
        if peer != ip || addr.ip() != ip {
            return Err(JoinRefused::WrongNode(format!(
                "called from {peer}, listens on {}, node {node} is {ip}",
                addr.ip()
            )));
        }
        // The agent wrote its commitment before it called; Ray may take a moment to show it.
        let mut commitment = None;
        for _ in 0..10 {
            commitment = ray.join_commitment(&job).await.map_err(ray_err)?;
            if commitment.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let Some(commitment) = commitment else {
            return Err(JoinRefused::Commitment);
        };
        if !constant_time_eq(commitment.as_bytes(), sha256_hex(&req.secret).as_bytes()) {
            return Err(JoinRefused::Commitment);
        }
        let mut joins = self.joins.lock().unwrap_or_else(|p| p.into_inner());
        // Still this job's join (not a reset's newer one), spent now.
        if joins.get(&req.session_id).map(|p| p.job.as_str()) != Some(job.as_str()) {
            return Err(JoinRefused::NotPending);
        }
        let pending = joins
            .remove(&req.session_id)
            .ok_or(JoinRefused::NotPending)?;
        let _ = pending.joined.send(Joined {
            addr: addr.to_string(),
            token: req.token.clone(),
        });
        Ok((pending.connections, pending.flow))
    }

    /// The agent with `pid` ended: a Running session fails; a Stopping one is stopped.
    async fn agent_exited(&self, id: &str, pid: u32, reason: String) {
        // Whatever the session's state, the process is gone: what it started (batch runs,
        // workers) goes too, then its cgroups.
        self.backend.kill_group(pid);
        self.backend.release(id);
        if self.agent(id).is_some_and(|h| h.pid == pid) {
            self.set_agent(id, None);
        }
        let Ok(s) = self.get(id).await else { return };
        if s.agent_pid != Some(pid) {
            return; // an older agent of a session that was reset
        }
        let tail = log_tail(&self.workdir(id), 20);
        if s.status == SessionStatus::Running {
            let reason = format!("the agent {reason}");
            let _ = self.transition(id, Event::AgentExited { reason }).await;
            let _ = self.store.set_session_log_tail(id, Some(&tail)).await;
            // Again, now with the tail: a watcher sees what the agent said before it died.
            let _ = self.changes.send(id.to_string());
        }
        let _ = self.store.update_session_agent(id, None, None).await;
    }

    /// Stop a session (by hand or for idleness).
    pub async fn stop(&self, id: &str, why: Event) -> ManageResult<()> {
        // A Ray session waiting for its agent (a job Ray has not placed yet) holds its lock while
        // it waits: end the wait first, and the start gives up (stopping the job).
        self.joins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        let s = self.get(id).await?;
        // Why it stopped, when it was not asked to.
        let note = matches!(why, Event::IdleTimeout)
            .then(|| format!("stopped after {} s idle", s.idle_timeout_s));
        let next = self.transition(id, why).await?;
        if next == Life::Stopped {
            return Ok(()); // a failed session settles without an agent
        }
        if let (Some(pid), Some(addr)) = (s.agent_pid, s.agent_addr.clone()) {
            let handle = AgentHandle {
                pid,
                addr,
                token: self.agent_token(id).await,
            };
            match (&self.ray, pid) {
                (Some(ray), 0) => {
                    backend::ask_to_stop(&handle).await;
                    if let Ok(job) =
                        crate::session_files::read_small(&self.workdir(id), RAY_JOB_FILE, 1024)
                    {
                        ray.stop(job.trim()).await;
                    }
                }
                _ => self.backend.stop(&handle).await,
            }
        }
        self.set_agent(id, None);
        self.store.update_session_agent(id, None, None).await?;
        self.transition_noted(id, Event::AgentStopped, note.as_deref())
            .await?;
        Ok(())
    }

    /// Stop idle sessions. Called periodically.
    pub async fn cull_idle(&self) {
        let Ok(sessions) = self.store.list_sessions(None).await else {
            return;
        };
        // Each server stops the idle sessions it manages (not those of another server).
        for s in sessions.into_iter().filter(|s| {
            s.status == SessionStatus::Running && s.manager.as_deref() == Some(&*self.server_id)
        }) {
            let Some(addr) = s.agent_addr.clone() else {
                continue;
            };
            let token = self.agent_token(&s.id).await;
            let Ok(st) = client::status(&addr, &token).await else {
                continue;
            };
            let idle_for = Duration::from_secs_f64(st.idle_seconds.max(0.0));
            let running = st.running;
            if idle::should_stop(Duration::from_secs(s.idle_timeout_s), idle_for, running) {
                let _ = self.stop(&s.id, Event::IdleTimeout).await;
            }
        }
    }

    /// After a server restart: keep agents that still answer for their session, fail the rest,
    /// and resume sessions that were preparing.
    pub async fn adopt(self: &Arc<Self>) {
        self.backend.sweep();
        let Ok(sessions) = self.store.list_sessions(None).await else {
            return;
        };
        for s in sessions {
            self.adopt_one(s, "the server restarted").await;
        }
    }

    /// Take over the sessions of servers whose leases ended (they died): their agents outlive
    /// them, so they are adopted as a restarted server adopts its own.
    pub async fn take_over_orphans(self: &Arc<Self>) {
        let Ok(sessions) = self.store.list_sessions(None).await else {
            return;
        };
        let now = now_ms();
        for s in sessions {
            let orphaned = s.manager.is_some()
                && s.manager.as_deref() != Some(&*self.server_id)
                && s.manager_lease.is_some_and(|t| t < now)
                && matches!(
                    s.status,
                    SessionStatus::Running | SessionStatus::Stopping | SessionStatus::Preparing
                );
            if orphaned {
                let why = format!(
                    "server '{}', which managed it, let its lease end",
                    s.manager.as_deref().unwrap_or("")
                );
                eprintln!("taking over session {}: {why}", s.id);
                self.adopt_one(s, &why).await;
            }
        }
    }

    /// Manage session `s` if no other live server does, taking back its agent if it still runs;
    /// `why` this server takes it (said in the session's status when it cannot).
    async fn adopt_one(self: &Arc<Self>, s: Session, why: &str) {
        let lifecycle = matches!(
            s.status,
            SessionStatus::Running | SessionStatus::Stopping | SessionStatus::Preparing
        );
        if !lifecycle {
            return;
        }
        match self
            .store
            .claim_session(&s.id, &self.server_id, self.lease_until())
            .await
        {
            Ok(true) => {}
            _ => return, // another live server manages it
        }
        {
            match s.status {
                SessionStatus::Running | SessionStatus::Stopping => {
                    let alive = match (&s.agent_addr, s.agent_pid) {
                        // A Ray session's agent (pid 0) is not this machine's: it answers, or not.
                        (Some(addr), Some(0)) => {
                            let token = self.agent_token(&s.id).await;
                            backend::health(addr, &token, &s.id).await.is_some()
                        }
                        (Some(addr), Some(pid)) if backend::is_alive(pid) => {
                            let token = self.agent_token(&s.id).await;
                            backend::health(addr, &token, &s.id).await.is_some()
                        }
                        _ => false,
                    };
                    if alive {
                        // Its user is the owner of its folder.
                        if let Ok(meta) = std::fs::symlink_metadata(self.workdir(&s.id)) {
                            use std::os::unix::fs::MetadataExt;
                            self.hold_uid(&s.id, meta.uid());
                        }
                        let handle = AgentHandle {
                            pid: s.agent_pid.unwrap_or(0),
                            addr: s.agent_addr.clone().unwrap_or_default(),
                            token: self.agent_token(&s.id).await,
                        };
                        self.set_agent(&s.id, Some(handle.clone()));
                        eprintln!(
                            "re-adopted the agent of session {} (pid {})",
                            s.id, handle.pid
                        );
                        let me = self.clone();
                        let id = s.id.clone();
                        if handle.pid == 0 {
                            // On Ray: Ray says when its job ends.
                            if let Ok(job) = crate::session_files::read_small(
                                &self.workdir(&id),
                                RAY_JOB_FILE,
                                1024,
                            ) {
                                self.watch_ray_job(id, job.trim().to_string());
                            }
                            return;
                        }
                        // Not our child any more: poll the pid.
                        tokio::spawn(async move {
                            while backend::is_alive(handle.pid) {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                            me.agent_exited(&id, handle.pid, "ended".into()).await;
                        });
                    } else {
                        let reason = format!(
                            "its agent was gone when {why}; `flowrt session reset` starts it again"
                        );
                        let _ = self.transition(&s.id, Event::AgentExited { reason }).await;
                        let _ = self.store.update_session_agent(&s.id, None, None).await;
                    }
                }
                SessionStatus::Preparing => {
                    let _ = self
                        .transition_noted(
                            &s.id,
                            Event::PrepareInterrupted,
                            Some(&format!("{why}; preparing it again")),
                        )
                        .await;
                    tokio::spawn(self.clone().prepare(s.id.clone()));
                }
                _ => {}
            }
        }
    }
}

/// `text` with the server's home folder left out (paths under it become relative): what an
/// environment build says reaches the session's log and its user.
/// What a session's environment is built from: the base version, a custom environment's
/// requirements (and how its installs name them), and the session identity's feed token for
/// `{private}` index URLs with the hosts it may go to.
#[derive(Clone)]
struct EnvRecipe {
    base_version: String,
    extra_requirements: Option<String>,
    extra_label: String,
    private_token: Option<String>,
    private_hosts: Vec<String>,
}

impl EnvRecipe {
    /// The recipe as `flowrt_python` takes it, installing in `sandbox` when given.
    fn options<'a>(&'a self, sandbox: Option<flowrt_python::Sandbox<'a>>) -> EnvOptions<'a> {
        EnvOptions {
            base_version: Some(self.base_version.as_str()),
            extra_requirements: self
                .extra_requirements
                .as_deref()
                .map(|text| ExtraRequirements {
                    label: &self.extra_label,
                    text,
                }),
            private_token: self.private_token.as_deref(),
            private_hosts: &self.private_hosts,
            sandbox,
            base_cache: None,
        }
    }
}

/// What a Ray session's agent receives when it joins: the flow folder `src` packed, its entry
/// (a prompty flow's file), and the recipe of the environment its node builds.
async fn flow_for_ray(
    s: &Session,
    src: &std::path::Path,
    entry: Option<String>,
    recipe: EnvRecipe,
) -> ManageResult<AgentFlow> {
    let src = src.to_path_buf();
    let archive = tokio::task::spawn_blocking(move || {
        flowrt_store::snapshot::pack(&src, &flowrt_store::snapshot::SnapshotLimits::default())
    })
    .await
    .map_err(|e| ManageError::internal("packing the flow", e))?
    .map_err(|e| ManageError::bad_request(format!("cannot pack the session's flow: {e}")))?;
    Ok(AgentFlow {
        archive_base64: base64::engine::general_purpose::STANDARD.encode(&archive.0),
        hash: archive.1.hash,
        entry,
        owner: s.owner.clone(),
        base_version: recipe.base_version,
        extra_requirements: recipe.extra_requirements,
        extra_label: recipe.extra_label,
        private_token: recipe.private_token,
        private_hosts: recipe.private_hosts,
    })
}

/// What a session running as a user of its own must reach of the server's folder, which is
/// otherwise the server user's alone: a way through FLOWRT_HOME and `sessions/` to its own
/// folder (0711: passable, not listable), and its environment under `envs/`, readable and
/// runnable by everyone (an environment holds packages, no secret; its feed token is used at
/// install time only). Nothing else of the folder opens.
fn open_to_session_users(home: &std::path::Path, python: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let passable = std::fs::Permissions::from_mode(0o711);
    let sessions = home.join("sessions");
    std::fs::create_dir_all(&sessions)?;
    std::fs::set_permissions(home, passable.clone())?;
    std::fs::set_permissions(&sessions, passable.clone())?;
    let envs = home.join("envs");
    let Ok(rel) = python.strip_prefix(&envs) else {
        // Not an environment of the server's (the default interpreter): the operator's to open.
        return Ok(());
    };
    let Some(key) = rel.components().next() else {
        return Ok(());
    };
    std::fs::set_permissions(&envs, passable)?;
    let env = envs.join(key);
    // Opened once: a built environment does not change.
    if std::fs::metadata(&env)?.permissions().mode() & 0o005 == 0o005 {
        return Ok(());
    }
    fn open_tree(path: &std::path::Path) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(path)?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let mode = meta.permissions().mode();
        // Readable by all; runnable (or passable) by all where its owner may run it.
        let open = mode | 0o444 | if mode & 0o100 != 0 { 0o111 } else { 0 };
        if meta.is_dir() {
            for entry in std::fs::read_dir(path)? {
                open_tree(&entry?.path())?;
            }
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(open & 0o7777))
    }
    open_tree(&env)
}

fn without_home(text: &str, home: &std::path::Path) -> String {
    text.replace(&format!("{}/", home.display()), "")
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Copy a flow folder for a session: regular files and folders only (a link could name anything
/// on this machine), without caches and version-control folders.
pub fn copy_flow(src: &std::path::Path, dst: &std::path::Path) -> std::io::Result<()> {
    if dst.exists() {
        std::fs::remove_dir_all(dst)?;
    }
    let filter = flowrt_store::fsutil::CopyFilter {
        skip_names: &[".git", "__pycache__", ".runs", "node_modules"],
        ..Default::default()
    };
    flowrt_store::fsutil::copy_tree(src, dst, &filter)
}

/// Periodic work: idle shutdown.
pub async fn watch(manager: Arc<Manager>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        manager.cull_idle().await;
    }
}

pub async fn synced_store(
    blobs: &flowrt_store::Blobs,
    home: &std::path::Path,
    owner: &str,
) -> ManageResult<ConnectionStore> {
    let store = ConnectionStore::for_user(home, owner)
        .map_err(|e| ManageError::internal("opening the connections", e))?;
    blobs
        .sync_dir(&store.connections_dir(), true)
        .await
        .map_err(|e| ManageError::internal("reading the connections", e))?;
    Ok(store)
}

/// The connections a session of `owner`'s may receive, of those named `names`: `owner`'s own,
/// else a shared one; for the server's owner, also the ones made on the server's machine.
pub async fn connections_for_session(
    state_store: &flowrt_store::Store,
    blobs: &flowrt_store::Blobs,
    home: &std::path::Path,
    owner: &str,
    owner_is_server_owner: bool,
    names: &[String],
) -> ManageResult<Vec<Connection>> {
    let all = state_store.list_connections().await?;
    let mut out = Vec::new();
    for name in names {
        let rec = all
            .iter()
            .find(|r| &r.name == name && r.owner == owner)
            .or_else(|| all.iter().find(|r| &r.name == name && r.shared));
        let found = match rec {
            Some(r) => synced_store(blobs, home, &r.owner)
                .await?
                .get(name)
                .map_err(|e| ManageError::internal("reading a connection", e))?,
            None if owner_is_server_owner => ConnectionStore::open(home)
                .and_then(|s| s.get(name))
                .map_err(|e| ManageError::internal("reading a connection", e))?,
            None => None,
        };
        out.extend(found);
    }
    Ok(out)
}
