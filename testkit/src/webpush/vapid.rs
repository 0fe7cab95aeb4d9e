//! VAPID (RFC 8292) verification: the `Authorization: vapid t=…, k=…` header,
//! the ES256 signature checked with `k`, and the claims a push service checks.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde_json::Value;

/// The verified claims and key.
#[derive(Clone, Debug, PartialEq)]
pub struct VapidClaims {
    pub aud: String,
    pub exp: u64,
    pub sub: String,
    /// The `k=` public key, base64url.
    pub k: String,
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| format!("{what} is not base64url"))
}

/// Verifies an `Authorization` header for a request to `origin`; `expected_k` pins the key.
pub fn verify(header: &str, origin: &str, expected_k: Option<&str>) -> Result<VapidClaims, String> {
    let params = header
        .strip_prefix("vapid ")
        .ok_or_else(|| format!("scheme is not `vapid`: {header}"))?;
    let (mut t, mut k) = (None, None);
    for part in params.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.trim()),
            Some(("k", v)) => k = Some(v.trim()),
            _ => return Err(format!("unexpected parameter `{part}`")),
        }
    }
    let (t, k) = (t.ok_or("no t= parameter")?, k.ok_or("no k= parameter")?);
    if let Some(expected) = expected_k {
        if k != expected {
            return Err(format!("k={k} is not the expected application server key"));
        }
    }
    let key = VerifyingKey::from_sec1_bytes(&b64(k, "k")?)
        .map_err(|_| "k is not a P-256 public key".to_owned())?;

    let mut parts = t.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("t is not a three-part JWT".into());
    };
    let header: Value =
        serde_json::from_slice(&b64(h, "JWT header")?).map_err(|e| format!("JWT header: {e}"))?;
    if header["alg"] != "ES256" || header["typ"] != "JWT" {
        return Err(format!("JWT header must be typ JWT, alg ES256: {header}"));
    }
    let sig = Signature::from_slice(&b64(s, "signature")?)
        .map_err(|_| "signature is not 64 bytes r||s".to_owned())?;
    key.verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| "signature does not verify with k".to_owned())?;

    let claims: Value =
        serde_json::from_slice(&b64(c, "JWT claims")?).map_err(|e| format!("JWT claims: {e}"))?;
    let aud = claims["aud"].as_str().ok_or("no aud claim")?.to_owned();
    let exp = claims["exp"].as_u64().ok_or("no numeric exp claim")?;
    let sub = claims["sub"].as_str().ok_or("no sub claim")?.to_owned();
    if aud != origin {
        return Err(format!("aud {aud} is not the push service origin {origin}"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if exp <= now || exp > now + 24 * 3600 {
        return Err(format!(
            "exp {exp} must be in the future and within 24 h (now {now})"
        ));
    }
    if !(sub.starts_with("mailto:") || sub.starts_with("https:")) {
        return Err(format!("sub {sub} is not a mailto: or https: URI"));
    }
    Ok(VapidClaims {
        aud,
        exp,
        sub,
        k: k.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::{signature::Signer, SigningKey};

    fn token(key: &SigningKey, claims: Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let sig: Signature = key.sign(format!("{h}.{c}").as_bytes());
        let k = URL_SAFE_NO_PAD.encode(key.verifying_key().to_encoded_point(false).as_bytes());
        format!(
            "vapid t={h}.{c}.{}, k={k}",
            URL_SAFE_NO_PAD.encode(sig.to_bytes())
        )
    }

    #[test]
    fn verifies_and_refuses() {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("time")
            .as_secs();
        let good = token(
            &key,
            serde_json::json!({"aud": "http://127.0.0.1:1", "exp": now + 600, "sub": "mailto:a@b"}),
        );
        assert!(verify(&good, "http://127.0.0.1:1", None).is_ok());
        assert!(verify(&good, "http://127.0.0.1:2", None)
            .expect_err("refused")
            .contains("aud"));
        assert!(verify(&good, "http://127.0.0.1:1", Some("other")).is_err());
        let late = token(
            &key,
            serde_json::json!({"aud": "http://127.0.0.1:1", "exp": now + 90_000, "sub": "mailto:a@b"}),
        );
        assert!(verify(&late, "http://127.0.0.1:1", None)
            .expect_err("refused")
            .contains("24 h"));
        let forged = good.replacen("t=", "t=x", 1);
        assert!(verify(&forged, "http://127.0.0.1:1", None).is_err());
    }
}
