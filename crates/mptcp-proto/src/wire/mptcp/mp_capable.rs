//! `MP_CAPABLE` (RFC 8684 §3.1, Figure 4): starts an MPTCP connection and exchanges the keys.
//!
//! ```text
//! |  Kind  | Length |Subtype| Version |A|B|C|D|E|F|G|H|
//! |         Option Sender's Key (64 bits)  (SYN/ACK, ACK)     |
//! |        Option Receiver's Key (64 bits)  (ACK)             |
//! |  Data-Level Length (16 bits)  |  Checksum (16 bits, opt.) |
//! ```
//!
//! Version 1 sends no key on the SYN (length 4), the sender's key on the SYN/ACK (12), both keys
//! on the third ACK (20), and both keys with the data-level length (22) or also a checksum (24)
//! on the first data packet. Version 0 (RFC 6824) sends a key on the SYN too (12).

use super::{Error, Result, be16, be64, emit_header, subtype};

/// The flags byte `A B C D E F G H` (§3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MpCapableFlags(pub u8);

impl MpCapableFlags {
    /// A: checksums are required (§3.3.1).
    pub const CHECKSUM_REQUIRED: u8 = 0x80;
    /// B: extensibility; must be 0 in version 1.
    pub const EXTENSIBILITY: u8 = 0x40;
    /// C: do not attempt to establish new subflows to the source address.
    pub const NO_NEW_SUBFLOWS_TO_SOURCE: u8 = 0x20;
    /// H: HMAC-SHA256 (HMAC-SHA1 in version 0).
    pub const HMAC_SHA: u8 = 0x01;

    /// Whether the A bit is set.
    #[must_use]
    pub fn checksum_required(self) -> bool {
        self.0 & Self::CHECKSUM_REQUIRED != 0
    }

    /// Whether the C bit is set.
    #[must_use]
    pub fn no_new_subflows_to_source(self) -> bool {
        self.0 & Self::NO_NEW_SUBFLOWS_TO_SOURCE != 0
    }

    /// Whether the H bit is set.
    #[must_use]
    pub fn hmac_sha(self) -> bool {
        self.0 & Self::HMAC_SHA != 0
    }

    /// The letters of the set bits, in order: `"AH"`, `"H"`, `""`.
    #[must_use]
    pub fn letters(self) -> String {
        (0..8)
            .filter(|i| self.0 & (0x80 >> i) != 0)
            .map(|i| char::from(b'A' + i))
            .collect()
    }
}

/// What an `MP_CAPABLE` carries after its flags; each form has one length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MpCapableKeys {
    /// No key (v1 SYN): length 4.
    None,
    /// The sender's key (v1 SYN/ACK, v0 SYN and SYN/ACK): length 12.
    Sender {
        /// Option sender's key.
        sender_key: u64,
    },
    /// Both keys (third ACK): length 20.
    Both {
        /// Option sender's key.
        sender_key: u64,
        /// Option receiver's key.
        receiver_key: u64,
    },
    /// Both keys with the first data's data-level length (v1 ACK with data): length 22, or 24
    /// with a checksum.
    WithData {
        /// Option sender's key.
        sender_key: u64,
        /// Option receiver's key.
        receiver_key: u64,
        /// Data-level length of the data in this packet.
        data_len: u16,
        /// DSS checksum of the data, when checksums are in use.
        checksum: Option<u16>,
    },
}

/// `MP_CAPABLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MpCapable {
    /// MPTCP version (1 for RFC 8684, 0 for RFC 6824).
    pub version: u8,
    /// Flags `A`..`H`.
    pub flags: MpCapableFlags,
    /// Keys (and data information), by form.
    pub keys: MpCapableKeys,
}

impl MpCapable {
    /// Whether this option can start MPTCP v1 here (§3.1): version 1, the H bit (our only
    /// crypto algorithm, HMAC-SHA256) set and the B bit (an extensibility flag whose meaning
    /// is not defined yet) clear. Anything else "MUST be silently ignored, which triggers a
    /// fallback to regular TCP"; Linux treats the third ACK the same way.
    #[must_use]
    pub fn is_usable(&self) -> bool {
        self.version == 1
            && self.flags.hmac_sha()
            && self.flags.0 & MpCapableFlags::EXTENSIBILITY == 0
    }

