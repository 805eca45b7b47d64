//! The `actions` an endpoint, a deployment and `/api/v1/me` list are honest, through the whole
//! app (`router(state).oneshot(request)`, no socket, no session started): for every caller
//! (the owner, an admin, the user who owns the endpoint, another user, a viewer) each listed
//! action's operation is authorized (answered with anything but 401/403) and each action left
//! out is refused with 403. The lists cannot drift from the rules the handlers enforce.
//! Beside them: a deployment counts an instance ready only once scoring routes to it.
//!
//! In the crate rather than `tests/router.rs`: scoring routes through the table the deployments'
//! supervisor builds, which a test builds here without starting anything.

use crate::{blobs_for, router, session_manager, AppState, ServerConfig};
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use flowrt_api::endpoints::{DeploymentAction, EndpointAction};
use flowrt_api::responses::WorkspaceAction;
use flowrt_store::{Deployment, Role, Store};
use indexmap::IndexMap;
use serde_json::{json, Value};
use tower::ServiceExt;

/// The app on a fresh store: its state, and a token per caller by name.
struct App {
    state: AppState,
    router: axum::Router,
    /// Each caller's name, user id and token.
    users: Vec<(&'static str, String, String)>,
    _home: tempfile::TempDir,
}

/// The callers: the owner, an admin, `ann` (a user, who owns the endpoints), `bob` (a user who
/// does not) and a viewer.
const CALLERS: [&str; 5] = ["owner", "adm", "ann", "bob", "vwr"];

impl App {
    /// `sealing`: whether the server lets users other than the owner start sessions (a kernel
    /// that seals them, or `--allow-unsealed-sessions-for-everyone`).
    async fn new(sealing: bool) -> App {
        let home = tempfile::tempdir().expect("a temp home");
        let mut config = ServerConfig::new(
            home.path().to_path_buf(),
            home.path().join("no-flowrt-binary-here"),
        );
        config.allow_unsealed = sealing;
        let store = Store::open_database(&config.home, None)
            .await
            .expect("the store");
        let owner = store.ensure_owner().await.expect("owner").expect("new");
        let owner_id = store.user_by_token(&owner).await.expect("store");
        let mut users = vec![("owner", owner_id.expect("the owner").id, owner)];
        for (name, role) in [
            ("adm", Role::Admin),
            ("ann", Role::User),
            ("bob", Role::User),
            ("vwr", Role::Viewer),
        ] {
            let (user, token) = store.create_user_as(name, role, false).await.expect("user");
            users.push((name, user.id, token));
        }
        let blobs = blobs_for(&store, &config);
        let mut sessions = session_manager(&store, &config, &blobs);
        // Whatever this machine's kernel can do: the setting alone decides.
        std::sync::Arc::get_mut(&mut sessions)
            .expect("not shared yet")
            .seal = false;
        let state = AppState::new(store, config, blobs, sessions);
        let router = router(state.clone()).layer(MockConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            40000,
        ))));
        App {
            state,
            router,
            users,
            _home: home,
        }
    }

    /// `who`'s user id and token.
    fn user(&self, who: &str) -> (&str, &str) {
        let (_, id, token) = self
            .users
            .iter()
            .find(|(name, _, _)| *name == who)
            .expect("a known caller");
        (id, token)
    }

    /// One request as `who`: the status and the JSON body (null when there is none).
    async fn call(&self, who: &str, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("a method"))
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.user(who).1),
            )
            .body(Body::from(body.to_string()))
            .expect("a request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("answered");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// An endpoint of ann's, `blue` (all its traffic) and `green` deployed behind it (in the
    /// store only: nothing starts), in the scoring table.
    async fn endpoint_of_ann(&self, name: &str) {
        let (status, body) = self
            .call(
                "ann",
                "POST",
                "/api/v1/endpoints",
                &json!({"name": name}).to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let ann = self.user("ann").0;
        for d in ["blue", "green"] {
            let deployment = Deployment {
                endpoint: name.into(),
                name: d.into(),
                owner: ann.into(),
                flow_ref: "qa@v1".into(),
                flow_dir: "/nowhere".into(),
                revision: 1,
                instances: 1,
                min_instances: 1,
                max_instances: 1,
                target_concurrency: 8,
                size: "small".into(),
                sample_rate: 1.0,
                redact_payloads: false,
                created: 0,
                updated: 0,
            };
            self.state
                .store
                .create_deployment(&deployment)
                .await
                .expect("deployed");
        }
        let traffic = IndexMap::from([("blue".to_string(), 100)]);
        self.state
            .store
            .update_endpoint(name, &traffic, 30)
            .await
            .expect("traffic");
        crate::endpoints::route_undeployed(&self.state).await;
    }
}

/// The actions a view lists, as the enum `A` reads them.
fn listed<A: serde::de::DeserializeOwned>(view: &Value) -> Vec<A> {
    serde_json::from_value(view["actions"].clone()).expect("an actions list")
}

/// Listed: the operation is authorized (any answer but 401 and 403, and no internal error; a
/// score of an endpoint with nothing serving is 503); left out: 403.
fn honest(
    who: &str,
    action: impl std::fmt::Debug,
    listed: bool,
    (status, body): (StatusCode, Value),
) {
    if listed {
        assert!(
            status != StatusCode::FORBIDDEN
                && status != StatusCode::UNAUTHORIZED
                && status != StatusCode::INTERNAL_SERVER_ERROR,
            "{who} is offered {action:?} but gets {status} {body}"
        );
    } else {
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{who} is not offered {action:?} but gets {status} {body}"
        );
    }
}

