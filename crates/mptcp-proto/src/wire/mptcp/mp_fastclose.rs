//! `MP_FASTCLOSE` (RFC 8684 §3.5, Figure 14): closes the whole connection at once, like a RST at
//! the data level, proven by the receiver's key.
//!
//! ```text
//! | Kind | Length=12 |Subtype| (reserved)                   |
//! |            Option Receiver's Key (8 octets)              |
//! ```

use super::{Error, Result, be64, emit_header, subtype};

/// `MP_FASTCLOSE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MpFastclose {
    /// The key of the host receiving this option.
    pub receiver_key: u64,
}

impl MpFastclose {
    /// The option's length.
    pub const LEN: usize = 12;

    /// Parses a whole option.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() != Self::LEN {
            return Err(Error::Malformed("MP_FASTCLOSE length is not 12"));
        }
        Ok(MpFastclose {
            receiver_key: be64(b, 4),
        })
    }

    /// Writes the option.
    ///
    /// # Panics
    /// If `buf` is shorter than [`MpFastclose::LEN`].
    pub fn emit(&self, buf: &mut [u8]) {
        emit_header(buf, Self::LEN, subtype::MP_FASTCLOSE, 0);
        buf[3] = 0;
        buf[4..12].copy_from_slice(&self.receiver_key.to_be_bytes());
    }
}
