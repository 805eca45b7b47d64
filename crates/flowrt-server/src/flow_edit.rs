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
use crate::routing::ApiRoutes;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flowrt_api::requests::{EditPathSeg, FlowDraft, FlowEdit, SaveFlow};
use flowrt_api::responses::{
    DiffHunk, DiffLine, DraftProblem, DraftView, FileDiff, FlowComparison, FlowFileContent,
    FlowFileEntry, FlowFiles, FlowVersion, PushedFlow, SaveConflict,
};
use flowrt_api::workspace::Permission;
use flowrt_store::snapshot::{self, SnapshotLimits};
use flowrt_store::{FlowRecord, FlowSaved, NewFlowVersion};
use flowrt_yaml::edit::{Edit, Seg};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, PathBuf};

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
        .post(
            "/api/v1/sessions/{id}/switch",
            Permission::SessionsWrite,
            switch_session,
        )
        .post(
            "/api/v1/flows/{name}/draft/test",
            Permission::SessionsWrite,
            test_draft,
        )
        .get("/api/v1/flows/{name}/files", Permission::Read, files)
        .get("/api/v1/flows/{name}/file", Permission::Read, file)
        .get("/api/v1/flows/{name}/compare", Permission::Read, compare)
        .get(
            "/api/v1/flows/{name}/snapshot",
            Permission::Read,
            snapshot_archive,
        )
        .post(
            "/api/v1/flows/{name}/draft",
            Permission::SessionsWrite,
            draft,
        )
        .post(
            "/api/v1/flows/{name}/versions",
            Permission::SessionsWrite,
            save,
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

/// The changed files of a draft, checked: paths inside the flow, texts within the edit size.
fn checked_changes(
    files: &BTreeMap<String, Option<String>>,
) -> ApiResult<BTreeMap<String, Option<String>>> {
    if files.len() > MAX_DRAFT_FILES {
        return Err(ApiErr::bad_request(format!(
            "a draft may change at most {MAX_DRAFT_FILES} files at once; save, then go on"
        )));
    }
    let mut out = BTreeMap::new();
    for (path, text) in files {
        let rel = checked_rel(path)?;
        if text.as_ref().is_some_and(|t| t.len() > MAX_EDIT_BYTES) {
            return Err(ApiErr::bad_request(format!(
                "'{rel}' is larger than the {MAX_EDIT_BYTES} bytes an edited file may be; push large files from a folder"
            )));
        }
        out.insert(rel, text.clone());
    }
    Ok(out)
}

fn to_seg(seg: &EditPathSeg) -> Seg {
    match seg {
        EditPathSeg::Index(i) => Seg::Index(*i),
        EditPathSeg::Key(k) => Seg::Key(k.clone()),
        EditPathSeg::Named { name } => Seg::Named(name.clone()),
    }
}

/// The file an edit changes and the text edit it makes (a node rename is several).
fn edit_target(edit: &FlowEdit) -> (Option<&str>, Option<Edit>) {
    match edit {
        FlowEdit::Set { file, path, value } => (
            file.as_deref(),
            Some(Edit::Set {
                path: path.iter().map(to_seg).collect(),
                value: value.clone(),
            }),
        ),
        FlowEdit::Remove { file, path } => (
            file.as_deref(),
            Some(Edit::Remove {
                path: path.iter().map(to_seg).collect(),
            }),
        ),
        FlowEdit::RenameKey { file, path, to } => (
            file.as_deref(),
            Some(Edit::RenameKey {
                path: path.iter().map(to_seg).collect(),
                to: to.clone(),
            }),
        ),
        FlowEdit::RenameNode { .. }
        | FlowEdit::AddVariant { .. }
        | FlowEdit::SetDefaultVariant { .. } => (None, None),
    }
}

/// Apply a draft's edits to its files (the version's text where the draft has not changed one).
fn apply_edits(
    version: &BTreeMap<String, PathBuf>,
    changes: &mut BTreeMap<String, Option<String>>,
    edits: &[FlowEdit],
) -> Result<(), DraftProblem> {
    for (i, edit) in edits.iter().enumerate() {
        let (file, text_edit) = edit_target(edit);
        let file = match file {
            Some(f) => checked_rel(f).map_err(|e| DraftProblem {
                file: f.to_string(),
                line: None,
                message: e.message,
            })?,
            None => "flow.dag.yaml".to_string(),
        };
        let problem = |line: Option<usize>, message: String| DraftProblem {
            file: file.clone(),
            line,
            message: format!("edit {}: {message}", i + 1),
        };
        if !(file.ends_with(".yaml") || file.ends_with(".yml")) {
            return Err(problem(
                None,
                "only YAML files are edited setting by setting; send the file's whole text instead"
                    .into(),
            ));
        }
        let current = match changes.get(&file) {
            Some(Some(text)) => text.clone(),
            Some(None) => return Err(problem(None, "the draft deletes this file".into())),
            None => match version.get(&file) {
                Some(p) => match read_text(p) {
                    Ok((_, Some(t))) => t,
                    _ => return Err(problem(None, "the file is not text an editor opens".into())),
                },
                None => return Err(problem(None, "the flow has no such file".into())),
            },
        };
        let edited = match (edit, text_edit) {
            (FlowEdit::RenameNode { from, to }, _) => {
                flowrt_flow::edit::rename_node(&current, from, to)
            }
            (FlowEdit::AddVariant { node, from }, _) => {
                let added = flowrt_flow::edit::add_variant(&current, node, from.as_deref())
                    .map_err(|e| problem(Some(e.line), e.message))?;
                if let Some((src, dst)) = &added.copy {
                    // The copy starts as the prompt it was cloned from.
                    let text = match changes.get(src) {
                        Some(Some(t)) => Some(t.clone()),
                        _ => version
                            .get(src)
                            .and_then(|p| read_text(p).ok())
                            .and_then(|(_, t)| t),
                    };
                    if let Some(t) = text {
                        changes.entry(dst.clone()).or_insert(Some(t));
                    }
                }
                Ok(added.text)
            }
            (FlowEdit::SetDefaultVariant { node, variant }, _) => {
                let known = flowrt_flow::edit::variants_of(&current)
                    .into_iter()
                    .any(|(n, _, ids)| n == *node && ids.contains(variant));
                if !known {
                    return Err(problem(
                        None,
                        format!("node '{node}' has no variant '{variant}'"),
                    ));
                }
                flowrt_yaml::edit::apply(
                    &current,
                    &Edit::Set {
                        path: vec![
                            Seg::Key("node_variants".into()),
                            Seg::Key(node.clone()),
                            Seg::Key("default_variant_id".into()),
                        ],
                        value: serde_json::Value::String(variant.clone()),
                    },
                )
            }
            (_, Some(e)) => flowrt_yaml::edit::apply(&current, &e),
            (_, None) => Ok(current),
        }
        .map_err(|e| problem(Some(e.line), e.message))?;
        changes.insert(file, Some(edited));
    }
    Ok(())
}

/// Lay out a version's files with a draft's changes in a fresh folder.
fn materialize(
    version_dir: &std::path::Path,
    changes: &BTreeMap<String, Option<String>>,
    into: &std::path::Path,
) -> std::io::Result<()> {
    crate::sessions::copy_flow(version_dir, into)?;
    for (rel, text) in changes {
        let path = into.join(rel);
        match text {
            Some(t) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                // A draft's file replaces what is there, never writing through a link.
                let _ = std::fs::remove_file(&path);
                std::fs::write(&path, t)?;
            }
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            },
        }
    }
    Ok(())
}

