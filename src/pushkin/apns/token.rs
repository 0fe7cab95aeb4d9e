//! APNs provider authentication tokens: an ES256 JWT (`kid` = key id, `iss` =
//! team id, `iat`) minted from the `.p8` key, reused for 50 minutes (Apple
//! refuses tokens older than an hour and throttles ones minted too often), and
//! re-minted at once when Apple says the one in use expired.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p256::ecdsa::SigningKey;

use crate::pushkin::jwt;
use crate::pushkin::token::{Lifetime, TokenCache, TokenError};
use crate::telemetry::metrics::Upstream;

/// What Apple accepts: an hour; minted anew 10 minutes before.
const LIFETIME: Lifetime = Lifetime {
    min: Duration::from_secs(3600),
    max: Duration::from_secs(3600),
    renew_before: Duration::from_secs(600),
    // Minting is local and does not fail; a back-off is never reached.
    first_backoff: Duration::from_secs(1),
    max_backoff: Duration::from_secs(60),
};

pub struct ProviderToken {
    key: SigningKey,
    key_id: String,
    team_id: String,
    cache: TokenCache,
}

impl ProviderToken {
    pub fn new(key: SigningKey, key_id: String, team_id: String, metrics: Upstream) -> Self {
        ProviderToken {
            key,
            key_id,
            team_id,
            cache: TokenCache::new(LIFETIME, 1, Some((metrics, "apns_jwt"))),
        }
    }

    /// The token to send now, minting one when none is fresh.
    pub async fn get(&self) -> Result<Arc<str>, TokenError> {
        self.cache
            .get(&(), || async { Ok((self.mint(), LIFETIME.max)) })
            .await
    }

    /// Apple refused `used`: replace it, unless another push already did.
    pub fn refused(&self, used: &str) {
        self.cache.refused(&(), used);
    }

    fn mint(&self) -> Arc<str> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let header = serde_json::json!({"alg": "ES256", "kid": self.key_id}).to_string();
        let claims = serde_json::json!({"iss": self.team_id, "iat": iat}).to_string();
        tracing::debug!(key_id = %self.key_id, "minted a new APNs provider token");
        jwt::es256(&self.key, &header, &claims).into()
    }
}