    /// Parses a whole option.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < 4 {
            return Err(Error::Truncated("MP_CAPABLE shorter than 4 bytes"));
        }
        let version = b[2] & 0x0f;
        let flags = MpCapableFlags(b[3]);
        let keys = match b.len() {
            4 => MpCapableKeys::None,
            12 => MpCapableKeys::Sender {
                sender_key: be64(b, 4),
            },
            20 => MpCapableKeys::Both {
                sender_key: be64(b, 4),
                receiver_key: be64(b, 12),
            },
            22 | 24 => MpCapableKeys::WithData {
                sender_key: be64(b, 4),
                receiver_key: be64(b, 12),
                data_len: be16(b, 20),
                checksum: (b.len() == 24).then(|| be16(b, 22)),
            },
            _ => {
                return Err(Error::Malformed(
                    "MP_CAPABLE length is not 4, 12, 20, 22 or 24",
                ));
            }
        };
        if version == 0 && matches!(keys, MpCapableKeys::None | MpCapableKeys::WithData { .. }) {
            return Err(Error::Malformed("MP_CAPABLE version 0 has no such form"));
        }
        Ok(MpCapable {
            version,
            flags,
            keys,
        })
    }

    /// Length of the emitted option.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        match self.keys {
            MpCapableKeys::None => 4,
            MpCapableKeys::Sender { .. } => 12,
            MpCapableKeys::Both { .. } => 20,
            MpCapableKeys::WithData { checksum: None, .. } => 22,
            MpCapableKeys::WithData {
                checksum: Some(_), ..
            } => 24,
        }
    }

    /// Writes the option.
    ///
    /// # Panics
    /// If `buf` is shorter than [`MpCapable::buffer_len`].
    pub fn emit(&self, buf: &mut [u8]) {
        let len = self.buffer_len();
        emit_header(buf, len, subtype::MP_CAPABLE, self.version);
        buf[3] = self.flags.0;
        match self.keys {
            MpCapableKeys::None => {}
            MpCapableKeys::Sender { sender_key } => {
                buf[4..12].copy_from_slice(&sender_key.to_be_bytes());
            }
            MpCapableKeys::Both {
                sender_key,
                receiver_key,
            } => {
                buf[4..12].copy_from_slice(&sender_key.to_be_bytes());
                buf[12..20].copy_from_slice(&receiver_key.to_be_bytes());
            }
            MpCapableKeys::WithData {
                sender_key,
                receiver_key,
                data_len,
                checksum,
            } => {
                buf[4..12].copy_from_slice(&sender_key.to_be_bytes());
                buf[12..20].copy_from_slice(&receiver_key.to_be_bytes());
                buf[20..22].copy_from_slice(&data_len.to_be_bytes());
                if let Some(c) = checksum {
                    buf[22..24].copy_from_slice(&c.to_be_bytes());
                }
            }
        }
    }

    /// The option sender's key, if carried.
    #[must_use]
    pub fn sender_key(&self) -> Option<u64> {
        match self.keys {
            MpCapableKeys::None => None,
            MpCapableKeys::Sender { sender_key }
            | MpCapableKeys::Both { sender_key, .. }
            | MpCapableKeys::WithData { sender_key, .. } => Some(sender_key),
        }
    }

    /// The option receiver's key, if carried.
    #[must_use]
    pub fn receiver_key(&self) -> Option<u64> {
        match self.keys {
            MpCapableKeys::Both { receiver_key, .. }
            | MpCapableKeys::WithData { receiver_key, .. } => Some(receiver_key),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From tcpdump's mptcp-v1.pcap: SYN/ACK "mptcp 12 capable v1 flags [H] {0x29a6c86981ad933c}".
    const SYNACK: [u8; 12] = [
        30, 12, 0x01, 0x01, 0x29, 0xa6, 0xc8, 0x69, 0x81, 0xad, 0x93, 0x3c,
    ];

    #[test]
    fn parse_v1_synack() {
        let o = MpCapable::parse(&SYNACK).unwrap();
        assert_eq!(o.version, 1);
        assert_eq!(o.flags.letters(), "H");
        assert_eq!(o.sender_key(), Some(0x29a6_c869_81ad_933c));
        let mut out = [0; 12];
        o.emit(&mut out);
        assert_eq!(out, SYNACK);
    }

    #[test]
    fn every_form_round_trips() {
        for keys in [
            MpCapableKeys::None,
            MpCapableKeys::Sender { sender_key: 1 },
            MpCapableKeys::Both {
                sender_key: 1,
                receiver_key: 2,
            },
            MpCapableKeys::WithData {
                sender_key: 1,
                receiver_key: 2,
                data_len: 3,
                checksum: None,
            },
            MpCapableKeys::WithData {
                sender_key: 1,
                receiver_key: 2,
                data_len: 3,
                checksum: Some(4),
            },
        ] {
            let o = MpCapable {
                version: 1,
                flags: MpCapableFlags(0x81),
                keys,
            };
            let mut buf = vec![0; o.buffer_len()];
            o.emit(&mut buf);
            assert_eq!(MpCapable::parse(&buf).unwrap(), o);
        }
    }

    #[test]
    fn bad_lengths_and_v0_forms_are_refused() {
        for len in [3, 5, 11, 13, 19, 21, 23, 25] {
            let mut b = vec![0u8; len];
            if len > 2 {
                b[0] = 30;
                b[1] = u8::try_from(len).unwrap();
                b[2] = 0x01;
            }
            assert!(MpCapable::parse(&b).is_err(), "length {len}");
        }
        assert!(
            MpCapable::parse(&[30, 4, 0x00, 0x81]).is_err(),
            "v0 SYN carries a key"
        );
    }
}