/// A flow's load failure as problems with the file (relative to the flow) and line.
fn problems_of(err: &flowrt_flow::FlowError, root: &std::path::Path) -> Vec<DraftProblem> {
    use flowrt_flow::FlowError;
    let rel = |p: &std::path::Path| {
        p.strip_prefix(root)
            .map(|r| r.to_string_lossy().to_string())
            .unwrap_or_else(|_| "flow.dag.yaml".into())
    };
    let shown = root.display().to_string();
    match err {
        FlowError::Invalid { path, problems } => problems
            .iter()
            .map(|p| DraftProblem {
                file: rel(path),
                line: p.line,
                message: p.message.replace(&shown, "."),
            })
            .collect(),
        FlowError::Yaml {
            path,
            line,
            message,
            ..
        } => vec![DraftProblem {
            file: rel(path),
            line: Some(*line),
            message: format!("invalid YAML: {message}"),
        }],
        other => vec![DraftProblem {
            file: "flow.dag.yaml".into(),
            line: None,
            message: other.to_string().replace(&shown, "."),
        }],
    }
}

async fn draft(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
    Json(req): Json<FlowDraft>,
) -> ApiResult<Json<DraftView>> {
    caller.require_writer()?;
    let rec = resolve(&state, &caller, &reference).await?;
    if req.edits.len() > MAX_DRAFT_EDITS {
        return Err(ApiErr::bad_request(format!(
            "a draft request may carry at most {MAX_DRAFT_EDITS} edits"
        )));
    }
    let changes = checked_changes(&req.files)?;
    let session = match (&req.session, req.validate) {
        (Some(id), true) => Some(crate::sessions::usable(&state, &caller, id).await?),
        (Some(_), false) => {
            return Err(ApiErr::bad_request(
                "a session reads a draft's tools only with validate: true".to_string(),
            ))
        }
        _ => None,
    };
    let variant = req.variant.clone().map(|v| (v.node, v.id));
    let mut checked = check_draft(&state, &rec, changes, req.edits, variant.clone()).await?;
    if req.validate && checked.view.flow.is_some() {
        let tools = read_tools(&state, &checked, session.as_ref()).await?;
        let added = missing_inputs(&checked, &tools);
        let mut problems: Vec<DraftProblem> =
            tools.values().filter_map(|t| t.error.clone()).collect();
        if !added.is_empty() {
            let edits = added.iter().map(|(_, e)| e.clone()).collect();
            checked = check_draft(&state, &rec, checked.view.files.clone(), edits, variant).await?;
        }
        problems.append(&mut checked.view.problems);
        checked.view.problems = problems;
        checked.view.added_inputs = added.into_iter().map(|(name, _)| name).collect();
        checked.view.tools = tools;
    }
    Ok(Json(checked.view))
}

