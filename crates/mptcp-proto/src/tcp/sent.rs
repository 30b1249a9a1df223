//! The retransmission queue: every segment sent and not yet cumulatively acknowledged, with
//! when it was (last) sent and what became of it (in flight, SACKed, lost). Loss recovery reads
//! it (RFC 6675: `pipe` is the bytes in flight, `NextSeg` the first lost segment) and two loss
//! detectors write it:
//!
//! - RFC 6675 §4 `IsLost`: more than `(DupThresh − 1) · SMSS` bytes, or `DupThresh` segments,
//!   SACKed above a segment;
//! - RACK (RFC 8985 §6): a segment is lost when one sent after it (by at least a reordering
//!   window) was delivered, which also finds lost retransmissions, where `IsLost` cannot.
//!
//! It also estimates the delivery rate (draft-cheng-iccrg-delivery-rate-estimation): each
//! segment carries a snapshot of how much had been delivered when it was sent, and the newest
//! segment an acknowledgment delivers gives a [`RateSample`] (what BBR is built on).
//!
//! Positions are 64-bit sequence offsets.

use core::time::Duration;
use std::collections::VecDeque;
use std::time::Instant;

/// RFC 6675's `DupThresh`.
pub const DUP_THRESH: u64 = 3;

/// What became of a sent segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegState {
    /// Believed in the network.
    InFlight,
    /// Believed lost: to be retransmitted.
    Lost,
    /// The receiver reported it with SACK.
    Sacked,
}

/// One transmitted segment `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First sequence offset.
    pub start: u64,
    /// Sequence offset just past it.
    pub end: u64,
    /// When it was last sent.
    pub sent_at: Instant,
    /// Whether it was sent more than once (Karn: no RTT sample from it).
    pub retransmitted: bool,
    /// What became of it.
    pub state: SegState,
    /// The delivery state when it was (last) sent.
    pub tx: TxSnapshot,
    /// Its bytes were counted as delivered: it was SACKed, maybe before a timeout made it
    /// lost again (RFC 6675 §5.1's reneging precaution); its acknowledgment then counts
    /// nothing twice.
    pub counted: bool,
}

/// The connection's delivery state when a segment was sent (the draft's `P.delivered`,
/// `P.delivered_time`, `P.first_sent_time`, `P.is_app_limited`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxSnapshot {
    /// Bytes delivered so far.
    pub delivered: u64,
    /// When the last of them was.
    pub delivered_at: Instant,
    /// When the first segment of the flight it belongs to was sent.
    pub first_sent_at: Instant,
    /// Whether the sender was short of data then.
    pub app_limited: bool,
}

/// A delivery-rate sample: what the newest segment an acknowledgment delivered says of the
/// path's rate (draft-cheng-iccrg-delivery-rate-estimation §3.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSample {
    /// Bytes delivered in all, after this acknowledgment (`C.delivered`).
    pub delivered: u64,
    /// Bytes delivered when that segment was sent (`rs.prior_delivered`).
    pub prior_delivered: u64,
    /// Over how long `delivered - prior_delivered` were delivered: the longer of the send
    /// and acknowledgment intervals, so that neither a burst sent nor ACKs compressed on the
    /// way back make the path look faster than it is.
    pub interval: Duration,
    /// Whether the sender was short of data when that segment left: the rate is then a
    /// lower bound of the path's.
    pub app_limited: bool,
    /// Round trip of that segment, if it was sent once.
    pub rtt: Option<Duration>,
    /// Whether the interval is long enough to give a rate: an interval shorter than the
    /// path's smallest round trip only comes from ACK compression (the draft's §3.3).
    pub valid: bool,
}

impl RateSample {
    /// Bytes per second; `None` when the interval gives no rate.
    #[must_use]
    pub fn rate(&self) -> Option<f64> {
        let secs = self.interval.as_secs_f64();
        (self.valid && secs > 0.0).then(|| (self.delivered - self.prior_delivered) as f64 / secs)
    }
}

/// The sample an acknowledgment is building: its newest delivered segment so far.
#[derive(Debug, Clone, Copy)]
struct Newest {
    sent_at: Instant,
    tx: TxSnapshot,
    rtt: Option<Duration>,
}

