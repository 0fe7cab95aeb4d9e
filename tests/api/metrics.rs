//! Prometheus metrics and in-flight limits: exact counter values after a
//! known sequence of requests, scraped from the real listener; the
//! exposition checked by `promtool` (Debian's `prometheus` package).

use std::time::Duration;

use serde_json::{json, Value};
use testkit::webpush::{Behaviour, FakeWebPush};

use crate::helpers::{sample, spawn, TestGateway};
use crate::webpush::{device, WEB_APP};

const METRICS: &str =
    "metrics:\n  prometheus:\n    enabled: true\n    address: 127.0.0.1\n    port: 0\n";
const APP: &str = "pushkin=\"org.example.web\"";

fn message(event: &str, devices: Vec<Value>) -> Value {
    json!({"notification": {
        "event_id": event, "room_id": "!room:example.org", "type": "m.room.message",
        "sender": "@alice:example.org", "content": {"msgtype": "m.text", "body": "hi"},
        "counts": {"unread": 1}, "devices": devices
    }})
}

async fn gateway(extra: &str) -> (TestGateway, FakeWebPush) {
    let gw = spawn(&format!("{WEB_APP}{METRICS}{extra}")).await;
    let fake = FakeWebPush::start().await;
    (gw, fake)
}

/// Asserts every `(series, value)` of `want` in one scrape, listing all mismatches.
async fn assert_metrics(gw: &TestGateway, want: &[(&str, f64)]) -> String {
    let (_, text) = gw.scrape().await;
    let wrong: Vec<String> = want
        .iter()
        .filter(|(s, v)| sample(&text, s) != Some(*v))
        .map(|(s, v)| format!("{s}: want {v}, got {:?}", sample(&text, s)))
        .collect();
    assert!(wrong.is_empty(), "{}\n---\n{text}", wrong.join("\n"));
    text
}

#[tokio::test]
async fn counters_after_a_known_sequence_of_requests() {
    let (gw, fake) = gateway("").await;
    let (ok_endpoint, ok_sub) = fake.subscribe("ok");
    let (dead_endpoint, dead_sub) = fake.subscribe("dead");
    fake.set_behaviour("dead", Behaviour::Status(410));
    let unknown = json!({"app_id": "org.example.nobody", "pushkey": "k"});

    let a = gw
        .notify(&message(
            "$one",
            vec![
                device(&ok_endpoint, &ok_sub, json!({})),
                device(&dead_endpoint, &dead_sub, json!({})),
                unknown,
            ],
        ))
        .await;
    assert_eq!(a.status, 200);
    let bad = gw.request("POST", "/_matrix/push/v1/notify", "{").await;
    assert_eq!(bad.status, 400);

    let (ctype, _) = gw.scrape().await;
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    let text = assert_metrics(
        &gw,
        &[
            ("sygnal_notifications_received_total", 1.0),
            ("sygnal_notifications_devices_received_total", 3.0),
            (&format!("sygnal_per_pushkin_type_total{{{APP}}}"), 2.0),
            ("sygnal_pushgateway_status_codes_total{code=\"200\"}", 1.0),
            ("sygnal_pushgateway_status_codes_total{code=\"400\"}", 1.0),
            ("sygnal_notify_time_count{code=\"200\"}", 1.0),
            ("sygnal_notify_time_count{code=\"400\"}", 1.0),
            (
                "sygnal_requests_in_flight{resource=\"V1NotifyHandler\"}",
                0.0,
            ),
            ("sygnal_webpush_request_time_count", 2.0),
            ("sygnal_active_webpush_requests", 0.0),
            (
                &format!("pushgate_webpush_status_codes_total{{code=\"201\",{APP}}}"),
                1.0,
            ),
            (
                &format!("pushgate_webpush_status_codes_total{{code=\"410\",{APP}}}"),
                1.0,
            ),
            (
                &format!("pushgate_outcomes_total{{outcome=\"delivered\",{APP}}}"),
                1.0,
            ),
            (
                &format!("pushgate_outcomes_total{{outcome=\"rejected\",{APP}}}"),
                1.0,
            ),
            (
                "pushgate_outcomes_total{outcome=\"unroutable\",pushkin=\"(none)\"}",
                1.0,
            ),
            (
                &format!("sygnal_inflight_request_limit_drop_total{{{APP}}}"),
                0.0,
            ),
            ("pushgate_limit_hits_total{limit=\"global\"}", 0.0),
        ],
    )
    .await;
    let opened = sample(
        &text,
        &format!("pushgate_upstream_connections_opened_total{{{APP}}}"),
    )
    .expect("connection counter");
    assert!((1.0..=2.0).contains(&opened), "{opened} connections");
    // Neither pushkeys nor the client's unknown app id end up in labels.
    assert!(!text.contains(&ok_sub.p256dh()) && !text.contains("org.example.nobody"));
    promtool_check(&text);
}

