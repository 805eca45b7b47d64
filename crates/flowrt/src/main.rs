//! `flowrt`: the command line. Parses arguments, wires the roles together (flow engine, Python
//! workers, built-in tools, store) and maps errors to exit codes with `hint:` lines.

mod agent_cmd;
mod data;
mod env_cmd;
mod flex;
mod includes;
mod invoker;
mod remote;
mod run_cmd;
mod runs;
mod serve_cmd;
mod session_cmd;
mod test_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// A prompt flow runtime: runs promptflow flows (flow.dag.yaml) unchanged, fast.
#[derive(Parser)]
#[command(name = "flowrt", version, about, long_about = None, propagate_version = true)]
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
    /// Identities sessions may act as (a private package feed's token).
    Identity {
        #[command(flatten)]
        server: session_cmd::ServerOpt,
        #[command(subcommand)]
        command: session_cmd::IdentityCommand,
    },
    /// Run as a compute session's agent (started by `flowrt server`, not by hand).
    #[command(hide = true)]
    Agent(agent_cmd::AgentArgs),
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
    /// Check a flow without running it: YAML, references, tool files, cycles.
    Validate {
        /// The flow folder (holding flow.dag.yaml or flow.flex.yaml) or that file. A flex flow's
        /// entry is imported (in a Python worker) to check its signature.
        flow: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConnectionCommand {
    /// Create or replace a connection from promptflow's connection YAML.
    ///
    /// Secrets are encrypted at rest under FLOWRT_HOME and never printed.
    Create {
        /// A connection YAML (name, type: open_ai|azure_open_ai|custom|serverless, ...).
        #[arg(long, short)]
        file: PathBuf,
    },
    /// List connections (secrets masked).
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show one connection (secrets masked).
    Show { name: String },
    /// Delete a connection.
    Delete { name: String },
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
        Command::Flow(FlowCommand::Validate { flow: flow_dir }) => {
            let home = flowrt_store::flowrt_home();
            let merged = includes::Merged::new(&flow_dir, &home)?;
            let mut flow = merged.load(&Default::default())?;
            if flow.kind == flowrt_flow::FlowKind::Flex {
                flex::check_entry(&mut flow, &home)?;
            }
            println!(
                "{}: valid flow with {} inputs, {} outputs and {} nodes",
                if flow_dir.is_file() {
                    flow_dir.clone()
                } else {
                    flow_dir.join(flow.file.file_name().unwrap_or_default())
                }
                .display(),
                flow.inputs.len(),
                flow.outputs.len(),
                flow.nodes.len()
            );
            Ok(0)
        }
        Command::Run(cmd) => run_cmd::run(cmd),
        Command::Connection(cmd) => connection(cmd),
        Command::Env(cmd) => env_cmd::run(cmd),
        Command::Agent(args) => agent_cmd::run(args),
        Command::Server(args) => session_cmd::server(args),
        Command::Session { server, command } => {
            session_cmd::session(command, server.server.as_deref())
        }
        Command::Identity { server, command } => {
            session_cmd::identity(command, server.server.as_deref())
        }
        Command::Compute { server, command } => {
            session_cmd::compute(command, server.server.as_deref())
        }
    }
}

fn connection(cmd: ConnectionCommand) -> Result<u8> {
    let store = flowrt_store::ConnectionStore::open(&flowrt_store::flowrt_home())?;
    match cmd {
        ConnectionCommand::Create { file } => {
            let conn = store.create_from_file(&file)?;
            println!("{}", serde_json::to_string_pretty(&flowrt_store::masked(&conn))?);
        }
        ConnectionCommand::List { json } => {
            let all = store.list()?;
            if json {
                let v: Vec<_> = all.iter().map(flowrt_store::masked).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if all.is_empty() {
                eprintln!("no connections; create one with `flowrt connection create --file CONN.yaml`");
            } else {
                println!("{:<32} TYPE", "NAME");
                for c in all {
                    println!("{:<32} {}", c.name, c.kind.as_str());
                }
            }
        }
        ConnectionCommand::Show { name } => match store.get(&name)? {
            Some(conn) => println!("{}", serde_json::to_string_pretty(&flowrt_store::masked(&conn))?),
            None => anyhow::bail!("connection '{name}' does not exist\nhint: `flowrt connection list` shows the connections"),
        },
        ConnectionCommand::Delete { name } => {
            if !store.delete(&name)? {
                anyhow::bail!("connection '{name}' does not exist\nhint: `flowrt connection list` shows the connections");
            }
            eprintln!("deleted connection '{name}'");
        }
    }
    Ok(0)
}
