//! UnifiedPush end to end: the discovery answer on the notify URL, and pushes
//! to an ntfy-like fake (testkit, HTTPS with the test CA or plain HTTP) that
//! records every body and header and answers as each topic is told to.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::tls::TestCa;
use testkit::unifiedpush::{Behaviour, FakeUnifiedPush, MAX_MESSAGE};

use crate::helpers::{sample, spawn, TestGateway};

const APP: &str = "chat.example.up";
const METRICS: &str =
    "metrics:\n  prometheus:\n    enabled: true\n    address: 127.0.0.1\n    port: 0\n";

/// A UnifiedPush app reaching the fake on loopback over HTTPS (the test CA trusted); `extra` is
/// appended at the top level (store, dispatch, metrics).
async fn https_gateway(dir: &Path, ca: &TestCa, extra: &str) -> TestGateway {
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("ca");
    spawn(&format!(
        "apps:
  {APP}:
    type: unifiedpush
    allow_private_endpoints: true
    ca_file: '{}'
{extra}",
        ca_file.display()
    ))
    .await
}

/// A plain-HTTP UnifiedPush app with the given extra app keys; `root` is appended at the top level.
async fn http_gateway(app_keys: &str, root: &str) -> TestGateway {
    spawn(&format!(
        "apps:
  {APP}:
    type: unifiedpush
    allow_http_endpoints: true
{app_keys}{root}"
    ))
    .await
}

fn sqlite(dir: &Path) -> String {
    format!(
        "store:\n  sqlite:\n    path: '{}'\n",
        dir.join("up.db").display()
    )
}

fn device(endpoint: &str) -> Value {
    json!({"app_id": APP, "pushkey": endpoint, "pushkey_ts": 1_700_000_000,
           "data": {"format": "full"}, "tweaks": {"sound": "default"}})
}

fn message(event_id: &str, devices: Vec<Value>) -> Value {
    json!({"notification": {
        "event_id": event_id, "id": event_id, "room_id": "!room:example.org",
        "type": "m.room.message", "sender": "@alice:example.org",
        "sender_display_name": "Alice", "room_name": "Tea", "prio": "high",
        "counts": {"unread": 2, "missed_calls": 0},
        "content": {"msgtype": "m.text", "body": "hello"},
        "devices": devices
    }})
}

/// What the Matrix client on the phone receives for `message(event_id, [device(endpoint)])`.
fn expected_body(event_id: &str, endpoint: &str) -> Value {
    json!({"notification": {
        "event_id": event_id, "room_id": "!room:example.org",
        "type": "m.room.message", "sender": "@alice:example.org",
        "sender_display_name": "Alice", "room_name": "Tea", "prio": "high",
        "counts": {"unread": 2, "missed_calls": 0},
        "content": {"msgtype": "m.text", "body": "hello"},
        "devices": [{"app_id": APP, "pushkey": endpoint, "pushkey_ts": 1_700_000_000,
                     "data": {"format": "full"}, "tweaks": {"sound": "default"}}]
    }})
}

fn failures(reason: &str) -> String {
    format!("pushgate_failures_total{{pushkin=\"{APP}\",reason=\"{reason}\"}}")
}

async fn metric(gw: &TestGateway, series: &str) -> Option<f64> {
    let (_, text) = gw.scrape().await;
    sample(&text, series)
}

