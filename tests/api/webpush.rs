//! Web Push end to end: the gateway encrypts and signs, the fake push service
//! (testkit, independent RFC 8291 decryption and VAPID verification) checks and records.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::webpush::{Behaviour, FakeWebPush, Subscription};

use crate::helpers::{spawn, TestGateway};

pub const WEB_APP: &str = "apps:
  org.example.web:
    type: webpush
    vapid_private_key: {vapid}
    vapid_contact_email: ops@example.org
    allow_private_endpoints: true
    allow_http_endpoints: true
";

pub fn device(endpoint: &str, sub: &Subscription, extra_data: Value) -> Value {
    let mut data = json!({"endpoint": endpoint, "auth": sub.auth()});
    if let Value::Object(extra) = extra_data {
        for (k, v) in extra {
            data[k] = v;
        }
    }
    json!({"app_id": "org.example.web", "pushkey": sub.p256dh(), "pushkey_ts": 1_700_000_000, "data": data})
}

fn message(devices: Vec<Value>) -> Value {
    json!({"notification": {
        "event_id": "$ev1", "id": "$ev1", "room_id": "!room:example.org", "type": "m.room.message",
        "sender": "@alice:example.org", "sender_display_name": "Alice", "room_name": "Tea",
        "prio": "high", "counts": {"unread": 2, "missed_calls": 0},
        "content": {"msgtype": "m.text", "body": "hello", "formatted_body": "<b>hello</b>"},
        "devices": devices
    }})
}

async fn setup() -> (TestGateway, FakeWebPush) {
    let gw = spawn(WEB_APP).await;
    let fake = FakeWebPush::start().await;
    let pem = std::fs::read_to_string(gw.dir.path().join("vapid.pem")).expect("key");
    let key = pushgate::keys::parse_p256_key(&pem).expect("vapid key");
    fake.expect_vapid_key(&pushgate::pushkin::webpush::vapid::public_key_b64(&key));
    (gw, fake)
}

#[tokio::test]
async fn full_message_is_encrypted_signed_and_exact() {
    let (gw, fake) = setup().await;
    let (endpoint, sub) = fake.subscribe("alice");
    let a = gw
        .notify(&message(vec![device(&endpoint, &sub, json!({}))]))
        .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));

    let got = fake.received();
    assert_eq!(got.len(), 1);
    let push = &got[0];
    assert_eq!(push.answered, 201);
    assert_eq!(
        push.payload.as_ref().expect("decrypted"),
        &json!({
            "event_id": "$ev1", "room_id": "!room:example.org", "type": "m.room.message",
            "sender": "@alice:example.org", "sender_display_name": "Alice", "room_name": "Tea",
            "unread": 2, "missed_calls": 0, "content": {"msgtype": "m.text", "body": "hello"}
        })
    );
    let vapid = push.vapid.as_ref().expect("VAPID verified");
    assert_eq!(vapid.aud, fake.origin());
    assert_eq!(vapid.sub, "mailto:ops@example.org");
    assert_eq!(push.header("content-encoding"), Some("aes128gcm"));
    assert_eq!(push.header("ttl"), Some("900"));
    assert_eq!(push.header("urgency"), Some("normal"));
    assert_eq!(push.header("topic"), None);
}

#[tokio::test]
async fn event_id_only_and_badge_only_payloads() {
    let (gw, fake) = setup().await;
    let (endpoint, sub) = fake.subscribe("bob");
    let dev = device(&endpoint, &sub, json!({"format": "event_id_only"}));
    let body = json!({"notification": {"event_id": "$e2", "room_id": "!r:x", "counts": {"unread": 3}, "prio": "low", "devices": [dev.clone()]}});
    assert_eq!(gw.notify(&body).await.status, 200);
    // Synapse's badge-only push after a read receipt.
    let badge = json!({"notification": {"id": "", "sender": "", "type": null, "counts": {"unread": 1, "missed_calls": 4}, "devices": [dev]}});
    assert_eq!(gw.notify(&badge).await.status, 200);

    let got = fake.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(
        got[0].payload.as_ref().expect("p"),
        &json!({"event_id": "$e2", "room_id": "!r:x", "unread": 3})
    );
    assert_eq!(got[0].header("urgency"), Some("low"));
    assert_eq!(
        got[1].payload.as_ref().expect("p"),
        &json!({"unread": 1, "missed_calls": 4})
    );
}

