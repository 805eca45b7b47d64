//! Runs spread over several sessions, and the servers that share them.
//!
//! A spread run's lines are cut into chunks in the database ([`flowrt_store::SpreadRun`]). Every
//! server looks, twice a second, for spread runs one of whose sessions it manages, and runs a
//! worker for each such session: it claims a chunk (with a lease its heartbeat renews), has the
//! session's agent run those lines as a chunk run (in the session's `chunks/` folder), and
//! completes the chunk with their records, which the database keeps only if the claim is still
//! its own. Once every chunk is done, a worker of the run's own session claims the gathering
//! step: its agent runs the run proper over the gathered records (nothing runs again), which
//! aggregates and writes the run's folder as if the run had been one session's.
//!
//! A server that dies stops renewing its leases. Another takes over its sessions (their agents
//! outlive it), and with them the chunks they were running: a chunk run that finished is
//! completed from its folder, one still running is waited for, so no line runs twice. Chunks of
//! an agent that is gone too are claimed again by any session once their lease has ended and a
//! grace period (for that takeover) has passed.

use crate::AppState;
use flowrt_session::{backend, client};
use flowrt_store::{ChunkClaim, Session, SpreadRun};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// How often a server looks for spread work, and polls the chunk runs it waits for.
const TICK: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(100);

/// The chunk size for `total` lines over `sessions` sessions: several chunks per session, so a
/// slow or lost session holds back little, and not so small that starting one dominates.
pub fn chunk_size(total: u64, sessions: usize) -> u64 {
    let per = total / (sessions.max(1) as u64 * 4);
    per.clamp(10, 1000)
}

/// The workers this server runs: (run's session, run, executing session).
#[derive(Default)]
pub struct Workers {
    running: Mutex<HashSet<(String, String, String)>>,
    /// Rung when a spread run starts here: its workers start at once, not at the next tick.
    pub wake: tokio::sync::Notify,
}

impl Workers {
    fn begin(&self, key: &(String, String, String)) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
    }

    fn end(&self, key: &(String, String, String)) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// A chunk run's name: the run's, the chunk's number and the claim's (names stay unique across
/// retries of a chunk).
fn chunk_name(run: &str, claim: &ChunkClaim) -> String {
    format!("{run}.c{}.a{}", claim.seq, claim.attempt)
}

fn chunk_dir(state: &AppState, session: &str) -> PathBuf {
    state
        .sessions
        .workdir(session)
        .join(client::CHUNKS_DIR)
        .join("runs")
}

/// Heartbeat and supervisor: renews this server's leases, takes over sessions whose server is
/// gone, and starts a worker for every spread run of a session this server manages.
pub async fn supervise(state: AppState) {
    let mut tick = tokio::time::interval(TICK);
    let mut last_renewal = tokio::time::Instant::now() - state.config.lease;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.workers.wake.notified() => {}
        }
        if state.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if last_renewal.elapsed() >= state.config.lease / 3 {
            let until = crate::now_ms() + lease_ms(&state);
            if let Err(e) = state
                .store
                .renew_leases(&state.config.server_id, until)
                .await
            {
                eprintln!("warning: cannot renew this server's leases: {e}");
            } else {
                last_renewal = tokio::time::Instant::now();
            }
            state.sessions.take_over_orphans().await;
        }
        let Ok(runs) = state.store.running_spread_runs().await else {
            continue;
        };
        for run in runs {
            for executor in run.sessions.clone() {
                let Ok(Some(s)) = state.store.get_session(&executor).await else {
                    continue;
                };
                if s.manager.as_deref() != Some(state.config.server_id.as_str()) {
                    continue;
                }
                let key = (run.session_id.clone(), run.name.clone(), executor.clone());
                if !state.workers.begin(&key) {
                    continue;
                }
                let (state, run) = (state.clone(), run.clone());
                tokio::spawn(async move {
                    work(&state, &run, &executor).await;
                    state.workers.end(&key);
                });
            }
        }
    }
}

