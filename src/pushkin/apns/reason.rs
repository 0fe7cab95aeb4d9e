//! Apple's answer, kept as data: the `reason` codes APNs documents, and what
//! each means for the device (PAYLOADS.md § APNs, errors).

use std::time::Duration;

use serde::Deserialize;

/// APNs `reason` codes that change what we do; anything else is kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    BadDeviceToken,
    DeviceTokenNotForTopic,
    TopicDisallowed,
    Unregistered,
    ExpiredProviderToken,
    InvalidProviderToken,
    Other(String),
}

impl Reason {
    pub fn parse(s: &str) -> Reason {
        match s {
            "BadDeviceToken" => Reason::BadDeviceToken,
            "DeviceTokenNotForTopic" => Reason::DeviceTokenNotForTopic,
            "TopicDisallowed" => Reason::TopicDisallowed,
            "Unregistered" => Reason::Unregistered,
            "ExpiredProviderToken" => Reason::ExpiredProviderToken,
            "InvalidProviderToken" => Reason::InvalidProviderToken,
            other => Reason::Other(other.to_owned()),
        }
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
    Delivered,
    /// The token is dead; `since_ms` is Apple's timestamp when given.
    Rejected {
        reason: String,
        since_ms: Option<u64>,
    },
    /// Mint a new provider token and try once more.
    RenewToken {
        reason: String,
    },
    /// Try again later (with backoff, within the request budget).
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Our credentials are refused (certificate problems): temporary, but retrying now won't help.
    Credentials {
        reason: String,
    },
    /// This push failed for good; the token is fine.
    Failed {
        reason: String,
    },
}

pub fn judge(status: u16, body: &ErrorBody, retry_after: Option<Duration>) -> Verdict {
    let text = body.reason.clone().unwrap_or_default();
    let described = format!("APNs answered {status} {text}")
        .trim_end()
        .to_owned();
    let reason = Reason::parse(&text);
    match (status, &reason) {
        (200, _) => Verdict::Delivered,
        (410, _)
        | (
            400,
            Reason::BadDeviceToken | Reason::DeviceTokenNotForTopic | Reason::TopicDisallowed,
        ) => Verdict::Rejected {
            reason: described,
            since_ms: body.timestamp,
        },
        (403, Reason::ExpiredProviderToken | Reason::InvalidProviderToken) => {
            Verdict::RenewToken { reason: described }
        }
        (403, _) => Verdict::Credentials { reason: described },
        (429, _) | (500..=599, _) => Verdict::Retry {
            reason: described,
            after: retry_after,
        },
        _ => Verdict::Failed { reason: described },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(reason: &str, timestamp: Option<u64>) -> ErrorBody {
        ErrorBody {
            reason: Some(reason.into()),
            timestamp,
        }
    }

    #[test]
    fn table() {
        let rejected = |r: &str, ts| Verdict::Rejected {
            reason: r.into(),
            since_ms: ts,
        };
        let cases = [
            (200, body("", None), Verdict::Delivered),
            (
                400,
                body("BadDeviceToken", None),
                rejected("APNs answered 400 BadDeviceToken", None),
            ),
            (
                400,
                body("DeviceTokenNotForTopic", None),
                rejected("APNs answered 400 DeviceTokenNotForTopic", None),
            ),
            (
                400,
                body("TopicDisallowed", None),
                rejected("APNs answered 400 TopicDisallowed", None),
            ),
            (
                410,
                body("Unregistered", Some(1_700_000_000_000)),
                rejected("APNs answered 410 Unregistered", Some(1_700_000_000_000)),
            ),
            (
                403,
                body("ExpiredProviderToken", None),
                Verdict::RenewToken {
                    reason: "APNs answered 403 ExpiredProviderToken".into(),
                },
            ),
            (
                403,
                body("InvalidProviderToken", None),
                Verdict::RenewToken {
                    reason: "APNs answered 403 InvalidProviderToken".into(),
                },
            ),
            (
                429,
                body("TooManyRequests", None),
                Verdict::Retry {
                    reason: "APNs answered 429 TooManyRequests".into(),
                    after: None,
                },
            ),
            (
                500,
                body("InternalServerError", None),
                Verdict::Retry {
                    reason: "APNs answered 500 InternalServerError".into(),
                    after: None,
                },
            ),
            (
                503,
                body("ServiceUnavailable", None),
                Verdict::Retry {
                    reason: "APNs answered 503 ServiceUnavailable".into(),
                    after: None,
                },
            ),
            (
                400,
                body("BadCollapseId", None),
                Verdict::Failed {
                    reason: "APNs answered 400 BadCollapseId".into(),
                },
            ),
            (
                413,
                body("PayloadTooLarge", None),
                Verdict::Failed {
                    reason: "APNs answered 413 PayloadTooLarge".into(),
                },
            ),
            (
                403,
                body("BadCertificate", None),
                Verdict::Credentials {
                    reason: "APNs answered 403 BadCertificate".into(),
                },
            ),
        ];
        for (status, b, expected) in cases {
            assert_eq!(judge(status, &b, None), expected, "{status} {:?}", b.reason);
        }
    }
}
