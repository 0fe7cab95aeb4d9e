//! What one APNs answer means for the push (PAYLOADS.md § APNs, errors):
//! delivered, renew the provider token, retry, or this push's final outcome.
//! Whether a final answer rejects the token is decided by the one rule in
//! [`Answer::says_token_dead`].

use std::time::Duration;

use super::reason::{ErrorBody, Reason};
use crate::pushkin::exchange::Step;
use crate::pushkin::outcome::{Answer, Cause, Outcome};

pub fn judge(status: u16, body: &ErrorBody, retry_after: Option<Duration>) -> Step {
    let reason = Reason::parse(body.reason.as_deref().unwrap_or(""));
    let renew = matches!(
        reason,
        Reason::ExpiredProviderToken | Reason::InvalidProviderToken
    );
    let answer = Answer::Apns { status, reason };
    match status {
        200 => Step::Done(Outcome::Delivered),
        403 if renew => Step::Renew(answer),
        // Our certificate or key is refused: temporary (nothing is lost while
        // the operator fixes it), but retrying now won't help.
        403 => Step::Done(Outcome::temporary(Cause::Answer(answer))),
        429 | 500..=599 => Step::Retry {
            cause: Cause::Answer(answer),
            after: retry_after,
        },
        _ => Step::Done(Outcome::from_final_answer(answer, body.timestamp)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pushkin::outcome::Rejected;

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
                Step::Done(o) => o.label(),
                Step::Renew(_) => "renew",
                Step::Retry { .. } => "retry",
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
            Step::Done(Outcome::Rejected(Rejected::TokenDead {
                answer: Answer::Apns {
                    status: 410,
                    reason: Reason::Unregistered
                },
                since_ms: Some(1_700_000_000_000)
            }))
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
            Step::Retry {
                cause: Cause::Answer(Answer::Apns {
                    status: 429,
                    reason: Reason::TooManyRequests
                }),
                after: Some(Duration::from_secs(3))
            }
        );
    }
}
