//! `MP_FAIL` (RFC 8684 §3.7, Figure 16): a checksum failed; the sender falls back from this
//! data sequence number on.
//!
//! ```text
//! | Kind | Length=12 |Subtype| (reserved)                   |
//! |              Data Sequence Number (8 octets)            |
//! ```

use super::{Error, Result, be64, emit_header, subtype};

/// `MP_FAIL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MpFail {
    /// Data sequence number of the start of the failed mapping.
    pub dsn: u64,
}

impl MpFail {
    /// The option's length.
    pub const LEN: usize = 12;

    /// Parses a whole option.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() != Self::LEN {
            return Err(Error::Malformed("MP_FAIL length is not 12"));
        }
        Ok(MpFail { dsn: be64(b, 4) })
    }

    /// Writes the option.
    ///
    /// # Panics
    /// If `buf` is shorter than [`MpFail::LEN`].
    pub fn emit(&self, buf: &mut [u8]) {
        emit_header(buf, Self::LEN, subtype::MP_FAIL, 0);
        buf[3] = 0;
        buf[4..12].copy_from_slice(&self.dsn.to_be_bytes());
    }
}
