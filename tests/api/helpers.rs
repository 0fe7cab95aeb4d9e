//! Starting a gateway on port 0 from a YAML config, and talking to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pushgate::config::StoreConfig;
use pushgate::store::Store;

use serde_json::Value;

pub struct TestGateway {
    pub addr: SocketAddr,
    /// The Prometheus listener, when the config enables it.
    pub metrics_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    /// The gateway's store (`None` when it runs stateless).
    pub store: StoreConfig,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

/// A VAPID key file in `dir`; returns its path.
pub fn write_vapid_key(dir: &std::path::Path) -> PathBuf {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let key = p256::SecretKey::random(&mut rand_core::OsRng);
    let path = dir.join("vapid.pem");
    let pem = key.to_pkcs8_pem(LineEnding::LF).expect("pem");
    std::fs::write(&path, pem.as_bytes()).expect("write key");
    path
}

/// Starts a gateway. `yaml` is the config with `{vapid}` standing for a fresh VAPID key path;
/// `http` is added (127.0.0.1, port 0) unless the YAML has its own.
pub async fn spawn(yaml: &str) -> TestGateway {
    pushgate::net::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = write_vapid_key(dir.path());
    let mut text = yaml.replace("{vapid}", &key.display().to_string());
    if !text.lines().any(|l| l.starts_with("http:")) {
        text.push_str("\nhttp:\n  bind_addresses: ['127.0.0.1']\n  port: 0\n");
    }
    // Tests that are not about the store run stateless (a temporary failure is a 502).
    if !text.lines().any(|l| l.starts_with("store:")) {
        text.push_str("\nstore: none\n");
    }
    let (config, _warnings) =
        pushgate::config::Config::from_yaml(&text, "test.yaml").expect("valid config");
    let gateway = pushgate::Gateway::build(&config)
        .await
        .expect("gateway starts");
    let store = config.store.clone();
    let addr = gateway.local_addrs()[0];
    let metrics_addr = gateway.metrics_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway.run_until(async move {
        let _ = stopped.await;
    }));
    TestGateway {
        addr,
        metrics_addr,
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        dir,
        store,
        _stop: stop,
    }
}

/// Polls `store` until its outbox is empty or `timeout` has passed; returns
/// the entries left.
pub async fn wait_outbox_empty(store: &dyn Store, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let n = store.stats().await.expect("stats").outbox;
        if n == 0 || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestGateway {
    /// Waits until the gateway's outbox is empty: every push of the requests
    /// answered so far has been sent (or dropped), so none of them can reach
    /// a push service again. The barrier after which "sent once" can be
    /// asserted without waiting a while longer.
    pub async fn wait_outbox_empty(&self, timeout: Duration) {
        let store = pushgate::store::open(&self.store)
            .await
            .expect("open the gateway's store")
            .expect("a gateway with a store");
        let left = wait_outbox_empty(&*store, timeout).await;
        assert_eq!(left, 0, "entries left in the outbox after {timeout:?}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = self
            .client
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("gateway answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Scrapes the Prometheus listener; returns the content type and the exposition.
    pub async fn scrape(&self) -> (String, String) {
        let addr = self.metrics_addr.expect("metrics enabled in this config");
        let resp = self
            .client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("metrics answer");
        assert_eq!(resp.status().as_u16(), 200);
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (ctype, resp.text().await.expect("metrics text"))
    }

    pub async fn notify(&self, body: &Value) -> Answer {
        self.request("POST", "/_matrix/push/v1/notify", body.to_string())
            .await
    }
}

/// A config with one app id that no test device uses, so every device is answered without upstream.
pub const NO_APPS: &str = "apps:\n  org.example.unused:\n    type: webpush\n    vapid_private_key: {vapid}\n    vapid_contact_email: ops@example.org\n";

/// The value of `series` in an exposition text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}
