//! `tls`: the inbound certificate chain and its private key, read and
//! checked at load (so `check-config` and a reload see a bad pair at once).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::problems::Problems;
use super::walk::Section;

/// `tls`: serve HTTPS with this certificate chain and key.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// The pair, parsed and checked.
    pub key: Arc<CertifiedKey>,
}

pub(super) fn read_tls(s: Option<Section<'_>>, p: &mut Problems) -> Option<TlsConfig> {
    let mut s = s?;
    let certificate = s.string("certificate", p);
    let private_key = s.string("private_key", p);
    s.finish(p);
    let (Some(certificate), Some(private_key)) = (certificate, private_key) else {
        p.error(
            "tls",
            "needs `certificate` and `private_key` (PEM file paths)",
        );
        return None;
    };
    let (certificate, private_key) = (PathBuf::from(certificate), PathBuf::from(private_key));
    match load(&certificate, &private_key) {
        Ok(key) => Some(TlsConfig {
            certificate,
            private_key,
            key,
        }),
        Err((path, message)) => {
            p.error(path, message);
            None
        }
    }
}

/// Reads a certificate chain and its key; on error, the key path at fault and why.
fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, (&'static str, String)> {
    let pem = std::fs::read(cert).map_err(|e| {
        (
            "tls.certificate",
            format!("cannot read `{}`: {e}", cert.display()),
        )
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err((
            "tls.certificate",
            format!("`{}` holds no PEM certificate", cert.display()),
        ));
    }
    let key_pem = std::fs::read(key).map_err(|e| {
        (
            "tls.private_key",
            format!("cannot read `{}`: {e}", key.display()),
        )
    })?;
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        (
            "tls.private_key",
            format!("`{}` holds no PEM private key: {e}", key.display()),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, der, &provider)
        .map(Arc::new)
        .map_err(|e| {
            (
                "tls.private_key",
                format!("`{}` does not fit the certificate: {e}", key.display()),
            )
        })
}
