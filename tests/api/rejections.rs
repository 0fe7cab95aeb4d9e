//! Issue 14, "Rejections you can trust": a pushkey is `rejected` only when the
//! push service said the token is dead (remembered), or when the request itself
//! can never be served (rejected in this answer, never remembered). Everything
//! else is `failed` (counted by reason) or temporary. These tests drive the
//! contract of `/work/spec14.md` through the real API against the fakes; each
//! says in one line what the code before issue 14 did instead ("today: …").
//!
//! Endpoints that must look public (the guard is on) are IP literals reached
//! through a proxy that redirects every tunnel to a fake on 127.0.0.1, or a
//! black-hole proxy: nothing leaves loopback.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{json, Value};
use testkit::apns::{ApnsAuth, ApnsBehaviour, FakeApns};
use testkit::fcm::{service_account_json, FakeGoogle, FcmBehaviour, SERVICE_ACCOUNT_KEY};
use testkit::proxy::{FakeProxy, ProxiedRequest};
use testkit::tls::TestCa;
use testkit::webpush::{Behaviour, FakeWebPush, Subscription};

use crate::helpers::{sample, spawn, TestGateway};
use crate::webpush::{device as web_device, WEB_APP};

const APNS: &str = "com.example.ios";
const FCM: &str = "com.example.android";
const WEB: &str = "org.example.web";
const KEY_ID: &str = "KEYID12345";
const TEAM_ID: &str = "TEAM123456";
/// A public address the guard accepts; only ever named to a proxy that redirects to loopback.
const PUBLIC_IP: &str = "1.1.1.1";
const METRICS: &str =
    "metrics:\n  prometheus:\n    enabled: true\n    address: 127.0.0.1\n    port: 0\n";
/// Outbox retries far away, so that a queued push stays put while a test looks.
const QUIET_RETRIES: &str = "dispatch:\n  connect_timeout: 1s\n  upstream_timeout: 2s\n  retry_initial_delay: 1h\n  retry_max_delay: 1h\n";

fn sqlite(dir: &Path) -> String {
    format!(
        "store:\n  sqlite:\n    path: '{}'\n",
        dir.join("rejections.db").display()
    )
}

fn message(event_id: &str, devices: Vec<Value>) -> Value {
    json!({"notification": {
        "event_id": event_id, "room_id": "!room:x", "type": "m.room.message", "sender": "@alice:x",
        "prio": "high", "counts": {"unread": 1}, "content": {"msgtype": "m.text", "body": "hello"},
        "devices": devices
    }})
}

/// Asserts every `(series, value)` in one scrape, listing all mismatches with the exposition.
async fn assert_metrics(gw: &TestGateway, want: &[(String, f64)]) {
    let (_, text) = gw.scrape().await;
    let wrong: Vec<String> = want
        .iter()
        .filter(|(s, v)| sample(&text, s) != Some(*v))
        .map(|(s, v)| format!("{s}: want {v}, got {:?}", sample(&text, s)))
        .collect();
    assert!(wrong.is_empty(), "{}\n---\n{text}", wrong.join("\n"));
}

fn failures(app: &str, reason: &str) -> String {
    format!("pushgate_failures_total{{pushkin=\"{app}\",reason=\"{reason}\"}}")
}

// ---------------------------------------------------------------- APNs set-up

struct Apns {
    gw: TestGateway,
    fake: FakeApns,
    _dir: tempfile::TempDir,
}

/// A token-auth APNs app pointed at a fake APNs; `root` is appended (store, dispatch, metrics).
async fn apns(root: impl Fn(&Path) -> String) -> Apns {
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
        "apps:\n  {APNS}:\n    type: apns\n    keyfile: {d}/key.p8\n    key_id: {KEY_ID}\n    team_id: {TEAM_ID}\n    topic: com.example.app\n    push_type: alert\n    endpoint: {}\n    ca_file: {d}/ca.pem\n{}",
        fake.url(),
        root(dir.path())
    ))
    .await;
    Apns {
        gw,
        fake,
        _dir: dir,
    }
}

/// A pushkey as iOS apps register it (the token bytes in base64) and the hex token Apple sees.
fn apns_pushkey(i: u8) -> (String, String) {
    let bytes = [0xde, 0xad, 0xbe, 0xef, i];
    (
        base64::engine::general_purpose::STANDARD.encode(bytes),
        format!("deadbeef{i:02x}"),
    )
}

