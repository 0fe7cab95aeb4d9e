//! Web Push endpoints are user-supplied: private, loopback and link-local
//! destinations are refused (nothing sent) unless the app allows them. A
//! refusal fails that push but never rejects the pushkey: the pusher is the
//! client's, the endpoint may be an attacker's.
//!
//! Loopback targets are tried directly (a regression would reach only the fake
//! on 127.0.0.1); other private targets go through a proxy that records and
//! never forwards, so no test can ever send a packet to a private network.

use serde_json::json;
use testkit::proxy::FakeProxy;
use testkit::webpush::FakeWebPush;

use crate::helpers::{spawn, TestGateway};
use crate::webpush::device;

fn guarded(proxy: Option<&str>) -> String {
    let proxy = proxy.map(|p| format!("proxy: {p}\n")).unwrap_or_default();
    format!(
        "{proxy}apps:
  org.example.web:
    type: webpush
    vapid_private_key: {{vapid}}
    vapid_contact_email: ops@example.org
    allow_http_endpoints: true
dispatch:
  connect_timeout: 1s
  upstream_timeout: 2s
"
    )
}

async fn assert_refused(gw: &TestGateway, endpoints: &[String], fake: &FakeWebPush) {
    let (_, sub) = fake.subscribe("victim");
    for endpoint in endpoints {
        let body = json!({"notification": {"event_id": "$e", "devices": [device(endpoint, &sub, json!({}))]}});
        let a = gw.notify(&body).await;
        assert_eq!(
            (a.status, &a.body),
            (200, &json!({"rejected": []})),
            "{endpoint}"
        );
    }
}

#[tokio::test]
async fn loopback_destinations_are_refused() {
    let gw = spawn(&guarded(None)).await;
    let fake = FakeWebPush::start().await;
    let port = fake.port();
    let endpoints = [
        format!("http://127.0.0.1:{port}/push/victim"),
        format!("http://127.9.9.9:{port}/push/victim"),
        format!("http://[::1]:{port}/push/victim"),
        format!("http://[::ffff:127.0.0.1]:{port}/push/victim"),
        format!("http://localhost:{port}/push/victim"),
    ];
    assert_refused(&gw, &endpoints, &fake).await;
    assert!(fake.received().is_empty());
    assert_eq!(
        fake.connections(),
        0,
        "no connection may reach a refused address"
    );
}

#[tokio::test]
async fn private_and_link_local_destinations_are_refused() {
    let proxy = FakeProxy::start_blackhole().await;
    let gw = spawn(&guarded(Some(&proxy.url()))).await;
    let fake = FakeWebPush::start().await;
    let endpoints: Vec<String> = [
        "http://10.1.2.3/push/victim",
        "http://169.254.169.254/latest/meta-data",
        "http://192.168.1.1/push",
        "http://172.16.5.4/push",
        "http://100.64.0.1/push",
        "http://0.0.0.0/push",
        "http://[fd00::1]/push",
        "http://[fe80::1]/push",
        "http://[::ffff:10.0.0.1]/push",
        "http://[::ffff:169.254.169.254]/push",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_refused(&gw, &endpoints, &fake).await;
    assert!(
        proxy.requests().is_empty(),
        "refused before any request left the gateway: {:?}",
        proxy.requests()
    );
}

#[tokio::test]
async fn https_only_and_allowed_endpoints() {
    let yaml = "apps:
  strict.web:
    type: webpush
    vapid_private_key: {vapid}
    vapid_contact_email: ops@example.org
  listed.web:
    type: webpush
    vapid_private_key: {vapid}
    vapid_contact_email: ops@example.org
    allow_private_endpoints: true
    allow_http_endpoints: true
    allowed_endpoints: ['push.example.net', '127.0.0.1:*']
";
    let gw = spawn(yaml).await;
    let fake = FakeWebPush::start().await;
    let (endpoint, sub) = fake.subscribe("ok");
    let send = |app: &str, endpoint: &str| {
        let mut dev = device(endpoint, &sub, json!({}));
        dev["app_id"] = json!(app);
        json!({"notification": {"event_id": "$e", "devices": [dev]}})
    };
    // Refused endpoints fail the push; the pusher is kept (never rejected).
    let rejected = json!({"rejected": []});
    // Plain http is refused unless opted in.
    assert_eq!(
        gw.notify(&send("strict.web", &endpoint)).await.body,
        rejected
    );
    // A host outside allowed_endpoints is refused before any lookup.
    assert_eq!(
        gw.notify(&send("listed.web", "http://evil.example.com/push/ok"))
            .await
            .body,
        rejected
    );
    // Listed (host:port glob) and opted in: delivered.
    assert_eq!(
        gw.notify(&send("listed.web", &endpoint)).await.body,
        json!({"rejected": []})
    );
    assert_eq!(fake.received().len(), 1);
}
