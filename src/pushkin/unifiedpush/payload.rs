//! The body a UnifiedPush Matrix client receives: the `/notify` body the
//! homeserver sent, holding only this device (what such clients parse), cut
//! to fit the 4,096 bytes every UnifiedPush server accepts (less the
//! encryption's overhead when it is encrypted) — never split.

use crate::notification::{to_wire, Device, Notification};

/// The most a UnifiedPush server must accept in one message.
pub const MAX_BODY: usize = 4096;

/// Why no body small enough could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the UnifiedPush body is {0} bytes even without content and names (limit {1})")]
pub struct TooLarge(pub usize, pub usize);

/// The body for `device`, at most `max` bytes: `content` goes first when the
/// whole is too large, then the fields a client can fetch again from the
/// homeserver, largest meaning last; the event and room ids and the counts
/// always stay.
pub fn build(n: &Notification, device: &Device, max: usize) -> Result<String, TooLarge> {
    let body = to_wire(n, device);
    if body.len() <= max {
        return Ok(body);
    }
    let mut n = n.clone();
    let mut d = device.clone();
    type Cut = fn(&mut Notification, &mut Device);
    let cuts: [Cut; 9] = [
        |n, _| n.content = None,
        |n, _| n.room_name = None,
        |n, _| n.room_alias = None,
        |n, _| n.sender_display_name = None,
        |_, d| d.tweaks.clear(),
        |_, d| d.data.clear(),
        |n, _| n.sender = None,
        |n, _| n.membership = None,
        |n, _| n.kind = None,
    ];
    let mut last = body.len();
    for cut in cuts {
        cut(&mut n, &mut d);
        let body = to_wire(&n, &d);
        if body.len() <= max {
            return Ok(body);
        }
        last = body.len();
    }
    Err(TooLarge(last, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(v: Value) -> Notification {
        crate::notification::parse(v.to_string().as_bytes(), 10).expect("valid")
    }

    #[test]
    fn small_bodies_are_the_wire_form_of_one_device() {
        let n = parse(json!({"notification": {"event_id": "$e", "room_id": "!r:x",
            "counts": {"unread": 1},
            "devices": [{"app_id": "a", "pushkey": "https://up.example/1"},
                        {"app_id": "a", "pushkey": "https://up.example/2"}]}}));
        let body: Value =
            serde_json::from_str(&build(&n, &n.devices[1], MAX_BODY).expect("fits")).expect("json");
        assert_eq!(
            body["notification"]["devices"].as_array().map(Vec::len),
            Some(1)
        );
        assert_eq!(
            body["notification"]["devices"][0]["pushkey"],
            "https://up.example/2"
        );
    }

    #[test]
    fn content_goes_first_then_names() {
        let n = parse(json!({"notification": {"event_id": "$e", "room_id": "!r:x",
            "type": "m.room.message", "sender": "@a:x", "room_name": "x".repeat(4000),
            "content": {"body": "short"},
            "devices": [{"app_id": "a", "pushkey": "https://up.example/1"}]}}));
        let body: Value =
            serde_json::from_str(&build(&n, &n.devices[0], MAX_BODY).expect("fits")).expect("json");
        let got = &body["notification"];
        assert_eq!(got.get("content"), None);
        assert_eq!(got.get("room_name"), None);
        assert_eq!(got["sender"], "@a:x");
        assert_eq!(got["event_id"], "$e");
    }

    #[test]
    fn only_content_goes_when_that_is_enough() {
        let n = parse(
            json!({"notification": {"event_id": "$e", "room_name": "Tea",
            "content": {"body": "y".repeat(5000)},
            "devices": [{"app_id": "a", "pushkey": "https://up.example/1"}]}}),
        );
        let body = build(&n, &n.devices[0], MAX_BODY).expect("fits");
        assert!(body.len() <= MAX_BODY);
        assert!(
            matches!(build(&n, &n.devices[0], 40), Err(TooLarge(len, 40)) if len > 40),
            "nothing fits 40 bytes: failed, not sent"
        );
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["notification"]["room_name"], "Tea");
        assert_eq!(v["notification"].get("content"), None);
    }
}