fn lease_ms(state: &AppState) -> i64 {
    i64::try_from(state.config.lease.as_millis()).unwrap_or(i64::MAX)
}

/// One session's share of a spread run: claim, run, complete, until nothing is left.
async fn work(state: &AppState, run: &SpreadRun, executor: &str) {
    let me = state.config.server_id.clone();
    // While others hold every chunk left, look again soon (the gathering step comes at once),
    // then less often: an idle worker should not query the database ten times a second.
    let mut idle = POLL;
    loop {
        // First what this session was running for a manager that died: its chunk run goes on
        // (or has finished) in the session, so it is waited for, not run again. Asked each time
        // round: that chunk's lease may end a little after the session's.
        if let Ok(Some(claim)) = state
            .store
            .adopt_chunk(&run.session_id, &run.name, &me, executor, until(state))
            .await
        {
            eprintln!(
                "run {}: took over chunk {} in session {executor}",
                run.name, claim.seq
            );
            if !finish_chunk(state, run, executor, &claim, true).await {
                return;
            }
            continue;
        }
        let Ok(Some(s)) = state.store.get_session(executor).await else {
            return;
        };
        if s.manager.as_deref() != Some(me.as_str())
            || s.status != flowrt_api::SessionStatus::Running
        {
            return;
        }
        let stale_before = crate::now_ms() - lease_ms(state);
        // The run's own session gathers it; if that session is gone, any other does.
        let home_gone = executor != run.session_id
            && !matches!(
                state.store.get_session(&run.session_id).await,
                Ok(Some(h)) if h.status == flowrt_api::SessionStatus::Running
            );
        let claim = match state
            .store
            .claim_chunk(
                &run.session_id,
                &run.name,
                &me,
                executor,
                until(state),
                stale_before,
                home_gone,
            )
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => {
                match state.store.get_spread_run(&run.session_id, &run.name).await {
                    Ok(Some(r)) if r.status == "Running" => {}
                    _ => return,
                }
                tokio::time::sleep(idle).await;
                idle = (idle * 2).min(TICK);
                continue;
            }
            Err(e) => {
                eprintln!("warning: run {}: {e}", run.name);
                tokio::time::sleep(TICK).await;
                continue;
            }
        };
        idle = POLL;
        if !finish_chunk(state, run, executor, &claim, false).await {
            return;
        }
    }
}

fn until(state: &AppState) -> i64 {
    crate::now_ms() + lease_ms(state)
}

/// Run (or, `adopted`, wait for the run already going of) one claimed chunk, and complete it.
/// `false` when this session can run no more (its agent is gone).
async fn finish_chunk(
    state: &AppState,
    run: &SpreadRun,
    executor: &str,
    claim: &ChunkClaim,
    adopted: bool,
) -> bool {
    let me = state.config.server_id.clone();
    let outcome = if claim.is_gathering() {
        gather(state, run, executor, claim, adopted).await
    } else {
        run_chunk(state, run, executor, claim, adopted).await
    };
    match outcome {
        Ok(ChunkEnd::Records(records)) => {
            match state.store.complete_chunk(claim, &me, &records).await {
                Ok(true) => {}
                Ok(false) => eprintln!(
                    "run {}: chunk {} was claimed again meanwhile; its records here are dropped",
                    run.name, claim.seq
                ),
                Err(e) => eprintln!("warning: run {}: {e}", run.name),
            }
            true
        }
        Ok(ChunkEnd::Gathered { status, error }) => {
            let _ = state.store.complete_chunk(claim, &me, "").await;
            let _ = state
                .store
                .finish_spread_run(&run.session_id, &run.name, &status, error.as_deref())
                .await;
            eprintln!("run {}: {status}", run.name);
            true
        }
        Ok(ChunkEnd::Canceled) => true,
        Err(why) => {
            eprintln!(
                "run {}: chunk {} in session {executor} did not finish: {why}",
                run.name, claim.seq
            );
            // Lines it finished before it stopped are kept (its records are written in line
            // order, so they are a prefix of the chunk); the rest is to do again.
            let (done_until, records) = finished_prefix(state, run, executor, claim);
            let kept = done_until > claim.first
                && matches!(
                    state
                        .store
                        .split_chunk(claim, &me, done_until, &records)
                        .await,
                    Ok(true)
                );
            if kept {
                eprintln!(
                    "run {}: kept lines {}..{done_until} of chunk {}; lines {done_until}..{} run again",
                    run.name, claim.first, claim.seq, claim.end
                );
            } else {
                let _ = state.store.release_chunk(claim, &me).await;
            }
            false
        }
    }
}

