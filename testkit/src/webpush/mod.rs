//! A fake Web Push service: `POST /push/{name}` for subscriptions registered
//! with [`FakeWebPush::subscribe`]. Every request is checked (encoding, TTL,
//! VAPID, decryption), recorded, and answered with the subscription's
//! [`Behaviour`] — or 400/401/413 when a check fails, as a real service would.
//! It speaks plain HTTP, or HTTPS with a test-CA certificate for an origin that
//! looks public ([`FakeWebPush::start_tls_at`], reached through a redirecting proxy).

pub mod ece;
pub mod vapid;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use tokio::sync::Notify;

use crate::load::{LoadKnobs, VerifiedOnce};

pub use vapid::VapidClaims;

/// A browser-side subscription: what a browser's PushManager holds.
#[derive(Clone)]
pub struct Subscription {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Subscription {
    pub fn generate() -> Self {
        let mut auth = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut auth);
        Subscription {
            secret: p256::SecretKey::random(&mut rand_core::OsRng),
            auth,
        }
    }

    /// The `p256dh` key (base64url, uncompressed point): the Matrix pushkey.
    pub fn p256dh(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.secret.public_key().to_encoded_point(false).as_bytes())
    }

    /// The 16-byte auth secret, base64url.
    pub fn auth(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.auth)
    }

    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        ece::decrypt(body, &self.secret, &self.auth)
    }
}

/// How the fake answers a subscription's pushes.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answer this status at once (default: 201 Created).
    Status(u16),
    /// Wait, then answer the status.
    Delay(Duration, u16),
    /// Never answer.
    Stall,
}

#[derive(Clone, Debug)]
pub struct ReceivedPush {
    pub name: String,
    /// Lower-case header names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    /// Decrypted and parsed as JSON, or why not.
    pub payload: Result<serde_json::Value, String>,
    pub vapid: Result<VapidClaims, String>,
    pub answered: u16,
}