/// A draft laid out in a folder of this server's home (removed when dropped), and what
/// loading it gave.
struct CheckedDraft {
    view: DraftView,
    dir: PathBuf,
    _cleanup: RemoveOnDrop,
}

/// Make a draft's edits, lay it out and load it.
async fn check_draft(
    state: &AppState,
    rec: &FlowRecord,
    mut changes: BTreeMap<String, Option<String>>,
    edits: Vec<FlowEdit>,
    variant: Option<(String, String)>,
) -> ApiResult<CheckedDraft> {
    let (version_dir, _) = snapshot_dir(state, rec).await?;
    let version = version_files(state, rec).await?;
    let tmp = state
        .config
        .home
        .join("snapshots")
        .join(crate::unique_name("draft"));
    let cleanup = RemoveOnDrop(vec![tmp.clone()]);
    let (entry, detail_version, dir) = (rec.entry.clone(), FlowVersion::from(rec), tmp.clone());
    let view = tokio::task::spawn_blocking(move || -> Result<DraftView, String> {
        let empty = |files, problems| DraftView {
            files,
            flow: None,
            problems,
            tools: BTreeMap::new(),
            added_inputs: Vec::new(),
            variants: BTreeMap::new(),
        };
        if let Err(problem) = apply_edits(&version, &mut changes, &edits) {
            return Ok(empty(changes, vec![problem]));
        }
        materialize(&version_dir, &changes, &tmp).map_err(|e| e.to_string())?;
        let load_from = match &entry {
            Some(e) => tmp.join(e),
            None => tmp.clone(),
        };
        let variants = std::fs::read_to_string(tmp.join("flow.dag.yaml"))
            .map(|text| flowrt_flow::edit::variants_of(&text))
            .unwrap_or_default()
            .into_iter()
            .map(|(node, default, ids)| {
                (node, flowrt_api::responses::NodeVariants { default, ids })
            })
            .collect();
        let options = flowrt_flow::LoadOptions { variant };
        Ok(match flowrt_flow::load_flow(&load_from, &options) {
            Ok(flow) => DraftView {
                flow: Some(crate::flows::describe(detail_version, &flow)),
                variants,
                ..empty(changes, Vec::new())
            },
            Err(e) => {
                let problems = problems_of(&e, &tmp);
                empty(changes, problems)
            }
        })
    })
    .await
    .map_err(|e| ApiErr::internal("checking the draft", e))?
    .map_err(|e| ApiErr::internal("checking the draft", e))?;
    Ok(CheckedDraft {
        view,
        dir,
        _cleanup: cleanup,
    })
}

