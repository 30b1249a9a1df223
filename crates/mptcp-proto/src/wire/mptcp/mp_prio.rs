//! `MP_PRIO` (RFC 8684 §3.3.8, Figure 11): changes the backup priority of the subflow it is
//! sent on. RFC 6824 (version 0) also carried an address ID (length 4).
//!
//! ```text
//! | Kind | Length=3 |Subtype|(rsv)|B|
//! ```

use super::{Error, Result, emit_header, subtype};

/// `MP_PRIO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MpPrio {
    /// B: the sender wants to receive on this subflow only as a backup.
    pub backup: bool,
    /// Address ID (version 0 form only).
    pub address_id: Option<u8>,
}

impl MpPrio {
    /// Parses a whole option.
    pub fn parse(b: &[u8]) -> Result<Self> {
        match b.len() {
            3 => Ok(MpPrio {
                backup: b[2] & 0x01 != 0,
                address_id: None,
            }),
            4 => Ok(MpPrio {
                backup: b[2] & 0x01 != 0,
                address_id: Some(b[3]),
            }),
            _ => Err(Error::Malformed(
                "MP_PRIO length is not 3 (or 4 in version 0)",
            )),
        }
    }

    /// Length of the emitted option.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        if self.address_id.is_some() { 4 } else { 3 }
    }

    /// Writes the option.
    ///
    /// # Panics
    /// If `buf` is shorter than [`MpPrio::buffer_len`].
    pub fn emit(&self, buf: &mut [u8]) {
        emit_header(
            buf,
            self.buffer_len(),
            subtype::MP_PRIO,
            u8::from(self.backup),
        );
        if let Some(id) = self.address_id {
            buf[3] = id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_round_trip() {
        for o in [
            MpPrio {
                backup: true,
                address_id: None,
            },
            MpPrio {
                backup: false,
                address_id: Some(2),
            },
        ] {
            let mut b = vec![0; o.buffer_len()];
            o.emit(&mut b);
            assert_eq!(MpPrio::parse(&b).unwrap(), o);
        }
        assert!(MpPrio::parse(&[30, 5, 0x51, 0, 0]).is_err());
    }
}
