//! The TLS side of the APNs client and of the FCM client of [`crate::net::h1`]:
//! the roots reqwest trusts (the platform's, through `rustls-platform-verifier`,
//! plus the optional extra CA), the ALPN protocols each offers (`h2` only to
//! APNs, `h2` and `http/1.1` to FCM, `http/1.1` to an `https` proxy), and the
//! client certificate of APNs certificate auth.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ClientConfig;

use crate::net::NetError;

/// A client certificate chain and its private key, from one PEM file.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A PEM file that is not a certificate with its key.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("not PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("holds no certificate")]
    NoCertificate,
    #[error("holds no private key")]
    NoKey,
}

impl Identity {
    /// The certificates (leaf first) and the first private key (PKCS#8, PKCS#1 or SEC1) of `pem`.
    pub fn from_pem(pem: &[u8]) -> Result<Identity, IdentityError> {
        let chain = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?;
        if chain.is_empty() {
            return Err(IdentityError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => IdentityError::NoKey,
            e => IdentityError::Pem(e),
        })?;
        Ok(Identity { chain, key })
    }
}

/// The extra CA's certificates; the file must hold at least one.
pub(crate) fn extra_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let pem = crate::net::read_ca(path)?;
    let invalid = |source| NetError::CaPem {
        path: path.display().to_string(),
        source,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    if certs.is_empty() {
        return Err(invalid(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// TLS 1.2 and 1.3 with the process's provider (ring), offering `alpn` (in
/// order of preference).
pub(in crate::net) fn client_config(
    extra_ca: Option<&Path>,
    identity: Option<Identity>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, NetError> {
    crate::net::install_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let verifier = match extra_ca {
        None => rustls_platform_verifier::Verifier::new(provider.clone()),
        Some(path) => rustls_platform_verifier::Verifier::new_with_extra_roots(
            extra_roots(path)?,
            provider.clone(),
        ),
    }
    .map_err(NetError::Tls)?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(NetError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(NetError::Tls)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
