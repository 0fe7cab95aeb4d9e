//! The delivery guarantees (design §4) through the real API, against both
//! store backends: answer budget and outbox, retries until the upstream is
//! back, de-duplication of homeserver retries, rejection memory across a
//! restart, `max_age`, and `/ready`. The upstream is the fake Web Push service.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pushgate::config::StoreConfig;
use pushgate::dispatch::clock::Clock;
use pushgate::dispatch::{outbox, Dispatcher};
use pushgate::store::{ClaimKey, ClaimState, NewEntry, Settlement, Store};
use serde_json::{json, Value};
use testkit::webpush::{Behaviour, FakeWebPush, Subscription};

use crate::helpers::{spawn, wait_outbox_empty, TestGateway};
use crate::webpush::{device, WEB_APP};

/// Short retry delays so that the tests take seconds, not minutes.
const DISPATCH: &str = "dispatch:
  answer_within: 500ms
  retry_initial_delay: 100ms
  retry_max_delay: 400ms
  upstream_timeout: 5s
";

/// A store for one test, a fake push service, and the config that joins them.
pub struct Setup {
    pub fake: FakeWebPush,
    pub store: StoreConfig,
    _dir: tempfile::TempDir,
}

pub async fn sqlite() -> Option<Setup> {
    let dir = tempfile::tempdir().expect("dir");
    Some(Setup {
        fake: FakeWebPush::start().await,
        store: StoreConfig::Sqlite {
            path: dir.path().join("pushgate.db"),
        },
        _dir: dir,
    })
}

pub async fn postgres() -> Option<Setup> {
    let url = testkit::postgres::fresh_database().await?;
    Some(Setup {
        fake: FakeWebPush::start().await,
        store: StoreConfig::Postgres {
            url: url.clone().into(),
            max_connections: 10,
        },
        _dir: tempfile::tempdir().expect("dir"),
    })
}

impl Setup {
    pub fn config(&self, extra: &str) -> String {
        let store = match &self.store {
            StoreConfig::Sqlite { path } => {
                format!("store:\n  sqlite:\n    path: '{}'\n", path.display())
            }
            StoreConfig::Postgres { url, .. } => {
                format!("store:\n  postgres:\n    url: '{}'\n", url.expose())
            }
            StoreConfig::None => "store: none\n".to_owned(),
        };
        format!("{WEB_APP}{store}{DISPATCH}{extra}")
    }

    pub async fn gateway(&self) -> TestGateway {
        spawn(&self.config("")).await
    }

    /// The same store, opened beside the gateway, to look at the outbox.
    pub async fn open_store(&self) -> std::sync::Arc<dyn Store> {
        pushgate::store::open(&self.store)
            .await
            .expect("open store")
            .expect("a store")
    }

    /// A dispatcher on this store and these apps, reading time from `clock`,
    /// whose outbox steps the test runs itself (no worker).
    pub async fn dispatcher(&self, clock: Clock) -> Outbox {
        let dir = tempfile::tempdir().expect("dir");
        let key = crate::helpers::write_vapid_key(dir.path());
        let yaml = self
            .config("")
            .replace("{vapid}", &key.display().to_string());
        let (config, _) = pushgate::config::Config::from_yaml(&yaml, "test.yaml").expect("config");
        let metrics = Arc::new(pushgate::telemetry::metrics::Metrics::new());
        let routes = pushgate::gateway::build_routes(&config, &metrics).expect("routes");
        let store = self.open_store().await;
        let d = Dispatcher::new(
            routes,
            Some(store.clone()),
            config.dispatch.clone(),
            metrics,
        );
        Outbox {
            d: Arc::new(d.with_clock(clock)),
            store,
            _dir: dir,
        }
    }
}

/// A dispatcher and its store, for running the outbox one step at a time.
pub struct Outbox {
    pub d: Arc<Dispatcher>,
    pub store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl Outbox {
    /// One outbox step; how many entries it took.
    pub async fn drain_once(&self) -> usize {
        outbox::drain_once(&self.d, &self.store)
            .await
            .expect("store answers")
    }
}

macro_rules! on_both_backends {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let s = super::sqlite().await.expect("sqlite");
                super::$check(s).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let Some(s) = super::postgres().await else { return };
                super::$check(s).await;
            })*
        }
    };
}

