//! The one error type handlers return: rendered as `{code, message}` with an HTTP status. Internal
//! failures are logged and answered with a generic message, never their details.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flowrt_api::{ApiError, ErrorCode};

#[derive(Debug)]
pub struct ApiErr {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiErr {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiErr {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
    }
    /// A failure of flowrt itself: the details go to the server log, not to the client.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!("{context}: {err}");
        eprintln!("error: {context}: {err}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("{context} failed; see the server log"),
        )
    }
}

impl From<flowrt_store::StoreError> for ApiErr {
    fn from(e: flowrt_store::StoreError) -> Self {
        use flowrt_store::StoreError as E;
        match e {
            E::Exists { .. } => ApiErr::conflict(e.to_string()),
            E::NotFound { .. } => ApiErr::not_found(e.to_string()),
            E::InvalidName { .. } | E::BadValue { .. } | E::NulInText { .. } => {
                ApiErr::bad_request(e.to_string())
            }
            other => ApiErr::internal("the store", other),
        }
    }
}

/// The session manager's refusals and failures, as the API answers them (an internal failure was
/// logged where it happened).
impl From<flowrt_session::manager::ManageError> for ApiErr {
    fn from(e: flowrt_session::manager::ManageError) -> Self {
        use flowrt_session::manager::ErrorKind as K;
        let (status, code) = match e.kind {
            K::BadRequest => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            K::Forbidden => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            K::NotFound => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            K::Conflict => (StatusCode::CONFLICT, ErrorCode::Conflict),
            K::Internal => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        };
        ApiErr::new(status, code, e.message)
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(ApiError {
                code: self.code,
                message: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"flowrt\""),
            );
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiErr>;

/// Every rejection the API gives is JSON `{code, message}`, including those axum's extractors and
/// router write themselves as plain text (bad JSON, wrong content type, a body too large, an
/// unknown route or method): clients parse one shape.
pub async fn json_rejections(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let code = match status {
        StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidBody,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::Rejected,
    };
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match (status, text.is_empty()) {
        (StatusCode::NOT_FOUND, true) => {
            "no such route; GET /api/v1/openapi.json lists them".to_string()
        }
        (StatusCode::METHOD_NOT_ALLOWED, true) => {
            "this route does not take that method; GET /api/v1/openapi.json lists them".to_string()
        }
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, _) => {
            "send a JSON body with content-type: application/json".to_string()
        }
        (_, true) => status
            .canonical_reason()
            .unwrap_or("request rejected")
            .to_string(),
        _ => text,
    };
    let mut out = (status, Json(ApiError { code, message })).into_response();
    // Keep what the original response said about retrying or authenticating.
    for (name, value) in parts.headers.iter() {
        if name == axum::http::header::WWW_AUTHENTICATE
            || name == axum::http::header::RETRY_AFTER
            || name == axum::http::header::ALLOW
        {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// Request bodies of the API are JSON objects (or nothing): a body that starts with anything but
/// `{` is refused before a handler reads it, also on routes that take no body, so a JSON array
/// or text is never taken for the object a route documents. The body is looked at only up to
/// its first character that is not white space; the rest streams on to the handler. Raw uploads
/// (flow snapshots, batch data) are not JSON and pass as they are.
pub async fn object_bodies(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::Method;
    use futures::StreamExt;
    let path = req.uri().path();
    let raw_upload = path == "/api/v1/data"
        || (req.method() == Method::POST && path.starts_with("/api/v1/flows/"));
    if !matches!(*req.method(), Method::POST | Method::PATCH | Method::PUT)
        || !path.starts_with("/api/v1/")
        || raw_upload
    {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let mut stream = body.into_data_stream();
    let mut seen: Vec<axum::body::Bytes> = Vec::new();
    let mut first = None;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return ApiErr::bad_request("the request body could not be read").into_response();
        };
        first = chunk.iter().copied().find(|b| !b.is_ascii_whitespace());
        seen.push(chunk);
        let read: usize = seen.iter().map(|c| c.len()).sum();
        if first.is_some() || read > 64 * 1024 {
            break;
        }
    }
    match first {
        None | Some(b'{') => {}
        Some(_) => {
            return ApiErr::bad_request(
                "the request body must be a JSON object ({...}), or empty where the route takes none; GET /api/v1/openapi.json shows each route's body",
            )
            .into_response()
        }
    }
    let rest = futures::stream::iter(seen.into_iter().map(Ok::<_, axum::Error>)).chain(stream);
    let body = axum::body::Body::from_stream(rest);
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// Every answer says its content type is what it is: browsers must not sniff it into something
/// else (an uploaded text rendered as HTML).
pub async fn no_sniff(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .entry(axum::http::header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(axum::http::HeaderValue::from_static("nosniff"));
    resp
}
