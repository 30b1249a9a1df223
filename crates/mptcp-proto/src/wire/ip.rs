//! What IPv4 and IPv6 have in common for TCP: addresses and the checksum pseudo-header.

use core::net::IpAddr;

use super::checksum;

/// IP protocol number of TCP.
pub const PROTOCOL_TCP: u8 = 6;

/// Unfolded sum of the TCP pseudo-header (RFC 9293 §3.1 for IPv4, RFC 8200 §8.1 for IPv6) for
/// a segment of `tcp_len` bytes between `src` and `dst`. Mixed families have no pseudo-header;
/// they give 0 and the checksum will not verify.
#[must_use]
pub fn pseudo_header_sum(src: IpAddr, dst: IpAddr, protocol: u8, tcp_len: usize) -> u64 {
    let len = tcp_len as u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let acc = checksum::add(0, &s.octets());
            checksum::add(acc, &d.octets()) + u64::from(protocol) + (len & 0xffff)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let acc = checksum::add(0, &s.octets());
            checksum::add(acc, &d.octets()) + u64::from(protocol) + (len >> 16) + (len & 0xffff)
        }
        _ => 0,
    }
}
