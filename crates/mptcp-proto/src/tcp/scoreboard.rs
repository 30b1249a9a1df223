//! The sender's SACK scoreboard and loss recovery of RFC 6675.
//!
//! Holds which bytes above `SND.UNA` the receiver has reported with SACK, the highest byte
//! retransmitted in the current recovery (`HighRxt`), and answers RFC 6675's questions: is a
//! byte lost (`IsLost`, §4), how much is in the network (`SetPipe`), and what to retransmit
//! next (`NextSeg`). Positions are 64-bit sequence offsets.

use std::collections::BTreeMap;

/// RFC 6675's `DupThresh`.
pub const DUP_THRESH: u64 = 3;

/// SACKed ranges above the cumulative acknowledgment.
#[derive(Debug, Clone, Default)]
pub struct Scoreboard {
    /// `start -> end` of each SACKed range; disjoint and not adjacent.
    sacked: BTreeMap<u64, u64>,
    sacked_bytes: u64,
    /// `HighRxt`: bytes below it have been retransmitted in this recovery.
    high_rxt: u64,
}

impl Scoreboard {
    /// Records a SACK block `[start, end)`, clipped to `[una, max)`; returns the bytes it
    /// newly SACKed.
    pub fn add(&mut self, start: u64, end: u64, una: u64, max: u64) -> u64 {
        let (mut start, mut end) = (start.max(una), end.min(max));
        if start >= end {
            return 0;
        }
        let before = self.sacked_bytes;
        // Merge with every range that touches [start, end).
        if let Some((&s, &e)) = self.sacked.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.remove(s);
            }
        }
        while let Some((&s, &e)) = self.sacked.range(start..=end).next() {
            end = end.max(e);
            self.remove(s);
        }
        self.sacked.insert(start, end);
        self.sacked_bytes += end - start;
        self.sacked_bytes.saturating_sub(before)
    }

    fn remove(&mut self, start: u64) {
        if let Some(e) = self.sacked.remove(&start) {
            self.sacked_bytes -= e - start;
        }
    }

    /// Forgets everything below the new cumulative acknowledgment `una`.
    pub fn advance(&mut self, una: u64) {
        while let Some((&s, &e)) = self.sacked.first_key_value() {
            if s >= una {
                break;
            }
            self.remove(s);
            if e > una {
                self.sacked.insert(una, e);
                self.sacked_bytes += e - una;
            }
        }
        self.high_rxt = self.high_rxt.max(una);
    }

    /// Forgets all SACK information (after a timeout: the receiver may have reneged).
    pub fn clear(&mut self, una: u64) {
        self.sacked.clear();
        self.sacked_bytes = 0;
        self.high_rxt = una;
    }

    /// Bytes SACKed.
    #[must_use]
    pub fn sacked_bytes(&self) -> u64 {
        self.sacked_bytes
    }

    /// Whether anything is SACKed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sacked.is_empty()
    }

    /// The highest SACKed offset (exclusive end), if any.
    #[must_use]
    pub fn highest_sacked(&self) -> Option<u64> {
        self.sacked.last_key_value().map(|(_, &e)| e)
    }

    /// `HighRxt`.
    #[must_use]
    pub fn high_rxt(&self) -> u64 {
        self.high_rxt
    }

    /// Records a retransmission of `[start, end)`.
    pub fn retransmitted(&mut self, end: u64) {
        self.high_rxt = self.high_rxt.max(end);
    }

    /// Starts a recovery: nothing retransmitted yet above `una`.
    pub fn start_recovery(&mut self, una: u64) {
        self.high_rxt = una;
    }

    /// The offset below which every unSACKed byte is lost (RFC 6675 §4 `IsLost`: more than
    /// `(DupThresh − 1) · SMSS` bytes, or `DupThresh` discontiguous ranges, SACKed above it).
    /// Only holes matter, so this is the start of the lowest SACKed range from which the
    /// condition holds.
    #[must_use]
    pub fn lost_below(&self, mss: u64) -> Option<u64> {
        let mut bytes = 0;
        for (n, (&s, &e)) in self.sacked.iter().rev().enumerate() {
            bytes += e - s;
            if bytes > (DUP_THRESH - 1) * mss || n as u64 + 1 >= DUP_THRESH {
                // Every range at and below this one satisfies it too.
                return Some(s);
            }
        }
        None
    }

    /// `IsLost(offset)`.
    #[must_use]
    pub fn is_lost(&self, offset: u64, mss: u64) -> bool {
        !self.is_sacked(offset) && self.lost_below(mss).is_some_and(|l| offset < l)
    }

    /// Whether `offset` was SACKed.
    #[must_use]
    pub fn is_sacked(&self, offset: u64) -> bool {
        self.sacked
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, &e)| offset < e)
    }

    /// Unsacked bytes in `[from, to)`.
    fn unsacked_in(&self, from: u64, to: u64) -> u64 {
        if from >= to {
            return 0;
        }
        let mut covered = 0;
        // A range that starts before `from` may reach into it.
        if let Some((_, &e)) = self.sacked.range(..from).next_back() {
            covered += e.clamp(from, to) - from;
        }
        for (&s, &e) in self.sacked.range(from..to) {
            covered += e.min(to) - s;
        }
        (to - from) - covered
    }

    /// RFC 6675 `SetPipe`: bytes believed in the network between `una` and `max`. An unSACKed
    /// byte counts once if it is not lost, and once more if it was retransmitted.
    #[must_use]
    pub fn pipe(&self, una: u64, max: u64, mss: u64) -> u64 {
        let lost_below = self.lost_below(mss).unwrap_or(una).clamp(una, max);
        self.unsacked_in(lost_below, max) + self.unsacked_in(una, self.high_rxt.clamp(una, max))
    }

    /// RFC 6675 `NextSeg` rules 1 and 3: the first unSACKed range at or above `HighRxt` (and
    /// below `max`) to retransmit, at most `mss` long. With `lost_only`, only a lost range
    /// (rule 1); otherwise any unSACKed range below the highest SACKed byte (rule 3).
    #[must_use]
    pub fn next_retransmission(
        &self,
        una: u64,
        max: u64,
        mss: u64,
        lost_only: bool,
    ) -> Option<(u64, u64)> {
        let limit = if lost_only {
            self.lost_below(mss)?
        } else {
            self.highest_sacked()?
        }
        .min(max);
        let mut at = self.high_rxt.max(una);
        loop {
            if at >= limit {
                return None;
            }
            // Skip over a SACKed range that covers `at`.
            match self.sacked.range(..=at).next_back() {
                Some((_, &e)) if at < e => at = e,
                _ => break,
            }
        }
        let hole_end = self
            .sacked
            .range(at..)
            .next()
            .map_or(limit, |(&s, _)| s)
            .min(limit);
        Some((at, hole_end.min(at + mss)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u64 = 100;

    #[test]
    fn blocks_merge_and_clip() {
        let mut s = Scoreboard::default();
        assert_eq!(s.add(200, 300, 0, 1000), 100);
        assert_eq!(s.add(400, 500, 0, 1000), 100);
        assert_eq!(s.add(250, 450, 0, 1000), 100, "only 300..400 is new");
        assert_eq!(s.sacked_bytes(), 300);
        assert_eq!(s.add(900, 2000, 0, 1000), 100, "clipped to what was sent");
        assert_eq!(s.add(0, 50, 100, 1000), 0, "below una");
        s.advance(450);
        assert_eq!(s.sacked_bytes(), 50 + 100);
        assert!(s.is_sacked(460) && !s.is_sacked(500));
    }

    #[test]
    fn a_hole_is_lost_once_three_segments_are_sacked_above_it() {
        let mut s = Scoreboard::default();
        // Segment 0 lost, 1 and 2 SACKed: not yet lost (200 bytes = 2 MSS).
        s.add(100, 300, 0, 1000);
        assert!(!s.is_lost(0, MSS));
        s.add(300, 301, 0, 1000);
        assert!(s.is_lost(0, MSS), "over (DupThresh - 1) * SMSS above");
        assert!(!s.is_lost(150, MSS), "SACKed itself");
    }

    #[test]
    fn three_discontiguous_ranges_make_the_holes_below_lost() {
        let mut s = Scoreboard::default();
        s.add(100, 110, 0, 1000);
        s.add(200, 210, 0, 1000);
        assert_eq!(s.lost_below(MSS), None);
        s.add(300, 310, 0, 1000);
        assert_eq!(s.lost_below(MSS), Some(100));
        assert!(s.is_lost(50, MSS) && !s.is_lost(150, MSS));
    }

    #[test]
    fn pipe_counts_unlost_and_retransmitted_bytes() {
        let mut s = Scoreboard::default();
        // Sent 0..1000; 100..400 SACKed, so 0..100 is lost.
        s.add(100, 400, 0, 1000);
        s.start_recovery(0);
        // In flight: 400..1000 (not lost) = 600.
        assert_eq!(s.pipe(0, 1000, MSS), 600);
        let (a, b) = s.next_retransmission(0, 1000, MSS, true).unwrap();
        assert_eq!((a, b), (0, 100));
        s.retransmitted(b);
        assert_eq!(s.pipe(0, 1000, MSS), 700, "the retransmission is in flight");
        assert_eq!(s.next_retransmission(0, 1000, MSS, true), None);
    }

    #[test]
    fn next_retransmission_walks_the_holes_from_high_rxt() {
        let mut s = Scoreboard::default();
        s.add(100, 200, 0, 2000);
        s.add(300, 400, 0, 2000);
        s.add(500, 900, 0, 2000);
        s.start_recovery(0);
        assert_eq!(s.next_retransmission(0, 2000, MSS, true), Some((0, 100)));
        s.retransmitted(100);
        assert_eq!(s.next_retransmission(0, 2000, MSS, true), Some((200, 300)));
        s.retransmitted(300);
        assert_eq!(s.next_retransmission(0, 2000, MSS, true), Some((400, 500)));
        s.retransmitted(500);
        assert_eq!(s.next_retransmission(0, 2000, MSS, true), None);
        assert_eq!(
            s.next_retransmission(0, 2000, MSS, false),
            None,
            "nothing below 900 left"
        );
    }
}
