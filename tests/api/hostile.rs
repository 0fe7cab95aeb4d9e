//! Hostile clients: slow headers, slow bodies, idle connections, an HTTP/2
//! stream flood and more connections than the cap. Under each, an honest
//! homeserver's request is still answered, and the attacker's connections are
//! cut by the configured timers and caps. Every timer here is configured short
//! (about a second), so each test ends within a few seconds.
//!
//! The times printed (`--nocapture`) are the figures in docs/testing.md.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{sample, spawn, TestGateway, NO_APPS};

/// How long an honest request may take while an attack runs. The attacks
/// fail honest requests outright (429) or hold them for a body or header
/// timeout, so a generous bound still tells the two apart.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// Upper bound on waiting for the gateway to cut a connection.
const CUT_WITHIN: Duration = Duration::from_secs(8);

const METRICS: &str =
    "metrics:\n  prometheus:\n    enabled: true\n    address: 127.0.0.1\n    port: 0\n";

/// A config with short timers; `extra_http` and `limits` are YAML lines
/// (two-space indented) added to those sections.
fn config(extra_http: &str, limits: &str) -> String {
    format!(
        "{NO_APPS}{METRICS}http:\n  bind_addresses: ['127.0.0.1']\n  port: 0\n{extra_http}limits:\n{limits}"
    )
}

/// An honest homeserver's request: answered 200 with the exact body, within
/// [`ANSWER_WITHIN`]; returns how long it took.
async fn honest_request(gw: &TestGateway) -> Duration {
    let started = Instant::now();
    let body = json!({"notification": {"devices": [{"app_id": "a", "pushkey": "honest"}]}});
    let a = tokio::time::timeout(ANSWER_WITHIN, gw.notify(&body))
        .await
        .expect("the honest request is answered in time");
    assert_eq!((a.status, a.body), (200, json!({"rejected": ["honest"]})));
    started.elapsed()
}

/// Waits until the exposition's `series` equals `value` (at most 10 s).
async fn wait_for_sample(gw: &TestGateway, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = gw.scrape().await;
        let got = sample(&text, series);
        if got == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {got:?}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const IN_FLIGHT: &str = "sygnal_requests_in_flight{resource=\"V1NotifyHandler\"}";

/// Reads until the gateway closes the connection (EOF or reset); returns
/// what it sent. Fails if it stays open for [`CUT_WITHIN`].
async fn read_until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(CUT_WITHIN, read)
        .await
        .expect("the gateway closes the connection");
    got
}

