//! IPv4 header (RFC 791).

use core::net::Ipv4Addr;

use super::checksum;
use super::{Error, Result};

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: core::ops::Range<usize> = 2..4;
    pub const IDENT: core::ops::Range<usize> = 4..6;
    pub const FLAGS_FRAG: core::ops::Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: core::ops::Range<usize> = 10..12;
    pub const SRC: core::ops::Range<usize> = 12..16;
    pub const DST: core::ops::Range<usize> = 16..20;
}

/// A view of an IPv4 packet. After [`Ipv4Packet::new_checked`], the header (with its options)
/// is inside the buffer and no accessor can panic.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` after checking that it holds a version-4 header of consistent lengths.
    /// The payload may be shorter than `total_len` says (a capture cut by its snap length):
    /// [`Ipv4Packet::is_truncated`] tells, and [`Ipv4Packet::payload`] returns what there is.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated("IPv4 header"));
        }
        let p = Ipv4Packet { buffer };
        if p.version() != 4 {
            return Err(Error::Malformed("IPv4 version"));
        }
        let hl = p.header_len();
        if hl < HEADER_LEN {
            return Err(Error::Malformed("IPv4 header length"));
        }
        if p.buffer.as_ref().len() < hl {
            return Err(Error::Truncated("IPv4 options"));
        }
        if usize::from(p.total_len()) < hl {
            return Err(Error::Malformed("IPv4 total length"));
        }
        Ok(p)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn u16_at(&self, r: core::ops::Range<usize>) -> u16 {
        let b = self.b();
        u16::from_be_bytes([b[r.start], b[r.start + 1]])
    }

    /// Version field (4).
    pub fn version(&self) -> u8 {
        self.b()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP and ECN byte.
    pub fn tos(&self) -> u8 {
        self.b()[field::TOS]
    }

    /// Total length of header and payload.
    pub fn total_len(&self) -> u16 {
        self.u16_at(field::LENGTH)
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        self.u16_at(field::IDENT)
    }

    /// Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.u16_at(field::FLAGS_FRAG) & 0x4000 != 0
    }

    /// More Fragments flag.
    pub fn more_frags(&self) -> bool {
        self.u16_at(field::FLAGS_FRAG) & 0x2000 != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.u16_at(field::FLAGS_FRAG) & 0x1fff) * 8
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }

    /// Protocol of the payload (6 for TCP).
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// Whether the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::add(0, &self.b()[..self.header_len()])) == 0xffff
    }

    /// Whether the buffer ends before `total_len` does.
    pub fn is_truncated(&self) -> bool {
        self.b().len() < usize::from(self.total_len())
    }

    /// Whether this is a fragment (not the whole datagram).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// The payload, as far as the buffer holds it.
    pub fn payload(&self) -> &[u8] {
        let end = usize::from(self.total_len()).min(self.b().len());
        &self.b()[self.header_len()..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer for writing, without checks; [`Ipv4Repr::emit`] fills it.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// The payload area, for writing.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let end = usize::from(self.total_len()).min(self.buffer.as_ref().len());
        &mut self.buffer.as_mut()[hl..end]
    }
}

/// The meaning of an IPv4 header, as mpbond sends and accepts it (no options, no fragments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Payload length.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// DSCP and ECN byte.
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Validates a whole, unfragmented datagram with a correct header checksum.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Result<Self> {
        if p.is_truncated() {
            return Err(Error::Truncated("IPv4 payload"));
        }
        if p.is_fragment() {
            return Err(Error::Unsupported("IPv4 fragment"));
        }
        if !p.verify_checksum() {
            return Err(Error::Checksum);
        }
        Ok(Ipv4Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: usize::from(p.total_len()) - p.header_len(),
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
        })
    }

    /// Header length of the emitted packet.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (with its checksum) into the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`HEADER_LEN`] or the total length exceeds 65535.
    pub fn emit(&self, buf: &mut [u8]) {
        let Ok(total) = u16::try_from(HEADER_LEN + self.payload_len) else {
            panic!("IPv4 datagram over 65535 bytes");
        };
        let b = &mut buf[..HEADER_LEN];
        b[field::VER_IHL] = 0x45;
        b[field::TOS] = self.tos;
        b[field::LENGTH].copy_from_slice(&total.to_be_bytes());
        b[field::IDENT].copy_from_slice(&self.ident.to_be_bytes());
        b[field::FLAGS_FRAG]
            .copy_from_slice(&(if self.dont_frag { 0x4000u16 } else { 0 }).to_be_bytes());
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = self.protocol;
        b[field::CHECKSUM].copy_from_slice(&[0, 0]);
        b[field::SRC].copy_from_slice(&self.src_addr.octets());
        b[field::DST].copy_from_slice(&self.dst_addr.octets());
        let c = checksum::checksum(b);
        b[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A SYN from a capture: 10.0.1.1 -> 10.0.2.1, TCP, total length 60.
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 10, 0, 1, 1, 10, 0,
        2, 1,
    ];

    fn with_checksum() -> Vec<u8> {
        let mut h = HEADER.to_vec();
        let c = checksum::checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.resize(60, 0);
        h
    }

    #[test]
    fn parse_a_header() {
        let b = with_checksum();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        let r = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(r.src_addr, Ipv4Addr::new(10, 0, 1, 1));
        assert_eq!(r.protocol, 6);
        assert_eq!(r.payload_len, 40);
        assert!(r.dont_frag);
        let mut out = vec![0; 60];
        r.emit(&mut out);
        assert_eq!(out[..20], b[..20]);
    }

    #[test]
    fn bad_headers_are_errors() {
        let b = with_checksum();
        assert_eq!(
            Ipv4Packet::new_checked(&b[..19]).unwrap_err(),
            Error::Truncated("IPv4 header")
        );
        let mut v6 = b.clone();
        v6[0] = 0x65;
        assert!(Ipv4Packet::new_checked(&v6[..]).is_err());
        let mut ihl = b.clone();
        ihl[0] = 0x44;
        assert!(Ipv4Packet::new_checked(&ihl[..]).is_err());
        let mut opts = b.clone();
        opts[0] = 0x4f;
        assert!(Ipv4Packet::new_checked(&opts[..40]).is_err());
        let mut bad = b.clone();
        bad[8] ^= 1;
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_checked(&bad[..]).unwrap()),
            Err(Error::Checksum)
        );
        let cut = Ipv4Packet::new_checked(&b[..30]).unwrap();
        assert!(cut.is_truncated());
        assert_eq!(cut.payload().len(), 10);
        assert!(Ipv4Repr::parse(&cut).is_err());
    }
}
