//! Drafts: a version with changes not yet saved, edited in its YAML's text and checked as it
//! changes; with `validate`, each node's tool read (templates here, python code in a session).

use super::*;

/// The changed files of a draft, checked: paths inside the flow, texts within the edit size.
pub(super) fn checked_changes(
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
pub(super) fn apply_edits(
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
/// Lay out a version's files with a draft's changes in a fresh folder. A change the tree cannot
/// take (a file where the flow has a folder, or inside one of its files) is the draft's problem,
/// answered as the inner `Err` with the path and what to do; the outer error is the server's.
pub(super) fn materialize(
    version_dir: &std::path::Path,
    changes: &BTreeMap<String, Option<String>>,
    into: &std::path::Path,
) -> std::io::Result<Result<(), DraftProblem>> {
    crate::sessions::copy_flow(version_dir, into)?;
    for (rel, text) in changes {
        if let Some(problem) = collision(into, rel) {
            return Ok(Err(problem));
        }
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
    Ok(Ok(()))
}

/// Why `rel` cannot be a file of the laid-out flow in `root`: a folder is there, or one of the
/// folders on its way is a file.
fn collision(root: &std::path::Path, rel: &str) -> Option<DraftProblem> {
    let problem = |message: String| DraftProblem {
        file: rel.to_string(),
        line: None,
        message,
    };
    if root.join(rel).is_dir() {
        return Some(problem(format!(
            "'{rel}' is a folder of the flow, so a file cannot take its place; name another file, or change the folder's files one by one"
        )));
    }
    let parts: Vec<&str> = rel.split('/').collect();
    for depth in 1..parts.len() {
        let prefix = parts[..depth].join("/");
        if root.join(&prefix).is_file() {
            return Some(problem(format!(
                "'{prefix}' is a file of the flow, so '{rel}' cannot be inside it; name another folder"
            )));
        }
    }
    None
}

/// A flow's load failure as problems with the file (relative to the flow) and line.
pub(super) fn problems_of(
    err: &flowrt_flow::FlowError,
    root: &std::path::Path,
) -> Vec<DraftProblem> {
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

pub(super) async fn draft(
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
pub(super) struct CheckedDraft {
    pub(super) view: DraftView,
    pub(super) dir: PathBuf,
    _cleanup: RemoveOnDrop,
}

/// Make a draft's edits, lay it out and load it.
pub(super) async fn check_draft(
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
        if let Err(problem) =
            materialize(&version_dir, &changes, &tmp).map_err(|e| e.to_string())?
        {
            return Ok(empty(changes, vec![problem]));
        }
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
pub(super) async fn read_tools(
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
pub(super) fn missing_inputs(
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