on_both_backends!(
    upstream_down_through_retries_then_back_delivers_each_push_once,
    slow_upstream_is_answered_within_the_budget_and_delivered_once,
    a_homeserver_that_hangs_up_mid_request_does_not_cut_the_push_short,
    a_temporary_failure_never_hides_the_rejected_list,
    homeserver_retry_is_pushed_once,
    concurrent_duplicates_are_pushed_once,
    badge_only_notifications_are_not_deduplicated,
    rejection_is_remembered_across_a_restart_and_cleared_by_a_newer_pushkey_ts,
    outbox_drops_a_push_after_max_age,
    a_hundred_queued_devices_store_their_notification_once,
    past_the_outbox_cap_a_request_is_answered_429_and_its_retry_is_sent_again,
    one_apps_hanging_backlog_does_not_delay_another_apps_due_entry,
    the_outbox_follows_its_clock_for_due_times_and_max_age,
    a_fair_take_shares_its_room_among_apps,
    a_retry_is_a_duplicate_inside_the_dedup_window_and_pushed_again_after_it,
    a_dead_senders_claim_is_taken_over_once_its_lease_runs_out,
);

pub fn message(event_id: &str, devices: Vec<Value>) -> Value {
    json!({"notification": {
        "event_id": event_id, "room_id": "!room:example.org", "type": "m.room.message",
        "sender": "@alice:example.org", "prio": "high", "counts": {"unread": 1},
        "devices": devices
    }})
}

/// Waits until `n` pushes were accepted and the outbox is empty (after that
/// no push can come again, so a duplicate would already show).
async fn settle_deliveries(s: &Setup, n: usize, timeout: Duration) -> HashMap<String, usize> {
    s.fake.wait_accepted(n, timeout).await;
    let store = s.open_store().await;
    assert_eq!(
        wait_outbox_empty(&*store, timeout).await,
        0,
        "outbox drained"
    );
    s.fake.accepted_by_event()
}

fn sub(s: &Setup, name: &str) -> (String, Subscription) {
    s.fake.subscribe(name)
}

async fn upstream_down_through_retries_then_back_delivers_each_push_once(s: Setup) {
    let gw = s.gateway().await;
    let (endpoint, key) = sub(&s, "alice");
    s.fake.set_behaviour("alice", Behaviour::Status(503));
    let down_since = Instant::now();
    for i in 0..20 {
        let started = Instant::now();
        let a = gw
            .notify(&message(
                &format!("$ev{i}"),
                vec![device(&endpoint, &key, json!({}))],
            ))
            .await;
        // Accepted and queued: not a 502, and the pushkey is not dead.
        assert_eq!(
            (a.status, a.body),
            (200, json!({"rejected": []})),
            "request {i}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    let store = s.open_store().await;
    assert_eq!(store.stats().await.expect("stats").outbox, 20);
    // Down until the outbox retried every push a few times (on average), within 10 s.
    let tried = s.fake.wait_for(80, Duration::from_secs(10)).await;
    eprintln!(
        "{} attempts while down for {:?}",
        tried.len(),
        down_since.elapsed()
    );
    assert!(
        s.fake.received().iter().all(|p| p.answered == 503),
        "nothing accepted while down"
    );
    assert!(tried.len() >= 80, "the outbox retried while down");
    s.fake.set_behaviour("alice", Behaviour::Status(201));

    let got = settle_deliveries(&s, 20, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 20, "every event delivered: {got:?}");
    assert!(got.values().all(|&n| n == 1), "each exactly once: {got:?}");
}

async fn slow_upstream_is_answered_within_the_budget_and_delivered_once(s: Setup) {
    let gw = s.gateway().await;
    let (endpoint, key) = sub(&s, "slow");
    s.fake
        .set_behaviour("slow", Behaviour::Delay(Duration::from_millis(1500), 201));
    let started = Instant::now();
    let a = gw
        .notify(&message("$slow", vec![device(&endpoint, &key, json!({}))]))
        .await;
    let took = started.elapsed();
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1400),
        "answered at answer_within (500 ms), not when the upstream answered: {took:?}"
    );
    // Queued while in flight, then deleted when the original attempt succeeded.
    let store = s.open_store().await;
    assert_eq!(store.stats().await.expect("stats").outbox, 1);
    let got = settle_deliveries(&s, 1, Duration::from_secs(5)).await;
    assert_eq!(got, HashMap::from([("$slow".to_owned(), 1)]));
    let outbox = s.dispatcher(Clock::system()).await;
    assert_eq!(outbox.drain_once().await, 0, "nothing left to send");
    assert_eq!(
        s.fake.received().len(),
        1,
        "the outbox did not send it a second time"
    );
}

