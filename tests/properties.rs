//! Property tests over everything that reads hostile input or cuts text: the
//! notify parser and every payload builder. No panic; output is valid JSON
//! within each service's size limit; no cut splits a UTF-8 character.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use pushgate::notification::{self, Counts, Device, Notification, Prio};
use pushgate::pushkin::{apns, fcm, webpush};

/// Arbitrary JSON, a few levels deep, with unicode strings.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Long unicode text: ASCII, accents, CJK, emoji and characters JSON must escape.
/// Made from a seed so that a 3000-character string is one value, not 3000 (fast in debug builds).
fn text(max: usize) -> impl Strategy<Value = String> {
    const UNITS: [&str; 8] = ["a", "é", "漢", "😀", "\"", "\\", "\n", " "];
    (any::<u64>(), 0..max).prop_map(|(seed, len)| {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                // xorshift64: cheap, deterministic per seed
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                UNITS[(x % 8) as usize]
            })
            .collect()
    })
}

fn notification_with(
    body: String,
    room: Option<String>,
    sender: Option<String>,
    kind: &str,
    msgtype: &str,
) -> Notification {
    let mut content = Map::new();
    content.insert("body".into(), Value::String(body.clone()));
    content.insert("formatted_body".into(), Value::String(body));
    content.insert("msgtype".into(), msgtype.into());
    Notification {
        event_id: Some("$e".into()),
        room_id: Some("!r:x".into()),
        kind: Some(kind.into()),
        sender: Some("@s:x".into()),
        sender_empty: false,
        sender_display_name: sender,
        room_name: room,
        room_alias: Some("#alias:x".into()),
        membership: Some("invite".into()),
        user_is_target: Some(true),
        prio: Prio::High,
        content: Some(content.into()),
        counts: Counts {
            unread: Some(3),
            missed_calls: Some(1),
        },
        devices: Vec::new(),
    }
}

fn device_with(default_payload: Option<Value>) -> Device {
    let mut data = Map::new();
    if let Some(d) = default_payload {
        data.insert("default_payload".into(), d);
    }
    Device {
        app_id: "a".into(),
        pushkey: "k".into(),
        pushkey_ts: None,
        data,
        tweaks: Map::new(),
    }
}

