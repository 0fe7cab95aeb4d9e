//! Apple's vocabulary, kept as data: every `reason` code APNs documents and
//! the JSON body of an error answer. A leaf: what an answer means for the
//! push is judged in [`super::judge`].

use std::fmt;

use serde::Deserialize;

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
