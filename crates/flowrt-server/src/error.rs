//! The one error type handlers return: rendered as `{code, message}` with an HTTP status. Internal
//! failures are logged and answered with a generic message, never their details.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flowrt_api::ApiError;

#[derive(Debug)]
pub struct ApiErr {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiErr {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiErr {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", message)
    }
    /// A failure of flowrt itself: the details go to the server log, not to the client.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!("{context}: {err}");
        eprintln!("error: {context}: {err}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
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
            E::InvalidName { .. } | E::BadValue { .. } => ApiErr::bad_request(e.to_string()),
            other => ApiErr::internal("the store", other),
        }
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(ApiError {
                code: self.code.to_string(),
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
