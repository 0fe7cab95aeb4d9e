//! What happened to one push, and why, as data — and the one rule that
//! decides which answers may make the homeserver delete a pusher.
//!
//! A pushkey in `rejected` makes the homeserver delete that pusher at once and
//! silently, so [`Rejected`] can only be built two ways:
//! - [`Rejected::TokenDead`]: the push service said this token is gone
//!   ([`Answer::says_token_dead`], the only place that decides it). These are
//!   remembered and answered from memory next time.
//! - [`Rejected::Unusable`]: the pusher's own data can never be served (unknown
//!   app, incomplete subscription, …). Answered for this request only, never
//!   remembered: one request must not change the answer of another.
//!
//! Everything else — policy refusals, payloads too large, configuration
//! mistakes, network faults — is [`Outcome::Failed`] or [`Outcome::Temporary`].

use std::fmt;
use std::time::Duration;

use super::apns::reason::Reason as ApnsReason;
use super::fcm::error::Code as FcmCode;
use crate::net::transport::Failure;

/// What happened to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The push service accepted the push (or there was nothing to send).
    Delivered,
    /// The pushkey must not be used again: the homeserver deletes the pusher.
    Rejected(Rejected),
    /// This push cannot be delivered, but the pusher stays: logged, counted, not retried.
    Failed(Cause),
    /// Try again later: upstream unavailable, rate-limited, timed out, network trouble.
    Temporary {
        cause: Cause,
        retry_after: Option<Duration>,
    },
}

/// Why a pushkey is rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// The push service said this token or subscription is gone.
    /// `since_ms`: when it stopped being valid, if the service says (APNs 410).
    TokenDead {
        answer: Answer,
        since_ms: Option<u64>,
    },
    /// The pusher's own data can never be served.
    Unusable(Unusable),
}

/// Pusher data that can never work (the reference gateway rejects these too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("no app is configured for this app_id")]
    UnknownApp,
    #[error("app_id matches several configured globs: {0}")]
    AmbiguousApp(String),
    #[error("incomplete Web Push subscription: needs a P-256 pushkey, data.endpoint and a 16-byte data.auth")]
    IncompleteSubscription,
    #[error("data.default_payload is not a JSON object")]
    BadDefaultPayload,
    #[error("{0}")]
    MalformedToken(&'static str),
}

impl Unusable {
    /// A `data.default_payload` that is present but not an object (APNs and FCM reject such pushers).
    pub fn default_payload_of(d: &crate::notification::Device) -> Option<Unusable> {
        match d.data.get("default_payload") {
            None | Some(serde_json::Value::Null | serde_json::Value::Object(_)) => None,
            Some(_) => Some(Unusable::BadDefaultPayload),
        }
    }
}

/// A push service's answer about one push, kept as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Apns {
        status: u16,
        reason: ApnsReason,
    },
    Fcm {
        status: u16,
        code: FcmCode,
        /// An INVALID_ARGUMENT whose details name the registration token.
        about_token: bool,
        /// Google's status and message, for logs.
        text: String,
    },
    WebPush {
        status: u16,
    },
    /// A UnifiedPush server (the pusher's endpoint) answered.
    UnifiedPush {
        status: u16,
    },
}

impl Answer {
    /// The one rejection rule: does this answer say that the token (or Web
    /// Push subscription) itself is gone? Only such answers are `rejected`
    /// and remembered.
    pub fn says_token_dead(&self) -> bool {
        match self {
            Answer::Apns { status: 410, .. } => true,
            Answer::Apns {
                status: 400,
                reason: ApnsReason::BadDeviceToken | ApnsReason::DeviceTokenNotForTopic,
            } => true,
            Answer::Apns { .. } => false,
            Answer::Fcm { status: 404, .. } => true,
            Answer::Fcm {
                code: FcmCode::Unregistered,
                ..
            } => true,
            Answer::Fcm {
                status: 400,
                about_token,
                ..
            } => *about_token,
            Answer::Fcm { .. } => false,
            Answer::WebPush { status } | Answer::UnifiedPush { status } => {
                matches!(status, 404 | 410)
            }
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Answer::Apns { status, .. }
            | Answer::Fcm { status, .. }
            | Answer::WebPush { status }
            | Answer::UnifiedPush { status } => *status,
        }
    }

