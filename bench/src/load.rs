//! The load: `concurrency` HTTP/1.1 keep-alive connections, each sending
//! `/notify` requests back to back (closed loop) for a fixed time. Every
//! answer is checked (200 and `{"rejected":[]}`); latencies are kept whole,
//! in microseconds, so percentiles are exact.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Makes the body of the `n`-th request of a run (a fresh event id each time).
pub type BodyFn = Arc<dyn Fn(u64) -> Bytes + Send + Sync>;

const OK_BODY: &[u8] = br#"{"rejected":[]}"#;

#[derive(Default)]
pub struct LoadResult {
    /// Requests answered 200 `{"rejected":[]}`, warm-up included.
    pub ok_total: u64,
    /// Of those, the ones sent within the measured window.
    pub measured: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Latency of each measured request, µs.
    pub latencies_us: Vec<u32>,
}

struct Worker {
    ok_total: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
}

/// Runs the load: `warmup` unmeasured, then `measure`. `on_measure` is called
/// when the measured window opens (to read counters there).
pub async fn run(
    port: u16,
    body: BodyFn,
    seq: Arc<AtomicU64>,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
) -> LoadResult {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(port, body.clone(), seq.clone(), measure_from, end)))
        .collect();
    let mut result = LoadResult::default();
    for w in workers {
        let Ok(w) = w.await else {
            result.errors += 1;
            continue;
        };
        result.ok_total += w.ok_total;
        result.errors += w.errors;
        result.measured += w.latencies_us.len() as u64;
        result.latencies_us.extend(w.latencies_us);
        if result.first_error.is_none() {
            result.first_error = w.first_error;
        }
    }
    result
}

async fn connect(port: u16) -> Result<http1::SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn worker(
    port: u16,
    body: BodyFn,
    seq: Arc<AtomicU64>,
    measure_from: Instant,
    end: Instant,
) -> Worker {
    let mut w = Worker {
        ok_total: 0,
        errors: 0,
        first_error: None,
        latencies_us: Vec::new(),
    };
    let fail = |w: &mut Worker, e: String| {
        w.errors += 1;
        w.first_error.get_or_insert(e);
    };
    let mut sender = None;
    while Instant::now() < end {
        let mut s = match sender.take() {
            Some(s) => s,
            None => match connect(port).await {
                Ok(s) => s,
                Err(e) => {
                    fail(&mut w, e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let req = hyper::Request::post("/_matrix/push/v1/notify")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(body(n)));
        let Ok(req) = req else {
            fail(&mut w, "request could not be built".into());
            continue;
        };
        let sent = Instant::now();
        let answer = async {
            s.ready().await.map_err(|e| format!("connection: {e}"))?;
            let resp = s
                .send_request(req)
                .await
                .map_err(|e| format!("send: {e}"))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        }
        .await;
        let took = sent.elapsed();
        match answer {
            Ok((200, b)) if b.as_ref() == OK_BODY => {
                w.ok_total += 1;
                if sent >= measure_from {
                    w.latencies_us
                        .push(took.as_micros().min(u32::MAX as u128) as u32);
                }
                sender = Some(s);
            }
            Ok((status, b)) => {
                fail(
                    &mut w,
                    format!("answer {status}: {}", String::from_utf8_lossy(&b)),
                );
                sender = Some(s);
            }
            Err(e) => fail(&mut w, e),
        }
    }
    w
}

/// One GET on a fresh connection: (status, body).
pub async fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut s = connect(port).await?;
    let req = hyper::Request::get(path)
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(5), s.send_request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
