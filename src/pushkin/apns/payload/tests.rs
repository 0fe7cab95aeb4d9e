//! Golden payloads for every loc-key branch, event_id_only, badge-only and truncation.

use serde_json::{json, Map, Value};

use super::*;
use crate::notification::{Counts, Device, Notification};

fn device(data: Value, tweaks: Value) -> Device {
    Device {
        app_id: "com.example.ios".into(),
        pushkey: "k".into(),
        pushkey_ts: None,
        data: data.as_object().cloned().unwrap_or_default(),
        tweaks: tweaks.as_object().cloned().unwrap_or_default(),
    }
}

fn message(msgtype: &str, body: Option<&str>, room: Option<&str>) -> Notification {
    let mut content = Map::new();
    content.insert("msgtype".into(), msgtype.into());
    if let Some(b) = body {
        content.insert("body".into(), b.into());
    }
    Notification {
        event_id: Some("$e".into()),
        room_id: Some("!r:x".into()),
        kind: Some("m.room.message".into()),
        sender: Some("@alice:x".into()),
        sender_display_name: Some("Alice".into()),
        room_name: room.map(str::to_owned),
        content: Some(content.into()),
        counts: Counts {
            unread: Some(2),
            missed_calls: None,
        },
        ..Default::default()
    }
}

/// The payload as JSON, not cut to any limit.
fn built(
    n: &Notification,
    d: &Device,
    send_badge_counts: bool,
) -> Result<Option<Value>, PayloadError> {
    let bytes = render(n, d, send_badge_counts, usize::MAX)?;
    Ok(bytes.map(|b| serde_json::from_slice(&b).expect("JSON")))
}

fn payload(n: &Notification, d: &Device) -> Value {
    built(n, d, true)
        .expect("builds")
        .expect("something to send")
}

fn alert_of(n: &Notification) -> Value {
    payload(n, &device(json!({}), json!({})))["aps"]["alert"].clone()
}

#[test]
fn message_loc_keys() {
    let cases = [
        (
            message("m.text", Some("hi"), None),
            json!({"loc-key": "MSG_FROM_USER_WITH_CONTENT", "loc-args": ["Alice", "hi"]}),
        ),
        (
            message("m.text", Some("hi"), Some("Tea")),
            json!({"loc-key": "MSG_FROM_USER_IN_ROOM_WITH_CONTENT", "loc-args": ["Alice", "Tea", "hi"]}),
        ),
        (
            message("m.text", None, None),
            json!({"loc-key": "MSG_FROM_USER", "loc-args": ["Alice"]}),
        ),
        (
            message("m.text", None, Some("Tea")),
            json!({"loc-key": "MSG_FROM_USER_IN_ROOM", "loc-args": ["Alice", "Tea"]}),
        ),
        (
            message("m.image", Some("cat.png"), None),
            json!({"loc-key": "IMAGE_FROM_USER", "loc-args": ["Alice", "cat.png"]}),
        ),
        (
            message("m.image", Some("cat.png"), Some("Tea")),
            json!({"loc-key": "IMAGE_FROM_USER_IN_ROOM", "loc-args": ["Alice", "cat.png", "Tea"]}),
        ),
        (
            message("m.file", Some("cv.pdf"), Some("Tea")),
            json!({"loc-key": "MSG_FROM_USER_IN_ROOM_WITH_CONTENT", "loc-args": ["Alice", "Tea", "cv.pdf"]}),
        ),
        (
            message("m.emote", Some("waves"), None),
            json!({"loc-key": "ACTION_FROM_USER", "loc-args": ["Alice", "waves"]}),
        ),
        (
            message("m.emote", Some("waves"), Some("Tea")),
            json!({"loc-key": "ACTION_FROM_USER_IN_ROOM", "loc-args": ["Tea", "Alice", "waves"]}),
        ),
    ];
    for (n, expected) in cases {
        assert_eq!(alert_of(&n), expected);
    }
}

#[test]
fn sender_and_room_fallbacks() {
    let mut n = message("m.text", None, None);
    n.sender_display_name = None;
    n.room_alias = Some("#tea:x".into());
    assert_eq!(
        alert_of(&n),
        json!({"loc-key": "MSG_FROM_USER_IN_ROOM", "loc-args": ["@alice:x", "#tea:x"]})
    );
    n.sender = None;
    n.room_alias = None;
    assert_eq!(
        alert_of(&n),
        json!({"loc-key": "MSG_FROM_USER", "loc-args": [" "]})
    );
}