    /// The `reason` label of `pushgate_failures_total` when this answer fails a push.
    fn failure_code(&self) -> &'static str {
        match self {
            Answer::Apns { status: 413, .. }
            | Answer::WebPush { status: 413 }
            | Answer::UnifiedPush { status: 413 } => "payload_too_large",
            Answer::Apns {
                reason:
                    ApnsReason::TopicDisallowed
                    | ApnsReason::BadTopic
                    | ApnsReason::MissingTopic
                    | ApnsReason::BadCertificate
                    | ApnsReason::BadCertificateEnvironment
                    | ApnsReason::Forbidden
                    | ApnsReason::MissingProviderToken,
                ..
            } => "configuration",
            Answer::Fcm {
                code: FcmCode::SenderIdMismatch | FcmCode::ThirdPartyAuthError,
                ..
            }
            | Answer::Fcm { status: 403, .. } => "configuration",
            _ => "bad_request",
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Apns { status, reason } => write!(f, "APNs answered {status} {reason}"),
            Answer::Fcm { status, text, .. } => write!(f, "FCM answered {status} {text}"),
            Answer::WebPush { status } => write!(f, "push service answered {status}"),
            Answer::UnifiedPush { status } => write!(f, "UnifiedPush server answered {status}"),
        }
    }
}

/// Why a push failed or must be tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// What the push service answered.
    Answer(Answer),
    /// The private-address guard refused the endpoint (the text says which address and why).
    EndpointRefused(String),
    /// The endpoint's scheme or host is not allowed by this app's config.
    EndpointNotAllowed(String),
    /// Our own payload could not be made small enough.
    PayloadTooLarge(String),
    /// A token-dead answer held back because the app's rejection breaker is open.
    BreakerOpen(Answer),
    /// No answer within the push's time budget.
    Timeout(&'static str),
    /// DNS could not resolve a name (temporary: DNS comes back).
    Dns(String),
    /// Connection, TLS or proxy trouble, or an unreadable answer.
    Transport(String),
    /// Our credentials could not be obtained or were refused.
    Credentials(String),
    /// The app is at its `inflight_request_limit`.
    InflightLimit,
    /// The send panicked (a bug); the push is tried again.
    Panicked,
    /// Anything else we decided locally (the text says what).
    Local(String),
}

impl Cause {
    /// The `reason` label of `pushgate_failures_total`: a small fixed set.
    pub fn failure_code(&self) -> &'static str {
        match self {
            Cause::Answer(a) => a.failure_code(),
            Cause::EndpointRefused(_) => "endpoint_refused",
            Cause::EndpointNotAllowed(_) => "endpoint_not_allowed",
            Cause::PayloadTooLarge(_) => "payload_too_large",
            Cause::BreakerOpen(_) => "breaker_open",
            Cause::Credentials(_) => "configuration",
            _ => "other",
        }
    }

    /// A failed HTTP exchange: DNS, timeout, or other transport trouble (all temporary).
    pub fn transport(e: &impl Failure) -> Cause {
        let described = e.describe();
        if e.is_dns_failure() {
            Cause::Dns(described)
        } else {
            Cause::Transport(described)
        }
    }

    /// Whether the push service itself answered (for the rejection breaker's count).
    pub fn answer(&self) -> Option<&Answer> {
        match self {
            Cause::Answer(a) => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Answer(a) => a.fmt(f),
            Cause::EndpointRefused(why) => write!(f, "endpoint refused: {why}"),
            Cause::EndpointNotAllowed(why) | Cause::PayloadTooLarge(why) => f.write_str(why),
            Cause::BreakerOpen(a) => write!(
                f,
                "{a}; not rejected: the rejection breaker of this app is open"
            ),
            Cause::Timeout(who) => write!(f, "{who} did not answer in time"),
            Cause::Dns(why) => write!(f, "DNS failure: {why}"),
            Cause::Transport(why) | Cause::Local(why) => f.write_str(why),
            Cause::Credentials(why) => write!(f, "credentials: {why}"),
            Cause::InflightLimit => f.write_str(INFLIGHT_LIMIT_REASON),
            Cause::Panicked => f.write_str("the send panicked (a bug)"),
        }
    }
}

