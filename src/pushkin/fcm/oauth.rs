//! Google service-account OAuth 2.0 (RFC 7523 JWT bearer grant): an RS256
//! assertion signed with the service account's key, exchanged at `token_uri`
//! for an access token that is cached until shortly before it expires.
//!
//! Refreshes are single-flight: however many pushes find the token stale,
//! one request goes to Google and the others wait for its result. A failed
//! refresh is not repeated at once: until its back-off ends (1 s, doubling up
//! to 1 min) every push fails fast with the last error, so a broken token
//! endpoint sees one request per back-off step, not one per push.
//!
//! `expires_in` is Google's word, believed only between 60 s and 1 h.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde::Deserialize;

use crate::telemetry::metrics::Upstream;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// The token lifetime believed, whatever `expires_in` says (Google's tokens live 1 h).
const MIN_LIFETIME: Duration = Duration::from_secs(60);
const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// Waits between failed refreshes: the first, and the cap of its doubling.
const FIRST_REFRESH_BACKOFF: Duration = Duration::from_secs(1);
const MAX_REFRESH_BACKOFF: Duration = Duration::from_secs(60);

/// The fields of a service-account key file that we use.
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    token_uri: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the service-account file: {0}")]
    Read(String),
    #[error("the service-account private key is not an RSA key in PKCS#8 PEM: {0}")]
    Key(String),
    #[error("token request failed: {0}")]
    Request(String),
    #[error("the token endpoint answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error(
        "{failures} token refresh(es) failed in a row, next attempt in {wait_ms} ms; last: {last}"
    )]
    BackingOff {
        failures: u32,
        wait_ms: u128,
        last: String,
    },
}

/// The lifetime to cache a token for, from the endpoint's `expires_in` (seconds).
fn lifetime(expires_in: u64) -> Duration {
    Duration::from_secs(expires_in).clamp(MIN_LIFETIME, MAX_LIFETIME)
}

/// The wait after the `failures`-th refresh failure in a row (1 s, 2 s, 4 s, … 60 s).
fn refresh_backoff(failures: u32) -> Duration {
    FIRST_REFRESH_BACKOFF
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(MAX_REFRESH_BACKOFF)
}

/// The refreshes that failed in a row, and when the next one may be tried.
struct Failing {
    failures: u32,
    retry_at: Instant,
    last: String,
}

struct Cached {
    token: Arc<str>,
    fresh_until: Instant,
}

pub struct TokenSource {
    client: reqwest::Client,
    email: String,
    key: RsaKeyPair,
    token_uri: String,
    current: RwLock<Option<Cached>>,
    /// Held while refreshing (single flight); remembers failed refreshes.
    refreshing: tokio::sync::Mutex<Option<Failing>>,
    metrics: Upstream,
}

