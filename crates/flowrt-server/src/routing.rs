//! The route table: every API route is added through [`ApiRoutes`] with the permission it needs.
//! The permission travels with the request (an extension the [`crate::Caller`] extractor reads),
//! so a handler cannot be reached by a caller whose roles lack it; and the table records each
//! (method, path, permission), so tests hold the router to the OpenAPI document and walk every
//! route with every role.

use crate::AppState;
use axum::handler::Handler;
use axum::routing::MethodRouter;
use axum::{Extension, Router};
use flowrt_api::workspace::Permission;

/// The permission the matched route needs, put on the request by its route.
#[derive(Clone, Copy, Debug)]
pub struct Required(pub Permission);

/// One served operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub permission: Permission,
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
    ) -> Self {
        // axum merges method routers given for the same path; each keeps its own layer.
        self.router = self
            .router
            .route(path, route.layer(Extension(Required(permission))));
        self.served.push(Operation {
            method,
            path,
            permission,
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
    ) -> Self {
        self.add(method, path, permission, route)
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        permission: Permission,
        h: H,
    ) -> Self {
        self.add("get", path, permission, axum::routing::get(h))
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        permission: Permission,
        h: H,
    ) -> Self {
        self.add("post", path, permission, axum::routing::post(h))
    }

    pub fn patch<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        permission: Permission,
        h: H,
    ) -> Self {
        self.add("patch", path, permission, axum::routing::patch(h))
    }

    pub fn delete<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        permission: Permission,
        h: H,
    ) -> Self {
        self.add("delete", path, permission, axum::routing::delete(h))
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
