//! Flows in the workspace: `/api/v1/flows`. A client pushes a flow folder as a snapshot (a
//! gzip-compressed tar); the server checks and unpacks it under `<FLOWRT_HOME>/snapshots/<hash>/`,
//! records it as the next version of its name, and from then on runs only what was uploaded.
//! `GET /api/v1/flows/{ref}` describes a version as a UI draws it: inputs, outputs, nodes, edges.

use crate::auth::Caller;
use crate::error::{ApiErr, ApiResult};
use crate::openapi::{doc, json, list_of};
use crate::routing::ApiRoutes;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use flowrt_api::responses::{
    ActivateView, FlowAction, FlowDetail, FlowEdge, FlowInputView, FlowNodeView, FlowOutputView,
    FlowVersion, PushedFlow,
};
use flowrt_api::workspace::Permission;
use flowrt_flow::{Flow, InputValue, RefSource};
use flowrt_store::snapshot::{self, SnapshotLimits};
use flowrt_store::FlowRecord;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

pub fn routes() -> ApiRoutes {
    // The upload streams to disk: `spool` enforces its size as it arrives.
    ApiRoutes::default()
        .get(
            "/api/v1/flows",
            Permission::Read,
            list,
            doc("List the workspace's flows you may see, every version.")
                .reply(200, list_of::<FlowVersion>()),
        )
        .post(
            "/api/v1/flows/{name}",
            Permission::SessionsWrite,
            push,
            doc("Push a snapshot (a gzip-compressed tar of the flow folder; ?entry=FILE.prompty) as the next version of name.")
                .binary_body("application/gzip")
                .query::<String>("entry")
                .reply(201, json::<PushedFlow>())
                .reply(200, json::<PushedFlow>()),
        )
        .get(
            "/api/v1/flows/{name}",
            Permission::Read,
            show,
            doc("Show a flow version (NAME or NAME@vN): inputs, outputs, nodes and edges.")
                .reply(200, json::<FlowDetail>()),
        )
}

/// A flow name is a folder-like word: it appears in references (`name@v2`) and URLs.
pub fn check_name(name: &str) -> ApiResult<()> {
    flowrt_api::names::check("flow", name, flowrt_api::names::FLOW_NAME_MAX)
        .map_err(ApiErr::bad_request)
}

/// `name` or `name@vN`.
pub fn parse_ref(reference: &str) -> ApiResult<(String, Option<u32>)> {
    let (name, version) = match reference.rsplit_once("@v") {
        Some((n, v)) => {
            let v: u32 = v.parse().map_err(|_| {
                ApiErr::bad_request(format!(
                    "'{reference}' is not a flow reference; use NAME or NAME@vN"
                ))
            })?;
            (n, Some(v))
        }
        None => (reference, None),
    };
    check_name(name)?;
    Ok((name.to_string(), version))
}

/// The snapshot folder of a flow version, and the path to load it from, in this server's home:
/// fetched from the workspace's files when another server stored it.
pub async fn snapshot_dir(state: &AppState, rec: &FlowRecord) -> ApiResult<(PathBuf, PathBuf)> {
    let (dir, load_from) = snapshot_paths(state, rec);
    if !state
        .blobs
        .fetch_tree(&dir)
        .await
        .map_err(|e| ApiErr::internal("fetching the flow", e))?
    {
        return Err(ApiErr::internal(
            "finding the flow",
            format!("the files of flow {} are gone", rec.reference()),
        ));
    }
    Ok((dir, load_from))
}

/// Where a flow version's snapshot is in this server's home, fetched or not.
fn snapshot_paths(state: &AppState, rec: &FlowRecord) -> (PathBuf, PathBuf) {
    let dir = state
        .config
        .home
        .join("snapshots")
        .join(rec.hash.trim_start_matches("sha256:"));
    let load_from = match &rec.entry {
        Some(e) => dir.join(e),
        None => dir.clone(),
    };
    (dir, load_from)
}

/// The flow version `reference` names, if the caller may see it (404 otherwise, so another
/// user's flow does not show it exists).
pub async fn resolve(state: &AppState, caller: &Caller, reference: &str) -> ApiResult<FlowRecord> {
    let (name, version) = parse_ref(reference)?;
    let rec = state.store.get_flow(&name, version).await?;
    match rec {
        Some(r) if caller.may_access(&r.owner) => Ok(r),
        _ => Err(ApiErr::not_found(format!(
            "flow '{reference}' does not exist; push it with `flowrt flow push DIR --name {name}` (`flowrt flow list` shows yours)"
        ))),
    }
}

#[derive(Deserialize)]
struct PushQuery {
    /// The flow file inside the snapshot, when it is a `.prompty` file rather than the folder.
    #[serde(default)]
    entry: Option<String>,
}

/// Paths removed when the request that made them ends, however it ends (one moved into place
/// meanwhile is simply not there any more).
pub(crate) struct RemoveOnDrop(pub Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
    }
}

