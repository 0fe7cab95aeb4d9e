//! The operator's commands: `pushgate store stats`, `outbox list|retry|drop`,
//! `rejections list|forget`, `claims purge` on the configured store, and
//! `pushgate healthcheck` (the container's `HEALTHCHECK`, no shell or curl).
//!
//! Every store command is one short statement (or short batches) through the
//! same [`Store`] the gateway uses, so it is safe while gateways run: SQLite
//! waits up to 5 s for the writer lock (WAL lets reads run beside it), and
//! PostgreSQL rows are changed one statement at a time. Output is a table for
//! people, or JSON (`--json`) for scripts; pushkeys are always redacted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use clap::Subcommand;
use serde_json::{json, Value};

use crate::config::{self, ConfigError, StoreConfig};
use crate::ids::PushKey;
use crate::pushkin::endpoint::memory_key;
use crate::store::{self, DeviceKey, Millis, Selection, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(
        "the config has `store: none`: there is no outbox, rejection memory or claims to look at"
    )]
    NoStore,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// `pushgate store …`
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Rows in the store per app id: outbox entries (and the oldest), remembered rejections, claims.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `pushgate outbox …`
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Pushes waiting to be delivered, oldest first: redacted pushkey, attempts, next try, last error.
    List {
        /// Only this app id.
        #[arg(long)]
        app: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make entries due now (a gateway's outbox worker sends them within a second or so).
    Retry {
        /// Entry ids (from `outbox list`).
        #[arg(required_unless_present = "app", conflicts_with = "app")]
        ids: Vec<i64>,
        /// Every entry of this app id.
        #[arg(long)]
        app: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete entries: they are never sent.
    Drop {
        /// Entry ids (from `outbox list`).
        #[arg(required_unless_present = "app", conflicts_with = "app")]
        ids: Vec<i64>,
        /// Every entry of this app id.
        #[arg(long)]
        app: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `pushgate rejections …`
#[derive(Debug, Subcommand)]
pub enum RejectionsCommand {
    /// Pushkeys a push service declared dead (answered `rejected` without asking again), newest first.
    List {
        /// Only this app id.
        #[arg(long)]
        app: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Forget one remembered rejection: the next push to that device is sent again.
    Forget {
        /// The app id.
        #[arg(long)]
        app: String,
        /// The pushkey as the pusher gives it (APNs/FCM token).
        #[arg(
            long,
            required_unless_present = "endpoint",
            conflicts_with = "endpoint"
        )]
        pushkey: Option<PushKey>,
        /// A Web Push or UnifiedPush endpoint URL: these are remembered by a
        /// hash of the endpoint (`endpoint:<sha256 base64url>`), computed here.
        #[arg(long)]
        endpoint: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `pushgate claims …`
#[derive(Debug, Subcommand)]
pub enum ClaimsCommand {
    /// Delete de-duplication claims older than this (a homeserver retry of
    /// their events is then sent again).
    Purge {
        /// Age, such as `10m`, `2h`, `1day`.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// One of the store commands.
#[derive(Debug)]
pub enum Command {
    Store(StoreCommand),
    Outbox(OutboxCommand),
    Rejections(RejectionsCommand),
    Claims(ClaimsCommand),
}

/// Runs a store command on the store of the config at `path` (found as the
/// gateway finds it); returns what to print on standard output.
pub fn run(path: Option<&Path>, command: Command) -> Result<String, AdminError> {
    let loaded = config::load(path)?;
    if matches!(loaded.config.store, StoreConfig::None) {
        return Err(AdminError::NoStore);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AdminError::Runtime)?;
    runtime.block_on(async move {
        let store = store::open(&loaded.config.store)
            .await?
            .ok_or(AdminError::NoStore)?;
        Ok(execute(store, command).await?)
    })
}

async fn execute(store: Arc<dyn Store>, command: Command) -> Result<String, StoreError> {
    let now = store::now_ms();
    Ok(match command {
        Command::Store(StoreCommand::Stats { json }) => {
            let apps = store.app_stats().await?;
            if json {
                let rows: Vec<Value> = apps
                    .iter()
                    .map(|a| {
                        json!({"app_id": a.app_id, "outbox": a.outbox, "oldest_ms": a.oldest,
                               "rejections": a.rejections, "claims": a.claims})
                    })
                    .collect();
                let total = |f: fn(&store::AppStats) -> i64| apps.iter().map(f).sum::<i64>();
                to_json(&json!({
                    "backend": store.backend(),
                    "outbox": total(|a| a.outbox),
                    "oldest_ms": apps.iter().filter_map(|a| a.oldest).min(),
                    "rejections": total(|a| a.rejections),
                    "claims": total(|a| a.claims),
                    "apps": rows,
                }))
            } else {
                let mut rows: Vec<Vec<String>> = apps
                    .iter()
                    .map(|a| {
                        vec![
                            a.app_id.clone(),
                            a.outbox.to_string(),
                            time(a.oldest),
                            a.rejections.to_string(),
                            a.claims.to_string(),
                        ]
                    })
                    .collect();
                rows.push(vec![
                    "(all)".into(),
                    apps.iter().map(|a| a.outbox).sum::<i64>().to_string(),
                    time(apps.iter().filter_map(|a| a.oldest).min()),
                    apps.iter().map(|a| a.rejections).sum::<i64>().to_string(),
                    apps.iter().map(|a| a.claims).sum::<i64>().to_string(),
                ]);
                table(&["APP", "OUTBOX", "OLDEST", "REJECTIONS", "CLAIMS"], &rows)
            }
        }
        Command::Outbox(OutboxCommand::List { app, limit, json }) => {
            let entries = store.outbox_list(app.as_deref(), i64::from(limit)).await?;
            if json {
                to_json(&Value::Array(
                    entries
                        .iter()
                        .map(|e| {
                            json!({"id": e.id, "app_id": e.app_id, "pushkey": redacted(&e.pushkey),
                                   "created_ms": e.created_at, "next_try_ms": e.due_at,
                                   "attempts": e.attempts, "last_error": e.last_error})
                        })
                        .collect(),
                ))
            } else {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.id.to_string(),
                            e.app_id.clone(),
                            redacted(&e.pushkey),
                            time(Some(e.created_at)),
                            e.attempts.to_string(),
                            time(Some(e.due_at)),
                            e.last_error.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID",
                        "APP",
                        "PUSHKEY",
                        "CREATED",
                        "ATTEMPTS",
                        "NEXT TRY",
                        "LAST ERROR",
                    ],
                    &rows,
                )
            }
        }
        Command::Outbox(OutboxCommand::Retry { ids, app, json }) => {
            let n = store.outbox_retry(&selection(ids, app), now).await?;
            counted(json, "retried", n, "outbox entries made due now")
        }
        Command::Outbox(OutboxCommand::Drop { ids, app, json }) => {
            let n = store.outbox_drop(&selection(ids, app)).await?;
            counted(json, "dropped", n, "outbox entries dropped")
        }
        Command::Rejections(RejectionsCommand::List { app, limit, json }) => {
            let rows = store
                .rejections_list(app.as_deref(), i64::from(limit))
                .await?;
            if json {
                to_json(&Value::Array(
                    rows.iter()
                        .map(|r| {
                            json!({"app_id": r.app_id, "pushkey": redacted(&r.pushkey),
                                   "rejected_ms": r.rejected_at, "reason": r.reason})
                        })
                        .collect(),
                ))
            } else {
                let rows: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        vec![
                            r.app_id.clone(),
                            redacted(&r.pushkey),
                            time(Some(r.rejected_at)),
                            r.reason.clone(),
                        ]
                    })
                    .collect();
                table(&["APP", "PUSHKEY", "REJECTED", "REASON"], &rows)
            }
        }
        Command::Rejections(RejectionsCommand::Forget {
            app,
            pushkey,
            endpoint,
            json,
        }) => {
            let pushkey = match (pushkey, endpoint) {
                (_, Some(url)) => memory_key(&url),
                (Some(k), None) => k.expose().to_owned(),
                (None, None) => String::new(),
            };
            let n = store
                .forget_rejection(&DeviceKey {
                    app_id: app,
                    pushkey,
                })
                .await?;
            counted(json, "forgotten", n, "rejections forgotten")
        }
        Command::Claims(ClaimsCommand::Purge { older_than, json }) => {
            let age = Millis::try_from(older_than.as_millis()).unwrap_or(Millis::MAX);
            let n = store.purge_claims(now.saturating_sub(age)).await?;
            counted(json, "purged", n, "claims purged")
        }
    })
}

/// A stored pushkey as the operator sees it: redacted, as in the logs.
fn redacted(stored: &str) -> String {
    PushKey::from(stored).to_string()
}

fn selection(ids: Vec<i64>, app: Option<String>) -> Selection {
    match app {
        Some(app) => Selection::App(app),
        None => Selection::Ids(ids),
    }
}

fn counted(json: bool, key: &str, n: u64, text: &str) -> String {
    if json {
        to_json(&json!({ key: n }))
    } else {
        format!("{n} {text}\n")
    }
}

fn to_json(v: &Value) -> String {
    format!("{v}\n")
}

/// A time as RFC 3339 in UTC to the second, `-` for none. Rows written by
/// earlier versions may hold any number (an upstream's timestamp): outside
/// the years RFC 3339 can write, the milliseconds are shown as they are.
pub fn time(ms: Option<Millis>) -> String {
    /// 9999-12-31T23:59:59Z, the last time RFC 3339 can write.
    const LAST: u64 = 253_402_300_799_999;
    match ms.map(|ms| (ms, u64::try_from(ms))) {
        Some((_, Ok(t))) if t <= LAST => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(t)).to_string()
        }
        Some((ms, _)) => format!("{ms} ms"),
        None => "-".into(),
    }
}

/// Columns left-aligned, two spaces apart, trailing spaces trimmed.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let headers: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&headers).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The `/ready` URL of the gateway the config describes (its first bind
/// address and its port), else `http://127.0.0.1:5000/ready`.
pub fn default_ready_url(path: Option<&Path>) -> String {
    match config::load(path) {
        Ok(loaded) => {
            let http = &loaded.config.http;
            let ip = match http.bind_addresses.first() {
                // A gateway listening on every address answers on loopback.
                Some(ip) if ip.is_unspecified() => {
                    if ip.is_ipv4() {
                        "127.0.0.1".to_owned()
                    } else {
                        "[::1]".to_owned()
                    }
                }
                Some(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
                Some(ip) => ip.to_string(),
                None => "127.0.0.1".to_owned(),
            };
            format!("http://{ip}:{}/ready", http.port)
        }
        Err(_) => "http://127.0.0.1:5000/ready".to_owned(),
    }
}

/// GETs `url` (plain `http://` only) and tells whether it answered 200 within
/// `timeout` (connecting, writing and reading together). Written on std's
/// blocking socket so that the container's check needs no runtime or TLS.
pub fn healthcheck(url: &str, timeout: Duration) -> Result<u16, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!("{url}: only http:// URLs are checked"));
    }
    let host = parsed.host_str().ok_or_else(|| format!("{url}: no host"))?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let deadline = std::time::Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = format!("{host}: no address");
    for addr in addrs {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return get(stream, &parsed, deadline),
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last)
}

