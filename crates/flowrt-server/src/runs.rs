//! Batch and evaluation runs on the server: `/api/v1/runs`. A run is a workspace record (see
//! `flowrt_workspace::runs`): started from a typed request (no command-line passthrough) in one of the
//! caller's sessions, which executes it in its sealed folder, and read from the workspace, never
//! from that folder, for its owner and the workspace's admins.

use crate::auth::Caller;
use crate::error::{ApiErr, ApiResult};
use crate::openapi::{doc, json, list_of, Reply};
use crate::routing::ApiRoutes;
use crate::AppState;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::Json;
use flowrt_api::requests::CreateRun;
use flowrt_api::responses::{
    CancelingRun, DataInfo, LinePage, LineRecord, LogChunk, RunAction, RunStarted, RunView,
    UploadedData,
};
use flowrt_api::workspace::Permission;
use flowrt_session::client;
use flowrt_workspace::runs as workspace_runs;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

/// The most data one run request may carry.
pub const MAX_RUN_DATA: usize = 256 * 1024 * 1024;

/// Runs, the batch data they read, and what they produce as they go.
pub fn routes() -> ApiRoutes {
    run_routes()
        .merge(data_routes())
        .merge(run_progress_routes())
}

/// The workspace's runs: listed, started, shown, deleted, archived and restored.
fn run_routes() -> ApiRoutes {
    ApiRoutes::default()
        .get(
            "/api/v1/runs",
            Permission::Read,
            list,
            doc("List the workspace's runs you may see: yours (admins: everyone's), whichever session ran them (?archived=true: archived ones too).")
                .query::<bool>("archived")
                .reply(200, list_of::<RunView>()),
        )
        .post(
            "/api/v1/runs",
            Permission::SessionsWrite,
            create.layer(DefaultBodyLimit::max(MAX_RUN_DATA + 1024 * 1024)),
            doc("Start a batch or evaluation run {session, flow, name, data, data_format, column_mapping, run, variant, resume_from, line_timeout, concurrency} in a session (no overall timeout); its name is the workspace's.")
                .body::<CreateRun>()
                .reply(202, json::<RunStarted>()),
        )
        .get(
            "/api/v1/runs/{name}",
            Permission::Read,
            show,
            doc("Show a workspace run (?session=ID: only if that session ran it).")
                .query::<String>("session")
                .reply(200, json::<RunView>()),
        )
        .delete(
            "/api/v1/runs/{name}",
            Permission::SessionsWrite,
            delete,
            doc("Delete a finished run: its record, lines, outputs, logs and metrics.")
                .reply(204, Reply::Empty),
        )
        .post(
            "/api/v1/runs/{name}/archive",
            Permission::SessionsWrite,
            archive,
            doc("Archive a run: the list leaves it out unless ?archived=true.")
                .reply(200, json::<RunView>()),
        )
        .post(
            "/api/v1/runs/{name}/restore",
            Permission::SessionsWrite,
            restore,
            doc("Restore an archived run to the list.")
                .reply(200, json::<RunView>()),
        )
}

/// Batch data, uploaded once and named by its content's hash.
fn data_routes() -> ApiRoutes {
    ApiRoutes::default()
        // Streamed to disk: push_data enforces MAX_RUN_DATA as the body arrives.
        .post(
            "/api/v1/data",
            Permission::SessionsWrite,
            push_data,
            doc("Upload batch data (?format=jsonl|csv|tsv; JSONL checked line by line), stored by its content's hash; returns its reference.")
                .binary_body("application/octet-stream")
                .query::<String>("format")
                .reply(201, json::<UploadedData>())
                .reply(200, json::<UploadedData>()),
        )
        .get(
            "/api/v1/data/{reference}",
            Permission::Read,
            data_exists,
            doc("Whether you have uploaded this data (data:sha256:HEX.EXT).")
                .reply(200, json::<DataInfo>()),
        )
}

/// A run's course: its lines, metrics and log, its events while it goes on, and cancelling it.
fn run_progress_routes() -> ApiRoutes {
    ApiRoutes::default()
        .get(
            "/api/v1/runs/{name}/lines",
            Permission::Read,
            lines,
            doc("A run's per-line records (?offset, limit, status).")
                .query::<usize>("offset")
                .query::<usize>("limit")
                .query::<String>("status")
                .query::<String>("session")
                .reply(200, json::<LinePage>()),
        )
        .get(
            "/api/v1/runs/{name}/lines/{line}",
            Permission::Read,
            line,
            doc("One line's record: inputs, outputs, error, node runs with timings and token usage.")
                .query::<String>("session")
                .reply(200, json::<LineRecord>()),
        )
        .get(
            "/api/v1/runs/{name}/metrics",
            Permission::Read,
            metrics,
            doc("A run's metrics.")
                .query::<String>("session")
                .reply(200, Reply::Object),
        )
        .get(
            "/api/v1/runs/{name}/logs",
            Permission::Read,
            logs,
            doc("A run's log from ?offset=N (poll with the returned offset to follow it).")
                .query::<u64>("offset")
                .query::<String>("session")
                .reply(200, json::<LogChunk>()),
        )
        .post(
            "/api/v1/runs/{name}/cancel",
            Permission::SessionsWrite,
            cancel,
            doc("Cancel a running run; finished lines are kept for --resume-from.")
                .query::<String>("session")
                .reply(200, json::<CancelingRun>()),
        )
        .get(
            "/api/v1/runs/{name}/events",
            Permission::Read,
            events,
            doc("Server-sent events while a run goes on: line (each finished line with its nodes), with ?nodes=true node (each node's start and end), progress (counts, rate, time left, and the quota pacing its model calls: endpoint, requests a second, calls a line, wait a call), end.")
                .query::<String>("session")
                .query::<bool>("nodes")
                .reply(200, Reply::Events),
        )
}

/// A run name is a file name in the workspace's and a session's folders: nothing that could
/// leave them.
pub fn check_run_name(name: &str) -> ApiResult<()> {
    flowrt_api::names::check("run", name, flowrt_api::names::RUN_NAME_MAX)
        .map_err(ApiErr::bad_request)
}

