//! `flowrt server`: the control plane started from the command line. Its flags checked and
//! turned into a `flowrt_server::ServerConfig`; the server itself is `flowrt-server`.

use anyhow::{bail, Result};
use clap::Args;
use std::time::Duration;

#[derive(Args)]
pub struct ServerArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub addr: std::net::SocketAddr,
    /// Seconds an interactive test may take before it fails (batch runs have no limit).
    #[arg(long, default_value_t = 100.0)]
    pub interactive_timeout: f64,
    /// Seconds between checks for idle sessions.
    #[arg(long, default_value_t = 5.0)]
    pub idle_check_interval: f64,
    /// Let every user start sessions even where this kernel cannot seal them (no Landlock): their
    /// code could then read the server's files, tokens and other users' sessions. Without this
    /// flag only the owner may start sessions on such a machine.
    #[arg(long)]
    pub allow_unsealed_sessions_for_everyone: bool,
    /// Keep the control plane's state in PostgreSQL (postgres://USER:PASSWORD@HOST:PORT/DB)
    /// rather than SQLite under FLOWRT_HOME, so several servers share it. With --blobs database
    /// they share nothing else: each keeps its own FLOWRT_HOME.
    #[arg(long, env = "FLOWRT_DATABASE")]
    pub database: Option<String>,
    /// Where the workspace's files (flow versions, data, runs' records and logs, connections)
    /// are kept: `folder` (this FLOWRT_HOME; servers sharing a database then mount one home) or
    /// `database` (in the --database PostgreSQL, each server's FLOWRT_HOME a cache of it: servers
    /// on different machines share nothing but the database). A home switching to `database`
    /// moves its files there at start; every server of a database must say the same.
    #[arg(long, value_parser = ["folder", "database"], default_value = "folder")]
    pub blobs: String,
    /// The 32-byte key secrets (connections' keys, feed tokens, agents' tokens) are sealed with,
    /// instead of FLOWRT_HOME/secret.key (mode 0600). Servers sharing a database need the same
    /// key: a server whose key is not the one the database's secrets were sealed with is
    /// refused at start (they are compared by fingerprint).
    #[arg(long, env = "FLOWRT_SECRET_KEY_FILE", value_name = "PATH")]
    pub secret_key_file: Option<std::path::PathBuf>,
    /// This server's name among the servers sharing a database (default: HOSTNAME:PORT). One
    /// restarted under the same name takes its sessions back at once.
    #[arg(long)]
    pub server_id: Option<String>,
    /// Seconds a server's leases (its sessions, the chunks of spread runs it runs) hold without
    /// renewal: after about this long, another server takes a dead one's work over.
    #[arg(long, default_value_t = 15.0)]
    pub lease_seconds: f64,
    /// Where compute sessions run: `local` (agent processes on this machine) or `ray` (jobs on
    /// the Ray cluster at --ray-address, placed by Ray on a node with room for their size).
    #[arg(long, value_parser = ["local", "ray"], default_value = "local")]
    pub backend: String,
    /// The Ray cluster's dashboard (Jobs API), e.g. http://HEAD:8265, with --backend ray.
    #[arg(long, env = "FLOWRT_RAY_ADDRESS")]
    pub ray_address: Option<String>,
    /// The URL Ray sessions' agents dial to join this server (default: http://--addr). Nodes
    /// must reach it (over https, the agents verify it); they share no disk with the server.
    #[arg(long)]
    pub advertise_url: Option<String>,
    /// With --backend ray: more TCP ports of the cluster's control plane that sessions' code may
    /// not connect to, besides those Ray reports (dashboard, GCS, raylets, agents) and Ray
    /// Client's 10001; e.g. a Ray Client server started on another port.
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    pub ray_control_ports: Vec<u16>,
    /// Run each local session as a user of its own, taken from this range of user ids (e.g.
    /// 200000-299999; ids no account of this machine uses): its processes then hold none of the
    /// server's file permissions, even where the kernel cannot seal them. Needs a server running
    /// as root, a FLOWRT_HOME other users can pass through (its parent folders o+x) and a Python
    /// they can run (FLOWRT_PYTHON or python3 on PATH, not under /root).
    #[arg(long, value_name = "FIRST-LAST")]
    pub session_uids: Option<String>,
    /// Seconds a client has to send a request's headers, and the longest a kept-alive
    /// connection may idle between requests; a connection past it is closed.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub header_timeout: f64,
    /// Connections one client address may hold at once; more are closed as they arrive (other
    /// clients, agents and health checks keep their room).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_connections_per_client: usize,
    /// Connections the server holds at once, from every client.
    #[arg(long, default_value_t = 8192, value_name = "N")]
    pub max_connections: usize,
    /// What each user's flow versions, uploaded data and runs may take on this server's disk, in
    /// MiB; an upload or a run past it is refused (507) with what uses the space.
    #[arg(long, default_value_t = 20480, value_name = "MIB")]
    pub user_quota_mib: u64,
}