#[tokio::test]
async fn default_payload_events_only_topic_and_call_urgency() {
    let (gw, fake) = setup().await;
    let (endpoint, sub) = fake.subscribe("carol");
    let dev = device(
        &endpoint,
        &sub,
        json!({"default_payload": {"app": "web", "room_id": "overwritten"}, "events_only": true, "only_last_per_room": true}),
    );
    let call = json!({"notification": {"event_id": "$c", "room_id": "!room:example.org", "type": "m.call.invite",
        "sender": "@d:x", "content": {"call_id": "1"}, "devices": [dev.clone()]}});
    assert_eq!(gw.notify(&call).await.body, json!({"rejected": []}));
    // events_only: a badge-only push is answered without sending anything.
    let badge = json!({"notification": {"counts": {"unread": 1}, "devices": [dev.clone()]}});
    assert_eq!(gw.notify(&badge).await.body, json!({"rejected": []}));
    let other_room = json!({"notification": {"event_id": "$d", "room_id": "!other:example.org", "devices": [dev]}});
    assert_eq!(gw.notify(&other_room).await.status, 200);

    let got = fake.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 2, "the badge-only push must not be sent");
    assert_eq!(
        got[0].payload.as_ref().expect("p"),
        &json!({"app": "web", "room_id": "!room:example.org", "event_id": "$c", "type": "m.call.invite",
                "sender": "@d:x", "content": {"call_id": "1"}})
    );
    assert_eq!(got[0].header("urgency"), Some("high"));
    let (t1, t2) = (
        got[0].header("topic").expect("topic"),
        got[1].header("topic").expect("topic"),
    );
    assert_eq!(t1.len(), 32);
    assert!(
        t1.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{t1}"
    );
    assert_ne!(t1, t2, "topics differ per room");
}

#[tokio::test]
async fn incomplete_subscriptions_are_rejected_without_upstream_and_a_bad_default_payload_is_ignored(
) {
    let (gw, fake) = setup().await;
    let (endpoint, sub) = fake.subscribe("dave");
    let bad_default = device(&endpoint, &sub, json!({"default_payload": "not an object"}));
    let mut no_auth = device(&endpoint, &sub, json!({}));
    no_auth["pushkey"] = json!("no-auth-key");
    no_auth["data"]
        .as_object_mut()
        .expect("data")
        .remove("auth");
    let mut bad_key = device(&endpoint, &sub, json!({}));
    bad_key["pushkey"] = json!("not-a-p256-key");
    let a = gw
        .notify(&message(vec![bad_default.clone(), no_auth, bad_key]))
        .await;
    // As the reference does, Web Push ignores a default_payload that is not an object.
    assert_eq!(
        (a.status, a.body),
        (200, json!({"rejected": ["no-auth-key", "not-a-p256-key"]}))
    );
    let received = fake.received();
    assert_eq!(
        received.len(),
        1,
        "only the pusher with a bad default_payload"
    );
    assert_eq!(received[0].name, "dave");
}

#[tokio::test]
async fn upstream_status_mapping() {
    let (gw, fake) = setup().await;
    let mut devices = Vec::new();
    let mut keys = Vec::new();
    for (name, status) in [("gone", 410), ("notfound", 404), ("big", 413), ("bad", 400)] {
        let (endpoint, sub) = fake.subscribe(name);
        fake.set_behaviour(name, Behaviour::Status(status));
        keys.push(sub.p256dh());
        devices.push(device(&endpoint, &sub, json!({})));
    }
    let a = gw.notify(&message(devices)).await;
    // 404/410: dead subscription → rejected; 413/400: this push failed, the pushkey stays.
    assert_eq!(
        (a.status, a.body),
        (200, json!({"rejected": [keys[0], keys[1]]}))
    );
    assert_eq!(fake.received().len(), 4);
}

#[tokio::test]
async fn mixed_outcomes_temporary_failure_keeps_rejections() {
    let (gw, fake) = setup().await;
    let (e1, s1) = fake.subscribe("ok");
    let (e2, s2) = fake.subscribe("dead");
    let (e3, s3) = fake.subscribe("busy");
    fake.set_behaviour("dead", Behaviour::Status(410));
    fake.set_behaviour("busy", Behaviour::Status(503));
    // Order: temporary, delivered, rejected.
    let a = gw
        .notify(&message(vec![
            device(&e3, &s3, json!({})),
            device(&e1, &s1, json!({})),
            device(&e2, &s2, json!({})),
        ]))
        .await;
    assert_eq!(a.status, 502);
    assert_eq!(
        a.body,
        json!({"errcode": "M_UNKNOWN", "error": "1 device(s) failed temporarily; retry later", "rejected": [s2.p256dh()]})
    );
    assert_eq!(fake.received().len(), 3);

    fake.set_behaviour("busy", Behaviour::Status(429));
    let a = gw.notify(&message(vec![device(&e3, &s3, json!({}))])).await;
    assert_eq!(a.status, 502);
}

#[tokio::test]
async fn devices_are_sent_in_parallel() {
    let (gw, fake) = setup().await;
    let mut devices = Vec::new();
    for i in 0..20 {
        let name = format!("slow{i}");
        let (endpoint, sub) = fake.subscribe(&name);
        fake.set_behaviour(&name, Behaviour::Delay(Duration::from_millis(1000), 201));
        devices.push(device(&endpoint, &sub, json!({})));
    }
    let started = Instant::now();
    let a = gw.notify(&message(devices)).await;
    let took = started.elapsed();
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(fake.received().len(), 20);
    // In series this takes 20 s; in parallel about one delay.
    assert!(took < Duration::from_secs(5), "20 devices took {took:?}");
}