/// The homeserver sends a request and closes the connection before the
/// answer (its own timeout, a restart): the push is still sent, once, and its
/// claim settled, so the homeserver's retry is a duplicate.
async fn a_homeserver_that_hangs_up_mid_request_does_not_cut_the_push_short(s: Setup) {
    use tokio::io::AsyncWriteExt;
    let gw = s.gateway().await;
    let (endpoint, key) = sub(&s, "gone");
    s.fake
        .set_behaviour("gone", Behaviour::Delay(Duration::from_millis(300), 201));
    let body = message("$gone", vec![device(&endpoint, &key, json!({}))]).to_string();
    let mut conn = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /_matrix/push/v1/notify HTTP/1.1\r\nhost: gateway\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("write head");
    conn.write_all(body.as_bytes()).await.expect("write body");
    // Gone before the push service answers (300 ms) and before the answer is due (500 ms):
    // the server drops the handler (checked: without the dispatch's protection the push is
    // cut off mid-flight and this test fails).
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(conn);

    // The claim is settled once the push service answered, with nobody waiting for it.
    let store = s.open_store().await;
    let claim = ClaimKey {
        app_id: "org.example.web".into(),
        pushkey: key.p256dh(),
        event_id: "$gone".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let state = loop {
        let states = store
            .claim_states(std::slice::from_ref(&claim))
            .await
            .expect("claim states");
        let state = states.into_iter().next().map(|(_, st)| st);
        if matches!(state, Some(ClaimState::Settled { .. })) || Instant::now() >= deadline {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        matches!(state, Some(ClaimState::Settled { .. })),
        "claim settled: {state:?}"
    );
    let got = settle_deliveries(&s, 1, Duration::from_secs(5)).await;
    assert_eq!(got, HashMap::from([("$gone".to_owned(), 1)]));
    let a = gw
        .notify(&message("$gone", vec![device(&endpoint, &key, json!({}))]))
        .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(
        s.fake.received().len(),
        1,
        "the retry was a duplicate of a settled claim"
    );
}

async fn a_temporary_failure_never_hides_the_rejected_list(s: Setup) {
    let gw = s.gateway().await;
    let (ep_dead, k_dead) = sub(&s, "dead");
    let (ep_busy, k_busy) = sub(&s, "busy");
    let (ep_ok, k_ok) = sub(&s, "ok");
    s.fake.set_behaviour("dead", Behaviour::Status(410));
    s.fake.set_behaviour("busy", Behaviour::Status(429));
    let a = gw
        .notify(&message(
            "$mixed",
            vec![
                device(&ep_ok, &k_ok, json!({})),
                device(&ep_busy, &k_busy, json!({})),
                device(&ep_dead, &k_dead, json!({})),
            ],
        ))
        .await;
    assert_eq!(
        (a.status, a.body),
        (200, json!({"rejected": [k_dead.p256dh()]}))
    );
    s.fake.set_behaviour("busy", Behaviour::Status(201));
    let got = settle_deliveries(&s, 2, Duration::from_secs(5)).await;
    assert_eq!(got, HashMap::from([("$mixed".to_owned(), 2)]));
    assert_eq!(s.fake.received_for("ok").len(), 1);
    assert_eq!(s.fake.received_for("dead").len(), 1, "not retried");
}

async fn homeserver_retry_is_pushed_once(s: Setup) {
    let gw = s.gateway().await;
    let (endpoint, key) = sub(&s, "alice");
    let body = message("$retry", vec![device(&endpoint, &key, json!({}))]);
    for attempt in 0..3 {
        let a = gw.notify(&body).await;
        assert_eq!(
            (a.status, a.body),
            (200, json!({"rejected": []})),
            "attempt {attempt}"
        );
    }
    // A second gateway on the same store (the homeserver retried through another instance).
    let other = s.gateway().await;
    let a = other.notify(&body).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    // Another event for the same device is a new push.
    let a = gw
        .notify(&message("$next", vec![device(&endpoint, &key, json!({}))]))
        .await;
    assert_eq!(a.status, 200);
    let got = settle_deliveries(&s, 2, Duration::from_secs(3)).await;
    assert_eq!(
        got,
        HashMap::from([("$retry".to_owned(), 1), ("$next".to_owned(), 1)])
    );
}

async fn concurrent_duplicates_are_pushed_once(s: Setup) {
    let gw = s.gateway().await;
    let (endpoint, key) = sub(&s, "alice");
    s.fake
        .set_behaviour("alice", Behaviour::Delay(Duration::from_millis(200), 201));
    let body = message("$race", vec![device(&endpoint, &key, json!({}))]);
    let answers = futures::future::join_all((0..6).map(|_| gw.notify(&body))).await;
    for a in &answers {
        assert_eq!((a.status, &a.body), (200, &json!({"rejected": []})));
    }
    // The same device twice in one request is one push, too.
    let twice = message(
        "$twice",
        vec![
            device(&endpoint, &key, json!({})),
            device(&endpoint, &key, json!({})),
        ],
    );
    assert_eq!(gw.notify(&twice).await.status, 200);
    let got = settle_deliveries(&s, 2, Duration::from_secs(3)).await;
    assert_eq!(
        got,
        HashMap::from([("$race".to_owned(), 1), ("$twice".to_owned(), 1)])
    );
}

async fn badge_only_notifications_are_not_deduplicated(s: Setup) {
    let gw = s.gateway().await;
    let (endpoint, key) = sub(&s, "alice");
    let badge = json!({"notification": {"counts": {"unread": 3}, "devices": [device(&endpoint, &key, json!({}))]}});
    assert_eq!(gw.notify(&badge).await.status, 200);
    assert_eq!(gw.notify(&badge).await.status, 200);
    let pushes = s.fake.wait_for(2, Duration::from_secs(3)).await;
    assert_eq!(
        pushes.len(),
        2,
        "badge updates carry no event id: each is sent"
    );
}

async fn rejection_is_remembered_across_a_restart_and_cleared_by_a_newer_pushkey_ts(s: Setup) {
    let (endpoint, key) = sub(&s, "gone");
    s.fake.set_behaviour("gone", Behaviour::Status(410));
    let old_ts = json!(1_700_000_000);
    {
        let gw = s.gateway().await;
        let a = gw
            .notify(&message("$a", vec![device(&endpoint, &key, json!({}))]))
            .await;
        assert_eq!(
            (a.status, a.body),
            (200, json!({"rejected": [key.p256dh()]}))
        );
    }
    let gw = s.gateway().await;
    // Answered from memory: the push service is not asked again.
    let mut dev = device(&endpoint, &key, json!({}));
    dev["pushkey_ts"] = old_ts.clone();
    let a = gw.notify(&message("$b", vec![dev.clone()])).await;
    assert_eq!(
        (a.status, a.body),
        (200, json!({"rejected": [key.p256dh()]}))
    );
    assert_eq!(s.fake.received().len(), 1);
    // Without pushkey_ts the memory holds too.
    let mut no_ts = dev.clone();
    no_ts.as_object_mut().expect("object").remove("pushkey_ts");
    let a = gw.notify(&message("$c", vec![no_ts])).await;
    assert_eq!(a.body, json!({"rejected": [key.p256dh()]}));
    assert_eq!(s.fake.received().len(), 1);

    // The app registered the same token again after it was found dead.
    s.fake.set_behaviour("gone", Behaviour::Status(201));
    let renewed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 5;
    dev["pushkey_ts"] = json!(renewed);
    let a = gw.notify(&message("$d", vec![dev.clone()])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    // Forgotten: an older pushkey_ts no longer matters.
    dev["pushkey_ts"] = old_ts;
    let a = gw.notify(&message("$e", vec![dev])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let got = settle_deliveries(&s, 2, Duration::from_secs(3)).await;
    assert_eq!(
        got,
        HashMap::from([("$d".to_owned(), 1), ("$e".to_owned(), 1)])
    );
}

async fn outbox_drops_a_push_after_max_age(s: Setup) {
    let gw = spawn(
        &s.config("")
            .replace("dispatch:\n", "dispatch:\n  max_age: 1s\n"),
    )
    .await;
    let (endpoint, key) = sub(&s, "down");
    s.fake.set_behaviour("down", Behaviour::Status(503));
    let a = gw
        .notify(&message("$old", vec![device(&endpoint, &key, json!({}))]))
        .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let store = s.open_store().await;
    assert_eq!(store.stats().await.expect("stats").outbox, 1);
    assert_eq!(wait_outbox_empty(&*store, Duration::from_secs(4)).await, 0);
    let attempts = s.fake.received().len();
    assert!(attempts >= 2, "retried before the drop: {attempts}");
    s.fake.set_behaviour("down", Behaviour::Status(201));
    let outbox = s.dispatcher(Clock::system()).await;
    assert_eq!(outbox.drain_once().await, 0, "nothing left to send");
    assert_eq!(s.fake.received().len(), attempts, "not sent after the drop");
}

mod store_down {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn ready_fails_and_temporary_failures_answer_502_when_postgres_is_gone() {
        let Some(s) = postgres().await else { return };
        let gw = s.gateway().await;
        let ready = gw.request("GET", "/ready", "").await;
        assert_eq!(
            (ready.status, ready.body),
            (200, json!({"status": "ready"}))
        );
        let StoreConfig::Postgres { url, .. } = &s.store else {
            unreachable!()
        };
        testkit::postgres::drop_database(url.expose()).await;

        let ready = gw.request("GET", "/ready", "").await;
        assert_eq!(ready.status, 503);
        assert_eq!(ready.body["errcode"], "M_UNKNOWN");
        // Delivered pushes still work without the store …
        let (endpoint, key) = s.fake.subscribe("ok");
        let a = gw
            .notify(&message("$x", vec![device(&endpoint, &key, json!({}))]))
            .await;
        assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
        // … but a temporary failure cannot be queued: the homeserver must retry.
        s.fake.set_behaviour("ok", Behaviour::Status(503));
        let a = gw
            .notify(&message("$y", vec![device(&endpoint, &key, json!({}))]))
            .await;
        assert_eq!(a.status, 502);
        assert_eq!(a.body["errcode"], "M_UNKNOWN");
    }

    #[tokio::test]
    async fn ready_answers_without_a_store() {
        let gw = spawn(WEB_APP).await;
        let ready = gw.request("GET", "/ready", "").await;
        assert_eq!(
            (ready.status, ready.body),
            (200, json!({"status": "ready"}))
        );
    }
}

/// Issue 15, disk amplification: one large request whose 100 devices all fail
/// temporarily stores its notification once, not once per device (before:
/// 100 copies of the content).
async fn a_hundred_queued_devices_store_their_notification_once(s: Setup) {
    let gw = s.gateway().await;
    let mut devices = Vec::new();
    for i in 0..100 {
        let name = format!("down{i}");
        let (endpoint, key) = sub(&s, &name);
        s.fake.set_behaviour(&name, Behaviour::Status(503));
        devices.push(device(&endpoint, &key, json!({})));
    }
    let mut body = message("$big", devices);
    let text = "x".repeat(60_000);
    body["notification"]["content"] = json!({"msgtype": "m.text", "body": text});
    let a = gw.notify(&body).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let store = s.open_store().await;
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.outbox, 100);
    // The 60,000-character content once, plus 100 small device rows.
    assert!(
        (60_000..90_000).contains(&stats.outbox_bytes),
        "outbox holds {} characters",
        stats.outbox_bytes
    );
}

/// Past `dispatch.outbox_max_entries`, temporary failures are not queued: the
/// request is answered 429 and its claims are given up, so the homeserver's
/// retry is sent again (not answered as a duplicate).
async fn past_the_outbox_cap_a_request_is_answered_429_and_its_retry_is_sent_again(s: Setup) {
    let gw = spawn(&s.config("  outbox_max_entries: 3\n")).await;
    let mut devices = Vec::new();
    for i in 0..5 {
        let name = format!("full{i}");
        let (endpoint, key) = sub(&s, &name);
        s.fake.set_behaviour(&name, Behaviour::Status(503));
        devices.push(device(&endpoint, &key, json!({})));
    }
    let body = message("$full", devices);
    let a = gw.notify(&body).await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(a.body["errcode"], "M_LIMIT_EXCEEDED");
    assert_eq!(
        a.body["error"],
        "too many requests in flight (the outbox caps, dispatch.outbox_max_*); retry later"
    );
    let store = s.open_store().await;
    assert_eq!(
        store.stats().await.expect("stats").outbox,
        0,
        "nothing queued"
    );
    let tried = s.fake.received().len();
    // The homeserver's retry: sent again, refused again by the cap.
    let again = gw.notify(&body).await;
    assert_eq!(again.status, 429);
    assert_eq!(
        s.fake.received().len(),
        tried + 5,
        "every device tried again"
    );
    // A request that fits is queued.
    let (endpoint, key) = sub(&s, "fits");
    s.fake.set_behaviour("fits", Behaviour::Status(503));
    let small = message("$small", vec![device(&endpoint, &key, json!({}))]);
    let ok = gw.notify(&small).await;
    assert_eq!((ok.status, ok.body), (200, json!({"rejected": []})));
    assert_eq!(store.stats().await.expect("stats").outbox, 1);
}

/// Issue 15, fairness: app A's 700 queued entries, all due before app B's one
/// and all to an endpoint that never answers (each send hangs until
/// `upstream_timeout`, 5 s), do not hold every outbox slot: B's entry is
/// taken and delivered at once, not after A's backlog (before: 700 / 64
/// rounds of 5 s each).
async fn one_apps_hanging_backlog_does_not_delay_another_apps_due_entry(s: Setup) {
    let store = s.open_store().await;
    let (hang_ep, hang_sub) = sub(&s, "hang");
    s.fake.set_behaviour("hang", Behaviour::Stall);
    let (b_ep, b_sub) = sub(&s, "b");
    let now = pushgate::store::now_ms();
    let entry = |app_id: &str, pushkey: String, event: String, device: Value, due_at| {
        pushgate::store::NewEntry {
            app_id: app_id.into(),
            pushkey,
            body: message(&event, vec![device]).to_string(),
            shared: None,
            created_at: now - 2_000,
            due_at,
            attempts: 1,
            last_error: None,
        }
    };
    let mut enqueue: Vec<_> = (0..700)
        .map(|i| {
            let dev = device(&hang_ep, &hang_sub, json!({}));
            entry(
                "org.example.web",
                hang_sub.p256dh(),
                format!("$a{i}"),
                dev,
                now - 1_000,
            )
        })
        .collect();
    let mut b_dev = device(&b_ep, &b_sub, json!({}));
    b_dev["app_id"] = json!("org.example.other");
    enqueue.push(entry(
        "org.example.other",
        b_sub.p256dh(),
        "$b".into(),
        b_dev,
        now,
    ));
    store
        .settle(pushgate::store::Settlement {
            now,
            enqueue,
            ..Default::default()
        })
        .await
        .expect("enqueued");

    let started = Instant::now();
    let config = s.config("").replace(
        "store:",
        &format!("{}store:", crate::upstream::OTHER_WEB_APP),
    );
    let _gw = spawn(&config).await;
    let deadline = started + Duration::from_secs(4);
    while s.fake.received_for("b").is_empty() && Instant::now() < deadline {
        s.fake
            .wait_for(s.fake.received().len() + 1, Duration::from_millis(100))
            .await;
    }
    let took = started.elapsed();
    eprintln!("app B's entry delivered {took:?} after the gateway started");
    assert_eq!(
        s.fake
            .received_for("b")
            .iter()
            .map(|p| p.answered)
            .collect::<Vec<_>>(),
        [201],
        "app B's entry delivered within 4 s (took {took:?}), while app A's sends hang"
    );
    assert!(
        !s.fake.received_for("hang").is_empty(),
        "app A's entries were being sent meanwhile"
    );
}

/// The outbox steps on a manual clock: an entry due in a minute is not taken
/// until the clock says a minute passed, then sent at once; one older than
/// `dispatch.max_age` (1 h by default) is dropped unsent. No waiting.
async fn the_outbox_follows_its_clock_for_due_times_and_max_age(s: Setup) {
    let start = pushgate::store::now_ms();
    let clock = Clock::manual(start);
    let outbox = s.dispatcher(clock.clone()).await;
    let (ep, key) = sub(&s, "later");
    let (ep_old, key_old) = sub(&s, "old");
    s.fake.set_behaviour("old", Behaviour::Status(503));
    let entry = |event: &str, ep: &str, key: &Subscription, due_at| NewEntry {
        app_id: "org.example.web".into(),
        pushkey: key.p256dh(),
        body: message(event, vec![device(ep, key, json!({}))]).to_string(),
        shared: None,
        created_at: start,
        due_at,
        attempts: 1,
        last_error: None,
    };
    let enqueue = vec![
        entry("$later", &ep, &key, start + 60_000),
        entry("$old", &ep_old, &key_old, start + 2 * 3_600_000),
    ];
    outbox
        .store
        .settle(Settlement {
            now: start,
            enqueue,
            ..Settlement::default()
        })
        .await
        .expect("enqueued");

    assert_eq!(outbox.drain_once().await, 0, "not due yet");
    clock.advance(Duration::from_millis(59_999));
    assert_eq!(outbox.drain_once().await, 0, "not due a millisecond before");
    assert!(s.fake.received().is_empty());
    clock.advance(Duration::from_millis(1));
    assert_eq!(outbox.drain_once().await, 1, "due now");
    assert_eq!(
        s.fake.accepted_by_event(),
        HashMap::from([("$later".to_owned(), 1)])
    );
    assert_eq!(outbox.store.stats().await.expect("stats").outbox, 1);

    // Two hours later the other entry is due, but past max_age: dropped unsent.
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(outbox.drain_once().await, 1);
    assert_eq!(s.fake.received().len(), 1, "not sent");
    assert_eq!(outbox.store.stats().await.expect("stats").outbox, 0);
}

/// The store's fair take: each app's earliest due first, at most `per_app`
/// of one app, none of the skipped apps, ranked among the first `window` due.
async fn a_fair_take_shares_its_room_among_apps(s: Setup) {
    use pushgate::store::Fairness;
    let store = s.open_store().await;
    let entry = |app: &str, i: i64| NewEntry {
        app_id: app.into(),
        pushkey: format!("k{i}"),
        body: format!("{app}{i}"),
        shared: None,
        created_at: 0,
        due_at: i,
        attempts: 0,
        last_error: None,
    };
    // a: due at 1..=10, b: 11..=13, c: 14.
    let mut enqueue: Vec<_> = (1..=10).map(|i| entry("a", i)).collect();
    enqueue.extend((11..=13).map(|i| entry("b", i)));
    enqueue.push(entry("c", 14));
    store
        .settle(Settlement {
            now: 0,
            enqueue,
            ..Settlement::default()
        })
        .await
        .expect("enqueued");
    let bodies = |taken: Vec<pushgate::store::Entry>| {
        let mut v: Vec<(String, String)> = taken.into_iter().map(|e| (e.app_id, e.body)).collect();
        v.sort();
        v
    };
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    let fair = |per_app, window, skip: &[&str]| Fairness {
        per_app,
        window,
        skip_apps: skip.iter().map(|a| a.to_string()).collect(),
    };
    // Two of each app, the earliest due; limit 5 keeps the five earliest of those.
    let taken = store
        .take_due_fair(100, 1_000, 5, &fair(2, 100, &[]))
        .await
        .expect("take");
    assert_eq!(
        bodies(taken),
        [
            pair("a", "a1"),
            pair("a", "a2"),
            pair("b", "b11"),
            pair("b", "b12"),
            pair("c", "c14")
        ]
    );
    // Leased: not taken again; a is skipped.
    let taken = store
        .take_due_fair(100, 1_000, 10, &fair(5, 100, &["a"]))
        .await
        .expect("take");
    assert_eq!(bodies(taken), [pair("b", "b13")]);
    // Ranked among the first 3 due (a3, a4, a5): only a's.
    let taken = store
        .take_due_fair(100, 1_000, 10, &fair(2, 3, &[]))
        .await
        .expect("take");
    assert_eq!(bodies(taken), [pair("a", "a3"), pair("a", "a4")]);
    // Not due yet at 7: a5, a6, a7 are; skipping a leaves nothing.
    let taken = store
        .take_due_fair(7, 1_000, 10, &fair(8, 100, &["a"]))
        .await
        .expect("take");
    assert!(taken.is_empty());
    let taken = store
        .take_due_fair(7, 1_000, 10, &fair(8, 100, &[]))
        .await
        .expect("take");
    assert_eq!(
        bodies(taken),
        [pair("a", "a5"), pair("a", "a6"), pair("a", "a7")]
    );
}

impl Outbox {
    /// One `/notify` body through this dispatcher; returns once the claims it
    /// settles after its answer are written, so that the next request sees them.
    async fn notify(&self, body: &Value) -> pushgate::dispatch::Answer {
        let n = pushgate::notification::parse(body.to_string().as_bytes(), 100).expect("valid");
        let answer = self.d.dispatch(n, "test".to_owned()).await;
        assert!(
            self.d
                .finish_after_answer_work(Duration::from_secs(10))
                .await,
            "the claims were settled"
        );
        answer
    }
}

/// A homeserver retry inside `dispatch.dedup_window` (10 min by default) is
/// answered as a duplicate; once the window has passed on the dispatcher's
/// clock, the same request is pushed again. No waiting.
async fn a_retry_is_a_duplicate_inside_the_dedup_window_and_pushed_again_after_it(s: Setup) {
    let clock = Clock::manual(pushgate::store::now_ms());
    let outbox = s.dispatcher(clock.clone()).await;
    let (ep, key) = sub(&s, "alice");
    let body = message("$window", vec![device(&ep, &key, json!({}))]);
    let counts = |a: pushgate::dispatch::Answer| (a.delivered, a.duplicates, a.unqueued);

    assert_eq!(counts(outbox.notify(&body).await), (1, 0, 0), "first");
    clock.advance(Duration::from_millis(600_000 - 1));
    assert_eq!(
        counts(outbox.notify(&body).await),
        (0, 1, 0),
        "a millisecond before the window ends"
    );
    clock.advance(Duration::from_millis(2));
    assert_eq!(
        counts(outbox.notify(&body).await),
        (1, 0, 0),
        "a millisecond after"
    );
    assert_eq!(
        s.fake.accepted_by_event(),
        HashMap::from([("$window".to_owned(), 2)])
    );
}

/// A claim whose sender died before settling it (made here straight in the
/// store) holds a retry off, and the retry is answered for the homeserver to
/// retry again; once the claim's lease (here 10.5 s: `answer_within` plus
/// `upstream_timeout` plus 5 s) has run out on the clock, the next retry
/// takes the claim over and pushes.
async fn a_dead_senders_claim_is_taken_over_once_its_lease_runs_out(s: Setup) {
    let start = pushgate::store::now_ms();
    let clock = Clock::manual(start);
    let outbox = s.dispatcher(clock.clone()).await;
    let (ep, key) = sub(&s, "alice");
    let claim = pushgate::store::ClaimKey {
        app_id: "org.example.web".into(),
        pushkey: key.p256dh().as_str().into(),
        event_id: "$orphan".into(),
    };
    let granted = outbox
        .store
        .claim(&[claim], start, start + 10_500, start - 600_000)
        .await
        .expect("claimed");
    assert_eq!(granted.len(), 1);
    let body = message("$orphan", vec![device(&ep, &key, json!({}))]);
    let counts = |a: pushgate::dispatch::Answer| (a.delivered, a.duplicates, a.unqueued);

    clock.advance(Duration::from_millis(10_500));
    assert_eq!(
        counts(outbox.notify(&body).await),
        (0, 0, 1),
        "the lease's last millisecond: still the dead sender's"
    );
    assert!(s.fake.received().is_empty());
    clock.advance(Duration::from_millis(1));
    assert_eq!(counts(outbox.notify(&body).await), (1, 0, 0), "taken over");
    assert_eq!(
        s.fake.accepted_by_event(),
        HashMap::from([("$orphan".to_owned(), 1)])
    );
}
