//! Runs spread over several sessions, and the servers that share them.
//!
//! A spread run's lines are cut into chunks in the database ([`flowrt_store::SpreadRun`]). Every
//! server looks, twice a second, for spread runs one of whose sessions it manages, and runs a
//! worker for each such session: it claims a chunk (with a lease its heartbeat renews), has the
//! session's agent run those lines as a chunk run (in the session's `chunks/` folder), reads
//! their records over the agent's channel as they come, and completes the chunk with them, which
//! the database keeps only if the claim is still its own. Once every chunk is done, a worker of
//! the run's own session claims the gathering step: its agent runs the run proper over the
//! gathered records (nothing runs again), which aggregates and records itself as if the run had
//! been one session's, and the server keeps that run in the workspace. Sessions get the run's
//! data and gathered records from the server over their channel; the server never opens a path
//! in a session's folder.
//!
//! A server that dies stops renewing its leases. Another takes over its sessions (their agents
//! outlive it), and with them the chunks they were running: a chunk run that finished is
//! completed from its folder, one still running is waited for, so no line runs twice. Chunks of
//! an agent that is gone too are claimed again by any session once their lease has ended and a
//! grace period (for that takeover) has passed.

use crate::Workspace;
use flowrt_session::client;
use flowrt_store::{ChunkClaim, Session, SpreadRun};
use serde_json::{json, Value};
use std::collections::HashSet;

use flowrt_session::manager::{ManageError, ManageResult};
use std::sync::{Arc, Mutex};
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
pub(crate) struct Workers {
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

/// Heartbeat and supervisor: renews this server's leases, takes over sessions whose server is
/// gone, and starts a worker for every spread run of a session this server manages.
pub async fn supervise(workspace: Arc<Workspace>) {
    let mut tick = tokio::time::interval(TICK);
    let mut last_renewal = tokio::time::Instant::now() - workspace.config.lease;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = workspace.workers.wake.notified() => {}
        }
        if workspace.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if last_renewal.elapsed() >= workspace.config.lease / 3 {
            let until = crate::now_ms() + lease_ms(&workspace);
            if let Err(e) = workspace
                .store
                .renew_leases(&workspace.config.server_id, until)
                .await
            {
                eprintln!("warning: cannot renew this server's leases: {e}");
            } else {
                last_renewal = tokio::time::Instant::now();
            }
            workspace.sessions.take_over_orphans().await;
            // Runs of the sessions this server manages (taken over, or after a restart) are
            // followed into the workspace from here.
            crate::runs::adopt(&workspace).await;
        }
        let Ok(runs) = workspace.store.running_spread_runs().await else {
            continue;
        };
        for run in runs {
            for executor in run.sessions.clone() {
                let Ok(Some(s)) = workspace.store.get_session(&executor).await else {
                    continue;
                };
                if s.manager.as_deref() != Some(workspace.config.server_id.as_str()) {
                    continue;
                }
                let key = (run.session_id.clone(), run.name.clone(), executor.clone());
                if !workspace.workers.begin(&key) {
                    continue;
                }
                let (workspace, run) = (workspace.clone(), run.clone());
                tokio::spawn(async move {
                    work(&workspace, &run, &executor).await;
                    workspace.workers.end(&key);
                });
            }
        }
    }
}

fn lease_ms(workspace: &Workspace) -> i64 {
    i64::try_from(workspace.config.lease.as_millis()).unwrap_or(i64::MAX)
}

