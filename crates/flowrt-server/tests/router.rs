//! The whole HTTP app, called in-process as axum's `examples/testing` does:
//! `router(state).oneshot(request)`, on a store in a temp home. No process is spawned and no
//! socket opened: the session manager's agent binary is a path that does not exist, so a request
//! that would need a session is refused (4xx) before one would start.
//!
//! - every documented operation × every role: 403 exactly when the role lacks the operation's
//!   `x-permission`, never a 5xx (on SQLite, and on PostgreSQL when `FLOWRT_TEST_POSTGRES` names
//!   a server);
//! - the OpenAPI document against the router: each documented operation is routed, and each
//!   documented path refuses (as the router does, 405) every method it does not document. That
//!   no path is served without being documented at all is held in the crate
//!   (`the_openapi_document_lists_exactly_the_served_operations`, over the route table);
//! - requests without a valid token: 401 `{code, message}`;
//! - junk to every documented operation (broken, deep and huge JSON, odd parameters): a JSON
//!   refusal, never a 5xx (on both stores, as the matrix).
//!
//! Each test's requests take well under a second; they print how long they took.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use flowrt_server::{blobs_for, router, session_manager, AppState, ServerConfig};
use flowrt_store::Store;
use serde_json::{json, Value};
use std::time::Instant;
use tower::ServiceExt;

/// The app on a fresh store, with the owner's token.
struct App {
    router: axum::Router,
    owner: String,
    _home: tempfile::TempDir,
}

/// One answer: status, headers and body (JSON, or the text as a JSON string, or null).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }

    /// The router's own refusal: no route has this path (404 with the router's message), or the
    /// path's route does not take this method (405). A handler's 404 for a missing resource
    /// says what is missing instead.
    fn unrouted(&self) -> bool {
        (self.status == StatusCode::NOT_FOUND
            && self.body["code"] == "NotFound"
            && self.message().starts_with("no such route"))
            || self.status == StatusCode::METHOD_NOT_ALLOWED
    }

    /// A refusal in the API's one shape: JSON `{code, message}`.
    fn is_api_error(&self) -> bool {
        let json = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        json && self.body["code"].as_str().is_some_and(|c| !c.is_empty())
            && !self.message().is_empty()
    }
}

impl App {
    /// A server's state as `serve` builds it, minus the background tasks: on SQLite under a temp
    /// home, or on the PostgreSQL database at `database`.
    async fn new(database: Option<String>) -> App {
        let home = tempfile::tempdir().unwrap();
        // No agent ever starts: a session would need this binary, which is not there.
        let mut config = ServerConfig::new(
            home.path().to_path_buf(),
            home.path().join("no-flowrt-binary-here"),
        );
        config.database = database;
        let store = Store::open_database(&config.home, config.database.as_deref())
            .await
            .unwrap();
        let owner = store
            .ensure_owner()
            .await
            .unwrap()
            .expect("a new store has no owner yet");
        let blobs = blobs_for(&store, &config);
        let sessions = session_manager(&store, &config, &blobs);
        let state = AppState::new(store, config, blobs, sessions);
        App {
            // The listener puts the peer's address on each request (`listen::serve`); the agents'
            // join reads it.
            router: router(state).layer(MockConnectInfo(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                40000,
            )))),
            owner: format!("Bearer {owner}"),
            _home: home,
        }
    }

    /// One request through the whole app (middleware included); `auth` is the Authorization
    /// header's value, if any.
    async fn call(&self, method: &str, path: &str, auth: Option<&str>, body: &str) -> Answer {
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let request = request.body(Body::from(body.to_string())).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024).await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            if bytes.is_empty() {
                Value::Null
            } else {
                Value::String(String::from_utf8_lossy(&bytes).into_owned())
            }
        });
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// The OpenAPI document, as the app serves it.
    async fn document(&self) -> Value {
        let doc = self
            .call("GET", "/api/v1/openapi.json", Some(&self.owner), "")
            .await;
        assert_eq!(doc.status, StatusCode::OK, "{}", doc.body);
        doc.body
    }
}

/// Every documented operation: (method in lower case, path template, `x-permission`).
fn operations(doc: &Value) -> Vec<(String, String, String)> {
    let mut all = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let permission = op["x-permission"].as_str().unwrap_or("");
            assert!(
                !permission.is_empty(),
                "{method} {path} names no permission"
            );
            all.push((method.clone(), path.clone(), permission.to_string()));
        }
    }
    assert!(all.len() > 60, "only {} operations documented", all.len());
    all
}

