//! `flowrt endpoint …` and `flowrt deployment …`: a flow version served as a shared,
//! authenticated endpoint on a flowrt server, its traffic, its keys and its requests.

use crate::remote::Remote;
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use flowrt_api::endpoints::*;
use indexmap::IndexMap;
use serde_json::Value;
use std::time::{Duration, Instant};

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
    Score {
        name: String,
        /// The inputs as a JSON object.
        #[arg(long, value_name = "JSON", conflicts_with = "inputs_file")]
        inputs: Option<String>,
        /// A file holding the inputs as a JSON object.
        #[arg(long, value_name = "FILE")]
        inputs_file: Option<std::path::PathBuf>,
        /// Send to this deployment (the azureml-model-deployment header), not by traffic.
        #[arg(long)]
        deployment: Option<String>,
        /// The environment variable holding an endpoint key (default: FLOWRT_ENDPOINT_KEY,
        /// else your user token).
        #[arg(long, value_name = "VAR")]
        key_env: Option<String>,
        /// Stream the reply (server-sent events), printing pieces as they come.
        #[arg(long)]
        stream: bool,
    },
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

fn block<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
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

fn traffic_text(t: &IndexMap<String, u32>) -> String {
    if t.is_empty() {
        return "-".into();
    }
    t.iter()
        .map(|(d, p)| format!("{d}={p}%"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn print_deployments(list: &[DeploymentView]) {
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

fn server_base(server: Option<&str>) -> String {
    server
        .map(str::to_string)
        .or_else(|| {
            std::env::var("FLOWRT_SERVER")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| crate::remote::DEFAULT_SERVER.to_string())
        .trim_end_matches('/')
        .to_string()
}

pub fn endpoint(cmd: EndpointCommand, server: Option<&str>) -> Result<u8> {
    let remote = Remote::from_env(server, &flowrt_store::flowrt_home())?;
    let base = server_base(server);
    block(async move {
        match cmd {
            EndpointCommand::Create {
                name,
                retention_days,
                json,
            } => {
                let body = serde_json::to_value(CreateEndpoint {
                    name,
                    retention_days,
                })?;
                let made: CreatedEndpoint = remote
                    .typed("POST", "/api/v1/endpoints", Some(body))
                    .await?;
                if json {
                    return print_json(&made).map(|_| 0);
                }
                let e = &made.endpoint;
                println!("endpoint {} created: {base}{}", e.name, e.scoring_uri);
                println!(
                    "primary key:   {}",
                    made.keys.primary.as_deref().unwrap_or("")
                );
                println!(
                    "secondary key: {}",
                    made.keys.secondary.as_deref().unwrap_or("")
                );
                eprintln!("the keys are shown this once; keep them in a secret store (only their hashes are kept)");
                eprintln!(
                    "next: flowrt deployment create {}/blue --flow FLOW@vN",
                    e.name
                );
            }
            EndpointCommand::List { json } => {
                let all: Vec<EndpointView> = remote.typed("GET", "/api/v1/endpoints", None).await?;
                if json {
                    return print_json(&all).map(|_| 0);
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
                        format!("{base}{}", e.scoring_uri),
                    ]);
                }
                crate::fmt::print_table(&t);
            }
            EndpointCommand::Show { name, json } => {
                let e: EndpointView = remote
                    .typed("GET", &format!("/api/v1/endpoints/{name}"), None)
                    .await?;
                if json {
                    return print_json(&e).map(|_| 0);
                }
                print_endpoint(&e, &base);
            }
            EndpointCommand::Update {
                name,
                traffic,
                retention_days,
            } => {
                if traffic.is_none() && retention_days.is_none() {
                    bail!("nothing to change: give --traffic D=P,... or --retention-days N");
                }
                let body = serde_json::to_value(UpdateEndpoint {
                    traffic: traffic.as_deref().map(parse_traffic).transpose()?,
                    retention_days,
                })?;
                let e: EndpointView = remote
                    .typed("PATCH", &format!("/api/v1/endpoints/{name}"), Some(body))
                    .await?;
                eprintln!("endpoint {}: traffic {}", e.name, traffic_text(&e.traffic));
            }
            EndpointCommand::Keys { name, regenerate } => {
                let body = serde_json::to_value(RegenerateKey { key: regenerate })?;
                let keys: EndpointKeys = remote
                    .typed(
                        "POST",
                        &format!("/api/v1/endpoints/{name}/keys"),
                        Some(body),
                    )
                    .await?;
                if let Some(k) = keys.primary {
                    println!("primary key:   {k}");
                }
                if let Some(k) = keys.secondary {
                    println!("secondary key: {k}");
                }
                eprintln!(
                    "the old key no longer opens endpoint {name}; the new one is shown this once"
                );
            }
            EndpointCommand::Delete { name } => {
                remote
                    .call("DELETE", &format!("/api/v1/endpoints/{name}"), None)
                    .await?;
                eprintln!("endpoint {name} deleted; its instances stop");
            }
            EndpointCommand::Score {
                name,
                inputs,
                inputs_file,
                deployment,
                key_env,
                stream,
            } => {
                return score(
                    &remote,
                    &base,
                    &name,
                    inputs,
                    inputs_file,
                    deployment,
                    key_env,
                    stream,
                )
                .await;
            }
            EndpointCommand::Requests {
                name,
                deployment,
                status,
                limit,
                json,
            } => {
                let mut path =
                    format!("/api/v1/endpoints/{name}/requests?status={status}&limit={limit}");
                if let Some(d) = &deployment {
                    path.push_str(&format!("&deployment={d}"));
                }
                let list: Vec<ScoreRequestView> = remote.typed("GET", &path, None).await?;
                if json {
                    return print_json(&list).map(|_| 0);
                }
                let mut t = crate::fmt::table(
                    &[
                        "ID",
                        "STARTED",
                        "DEPLOYMENT",
                        "STATUS",
                        "LATENCY",
                        "TOKENS",
                        "ERROR",
                    ],
                    &["LATENCY", "TOKENS"],
                );
                for r in &list {
                    t.add_row(vec![
                        r.id.clone(),
                        ms_time(r.started),
                        r.deployment.clone(),
                        r.status.to_string(),
                        crate::fmt::seconds(r.latency_ms / 1000.0),
                        r.total_tokens.to_string(),
                        crate::fmt::clip(r.error.as_deref().unwrap_or(""), 60),
                    ]);
                }
                crate::fmt::print_table(&t);
            }
            EndpointCommand::Trace { name, id, json } => {
                let r: ScoreRequestDetail = remote
                    .typed(
                        "GET",
                        &format!("/api/v1/endpoints/{name}/requests/{id}"),
                        None,
                    )
                    .await?;
                if json {
                    return print_json(&r).map(|_| 0);
                }
                let q = &r.request;
                println!(
                    "request {} to {}/{} at {}: {} in {}",
                    q.id,
                    name,
                    q.deployment,
                    ms_time(q.started),
                    q.status,
                    crate::fmt::seconds(q.latency_ms / 1000.0)
                );
                if let Some(e) = &q.error {
                    println!("error: {e}");
                }
                if !q.sampled {
                    println!("(not sampled: its trace was not kept)");
                }
                if let Some(i) = &r.inputs {
                    println!("inputs:  {i}");
                }
                if let Some(o) = &r.outputs {
                    println!("outputs: {o}");
                }
                if !r.nodes.is_empty() {
                    let mut t = crate::fmt::table(
                        &["NODE", "STATUS", "LATENCY", "TOKENS"],
                        &["LATENCY", "TOKENS"],
                    );
                    for n in &r.nodes {
                        t.add_row(vec![
                            n.node.clone(),
                            n.status.clone(),
                            crate::fmt::seconds(n.duration_ms / 1000.0),
                            n.total_tokens.to_string(),
                        ]);
                    }
                    crate::fmt::print_table(&t);
                }
            }
            EndpointCommand::Stats {
                name,
                minutes,
                deployment,
                json,
            } => {
                let mut path = format!("/api/v1/endpoints/{name}/stats?minutes={minutes}");
                if let Some(d) = &deployment {
                    path.push_str(&format!("&deployment={d}"));
                }
                let s: EndpointStats = remote.typed("GET", &path, None).await?;
                if json {
                    return print_json(&s).map(|_| 0);
                }
                println!(
                    "last {minutes} min: {} requests ({:.1}/s), {} errors, p50 {}, p99 {}, {} tokens",
                    s.requests,
                    s.requests_per_s,
                    s.errors,
                    crate::fmt::seconds(s.p50_ms / 1000.0),
                    crate::fmt::seconds(s.p99_ms / 1000.0),
                    s.tokens
                );
            }
        }
        Ok(0)
    })
}

/// Unix ms as `2026-12-06 10:20:33` (UTC).
fn ms_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

#[allow(clippy::too_many_arguments)]
async fn score(
    remote: &Remote,
    base: &str,
    name: &str,
    inputs: Option<String>,
    inputs_file: Option<std::path::PathBuf>,
    deployment: Option<String>,
    key_env: Option<String>,
    stream: bool,
) -> Result<u8> {
    let text = match (inputs, inputs_file) {
        (Some(t), _) => t,
        (None, Some(f)) => {
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, None) => "{}".to_string(),
    };
    let body: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow!("the inputs are not JSON: {e}\nhint: give an object, like --inputs '{{\"question\": \"hi\"}}'"))?;
    if !body.is_object() {
        bail!(
            "the inputs must be a JSON object of the flow's inputs, like {{\"question\": \"hi\"}}"
        );
    }
    let var = key_env.unwrap_or_else(|| "FLOWRT_ENDPOINT_KEY".into());
    let key = std::env::var(&var).ok().filter(|k| !k.is_empty());
    let http = reqwest::Client::new();
    let mut req = http
        .post(format!("{base}/endpoints/{name}/score"))
        .json(&body);
    req = match &key {
        Some(k) => req.bearer_auth(k),
        None => req.bearer_auth(remote.token()),
    };
    if let Some(d) = &deployment {
        req = req.header("azureml-model-deployment", d);
    }
    if stream {
        req = req.header(reqwest::header::ACCEPT, "text/event-stream");
    }
    let resp = req
        .send()
        .await
        .map_err(|e| anyhow!("cannot reach {base}: {e}"))?;
    let status = resp.status();
    let served_by = resp
        .headers()
        .get("azureml-model-deployment")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let is_stream = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    if is_stream {
        use futures::StreamExt;
        use std::io::Write;
        let mut body = resp.bytes_stream();
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| anyhow!("the stream broke off: {e}"))?;
            std::io::stdout().write_all(&piece)?;
            std::io::stdout().flush()?;
        }
        return Ok(0);
    }
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = v["message"].as_str().unwrap_or(&text);
        bail!("endpoint {name} answered {status}: {message}");
    }
    println!("{text}");
    if let Some(d) = served_by {
        eprintln!("answered by deployment {d}");
    }
    Ok(0)
}

