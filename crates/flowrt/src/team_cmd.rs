//! `flowrt user`, `flowrt token`, `flowrt role` and `flowrt audit`: who may use a server and
//! what they did. Everything goes through the server's API; tokens are printed once, on stdout,
//! and never again.

use crate::remote::Remote;
use anyhow::{anyhow, Result};
use clap::Subcommand;
use flowrt_api::workspace::Role;
use serde_json::Value;

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

use crate::session_cmd::to_body;

fn parse_role(text: &str) -> Result<Role> {
    Role::parse(text).ok_or_else(|| {
        anyhow!("unknown role '{text}'; roles are admin, user, viewer and access-admin (`flowrt role list` says what each may do)")
    })
}

fn block<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn remote(server: Option<&str>) -> Result<Remote> {
    Remote::from_env(server, &flowrt_store::flowrt_home())
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Unix milliseconds as `2026-12-01 10:20:33` (UTC).
fn when(ms: &Value) -> String {
    ms.as_i64()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

fn roles(u: &Value) -> String {
    let mut all = vec![u["role"].as_str().unwrap_or("").to_string()];
    all.extend(
        u["extra_roles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string),
    );
    all.join(", ")
}

pub fn user(cmd: UserCommand, server: Option<&str>) -> Result<u8> {
    let remote = remote(server)?;
    block(async move {
        match cmd {
            UserCommand::Create {
                name,
                role,
                service,
            } => {
                let body = flowrt_api::requests::CreateUser {
                    name: name.clone(),
                    role: parse_role(&role)?,
                    service,
                };
                let v = remote
                    .call("POST", "/api/v1/users", Some(to_body(&body)?))
                    .await?;
                eprintln!(
                    "created {} '{name}' ({role}); its token, shown once:",
                    if service { "service principal" } else { "user" }
                );
                println!("{}", v["token"].as_str().unwrap_or(""));
            }
            UserCommand::List { json } => {
                let all = remote.call("GET", "/api/v1/users", None).await?;
                if json {
                    return print_json(&all).map(|_| 0);
                }
                let mut t = crate::fmt::table(&["NAME", "ROLES", "KIND", "STATE", "CREATED"], &[]);
                for u in all.as_array().into_iter().flatten() {
                    t.add_row(vec![
                        u["name"].as_str().unwrap_or("").to_string(),
                        roles(u),
                        if u["service"] == true {
                            "service"
                        } else {
                            "person"
                        }
                        .into(),
                        if u["disabled"] == true {
                            "disabled"
                        } else {
                            "active"
                        }
                        .into(),
                        when(&u["created"]),
                    ]);
                }
                crate::fmt::print_table(&t);
            }
            UserCommand::Disable { name } => {
                remote
                    .call("POST", &format!("/api/v1/users/{name}/disable"), None)
                    .await?;
                eprintln!("disabled {name}: its tokens are refused from now on");
            }
            UserCommand::Enable { name } => {
                remote
                    .call("POST", &format!("/api/v1/users/{name}/enable"), None)
                    .await?;
                eprintln!("enabled {name}");
            }
        }
        Ok(0)
    })
}

pub fn token(cmd: TokenCommand, server: Option<&str>) -> Result<u8> {
    let remote = remote(server)?;
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
                let body = flowrt_api::requests::CreateToken {
                    for_user,
                    expires_in_s,
                };
                let v = remote
                    .call("POST", "/api/v1/tokens", Some(to_body(&body)?))
                    .await?;
                let until = match v["expires"].as_i64() {
                    Some(_) => format!("until {} UTC", when(&v["expires"])),
                    None => "until revoked".into(),
                };
                eprintln!(
                    "token {} for {} ({until}), shown once:",
                    v["id"].as_str().unwrap_or(""),
                    v["user"].as_str().unwrap_or("")
                );
                println!("{}", v["token"].as_str().unwrap_or(""));
            }
            TokenCommand::List { json } => {
                let all = remote.call("GET", "/api/v1/tokens", None).await?;
                if json {
                    return print_json(&all).map(|_| 0);
                }
                let mut t = crate::fmt::table(&["ID", "USER", "CREATED", "EXPIRES", "STATE"], &[]);
                let now = jiff::Timestamp::now().as_millisecond();
                for k in all.as_array().into_iter().flatten() {
                    let state = if !k["revoked"].is_null() {
                        "revoked"
                    } else if k["expires"].as_i64().is_some_and(|e| e <= now) {
                        "expired"
                    } else {
                        "live"
                    };
                    t.add_row(vec![
                        k["id"].as_str().unwrap_or("").to_string(),
                        k["user"].as_str().unwrap_or("").to_string(),
                        when(&k["created"]),
                        when(&k["expires"]),
                        state.to_string(),
                    ]);
                }
                crate::fmt::print_table(&t);
            }
            TokenCommand::Revoke { id } => {
                remote
                    .call("DELETE", &format!("/api/v1/tokens/{id}"), None)
                    .await?;
                eprintln!("revoked {id}");
            }
        }
        Ok(0)
    })
}

