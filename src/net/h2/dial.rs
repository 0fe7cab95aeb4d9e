//! Opening one HTTP/2 connection to the origin: DNS, TCP (`TCP_NODELAY`),
//! the proxy's `CONNECT` tunnel when one is configured, TLS, the HTTP/2
//! handshake — all within the connect timeout — and the connection's task.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::Full;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus::IntCounter;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ConnectError;

pub(super) type Sender = SendRequest<Full<Bytes>>;

/// A `host:port` to reach by name.
#[derive(Debug, Clone)]
pub(super) struct HostPort {
    /// As DNS takes it: an IPv6 literal without its brackets.
    pub host: String,
    pub port: u16,
}

/// A TLS connector and the name it checks the peer's certificate against.
pub(super) type Secure = (tokio_rustls::TlsConnector, ServerName<'static>);

/// An HTTP proxy that tunnels with `CONNECT`.
pub(super) struct Tunnel {
    pub proxy: HostPort,
    /// TLS to the proxy itself (an `https://` proxy URL).
    pub tls: Option<Secure>,
    /// The `CONNECT` target: the origin's `host:port` (IPv6 in brackets).
    pub target: String,
    /// `Proxy-Authorization`, from the proxy URL's user and password.
    pub auth: Option<HeaderValue>,
}

pub(super) struct Dialer {
    pub origin: HostPort,
    /// TLS to the origin; `None` speaks HTTP/2 in clear (tests' `http` origins).
    pub tls: Option<Secure>,
    pub tunnel: Option<Tunnel>,
    pub connect_timeout: Duration,
    pub connections: Option<IntCounter>,
    pub http2: Builder<TokioExecutor>,
}

/// The HTTP/2 settings of the connection: a ping every 30 s, also while
/// idle, so that a dead path is found before a push waits on it.
pub(super) fn http2_builder() -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    b
}

impl Dialer {
    /// A new connection, its task spawned; counted once it is up.
    pub async fn dial(&self) -> Result<Sender, ConnectError> {
        let sender = tokio::time::timeout(self.connect_timeout, self.open())
            .await
            .map_err(|_| ConnectError::Timeout)??;
        if let Some(c) = &self.connections {
            c.inc();
        }
        Ok(sender)
    }

    async fn open(&self) -> Result<Sender, ConnectError> {
        let Some(t) = &self.tunnel else {
            return self.secure(tcp(&self.origin).await?).await;
        };
        let mut tcp = tcp(&t.proxy).await?;
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

    /// TLS to the origin over `io` (unless the origin is `http`), then HTTP/2.
    async fn secure<T>(&self, io: T) -> Result<Sender, ConnectError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), io)
                    .await
                    .map_err(ConnectError::Tls)?;
                self.handshake(tls).await
            }
            None => self.handshake(io).await,
        }
    }

    async fn handshake<T>(&self, io: T) -> Result<Sender, ConnectError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = self
            .http2
            .handshake(TokioIo::new(io))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "APNs connection closed");
            }
        });
        Ok(sender)
    }
}

/// The first address of `to` that accepts a TCP connection.
async fn tcp(to: &HostPort) -> Result<TcpStream, ConnectError> {
    let addrs = tokio::net::lookup_host((to.host.as_str(), to.port))
        .await
        .map_err(ConnectError::Dns)?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                s.set_nodelay(true).map_err(ConnectError::Io)?;
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
