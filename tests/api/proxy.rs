//! The outbound client goes through the configured proxy, and the address
//! guard still applies when the proxy (not us) resolves the endpoint's name.

use serde_json::json;
use testkit::fcm::{service_account_json, FakeGoogle, SERVICE_ACCOUNT_KEY};
use testkit::proxy::{FakeProxy, ProxiedRequest};
use testkit::webpush::FakeWebPush;

use crate::helpers::spawn;
use crate::webpush::device;

fn config(proxy: &str, allow_private: bool) -> String {
    format!(
        "proxy: {proxy}
apps:
  org.example.web:
    type: webpush
    vapid_private_key: {{vapid}}
    vapid_contact_email: ops@example.org
    allow_private_endpoints: {allow_private}
    allow_http_endpoints: true
"
    )
}

#[tokio::test]
async fn pushes_go_through_the_proxy() {
    let proxy = FakeProxy::start().await;
    let fake = FakeWebPush::start().await;
    let gw = spawn(&config(&proxy.url(), true)).await;
    let (endpoint, sub) = fake.subscribe("p");
    let body = json!({"notification": {"event_id": "$e", "devices": [device(&endpoint, &sub, json!({}))]}});
    let a = gw.notify(&body).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(fake.received().len(), 1);
    assert_eq!(
        proxy.requests(),
        vec![ProxiedRequest {
            method: "POST".into(),
            target: format!("127.0.0.1:{}", fake.port())
        }]
    );
}

#[tokio::test]
async fn guard_resolves_names_itself_when_proxied() {
    let proxy = FakeProxy::start().await;
    let fake = FakeWebPush::start().await;
    let gw = spawn(&config(&proxy.url(), false)).await;
    let (_, sub) = fake.subscribe("p");
    let endpoint = format!("http://localhost:{}/push/p", fake.port());
    let body = json!({"notification": {"event_id": "$e", "devices": [device(&endpoint, &sub, json!({}))]}});
    let a = gw.notify(&body).await;
    // Refused: this push fails, the pusher stays.
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert!(
        proxy.requests().is_empty(),
        "a refused endpoint never reaches the proxy"
    );
    assert!(fake.received().is_empty());
}

/// FCM's pushes go through the proxy's `CONNECT` tunnel (its own client,
/// `net::h1`); its token request (reqwest) through the proxy too.
#[tokio::test]
async fn fcm_pushes_go_through_the_proxy() {
    let proxy = FakeProxy::start().await;
    let google = FakeGoogle::start(3600).await;
    let dir = tempfile::tempdir().expect("dir");
    let sa = dir.path().join("sa.json");
    std::fs::write(
        &sa,
        service_account_json(&google.token_uri(), SERVICE_ACCOUNT_KEY),
    )
    .expect("sa");
    let gw = spawn(&format!(
        "proxy: {}\napps:\n  com.example.android:\n    type: gcm\n    api_version: v1\n    project_id: example-project\n    service_account_file: {}\n    endpoint: {}\n",
        proxy.url(),
        sa.display(),
        google.base_url()
    ))
    .await;
    let device = json!({"app_id": "com.example.android", "pushkey": "tok", "pushkey_ts": 1});
    for event in ["$e1", "$e2"] {
        let body = json!({"notification": {
            "event_id": event, "room_id": "!r:x", "type": "m.room.message", "sender": "@a:x",
            "counts": {"unread": 1}, "content": {"msgtype": "m.text", "body": "hi"},
            "devices": [device]
        }});
        let a = gw.notify(&body).await;
        assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    }
    assert_eq!(google.requests().len(), 2);
    let target = google.base_url().trim_start_matches("http://").to_owned();
    assert_eq!(
        proxy.requests(),
        vec![
            ProxiedRequest {
                method: "POST".into(),
                target: target.clone()
            },
            ProxiedRequest {
                method: "CONNECT".into(),
                target
            }
        ],
        "one token request, one tunnel for both pushes"
    );
}