#[tokio::test]
async fn store_metrics_outbox_dedup_and_remembered_rejections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!(
        "store:\n  sqlite:\n    path: '{}'\ndispatch:\n  answer_within: 300ms\n  retry_initial_delay: 1h\n  retry_max_delay: 1h\n",
        dir.path().join("m.db").display()
    );
    let (gw, fake) = gateway(&store).await;
    let (down_endpoint, down_sub) = fake.subscribe("down");
    let (dead_endpoint, dead_sub) = fake.subscribe("dead");
    fake.set_behaviour("down", Behaviour::Status(503));
    fake.set_behaviour("dead", Behaviour::Status(410));
    let devices = vec![
        device(&down_endpoint, &down_sub, json!({})),
        device(&dead_endpoint, &dead_sub, json!({})),
    ];
    let first = gw.notify(&message("$a", devices.clone())).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, json!({"rejected": [dead_sub.p256dh()]}));
    // The same event again: the queued device is a duplicate; a new event: the dead one is remembered.
    let again = gw.notify(&message("$a", devices[..1].to_vec())).await;
    assert_eq!(again.status, 200);
    let later = gw.notify(&message("$b", devices[1..].to_vec())).await;
    assert_eq!(later.body, json!({"rejected": [dead_sub.p256dh()]}));

    let text = assert_metrics(
        &gw,
        &[
            ("pushgate_store_up", 1.0),
            ("pushgate_store_rows{table=\"outbox\"}", 1.0),
            ("pushgate_store_rows{table=\"rejections\"}", 1.0),
            (&format!("pushgate_outbox_queued_total{{{APP}}}"), 1.0),
            (
                &format!("pushgate_outcomes_total{{outcome=\"temporary\",{APP}}}"),
                1.0,
            ),
            (
                &format!("pushgate_outcomes_total{{outcome=\"duplicate\",{APP}}}"),
                1.0,
            ),
            (
                &format!("pushgate_outcomes_total{{outcome=\"remembered\",{APP}}}"),
                1.0,
            ),
            (
                &format!("pushgate_outcomes_total{{outcome=\"rejected\",{APP}}}"),
                1.0,
            ),
            ("sygnal_webpush_request_time_count", 2.0),
        ],
    )
    .await;
    let age = sample(&text, "pushgate_outbox_oldest_age_seconds").expect("age");
    assert!((0.0..60.0).contains(&age) && age > 0.0, "oldest age {age}");
    promtool_check(&text);
}

#[tokio::test]
async fn global_in_flight_limit_answers_429_and_is_counted() {
    let (gw, fake) = gateway("limits:\n  max_inflight_requests: 1\n").await;
    let (endpoint, sub) = fake.subscribe("slow");
    fake.set_behaviour("slow", Behaviour::Delay(Duration::from_secs(2), 201));
    let body = message("$slow", vec![device(&endpoint, &sub, json!({}))]);
    let first = gw.notify(&body);
    let second = async {
        // The first request holds the only slot once its push is upstream.
        assert_eq!(fake.wait_for(1, Duration::from_secs(10)).await.len(), 1);
        gw.notify(&message("$other", vec![device(&endpoint, &sub, json!({}))]))
            .await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 429);
    assert_eq!(second.body["errcode"], "M_LIMIT_EXCEEDED");
    assert_eq!(second.body["retry_after_ms"], 1000);
    assert_eq!(
        second
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_metrics(
        &gw,
        &[
            ("pushgate_limit_hits_total{limit=\"global\"}", 1.0),
            ("sygnal_pushgateway_status_codes_total{code=\"429\"}", 1.0),
            ("sygnal_notifications_received_total", 1.0),
        ],
    )
    .await;
    assert_eq!(fake.received().len(), 1);
}

#[tokio::test]
async fn app_in_flight_limit_without_a_store_answers_429() {
    let yaml = WEB_APP.replace(
        "    allow_http_endpoints: true\n",
        "    allow_http_endpoints: true\n    inflight_request_limit: 1\n",
    );
    let gw = spawn(&format!("{yaml}{METRICS}")).await;
    let fake = FakeWebPush::start().await;
    let (e1, s1) = fake.subscribe("one");
    let (e2, s2) = fake.subscribe("two");
    fake.set_behaviour("one", Behaviour::Delay(Duration::from_millis(300), 201));
    fake.set_behaviour("two", Behaviour::Delay(Duration::from_millis(300), 201));
    let a = gw
        .notify(&message(
            "$x",
            vec![device(&e1, &s1, json!({})), device(&e2, &s2, json!({}))],
        ))
        .await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(a.body["errcode"], "M_LIMIT_EXCEEDED");
    assert_eq!(fake.received().len(), 1);
    assert_metrics(
        &gw,
        &[
            (
                &format!("sygnal_inflight_request_limit_drop_total{{{APP}}}"),
                1.0,
            ),
            ("pushgate_limit_hits_total{limit=\"app\"}", 1.0),
            (
                &format!("pushgate_outcomes_total{{outcome=\"delivered\",{APP}}}"),
                1.0,
            ),
            (
                &format!("pushgate_outcomes_total{{outcome=\"temporary\",{APP}}}"),
                1.0,
            ),
        ],
    )
    .await;
}

/// `promtool check metrics` on the exposition. CI installs promtool and sets
/// `PUSHGATE_REQUIRE_PROMTOOL`; elsewhere the check is skipped when it is missing.
fn promtool_check(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("PUSHGATE_REQUIRE_PROMTOOL").is_none(),
                "promtool is required here but cannot run: {e}"
            );
            eprintln!("promtool not found: exposition format not checked");
            return;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn app_in_flight_limit_with_a_store_queues_the_excess() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = WEB_APP.replace(
        "    allow_http_endpoints: true\n",
        "    allow_http_endpoints: true\n    inflight_request_limit: 1\n",
    );
    let store = format!(
        "store:\n  sqlite:\n    path: '{}'\ndispatch:\n  retry_initial_delay: 200ms\n",
        dir.path().join("l.db").display()
    );
    let gw = spawn(&format!("{yaml}{METRICS}{store}")).await;
    let fake = FakeWebPush::start().await;
    let (e1, s1) = fake.subscribe("one");
    let (e2, s2) = fake.subscribe("two");
    fake.set_behaviour("one", Behaviour::Delay(Duration::from_millis(300), 201));
    fake.set_behaviour("two", Behaviour::Delay(Duration::from_millis(300), 201));
    let a = gw
        .notify(&message(
            "$q",
            vec![device(&e1, &s1, json!({})), device(&e2, &s2, json!({}))],
        ))
        .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    // The device over the limit is delivered by the outbox, once.
    fake.wait_accepted(2, Duration::from_secs(10)).await;
    gw.wait_outbox_empty(Duration::from_secs(10)).await;
    let got = fake.accepted_by_event();
    assert_eq!(got.get("$q"), Some(&2), "{got:?}");
    assert_metrics(
        &gw,
        &[
            (
                &format!("sygnal_inflight_request_limit_drop_total{{{APP}}}"),
                1.0,
            ),
            (&format!("pushgate_outbox_queued_total{{{APP}}}"), 1.0),
            ("pushgate_limit_hits_total{limit=\"app\"}", 0.0),
        ],
    )
    .await;
}

