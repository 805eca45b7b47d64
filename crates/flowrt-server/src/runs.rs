//! Batch and evaluation runs on the server: `/api/v1/runs`. A run executes inside one of the
//! caller's sessions (sealed, writing only its session folder); it is started from a typed request
//! (no command-line passthrough) and its records are read back from that folder for its owner.

use crate::auth::Caller;
use crate::error::{ApiErr, ApiResult};
use crate::routing::ApiRoutes;
use crate::AppState;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::Json;
use flowrt_api::responses::{
    CancelingRun, DataInfo, LinePage, LineRecord, LogChunk, RunStarted, RunView, UploadedData,
};
use flowrt_api::workspace::Permission;
use flowrt_session::{backend, client};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

/// The most data one run request may carry.
pub const MAX_RUN_DATA: usize = 256 * 1024 * 1024;

pub fn routes() -> ApiRoutes {
    ApiRoutes::default()
        .get("/api/v1/runs", Permission::Read, list)
        .post(
            "/api/v1/runs",
            Permission::SessionsWrite,
            create.layer(DefaultBodyLimit::max(MAX_RUN_DATA + 1024 * 1024)),
        )
        .get("/api/v1/runs/{name}", Permission::Read, show)
        .post(
            "/api/v1/data",
            Permission::SessionsWrite,
            push_data.layer(DefaultBodyLimit::max(MAX_RUN_DATA)),
        )
        .get("/api/v1/data/{reference}", Permission::Read, data_exists)
        .get("/api/v1/runs/{name}/lines", Permission::Read, lines)
        .get("/api/v1/runs/{name}/lines/{line}", Permission::Read, line)
        .get("/api/v1/runs/{name}/metrics", Permission::Read, metrics)
        .get("/api/v1/runs/{name}/logs", Permission::Read, logs)
        .post(
            "/api/v1/runs/{name}/cancel",
            Permission::SessionsWrite,
            cancel,
        )
        .get("/api/v1/runs/{name}/events", Permission::Read, events)
}

/// A run name is a file name inside a session's folder: nothing that could leave it.
pub fn check_run_name(name: &str) -> ApiResult<()> {
    flowrt_api::names::check("run", name, flowrt_api::names::RUN_NAME_MAX)
        .map_err(ApiErr::bad_request)
}

