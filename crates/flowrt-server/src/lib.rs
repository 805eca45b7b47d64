//! The flowrt control plane: an HTTP + JSON API under `/api/v1` over the store (SQLite, or
//! PostgreSQL shared with other servers), with bearer
//! token authentication and roles, an OpenAPI document, `GET /healthz` and Prometheus `GET /metrics`.
//!
//! Handlers are thin: they authorize, call the store, the session manager or the workspace's
//! runs (`flowrt-workspace`: following runs in sessions, spreading them), and map errors to
//! `{code, message}`. The server never runs user code: sessions are separate agent processes.
//! `router(state)` builds the whole app so tests can call it without a socket. It also serves the
//! web UI's assets (`ui.rs`), which hold no data: every page reads the authenticated API.

#[cfg(test)]
mod action_tests;
mod api;
mod auth;
mod connections;
mod endpoints;
mod error;
mod flow_edit;
mod flows;
pub mod listen;
mod metrics;
mod openapi;
mod quota;
mod routing;
mod runs;
mod sessions;
mod team;
mod ui;
mod ui_api;

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
    /// Where the workspace's files are: in `home` only, or in the database (every server's
    /// `home` a cache of it), so servers share nothing but the database.
    pub blobs: flowrt_store::BlobMode,
    /// The key secrets are sealed with, when the operator gives one (else `home/secret.key`).
    pub secret_key_file: Option<PathBuf>,
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
            blobs: flowrt_store::BlobMode::Folder,
            secret_key_file: None,
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
    /// The workspace's files: flow snapshots, data, runs' records, connections.
    pub blobs: flowrt_store::Blobs,
    pub config: Arc<ServerConfig>,
    pub metrics: Arc<metrics::Metrics>,
    pub sessions: Arc<sessions::Manager>,
    /// The workspace's runs: followed in their sessions, spread over several.
    pub runs: Arc<flowrt_workspace::Workspace>,
    /// Flow uploads unpacked at once (the others wait, their bodies unread).
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// Set when the server begins to shut down: long-lived responses (event streams) end, so a
    /// restart does not wait for the runs their clients follow.
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Endpoints' routing table and request records (`endpoints`).
    pub serving: Arc<endpoints::Serving>,
}

impl AppState {
    /// The state of a server with its session manager set up (`session_manager`).
    pub fn new(
        store: Store,
        config: ServerConfig,
        blobs: flowrt_store::Blobs,
        sessions: Arc<sessions::Manager>,
    ) -> Self {
        let stopping = Arc::<std::sync::atomic::AtomicBool>::default();
        let runs = flowrt_workspace::Workspace::new(
            store.clone(),
            blobs.clone(),
            sessions.clone(),
            flowrt_workspace::Config {
                home: config.home.clone(),
                server_id: config.server_id.clone(),
                lease: config.lease,
            },
            stopping.clone(),
        );
        AppState {
            store,
            blobs,
            config: Arc::new(config),
            metrics: Arc::new(metrics::Metrics::default()),
            sessions,
            runs,
            uploads: Arc::new(tokio::sync::Semaphore::new(4)),
            stopping,
            serving: Arc::default(),
        }
    }
}

/// The workspace's files as `config` keeps them.
pub fn blobs_for(store: &Store, config: &ServerConfig) -> flowrt_store::Blobs {
    match config.blobs {
        flowrt_store::BlobMode::Folder => flowrt_store::Blobs::folder(&config.home),
        flowrt_store::BlobMode::Database => flowrt_store::Blobs::database(store, &config.home),
    }
}

/// A session manager for a server with `config` (not shared yet: the caller may still set it up).
pub fn session_manager(
    store: &Store,
    config: &ServerConfig,
    blobs: &flowrt_store::Blobs,
) -> Arc<sessions::Manager> {
    sessions::Manager::new(
        store.clone(),
        config.home.clone(),
        config.exe.clone(),
        config.server_id.clone(),
        config.lease,
        blobs.clone(),
    )
}

