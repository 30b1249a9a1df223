//! TCP header (RFC 9293 §3.1) with its checksum, and the segment meaning [`TcpRepr`] that the
//! engine builds and reads.

use core::cmp::Ordering;
use core::net::IpAddr;

use arrayvec::ArrayVec;

use super::checksum;
use super::ip::{PROTOCOL_TCP, pseudo_header_sum};
use super::mptcp::MptcpOption;
use super::tcp_option::{SackBlocks, TcpOption, TcpOptions};
use super::{Error, Result};

/// Length of the fixed header.
pub const HEADER_LEN: usize = 20;

/// Longest options field (data offset 15 × 4 − 20).
pub const MAX_OPTIONS_LEN: usize = 40;

/// A subflow (TCP) sequence number: arithmetic and comparison wrap modulo 2³² (RFC 9293
/// §3.4), so raw `u32`s are never compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// `self + n`, wrapping.
    #[must_use]
    pub fn wrapping_add(self, n: u32) -> Self {
        SeqNumber(self.0.wrapping_add(n))
    }

    /// How far `self` is after `base`, wrapping (`self - base` mod 2³²).
    #[must_use]
    pub fn since(self, base: SeqNumber) -> u32 {
        self.0.wrapping_sub(base.0)
    }
}

impl PartialOrd for SeqNumber {
    /// Ordered by the signed distance between the two, as RFC 9293's `SEG.SEQ < RCV.NXT`.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        #[expect(
            clippy::cast_possible_wrap,
            reason = "the wrapping distance read as signed is the point"
        )]
        let d = self.0.wrapping_sub(other.0) as i32;
        Some(d.cmp(&0))
    }
}

