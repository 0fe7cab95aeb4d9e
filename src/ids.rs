//! The identifiers a notification carries, as types: [`PushKey`] (a device's
//! token, a secret), [`AppId`] (the app a pusher belongs to) and [`EventId`].
//! All three read and write JSON as the plain string, so answers, payloads
//! and the outbox's rows hold the same bytes as before they were typed.
//!
//! A [`PushKey`] is redacted by construction: `{}` and `{:?}` show only its
//! first and last four characters. The raw value comes only from
//! [`PushKey::expose`], called where it is genuinely needed (the upstream
//! request, the store's rows), and from serde where JSON carries it (the
//! `rejected` answer, the outbox's copy of the notification). App ids and
//! event ids are not secret and show in clear. A leaf module.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A device's pushkey: an APNs/FCM token, a Web Push `p256dh`, a UnifiedPush
/// endpoint URL — or the key the rejection memory keeps in its place.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PushKey(String);

impl PushKey {
    /// The raw value: only where the value itself is sent or stored; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The form logs show: the first 4 and last 4 characters (`abcd…wxyz`); a
/// key too short for that to hide anything is masked entirely (`…`).
impl fmt::Display for PushKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 4;
        let chars = self.0.chars().count();
        if chars <= 3 * SHOWN {
            return f.write_str("…");
        }
        let head_end = self.0.char_indices().nth(SHOWN).map_or(0, |(i, _)| i);
        let tail_start = self
            .0
            .char_indices()
            .nth(chars - SHOWN)
            .map_or(self.0.len(), |(i, _)| i);
        f.write_str(&self.0[..head_end])?;
        f.write_str("…")?;
        f.write_str(&self.0[tail_start..])
    }
}

impl fmt::Debug for PushKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PushKey({self})")
    }
}

/// The app id of a pusher (`com.example.ios`), as the homeserver sends it:
/// matched against the configured app keys and globs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppId(String);

/// The id of the event a notification is about (`$…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

/// Not secret: the value itself, and shown as it is.
macro_rules! in_clear {
    ($($t:ident),*) => {$(
        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}

in_clear!(AppId, EventId);

/// Made from strings (wrapping shows nothing), compared with them.
macro_rules! from_strings {
    ($($t:ident),*) => {$(
        impl From<String> for $t {
            fn from(value: String) -> Self {
                $t(value)
            }
        }

        impl From<&str> for $t {
            fn from(value: &str) -> Self {
                $t(value.to_owned())
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    )*};
}

from_strings!(PushKey, AppId, EventId);

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "APA91bHunter2SecretDeviceToken-zQx9";

    #[test]
    fn a_pushkey_never_shows_in_clear() {
        let k = PushKey::from(RAW);
        assert_eq!(format!("{k}"), "APA9…zQx9");
        assert_eq!(format!("{k:?}"), "PushKey(APA9…zQx9)");
        assert_eq!(
            format!("{:?}", Some(vec![&k])),
            "Some([PushKey(APA9…zQx9)])",
            "nor inside other values"
        );
        for shown in [format!("{k}"), format!("{k:?}"), format!("{k:#?}")] {
            assert!(!shown.contains("Hunter2"), "{shown}");
        }
        assert_eq!(k.expose(), RAW);
    }

    #[test]
    fn redaction_keeps_the_log_format() {
        let shown = |k: &str| PushKey::from(k).to_string();
        assert_eq!(shown("abcdefghijklmnopqrstuvwxyz"), "abcd…wxyz");
        assert_eq!(shown("abcdefghijklm"), "abcd…jklm", "13 characters");
        assert_eq!(shown("abcdefghijkl"), "…", "12 characters hide nothing");
        assert_eq!(shown("short"), "…");
        assert_eq!(shown(""), "…");
        assert_eq!(shown("😀😀😀😀12345😀😀😀😀"), "😀😀😀😀…😀😀😀😀");
        assert_eq!(shown("éabcdefghijklmé"), "éabc…klmé", "by characters");
    }

    #[test]
    fn json_is_the_plain_string() {
        let k = PushKey::from(RAW);
        let json = serde_json::to_string(&k).expect("serialises");
        assert_eq!(json, format!("\"{RAW}\""));
        assert_eq!(serde_json::from_str::<PushKey>(&json).expect("reads"), k);
        assert_eq!(
            serde_json::to_string(&serde_json::json!({ "rejected": [k] })).expect("json"),
            format!("{{\"rejected\":[\"{RAW}\"]}}")
        );
        let app = AppId::from("com.example.ios");
        assert_eq!(
            serde_json::to_string(&app).expect("json"),
            "\"com.example.ios\""
        );
        assert_eq!(
            serde_json::from_str::<AppId>("\"com.example.ios\"").expect("reads"),
            app
        );
        let event = EventId::from("$e:x");
        assert_eq!(serde_json::to_string(&event).expect("json"), "\"$e:x\"");
        assert_eq!(
            serde_json::from_str::<EventId>("\"$e:x\"").expect("reads"),
            event
        );
    }

    #[test]
    fn app_and_event_ids_show_in_clear() {
        assert_eq!(
            AppId::from("com.example.ios").to_string(),
            "com.example.ios"
        );
        assert_eq!(EventId::from("$e:x").to_string(), "$e:x");
        assert_eq!(AppId::from("a"), "a");
    }
}
