//! Inbound TLS (`tls: {certificate, private_key}`) for operators who run
//! pushgate without a reverse proxy.
//!
//! The certificate is held by a resolver that a reload (`SIGHUP`) swaps, so a
//! renewed certificate takes effect for new connections without a restart.
//! Handshakes run in the connection's own task, within
//! `http.header_read_timeout`, so a client that stalls its handshake never
//! holds up the accept loop. ALPN offers `h2` and `http/1.1`; the server
//! speaks whichever the client chose.

use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// The certificate in force; [`CertResolver::replace`] swaps it.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    pub fn new(key: Arc<CertifiedKey>) -> Arc<CertResolver> {
        Arc::new(CertResolver {
            current: RwLock::new(key),
        })
    }

    pub fn replace(&self, key: Arc<CertifiedKey>) {
        match self.current.write() {
            Ok(mut c) => *c = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.current.read() {
            Ok(c) => Some(c.clone()),
            Err(poisoned) => Some(poisoned.into_inner().clone()),
        }
    }
}

/// The TLS acceptor for the API listeners; the serving loop handshakes each
/// connection in its own task, bounded in time (see `serve`).
pub fn acceptor(resolver: Arc<CertResolver>) -> TlsAcceptor {
    crate::net::install_crypto_provider();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}
