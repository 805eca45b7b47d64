//! Editing workspace flows: a version's files (`/files`, `/file`), a draft checked as it is
//! edited (`/draft`: text edits of its YAML that keep every untouched line, then the flow loaded
//! or its problems with file and line), saving a draft as the next version with a message
//! (`/versions`: refused with the difference when someone saved after the draft's base, never a
//! silent last-save-wins), comparing two versions file by file (`/compare`), and a version's
//! files as a snapshot archive (`/snapshot`, what `flowrt flow pull` unpacks).
//!
//! A draft never runs user code here: the server parses and checks files, as a push does.

use crate::auth::Caller;
use crate::error::{ApiErr, ApiResult};
use crate::flows::{resolve, snapshot_dir, RemoveOnDrop};
use crate::openapi::{doc, json, Reply};
use crate::routing::ApiRoutes;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flowrt_api::requests::{EditPathSeg, FlowDraft, FlowEdit, SaveFlow, SwitchSession, TestDraft};
use flowrt_api::responses::{
    DiffHunk, DiffLine, DraftProblem, DraftView, FileDiff, FlowComparison, FlowFileContent,
    FlowFileEntry, FlowFiles, FlowVersion, LineResult, PackageTools, PushedFlow, SaveConflict,
    SessionView,
};
use flowrt_api::workspace::Permission;
use flowrt_store::snapshot::{self, SnapshotLimits};
use flowrt_store::{FlowRecord, FlowSaved, NewFlowVersion};
use flowrt_yaml::edit::{Edit, Seg};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, PathBuf};

mod draft;
mod sessions;
mod versions;

/// The largest file an editor opens or a draft writes: flows are code and prompts.
const MAX_EDIT_BYTES: usize = 1024 * 1024;
/// Files a draft may change at once.
const MAX_DRAFT_FILES: usize = 200;
/// Edits a draft request may carry.
const MAX_DRAFT_EDITS: usize = 500;
/// A save's message, like a commit's subject and body.
const MAX_MESSAGE_CHARS: usize = 2000;

pub fn routes() -> ApiRoutes {
    ApiRoutes::default()
        .get(
            "/api/v1/sessions/{id}/tools",
            Permission::SessionsWrite,
            sessions::package_tools,
            doc("The tools the session's installed packages declare (package_tools entry points), with their inputs: what a node's source {type: package, tool: ID} names.")
                .reply(200, json::<PackageTools>()),
        )
        .post(
            "/api/v1/sessions/{id}/switch",
            Permission::SessionsWrite,
            sessions::switch_session,
            doc("Run another version of the session's flow {flow: NAME@vN} from now on, without a restart (its requirements must be the session's; lines running finish on the old version).")
                .body::<SwitchSession>()
                .reply(200, json::<SessionView>()),
        )
        .post(
            "/api/v1/flows/{name}/draft/test",
            Permission::SessionsWrite,
            sessions::test_draft,
            doc("Run one line of a draft {files, session, inputs} in your running session, with its environment and connections, bounded by the request timeout (a draft that changes requirements.txt is refused: save and install it first).")
                .body::<TestDraft>()
                .reply(200, json::<LineResult>()),
        )
        .get(
            "/api/v1/flows/{name}/files",
            Permission::Read,
            files,
            doc("A flow version's files (NAME or NAME@vN), by path, with their sizes.")
                .reply(200, json::<FlowFiles>()),
        )
        .get(
            "/api/v1/flows/{name}/file",
            Permission::Read,
            file,
            doc("One file of a flow version (?path=src/tool.py): its text, or null when it is not text or over 1 MiB.")
                .query::<String>("path")
                .reply(200, json::<FlowFileContent>()),
        )
        .get(
            "/api/v1/flows/{name}/compare",
            Permission::Read,
            versions::compare,
            doc("Compare two versions of a flow (?from=N&to=M): the files that differ and their changed lines in context.")
                .query::<u64>("from")
                .query::<u64>("to")
                .reply(200, json::<FlowComparison>()),
        )
        .get(
            "/api/v1/flows/{name}/snapshot",
            Permission::Read,
            snapshot_archive,
            doc("A flow version's files as a gzip-compressed tar (what `flowrt flow pull` unpacks).")
                .reply(200, Reply::GzipTar),
        )
        .post(
            "/api/v1/flows/{name}/draft",
            Permission::SessionsWrite,
            draft::draft,
            doc("Check a draft of a flow version {files: {path: text|null}, edits: [FlowEdit]}: the edits are made in the YAML's text (untouched lines stay as written), then the flow is loaded; answers the changed files and the flow's graph, or its problems with file and line.")
                .body::<FlowDraft>()
                .reply(200, json::<DraftView>()),
        )
        .post(
            "/api/v1/flows/{name}/versions",
            Permission::SessionsWrite,
            versions::save,
            doc("Save a draft {base: NAME@vN, message, files} as the next version of name (or as the first of a new name); 409 with the difference when another version was saved after base.")
                .body::<SaveFlow>()
                .reply(201, json::<PushedFlow>())
                .reply(200, json::<PushedFlow>())
                .reply(409, json::<SaveConflict>()),
        )
}

