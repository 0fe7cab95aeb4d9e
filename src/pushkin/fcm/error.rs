//! Google's answer, kept as data: the v1 error body (`status`, `message`,
//! the FCM `errorCode` in `details`) and what it means for the device.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: ErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub details: Vec<Value>,
}

impl ErrorDetail {
    /// The FCM-specific `errorCode` (`UNREGISTERED`, `SENDER_ID_MISMATCH`, …), if any.
    pub fn fcm_code(&self) -> Option<&str> {
        self.details
            .iter()
            .find_map(|d| d.get("errorCode").and_then(Value::as_str))
    }

    /// Whether an INVALID_ARGUMENT is about the registration token (not about our message).
    fn bad_token(&self) -> bool {
        let field_is_token = self.details.iter().any(|d| {
            d.get("fieldViolations")
                .and_then(Value::as_array)
                .is_some_and(|v| {
                    v.iter()
                        .any(|f| f.get("field").and_then(Value::as_str) == Some("message.token"))
                })
        });
        field_is_token
            || self
                .message
                .to_ascii_lowercase()
                .contains("registration token")
    }
}

/// What to do after one FCM answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Rejected {
        reason: String,
    },
    /// Refresh the access token and try once more.
    Reauthenticate {
        reason: String,
    },
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Failed {
        reason: String,
    },
}

pub fn judge(status: u16, body: &ErrorBody, retry_after: Option<Duration>) -> Verdict {
    let e = &body.error;
    let code = e.fcm_code().unwrap_or("");
    let reason =
        format!("FCM answered {status} {} {code}: {}", e.status, e.message).replace("  ", " ");
    match (status, code) {
        (200..=299, _) => Verdict::Delivered,
        (_, "UNREGISTERED") | (404, _) | (_, "SENDER_ID_MISMATCH") => Verdict::Rejected { reason },
        (400, _) if e.bad_token() => Verdict::Rejected { reason },
        (401, _) => Verdict::Reauthenticate { reason },
        (429, _) | (500..=599, _) | (_, "UNAVAILABLE" | "INTERNAL" | "QUOTA_EXCEEDED") => {
            Verdict::Retry {
                reason,
                after: retry_after,
            }
        }
        _ => Verdict::Failed { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> ErrorBody {
        serde_json::from_value(v).expect("error body")
    }

    fn fcm(code: u16, status: &str, error_code: &str, message: &str) -> ErrorBody {
        body(
            json!({"error": {"code": code, "status": status, "message": message,
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}]}}),
        )
    }

    #[test]
    fn table() {
        let kind = |v: Verdict| match v {
            Verdict::Delivered => "delivered",
            Verdict::Rejected { .. } => "rejected",
            Verdict::Reauthenticate { .. } => "reauth",
            Verdict::Retry { .. } => "retry",
            Verdict::Failed { .. } => "failed",
        };
        let bad_token = body(
            json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "The registration token is not a valid FCM registration token",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"}]}}),
        );
        let bad_field = body(
            json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "Invalid value",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]}]}}),
        );
        let bad_message = body(
            json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "Invalid JSON payload received. Unknown name \"x\"",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "message.x"}]}]}}),
        );
        let cases = [
            (200, ErrorBody::default(), "delivered"),
            (
                404,
                fcm(
                    404,
                    "NOT_FOUND",
                    "UNREGISTERED",
                    "Requested entity was not found.",
                ),
                "rejected",
            ),
            (400, bad_token, "rejected"),
            (400, bad_field, "rejected"),
            (400, bad_message, "failed"),
            (
                403,
                fcm(
                    403,
                    "PERMISSION_DENIED",
                    "SENDER_ID_MISMATCH",
                    "SenderId mismatch",
                ),
                "rejected",
            ),
            (
                401,
                fcm(
                    401,
                    "UNAUTHENTICATED",
                    "THIRD_PARTY_AUTH_ERROR",
                    "bad token",
                ),
                "reauth",
            ),
            (
                429,
                fcm(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "quota"),
                "retry",
            ),
            (
                503,
                fcm(503, "UNAVAILABLE", "UNAVAILABLE", "later"),
                "retry",
            ),
            (500, fcm(500, "INTERNAL", "INTERNAL", "oops"), "retry"),
            (
                403,
                fcm(
                    403,
                    "PERMISSION_DENIED",
                    "",
                    "The caller does not have permission",
                ),
                "failed",
            ),
        ];
        for (status, b, expected) in cases {
            let msg = b.error.message.clone();
            assert_eq!(kind(judge(status, &b, None)), expected, "{status} {msg}");
        }
    }
}