#[test]
fn encrypted_calls_invites_and_other_events() {
    let mut n = message("m.text", None, Some("Tea"));
    n.kind = Some("m.room.encrypted".into());
    n.content = Some(
        json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "xyz"})
            .as_object()
            .cloned()
            .expect("obj")
            .into(),
    );
    assert_eq!(
        alert_of(&n),
        json!({"loc-key": "MSG_FROM_USER_IN_ROOM", "loc-args": ["Alice", "Tea"]})
    );

    n.kind = Some("m.call.invite".into());
    n.content = Some(
        json!({"offer": {"sdp": "v=0\r\nm=audio 9 UDP\r\nm=video 9 UDP\r\n"}})
            .as_object()
            .cloned()
            .expect("obj")
            .into(),
    );
    assert_eq!(
        alert_of(&n),
        json!({"loc-key": "VIDEO_CALL_FROM_USER", "loc-args": ["Alice"]})
    );
    n.content = Some(
        json!({"offer": {"sdp": "v=0\r\nm=audio 9 UDP\r\n"}})
            .as_object()
            .cloned()
            .expect("obj")
            .into(),
    );
    assert_eq!(
        alert_of(&n),
        json!({"loc-key": "VOICE_CALL_FROM_USER", "loc-args": ["Alice"]})
    );

    n.kind = Some("m.room.member".into());
    n.membership = Some("invite".into());
    n.user_is_target = Some(true);
    assert_eq!(
        alert_of(&n),
        json!({"loc-key": "USER_INVITE_TO_NAMED_ROOM", "loc-args": ["Alice", "Tea"]})
    );
    n.room_name = None;
    assert_eq!(
        alert_of(&n),
        json!({"loc-key": "USER_INVITE_TO_CHAT", "loc-args": ["Alice"]})
    );

    n.kind = Some("m.sticker".into());
    assert_eq!(
        alert_of(&n),
        json!({"loc-key": "MSG_FROM_USER", "loc-args": ["Alice"]})
    );
}

#[test]
fn full_payload_with_default_payload_sound_and_badge() {
    let mut n = message("m.text", Some("hello"), Some("Tea"));
    n.counts = Counts {
        unread: Some(2),
        missed_calls: Some(1),
    };
    let d = device(
        json!({"default_payload": {"aps": {"mutable-content": 1, "alert": {"loc-key": "Notification"}}, "extra": "x"}}),
        json!({"sound": "default", "highlight": true}),
    );
    assert_eq!(
        payload(&n, &d),
        json!({
            "aps": {
                "mutable-content": 1,
                "alert": {"loc-key": "MSG_FROM_USER_IN_ROOM_WITH_CONTENT", "loc-args": ["Alice", "Tea", "hello"]},
                "badge": 3,
                "sound": "default"
            },
            "extra": "x",
            "room_id": "!r:x",
            "event_id": "$e"
        })
    );
    // send_badge_counts: false leaves the badge out.
    let p = built(&n, &d, false).expect("ok").expect("some");
    assert!(p["aps"].get("badge").is_none());
}

#[test]
fn event_id_only_element_ios_style() {
    let n = Notification {
        event_id: Some("$e".into()),
        room_id: Some("!r:x".into()),
        counts: Counts {
            unread: Some(0),
            missed_calls: Some(1),
        },
        ..Default::default()
    };
    let d = device(
        json!({"format": "event_id_only", "default_payload": {"aps": {"mutable-content": 1, "alert": {"loc-key": "Notification", "loc-args": []}}}}),
        json!({}),
    );
    assert_eq!(
        payload(&n, &d),
        json!({
            "aps": {"mutable-content": 1, "alert": {"loc-key": "Notification", "loc-args": []}},
            "room_id": "!r:x", "event_id": "$e", "unread_count": 0, "missed_calls": 1
        })
    );
    // Without default_payload there is no `aps` at all.
    assert_eq!(
        payload(&n, &device(json!({}), json!({}))),
        json!({"room_id": "!r:x", "event_id": "$e", "unread_count": 0, "missed_calls": 1})
    );
}

#[test]
fn badge_only_and_nothing_to_send() {
    let n = Notification {
        counts: Counts {
            unread: Some(4),
            missed_calls: None,
        },
        ..Default::default()
    };
    assert_eq!(
        payload(&n, &device(json!({}), json!({}))),
        json!({"aps": {"badge": 4}})
    );
    assert_eq!(built(&n, &device(json!({}), json!({})), false), Ok(None));
    let empty = Notification::default();
    assert_eq!(built(&empty, &device(json!({}), json!({})), true), Ok(None));
}

#[test]
fn bad_default_payload() {
    let n = message("m.text", Some("hi"), None);
    assert_eq!(
        built(
            &n,
            &device(json!({"default_payload": [1]}), json!({})),
            true
        ),
        Err(PayloadError::BadDefaultPayload)
    );
}

