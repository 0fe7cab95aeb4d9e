//! The client against a fake HTTP/2 server on 127.0.0.1 that speaks raw
//! frames, so that it can refuse a stream, send GOAWAY naming an earlier
//! last stream, or close a connection mid-request, exactly when told.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// What the fake does with one request, once it has all of it.
#[derive(Debug, Clone, Copy)]
enum Act {
    /// 200.
    Ok,
    /// 200, then GOAWAY naming this stream as the last, and close.
    OkThenGoAway,
    /// A 400 head whose body never comes, then GOAWAY naming this stream as
    /// the last; the connection stays open (going away while the stream lives).
    HeadThenGoAway,
    /// `RST_STREAM(REFUSED_STREAM)`.
    Refuse,
    /// GOAWAY(`NO_ERROR`) whose last stream is before this one, and close.
    GoAwayBefore,
    /// Close the connection without an answer (the request may have been processed).
    Close,
    /// 400 with a body of this many bytes (at most one frame), ignoring flow control.
    Body(usize),
}

#[derive(Default)]
struct Fake {
    script: Mutex<VecDeque<Act>>,
    /// (connection, stream) of each request, in arrival order.
    seen: Mutex<Vec<(usize, u32)>>,
    connections: AtomicUsize,
    /// PINGs received.
    pings: AtomicUsize,
    /// Leave PINGs unanswered.
    deaf: AtomicBool,
}

impl Fake {
    async fn start(script: &[Act]) -> (Arc<Fake>, url::Url) {
        let fake = Arc::new(Fake {
            script: Mutex::new(script.iter().copied().collect()),
            ..Fake::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let serving = fake.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let n = serving.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serving.clone().serve(sock, n));
            }
        });
        let url = url::Url::parse(&format!("http://{addr}")).expect("url");
        (fake, url)
    }

    fn seen(&self) -> Vec<(usize, u32)> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    async fn serve(self: Arc<Self>, mut sock: TcpStream, connection: usize) {
        let mut preface = [0u8; 24];
        if sock.read_exact(&mut preface).await.is_err() {
            return;
        }
        if sock.write_all(&frame(SETTINGS, 0, 0, &[])).await.is_err() {
            return;
        }
        loop {
            let mut head = [0u8; 9];
            if sock.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            if sock.read_exact(&mut payload).await.is_err() {
                return;
            }
            let reply = match kind {
                SETTINGS if flags & ACK == 0 => frame(SETTINGS, ACK, 0, &[]),
                PING if flags & ACK == 0 => {
                    self.pings.fetch_add(1, Ordering::SeqCst);
                    if self.deaf.load(Ordering::SeqCst) {
                        continue;
                    }
                    frame(PING, ACK, 0, &payload)
                }
                HEADERS | DATA if flags & END_STREAM != 0 => {
                    if let Ok(mut s) = self.seen.lock() {
                        s.push((connection, stream));
                    }
                    let act = self
                        .script
                        .lock()
                        .ok()
                        .and_then(|mut s| s.pop_front())
                        .unwrap_or(Act::Ok);
                    match act {
                        Act::Ok => ok(stream),
                        Act::OkThenGoAway => {
                            let mut out = ok(stream);
                            out.extend(go_away(stream));
                            let _ = sock.write_all(&out).await;
                            return;
                        }
                        Act::HeadThenGoAway => {
                            let mut out = frame(HEADERS, END_HEADERS, stream, &[0x8c]);
                            out.extend(go_away(stream));
                            out
                        }
                        Act::Refuse => frame(RST_STREAM, 0, stream, &REFUSED_STREAM.to_be_bytes()),
                        Act::GoAwayBefore => {
                            let _ = sock.write_all(&go_away(stream.saturating_sub(2))).await;
                            return;
                        }
                        Act::Close => return,
                        Act::Body(len) => {
                            // `:status: 400` (HPACK static table entry 12).
                            let mut out = frame(HEADERS, END_HEADERS, stream, &[0x8c]);
                            out.extend(frame(DATA, END_STREAM, stream, &vec![b'x'; len]));
                            out
                        }
                    }
                }
                _ => continue,
            };
            if sock.write_all(&reply).await.is_err() {
                return;
            }
        }
    }
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 0x7;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `:status: 200` (HPACK static table entry 8), ending the stream.
fn ok(stream: u32) -> Vec<u8> {
    frame(HEADERS, END_HEADERS | END_STREAM, stream, &[0x88])
}

