//! The flowrt control plane: an HTTP + JSON API under `/api/v1` over the store (SQLite, or
//! PostgreSQL shared with other servers: `spread.rs` holds what they share), with bearer
//! token authentication and roles, an OpenAPI document, `GET /healthz` and Prometheus `GET /metrics`.
//!
//! Handlers are thin: they authorize, call the store or the session manager, and map errors to
//! `{code, message}`. The server never runs user code: sessions are separate agent processes.
//! `router(state)` builds the whole app so tests can call it without a socket. It also serves the
//! web UI's assets (`ui.rs`), which hold no data: every page reads the authenticated API.

mod api;
mod auth;
mod connections;
mod error;
mod flows;
pub mod listen;
mod metrics;
mod openapi;
mod quota;
mod routing;
mod runs;
mod sessions;
mod spread;
mod team;
mod ui;
mod ui_api;
mod workspace_runs;

pub use auth::Caller;
pub use error::{ApiErr, ApiResult};

use axum::Router;
use flowrt_store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Settings of one server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub home: PathBuf,
    /// The flowrt binary sessions' agents run (normally this executable).
    pub exe: PathBuf,
    /// How often idle sessions are looked for.
    pub idle_check: Duration,
    /// Interactive (single-line) tests fail after this; batch runs have no overall limit.
    pub interactive_timeout: Duration,
    /// Where the kernel cannot seal sessions: let users other than the owner start them anyway.
    pub allow_unsealed: bool,
    /// `postgres://…` to share state with other servers; `None`: SQLite under `home`.
    pub database: Option<String>,
    /// This server's name in the leases it holds (sessions it manages, chunks it runs). A server
    /// restarted under the same name takes its sessions back at once.
    pub server_id: String,
    /// How long a lease holds unrenewed: a dead server's work moves on after about this long.
    pub lease: Duration,
    /// `http://HEAD:8265`: sessions run as jobs on this Ray cluster, not on this machine.
    pub ray_address: Option<String>,
    /// The URL a Ray session's agent dials to join this server (default: the listening address).
    pub advertise_url: Option<String>,
    /// Control-plane ports of the Ray cluster sessions may not reach, besides those it reports.
    pub ray_control_ports: Vec<u16>,
    /// Header and body timeouts, and connection caps per client and in all.
    pub connection_limits: listen::ConnectionLimits,
    /// What each user's flow versions, data and runs may take on disk, in bytes.
    pub user_quota_bytes: u64,
    /// User ids for sessions (the server runs as root): each session's processes run as one of
    /// these, with its folder. `None`: as the server's user.
    pub session_uids: Option<std::ops::RangeInclusive<u32>>,
}

