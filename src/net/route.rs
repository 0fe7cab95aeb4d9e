//! How a client of one origin reaches it: DNS, TCP (`TCP_NODELAY`, TCP
//! keepalive when asked), the proxy's `CONNECT` tunnel when one is
//! configured (`http` or `https` proxies, `NO_PROXY`, `Proxy-Authorization`
//! from the proxy URL), TLS trusting the platform's roots plus the optional
//! extra CA (saying whether ALPN chose `h2`), the connect timeout and the
//! count of connections opened. Shared by the APNs client ([`super::h2`],
//! which adds its HTTP/2 handshake) and the FCM pushes' client
//! ([`super::h1`], hyper-util's pool over it), so that both reach their
//! origin the same way; and the headers both add to a request, as reqwest did.

use std::future::Future;
use std::io;
use std::path::Path;
use std::time::Duration;

use http::HeaderValue;
use hyper_util::client::proxy::matcher::Matcher;
use prometheus::IntCounter;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tls::{self, Identity};
use super::NetError;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("dns error")]
    Dns(#[source] std::io::Error),
    #[error("no connection within the connect timeout")]
    Timeout,
    #[error("tcp connect error")]
    Io(#[source] std::io::Error),
    #[error("the proxy {0}")]
    Proxy(String),
    #[error("proxy connection failed")]
    ProxyIo(#[source] std::io::Error),
    #[error("TLS handshake failed")]
    Tls(#[source] std::io::Error),
    #[error("HTTP/2 handshake failed")]
    Handshake(#[source] h2::Error),
    /// A client of one origin was asked for a connection elsewhere.
    #[error("not this client's origin")]
    Elsewhere,
}

/// What reqwest sent on every request, kept so that APNs and FCM see the same requests.
pub(in crate::net) static AGENT: HeaderValue =
    HeaderValue::from_static(concat!("pushgate/", env!("CARGO_PKG_VERSION")));
pub(in crate::net) static ANY: HeaderValue = HeaderValue::from_static("*/*");

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

/// How a client of one origin reaches it.
pub(in crate::net) struct Reach<'a> {
    /// `http(s)://host[:port]`; a path is ignored.
    pub origin: &'a url::Url,
    pub connect_timeout: Duration,
    pub proxy: Option<&'a str>,
    pub extra_ca: Option<&'a Path>,
    pub connections: Option<IntCounter>,
    /// Which client, for the error about a proxy it cannot use.
    pub who: &'static str,
}

/// The route to `r.origin`: TLS offering `alpn` (and presenting `identity`)
/// for an `https` origin, through the proxy's tunnel unless `NO_PROXY` names
/// the origin.
pub(in crate::net) fn route(
    r: &Reach<'_>,
    identity: Option<Identity>,
    alpn: &[&[u8]],
) -> Result<Route, NetError> {
    let origin = r.origin;
    let bad = |why: &str| NetError::Origin(format!("{origin}: {why}"));
    let tls = match origin.scheme() {
        "https" => true,
        "http" => false,
        _ => return Err(bad("not an http(s) URL")),
    };
    let port = origin
        .port_or_known_default()
        .ok_or_else(|| bad("no port"))?;
    let (host, name, target) = match origin.host() {
        Some(url::Host::Domain(d)) => (
            d.to_owned(),
            ServerName::try_from(d.to_owned()).map_err(|e| bad(&e.to_string()))?,
            d.to_owned(),
        ),
        Some(url::Host::Ipv4(ip)) => (ip.to_string(), ServerName::from(ip), ip.to_string()),
        Some(url::Host::Ipv6(ip)) => (ip.to_string(), ServerName::from(ip), format!("[{ip}]")),
        None => return Err(bad("no host")),
    };
    let target = format!("{target}:{port}");
    let tunnel = match r.proxy {
        Some(proxy) => tunnel(proxy, origin.scheme(), target, r.extra_ca, r.who)?,
        None => None,
    };
    let tls = if tls {
        let config = tls::client_config(r.extra_ca, identity, alpn)?;
        Some((tokio_rustls::TlsConnector::from(config), name))
    } else {
        None
    };
    Ok(Route {
        origin: HostPort { host, port },
        tls,
        tunnel,
        connect_timeout: r.connect_timeout,
        connections: r.connections.clone(),
        tcp_keepalive: None,
    })
}

/// The tunnel through `proxy` to `target`, unless `NO_PROXY` names the origin.
/// An `https` proxy is trusted as the origin is (platform roots and `extra_ca`).
fn tunnel(
    proxy: &str,
    scheme: &str,
    target: String,
    extra_ca: Option<&Path>,
    who: &str,
) -> Result<Option<Tunnel>, NetError> {
    let no_proxy = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .unwrap_or_default();
    let dst: http::Uri = format!("{scheme}://{target}/")
        .parse()
        .map_err(|e| NetError::Origin(format!("{target}: {e}")))?;
    let through = |no: &str| {
        Matcher::builder()
            .all(proxy.to_owned())
            .no(no.to_owned())
            .build()
            .intercept(&dst)
    };
    let Some(intercept) = through(&no_proxy) else {
        return match through("") {
            // The proxy is not for this origin.
            Some(_) => Ok(None),
            None => Err(NetError::ProxyUrl(proxy_for_log(proxy))),
        };
    };
    let uri = intercept.uri();
    let host = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
        .ok_or_else(|| NetError::ProxyUrl(proxy_for_log(proxy)))?;
    let (tls, port) = match uri.scheme_str() {
        Some("http") => (None, 80),
        Some("https") => {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| NetError::ProxyUrl(format!("{}: {e}", proxy_for_log(proxy))))?;
            let config = tls::client_config(extra_ca, None, &[b"http/1.1"])?;
            (Some((tokio_rustls::TlsConnector::from(config), name)), 443)
        }
        _ => {
            return Err(NetError::ProxyUrl(format!(
                "{}: {who} tunnels through http:// and https:// proxies only",
                proxy_for_log(proxy)
            )))
        }
    };
    Ok(Some(Tunnel {
        proxy: HostPort {
            host,
            port: uri.port_u16().unwrap_or(port),
        },
        tls,
        target,
        auth: intercept.basic_auth().cloned(),
    }))
}

/// The proxy URL without its password.
fn proxy_for_log(proxy: &str) -> String {
    match url::Url::parse(proxy) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(not a URL)".into(),
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
