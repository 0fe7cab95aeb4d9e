//! A TCP proxy on 127.0.0.1 that misbehaves on command, for fault tests:
//! forward faithfully, reset connections (RST) once the client has sent its
//! first bytes, answer garbage, or refuse. Switching away from `Pass` also
//! cuts the connections being forwarded, so a pooled connection cannot hide
//! the fault. Works for any protocol on top (HTTP, TLS, PostgreSQL).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways to the target.
    Pass,
    /// Read what the client sends first, then reset the connection.
    Reset,
    /// Read what the client sends first, answer bytes that are no protocol, close.
    Garbage,
    /// Accept and close at once, without reading.
    Close,
}

pub struct FaultyProxy {
    addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    mode: watch::Sender<Fault>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const GARBAGE: &[u8] = b"\x16\x03\x00\x00\x02\xff\xffHTTP/9.9 ???\r\n\x00\x01\x02garbage\r\n\r\n";

impl FaultyProxy {
    /// A proxy in `mode`; it forwards (in `Pass`) once [`FaultyProxy::forward_to`] named a target.
    pub async fn start(mode: Fault) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind faulty proxy");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = watch::channel(mode);
        let accepted = Arc::new(AtomicUsize::new(0));
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (count, to) = (accepted.clone(), target.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let target = to.lock().ok().and_then(|t| *t);
                tokio::spawn(handle(client, target, rx.clone()));
            }
        });
        FaultyProxy {
            addr,
            target,
            mode: tx,
            accepted,
            task,
        }
    }

    pub fn forward_to(&self, target: SocketAddr) {
        if let Ok(mut t) = self.target.lock() {
            *t = Some(target);
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// From now on; connections being forwarded are cut unless the new mode is `Pass`.
    pub fn set(&self, f: Fault) {
        let _ = self.mode.send(f);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn first_bytes(client: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await;
}

async fn handle(
    mut client: TcpStream,
    target: Option<SocketAddr>,
    mut mode: watch::Receiver<Fault>,
) {
    let now = *mode.borrow_and_update();
    match now {
        Fault::Close => {}
        Fault::Reset => {
            first_bytes(&mut client).await;
            // Linger 0: close() sends RST instead of FIN.
            let _ = client.set_zero_linger();
        }
        Fault::Garbage => {
            first_bytes(&mut client).await;
            let _ = client.write_all(GARBAGE).await;
            let _ = client.shutdown().await;
        }
        Fault::Pass => {
            let Some(target) = target else { return };
            let Ok(mut upstream) = TcpStream::connect(target).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                _ = mode.wait_for(|m| *m != Fault::Pass) => {
                    let _ = client.set_zero_linger();
                }
            }
        }
    }
}
