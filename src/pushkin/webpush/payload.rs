//! The JSON a Web Push app receives (before encryption), and its size rules.
//!
//! `default_payload` is the base; the notification's non-empty fields are laid
//! over it; `content` loses `formatted_body`, its `body` is cut to 1000
//! characters and a `ciphertext` over 2000 characters is dropped. The
//! encrypted record must fit in 4096 bytes, so the plaintext is then shortened:
//! `content.body` first, then `content` as a whole.

use serde_json::{Map, Value};

use crate::notification::{Device, Notification};

/// RFC 8291 aes128gcm overhead for one record: 86-byte header (salt, rs, idlen,
/// 65-byte key id), 1 padding delimiter byte, 16-byte tag.
const RECORD_OVERHEAD: usize = 86 + 1 + 16;
/// Push services must accept 4096-byte bodies (RFC 8030 §7.2); larger ones may be refused.
pub const MAX_RECORD: usize = 4096;
pub const MAX_PLAINTEXT: usize = MAX_RECORD - RECORD_OVERHEAD;

const BODY_CHARS: usize = 1000;
const CIPHERTEXT_CHARS: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the payload is {0} bytes even without content; at most {MAX_PLAINTEXT} fit in a Web Push message")]
    TooLarge(usize),
}

/// Builds the payload object (without the size rule).
pub fn build(n: &Notification, d: &Device) -> Map<String, Value> {
    let mut out = match d.data.get("default_payload") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        // The reference ignores a default_payload that is not an object here
        // (APNs and FCM reject the pusher instead).
        Some(_) => {
            tracing::warn!("Web Push data.default_payload is not a JSON object: ignored");
            Map::new()
        }
    };
    let strings = [
        ("room_id", n.room_id.as_deref()),
        ("room_name", n.room_name.as_deref()),
        ("room_alias", n.room_alias.as_deref()),
        ("membership", n.membership.as_deref()),
        ("event_id", n.event_id.as_ref().map(|e| e.as_str())),
        ("sender", n.sender.as_deref()),
        ("sender_display_name", n.sender_display_name.as_deref()),
        ("type", n.kind.as_deref()),
    ];
    for (key, value) in strings {
        if let Some(v) = value {
            out.insert(key.into(), Value::String(v.to_owned()));
        }
    }
    // Only `true` is sent, as the reference does.
    if n.user_is_target == Some(true) {
        out.insert("user_is_target".into(), Value::Bool(true));
    }
    // A 0 is sent too: that is how a web client clears its badge.
    for (key, value) in [
        ("unread", n.counts.unread),
        ("missed_calls", n.counts.missed_calls),
    ] {
        if let Some(c) = value {
            out.insert(key.into(), Value::from(c));
        }
    }
    if let Some(content) = &n.content {
        // Web Push sends the whole content: it is parsed here, for this payload only.
        let mut content = content.to_map();
        content.remove("formatted_body");
        if let Some(Value::String(body)) = content.get_mut("body") {
            truncate_chars(body, BODY_CHARS);
        }
        if matches!(content.get("ciphertext"), Some(Value::String(c)) if c.chars().count() > CIPHERTEXT_CHARS)
        {
            content.remove("ciphertext");
        }
        out.insert("content".into(), Value::Object(content));
    }
    out
}

/// Serializes the payload, shortening it until it fits in one Web Push record.
pub fn encode(mut payload: Map<String, Value>) -> Result<Vec<u8>, PayloadError> {
    let bytes = to_vec(&payload);
    if bytes.len() <= MAX_PLAINTEXT {
        return Ok(bytes);
    }
    if let Some(Value::Object(content)) = payload.get("content") {
        if let Some(Value::String(body)) = content.get("body") {
            let body = body.clone();
            if let Some(bytes) = shorten_body(&mut payload, &body) {
                return Ok(bytes);
            }
        }
    }
    payload.remove("content");
    let bytes = to_vec(&payload);
    if bytes.len() <= MAX_PLAINTEXT {
        Ok(bytes)
    } else {
        Err(PayloadError::TooLarge(bytes.len()))
    }
}