fn get(mut stream: TcpStream, url: &url::Url, deadline: std::time::Instant) -> Result<u16, String> {
    let left = || {
        Some(deadline.saturating_duration_since(std::time::Instant::now()))
            .filter(|d| !d.is_zero())
            .or(Some(Duration::from_millis(1)))
    };
    let io = |e: std::io::Error| format!("{url}: {e}");
    stream.set_write_timeout(left()).map_err(io)?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let host = url.host_str().unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: pushgate-healthcheck\r\n\r\n"
    )
    .map_err(io)?;
    // Only the status line is needed.
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        stream.set_read_timeout(left()).map_err(io)?;
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split(' ')
        .nth(1)
        .and_then(|code| code.trim().parse().ok())
        .filter(|_| line.starts_with("HTTP/"))
        .ok_or_else(|| format!("{url}: not an HTTP answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_the_store_never_panic() {
        assert_eq!(time(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(time(None), "-");
        assert_eq!(time(Some(-5)), "-5 ms");
        assert_eq!(time(Some(i64::MAX)), format!("{} ms", i64::MAX));
    }

    #[test]
    fn tables_align_columns_and_trim_the_last() {
        let t = table(
            &["ID", "APP", "ERROR"],
            &[
                vec!["1".into(), "com.example".into(), "-".into()],
                vec!["12".into(), "x".into(), "timed out".into()],
            ],
        );
        assert_eq!(
            t,
            "ID  APP          ERROR\n1   com.example  -\n12  x            timed out\n"
        );
    }

    #[test]
    fn times_are_utc_seconds() {
        assert_eq!(time(Some(1_700_000_000_123)), "2023-11-14T22:13:20Z");
        assert_eq!(time(None), "-");
    }
}
