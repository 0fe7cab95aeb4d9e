//! The FCM client: hyper-util's pooled client (HTTP/1.1, or HTTP/2 when the
//! server chooses `h2` through ALPN) over our own connector, to ONE fixed
//! origin.
//!
//! Why not reqwest: its layers cost 15,000–20,000 instructions per push
//! before hyper sees the request — its redirect layer and its pending
//! request each parse the URL into a `url::Url`, then tower layers, a
//! tracing span around the future, and the merging of its default headers.
//! Here a push is an `http::Request` whose URI was built once and whose
//! headers are built directly; the client adds `accept` and `user-agent` and
//! hands it to hyper-util.
//!
//! Kept from the reqwest client it replaced, so that FCM sees the same
//! connections and requests: the connector is the APNs client's dialing
//! ([`super::route`]: DNS, `TCP_NODELAY`, the proxy's `CONNECT`
//! tunnel — `http` or `https` proxies, `NO_PROXY`, `Proxy-Authorization` from
//! the proxy URL —, TLS trusting the platform's roots plus the optional extra
//! CA, the connect timeout, the connection counter), reqwest's TCP keepalive
//! (15 s idle, probes every 15 s, 3 of them) and 30 s `TCP_USER_TIMEOUT`, TLS
//! offers ALPN `h2` and `http/1.1`, idle connections are kept 90 s (at most `max_idle_per_host`),
//! HTTP/2 connections are pinged every 30 s (also while idle), redirects are
//! never followed (hyper-util follows none), and a request gets
//! `accept: */*` and `user-agent: pushgate/<version>` after its own headers
//! (reqwest's order) and `content-length` and `host` from hyper. An `http`
//! origin is spoken to in clear, HTTP/1.1 (tests).
//!
//! Unlike reqwest, an `http` origin is reached through the proxy with
//! `CONNECT` too (reqwest sent such requests to the proxy in absolute form).

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, ACCEPT, USER_AGENT};
use http::Uri;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus::IntCounter;

use super::route::{route, ConnectError, Io, Reach, Route, TcpKeepAlive, AGENT, ANY};
use super::transport::{root_cause, Failure, Inbound, Transport};
use super::NetError;

/// How to build the client of one FCM app.
pub struct Options<'a> {
    /// `https://host[:port]` (a path is ignored: requests carry theirs);
    /// `http` speaks HTTP/1.1 in clear, for tests.
    pub origin: &'a url::Url,
    pub connect_timeout: Duration,
    /// Proxy URL (`http(s)://[user:password@]host:port`), tunnelled through with CONNECT.
    pub proxy: Option<&'a str>,
    /// An extra CA certificate (PEM) trusted on top of the platform's roots.
    pub extra_ca: Option<&'a Path>,
    /// Idle connections kept.
    pub max_idle_per_host: usize,
    /// Counts the connections opened.
    pub connections: Option<IntCounter>,
}

/// How long an idle connection is kept (reqwest's setting before).
const IDLE: Duration = Duration::from_secs(90);
/// HTTP/2 pings, also while idle, so that a dead path is found before a push waits on it.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The headers the client adds to a request (`accept`, `user-agent`) and
/// hyper after it (`host` on HTTP/1.1, `content-length`).
const ADDED_HEADERS: usize = 4;