impl ServerConfig {
    /// Settings for a server with its state under `home`, its agents running `exe`, and
    /// defaults for the rest (SQLite, 100 s interactive timeout, 15 s leases).
    pub fn new(home: PathBuf, exe: PathBuf) -> Self {
        ServerConfig {
            home,
            exe,
            idle_check: Duration::from_secs(5),
            interactive_timeout: Duration::from_secs(100),
            allow_unsealed: false,
            database: None,
            server_id: "local".into(),
            lease: Duration::from_secs(15),
            ray_address: None,
            advertise_url: None,
            ray_control_ports: Vec::new(),
            connection_limits: listen::ConnectionLimits::default(),
            user_quota_bytes: 20 * 1024 * 1024 * 1024,
            session_uids: None,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<ServerConfig>,
    pub metrics: Arc<metrics::Metrics>,
    pub sessions: Arc<sessions::Manager>,
    /// The spread-run workers this server runs.
    pub workers: Arc<spread::Workers>,
    /// The runs this server follows in their sessions, keeping them in the workspace.
    pub followers: Arc<workspace_runs::Followers>,
    /// Flow uploads unpacked at once (the others wait, their bodies unread).
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// The name of each workspace run whose record just changed: event streams wake at once.
    pub run_changes: tokio::sync::broadcast::Sender<String>,
    /// Set when the server begins to shut down: long-lived responses (event streams) end, so a
    /// restart does not wait for the runs their clients follow.
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl AppState {
    pub fn new(store: Store, config: ServerConfig) -> Self {
        let sessions = sessions::Manager::new(
            store.clone(),
            config.home.clone(),
            config.exe.clone(),
            config.server_id.clone(),
            config.lease,
        );
        AppState {
            store,
            config: Arc::new(config),
            metrics: Arc::new(metrics::Metrics::default()),
            sessions,
            workers: Arc::default(),
            followers: Arc::default(),
            uploads: Arc::new(tokio::sync::Semaphore::new(4)),
            run_changes: tokio::sync::broadcast::channel(256).0,
            stopping: Arc::default(),
        }
    }
}

/// Every API operation, as served, with the permission it needs: the OpenAPI document is held
/// to this list by a test.
pub(crate) fn api_routes() -> routing::ApiRoutes {
    api::routes()
        .merge(sessions::routes())
        .merge(flows::routes())
        .merge(runs::routes())
        .merge(team::routes())
        .merge(connections::routes())
        .merge(ui_api::routes())
}

/// A name for a temporary file no other request of this server (nor another server sharing the
/// folder) picks at the same time: process, time and a counter, so two uploads in the same
/// millisecond do not write into one file.
pub(crate) fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        now_ms(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The whole HTTP app: the API, and the web UI's assets (which hold no data).
pub fn router(state: AppState) -> Router {
    api_routes()
        .into_router()
        .merge(ui::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            team::audit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count,
        ))
        .layer(axum::middleware::from_fn(error::object_bodies))
        .layer(axum::middleware::from_fn(error::json_rejections))
        .layer(axum::middleware::from_fn(error::no_sniff))
        .with_state(state)
}

/// Open the store, make sure an owner exists (writing its token to `owner.token`, mode 0600, on the
/// first start), and serve until SIGINT/SIGTERM.
pub async fn serve(config: ServerConfig, addr: std::net::SocketAddr) -> Result<(), ServeError> {
    let store = Store::open_database(&config.home, config.database.as_deref()).await?;
    if let Some(token) = store.ensure_owner().await? {
        let path = config.home.join("owner.token");
        write_private(&path, &token).map_err(|e| ServeError::Io(path.clone(), e))?;
        eprintln!(
            "created the owner user; its token is in {} (mode 0600)",
            path.display()
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Bind(addr, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(addr, e))?;
    eprintln!(
        "flowrt server listening on http://{local} (state in {}{})",
        config.home.display(),
        match &config.database {
            Some(url) => format!(
                ", database {} as server '{}'",
                flowrt_store::redact_url(url),
                config.server_id
            ),
            None => String::new(),
        }
    );
    let idle_check = config.idle_check;
    let sealing = flowrt_session::seal::probe();
    eprintln!("compute sessions: {}", sealing.describe());
    if sealing == flowrt_session::seal::SealStatus::None {
        if config.allow_unsealed {
            eprintln!("warning: --allow-unsealed-sessions-for-everyone: any user's session code can read this server's files, tokens and other sessions");
        } else {
            eprintln!("warning: only the owner may start sessions here; --allow-unsealed-sessions-for-everyone lets everyone, at that risk");
        }
    }
    let mut state = AppState::new(store.clone(), config.clone());
    if flowrt_session::isolate::is_root()
        && config.session_uids.is_none()
        && config.ray_address.is_none()
    {
        eprintln!("note: sessions run as this server's user (root), kept from its files by their seal alone; --session-uids FIRST-LAST gives each session a user of its own");
    }
    if let Some(uids) = &config.session_uids {
        let manager = Arc::get_mut(&mut state.sessions).ok_or(ServeError::Ray(
            "the session manager is shared before the server starts".into(),
        ))?;
        manager.session_uids = Some(uids.clone());
        eprintln!(
            "compute sessions: each runs as a user of its own, from {} to {}",
            uids.start(),
            uids.end()
        );
    }
    if let Some(address) = &config.ray_address {
        let ray = flowrt_session::ray::RayBackend::new(address);
        ray.check()
            .await
            .map_err(|e| ServeError::Ray(e.to_string()))?;
        let manager = Arc::get_mut(&mut state.sessions).ok_or(ServeError::Ray(
            "the session manager is shared before the server starts".into(),
        ))?;
        manager.ray = Some(Arc::new(ray));
        manager.ray_control_ports = config.ray_control_ports.clone();
        manager.join_url = config
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"));
        eprintln!(
            "compute sessions run as jobs on the Ray cluster at {address}; their agents join at {}",
            manager.join_url
        );
    }
    // Runs kept in sessions' folders by an older flowrt become workspace runs (once).
    workspace_runs::import_existing(&state).await;
    // Agents outlive the server: take back the ones still running before serving.
    state.sessions.adopt().await;
    tokio::spawn(sessions::watch(state.sessions.clone(), idle_check));
    tokio::spawn(spread::supervise(state.clone()));
    let stopping = state.stopping.clone();
    let app = router(state);
    listen::serve(listener, app, config.connection_limits, async move {
        shutdown_signal().await;
        stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    })
    .await
    .map_err(|e| ServeError::Bind(local, e))?;
    store.close().await;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] flowrt_store::StoreError),
    #[error("cannot listen on {0}: {1}")]
    Bind(std::net::SocketAddr, #[source] std::io::Error),
    #[error("cannot write {path}: {source}", path = .0.display(), source = .1)]
    Io(PathBuf, std::io::Error),
    #[error("{0}")]
    Ray(String),
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Resolves on SIGINT or SIGTERM: every long-running flowrt role stops cleanly on either.
pub use flowrt_session::shutdown_signal;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The document lists exactly what the router serves: a route added without documenting it,
    /// or an entry left behind when a route goes, fails here.
    #[test]
    fn the_openapi_document_lists_exactly_the_served_operations() {
        let served: BTreeSet<(String, String)> = super::api_routes()
            .served()
            .iter()
            .map(|op| (op.method.to_string(), op.path.to_string()))
            .collect();
        let documented: BTreeSet<(String, String)> = super::openapi::OPERATIONS
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "served but not documented: {undocumented:?}; documented but not served: {unserved:?}"
        );
    }

    /// Every operation names its success responses, every JSON request and response names a
    /// schema, and every schema reference points at one the document holds.
    #[test]
    fn every_operation_has_request_and_response_schemas_that_resolve() {
        let doc = super::openapi::document();
        let schemas = doc["components"]["schemas"]
            .as_object()
            .expect("components.schemas");
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        for r in &refs {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {r}"));
            assert!(schemas.contains_key(name), "{r} does not resolve");
        }
        for (method, path, _) in super::openapi::OPERATIONS {
            let op = &doc["paths"][path][method];
            let responses = op["responses"].as_object().expect("responses");
            let successes: Vec<&String> = responses.keys().filter(|c| c.starts_with('2')).collect();
            assert!(
                !successes.is_empty(),
                "{method} {path} documents no success"
            );
            for code in successes {
                let body = &responses[code.as_str()];
                if let Some(json) = body["content"].get("application/json") {
                    assert!(
                        json["schema"].get("$ref").is_some()
                            || json["schema"]["items"].get("$ref").is_some()
                            || json["schema"]["type"] == "object",
                        "{method} {path} {code}: no response schema"
                    );
                }
            }
            if let Some(json) = op["requestBody"]["content"].get("application/json") {
                if op["requestBody"]["required"] == true {
                    assert!(
                        json["schema"].get("$ref").is_some(),
                        "{method} {path}: no request schema"
                    );
                }
            }
        }
        assert!(refs.len() > 40, "only {} schema references", refs.len());
    }

    /// The route table itself: which permission each operation needs. A change to it shows
    /// up here, for review, before it reaches anyone's server.
    #[test]
    fn the_permission_each_route_needs() {
        let table: String = super::api_routes()
            .served()
            .iter()
            .map(|op| {
                format!(
                    "{:<7} {:<40} {}\n",
                    op.method.to_uppercase(),
                    op.path,
                    op.permission.as_str()
                )
            })
            .collect();
        insta::assert_snapshot!(table);
    }

    fn collect_refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, v) in o {
                    match (k.as_str(), v) {
                        ("$ref", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => collect_refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
