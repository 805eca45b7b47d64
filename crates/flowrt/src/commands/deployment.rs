//! `flowrt deployment ...`: a flow version behind an endpoint, served by sealed sessions the
//! server keeps running (replaced when they die, scaled between --min and --max, rolled over to
//! a new version without downtime).

use super::endpoint::print_json;
use crate::client::{block, Remote};
use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use flowrt_api::endpoints::*;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct DeploymentSettings {
    /// How many instances (sealed sessions) serve it.
    #[arg(long)]
    instances: Option<u32>,
    /// With --max: the count follows the load between the two.
    #[arg(long = "min", value_name = "N")]
    min_instances: Option<u32>,
    #[arg(long = "max", value_name = "N")]
    max_instances: Option<u32>,
    /// Concurrent requests an instance carries before the deployment grows (default 8).
    #[arg(long, value_name = "N")]
    target_concurrency: Option<u32>,
    /// Share of requests whose trace is kept, 0 to 1 (default 1; every request is counted).
    #[arg(long, value_name = "SHARE")]
    sample_rate: Option<f64>,
    /// Keep traces without the requests' inputs and outputs.
    #[arg(long)]
    redact_payloads: bool,
    /// Answer at once instead of waiting until every instance serves.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Subcommand)]
pub enum DeploymentCommand {
    /// Deploy a flow version behind an endpoint; waits until its instances serve. The
    /// endpoint's first deployment takes all its traffic.
    Create {
        /// ENDPOINT/DEPLOYMENT, like support/blue.
        target: String,
        /// The workspace flow version: NAME@vN (`flowrt flow list`).
        #[arg(long)]
        flow: String,
        /// small, medium or large: each instance's size.
        #[arg(long, default_value = "small")]
        size: String,
        #[command(flatten)]
        settings: DeploymentSettings,
    },
    /// List an endpoint's deployments.
    List {
        endpoint: String,
        #[arg(long)]
        json: bool,
    },
    /// Show a deployment and its instances.
    Show {
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a deployment: `--flow NAME@vN` moves it to another version without downtime (new
    /// instances serve before the old ones drain); or its count, range or sampling.
    Update {
        target: String,
        #[arg(long)]
        flow: Option<String>,
        #[command(flatten)]
        settings: DeploymentSettings,
        /// Keep payloads in traces again (after --redact-payloads).
        #[arg(long, conflicts_with = "redact_payloads")]
        keep_payloads: bool,
    },
    /// Delete a deployment; its instances drain and stop. Move its traffic first.
    Delete { target: String },
}

/// Each `deployment` command.
pub fn run(cmd: DeploymentCommand, server: Option<&str>) -> Result<u8> {
    let remote = Remote::for_server(server)?;
    block(async move {
        match cmd {
            DeploymentCommand::Create {
                target,
                flow,
                size,
                settings,
            } => create(&remote, &target, flow, &size, settings).await?,
            DeploymentCommand::List { endpoint, json } => {
                let list: Vec<DeploymentView> = remote
                    .get(&format!("/api/v1/endpoints/{endpoint}/deployments"))
                    .await?;
                if json {
                    print_json(&list)?;
                } else {
                    print_deployments(&list);
                }
            }
            DeploymentCommand::Show { target, json } => {
                let (endpoint, name) = split_target(&target)?;
                let d: DeploymentView = remote.get(&deployment_path(&endpoint, &name)).await?;
                if json {
                    print_json(&d)?;
                } else {
                    print_deployment(&d);
                }
            }
            DeploymentCommand::Update {
                target,
                flow,
                settings,
                keep_payloads,
            } => update(&remote, &target, flow, settings, keep_payloads).await?,
            DeploymentCommand::Delete { target } => {
                let (endpoint, name) = split_target(&target)?;
                remote.delete(&deployment_path(&endpoint, &name)).await?;
                eprintln!("deployment {endpoint}/{name} deleted; its instances drain and stop");
            }
        }
        Ok(0)
    })
}

/// The API path of deployment `name` of `endpoint`.
fn deployment_path(endpoint: &str, name: &str) -> String {
    format!("/api/v1/endpoints/{endpoint}/deployments/{name}")
}

/// `deployment create`: deploy, then (unless --no-wait) wait until every instance serves.
async fn create(
    remote: &Remote,
    target: &str,
    flow: String,
    size: &str,
    settings: DeploymentSettings,
) -> Result<()> {
    let (endpoint, name) = split_target(target)?;
    let size = flowrt_api::SessionSize::parse(size)
        .ok_or_else(|| anyhow!("--size {size}: give small, medium or large"))?;
    let body = CreateDeployment {
        name: name.clone(),
        flow,
        instances: settings.instances,
        size,
        min_instances: settings.min_instances,
        max_instances: settings.max_instances,
        target_concurrency: settings.target_concurrency,
        sample_rate: settings.sample_rate,
        redact_payloads: settings.redact_payloads,
    };
    let d: DeploymentView = remote
        .post(&format!("/api/v1/endpoints/{endpoint}/deployments"), &body)
        .await?;
    eprintln!(
        "deploying {} as {endpoint}/{name} on {} instance(s)",
        d.flow, d.instances
    );
    if !settings.no_wait {
        let d = wait_ready(remote, &endpoint, &name).await?;
        eprintln!(
            "deployment {endpoint}/{name} serves {} ({}% of the endpoint's traffic)",
            d.flow, d.traffic
        );
    }
    Ok(())
}

/// `deployment update`: another flow version (rolled over without downtime), instances,
/// sampling or redaction.
async fn update(
    remote: &Remote,
    target: &str,
    flow: Option<String>,
    settings: DeploymentSettings,
    keep_payloads: bool,
) -> Result<()> {
    let (endpoint, name) = split_target(target)?;
    let redact = if settings.redact_payloads {
        Some(true)
    } else if keep_payloads {
        Some(false)
    } else {
        None
    };
    let body = UpdateDeployment {
        flow,
        instances: settings.instances,
        min_instances: settings.min_instances,
        max_instances: settings.max_instances,
        target_concurrency: settings.target_concurrency,
        sample_rate: settings.sample_rate,
        redact_payloads: redact,
    };
    if body == UpdateDeployment::default() {
        bail!("nothing to change: give --flow, --instances, --min/--max, --sample-rate or --redact-payloads");
    }
    let d: DeploymentView = remote
        .patch(&deployment_path(&endpoint, &name), &body)
        .await?;
    eprintln!(
        "deployment {endpoint}/{name}: {} on {} instance(s), revision {}",
        d.flow, d.instances, d.revision
    );
    if !settings.no_wait {
        wait_ready(remote, &endpoint, &name).await?;
        eprintln!("deployment {endpoint}/{name} serves {}", d.flow);
    }
    Ok(())
}

/// A deployment for people: its row, its problem, and its instances.
fn print_deployment(d: &DeploymentView) {
    print_deployments(std::slice::from_ref(d));
    if let Some(p) = &d.problem {
        println!("\nproblem: {p}");
    }
    println!();
    let mut t = crate::fmt::table(
        &[
            "SESSION",
            "REVISION",
            "SLOT",
            "STATUS",
            "SERVING",
            "IN FLIGHT",
        ],
        &["REVISION", "SLOT", "IN FLIGHT"],
    );
    for r in &d.replicas {
        t.add_row(vec![
            r.session_id.clone(),
            r.revision.to_string(),
            r.slot.to_string(),
            r.status.to_string(),
            if r.routed { "yes" } else { "no" }.to_string(),
            r.in_flight.to_string(),
        ]);
    }
    crate::fmt::print_table(&t);
}

/// Wait until the deployment serves with every instance, printing its progress.
async fn wait_ready(remote: &Remote, endpoint: &str, name: &str) -> Result<DeploymentView> {
    let started = Instant::now();
    let mut last = String::new();
    let mut last_problem = String::new();
    let mut failing_since: Option<Instant> = None;
    loop {
        let d: DeploymentView = remote.get(&deployment_path(endpoint, name)).await?;
        let now = format!("{} ({}/{} ready)", d.status, d.ready, d.instances);
        if now != last {
            eprintln!("deployment {endpoint}/{name}: {now}");
            last = now;
        }
        let current_ready = d
            .replicas
            .iter()
            .filter(|r| r.revision == d.revision && r.routed)
            .count() as u32;
        let old_left = d.replicas.iter().any(|r| r.revision < d.revision);
        if current_ready >= d.instances && !old_left {
            return Ok(d);
        }
        match &d.problem {
            Some(problem) => {
                if problem != &last_problem {
                    eprintln!("deployment {endpoint}/{name}: {problem}");
                    last_problem = problem.clone();
                }
                let since = *failing_since.get_or_insert_with(Instant::now);
                if d.ready == 0 && since.elapsed() > Duration::from_secs(60) {
                    bail!("deployment {endpoint}/{name} cannot start: {problem}\nhint: fix the flow and `flowrt deployment update {endpoint}/{name} --flow NAME@vN`, or delete it; the server keeps trying meanwhile");
                }
            }
            None => failing_since = None,
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!("deployment {endpoint}/{name} is not ready after 15 minutes; `flowrt deployment show {endpoint}/{name}` follows it");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `ENDPOINT/DEPLOYMENT`, checked.
fn split_target(target: &str) -> Result<(String, String)> {
    match target.split_once('/') {
        Some((e, d)) if !e.is_empty() && !d.is_empty() && !d.contains('/') => {
            Ok((e.to_string(), d.to_string()))
        }
        _ => bail!("'{target}' is not ENDPOINT/DEPLOYMENT (like support/blue)"),
    }
}

/// Deployments as a table: flow, status, instances ready, traffic, sampling.
pub fn print_deployments(list: &[DeploymentView]) {
    let mut t = crate::fmt::table(
        &[
            "DEPLOYMENT",
            "FLOW",
            "STATUS",
            "READY",
            "INSTANCES",
            "TRAFFIC",
            "SAMPLE",
        ],
        &["READY", "INSTANCES", "TRAFFIC"],
    );
    for d in list {
        let range = if d.max_instances > d.min_instances {
            format!("{} ({}-{})", d.instances, d.min_instances, d.max_instances)
        } else {
            d.instances.to_string()
        };
        t.add_row(vec![
            format!("{}/{}", d.endpoint, d.name),
            d.flow.clone(),
            d.status.clone(),
            d.ready.to_string(),
            range,
            format!("{}%", d.traffic),
            format!(
                "{}{}",
                d.sample_rate,
                if d.redact_payloads { " redacted" } else { "" }
            ),
        ]);
    }
    crate::fmt::print_table(&t);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_endpoint_slash_deployment() {
        assert!(split_target("support/blue").is_ok());
        assert!(split_target("support").is_err());
        assert!(split_target("a/b/c").is_err());
    }
}
