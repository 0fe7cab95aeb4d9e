//! The APNs client: HTTP/2 to ONE fixed origin over one shared connection,
//! without reqwest's per-request layers (URL↔URI conversions, redirect and
//! retry services, header-map merging, the pool checkout) and without
//! hyper's client (its dispatch channel to the connection's task, a task
//! per request, a oneshot back): a push clones the `h2` connection's
//! `SendRequest`, opens a stream on it and awaits the answer in its own task.
//!
//! It trusts what [`crate::net::build_client`] trusts (the platform's roots
//! through `rustls-platform-verifier`, plus the optional extra CA), offers
//! ALPN `h2` only, presents the client certificate of certificate auth,
//! connects within the connect timeout with `TCP_NODELAY`, pings every 30 s
//! (also while idle; a ping unanswered within 20 s closes the connection),
//! tunnels through the configured proxy (`http` or `https`) with `CONNECT`
//! (not for hosts in `NO_PROXY`; `Proxy-Authorization` from the proxy URL's
//! user and password), and counts the connections it opens. The HTTP/2
//! settings, and the `user-agent`, `accept` and `content-length` a request
//! gets when it has none, are those of the hyper client it replaced. What
//! an answer's body hands out is given back to the connection's receive
//! window as it is read (an unread body dropped gives back all of it).
//!
//! Reconnecting: when the connection has closed (GOAWAY, an error, the peer
//! gone, a ping unanswered), the next push opens another; one connect is in
//! flight at a time and concurrent pushes wait for it (bounded by the push's
//! deadline, which the caller enforces). A request the server refused
//! without processing it — `REFUSED_STREAM`, or a graceful GOAWAY that names
//! a last stream before it, or a connection that closed or was going away
//! before the request left — is sent once more; a request the server may
//! have processed never is (no double push).
//!
//! The dialing up to the open stream is [`super::route`]'s, shared with the
//! FCM client of [`super::h1`].

mod dial;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CONTENT_LENGTH, USER_AGENT};
use http::Method;
use prometheus::IntCounter;

pub use super::route::ConnectError;
use super::route::{route, Reach, AGENT, ANY};
pub use super::tls::{Identity, IdentityError};
use super::transport::{root_cause, Failure, Inbound, Outbound, Transport};
use super::NetError;
use dial::{Dialer, Live, Sender};

/// How to build the client of one APNs app.
pub struct Options<'a> {
    /// `https://host[:port]` (a path is ignored: requests carry theirs);
    /// `http` speaks HTTP/2 in clear, for tests.
    pub origin: &'a url::Url,
    pub connect_timeout: Duration,
    /// Proxy URL (`http(s)://[user:password@]host:port`), tunnelled through with CONNECT.
    pub proxy: Option<&'a str>,
    /// An extra CA certificate (PEM) trusted on top of the platform's roots.
    pub extra_ca: Option<&'a Path>,
    /// A client certificate and key to present (certificate auth).
    pub identity: Option<Identity>,
    /// Counts the connections opened.
    pub connections: Option<IntCounter>,
}

/// A request that got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect")]
    Connect(#[from] ConnectError),
    #[error("the request failed")]
    Request(#[source] h2::Error),
}

/// The connection in use, and which one it is (a retry must not drop a newer one).
#[derive(Default)]
struct Slot {
    generation: u64,
    live: Option<Live>,
}

pub struct Client {
    dialer: Dialer,
    live: Mutex<Slot>,
    /// Held while a connection is being opened: one connect at a time.
    connecting: tokio::sync::Mutex<()>,
}

/// An answer whose head has arrived; its body is read with [`Inbound::chunk`].
pub type Response = http::Response<h2::RecvStream>;

/// How the server refused a request it did not process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `REFUSED_STREAM`: the connection is still good.
    Stream,
    /// GOAWAY (`NO_ERROR`) with a last stream before this one, or the
    /// connection gone before the request left: use another.
    Connection,
}

