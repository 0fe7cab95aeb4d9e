//! The outbound HTTP clients: [`build_client`] (reqwest) for Web Push,
//! UnifiedPush and FCM's OAuth token requests, [`h2`] for APNs (HTTP/2 to one
//! fixed origin, without reqwest's per-request layers) and [`h1`] for FCM's
//! pushes (hyper-util's pool, without reqwest's per-request layers); the
//! last two reach their origin through `route` (DNS, TCP, the proxy's
//! tunnel, TLS from `tls`); [`transport`] is what `pushkin::exchange` needs
//! of each.
//!
//! The reqwest client:
//! rustls (ring provider) with the system's roots plus an optional extra CA,
//! HTTP/2 when the server offers it through ALPN, a connect timeout, the
//! configured proxy (CONNECT for https), and — for user-supplied
//! endpoints — the private-address guard of [`guard`], enforced in the DNS
//! resolver so that the address that was checked is the address connected to.
//! Its total time per request is the push's deadline ([`ClientOptions`]).

mod count;
pub mod fd_limit;
pub mod guard;
pub mod h1;
pub mod h2;
mod route;
mod tls;
pub mod transport;

use std::path::Path;
use std::sync::{Arc, Once};
use std::time::Duration;

pub use guard::{AddressGuard, Refused};

/// How to build a client for one app.
///
/// There is no total timeout here: every request is sent by
/// `pushkin::exchange`, inside the push's deadline (which covers the answer's
/// body too), and a second timer of the same length per request only costs.
pub struct ClientOptions<'a> {
    pub connect_timeout: Duration,
    /// Proxy URL; `https` targets are tunnelled with CONNECT.
    pub proxy: Option<&'a str>,
    /// An extra CA certificate (PEM) trusted on top of the system's roots.
    pub extra_ca: Option<&'a Path>,
    /// Idle connections kept per host.
    pub max_idle_per_host: usize,
    /// Refuse connections to private addresses, checked on the resolved address.
    pub guard: Option<AddressGuard>,
    /// Counts the connections opened.
    pub connections: Option<prometheus::IntCounter>,
}

/// A client could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot read CA file `{path}`: {source}")]
    CaUnreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("CA file `{path}` holds no usable PEM certificate: {source}")]
    CaInvalid {
        path: String,
        source: reqwest::Error,
    },
    #[error("CA file `{path}` holds no usable PEM certificate: {source}")]
    CaPem {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("invalid proxy URL: {0}")]
    Proxy(reqwest::Error),
    #[error("invalid proxy URL: {0}")]
    ProxyUrl(String),
    #[error("invalid endpoint {0}")]
    Origin(String),
    #[error("cannot set up TLS: {0}")]
    Tls(rustls::Error),
    #[error("cannot build the HTTP client: {0}")]
    Build(reqwest::Error),
}

/// rustls needs one process-wide crypto provider; ring is the one we ship.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The extra CA file's bytes.
pub(crate) fn read_ca(path: &Path) -> Result<Vec<u8>, NetError> {
    std::fs::read(path).map_err(|source| NetError::CaUnreadable {
        path: path.display().to_string(),
        source,
    })
}

pub fn build_client(o: &ClientOptions<'_>) -> Result<reqwest::Client, NetError> {
    install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .connect_timeout(o.connect_timeout)
        .pool_max_idle_per_host(o.max_idle_per_host)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_while_idle(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pushgate/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = o.extra_ca {
        let pem = read_ca(path)?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| NetError::CaInvalid {
                path: path.display().to_string(),
                source,
            })?;
        b = b.tls_certs_merge(certs);
    }
    match o.proxy {
        Some(url) => {
            let proxy = reqwest::Proxy::all(url)
                .map_err(NetError::Proxy)?
                .no_proxy(reqwest::NoProxy::from_env());
            b = b.proxy(proxy);
        }
        None => b = b.no_proxy(),
    }
    if let Some(guard) = &o.guard {
        let mut guard = guard.clone();
        // The proxy is the operator's choice: never refused by the guard.
        guard.exempt = o
            .proxy
            .and_then(|p| url::Url::parse(p).ok())
            .and_then(|u| u.host_str().map(str::to_owned));
        b = b.dns_resolver(Arc::new(guard));
    }
    if let Some(counter) = &o.connections {
        b = b.connector_layer(count::CountConnections(counter.clone()));
    }
    b.build().map_err(NetError::Build)
}

#[cfg(test)]
impl ClientOptions<'static> {
    /// For tests against loopback servers: a 2 s connect timeout, nothing else.
    pub(crate) fn for_tests() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            proxy: None,
            extra_ca: None,
            max_idle_per_host: 1,
            guard: None,
            connections: None,
        }
    }
}

/// Whether a request error was caused by the address guard refusing the destination.
pub fn refused_by_guard(err: &reqwest::Error) -> Option<&Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        source = e.source();
    }
    None
}

/// Whether a request failed because a name could not be resolved (the
/// system resolver's "failed to lookup address" / "temporary failure in name
/// resolution", or hyper's `dns error`).
pub fn is_dns_failure(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("dns error")
            || text.contains("failed to lookup address")
            || text.contains("name resolution")
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// A short, loggable description of a transport error (no URLs: they may hold secrets).
pub fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_body() || err.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    format!("{kind}: {}", transport::root_cause(err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers every request with a 307 to another path, one request per
    /// connection; counts the requests.
    async fn redirecting_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let answer = "HTTP/1.1 307 Temporary Redirect\r\nlocation: /elsewhere\r\n\
                                  content-length: 0\r\nconnection: close\r\n\r\n";
                    let _ = sock.write_all(answer.as_bytes()).await;
                });
            }
        });
        (addr, requests)
    }

    #[tokio::test]
    async fn a_redirect_is_answered_to_the_caller_not_followed() {
        let (addr, requests) = redirecting_server().await;
        let client = build_client(&ClientOptions::for_tests()).expect("client");
        let url = url::Url::parse(&format!("http://{addr}/push")).expect("url");
        let resp = client
            .execute(reqwest::Request::new(reqwest::Method::POST, url))
            .await
            .expect("an answer");
        assert_eq!(resp.status(), reqwest::StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            resp.headers().get(reqwest::header::LOCATION),
            Some(&reqwest::header::HeaderValue::from_static("/elsewhere"))
        );
        assert_eq!(resp.url().path(), "/push");
        assert_eq!(requests.load(Ordering::SeqCst), 1, "not followed");
    }
}