/// Every line of JSONL batch data must be a JSON object: say which is not, before anything runs.
pub fn check_jsonl(text: &str) -> ApiResult<()> {
    for (i, line) in text.lines().enumerate() {
        if !line.trim().is_empty() {
            check_jsonl_line(line, i + 1)?;
        }
    }
    Ok(())
}

/// Line `n` of JSONL batch data is a JSON object, or the 400 that says why not.
fn check_jsonl_line(line: &str, n: usize) -> ApiResult<()> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(_)) => Ok(()),
        Ok(_) => Err(ApiErr::bad_request(format!(
            "data line {n}: not a JSON object; each line of a .jsonl file is one row, like {{\"question\": \"...\"}}"
        ))),
        Err(e) => Err(ApiErr::bad_request(format!(
            "data line {n}: not valid JSON: {e}"
        ))),
    }
}

/// The most seconds a line may be given (a week): past that a timeout means none.
const MAX_LINE_TIMEOUT_S: f64 = 7.0 * 24.0 * 3600.0;

/// Spread `batch` over `home` and the sessions `more` names, each of which the caller may use and
/// which is Running or still starting.
async fn spread_over(
    state: &AppState,
    caller: &Caller,
    home: &flowrt_store::Session,
    more: &[String],
    batch: client::BatchRequest,
) -> ApiResult<RunStarted> {
    let mut sessions = Vec::new();
    for id in more {
        if *id == home.id {
            continue;
        }
        let s = crate::sessions::usable(state, caller, id).await?;
        let starting = s.status == flowrt_api::SessionStatus::Preparing
            || s.status == flowrt_api::SessionStatus::NotAvailable;
        if !starting {
            crate::sessions::agent_of(&s).await?;
        }
        sessions.push(s);
    }
    Ok(flowrt_workspace::spread::start(&state.runs, &caller.0.id, home, &sessions, batch).await?)
}

/// `POST /api/v1/runs`: start a run in one of the caller's sessions (or spread over several).
/// Its name is the workspace's before the session's agent is asked to start it.
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<flowrt_api::requests::CreateRun>,
) -> ApiResult<(StatusCode, Json<RunStarted>)> {
    // The request's own bounds first: they do not depend on the session.
    check_bounds(&req)?;
    let s = crate::sessions::usable(&state, &caller, &req.session).await?;
    let addr = crate::sessions::agent_of(&s).await?;
    let id = s.id.clone();
    // A run's records take space: a user past their quota runs nothing more until they free some.
    crate::quota::check(&state, &caller.0.id, 0).await?;
    if let Some(asked) = &req.flow {
        check_flow(&state, &caller, &s, asked).await?;
    }
    if state.store.get_workspace_run(&req.name).await?.is_some() {
        return Err(taken(&req.name));
    }
    let token = state.sessions.agent_token(&id).await;
    let agent = SessionAgent {
        session: &id,
        addr: &addr,
        token: &token,
    };
    let mut batch = batch_request(&req)?;
    give_prior_runs(
        &state,
        &caller,
        req.resume_from.as_deref(),
        &mut batch,
        &agent,
    )
    .await?;
    batch.line_timeout = req.line_timeout;
    batch.concurrency = req.concurrency;
    // With a trace receiver configured here, the session records each line's spans and this
    // server exports them, named by the workspace's flow as promptflow's viewer groups them.
    batch.trace = state
        .runs
        .trace_as(s.flow_ref.as_deref(), &req.name, batch.run.as_deref());
    // A session runs as many Python workers as its size allows, however many lines run at once.
    batch.workers = Some(s.size.limits().workers);
    let stored = request_data(&state, &caller, &req).await?;
    if let Some(n) = req.nodes {
        if n == 0 || n > 64 {
            return Err(ApiErr::bad_request("nodes must be between 1 and 64"));
        }
    }
    let spread = !req.more_sessions.is_empty() || req.nodes.is_some_and(|n| n > 1);
    let mut record = workspace_runs::initial_record(&req.name, &id, s.flow_ref.as_deref(), &batch);
    if let Some(compute) = &s.compute {
        // What runs on a compute instance is seen by the user it is assigned to alone.
        record["compute_instance"] = json!(compute);
    }
    if spread {
        record["spread"] = json!([id]);
        batch.data = stored.map(|(path, _)| path);
        let started = start_spread(&state, &caller, &s, &req, &record, batch).await;
        return started.map(|started| (StatusCode::ACCEPTED, Json(started)));
    }
    start_in_session(&state, &caller.0.id, &record, batch, stored, &agent).await?;
    workspace_runs::follow(&state.runs, &req.name);
    let _ = state.store.touch_session(&id).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(RunStarted {
            name: req.name,
            session: id,
        }),
    ))
}

/// The agent of the session a run starts in: the session, where its agent listens and the
/// token it is called with.
struct SessionAgent<'a> {
    session: &'a str,
    addr: &'a str,
    token: &'a str,
}

/// A run request's own bounds: its name, its line timeout and its concurrency.
fn check_bounds(req: &flowrt_api::requests::CreateRun) -> ApiResult<()> {
    check_run_name(&req.name)?;
    if let Some(t) = req.line_timeout {
        if !(t.is_finite() && t > 0.0 && t <= MAX_LINE_TIMEOUT_S) {
            return Err(ApiErr::bad_request(format!(
                "line_timeout is {t}: give seconds between 0 and {MAX_LINE_TIMEOUT_S} (a week)"
            )));
        }
    }
    if req.concurrency.is_some_and(|c| c == 0 || c > 1024) {
        return Err(ApiErr::bad_request(
            "concurrency must be between 1 and 1024",
        ));
    }
    Ok(())
}

/// What the session's agent is asked, as the request names it: the run, its base run, the run
/// it resumes, the variant and the column mapping (each key a flow input name).
fn batch_request(req: &flowrt_api::requests::CreateRun) -> ApiResult<client::BatchRequest> {
    let mut batch = client::BatchRequest {
        name: req.name.clone(),
        run: req.run.clone(),
        resume_from: req.resume_from.clone(),
        variant: req.variant.clone(),
        ..Default::default()
    };
    for (input, value) in &req.column_mapping {
        if input.is_empty() || input.contains('=') {
            return Err(ApiErr::bad_request(format!(
                "column_mapping key '{input}' is not a flow input name"
            )));
        }
        batch.column_mapping.insert(input.clone(), value.clone());
    }
    for r in [&req.run, &req.resume_from].into_iter().flatten() {
        check_run_name(r)?;
    }
    Ok(batch)
}