/// The records a chunk run wrote before it stopped: the whole lines from the chunk's first on,
/// up to a torn or missing one. Their end, and their text.
fn finished_prefix(
    state: &AppState,
    run: &SpreadRun,
    executor: &str,
    claim: &ChunkClaim,
) -> (u64, String) {
    if claim.is_gathering() {
        return (claim.first, String::new());
    }
    let path = chunk_dir(state, executor)
        .join(chunk_name(&run.name, claim))
        .join("line_runs.jsonl");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut next = claim.first;
    let mut kept = String::new();
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') {
            break; // torn
        }
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            break;
        };
        if v["line_number"].as_u64() != Some(next) || next >= claim.end {
            break;
        }
        kept.push_str(line);
        next += 1;
    }
    (next, kept)
}

enum ChunkEnd {
    /// A chunk's line records (JSONL).
    Records(String),
    /// The run's record was written; how it ended.
    Gathered {
        status: String,
        error: Option<String>,
    },
    /// The run was canceled while the chunk ran.
    Canceled,
}

/// The agent's address and token, if its session is running.
async fn agent(state: &AppState, executor: &str) -> Result<(String, String), String> {
    let s: Session = state
        .store
        .get_session(executor)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("session {executor} is gone"))?;
    match (&s.status, &s.agent_addr) {
        (flowrt_api::SessionStatus::Running, Some(addr)) => Ok((
            addr.clone(),
            backend::read_token(&state.sessions.workdir(executor)),
        )),
        _ => Err(format!("session {executor} is {}", s.status)),
    }
}

/// The batch request stored with the run, for `executor`: its data path in that session's folder.
fn request_for(state: &AppState, run: &SpreadRun, executor: &str) -> client::BatchRequest {
    let mut req: client::BatchRequest =
        serde_json::from_value(run.request.clone()).unwrap_or_default();
    if let Some(file) = req.data.as_ref().and_then(|d| d.file_name()) {
        req.data = Some(state.sessions.workdir(executor).join("data").join(file));
    }
    req
}

async fn run_chunk(
    state: &AppState,
    run: &SpreadRun,
    executor: &str,
    claim: &ChunkClaim,
    adopted: bool,
) -> Result<ChunkEnd, String> {
    let name = chunk_name(&run.name, claim);
    let dir = chunk_dir(state, executor);
    let pointer = dir.join(format!("{name}.json"));
    let (addr, token) = agent(state, executor).await?;
    if !(adopted && pointer.exists()) {
        let mut req = request_for(state, run, executor);
        req.name = name.clone();
        req.lines = Some((claim.first as usize, claim.end as usize));
        start_batch(&addr, &token, &req, "run the chunk").await?;
    }
    match wait_for_record(state, run, executor, &addr, &token, &name, &pointer).await? {
        Some(record) => {
            if record["status"] == "Running" {
                return Err("the chunk run was left running".into());
            }
            let lines = dir.join(&name).join("line_runs.jsonl");
            let text = tokio::fs::read_to_string(&lines)
                .await
                .map_err(|e| format!("{}: {e}", lines.display()))?;
            // A chunk stopped short (its agent's workers died) keeps no partial records: it
            // runs again whole.
            let count = text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
            if count != claim.end - claim.first {
                return Err(format!(
                    "the chunk run ended {} with {count} of {} lines",
                    record["status"],
                    claim.end - claim.first
                ));
            }
            Ok(ChunkEnd::Records(text))
        }
        None => Ok(ChunkEnd::Canceled),
    }
}

