//! `pushgate send-test` against the fake push services: the exact report of
//! what was sent and what the service answered, human-readable (printed as it
//! happens) and `--json`; each `--kind` as the push service receives it; FCM's
//! OAuth exchange with its secrets redacted.

mod process;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::apns::{ApnsAuth, ApnsBehaviour, FakeApns};
use testkit::fcm::{service_account_json, FakeGoogle, SERVICE_ACCOUNT_KEY};
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
            } else if let Some(i) = l.find(": sending (gives up within ") {
                format!("{}: sending (gives up within <s>)", &l[..i])
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

/// A browser subscription at a fake Web Push service answering as `behaviour`,
/// a config (with `extra` keys) and the `send-test` arguments that push to it
/// through `org.example.web`.
struct WebPushDevice {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    fake: FakeWebPush,
    endpoint: String,
    args: Vec<String>,
}

async fn web_push_device(extra: &str, name: &str, behaviour: Behaviour) -> WebPushDevice {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = process::write_config(dir.path(), "gw", &format!("store: none\n{extra}"));
    let fake = FakeWebPush::start().await;
    let (endpoint, sub) = fake.subscribe(name);
    fake.set_behaviour(name, behaviour);
    let data = json!({"endpoint": endpoint, "auth": sub.auth()}).to_string();
    let args = [
        "--app-id",
        "org.example.web",
        "--pushkey",
        &sub.p256dh(),
        "--data",
        &data,
    ]
    .map(str::to_owned)
    .to_vec();
    WebPushDevice {
        _dir: dir,
        config,
        fake,
        endpoint,
        args,
    }
}

impl WebPushDevice {
    fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }
}

