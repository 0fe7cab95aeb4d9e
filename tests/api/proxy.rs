//! The outbound client goes through the configured proxy, and the address
//! guard still applies when the proxy (not us) resolves the endpoint's name.

use serde_json::json;
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