impl Segment {
    fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// What an acknowledgment delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Bytes newly acknowledged or SACKed.
    pub bytes: u64,
    /// An RTT sample from the newest segment delivered that was sent once; none from a
    /// cumulative acknowledgment that also covers a retransmission (Karn).
    pub rtt_sample: Option<Duration>,
    /// Whether a retransmitted segment was among those delivered.
    pub retransmission: bool,
}

/// The retransmission queue with RACK's state (RFC 8985 §6.1).
#[derive(Debug, Clone, Default)]
pub struct SentQueue {
    segs: VecDeque<Segment>,
    in_flight: u64,
    lost: u64,
    sacked: u64,
    /// `RACK.xmit_ts` and `RACK.end_seq`: the most recently sent segment that was delivered.
    rack: Option<(Instant, u64)>,
    /// `RACK.rtt`: the RTT of that segment.
    rack_rtt: Duration,
    /// `RACK.fack`: the highest SACKed sequence.
    fack: u64,
    /// `RACK.reordering_seen`.
    reordering_seen: bool,
    /// `C.delivered`: bytes acknowledged or SACKed, each once.
    delivered: u64,
    /// `C.delivered_time`.
    delivered_at: Option<Instant>,
    /// `C.first_sent_time`.
    first_sent_at: Option<Instant>,
    /// `C.app_limited`: while nonzero, segments sent are marked application-limited, until
    /// this many bytes have been delivered.
    app_limited: u64,
    /// The sample the acknowledgment being processed builds.
    newest: Option<Newest>,
}

impl SentQueue {
    /// Bytes in flight (RFC 6675 `pipe`).
    #[must_use]
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Bytes marked lost and not yet retransmitted.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Bytes SACKed.
    #[must_use]
    pub fn sacked(&self) -> u64 {
        self.sacked
    }

    /// Whether nothing is outstanding.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// The last segment sent (highest sequence).
    #[must_use]
    pub fn last(&self) -> Option<&Segment> {
        self.segs.back()
    }

    /// The first segment (in sequence) believed in the network: neither acknowledged nor
    /// SACKed, nor known lost and waiting to be sent again. The receiver cannot report one
    /// known lost until it is sent again. A retransmitted one carries its resending time, so
    /// segments after it may have left earlier.
    #[must_use]
    pub fn oldest_in_flight(&self) -> Option<&Segment> {
        self.segs.iter().find(|s| s.state == SegState::InFlight)
    }

    /// The first segment marked lost: RFC 6675 `NextSeg` rule 1.
    #[must_use]
    pub fn first_lost(&self) -> Option<&Segment> {
        if self.lost == 0 {
            return None;
        }
        self.segs.iter().find(|s| s.state == SegState::Lost)
    }

    /// Whether RACK saw reordering.
    #[must_use]
    pub fn reordering_seen(&self) -> bool {
        self.reordering_seen
    }

    /// Bytes delivered (acknowledged or SACKed) since the start, each counted once.
    #[must_use]
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The sender has nothing more to send and the window has room: what is sent from now
    /// until all in flight is delivered is application-limited (the draft's §3.4).
    pub fn mark_app_limited(&mut self) {
        self.app_limited = (self.delivered + self.in_flight).max(1);
    }

    /// The delivery state for a segment sent at `now`; a flight that starts after
    /// everything was acknowledged starts its intervals at `now` (the draft's §3.2: `SND.NXT
    /// == SND.UNA`, Linux's `!packets_out`). Segments marked lost or SACKed are not
    /// acknowledged: a retransmission after a timeout keeps the time of the last delivery, so
    /// its sample spans the outage.
    fn snapshot(&mut self, now: Instant) -> TxSnapshot {
        if self.segs.is_empty() {
            self.first_sent_at = Some(now);
            self.delivered_at = Some(now);
        }
        TxSnapshot {
            delivered: self.delivered,
            delivered_at: self.delivered_at.unwrap_or(now),
            first_sent_at: self.first_sent_at.unwrap_or(now),
            app_limited: self.app_limited != 0,
        }
    }