/// A request that got no answer.
#[derive(Debug, thiserror::Error)]
#[error("the request failed")]
pub struct Error(#[source] hyper_util::client::legacy::Error);

/// An answer whose head has arrived; its body is read with [`Inbound::chunk`].
pub type Response = http::Response<Incoming>;

pub struct Client {
    hyper: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
}

impl Client {
    pub fn new(o: Options<'_>) -> Result<Client, NetError> {
        let mut route = route(
            &Reach {
                origin: o.origin,
                connect_timeout: o.connect_timeout,
                proxy: o.proxy,
                extra_ca: o.extra_ca,
                connections: o.connections,
                who: "the FCM client",
            },
            None,
            &[b"h2", b"http/1.1"],
        )?;
        route.tcp_keepalive = Some(TcpKeepAlive::REQWEST);
        let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(IDLE)
            .pool_max_idle_per_host(o.max_idle_per_host)
            .http2_keep_alive_interval(KEEP_ALIVE)
            .http2_keep_alive_while_idle(true)
            .build(Connector(Arc::new(route)));
        Ok(Client { hyper })
    }

    /// Sends `request` (its URI must be absolute, of this client's origin)
    /// and gives back the answer once its head has arrived.
    pub fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> impl Future<Output = Result<Response, Error>> + Send + 'static {
        let mut request = request.map(Full::new);
        let headers = request.headers_mut();
        for (name, value) in [(ACCEPT, &ANY), (USER_AGENT, &AGENT)] {
            if !headers.contains_key(&name) {
                headers.insert(name, value.clone());
            }
        }
        let answer = self.hyper.request(request);
        async move { answer.await.map_err(Error) }
    }
}

/// An empty header map with room for `own` headers and those the client and
/// hyper add: a map that has to grow for them is rehashed, once per push.
pub fn headers(own: usize) -> HeaderMap {
    HeaderMap::with_capacity(own + ADDED_HEADERS)
}

/// Opens the connections of the pool: the route's stream, HTTP/2 when ALPN chose it.
#[derive(Clone)]
struct Connector(Arc<Route>);

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let route = self.0.clone();
        Box::pin(async move {
            if !route.reaches(&dst) {
                return Err(ConnectError::Elsewhere);
            }
            let stream = route.within(route.open()).await?;
            Ok(Conn {
                io: TokioIo::new(stream.io),
                h2: stream.h2,
            })
        })
    }
}

impl Route {
    /// Whether `dst` (a pool's key: scheme and authority) is this route's origin.
    fn reaches(&self, dst: &Uri) -> bool {
        let tls = match dst.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return false,
        };
        let port = dst.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let host = dst
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'));
        tls == self.tls.is_some()
            && port == self.origin.port
            && host.is_some_and(|h| h.eq_ignore_ascii_case(&self.origin.host))
    }
}

/// One connection of the pool.
struct Conn {
    io: TokioIo<Box<dyn Io>>,
    /// Whether the server chose `h2`: hyper then speaks HTTP/2 on it.
    h2: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Read::poll_read(Pin::new(&mut self.io), cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Write::poll_write(Pin::new(&mut self.io), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Write::poll_flush(Pin::new(&mut self.io), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Write::poll_shutdown(Pin::new(&mut self.io), cx)
    }

    fn is_write_vectored(&self) -> bool {
        Write::is_write_vectored(&self.io)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Write::poll_write_vectored(Pin::new(&mut self.io), cx, bufs)
    }
}

impl Transport for Client {
    type Request = http::Request<Bytes>;
    type Response = Response;
    type Error = Error;

    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> impl Future<Output = Result<Response, Error>> + Send {
        Client::send(self, request)
    }
}

impl Inbound for Response {
    fn status(&self) -> u16 {
        http::Response::status(self).as_u16()
    }

    fn headers(&self) -> &HeaderMap {
        http::Response::headers(self)
    }

    async fn chunk(&mut self) -> Option<Bytes> {
        // Trailers are skipped; an error ends the body.
        loop {
            let frame = self.body_mut().frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                return Some(data);
            }
        }
    }
}

impl Error {
    /// The connector's error, when the connection could not be opened.
    fn connect_error(&self) -> Option<&ConnectError> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&self.0);
        while let Some(e) = source {
            if let Some(c) = e.downcast_ref::<ConnectError>() {
                return Some(c);
            }
            source = e.source();
        }
        None
    }
}

impl Failure for Error {
    fn describe(&self) -> String {
        let kind = match self.connect_error() {
            Some(ConnectError::Timeout) => "timed out",
            Some(_) => "connection failed",
            None if self.0.is_connect() => "connection failed",
            None => "request failed",
        };
        format!("{kind}: {}", root_cause(self))
    }

    fn is_dns_failure(&self) -> bool {
        matches!(self.connect_error(), Some(ConnectError::Dns(_)))
    }
}

#[cfg(test)]
mod tests;
