//! `flowrt`: the command line. Parses arguments, wires the roles together (flow engine, Python
//! workers, built-in tools, store) and maps errors to exit codes with `hint:` lines.

// The runtime the roles share, under the names the commands use.
use flowrt_runtime::{flex, includes, invoker, otel, runs};

mod agent_cmd;
mod endpoint_cmd;
mod env_cmd;
mod flow_cmd;
mod fmt;
mod push;
mod remote;
mod run_cmd;
mod run_view;
mod serve_cmd;
mod session_cmd;
mod team_cmd;
mod test_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

// mimalloc: lines are built on the async threads and their records and spans freed on others
// (the writer, the exporter's thread); glibc's allocator pays for each such free, and on the
// bench's 10,000-line batch that was most of what exporting traces cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

const AFTER_HELP: &str = "\
Environment:
  FLOWRT_HOME    where state lives: connections (secrets encrypted), environments, runs,
                 the server's database (default ~/.flowrt)
  FLOWRT_SERVER  the server for session, compute and identity commands (default http://127.0.0.1:7878)
  FLOWRT_TOKEN   the API token for that server (default: the local owner token)
  FLOWRT_PYTHON  the Python for flows without a requirements.txt (default python3 on PATH)

Exit codes:
  0    success (a batch run that completed, even if some lines failed; see `run create --help`)
  1    the flow ran and failed: a node failed, or every line of a batch failed
  2    bad input: the flow, its inputs, the data, a mapping, or the command line
  130  canceled (Ctrl-C); a canceled batch resumes with `run create --resume-from NAME`

Start with: flowrt flow test DIR --inputs NAME=VALUE";

/// A prompt flow runtime: runs promptflow flows (flow.dag.yaml, .prompty, flow.flex.yaml) unchanged, fast.
#[derive(Parser)]
#[command(name = "flowrt", version, about, long_about = None, propagate_version = true, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Test, serve and check flows.
    #[command(subcommand)]
    Flow(FlowCommand),
    /// Batch and evaluation runs: a flow over every row of a data file.
    #[command(subcommand)]
    Run(run_cmd::RunCommand),
    /// Manage connections: named credentials for OpenAI, Azure OpenAI and custom services.
    #[command(subcommand)]
    Connection(ConnectionCommand),
    /// Batch data on a flowrt server: uploaded once, checked, named by its content's hash.
    #[command(subcommand)]
    Data(DataCommand),
    /// Environments: base versions, published custom environments, the cache.
    #[command(subcommand)]
    Env(env_cmd::EnvCommand),
    /// Run the control plane: sessions, computes, environments and users over an authenticated API.
    Server(session_cmd::ServerArgs),
    /// Compute sessions on a flowrt server: start, list, show, edit, packages, install, reset,
    /// update, logs, stop.
    Session {
        #[command(flatten)]
        server: session_cmd::ServerOpt,
        #[command(subcommand)]
        command: session_cmd::SessionCommand,
    },
    /// Compute instances on a flowrt server: named, long-lived, assigned to one user.
    Compute {
        #[command(flatten)]
        server: session_cmd::ServerOpt,
        #[command(subcommand)]
        command: session_cmd::ComputeCommand,
    },
    /// Endpoints: a named, authenticated scoring URL (`/endpoints/NAME/score`) on a flowrt
    /// server, with the flow versions deployed behind it, their traffic and their requests.
    Endpoint {
        #[command(flatten)]
        server: session_cmd::ServerOpt,
        #[command(subcommand)]
        command: endpoint_cmd::EndpointCommand,
    },
    /// Deployments: a flow version behind an endpoint, served by sealed sessions the server
    /// keeps running (replaced when they die, rolled over to a new version without downtime).
    Deployment {
        #[command(flatten)]
        server: session_cmd::ServerOpt,
        #[command(subcommand)]
        command: endpoint_cmd::DeploymentCommand,
    },
    /// Identities sessions may act as (a private package feed's token).
    Identity {
        #[command(flatten)]
        server: session_cmd::ServerOpt,
        #[command(subcommand)]
        command: session_cmd::IdentityCommand,
    },
    /// Users and service principals of a flowrt server (admins).
    User {
        #[command(flatten)]
        server: session_cmd::ServerOpt,
        #[command(subcommand)]
        command: team_cmd::UserCommand,
    },
    /// API tokens: create (shown once), list, revoke.
    Token {
        #[command(flatten)]
        server: session_cmd::ServerOpt,
        #[command(subcommand)]
        command: team_cmd::TokenCommand,
    },
    /// Role assignments: who may do what (owners and access admins assign).
    Role {
        #[command(flatten)]
        server: session_cmd::ServerOpt,
        #[command(subcommand)]
        command: team_cmd::RoleCommand,
    },
    /// The audit log of every state-changing request (owners and admins).
    Audit {
        #[command(flatten)]
        server: session_cmd::ServerOpt,
        #[command(subcommand)]
        command: team_cmd::AuditCommand,
    },
    /// Run as a compute session's agent (started by `flowrt server`, not by hand).
    #[command(hide = true)]
    Agent(agent_cmd::AgentArgs),
    /// Run a program sealed (Landlock) to the given folders: how a server runs a session's
    /// package installs, whose build scripts are its user's code.
    #[command(hide = true)]
    SealExec(agent_cmd::SealExecArgs),
}

