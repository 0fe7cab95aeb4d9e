//! Firebase Cloud Messaging, HTTP v1 API (`type: gcm`, alias `fcm`).
//!
//! `POST {base}/v1/projects/{project_id}/messages:send`, one request per
//! device, authorised by a service-account access token ([`oauth`]). At most
//! `max_connections` requests are in flight per app. 429/5xx are retried with
//! backoff (honouring `Retry-After`) inside the request's budget; a 401
//! refreshes the token and retries once.
//!
//! Pushes go out through [`net::h1::Client`] (hyper-util's pool, HTTP/2 when
//! FCM chooses it), without reqwest's per-request layers; the OAuth token
//! requests, a few an hour, keep reqwest.

pub mod error;
mod judge;
pub mod message;
pub mod oauth;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use super::auth_header::AuthHeader;
use super::exchange::{self, Attempt, Exchange, Policy, Reply, Step};
use super::outcome::{Cause, Unusable};
use super::tap::Tap;
use super::{Built, Outcome, Prepared, Pushkin, Settings};
use crate::config::FcmConfig;
use crate::net::{self, ClientOptions, NetError};
use crate::notification::{Device, Notification};
use crate::telemetry::metrics::Upstream;
use error::ErrorBody;
use judge::judge;
use oauth::{AuthError, TokenSource};

const DEFAULT_BASE: &str = "https://fcm.googleapis.com";
const POLICY: Policy = Policy {
    service: "FCM",
    max_attempts: 3,
    first_backoff: Duration::from_millis(200),
    read_body: true,
};

#[derive(Debug, thiserror::Error)]
pub enum FcmError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("`endpoint` and `project_id` do not make a URL: {0}")]
    Url(String),
}

pub struct Fcm {
    /// The pushes' client.
    h1_client: net::h1::Client,
    auth: TokenSource,
    /// The send URL, parsed once; each push clones it.
    uri: http::Uri,
    authorization: AuthHeader,
    fcm_options: Map<String, Value>,
    send_badge_counts: bool,
    connections: Semaphore,
    budget: Duration,
    metrics: Upstream,
}

impl Fcm {
    pub fn new(cfg: &FcmConfig, s: &Settings<'_>) -> Result<Self, FcmError> {
        // reqwest for the token requests only: a few an hour.
        let oauth_client = net::build_client(&ClientOptions {
            connect_timeout: s.connect_timeout,
            proxy: s.proxy,
            extra_ca: cfg.ca_file.as_deref(),
            max_idle_per_host: cfg.max_connections,
            guard: None,
            connections: Some(s.metrics.connections()),
        })?;
        let auth = TokenSource::from_file(
            &cfg.service_account_file,
            cfg.token_uri.as_deref(),
            oauth_client,
            s.metrics.clone(),
        )?;
        let base = cfg.endpoint.as_deref().unwrap_or(DEFAULT_BASE);
        let url = format!("{base}/v1/projects/{}/messages:send", cfg.project_id);
        // Through `url` first: the URL sent is the one reqwest sent
        // (normalised and percent-encoded as `url` does).
        let url = url::Url::parse(&url).map_err(|e| FcmError::Url(format!("{url}: {e}")))?;
        let uri = url
            .as_str()
            .parse::<http::Uri>()
            .map_err(|e| FcmError::Url(format!("{url}: {e}")))?;
        let h1_client = net::h1::Client::new(net::h1::Options {
            origin: &url,
            connect_timeout: s.connect_timeout,
            proxy: s.proxy,
            extra_ca: cfg.ca_file.as_deref(),
            max_idle_per_host: cfg.max_connections,
            connections: Some(s.metrics.connections()),
        })?;
        Ok(Fcm {
            h1_client,
            auth,
            uri,
            authorization: AuthHeader::new("Bearer"),
            fcm_options: cfg.fcm_options.clone(),
            send_badge_counts: cfg.send_badge_counts,
            connections: Semaphore::new(cfg.max_connections),
            budget: s.timeout,
            metrics: s.metrics.clone(),
        })
    }

    /// Step 1: the v1 message for the device.
    fn build_push(&self, n: &Notification, d: &Device) -> Result<Push, Outcome> {
        match message::build(n, d, &self.fcm_options, self.send_badge_counts) {
            Ok(Some(m)) => Ok(Push {
                body: bytes::Bytes::from(m),
            }),
            // A badge update with no count to carry: nothing to send, so delivered.
            Ok(None) => Err(Outcome::Delivered),
            Err(message::MessageError::BadDefaultPayload) => {
                Err(Outcome::unusable(Unusable::BadDefaultPayload))
            }
            Err(e) => Err(Outcome::failed(Cause::Local(e.to_string()))),
        }
    }
}

/// One FCM push, prepared: the message's JSON.
pub(super) struct Push {
    body: bytes::Bytes,
}

/// The attempts of one push: FCM's part of the [exchange](super::exchange).
struct Attempts<'a> {
    fcm: &'a Fcm,
    push: &'a Push,
}

impl exchange::Attempts<net::h1::Client> for Attempts<'_> {
    async fn request(&self) -> Result<Attempt<http::Request<bytes::Bytes>>, Outcome> {
        let token = match self.fcm.auth.token().await {
            Ok(t) => t,
            // Credentials trouble is ours, not the device's: temporary, so nothing is lost.
            Err(e) => {
                return Err(Outcome::temporary(Cause::Credentials(format!(
                    "FCM authentication failed: {e}"
                ))))
            }
        };
        // Built directly: nothing of it is parsed or formatted per push.
        let authorization = self
            .fcm
            .authorization
            .value(&token)
            .map_err(|e| Outcome::failed(Cause::Local(format!("bad request: {e}"))))?;
        let mut request = http::Request::new(self.push.body.clone());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.fcm.uri.clone();
        let mut h = net::h1::headers(2);
        h.insert(http::header::AUTHORIZATION, authorization);
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        *request.headers_mut() = h;
        Ok(Attempt {
            request,
            credential: Some(token),
        })
    }

    fn judge(&self, r: &Reply<'_>) -> Step {
        judge(r.status, &r.error_body::<ErrorBody>(), r.retry_after)
    }

    fn renew(&self, used: &str) {
        self.fcm.auth.refused(used);
    }
}

impl Pushkin for Fcm {
    fn type_name(&self) -> &'static str {
        "gcm"
    }

    fn unusable(&self, d: &Device) -> Option<Unusable> {
        Unusable::default_payload_of(d)
    }

    fn prepare<'a>(
        &'a self,
        n: &'a Notification,
        d: &'a Device,
        _traced: bool,
    ) -> BoxFuture<'a, Result<Prepared, Outcome>> {
        let prepared = self.build_push(n, d).map(|p| Prepared(Built::Fcm(p)));
        Box::pin(std::future::ready(prepared))
    }

    fn send<'a>(&'a self, push: Prepared, tap: Option<&'a Tap>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let Prepared(Built::Fcm(push)) = push else {
                return Prepared::mismatch();
            };
            let x = Exchange {
                client: &self.h1_client,
                metrics: &self.metrics,
                // At most `max_connections` requests of the app in flight.
                slot: Some(&self.connections),
                tap,
            };
            let attempts = Attempts {
                fcm: self,
                push: &push,
            };
            x.run(&POLICY, self.budget, &attempts).await
        })
    }
}

pub fn build(cfg: &FcmConfig, s: &Settings<'_>) -> Result<Arc<dyn Pushkin>, FcmError> {
    Ok(Arc::new(Fcm::new(cfg, s)?))
}