    /// The rate sample of the acknowledgment just processed (by [`SentQueue::ack`] and
    /// [`SentQueue::sack`]), if it delivered anything; one whose interval is shorter than
    /// `min_rtt` gives no rate.
    pub fn take_rate_sample(&mut self, min_rtt: Option<Duration>) -> Option<RateSample> {
        let n = self.newest.take()?;
        if self.app_limited != 0 && self.delivered > self.app_limited {
            self.app_limited = 0;
        }
        let delivered_at = self.delivered_at?;
        let send = n.sent_at.saturating_duration_since(n.tx.first_sent_at);
        let ack = delivered_at.saturating_duration_since(n.tx.delivered_at);
        let interval = send.max(ack);
        Some(RateSample {
            delivered: self.delivered,
            prior_delivered: n.tx.delivered,
            interval,
            app_limited: n.tx.app_limited,
            rtt: n.rtt,
            valid: min_rtt.is_none_or(|m| interval >= m),
        })
    }

    fn count(&mut self, s: &Segment, add: bool) {
        let n = s.len();
        let c = match s.state {
            SegState::InFlight => &mut self.in_flight,
            SegState::Lost => &mut self.lost,
            SegState::Sacked => &mut self.sacked,
        };
        if add {
            *c += n;
        } else {
            *c -= n;
        }
    }

    fn set_state(&mut self, i: usize, state: SegState) {
        let s = self.segs[i];
        if s.state == state {
            return;
        }
        self.count(&s, false);
        self.segs[i].state = state;
        let s = self.segs[i];
        self.count(&s, true);
    }

    /// Records new data sent at `now`: `[start, end)` follows the last segment.
    pub fn push(&mut self, start: u64, end: u64, now: Instant) {
        debug_assert!(self.segs.back().is_none_or(|l| l.end == start));
        let tx = self.snapshot(now);
        let s = Segment {
            start,
            end,
            sent_at: now,
            retransmitted: false,
            state: SegState::InFlight,
            tx,
            counted: false,
        };
        self.count(&s, true);
        self.segs.push_back(s);
    }

    /// Index of the segment holding `offset`.
    fn index_of(&self, offset: u64) -> Option<usize> {
        let i = self.segs.partition_point(|s| s.end <= offset);
        (i < self.segs.len() && self.segs[i].start <= offset).then_some(i)
    }

    /// Makes `offset` a segment boundary (splitting the segment that spans it).
    fn split_at(&mut self, offset: u64) {
        let Some(i) = self.index_of(offset) else {
            return;
        };
        let s = self.segs[i];
        if s.start == offset {
            return;
        }
        self.segs[i].end = offset;
        self.segs.insert(i + 1, Segment { start: offset, ..s });
    }

    /// Records a retransmission of `[start, end)` at `now`: those segments are in flight
    /// again.
    pub fn retransmitted(&mut self, start: u64, end: u64, now: Instant) {
        self.split_at(start);
        self.split_at(end);
        let Some(mut i) = self.index_of(start) else {
            return;
        };
        let tx = self.snapshot(now);
        while i < self.segs.len() && self.segs[i].start < end {
            if self.segs[i].state != SegState::Sacked {
                self.set_state(i, SegState::InFlight);
            }
            self.segs[i].tx = tx;
            self.segs[i].sent_at = now;
            self.segs[i].retransmitted = true;
            i += 1;
        }
    }

    /// The cumulative acknowledgment reached `una`.
    pub fn ack(&mut self, una: u64, now: Instant, min_rtt: Option<Duration>) -> Delivered {
        let mut d = Delivered::default();
        self.split_at(una);
        while let Some(s) = self.segs.front().copied() {
            if s.end > una {
                break;
            }
            self.segs.pop_front();
            self.count(&s, false);
            if s.state != SegState::Sacked {
                d.bytes += s.len();
                self.on_delivered(&s, now, min_rtt, &mut d);
            }
        }
        if d.retransmission {
            // Karn (RFC 6298 §3), as Linux applies it: an acknowledgment that covers a
            // retransmission may have been sent for it, however old the segments sent once
            // that it also covers (held behind a hole through an outage, they would give a
            // round trip of seconds).
            d.rtt_sample = None;
        }
        d
    }