#[derive(Subcommand)]
enum FlowCommand {
    /// Run one line of a flow and print its outputs as JSON.
    ///
    /// Example: flowrt flow test ./my_flow --inputs question="What is a DAG?" count=3
    Test(test_cmd::TestArgs),
    /// Serve a flow over HTTP (promptflow's contract): POST /score, GET /health, /swagger.json.
    ///
    /// Example: flowrt flow serve ./my_flow --port 8080
    Serve(serve_cmd::ServeArgs),
    /// Upload a flow to a server's workspace as its next version (NAME@vN); prints the reference.
    ///
    /// The folder is packed as promptflow packs snapshots: additional_includes merged in,
    /// .gitignore and .amlignore honoured. A folder unchanged since its latest version uploads
    /// nothing. Example: flowrt flow push ./qa --name qa
    Push {
        /// The flow folder (or a .prompty file).
        flow: PathBuf,
        /// The name in the workspace (default: the folder's name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        server: session_cmd::ServerOpt,
    },
    /// List the flows in a server's workspace you may see, with their versions.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: session_cmd::ServerOpt,
    },
    /// Show a workspace flow as JSON: inputs, outputs, nodes and edges (what a UI draws).
    Show {
        /// NAME (the latest version) or NAME@vN.
        reference: String,
        #[command(flatten)]
        server: session_cmd::ServerOpt,
    },
    /// Bring a workspace flow's version back to a new or empty folder, to edit it locally and
    /// push it again. Example: flowrt flow pull qa@v3 ./qa
    Pull {
        /// NAME (the latest version) or NAME@vN.
        reference: String,
        /// The folder to create (it may exist if empty; nothing is overwritten).
        dir: PathBuf,
        #[command(flatten)]
        server: session_cmd::ServerOpt,
    },
    /// Show what changed between two versions of a workspace flow, as a unified diff.
    /// Example: flowrt flow diff qa@v1 qa@v2
    Diff {
        /// The older version, NAME@vN.
        from: String,
        /// The newer version, NAME@vN (default: the latest).
        to: Option<String>,
        #[command(flatten)]
        server: session_cmd::ServerOpt,
    },
    /// Check a flow without running it: YAML, references, tool files, cycles.
    Validate {
        /// The flow folder (holding flow.dag.yaml or flow.flex.yaml), that file, or a .prompty
        /// file. A flex flow's entry is imported (in a Python worker) to check its signature.
        flow: PathBuf,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Upload a .jsonl, .csv or .tsv file; prints its reference (data:sha256:HEX.EXT). A bad JSONL
    /// line is named; a file the server already has is not sent again.
    Push {
        /// The data file.
        file: PathBuf,
        #[command(flatten)]
        server: session_cmd::ServerOpt,
    },
}