/// `flowrt server`: check the flags, keep secrets out of what the server starts, and serve.
pub fn run(args: ServerArgs) -> Result<u8> {
    // Sessions' code (the same user when the server is not root) cannot read this process's
    // environment or memory through /proc.
    if let Err(e) = flowrt_session::isolate::hide_from_same_user() {
        eprintln!("warning: cannot hide the server's memory from other processes: {e}");
    }
    // The database URL may hold a password. Read (clap has it), it leaves the environment, so
    // nothing this server starts (environment builds, their packages' build scripts) inherits
    // it. Still one thread here, so no other thread reads the environment meanwhile.
    std::env::remove_var("FLOWRT_DATABASE");
    if args
        .database
        .as_deref()
        .is_some_and(|url| flowrt_store::redact_url(url) != url)
        && std::env::args().any(|a| a.starts_with("--database"))
    {
        eprintln!("warning: --database carries a password on the command line, which every process of this machine can read in /proc; set FLOWRT_DATABASE instead");
    }
    let home = flowrt_store::flowrt_home();
    // Everything the server and its agents create (database, session folders, logs, tokens) is
    // the server user's alone: other local users must not read another user's session log.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    std::fs::create_dir_all(&home)?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs_err::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
    }
    let server_id = match (&args.server_id, &args.database) {
        (Some(id), _) => id.clone(),
        // On SQLite there is one server per home: a fixed name.
        (None, None) => "local".to_string(),
        (None, Some(_)) => format!(
            "{}:{}",
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "server".into()),
            args.addr.port()
        ),
    };
    let ray_address = match (args.backend.as_str(), &args.ray_address) {
        ("ray", Some(a)) => Some(a.clone()),
        ("ray", None) => bail!(
            "--backend ray needs --ray-address http://HEAD:8265 (the Ray dashboard's address)"
        ),
        (_, Some(_)) => bail!("--ray-address is for --backend ray"),
        _ => None,
    };
    let session_uids = match &args.session_uids {
        None => None,
        Some(_) if ray_address.is_some() => {
            bail!("--session-uids is for local sessions: a Ray session runs as its node's Ray user")
        }
        Some(text) => Some(session_uid_range(text, &home)?),
    };
    if ray_address.is_none() && !args.ray_control_ports.is_empty() {
        bail!("--ray-control-ports is for --backend ray: local sessions run on no cluster");
    }
    if !(args.lease_seconds.is_finite() && args.lease_seconds >= 1.0) {
        bail!("--lease-seconds must be at least 1");
    }
    if !(args.header_timeout.is_finite() && (0.1..=3600.0).contains(&args.header_timeout)) {
        bail!("--header-timeout must be between 0.1 and 3600 seconds");
    }
    if args.max_connections_per_client == 0
        || args.max_connections < args.max_connections_per_client
    {
        bail!("--max-connections-per-client must be at least 1, and --max-connections at least as many");
    }
    let defaults = flowrt_server::listen::ConnectionLimits::default();
    let connection_limits = flowrt_server::listen::ConnectionLimits {
        header_timeout: Duration::from_secs_f64(args.header_timeout),
        per_client: args.max_connections_per_client,
        total: args.max_connections,
        ..defaults
    };
    let config = flowrt_server::ServerConfig {
        idle_check: Duration::from_secs_f64(args.idle_check_interval.max(0.1)),
        interactive_timeout: Duration::from_secs_f64(args.interactive_timeout.max(0.1)),
        allow_unsealed: args.allow_unsealed_sessions_for_everyone,
        database: args.database.clone(),
        blobs: flowrt_store::BlobMode::parse(&args.blobs).unwrap_or(flowrt_store::BlobMode::Folder),
        secret_key_file: args.secret_key_file.clone(),
        server_id,
        lease: Duration::from_secs_f64(args.lease_seconds),
        ray_address,
        advertise_url: args.advertise_url.clone(),
        ray_control_ports: args.ray_control_ports.clone(),
        connection_limits,
        user_quota_bytes: args.user_quota_mib.saturating_mul(1024 * 1024),
        session_uids,
        ..flowrt_server::ServerConfig::new(home, std::env::current_exe()?)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(flowrt_server::serve(config, args.addr))?;
    Ok(0)
}

/// `--session-uids FIRST-LAST`, checked: a range of ordinary user ids, a server that may hand
/// them out (root), and a FLOWRT_HOME their sessions can reach their folders through.
fn session_uid_range(text: &str, home: &std::path::Path) -> Result<std::ops::RangeInclusive<u32>> {
    let parsed = text
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?)));
    let Some((first, last)) = parsed else {
        bail!("--session-uids {text}: give a range of user ids, FIRST-LAST (e.g. 200000-299999)");
    };
    if first < 1000 || first > last || last >= 0xFFFF_FFFE {
        bail!("--session-uids {text}: the range must start at 1000 or above (system accounts lie below), end at or after its start, and below 4294967294");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("--session-uids needs the server to run as root: only root can start a process as another user");
    }
    use std::os::unix::fs::PermissionsExt;
    for dir in home.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        if meta.permissions().mode() & 0o001 == 0 {
            bail!(
                "--session-uids: FLOWRT_HOME {} is inside {}, which other users cannot pass (mode {:o}): sessions running as users of their own could not reach their folders; choose a FLOWRT_HOME elsewhere or `chmod o+x {}`",
                home.display(),
                dir.display(),
                meta.permissions().mode() & 0o7777,
                dir.display()
            );
        }
    }
    Ok(first..=last)
}