/// One session's share of a spread run: claim, run, complete, until nothing is left.
async fn work(workspace: &Workspace, run: &SpreadRun, executor: &str) {
    let me = workspace.config.server_id.clone();
    // While others hold every chunk left, look again soon (the gathering step comes at once),
    // then less often: an idle worker should not query the database ten times a second.
    let mut idle = POLL;
    loop {
        // First what this session was running for a manager that died: its chunk run goes on
        // (or has finished) in the session, so it is waited for, not run again. Asked each time
        // round: that chunk's lease may end a little after the session's.
        if let Ok(Some(claim)) = workspace
            .store
            .adopt_chunk(&run.session_id, &run.name, &me, executor, until(workspace))
            .await
        {
            eprintln!(
                "run {}: took over chunk {} in session {executor}",
                run.name, claim.seq
            );
            if !finish_chunk(workspace, run, executor, &claim, true).await {
                return;
            }
            continue;
        }
        let Ok(Some(s)) = workspace.store.get_session(executor).await else {
            return;
        };
        if s.manager.as_deref() != Some(me.as_str())
            || s.status != flowrt_api::SessionStatus::Running
        {
            return;
        }
        let stale_before = crate::now_ms() - lease_ms(workspace);
        // The run's own session gathers it; if that session is gone, any other does.
        let home_gone = executor != run.session_id
            && !matches!(
                workspace.store.get_session(&run.session_id).await,
                Ok(Some(h)) if h.status == flowrt_api::SessionStatus::Running
            );
        let claim = match workspace
            .store
            .claim_chunk(
                &run.session_id,
                &run.name,
                &me,
                executor,
                until(workspace),
                stale_before,
                home_gone,
            )
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => {
                match workspace
                    .store
                    .get_spread_run(&run.session_id, &run.name)
                    .await
                {
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
        if !finish_chunk(workspace, run, executor, &claim, false).await {
            return;
        }
    }
}

fn until(workspace: &Workspace) -> i64 {
    crate::now_ms() + lease_ms(workspace)
}

/// Run (or, `adopted`, wait for the run already going of) one claimed chunk, and complete it.
/// `false` when this session can run no more (its agent is gone).
async fn finish_chunk(
    workspace: &Workspace,
    run: &SpreadRun,
    executor: &str,
    claim: &ChunkClaim,
    adopted: bool,
) -> bool {
    let me = workspace.config.server_id.clone();
    // The chunk's line records as the server has seen them come: what is kept if it stops.
    let mut seen = String::new();
    let outcome = if claim.is_gathering() {
        gather(workspace, run, executor, claim, adopted).await
    } else {
        run_chunk(workspace, run, executor, claim, adopted, &mut seen).await
    };
    match outcome {
        Ok(ChunkEnd::Records(records)) => {
            match workspace.store.complete_chunk(claim, &me, &records).await {
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
            let _ = workspace.store.complete_chunk(claim, &me, "").await;
            let _ = workspace
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
            let (done_until, records) = finished_prefix(claim, &seen);
            let kept = done_until > claim.first
                && matches!(
                    workspace
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
                let _ = workspace.store.release_chunk(claim, &me).await;
            }
            false
        }
    }
}

/// The records a chunk run wrote before it stopped, as far as the server saw them (`seen`, the
/// chunk's `line_runs.jsonl` as the agent sent it): the whole lines from the chunk's first on, up
/// to a torn or missing one. Their end, and their text.
fn finished_prefix(claim: &ChunkClaim, seen: &str) -> (u64, String) {
    if claim.is_gathering() {
        return (claim.first, String::new());
    }
    let mut next = claim.first;
    let mut kept = String::new();
    for line in seen.split_inclusive('\n') {
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
async fn agent(workspace: &Workspace, executor: &str) -> Result<(String, String), String> {
    crate::runs::agent(workspace, executor).await
}

/// The batch request stored with the run, for `executor`: the run's data (the workspace's, by
/// its hash) given to that session's agent, which keeps it in its own folder.
async fn request_for(
    workspace: &Workspace,
    run: &SpreadRun,
    addr: &str,
    token: &str,
) -> Result<client::BatchRequest, String> {
    let mut req: client::BatchRequest =
        serde_json::from_value(run.request.clone()).map_err(|e| e.to_string())?;
    if let Some(stored) = req.data.clone() {
        // The path is in the home of the server that started the run: this server has the
        // same data under its own home (fetched when the workspace's files are shared).
        let data = flowrt_store::blobs::rebase(&workspace.config.home, &stored, "data")
            .ok_or_else(|| format!("the run's data {} is not workspace data", stored.display()))?;
        if !workspace
            .blobs
            .fetch_file(&data)
            .await
            .map_err(|e| e.to_string())?
        {
            return Err(format!("the run's data {} is gone", data.display()));
        }
        let file = data
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        req.data = Some(
            client::ensure_data(addr, token, &file, client::Upload::File(data))
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(req)
}

async fn run_chunk(
    workspace: &Workspace,
    run: &SpreadRun,
    executor: &str,
    claim: &ChunkClaim,
    adopted: bool,
    seen: &mut String,
) -> Result<ChunkEnd, String> {
    let name = chunk_name(&run.name, claim);
    let (addr, token) = agent(workspace, executor).await?;
    let recorded = adopted && record_of(&addr, &token, &name, true).await?.is_some();
    if !recorded {
        let mut req = request_for(workspace, run, &addr, &token).await?;
        req.name = name.clone();
        req.lines = Some((claim.first as usize, claim.end as usize));
        start_batch(&addr, &token, &req, "run the chunk").await?;
    }
    let waited =
        wait_for_record(workspace, run, executor, &addr, &token, &name, true, seen).await?;
    match waited {
        Some(record) => {
            if record["status"] == "Running" {
                return Err("the chunk run was left running".into());
            }
            // A chunk stopped short (its agent's workers died) keeps no partial records: it
            // runs again whole.
            let count = seen.lines().filter(|l| !l.trim().is_empty()).count() as u64;
            if count != claim.end - claim.first {
                return Err(format!(
                    "the chunk run ended {} with {count} of {} lines",
                    record["status"],
                    claim.end - claim.first
                ));
            }
            Ok(ChunkEnd::Records(std::mem::take(seen)))
        }
        None => Ok(ChunkEnd::Canceled),
    }
}

/// The agent's record of its run `name` (`chunk`: a chunk run), if it has recorded itself.
async fn record_of(
    addr: &str,
    token: &str,
    name: &str,
    chunk: bool,
) -> Result<Option<Value>, String> {
    let req = client::TailRequest {
        name: name.to_string(),
        chunk,
        ..Default::default()
    };
    client::tail(addr, token, &req)
        .await
        .map(|r| r.record)
        .map_err(|e| e.to_string())
}

/// Have the agent at `addr` start the batch `req` (`what` it is asked, for the error).
async fn start_batch(
    addr: &str,
    token: &str,
    req: &client::BatchRequest,
    what: &str,
) -> Result<(), String> {
    client::start_batch(addr, token, req, Duration::from_secs(30))
        .await
        .map_err(|e| format!("the agent refused to {what}: {e}"))?;
    Ok(())
}

/// Wait until the agent's record of run `name` no longer says Running, reading its line records
/// into `seen` as they come. `None` if the spread run was canceled meanwhile (the chunk run is
/// canceled too); an error if the session's agent is gone.
#[allow(clippy::too_many_arguments)]
async fn wait_for_record(
    workspace: &Workspace,
    run: &SpreadRun,
    executor: &str,
    addr: &str,
    token: &str,
    name: &str,
    chunk: bool,
    seen: &mut String,
) -> Result<Option<Value>, String> {
    let mut checks = 0u32;
    let mut spans_seen = 0u64;
    loop {
        let mut req = client::TailRequest {
            name: name.to_string(),
            chunk,
            ..Default::default()
        };
        if chunk {
            req.offsets
                .insert("line_runs.jsonl".into(), seen.len() as u64);
            if workspace.exporters.is_some() {
                req.offsets
                    .insert(flowrt_api::agent::SPANS_FILE.into(), spans_seen);
            }
        }
        match client::tail(addr, token, &req).await {
            Ok(reply) => {
                if let Some(piece) = reply.files.get("line_runs.jsonl") {
                    seen.push_str(&piece.text);
                }
                // A chunk's spans are exported as its lines finish (the gathering step runs
                // no line again, so records none).
                if let Some(piece) = reply.files.get(flowrt_api::agent::SPANS_FILE) {
                    workspace
                        .export_recorded_spans(&run.name, &piece.text)
                        .await;
                    spans_seen = piece.offset;
                }
                let more = reply.is_full();
                if let Some(record) = reply.record {
                    if record["status"] != "Running" && !more {
                        return Ok(Some(record));
                    }
                }
                if more {
                    continue;
                }
            }
            Err(e) => {
                agent(workspace, executor).await?;
                return Err(e.to_string());
            }
        }
        tokio::time::sleep(POLL).await;
        checks += 1;
        // About every second: is the run still wanted, and the session still there?
        if checks.is_multiple_of(10) {
            match workspace
                .store
                .get_spread_run(&run.session_id, &run.name)
                .await
            {
                Ok(Some(r)) if r.status == "Running" => {}
                Ok(_) => {
                    let _ = client::cancel_batch(addr, token, name, Duration::from_secs(5)).await;
                    return Ok(None);
                }
                Err(_) => {}
            }
            agent(workspace, executor).await?;
        }
    }
}

/// The gathering step, in the run's own session (or, that one gone, another): the chunks'
/// records in line order become a run of that session that keeps them all and runs nothing
/// again, then aggregates and records; the server keeps it in the workspace.
async fn gather(
    workspace: &Workspace,
    run: &SpreadRun,
    executor: &str,
    _claim: &ChunkClaim,
    adopted: bool,
) -> Result<ChunkEnd, String> {
    let (addr, token) = agent(workspace, executor).await?;
    let started = adopted && record_of(&addr, &token, &run.name, false).await?.is_some();
    if !started {
        let results = workspace
            .store
            .chunk_results(&run.session_id, &run.name)
            .await
            .map_err(|e| e.to_string())?
            .concat();
        if executor != run.session_id {
            eprintln!(
                "run {}: its session {} is gone; session {executor} gathers it",
                run.name, run.session_id
            );
        }
        use sha2::Digest;
        let file = format!(
            "gathered-{}.jsonl",
            hex::encode(sha2::Sha256::digest(results.as_bytes()))
        );
        let gathered = client::ensure_data(
            &addr,
            &token,
            &file,
            client::Upload::Bytes(results.into_bytes()),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut req = request_for(workspace, run, &addr, &token).await?;
        req.prior_records = Some(gathered);
        start_batch(&addr, &token, &req, "gather the run").await?;
    }
    let mut seen = String::new();
    let waited = wait_for_record(
        workspace, run, executor, &addr, &token, &run.name, false, &mut seen,
    )
    .await?;
    let Some(_) = waited else {
        return Ok(ChunkEnd::Canceled);
    };
    // The gathered run goes into the workspace: its records, outputs, log and metrics.
    let Ok(Some(ws)) = workspace.store.get_workspace_run(&run.name).await else {
        return Err(format!("run {} is no longer in the workspace", run.name));
    };
    let dir = crate::runs::catch_up(workspace, &ws).await?;
    let engine = crate::runs::pull(workspace, &addr, &token, &run.name, false, &dir, true)
        .await?
        .unwrap_or(Value::Null);
    let Ok(Some(ws)) = workspace.store.get_workspace_run(&run.name).await else {
        return Err(format!("run {} is no longer in the workspace", run.name));
    };
    let mut record = crate::runs::view_of(&engine, &ws);
    crate::runs::hide_paths(&mut record, &workspace.sessions.workdir(executor));
    // The record tells the whole run's time, not the gathering's.
    if let Some(created) = created_at(run.created) {
        record["created"] = json!(created);
    }
    record["duration_s"] = json!((crate::now_ms() - run.created) as f64 / 1000.0);
    record["spread_over"] = json!(run.sessions);
    if let Some(o) = record.as_object_mut() {
        o.remove("spread");
    }
    workspace.flush_spans().await;
    crate::runs::set_record(workspace, &run.name, &record).await?;
    Ok(ChunkEnd::Gathered {
        status: record["status"].as_str().unwrap_or("Failed").to_string(),
        error: record["error"].as_str().map(str::to_string),
    })
}

/// Unix ms as a run record writes its times (RFC 3339, UTC).
fn created_at(ms: i64) -> Option<String> {
    flowrt_runtime::runs::utc_from_ms(ms)
}

/// Start `count` sessions like `home` (its flow, environment and size), owned by `owner`, for a
/// run spread over `--nodes`: they run their share once Running, and stop after 5 idle minutes.
pub async fn start_helpers(
    workspace: &Workspace,
    owner: &str,
    home: &Session,
    count: u32,
) -> ManageResult<Vec<String>> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let s = workspace
            .store
            .insert_session(&flowrt_store::NewSession {
                owner: owner.to_string(),
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
        tokio::spawn(workspace.sessions.clone().prepare(s.id.clone()));
        ids.push(s.id);
    }
    Ok(ids)
}

/// Spread `batch`, a run of `owner` the workspace has recorded, over `home` and the sessions
/// `more` (which the caller may use, each Running or starting): record its chunks; each session
/// gets the data from its worker when it claims its first chunk.
pub async fn start(
    workspace: &Workspace,
    owner: &str,
    home: &Session,
    more: &[Session],
    batch: client::BatchRequest,
) -> ManageResult<flowrt_api::responses::RunStarted> {
    if batch.run.is_some() || batch.resume_from.is_some() {
        return Err(ManageError::bad_request(
            "a run spread over several sessions cannot be an evaluation or a resume yet; run it in one session (leave out more_sessions)",
        ));
    }
    let mut sessions = vec![home.id.clone()];
    for s in more {
        if sessions.contains(&s.id) {
            continue;
        }
        let starting = s.status == flowrt_api::SessionStatus::Preparing
            || s.status == flowrt_api::SessionStatus::NotAvailable;
        if s.flow_ref != home.flow_ref || (!starting && s.env_key != home.env_key) {
            return Err(ManageError::bad_request(format!(
                "session '{}' runs {} in environment {}, but session '{}' runs {} in {}: a run is spread only over sessions of the same flow and environment",
                s.id,
                s.flow_ref.as_deref().unwrap_or("another flow"),
                s.env_ref,
                home.id,
                home.flow_ref.as_deref().unwrap_or("another flow"),
                home.env_ref
            )));
        }
        sessions.push(s.id.clone());
    }
    let Some(data) = batch.data.clone() else {
        return Err(ManageError::bad_request("a spread run needs data"));
    };
    let counted = data.clone();
    // Counted (and checked) as it is read, not held.
    let total = tokio::task::spawn_blocking(move || flowrt_runtime::data::Rows::open(&counted))
        .await
        .map_err(|e| ManageError::internal("reading the batch data", e))?
        .map_err(|e| ManageError::bad_request(format!("the batch data: {e:#}")))?
        .len() as u64;
    if total == 0 {
        return Err(ManageError::bad_request("the batch data has no lines"));
    }
    let run = SpreadRun {
        session_id: home.id.clone(),
        name: batch.name.clone(),
        owner: owner.to_string(),
        sessions,
        request: serde_json::to_value(&batch)
            .map_err(|e| ManageError::internal("recording the run", e))?,
        total,
        status: "Running".into(),
        error: None,
        created: crate::now_ms(),
    };
    workspace
        .store
        .create_spread_run(&run, chunk_size(total, run.sessions.len()))
        .await
        .map_err(|e| match e {
            flowrt_store::StoreError::Exists { .. } => ManageError::conflict(format!(
                "run '{}' already exists in session '{}'; pick another name",
                run.name, home.id
            )),
            other => other.into(),
        })?;
    // Until it is gathered, the workspace's record says where it runs and how big it is.
    if let Ok(Some(ws)) = workspace.store.get_workspace_run(&run.name).await {
        let mut record = ws.record.clone();
        record["spread"] = json!(run.sessions);
        record["total_lines"] = json!(total);
        crate::runs::set_record(workspace, &run.name, &record)
            .await
            .map_err(|e| ManageError::internal("recording the spread run", e))?;
    }
    let _ = workspace.store.touch_session(&home.id).await;
    workspace.workers.wake.notify_one();
    Ok(flowrt_api::responses::RunStarted {
        name: run.name,
        session: home.id.clone(),
    })
}

/// Cancel a spread run: no more chunks are claimed, the chunk runs going are canceled by their
/// workers, and the record says Canceled.
pub async fn cancel(
    workspace: &Workspace,
    session: &str,
    name: &str,
) -> ManageResult<flowrt_api::responses::CancelingRun> {
    workspace
        .store
        .finish_spread_run(session, name, "Canceled", Some("canceled"))
        .await?;
    if let Ok(Some(ws)) = workspace.store.get_workspace_run(name).await {
        let mut record = ws.record.clone();
        record["status"] = json!("Canceled");
        record["error"] = json!("canceled");
        record["finished"] = json!(flowrt_runtime::runs::utc_now());
        crate::runs::set_record(workspace, name, &record)
            .await
            .map_err(|e| ManageError::internal("canceling the run", e))?;
    }
    Ok(flowrt_api::responses::CancelingRun {
        hint: "its chunks stop; the lines they finished are not kept in the workspace".into(),
        name: name.to_string(),
        session: session.to_string(),
        status: "Canceling".into(),
    })
}