/// A path template with a value in each parameter: `{line}` is 0, `{x}` is `zz-x` (no such
/// resource, so handlers answer for a missing one).
fn concrete(path: &str) -> String {
    path.replace("{line}", "0")
        .replace('{', "zz-")
        .replace('}', "")
}

/// What each role holds, as documented in `role list` (and `Role::permissions`), written out here
/// so a change to a role shows up as a failing test.
fn permissions_of(roles: &[&str]) -> Vec<&'static str> {
    let table: &[(&str, &[&str])] = &[
        (
            "owner",
            &[
                "read",
                "sessions/write",
                "endpoints/write",
                "endpoints/score",
                "computes/write",
                "environments/write",
                "identities/write",
                "users/write",
                "roleAssignments/write",
                "audit/read",
            ],
        ),
        (
            "admin",
            &[
                "read",
                "sessions/write",
                "endpoints/write",
                "endpoints/score",
                "computes/write",
                "environments/write",
                "identities/write",
                "users/write",
                "audit/read",
            ],
        ),
        (
            "user",
            &[
                "read",
                "sessions/write",
                "endpoints/write",
                "endpoints/score",
                "computes/write",
                "environments/write",
            ],
        ),
        ("viewer", &["read"]),
        ("access-admin", &["read", "roleAssignments/write"]),
    ];
    table
        .iter()
        .filter(|(r, _)| roles.contains(r))
        .flat_map(|(_, p)| p.iter().copied())
        .collect()
}

