//! FCM end to end: the gateway's OAuth flow and FCM v1 client against the
//! fake Google (testkit), which verifies the RS256 assertion and bearer tokens.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::fcm::{
    service_account_json, FakeGoogle, FcmBehaviour, OTHER_KEY, SERVICE_ACCOUNT_KEY,
};

use crate::helpers::{spawn, TestGateway};

struct Setup {
    gw: TestGateway,
    google: FakeGoogle,
    _dir: tempfile::TempDir,
}

async fn setup(token_lifetime_s: u64, key: &str, extra: &str) -> Setup {
    let google = FakeGoogle::start(token_lifetime_s).await;
    let dir = tempfile::tempdir().expect("dir");
    let sa = dir.path().join("sa.json");
    std::fs::write(&sa, service_account_json(&google.token_uri(), key)).expect("sa");
    let gw = spawn(&format!(
        "apps:\n  com.example.android:\n    type: gcm\n    api_version: v1\n    project_id: example-project\n    service_account_file: {}\n    endpoint: {}\n{extra}",
        sa.display(),
        google.base_url()
    ))
    .await;
    Setup {
        gw,
        google,
        _dir: dir,
    }
}

fn device(token: &str) -> Value {
    json!({"app_id": "com.example.android", "pushkey": token, "pushkey_ts": 1, "data": {}})
}

fn message(devices: Vec<Value>) -> Value {
    json!({"notification": {
        "event_id": "$ev", "room_id": "!room:x", "type": "m.room.message", "sender": "@alice:x",
        "sender_display_name": "Alice", "room_name": "Tea", "prio": "high", "counts": {"unread": 2},
        "content": {"msgtype": "m.text", "body": "hello"}, "devices": devices
    }})
}

#[tokio::test]
async fn full_message_with_oauth() {
    let s = setup(
        3600,
        SERVICE_ACCOUNT_KEY,
        "    fcm_options:\n      android:\n        ttl: 60s\n",
    )
    .await;
    let a = s.gw.notify(&message(vec![device("tok-1")])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let reqs = s.google.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].project, "example-project");
    assert_eq!(reqs[0].bearer.as_deref(), Some("ya29.test-token-0"));
    assert_eq!(
        reqs[0].message.as_ref().expect("json"),
        &json!({"message": {
            "token": "tok-1",
            "android": {"ttl": "60s", "priority": "high"},
            "data": {"event_id": "$ev", "type": "m.room.message", "sender": "@alice:x", "room_name": "Tea",
                     "sender_display_name": "Alice", "room_id": "!room:x", "prio": "high",
                     "content_msgtype": "m.text", "content_body": "hello", "unread": "2"}
        }})
    );
    assert!(s.google.assertion_errors().is_empty());
}

#[tokio::test]
async fn a_badge_update_without_counts_is_delivered_without_a_request() {
    let s = setup(3600, SERVICE_ACCOUNT_KEY, "").await;
    let badge = |unread: u64| json!({"notification": {"id": "", "sender": "", "counts": {"unread": unread, "missed_calls": 0}, "devices": [device("tok-1")]}});
    let a = s.gw.notify(&badge(0)).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    assert_eq!(s.google.requests().len(), 0, "nothing to send");
    // A count to carry is sent; Synapse's empty sender reaches the app as "".
    let a = s.gw.notify(&badge(3)).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let reqs = s.google.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].message.as_ref().expect("json"),
        &json!({"message": {"token": "tok-1", "android": {"priority": "high"}, "data": {"sender": "", "prio": "high", "unread": "3"}}})
    );
}

#[tokio::test]
async fn a_hundred_concurrent_pushes_fetch_one_token() {
    let s = setup(3600, SERVICE_ACCOUNT_KEY, "").await;
    let bodies: Vec<Value> = (0..4)
        .map(|r| message((0..25).map(|i| device(&format!("t{r}-{i}"))).collect()))
        .collect();
    let answers = futures::future::join_all(bodies.iter().map(|b| s.gw.notify(b))).await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(s.google.requests().len(), 100);
    assert_eq!(s.google.tokens_issued(), 1, "single-flight token fetch");
}