/// Every family the reference's Grafana dashboard and the usual certificate
/// alert query, scraped from a gateway with an FCM app that sent one push
/// and an APNs app on a client certificate.
#[tokio::test]
async fn the_reference_dashboard_s_families_are_all_exported() {
    use testkit::fcm::{service_account_json, FakeGoogle, SERVICE_ACCOUNT_KEY};
    let google = FakeGoogle::start(3600).await;
    let dir = tempfile::tempdir().expect("dir");
    let sa = dir.path().join("sa.json");
    std::fs::write(
        &sa,
        service_account_json(&google.token_uri(), SERVICE_ACCOUNT_KEY),
    )
    .expect("sa");
    let cert = dir.path().join("cert.pem");
    let hours = 24 * 40;
    std::fs::write(
        &cert,
        testkit::tls::TestCa::new()
            .client_cert_expiring("com.example.ios", hours)
            .combined_pem(),
    )
    .expect("cert");
    let gw = spawn(&format!(
        "{METRICS}apps:\n  com.example.android:\n    type: gcm\n    api_version: v1\n    project_id: example-project\n    service_account_file: {}\n    endpoint: {}\n\
         \x20 com.example.ios:\n    type: apns\n    certfile: {}\n    topic: com.example.ios\n",
        sa.display(),
        google.base_url(),
        cert.display()
    ))
    .await;
    let push = json!({"notification": {
        "event_id": "$ev", "room_id": "!room:x", "type": "m.room.message", "sender": "@alice:x",
        "counts": {"unread": 1}, "content": {"msgtype": "m.text", "body": "hi"},
        "devices": [{"app_id": "com.example.android", "pushkey": "tok-1", "data": {}}]
    }});
    let a = gw.notify(&push).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));

    let text = assert_metrics(
        &gw,
        &[
            ("sygnal_gcm_queue_time_count", 1.0),
            ("sygnal_pending_gcm_requests", 0.0),
            ("sygnal_gcm_request_time_count", 1.0),
        ],
    )
    .await;
    // The process collector: this test process's own figures, so only their sense is known.
    for (series, at_least) in [
        ("process_cpu_seconds_total", 0.0),
        ("process_resident_memory_bytes", 1e6),
        ("process_open_fds", 3.0),
        ("process_max_fds", 3.0),
        ("process_start_time_seconds", 1e9),
    ] {
        let v = sample(&text, series).unwrap_or(-1.0);
        assert!(v >= at_least, "{series} = {v}\n{text}");
    }
    // Sygnal's meaning: the expiry date, in seconds since the epoch.
    let expiry = sample(
        &text,
        "sygnal_client_cert_expiry{pushkin=\"com.example.ios\"}",
    )
    .expect("certificate expiry exported");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let expected = now + (hours * 3600) as f64;
    assert!(
        (expiry - expected).abs() < 86_400.0,
        "expiry {expiry}, expected about {expected}"
    );
    // Token-auth and non-APNs apps have no certificate series.
    assert!(!text.contains("sygnal_client_cert_expiry{pushkin=\"com.example.android\"}"));
    promtool_check(&text);
}
