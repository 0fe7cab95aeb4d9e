//! Golden FCM messages.

use serde_json::{json, Map, Value};

use super::*;
use crate::notification::{Counts, Device, Notification, Prio};

fn device(data: Value) -> Device {
    Device {
        app_id: "com.example.android".into(),
        pushkey: "fcm-token-1".into(),
        pushkey_ts: None,
        data: data.as_object().cloned().unwrap_or_default(),
        tweaks: Map::new(),
    }
}

/// The message [`build`] writes, read back as JSON.
fn built(
    n: &Notification,
    d: &Device,
    fcm_options: &Map<String, Value>,
    send_badge_counts: bool,
) -> Result<Option<Value>, MessageError> {
    build(n, d, fcm_options, send_badge_counts)
        .map(|m| m.map(|bytes| serde_json::from_slice(&bytes).expect("JSON")))
}

fn full() -> Notification {
    Notification {
        event_id: Some("$e".into()),
        room_id: Some("!r:x".into()),
        kind: Some("m.room.message".into()),
        sender: Some("@alice:x".into()),
        sender_display_name: Some("Alice".into()),
        room_name: Some("Tea".into()),
        content: json!({"msgtype": "m.text", "body": "hello", "format": "org.matrix.custom.html", "mentions": {}}).as_object().cloned().map(Into::into),
        counts: Counts { unread: Some(2), missed_calls: Some(0) },
        ..Default::default()
    }
}

#[test]
fn full_message() {
    let m = built(&full(), &device(json!({})), &Map::new(), true)
        .expect("builds")
        .expect("something to send");
    assert_eq!(
        m,
        json!({"message": {
            "token": "fcm-token-1",
            "android": {"priority": "high"},
            "data": {
                "event_id": "$e", "type": "m.room.message", "sender": "@alice:x", "room_name": "Tea",
                "sender_display_name": "Alice", "room_id": "!r:x", "prio": "high",
                "content_msgtype": "m.text", "content_body": "hello", "content_format": "org.matrix.custom.html",
                "unread": "2"
            }
        }})
    );
}

#[test]
fn event_id_only_with_default_payload_and_fcm_options() {
    let n = Notification {
        event_id: Some("$e".into()),
        room_id: Some("!r:x".into()),
        prio: Prio::Low,
        counts: Counts {
            unread: Some(1),
            missed_calls: None,
        },
        ..Default::default()
    };
    let d = device(
        json!({"format": "event_id_only", "default_payload": {"cs": "abc", "aps": {"content-available": 1}, "n": 3, "gone": null}}),
    );
    let options = json!({"android": {"notification": {"click_action": "OPEN"}, "ttl": "60s"}, "apns": {"payload": {"aps": {"content-available": 1}}}});
    let m = built(&n, &d, options.as_object().expect("obj"), true)
        .expect("builds")
        .expect("something to send");
    assert_eq!(
        m,
        json!({"message": {
            "android": {"notification": {"click_action": "OPEN"}, "ttl": "60s", "priority": "normal"},
            "apns": {"payload": {"aps": {"content-available": 1}}},
            "token": "fcm-token-1",
            "data": {"cs": "abc", "aps": "{\"content-available\":1}", "n": "3", "event_id": "$e", "room_id": "!r:x", "prio": "normal", "unread": "1"}
        }})
    );
}

#[test]
fn badge_only_is_sent_only_with_a_count() {
    let n = Notification {
        counts: Counts {
            unread: Some(0),
            missed_calls: Some(0),
        },
        ..Default::default()
    };
    assert_eq!(
        built(&n, &device(json!({})), &Map::new(), true),
        Ok(None),
        "zero counts"
    );
    let n = Notification {
        counts: Counts {
            unread: Some(5),
            missed_calls: Some(1),
        },
        ..Default::default()
    };
    assert_eq!(
        built(&n, &device(json!({})), &Map::new(), false),
        Ok(None),
        "send_badge_counts: false"
    );
    let m = built(&n, &device(json!({})), &Map::new(), true)
        .expect("builds")
        .expect("something to send");
    assert_eq!(
        m,
        json!({"message": {"token": "fcm-token-1", "android": {"priority": "high"}, "data": {"prio": "high", "unread": "5", "missed_calls": "1"}}})
    );
}

#[test]
fn calls_are_high_priority_even_when_low() {
    let mut n = full();
    n.kind = Some("m.call.invite".into());
    n.prio = Prio::Low;
    let m = built(&n, &device(json!({})), &Map::new(), true)
        .expect("builds")
        .expect("something to send");
    assert_eq!(m["message"]["android"]["priority"], "high");
    assert_eq!(m["message"]["data"]["prio"], "normal");
}

#[test]
fn long_values_are_cut_at_1024_bytes_with_an_ellipsis() {
    let mut n = full();
    n.sender_display_name = Some("😀".repeat(400));
    n.content = json!({"body": "漢".repeat(500)})
        .as_object()
        .cloned()
        .map(Into::into);
    let m = built(&n, &device(json!({})), &Map::new(), true)
        .expect("builds")
        .expect("something to send");
    let name = m["message"]["data"]["sender_display_name"]
        .as_str()
        .expect("s");
    assert!(name.len() <= 1024 && name.ends_with('…'), "{}", name.len());
    assert_eq!(
        name.len(),
        255 * 4 + 3,
        "whole emoji only, then the ellipsis"
    );
    let body = m["message"]["data"]["content_body"].as_str().expect("s");
    assert_eq!(body.len(), 340 * 3 + 3);
}

