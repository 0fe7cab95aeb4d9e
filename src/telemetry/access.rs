//! The access log: one line per HTTP request at INFO on the target
//! `pushgate::access` (Sygnal's `sygnal.access` logger), with the client
//! address, method, path, status, duration and request id. A `/notify`
//! request's line also carries its summary ([`NotifySummary`]: event id,
//! app ids, device counts), so a push writes one INFO line, not two; with
//! the access log off, the summary is a line of its own (`notify`).
//! Per-device lines are DEBUG (failures WARN).

use std::fmt;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use crate::config::LogConfig;
use crate::ids::EventId;

/// The `tracing` target of access lines; `log.setup`'s `sygnal.access` level applies to it.
pub const TARGET: &str = "pushgate::access";

/// How access lines are made; set once at start-up from `log.access`.
#[derive(Debug, Clone, Copy)]
pub struct AccessSettings {
    pub enabled: bool,
    /// Take the client address from the last `X-Forwarded-For` hop.
    pub x_forwarded_for: bool,
}

static SETTINGS: OnceLock<AccessSettings> = OnceLock::new();

/// Sets the access log settings for this process (the first call wins).
pub fn configure(cfg: &LogConfig) {
    let _ = SETTINGS.set(AccessSettings {
        enabled: cfg.access_enabled,
        x_forwarded_for: cfg.x_forwarded_for,
    });
}

/// The settings in force: access lines on, no `X-Forwarded-For`, until configured.
pub fn settings() -> AccessSettings {
    SETTINGS.get().copied().unwrap_or(AccessSettings {
        enabled: true,
        x_forwarded_for: false,
    })
}

/// Whether access lines are written: `log.access.enabled` and the
/// `pushgate::access` target at INFO.
pub fn enabled() -> bool {
    settings().enabled && tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// What a `/notify` request did, for its one INFO line.
#[derive(Debug, Clone, Default)]
pub struct NotifySummary {
    pub event_id: Option<EventId>,
    /// The app ids of its devices, sorted, without repeats, comma-separated.
    pub app_ids: Option<String>,
    pub devices: Option<usize>,
    pub counts: Option<Counts>,
    /// Why it was refused (a Matrix error answer), if it was.
    pub error: Option<String>,
}

/// The device outcomes of a dispatched notification.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub delivered: usize,
    pub rejected: usize,
    pub failed: usize,
    pub duplicates: usize,
    pub queued: usize,
    pub unqueued: usize,
}

impl NotifySummary {
    /// The summary as a line of its own (`notify`, on pushgate's target), for
    /// when no access line carries it.
    pub fn log(&self, request_id: &str, status: u16, elapsed: Duration) {
        let c = self.counts.as_ref();
        tracing::info!(
            request_id,
            event_id = self.event_id.as_ref().map(EventId::as_str),
            app_ids = self.app_ids.as_deref(),
            devices = self.devices,
            delivered = c.map(|c| c.delivered),
            rejected = c.map(|c| c.rejected),
            failed = c.map(|c| c.failed),
            duplicates = c.map(|c| c.duplicates),
            queued = c.map(|c| c.queued),
            unqueued = c.map(|c| c.unqueued),
            status,
            error = self.error.as_deref(),
            elapsed_ms = elapsed.as_millis() as u64,
            "notify"
        );
    }
}

/// One request as the access line tells it.
pub struct Request<'a> {
    pub client: Option<IpAddr>,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub status: u16,
    pub elapsed: Duration,
    pub request_id: &'a str,
}

/// A duration in milliseconds, rounded to the microsecond, as lines carry it.
pub(super) fn duration_ms(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// Writes the access line of `r`, with the `/notify` summary when there is
/// one, through `tracing` ([`super::log_access`] writes it straight to a text
/// log instead).
pub fn log(r: &Request<'_>, notify: Option<&NotifySummary>) {
    let c = notify.and_then(|n| n.counts.as_ref());
    tracing::info!(
        target: TARGET,
        client = %Dash(r.client),
        method = %r.method,
        path = r.path,
        status = r.status,
        duration_ms = duration_ms(r.elapsed),
        request_id = r.request_id,
        event_id = notify.and_then(|n| n.event_id.as_ref()).map(EventId::as_str),
        app_ids = notify.and_then(|n| n.app_ids.as_deref()),
        devices = notify.and_then(|n| n.devices),
        delivered = c.map(|c| c.delivered),
        rejected = c.map(|c| c.rejected),
        failed = c.map(|c| c.failed),
        duplicates = c.map(|c| c.duplicates),
        queued = c.map(|c| c.queued),
        unqueued = c.map(|c| c.unqueued),
        error = notify.and_then(|n| n.error.as_deref()),
        "request"
    );
}

/// A value, or `-` when there is none (the access log's convention).
struct Dash<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for Dash<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// The client address for the access line: with `x_forwarded_for`, the last
/// address of the last `X-Forwarded-For` header — the one the operator's own
/// proxy added; the ones before it come from the client and may be forged.
/// Falls back to the peer address when the header is absent or unreadable.
pub fn client_address<'h>(
    peer: Option<IpAddr>,
    forwarded: impl Iterator<Item = &'h [u8]>,
    use_forwarded: bool,
) -> Option<IpAddr> {
    if !use_forwarded {
        return peer;
    }
    let last = forwarded
        .last()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim)
        .and_then(parse_hop);
    last.or(peer)
}

/// A hop as proxies write it: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]:443`, `1.2.3.4:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(headers: &[&str], on: bool) -> Option<String> {
        let peer = Some(IpAddr::from([127, 0, 0, 1]));
        client_address(peer, headers.iter().map(|h| h.as_bytes()), on).map(|ip| ip.to_string())
    }

    #[test]
    fn the_last_hop_of_x_forwarded_for_is_the_client() {
        assert_eq!(client(&[], true).as_deref(), Some("127.0.0.1"));
        assert_eq!(
            client(&["203.0.113.9, 198.51.100.7"], true).as_deref(),
            Some("198.51.100.7")
        );
        assert_eq!(
            client(&["203.0.113.9", "2001:db8::1"], true).as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            client(&["[2001:db8::2]:443"], true).as_deref(),
            Some("2001:db8::2")
        );
        assert_eq!(client(&["garbage"], true).as_deref(), Some("127.0.0.1"));
        assert_eq!(
            client(&["203.0.113.9"], false).as_deref(),
            Some("127.0.0.1")
        );
    }
}