#[test]
fn long_fields_are_cut_to_1024_chars() {
    let n = message("m.text", Some(&"é".repeat(3000)), Some(&"r".repeat(2000)));
    let alert = alert_of(&n);
    let args = alert["loc-args"].as_array().expect("args");
    assert_eq!(args[1].as_str().map(|s| s.chars().count()), Some(1024));
    assert_eq!(args[2].as_str().map(|s| s.chars().count()), Some(1024));
}

#[test]
fn truncation_fits_the_limit_without_splitting_characters() {
    for unit in ["😀", "漢", "é", "a"] {
        let n = message("m.text", Some(&unit.repeat(1024)), Some(&"Ω".repeat(1024)));
        let d = device(json!({}), json!({}));
        let untouched = render(&n, &d, true, usize::MAX)
            .expect("ok")
            .expect("some")
            .len();
        for limit in [MAX_PAYLOAD, 1000, 300] {
            let bytes = render(&n, &d, true, limit).expect("fits").expect("some");
            if untouched <= limit {
                assert_eq!(bytes.len(), untouched);
                continue;
            }
            assert!(bytes.len() <= limit, "{unit} {limit}: {}", bytes.len());
            let v: Value = serde_json::from_slice(&bytes).expect("valid JSON and UTF-8");
            let args: Vec<&str> = v["aps"]["alert"]["loc-args"]
                .as_array()
                .expect("a")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(
                args[2].chars().all(|c| c.to_string() == unit),
                "body keeps whole {unit}"
            );
            // The longest is shortened first: the two long fields end within one character of each other.
            let (room, body) = (args[1].len(), args[2].len());
            assert!(
                room.abs_diff(body) <= 4,
                "{unit} {limit}: room {room} body {body}"
            );
            // And no more than needed.
            assert!(
                bytes.len() + 8 > limit,
                "{unit} {limit}: {} bytes",
                bytes.len()
            );
        }
    }
}

#[test]
fn what_cannot_be_shortened_is_refused() {
    let n = Notification {
        event_id: Some("$e".into()),
        counts: Counts {
            unread: Some(1),
            missed_calls: None,
        },
        ..Default::default()
    };
    let mut d = device(json!({}), json!({}));
    d.data
        .insert("default_payload".into(), json!({"pad": "x".repeat(5000)}));
    assert!(matches!(
        render(&n, &d, true, MAX_PAYLOAD),
        Err(PayloadError::TooLarge(_, 4096))
    ));
}

#[test]
fn a_body_without_msgtype_is_not_content() {
    let mut n = message("m.text", Some("hi"), Some("Tea"));
    n.content = Some(
        json!({"body": "hi"})
            .as_object()
            .cloned()
            .expect("obj")
            .into(),
    );
    assert_eq!(
        alert_of(&n),
        json!({"loc-key": "MSG_FROM_USER_IN_ROOM", "loc-args": ["Alice", "Tea"]})
    );
    n.room_name = None;
    assert_eq!(
        alert_of(&n),
        json!({"loc-key": "MSG_FROM_USER", "loc-args": ["Alice"]})
    );
}

#[test]
fn membership_changes_other_than_our_invite_have_no_alert() {
    let mut n = message("m.text", None, Some("Tea"));
    n.kind = Some("m.room.member".into());
    n.content = None;
    n.membership = Some("invite".into());
    n.user_is_target = Some(false);
    let d = device(
        json!({"default_payload": {"aps": {"mutable-content": 1}, "x": 1}}),
        json!({"sound": "default"}),
    );
    // Counts: a badge update on the default payload, no alert, no ids.
    assert_eq!(
        payload(&n, &d),
        json!({"aps": {"mutable-content": 1, "badge": 2}, "x": 1})
    );
    n.membership = Some("join".into());
    n.user_is_target = Some(true);
    assert_eq!(
        payload(&n, &device(json!({}), json!({}))),
        json!({"aps": {"badge": 2}})
    );
    // No counts (or counts not sent): nothing to send.
    assert_eq!(built(&n, &d, false), Ok(None));
    n.counts = Counts::default();
    assert_eq!(built(&n, &d, true), Ok(None));
}

#[test]
fn event_id_only_without_badge_counts() {
    let n = Notification {
        event_id: Some("$e".into()),
        room_id: Some("!r:x".into()),
        counts: Counts {
            unread: Some(3),
            missed_calls: Some(1),
        },
        ..Default::default()
    };
    let d = device(json!({"format": "event_id_only"}), json!({}));
    assert_eq!(
        built(&n, &d, false).expect("ok"),
        Some(json!({"room_id": "!r:x", "event_id": "$e"}))
    );
}