#[test]
fn whole_data_fits_4096_bytes_by_shortening_content() {
    let mut n = full();
    // Each value alone is cut to 1024 bytes; together they still exceed 4096.
    n.content = json!({
        "body": "b".repeat(3000), "formatted_body": "f".repeat(3000),
        "x1": "x".repeat(900), "x2": "y".repeat(1100), "msgtype": "m.text"
    })
    .as_object()
    .cloned()
    .map(Into::into);
    let m = built(&n, &device(json!({})), &Map::new(), true)
        .expect("builds")
        .expect("something to send");
    let data = m["message"]["data"].as_object().expect("data");
    let size: usize = data
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    assert!(
        size <= MAX_DATA_BYTES && size > MAX_DATA_BYTES - 8,
        "{size}"
    );
    assert_eq!(
        data["content_msgtype"], "m.text",
        "short content values are kept"
    );
    let long: Vec<usize> = [
        "content_body",
        "content_formatted_body",
        "content_x1",
        "content_x2",
    ]
    .iter()
    .map(|k| data[*k].as_str().expect("s").len())
    .collect();
    // The longest values are cut to one common length; a value already below it is kept whole.
    assert_eq!(long[0], long[1]);
    assert_eq!(long[0], long[3]);
    assert_eq!(data["content_x1"], json!("x".repeat(900)));
    assert!(data["content_body"].as_str().expect("b").ends_with('…'));
}

#[test]
fn what_cannot_fit_is_an_error() {
    let d = device(
        json!({"default_payload": {"a": "x".repeat(1000), "b": "x".repeat(1000), "c": "x".repeat(1000), "d": "x".repeat(1000), "e": "x".repeat(1000)}}),
    );
    assert!(matches!(
        built(&full(), &d, &Map::new(), true),
        Err(MessageError::TooLarge(_))
    ));
    assert_eq!(
        built(
            &full(),
            &device(json!({"default_payload": "x"})),
            &Map::new(),
            true
        ),
        Err(MessageError::BadDefaultPayload)
    );
}

#[test]
fn an_empty_sender_is_sent_as_empty() {
    let n = Notification {
        sender_empty: true,
        counts: Counts {
            unread: Some(1),
            missed_calls: None,
        },
        ..Default::default()
    };
    let m = built(&n, &device(json!({})), &Map::new(), true)
        .expect("builds")
        .expect("something to send");
    assert_eq!(
        m["message"]["data"],
        json!({"sender": "", "prio": "high", "unread": "1"})
    );
}

#[test]
fn the_message_is_written_with_its_keys_in_order() {
    let d =
        device(json!({"default_payload": {"zz": "last", "a\"b": "q\u{1}", "event_id": "mine"}}));
    let m = build(&full(), &d, &Map::new(), true)
        .expect("builds")
        .expect("something to send");
    assert_eq!(
        String::from_utf8(m).expect("UTF-8"),
        concat!(
            r#"{"message":{"android":{"priority":"high"},"data":{"a\"b":"q\u0001","#,
            r#""content_body":"hello","content_format":"org.matrix.custom.html","#,
            r#""content_msgtype":"m.text","event_id":"$e","prio":"high","room_id":"!r:x","#,
            r#""room_name":"Tea","sender":"@alice:x","sender_display_name":"Alice","#,
            r#""type":"m.room.message","unread":"2","zz":"last"},"token":"fcm-token-1"}}"#
        )
    );
}

/// Without `fcm_options` the message is written straight into bytes; the
/// tree it was built as before (still used with options) is the oracle:
/// every combination below must come out byte for byte the same.
#[test]
fn the_written_message_is_the_trees_bytes() {
    let payloads = [
        json!(null),
        json!({}),
        json!({"cs": "abc", "n": 3, "nested": {"x": [1, "two"]}, "gone": null}),
        // Keys of the notification's own: the notification's value wins.
        json!({"event_id": "from-payload", "prio": "p", "room_id": "r", "unread": "9"}),
        json!({"é": "ü", "\u{7f}": "\t\n\r", "\"": "\\", "/": "</script>", "": ""}),
        json!({"long": "x".repeat(2000)}),
    ];
    let mut notifications = vec![full(), Notification::default()];
    let mut n = full();
    n.prio = Prio::Low;
    n.kind = Some("m.call.invite".into());
    n.room_alias = Some("#tea:x".into());
    n.membership = Some("invite".into());
    n.counts = Counts {
        unread: Some(0),
        missed_calls: Some(3),
    };
    notifications.push(n);
    let mut n = full();
    n.sender_empty = true;
    n.sender = None;
    n.sender_display_name = Some("A \"quoted\" \u{2028} name\u{0}".into());
    n.content = json!({"body": "b".repeat(3000), "formatted_body": "漢".repeat(800), "k": 1})
        .as_object()
        .cloned()
        .map(Into::into);
    notifications.push(n);
    notifications.push(Notification {
        counts: Counts {
            unread: Some(4),
            missed_calls: None,
        },
        ..Default::default()
    });
    let mut compared = 0;
    for n in &notifications {
        for p in &payloads {
            for send_badge_counts in [true, false] {
                let mut d = device(json!({}));
                if !p.is_null() {
                    d.data.insert("default_payload".into(), p.clone());
                }
                d.pushkey = "tok\"en/ü".into();
                let ours = build(n, &d, &Map::new(), send_badge_counts);
                let oracle = parts(n, &d, send_badge_counts).map(|p| {
                    p.map(|(data, priority)| {
                        let tree = tree(data, priority, d.pushkey.expose(), &Map::new());
                        serde_json::to_vec(&tree).expect("JSON")
                    })
                });
                assert_eq!(ours, oracle, "{n:?} {p} {send_badge_counts}");
                compared += usize::from(matches!(ours, Ok(Some(_))));
            }
        }
    }
    assert!(compared >= 40, "{compared} messages compared");
}
