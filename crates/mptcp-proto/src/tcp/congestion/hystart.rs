//! HyStart++ (RFC 9406): leave slow start when the round-trip time grows, before the queue
//! overflows, instead of after a burst of losses; and HyStart's ACK train (Ha and Rhee,
//! "Taming the elephants", 2011; Linux's `hystart_detect` bit 1), which sees the pipe full
//! before the queue does.
//!
//! Slow start is split into rounds (a round ends when the data that was outstanding at its
//! start is acknowledged).
//! - **Delay** (RFC 9406 §4.2): when a round's smallest RTT exceeds the previous round's by
//!   `clamp(min / 8, 4 ms, 16 ms)`, the window grows four times more slowly (Conservative Slow
//!   Start); if the RTT falls back, slow start resumes; after five rounds of CSS, congestion
//!   avoidance begins.
//! - **ACK train** (as Linux's CUBIC does): ACKs that come back to back (no gap over
//!   [`ACK_TRAIN_GAP`]) are spaced by the bottleneck. An unpaced sender sends each round as a
//!   burst that the bottleneck spreads over `window / rate`, so a train longer than half the
//!   path's smallest round trip means the next doubling passes the bandwidth-delay product:
//!   slow start ends at once (`ssthresh = cwnd`). A paced sender spreads a round over about
//!   half the round trip by itself, so its train is judged against the whole round trip, as
//!   Linux judges a paced socket's.
//!
//! Why both: the delay test fires a round late. The queue only forms within the round whose
//! window passes the bandwidth-delay product, and that round's first ACKs, which the round
//! minimum is taken from, still see the base RTT; the round after doubles the window again
//! and, at a queue of one bandwidth-delay product or less, overflows it in a burst of losses.
//!
//! Limits, Linux's too: with a gap of 2 ms, a line below about 10 Mbit/s whose receiver
//! acknowledges every second segment forms no train; and a paced sender's train outlasts the
//! round trip only about when a queue of one bandwidth-delay product fills. A gap scaled to
//! the window's pace was tried: it ended slow start too early on long paced paths (10 Mbit/s
//! at 200 ms filled to 90 %).

use core::time::Duration;
use std::time::Instant;

use super::Ack;

const MIN_RTT_THRESH: Duration = Duration::from_millis(4);
const MAX_RTT_THRESH: Duration = Duration::from_millis(16);
const N_RTT_SAMPLE: u32 = 8;
const CSS_GROWTH_DIVISOR: u64 = 4;
const CSS_ROUNDS: u32 = 5;
/// Largest gap between two ACKs of one train (Linux's `hystart_ack_delta_us`).
pub const ACK_TRAIN_GAP: Duration = Duration::from_millis(2);
/// The ACK train is only judged from this window on, in segments (Linux's
/// `hystart_low_window`): below it a round is too short to tell.
const ACK_TRAIN_LOW_WINDOW: u64 = 16;
/// Added to the train's threshold for ACKs that a receiver delays (Linux adds up to 1 ms).
const ACK_TRAIN_SLACK: Duration = Duration::from_millis(1);

/// What HyStart++ says about the next window increase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Ordinary slow start.
    SlowStart,
    /// Conservative slow start: divide the increase by this.
    Conservative(u64),
    /// Leave slow start now (`ssthresh = cwnd`).
    Exit,
}

/// HyStart++'s state for one connection.
#[derive(Debug, Clone, Default)]
pub struct HyStart {
    window_end: Option<u64>,
    last_round_min: Option<Duration>,
    current_round_min: Option<Duration>,
    samples: u32,
    css_baseline: Option<Duration>,
    css_rounds: u32,
    /// When this round's first ACK came.
    round_start: Option<Instant>,
    /// The last ACK of this round's train.
    train_end: Option<Instant>,
}

