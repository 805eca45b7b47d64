//! The `/api/v1` routes that read and change the store directly: the caller, users,
//! environments and computes. Session routes live in `sessions.rs`.

use crate::auth::Caller;
use crate::error::{ApiErr, ApiResult};
use crate::openapi::{doc, json, list_of, Reply};
use crate::routing::{allowed, allows_all, offer, ApiRoutes};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use flowrt_api::requests::{
    CreateCompute, CreateIdentity, CreateUser, GrantIdentity, PublishEnvironment,
};
use flowrt_api::responses::{
    BaseEnvironment, CallerView, ComputeView, CreatedUser, CustomEnvironment, Environments, Health,
    IdentityView, PublishedEnvironment, UserView, WorkspaceAction,
};
use flowrt_api::workspace::Permission;
use flowrt_python::{find_base, latest_base, valid_env_name, BASE_ENVS};
use flowrt_store::{ComputeKind, ComputeStatus, Role};
use serde_json::Value;

/// The server's own routes, the caller and users, environments, identities and computes.
pub fn routes() -> ApiRoutes {
    server_routes()
        .merge(user_routes())
        .merge(environment_routes())
        .merge(identity_routes())
        .merge(compute_routes())
}

/// Liveness, metrics and the OpenAPI document.
fn server_routes() -> ApiRoutes {
    ApiRoutes::default()
        .get(
            "/healthz",
            Permission::Public,
            healthz,
            doc("Liveness (no token needed).").reply(200, json::<Health>()),
        )
        .get(
            "/metrics",
            Permission::AuditRead,
            metrics,
            doc("Prometheus metrics (admins).").reply(200, Reply::PrometheusText),
        )
        .get(
            "/api/v1/openapi.json",
            Permission::Read,
            openapi,
            doc("This document.").reply(200, Reply::Object),
        )
}

/// The caller, and the users an admin lists and creates.
fn user_routes() -> ApiRoutes {
    ApiRoutes::default()
        .get(
            "/api/v1/me",
            Permission::Read,
            me,
            doc("The calling user, and what they may start in the workspace (actions: start_session, submit_run, create_endpoint, deploy, manage_team).")
                .reply(200, json::<CallerView>()),
        )
        .get(
            "/api/v1/users",
            Permission::UsersWrite,
            list_users,
            doc("List users (admin).").reply(200, list_of::<UserView>()),
        )
        .post(
            "/api/v1/users",
            Permission::UsersWrite,
            create_user,
            doc("Create a user {name, role}; returns its token once (admin).")
                .body::<CreateUser>()
                .reply(201, json::<CreatedUser>()),
        )
}

/// The base and custom environments sessions run in.
fn environment_routes() -> ApiRoutes {
    ApiRoutes::default()
        .get(
            "/api/v1/environments",
            Permission::Read,
            list_envs,
            doc("Base environment versions and published custom environments.")
                .reply(200, json::<Environments>()),
        )
        .post(
            "/api/v1/environments",
            Permission::EnvironmentsWrite,
            create_env,
            doc("Publish a custom environment {name, requirements, from}.")
                .body::<PublishEnvironment>()
                .reply(201, json::<PublishedEnvironment>()),
        )
}

/// The identities sessions may act as, and who may use them.
fn identity_routes() -> ApiRoutes {
    ApiRoutes::default()
        .get(
            "/api/v1/identities",
            Permission::Read,
            list_identities,
            doc("List identities (feed tokens masked).")
                .reply(200, list_of::<IdentityView>()),
        )
        .post(
            "/api/v1/identities",
            Permission::IdentitiesWrite,
            create_identity,
            doc("Create an identity {name, feed_token, feed_hosts, entra} (admin); the token is stored encrypted and goes only to the named hosts; entra {tenant_id, client_id, client_secret} signs its sessions' keyless Azure calls in, its secret stored encrypted and handed only to their agents.")
                .body::<CreateIdentity>()
                .reply(201, json::<IdentityView>()),
        )
        .post(
            "/api/v1/identities/{name}/grants",
            Permission::IdentitiesWrite,
            grant_identity,
            doc("Let a user {user} start sessions acting as the identity (its owner or an admin).")
                .body::<GrantIdentity>()
                .reply(200, json::<IdentityView>()),
        )
}

