//! Firebase Cloud Messaging, HTTP v1 API (`type: gcm`, alias `fcm`).
//!
//! `POST {base}/v1/projects/{project_id}/messages:send`, one request per
//! device, authorised by a service-account access token ([`oauth`]). At most
//! `max_connections` requests are in flight per app. 429/5xx are retried with
//! backoff (honouring `Retry-After`) inside the request's budget; a 401
//! refreshes the token and retries once.

pub mod error;
pub mod message;
pub mod oauth;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

use super::outcome::{Cause, Unusable};
use super::tap::Tap;
use super::{parse_retry_after, retry_pause, Outcome, Pushkin, Settings};
use crate::config::FcmConfig;
use crate::net::{self, ClientOptions, NetError};
use crate::notification::{Device, Notification};
use crate::telemetry::metrics::Upstream;
use error::{judge, ErrorBody, Verdict};
use oauth::{AuthError, TokenSource};

const DEFAULT_BASE: &str = "https://fcm.googleapis.com";
const MAX_ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum FcmError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// What the attempt loop does next, when the answer was not final.
enum Step {
    Reauthenticate(super::outcome::Answer),
    Retry(Cause, Option<Duration>),
}

pub struct Fcm {
    client: reqwest::Client,
    auth: TokenSource,
    url: String,
    fcm_options: Map<String, Value>,
    send_badge_counts: bool,
    connections: Semaphore,
    budget: Duration,
    metrics: Upstream,
}

impl Fcm {
    pub fn new(cfg: &FcmConfig, s: &Settings<'_>) -> Result<Self, FcmError> {
        let client = net::build_client(&ClientOptions {
            connect_timeout: s.connect_timeout,
            timeout: s.timeout,
            proxy: s.proxy,
            extra_ca: cfg.ca_file.as_deref(),
            max_idle_per_host: cfg.max_connections,
            guard: None,
            http2_only: false,
            identity: None,
            connections: Some(s.metrics.connections()),
        })?;
        let auth = TokenSource::from_file(
            &cfg.service_account_file,
            cfg.token_uri.as_deref(),
            client.clone(),
            s.metrics.clone(),
        )?;
        let base = cfg.endpoint.as_deref().unwrap_or(DEFAULT_BASE);
        Ok(Fcm {
            client,
            auth,
            url: format!("{base}/v1/projects/{}/messages:send", cfg.project_id),
            fcm_options: cfg.fcm_options.clone(),
            send_badge_counts: cfg.send_badge_counts,
            connections: Semaphore::new(cfg.max_connections),
            budget: s.timeout,
            metrics: s.metrics.clone(),
        })
    }

    async fn send(&self, n: &Notification, d: &Device, tap: Option<&Tap>) -> Outcome {
        let body = match message::build(n, d, &self.fcm_options, self.send_badge_counts) {
            Ok(Some(m)) => bytes::Bytes::from(m.to_string()),
            // A badge update with no count to carry: nothing to send, so delivered.
            Ok(None) => return Outcome::Delivered,
            Err(message::MessageError::BadDefaultPayload) => {
                return Outcome::unusable(Unusable::BadDefaultPayload)
            }
            Err(e) => return Outcome::failed(Cause::Local(e.to_string())),
        };
        let deadline = Instant::now() + self.budget;
        match tokio::time::timeout_at(deadline, self.attempts(body, deadline, tap)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::temporary(Cause::Timeout("FCM")),
        }
    }

    async fn attempts(&self, body: bytes::Bytes, deadline: Instant, tap: Option<&Tap>) -> Outcome {
        let mut reauthenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = match self.auth.token().await {
                Ok(t) => t,
                // Credentials trouble is ours, not the device's: temporary, so nothing is lost.
                Err(e) => {
                    return Outcome::temporary(Cause::Credentials(format!(
                        "FCM authentication failed: {e}"
                    )))
                }
            };
            let step = {
                let waiting = self.metrics.waiting_for_slot();
                let _permit = self.connections.acquire().await;
                drop(waiting);
                let request = self
                    .client
                    .post(&self.url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .build();
                let request = match request {
                    Ok(r) => r,
                    Err(e) => {
                        return Outcome::failed(Cause::Local(format!(
                            "bad request: {}",
                            net::describe(&e)
                        )))
                    }
                };
                let tapped = tap.map(|t| (t, t.sent(&request, None)));
                let call = self.metrics.request();
                match self.client.execute(request).instrument(call.span()).await {
                    Err(e) => {
                        let cause = Cause::transport(&e);
                        if let Some((t, i)) = tapped {
                            t.failed(i, cause.to_string());
                        }
                        Step::Retry(cause, None)
                    }
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        call.answered(status);
                        let headers = resp.headers().clone();
                        let retry_after = headers
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(parse_retry_after);
                        let bytes = resp.bytes().await.unwrap_or_default();
                        if let Some((t, i)) = tapped {
                            t.answered(i, status, &headers, &bytes);
                        }
                        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
                        match judge(status, &err, retry_after) {
                            Verdict::Final(outcome) => return outcome,
                            Verdict::Reauthenticate(answer) => Step::Reauthenticate(answer),
                            Verdict::Retry { answer, after } => {
                                Step::Retry(Cause::Answer(answer), after)
                            }
                        }
                    }
                }
            };
            match step {
                Step::Reauthenticate(answer) => {
                    if reauthenticated {
                        return Outcome::temporary(Cause::Answer(answer));
                    }
                    self.auth.refused(&token);
                    reauthenticated = true;
                }
                // Never sleeps past the push's own deadline, whatever the service asked for.
                Step::Retry(cause, after) => {
                    match retry_pause(attempt, MAX_ATTEMPTS, FIRST_BACKOFF, after, deadline) {
                        Some(pause) => tokio::time::sleep(pause).await,
                        None => {
                            return Outcome::Temporary {
                                cause,
                                retry_after: after,
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Pushkin for Fcm {
    fn type_name(&self) -> &'static str {
        "gcm"
    }

    fn unusable(&self, d: &Device) -> Option<Unusable> {
        Unusable::default_payload_of(d)
    }

    fn dispatch_traced<'a>(
        &'a self,
        n: &'a Notification,
        d: &'a Device,
        tap: Option<&'a Tap>,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(self.send(n, d, tap))
    }
}

pub fn build(cfg: &FcmConfig, s: &Settings<'_>) -> Result<Arc<dyn Pushkin>, FcmError> {
    Ok(Arc::new(Fcm::new(cfg, s)?))
}
