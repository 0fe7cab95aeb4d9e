//! Web Push (`type: webpush`): RFC 8030 delivery, RFC 8291 encryption
//! (`aes128gcm`), RFC 8292 VAPID.
//!
//! The pushkey is the browser's `p256dh` key; `data.endpoint` and `data.auth`
//! complete the subscription. Endpoints are user-supplied URLs, so each one is
//! checked (scheme, `allowed_endpoints`, the private-address guard) before use.

pub mod payload;
pub mod vapid;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures::future::BoxFuture;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::Instrument;
use url::Url;

use super::tap::Tap;
use super::{parse_retry_after, Outcome, Pushkin, Settings};
use crate::config::WebPushConfig;
use crate::net::{self, AddressGuard, ClientOptions, NetError};
use crate::notification::{Device, Notification, Prio};
use crate::routing::glob_match;
use crate::telemetry::metrics::Upstream;
use vapid::Vapid;

pub struct WebPush {
    client: reqwest::Client,
    vapid: Vapid,
    guard: AddressGuard,
    /// Set when a proxy resolves names for us: then the guard must resolve first.
    proxied: bool,
    allowed_endpoints: Vec<String>,
    allow_http: bool,
    ttl: String,
    /// Bounds concurrent upstream requests (`max_connections`).
    connections: Semaphore,
    timeout: Duration,
    metrics: Upstream,
}

impl WebPush {
    pub fn new(cfg: &WebPushConfig, s: &Settings<'_>) -> Result<Self, NetError> {
        let guard = AddressGuard {
            allow_private: cfg.allow_private_endpoints,
        };
        let client = net::build_client(&ClientOptions {
            connect_timeout: s.connect_timeout,
            timeout: s.timeout,
            proxy: s.proxy,
            extra_ca: cfg.ca_file.as_deref(),
            max_idle_per_host: cfg.max_connections,
            guard: Some(guard.clone()),
            http2_only: false,
            identity: None,
            connections: Some(s.metrics.connections()),
        })?;
        Ok(WebPush {
            client,
            vapid: Vapid::new(cfg.vapid_key.0.clone(), cfg.vapid_subject.clone()),
            guard,
            proxied: s.proxy.is_some(),
            allowed_endpoints: cfg.allowed_endpoints.clone(),
            allow_http: cfg.allow_http_endpoints,
            ttl: cfg.ttl.as_secs().to_string(),
            connections: Semaphore::new(cfg.max_connections),
            timeout: s.timeout,
            metrics: s.metrics.clone(),
        })
    }

    /// Checks that an endpoint may be used; the error says why not (no path: it may be secret).
    async fn check_endpoint(&self, url: &Url) -> Result<(), String> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => {
                return Err(format!(
                    "endpoint scheme `{other}` is not allowed (https only)"
                ))
            }
        }
        let host = url.host_str().ok_or("endpoint has no host")?;
        if !self.allowed_endpoints.is_empty() {
            let with_port = url.port().map(|p| format!("{host}:{p}"));
            let allowed = self.allowed_endpoints.iter().any(|g| {
                glob_match(g, host) || with_port.as_deref().is_some_and(|hp| glob_match(g, hp))
            });
            if !allowed {
                return Err(format!("endpoint host {host} is not in allowed_endpoints"));
            }
        }
        self.guard.check_host(host).map_err(|r| r.to_string())?;
        if self.proxied && !self.guard.allow_private {
            // Through a proxy our resolver is not used; resolve once here instead.
            let port = url.port_or_known_default().unwrap_or(443);
            let addrs = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?;
            for a in addrs {
                self.guard.check(host, a.ip()).map_err(|r| r.to_string())?;
            }
        }
        Ok(())
    }

    async fn send(&self, n: &Notification, d: &Device, tap: Option<&Tap>) -> Outcome {
        let Some(sub) = Subscription::from_device(d) else {
            return Outcome::rejected("incomplete Web Push subscription: needs a P-256 pushkey, data.endpoint and a 16-byte data.auth");
        };
        if d.data.get("events_only") == Some(&Value::Bool(true)) && n.event_id.is_none() {
            return Outcome::Delivered;
        }
        if let Err(why) = self.check_endpoint(&sub.endpoint).await {
            return Outcome::rejected(why);
        }
        let plaintext = match payload::build(n, d).and_then(payload::encode) {
            Ok(p) => p,
            Err(e @ payload::PayloadError::BadDefaultPayload) => {
                return Outcome::rejected(e.to_string())
            }
            Err(e) => return Outcome::failed(e.to_string()),
        };
        let plain_copy = tap.map(|_| plaintext.clone());
        let body = match web_push_native::encrypt(plaintext, &sub.p256dh, &sub.auth) {
            Ok(b) => b,
            Err(e) => return Outcome::failed(format!("encryption failed: {e}")),
        };
        let origin = sub.endpoint.origin().ascii_serialization();
        let mut req = self
            .client
            .post(sub.endpoint.clone())
            .header("TTL", &self.ttl)
            .header("Content-Encoding", "aes128gcm")
            .header("Content-Type", "application/octet-stream")
            .header("Urgency", urgency(n))
            .header("Authorization", &*self.vapid.authorization(&origin))
            .body(body);
        if d.data.get("only_last_per_room") == Some(&Value::Bool(true)) {
            if let Some(room) = &n.room_id {
                req = req.header("Topic", topic(room));
            }
        }
        let req = match req.build() {
            Ok(r) => r,
            Err(e) => return Outcome::failed(format!("bad request: {}", net::describe(&e))),
        };
        let tapped = tap.map(|t| (t, t.sent(&req, plain_copy.as_deref())));
        let sent = async {
            let _permit = self.connections.acquire().await;
            let call = self.metrics.request();
            let sent = self.client.execute(req).instrument(call.span()).await;
            if let Ok(resp) = &sent {
                call.answered(resp.status().as_u16());
            }
            sent
        };
        let response = match tokio::time::timeout(self.timeout, sent).await {
            Err(_) => {
                if let Some((t, i)) = tapped {
                    t.failed(i, "no answer in time".into());
                }
                return Outcome::transient("push service timed out");
            }
            Ok(Err(e)) => {
                if let Some((t, i)) = tapped {
                    t.failed(i, net::describe(&e));
                }
                if let Some(refused) = net::refused_by_guard(&e) {
                    return Outcome::rejected(refused.to_string());
                }
                return Outcome::transient(net::describe(&e));
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        if let Some((t, i)) = tapped {
            // Only send-test reads the body: the gateway needs nothing from it.
            let headers = response.headers().clone();
            let body = tokio::time::timeout(self.timeout, response.bytes())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            t.answered(i, status.as_u16(), &headers, &body);
        }
        map_status(status.as_u16(), retry_after)
    }
}

/// Maps the push service's status to an outcome (RFC 8030 §5, §8.3).
fn map_status(status: u16, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        404 | 410 => Outcome::rejected(format!(
            "push service answered {status}: subscription expired"
        )),
        413 => Outcome::failed("push service answered 413: payload too large"),
        429 | 500..=599 => Outcome::Transient {
            reason: format!("push service answered {status}"),
            retry_after,
        },
        other => Outcome::failed(format!("push service answered {other}")),
    }
}

