//! The HTTP API: the Push Gateway API v1 router, health, and the fallbacks
//! that keep every answer a Matrix JSON error (404/405 `M_UNRECOGNIZED`,
//! panics as 500 `M_UNKNOWN`).

pub mod error;
pub mod metrics;
mod notify;
pub mod serve;
pub mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::config::Limits;
use crate::dispatch::Dispatcher;
use error::ApiError;

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

/// A short id that ties the log lines of one request together; also sent back as `X-Request-Id`.
#[derive(Clone)]
pub struct RequestId(pub String);

pub fn router(state: Arc<AppState>) -> Router {
    let notify_route = post(notify::notify)
        .get(unifiedpush_discovery)
        .options(notify_options)
        .fallback(|| async {
            ApiError::MethodNotAllowed {
                allow: NOTIFY_METHODS,
            }
        });
    let health_route =
        get(health).fallback(|| async { ApiError::MethodNotAllowed { allow: "GET, HEAD" } });
    Router::new()
        .route("/_matrix/push/v1/notify", notify_route.clone())
        .route("/_matrix/push/v1/notify/", notify_route)
        .route("/health", health_route)
        .route(
            "/ready",
            get(ready).fallback(|| async { ApiError::MethodNotAllowed { allow: "GET, HEAD" } }),
        )
        .fallback(|req: Request| async move { ApiError::Unrecognized(req.uri().path().to_owned()) })
        .with_state(state)
        .layer(middleware::from_fn(request_id))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        // Outermost: sees the final status, a panic's 500 included.
        .layer(middleware::from_fn(access_log))
}

/// The peer of the connection a request came on (set by the accept loop).
#[derive(Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// One access line per request (`log.access`), on target `pushgate::access`;
/// a `/notify` answer brings its summary along (a response extension).
async fn access_log(req: Request, next: Next) -> Response {
    use crate::telemetry::access;
    if !access::enabled() {
        return next.run(req).await;
    }
    let started = std::time::Instant::now();
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    let client = access::client_address(
        peer,
        req.headers()
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes()),
        access::settings().x_forwarded_for,
    );
    let method = req.method().clone();
    // A clone shares the request's bytes.
    let uri = req.uri().clone();
    let mut resp = next.run(req).await;
    let notify = resp.extensions_mut().remove::<access::NotifySummary>();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    access::log(
        &access::Request {
            client,
            method: &method,
            path: uri.path(),
            status: resp.status().as_u16(),
            elapsed: started.elapsed(),
            request_id,
        },
        notify.as_ref(),
    );
    resp
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

async fn request_id(mut req: Request, next: Next) -> Response {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        format!(
            "{:06x}",
            rand_core::RngCore::next_u32(&mut rand_core::OsRng) & 0xff_ffff
        )
    });
    // A request id the caller set (a proxy, a homeserver) is kept, so one id
    // follows the push through every log line and span; a strange one is replaced.
    let given = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
        })
        .map(str::to_owned);
    let id = given.unwrap_or_else(|| {
        // Not `format!`: this runs for every request.
        let mut n = itoa::Buffer::new();
        let n = n.format(COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut id = String::with_capacity(prefix.len() + 1 + n.len());
        id.push_str(prefix);
        id.push('-');
        id.push_str(n);
        id
    });
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = crate::dispatch::panic_message(err.as_ref());
    tracing::error!(panic = what, "request handler panicked (a bug)");
    ApiError::Internal.into_response()
}