fn apns_device(pushkey: &str, data: Value) -> Value {
    json!({"app_id": APNS, "pushkey": pushkey, "pushkey_ts": 1, "data": data})
}

fn apns_answers_for(fake: &FakeApns, hex: &str) -> Vec<u16> {
    fake.requests()
        .iter()
        .filter(|r| r.token == hex)
        .map(|r| r.answered)
        .collect()
}

// ----------------------------------------------------------------- FCM set-up

struct Fcm {
    gw: TestGateway,
    google: FakeGoogle,
    _dir: tempfile::TempDir,
}

async fn fcm(root: impl Fn(&Path) -> String) -> Fcm {
    let google = FakeGoogle::start(3600).await;
    let dir = tempfile::tempdir().expect("dir");
    let sa = dir.path().join("sa.json");
    std::fs::write(
        &sa,
        service_account_json(&google.token_uri(), SERVICE_ACCOUNT_KEY),
    )
    .expect("sa");
    let gw = spawn(&format!(
        "apps:\n  {FCM}:\n    type: gcm\n    api_version: v1\n    project_id: example-project\n    service_account_file: {}\n    endpoint: {}\n{}",
        sa.display(),
        google.base_url(),
        root(dir.path())
    ))
    .await;
    Fcm {
        gw,
        google,
        _dir: dir,
    }
}

fn fcm_device(token: &str, data: Value) -> Value {
    json!({"app_id": FCM, "pushkey": token, "pushkey_ts": 1, "data": data})
}

fn fcm_answers_for(google: &FakeGoogle, token: &str) -> Vec<u16> {
    google
        .requests()
        .iter()
        .filter(|r| {
            r.message
                .as_ref()
                .ok()
                .and_then(|m| m["message"]["token"].as_str())
                == Some(token)
        })
        .map(|r| r.answered)
        .collect()
}

// ------------------------------------------------------------ Web Push set-up

/// A Web Push app with the plain-HTTP loopback fake (guard off, http allowed).
struct Web {
    gw: TestGateway,
    fake: FakeWebPush,
    _dir: tempfile::TempDir,
}

async fn web(root: impl Fn(&Path) -> String) -> Web {
    let dir = tempfile::tempdir().expect("dir");
    let gw = spawn(&format!("{WEB_APP}{}", root(dir.path()))).await;
    Web {
        gw,
        fake: FakeWebPush::start().await,
        _dir: dir,
    }
}

/// A Web Push app with the guard ON, whose push service looks public: the fake speaks
/// HTTPS for `https://1.1.1.1` (a test-CA certificate for that IP) and a proxy redirects
/// every tunnel to it on 127.0.0.1.
struct PublicWeb {
    gw: TestGateway,
    fake: FakeWebPush,
    proxy: FakeProxy,
    _dir: tempfile::TempDir,
}

/// `proxy_host` is how the config names the proxy (`127.0.0.1` or `localhost`).
async fn public_web(proxy_host: &str, root: &str) -> PublicWeb {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("ca");
    let fake = FakeWebPush::start_tls_at(
        &format!("https://{PUBLIC_IP}"),
        ca.server_config_for(&[PUBLIC_IP], &[b"http/1.1"]),
    )
    .await;
    let proxy =
        FakeProxy::start_redirecting_to(SocketAddr::from(([127, 0, 0, 1], fake.port()))).await;
    let gw = spawn(&format!(
        "proxy: http://{proxy_host}:{}
apps:
  {WEB}:
    type: webpush
    vapid_private_key: {{vapid}}
    vapid_contact_email: ops@example.org
    ca_file: {}
{root}",
        proxy.port(),
        dir.path().join("ca.pem").display()
    ))
    .await;
    PublicWeb {
        gw,
        fake,
        proxy,
        _dir: dir,
    }
}

/// A Web Push app with the guard ON behind the black-hole proxy (records, never connects).
async fn blackholed_web(root: &str) -> (TestGateway, FakeProxy) {
    let proxy = FakeProxy::start_blackhole().await;
    let gw = spawn(&format!(
        "proxy: {}
apps:
  {WEB}:
    type: webpush
    vapid_private_key: {{vapid}}
    vapid_contact_email: ops@example.org
{root}",
        proxy.url()
    ))
    .await;
    (gw, proxy)
}

fn connect(target: &str) -> ProxiedRequest {
    ProxiedRequest {
        method: "CONNECT".into(),
        target: target.into(),
    }
}

// ------------------------------------------------- 1. memory poisoning