/// GOAWAY(`NO_ERROR`) naming `last` as the last stream processed.
fn go_away(last: u32) -> Vec<u8> {
    let mut payload = last.to_be_bytes().to_vec();
    payload.extend_from_slice(&0u32.to_be_bytes());
    frame(GOAWAY, 0, 0, &payload)
}

fn counter() -> IntCounter {
    IntCounter::new("connections", "connections opened").expect("counter")
}

fn client(origin: &url::Url, proxy: Option<&str>, connections: &IntCounter) -> Client {
    Client::new(Options {
        origin,
        connect_timeout: Duration::from_secs(2),
        proxy,
        extra_ca: None,
        identity: None,
        connections: Some(connections.clone()),
    })
    .expect("client")
}

fn push(origin: &url::Url) -> http::Request<Bytes> {
    let mut r = http::Request::new(Bytes::from_static(b"{\"aps\":{}}"));
    *r.method_mut() = http::Method::POST;
    *r.uri_mut() = format!("{}3/device/abcd", origin).parse().expect("uri");
    r
}

/// The answer to one push, within 5 s.
async fn answer(c: &Client, origin: &url::Url) -> Result<Response, Error> {
    tokio::time::timeout(Duration::from_secs(5), c.send(push(origin)))
        .await
        .expect("bounded")
}

async fn status(c: &Client, origin: &url::Url) -> Result<u16, Error> {
    answer(c, origin).await.map(|a| a.status().as_u16())
}

#[tokio::test]
async fn a_refused_stream_is_sent_once_more_on_the_same_connection() {
    let (fake, origin) = Fake::start(&[Act::Refuse, Act::Ok]).await;
    let opened = counter();
    let c = client(&origin, None, &opened);
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    assert_eq!(fake.seen(), [(0, 1), (0, 3)]);
    assert_eq!(opened.get(), 1);
}

#[tokio::test]
async fn a_stream_refused_twice_is_an_error_after_two_requests() {
    let (fake, origin) = Fake::start(&[Act::Refuse, Act::Refuse, Act::Ok]).await;
    let c = client(&origin, None, &counter());
    let e = status(&c, &origin).await.expect_err("refused twice");
    assert!(matches!(e, Error::Request(_)), "{e:?}");
    assert_eq!(e.describe(), "request failed: stream error received: refused stream before processing any application logic");
    assert_eq!(fake.seen().len(), 2, "sent once more, not twice");
}

#[tokio::test]
async fn a_goaway_before_the_stream_sends_it_again_on_a_new_connection() {
    let (fake, origin) = Fake::start(&[Act::GoAwayBefore, Act::Ok]).await;
    let opened = counter();
    let c = client(&origin, None, &opened);
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    assert_eq!(fake.seen(), [(0, 1), (1, 1)]);
    assert_eq!(opened.get(), 2);
    // The new connection serves the next push.
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    assert_eq!(fake.seen().last(), Some(&(1, 3)));
    assert_eq!(opened.get(), 2);
}

#[tokio::test]
async fn a_request_the_server_may_have_processed_is_never_sent_again() {
    let (fake, origin) = Fake::start(&[Act::Close]).await;
    let opened = counter();
    let c = client(&origin, None, &opened);
    let e = status(&c, &origin).await.expect_err("no answer");
    assert!(
        e.describe().starts_with("request failed: "),
        "{}",
        e.describe()
    );
    assert_eq!(fake.seen(), [(0, 1)]);
    // The next push reconnects.
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    assert_eq!(fake.seen().last(), Some(&(1, 1)));
    assert_eq!(opened.get(), 2);
}

#[tokio::test]
async fn after_a_graceful_goaway_the_next_push_opens_a_new_connection() {
    let (fake, origin) = Fake::start(&[Act::OkThenGoAway]).await;
    let opened = counter();
    let c = client(&origin, None, &opened);
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    // Let the client read the GOAWAY and the close.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    assert_eq!(fake.seen(), [(0, 1), (1, 1)]);
    assert_eq!(opened.get(), 2);
}

/// Answers of 16 KiB bodies, more of them than the connection's receive
/// window holds: the server overruns the window (a connection error) unless
/// the client gives back what it received.
const BODY: usize = 16 * 1024;
const BODIES: usize = dial::CONNECTION_WINDOW as usize / BODY + 8;

