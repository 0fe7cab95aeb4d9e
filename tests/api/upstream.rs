//! Hostile and broken upstreams, and what they must not do to the gateway:
//! an absurd `Retry-After` or `expires_in` neither panics nor loses the push
//! (queued, delivered later by the outbox, whose worker keeps running); a
//! failing token endpoint is retried with back-off, not once per push; one
//! app's hanging endpoints do not delay another app's retry; `/ready` fails
//! while store writes fail. Also the outbox's single step, `drain_once`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use p256::pkcs8::{EncodePrivateKey, LineEnding};
use pushgate::config::StoreConfig;
use pushgate::store::{NewEntry, Settlement, Store};
use serde_json::{json, Value};
use testkit::apns::{ApnsAuth, ApnsBehaviour, FakeApns};
use testkit::fcm::{service_account_json, FakeGoogle, FcmBehaviour, SERVICE_ACCOUNT_KEY};
use testkit::tls::TestCa;
use testkit::webpush::Behaviour;

use crate::delivery::{message, Setup};
use crate::helpers::{sample, spawn, TestGateway};

/// The largest `Retry-After` a u64 holds: `Instant + Duration` overflowed on it.
const HUGE: &str = "18446744073709551615";

/// Quick retries and a short `max_age` (last chance 0.8 s before it), so a
/// push held back by an absurd `Retry-After` is retried within seconds.
const DISPATCH: &str = "dispatch:
  answer_within: 500ms
  retry_initial_delay: 1s
  retry_max_delay: 2s
  upstream_timeout: 3s
  max_age: 8s
";

fn sqlite_store(dir: &std::path::Path) -> String {
    format!(
        "store:\n  sqlite:\n    path: '{}'\n",
        dir.join("pushgate.db").display()
    )
}

/// Waits until `cond` holds (checked every 50 ms); false after `timeout`.
async fn eventually<F, Fut>(timeout: Duration, cond: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn outbox_len(store: &dyn Store) -> i64 {
    store.stats().await.expect("stats").outbox
}

struct Apns {
    gw: TestGateway,
    fake: FakeApns,
    dir: tempfile::TempDir,
}

/// A gateway with a token-auth APNs app (`com.example.ios`), a SQLite store and [`DISPATCH`].
async fn apns() -> Apns {
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
            key_id: "KEYID12345".into(),
            team_id: "TEAM123456".into(),
        },
    )
    .await;
    let d = dir.path().display();
    let gw = spawn(&format!(
        "apps:\n  com.example.ios:\n    type: apns\n    keyfile: {d}/key.p8\n    key_id: KEYID12345\n    team_id: TEAM123456\n    topic: com.example.app\n    push_type: alert\n    endpoint: {}\n    ca_file: {d}/ca.pem\n{}{DISPATCH}metrics:\n  prometheus:\n    enabled: true\n    address: 127.0.0.1\n    port: 0\n",
        fake.url(),
        sqlite_store(dir.path()),
    ))
    .await;
    Apns { gw, fake, dir }
}

impl Apns {
    async fn store(&self) -> Arc<dyn Store> {
        pushgate::store::open(&StoreConfig::Sqlite {
            path: self.dir.path().join("pushgate.db"),
        })
        .await
        .expect("open")
        .expect("a store")
    }

    fn answered(&self) -> Vec<u16> {
        self.fake.requests().iter().map(|r| r.answered).collect()
    }
}

/// Device token `deadbeef01` as iOS apps register it (base64 of its bytes).
const APNS_PUSHKEY: &str = "3q2+7wE=";

fn apns_device() -> Value {
    json!({"app_id": "com.example.ios", "pushkey": APNS_PUSHKEY, "pushkey_ts": 1, "data": {}})
}