/// Compute instances and their lifecycle.
fn compute_routes() -> ApiRoutes {
    ApiRoutes::default()
        .get(
            "/api/v1/computes",
            Permission::Read,
            list_computes,
            doc("List the compute instances you can see.").reply(200, list_of::<ComputeView>()),
        )
        .post(
            "/api/v1/computes",
            Permission::ComputesWrite,
            create_compute,
            doc("Create a compute instance {name, size, user}.")
                .body::<CreateCompute>()
                .reply(201, json::<ComputeView>()),
        )
        .get(
            "/api/v1/computes/{name}",
            Permission::Read,
            show_compute,
            doc("Show a compute instance.").reply(200, json::<ComputeView>()),
        )
        .delete(
            "/api/v1/computes/{name}",
            Permission::ComputesWrite,
            delete_compute,
            doc("Delete a compute instance.").reply(204, Reply::Empty),
        )
        .post(
            "/api/v1/computes/{name}/start",
            Permission::ComputesWrite,
            start_compute,
            doc("Start a compute instance.").reply(200, json::<ComputeView>()),
        )
        .post(
            "/api/v1/computes/{name}/stop",
            Permission::ComputesWrite,
            stop_compute,
            doc("Stop a compute instance.").reply(200, json::<ComputeView>()),
        )
}

/// Liveness for load balancers; the only route that needs no token, and it reveals nothing.
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Counts over every user's sessions and requests: the workspace's admins' to read (a scraper
/// uses an admin token).
async fn metrics(State(state): State<AppState>, caller: Caller) -> ApiResult<String> {
    caller.require_admin()?;
    let sessions = state.store.list_sessions(None).await?;
    let mut by_status: std::collections::BTreeMap<String, f64> = Default::default();
    for s in &sessions {
        *by_status.entry(s.status.to_string()).or_default() += 1.0;
    }
    let computes = state.store.list_computes().await?;
    let gauges = vec![
        crate::metrics::Gauge {
            name: "flowrt_sessions",
            help: "Compute sessions by status.",
            samples: by_status
                .into_iter()
                .map(|(k, v)| (format!("status=\"{k}\""), v))
                .collect(),
        },
        crate::metrics::Gauge {
            name: "flowrt_computes",
            help: "Computes known to the server.",
            samples: vec![(String::new(), computes.len() as f64)],
        },
    ];
    Ok(state.metrics.render(&gauges))
}

async fn openapi(_caller: Caller) -> Json<Value> {
    Json(crate::openapi::document())
}

async fn me(State(state): State<AppState>, caller: Caller) -> Json<CallerView> {
    Json(CallerView {
        user: UserView::from(&caller.0),
        actions: workspace_actions(&state, &caller),
    })
}

/// What the caller may start in the workspace: each action stands for the operations it takes,
/// listed when the route table gives the caller their permissions and the handlers' own checks
/// of the caller pass (the same functions the handlers call).
fn workspace_actions(state: &AppState, caller: &Caller) -> Vec<WorkspaceAction> {
    let writer = caller.require_writer().is_ok();
    let submit = allows_all(
        &caller.0,
        [
            offer((), "post", "/api/v1/data", writer),
            offer((), "post", "/api/v1/runs", true),
        ],
    );
    allowed(
        &caller.0,
        [
            offer(
                WorkspaceAction::StartSession,
                "post",
                "/api/v1/sessions",
                crate::sessions::may_start(state, caller).is_ok(),
            ),
            offer(WorkspaceAction::SubmitRun, "post", "/api/v1/runs", submit),
            offer(
                WorkspaceAction::CreateEndpoint,
                "post",
                "/api/v1/endpoints",
                true,
            ),
            offer(
                WorkspaceAction::Deploy,
                "post",
                "/api/v1/endpoints/{name}/deployments",
                crate::endpoints::may_deploy(caller),
            ),
            offer(
                WorkspaceAction::ManageTeam,
                "get",
                "/api/v1/users",
                caller.require_admin().is_ok(),
            ),
        ],
    )
}

async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<UserView>>> {
    caller.require_admin()?;
    let users = state.store.list_users().await?;
    Ok(Json(users.iter().map(UserView::from).collect()))
}

/// Creates a user and returns its token once; only its hash is kept.
/// User and compute names appear in URLs, tables and messages: a word of letters, digits, '_', '-'
/// and '.', at most 64 long, not starting with '.' or '-'.
fn check_name(what: &str, name: &str) -> ApiResult<()> {
    flowrt_api::names::check(what, name, flowrt_api::names::USER_NAME_MAX)
        .map_err(ApiErr::bad_request)
}

