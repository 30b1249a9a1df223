//! TCP options (RFC 9293 §3.1): end of list, no-operation, MSS, window scale and timestamps
//! (RFC 7323), SACK-permitted and SACK (RFC 2018), TCP Fast Open cookie (RFC 7413), and MPTCP
//! (kind 30, [`super::mptcp`]).
//!
//! [`TcpOptions`] walks an options field. A framing error (a length byte under 2 or past the
//! end) ends the walk, since nothing after it can be trusted; a well-framed option whose
//! content is wrong (an MPTCP option with a bad length, say) is reported and the walk goes on.

use super::mptcp::{self, MptcpOption};
use super::{Error, Result};

/// Option kinds (IANA "TCP Option Kind Numbers").
pub mod kind {
    /// End of option list.
    pub const END: u8 = 0;
    /// No-operation.
    pub const NOP: u8 = 1;
    /// Maximum segment size.
    pub const MSS: u8 = 2;
    /// Window scale.
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK permitted.
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK.
    pub const SACK: u8 = 5;
    /// Timestamps.
    pub const TIMESTAMPS: u8 = 8;
    /// Multipath TCP.
    pub const MPTCP: u8 = super::mptcp::KIND;
    /// TCP Fast Open cookie.
    pub const FAST_OPEN: u8 = 34;
}

/// Up to four SACK blocks, `(left edge, right edge)`.
pub type SackBlocks = arrayvec::ArrayVec<(u32, u32), 4>;

/// One TCP option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Kind 0: the list ends (what follows is padding).
    EndOfList,
    /// Kind 1: padding between options.
    NoOperation,
    /// Kind 2: maximum segment size.
    MaxSegmentSize(u16),
    /// Kind 3: window scale shift count.
    WindowScale(u8),
    /// Kind 4.
    SackPermitted,
    /// Kind 5: SACK blocks.
    Sack(SackBlocks),
    /// Kind 8: timestamps.
    Timestamps {
        /// `TSval`.
        tsval: u32,
        /// `TSecr`.
        tsecr: u32,
    },
    /// Kind 34: TCP Fast Open cookie (empty: a cookie request).
    FastOpen(&'a [u8]),
    /// Kind 30: an MPTCP option.
    Mptcp(MptcpOption<'a>),
    /// Any other kind, with its data.
    Unknown {
        /// The kind.
        kind: u8,
        /// Bytes after kind and length.
        data: &'a [u8],
    },
}

/// An option that could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadOption<'a> {
    /// Its kind.
    pub kind: u8,
    /// Its bytes as far as they go (kind and length included).
    pub bytes: &'a [u8],
    /// What is wrong.
    pub error: Error,
}

