//! APNs end to end: the gateway's real HTTP/2 + TLS client against the fake
//! APNs (testkit), which verifies the provider JWT or client certificate.

use std::time::Duration;

use base64::Engine;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{json, Value};
use testkit::apns::{ApnsAuth, ApnsBehaviour, FakeApns};
use testkit::tls::TestCa;

use crate::helpers::{spawn, TestGateway};

const KEY_ID: &str = "KEYID12345";
const TEAM_ID: &str = "TEAM123456";

struct Setup {
    gw: TestGateway,
    fake: FakeApns,
    _dir: tempfile::TempDir,
}

/// A gateway with one token-auth APNs app (`com.example.ios`) pointed at a fake APNs.
async fn token_auth(extra: &str) -> Setup {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new();
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let p8 = p256::SecretKey::from(key.clone())
        .to_pkcs8_pem(LineEnding::LF)
        .expect("pem");
    std::fs::write(dir.path().join("key.p8"), p8.as_bytes()).expect("p8");
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("ca");
    let fake = FakeApns::start(
        &ca,
        ApnsAuth::Token {
            key: *key.verifying_key(),
            key_id: KEY_ID.into(),
            team_id: TEAM_ID.into(),
        },
    )
    .await;
    let d = dir.path().display();
    let gw = spawn(&format!(
        "apps:\n  com.example.ios:\n    type: apns\n    keyfile: {d}/key.p8\n    key_id: {KEY_ID}\n    team_id: {TEAM_ID}\n    topic: com.example.app\n    push_type: alert\n    endpoint: {}\n    ca_file: {d}/ca.pem\n{extra}",
        fake.url()
    ))
    .await;
    Setup {
        gw,
        fake,
        _dir: dir,
    }
}

/// A pushkey as iOS apps register it: the device token bytes in base64; and its hex form.
fn pushkey(i: u8) -> (String, String) {
    let bytes = [0xde, 0xad, 0xbe, 0xef, i];
    (
        base64::engine::general_purpose::STANDARD.encode(bytes),
        format!("deadbeef{i:02x}"),
    )
}

fn device(pushkey: &str, data: Value) -> Value {
    json!({"app_id": "com.example.ios", "pushkey": pushkey, "pushkey_ts": 1, "data": data, "tweaks": {"sound": "default"}})
}

fn message(devices: Vec<Value>) -> Value {
    json!({"notification": {
        "event_id": "$ev", "room_id": "!room:x", "type": "m.room.message", "sender": "@alice:x",
        "sender_display_name": "Alice", "room_name": "Tea", "prio": "high", "counts": {"unread": 2},
        "content": {"msgtype": "m.text", "body": "hello"}, "devices": devices
    }})
}

