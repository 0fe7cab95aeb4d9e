//! The FCM client against real servers on 127.0.0.1: a raw HTTP/1.1 server
//! that records each request's bytes (and so compares them with what
//! reqwest sent), hyper's server over TLS choosing HTTP/2 or HTTP/1.1 by
//! ALPN, testkit's `CONNECT` proxy, and names that do not resolve.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::net::transport::bounded_body;

/// What a test server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: Mutex<Vec<String>>,
}

impl Seen {
    fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn record(&self, request: String) {
        if let Ok(mut r) = self.requests.lock() {
            r.push(request);
        }
    }
}

/// An HTTP/1.1 server that keeps connections open, records each request as
/// the bytes it got (head and body) and answers 200 with a small body.
async fn raw_server() -> (url::Url, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let serving = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            serving.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_raw(sock, serving.clone()));
        }
    });
    (origin(&format!("http://{addr}")), seen)
}

async fn serve_raw(mut sock: TcpStream, seen: Arc<Seen>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while got.len() < end + length {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        seen.record(String::from_utf8_lossy(&got[..end + length]).into_owned());
        got.drain(..end + length);
        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{\"name\":\"n\"}";
        if sock.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// hyper's server (HTTP/1.1 and HTTP/2) over TLS with `alpn`, for
/// `localhost`, recording each request's version; and the CA file that
/// trusts it.
async fn tls_server(alpn: &[&[u8]]) -> (url::Url, Arc<Seen>, tempfile::TempDir) {
    let ca = testkit::tls::TestCa::new();
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("ca");
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(alpn, false));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Seen::default());
    let serving = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            serving.connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, seen) = (acceptor.clone(), serving.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(sock).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |r: http::Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let version = format!("{:?}", r.version());
                        let _ = r.into_body().collect().await;
                        seen.record(version);
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"{}",
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (origin(&format!("https://localhost:{port}")), seen, dir)
}

fn origin(s: &str) -> url::Url {
    url::Url::parse(s).expect("origin")
}

fn counter() -> IntCounter {
    IntCounter::new("connections", "connections opened").expect("counter")
}

fn client(
    origin: &url::Url,
    proxy: Option<&str>,
    ca: Option<&Path>,
    opened: &IntCounter,
) -> Client {
    Client::new(Options {
        origin,
        connect_timeout: Duration::from_secs(2),
        proxy,
        extra_ca: ca,
        max_idle_per_host: 4,
        connections: Some(opened.clone()),
    })
    .expect("client")
}

const BODY: &[u8] = b"{\"message\":{\"token\":\"t\"}}";

fn send_url(origin: &url::Url) -> String {
    format!("{origin}v1/projects/p/messages:send")
}

/// An FCM push as the pushkin builds it.
fn push(origin: &url::Url) -> http::Request<Bytes> {
    let mut r = http::Request::new(Bytes::from_static(BODY));
    *r.method_mut() = http::Method::POST;
    *r.uri_mut() = send_url(origin).parse().expect("uri");
    *r.headers_mut() = headers(2);
    r.headers_mut()
        .insert(AUTHORIZATION, HeaderValue::from_static("Bearer tok"));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The status of one push's answer, its body read (so that its connection
/// goes back to the pool), within 5 s.
async fn status(c: &Client, origin: &url::Url) -> Result<u16, Error> {
    let answer = tokio::time::timeout(Duration::from_secs(5), c.send(push(origin)))
        .await
        .expect("bounded")?;
    let status = Inbound::status(&answer);
    bounded_body(answer, 1024).await;
    Ok(status)
}

/// Lets an HTTP/1.1 connection whose answer was read go back to the pool:
/// hyper returns it from a task of its own, and a request sent before that
/// opens another connection (as with reqwest, whose pool this is too).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_push_is_the_bytes_reqwest_sent() {
    let (origin, seen) = raw_server().await;
    let before =
        crate::net::build_client(&crate::net::ClientOptions::for_tests()).expect("reqwest");
    let mut r = reqwest::Request::new(
        http::Method::POST,
        url::Url::parse(&send_url(&origin)).expect("url"),
    );
    r.headers_mut()
        .insert(AUTHORIZATION, HeaderValue::from_static("Bearer tok"));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    *r.body_mut() = Some(Bytes::from_static(BODY).into());
    let answer = before.execute(r).await.expect("reqwest's answer");
    assert_eq!(answer.status(), 200);

    let c = client(&origin, None, None, &counter());
    assert_eq!(status(&c, &origin).await.ok(), Some(200));

    let requests = seen.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1], requests[0], "the same bytes as reqwest's");
    let port = origin.port().expect("port");
    assert_eq!(
        requests[1],
        format!(
            "POST /v1/projects/p/messages:send HTTP/1.1\r\nauthorization: Bearer tok\r\n\
             content-type: application/json\r\naccept: */*\r\nuser-agent: pushgate/{}\r\n\
             host: 127.0.0.1:{port}\r\ncontent-length: {}\r\n\r\n{}",
            env!("CARGO_PKG_VERSION"),
            BODY.len(),
            String::from_utf8_lossy(BODY)
        )
    );
}

