//! `flowrt env`: list the base environments compiled into this binary and the custom environments
//! published in the store, publish a custom environment (`NAME@vN`), and garbage-collect cached
//! environment folders.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use flowrt_python::{EnvRef, BASE_ENVS, DEFAULT_ENV};
use serde_json::json;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum EnvCommand {
    /// List base environments (the latest marked) and published custom environments.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Publish a custom environment NAME@vN from a requirements file, for sessions to use.
    ///
    /// Example: flowrt env create myenv --requirements requirements.txt --from default@1.1.0
    Create {
        /// The environment's name (letters, digits, `_`, `-`, `.`).
        name: String,
        /// Its requirements file (may carry -i / --extra-index-url, with `{private}`).
        #[arg(long, short)]
        requirements: PathBuf,
        /// The base environment it builds on: `default` (the latest) or `default@VERSION`.
        #[arg(long, default_value = DEFAULT_ENV)]
        from: String,
    },
    /// Remove cached environment folders, least recently used first.
    Gc {
        /// How many environments to keep (0 removes every one not in use).
        #[arg(long, default_value_t = 5, value_parser = parse_keep)]
        keep: usize,
    },
}

/// `--keep` is a count; clap's own message for `--keep all` ("invalid digit found in string")
/// does not say what the option wants.
fn parse_keep(text: &str) -> std::result::Result<usize, String> {
    text.parse().map_err(|_| {
        "expected how many environments to keep, a whole number such as 5 (0 keeps none)"
            .to_string()
    })
}

pub fn run(cmd: EnvCommand) -> Result<u8> {
    let home = flowrt_store::flowrt_home();
    match cmd {
        EnvCommand::List { json } => {
            let custom = block_on(async {
                let store = flowrt_store::Store::open(&home).await?;
                let all = store.list_environments().await?;
                store.close().await;
                anyhow::Ok(all)
            })?;
            let latest = flowrt_python::latest_base().version;
            if json {
                let base: Vec<_> = BASE_ENVS
                    .iter()
                    .map(|b| {
                        json!({
                            "ref": format!("{DEFAULT_ENV}@{}", b.version),
                            "version": b.version,
                            "latest": b.version == latest,
                            "python": b.python,
                            "worker_protocol": b.worker_protocol,
                            "builtin_tools": b.builtin_tools,
                            "packages": b.packages,
                            "pins": b.pin_lines().collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                let custom: Vec<_> = custom
                    .iter()
                    .map(|e| {
                        json!({
                            "ref": e.reference(),
                            "name": e.name,
                            "version": e.version,
                            "base_version": e.base_version,
                            "requirements": e.requirements,
                            "created": e.created,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"base": base, "custom": custom}))?
                );
            } else {
                for b in BASE_ENVS {
                    let mark = if b.version == latest { " (latest)" } else { "" };
                    let packages = if b.packages.is_empty() {
                        "no packages".to_string()
                    } else {
                        format!(
                            "packages: {} ({} pins with their dependencies)",
                            b.packages.join(", "),
                            b.pin_lines().count()
                        )
                    };
                    println!(
                        "{DEFAULT_ENV}@{}{mark}  python {}; {packages}",
                        b.version, b.python
                    );
                }
                for e in &custom {
                    println!("{} (base {})", e.reference(), e.base_version);
                }
            }
            Ok(0)
        }
        EnvCommand::Create {
            name,
            requirements,
            from,
        } => {
            if name == DEFAULT_ENV || !flowrt_python::valid_env_name(&name) {
                bail!(
                    "invalid environment name `{name}`\nhint: use letters, digits, `_`, `-` and `.`, starting with a letter or digit; `{DEFAULT_ENV}` names the base environments"
                );
            }
            let base_version = match EnvRef::parse(&from)? {
                EnvRef::Base { version: None } => flowrt_python::latest_base().version.to_string(),
                EnvRef::Base { version: Some(v) } => v,
                EnvRef::Custom { .. } => bail!(
                    "--from takes a base environment (`{DEFAULT_ENV}` or `{DEFAULT_ENV}@VERSION`), not `{from}`\nhint: `flowrt env list` shows the base environments"
                ),
            };
            let text = fs_err::read_to_string(&requirements)
                .with_context(|| "cannot read the environment's requirements".to_string())?;
            let version = block_on(async {
                let store = flowrt_store::Store::open(&home).await?;
                let v = store
                    .publish_environment(&name, None, &base_version, &text)
                    .await?;
                store.close().await;
                anyhow::Ok(v)
            })?;
            println!("{name}@v{version}");
            Ok(0)
        }
        EnvCommand::Gc { keep } => {
            let removed = flowrt_python::gc(&home, keep)?;
            for key in &removed {
                println!("{key}");
            }
            eprintln!(
                "removed {} environment(s), kept up to {keep}",
                removed.len()
            );
            Ok(0)
        }
    }
}

fn block_on<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(fut)
}