#[tokio::test]
async fn discovery_answers_get_head_and_options() {
    let gw = spawn(crate::helpers::NO_APPS).await;
    for path in ["/_matrix/push/v1/notify", "/_matrix/push/v1/notify/"] {
        let a = gw.request("GET", path, "").await;
        assert_eq!(
            (a.status, &a.body),
            (200, &json!({"unifiedpush": {"gateway": "matrix"}})),
            "{path}"
        );
        assert_eq!(a.headers["content-type"], "application/json", "{path}");

        let a = gw.request("HEAD", path, "").await;
        assert_eq!((a.status, &a.body), (200, &Value::Null), "{path}");
        assert_eq!(a.headers["content-type"], "application/json", "{path}");

        let a = gw.request("OPTIONS", path, "").await;
        assert_eq!((a.status, &a.body), (204, &Value::Null), "{path}");
        assert_eq!(a.headers["allow"], "GET, HEAD, POST, OPTIONS", "{path}");

        let a = gw.request("DELETE", path, "").await;
        assert_eq!(a.status, 405, "{path}");
        assert_eq!(a.headers["allow"], "GET, HEAD, POST, OPTIONS", "{path}");
    }
    // POST is the Push Gateway API as before.
    let a = gw.request("POST", "/_matrix/push/v1/notify", "{}").await;
    assert_eq!(
        (a.status, a.body),
        (
            400,
            json!({"errcode": "M_BAD_JSON", "error": "notification: required, but missing"})
        )
    );
}

#[tokio::test]
async fn one_push_per_device_with_the_exact_body_and_headers() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new();
    let fake = FakeUnifiedPush::start_tls(&ca).await;
    let gw = https_gateway(dir.path(), &ca, METRICS).await;
    let (phone, tablet) = (fake.endpoint("upPhone"), fake.endpoint("upTablet"));
    assert!(phone.starts_with("https://localhost:"), "{phone}");

    let a = gw
        .notify(&message("$ev1", vec![device(&phone), device(&tablet)]))
        .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));

    let got = fake.received();
    assert_eq!(got.len(), 2, "one push per device");
    for (topic, endpoint) in [("upPhone", &phone), ("upTablet", &tablet)] {
        let pushes = fake.received_for(topic);
        assert_eq!(pushes.len(), 1, "{topic}");
        let p = &pushes[0];
        assert_eq!(p.method, "POST");
        assert_eq!(
            p.query.as_deref(),
            Some("up=1"),
            "the endpoint's query is kept"
        );
        assert_eq!(p.json(), expected_body("$ev1", endpoint), "{topic}");
        assert_eq!(p.header("content-type"), Some("application/json"));
        assert_eq!(p.header("ttl"), Some("86400"));
        assert_eq!(p.header("content-length"), Some(&*p.body.len().to_string()));
        assert_eq!(p.header("authorization"), None);
        assert_eq!(p.answered, 200);
    }
    for (series, want) in [
        (
            format!("pushgate_unifiedpush_status_codes_total{{code=\"200\",pushkin=\"{APP}\"}}"),
            2.0,
        ),
        ("pushgate_unifiedpush_request_time_count".to_owned(), 2.0),
        ("pushgate_active_unifiedpush_requests".to_owned(), 0.0),
        (
            format!("pushgate_outcomes_total{{outcome=\"delivered\",pushkin=\"{APP}\"}}"),
            2.0,
        ),
        (
            format!("sygnal_per_pushkin_type_total{{pushkin=\"{APP}\"}}"),
            2.0,
        ),
    ] {
        assert_eq!(metric(&gw, &series).await, Some(want), "{series}");
    }
}

#[tokio::test]
async fn dead_endpoints_are_rejected_and_remembered() {
    let dir = tempfile::tempdir().expect("dir");
    let fake = FakeUnifiedPush::start().await;
    let gw = http_gateway("    allow_private_endpoints: true\n", &sqlite(dir.path())).await;
    fake.set_behaviour("gone404", Behaviour::Status(404));
    fake.set_behaviour("gone410", Behaviour::Status(410));
    let (e404, e410, alive) = (
        fake.endpoint("gone404"),
        fake.endpoint("gone410"),
        fake.endpoint("alive"),
    );
    let devices = vec![device(&e404), device(&e410), device(&alive)];

    let a = gw.notify(&message("$1", devices.clone())).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": [e404, e410]})));
    assert_eq!(fake.received().len(), 3);

    // Next time: answered from memory, the dead endpoints are not asked again.
    let a = gw.notify(&message("$2", devices)).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": [e404, e410]})));
    assert_eq!(fake.received_for("gone404").len(), 1);
    assert_eq!(fake.received_for("gone410").len(), 1);
    assert_eq!(fake.received_for("alive").len(), 2);
}

