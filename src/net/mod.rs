//! The one outbound HTTP client that every pushkin uses.
//!
//! rustls (ring provider) with the system's roots plus an optional extra CA,
//! HTTP/2 when the server offers it through ALPN, connect and total timeouts,
//! the configured proxy (CONNECT for https), and — for user-supplied
//! endpoints — the private-address guard of [`guard`], enforced in the DNS
//! resolver so that the address that was checked is the address connected to.

mod count;
pub mod guard;

use std::path::Path;
use std::sync::{Arc, Once};
use std::time::Duration;

pub use guard::{AddressGuard, Refused};

/// How to build a client for one app.
pub struct ClientOptions<'a> {
    pub connect_timeout: Duration,
    /// Total time for one request, connect and body included.
    pub timeout: Duration,
    /// Proxy URL; `https` targets are tunnelled with CONNECT.
    pub proxy: Option<&'a str>,
    /// An extra CA certificate (PEM) trusted on top of the system's roots.
    pub extra_ca: Option<&'a Path>,
    /// Idle connections kept per host.
    pub max_idle_per_host: usize,
    /// Refuse connections to private addresses, checked on the resolved address.
    pub guard: Option<AddressGuard>,
    /// Speak HTTP/2 only (ALPN `h2`), as APNs requires.
    pub http2_only: bool,
    /// A client certificate and key to present (APNs certificate auth).
    pub identity: Option<reqwest::Identity>,
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
    #[error("invalid proxy URL: {0}")]
    Proxy(reqwest::Error),
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

pub fn build_client(o: &ClientOptions<'_>) -> Result<reqwest::Client, NetError> {
    install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .connect_timeout(o.connect_timeout)
        .timeout(o.timeout)
        .pool_max_idle_per_host(o.max_idle_per_host)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_while_idle(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pushgate/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = o.extra_ca {
        let pem = std::fs::read(path).map_err(|source| NetError::CaUnreadable {
            path: path.display().to_string(),
            source,
        })?;
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
    if o.http2_only {
        b = b.http2_prior_knowledge();
    }
    if let Some(identity) = o.identity.clone() {
        b = b.identity(identity);
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
    let mut root: &dyn std::error::Error = err;
    while let Some(next) = root.source() {
        root = next;
    }
    format!("{kind}: {root}")
}
