//! CUBIC (RFC 9438): after a loss the window follows `W(t) = C (t − K)³ + W_max`, concave up to
//! the window where the loss happened and convex beyond it, so long fat paths are refilled in
//! seconds rather than in thousands of round trips; where Reno would grow faster (short
//! round-trip times) it follows Reno's estimate instead (§4.3).

use std::time::Instant;

use super::hystart::{HyStart, Phase};
use super::{Ack, Controller};

/// RFC 9438 §5: `C`.
const C: f64 = 0.4;
/// RFC 9438 §4.6: `β_cubic`.
const BETA: f64 = 0.7;
/// RFC 9438 §4.3: `α_cubic = 3 (1 − β) / (1 + β)`, Reno's growth rate at CUBIC's reduction.
const ALPHA: f64 = 3.0 * (1.0 - BETA) / (1.0 + BETA);

/// RFC 9438 congestion control.
#[derive(Debug, Clone)]
pub struct Cubic {
    /// Window in bytes, kept fractional so that small increments add up.
    cwnd: f64,
    ssthresh: u64,
    /// `W_max`, in segments.
    w_max: f64,
    /// `K`, seconds.
    k: f64,
    /// `W_max` or, when the window is already above it, the window at the epoch start.
    origin: f64,
    /// Start of the current congestion-avoidance epoch.
    epoch: Option<Instant>,
    /// `W_est`, Reno's window estimate, in segments.
    w_est: f64,
    hystart: HyStart,
}

impl Cubic {
    /// A controller with the given initial window.
    #[must_use]
    pub fn new(initial_window: u64) -> Self {
        Self {
            cwnd: initial_window as f64,
            ssthresh: u64::MAX,
            w_max: 0.0,
            k: 0.0,
            origin: 0.0,
            epoch: None,
            w_est: 0.0,
            hystart: HyStart::default(),
        }
    }

    /// `W_cubic(t)`, segments (RFC 9438 §4.2).
    fn w_cubic(&self, t: f64) -> f64 {
        C * (t - self.k).powi(3) + self.origin
    }

    fn reduce(&mut self, mss: u64) {
        let cwnd_seg = self.cwnd / mss as f64;
        // §4.7 fast convergence: release bandwidth for newer flows when the loss came below
        // the last maximum.
        self.w_max = if cwnd_seg < self.w_max {
            cwnd_seg * (1.0 + BETA) / 2.0
        } else {
            cwnd_seg
        };
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a positive window in bytes"
        )]
        let reduced = (self.cwnd * BETA) as u64;
        self.ssthresh = reduced.max(2 * mss);
        self.epoch = None;
    }
}

