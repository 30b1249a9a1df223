//! DSS mappings (RFC 8684 §3.3.1): which subflow bytes carry which data-level bytes.
//!
//! Positions here are 64-bit offsets, as in the TCP layer: a subflow offset `k` is the `k`-th
//! payload byte of the subflow (relative subflow sequence number `k + 1` on the wire), a data
//! offset `d` the `d`-th byte of the connection (data sequence number `IDSN + 1 + d`).

use std::collections::{BTreeMap, VecDeque};

/// The largest data-level length one mapping can carry (a 16-bit field).
pub(crate) const MAX_MAPPING: u64 = 65_535;

/// The 64-bit number nearest to `near` whose low 32 bits are `low` (how a 4-octet DSN or
/// `DATA_ACK`, and the 32-bit relative subflow sequence number, are read, §3.3).
#[must_use]
pub(crate) fn expand32(low: u32, near: u64) -> u64 {
    let base = near & !0xffff_ffff;
    let cand = base | u64::from(low);
    // The candidate within 2^31 of `near`: one of cand - 2^32, cand, cand + 2^32.
    #[expect(clippy::cast_possible_wrap, reason = "a signed distance")]
    let d = cand.wrapping_sub(near) as i64;
    if d > 1 << 31 {
        cand.wrapping_sub(1 << 32)
    } else if d < -(1 << 31) {
        cand.wrapping_add(1 << 32)
    } else {
        cand
    }
}

/// A mapping we sent on a subflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendMapping {
    /// Subflow offset of the first byte.
    pub sf_off: u64,
    /// Data offset of the first byte.
    pub data_off: u64,
    /// Bytes.
    pub len: u64,
    /// DSS checksum, when checksums are in use.
    pub checksum: Option<u16>,
    /// Already queued for sending again on another subflow.
    pub reinjected: bool,
    /// Longer than one full segment: a run whose segments after the first may go bare, so
    /// the first may carry the mapping alone (a slim DSS, `MpConn::slim`). A mapping of one
    /// segment keeps its `DATA_ACK`, as Linux's segments do.
    pub run: bool,
}

impl SendMapping {
    /// Subflow offset just past its last byte.
    pub fn sf_end(&self) -> u64 {
        self.sf_off + self.len
    }

    /// Data offset just past its last byte.
    pub fn data_end(&self) -> u64 {
        self.data_off + self.len
    }
}

/// The mappings of one subflow's sent bytes that the subflow may still (re)transmit, in
/// subflow order and contiguous.
#[derive(Debug, Clone, Default)]
pub(crate) struct SendMappings {
    maps: VecDeque<SendMapping>,
}

impl SendMappings {
    /// Adds the mapping of bytes just written after every earlier one.
    pub fn push(&mut self, m: SendMapping) {
        debug_assert!(self.maps.back().is_none_or(|b| b.sf_end() == m.sf_off));
        self.maps.push_back(m);
    }

    /// The mapping covering subflow offset `sf_off`.
    pub fn find(&self, sf_off: u64) -> Option<&SendMapping> {
        let i = self.maps.partition_point(|m| m.sf_end() <= sf_off);
        self.maps.get(i).filter(|m| m.sf_off <= sf_off)
    }

    /// How many of `len` bytes from `sf_off` one segment may carry: up to the end of the
    /// mapping they start in.
    pub fn limit(&self, sf_off: u64, len: usize) -> usize {
        self.find(sf_off).map_or(len, |m| {
            usize::try_from(m.sf_end() - sf_off).map_or(len, |room| room.min(len))
        })
    }

    /// Forgets mappings the subflow acknowledged up to `sf_acked`.
    pub fn prune(&mut self, sf_acked: u64) {
        while self.maps.front().is_some_and(|m| m.sf_end() <= sf_acked) {
            self.maps.pop_front();
        }
    }

    /// The newest, to extend.
    pub fn last_mut(&mut self) -> Option<&mut SendMapping> {
        self.maps.back_mut()
    }

    /// All of them.
    pub fn iter(&self) -> impl Iterator<Item = &SendMapping> {
        self.maps.iter()
    }

    /// Every mapping, oldest first, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut SendMapping> {
        self.maps.iter_mut()
    }

    /// How many.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.maps.len()
    }
}

/// A mapping the peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecvMapping {
    /// Subflow offset of the first byte.
    pub sf_off: u64,
    /// Data offset of the first byte.
    pub data_off: u64,
    /// Payload bytes (the `DATA_FIN`, when the mapping has one, not counted).
    pub len: u64,
    /// The DSS checksum it carried.
    pub checksum: Option<u16>,
    /// The 64-bit DSN and 32-bit relative SSN as sent, for the checksum's pseudo-header.
    pub dsn: u64,
    /// Relative subflow sequence number as sent.
    pub ssn: u32,
    /// Data-level length as sent (the `DATA_FIN` included).
    pub data_len: u16,
}