/// The request each endpoint action stands for, on endpoint `e` (changing it as little as an
/// authorized call may: a new key, a retention, a deployment of a flow that does not exist).
fn endpoint_request(action: EndpointAction, e: &str) -> (&'static str, String, String) {
    let at = format!("/api/v1/endpoints/{e}");
    match action {
        EndpointAction::Score => ("POST", format!("/endpoints/{e}/score"), "{}".into()),
        EndpointAction::Update => ("PATCH", at, r#"{"retention_days": 7}"#.into()),
        EndpointAction::RegenerateKeys => (
            "POST",
            format!("{at}/keys"),
            r#"{"key": "secondary"}"#.into(),
        ),
        EndpointAction::Deploy => (
            "POST",
            format!("{at}/deployments"),
            r#"{"name": "red", "flow": "no-such-flow@v1"}"#.into(),
        ),
        EndpointAction::Delete => ("DELETE", at, String::new()),
    }
}

fn deployment_request(action: DeploymentAction, e: &str) -> (&'static str, String, String) {
    let at = format!("/api/v1/endpoints/{e}/deployments/green");
    match action {
        DeploymentAction::Update => ("PATCH", at, r#"{"sample_rate": 0.5}"#.into()),
        DeploymentAction::Delete => ("DELETE", at, String::new()),
    }
}

/// Every caller × every endpoint and deployment action: the lists say what the rule says
/// (ann's endpoint: ann and admins manage it; ann and admins score it with their tokens), and
/// each listed call is authorized, each other one refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_and_deployment_actions_are_exactly_what_the_server_allows() {
    use DeploymentAction as D;
    use EndpointAction as E;
    let app = App::new(true).await;
    let all = [E::Score, E::Update, E::RegenerateKeys, E::Deploy];
    for who in CALLERS {
        let e = format!("ep-{who}");
        app.endpoint_of_ann(&e).await;
        let (status, view) = app
            .call(who, "GET", &format!("/api/v1/endpoints/{e}"), "")
            .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        let actions: Vec<E> = listed(&view);
        let green = view["deployments"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["name"] == "green"))
            .expect("green");
        let deployment_actions: Vec<D> = listed(green);
        let manages = matches!(who, "owner" | "adm" | "ann");
        let expected: &[E] = if manages {
            &[E::Score, E::Update, E::RegenerateKeys, E::Deploy, E::Delete]
        } else {
            &[]
        };
        assert_eq!(actions, expected, "{who}'s actions on ann's endpoint");
        let expected: &[D] = if manages {
            &[D::Update, D::Delete]
        } else {
            &[]
        };
        assert_eq!(
            deployment_actions, expected,
            "{who}'s actions on its deployment"
        );
        // The list of every endpoint says the same as the endpoint's own view.
        let (_, list) = app.call(who, "GET", "/api/v1/endpoints", "").await;
        let in_list = list
            .as_array()
            .and_then(|l| l.iter().find(|v| v["name"] == e.as_str()));
        assert_eq!(in_list.map(listed::<E>), Some(actions.clone()));

        for action in all {
            let (method, path, body) = endpoint_request(action, &e);
            let answer = app.call(who, method, &path, &body).await;
            honest(who, action, actions.contains(&action), answer);
        }
        for action in [D::Update, D::Delete] {
            let (method, path, body) = deployment_request(action, &e);
            let answer = app.call(who, method, &path, &body).await;
            honest(who, action, deployment_actions.contains(&action), answer);
        }
        // Last: deleting it.
        let (method, path, body) = endpoint_request(E::Delete, &e);
        let answer = app.call(who, method, &path, &body).await;
        honest(who, E::Delete, actions.contains(&E::Delete), answer);
    }
}

