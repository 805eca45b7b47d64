//! Compute sessions in the API: the `/api/v1/sessions` routes (and the Ray agents' join route),
//! which check who may do what and answer in the API's shapes. The session manager behind them
//! (lifecycles, environments, agents, idle shutdown, takeovers) is
//! [`flowrt_session::manager::Manager`].

use crate::auth::Caller;
use crate::error::{ApiErr, ApiResult};
use crate::openapi::{doc, json, list_of, Reply};
use crate::routing::ApiRoutes;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use flowrt_api::requests::{AgentJoin, EditSession, InstallRequirements, StartSession, TestLine};
use flowrt_api::responses::{
    AgentJoined, LineResult, LogChunk, PackageOrigin, PackageView, SessionAction, SessionView,
};
use flowrt_api::workspace::Permission;
use flowrt_api::SessionStatus;
use flowrt_python::EnvRef;
use flowrt_session::{client, Event};
use flowrt_store::{NewSession, Session};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub use flowrt_session::manager::{copy_flow, watch, Manager};

/// `POST /api/v1/agents/join`: a Ray session's agent proves it is the job this server submitted
/// (see [`Manager::complete_join`]) and receives its flow's connections. Not a user route: no
/// token opens it, only the proof.
pub async fn agent_join(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    Json(req): Json<flowrt_api::requests::AgentJoin>,
) -> ApiResult<Json<flowrt_api::responses::AgentJoined>> {
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let Ok(addr) = req.addr.parse::<std::net::SocketAddr>() else {
        return Err(ApiErr::bad_request("addr must be IP:PORT"));
    };
    if !hex64(&req.secret) || !hex64(&req.token) {
        return Err(ApiErr::bad_request(
            "secret and token must each be 64 hex digits",
        ));
    }
    // A few checks at a time: each costs calls to Ray, and nobody unverified may make many.
    let Ok(_turn) = state.sessions.join_checks.acquire().await else {
        return Err(ApiErr::internal(
            "checking a join",
            "the server is stopping",
        ));
    };
    match state.sessions.complete_join(&req, addr, peer.ip()).await {
        Ok((secrets, flow)) => {
            let secrets = flowrt_api::agent::SessionSecrets::from_json(&secrets.0)
                .map_err(|e| ApiErr::internal("handing over connections", e))?;
            Ok(Json(flowrt_api::responses::AgentJoined {
                connections: secrets.connections,
                entra: secrets.entra,
                flow,
            }))
        }
        Err(why) => {
            eprintln!(
                "refused a join for session {:?} from {peer}: {why}",
                req.session_id
            );
            Err(ApiErr::unauthorized(
                "join refused: this is not the agent Ray started for a pending session",
            ))
        }
    }
}

pub fn routes() -> ApiRoutes {
    ApiRoutes::default()
        .get(
            "/api/v1/sessions",
            Permission::Read,
            list,
            doc("List your sessions.")
                .reply(200, list_of::<SessionView>()),
        )
        .post(
            "/api/v1/sessions",
            Permission::SessionsWrite,
            start,
            doc("Start a session {flow, size, idle_timeout_s, identity, env, compute}; answers at once, then it prepares.")
                .body::<StartSession>()
                .reply(202, json::<SessionView>()),
        )
        .get(
            "/api/v1/sessions/events",
            Permission::Read,
            session_events,
            doc("Server-sent events: a session event with a session's view each time one of yours changes (status, phase, reason, settings), and once for each at the start.")
                .reply(200, Reply::Events),
        )
        .get(
            "/api/v1/sessions/{id}",
            Permission::Read,
            show,
            doc("Show a session: status, phase, reason, base version, update available.")
                .reply(200, json::<SessionView>()),
        )
        .patch(
            "/api/v1/sessions/{id}",
            Permission::SessionsWrite,
            edit,
            doc("Edit size and idle timeout.")
                .body::<EditSession>()
                .reply(200, json::<SessionView>()),
        )
        .delete(
            "/api/v1/sessions/{id}",
            Permission::SessionsWrite,
            delete,
            doc("Stop and forget a session.")
                .reply(204, Reply::Empty),
        )
        .post(
            "/api/v1/sessions/{id}/stop",
            Permission::SessionsWrite,
            stop,
            doc("Stop a session.")
                .reply(200, json::<SessionView>()),
        )
        .post(
            "/api/v1/sessions/{id}/reset",
            Permission::SessionsWrite,
            reset,
            doc("Recreate a session's agent with the same environment.")
                .reply(202, json::<SessionView>()),
        )
        .post(
            "/api/v1/sessions/{id}/update",
            Permission::SessionsWrite,
            update,
            doc("Move a session to the latest base environment.")
                .reply(202, json::<SessionView>()),
        )
        .get(
            "/api/v1/sessions/{id}/packages",
            Permission::Read,
            packages,
            doc("Installed packages and where each came from.")
                .reply(200, list_of::<PackageView>()),
        )
        .post(
            "/api/v1/sessions/{id}/install",
            Permission::SessionsWrite,
            install,
            doc("Save requirements {requirements, save_only} and install them.")
                .body::<InstallRequirements>()
                .reply(202, json::<SessionView>())
                .reply(200, json::<SessionView>()),
        )
        .get(
            "/api/v1/sessions/{id}/logs",
            Permission::Read,
            logs,
            doc("The session log from ?offset=N.")
                .query::<u64>("offset")
                .reply(200, json::<LogChunk>()),
        )
        .post(
            "/api/v1/sessions/{id}/test",
            Permission::SessionsWrite,
            test,
            doc("Run one line {inputs} in the session, bounded by the request timeout; with Accept: text/event-stream, chunk events stream the LLM reply, then a result event.")
                .body::<TestLine>()
                .reply(200, json::<LineResult>()),
        )
        .post(
            "/api/v1/agents/join",
            Permission::Public,
            agent_join,
            doc("A Ray session's agent joins its server: it proves it is the job the server submitted (the first line of that job's Ray log is the SHA-256 of its secret, and it calls from, and listens on, the node Ray placed the job on) and receives its flow's connections. No user token opens it.")
                .body::<AgentJoin>()
                .reply(200, json::<AgentJoined>()),
        )
}

