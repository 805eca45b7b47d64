//! The workspace's runs: each batch or evaluation run is a record in the store (one name in the
//! workspace, its owner, the session that executes it, its status and what clients see of it)
//! and a folder of blobs the server alone writes (`FLOWRT_HOME/workspace/runs/NAME`: line records,
//! node events, log, outputs, the data as read, metrics and errors).
//!
//! A session executes a run in its own folder; the server follows it over the agent's channel
//! (`POST /runs/tail`), appending what is new to the run's blobs, and never opens a path inside a
//! session's folder, which the session's code may fill with links. A run is read the same way
//! whichever session ran it, and stays when that session is stopped, reset or deleted. An
//! evaluation or a resume in another session gets the runs it reads from here, sent to its agent
//! (`POST /runs/import`): no session reads another's folder, and no copy becomes a run of its own.

use crate::Workspace;
use flowrt_session::client::{self, ImportRun, TailReply, TailRequest, FINAL_FILES, TAILED_FILES};
use flowrt_session::manager::{ManageError, ManageResult};
use flowrt_store::WorkspaceRun;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a running run is asked for what is new.
const FOLLOW_EVERY: Duration = Duration::from_millis(50);
/// How long a run's agent may stay unreachable before the run is taken as lost.
const AGENT_GRACE: Duration = Duration::from_secs(20);

/// The runs this server follows, so each is followed once.
#[derive(Default)]
pub(crate) struct Followers(Mutex<HashSet<String>>);

impl Followers {
    fn begin(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string())
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    fn end(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

/// The folder of run `name`'s blobs (the name is checked by the caller: a plain file name).
pub fn blob_dir(home: &Path, name: &str) -> PathBuf {
    home.join("workspace").join("runs").join(name)
}

/// Names the run a cached run folder holds (its creation time): a folder left from an older run
/// of the same name is not taken for the new one's.
const CACHE_OF: &str = ".cache-of";

/// Run `run`'s folder in this server's home, with everything the workspace stores of it: in a
/// home that caches the workspace's files, what other servers stored is fetched first. A run this
/// server follows is written here, and current.
pub async fn run_dir(workspace: &Workspace, run: &WorkspaceRun) -> ManageResult<PathBuf> {
    if workspace.followers.contains(&run.name) {
        return Ok(blob_dir(&workspace.config.home, &run.name));
    }
    catch_up(workspace, run)
        .await
        .map_err(|e| ManageError::internal("reading the run", e))
}

/// Bring run `run`'s cached folder up to date with what is stored of it (a folder cached from
/// an older run of the same name goes first).
pub async fn catch_up(workspace: &Workspace, run: &WorkspaceRun) -> Result<PathBuf, String> {
    let dir = blob_dir(&workspace.config.home, &run.name);
    if workspace.blobs.mode() == flowrt_store::BlobMode::Folder {
        return Ok(dir);
    }
    let _writing = workspace.run_files(&run.name).lock().await;
    let stamp = run.created.to_string();
    let marker = dir.join(CACHE_OF);
    match std::fs::read_to_string(&marker) {
        Ok(cached) if cached == stamp => {}
        Ok(_) => {
            let _ = std::fs::remove_dir_all(&dir);
            write_marker(&dir, &stamp)?;
        }
        Err(_) => write_marker(&dir, &stamp)?,
    }
    workspace
        .blobs
        .sync_dir(&dir, false)
        .await
        .map_err(|e| e.to_string())?;
    let indexed = dir.clone();
    tokio::task::spawn_blocking(move || complete_index(&indexed))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("indexing the run's lines: {e}"))?;
    Ok(dir)
}

/// Index the whole records of `dir`'s [`LINE_RECORDS`] that its [`LINE_INDEX`] does not cover
/// yet. A cached folder gets the two files from the database one after the other, each as far
/// as its writer had stored it then: the records can be ahead of their index (never behind, as
/// the index is stored after its records). Appending the next pull's lines to an index that
/// stopped short put line 66 where line 7 belongs.
fn complete_index(dir: &Path) -> std::io::Result<()> {
    use std::io::{BufRead, Read, Seek, SeekFrom};
    let records = match std::fs::File::open(dir.join(LINE_RECORDS)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let index_path = dir.join(LINE_INDEX);
    let mut index = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&index_path)?;
    let entries = index.metadata()?.len() / 8;
    // A partial entry (a piece cut mid-entry) is dropped and made again below.
    index.set_len(entries * 8)?;
    let last = if entries == 0 {
        None
    } else {
        let mut raw = [0u8; 8];
        index.seek(SeekFrom::Start((entries - 1) * 8))?;
        index.read_exact(&mut raw)?;
        Some(u64::from_le_bytes(raw))
    };
    let mut reader = std::io::BufReader::new(records);
    let mut at = last.unwrap_or(0);
    reader.seek(SeekFrom::Start(at))?;
    // The last indexed line is indexed already: the lines after it are not.
    let mut skip = last.is_some();
    let mut added = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        if !std::mem::take(&mut skip) {
            added.extend_from_slice(&at.to_le_bytes());
        }
        at += n as u64;
    }
    if !added.is_empty() {
        index.seek(SeekFrom::End(0))?;
        std::io::Write::write_all(&mut index, &added)?;
    }
    Ok(())
}