/// Pushes to a fake that answers each with a 400 and a [`BODY`], on one
/// connection; `read` does what it does with each answer, and what it gives
/// back is kept until the end.
async fn answers_with_bodies(mut read: impl AsyncFnMut(usize, Response) -> Option<Response>) {
    let (fake, origin) = Fake::start(&[Act::Body(BODY); BODIES]).await;
    let opened = counter();
    let c = client(&origin, None, &opened);
    let mut kept = Vec::new();
    for i in 0..BODIES {
        let answer = answer(&c, &origin)
            .await
            .unwrap_or_else(|e| panic!("push {i}: {e:?}"));
        assert_eq!(Inbound::status(&answer), 400, "push {i}");
        kept.extend(read(i, answer).await);
    }
    assert_eq!(fake.seen().len(), BODIES);
    assert_eq!(opened.get(), 1);
}

#[tokio::test]
async fn answers_read_and_kept_do_not_dry_up_the_connection_window() {
    answers_with_bodies(async |i, mut answer| {
        let mut read = 0;
        while let Some(chunk) = answer.chunk().await {
            read += chunk.len();
        }
        assert_eq!(read, BODY, "push {i}");
        Some(answer)
    })
    .await;
}

#[tokio::test]
async fn an_unread_answer_body_dropped_frees_its_window() {
    answers_with_bodies(async |_, _dropped| None).await;
}

/// Pings every 50 ms, to be answered within `timeout`.
fn quick_pings(c: &mut Client, timeout: Duration) {
    c.dialer.keep_alive = dial::KeepAlive {
        interval: Duration::from_millis(50),
        timeout,
    };
}

#[tokio::test]
async fn an_idle_connection_is_pinged_and_kept_while_it_answers() {
    let (fake, origin) = Fake::start(&[]).await;
    let opened = counter();
    let mut c = client(&origin, None, &opened);
    // Room for a loaded machine: only a ping's absence is under test here.
    quick_pings(&mut c, Duration::from_secs(2));
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(fake.pings.load(Ordering::SeqCst) >= 3);
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    assert_eq!(fake.seen(), [(0, 1), (0, 3)]);
    assert_eq!(opened.get(), 1);
}

#[tokio::test]
async fn a_connection_that_leaves_a_ping_unanswered_is_replaced() {
    let (fake, origin) = Fake::start(&[]).await;
    fake.deaf.store(true, Ordering::SeqCst);
    let opened = counter();
    let mut c = client(&origin, None, &opened);
    quick_pings(&mut c, Duration::from_millis(300));
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    // One interval, the timeout, and room for a loaded machine.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        fake.pings.load(Ordering::SeqCst),
        1,
        "no ping after the unanswered one"
    );
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    assert_eq!(fake.seen(), [(0, 1), (1, 1)]);
    assert_eq!(opened.get(), 2);
}

/// An HTTP/2 server (the `h2` crate's) that records each request's head and
/// body and answers 200.
async fn recording_server() -> (url::Url, Arc<Mutex<Vec<(http::request::Parts, Bytes)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut conn) = h2::server::handshake(sock).await else {
            return;
        };
        while let Some(Ok((request, mut respond))) = conn.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let (parts, mut body) = request.into_parts();
                let mut all = Vec::new();
                while let Some(Ok(data)) = body.data().await {
                    let _ = body.flow_control().release_capacity(data.len());
                    all.extend_from_slice(&data);
                }
                if let Ok(mut r) = record.lock() {
                    r.push((parts, Bytes::from(all)));
                }
                let _ = respond.send_response(http::Response::new(()), true);
            });
        }
    });
    let url = url::Url::parse(&format!("http://{addr}")).expect("url");
    (url, seen)
}

