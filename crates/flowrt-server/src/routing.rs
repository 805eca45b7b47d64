//! The route table: every API route is added through [`ApiRoutes`] with the permission it needs
//! and its documentation ([`Doc`]). The permission travels with the request (an extension the
//! [`crate::Caller`] extractor reads), so a handler cannot be reached by a caller whose roles
//! lack it; and the table records each (method, path, permission, documentation), from which
//! the OpenAPI document is built (`openapi::document`) and over which tests walk every route
//! with every role. One declaration per operation: nothing else lists the API routes.
//!
//! The `actions` a view lists (what the caller may do with it) are read from this table too
//! ([`allowed`]): an action names the operation it stands for, and is listed when the caller
//! holds that operation's permission here and the handler's own check (ownership, the server's
//! settings) passes, that check being the function the handler calls.

use crate::openapi::Doc;
use crate::AppState;
use axum::handler::Handler;
use axum::routing::MethodRouter;
use axum::{Extension, Router};
use flowrt_api::workspace::Permission;
use flowrt_store::User;
use std::sync::OnceLock;

/// The permission the matched route needs, put on the request by its route.
#[derive(Clone, Copy, Debug)]
pub struct Required(pub Permission);

/// One served operation.
#[derive(Clone, Debug)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub permission: Permission,
    /// What the OpenAPI document says about it.
    pub doc: Doc,
}

/// An axum router plus the operations it serves.
#[derive(Default)]
pub struct ApiRoutes {
    router: Router<AppState>,
    served: Vec<Operation>,
}

impl ApiRoutes {
    fn add(
        mut self,
        method: &'static str,
        path: &'static str,
        permission: Permission,
        route: MethodRouter<AppState>,
        doc: Doc,
    ) -> Self {
        // axum merges method routers given for the same path; each keeps its own layer.
        self.router = self
            .router
            .route(path, route.layer(Extension(Required(permission))));
        self.served.push(Operation {
            method,
            path,
            permission,
            doc,
        });
        self
    }

    /// A route whose method router carries layers of its own (a body limit).
    pub fn route(
        self,
        method: &'static str,
        path: &'static str,
        permission: Permission,
        route: MethodRouter<AppState>,
        doc: Doc,
    ) -> Self {
        self.add(method, path, permission, route, doc)
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        permission: Permission,
        h: H,
        doc: Doc,
    ) -> Self {
        self.add("get", path, permission, axum::routing::get(h), doc)
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        permission: Permission,
        h: H,
        doc: Doc,
    ) -> Self {
        self.add("post", path, permission, axum::routing::post(h), doc)
    }

    pub fn patch<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        permission: Permission,
        h: H,
        doc: Doc,
    ) -> Self {
        self.add("patch", path, permission, axum::routing::patch(h), doc)
    }

    pub fn delete<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        permission: Permission,
        h: H,
        doc: Doc,
    ) -> Self {
        self.add("delete", path, permission, axum::routing::delete(h), doc)
    }

    pub fn merge(mut self, other: ApiRoutes) -> Self {
        self.router = self.router.merge(other.router);
        self.served.extend(other.served);
        self
    }

    pub fn served(&self) -> &[Operation] {
        &self.served
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}

/// The permission each operation needs, as the router checks it: `(method, path)` as declared.
fn permissions() -> &'static [(&'static str, &'static str, Permission)] {
    static TABLE: OnceLock<Vec<(&'static str, &'static str, Permission)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        crate::api_routes()
            .served()
            .iter()
            .map(|op| (op.method, op.path, op.permission))
            .collect()
    })
}

/// The permission the route table gives the operation `method path` (a declared path, with its
/// `{parameters}`); `None` when no such operation is served.
pub fn permission_of(method: &str, path: &str) -> Option<Permission> {
    permissions()
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|(_, _, permission)| *permission)
}

/// One action a view may list: the operation (`method`, declared `path`) it stands for, and
/// whether the handler's own check of the caller passes.
pub struct Offer<A> {
    pub action: A,
    pub method: &'static str,
    pub path: &'static str,
    pub passes: bool,
}

/// Shorthand for an [`Offer`].
pub fn offer<A>(action: A, method: &'static str, path: &'static str, passes: bool) -> Offer<A> {
    Offer {
        action,
        method,
        path,
        passes,
    }
}

/// The actions `user` may take: those whose operation the route table lets them reach (the
/// check the router makes before any handler) and whose handler's own check passes.
pub fn allowed<A>(user: &User, offers: impl IntoIterator<Item = Offer<A>>) -> Vec<A> {
    offers
        .into_iter()
        .filter(|o| o.passes && permission_of(o.method, o.path).is_some_and(|p| user.has(p)))
        .map(|o| o.action)
        .collect()
}

/// Whether `user` may take every one of `offers` (an action made of several operations).
pub fn allows_all(user: &User, offers: impl IntoIterator<Item = Offer<()>>) -> bool {
    let offers: Vec<_> = offers.into_iter().collect();
    let wanted = offers.len();
    allowed(user, offers).len() == wanted
}
