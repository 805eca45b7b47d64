//! `flowrt agent`: the arguments of a compute session's agent. The agent itself (serving the
//! server, lines, in-process batch runs, idle exit) is the `flowrt-agent` crate.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct AgentArgs {
    /// The session this agent serves (answered by /health so a restarted server can re-adopt it).
    #[arg(long)]
    pub session_id: String,
    /// The flow folder (or .prompty file).
    #[arg(long, required_unless_present = "flow_from_server")]
    pub flow: Option<PathBuf>,
    /// The environment's Python interpreter.
    #[arg(long, required_unless_present = "flow_from_server")]
    pub python: Option<PathBuf>,
    /// Receive the flow from the server when joining it (FLOWRT_JOIN_URL) and build its
    /// environment under this node-local cache folder: a Ray node shares no disk with its server.
    #[arg(long, conflicts_with_all = ["flow", "python"])]
    pub flow_from_server: Option<PathBuf>,
    /// How many Python workers to keep.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Where to write the address it listens on (`127.0.0.1:PORT`).
    #[arg(long)]
    pub addr_file: PathBuf,
    /// A file holding the bearer token every request must carry (other local users can reach
    /// 127.0.0.1 too). An agent that joins its server (FLOWRT_JOIN_URL) draws its own.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Seconds between "NODE has been running for N seconds" log lines for a slow node.
    #[arg(long, default_value_t = 60.0)]
    pub long_running_interval: f64,
    /// Read the connections the flow uses (a JSON list) from stdin: the server hands them over this
    /// way, so no secret is written into the session folder.
    #[arg(long)]
    pub connections_stdin: bool,
    /// Seal this agent and everything it starts (Landlock) to its session folder, its Python and
    /// the system, before any user code is loaded.
    #[arg(long)]
    pub seal: bool,
    /// With --seal: TCP ports that no process of the session may connect to, on any host (a Ray
    /// cluster's control plane: its server names them). Needs Linux 6.7+ to be enforced.
    #[arg(long, value_delimiter = ',', requires = "seal")]
    pub deny_connect_ports: Vec<u16>,
    /// Run as this user and group (a server started as root with --session-uids gives each
    /// session one of its own); the agent drops to it before any of the session's code runs.
    #[arg(long)]
    pub run_as_uid: Option<u32>,
    /// Exit after this many seconds without a run, or once the session folder is gone, even if no
    /// server says so (0: only the folder check): the backstop for an agent whose server is gone.
    #[arg(long, default_value_t = 0.0)]
    pub idle_exit: f64,
    /// Where to listen. A Ray session's agent listens on every interface (FLOWRT_AGENT_BIND) and
    /// tells its server the address it reaches it by.
    #[arg(long, env = "FLOWRT_AGENT_BIND", default_value = "127.0.0.1:0")]
    pub bind: String,
}

pub fn run(args: AgentArgs) -> Result<u8> {
    let from_server = args.flow_from_server.is_some();
    let result = flowrt_agent::run(flowrt_agent::AgentConfig {
        session_id: args.session_id,
        source: match (args.flow_from_server, args.flow, args.python) {
            (Some(node_cache), _, _) => flowrt_agent::FlowSource::FromServer { node_cache },
            (None, Some(flow), Some(python)) => flowrt_agent::FlowSource::Local { flow, python },
            _ => anyhow::bail!("the agent needs --flow and --python, or --flow-from-server"),
        },
        workers: args.workers,
        addr_file: args.addr_file,
        token_file: args.token_file,
        long_running_interval: args.long_running_interval,
        connections_stdin: args.connections_stdin,
        seal: args.seal,
        run_as_uid: args.run_as_uid,
        deny_connect_ports: args.deny_connect_ports,
        idle_exit: args.idle_exit,
        watch_interval: Duration::from_secs(2),
        bind: args.bind.clone(),
        // A Ray session's agent: its server put where to dial in the job's environment (no
        // secret: the agent proves itself through its job's log).
        join: match std::env::var("FLOWRT_JOIN_URL") {
            Ok(url) if !url.is_empty() => Some(flowrt_agent::Join { url }),
            _ => None,
        },
    });
    if let (Err(e), true) = (&result, from_server) {
        // A Ray agent's session log is on its node, out of the server's reach once the agent is
        // gone: the job's own log (its stdout) carries why it stopped, and Ray's job status shows
        // it. One line, without the details the session log holds.
        let why: String = format!("{e}").chars().take(300).collect();
        println!("flowrt agent stopped: {why}");
    }
    result?;
    Ok(0)
}

#[derive(Args)]
pub struct SealExecArgs {
    /// Folders the program may read, write and run from.
    #[arg(long)]
    pub rw: Vec<PathBuf>,
    /// Files or folders it may read and run (besides the system's).
    #[arg(long)]
    pub rx: Vec<PathBuf>,
    /// Python interpreters it runs: their prefixes become readable.
    #[arg(long)]
    pub python: Vec<PathBuf>,
    /// TCP ports it may not connect to, on any host (a Ray cluster's control plane). Needs
    /// Linux 6.7+ to be enforced.
    #[arg(long, value_delimiter = ',')]
    pub deny_connect_ports: Vec<u16>,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<std::ffi::OsString>,
}

/// Seal this process to `args`' folders, then become the program: nothing it or its children do
/// reaches beyond them. Where the kernel has no Landlock, it runs unsealed and says so.
pub fn seal_exec(args: SealExecArgs) -> Result<u8> {
    use std::os::unix::process::CommandExt;
    let mut read_exec = args.rx.clone();
    for python in &args.python {
        read_exec.extend(flowrt_session::seal::python_paths(python)?.read);
    }
    let policy = flowrt_session::seal::SealPolicy {
        read_write: args.rw.clone(),
        read_exec,
        deny_connect_ports: args.deny_connect_ports.clone(),
    };
    let status = flowrt_session::seal::seal_self(&policy)?;
    if status == flowrt_session::seal::SealStatus::None {
        eprintln!("warning: {}", status.describe());
    }
    let Some((program, rest)) = args.command.split_first() else {
        anyhow::bail!("seal-exec needs a program after --");
    };
    let err = std::process::Command::new(program).args(rest).exec();
    anyhow::bail!("cannot run {}: {err}", program.to_string_lossy())
}