/// Have the agent at `addr` start the batch `req` (`what` it is asked, for the error).
async fn start_batch(
    addr: &str,
    token: &str,
    req: &client::BatchRequest,
    what: &str,
) -> Result<(), String> {
    let body = serde_json::to_value(req).map_err(|e| e.to_string())?;
    let (status, v) = client::request(
        addr,
        token,
        "POST",
        "/batch",
        Some(&body),
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("the agent refused to {what} ({status}): {v}"));
    }
    Ok(())
}

/// Wait until the run record at `pointer` no longer says Running. `None` if the spread run was
/// canceled meanwhile (the chunk run is canceled too); an error if the session's agent is gone.
async fn wait_for_record(
    state: &AppState,
    run: &SpreadRun,
    executor: &str,
    addr: &str,
    token: &str,
    name: &str,
    pointer: &Path,
) -> Result<Option<Value>, String> {
    let mut checks = 0u32;
    loop {
        if let Ok(text) = tokio::fs::read_to_string(pointer).await {
            if let Ok(record) = serde_json::from_str::<Value>(&text) {
                if record["status"] != "Running" && record.get("spread").is_none() {
                    return Ok(Some(record));
                }
            }
        }
        tokio::time::sleep(POLL).await;
        checks += 1;
        // About every second: is the run still wanted, and the session still there?
        if checks.is_multiple_of(10) {
            match state.store.get_spread_run(&run.session_id, &run.name).await {
                Ok(Some(r)) if r.status == "Running" => {}
                Ok(_) => {
                    let path = format!("/batch/{name}/cancel");
                    let _ =
                        client::request(addr, token, "POST", &path, None, Duration::from_secs(5))
                            .await;
                    return Ok(None);
                }
                Err(_) => {}
            }
            agent(state, executor).await?;
        }
    }
}

/// The gathering step, in the run's own session: the chunks' records in line order become a
/// run of this session that keeps them all and runs nothing again, then aggregates and records.
async fn gather(
    state: &AppState,
    run: &SpreadRun,
    executor: &str,
    _claim: &ChunkClaim,
    adopted: bool,
) -> Result<ChunkEnd, String> {
    let workdir = state.sessions.workdir(executor);
    let pointer = workdir.join("runs").join(format!("{}.json", run.name));
    let home_dir = state.sessions.workdir(&run.session_id);
    let home_pointer = home_dir.join("runs").join(format!("{}.json", run.name));
    let started = tokio::fs::read_to_string(&pointer)
        .await
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|r| r.get("spread").is_none());
    let (addr, token) = agent(state, executor).await?;
    if !(adopted && started) {
        let results = state
            .store
            .chunk_results(&run.session_id, &run.name)
            .await
            .map_err(|e| e.to_string())?;
        let gathered = workdir
            .join(client::CHUNKS_DIR)
            .join(format!("{}.gathered.jsonl", run.name));
        if let Some(parent) = gathered.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| e.to_string())?;
        }
        tokio::fs::write(&gathered, results.concat())
            .await
            .map_err(|e| e.to_string())?;
        // The placeholder record goes: the run proper writes its own (where it gathers; moved
        // into the run's session below if that is another).
        let _ = tokio::fs::remove_file(&pointer).await;
        if executor != run.session_id {
            eprintln!(
                "run {}: its session {} is gone; session {executor} gathers it",
                run.name, run.session_id
            );
        }
        let mut req = request_for(state, run, executor);
        req.prior_records = Some(gathered);
        start_batch(&addr, &token, &req, "gather the run").await?;
    }
    match wait_for_record(state, run, executor, &addr, &token, &run.name, &pointer).await? {
        Some(mut record) => {
            // The record tells the whole run's time, not the gathering's.
            let duration = (crate::now_ms() - run.created) as f64 / 1000.0;
            if let Some(created) = created_at(run.created) {
                record["created"] = json!(created);
            }
            record["duration_s"] = json!(duration);
            record["spread_over"] = json!(run.sessions);
            let mut folder = workdir.join("runs").join(&run.name);
            if executor != run.session_id {
                // Gathered in another session: the run's folder moves into its own session's
                // (the server's to do; a sealed session reads only its own folder).
                let dest = home_dir.join("runs").join(&run.name);
                let _ = tokio::fs::remove_dir_all(&dest).await;
                if tokio::fs::rename(&folder, &dest).await.is_ok() {
                    folder = dest;
                    record["output_dir"] = json!(folder);
                    let _ = tokio::fs::remove_file(&pointer).await;
                }
            }
            let text = serde_json::to_string_pretty(&record).unwrap_or_default();
            let pointer_now = if folder.starts_with(&home_dir) {
                home_pointer.clone()
            } else {
                pointer.clone()
            };
            for path in [pointer_now, folder.join("run.json")] {
                let tmp = path.with_extension("json.tmp");
                if tokio::fs::write(&tmp, &text).await.is_ok() {
                    let _ = tokio::fs::rename(&tmp, &path).await;
                }
            }
            Ok(ChunkEnd::Gathered {
                status: record["status"].as_str().unwrap_or("Failed").to_string(),
                error: record["error"].as_str().map(str::to_string),
            })
        }
        None => Ok(ChunkEnd::Canceled),
    }
}

