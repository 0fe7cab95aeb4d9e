//! The access log: one line per HTTP request at INFO on the target
//! `pushgate::access` (Sygnal's `sygnal.access` logger), with the client
//! address, method, path, status, duration and request id. One line, no
//! per-device detail, so it stays cheap at any request rate.

use std::net::IpAddr;
use std::sync::OnceLock;

use crate::config::LogConfig;

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
