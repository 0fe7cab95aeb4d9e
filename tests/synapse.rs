//! End to end with a real homeserver: Synapse (from PyPI, SQLite, loopback
//! only) pushes through a real pushgate process to the fake APNs, FCM,
//! Web Push and UnifiedPush services.
//!
//! Users register, a room is made, HTTP pushers are set for every service
//! (full and `event_id_only`), and an invite, a message and a call invite
//! are sent; the fakes must receive exactly the expected pushes (Web Push
//! decrypted). A token the fake declares dead comes back `rejected` and
//! Synapse deletes that pusher. pushgate stopped for 20 s while messages are
//! sent: after its restart every push arrives, each once.
//!
//! Needs `PUSHGATE_SYNAPSE_PYTHON`, the Python of a virtualenv with
//! `matrix-synapse` (`scripts/test` makes one); skipped without it unless
//! `PUSHGATE_REQUIRE_SYNAPSE` is set.

mod process;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use testkit::apns::{ApnsAuth, ApnsBehaviour, FakeApns};
use testkit::fcm::{service_account_json, FakeGoogle, SERVICE_ACCOUNT_KEY};
use testkit::tls::TestCa;
use testkit::unifiedpush::FakeUnifiedPush;
use testkit::webpush::FakeWebPush;

use process::Gateway;