fn slow_body_head(addr: SocketAddr) -> String {
    format!(
        "POST /_matrix/push/v1/notify HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    )
}

#[tokio::test]
async fn slow_headers_are_cut_at_the_header_read_timeout() {
    let gw = spawn(&config(
        "  header_read_timeout: 1s\n",
        "  max_devices: 100\n",
    ))
    .await;
    let stream = TcpStream::connect(gw.addr).await.expect("connect");
    let opened = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    // One byte every 100 ms, for at most 10 s: a request line and headers that never end.
    let (trickling, started) = tokio::sync::oneshot::channel();
    let trickle = tokio::spawn(async move {
        let head = b"POST /_matrix/push/v1/notify HTTP/1.1\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut trickling = Some(trickling);
        for (i, b) in head.iter().enumerate() {
            if writer.write_all(&[*b]).await.is_err() {
                return;
            }
            if let Some(t) = trickling.take_if(|_| i == 2) {
                let _ = t.send(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // The honest request comes while the trickle is under way.
    started.await.expect("the trickle started");
    let honest = honest_request(&gw).await;
    let got = read_until_closed(&mut reader).await;
    let cut_after = opened.elapsed();
    trickle.abort();
    eprintln!(
        "slow headers: honest request answered in {honest:?}; trickling connection cut after {cut_after:?}"
    );
    assert!(
        cut_after >= Duration::from_millis(900),
        "cut before the header read timeout: {cut_after:?}"
    );
    // hyper answers nothing to a request it never finished reading, or a 408.
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer: {text}"
    );
}

#[tokio::test]
async fn slow_bodies_do_not_hold_in_flight_permits() {
    let gw = spawn(&config(
        "  header_read_timeout: 1s\n  body_read_timeout: 3s\n",
        "  max_inflight_requests: 2\n",
    ))
    .await;
    let mut slow = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(gw.addr).await.expect("connect");
        s.write_all(slow_body_head(gw.addr).as_bytes())
            .await
            .expect("head");
        slow.push(s);
    }
    let opened = Instant::now();
    let (mut readers, mut writers): (Vec<_>, Vec<_>) =
        slow.into_iter().map(TcpStream::into_split).unzip();
    // One body byte per connection every 200 ms, at most 40 bytes of the declared 1,000.
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            for w in &mut writers {
                let _ = w.write_all(b" ").await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // All ten are being read by the handler (counted in flight), none holds a permit.
    wait_for_sample(&gw, IN_FLIGHT, 10.0).await;
    let mut honest = Vec::new();
    for _ in 0..3 {
        honest.push(honest_request(&gw).await);
    }
    // The slow bodies end with 408 at http.body_read_timeout.
    let got = read_until_closed(&mut readers[0]).await;
    let cut_after = opened.elapsed();
    trickle.abort();
    eprintln!(
        "slow bodies (10 connections, max_inflight_requests 2): honest requests answered in {honest:?}; slow body answered after {cut_after:?}"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.ends_with(r#"{"errcode":"M_UNKNOWN","error":"timed out reading the request body"}"#),
        "{text}"
    );
    assert!(cut_after >= Duration::from_millis(2900), "{cut_after:?}");
}

/// hyper's header-read timer also runs while an HTTP/1 connection waits for
/// its next request, so an idle keep-alive connection is closed after
/// `http.header_read_timeout` even when `http.idle_timeout` is longer; a
/// connection that never sends a request is closed after it too.
#[tokio::test]
async fn idle_http1_connections_are_closed_after_the_header_read_timeout() {
    let gw = spawn(&config(
        "  header_read_timeout: 1s\n  idle_timeout: 60s\n",
        "  max_devices: 100\n",
    ))
    .await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(format!("GET /health HTTP/1.1\r\nhost: {}\r\n\r\n", gw.addr).as_bytes())
        .await
        .expect("request");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).ends_with(r#"{"status":"ok"}"#) {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the answer");
        got.extend_from_slice(&buf[..n]);
    }
    let answered = Instant::now();
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(read_until_closed(&mut s).await.is_empty());
    let idle_for = answered.elapsed();

    let mut silent = TcpStream::connect(gw.addr).await.expect("connect");
    let opened = Instant::now();
    assert!(read_until_closed(&mut silent).await.is_empty());
    let silent_for = opened.elapsed();
    eprintln!("idle HTTP/1: keep-alive connection closed after {idle_for:?}; silent connection after {silent_for:?}");
    for d in [idle_for, silent_for] {
        assert!(d >= Duration::from_millis(900), "closed too early: {d:?}");
    }
    honest_request(&gw).await;
}

/// An HTTP/2 connection with no stream open is closed after `http.idle_timeout`.
#[tokio::test]
async fn idle_http2_connections_are_closed_after_the_idle_timeout() {
    let gw = spawn(&config(
        "  header_read_timeout: 5s\n  idle_timeout: 1s\n",
        "  max_devices: 100\n",
    ))
    .await;
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut sender, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/health", gw.addr))
        .body(())
        .expect("request");
    let (resp, _) = sender.send_request(req, true).expect("send");
    let resp = resp.await.expect("answer");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        chunk.expect("body");
    }
    let answered = Instant::now();
    // The connection ends (the gateway's GOAWAY and close) without a new stream.
    let ended = tokio::time::timeout(CUT_WITHIN, driver)
        .await
        .expect("the gateway closes the idle HTTP/2 connection");
    assert!(ended.is_ok());
    let idle_for = answered.elapsed();
    eprintln!("idle HTTP/2: connection closed after {idle_for:?}");
    assert!(idle_for >= Duration::from_millis(900), "{idle_for:?}");
}

#[tokio::test]
async fn an_http2_stream_flood_gets_the_stream_cap_and_honest_requests_are_answered() {
    let gw = spawn(&config(
        "  header_read_timeout: 5s\n  body_read_timeout: 10s\n",
        "  max_inflight_requests: 2\n",
    ))
    .await;
    let mut held = Vec::new();
    let mut all_streams = Vec::new();
    let mut opened = Vec::new();
    for _ in 0..6 {
        let tcp = TcpStream::connect(gw.addr).await.expect("connect");
        let (sender, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
        held.push(tokio::spawn(async move {
            let _ = conn.await;
        }));
        // A first stream, answered, so the server's SETTINGS are in force.
        let req = http::Request::get(format!("http://{}/health", gw.addr))
            .body(())
            .expect("request");
        let (resp, _) = sender.clone().send_request(req, true).expect("send");
        assert_eq!(resp.await.expect("answer").status(), 200);
        assert_eq!(sender.current_max_send_streams(), 32);
        // Up to 200 streams, each sending one body byte of the 1,000 it declares.
        let mut n = 0;
        let mut streams = Vec::new();
        for _ in 0..200 {
            let ready = tokio::time::timeout(Duration::from_millis(200), sender.clone().ready());
            let Ok(Ok(mut ready)) = ready.await else {
                break;
            };
            let req = http::Request::post(format!("http://{}/_matrix/push/v1/notify", gw.addr))
                .header("content-type", "application/json")
                .header("content-length", "1000")
                .body(())
                .expect("request");
            let (resp, mut body) = ready.send_request(req, false).expect("send");
            body.send_data(Bytes::from_static(b"{"), false)
                .expect("data");
            streams.push((resp, body));
            n += 1;
        }
        opened.push(n);
        // Kept open until the test ends.
        all_streams.push(streams);
    }
    // The client queued all 200 of each connection (h2 holds streams past the
    // peer's limit back until one ends); exactly 32 per connection reached the handler.
    wait_for_sample(&gw, IN_FLIGHT, 6.0 * 32.0).await;
    let mut honest = Vec::new();
    for _ in 0..3 {
        honest.push(honest_request(&gw).await);
    }
    let (_, text) = gw.scrape().await;
    eprintln!(
        "h2 flood (6 connections x 200 streams): streams the client queued per connection {opened:?}; streams in the handler {:?}; honest requests answered in {honest:?}",
        sample(&text, IN_FLIGHT)
    );
    assert_eq!(opened, vec![200; 6]);
    assert_eq!(sample(&text, IN_FLIGHT), Some(192.0));
    drop(all_streams);
    for h in held {
        h.abort();
    }
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_and_counted() {
    let gw = spawn(&config(
        "  header_read_timeout: 5s\n",
        "  max_connections: 3\n",
    ))
    .await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(gw.addr).await.expect("connect"));
    }
    wait_for_sample(&gw, "pushgate_inbound_connections", 3.0).await;
    let mut fourth = TcpStream::connect(gw.addr).await.expect("connect");
    let refused_at = Instant::now();
    let _ = fourth.write_all(b"GET /health HTTP/1.1\r\n\r\n").await;
    assert!(read_until_closed(&mut fourth).await.is_empty());
    let closed_in = refused_at.elapsed();
    wait_for_sample(
        &gw,
        "pushgate_inbound_connections_refused_total{limit=\"max_connections\"}",
        1.0,
    )
    .await;
    // A place frees up: the honest request gets it.
    idle.pop();
    wait_for_sample(&gw, "pushgate_inbound_connections", 2.0).await;
    let honest = honest_request(&gw).await;
    eprintln!("connection cap 3: 4th connection closed in {closed_in:?}; honest request (after one left) answered in {honest:?}");
    let (_, text) = gw.scrape().await;
    assert_eq!(sample(&text, "pushgate_inbound_connections"), Some(3.0));
    assert_eq!(
        sample(
            &text,
            "pushgate_inbound_connections_refused_total{limit=\"max_connections_per_ip\"}"
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn connections_past_the_per_address_cap_are_closed_and_counted() {
    let gw = spawn(&config(
        "  header_read_timeout: 5s\n",
        "  max_connections: 100\n  max_connections_per_ip: 2\n",
    ))
    .await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(gw.addr).await.expect("connect"));
    }
    wait_for_sample(&gw, "pushgate_inbound_connections", 2.0).await;
    let mut third = TcpStream::connect(gw.addr).await.expect("connect");
    assert!(read_until_closed(&mut third).await.is_empty());
    wait_for_sample(
        &gw,
        "pushgate_inbound_connections_refused_total{limit=\"max_connections_per_ip\"}",
        1.0,
    )
    .await;
    drop(idle);
    wait_for_sample(&gw, "pushgate_inbound_connections", 0.0).await;
    honest_request(&gw).await;
}

/// One HTTP/2 frame: 9-byte header and payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads one frame: (type, flags, stream, payload).
async fn read_h2_frame(s: &mut TcpStream) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await?;
    Ok((head[3], head[4], stream, payload))
}

/// A client that ignores `SETTINGS_MAX_CONCURRENT_STREAMS` (raw frames, no
/// h2 library to hold it back) has every stream past the cap refused.
#[tokio::test]
async fn http2_streams_past_the_cap_are_refused_even_when_the_client_ignores_it() {
    const SETTINGS: u8 = 4;
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const REFUSED_STREAM: u32 = 7;
    let gw = spawn(&config(
        "  header_read_timeout: 5s\n  body_read_timeout: 10s\n  http2_max_concurrent_streams: 8\n",
        "  max_inflight_requests: 2\n",
    ))
    .await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    s.write_all(&h2_frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    // The server's SETTINGS announce the cap; acknowledging them puts it in force.
    let mut max_streams = None;
    let deadline = Instant::now() + CUT_WITHIN;
    while max_streams.is_none() {
        assert!(Instant::now() < deadline, "no SETTINGS from the server");
        let (kind, flags, _, payload) = tokio::time::timeout(CUT_WITHIN, read_h2_frame(&mut s))
            .await
            .expect("a frame")
            .expect("read");
        if kind == SETTINGS && flags & 1 == 0 {
            max_streams = payload.chunks(6).find_map(|p| {
                (u16::from_be_bytes([p[0], p[1]]) == 3)
                    .then(|| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
            });
            s.write_all(&h2_frame(SETTINGS, 1, 0, &[]))
                .await
                .expect("ack");
        }
    }
    assert_eq!(max_streams, Some(8));
    // HPACK: :method POST, :scheme http, :path and :authority as literals; no END_STREAM.
    let authority = gw.addr.to_string();
    let path = "/_matrix/push/v1/notify";
    let mut block = vec![0x83, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, authority.len() as u8]);
    block.extend_from_slice(authority.as_bytes());
    let streams: Vec<u32> = (0..12).map(|i| 1 + 2 * i).collect();
    for id in &streams {
        // END_HEADERS only: each stream waits for a body that never comes.
        s.write_all(&h2_frame(HEADERS, 0x4, *id, &block))
            .await
            .expect("headers");
    }
    let mut refused = Vec::new();
    while refused.len() < 4 {
        let (kind, _, stream, payload) = tokio::time::timeout(CUT_WITHIN, read_h2_frame(&mut s))
            .await
            .expect("the streams past the cap are refused")
            .expect("read");
        if kind == RST_STREAM {
            let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
            refused.push((stream, code));
        }
    }
    assert_eq!(
        refused,
        streams[8..]
            .iter()
            .map(|id| (*id, REFUSED_STREAM))
            .collect::<Vec<_>>()
    );
    wait_for_sample(&gw, IN_FLIGHT, 8.0).await;
    let honest = honest_request(&gw).await;
    eprintln!("h2 raw client ignoring the cap of 8: streams {:?} refused; honest request answered in {honest:?}", refused.iter().map(|r| r.0).collect::<Vec<_>>());
}

/// Over TLS: a client that opens a connection and stalls its handshake is cut
/// at `http.header_read_timeout`; a homeserver's HTTPS request is answered meanwhile.
#[tokio::test]
async fn a_stalled_tls_handshake_is_cut_at_the_header_read_timeout() {
    pushgate::net::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = testkit::tls::TestCa::new();
    let issued = ca.server_cert();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, &issued.cert_pem).expect("cert");
    std::fs::write(&key, &issued.key_pem).expect("key");
    let yaml = format!(
        "http:\n  bind_addresses: ['127.0.0.1']\n  port: 0\n  header_read_timeout: 1s\nstore: none\ntls:\n  certificate: '{}'\n  private_key: '{}'\n",
        cert.display(),
        key.display()
    );
    let (cfg, _) = pushgate::config::Config::from_yaml(&yaml, "tls.yaml").expect("valid config");
    let gateway = pushgate::Gateway::build(&cfg)
        .await
        .expect("gateway starts");
    let addr = gateway.local_addrs()[0];
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway.run_until(async move {
        let _ = stopped.await;
    }));

    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    let opened = Instant::now();
    // The first bytes of a TLS record (a handshake record header), then nothing.
    stalled.write_all(&[0x16, 0x03, 0x01]).await.expect("write");

    let root = reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).expect("ca");
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([root])
        .build()
        .expect("client");
    let started = Instant::now();
    let body = json!({"notification": {"devices": [{"app_id": "a", "pushkey": "honest"}]}});
    let resp = tokio::time::timeout(
        ANSWER_WITHIN,
        client
            .post(format!(
                "https://localhost:{}/_matrix/push/v1/notify",
                addr.port()
            ))
            .json(&body)
            .send(),
    )
    .await
    .expect("answered in time")
    .expect("https answer");
    assert_eq!(resp.status().as_u16(), 200);
    let answer: serde_json::Value = resp.json().await.expect("json");
    let honest = started.elapsed();
    assert_eq!(answer, json!({"rejected": ["honest"]}));

    assert!(read_until_closed(&mut stalled).await.is_empty());
    let cut_after = opened.elapsed();
    eprintln!("stalled TLS handshake: cut after {cut_after:?}; honest HTTPS request answered in {honest:?}");
    assert!(cut_after >= Duration::from_millis(900), "{cut_after:?}");
}
