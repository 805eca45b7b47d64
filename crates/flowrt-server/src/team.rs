//! Who may do what: API tokens (several per user, revocable, expiring), disabling users, role
//! assignments, and the audit log of every state-changing request.

use crate::auth::Caller;
use crate::error::{ApiErr, ApiResult};
use crate::openapi::{doc, json, list_of, Reply};
use crate::routing::ApiRoutes;
use crate::AppState;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use flowrt_api::requests::{AssignRole, CreateToken};
use flowrt_api::responses::{AuditView, CreatedToken, TokenView, UserView};
use flowrt_api::workspace::{Permission, Role};
use flowrt_store::{TokenRecord, User};
use serde::Deserialize;

pub fn routes() -> ApiRoutes {
    ApiRoutes::default()
        .get(
            "/api/v1/tokens",
            Permission::Read,
            list_tokens,
            doc("Your API tokens (with users/write, everyone's); never the tokens themselves.")
                .reply(200, list_of::<TokenView>()),
        )
        .post(
            "/api/v1/tokens",
            Permission::Read,
            create_token,
            doc("Create an API token {for, expires_in_s}; it is shown once, only its hash is kept.")
                .body::<CreateToken>()
                .reply(201, json::<CreatedToken>()),
        )
        .delete(
            "/api/v1/tokens/{id}",
            Permission::Read,
            revoke_token,
            doc("Revoke a token: its next request gets 401.")
                .reply(204, Reply::Empty),
        )
        .post(
            "/api/v1/users/{name}/disable",
            Permission::UsersWrite,
            disable_user,
            doc("Disable a user: its tokens get 401 (users/write).")
                .reply(200, json::<UserView>()),
        )
        .post(
            "/api/v1/users/{name}/enable",
            Permission::UsersWrite,
            enable_user,
            doc("Enable a disabled user again (users/write).")
                .reply(200, json::<UserView>()),
        )
        .post(
            "/api/v1/users/{name}/roles",
            Permission::RoleAssignmentsWrite,
            assign_role,
            doc("Assign a role {role}: admin, user or viewer replace the user's role, access-admin is held besides it (roleAssignments/write).")
                .body::<AssignRole>()
                .reply(200, json::<UserView>()),
        )
        .delete(
            "/api/v1/users/{name}/roles/{role}",
            Permission::RoleAssignmentsWrite,
            remove_role,
            doc("Remove a role (the user's own role falls back to viewer).")
                .reply(200, json::<UserView>()),
        )
        .get(
            "/api/v1/audit",
            Permission::AuditRead,
            list_audit,
            doc("The audit log, newest first (?before=SEQ, limit): every state-changing request, who, when and its status (audit/read).")
                .query::<i64>("before")
                .query::<i64>("limit")
                .reply(200, list_of::<AuditView>()),
        )
}

fn token_view(t: &TokenRecord) -> TokenView {
    TokenView {
        id: t.id.clone(),
        user: t.user.clone(),
        created: t.created,
        expires: t.expires,
        revoked: t.revoked,
    }
}

async fn user_named(state: &AppState, name: &str) -> ApiResult<User> {
    state
        .store
        .list_users()
        .await?
        .into_iter()
        .find(|u| u.name == name)
        .ok_or_else(|| {
            ApiErr::not_found(format!(
                "user '{name}' does not exist; `flowrt user list` shows them"
            ))
        })
}

/// Your tokens; with `users/write`, everyone's.
async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<TokenView>>> {
    let whose = (!caller.0.has(Permission::UsersWrite)).then_some(caller.0.id.as_str());
    let all = state.store.list_tokens(whose).await?;
    Ok(Json(all.iter().map(token_view).collect()))
}

/// The longest a token may live: a year.
const MAX_TOKEN_LIFETIME_S: u64 = 366 * 24 * 3600;

async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let user = match &req.for_user {
        Some(name) if name != &caller.0.name => {
            if !caller.0.has(Permission::UsersWrite) {
                return Err(ApiErr::forbidden(format!(
                    "a token for '{name}' needs the `users/write` permission; you may create tokens for yourself"
                )));
            }
            user_named(&state, name).await?
        }
        _ => caller.0.clone(),
    };
    let expires = match req.expires_in_s {
        None => None,
        Some(0) => {
            return Err(ApiErr::bad_request(
                "expires_in_s must be at least 1 (or left out: the token does not expire)",
            ))
        }
        Some(s) if s > MAX_TOKEN_LIFETIME_S => {
            return Err(ApiErr::bad_request(format!(
                "expires_in_s is at most {MAX_TOKEN_LIFETIME_S} (a year); leave it out for a token that does not expire"
            )))
        }
        Some(s) => Some(crate::now_ms() + i64::try_from(s).unwrap_or(i64::MAX / 2) * 1000),
    };
    let (record, token) = state.store.create_token(&user.id, expires).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            record: token_view(&record),
            token,
        }),
    ))
}

