//! The OpenAPI 3 document served at `/api/v1/openapi.json`, built from one table of operations.

use serde_json::{json, Map, Value};

/// (method, path, summary) of every operation.
pub const OPERATIONS: &[(&str, &str, &str)] = &[
    ("get", "/healthz", "Liveness (no token needed)."),
    ("get", "/metrics", "Prometheus metrics (admins)."),
    ("get", "/api/v1/openapi.json", "This document."),
    ("get", "/api/v1/me", "The calling user."),
    ("get", "/api/v1/users", "List users (admin)."),
    ("post", "/api/v1/users", "Create a user {name, role}; returns its token once (admin)."),
    ("post", "/api/v1/users/{name}/disable", "Disable a user: its tokens get 401 (users/write)."),
    ("post", "/api/v1/users/{name}/enable", "Enable a disabled user again (users/write)."),
    ("post", "/api/v1/users/{name}/roles", "Assign a role {role}: admin, user or viewer replace the user's role, access-admin is held besides it (roleAssignments/write)."),
    ("delete", "/api/v1/users/{name}/roles/{role}", "Remove a role (the user's own role falls back to viewer)."),
    ("get", "/api/v1/connections", "Your workspace connections and shared ones, secrets masked."),
    ("post", "/api/v1/connections", "Create or replace a connection {yaml, shared}: promptflow's connection YAML; secrets sealed at rest, never returned."),
    ("get", "/api/v1/connections/{name}", "One connection (yours, else a shared one), secrets masked."),
    ("delete", "/api/v1/connections/{name}", "Delete one of your connections."),
    ("get", "/api/v1/tokens", "Your API tokens (with users/write, everyone's); never the tokens themselves."),
    ("post", "/api/v1/tokens", "Create an API token {for, expires_in_s}; it is shown once, only its hash is kept."),
    ("delete", "/api/v1/tokens/{id}", "Revoke a token: its next request gets 401."),
    ("get", "/api/v1/audit", "The audit log, newest first (?before=SEQ, limit): every state-changing request, who, when and its status (audit/read)."),
    ("get", "/api/v1/environments", "Base environment versions and published custom environments."),
    ("post", "/api/v1/environments", "Publish a custom environment {name, requirements, from}."),
    ("get", "/api/v1/identities", "List identities (feed tokens masked)."),
    ("post", "/api/v1/identities", "Create an identity {name, feed_token, feed_hosts, entra} (admin); the token is stored encrypted and goes only to the named hosts; entra {tenant_id, client_id, client_secret} signs its sessions' keyless Azure calls in, its secret stored encrypted and handed only to their agents."),
    ("post", "/api/v1/identities/{name}/grants", "Let a user {user} start sessions acting as the identity (its owner or an admin)."),
    ("get", "/api/v1/computes", "List the compute instances you can see."),
    ("post", "/api/v1/computes", "Create a compute instance {name, size, user}."),
    ("get", "/api/v1/computes/{name}", "Show a compute instance."),
    ("delete", "/api/v1/computes/{name}", "Delete a compute instance."),
    ("post", "/api/v1/computes/{name}/start", "Start a compute instance."),
    ("post", "/api/v1/computes/{name}/stop", "Stop a compute instance."),
    ("get", "/api/v1/endpoints", "Every endpoint, with its deployments, their instances and the traffic split."),
    ("post", "/api/v1/endpoints", "Create an endpoint {name, retention_days}; its primary and secondary keys are shown once, only their hashes are kept (endpoints/write)."),
    ("get", "/api/v1/endpoints/{name}", "One endpoint with its deployments."),
    ("patch", "/api/v1/endpoints/{name}", "Set the traffic split {traffic: {deployment: percent}} (adding up to 100) and retention_days (its owner or an admin)."),
    ("delete", "/api/v1/endpoints/{name}", "Delete an endpoint, its deployments (their instances stop) and its request records."),
    ("post", "/api/v1/endpoints/{name}/keys", "Replace a key {key: primary|secondary}; the new key is shown once and the old one stops working at once."),
    ("get", "/api/v1/endpoints/{name}/deployments", "An endpoint's deployments."),
    ("post", "/api/v1/endpoints/{name}/deployments", "Deploy a flow version {name, flow: NAME@vN, instances, size, min_instances, max_instances, target_concurrency, sample_rate, redact_payloads}: its instances are sealed sessions the server keeps running."),
    ("get", "/api/v1/endpoints/{name}/deployments/{deployment}", "One deployment: status, revision, instances and their sessions."),
    ("patch", "/api/v1/endpoints/{name}/deployments/{deployment}", "Change a deployment: a new flow version rolls its instances over without downtime (new ones ready before old ones drain); instances, min/max, sampling, redaction."),
    ("delete", "/api/v1/endpoints/{name}/deployments/{deployment}", "Delete a deployment with no traffic (or the only one): its instances drain and stop."),
    ("get", "/api/v1/endpoints/{name}/requests", "The endpoint's scoring requests, newest first (?deployment, status=ok|error, before, limit)."),
    ("get", "/api/v1/endpoints/{name}/requests/{id}", "One scoring request with its trace: inputs, outputs, nodes' latency and tokens, spans (when sampled, payloads unless redacted)."),
    ("get", "/api/v1/endpoints/{name}/stats", "The endpoint's dashboard over ?minutes (default 60): requests/s, errors, p50/p99 latency and tokens, in about sixty buckets."),
    ("post", "/endpoints/{name}/score", "Score: the flow's inputs as a JSON object in, its outputs as JSON out (promptflow's serving contract; with Accept: text/event-stream the streamed output as data events). Authorization: Bearer with an endpoint key, or a user token with endpoints/score; azureml-model-deployment names a deployment, else the traffic split picks one."),
    ("get", "/api/v1/sessions", "List your sessions."),
    ("post", "/api/v1/sessions", "Start a session {flow, size, idle_timeout_s, identity, env, compute}; answers at once, then it prepares."),
    ("get", "/api/v1/sessions/events", "Server-sent events: a session event with a session's view each time one of yours changes (status, phase, reason, settings), and once for each at the start."),
    ("get", "/api/v1/sessions/{id}", "Show a session: status, phase, reason, base version, update available."),
    ("patch", "/api/v1/sessions/{id}", "Edit size and idle timeout."),
    ("delete", "/api/v1/sessions/{id}", "Stop and forget a session."),
    ("post", "/api/v1/sessions/{id}/stop", "Stop a session."),
    ("post", "/api/v1/sessions/{id}/reset", "Recreate a session's agent with the same environment."),
    ("post", "/api/v1/sessions/{id}/update", "Move a session to the latest base environment."),
    ("get", "/api/v1/sessions/{id}/packages", "Installed packages and where each came from."),
    ("post", "/api/v1/sessions/{id}/install", "Save requirements {requirements, save_only} and install them."),
    ("get", "/api/v1/sessions/{id}/logs", "The session log from ?offset=N."),
    ("get", "/api/v1/sessions/{id}/tools", "The tools the session's installed packages declare (package_tools entry points), with their inputs: what a node's source {type: package, tool: ID} names."),
    ("post", "/api/v1/sessions/{id}/switch", "Run another version of the session's flow {flow: NAME@vN} from now on, without a restart (its requirements must be the session's; lines running finish on the old version)."),
    ("post", "/api/v1/sessions/{id}/test", "Run one line {inputs} in the session, bounded by the request timeout; with Accept: text/event-stream, chunk events stream the LLM reply, then a result event."),
    ("get", "/api/v1/flows", "List the workspace's flows you may see, every version."),
    ("post", "/api/v1/flows/{name}", "Push a snapshot (a gzip-compressed tar of the flow folder; ?entry=FILE.prompty) as the next version of name."),
    ("get", "/api/v1/flows/{name}", "Show a flow version (NAME or NAME@vN): inputs, outputs, nodes and edges."),
    ("get", "/api/v1/flows/{name}/files", "A flow version's files (NAME or NAME@vN), by path, with their sizes."),
    ("get", "/api/v1/flows/{name}/file", "One file of a flow version (?path=src/tool.py): its text, or null when it is not text or over 1 MiB."),
    ("post", "/api/v1/flows/{name}/draft", "Check a draft of a flow version {files: {path: text|null}, edits: [FlowEdit]}: the edits are made in the YAML's text (untouched lines stay as written), then the flow is loaded; answers the changed files and the flow's graph, or its problems with file and line."),
    ("post", "/api/v1/flows/{name}/versions", "Save a draft {base: NAME@vN, message, files} as the next version of name (or as the first of a new name); 409 with the difference when another version was saved after base."),
    ("post", "/api/v1/flows/{name}/draft/test", "Run one line of a draft {files, session, inputs} in your running session, with its environment and connections, bounded by the request timeout (a draft that changes requirements.txt is refused: save and install it first)."),
    ("get", "/api/v1/flows/{name}/compare", "Compare two versions of a flow (?from=N&to=M): the files that differ and their changed lines in context."),
    ("get", "/api/v1/flows/{name}/snapshot", "A flow version's files as a gzip-compressed tar (what `flowrt flow pull` unpacks)."),
    ("post", "/api/v1/data", "Upload batch data (?format=jsonl|csv|tsv; JSONL checked line by line), stored by its content's hash; returns its reference."),
    ("get", "/api/v1/data/{reference}", "Whether you have uploaded this data (data:sha256:HEX.EXT)."),
    ("get", "/api/v1/runs", "List the workspace's runs you may see: yours (admins: everyone's), whichever session ran them (?archived=true: archived ones too)."),
    ("post", "/api/v1/runs", "Start a batch or evaluation run {session, flow, name, data, data_format, column_mapping, run, variant, resume_from, line_timeout, concurrency} in a session (no overall timeout); its name is the workspace's."),
    ("get", "/api/v1/runs/{name}", "Show a workspace run (?session=ID: only if that session ran it)."),
    ("delete", "/api/v1/runs/{name}", "Delete a finished run: its record, lines, outputs, logs and metrics."),
    ("post", "/api/v1/runs/{name}/archive", "Archive a run: the list leaves it out unless ?archived=true."),
    ("post", "/api/v1/runs/{name}/restore", "Restore an archived run to the list."),
    ("get", "/api/v1/runs/{name}/lines", "A run's per-line records (?offset, limit, status)."),
    ("get", "/api/v1/runs/{name}/lines/{line}", "One line's record: inputs, outputs, error, node runs with timings and token usage."),
    ("get", "/api/v1/runs/{name}/metrics", "A run's metrics."),
    ("get", "/api/v1/runs/{name}/logs", "A run's log from ?offset=N (poll with the returned offset to follow it)."),
    ("post", "/api/v1/runs/{name}/cancel", "Cancel a running run; finished lines are kept for --resume-from."),
    ("get", "/api/v1/runs/{name}/events", "Server-sent events while a run goes on: line (each finished line with its nodes), with ?nodes=true node (each node's start and end), progress (counts, rate, time left, and the quota pacing its model calls: endpoint, requests a second, calls a line, wait a call), end."),
    ("get", "/api/v1/sessions/{id}/requirements", "A session's saved requirements file {path, text, flow_ref} (what the web UI edits)."),
    ("get", "/api/v1/limits", "The server's limits a page states: {interactive_timeout_s}."),
    ("post", "/api/v1/agents/join", "A Ray session's agent joins its server: it proves it is the job the server submitted (the first line of that job's Ray log is the SHA-256 of its secret, and it calls from, and listens on, the node Ray placed the job on) and receives its flow's connections. No user token opens it."),
];

