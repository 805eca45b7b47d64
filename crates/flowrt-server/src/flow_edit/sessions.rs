//! Drafts and versions in a session: a line of an unsaved draft run there, and a running
//! session switched to a saved version of its flow without a restart.

use super::draft::{check_draft, checked_changes};
use super::*;

/// Run one line of a draft in the caller's session, bounded by the interactive timeout.
pub(super) async fn test_draft(
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
    let mut variant = variant;
    if let Some(partial) = &req.partial {
        let variant_applies = write_partial(&checked.dir, rec.entry.is_some(), partial, &variant)?;
        if !variant_applies {
            variant = None;
        }
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
            flowrt_api::ErrorCode::InteractiveTimeout,
            format!(
                "the test did not finish within the server's request timeout ({} s); save the draft and run it as a batch run",
                timeout.as_secs_f64()
            ),
        )),
        Err(e) => Err(ApiErr::internal("testing the draft", e)),
    }
}

/// Replace a laid-out draft's flow file with the part of it a partial test runs.
fn write_partial(
    dir: &std::path::Path,
    is_prompty: bool,
    partial: &flowrt_api::requests::PartialTest,
    variant: &Option<(String, String)>,
) -> ApiResult<bool> {
    use flowrt_api::requests::PartialTest;
    use flowrt_flow::edit::Partial;
    if is_prompty {
        return Err(ApiErr::bad_request(
            "a .prompty flow is one node: test the whole line".to_string(),
        ));
    }
    let path = dir.join("flow.dag.yaml");
    let text =
        std::fs::read_to_string(&path).map_err(|e| ApiErr::internal("reading the draft", e))?;
    let part = match partial {
        PartialTest::Node { node, inputs } => Partial::Node { node, inputs },
        PartialTest::From { node, upstream } => Partial::From { node, upstream },
    };
    let chosen = variant.as_ref().map(|(n, id)| (n.as_str(), id.as_str()));
    let built = flowrt_flow::edit::partial_flow(&text, &part, chosen)
        .map_err(|e| ApiErr::bad_request(e.message))?;
    std::fs::write(&path, built.text).map_err(|e| ApiErr::internal("writing the draft", e))?;
    Ok(built.variant_applies)
}

/// The text of a version's requirements file (empty when it has none).
pub(super) async fn requirements_of(state: &AppState, rec: &FlowRecord) -> ApiResult<String> {
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
pub(super) async fn switch_session(
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
    let mut view = crate::sessions::view(&state.sessions.get(&id).await?, &caller);
    view.note = Some(format!(
        "now runs {} (switched from {current_ref} without a restart)",
        target.reference()
    ));
    Ok(Json(view))
}

/// The tools the session's installed packages declare, for *add a node*. Listing them runs the
/// packages' code, so it happens in the session.
pub(super) async fn package_tools(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<flowrt_api::responses::PackageTools>> {
    caller.require_writer()?;
    let session = crate::sessions::usable(&state, &caller, &id).await?;
    let addr = crate::sessions::agent_of(&session).await?;
    let token = state.sessions.agent_token(&id).await;
    let tools = flowrt_session::client::package_tools(&addr, &token)
        .await
        .map_err(|e| ApiErr::internal("listing the session's package tools", e))?;
    Ok(Json(tools))
}
