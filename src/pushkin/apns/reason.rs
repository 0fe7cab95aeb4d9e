//! Apple's answer, kept as data: every `reason` code APNs documents, and what
//! each means for this push (PAYLOADS.md § APNs, errors). Whether an answer
//! rejects the token is decided by the one rule in
//! [`Answer::says_token_dead`](crate::pushkin::outcome::Answer::says_token_dead).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::pushkin::outcome::{Answer, Cause, Outcome};

macro_rules! reasons {
    ($($name:ident),* $(,)?) => {
        /// The `reason` codes of Apple's documentation ("Handling notification
        /// responses from APNs"); anything else is kept as text.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Reason {
            $($name,)*
            /// A reason Apple did not document (or none was given).
            Other(String),
        }

        impl Reason {
            pub fn parse(s: &str) -> Reason {
                match s {
                    $(stringify!($name) => Reason::$name,)*
                    other => Reason::Other(other.to_owned()),
                }
            }

            pub fn as_str(&self) -> &str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                    Reason::Other(s) => s,
                }
            }
        }
    };
}

reasons!(
    BadCollapseId,
    BadDeviceToken,
    BadExpirationDate,
    BadMessageId,
    BadPriority,
    BadTopic,
    DeviceTokenNotForTopic,
    DuplicateHeaders,
    IdleTimeout,
    InvalidPushType,
    MissingDeviceToken,
    MissingTopic,
    PayloadEmpty,
    TopicDisallowed,
    BadCertificate,
    BadCertificateEnvironment,
    ExpiredProviderToken,
    Forbidden,
    InvalidProviderToken,
    MissingProviderToken,
    UnrelatedKeyIdInToken,
    BadPath,
    MethodNotAllowed,
    ExpiredToken,
    Unregistered,
    PayloadTooLarge,
    TooManyProviderTokenUpdates,
    TooManyRequests,
    InternalServerError,
    ServiceUnavailable,
    Shutdown,
);

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of an APNs error response.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub reason: Option<String>,
    /// Milliseconds since the epoch when the token stopped being valid (410 only).
    #[serde(default)]
    pub timestamp: Option<u64>,
}

/// What to do after one APNs answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done: this is the push's outcome.
    Final(Outcome),
    /// Mint a new provider token and try once more.
    RenewToken(Answer),
    /// Try again later (with backoff, within the push's budget).
    Retry {
        answer: Answer,
        after: Option<Duration>,
    },
}

pub fn judge(status: u16, body: &ErrorBody, retry_after: Option<Duration>) -> Verdict {
    let reason = Reason::parse(body.reason.as_deref().unwrap_or(""));
    let renew = matches!(
        reason,
        Reason::ExpiredProviderToken | Reason::InvalidProviderToken
    );
    let answer = Answer::Apns { status, reason };
    match status {
        200 => Verdict::Final(Outcome::Delivered),
        403 if renew => Verdict::RenewToken(answer),
        // Our certificate or key is refused: temporary (nothing is lost while
        // the operator fixes it), but retrying now won't help.
        403 => Verdict::Final(Outcome::temporary(Cause::Answer(answer))),
        429 | 500..=599 => Verdict::Retry {
            answer,
            after: retry_after,
        },
        _ => Verdict::Final(Outcome::from_final_answer(answer, body.timestamp)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every documented reason with the status Apple sends it with, and the outcome kind.
    #[test]
    fn every_documented_reason() {
        let cases = [
            (200, "", "delivered"),
            (400, "BadCollapseId", "failed"),
            (400, "BadDeviceToken", "rejected"),
            (400, "BadExpirationDate", "failed"),
            (400, "BadMessageId", "failed"),
            (400, "BadPriority", "failed"),
            (400, "BadTopic", "failed"),
            (400, "DeviceTokenNotForTopic", "rejected"),
            (400, "DuplicateHeaders", "failed"),
            (400, "IdleTimeout", "failed"),
            (400, "InvalidPushType", "failed"),
            (400, "MissingDeviceToken", "failed"),
            (400, "MissingTopic", "failed"),
            (400, "PayloadEmpty", "failed"),
            (400, "TopicDisallowed", "failed"),
            (403, "BadCertificate", "temporary"),
            (403, "BadCertificateEnvironment", "temporary"),
            (403, "ExpiredProviderToken", "renew"),
            (403, "Forbidden", "temporary"),
            (403, "InvalidProviderToken", "renew"),
            (403, "MissingProviderToken", "temporary"),
            (403, "UnrelatedKeyIdInToken", "temporary"),
            (404, "BadPath", "failed"),
            (405, "MethodNotAllowed", "failed"),
            (410, "ExpiredToken", "rejected"),
            (410, "Unregistered", "rejected"),
            (413, "PayloadTooLarge", "failed"),
            (429, "TooManyProviderTokenUpdates", "retry"),
            (429, "TooManyRequests", "retry"),
            (500, "InternalServerError", "retry"),
            (503, "ServiceUnavailable", "retry"),
            (503, "Shutdown", "retry"),
            (400, "SomethingApple/AddsLater", "failed"),
        ];
        for (status, reason, expected) in cases {
            let body = ErrorBody {
                reason: Some(reason.into()),
                timestamp: None,
            };
            let got = match judge(status, &body, None) {
                Verdict::Final(o) => o.kind(),
                Verdict::RenewToken(_) => "renew",
                Verdict::Retry { .. } => "retry",
            };
            assert_eq!(got, expected, "{status} {reason}");
            if reason != "SomethingApple/AddsLater" {
                assert!(!matches!(Reason::parse(reason), Reason::Other(_)) || reason.is_empty());
                assert_eq!(Reason::parse(reason).as_str(), reason);
            }
        }
    }

    #[test]
    fn unregistered_keeps_apples_timestamp() {
        let body = ErrorBody {
            reason: Some("Unregistered".into()),
            timestamp: Some(1_700_000_000_000),
        };
        assert_eq!(
            judge(410, &body, None),
            Verdict::Final(Outcome::Rejected(
                crate::pushkin::outcome::Rejected::TokenDead {
                    answer: Answer::Apns {
                        status: 410,
                        reason: Reason::Unregistered
                    },
                    since_ms: Some(1_700_000_000_000)
                }
            ))
        );
    }

    #[test]
    fn retry_after_is_kept() {
        let body = ErrorBody {
            reason: Some("TooManyRequests".into()),
            timestamp: None,
        };
        assert_eq!(
            judge(429, &body, Some(Duration::from_secs(3))),
            Verdict::Retry {
                answer: Answer::Apns {
                    status: 429,
                    reason: Reason::TooManyRequests
                },
                after: Some(Duration::from_secs(3))
            }
        );
    }
}