impl RecvMapping {
    /// Subflow offset just past its last byte.
    pub fn sf_end(&self) -> u64 {
        self.sf_off.saturating_add(self.len)
    }
}

/// Why a mapping was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MappingError {
    /// It covers bytes an earlier mapping maps elsewhere (the kernel's `DSSNotMatching`).
    Conflict,
    /// Too many mappings are held for bytes not read yet.
    TooMany,
}

/// The most mappings held per subflow for bytes not read yet (a mapping covers at least one
/// segment, so this is far above any window).
const MAX_HELD: usize = 4096;

/// The mappings of one subflow's received bytes not read yet, by subflow offset.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecvMappings {
    maps: BTreeMap<u64, RecvMapping>,
}

impl RecvMappings {
    /// Records `m` (the same mapping again, on another segment of it, is no change).
    pub fn insert(&mut self, m: RecvMapping) -> Result<(), MappingError> {
        if m.len == 0 {
            return Ok(());
        }
        if let Some((_, before)) = self.maps.range(..=m.sf_off).next_back() {
            if before.sf_end() > m.sf_off {
                return if before.sf_off == m.sf_off
                    && before.data_off == m.data_off
                    && before.len == m.len
                {
                    Ok(())
                } else {
                    Err(MappingError::Conflict)
                };
            }
        }
        if let Some((_, after)) = self.maps.range(m.sf_off..).next() {
            if after.sf_off < m.sf_end() {
                return Err(MappingError::Conflict);
            }
        }
        if self.maps.len() >= MAX_HELD {
            return Err(MappingError::TooMany);
        }
        self.maps.insert(m.sf_off, m);
        Ok(())
    }

    /// The mapping covering subflow offset `sf_off`.
    pub fn covering(&self, sf_off: u64) -> Option<RecvMapping> {
        self.maps
            .range(..=sf_off)
            .next_back()
            .map(|(_, m)| *m)
            .filter(|m| m.sf_end() > sf_off)
    }

    /// Forgets mappings wholly before `read` (their bytes were read).
    pub fn prune(&mut self, read: u64) {
        while let Some((&k, m)) = self.maps.first_key_value() {
            if m.sf_end() > read {
                break;
            }
            self.maps.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_32_bit_number_is_expanded_to_the_nearest_64_bit_one() {
        assert_eq!(expand32(5, 3), 5);
        assert_eq!(expand32(0xffff_fff0, 0x1_0000_0010), 0xffff_fff0);
        assert_eq!(expand32(0x10, 0xffff_fff0), 0x1_0000_0010);
        assert_eq!(expand32(7, 0x5_0000_0000), 0x5_0000_0007);
        assert_eq!(expand32(0xffff_ffff, 0), 0xffff_ffff_ffff_ffff);
    }

    fn send(sf_off: u64, data_off: u64, len: u64) -> SendMapping {
        SendMapping {
            sf_off,
            data_off,
            len,
            checksum: None,
            reinjected: false,
            run: false,
        }
    }

    #[test]
    fn a_segment_stops_at_the_end_of_its_mapping() {
        let mut m = SendMappings::default();
        m.push(send(0, 100, 1000));
        m.push(send(1000, 5000, 500));
        assert_eq!(m.limit(0, 1448), 1000);
        assert_eq!(m.limit(900, 1448), 100);
        assert_eq!(m.limit(1000, 1448), 500);
        assert_eq!(m.limit(1200, 100), 100);
        assert_eq!(m.find(1499).map(|x| x.data_off), Some(5000));
        m.prune(1000);
        assert!(m.find(999).is_none());
        assert_eq!(m.len(), 1);
    }

    fn recv(sf_off: u64, data_off: u64, len: u64) -> RecvMapping {
        RecvMapping {
            sf_off,
            data_off,
            len,
            checksum: None,
            dsn: data_off,
            ssn: 0,
            data_len: 0,
        }
    }

    #[test]
    fn received_mappings_repeat_but_never_conflict() {
        let mut m = RecvMappings::default();
        assert_eq!(m.insert(recv(0, 0, 100)), Ok(()));
        assert_eq!(m.insert(recv(0, 0, 100)), Ok(()));
        assert_eq!(m.insert(recv(50, 7, 10)), Err(MappingError::Conflict));
        assert_eq!(m.insert(recv(0, 1, 100)), Err(MappingError::Conflict));
        assert_eq!(m.insert(recv(100, 300, 50)), Ok(()));
        assert_eq!(m.insert(recv(90, 300, 20)), Err(MappingError::Conflict));
        assert_eq!(m.covering(120).map(|x| x.data_off), Some(300));
        assert!(m.covering(150).is_none());
        m.prune(100);
        assert!(m.covering(99).is_none());
        assert!(m.covering(100).is_some());
    }
}
