//! Opening one HTTP/2 connection to APNs: the stream of the shared
//! [`Route`] (DNS, TCP, the proxy's tunnel, TLS), then what is the APNs
//! client's own — the HTTP/2 handshake, within the same connect timeout —
//! and the connection's task, which drives the `h2` connection and pings the
//! server.

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
use tokio::io::{AsyncRead, AsyncWrite};

use crate::net::route::{ConnectError, Route};

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
