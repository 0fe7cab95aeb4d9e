//! Google service-account OAuth 2.0 (RFC 7523 JWT bearer grant): an RS256
//! assertion signed with the service account's key, exchanged at `token_uri`
//! for an access token that is cached until shortly before it expires.
//!
//! The token lives in the one [`TokenCache`]: refreshes are single-flight,
//! a failed refresh backs off (1 s, doubling up to 1 min) while every push
//! fails fast with the last error, and `expires_in` is Google's word,
//! believed only between 60 s and 1 h.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::signature::RsaKeyPair;
use serde::Deserialize;

use crate::pushkin::jwt;
use crate::pushkin::token::{Lifetime, TokenCache, TokenError};
use crate::telemetry::metrics::Upstream;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// The token lifetime believed, whatever `expires_in` says (Google's tokens
/// live 1 h), renewed a minute early; the waits between failed refreshes.
const LIFETIME: Lifetime = Lifetime {
    min: Duration::from_secs(60),
    max: Duration::from_secs(3600),
    renew_before: Duration::from_secs(60),
    first_backoff: Duration::from_secs(1),
    max_backoff: Duration::from_secs(60),
};

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

pub struct TokenSource {
    client: reqwest::Client,
    email: String,
    key: RsaKeyPair,
    token_uri: String,
    cache: TokenCache,
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
            cache: TokenCache::new(LIFETIME, 1, Some((metrics, "fcm_oauth"))),
        })
    }

    /// A valid access token, fetched only when the cached one is stale.
    pub async fn token(&self) -> Result<Arc<str>, TokenError> {
        self.cache
            .get(&(), || async {
                self.fetch()
                    .await
                    .map(|(token, expires_in)| (token, Duration::from_secs(expires_in)))
                    .map_err(|e| e.to_string())
            })
            .await
    }

    /// Google refused `used` (401): drop it so the next call fetches a new one.
    pub fn refused(&self, used: &str) {
        self.cache.refused(&(), used);
    }

    fn assertion(&self) -> Result<String, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = serde_json::json!({"iss": self.email, "scope": SCOPE, "aud": self.token_uri, "iat": now, "exp": now + 3600});
        jwt::rs256(
            &self.key,
            r#"{"alg":"RS256","typ":"JWT"}"#,
            &claims.to_string(),
        )
        .map_err(|_| AuthError::Key("signing failed".into()))
    }

    /// One token request: the token and its `expires_in` (seconds, as given).
    async fn fetch(&self) -> Result<(Arc<str>, u64), AuthError> {
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
        let body = crate::pushkin::exchange::bounded_body(resp).await;
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
        Ok((answer.access_token.into(), answer.expires_in))
    }
}
