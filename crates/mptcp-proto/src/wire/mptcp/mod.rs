//! MPTCP options (TCP option kind 30), RFC 8684 §3, with decoding of RFC 6824 (version 0)
//! forms found in older captures and peers.
//!
//! Every option starts with kind, length and a byte whose high nibble is the subtype:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +---------------+---------------+-------+-----------------------+
//! |     Kind      |    Length     |Subtype|                       |
//! +---------------+---------------+-------+                       |
//! |                     Subtype-specific data                     |
//! ```
//!
//! [`MptcpOption::parse`] takes the option's bytes (kind and length included, `bytes.len()`
//! equal to the length field) and returns the subtype's `Repr`; `emit` writes it back.

mod add_addr;
mod dss;
mod mp_capable;
mod mp_fail;
mod mp_fastclose;
mod mp_join;
mod mp_prio;
mod mp_tcprst;
mod remove_addr;

pub use add_addr::{AddAddr, AddAddrForm};
pub use dss::{DataSeqField, Dss, DssMapping};
pub use mp_capable::{MpCapable, MpCapableFlags, MpCapableKeys};
pub use mp_fail::MpFail;
pub use mp_fastclose::MpFastclose;
pub use mp_join::MpJoin;
pub use mp_prio::MpPrio;
pub use mp_tcprst::{MpTcpRst, ResetReason};
pub use remove_addr::RemoveAddr;

use super::{Error, Result};

/// TCP option kind of every MPTCP option (RFC 8684 §3).
pub const KIND: u8 = 30;

/// Option subtypes (RFC 8684 §8, "MPTCP Option Subtypes" registry).
pub mod subtype {
    /// Multipath Capable (§3.1).
    pub const MP_CAPABLE: u8 = 0x0;
    /// Join Connection (§3.2).
    pub const MP_JOIN: u8 = 0x1;
    /// Data Sequence Signal (§3.3).
    pub const DSS: u8 = 0x2;
    /// Add Address (§3.4.1).
    pub const ADD_ADDR: u8 = 0x3;
    /// Remove Address (§3.4.2).
    pub const REMOVE_ADDR: u8 = 0x4;
    /// Change Subflow Priority (§3.3.8).
    pub const MP_PRIO: u8 = 0x5;
    /// Fallback (§3.7).
    pub const MP_FAIL: u8 = 0x6;
    /// Fast Close (§3.5).
    pub const MP_FASTCLOSE: u8 = 0x7;
    /// Subflow Reset (§3.6).
    pub const MP_TCPRST: u8 = 0x8;
    /// Reserved for private experiments.
    pub const MP_EXPERIMENTAL: u8 = 0xf;
}

/// One MPTCP option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MptcpOption<'a> {
    /// `MP_CAPABLE`.
    MpCapable(MpCapable),
    /// `MP_JOIN`.
    MpJoin(MpJoin),
    /// `DSS`.
    Dss(Dss),
    /// `ADD_ADDR`.
    AddAddr(AddAddr),
    /// `REMOVE_ADDR`.
    RemoveAddr(RemoveAddr<'a>),
    /// `MP_PRIO`.
    MpPrio(MpPrio),
    /// `MP_FAIL`.
    MpFail(MpFail),
    /// `MP_FASTCLOSE`.
    MpFastclose(MpFastclose),
    /// `MP_TCPRST`.
    MpTcpRst(MpTcpRst),
    /// A subtype without a definition here (unassigned, or `MP_EXPERIMENTAL`): its bytes after
    /// kind and length.
    Unknown {
        /// The subtype.
        subtype: u8,
        /// The option's bytes from the subtype byte on.
        data: &'a [u8],
    },
}