/// today: the second request is answered `rejected` from memory; Apple is never asked.
#[tokio::test]
async fn apns_bad_default_payload_is_not_remembered() {
    let s = apns(sqlite).await;
    let (key, hex) = apns_pushkey(1);
    let bad = apns_device(&key, json!({"default_payload": "not an object"}));
    let a = s.gw.notify(&message("$bad", vec![bad])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": [key]})));
    assert!(s.fake.requests().is_empty(), "unusable: nothing sent");

    let a =
        s.gw.notify(&message("$good", vec![apns_device(&key, json!({}))]))
            .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(apns_answers_for(&s.fake, &hex), vec![200]);
}

/// today: the second request is answered `rejected` from memory; FCM is never asked.
#[tokio::test]
async fn fcm_bad_default_payload_is_not_remembered() {
    let s = fcm(sqlite).await;
    let bad = fcm_device("tok-poison", json!({"default_payload": "not an object"}));
    let a = s.gw.notify(&message("$bad", vec![bad])).await;
    assert_eq!(
        (a.status, a.body),
        (200, json!({"rejected": ["tok-poison"]}))
    );
    assert!(s.google.requests().is_empty(), "unusable: nothing sent");

    let a =
        s.gw.notify(&message("$good", vec![fcm_device("tok-poison", json!({}))]))
            .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(fcm_answers_for(&s.google, "tok-poison"), vec![200]);
}

/// today: the complete subscription is answered `rejected` from memory; nothing is sent.
#[tokio::test]
async fn incomplete_web_push_subscription_is_not_remembered() {
    let s = web(sqlite).await;
    let (endpoint, sub) = s.fake.subscribe("p");
    let mut no_auth = web_device(&endpoint, &sub, json!({}));
    no_auth["data"]
        .as_object_mut()
        .expect("data")
        .remove("auth");
    let a = s.gw.notify(&message("$incomplete", vec![no_auth])).await;
    assert_eq!(
        (a.status, a.body),
        (200, json!({"rejected": [sub.p256dh()]}))
    );
    assert!(s.fake.received().is_empty());

    let a =
        s.gw.notify(&message(
            "$complete",
            vec![web_device(&endpoint, &sub, json!({}))],
        ))
        .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let got = s.fake.received_for("p");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].answered, 201);
}

/// today: memory is keyed by pushkey: P at a new endpoint is answered `rejected` from memory.
#[tokio::test]
async fn web_push_dead_subscription_is_remembered_by_endpoint() {
    let s = web(sqlite).await;
    let (e1, sub) = s.fake.subscribe("e1");
    s.fake.set_behaviour("e1", Behaviour::Status(410));
    let p = sub.p256dh();
    let a =
        s.gw.notify(&message("$1", vec![web_device(&e1, &sub, json!({}))]))
            .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": [p]})));
    assert_eq!(s.fake.received_for("e1").len(), 1);

    // The same keys, a new endpoint (E2 answers 201): sent normally.
    let e2 = s.fake.subscribe_with("e2", &sub);
    let a =
        s.gw.notify(&message("$2", vec![web_device(&e2, &sub, json!({}))]))
            .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let got = s.fake.received_for("e2");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].answered, 201);

    // The dead endpoint again, under another pushkey: rejected from memory, nothing sent.
    let other = Subscription::generate();
    let a =
        s.gw.notify(&message("$3", vec![web_device(&e1, &other, json!({}))]))
            .await;
    assert_eq!(
        (a.status, a.body),
        (200, json!({"rejected": [other.p256dh()]}))
    );
    assert_eq!(
        s.fake.received_for("e1").len(),
        1,
        "answered from memory: the dead endpoint is not asked again"
    );
}

/// today: the refusal itself is answered `rejected` (and remembered for P).
#[tokio::test]
async fn endpoint_refused_by_the_guard_is_failed_not_rejected() {
    let dir = tempfile::tempdir().expect("dir");
    let s = public_web("127.0.0.1", &format!("{}{METRICS}", sqlite(dir.path()))).await;
    let (good, sub) = s.fake.subscribe("p");
    let a =
        s.gw.notify(&message(
            "$refused",
            vec![web_device("https://127.0.0.1:1/x", &sub, json!({}))],
        ))
        .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert!(
        s.proxy.requests().is_empty(),
        "refused before any request left"
    );

    let a =
        s.gw.notify(&message("$good", vec![web_device(&good, &sub, json!({}))]))
            .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let got = s.fake.received_for("p");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].answered, 201);
    assert_metrics(&s.gw, &[(failures(WEB, "endpoint_refused"), 1.0)]).await;
}