#[tokio::test]
async fn stalled_upstream_times_out_as_temporary() {
    let gw = spawn(&format!("{WEB_APP}dispatch:\n  upstream_timeout: 500ms\n")).await;
    let fake = FakeWebPush::start().await;
    let (endpoint, sub) = fake.subscribe("stall");
    fake.set_behaviour("stall", Behaviour::Stall);
    let started = Instant::now();
    let a = gw
        .notify(&message(vec![device(&endpoint, &sub, json!({}))]))
        .await;
    assert_eq!(a.status, 502);
    assert_eq!(a.body["rejected"], json!([]));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn vapid_token_is_reused_across_pushes() {
    let (gw, fake) = setup().await;
    let (endpoint, sub) = fake.subscribe("erin");
    for _ in 0..3 {
        assert_eq!(
            gw.notify(&message(vec![device(&endpoint, &sub, json!({}))]))
                .await
                .status,
            200
        );
    }
    let got = fake.received();
    let auths: Vec<_> = got
        .iter()
        .map(|p| p.header("authorization").expect("auth").to_owned())
        .collect();
    assert_eq!(auths.len(), 3);
    assert!(
        auths.iter().all(|a| a == &auths[0]),
        "one JWT per origin, reused"
    );
}

#[tokio::test]
async fn long_body_is_cut_and_record_fits_4096() {
    let (gw, fake) = setup().await;
    let (endpoint, sub) = fake.subscribe("frank");
    let mut body = message(vec![device(
        &endpoint,
        &sub,
        json!({"default_payload": {"pad": "p".repeat(2500)}}),
    )]);
    body["notification"]["content"]["body"] = json!("日本語😀".repeat(400));
    assert_eq!(gw.notify(&body).await.status, 200);
    let got = fake.received();
    assert!(
        got[0].body_len <= 4096,
        "record is {} bytes",
        got[0].body_len
    );
    let text = got[0].payload.as_ref().expect("p")["content"]["body"]
        .as_str()
        .expect("body")
        .to_owned();
    let full: String = "日本語😀".repeat(400);
    assert!(
        full.starts_with(&text) && !text.is_empty() && text.chars().count() < 1000,
        "{} chars",
        text.chars().count()
    );
}

#[tokio::test]
async fn max_connections_bounds_concurrent_upstream_requests() {
    let gw = spawn(&format!("{WEB_APP}    max_connections: 2\n")).await;
    let fake = FakeWebPush::start().await;
    let mut devices = Vec::new();
    for i in 0..6 {
        let name = format!("s{i}");
        let (endpoint, sub) = fake.subscribe(&name);
        fake.set_behaviour(&name, Behaviour::Delay(Duration::from_millis(400), 201));
        devices.push(device(&endpoint, &sub, json!({})));
    }
    let started = Instant::now();
    let a = gw.notify(&message(devices)).await;
    let took = started.elapsed();
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    // Six 400 ms requests, two at a time: three waves, never fewer.
    assert!(took >= Duration::from_millis(1200), "took {took:?}");
}

/// Concurrency is limited per endpoint origin, not per app: endpoints that
/// hang (an attacker's, or one broken push service) take only their own
/// origin's slots, and another origin's push goes out at once.
#[tokio::test]
async fn hanging_endpoints_do_not_delay_another_origin() {
    let yaml = "apps:
  org.example.web:
    type: webpush
    vapid_private_key: {vapid}
    vapid_contact_email: ops@example.org
    allow_private_endpoints: true
    allow_http_endpoints: true
    max_connections: 2
dispatch:
  upstream_timeout: 4s
";
    let gw = spawn(yaml).await;
    let slow = FakeWebPush::start().await;
    let fast = FakeWebPush::start().await;
    let mut devices = Vec::new();
    for i in 0..6 {
        let name = format!("hang{i}");
        let (endpoint, sub) = slow.subscribe(&name);
        slow.set_behaviour(&name, Behaviour::Stall);
        let mut d = device(&endpoint, &sub, json!({}));
        d["pushkey"] = json!(sub.p256dh());
        devices.push(d);
    }
    let hanging = tokio::spawn({
        let body = message(devices);
        let client = gw.client.clone();
        let url = gw.url("/_matrix/push/v1/notify");
        async move { client.post(url).json(&body).send().await }
    });
    // The hanging pushes hold every slot of their origin (2 connections) once
    // they are upstream.
    assert_eq!(slow.wait_for(2, Duration::from_secs(10)).await.len(), 2);
    let (endpoint, sub) = fast.subscribe("quick");
    let started = Instant::now();
    let a = gw
        .notify(&message(vec![device(&endpoint, &sub, json!({}))]))
        .await;
    let took = started.elapsed();
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(fast.received().len(), 1);
    assert!(
        took < Duration::from_secs(1),
        "another origin's push waited {took:?} behind hanging endpoints"
    );
    // The hanging request ends with a temporary failure (502 without a store).
    let hung = hanging.await.expect("task").expect("answer");
    assert_eq!(hung.status().as_u16(), 502);
}
