//! A fake APNs: HTTP/2 over TLS (ALPN `h2` only, a certificate from the test
//! CA), `POST /3/device/{token}`. It checks what Apple checks — the provider
//! JWT (ES256, `kid`, `iss`, fresh `iat`) or the client certificate, the
//! `apns-topic`/`apns-push-type`/`apns-priority` headers, a JSON body within
//! the size limit — records every request and answers each device token as
//! told by [`ApnsBehaviour`].

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::load::{LoadKnobs, VerifiedOnce};
use crate::tls::TestCa;

/// How the fake answers pushes to one device token.
#[derive(Clone, Debug)]
pub enum ApnsBehaviour {
    /// 200 (the default).
    Ok,
    /// This status with `{"reason": …}`, e.g. 400 `BadDeviceToken`, 429 `TooManyRequests`, 500 `InternalServerError`.
    Reason(u16, &'static str),
    /// 410 `Unregistered` with Apple's `timestamp` (milliseconds).
    Unregistered { timestamp_ms: u64 },
    /// Answer `status`/`reason` for the next `times` pushes, then 200.
    FailTimes {
        times: usize,
        status: u16,
        reason: &'static str,
    },
    /// Answer `status`/`reason` with these extra response headers (any value,
    /// e.g. an absurd `Retry-After`) for the next `times` pushes, then 200.
    WithHeaders {
        times: usize,
        status: u16,
        reason: &'static str,
        headers: Vec<(&'static str, String)>,
    },
    /// Answer 200, then send GOAWAY and close the connection.
    GoAway,
    /// Never answer.
    Stall,
}

/// How the fake authenticates the provider.
#[derive(Clone)]
pub enum ApnsAuth {
    /// Provider tokens signed by this key, with this key id and team id.
    Token {
        key: VerifyingKey,
        key_id: String,
        team_id: String,
    },
    /// A client certificate issued by the test CA (checked in the TLS handshake).
    Certificate,
}

#[derive(Clone, Debug)]
pub struct ApnsRequest {
    pub token: String,
    pub headers: Vec<(String, String)>,
    pub payload: Result<Value, String>,
    /// The provider JWT (token auth), if any.
    pub jwt: Option<String>,
    /// Why authentication failed, if it did.
    pub auth_error: Option<String>,
    pub answered: u16,
    /// The TLS connection (0-based, in accept order) the request came on.
    pub connection: usize,
}

impl ApnsRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Inner {
    auth: ApnsAuth,
    behaviours: Mutex<HashMap<String, ApnsBehaviour>>,
    expired_jwts: Mutex<HashSet<String>>,
    requests: Mutex<Vec<ApnsRequest>>,
    arrived: Notify,
    connections: AtomicUsize,
    closed: AtomicUsize,
    load: LoadKnobs,
    verified: VerifiedOnce,
}

pub struct FakeApns {
    inner: Arc<Inner>,
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApns {
    pub async fn start(ca: &TestCa, auth: ApnsAuth) -> FakeApns {
        let tls = ca.server_config(&[b"h2"], matches!(auth, ApnsAuth::Certificate));
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake APNs");
        let port = listener.local_addr().expect("addr").port();
        let inner = Arc::new(Inner {
            auth,
            behaviours: Mutex::new(HashMap::new()),
            expired_jwts: Mutex::new(HashSet::new()),
            requests: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            connections: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            load: LoadKnobs::default(),
            verified: VerifiedOnce::default(),
        });
        let state = inner.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let connection = state.connections.fetch_add(1, Ordering::SeqCst);
                    let goaway = Arc::new(Notify::new());
                    let (svc_state, svc_goaway) = (state.clone(), goaway.clone());
                    let service = hyper::service::service_fn(move |req| {
                        handle(svc_state.clone(), svc_goaway.clone(), connection, req)
                    });
                    // Apple allows up to 1,000 concurrent streams per connection.
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(1000)
                        .serve_connection(TokioIo::new(tls), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = goaway.notified() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                    state.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        FakeApns { inner, port, task }
    }

    /// The base URL to configure as the app's `endpoint`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub fn set(&self, token: &str, b: ApnsBehaviour) {
        if let Ok(mut m) = self.inner.behaviours.lock() {
            m.insert(token.to_owned(), b);
        }
    }

    /// From now on, the provider JWTs seen so far are answered 403 `ExpiredProviderToken`.
    pub fn expire_seen_jwts(&self) {
        let seen: Vec<String> = self.requests().into_iter().filter_map(|r| r.jwt).collect();
        if let Ok(mut e) = self.inner.expired_jwts.lock() {
            e.extend(seen);
        }
    }

    pub fn requests(&self) -> Vec<ApnsRequest> {
        self.inner
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Waits until at least `n` requests arrived or `timeout` passed.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ApnsRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.inner.arrived.notified();
            let got = self.requests();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }

    /// The benchmark's knobs: count-only mode, answer delay, counts.
    pub fn load(&self) -> &LoadKnobs {
        &self.inner.load
    }

    /// TLS connections completed so far.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until `n` connections have been closed; returns how many were.
    pub async fn wait_closed(&self, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let closed = self.inner.closed.load(Ordering::SeqCst);
            if closed >= n || tokio::time::Instant::now() >= deadline {
                return closed;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

type Body = Full<Bytes>;

/// The device token of a `/3/device/{token}` path ("" when the path is another).
fn device_token(path: &str) -> &str {
    path.strip_prefix("/3/device/").unwrap_or_default()
}

fn is_device_token(token: &str) -> bool {
    !token.is_empty() && token.chars().all(|c| c.is_ascii_hexdigit())
}

/// Apple's payload limit: 5 KiB for VoIP pushes, 4 KiB for the others.
fn payload_limit(push_type: Option<&str>) -> usize {
    if push_type == Some("voip") {
        5120
    } else {
        4096
    }
}

async fn body_bytes(body: Incoming) -> Bytes {
    body.collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

fn reply(status: u16, reason: Option<Value>, apns_id: &str) -> Response<Body> {
    let body = reason.map(|r| r.to_string()).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(apns_id) {
        resp.headers_mut().insert("apns-id", v);
    }
    resp
}

async fn handle(
    inner: Arc<Inner>,
    goaway: Arc<Notify>,
    connection: usize,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if inner.load.count_only() {
        return Ok(count_only(&inner, req).await);
    }
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let apns_id = get("apns-id").unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".into());
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let body = body_bytes(req.into_body()).await;
    let token = device_token(&path).to_owned();

    let jwt = get("authorization").and_then(|a| a.strip_prefix("bearer ").map(str::to_owned));
    let expired = jwt.as_ref().is_some_and(|j| {
        inner
            .expired_jwts
            .lock()
            .map(|e| e.contains(j))
            .unwrap_or(false)
    });
    let auth_error = match (&inner.auth, &jwt) {
        (
            ApnsAuth::Token {
                key,
                key_id,
                team_id,
            },
            Some(j),
        ) => verify_jwt(j, key, key_id, team_id).err(),
        (ApnsAuth::Token { .. }, None) => Some("no provider token".into()),
        (ApnsAuth::Certificate, _) => None,
    };
    let payload =
        serde_json::from_slice::<Value>(&body).map_err(|e| format!("body is not JSON: {e}"));
    let limit = payload_limit(get("apns-push-type").as_deref());
    let behaviour = inner
        .behaviours
        .lock()
        .ok()
        .and_then(|m| m.get(&token).cloned())
        .unwrap_or(ApnsBehaviour::Ok);

    let (status, reason) = if method != hyper::Method::POST || token.is_empty() {
        (405, Some(json!({"reason": "MethodNotAllowed"})))
    } else if expired {
        (403, Some(json!({"reason": "ExpiredProviderToken"})))
    } else if auth_error.is_some() {
        (403, Some(json!({"reason": "InvalidProviderToken"})))
    } else if get("apns-topic").is_none() {
        (400, Some(json!({"reason": "MissingTopic"})))
    } else if !is_device_token(&token) {
        (400, Some(json!({"reason": "BadDeviceToken"})))
    } else if body.len() > limit {
        (413, Some(json!({"reason": "PayloadTooLarge"})))
    } else if payload.is_err() {
        (400, Some(json!({"reason": "PayloadEmpty"})))
    } else {
        match &behaviour {
            ApnsBehaviour::Ok | ApnsBehaviour::GoAway => (200, None),
            ApnsBehaviour::Reason(s, r) => (*s, Some(json!({"reason": r}))),
            ApnsBehaviour::Unregistered { timestamp_ms } => (
                410,
                Some(json!({"reason": "Unregistered", "timestamp": timestamp_ms})),
            ),
            ApnsBehaviour::FailTimes {
                times,
                status,
                reason,
            }
            | ApnsBehaviour::WithHeaders {
                times,
                status,
                reason,
                ..
            } => {
                let failed_before = inner
                    .requests
                    .lock()
                    .map(|r| {
                        r.iter()
                            .filter(|x| x.token == token && x.answered == *status)
                            .count()
                    })
                    .unwrap_or(0);
                if failed_before < *times {
                    (*status, Some(json!({"reason": reason})))
                } else {
                    (200, None)
                }
            }
            ApnsBehaviour::Stall => (0, None),
        }
    };
    if let Ok(mut r) = inner.requests.lock() {
        r.push(ApnsRequest {
            token,
            headers: headers.clone(),
            payload,
            jwt,
            auth_error,
            answered: status,
            connection,
        });
    }
    inner.arrived.notify_waiters();
    let mut extra = Vec::new();
    match behaviour {
        ApnsBehaviour::Stall if status == 0 => std::future::pending::<()>().await,
        ApnsBehaviour::GoAway if status == 200 => goaway.notify_one(),
        ApnsBehaviour::WithHeaders { headers, .. } if status != 200 => extra = headers,
        _ => {}
    }
    let mut resp = reply(status, reason, &apns_id);
    for (name, value) in extra {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
            resp.headers_mut().append(name, v);
        }
    }
    Ok(resp)
}

/// The benchmark's path: the same checks as [`handle`] for a well-behaved
/// client (token, provider JWT, topic, JSON within the limit), nothing recorded.
async fn count_only(inner: &Inner, req: Request<Incoming>) -> Response<Body> {
    let token_ok = is_device_token(device_token(req.uri().path()));
    let auth_ok = match &inner.auth {
        ApnsAuth::Certificate => true,
        ApnsAuth::Token {
            key,
            key_id,
            team_id,
        } => req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|a| a.strip_prefix("bearer "))
            .is_some_and(|jwt| {
                inner
                    .verified
                    .check(jwt, || verify_jwt(jwt, key, key_id, team_id).is_ok())
            }),
    };
    let topic_ok = req.headers().contains_key("apns-topic");
    let limit = payload_limit(
        req.headers()
            .get("apns-push-type")
            .and_then(|v| v.to_str().ok()),
    );
    let apns_id = req
        .headers()
        .get("apns-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("00000000-0000-0000-0000-000000000000")
        .to_owned();
    let body = body_bytes(req.into_body()).await;
    let json_ok =
        body.len() <= limit && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
    inner.load.pause().await;
    let (status, reason) = if !auth_ok {
        (403, Some(json!({"reason": "InvalidProviderToken"})))
    } else if !token_ok || !topic_ok || !json_ok {
        (400, Some(json!({"reason": "BadRequest"})))
    } else {
        (200, None)
    };
    inner.load.count(status == 200);
    reply(status, reason, &apns_id)
}

/// Checks an ES256 provider token as Apple does.
fn verify_jwt(jwt: &str, key: &VerifyingKey, key_id: &str, team_id: &str) -> Result<(), String> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a three-part JWT".into());
    };
    let decode = |p: &str| {
        URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| "not base64url".to_owned())
    };
    let header: Value = serde_json::from_slice(&decode(h)?).map_err(|e| e.to_string())?;
    let claims: Value = serde_json::from_slice(&decode(c)?).map_err(|e| e.to_string())?;
    if header["alg"] != "ES256" || header["kid"] != key_id {
        return Err(format!(
            "header {header}: expected alg ES256 and kid {key_id}"
        ));
    }
    let sig =
        Signature::from_slice(&decode(s)?).map_err(|_| "signature is not 64 bytes".to_owned())?;
    key.verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| "signature does not verify".to_owned())?;
    if claims["iss"] != team_id {
        return Err(format!(
            "iss {} is not the team id {team_id}",
            claims["iss"]
        ));
    }
    let iat = claims["iat"].as_u64().ok_or("no numeric iat")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if iat > now + 60 || now.saturating_sub(iat) > 3600 {
        return Err(format!("iat {iat} is not within the last hour (now {now})"));
    }
    Ok(())
}