/// A path a client names inside a flow: relative, `/`-separated, staying inside the folder.
fn checked_rel(path: &str) -> ApiResult<String> {
    let bad = |why: &str| {
        ApiErr::bad_request(format!(
            "'{path}' is not a file of the flow: {why}; name files relative to the flow folder, as src/tool.py"
        ))
    };
    if path.is_empty() || path.len() > 512 || path.contains('\0') || path.contains('\\') {
        return Err(bad("it is empty, too long or holds a backslash or NUL"));
    }
    let mut parts = Vec::new();
    for c in std::path::Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().to_string()),
            Component::CurDir => {}
            Component::ParentDir => return Err(bad("'..' leaves the flow folder")),
            Component::RootDir | Component::Prefix(_) => return Err(bad("it is absolute")),
        }
    }
    if parts.is_empty() {
        return Err(bad("it names the folder itself"));
    }
    Ok(parts.join("/"))
}

/// Every regular file under a snapshot folder, by relative path (links are not followed: a
/// snapshot holds none, and one found is not read).
fn walk_files(dir: &std::path::Path) -> std::io::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((at, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&at)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push((entry.path(), rel));
            } else if ty.is_file() {
                out.insert(rel, entry.path());
            }
        }
    }
    Ok(out)
}

async fn version_files(state: &AppState, rec: &FlowRecord) -> ApiResult<BTreeMap<String, PathBuf>> {
    let (dir, _) = snapshot_dir(state, rec).await?;
    tokio::task::spawn_blocking(move || walk_files(&dir))
        .await
        .map_err(|e| ApiErr::internal("listing the flow's files", e))?
        .map_err(|e| ApiErr::internal("listing the flow's files", e))
}

/// A file's text, when it is UTF-8 and small enough to edit.
fn read_text(path: &std::path::Path) -> std::io::Result<(u64, Option<String>)> {
    let bytes = std::fs::metadata(path)?.len();
    if bytes > MAX_EDIT_BYTES as u64 {
        return Ok((bytes, None));
    }
    Ok((bytes, String::from_utf8(std::fs::read(path)?).ok()))
}

async fn files(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
) -> ApiResult<Json<FlowFiles>> {
    let rec = resolve(&state, &caller, &reference).await?;
    let all = version_files(&state, &rec).await?;
    let files = all
        .iter()
        .map(|(path, p)| FlowFileEntry {
            path: path.clone(),
            bytes: std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
        })
        .collect();
    Ok(Json(FlowFiles {
        flow: FlowVersion::from(&rec),
        files,
    }))
}

#[derive(Deserialize)]
struct FileQuery {
    path: String,
}

async fn file(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
    Query(q): Query<FileQuery>,
) -> ApiResult<Json<FlowFileContent>> {
    let rec = resolve(&state, &caller, &reference).await?;
    let rel = checked_rel(&q.path)?;
    let all = version_files(&state, &rec).await?;
    let Some(p) = all.get(&rel) else {
        return Err(ApiErr::not_found(format!(
            "flow {} has no file '{rel}' (`GET .../files` lists them)",
            rec.reference()
        )));
    };
    let (bytes, text) = read_text(p).map_err(|e| ApiErr::internal("reading the file", e))?;
    Ok(Json(FlowFileContent {
        path: rel,
        bytes,
        text,
    }))
}

/// A version's files as the gzip-compressed tar a push uploads.
async fn snapshot_archive(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
) -> ApiResult<Response> {
    let rec = resolve(&state, &caller, &reference).await?;
    let (dir, _) = snapshot_dir(&state, &rec).await?;
    let packed =
        tokio::task::spawn_blocking(move || snapshot::pack(&dir, &SnapshotLimits::default()))
            .await
            .map_err(|e| ApiErr::internal("packing the flow", e))?
            .map_err(|e| ApiErr::internal("packing the flow", e))?;
    let entry = rec.entry.clone().unwrap_or_default();
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/gzip".to_string()),
            (
                header::HeaderName::from_static("x-flowrt-flow"),
                rec.reference(),
            ),
            (header::HeaderName::from_static("x-flowrt-entry"), entry),
        ],
        packed.0,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_paths_stay_inside_the_flow() {
        assert_eq!(
            checked_rel("src/./tool.py").ok(),
            Some("src/tool.py".into())
        );
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a\\b", "."] {
            assert!(checked_rel(bad).is_err(), "{bad} must be refused");
        }
    }
}