impl Controller for Cubic {
    fn restart(&mut self, initial_window: u64) {
        *self = Self::new(initial_window);
    }

    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a positive window in bytes"
    )]
    fn window(&self) -> u64 {
        self.cwnd as u64
    }

    fn ssthresh(&self) -> u64 {
        self.ssthresh
    }

    fn on_ack(&mut self, ack: &Ack) {
        if !ack.cwnd_limited {
            // §5.8: an application-limited flow does not grow its window, and its epoch must
            // not run on meanwhile.
            self.epoch = None;
            return;
        }
        let mss = ack.mss as f64;
        if self.window() < self.ssthresh {
            let grow = ack.acked.min(2 * ack.mss) as f64;
            match self.hystart.on_ack(ack, self.window()) {
                Phase::SlowStart => self.cwnd += grow,
                Phase::Conservative(div) => self.cwnd += grow / div as f64,
                Phase::Exit => self.ssthresh = self.window(),
            }
            return;
        }
        let cwnd_seg = self.cwnd / mss;
        let epoch = *self.epoch.get_or_insert_with(|| {
            if self.w_max > cwnd_seg {
                self.k = ((self.w_max - cwnd_seg) / C).cbrt();
                self.origin = self.w_max;
            } else {
                self.k = 0.0;
                self.origin = cwnd_seg;
            }
            self.w_est = cwnd_seg;
            ack.now
        });
        let t = ack.now.saturating_duration_since(epoch).as_secs_f64();
        let rtt = ack.srtt.as_secs_f64();
        let acked_seg = ack.acked as f64 / mss;
        // §4.3: Reno's window, growing α per window acknowledged.
        self.w_est += ALPHA * acked_seg / cwnd_seg;
        let target = self.w_cubic(t + rtt).clamp(cwnd_seg, 1.5 * cwnd_seg);
        let next = if self.w_cubic(t) < self.w_est {
            self.w_est.max(cwnd_seg)
        } else {
            // §4.4, §4.5: (target − cwnd) / cwnd per segment acknowledged.
            cwnd_seg + (target - cwnd_seg) / cwnd_seg * acked_seg
        };
        self.cwnd = next * mss;
    }

    fn on_congestion_event(&mut self, _now: Instant, _in_flight: u64, mss: u64) {
        self.reduce(mss);
        self.cwnd = self.ssthresh as f64;
    }

    fn on_recovery_end(&mut self, _now: Instant, _mss: u64) {
        self.cwnd = self.cwnd.min(self.ssthresh as f64);
    }

    fn on_retransmission_timeout(&mut self, _now: Instant, _in_flight: u64, mss: u64) {
        // §4.8: the reduction as for a loss, then one segment.
        self.reduce(mss);
        self.cwnd = mss as f64;
        self.hystart.reset();
    }

    fn on_repeated_timeout(&mut self, _now: Instant, mss: u64) {
        // `ssthresh` and `W_max` as the first timeout left them.
        self.cwnd = mss as f64;
        self.epoch = None;
        self.hystart.reset();
    }

    fn name(&self) -> &'static str {
        "cubic"
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::ack;
    use super::*;
    use core::time::Duration;

    #[test]
    fn a_loss_keeps_seventy_percent() {
        let now = Instant::now();
        let mut c = Cubic::new(100_000);
        c.on_congestion_event(now, 100_000, 1000);
        assert_eq!((c.window(), c.ssthresh()), (70_000, 70_000));
    }

    #[test]
    fn the_window_climbs_back_to_w_max_in_k_seconds_then_probes_beyond() {
        let t0 = Instant::now();
        let mut c = Cubic::new(1_000_000);
        c.on_congestion_event(t0, 1_000_000, 1000);
        // W_max = 1000 segments, cwnd 700: K = cbrt(300 / 0.4) ≈ 9.09 s.
        let mut now = t0;
        let mut at_k = 0;
        for step in 1..=200 {
            now = t0 + Duration::from_millis(100 * step);
            let w = c.window();
            c.on_ack(&ack(now, w / 10, w));
            if step == 91 {
                at_k = c.window();
            }
        }
        assert!((c.k - 9.085).abs() < 0.01, "K = {}", c.k);
        // Near W_max around K (plateau), then growing beyond it.
        assert!((950_000..=1_060_000).contains(&at_k), "window at K: {at_k}");
        assert!(c.window() > 1_100_000, "convex probing: {}", c.window());
        let _ = now;
    }

    #[test]
    fn fast_convergence_lowers_w_max_after_a_second_loss_below_it() {
        let now = Instant::now();
        let mut c = Cubic::new(100_000);
        c.on_congestion_event(now, 100_000, 1000);
        assert!((c.w_max - 100.0).abs() < 1e-9);
        // Lost again at 70 segments, below W_max = 100.
        c.on_congestion_event(now, 70_000, 1000);
        assert!((c.w_max - 70.0 * 1.7 / 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_timeout_falls_to_one_segment() {
        let now = Instant::now();
        let mut c = Cubic::new(100_000);
        c.on_retransmission_timeout(now, 100_000, 1000);
        assert_eq!((c.window(), c.ssthresh()), (1000, 70_000));
        assert!(c.in_slow_start());
    }
}