#[tokio::test]
async fn full_message_with_headers_and_verified_jwt() {
    let s = token_auth("").await;
    let (key, hex) = pushkey(1);
    let a =
        s.gw.notify(&message(vec![device(
            &key,
            json!({"default_payload": {"aps": {"mutable-content": 1}}}),
        )]))
        .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let reqs = s.fake.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.token, hex);
    assert_eq!(r.auth_error, None);
    assert_eq!(
        r.payload.as_ref().expect("json"),
        &json!({
            "aps": {"mutable-content": 1, "alert": {"loc-key": "MSG_FROM_USER_IN_ROOM_WITH_CONTENT", "loc-args": ["Alice", "Tea", "hello"]}, "badge": 2, "sound": "default"},
            "room_id": "!room:x", "event_id": "$ev"
        })
    );
    assert_eq!(r.header("apns-topic"), Some("com.example.app"));
    assert_eq!(r.header("apns-priority"), Some("10"));
    assert_eq!(r.header("apns-push-type"), Some("alert"));
    assert_eq!(r.header("apns-expiration"), None);
    assert_eq!(r.header("apns-collapse-id"), None);
    let id = r.header("apns-id").expect("apns-id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

#[tokio::test]
async fn event_id_only_and_badge_only_and_options() {
    let s = token_auth("    expiration: 3600\n    collapse_id_from_room: true\n").await;
    let (key, _) = pushkey(2);
    let default = json!({"aps": {"mutable-content": 1, "alert": {"loc-key": "Notification", "loc-args": []}}});
    let eio = json!({"notification": {"event_id": "$e", "room_id": "!r:x", "prio": "low", "counts": {"unread": 3},
        "devices": [device(&key, json!({"format": "event_id_only", "default_payload": default}))]}});
    assert_eq!(s.gw.notify(&eio).await.body, json!({"rejected": []}));
    let badge = json!({"notification": {"id": "", "sender": "", "type": null, "counts": {"unread": 0}, "devices": [device(&key, json!({}))]}});
    assert_eq!(s.gw.notify(&badge).await.body, json!({"rejected": []}));
    let reqs = s.fake.requests();
    assert_eq!(
        reqs[0].payload.as_ref().expect("json"),
        &json!({"aps": {"mutable-content": 1, "alert": {"loc-key": "Notification", "loc-args": []}}, "room_id": "!r:x", "event_id": "$e", "unread_count": 3})
    );
    assert_eq!(reqs[0].header("apns-priority"), Some("5"));
    assert_eq!(reqs[0].header("apns-collapse-id"), Some("!r:x"));
    let exp: u64 = reqs[0]
        .header("apns-expiration")
        .expect("exp")
        .parse()
        .expect("number");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("now")
        .as_secs();
    assert!((now + 3590..=now + 3610).contains(&exp), "{exp} vs {now}");
    assert_eq!(
        reqs[1].payload.as_ref().expect("json"),
        &json!({"aps": {"badge": 0}})
    );
}

#[tokio::test]
async fn dead_tokens_are_rejected_and_other_errors_are_not() {
    let s = token_auth("").await;
    let cases = [
        (ApnsBehaviour::Reason(400, "BadDeviceToken"), true),
        (ApnsBehaviour::Reason(400, "DeviceTokenNotForTopic"), true),
        (
            ApnsBehaviour::Unregistered {
                timestamp_ms: 1_700_000_000_000,
            },
            true,
        ),
        (ApnsBehaviour::Reason(400, "BadCollapseId"), false),
        (ApnsBehaviour::Reason(413, "PayloadTooLarge"), false),
    ];
    let mut devices = Vec::new();
    let mut expected = Vec::new();
    for (i, (behaviour, rejected)) in cases.into_iter().enumerate() {
        let (key, hex) = pushkey(10 + i as u8);
        s.fake.set(&hex, behaviour);
        if rejected {
            expected.push(key.clone());
        }
        devices.push(device(&key, json!({})));
    }
    // A pushkey that is not base64 is refused without asking Apple.
    devices.push(device("not base64!", json!({})));
    expected.push("not base64!".into());
    let a = s.gw.notify(&message(devices)).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": expected})));
    assert_eq!(s.fake.requests().len(), 5);
}

#[tokio::test]
async fn a_500_is_retried_and_a_persistent_429_is_temporary() {
    let s = token_auth("").await;
    let (flaky, flaky_hex) = pushkey(20);
    let (limited, limited_hex) = pushkey(21);
    s.fake.set(
        &flaky_hex,
        ApnsBehaviour::FailTimes {
            times: 1,
            status: 500,
            reason: "InternalServerError",
        },
    );
    let a = s.gw.notify(&message(vec![device(&flaky, json!({}))])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let statuses: Vec<u16> = s.fake.requests().iter().map(|r| r.answered).collect();
    assert_eq!(statuses, vec![500, 200]);

    s.fake
        .set(&limited_hex, ApnsBehaviour::Reason(429, "TooManyRequests"));
    let a =
        s.gw.notify(&message(vec![device(&limited, json!({}))]))
            .await;
    assert_eq!(a.status, 502);
    assert_eq!(
        s.fake
            .requests()
            .iter()
            .filter(|r| r.token == limited_hex)
            .count(),
        3,
        "three attempts, then give up"
    );
}

#[tokio::test]
async fn expired_provider_token_is_reminted_once() {
    let s = token_auth("").await;
    let (key, _) = pushkey(30);
    assert_eq!(
        s.gw.notify(&message(vec![device(&key, json!({}))]))
            .await
            .status,
        200
    );
    assert_eq!(
        s.gw.notify(&message(vec![device(&key, json!({}))]))
            .await
            .status,
        200
    );
    let first: Vec<_> = s
        .fake
        .requests()
        .iter()
        .filter_map(|r| r.jwt.clone())
        .collect();
    assert_eq!(first.len(), 2);
    assert_eq!(
        first[0], first[1],
        "one provider token reused, not one per push"
    );

    // Apple expires a token by its age (`iat`); signatures are deterministic (RFC 6979), so a
    // token minted in the same second would be the same token. Wait until the system clock
    // (which the gateway mints with) is past the second the first token was minted in.
    let minted = jwt_iat(&first[0]);
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        if now.as_secs() > minted {
            break;
        }
        let to_next_second = Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos()));
        tokio::time::sleep(to_next_second).await;
    }
    s.fake.expire_seen_jwts();
    let a = s.gw.notify(&message(vec![device(&key, json!({}))])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let reqs = s.fake.requests();
    assert_eq!(reqs.len(), 4);
    assert_eq!(reqs[2].answered, 403);
    assert_eq!(reqs[3].answered, 200);
    assert_ne!(reqs[3].jwt, reqs[2].jwt, "a new token was minted");
    assert_eq!(reqs[3].auth_error, None);
}

