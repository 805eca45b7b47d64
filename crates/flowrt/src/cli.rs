//! The command line's shape: every command and its arguments (clap), with the help text that
//! teaches them. What each command does lives in `commands`, one module per resource.

use crate::client::ServerOpt;
use crate::commands;
use clap::{Parser, Subcommand};

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Test, serve and check flows.
    #[command(subcommand)]
    Flow(commands::flow::FlowCommand),
    /// Batch and evaluation runs: a flow over every row of a data file.
    #[command(subcommand)]
    Run(commands::run::RunCommand),
    /// Manage connections: named credentials for OpenAI, Azure OpenAI and custom services.
    #[command(subcommand)]
    Connection(commands::connection::ConnectionCommand),
    /// Batch data on a flowrt server: uploaded once, checked, named by its content's hash.
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// Environments: base versions, published custom environments, the cache.
    #[command(subcommand)]
    Env(commands::env::EnvCommand),
    /// Run the control plane: sessions, computes, environments and users over an authenticated API.
    Server(commands::server::ServerArgs),
    /// Compute sessions on a flowrt server: start, list, show, edit, packages, install, reset,
    /// update, logs, stop.
    Session {
        #[command(flatten)]
        server: ServerOpt,
        #[command(subcommand)]
        command: commands::session::SessionCommand,
    },
    /// Compute instances on a flowrt server: named, long-lived, assigned to one user.
    Compute {
        #[command(flatten)]
        server: ServerOpt,
        #[command(subcommand)]
        command: commands::compute::ComputeCommand,
    },
    /// Endpoints: a named, authenticated scoring URL (`/endpoints/NAME/score`) on a flowrt
    /// server, with the flow versions deployed behind it, their traffic and their requests.
    Endpoint {
        #[command(flatten)]
        server: ServerOpt,
        #[command(subcommand)]
        command: commands::endpoint::EndpointCommand,
    },
    /// Deployments: a flow version behind an endpoint, served by sealed sessions the server
    /// keeps running (replaced when they die, rolled over to a new version without downtime).
    Deployment {
        #[command(flatten)]
        server: ServerOpt,
        #[command(subcommand)]
        command: commands::deployment::DeploymentCommand,
    },
    /// Identities sessions may act as (a private package feed's token).
    Identity {
        #[command(flatten)]
        server: ServerOpt,
        #[command(subcommand)]
        command: commands::identity::IdentityCommand,
    },
    /// Users and service principals of a flowrt server (admins).
    User {
        #[command(flatten)]
        server: ServerOpt,
        #[command(subcommand)]
        command: commands::team::UserCommand,
    },
    /// API tokens: create (shown once), list, revoke.
    Token {
        #[command(flatten)]
        server: ServerOpt,
        #[command(subcommand)]
        command: commands::team::TokenCommand,
    },
    /// Role assignments: who may do what (owners and access admins assign).
    Role {
        #[command(flatten)]
        server: ServerOpt,
        #[command(subcommand)]
        command: commands::team::RoleCommand,
    },
    /// The audit log of every state-changing request (owners and admins).
    Audit {
        #[command(flatten)]
        server: ServerOpt,
        #[command(subcommand)]
        command: commands::team::AuditCommand,
    },
    /// Run as a compute session's agent (started by `flowrt server`, not by hand).
    #[command(hide = true)]
    Agent(commands::agent::AgentArgs),
    /// Run a program sealed (Landlock) to the given folders: how a server runs a session's
    /// package installs, whose build scripts are its user's code.
    #[command(hide = true)]
    SealExec(commands::agent::SealExecArgs),
}
