//! The exact bytes sent to Apple for every payload shape, from request bodies
//! as a homeserver sends them: key order, number and string formatting,
//! `default_payload` merging, truncation and the errors. Pinned on the
//! `serde_json::Value` builder; any other builder must give the same bytes.

use serde_json::{json, Map, Value};

use super::*;
use crate::notification::parse;

/// A group message as Synapse sends it, with `extra` fields set (`null` removes one).
fn message(extra: Value) -> Value {
    let mut n = json!({
        "event_id": "$e", "room_id": "!r:x", "type": "m.room.message",
        "sender": "@alice:x", "sender_display_name": "Alice", "room_name": "Tea",
        "content": {"msgtype": "m.text", "body": "hi"}, "counts": {"unread": 2}
    });
    if let (Some(n), Some(extra)) = (n.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            n.insert(k.clone(), v.clone());
        }
    }
    n
}

/// The request body of `notification` to one device with this `data` and `tweaks`.
fn body(notification: Value, data: Value, tweaks: Value) -> String {
    let mut n = notification;
    n["devices"] =
        json!([{"app_id": "com.example.ios", "pushkey": "k", "data": data, "tweaks": tweaks}]);
    json!({ "notification": n }).to_string()
}

fn render_body(
    body: &str,
    send_badge_counts: bool,
    limit: usize,
) -> Result<Option<String>, PayloadError> {
    let n = parse(body.as_bytes(), 1).expect("a valid request");
    let out = render(&n, &n.devices[0], send_badge_counts, limit)?;
    Ok(out.map(|b| String::from_utf8(b).expect("UTF-8")))
}

fn bytes_of(notification: Value, data: Value, tweaks: Value) -> String {
    render_body(&body(notification, data, tweaks), true, MAX_PAYLOAD)
        .expect("builds")
        .expect("something to send")
}