/// Wait until the deployment serves with every instance, printing its progress.
async fn wait_ready(remote: &Remote, endpoint: &str, name: &str) -> Result<DeploymentView> {
    let started = Instant::now();
    let mut last = String::new();
    let mut last_problem = String::new();
    let mut failing_since: Option<Instant> = None;
    loop {
        let d: DeploymentView = remote
            .typed(
                "GET",
                &format!("/api/v1/endpoints/{endpoint}/deployments/{name}"),
                None,
            )
            .await?;
        let now = format!("{} ({}/{} ready)", d.status, d.ready, d.instances);
        if now != last {
            eprintln!("deployment {endpoint}/{name}: {now}");
            last = now;
        }
        let current_ready = d
            .replicas
            .iter()
            .filter(|r| r.revision == d.revision && r.status == flowrt_api::SessionStatus::Running)
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

pub fn deployment(cmd: DeploymentCommand, server: Option<&str>) -> Result<u8> {
    let remote = Remote::from_env(server, &flowrt_store::flowrt_home())?;
    block(async move {
        match cmd {
            DeploymentCommand::Create {
                target,
                flow,
                size,
                settings,
            } => {
                let (endpoint, name) = split_target(&target)?;
                let size = flowrt_api::SessionSize::parse(&size)
                    .ok_or_else(|| anyhow!("--size {size}: give small, medium or large"))?;
                let body = serde_json::to_value(CreateDeployment {
                    name: name.clone(),
                    flow,
                    instances: settings.instances,
                    size,
                    min_instances: settings.min_instances,
                    max_instances: settings.max_instances,
                    target_concurrency: settings.target_concurrency,
                    sample_rate: settings.sample_rate,
                    redact_payloads: settings.redact_payloads,
                })?;
                let d: DeploymentView = remote
                    .typed(
                        "POST",
                        &format!("/api/v1/endpoints/{endpoint}/deployments"),
                        Some(body),
                    )
                    .await?;
                eprintln!(
                    "deploying {} as {endpoint}/{name} on {} instance(s)",
                    d.flow, d.instances
                );
                if !settings.no_wait {
                    let d = wait_ready(&remote, &endpoint, &name).await?;
                    eprintln!(
                        "deployment {endpoint}/{name} serves {} ({}% of the endpoint's traffic)",
                        d.flow, d.traffic
                    );
                }
            }
            DeploymentCommand::List { endpoint, json } => {
                let list: Vec<DeploymentView> = remote
                    .typed(
                        "GET",
                        &format!("/api/v1/endpoints/{endpoint}/deployments"),
                        None,
                    )
                    .await?;
                if json {
                    return print_json(&list).map(|_| 0);
                }
                print_deployments(&list);
            }
            DeploymentCommand::Show { target, json } => {
                let (endpoint, name) = split_target(&target)?;
                let d: DeploymentView = remote
                    .typed(
                        "GET",
                        &format!("/api/v1/endpoints/{endpoint}/deployments/{name}"),
                        None,
                    )
                    .await?;
                if json {
                    return print_json(&d).map(|_| 0);
                }
                print_deployments(std::slice::from_ref(&d));
                if let Some(p) = &d.problem {
                    println!("\nproblem: {p}");
                }
                println!();
                let mut t = crate::fmt::table(
                    &["SESSION", "REVISION", "SLOT", "STATUS", "IN FLIGHT"],
                    &["REVISION", "SLOT", "IN FLIGHT"],
                );
                for r in &d.replicas {
                    t.add_row(vec![
                        r.session_id.clone(),
                        r.revision.to_string(),
                        r.slot.to_string(),
                        r.status.to_string(),
                        r.in_flight.to_string(),
                    ]);
                }
                crate::fmt::print_table(&t);
            }
            DeploymentCommand::Update {
                target,
                flow,
                settings,
                keep_payloads,
            } => {
                let (endpoint, name) = split_target(&target)?;
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
                    .typed(
                        "PATCH",
                        &format!("/api/v1/endpoints/{endpoint}/deployments/{name}"),
                        Some(serde_json::to_value(body)?),
                    )
                    .await?;
                eprintln!(
                    "deployment {endpoint}/{name}: {} on {} instance(s), revision {}",
                    d.flow, d.instances, d.revision
                );
                if !settings.no_wait {
                    wait_ready(&remote, &endpoint, &name).await?;
                    eprintln!("deployment {endpoint}/{name} serves {}", d.flow);
                }
            }
            DeploymentCommand::Delete { target } => {
                let (endpoint, name) = split_target(&target)?;
                remote
                    .call(
                        "DELETE",
                        &format!("/api/v1/endpoints/{endpoint}/deployments/{name}"),
                        None,
                    )
                    .await?;
                eprintln!("deployment {endpoint}/{name} deleted; its instances drain and stop");
            }
        }
        Ok(0)
    })
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
        assert!(split_target("support/blue").is_ok());
        assert!(split_target("support").is_err());
        assert!(split_target("a/b/c").is_err());
    }
}