// ------------------------------------------------- 2. proxy given by host name

/// today: the guard refuses the proxy `localhost` itself: `rejected`, nothing sent.
#[tokio::test]
async fn proxy_given_by_host_name_is_not_refused_by_the_guard() {
    let s = public_web("localhost", "").await;
    let (endpoint, sub) = s.fake.subscribe("p");
    let a =
        s.gw.notify(&message("$e", vec![web_device(&endpoint, &sub, json!({}))]))
            .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let got = s.fake.received_for("p");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].answered, 201);
    assert_eq!(
        got[0].vapid.as_ref().map(|v| v.aud.clone()),
        Ok(format!("https://{PUBLIC_IP}"))
    );
    assert_eq!(
        s.proxy.requests(),
        vec![connect(&format!("{PUBLIC_IP}:443"))]
    );
}

// ------------------------------------------------- 3. DNS failure and IPv6 literals under a proxy

const UNRESOLVABLE: &str = "https://push.does-not-exist.invalid/x";

/// today: the pre-flight resolution failure is answered `200 {"rejected": [P]}`.
#[tokio::test]
async fn dns_failure_with_a_proxy_is_temporary_without_a_store() {
    let (gw, _proxy) = blackholed_web(QUIET_RETRIES).await;
    let sub = Subscription::generate();
    let a = gw
        .notify(&message(
            "$dns",
            vec![web_device(UNRESOLVABLE, &sub, json!({}))],
        ))
        .await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.body["rejected"], json!([]));
}

/// today: `200 {"rejected": [P]}` (and remembered) instead of queued.
#[tokio::test]
async fn dns_failure_with_a_proxy_is_queued_with_a_store() {
    let dir = tempfile::tempdir().expect("dir");
    let (gw, _proxy) =
        blackholed_web(&format!("{}{METRICS}{QUIET_RETRIES}", sqlite(dir.path()))).await;
    let sub = Subscription::generate();
    let a = gw
        .notify(&message(
            "$dns",
            vec![web_device(UNRESOLVABLE, &sub, json!({}))],
        ))
        .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let app = format!("pushkin=\"{WEB}\"");
    assert_metrics(
        &gw,
        &[
            (format!("pushgate_outbox_queued_total{{{app}}}"), 1.0),
            (
                format!("pushgate_outcomes_total{{outcome=\"temporary\",{app}}}"),
                1.0,
            ),
            ("pushgate_store_rows{table=\"outbox\"}".into(), 1.0),
        ],
    )
    .await;
}

/// today: the brackets are kept for the pre-flight lookup, which fails: `rejected`, the proxy never asked.
#[tokio::test]
async fn ipv6_literal_endpoint_goes_to_the_proxy() {
    let (gw, proxy) = blackholed_web(QUIET_RETRIES).await;
    let sub = Subscription::generate();
    let a = gw
        .notify(&message(
            "$v6",
            vec![web_device("https://[2606:4700::1111]/x", &sub, json!({}))],
        ))
        .await;
    // The black-hole proxy answers 502 to the CONNECT: a temporary failure.
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.body["rejected"], json!([]));
    let seen = proxy.requests();
    assert!(
        !seen.is_empty() && seen.iter().all(|r| *r == connect("[2606:4700::1111]:443")),
        "{seen:?}"
    );
}

// ------------------------------------------------- 4. claims settle for every device

/// today: the unknown device's claim stays open: the retry waits 2 s and is answered 502, `rejected: []`.
#[tokio::test]
async fn a_retry_with_an_unknown_app_gets_the_same_answer_at_once() {
    let s = apns(sqlite).await;
    let (key, hex) = apns_pushkey(2);
    let body = message(
        "$twice",
        vec![
            json!({"app_id": "org.example.nobody", "pushkey": "k-unknown", "pushkey_ts": 1}),
            apns_device(&key, json!({})),
        ],
    );
    let first = s.gw.notify(&body).await;
    let started = Instant::now();
    let second = s.gw.notify(&body).await;
    let took = started.elapsed();
    let want = (200, json!({"rejected": ["k-unknown"]}));
    assert_eq!((first.status, first.body), want);
    assert_eq!((second.status, second.body), want);
    assert!(took < Duration::from_secs(1), "the retry took {took:?}");
    assert_eq!(apns_answers_for(&s.fake, &hex), vec![200], "pushed once");
}