impl<'a> TcpOption<'a> {
    /// Parses one well-framed option: `bytes` is the whole option (`[kind, len, data...]`,
    /// `bytes.len() == len`), or the single byte of `EndOfList`/`NoOperation`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let Some(&k) = bytes.first() else {
            return Err(Error::Truncated("empty TCP option"));
        };
        if k != kind::END
            && k != kind::NOP
            && (bytes.len() < 2 || usize::from(bytes[1]) != bytes.len())
        {
            return Err(Error::Malformed(
                "TCP option length does not match its bytes",
            ));
        }
        let data = bytes.get(2..).unwrap_or_default();
        let exact = |n: usize| {
            if bytes.len() == n {
                Ok(())
            } else {
                Err(Error::Malformed("TCP option length"))
            }
        };
        Ok(match k {
            kind::END => TcpOption::EndOfList,
            kind::NOP => TcpOption::NoOperation,
            kind::MSS => {
                exact(4)?;
                TcpOption::MaxSegmentSize(u16::from_be_bytes([data[0], data[1]]))
            }
            kind::WINDOW_SCALE => {
                exact(3)?;
                TcpOption::WindowScale(data[0])
            }
            kind::SACK_PERMITTED => {
                exact(2)?;
                TcpOption::SackPermitted
            }
            kind::SACK => {
                if data.is_empty() || data.len() % 8 != 0 || data.len() > 32 {
                    return Err(Error::Malformed("SACK option length"));
                }
                let be32 = |c: &[u8]| u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                TcpOption::Sack(
                    data.chunks_exact(8)
                        .map(|c| (be32(&c[..4]), be32(&c[4..])))
                        .collect(),
                )
            }
            kind::TIMESTAMPS => {
                exact(10)?;
                let be32 =
                    |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
                TcpOption::Timestamps {
                    tsval: be32(0),
                    tsecr: be32(4),
                }
            }
            kind::FAST_OPEN => {
                if !(data.is_empty() || ((4..=16).contains(&data.len()) && data.len() % 2 == 0)) {
                    return Err(Error::Malformed("TCP Fast Open cookie length"));
                }
                TcpOption::FastOpen(data)
            }
            kind::MPTCP => TcpOption::Mptcp(MptcpOption::parse(bytes)?),
            _ => TcpOption::Unknown { kind: k, data },
        })
    }

    /// Length of the emitted option.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        match self {
            TcpOption::EndOfList | TcpOption::NoOperation => 1,
            TcpOption::MaxSegmentSize(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::Sack(blocks) => 2 + 8 * blocks.len(),
            TcpOption::Timestamps { .. } => 10,
            TcpOption::FastOpen(c) => 2 + c.len(),
            TcpOption::Mptcp(o) => o.buffer_len(),
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option into the first [`TcpOption::buffer_len`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is too short, or the option is longer than 255 bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        let len = self.buffer_len();
        let head = |buf: &mut [u8], k: u8| {
            buf[0] = k;
            let Ok(len) = u8::try_from(len) else {
                panic!("TCP option over 255 bytes");
            };
            buf[1] = len;
        };
        match self {
            TcpOption::EndOfList => buf[0] = kind::END,
            TcpOption::NoOperation => buf[0] = kind::NOP,
            TcpOption::MaxSegmentSize(v) => {
                head(buf, kind::MSS);
                buf[2..4].copy_from_slice(&v.to_be_bytes());
            }
            TcpOption::WindowScale(v) => {
                head(buf, kind::WINDOW_SCALE);
                buf[2] = *v;
            }
            TcpOption::SackPermitted => head(buf, kind::SACK_PERMITTED),
            TcpOption::Sack(blocks) => {
                head(buf, kind::SACK);
                for (i, (l, r)) in blocks.iter().enumerate() {
                    buf[2 + 8 * i..6 + 8 * i].copy_from_slice(&l.to_be_bytes());
                    buf[6 + 8 * i..10 + 8 * i].copy_from_slice(&r.to_be_bytes());
                }
            }
            TcpOption::Timestamps { tsval, tsecr } => {
                head(buf, kind::TIMESTAMPS);
                buf[2..6].copy_from_slice(&tsval.to_be_bytes());
                buf[6..10].copy_from_slice(&tsecr.to_be_bytes());
            }
            TcpOption::FastOpen(c) => {
                head(buf, kind::FAST_OPEN);
                buf[2..len].copy_from_slice(c);
            }
            TcpOption::Mptcp(o) => o.emit(buf),
            TcpOption::Unknown { kind: k, data } => {
                head(buf, *k);
                buf[2..len].copy_from_slice(data);
            }
        }
    }
}

/// Walks the options field of a TCP header.
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    rest: &'a [u8],
}