    /// The receiver SACKed `[start, end)`: every segment the block covers whole is SACKed.
    /// Segments are never split at a block's edges (the peer chooses those): a receiver
    /// sending tiny blocks must not be able to multiply the queue's entries.
    pub fn sack(
        &mut self,
        start: u64,
        end: u64,
        now: Instant,
        min_rtt: Option<Duration>,
    ) -> Delivered {
        let mut d = Delivered::default();
        // The first segment that starts at or after `start`.
        let mut i = self.segs.partition_point(|s| s.start < start);
        let fack = self.fack;
        while i < self.segs.len() && self.segs[i].end <= end {
            let s = self.segs[i];
            if s.state != SegState::Sacked {
                self.set_state(i, SegState::Sacked);
                self.segs[i].counted = true;
                d.bytes += s.len();
                // RFC 8985 §6.2 step 2: delivered below the highest SACKed sequence without
                // being retransmitted: the network reordered.
                if s.end < fack && !s.retransmitted {
                    self.reordering_seen = true;
                }
                self.on_delivered(&s, now, min_rtt, &mut d);
                self.fack = self.fack.max(s.end);
            }
            i += 1;
        }
        d
    }

    /// RFC 8985 §6.2 step 1: the newest delivered segment becomes `RACK.segment`.
    fn on_delivered(
        &mut self,
        s: &Segment,
        now: Instant,
        min_rtt: Option<Duration>,
        d: &mut Delivered,
    ) {
        let rtt = now.saturating_duration_since(s.sent_at);
        // The draft's §3.3 `UpdateRateSample`: the newest segment sent gives the sample. A
        // segment SACKed before a timeout forgot it was counted then.
        if !s.counted {
            self.delivered += s.len();
            self.delivered_at = Some(now);
        }
        let newest = !s.counted
            && self.newest.is_none_or(|n| {
                s.sent_at > n.sent_at
                    || (s.sent_at == n.sent_at && s.tx.delivered >= n.tx.delivered)
            });
        if newest {
            self.newest = Some(Newest {
                sent_at: s.sent_at,
                tx: s.tx,
                rtt: (!s.retransmitted).then_some(rtt),
            });
            self.first_sent_at = Some(s.sent_at);
        }
        if s.retransmitted {
            d.retransmission = true;
            // An ACK faster than the path's RTT is for the original, not this retransmission.
            if min_rtt.is_some_and(|m| rtt < m) {
                return;
            }
        } else {
            d.rtt_sample = Some(rtt);
        }
        let newer = self
            .rack
            .is_none_or(|(t, e)| s.sent_at > t || (s.sent_at == t && s.end > e));
        if newer {
            self.rack = Some((s.sent_at, s.end));
            self.rack_rtt = rtt;
        }
    }

    /// RACK's reordering window (RFC 8985 §6.2 step 4): none once SACKs show a loss without
    /// reordering, else a quarter of the smallest RTT, at most the smoothed RTT.
    #[must_use]
    pub fn reordering_window(
        &self,
        in_recovery: bool,
        min_rtt: Duration,
        srtt: Duration,
        mss: u64,
    ) -> Duration {
        if !self.reordering_seen && (in_recovery || self.sacked >= DUP_THRESH * mss) {
            return Duration::ZERO;
        }
        (min_rtt / 4).min(srtt)
    }

    /// RACK loss detection (RFC 8985 §6.2 step 5): marks lost every segment in flight that
    /// was sent before `RACK.segment` and has been out longer than `RACK.rtt + reo_wnd`.
    /// Returns the bytes newly lost and when to look again for those not yet overdue.
    pub fn detect_rack(&mut self, now: Instant, reo_wnd: Duration) -> (u64, Option<Instant>) {
        let Some((rack_t, rack_end)) = self.rack else {
            return (0, None);
        };
        let mut lost = 0;
        let mut timer: Option<Instant> = None;
        for i in 0..self.segs.len() {
            let s = self.segs[i];
            let before = s.sent_at < rack_t || (s.sent_at == rack_t && s.end <= rack_end);
            if !before {
                // Segments are in sequence order; first transmissions also in time order. A
                // later segment sent once was sent after this one, so nothing beyond can be
                // older than RACK.segment unless it was retransmitted.
                if !s.retransmitted {
                    break;
                }
                continue;
            }
            if s.state != SegState::InFlight {
                continue;
            }
            let deadline = s.sent_at + self.rack_rtt + reo_wnd;
            if deadline <= now {
                self.set_state(i, SegState::Lost);
                lost += s.len();
            } else {
                timer = Some(timer.map_or(deadline, |t| t.min(deadline)));
            }
        }
        (lost, timer)
    }

