//! `MP_TCPRST` (RFC 8684 §3.6, Figure 15): why a subflow was reset.
//!
//! ```text
//! | Kind | Length=4 |Subtype|U|V|W|T|    Reason    |
//! ```
//!
//! T: the error is transient (the subflow may be tried again). U, V, W are unassigned.

use super::{Error, Result, emit_header, subtype};

/// `MP_TCPRST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MpTcpRst {
    /// The four flag bits `U V W T` (T is the lowest).
    pub flags: u8,
    /// Reason code (§3.6; see [`ResetReason`]).
    pub reason: u8,
}

/// The reason codes registered by RFC 8684 §3.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResetReason {
    /// 0x00.
    Unspecified,
    /// 0x01.
    MptcpSpecific,
    /// 0x02.
    LackOfResources,
    /// 0x03.
    AdministrativelyProhibited,
    /// 0x04.
    TooMuchOutstandingData,
    /// 0x05.
    UnacceptablePerformance,
    /// 0x06.
    MiddleboxInterference,
}

impl ResetReason {
    /// The reason for code `code`, if registered.
    #[must_use]
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => ResetReason::Unspecified,
            1 => ResetReason::MptcpSpecific,
            2 => ResetReason::LackOfResources,
            3 => ResetReason::AdministrativelyProhibited,
            4 => ResetReason::TooMuchOutstandingData,
            5 => ResetReason::UnacceptablePerformance,
            6 => ResetReason::MiddleboxInterference,
            _ => return None,
        })
    }

    /// The RFC's description.
    #[must_use]
    pub fn description(self) -> &'static str {
        match self {
            ResetReason::Unspecified => "Unspecified error",
            ResetReason::MptcpSpecific => "MPTCP-specific error",
            ResetReason::LackOfResources => "Lack of resources",
            ResetReason::AdministrativelyProhibited => "Administratively prohibited",
            ResetReason::TooMuchOutstandingData => "Too much outstanding data",
            ResetReason::UnacceptablePerformance => "Unacceptable performance",
            ResetReason::MiddleboxInterference => "Middlebox interference",
        }
    }
}

impl MpTcpRst {
    /// The option's length.
    pub const LEN: usize = 4;
    /// T: transient error.
    pub const TRANSIENT: u8 = 0x01;

    /// Parses a whole option.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() != Self::LEN {
            return Err(Error::Malformed("MP_TCPRST length is not 4"));
        }
        Ok(MpTcpRst {
            flags: b[2] & 0x0f,
            reason: b[3],
        })
    }

    /// Whether the T flag is set.
    #[must_use]
    pub fn transient(&self) -> bool {
        self.flags & Self::TRANSIENT != 0
    }

    /// The letters of the set flags among `U V W T`, in that order.
    #[must_use]
    pub fn letters(&self) -> String {
        [(0x08, 'U'), (0x04, 'V'), (0x02, 'W'), (0x01, 'T')]
            .iter()
            .filter(|(bit, _)| self.flags & bit != 0)
            .map(|&(_, c)| c)
            .collect()
    }

    /// Writes the option.
    ///
    /// # Panics
    /// If `buf` is shorter than [`MpTcpRst::LEN`].
    pub fn emit(&self, buf: &mut [u8]) {
        emit_header(buf, Self::LEN, subtype::MP_TCPRST, self.flags);
        buf[3] = self.reason;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_reasons() {
        // tcpdump mptcp-tcprst.pcap: "mptcp 4 tcprst flags [T] reason MPTCP-specific error".
        let o = MpTcpRst::parse(&[30, 4, 0x81, 0x01]).unwrap();
        assert!(o.transient());
        assert_eq!(o.letters(), "T");
        assert_eq!(
            ResetReason::from_code(o.reason).unwrap().description(),
            "MPTCP-specific error"
        );
        let mut b = [0; 4];
        o.emit(&mut b);
        assert_eq!(b, [30, 4, 0x81, 0x01]);
        assert!(MpTcpRst::parse(&[30, 5, 0x80, 0, 0]).is_err());
        assert_eq!(ResetReason::from_code(7), None);
    }
}