/// Every line of JSONL batch data must be a JSON object: say which is not, before anything runs.
pub fn check_jsonl(text: &str) -> ApiResult<()> {
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(_)) => {}
            Ok(_) => {
                return Err(ApiErr::bad_request(format!(
                    "data line {}: not a JSON object; each line of a .jsonl file is one row, like {{\"question\": \"...\"}}",
                    i + 1
                )))
            }
            Err(e) => {
                return Err(ApiErr::bad_request(format!(
                    "data line {}: not valid JSON: {e}",
                    i + 1
                )))
            }
        }
    }
    Ok(())
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<flowrt_api::requests::CreateRun>,
) -> ApiResult<(StatusCode, Json<RunStarted>)> {
    let s = crate::sessions::usable(&state, &caller, &req.session).await?;
    let addr = crate::sessions::agent_of(&s).await?;
    let id = s.id.clone();
    check_run_name(&req.name)?;
    let workdir = state.sessions.workdir(&id);
    if workdir
        .join("runs")
        .join(format!("{}.json", req.name))
        .exists()
    {
        return Err(ApiErr::conflict(format!(
            "run '{}' already exists in session '{id}'; pick another name",
            req.name
        )));
    }
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
        batch.column_mapping.push(format!("{input}={value}"));
    }
    for r in [&req.run, &req.resume_from].into_iter().flatten() {
        check_run_name(r)?;
    }
    // An evaluation reads its base run, which usually ran in another session (the base flow's):
    // a sealed session reads only its own folder, so the base run's outputs are copied in.
    if let Some(base) = &req.run {
        if !workdir.join("runs").join(format!("{base}.json")).exists() {
            let found = find(&state, &caller, base, &Which { session: None }).await?;
            let (from, pointer, into, name) = (
                found.dir.clone(),
                found.pointer.clone(),
                workdir.clone(),
                base.clone(),
            );
            tokio::task::spawn_blocking(move || import_base_run(&from, &pointer, &into, &name))
                .await
                .map_err(|e| ApiErr::internal("copying the base run", e))?
                .map_err(|e| ApiErr::internal("copying the base run", e))?;
        }
    }
    if let Some(t) = req.line_timeout {
        if !(t.is_finite() && t > 0.0) {
            return Err(ApiErr::bad_request(
                "line_timeout must be a positive number of seconds",
            ));
        }
        batch.line_timeout = Some(t);
    }
    if let Some(c) = req.concurrency {
        if c == 0 || c > 1024 {
            return Err(ApiErr::bad_request(
                "concurrency must be between 1 and 1024",
            ));
        }
        batch.concurrency = Some(c);
    }
    // A session runs as many Python workers as its size allows, however many lines run at once.
    batch.workers = Some(s.size.limits().workers);
    let data = match (&req.data, &req.data_ref) {
        (Some(_), Some(_)) => {
            return Err(ApiErr::bad_request("give data or data_ref, not both"));
        }
        (None, Some(reference)) => {
            let (hash, ext) = parse_data_ref(reference)?;
            let stored = data_path(&state, &caller.0.id, &hash, ext);
            let dir = workdir.join("data");
            let path = dir.join(format!("{}.{ext}", req.name));
            std::fs::create_dir_all(&dir)
                .map_err(|e| ApiErr::internal("preparing the batch data", e))?;
            std::fs::copy(&stored, &path).map_err(|_| {
                ApiErr::not_found(format!(
                    "no data {reference} of yours; push it with `flowrt data push FILE`"
                ))
            })?;
            batch.data = Some(path);
            None
        }
        (data, None) => data.clone(),
    };
    match data {
        Some(data) => {
            let ext = match req.data_format.as_deref().unwrap_or("jsonl") {
                f @ ("jsonl" | "csv" | "tsv") => f,
                other => {
                    return Err(ApiErr::bad_request(format!(
                        "data_format '{other}' is not one of jsonl, csv, tsv"
                    )))
                }
            };
            if ext == "jsonl" {
                check_jsonl(&data)?;
            }
            let dir = workdir.join("data");
            let path = dir.join(format!("{}.{ext}", req.name));
            std::fs::create_dir_all(&dir)
                .and_then(|_| std::fs::write(&path, data))
                .map_err(|e| ApiErr::internal("saving the batch data", e))?;
            batch.data = Some(path);
        }
        None if req.resume_from.is_none() && req.data_ref.is_none() => {
            return Err(ApiErr::bad_request(
                "a run needs data ('data' with the file's text, or 'data_ref' from `flowrt data push`), unless it resumes another",
            ))
        }
        None => {}
    }
    let mut more = req.more_sessions.clone();
    match req.nodes {
        Some(n) if n == 0 || n > 64 => {
            return Err(ApiErr::bad_request("nodes must be between 1 and 64"));
        }
        Some(n) => more.extend(crate::spread::start_helpers(&state, &caller, &s, n - 1).await?),
        None => {}
    }
    if !more.is_empty() {
        return crate::spread::start(&state, &caller, &s, &more, batch).await;
    }
    let body =
        serde_json::to_value(&batch).map_err(|e| ApiErr::internal("starting the batch run", e))?;
    let token = backend::read_token(&workdir);
    let (status, v) = client::request(
        &addr,
        &token,
        "POST",
        "/batch",
        Some(&body),
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| ApiErr::internal("starting the batch run", e))?;
    if status == 400 {
        return Err(ApiErr::bad_request(
            v["message"]
                .as_str()
                .unwrap_or("the batch run did not start"),
        ));
    }
    if status != 200 {
        return Err(ApiErr::internal("starting the batch run", v));
    }
    let _ = state.store.touch_session(&id).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(RunStarted {
            name: req.name,
            session: id,
        }),
    ))
}

/// Copy what an evaluation reads of a base run (its record, outputs and data) from its folder
/// `from` (and its record `pointer`) into session folder `into`, as a run of that session.
fn import_base_run(
    from: &std::path::Path,
    pointer: &std::path::Path,
    into: &std::path::Path,
    name: &str,
) -> std::io::Result<()> {
    let dest = into.join("runs").join(name);
    std::fs::create_dir_all(dest.join("flow_outputs"))?;
    for file in ["flow_outputs/output.jsonl", "data.jsonl", "line_runs.jsonl"] {
        let src = from.join(file);
        if src.is_file() {
            std::fs::copy(&src, dest.join(file))?;
        }
    }
    let mut record: Value = serde_json::from_slice(&std::fs::read(pointer)?)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", pointer.display())))?;
    record["output_dir"] = json!(dest);
    let text = serde_json::to_string_pretty(&record).map_err(std::io::Error::other)?;
    std::fs::write(dest.join("run.json"), &text)?;
    std::fs::write(into.join("runs").join(format!("{name}.json")), text)
}

#[derive(Deserialize)]
struct Which {
    /// Which session's run, when several of the caller's sessions have one of this name.
    #[serde(default)]
    session: Option<String>,
}

/// A run the caller may see: its folder and record (with its session's id added).
struct Found {
    dir: PathBuf,
    /// `runs/NAME.json`: the run's record (not derived from `dir`, as a name may hold dots).
    pointer: PathBuf,
    record: Value,
    pid: Option<u32>,
}

