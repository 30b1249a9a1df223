//! `REMOVE_ADDR` (RFC 8684 §3.4.2, Figure 13): the sender no longer uses these addresses;
//! subflows using them are closed.
//!
//! ```text
//! | Kind | Length=3+n |Subtype|(resv)| Address ID | ... (n IDs)
//! ```

use super::{Error, Result, emit_header, subtype};

/// `REMOVE_ADDR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoveAddr<'a> {
    /// Address IDs removed (at least one).
    pub address_ids: &'a [u8],
}

impl<'a> RemoveAddr<'a> {
    /// Parses a whole option.
    pub fn parse(b: &'a [u8]) -> Result<Self> {
        if b.len() < 4 {
            return Err(Error::Malformed("REMOVE_ADDR lists no address ID"));
        }
        Ok(RemoveAddr {
            address_ids: &b[3..],
        })
    }

    /// Length of the emitted option.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        3 + self.address_ids.len()
    }

    /// Writes the option.
    ///
    /// # Panics
    /// If `buf` is shorter than [`RemoveAddr::buffer_len`], or the list is empty or too long
    /// for one option.
    pub fn emit(&self, buf: &mut [u8]) {
        assert!(
            !self.address_ids.is_empty(),
            "REMOVE_ADDR needs an address ID"
        );
        emit_header(buf, self.buffer_len(), subtype::REMOVE_ADDR, 0);
        buf[3..self.buffer_len()].copy_from_slice(self.address_ids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_and_empty_lists_fail() {
        let o = RemoveAddr {
            address_ids: &[0, 3, 7],
        };
        let mut b = [0; 6];
        o.emit(&mut b);
        assert_eq!(b, [30, 6, 0x40, 0, 3, 7]);
        assert_eq!(RemoveAddr::parse(&b).unwrap(), o);
        assert!(RemoveAddr::parse(&[30, 3, 0x40]).is_err());
    }
}
