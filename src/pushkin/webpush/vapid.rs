//! VAPID (RFC 8292) `Authorization` headers, one JWT per push-service origin,
//! cached and renewed well before it expires so that signing stays off the hot path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::{signature::Signer, Signature, SigningKey};

/// How long a token is valid (RFC 8292 allows up to 24 h).
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Renew a cached token once it has less than this left.
const RENEW_BEFORE: Duration = Duration::from_secs(3600);
/// Origins cached at most; a flood of distinct endpoints cannot grow memory without bound.
const MAX_ORIGINS: usize = 4096;

pub struct Vapid {
    key: Arc<SigningKey>,
    /// The application server key, base64url: what apps pass as `applicationServerKey`.
    public_key: String,
    subject: String,
    cache: Mutex<HashMap<String, (Arc<str>, Instant)>>,
}

/// The base64url form of a VAPID public key (uncompressed P-256 point).
pub fn public_key_b64(key: &SigningKey) -> String {
    URL_SAFE_NO_PAD.encode(key.verifying_key().to_encoded_point(false).as_bytes())
}

impl Vapid {
    pub fn new(key: Arc<SigningKey>, subject: String) -> Self {
        let public_key = public_key_b64(&key);
        Vapid {
            key,
            public_key,
            subject,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The `Authorization` header value for an endpoint with this origin (`https://host[:port]`).
    pub fn authorization(&self, origin: &str) -> Arc<str> {
        let now = Instant::now();
        if let Ok(cache) = self.cache.lock() {
            if let Some((header, renew_at)) = cache.get(origin) {
                if now < *renew_at {
                    return header.clone();
                }
            }
        }
        // Sign outside the lock: a duplicate signature in a race is cheaper than contention.
        let header: Arc<str> = self.mint(origin).into();
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_ORIGINS {
                cache.retain(|_, (_, renew_at)| now < *renew_at);
                if cache.len() >= MAX_ORIGINS {
                    cache.clear();
                }
            }
            cache.insert(
                origin.to_owned(),
                (header.clone(), now + LIFETIME - RENEW_BEFORE),
            );
        }
        header
    }

    fn mint(&self, origin: &str) -> String {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(LIFETIME)
            .as_secs();
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({ "aud": origin, "exp": exp, "sub": self.subject });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let signature: Signature = self.key.sign(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(signature.to_bytes());
        format!("vapid t={signing_input}.{signature}, k={}", self.public_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::{signature::Verifier, VerifyingKey};

    #[test]
    fn token_is_signed_cached_per_origin() {
        let key = Arc::new(SigningKey::random(&mut rand::rngs::OsRng));
        let v = Vapid::new(key.clone(), "mailto:ops@example.org".into());
        let a = v.authorization("https://push.example.net");
        assert!(Arc::ptr_eq(
            &a,
            &v.authorization("https://push.example.net")
        ));
        assert_ne!(a, v.authorization("https://other.example.net"));

        let rest = a.strip_prefix("vapid t=").expect("scheme");
        let (jwt, k) = rest.split_once(", k=").expect("k");
        assert_eq!(k, public_key_b64(&key));
        let (input, sig) = jwt.rsplit_once('.').expect("sig");
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).expect("b64")).expect("sig");
        VerifyingKey::from(&*key)
            .verify(input.as_bytes(), &sig)
            .expect("valid");
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(input.split('.').nth(1).expect("claims"))
                .expect("b64"),
        )
        .expect("json");
        assert_eq!(claims["aud"], "https://push.example.net");
        assert_eq!(claims["sub"], "mailto:ops@example.org");
    }
}
