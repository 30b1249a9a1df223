//! Which destinations a converter relays to.
//!
//! A converter is a TCP relay on a public address: without a policy anyone holding a gateway key
//! (or a stolen one) could reach the converter's own services and its provider's internal network
//! through it (server-side request forgery). So by default it refuses every address that is not a
//! global unicast address, and its own addresses; `--allow-dest CIDR` lifts the refusal for the
//! listed ranges (a lab, a home network behind the converter), and `--deny-dest CIDR` refuses more.
//!
//! Addresses that embed an IPv4 address (IPv4-mapped, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`)
//! are judged by the embedded address as well, so a private IPv4 address cannot slip through in an
//! IPv6 disguise.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// In a range refused by default; the name of the range.
    Range(&'static str),
    /// One of the converter's own addresses.
    Own,
    /// In a `--deny-dest` range.
    Denied(IpNet),
    /// Port 0.
    PortZero,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Range(r) => write!(f, "{r} address (allow with --allow-dest)"),
            Self::Own => f.write_str("one of the converter's own addresses"),
            Self::Denied(n) => write!(f, "in denied range {n}"),
            Self::PortZero => f.write_str("port 0"),
        }
    }
}

/// The ranges refused by default, IPv4: (network, prefix, name).
const V4_REFUSED: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "\"this network\""),
    ([10, 0, 0, 0], 8, "private"),
    ([100, 64, 0, 0], 10, "shared (CGNAT)"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local"),
    ([172, 16, 0, 0], 12, "private"),
    ([192, 0, 0, 0], 24, "IETF protocol assignment"),
    ([192, 168, 0, 0], 16, "private"),
    ([198, 18, 0, 0], 15, "benchmarking"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved"),
];

/// The ranges refused by default, IPv6.
const V6_REFUSED: &[(u128, u8, &str)] = &[
    (0, 128, "unspecified"),
    (1, 128, "loopback"),
    (
        0x0100_0000_0000_0000_0000_0000_0000_0000,
        64,
        "discard-only",
    ),
    (
        0x0064_ff9b_0001_0000_0000_0000_0000_0000,
        48,
        "local-use NAT64",
    ),
    (
        0xfc00_0000_0000_0000_0000_0000_0000_0000,
        7,
        "unique local (private)",
    ),
    (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10, "link-local"),
    (0xfec0_0000_0000_0000_0000_0000_0000_0000, 10, "site-local"),
    (0xff00_0000_0000_0000_0000_0000_0000_0000, 8, "multicast"),
];

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    let a = u32::from(ip);
    V4_REFUSED.iter().find_map(|&(net, len, name)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        (a & mask == u32::from_be_bytes(net) & mask).then_some(name)
    })
}

fn v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    let a = u128::from(ip);
    V6_REFUSED.iter().find_map(|&(net, len, name)| {
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        (a & mask == net & mask).then_some(name)
    })
}

/// The IPv4 address an IPv6 address carries, for the forms that route to it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// The destination policy of a converter.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Ranges relayed to even though refused by default.
    pub allow: Vec<IpNet>,
    /// Ranges refused on top of the defaults (wins over `allow`).
    pub deny: Vec<IpNet>,
}

impl Policy {
    /// Whether the converter may connect to `ip`:`port`, given its own addresses `own`.
    pub fn check(&self, ip: IpAddr, port: u16, own: &[IpAddr]) -> Result<(), Refusal> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        if port == 0 {
            return Err(Refusal::PortZero);
        }
        if let Some(net) = self.deny.iter().find(|n| n.contains(&ip)) {
            return Err(Refusal::Denied(*net));
        }
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        if own.contains(&ip) {
            return Err(Refusal::Own);
        }
        let range = match ip {
            IpAddr::V4(v4) => v4_range(v4).or((v4 == Ipv4Addr::BROADCAST).then_some("broadcast")),
            IpAddr::V6(v6) => v6_range(v6).or_else(|| {
                let v4 = embedded_v4(v6)?;
                if own.contains(&IpAddr::V4(v4)) {
                    return Some("embedded own");
                }
                v4_range(v4).map(|_| "IPv4-embedding")
            }),
        };
        range.map_or(Ok(()), |r| Err(Refusal::Range(r)))
    }
}

