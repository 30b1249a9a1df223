//! HyStart++ (RFC 9406): leave slow start when the round-trip time grows, before the queue
//! overflows, instead of after a burst of losses.
//!
//! Slow start is split into rounds (a round ends when the data that was outstanding at its
//! start is acknowledged). When a round's smallest RTT exceeds the previous round's by
//! `clamp(min / 8, 4 ms, 16 ms)`, the window grows four times more slowly (Conservative Slow
//! Start); if the RTT falls back, slow start resumes; after five rounds of CSS, congestion
//! avoidance begins.

use core::time::Duration;

const MIN_RTT_THRESH: Duration = Duration::from_millis(4);
const MAX_RTT_THRESH: Duration = Duration::from_millis(16);
const N_RTT_SAMPLE: u32 = 8;
const CSS_GROWTH_DIVISOR: u64 = 4;
const CSS_ROUNDS: u32 = 5;

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
}

impl HyStart {
    /// Feeds one ACK in slow start: `acked_to` the highest offset acknowledged, `sent_to` the
    /// highest sent, `rtt` this ACK's sample.
    pub fn on_ack(&mut self, acked_to: u64, sent_to: u64, rtt: Option<Duration>) -> Phase {
        let round_over = self.window_end.is_none_or(|end| acked_to >= end);
        if round_over {
            self.window_end = Some(sent_to);
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
        if let Some(rtt) = rtt {
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs one round trip of ten ACKs with RTT `rtt`, acknowledging `from..end` while a
    /// window of `end - from` stays in flight.
    fn round(h: &mut HyStart, from: u64, end: u64, rtt: Duration) -> Phase {
        let mut p = Phase::SlowStart;
        for i in 0..10 {
            let acked = from + (end - from) * (i + 1) / 10;
            p = h.on_ack(acked, acked + (end - from), Some(rtt));
            if p == Phase::Exit {
                break;
            }
        }
        p
    }

    #[test]
    fn a_steady_rtt_stays_in_slow_start() {
        let mut h = HyStart::default();
        for r in 0..6 {
            assert_eq!(
                round(&mut h, r * 1000, (r + 1) * 1000, ms(50)),
                Phase::SlowStart
            );
        }
    }

    #[test]
    fn a_growing_rtt_slows_then_ends_slow_start_after_five_rounds() {
        let mut h = HyStart::default();
        round(&mut h, 0, 1000, ms(50));
        round(&mut h, 1000, 2000, ms(50));
        // 50 ms / 8 = 6.25 ms threshold: 57 ms is over it.
        assert_eq!(round(&mut h, 2000, 3000, ms(57)), Phase::Conservative(4));
        let mut last = Phase::SlowStart;
        for r in 3..9 {
            last = round(&mut h, r * 1000, (r + 1) * 1000, ms(58));
            if last == Phase::Exit {
                break;
            }
        }
        assert_eq!(last, Phase::Exit);
    }

    #[test]
    fn an_rtt_that_falls_back_resumes_slow_start() {
        let mut h = HyStart::default();
        round(&mut h, 0, 1000, ms(50));
        round(&mut h, 1000, 2000, ms(50));
        assert_eq!(round(&mut h, 2000, 3000, ms(60)), Phase::Conservative(4));
        assert_eq!(round(&mut h, 3000, 4000, ms(51)), Phase::SlowStart);
    }
}
