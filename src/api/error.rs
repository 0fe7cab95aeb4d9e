//! The one place where errors become HTTP responses: status, Matrix `errcode`
//! and a message that names what was wrong.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ids::PushKey;
use crate::notification::ParseError;

/// What a 429 asks the homeserver to wait.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("timed out reading the request body")]
    BodyTimeout,
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("unrecognized request: {0}")]
    Unrecognized(String),
    #[error("method not allowed here; allowed: {allow}")]
    MethodNotAllowed { allow: &'static str },
    /// Some devices failed temporarily and nothing can queue them: the homeserver must retry.
    #[error("{temporary} device(s) failed temporarily; retry later")]
    Upstream {
        temporary: usize,
        rejected: Vec<PushKey>,
    },
    /// An in-flight limit was reached: the homeserver should retry after a pause.
    #[error("too many requests in flight ({limit}); retry later")]
    Overloaded { limit: &'static str },
    /// The in-flight byte budget (`limits.max_inflight_bytes`) is spent: retry after a pause.
    #[error("too many request bytes in flight (limits.max_inflight_bytes: {limit}); retry later")]
    OverBudget { limit: usize },
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Parse(ParseError::NotJson(_)) => (StatusCode::BAD_REQUEST, "M_NOT_JSON"),
            ApiError::Parse(ParseError::BadJson { .. }) => (StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
            ApiError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "M_UNKNOWN"),
            ApiError::BodyRead(_) => (StatusCode::BAD_REQUEST, "M_UNKNOWN"),
            ApiError::Unrecognized(_) => (StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
            ApiError::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
            ApiError::Upstream { .. } => (StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
            ApiError::Overloaded { .. } | ApiError::OverBudget { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED")
            }
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, errcode) = self.status_and_code();
        let mut body = json!({ "errcode": errcode, "error": self.to_string() });
        if let ApiError::Upstream { rejected, .. } = &self {
            // Not part of the spec's error shape, but it costs nothing and helps a homeserver that reads it.
            body["rejected"] = json!(rejected);
        }
        let retry = matches!(
            self,
            ApiError::Overloaded { .. } | ApiError::OverBudget { .. }
        );
        if retry {
            body["retry_after_ms"] = json!(RETRY_AFTER.as_millis() as u64);
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if retry {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER.as_secs()),
            );
        }
        if let ApiError::OverBudget { .. } = &self {
            // Answered before the body was read: the connection cannot carry
            // another request (HTTP/1; hyper drops this header on HTTP/2).
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::MethodNotAllowed { allow } = self {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}