/// The sessions whose runs the caller may see.
async fn visible_sessions(
    state: &AppState,
    caller: &Caller,
) -> ApiResult<Vec<flowrt_store::Session>> {
    let all = state.store.list_sessions(None).await?;
    Ok(all
        .into_iter()
        .filter(|s| caller.may_see_session(s))
        .collect())
}

fn read_record(state: &AppState, session: &str, name: &str) -> Option<Found> {
    let pointer = state
        .sessions
        .workdir(session)
        .join("runs")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&pointer).ok()?;
    let mut record: Value = serde_json::from_str(&text).ok()?;
    let pid = record["pid"].as_u64().and_then(|p| u32::try_from(p).ok());
    let dir = state.sessions.workdir(session).join("runs").join(name);
    if let Some(o) = record.as_object_mut() {
        // Paths inside the session folder and the process id are the server's business.
        for key in ["pid", "output_dir", "flow", "data"] {
            o.remove(key);
        }
        o.insert("session".into(), json!(session));
        // A run whose process is gone while it says Running did not finish (a spread run's
        // placeholder has no process: its chunks run wherever their sessions are).
        if o.get("status").and_then(Value::as_str) == Some("Running")
            && !o.contains_key("spread")
            && !pid.is_some_and(backend::is_alive)
        {
            o.insert("status".into(), json!("Failed"));
            o.insert(
                "error".into(),
                json!(format!("the run's process is gone; resume it with `flowrt run create --session {session} --resume-from {name}`")),
            );
        }
    }
    Some(Found {
        dir,
        pointer,
        record,
        pid,
    })
}

