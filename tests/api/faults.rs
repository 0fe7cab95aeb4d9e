//! Faults between the gateway and its peers, made by a misbehaving TCP proxy
//! (`testkit::faulty`): connections reset before or in the middle of a
//! request, garbage instead of HTTP or TLS, refused connections, a name that
//! does not resolve, the store going away and coming back. For each: the
//! gateway stays up, answers as design §2/§4 say (200 with the rejections
//! known, the device queued), loses no accepted push, and recovers without a
//! restart.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::apns::{ApnsAuth, FakeApns};
use testkit::faulty::{Fault, FaultyProxy};
use testkit::tls::TestCa;
use testkit::webpush::{Behaviour, FakeWebPush};

use crate::helpers::{spawn, TestGateway};
use crate::webpush::{device, WEB_APP};

const FAST_RETRY: &str = "dispatch:
  answer_within: 1s
  retry_initial_delay: 100ms
  retry_max_delay: 300ms
  upstream_timeout: 3s
";

fn message(event: &str, devices: Vec<Value>) -> Value {
    json!({"notification": {
        "event_id": event, "room_id": "!r:example.org", "type": "m.room.message",
        "sender": "@a:example.org", "counts": {"unread": 1},
        "content": {"msgtype": "m.text", "body": "hi"}, "devices": devices
    }})
}

async fn sqlite_gateway(dir: &tempfile::TempDir, apps: &str) -> TestGateway {
    spawn(&format!(
        "{apps}store:\n  sqlite:\n    path: '{}'\n{FAST_RETRY}",
        dir.path().join("f.db").display()
    ))
    .await
}