/// Every API operation, as served, with the permission it needs: the OpenAPI document is held
/// to this list by a test.
pub(crate) fn api_routes() -> routing::ApiRoutes {
    api::routes()
        .merge(sessions::routes())
        .merge(flows::routes())
        .merge(flow_edit::routes())
        .merge(runs::routes())
        .merge(team::routes())
        .merge(connections::routes())
        .merge(endpoints::routes())
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
/// Build (once per machine) and link the latest base environment, saying what it does.
fn prepare_base_environment(home: &std::path::Path) {
    let request = flowrt_python::EnvRequest {
        requirements: None,
        flowrt_home: home,
    };
    let said = |m: &str| eprintln!("base environment: {}", m.replace('\n', "\n  "));
    if let Err(e) = flowrt_python::ensure_env(request, &mut |m| said(m)) {
        said(&format!("warning: {e}"));
    }
}

pub async fn serve(config: ServerConfig, addr: std::net::SocketAddr) -> Result<(), ServeError> {
    if let Some(key) = &config.secret_key_file {
        flowrt_store::use_secret_key_file(key)?;
    }
    let store = Store::open_database(&config.home, config.database.as_deref()).await?;
    agree_with_other_servers(&store, &config).await?;
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
    let blobs = blobs_for(&store, &config);
    let mut manager = session_manager(&store, &config, &blobs);
    if flowrt_session::isolate::is_root()
        && config.session_uids.is_none()
        && config.ray_address.is_none()
    {
        eprintln!("note: sessions run as this server's user (root), kept from its files by their seal alone; --session-uids FIRST-LAST gives each session a user of its own");
    }
    if let Some(uids) = &config.session_uids {
        let manager = Arc::get_mut(&mut manager).ok_or(ServeError::Ray(
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
        let manager = Arc::get_mut(&mut manager).ok_or(ServeError::Ray(
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
    let state = AppState::new(store.clone(), config.clone(), blobs, manager);
    // Runs kept in sessions' folders by an older flowrt become workspace runs (once).
    flowrt_workspace::runs::import_existing(&state.runs).await;
    // Agents outlive the server: take back the ones still running before serving.
    state.sessions.adopt().await;
    tokio::spawn(sessions::watch(state.sessions.clone(), idle_check));
    tokio::spawn(flowrt_workspace::spread::supervise(state.runs.clone()));
    tokio::spawn(endpoints::supervise(state.clone()));
    if config.ray_address.is_none() {
        // The latest base environment's packages, ready before the first session asks (a Ray
        // node builds its own).
        let home = config.home.clone();
        tokio::task::spawn_blocking(move || prepare_base_environment(&home));
    }
    let stopping = state.stopping.clone();
    let runs = state.runs.clone();
    let app = router(state);
    listen::serve(listener, app, config.connection_limits, async move {
        shutdown_signal().await;
        stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    })
    .await
    .map_err(|e| ServeError::Bind(local, e))?;
    // The spans still queued leave before the server does (a few seconds at most).
    if let Some(exporters) = runs.exporters.clone() {
        let _ = tokio::task::spawn_blocking(move || exporters.finish()).await;
    }
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
    /// This server's settings disagree with those of the servers already on its database.
    #[error("{0}")]
    Disagrees(String),
}

/// The name of `home` among the homes of servers sharing a database (`home/.home-id`, made on
/// first use): servers started on one shared home have the same.
fn home_id(home: &std::path::Path) -> Result<String, ServeError> {
    let path = home.join(".home-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return Ok(id.trim().to_string());
    }
    let id = unique_name("home");
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, id.as_bytes()));
    match created {
        Ok(()) => Ok(id),
        // Another server on this home made it first: theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|e| ServeError::Io(path, e)),
        Err(e) => Err(ServeError::Io(path, e)),
    }
}

/// Check, before serving, that this server keeps the workspace's files where the servers already
/// on its database do, and seals secrets with their key; a home switching to `--blobs database`
/// moves its files into the database first.
async fn agree_with_other_servers(store: &Store, config: &ServerConfig) -> Result<(), ServeError> {
    use flowrt_store::BlobMode;
    if config.blobs == BlobMode::Database && config.database.is_none() {
        return Err(ServeError::Disagrees(
            "--blobs database shares the workspace's files through a PostgreSQL database: give it with --database postgres://…; on SQLite the files stay in FLOWRT_HOME".into(),
        ));
    }
    let fingerprint = store.secret_key_fingerprint()?;
    let agreed = store.agree_on("secret_key", &fingerprint).await?;
    if agreed != fingerprint {
        return Err(ServeError::Disagrees(format!(
            "this server's secret key (fingerprint {fingerprint}, {}) is not the key the database's secrets are sealed with (fingerprint {agreed}): give every server the same key with --secret-key-file PATH (a copy of the first server's FLOWRT_HOME/secret.key, mode 0600)",
            match &config.secret_key_file {
                Some(p) => p.display().to_string(),
                None => config.home.join(flowrt_store::SECRET_KEY_FILE).display().to_string(),
            }
        )));
    }
    let here = format!("folder:{}", home_id(&config.home)?);
    let wanted = match config.blobs {
        BlobMode::Folder => here.clone(),
        BlobMode::Database => "database".to_string(),
    };
    let agreed = store.agree_on("blobs", &wanted).await?;
    if agreed == wanted {
        return Ok(());
    }
    match (config.blobs, agreed.as_str()) {
        (BlobMode::Folder, "database") => Err(ServeError::Disagrees(
            "the servers on this database keep the workspace's files in it: start this server with --blobs database too".into(),
        )),
        (BlobMode::Database, stored) if stored == here => {
            // This home kept the files so far: they move into the database, then every server
            // reads them there.
            let blobs = flowrt_store::Blobs::database(store, &config.home);
            let moved = blobs
                .publish_missing(&[
                    config.home.join("snapshots"),
                    config.home.join("data"),
                    config.home.join("workspace"),
                ])
                .await?;
            store.replace_setting("blobs", &here, "database").await?;
            eprintln!("moved {moved} files of this home into the database (--blobs database)");
            Ok(())
        }
        _ => Err(ServeError::Disagrees(format!(
            "the workspace's files of this database are in another server's FLOWRT_HOME ({}): start this server on that home, or start that server once with --blobs database to move them into the database, then every server with --blobs database",
            agreed.trim_start_matches("folder:")
        ))),
    }
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

    /// The document lists exactly what the router serves. Both come from the route table, so
    /// this holds the document's building to it: no operation lost, none made up, none declared
    /// twice.
    #[test]
    fn the_openapi_document_lists_exactly_the_served_operations() {
        let routes = super::api_routes();
        let served: BTreeSet<(String, String)> = routes
            .served()
            .iter()
            .map(|op| (op.method.to_string(), op.path.to_string()))
            .collect();
        assert_eq!(
            served.len(),
            routes.served().len(),
            "an operation is declared twice"
        );
        let doc = super::openapi::document();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .expect("operations")
                    .keys()
                    .map(|method| (method.clone(), path.clone()))
            })
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
        for served in super::api_routes().served() {
            let (method, path) = (served.method, served.path);
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
