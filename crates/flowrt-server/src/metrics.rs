//! Prometheus metrics: request counts by route and status, counted by a middleware, and gauges
//! read from the store when scraped.

use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// A gauge read at scrape time: name, help text, and (labels, value) samples.
pub struct Gauge<'a> {
    pub name: &'a str,
    pub help: &'a str,
    pub samples: Vec<(String, f64)>,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

/// Middleware: count every request by method, matched route and status.
pub async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    if let Ok(mut m) = state.metrics.requests.lock() {
        *m.entry((method, route, resp.status().as_u16()))
            .or_default() += 1;
    }
    resp
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self, gauges: &[Gauge<'_>]) -> String {
        let mut out = String::new();
        out.push_str("# HELP flowrt_http_requests_total HTTP requests served, by method, route and status.\n");
        out.push_str("# TYPE flowrt_http_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((method, route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "flowrt_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        for Gauge {
            name,
            help,
            samples,
        } in gauges
        {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, v) in samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
        out
    }
}