/// A session as the API shows it to `caller`: the record, what the manifest says about its base,
/// and what the caller may do with it now.
pub(crate) fn view(s: &Session, caller: &Caller) -> SessionView {
    let latest = flowrt_python::latest_base().version;
    let update_available =
        (s.base_version != latest && s.env_ref.starts_with("default")).then(|| latest.to_string());
    let actions = actions(s, caller, update_available.is_some());
    SessionView {
        id: s.id.clone(),
        owner: s.owner.clone(),
        flow_ref: s.flow_ref.clone(),
        env_ref: s.env_ref.clone(),
        env_key: s.env_key.clone(),
        base_version: s.base_version.clone(),
        size: s.size,
        idle_timeout_s: s.idle_timeout_s,
        identity: s.identity.clone(),
        compute: s.compute.clone(),
        shared: s.shared,
        status: s.status,
        phase: s.phase,
        reason: s.reason.clone(),
        log_tail: s.log_tail.clone(),
        created: s.created,
        last_activity: s.last_activity,
        updated: s.updated,
        update_available,
        note: None,
        actions,
    }
}

/// What `caller` may do with session `s` in its status: the rules `usable` and `modifiable`
/// enforce, said ahead so a page shows only the buttons that will work.
fn actions(s: &Session, caller: &Caller, update_available: bool) -> Vec<SessionAction> {
    use SessionStatus::{Preparing, Running};
    let modify = caller.may_modify(&s.owner);
    let running = s.status == Running;
    [
        // Running lines takes a role that may run flows (a viewer's does not), on a session
        // of one's own or one shared with the workspace.
        (
            SessionAction::Test,
            running && (modify || (s.shared && caller.require_writer().is_ok())),
        ),
        (
            SessionAction::Stop,
            modify && matches!(s.status, Running | Preparing),
        ),
        (SessionAction::Reset, modify && s.status != Preparing),
        (SessionAction::Update, modify && update_available),
        (SessionAction::Edit, modify),
        (SessionAction::Switch, modify && running),
        (SessionAction::Delete, modify),
    ]
    .into_iter()
    .filter_map(|(action, allowed)| allowed.then_some(action))
    .collect()
}

