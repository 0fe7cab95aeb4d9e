//! A forward HTTP proxy on 127.0.0.1: `CONNECT host:port` tunnels (what
//! clients use for https) and absolute-form requests (`POST http://host/…`,
//! what clients use for plain http), recording every target it was asked for.
//! [`FakeProxy::start_redirecting_to`] sends every request to one fixed
//! loopback address instead, so a test can name a public address and still
//! reach only a fake on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request the proxy saw: `CONNECT` or the method of an absolute-form request, and `host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxiedRequest {
    pub method: String,
    pub target: String,
}

/// Where the proxy connects for a request.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Nowhere: answers 502.
    Blackhole,
    /// To the requested target.
    Forward,
    /// To this address, whatever the target.
    FixedTarget(SocketAddr),
}

pub struct FakeProxy {
    port: u16,
    mode: Mode,
    seen: Arc<Mutex<Vec<ProxiedRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeProxy {
    /// A proxy that forwards to the requested targets.
    pub async fn start() -> FakeProxy {
        Self::spawn(Mode::Forward).await
    }

    /// A proxy that records requests but never connects anywhere (answers 502): tests that
    /// name private addresses use it so that a regression can reach nothing but loopback.
    pub async fn start_blackhole() -> FakeProxy {
        Self::spawn(Mode::Blackhole).await
    }

    /// A proxy that records the requested target but connects every `CONNECT` and
    /// absolute-form request to `to` (a fake on 127.0.0.1): tests that need an
    /// endpoint that looks public (an IP literal) reach the fake through it, and
    /// nothing ever leaves loopback.
    pub async fn start_redirecting_to(to: SocketAddr) -> FakeProxy {
        assert!(
            to.ip().is_loopback(),
            "the fixed target must be on loopback"
        );
        Self::spawn(Mode::FixedTarget(to)).await
    }

    async fn spawn(mode: Mode) -> FakeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, log.clone(), mode));
            }
        });
        FakeProxy {
            port,
            mode,
            seen,
            task,
        }
    }

    pub fn forwards(&self) -> bool {
        !matches!(self.mode, Mode::Blackhole)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

async fn serve(mut client: TcpStream, seen: Arc<Mutex<Vec<ProxiedRequest>>>, mode: Mode) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    // Read up to the end of the request head; a proxy request head is small.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut parts = text.lines().next().unwrap_or_default().split_whitespace();
    let (method, uri) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let target = if method == "CONNECT" {
        uri.clone()
    } else {
        // absolute-form: http://host:port/path
        let rest = uri.strip_prefix("http://").unwrap_or(&uri);
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        }
    };
    if let Ok(mut s) = seen.lock() {
        s.push(ProxiedRequest {
            method: method.clone(),
            target: target.clone(),
        });
    }
    let upstream = match mode {
        Mode::Blackhole => None,
        Mode::Forward => TcpStream::connect(&target).await.ok(),
        Mode::FixedTarget(to) => TcpStream::connect(to).await.ok(),
    };
    let Some(mut upstream) = upstream else {
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    if method == "CONNECT" {
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    } else if upstream.write_all(&head).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
