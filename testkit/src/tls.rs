//! A test certificate authority made per test run (never a fixed key on disk):
//! server certificates for `localhost`/`127.0.0.1` (or for other names and IP
//! literals, see [`TestCa::server_config_for`]) and client certificates, all
//! in PEM, plus rustls server configs built from them.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Certificate and key in one PEM file (what APNs `certfile` holds).
    pub fn combined_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }
}

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TestCa {
    pub fn new() -> TestCa {
        install_provider();
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "pushgate test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate (what a client adds to its trusted roots).
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    fn issue(&self, names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose) -> Issued {
        self.issue_until(names, cn, usage, None)
    }

    fn issue_until(
        &self,
        names: Vec<String>,
        cn: &str,
        usage: ExtendedKeyUsagePurpose,
        hours: Option<i64>,
    ) -> Issued {
        let mut params = CertificateParams::new(names).expect("params");
        if let Some(hours) = hours {
            params.not_after = time::OffsetDateTime::now_utc() + time::Duration::hours(hours);
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn server_cert(&self) -> Issued {
        self.server_cert_for(&["localhost", "127.0.0.1"])
    }

    /// A server certificate for these names; an IP literal (`1.1.1.1`, `2606:4700::1111`)
    /// becomes an IP-address subject alternative name, as clients verify it.
    pub fn server_cert_for(&self, names: &[&str]) -> Issued {
        self.issue(
            names.iter().map(|n| (*n).to_owned()).collect(),
            names.first().copied().unwrap_or("localhost"),
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    pub fn client_cert(&self, cn: &str) -> Issued {
        self.issue(Vec::new(), cn, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate that expires `hours` from now (negative: already expired).
    pub fn client_cert_expiring(&self, cn: &str, hours: i64) -> Issued {
        self.issue_until(
            Vec::new(),
            cn,
            ExtendedKeyUsagePurpose::ClientAuth,
            Some(hours),
        )
    }

    /// A rustls server config for `localhost` with the given ALPN protocols; when
    /// `require_client_cert`, clients must present a certificate issued by this CA.
    pub fn server_config(
        &self,
        alpn: &[&[u8]],
        require_client_cert: bool,
    ) -> Arc<rustls::ServerConfig> {
        self.server_config_with(self.server_cert(), alpn, require_client_cert)
    }

    /// A rustls server config (no client certificates) presenting a certificate for `names`.
    pub fn server_config_for(&self, names: &[&str], alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        self.server_config_with(self.server_cert_for(names), alpn, false)
    }

    fn server_config_with(
        &self,
        issued: Issued,
        alpn: &[&[u8]],
        require_client_cert: bool,
    ) -> Arc<rustls::ServerConfig> {
        let certs = vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("cert")];
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key");
        let builder = rustls::ServerConfig::builder();
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("ca"))
                .expect("root");
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(certs, key).expect("server config");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