/// Passes today, as it must (the retry is answered from the rejection memory); once that device is
/// no longer remembered it guards that a device decided without a send leaves no claim open.
#[tokio::test]
async fn a_retry_with_an_incomplete_subscription_gets_the_same_answer_at_once() {
    let s = web(sqlite).await;
    let (endpoint, sub) = s.fake.subscribe("p");
    let mut no_auth = web_device(&endpoint, &sub, json!({}));
    no_auth["data"]
        .as_object_mut()
        .expect("data")
        .remove("auth");
    let body = message("$twice", vec![no_auth]);
    let first = s.gw.notify(&body).await;
    let started = Instant::now();
    let second = s.gw.notify(&body).await;
    let took = started.elapsed();
    let want = (200, json!({"rejected": [sub.p256dh()]}));
    assert_eq!((first.status, first.body), want);
    assert_eq!((second.status, second.body), want);
    assert!(took < Duration::from_secs(1), "the retry took {took:?}");
    assert!(s.fake.received().is_empty());
}

// ------------------------------------------------- 5. rejections the contract removes

/// today: `rejected` and remembered: the second push is never sent.
#[tokio::test]
async fn fcm_sender_id_mismatch_is_failed_and_the_pusher_kept() {
    let s = fcm(|d| format!("{}{METRICS}", sqlite(d))).await;
    s.google.set("tok-sender", FcmBehaviour::SenderIdMismatch);
    for event in ["$1", "$2"] {
        let a =
            s.gw.notify(&message(event, vec![fcm_device("tok-sender", json!({}))]))
                .await;
        assert_eq!(
            (a.status, a.body),
            (200, json!({"rejected": []})),
            "{event}"
        );
    }
    assert_eq!(
        fcm_answers_for(&s.google, "tok-sender"),
        vec![403, 403],
        "not remembered: sent again"
    );
    assert_metrics(&s.gw, &[(failures(FCM, "configuration"), 2.0)]).await;
}

/// today: not rejected already; fails on the missing `pushgate_failures_total` series.
#[tokio::test]
async fn fcm_invalid_argument_about_another_field_is_failed() {
    let s = fcm(|_| METRICS.to_owned()).await;
    s.google.set("tok-msg", FcmBehaviour::InvalidMessage);
    let a =
        s.gw.notify(&message("$e", vec![fcm_device("tok-msg", json!({}))]))
            .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(fcm_answers_for(&s.google, "tok-msg"), vec![400]);
    assert_metrics(&s.gw, &[(failures(FCM, "bad_request"), 1.0)]).await;
}

/// Passes today, as it must: INVALID_ARGUMENT naming the token is a dead token, rejected and remembered.
#[tokio::test]
async fn fcm_invalid_argument_about_the_token_is_rejected_and_remembered() {
    let s = fcm(sqlite).await;
    s.google.set("tok-bad", FcmBehaviour::InvalidToken);
    for event in ["$1", "$2"] {
        let a =
            s.gw.notify(&message(event, vec![fcm_device("tok-bad", json!({}))]))
                .await;
        assert_eq!(
            (a.status, a.body),
            (200, json!({"rejected": ["tok-bad"]})),
            "{event}"
        );
    }
    assert_eq!(
        fcm_answers_for(&s.google, "tok-bad"),
        vec![400],
        "the second answer comes from memory"
    );
}

/// today: `rejected` (and remembered): a wrong topic would delete every pusher of the app.
#[tokio::test]
async fn apns_topic_disallowed_is_failed() {
    let s = apns(|_| METRICS.to_owned()).await;
    let (key, hex) = apns_pushkey(3);
    s.fake
        .set(&hex, ApnsBehaviour::Reason(400, "TopicDisallowed"));
    let a =
        s.gw.notify(&message("$e", vec![apns_device(&key, json!({}))]))
            .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(apns_answers_for(&s.fake, &hex), vec![400]);
    assert_metrics(&s.gw, &[(failures(APNS, "configuration"), 1.0)]).await;
}

/// today: not rejected already; fails on the missing `pushgate_failures_total` series.
#[tokio::test]
async fn apns_payload_too_large_is_failed() {
    let s = apns(|_| METRICS.to_owned()).await;
    let (key, hex) = apns_pushkey(4);
    s.fake
        .set(&hex, ApnsBehaviour::Reason(413, "PayloadTooLarge"));
    let a =
        s.gw.notify(&message("$e", vec![apns_device(&key, json!({}))]))
            .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(apns_answers_for(&s.fake, &hex), vec![413]);
    assert_metrics(&s.gw, &[(failures(APNS, "payload_too_large"), 1.0)]).await;
}