fn too_many_requests(times: usize) -> ApnsBehaviour {
    ApnsBehaviour::WithHeaders {
        times,
        status: 429,
        reason: "TooManyRequests",
        headers: vec![("retry-after", HUGE.to_owned())],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apns_retry_after_of_u64_max_queues_the_push_and_delivers_it_before_max_age() {
    let s = apns().await;
    s.fake.set("deadbeef01", too_many_requests(1));
    let a = s.gw.notify(&message("$ev", vec![apns_device()])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})), "queued");
    let store = s.store().await;
    assert_eq!(outbox_len(&*store).await, 1);
    assert_eq!(s.answered(), [429]);
    // Not after a day: the outbox retries at the push's last chance within max_age (8 s).
    assert!(
        eventually(Duration::from_secs(12), || async {
            s.answered() == [429, 200] && outbox_len(&*store).await == 0
        })
        .await,
        "delivered by the outbox: {:?}",
        s.answered()
    );
    let ready = s.gw.request("GET", "/ready", "").await;
    assert_eq!(
        (ready.status, ready.body),
        (200, json!({"status": "ready"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apns_retry_after_of_u64_max_in_the_outbox_leaves_the_worker_running() {
    let s = apns().await;
    // The request's own attempt hangs until upstream_timeout: queued, then
    // the outbox's first attempt meets the absurd Retry-After.
    s.fake.set("deadbeef01", ApnsBehaviour::Stall);
    let a = s.gw.notify(&message("$ev", vec![apns_device()])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})), "queued");
    s.fake.set("deadbeef01", too_many_requests(1));
    assert!(
        eventually(Duration::from_secs(15), || async {
            s.answered() == [0, 429, 200]
        })
        .await,
        "the outbox attempt after the 429 delivered it: {:?}",
        s.answered()
    );
    let store = s.store().await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            outbox_len(&*store).await == 0
        })
        .await
    );
    let (_, text) = s.gw.scrape().await;
    assert_eq!(
        sample(&text, "pushgate_outbox_worker_restarts_total"),
        Some(0.0),
        "no panic, no restart"
    );
    assert_eq!(sample(&text, "pushgate_outbox_worker_up"), Some(1.0));
    let ready = s.gw.request("GET", "/ready", "").await;
    assert_eq!(
        (ready.status, ready.body),
        (200, json!({"status": "ready"}))
    );
}

struct Fcm {
    gw: TestGateway,
    google: FakeGoogle,
    dir: tempfile::TempDir,
}

/// A gateway with an FCM v1 app (`com.example.android`) against the fake Google; `store` and more in `extra`.
async fn fcm(token_lifetime_s: u64, extra: &str) -> Fcm {
    let google = FakeGoogle::start(token_lifetime_s).await;
    let dir = tempfile::tempdir().expect("dir");
    let sa = dir.path().join("sa.json");
    std::fs::write(
        &sa,
        service_account_json(&google.token_uri(), SERVICE_ACCOUNT_KEY),
    )
    .expect("sa");
    let extra = extra.replace("{store}", &sqlite_store(dir.path()));
    let gw = spawn(&format!(
        "apps:\n  com.example.android:\n    type: gcm\n    api_version: v1\n    project_id: example-project\n    service_account_file: {}\n    endpoint: {}\n{extra}",
        sa.display(),
        google.base_url()
    ))
    .await;
    Fcm { gw, google, dir }
}

fn fcm_device(token: &str) -> Value {
    json!({"app_id": "com.example.android", "pushkey": token, "pushkey_ts": 1, "data": {}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fcm_expires_in_and_retry_after_of_u64_max_queue_the_push_and_deliver_it() {
    let s = fcm(u64::MAX, &format!("{{store}}{DISPATCH}")).await;
    s.google.set(
        "tok",
        FcmBehaviour::Unavailable {
            status: 429,
            retry_after: Some(u64::MAX),
            times: 1,
        },
    );
    let a = s.gw.notify(&message("$ev", vec![fcm_device("tok")])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})), "queued");
    let store = pushgate::store::open(&StoreConfig::Sqlite {
        path: s.dir.path().join("pushgate.db"),
    })
    .await
    .expect("open")
    .expect("a store");
    let answered = || {
        s.google
            .requests()
            .iter()
            .map(|r| r.answered)
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(12), || async {
            answered() == [429, 200] && outbox_len(&*store).await == 0
        })
        .await,
        "delivered by the outbox: {:?}",
        answered()
    );
    assert_eq!(
        s.google.tokens_issued(),
        1,
        "the token with the absurd lifetime was cached (for at most an hour) and used twice"
    );
}

