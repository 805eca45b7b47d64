//! The routing table `score` reads, and the supervisor that keeps deployments' instances
//! running and builds it.
//!
//! Every deployment wants `instances` sessions of its current revision, one per slot (a row in
//! the store, so servers sharing a database never start two for a slot). An instance whose
//! session stopped or failed is forgotten and its slot filled again at once. When a deployment
//! moves to another flow version (a new revision), the old revision's instances keep serving
//! until every slot of the new one runs; then they leave the table, finish what they carry and
//! stop. A scaling deployment's count follows its requests in flight.

use crate::AppState;
use flowrt_api::{Connection, SessionSize, SessionStatus};
use flowrt_store::{Deployment, DeploymentInstance, Endpoint, NewSession, ScoreRow, Session};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long a retired instance may finish its requests before it is stopped anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long a scaling deployment stays below its target before it shrinks.
const SHRINK_AFTER: Duration = Duration::from_secs(60);
/// Scoring requests waiting to be written; beyond this they are counted as dropped.
const RECORD_QUEUE: usize = 20_000;

/// An instance's `connections_sent` before its first request: which connections its session
/// started with is not known here, so its first request brings the current ones.
const UNSENT: u64 = u64::MAX;

/// One session serving a deployment, as this server routes to it.
pub struct Instance {
    pub session_id: String,
    pub addr: String,
    pub token: String,
    pub revision: i64,
    pub slot: u32,
    /// Requests this server has sent it that have not answered yet.
    pub in_flight: AtomicU32,
    /// The connections generation it last received ([`UNSENT`]: none yet).
    pub connections_sent: AtomicU64,
    /// It refused a connection: left out until the supervisor looks again.
    pub unreachable: AtomicBool,
}

/// What `score` needs of a deployment's flow.
#[derive(Clone, Debug, Default)]
pub struct FlowFacts {
    /// The output a streamed reply comes from, when the flow streams.
    pub stream_output: Option<String>,
    /// How many outputs the flow has.
    pub outputs: usize,
    /// The connections the flow may name.
    pub connection_names: Vec<String>,
    /// The environment its sessions start with (`environment.image`, else `default`).
    pub env: String,
}

/// The connections a deployment's instances should use, and when they last changed.
#[derive(Clone, Debug, Default)]
pub struct DeploymentConnections {
    /// Grows when they change; an instance that has not seen this generation gets them with
    /// its next request.
    pub generation: u64,
    pub list: Arc<Vec<Connection>>,
}

/// A deployment as `score` routes to it.
pub struct DeploymentRoute {
    pub record: Deployment,
    pub flow: Arc<FlowFacts>,
    pub connections: DeploymentConnections,
    /// The instances answering requests now.
    pub instances: Vec<Arc<Instance>>,
    /// Its share of the endpoint's traffic, in percent.
    pub traffic: u32,
}

impl DeploymentRoute {
    /// The reachable instance carrying the fewest requests.
    pub fn pick(&self, skip: Option<&str>) -> Option<Arc<Instance>> {
        self.instances
            .iter()
            .filter(|i| !i.unreachable.load(Ordering::Relaxed))
            .filter(|i| Some(i.session_id.as_str()) != skip)
            .min_by_key(|i| i.in_flight.load(Ordering::Relaxed))
            .cloned()
    }
}

/// An endpoint as `score` routes to it.
pub struct EndpointRoute {
    pub endpoint: Endpoint,
    pub deployments: Vec<Arc<DeploymentRoute>>,
}

impl EndpointRoute {
    /// The deployment a request goes to: the one named, else one drawn by the traffic split
    /// (`draw` in 0..100).
    pub fn deployment(&self, named: Option<&str>, draw: u32) -> Option<Arc<DeploymentRoute>> {
        if let Some(name) = named {
            return self
                .deployments
                .iter()
                .find(|d| d.record.name == name)
                .cloned();
        }
        let mut upto = 0;
        for d in &self.deployments {
            upto += d.traffic;
            if d.traffic > 0 && draw < upto {
                return Some(d.clone());
            }
        }
        None
    }
}