/// What a successful answer carries.
enum Body {
    /// A JSON body of the named schema (generated from `flowrt_api::responses`).
    Json(&'static str),
    /// A JSON array of the named schema.
    List(&'static str),
    /// A JSON object with no fixed fields (metrics, this document).
    Object,
    /// Server-sent events.
    Events,
    /// Prometheus text.
    Text,
    /// No body.
    Empty,
    /// A gzip-compressed tar.
    Binary,
}

/// The status and body of each operation's success; a route with two (a push that stored
/// something or found it unchanged) lists both.
fn successes(method: &str, path: &str) -> Vec<(&'static str, Body)> {
    use Body::*;
    let one = |code, body| vec![(code, body)];
    match (method, path) {
        ("get", "/healthz") => one("200", Json("Health")),
        ("get", "/metrics") => one("200", Text),
        ("get", "/api/v1/openapi.json") => one("200", Object),
        ("get", "/api/v1/me") => one("200", Json("UserView")),
        ("get", "/api/v1/users") => one("200", List("UserView")),
        ("post", "/api/v1/users") => one("201", Json("CreatedUser")),
        (_, p) if p.starts_with("/api/v1/users/{name}/") => one("200", Json("UserView")),
        ("get", "/api/v1/tokens") => one("200", List("TokenView")),
        ("get", "/api/v1/limits") => one("200", Json("Limits")),
        ("post", "/api/v1/agents/join") => one("200", Json("AgentJoined")),
        ("get", "/api/v1/sessions/{id}/requirements") => one("200", Json("Requirements")),
        ("get", "/api/v1/connections") => one("200", List("ConnectionView")),
        ("post", "/api/v1/connections") => one("201", Json("ConnectionView")),
        ("get", "/api/v1/connections/{name}") => one("200", Json("ConnectionView")),
        ("delete", "/api/v1/connections/{name}") => one("204", Empty),
        ("post", "/api/v1/tokens") => one("201", Json("CreatedToken")),
        ("delete", "/api/v1/tokens/{id}") => one("204", Empty),
        ("get", "/api/v1/audit") => one("200", List("AuditView")),
        ("get", "/api/v1/environments") => one("200", Json("Environments")),
        ("post", "/api/v1/environments") => one("201", Json("PublishedEnvironment")),
        ("get", "/api/v1/identities") => one("200", List("IdentityView")),
        ("post", "/api/v1/identities") => one("201", Json("IdentityView")),
        ("post", "/api/v1/identities/{name}/grants") => one("200", Json("IdentityView")),
        ("get", "/api/v1/computes") => one("200", List("ComputeView")),
        ("post", "/api/v1/computes") => one("201", Json("ComputeView")),
        ("delete", "/api/v1/computes/{name}") | ("delete", "/api/v1/sessions/{id}") => {
            one("204", Empty)
        }
        (_, p) if p.starts_with("/api/v1/computes/") => one("200", Json("ComputeView")),
        ("get", "/api/v1/endpoints") => one("200", List("EndpointView")),
        ("post", "/api/v1/endpoints") => one("201", Json("CreatedEndpoint")),
        ("get", "/api/v1/endpoints/{name}") | ("patch", "/api/v1/endpoints/{name}") => {
            one("200", Json("EndpointView"))
        }
        ("delete", "/api/v1/endpoints/{name}")
        | ("delete", "/api/v1/endpoints/{name}/deployments/{deployment}") => one("204", Empty),
        ("post", "/api/v1/endpoints/{name}/keys") => one("200", Json("EndpointKeys")),
        ("get", "/api/v1/endpoints/{name}/deployments") => one("200", List("DeploymentView")),
        ("post", "/api/v1/endpoints/{name}/deployments") => one("201", Json("DeploymentView")),
        (_, "/api/v1/endpoints/{name}/deployments/{deployment}") => {
            one("200", Json("DeploymentView"))
        }
        ("get", "/api/v1/endpoints/{name}/requests") => one("200", List("ScoreRequestView")),
        ("get", "/api/v1/endpoints/{name}/requests/{id}") => one("200", Json("ScoreRequestDetail")),
        ("get", "/api/v1/endpoints/{name}/stats") => one("200", Json("EndpointStats")),
        ("post", "/endpoints/{name}/score") => one("200", Object),
        ("get", "/api/v1/sessions") => one("200", List("SessionView")),
        ("post", "/api/v1/sessions")
        | ("post", "/api/v1/sessions/{id}/reset")
        | ("post", "/api/v1/sessions/{id}/update") => one("202", Json("SessionView")),
        ("post", "/api/v1/sessions/{id}/install") => {
            vec![("202", Json("SessionView")), ("200", Json("SessionView"))]
        }
        ("get", "/api/v1/sessions/events") | ("get", "/api/v1/runs/{name}/events") => {
            one("200", Events)
        }
        ("get", "/api/v1/sessions/{id}/packages") => one("200", List("PackageView")),
        ("get", "/api/v1/sessions/{id}/logs") | ("get", "/api/v1/runs/{name}/logs") => {
            one("200", Json("LogChunk"))
        }
        ("post", "/api/v1/sessions/{id}/test") => one("200", Json("LineResult")),
        ("post", "/api/v1/sessions/{id}/switch") => one("200", Json("SessionView")),
        ("get", "/api/v1/sessions/{id}/tools") => one("200", Json("PackageTools")),
        (_, "/api/v1/sessions/{id}") | ("post", "/api/v1/sessions/{id}/stop") => {
            one("200", Json("SessionView"))
        }
        ("get", "/api/v1/flows") => one("200", List("FlowVersion")),
        ("post", "/api/v1/flows/{name}") => {
            vec![("201", Json("PushedFlow")), ("200", Json("PushedFlow"))]
        }
        ("get", "/api/v1/flows/{name}") => one("200", Json("FlowDetail")),
        ("get", "/api/v1/flows/{name}/files") => one("200", Json("FlowFiles")),
        ("get", "/api/v1/flows/{name}/file") => one("200", Json("FlowFileContent")),
        ("post", "/api/v1/flows/{name}/draft") => one("200", Json("DraftView")),
        ("post", "/api/v1/flows/{name}/versions") => vec![
            ("201", Json("PushedFlow")),
            ("200", Json("PushedFlow")),
            ("409", Json("SaveConflict")),
        ],
        ("get", "/api/v1/flows/{name}/compare") => one("200", Json("FlowComparison")),
        ("post", "/api/v1/flows/{name}/draft/test") => one("200", Json("LineResult")),
        ("get", "/api/v1/flows/{name}/snapshot") => one("200", Binary),
        ("post", "/api/v1/data") => {
            vec![("201", Json("UploadedData")), ("200", Json("UploadedData"))]
        }
        ("get", "/api/v1/data/{reference}") => one("200", Json("DataInfo")),
        ("get", "/api/v1/runs") => one("200", List("RunView")),
        ("post", "/api/v1/runs") => one("202", Json("RunStarted")),
        ("get", "/api/v1/runs/{name}") => one("200", Json("RunView")),
        ("get", "/api/v1/runs/{name}/lines") => one("200", Json("LinePage")),
        ("get", "/api/v1/runs/{name}/lines/{line}") => one("200", Json("LineRecord")),
        ("get", "/api/v1/runs/{name}/metrics") => one("200", Object),
        ("post", "/api/v1/runs/{name}/cancel") => one("200", Json("CancelingRun")),
        ("delete", "/api/v1/runs/{name}") => one("204", Empty),
        ("post", "/api/v1/runs/{name}/archive") | ("post", "/api/v1/runs/{name}/restore") => {
            one("200", Json("RunView"))
        }
        _ => Vec::new(),
    }
}

fn success_response(body: &Body) -> Value {
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    match body {
        Body::Json(name) => {
            json!({"description": "OK", "content": {"application/json": {"schema": schema(name)}}})
        }
        Body::List(name) => {
            json!({"description": "OK", "content": {"application/json": {"schema": {"type": "array", "items": schema(name)}}}})
        }
        Body::Object => {
            json!({"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}})
        }
        Body::Events => {
            json!({"description": "A stream of server-sent events", "content": {"text/event-stream": {"schema": {"type": "string"}}}})
        }
        Body::Text => {
            json!({"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}})
        }
        Body::Empty => json!({"description": "Done; no body"}),
        Body::Binary => {
            json!({"description": "A gzip-compressed tar", "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}})
        }
    }
}

/// The typed request body a route reads, by its schema's name (generated from `flowrt-api`).
fn body_schema(method: &str, path: &str) -> Option<&'static str> {
    match (method, path) {
        ("post", "/api/v1/endpoints") => Some("CreateEndpoint"),
        ("patch", "/api/v1/endpoints/{name}") => Some("UpdateEndpoint"),
        ("post", "/api/v1/endpoints/{name}/keys") => Some("RegenerateKey"),
        ("post", "/api/v1/endpoints/{name}/deployments") => Some("CreateDeployment"),
        ("patch", "/api/v1/endpoints/{name}/deployments/{deployment}") => Some("UpdateDeployment"),
        ("post", "/api/v1/sessions") => Some("StartSession"),
        ("patch", "/api/v1/sessions/{id}") => Some("EditSession"),
        ("post", "/api/v1/sessions/{id}/install") => Some("InstallRequirements"),
        ("post", "/api/v1/sessions/{id}/test") => Some("TestLine"),
        ("post", "/api/v1/runs") => Some("CreateRun"),
        ("post", "/api/v1/users") => Some("CreateUser"),
        ("post", "/api/v1/tokens") => Some("CreateToken"),
        ("post", "/api/v1/connections") => Some("CreateConnection"),
        ("post", "/api/v1/users/{name}/roles") => Some("AssignRole"),
        ("post", "/api/v1/environments") => Some("PublishEnvironment"),
        ("post", "/api/v1/computes") => Some("CreateCompute"),
        ("post", "/api/v1/identities") => Some("CreateIdentity"),
        ("post", "/api/v1/identities/{name}/grants") => Some("GrantIdentity"),
        ("post", "/api/v1/agents/join") => Some("AgentJoin"),
        ("post", "/api/v1/flows/{name}/draft") => Some("FlowDraft"),
        ("post", "/api/v1/flows/{name}/versions") => Some("SaveFlow"),
        ("post", "/api/v1/flows/{name}/draft/test") => Some("TestDraft"),
        ("post", "/api/v1/sessions/{id}/switch") => Some("SwitchSession"),
        _ => None,
    }
}

/// The query parameters each route reads.
fn query_parameters(method: &str, path: &str) -> &'static [(&'static str, &'static str)] {
    match (method, path) {
        ("get", "/api/v1/sessions/{id}/logs") | ("get", "/api/v1/runs/{name}/logs") => {
            &[("offset", "integer"), ("session", "string")]
        }
        ("get", "/api/v1/runs/{name}/lines") => &[
            ("offset", "integer"),
            ("limit", "integer"),
            ("status", "string"),
            ("session", "string"),
        ],
        ("get", "/api/v1/endpoints/{name}/requests") => &[
            ("deployment", "string"),
            ("status", "string"),
            ("before", "integer"),
            ("limit", "integer"),
        ],
        ("get", "/api/v1/endpoints/{name}/stats") => {
            &[("minutes", "integer"), ("deployment", "string")]
        }
        ("post", "/api/v1/flows/{name}") => &[("entry", "string")],
        ("get", "/api/v1/flows/{name}/file") => &[("path", "string")],
        ("get", "/api/v1/flows/{name}/compare") => &[("from", "integer"), ("to", "integer")],
        ("post", "/api/v1/data") => &[("format", "string")],
        ("get", "/api/v1/audit") => &[("before", "integer"), ("limit", "integer")],
        ("get", "/api/v1/runs/{name}/events") => &[("session", "string"), ("nodes", "boolean")],
        ("get", "/api/v1/runs") => &[("archived", "boolean")],
        ("delete", "/api/v1/runs/{name}")
        | ("post", "/api/v1/runs/{name}/archive")
        | ("post", "/api/v1/runs/{name}/restore") => &[],
        (_, p) if p.starts_with("/api/v1/runs/{name}") => &[("session", "string")],
        _ => &[],
    }
}

/// Every operation in the table, with its path parameters (from the `{name}` segments), query
/// parameters, request body and the error responses every route can give (`{code, message}`).
pub fn document() -> Value {
    let permissions: std::collections::HashMap<(&str, &str), &str> = crate::api_routes()
        .served()
        .iter()
        .map(|op| ((op.method, op.path), op.permission.as_str()))
        .collect();
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
    let mut paths = Map::new();
    for (method, path, summary) in OPERATIONS {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        let secured = !matches!(*path, "/healthz" | "/api/v1/agents/join");
        let mut parameters: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                let ty = if name == "line" { "integer" } else { "string" };
                json!({"name": name, "in": "path", "required": true, "schema": {"type": ty}})
            })
            .collect();
        for (name, ty) in query_parameters(method, path) {
            parameters.push(
                json!({"name": name, "in": "query", "required": false, "schema": {"type": ty}}),
            );
        }
        let mut responses = json!({});
        for (code, body) in successes(method, path) {
            responses[code] = success_response(&body);
        }
        for (code, what) in [
            ("400", "Bad request: what is wrong and how to fix it"),
            ("401", "Missing or invalid bearer token"),
            ("403", "The caller's role does not allow it"),
            ("404", "Not found (or not visible to the caller)"),
            ("405", "The route does not take this method"),
            ("409", "Conflicts with the resource's state"),
            ("413", "The body is too large"),
            ("415", "Not a JSON body"),
            ("422", "The JSON does not have the expected fields"),
            (
                "507",
                "The caller's storage quota is used up (what uses it is said)",
            ),
            (
                "500",
                "An internal failure (details are in the server's log, not here)",
            ),
        ] {
            // A route whose refusal has a body of its own (a save's conflict) keeps it.
            if responses.get(code).is_none() {
                responses[code] = json!({"description": what, "content": error});
            }
        }
        let mut op = json!({"summary": summary, "parameters": parameters, "responses": responses});
        // What the caller's roles must hold (see `Role::permissions`).
        if let Some(p) = permissions.get(&(*method, *path)) {
            op["x-permission"] = json!(p);
        }
        if *method == "post" || *method == "patch" {
            op["requestBody"] = match (*path, body_schema(method, path)) {
                ("/api/v1/data", _) => {
                    json!({"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}})
                }
                ("/api/v1/flows/{name}", _) => {
                    json!({"required": true, "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}})
                }
                (_, Some(name)) => {
                    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}})
                }
                (_, None) => {
                    json!({"required": false, "content": {"application/json": {"schema": {"type": "object"}}}})
                }
            };
        }
        if !secured {
            op["security"] = json!([]);
        }
        entry[*method] = op;
    }
    let mut schemas = Map::new();
    // Every refusal: `{code, message}`, its code one of the `ErrorCode` table's, each described.
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["code", "message"], "properties": {"code": {"$ref": "#/components/schemas/ErrorCode"}, "message": {"type": "string"}}}),
    );
    schemas.insert("ErrorCode".into(), flowrt_api::errors::schema());
    for (name, schema) in flowrt_api::requests::schemas()
        .into_iter()
        .chain(flowrt_api::responses::schemas())
        .chain(flowrt_api::endpoints::schemas())
    {
        // utoipa names referenced types by their Rust name; the document keeps them under it.
        schemas.insert(name.into(), schema);
    }
    json!({
        // The schemas are generated as JSON Schema 2020-12 (`type: [T, "null"]`): OpenAPI 3.1.
        "openapi": "3.1.0",
        "info": {"title": "flowrt control plane", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas
        }
    })
}
