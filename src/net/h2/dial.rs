//! Opening one connection to the origin. [`Route`] opens the stream: DNS,
//! TCP (`TCP_NODELAY`), the proxy's `CONNECT` tunnel when one is configured,
//! and TLS (saying whether ALPN chose `h2`); it is shared with the FCM
//! client's connector ([`crate::net::h1`]), so that both reach their origin
//! the same way. [`Dialer`] adds what is the APNs client's own: the HTTP/2
//! handshake — within the same connect timeout — and the connection's task,
//! which drives the `h2` connection and pings the server.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::{Builder, Connection, SendRequest};
use h2::{Ping, PingPong};
use http::HeaderValue;
use prometheus::IntCounter;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ConnectError;

pub(super) type Sender = SendRequest<Bytes>;

/// An open connection: the handle that opens streams on it, and whether its
/// task has ended (closed by either side, or found dead by a ping).
pub(super) struct Live {
    pub sender: Sender,
    pub closed: Arc<AtomicBool>,
}

impl Live {
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// A `host:port` to reach by name.
#[derive(Debug, Clone)]
pub(in crate::net) struct HostPort {
    /// As DNS takes it: an IPv6 literal without its brackets.
    pub host: String,
    pub port: u16,
}

/// A TLS connector and the name it checks the peer's certificate against.
pub(in crate::net) type Secure = (tokio_rustls::TlsConnector, ServerName<'static>);

/// An HTTP proxy that tunnels with `CONNECT`.
pub(in crate::net) struct Tunnel {
    pub proxy: HostPort,
    /// TLS to the proxy itself (an `https://` proxy URL).
    pub tls: Option<Secure>,
    /// The `CONNECT` target: the origin's `host:port` (IPv6 in brackets).
    pub target: String,
    /// `Proxy-Authorization`, from the proxy URL's user and password.
    pub auth: Option<HeaderValue>,
}

/// What a connection runs over: TCP, TLS over TCP, or TLS over the TLS of an
/// `https` proxy. Boxed, so that one connection type serves every route.
pub(in crate::net) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open stream to the origin.
pub(in crate::net) struct Stream {
    pub io: Box<dyn Io>,
    /// Whether the origin chose `h2` through ALPN (never in clear).
    pub h2: bool,
}

/// How to reach the origin, and what a connection costs to open.
pub(in crate::net) struct Route {
    pub origin: HostPort,
    /// TLS to the origin; `None` speaks in clear (tests' `http` origins).
    pub tls: Option<Secure>,
    pub tunnel: Option<Tunnel>,
    pub connect_timeout: Duration,
    pub connections: Option<IntCounter>,
    /// TCP keepalive on the connection opened (to the origin, or to the proxy).
    pub tcp_keepalive: Option<TcpKeepAlive>,
}

/// The TCP keepalive probes and user timeout that reqwest's connector set
/// (the FCM client keeps them; the APNs client pings over HTTP/2 instead):
/// a peer gone while the connection idles in the pool is found in about a
/// minute, and a write unacknowledged for `user_timeout` fails the connection.
#[derive(Debug, Clone, Copy)]
pub(in crate::net) struct TcpKeepAlive {
    pub idle: Duration,
    pub interval: Duration,
    pub retries: u32,
    pub user_timeout: Duration,
}

impl TcpKeepAlive {
    /// reqwest 0.13's defaults.
    pub const REQWEST: TcpKeepAlive = TcpKeepAlive {
        idle: Duration::from_secs(15),
        interval: Duration::from_secs(15),
        retries: 3,
        user_timeout: Duration::from_secs(30),
    };

    /// Sets them on `s`; like reqwest, a connection whose socket refuses one is used all the same.
    pub fn apply(&self, s: &TcpStream) {
        use rustix::net::sockopt;
        let set = sockopt::set_socket_keepalive(s, true)
            .and_then(|()| sockopt::set_tcp_keepidle(s, self.idle))
            .and_then(|()| sockopt::set_tcp_keepintvl(s, self.interval))
            .and_then(|()| sockopt::set_tcp_keepcnt(s, self.retries));
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let set = set.and_then(|()| {
            let ms = u32::try_from(self.user_timeout.as_millis()).unwrap_or(u32::MAX);
            sockopt::set_tcp_user_timeout(s, ms)
        });
        if let Err(e) = set {
            tracing::debug!(error = %e, "cannot set TCP keepalive");
        }
    }
}

pub(super) struct Dialer {
    pub route: Route,
    pub http2: Builder,
    pub keep_alive: KeepAlive,
}

/// The connection's pings: one every `interval`, also while idle, so that a
/// dead path is found before a push waits on it; a ping unanswered within
/// `timeout` closes the connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeepAlive {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for KeepAlive {
    /// Every 30 s; 20 s for the answer (what hyper's client waited).
    fn default() -> KeepAlive {
        KeepAlive {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(20),
        }
    }
}

/// How much of the answers' bodies the server may send before we release some.
pub(super) const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// The HTTP/2 settings of the connection: those hyper's client used (we
/// spoke through it before), so that APNs sees the same connection: 2 MiB
/// stream and 5 MiB connection receive windows, 16 KiB frames, a 16 KiB
/// header list, 1 MiB of send buffer per stream, at most 100 streams before
/// the server's SETTINGS, no server push.
pub(super) fn http2_builder() -> Builder {
    let mut b = Builder::new();
    b.initial_max_send_streams(100)
        .initial_window_size(2 * 1024 * 1024)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(16 * 1024)
        .max_send_buffer_size(1024 * 1024)
        .max_local_error_reset_streams(Some(1024))
        .enable_push(false)
        .max_frame_size(16 * 1024);
    b
}

impl Route {
    /// `connect` (an [`open`](Route::open) and what the caller does on the
    /// stream before it is usable) within the connect timeout; counted once it is up.
    pub async fn within<T>(
        &self,
        connect: impl Future<Output = Result<T, ConnectError>>,
    ) -> Result<T, ConnectError> {
        let up = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| ConnectError::Timeout)??;
        if let Some(c) = &self.connections {
            c.inc();
        }
        Ok(up)
    }

