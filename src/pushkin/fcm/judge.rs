//! What one FCM answer means for the push: delivered, refresh the access
//! token, retry, or this push's final outcome. Whether a final answer rejects
//! the token is decided by the one rule in [`Answer::says_token_dead`].

use std::time::Duration;

use super::error::{Code, ErrorBody};
use crate::pushkin::exchange::Step;
use crate::pushkin::outcome::{Answer, Cause, Outcome};

pub fn judge(status: u16, body: &ErrorBody, retry_after: Option<Duration>) -> Step {
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
        200..=299 => Step::Done(Outcome::Delivered),
        401 => Step::Renew(answer),
        429 | 500..=599 => Step::Retry {
            cause: Cause::Answer(answer),
            after: retry_after,
        },
        _ if retry => Step::Retry {
            cause: Cause::Answer(answer),
            after: retry_after,
        },
        _ => Step::Done(Outcome::from_final_answer(answer, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

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
        let kind = |s: Step| match s {
            Step::Done(o) => o.label(),
            Step::Renew(_) => "reauth",
            Step::Retry { .. } => "retry",
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