impl<'a> TcpOptions<'a> {
    /// Walks `options` (the bytes between the fixed header and the payload).
    #[must_use]
    pub fn new(options: &'a [u8]) -> Self {
        TcpOptions { rest: options }
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = core::result::Result<TcpOption<'a>, BadOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&k, _) = self.rest.split_first()?;
        if k == kind::END {
            // Everything after the end of the list is padding.
            self.rest = &[];
            return Some(Ok(TcpOption::EndOfList));
        }
        if k == kind::NOP {
            self.rest = &self.rest[1..];
            return Some(Ok(TcpOption::NoOperation));
        }
        let framing = |bytes, error| {
            Some(Err(BadOption {
                kind: k,
                bytes,
                error,
            }))
        };
        let Some(&len) = self.rest.get(1) else {
            let bytes = self.rest;
            self.rest = &[];
            return framing(bytes, Error::Truncated("TCP option without a length byte"));
        };
        let len = usize::from(len);
        if len < 2 || len > self.rest.len() {
            let bytes = self.rest;
            self.rest = &[];
            return framing(
                bytes,
                if len < 2 {
                    Error::Malformed("TCP option length under 2")
                } else {
                    Error::Truncated("TCP option runs past the header")
                },
            );
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(TcpOption::parse(bytes).map_err(|error| BadOption {
            kind: k,
            bytes,
            error,
        }))
    }
}

/// The MPTCP subtype of a (possibly bad) option's bytes, when it is an MPTCP option.
#[must_use]
pub fn mptcp_subtype(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [mptcp::KIND, _, sub, ..] => Some(sub >> 4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mptcp::{Dss, MptcpOption};

    #[test]
    fn walk_a_syn_with_mp_capable() {
        // mss 1460, sackOK, TS, nop, wscale 8, MP_CAPABLE v1 [H] (tcpdump mptcp-v1.pcap frame 1).
        let opts = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0x1b, 0xaf, 0x9e, 0xa1, 0, 0, 0, 0, 1, 3, 3, 8, 30, 4,
            0x01, 0x01,
        ];
        let got: Vec<TcpOption> = TcpOptions::new(&opts).map(|o| o.unwrap()).collect();
        assert_eq!(got[0], TcpOption::MaxSegmentSize(1460));
        assert_eq!(got[1], TcpOption::SackPermitted);
        assert_eq!(
            got[2],
            TcpOption::Timestamps {
                tsval: 464_494_241,
                tsecr: 0
            }
        );
        assert_eq!(got[3], TcpOption::NoOperation);
        assert_eq!(got[4], TcpOption::WindowScale(8));
        assert!(matches!(
            got[5],
            TcpOption::Mptcp(MptcpOption::MpCapable(_))
        ));
        assert_eq!(got.len(), 6);
    }

    #[test]
    fn a_bad_mptcp_option_is_reported_and_the_walk_goes_on() {
        // tcpdump's mptcp-dss-oobr.pcap: a DSS of length 3, then more options.
        let opts = [30, 3, 0x20, 1, 4, 2];
        let items: Vec<_> = TcpOptions::new(&opts).collect();
        let bad = items[0].clone().unwrap_err();
        assert_eq!(
            (bad.kind, bad.bytes, mptcp_subtype(bad.bytes)),
            (30, &opts[..3], Some(2))
        );
        assert_eq!(items[1], Ok(TcpOption::NoOperation));
        assert_eq!(items[2], Ok(TcpOption::SackPermitted));
    }

    #[test]
    fn framing_errors_end_the_walk() {
        for opts in [&[2u8][..], &[2, 1, 0, 0], &[2, 0], &[8, 10, 0, 0]] {
            let items: Vec<_> = TcpOptions::new(opts).collect();
            assert_eq!(items.len(), 1, "{opts:?}");
            assert!(items[0].is_err());
        }
        let items: Vec<_> = TcpOptions::new(&[0, 2, 4, 0]).collect();
        assert_eq!(items, vec![Ok(TcpOption::EndOfList)]);
    }

    #[test]
    fn every_kind_round_trips() {
        let blocks: SackBlocks = [(1, 2), (3, 4)].into_iter().collect();
        let cookie = [1, 2, 3, 4, 5, 6, 7, 8];
        let dss = MptcpOption::Dss(Dss {
            data_fin: false,
            data_ack: None,
            mapping: None,
        });
        for o in [
            TcpOption::MaxSegmentSize(1460),
            TcpOption::WindowScale(7),
            TcpOption::SackPermitted,
            TcpOption::Sack(blocks),
            TcpOption::Timestamps { tsval: 1, tsecr: 2 },
            TcpOption::FastOpen(&cookie),
            TcpOption::FastOpen(&[]),
            TcpOption::Mptcp(dss),
            TcpOption::Unknown {
                kind: 99,
                data: &[1, 2],
            },
        ] {
            let mut b = vec![0; o.buffer_len()];
            o.emit(&mut b);
            assert_eq!(TcpOption::parse(&b).unwrap(), o);
        }
    }
}