/// Each node's tool as its template (read here) or its code (imported in the caller's session:
/// it is the author's code) declares its inputs, by node name.
async fn read_tools(
    state: &AppState,
    draft: &CheckedDraft,
    session: Option<&flowrt_store::Session>,
) -> ApiResult<BTreeMap<String, flowrt_api::responses::ToolMeta>> {
    use flowrt_api::responses::{ToolInputMeta, ToolMeta};
    let Some(flow) = &draft.view.flow else {
        return Ok(BTreeMap::new());
    };
    let mut tools = BTreeMap::new();
    let mut python: Vec<(String, String)> = Vec::new();
    for node in &flow.nodes {
        let Some(source) = node.source.clone() else {
            continue;
        };
        match node.ty.as_str() {
            "llm" | "prompt" => {
                let text = std::fs::read_to_string(draft.dir.join(&source)).unwrap_or_default();
                let meta = match flowrt_tools::template_variables(&text) {
                    Ok(vars) => ToolMeta {
                        path: source.clone(),
                        inputs: vars
                            .into_iter()
                            .map(|v| {
                                let input = ToolInputMeta {
                                    types: vec!["string".into()],
                                    required: true,
                                    default: None,
                                };
                                (v, input)
                            })
                            .collect(),
                        ..Default::default()
                    },
                    Err(e) => ToolMeta {
                        path: source.clone(),
                        error: Some(DraftProblem {
                            file: source.clone(),
                            line: match &e {
                                flowrt_tools::ToolError::Template { line, .. } => *line,
                                _ => None,
                            },
                            message: e.to_string(),
                        }),
                        ..Default::default()
                    },
                };
                tools.insert(node.name.clone(), meta);
            }
            "python" if source.ends_with(".py") => python.push((node.name.clone(), source)),
            _ => {}
        }
    }
    if python.is_empty() {
        return Ok(tools);
    }
    let Some(session) = session else {
        for (node, source) in python {
            let message = "pick a running session to read this python tool: its code runs there, never on the server".to_string();
            tools.insert(
                node,
                ToolMeta {
                    path: source.clone(),
                    error: Some(DraftProblem {
                        file: source,
                        line: None,
                        message,
                    }),
                    ..Default::default()
                },
            );
        }
        return Ok(tools);
    };
    let dir = draft.dir.clone();
    let (archive, info) =
        tokio::task::spawn_blocking(move || snapshot::pack(&dir, &SnapshotLimits::default()))
            .await
            .map_err(|e| ApiErr::internal("packing the draft", e))?
            .map_err(|e| ApiErr::internal("packing the draft", e))?;
    let addr = crate::sessions::agent_of(session).await?;
    let token = state.sessions.agent_token(&session.id).await;
    let req = flowrt_api::agent::DraftInspect {
        archive_base64: {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&archive)
        },
        hash: info.hash,
        tools: python.iter().map(|(_, s)| s.clone()).collect(),
        timeout_s: 10.0,
    };
    let metas = flowrt_session::client::inspect_draft(&addr, &token, &req)
        .await
        .map_err(|e| ApiErr::internal("reading the draft's tools in the session", e))?;
    for ((node, _), meta) in python.into_iter().zip(metas) {
        tools.insert(node, meta);
    }
    Ok(tools)
}