impl ReceivedPush {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inner {
    origin: String,
    subs: Mutex<HashMap<String, (Subscription, Behaviour)>>,
    vapid_key: Mutex<Option<String>>,
    received: Mutex<Vec<ReceivedPush>>,
    arrived: Notify,
    connections: AtomicUsize,
    load: LoadKnobs,
    verified: VerifiedOnce,
}

pub struct FakeWebPush {
    inner: Arc<Inner>,
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeWebPush {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeWebPush {
    pub async fn start() -> FakeWebPush {
        Self::start_at(None).await
    }

    /// A fake reached through a proxy at `origin` (e.g. `http://127.0.0.1:<port>`): the
    /// subscription URLs and the VAPID audience it expects use that origin.
    pub async fn start_at(origin: Option<String>) -> FakeWebPush {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake web push");
        let port = listener.local_addr().expect("addr").port();
        let inner = Arc::new(Inner {
            origin: origin.unwrap_or_else(|| format!("http://127.0.0.1:{port}")),
            ..Default::default()
        });
        let counter = inner.clone();
        let listener = listener.tap_io(move |tcp| {
            let _ = tcp.set_nodelay(true);
            counter.connections.fetch_add(1, Ordering::SeqCst);
        });
        let app = router(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeWebPush { inner, port, task }
    }

    /// A fake that speaks HTTPS (HTTP/1.1) on 127.0.0.1 with the certificate of `tls`, for
    /// `origin` (e.g. `https://1.1.1.1`): the subscription URLs and the VAPID audience use
    /// that origin. Tests reach it through [`crate::proxy::FakeProxy::start_redirecting_to`].
    pub async fn start_tls_at(origin: &str, tls: Arc<rustls::ServerConfig>) -> FakeWebPush {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake web push");
        let port = tcp.local_addr().expect("addr").port();
        let inner = Arc::new(Inner {
            origin: origin.to_owned(),
            ..Default::default()
        });
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(tls),
            inner: inner.clone(),
        };
        let app = router(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeWebPush { inner, port, task }
    }

    /// Registers an existing subscription under another name (another endpoint URL with
    /// the same keys, as when a browser's push service moves a subscription); returns the URL.
    pub fn subscribe_with(&self, name: &str, sub: &Subscription) -> String {
        if let Ok(mut subs) = self.inner.subs.lock() {
            subs.insert(name.to_owned(), (sub.clone(), Behaviour::Status(201)));
        }
        format!("{}/push/{name}", self.inner.origin)
    }

    pub fn origin(&self) -> String {
        self.inner.origin.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Registers a new subscription; returns its endpoint URL and keys.
    pub fn subscribe(&self, name: &str) -> (String, Subscription) {
        let sub = Subscription::generate();
        if let Ok(mut subs) = self.inner.subs.lock() {
            subs.insert(name.to_owned(), (sub.clone(), Behaviour::Status(201)));
        }
        (format!("{}/push/{name}", self.inner.origin), sub)
    }

    pub fn set_behaviour(&self, name: &str, b: Behaviour) {
        if let Ok(mut subs) = self.inner.subs.lock() {
            if let Some(entry) = subs.get_mut(name) {
                entry.1 = b;
            }
        }
    }

    /// Pins the VAPID application server key (`k=`) that requests must carry.
    pub fn expect_vapid_key(&self, k: &str) {
        if let Ok(mut key) = self.inner.vapid_key.lock() {
            *key = Some(k.to_owned());
        }
    }

    pub fn received(&self) -> Vec<ReceivedPush> {
        self.inner
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    pub fn received_for(&self, name: &str) -> Vec<ReceivedPush> {
        self.received()
            .into_iter()
            .filter(|p| p.name == name)
            .collect()
    }

    /// Waits until at least `n` pushes arrived or `timeout` passed; returns what arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedPush> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.inner.arrived.notified();
            let got = self.received();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }

    /// How many pushes were accepted (answered 2xx), per `event_id` of the decrypted payload.
    pub fn accepted_by_event(&self) -> HashMap<String, usize> {
        self.count_accepted(|p| {
            p.payload
                .as_ref()
                .ok()
                .and_then(|v| v["event_id"].as_str())
                .unwrap_or("(no event_id)")
                .to_owned()
        })
    }

    /// How many pushes were accepted per VAPID public key (`k=`): which gateway sent them.
    pub fn accepted_by_vapid_key(&self) -> HashMap<String, usize> {
        self.count_accepted(|p| {
            p.header("authorization")
                .and_then(|h| h.split("k=").nth(1))
                .map(|k| k.split(',').next().unwrap_or(k).trim().to_owned())
                .unwrap_or_default()
        })
    }

    fn count_accepted(&self, key: impl Fn(&ReceivedPush) -> String) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        if let Ok(r) = self.inner.received.lock() {
            for p in r.iter().filter(|p| (200..300).contains(&p.answered)) {
                *out.entry(key(p)).or_insert(0) += 1;
            }
        }
        out
    }

    /// Waits until `n` pushes were accepted (or `timeout`); returns
    /// [`Self::accepted_by_event`]. That no push comes again later is the
    /// test's to show, by a barrier after which none can come (e.g. the
    /// gateway's outbox is empty), not by waiting a while longer.
    pub async fn wait_accepted(&self, n: usize, timeout: Duration) -> HashMap<String, usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.inner.arrived.notified();
            let got = self.accepted_by_event();
            if got.values().sum::<usize>() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }

    /// The benchmark's knobs: count-only mode, answer delay, counts.
    pub fn load(&self) -> &LoadKnobs {
        &self.inner.load
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::SeqCst)
    }
}

fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/push/{name}", post(push))
        .with_state(inner)
}

/// Accepts TCP connections and completes the TLS handshake before axum serves them;
/// a failed handshake is dropped (the client sees the error), the next one is accepted.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    inner: Arc<Inner>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                // Out of descriptors or similar: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            self.inner.connections.fetch_add(1, Ordering::SeqCst);
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn push(
    State(inner): State<Arc<Inner>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if inner.load.count_only() {
        return count_only(&inner, &name, &headers, &body).await;
    }
    let header_list: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let sub = inner.subs.lock().ok().and_then(|s| s.get(&name).cloned());
    let expected_k = inner.vapid_key.lock().ok().and_then(|k| k.clone());
    let vapid = match get("authorization") {
        Some(h) => vapid::verify(h, &inner.origin, expected_k.as_deref()),
        None => Err("no Authorization header".into()),
    };
    let (payload, status, behaviour) = match sub {
        None => (Err("unknown subscription".to_owned()), 404, None),
        Some((sub, behaviour)) => {
            let payload = check_headers(&headers)
                .and_then(|()| sub.decrypt(&body))
                .and_then(|plain| {
                    serde_json::from_slice(&plain)
                        .map_err(|e| format!("decrypted payload is not JSON: {e}"))
                });
            let status = if body.len() > 4096 {
                413
            } else if vapid.is_err() {
                401
            } else if payload.is_err() {
                400
            } else {
                match behaviour {
                    Behaviour::Status(s) | Behaviour::Delay(_, s) => s,
                    Behaviour::Stall => 0,
                }
            };
            (payload, status, Some(behaviour))
        }
    };
    if let Ok(mut r) = inner.received.lock() {
        r.push(ReceivedPush {
            name,
            headers: header_list,
            body_len: body.len(),
            payload,
            vapid,
            answered: status,
        });
    }
    inner.arrived.notify_waiters();
    match behaviour {
        Some(Behaviour::Stall) if status == 0 => std::future::pending::<()>().await,
        Some(Behaviour::Delay(d, _)) => tokio::time::sleep(d).await,
        _ => {}
    }
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The benchmark's path: a known subscription, a VAPID token (each distinct
/// one verified once), the encoding headers and the size limit checked; the
/// body is not decrypted and nothing is recorded.
async fn count_only(inner: &Inner, name: &str, headers: &HeaderMap, body: &[u8]) -> StatusCode {
    let known = inner.subs.lock().is_ok_and(|s| s.contains_key(name));
    let expected_k = inner.vapid_key.lock().ok().and_then(|k| k.clone());
    let vapid_ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| {
            inner.verified.check(h, || {
                vapid::verify(h, &inner.origin, expected_k.as_deref()).is_ok()
            })
        });
    let status = if !known {
        StatusCode::NOT_FOUND
    } else if !vapid_ok {
        StatusCode::UNAUTHORIZED
    } else if body.len() > 4096 || check_headers(headers).is_err() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::CREATED
    };
    inner.load.pause().await;
    inner.load.count(status == StatusCode::CREATED);
    status
}

fn check_headers(h: &HeaderMap) -> Result<(), String> {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    if get("content-encoding") != Some("aes128gcm") {
        return Err(format!(
            "Content-Encoding is {:?}, expected aes128gcm",
            get("content-encoding")
        ));
    }
    match get("ttl").map(str::parse::<u64>) {
        Some(Ok(_)) => Ok(()),
        _ => Err(format!(
            "TTL header missing or not a number: {:?}",
            get("ttl")
        )),
    }
}
