//! Routes that know what they serve: every API route is added through [`ApiRoutes`], which
//! records its method and path, so a test can hold the router to the OpenAPI document (an
//! undocumented route, or a documented one nobody serves, fails it).

use crate::AppState;
use axum::handler::Handler;
use axum::routing::MethodRouter;
use axum::Router;

/// An axum router plus the (method, path) of every operation it serves.
#[derive(Default)]
pub struct ApiRoutes {
    router: Router<AppState>,
    // Read by the test that holds the router to the OpenAPI document.
    #[cfg_attr(not(test), allow(dead_code))]
    served: Vec<(&'static str, &'static str)>,
}

impl ApiRoutes {
    fn add(
        mut self,
        method: &'static str,
        path: &'static str,
        route: MethodRouter<AppState>,
    ) -> Self {
        // axum merges method routers given for the same path.
        self.router = self.router.route(path, route);
        self.served.push((method, path));
        self
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("get", path, axum::routing::get(h))
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("post", path, axum::routing::post(h))
    }

    pub fn patch<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("patch", path, axum::routing::patch(h))
    }

    pub fn delete<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("delete", path, axum::routing::delete(h))
    }

    pub fn merge(mut self, other: ApiRoutes) -> Self {
        self.router = self.router.merge(other.router);
        self.served.extend(other.served);
        self
    }

    #[cfg(test)]
    pub fn served(&self) -> &[(&'static str, &'static str)] {
        &self.served
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}