/// The addresses of this host's interfaces, for a daemon that checks every connection against
/// them: read at most once a second (`getifaddrs` dumps every interface with its statistics,
/// which under a burst of a thousand new connections showed in the profile). The process's
/// network namespace is the one a daemon runs in.
#[must_use]
pub fn own_addresses_cached() -> std::sync::Arc<Vec<IpAddr>> {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    static CACHE: Mutex<Option<(Instant, Arc<Vec<IpAddr>>)>> = Mutex::new(None);
    const FRESH: Duration = Duration::from_secs(1);
    let Ok(mut cache) = CACHE.lock() else {
        return Arc::new(own_addresses());
    };
    match &*cache {
        Some((at, addrs)) if at.elapsed() < FRESH => Arc::clone(addrs),
        _ => {
            let addrs = Arc::new(own_addresses());
            *cache = Some((Instant::now(), Arc::clone(&addrs)));
            addrs
        }
    }
}

/// The addresses of this host's interfaces (in the calling thread's network namespace).
#[must_use]
pub fn own_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: the family is AF_INET, so this is a sockaddr_in.
                let sin =
                    unsafe { std::ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in>()) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: the family is AF_INET6, so this is a sockaddr_in6.
                let sin6 =
                    unsafe { std::ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in6>()) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: &Policy, s: &str) -> Result<(), Refusal> {
        p.check(s.parse().unwrap(), 80, &["198.51.100.1".parse().unwrap()])
    }

    #[test]
    fn internal_ranges_are_refused_by_default() {
        let p = Policy::default();
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:101::1",
            "64:ff9b:1::1",
            "fec0::1",
        ] {
            assert!(
                matches!(check(&p, a), Err(Refusal::Range(_))),
                "{a} was not refused"
            );
        }
    }

    #[test]
    fn global_addresses_pass_and_own_ones_do_not() {
        let p = Policy::default();
        for a in [
            "203.0.113.2",
            "8.8.8.8",
            "2001:db8:113::2",
            "172.32.0.1",
            "100.128.0.1",
            "64:ff9b::808:808",
        ] {
            assert_eq!(check(&p, a), Ok(()), "{a} was refused");
        }
        assert_eq!(check(&p, "198.51.100.1"), Err(Refusal::Own));
        assert_eq!(check(&p, "::ffff:198.51.100.1"), Err(Refusal::Own));
        assert_eq!(
            p.check("203.0.113.2".parse().unwrap(), 0, &[]),
            Err(Refusal::PortZero)
        );
    }

    #[test]
    fn allow_lifts_and_deny_adds_refusals() {
        let p = Policy {
            allow: vec![
                "10.1.0.0/16".parse().unwrap(),
                "198.51.100.1/32".parse().unwrap(),
            ],
            deny: vec![
                "203.0.113.0/24".parse().unwrap(),
                "10.1.2.0/24".parse().unwrap(),
            ],
        };
        assert_eq!(check(&p, "10.1.1.1"), Ok(()));
        assert_eq!(
            check(&p, "::ffff:10.1.1.1"),
            Ok(()),
            "mapped form of an allowed address"
        );
        assert!(matches!(
            check(&p, "10.2.0.1"),
            Err(Refusal::Range("private"))
        ));
        assert_eq!(
            check(&p, "198.51.100.1"),
            Ok(()),
            "own address, explicitly allowed"
        );
        assert!(matches!(check(&p, "203.0.113.2"), Err(Refusal::Denied(_))));
        assert!(
            matches!(check(&p, "10.1.2.3"), Err(Refusal::Denied(_))),
            "deny wins"
        );
    }

    #[test]
    fn own_addresses_include_loopback() {
        assert!(own_addresses().contains(&"127.0.0.1".parse().unwrap()));
    }
}