/// The `iat` claim (seconds since the epoch) of a provider JWT.
fn jwt_iat(jwt: &str) -> u64 {
    let claims = jwt.split('.').nth(1).expect("claims part");
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .expect("base64url");
    let claims: Value = serde_json::from_slice(&claims).expect("JSON claims");
    claims["iat"].as_u64().expect("iat")
}

#[tokio::test]
async fn concurrent_pushes_share_one_connection_and_goaway_reconnects() {
    let s = token_auth("").await;
    let mut requests = Vec::new();
    for r in 0..4u8 {
        let devices: Vec<Value> = (0..25u8)
            .map(|i| device(&pushkey(r * 25 + i).0, json!({})))
            .collect();
        requests.push(message(devices));
    }
    let answers = futures::future::join_all(requests.iter().map(|b| s.gw.notify(b))).await;
    assert!(answers
        .iter()
        .all(|a| a.status == 200 && a.body == json!({"rejected": []})));
    assert_eq!(s.fake.requests().len(), 100);
    assert_eq!(
        s.fake.connections(),
        1,
        "100 pushes multiplexed on one HTTP/2 connection"
    );

    let (bye, bye_hex) = pushkey(200);
    s.fake.set(&bye_hex, ApnsBehaviour::GoAway);
    assert_eq!(
        s.gw.notify(&message(vec![device(&bye, json!({}))]))
            .await
            .status,
        200
    );
    assert_eq!(
        s.fake.wait_closed(1, Duration::from_secs(5)).await,
        1,
        "the fake closed the connection after GOAWAY"
    );
    // The next push finds the connection gone and opens another.
    let (next, _) = pushkey(201);
    assert_eq!(
        s.gw.notify(&message(vec![device(&next, json!({}))]))
            .await
            .body,
        json!({"rejected": []})
    );
    assert_eq!(s.fake.connections(), 2);
    assert_eq!(s.fake.requests().last().map(|r| r.connection), Some(1));
}

#[tokio::test]
async fn certificate_auth_with_a_client_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("ca");
    std::fs::write(
        dir.path().join("good.pem"),
        ca.client_cert("com.example.app").combined_pem(),
    )
    .expect("cert");
    std::fs::write(
        dir.path().join("stranger.pem"),
        TestCa::new().client_cert("x").combined_pem(),
    )
    .expect("cert");
    let fake = FakeApns::start(&ca, ApnsAuth::Certificate).await;
    let d = dir.path().display();
    let app = |id: &str, cert: &str| {
        format!("  {id}:\n    type: apns\n    certfile: {d}/{cert}\n    topic: com.example.app\n    endpoint: {}\n    ca_file: {d}/ca.pem\n", fake.url())
    };
    let gw = spawn(&format!(
        "apps:\n{}{}",
        app("good.ios", "good.pem"),
        app("stranger.ios", "stranger.pem")
    ))
    .await;
    let (key, hex) = pushkey(1);
    let mut body = message(vec![device(&key, json!({}))]);
    body["notification"]["devices"][0]["app_id"] = json!("good.ios");
    assert_eq!(gw.notify(&body).await.body, json!({"rejected": []}));
    let reqs = fake.requests();
    assert_eq!(
        (reqs.len(), reqs[0].token.as_str(), reqs[0].jwt.as_deref()),
        (1, hex.as_str(), None)
    );

    // A certificate the server does not trust fails the handshake: temporary, never rejected.
    body["notification"]["devices"][0]["app_id"] = json!("stranger.ios");
    let a = gw.notify(&body).await;
    assert_eq!((a.status, &a.body["rejected"]), (502, &json!([])));
    assert_eq!(fake.wait_for(2, Duration::from_millis(200)).await.len(), 1);
}

#[tokio::test]
async fn apns_goes_through_the_proxy_with_connect() {
    let proxy = testkit::proxy::FakeProxy::start().await;
    let s = token_auth(&format!("proxy: {}\n", proxy.url())).await;
    let (key, _) = pushkey(1);
    assert_eq!(
        s.gw.notify(&message(vec![device(&key, json!({}))]))
            .await
            .body,
        json!({"rejected": []})
    );
    let port = s.fake.url().rsplit(':').next().expect("port").to_owned();
    assert_eq!(
        proxy.requests(),
        vec![testkit::proxy::ProxiedRequest {
            method: "CONNECT".into(),
            target: format!("localhost:{port}")
        }]
    );
    assert_eq!(s.fake.requests().len(), 1);
}

#[tokio::test]
async fn a_stalled_apns_is_a_temporary_failure_within_the_budget() {
    let s = token_auth("dispatch:\n  upstream_timeout: 600ms\n").await;
    let (key, hex) = pushkey(1);
    s.fake.set(&hex, ApnsBehaviour::Stall);
    let started = std::time::Instant::now();
    let a = s.gw.notify(&message(vec![device(&key, json!({}))])).await;
    assert_eq!((a.status, &a.body["rejected"]), (502, &json!([])));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
