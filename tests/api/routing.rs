//! app_id routing through the API: exact first, then globs; unknown or
//! ambiguous app ids are rejected.

use serde_json::json;
use testkit::webpush::FakeWebPush;

use crate::helpers::spawn;
use crate::webpush::device;

const ROUTED: &str = "apps:
  com.example.web:
    type: webpush
    vapid_private_key: {vapid}
    vapid_contact_email: ops@example.org
    allow_private_endpoints: true
    allow_http_endpoints: true
  com.example.*:
    type: apns
    keyfile: {apns_key}
    key_id: KEYID12345
    team_id: TEAMID1234
    topic: com.example.app
    endpoint: https://127.0.0.1:9
  org.?ther.web:
    type: webpush
    vapid_private_key: {vapid}
    vapid_contact_email: ops@example.org
  org.*:
    type: webpush
    vapid_private_key: {vapid}
    vapid_contact_email: ops@example.org
";

#[tokio::test]
async fn exact_then_glob_unknown_and_ambiguous() {
    let dir = tempfile::tempdir().expect("dir");
    let apns_key = crate::helpers::write_vapid_key(dir.path()); // any PKCS#8 P-256 key is a valid .p8
    let gw = spawn(&ROUTED.replace("{apns_key}", &apns_key.display().to_string())).await;
    let fake = FakeWebPush::start().await;
    let (endpoint, sub) = fake.subscribe("r");
    let send = |app: &str| {
        let mut dev = device(&endpoint, &sub, json!({}));
        dev["app_id"] = json!(app);
        json!({"notification": {"event_id": "$e", "devices": [dev]}})
    };
    let rejected = json!({"rejected": [sub.p256dh()]});

    // Exact id wins over the matching glob `com.example.*`: delivered through Web Push.
    let a = gw.notify(&send("com.example.web")).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(fake.received().len(), 1);
    // Glob match → the APNs app, whose upstream (a closed port) is unreachable: a temporary failure.
    let mut to_apns = send("com.example.ios");
    to_apns["notification"]["devices"][0]["pushkey"] = json!("3q2+7w==");
    assert_eq!(gw.notify(&to_apns).await.status, 502);
    // Dots are literal, matching is anchored and case-sensitive.
    assert_eq!(gw.notify(&send("comXexample.ios")).await.body, rejected);
    assert_eq!(gw.notify(&send("COM.example.ios")).await.body, rejected);
    assert_eq!(gw.notify(&send("xcom.example.web")).await.body, rejected);
    // Two globs match `org.other.web`: ambiguous → rejected.
    assert_eq!(gw.notify(&send("org.other.web")).await.body, rejected);
    // Unknown.
    assert_eq!(gw.notify(&send("net.unknown")).await.body, rejected);
    assert_eq!(fake.received().len(), 1);
}

/// The `rejected` answer is the pushkeys exactly as the homeserver sent them,
/// once each, in device order: byte for byte (pushkeys are typed inside the
/// gateway, and written back as the plain strings).
#[tokio::test]
async fn the_rejected_answer_holds_the_pushkeys_byte_for_byte() {
    let dir = tempfile::tempdir().expect("dir");
    let apns_key = crate::helpers::write_vapid_key(dir.path());
    let gw = spawn(&ROUTED.replace("{apns_key}", &apns_key.display().to_string())).await;
    let body = r#"{"notification":{"event_id":"$e","devices":[
        {"app_id":"net.unknown","pushkey":"APA91bHunter2/+é\"key=="},
        {"app_id":"org.other.web","pushkey":"second-key-\u00e9"},
        {"app_id":"net.unknown","pushkey":"APA91bHunter2/+é\"key=="}]}}"#;
    let resp = gw
        .client
        .post(gw.url("/_matrix/push/v1/notify"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(resp.status().as_u16(), 200);
    let bytes = resp.bytes().await.expect("body");
    assert_eq!(
        std::str::from_utf8(&bytes).expect("UTF-8"),
        r#"{"rejected":["APA91bHunter2/+é\"key==","second-key-é"]}"#
    );
}
