//! Serving the API's connections: our accept loop and hyper's HTTP/1 + HTTP/2
//! server with a timer, so that no client can hold the gateway's resources
//! for longer than the configured bounds.
//!
//! The bounds, and what enforces each:
//! - **connections**: a cap in the accept loop (`limits.max_connections`,
//!   optionally `limits.max_connections_per_ip`); past it a new connection is
//!   closed at once and counted, so the kernel's backlog never fills with
//!   connections nobody will serve and an honest client learns at once that it
//!   must retry;
//! - **handshake and first request**: a TLS handshake, and then the first
//!   request of a connection, within `http.header_read_timeout` (hyper's
//!   protocol detection itself has no timer);
//! - **HTTP/1 headers**: within `http.header_read_timeout` (hyper's timer,
//!   which also runs while a keep-alive connection waits for its next request,
//!   so an idle HTTP/1 connection is closed after it at the latest);
//! - **idle connections**: one with no request in flight for
//!   `http.idle_timeout` is closed (our timer; this is what bounds idle HTTP/2
//!   connections);
//! - **HTTP/2**: at most `http.http2_max_concurrent_streams` streams per
//!   connection; keep-alive pings find dead peers;
//! - **bodies**: the `/notify` handler reads its body within
//!   `http.body_read_timeout` and only then takes an in-flight permit (see
//!   `notify.rs`), so bodies being read are bounded by the connection cap, the
//!   stream cap and that deadline, not by the permits honest requests need;
//!   their bytes, from before the read until the answer, by
//!   `limits.max_inflight_bytes`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use super::Site;
use crate::config::HttpConfig;
use crate::telemetry::metrics::Metrics;

