//! A fake UnifiedPush server (ntfy-like): `POST /{topic}` (any query, such as
//! ntfy's `?up=1`) on 127.0.0.1, over plain HTTP or HTTPS with a certificate
//! of the test CA. Every request is recorded (topic, headers, body) and
//! answered with the topic's [`Behaviour`] — `200` by default, `413` for a
//! body over 4,096 bytes as real servers do — so tests can script status
//! codes, `Retry-After` and stalls per topic. A topic registered with keys
//! ([`FakeUnifiedPush::register_encrypted`]) has its `aes128gcm` bodies
//! decrypted independently of the gateway's code ([`crate::webpush::ece`]).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::record::Recorder;
use crate::tls::TestCa;
use crate::webpush::Subscription;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// The most a UnifiedPush server must accept; larger bodies are answered 413.
pub const MAX_MESSAGE: usize = 4096;

/// How the fake answers a topic's pushes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer this status at once.
    Status(u16),
    /// Answer this status with a `Retry-After` header holding the text given.
    RetryAfter(u16, String),
    /// Never answer (the request is still recorded).
    Stall,
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct ReceivedPush {
    pub topic: String,
    pub method: String,
    /// The query string, without `?`.
    pub query: Option<String>,
    /// Lower-case header names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The decrypted body, when it came `aes128gcm`-encoded to a topic with keys (or why not).
    pub plaintext: Option<Result<Vec<u8>, String>>,
    /// The status answered (0 when stalled).
    pub answered: u16,
}

impl ReceivedPush {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, decrypted first when it was encrypted (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        let bytes = match &self.plaintext {
            Some(Ok(plain)) => plain.as_slice(),
            Some(Err(_)) => return serde_json::Value::Null,
            None => &self.body,
        };
        serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Default)]
struct Inner {
    /// The lasting behaviour per topic (absent: 200).
    behaviours: Mutex<HashMap<String, Behaviour>>,
    /// Answers used once each, in order, before the lasting behaviour.
    scripts: Mutex<HashMap<String, VecDeque<Behaviour>>>,
    /// The keys of topics registered for encrypted pushes.
    keys: Mutex<HashMap<String, Subscription>>,
    received: Recorder<ReceivedPush>,
    connections: AtomicUsize,
}

pub struct FakeUnifiedPush {
    inner: Arc<Inner>,
    origin: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeUnifiedPush {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUnifiedPush {
    /// Plain HTTP on `http://127.0.0.1:<port>`.
    pub async fn start() -> FakeUnifiedPush {
        Self::start_with(None).await
    }

    /// HTTPS on `https://localhost:<port>` with a certificate of `ca`.
    pub async fn start_tls(ca: &TestCa) -> FakeUnifiedPush {
        Self::start_with(Some(ca.server_config(&[b"http/1.1"], false))).await
    }

    async fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> FakeUnifiedPush {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake UnifiedPush");
        let port = listener.local_addr().expect("addr").port();
        let origin = match tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let inner = Arc::new(Inner::default());
        let state = inner.clone();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                state.connections.fetch_add(1, Ordering::SeqCst);
                let (state, acceptor) = (state.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                serve_connection(TokioIo::new(tls), state).await;
                            }
                        }
                        None => serve_connection(TokioIo::new(tcp), state).await,
                    }
                });
            }
        });
        FakeUnifiedPush {
            inner,
            origin,
            task,
        }
    }

    /// The endpoint URL of `topic`, as a distributor hands it to the app (ntfy style).
    pub fn endpoint(&self, topic: &str) -> String {
        format!("{}/{topic}?up=1", self.origin)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Registers `topic` for Web Push–encrypted pushes; returns the keys the
    /// app would give in its pusher's data (`p256dh`, `auth`).
    pub fn register_encrypted(&self, topic: &str) -> Subscription {
        let sub = Subscription::generate();
        if let Ok(mut k) = self.inner.keys.lock() {
            k.insert(topic.to_owned(), sub.clone());
        }
        sub
    }

    /// From now on, `topic` is answered with `b`.
    pub fn set_behaviour(&self, topic: &str, b: Behaviour) {
        if let Ok(mut m) = self.inner.behaviours.lock() {
            m.insert(topic.to_owned(), b);
        }
    }

    /// The next pushes to `topic` are answered with `answers`, one each, then
    /// with its lasting behaviour.
    pub fn script(&self, topic: &str, answers: Vec<Behaviour>) {
        if let Ok(mut m) = self.inner.scripts.lock() {
            m.insert(topic.to_owned(), answers.into());
        }
    }

    pub fn received(&self) -> Vec<ReceivedPush> {
        self.inner.received.all()
    }

    pub fn received_for(&self, topic: &str) -> Vec<ReceivedPush> {
        self.received()
            .into_iter()
            .filter(|p| p.topic == topic)
            .collect()
    }

    /// Waits until at least `n` requests arrived or `timeout` passed; returns what arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedPush> {
        self.inner.received.wait_for(n, timeout).await
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::SeqCst)
    }
}

async fn serve_connection<I>(io: I, state: Arc<Inner>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| answer(state.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

async fn answer(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let topic = req.uri().path().trim_start_matches('/').to_owned();
    let query = req.uri().query().map(str::to_owned);
    let method = req.method().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let encrypted = req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"aes128gcm");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let keys = inner.keys.lock().ok().and_then(|k| k.get(&topic).cloned());
    let plaintext = match (encrypted, keys) {
        (false, _) => None,
        (true, Some(sub)) => Some(sub.decrypt(&body)),
        (true, None) => Some(Err("encrypted to a topic without keys".to_owned())),
    };
    let scripted = inner
        .scripts
        .lock()
        .ok()
        .and_then(|mut s| s.get_mut(&topic).and_then(VecDeque::pop_front));
    let behaviour = scripted
        .or_else(|| {
            inner
                .behaviours
                .lock()
                .ok()
                .and_then(|b| b.get(&topic).cloned())
        })
        .unwrap_or(Behaviour::Status(200));
    let behaviour = if method != "POST" {
        Behaviour::Status(405)
    } else if body.len() > MAX_MESSAGE {
        Behaviour::Status(413)
    } else {
        behaviour
    };
    let (status, retry_after) = match &behaviour {
        Behaviour::Status(s) => (*s, None),
        Behaviour::RetryAfter(s, r) => (*s, Some(r.clone())),
        Behaviour::Stall => (0, None),
    };
    inner.received.push(ReceivedPush {
        topic,
        method,
        query,
        headers,
        body,
        plaintext,
        answered: status,
    });
    if behaviour == Behaviour::Stall {
        std::future::pending::<()>().await;
    }
    let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(r) = retry_after.and_then(|r| hyper::header::HeaderValue::from_str(&r).ok()) {
        resp.headers_mut().insert(hyper::header::RETRY_AFTER, r);
    }
    Ok(resp)
}
