//! `flowrt server`, `flowrt session ...` and `flowrt compute ...`: the control plane and its
//! clients. Sessions exist only on a server; these commands talk to it over its API.

use crate::remote::Remote;
use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

#[derive(Args)]
pub struct ServerOpt {
    /// The server's URL (default: FLOWRT_SERVER, else http://127.0.0.1:7878).
    #[arg(long, global = true)]
    pub server: Option<String>,
}

#[derive(Subcommand)]
pub enum SessionCommand {
    /// Start a compute session for a flow; prints its id as the last line.
    ///
    /// Example: flowrt session start --flow ./my_flow --size medium --idle-timeout 30m
    Start {
        /// The flow: a folder (pushed to the workspace first, under its folder's name; nothing is
        /// sent when unchanged) or a workspace flow, NAME or NAME@vN. Its requirements.txt
        /// customizes the environment.
        #[arg(long)]
        flow: PathBuf,
        /// small, medium or large (resource limits: see README).
        #[arg(long, default_value = "small")]
        size: String,
        /// Stop after this long without runs: 30m, 2h, 90s, 0 = never (default 60m).
        #[arg(long)]
        idle_timeout: Option<String>,
        /// Act as this identity (its feed token unlocks {private} package indexes).
        #[arg(long)]
        identity: Option<String>,
        /// default, default@VERSION or NAME@vN (default: the flow's environment.image, else default).
        #[arg(long)]
        env: Option<String>,
        /// Run on this compute instance (yours, running) instead of serverless compute.
        #[arg(long)]
        compute: Option<String>,
        /// Share this (serverless) session with the workspace: every data scientist may see it
        /// and run flows on it, e.g. a pipeline's service principal; only you and admins change it.
        #[arg(long, conflicts_with = "compute")]
        shared: bool,
        /// Return at once instead of waiting for Running.
        #[arg(long)]
        no_wait: bool,
    },
    /// List your sessions.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show a session.
    Show {
        /// The session's id (`flowrt session list` shows them).
        id: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Change a session's size or idle timeout.
    Edit {
        /// The session's id.
        id: String,
        /// small, medium or large; takes effect at the next `session reset`.
        #[arg(long)]
        size: Option<String>,
        /// Stop after this long without runs: 30m, 2h, 90s, 0 = never.
        #[arg(long)]
        idle_timeout: Option<String>,
    },
    /// List the packages installed in a session's environment.
    Packages {
        /// The session's id.
        id: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Save requirements into the session's flow and install them (or --save-only).
    Install {
        /// The session's id.
        id: String,
        /// A requirements.txt (pip's format) to become the session flow's requirements.
        #[arg(long)]
        requirements: PathBuf,
        /// Save the requirements without installing; the next `session reset` installs them.
        #[arg(long)]
        save_only: bool,
    },
    /// Recreate a session's agent with the same environment; starts a stopped or failed session again.
    Reset {
        /// The session's id.
        id: String,
    },
    /// Move a session to the latest base environment.
    Update {
        /// The session's id.
        id: String,
    },
    /// Print a session's log.
    Logs {
        /// The session's id.
        id: String,
        /// Keep printing as the log grows (Ctrl-C to stop).
        #[arg(long, short)]
        follow: bool,
    },
    /// Stop a session (its environment stays cached; `session reset` starts it again).
    Stop {
        /// The session's id.
        id: String,
    },
    /// Stop a session and forget it. Its runs stay in the workspace (`run list`): a session is
    /// the compute, not the history.
    Delete {
        /// The session's id.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum IdentityCommand {
    /// Create an identity; its feed token (read from an environment variable, so it stays out of
    /// shell history) unlocks `{private}` package indexes for sessions started with --identity.
    Create {
        /// The identity's name (sessions name it with --identity).
        name: String,
        /// The environment variable holding the feed token.
        #[arg(long, value_name = "VAR")]
        feed_token_env: Option<String>,
        /// A host the token may be sent to (repeat for several): `{private}` index URLs on any
        /// other host are refused, so a requirements file cannot send the token elsewhere.
        #[arg(long = "feed-host", value_name = "HOST")]
        feed_hosts: Vec<String>,
        /// Sessions acting as the identity sign keyless Azure OpenAI calls in with this
        /// Microsoft Entra ID tenant's service principal (with --entra-client-id and
        /// --entra-client-secret-env).
        #[arg(long, value_name = "TENANT", requires_all = ["entra_client_id", "entra_client_secret_env"])]
        entra_tenant_id: Option<String>,
        /// The service principal's application (client) id.
        #[arg(long, value_name = "ID", requires = "entra_tenant_id")]
        entra_client_id: Option<String>,
        /// The environment variable holding the service principal's client secret (stored
        /// encrypted, handed only to the identity's sessions' agents, never to their code).
        #[arg(long, value_name = "VAR", requires = "entra_tenant_id")]
        entra_client_secret_env: Option<String>,
    },
    /// Let another user start sessions acting as an identity (its owner or an admin).
    Grant {
        /// The identity's name.
        name: String,
        /// The user's name.
        user: String,
    },
    /// List identities (tokens masked).
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ComputeCommand {
    /// Create a compute instance assigned to you (or, for admins, to --user).
    Create {
        /// The instance's name.
        name: String,
        /// small, medium or large: the size of the sessions it runs.
        #[arg(long, default_value = "small")]
        size: String,
        /// Assign it to this user (admins and owners only).
        #[arg(long)]
        user: Option<String>,
    },
    /// List the compute instances you may see.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Start a stopped compute instance.
    Start {
        /// The instance's name.
        name: String,
    },
    /// Stop a compute instance (and the sessions on it).
    Stop {
        /// The instance's name.
        name: String,
    },
    /// Delete a compute instance.
    Delete {
        /// The instance's name.
        name: String,
    },
}

/// `flowrt flow push`.
pub fn flow_push(flow: &std::path::Path, name: Option<&str>, server: Option<&str>) -> Result<u8> {
    let home = flowrt_store::flowrt_home();
    let remote = Remote::from_env(server, &home)?;
    let name = name
        .map(str::to_string)
        .unwrap_or_else(|| crate::push::default_name(flow));
    block(async move {
        let pushed = crate::push::push(&remote, flow, &name, &home).await?;
        if pushed.unchanged {
            eprintln!("unchanged since {}: nothing uploaded", pushed.reference);
        } else {
            eprintln!("uploaded {} bytes", pushed.bytes_sent);
        }
        println!("{}", pushed.reference);
        Ok(0)
    })
}

/// `flowrt flow list`.
pub fn flow_list(json_out: bool, server: Option<&str>) -> Result<u8> {
    let remote = Remote::from_env(server, &flowrt_store::flowrt_home())?;
    block(async move {
        let all = remote.call("GET", "/api/v1/flows", None).await?;
        if json_out {
            println!("{}", serde_json::to_string_pretty(&all)?);
            return Ok(0);
        }
        let flows: Vec<&Value> = all.as_array().into_iter().flatten().collect();
        if flows.is_empty() {
            eprintln!("no flows yet; push one with `flowrt flow push DIR`");
            return Ok(0);
        }
        let mut t = crate::fmt::table(&["FLOW", "FILES", "BYTES", "HASH"], &["FILES", "BYTES"]);
        for f in flows {
            t.add_row(vec![
                f["ref"].as_str().unwrap_or("").to_string(),
                f["files"].to_string(),
                f["bytes"].to_string(),
                crate::fmt::clip(f["hash"].as_str().unwrap_or(""), 19),
            ]);
        }
        crate::fmt::print_table(&t);
        Ok(0)
    })
}

/// `flowrt flow show`.
pub fn flow_show(reference: &str, server: Option<&str>) -> Result<u8> {
    let remote = Remote::from_env(server, &flowrt_store::flowrt_home())?;
    block(async move {
        let v = remote
            .call("GET", &format!("/api/v1/flows/{reference}"), None)
            .await?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        Ok(0)
    })
}

pub fn server(args: ServerArgs) -> Result<u8> {
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

/// Upload a data file (unless the server has it already): its reference, and whether it was sent.
pub async fn push_data(remote: &Remote, file: &std::path::Path) -> Result<(String, bool)> {
    use sha2::Digest;
    use std::io::Read;
    // Hashed, then sent, a piece at a time: a large data file is never held in memory.
    let mut hasher = sha2::Sha256::new();
    let mut f = fs_err::File::open(file).map_err(|e| anyhow!("cannot read the data file: {e}"))?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| anyhow!("cannot read the data file: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let format = match file.extension().and_then(|e| e.to_str()) {
        Some("csv") => "csv",
        Some("tsv") => "tsv",
        _ => "jsonl",
    };
    let reference = format!("data:sha256:{}.{format}", hex::encode(hasher.finalize()));
    if remote
        .call("GET", &format!("/api/v1/data/{reference}"), None)
        .await
        .is_ok()
    {
        return Ok((reference, false));
    }
    let v = remote
        .post_file(
            &format!("/api/v1/data?format={format}"),
            "application/octet-stream",
            file,
        )
        .await
        .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    Ok((v["ref"].as_str().unwrap_or(&reference).to_string(), true))
}

/// `flowrt data push FILE`.
pub fn data_push(file: &std::path::Path, server: Option<&str>) -> Result<u8> {
    let remote = Remote::from_env(server, &flowrt_store::flowrt_home())?;
    let (reference, sent) = block(push_data(&remote, file))?;
    if !sent {
        eprintln!("the server has this data already: nothing uploaded");
    }
    println!("{reference}");
    Ok(0)
}

/// A typed request body as the JSON the client sends.
pub(crate) fn to_body<T: serde::Serialize>(body: &T) -> Result<Value> {
    serde_json::to_value(body).map_err(|e| anyhow!("cannot encode the request: {e}"))
}

fn size_of(s: &str) -> Result<flowrt_api::SessionSize> {
    flowrt_api::SessionSize::parse(s)
        .ok_or_else(|| anyhow!("unknown size '{s}'; use small, medium or large"))
}

fn parse_idle(s: &str) -> Result<u64> {
    flowrt_session::idle::parse_duration(s)
        .map(|d| d.as_secs())
        .map_err(|e| anyhow!(e))
}

/// A connection command against a server's workspace.
pub enum ConnectionAction {
    Create { file: PathBuf, shared: bool },
    List { json: bool },
    Show { name: String },
    Delete { name: String },
}

pub fn workspace_connection(action: ConnectionAction, server: Option<&str>) -> Result<u8> {
    let remote = Remote::from_env(server, &flowrt_store::flowrt_home())?;
    block(async move {
        match action {
            ConnectionAction::Create { file, shared } => {
                // Parse here first: a bad file is named with its path, and nothing is sent.
                flowrt_store::ConnectionStore::parse_yaml(&file)?;
                let yaml = fs_err::read_to_string(&file)?;
                let v = remote
                    .call(
                        "POST",
                        "/api/v1/connections",
                        Some(to_body(&flowrt_api::requests::CreateConnection {
                            yaml,
                            shared,
                        })?),
                    )
                    .await?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            ConnectionAction::List { json } => {
                let all = remote.call("GET", "/api/v1/connections", None).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&all)?);
                } else {
                    let mut t = crate::fmt::table(&["NAME", "TYPE", "OWNER", "SHARED"], &[]);
                    for c in all.as_array().into_iter().flatten() {
                        t.add_row(vec![
                            c["name"].as_str().unwrap_or(""),
                            c["type"].as_str().unwrap_or(""),
                            c["owner"].as_str().unwrap_or(""),
                            if c["shared"] == true { "yes" } else { "no" },
                        ]);
                    }
                    crate::fmt::print_table(&t);
                }
            }
            ConnectionAction::Show { name } => {
                let v = remote.call("GET", &connection_path(&name), None).await?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            ConnectionAction::Delete { name } => {
                remote.call("DELETE", &connection_path(&name), None).await?;
                eprintln!("deleted connection '{name}' from the workspace");
            }
        }
        Ok(0)
    })
}

pub(crate) fn block<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Poll until the session leaves Preparing, printing each phase as it begins.
async fn wait_running(remote: &Remote, id: &str) -> Result<Value> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let s = remote
            .call("GET", &format!("/api/v1/sessions/{id}"), None)
            .await?;
        let status = s["status"].as_str().unwrap_or("").to_string();
        let now = match s["phase"].as_str() {
            Some(p) => format!("{status} ({p})"),
            None => status.clone(),
        };
        if now != last {
            eprintln!("{:>6.2}s  {now}", started.elapsed().as_secs_f64());
            last = now;
        }
        match status.as_str() {
            "Running" => return Ok(s),
            "Failed" => {
                let tail = s["log_tail"].as_str().unwrap_or("").trim();
                bail!(
                    "session {id} failed: {}{}",
                    s["reason"].as_str().unwrap_or("unknown reason"),
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!("\nlast log lines:\n{tail}")
                    }
                );
            }
            "Stopped" | "NotAvailable"
                if started.elapsed() > Duration::from_secs(2) && status == "Stopped" =>
            {
                bail!(
                    "session {id} stopped: {}",
                    s["reason"].as_str().unwrap_or("")
                );
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An idle timeout for people: `never`, `30m 00s`, `2h 00m`.
fn idle_text(seconds: u64) -> String {
    if seconds == 0 {
        "never".to_string()
    } else {
        crate::fmt::seconds(seconds as f64)
    }
}

fn print_session(s: &Value) {
    println!("id:            {}", s["id"].as_str().unwrap_or(""));
    let phase = s["phase"]
        .as_str()
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    println!(
        "status:        {}{phase}",
        s["status"].as_str().unwrap_or("")
    );
    if let Some(r) = s["reason"].as_str() {
        println!("reason:        {r}");
    }
    println!("flow:          {}", s["flow_ref"].as_str().unwrap_or(""));
    println!(
        "environment:   {} (base {})",
        s["env_ref"].as_str().unwrap_or(""),
        s["base_version"].as_str().unwrap_or("")
    );
    if let Some(u) = s["update_available"].as_str() {
        println!("update available: {u}");
    }
    println!("size:          {}", s["size"].as_str().unwrap_or(""));
    println!(
        "idle timeout:  {}",
        idle_text(s["idle_timeout_s"].as_u64().unwrap_or(0))
    );
    if let Some(c) = s["compute"].as_str() {
        println!("compute:       {c}");
    }
    if let Some(i) = s["identity"].as_str() {
        println!("identity:      {i}");
    }
}

pub fn session(cmd: SessionCommand, server: Option<&str>) -> Result<u8> {
    let remote = Remote::from_env(server, &flowrt_store::flowrt_home())?;
    block(async move {
        match cmd {
            SessionCommand::Start {
                flow,
                size,
                idle_timeout,
                identity,
                env,
                compute,
                shared,
                no_wait,
            } => {
                // A folder here is pushed first (nothing is sent when it is unchanged); anything
                // else names a workspace flow.
                let reference = if flow.exists() {
                    let name = crate::push::default_name(&flow);
                    let pushed =
                        crate::push::push(&remote, &flow, &name, &flowrt_store::flowrt_home())
                            .await?;
                    if !pushed.unchanged {
                        eprintln!("pushed {} ({} bytes)", pushed.reference, pushed.bytes_sent);
                    }
                    pushed.reference
                } else {
                    flow.display().to_string()
                };
                let body = flowrt_api::requests::StartSession {
                    flow: reference,
                    size: size_of(&size)?,
                    idle_timeout_s: idle_timeout.map(|t| parse_idle(&t)).transpose()?,
                    identity,
                    env,
                    compute,
                    shared,
                };
                let s = remote
                    .call("POST", "/api/v1/sessions", Some(to_body(&body)?))
                    .await?;
                let id = s["id"].as_str().unwrap_or("").to_string();
                if !no_wait {
                    wait_running(&remote, &id).await?;
                }
                println!("{id}");
            }
            SessionCommand::List { json } => {
                let all = remote.call("GET", "/api/v1/sessions", None).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&all)?);
                } else {
                    let sessions: Vec<&Value> = all.as_array().into_iter().flatten().collect();
                    if sessions.is_empty() {
                        eprintln!("no sessions; start one with `flowrt session start --flow DIR`");
                        return Ok(0);
                    }
                    let mut t = crate::fmt::table(
                        &[
                            "ID",
                            "STATUS",
                            "SIZE",
                            "ENVIRONMENT",
                            "IDLE TIMEOUT",
                            "FLOW",
                        ],
                        &[],
                    );
                    for s in sessions {
                        let phase = s["phase"]
                            .as_str()
                            .map(|p| format!(" ({p})"))
                            .unwrap_or_default();
                        t.add_row(vec![
                            s["id"].as_str().unwrap_or("").to_string(),
                            format!("{}{phase}", s["status"].as_str().unwrap_or("")),
                            s["size"].as_str().unwrap_or("").to_string(),
                            s["env_ref"].as_str().unwrap_or("").to_string(),
                            idle_text(s["idle_timeout_s"].as_u64().unwrap_or(0)),
                            s["flow_ref"].as_str().unwrap_or("").to_string(),
                        ]);
                    }
                    crate::fmt::print_table(&t);
                }
            }
            SessionCommand::Show { id, json } => {
                let s = remote
                    .call("GET", &format!("/api/v1/sessions/{id}"), None)
                    .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                } else {
                    print_session(&s);
                }
            }
            SessionCommand::Edit {
                id,
                size,
                idle_timeout,
            } => {
                let body = flowrt_api::requests::EditSession {
                    size: size.map(|s| size_of(&s)).transpose()?,
                    idle_timeout_s: idle_timeout.map(|t| parse_idle(&t)).transpose()?,
                };
                let s = remote
                    .call(
                        "PATCH",
                        &format!("/api/v1/sessions/{id}"),
                        Some(to_body(&body)?),
                    )
                    .await?;
                if let Some(n) = s["note"].as_str() {
                    eprintln!("note: {n}");
                }
                print_session(&s);
            }
            SessionCommand::Packages { id, json } => {
                let list = remote
                    .call("GET", &format!("/api/v1/sessions/{id}/packages"), None)
                    .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    let mut t = crate::fmt::table(&["NAME", "VERSION", "SOURCE"], &[]);
                    for p in list.as_array().into_iter().flatten() {
                        t.add_row(vec![
                            p["name"].as_str().unwrap_or(""),
                            p["version"].as_str().unwrap_or(""),
                            p["source"].as_str().unwrap_or(""),
                        ]);
                    }
                    crate::fmt::print_table(&t);
                }
            }
            SessionCommand::Install {
                id,
                requirements,
                save_only,
            } => {
                let text = std::fs::read_to_string(&requirements)
                    .map_err(|e| anyhow!("cannot read {}: {e}", requirements.display()))?;
                let s = remote
                    .call(
                        "POST",
                        &format!("/api/v1/sessions/{id}/install"),
                        Some(to_body(&flowrt_api::requests::InstallRequirements {
                            requirements: text,
                            save_only,
                        })?),
                    )
                    .await?;
                if save_only {
                    eprintln!("{}", s["note"].as_str().unwrap_or("saved"));
                } else {
                    wait_running(&remote, &id).await?;
                    eprintln!("installed; session {id} is running");
                }
            }
            SessionCommand::Reset { id } => {
                remote
                    .call("POST", &format!("/api/v1/sessions/{id}/reset"), None)
                    .await?;
                wait_running(&remote, &id).await?;
            }
            SessionCommand::Update { id } => {
                remote
                    .call("POST", &format!("/api/v1/sessions/{id}/update"), None)
                    .await?;
                let s = wait_running(&remote, &id).await?;
                eprintln!(
                    "session {id} now runs base environment {}",
                    s["base_version"].as_str().unwrap_or("")
                );
            }
            SessionCommand::Logs { id, follow } => {
                let mut offset = 0u64;
                loop {
                    let v = remote
                        .call(
                            "GET",
                            &format!("/api/v1/sessions/{id}/logs?offset={offset}"),
                            None,
                        )
                        .await?;
                    print!("{}", v["text"].as_str().unwrap_or(""));
                    offset = v["offset"].as_u64().unwrap_or(offset);
                    let done = !matches!(
                        v["status"].as_str(),
                        Some("Running" | "Preparing" | "Stopping")
                    );
                    if !follow || done {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            SessionCommand::Stop { id } => {
                let s = remote
                    .call("POST", &format!("/api/v1/sessions/{id}/stop"), None)
                    .await?;
                eprintln!("session {id} is {}", s["status"].as_str().unwrap_or(""));
            }
            SessionCommand::Delete { id } => {
                remote
                    .call("DELETE", &format!("/api/v1/sessions/{id}"), None)
                    .await?;
                eprintln!("session {id} is deleted; its runs stay in the workspace");
            }
        }
        Ok(0)
    })
}

pub fn compute(cmd: ComputeCommand, server: Option<&str>) -> Result<u8> {
    let remote = Remote::from_env(server, &flowrt_store::flowrt_home())?;
    block(async move {
        match cmd {
            ComputeCommand::Create { name, size, user } => {
                let body = flowrt_api::requests::CreateCompute {
                    name,
                    size: size_of(&size)?,
                    user,
                };
                let c = remote
                    .call("POST", "/api/v1/computes", Some(to_body(&body)?))
                    .await?;
                println!("{}", c["name"].as_str().unwrap_or(""));
            }
            ComputeCommand::List { json } => {
                let all = remote.call("GET", "/api/v1/computes", None).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&all)?);
                } else {
                    let mut t = crate::fmt::table(&["NAME", "STATUS", "SIZE", "OWNER"], &[]);
                    for c in all.as_array().into_iter().flatten() {
                        t.add_row(vec![
                            c["name"].as_str().unwrap_or(""),
                            c["status"].as_str().unwrap_or(""),
                            c["size"].as_str().unwrap_or(""),
                            c["owner"].as_str().unwrap_or(""),
                        ]);
                    }
                    crate::fmt::print_table(&t);
                }
            }
            ComputeCommand::Start { name } => {
                remote
                    .call("POST", &format!("/api/v1/computes/{name}/start"), None)
                    .await?;
            }
            ComputeCommand::Stop { name } => {
                remote
                    .call("POST", &format!("/api/v1/computes/{name}/stop"), None)
                    .await?;
            }
            ComputeCommand::Delete { name } => {
                remote
                    .call("DELETE", &format!("/api/v1/computes/{name}"), None)
                    .await?;
            }
        }
        Ok(0)
    })
}

