//! The route table: every API route is added through [`ApiRoutes`] with the permission it needs
//! and its documentation ([`Doc`]). The permission travels with the request (an extension the
//! [`crate::Caller`] extractor reads), so a handler cannot be reached by a caller whose roles
//! lack it; and the table records each (method, path, permission, documentation), from which
//! the OpenAPI document is built (`openapi::document`) and over which tests walk every route
//! with every role. One declaration per operation: nothing else lists the API routes.

use crate::openapi::Doc;
use crate::AppState;
use axum::handler::Handler;
use axum::routing::MethodRouter;
use axum::{Extension, Router};
use flowrt_api::workspace::Permission;

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