fn synapse_python() -> Option<PathBuf> {
    match std::env::var_os("PUSHGATE_SYNAPSE_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            assert!(
                std::env::var_os("PUSHGATE_REQUIRE_SYNAPSE").is_none(),
                "PUSHGATE_REQUIRE_SYNAPSE is set but PUSHGATE_SYNAPSE_PYTHON is not"
            );
            eprintln!("PUSHGATE_SYNAPSE_PYTHON not set: Synapse end-to-end test skipped");
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A Synapse process; stopped (SIGKILL, by PID) when dropped.
struct Synapse {
    child: Child,
    base: String,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Synapse {
    async fn start(python: &Path, dir: &Path) -> Synapse {
        let port = free_port();
        let config = dir.join("homeserver.yaml");
        let d = dir.display();
        // Rate limits opened up for a test; pushers may reach 127.0.0.1 (the
        // documented ip_range_whitelist); nothing listens beyond loopback.
        std::fs::write(
            &config,
            format!(
                "server_name: localhost
pid_file: {d}/homeserver.pid
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: {d}/homeserver.db
media_store_path: {d}/media
signing_key_path: {d}/localhost.signing.key
registration_shared_secret: pushgate-test-registration
macaroon_secret_key: pushgate-test-macaroon
form_secret: pushgate-test-form
report_stats: false
enable_registration: true
enable_registration_without_verification: true
trusted_key_servers: []
suppress_key_server_warning: true
ip_range_whitelist: ['127.0.0.1']
push:
  include_content: true
rc_message: {{per_second: 1000, burst_count: 1000}}
rc_registration: {{per_second: 1000, burst_count: 1000}}
rc_joins:
  local: {{per_second: 1000, burst_count: 1000}}
rc_invites:
  per_room: {{per_second: 1000, burst_count: 1000}}
  per_user: {{per_second: 1000, burst_count: 1000}}
  per_issuer: {{per_second: 1000, burst_count: 1000}}
rc_login:
  address: {{per_second: 1000, burst_count: 1000}}
  account: {{per_second: 1000, burst_count: 1000}}
"
            ),
        )
        .expect("homeserver.yaml");
        let keys = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
            .arg(&config)
            .output()
            .expect("synapse generate-keys");
        assert!(
            keys.status.success(),
            "{}",
            String::from_utf8_lossy(&keys.stderr)
        );
        let log = std::fs::File::create(dir.join("synapse.log")).expect("log");
        let child = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("synapse starts");
        let s = Synapse {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let up = client
                .get(format!("{}/_matrix/client/versions", s.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Synapse did not start; its log:\n{}",
                std::fs::read_to_string(dir.join("synapse.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        s
    }
}

fn client() -> reqwest::Client {
    pushgate::net::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A logged-in Synapse user.
struct User {
    base: String,
    token: String,
    id: String,
}

impl User {
    async fn register(base: &str, name: &str) -> User {
        let c = client();
        let url = format!("{base}/_matrix/client/v3/register");
        let mut body = json!({"username": name, "password": "pushgate-test-password",
                              "auth": {"type": "m.login.dummy"}});
        let mut answer: Value = Value::Null;
        for _ in 0..2 {
            answer = c
                .post(&url)
                .json(&body)
                .send()
                .await
                .expect("register")
                .json()
                .await
                .expect("register json");
            if answer["access_token"].is_string() {
                break;
            }
            // The first answer may ask for the interactive-auth session.
            body["auth"]["session"] = answer["session"].clone();
        }
        User {
            base: base.to_owned(),
            token: answer["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("no access token: {answer}"))
                .to_owned(),
            id: answer["user_id"].as_str().expect("user id").to_owned(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = client()
            .request(method, format!("{}/_matrix/client/v3{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("synapse answers");
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    async fn set_pusher(&self, app_id: &str, pushkey: &str, data: Value) {
        self.call(
            "POST",
            "/pushers/set",
            Some(json!({
                "kind": "http", "app_id": app_id, "pushkey": pushkey,
                "app_display_name": "pushgate test", "device_display_name": "test device",
                "lang": "en", "data": data, "append": true
            })),
        )
        .await;
    }

    async fn pushkeys(&self) -> Vec<String> {
        let v = self.call("GET", "/pushers", None).await;
        v["pushers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["pushkey"].as_str().map(str::to_owned))
            .collect()
    }

    async fn send(&self, room: &str, kind: &str, content: Value) -> String {
        let txn = uuid::Uuid::new_v4().simple().to_string();
        let v = self
            .call(
                "PUT",
                &format!("/rooms/{room}/send/{kind}/{txn}"),
                Some(content),
            )
            .await;
        v["event_id"].as_str().expect("event id").to_owned()
    }
}

/// Waits until `check` holds (or panics with `what` after `timeout`).
async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_pushes_through_pushgate_to_every_service() {
    let Some(python) = synapse_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    // The fake push services.
    let ca = TestCa::new();
    let apns_key = d.join("apns.p8");
    process::vapid_key(&apns_key);
    let signing = pushgate::keys::parse_p256_key(&std::fs::read_to_string(&apns_key).expect("key"))
        .expect("p-256 key");
    let apns = FakeApns::start(
        &ca,
        ApnsAuth::Token {
            key: *signing.verifying_key(),
            key_id: "ABC123DEFG".into(),
            team_id: "TEAM123456".into(),
        },
    )
    .await;
    std::fs::write(d.join("ca.pem"), ca.cert_pem()).expect("ca");
    let google = FakeGoogle::start(3600).await;
    std::fs::write(
        d.join("sa.json"),
        service_account_json(&google.token_uri(), SERVICE_ACCOUNT_KEY),
    )
    .expect("service account");
    let webpush = FakeWebPush::start().await;
    let unifiedpush = FakeUnifiedPush::start().await;

    // pushgate on a fixed port (the pushers' URL), with its own SQLite store.
    let port = free_port();
    let config = process::write_config(
        d,
        "gw",
        &format!(
            "  com.example.ios:
    type: apns
    keyfile: '{d}/apns.p8'
    key_id: ABC123DEFG
    team_id: TEAM123456
    topic: com.example.ios
    endpoint: '{apns_url}'
    ca_file: '{d}/ca.pem'
  com.example.android:
    type: gcm
    api_version: v1
    project_id: example-project
    service_account_file: '{d}/sa.json'
    endpoint: '{fcm_url}'
  im.example.unifiedpush:
    type: unifiedpush
    allow_private_endpoints: true
    allow_http_endpoints: true
store:
  sqlite:
    path: '{d}/pushgate.db'
",
            d = d.display(),
            apns_url = apns.url(),
            fcm_url = google.base_url(),
        ),
    );
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("  port: 0\n", &format!("  port: {port}\n")),
    )
    .expect("config");
    let gateway = Gateway::start(&config);
    let notify_url = format!("http://127.0.0.1:{port}/_matrix/push/v1/notify");

    let synapse = Synapse::start(&python, d).await;
    let alice = User::register(&synapse.base, "alice").await;
    let bob = User::register(&synapse.base, "bob").await;

    // Bob's devices: APNs (full and event_id_only), FCM, Web Push, UnifiedPush, and one dead APNs token.
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let (ios_full, ios_full_hex) = (b64(&[0xa1, 0x01]), "a101");
    let (ios_eio, ios_eio_hex) = (b64(&[0xa1, 0x02]), "a102");
    let (ios_dead, ios_dead_hex) = (b64(&[0xa1, 0xdd]), "a1dd");
    apns.set(
        ios_dead_hex,
        ApnsBehaviour::Unregistered {
            timestamp_ms: 1_000,
        },
    );
    let (wp_endpoint, wp_sub) = webpush.subscribe("bob-browser");
    bob.set_pusher("com.example.ios", &ios_full, json!({"url": notify_url}))
        .await;
    bob.set_pusher(
        "com.example.ios",
        &ios_eio,
        json!({"url": notify_url, "format": "event_id_only"}),
    )
    .await;
    bob.set_pusher("com.example.android", "fcm-bob", json!({"url": notify_url}))
        .await;
    bob.set_pusher(
        "org.example.web",
        &wp_sub.p256dh(),
        json!({"url": notify_url, "endpoint": wp_endpoint, "auth": wp_sub.auth()}),
    )
    .await;
    let up_endpoint = unifiedpush.endpoint("bob-phone");
    bob.set_pusher(
        "im.example.unifiedpush",
        &up_endpoint,
        json!({"url": notify_url}),
    )
    .await;
    bob.set_pusher("com.example.ios", &ios_dead, json!({"url": notify_url}))
        .await;
    assert_eq!(bob.pushkeys().await.len(), 6);

    // An invite, a message, a call invite.
    let room = alice
        .call(
            "POST",
            "/createRoom",
            Some(json!({"preset": "private_chat", "name": "Tea", "invite": [bob.id]})),
        )
        .await["room_id"]
        .as_str()
        .expect("room id")
        .to_owned();
    let apns_for = |hex: &str| -> Vec<Value> {
        apns.requests()
            .into_iter()
            .filter(|r| r.token == hex)
            .filter_map(|r| r.payload.ok())
            .collect()
    };
    eventually("the invite push", Duration::from_secs(30), || {
        !apns_for(ios_full_hex).is_empty()
    })
    .await;
    let invite = &apns_for(ios_full_hex)[0];
    assert_eq!(
        invite["aps"]["alert"]["loc-key"],
        "USER_INVITE_TO_NAMED_ROOM"
    );
    assert_eq!(invite["room_id"], room.as_str());

    bob.call("POST", &format!("/rooms/{room}/join"), Some(json!({})))
        .await;
    let message = alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "Tea at five?"}),
        )
        .await;
    let call = alice
        .send(
            &room,
            "m.call.invite",
            json!({"call_id": "c1", "version": "1", "lifetime": 60000,
                   "offer": {"type": "offer", "sdp": "v=0\r\nm=audio 9 RTP/AVP 0\r\n"}}),
        )
        .await;
    let has_event = |payloads: Vec<Value>, ev: &str| payloads.iter().any(|p| p["event_id"] == ev);
    eventually(
        "message and call pushes on APNs",
        Duration::from_secs(30),
        || has_event(apns_for(ios_full_hex), &message) && has_event(apns_for(ios_full_hex), &call),
    )
    .await;
    let full = apns_for(ios_full_hex);
    let msg = full
        .iter()
        .find(|p| p["event_id"] == message.as_str())
        .expect("message");
    assert_eq!(
        msg["aps"]["alert"]["loc-key"],
        "MSG_FROM_USER_IN_ROOM_WITH_CONTENT"
    );
    assert_eq!(msg["aps"]["alert"]["loc-args"][2], "Tea at five?");
    let call_push = full
        .iter()
        .find(|p| p["event_id"] == call.as_str())
        .expect("call");
    assert_eq!(call_push["aps"]["alert"]["loc-key"], "VOICE_CALL_FROM_USER");

    // event_id_only: ids and counts only, no content.
    eventually("event_id_only pushes", Duration::from_secs(30), || {
        has_event(apns_for(ios_eio_hex), &message)
    })
    .await;
    let slim = apns_for(ios_eio_hex);
    let slim_msg = slim
        .iter()
        .find(|p| p["event_id"] == message.as_str())
        .expect("slim");
    assert_eq!(slim_msg["room_id"], room.as_str());
    assert!(
        slim_msg.get("aps").and_then(|a| a.get("alert")).is_none(),
        "{slim_msg}"
    );

    // FCM: strings in `data`.
    let fcm_for = |ev: &str| {
        google
            .requests()
            .into_iter()
            .filter_map(|r| r.message.ok())
            .find(|m| m["message"]["data"]["event_id"] == ev)
    };
    eventually("FCM message push", Duration::from_secs(30), || {
        fcm_for(&message).is_some()
    })
    .await;
    let fcm = fcm_for(&message).expect("fcm");
    assert_eq!(fcm["message"]["token"], "fcm-bob");
    assert_eq!(fcm["message"]["data"]["content_body"], "Tea at five?");
    assert_eq!(fcm["message"]["data"]["type"], "m.room.message");
    assert_eq!(fcm["message"]["data"]["sender"], alice.id.as_str());

    // Web Push: decrypted by the fake.
    let wp_for = |ev: &str| {
        webpush
            .received_for("bob-browser")
            .into_iter()
            .filter_map(|p| p.payload.ok())
            .find(|p| p["event_id"] == ev)
    };
    eventually("Web Push message push", Duration::from_secs(30), || {
        wp_for(&message).is_some()
    })
    .await;
    let wp = wp_for(&message).expect("web push");
    assert_eq!(wp["content"]["body"], "Tea at five?");
    assert_eq!(wp["room_name"], "Tea");

    // UnifiedPush: Synapse's notification, only Bob's phone in `devices`, as plain JSON.
    let up_for = |ev: &str| {
        unifiedpush
            .received_for("bob-phone")
            .into_iter()
            .find(|p| p.json()["notification"]["event_id"] == ev)
    };
    eventually("UnifiedPush message push", Duration::from_secs(30), || {
        up_for(&message).is_some()
    })
    .await;
    let up = up_for(&message).expect("unifiedpush");
    assert_eq!(up.header("content-type"), Some("application/json"));
    let n = &up.json()["notification"];
    assert_eq!(n["content"]["body"], "Tea at five?");
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["sender"], alice.id.as_str());
    assert_eq!(
        n["devices"],
        json!([{"app_id": "im.example.unifiedpush", "pushkey": up_endpoint,
                "pushkey_ts": n["devices"][0]["pushkey_ts"], "data": {},
                "tweaks": n["devices"][0]["tweaks"]}])
    );

    // The dead token was rejected and Synapse deleted its pusher.
    let deadline = Instant::now() + Duration::from_secs(30);
    while bob.pushkeys().await.contains(&ios_dead) {
        assert!(
            Instant::now() < deadline,
            "Synapse kept the rejected pusher"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(bob.pushkeys().await.len(), 5);

    // pushgate away for 20 s while messages are sent; after its restart each arrives once.
    gateway.kill_9();
    let stopped = Instant::now();
    let mut late = Vec::new();
    for i in 0..3 {
        late.push(
            alice
                .send(
                    &room,
                    "m.room.message",
                    json!({"msgtype": "m.text", "body": format!("while away {i}")}),
                )
                .await,
        );
    }
    // Not an assertion: the outage itself, long enough for Synapse's pushers
    // to fail and back off (there is nothing to wait for on our side).
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(stopped.elapsed())).await;
    let _gateway = Gateway::start(&config);
    eventually(
        "every push sent while pushgate was away",
        Duration::from_secs(120),
        || {
            late.iter()
                .all(|ev| wp_for(ev).is_some() && fcm_for(ev).is_some() && up_for(ev).is_some())
        },
    )
    .await;
    // A barrier for late duplicates: each of Synapse's pushers sends its
    // events in order and moves on only once pushgate answered, so once a
    // later message arrived everywhere and pushgate's outbox is empty, no
    // earlier push can come again.
    let after = alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "after the outage"}),
        )
        .await;
    eventually(
        "a message sent after the outage",
        Duration::from_secs(120),
        || {
            has_event(apns_for(ios_full_hex), &after)
                && wp_for(&after).is_some()
                && fcm_for(&after).is_some()
                && up_for(&after).is_some()
        },
    )
    .await;
    let outbox = pushgate::config::StoreConfig::Sqlite {
        path: d.join("pushgate.db"),
    };
    assert_eq!(
        process::wait_outbox_empty(&outbox, Duration::from_secs(30)).await,
        0,
        "pushgate's outbox drained"
    );
    for ev in &late {
        let count_apns = apns_for(ios_full_hex)
            .iter()
            .filter(|p| p["event_id"] == ev.as_str())
            .count();
        let count_wp = webpush
            .received_for("bob-browser")
            .into_iter()
            .filter_map(|p| p.payload.ok())
            .filter(|p| p["event_id"] == ev.as_str())
            .count();
        let count_fcm = google
            .requests()
            .into_iter()
            .filter_map(|r| r.message.ok())
            .filter(|m| m["message"]["data"]["event_id"] == ev.as_str())
            .count();
        let count_up = unifiedpush
            .received_for("bob-phone")
            .iter()
            .filter(|p| p.json()["notification"]["event_id"] == ev.as_str())
            .count();
        assert_eq!(
            (count_apns, count_wp, count_fcm, count_up),
            (1, 1, 1, 1),
            "event {ev}"
        );
    }
    drop(synapse);
}
