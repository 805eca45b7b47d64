//! `flowrt identity ...`: identities sessions may act as: a private package feed's token (sent
//! only to the hosts it names), a Microsoft Entra ID service principal; granted to other users.

use crate::client::{block, Remote};
use anyhow::{anyhow, Result};
use clap::Subcommand;
use flowrt_api::requests::{CreateIdentity, GrantIdentity};
use flowrt_api::responses::IdentityView;

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

/// Each `identity` command.
pub fn run(cmd: IdentityCommand, server: Option<&str>) -> Result<u8> {
    let remote = Remote::for_server(server)?;
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
                let feed_token = feed_token_env.as_deref().map(from_env).transpose()?;
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
                let body = CreateIdentity {
                    name,
                    feed_token,
                    feed_hosts,
                    entra,
                };
                let i: IdentityView = remote.post("/api/v1/identities", &body).await?;
                println!("{}", i.name);
            }
            IdentityCommand::Grant { name, user } => {
                let path = format!("/api/v1/identities/{name}/grants");
                let body = GrantIdentity { user: user.clone() };
                let _: IdentityView = remote.post(&path, &body).await?;
                eprintln!("{user} may now start sessions with --identity {name}");
            }
            IdentityCommand::List { json } => list(&remote, json).await?,
        }
        Ok(0)
    })
}

/// A secret read from the environment variable the user named (never from the command line,
/// which every process of the machine can read).
fn from_env(var: &str) -> Result<String> {
    std::env::var(var).map_err(|_| {
        anyhow!(
            "environment variable {var} is not set\nhint: export {var} with the secret first (it is read from there, not from the command line), then run this again"
        )
    })
}

/// `identity list`: a table (tokens masked), or JSON for scripts.
async fn list(remote: &Remote, json: bool) -> Result<()> {
    let all: Vec<IdentityView> = remote.get("/api/v1/identities").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let mut t = crate::fmt::table(
        &["NAME", "FEED TOKEN", "FEED HOSTS", "ENTRA CLIENT ID"],
        &[],
    );
    for i in &all {
        t.add_row(vec![
            i.name.as_str(),
            i.feed_token.as_deref().unwrap_or("-"),
            &i.feed_hosts.join(", "),
            i.entra_client_id.as_deref().unwrap_or("-"),
        ]);
    }
    crate::fmt::print_table(&t);
    Ok(())
}
