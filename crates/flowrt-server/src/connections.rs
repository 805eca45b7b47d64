//! Connections in the workspace: created through the API by a user, owned by them, shareable
//! with the workspace, their secrets sealed at rest with the server's key (outside the
//! database) and never returned. A session receives, of the connections its flow names, its
//! owner's own, else shared ones.

use crate::auth::Caller;
use crate::error::{ApiErr, ApiResult};
use crate::openapi::{doc, json, list_of, Reply};
use crate::routing::ApiRoutes;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use flowrt_api::requests::CreateConnection;
use flowrt_api::responses::ConnectionView;
use flowrt_api::workspace::Permission;
use flowrt_api::Connection;
use flowrt_store::{ConnectionRecord, ConnectionStore, MASK};

/// A connection YAML is a few lines; anything bigger is not one.
const MAX_YAML_BYTES: usize = 64 * 1024;

pub fn routes() -> ApiRoutes {
    ApiRoutes::default()
        .get(
            "/api/v1/connections",
            Permission::Read,
            list,
            doc("Your workspace connections and shared ones, secrets masked.")
                .reply(200, list_of::<ConnectionView>()),
        )
        .post(
            "/api/v1/connections",
            Permission::SessionsWrite,
            create,
            doc("Create or replace a connection {yaml, shared}: promptflow's connection YAML; secrets sealed at rest, never returned.")
                .body::<CreateConnection>()
                .reply(201, json::<ConnectionView>()),
        )
        .get(
            "/api/v1/connections/{name}",
            Permission::Read,
            show,
            doc("One connection (yours, else a shared one), secrets masked.")
                .reply(200, json::<ConnectionView>()),
        )
        .delete(
            "/api/v1/connections/{name}",
            Permission::SessionsWrite,
            delete,
            doc("Delete one of your connections.")
                .reply(204, Reply::Empty),
        )
}

/// User `owner`'s connections, as the workspace stores them (fetched into this server's home
/// when another server stores the workspace's files).
async fn user_store(state: &AppState, owner: &str) -> ApiResult<ConnectionStore> {
    Ok(flowrt_session::manager::synced_store(&state.blobs, &state.config.home, owner).await?)
}

async fn user_names(state: &AppState) -> ApiResult<std::collections::HashMap<String, String>> {
    Ok(state
        .store
        .list_users()
        .await?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect())
}

fn view(rec: &ConnectionRecord, conn: &Connection, owner_name: &str) -> ConnectionView {
    ConnectionView {
        name: rec.name.clone(),
        kind: rec.kind.clone(),
        owner: owner_name.to_string(),
        shared: rec.shared,
        configs: conn
            .configs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        secrets: conn
            .secrets
            .keys()
            .map(|k| (k.clone(), MASK.to_string()))
            .collect(),
        created: rec.created,
    }
}

/// Which connections the caller may see: their own and shared ones (admins: all).
fn may_see(caller: &Caller, rec: &ConnectionRecord) -> bool {
    rec.owner == caller.0.id || rec.shared || caller.is_admin()
}

async fn load_view(state: &AppState, rec: &ConnectionRecord) -> ApiResult<Option<ConnectionView>> {
    let names = user_names(state).await?;
    let conn = user_store(state, &rec.owner)
        .await?
        .get(&rec.name)
        .map_err(|e| ApiErr::internal("reading a connection", e))?;
    Ok(conn.map(|c| {
        view(
            rec,
            &c,
            names.get(&rec.owner).map(String::as_str).unwrap_or(""),
        )
    }))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ConnectionView>>> {
    let mut out = Vec::new();
    for rec in state.store.list_connections().await? {
        if may_see(&caller, &rec) {
            if let Some(v) = load_view(&state, &rec).await? {
                out.push(v);
            }
        }
    }
    Ok(Json(out))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateConnection>,
) -> ApiResult<(StatusCode, Json<ConnectionView>)> {
    if req.yaml.len() > MAX_YAML_BYTES {
        return Err(ApiErr::bad_request(format!(
            "the connection YAML is {} bytes; a connection is at most {MAX_YAML_BYTES}",
            req.yaml.len()
        )));
    }
    let yaml = req.yaml.clone();
    let conn = tokio::task::spawn_blocking(move || {
        ConnectionStore::parse_yaml_text(&yaml, "the connection YAML")
    })
    .await
    .map_err(|e| ApiErr::internal("reading the connection", e))?
    .map_err(|e| ApiErr::bad_request(e.to_string()))?;
    let store = user_store(&state, &caller.0.id).await?;
    let file = store.path_of(&conn.name);
    let to_store = conn.clone();
    // Written and stored for every server before another request here mirrors the folder.
    let guard = state.blobs.guard().await;
    tokio::task::spawn_blocking(move || store.upsert(&to_store))
        .await
        .map_err(|e| ApiErr::internal("storing the connection", e))?
        .map_err(|e| ApiErr::bad_request(e.to_string()))?;
    state
        .blobs
        .publish_file(&file)
        .await
        .map_err(|e| ApiErr::internal("storing the connection", e))?;
    drop(guard);
    let rec = state
        .store
        .put_connection(&caller.0.id, &conn.name, conn.kind.as_str(), req.shared)
        .await?;
    // Deployments use it from their next request.
    state.serving.connections_changed();
    Ok((StatusCode::CREATED, Json(view(&rec, &conn, &caller.0.name))))
}

/// The caller's own connection of that name, else a shared one.
async fn find(state: &AppState, caller: &Caller, name: &str) -> ApiResult<ConnectionRecord> {
    let all = state.store.list_connections().await?;
    let own = all
        .iter()
        .find(|r| r.name == name && r.owner == caller.0.id);
    own.or_else(|| all.iter().find(|r| r.name == name && may_see(caller, r)))
        .cloned()
        .ok_or_else(|| {
            ApiErr::not_found(format!(
                "connection '{name}' does not exist (or is not shared with you); `flowrt connection list --workspace` shows yours"
            ))
        })
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ConnectionView>> {
    let rec = find(&state, &caller, &name).await?;
    load_view(&state, &rec)
        .await?
        .map(Json)
        .ok_or_else(|| ApiErr::not_found(format!("connection '{name}' does not exist")))
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let rec = find(&state, &caller, &name).await?;
    if rec.owner != caller.0.id {
        return Err(ApiErr::forbidden(format!(
            "connection '{name}' belongs to another user; only its owner deletes it"
        )));
    }
    let store = user_store(&state, &caller.0.id).await?;
    let file = store.path_of(&name);
    let n = name.clone();
    tokio::task::spawn_blocking(move || store.delete(&n))
        .await
        .map_err(|e| ApiErr::internal("deleting the connection", e))?
        .map_err(|e| ApiErr::internal("deleting the connection", e))?;
    state
        .blobs
        .delete_file(&file)
        .await
        .map_err(|e| ApiErr::internal("deleting the connection", e))?;
    state.store.delete_connection(&caller.0.id, &name).await?;
    state.serving.connections_changed();
    Ok(StatusCode::NO_CONTENT)
}