/// The inputs a node's tool takes that the node does not set, as edits adding each (with the
/// parameter's default, or empty), named `node.input`. Nodes with variants keep their inputs in
/// their variants, which are left alone.
fn missing_inputs(
    draft: &CheckedDraft,
    tools: &BTreeMap<String, flowrt_api::responses::ToolMeta>,
) -> Vec<(String, FlowEdit)> {
    let Some(flow) = &draft.view.flow else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for node in flow.nodes.iter().filter(|n| n.variant.is_none()) {
        let Some(meta) = tools.get(&node.name) else {
            continue;
        };
        for (input, spec) in &meta.inputs {
            if node.inputs.contains_key(input) {
                continue;
            }
            let value = spec
                .default
                .clone()
                .unwrap_or_else(|| serde_json::Value::String(String::new()));
            out.push((
                format!("{}.{input}", node.name),
                FlowEdit::Set {
                    file: None,
                    path: vec![
                        EditPathSeg::Key("nodes".into()),
                        EditPathSeg::Named {
                            name: node.name.clone(),
                        },
                        EditPathSeg::Key("inputs".into()),
                        EditPathSeg::Key(input.clone()),
                    ],
                    value,
                },
            ));
        }
    }
    out
}

/// Run one line of a draft in the caller's session, bounded by the interactive timeout.
async fn test_draft(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
    Json(req): Json<flowrt_api::requests::TestDraft>,
) -> ApiResult<Json<flowrt_api::responses::LineResult>> {
    caller.require_writer()?;
    let rec = resolve(&state, &caller, &reference).await?;
    let session = crate::sessions::usable(&state, &caller, &req.session).await?;
    let changes = checked_changes(&req.files)?;
    let variant = req.variant.clone().map(|v| (v.node, v.id));
    let checked = check_draft(&state, &rec, changes.clone(), Vec::new(), variant.clone()).await?;
    if checked.view.flow.is_none() {
        let first = checked.view.problems.first();
        return Err(ApiErr::bad_request(format!(
            "the draft does not load, so it cannot run: {}",
            first.map_or("see its problems".to_string(), |p| format!(
                "{}{}: {}",
                p.file,
                p.line.map(|l| format!(":{l}")).unwrap_or_default(),
                p.message
            ))
        )));
    }
    // The session's environment is built from its requirements: a draft that changes them runs
    // only after they are installed.
    let loaded = rec
        .entry
        .as_ref()
        .map_or(checked.dir.clone(), |e| checked.dir.join(e));
    let requirements = tokio::task::spawn_blocking(move || {
        flowrt_flow::load_flow(&loaded, &Default::default()).map(|f| f.requirements_rel())
    })
    .await
    .map_err(|e| ApiErr::internal("checking the draft", e))?
    .map_err(|e| ApiErr::bad_request(e.to_string()))?;
    if changes.contains_key(&requirements) {
        return Err(ApiErr::conflict(format!(
            "the draft changes {requirements}: save it, then install it in the session (or start one on the new version) to test it"
        )));
    }
    let dir = checked.dir.clone();
    let (archive, info) =
        tokio::task::spawn_blocking(move || snapshot::pack(&dir, &SnapshotLimits::default()))
            .await
            .map_err(|e| ApiErr::internal("packing the draft", e))?
            .map_err(|e| ApiErr::internal("packing the draft", e))?;
    let addr = crate::sessions::agent_of(&session).await?;
    let token = state.sessions.agent_token(&session.id).await;
    let trace = state
        .runs
        .exporters
        .is_some()
        .then(|| flowrt_api::trace::TraceAs {
            collection: flowrt_workspace::collection_of(Some(&rec.reference())),
            ..Default::default()
        });
    let line = flowrt_api::agent::DraftLine {
        archive_base64: {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&archive)
        },
        hash: info.hash,
        entry: rec.entry.clone(),
        inputs: req.inputs.into_iter().collect(),
        trace: trace.clone(),
        variant,
    };
    let timeout = state.config.interactive_timeout;
    let result = flowrt_session::client::draft_line(&addr, &token, &line, timeout).await;
    let _ = state.store.touch_session(&session.id).await;
    match result {
        Ok(mut reply) => {
            let spans = std::mem::take(&mut reply.spans);
            if let (Some(exporters), Some(trace)) = (&state.runs.exporters, &trace) {
                crate::sessions::export_test_spans(exporters, trace, spans);
            }
            Ok(Json(reply))
        }
        Err(flowrt_session::client::ClientError::Refused { status: 400, message, .. }) => {
            Err(ApiErr::bad_request(message))
        }
        Err(flowrt_session::client::ClientError::Timeout { .. }) => Err(ApiErr::new(
            StatusCode::GATEWAY_TIMEOUT,
            "InteractiveTimeout",
            format!(
                "the test did not finish within the server's request timeout ({} s); save the draft and run it as a batch run",
                timeout.as_secs_f64()
            ),
        )),
        Err(e) => Err(ApiErr::internal("testing the draft", e)),
    }
}

