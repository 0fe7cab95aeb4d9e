//! The writer against the `Value` builder it replaced ([`super::oracle`]) on
//! generated notifications: the same bytes, the same errors, for every
//! shape — long and escaped text, odd default payloads (with or without
//! their own `aps` and `alert`), counts, sound tweaks and limits that force
//! the cutting.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::{oracle, render, MAX_PAYLOAD, MAX_VOIP_PAYLOAD};
use crate::notification::{Content, Counts, Device, Notification};

/// Text of `0..max` characters from units JSON escapes or that span several bytes.
fn text(max: usize) -> impl Strategy<Value = String> {
    const UNITS: [&str; 12] = [
        "a", "é", "漢", "😀", "\"", "\\", "\n", " ", "\u{1}", "\u{7f}", "/", "\u{2028}",
    ];
    (any::<u64>(), 0..max).prop_map(|(seed, len)| {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                // xorshift64: a long string is one generated value, not one per character.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                UNITS[(x % 12) as usize]
            })
            .collect()
    })
}

/// Short or long (past the 1,024-character cut and Apple's limits).
fn field() -> impl Strategy<Value = String> {
    prop_oneof![3 => text(8), 1 => text(1300)]
}

/// Keys that sort around and collide with ours at every level.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "aps",
            "alert",
            "badge",
            "sound",
            "loc-args",
            "loc-key",
            "event_id",
            "room_id",
            "unread_count",
            "missed_calls",
            "Z",
            "a",
            "zz",
            "mutable-content",
            "apt",
            "ap",
        ])
        .prop_map(str::to_owned),
        text(4),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        field().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A default payload: usually an object, often with an `aps` object that
/// has an `alert` with `loc-args`; sometimes not an object at all.
fn default_payload() -> impl Strategy<Value = Option<Value>> {
    let loc_args = prop::collection::vec(
        prop_oneof![3 => field().prop_map(Value::String), 1 => json_value()],
        0..4,
    )
    .prop_map(Value::Array);
    let alert = (
        prop::collection::btree_map(key(), json_value(), 0..3),
        prop::option::of(loc_args),
    )
        .prop_map(|(mut m, args)| {
            if let Some(a) = args {
                m.insert("loc-args".into(), a);
            }
            Value::Object(m.into_iter().collect())
        });
    let aps = prop_oneof![
        3 => (prop::collection::btree_map(key(), json_value(), 0..4), prop::option::of(alert))
            .prop_map(|(mut m, alert)| {
                if let Some(a) = alert {
                    m.insert("alert".into(), a);
                }
                Value::Object(m.into_iter().collect())
            }),
        1 => json_value(),
    ];
    let object = (
        prop::collection::btree_map(key(), json_value(), 0..5),
        prop::option::of(aps),
    )
        .prop_map(|(mut m, aps)| {
            if let Some(a) = aps {
                m.insert("aps".into(), a);
            }
            Value::Object(m.into_iter().collect())
        });
    prop_oneof![
        2 => Just(None),
        6 => object.prop_map(Some),
        1 => json_value().prop_map(Some),
    ]
}

fn content() -> impl Strategy<Value = Option<Content>> {
    let msgtype = prop::sample::select(vec![
        None,
        Some(Value::Null),
        Some(Value::from(7)),
        Some(Value::from("m.text")),
        Some(Value::from("m.image")),
        Some(Value::from("m.emote")),
        Some(Value::from("m.notice")),
    ]);
    let body = prop_oneof![
        Just(None),
        Just(Some(Value::from(""))),
        Just(Some(Value::from(5))),
        field().prop_map(|s| Some(Value::String(s))),
    ];
    let offer = prop::sample::select(vec![
        None,
        Some(serde_json::json!({"sdp": "v=0\r\nm=audio 9\r\nm=video 9\r\n"})),
        Some(serde_json::json!({"sdp": "v=0\r\nm=audio 9\r\n"})),
        Some(serde_json::json!("m=video")),
    ]);
    prop::option::of((msgtype, body, offer).prop_map(|(msgtype, body, offer)| {
        let mut m = Map::new();
        for (k, v) in [("msgtype", msgtype), ("body", body), ("offer", offer)] {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        }
        Content::from(m)
    }))
}