    /// RFC 6675 §4 `IsLost` over the queue: every segment in flight below the point above
    /// which more than `(DupThresh − 1) · SMSS` bytes or `DupThresh` segments are SACKed is
    /// lost. Returns the bytes newly lost.
    pub fn detect_dupthresh(&mut self, mss: u64) -> u64 {
        if self.sacked == 0 {
            return 0;
        }
        let mut bytes = 0;
        let mut count = 0;
        let mut cut = None;
        for i in (0..self.segs.len()).rev() {
            let s = self.segs[i];
            if s.state == SegState::Sacked {
                bytes += s.len();
                count += 1;
                if bytes > (DUP_THRESH - 1) * mss || count >= DUP_THRESH {
                    cut = Some(i);
                    break;
                }
            }
        }
        let Some(cut) = cut else { return 0 };
        let mut lost = 0;
        for i in 0..cut {
            if self.segs[i].state == SegState::InFlight && !self.segs[i].retransmitted {
                self.set_state(i, SegState::Lost);
                lost += self.segs[i].len();
            }
        }
        lost
    }

    /// Marks the first segment that is not SACKed lost (NewReno's fast retransmit, a tail
    /// loss probe's repair).
    pub fn mark_first_lost(&mut self) -> bool {
        if let Some(i) = self.segs.iter().position(|s| s.state != SegState::Sacked) {
            self.set_state(i, SegState::Lost);
            return true;
        }
        false
    }

