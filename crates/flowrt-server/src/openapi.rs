//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`.
//!
//! Each route declares what the document says about it — summary, request body, query
//! parameters, success responses — in a [`Doc`] given to [`crate::routing::ApiRoutes`] beside
//! its path, permission and handler, so the router, the permission table and the document come
//! from one declaration and cannot drift apart. This module owns that vocabulary and what every
//! operation shares: path parameters, the error responses, `x-permission`, the routes that take
//! no token, and the components' schemas. Bodies are named through the `flowrt-api` types
//! themselves (`utoipa::ToSchema::name`), so renaming a type renames its references too.

use crate::routing::Operation;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use utoipa::ToSchema;

/// What one route says about itself in the document, declared with the route: start with
/// [`doc`], then add its body, query parameters and success responses.
#[derive(Clone, Debug)]
pub struct Doc {
    summary: &'static str,
    body: Option<RequestBody>,
    query: Vec<(&'static str, &'static str)>,
    replies: Vec<(u16, Reply)>,
}

/// A route's documentation, starting from its one-line summary.
pub fn doc(summary: &'static str) -> Doc {
    Doc {
        summary,
        body: None,
        query: Vec::new(),
        replies: Vec::new(),
    }
}

impl Doc {
    /// The route reads a JSON body of `T`'s schema.
    pub fn body<T: ToSchema>(mut self) -> Self {
        self.body = Some(RequestBody::Json(SchemaName::of::<T>()));
        self
    }

    /// The route reads raw bytes of this media type (a flow's tar, batch data), not JSON.
    pub fn binary_body(mut self, media_type: &'static str) -> Self {
        self.body = Some(RequestBody::Binary(media_type));
        self
    }

    /// The route reads the optional query parameter `name`, of type `T`.
    pub fn query<T: QueryType>(mut self, name: &'static str) -> Self {
        self.query.push((name, T::NAME));
        self
    }

    /// The route answers `status` with `reply` when it succeeds. A route with several successes
    /// (a push that stored something or found it unchanged) lists each; so does one whose
    /// refusal has a body of its own (a save's 409 `SaveConflict`), which then replaces the
    /// shared error response for that status.
    pub fn reply(mut self, status: u16, reply: Reply) -> Self {
        self.replies.push((status, reply));
        self
    }
}

/// A schema's name under `components/schemas`, made only from a type that derives
/// `utoipa::ToSchema` (the `flowrt-api` bodies), so the reference follows the type.
#[derive(Clone, Debug)]
pub struct SchemaName(Cow<'static, str>);

impl SchemaName {
    pub fn of<T: ToSchema>() -> Self {
        SchemaName(T::name())
    }

    fn reference(&self) -> Value {
        json!({"$ref": format!("#/components/schemas/{}", self.0)})
    }
}

/// What a route reads as its body.
#[derive(Clone, Debug)]
enum RequestBody {
    /// A JSON body of the named schema.
    Json(SchemaName),
    /// Raw bytes of this media type.
    Binary(&'static str),
}

/// What a successful answer carries.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A JSON body of the named schema ([`json`]).
    Json(SchemaName),
    /// A JSON array of the named schema ([`list_of`]).
    List(SchemaName),
    /// A JSON object with no fixed fields (metrics, this document).
    Object,
    /// Server-sent events.
    Events,
    /// Prometheus text.
    PrometheusText,
    /// No body.
    Empty,
    /// A gzip-compressed tar.
    GzipTar,
}

/// A JSON answer of `T`'s schema.
pub fn json<T: ToSchema>() -> Reply {
    Reply::Json(SchemaName::of::<T>())
}

/// A JSON array of `T`s.
pub fn list_of<T: ToSchema>() -> Reply {
    Reply::List(SchemaName::of::<T>())
}

/// A query parameter's Rust type, by the name the document gives its JSON type.
pub trait QueryType {
    const NAME: &'static str;
}

impl QueryType for u64 {
    const NAME: &'static str = "integer";
}

impl QueryType for usize {
    const NAME: &'static str = "integer";
}

impl QueryType for i64 {
    const NAME: &'static str = "integer";
}

impl QueryType for String {
    const NAME: &'static str = "string";
}

impl QueryType for bool {
    const NAME: &'static str = "boolean";
}

/// Every served operation ([`crate::api_routes`]), each with its path parameters, query
/// parameters, request body, successes and the error responses every route can give.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in crate::api_routes().served() {
        let entry = paths.entry(op.path).or_insert_with(|| json!({}));
        entry[op.method] = operation(op);
    }
    json!({
        // The schemas are generated as JSON Schema 2020-12 (`type: [T, "null"]`): OpenAPI 3.1.
        "openapi": "3.1.0",
        "info": {"title": "flowrt control plane", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas()
        }
    })
}