async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<CreatedUser>)> {
    caller.require_admin()?;
    check_name("user", &body.name)?;
    match body.role {
        Role::Owner => {
            return Err(ApiErr::bad_request(
                "there is one owner, created on the server's first start; use admin",
            ))
        }
        Role::AccessAdmin => {
            return Err(ApiErr::bad_request(
                "access-admin is held besides a role: create the user as user or viewer, then `flowrt role assign NAME access-admin`",
            ))
        }
        _ => {}
    }
    let (user, token) = state
        .store
        .create_user_as(&body.name, body.role, body.service)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            user: UserView::from(&user),
            token,
        }),
    ))
}

async fn list_envs(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Environments>> {
    let latest = latest_base().version;
    let base = BASE_ENVS
        .iter()
        .map(|b| BaseEnvironment {
            name: "default".into(),
            version: b.version.into(),
            reference: format!("default@{}", b.version),
            python: b.python.into(),
            latest: b.version == latest,
            packages: b.packages.iter().map(|p| p.to_string()).collect(),
        })
        .collect();
    let custom = state.store.list_environments().await?;
    Ok(Json(Environments {
        base,
        custom: custom.iter().map(CustomEnvironment::from).collect(),
    }))
}

async fn create_env(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<PublishEnvironment>,
) -> ApiResult<(StatusCode, Json<PublishedEnvironment>)> {
    caller.require_writer()?;
    if body.name == "default" || !valid_env_name(&body.name) {
        return Err(ApiErr::bad_request(format!(
            "invalid environment name '{}': use letters, digits, '_' and '-', and not 'default'",
            body.name
        )));
    }
    let base = match body.from.as_deref() {
        None | Some("default") => latest_base(),
        Some(r) => {
            let version = r.strip_prefix("default@").unwrap_or(r);
            find_base(version).ok_or_else(|| {
                ApiErr::bad_request(format!(
                    "unknown base environment '{r}'; `flowrt env list` shows them"
                ))
            })?
        }
    };
    // A name is its first publisher's: another user cannot publish a new version over it.
    if let Some(existing) = state.store.get_environment(&body.name, None).await? {
        let theirs = existing.owner.as_deref() != Some(caller.0.id.as_str());
        if theirs && !caller.is_admin() {
            return Err(ApiErr::forbidden(format!(
                "environment '{}' belongs to another user; publish yours under another name",
                body.name
            )));
        }
    }
    let version = state
        .store
        .publish_environment(
            &body.name,
            Some(&caller.0.id),
            base.version,
            &body.requirements,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(PublishedEnvironment {
            reference: format!("{}@v{version}", body.name),
            name: body.name,
            version,
            base_version: base.version.into(),
        }),
    ))
}

