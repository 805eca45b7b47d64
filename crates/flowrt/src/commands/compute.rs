//! `flowrt compute ...`: compute instances on a server: named, long-lived, each assigned to one
//! user, whose sessions run on it.

use super::session::size_of;
use crate::client::{block, Ignored, Remote};
use anyhow::Result;
use clap::Subcommand;
use flowrt_api::requests::CreateCompute;
use flowrt_api::responses::ComputeView;

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

/// Each `compute` command.
pub fn run(cmd: ComputeCommand, server: Option<&str>) -> Result<u8> {
    let remote = Remote::for_server(server)?;
    block(async move {
        match cmd {
            ComputeCommand::Create { name, size, user } => {
                let body = CreateCompute {
                    name,
                    size: size_of(&size)?,
                    user,
                };
                let c: ComputeView = remote.post("/api/v1/computes", &body).await?;
                println!("{}", c.name);
            }
            ComputeCommand::List { json } => list(&remote, json).await?,
            ComputeCommand::Start { name } => {
                let _: Ignored = remote
                    .post_empty(&format!("/api/v1/computes/{name}/start"))
                    .await?;
            }
            ComputeCommand::Stop { name } => {
                let _: Ignored = remote
                    .post_empty(&format!("/api/v1/computes/{name}/stop"))
                    .await?;
            }
            ComputeCommand::Delete { name } => {
                remote.delete(&format!("/api/v1/computes/{name}")).await?;
            }
        }
        Ok(0)
    })
}

/// `compute list`: a table, or JSON for scripts.
async fn list(remote: &Remote, json: bool) -> Result<()> {
    let all: Vec<ComputeView> = remote.get("/api/v1/computes").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let mut t = crate::fmt::table(&["NAME", "STATUS", "SIZE", "OWNER"], &[]);
    for c in &all {
        t.add_row(vec![
            c.name.clone(),
            c.status.to_string(),
            c.size.as_str().to_string(),
            c.owner.clone(),
        ]);
    }
    crate::fmt::print_table(&t);
    Ok(())
}
