//! Soak: a real gateway process under a steady load (SQLite store, Web Push
//! fake) for a bounded time; every request answered 200 and delivered once,
//! and the process's resident memory and open file descriptors stay flat.
//!
//! 60 seconds by default (in the README's test command); the long soak is
//! `PUSHGATE_SOAK_SECS=600 cargo test --release --test soak -- --nocapture`.

mod process;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::webpush::FakeWebPush;

use process::Gateway;

/// The load: 8 workers, each pausing between requests (about 150 requests/s in all).
const WORKERS: usize = 8;
const PAUSE: Duration = Duration::from_millis(40);

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_keeps_memory_and_descriptors_flat() {
    let secs: u64 = std::env::var("PUSHGATE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
        .clamp(10, 3600);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!(
        "store:\n  sqlite:\n    path: '{}'\n",
        dir.path().join("soak.db").display()
    );
    let gw = Arc::new(Gateway::start(&process::write_config(
        dir.path(),
        "soak",
        &store,
    )));
    let pid = gw.pid();
    let fake = FakeWebPush::start().await;
    let (endpoint, sub) = fake.subscribe("soak");
    pushgate::net::install_crypto_provider();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let sent = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (client, gw, sent) = (client.clone(), gw.clone(), sent.clone());
            let (endpoint, sub) = (endpoint.clone(), sub.clone());
            tokio::spawn(async move {
                let mut bad = Vec::new();
                let mut i = 0u64;
                while Instant::now() < until && i < 1_000_000 {
                    let body = json!({"notification": {
                        "event_id": format!("$s{w}-{i}"), "room_id": "!r:example.org",
                        "type": "m.room.message", "sender": "@a:example.org",
                        "content": {"msgtype": "m.text", "body": "soak"}, "counts": {"unread": 1},
                        "devices": [{"app_id": "org.example.web", "pushkey": sub.p256dh(),
                                     "data": {"endpoint": endpoint, "auth": sub.auth()}}]
                    }});
                    let r = client
                        .post(format!("http://{}/_matrix/push/v1/notify", gw.addr))
                        .json(&body)
                        .send()
                        .await;
                    match r {
                        Ok(resp) if resp.status() == 200 => {}
                        Ok(resp) => bad.push(format!("status {}", resp.status())),
                        Err(e) => bad.push(e.to_string()),
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                    tokio::time::sleep(PAUSE).await;
                }
                bad
            })
        })
        .collect();

    // Sample every second; the first fifth of the run is warm-up.
    let mut samples = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push((started.elapsed(), rss_kib(pid), open_fds(pid)));
    }
    let mut bad = Vec::new();
    for w in workers {
        bad.extend(w.await.expect("worker"));
    }
    let sent = sent.load(Ordering::SeqCst);
    eprintln!(
        "soak: {secs} s, {sent} requests ({:.0}/s); samples (s, RSS KiB, fds): {:?}",
        sent as f64 / secs as f64,
        samples
            .iter()
            .step_by((samples.len() / 10).max(1))
            .map(|(t, r, f)| (t.as_secs(), r, f))
            .collect::<Vec<_>>()
    );
    assert!(
        bad.is_empty(),
        "{} failed requests: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(sent as u64 >= secs * 20, "the load ran ({sent} requests)");

    let warm = samples.len() / 5;
    let steady = &samples[..];
    let base_rss = steady[warm..].iter().map(|s| s.1).min().unwrap_or(0);
    let peak_rss = steady[warm..].iter().map(|s| s.1).max().unwrap_or(0);
    let base_fds = steady[warm].2;
    let peak_fds = steady[warm..].iter().map(|s| s.2).max().unwrap_or(0);
    // Flat: after warm-up, memory grows by at most 10 % + 4 MiB and descriptors by at most 16.
    assert!(
        peak_rss <= base_rss + base_rss / 10 + 4096,
        "RSS grew from {base_rss} KiB to {peak_rss} KiB"
    );
    assert!(
        peak_fds <= base_fds + 16,
        "open descriptors grew from {base_fds} to {peak_fds}"
    );

    fake.wait_accepted(sent, Duration::from_secs(30)).await;
    // Drained: nothing left that could be sent again.
    let outbox = pushgate::config::StoreConfig::Sqlite {
        path: dir.path().join("soak.db"),
    };
    assert_eq!(
        process::wait_outbox_empty(&outbox, Duration::from_secs(30)).await,
        0
    );
    let got = fake.accepted_by_event();
    assert_eq!(got.len(), sent, "every request delivered");
    assert!(got.values().all(|&n| n == 1), "a push was doubled");
}
