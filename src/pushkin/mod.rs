//! Pushkins: one per push service, each turning a notification for one device
//! into that service's request and its answer into an [`Outcome`].
//!
//! A pushkin is built once per configured app (clients, keys and token caches
//! live inside it) and shared by every request. A push is two steps: the
//! pushkin [prepares](Pushkin::prepare) the request (payload bytes and
//! headers) from the notification, then [sends](Pushkin::send) it through the
//! one upstream [`exchange`] (timeout, retries, `Retry-After`, tap, metrics).
//! Credentials come from the one [`token::TokenCache`], JWTs from [`jwt`].

pub mod apns;
pub mod auth_header;
pub mod endpoint;
pub mod exchange;
pub mod fcm;
mod json;
pub mod jwt;
pub mod outcome;
pub mod tap;
pub mod token;
pub mod unifiedpush;
pub mod webpush;

pub use outcome::Outcome;
use outcome::{Cause, Unusable};

use std::time::Duration;

use futures::future::BoxFuture;

use crate::telemetry::metrics::Upstream;
use tap::Tap;

/// What every pushkin takes from the gateway: the gateway-wide config and its
/// own app's metrics.
#[derive(Clone)]
pub struct Settings<'a> {
    pub connect_timeout: Duration,
    /// Budget for one push, retries included.
    pub timeout: Duration,
    pub proxy: Option<&'a str>,
    pub metrics: Upstream,
}

use crate::ids::PushKey;
use crate::notification::{Device, Notification};

/// A push built for its service and ready to send: the request's bytes and
/// headers, and nothing else of the notification — a push still in flight
/// after the homeserver's answer holds only this.
pub struct Prepared(Built);

/// The prepared request of each kind of service.
enum Built {
    Apns(apns::Push),
    Fcm(fcm::Push),
    /// Web Push and UnifiedPush: a request to a user-supplied endpoint.
    Endpoint(Box<endpoint::Push>),
}

impl Prepared {
    /// The outcome of handing a pushkin a push another kind of pushkin prepared (a bug).
    fn mismatch() -> Outcome {
        Outcome::failed(Cause::Local(
            "a push prepared by another kind of pushkin (a bug)".into(),
        ))
    }
}

/// A push service.
pub trait Pushkin: Send + Sync {
    /// The pushkin type (`webpush`, `apns`, `gcm`), for logs.
    fn type_name(&self) -> &'static str;

    /// Pusher data that can never be served, decided without sending (the
    /// same decision [`Pushkin::prepare`] would make): such a device is
    /// answered rejected without a de-duplication claim and never remembered.
    fn unusable(&self, _device: &Device) -> Option<Unusable> {
        None
    }

    /// The key under which the rejection memory remembers this device's
    /// token when the push service declares it dead: what the service judged.
    /// `None`: nothing to remember or look up.
    fn memory_key(&self, device: &Device) -> Option<PushKey> {
        Some(device.pushkey.clone())
    }

    /// Step 1: builds the request for one `device` (payload, headers,
    /// encryption, endpoint checks), or decides its outcome without sending
    /// (unusable data, nothing to send, a payload that cannot fit, a refused
    /// endpoint). `traced`: keep what is encrypted, for the tap. Never panics
    /// on input.
    fn prepare<'a>(
        &'a self,
        notification: &'a Notification,
        device: &'a Device,
        traced: bool,
    ) -> BoxFuture<'a, Result<Prepared, Outcome>>;

    /// Step 2: sends a push this pushkin prepared and says what happened,
    /// recording every HTTP exchange in `tap` when given. Never takes longer
    /// than the configured upstream timeout.
    fn send<'a>(&'a self, push: Prepared, tap: Option<&'a Tap>) -> BoxFuture<'a, Outcome>;

    /// Both steps, for one device.
    fn push<'a>(
        &'a self,
        notification: &'a Notification,
        device: &'a Device,
    ) -> BoxFuture<'a, Outcome> {
        self.push_tapped(notification, device, None)
    }

    /// [`Pushkin::push`], recording every HTTP exchange in `tap` when given.
    fn push_tapped<'a>(
        &'a self,
        notification: &'a Notification,
        device: &'a Device,
        tap: Option<&'a Tap>,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match self.prepare(notification, device, tap.is_some()).await {
                Ok(push) => self.send(push, tap).await,
                Err(outcome) => outcome,
            }
        })
    }
}

/// The longest `Retry-After` believed: a push service asking for more is
/// treated as asking for a day (the outbox cuts it further, to `max_age`).
/// Upstream values are hostile: without the clamp, `Instant + Duration` panics.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The pause before attempt `attempt + 1` of a push whose `attempt`-th got a
/// retryable answer: the service's `Retry-After`, else `first` doubled per
/// attempt; `None` when no attempt is left or the pause would pass the push's
/// own deadline (then the push is a temporary failure, for the outbox).
pub fn retry_pause(
    attempt: u32,
    max_attempts: u32,
    first: Duration,
    retry_after: Option<Duration>,
    deadline: tokio::time::Instant,
) -> Option<Duration> {
    let pause = retry_after
        .unwrap_or_else(|| first.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1))));
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    (attempt < max_attempts && pause < left).then_some(pause)
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3), at most
/// [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    // Digits too many for a u64 are still "a long time", not "no advice".
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(MAX_RETRY_AFTER);
    }
    let when = httpdate::parse_http_date(v).ok()?;
    // A date in the past means "now".
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .min(MAX_RETRY_AFTER),
    )
}

#[cfg(test)]
mod tests {
    use super::{parse_retry_after, retry_pause};

    #[tokio::test]
    async fn retry_pauses_double_honour_retry_after_and_stop_at_the_deadline() {
        let first = Duration::from_millis(100);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        assert_eq!(retry_pause(1, 3, first, None, deadline), Some(first));
        assert_eq!(
            retry_pause(2, 3, first, None, deadline),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            retry_pause(3, 3, first, None, deadline),
            None,
            "no attempt left"
        );
        let asked = Some(Duration::from_secs(2));
        assert_eq!(retry_pause(1, 3, first, asked, deadline), asked);
        let too_long = Some(Duration::from_secs(u64::MAX));
        assert_eq!(
            retry_pause(1, 3, first, too_long, deadline),
            None,
            "never past the push's deadline"
        );
    }
    use std::time::{Duration, SystemTime};

    #[test]
    fn retry_after_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(61));
        let d = parse_retry_after(&in_a_minute).expect("date");
        assert!(
            (Duration::from_secs(59)..=Duration::from_secs(61)).contains(&d),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "past dates mean now"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn retry_after_is_clamped_to_a_day() {
        let day = Some(super::MAX_RETRY_AFTER);
        assert_eq!(super::MAX_RETRY_AFTER, Duration::from_secs(86_400));
        assert_eq!(parse_retry_after("86400"), day);
        assert_eq!(parse_retry_after("86401"), day);
        assert_eq!(parse_retry_after("18446744073709551615"), day);
        assert_eq!(parse_retry_after("99999999999999999999999"), day);
        assert_eq!(parse_retry_after("9999 years"), None);
        // The latest date httpdate accepts, far beyond a day.
        assert_eq!(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT"), day);
        let in_two_days =
            httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2 * 86_400));
        assert_eq!(parse_retry_after(&in_two_days), day);
        // Whatever comes out can be added to now without overflow.
        for v in ["18446744073709551615", "Fri, 31 Dec 9999 23:59:59 GMT"] {
            let d = parse_retry_after(v).expect("parsed");
            assert!(tokio::time::Instant::now().checked_add(d).is_some());
        }
    }
}
