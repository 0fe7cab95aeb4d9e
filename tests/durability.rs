//! Crash safety and several instances, with real gateway processes: `kill -9`
//! with a full outbox (and requests still arriving) loses no accepted push and
//! doubles none; two gateways on one PostgreSQL drain one outbox, each push
//! once. Counts are taken at the fake Web Push service.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use testkit::webpush::{Behaviour, FakeWebPush, Subscription};

mod process;

use process::Gateway;

/// The delivery policy of these tests, then the `store` YAML.
///
/// The upstream timeout is long (20 s, so an outbox lease of 27 s) so that a
/// machine too loaded to read the fake's answer in time does not make the
/// gateway send again a push the fake already took (a timeout is a
/// temporary failure, retried), nor let a lease run out mid-send. The cost:
/// after `kill -9`, the dead gateway's leased entries fall due 27 s later.
fn write_config(dir: &Path, name: &str, store: &str) -> PathBuf {
    process::write_config(
        dir,
        name,
        &format!(
            "dispatch:\n  upstream_timeout: {UPSTREAM_TIMEOUT_S}s\n  retry_initial_delay: 1s\n  retry_max_delay: 2s\n{store}"
        ),
    )
}

const UPSTREAM_TIMEOUT_S: u64 = 20;

/// How long a delivery phase may take: the lease (upstream timeout + 7 s)
/// twice over, and a minute for the sends themselves.
const DELIVERY_WITHIN: Duration = Duration::from_secs(2 * (UPSTREAM_TIMEOUT_S + 7) + 60);

fn body(event: &str, endpoint: &str, sub: &Subscription) -> String {
    json!({"notification": {
        "event_id": event, "room_id": "!r:example.org", "type": "m.room.message",
        "sender": "@a:example.org", "counts": {"unread": 1},
        "devices": [{"app_id": "org.example.web", "pushkey": sub.p256dh(),
                     "data": {"endpoint": endpoint, "auth": sub.auth()}}]
    }})
    .to_string()
}

/// Sends one notification per event to the gateways (round robin), 50 at a
/// time; returns the events answered 200 `{"rejected": []}` (accepted).
async fn send_all(
    addrs: &[String],
    events: Vec<String>,
    endpoint: &str,
    sub: &Subscription,
) -> HashSet<String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let addrs = Arc::new(addrs.to_vec());
    futures::stream::iter(events.into_iter().enumerate())
        .map(|(i, event)| {
            let (client, addrs) = (client.clone(), addrs.clone());
            let body = body(&event, endpoint, sub);
            async move {
                let url = format!("http://{}/_matrix/push/v1/notify", addrs[i % addrs.len()]);
                let resp = client.post(url).body(body).send().await.ok()?;
                let status = resp.status();
                let answer: Value = resp.json().await.ok()?;
                if status != 200 {
                    eprintln!("{event}: {status} {answer}");
                    return None;
                }
                (answer == json!({"rejected": []})).then_some(event)
            }
        })
        .buffer_unordered(50)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

fn events(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("${prefix}{i}")).collect()
}

async fn outbox_len(store: &pushgate::config::StoreConfig) -> i64 {
    let s = pushgate::store::open(store)
        .await
        .expect("open")
        .expect("store");
    s.stats().await.expect("stats").outbox
}

/// Every accepted event delivered, none twice (events the gateway queued but
/// could not answer before it died may be delivered too — also once).
fn assert_each_once(delivered: &HashMap<String, usize>, accepted: &HashSet<String>) {
    let missing: Vec<_> = accepted
        .iter()
        .filter(|e| !delivered.contains_key(*e))
        .collect();
    assert!(
        missing.is_empty(),
        "{} accepted pushes lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let doubled: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "{} pushes delivered more than once, e.g. {:?}",
        doubled.len(),
        doubled.first()
    );
}