#[tokio::test]
async fn server_errors_are_queued_and_delivered_by_the_outbox() {
    let dir = tempfile::tempdir().expect("dir");
    let fake = FakeUnifiedPush::start().await;
    let root = format!(
        "{}dispatch:\n  answer_within: 1s\n  retry_initial_delay: 100ms\n  retry_max_delay: 300ms\n",
        sqlite(dir.path())
    );
    let gw = http_gateway("    allow_private_endpoints: true\n", &root).await;
    fake.script(
        "busy",
        vec![
            Behaviour::Status(503),
            Behaviour::RetryAfter(429, "1".into()),
        ],
    );
    let endpoint = fake.endpoint("busy");

    let a = gw.notify(&message("$later", vec![device(&endpoint)])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));

    let got = fake.wait_for(3, Duration::from_secs(15)).await;
    let answered: Vec<u16> = got.iter().map(|p| p.answered).collect();
    assert_eq!(answered, vec![503, 429, 200], "queued, retried, delivered");
    for p in &got {
        assert_eq!(p.json(), expected_body("$later", &endpoint));
    }
}

#[tokio::test]
async fn without_a_store_a_stalled_server_is_a_502() {
    let fake = FakeUnifiedPush::start().await;
    let gw = http_gateway(
        "    allow_private_endpoints: true\n",
        "dispatch:\n  upstream_timeout: 1s\n  answer_within: 3s\n",
    )
    .await;
    fake.set_behaviour("stall", Behaviour::Stall);
    let a = gw
        .notify(&message("$s", vec![device(&fake.endpoint("stall"))]))
        .await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.body["errcode"], "M_UNKNOWN");
    assert_eq!(fake.received().len(), 1);
}

#[tokio::test]
async fn oversized_notifications_are_shortened_below_4096_bytes() {
    let fake = FakeUnifiedPush::start().await;
    let gw = http_gateway("    allow_private_endpoints: true\n", METRICS).await;
    let endpoint = fake.endpoint("big");

    // Content alone is too large: it goes, everything else stays.
    let mut big = message("$big", vec![device(&endpoint)]);
    big["notification"]["content"]["body"] = json!("é".repeat(3000));
    let a = gw.notify(&big).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let mut want = expected_body("$big", &endpoint);
    want["notification"]
        .as_object_mut()
        .expect("object")
        .remove("content");

    // Content and a huge room name: both go, in that order; never split in two pushes.
    let mut bigger = message("$bigger", vec![device(&endpoint)]);
    bigger["notification"]["content"]["body"] = json!("x".repeat(5000));
    bigger["notification"]["room_name"] = json!("r".repeat(4000));
    let a = gw.notify(&bigger).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let mut want_bigger = expected_body("$bigger", &endpoint);
    for field in ["content", "room_name"] {
        want_bigger["notification"]
            .as_object_mut()
            .expect("object")
            .remove(field);
    }

    let got = fake.received();
    assert_eq!(got.len(), 2, "one push each");
    assert_eq!(got[0].json(), want);
    assert_eq!(got[1].json(), want_bigger);
    for p in &got {
        assert!(p.body.len() <= MAX_MESSAGE, "{} bytes", p.body.len());
        assert_eq!(p.answered, 200);
    }
    assert_eq!(
        metric(
            &gw,
            &format!("pushgate_outcomes_total{{outcome=\"delivered\",pushkin=\"{APP}\"}}")
        )
        .await,
        Some(2.0)
    );
}

