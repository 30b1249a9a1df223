//! `DSS`, the Data Sequence Signal (RFC 8684 §3.3, Figure 9): data-level acknowledgement and
//! the mapping of subflow bytes onto the connection's data sequence space.
//!
//! ```text
//! | Kind | Length |Subtype| (reserved) |F|m|M|a|A|
//! |      Data ACK (4 or 8 octets, depending on flags)       |  A=1
//! | Data sequence number (4 or 8 octets, depending on flags)|  M=1
//! |             Subflow Sequence Number (4 octets)          |  M=1
//! | Data-Level Length (2 octets) |  Checksum (2 octets)     |  M=1, checksum if negotiated
//! ```
//!
//! A: Data ACK present, a: it is 8 octets; M: mapping present, m: the DSN is 8 octets;
//! F: `DATA_FIN` (the mapping's data-level length counts it as one byte).

use super::{Error, Result, be16, be32, be64, emit_header, subtype};

const FLAG_DATA_FIN: u8 = 0x10;
const FLAG_DSN8: u8 = 0x08;
const FLAG_MAPPING: u8 = 0x04;
const FLAG_ACK8: u8 = 0x02;
const FLAG_ACK: u8 = 0x01;

/// A data-level sequence number as carried: 4 octets (the low 32 bits) or 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataSeqField {
    /// The least significant 32 bits.
    Short(u32),
    /// The whole 64 bits.
    Long(u64),
}

impl DataSeqField {
    /// The value as carried (a short field zero-extended: expanding it to the full sequence
    /// number needs the connection's state).
    #[must_use]
    pub fn value(self) -> u64 {
        match self {
            DataSeqField::Short(v) => u64::from(v),
            DataSeqField::Long(v) => v,
        }
    }

    /// Whether it is the 8-octet form.
    #[must_use]
    pub fn is_long(self) -> bool {
        matches!(self, DataSeqField::Long(_))
    }

    fn len(self) -> usize {
        if self.is_long() { 8 } else { 4 }
    }

    fn write(self, buf: &mut [u8]) -> usize {
        match self {
            DataSeqField::Short(v) => buf[..4].copy_from_slice(&v.to_be_bytes()),
            DataSeqField::Long(v) => buf[..8].copy_from_slice(&v.to_be_bytes()),
        }
        self.len()
    }

    fn read(b: &[u8], at: usize, long: bool) -> Self {
        if long {
            DataSeqField::Long(be64(b, at))
        } else {
            DataSeqField::Short(be32(b, at))
        }
    }
}

/// A DSS mapping: `data_len` bytes starting at subflow sequence number `ssn` carry data
/// sequence numbers starting at `dsn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DssMapping {
    /// Data sequence number of the first byte.
    pub dsn: DataSeqField,
    /// Subflow sequence number of the first byte, relative to the subflow's initial sequence
    /// number (§3.3.1).
    pub ssn: u32,
    /// Data-level length (0: infinite mapping, §3.7).
    pub data_len: u16,
    /// DSS checksum, present when checksums were negotiated.
    pub checksum: Option<u16>,
}

/// `DSS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dss {
    /// F: the mapping ends with the `DATA_FIN`.
    pub data_fin: bool,
    /// Data ACK, if present.
    pub data_ack: Option<DataSeqField>,
    /// Mapping, if present.
    pub mapping: Option<DssMapping>,
}