/// The control bits of a TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    /// FIN.
    pub const FIN: u16 = 0x001;
    /// SYN.
    pub const SYN: u16 = 0x002;
    /// RST.
    pub const RST: u16 = 0x004;
    /// PSH.
    pub const PSH: u16 = 0x008;
    /// ACK.
    pub const ACK: u16 = 0x010;
    /// URG.
    pub const URG: u16 = 0x020;
    /// ECE.
    pub const ECE: u16 = 0x040;
    /// CWR.
    pub const CWR: u16 = 0x080;
    /// AE (accurate ECN, formerly NS).
    pub const AE: u16 = 0x100;

    /// Whether every bit of `bits` is set.
    #[must_use]
    pub fn contains(self, bits: u16) -> bool {
        self.0 & bits == bits
    }

    /// The flags as letters in header order: `"S"`, `"SA"`, `"FA"`, `"PA"`, `"RA"`.
    #[must_use]
    pub fn letters(self) -> String {
        [
            (Self::FIN, 'F'),
            (Self::SYN, 'S'),
            (Self::RST, 'R'),
            (Self::PSH, 'P'),
            (Self::ACK, 'A'),
            (Self::URG, 'U'),
            (Self::ECE, 'E'),
            (Self::CWR, 'C'),
            (Self::AE, 'N'),
        ]
        .iter()
        .filter(|(bit, _)| self.0 & bit != 0)
        .map(|&(_, c)| c)
        .collect()
    }
}

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const OFF_FLAGS: Range<usize> = 12..14;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// A view of a TCP segment. After [`TcpPacket::new_checked`], the header and its options are
/// inside the buffer and no accessor can panic.
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` (the whole segment: header, options, payload) after checking the header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated("TCP header"));
        }
        let p = TcpPacket { buffer };
        let hl = p.header_len();
        if hl < HEADER_LEN {
            return Err(Error::Malformed("TCP data offset under 5"));
        }
        if hl > len {
            return Err(Error::Truncated("TCP options"));
        }
        Ok(p)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn u16_at(&self, r: core::ops::Range<usize>) -> u16 {
        u16::from_be_bytes([self.b()[r.start], self.b()[r.start + 1]])
    }

    fn u32_at(&self, r: core::ops::Range<usize>) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3]])
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }

    /// Sequence number.
    pub fn seq_number(&self) -> SeqNumber {
        SeqNumber(self.u32_at(field::SEQ))
    }

    /// Acknowledgment number (meaningful with ACK).
    pub fn ack_number(&self) -> SeqNumber {
        SeqNumber(self.u32_at(field::ACK))
    }

    /// Header length in bytes (data offset × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::OFF_FLAGS.start] >> 4) * 4
    }

    /// Control bits.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.u16_at(field::OFF_FLAGS) & 0x01ff)
    }

    /// Window field (unscaled).
    pub fn window_len(&self) -> u16 {
        self.u16_at(field::WINDOW)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    /// Urgent pointer.
    pub fn urgent_pointer(&self) -> u16 {
        self.u16_at(field::URGENT)
    }

    /// The options field.
    pub fn options(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.header_len()]
    }

    /// The payload (what the buffer holds of it).
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }

    /// Whether the checksum verifies for a segment from `src` to `dst` (the buffer must hold
    /// the whole segment).
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let acc = pseudo_header_sum(src, dst, PROTOCOL_TCP, self.b().len());
        checksum::fold(checksum::add(acc, self.b())) == 0xffff
    }
}

/// The meaning of a TCP segment. Options are typed; unknown ones are dropped on parse.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TcpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Control bits other than ACK (ACK is set exactly when `ack_number` is).
    pub flags: TcpFlags,
    /// Sequence number.
    pub seq_number: SeqNumber,
    /// Acknowledgment number, when ACK is set.
    pub ack_number: Option<SeqNumber>,
    /// Window field (unscaled).
    pub window_len: u16,
    /// Urgent pointer.
    pub urgent_pointer: u16,
    /// MSS option.
    pub max_seg_size: Option<u16>,
    /// Window scale option.
    pub window_scale: Option<u8>,
    /// SACK-permitted option.
    pub sack_permitted: bool,
    /// SACK blocks.
    pub sack_blocks: SackBlocks,
    /// Timestamps option `(TSval, TSecr)`.
    pub timestamps: Option<(u32, u32)>,
    /// TCP Fast Open cookie option.
    pub fast_open: Option<&'a [u8]>,
    /// MPTCP options, in order.
    pub mptcp: ArrayVec<MptcpOption<'a>, 4>,
    /// Payload.
    pub payload: &'a [u8],
}

impl<'a> TcpRepr<'a> {
    /// Reads a whole segment from `src` to `dst`. With `verify_checksum`, a bad checksum is
    /// an error. Any malformed option is an error (the engine must not act on a segment it
    /// cannot fully read).
    pub fn parse(
        p: &TcpPacket<&'a [u8]>,
        src: IpAddr,
        dst: IpAddr,
        verify_checksum: bool,
    ) -> Result<Self> {
        if verify_checksum && !p.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        let flags = p.flags();
        let buffer: &'a [u8] = p.buffer;
        let mut r = TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            flags: TcpFlags(flags.0 & !TcpFlags::ACK),
            seq_number: p.seq_number(),
            ack_number: flags.contains(TcpFlags::ACK).then(|| p.ack_number()),
            window_len: p.window_len(),
            urgent_pointer: p.urgent_pointer(),
            payload: &buffer[p.header_len()..],
            ..TcpRepr::default()
        };
        for option in TcpOptions::new(&buffer[HEADER_LEN..p.header_len()]) {
            match option.map_err(|bad| bad.error)? {
                TcpOption::EndOfList | TcpOption::NoOperation | TcpOption::Unknown { .. } => {}
                TcpOption::MaxSegmentSize(v) => r.max_seg_size = Some(v),
                TcpOption::WindowScale(v) => r.window_scale = Some(v),
                TcpOption::SackPermitted => r.sack_permitted = true,
                TcpOption::Sack(blocks) => r.sack_blocks = blocks,
                TcpOption::Timestamps { tsval, tsecr } => r.timestamps = Some((tsval, tsecr)),
                TcpOption::FastOpen(c) => r.fast_open = Some(c),
                TcpOption::Mptcp(o) => {
                    r.mptcp
                        .try_push(o)
                        .map_err(|_| Error::Malformed("more than 4 MPTCP options"))?;
                }
            }
        }
        Ok(r)
    }

    /// The options in the order they are emitted.
    fn options(&self) -> impl Iterator<Item = TcpOption<'a>> + '_ {
        let mss = self.max_seg_size.map(TcpOption::MaxSegmentSize);
        let sack_ok = self.sack_permitted.then_some(TcpOption::SackPermitted);
        let ts = self
            .timestamps
            .map(|(tsval, tsecr)| TcpOption::Timestamps { tsval, tsecr });
        let ws = self.window_scale.map(TcpOption::WindowScale);
        let sack =
            (!self.sack_blocks.is_empty()).then(|| TcpOption::Sack(self.sack_blocks.clone()));
        let tfo = self.fast_open.map(TcpOption::FastOpen);
        [mss, sack_ok, ts, ws, sack, tfo]
            .into_iter()
            .flatten()
            .chain(self.mptcp.iter().cloned().map(TcpOption::Mptcp))
    }

    /// Length of the options, before padding to a multiple of 4.
    #[must_use]
    pub fn options_len(&self) -> usize {
        self.options().map(|o| o.buffer_len()).sum()
    }

    /// Header length of the emitted segment (options padded to a multiple of 4).
    #[must_use]
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options_len().div_ceil(4) * 4
    }

    /// Length of the emitted segment.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Writes the segment (header, options, payload, checksum for `src` → `dst`) into the first
    /// [`TcpRepr::buffer_len`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is too short or the options need more than [`MAX_OPTIONS_LEN`] bytes.
    pub fn emit(&self, buf: &mut [u8], src: IpAddr, dst: IpAddr) {
        let payload = self.payload;
        self.emit_with(buf, src, dst, payload.len(), |out| {
            out.copy_from_slice(payload);
        });
    }

    /// Like [`TcpRepr::emit`], but the `payload_len` payload bytes are written by `fill` straight
    /// into the segment (so a sender copies them once, from its buffer to the packet);
    /// `self.payload` is ignored. Returns the segment's length.
    ///
    /// # Panics
    /// If `buf` is too short or the options need more than [`MAX_OPTIONS_LEN`] bytes.
    pub fn emit_with(
        &self,
        buf: &mut [u8],
        src: IpAddr,
        dst: IpAddr,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> usize {
        let hl = self.header_len();
        assert!(
            hl - HEADER_LEN <= MAX_OPTIONS_LEN,
            "TCP options over 40 bytes"
        );
        let total = hl + payload_len;
        let b = &mut buf[..total];
        b[field::SRC_PORT].copy_from_slice(&self.src_port.to_be_bytes());
        b[field::DST_PORT].copy_from_slice(&self.dst_port.to_be_bytes());
        b[field::SEQ].copy_from_slice(&self.seq_number.0.to_be_bytes());
        let ack = self.ack_number.unwrap_or_default();
        b[field::ACK].copy_from_slice(&ack.0.to_be_bytes());
        let flags = (self.flags.0 & 0x01ff & !TcpFlags::ACK)
            | if self.ack_number.is_some() {
                TcpFlags::ACK
            } else {
                0
            };
        #[expect(clippy::cast_possible_truncation, reason = "hl ≤ 60")]
        let off = ((hl / 4) as u16) << 12;
        b[field::OFF_FLAGS].copy_from_slice(&(off | flags).to_be_bytes());
        b[field::WINDOW].copy_from_slice(&self.window_len.to_be_bytes());
        b[field::CHECKSUM].copy_from_slice(&[0, 0]);
        b[field::URGENT].copy_from_slice(&self.urgent_pointer.to_be_bytes());
        let mut at = HEADER_LEN;
        for o in self.options() {
            o.emit(&mut b[at..]);
            at += o.buffer_len();
        }
        b[at..hl].fill(0); // end of option list, then zero padding
        fill(&mut b[hl..]);
        let acc = pseudo_header_sum(src, dst, PROTOCOL_TCP, total);
        let c = checksum::finish(checksum::add(acc, b));
        b[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mptcp::{MpCapable, MpCapableFlags, MpCapableKeys};

    const SRC: IpAddr = IpAddr::V4(core::net::Ipv4Addr::new(10, 0, 1, 1));
    const DST: IpAddr = IpAddr::V4(core::net::Ipv4Addr::new(10, 0, 2, 1));

    fn syn() -> TcpRepr<'static> {
        let mut r = TcpRepr {
            src_port: 33306,
            dst_port: 10004,
            flags: TcpFlags(TcpFlags::SYN),
            seq_number: SeqNumber(2_180_756_989),
            window_len: 65535,
            max_seg_size: Some(1460),
            window_scale: Some(8),
            sack_permitted: true,
            timestamps: Some((464_494_241, 0)),
            ..TcpRepr::default()
        };
        r.mptcp.push(MptcpOption::MpCapable(MpCapable {
            version: 1,
            flags: MpCapableFlags(MpCapableFlags::HMAC_SHA),
            keys: MpCapableKeys::None,
        }));
        r
    }

    #[test]
    fn emit_then_parse_with_checksum() {
        let r = syn();
        let mut b = vec![0; r.buffer_len()];
        r.emit(&mut b, SRC, DST);
        assert_eq!(r.header_len(), 44);
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(DST, IpAddr::V4(core::net::Ipv4Addr::new(10, 0, 1, 2))));
        assert_eq!(p.flags().letters(), "S");
        assert_eq!(TcpRepr::parse(&p, SRC, DST, true).unwrap(), r);
        let mut corrupt = b.clone();
        corrupt[30] ^= 0x40;
        let p = TcpPacket::new_checked(&corrupt[..]).unwrap();
        assert_eq!(TcpRepr::parse(&p, SRC, DST, true), Err(Error::Checksum));
    }

    #[test]
    fn seq_numbers_compare_modulo_2_32() {
        let a = SeqNumber(u32::MAX - 10);
        let b = a.wrapping_add(20);
        assert!(a < b);
        assert!(b > a);
        assert_eq!(b.since(a), 20);
        assert_eq!(b.0, 9);
    }

    #[test]
    fn bad_headers_are_errors() {
        assert!(TcpPacket::new_checked(&[0u8; 19][..]).is_err());
        let mut b = [0u8; 20];
        b[12] = 0x40; // data offset 4
        assert!(TcpPacket::new_checked(&b[..]).is_err());
        b[12] = 0x60; // data offset 6, but only 20 bytes
        assert!(TcpPacket::new_checked(&b[..]).is_err());
        let mut with_bad_option = [0u8; 24];
        with_bad_option[12] = 0x60;
        with_bad_option[20..24].copy_from_slice(&[30, 3, 0x20, 0]);
        let p = TcpPacket::new_checked(&with_bad_option[..]).unwrap();
        assert!(TcpRepr::parse(&p, SRC, DST, false).is_err());
    }

    #[test]
    fn flag_letters() {
        assert_eq!(TcpFlags(TcpFlags::SYN | TcpFlags::ACK).letters(), "SA");
        assert_eq!(TcpFlags(TcpFlags::FIN | TcpFlags::ACK).letters(), "FA");
        assert_eq!(TcpFlags(0).letters(), "");
    }
}
