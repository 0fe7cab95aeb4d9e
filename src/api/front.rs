//! What a listener does with each request: the API's requests get a request
//! id, a Matrix 500 if their handler panics, and an access line; a `POST` to
//! the notify path goes straight to its handler, everything else through
//! the router.
//!
//! Why not axum middleware and the router for `/notify` too: each
//! `from_fn` layer clones and boxes the service below it and boxes its own
//! future, and every poll of the request walks down all of them (a request
//! is polled three or four times); with the router's matching and the
//! handler's extractors (a copy of the headers) that was about 14,000
//! instructions a notification, more than parsing its body
//! (`docs/performance.md`). The notify route is matched here exactly as the
//! router matched it: the raw path, `POST` only.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::FutureExt;
use hyper::body::Incoming;
use tower::ServiceExt;

use super::error::ApiError;
use super::notify::RequestBody;
use super::AppState;
use crate::telemetry::{self, access};

/// The notify paths (the second as some homeservers were configured).
pub const NOTIFY_PATHS: [&str; 2] = ["/_matrix/push/v1/notify", "/_matrix/push/v1/notify/"];

/// What one listener serves.
#[derive(Clone)]
pub struct Site {
    router: Router,
    /// The API's state: requests get ids, panic answers and access lines.
    api: Option<Arc<AppState>>,
}

impl Site {
    /// The Push Gateway API (`/notify`, health, readiness).
    pub fn api(state: Arc<AppState>) -> Site {
        Site {
            router: super::router(state.clone()),
            api: Some(state),
        }
    }

    /// A router served as it is (the metrics listener): no request ids, no access lines.
    pub fn plain(router: Router) -> Site {
        Site { router, api: None }
    }

    /// The answer to `req`, which came from `peer`.
    pub async fn handle(&self, req: http::Request<Incoming>, peer: SocketAddr) -> Response {
        match &self.api {
            Some(state) => api(state, &self.router, req, peer).await,
            None => route(&self.router, req).await,
        }
    }
}

async fn route<B: RequestBody>(router: &Router, req: http::Request<B>) -> Response {
    match router.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

/// An API request: its id, its handler (a panic answered 500 `M_UNKNOWN`), its access line.
async fn api<B: RequestBody>(
    state: &Arc<AppState>,
    router: &Router,
    req: http::Request<B>,
    peer: SocketAddr,
) -> Response {
    let notify =
        req.method() == Method::POST && NOTIFY_PATHS.iter().any(|p| *p == req.uri().path());
    let line = access::enabled().then(|| Started::new(&req, peer));
    let id = request_id(req.headers());
    let handled = async {
        if notify {
            super::notify::notify(state, &id, req, line.is_some()).await
        } else {
            (route(router, req).await, None)
        }
    };
    let (mut resp, summary) = match AssertUnwindSafe(handled).catch_unwind().await {
        Ok(answered) => answered,
        Err(panic) => (panic_response(panic), None),
    };
    if let Some(line) = line {
        line.log(&resp, &id, summary.as_ref());
    }
    // The id's own buffer becomes the header's (only allowed characters are in it).
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(id)) {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    resp
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the access line needs from the request, taken before it is handled.
struct Started {
    at: Instant,
    client: Option<std::net::IpAddr>,
    method: Method,
    path: Cow<'static, str>,
}

impl Started {
    fn new<B>(req: &http::Request<B>, peer: SocketAddr) -> Started {
        let path = req.uri().path();
        let path = match NOTIFY_PATHS.iter().find(|p| **p == path) {
            Some(p) => Cow::Borrowed(*p),
            None => Cow::Owned(path.to_owned()),
        };
        Started {
            at: Instant::now(),
            client: access::client_address(
                Some(peer.ip()),
                req.headers()
                    .get_all("x-forwarded-for")
                    .iter()
                    .map(|v| v.as_bytes()),
                access::settings().x_forwarded_for,
            ),
            method: req.method().clone(),
            path,
        }
    }

    fn log(self, resp: &Response, request_id: &str, notify: Option<&access::NotifySummary>) {
        telemetry::log_access(
            &access::Request {
                client: self.client,
                method: &self.method,
                path: &self.path,
                status: resp.status().as_u16(),
                elapsed: self.at.elapsed(),
                request_id,
            },
            notify,
        );
    }
}

/// The request's id: the one the caller set (a proxy, a homeserver), so one
/// id follows the push through every log line and span, unless it is
/// strange; else a new one (a per-process prefix and a counter).
fn request_id(headers: &HeaderMap) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PREFIX: OnceLock<String> = OnceLock::new();
    let given = headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
        });
    if let Some(given) = given {
        return given.to_owned();
    }
    let prefix = PREFIX.get_or_init(|| {
        format!(
            "{:06x}",
            rand_core::RngCore::next_u32(&mut rand_core::OsRng) & 0xff_ffff
        )
    });
    // Not `format!`: this runs for every request.
    let mut n = itoa::Buffer::new();
    let n = n.format(COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut id = String::with_capacity(prefix.len() + 1 + n.len());
    id.push_str(prefix);
    id.push('-');
    id.push_str(n);
    id
}

fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = crate::dispatch::panic_message(err.as_ref());
    tracing::error!(panic = what, "request handler panicked (a bug)");
    ApiError::Internal.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use http_body_util::{BodyExt, Full};

    fn state() -> Arc<AppState> {
        let dispatcher = crate::dispatch::Dispatcher::new(
            // No apps: what the tests send never reaches a push.
            Default::default(),
            None,
            crate::config::DispatchConfig::default(),
            Arc::new(crate::telemetry::metrics::Metrics::new()),
        );
        Arc::new(AppState::new(
            Arc::new(dispatcher),
            crate::config::Limits::default(),
            std::time::Duration::from_secs(5),
        ))
    }

    fn request(method: Method, path: &str, id: Option<&str>) -> http::Request<Full<bytes::Bytes>> {
        let mut req = http::Request::builder().method(method).uri(path);
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.body(Full::new(bytes::Bytes::from_static(b"{}")))
            .expect("a request")
    }

    async fn answer(resp: Response) -> (u16, Option<String>, serde_json::Value) {
        let status = resp.status().as_u16();
        let id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, id, serde_json::from_slice(&body).expect("JSON"))
    }

    const PEER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9);

    /// A handler that panics is answered 500 `M_UNKNOWN`, with the request's id.
    #[tokio::test]
    async fn a_panic_is_a_matrix_500() {
        async fn boom() -> &'static str {
            panic!("a bug")
        }
        let router = Router::new().route("/boom", get(boom));
        let resp = api(
            &state(),
            &router,
            request(Method::GET, "/boom", Some("t-1")),
            PEER,
        )
        .await;
        let (status, id, body) = answer(resp).await;
        assert_eq!((status, id.as_deref()), (500, Some("t-1")));
        assert_eq!(body["errcode"], "M_UNKNOWN");
    }

    /// `POST` on either notify path reaches the handler (here: a body
    /// without `notification`); other methods go to the router.
    #[tokio::test]
    async fn post_on_the_notify_paths_goes_to_the_handler() {
        let router = Router::new().fallback(|| async { "routed" });
        for path in NOTIFY_PATHS {
            let resp = api(&state(), &router, request(Method::POST, path, None), PEER).await;
            let (status, id, body) = answer(resp).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert_eq!(body["errcode"], "M_BAD_JSON", "{path}");
            let id = id.expect("a generated request id");
            let (prefix, n) = id.split_once('-').expect("prefix-counter");
            assert_eq!(prefix.len(), 6, "{id}");
            assert!(n.parse::<u64>().is_ok(), "{id}");
        }
        let resp = api(
            &state(),
            &router,
            request(Method::GET, NOTIFY_PATHS[0], None),
            PEER,
        )
        .await;
        assert_eq!(resp.status().as_u16(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"routed");
        let resp = api(
            &state(),
            &router,
            request(Method::POST, "/_matrix/push/v1/notifyx", None),
            PEER,
        )
        .await;
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"routed");
    }
}
