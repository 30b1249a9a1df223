//! From a captured frame to its IP packet, for the link types tcpdump and the kernel write:
//! Ethernet (with VLAN tags), Linux cooked capture v1 and v2 (`tcpdump -i any`), raw IP, and
//! BSD null/loopback.

/// `LINKTYPE_*` numbers (tcpdump.org link-layer header types).
pub mod linktype {
    /// BSD loopback: 4-byte address family in host byte order.
    pub const NULL: i32 = 0;
    /// Ethernet.
    pub const ETHERNET: i32 = 1;
    /// Raw IP (as some systems number `DLT_RAW`).
    pub const RAW_12: i32 = 12;
    /// Raw IP (as some systems number `DLT_RAW`).
    pub const RAW_14: i32 = 14;
    /// Raw IP.
    pub const RAW: i32 = 101;
    /// OpenBSD loopback: 4-byte address family in network byte order.
    pub const LOOP: i32 = 108;
    /// Linux cooked capture.
    pub const LINUX_SLL: i32 = 113;
    /// Raw IPv4.
    pub const IPV4: i32 = 228;
    /// Raw IPv6.
    pub const IPV6: i32 = 229;
    /// Linux cooked capture v2.
    pub const LINUX_SLL2: i32 = 276;
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// An IPv4 or IPv6 packet (from its version field on).
    Ip(&'a [u8]),
    /// Something else (ARP, ...).
    NotIp,
    /// A link type this decoder does not read.
    UnknownLinktype(i32),
    /// A link-layer header cut short.
    Truncated,
}

fn ethertype(t: u16, rest: &[u8]) -> Payload<'_> {
    match t {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Payload::Ip(rest),
        _ => Payload::NotIp,
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The IP packet inside `frame` of link type `linktype`.
#[must_use]
pub fn ip_payload(linktype: i32, frame: &[u8]) -> Payload<'_> {
    match linktype {
        linktype::ETHERNET => {
            let mut at = 12;
            loop {
                let Some(t) = be16(frame, at) else {
                    return Payload::Truncated;
                };
                if ETHERTYPE_VLAN.contains(&t) {
                    at += 4;
                    continue;
                }
                return ethertype(t, &frame[at + 2..]);
            }
        }
        linktype::LINUX_SLL => match be16(frame, 14) {
            Some(t) => ethertype(t, &frame[16..]),
            None => Payload::Truncated,
        },
        linktype::LINUX_SLL2 => match (be16(frame, 0), frame.get(20..)) {
            (Some(t), Some(rest)) => ethertype(t, rest),
            _ => Payload::Truncated,
        },
        linktype::RAW | linktype::RAW_12 | linktype::RAW_14 | linktype::IPV4 | linktype::IPV6 => {
            match frame.first().map(|b| b >> 4) {
                Some(4 | 6) => Payload::Ip(frame),
                Some(_) => Payload::NotIp,
                None => Payload::Truncated,
            }
        }
        linktype::NULL | linktype::LOOP => {
            let Some(family) = frame.get(..4) else {
                return Payload::Truncated;
            };
            let family = if linktype == linktype::LOOP {
                u32::from_be_bytes([family[0], family[1], family[2], family[3]])
            } else {
                // Host byte order of the capturing machine: accept either.
                let le = u32::from_le_bytes([family[0], family[1], family[2], family[3]]);
                if le < 256 {
                    le
                } else {
                    u32::from_be_bytes([family[0], family[1], family[2], family[3]])
                }
            };
            match family {
                // AF_INET, and AF_INET6 as BSDs, Darwin and Linux number it.
                2 | 10 | 24 | 28 | 30 => Payload::Ip(&frame[4..]),
                _ => Payload::NotIp,
            }
        }
        other => Payload::UnknownLinktype(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_link_type_finds_the_ip_packet() {
        let ip = [0x45u8, 0, 0, 20];
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x81, 0x00, 0, 5, 0x08, 0x00]);
        eth.extend_from_slice(&ip);
        assert_eq!(ip_payload(linktype::ETHERNET, &eth), Payload::Ip(&ip));
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x86, 0xdd]);
        sll.extend_from_slice(&ip);
        assert_eq!(ip_payload(linktype::LINUX_SLL, &sll), Payload::Ip(&ip));
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        assert_eq!(ip_payload(linktype::LINUX_SLL2, &sll2), Payload::Ip(&ip));
        assert_eq!(ip_payload(linktype::RAW, &ip), Payload::Ip(&ip));
        let mut null = vec![2u8, 0, 0, 0];
        null.extend_from_slice(&ip);
        assert_eq!(ip_payload(linktype::NULL, &null), Payload::Ip(&ip));
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 1, 2]);
        assert_eq!(ip_payload(linktype::ETHERNET, &arp), Payload::NotIp);
        assert_eq!(
            ip_payload(linktype::ETHERNET, &[0u8; 13]),
            Payload::Truncated
        );
        assert_eq!(ip_payload(147, &ip), Payload::UnknownLinktype(147));
    }
}