#[tokio::test]
async fn an_expiring_token_is_refreshed_once() {
    // Tokens live 2 s at the fake; pushgate believes an `expires_in` of at
    // least 60 s (a hostile value is clamped), so once the fake has expired
    // the token it is refused (401) and renewed once for every waiting push.
    let s = setup(2, SERVICE_ACCOUNT_KEY, "").await;
    assert_eq!(s.gw.notify(&message(vec![device("a")])).await.status, 200);
    assert_eq!(s.google.tokens_issued(), 1);
    // The 2 s pass at the fake at once.
    s.google.expire_tokens();
    let bodies: Vec<Value> = (0..5)
        .map(|r| message((0..10).map(|i| device(&format!("b{r}-{i}"))).collect()))
        .collect();
    let answers = futures::future::join_all(bodies.iter().map(|b| s.gw.notify(b))).await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(
        s.google.tokens_issued(),
        2,
        "exactly one refresh for 50 waiting pushes"
    );
}

#[tokio::test]
async fn a_401_refreshes_the_token_and_retries_once() {
    let s = setup(3600, SERVICE_ACCOUNT_KEY, "").await;
    assert_eq!(s.gw.notify(&message(vec![device("a")])).await.status, 200);
    s.google.revoke_tokens();
    let a = s.gw.notify(&message(vec![device("a")])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let answered: Vec<u16> = s.google.requests().iter().map(|r| r.answered).collect();
    assert_eq!(answered, vec![200, 401, 200]);
    assert_eq!(s.google.tokens_issued(), 2);
}

#[tokio::test]
async fn dead_tokens_are_rejected_and_others_are_not() {
    let s = setup(3600, SERVICE_ACCOUNT_KEY, "").await;
    s.google.set("gone", FcmBehaviour::Unregistered);
    s.google.set("invalid", FcmBehaviour::InvalidToken);
    s.google.set("other-sender", FcmBehaviour::SenderIdMismatch);
    s.google.set("bad-message", FcmBehaviour::InvalidMessage);
    let mut bad_default = device("bad-default");
    bad_default["data"] = json!({"default_payload": 3});
    let devices = vec![
        device("gone"),
        device("invalid"),
        device("ok"),
        device("other-sender"),
        device("bad-message"),
        bad_default,
    ];
    let a = s.gw.notify(&message(devices)).await;
    assert_eq!(
        (a.status, a.body),
        (
            200,
            // SENDER_ID_MISMATCH is a configuration matter (a wrong project_id would
            // otherwise delete every pusher of the app): failed, not rejected.
            json!({"rejected": ["gone", "invalid", "bad-default"]})
        )
    );
    assert_eq!(
        s.google.requests().len(),
        5,
        "bad default_payload never reaches Google"
    );
}

#[tokio::test]
async fn retry_after_is_honoured_and_exhausted_retries_are_temporary() {
    let s = setup(3600, SERVICE_ACCOUNT_KEY, "").await;
    s.google.set(
        "busy-once",
        FcmBehaviour::Unavailable {
            status: 429,
            retry_after: Some(1),
            times: 1,
        },
    );
    let a = s.gw.notify(&message(vec![device("busy-once")])).await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": []})));
    let reqs = s.google.requests();
    assert_eq!(
        reqs.iter().map(|r| r.answered).collect::<Vec<_>>(),
        vec![429, 200]
    );
    let waited = reqs[1].at - reqs[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 honoured, waited {waited:?}"
    );

    s.google.set(
        "down",
        FcmBehaviour::Unavailable {
            status: 503,
            retry_after: None,
            times: 100,
        },
    );
    let a = s.gw.notify(&message(vec![device("down")])).await;
    assert_eq!((a.status, &a.body["rejected"]), (502, &json!([])));
    let attempts = s
        .google
        .requests()
        .iter()
        .filter(|r| {
            r.message
                .as_ref()
                .ok()
                .and_then(|m| m["message"]["token"].as_str())
                == Some("down")
        })
        .count();
    assert_eq!(attempts, 3, "never a silent success");
}

#[tokio::test]
async fn refused_credentials_are_temporary_never_rejected() {
    let s = setup(3600, OTHER_KEY, "").await;
    let a = s.gw.notify(&message(vec![device("a")])).await;
    assert_eq!((a.status, &a.body["rejected"]), (502, &json!([])));
    assert!(s.google.requests().is_empty());
    assert_eq!(
        s.google.assertion_errors(),
        vec!["assertion signature does not verify with the service account's key".to_owned()]
    );
}

#[tokio::test]
async fn a_stalled_fcm_is_a_temporary_failure_within_the_budget() {
    let s = setup(
        3600,
        SERVICE_ACCOUNT_KEY,
        "dispatch:\n  upstream_timeout: 600ms\n",
    )
    .await;
    s.google.set("stall", FcmBehaviour::Stall);
    let started = std::time::Instant::now();
    let a = s.gw.notify(&message(vec![device("stall")])).await;
    assert_eq!((a.status, &a.body["rejected"]), (502, &json!([])));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