    /// A new stream to the origin, through the tunnel if there is one.
    pub async fn open(&self) -> Result<Stream, ConnectError> {
        let Some(t) = &self.tunnel else {
            return self
                .secure(tcp(&self.origin, self.tcp_keepalive).await?)
                .await;
        };
        let mut tcp = tcp(&t.proxy, self.tcp_keepalive).await?;
        match &t.tls {
            None => {
                t.open(&mut tcp).await?;
                self.secure(tcp).await
            }
            Some((connector, name)) => {
                let mut tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(ConnectError::ProxyIo)?;
                t.open(&mut tls).await?;
                self.secure(tls).await
            }
        }
    }

    /// TLS to the origin over `io`, unless the origin is `http`.
    async fn secure<T: Io + 'static>(&self, io: T) -> Result<Stream, ConnectError> {
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), io)
                    .await
                    .map_err(ConnectError::Tls)?;
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                Ok(Stream {
                    io: Box::new(tls),
                    h2,
                })
            }
            None => Ok(Stream {
                io: Box::new(io),
                h2: false,
            }),
        }
    }
}

impl Dialer {
    /// A new connection, its task spawned; counted once it is up.
    pub async fn dial(&self) -> Result<Live, ConnectError> {
        // HTTP/2 whatever ALPN said (APNs offers only `h2`; `http` origins
        // speak it in clear).
        let connect = async { self.handshake(self.route.open().await?.io).await };
        self.route.within(connect).await
    }

    async fn handshake<T>(&self, io: T) -> Result<Live, ConnectError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = self
            .http2
            .handshake::<_, Bytes>(Unvectored(io))
            .await
            .map_err(ConnectError::Handshake)?;
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(drive(conn, self.keep_alive, closed.clone()));
        Ok(Live { sender, closed })
    }
}

/// The connection's transport, saying it has no vectored writes: `h2` then
/// copies a DATA frame of up to 1 KiB into its write buffer (else, past 256
/// bytes, it keeps the frame aside and must write it out before it buffers
/// another). A push's body is that size: the frames of all the pushes
/// queued when the connection writes go out in one TLS write instead of one
/// each ([`gathered`]).
struct Unvectored<T>(T);

impl<T: AsyncRead + Unpin> AsyncRead for Unvectored<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Unvectored<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connection's task: runs it until it ends or a ping goes unanswered,
/// then marks it closed (dropping it fails the streams still on it).
/// It ends by itself once the client and every stream are gone.
async fn drive<T>(mut conn: Connection<T, Bytes>, keep_alive: KeepAlive, closed: Arc<AtomicBool>)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let pings = conn.ping_pong();
    let conn = gathered(conn);
    match pings {
        Some(pings) => {
            tokio::select! {
                ended = conn => log_end(ended),
                () = ping(pings, keep_alive) => {
                    tracing::debug!("APNs connection closed: a ping went unanswered");
                }
            }
        }
        None => log_end(conn.await),
    }
    closed.store(true, Ordering::Release);
}