impl<'a> MptcpOption<'a> {
    /// Parses one whole option (`bytes[0]` is kind 30, `bytes[1]` its length, equal to
    /// `bytes.len()`).
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let [kind, len, sub, ..] = *bytes else {
            return Err(Error::Truncated("MPTCP option shorter than 3 bytes"));
        };
        if kind != KIND {
            return Err(Error::Malformed("not an MPTCP option"));
        }
        if usize::from(len) != bytes.len() {
            return Err(Error::Malformed(
                "MPTCP option length does not match its bytes",
            ));
        }
        Ok(match sub >> 4 {
            subtype::MP_CAPABLE => MptcpOption::MpCapable(MpCapable::parse(bytes)?),
            subtype::MP_JOIN => MptcpOption::MpJoin(MpJoin::parse(bytes)?),
            subtype::DSS => MptcpOption::Dss(Dss::parse(bytes)?),
            subtype::ADD_ADDR => MptcpOption::AddAddr(AddAddr::parse(bytes)?),
            subtype::REMOVE_ADDR => MptcpOption::RemoveAddr(RemoveAddr::parse(bytes)?),
            subtype::MP_PRIO => MptcpOption::MpPrio(MpPrio::parse(bytes)?),
            subtype::MP_FAIL => MptcpOption::MpFail(MpFail::parse(bytes)?),
            subtype::MP_FASTCLOSE => MptcpOption::MpFastclose(MpFastclose::parse(bytes)?),
            subtype::MP_TCPRST => MptcpOption::MpTcpRst(MpTcpRst::parse(bytes)?),
            other => MptcpOption::Unknown {
                subtype: other,
                data: &bytes[2..],
            },
        })
    }

    /// The subtype number.
    #[must_use]
    pub fn subtype(&self) -> u8 {
        match self {
            MptcpOption::MpCapable(_) => subtype::MP_CAPABLE,
            MptcpOption::MpJoin(_) => subtype::MP_JOIN,
            MptcpOption::Dss(_) => subtype::DSS,
            MptcpOption::AddAddr(_) => subtype::ADD_ADDR,
            MptcpOption::RemoveAddr(_) => subtype::REMOVE_ADDR,
            MptcpOption::MpPrio(_) => subtype::MP_PRIO,
            MptcpOption::MpFail(_) => subtype::MP_FAIL,
            MptcpOption::MpFastclose(_) => subtype::MP_FASTCLOSE,
            MptcpOption::MpTcpRst(_) => subtype::MP_TCPRST,
            MptcpOption::Unknown { subtype, .. } => *subtype,
        }
    }

    /// Length of the emitted option (its length field).
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        match self {
            MptcpOption::MpCapable(o) => o.buffer_len(),
            MptcpOption::MpJoin(o) => o.buffer_len(),
            MptcpOption::Dss(o) => o.buffer_len(),
            MptcpOption::AddAddr(o) => o.buffer_len(),
            MptcpOption::RemoveAddr(o) => o.buffer_len(),
            MptcpOption::MpPrio(o) => o.buffer_len(),
            MptcpOption::MpFail(_) => MpFail::LEN,
            MptcpOption::MpFastclose(_) => MpFastclose::LEN,
            MptcpOption::MpTcpRst(_) => MpTcpRst::LEN,
            MptcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option into the first [`MptcpOption::buffer_len`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`MptcpOption::buffer_len`].
    pub fn emit(&self, buf: &mut [u8]) {
        match self {
            MptcpOption::MpCapable(o) => o.emit(buf),
            MptcpOption::MpJoin(o) => o.emit(buf),
            MptcpOption::Dss(o) => o.emit(buf),
            MptcpOption::AddAddr(o) => o.emit(buf),
            MptcpOption::RemoveAddr(o) => o.emit(buf),
            MptcpOption::MpPrio(o) => o.emit(buf),
            MptcpOption::MpFail(o) => o.emit(buf),
            MptcpOption::MpFastclose(o) => o.emit(buf),
            MptcpOption::MpTcpRst(o) => o.emit(buf),
            MptcpOption::Unknown { data, .. } => {
                let len = self.buffer_len();
                buf[0] = KIND;
                let Ok(len_byte) = u8::try_from(len) else {
                    panic!("MPTCP option over 255 bytes");
                };
                buf[1] = len_byte;
                buf[2..len].copy_from_slice(data);
            }
        }
    }
}

/// The RFC's name of a subtype (`MP_CAPABLE`, `DSS`, ...).
#[must_use]
pub fn subtype_name(subtype: u8) -> &'static str {
    match subtype {
        subtype::MP_CAPABLE => "MP_CAPABLE",
        subtype::MP_JOIN => "MP_JOIN",
        subtype::DSS => "DSS",
        subtype::ADD_ADDR => "ADD_ADDR",
        subtype::REMOVE_ADDR => "REMOVE_ADDR",
        subtype::MP_PRIO => "MP_PRIO",
        subtype::MP_FAIL => "MP_FAIL",
        subtype::MP_FASTCLOSE => "MP_FASTCLOSE",
        subtype::MP_TCPRST => "MP_TCPRST",
        subtype::MP_EXPERIMENTAL => "MP_EXPERIMENTAL",
        _ => "UNKNOWN",
    }
}

/// Writes kind, length and the subtype byte (`subtype << 4 | low`), the common start of every
/// MPTCP option.
fn emit_header(buf: &mut [u8], len: usize, subtype: u8, low: u8) {
    buf[0] = KIND;
    let Ok(len) = u8::try_from(len) else {
        panic!("MPTCP option over 255 bytes");
    };
    buf[1] = len;
    buf[2] = (subtype << 4) | (low & 0x0f);
}

/// Big-endian reads at offsets the caller has checked against the option's length.
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_errors_are_values() {
        assert!(MptcpOption::parse(&[]).is_err());
        assert!(MptcpOption::parse(&[30, 3]).is_err());
        assert!(MptcpOption::parse(&[29, 3, 0x20]).is_err());
        assert!(
            MptcpOption::parse(&[30, 4, 0x20]).is_err(),
            "length field larger than the bytes"
        );
        // The DSS of tcpdump's mptcp-dss-oobr.pcap: length 3, no room for the flags.
        assert!(MptcpOption::parse(&[30, 3, 0x20]).is_err());
    }

    #[test]
    fn unknown_subtypes_are_kept_verbatim() {
        let bytes = [30, 5, 0xf0, 1, 2];
        let o = MptcpOption::parse(&bytes).unwrap();
        assert_eq!(
            o,
            MptcpOption::Unknown {
                subtype: 0xf,
                data: &bytes[2..]
            }
        );
        let mut out = [0; 5];
        o.emit(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(subtype_name(o.subtype()), "MP_EXPERIMENTAL");
    }
}