/// 1,000 pushes accepted while the push service is down (so they sit in the
/// outbox), 300 more arriving while the gateway is killed with SIGKILL; after a
/// restart with the service back, all accepted pushes are delivered, each once.
async fn kill_9_with_a_full_outbox_loses_nothing(
    store_yaml: &str,
    store: pushgate::config::StoreConfig,
    dir: &Path,
) {
    pushgate::net::install_crypto_provider();
    let fake = FakeWebPush::start().await;
    let (endpoint, sub) = fake.subscribe("alice");
    fake.set_behaviour("alice", Behaviour::Status(503));
    let config = write_config(dir, "gw", store_yaml);

    let gw = Gateway::start(&config);
    let mut accepted = send_all(
        std::slice::from_ref(&gw.addr),
        events("a", 1000),
        &endpoint,
        &sub,
    )
    .await;
    assert_eq!(
        accepted.len(),
        1000,
        "all accepted while the push service is down"
    );
    assert_eq!(outbox_len(&store).await, 1000);

    // Kill it while a second wave is arriving.
    let more = {
        let (addr, endpoint, sub) = (gw.addr.clone(), endpoint.clone(), sub.clone());
        tokio::spawn(async move { send_all(&[addr], events("b", 300), &endpoint, &sub).await })
    };
    // Killed once the second wave reaches the push service (within 10 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while second_wave_seen(&fake) < 20 && tokio::time::Instant::now() < deadline {
        let seen = fake.received().len();
        fake.wait_for(seen + 1, Duration::from_millis(100)).await;
    }
    gw.kill_9();
    let second_wave = more.await.expect("second wave");
    assert!(
        second_wave.len() < 300,
        "the kill interrupted the second wave"
    );
    accepted.extend(second_wave);
    assert_eq!(
        fake.accepted_by_event().len(),
        0,
        "nothing delivered while the service was down"
    );

    fake.set_behaviour("alice", Behaviour::Status(201));
    let _gw = Gateway::start(&config);
    fake.wait_accepted(accepted.len(), DELIVERY_WITHIN).await;
    // Drained: nothing left that could be sent again.
    let left = process::wait_outbox_empty(&store, DELIVERY_WITHIN).await;
    assert_each_once(&fake.accepted_by_event(), &accepted);
    assert_eq!(left, 0, "outbox drained");
}

/// Pushes of the second wave (`$b…` events) that reached the push service.
fn second_wave_seen(fake: &FakeWebPush) -> usize {
    fake.received()
        .iter()
        .filter(|p| {
            p.payload
                .as_ref()
                .is_ok_and(|v| v["event_id"].as_str().is_some_and(|e| e.starts_with("$b")))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_kill_9_with_a_full_outbox_loses_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("pushgate.db");
    let yaml = format!("store:\n  sqlite:\n    path: '{}'\n", path.display());
    kill_9_with_a_full_outbox_loses_nothing(
        &yaml,
        pushgate::config::StoreConfig::Sqlite { path },
        dir.path(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_kill_9_with_a_full_outbox_loses_nothing() {
    let Some(url) = testkit::postgres::fresh_database().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let yaml = format!("store:\n  postgres:\n    url: '{url}'\n");
    let store = pushgate::config::StoreConfig::Postgres {
        url: url.clone().into(),
        max_connections: 2,
    };
    kill_9_with_a_full_outbox_loses_nothing(&yaml, store, dir.path()).await;
}

/// Two gateway processes on one PostgreSQL behind a (round-robin) balancer:
/// 1,000 pushes queued through both while the service is down, plus every
/// 10th request retried through the other instance; once the service is back,
/// both outbox workers drain the one outbox and each push arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_on_one_postgres_deliver_each_push_once() {
    let Some(url) = testkit::postgres::fresh_database().await else {
        return;
    };
    pushgate::net::install_crypto_provider();
    let dir = tempfile::tempdir().expect("dir");
    let yaml = format!("store:\n  postgres:\n    url: '{url}'\n");
    let fake = FakeWebPush::start().await;
    let (endpoint, sub) = fake.subscribe("alice");
    fake.set_behaviour("alice", Behaviour::Status(503));
    let a = Gateway::start(&write_config(dir.path(), "a", &yaml));
    let b = Gateway::start(&write_config(dir.path(), "b", &yaml));
    let addrs = [a.addr.clone(), b.addr.clone()];

    let accepted = send_all(&addrs, events("e", 1000), &endpoint, &sub).await;
    assert_eq!(accepted.len(), 1000);
    // The homeserver retries some through the other instance (odd offset: the other gateway).
    let retried: Vec<String> = events("e", 1000).into_iter().step_by(10).collect();
    let again = send_all(
        &[addrs[1].clone(), addrs[0].clone()],
        retried.clone(),
        &endpoint,
        &sub,
    )
    .await;
    assert_eq!(again.len(), retried.len(), "retries answered 200");

    fake.set_behaviour("alice", Behaviour::Status(201));
    fake.wait_accepted(1000, DELIVERY_WITHIN).await;
    let store = pushgate::config::StoreConfig::Postgres {
        url: url.clone().into(),
        max_connections: 2,
    };
    // Drained: nothing left that could be sent again.
    let left = process::wait_outbox_empty(&store, DELIVERY_WITHIN).await;
    let delivered = fake.accepted_by_event();
    assert_eq!(delivered.len(), 1000);
    assert_each_once(&delivered, &accepted);
    let by_gateway = fake.accepted_by_vapid_key();
    assert_eq!(
        by_gateway.len(),
        2,
        "both instances drained the outbox: {by_gateway:?}"
    );
    assert_eq!(left, 0);
    drop((a, b));
}