    /// After a retransmission timeout every segment not SACKed is lost (RFC 5681 §3.1's
    /// going back N, skipping what the receiver holds); with `forget_sacks` (the receiver may
    /// have reneged, RFC 2018 §8) the SACKed ones too.
    pub fn mark_all_lost(&mut self, forget_sacks: bool) {
        for i in 0..self.segs.len() {
            if self.segs[i].state == SegState::InFlight
                || (forget_sacks && self.segs[i].state == SegState::Sacked)
            {
                self.set_state(i, SegState::Lost);
            }
        }
        if forget_sacks {
            self.fack = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u64 = 100;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Ten segments of 100 bytes sent 1 ms apart from `t0`.
    fn queue(t0: Instant) -> SentQueue {
        let mut q = SentQueue::default();
        for i in 0..10 {
            q.push(1 + i * MSS, 1 + (i + 1) * MSS, t0 + ms(i));
        }
        q
    }

    #[test]
    fn acks_and_sacks_move_bytes_out_of_flight() {
        let t0 = Instant::now();
        let mut q = queue(t0);
        assert_eq!(q.in_flight(), 1000);
        let d = q.ack(201, t0 + ms(50), None);
        assert_eq!(d.bytes, 200);
        assert_eq!(
            d.rtt_sample,
            Some(ms(49)),
            "from the newest segment acknowledged"
        );
        let d = q.sack(401, 601, t0 + ms(52), None);
        assert_eq!((d.bytes, q.sacked(), q.in_flight()), (200, 200, 600));
        // A cumulative ACK over SACKed bytes delivers only the rest.
        let d = q.ack(601, t0 + ms(53), None);
        assert_eq!((d.bytes, q.sacked(), q.in_flight()), (200, 0, 400));
    }

    /// The receiver's next report is due for the oldest segment still in the network: not one
    /// SACKed, nor one known lost before it is sent again (then it is, from its new time).
    #[test]
    fn the_oldest_in_flight_skips_what_was_sacked_or_is_known_lost() {
        let t0 = Instant::now();
        let mut q = queue(t0);
        assert_eq!(q.oldest_in_flight().map(|s| s.start), Some(1));
        q.sack(101, 401, t0 + ms(40), None);
        assert!(q.mark_first_lost());
        assert_eq!(q.first_lost().map(|s| s.start), Some(1));
        let oldest = q.oldest_in_flight().unwrap();
        assert_eq!((oldest.start, oldest.sent_at), (401, t0 + ms(4)));
        q.retransmitted(1, 101, t0 + ms(45));
        let oldest = q.oldest_in_flight().unwrap();
        assert_eq!((oldest.start, oldest.sent_at), (1, t0 + ms(45)));
        q.mark_all_lost(false);
        assert!(
            q.oldest_in_flight().is_none(),
            "nothing is due while all wait"
        );
    }

    #[test]
    fn an_ack_that_covers_a_retransmission_gives_no_rtt_sample() {
        let t0 = Instant::now();
        let mut q = queue(t0);
        // An outage: the first segment goes again 9 s later and fills the receiver's hole;
        // the ACK also covers segments sent once, 9 s ago.
        q.retransmitted(1, 101, t0 + ms(9_000));
        let d = q.ack(501, t0 + ms(9_020), None);
        assert_eq!(d.bytes, 500);
        assert!(d.retransmission);
        assert_eq!(d.rtt_sample, None, "Karn: not 9 s");
        // The next ACK, for segments sent once only, measures again (from the newest).
        q.push(1001, 1101, t0 + ms(9_010));
        let d = q.ack(1101, t0 + ms(9_030), None);
        assert_eq!(d.rtt_sample, Some(ms(20)));
    }

    #[test]
    fn rfc6675_marks_a_hole_lost_below_three_sacked_segments() {
        let t0 = Instant::now();
        let mut q = queue(t0);
        q.sack(101, 301, t0 + ms(40), None);
        assert_eq!(q.detect_dupthresh(MSS), 0, "two segments SACKed above");
        q.sack(301, 401, t0 + ms(41), None);
        assert_eq!(q.detect_dupthresh(MSS), 100);
        assert_eq!(q.first_lost().map(|s| s.start), Some(1));
        assert_eq!(q.in_flight(), 1000 - 300 - 100);
    }

    #[test]
    fn rack_marks_segments_sent_before_a_delivered_one_lost_after_the_window() {
        let t0 = Instant::now();
        let mut q = queue(t0);
        // Segment 5 (sent at 5 ms) is SACKed 45 ms later: RACK.rtt = 45 ms.
        q.sack(501, 601, t0 + ms(50), None);
        let (lost, timer) = q.detect_rack(t0 + ms(50), ms(10));
        // Segments 0..4 were sent at 0..4 ms: deadlines 55..59 ms.
        assert_eq!(lost, 0);
        assert_eq!(timer, Some(t0 + ms(55)));
        let (lost, timer) = q.detect_rack(t0 + ms(57), ms(10));
        assert_eq!(lost, 300, "segments 0, 1, 2");
        assert_eq!(timer, Some(t0 + ms(58)));
        // Later segments (6..9) were sent after segment 5: not lost.
        let (lost, _) = q.detect_rack(t0 + ms(500), ms(10));
        assert_eq!(lost, 200);
        assert_eq!(q.lost(), 500);
    }

    #[test]
    fn rack_finds_a_lost_retransmission() {
        let t0 = Instant::now();
        let mut q = queue(t0);
        q.sack(201, 1001, t0 + ms(40), None);
        q.detect_dupthresh(MSS);
        assert_eq!(q.lost(), 200);
        // Both lost segments are retransmitted at 41 ms; the first retransmission is lost too.
        q.retransmitted(1, 201, t0 + ms(41));
        assert_eq!((q.lost(), q.in_flight()), (0, 200));
        // New data sent at 42 ms is SACKed at 82 ms.
        q.push(1001, 1101, t0 + ms(42));
        q.sack(1001, 1101, t0 + ms(82), None);
        let (lost, _) = q.detect_rack(t0 + ms(82), Duration::ZERO);
        assert_eq!(
            lost, 200,
            "the retransmissions, sent before, are lost again"
        );
        assert!(!q.reordering_seen());
    }

    #[test]
    fn reordering_is_seen_when_a_segment_is_delivered_below_the_highest_sack() {
        let t0 = Instant::now();
        let mut q = queue(t0);
        q.sack(501, 601, t0 + ms(40), None);
        assert!(!q.reordering_seen());
        q.sack(301, 401, t0 + ms(41), None);
        assert!(q.reordering_seen());
        assert_eq!(
            q.reordering_window(true, ms(40), ms(50), MSS),
            ms(10),
            "a quarter of the smallest RTT once reordering was seen"
        );
    }

    #[test]
    fn retransmissions_and_acks_split_segments_at_their_edges() {
        let t0 = Instant::now();
        let mut q = queue(t0);
        q.mark_all_lost(false);
        assert_eq!(q.lost(), 1000);
        q.retransmitted(1, 51, t0 + ms(300));
        assert_eq!((q.lost(), q.in_flight()), (950, 50));
        assert_eq!(q.first_lost().map(|s| (s.start, s.end)), Some((51, 101)));
        let d = q.ack(76, t0 + ms(350), None);
        assert_eq!(d.bytes, 75);
        assert_eq!(q.lost() + q.in_flight() + q.sacked(), 1000 - 75);
    }

    #[test]
    fn a_rate_sample_is_what_was_delivered_over_the_longer_interval() {
        let t0 = Instant::now();
        // Ten segments sent over 9 ms, acknowledged together 100 ms after the first.
        let mut q = queue(t0);
        q.ack(1 + 10 * MSS, t0 + ms(100), None);
        let rs = q.take_rate_sample(Some(ms(50))).unwrap();
        assert_eq!((rs.delivered, rs.prior_delivered), (10 * MSS, 0));
        // The acknowledgment interval (100 ms since the flight began) is the longer one.
        assert_eq!(rs.interval, ms(100));
        assert_eq!(rs.rate(), Some(10.0 * MSS as f64 / 0.1));
        assert!(!rs.app_limited);
        assert!(
            q.take_rate_sample(None).is_none(),
            "one sample per acknowledgment"
        );
        // The next flight, sent at once in a burst and SACKed 40 ms later then acknowledged:
        // the send interval is nothing, the acknowledgment interval 40 ms.
        for i in 10..20 {
            q.push(1 + i * MSS, 1 + (i + 1) * MSS, t0 + ms(100));
        }
        q.sack(1 + 15 * MSS, 1 + 20 * MSS, t0 + ms(140), None);
        q.ack(1 + 20 * MSS, t0 + ms(140), None);
        let rs = q.take_rate_sample(Some(ms(50))).unwrap();
        assert_eq!((rs.delivered, rs.prior_delivered), (20 * MSS, 10 * MSS));
        assert_eq!(rs.interval, ms(40));
        assert!(
            !rs.valid,
            "shorter than the smallest round trip: ACK compression"
        );
        assert_eq!(rs.rate(), None);
        assert_eq!(q.delivered(), 20 * MSS, "the SACKed bytes counted once");
    }

    #[test]
    fn bytes_sacked_before_a_timeout_are_delivered_once() {
        let t0 = Instant::now();
        let mut q = queue(t0);
        q.sack(1 + 5 * MSS, 1 + 10 * MSS, t0 + ms(100), None);
        assert_eq!(q.delivered(), 5 * MSS);
        q.take_rate_sample(None);
        // Two timeouts: the second forgets the SACKs; everything is sent again.
        q.mark_all_lost(false);
        q.mark_all_lost(true);
        q.retransmitted(1, 1 + 10 * MSS, t0 + ms(1000));
        q.ack(1 + 10 * MSS, t0 + ms(1100), None);
        assert_eq!(q.delivered(), 10 * MSS);
        let rs = q.take_rate_sample(None).unwrap();
        // The retransmission kept the last delivery's time: the sample spans the outage.
        assert_eq!(rs.prior_delivered, 5 * MSS);
        assert_eq!(rs.interval, ms(1000));
    }

    #[test]
    fn segments_sent_while_short_of_data_give_application_limited_samples() {
        let t0 = Instant::now();
        let mut q = SentQueue::default();
        q.push(1, 1 + MSS, t0);
        q.mark_app_limited();
        q.push(1 + MSS, 1 + 2 * MSS, t0 + ms(1));
        q.ack(1 + MSS, t0 + ms(100), None);
        assert!(!q.take_rate_sample(None).unwrap().app_limited);
        q.ack(1 + 2 * MSS, t0 + ms(101), None);
        assert!(q.take_rate_sample(None).unwrap().app_limited);
        // Everything in flight at the mark delivered: what is sent now is not limited.
        q.push(1 + 2 * MSS, 1 + 3 * MSS, t0 + ms(102));
        q.ack(1 + 3 * MSS, t0 + ms(200), None);
        assert!(!q.take_rate_sample(None).unwrap().app_limited);
    }
}
