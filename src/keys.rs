//! Private keys read from PEM: P-256 (VAPID keys, APNs `.p8` provider keys)
//! and RSA (FCM service accounts). Config checks them at load and hands the
//! pushkins what it parsed with these same functions. A leaf module.

use p256::pkcs8::DecodePrivateKey;
use ring::signature::RsaKeyPair;

/// Reads a P-256 private key from PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`) PEM,
/// or from the DER of either encoded as base64url: the form py_vapid (and so
/// Sygnal) also reads, e.g. keys made by `vapid --gen` on older versions.
pub fn parse_p256_key(text: &str) -> Option<p256::ecdsa::SigningKey> {
    let text = text.trim();
    let secret = if text.contains("-----BEGIN") {
        p256::SecretKey::from_pkcs8_pem(text)
            .or_else(|_| p256::SecretKey::from_sec1_pem(text))
            .ok()?
    } else {
        let der = decode_base64url(text)?;
        p256::SecretKey::from_pkcs8_der(&der)
            .or_else(|_| p256::SecretKey::from_sec1_der(&der))
            .ok()?
    };
    Some(p256::ecdsa::SigningKey::from(secret))
}

/// base64url with or without padding, line breaks allowed (as Python's
/// `urlsafe_b64decode` reads it); the standard alphabet is taken too.
fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && *c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD.decode(cleaned).ok()
}

/// Parses an RSA private key from PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
pub fn parse_rsa_key(pem: &str) -> Result<RsaKeyPair, String> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| e.to_string())?;
    RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;
    use p256::pkcs8::{EncodePrivateKey, LineEnding};

    #[test]
    fn p256_keys_are_read_from_pem_and_base64url_der() {
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let want = p256::ecdsa::SigningKey::from(secret.clone());
        let pkcs8_der = secret.to_pkcs8_der().expect("der");
        let sec1_der = secret.to_sec1_der().expect("sec1");
        let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("pem");
        let sec1_pem = secret.to_sec1_pem(LineEnding::LF).expect("pem");
        let forms = [
            pem.to_string(),
            sec1_pem.to_string(),
            URL_SAFE_NO_PAD.encode(pkcs8_der.as_bytes()),
            format!("{}\n", URL_SAFE.encode(pkcs8_der.as_bytes())),
            URL_SAFE_NO_PAD.encode(&sec1_der[..]),
            STANDARD.encode(pkcs8_der.as_bytes()),
        ];
        for form in &forms {
            assert_eq!(parse_p256_key(form).as_ref(), Some(&want), "{form}");
        }
        assert!(parse_p256_key("hello").is_none());
        assert!(parse_p256_key(&URL_SAFE_NO_PAD.encode(b"not a key")).is_none());
    }
}