/// Revoke one of your tokens (with `users/write`, anyone's). Someone else's answers like one
/// that does not exist.
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let missing = || {
        ApiErr::not_found(format!(
            "token '{id}' does not exist; `flowrt token list` shows yours"
        ))
    };
    let token = state.store.get_token(&id).await?.ok_or_else(missing)?;
    if token.user_id != caller.0.id && !caller.0.has(Permission::UsersWrite) {
        return Err(missing());
    }
    if !state.store.revoke_token(&id).await? {
        return Err(ApiErr::conflict(format!("token '{id}' is already revoked")));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn set_disabled(state: &AppState, name: &str, disabled: bool) -> ApiResult<Json<UserView>> {
    let user = user_named(state, name).await?;
    if user.role == Role::Owner {
        return Err(ApiErr::bad_request(
            "the owner cannot be disabled; it is how the server is recovered",
        ));
    }
    state.store.set_user_disabled(&user.id, disabled).await?;
    Ok(Json(UserView::from(&user_named(state, name).await?)))
}

async fn disable_user(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<UserView>> {
    set_disabled(&state, &name, true).await
}

async fn enable_user(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<UserView>> {
    set_disabled(&state, &name, false).await
}

/// `admin`, `user` and `viewer` replace the user's role; `access-admin` is held besides it.
/// Nobody is made owner, and the owner keeps its role.
async fn assign_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<AssignRole>,
) -> ApiResult<Json<UserView>> {
    let user = user_named(&state, &name).await?;
    if user.role == Role::Owner {
        return Err(ApiErr::bad_request("the owner's role does not change"));
    }
    match req.role {
        Role::Owner => {
            return Err(ApiErr::bad_request(
                "there is one owner, created on the server's first start; assign admin",
            ))
        }
        // Making an admin hands over user management: only an owner or admin may.
        Role::Admin if !caller.0.has(Permission::UsersWrite) => {
            return Err(ApiErr::forbidden(
                "only an owner or admin may make an admin; an access admin assigns user, viewer and access-admin",
            ))
        }
        Role::AccessAdmin => state.store.add_role(&user.id, Role::AccessAdmin).await?,
        role => {
            state.store.set_user_role(&user.id, role).await?;
        }
    }
    Ok(Json(UserView::from(&user_named(&state, &name).await?)))
}

async fn remove_role(
    State(state): State<AppState>,
    _caller: Caller,
    Path((name, role)): Path<(String, String)>,
) -> ApiResult<Json<UserView>> {
    let user = user_named(&state, &name).await?;
    let role = Role::parse(&role).ok_or_else(|| {
        ApiErr::bad_request(format!(
            "unknown role '{role}'; roles are owner, admin, user, viewer and access-admin"
        ))
    })?;
    if user.role == Role::Owner {
        return Err(ApiErr::bad_request("the owner's role does not change"));
    }
    if role == user.role {
        // Taking away a user's own role leaves the least one.
        state.store.set_user_role(&user.id, Role::Viewer).await?;
    } else if !state.store.remove_role(&user.id, role).await? {
        return Err(ApiErr::not_found(format!(
            "user '{name}' does not hold the role {}",
            role.as_str()
        )));
    }
    Ok(Json(UserView::from(&user_named(&state, &name).await?)))
}

#[derive(Deserialize)]
struct AuditQuery {
    /// Entries before this sequence number (for the next page).
    #[serde(default)]
    before: Option<i64>,
    #[serde(default = "default_audit_limit")]
    limit: u32,
}

fn default_audit_limit() -> u32 {
    100
}

async fn list_audit(
    State(state): State<AppState>,
    _caller: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<AuditView>>> {
    let entries = state
        .store
        .list_audit(q.before, q.limit.clamp(1, 1000))
        .await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| AuditView {
                seq: e.seq,
                at: e.at,
                user: e.user,
                method: e.method,
                path: e.path,
                status: e.status,
            })
            .collect(),
    ))
}

/// Record every state-changing request (who, what, when, how it ended) once it is answered.
/// The caller is looked up again from the token: a request with no valid token is recorded
/// without one.
pub async fn audit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let changes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !changes || !request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let response = next.run(request).await;
    let user = match token {
        Some(t) => state.store.user_by_token(&t).await.ok().flatten(),
        None => None,
    };
    if let Err(e) = state
        .store
        .record_audit(user.as_ref(), &method, &path, response.status().as_u16())
        .await
    {
        tracing::warn!("audit log: {e}");
    }
    response
}