async fn list_computes(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ComputeView>>> {
    let all = state.store.list_computes().await?;
    Ok(Json(
        all.iter()
            .filter(|c| c.owner == caller.0.id || caller.is_admin())
            .map(ComputeView::from)
            .collect(),
    ))
}

async fn create_compute(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateCompute>,
) -> ApiResult<(StatusCode, Json<ComputeView>)> {
    caller.require_writer()?;
    check_name("compute", &body.name)?;
    let owner = match &body.user {
        Some(name) if name != &caller.0.name => {
            caller.require_admin()?;
            let users = state.store.list_users().await?;
            users
                .into_iter()
                .find(|u| &u.name == name)
                .ok_or_else(|| ApiErr::not_found(format!("user '{name}' does not exist")))?
                .id
        }
        _ => caller.0.id.clone(),
    };
    let c = state
        .store
        .create_compute(&body.name, ComputeKind::Instance, body.size, &owner)
        .await?;
    Ok((StatusCode::CREATED, Json(ComputeView::from(&c))))
}

async fn owned_compute(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> ApiResult<flowrt_store::Compute> {
    // Names are each user's own: the caller's compute of that name, else (for admins, who
    // manage everyone's) the one other user's. Others cannot even see that one exists.
    let missing = || {
        ApiErr::not_found(format!(
            "compute '{name}' does not exist; `flowrt compute list` shows yours"
        ))
    };
    if let Some(c) = state.store.get_compute(&caller.0.id, name).await? {
        return Ok(c);
    }
    if !caller.is_admin() {
        return Err(missing());
    }
    let mut named: Vec<_> = state
        .store
        .list_computes()
        .await?
        .into_iter()
        .filter(|c| c.name == name)
        .collect();
    match named.len() {
        0 => Err(missing()),
        1 => Ok(named.remove(0)),
        _ => Err(ApiErr::conflict(format!(
            "several users have a compute instance named '{name}'; ask its user to act on it"
        ))),
    }
}

async fn show_compute(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ComputeView>> {
    Ok(Json(ComputeView::from(
        &owned_compute(&state, &caller, &name).await?,
    )))
}

async fn set_compute(
    state: &AppState,
    caller: &Caller,
    name: &str,
    status: ComputeStatus,
) -> ApiResult<Json<ComputeView>> {
    let c = owned_compute(state, caller, name).await?;
    if !caller.may_modify(&c.owner) {
        return Err(ApiErr::forbidden(format!(
            "compute '{name}' is assigned to another user"
        )));
    }
    state
        .store
        .set_compute_status(&c.owner, name, status)
        .await?;
    let updated = state
        .store
        .get_compute(&c.owner, name)
        .await?
        .ok_or_else(|| ApiErr::not_found(format!("compute '{name}' does not exist")))?;
    Ok(Json(ComputeView::from(&updated)))
}

async fn start_compute(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ComputeView>> {
    set_compute(&state, &caller, &name, ComputeStatus::Running).await
}

async fn stop_compute(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ComputeView>> {
    set_compute(&state, &caller, &name, ComputeStatus::Stopped).await
}

async fn delete_compute(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let c = owned_compute(&state, &caller, &name).await?;
    if !caller.may_modify(&c.owner) {
        return Err(ApiErr::forbidden(format!(
            "compute '{name}' is assigned to another user"
        )));
    }
    state.store.delete_compute(&c.owner, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_identities(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<IdentityView>>> {
    let all = state.store.list_identities().await?;
    Ok(Json(
        all.iter()
            .filter(|i| caller.may_access(&i.owner))
            .map(IdentityView::from)
            .collect(),
    ))
}

/// A managed identity sessions may act as (admins only: it carries a secret).
async fn create_identity(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateIdentity>,
) -> ApiResult<(StatusCode, Json<IdentityView>)> {
    caller.require_admin()?;
    check_name("identity", &body.name)?;
    let mut hosts = Vec::new();
    for host in &body.feed_hosts {
        let h = host.trim().to_ascii_lowercase();
        let plain = !h.is_empty()
            && h.len() <= 253
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !plain {
            return Err(ApiErr::bad_request(format!(
                "feed host '{host}' is not a host name; give the feed's host alone, like pkgs.example.com"
            )));
        }
        hosts.push(h);
    }
    if body.feed_token.is_some() && hosts.is_empty() {
        return Err(ApiErr::bad_request(
            "an identity with a feed token needs the hosts the token may go to: add feed_hosts (`--feed-host HOST`)",
        ));
    }
    if let Some(problem) = body.entra.as_ref().and_then(|p| p.problem()) {
        return Err(ApiErr::bad_request(format!("entra: {problem}")));
    }
    let identity = state
        .store
        .create_identity(
            &body.name,
            &caller.0.id,
            body.feed_token.as_deref(),
            &hosts,
            body.entra.as_ref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(IdentityView::from(&identity))))
}

/// Let another user start sessions acting as an identity (its owner or an admin).
async fn grant_identity(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<GrantIdentity>,
) -> ApiResult<Json<IdentityView>> {
    let missing = || ApiErr::not_found(format!("identity '{name}' does not exist"));
    let identity = state
        .store
        .list_identities()
        .await?
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(missing)?;
    if !caller.may_access(&identity.owner) {
        return Err(missing());
    }
    if !caller.may_modify(&identity.owner) {
        return Err(ApiErr::forbidden(format!(
            "identity '{name}' belongs to another user; its owner grants it"
        )));
    }
    let user = state
        .store
        .list_users()
        .await?
        .into_iter()
        .find(|u| u.name == body.user)
        .ok_or_else(|| ApiErr::not_found(format!("user '{}' does not exist", body.user)))?;
    state.store.grant_identity(&name, &user.id).await?;
    let updated = state
        .store
        .list_identities()
        .await?
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(missing)?;
    Ok(Json(IdentityView::from(&updated)))
}