/// The request each of the caller's workspace actions stands for, as `who`.
fn workspace_request(action: WorkspaceAction, who: &str) -> (&'static str, String, String) {
    match action {
        WorkspaceAction::StartSession => (
            "POST",
            "/api/v1/sessions".into(),
            r#"{"flow": "no-such-flow"}"#.into(),
        ),
        WorkspaceAction::SubmitRun => (
            "POST",
            "/api/v1/runs".into(),
            json!({"name": format!("run-of-{who}"), "session": "s-000000000000"}).to_string(),
        ),
        WorkspaceAction::CreateEndpoint => (
            "POST",
            "/api/v1/endpoints".into(),
            json!({"name": format!("made-by-{who}")}).to_string(),
        ),
        // Behind the endpoint they just made (those who may not make one are refused first).
        WorkspaceAction::Deploy => (
            "POST",
            format!("/api/v1/endpoints/made-by-{who}/deployments"),
            r#"{"name": "blue", "flow": "no-such-flow@v1"}"#.into(),
        ),
        WorkspaceAction::ManageTeam => ("GET", "/api/v1/users".into(), String::new()),
    }
}

/// What `/me` lists for each caller, each listed action authorized and each other refused; a
/// server that cannot seal sessions lets only its owner start them, and `/me` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_own_actions_are_exactly_what_the_server_allows() {
    use WorkspaceAction::*;
    for sealing in [true, false] {
        let app = App::new(sealing).await;
        for who in CALLERS {
            let (status, me) = app.call(who, "GET", "/api/v1/me", "").await;
            assert_eq!(status, StatusCode::OK, "{me}");
            assert_eq!(me["name"], who);
            let actions: Vec<WorkspaceAction> = listed(&me);
            let start = who == "owner" || (sealing && who != "vwr");
            let expected: Vec<WorkspaceAction> = match who {
                "owner" | "adm" => {
                    vec![StartSession, SubmitRun, CreateEndpoint, Deploy, ManageTeam]
                }
                "ann" | "bob" => vec![StartSession, SubmitRun, CreateEndpoint, Deploy],
                _ => vec![],
            }
            .into_iter()
            .filter(|a| *a != StartSession || start)
            .collect();
            assert_eq!(
                actions, expected,
                "{who}'s own actions (sealing: {sealing})"
            );
            for action in [StartSession, SubmitRun, CreateEndpoint, Deploy, ManageTeam] {
                let (method, path, body) = workspace_request(action, who);
                let answer = app.call(who, method, &path, &body).await;
                honest(who, action, actions.contains(&action), answer);
            }
        }
    }
}

/// `deployment create` returns once the deployment says its instances are ready, and the next
/// request must find them: a session that runs but is not in the routing table yet (the
/// supervisor publishes it a round later) is not ready. The bench once got a 503 "no instance
/// ready yet" on the first request after `deployment create` returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_is_ready_only_once_requests_route_to_its_instances() {
    let app = App::new(true).await;
    app.endpoint_of_ann("qa").await;
    let store = &app.state.store;
    let session = store
        .insert_session(&flowrt_store::NewSession {
            owner: app.user("ann").0.into(),
            flow_dir: "/nowhere".into(),
            flow_ref: Some("qa@v1".into()),
            env_ref: "default".into(),
            env_key: None,
            base_version: "1".into(),
            size: Default::default(),
            idle_timeout_s: 0,
            identity: None,
            compute: None,
            shared: false,
        })
        .await
        .expect("a session");
    let claimed = store
        .claim_instance_slot(&flowrt_store::DeploymentInstance {
            endpoint: "qa".into(),
            deployment: "blue".into(),
            revision: 1,
            slot: 0,
            session_id: session.id.clone(),
            created: 0,
        })
        .await
        .expect("a slot");
    assert!(claimed);
    store
        .update_session_status(&session.id, flowrt_api::SessionStatus::Running, None, None)
        .await
        .expect("running");
    store
        .update_session_agent(&session.id, Some(1), Some("127.0.0.1:9"))
        .await
        .expect("an agent");
    let path = "/api/v1/endpoints/qa/deployments/blue";

    // Running in the store, not yet in the published table.
    let (status, view) = app.call("ann", "GET", path, "").await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["ready"], 0, "{view:#}");
    assert_eq!(view["status"], "Creating", "{view:#}");
    assert_eq!(view["replicas"][0]["status"], "Running", "{view:#}");
    assert_eq!(view["replicas"][0]["routed"], false, "{view:#}");

    // The supervisor's next round publishes it: ready, and scoring reaches it.
    crate::endpoints::route_stored(&app.state, crate::endpoints::FlowFacts::default()).await;
    let (_, view) = app.call("ann", "GET", path, "").await;
    assert_eq!(view["ready"], 1, "{view:#}");
    assert_eq!(view["status"], "Succeeded", "{view:#}");
    assert_eq!(view["replicas"][0]["routed"], true, "{view:#}");
}