fn write_marker(dir: &Path, stamp: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(dir.join(CACHE_OF), stamp))
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// The agent of session `id`: its address and token, if it is Running.
pub async fn agent(workspace: &Workspace, id: &str) -> Result<(String, String), String> {
    let s = workspace
        .store
        .get_session(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("session {id} is gone"))?;
    match (&s.status, &s.agent_addr) {
        (flowrt_api::SessionStatus::Running, Some(addr)) => {
            Ok((addr.clone(), workspace.sessions.agent_token(id).await))
        }
        _ => Err(format!("session {id} is {}", s.status)),
    }
}

/// What clients see of a run the engine recorded (`run.json`): the engine's paths and process id
/// are the session's business; the workspace adds the session, flow and owner.
pub fn view_of(engine: &Value, run: &WorkspaceRun) -> Value {
    let mut view = run.record.clone();
    if let (Some(view), Some(engine)) = (view.as_object_mut(), engine.as_object()) {
        for (k, v) in engine {
            if !matches!(k.as_str(), "pid" | "output_dir" | "flow" | "data" | "name") {
                view.insert(k.clone(), v.clone());
            }
        }
    }
    view
}

/// A run's error as the engine wrote it names paths in the session's folder, which is the
/// server's business: they are shown relative to that folder.
pub fn hide_paths(view: &mut Value, session_folder: &Path) {
    let prefix = format!("{}/", session_folder.display());
    if let Some(Value::String(e)) = view.get_mut("error") {
        if e.contains(&prefix) {
            *e = e.replace(&prefix, "");
        }
    }
}

/// Append a file's new piece to the run's blob of that name.
fn append(dir: &Path, file: &str, text: &str) -> std::io::Result<()> {
    let path = dir.join(file);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    f.write_all(text.as_bytes())
}

/// A run's line records, one JSON object a line, in line order.
pub const LINE_RECORDS: &str = "line_runs.jsonl";
/// Where each record of [`LINE_RECORDS`] starts (a little-endian u64 a line), so a page of lines
/// is read without reading the lines before it.
pub const LINE_INDEX: &str = "line_runs.idx";

/// Append whole line records to the run's blob and where each starts to its index (records
/// first: a reader never finds an index entry whose record is not there yet).
fn index_lines(dir: &Path, text: &str) -> std::io::Result<()> {
    let start = std::fs::metadata(dir.join(LINE_RECORDS))
        .map(|m| m.len())
        .unwrap_or(0);
    append(dir, LINE_RECORDS, text)?;
    let mut index = Vec::with_capacity(8 * 64);
    let mut at = start;
    for line in text.split_inclusive('\n') {
        index.extend_from_slice(&at.to_le_bytes());
        at += line.len() as u64;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LINE_INDEX))?;
    f.write_all(&index)
}