/// Write an upload's body to `path` as it arrives (never whole in memory), within the snapshot
/// size limit.
async fn spool(body: axum::body::Body, path: &std::path::Path) -> ApiResult<()> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let limit = SnapshotLimits::default().max_total_bytes + 1024 * 1024;
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| ApiErr::internal("receiving the flow", e))?;
    }
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiErr::internal("receiving the flow", e))?;
    let mut stream = body.into_data_stream();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiErr::bad_request(format!("the upload was cut off: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiErr::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                flowrt_api::ErrorCode::PayloadTooLarge,
                format!("a flow upload may be at most {limit} bytes"),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiErr::internal("receiving the flow", e))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiErr::internal("receiving the flow", e))
}

/// Load a snapshot as a flow off the async runtime: parsing is bounded, but it is still work.
async fn load(dir: PathBuf, name: String) -> ApiResult<Flow> {
    let shown = dir.display().to_string();
    tokio::task::spawn_blocking(move || flowrt_flow::load_flow(&dir, &Default::default()))
        .await
        .map_err(|e| ApiErr::internal("loading the flow", e))?
        .map_err(|e| ApiErr::bad_request(e.to_string().replace(&shown, &name)))
}

async fn push(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<PushQuery>,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<PushedFlow>)> {
    caller.require_writer()?;
    check_name(&name)?;
    if let Some(latest) = state.store.get_flow(&name, None).await? {
        if !caller.may_modify(&latest.owner) {
            return Err(if caller.may_access(&latest.owner) {
                ApiErr::forbidden(format!(
                    "flow '{name}' belongs to another user; push yours under another name (--name)"
                ))
            } else {
                // Taken by someone this caller may not see: say no more than that the name is taken.
                ApiErr::conflict(format!(
                    "the name '{name}' is taken; push under another name (--name)"
                ))
            });
        }
    }
    let entry = match q.entry {
        Some(e) => {
            let p = std::path::Path::new(&e);
            if p.is_absolute() || p.components().count() != 1 || e.starts_with('.') {
                return Err(ApiErr::bad_request(format!(
                    "entry '{e}' must name a file at the top of the snapshot"
                )));
            }
            Some(e)
        }
        None => None,
    };
    // A few uploads unpack at once; the rest wait their turn, their bodies not yet read.
    let _permit = state
        .uploads
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiErr::internal("waiting to unpack the flow", e))?;
    let root = state.config.home.join("snapshots");
    let stamp = crate::unique_name("incoming");
    let tmp = root.join(&stamp);
    let archive = root.join(format!("{stamp}.tar.gz"));
    // Whatever happens from here, nothing of a refused upload is kept.
    let _cleanup = RemoveOnDrop(vec![tmp.clone(), archive.clone()]);
    spool(body, &archive).await?;
    let (tmp2, archive2) = (tmp.clone(), archive.clone());
    let unpacked = tokio::task::spawn_blocking(move || {
        let file =
            std::fs::File::open(&archive2).map_err(|source| snapshot::SnapshotError::Io {
                action: "cannot read the upload",
                path: archive2.clone(),
                source,
            })?;
        snapshot::unpack(
            std::io::BufReader::new(file),
            &tmp2,
            &SnapshotLimits::default(),
        )
    })
    .await
    .map_err(|e| ApiErr::internal("unpacking the flow", e))?;
    let info = unpacked.map_err(|e| {
        if e.is_bad_upload() {
            ApiErr::bad_request(format!("flow '{name}': {e}"))
        } else {
            ApiErr::internal("storing the flow", e)
        }
    })?;
    // A new version counts against its pusher's quota (the same files again add none).
    let latest = state.store.get_flow(&name, None).await?;
    if latest.is_none_or(|l| l.hash != info.hash) {
        crate::quota::check(&state, &caller.0.id, info.bytes).await?;
    }
    // Checked where it was unpacked: only a flow that loads is stored.
    let load_from = match &entry {
        Some(e) => tmp.join(e),
        None => tmp.clone(),
    };
    load(load_from, name.clone()).await?;
    let dir = root.join(info.hash.trim_start_matches("sha256:"));
    if !dir.exists() {
        std::fs::rename(&tmp, &dir).map_err(|e| ApiErr::internal("storing the flow", e))?;
    }
    // Stored for every server before the version that names it exists.
    state
        .blobs
        .publish_tree(&dir)
        .await
        .map_err(|e| ApiErr::internal("storing the flow", e))?;
    let (rec, created) = state
        .store
        .push_flow(
            &name,
            &caller.0.id,
            &info.hash,
            entry.as_deref(),
            info.files as u64,
            info.bytes,
        )
        .await?;
    let v = PushedFlow {
        flow: FlowVersion::from(&rec),
        unchanged: !created,
    };
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(v),
    ))
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<FlowVersion>>> {
    let all: Vec<FlowVersion> = state
        .store
        .list_flows()
        .await?
        .iter()
        .filter(|r| caller.may_access(&r.owner))
        .map(FlowVersion::from)
        .collect();
    Ok(Json(all))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
) -> ApiResult<Json<FlowDetail>> {
    let rec = resolve(&state, &caller, &reference).await?;
    let (_, load_from) = snapshot_dir(&state, &rec).await?;
    let flow = load(load_from, rec.reference()).await?;
    let mut detail = describe(FlowVersion::from(&rec), &flow);
    let start = crate::sessions::may_start_sessions(&state, &caller);
    detail.actions = flow_actions(&caller, &rec.owner, start);
    Ok(Json(detail))
}