/// Unix ms as a run record writes its times (RFC 3339, UTC).
fn created_at(ms: i64) -> Option<String> {
    flowrt_runtime::runs::utc_from_ms(ms)
}

/// The record a spread run shows until it is gathered: Running, its sessions, its size.
pub fn placeholder_record(run: &SpreadRun, created: &str) -> Value {
    json!({
        "name": run.name,
        "status": "Running",
        "spread": run.sessions,
        "flow": "",
        "data": "",
        "output_dir": "",
        "created": created,
        "finished": null,
        "duration_s": 0.0,
        "total_lines": run.total,
        "completed_lines": 0,
        "failed_lines": 0,
        "concurrency": run.request["concurrency"].as_u64().unwrap_or(16),
        "error": null,
    })
}

/// Start `count` sessions like `home` (its flow, environment and size) for a run spread over
/// `--nodes`: they run their share once Running, and stop after 5 idle minutes.
pub async fn start_helpers(
    state: &AppState,
    caller: &crate::Caller,
    home: &Session,
    count: u32,
) -> crate::ApiResult<Vec<String>> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let s = state
            .store
            .insert_session(&flowrt_store::NewSession {
                owner: caller.0.id.clone(),
                flow_dir: home.flow_dir.clone(),
                flow_ref: home.flow_ref.clone(),
                env_ref: home.env_ref.clone(),
                env_key: None,
                base_version: home.base_version.clone(),
                size: home.size,
                idle_timeout_s: 300,
                identity: home.identity.clone(),
                compute: None,
                shared: false,
            })
            .await?;
        tokio::spawn(state.sessions.clone().prepare(s.id.clone()));
        ids.push(s.id);
    }
    Ok(ids)
}

