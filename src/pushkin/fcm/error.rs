//! Google's answer, kept as data: the v1 error body (`status`, `message`,
//! the FCM `errorCode` in `details`) and what it means for the device.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::pushkin::outcome::{Answer, Outcome};

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

/// The FCM `errorCode` values Google documents (`FcmError`); anything else is kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// No `errorCode` in the answer.
    None,
    UnspecifiedError,
    InvalidArgument,
    Unregistered,
    SenderIdMismatch,
    QuotaExceeded,
    Unavailable,
    Internal,
    ThirdPartyAuthError,
    Other(String),
}

impl Code {
    pub fn parse(s: &str) -> Code {
        match s {
            "" => Code::None,
            "UNSPECIFIED_ERROR" => Code::UnspecifiedError,
            "INVALID_ARGUMENT" => Code::InvalidArgument,
            "UNREGISTERED" => Code::Unregistered,
            "SENDER_ID_MISMATCH" => Code::SenderIdMismatch,
            "QUOTA_EXCEEDED" => Code::QuotaExceeded,
            "UNAVAILABLE" => Code::Unavailable,
            "INTERNAL" => Code::Internal,
            "THIRD_PARTY_AUTH_ERROR" => Code::ThirdPartyAuthError,
            other => Code::Other(other.to_owned()),
        }
    }
}

/// What to do after one FCM answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done: this is the push's outcome.
    Final(Outcome),
    /// Refresh the access token and try once more.
    Reauthenticate(Answer),
    /// Try again later (with backoff, within the push's budget).
    Retry {
        answer: Answer,
        after: Option<Duration>,
    },
}

pub fn judge(status: u16, body: &ErrorBody, retry_after: Option<Duration>) -> Verdict {
    let e = &body.error;
    let code = Code::parse(e.fcm_code().unwrap_or(""));
    let text = format!("{} {}: {}", e.status, e.fcm_code().unwrap_or(""), e.message)
        .replace("  ", " ")
        .trim()
        .to_owned();
    let retry = matches!(
        code,
        Code::Unavailable | Code::Internal | Code::QuotaExceeded
    );
    let answer = Answer::Fcm {
        status,
        about_token: status == 400 && e.bad_token(),
        code,
        text,
    };
    match status {
        200..=299 => Verdict::Final(Outcome::Delivered),
        401 => Verdict::Reauthenticate(answer),
        429 | 500..=599 => Verdict::Retry {
            answer,
            after: retry_after,
        },
        _ if retry => Verdict::Retry {
            answer,
            after: retry_after,
        },
        _ => Verdict::Final(Outcome::from_final_answer(answer, None)),
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
            Verdict::Final(o) => o.kind(),
            Verdict::Reauthenticate(_) => "reauth",
            Verdict::Retry { .. } => "retry",
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
                "failed",
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