/// The route table, walked: every documented operation × every role (owner, admin, user, viewer,
/// and a viewer who is also an access admin) gets 403 with "lacks the `…` permission" exactly
/// when the role lacks the operation's permission, and never a 5xx nor the router's 404/405.
async fn every_route_with_every_role(database: Option<String>) {
    let app = App::new(database).await;
    let started = Instant::now();
    let mut users: Vec<(&str, Vec<&str>, String)> =
        vec![("owner", vec!["owner"], app.owner.clone())];
    for (name, role) in [
        ("adm", "admin"),
        ("usr", "user"),
        ("vwr", "viewer"),
        ("acc", "viewer"),
    ] {
        let created = app
            .call(
                "POST",
                "/api/v1/users",
                Some(&app.owner),
                &json!({"name": name, "role": role}).to_string(),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        let token = created.body["token"].as_str().expect("a new user's token");
        users.push((name, vec![role], format!("Bearer {token}")));
    }
    let granted = app
        .call(
            "POST",
            "/api/v1/users/acc/roles",
            Some(&app.owner),
            r#"{"role": "access-admin"}"#,
        )
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
    users[4].1.push("access-admin");

    let doc = app.document().await;
    let mut walked = 0;
    for (method, path, permission) in operations(&doc) {
        if permission == "public" || path.ends_with("/events") {
            continue; // no token needed; event streams do not end by themselves
        }
        let concrete = concrete(&path);
        for (who, roles, auth) in &users {
            let answer = app
                .call(&method.to_uppercase(), &concrete, Some(auth), "{}")
                .await;
            let (status, body) = (answer.status, &answer.body);
            let lacks = answer.message().contains("lacks the `");
            let held = permissions_of(roles).contains(&permission.as_str());
            assert_eq!(
                lacks, !held,
                "{who} ({roles:?}) {method} {concrete} (needs {permission}): {status} {body}"
            );
            if !held {
                assert_eq!(status, StatusCode::FORBIDDEN, "{who} {method} {concrete}");
                assert!(answer.is_api_error(), "{who} {method} {concrete}: {body}");
            }
            assert!(
                !status.is_server_error(),
                "{who} {method} {concrete}: {status} {body}"
            );
            assert!(
                !answer.unrouted(),
                "{who} {method} {concrete}: the router has no such route: {status} {body}"
            );
            walked += 1;
        }
    }
    assert!(walked > 300, "only {walked} requests");
    eprintln!(
        "route × role matrix: {walked} requests in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_every_role_gets_the_status_its_permission_says() {
    every_route_with_every_role(None).await;
}

/// The same matrix on PostgreSQL, when `./scripts/test.sh` started one (`FLOWRT_TEST_POSTGRES`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_every_role_gets_the_status_its_permission_says_on_postgres() {
    let Some(admin) = flowrt_store::testing::postgres_url() else {
        eprintln!("skipped: FLOWRT_TEST_POSTGRES is not set (./scripts/test.sh sets it)");
        return;
    };
    let database = flowrt_store::testing::fresh_database(&admin).await.unwrap();
    every_route_with_every_role(Some(database)).await;
}

/// The document and the router agree: every documented operation reaches a route (a secured
/// one refuses a caller without a token, 401, rather than the router's 404 or 405), and every
/// method a documented path does not document is the router's 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_and_the_router_serve_the_same_operations() {
    let app = App::new(None).await;
    let started = Instant::now();
    let doc = app.document().await;
    let ops = operations(&doc);
    let mut checked = 0;
    for (method, path, permission) in &ops {
        let concrete = concrete(path);
        let answer = app
            .call(&method.to_uppercase(), &concrete, None, "{}")
            .await;
        let (status, body) = (answer.status, &answer.body);
        assert!(
            !answer.unrouted(),
            "documented but not routed: {method} {path}: {status} {body}"
        );
        assert!(
            !status.is_server_error(),
            "{method} {path}: {status} {body}"
        );
        if permission != "public" {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} without a token: {body}"
            );
            assert!(answer.is_api_error(), "{method} {path}: {body}");
        }
        checked += 1;
    }
    for path in doc["paths"].as_object().unwrap().keys() {
        let concrete = concrete(path);
        for method in ["get", "post", "put", "patch", "delete"] {
            if ops.iter().any(|(m, p, _)| m == method && p == path) {
                continue;
            }
            let answer = app
                .call(&method.to_uppercase(), &concrete, Some(&app.owner), "{}")
                .await;
            assert_eq!(
                answer.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "routed but not documented: {method} {path}: {}",
                answer.body
            );
            assert_eq!(answer.body["code"], "MethodNotAllowed", "{}", answer.body);
            checked += 1;
        }
    }
    // What the router says for a path it does not have, which `unrouted` tells apart from a
    // handler's own 404.
    let answer = app
        .call("GET", "/api/v1/no-such-route", Some(&app.owner), "")
        .await;
    assert!(
        answer.unrouted() && answer.is_api_error(),
        "{}",
        answer.body
    );
    let answer = app
        .call("GET", "/api/v1/runs/zz-name", Some(&app.owner), "")
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    assert!(!answer.unrouted(), "{}", answer.body);
    eprintln!(
        "OpenAPI document against the router: {checked} requests in {:?}",
        started.elapsed()
    );
}

/// No token, a token the store does not know, a header that is not `Bearer`, or the token of a
/// disabled user: 401 `{code, message}` with a `WWW-Authenticate` challenge, before the route's
/// permission or handler is looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_get_401_json() {
    let app = App::new(None).await;
    let created = app
        .call(
            "POST",
            "/api/v1/users",
            Some(&app.owner),
            r#"{"name": "dan", "role": "user"}"#,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let dan = format!("Bearer {}", created.body["token"].as_str().unwrap());
    assert_eq!(
        app.call("GET", "/api/v1/me", Some(&dan), "").await.status,
        StatusCode::OK
    );
    let disabled = app
        .call("POST", "/api/v1/users/dan/disable", Some(&app.owner), "")
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.body);

    for (method, path) in [
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/users"),
        ("POST", "/api/v1/sessions"),
        ("DELETE", "/api/v1/runs/zz-name"),
        ("GET", "/api/v1/sessions/events"),
    ] {
        for (what, auth, says) in [
            ("no token", None, "missing bearer token"),
            (
                "an unknown token",
                Some("Bearer not-a-token"),
                "invalid token",
            ),
            (
                "not a bearer token",
                Some("Basic b3duZXI6eA=="),
                "Bearer <token>",
            ),
            ("an empty token", Some("Bearer "), "Bearer <token>"),
            (
                "a disabled user's token",
                Some(dan.as_str()),
                "invalid token",
            ),
        ] {
            let answer = app.call(method, path, auth, "{}").await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {what}: {}",
                answer.body
            );
            assert!(answer.is_api_error(), "{method} {path}: {}", answer.body);
            assert_eq!(answer.body["code"], "Unauthorized", "{}", answer.body);
            assert!(
                answer.message().contains(says),
                "{method} {path} with {what}: {}",
                answer.body
            );
            assert_eq!(
                answer.headers.get(header::WWW_AUTHENTICATE).unwrap(),
                "Bearer realm=\"flowrt\""
            );
        }
    }
}

