//! DSS mappings whose checksum (RFC 8684 §3.3.1) waits for their data, per subflow direction.
//!
//! A mapping covers `data_len` bytes that may arrive in several segments, out of order or more
//! than once; Linux repeats the same mapping in the DSS of every segment it covers, and may
//! retransmit after the mapping completed. A [`Direction`] collects each mapping's bytes once,
//! answers repeats of a finished mapping from a cache of recent verdicts, and gives up (the check
//! stays `null`) when the data cannot come: the capture cut the payload, or the stream moved past
//! the mapping's end and stayed there for a while. Memory is bounded by a byte [`Budget`] shared
//! by all directions.

use std::collections::VecDeque;

use mptcp_proto::crypto;

use super::record::Check;
use super::track::Resolution;

/// Most mappings waiting per direction.
const MAX_PENDING: usize = 64;

/// Verdicts of finished mappings remembered per direction, for their repeats.
const MAX_DONE: usize = 256;

/// Capture time (s) a mapping may stay incomplete after the stream moved past its end, before
/// its check is given up: room for a retransmission to fill the hole.
const GIVE_UP_AFTER: f64 = 5.0;

/// Bytes of mapping data held at most, over all directions.
pub const BUDGET_BYTES: usize = 64 << 20;

/// What identifies a mapping: the same announcement repeated has the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappingKey {
    /// Absolute subflow sequence number of its first byte.
    pub start: u32,
    /// Its 64-bit data sequence number.
    pub dsn: u64,
    /// Relative subflow sequence number, as in the option.
    pub ssn: u32,
    /// Data-level length, as in the option.
    pub data_len: u16,
    /// The checksum carried.
    pub checksum: u16,
    /// Payload bytes it covers (`data_len`, minus one for a `DATA_FIN`).
    pub bytes: usize,
}

impl MappingKey {
    fn verdict(&self, data: &[u8]) -> bool {
        crypto::dss_checksum(self.dsn, self.ssn, self.data_len, data) == self.checksum
    }
}

/// Bytes held by waiting mappings.
#[derive(Debug, Default)]
pub struct Budget {
    used: usize,
}

#[derive(Debug)]
struct Pending {
    key: MappingKey,
    reporters: Vec<(u64, usize)>,
    data: Vec<u8>,
    present: Vec<u64>,
    missing: usize,
    created: f64,
}

impl Pending {
    fn cost(&self) -> usize {
        self.data.len() + self.present.len() * 8
    }

    fn resolve(&self, check: Check) -> impl Iterator<Item = Resolution> + '_ {
        self.reporters
            .iter()
            .map(move |&(record, option)| Resolution {
                record,
                option,
                check,
            })
    }

    /// Copies `bytes`, which start at offset `at` of the mapping, keeping count of new ones.
    fn fill(&mut self, at: usize, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            let off = at + i;
            let (word, bit) = (off / 64, 1u64 << (off % 64));
            if self.present[word] & bit == 0 {
                self.present[word] |= bit;
                self.data[off] = b;
                self.missing -= 1;
            }
        }
    }
}

/// Signed distance from `b` to `a` in sequence space (RFC 9293 comparison).
fn seq_after(a: u32, b: u32) -> i64 {
    #[expect(
        clippy::cast_possible_wrap,
        reason = "the wrapping difference read as signed is the point"
    )]
    let d = a.wrapping_sub(b) as i32;
    i64::from(d)
}

/// The overlap of `n` bytes from sequence number `seq` with `len` bytes from `start`, as
/// `(from, to, at)`: bytes `from..to` of the first are bytes `at..` of the second.
fn overlap(seq: u32, n: usize, start: u32, len: usize) -> Option<(usize, usize, usize)> {
    let first_in_second = seq.wrapping_sub(start) as usize;
    let second_in_first = start.wrapping_sub(seq) as usize;
    if first_in_second < len && n > 0 {
        Some((0, n.min(len - first_in_second), first_in_second))
    } else if second_in_first < n && len > 0 {
        Some((second_in_first, n.min(second_in_first + len), 0))
    } else {
        None
    }
}

/// The mappings of one direction of one subflow.
#[derive(Debug, Default)]
pub struct Direction {
    pending: Vec<Pending>,
    done: VecDeque<(MappingKey, bool)>,
    /// End of the furthest payload seen (absolute sequence number).
    highest_end: Option<u32>,
}

