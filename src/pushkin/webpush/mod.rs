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
use url::Url;

use super::endpoint::{self, Endpoints, UaKeys};
use super::outcome::{Answer, Cause, Unusable};
use super::tap::Tap;
use super::{Outcome, Prepared, Pushkin, Settings};
use crate::config::WebPushConfig;
use crate::ids::PushKey;
use crate::net::{self, NetError};
use crate::notification::{Device, Notification, Prio};
use vapid::Vapid;

pub struct WebPush {
    vapid: Vapid,
    /// The client, endpoint checks and per-origin slots, shared with UnifiedPush.
    endpoints: Endpoints,
    ttl: String,
}

impl WebPush {
    pub fn new(cfg: &WebPushConfig, s: &Settings<'_>) -> Result<Self, NetError> {
        Ok(WebPush {
            vapid: Vapid::new(cfg.vapid_key.0.clone(), cfg.vapid_subject.clone()),
            endpoints: Endpoints::new(&cfg.endpoints, KNOWN_PUSH_SERVICES, s)?,
            ttl: cfg.endpoints.ttl.as_secs().to_string(),
        })
    }

    /// Step 1: the subscription, the endpoint checks, the encrypted payload
    /// and the VAPID-signed request.
    async fn build_push(
        &self,
        n: &Notification,
        d: &Device,
        traced: bool,
    ) -> Result<endpoint::Push, Outcome> {
        let Some(sub) = Subscription::from_device(d) else {
            return Err(Outcome::unusable(Unusable::IncompleteSubscription));
        };
        if d.data.get("events_only") == Some(&Value::Bool(true)) && n.event_id.is_none() {
            return Err(Outcome::Delivered);
        }
        self.endpoints.check(&sub.endpoint).await?;
        let plaintext = match payload::encode(payload::build(n, d)) {
            Ok(p) => p,
            Err(e) => return Err(Outcome::failed(Cause::PayloadTooLarge(e.to_string()))),
        };
        let plain_copy = traced.then(|| plaintext.clone());
        let body = sub.keys.encrypt(plaintext)?;
        let origin = sub.endpoint.origin().ascii_serialization();
        let authorization = self
            .vapid
            .authorization(&origin)
            .await
            .map_err(|e| Outcome::temporary(Cause::Credentials(format!("VAPID token: {e}"))))?;
        let mut req = self
            .endpoints
            .client()
            .post(sub.endpoint.clone())
            .header("TTL", &self.ttl)
            .header("Content-Encoding", "aes128gcm")
            .header("Content-Type", "application/octet-stream")
            .header("Urgency", urgency(n))
            .header("Authorization", &*authorization)
            .body(body);
        if d.data.get("only_last_per_room") == Some(&Value::Bool(true)) {
            if let Some(room) = &n.room_id {
                req = req.header("Topic", topic(room));
            }
        }
        let request = req.build().map_err(|e| {
            Outcome::failed(Cause::Local(format!("bad request: {}", net::describe(&e))))
        })?;
        Ok(endpoint::Push {
            request,
            endpoint: sub.endpoint,
            plaintext: plain_copy,
            judge: map_status,
        })
    }
}

/// Maps the push service's status to an outcome ([`endpoint::judge`]).
fn map_status(status: u16, retry_after: Option<Duration>) -> Outcome {
    endpoint::judge(Answer::WebPush { status }, retry_after)
}

/// The browsers' push services (host globs).
const KNOWN_PUSH_SERVICES: &[&str] = &[
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "*.push.services.mozilla.com",
    "*.notify.windows.com",
    "web.push.apple.com",
    "*.push.apple.com",
];

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
    keys: UaKeys,
}

impl Subscription {
    fn from_device(d: &Device) -> Option<Self> {
        let endpoint = Url::parse(d.data.get("endpoint")?.as_str()?).ok()?;
        let keys = UaKeys::decode(d.pushkey.expose(), d.data.get("auth")?.as_str()?)?;
        Some(Subscription { endpoint, keys })
    }
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

    fn memory_key(&self, d: &Device) -> Option<PushKey> {
        Some(endpoint::memory_key(d.data.get("endpoint")?.as_str()?).into())
    }

    fn prepare<'a>(
        &'a self,
        n: &'a Notification,
        d: &'a Device,
        traced: bool,
    ) -> BoxFuture<'a, Result<Prepared, Outcome>> {
        Box::pin(async move { self.build_push(n, d, traced).await.map(Prepared::from) })
    }

    fn send<'a>(&'a self, push: Prepared, tap: Option<&'a Tap>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.endpoints.send_prepared(push, tap))
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
            assert_eq!(map_status(status, None).label(), kind, "{status}");
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
