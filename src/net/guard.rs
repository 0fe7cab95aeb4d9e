//! Refuses outbound connections to addresses a user-supplied URL must not
//! reach: loopback, private, link-local, CGNAT, multicast, unspecified,
//! documentation, benchmarking and reserved ranges, in IPv4 and IPv6
//! (IPv4-mapped and NAT64 forms unwrapped), and the IPv6 transition and
//! special-purpose ranges that can lead to any IPv4 host or nowhere
//! (IPv4-translated, 6to4, Teredo, local-use NAT64, discard-only, ORCHID).
//!
//! The check runs inside the client's DNS resolver, on the addresses that the
//! connection will use, so a name that resolves to 127.0.0.1 (or is re-bound
//! between a check and the connect) is refused too. Literal IP hosts skip DNS
//! in the client, so callers check them with [`AddressGuard::check`].
//! A configured proxy is never judged (see [`AddressGuard::exempt`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The destination was refused; says which address and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves to {addr}, a {class} address")]
pub struct Refused {
    pub host: String,
    pub addr: IpAddr,
    pub class: &'static str,
}

/// The resolver-side guard; `allow_private` turns it into a plain resolver.
#[derive(Debug, Clone, Default)]
pub struct AddressGuard {
    pub allow_private: bool,
    /// A host resolved without judging it: the configured proxy, which the
    /// operator chose (it is often on a private network). Endpoints are judged
    /// before the request when a proxy is in use (the proxy resolves them).
    pub exempt: Option<String>,
}

impl AddressGuard {
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        if self.allow_private {
            return Ok(());
        }
        match forbidden_class(ip) {
            None => Ok(()),
            Some(class) => Err(Refused {
                host: host.to_owned(),
                addr: ip,
                class,
            }),
        }
    }
}

impl Resolve for AddressGuard {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if guard.exempt.as_deref() != Some(host.as_str()) {
                // One forbidden address refuses the name: a mix is how rebinding attacks start.
                for a in &addrs {
                    guard.check(&host, a.ip())?;
                }
            }
            let it: Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

/// The class of a forbidden address, or `None` for a public one.
pub fn forbidden_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let class = match (a, b) {
        (0, _) => "unspecified",
        (127, _) => "loopback",
        (10, _) | (192, 168) => "private",
        (172, 16..=31) => "private",
        (169, 254) => "link-local",
        (100, 64..=127) => "shared (CGNAT)",
        (192, 0) if c == 0 || c == 2 => "reserved",
        (198, 18..=19) => "benchmarking",
        (198, 51) if c == 100 => "documentation",
        (203, 0) if c == 113 => "documentation",
        (224..=239, _) => "multicast",
        (240..=255, _) => "reserved",
        _ => return None,
    };
    Some(class)
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_class(v4);
    }
    let seg = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let [a, b] = seg[6].to_be_bytes();
        let [c, d] = seg[7].to_be_bytes();
        return v4_class(Ipv4Addr::new(a, b, c, d));
    }
    let class = if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if seg[0..6] == [0, 0, 0, 0, 0, 0] {
        "IPv4-compatible (deprecated)"
    } else if seg[0] & 0xfe00 == 0xfc00 {
        "unique-local (private)"
    } else if seg[0] & 0xffc0 == 0xfe80 {
        "link-local"
    } else if seg[0] & 0xffc0 == 0xfec0 {
        "site-local (deprecated)"
    } else if seg[0] & 0xff00 == 0xff00 {
        "multicast"
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        "documentation"
    } else if seg[0..4] == [0, 0, 0, 0] && seg[4] == 0xffff && seg[5] == 0 {
        // ::ffff:0:0:0/96 (RFC 2765, also written ::ffff:0:0/96): a translator turns it into any IPv4 address.
        "IPv4-translated"
    } else if seg[0] == 0x2002 {
        // 2002::/16 (RFC 3056): a relay reaches the IPv4 address embedded in it.
        "6to4"
    } else if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1 {
        // 64:ff9b:1::/48 (RFC 8215): NAT64 inside one network, to its own IPv4 hosts.
        "local-use NAT64"
    } else if seg[0] == 0x0100 && seg[1..4] == [0, 0, 0] {
        "discard-only"
    } else if seg[0] == 0x2001 && seg[1] == 0 {
        // 2001::/32 (RFC 4380): Teredo tunnels to an IPv4 address embedded in it.
        "Teredo"
    } else if seg[0] == 0x2001 && seg[1] == 2 && seg[2] == 0 {
        "benchmarking"
    } else if seg[0] == 0x2001 && (seg[1] & 0xfff0 == 0x10 || seg[1] & 0xfff0 == 0x20) {
        // 2001:10::/28 and 2001:20::/28 (ORCHID, ORCHIDv2): identifiers, not locators.
        "ORCHID"
    } else {
        return None;
    };
    Some(class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        forbidden_class(s.parse().expect("ip")).is_some()
    }

    #[test]
    fn classes() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(refused(ip), "{ip} should be refused");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
        ] {
            assert!(!refused(ip), "{ip} should be allowed");
        }
    }

    fn class(s: &str) -> Option<&'static str> {
        forbidden_class(s.parse().expect("ip"))
    }

    /// Each IPv6 special-purpose range: its first and last address refused
    /// with its class, the addresses just outside it on both sides not.
    #[test]
    fn ipv6_transition_and_special_ranges_with_their_boundaries() {
        let ranges: [(&str, &str, &str, [&str; 2]); 7] = [
            (
                "IPv4-translated",
                "::ffff:0:0:0",
                "::ffff:0:ffff:ffff",
                ["::fffe:ffff:ffff:ffff", "::ffff:1:0:0"],
            ),
            (
                "6to4",
                "2002::",
                "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                ["2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2003::"],
            ),
            (
                "local-use NAT64",
                "64:ff9b:1::",
                "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
                ["64:ff9b:0:ffff:ffff:ffff:ffff:ffff", "64:ff9b:2::"],
            ),
            (
                "discard-only",
                "100::",
                "100::ffff:ffff:ffff:ffff",
                ["ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "100:0:0:1::"],
            ),
            (
                "Teredo",
                "2001::",
                "2001:0:ffff:ffff:ffff:ffff:ffff:ffff",
                ["2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2001:1::"],
            ),
            (
                "benchmarking",
                "2001:2::",
                "2001:2:0:ffff:ffff:ffff:ffff:ffff",
                ["2001:1:ffff:ffff:ffff:ffff:ffff:ffff", "2001:2:1::"],
            ),
            (
                "ORCHID",
                "2001:10::",
                "2001:2f:ffff:ffff:ffff:ffff:ffff:ffff",
                ["2001:f:ffff:ffff:ffff:ffff:ffff:ffff", "2001:30::"],
            ),
        ];
        for (name, first, last, outside) in ranges {
            assert_eq!(class(first), Some(name), "{first}");
            assert_eq!(class(last), Some(name), "{last}");
            for ip in outside {
                assert_eq!(class(ip), None, "{ip} is outside {name}");
            }
        }
        // Embedded public IPv4 addresses do not make them reachable.
        for ip in [
            "::ffff:0:808:808",
            "2002:808:808::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(refused(ip), "{ip}");
        }
    }
}