/// Junk sent to every documented operation — no body, wrong types, broken, deep and huge JSON,
/// odd path and query parameters — gets a JSON refusal and never a 5xx nor the router's 404/405;
/// the document describes request bodies with the API's generated schemas.
async fn every_operation_answers_junk(database: Option<String>) {
    let app = App::new(database).await;
    let started = Instant::now();
    let doc = app.document().await;
    assert_eq!(
        doc["paths"]["/api/v1/runs"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/CreateRun"
    );
    let create_run = &doc["components"]["schemas"]["CreateRun"];
    for field in [
        "session",
        "name",
        "data",
        "column_mapping",
        "resume_from",
        "concurrency",
    ] {
        assert!(
            create_run["properties"][field].is_object(),
            "CreateRun.{field}: {create_run:#}"
        );
    }
    assert_eq!(create_run["required"], json!(["session", "name"]));
    assert_eq!(
        doc["paths"]["/api/v1/runs/{name}/lines/{line}"]["get"]["parameters"][1],
        json!({"name": "line", "in": "path", "required": true, "schema": {"type": "integer"}})
    );

    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let long = format!("{{\"name\": \"{}\"}}", "x".repeat(200_000));
    let bodies: Vec<&str> = vec![
        "",
        "{}",
        "[]",
        "\"just a string\"",
        "{\"name\":",
        "null",
        "{\"name\": 1e309, \"size\": -1, \"flow\": [], \"inputs\": 7, \"session\": {}}",
        "{\"name\": \"../../etc\", \"flow\": \"/etc\", \"session\": \"s-000000000000\", \"data\": \"{\"}",
        &deep,
        &long,
    ];
    let params = ["zzz", "0", "..%2F..%2Fetc", "%00", &"a".repeat(300)];
    let mut checked = 0;
    for (method, path, _) in operations(&doc) {
        if path == "/api/v1/sessions/events" {
            continue; // a stream that never ends by itself
        }
        let method = method.to_uppercase();
        let plain = matches!(path.as_str(), "/metrics" | "/healthz")
            || doc["paths"][&path][method.to_lowercase()]["summary"]
                .as_str()
                .unwrap_or("")
                .starts_with("Server-sent");
        let sent: &[&str] = if method == "GET" || method == "DELETE" {
            &[""]
        } else {
            &bodies
        };
        for param in params {
            let concrete: String = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { param } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let uri = format!("{concrete}?offset=-1&limit=abc&session=%2E%2E");
            for body in sent {
                let answer = app.call(&method, &uri, Some(&app.owner), body).await;
                let what = format!(
                    "{method} {concrete} {}",
                    body.chars().take(60).collect::<String>()
                );
                let status = answer.status;
                assert!(
                    !status.is_server_error(),
                    "{what}: {status} {}",
                    answer.body
                );
                assert!(!answer.unrouted(), "{what}: {status} {}", answer.body);
                if status.is_client_error() {
                    assert!(answer.is_api_error(), "{what}: {status} {}", answer.body);
                } else if !plain && status != StatusCode::NO_CONTENT {
                    let json = answer
                        .headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("application/json"));
                    assert!(json, "{what}: {status} {:?}", answer.headers);
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 300, "{checked}");
    eprintln!(
        "junk to every operation: {checked} requests in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_junk_with_json_4xx() {
    every_operation_answers_junk(None).await;
}

/// The same junk on PostgreSQL, when `./scripts/test.sh` started one (`FLOWRT_TEST_POSTGRES`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_junk_with_json_4xx_on_postgres() {
    let Some(admin) = flowrt_store::testing::postgres_url() else {
        eprintln!("skipped: FLOWRT_TEST_POSTGRES is not set (./scripts/test.sh sets it)");
        return;
    };
    let database = flowrt_store::testing::fresh_database(&admin).await.unwrap();
    every_operation_answers_junk(Some(database)).await;
}
