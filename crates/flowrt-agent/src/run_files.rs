//! The agent's side of moving runs between a session and the workspace: reading what is new in a
//! run's folder for the server ([`tail`]), writing a workspace run an evaluation or a resume reads
//! ([`import`]), and where batch data the server sends is kept ([`data_target`]). The agent does this in
//! its own (sealed) folder, so the server never opens a path there: whatever the session's code
//! has put in its folder, the server only ever receives bytes over the agent's channel.

use flowrt_api::agent::{
    is_plain_file_name, FilePiece, ImportRun, TailReply, TailRequest, FINAL_FILES, TAILED_FILES,
    TAIL_CHUNK,
};
use serde_json::{json, Value};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Where the agent keeps data files the server sends.
pub const DATA_DIR: &str = "data";

#[derive(Debug, thiserror::Error)]
pub enum RunFilesError {
    #[error("'{0}' is not a run name")]
    BadName(String),
    #[error("'{0}' is not a file of a run's folder")]
    BadFile(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunFilesError + '_ {
    move |source| RunFilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn runs_home(home: &Path, chunk: bool) -> PathBuf {
    let home = if chunk {
        home.join(flowrt_session::client::CHUNKS_DIR)
    } else {
        home.to_path_buf()
    };
    flowrt_runtime::runs::runs_dir(&home)
}

/// What is new in run `req.name` since `req.offsets`.
pub fn tail(home: &Path, req: &TailRequest) -> Result<TailReply, RunFilesError> {
    flowrt_runtime::runs::check_name(&req.name)
        .map_err(|_| RunFilesError::BadName(req.name.clone()))?;
    let runs = runs_home(home, req.chunk);
    let record = std::fs::read(runs.join(format!("{}.json", req.name)))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let dir = runs.join(&req.name);
    let mut files = std::collections::BTreeMap::new();
    for (file, offset) in &req.offsets {
        if !TAILED_FILES.contains(&file.as_str()) {
            return Err(RunFilesError::BadFile(file.clone()));
        }
        let jsonl = file.ends_with(".jsonl");
        if let Some(piece) = read_from(&dir.join(file), *offset, jsonl) {
            files.insert(file.clone(), piece);
        }
    }
    for file in &req.whole {
        if !FINAL_FILES.contains(&file.as_str()) {
            return Err(RunFilesError::BadFile(file.clone()));
        }
        let path = dir.join(file);
        let mut text = String::new();
        if let Ok(f) = std::fs::File::open(&path) {
            // A metrics or error file is small; one that is not is cut, not sent whole.
            if f.take(TAIL_CHUNK).read_to_string(&mut text).is_ok() {
                files.insert(
                    file.clone(),
                    FilePiece {
                        offset: text.len() as u64,
                        text,
                    },
                );
            }
        }
    }
    let pace = std::fs::read(dir.join(flowrt_runtime::batch::PACE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    Ok(TailReply {
        record,
        files,
        pace,
    })
}

/// `path`'s bytes from `offset`, at most [`TAIL_CHUNK`]; for JSON lines, up to the last whole
/// line (a line being written waits for the next call). `None` when there is nothing new.
fn read_from(path: &Path, offset: u64, whole_lines: bool) -> Option<FilePiece> {
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut buf = Vec::new();
    f.take(TAIL_CHUNK).read_to_end(&mut buf).ok()?;
    let end = if whole_lines {
        buf.iter().rposition(|b| *b == b'\n')? + 1
    } else {
        // A log is text: cut where a UTF-8 character ends.
        let mut end = buf.len();
        while end > 0 && std::str::from_utf8(&buf[..end]).is_err() && buf.len() - end < 4 {
            end -= 1;
        }
        end
    };
    if end == 0 {
        return None;
    }
    buf.truncate(end);
    Some(FilePiece {
        text: String::from_utf8_lossy(&buf).into_owned(),
        offset: offset + end as u64,
    })
}

/// Write workspace run `req.name` into this session's runs, as a finished run the batch engine
/// can read as an evaluation's base or a resume's predecessor. Replaces an earlier import.
pub fn import(home: &Path, flow_dir: &Path, req: &ImportRun) -> Result<(), RunFilesError> {
    flowrt_runtime::runs::check_name(&req.name)
        .map_err(|_| RunFilesError::BadName(req.name.clone()))?;
    let runs = runs_home(home, false);
    let dir = runs.join(&req.name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    let outputs = dir.join("flow_outputs");
    std::fs::create_dir_all(&outputs).map_err(io(&outputs))?;
    for (file, data_name) in &req.data_files {
        if !TAILED_FILES.contains(&file.as_str()) {
            return Err(RunFilesError::BadFile(file.clone()));
        }
        let source =
            data_file(home, data_name).ok_or_else(|| RunFilesError::BadFile(data_name.clone()))?;
        // A copy: the run's files stay as they were whatever reads or resumes them here.
        let path = dir.join(file);
        std::fs::copy(&source, &path).map_err(io(&path))?;
    }
    let r = &req.record;
    let count = |key: &str| r[key].as_u64().unwrap_or(0);
    // A run still running elsewhere is not given to a session; anything else reads as ended.
    let status = r["status"]
        .as_str()
        .filter(|s| matches!(*s, "Completed" | "Failed" | "Canceled"))
        .unwrap_or("Failed");
    // The engine's record of a finished run; where it ran is this folder now.
    let meta = json!({
        "name": req.name,
        "status": status,
        "flow": flow_dir,
        "data": dir.join("data.jsonl"),
        "output_dir": dir,
        "base_run": r.get("base_run").filter(|v| v.is_string()),
        "variant": r.get("variant").filter(|v| v.is_string()),
        "init": r.get("init").filter(|v| v.is_object()),
        "column_mapping": r.get("column_mapping").filter(|v| v.is_object()).cloned().unwrap_or(json!({})),
        "created": r["created"].as_str().unwrap_or(""),
        "finished": r.get("finished").filter(|v| v.is_string()),
        "duration_s": r["duration_s"].as_f64().unwrap_or(0.0),
        "total_lines": count("total_lines"),
        "completed_lines": count("completed_lines"),
        "failed_lines": count("failed_lines"),
        "concurrency": count("concurrency").max(1),
        "pid": 0,
    });
    let mut meta = meta;
    if let Some(o) = meta.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    let text = serde_json::to_string_pretty(&meta).unwrap_or_default();
    for path in [
        dir.join("run.json"),
        runs.join(format!("{}.json", req.name)),
    ] {
        std::fs::write(&path, &text).map_err(io(&path))?;
    }
    Ok(())
}

/// Where data file `name` of this session is written first and where it then goes (`data/NAME`);
/// the folder is made if missing.
pub fn data_target(home: &Path, name: &str) -> Result<(PathBuf, PathBuf), RunFilesError> {
    if !is_plain_file_name(name) {
        return Err(RunFilesError::BadFile(name.to_string()));
    }
    let dir = home.join(DATA_DIR);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    Ok((dir.join(format!(".{name}.tmp")), dir.join(name)))
}

/// Data file `name` of this session, if the agent has it.
pub fn data_file(home: &Path, name: &str) -> Option<PathBuf> {
    if !is_plain_file_name(name) {
        return None;
    }
    let path = home.join(DATA_DIR).join(name);
    path.is_file().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_sends_whole_lines_and_goes_on_from_its_offset() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("runs").join("r1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(home.path().join("runs/r1.json"), r#"{"status":"Running"}"#).unwrap();
        std::fs::write(
            dir.join("line_runs.jsonl"),
            "{\"line_number\":0}\n{\"line_nu",
        )
        .unwrap();
        let mut req = TailRequest {
            name: "r1".into(),
            ..Default::default()
        };
        req.offsets.insert("line_runs.jsonl".into(), 0);
        let reply = tail(home.path(), &req).unwrap();
        assert_eq!(reply.record, Some(json!({"status": "Running"})));
        let piece = &reply.files["line_runs.jsonl"];
        assert_eq!(
            (piece.text.as_str(), piece.offset),
            ("{\"line_number\":0}\n", 18)
        );
        req.offsets.insert("line_runs.jsonl".into(), 18);
        assert!(tail(home.path(), &req).unwrap().files.is_empty());
    }

    #[test]
    fn a_tail_names_only_the_files_of_a_run() {
        let home = tempfile::tempdir().unwrap();
        for file in ["../../owner.token", "run.json", "/etc/passwd"] {
            let mut req = TailRequest {
                name: "r1".into(),
                ..Default::default()
            };
            req.offsets.insert(file.into(), 0);
            assert!(matches!(
                tail(home.path(), &req),
                Err(RunFilesError::BadFile(_))
            ));
        }
        let req = TailRequest {
            name: "../x".into(),
            ..Default::default()
        };
        assert!(matches!(
            tail(home.path(), &req),
            Err(RunFilesError::BadName(_))
        ));
        assert!(data_target(home.path(), "../x.jsonl").is_err());
        assert!(data_target(home.path(), ".hidden").is_err());
        let (tmp, path) = data_target(home.path(), "abc.jsonl").unwrap();
        assert_eq!(path, home.path().join("data/abc.jsonl"));
        assert_eq!(tmp.parent(), path.parent());
    }

    #[test]
    fn an_imported_run_reads_back_as_a_finished_run() {
        let home = tempfile::tempdir().unwrap();
        let mut files = std::collections::BTreeMap::new();
        for (file, name, text) in [
            (
                "flow_outputs/output.jsonl",
                "base-1-wc1-outputs",
                "{\"line_number\":0,\"category\":\"App\"}\n",
            ),
            ("data.jsonl", "base-1-wc1-data", "{\"url\":\"u\"}\n"),
        ] {
            let (_, path) = data_target(home.path(), name).unwrap();
            std::fs::write(path, text).unwrap();
            files.insert(file.to_string(), name.to_string());
        }
        let req = ImportRun {
            name: "wc1".into(),
            record: json!({"name": "wc1", "status": "Completed", "created": "2026-12-06T00:00:00Z",
                "total_lines": 1, "completed_lines": 1, "failed_lines": 0, "concurrency": 4,
                "column_mapping": {"url": "${data.url}"}, "duration_s": 1.5}),
            data_files: files,
        };
        import(home.path(), Path::new("/flow"), &req).unwrap();
        // An import names only data files this session was given: a name that is a path, or
        // a run file it does not keep, is refused before anything is copied.
        let secret = home.path().join("owner.token");
        std::fs::write(&secret, "t0k").unwrap();
        for (file, name) in [
            ("data.jsonl", "../owner.token"),
            ("data.jsonl", "/etc/passwd"),
            ("data.jsonl", "never-sent"),
            ("../../x.jsonl", "base-1-wc1-data"),
        ] {
            let bad = ImportRun {
                name: "wc2".into(),
                record: req.record.clone(),
                data_files: [(file.to_string(), name.to_string())].into_iter().collect(),
            };
            assert!(
                import(home.path(), Path::new("/flow"), &bad).is_err(),
                "{file} <- {name}"
            );
        }
        let meta = flowrt_runtime::runs::load(home.path(), "wc1").unwrap();
        assert_eq!(meta.status, flowrt_runtime::runs::RunStatus::Completed);
        assert_eq!(meta.total_lines, 1);
        let outputs = flowrt_runtime::runs::outputs(&meta.output_dir).unwrap();
        assert_eq!(outputs[&0]["category"], "App");
    }
}