fn urgency(n: &Notification) -> &'static str {
    match (n.prio, n.kind.as_deref()) {
        (Prio::Low, _) => "low",
        (_, Some("m.call.invite")) => "high",
        _ => "normal",
    }
}

/// A `Topic` (RFC 8030 §5.4: at most 32 URL-safe base64 characters) derived from the room id.
fn topic(room_id: &str) -> String {
    let digest = Sha256::digest(room_id.as_bytes());
    let mut t = URL_SAFE_NO_PAD.encode(digest);
    t.truncate(32);
    t
}

/// The browser's subscription, decoded from the device.
struct Subscription {
    endpoint: Url,
    p256dh: p256::PublicKey,
    auth: web_push_native::Auth,
}

impl Subscription {
    fn from_device(d: &Device) -> Option<Self> {
        let endpoint = Url::parse(d.data.get("endpoint")?.as_str()?).ok()?;
        let p256dh = p256::PublicKey::from_sec1_bytes(&decode_b64(&d.pushkey)?).ok()?;
        let auth = decode_b64(d.data.get("auth")?.as_str()?)?;
        if auth.len() != 16 {
            return None;
        }
        Some(Subscription {
            endpoint,
            p256dh,
            auth: web_push_native::Auth::clone_from_slice(&auth),
        })
    }
}

/// Browsers give base64url without padding; some apps pass standard base64 or keep the padding.
fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let normalized: String = s
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD.decode(normalized).ok()
}

impl Pushkin for WebPush {
    fn type_name(&self) -> &'static str {
        "webpush"
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

/// Builds a pushkin from the config; used by the gateway at start-up.
pub fn build(cfg: &WebPushConfig, s: &Settings<'_>) -> Result<Arc<dyn Pushkin>, NetError> {
    Ok(Arc::new(WebPush::new(cfg, s)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        assert_eq!(map_status(201, None), Outcome::Delivered);
        assert!(matches!(map_status(410, None), Outcome::Rejected { .. }));
        assert!(matches!(map_status(404, None), Outcome::Rejected { .. }));
        assert!(matches!(map_status(413, None), Outcome::Failed { .. }));
        assert!(matches!(map_status(400, None), Outcome::Failed { .. }));
        assert_eq!(
            map_status(429, Some(Duration::from_secs(3))),
            Outcome::Transient {
                reason: "push service answered 429".into(),
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(matches!(map_status(503, None), Outcome::Transient { .. }));
    }

    #[test]
    fn topic_is_short_and_url_safe() {
        let t = topic("!room:example.org");
        assert_eq!(t.len(), 32);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(t, topic("!room:example.org"));
    }
}