#[tokio::test]
async fn a_413_fails_the_push_and_keeps_the_pusher() {
    let fake = FakeUnifiedPush::start().await;
    let gw = http_gateway("    allow_private_endpoints: true\n", METRICS).await;
    fake.set_behaviour("small", Behaviour::Status(413));
    fake.set_behaviour("moved", Behaviour::Status(301));
    let a = gw
        .notify(&message(
            "$m",
            vec![
                device(&fake.endpoint("small")),
                device(&fake.endpoint("moved")),
            ],
        ))
        .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(fake.received().len(), 2, "a redirect is not followed");
    assert_eq!(metric(&gw, &failures("payload_too_large")).await, Some(1.0));
    assert_eq!(metric(&gw, &failures("bad_request")).await, Some(1.0));
}

#[tokio::test]
async fn private_addresses_are_refused_never_rejected() {
    let fake = FakeUnifiedPush::start().await;
    let gw = http_gateway("", METRICS).await;
    let port = fake.origin().rsplit(':').next().expect("port").to_owned();
    let endpoints = [
        fake.endpoint("victim"),
        format!("http://localhost:{port}/victim?up=1"),
        format!("http://[::1]:{port}/victim"),
    ];
    for e in &endpoints {
        let a = gw.notify(&message("$p", vec![device(e)])).await;
        assert_eq!((a.status, &a.body), (200, &json!({"rejected": []})), "{e}");
    }
    assert_eq!(
        fake.connections(),
        0,
        "no connection reaches a refused address"
    );
    assert_eq!(metric(&gw, &failures("endpoint_refused")).await, Some(3.0));
}