/// The rules a save (`flow_edit::versions`), a deployment's creation and a session's start
/// enforce, said ahead: the flow's owner (or an admin) saves its next version; deploying is
/// `endpoints::may_deploy`; `start`: whether the caller may start sessions
/// (`sessions::may_start_sessions`), given the server's settings.
fn flow_actions(caller: &Caller, owner: &str, start: bool) -> Vec<FlowAction> {
    [
        (FlowAction::Edit, caller.may_modify(owner)),
        (FlowAction::Deploy, crate::endpoints::may_deploy(caller)),
        (FlowAction::StartSession, start),
    ]
    .into_iter()
    .filter_map(|(action, allowed)| allowed.then_some(action))
    .collect()
}

/// What a UI draws: typed inputs and outputs, nodes with their kind and inputs, and the edges
/// between them (from a node or `inputs`, to a node or `outputs`).
pub fn describe(version: FlowVersion, flow: &Flow) -> FlowDetail {
    let inputs = flow
        .inputs
        .iter()
        .map(|(k, i)| {
            (
                k.clone(),
                FlowInputView {
                    ty: i.ty.as_str().to_string(),
                    default: i.default.clone(),
                    is_chat_input: i.is_chat_input,
                    is_chat_history: i.is_chat_history,
                },
            )
        })
        .collect();
    let outputs = flow
        .outputs
        .iter()
        .map(|(k, o)| {
            (
                k.clone(),
                FlowOutputView {
                    reference: o.reference.to_string(),
                    ty: o.ty.clone(),
                    is_chat_output: o.is_chat_output,
                },
            )
        })
        .collect();
    let mut edges: Vec<FlowEdge> = Vec::new();
    let edge = |from: String, to: &str| FlowEdge {
        from,
        to: to.to_string(),
        input: None,
        output: None,
        activate: None,
    };
    // A literal (an output or `activate.when` written as a value) reads nothing: no edge.
    let source_of = |s: &RefSource| match s {
        RefSource::FlowInput(_) => Some("inputs".to_string()),
        RefSource::Node(n) => Some(n.clone()),
        RefSource::Literal(_) => None,
    };
    let nodes = flow
        .nodes
        .iter()
        .map(|n| {
            let mut node_inputs = std::collections::BTreeMap::new();
            for (k, v) in &n.inputs {
                match v {
                    InputValue::Reference(r) => {
                        if let Some(from) = source_of(&r.source) {
                            edges.push(FlowEdge {
                                input: Some(k.clone()),
                                ..edge(from, &n.name)
                            });
                        }
                        node_inputs.insert(k.clone(), Value::String(r.to_string()));
                    }
                    InputValue::Literal(l) => {
                        node_inputs.insert(k.clone(), l.clone());
                    }
                }
            }
            if let Some(from) = n.activate.as_ref().and_then(|a| source_of(&a.when.source)) {
                edges.push(FlowEdge {
                    activate: Some(true),
                    ..edge(from, &n.name)
                });
            }
            FlowNodeView {
                name: n.name.clone(),
                ty: n.kind.as_str().to_string(),
                source: n
                    .source
                    .path()
                    .map(str::to_string)
                    .or_else(|| match &n.source {
                        flowrt_flow::ToolSource::Package { tool } => Some(tool.clone()),
                        _ => None,
                    }),
                connection: n.connection.clone(),
                api: n.api.clone(),
                aggregation: n.aggregation,
                variant: n.variant.clone(),
                activate: n.activate.as_ref().map(|a| ActivateView {
                    when: a.when.to_string(),
                    is: a.is.clone(),
                }),
                inputs: node_inputs,
            }
        })
        .collect();
    for (name, o) in &flow.outputs {
        if let Some(from) = source_of(&o.reference.source) {
            edges.push(FlowEdge {
                output: Some(name.clone()),
                ..edge(from, "outputs")
            });
        }
    }
    FlowDetail {
        flow: version,
        inputs,
        outputs,
        nodes,
        edges,
        actions: Vec::new(),
    }
}

#[cfg(test)]
mod action_tests {
    use super::*;
    use crate::sessions::tests::caller;
    use flowrt_api::workspace::Role;

    /// The flow page's Edit (vs Files) and Deploy follow the server's rules.
    #[test]
    fn each_caller_gets_the_flow_actions_the_server_allows() {
        use FlowAction::*;
        assert_eq!(
            flow_actions(&caller("u-ann", Role::User), "u-ann", true),
            [Edit, Deploy, StartSession]
        );
        assert_eq!(
            flow_actions(&caller("u-adm", Role::Admin), "u-ann", false),
            [Edit, Deploy]
        );
        assert_eq!(
            flow_actions(&caller("u-bob", Role::User), "u-ann", true),
            [Deploy, StartSession]
        );
        assert_eq!(
            flow_actions(&caller("u-vwr", Role::Viewer), "u-vwr", false),
            []
        );
    }
}
