//! An endpoint's requests as `flowrt endpoint` shows them: listed newest first, one with its
//! trace, and summed up over the last minutes.

use super::endpoint::{endpoint_path, print_json};
use crate::client::Remote;
use anyhow::Result;
use flowrt_api::endpoints::*;

/// `endpoint requests`: the endpoint's requests, newest first.
pub async fn requests(remote: &Remote, path: &str, json: bool) -> Result<()> {
    let list: Vec<ScoreRequestView> = remote.get(path).await?;
    if json {
        return print_json(&list);
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
    Ok(())
}

/// `endpoint trace`: one request with its inputs, outputs and each node's latency and tokens.
pub async fn trace(remote: &Remote, name: &str, id: &str, json: bool) -> Result<()> {
    let r: ScoreRequestDetail = remote
        .get(&format!("{}/requests/{id}", endpoint_path(name)))
        .await?;
    if json {
        return print_json(&r);
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
    Ok(())
}

/// `endpoint stats`: requests/s, errors, p50/p99 latency and tokens over the last minutes.
pub async fn stats(
    remote: &Remote,
    name: &str,
    minutes: u64,
    deployment: Option<String>,
    json: bool,
) -> Result<()> {
    let mut path = format!("{}/stats?minutes={minutes}", endpoint_path(name));
    if let Some(d) = &deployment {
        path.push_str(&format!("&deployment={d}"));
    }
    let s: EndpointStats = remote.get(&path).await?;
    if json {
        return print_json(&s);
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
    Ok(())
}

/// Unix ms as `2026-12-06 10:20:33` (UTC).
fn ms_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| ms.to_string())
}