#[tokio::test]
async fn endpoints_outside_allowed_endpoints_or_plain_http_fail() {
    let fake = FakeUnifiedPush::start().await;
    let gw = spawn(&format!(
        "apps:
  {APP}:
    type: unifiedpush
    allowed_endpoints: ['ntfy.example.org']
    allow_private_endpoints: true
    allow_http_endpoints: true
  https.only:
    type: unifiedpush
    allow_private_endpoints: true
{METRICS}"
    ))
    .await;
    let a = gw
        .notify(&message("$a", vec![device(&fake.endpoint("t"))]))
        .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(
        metric(&gw, &failures("endpoint_not_allowed")).await,
        Some(1.0)
    );

    let mut plain = device(&fake.endpoint("t"));
    plain["app_id"] = json!("https.only");
    let a = gw.notify(&message("$b", vec![plain])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(
        metric(
            &gw,
            "pushgate_failures_total{pushkin=\"https.only\",reason=\"endpoint_not_allowed\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(fake.connections(), 0);
}

#[tokio::test]
async fn a_pushkey_that_is_no_endpoint_is_rejected_but_not_remembered() {
    let dir = tempfile::tempdir().expect("dir");
    let fake = FakeUnifiedPush::start().await;
    let gw = http_gateway("    allow_private_endpoints: true\n", &sqlite(dir.path())).await;
    for (i, key) in ["fcm-token-abc", "ftp://files.example.org/x"]
        .iter()
        .enumerate()
    {
        let a = gw
            .notify(&message(&format!("$n{i}"), vec![device(key)]))
            .await;
        assert_eq!((a.status, a.body), (200, json!({"rejected": [key]})));
    }
    // Encryption keys that can never be used: a bad key, a key without its auth secret.
    let endpoint = fake.endpoint("keys");
    let good = fake.register_encrypted("keys");
    for (i, data) in [
        json!({"p256dh": "not-a-key", "auth": good.auth()}),
        json!({"p256dh": good.p256dh()}),
        json!({"p256dh": good.p256dh(), "auth": "c2hvcnQ"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut dev = device(&endpoint);
        dev["data"] = data;
        let a = gw.notify(&message(&format!("$k{i}"), vec![dev])).await;
        assert_eq!((a.status, a.body), (200, json!({"rejected": [endpoint]})));
    }
    assert_eq!(fake.connections(), 0, "nothing sent");
    let store = pushgate::store::open(&pushgate::config::StoreConfig::Sqlite {
        path: dir.path().join("up.db"),
    })
    .await
    .expect("store")
    .expect("sqlite");
    assert_eq!(store.stats().await.expect("stats").rejections, 0);
}

#[tokio::test]
async fn the_default_app_serves_app_ids_nothing_else_matches() {
    let fake = FakeUnifiedPush::start().await;
    let gw = spawn(&format!(
        "apps:
  org.example.*:
    type: webpush
    vapid_private_key: {{vapid}}
    vapid_contact_email: ops@example.org
  '*':
    type: unifiedpush
    default_app: true
    allow_private_endpoints: true
    allow_http_endpoints: true
{METRICS}"
    ))
    .await;
    let endpoint = fake.endpoint("fluffy");
    let mut dev = device(&endpoint);
    dev["app_id"] = json!("chat.fluffy.fluffychat");
    let a = gw.notify(&message("$d", vec![dev])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let got = fake.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].json()["notification"]["devices"][0]["app_id"],
        "chat.fluffy.fluffychat"
    );
    // An app id a glob matches keeps its app (the default's `*` is no glob that would make it
    // ambiguous): Web Push cannot use an endpoint as a pushkey.
    let mut web = device(&endpoint);
    web["app_id"] = json!("org.example.web");
    let a = gw.notify(&message("$w", vec![web])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": [endpoint]})));
    assert_eq!(fake.received().len(), 1, "nothing more sent");
    let outcome = |app: &str, outcome: &str| {
        format!("pushgate_outcomes_total{{outcome=\"{outcome}\",pushkin=\"{app}\"}}")
    };
    for (series, want) in [
        (outcome("org.example.*", "rejected"), 1.0),
        (outcome("*", "delivered"), 1.0),
        (outcome("(none)", "unroutable"), 0.0),
    ] {
        assert_eq!(metric(&gw, &series).await, Some(want), "{series}");
    }
}

#[tokio::test]
async fn web_push_encrypted_registrations_get_an_rfc8291_body() {
    let fake = FakeUnifiedPush::start().await;
    let gw = http_gateway("    allow_private_endpoints: true\n", "").await;
    let keys = fake.register_encrypted("sealed");
    let endpoint = fake.endpoint("sealed");
    let mut dev = device(&endpoint);
    dev["data"] = json!({"format": "full", "p256dh": keys.p256dh(), "auth": keys.auth()});

    let a = gw.notify(&message("$enc", vec![dev.clone()])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    // 4,050 bytes of JSON would fit unencrypted, but not once encrypted (103 bytes more):
    // `content` goes so that the whole record fits.
    let mut sized = expected_body("$encbig", &endpoint);
    sized["notification"]["devices"][0]["data"] = dev["data"].clone();
    let pad = 4050 - sized.to_string().len() + "hello".len();
    let mut big = message("$encbig", vec![dev.clone()]);
    big["notification"]["content"]["body"] = json!("z".repeat(pad));
    let a = gw.notify(&big).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));

    let got = fake.received();
    assert_eq!(got.len(), 2);
    let mut want = expected_body("$enc", &endpoint);
    want["notification"]["devices"][0]["data"] = dev["data"].clone();
    let mut want_big = expected_body("$encbig", &endpoint);
    want_big["notification"]["devices"][0]["data"] = dev["data"].clone();
    want_big["notification"]
        .as_object_mut()
        .expect("object")
        .remove("content");
    for (p, want) in got.iter().zip([want, want_big]) {
        assert!(
            matches!(p.plaintext, Some(Ok(_))),
            "decrypted: {:?}",
            p.plaintext
        );
        assert_eq!(p.json(), want);
        assert_eq!(p.header("content-encoding"), Some("aes128gcm"));
        assert_eq!(p.header("content-type"), Some("application/octet-stream"));
        assert_eq!(p.header("ttl"), Some("86400"));
        assert!(p.body.len() <= MAX_MESSAGE, "{} bytes", p.body.len());
        assert_eq!(p.answered, 200);
    }
}