/// A Web Push fake reached only through a faulty proxy.
async fn proxied_web_push(mode: Fault) -> (FaultyProxy, FakeWebPush) {
    let proxy = FaultyProxy::start(mode).await;
    let fake = FakeWebPush::start_at(Some(format!("http://127.0.0.1:{}", proxy.port()))).await;
    proxy.forward_to(format!("127.0.0.1:{}", fake.port()).parse().expect("addr"));
    (proxy, fake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_resets_garbage_and_refusals_are_queued_then_delivered_once() {
    for fault in [Fault::Reset, Fault::Garbage, Fault::Close] {
        let dir = tempfile::tempdir().expect("tempdir");
        let gw = sqlite_gateway(&dir, WEB_APP).await;
        let (proxy, fake) = proxied_web_push(fault).await;
        let (endpoint, sub) = fake.subscribe("dev");
        // A dead device on a healthy service: its rejection must not be hidden.
        let healthy = FakeWebPush::start().await;
        let (dead_endpoint, dead_sub) = healthy.subscribe("dead");
        healthy.set_behaviour("dead", Behaviour::Status(410));

        let event = format!("$fault-{fault:?}");
        let a = gw
            .notify(&message(
                &event,
                vec![
                    device(&endpoint, &sub, json!({})),
                    device(&dead_endpoint, &dead_sub, json!({})),
                ],
            ))
            .await;
        assert_eq!(
            (a.status, a.body),
            (200, json!({"rejected": [dead_sub.p256dh()]})),
            "{fault:?}"
        );
        assert!(proxy.accepted() >= 1, "{fault:?}: the fault was met");
        assert_eq!(gw.request("GET", "/health", "").await.status, 200);

        proxy.set(Fault::Pass);
        fake.wait_accepted(1, Duration::from_secs(10)).await;
        gw.wait_outbox_empty(Duration::from_secs(10)).await;
        let got = fake.accepted_by_event();
        assert_eq!(
            got.get(&event),
            Some(&1),
            "{fault:?}: delivered once after recovery"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_mid_request_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = sqlite_gateway(&dir, WEB_APP).await;
    let (proxy, fake) = proxied_web_push(Fault::Pass).await;
    let (endpoint, sub) = fake.subscribe("slow");
    fake.set_behaviour("slow", Behaviour::Delay(Duration::from_millis(600), 201));
    // Cut once the push is upstream, while its answer is held back.
    let cut = async {
        assert_eq!(fake.wait_for(1, Duration::from_secs(10)).await.len(), 1);
        proxy.set(Fault::Reset);
    };
    let body = message("$mid", vec![device(&endpoint, &sub, json!({}))]);
    let (a, ()) = tokio::join!(gw.notify(&body), cut);
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    fake.set_behaviour("slow", Behaviour::Status(201));
    proxy.set(Fault::Pass);
    // The push service got the first copy but its answer was lost: the
    // gateway cannot know, so it sends again (at least once, never zero).
    fake.wait_accepted(2, Duration::from_secs(10)).await;
    gw.wait_outbox_empty(Duration::from_secs(10)).await;
    let got = fake.accepted_by_event();
    assert_eq!(got.get("$mid"), Some(&2), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_tls_handshake_failures_and_resets_recover_without_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new();
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let p8 = {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        p256::SecretKey::from(key.clone())
            .to_pkcs8_pem(LineEnding::LF)
            .expect("pem")
    };
    std::fs::write(dir.path().join("key.p8"), p8.as_bytes()).expect("p8");
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("ca");
    let apns = FakeApns::start(
        &ca,
        ApnsAuth::Token {
            key: *key.verifying_key(),
            key_id: "ABC123DEFG".into(),
            team_id: "TEAM123456".into(),
        },
    )
    .await;
    let proxy = FaultyProxy::start(Fault::Garbage).await;
    let target: url::Url = apns.url().parse().expect("url");
    proxy.forward_to(
        format!("127.0.0.1:{}", target.port().expect("port"))
            .parse()
            .expect("addr"),
    );
    let d = dir.path().display();
    let apps = format!(
        "apps:\n  com.example.ios:\n    type: apns\n    keyfile: {d}/key.p8\n    key_id: ABC123DEFG\n    team_id: TEAM123456\n    topic: com.example.ios\n    endpoint: https://127.0.0.1:{}\n    ca_file: {d}/ca.pem\n",
        proxy.port()
    );
    let gw = sqlite_gateway(&dir, &apps).await;
    // iOS pushkeys are the token's bytes in base64; APNs sees them in hex.
    let dev = |n: u8| {
        use base64::Engine;
        let pushkey = base64::engine::general_purpose::STANDARD.encode([n, 0xa1]);
        json!({"app_id": "com.example.ios", "pushkey": pushkey, "data": {}})
    };
    let dev_hex = |n: u8| format!("{n:02x}a1");

    // Garbage instead of a ServerHello: the TLS handshake fails.
    let a = gw.notify(&message("$tls", vec![dev(1)])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    // Reset during the handshake.
    proxy.set(Fault::Reset);
    let a = gw.notify(&message("$rst", vec![dev(2)])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert!(apns.requests().is_empty());

    proxy.set(Fault::Pass);
    let got = apns.wait_for(2, Duration::from_secs(10)).await;
    gw.wait_outbox_empty(Duration::from_secs(10)).await;
    let tokens: Vec<String> = apns.requests().into_iter().map(|r| r.token).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(tokens.iter().filter(|t| **t == dev_hex(1)).count(), 1);
    assert_eq!(tokens.iter().filter(|t| **t == dev_hex(2)).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_is_a_temporary_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = sqlite_gateway(&dir, WEB_APP).await;
    let fake = FakeWebPush::start().await;
    let (_, sub) = fake.subscribe("x");
    let endpoint = "https://push.pushgate-test.invalid/push/x";
    let a = gw
        .notify(&message("$dns", vec![device(endpoint, &sub, json!({}))]))
        .await;
    // Not the device's fault (DNS may come back): queued, not rejected.
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let store = pushgate::store::open(&pushgate::config::StoreConfig::Sqlite {
        path: dir.path().join("f.db"),
    })
    .await
    .expect("open")
    .expect("store");
    assert_eq!(store.stats().await.expect("stats").outbox, 1);
    assert_eq!(gw.request("GET", "/health", "").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_goes_away_and_comes_back_without_a_restart() {
    let Some(url) = testkit::postgres::fresh_database().await else {
        return;
    };
    let mut parsed: url::Url = url.parse().expect("postgres url");
    let pg_port = parsed.port().expect("port");
    let proxy = FaultyProxy::start(Fault::Pass).await;
    proxy.forward_to(format!("127.0.0.1:{pg_port}").parse().expect("addr"));
    parsed.set_port(Some(proxy.port())).expect("port");
    let gw = spawn(&format!(
        "{WEB_APP}store:\n  postgres:\n    url: '{parsed}'\n    max_connections: 4\n{FAST_RETRY}"
    ))
    .await;
    let fake = FakeWebPush::start().await;
    let (endpoint, sub) = fake.subscribe("dev");
    assert_eq!(gw.request("GET", "/ready", "").await.status, 200);

    proxy.set(Fault::Close);
    assert_eq!(gw.request("GET", "/ready", "").await.status, 503);
    fake.set_behaviour("dev", Behaviour::Status(503));
    let a = gw
        .notify(&message("$away", vec![device(&endpoint, &sub, json!({}))]))
        .await;
    assert_eq!(a.status, 502, "cannot be queued while the store is away");
    assert_eq!(gw.request("GET", "/health", "").await.status, 200);

    proxy.set(Fault::Pass);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while gw.request("GET", "/ready", "").await.status != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store did not come back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Back: a temporary failure is queued again, and delivered once the service recovers.
    let a = gw
        .notify(&message("$back", vec![device(&endpoint, &sub, json!({}))]))
        .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    fake.set_behaviour("dev", Behaviour::Status(201));
    fake.wait_accepted(1, Duration::from_secs(10)).await;
    gw.wait_outbox_empty(Duration::from_secs(10)).await;
    let got = fake.accepted_by_event();
    assert_eq!(got.get("$back"), Some(&1), "{got:?}");
    testkit::postgres::drop_database(&url).await;
}