/// Records `offset..offset + limit` of a run's line records, read through its index, with how
/// many it has; `None` when the run has no index (a run imported from an older home).
pub fn page_of_lines(
    dir: &Path,
    offset: usize,
    limit: usize,
) -> std::io::Result<Option<(usize, Vec<String>)>> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut index) = std::fs::File::open(dir.join(LINE_INDEX)) else {
        return Ok(None);
    };
    let total = (index.metadata()?.len() / 8) as usize;
    if offset >= total || limit == 0 {
        return Ok(Some((total, Vec::new())));
    }
    let end = (offset + limit).min(total);
    index.seek(SeekFrom::Start(offset as u64 * 8))?;
    let mut raw = vec![0u8; (end - offset) * 8];
    index.read_exact(&mut raw)?;
    let first = u64::from_le_bytes(raw[..8].try_into().unwrap_or([0; 8]));
    let mut records = std::fs::File::open(dir.join(LINE_RECORDS))?;
    // The page ends where the next record starts, or at the end of the file.
    let stop = if end < total {
        let mut next = [0u8; 8];
        index.read_exact(&mut next)?;
        u64::from_le_bytes(next)
    } else {
        records.metadata()?.len()
    };
    records.seek(SeekFrom::Start(first))?;
    let mut text = String::new();
    records
        .take(stop.saturating_sub(first))
        .read_to_string(&mut text)?;
    Ok(Some((total, text.lines().map(str::to_string).collect())))
}

/// How much of each tailed file the server already has: the size of its blob.
fn offsets(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    TAILED_FILES
        .iter()
        .map(|f| {
            let len = std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
            (f.to_string(), len)
        })
        .collect()
}

/// Ask the agent for everything new in its run `name` (`chunk`: a spread run's chunk) and append
/// it to `dir`, until caught up; the spans it recorded are exported as they come. The agent's
/// latest record of the run.
pub async fn pull(
    workspace: &Workspace,
    addr: &str,
    token: &str,
    name: &str,
    chunk: bool,
    dir: &Path,
    whole: bool,
) -> Result<Option<Value>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let blobs = &workspace.blobs;
    loop {
        let req = TailRequest {
            name: name.to_string(),
            chunk,
            offsets: offsets(dir),
            whole: if whole {
                FINAL_FILES.iter().map(|s| s.to_string()).collect()
            } else {
                Vec::new()
            },
        };
        let reply: TailReply = client::tail(addr, token, &req)
            .await
            .map_err(|e| e.to_string())?;
        let more = reply.is_full();
        let dir2 = dir.to_path_buf();
        // What to publish afterwards: the pieces themselves move into the writing task (a reply
        // holds up to a megabyte of each tailed file; it is not copied).
        let written: Vec<(String, bool)> = reply
            .files
            .iter()
            .map(|(file, piece)| (file.clone(), piece.text.is_empty()))
            .collect();
        if let Some(piece) = reply.files.get(flowrt_api::agent::SPANS_FILE) {
            workspace.export_recorded_spans(name, &piece.text).await;
        }
        let TailReply {
            files,
            pace,
            record,
        } = reply;
        let writing = workspace.run_files(name).lock().await;
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(pace) = &pace {
                // What paces the run now, for its event stream (the server's own copy).
                let path = dir2.join(flowrt_runtime::batch::PACE_FILE);
                std::fs::write(&path, serde_json::to_vec(pace).unwrap_or_default())?;
            }
            for (file, piece) in &files {
                if FINAL_FILES.contains(&file.as_str()) {
                    let path = dir2.join(file);
                    std::fs::write(&path, &piece.text)?;
                } else if !piece.text.is_empty() {
                    if file == LINE_RECORDS {
                        index_lines(&dir2, &piece.text)?;
                    } else {
                        append(&dir2, file, &piece.text)?;
                    }
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("writing the run's records: {e}"))?;
        // What every server reads of the run (in a home that caches the workspace's files).
        if blobs.mode() == flowrt_store::BlobMode::Database {
            for (file, empty) in &written {
                let published = if FINAL_FILES.contains(&file.as_str()) {
                    blobs.publish_file(&dir.join(file)).await
                } else if *empty {
                    Ok(())
                } else if file == LINE_RECORDS {
                    match blobs.publish_tail(&dir.join(file)).await {
                        Ok(()) => blobs.publish_tail(&dir.join(LINE_INDEX)).await,
                        e => e,
                    }
                } else {
                    blobs.publish_tail(&dir.join(file)).await
                };
                published.map_err(|e| format!("storing the run's records: {e}"))?;
            }
        }
        drop(writing);
        if !more {
            return Ok(record);
        }
    }
}