#[tokio::test]
async fn pushes_in_sequence_share_one_connection() {
    let (origin, seen) = raw_server().await;
    let opened = counter();
    let c = client(&origin, None, None, &opened);
    for _ in 0..3 {
        assert_eq!(status(&c, &origin).await.ok(), Some(200));
        settle().await;
    }
    assert_eq!(seen.requests().len(), 3);
    assert_eq!(seen.connections(), 1);
    assert_eq!(opened.get(), 1);
}

#[tokio::test]
async fn http2_is_spoken_when_the_server_chooses_it() {
    let (origin, seen, dir) = tls_server(&[b"h2", b"http/1.1"]).await;
    let opened = counter();
    let c = client(&origin, None, Some(&dir.path().join("ca.pem")), &opened);
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    assert_eq!(seen.requests(), ["HTTP/2.0", "HTTP/2.0"]);
    assert_eq!(seen.connections(), 1);
    assert_eq!(opened.get(), 1);
}

#[tokio::test]
async fn http1_is_spoken_over_tls_when_the_server_offers_only_that() {
    let (origin, seen, dir) = tls_server(&[b"http/1.1"]).await;
    let c = client(&origin, None, Some(&dir.path().join("ca.pem")), &counter());
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    assert_eq!(seen.requests(), ["HTTP/1.1"]);
}

#[tokio::test]
async fn an_untrusted_server_is_a_connection_failure() {
    let (origin, seen, _dir) = tls_server(&[b"h2"]).await;
    let opened = counter();
    let c = client(&origin, None, None, &opened);
    let e = status(&c, &origin).await.expect_err("untrusted");
    assert!(
        e.describe().starts_with("connection failed: "),
        "{}",
        e.describe()
    );
    assert!(!e.is_dns_failure());
    assert!(seen.requests().is_empty());
    assert_eq!(opened.get(), 0);
}

#[tokio::test]
async fn an_unknown_name_is_a_dns_failure() {
    let origin = origin("https://fcm.pushgate-test.invalid");
    let c = client(&origin, None, None, &counter());
    let e = status(&c, &origin).await.expect_err("no such name");
    assert!(e.is_dns_failure(), "{e:?}");
    assert!(
        e.describe().starts_with("connection failed: "),
        "{}",
        e.describe()
    );
    assert!(
        !e.describe().contains("pushgate-test"),
        "no URL: {}",
        e.describe()
    );
}

#[tokio::test]
async fn a_refused_connect_is_a_connection_failure_and_not_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let origin = origin(&format!("http://{addr}"));
    let opened = counter();
    let c = client(&origin, None, None, &opened);
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
async fn pushes_are_tunnelled_through_the_proxy() {
    let (origin, seen) = raw_server().await;
    let proxy = testkit::proxy::FakeProxy::start().await;
    let opened = counter();
    let c = client(&origin, Some(&proxy.url()), None, &opened);
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    settle().await;
    assert_eq!(status(&c, &origin).await.ok(), Some(200));
    assert_eq!(
        proxy.requests(),
        [testkit::proxy::ProxiedRequest {
            method: "CONNECT".into(),
            target: format!("127.0.0.1:{}", origin.port().expect("port")),
        }]
    );
    // Through the tunnel, the request is the one sent without a proxy.
    let requests = seen.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[0].starts_with("POST /v1/projects/p/messages:send HTTP/1.1\r\n"),
        "{}",
        requests[0]
    );
    assert_eq!(opened.get(), 1);
}

/// A proxy that accepts connections and never answers.
async fn silent_proxy() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_connect_past_the_connect_timeout_is_timed_out() {
    let (origin, _seen) = raw_server().await;
    let (proxy, task) = silent_proxy().await;
    let opened = counter();
    let c = Client::new(Options {
        origin: &origin,
        connect_timeout: Duration::from_millis(200),
        proxy: Some(&format!("http://{proxy}")),
        extra_ca: None,
        max_idle_per_host: 1,
        connections: Some(opened.clone()),
    })
    .expect("client");
    let e = status(&c, &origin).await.expect_err("no tunnel");
    assert!(e.describe().starts_with("timed out: "), "{}", e.describe());
    assert!(!e.is_dns_failure());
    assert_eq!(opened.get(), 0);
    task.abort();
}

#[tokio::test]
async fn a_request_for_another_origin_is_refused() {
    let (origin, seen) = raw_server().await;
    let (elsewhere, other) = raw_server().await;
    let c = client(&origin, None, None, &counter());
    let e = status(&c, &elsewhere).await.expect_err("not this client's");
    assert_eq!(e.describe(), "connection failed: not this client's origin");
    assert!(seen.requests().is_empty() && other.requests().is_empty());
}

#[tokio::test]
async fn the_tcp_keepalive_reqwest_set_is_set_on_a_socket() {
    use rustix::net::sockopt;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let s = TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    TcpKeepAlive::REQWEST.apply(&s);
    assert!(sockopt::socket_keepalive(&s).expect("keepalive"));
    assert_eq!(
        sockopt::tcp_keepidle(&s).expect("idle"),
        Duration::from_secs(15)
    );
    assert_eq!(
        sockopt::tcp_keepintvl(&s).expect("interval"),
        Duration::from_secs(15)
    );
    assert_eq!(sockopt::tcp_keepcnt(&s).expect("count"), 3);
    assert_eq!(sockopt::tcp_user_timeout(&s).expect("user timeout"), 30_000);
}