impl Dss {
    /// Parses a whole option. The length must be exactly what the flags announce (plus 2 for
    /// a checksum when there is a mapping).
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < 4 {
            return Err(Error::Truncated("DSS shorter than 4 bytes (no flags)"));
        }
        let flags = b[3];
        let ack_len = match (flags & FLAG_ACK != 0, flags & FLAG_ACK8 != 0) {
            (false, _) => 0,
            (true, false) => 4,
            (true, true) => 8,
        };
        let map = flags & FLAG_MAPPING != 0;
        let dsn_len = if flags & FLAG_DSN8 != 0 { 8 } else { 4 };
        let base = 4 + ack_len + if map { dsn_len + 4 + 2 } else { 0 };
        let checksum = match b.len() {
            n if n == base => false,
            n if map && n == base + 2 => true,
            n if n < base => return Err(Error::Truncated("DSS shorter than its flags announce")),
            _ => return Err(Error::Malformed("DSS longer than its flags announce")),
        };
        let data_ack = (ack_len > 0).then(|| DataSeqField::read(b, 4, ack_len == 8));
        let mapping = map.then(|| {
            let at = 4 + ack_len;
            DssMapping {
                dsn: DataSeqField::read(b, at, dsn_len == 8),
                ssn: be32(b, at + dsn_len),
                data_len: be16(b, at + dsn_len + 4),
                checksum: checksum.then(|| be16(b, at + dsn_len + 6)),
            }
        });
        Ok(Dss {
            data_fin: flags & FLAG_DATA_FIN != 0,
            data_ack,
            mapping,
        })
    }

    /// Length of the emitted option.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        4 + self.data_ack.map_or(0, DataSeqField::len)
            + self.mapping.map_or(0, |m| {
                m.dsn.len() + 6 + if m.checksum.is_some() { 2 } else { 0 }
            })
    }

    /// Writes the option.
    ///
    /// # Panics
    /// If `buf` is shorter than [`Dss::buffer_len`].
    pub fn emit(&self, buf: &mut [u8]) {
        emit_header(buf, self.buffer_len(), subtype::DSS, 0);
        let mut flags = 0;
        if self.data_fin {
            flags |= FLAG_DATA_FIN;
        }
        let mut at = 4;
        if let Some(ack) = self.data_ack {
            flags |= FLAG_ACK | if ack.is_long() { FLAG_ACK8 } else { 0 };
            at += ack.write(&mut buf[at..]);
        }
        if let Some(m) = self.mapping {
            flags |= FLAG_MAPPING | if m.dsn.is_long() { FLAG_DSN8 } else { 0 };
            at += m.dsn.write(&mut buf[at..]);
            buf[at..at + 4].copy_from_slice(&m.ssn.to_be_bytes());
            buf[at + 4..at + 6].copy_from_slice(&m.data_len.to_be_bytes());
            if let Some(c) = m.checksum {
                buf[at + 6..at + 8].copy_from_slice(&c.to_be_bytes());
            }
        }
        buf[3] = flags;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // tcpdump mptcp-v1.pcap frame 7: "mptcp 26 dss ack 14413541604287230030
    // seq 11713449205243392242 subseq 1 len 8192".
    #[test]
    fn parse_ack64_with_map64() {
        let d = Dss {
            data_fin: false,
            data_ack: Some(DataSeqField::Long(14_413_541_604_287_230_030)),
            mapping: Some(DssMapping {
                dsn: DataSeqField::Long(11_713_449_205_243_392_242),
                ssn: 1,
                data_len: 8192,
                checksum: None,
            }),
        };
        assert_eq!(d.buffer_len(), 26);
        let mut b = [0; 26];
        d.emit(&mut b);
        assert_eq!(b[3], 0x0f);
        assert_eq!(Dss::parse(&b).unwrap(), d);
    }

    #[test]
    fn every_combination_round_trips() {
        let acks = [
            None,
            Some(DataSeqField::Short(7)),
            Some(DataSeqField::Long(u64::MAX)),
        ];
        let maps = [
            None,
            Some(DssMapping {
                dsn: DataSeqField::Short(1),
                ssn: 2,
                data_len: 3,
                checksum: None,
            }),
            Some(DssMapping {
                dsn: DataSeqField::Long(1),
                ssn: 2,
                data_len: 3,
                checksum: Some(0x9e91),
            }),
        ];
        for data_ack in acks {
            for mapping in maps {
                for data_fin in [false, true] {
                    let d = Dss {
                        data_fin,
                        data_ack,
                        mapping,
                    };
                    let mut b = vec![0; d.buffer_len()];
                    d.emit(&mut b);
                    assert_eq!(Dss::parse(&b).unwrap(), d);
                }
            }
        }
    }

    #[test]
    fn lengths_that_disagree_with_the_flags_are_errors() {
        assert!(Dss::parse(&[30, 3, 0x20]).is_err());
        assert!(
            Dss::parse(&[30, 4, 0x20, 0x01]).is_err(),
            "ack announced, none present"
        );
        assert!(
            Dss::parse(&[30, 10, 0x20, 0x00, 0, 0, 0, 0, 0, 0]).is_err(),
            "bytes without flags"
        );
        // A checksum without a mapping is not a thing.
        assert!(Dss::parse(&[30, 10, 0x20, 0x01, 0, 0, 0, 1, 0, 0]).is_err());
    }
}
