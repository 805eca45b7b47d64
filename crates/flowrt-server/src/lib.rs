//! The flowrt control plane: an HTTP + JSON API under `/api/v1` over the SQLite store, with bearer
//! token authentication and roles, an OpenAPI document, `GET /healthz` and Prometheus `GET /metrics`.
//!
//! Handlers are thin: they authorize, call the store or the session manager, and map errors to
//! `{code, message}`. The server never runs user code: sessions are separate agent processes.
//! `router(state)` builds the whole app so tests can call it without a socket.

mod api;
mod auth;
mod error;
mod flows;
mod metrics;
mod openapi;
mod runs;
mod sessions;

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
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<ServerConfig>,
    pub metrics: Arc<metrics::Metrics>,
    pub sessions: Arc<sessions::Manager>,
    /// Set when the server begins to shut down: long-lived responses (event streams) end, so a
    /// restart does not wait for the runs their clients follow.
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl AppState {
    pub fn new(store: Store, config: ServerConfig) -> Self {
        let sessions =
            sessions::Manager::new(store.clone(), config.home.clone(), config.exe.clone());
        AppState {
            store,
            config: Arc::new(config),
            metrics: Arc::new(metrics::Metrics::default()),
            sessions,
            stopping: Arc::default(),
        }
    }
}

/// The whole HTTP app.
pub fn router(state: AppState) -> Router {
    api::routes(state.clone())
        .merge(sessions::routes())
        .merge(flows::routes())
        .merge(runs::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count,
        ))
        .layer(axum::middleware::from_fn(error::json_rejections))
        .with_state(state)
}

/// Open the store, make sure an owner exists (writing its token to `owner.token`, mode 0600, on the
/// first start), and serve until SIGINT/SIGTERM.
pub async fn serve(config: ServerConfig, addr: std::net::SocketAddr) -> Result<(), ServeError> {
    let store = Store::open(&config.home).await?;
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
        "flowrt server listening on http://{local} (state in {})",
        config.home.display()
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
    let state = AppState::new(store.clone(), config);
    // Agents outlive the server: take back the ones still running before serving.
    state.sessions.adopt().await;
    tokio::spawn(sessions::watch(state.sessions.clone(), idle_check));
    let stopping = state.stopping.clone();
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
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
