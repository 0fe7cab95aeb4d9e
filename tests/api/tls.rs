//! Inbound TLS: HTTPS on the notify listener with a certificate from a test
//! CA, HTTP/1.1 and HTTP/2 (ALPN), plain HTTP refused, and the certificate
//! replaced by a reload without a restart.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::json;
use testkit::tls::{Issued, TestCa};

fn write_pair(dir: &Path, name: &str, issued: &Issued) -> String {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &issued.cert_pem).expect("cert");
    std::fs::write(&key, &issued.key_pem).expect("key");
    format!(
        "tls:\n  certificate: '{}'\n  private_key: '{}'\n",
        cert.display(),
        key.display()
    )
}

fn config(tls: &str) -> pushgate::config::Config {
    let yaml = format!("http:\n  bind_addresses: ['127.0.0.1']\n  port: 0\nstore: none\n{tls}");
    pushgate::config::Config::from_yaml(&yaml, "tls.yaml")
        .expect("valid config")
        .0
}

/// A client that trusts only `ca`; `http1_only` keeps it to HTTP/1.1 (else ALPN picks h2).
fn client(ca: &TestCa, http1_only: bool) -> reqwest::Client {
    pushgate::net::install_crypto_provider();
    let root = reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).expect("ca");
    let mut b = reqwest::Client::builder().no_proxy().tls_certs_only([root]);
    if http1_only {
        b = b.http1_only();
    }
    b.build().expect("client")
}

async fn notify(
    client: &reqwest::Client,
    addr: SocketAddr,
) -> Result<(reqwest::Version, u16, serde_json::Value), reqwest::Error> {
    let body = json!({"notification": {"event_id": "$e", "devices": [{"app_id": "nobody", "pushkey": "k"}]}});
    let resp = client
        .post(format!(
            "https://localhost:{}/_matrix/push/v1/notify",
            addr.port()
        ))
        .json(&body)
        .send()
        .await?;
    let version = resp.version();
    let status = resp.status().as_u16();
    Ok((version, status, resp.json().await?))
}

#[tokio::test]
async fn https_with_http1_and_http2_and_a_certificate_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new();
    let cfg = config(&write_pair(dir.path(), "first", &ca.server_cert()));
    let gateway = pushgate::Gateway::build(&cfg)
        .await
        .expect("gateway starts");
    let addr = gateway.local_addrs()[0];
    let reloader = gateway.reloader();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway.run_until(async move {
        let _ = stopped.await;
    }));

    let rejected = json!({"rejected": ["k"]});
    let h2 = notify(&client(&ca, false), addr).await.expect("https h2");
    assert_eq!(h2, (reqwest::Version::HTTP_2, 200, rejected.clone()));
    let h1 = notify(&client(&ca, true), addr)
        .await
        .expect("https http/1.1");
    assert_eq!(h1, (reqwest::Version::HTTP_11, 200, rejected.clone()));

    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let r = plain
        .get(format!("http://127.0.0.1:{}/health", addr.port()))
        .timeout(std::time::Duration::from_secs(3))
        .send()
        .await;
    assert!(r.is_err(), "{r:?}");

    // A certificate from another CA, put in force by a reload: new connections see it.
    let other = TestCa::new();
    let renewed = config(&write_pair(dir.path(), "second", &other.server_cert()));
    let done = reloader.reload(&renewed).expect("reload");
    assert!(done.certificate);
    let new_client = notify(&client(&other, false), addr)
        .await
        .expect("new cert");
    assert_eq!(new_client.1, 200);
    let old_trust = notify(&client(&ca, false), addr).await;
    assert!(old_trust.is_err(), "the old certificate is still served");

    // Turning TLS off needs a restart: refused, nothing changes.
    assert!(reloader.reload(&config("")).is_err());
    assert_eq!(
        notify(&client(&other, false), addr)
            .await
            .expect("still tls")
            .1,
        200
    );
    drop(stop);
}

#[test]
fn a_key_that_does_not_fit_the_certificate_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new();
    let a = ca.server_cert();
    let b = ca.server_cert();
    let mixed = Issued {
        cert_pem: a.cert_pem,
        key_pem: b.key_pem,
    };
    let tls = write_pair(dir.path(), "mixed", &mixed);
    let yaml = format!("store: none\n{tls}");
    let err = pushgate::config::Config::from_yaml(&yaml, "tls.yaml").expect_err("refused");
    let text = format!("{err:?}");
    assert!(
        text.contains("tls.private_key") && text.contains("does not fit the certificate"),
        "{text}"
    );
}