#[derive(Subcommand)]
enum ConnectionCommand {
    /// Create or replace a connection from promptflow's connection YAML.
    ///
    /// Secrets are encrypted at rest under FLOWRT_HOME and never printed. With --workspace the
    /// connection goes to the server's workspace instead: yours, for your sessions' flows (and,
    /// with --shared, every data scientist's).
    Create {
        /// A connection YAML (name, type: open_ai|azure_open_ai|custom|serverless, ...).
        #[arg(long, short)]
        file: PathBuf,
        #[command(flatten)]
        place: WorkspaceOpt,
        /// With --workspace: let every data scientist's flows use it.
        #[arg(long, requires = "workspace")]
        shared: bool,
    },
    /// List connections (secrets masked).
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        place: WorkspaceOpt,
    },
    /// Show one connection (secrets masked).
    Show {
        name: String,
        #[command(flatten)]
        place: WorkspaceOpt,
    },
    /// Delete a connection.
    Delete {
        name: String,
        #[command(flatten)]
        place: WorkspaceOpt,
    },
}

/// Where a connection command acts: this machine (default) or a server's workspace.
#[derive(clap::Args)]
struct WorkspaceOpt {
    /// The server's workspace (--server, else FLOWRT_SERVER) instead of this machine.
    #[arg(long)]
    workspace: bool,
    /// The server's URL (with --workspace).
    #[arg(long, requires = "workspace")]
    server: Option<String>,
}

/// A user-facing failure with the exit code it maps to.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub error: anyhow::Error,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            print_error(&e);
            ExitCode::from(2)
        }
    }
}

/// `error: ...` then any `hint: ...` lines the message carries.
pub fn print_error(e: &anyhow::Error) {
    let mut text = format!("{e}");
    for cause in e.chain().skip(1) {
        text.push_str(&format!("\n  caused by: {cause}"));
    }
    eprintln!("error: {text}");
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Flow(FlowCommand::Test(args)) => test_cmd::run(args),
        Command::Flow(FlowCommand::Serve(args)) => serve_cmd::run(args),
        Command::Flow(FlowCommand::Validate { flow: flow_dir }) => validate(&flow_dir),
        Command::Flow(FlowCommand::Push { flow, name, server }) => {
            session_cmd::flow_push(&flow, name.as_deref(), server.server.as_deref())
        }
        Command::Flow(FlowCommand::List { json, server }) => {
            session_cmd::flow_list(json, server.server.as_deref())
        }
        Command::Flow(FlowCommand::Show { reference, server }) => {
            session_cmd::flow_show(&reference, server.server.as_deref())
        }
        Command::Flow(FlowCommand::Pull {
            reference,
            dir,
            server,
        }) => flow_cmd::pull(&reference, &dir, server.server.as_deref()),
        Command::Flow(FlowCommand::Diff { from, to, server }) => {
            flow_cmd::diff(&from, to.as_deref(), server.server.as_deref())
        }
        Command::Run(cmd) => run_cmd::run(cmd),
        Command::Connection(cmd) => connection(cmd),
        Command::Data(DataCommand::Push { file, server }) => {
            session_cmd::data_push(&file, server.server.as_deref())
        }
        Command::Env(cmd) => env_cmd::run(cmd),
        Command::Agent(args) => agent_cmd::run(args),
        Command::SealExec(args) => agent_cmd::seal_exec(args),
        Command::Server(args) => session_cmd::server(args),
        Command::Session { server, command } => {
            session_cmd::session(command, server.server.as_deref())
        }
        Command::Endpoint { server, command } => {
            endpoint_cmd::endpoint(command, server.server.as_deref())
        }
        Command::Deployment { server, command } => {
            endpoint_cmd::deployment(command, server.server.as_deref())
        }
        Command::Identity { server, command } => {
            session_cmd::identity(command, server.server.as_deref())
        }
        Command::Compute { server, command } => {
            session_cmd::compute(command, server.server.as_deref())
        }
        Command::User { server, command } => team_cmd::user(command, server.server.as_deref()),
        Command::Token { server, command } => team_cmd::token(command, server.server.as_deref()),
        Command::Role { server, command } => team_cmd::role(command, server.server.as_deref()),
        Command::Audit { server, command } => team_cmd::audit(command, server.server.as_deref()),
    }
}

