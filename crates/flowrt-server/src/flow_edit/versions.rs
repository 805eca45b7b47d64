//! Versions: a draft saved as the next version with a message (or refused with the difference
//! when someone saved first), and two versions compared file by file.

use super::draft::{checked_changes, materialize};
use super::*;

/// Check who may save under `target`, and which latest version the save expects.
pub(super) async fn save_target(
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

pub(super) async fn save(
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
            if let Err(p) = materialize(&version_dir, &changes, &tmp2).map_err(|e| e.to_string())? {
                return Ok(Err(format!("{}: {}", p.file, p.message)));
            }
            let load_from = match &entry {
                Some(e) => tmp2.join(e),
                None => tmp2.clone(),
            };
            if let Err(e) = flowrt_flow::load_flow(&load_from, &Default::default()) {
                let shown = tmp2.display().to_string();
                return Ok(Err(e.to_string().replace(&shown, ".")));
            }
            let info =
                snapshot::settle(&tmp2, &SnapshotLimits::default()).map_err(|e| e.to_string())?;
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
                code: flowrt_api::ErrorCode::FlowChanged,
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
pub(super) struct CompareQuery {
    from: u32,
    to: u32,
}

pub(super) async fn compare(
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
pub(super) async fn diff_versions(
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

pub(super) fn diff_trees(
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
pub(super) fn line_hunks(old: &str, new: &str) -> Vec<DiffHunk> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