impl Direction {
    /// A mapping announced by option `reporter` (record, option index) at capture time `now`.
    /// Returns its check when it is decided at once (a repeat of a finished mapping, a mapping
    /// without payload, or one there is no room to wait for); `None` when it waits for data, in
    /// which case [`Direction::feed`] or [`Direction::abandon`] will resolve it.
    pub fn announce(
        &mut self,
        key: MappingKey,
        reporter: (u64, usize),
        now: f64,
        budget: &mut Budget,
    ) -> Option<Check> {
        if let Some(&(_, ok)) = self.done.iter().find(|(k, _)| *k == key) {
            return Some(Check::Checked(ok));
        }
        if key.bytes == 0 {
            let ok = key.verdict(&[]);
            self.remember(key, ok);
            return Some(Check::Checked(ok));
        }
        if let Some(p) = self.pending.iter_mut().find(|p| p.key == key) {
            p.reporters.push(reporter);
            return None;
        }
        let cost = key.bytes + key.bytes.div_ceil(64) * 8;
        if self.pending.len() >= MAX_PENDING || budget.used + cost > BUDGET_BYTES {
            return Some(Check::Unknown);
        }
        budget.used += cost;
        self.pending.push(Pending {
            key,
            reporters: vec![reporter],
            data: vec![0; key.bytes],
            present: vec![0; key.bytes.div_ceil(64)],
            missing: key.bytes,
            created: now,
        });
        None
    }

    fn remember(&mut self, key: MappingKey, ok: bool) {
        if self.done.len() >= MAX_DONE {
            self.done.pop_front();
        }
        self.done.push_back((key, ok));
    }

    /// Takes in a segment whose payload starts at sequence number `seq` and is `wire_len` bytes
    /// long on the wire, of which `payload` was captured. Returns the checks it decided.
    pub fn feed(
        &mut self,
        seq: u32,
        payload: &[u8],
        wire_len: usize,
        now: f64,
        budget: &mut Budget,
    ) -> Vec<Resolution> {
        let wire_end = seq.wrapping_add(u32::try_from(wire_len).unwrap_or(u32::MAX));
        if self.highest_end.is_none_or(|h| seq_after(wire_end, h) > 0) {
            self.highest_end = Some(wire_end);
        }
        if self.pending.is_empty() {
            return Vec::new();
        }
        let captured_end = seq.wrapping_add(u32::try_from(payload.len()).unwrap_or(u32::MAX));
        let mut out = Vec::new();
        let mut finished = Vec::new();
        for (i, p) in self.pending.iter_mut().enumerate() {
            let (start, len) = (p.key.start, p.key.bytes);
            let m_end = start.wrapping_add(u32::try_from(len).unwrap_or(u32::MAX));
            // Where the captured payload and the mapping overlap, `payload[from..to]` being
            // mapping[at..]: either the payload starts inside the mapping or the mapping inside
            // the payload. Offsets, not signed comparisons, so it stays in bounds for any input.
            if let Some((from, to, at)) = overlap(seq, payload.len(), start, len) {
                p.fill(at, &payload[from..to]);
            }
            // Bytes of the mapping that were on the wire but not captured cannot come back.
            let cut = overlap(
                captured_end,
                wire_len.saturating_sub(payload.len()),
                start,
                len,
            )
            .is_some();
            let verdict = if p.missing == 0 {
                let ok = p.key.verdict(&p.data);
                Some(Check::Checked(ok))
            } else if cut {
                Some(Check::Unknown)
            } else if self.highest_end.is_some_and(|h| seq_after(h, m_end) > 0)
                && now - p.created > GIVE_UP_AFTER
            {
                // The stream went past the mapping long ago and its hole was never filled.
                Some(Check::Unknown)
            } else {
                None
            };
            if let Some(check) = verdict {
                out.extend(p.resolve(check));
                finished.push((i, check));
            }
        }
        for &(i, check) in finished.iter().rev() {
            let p = self.pending.swap_remove(i);
            budget.used -= p.cost();
            if let Check::Checked(ok) = check {
                self.remember(p.key, ok);
            }
        }
        out
    }