#[tokio::test]
async fn web_push_report_shows_headers_plaintext_and_answer() {
    let device = web_push_device("", "dev", Behaviour::Status(201)).await;
    let (code, out, err) = send_test(&device.config, &device.args()).await;
    assert_eq!(code, 0, "{err}");
    let (fake, endpoint) = (&device.fake, &device.endpoint);
    let got = normalise(&out, &[(endpoint, "<endpoint>")]);
    let want = "app org.example.web (type webpush)

exchange 1: sending (gives up within <s>)
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

/// A fake APNs with token auth and a config whose `com.example.ios` app sends to it.
async fn apns_app(dir: &std::path::Path) -> (FakeApns, std::path::PathBuf) {
    let ca = TestCa::new();
    let key = dir.join("key.p8");
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
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("ca");
    let config = process::write_config(
        dir,
        "gw",
        &format!(
            "  com.example.ios:\n    type: apns\n    keyfile: '{}'\n    key_id: ABC123DEFG\n    team_id: TEAM123456\n    topic: com.example.ios\n    endpoint: '{}'\n    ca_file: '{}'\nstore: none\n",
            key.display(),
            fake.url(),
            ca_file.display()
        ),
    );
    (fake, config)
}

#[tokio::test]
async fn apns_rejection_is_reported_with_apples_reason_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, config) = apns_app(dir.path()).await;
    // iOS apps register the token bytes in base64; APNs gets them in hex.
    let (pushkey, token) = ("3q2+7w==", "deadbeef");
    fake.set(
        token,
        ApnsBehaviour::Unregistered {
            timestamp_ms: 1_700_000_000_000,
        },
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
    let timeout = "dispatch:\n  upstream_timeout: 2s\n";
    let device = web_push_device(timeout, "busy", Behaviour::Status(503)).await;
    let (code, out, _) = send_test(&device.config, &device.args()).await;
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

exchange 1: sending (gives up within <s>)
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

/// The `$pushgate-test-…` event id of a received payload replaced by a placeholder.
fn without_event_id(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::String(s) if s.starts_with("$pushgate-test-") => {
                *s = "$pushgate-test-<id>".into()
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            Value::Object(m) => m.values_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

const KINDS: [&str; 5] = ["message", "image", "call", "badge", "event-id-only"];

#[tokio::test]
async fn each_kind_reaches_apns_as_apple_gets_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, config) = apns_app(dir.path()).await;
    let mut got = Vec::new();
    for (i, kind) in KINDS.iter().enumerate() {
        let (code, out, err) = send_test(
            &config,
            &[
                "--app-id",
                "com.example.ios",
                "--pushkey",
                "3q2+7w==",
                "--kind",
                kind,
            ],
        )
        .await;
        assert_eq!(code, 0, "{kind}: {out}{err}");
        let requests = fake.wait_for(i + 1, Duration::from_secs(2)).await;
        assert_eq!(requests.len(), i + 1, "{kind}");
        let r = &requests[i];
        assert_eq!(r.token, "deadbeef");
        got.push((
            *kind,
            without_event_id(r.payload.clone().expect("json payload")),
        ));
    }
    let alert = |loc_key: &str, args: Value| {
        json!({"aps": {"alert": {"loc-key": loc_key, "loc-args": args}, "badge": 1},
               "event_id": "$pushgate-test-<id>", "room_id": "!pushgate-test:localhost"})
    };
    assert_eq!(
        got,
        vec![
            (
                "message",
                alert(
                    "MSG_FROM_USER_IN_ROOM_WITH_CONTENT",
                    json!(["pushgate", "pushgate test", "Test push from pushgate"])
                )
            ),
            (
                "image",
                alert(
                    "IMAGE_FROM_USER_IN_ROOM",
                    json!(["pushgate", "pushgate-test.png", "pushgate test"])
                )
            ),
            ("call", alert("VOICE_CALL_FROM_USER", json!(["pushgate"]))),
            ("badge", json!({"aps": {"badge": 1}})),
            (
                "event-id-only",
                json!({"event_id": "$pushgate-test-<id>", "room_id": "!pushgate-test:localhost",
                       "unread_count": 1})
            ),
        ]
    );
}

#[tokio::test]
async fn each_kind_reaches_unifiedpush_as_the_homeserver_sent_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = testkit::unifiedpush::FakeUnifiedPush::start().await;
    let config = process::write_config(
        dir.path(),
        "gw",
        "  chat.example.up:\n    type: unifiedpush\n    allow_private_endpoints: true\n    allow_http_endpoints: true\nstore: none\n",
    );
    let endpoint = fake.endpoint("upKinds");
    let mut got = Vec::new();
    for (i, kind) in KINDS.iter().enumerate() {
        let (code, out, err) = send_test(
            &config,
            &[
                "--app-id",
                "chat.example.up",
                "--pushkey",
                &endpoint,
                "--kind",
                kind,
                "--body",
                "Tea?",
            ],
        )
        .await;
        assert_eq!(code, 0, "{kind}: {out}{err}");
        let received = fake.wait_for(i + 1, Duration::from_secs(2)).await;
        assert_eq!(received.len(), i + 1, "{kind}");
        got.push(without_event_id(received[i].json()));
    }
    let device = |data: Value| {
        json!([{"app_id": "chat.example.up", "pushkey": endpoint, "pushkey_ts": 0,
                "data": data, "tweaks": {}}])
    };
    let event = |kind: &str, content: Value| {
        json!({"notification": {
            "event_id": "$pushgate-test-<id>", "room_id": "!pushgate-test:localhost",
            "type": kind, "sender": "@pushgate:localhost", "sender_display_name": "pushgate",
            "room_name": "pushgate test", "prio": "high", "counts": {"unread": 1},
            "content": content, "devices": device(json!({}))
        }})
    };
    assert_eq!(
        got,
        vec![
            event(
                "m.room.message",
                json!({"msgtype": "m.text", "body": "Tea?"})
            ),
            event(
                "m.room.message",
                json!({"msgtype": "m.image", "body": "Tea?", "url": "mxc://localhost/pushgate-test",
                       "info": {"mimetype": "image/png", "size": 4096, "w": 64, "h": 64}})
            ),
            event(
                "m.call.invite",
                json!({"call_id": "pushgate-test-call", "party_id": "pushgate", "version": "1",
                       "lifetime": 60000, "offer": {"type": "offer",
                       "sdp": "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}})
            ),
            // The gateway's wire form keeps Synapse's empty sender and says the default priority.
            json!({"notification": {"counts": {"unread": 1}, "devices": device(json!({})),
                   "prio": "high", "sender": ""}}),
            json!({"notification": {
                "event_id": "$pushgate-test-<id>", "room_id": "!pushgate-test:localhost",
                "prio": "high", "counts": {"unread": 1},
                "devices": device(json!({"format": "event_id_only"}))
            }}),
        ]
    );
}

#[tokio::test]
async fn event_id_only_flag_is_the_event_id_only_kind_and_conflicts_with_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = process::write_config(dir.path(), "gw", "store: none\n");
    let (code, _, err) = send_test(
        &config,
        &[
            "--app-id",
            "org.example.web",
            "--pushkey",
            "k",
            "--kind",
            "call",
            "--event-id-only",
        ],
    )
    .await;
    assert_eq!(code, 2);
    assert!(
        err.starts_with(
            "error: the argument '--kind <KIND>' cannot be used with '--event-id-only'"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_hanging_push_service_shows_the_request_while_it_waits() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::Instant;

    let timeout = "dispatch:\n  upstream_timeout: 5s\n";
    let device = web_push_device(timeout, "hangs", Behaviour::Stall).await;
    let mut child = Command::new(process::BIN)
        .arg("--config")
        .arg(&device.config)
        .arg("send-test")
        .args(device.args())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pushgate runs");
    let stdout = child.stdout.take().expect("stdout");
    let started = Instant::now();
    let (seen, rest, child) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        // Up to the request's last line: everything there is to show before an answer.
        loop {
            let line = lines.next().expect("a line").expect("read");
            let last = line.starts_with("> body: ");
            seen.push(line);
            if last {
                break;
            }
        }
        // The push is still waiting for its answer while this is read.
        let running = child.try_wait().expect("try_wait").is_none()
            && started.elapsed() < Duration::from_secs(4);
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let status = child.wait().expect("wait");
        (seen, rest, (running, status.code()))
    })
    .await
    .expect("join");
    let (running, code) = child;
    assert!(
        running,
        "the request was printed only when the process ended"
    );
    assert_eq!(seen[0], "app org.example.web (type webpush)");
    assert_eq!(seen[1], "");
    assert!(
        seen[2].starts_with("exchange 1: sending (gives up within ") && seen[2].ends_with(" s)"),
        "{seen:?}"
    );
    assert_eq!(seen[3], format!("> POST {}", device.endpoint));
    // The whole run took the timeout: the lines above came before it ran out.
    assert!(started.elapsed() >= Duration::from_secs(5));
    // The client's timeout and the endpoint's are both 5 s here: either may say so.
    let rest: Vec<&String> = rest.iter().skip_while(|l| l.starts_with("    ")).collect();
    assert_eq!(rest.len(), 3, "{rest:?}");
    assert!(rest[0].starts_with("< no answer: "), "{rest:?}");
    assert_eq!(rest[1], "");
    assert!(rest[2].starts_with("outcome: temporary ("), "{rest:?}");
    assert_eq!(code, Some(1));
}

/// A fake Google and a config whose `com.example.android` app sends to it.
async fn fcm_app(dir: &std::path::Path) -> (FakeGoogle, std::path::PathBuf) {
    let google = FakeGoogle::start(3599).await;
    let sa = dir.join("sa.json");
    std::fs::write(
        &sa,
        service_account_json(&google.token_uri(), SERVICE_ACCOUNT_KEY),
    )
    .expect("service account");
    let config = process::write_config(
        dir,
        "gw",
        &format!(
            "  com.example.android:\n    type: gcm\n    api_version: v1\n    project_id: example-project\n    service_account_file: '{}'\n    endpoint: '{}'\nstore: none\n",
            sa.display(),
            google.base_url()
        ),
    );
    (google, config)
}

#[tokio::test]
async fn fcm_shows_the_oauth_exchange_without_its_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (google, config) = fcm_app(dir.path()).await;
    let (code, out, err) = send_test(
        &config,
        &[
            "--app-id",
            "com.example.android",
            "--pushkey",
            "fcm-token-1",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let sent = google.wait_for(1, Duration::from_secs(2)).await;
    let access_token = sent[0].bearer.clone().expect("bearer token");
    assert!(!out.contains(&access_token), "{out}");
    // A JWT (the assertion) starts with the base64 of `{"`.
    assert!(!out.contains("eyJ"), "{out}");
    let got = normalise(&out, &[(&google.base_url(), "<google>")]);
    let want = "app com.example.android (type gcm)

exchange 1 (OAuth access token): sending (gives up within <s>)
> POST <google>/token
> content-type: application/x-www-form-urlencoded
> body:
    grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer
    assertion=…(redacted)
< 200
< content-type: application/json
< content-length: 76
< date: <date>
< body:
    {
      \"access_token\": \"…(redacted)\",
      \"expires_in\": 3599,
      \"token_type\": \"Bearer\"
    }

exchange 2: sending (gives up within <s>)
> POST <google>/v1/projects/example-project/messages:send
> authorization: Bearer …(redacted)
> content-type: application/json
> body:
    {
      \"message\": {
        \"android\": {
          \"priority\": \"high\"
        },
        \"data\": {
          \"content_body\": \"Test push from pushgate\",
          \"content_msgtype\": \"m.text\",
          \"event_id\": \"$pushgate-test-<id>\",
          \"prio\": \"high\",
          \"room_id\": \"!pushgate-test:localhost\",
          \"room_name\": \"pushgate test\",
          \"sender\": \"@pushgate:localhost\",
          \"sender_display_name\": \"pushgate\",
          \"type\": \"m.room.message\",
          \"unread\": \"1\"
        },
        \"token\": \"fcm-token-1\"
      }
    }
< 200
< content-type: application/json
< content-length: 48
< date: <date>
< body:
    {
      \"name\": \"projects/example-project/messages/0:0\"
    }

outcome: delivered";
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_refused_oauth_request_shows_googles_answer_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (google, config) = fcm_app(dir.path()).await;
    google.fail_token_requests(Some(500));
    let (code, out, err) = send_test(
        &config,
        &[
            "--app-id",
            "com.example.android",
            "--pushkey",
            "fcm-token-1",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    let mut report: Value = serde_json::from_str(&out).expect("json report");
    assert!(!out.contains("eyJ"), "{out}");
    let x = report["exchanges"][0].take();
    assert_eq!(
        (
            x["purpose"].as_str(),
            x["method"].as_str(),
            x["url"].as_str()
        ),
        (
            Some("OAuth access token"),
            Some("POST"),
            Some(google.token_uri().as_str())
        )
    );
    assert_eq!(
        x["request_body"],
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=%E2%80%A6%28redacted%29"
    );
    assert_eq!(x["status"], 500);
    assert_eq!(
        x["response_body"],
        r#"{"error":"internal_failure","error_description":"told to fail"}"#
    );
    // No token: no push.
    assert_eq!(report["exchanges"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["outcome"], "temporary");
    assert_eq!(
        report["reason"],
        r#"credentials: FCM authentication failed: the token endpoint answered 500: {"error":"internal_failure","error_description":"told to fail"}"#
    );
    assert!(google.requests().is_empty());
}