/// A resume and an evaluation read workspace runs, whichever session ran them: the server
/// gives them to this session's agent from the workspace's copy. A resumed run also gives the
/// request what it does not say otherwise (its mapping, base run and variant).
async fn give_prior_runs(
    state: &AppState,
    caller: &Caller,
    resume_from: Option<&str>,
    batch: &mut client::BatchRequest,
    agent: &SessionAgent<'_>,
) -> ApiResult<()> {
    if let Some(prev) = resume_from {
        let prev_run = finished_run(state, caller, prev, "resume").await?;
        inherit_from_resumed(batch, &prev_run.record);
        workspace_runs::send_to_session(
            &state.runs,
            &prev_run,
            agent.addr,
            agent.token,
            &["line_runs.jsonl", "data.jsonl", "flow_outputs/output.jsonl"],
        )
        .await?;
    }
    if let Some(base) = &batch.run.clone() {
        let base_run = finished_run(state, caller, base, "evaluate").await?;
        workspace_runs::send_to_session(
            &state.runs,
            &base_run,
            agent.addr,
            agent.token,
            &["data.jsonl", "flow_outputs/output.jsonl"],
        )
        .await?;
    }
    Ok(())
}

/// What the resumed run (its workspace `record`) was asked, unless this request says otherwise.
fn inherit_from_resumed(batch: &mut client::BatchRequest, record: &Value) {
    if batch.column_mapping.is_empty() {
        if let Some(m) = record["column_mapping"].as_object() {
            for (k, v) in m {
                batch
                    .column_mapping
                    .insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
    }
    if batch.run.is_none() {
        batch.run = record["base_run"].as_str().map(str::to_string);
    }
    if batch.variant.is_none() {
        batch.variant = record["variant"].as_str().map(str::to_string);
    }
}

/// The run's data, as the workspace keeps it (stored by its hash, per user): its path and its
/// file name (`HASH.EXT`), which the session's agent is given a copy of. `None` for a resume
/// that brings no data of its own.
async fn request_data(
    state: &AppState,
    caller: &Caller,
    req: &flowrt_api::requests::CreateRun,
) -> ApiResult<Option<(PathBuf, String)>> {
    match (&req.data, &req.data_ref) {
        (Some(_), Some(_)) => Err(ApiErr::bad_request("give data or data_ref, not both")),
        (None, Some(reference)) => {
            let (hash, ext) = parse_data_ref(reference)?;
            let path = data_path(state, &caller.0.id, &hash, ext);
            let here = state
                .blobs
                .fetch_file(&path)
                .await
                .map_err(|e| ApiErr::internal("fetching the data", e))?;
            if !here {
                return Err(ApiErr::not_found(format!(
                    "no data {reference} of yours; push it with `flowrt data push FILE`"
                )));
            }
            Ok(Some((path, format!("{hash}.{ext}"))))
        }
        (Some(data), None) => {
            let ext = data_format(req.data_format.as_deref())?;
            if ext == "jsonl" {
                check_jsonl(data)?;
            }
            let (path, hash) = store_data(state, &caller.0.id, ext, data.as_bytes()).await?;
            Ok(Some((path, format!("{hash}.{ext}"))))
        }
        (None, None) if req.resume_from.is_none() => Err(ApiErr::bad_request(
            "a run needs data ('data' with the file's text, or 'data_ref' from `flowrt data push`), unless it resumes another",
        )),
        (None, None) => Ok(None),
    }
}

/// Start a run spread over several sessions: `s`, those the request names and the helpers it
/// asks for (`nodes`). The run is recorded before its helper sessions start, so its name is
/// taken at once; a run that does not start gives it back.
async fn start_spread(
    state: &AppState,
    caller: &Caller,
    s: &flowrt_store::Session,
    req: &flowrt_api::requests::CreateRun,
    record: &Value,
    batch: client::BatchRequest,
) -> ApiResult<RunStarted> {
    let mut more = req.more_sessions.clone();
    state
        .store
        .insert_workspace_run(&req.name, &caller.0.id, &s.id, record)
        .await
        .map_err(|e| exists_as_taken(e, &req.name))?;
    if let Some(n) = req.nodes {
        match flowrt_workspace::spread::start_helpers(&state.runs, &caller.0.id, s, n - 1).await {
            Ok(ids) => more.extend(ids),
            Err(e) => {
                let _ = state.store.delete_workspace_run(&req.name).await;
                return Err(e.into());
            }
        }
    }
    let started = spread_over(state, caller, s, &more, batch).await;
    if started.is_err() {
        let _ = state.store.delete_workspace_run(&req.name).await;
    }
    started
}

/// Start the run in the agent's session alone: its data (`stored`) given to the agent, its
/// name taken in the workspace with `record`, then the agent asked to start it; a run the agent
/// refuses gives the name back.
async fn start_in_session(
    state: &AppState,
    owner: &str,
    record: &Value,
    mut batch: client::BatchRequest,
    stored: Option<(PathBuf, String)>,
    agent: &SessionAgent<'_>,
) -> ApiResult<()> {
    if let Some((path, file)) = stored {
        batch.data = Some(
            client::ensure_data(agent.addr, agent.token, &file, client::Upload::File(path))
                .await
                .map_err(|e| ApiErr::internal("giving the batch data to the session", e))?,
        );
    }
    // The name is the workspace's from here on; a run the agent refuses gives it back.
    state
        .store
        .insert_workspace_run(&batch.name, owner, agent.session, record)
        .await
        .map_err(|e| exists_as_taken(e, &batch.name))?;
    if let Err(e) = ask_to_start(agent, &batch).await {
        let _ = state.store.delete_workspace_run(&batch.name).await;
        return Err(e);
    }
    Ok(())
}

/// Ask the session's agent to start the run; a run it refuses as a bad request is the caller's
/// 400 with its message.
async fn ask_to_start(agent: &SessionAgent<'_>, batch: &client::BatchRequest) -> ApiResult<()> {
    match client::start_batch(agent.addr, agent.token, batch, Duration::from_secs(10)).await {
        Ok(_) => Ok(()),
        Err(client::ClientError::Refused {
            status: 400,
            message,
            ..
        }) => Err(ApiErr::bad_request(message)),
        Err(e) => Err(ApiErr::internal("starting the batch run", e)),
    }
}

fn taken(name: &str) -> ApiErr {
    ApiErr::conflict(format!(
        "a run named '{name}' already exists in the workspace; pick another name (`flowrt run list` shows yours)"
    ))
}

fn exists_as_taken(e: flowrt_store::StoreError, name: &str) -> ApiErr {
    match e {
        flowrt_store::StoreError::Exists { .. } => taken(name),
        other => other.into(),
    }
}

/// A session runs its own flow: a request that names another is refused, naming both.
async fn check_flow(
    state: &AppState,
    caller: &Caller,
    s: &flowrt_store::Session,
    asked: &str,
) -> ApiResult<()> {
    let wanted = crate::flows::resolve(state, caller, asked).await?;
    let wanted_ref = format!("{}@v{}", wanted.name, wanted.version);
    let runs = s
        .flow_ref
        .as_deref()
        .unwrap_or("a flow outside the workspace");
    if s.flow_ref.as_deref() == Some(wanted_ref.as_str()) {
        return Ok(());
    }
    Err(ApiErr::bad_request(format!(
        "session '{}' runs {runs}, not {wanted_ref}: a session runs its own flow\nhint: start a session on {wanted_ref} (`flowrt session start --flow DIR`) and give the run that one with --session",
        s.id
    )))
}

/// Workspace run `name` for a resume or an evaluation (`what`): the caller's to see, and ended.
async fn finished_run(
    state: &AppState,
    caller: &Caller,
    name: &str,
    what: &str,
) -> ApiResult<flowrt_store::WorkspaceRun> {
    let run = find(state, caller, name, &Which { session: None }).await?;
    if run.status == "Running" {
        return Err(ApiErr::conflict(format!(
            "run '{name}' is still running; wait for it (`flowrt run show {name}`) before you {what} it"
        )));
    }
    Ok(run)
}

#[derive(Deserialize)]
struct Which {
    /// Only the run executed by this session (an older client's way to pick among sessions).
    #[serde(default)]
    session: Option<String>,
}

/// May the caller see `run`? Runs are their creators'. Admins, and viewers (who read the
/// workspace's assets, as they read its flows), see the others' too, but not those run on a
/// compute instance (seen by the user it is assigned to alone, as its sessions are). Sharing a
/// session shares the compute, not its owner's history.
fn may_see_run(caller: &Caller, run: &flowrt_store::WorkspaceRun) -> bool {
    let reader = caller.is_admin() || caller.0.role == flowrt_store::Role::Viewer;
    caller.0.id == run.owner || (reader && run.record.get("compute_instance").is_none())
}

/// The workspace run `name`, if the caller may see it (one they may not answers as one that
/// does not exist).
async fn find(
    state: &AppState,
    caller: &Caller,
    name: &str,
    which: &Which,
) -> ApiResult<flowrt_store::WorkspaceRun> {
    check_run_name(name)?;
    match state.store.get_workspace_run(name).await? {
        Some(run)
            if may_see_run(caller, &run)
                && which.session.as_deref().is_none_or(|w| w == run.session_id) =>
        {
            Ok(run)
        }
        _ => Err(ApiErr::not_found(format!(
            "run '{name}' does not exist in the workspace, or is not yours; `flowrt run list` shows yours"
        ))),
    }
}

/// What clients see of a run's record.
/// A run as the API shows it to `caller`: its record, and what the caller may do with it now
/// (`session`: the session it ran in, if it still exists, which a resume runs in).
fn run_view(
    run: &flowrt_store::WorkspaceRun,
    caller: &Caller,
    session: Option<&flowrt_store::Session>,
) -> ApiResult<RunView> {
    let mut record = run.record.clone();
    record["name"] = json!(run.name);
    record["session"] = json!(run.session_id);
    let mut view: RunView =
        serde_json::from_value(record).map_err(|e| ApiErr::internal("reading a run record", e))?;
    view.actions = run_actions(&view, &run.owner, caller, session);
    Ok(view)
}

/// The rules `cancel`, `delete`, `archive` and a resume's start enforce, said ahead: a run's
/// owner (or an admin) cancels it while it runs, and resumes it when lines are left to re-run
/// in a session that still runs and that they may use; the flow version a run ran is deployed
/// by whoever may deploy (`endpoints::may_deploy`).
fn run_actions(
    view: &RunView,
    owner: &str,
    caller: &Caller,
    session: Option<&flowrt_store::Session>,
) -> Vec<RunAction> {
    let modify = caller.may_modify(owner);
    let running = view.status == "Running";
    let lines_left = view.failed_lines > 0 || view.status != "Completed";
    let session_usable = session.is_some_and(|s| {
        s.status == flowrt_api::SessionStatus::Running && (caller.may_modify(&s.owner) || s.shared)
    });
    [
        (RunAction::Cancel, modify && running),
        (
            RunAction::Resume,
            modify && !running && lines_left && session_usable,
        ),
        (RunAction::Archive, modify),
        (RunAction::Delete, modify),
        (
            RunAction::Deploy,
            view.flow.is_some() && crate::endpoints::may_deploy(caller),
        ),
    ]
    .into_iter()
    .filter_map(|(action, allowed)| allowed.then_some(action))
    .collect()
}

#[derive(Deserialize)]
struct ListQuery {
    /// Also list archived runs.
    #[serde(default)]
    archived: bool,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<RunView>>> {
    let all = state.store.list_workspace_runs().await?;
    // Read once for every run's actions (a resume runs in the run's session).
    let sessions: std::collections::HashMap<String, flowrt_store::Session> = state
        .store
        .list_sessions(None)
        .await?
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    Ok(Json(
        all.iter()
            .filter(|r| may_see_run(&caller, r) && (q.archived || !r.archived))
            .filter_map(|r| run_view(r, &caller, sessions.get(&r.session_id)).ok())
            .collect(),
    ))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(which): Query<Which>,
) -> ApiResult<Json<RunView>> {
    let run = find(&state, &caller, &name, &which).await?;
    let session = state.store.get_session(&run.session_id).await?;
    Ok(Json(run_view(&run, &caller, session.as_ref())?))
}

/// `DELETE /api/v1/runs/{name}`: the run's record and blobs go (its creator's or an admin's to
/// do). A running run is canceled first.
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let run = find(&state, &caller, &name, &Which { session: None }).await?;
    if !caller.may_modify(&run.owner) {
        return Err(ApiErr::forbidden(format!(
            "run '{name}' belongs to another user"
        )));
    }
    if run.status == "Running" {
        return Err(ApiErr::conflict(format!(
            "run '{name}' is running; cancel it first (`flowrt run cancel {name}`)"
        )));
    }
    state.store.delete_workspace_run(&name).await?;
    let dir = workspace_runs::blob_dir(&state.config.home, &name);
    state
        .blobs
        .delete_dir(&dir)
        .await
        .map_err(|e| ApiErr::internal("deleting the run's records", e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/runs/{name}/archive` and `/restore`: an archived run is left out of the list
/// (`?archived=true` lists it), as promptflow's `pf run archive`.
async fn archive(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<RunView>> {
    set_archived(&state, &caller, &name, true).await
}

async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<RunView>> {
    set_archived(&state, &caller, &name, false).await
}

async fn set_archived(
    state: &AppState,
    caller: &Caller,
    name: &str,
    archived: bool,
) -> ApiResult<Json<RunView>> {
    let run = find(state, caller, name, &Which { session: None }).await?;
    if !caller.may_modify(&run.owner) {
        return Err(ApiErr::forbidden(format!(
            "run '{name}' belongs to another user"
        )));
    }
    state
        .store
        .set_workspace_run_archived(name, archived)
        .await?;
    let session = state.store.get_session(&run.session_id).await?;
    Ok(Json(run_view(&run, caller, session.as_ref())?))
}

#[derive(Deserialize)]
struct LinesQuery {
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
    /// `Completed` or `Failed`.
    #[serde(default)]
    status: Option<String>,
}

fn default_limit() -> usize {
    100
}

/// The run's per-line records in line order (a torn last line is skipped).
fn line_records(dir: &std::path::Path) -> BTreeMap<u64, LineRecord> {
    let mut out = BTreeMap::new();
    let Ok(file) = std::fs::File::open(dir.join("line_runs.jsonl")) else {
        return out;
    };
    for l in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        if let Ok(mut record) = serde_json::from_str::<LineRecord>(&l) {
            // What an aggregation node reads is the run's business, not the line's.
            record.more.remove("aggregation_inputs");
            out.insert(record.line_number, record);
        }
    }
    out
}

async fn lines(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<LinesQuery>,
) -> ApiResult<Json<LinePage>> {
    if let Some(s) = &q.status {
        if s != "Completed" && s != "Failed" {
            return Err(ApiErr::bad_request("status must be Completed or Failed"));
        }
    }
    let which = Which {
        session: q.session.clone(),
    };
    let run = find(&state, &caller, &name, &which).await?;
    let limit = q.limit.min(10_000);
    let dir = workspace_runs::run_dir(&state.runs, &run).await?;
    if q.status.is_none() {
        // A page is read through the run's index: the lines before it are not read at all.
        let (d, offset) = (dir.clone(), q.offset);
        let page =
            tokio::task::spawn_blocking(move || workspace_runs::page_of_lines(&d, offset, limit))
                .await
                .map_err(|e| ApiErr::internal("reading the run's lines", e))?
                .map_err(|e| ApiErr::internal("reading the run's lines", e))?;
        if let Some((total, texts)) = page {
            let lines = texts
                .iter()
                .filter_map(|t| serde_json::from_str::<LineRecord>(t).ok())
                .map(|mut r| {
                    r.more.remove("aggregation_inputs");
                    r
                })
                .collect();
            return Ok(Json(LinePage {
                total,
                offset: q.offset,
                lines,
            }));
        }
    }
    let records = tokio::task::spawn_blocking(move || line_records(&dir))
        .await
        .map_err(|e| ApiErr::internal("reading the run's lines", e))?;
    let matching: Vec<LineRecord> = records
        .into_values()
        .filter(|r| q.status.as_deref().is_none_or(|s| r.status == s))
        .collect();
    let total = matching.len();
    let lines = matching.into_iter().skip(q.offset).take(limit).collect();
    Ok(Json(LinePage {
        total,
        offset: q.offset,
        lines,
    }))
}

async fn line(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, n)): Path<(String, u64)>,
    Query(which): Query<Which>,
) -> ApiResult<Json<LineRecord>> {
    let run = find(&state, &caller, &name, &which).await?;
    let dir = workspace_runs::run_dir(&state.runs, &run).await?;
    // Records are in line order: line n is the n-th record, read through the index.
    let (d, at) = (dir.clone(), usize::try_from(n).unwrap_or(usize::MAX));
    let indexed = tokio::task::spawn_blocking(move || workspace_runs::page_of_lines(&d, at, 1))
        .await
        .map_err(|e| ApiErr::internal("reading the run's lines", e))?
        .ok()
        .flatten()
        .and_then(|(_, texts)| texts.first().cloned())
        .and_then(|t| serde_json::from_str::<LineRecord>(&t).ok())
        .filter(|r| r.line_number == n);
    if let Some(mut record) = indexed {
        record.more.remove("aggregation_inputs");
        return Ok(Json(record));
    }
    let mut records = tokio::task::spawn_blocking(move || line_records(&dir))
        .await
        .map_err(|e| ApiErr::internal("reading the run's lines", e))?;
    records
        .remove(&n)
        .map(Json)
        .ok_or_else(|| ApiErr::not_found(format!("run '{name}' has no finished line {n} (yet)")))
}

async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(which): Query<Which>,
) -> ApiResult<Json<Value>> {
    let run = find(&state, &caller, &name, &which).await?;
    let text = tokio::fs::read_to_string(
        workspace_runs::run_dir(&state.runs, &run)
            .await?
            .join("metrics.json"),
    )
    .await
    .unwrap_or_else(|_| "{}".into());
    Ok(Json(
        serde_json::from_str(&text).unwrap_or_else(|_| json!({})),
    ))
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    offset: u64,
}

/// The run's `logs.txt` from `offset` (bytes): poll with the returned offset to follow it.
async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Json<LogChunk>> {
    use std::io::{Read, Seek, SeekFrom};
    let which = Which {
        session: q.session.clone(),
    };
    let run = find(&state, &caller, &name, &which).await?;
    let path = workspace_runs::run_dir(&state.runs, &run)
        .await?
        .join("logs.txt");
    let offset = q.offset;
    // At most 1 MiB a call; the offset says where to go on.
    let bytes = tokio::task::spawn_blocking(move || -> Vec<u8> {
        let mut buf = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&path) {
            if f.seek(SeekFrom::Start(offset)).is_ok() {
                let _ = f.take(1024 * 1024).read_to_end(&mut buf);
            }
        }
        buf
    })
    .await
    .map_err(|e| ApiErr::internal("reading the run's log", e))?;
    Ok(Json(LogChunk {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        offset: offset + bytes.len() as u64,
        status: run.status.clone(),
    }))
}

async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(which): Query<Which>,
) -> ApiResult<Json<CancelingRun>> {
    let run = find(&state, &caller, &name, &which).await?;
    if !caller.may_modify(&run.owner) {
        return Err(ApiErr::forbidden(format!(
            "run '{name}' belongs to another user"
        )));
    }
    let session = run.session_id.clone();
    if run.status != "Running" {
        return Err(ApiErr::conflict(format!(
            "run '{name}' is {}, not running",
            run.status
        )));
    }
    if run.record.get("spread").is_some() {
        return Ok(Json(
            flowrt_workspace::spread::cancel(&state.runs, &session, &name).await?,
        ));
    }
    let no_process = || ApiErr::conflict(format!("run '{name}' has no live process"));
    // The run runs in its session's agent: it stops taking lines, stops those running (and their
    // workers), keeps every finished one and can be resumed.
    let (addr, token) = workspace_runs::agent(&state.runs, &session)
        .await
        .map_err(|_| no_process())?;
    match client::cancel_batch(&addr, &token, &name, Duration::from_secs(10)).await {
        Ok(()) => {}
        Err(client::ClientError::Refused { .. }) => return Err(no_process()),
        Err(e) => return Err(ApiErr::internal("canceling the run", e)),
    }
    Ok(Json(CancelingRun {
        hint: format!("finished lines are kept; `flowrt run create --session {session} --resume-from {name} --name NEW` continues it"),
        name,
        session,
        status: "Canceling".into(),
    }))
}

/// What `events` has sent so far.
struct Tail {
    state: AppState,
    name: String,
    dir: PathBuf,
    offset: u64,
    /// Where `node_events.jsonl` was read to; `None`: the client did not ask for node events.
    node_offset: Option<u64>,
    done: u64,
    failed: u64,
    total: u64,
    started: std::time::Instant,
    ended: bool,
    /// Names of runs whose record changed (this one's wakes the stream at once).
    changes: tokio::sync::broadcast::Receiver<String>,
}

/// Until run `name`'s record changes (or the channel lags or closes).
async fn changed(changes: &mut tokio::sync::broadcast::Receiver<String>, name: &str) {
    loop {
        match changes.recv().await {
            Ok(n) if n == name => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// The whole JSON lines `file` has past `offset` (a line being written waits), moving `offset`.
fn read_new_lines(file: &std::path::Path, offset: &mut u64) -> Vec<Value> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(file) else {
        return Vec::new();
    };
    if f.seek(SeekFrom::Start(*offset)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    if f.take(1024 * 1024).read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
        return Vec::new();
    };
    *offset += end as u64 + 1;
    buf[..end]
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .collect()
}

impl Tail {
    /// Lines finished since the last look.
    fn new_lines(&mut self) -> Vec<Value> {
        read_new_lines(&self.dir.join("line_runs.jsonl"), &mut self.offset)
    }

    /// Nodes started or finished since the last look, when asked for.
    fn new_node_events(&mut self) -> Vec<Value> {
        match self.node_offset.as_mut() {
            Some(offset) => read_new_lines(&self.dir.join("node_events.jsonl"), offset),
            None => Vec::new(),
        }
    }

    /// The run's status and size as the workspace has them (a run deleted meanwhile has ended).
    async fn status(&self) -> (String, u64) {
        match self.state.store.get_workspace_run(&self.name).await {
            Ok(Some(run)) => (
                run.status.clone(),
                run.record["total_lines"].as_u64().unwrap_or(0),
            ),
            _ => ("Failed".into(), 0),
        }
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    session: Option<String>,
    /// Also send a `node` event as each node of a line starts and ends.
    #[serde(default)]
    nodes: bool,
}

/// `GET /api/v1/runs/{name}/events`: server-sent events while a run goes on. `line` for each
/// finished line (number, status, duration, and its nodes with their status and timings),
/// with `?nodes=true` a `node` event as each node starts and ends (`{line_number, node, status,
/// duration}`), `progress` with counts, rate and time left every 100 ms (with `quota`: the
/// endpoint, pace, calls a line and wait a call, while a quota paces the run's model calls; the
/// time left then comes from the pace), and `end` with the final status, after which the stream
/// closes.
async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<
    axum::response::sse::Sse<
        impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let which = Which { session: q.session };
    let run = find(&state, &caller, &name, &which).await?;
    let stopping = state.stopping.clone();
    let tail = Tail {
        dir: workspace_runs::run_dir(&state.runs, &run).await?,
        state: state.clone(),
        name: run.name.clone(),
        offset: 0,
        node_offset: q.nodes.then_some(0),
        done: 0,
        failed: 0,
        total: run.record["total_lines"].as_u64().unwrap_or(0),
        started: std::time::Instant::now(),
        ended: false,
        changes: state.runs.run_changes.subscribe(),
    };
    let shared_files = state.blobs.mode() == flowrt_store::BlobMode::Database;
    let stream = futures::stream::unfold(tail, move |mut t| {
        let stopping = stopping.clone();
        let run = run.clone();
        async move {
        // A stopping server ends the stream: the client reads the record when it is back.
        if t.ended || stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        // Every 100 ms, or at once when the run's record changes (it ended).
        let name = t.name.clone();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = changed(&mut t.changes, &name) => {}
        }
        // The status first: lines kept before a run says it ended are all read below.
        let (status, total) = t.status().await;
        if shared_files {
            // What the server that follows the run stored since.
            if let Err(e) = workspace_runs::run_dir(&t.state.runs, &run).await {
                eprintln!("warning: run {}: {}", run.name, e.message);
            }
        }
        let mut out: Vec<Event> = Vec::new();
        for ev in t.new_node_events() {
            out.push(Event::default().event("node").data(ev.to_string()));
        }
        for rec in t.new_lines() {
            t.done += 1;
            if rec["status"] != "Completed" {
                t.failed += 1;
            }
            let nodes: Vec<Value> = rec["nodes"]
                .as_array()
                .map(|ns| {
                    ns.iter()
                        .map(|n| json!({"node": n["node"], "status": n["status"], "start": n["start"], "duration": n["duration"]}))
                        .collect()
                })
                .unwrap_or_default();
            let line = json!({
                "line_number": rec["line_number"],
                "status": rec["status"],
                "duration": rec["duration"],
                "nodes": nodes,
            });
            out.push(Event::default().event("line").data(line.to_string()));
        }
        if total > 0 {
            t.total = total;
        }
        let secs = t.started.elapsed().as_secs_f64().max(1e-3);
        let rate = t.done as f64 / secs;
        let left = t.total.saturating_sub(t.done);
        // A quota pacing the run's model calls: its pace sets the time left.
        let pace: Option<flowrt_runtime::batch::QuotaPace> =
            std::fs::read(t.dir.join(flowrt_runtime::batch::PACE_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
        let eta = pace
            .as_ref()
            .and_then(|p| p.seconds_for(left as usize))
            .or_else(|| (rate > 0.0).then(|| left as f64 / rate));
        out.push(Event::default().event("progress").data(
            json!({
                "done": t.done,
                "failed": t.failed,
                "total": t.total,
                "lines_per_second": rate,
                "eta_seconds": eta,
                "quota": pace.map(|p| json!({
                    "endpoint": p.endpoint,
                    "requests_per_second": p.pace,
                    "calls_per_line": p.calls_per_line,
                    "wait_per_call_seconds": p.wait_per_call.as_secs_f64(),
                })),
            })
            .to_string(),
        ));
        if status != "Running" {
            t.ended = true;
            out.push(Event::default().event("end").data(json!({"status": status}).to_string()));
        }
        Some((futures::stream::iter(out.into_iter().map(Ok)), t))
        }
    })
    .flat_map(|events| events);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
struct DataQuery {
    /// `jsonl` (default), `csv` or `tsv`.
    #[serde(default)]
    format: Option<String>,
}

fn data_format(format: Option<&str>) -> ApiResult<&'static str> {
    match format.unwrap_or("jsonl") {
        "jsonl" => Ok("jsonl"),
        "csv" => Ok("csv"),
        "tsv" => Ok("tsv"),
        other => Err(ApiErr::bad_request(format!(
            "data format '{other}' is not one of jsonl, csv, tsv"
        ))),
    }
}

/// Where a user's uploaded data lives: content-addressed, per user, so a hash names only the
/// caller's own data.
fn data_path(state: &AppState, owner: &str, hash: &str, ext: &str) -> PathBuf {
    state
        .config
        .home
        .join("data")
        .join(owner)
        .join(format!("{hash}.{ext}"))
}

/// `data:sha256:<hex>.<ext>` → (hex, ext), checked.
fn parse_data_ref(reference: &str) -> ApiResult<(String, &'static str)> {
    let bad = || {
        ApiErr::bad_request(format!(
            "'{reference}' is not a data reference; `flowrt data push FILE` prints one (data:sha256:HEX.jsonl)"
        ))
    };
    let rest = reference.strip_prefix("data:sha256:").ok_or_else(bad)?;
    let (hex, ext) = rest.rsplit_once('.').ok_or_else(bad)?;
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok((hex.to_ascii_lowercase(), data_format(Some(ext))?))
}

/// Keep `bytes` as data of `owner`'s, by the hash of its content: its path and hash.
async fn store_data(
    state: &AppState,
    owner: &str,
    ext: &str,
    bytes: &[u8],
) -> ApiResult<(PathBuf, String)> {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(bytes));
    let path = data_path(state, owner, &hash, ext);
    if !path.exists() {
        let tmp = path.with_file_name(crate::unique_name(".storing"));
        std::fs::create_dir_all(path.parent().unwrap_or(&state.config.home))
            .and_then(|_| std::fs::write(&tmp, bytes))
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| ApiErr::internal("storing the data", e))?;
    }
    state
        .blobs
        .publish_file(&path)
        .await
        .map_err(|e| ApiErr::internal("storing the data", e))?;
    Ok((path, hash))
}

/// `POST /api/v1/data?format=jsonl`: upload batch data once, checked (a bad JSONL line is named),
/// stored by the hash of its content. The same file again stores nothing new. The body is
/// written to disk, hashed and checked line by line as it arrives: never held whole in memory.
async fn push_data(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<DataQuery>,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<UploadedData>)> {
    use futures::StreamExt;
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    caller.require_writer()?;
    let ext = data_format(q.format.as_deref())?;
    let dir = state.config.home.join("data").join(&caller.0.id);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiErr::internal("storing the data", e))?;
    let tmp = dir.join(crate::unique_name(".incoming"));
    let mut out = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| ApiErr::internal("storing the data", e))?;
    // Removed however the request ends, unless moved into place.
    let cleanup = crate::flows::RemoveOnDrop(vec![tmp.clone()]);
    let mut hasher = sha2::Sha256::new();
    let mut lines = LineChecker::new(ext == "jsonl");
    let mut bytes = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiErr::bad_request(format!("the upload was cut off: {e}")))?;
        bytes += chunk.len();
        if bytes > MAX_RUN_DATA {
            return Err(ApiErr::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                flowrt_api::ErrorCode::PayloadTooLarge,
                format!("batch data may be at most {MAX_RUN_DATA} bytes"),
            ));
        }
        hasher.update(&chunk);
        lines.feed(&chunk)?;
        out.write_all(&chunk)
            .await
            .map_err(|e| ApiErr::internal("storing the data", e))?;
    }
    let lines = lines.finish()?;
    out.flush()
        .await
        .map_err(|e| ApiErr::internal("storing the data", e))?;
    drop(out);
    let hash = hex::encode(hasher.finalize());
    let path = data_path(&state, &caller.0.id, &hash, ext);
    let existed = state
        .blobs
        .file_len(&path)
        .await
        .map_err(|e| ApiErr::internal("storing the data", e))?
        .is_some();
    if !existed {
        // The upload is on disk here already (counted in the user's data when the home keeps
        // the files): within the quota, or gone.
        let adding = match state.blobs.mode() {
            flowrt_store::BlobMode::Folder => 0,
            flowrt_store::BlobMode::Database => bytes as u64,
        };
        crate::quota::check(&state, &caller.0.id, adding).await?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| ApiErr::internal("storing the data", e))?;
        state
            .blobs
            .publish_file(&path)
            .await
            .map_err(|e| ApiErr::internal("storing the data", e))?;
    }
    drop(cleanup);
    Ok((
        if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        Json(UploadedData {
            reference: format!("data:sha256:{hash}.{ext}"),
            format: ext.to_string(),
            lines,
            bytes,
            unchanged: existed,
        }),
    ))
}