/// `flow test --session ID`: the line runs inside the session.
/// When `flow` is a folder whose files are not what the session runs, say so: the session runs
/// the version it was started on, so the user knows which code answered.
async fn warn_if_changed(remote: &Remote, id: &str, flow: &std::path::Path) {
    if !flow.exists() {
        return;
    }
    let Ok(session) = remote
        .call("GET", &format!("/api/v1/sessions/{id}"), None)
        .await
    else {
        return;
    };
    let Some(running) = session["flow_ref"].as_str() else {
        return;
    };
    let Ok(described) = remote
        .call("GET", &format!("/api/v1/flows/{running}"), None)
        .await
    else {
        return;
    };
    let home = flowrt_store::flowrt_home();
    let Ok(merged) = crate::includes::Merged::new(flow, &home) else {
        return;
    };
    let limits = flowrt_store::snapshot::SnapshotLimits::default();
    let local = flowrt_store::snapshot::collect(&merged.dir, &limits)
        .and_then(|files| flowrt_store::snapshot::hash_files(&files));
    if let Ok(hash) = local {
        if described["hash"].as_str() != Some(hash.as_str()) {
            eprintln!(
                "note: session {id} runs {running}, and {} has changed since; `flowrt session start --flow {}` starts a session on the new version",
                flow.display(),
                flow.display()
            );
        }
    }
}

