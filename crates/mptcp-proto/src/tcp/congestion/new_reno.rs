//! NewReno (RFC 5681 with RFC 6582's recovery; the window reductions here, the retransmissions
//! in the connection): slow start grows the window by the bytes acknowledged (at most two
//! segments per ACK, RFC 3465's `L = 2`), congestion avoidance by one segment per window.

use std::time::Instant;

use super::hystart::HyStart;
use super::{Ack, Controller, half_flight, slow_start};

/// RFC 5681 congestion control.
#[derive(Debug, Clone)]
pub struct NewReno {
    cwnd: u64,
    ssthresh: u64,
    /// Bytes acknowledged in congestion avoidance since the window last grew.
    acked_in_ca: u64,
    hystart: HyStart,
}

impl NewReno {
    /// A controller with the given initial window (RFC 6928: ten segments).
    #[must_use]
    pub fn new(initial_window: u64) -> Self {
        Self {
            cwnd: initial_window,
            ssthresh: u64::MAX,
            acked_in_ca: 0,
            hystart: HyStart::default(),
        }
    }
}

impl Controller for NewReno {
    fn restart(&mut self, initial_window: u64) {
        *self = Self::new(initial_window);
    }

    fn window(&self) -> u64 {
        self.cwnd
    }

    fn ssthresh(&self) -> u64 {
        self.ssthresh
    }

    fn on_ack(&mut self, ack: &Ack) {
        if !ack.cwnd_limited {
            return;
        }
        if self.cwnd < self.ssthresh {
            slow_start(&mut self.hystart, &mut self.cwnd, &mut self.ssthresh, ack);
            return;
        }
        // RFC 5681 §3.1: cwnd += SMSS once per window's worth of acknowledged bytes.
        self.acked_in_ca += ack.acked;
        if self.acked_in_ca >= self.cwnd {
            self.acked_in_ca -= self.cwnd;
            self.cwnd += ack.mss;
        }
    }

    fn on_congestion_event(&mut self, _now: Instant, in_flight: u64, mss: u64) {
        self.ssthresh = half_flight(in_flight, mss);
        self.cwnd = self.ssthresh;
        self.acked_in_ca = 0;
    }

    fn on_recovery_end(&mut self, _now: Instant, _mss: u64) {
        // RFC 6582 §3.2 (3): deflate the window to ssthresh.
        self.cwnd = self.ssthresh;
    }

    fn on_retransmission_timeout(&mut self, _now: Instant, in_flight: u64, mss: u64) {
        self.ssthresh = half_flight(in_flight, mss);
        self.cwnd = mss;
        self.acked_in_ca = 0;
        self.hystart.reset();
    }

    fn on_repeated_timeout(&mut self, _now: Instant, mss: u64) {
        self.cwnd = mss;
        self.acked_in_ca = 0;
        self.hystart.reset();
    }

    fn name(&self) -> &'static str {
        "newreno"
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::ack;
    use super::*;

    #[test]
    fn slow_start_adds_at_most_two_segments_per_ack() {
        let now = Instant::now();
        let mut c = NewReno::new(10_000);
        c.on_ack(&ack(now, 1000, 10_000));
        assert_eq!(c.window(), 11_000);
        c.on_ack(&ack(now, 5000, 10_000));
        assert_eq!(c.window(), 13_000, "capped at 2 * SMSS");
    }

    #[test]
    fn congestion_avoidance_adds_one_segment_per_window() {
        let now = Instant::now();
        let mut c = NewReno::new(10_000);
        c.on_congestion_event(now, 20_000, 1000);
        assert_eq!((c.window(), c.ssthresh()), (10_000, 10_000));
        for _ in 0..10 {
            c.on_ack(&ack(now, 1000, 10_000));
        }
        assert_eq!(c.window(), 11_000);
    }

    #[test]
    fn a_window_that_does_not_limit_the_sender_does_not_grow() {
        let now = Instant::now();
        let mut c = NewReno::new(10_000);
        let mut a = ack(now, 1000, 2000);
        a.cwnd_limited = false;
        c.on_ack(&a);
        assert_eq!(c.window(), 10_000);
    }

    #[test]
    fn timeout_falls_to_one_segment_with_half_the_flight_as_threshold() {
        let now = Instant::now();
        let mut c = NewReno::new(10_000);
        c.on_retransmission_timeout(now, 30_000, 1000);
        assert_eq!((c.window(), c.ssthresh()), (1000, 15_000));
        c.on_retransmission_timeout(now, 1000, 1000);
        assert_eq!(c.ssthresh(), 2000, "never below two segments");
    }

    #[test]
    fn a_repeated_timeout_holds_the_threshold() {
        let now = Instant::now();
        let mut c = NewReno::new(10_000);
        c.on_retransmission_timeout(now, 30_000, 1000);
        c.on_repeated_timeout(now, 1000);
        assert_eq!((c.window(), c.ssthresh()), (1000, 15_000));
    }
}
