//! What is measured: the benchmark's cases (service, devices per request,
//! payload format, store, rejection-table size, upstream delay, concurrency
//! levels), the fake push services each case runs against, the gateway
//! config written for it, and the request bodies.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use testkit::apns::{ApnsAuth, FakeApns};
use testkit::fcm::{service_account_json, FakeGoogle, SERVICE_ACCOUNT_KEY};
use testkit::tls::TestCa;
use testkit::webpush::{FakeWebPush, Subscription};

use crate::load::BodyFn;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Service {
    Apns,
    Fcm,
    WebPush,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Store {
    None,
    Sqlite,
    Postgres,
}

pub struct Case {
    pub name: &'static str,
    pub service: Service,
    pub devices: usize,
    pub event_id_only: bool,
    pub store: Store,
    /// The gateway's `log.level` (`info`, as deployed, unless the case is about logging).
    pub log_level: &'static str,
    /// Rows put in the rejection table before the run (none of them the bench's pushkeys).
    pub prefill_rejections: u64,
    /// Each upstream answer is delayed this long.
    pub upstream_delay: Duration,
    pub levels: &'static [usize],
    pub quick_levels: &'static [usize],
}

/// A case as a deployment runs: the default store (SQLite), INFO logging in the
/// default text format, one device per request, a fresh event id per request.
const fn case(name: &'static str, service: Service) -> Case {
    Case {
        name,
        service,
        devices: 1,
        event_id_only: false,
        store: Store::Sqlite,
        log_level: "info",
        prefill_rejections: 0,
        upstream_delay: Duration::ZERO,
        levels: &[1, 16, 64, 256],
        quick_levels: &[],
    }
}

/// Every case, in the order they run.
pub fn all() -> Vec<Case> {
    vec![
        Case {
            quick_levels: &[16],
            ..case("apns", Service::Apns)
        },
        Case {
            quick_levels: &[16],
            ..case("fcm", Service::Fcm)
        },
        Case {
            quick_levels: &[16],
            ..case("webpush", Service::WebPush)
        },
        Case {
            store: Store::None,
            levels: &[16, 64, 256],
            quick_levels: &[16],
            ..case("apns-no-store", Service::Apns)
        },
        Case {
            log_level: "warn",
            levels: &[64],
            ..case("apns-log-warn", Service::Apns)
        },
        Case {
            event_id_only: true,
            levels: &[64],
            ..case("apns-event-id-only", Service::Apns)
        },
        // 8 x 50 devices in flight stays under the default per-app limit
        // (`inflight_request_limit: 512`); beyond it the gateway answers 429.
        Case {
            devices: 50,
            levels: &[1, 4, 8],
            quick_levels: &[4],
            ..case("apns-fanout-50", Service::Apns)
        },
        Case {
            prefill_rejections: 1_000_000,
            levels: &[64],
            ..case("apns-1m-rejections", Service::Apns)
        },
        Case {
            store: Store::Postgres,
            levels: &[64, 256],
            quick_levels: &[16],
            ..case("apns-postgres", Service::Apns)
        },
        Case {
            upstream_delay: Duration::from_millis(50),
            levels: &[16, 256],
            ..case("apns-slow-50ms", Service::Apns)
        },
    ]
}

impl Case {
    pub fn app_id(&self) -> &'static str {
        match self.service {
            Service::Apns => "com.example.ios",
            Service::Fcm => "com.example.android",
            Service::WebPush => "org.example.web",
        }
    }
}

/// The three fake push services, in count-only mode.
pub struct Upstreams {
    pub apns: FakeApns,
    pub google: FakeGoogle,
    pub webpush: FakeWebPush,
    web_endpoint: String,
    web_sub: Subscription,
    ca_pem: String,
    apns_key_pem: String,
}

impl Upstreams {
    /// `apns_key` is the PEM of the P-256 key the gateway signs its APNs JWTs with.
    pub async fn start(apns_key_pem: String, delay: Duration) -> Result<Upstreams, String> {
        let signing = pushgate::keys::parse_p256_key(&apns_key_pem)
            .ok_or("the generated APNs key is not a P-256 key")?;
        let ca = TestCa::new();
        let apns = FakeApns::start(
            &ca,
            ApnsAuth::Token {
                key: *signing.verifying_key(),
                key_id: "BENCHKEY01".into(),
                team_id: "BENCHTEAM1".into(),
            },
        )
        .await;
        let google = FakeGoogle::start(3600).await;
        let webpush = FakeWebPush::start().await;
        let (web_endpoint, web_sub) = webpush.subscribe("bench");
        for load in [apns.load(), google.load(), webpush.load()] {
            load.set_count_only(true);
            load.set_delay(delay);
        }
        Ok(Upstreams {
            apns,
            google,
            webpush,
            web_endpoint,
            web_sub,
            ca_pem: ca.cert_pem().to_owned(),
            apns_key_pem,
        })
    }