async fn find(state: &AppState, caller: &Caller, name: &str, which: &Which) -> ApiResult<Found> {
    check_run_name(name)?;
    let sessions = visible_sessions(state, caller).await?;
    let mut found: Vec<Found> = sessions
        .iter()
        .filter(|s| which.session.as_deref().is_none_or(|w| w == s.id))
        .filter_map(|s| read_record(state, &s.id, name))
        .collect();
    match found.len() {
        0 => Err(ApiErr::not_found(format!(
            "run '{name}' does not exist in your sessions; `flowrt run list` shows them"
        ))),
        1 => Ok(found.remove(0)),
        _ => Err(ApiErr::conflict(format!(
            "run '{name}' exists in several of your sessions ({}); say which with ?session=ID",
            found
                .iter()
                .map(|f| f.record["session"].as_str().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// What clients see of a run's record.
fn run_view(record: &Value) -> ApiResult<RunView> {
    serde_json::from_value(record.clone()).map_err(|e| ApiErr::internal("reading a run record", e))
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<RunView>>> {
    let mut all = Vec::new();
    for s in visible_sessions(&state, &caller).await? {
        let runs = state.sessions.workdir(&s.id).join("runs");
        let Ok(entries) = std::fs::read_dir(&runs) else {
            continue;
        };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_suffix(".json") {
                if let Some(f) = read_record(&state, &s.id, name) {
                    all.push(f.record);
                }
            }
        }
    }
    all.sort_by(|a, b| {
        a["created"]
            .as_str()
            .cmp(&b["created"].as_str())
            .then(a["name"].as_str().cmp(&b["name"].as_str()))
    });
    // A record this server cannot read (torn by a crash) is left out of the list, not fatal.
    Ok(Json(all.iter().filter_map(|r| run_view(r).ok()).collect()))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(which): Query<Which>,
) -> ApiResult<Json<RunView>> {
    Ok(Json(run_view(
        &find(&state, &caller, &name, &which).await?.record,
    )?))
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

/// The run's per-line records in line order (a torn last line of a killed run is skipped).
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
    let found = find(&state, &caller, &name, &which).await?;
    let limit = q.limit.min(10_000);
    let dir = found.dir.clone();
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
    let found = find(&state, &caller, &name, &which).await?;
    let dir = found.dir.clone();
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
    let found = find(&state, &caller, &name, &which).await?;
    let text =
        std::fs::read_to_string(found.dir.join("metrics.json")).unwrap_or_else(|_| "{}".into());
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
    let which = Which {
        session: q.session.clone(),
    };
    let found = find(&state, &caller, &name, &which).await?;
    let bytes = std::fs::read(found.dir.join("logs.txt")).unwrap_or_default();
    let start = usize::try_from(q.offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    // At most 1 MiB a call; the offset says where to go on.
    let end = (start + 1024 * 1024).min(bytes.len());
    Ok(Json(LogChunk {
        text: String::from_utf8_lossy(&bytes[start..end]).into_owned(),
        offset: end as u64,
        status: found.record["status"].as_str().unwrap_or("").to_string(),
    }))
}

async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(which): Query<Which>,
) -> ApiResult<Json<CancelingRun>> {
    let found = find(&state, &caller, &name, &which).await?;
    let session = found.record["session"].as_str().unwrap_or("").to_string();
    let s = crate::sessions::modifiable(&state, &caller, &session).await?;
    if found.record["status"] != "Running" {
        return Err(ApiErr::conflict(format!(
            "run '{name}' is {}, not running",
            found.record["status"].as_str().unwrap_or("finished")
        )));
    }
    if found.record.get("spread").is_some() {
        return crate::spread::cancel(&state, &session, &name, &found.pointer).await;
    }
    let no_process = || ApiErr::conflict(format!("run '{name}' has no live process"));
    if !found.pid.is_some_and(backend::is_alive) {
        return Err(no_process());
    }
    // The run runs in its session's agent: it stops taking lines, stops those running (and their
    // workers), keeps every finished one and can be resumed.
    let addr = crate::sessions::agent_of(&s)
        .await
        .map_err(|_| no_process())?;
    let token = backend::read_token(&state.sessions.workdir(&session));
    let path = format!("/batch/{name}/cancel");
    let (status, _) = client::request(&addr, &token, "POST", &path, None, Duration::from_secs(10))
        .await
        .map_err(|e| ApiErr::internal("canceling the run", e))?;
    if status != 200 {
        return Err(no_process());
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
    dir: PathBuf,
    pointer: PathBuf,
    offset: u64,
    /// Where `node_events.jsonl` was read to; `None`: the client did not ask for node events.
    node_offset: Option<u64>,
    done: u64,
    failed: u64,
    total: u64,
    started: std::time::Instant,
    ended: bool,
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
    if f.take(8 * 1024 * 1024).read_to_end(&mut buf).is_err() {
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

    fn status(&self) -> (String, u64) {
        let record: Value = std::fs::read(&self.pointer)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let mut status = record["status"].as_str().unwrap_or("Running").to_string();
        // A run whose process is gone will never say it ended: it failed.
        let pid = record["pid"].as_u64().and_then(|p| u32::try_from(p).ok());
        if status == "Running" && !pid.is_some_and(backend::is_alive) {
            status = "Failed".into();
        }
        (status, record["total_lines"].as_u64().unwrap_or(0))
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
/// duration}`), `progress` with counts, rate and time left every 100 ms, and `end` with the
/// final status, after which the stream closes.
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
    let found = find(&state, &caller, &name, &which).await?;
    let stopping = state.stopping.clone();
    let tail = Tail {
        pointer: found.pointer.clone(),
        dir: found.dir,
        offset: 0,
        node_offset: q.nodes.then_some(0),
        done: 0,
        failed: 0,
        total: found.record["total_lines"].as_u64().unwrap_or(0),
        started: std::time::Instant::now(),
        ended: false,
    };
    let stream = futures::stream::unfold(tail, move |mut t| {
        let stopping = stopping.clone();
        async move {
        // A stopping server ends the stream: the client reads the record when it is back.
        if t.ended || stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The status first: lines written before a run says it ended are all read below.
        let (status, total) = t.status();
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
        out.push(Event::default().event("progress").data(
            json!({
                "done": t.done,
                "failed": t.failed,
                "total": t.total,
                "lines_per_second": rate,
                "eta_seconds": if rate > 0.0 { Some(left as f64 / rate) } else { None },
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

/// `POST /api/v1/data?format=jsonl`: upload batch data once, checked (a bad JSONL line is named),
/// stored by the hash of its content. The same file again stores nothing new.
async fn push_data(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<DataQuery>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<UploadedData>)> {
    caller.require_writer()?;
    let ext = data_format(q.format.as_deref())?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiErr::bad_request(format!("the data is not UTF-8 text: {e}")))?;
    if ext == "jsonl" {
        check_jsonl(text)?;
    }
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(&body));
    let path = data_path(&state, &caller.0.id, &hash, ext);
    let existed = path.exists();
    if !existed {
        let tmp = path.with_extension(format!("{ext}.tmp"));
        std::fs::create_dir_all(path.parent().unwrap_or(&state.config.home))
            .and_then(|_| std::fs::write(&tmp, &body))
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| ApiErr::internal("storing the data", e))?;
    }
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
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
            bytes: body.len(),
            unchanged: existed,
        }),
    ))
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
    let meta = std::fs::metadata(&path).map_err(|_| {
        ApiErr::not_found(format!(
            "no data {reference} of yours; push it with `flowrt data push FILE`"
        ))
    })?;
    Ok(Json(DataInfo {
        format: ext.to_string(),
        bytes: meta.len(),
        reference,
    }))
}