impl HyStart {
    /// Feeds one ACK in slow start, with the window `cwnd` (bytes) it found.
    pub fn on_ack(&mut self, ack: &Ack, cwnd: u64) -> Phase {
        // A round ends when what had been sent when it began is acknowledged. Linux's CUBIC
        // waits for an ACK past it (`after(snd_una, end_seq)`), which starts the next round,
        // and its ACK train, at the next flight's first ACK; here that moved the simulator's
        // MPTCP subflows (a path at a shared bottleneck starved) and is not done yet.
        let round_over = self.window_end.is_none_or(|end| ack.acked_to >= end);
        if round_over {
            self.window_end = Some(ack.sent_to);
            self.round_start = Some(ack.now);
            self.train_end = Some(ack.now);
            self.last_round_min = self.current_round_min.or(self.last_round_min);
            self.current_round_min = None;
            self.samples = 0;
            if self.css_baseline.is_some() {
                self.css_rounds += 1;
                if self.css_rounds >= CSS_ROUNDS {
                    return Phase::Exit;
                }
            }
        }
        if self.ack_train_full(ack, cwnd) {
            return Phase::Exit;
        }
        if let Some(rtt) = ack.rtt_sample {
            self.samples += 1;
            self.current_round_min = Some(self.current_round_min.map_or(rtt, |m| m.min(rtt)));
        }
        let (Some(cur), Some(last)) = (self.current_round_min, self.last_round_min) else {
            return self.phase();
        };
        match self.css_baseline {
            None if self.samples >= N_RTT_SAMPLE => {
                let thresh = (last / 8).clamp(MIN_RTT_THRESH, MAX_RTT_THRESH);
                if cur >= last + thresh {
                    self.css_baseline = Some(cur);
                    self.css_rounds = 0;
                }
            }
            Some(baseline) if cur < baseline => {
                // The RTT rise was spurious: back to slow start.
                self.css_baseline = None;
                self.css_rounds = 0;
            }
            _ => {}
        }
        self.phase()
    }

    /// Extends this round's ACK train with `ack` and tells whether it now spans more than the
    /// pipe holds.
    fn ack_train_full(&mut self, ack: &Ack, cwnd: u64) -> bool {
        let (Some(start), Some(end)) = (self.round_start, self.train_end) else {
            return false;
        };
        if ack.rtt_sample.is_none() {
            // The ACK of a retransmission (Karn's rule): after a timeout such ACKs come back
            // to back as the holes fill, whatever the pipe; Linux leaves them out too.
            return false;
        }
        if ack.now.saturating_duration_since(end) > ACK_TRAIN_GAP {
            // The train broke: this round's ACKs are not back to back.
            return false;
        }
        self.train_end = Some(ack.now);
        if cwnd < ACK_TRAIN_LOW_WINDOW * ack.mss {
            return false;
        }
        let pipe = if ack.paced {
            ack.min_rtt
        } else {
            ack.min_rtt / 2
        };
        ack.now.saturating_duration_since(start) > pipe + ACK_TRAIN_SLACK
    }

    fn phase(&self) -> Phase {
        if self.css_baseline.is_some() {
            Phase::Conservative(CSS_GROWTH_DIVISOR)
        } else {
            Phase::SlowStart
        }
    }

    /// Starts over (after a timeout slow start begins anew).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::congestion::test_support::ack;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A slow start driven one round at a time, with a clock.
    struct Rounds {
        h: HyStart,
        /// When the current round's flight began to come back.
        begin: Instant,
        /// Bytes acknowledged so far.
        acked: u64,
        /// The window, bytes (MSS 1000).
        cwnd: u64,
        paced: bool,
    }

    impl Rounds {
        fn new() -> Self {
            Self {
                h: HyStart::default(),
                begin: Instant::now(),
                acked: 0,
                cwnd: 100_000,
                paced: true,
            }
        }