pub fn test_in_session(
    id: &str,
    inputs: Value,
    server: Option<&str>,
    flow: &std::path::Path,
    json: bool,
) -> Result<u8> {
    let remote = Remote::from_env(server, &flowrt_store::flowrt_home())?;
    block(async move {
        warn_if_changed(&remote, id, flow).await;
        let r = remote
            .call(
                "POST",
                &format!("/api/v1/sessions/{id}/test"),
                Some(to_body(&flowrt_api::requests::TestLine { inputs })?),
            )
            .await?;
        if let Some(e) = r["error"].as_object() {
            eprintln!(
                "error: flow test failed: {}",
                e.get("display").and_then(Value::as_str).unwrap_or("")
            );
            return Ok(1);
        }
        for n in r["node_runs"].as_array().into_iter().flatten() {
            for l in n["logs"].as_str().unwrap_or("").lines() {
                eprintln!("[{}] {l}", n["node"].as_str().unwrap_or(""));
            }
        }
        println!(
            "{}",
            crate::test_cmd::result_text(
                &r["outputs"],
                r["bare_output"].as_bool().unwrap_or(false),
                r["result_repr"].as_str(),
                json
            )
        );
        Ok(0)
    })
}

/// `run create --session ID`: the batch runs inside the session (as its agent's child); this
/// command waits for it and reports like a local run. The run's records are in FLOWRT_HOME/runs.
pub fn batch_in_session(args: crate::run_cmd::CreateArgs) -> Result<u8> {
    let home = flowrt_store::flowrt_home();
    let id = args.session.clone().unwrap_or_default();
    let remote = Remote::from_env(args.server.as_deref(), &home)?;
    let name = args.name.clone().unwrap_or_else(|| {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        format!("{id}_{ms}")
    });
    // The data travels with the request: the session cannot read files on this machine.
    // The data goes up once, by its hash: a file the server already has is not sent again.
    let data_ref = match &args.data {
        Some(d) => Some(block(push_data(&remote, d))?.0),
        None => None,
    };
    if args.output_dir.is_some() {
        bail!("--output-dir cannot be used with --session: a session's runs stay in the session\nhint: `flowrt run show NAME` reads it through the server");
    }
    let column_mapping = flowrt_executor::parse_mapping_pairs(&args.column_mapping)?;
    // A --flow here says which flow the caller means: a folder is pushed first (nothing is sent
    // when it is unchanged), and the server refuses the run, naming both, when the session runs
    // another.
    let flow_ref = match &args.flow {
        Some(flow) if flow.exists() => {
            let flow_name = crate::push::default_name(flow);
            let pushed = block(crate::push::push(&remote, flow, &flow_name, &home))?;
            if !pushed.unchanged {
                eprintln!("pushed {} ({} bytes)", pushed.reference, pushed.bytes_sent);
            }
            Some(pushed.reference)
        }
        Some(flow) => Some(flow.display().to_string()),
        None => None,
    };
    let request = to_body(&flowrt_api::requests::CreateRun {
        session: id.clone(),
        flow: flow_ref,
        name: name.clone(),
        data: None,
        data_format: None,
        data_ref,
        column_mapping,
        run: args.run.clone(),
        variant: args.variant.clone(),
        resume_from: args.resume_from.clone(),
        line_timeout: args.line_timeout,
        concurrency: args.concurrency,
        more_sessions: args.also_on.clone(),
        nodes: args.nodes,
    })?;
    let strict = args.strict;
    let spread = !args.also_on.is_empty() || args.nodes.is_some_and(|n| n > 1);
    block(async {
        remote.call("POST", "/api/v1/runs", Some(request)).await?;
        if let Some(n) = args.nodes.filter(|n| *n > 1) {
            eprintln!("batch run {name} started, spread over {n} sessions like {id}");
        } else if spread {
            eprintln!(
                "batch run {name} started, spread over sessions {id},{}",
                args.also_on.join(",")
            );
        } else {
            eprintln!("batch run {name} started in session {id}");
        }
        // Progress as the session reports it (a plain line every few seconds), then the record.
        let mut last = Instant::now();
        // A spread run's progress is in its chunks, not one session's log: its record is polled.
        let followed = if spread {
            Ok(())
        } else {
            remote
                .events(&format!("/api/v1/runs/{name}/events"), |event, v| {
                    if event == "progress" && last.elapsed() >= Duration::from_secs(5) {
                        last = Instant::now();
                        let eta = v["eta_seconds"]
                            .as_f64()
                            .map(|s| format!("{s:.0}s"))
                            .unwrap_or_else(|| "unknown".into());
                        eprintln!(
                            "progress: {}/{} lines, {} failed, {:.1} lines/s, ETA {eta}",
                            v["done"],
                            v["total"],
                            v["failed"],
                            v["lines_per_second"].as_f64().unwrap_or(0.0)
                        );
                    }
                    event != "end"
                })
                .await
        };
        if let Err(e) = followed {
            eprintln!("warning: {e}; waiting for the run to end");
        }
        // The run's record lives in the session; read it through the server.
        let started = Instant::now();
        let mut first = true;
        loop {
            // Right away after the end event; a moment later when the stream could not tell.
            if !first {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            first = false;
            match remote
                .call("GET", &format!("/api/v1/runs/{name}"), None)
                .await
            {
                Ok(meta) if meta["status"] != "Running" => {
                    println!("{}", serde_json::to_string_pretty(&meta)?);
                    let status = meta["status"].as_str().unwrap_or("");
                    eprintln!(
                        "run {name} {status}: {} of {} lines completed, {} failed",
                        meta["completed_lines"], meta["total_lines"], meta["failed_lines"]
                    );
                    let failed = meta["failed_lines"].as_u64().unwrap_or(0);
                    return Ok(match status {
                        "Completed" if strict && failed > 0 => 1,
                        "Completed" => 0,
                        "Canceled" => 130,
                        _ => 1,
                    });
                }
                Ok(_) => {}
                Err(_) if started.elapsed() > Duration::from_secs(60) => {
                    bail!("batch run {name} did not start in session {id}; see `flowrt session logs {id}`");
                }
                Err(_) => {}
            }
        }
    })
}

pub fn identity(cmd: IdentityCommand, server: Option<&str>) -> Result<u8> {
    let remote = Remote::from_env(server, &flowrt_store::flowrt_home())?;
    block(async move {
        match cmd {
            IdentityCommand::Create {
                name,
                feed_token_env,
                feed_hosts,
                entra_tenant_id,
                entra_client_id,
                entra_client_secret_env,
            } => {
                let from_env = |var: &str| {
                    std::env::var(var).map_err(|_| anyhow!("environment variable {var} is not set"))
                };
                let token = feed_token_env.as_deref().map(from_env).transpose()?;
                let entra = match (entra_tenant_id, entra_client_id, entra_client_secret_env) {
                    (Some(tenant_id), Some(client_id), Some(var)) => {
                        Some(flowrt_api::EntraServicePrincipal {
                            tenant_id,
                            client_id,
                            client_secret: from_env(&var)?,
                        })
                    }
                    _ => None,
                };
                let i = remote
                    .call(
                        "POST",
                        "/api/v1/identities",
                        Some(to_body(&flowrt_api::requests::CreateIdentity {
                            name,
                            feed_token: token,
                            feed_hosts,
                            entra,
                        })?),
                    )
                    .await?;
                println!("{}", i["name"].as_str().unwrap_or(""));
            }
            IdentityCommand::Grant { name, user } => {
                let path = format!("/api/v1/identities/{name}/grants");
                remote
                    .call(
                        "POST",
                        &path,
                        Some(to_body(&flowrt_api::requests::GrantIdentity {
                            user: user.clone(),
                        })?),
                    )
                    .await?;
                eprintln!("{user} may now start sessions with --identity {name}");
            }
            IdentityCommand::List { json } => {
                let all = remote.call("GET", "/api/v1/identities", None).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&all)?);
                } else {
                    let mut t = crate::fmt::table(
                        &["NAME", "FEED TOKEN", "FEED HOSTS", "ENTRA CLIENT ID"],
                        &[],
                    );
                    for i in all.as_array().into_iter().flatten() {
                        let hosts: Vec<&str> = i["feed_hosts"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        t.add_row(vec![
                            i["name"].as_str().unwrap_or(""),
                            i["feed_token"].as_str().unwrap_or("-"),
                            &hosts.join(", "),
                            i["entra_client_id"].as_str().unwrap_or("-"),
                        ]);
                    }
                    crate::fmt::print_table(&t);
                }
            }
        }
        Ok(0)
    })
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

/// The API path of connection `name`: promptflow's names may hold `/`, `?`, `#` or spaces, so
/// the name is one escaped path segment.
fn connection_path(name: &str) -> String {
    let segment = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("/api/v1/connections/{segment}")
}
