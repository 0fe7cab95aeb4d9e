//! VAPID (RFC 8292) `Authorization` headers, one JWT per push-service origin,
//! cached and renewed well before it expires so that signing stays off the hot path.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::SigningKey;

use crate::pushkin::jwt;
use crate::pushkin::token::{Lifetime, TokenCache, TokenError};

/// How long a token is valid (RFC 8292 allows up to 24 h), renewed once it
/// has less than an hour left.
const LIFETIME: Lifetime = Lifetime {
    min: Duration::from_secs(12 * 3600),
    max: Duration::from_secs(12 * 3600),
    renew_before: Duration::from_secs(3600),
    // Signing is local and does not fail; a back-off is never reached.
    first_backoff: Duration::from_secs(1),
    max_backoff: Duration::from_secs(60),
};
/// Origins cached at most; a flood of distinct endpoints cannot grow memory without bound.
const MAX_ORIGINS: usize = 4096;

pub struct Vapid {
    key: Arc<SigningKey>,
    /// The application server key, base64url: what apps pass as `applicationServerKey`.
    public_key: String,
    subject: String,
    /// The `Authorization` header value per origin.
    cache: TokenCache<String>,
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
            cache: TokenCache::new(LIFETIME, MAX_ORIGINS, None),
        }
    }

    /// The `Authorization` header value for an endpoint with this origin (`https://host[:port]`).
    pub async fn authorization(&self, origin: &str) -> Result<Arc<str>, TokenError> {
        self.cache
            .get(origin, || async {
                Ok((self.mint(origin).into(), LIFETIME.max))
            })
            .await
    }

    fn mint(&self, origin: &str) -> String {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(LIFETIME.max)
            .as_secs();
        let claims = serde_json::json!({ "aud": origin, "exp": exp, "sub": self.subject });
        let token = jwt::es256(
            &self.key,
            r#"{"typ":"JWT","alg":"ES256"}"#,
            &claims.to_string(),
        );
        format!("vapid t={token}, k={}", self.public_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::{signature::Verifier, Signature, VerifyingKey};

    #[tokio::test]
    async fn token_is_signed_cached_per_origin() {
        let key = Arc::new(SigningKey::random(&mut rand_core::OsRng));
        let v = Vapid::new(key.clone(), "mailto:ops@example.org".into());
        let get = |origin: &'static str| {
            let v = &v;
            async move { v.authorization(origin).await.expect("signed") }
        };
        let a = get("https://push.example.net").await;
        assert!(Arc::ptr_eq(&a, &get("https://push.example.net").await));
        assert_ne!(a, get("https://other.example.net").await);

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
