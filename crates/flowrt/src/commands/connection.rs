//! `flowrt connection ...`: named credentials, on this machine (FLOWRT_HOME, secrets encrypted
//! at rest) or, with --workspace, in a server's workspace. Secrets are never printed.

use crate::client::{block, Remote};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use flowrt_api::requests::CreateConnection;
use flowrt_api::responses::ConnectionView;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum ConnectionCommand {
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
pub struct WorkspaceOpt {
    /// The server's workspace (--server, else FLOWRT_SERVER) instead of this machine.
    #[arg(long)]
    workspace: bool,
    /// The server's URL (with --workspace).
    #[arg(long, requires = "workspace")]
    server: Option<String>,
}

/// Each `connection` command, here or in the workspace.
pub fn run(cmd: ConnectionCommand) -> Result<u8> {
    let place = match &cmd {
        ConnectionCommand::Create { place, .. }
        | ConnectionCommand::List { place, .. }
        | ConnectionCommand::Show { place, .. }
        | ConnectionCommand::Delete { place, .. } => place,
    };
    if place.workspace {
        let server = place.server.clone();
        return in_workspace(cmd, server.as_deref());
    }
    on_this_machine(cmd)
}

/// A connection command on this machine's connections.
fn on_this_machine(cmd: ConnectionCommand) -> Result<u8> {
    let store = flowrt_store::ConnectionStore::open(&flowrt_store::flowrt_home())?;
    match cmd {
        ConnectionCommand::Create { file, .. } => {
            let (_, conn) = read_connection_file(&file)?;
            store.upsert(&conn)?;
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
                let mut t = crate::fmt::table(&["NAME", "TYPE"], &[]);
                for c in all {
                    t.add_row(vec![c.name.as_str(), c.kind.as_str()]);
                }
                crate::fmt::print_table(&t);
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

/// The connection YAML given with `--file`, read once and parsed (a bad one named with its path):
/// its text and the connection. A missing file is said as the option's, with what it takes.
fn read_connection_file(file: &Path) -> Result<(String, flowrt_api::Connection)> {
    let text = match fs_err::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "--file {}: no such file\nhint: --file takes a connection YAML (name, type, and the type's fields); `flowrt connection create --help` shows them",
            file.display()
        ),
        Err(e) => return Err(e).context("cannot read the connection file given with --file"),
    };
    let conn = flowrt_store::ConnectionStore::parse_yaml_text(&text, &file.to_string_lossy())?;
    Ok((text, conn))
}

/// A connection command against a server's workspace.
fn in_workspace(cmd: ConnectionCommand, server: Option<&str>) -> Result<u8> {
    let remote = Remote::for_server(server)?;
    block(async move {
        match cmd {
            ConnectionCommand::Create { file, shared, .. } => {
                // Parsed here first: a bad file is named with its path, and nothing is sent.
                let (yaml, _) = read_connection_file(&file)?;
                let created: ConnectionView = remote
                    .post("/api/v1/connections", &CreateConnection { yaml, shared })
                    .await?;
                println!("{}", serde_json::to_string_pretty(&created)?);
            }
            ConnectionCommand::List { json, .. } => {
                let all: Vec<ConnectionView> = remote.get("/api/v1/connections").await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&all)?);
                } else {
                    let mut t = crate::fmt::table(&["NAME", "TYPE", "OWNER", "SHARED"], &[]);
                    for c in &all {
                        let shared = if c.shared { "yes" } else { "no" };
                        t.add_row(vec![&c.name, &c.kind, &c.owner, shared]);
                    }
                    crate::fmt::print_table(&t);
                }
            }
            ConnectionCommand::Show { name, .. } => {
                let c: ConnectionView = remote.get(&connection_path(&name)).await?;
                println!("{}", serde_json::to_string_pretty(&c)?);
            }
            ConnectionCommand::Delete { name, .. } => {
                remote.delete(&connection_path(&name)).await?;
                eprintln!("deleted connection '{name}' from the workspace");
            }
        }
        Ok(0)
    })
}

/// The API path of connection `name`: promptflow's names may hold `/`, `?`, `#` or spaces, so
/// the name is one escaped path segment.
fn connection_path(name: &str) -> String {
    let segment = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("/api/v1/connections/{segment}")
}
