//! The HTTP API: the Push Gateway API v1 routes, health, and the fallbacks
//! that keep every answer a Matrix JSON error (404/405 `M_UNRECOGNIZED`,
//! panics as 500 `M_UNKNOWN`, see `front`).

pub mod error;
mod front;
pub mod metrics;
mod notify;
pub mod serve;
pub mod tls;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::config::Limits;
use crate::dispatch::Dispatcher;
use error::ApiError;
pub use front::Site;

/// Everything a request handler needs, shared by all requests.
pub struct AppState {
    pub dispatcher: Arc<Dispatcher>,
    pub limits: Limits,
    /// `/notify` requests being handled once their body is read, bounded by
    /// `limits.max_inflight_requests`.
    pub inflight: Arc<tokio::sync::Semaphore>,
    /// Bytes of `/notify` bodies being read or handled, bounded by
    /// `limits.max_inflight_bytes` (one permit per byte; see `notify.rs`).
    pub inflight_bytes: Arc<tokio::sync::Semaphore>,
    /// `http.body_read_timeout`: a body must have arrived this long after its headers.
    pub body_read_timeout: std::time::Duration,
}

impl AppState {
    pub fn new(
        dispatcher: Arc<Dispatcher>,
        limits: Limits,
        body_read_timeout: std::time::Duration,
    ) -> AppState {
        AppState {
            inflight: Arc::new(tokio::sync::Semaphore::new(limits.max_inflight_requests)),
            inflight_bytes: Arc::new(tokio::sync::Semaphore::new(
                limits
                    .max_inflight_bytes
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            dispatcher,
            limits,
            body_read_timeout,
        }
    }
}

/// Every route but `POST /notify`, which `front` sends to its handler before
/// the router is asked (a `POST` on the notify paths never reaches it).
fn router(state: Arc<AppState>) -> Router {
    let notify_route = get(unifiedpush_discovery)
        .options(notify_options)
        .fallback(|| async {
            ApiError::MethodNotAllowed {
                allow: NOTIFY_METHODS,
            }
        });
    let health_route =
        get(health).fallback(|| async { ApiError::MethodNotAllowed { allow: "GET, HEAD" } });
    Router::new()
        .route(front::NOTIFY_PATHS[0], notify_route.clone())
        .route(front::NOTIFY_PATHS[1], notify_route)
        .route("/health", health_route)
        .route(
            "/ready",
            get(ready).fallback(|| async { ApiError::MethodNotAllowed { allow: "GET, HEAD" } }),
        )
        .fallback(|req: Request| async move { ApiError::Unrecognized(req.uri().path().to_owned()) })
        .with_state(state)
}

/// The methods `/notify` answers: `POST` (the Push Gateway API) and the
/// UnifiedPush discovery (`GET`, `HEAD`).
const NOTIFY_METHODS: &str = "GET, HEAD, POST, OPTIONS";

/// UnifiedPush clients probe the gateway with a `GET` on the notify URL before
/// registering a pusher with it; this answer says "a Matrix gateway".
/// (`HEAD` is answered by the same route, without the body.)
async fn unifiedpush_discovery() -> impl IntoResponse {
    (
        StatusCode::OK,
        Json(json!({ "unifiedpush": { "gateway": "matrix" } })),
    )
}

async fn notify_options() -> impl IntoResponse {
    (
        StatusCode::NO_CONTENT,
        [(axum::http::header::ALLOW, NOTIFY_METHODS)],
    )
}

async fn health() -> impl IntoResponse {
    (StatusCode::OK, Json(json!({ "status": "ok" })))
}

/// Ready to take traffic: the store (when there is one) answers within a
/// second, its last write succeeded, and the outbox worker is running. Apps
/// whose rejection breaker is open are listed, but do not make the gateway
/// unready: every instance would see the same, and pushes still flow.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ok = || {
        let mut body = json!({ "status": "ready" });
        let open = state.dispatcher.rejection_breakers_open();
        if !open.is_empty() {
            body["rejection_breaker_open"] = json!(open);
        }
        (StatusCode::OK, Json(body)).into_response()
    };
    match state
        .dispatcher
        .store_ready(std::time::Duration::from_secs(1))
        .await
    {
        Ok(()) => ok(),
        Err(why) => ApiError::NotReady(why).into_response(),
    }
}