/// Runs `conn`, but when something wakes it, first lets the tasks already
/// queued on this worker run: the pushes woken in the same turn then queue
/// their frames before the connection writes, and go out in one TLS record
/// and one `writev` instead of one each. The connection's task goes to the
/// back of the worker's queue (as tokio's `yield_now` did before it began
/// to wait for the queue to empty, which under load delayed every push by
/// up to a full queue): a push waits for the tasks ready before it, no more.
async fn gathered<F: Future + Unpin>(mut conn: F) -> F::Output {
    loop {
        if let Poll::Ready(out) = futures::poll!(&mut conn) {
            return out;
        }
        // Until `conn` (or anything else of this task) wakes it.
        Turn::new(false).await;
        Turn::new(true).await;
    }
}

/// Pending the first time it is polled, ready the next: with `requeue` it
/// wakes its task at once (which tokio queues at the back of the worker's
/// queue), without it it waits for something else to wake the task.
struct Turn {
    waited: bool,
    requeue: bool,
}

impl Turn {
    fn new(requeue: bool) -> Turn {
        Turn {
            waited: false,
            requeue,
        }
    }
}

impl Future for Turn {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.waited {
            return Poll::Ready(());
        }
        self.waited = true;
        if self.requeue {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

fn log_end(ended: Result<(), h2::Error>) {
    match ended {
        Ok(()) => tracing::debug!("APNs connection closed"),
        Err(e) => tracing::debug!(error = %e, "APNs connection closed"),
    }
}

/// Pings every `interval`; returns when a ping is not answered in time.
async fn ping(mut pings: PingPong, k: KeepAlive) {
    loop {
        tokio::time::sleep(k.interval).await;
        match tokio::time::timeout(k.timeout, pings.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            // The connection is ending: its own future reports why.
            Ok(Err(_)) => std::future::pending::<()>().await,
            Err(_) => return,
        }
    }
}

/// The first address of `to` that accepts a TCP connection.
async fn tcp(to: &HostPort, keepalive: Option<TcpKeepAlive>) -> Result<TcpStream, ConnectError> {
    let addrs = tokio::net::lookup_host((to.host.as_str(), to.port))
        .await
        .map_err(ConnectError::Dns)?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                s.set_nodelay(true).map_err(ConnectError::Io)?;
                if let Some(k) = keepalive {
                    k.apply(&s);
                }
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(ConnectError::Io(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "the name has no address")
    })))
}

/// The most of a proxy's answer to `CONNECT` read before giving up on it.
const MAX_PROXY_ANSWER: usize = 8 * 1024;

impl Tunnel {
    /// Asks the proxy for a tunnel to the origin; `Ok` once it answered 2xx.
    async fn open<S: AsyncRead + AsyncWrite + Unpin>(&self, s: &mut S) -> Result<(), ConnectError> {
        let mut head =
            format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\n", t = self.target).into_bytes();
        if let Some(auth) = &self.auth {
            head.extend_from_slice(b"Proxy-Authorization: ");
            head.extend_from_slice(auth.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        s.write_all(&head).await.map_err(ConnectError::ProxyIo)?;
        let mut answer = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        // Byte-exact up to the blank line: what follows belongs to TLS.
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() >= MAX_PROXY_ANSWER {
                return Err(ConnectError::Proxy("an endless answer to CONNECT".into()));
            }
            let n = s.read(&mut byte).await.map_err(ConnectError::ProxyIo)?;
            if n == 0 {
                return Err(ConnectError::Proxy(
                    "closed the connection before answering CONNECT".into(),
                ));
            }
            answer.extend_from_slice(&byte[..n]);
        }
        let status_line = answer
            .split(|&b| b == b'\r')
            .next()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let status = status_line.split_whitespace().nth(1).unwrap_or_default();
        if status.len() == 3 && status.starts_with('2') {
            Ok(())
        } else {
            Err(ConnectError::Proxy(format!(
                "answered CONNECT with {status_line}"
            )))
        }
    }
}