pub async fn visible(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Session> {
    // A session the caller may not see answers exactly as one that does not exist.
    let hidden = || {
        ApiErr::not_found(format!(
            "session '{id}' does not exist, or is not yours (a compute instance's sessions are seen only by the user it is assigned to); `flowrt session list` shows yours, `flowrt session start` starts your own"
        ))
    };
    match state.store.get_session(id).await? {
        Some(s) if caller.may_see_session(&s) => Ok(s),
        _ => Err(hidden()),
    }
}

/// A session the caller may run lines and batches on: one they may change, or one shared with
/// the workspace (the route has already checked they may run flows at all).
pub async fn usable(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Session> {
    let s = visible(state, caller, id).await?;
    if s.shared || caller.may_modify(&s.owner) {
        return Ok(s);
    }
    Err(ApiErr::forbidden(format!(
        "session '{id}' belongs to another user; its owner can share it (`flowrt session start --shared`)"
    )))
}

pub async fn modifiable(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Session> {
    let s = visible(state, caller, id).await?;
    if !caller.may_modify(&s.owner) {
        return Err(ApiErr::forbidden(format!(
            "session '{id}' belongs to another user"
        )));
    }
    Ok(s)
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<SessionView>>> {
    let all = state.store.list_sessions(None).await?;
    Ok(Json(
        all.iter()
            .filter(|s| caller.may_see_session(s))
            .map(|s| view(s, &caller))
            .collect(),
    ))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionView>> {
    Ok(Json(view(&visible(&state, &caller, &id).await?, &caller)))
}

/// Who starts sessions: a role that may run flows, and, where the kernel cannot seal sessions,
/// only the owner (unless the server was told to accept the risk). `start` asks this; the
/// caller's and a flow's `start_session` actions are listed from it.
pub(crate) fn may_start(state: &AppState, caller: &Caller) -> ApiResult<()> {
    caller.require_writer()?;
    if !state.sessions.seal && !state.config.allow_unsealed && !caller.is_owner() {
        return Err(ApiErr::forbidden(
            "this server's kernel cannot seal sessions (no Landlock), so only the owner may start them; the owner can restart the server with --allow-unsealed-sessions-for-everyone to accept the risk",
        ));
    }
    Ok(())
}

/// May the caller start a session: the route table's permission for `POST /api/v1/sessions`,
/// and [`may_start`].
pub(crate) fn may_start_sessions(state: &AppState, caller: &Caller) -> bool {
    let start = may_start(state, caller).is_ok();
    crate::routing::allows_all(
        &caller.0,
        [crate::routing::offer((), "post", "/api/v1/sessions", start)],
    )
}

async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<flowrt_api::requests::StartSession>,
) -> ApiResult<(StatusCode, Json<SessionView>)> {
    may_start(&state, &caller)?;
    if req.shared && req.compute.is_some() {
        return Err(ApiErr::bad_request(
            "a compute instance's sessions are its user's alone; share a serverless session (leave out compute)",
        ));
    }
    // The server runs only what was pushed: a path means nothing here.
    if req.flow.contains('/') {
        return Err(ApiErr::bad_request(format!(
            "'{}' looks like a path; the server runs flows pushed to it: `flowrt flow push DIR`, then name the flow (NAME or NAME@vN)",
            req.flow
        )));
    }
    let rec = crate::flows::resolve(&state, &caller, &req.flow).await?;
    let (_, flow_dir) = crate::flows::snapshot_dir(&state, &rec).await?;
    let load_from = flow_dir.clone();
    let flow = tokio::task::spawn_blocking(move || {
        flowrt_flow::load_flow(&load_from, &Default::default())
    })
    .await
    .map_err(|e| ApiErr::internal("loading the flow", e))?
    .map_err(|e| ApiErr::bad_request(e.to_string()))?;
    let env_text = req
        .env
        .clone()
        .or_else(|| flow.environment.image.clone())
        .unwrap_or_else(|| "default".into());
    let (env_ref, base_version) = resolve_env(&state, &env_text).await?;
    if let Some(compute) = &req.compute {
        // Only the caller's own compute instances take their sessions.
        let c = state
            .store
            .get_compute(&caller.0.id, compute)
            .await?
            .ok_or_else(|| {
                ApiErr::not_found(format!(
                    "you have no compute instance '{compute}'; `flowrt compute list` shows yours, `flowrt compute create {compute}` makes one"
                ))
            })?;
        if c.status != flowrt_store::ComputeStatus::Running {
            return Err(ApiErr::conflict(format!("compute instance '{compute}' is stopped; start it with `flowrt compute start {compute}`")));
        }
    }
    if let Some(identity) = &req.identity {
        let found = state
            .store
            .list_identities()
            .await?
            .into_iter()
            .find(|i| &i.name == identity);
        match found {
            None => {
                return Err(ApiErr::bad_request(format!(
                    "identity '{identity}' does not exist"
                )))
            }
            // Acting as an identity hands its feed token to the session's installs: only its
            // owner and the users it is granted to may.
            Some(i) if i.owner != caller.0.id && !i.granted.contains(&caller.0.id) => {
                return Err(ApiErr::forbidden(format!(
                    "identity '{identity}' is not granted to you; its owner can grant it: `flowrt identity grant {identity} {}`",
                    caller.0.name
                )))
            }
            Some(_) => {}
        }
    }
    let s = state
        .store
        .insert_session(&NewSession {
            owner: caller.0.id.clone(),
            flow_dir: flow_dir.display().to_string(),
            flow_ref: Some(rec.reference()),
            env_ref,
            env_key: None,
            base_version,
            size: req.size,
            idle_timeout_s: check_idle_timeout(req.idle_timeout_s)?.unwrap_or(3600),
            identity: req.identity.clone(),
            compute: req.compute.clone(),
            shared: req.shared,
        })
        .await?;
    tokio::spawn(state.sessions.clone().prepare(s.id.clone()));
    Ok((StatusCode::ACCEPTED, Json(view(&s, &caller))))
}

/// `default`, `default@VERSION` or a published `NAME@vN` as `(env_ref, base_version)` a
/// session records, or the 400 that says which exist.
pub async fn resolve_env(state: &AppState, env_text: &str) -> ApiResult<(String, String)> {
    let resolved = match EnvRef::parse(env_text).map_err(|e| ApiErr::bad_request(e.to_string()))? {
        EnvRef::Base { version } => {
            let base = match version.as_deref() {
                None => flowrt_python::latest_base(),
                Some(v) => flowrt_python::find_base(v).ok_or_else(|| {
                    ApiErr::bad_request(format!(
                        "unknown base environment 'default@{v}'; `flowrt env list` shows them"
                    ))
                })?,
            };
            (
                format!("default@{}", base.version),
                base.version.to_string(),
            )
        }
        EnvRef::Custom { name, version } => {
            let rec = state
                .store
                .get_environment(&name, version)
                .await?
                .ok_or_else(|| {
                    let v = version.map(|v| format!("@v{v}")).unwrap_or_default();
                    ApiErr::bad_request(format!(
                        "environment '{name}{v}' does not exist; `flowrt env list` shows them"
                    ))
                })?;
            (format!("{}@v{}", rec.name, rec.version), rec.base_version)
        }
    };
    Ok(resolved)
}

/// The longest idle timeout a session may have: a year (0 means none).
const MAX_IDLE_TIMEOUT_S: u64 = 365 * 24 * 3600;

fn check_idle_timeout(t: Option<u64>) -> ApiResult<Option<u64>> {
    match t {
        Some(t) if t > MAX_IDLE_TIMEOUT_S => Err(ApiErr::bad_request(format!(
            "idle_timeout_s is {t}: give seconds between 0 (never) and {MAX_IDLE_TIMEOUT_S} (a year)"
        ))),
        t => Ok(t),
    }
}

async fn edit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<flowrt_api::requests::EditSession>,
) -> ApiResult<Json<SessionView>> {
    let s = modifiable(&state, &caller, &id).await?;
    let idle_timeout_s = check_idle_timeout(req.idle_timeout_s)?;
    let size = req.size.unwrap_or(s.size);
    state
        .store
        .update_session_settings(&id, size, idle_timeout_s.unwrap_or(s.idle_timeout_s))
        .await?;
    let _ = state.sessions.changes.send(id.clone());
    let mut v = view(&state.sessions.get(&id).await?, &caller);
    if size != s.size && s.status == SessionStatus::Running {
        v.note =
            Some("the new size applies when the session restarts (`flowrt session reset`)".into());
    }
    Ok(Json(v))
}

async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionView>> {
    modifiable(&state, &caller, &id).await?;
    state.sessions.stop(&id, Event::StopRequested).await?;
    Ok(Json(view(&state.sessions.get(&id).await?, &caller)))
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let s = modifiable(&state, &caller, &id).await?;
    if matches!(s.status, SessionStatus::Running | SessionStatus::Preparing) {
        let _ = state.sessions.stop(&id, Event::StopRequested).await;
    }
    state.store.delete_session(&id).await?;
    state.sessions.release_uid(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// Delete the agent and start it again with the same environment.
async fn reset(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<SessionView>)> {
    let s = modifiable(&state, &caller, &id).await?;
    // Only its managing server restarts a session: another would stop it and then not be let
    // start it again.
    if let Some(other) = state.sessions.managed_elsewhere(&s) {
        return Err(ApiErr::conflict(format!(
            "session '{id}' is managed by server '{other}', which shares this database; reset it through that server (or wait until its lease ends, if that server is gone)"
        )));
    }
    if matches!(s.status, SessionStatus::Running | SessionStatus::Failed) {
        state.sessions.stop(&id, Event::StopRequested).await?;
    } else if s.status == SessionStatus::Preparing {
        return Err(ApiErr::conflict(format!(
            "session '{id}' is still preparing; wait for it, or stop it first"
        )));
    }
    tokio::spawn(state.sessions.clone().prepare(id.clone()));
    Ok((
        StatusCode::ACCEPTED,
        Json(view(&state.sessions.get(&id).await?, &caller)),
    ))
}

/// Move to the latest base environment version, then restart.
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<SessionView>)> {
    let s = modifiable(&state, &caller, &id).await?;
    let latest = flowrt_python::latest_base().version;
    if !s.env_ref.starts_with("default") {
        return Err(ApiErr::conflict(format!(
            "session '{id}' uses custom environment {}; publish a new version of it instead",
            s.env_ref
        )));
    }
    if s.base_version == latest {
        return Err(ApiErr::conflict(format!(
            "session '{id}' already runs the latest base environment ({latest})"
        )));
    }
    state
        .store
        .update_session_env(&id, &format!("default@{latest}"), None, latest)
        .await?;
    reset(State(state), caller, Path(id)).await
}

pub async fn agent_of(s: &Session) -> ApiResult<String> {
    match (&s.status, &s.agent_addr) {
        (SessionStatus::Running, Some(addr)) => Ok(addr.clone()),
        _ => Err(ApiErr::conflict(format!(
            "session '{}' is {}, not Running{}",
            s.id,
            s.status,
            match s.status {
                SessionStatus::Failed | SessionStatus::Stopped | SessionStatus::NotAvailable =>
                    format!("\nhint: `flowrt session reset {}` starts it again (with its environment cached, in about a second)", s.id),
                SessionStatus::Preparing => format!("\nhint: it is still starting; `flowrt session show {}` follows it", s.id),
                _ => String::new(),
            }
        ))),
    }
}

/// Listed by the server from the session's environment (`uv pip list`): no user code runs.
async fn packages(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<PackageView>>> {
    let s = visible(&state, &caller, &id).await?;
    if state.sessions.ray.is_some() {
        // The environment is on the session's node: its agent lists it.
        let addr = agent_of(&s).await.map_err(|_| {
            ApiErr::conflict(format!(
                "session '{id}' is {}: its environment is on the Ray node that runs it, so its packages are listed while it runs\nhint: `flowrt session reset {id}` starts it",
                s.status
            ))
        })?;
        let token = state.sessions.agent_token(&s.id).await;
        let list = client::packages(&addr, &token).await.map_err(|e| {
            ApiErr::conflict(format!(
                "the session's agent could not list its packages: {e}"
            ))
        })?;
        return Ok(Json(list));
    }
    let python = match &s.env_key {
        Some(key) => state
            .config
            .home
            .join("envs")
            .join(key)
            .join("bin")
            .join("python"),
        None => flowrt_python::default_python(),
    };
    let list = tokio::task::spawn_blocking(move || flowrt_python::installed_packages(&python))
        .await
        .map_err(|e| ApiErr::internal("listing packages", e))?
        .map_err(|e| ApiErr::internal("listing packages", e))?;
    Ok(Json(list.into_iter().map(package_view).collect()))
}

fn package_view(p: flowrt_python::Package) -> PackageView {
    PackageView {
        name: p.name,
        version: p.version,
        source: match p.source {
            flowrt_python::PackageSource::Base => PackageOrigin::Base,
            flowrt_python::PackageSource::Requirements => PackageOrigin::Requirements,
        },
    }
}

/// Save the flow's requirements and (unless save-only) rebuild and restart the session with them.
async fn install(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<flowrt_api::requests::InstallRequirements>,
) -> ApiResult<(StatusCode, Json<SessionView>)> {
    let s = modifiable(&state, &caller, &id).await?;
    if req.requirements.len() > 1024 * 1024 {
        return Err(ApiErr::bad_request(
            "requirements larger than 1 MiB; a requirements.txt lists packages",
        ));
    }
    // Snapshots never change: saving requirements makes the next version of the session's flow.
    let reference = s.flow_ref.clone().ok_or_else(|| {
        ApiErr::conflict(format!(
            "session '{id}' runs no workspace flow; start a new session"
        ))
    })?;
    let rec = crate::flows::resolve(&state, &caller, &reference).await?;
    if !caller.may_modify(&rec.owner) {
        return Err(ApiErr::forbidden(format!(
            "flow '{}' belongs to another user; push a copy under your own name and start a session on it",
            rec.name
        )));
    }
    let (snapshot, load_from) = crate::flows::snapshot_dir(&state, &rec).await?;
    let loaded = load_from.clone();
    let flow =
        tokio::task::spawn_blocking(move || flowrt_flow::load_flow(&loaded, &Default::default()))
            .await
            .map_err(|e| ApiErr::internal("loading the flow", e))?
            .map_err(|e| ApiErr::bad_request(e.to_string()))?;
    // Inside the flow (a file named outside it was taken in under its own name); the loader has
    // checked that this path stays there.
    let rel = flow.requirements_rel();
    let root = state.config.home.join("snapshots");
    let tmp = root.join(format!("incoming-{id}-{}", std::process::id()));
    let requirements = req.requirements.clone();
    let (tmp2, rel2) = (tmp.clone(), rel.clone());
    let info = tokio::task::spawn_blocking(
        move || -> Result<flowrt_store::snapshot::SnapshotInfo, String> {
            copy_flow(&snapshot, &tmp2).map_err(|e| e.to_string())?;
            std::fs::write(tmp2.join(&rel2), requirements).map_err(|e| e.to_string())?;
            let limits = flowrt_store::snapshot::SnapshotLimits::default();
            let info = flowrt_store::snapshot::settle(&tmp2, &limits).map_err(|e| e.to_string())?;
            Ok(info)
        },
    )
    .await
    .map_err(|e| ApiErr::internal("saving requirements", e))?
    .map_err(|e| {
        let _ = std::fs::remove_dir_all(&tmp);
        ApiErr::internal("saving requirements", e)
    })?;
    state
        .blobs
        .publish_tree(&root.join(info.hash.trim_start_matches("sha256:")))
        .await
        .map_err(|e| ApiErr::internal("saving requirements", e))?;
    let (new_rec, _) = state
        .store
        .push_flow(
            &rec.name,
            &rec.owner,
            &info.hash,
            rec.entry.as_deref(),
            info.files as u64,
            info.bytes,
        )
        .await?;
    let (_, new_load) = crate::flows::snapshot_dir(&state, &new_rec).await?;
    state
        .store
        .update_session_flow(&id, &new_load.display().to_string(), &new_rec.reference())
        .await?;
    let _ = state.sessions.changes.send(id.clone());
    if req.save_only {
        let mut v = view(&state.sessions.get(&id).await?, &caller);
        v.note = Some(format!(
            "saved {rel} as flow {}; it is installed at the next start or reset",
            new_rec.reference()
        ));
        return Ok((StatusCode::OK, Json(v)));
    }
    reset(State(state), caller, Path(id)).await
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    offset: u64,
}

/// The agent log from `offset` (bytes); `flowrt session logs --follow` polls with the returned offset.
async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<LogChunk>> {
    let s = visible(&state, &caller, &id).await?;
    if state.sessions.ray.is_some() {
        // The log is on the session's node: its agent reads it out, while it runs.
        let text = match agent_of(&s).await {
            Ok(addr) => {
                let token = state.sessions.agent_token(&s.id).await;
                match client::log(&addr, &token, q.offset).await {
                    Ok(piece) => {
                        return Ok(Json(LogChunk {
                            text: piece.text,
                            offset: piece.offset,
                            status: s.status.to_string(),
                        }))
                    }
                    Err(_) => String::new(),
                }
            }
            // What the server kept of it: the tail it saw when the session ended.
            Err(_) if q.offset == 0 => s.log_tail.clone().unwrap_or_default(),
            Err(_) => String::new(),
        };
        return Ok(Json(LogChunk {
            offset: q.offset + text.len() as u64,
            text,
            status: s.status.to_string(),
        }));
    }
    // The log is in the session's folder: read without following a link, 1 MiB at a time.
    let bytes = flowrt_session::session_files::read_from(
        &state.sessions.workdir(&s.id),
        "agent.log",
        q.offset,
        1024 * 1024,
    )
    .unwrap_or_default();
    Ok(Json(LogChunk {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        offset: q.offset + bytes.len() as u64,
        status: s.status.to_string(),
    }))
}

/// An interactive test: one line in the session, bounded by the server's request timeout.
async fn test(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    Json(req): Json<flowrt_api::requests::TestLine>,
) -> ApiResult<axum::response::Response> {
    let s = usable(&state, &caller, &id).await?;
    let inputs = match req.inputs {
        Value::Null => json!({}),
        v @ Value::Object(_) => v,
        other => {
            return Err(ApiErr::bad_request(format!(
            "inputs must be a JSON object of flow inputs, like {{\"question\": \"hi\"}}; got {}",
            match other {
                Value::Array(_) => "a list",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                _ => "a boolean",
            }
        )))
        }
    };
    let addr = agent_of(&s).await?;
    let timeout = state.config.interactive_timeout;
    let mut line = client::LineRequest {
        inputs: match inputs {
            Value::Object(map) => map.into_iter().collect(),
            _ => Default::default(),
        },
        trace: None,
        connections: None,
    };
    let token = state.sessions.agent_token(&id).await;
    let wants_stream = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    // A test's spans come back with its answer (whole, or in the stream's `result` event); this
    // server exports them and answers the client without them.
    if state.runs.exporters.is_some() {
        line.trace = Some(flowrt_api::trace::TraceAs {
            collection: flowrt_workspace::collection_of(s.flow_ref.as_deref()),
            ..Default::default()
        });
    }
    if wants_stream {
        // The agent's events, relayed as they come: reply chunks, then the result.
        let resp = client::stream_line(&addr, &token, &line, timeout)
            .await
            .map_err(|e| ApiErr::internal("the interactive test", e))?;
        let _ = state.store.touch_session(&id).await;
        if resp.status().as_u16() == 400 {
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(ApiErr::bad_request(
                v["message"].as_str().unwrap_or("bad inputs").to_string(),
            ));
        }
        let body = match (&state.runs.exporters, &line.trace) {
            (Some(exporters), Some(trace)) => axum::body::Body::from_stream(without_spans(
                resp.bytes_stream(),
                exporters.clone(),
                trace.clone(),
            )),
            _ => axum::body::Body::from_stream(resp.bytes_stream()),
        };
        return axum::response::Response::builder()
            .status(StatusCode::OK)
            .header(axum::http::header::CONTENT_TYPE, "text/event-stream")
            .header(axum::http::header::CACHE_CONTROL, "no-cache")
            .body(body)
            .map_err(|e| ApiErr::internal("relaying the interactive test", e));
    }
    let result = client::run_line::<LineResult>(&addr, &token, &line, timeout).await;
    let _ = state.store.touch_session(&id).await;
    match result {
        Ok(mut reply) => {
            let spans = std::mem::take(&mut reply.spans);
            if let (Some(exporters), Some(trace)) = (&state.runs.exporters, &line.trace) {
                export_test_spans(exporters, trace, spans);
            }
            Ok(axum::response::IntoResponse::into_response(Json(reply)))
        }
        Err(client::ClientError::Refused { status: 400, message, .. }) => {
            Err(ApiErr::bad_request(message))
        }
        Err(client::ClientError::Timeout { .. }) => Err(ApiErr::new(
            StatusCode::GATEWAY_TIMEOUT,
            flowrt_api::ErrorCode::InteractiveTimeout,
            format!(
                "the interactive test did not finish within the server's request timeout ({} s); run it as a batch run (`flowrt run create --session {id} ...`), which has no overall timeout",
                timeout.as_secs_f64()
            ),
        )),
        Err(e) => Err(ApiErr::internal("the interactive test", e)),
    }
}

/// Export a session test's spans as what `trace` (this server's) says they are: the agent
/// shares its session with the flow's code.
pub(crate) fn export_test_spans(
    exporters: &flowrt_runtime::otel::Exporters,
    trace: &flowrt_api::trace::TraceAs,
    mut spans: Vec<flowrt_api::trace::TraceSpan>,
) {
    spans.iter_mut().for_each(|s| trace.stamp(s));
    exporters.export(&trace.collection, spans);
}

/// An agent's stream of test events, relayed whole event by event, with the spans of its
/// `result` event taken out and exported.
fn without_spans<S, E>(
    agent: S,
    exporters: Arc<flowrt_runtime::otel::Exporters>,
    trace: flowrt_api::trace::TraceAs,
) -> impl futures::Stream<Item = Result<axum::body::Bytes, E>>
where
    S: futures::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
{
    use futures::StreamExt;
    futures::stream::unfold(
        (agent, Vec::<u8>::new(), false),
        move |(mut agent, mut pending, done)| {
            let (exporters, trace) = (exporters.clone(), trace.clone());
            async move {
                if done {
                    return None;
                }
                loop {
                    // Whole events (they end with a blank line) go on; a piece waits for its rest.
                    if let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                        let block: Vec<u8> = pending.drain(..end + 2).collect();
                        let out = take_spans(block, &exporters, &trace);
                        return Some((Ok(axum::body::Bytes::from(out)), (agent, pending, false)));
                    }
                    match agent.next().await {
                        Some(Ok(bytes)) => pending.extend_from_slice(&bytes),
                        Some(Err(e)) => return Some((Err(e), (agent, pending, true))),
                        None => {
                            let rest = std::mem::take(&mut pending);
                            return (!rest.is_empty()).then(|| {
                                (Ok(axum::body::Bytes::from(rest)), (agent, pending, true))
                            });
                        }
                    }
                }
            }
        },
    )
}

/// One server-sent event: a `result` whose data carries spans is written again without them,
/// which are exported; anything else is passed on as it is.
fn take_spans(
    block: Vec<u8>,
    exporters: &flowrt_runtime::otel::Exporters,
    trace: &flowrt_api::trace::TraceAs,
) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(&block) else {
        return block;
    };
    let Some(data) = text
        .strip_prefix("event: result\ndata: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
    else {
        return block;
    };
    let Ok(mut result) = flowrt_flow::nonfinite::from_json_text(data) else {
        return block;
    };
    let Some(spans) = result.as_object_mut().and_then(|o| o.remove("spans")) else {
        return block;
    };
    if let Ok(spans) = serde_json::from_value::<Vec<flowrt_api::trace::TraceSpan>>(spans) {
        export_test_spans(exporters, trace, spans);
    }
    format!(
        "event: result\ndata: {}\n\n",
        flowrt_flow::pyvalue::py_json_dumps(&result)
    )
    .into_bytes()
}

/// `GET /api/v1/sessions/events`: server-sent events as the caller's sessions change: a
/// `session` event with the session's view whenever its status, phase, reason, size, flow or
/// idle timeout changes (and once for each at the start), so a page shows starts, failures and
/// stops live without reloading.
async fn session_events(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<
    axum::response::sse::Sse<
        impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;
    let caller = Arc::new(caller);
    let stopping = state.stopping.clone();
    let rx = state.sessions.changes.subscribe();
    // First every visible session as it is, then each change as it happens (a lagging reader
    // gets everything again rather than missing a change).
    let stream = futures::stream::unfold((state, rx, true), move |(state, mut rx, first)| {
        let caller = caller.clone();
        let stopping = stopping.clone();
        async move {
            let all_visible = |state: AppState, caller: Arc<Caller>| async move {
                let all = state.store.list_sessions(None).await.ok()?;
                Some(
                    all.into_iter()
                        .filter(|s| caller.may_see_session(s))
                        .collect::<Vec<_>>(),
                )
            };
            let sessions: Vec<flowrt_store::Session> = if first {
                all_visible(state.clone(), caller.clone()).await?
            } else {
                loop {
                    if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                        return None;
                    }
                    match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
                        Ok(Ok(id)) => match state.store.get_session(&id).await {
                            Ok(Some(s)) if caller.may_see_session(&s) => break vec![s],
                            _ => continue,
                        },
                        Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                            break all_visible(state.clone(), caller.clone()).await?;
                        }
                        Ok(Err(_)) => return None,
                        Err(_) => continue, // no change: look at the stop flag again
                    }
                }
            };
            let out: Vec<Result<Event, std::convert::Infallible>> = sessions
                .iter()
                .map(|s| {
                    let data = serde_json::to_string(&view(s, &caller)).unwrap_or_default();
                    Ok(Event::default().event("session").data(data))
                })
                .collect();
            Some((futures::stream::iter(out), (state, rx, false)))
        }
    })
    .flat_map(|events| events);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flowrt_api::workspace::Role;
    use SessionAction::*;

    pub(crate) fn caller(id: &str, role: Role) -> Caller {
        Caller(flowrt_store::User {
            id: id.into(),
            name: id.into(),
            role,
            extra_roles: vec![],
            disabled: false,
            service: false,
            created: 0,
        })
    }

    /// A session of `u-ann`'s.
    pub(crate) fn session(status: SessionStatus, shared: bool) -> Session {
        Session {
            id: "s-1".into(),
            owner: "u-ann".into(),
            flow_dir: String::new(),
            flow_ref: Some("qa@v1".into()),
            env_ref: "default".into(),
            env_key: None,
            base_version: "0".into(),
            size: flowrt_api::SessionSize::Small,
            idle_timeout_s: 0,
            identity: None,
            compute: None,
            shared,
            status,
            phase: None,
            reason: None,
            log_tail: None,
            agent_pid: None,
            agent_addr: None,
            created: 0,
            last_activity: 0,
            updated: 0,
            manager: None,
            manager_lease: None,
        }
    }

    /// The buttons a page shows are the actions the server would allow: by who asks and by the
    /// session's status.
    #[test]
    fn each_caller_gets_the_actions_the_server_allows() {
        let ann = caller("u-ann", Role::User);
        let bob = caller("u-bob", Role::User);
        let admin = caller("u-adm", Role::Admin);
        let viewer = caller("u-vwr", Role::Viewer);
        let running = session(SessionStatus::Running, false);
        assert_eq!(
            actions(&running, &ann, false),
            [Test, Stop, Reset, Edit, Switch, Delete]
        );
        assert_eq!(
            actions(&running, &ann, true),
            [Test, Stop, Reset, Update, Edit, Switch, Delete]
        );
        assert_eq!(
            actions(&running, &admin, false),
            actions(&running, &ann, false)
        );
        assert_eq!(actions(&running, &bob, false), []);
        let preparing = session(SessionStatus::Preparing, false);
        assert_eq!(actions(&preparing, &ann, false), [Stop, Edit, Delete]);
        let stopped = session(SessionStatus::Stopped, false);
        assert_eq!(actions(&stopped, &ann, false), [Reset, Edit, Delete]);
        // Shared: another user may run lines on it, a viewer may not; neither may change it.
        let shared = session(SessionStatus::Running, true);
        assert_eq!(actions(&shared, &bob, false), [Test]);
        assert_eq!(actions(&shared, &viewer, false), []);
        assert_eq!(
            actions(&session(SessionStatus::Stopped, true), &bob, false),
            []
        );
    }
}