/// One operation's entry under its path.
fn operation(op: &Operation) -> Value {
    let doc = &op.doc;
    let mut value = json!({
        "summary": doc.summary,
        "parameters": parameters(op),
        "responses": responses(doc),
    });
    // What the caller's roles must hold (see `Role::permissions`).
    value["x-permission"] = json!(op.permission.as_str());
    if op.method == "post" || op.method == "patch" {
        value["requestBody"] = request_body(doc.body.as_ref());
    }
    // Liveness, and the agents' join (which proves itself otherwise), take no token.
    if matches!(op.path, "/healthz" | "/api/v1/agents/join") {
        value["security"] = json!([]);
    }
    value
}

/// The path's `{name}` segments (a run's `{line}` a number, the rest strings), then the
/// route's query parameters.
fn parameters(op: &Operation) -> Vec<Value> {
    let path = op
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let ty = if name == "line" { "integer" } else { "string" };
            json!({"name": name, "in": "path", "required": true, "schema": {"type": ty}})
        });
    let query = op.doc.query.iter().map(|(name, ty)| {
        json!({"name": name, "in": "query", "required": false, "schema": {"type": ty}})
    });
    path.chain(query).collect()
}

/// The refusals every route can give, each as `{code, message}`.
const ERRORS: &[(&str, &str)] = &[
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
];

/// The route's own answers, then the shared refusals it does not answer otherwise.
fn responses(doc: &Doc) -> Value {
    let mut responses = Map::new();
    for (status, reply) in &doc.replies {
        responses.insert(status.to_string(), reply_response(*status, reply));
    }
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
    for (status, what) in ERRORS {
        // A route whose refusal has a body of its own (a save's conflict) keeps it.
        if !responses.contains_key(*status) {
            responses.insert(
                (*status).to_string(),
                json!({"description": what, "content": error}),
            );
        }
    }
    Value::Object(responses)
}

fn reply_response(status: u16, reply: &Reply) -> Value {
    // A declared refusal (a save's 409) is not "OK".
    let ok = if status < 300 {
        "OK"
    } else {
        "Refused; the body says why"
    };
    match reply {
        Reply::Json(name) => {
            json!({"description": ok, "content": {"application/json": {"schema": name.reference()}}})
        }
        Reply::List(name) => {
            json!({"description": "OK", "content": {"application/json": {"schema": {"type": "array", "items": name.reference()}}}})
        }
        Reply::Object => {
            json!({"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}})
        }
        Reply::Events => {
            json!({"description": "A stream of server-sent events", "content": {"text/event-stream": {"schema": {"type": "string"}}}})
        }
        Reply::PrometheusText => {
            json!({"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}})
        }
        Reply::Empty => json!({"description": "Done; no body"}),
        Reply::GzipTar => {
            json!({"description": "A gzip-compressed tar", "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}})
        }
    }
}

/// A POST's or PATCH's body: the declared one, else an optional JSON object of any shape (the
/// actions that read nothing accept `{}` as well as no body).
fn request_body(body: Option<&RequestBody>) -> Value {
    match body {
        Some(RequestBody::Json(name)) => {
            json!({"required": true, "content": {"application/json": {"schema": name.reference()}}})
        }
        Some(RequestBody::Binary(media_type)) => {
            json!({"required": true, "content": {*media_type: {"schema": {"type": "string", "format": "binary"}}}})
        }
        None => {
            json!({"required": false, "content": {"application/json": {"schema": {"type": "object"}}}})
        }
    }
}

/// Every body schema by name: the error shape, then `flowrt-api`'s requests and responses.
fn schemas() -> Map<String, Value> {
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
    schemas
}