        /// One round: the ACKs of a flight of `n` segments of 1000 bytes come back `gap`
        /// apart, each with RTT `rtt`, while a flight's worth more is in flight. The next
        /// flight's ACKs begin one round trip after this one's, or at once if this one's ACKs
        /// took longer: a train shorter than the round trip is followed by a gap.
        fn round(&mut self, n: u64, gap: Duration, rtt: Duration) -> Phase {
            let end = self.acked + n * 1000;
            let mut now = self.begin;
            let mut p = Phase::SlowStart;
            for _ in 0..n {
                now += gap;
                self.acked += 1000;
                let mut a = ack(now, 1000, end - self.acked + 1000);
                a.rtt_sample = Some(rtt);
                a.min_rtt = ms(50);
                a.acked_to = self.acked;
                a.sent_to = self.acked + n * 1000;
                a.paced = self.paced;
                p = self.h.on_ack(&a, self.cwnd);
                if p == Phase::Exit {
                    break;
                }
            }
            #[expect(clippy::cast_possible_truncation, reason = "a few ACKs")]
            let train = gap * n as u32;
            self.begin += rtt.max(train);
            p
        }

        /// A round of ten ACKs spread over a 50 ms round trip whose RTT is `rtt`: never a
        /// train.
        fn spread(&mut self, rtt: Duration) -> Phase {
            self.round(10, ms(5), rtt)
        }
    }

    #[test]
    fn a_steady_rtt_stays_in_slow_start() {
        let mut r = Rounds::new();
        for _ in 0..6 {
            assert_eq!(r.spread(ms(50)), Phase::SlowStart);
        }
    }

    #[test]
    fn a_growing_rtt_slows_then_ends_slow_start_after_five_rounds() {
        let mut r = Rounds::new();
        r.spread(ms(50));
        r.spread(ms(50));
        // 50 ms / 8 = 6.25 ms threshold: 57 ms is over it.
        assert_eq!(r.spread(ms(57)), Phase::Conservative(4));
        let mut last = Phase::SlowStart;
        for _ in 3..9 {
            last = r.spread(ms(58));
            if last == Phase::Exit {
                break;
            }
        }
        assert_eq!(last, Phase::Exit);
    }

    #[test]
    fn an_rtt_that_falls_back_resumes_slow_start() {
        let mut r = Rounds::new();
        r.spread(ms(50));
        r.spread(ms(50));
        assert_eq!(r.spread(ms(60)), Phase::Conservative(4));
        assert_eq!(r.spread(ms(51)), Phase::SlowStart);
    }

    #[test]
    fn an_ack_train_longer_than_the_round_trip_ends_slow_start_at_once() {
        let mut r = Rounds::new();
        // 40 ACKs a millisecond apart: 40 ms of a 50 ms pipe.
        assert_eq!(r.round(40, ms(1), ms(50)), Phase::SlowStart);
        // 80: the train outlasts the pipe while the RTT has not yet risen.
        assert_eq!(r.round(80, ms(1), ms(50)), Phase::Exit);
    }

    #[test]
    fn an_unpaced_train_is_judged_against_half_the_round_trip() {
        let mut r = Rounds::new();
        r.paced = false;
        assert_eq!(r.round(20, ms(1), ms(50)), Phase::SlowStart);
        assert_eq!(r.round(30, ms(1), ms(50)), Phase::Exit);
    }

    #[test]
    fn the_acks_of_retransmissions_are_no_train() {
        let mut r = Rounds::new();
        r.round(10, ms(5), ms(50));
        // Back to back as holes fill after a timeout, but without an RTT sample (Karn).
        let end = r.acked + 100_000;
        let mut now = r.begin;
        for _ in 0..100 {
            now += ms(1);
            r.acked += 1000;
            let mut a = ack(now, 1000, end - r.acked + 1000);
            a.rtt_sample = None;
            a.min_rtt = ms(50);
            a.acked_to = r.acked;
            a.sent_to = end;
            assert_eq!(r.h.on_ack(&a, r.cwnd), Phase::SlowStart);
        }
    }

    #[test]
    fn a_broken_train_or_a_small_window_does_not_end_slow_start() {
        let mut r = Rounds::new();
        // ACKs 3 ms apart are not one train.
        assert_eq!(r.round(40, ms(3), ms(50)), Phase::SlowStart);
        // Below 16 segments a train is not judged.
        r.cwnd = 15_000;
        assert_eq!(r.round(80, ms(1), ms(50)), Phase::SlowStart);
    }
}
