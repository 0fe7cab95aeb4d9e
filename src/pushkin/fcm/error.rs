//! Google's vocabulary, kept as data: the v1 error body (`status`, `message`,
//! the FCM `errorCode` in `details`) and the codes FCM documents. A leaf:
//! what an answer means for the push is judged in [`super::judge`].

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
    pub fn bad_token(&self) -> bool {
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
