//! The operator's commands (`pushgate store|outbox|rejections|claims`) through
//! the CLI binary, against the store of a running gateway (SQLite, and
//! PostgreSQL when `PUSHGATE_TEST_POSTGRES` names a server), with a fake APNs
//! on 127.0.0.1 deciding what each device's push gets.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{json, Value};
use testkit::apns::{ApnsAuth, ApnsBehaviour, FakeApns};
use testkit::tls::TestCa;

const BIN: &str = env!("CARGO_BIN_EXE_pushgate");
const APNS: &str = "com.example.ios";
const KEY_ID: &str = "KEYID12345";
const TEAM_ID: &str = "TEAM123456";
/// When the fake APNs says the wrongly rejected token died (2023-11-14T22:13:20Z).
const DIED_MS: u64 = 1_700_000_000_000;

struct Setup {
    config: PathBuf,
    client: reqwest::Client,
    addr: std::net::SocketAddr,
    fake: FakeApns,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// A gateway with one token-auth APNs app on a fake APNs and the given
/// store; outbox retries an hour apart so that queued pushes stay put. The
/// config is also written to a file for the CLI.
async fn start(store: impl Fn(&Path) -> String) -> Setup {
    pushgate::net::install_crypto_provider();
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new();
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let p8 = p256::SecretKey::from(key.clone())
        .to_pkcs8_pem(LineEnding::LF)
        .expect("pem");
    std::fs::write(dir.path().join("key.p8"), p8.as_bytes()).expect("p8");
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("ca");
    let fake = FakeApns::start(
        &ca,
        ApnsAuth::Token {
            key: *key.verifying_key(),
            key_id: KEY_ID.into(),
            team_id: TEAM_ID.into(),
        },
    )
    .await;
    let d = dir.path().display();
    let yaml = format!(
        "apps:\n  {APNS}:\n    type: apns\n    keyfile: {d}/key.p8\n    key_id: {KEY_ID}\n    team_id: {TEAM_ID}\n    topic: com.example.app\n    push_type: alert\n    endpoint: {}\n    ca_file: {d}/ca.pem\n\
         http:\n  bind_addresses: ['127.0.0.1']\n  port: 0\n\
         dispatch:\n  connect_timeout: 1s\n  upstream_timeout: 2s\n  retry_initial_delay: 1h\n  retry_max_delay: 1h\n{}",
        fake.url(),
        store(dir.path())
    );
    let config = dir.path().join("pushgate.yaml");
    std::fs::write(&config, &yaml).expect("config file");
    let (cfg, _) = pushgate::config::Config::from_yaml(&yaml, "pushgate.yaml").expect("config");
    let gateway = pushgate::Gateway::build(&cfg)
        .await
        .expect("gateway starts");
    let addr = gateway.local_addrs()[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway.run_until(async move {
        let _ = stopped.await;
    }));
    Setup {
        config,
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        addr,
        fake,
        _stop: stop,
        _dir: dir,
    }
}

/// A pushkey as iOS apps register it (16 token bytes in base64) and the hex token APNs sees.
fn token(i: u8) -> (String, String) {
    let bytes = [0xde, 0xad, 0xbe, 0xef, i, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, i];
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    (base64::engine::general_purpose::STANDARD.encode(bytes), hex)
}

impl Setup {
    /// Runs `pushgate --config <file> <args>` off the runtime's thread; returns (exit code, stdout).
    async fn cli(&self, args: &[&str]) -> (i32, String) {
        let config = self.config.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .arg("--config")
                .arg(&config)
                .args(&args)
                .output()
                .expect("runs")
        })
        .await
        .expect("joined");
        assert!(
            out.status.success() || out.status.code() == Some(1),
            "{:?}",
            out
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).expect("utf8"),
        )
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let (code, out) = self.cli(&args).await;
        assert_eq!(code, 0, "{args:?}: {out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// Notifies one device; returns the `rejected` list.
    async fn push(&self, event: &str, pushkey: &str) -> Value {
        let body = json!({"notification": {
            "event_id": event, "room_id": "!room:x", "type": "m.room.message", "sender": "@alice:x",
            "prio": "high", "counts": {"unread": 1}, "content": {"msgtype": "m.text", "body": "hello"},
            "devices": [{"app_id": APNS, "pushkey": pushkey, "pushkey_ts": 1}]
        }});
        let resp = self
            .client
            .post(format!("http://{}/_matrix/push/v1/notify", self.addr))
            .json(&body)
            .send()
            .await
            .expect("gateway answers");
        assert_eq!(resp.status().as_u16(), 200);
        resp.json::<Value>().await.expect("JSON")["rejected"].clone()
    }

    fn answers_for(&self, hex: &str) -> Vec<u16> {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.token == hex)
            .map(|r| r.answered)
            .collect()
    }

    async fn wait_answers(&self, hex: &str, n: usize) -> Vec<u16> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.answers_for(hex);
            if seen.len() >= n || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_outbox_empty(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = self.json(&["outbox", "list"]).await;
            if list.as_array().is_some_and(|a| a.is_empty()) || Instant::now() > deadline {
                return list;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn redacted(pushkey: &str) -> String {
    pushgate::ids::PushKey::from(pushkey).to_string()
}

/// Every command in one story, on one store.
async fn operator_repairs_the_store(s: Setup) {
    let (wrong, wrong_hex) = token(1);
    let (queued, queued_hex) = token(2);
    let (dropped, dropped_hex) = token(3);

    // An empty store.
    let (code, out) = s.cli(&["store", "stats"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "APP    OUTBOX  OLDEST  REJECTIONS  CLAIMS\n(all)  0       -       0           0\n"
    );

    // A wrong rejection: APNs says the token is dead (it was not).
    s.fake.set(
        &wrong_hex,
        ApnsBehaviour::Unregistered {
            timestamp_ms: DIED_MS,
        },
    );
    assert_eq!(s.push("$e1", &wrong).await, json!([wrong]));
    s.fake.set(&wrong_hex, ApnsBehaviour::Ok);
    // Remembered: answered without asking APNs.
    assert_eq!(s.push("$e2", &wrong).await, json!([wrong]));
    assert_eq!(s.answers_for(&wrong_hex), vec![410]);

    let list = s.json(&["rejections", "list"]).await;
    let reason = list[0]["reason"].as_str().expect("reason").to_owned();
    assert!(reason.starts_with("APNs answered 410"), "{reason}");
    assert_eq!(
        list,
        json!([{"app_id": APNS, "pushkey": redacted(&wrong), "rejected_ms": DIED_MS, "reason": reason}])
    );
    let (_, table) = s.cli(&["rejections", "list", "--app", APNS]).await;
    let key = redacted(&wrong);
    let pad = " ".repeat(key.chars().count().max(7) - key.chars().count());
    let head_pad = " ".repeat(key.chars().count().max(7) - 7);
    assert_eq!(
        table,
        format!(
            "APP              PUSHKEY{head_pad}  REJECTED              REASON\n\
             {APNS}  {key}{pad}  2023-11-14T22:13:20Z  {reason}\n"
        )
    );
    assert_eq!(
        s.json(&["rejections", "list", "--app", "other.app"]).await,
        json!([])
    );

    // Forgotten: the next push is delivered.
    assert_eq!(
        s.cli(&["rejections", "forget", "--app", APNS, "--pushkey", &wrong])
            .await,
        (0, "1 rejections forgotten\n".to_owned())
    );
    assert_eq!(
        s.json(&["rejections", "forget", "--app", APNS, "--pushkey", &wrong])
            .await,
        json!({"forgotten": 0})
    );
    assert_eq!(s.push("$e3", &wrong).await, json!([]));
    assert_eq!(s.answers_for(&wrong_hex), vec![410, 200]);

    // A push queued after a temporary failure, then retried at once.
    s.fake.set(
        &queued_hex,
        ApnsBehaviour::Reason(503, "ServiceUnavailable"),
    );
    assert_eq!(s.push("$e4", &queued).await, json!([]));
    let list = s.json(&["outbox", "list"]).await;
    let entries = list.as_array().expect("array");
    assert_eq!(entries.len(), 1, "{list}");
    let e = &entries[0];
    assert_eq!(e["app_id"], APNS);
    assert_eq!(e["pushkey"], json!(redacted(&queued)));
    let attempts = e["attempts"].as_i64().expect("attempts");
    assert!(attempts >= 1, "{e}");
    let last_error = e["last_error"].as_str().expect("last error").to_owned();
    assert!(last_error.contains("503"), "{last_error}");
    let created = e["created_ms"].as_i64().expect("created");
    let next_try = e["next_try_ms"].as_i64().expect("next try");
    assert!(
        next_try > created + 30 * 60 * 1000,
        "retried an hour later: {e}"
    );
    let id = e["id"].as_i64().expect("id").to_string();

    // Stats while one entry waits.
    let stats = s.json(&["store", "stats"]).await;
    let claims = stats["claims"].as_i64().expect("claims");
    assert_eq!(
        claims, 3,
        "$e1, $e3 and $e4 claimed ($e2 was answered from memory): {stats}"
    );
    assert_eq!(
        stats["apps"],
        json!([{"app_id": APNS, "outbox": 1, "oldest_ms": created, "rejections": 0, "claims": 3}])
    );
    assert_eq!(stats["outbox"], 1);
    assert_eq!(stats["rejections"], 0);
    let (_, table) = s.cli(&["store", "stats"]).await;
    let oldest = pushgate::admin::time(Some(created));
    assert_eq!(
        table,
        format!(
            "APP              OUTBOX  OLDEST                REJECTIONS  CLAIMS\n\
             {APNS}  1       {oldest}  0           3\n\
             (all)            1       {oldest}  0           3\n"
        )
    );
    let (_, table) = s
        .cli(&["outbox", "list", "--app", APNS, "--limit", "5"])
        .await;
    assert_eq!(
        table,
        pushgate::admin::table(
            &[
                "ID",
                "APP",
                "PUSHKEY",
                "CREATED",
                "ATTEMPTS",
                "NEXT TRY",
                "LAST ERROR"
            ],
            &[vec![
                id.clone(),
                APNS.into(),
                redacted(&queued),
                oldest.clone(),
                attempts.to_string(),
                pushgate::admin::time(Some(next_try)),
                last_error,
            ]]
        )
    );
    assert!(
        table.starts_with(&format!(
            "ID{}  APP ",
            " ".repeat(id.len().saturating_sub(2))
        )),
        "{table}"
    );

    s.fake.set(&queued_hex, ApnsBehaviour::Ok);
    let before = s.answers_for(&queued_hex).len();
    assert_eq!(
        s.cli(&["outbox", "retry", &id]).await,
        (0, "1 outbox entries made due now\n".to_owned())
    );
    let answers = s.wait_answers(&queued_hex, before + 1).await;
    assert_eq!(answers.last(), Some(&200), "{answers:?}");
    assert_eq!(s.wait_outbox_empty().await, json!([]));

    // A queued push dropped: never sent.
    s.fake.set(
        &dropped_hex,
        ApnsBehaviour::Reason(503, "ServiceUnavailable"),
    );
    assert_eq!(s.push("$e5", &dropped).await, json!([]));
    assert_eq!(
        s.json(&["outbox", "list"]).await.as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        s.json(&["outbox", "retry", "--app", "other.app"]).await,
        json!({"retried": 0})
    );
    assert_eq!(
        s.json(&["outbox", "drop", "--app", APNS]).await,
        json!({"dropped": 1})
    );
    assert_eq!(s.json(&["outbox", "list"]).await, json!([]));
    let sent = s.answers_for(&dropped_hex).len();
    s.fake.set(&dropped_hex, ApnsBehaviour::Ok);
    assert_eq!(
        s.json(&["outbox", "drop", "999999"]).await,
        json!({"dropped": 0})
    );

    // Claims: none are ten minutes old; all are older than nothing.
    assert_eq!(
        s.json(&["claims", "purge", "--older-than", "10m"]).await,
        json!({"purged": 0})
    );
    let claims = s.json(&["store", "stats"]).await["claims"]
        .as_i64()
        .expect("claims");
    assert_eq!(claims, 4);
    // Settled claims carry their settlement time, at the latest now: wait
    // until the system clock (which the CLI reads) has moved past it.
    let settled_by = pushgate::store::now_ms();
    while pushgate::store::now_ms() <= settled_by {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        s.cli(&["claims", "purge", "--older-than", "0s"]).await,
        (0, "4 claims purged\n".to_owned())
    );
    assert_eq!(s.json(&["store", "stats"]).await["claims"], 0);
    // The dropped push was never sent again.
    assert_eq!(s.answers_for(&dropped_hex).len(), sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_on_sqlite_while_the_gateway_runs() {
    let s = start(|dir| {
        format!(
            "store:\n  sqlite:\n    path: '{}'\n",
            dir.join("store.db").display()
        )
    })
    .await;
    operator_repairs_the_store(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_on_postgres_while_the_gateway_runs() {
    let Some(url) = testkit::postgres::fresh_database().await else {
        return;
    };
    let s = start(|_| format!("store:\n  postgres:\n    url: '{url}'\n")).await;
    operator_repairs_the_store(s).await;
    testkit::postgres::drop_database(&url).await;
}

#[tokio::test]
async fn web_push_rejections_are_forgotten_by_endpoint() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("pushgate.yaml");
    std::fs::write(
        &config,
        format!(
            "apps: {{}}\nstore:\n  sqlite:\n    path: '{}'\n",
            dir.path().join("s.db").display()
        ),
    )
    .expect("config");
    // A rejection as the Web Push pushkin remembers it: by its endpoint's hash.
    let endpoint = "https://push.example/abc";
    let store = pushgate::store::open(&pushgate::config::StoreConfig::Sqlite {
        path: dir.path().join("s.db"),
    })
    .await
    .expect("store")
    .expect("sqlite");
    store
        .settle(pushgate::store::Settlement {
            now: 1,
            remember: vec![pushgate::store::Rejection {
                app_id: "org.example.web".into(),
                pushkey: pushgate::pushkin::endpoint::memory_key(endpoint),
                rejected_at: 1,
                reason: "Web Push answered 410".into(),
            }],
            ..Default::default()
        })
        .await
        .expect("settled");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args([
            "rejections",
            "forget",
            "--app",
            "org.example.web",
            "--endpoint",
            endpoint,
            "--json",
        ])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"forgotten\":1}\n");
    assert_eq!(store.stats().await.expect("stats").rejections, 0);
    // --pushkey and --endpoint exclude each other; one is needed.
    for args in [
        vec!["rejections", "forget", "--app", "a"],
        vec![
            "rejections",
            "forget",
            "--app",
            "a",
            "--pushkey",
            "k",
            "--endpoint",
            "https://e/",
        ],
    ] {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(&args)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn a_store_command_without_a_store_says_so() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("pushgate.yaml");
    std::fs::write(&config, "apps: {}\nstore: none\n").expect("config");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["store", "stats"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`store: none`"),
        "{out:?}"
    );
}