impl TokenSource {
    /// Reads the key file; `token_uri` overrides the file's (tests, mirrors).
    pub fn from_file(
        path: &std::path::Path,
        token_uri: Option<&str>,
        client: reqwest::Client,
        metrics: Upstream,
    ) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::Read(format!("{}: {e}", path.display())))?;
        let file: KeyFile = serde_json::from_str(&text)
            .map_err(|e| AuthError::Read(format!("{}: {e}", path.display())))?;
        let key = crate::keys::parse_rsa_key(&file.private_key).map_err(AuthError::Key)?;
        Ok(TokenSource {
            client,
            email: file.client_email,
            key,
            token_uri: token_uri.map_or(file.token_uri, str::to_owned),
            current: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(None),
            metrics,
        })
    }

    fn cached(&self) -> Option<Arc<str>> {
        let current = self.current.read().ok()?;
        current
            .as_ref()
            .filter(|c| Instant::now() < c.fresh_until)
            .map(|c| c.token.clone())
    }

    /// A valid access token, fetched only when the cached one is stale.
    pub async fn token(&self) -> Result<Arc<str>, AuthError> {
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let mut failing = self.refreshing.lock().await;
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        if let Some(f) = failing.as_ref() {
            let now = Instant::now();
            if now < f.retry_at {
                return Err(AuthError::BackingOff {
                    failures: f.failures,
                    wait_ms: (f.retry_at - now).as_millis(),
                    last: f.last.clone(),
                });
            }
        }
        let fetched = self.fetch().await;
        self.metrics.token_refreshed("fcm_oauth", fetched.is_ok());
        let (token, lifetime) = match fetched {
            Ok(t) => t,
            Err(e) => {
                let failures = failing.as_ref().map_or(0, |f| f.failures).saturating_add(1);
                let wait = refresh_backoff(failures);
                tracing::warn!(error = %e, failures, wait_ms = wait.as_millis() as u64, "FCM token refresh failed; pushes fail fast until the next attempt");
                *failing = Some(Failing {
                    failures,
                    retry_at: Instant::now() + wait,
                    last: e.to_string(),
                });
                return Err(e);
            }
        };
        *failing = None;
        // Renew a minute early (or halfway through a short-lived token); the
        // lifetime is clamped, so this cannot overflow.
        let margin = Duration::from_secs(60).min(lifetime / 2);
        if let Ok(mut current) = self.current.write() {
            *current = Some(Cached {
                token: token.clone(),
                fresh_until: Instant::now() + (lifetime - margin),
            });
        }
        Ok(token)
    }

    /// Google refused `used` (401): drop it so the next call fetches a new one.
    pub fn refused(&self, used: &str) {
        if let Ok(mut current) = self.current.write() {
            if current.as_ref().is_some_and(|c| &*c.token == used) {
                *current = None;
            }
        }
    }

    fn assertion(&self) -> Result<String, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::json!({"iss": self.email, "scope": SCOPE, "aud": self.token_uri, "iat": now, "exp": now + 3600});
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| AuthError::Key("signing failed".into()))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    async fn fetch(&self) -> Result<(Arc<str>, Duration), AuthError> {
        #[derive(Deserialize)]
        struct Answer {
            access_token: String,
            expires_in: u64,
        }
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &self.assertion()?)
            .finish();
        let request = self
            .client
            .post(&self.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .build()
            .map_err(|e| AuthError::Request(crate::net::describe(&e)))?;
        // `send-test` shows this exchange, without the assertion or the token.
        let tap = crate::pushkin::tap::ambient();
        let tapped = tap.as_deref().map(|t| {
            (
                t,
                t.sent_form("OAuth access token", &request, &["assertion"]),
            )
        });
        let failed = |e: reqwest::Error| {
            let why = crate::net::describe(&e);
            if let Some((t, i)) = tapped {
                t.failed(i, why.clone());
            }
            AuthError::Request(why)
        };
        let resp = self.client.execute(request).await.map_err(failed)?;
        let status = resp.status().as_u16();
        let headers = tapped.map(|_| resp.headers().clone());
        let body = resp.bytes().await.map_err(failed)?;
        if let (Some((t, i)), Some(headers)) = (tapped, headers) {
            t.answered_secret(i, status, &headers, &body, &["access_token", "id_token"]);
        }
        if status != 200 {
            let body = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(AuthError::Refused { status, body });
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| AuthError::Request(format!("bad token answer: {e}")))?;
        tracing::info!(service_account = %self.email, expires_in = answer.expires_in, "fetched an FCM access token");
        Ok((answer.access_token.into(), lifetime(answer.expires_in)))
    }
}

#[cfg(test)]
mod tests {
    use super::{lifetime, refresh_backoff};
    use std::time::{Duration, Instant};

    #[test]
    fn expires_in_is_believed_between_a_minute_and_an_hour() {
        assert_eq!(lifetime(0), Duration::from_secs(60));
        assert_eq!(lifetime(59), Duration::from_secs(60));
        assert_eq!(lifetime(60), Duration::from_secs(60));
        assert_eq!(lifetime(1800), Duration::from_secs(1800));
        assert_eq!(lifetime(3600), Duration::from_secs(3600));
        assert_eq!(lifetime(3601), Duration::from_secs(3600));
        assert_eq!(lifetime(u64::MAX), Duration::from_secs(3600));
        assert!(Instant::now().checked_add(lifetime(u64::MAX)).is_some());
    }

    #[test]
    fn failed_refreshes_back_off_exponentially_up_to_a_minute() {
        let waits: Vec<u64> = (1..=8).map(|n| refresh_backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(refresh_backoff(0), Duration::from_secs(1));
        assert_eq!(refresh_backoff(u32::MAX), Duration::from_secs(60));
    }
}
