//! `ADD_ADDR` (RFC 8684 §3.4.1, Figure 12): announces an additional address (and port) of the
//! sender, authenticated by a truncated HMAC; the receiver echoes it back without the HMAC.
//!
//! ```text
//! | Kind | Length |Subtype|(rsv)|E| Address ID |
//! |          Address (IPv4: 4 octets / IPv6: 16 octets)        |
//! |   Port (2 octets, optional)  |
//! |          Truncated HMAC (8 octets, if E=0)                 |
//! ```
//!
//! The IP version follows from the length. RFC 6824 (version 0) put the IP version in the low
//! nibble instead (4 or 6) and had no HMAC: such options are decoded as [`AddAddrForm::V0`]; the
//! nibble tells the two versions apart, since version 1 only uses its lowest bit.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Error, Result, be16, be64, emit_header, subtype};

/// What follows the address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddAddrForm {
    /// An announcement (E=0): the rightmost 64 bits of the HMAC (§3.4.1).
    Announce {
        /// Truncated HMAC.
        hmac: u64,
    },
    /// The echo of an announcement (E=1), without HMAC.
    Echo,
    /// RFC 6824's form (version 0): no echo bit, no HMAC.
    V0,
}

/// `ADD_ADDR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddAddr {
    /// Address ID the sender gives this address.
    pub address_id: u8,
    /// The address.
    pub address: IpAddr,
    /// Port, when it differs from the connection's.
    pub port: Option<u16>,
    /// Announcement, echo, or version 0.
    pub form: AddAddrForm,
}

impl AddAddr {
    /// Parses a whole option.
    pub fn parse(b: &[u8]) -> Result<Self> {
        let Some(&low) = b.get(2) else {
            return Err(Error::Truncated("ADD_ADDR shorter than 3 bytes"));
        };
        let low = low & 0x0f;
        let (v6, with_hmac, form_v0) = match low {
            4 | 6 => (low == 6, false, true),
            _ => (false, low & 0x01 == 0, false),
        };
        // Address length: from the nibble for v0, from the total length for v1.
        let hmac_len = if with_hmac { 8 } else { 0 };
        let v6 = if form_v0 {
            v6
        } else {
            b.len() >= 4 + 16 + hmac_len
        };
        let addr_len = if v6 { 16 } else { 4 };
        let port = match b.len().checked_sub(4 + addr_len + hmac_len) {
            Some(0) => false,
            Some(2) => true,
            _ => return Err(Error::Malformed("ADD_ADDR length fits no form")),
        };
        let address = if v6 {
            let mut a = [0; 16];
            a.copy_from_slice(&b[4..20]);
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7]))
        };
        let after = 4 + addr_len;
        let port = port.then(|| be16(b, after));
        let after = after + if port.is_some() { 2 } else { 0 };
        let form = match (form_v0, with_hmac) {
            (true, _) => AddAddrForm::V0,
            (false, true) => AddAddrForm::Announce {
                hmac: be64(b, after),
            },
            (false, false) => AddAddrForm::Echo,
        };
        Ok(AddAddr {
            address_id: b[3],
            address,
            port,
            form,
        })
    }

    /// Length of the emitted option.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        let addr = if self.address.is_ipv4() { 4 } else { 16 };
        let hmac = if matches!(self.form, AddAddrForm::Announce { .. }) {
            8
        } else {
            0
        };
        4 + addr + if self.port.is_some() { 2 } else { 0 } + hmac
    }

    /// Writes the option.
    ///
    /// # Panics
    /// If `buf` is shorter than [`AddAddr::buffer_len`].
    pub fn emit(&self, buf: &mut [u8]) {
        let low = match self.form {
            AddAddrForm::Announce { .. } => 0,
            AddAddrForm::Echo => 1,
            AddAddrForm::V0 => {
                if self.address.is_ipv4() {
                    4
                } else {
                    6
                }
            }
        };
        emit_header(buf, self.buffer_len(), subtype::ADD_ADDR, low);
        buf[3] = self.address_id;
        let mut at = 4;
        match self.address {
            IpAddr::V4(a) => {
                buf[at..at + 4].copy_from_slice(&a.octets());
                at += 4;
            }
            IpAddr::V6(a) => {
                buf[at..at + 16].copy_from_slice(&a.octets());
                at += 16;
            }
        }
        if let Some(p) = self.port {
            buf[at..at + 2].copy_from_slice(&p.to_be_bytes());
            at += 2;
        }
        if let AddAddrForm::Announce { hmac } = self.form {
            buf[at..at + 8].copy_from_slice(&hmac.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_round_trips() {
        let v4: IpAddr = "10.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        for address in [v4, v6] {
            for port in [None, Some(8080)] {
                for form in [
                    AddAddrForm::Announce {
                        hmac: 0xf829_5862_f645_df19,
                    },
                    AddAddrForm::Echo,
                    AddAddrForm::V0,
                ] {
                    let o = AddAddr {
                        address_id: 1,
                        address,
                        port,
                        form,
                    };
                    let mut b = vec![0; o.buffer_len()];
                    o.emit(&mut b);
                    assert_eq!(AddAddr::parse(&b).unwrap(), o, "{b:?}");
                }
            }
        }
    }

    #[test]
    fn lengths_and_ip_versions() {
        // tcpdump mptcp-aa-echo.pcap: "mptcp 16 add-addr v1 id 1 10.0.2.1 hmac 0xf8295862f645df19".
        let b = [
            30, 16, 0x30, 1, 10, 0, 2, 1, 0xf8, 0x29, 0x58, 0x62, 0xf6, 0x45, 0xdf, 0x19,
        ];
        let o = AddAddr::parse(&b).unwrap();
        assert_eq!(
            o.form,
            AddAddrForm::Announce {
                hmac: 0xf829_5862_f645_df19
            }
        );
        assert_eq!(o.address, "10.0.2.1".parse::<IpAddr>().unwrap());
        // mptcp-v0.pcap: "mptcp 8 add-addr v0-ip4 id 1 10.1.2.2".
        let o = AddAddr::parse(&[30, 8, 0x34, 1, 10, 1, 2, 2]).unwrap();
        assert_eq!(o.form, AddAddrForm::V0);
        for bad in [
            &[30, 9, 0x30, 1, 10, 0, 2, 1, 0][..],
            &[30, 3, 0x31],
            &[30, 12, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(AddAddr::parse(bad).is_err(), "{bad:?}");
        }
    }
}