/// Follow run `name` in its session until it ends, keeping its blobs and record in the
/// workspace. Spawned when the run starts, and again by whichever server manages its session
/// after a restart or a takeover; a run already followed here is left alone.
pub fn follow(workspace: &Arc<Workspace>, name: &str) {
    if !workspace.followers.begin(name) {
        return;
    }
    let (workspace, name) = (workspace.clone(), name.to_string());
    tokio::spawn(async move {
        if let Err(e) = follow_until_done(&workspace, &name).await {
            eprintln!("warning: run {name}: {e}");
        }
        workspace.followers.end(&name);
    });
}

async fn follow_until_done(workspace: &Workspace, name: &str) -> Result<(), String> {
    let dir = blob_dir(&workspace.config.home, name);
    // Taken over from another server: go on from what it stored.
    if let Some(run) = workspace
        .store
        .get_workspace_run(name)
        .await
        .map_err(|e| e.to_string())?
    {
        catch_up(workspace, &run).await?;
    }
    let mut unreachable_since: Option<Instant> = None;
    loop {
        if workspace.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let Some(run) = workspace
            .store
            .get_workspace_run(name)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(()); // deleted meanwhile
        };
        if run.status != "Running" || run.record.get("spread").is_some() {
            return Ok(());
        }
        let pulled = match agent(workspace, &run.session_id).await {
            Ok((addr, token)) => pull(workspace, &addr, &token, name, false, &dir, false).await,
            Err(e) => Err(e),
        };
        match pulled {
            Ok(record) => {
                unreachable_since = None;
                if let Some(engine) = record {
                    let ended = engine["status"].as_str().is_some_and(|s| s != "Running");
                    if ended {
                        // Everything written before the record said it ended, and the final
                        // files, then the record.
                        let (addr, token) = agent(workspace, &run.session_id).await?;
                        pull(workspace, &addr, &token, name, false, &dir, true).await?;
                    }
                    let mut view = view_of(&engine, &run);
                    hide_paths(&mut view, &workspace.sessions.workdir(&run.session_id));
                    if ended {
                        workspace.flush_spans().await;
                    }
                    if view != run.record {
                        set_record(workspace, name, &view).await?;
                    }
                    if ended {
                        return Ok(());
                    }
                }
            }
            Err(why) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                let session_gone = !matches!(
                    workspace.store.get_session(&run.session_id).await,
                    Ok(Some(s)) if s.status == flowrt_api::SessionStatus::Running
                        || s.status == flowrt_api::SessionStatus::Preparing
                );
                if session_gone || since.elapsed() > AGENT_GRACE {
                    let mut view = run.record.clone();
                    view["status"] = json!("Failed");
                    view["error"] = json!(format!(
                        "the session that ran it stopped before it ended ({why}); its finished lines are kept: `flowrt run create --session ID --resume-from {name} --name NEW` runs the rest"
                    ));
                    if view["finished"].is_null() {
                        view["finished"] = json!(flowrt_runtime::runs::utc_now());
                    }
                    set_record(workspace, name, &view).await?;
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// Replace run `name`'s record in the store and wake its event streams.
///
/// The run lifecycle ([`flowrt_runtime::runs::RunStatus::next`]) decides whether the record's status may follow the
/// stored one, and the store replaces the record only if that stored status still holds: an
/// ended run stays as it ended, whoever writes late.
pub async fn set_record(workspace: &Workspace, name: &str, view: &Value) -> Result<(), String> {
    use flowrt_runtime::runs::RunStatus;
    let proposed = view["status"]
        .as_str()
        .and_then(RunStatus::parse)
        .ok_or_else(|| {
            format!(
                "run {name}: a record without a run status: {}",
                view["status"]
            )
        })?;
    // A writer that lost a race reads again; a few rounds settle it.
    for _ in 0..5 {
        let Some(run) = workspace
            .store
            .get_workspace_run(name)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(()); // deleted meanwhile
        };
        let current = RunStatus::parse(&run.status).unwrap_or(RunStatus::Running);
        current
            .next(proposed)
            .map_err(|e| format!("run {name}: {e}"))?;
        if workspace
            .store
            .update_workspace_run_from(name, &run.status, view)
            .await
            .map_err(|e| e.to_string())?
        {
            let _ = workspace.run_changes.send(name.to_string());
            return Ok(());
        }
    }
    Err(format!(
        "run {name}: its record kept changing under this writer"
    ))
}

/// Start following every running run of a session this server manages that is not followed
/// yet: after a restart, or when this server took a dead one's sessions over.
pub async fn adopt(workspace: &Arc<Workspace>) {
    let Ok(runs) = workspace.store.list_running_workspace_runs().await else {
        return;
    };
    for run in runs {
        if run.record.get("spread").is_some() {
            continue;
        }
        if let Ok(Some(s)) = workspace.store.get_session(&run.session_id).await {
            if s.manager.as_deref() != Some(workspace.config.server_id.as_str()) {
                continue;
            }
        }
        follow(workspace, &run.name);
    }
}

/// Give session `session`'s agent the workspace run `run` to read: `files` of its blobs.
pub async fn send_to_session(
    workspace: &Workspace,
    run: &WorkspaceRun,
    addr: &str,
    token: &str,
    files: &[&str],
) -> ManageResult<()> {
    let dir = run_dir(workspace, run).await?;
    let mut data_files = std::collections::BTreeMap::new();
    for file in files {
        let path = dir.join(file);
        if !path.is_file() {
            continue;
        }
        // Named by the run and its creation: the same files of the same run are sent once.
        use sha2::Digest;
        let name = format!(
            "base-{}-{}-{}",
            run.created,
            &hex::encode(sha2::Sha256::digest(run.name.as_bytes()))[..16],
            file.replace(['/', '.'], "-")
        );
        client::ensure_data(addr, token, &name, client::Upload::File(path))
            .await
            .map_err(|e| {
                ManageError::internal(&format!("giving run '{}' to the session", run.name), e)
            })?;
        data_files.insert(file.to_string(), name);
    }
    let req = ImportRun {
        name: run.name.clone(),
        record: run.record.clone(),
        data_files,
    };
    client::import(addr, token, &req)
        .await
        .map_err(|e| ManageError::internal(&format!("giving run '{}' to the session", run.name), e))
}

/// The first record of a run just started: Running, nothing done yet.
pub fn initial_record(
    name: &str,
    session: &str,
    flow: Option<&str>,
    req: &client::BatchRequest,
) -> Value {
    let mapping: serde_json::Map<String, Value> = req
        .column_mapping
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let mut record = json!({
        "name": name,
        "session": session,
        "status": "Running",
        "column_mapping": mapping,
        "created": flowrt_runtime::runs::utc_now(),
        "duration_s": 0.0,
        "total_lines": 0,
        "completed_lines": 0,
        "failed_lines": 0,
        "concurrency": req.concurrency.unwrap_or(16),
    });
    for (key, value) in [
        ("flow", flow),
        ("base_run", req.run.as_deref()),
        ("resumed_from", req.resume_from.as_deref()),
        ("variant", req.variant.as_deref()),
    ] {
        if let Some(v) = value {
            record[key] = json!(v);
        }
    }
    record
}

/// Marks a home whose sessions' runs have been imported into the workspace.
const IMPORTED_MARK: &str = ".imported-session-runs";

/// The most of one file of an old run that is imported.
const IMPORT_MAX: u64 = 1024 * 1024 * 1024;

/// A home from before runs were workspace records keeps its runs in its sessions' folders: bring
/// each into the workspace, once, as a run of the session's owner. Read without following any
/// link (a session's code may have planted them); a name the workspace already has is left.
pub async fn import_existing(workspace: &Workspace) {
    let root = workspace.config.home.join("workspace");
    if root.join(IMPORTED_MARK).exists() {
        return;
    }
    let Ok(sessions) = workspace.store.list_sessions(None).await else {
        return;
    };
    let mut imported = 0;
    for s in sessions {
        let folder = workspace.sessions.workdir(&s.id);
        let names = {
            let folder = folder.clone();
            tokio::task::spawn_blocking(move || {
                flowrt_session::session_files::list_beneath(&folder, "runs").unwrap_or_default()
            })
            .await
            .unwrap_or_default()
        };
        for file in names {
            let Some(name) = file.strip_suffix(".json") else {
                continue;
            };
            if flowrt_api::names::check("run", name, flowrt_api::names::RUN_NAME_MAX).is_err()
                || matches!(workspace.store.get_workspace_run(name).await, Ok(Some(_)))
            {
                continue;
            }
            match import_one(workspace, &s, &folder, name).await {
                Ok(()) => imported += 1,
                Err(e) => eprintln!("warning: run {name} of session {}: not imported: {e}", s.id),
            }
        }
    }
    if imported > 0 {
        eprintln!("imported {imported} runs from the sessions' folders into the workspace");
    }
    let _ = std::fs::create_dir_all(&root);
    let _ = std::fs::write(root.join(IMPORTED_MARK), "");
}

async fn import_one(
    workspace: &Workspace,
    s: &flowrt_store::Session,
    folder: &Path,
    name: &str,
) -> Result<(), String> {
    use std::io::Read;
    let dir = blob_dir(&workspace.config.home, name);
    let (folder2, name2, dir2) = (folder.to_path_buf(), name.to_string(), dir.clone());
    let engine = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        let mut text = String::new();
        flowrt_session::session_files::open_file_beneath(&folder2, &format!("runs/{name2}.json"))
            .and_then(|f| f.take(1024 * 1024).read_to_string(&mut text))
            .map_err(|e| e.to_string())?;
        let record: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dir2.join("flow_outputs")).map_err(|e| e.to_string())?;
        for file in TAILED_FILES.iter().chain(FINAL_FILES.iter()) {
            let rel = format!("runs/{name2}/{file}");
            let Ok(f) = flowrt_session::session_files::open_file_beneath(&folder2, &rel) else {
                continue;
            };
            if *file == LINE_RECORDS {
                // Whole lines only, indexed as the server indexes a run it follows.
                let mut text = String::new();
                f.take(IMPORT_MAX)
                    .read_to_string(&mut text)
                    .map_err(|e| e.to_string())?;
                let whole = text.rfind('\n').map_or(0, |i| i + 1);
                index_lines(&dir2, &text[..whole]).map_err(|e| e.to_string())?;
                continue;
            }
            let mut out = std::fs::File::create(dir2.join(file)).map_err(|e| e.to_string())?;
            std::io::copy(&mut f.take(IMPORT_MAX), &mut out).map_err(|e| e.to_string())?;
        }
        Ok(record)
    })
    .await
    .map_err(|e| e.to_string())??;
    workspace
        .blobs
        .publish_missing(std::slice::from_ref(&dir))
        .await
        .map_err(|e| e.to_string())?;
    let base = json!({
        "name": name,
        "session": s.id,
        "flow": s.flow_ref,
        "status": "Failed",
    });
    let placeholder = WorkspaceRun {
        name: name.to_string(),
        owner: s.owner.clone(),
        session_id: s.id.clone(),
        status: "Failed".into(),
        record: base,
        created: 0,
        archived: false,
    };
    let mut view = view_of(&engine, &placeholder);
    if view["status"] == "Running" {
        // Its process ended with the server that ran it.
        view["status"] = json!("Failed");
        view["error"] = json!(format!(
            "it was running when this workspace last stopped; `flowrt run create --session ID --resume-from {name} --name NEW` runs the lines it did not finish"
        ));
    }
    workspace
        .store
        .insert_workspace_run(name, &s.owner, &s.id, &view)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_lines_is_read_through_the_index_as_pieces_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let record = |n: usize| format!("{{\"line_number\":{n},\"status\":\"Completed\"}}\n");
        // Pieces as an agent sends them: whole lines, several at a time.
        for chunk in [0..3, 3..4, 4..10] {
            let text: String = chunk.map(record).collect();
            index_lines(dir.path(), &text).unwrap();
        }
        let (total, page) = page_of_lines(dir.path(), 4, 3).unwrap().unwrap();
        assert_eq!(total, 10);
        assert_eq!(page, [4, 5, 6].map(|n| record(n).trim_end().to_string()));
        let (_, last) = page_of_lines(dir.path(), 8, 100).unwrap().unwrap();
        assert_eq!(last.len(), 2);
        assert!(page_of_lines(dir.path(), 10, 5)
            .unwrap()
            .unwrap()
            .1
            .is_empty());
        let none = tempfile::tempdir().unwrap();
        assert!(page_of_lines(none.path(), 0, 5).unwrap().is_none());
    }

    /// A cached folder whose records came from the database ahead of their index: the index
    /// is completed before the next pull's lines are indexed after it, so every page still
    /// holds the lines it names (the story of two servers and a third saw line 66 as the 8th).
    #[test]
    fn records_synced_ahead_of_their_index_are_indexed_before_more_lines_come() {
        let dir = tempfile::tempdir().unwrap();
        let record = |n: usize| format!("{{\"line_number\":{n},\"pad\":\"{}\"}}\n", "x".repeat(n));
        let text = |r: std::ops::Range<usize>| -> String { r.map(record).collect() };
        // Lines 0..7 indexed, then 7..66 arrive as the records alone, as a sync gets them.
        index_lines(dir.path(), &text(0..7)).unwrap();
        append(dir.path(), LINE_RECORDS, &text(7..66)).unwrap();
        // And half a line, still being written.
        append(dir.path(), LINE_RECORDS, "{\"line_number\":66,").unwrap();
        complete_index(dir.path()).unwrap();
        let (total, page) = page_of_lines(dir.path(), 7, 1).unwrap().unwrap();
        assert_eq!((total, page), (66, vec![record(7).trim_end().to_string()]));
        // Done again, it adds nothing.
        complete_index(dir.path()).unwrap();
        assert_eq!(page_of_lines(dir.path(), 0, 1).unwrap().unwrap().0, 66);
        // The rest of line 66 and more come from the agent: indexed after them.
        let records = dir.path().join(LINE_RECORDS);
        let whole = std::fs::read_to_string(&records).unwrap();
        std::fs::write(
            &records,
            &whole[..whole.len() - "{\"line_number\":66,".len()],
        )
        .unwrap();
        index_lines(dir.path(), &text(66..70)).unwrap();
        let (total, all) = page_of_lines(dir.path(), 0, 100).unwrap().unwrap();
        assert_eq!(total, 70);
        for (n, line) in all.iter().enumerate() {
            assert_eq!(line, record(n).trim_end(), "line {n}");
        }
        // An empty folder has nothing to index.
        let empty = tempfile::tempdir().unwrap();
        complete_index(empty.path()).unwrap();
        assert!(page_of_lines(empty.path(), 0, 5).unwrap().is_none());
    }
}