/// The text of [`Cause::InflightLimit`].
pub const INFLIGHT_LIMIT_REASON: &str = "inflight_request_limit reached for this app";

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::TokenDead { answer, .. } => answer.fmt(f),
            Rejected::Unusable(u) => u.fmt(f),
        }
    }
}

impl Outcome {
    pub fn failed(cause: Cause) -> Self {
        Outcome::Failed(cause)
    }

    pub fn temporary(cause: Cause) -> Self {
        Outcome::Temporary {
            cause,
            retry_after: None,
        }
    }

    pub fn unusable(u: Unusable) -> Self {
        Outcome::Rejected(Rejected::Unusable(u))
    }

    /// The outcome of a final (non-retried) answer of the push service: the
    /// token-dead ones become rejections, everything else this push's failure.
    pub fn from_final_answer(answer: Answer, since_ms: Option<u64>) -> Self {
        if answer.says_token_dead() {
            Outcome::Rejected(Rejected::TokenDead { answer, since_ms })
        } else {
            Outcome::Failed(Cause::Answer(answer))
        }
    }

    /// Short name for logs and counters.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Rejected(_) => "rejected",
            Outcome::Failed(_) => "failed",
            Outcome::Temporary { .. } => "temporary",
        }
    }

    /// The reason for logs (`None` when delivered).
    pub fn reason(&self) -> Option<String> {
        match self {
            Outcome::Delivered => None,
            Outcome::Rejected(r) => Some(r.to_string()),
            Outcome::Failed(c) | Outcome::Temporary { cause: c, .. } => Some(c.to_string()),
        }
    }

    /// Whether the homeserver must stop using this pushkey.
    pub fn is_rejected(&self) -> bool {
        matches!(self, Outcome::Rejected(_))
    }

    /// The push service's answer, if the push got one.
    pub fn answer(&self) -> Option<&Answer> {
        match self {
            Outcome::Rejected(Rejected::TokenDead { answer, .. }) => Some(answer),
            Outcome::Failed(c) | Outcome::Temporary { cause: c, .. } => c.answer(),
            Outcome::Delivered | Outcome::Rejected(Rejected::Unusable(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apns(status: u16, reason: &str) -> Answer {
        Answer::Apns {
            status,
            reason: ApnsReason::parse(reason),
        }
    }

    fn fcm(status: u16, code: &str, about_token: bool) -> Answer {
        Answer::Fcm {
            status,
            code: FcmCode::parse(code),
            about_token,
            text: String::new(),
        }
    }

    /// Every answer that may delete a pusher, and the near misses that must not.
    #[test]
    fn the_rejection_rule() {
        let dead = [
            apns(410, "Unregistered"),
            apns(410, "ExpiredToken"),
            apns(400, "BadDeviceToken"),
            apns(400, "DeviceTokenNotForTopic"),
            fcm(404, "UNREGISTERED", false),
            fcm(404, "", false),
            fcm(400, "UNREGISTERED", false),
            fcm(400, "INVALID_ARGUMENT", true),
            Answer::WebPush { status: 404 },
            Answer::WebPush { status: 410 },
            Answer::UnifiedPush { status: 404 },
            Answer::UnifiedPush { status: 410 },
        ];
        for a in dead {
            assert!(a.says_token_dead(), "{a:?} says the token is dead");
        }
        let alive = [
            apns(400, "TopicDisallowed"),
            apns(400, "BadTopic"),
            apns(413, "PayloadTooLarge"),
            apns(403, "BadCertificate"),
            apns(403, "ExpiredProviderToken"),
            apns(429, "TooManyRequests"),
            apns(500, "InternalServerError"),
            apns(503, "ServiceUnavailable"),
            apns(400, "BadCollapseId"),
            apns(400, "SomethingNew"),
            fcm(400, "INVALID_ARGUMENT", false),
            fcm(403, "SENDER_ID_MISMATCH", false),
            fcm(403, "", false),
            fcm(401, "THIRD_PARTY_AUTH_ERROR", false),
            fcm(429, "QUOTA_EXCEEDED", false),
            fcm(503, "UNAVAILABLE", false),
            fcm(500, "INTERNAL", false),
            Answer::WebPush { status: 400 },
            Answer::WebPush { status: 401 },
            Answer::WebPush { status: 403 },
            Answer::WebPush { status: 413 },
            Answer::WebPush { status: 429 },
            Answer::WebPush { status: 500 },
            Answer::WebPush { status: 301 },
            Answer::UnifiedPush { status: 400 },
            Answer::UnifiedPush { status: 401 },
            Answer::UnifiedPush { status: 403 },
            Answer::UnifiedPush { status: 413 },
            Answer::UnifiedPush { status: 429 },
            Answer::UnifiedPush { status: 500 },
            Answer::UnifiedPush { status: 503 },
            Answer::UnifiedPush { status: 302 },
        ];
        for a in alive {
            assert!(!a.says_token_dead(), "{a:?} must not reject");
        }
    }

    #[test]
    fn failure_codes_are_a_small_fixed_set() {
        let cases = [
            (Cause::Answer(apns(400, "TopicDisallowed")), "configuration"),
            (
                Cause::Answer(apns(413, "PayloadTooLarge")),
                "payload_too_large",
            ),
            (Cause::Answer(apns(400, "BadCollapseId")), "bad_request"),
            (
                Cause::Answer(fcm(403, "SENDER_ID_MISMATCH", false)),
                "configuration",
            ),
            (
                Cause::Answer(fcm(400, "INVALID_ARGUMENT", false)),
                "bad_request",
            ),
            (
                Cause::Answer(Answer::WebPush { status: 413 }),
                "payload_too_large",
            ),
            (
                Cause::Answer(Answer::WebPush { status: 400 }),
                "bad_request",
            ),
            (
                Cause::Answer(Answer::UnifiedPush { status: 413 }),
                "payload_too_large",
            ),
            (
                Cause::Answer(Answer::UnifiedPush { status: 400 }),
                "bad_request",
            ),
            (Cause::EndpointRefused("x".into()), "endpoint_refused"),
            (
                Cause::EndpointNotAllowed("x".into()),
                "endpoint_not_allowed",
            ),
            (Cause::PayloadTooLarge("x".into()), "payload_too_large"),
            (
                Cause::BreakerOpen(apns(400, "BadDeviceToken")),
                "breaker_open",
            ),
            (Cause::Local("x".into()), "other"),
        ];
        for (cause, code) in cases {
            assert_eq!(cause.failure_code(), code, "{cause:?}");
        }
    }

    #[test]
    fn final_answers() {
        assert_eq!(
            Outcome::from_final_answer(apns(410, "Unregistered"), Some(5)),
            Outcome::Rejected(Rejected::TokenDead {
                answer: apns(410, "Unregistered"),
                since_ms: Some(5)
            })
        );
        assert_eq!(
            Outcome::from_final_answer(apns(400, "TopicDisallowed"), None),
            Outcome::Failed(Cause::Answer(apns(400, "TopicDisallowed")))
        );
    }
}