/// Finds the longest prefix of `content.body` (in characters) that makes the payload fit.
fn shorten_body(payload: &mut Map<String, Value>, body: &str) -> Option<Vec<u8>> {
    let set = |payload: &mut Map<String, Value>, len: usize| -> Vec<u8> {
        let mut b = body.to_owned();
        truncate_chars(&mut b, len);
        if let Some(Value::Object(c)) = payload.get_mut("content") {
            c.insert("body".into(), Value::String(b));
        }
        to_vec(payload)
    };
    if set(payload, 0).len() > MAX_PLAINTEXT {
        return None;
    }
    // Largest len with a fitting payload: the size only grows with len.
    let (mut lo, mut hi) = (0, body.chars().count());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if set(payload, mid).len() <= MAX_PLAINTEXT {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(set(payload, lo))
}

fn to_vec(m: &Map<String, Value>) -> Vec<u8> {
    // Serializing a Map of Values cannot fail.
    serde_json::to_vec(m).unwrap_or_default()
}

/// Cuts a string to at most `max` characters (never inside a UTF-8 sequence).
pub fn truncate_chars(s: &mut String, max: usize) {
    if let Some((idx, _)) = s.char_indices().nth(max) {
        s.truncate(idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notif(body: &str) -> Notification {
        let mut content = Map::new();
        content.insert("body".into(), Value::String(body.into()));
        content.insert("msgtype".into(), "m.text".into());
        content.insert("formatted_body".into(), "<b>x</b>".into());
        Notification {
            event_id: Some("$e".into()),
            kind: Some("m.room.message".into()),
            content: Some(content.into()),
            ..Default::default()
        }
    }

    fn device() -> Device {
        Device {
            app_id: "a".into(),
            pushkey: "k".into(),
            pushkey_ts: None,
            data: Map::new(),
            tweaks: Map::new(),
        }
    }

    #[test]
    fn zero_counts_are_sent_and_user_is_target_only_when_true() {
        let mut n = notif("hi");
        n.counts.unread = Some(0);
        n.counts.missed_calls = Some(0);
        n.user_is_target = Some(false);
        let mut d = device();
        d.data
            .insert("default_payload".into(), Value::String("x".into()));
        assert_eq!(
            Value::Object(build(&n, &d)),
            serde_json::json!({
                "event_id": "$e", "type": "m.room.message", "unread": 0, "missed_calls": 0,
                "content": {"body": "hi", "msgtype": "m.text"}
            })
        );
        n.user_is_target = Some(true);
        n.counts.missed_calls = None;
        n.content = None;
        assert_eq!(
            Value::Object(build(&n, &device())),
            serde_json::json!({
                "event_id": "$e", "type": "m.room.message", "unread": 0, "user_is_target": true
            })
        );
    }

    #[test]
    fn body_cut_to_1000_chars_and_formatted_body_dropped() {
        let p = build(&notif(&"é".repeat(1500)), &device());
        let content = p["content"].as_object().expect("content");
        assert_eq!(
            content["body"].as_str().map(|s| s.chars().count()),
            Some(1000)
        );
        assert!(!content.contains_key("formatted_body"));
    }

    #[test]
    fn oversize_payload_shortens_body_at_char_boundary() {
        let mut d = device();
        let mut dp = Map::new();
        dp.insert("pad".into(), Value::String("x".repeat(3000)));
        d.data.insert("default_payload".into(), Value::Object(dp));
        let bytes = encode(build(&notif(&"😀".repeat(900)), &d)).expect("fits");
        assert!(bytes.len() <= MAX_PLAINTEXT);
        assert!(
            bytes.len() > MAX_PLAINTEXT - 4,
            "as long as fits: {}",
            bytes.len()
        );
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        assert!(v["content"]["body"]
            .as_str()
            .expect("body")
            .chars()
            .all(|c| c == '😀'));
    }

    #[test]
    fn content_dropped_when_body_cannot_fit() {
        let mut d = device();
        let mut dp = Map::new();
        dp.insert("pad".into(), Value::String("x".repeat(3930)));
        d.data.insert("default_payload".into(), Value::Object(dp));
        let bytes = encode(build(&notif("hello"), &d)).expect("fits");
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        assert!(v.get("content").is_none());
    }
}