#[tokio::test]
async fn fcm_token_endpoint_failures_are_retried_with_backoff_not_per_push() {
    let s = fcm(3600, "").await;
    s.google.fail_token_requests(Some(500));
    for i in 0..5 {
        let a =
            s.gw.notify(&message(&format!("$e{i}"), vec![fcm_device("tok")]))
                .await;
        // Credentials trouble is temporary: retried by the homeserver, never rejected.
        assert_eq!(
            (a.status, &a.body["rejected"]),
            (502, &json!([])),
            "push {i}"
        );
    }
    assert_eq!(
        s.google.token_attempts(),
        1,
        "one refresh, then the pushes fail fast during its back-off (1 s)"
    );
    assert!(s.google.requests().is_empty());
    s.google.fail_token_requests(None);
    let recovered = eventually(Duration::from_secs(5), || async {
        let a =
            s.gw.notify(&message("$again", vec![fcm_device("tok")]))
                .await;
        a.status == 200
    })
    .await;
    assert!(recovered, "the next refresh after the back-off succeeds");
    assert_eq!(
        s.google.token_attempts(),
        2,
        "nothing asked during the back-off: one failed and one successful refresh"
    );
    assert_eq!(s.google.tokens_issued(), 1);
}

/// A second Web Push app beside `org.example.web`.
pub const OTHER_WEB_APP: &str = "  org.example.other:
    type: webpush
    vapid_private_key: {vapid}
    vapid_contact_email: ops@example.org
    allow_private_endpoints: true
    allow_http_endpoints: true
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_apps_hanging_outbox_entries_do_not_delay_another_apps_retry() {
    let s = crate::delivery::sqlite().await.expect("sqlite");
    let config = s
        .config("")
        .replace("store:", &format!("{OTHER_WEB_APP}store:"))
        .replace("upstream_timeout: 5s", "upstream_timeout: 6s")
        .replace("retry_initial_delay: 100ms", "retry_initial_delay: 500ms")
        .replace("retry_max_delay: 400ms", "retry_max_delay: 1s");
    let gw = spawn(&config).await;
    // App A: 50 devices whose endpoints never answer.
    let mut hanging = Vec::new();
    for i in 0..50 {
        let name = format!("hang{i}");
        let (endpoint, sub) = s.fake.subscribe(&name);
        s.fake.set_behaviour(&name, Behaviour::Stall);
        hanging.push(crate::webpush::device(&endpoint, &sub, json!({})));
    }
    let a = gw.notify(&message("$a", hanging)).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    // Their first attempts time out (6 s; 20 reach the endpoints, the others
    // wait for one of the app's 20 connections); then the outbox takes all
    // 50, and 20 of them hang again.
    let taken = s.fake.wait_for(40, Duration::from_secs(20)).await;
    assert!(taken.len() >= 40, "the outbox is sending app A's entries");

    // App B: one device that fails once, then is healthy.
    let (endpoint, sub) = s.fake.subscribe("b");
    s.fake.set_behaviour("b", Behaviour::Status(503));
    let mut device = crate::webpush::device(&endpoint, &sub, json!({}));
    device["app_id"] = json!("org.example.other");
    let a = gw.notify(&message("$b", vec![device])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let queued_at = Instant::now();
    s.fake.set_behaviour("b", Behaviour::Status(201));
    // Due within a second (retry_initial_delay 500 ms, jittered); A's sends hang for 6 s.
    let delivered = eventually(Duration::from_secs(10), || async {
        s.fake.received_for("b").iter().any(|p| p.answered == 201)
    })
    .await;
    let after = queued_at.elapsed();
    eprintln!("app B's retry delivered {after:?} after its first attempt failed");
    assert!(delivered, "app B's retry delivered");
    assert!(
        after < Duration::from_secs(3),
        "app B's retry waited {after:?} for app A's hanging sends"
    );
}

/// The outbox's single step against a real store and the fake Web Push
/// service: one take, each entry sent and settled by its own outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_once_sends_and_settles_each_due_entry() {
    let s: Setup = crate::delivery::sqlite().await.expect("sqlite");
    let dir = tempfile::tempdir().expect("dir");
    let key = crate::helpers::write_vapid_key(dir.path());
    let yaml = s.config("").replace("{vapid}", &key.display().to_string());
    let (config, _) = pushgate::config::Config::from_yaml(&yaml, "test.yaml").expect("config");
    let metrics = Arc::new(pushgate::telemetry::metrics::Metrics::new());
    let routes = pushgate::gateway::build_routes(&config, &metrics).expect("routes");
    let store = s.open_store().await;
    let d = Arc::new(pushgate::dispatch::Dispatcher::new(
        routes,
        Some(store.clone()),
        config.dispatch.clone(),
        metrics,
    ));

    let now = pushgate::store::now_ms();
    let mut enqueue = Vec::new();
    for (name, status) in [("ok", 201), ("gone", 410), ("busy", 503)] {
        let (endpoint, sub) = s.fake.subscribe(name);
        s.fake.set_behaviour(name, Behaviour::Status(status));
        let device = crate::webpush::device(&endpoint, &sub, json!({}));
        enqueue.push(NewEntry {
            app_id: "org.example.web".into(),
            pushkey: sub.p256dh(),
            body: message(&format!("${name}"), vec![device]).to_string(),
            shared: None,
            created_at: now,
            due_at: now,
            attempts: 1,
            last_error: None,
        });
    }
    store
        .settle(Settlement {
            now,
            enqueue,
            ..Settlement::default()
        })
        .await
        .expect("enqueued");

    let taken = pushgate::dispatch::outbox::drain_once(&d, &store)
        .await
        .expect("store answers");
    assert_eq!(taken, 3);
    let mut answered: Vec<u16> = s.fake.received().iter().map(|p| p.answered).collect();
    answered.sort();
    assert_eq!(answered, [201, 410, 503], "each entry sent once");
    // Delivered and rejected entries are gone; the 503 one waits for its retry.
    assert_eq!(outbox_len(&*store).await, 1);
    assert_eq!(
        pushgate::dispatch::outbox::drain_once(&d, &store)
            .await
            .expect("store answers"),
        0,
        "the retry is not due yet"
    );
    assert_eq!(s.fake.received().len(), 3);
}

