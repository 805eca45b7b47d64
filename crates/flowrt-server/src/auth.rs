//! Authentication (bearer tokens looked up by hash in the store) and authorization (roles).

use crate::error::ApiErr;
use crate::routing::Required;
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use flowrt_store::{Role, User};

/// `user`, or `user, access-admin`: what a message says the caller holds.
fn roles_of(user: &User) -> String {
    std::iter::once(user.role)
        .chain(user.extra_roles.iter().copied())
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The authenticated caller. Extracting it rejects requests without a valid bearer token.
pub struct Caller(pub User);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiErr;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| ApiErr::unauthorized("missing bearer token: send 'Authorization: Bearer <token>' (the owner's token is in FLOWRT_HOME/owner.token)"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiErr::unauthorized("the Authorization header must be 'Bearer <token>'")
            })?;
        let Some(user) = state.store.user_by_token(token).await? else {
            return Err(ApiErr::unauthorized(
                "invalid token: it is unknown, revoked or expired, or its user is disabled",
            ));
        };
        // The route table names the permission each route needs; a caller whose roles lack it
        // never reaches the handler.
        if let Some(Required(p)) = parts.extensions.get::<Required>().copied() {
            if !user.has(p) {
                return Err(ApiErr::forbidden(format!(
                    "user '{}' ({}) lacks the `{}` permission this needs; an owner or access admin grants roles: `flowrt role assign {} ROLE`",
                    user.name,
                    roles_of(&user),
                    p.as_str(),
                    user.name
                )));
            }
        }
        Ok(Caller(user))
    }
}

impl Caller {
    pub fn is_owner(&self) -> bool {
        self.0.role == Role::Owner
    }

    pub fn is_admin(&self) -> bool {
        matches!(self.0.role, Role::Owner | Role::Admin)
    }

    /// Owners and admins only.
    pub fn require_admin(&self) -> Result<(), ApiErr> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiErr::forbidden(format!(
                "user '{}' ({:?}) may not do this: it needs the admin or owner role",
                self.0.name, self.0.role
            )))
        }
    }

    /// Anyone but viewers.
    pub fn require_writer(&self) -> Result<(), ApiErr> {
        if self.0.role == Role::Viewer {
            Err(ApiErr::forbidden(format!(
                "user '{}' is a viewer and may only read",
                self.0.name
            )))
        } else {
            Ok(())
        }
    }

    /// May the caller see or act on something owned by `owner` (a user id)?
    pub fn may_access(&self, owner: &str) -> bool {
        self.is_admin() || self.0.id == owner || self.0.role == Role::Viewer
    }

    /// Sessions are private. A compute instance's sessions (with their runs, logs and packages)
    /// are seen only by the user it is assigned to; a serverless session by its owner and the
    /// workspace's admins, who manage it, and by everyone when its owner shared it.
    pub fn may_see_session(&self, s: &flowrt_store::Session) -> bool {
        s.owner == self.0.id || (s.compute.is_none() && (self.is_admin() || s.shared))
    }

    /// May the caller change something owned by `owner`?
    pub fn may_modify(&self, owner: &str) -> bool {
        self.is_admin() || (self.0.id == owner && self.0.role != Role::Viewer)
    }
}
