//! Private keys read from PEM: P-256 (VAPID keys, APNs `.p8` provider keys)
//! and RSA (FCM service accounts). Config checks them at load and hands the
//! pushkins what it parsed with these same functions. A leaf module.

use p256::pkcs8::DecodePrivateKey;
use ring::signature::RsaKeyPair;

/// Reads a P-256 private key from PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`) PEM.
pub fn parse_p256_key(pem: &str) -> Option<p256::ecdsa::SigningKey> {
    let secret = p256::SecretKey::from_pkcs8_pem(pem.trim())
        .or_else(|_| p256::SecretKey::from_sec1_pem(pem.trim()))
        .ok()?;
    Some(p256::ecdsa::SigningKey::from(secret))
}

/// Parses an RSA private key from PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
pub fn parse_rsa_key(pem: &str) -> Result<RsaKeyPair, String> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| e.to_string())?;
    RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| e.to_string())
}
