//! `POST /endpoints/{name}/score`: promptflow's serving contract (the flow's inputs as a JSON
//! object in, its outputs as JSON out; with `Accept: text/event-stream`, the streamed output as
//! `data: {"OUTPUT": "piece"}` events, as `pf flow serve` sends them), routed to one
//! deployment's least busy instance. Called with an endpoint key or a user token holding
//! `endpoints/score`; `azureml-model-deployment` names a deployment, else the traffic split
//! draws one. Every request is recorded; a sampled one with its trace.

use super::serving::{DeploymentRoute, EndpointRoute, Instance};
use crate::error::ApiErr;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flowrt_api::responses::LineResult;
use flowrt_session::client::{self, ClientError, LineRequest};
use flowrt_store::{Endpoint, ScoreRow};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// The largest request body an endpoint reads.
pub const MAX_SCORE_BODY: usize = 8 * 1024 * 1024;
/// How deeply a request's JSON may nest.
pub const MAX_SCORE_DEPTH: usize = 64;
/// The header that names a deployment (Azure ML's).
pub const DEPLOYMENT_HEADER: &str = "azureml-model-deployment";

/// Counts a request in flight on an instance until dropped.
struct InFlight(Arc<Instance>);

impl InFlight {
    fn new(instance: Arc<Instance>) -> Self {
        instance.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(instance)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The deepest nesting of `[` and `{` in a JSON text (strings skipped), stopping early once
/// past `limit`.
pub fn json_depth(bytes: &[u8], limit: usize) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > limit {
                    return deepest;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Who is calling: an endpoint key is checked against the endpoint's hashes; a user token
/// must hold `endpoints/score` and be the endpoint's owner's or an admin's.
async fn authorize(
    state: &AppState,
    route: &EndpointRoute,
    headers: &HeaderMap,
) -> Result<(), ApiErr> {
    let name = &route.endpoint.name;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiErr::unauthorized(format!(
                "missing key: send 'Authorization: Bearer <key>' with a key of endpoint '{name}' (`flowrt endpoint keys {name} --regenerate primary` makes a new one)"
            ))
        })?;
    if given.starts_with(flowrt_store::ENDPOINT_KEY_PREFIX) {
        if route.endpoint.accepts_key(given) {
            return Ok(());
        }
        return Err(ApiErr::unauthorized(format!(
            "this key does not open endpoint '{name}': each endpoint has keys of its own"
        )));
    }
    let user = state.store.user_by_token(given).await?.ok_or_else(|| {
        ApiErr::unauthorized(format!(
            "invalid key or token for endpoint '{name}': it is unknown, revoked or expired"
        ))
    })?;
    may_score(&user, &route.endpoint)
}

/// Whether `user`'s own token scores endpoint `e`: it holds `endpoints/score`, and the endpoint
/// is theirs (admins: every one). The endpoint's `score` action is listed from this.
pub(super) fn may_score(user: &flowrt_store::User, e: &Endpoint) -> Result<(), ApiErr> {
    let admin = matches!(
        user.role,
        flowrt_store::Role::Owner | flowrt_store::Role::Admin
    );
    if !user.has(flowrt_api::workspace::Permission::EndpointsScore)
        || !(admin || user.id == e.owner)
    {
        return Err(ApiErr::forbidden(format!(
            "user '{}' may not score endpoint '{}': a user token scores its owner's endpoints (admins: every one); others call it with one of its keys",
            user.name, e.name
        )));
    }
    Ok(())
}

/// A 4xx/5xx answer of the scoring route, `{code, message}`, naming the deployment when one
/// was chosen.
fn refuse(err: ApiErr, deployment: Option<&str>) -> Response {
    let mut response = err.into_response();
    if let Some(d) = deployment.and_then(|d| HeaderValue::from_str(d).ok()) {
        response.headers_mut().insert(DEPLOYMENT_HEADER, d);
    }
    response
}

/// `POST /endpoints/{name}/score`: check the caller and the request, pick a deployment, and
/// answer with what one of its instances answers (recorded as it ends).
pub async fn score(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let started_ms = crate::now_ms();
    let Some(route) = state.serving.route(&name) else {
        return refuse(
            ApiErr::not_found(format!(
                "endpoint '{name}' does not exist; `flowrt endpoint list` shows them"
            )),
            None,
        );
    };
    if let Err(e) = authorize(&state, &route, &headers).await {
        return refuse(e, None);
    }
    let inputs = match read_inputs(&body) {
        Ok(inputs) => inputs,
        Err(e) => return refuse(e, None),
    };
    let deployment = match choose_deployment(&state, &route, &name, &headers) {
        Ok(deployment) => deployment,
        Err(e) => return refuse(e, None),
    };
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let sampled = {
        let rate = deployment.record.sample_rate;
        rate >= 1.0 || (rate > 0.0 && (state.serving.draw() % 1_000_000) as f64 / 1e6 < rate)
    };
    let request = LineRequest {
        inputs: inputs.into_iter().collect(),
        trace: sampled.then(|| flowrt_api::trace::TraceAs {
            collection: format!("endpoint/{name}"),
            ..Default::default()
        }),
        connections: None,
    };
    let record = Record {
        state: state.clone(),
        id: format!("{:016x}", state.serving.draw()),
        endpoint: name.clone(),
        deployment: deployment.clone(),
        started,
        started_ms,
        sampled,
        inputs: sampled.then(|| Value::Object(request.inputs.clone().into_iter().collect())),
    };
    // A connection changed since the table was built: this request uses the new one.
    let connections = if deployment.connections.generation
        == state.serving.generation.load(Ordering::SeqCst)
    {
        deployment.connections.clone()
    } else {
        super::serving::deployment_connections(&state, &deployment.record, &deployment.flow).await
    };
    let stream = wants_stream && deployment.flow.stream_output.is_some();
    send(&state, request, record, &connections, stream).await
}

/// The request body as the flow's inputs: at most [`MAX_SCORE_BODY`] bytes, nested at most
/// [`MAX_SCORE_DEPTH`] levels, a JSON object (an empty body: no inputs).
fn read_inputs(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiErr> {
    if body.len() > MAX_SCORE_BODY {
        return Err(ApiErr::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            flowrt_api::ErrorCode::TooLarge,
            format!(
                "the request body is {} bytes; an endpoint reads at most {MAX_SCORE_BODY}",
                body.len()
            ),
        ));
    }
    if json_depth(body, MAX_SCORE_DEPTH) > MAX_SCORE_DEPTH {
        return Err(ApiErr::bad_request(format!(
            "the request body nests deeper than {MAX_SCORE_DEPTH} levels"
        )));
    }
    if body.is_empty() {
        return Ok(serde_json::Map::new());
    }
    match flowrt_flow::nonfinite::from_json_text(&String::from_utf8_lossy(body)) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiErr::bad_request(
            "the request body must be a JSON object of the flow's inputs, like {\"question\": \"hi\"}",
        )),
        Err(e) => Err(ApiErr::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// The deployment the request goes to: the one the [`DEPLOYMENT_HEADER`] names, else one drawn
/// by the endpoint's traffic split.
fn choose_deployment(
    state: &AppState,
    route: &EndpointRoute,
    name: &str,
    headers: &HeaderMap,
) -> Result<Arc<DeploymentRoute>, ApiErr> {
    let named = headers
        .get(DEPLOYMENT_HEADER)
        .and_then(|h| h.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let draw = (state.serving.draw() % 100) as u32;
    route.deployment(named, draw).ok_or_else(|| match named {
        Some(d) => ApiErr::not_found(format!(
            "endpoint '{name}' has no deployment '{d}'; `flowrt deployment list {name}` shows them"
        )),
        None => ApiErr::new(
            StatusCode::SERVICE_UNAVAILABLE,
            flowrt_api::ErrorCode::NoTraffic,
            format!(
                "endpoint '{name}' sends no traffic to any deployment; `flowrt endpoint update {name} --traffic DEPLOYMENT=100`, or name one with the {DEPLOYMENT_HEADER} header"
            ),
        ),
    })
}

/// How one instance took a request: answered it (whatever the answer), or refused the
/// connection, so it never saw the request, which goes to another with its record.
enum Attempt {
    Answered(Response),
    Unreachable(Box<Record>),
}

/// Send the request to the deployment's least busy reachable instance, trying up to three: an
/// instance that refuses the connection is left out and the next one tried. `stream`: the
/// caller wants the flow's streamed output, and the flow streams.
async fn send(
    state: &AppState,
    mut request: LineRequest,
    mut record: Record,
    connections: &super::serving::DeploymentConnections,
    stream: bool,
) -> Response {
    let deployment = record.deployment.clone();
    let mut skip: Option<String> = None;
    for _attempt in 0..3 {
        let Some(instance) = deployment.pick(skip.as_deref()) else {
            break;
        };
        let generation = connections.generation;
        let sends_connections = instance.connections_sent.load(Ordering::Relaxed) != generation;
        request.connections = sends_connections.then(|| connections.list.as_ref().clone());
        let brings = sends_connections.then_some(generation);
        let attempt = if stream {
            stream_from(state, &instance, &request, record, brings).await
        } else {
            run_on(state, &instance, &request, record, brings).await
        };
        match attempt {
            Attempt::Answered(response) => return response,
            Attempt::Unreachable(back) => {
                record = *back;
                skip = Some(instance.session_id.clone());
            }
        }
    }
    record.unavailable()
}

/// Stream the line from `instance`: its events relayed as promptflow's, or its refusal or
/// failure answered. `brings`: the connections generation the request carries.
async fn stream_from(
    state: &AppState,
    instance: &Arc<Instance>,
    request: &LineRequest,
    record: Record,
    brings: Option<u64>,
) -> Attempt {
    let guard = InFlight::new(instance.clone());
    let timeout = state.config.interactive_timeout;
    match client::stream_line(&instance.addr, &instance.token, request, timeout).await {
        Ok(resp) if resp.status().is_success() => {
            connections_received(instance, brings);
            Attempt::Answered(stream_reply(resp, guard, record))
        }
        Ok(resp) => {
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            let message = v["message"].as_str().unwrap_or("refused").to_string();
            Attempt::Answered(record.refused(status, message, &instance.session_id))
        }
        Err(ClientError::Connect { .. }) => left_out(state, instance, record),
        Err(e) => Attempt::Answered(record.failed(e, &instance.session_id)),
    }
}

/// Run the line on `instance` and answer with its outputs, its refusal or its failure.
/// `brings`: the connections generation the request carries.
async fn run_on(
    state: &AppState,
    instance: &Arc<Instance>,
    request: &LineRequest,
    record: Record,
    brings: Option<u64>,
) -> Attempt {
    let guard = InFlight::new(instance.clone());
    let timeout = state.config.interactive_timeout;
    let result =
        client::run_line::<Scored>(&instance.addr, &instance.token, request, timeout).await;
    drop(guard);
    match result {
        Ok(reply) => {
            connections_received(instance, brings);
            Attempt::Answered(record.answered(reply, &instance.session_id, false))
        }
        Err(ClientError::Refused {
            status, message, ..
        }) => Attempt::Answered(record.refused(status, message, &instance.session_id)),
        Err(ClientError::Connect { .. }) => left_out(state, instance, record),
        Err(e) => Attempt::Answered(record.failed(e, &instance.session_id)),
    }
}

/// `instance` answered a request that brought the connections of generation `brings`: it
/// has them now.
fn connections_received(instance: &Instance, brings: Option<u64>) {
    if let Some(generation) = brings {
        instance
            .connections_sent
            .store(generation, Ordering::Relaxed);
    }
}

/// `instance` refused the connection: it is left out until the supervisor, woken now, looks
/// at it again.
fn left_out(state: &AppState, instance: &Instance, record: Record) -> Attempt {
    instance.unreachable.store(true, Ordering::Relaxed);
    state.serving.wake.notify_one();
    Attempt::Unreachable(Box::new(record))
}

/// A sampled request as its row keeps it (`detail`), read by the request's trace view.
#[derive(serde::Serialize)]
struct RequestDetail<'a> {
    inputs: &'a Value,
    outputs: &'a Value,
    error: Option<&'a str>,
    duration: f64,
    nodes: &'a [flowrt_api::endpoints::NodeTiming],
    node_runs: &'a RawValue,
    spans: &'a RawValue,
}

/// An instance's answer to a scored line. What the reply and the request's row need is
/// decoded; the node runs and spans, which the row only stores (and the export reads, when
/// the server exports), stay the JSON text they came as: a sampled request's detail is
/// written from them without parsing them into values and writing them out again.
#[derive(serde::Deserialize)]
struct Scored {
    #[serde(default)]
    outputs: Value,
    #[serde(default)]
    error: Option<flowrt_api::responses::LineFailure>,
    #[serde(default)]
    node_runs: Option<Box<RawValue>>,
    #[serde(default)]
    duration: f64,
    #[serde(default)]
    bare_output: bool,
    #[serde(default)]
    spans: Option<Box<RawValue>>,
}

impl Scored {
    /// A line result read in whole (a streamed reply's last event), in this form.
    fn from_result(r: LineResult) -> Scored {
        Scored {
            node_runs: serde_json::value::to_raw_value(&r.node_runs).ok(),
            spans: if r.spans.is_empty() {
                None
            } else {
                serde_json::value::to_raw_value(&r.spans).ok()
            },
            outputs: r.outputs,
            error: r.error,
            duration: r.duration,
            bare_output: r.bare_output,
        }
    }
}

/// Of a node run, what a request's row counts: its timing, status and tokens (its output and
/// logs are passed over unread).
#[derive(serde::Deserialize)]
struct NodeRunSummary {
    #[serde(default)]
    node: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    duration: f64,
    #[serde(default)]
    usage: Option<Value>,
}

/// What is known of a request while it runs; each ending writes its row.
struct Record {
    state: AppState,
    id: String,
    endpoint: String,
    deployment: Arc<DeploymentRoute>,
    started: Instant,
    started_ms: i64,
    sampled: bool,
    inputs: Option<Value>,
}

/// Tokens and node timings of a line, from its node runs.
fn nodes_of(reply: &Scored) -> (Vec<flowrt_api::endpoints::NodeTiming>, [u64; 3]) {
    let mut tokens = [0u64; 3];
    let runs: Vec<NodeRunSummary> = reply
        .node_runs
        .as_deref()
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or_default();
    let nodes = runs
        .into_iter()
        .map(|r| {
            let usage = r.usage.unwrap_or(Value::Null);
            let count = |k: &str| usage[k].as_u64().unwrap_or(0);
            tokens[0] += count("prompt_tokens");
            tokens[1] += count("completion_tokens");
            tokens[2] += count("total_tokens");
            flowrt_api::endpoints::NodeTiming {
                total_tokens: count("total_tokens"),
                node: r.node,
                status: r.status,
                duration_ms: r.duration * 1000.0,
            }
        })
        .collect();
    (nodes, tokens)
}

impl Record {
    fn row(&self, session_id: &str, status: u16, error: Option<String>) -> ScoreRow {
        ScoreRow {
            id: self.id.clone(),
            endpoint: self.endpoint.clone(),
            deployment: self.deployment.record.name.clone(),
            session_id: session_id.to_string(),
            started: self.started_ms,
            latency_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            status,
            error,
            ..Default::default()
        }
    }

    fn keep(&self, row: ScoreRow) {
        self.state.serving.record(row);
    }

    fn headers(&self, response: &mut Response) {
        if let Ok(v) = HeaderValue::from_str(&self.deployment.record.name) {
            response.headers_mut().insert(DEPLOYMENT_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&self.id) {
            response.headers_mut().insert("x-request-id", v);
        }
    }

    /// The line ran: its outputs (or its error) answered and recorded.
    fn answered(self, mut reply: Scored, session_id: &str, streamed: bool) -> Response {
        let (nodes, tokens) = nodes_of(&reply);
        let (status, error) = match &reply.error {
            Some(e) => (400, Some(e.display.clone())),
            None => (200, None),
        };
        let mut row = self.row(session_id, status, error.clone());
        [row.prompt_tokens, row.completion_tokens, row.total_tokens] = tokens;
        row.streamed = streamed;
        let body = match &reply.error {
            None if reply.bare_output => reply
                .outputs
                .get(flowrt_flow::VALUE_OUTPUT)
                .cloned()
                .unwrap_or(Value::Null),
            None => std::mem::take(&mut reply.outputs),
            Some(_) => Value::Null,
        };
        if self.sampled {
            if let Some(spans) = &reply.spans {
                self.export(spans, self.deployment.record.redact_payloads);
            }
            row.detail = self.detail(&reply, &body, &nodes);
        }
        self.keep(row);
        let mut response = match &reply.error {
            None => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                flowrt_flow::pyvalue::py_json_dumps(&body),
            )
                .into_response(),
            Some(e) => ApiErr::new(
                StatusCode::BAD_REQUEST,
                flowrt_api::ErrorCode::UserError,
                e.display.clone(),
            )
            .into_response(),
        };
        self.headers(&mut response);
        response
    }

    /// A sampled request's detail, written straight from the reply's parts. Redacted, the node
    /// runs keep their timing, status and tokens, not what went in or out, and the spans are
    /// left out.
    fn detail(
        &self,
        reply: &Scored,
        body: &Value,
        nodes: &[flowrt_api::endpoints::NodeTiming],
    ) -> Option<String> {
        let redact = self.deployment.record.redact_payloads;
        let node_runs = match (&reply.node_runs, redact) {
            (Some(raw), false) => std::borrow::Cow::Borrowed(raw.as_ref()),
            (Some(raw), true) => {
                let mut runs: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
                for run in runs.as_array_mut().into_iter().flatten() {
                    if let Some(o) = run.as_object_mut() {
                        for key in ["output", "logs", "llm_request", "spans"] {
                            o.remove(key);
                        }
                    }
                }
                std::borrow::Cow::Owned(serde_json::value::to_raw_value(&runs).ok()?)
            }
            (None, _) => std::borrow::Cow::Borrowed(RawValue::NULL),
        };
        let no_spans;
        let spans = match (&reply.spans, redact) {
            (Some(raw), false) => raw.as_ref(),
            _ => {
                no_spans = RawValue::from_string("[]".into()).ok()?;
                no_spans.as_ref()
            }
        };
        let null = Value::Null;
        let detail = RequestDetail {
            inputs: match (&self.inputs, redact) {
                (Some(inputs), false) => inputs,
                _ => &null,
            },
            outputs: if redact || reply.error.is_some() {
                &null
            } else {
                body
            },
            error: reply.error.as_ref().map(|e| e.display.as_str()),
            duration: reply.duration,
            nodes,
            node_runs: &node_runs,
            spans,
        };
        serde_json::to_string(&detail).ok()
    }

    /// Send a sampled request's spans to the OTLP collector the server exports to, if any
    /// (copied only then): named by the endpoint, its deployment and the request, without
    /// payloads when the deployment redacts them.
    fn export(&self, spans: &RawValue, redact: bool) {
        let Some(exporters) = &self.state.runs.exporters else {
            return;
        };
        let Ok(mut spans) = serde_json::from_str::<Vec<flowrt_api::trace::TraceSpan>>(spans.get())
        else {
            return;
        };
        let trace = flowrt_api::trace::TraceAs {
            collection: format!("endpoint/{}", self.endpoint),
            ..Default::default()
        };
        for span in &mut spans {
            trace.stamp(span);
            // What a team filters an endpoint's traffic by in its own tool, and the id that
            // finds the request in flowrt's list (its `x-request-id`).
            for (key, value) in [
                ("endpoint.name", &self.endpoint),
                ("endpoint.deployment", &self.deployment.record.name),
                ("endpoint.request_id", &self.id),
            ] {
                span.attributes
                    .insert(key.into(), Value::String(value.clone()));
            }
            if redact {
                // The collector sees the request's shape and tokens, not its payload.
                span.redact_payloads();
            }
        }
        exporters.export(&trace.collection, spans);
    }

    /// The instance refused the request (bad inputs: the message names the input).
    fn refused(self, status: u16, message: String, session_id: &str) -> Response {
        self.keep(self.row(session_id, status, Some(message.clone())));
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = match status {
            400 => ApiErr::bad_request(message),
            _ => ApiErr::new(code, flowrt_api::ErrorCode::Refused, message),
        }
        .into_response();
        self.headers(&mut response);
        response
    }

    fn failed(self, e: ClientError, session_id: &str) -> Response {
        let (status, err) = match e {
            ClientError::Timeout { seconds, .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                ApiErr::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    flowrt_api::ErrorCode::Timeout,
                    format!(
                        "the flow did not answer within the server's request timeout ({seconds} s)"
                    ),
                ),
            ),
            other => {
                eprintln!("endpoint {}: instance {session_id}: {other}", self.endpoint);
                (
                    StatusCode::BAD_GATEWAY,
                    ApiErr::new(
                        StatusCode::BAD_GATEWAY,
                        flowrt_api::ErrorCode::InstanceFailed,
                        "the instance answering this request failed while it ran; send it again",
                    ),
                )
            }
        };
        self.keep(self.row(session_id, status.as_u16(), Some(err.message.clone())));
        let mut response = err.into_response();
        self.headers(&mut response);
        response
    }

    fn unavailable(self) -> Response {
        let d = &self.deployment.record;
        let err = ApiErr::new(
            StatusCode::SERVICE_UNAVAILABLE,
            flowrt_api::ErrorCode::NoInstance,
            format!(
                "deployment '{}' of endpoint '{}' has no instance ready yet; `flowrt deployment show {}/{}` follows it",
                d.name, self.endpoint, self.endpoint, d.name
            ),
        );
        self.keep(self.row("", 503, Some(err.message.clone())));
        let mut response = err.into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        self.headers(&mut response);
        response
    }
}

/// Relay an instance's stream as promptflow's: each piece of the streamed output as
/// `data: {"OUTPUT": "piece"}`; a flow with other outputs sends them first, in one event, then
/// the pieces (they are known only at the end); an error as `data: {"error": {...}}`.
fn stream_reply(agent: reqwest::Response, guard: InFlight, record: Record) -> Response {
    use futures::StreamExt;
    let output = record
        .deployment
        .flow
        .stream_output
        .clone()
        .unwrap_or_default();
    let live = record.deployment.flow.outputs == 1;
    let session_id = guard.0.session_id.clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let mut rx = rx;
    let mut head = Response::new(Body::from_stream(futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
    })));
    record.headers(&mut head);
    tokio::spawn(async move {
        let _guard = guard;
        let event = |v: &Value| {
            Ok(Bytes::from(format!(
                "data: {}\n\n",
                flowrt_flow::pyvalue::py_json_dumps(v)
            )))
        };
        let mut pending: Vec<u8> = Vec::new();
        let mut held: Vec<String> = Vec::new();
        let mut body = agent.bytes_stream();
        let mut result: Option<LineResult> = None;
        'read: while let Some(piece) = body.next().await {
            let Ok(bytes) = piece else { break };
            pending.extend_from_slice(&bytes);
            while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = pending.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let (name, data) = match text.split_once('\n') {
                    Some((first, rest)) => (
                        first.strip_prefix("event: ").unwrap_or(""),
                        rest.strip_prefix("data: ").unwrap_or("").trim_end(),
                    ),
                    None => continue,
                };
                match name {
                    "chunk" => {
                        let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                        let text = v["text"].as_str().unwrap_or_default().to_string();
                        if live {
                            if tx.send(event(&json!({ output.as_str(): text }))).is_err() {
                                break 'read;
                            }
                        } else {
                            held.push(text);
                        }
                    }
                    "result" => {
                        result = flowrt_flow::nonfinite::from_json_text(data)
                            .ok()
                            .and_then(|v| serde_json::from_value(v).ok());
                        break 'read;
                    }
                    _ => {}
                }
            }
        }
        match result {
            Some(reply) => {
                if let Some(e) = &reply.error {
                    let _ = tx.send(event(
                        &json!({"error": {"code": flowrt_api::ErrorCode::UserError, "message": e.display}}),
                    ));
                } else if !live {
                    let mut others = reply.outputs.clone();
                    if let Some(o) = others.as_object_mut() {
                        o.remove(&output);
                    }
                    let _ = tx.send(event(&others));
                    for text in held {
                        let _ = tx.send(event(&json!({ output.as_str(): text })));
                    }
                }
                drop(tx);
                let _ = record.answered(Scored::from_result(reply), &session_id, true);
            }
            None => {
                let _ = tx.send(event(&json!({"error": {"code": flowrt_api::ErrorCode::InstanceFailed, "message": "the instance answering this request stopped while it streamed"}})));
                drop(tx);
                record.keep(record.row(
                    &session_id,
                    502,
                    Some("the instance stopped while it streamed".into()),
                ));
            }
        }
    });
    let headers = head.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    head
}

#[cfg(test)]
mod tests {
    use super::json_depth;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert_eq!(json_depth(br#"{"a": [1, {"b": 2}]}"#, 64), 3);
        assert_eq!(json_depth(br#"{"a": "[[[[{{{{\"]]"}"#, 64), 1);
        assert_eq!(json_depth(b"1", 64), 0);
        let deep = "[".repeat(100_000);
        assert_eq!(json_depth(deep.as_bytes(), 64), 65);
    }
}