/// today: `rejected` (and remembered); the reference gateway skips such an endpoint and keeps the pusher.
#[tokio::test]
async fn web_push_endpoint_outside_allowed_endpoints_is_failed() {
    let s = web(|_| format!("    allowed_endpoints: ['push.example.net']\n{METRICS}")).await;
    let (endpoint, sub) = s.fake.subscribe("p");
    let a =
        s.gw.notify(&message("$e", vec![web_device(&endpoint, &sub, json!({}))]))
            .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert!(s.fake.received().is_empty());
    assert_eq!(s.fake.connections(), 0);
    assert_metrics(&s.gw, &[(failures(WEB, "endpoint_not_allowed"), 1.0)]).await;
}

// ------------------------------------------------- 6. rejection breaker

/// today: every answer rejects (no breaker): the 20th–25th answers carry their pushkey.
#[tokio::test]
async fn rejection_breaker_trips_on_a_burst_of_bad_device_tokens() {
    let s = apns(|d| {
        format!(
            "{}{METRICS}dispatch:\n  rejection_breaker:\n    min_tokens: 20\n    share: 0.5\n    window: 5m\n",
            sqlite(d)
        )
    })
    .await;
    let tokens: Vec<(String, String)> = (0..25).map(|i| apns_pushkey(100 + i)).collect();
    let mut answers = Vec::new();
    let mut want = Vec::new();
    for (i, (key, hex)) in tokens.iter().enumerate() {
        s.fake
            .set(hex, ApnsBehaviour::Reason(400, "BadDeviceToken"));
        let a =
            s.gw.notify(&message(
                &format!("$burst{i}"),
                vec![apns_device(key, json!({}))],
            ))
            .await;
        answers.push((a.status, a.body));
        // The 20th dead token trips the breaker (20 of 20 > 50 %) and is already held back.
        let rejected: Vec<&String> = if i < 19 { vec![key] } else { vec![] };
        want.push((200, json!({ "rejected": rejected })));
    }
    assert_eq!(answers, want);
    assert_eq!(s.fake.requests().len(), 25, "every token was sent");
    assert_metrics(
        &s.gw,
        &[
            (
                format!("pushgate_rejection_breaker_open{{pushkin=\"{APNS}\"}}"),
                1.0,
            ),
            (
                format!("pushgate_rejection_breaker_trips_total{{pushkin=\"{APNS}\"}}"),
                1.0,
            ),
            (failures(APNS, "breaker_open"), 6.0),
        ],
    )
    .await;
    let ready = s.gw.request("GET", "/ready", "").await;
    assert_eq!(
        (ready.status, ready.body),
        (
            200,
            json!({"status": "ready", "rejection_breaker_open": [APNS]})
        )
    );

    // A held-back token is not remembered: once Apple accepts it, it is delivered.
    let (key20, hex20) = &tokens[19];
    s.fake.set(hex20, ApnsBehaviour::Ok);
    let a =
        s.gw.notify(&message("$later", vec![apns_device(key20, json!({}))]))
            .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(apns_answers_for(&s.fake, hex20), vec![400, 200]);
}

/// Passes today, as it must: below `min_tokens` (default 20) dead tokens are simply rejected.
#[tokio::test]
async fn rejection_breaker_does_not_trip_below_min_tokens() {
    let s = apns(|_| METRICS.to_owned()).await;
    let tokens: Vec<(String, String)> = (0..5).map(|i| apns_pushkey(200 + i)).collect();
    for (_, hex) in &tokens {
        s.fake
            .set(hex, ApnsBehaviour::Reason(400, "BadDeviceToken"));
    }
    let devices = tokens
        .iter()
        .map(|(key, _)| apns_device(key, json!({})))
        .collect();
    let a = s.gw.notify(&message("$five", devices)).await;
    let keys: Vec<&String> = tokens.iter().map(|(key, _)| key).collect();
    assert_eq!((a.status, a.body), (200, json!({"rejected": keys})));
    let (_, text) = s.gw.scrape().await;
    assert_ne!(
        sample(
            &text,
            &format!("pushgate_rejection_breaker_open{{pushkin=\"{APNS}\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    let ready = s.gw.request("GET", "/ready", "").await;
    assert_eq!(
        (ready.status, ready.body),
        (200, json!({"status": "ready"}))
    );
}