impl Client {
    pub fn new(o: Options<'_>) -> Result<Client, NetError> {
        let route = route(
            &Reach {
                origin: o.origin,
                connect_timeout: o.connect_timeout,
                proxy: o.proxy,
                extra_ca: o.extra_ca,
                connections: o.connections,
                who: "the APNs client",
            },
            o.identity,
            &[b"h2"],
        )?;
        Ok(Client {
            dialer: Dialer {
                route,
                http2: dial::http2_builder(),
                keep_alive: dial::KeepAlive::default(),
            },
            live: Mutex::new(Slot::default()),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    /// Sends `request` (its URI's origin must be this client's) and gives
    /// back the answer once its head has arrived.
    pub async fn send(&self, request: http::Request<Bytes>) -> Result<Response, Error> {
        let (parts, body) = request.into_parts();
        let mut head = http::Request::from_parts(parts, ());
        complete_head(&mut head, body.len());
        // The copy to send again if the server refuses the first unprocessed:
        // the first one's headers are gone into the connection's encoder.
        let mut copy = http::Request::new(());
        *copy.method_mut() = head.method().clone();
        *copy.uri_mut() = head.uri().clone();
        *copy.headers_mut() = head.headers().clone();

        let (generation, sender) = self.sender().await?;
        let refusal = match exchange(sender, head, &body).await {
            Ok(answer) => return Ok(answer),
            Err(Sent::No(e)) if e.reason().is_none() && !e.is_io() => {
                // Ours (a head h2 cannot send): it would fail again.
                return Err(Error::Request(e));
            }
            Err(Sent::No(_)) => Refusal::Connection,
            Err(Sent::Yes(e)) => match refused(&e) {
                Some(r) => r,
                None => return Err(Error::Request(e)),
            },
        };
        tracing::debug!(
            ?refusal,
            "the request was not processed; sending it once more"
        );
        if refusal == Refusal::Connection {
            self.forget(generation);
        }
        let (_, sender) = self.sender().await?;
        exchange(sender, copy, &body)
            .await
            .map_err(|(Sent::No(e) | Sent::Yes(e))| Error::Request(e))
    }

    /// The open connection, if there is one.
    fn open(&self) -> Option<(u64, Sender)> {
        let slot = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match &slot.live {
            Some(l) if !l.is_closed() => Some((slot.generation, l.sender.clone())),
            _ => None,
        }
    }

    /// The open connection, or a new one.
    async fn sender(&self) -> Result<(u64, Sender), ConnectError> {
        if let Some(open) = self.open() {
            return Ok(open);
        }
        let _connecting = self.connecting.lock().await;
        // Another push may have connected while this one waited.
        if let Some(open) = self.open() {
            return Ok(open);
        }
        // Boxed: a connect's state (TCP, proxy, TLS handshake) is kilobytes,
        // and every push's future would otherwise carry room for it — and
        // copy it each time the future is moved.
        let live = Box::pin(self.dialer.dial()).await?;
        let sender = live.sender.clone();
        let mut slot = self.live.lock().unwrap_or_else(|p| p.into_inner());
        slot.generation += 1;
        slot.live = Some(live);
        Ok((slot.generation, sender))
    }

    /// Drops connection `generation` (the server is done with it) unless a newer one replaced it.
    fn forget(&self, generation: u64) {
        let mut slot = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if slot.generation == generation {
            slot.live = None;
        }
    }
}

/// Whether `e`, the error of a request that left, says the server refused
/// it without processing it.
fn refused(e: &h2::Error) -> Option<Refusal> {
    if !e.is_remote() {
        return None;
    }
    match e.reason() {
        Some(h2::Reason::REFUSED_STREAM) if e.is_reset() => Some(Refusal::Stream),
        // h2 gives this error only to the streams above GOAWAY's last
        // stream id (and to those opened after it): never processed.
        Some(h2::Reason::NO_ERROR) if e.is_go_away() => Some(Refusal::Connection),
        _ => None,
    }
}

/// Adds what the request head lacks: `user-agent` and `accept` (as reqwest
/// sent them), and `content-length` as hyper's client set it (for a body,
/// or for a method whose body has a meaning).
fn complete_head(head: &mut http::Request<()>, body: usize) {
    let with_length = body != 0
        || !matches!(
            *head.method(),
            Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
        );
    let headers = head.headers_mut();
    for (name, value) in [(USER_AGENT, &AGENT), (ACCEPT, &ANY)] {
        if !headers.contains_key(&name) {
            headers.insert(name, value.clone());
        }
    }
    if with_length && !headers.contains_key(CONTENT_LENGTH) {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body));
    }
}

/// Whether a request whose exchange failed had left.
enum Sent {
    /// It had not: the connection could take no new stream (closed, or going away).
    No(h2::Error),
    /// It had, or may have: its stream failed.
    Yes(h2::Error),
}

/// One request on the connection of `sender`: its head, its body (h2
/// buffers it within flow control), then the answer's head.
async fn exchange(sender: Sender, head: http::Request<()>, body: &Bytes) -> Result<Response, Sent> {
    let mut sender = sender.ready().await.map_err(Sent::No)?;
    let (answer, mut stream) = sender
        .send_request(head, body.is_empty())
        .map_err(Sent::No)?;
    if !body.is_empty() {
        // On an error the stream was reset or the connection failed: the
        // answer's future says which.
        let _ = stream.send_data(body.clone(), true);
    }
    answer.await.map_err(Sent::Yes)
}

impl Transport for Client {
    type Request = http::Request<Bytes>;
    type Response = Response;
    type Error = Error;

    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> impl std::future::Future<Output = Result<Response, Error>> + Send {
        Client::send(self, request)
    }
}

impl Outbound for http::Request<Bytes> {
    fn method(&self) -> &http::Method {
        http::Request::method(self)
    }

    fn url(&self) -> String {
        self.uri().to_string()
    }

    fn headers(&self) -> &http::HeaderMap {
        http::Request::headers(self)
    }

    fn body_bytes(&self) -> &[u8] {
        self.body()
    }
}

impl Inbound for Response {
    fn status(&self) -> u16 {
        http::Response::status(self).as_u16()
    }

    fn headers(&self) -> &http::HeaderMap {
        http::Response::headers(self)
    }

    async fn chunk(&mut self) -> Option<Bytes> {
        // Trailers are skipped; an error ends the body.
        let body = self.body_mut();
        let data = body.data().await?.ok()?;
        // What is handed out is ours: the server may send that much more
        // (else the connection's window runs dry). An error here means the
        // stream is gone, and its capacity with it.
        let _ = body.flow_control().release_capacity(data.len());
        Some(data)
    }
}

impl Failure for Error {
    fn describe(&self) -> String {
        let kind = match self {
            Error::Connect(ConnectError::Timeout) => "timed out",
            Error::Connect(_) => "connection failed",
            Error::Request(_) => "request failed",
        };
        format!("{kind}: {}", root_cause(self))
    }

    fn is_dns_failure(&self) -> bool {
        matches!(self, Error::Connect(ConnectError::Dns(_)))
    }
}

#[cfg(test)]
mod tests;