    /// Gives up every waiting mapping first announced before record `before` (all of them with
    /// `u64::MAX`).
    pub fn abandon(&mut self, before: u64, budget: &mut Budget) -> Vec<Resolution> {
        let mut out = Vec::new();
        self.pending.retain(|p| {
            let keep = p
                .reporters
                .first()
                .is_some_and(|&(first, _)| first >= before);
            if !keep {
                out.extend(p.resolve(Check::Unknown));
                budget.used -= p.cost();
            }
            keep
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(start: u32, bytes: usize) -> MappingKey {
        let data: Vec<u8> = (0..bytes).map(|i| u8::try_from(i % 251).unwrap()).collect();
        let data_len = u16::try_from(bytes).unwrap();
        MappingKey {
            start,
            dsn: 7,
            ssn: 1,
            data_len,
            checksum: crypto::dss_checksum(7, 1, data_len, &data),
            bytes,
        }
    }

    fn data(bytes: usize) -> Vec<u8> {
        (0..bytes).map(|i| u8::try_from(i % 251).unwrap()).collect()
    }

    #[test]
    fn overlap_stays_in_bounds_everywhere() {
        assert_eq!(
            overlap(100, 10, 105, 10),
            Some((5, 10, 0)),
            "mapping starts inside the payload"
        );
        assert_eq!(
            overlap(105, 10, 100, 10),
            Some((0, 5, 5)),
            "payload starts inside the mapping"
        );
        assert_eq!(overlap(100, 10, 110, 10), None, "adjacent");
        assert_eq!(
            overlap(u32::MAX - 4, 10, 2, 10),
            Some((7, 10, 0)),
            "across the wrap"
        );
        for (seq, start) in [
            (0, 1 << 31),
            (1 << 31, 0),
            (u32::MAX, 1 << 31),
            (7, 7u32.wrapping_add(1 << 31)),
        ] {
            for (n, len) in [(1424, 20_000), (20_000, 1424), (0, 5), (5, 0)] {
                if let Some((from, to, at)) = overlap(seq, n, start, len) {
                    assert!(
                        from <= to && to <= n && at + (to - from) <= len,
                        "{seq} {n} {start} {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_mapping_over_several_out_of_order_segments_is_checked_once_for_every_repeat() {
        let mut d = Direction::default();
        let mut b = Budget::default();
        let k = key(u32::MAX - 10, 300); // wraps around the sequence space
        let all = data(300);
        assert_eq!(d.announce(k, (1, 0), 0.0, &mut b), None);
        assert_eq!(
            d.announce(k, (2, 0), 0.0, &mut b),
            None,
            "a repeat joins the first"
        );
        assert!(
            d.feed(k.start.wrapping_add(200), &all[200..], 100, 0.0, &mut b)
                .is_empty()
        );
        let done = d.feed(k.start, &all[..200], 200, 0.0, &mut b);
        assert_eq!(done.len(), 2);
        assert!(done.iter().all(|r| r.check == Check::Checked(true)));
        assert_eq!(b.used, 0, "memory given back");
        // A retransmitted repeat after completion is answered from the cache.
        assert_eq!(
            d.announce(k, (3, 0), 1.0, &mut b),
            Some(Check::Checked(true))
        );
    }

    #[test]
    fn a_cut_payload_gives_up_and_a_long_stuck_hole_too() {
        let mut d = Direction::default();
        let mut b = Budget::default();
        let k = key(1000, 100);
        assert_eq!(d.announce(k, (1, 0), 0.0, &mut b), None);
        let cut = d.feed(1000, &data(100)[..40], 100, 0.0, &mut b);
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].check, Check::Unknown);

        let k = key(5000, 100);
        assert_eq!(d.announce(k, (2, 0), 0.0, &mut b), None);
        // Only the second half arrives; the stream moves on; a retransmission could still come.
        assert!(d.feed(5050, &data(100)[50..], 50, 0.0, &mut b).is_empty());
        assert!(d.feed(5100, &[0; 10], 10, 1.0, &mut b).is_empty());
        let given_up = d.feed(5110, &[0; 10], 10, 6.0, &mut b);
        assert_eq!(given_up.len(), 1);
        assert_eq!(given_up[0].check, Check::Unknown);
        assert_eq!(b.used, 0);
    }

    #[test]
    fn a_wrong_checksum_is_false_and_room_is_bounded() {
        let mut d = Direction::default();
        let mut b = Budget::default();
        let mut k = key(10, 50);
        k.checksum ^= 1;
        assert_eq!(d.announce(k, (1, 0), 0.0, &mut b), None);
        let r = d.feed(10, &data(50), 50, 0.0, &mut b);
        assert_eq!(r[0].check, Check::Checked(false));
        for i in 0..MAX_PENDING {
            assert_eq!(
                d.announce(
                    key(100_000 + 100 * u32::try_from(i).unwrap(), 10),
                    (9, i),
                    0.0,
                    &mut b
                ),
                None
            );
        }
        assert_eq!(
            d.announce(key(1, 10), (10, 0), 0.0, &mut b),
            Some(Check::Unknown),
            "no more room"
        );
        assert_eq!(d.abandon(u64::MAX, &mut b).len(), MAX_PENDING);
        assert_eq!(b.used, 0);
    }
}