fn counts() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![Just(None), (0u64..100).prop_map(Some), Just(Some(u64::MAX))]
}

fn notification() -> impl Strategy<Value = Notification> {
    let kind = prop::sample::select(vec![
        None,
        Some("m.room.message"),
        Some("m.room.encrypted"),
        Some("m.call.invite"),
        Some("m.room.member"),
        Some("m.sticker"),
    ]);
    let ids = (
        prop::option::of(Just("$event:x")),
        prop::option::of(prop_oneof![Just("!r:x".to_owned()), text(6)]),
    );
    let people = (
        prop::option::of(field()),
        prop::option::of(field()),
        prop::option::of(field()),
        prop::option::of(field()),
    );
    let membership = (
        prop::option::of(prop::sample::select(vec!["invite", "join"])),
        prop::option::of(any::<bool>()),
    );
    (kind, ids, people, membership, content(), counts(), counts()).prop_map(
        |(
            kind,
            (event_id, room_id),
            (sender, name, room_name, alias),
            (membership, target),
            content,
            unread,
            missed,
        )| {
            Notification {
                event_id: event_id.map(Into::into),
                room_id,
                kind: kind.map(str::to_owned),
                sender,
                sender_display_name: name,
                room_name,
                room_alias: alias,
                membership: membership.map(str::to_owned),
                user_is_target: target,
                content,
                counts: Counts {
                    unread,
                    missed_calls: missed,
                },
                ..Default::default()
            }
        },
    )
}

fn device() -> impl Strategy<Value = Device> {
    let sound = prop_oneof![
        Just(None),
        Just(Some(Value::from("default"))),
        Just(Some(Value::Bool(true))),
        text(6).prop_map(|s| Some(Value::String(s))),
    ];
    (default_payload(), sound).prop_map(|(default, sound)| {
        let mut data = Map::new();
        if let Some(d) = default {
            data.insert("default_payload".into(), d);
        }
        let mut tweaks = Map::new();
        if let Some(s) = sound {
            tweaks.insert("sound".into(), s);
        }
        Device {
            app_id: "com.example.ios".into(),
            pushkey: "k".into(),
            pushkey_ts: None,
            data,
            tweaks,
        }
    })
}

fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(MAX_PAYLOAD),
        Just(MAX_VOIP_PAYLOAD),
        20usize..800,
        800usize..4000,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn the_writer_gives_the_bytes_and_errors_of_the_value_builder(
        n in notification(), d in device(), send_badge_counts in any::<bool>(), limit in limit(),
    ) {
        let ours = render(&n, &d, send_badge_counts, limit);
        let theirs = oracle::render(&n, &d, send_badge_counts, limit);
        prop_assert!(
            ours == theirs,
            "ours {:?}\ntheirs {:?}",
            ours.as_ref().map(|o| o.as_ref().map(|b| String::from_utf8_lossy(b))),
            theirs.as_ref().map(|o| o.as_ref().map(|b| String::from_utf8_lossy(b))),
        );
    }
}

#[test]
fn strings_are_escaped_as_serde_json_escapes_them() {
    // Every ASCII character and a few wider ones, at every position of the
    // eight-byte words the writer skips over.
    let units = (0u8..0x80)
        .map(char::from)
        .chain(['é', '漢', '😀', '\u{2028}', '\u{fffd}']);
    for unit in units {
        for at in 0..17 {
            let s = format!("{}{unit}{}", "a".repeat(at), "b".repeat(16 - at));
            let mut ours = Vec::new();
            crate::pushkin::json::string(&mut ours, &s);
            assert_eq!(
                String::from_utf8(ours).expect("UTF-8"),
                serde_json::to_string(&s).expect("a string serializes"),
                "{unit:?} at {at}"
            );
        }
    }
}