/// `1 input`, `2 inputs`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `flowrt flow validate`: everything that can be checked without running: the YAML, references,
/// tool files, cycles, and that the connections the flow names exist here.
fn validate(flow_dir: &std::path::Path) -> Result<u8> {
    let home = flowrt_store::flowrt_home();
    let merged = includes::Merged::new(flow_dir, &home)?;
    let mut flow = merged.load(&Default::default())?;
    let file = if flow_dir.is_file() {
        flow_dir.to_path_buf()
    } else {
        flow_dir.join(flow.file.file_name().unwrap_or_default())
    };
    let connections = invoker::load_connections(&home)?;
    let mut missing: Vec<String> = Vec::new();
    for node in &flow.nodes {
        let named = node.connection.iter().chain(
            // The unified llm tool names its connection as an input.
            node.inputs
                .get("connection")
                .and_then(|v| match v {
                    flowrt_flow::InputValue::Literal(serde_json::Value::String(s)) => Some(s),
                    _ => None,
                })
                .filter(|_| node.kind == flowrt_flow::NodeKind::CustomLlm),
        );
        for conn in named {
            if !connections.contains_key(conn) {
                let at = node.line.map(|l| format!(":{l}")).unwrap_or_default();
                missing.push(format!(
                    "{}{at}: node '{}' uses connection '{conn}', which does not exist",
                    file.display(),
                    node.name
                ));
            }
        }
    }
    for (var, value) in flow.environment_strings() {
        if let Some((conn, _)) = flowrt_flow::env_var_reference(&value) {
            if !connections.contains_key(conn) {
                missing.push(format!(
                    "{}: environment variable {var} reads connection '{conn}', which does not exist",
                    file.display()
                ));
            }
        }
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "{}\nhint: create connections with `flowrt connection create --file CONN.yaml`; `flowrt connection list` shows those in {}",
            missing.join("\n"),
            home.display()
        );
    }
    // A flex flow's entry is imported to check its signature against the YAML.
    if flow.kind == flowrt_flow::FlowKind::Flex {
        flex::check_entry(&mut flow, &home)?;
    }
    println!(
        "{}: valid flow with {}, {} and {}",
        file.display(),
        count(flow.inputs.len(), "input"),
        count(flow.outputs.len(), "output"),
        count(flow.nodes.len(), "node")
    );
    Ok(0)
}

fn connection(cmd: ConnectionCommand) -> Result<u8> {
    let place = match &cmd {
        ConnectionCommand::Create { place, .. }
        | ConnectionCommand::List { place, .. }
        | ConnectionCommand::Show { place, .. }
        | ConnectionCommand::Delete { place, .. } => place,
    };
    if place.workspace {
        let server = place.server.clone();
        return session_cmd::workspace_connection(
            match cmd {
                ConnectionCommand::Create { file, shared, .. } => {
                    session_cmd::ConnectionAction::Create { file, shared }
                }
                ConnectionCommand::List { json, .. } => {
                    session_cmd::ConnectionAction::List { json }
                }
                ConnectionCommand::Show { name, .. } => {
                    session_cmd::ConnectionAction::Show { name }
                }
                ConnectionCommand::Delete { name, .. } => {
                    session_cmd::ConnectionAction::Delete { name }
                }
            },
            server.as_deref(),
        );
    }
    let store = flowrt_store::ConnectionStore::open(&flowrt_store::flowrt_home())?;
    match cmd {
        ConnectionCommand::Create { file, .. } => {
            let conn = store.create_from_file(&file)?;
            println!("{}", serde_json::to_string_pretty(&flowrt_store::masked(&conn))?);
        }
        ConnectionCommand::List { json, .. } => {
            let all = store.list()?;
            if json {
                let v: Vec<_> = all.iter().map(flowrt_store::masked).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if all.is_empty() {
                eprintln!("no connections; create one with `flowrt connection create --file CONN.yaml`");
            } else {
                let mut t = fmt::table(&["NAME", "TYPE"], &[]);
                for c in all {
                    t.add_row(vec![c.name.as_str(), c.kind.as_str()]);
                }
                fmt::print_table(&t);
            }
        }
        ConnectionCommand::Show { name, .. } => match store.get(&name)? {
            Some(conn) => println!("{}", serde_json::to_string_pretty(&flowrt_store::masked(&conn))?),
            None => anyhow::bail!("connection '{name}' does not exist\nhint: `flowrt connection list` shows the connections"),
        },
        ConnectionCommand::Delete { name, .. } => {
            if !store.delete(&name)? {
                anyhow::bail!("connection '{name}' does not exist\nhint: `flowrt connection list` shows the connections");
            }
            eprintln!("deleted connection '{name}'");
        }
    }
    Ok(0)
}