#[tokio::test]
async fn a_request_carries_its_head_with_agent_accept_and_length_and_its_body() {
    let (origin, seen) = recording_server().await;
    let c = client(&origin, None, &counter());
    let mut with_agent = push(&origin);
    with_agent
        .headers_mut()
        .insert(USER_AGENT, HeaderValue::from_static("mine"));
    with_agent
        .headers_mut()
        .insert("apns-priority", HeaderValue::from_static("10"));
    let mut empty = push(&origin);
    *empty.body_mut() = Bytes::new();
    let mut get = push(&origin);
    *get.method_mut() = http::Method::GET;
    *get.body_mut() = Bytes::new();
    for r in [push(&origin), with_agent, empty, get] {
        let a = tokio::time::timeout(Duration::from_secs(5), c.send(r))
            .await
            .expect("bounded");
        assert_eq!(a.map(|a| a.status().as_u16()).ok(), Some(200));
    }
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let heads: Vec<_> = seen
        .iter()
        .map(|(p, body)| {
            let headers: Vec<_> = p
                .headers
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                .collect();
            (
                p.method.to_string(),
                p.uri.to_string(),
                headers,
                body.clone(),
            )
        })
        .collect();
    let uri = format!("{origin}3/device/abcd");
    let agent = format!("user-agent: pushgate/{}", env!("CARGO_PKG_VERSION"));
    let payload = Bytes::from_static(b"{\"aps\":{}}");
    assert_eq!(
        heads,
        [
            (
                "POST".to_owned(),
                uri.clone(),
                vec![
                    agent.clone(),
                    "accept: */*".into(),
                    "content-length: 10".into()
                ],
                payload.clone()
            ),
            (
                "POST".to_owned(),
                uri.clone(),
                vec![
                    "user-agent: mine".into(),
                    "apns-priority: 10".into(),
                    "accept: */*".into(),
                    "content-length: 10".into()
                ],
                payload
            ),
            (
                "POST".to_owned(),
                uri.clone(),
                vec![
                    agent.clone(),
                    "accept: */*".into(),
                    "content-length: 0".into()
                ],
                Bytes::new()
            ),
            (
                "GET".to_owned(),
                uri,
                vec![agent, "accept: */*".into()],
                Bytes::new()
            ),
        ]
    );
}

#[tokio::test]
async fn a_push_on_a_connection_going_away_is_sent_on_a_new_one() {
    let (fake, origin) = Fake::start(&[Act::HeadThenGoAway]).await;
    let opened = counter();
    let c = client(&origin, None, &opened);
    let first = answer(&c, &origin).await.expect("an answer");
    assert_eq!(Inbound::status(&first), 400);
    // The old connection is not closed (its stream lives on) but takes no new stream.
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    assert_eq!(fake.seen(), [(0, 1), (1, 1)]);
    assert_eq!(opened.get(), 2);
}

#[tokio::test]
async fn concurrent_pushes_wait_for_one_connect() {
    let (fake, origin) = Fake::start(&[]).await;
    let opened = counter();
    let c = client(&origin, None, &opened);
    let all = futures::future::join_all((0..20).map(|_| status(&c, &origin))).await;
    assert!(all.iter().all(|s| matches!(s, Ok(200))), "{all:?}");
    assert_eq!(fake.connections.load(Ordering::SeqCst), 1);
    assert_eq!(opened.get(), 1);
    assert_eq!(fake.seen().len(), 20);
}

#[tokio::test]
async fn a_refused_connect_is_a_connection_failure_and_not_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin =
        url::Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
    drop(listener);
    let opened = counter();
    let c = client(&origin, None, &opened);
    let e = status(&c, &origin).await.expect_err("refused");
    assert!(
        e.describe().starts_with("connection failed: "),
        "{}",
        e.describe()
    );
    assert!(!e.is_dns_failure());
    assert_eq!(opened.get(), 0);
}

#[tokio::test]
async fn an_unknown_name_is_a_dns_failure() {
    let origin = url::Url::parse("https://apns.pushgate-test.invalid").expect("url");
    let c = client(&origin, None, &counter());
    let e = status(&c, &origin).await.expect_err("no such name");
    assert!(e.is_dns_failure(), "{e:?}");
    assert!(
        e.describe().starts_with("connection failed: "),
        "{}",
        e.describe()
    );
}

/// A proxy that records the head of each `CONNECT` and tunnels to its
/// target; spoken to over TLS with `tls`.
async fn recording_proxy(
    answer: &'static str,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (seen, tls) = (seen.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => tunnel_to_target(sock, answer, seen).await,
                    Some(acceptor) => {
                        if let Ok(sock) = acceptor.accept(sock).await {
                            tunnel_to_target(sock, answer, seen).await;
                        }
                    }
                }
            });
        }
    });
    (addr, heads)
}

