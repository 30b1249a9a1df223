//! `MP_JOIN` (RFC 8684 §3.2, Figures 5–7): adds a subflow to a connection, authenticated by
//! HMACs over both hosts' keys and random numbers.
//!
//! ```text
//! SYN (12):     | Kind | Length=12 |Subtype|     |B| Address ID |
//!               |          Receiver's Token (32 bits)           |
//!               |      Sender's Random Number (32 bits)         |
//! SYN/ACK (16): | Kind | Length=16 |Subtype|     |B| Address ID |
//!               |   Sender's Truncated HMAC (64 bits)           |
//!               |      Sender's Random Number (32 bits)         |
//! ACK (24):     | Kind | Length=24 |Subtype|     (reserved)      |
//!               |          Sender's HMAC (160 bits)             |
//! ```

use super::{Error, Result, be32, be64, emit_header, subtype};

/// `MP_JOIN`, in its three forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MpJoin {
    /// On the SYN of a new subflow.
    Syn {
        /// B: the sender wants this subflow as a backup.
        backup: bool,
        /// Address ID of the sender's address.
        address_id: u8,
        /// Token of the receiver's key: which connection to join.
        token: u32,
        /// Sender's random number.
        nonce: u32,
    },
    /// On the SYN/ACK.
    SynAck {
        /// B: the sender wants this subflow as a backup.
        backup: bool,
        /// Address ID of the sender's address.
        address_id: u8,
        /// Leftmost 64 bits of the sender's HMAC.
        hmac: u64,
        /// Sender's random number.
        nonce: u32,
    },
    /// On the third ACK.
    Ack {
        /// Leftmost 160 bits of the sender's HMAC.
        hmac: [u8; 20],
    },
}

impl MpJoin {
    /// Parses a whole option.
    pub fn parse(b: &[u8]) -> Result<Self> {
        let backup = b.get(2).is_some_and(|s| s & 0x01 != 0);
        match b.len() {
            12 => Ok(MpJoin::Syn {
                backup,
                address_id: b[3],
                token: be32(b, 4),
                nonce: be32(b, 8),
            }),
            16 => Ok(MpJoin::SynAck {
                backup,
                address_id: b[3],
                hmac: be64(b, 4),
                nonce: be32(b, 12),
            }),
            24 => {
                let mut hmac = [0; 20];
                hmac.copy_from_slice(&b[4..24]);
                Ok(MpJoin::Ack { hmac })
            }
            _ => Err(Error::Malformed("MP_JOIN length is not 12, 16 or 24")),
        }
    }

    /// Length of the emitted option.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        match self {
            MpJoin::Syn { .. } => 12,
            MpJoin::SynAck { .. } => 16,
            MpJoin::Ack { .. } => 24,
        }
    }

    /// Writes the option.
    ///
    /// # Panics
    /// If `buf` is shorter than [`MpJoin::buffer_len`].
    pub fn emit(&self, buf: &mut [u8]) {
        let len = self.buffer_len();
        match *self {
            MpJoin::Syn {
                backup,
                address_id,
                token,
                nonce,
            } => {
                emit_header(buf, len, subtype::MP_JOIN, u8::from(backup));
                buf[3] = address_id;
                buf[4..8].copy_from_slice(&token.to_be_bytes());
                buf[8..12].copy_from_slice(&nonce.to_be_bytes());
            }
            MpJoin::SynAck {
                backup,
                address_id,
                hmac,
                nonce,
            } => {
                emit_header(buf, len, subtype::MP_JOIN, u8::from(backup));
                buf[3] = address_id;
                buf[4..12].copy_from_slice(&hmac.to_be_bytes());
                buf[12..16].copy_from_slice(&nonce.to_be_bytes());
            }
            MpJoin::Ack { hmac } => {
                emit_header(buf, len, subtype::MP_JOIN, 0);
                buf[3] = 0;
                buf[4..24].copy_from_slice(&hmac);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_round_trip_and_bad_lengths_fail() {
        for o in [
            MpJoin::Syn {
                backup: true,
                address_id: 3,
                token: 0xe47f_0142,
                nonce: 0x1b66_5a18,
            },
            MpJoin::SynAck {
                backup: false,
                address_id: 1,
                hmac: 0x5ab6_80c7_884a_f03d,
                nonce: 7,
            },
            MpJoin::Ack { hmac: [0xcb; 20] },
        ] {
            let mut buf = vec![0; o.buffer_len()];
            o.emit(&mut buf);
            assert_eq!(MpJoin::parse(&buf).unwrap(), o);
        }
        assert!(MpJoin::parse(&[30, 8, 0x10, 0, 0, 0, 0, 0]).is_err());
        assert!(MpJoin::parse(&[]).is_err());
    }
}