/// The text of a version's requirements file (empty when it has none).
async fn requirements_of(state: &AppState, rec: &FlowRecord) -> ApiResult<String> {
    let (_, load_from) = snapshot_dir(state, rec).await?;
    tokio::task::spawn_blocking(move || {
        let flow = flowrt_flow::load_flow(&load_from, &Default::default())
            .map_err(|e| ApiErr::bad_request(e.to_string()))?;
        Ok(flow
            .requirements_file()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default())
    })
    .await
    .map_err(|e| ApiErr::internal("reading the requirements", e))?
}

/// Move a running session to another version of its flow without restarting it: the agent
/// opens the new version and swaps it in (lines running finish on the old one).
async fn switch_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<flowrt_api::requests::SwitchSession>,
) -> ApiResult<Json<flowrt_api::responses::SessionView>> {
    caller.require_writer()?;
    let session = crate::sessions::usable(&state, &caller, &id).await?;
    if !caller.may_modify(&session.owner) {
        return Err(ApiErr::forbidden(format!(
            "session {id} is another user's; only its owner (or an admin) switches its flow"
        )));
    }
    let current_ref = session.flow_ref.clone().unwrap_or_default();
    let current = resolve(&state, &caller, &current_ref).await?;
    let target = resolve(&state, &caller, &req.flow).await?;
    if target.name != current.name {
        return Err(ApiErr::bad_request(format!(
            "session {id} runs flow {}; it switches between versions of that flow only (start a session for {})",
            current.name, target.name
        )));
    }
    if requirements_of(&state, &current).await? != requirements_of(&state, &target).await? {
        return Err(ApiErr::conflict(format!(
            "{} changes the requirements of {current_ref}: install them in the session (`flowrt session install`) or start a new session on it",
            target.reference()
        )));
    }
    let (dir, load_from) = snapshot_dir(&state, &target).await?;
    let (archive, info) =
        tokio::task::spawn_blocking(move || snapshot::pack(&dir, &SnapshotLimits::default()))
            .await
            .map_err(|e| ApiErr::internal("packing the flow", e))?
            .map_err(|e| ApiErr::internal("packing the flow", e))?;
    let addr = crate::sessions::agent_of(&session).await?;
    let token = state.sessions.agent_token(&id).await;
    let switch = flowrt_api::agent::SwitchFlow {
        archive_base64: {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&archive)
        },
        hash: info.hash,
        entry: target.entry.clone(),
        reference: target.reference(),
    };
    flowrt_session::client::switch_flow(&addr, &token, &switch)
        .await
        .map_err(|e| match e {
            flowrt_session::client::ClientError::Refused {
                status: 400,
                message,
                ..
            } => ApiErr::bad_request(message),
            other => ApiErr::internal("switching the session's flow", other),
        })?;
    state
        .store
        .update_session_flow(&id, &load_from.display().to_string(), &target.reference())
        .await?;
    let _ = state.sessions.changes.send(id.clone());
    let mut view = crate::sessions::view(&state.sessions.get(&id).await?);
    view.note = Some(format!(
        "now runs {} (switched from {current_ref} without a restart)",
        target.reference()
    ));
    Ok(Json(view))
}

/// Check who may save under `target`, and which latest version the save expects.
async fn save_target(
    state: &AppState,
    caller: &Caller,
    target: &str,
    base: &FlowRecord,
) -> ApiResult<u32> {
    if target == base.name {
        if !caller.may_modify(&base.owner) {
            return Err(ApiErr::forbidden(format!(
                "flow '{target}' belongs to another user; save your draft under a new name"
            )));
        }
        return Ok(base.version);
    }
    crate::flows::check_name(target)?;
    if state.store.get_flow(target, None).await?.is_some() {
        return Err(ApiErr::conflict(format!(
            "the name '{target}' is taken; save under a name no flow has"
        )));
    }
    Ok(0)
}