/// `POST /api/v1/runs` with `more_sessions`: record the run and its chunks, give every session a
/// copy of the data, and show the placeholder record until the run is gathered.
pub async fn start(
    state: &AppState,
    caller: &crate::Caller,
    home: &Session,
    more: &[String],
    batch: client::BatchRequest,
) -> crate::ApiResult<(
    axum::http::StatusCode,
    axum::Json<flowrt_api::responses::RunStarted>,
)> {
    use crate::ApiErr;
    if batch.run.is_some() || batch.resume_from.is_some() {
        return Err(ApiErr::bad_request(
            "a run spread over several sessions cannot be an evaluation or a resume yet; run it in one session (leave out more_sessions)",
        ));
    }
    let mut sessions = vec![home.id.clone()];
    for id in more {
        if sessions.contains(id) {
            continue;
        }
        let s = crate::sessions::usable(state, caller, id).await?;
        let starting = s.status == flowrt_api::SessionStatus::Preparing
            || s.status == flowrt_api::SessionStatus::NotAvailable;
        if !starting {
            crate::sessions::agent_of(&s).await?;
        }
        if s.flow_ref != home.flow_ref || (!starting && s.env_key != home.env_key) {
            return Err(ApiErr::bad_request(format!(
                "session '{}' runs {} in environment {}, but session '{}' runs {} in {}: a run is spread only over sessions of the same flow and environment",
                s.id,
                s.flow_ref.as_deref().unwrap_or("another flow"),
                s.env_ref,
                home.id,
                home.flow_ref.as_deref().unwrap_or("another flow"),
                home.env_ref
            )));
        }
        sessions.push(s.id);
    }
    let Some(data) = batch.data.clone() else {
        return Err(ApiErr::bad_request("a spread run needs data"));
    };
    let counted = data.clone();
    let total = tokio::task::spawn_blocking(move || flowrt_runtime::data::read_rows(&counted))
        .await
        .map_err(|e| ApiErr::internal("reading the batch data", e))?
        .map_err(|e| ApiErr::bad_request(format!("the batch data: {e:#}")))?
        .len() as u64;
    if total == 0 {
        return Err(ApiErr::bad_request("the batch data has no lines"));
    }
    let file = data.file_name().map(PathBuf::from).unwrap_or_default();
    for id in &sessions[1..] {
        let dir = state.sessions.workdir(id).join("data");
        std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::copy(&data, dir.join(&file)).map(|_| ()))
            .map_err(|e| ApiErr::internal("copying the batch data to a session", e))?;
    }
    let run = SpreadRun {
        session_id: home.id.clone(),
        name: batch.name.clone(),
        owner: caller.0.id.clone(),
        sessions,
        request: serde_json::to_value(&batch)
            .map_err(|e| ApiErr::internal("recording the run", e))?,
        total,
        status: "Running".into(),
        error: None,
        created: crate::now_ms(),
    };
    let pointer = state
        .sessions
        .workdir(&home.id)
        .join("runs")
        .join(format!("{}.json", run.name));
    state
        .store
        .create_spread_run(&run, chunk_size(total, run.sessions.len()))
        .await
        .map_err(|e| match e {
            flowrt_store::StoreError::Exists { .. } => ApiErr::conflict(format!(
                "run '{}' already exists in session '{}'; pick another name",
                run.name, home.id
            )),
            other => other.into(),
        })?;
    let record = placeholder_record(&run, &flowrt_runtime::runs::utc_now());
    std::fs::create_dir_all(pointer.parent().unwrap_or(Path::new(".")))
        .and_then(|_| std::fs::write(&pointer, record.to_string()))
        .map_err(|e| ApiErr::internal("recording the run", e))?;
    let _ = state.store.touch_session(&home.id).await;
    state.workers.wake.notify_one();
    Ok((
        axum::http::StatusCode::ACCEPTED,
        axum::Json(flowrt_api::responses::RunStarted {
            name: run.name,
            session: home.id.clone(),
        }),
    ))
}

/// Cancel a spread run: no more chunks are claimed, the chunk runs going are canceled by their
/// workers, and the record says Canceled.
pub async fn cancel(
    state: &AppState,
    session: &str,
    name: &str,
    pointer: &Path,
) -> crate::ApiResult<axum::Json<flowrt_api::responses::CancelingRun>> {
    state
        .store
        .finish_spread_run(session, name, "Canceled", Some("canceled"))
        .await?;
    if let Ok(text) = std::fs::read_to_string(pointer) {
        if let Ok(mut record) = serde_json::from_str::<Value>(&text) {
            if record.get("spread").is_some() {
                record["status"] = json!("Canceled");
                record["error"] = json!("canceled");
                let _ = std::fs::write(pointer, record.to_string());
            }
        }
    }
    Ok(axum::Json(flowrt_api::responses::CancelingRun {
        hint: "its chunks stop; lines that finished are in the sessions' chunks folders".into(),
        name: name.to_string(),
        session: session.to_string(),
        status: "Canceling".into(),
    }))
}