/// Makes writes of the gateway's store fail (as a full disk would), or lifts that.
async fn refuse_writes(config: &StoreConfig, refuse: bool) {
    use testkit::store_faults::{refuse_writes, Db};
    match config {
        StoreConfig::Sqlite { path } => refuse_writes(Db::Sqlite(path), refuse).await,
        StoreConfig::Postgres { url, .. } => {
            refuse_writes(Db::Postgres(url.expose()), refuse).await
        }
        StoreConfig::None => {}
    }
}

async fn ready_while_store_writes_fail(s: Setup) {
    let gw = s.gateway().await;
    let (endpoint, sub) = s.fake.subscribe("dev");
    let device = crate::webpush::device(&endpoint, &sub, json!({}));
    let ready = gw.request("GET", "/ready", "").await;
    assert_eq!(
        (ready.status, ready.body),
        (200, json!({"status": "ready"}))
    );

    refuse_writes(&s.store, true).await;
    // Delivered all the same (de-duplication is given up, not the push) …
    let a = gw.notify(&message("$full", vec![device.clone()])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(s.fake.received_for("dev").len(), 1);
    // … but the gateway is not ready once it tried to write (on SQLite, when
    // the push is settled, after the answer): the next push that fails could
    // not be queued.
    let mut ready = gw.request("GET", "/ready", "").await;
    for _ in 0..100 {
        if ready.status != 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        ready = gw.request("GET", "/ready", "").await;
    }
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["errcode"], "M_UNKNOWN");
    let error = ready.body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("not ready: the last write to the store failed"),
        "{error}"
    );

    // Still 503 until a write succeeds, though reads work.
    let ready = gw.request("GET", "/ready", "").await;
    assert_eq!(ready.status, 503);
    refuse_writes(&s.store, false).await;
    let a = gw.notify(&message("$room", vec![device])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let ready = gw.request("GET", "/ready", "").await;
    assert_eq!(
        (ready.status, ready.body),
        (200, json!({"status": "ready"}))
    );
}

mod ready_while_store_writes_fail {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        let s = crate::delivery::sqlite().await.expect("sqlite");
        super::ready_while_store_writes_fail(s).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        let Some(s) = crate::delivery::postgres().await else {
            return;
        };
        super::ready_while_store_writes_fail(s).await;
    }
}