/// Serving state of this server: the routing table, the queue of requests to record, and what
/// the supervisor remembers between its rounds.
pub struct Serving {
    table: RwLock<Arc<HashMap<String, Arc<EndpointRoute>>>>,
    /// Instances by session id, kept across rebuilds of the table (their counters live on).
    instances: Mutex<HashMap<String, Arc<Instance>>>,
    flows: Mutex<HashMap<String, Arc<FlowFacts>>>,
    connections: Mutex<HashMap<(String, String), DeploymentConnections>>,
    /// Grows whenever a connection changes (here at once, on another server when the database
    /// says so): the next request resolves its deployment's connections again.
    pub generation: AtomicU64,
    /// Wakes the supervisor (a deployment changed).
    pub wake: tokio::sync::Notify,
    records: tokio::sync::mpsc::Sender<ScoreRow>,
    records_rx: Mutex<Option<tokio::sync::mpsc::Receiver<ScoreRow>>>,
    /// Rows queued for the writer, and rows it has written (or given up on): a read of the
    /// requests waits until what was queued before it is in the database.
    records_queued: AtomicU64,
    records_written: tokio::sync::watch::Sender<u64>,
    pub dropped_records: AtomicU64,
    /// Why a deployment's instances last failed to start, by (endpoint, deployment).
    problems: Mutex<HashMap<(String, String), String>>,
    random: std::collections::hash_map::RandomState,
    counter: AtomicU64,
}

impl Default for Serving {
    fn default() -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(RECORD_QUEUE);
        Serving {
            table: RwLock::default(),
            instances: Mutex::default(),
            flows: Mutex::default(),
            connections: Mutex::default(),
            generation: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            records: tx,
            records_rx: Mutex::new(Some(rx)),
            records_queued: AtomicU64::new(0),
            records_written: tokio::sync::watch::Sender::new(0),
            dropped_records: AtomicU64::new(0),
            problems: Mutex::default(),
            random: std::collections::hash_map::RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }
}