/// The connection caps shared by every API listener.
pub struct ConnectionCap {
    max: usize,
    per_ip: Option<usize>,
    open: Mutex<Open>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; gives its place back when dropped.
pub struct Ticket {
    cap: Arc<ConnectionCap>,
    ip: IpAddr,
}

impl ConnectionCap {
    pub fn new(max: usize, per_ip: Option<usize>, metrics: Arc<Metrics>) -> Arc<ConnectionCap> {
        Arc::new(ConnectionCap {
            max,
            per_ip,
            open: Mutex::new(Open::default()),
            metrics,
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        // The counts stay consistent whatever panicked while holding the lock.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a connection from `ip`, or `None` (counted) when a cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        let mut open = self.open();
        if open.total >= self.max {
            self.metrics.inbound_refused("max_connections");
            return None;
        }
        if let Some(limit) = self.per_ip {
            let n = open.by_ip.entry(ip).or_default();
            if *n >= limit {
                self.metrics.inbound_refused("max_connections_per_ip");
                return None;
            }
            *n += 1;
        }
        open.total += 1;
        self.metrics.inbound_connections().inc();
        Some(Ticket {
            cap: self.clone(),
            ip,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.cap.open();
        open.total = open.total.saturating_sub(1);
        if self.cap.per_ip.is_some() {
            if let Some(n) = open.by_ip.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.by_ip.remove(&self.ip);
                }
            }
        }
        self.cap.metrics.inbound_connections().dec();
    }
}

/// Accepts connections on `listener` until `stop` turns true, then lets the
/// open ones finish their requests (graceful shutdown) and returns when all
/// have closed. `cap` is `None` for the metrics listener.
pub async fn serve(
    listener: TcpListener,
    site: Site,
    tls: Option<TlsAcceptor>,
    http: Arc<HttpConfig>,
    cap: Option<Arc<ConnectionCap>>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let connections = TaskTracker::new();
    // One server configuration (and timer) for every connection of the listener.
    let builder = Arc::new(builder(&http));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ticket = match &cap {
            Some(cap) => match cap.admit(peer.ip()) {
                Some(t) => Some(t),
                None => {
                    tracing::debug!(%peer, "connection cap reached; connection closed");
                    continue;
                }
            },
            None => None,
        };
        // Answers go out at once, not after the peer's delayed ACK (Nagle).
        let _ = stream.set_nodelay(true);
        let (site, http, stop, builder) =
            (site.clone(), http.clone(), stop.clone(), builder.clone());
        match tls.clone() {
            None => {
                connections.spawn(async move {
                    serve_connection(stream, peer, site, &builder, &http, stop).await;
                    drop(ticket);
                });
            }
            Some(acceptor) => {
                connections.spawn(async move {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(http.header_read_timeout, handshake).await {
                        Ok(Ok(tls)) => {
                            serve_connection(tls, peer, site, &builder, &http, stop).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                    drop(ticket);
                });
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// The largest HTTP/1 read buffer of a connection (hyper's default is about 400 KiB).
const HTTP1_READ_BUFFER: usize = 16 * 1024;

/// hyper's server, configured from `http`.
fn builder(http: &HttpConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_read_timeout)
        .keep_alive(true)
        // hyper's read buffer grows to the largest read and a connection keeps
        // it while its request is handled: capped, a body arrives in pieces of
        // at most this size and is collected into one exact copy, so a
        // connection holds its body once, not a buffer besides (request
        // headers must fit in it too).
        .max_buf_size(HTTP1_READ_BUFFER);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(http.http2_max_concurrent_streams)
        .keep_alive_interval(http.http2_keep_alive_interval)
        .keep_alive_timeout(http.http2_keep_alive_timeout);
    b
}

/// Requests of one connection in flight, and when the last one started or ended.
struct Activity {
    in_flight: AtomicUsize,
    /// A request has reached the router (the first-request deadline is over).
    any: AtomicBool,
    /// When the connection was accepted; `last` counts from it.
    born: Instant,
    /// Milliseconds from `born` to the last start or end of a request (an
    /// atomic, not a lock: it is written twice per request).
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            any: AtomicBool::new(false),
            born: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
    }

    fn last(&self) -> Instant {
        self.born + Duration::from_millis(self.last_ms.load(Ordering::Acquire))
    }

    /// Completes once the connection has had nothing in flight for `idle`
    /// (or, before its first request, for `first`).
    async fn idle_for(&self, first: Duration, idle: Duration) {
        loop {
            let limit = if self.any.load(Ordering::Acquire) {
                idle
            } else {
                first
            };
            let last = self.last();
            let wake = if self.in_flight.load(Ordering::Acquire) > 0 {
                // Busy: look again one period later (the request's end moves `last`).
                Instant::now() + limit
            } else {
                let deadline = last + limit;
                if Instant::now() >= deadline {
                    return;
                }
                deadline
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// Counts one request in flight on its connection while alive.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(a: &Arc<Activity>) -> Busy {
        a.any.store(true, Ordering::Release);
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        a.touch();
        Busy(a.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one connection until it ends, it has been idle too long, or `stop`
/// turns true (then its requests in flight finish first).
async fn serve_connection<I>(
    io: I,
    peer: std::net::SocketAddr,
    site: Site,
    builder: &auto::Builder<TokioExecutor>,
    http: &HttpConfig,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let busy = Busy::start(&activity);
            let site = site.clone();
            async move {
                let resp = site.handle(req, peer).await;
                drop(busy);
                Ok::<_, std::convert::Infallible>(resp)
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = activity.idle_for(http.header_read_timeout, http.idle_timeout);
    tokio::pin!(idle);
    let mut closing = false;
    // An idle connection being closed gets this long to go (an HTTP/2 peer
    // may keep it open after our GOAWAY); at shutdown, `run_until` bounds it.
    let mut cut_at: Option<Instant> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut idle, if !closing => {
                tracing::debug!("idle connection closed");
                closing = true;
                cut_at = Some(Instant::now() + http.header_read_timeout);
                conn.as_mut().graceful_shutdown();
            }
            _ = sleep_until_some(cut_at) => return,
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