async fn save(
    State(state): State<AppState>,
    caller: Caller,
    Path(target): Path<String>,
    Json(req): Json<SaveFlow>,
) -> ApiResult<Response> {
    caller.require_writer()?;
    let message = req.message.trim().to_string();
    if message.is_empty() || message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiErr::bad_request(format!(
            "a save needs a message of 1 to {MAX_MESSAGE_CHARS} characters saying what changed"
        )));
    }
    let base = resolve(&state, &caller, &req.base).await?;
    if crate::flows::parse_ref(&req.base)?.1.is_none() {
        return Err(ApiErr::bad_request(format!(
            "base '{}' must name the version the draft started from, as {}",
            req.base,
            base.reference()
        )));
    }
    let expect = save_target(&state, &caller, &target, &base).await?;
    let changes = checked_changes(&req.files)?;
    let (version_dir, _) = snapshot_dir(&state, &base).await?;
    let root = state.config.home.join("snapshots");
    let tmp = root.join(crate::unique_name("incoming"));
    let _cleanup = RemoveOnDrop(vec![tmp.clone()]);
    let (tmp2, entry) = (tmp.clone(), base.entry.clone());
    let built = tokio::task::spawn_blocking(
        move || -> Result<Result<snapshot::SnapshotInfo, String>, String> {
            materialize(&version_dir, &changes, &tmp2).map_err(|e| e.to_string())?;
            let load_from = match &entry {
                Some(e) => tmp2.join(e),
                None => tmp2.clone(),
            };
            if let Err(e) = flowrt_flow::load_flow(&load_from, &Default::default()) {
                let shown = tmp2.display().to_string();
                return Ok(Err(e.to_string().replace(&shown, ".")));
            }
            let limits = SnapshotLimits::default();
            let files = snapshot::collect(&tmp2, &limits).map_err(|e| e.to_string())?;
            let info = snapshot::SnapshotInfo {
                hash: snapshot::hash_files(&files).map_err(|e| e.to_string())?,
                files: files.len(),
                bytes: files
                    .iter()
                    .filter_map(|(_, p)| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum(),
            };
            let dest = tmp2.with_file_name(info.hash.trim_start_matches("sha256:"));
            if !dest.exists() {
                std::fs::rename(&tmp2, &dest).map_err(|e| e.to_string())?;
            }
            Ok(Ok(info))
        },
    )
    .await
    .map_err(|e| ApiErr::internal("saving the flow", e))?
    .map_err(|e| ApiErr::internal("saving the flow", e))?;
    let info = built.map_err(|problems| {
        ApiErr::bad_request(format!(
            "the draft does not load, so it was not saved:\n{problems}"
        ))
    })?;
    if base.hash != info.hash {
        crate::quota::check(&state, &caller.0.id, info.bytes).await?;
    }
    let dir = root.join(info.hash.trim_start_matches("sha256:"));
    state
        .blobs
        .publish_tree(&dir)
        .await
        .map_err(|e| ApiErr::internal("saving the flow", e))?;
    let owner = if target == base.name {
        base.owner.clone()
    } else {
        caller.0.id.clone()
    };
    let saved = state
        .store
        .save_flow(&NewFlowVersion {
            name: &target,
            owner: &owner,
            hash: &info.hash,
            entry: base.entry.as_deref(),
            files: info.files as u64,
            bytes: info.bytes,
            message: Some(&message),
            expect_latest: Some(expect),
        })
        .await?;
    match saved {
        FlowSaved::Created(rec) => Ok((
            StatusCode::CREATED,
            Json(PushedFlow {
                flow: FlowVersion::from(&rec),
                unchanged: false,
            }),
        )
            .into_response()),
        FlowSaved::Unchanged(rec) => Ok((
            StatusCode::OK,
            Json(PushedFlow {
                flow: FlowVersion::from(&rec),
                unchanged: true,
            }),
        )
            .into_response()),
        FlowSaved::Stale(latest) => {
            let Some(latest) = latest else {
                return Err(ApiErr::conflict(format!(
                    "flow '{target}' changed while saving; reload it and save again"
                )));
            };
            let changes = diff_versions(&state, &base, &latest).await?;
            let conflict = SaveConflict {
                code: "FlowChanged".into(),
                message: format!(
                    "{} was saved after {} (which this draft started from); your changes were not saved. Merge them into {} and save again, or save under a new name",
                    latest.reference(),
                    base.reference(),
                    latest.reference()
                ),
                latest: FlowVersion::from(&latest),
                changes,
            };
            Ok((StatusCode::CONFLICT, Json(conflict)).into_response())
        }
    }
}

