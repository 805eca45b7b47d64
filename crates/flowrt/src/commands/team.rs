//! `flowrt user`, `flowrt token`, `flowrt role` and `flowrt audit`: who may use a server and
//! what they did. Everything goes through the server's API; tokens are printed once, on stdout,
//! and never again.

use crate::client::{block, Remote};
use anyhow::{anyhow, Result};
use clap::Subcommand;
use flowrt_api::requests::{AssignRole, CreateToken, CreateUser};
use flowrt_api::responses::{AuditView, CreatedToken, CreatedUser, TokenView, UserView};
use flowrt_api::workspace::Role;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user (or a service principal) and print its first token, once.
    ///
    /// Example: flowrt user create ana --role user
    Create {
        /// Letters, digits, `_`, `-` and `.`, at most 64.
        name: String,
        /// admin, user (a data scientist: starts sessions and runs flows) or viewer (reads).
        #[arg(long, default_value = "user")]
        role: String,
        /// A service principal (a CI pipeline's identity) rather than a person.
        #[arg(long)]
        service: bool,
    },
    /// List users with their roles.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: every token of theirs gets 401 from the next request on.
    Disable { name: String },
    /// Enable a disabled user again.
    Enable { name: String },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an API token and print it, once (only its hash is kept).
    ///
    /// Example: flowrt token create --for ci-pipeline --expires 30d
    Create {
        /// The user or service principal it acts as (admins); default: you.
        #[arg(long = "for", value_name = "NAME")]
        for_user: Option<String>,
        /// How long it works: 90m, 12h, 30d (at most a year); default: until revoked.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List your tokens (admins: everyone's), never the tokens themselves.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (`t-...`, from `token list`): its next request gets 401.
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum RoleCommand {
    /// Give USER a role: admin, user or viewer replace its role; access-admin (grants roles,
    /// like Azure's User Access Administrator) is held besides it.
    Assign { user: String, role: String },
    /// Every user's roles, and what each role may do.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Take a role from USER (its own role falls back to viewer).
    Remove { user: String, role: String },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// The newest state-changing requests: when, who, what and how each ended (owners, admins).
    List {
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

fn parse_role(text: &str) -> Result<Role> {
    Role::parse(text).ok_or_else(|| {
        anyhow!("unknown role '{text}'; roles are admin, user, viewer and access-admin (`flowrt role list` says what each may do)")
    })
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Unix milliseconds as `2026-12-01 10:20:33` (UTC); `-` for none.
fn when(ms: Option<i64>) -> String {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A user's roles, its main one first: `user, access-admin`.
fn roles(u: &UserView) -> String {
    let mut all = vec![u.role.as_str()];
    all.extend(u.extra_roles.iter().map(|r| r.as_str()));
    all.join(", ")
}

/// Each `user` command.
pub fn user(cmd: UserCommand, server: Option<&str>) -> Result<u8> {
    let remote = Remote::for_server(server)?;
    block(async move {
        match cmd {
            UserCommand::Create {
                name,
                role,
                service,
            } => {
                let body = CreateUser {
                    name: name.clone(),
                    role: parse_role(&role)?,
                    service,
                };
                let created: CreatedUser = remote.post("/api/v1/users", &body).await?;
                eprintln!(
                    "created {} '{name}' ({role}); its token, shown once:",
                    if service { "service principal" } else { "user" }
                );
                println!("{}", created.token);
            }
            UserCommand::List { json } => list_users(&remote, json).await?,
            UserCommand::Disable { name } => {
                let _: UserView = remote
                    .post_empty(&format!("/api/v1/users/{name}/disable"))
                    .await?;
                eprintln!("disabled {name}: its tokens are refused from now on");
            }
            UserCommand::Enable { name } => {
                let _: UserView = remote
                    .post_empty(&format!("/api/v1/users/{name}/enable"))
                    .await?;
                eprintln!("enabled {name}");
            }
        }
        Ok(0)
    })
}

/// `user list`: a table, or JSON for scripts.
async fn list_users(remote: &Remote, json: bool) -> Result<()> {
    let all: Vec<UserView> = remote.get("/api/v1/users").await?;
    if json {
        return print_json(&all);
    }
    let mut t = crate::fmt::table(&["NAME", "ROLES", "KIND", "STATE", "CREATED"], &[]);
    for u in &all {
        t.add_row(vec![
            u.name.clone(),
            roles(u),
            if u.service { "service" } else { "person" }.into(),
            if u.disabled { "disabled" } else { "active" }.into(),
            when(Some(u.created)),
        ]);
    }
    crate::fmt::print_table(&t);
    Ok(())
}

/// Each `token` command.
pub fn token(cmd: TokenCommand, server: Option<&str>) -> Result<u8> {
    let remote = Remote::for_server(server)?;
    block(async move {
        match cmd {
            TokenCommand::Create { for_user, expires } => {
                let expires_in_s = match &expires {
                    Some(text) => Some(
                        flowrt_session::idle::parse_duration(text)
                            .map_err(|e| anyhow!("--expires {text}: {e}"))?
                            .as_secs(),
                    ),
                    None => None,
                };
                let body = CreateToken {
                    for_user,
                    expires_in_s,
                };
                let created: CreatedToken = remote.post("/api/v1/tokens", &body).await?;
                let k = &created.record;
                let until = match k.expires {
                    Some(e) => format!("until {} UTC", when(Some(e))),
                    None => "until revoked".into(),
                };
                eprintln!("token {} for {} ({until}), shown once:", k.id, k.user);
                println!("{}", created.token);
            }
            TokenCommand::List { json } => list_tokens(&remote, json).await?,
            TokenCommand::Revoke { id } => {
                remote.delete(&format!("/api/v1/tokens/{id}")).await?;
                eprintln!("revoked {id}");
            }
        }
        Ok(0)
    })
}

/// `token list`: a table with each token's state, or JSON for scripts.
async fn list_tokens(remote: &Remote, json: bool) -> Result<()> {
    let all: Vec<TokenView> = remote.get("/api/v1/tokens").await?;
    if json {
        return print_json(&all);
    }
    let mut t = crate::fmt::table(&["ID", "USER", "CREATED", "EXPIRES", "STATE"], &[]);
    let now = jiff::Timestamp::now().as_millisecond();
    for k in &all {
        let state = if k.revoked.is_some() {
            "revoked"
        } else if k.expires.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "live"
        };
        t.add_row(vec![
            k.id.clone(),
            k.user.clone(),
            when(Some(k.created)),
            when(k.expires),
            state.to_string(),
        ]);
    }
    crate::fmt::print_table(&t);
    Ok(())
}

/// Each `role` command.
pub fn role(cmd: RoleCommand, server: Option<&str>) -> Result<u8> {
    let remote = Remote::for_server(server)?;
    block(async move {
        match cmd {
            RoleCommand::Assign { user, role } => {
                let body = AssignRole {
                    role: parse_role(&role)?,
                };
                let u: UserView = remote
                    .post(&format!("/api/v1/users/{user}/roles"), &body)
                    .await?;
                eprintln!("{user}: {}", roles(&u));
            }
            RoleCommand::Remove { user, role } => {
                let u: UserView = remote
                    .delete_returning(&format!("/api/v1/users/{user}/roles/{role}"))
                    .await?;
                eprintln!("{user}: {}", roles(&u));
            }
            RoleCommand::List { json } => list_roles(&remote, json).await?,
        }
        Ok(0)
    })
}

/// `role list`: who holds which roles, and what each role may do.
async fn list_roles(remote: &Remote, json: bool) -> Result<()> {
    let all: Vec<UserView> = remote.get("/api/v1/users").await?;
    if json {
        return print_json(&all);
    }
    let mut t = crate::fmt::table(&["USER", "ROLES"], &[]);
    for u in &all {
        t.add_row(vec![u.name.clone(), roles(u)]);
    }
    crate::fmt::print_table(&t);
    println!();
    let mut p = crate::fmt::table(&["ROLE", "PERMISSIONS"], &[]);
    for r in Role::ALL {
        let perms: Vec<&str> = r
            .permissions()
            .iter()
            .filter(|p| **p != flowrt_api::workspace::Permission::Public)
            .map(|p| p.as_str())
            .collect();
        p.add_row(vec![r.as_str().to_string(), perms.join(", ")]);
    }
    crate::fmt::print_table(&p);
    Ok(())
}

/// `audit list`: the newest state-changing requests.
pub fn audit(cmd: AuditCommand, server: Option<&str>) -> Result<u8> {
    let remote = Remote::for_server(server)?;
    block(async move {
        let AuditCommand::List { limit, json } = cmd;
        let all: Vec<AuditView> = remote.get(&format!("/api/v1/audit?limit={limit}")).await?;
        if json {
            print_json(&all)?;
            return Ok(0);
        }
        let mut t = crate::fmt::table(&["WHEN (UTC)", "USER", "REQUEST", "STATUS"], &["STATUS"]);
        for e in &all {
            t.add_row(vec![
                when(Some(e.at)),
                e.user.clone().unwrap_or_else(|| "-".into()),
                format!("{} {}", e.method, e.path),
                e.status.to_string(),
            ]);
        }
        crate::fmt::print_table(&t);
        Ok(0)
    })
}
