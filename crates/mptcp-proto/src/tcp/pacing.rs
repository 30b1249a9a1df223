//! Pacing: segments leave at the rate the window allows per round trip instead of in one burst
//! (Linux's `sk_pacing_rate`: 2 × cwnd / SRTT in slow start, 1.2 × in congestion avoidance).
//!
//! A token bucket in bytes: it refills at the pacing rate up to a burst of a millisecond's worth
//! (at least two segments), so a driver whose timers fire late by a millisecond still keeps up.

use core::time::Duration;
use std::time::Instant;

/// The bucket of a rate the congestion controller set ([`Pacer::set_rate`]).
pub const RATE_BURST: Duration = Duration::from_millis(3);

/// The pacer of one connection.
#[derive(Debug, Clone, Default)]
pub struct Pacer {
    tokens: f64,
    last: Option<Instant>,
    /// Bytes per second; `None`: not pacing (no RTT sample yet).
    rate: Option<f64>,
    burst: f64,
}

impl Pacer {
    /// Sets the rate from the window and the smoothed RTT.
    pub fn update(&mut self, cwnd: u64, srtt: Option<Duration>, slow_start: bool, mss: u64) {
        let Some(srtt) = srtt.filter(|d| !d.is_zero()) else {
            self.rate = None;
            return;
        };
        let factor = if slow_start { 2.0 } else { 1.2 };
        let rate = factor * cwnd as f64 / srtt.as_secs_f64();
        self.set(rate, rate / 1000.0, mss);
    }

    /// Sets the rate the congestion controller chose, bytes per second. Such a rate is the
    /// controller's estimate of the path with no headroom over it (BBR's), so the bucket holds
    /// [`RATE_BURST`] of it: a driver woken a millisecond or two late (a timer wheel's tick)
    /// sends what it owes instead of losing it, which would lower the next estimate.
    pub fn set_rate(&mut self, rate: f64, mss: u64) {
        self.set(rate, rate * RATE_BURST.as_secs_f64(), mss);
    }

    /// Paces at `rate` bytes per second with a bucket of `burst` bytes, at least two segments.
    fn set(&mut self, rate: f64, burst: f64, mss: u64) {
        self.rate = Some(rate);
        self.burst = burst.max(2.0 * mss as f64);
    }

    /// Bytes per second, while pacing.
    #[must_use]
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn refill(&mut self, now: Instant) {
        let Some(rate) = self.rate else { return };
        let last = self.last.unwrap_or(now);
        let dt = now.saturating_duration_since(last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(self.burst);
        self.last = Some(now);
    }

    /// `None` if `len` bytes may leave now, else when they may.
    pub fn delay(&mut self, now: Instant, len: u64) -> Option<Instant> {
        let rate = self.rate?;
        if self.last.is_none() {
            // The first paced segment finds a full bucket.
            self.tokens = self.burst;
            self.last = Some(now);
        }
        self.refill(now);
        let need = (len as f64).min(self.burst);
        // A nanosecond's worth of slack absorbs the rounding of the wait below.
        if self.tokens + rate * 1e-9 >= need {
            return None;
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a positive wait of at most a burst's worth"
        )]
        let wait_ns = ((need - self.tokens) / rate * 1e9).ceil() as u64;
        Some(now + Duration::from_nanos(wait_ns.max(1)))
    }

    /// `len` bytes left.
    pub fn on_send(&mut self, now: Instant, len: u64) {
        if self.rate.is_some() {
            self.refill(now);
            self.tokens -= len as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_rtt_nothing_is_held() {
        let mut p = Pacer::default();
        p.update(100_000, None, true, 1000);
        assert_eq!(p.delay(Instant::now(), 1_000_000), None);
    }

    #[test]
    fn segments_are_spaced_at_the_rate_after_a_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        // 1.2 × 120 000 B / 100 ms = 1.44 MB/s; burst max(1440, 2000) = 2000 bytes.
        p.update(120_000, Some(Duration::from_millis(100)), false, 1000);
        assert_eq!(p.delay(t0, 1000), None);
        p.on_send(t0, 1000);
        assert_eq!(p.delay(t0, 1000), None);
        p.on_send(t0, 1000);
        let at = p.delay(t0, 1000).expect("bucket empty");
        let wait = at - t0;
        // 1000 bytes at 1.44 MB/s ≈ 694 µs.
        assert!(
            (Duration::from_micros(690)..=Duration::from_micros(700)).contains(&wait),
            "{wait:?}"
        );
        assert_eq!(p.delay(at, 1000), None);
    }
}