async fn tunnel_to_target<S>(mut sock: S, answer: &str, seen: Arc<Mutex<Vec<String>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match sock.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let target = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    if let Ok(mut s) = seen.lock() {
        s.push(text);
    }
    if sock.write_all(answer.as_bytes()).await.is_err() || !answer.contains(" 200 ") {
        return;
    }
    if let Ok(mut up) = TcpStream::connect(target).await {
        let _ = tokio::io::copy_bidirectional(&mut sock, &mut up).await;
    }
}

const ESTABLISHED: &str = "HTTP/1.1 200 Connection established\r\n\r\n";

#[tokio::test]
async fn pushes_are_tunnelled_through_the_proxy_with_its_credentials() {
    let (fake, origin) = Fake::start(&[]).await;
    let (proxy, heads) = recording_proxy(ESTABLISHED, None).await;
    let proxy = format!("http://user:s%20cret@{proxy}");
    let opened = counter();
    let c = client(&origin, Some(&proxy), &opened);
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    let target = origin.authority().to_owned();
    // base64("user:s cret")
    let expected = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic dXNlcjpzIGNyZXQ=\r\n\r\n"
    );
    assert_eq!(
        heads.lock().map(|h| h.clone()).unwrap_or_default(),
        [expected]
    );
    assert_eq!(fake.seen(), [(0, 1), (0, 3)]);
    assert_eq!(opened.get(), 1);
}

#[tokio::test]
async fn a_proxy_that_refuses_the_tunnel_is_a_connection_failure() {
    let (_fake, origin) = Fake::start(&[]).await;
    let (proxy, heads) =
        recording_proxy("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", None).await;
    let proxy = format!("http://{proxy}");
    let opened = counter();
    let c = client(&origin, Some(&proxy), &opened);
    let e = status(&c, &origin).await.expect_err("refused");
    assert_eq!(
        e.describe(),
        "connection failed: the proxy answered CONNECT with HTTP/1.1 407 Proxy Authentication Required"
    );
    assert_eq!(heads.lock().map(|h| h.len()).unwrap_or_default(), 1);
    assert_eq!(opened.get(), 0);
}

#[test]
fn only_http_and_https_proxies_are_accepted() {
    let origin = url::Url::parse("https://api.push.apple.com").expect("url");
    let with = |proxy| {
        Client::new(Options {
            origin: &origin,
            connect_timeout: Duration::from_secs(1),
            proxy: Some(proxy),
            extra_ca: None,
            identity: None,
            connections: None,
        })
        .err()
        .map(|e| e.to_string())
    };
    assert_eq!(with("http://proxy.example:3128"), None);
    assert_eq!(
        with("socks5://proxy.example:1080"),
        Some("invalid proxy URL: socks5://proxy.example:1080: the APNs client tunnels through http:// and https:// proxies only".into())
    );
}

#[tokio::test]
async fn an_https_proxy_is_spoken_to_over_tls_trusting_the_extra_ca() {
    let ca = testkit::tls::TestCa::new();
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("ca");
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&[b"http/1.1"], false));
    let (fake, origin) = Fake::start(&[]).await;
    let (proxy, heads) = recording_proxy(ESTABLISHED, Some(acceptor)).await;
    let proxy = format!("https://localhost:{}", proxy.port());
    let opened = counter();
    let c = Client::new(Options {
        origin: &origin,
        connect_timeout: Duration::from_secs(2),
        proxy: Some(&proxy),
        extra_ca: Some(&ca_file),
        identity: None,
        connections: Some(opened.clone()),
    })
    .expect("client");
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    let target = origin.authority().to_owned();
    assert_eq!(
        heads.lock().map(|h| h.clone()).unwrap_or_default(),
        [format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
        )]
    );
    assert_eq!(fake.seen(), [(0, 1)]);
    assert_eq!(opened.get(), 1);

    // A proxy whose certificate is not trusted is never asked.
    let stranger = testkit::tls::TestCa::new().server_config(&[b"http/1.1"], false);
    let (untrusted, heads) =
        recording_proxy(ESTABLISHED, Some(tokio_rustls::TlsAcceptor::from(stranger))).await;
    let proxy = format!("https://localhost:{}", untrusted.port());
    let c = client(&origin, Some(&proxy), &opened);
    let e = status(&c, &origin).await.expect_err("untrusted");
    assert!(
        e.describe().starts_with("connection failed: "),
        "{}",
        e.describe()
    );
    assert!(heads.lock().map(|h| h.is_empty()).unwrap_or_default());
    assert_eq!(opened.get(), 1);
}
