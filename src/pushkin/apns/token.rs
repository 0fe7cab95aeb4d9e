//! APNs provider authentication tokens: an ES256 JWT (`kid` = key id, `iss` =
//! team id, `iat`) minted from the `.p8` key, reused for 50 minutes (Apple
//! refuses tokens older than an hour and throttles ones minted too often), and
//! re-minted at once when Apple says the one in use expired.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::{signature::Signer, Signature, SigningKey};

use crate::telemetry::metrics::Upstream;

const REUSE_FOR: Duration = Duration::from_secs(50 * 60);

pub struct ProviderToken {
    key: SigningKey,
    key_id: String,
    team_id: String,
    current: Mutex<Option<(Arc<str>, Instant)>>,
    metrics: Upstream,
}

impl ProviderToken {
    pub fn new(key: SigningKey, key_id: String, team_id: String, metrics: Upstream) -> Self {
        ProviderToken {
            key,
            key_id,
            team_id,
            current: Mutex::new(None),
            metrics,
        }
    }

    /// The token to send now, minting one when none is fresh.
    pub fn get(&self) -> Arc<str> {
        let Ok(mut current) = self.current.lock() else {
            return self.mint();
        };
        match &*current {
            Some((jwt, at)) if at.elapsed() < REUSE_FOR => jwt.clone(),
            _ => {
                let jwt = self.mint();
                *current = Some((jwt.clone(), Instant::now()));
                jwt
            }
        }
    }

    /// Apple refused `used`: replace it, unless another push already did.
    pub fn refused(&self, used: &str) {
        if let Ok(mut current) = self.current.lock() {
            if current.as_ref().is_some_and(|(jwt, _)| &**jwt == used) {
                *current = None;
            }
        }
    }

    fn mint(&self) -> Arc<str> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let header = URL_SAFE_NO_PAD
            .encode(serde_json::json!({"alg": "ES256", "kid": self.key_id}).to_string());
        let claims = URL_SAFE_NO_PAD
            .encode(serde_json::json!({"iss": self.team_id, "iat": iat}).to_string());
        let input = format!("{header}.{claims}");
        let sig: Signature = self.key.sign(input.as_bytes());
        tracing::debug!(key_id = %self.key_id, "minted a new APNs provider token");
        self.metrics.token_refreshed("apns_jwt", true);
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes())).into()
    }
}
