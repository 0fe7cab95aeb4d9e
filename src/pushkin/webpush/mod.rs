//! Web Push (`type: webpush`): RFC 8030 delivery, RFC 8291 encryption
//! (`aes128gcm`), RFC 8292 VAPID.
//!
//! The pushkey is the browser's `p256dh` key; `data.endpoint` and `data.auth`
//! complete the subscription. Endpoints are user-supplied URLs, so each one is
//! checked (scheme, `allowed_endpoints`, the private-address guard) before use.

pub mod payload;
pub mod vapid;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures::future::BoxFuture;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::Instrument;
use url::{Host, Url};

use super::outcome::{Answer, Cause, Unusable};
use super::tap::Tap;
use super::{parse_retry_after, Outcome, Pushkin, Settings};
use crate::config::WebPushConfig;
use crate::glob::glob_match;
use crate::net::{self, AddressGuard, ClientOptions, NetError};
use crate::notification::{Device, Notification, Prio};
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
    /// Bounds concurrent upstream requests per endpoint origin (`max_connections`).
    slots: OriginSlots,
    timeout: Duration,
    metrics: Upstream,
}

impl WebPush {
    pub fn new(cfg: &WebPushConfig, s: &Settings<'_>) -> Result<Self, NetError> {
        let guard = AddressGuard {
            allow_private: cfg.allow_private_endpoints,
            exempt: None,
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
            slots: OriginSlots::new(cfg.max_connections),
            timeout: s.timeout,
            metrics: s.metrics.clone(),
        })
    }

    /// Checks that an endpoint may be used. A refusal is this push's failure
    /// (the pusher stays); a name that cannot be resolved is temporary.
    async fn check_endpoint(&self, url: &Url) -> Result<(), Outcome> {
        let not_allowed = |why: String| Err(Outcome::failed(Cause::EndpointNotAllowed(why)));
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => {
                return not_allowed(format!(
                    "endpoint scheme `{other}` is not allowed (https only)"
                ))
            }
        }
        let (Some(host), Some(host_str)) = (url.host(), url.host_str()) else {
            return not_allowed("endpoint has no host".into());
        };
        if !self.allowed_endpoints.is_empty() {
            let with_port = url.port().map(|p| format!("{host_str}:{p}"));
            let allowed = self.allowed_endpoints.iter().any(|g| {
                glob_match(g, host_str) || with_port.as_deref().is_some_and(|hp| glob_match(g, hp))
            });
            if !allowed {
                return not_allowed(format!(
                    "endpoint host {host_str} is not in allowed_endpoints"
                ));
            }
        }
        let refused = |r: net::Refused| Outcome::failed(Cause::EndpointRefused(r.to_string()));
        match host {
            // Literal addresses skip DNS in the client: judged here.
            Host::Ipv4(ip) => self.guard.check(host_str, ip.into()).map_err(refused)?,
            Host::Ipv6(ip) => self.guard.check(host_str, ip.into()).map_err(refused)?,
            Host::Domain(name) if self.proxied && !self.guard.allow_private => {
                // Through a proxy the client does not resolve the endpoint: resolve
                // it here with the system resolver and judge what it resolves to.
                let port = url.port_or_known_default().unwrap_or(443);
                let addrs = tokio::net::lookup_host((name, port)).await.map_err(|e| {
                    Outcome::temporary(Cause::Dns(format!("cannot resolve {name}: {e}")))
                })?;
                for a in addrs {
                    self.guard.check(name, a.ip()).map_err(refused)?;
                }
            }
            // Resolved and judged by the client's resolver at connect time.
            Host::Domain(_) => {}
        }
        Ok(())
    }

    async fn send(&self, n: &Notification, d: &Device, tap: Option<&Tap>) -> Outcome {
        let Some(sub) = Subscription::from_device(d) else {
            return Outcome::unusable(Unusable::IncompleteSubscription);
        };
        if d.data.get("events_only") == Some(&Value::Bool(true)) && n.event_id.is_none() {
            return Outcome::Delivered;
        }
        if let Err(outcome) = self.check_endpoint(&sub.endpoint).await {
            return outcome;
        }
        let plaintext = match payload::encode(payload::build(n, d)) {
            Ok(p) => p,
            Err(e) => return Outcome::failed(Cause::PayloadTooLarge(e.to_string())),
        };
        let plain_copy = tap.map(|_| plaintext.clone());
        let body = match web_push_native::encrypt(plaintext, &sub.p256dh, &sub.auth) {
            Ok(b) => b,
            Err(e) => return Outcome::failed(Cause::Local(format!("encryption failed: {e}"))),
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
            Err(e) => {
                return Outcome::failed(Cause::Local(format!("bad request: {}", net::describe(&e))))
            }
        };
        let tapped = tap.map(|t| (t, t.sent(&req, plain_copy.as_deref())));
        // An endpoint outside the well-known push services (or the operator's
        // allowed_endpoints) may be anyone's server: it gets a short time.
        let timeout = if self.allowed_endpoints.is_empty() && !is_known_push_service(&sub.endpoint)
        {
            self.timeout.min(OTHER_HOST_TIMEOUT)
        } else {
            self.timeout
        };
        let slots = self.slots.of(&origin);
        let sent = async {
            let _permit = slots.acquire().await;
            let call = self.metrics.request();
            let sent = self.client.execute(req).instrument(call.span()).await;
            if let Ok(resp) = &sent {
                call.answered(resp.status().as_u16());
            }
            sent
        };
        let response = match tokio::time::timeout(timeout, sent).await {
            Err(_) => {
                if let Some((t, i)) = tapped {
                    t.failed(i, "no answer in time".into());
                }
                return Outcome::temporary(Cause::Timeout("push service"));
            }
            Ok(Err(e)) => {
                if let Some((t, i)) = tapped {
                    t.failed(i, net::describe(&e));
                }
                if let Some(refused) = net::refused_by_guard(&e) {
                    if Some(refused.host.as_str()) == sub.endpoint.host_str() {
                        return Outcome::failed(Cause::EndpointRefused(refused.to_string()));
                    }
                    // Something other than the endpoint was refused (a bug or a
                    // misconfiguration): never the pusher's fault.
                    tracing::error!(error = %refused, "the address guard refused a host that is not the endpoint");
                }
                return Outcome::temporary(Cause::transport(&e));
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

/// Maps the push service's status to an outcome (RFC 8030 §5, §8.3);
/// redirects are not followed, so a 3xx is this push's failure.
fn map_status(status: u16, retry_after: Option<Duration>) -> Outcome {
    let answer = Answer::WebPush { status };
    match status {
        200..=299 => Outcome::Delivered,
        429 | 500..=599 => Outcome::Temporary {
            cause: Cause::Answer(answer),
            retry_after,
        },
        _ => Outcome::from_final_answer(answer, None),
    }
}

/// Time given to a push to an endpoint that is not a well-known push service.
const OTHER_HOST_TIMEOUT: Duration = Duration::from_secs(5);

/// The browsers' push services (host globs).
const KNOWN_PUSH_SERVICES: &[&str] = &[
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "*.push.services.mozilla.com",
    "*.notify.windows.com",
    "web.push.apple.com",
    "*.push.apple.com",
];

fn is_known_push_service(endpoint: &Url) -> bool {
    endpoint.scheme() == "https"
        && endpoint
            .host_str()
            .is_some_and(|h| KNOWN_PUSH_SERVICES.iter().any(|g| glob_match(g, h)))
}

/// Concurrency limits per endpoint origin: a slow or hanging push service
/// (or an attacker's endpoint) holds only its own slots, never another
/// origin's.
struct OriginSlots {
    per_origin: usize,
    origins: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Origins tracked before idle ones are forgotten.
const TRACKED_ORIGINS: usize = 1024;

impl OriginSlots {
    fn new(per_origin: usize) -> Self {
        OriginSlots {
            per_origin,
            origins: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn of(&self, origin: &str) -> Arc<Semaphore> {
        let mut origins = match self.origins.lock() {
            Ok(o) => o,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(s) = origins.get(origin) {
            return s.clone();
        }
        if origins.len() >= TRACKED_ORIGINS {
            // Forget the origins nobody is sending to (all permits free).
            origins.retain(|_, s| s.available_permits() < self.per_origin);
        }
        let slots = Arc::new(Semaphore::new(self.per_origin));
        origins.insert(origin.to_owned(), slots.clone());
        slots
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

    /// A Web Push service judges the subscription, named by its endpoint: a
    /// dead one is remembered by endpoint, so that a request pairing someone's
    /// p256dh with an endpoint that answers 410 cannot poison that pushkey.
    fn unusable(&self, d: &Device) -> Option<Unusable> {
        Subscription::from_device(d)
            .is_none()
            .then_some(Unusable::IncompleteSubscription)
    }

    fn memory_key(&self, d: &Device) -> Option<String> {
        let endpoint = d.data.get("endpoint")?.as_str()?;
        let digest = Sha256::digest(endpoint.as_bytes());
        Some(format!("endpoint:{}", URL_SAFE_NO_PAD.encode(digest)))
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
        for (status, kind) in [
            (410, "rejected"),
            (404, "rejected"),
            (413, "failed"),
            (400, "failed"),
            (401, "failed"),
            (403, "failed"),
            (301, "failed"),
            (503, "temporary"),
            (500, "temporary"),
        ] {
            assert_eq!(map_status(status, None).kind(), kind, "{status}");
        }
        assert_eq!(
            map_status(429, Some(Duration::from_secs(3))),
            Outcome::Temporary {
                cause: Cause::Answer(Answer::WebPush { status: 429 }),
                retry_after: Some(Duration::from_secs(3))
            }
        );
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
