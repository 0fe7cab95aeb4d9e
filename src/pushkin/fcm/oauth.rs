//! Google service-account OAuth 2.0 (RFC 7523 JWT bearer grant): an RS256
//! assertion signed with the service account's key, exchanged at `token_uri`
//! for an access token that is cached until shortly before it expires.
//!
//! Refreshes are single-flight: however many pushes find the token stale,
//! one request goes to Google and the others wait for its result.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde::Deserialize;

use crate::telemetry::metrics::Upstream;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

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
    refreshing: tokio::sync::Mutex<()>,
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
            refreshing: tokio::sync::Mutex::new(()),
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
        let _single_flight = self.refreshing.lock().await;
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let fetched = self.fetch().await;
        self.metrics.token_refreshed("fcm_oauth", fetched.is_ok());
        let (token, lifetime) = fetched?;
        // Renew a minute early (or halfway through a short-lived token).
        let margin = Duration::from_secs(60).min(lifetime / 2);
        if let Ok(mut current) = self.current.write() {
            *current = Some(Cached {
                token: token.clone(),
                fresh_until: Instant::now() + lifetime - margin,
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
        let resp = self
            .client
            .post(&self.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| AuthError::Request(crate::net::describe(&e)))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| AuthError::Request(crate::net::describe(&e)))?;
        if status != 200 {
            let body = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(AuthError::Refused { status, body });
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| AuthError::Request(format!("bad token answer: {e}")))?;
        tracing::info!(service_account = %self.email, expires_in = answer.expires_in, "fetched an FCM access token");
        Ok((
            answer.access_token.into(),
            Duration::from_secs(answer.expires_in.max(1)),
        ))
    }
}