impl Serving {
    /// Queue a scoring request's row for the writer; counted as dropped when the queue is full
    /// (the database is far behind: answering goes on without recording).
    pub fn record(&self, row: ScoreRow) {
        match self.records.try_send(row) {
            Ok(()) => {
                self.records_queued.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => {
                self.dropped_records.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Wait (2 s at most) until every row queued before this call is written: a request that
    /// has been answered is in the list read after it. Rows are written in batches a quarter
    /// second apart, so without this a client scoring and then listing saw nothing.
    pub async fn recorded(&self) {
        let writing = self
            .records_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none();
        if !writing {
            // No writer runs (the supervisor has not started): nothing will be written.
            return;
        }
        let queued = self.records_queued.load(Ordering::SeqCst);
        let mut written = self.records_written.subscribe();
        let _ =
            tokio::time::timeout(Duration::from_secs(2), written.wait_for(|w| *w >= queued)).await;
    }

    /// The route of endpoint `name`, as the supervisor last built it.
    pub fn route(&self, name: &str) -> Option<Arc<EndpointRoute>> {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// A number no other call of this process draws (random keys, then a counter): request
    /// ids, the traffic draw, sampling. Not a secret.
    pub fn draw(&self) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = self.random.build_hasher();
        h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        h.finish()
    }

    /// The sessions the published routing table sends deployment `deployment` of endpoint
    /// `endpoint` requests to. A session turns `Running` a round of the supervisor before the
    /// table holds it; until then a request would find no instance.
    pub fn routed(&self, endpoint: &str, deployment: &str) -> Vec<String> {
        let Some(route) = self.route(endpoint) else {
            return Vec::new();
        };
        route
            .deployments
            .iter()
            .filter(|d| d.record.name == deployment)
            .flat_map(|d| d.instances.iter().map(|i| i.session_id.clone()))
            .collect()
    }

    /// The in-flight count of a session, as this server sees it.
    pub fn in_flight(&self, session_id: &str) -> u32 {
        self.instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(session_id)
            .map(|i| i.in_flight.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Why the deployment's instances last failed, while they do.
    pub fn problem(&self, endpoint: &str, deployment: &str) -> Option<String> {
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(endpoint.to_string(), deployment.to_string()))
            .cloned()
    }

    fn set_problem(&self, key: &(String, String), problem: Option<String>) {
        let mut all = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        match problem {
            Some(p) => {
                all.insert(key.clone(), p);
            }
            None => {
                all.remove(key);
            }
        }
    }

    /// A change to a connection: deployments resolve theirs again before the next request.
    pub fn connections_changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// What the supervisor keeps between rounds.
#[derive(Default)]
struct Memory {
    /// Instances taken out of the table, and since when: stopped once idle (or after
    /// [`DRAIN_LIMIT`]).
    retiring: HashMap<String, Instant>,
    /// When the routing table was last published. A retired instance is stopped only once a
    /// table without it has been: until then requests still reach it through the older one.
    table_built: Option<Instant>,
    /// Scaling deployments below their target, and since when.
    below_since: HashMap<(String, String), Instant>,
    /// Deployments whose instances keep failing: how often in a row, and when to try again
    /// (a broken flow or environment must not restart sessions in a tight loop).
    backoff: HashMap<(String, String), (u32, Instant)>,
    /// The last failed instance of each deployment, kept for its logs.
    last_failed: HashMap<(String, String), String>,
    /// Recent total in-flight samples per scaling deployment.
    load: HashMap<(String, String), Vec<u32>>,
    /// The database's fingerprint of the connections, last seen.
    connections_seen: Option<(i64, i64)>,
    last_prune: Option<Instant>,
}

impl Memory {
    /// One more failure of deployment `key`: how long its slots wait before the next start
    /// (1 s, doubling, at most a minute).
    fn back_off(&mut self, key: &(String, String)) -> Duration {
        let (count, _) = self
            .backoff
            .get(key)
            .copied()
            .unwrap_or((0, Instant::now()));
        let wait = Duration::from_secs(1u64 << count.min(6)).min(Duration::from_secs(60));
        self.backoff
            .insert(key.clone(), (count + 1, Instant::now() + wait));
        wait
    }
}

/// Keep every deployment's instances running and the routing table current, until the server
/// stops: a round each second, and at once when a session changes or a deployment is edited.
pub async fn supervise(state: AppState) {
    if let Some(rx) = state
        .serving
        .records_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        tokio::spawn(write_records(state.clone(), rx));
    }
    let mut changes = state.sessions.changes.subscribe();
    let mut memory = Memory::default();
    loop {
        if let Err(e) = round(&state, &mut memory).await {
            eprintln!("deployments: {e}");
        }
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = state.serving.wake.notified() => {}
            changed = changes.recv() => {
                if changed.is_err() {
                    changes = state.sessions.changes.subscribe();
                }
            }
        }
    }
}

/// Is the session gone for good (its slot should be filled again)? A new session is
/// `NotAvailable` until it begins to prepare: only one left so for a while is.
fn dead(s: Option<&Session>) -> bool {
    match s {
        None => true,
        Some(s) => match s.status {
            SessionStatus::Failed | SessionStatus::Stopped => true,
            SessionStatus::NotAvailable => crate::now_ms() - s.updated > 30_000,
            _ => false,
        },
    }
}

fn ready(s: Option<&Session>) -> bool {
    s.is_some_and(|s| s.status == SessionStatus::Running && s.agent_addr.is_some())
}

/// One round of the supervisor: instances whose sessions are gone leave (and their slots are
/// filled again), old revisions retire once the new one runs, retired instances drain, and the
/// routing table is built again.
async fn round(state: &AppState, memory: &mut Memory) -> Result<(), String> {
    let store = &state.store;
    let endpoints = store.list_endpoints().await.map_err(|e| e.to_string())?;
    let deployments = store
        .list_deployments(None)
        .await
        .map_err(|e| e.to_string())?;
    let rows = store.list_instances().await.map_err(|e| e.to_string())?;
    if deployments.is_empty() && rows.is_empty() && memory.last_failed.is_empty() {
        // Nothing deployed: no sessions to look at (a round must cost next to nothing then).
        build_table(state, &endpoints, &[], &[], &HashMap::new(), memory).await;
        memory.table_built = Some(Instant::now());
        return Ok(());
    }
    let sessions: HashMap<String, Session> = store
        .list_sessions(None)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let deployed: HashMap<(String, String), &Deployment> = deployments
        .iter()
        .map(|d| ((d.endpoint.clone(), d.name.clone()), d))
        .collect();
    let rows = sweep_instances(state, memory, rows, &deployed, &sessions).await;
    for d in &deployments {
        fill_slots(state, memory, d, &rows, &sessions).await;
    }
    // A deployment that is gone takes its last failed session with it.
    let gone: Vec<(String, String)> = memory
        .last_failed
        .keys()
        .filter(|k| !deployed.contains_key(*k))
        .cloned()
        .collect();
    for key in gone {
        if let Some(id) = memory.last_failed.remove(&key) {
            forget(state, &id, sessions.get(&id)).await;
        }
    }
    drain(state, memory, &sessions).await;
    watch_connections(state, memory).await;
    build_table(state, &endpoints, &deployments, &rows, &sessions, memory).await;
    memory.table_built = Some(Instant::now());
    autoscale(state, memory, &deployments).await;
    prune_score_rows(state, memory, &endpoints).await;
    Ok(())
}

/// The instances that stay: dead ones and those of deleted deployments leave (a failed one's
/// session is kept for its logs, and its deployment backs off), and slots beyond a
/// deployment's count retire.
async fn sweep_instances(
    state: &AppState,
    memory: &mut Memory,
    rows: Vec<DeploymentInstance>,
    deployed: &HashMap<(String, String), &Deployment>,
    sessions: &HashMap<String, Session>,
) -> Vec<DeploymentInstance> {
    let mut keep = Vec::new();
    for row in rows {
        let key = (row.endpoint.clone(), row.deployment.clone());
        let session = sessions.get(&row.session_id);
        match deployed.get(&key) {
            None => retire(memory, &row.session_id),
            Some(d) if row.revision == d.revision && row.slot >= d.instances => {
                retire(memory, &row.session_id)
            }
            Some(_) if dead(session) => {
                forget_dead(state, memory, &key, &row, sessions).await;
                continue;
            }
            Some(_) => {}
        }
        keep.push(row);
    }
    keep
}

/// Instance `row` of deployment `key` is dead: a failed one makes the deployment back off
/// (its problem says why) and is kept for its logs until the deployment's next failure;
/// another is forgotten at once.
async fn forget_dead(
    state: &AppState,
    memory: &mut Memory,
    key: &(String, String),
    row: &DeploymentInstance,
    sessions: &HashMap<String, Session>,
) {
    let session = sessions.get(&row.session_id);
    if let Some(s) = session.filter(|s| s.status == SessionStatus::Failed) {
        let wait = memory.back_off(key);
        let reason = s.reason.clone().unwrap_or_else(|| "it failed".into());
        state.serving.set_problem(
            key,
            Some(format!(
                "instance {} failed: {reason} (trying again in {} s; `flowrt session logs {}` says more)",
                s.id,
                wait.as_secs(),
                s.id
            )),
        );
    }
    if session.is_some_and(|s| s.status == SessionStatus::Failed) {
        // The failed session stays for its logs (the problem names it), until the
        // next failure of the deployment or the deployment goes.
        let _ = state.store.delete_instance(&row.session_id).await;
        if let Some(older) = memory
            .last_failed
            .insert(key.clone(), row.session_id.clone())
        {
            forget(state, &older, sessions.get(&older)).await;
        }
    } else {
        forget(state, &row.session_id, session).await;
    }
}

/// Fill every empty slot of deployment `d`'s current revision (unless it is backing off); once
/// every slot of it runs, its problem is cleared and its older revisions retire.
async fn fill_slots(
    state: &AppState,
    memory: &mut Memory,
    d: &Deployment,
    rows: &[DeploymentInstance],
    sessions: &HashMap<String, Session>,
) {
    let mine: Vec<&DeploymentInstance> = rows
        .iter()
        .filter(|r| r.endpoint == d.endpoint && r.deployment == d.name)
        .collect();
    let current: Vec<&&DeploymentInstance> =
        mine.iter().filter(|r| r.revision == d.revision).collect();
    let key = (d.endpoint.clone(), d.name.clone());
    let waiting = memory
        .backoff
        .get(&key)
        .is_some_and(|(_, next)| Instant::now() < *next);
    for slot in 0..d.instances {
        if !waiting && !current.iter().any(|r| r.slot == slot) {
            if let Err(e) = start_instance(state, d, slot).await {
                eprintln!(
                    "deployment {}/{}: cannot start instance {slot}: {e}",
                    d.endpoint, d.name
                );
                state
                    .serving
                    .set_problem(&key, Some(format!("cannot start an instance: {e}")));
                memory.back_off(&key);
                break;
            }
        }
    }
    let all_ready = (0..d.instances).all(|slot| {
        current
            .iter()
            .any(|r| r.slot == slot && ready(sessions.get(&r.session_id)))
    });
    if all_ready {
        memory.backoff.remove(&key);
        state.serving.set_problem(&key, None);
        for old in mine.iter().filter(|r| r.revision < d.revision) {
            retire(memory, &old.session_id);
        }
    }
}

/// Every ten minutes, drop the scoring requests each endpoint keeps no longer (its retention).
async fn prune_score_rows(state: &AppState, memory: &mut Memory, endpoints: &[Endpoint]) {
    if memory
        .last_prune
        .is_none_or(|t| t.elapsed() > Duration::from_secs(600))
    {
        memory.last_prune = Some(Instant::now());
        for e in endpoints {
            let before = crate::now_ms() - i64::from(e.retention_days) * 86_400_000;
            let _ = state.store.prune_score_rows(&e.name, before).await;
        }
    }
}

fn retire(memory: &mut Memory, session_id: &str) {
    memory
        .retiring
        .entry(session_id.to_string())
        .or_insert_with(Instant::now);
}

/// Forget an instance whose session is gone: its row, and the session's record when this
/// server may stop it.
async fn forget(state: &AppState, session_id: &str, session: Option<&Session>) {
    if let Some(s) = session {
        if state.sessions.managed_elsewhere(s).is_some() {
            // Its managing server forgets it.
            return;
        }
        eprintln!(
            "deployment instance {session_id} is {}: starting another",
            s.status
        );
        let _ = state.store.delete_session(session_id).await;
        state.sessions.release_uid(session_id);
    }
    let _ = state.store.delete_instance(session_id).await;
    state
        .serving
        .instances
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(session_id);
}

/// Stop retired instances that have finished their requests (or drained long enough).
async fn drain(state: &AppState, memory: &mut Memory, sessions: &HashMap<String, Session>) {
    let mut done = Vec::new();
    for (id, since) in &memory.retiring {
        // Retired in this round: the published table still routes to it (a switch of
        // versions failed every request in flight when its old instances stopped here).
        if memory.table_built.is_none_or(|built| built <= *since) {
            continue;
        }
        let busy = state.serving.in_flight(id) > 0;
        if busy && since.elapsed() < DRAIN_LIMIT {
            continue;
        }
        if let Some(s) = sessions.get(id) {
            if state.sessions.managed_elsewhere(s).is_some() {
                continue;
            }
            if matches!(s.status, SessionStatus::Running | SessionStatus::Preparing) {
                let _ = state
                    .sessions
                    .stop(id, flowrt_session::Event::StopRequested)
                    .await;
            }
            let _ = state.store.delete_session(id).await;
            state.sessions.release_uid(id);
        }
        let _ = state.store.delete_instance(id).await;
        state
            .serving
            .instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        done.push(id.clone());
    }
    for id in done {
        memory.retiring.remove(&id);
    }
}

/// Start a session for slot `slot` of `d`'s current revision, unless another server claimed
/// the slot first.
async fn start_instance(state: &AppState, d: &Deployment, slot: u32) -> Result<(), String> {
    let facts = flow_facts(state, &d.flow_dir).await?;
    let (env_ref, base_version) = crate::sessions::resolve_env(state, &facts.env)
        .await
        .map_err(|e| e.message)?;
    let session = state
        .store
        .insert_session(&NewSession {
            owner: d.owner.clone(),
            flow_dir: d.flow_dir.clone(),
            flow_ref: Some(d.flow_ref.clone()),
            env_ref,
            env_key: None,
            base_version,
            size: SessionSize::parse(&d.size).unwrap_or_default(),
            // An instance stops when its deployment says so, never for being idle.
            idle_timeout_s: 0,
            identity: None,
            compute: None,
            shared: false,
        })
        .await
        .map_err(|e| e.to_string())?;
    let claimed = state
        .store
        .claim_instance_slot(&DeploymentInstance {
            endpoint: d.endpoint.clone(),
            deployment: d.name.clone(),
            revision: d.revision,
            slot,
            session_id: session.id.clone(),
            created: 0,
        })
        .await
        .map_err(|e| e.to_string())?;
    if !claimed {
        let _ = state.store.delete_session(&session.id).await;
        return Ok(());
    }
    tokio::spawn(state.sessions.clone().prepare(session.id));
    Ok(())
}

/// Load the flow of snapshot `flow_dir` (stored form) on a blocking thread: the server only
/// parses it, never runs it.
pub async fn load_facts(state: &AppState, flow_dir: &str) -> Result<FlowFacts, String> {
    let dir = state
        .sessions
        .local_flow_dir(flow_dir)
        .await
        .map_err(|e| e.message)?;
    let flow =
        tokio::task::spawn_blocking(move || flowrt_flow::load_flow(&dir, &Default::default()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    Ok(FlowFacts {
        stream_output: flowrt_runtime::invoker::stream_output(&flow).map(|(o, _)| o),
        outputs: flow.outputs.len(),
        connection_names: flow.connection_candidates().into_iter().collect(),
        env: flow
            .environment
            .image
            .clone()
            .unwrap_or_else(|| "default".into()),
    })
}

/// The facts of snapshot `flow_dir`, loaded once per snapshot.
async fn flow_facts(state: &AppState, flow_dir: &str) -> Result<Arc<FlowFacts>, String> {
    let cached = state
        .serving
        .flows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(flow_dir)
        .cloned();
    if let Some(f) = cached {
        return Ok(f);
    }
    let facts = Arc::new(load_facts(state, flow_dir).await?);
    state
        .serving
        .flows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(flow_dir.to_string(), facts.clone());
    Ok(facts)
}

/// Notice connections changed by another server sharing the database.
async fn watch_connections(state: &AppState, memory: &mut Memory) {
    let Ok(db) = state.store.connections_fingerprint().await else {
        return;
    };
    if memory.connections_seen.is_some_and(|seen| seen != db) {
        state.serving.generation.fetch_add(1, Ordering::SeqCst);
    }
    memory.connections_seen = Some(db);
}

/// The connections `d`'s instances should hold now, resolved as its sessions receive them.
pub async fn deployment_connections(
    state: &AppState,
    d: &Deployment,
    facts: &FlowFacts,
) -> DeploymentConnections {
    let generation = state.serving.generation.load(Ordering::SeqCst);
    let key = (d.owner.clone(), facts.connection_names.join("\n"));
    if let Some(c) = state
        .serving
        .connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .filter(|c| c.generation == generation)
        .cloned()
    {
        return c;
    }
    let owner_is_server_owner = state
        .store
        .list_users()
        .await
        .map(|users| {
            users
                .iter()
                .any(|u| u.id == d.owner && u.role == flowrt_store::Role::Owner)
        })
        .unwrap_or(false);
    let list = flowrt_session::manager::connections_for_session(
        &state.store,
        &state.blobs,
        &state.config.home,
        &d.owner,
        owner_is_server_owner,
        &facts.connection_names,
    )
    .await
    .unwrap_or_default();
    let resolved = DeploymentConnections {
        generation,
        list: Arc::new(list),
    };
    state
        .serving
        .connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, resolved.clone());
    resolved
}

async fn build_table(
    state: &AppState,
    endpoints: &[Endpoint],
    deployments: &[Deployment],
    rows: &[DeploymentInstance],
    sessions: &HashMap<String, Session>,
    memory: &Memory,
) {
    let mut table = HashMap::new();
    for e in endpoints {
        let mut routes = Vec::new();
        for d in deployments.iter().filter(|d| d.endpoint == e.name) {
            let Ok(facts) = flow_facts(state, &d.flow_dir).await else {
                continue;
            };
            let connections = deployment_connections(state, d, &facts).await;
            let mut instances = Vec::new();
            for r in rows
                .iter()
                .filter(|r| r.endpoint == d.endpoint && r.deployment == d.name)
                .filter(|r| !memory.retiring.contains_key(&r.session_id))
            {
                let Some(s) = sessions.get(&r.session_id).filter(|s| ready(Some(s))) else {
                    continue;
                };
                let Some(addr) = s.agent_addr.clone() else {
                    continue;
                };
                let token = state.sessions.agent_token(&s.id).await;
                let mut known = state
                    .serving
                    .instances
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let fresh = || {
                    Arc::new(Instance {
                        session_id: s.id.clone(),
                        addr: addr.clone(),
                        token: token.clone(),
                        revision: r.revision,
                        slot: r.slot,
                        in_flight: AtomicU32::new(0),
                        connections_sent: AtomicU64::new(UNSENT),
                        unreachable: AtomicBool::new(false),
                    })
                };
                let instance = match known.get(&s.id) {
                    // Restarted in place: a new agent, with what it started with.
                    Some(i) if i.addr == addr && i.token == token => i.clone(),
                    _ => {
                        let i = fresh();
                        known.insert(s.id.clone(), i.clone());
                        i
                    }
                };
                // A new look at it: reachable again until a request finds otherwise.
                instance.unreachable.store(false, Ordering::Relaxed);
                instances.push(instance);
            }
            routes.push(Arc::new(DeploymentRoute {
                traffic: e.traffic.get(&d.name).copied().unwrap_or(0),
                record: d.clone(),
                flow: facts,
                connections,
                instances,
            }));
        }
        table.insert(
            e.name.clone(),
            Arc::new(EndpointRoute {
                endpoint: e.clone(),
                deployments: routes,
            }),
        );
    }
    *state
        .serving
        .table
        .write()
        .unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
}

/// The routing table built from the store's endpoints, their deployments left out (nothing
/// started): a scoring request reaches its endpoint's authorization, then finds no deployment.
#[cfg(test)]
pub(crate) async fn route_undeployed(state: &AppState) {
    let endpoints = state.store.list_endpoints().await.unwrap_or_default();
    let memory = Memory::default();
    build_table(state, &endpoints, &[], &[], &HashMap::new(), &memory).await;
}

/// The routing table built from the store as a supervisor's round builds it, every
/// deployment's flow taken to be `facts` (nothing is loaded, started or stopped).
#[cfg(test)]
pub(crate) async fn route_stored(state: &AppState, facts: FlowFacts) {
    let store = &state.store;
    let endpoints = store.list_endpoints().await.unwrap_or_default();
    let deployments = store.list_deployments(None).await.unwrap_or_default();
    let rows = store.list_instances().await.unwrap_or_default();
    let sessions = store
        .list_sessions(None)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let facts = Arc::new(facts);
    for d in &deployments {
        state
            .serving
            .flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(d.flow_dir.clone(), facts.clone());
    }
    let memory = Memory::default();
    build_table(state, &endpoints, &deployments, &rows, &sessions, &memory).await;
}

/// Follow the load of scaling deployments: grow at once when the requests in flight per
/// instance pass the target; shrink after a minute below half of it.
async fn autoscale(state: &AppState, memory: &mut Memory, deployments: &[Deployment]) {
    let table = state
        .serving
        .table
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut seen = HashSet::new();
    for d in deployments
        .iter()
        .filter(|d| d.max_instances > d.min_instances)
    {
        let key = (d.endpoint.clone(), d.name.clone());
        seen.insert(key.clone());
        let in_flight: u32 = table
            .get(&d.endpoint)
            .and_then(|e| e.deployments.iter().find(|r| r.record.name == d.name))
            .map(|r| {
                r.instances
                    .iter()
                    .map(|i| i.in_flight.load(Ordering::Relaxed))
                    .sum()
            })
            .unwrap_or(0);
        let samples = memory.load.entry(key.clone()).or_default();
        samples.push(in_flight);
        if samples.len() > 5 {
            samples.remove(0);
        }
        let average = samples.iter().sum::<u32>() as f64 / samples.len() as f64;
        let target = f64::from(d.target_concurrency.max(1));
        let wanted = ((average / target).ceil() as u32).clamp(d.min_instances, d.max_instances);
        if wanted > d.instances {
            memory.below_since.remove(&key);
            eprintln!(
                "deployment {}/{}: {average:.1} requests in flight, growing to {wanted} instances",
                d.endpoint, d.name
            );
            let _ = state
                .store
                .scale_deployment(&d.endpoint, &d.name, wanted)
                .await;
            state.serving.wake.notify_one();
        } else if wanted < d.instances && average < target * f64::from(d.instances) / 2.0 {
            let since = *memory
                .below_since
                .entry(key.clone())
                .or_insert_with(Instant::now);
            if since.elapsed() >= SHRINK_AFTER {
                memory.below_since.remove(&key);
                let _ = state
                    .store
                    .scale_deployment(&d.endpoint, &d.name, wanted)
                    .await;
            }
        } else {
            memory.below_since.remove(&key);
        }
    }
    memory.load.retain(|k, _| seen.contains(k));
    memory.below_since.retain(|k, _| seen.contains(k));
}

/// Write scoring requests in batches: a transaction per quarter second at most.
async fn write_records(state: AppState, mut rx: tokio::sync::mpsc::Receiver<ScoreRow>) {
    let mut batch = Vec::new();
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(250);
        while batch.len() < 1000 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(row)) => batch.push(row),
                Ok(None) | Err(_) => break,
            }
        }
        if let Err(e) = state.store.insert_score_rows(&batch).await {
            eprintln!("endpoints: cannot record {} requests: {e}", batch.len());
        }
        let done = batch.len() as u64;
        state.serving.records_written.send_modify(|w| *w += done);
        batch.clear();
    }
}