pub fn role(cmd: RoleCommand, server: Option<&str>) -> Result<u8> {
    let remote = remote(server)?;
    block(async move {
        match cmd {
            RoleCommand::Assign { user, role } => {
                let u = remote
                    .call(
                        "POST",
                        &format!("/api/v1/users/{user}/roles"),
                        Some(to_body(&flowrt_api::requests::AssignRole {
                            role: parse_role(&role)?,
                        })?),
                    )
                    .await?;
                eprintln!("{user}: {}", roles(&u));
            }
            RoleCommand::Remove { user, role } => {
                let u = remote
                    .call(
                        "DELETE",
                        &format!("/api/v1/users/{user}/roles/{role}"),
                        None,
                    )
                    .await?;
                eprintln!("{user}: {}", roles(&u));
            }
            RoleCommand::List { json } => {
                let all = remote.call("GET", "/api/v1/users", None).await?;
                if json {
                    return print_json(&all).map(|_| 0);
                }
                let mut t = crate::fmt::table(&["USER", "ROLES"], &[]);
                for u in all.as_array().into_iter().flatten() {
                    t.add_row(vec![u["name"].as_str().unwrap_or("").to_string(), roles(u)]);
                }
                crate::fmt::print_table(&t);
                println!();
                let mut p = crate::fmt::table(&["ROLE", "PERMISSIONS"], &[]);
                for r in flowrt_api::workspace::Role::ALL {
                    let perms: Vec<&str> = r
                        .permissions()
                        .iter()
                        .filter(|p| **p != flowrt_api::workspace::Permission::Public)
                        .map(|p| p.as_str())
                        .collect();
                    p.add_row(vec![r.as_str().to_string(), perms.join(", ")]);
                }
                crate::fmt::print_table(&p);
            }
        }
        Ok(0)
    })
}

pub fn audit(cmd: AuditCommand, server: Option<&str>) -> Result<u8> {
    let remote = remote(server)?;
    block(async move {
        let AuditCommand::List { limit, json } = cmd;
        let all = remote
            .call("GET", &format!("/api/v1/audit?limit={limit}"), None)
            .await?;
        if json {
            return print_json(&all).map(|_| 0);
        }
        let mut t = crate::fmt::table(&["WHEN (UTC)", "USER", "REQUEST", "STATUS"], &["STATUS"]);
        for e in all.as_array().into_iter().flatten() {
            t.add_row(vec![
                when(&e["at"]),
                e["user"].as_str().unwrap_or("-").to_string(),
                format!(
                    "{} {}",
                    e["method"].as_str().unwrap_or(""),
                    e["path"].as_str().unwrap_or("")
                ),
                e["status"].to_string(),
            ]);
        }
        crate::fmt::print_table(&t);
        Ok(0)
    })
}
