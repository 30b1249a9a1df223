//! IPv6 header (RFC 8200), with the walk over extension headers needed to find TCP.

use core::net::Ipv6Addr;

use super::{Error, Result};

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

/// Next-header values of the extension headers [`Ipv6Packet::upper_layer`] skips.
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DESTINATION: u8 = 60;

/// A view of an IPv6 packet. After [`Ipv6Packet::new_checked`] the fixed header is inside the
/// buffer and no accessor can panic.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` after checking that it holds a version-6 fixed header. The payload may be
    /// shorter than `payload_len` says (a capture cut by its snap length).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated("IPv6 header"));
        }
        if b[0] >> 4 != 6 {
            return Err(Error::Malformed("IPv6 version"));
        }
        Ok(Ipv6Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        let b = self.b();
        (b[0] << 4) | (b[1] >> 4)
    }

    /// Flow label.
    pub fn flow_label(&self) -> u32 {
        let b = self.b();
        (u32::from(b[1] & 0x0f) << 16) | (u32::from(b[2]) << 8) | u32::from(b[3])
    }

    /// Payload length (extension headers included).
    pub fn payload_len(&self) -> u16 {
        let b = self.b();
        u16::from_be_bytes([b[4], b[5]])
    }

    /// Next header of the fixed header.
    pub fn next_header(&self) -> u8 {
        self.b()[6]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.b()[7]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0; 16];
        a.copy_from_slice(&self.b()[8..24]);
        Ipv6Addr::from(a)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0; 16];
        a.copy_from_slice(&self.b()[24..40]);
        Ipv6Addr::from(a)
    }

    /// Whether the buffer ends before `payload_len` does.
    pub fn is_truncated(&self) -> bool {
        self.b().len() < HEADER_LEN + usize::from(self.payload_len())
    }

    /// The payload (extension headers included), as far as the buffer holds it.
    pub fn payload(&self) -> &[u8] {
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(self.b().len());
        &self.b()[HEADER_LEN..end]
    }

    /// Skips hop-by-hop, routing and destination-options headers to the upper-layer protocol:
    /// returns its number and bytes. A fragment header is `Unsupported` (TCP does not fragment
    /// at the IP layer in practice), a cut extension header `Truncated`.
    pub fn upper_layer(&self) -> Result<(u8, &[u8])> {
        let mut next = self.next_header();
        let mut rest = self.payload();
        loop {
            match next {
                HOP_BY_HOP | ROUTING | DESTINATION => {
                    let [nh, len, ..] = *rest else {
                        return Err(Error::Truncated("IPv6 extension header"));
                    };
                    let size = (usize::from(len) + 1) * 8;
                    if rest.len() < size {
                        return Err(Error::Truncated("IPv6 extension header"));
                    }
                    next = nh;
                    rest = &rest[size..];
                }
                FRAGMENT => return Err(Error::Unsupported("IPv6 fragment")),
                _ => return Ok((next, rest)),
            }
        }
    }
}

/// The meaning of an IPv6 header, as mpbond sends and accepts it (no extension headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header (6 for TCP).
    pub next_header: u8,
    /// Payload length.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Validates a whole packet.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Result<Self> {
        if p.is_truncated() {
            return Err(Error::Truncated("IPv6 payload"));
        }
        Ok(Ipv6Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: usize::from(p.payload_len()),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        })
    }

    /// Header length of the emitted packet.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`HEADER_LEN`] or the payload is over 65535 bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        let Ok(len) = u16::try_from(self.payload_len) else {
            panic!("IPv6 payload over 65535 bytes");
        };
        let b = &mut buf[..HEADER_LEN];
        let flow = (self.flow_label & 0x000f_ffff).to_be_bytes();
        b[0] = 0x60 | (self.traffic_class >> 4);
        b[1] = (self.traffic_class << 4) | flow[1];
        b[2] = flow[2];
        b[3] = flow[3];
        b[4..6].copy_from_slice(&len.to_be_bytes());
        b[6] = self.next_header;
        b[7] = self.hop_limit;
        b[8..24].copy_from_slice(&self.src_addr.octets());
        b[24..40].copy_from_slice(&self.dst_addr.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src_addr: "fd00:1::2".parse().unwrap(),
            dst_addr: "fd00:1::1".parse().unwrap(),
            next_header: 6,
            payload_len: 20,
            hop_limit: 64,
            traffic_class: 0xa5,
            flow_label: 0x1_2345,
        }
    }

    #[test]
    fn round_trip_and_truncation() {
        let r = repr();
        let mut b = vec![0; 60];
        r.emit(&mut b);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p).unwrap(), r);
        assert_eq!(p.upper_layer().unwrap(), (6, &b[40..60]));
        let cut = Ipv6Packet::new_checked(&b[..50]).unwrap();
        assert!(cut.is_truncated());
        assert!(Ipv6Repr::parse(&cut).is_err());
        assert!(Ipv6Packet::new_checked(&b[..39]).is_err());
    }

    #[test]
    fn extension_headers_are_skipped() {
        let mut r = repr();
        r.next_header = HOP_BY_HOP;
        r.payload_len = 8 + 20;
        let mut b = vec![0; 68];
        r.emit(&mut b);
        b[40] = 6; // hop-by-hop header: next = TCP, length 0 (8 bytes)
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        let (proto, tcp) = p.upper_layer().unwrap();
        assert_eq!((proto, tcp.len()), (6, 20));
        b[40] = FRAGMENT;
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Err(Error::Unsupported("IPv6 fragment"))
        );
        b[40] = ROUTING;
        b[41] = 200; // claims 1608 bytes
        assert!(
            Ipv6Packet::new_checked(&b[..])
                .unwrap()
                .upper_layer()
                .is_err()
        );
    }
}
