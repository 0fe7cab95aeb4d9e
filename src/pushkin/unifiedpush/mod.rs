//! UnifiedPush (`type: unifiedpush`): pushgate as the *Matrix gateway* of
//! UnifiedPush, for phones without Google services.
//!
//! The pushkey is an endpoint URL on the user's push server (ntfy, NextPush,
//! Sunup, …). Each push is one `POST` of the `/notify` body holding only that
//! device, `Content-Type: application/json` with a `TTL`, which the Matrix
//! client on the phone parses. Endpoints are chosen by clients, so they pass
//! the same checks as Web Push endpoints ([`super::endpoint`]); a dead one is
//! remembered by its URL.
//!
//! A pusher whose `data` also holds `p256dh` and `auth` (a Web Push–style
//! registration, which newer distributors accept) gets the same body
//! encrypted with RFC 8291 `aes128gcm`, as the Web Push pushkin encrypts.

pub mod payload;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use url::Url;

use super::endpoint::{self, Endpoints, UaKeys, ENCRYPTION_OVERHEAD};
use super::outcome::{Answer, Cause, Unusable};
use super::tap::Tap;
use super::{Outcome, Prepared, Pushkin, Settings};
use crate::config::UnifiedPushConfig;
use crate::ids::PushKey;
use crate::net::{self, NetError};
use crate::notification::{Device, Notification};

/// The longest `Retry-After` honoured: a server asking for more is retried
/// after this (the outbox still gives up at `dispatch.max_age`).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why a pushkey can never be a UnifiedPush endpoint.
const NOT_AN_ENDPOINT: &str = "the pushkey is not a UnifiedPush endpoint (an http(s) URL)";
/// Why encryption keys given in the pusher's data can never be used.
const BAD_KEYS: &str =
    "data.p256dh and data.auth must be a P-256 public key and a 16-byte secret (base64url)";

pub struct UnifiedPush {
    endpoints: Endpoints,
    ttl: String,
}

impl UnifiedPush {
    pub fn new(cfg: &UnifiedPushConfig, s: &Settings<'_>) -> Result<Self, NetError> {
        Ok(UnifiedPush {
            // Push servers are the users' own: none gets more than the short
            // time unless the operator lists it in allowed_endpoints.
            endpoints: Endpoints::new(&cfg.endpoints, &[], s)?,
            ttl: cfg.endpoints.ttl.as_secs().to_string(),
        })
    }

    /// Step 1: the registration, the endpoint checks and the request
    /// (encrypted when the pusher gave keys).
    async fn build_push(
        &self,
        n: &Notification,
        d: &Device,
        traced: bool,
    ) -> Result<endpoint::Push, Outcome> {
        let Registration { url, keys } = Registration::of(d).map_err(Outcome::unusable)?;
        self.endpoints.check(&url).await?;
        let max = match keys {
            Some(_) => payload::MAX_BODY - ENCRYPTION_OVERHEAD,
            None => payload::MAX_BODY,
        };
        let body = match payload::build(n, d, max) {
            Ok(b) => b,
            Err(e) => return Err(Outcome::failed(Cause::PayloadTooLarge(e.to_string()))),
        };
        let req = self.endpoints.client().post(url.clone());
        let (req, plaintext) = match &keys {
            None => (
                req.header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body),
                None,
            ),
            Some(keys) => {
                let sealed = keys.encrypt(body.clone().into_bytes())?;
                (
                    req.header("Content-Encoding", "aes128gcm")
                        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                        .body(sealed),
                    traced.then(|| body.into_bytes()),
                )
            }
        };
        let request = req.header("TTL", &self.ttl).build().map_err(|e| {
            Outcome::failed(Cause::Local(format!("bad request: {}", net::describe(&e))))
        })?;
        Ok(endpoint::Push {
            request,
            endpoint: url,
            plaintext,
            judge: map_status,
        })
    }
}