#[derive(Deserialize)]
struct CompareQuery {
    from: u32,
    to: u32,
}

async fn compare(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<CompareQuery>,
) -> ApiResult<Json<FlowComparison>> {
    crate::flows::check_name(&name)?;
    let from = resolve(&state, &caller, &format!("{name}@v{}", q.from)).await?;
    let to = resolve(&state, &caller, &format!("{name}@v{}", q.to)).await?;
    let files = diff_versions(&state, &from, &to).await?;
    Ok(Json(FlowComparison {
        from: FlowVersion::from(&from),
        to: FlowVersion::from(&to),
        files,
    }))
}

/// The files that differ between two versions, with their changed lines.
async fn diff_versions(
    state: &AppState,
    from: &FlowRecord,
    to: &FlowRecord,
) -> ApiResult<Vec<FileDiff>> {
    let a = version_files(state, from).await?;
    let b = version_files(state, to).await?;
    tokio::task::spawn_blocking(move || diff_trees(&a, &b))
        .await
        .map_err(|e| ApiErr::internal("comparing the flow's versions", e))?
        .map_err(|e| ApiErr::internal("comparing the flow's versions", e))
}

fn diff_trees(
    a: &BTreeMap<String, PathBuf>,
    b: &BTreeMap<String, PathBuf>,
) -> std::io::Result<Vec<FileDiff>> {
    let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for path in paths {
        let read = |side: &BTreeMap<String, PathBuf>| -> std::io::Result<Option<Vec<u8>>> {
            side.get(path).map(std::fs::read).transpose()
        };
        let (old, new) = (read(a)?, read(b)?);
        if old == new {
            continue;
        }
        let status = match (&old, &new) {
            (None, _) => "added",
            (_, None) => "removed",
            _ => "changed",
        };
        let text = |bytes: &Option<Vec<u8>>| match bytes {
            None => Some(String::new()),
            Some(b) if b.len() <= MAX_EDIT_BYTES => String::from_utf8(b.clone()).ok(),
            Some(_) => None,
        };
        let hunks = match (text(&old), text(&new)) {
            (Some(o), Some(n)) => line_hunks(&o, &n),
            _ => Vec::new(),
        };
        out.push(FileDiff {
            path: path.clone(),
            status: status.into(),
            hunks,
        });
    }
    Ok(out)
}

/// Changed lines with three lines of context, as a unified diff groups them.
pub fn line_hunks(old: &str, new: &str) -> Vec<DiffHunk> {
    let diff = similar::TextDiff::from_lines(old, new);
    diff.grouped_ops(3)
        .iter()
        .map(|group| {
            let mut lines = Vec::new();
            let (mut from_line, mut to_line) = (0, 0);
            for (i, op) in group.iter().enumerate() {
                if i == 0 {
                    from_line = op.old_range().start + 1;
                    to_line = op.new_range().start + 1;
                }
                for change in diff.iter_changes(op) {
                    let op = match change.tag() {
                        similar::ChangeTag::Equal => " ",
                        similar::ChangeTag::Delete => "-",
                        similar::ChangeTag::Insert => "+",
                    };
                    let text = change.value();
                    lines.push(DiffLine {
                        op: op.into(),
                        text: text.strip_suffix('\n').unwrap_or(text).to_string(),
                    });
                }
            }
            DiffHunk {
                from_line,
                to_line,
                lines,
            }
        })
        .collect()
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

    #[test]
    fn hunks_hold_only_the_changed_lines_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\ni\n";
        let hunks = line_hunks(old, new);
        assert_eq!(hunks.len(), 1);
        let changed: Vec<String> = hunks[0]
            .lines
            .iter()
            .filter(|l| l.op != " ")
            .map(|l| format!("{}{}", l.op, l.text))
            .collect();
        assert_eq!(changed, vec!["-e", "+E"]);
        assert_eq!((hunks[0].from_line, hunks[0].to_line), (2, 2));
    }
}
