//! `pushgate send-test` against the fake push services: the exact report of
//! what was sent and what the service answered, human-readable and `--json`.

mod process;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::apns::{ApnsAuth, ApnsBehaviour, FakeApns};
use testkit::tls::TestCa;
use testkit::webpush::{Behaviour, FakeWebPush};

/// Runs `pushgate --config <config> send-test <args>`; (exit code, stdout, stderr).
async fn send_test(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(process::BIN);
    cmd.arg("--config").arg(config).arg("send-test").args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("pushgate runs"))
        .await
        .expect("join");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The parts that change from run to run, replaced by placeholders.
fn normalise(text: &str, replacements: &[(&str, &str)]) -> String {
    let mut t = text.to_owned();
    for (from, to) in replacements {
        t = t.replace(from, to);
    }
    t.lines()
        .map(|l| {
            if l.starts_with("< date: ") {
                "< date: <date>".to_owned()
            } else if let Some(i) = l.find("$pushgate-test-") {
                let end = l[i..].find('"').map_or(l.len(), |e| i + e);
                format!("{}$pushgate-test-<id>{}", &l[..i], &l[end..])
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn web_push_report_shows_headers_plaintext_and_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = process::write_config(dir.path(), "gw", "store: none\n");
    let fake = FakeWebPush::start().await;
    let (endpoint, sub) = fake.subscribe("dev");
    let data = json!({"endpoint": endpoint, "auth": sub.auth()}).to_string();
    let (code, out, err) = send_test(
        &config,
        &[
            "--app-id",
            "org.example.web",
            "--pushkey",
            &sub.p256dh(),
            "--data",
            &data,
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let got = normalise(&out, &[(&endpoint, "<endpoint>")]);
    let want = "app org.example.web (type webpush)

attempt 1:
> POST <endpoint>
> ttl: 900
> content-encoding: aes128gcm
> content-type: application/octet-stream
> urgency: normal
> authorization: vapid …(redacted)
> body: <BODY> (encrypted); plaintext:
    {
      \"content\": {
        \"body\": \"Test push from pushgate\",
        \"msgtype\": \"m.text\"
      },
      \"event_id\": \"$pushgate-test-<id>\",
      \"room_id\": \"!pushgate-test:localhost\",
      \"room_name\": \"pushgate test\",
      \"sender\": \"@pushgate:localhost\",
      \"sender_display_name\": \"pushgate\",
      \"type\": \"m.room.message\",
      \"unread\": 1
    }
< 201
< content-length: 0
< date: <date>

outcome: delivered";
    let body_len = fake.received()[0].body_len;
    assert_eq!(got, want.replace("<BODY>", &format!("<{body_len} bytes>")));
    assert_eq!(fake.received().len(), 1);
}

#[tokio::test]
async fn apns_rejection_is_reported_with_apples_reason_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new();
    let key = dir.path().join("key.p8");
    process::vapid_key(&key);
    let pem = std::fs::read_to_string(&key).expect("key");
    let signing = pushgate::keys::parse_p256_key(&pem).expect("p-256 key");
    let fake = FakeApns::start(
        &ca,
        ApnsAuth::Token {
            key: *signing.verifying_key(),
            key_id: "ABC123DEFG".into(),
            team_id: "TEAM123456".into(),
        },
    )
    .await;
    // iOS apps register the token bytes in base64; APNs gets them in hex.
    let (pushkey, token) = ("3q2+7w==", "deadbeef");
    fake.set(
        token,
        ApnsBehaviour::Unregistered {
            timestamp_ms: 1_700_000_000_000,
        },
    );
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("ca");
    let config = process::write_config(
        dir.path(),
        "gw",
        &format!(
            "  com.example.ios:\n    type: apns\n    keyfile: '{}'\n    key_id: ABC123DEFG\n    team_id: TEAM123456\n    topic: com.example.ios\n    endpoint: '{}'\n    ca_file: '{}'\nstore: none\n",
            key.display(),
            fake.url(),
            ca_file.display()
        ),
    );
    let (code, out, err) = send_test(
        &config,
        &[
            "--app-id",
            "com.example.ios",
            "--pushkey",
            pushkey,
            "--event-id-only",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    let report: Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(report["app"], "com.example.ios");
    assert_eq!(report["type"], "apns");
    assert_eq!(report["outcome"], "rejected");
    let x = &report["exchanges"][0];
    assert_eq!(x["method"], "POST");
    assert_eq!(x["url"], format!("{}/3/device/{token}", fake.url()));
    assert_eq!(x["status"], 410);
    assert_eq!(
        serde_json::from_str::<Value>(x["response_body"].as_str().expect("body")).expect("json"),
        json!({"reason": "Unregistered", "timestamp": 1_700_000_000_000u64})
    );
    let headers: Vec<(String, String)> =
        serde_json::from_value(x["request_headers"].clone()).expect("headers");
    assert!(headers.contains(&("authorization".into(), "bearer …(redacted)".into())));
    assert!(headers.contains(&("apns-topic".into(), "com.example.ios".into())));
    let payload: Value =
        serde_json::from_str(x["request_body"].as_str().expect("body")).expect("payload json");
    // Sygnal's event_id_only payload for APNs.
    assert_eq!(payload["room_id"], "!pushgate-test:localhost");
    assert_eq!(payload["unread_count"], 1);
    assert!(
        payload["event_id"]
            .as_str()
            .is_some_and(|e| e.starts_with("$pushgate-test-")),
        "{payload}"
    );
    assert_eq!(fake.wait_for(1, Duration::from_secs(1)).await.len(), 1);
}

#[tokio::test]
async fn an_unknown_app_id_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = process::write_config(dir.path(), "gw", "store: none\n");
    let (code, out, err) = send_test(
        &config,
        &["--app-id", "org.example.nobody", "--pushkey", "k"],
    )
    .await;
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        "no app in the config serves app_id `org.example.nobody`\n"
    );
    let (code, _, err) = send_test(
        &config,
        &[
            "--app-id",
            "org.example.web",
            "--pushkey",
            "k",
            "--data",
            "[1]",
        ],
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.starts_with("--data: expected a JSON object"), "{err}");
}

#[tokio::test]
async fn a_temporary_failure_shows_the_answer_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = process::write_config(
        dir.path(),
        "gw",
        "store: none\ndispatch:\n  upstream_timeout: 2s\n",
    );
    let fake = FakeWebPush::start().await;
    let (endpoint, sub) = fake.subscribe("busy");
    fake.set_behaviour("busy", Behaviour::Status(503));
    let data = json!({"endpoint": endpoint, "auth": sub.auth()}).to_string();
    let (code, out, _) = send_test(
        &config,
        &[
            "--app-id",
            "org.example.web",
            "--pushkey",
            &sub.p256dh(),
            "--data",
            &data,
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(out.contains("\n< 503\n"), "{out}");
    assert!(
        out.ends_with("\noutcome: temporary (push service answered 503)\n"),
        "{out}"
    );
}

#[tokio::test]
async fn unifiedpush_report_shows_the_exchange() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new();
    let fake = testkit::unifiedpush::FakeUnifiedPush::start_tls(&ca).await;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("ca");
    let config = process::write_config(
        dir.path(),
        "gw",
        &format!(
            "  chat.example.up:\n    type: unifiedpush\n    allow_private_endpoints: true\n    ca_file: '{}'\nstore: none\n",
            ca_file.display()
        ),
    );
    let endpoint = fake.endpoint("upTest");
    let (code, out, err) = send_test(
        &config,
        &["--app-id", "chat.example.up", "--pushkey", &endpoint],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let got = normalise(&out, &[(&endpoint, "<endpoint>")]);
    let want = "app chat.example.up (type unifiedpush)

attempt 1:
> POST <endpoint>
> content-type: application/json
> ttl: 86400
> body:
    {
      \"notification\": {
        \"content\": {
          \"body\": \"Test push from pushgate\",
          \"msgtype\": \"m.text\"
        },
        \"counts\": {
          \"unread\": 1
        },
        \"devices\": [
          {
            \"app_id\": \"chat.example.up\",
            \"data\": {},
            \"pushkey\": \"<endpoint>\",
            \"pushkey_ts\": 0,
            \"tweaks\": {}
          }
        ],
        \"event_id\": \"$pushgate-test-<id>\",
        \"prio\": \"high\",
        \"room_id\": \"!pushgate-test:localhost\",
        \"room_name\": \"pushgate test\",
        \"sender\": \"@pushgate:localhost\",
        \"sender_display_name\": \"pushgate\",
        \"type\": \"m.room.message\"
      }
    }
< 200
< content-length: 2
< date: <date>
< body:
    {}

outcome: delivered
";
    assert_eq!(got, want.trim_end());
    let received = fake.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].topic, "upTest");

    // A dead endpoint: the exchange shows the 410 and the verdict.
    fake.set_behaviour("upTest", testkit::unifiedpush::Behaviour::Status(410));
    let (code, out, _) = send_test(
        &config,
        &[
            "--app-id",
            "chat.example.up",
            "--pushkey",
            &endpoint,
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(report["type"], "unifiedpush");
    assert_eq!(report["outcome"], "rejected");
    assert_eq!(report["reason"], "UnifiedPush server answered 410");
    assert_eq!(report["exchanges"][0]["url"], endpoint);
    assert_eq!(report["exchanges"][0]["status"], 410);
}