/// Checks uploaded data a piece at a time: UTF-8 text, and for JSONL every line a JSON object
/// (the first bad one is named); counts the non-blank lines.
struct LineChecker {
    jsonl: bool,
    partial: Vec<u8>,
    line: usize,
    count: usize,
}

impl LineChecker {
    fn new(jsonl: bool) -> Self {
        LineChecker {
            jsonl,
            partial: Vec::new(),
            line: 0,
            count: 0,
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> ApiResult<()> {
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&rest[..nl]);
            let line = std::mem::take(&mut self.partial);
            self.check(&line)?;
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    fn check(&mut self, line: &[u8]) -> ApiResult<()> {
        self.line += 1;
        let text = std::str::from_utf8(line).map_err(|e| {
            ApiErr::bad_request(format!(
                "data line {}: the data is not UTF-8 text: {e}",
                self.line
            ))
        })?;
        if text.trim().is_empty() {
            return Ok(());
        }
        self.count += 1;
        if self.jsonl {
            check_jsonl_line(text, self.line)?;
        }
        Ok(())
    }

    /// The last line (without a newline), and how many lines there were.
    fn finish(mut self) -> ApiResult<usize> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.check(&line)?;
        }
        Ok(self.count)
    }
}

/// `GET /api/v1/data/{ref}`: whether the caller has uploaded this data (so a client can skip
/// sending it again).
async fn data_exists(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
) -> ApiResult<Json<DataInfo>> {
    let (hash, ext) = parse_data_ref(&reference)?;
    let path = data_path(&state, &caller.0.id, &hash, ext);
    let bytes = state
        .blobs
        .file_len(&path)
        .await
        .map_err(|e| ApiErr::internal("reading the data", e))?
        .ok_or_else(|| {
            ApiErr::not_found(format!(
                "no data {reference} of yours; push it with `flowrt data push FILE`"
            ))
        })?;
    Ok(Json(DataInfo {
        format: ext.to_string(),
        bytes,
        reference,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::tests::{caller, session};
    use flowrt_api::workspace::Role;
    use flowrt_api::SessionStatus;
    use RunAction::*;

    fn view(status: &str, failed_lines: usize) -> RunView {
        serde_json::from_value(json!({
            "name": "r", "session": "s-1", "status": status, "created": "", "duration_s": 0.0,
            "total_lines": 3, "completed_lines": 3 - failed_lines, "failed_lines": failed_lines,
            "concurrency": 1,
        }))
        .unwrap()
    }

    /// A run page shows Cancel and Resume exactly when the server would take them: by who
    /// asks, the run's status, and whether its session still runs.
    #[test]
    fn each_caller_gets_the_run_actions_the_server_allows() {
        let ann = caller("u-ann", Role::User);
        let bob = caller("u-bob", Role::User);
        let running = session(SessionStatus::Running, false);
        let stopped = session(SessionStatus::Stopped, false);
        let actions = |v: &RunView, who: &Caller, s: Option<&flowrt_store::Session>| {
            run_actions(v, "u-ann", who, s)
        };
        assert_eq!(
            actions(&view("Running", 0), &ann, Some(&running)),
            [Cancel, Archive, Delete]
        );
        assert_eq!(
            actions(&view("Completed", 1), &ann, Some(&running)),
            [Resume, Archive, Delete]
        );
        assert_eq!(
            actions(&view("Completed", 0), &ann, Some(&running)),
            [Archive, Delete]
        );
        // Its session stopped or deleted: nothing to resume in.
        assert_eq!(
            actions(&view("Canceled", 0), &ann, Some(&stopped)),
            [Archive, Delete]
        );
        assert_eq!(actions(&view("Failed", 3), &ann, None), [Archive, Delete]);
        assert_eq!(actions(&view("Running", 0), &bob, Some(&running)), []);
        // A run of a workspace flow: its version is deployed by whoever may deploy.
        let mut of_flow = view("Completed", 0);
        of_flow.flow = Some("qa@v1".into());
        assert_eq!(
            actions(&of_flow, &ann, Some(&running)),
            [Archive, Delete, Deploy]
        );
        assert_eq!(actions(&of_flow, &bob, Some(&running)), [Deploy]);
        let viewer = caller("u-vwr", Role::Viewer);
        assert_eq!(actions(&of_flow, &viewer, Some(&running)), []);
    }
}