fn kinds() -> impl Strategy<Value = (&'static str, &'static str)> {
    prop_oneof![
        Just(("m.room.message", "m.text")),
        Just(("m.room.message", "m.emote")),
        Just(("m.room.message", "m.image")),
        Just(("m.room.encrypted", "")),
        Just(("m.call.invite", "")),
        Just(("m.room.member", "")),
        Just(("m.sticker", "")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = notification::parse(&body, 100);
    }

    #[test]
    fn parser_never_panics_on_json(n in json_value(), devices in prop::collection::vec(json_value(), 0..4)) {
        let mut n = n;
        if let Value::Object(m) = &mut n {
            m.insert("devices".into(), Value::Array(devices));
        }
        let body = json!({ "notification": n }).to_string();
        if let Ok(parsed) = notification::parse(body.as_bytes(), 100) {
            prop_assert!(!parsed.devices.is_empty());
            prop_assert!(parsed.devices.iter().all(|d| !d.app_id.as_str().is_empty() && !d.pushkey.is_empty()));
        }
    }

    /// The raw content reads as the map a `Value` parse gives: whole, key by
    /// key, and its string values (what the payload builders use).
    #[test]
    fn raw_content_reads_like_a_parsed_map(content in prop::collection::btree_map("[a-z_\\\\\"é]{1,8}", json_value(), 0..8)) {
        let content: Map<String, Value> = content.into_iter().collect();
        let body = json!({"notification": {"content": content, "devices": [{"app_id": "a", "pushkey": "k"}]}})
            .to_string();
        let n = notification::parse(body.as_bytes(), 1).expect("valid");
        let raw = n.content.expect("content");
        // What a `Value` parse of the same text gives (floats may differ from `content` in the last digit).
        let parsed: Value = serde_json::from_str(&body).expect("JSON");
        let content = parsed["notification"]["content"].as_object().cloned().expect("object");
        prop_assert_eq!(&raw.to_map(), &content);
        for (k, v) in &content {
            prop_assert_eq!(raw.field(k), Some(v.clone()));
        }
        prop_assert_eq!(raw.field("not a key"), None);
        let strings: Vec<(String, String)> = content
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        prop_assert_eq!(raw.strings().into_iter().collect::<Vec<_>>(), strings);
    }

    #[test]
    fn webpush_payload_fits_one_record(body in text(3000), room in proptest::option::of(text(600)), pad in text(4000)) {
        let n = notification_with(body, room, None, "m.room.message", "m.text");
        let d = device_with(Some(json!({ "pad": pad })));
        let payload = webpush::payload::build(&n, &d);
        match webpush::payload::encode(payload) {
            Ok(bytes) => {
                prop_assert!(bytes.len() <= webpush::payload::MAX_PLAINTEXT);
                prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
            }
            Err(webpush::payload::PayloadError::TooLarge(n)) => prop_assert!(n > webpush::payload::MAX_PLAINTEXT),
        }
    }

    #[test]
    fn apns_payload_fits_the_limit(
        body in text(1500), room in proptest::option::of(text(1500)), sender in proptest::option::of(text(1500)),
        (kind, msgtype) in kinds(), limit in 256usize..5200, default in proptest::option::of(json_value()),
    ) {
        let n = notification_with(body, room, sender, kind, msgtype);
        let d = device_with(default.filter(Value::is_object));
        match apns::payload::render(&n, &d, true, limit) {
            Ok(None) => {}
            Ok(Some(bytes)) => {
                prop_assert!(bytes.len() <= limit, "{} > {limit}", bytes.len());
                prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
            }
            Err(apns::payload::PayloadError::TooLarge(size, l)) => prop_assert!(size > l),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn fcm_data_is_strings_within_limits(
        body in text(2000), room in proptest::option::of(text(2000)), sender in proptest::option::of(text(2000)),
        extra in prop::collection::btree_map("[a-z]{1,8}", text(1500), 0..5), default in proptest::option::of(json_value()),
    ) {
        let mut n = notification_with(body, room, sender, "m.room.message", "m.text");
        if let Some(mut c) = n.content.as_ref().map(|c| c.to_map()) {
            for (k, v) in extra {
                c.insert(k, Value::String(v));
            }
            n.content = Some(c.into());
        }
        let d = device_with(default.filter(Value::is_object));
        match fcm::message::build(&n, &d, &Map::new(), true) {
            Ok(None) => prop_assert!(false, "a message event is always sent"),
            Ok(Some(bytes)) => {
                let m: Value = serde_json::from_slice(&bytes).expect("the message is JSON");
                let data = m["message"]["data"].as_object().expect("data");
                let mut total = 0;
                for (k, v) in data {
                    let s = v.as_str().expect("FCM data values are strings");
                    prop_assert!(s.len() <= 1024, "{k}: {} bytes", s.len());
                    total += k.len() + s.len();
                }
                prop_assert!(total <= fcm::message::MAX_DATA_BYTES, "{total}");
            }
            Err(fcm::message::MessageError::TooLarge(_)) => {}
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn cuts_keep_whole_characters(s in text(400), max in 0usize..1200) {
        let mut a = s.clone();
        webpush::payload::truncate_chars(&mut a, max);
        prop_assert!(s.starts_with(&a) && a.chars().count() <= max);
        let mut b = s.clone();
        fcm::message::cut_with_ellipsis(&mut b, max.max(3));
        prop_assert!(b.len() <= max.max(3));
        prop_assert!(b == s || (b.ends_with('…') && s.starts_with(b.trim_end_matches('…'))));
    }
}
