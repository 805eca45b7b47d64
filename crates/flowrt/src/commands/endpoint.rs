//! `flowrt endpoint ...`: a named, authenticated scoring URL on a flowrt server
//! (`/endpoints/NAME/score`), its keys, its traffic split over its deployments (`deployment`),
//! and its requests: listed, traced, summed up.

use super::deployment::print_deployments;
use super::endpoint_requests::{requests, stats, trace};
use super::score;
use crate::client::{block, Remote};
use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use flowrt_api::endpoints::*;
use indexmap::IndexMap;

#[derive(Subcommand)]
pub enum EndpointCommand {
    /// Create an endpoint: a scoring URL (`/endpoints/NAME/score`) with two keys, printed
    /// once. Deploy flow versions behind it with `flowrt deployment create NAME/DEPLOYMENT`.
    Create {
        name: String,
        /// Days each request's record (and trace) is kept.
        #[arg(long, value_name = "DAYS")]
        retention_days: Option<u32>,
        /// Print JSON (with the keys) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// List endpoints with their deployments and traffic.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show an endpoint: its scoring URL, traffic and deployments.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Change the traffic split (`--traffic blue=90,green=10`) or the retention.
    Update {
        name: String,
        /// DEPLOYMENT=PERCENT pairs adding up to 100.
        #[arg(long, value_name = "D=P,...")]
        traffic: Option<String>,
        #[arg(long, value_name = "DAYS")]
        retention_days: Option<u32>,
    },
    /// Replace one of the endpoint's keys; the new key is printed once, the old one stops
    /// working at once (rotate one key while callers use the other).
    Keys {
        name: String,
        /// `primary` or `secondary`.
        #[arg(long, value_name = "KEY")]
        regenerate: String,
    },
    /// Delete an endpoint, its deployments (their instances stop) and its records.
    Delete { name: String },
    /// Score the endpoint once: the flow's inputs in, its outputs out.
    Score(score::ScoreArgs),
    /// The endpoint's requests, newest first.
    Requests {
        name: String,
        #[arg(long)]
        deployment: Option<String>,
        /// `ok`, `error` or `all`.
        #[arg(long, default_value = "all")]
        status: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// One request with its trace: inputs, outputs, each node's latency and tokens.
    Trace {
        name: String,
        /// The request's id (`x-request-id` of its answer; `endpoint requests` lists them).
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Requests/s, errors, p50/p99 latency and tokens over the last minutes.
    Stats {
        name: String,
        #[arg(long, default_value_t = 60)]
        minutes: u64,
        #[arg(long)]
        deployment: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// Each `endpoint` command.
pub fn run(cmd: EndpointCommand, server: Option<&str>) -> Result<u8> {
    let remote = Remote::for_server(server)?;
    block(async move {
        match cmd {
            EndpointCommand::Create {
                name,
                retention_days,
                json,
            } => {
                create(
                    &remote,
                    CreateEndpoint {
                        name,
                        retention_days,
                    },
                    json,
                )
                .await?
            }
            EndpointCommand::List { json } => list(&remote, json).await?,
            EndpointCommand::Show { name, json } => {
                let e: EndpointView = remote.get(&endpoint_path(&name)).await?;
                if json {
                    print_json(&e)?;
                } else {
                    print_endpoint(&e, remote.base());
                }
            }
            EndpointCommand::Update {
                name,
                traffic,
                retention_days,
            } => {
                if traffic.is_none() && retention_days.is_none() {
                    bail!("nothing to change: give --traffic D=P,... or --retention-days N");
                }
                let body = UpdateEndpoint {
                    traffic: traffic.as_deref().map(parse_traffic).transpose()?,
                    retention_days,
                };
                let e: EndpointView = remote.patch(&endpoint_path(&name), &body).await?;
                eprintln!("endpoint {}: traffic {}", e.name, traffic_text(&e.traffic));
            }
            EndpointCommand::Keys { name, regenerate } => {
                regenerate_key(&remote, &name, regenerate).await?
            }
            EndpointCommand::Delete { name } => {
                remote.delete(&endpoint_path(&name)).await?;
                eprintln!("endpoint {name} deleted; its instances stop");
            }
            EndpointCommand::Score(args) => return score::run(&remote, args).await,
            EndpointCommand::Requests {
                name,
                deployment,
                status,
                limit,
                json,
            } => {
                let mut path = format!(
                    "{}/requests?status={status}&limit={limit}",
                    endpoint_path(&name)
                );
                if let Some(d) = &deployment {
                    path.push_str(&format!("&deployment={d}"));
                }
                requests(&remote, &path, json).await?
            }
            EndpointCommand::Trace { name, id, json } => trace(&remote, &name, &id, json).await?,
            EndpointCommand::Stats {
                name,
                minutes,
                deployment,
                json,
            } => stats(&remote, &name, minutes, deployment, json).await?,
        }
        Ok(0)
    })
}

/// The API path of endpoint `name`.
pub fn endpoint_path(name: &str) -> String {
    format!("/api/v1/endpoints/{name}")
}

/// `endpoint create`: the endpoint, and its two keys shown this once.
async fn create(remote: &Remote, body: CreateEndpoint, json: bool) -> Result<()> {
    let made: CreatedEndpoint = remote.post("/api/v1/endpoints", &body).await?;
    if json {
        return print_json(&made);
    }
    let e = &made.endpoint;
    println!(
        "endpoint {} created: {}{}",
        e.name,
        remote.base(),
        e.scoring_uri
    );
    println!(
        "primary key:   {}",
        made.keys.primary.as_deref().unwrap_or("")
    );
    println!(
        "secondary key: {}",
        made.keys.secondary.as_deref().unwrap_or("")
    );
    eprintln!(
        "the keys are shown this once; keep them in a secret store (only their hashes are kept)"
    );
    eprintln!(
        "next: flowrt deployment create {}/blue --flow FLOW@vN",
        e.name
    );
    Ok(())
}

/// `endpoint list`: a table, or JSON for scripts.
async fn list(remote: &Remote, json: bool) -> Result<()> {
    let all: Vec<EndpointView> = remote.get("/api/v1/endpoints").await?;
    if json {
        return print_json(&all);
    }
    let mut t = crate::fmt::table(
        &["ENDPOINT", "OWNER", "TRAFFIC", "DEPLOYMENTS", "SCORING URI"],
        &["DEPLOYMENTS"],
    );
    for e in &all {
        t.add_row(vec![
            e.name.clone(),
            e.owner.clone(),
            traffic_text(&e.traffic),
            e.deployments.len().to_string(),
            format!("{}{}", remote.base(), e.scoring_uri),
        ]);
    }
    crate::fmt::print_table(&t);
    Ok(())
}

/// `endpoint keys --regenerate primary|secondary`: the new key, shown this once.
async fn regenerate_key(remote: &Remote, name: &str, key: String) -> Result<()> {
    let keys: EndpointKeys = remote
        .post(
            &format!("{}/keys", endpoint_path(name)),
            &RegenerateKey { key },
        )
        .await?;
    if let Some(k) = keys.primary {
        println!("primary key:   {k}");
    }
    if let Some(k) = keys.secondary {
        println!("secondary key: {k}");
    }
    eprintln!("the old key no longer opens endpoint {name}; the new one is shown this once");
    Ok(())
}

/// `blue=90,green=10`.
pub fn parse_traffic(text: &str) -> Result<IndexMap<String, u32>> {
    let mut out = IndexMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, percent) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--traffic {text}: '{pair}' is not DEPLOYMENT=PERCENT"))?;
        let percent: u32 = percent.trim().parse().map_err(|_| {
            anyhow!("--traffic {text}: '{percent}' is not a whole percent (0 to 100)")
        })?;
        if out.insert(name.trim().to_string(), percent).is_some() {
            bail!("--traffic {text}: '{name}' is named twice");
        }
    }
    Ok(out)
}

/// A traffic split for people: `blue=90%, green=10%`.
fn traffic_text(t: &IndexMap<String, u32>) -> String {
    if t.is_empty() {
        return "-".into();
    }
    t.iter()
        .map(|(d, p)| format!("{d}={p}%"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A response as indented JSON, for scripts.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// An endpoint for people: its URL, traffic, retention and deployments.
fn print_endpoint(e: &EndpointView, base: &str) {
    println!("endpoint   {}", e.name);
    println!("owner      {}", e.owner);
    println!("scoring    {base}{}", e.scoring_uri);
    println!("traffic    {}", traffic_text(&e.traffic));
    println!("retention  {} days", e.retention_days);
    if !e.deployments.is_empty() {
        println!();
        print_deployments(&e.deployments);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_pairs_parse_and_bad_ones_say_why() {
        let t = parse_traffic("blue=90, green=10").unwrap();
        assert_eq!(t["blue"], 90);
        assert_eq!(t["green"], 10);
        assert!(parse_traffic("blue")
            .unwrap_err()
            .to_string()
            .contains("not DEPLOYMENT=PERCENT"));
        assert!(parse_traffic("blue=x").is_err());
        assert!(parse_traffic("blue=50,blue=50").is_err());
    }
}