/// The pushkey as an endpoint URL, when it is one.
fn endpoint_of(d: &Device) -> Option<Url> {
    Url::parse(d.pushkey.expose())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// A device's UnifiedPush registration: the endpoint, and the keys to
/// encrypt to when the pusher gives them.
struct Registration {
    url: Url,
    keys: Option<UaKeys>,
}

impl Registration {
    /// Data that can never be served is the request's own: rejected, never remembered.
    fn of(d: &Device) -> Result<Registration, Unusable> {
        let url = endpoint_of(d).ok_or(Unusable::MalformedToken(NOT_AN_ENDPOINT))?;
        let given = |k: &str| d.data.get(k).filter(|v| !v.is_null());
        let keys = match (given("p256dh"), given("auth")) {
            (None, None) => None,
            (p256dh, auth) => Some(
                p256dh
                    .and_then(|p| p.as_str())
                    .zip(auth.and_then(|a| a.as_str()))
                    .and_then(|(p, a)| UaKeys::decode(p, a))
                    .ok_or(Unusable::MalformedToken(BAD_KEYS))?,
            ),
        };
        Ok(Registration { url, keys })
    }
}

/// Maps the push server's status to an outcome: 404/410 say the endpoint is
/// gone; redirects are not followed, so a 3xx is this push's failure.
fn map_status(status: u16, retry_after: Option<Duration>) -> Outcome {
    endpoint::judge(
        Answer::UnifiedPush { status },
        retry_after.map(|r| r.min(MAX_RETRY_AFTER)),
    )
}

impl Pushkin for UnifiedPush {
    fn type_name(&self) -> &'static str {
        "unifiedpush"
    }

    fn unusable(&self, d: &Device) -> Option<Unusable> {
        Registration::of(d).err()
    }

    /// The endpoint is what the push server judged; hashed, as Web Push does.
    fn memory_key(&self, d: &Device) -> Option<PushKey> {
        Some(endpoint::memory_key(d.pushkey.expose()).into())
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
pub fn build(cfg: &UnifiedPushConfig, s: &Settings<'_>) -> Result<Arc<dyn Pushkin>, NetError> {
    Ok(Arc::new(UnifiedPush::new(cfg, s)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        let temporary = |status, retry_after| Outcome::Temporary {
            cause: Cause::Answer(Answer::UnifiedPush { status }),
            retry_after,
        };
        let secs = |s| Some(Duration::from_secs(s));
        let cases = [
            (200, None, Outcome::Delivered),
            (201, None, Outcome::Delivered),
            (202, None, Outcome::Delivered),
            (
                404,
                None,
                Outcome::from_final_answer(Answer::UnifiedPush { status: 404 }, None),
            ),
            (
                410,
                None,
                Outcome::from_final_answer(Answer::UnifiedPush { status: 410 }, None),
            ),
            (
                413,
                None,
                Outcome::failed(Cause::Answer(Answer::UnifiedPush { status: 413 })),
            ),
            (
                302,
                None,
                Outcome::failed(Cause::Answer(Answer::UnifiedPush { status: 302 })),
            ),
            (
                400,
                None,
                Outcome::failed(Cause::Answer(Answer::UnifiedPush { status: 400 })),
            ),
            (429, secs(30), temporary(429, secs(30))),
            (503, secs(86_400), temporary(503, secs(3600))),
            (500, None, temporary(500, None)),
        ];
        for (status, retry_after, expected) in cases {
            assert_eq!(map_status(status, retry_after), expected, "{status}");
        }
        assert!(map_status(404, None).is_rejected());
        assert!(map_status(410, None).is_rejected());
    }

    #[test]
    fn only_http_urls_are_endpoints() {
        let dev = |pushkey: &str| Device {
            app_id: "a".into(),
            pushkey: pushkey.into(),
            pushkey_ts: None,
            data: Default::default(),
            tweaks: Default::default(),
        };
        assert!(endpoint_of(&dev("https://ntfy.example.org/upAbc?up=1")).is_some());
        assert!(endpoint_of(&dev("http://10.0.0.1:8080/up")).is_some());
        for bad in [
            "",
            "abcdef0123",
            "ftp://x.example/a",
            "mailto:a@b.c",
            "https://",
        ] {
            assert!(endpoint_of(&dev(bad)).is_none(), "{bad}");
        }
    }
}