    /// Pushes the fakes accepted, and refused, so far.
    pub fn counts(&self) -> (u64, u64) {
        [self.apns.load(), self.google.load(), self.webpush.load()]
            .iter()
            .map(|l| l.counts())
            .fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1))
    }

    /// Writes the gateway's config (and the key files it names) into `dir`.
    pub fn write_config(
        &self,
        dir: &Path,
        case: &Case,
        port: u16,
        metrics_port: u16,
        postgres_url: Option<&str>,
        vapid_pem: &str,
    ) -> Result<PathBuf, String> {
        let write = |name: &str, text: &str| -> Result<PathBuf, String> {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok(p)
        };
        let ca = write("ca.pem", &self.ca_pem)?;
        let apns_key = write("apns.p8", &self.apns_key_pem)?;
        let vapid = write("vapid.pem", vapid_pem)?;
        let sa = write(
            "service-account.json",
            &service_account_json(&self.google.token_uri(), SERVICE_ACCOUNT_KEY),
        )?;
        let store = match case.store {
            Store::None => "none".to_owned(),
            Store::Sqlite => format!(
                "{{sqlite: {{path: '{}'}}}}",
                dir.join("pushgate.db").display()
            ),
            Store::Postgres => format!(
                "{{postgres: {{url: '{}'}}}}",
                postgres_url.ok_or("the PostgreSQL case needs PUSHGATE_TEST_POSTGRES")?
            ),
        };
        let config = format!(
            "http:
  bind_addresses: ['127.0.0.1']
  port: {port}
log:
  level: {log_level}
metrics:
  prometheus:
    enabled: true
    address: 127.0.0.1
    port: {metrics_port}
store: {store}
apps:
  com.example.ios:
    type: apns
    keyfile: '{apns_key}'
    key_id: BENCHKEY01
    team_id: BENCHTEAM1
    topic: com.example.ios
    endpoint: '{apns_url}'
    ca_file: '{ca}'
  com.example.android:
    type: gcm
    api_version: v1
    project_id: example-project
    service_account_file: '{sa}'
    endpoint: '{fcm_url}'
  org.example.web:
    type: webpush
    vapid_private_key: '{vapid}'
    vapid_contact_email: bench@example.org
    allow_private_endpoints: true
    allow_http_endpoints: true
",
            log_level = case.log_level,
            apns_key = apns_key.display(),
            apns_url = self.apns.url(),
            ca = ca.display(),
            sa = sa.display(),
            fcm_url = self.google.base_url(),
            vapid = vapid.display(),
        );
        write("pushgate.yaml", &config)
    }

    fn device(&self, case: &Case, i: usize) -> Value {
        let mut data = if case.event_id_only {
            json!({"format": "event_id_only"})
        } else {
            json!({})
        };
        let pushkey = match case.service {
            Service::Apns => {
                let token = [0xbe, 0x0c, (i >> 8) as u8, i as u8];
                base64::engine::general_purpose::STANDARD.encode(token)
            }
            Service::Fcm => format!("bench-fcm-registration-token-{i}"),
            Service::WebPush => {
                data["endpoint"] = json!(self.web_endpoint);
                data["auth"] = json!(self.web_sub.auth());
                self.web_sub.p256dh()
            }
        };
        json!({"app_id": case.app_id(), "pushkey": pushkey, "pushkey_ts": 1_700_000_000,
               "data": data, "tweaks": {"sound": "default"}})
    }

    /// The body of request `n`: a group message as Synapse sends it, to
    /// `case.devices` devices, with event id `$bench-<n>` (unique, so the
    /// de-duplication never hides a push).
    pub fn bodies(&self, case: &Case) -> BodyFn {
        const MARK: &str = "@@EVENT@@";
        let devices: Vec<Value> = (0..case.devices).map(|i| self.device(case, i)).collect();
        let body = json!({"notification": {
            "event_id": MARK, "id": MARK, "room_id": "!KAjLIaV1wU5Za4Nr8Wv2HaOEPYNtth1OmQKqHVP2FZA",
            "type": "m.room.message", "sender": "@alice:example.org", "sender_display_name": "Alice",
            "room_name": "Bench room", "prio": "high",
            "content": {"msgtype": "m.text", "body": "The quick brown fox jumps over the lazy dog"},
            "counts": {"unread": 2}, "devices": devices}});
        let text = body.to_string();
        let parts: Arc<Vec<String>> = Arc::new(text.split(MARK).map(str::to_owned).collect());
        Arc::new(move |n| {
            let event = format!("$bench-{n}");
            Bytes::from(parts.join(&event))
        })
    }
}

/// A new P-256 key in PEM, made by `pushgate gen-vapid`.
pub fn gen_key(bin: &Path, dir: &Path, name: &str) -> Result<String, String> {
    let path = dir.join(name);
    let out = Command::new(bin)
        .args(["gen-vapid", "--out"])
        .arg(&path)
        .output()
        .map_err(|e| format!("gen-vapid: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gen-vapid failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Fills the rejection table of a migrated SQLite store with `n` rows for
/// pushkeys the bench never sends (one statement, generated in SQL).
pub async fn prefill_sqlite(db: &Path, app_id: &str, n: u64) -> Result<(), String> {
    use sqlx::Connection;
    let url = format!("sqlite://{}", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    sqlx::query(
        "INSERT INTO rejections (app_id, pushkey, rejected_at, reason) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) \
         SELECT ?, printf('dead%060x', i), ?, 'Unregistered' FROM n",
    )
    .bind(n as i64)
    .bind(app_id)
    .bind(pushgate::store::now_ms())
    .execute(&mut conn)
    .await
    .map_err(|e| format!("prefill: {e}"))?;
    let _ = conn.close().await;
    Ok(())
}