#[test]
fn every_event_kind() {
    let cases = [
        (
            json!({}),
            r#"{"aps":{"alert":{"loc-args":["Alice","Tea","hi"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"room_name": null}),
            r#"{"aps":{"alert":{"loc-args":["Alice","hi"],"loc-key":"MSG_FROM_USER_WITH_CONTENT"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"room_name": null, "room_alias": "#tea:x", "sender_display_name": null}),
            r##"{"aps":{"alert":{"loc-args":["@alice:x","#tea:x","hi"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"},"badge":2},"event_id":"$e","room_id":"!r:x"}"##,
        ),
        (
            json!({"room_name": null, "sender_display_name": null, "sender": null, "content": {"msgtype": "m.text"}}),
            r#"{"aps":{"alert":{"loc-args":[" "],"loc-key":"MSG_FROM_USER"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"content": {"msgtype": "m.image", "body": "cat.png"}}),
            r#"{"aps":{"alert":{"loc-args":["Alice","cat.png","Tea"],"loc-key":"IMAGE_FROM_USER_IN_ROOM"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"content": {"msgtype": "m.image"}, "room_name": null}),
            r#"{"aps":{"alert":{"loc-args":["Alice",""],"loc-key":"IMAGE_FROM_USER"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"content": {"msgtype": "m.emote", "body": "waves"}}),
            r#"{"aps":{"alert":{"loc-args":["Tea","Alice","waves"],"loc-key":"ACTION_FROM_USER_IN_ROOM"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"content": {"msgtype": "m.emote"}, "room_name": null}),
            r#"{"aps":{"alert":{"loc-args":["Alice",""],"loc-key":"ACTION_FROM_USER"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"content": {"msgtype": "m.file", "body": "cv.pdf"}}),
            r#"{"aps":{"alert":{"loc-args":["Alice","Tea","cv.pdf"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        // A msgtype of any value (even null) lets the body show; an empty or
        // non-string body is not shown; a body without msgtype is not shown.
        (
            json!({"content": {"msgtype": null, "body": "hi"}}),
            r#"{"aps":{"alert":{"loc-args":["Alice","Tea","hi"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"content": {"msgtype": 7, "body": ""}}),
            r#"{"aps":{"alert":{"loc-args":["Alice","Tea"],"loc-key":"MSG_FROM_USER_IN_ROOM"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"content": {"msgtype": "m.text", "body": ["hi"]}}),
            r#"{"aps":{"alert":{"loc-args":["Alice","Tea"],"loc-key":"MSG_FROM_USER_IN_ROOM"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"content": {"body": "hi"}}),
            r#"{"aps":{"alert":{"loc-args":["Alice","Tea"],"loc-key":"MSG_FROM_USER_IN_ROOM"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"type": "m.room.encrypted", "content": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "xyz"}}),
            r#"{"aps":{"alert":{"loc-args":["Alice","Tea"],"loc-key":"MSG_FROM_USER_IN_ROOM"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"type": "m.room.encrypted", "content": {"msgtype": "m.text", "body": "clear"}}),
            r#"{"aps":{"alert":{"loc-args":["Alice","Tea","clear"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"type": "m.call.invite", "content": {"offer": {"sdp": "v=0\r\nm=audio 9 UDP\r\nm=video 9 UDP\r\n"}}}),
            r#"{"aps":{"alert":{"loc-args":["Alice"],"loc-key":"VIDEO_CALL_FROM_USER"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"type": "m.call.invite", "content": {"offer": {"sdp": "v=0\r\nm=audio 9 UDP\r\n"}}}),
            r#"{"aps":{"alert":{"loc-args":["Alice"],"loc-key":"VOICE_CALL_FROM_USER"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"type": "m.call.invite", "content": {"offer": "m=video"}}),
            r#"{"aps":{"alert":{"loc-args":["Alice"],"loc-key":"VOICE_CALL_FROM_USER"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"type": "m.room.member", "membership": "invite", "user_is_target": true, "content": {"membership": "invite"}}),
            r#"{"aps":{"alert":{"loc-args":["Alice","Tea"],"loc-key":"USER_INVITE_TO_NAMED_ROOM"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"type": "m.room.member", "membership": "invite", "user_is_target": true, "room_name": null}),
            r#"{"aps":{"alert":{"loc-args":["Alice"],"loc-key":"USER_INVITE_TO_CHAT"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"type": "m.sticker", "content": {"body": "a sticker"}}),
            r#"{"aps":{"alert":{"loc-args":["Alice"],"loc-key":"MSG_FROM_USER"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#,
        ),
        (
            json!({"room_id": null, "counts": {"unread": 1, "missed_calls": 2}}),
            r#"{"aps":{"alert":{"loc-args":["Alice","Tea","hi"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"},"badge":3},"event_id":"$e"}"#,
        ),
        (
            json!({"counts": {}}),
            r#"{"aps":{"alert":{"loc-args":["Alice","Tea","hi"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"}},"event_id":"$e","room_id":"!r:x"}"#,
        ),
    ];
    for (extra, expected) in cases {
        assert_eq!(
            bytes_of(message(extra.clone()), json!({}), json!({})),
            expected,
            "{extra}"
        );
    }
}

#[test]
fn badge_counts_not_sent() {
    let b = body(message(json!({})), json!({}), json!({}));
    assert_eq!(
        render_body(&b, false, MAX_PAYLOAD),
        Ok(Some(
            r#"{"aps":{"alert":{"loc-args":["Alice","Tea","hi"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"}},"event_id":"$e","room_id":"!r:x"}"#.into()
        ))
    );
}

#[test]
fn strings_are_escaped_as_serde_json_does() {
    let name = "q\"b\\s/n\nt\tr\rb\u{8}f\u{c}c\u{1}\u{1f}d\u{7f}é😀\u{2028}";
    let got = bytes_of(
        message(json!({"sender_display_name": name, "room_name": null})),
        json!({}),
        json!({"sound": "a\"b"}),
    );
    assert_eq!(
        got,
        "{\"aps\":{\"alert\":{\"loc-args\":[\"q\\\"b\\\\s/n\\nt\\tr\\rb\\bf\\fc\\u0001\\u001fd\u{7f}é😀\u{2028}\",\"hi\"],\"loc-key\":\"MSG_FROM_USER_WITH_CONTENT\"},\"badge\":2,\"sound\":\"a\\\"b\"},\"event_id\":\"$e\",\"room_id\":\"!r:x\"}"
    );
}

#[test]
fn content_read_as_sent_escapes_and_repeated_keys() {
    // The last of a repeated key wins; escapes in the content are decoded and re-escaped.
    let b = body(message(json!({})), json!({}), json!({})).replace(
        r#"{"body":"hi","msgtype":"m.text"}"#,
        r#"{"msgtype":"m.notice","body":"x","body":"a\u00e9\/\n\ud83d\ude00","msgtype":"m.emote"}"#,
    );
    assert_eq!(
        render_body(&b, true, MAX_PAYLOAD),
        Ok(Some(
            "{\"aps\":{\"alert\":{\"loc-args\":[\"Tea\",\"Alice\",\"aé/\\n😀\"],\"loc-key\":\"ACTION_FROM_USER_IN_ROOM\"},\"badge\":2},\"event_id\":\"$e\",\"room_id\":\"!r:x\"}".into()
        ))
    );
}

#[test]
fn sound_tweak() {
    let n = message(json!({}));
    assert_eq!(
        bytes_of(
            n.clone(),
            json!({}),
            json!({"sound": "default", "highlight": true})
        ),
        r#"{"aps":{"alert":{"loc-args":["Alice","Tea","hi"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"},"badge":2,"sound":"default"},"event_id":"$e","room_id":"!r:x"}"#
    );
    // Not a string: no sound.
    assert_eq!(
        bytes_of(n, json!({}), json!({"sound": true})),
        r#"{"aps":{"alert":{"loc-args":["Alice","Tea","hi"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#
    );
}

#[test]
fn default_payload_with_its_own_aps() {
    let data = json!({"default_payload": {
        "aps": {"mutable-content": 1, "alert": {"loc-key": "Notification"}, "badge": 9,
                "sound": "ding", "category": "MSG", "thread-id": "t"},
        "extra": "x", "Z": [1, 2.5, -3, 1.0, 1e20, null, true, {"b": {}, "a": []}],
        "event_id": "theirs", "room_id": "theirs", "zz": "z"
    }});
    // Ours win over theirs: alert, badge, sound, event_id, room_id.
    assert_eq!(
        bytes_of(
            message(json!({})),
            data.clone(),
            json!({"sound": "default"})
        ),
        r#"{"Z":[1,2.5,-3,1.0,1e+20,null,true,{"a":[],"b":{}}],"aps":{"alert":{"loc-args":["Alice","Tea","hi"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"},"badge":2,"category":"MSG","mutable-content":1,"sound":"default","thread-id":"t"},"event_id":"$e","extra":"x","room_id":"!r:x","zz":"z"}"#
    );
    // Where we set nothing, theirs stay: no badge counts, no sound tweak, no room id.
    let b = body(message(json!({"room_id": null})), data.clone(), json!({}));
    assert_eq!(
        render_body(&b, false, MAX_PAYLOAD),
        Ok(Some(
            r#"{"Z":[1,2.5,-3,1.0,1e+20,null,true,{"a":[],"b":{}}],"aps":{"alert":{"loc-args":["Alice","Tea","hi"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"},"badge":9,"category":"MSG","mutable-content":1,"sound":"ding","thread-id":"t"},"event_id":"$e","extra":"x","room_id":"theirs","zz":"z"}"#.into()
        ))
    );
    // A membership change (no alert): theirs plus our badge; no ids, no sound.
    assert_eq!(
        bytes_of(
            message(json!({"type": "m.room.member", "membership": "join"})),
            data,
            json!({"sound": "default"})
        ),
        r#"{"Z":[1,2.5,-3,1.0,1e+20,null,true,{"a":[],"b":{}}],"aps":{"alert":{"loc-key":"Notification"},"badge":2,"category":"MSG","mutable-content":1,"sound":"ding","thread-id":"t"},"event_id":"theirs","extra":"x","room_id":"theirs","zz":"z"}"#
    );
}

#[test]
fn default_payload_without_aps_or_with_an_odd_one() {
    let n = message(json!({}));
    assert_eq!(
        bytes_of(
            n.clone(),
            json!({"default_payload": {"b": 1, "a\"\n": "é"}}),
            json!({})
        ),
        r#"{"a\"\n":"é","aps":{"alert":{"loc-args":["Alice","Tea","hi"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"},"badge":2},"b":1,"event_id":"$e","room_id":"!r:x"}"#
    );
    // An `aps` that is not an object is replaced by ours.
    assert_eq!(
        bytes_of(
            n.clone(),
            json!({"default_payload": {"aps": [1], "b": 1}}),
            json!({})
        ),
        r#"{"aps":{"alert":{"loc-args":["Alice","Tea","hi"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"},"badge":2},"b":1,"event_id":"$e","room_id":"!r:x"}"#
    );
    // An empty default payload, and a null one, are none.
    for data in [
        json!({"default_payload": {}}),
        json!({"default_payload": null}),
    ] {
        assert_eq!(
            bytes_of(n.clone(), data, json!({})),
            r#"{"aps":{"alert":{"loc-args":["Alice","Tea","hi"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#
        );
    }
    // Not an object: refused.
    for bad in [json!([1]), json!("x"), json!(1)] {
        let b = body(n.clone(), json!({ "default_payload": bad }), json!({}));
        assert_eq!(
            render_body(&b, true, MAX_PAYLOAD),
            Err(PayloadError::BadDefaultPayload)
        );
    }
}

#[test]
fn event_id_only() {
    let n =
        json!({"event_id": "$e", "room_id": "!r:x", "counts": {"unread": 0, "missed_calls": 1}});
    assert_eq!(
        bytes_of(
            n.clone(),
            json!({"format": "event_id_only"}),
            json!({"sound": "default"})
        ),
        r#"{"event_id":"$e","missed_calls":1,"room_id":"!r:x","unread_count":0}"#
    );
    let b = body(n.clone(), json!({}), json!({}));
    assert_eq!(
        render_body(&b, false, MAX_PAYLOAD),
        Ok(Some(r#"{"event_id":"$e","room_id":"!r:x"}"#.into()))
    );
    assert_eq!(
        bytes_of(
            json!({"event_id": "$e", "counts": {"unread": 5}}),
            json!({}),
            json!({})
        ),
        r#"{"event_id":"$e","unread_count":5}"#
    );
    // Element iOS: its default payload, with its `aps`, kept as it is.
    assert_eq!(
        bytes_of(
            n.clone(),
            json!({"format": "event_id_only", "default_payload": {"aps": {"mutable-content": 1, "alert": {"loc-key": "Notification", "loc-args": []}}}}),
            json!({})
        ),
        r#"{"aps":{"alert":{"loc-args":[],"loc-key":"Notification"},"mutable-content":1},"event_id":"$e","missed_calls":1,"room_id":"!r:x","unread_count":0}"#
    );
    // Ours win over theirs; an odd `aps` stays.
    assert_eq!(
        bytes_of(
            n,
            json!({"default_payload": {"aps": 5, "event_id": "theirs", "unread_count": "x", "Z": 1, "zz": {"k": 2}}}),
            json!({})
        ),
        r#"{"Z":1,"aps":5,"event_id":"$e","missed_calls":1,"room_id":"!r:x","unread_count":0,"zz":{"k":2}}"#
    );
}

#[test]
fn badge_only_and_nothing_to_send() {
    let n = json!({"counts": {"unread": 4, "missed_calls": 1}});
    // A default payload plays no part in a badge-only push.
    assert_eq!(
        bytes_of(
            n.clone(),
            json!({"default_payload": {"aps": {"mutable-content": 1}, "x": 1}}),
            json!({"sound": "default"})
        ),
        r#"{"aps":{"badge":5}}"#
    );
    assert_eq!(
        bytes_of(
            json!({"counts": {"unread": 0}, "sender": ""}),
            json!({}),
            json!({})
        ),
        r#"{"aps":{"badge":0}}"#
    );
    let b = body(n, json!({}), json!({}));
    assert_eq!(render_body(&b, false, MAX_PAYLOAD), Ok(None));
    let b = body(json!({"counts": {}}), json!({}), json!({}));
    assert_eq!(render_body(&b, true, MAX_PAYLOAD), Ok(None));
    // A membership change with no counts: nothing.
    let b = body(
        message(json!({"type": "m.room.member", "membership": "leave", "counts": {}})),
        json!({}),
        json!({}),
    );
    assert_eq!(render_body(&b, true, MAX_PAYLOAD), Ok(None));
    // With counts: a badge update.
    assert_eq!(
        bytes_of(
            message(
                json!({"type": "m.room.member", "membership": "invite", "user_is_target": false})
            ),
            json!({}),
            json!({"sound": "default"})
        ),
        r#"{"aps":{"badge":2}}"#
    );
}

#[test]
fn fields_are_cut_to_1024_characters() {
    let n = message(json!({
        "sender_display_name": "n".repeat(1100),
        "room_name": "é".repeat(1030),
        "content": {"msgtype": "m.text", "body": "b".repeat(2000)}
    }));
    let b = body(n, json!({}), json!({}));
    let expected = format!(
        r#"{{"aps":{{"alert":{{"loc-args":["{}","{}","{}"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"}},"badge":2}},"event_id":"$e","room_id":"!r:x"}}"#,
        "n".repeat(1024),
        "é".repeat(1024),
        "b".repeat(1024)
    );
    assert_eq!(render_body(&b, true, MAX_VOIP_PAYLOAD), Ok(Some(expected)));
}

/// A message whose room name and body are long, cut to `limit`: the loc-args
/// it ends with.
fn cut_args(room: &str, body: &str, limit: usize) -> Result<Option<Vec<String>>, PayloadError> {
    let n = message(json!({"room_name": room, "content": {"msgtype": "m.text", "body": body}}));
    let out = render_body(&body_of(n), true, limit)?;
    Ok(out.map(|s| {
        let v: Value = serde_json::from_str(&s).expect("JSON");
        let prefix = r#"{"aps":{"alert":{"loc-args":["#;
        let suffix = r#"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"},"badge":2},"event_id":"$e","room_id":"!r:x"}"#;
        assert!(s.starts_with(prefix) && s.ends_with(suffix), "{s}");
        assert!(s.len() <= limit);
        v["aps"]["alert"]["loc-args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("a string").to_owned())
            .collect()
    }))
}

fn body_of(n: Value) -> String {
    body(n, json!({}), json!({}))
}

#[test]
fn long_fields_are_cut_longest_first_on_character_boundaries() {
    // (room unit, body unit, limit, characters kept of the sender, room and body)
    let cases = [
        ("Ω", "😀", MAX_PAYLOAD, (5, 990, 495)),
        ("Ω", "漢", MAX_PAYLOAD, (5, 990, 660)),
        ("Ω", "é", 1000, (5, 216, 216)),
        ("a", "a", 300, (5, 82, 82)),
        ("\"", "\"", MAX_PAYLOAD, (5, 956, 956)),
        ("\u{1}", "é", MAX_PAYLOAD, (0, 0, 0)),
        ("Ω", "😀", MAX_VOIP_PAYLOAD, (5, 1024, 734)),
    ];
    for (room_unit, body_unit, limit, kept) in cases {
        let args = cut_args(&room_unit.repeat(1024), &body_unit.repeat(1024), limit)
            .expect("fits")
            .expect("some");
        assert_eq!(
            args,
            [
                "Alice"[..kept.0].to_owned(),
                room_unit.repeat(kept.1),
                body_unit.repeat(kept.2)
            ],
            "{room_unit} {body_unit} {limit}"
        );
    }
}

#[test]
fn voip_pushes_have_a_larger_limit() {
    // 4,700 bytes: fits 5 KiB untouched, is cut for 4 KiB.
    let room = "Ω".repeat(1024);
    let body = "漢".repeat(800);
    let args = cut_args(&room, &body, MAX_VOIP_PAYLOAD)
        .expect("fits")
        .expect("some");
    assert_eq!(args, ["Alice".to_owned(), room.clone(), body.clone()]);
    let args = cut_args(&room, &body, MAX_PAYLOAD)
        .expect("fits")
        .expect("some");
    assert_eq!(
        args,
        ["Alice".to_owned(), "Ω".repeat(990), "漢".repeat(660)]
    );
}

#[test]
fn what_cannot_be_shortened_is_refused() {
    let pad = json!({"default_payload": {"pad": "x".repeat(5000)}});
    // No alert to shorten: event_id_only, a membership badge update.
    let b = body(
        json!({"event_id": "$e", "counts": {"unread": 1}}),
        pad.clone(),
        json!({}),
    );
    assert_eq!(
        render_body(&b, true, MAX_PAYLOAD),
        Err(PayloadError::TooLarge(5043, 4096))
    );
    let b = body(
        message(json!({"type": "m.room.member", "membership": "join"})),
        pad.clone(),
        json!({}),
    );
    assert_eq!(
        render_body(&b, true, MAX_PAYLOAD),
        Err(PayloadError::TooLarge(5028, 4096))
    );
    // An alert: its args are cut to nothing first, then it is refused with the size then.
    let b = body(message(json!({})), pad, json!({}));
    assert_eq!(
        render_body(&b, true, MAX_PAYLOAD),
        Err(PayloadError::TooLarge(5140, 4096))
    );
    assert_eq!(
        render_body(&b, true, MAX_VOIP_PAYLOAD),
        Err(PayloadError::TooLarge(5140, 5120))
    );
    // 5 bytes too many: every arg above one byte is cut to one.
    let pad = "x".repeat(4975);
    let b = body(
        message(json!({})),
        json!({"default_payload": {"pad": pad}}),
        json!({}),
    );
    assert_eq!(
        render_body(&b, true, MAX_VOIP_PAYLOAD),
        Ok(Some(format!(
            r#"{{"aps":{{"alert":{{"loc-args":["A","T","h"],"loc-key":"MSG_FROM_USER_IN_ROOM_WITH_CONTENT"}},"badge":2}},"event_id":"$e","pad":"{pad}","room_id":"!r:x"}}"#
        )))
    );
    assert_eq!(
        PayloadError::TooLarge(5100, 4096).to_string(),
        "the payload is 5100 bytes and nothing in it can be shortened to fit Apple's 4096-byte limit"
    );
}

#[test]
fn an_alert_in_the_default_payload_is_shortened_when_it_is_the_only_one() {
    // event_id_only keeps the default payload's `aps.alert`: its string loc-args are cut.
    let data = json!({"default_payload": {"aps": {"alert": {"loc-args": ["x".repeat(3000), 7, "é".repeat(1000)]}}}});
    let b = body(
        json!({"event_id": "$e", "counts": {"unread": 1}}),
        data.clone(),
        json!({}),
    );
    let out = render_body(&b, true, MAX_PAYLOAD)
        .expect("fits")
        .expect("some");
    let expected = format!(
        r#"{{"aps":{{"alert":{{"loc-args":["{}",7,"{}"]}}}},"event_id":"$e","unread_count":1}}"#,
        "x".repeat(2023),
        "é".repeat(1000)
    );
    assert_eq!(out, expected);
    let b = body(
        json!({"event_id": "$e", "counts": {"unread": 1}}),
        json!({"default_payload": {"aps": {"alert": {"loc-args": [7], "x": "y".repeat(5000)}}}}),
        json!({}),
    );
    assert_eq!(
        render_body(&b, true, MAX_PAYLOAD),
        Err(PayloadError::TooLarge(5074, 4096))
    );
}

#[test]
fn maps_iterate_in_key_order() {
    // The writer merges our keys into a default payload's as it iterates:
    // that needs serde_json's default sorted `Map` (its `preserve_order`
    // feature off), which is also what made the order of these bytes.
    let mut m = Map::new();
    for k in ["b", "aps", "A", "a"] {
        m.insert(k.into(), Value::Null);
    }
    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
    assert_eq!(keys, ["A", "a", "aps", "b"]);
}
