//! Round-trip time estimation and the retransmission timeout (RFC 6298).
//!
//! Samples come from acknowledgments of segments that were sent once (Karn's algorithm, RFC 6298
//! §3: an acknowledgment that covers a retransmitted segment cannot tell which copy it answers,
//! so it gives no sample).
//! The timeout doubles on each expiry (§5.5) and is kept between the configured bounds (§2.4,
//! §2.5); a new sample after a backoff resets it (§5.7 leaves the backed-off value until a
//! sample arrives).

use core::time::Duration;

/// RFC 6298's `SRTT`, `RTTVAR` and `RTO`, plus the smallest and latest sample.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    latest: Duration,
    min: Duration,
    backoff: u32,
    min_rto: Duration,
    max_rto: Duration,
    initial_rto: Duration,
    /// The timeout before the first sample when earlier connections between the same two
    /// addresses measured the path (see [`RttEstimator::seed`]).
    seeded_rto: Option<Duration>,
    /// A lower ceiling for the backed-off timeout, if set (see [`RttEstimator::set_cap`]).
    cap: Option<Duration>,
}

/// `G`, the clock granularity of RFC 6298 §2: this engine's clock is exact, but a floor keeps
/// `RTTVAR` from collapsing on a perfectly regular path.
const GRANULARITY: Duration = Duration::from_millis(1);

impl RttEstimator {
    /// An estimator with no sample yet: the timeout is `initial_rto` (RFC 6298 §2.1: 1 s).
    #[must_use]
    pub fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            latest: Duration::ZERO,
            min: Duration::MAX,
            backoff: 0,
            min_rto,
            max_rto,
            initial_rto,
            seeded_rto: None,
            cap: None,
        }
    }

    /// Takes the round-trip time earlier connections between the same two addresses measured,
    /// for the timeout before this connection's first sample (RFC 9040 §4.2, temporal sharing:
    /// a lost SYN or SYN-ACK then costs a few round trips, not RFC 6298's initial second).
    /// Only the timeout takes it, never above the initial timeout: a figure gone stale can make
    /// a SYN go again early, never later than without it. The estimator itself starts from this
    /// connection's own first sample.
    pub fn seed(&mut self, srtt: Duration, rttvar: Duration) {
        self.seeded_rto = Some(self.rto_of(srtt, rttvar).min(self.initial_rto));
    }

    /// Takes a sample (RFC 6298 §2.2, §2.3) and ends any backoff.
    pub fn on_sample(&mut self, rtt: Duration) {
        self.latest = rtt;
        self.min = self.min.min(rtt);
        self.backoff = 0;
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                // RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R'|; SRTT <- 7/8 SRTT + 1/8 R'
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// Whether [`RttEstimator::seed`] gave it a first timeout.
    #[must_use]
    pub fn is_seeded(&self) -> bool {
        self.seeded_rto.is_some()
    }

    /// Doubles the timeout after it expired (RFC 6298 §5.5).
    pub fn back_off(&mut self) {
        self.backoff = self.backoff.saturating_add(1);
    }

    /// How many times the timeout has doubled since the last sample.
    #[must_use]
    pub fn backoff(&self) -> u32 {
        self.backoff
    }

    /// The retransmission timeout: `SRTT + max(G, 4 RTTVAR)` within the bounds, doubled per
    /// backoff (RFC 6298 §2.2–§2.5, §5.5), no higher than the cap if one is set (but never
    /// below the timeout before backoff).
    #[must_use]
    pub fn rto(&self) -> Duration {
        let base = self.base_rto();
        let shift = self.backoff.min(16);
        let ceiling = self
            .cap
            .map_or(self.max_rto, |c| c.max(base).min(self.max_rto));
        base.saturating_mul(1 << shift).min(ceiling)
    }

    /// The timeout before any backoff.
    fn base_rto(&self) -> Duration {
        match self.srtt {
            None => self.seeded_rto.unwrap_or(self.initial_rto),
            Some(srtt) => self.rto_of(srtt, self.rttvar),
        }
    }

    /// `SRTT + max(G, 4 RTTVAR)`, no lower than the minimum (RFC 6298 §2.2–§2.4).
    fn rto_of(&self, srtt: Duration, rttvar: Duration) -> Duration {
        (srtt + (rttvar * 4).max(GRANULARITY)).max(self.min_rto)
    }

    /// Caps the backed-off timeout at `cap` (`None`: RFC 6298's maximum again), as Linux's
    /// `TCP_RTO_MAX_MS` does: an MPTCP subflow whose line went silent while others carry its
    /// data probes the line this often, so that it is used again soon after it returns.
    pub fn set_cap(&mut self, cap: Option<Duration>) {
        self.cap = cap;
    }

    /// Whether the timeout has reached its cap: doubling it further would change nothing.
    #[must_use]
    pub fn at_cap(&self) -> bool {
        self.cap.is_some_and(|c| {
            let base = self.base_rto();
            base.saturating_mul(1 << self.backoff.min(16)) >= c.max(base)
        })
    }

    /// The smoothed round-trip time, once there is a sample.
    #[must_use]
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The smoothed round-trip time, or `fallback` before the first sample.
    #[must_use]
    pub fn srtt_or(&self, fallback: Duration) -> Duration {
        self.srtt.unwrap_or(fallback)
    }

    /// `RTTVAR`.
    #[must_use]
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// The latest sample (zero before the first).
    #[must_use]
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// The smallest sample so far, once there is one.
    #[must_use]
    pub fn min(&self) -> Option<Duration> {
        (self.min != Duration::MAX).then_some(self.min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn est() -> RttEstimator {
        RttEstimator::new(
            Duration::from_secs(1),
            Duration::from_millis(200),
            Duration::from_secs(60),
        )
    }

    /// A seeded estimator times its first segment out after the shared path's timeout, never
    /// after the initial one; its own first sample replaces the seed.
    #[test]
    fn a_seed_shortens_the_first_timeout_only_until_a_sample() {
        let mut r = est();
        r.seed(ms(20), ms(5));
        assert_eq!(r.rto(), ms(200), "floored at the minimum");
        assert_eq!(r.srtt(), None, "the estimator has no sample of its own");
        r.back_off();
        assert_eq!(r.rto(), ms(400));
        r.seed(ms(300), ms(100));
        assert_eq!(r.rto(), ms(1400), "300 + 4 x 100, doubled");
        r.seed(ms(900), ms(300));
        r.on_sample(ms(50));
        assert_eq!(r.rto(), ms(200), "its own sample rules");
        let mut long = est();
        long.seed(ms(900), ms(300));
        assert_eq!(long.rto(), ms(1000), "never above the initial timeout");
    }

    #[test]
    fn first_sample_sets_srtt_and_half_rttvar() {
        let mut e = est();
        assert_eq!(e.rto(), Duration::from_secs(1));
        e.on_sample(Duration::from_millis(100));
        assert_eq!(e.srtt(), Some(Duration::from_millis(100)));
        assert_eq!(e.rttvar(), Duration::from_millis(50));
        // 100 + 4 * 50 = 300 ms
        assert_eq!(e.rto(), Duration::from_millis(300));
    }

    #[test]
    fn later_samples_are_smoothed_by_an_eighth_and_a_quarter() {
        let mut e = est();
        e.on_sample(Duration::from_millis(100));
        e.on_sample(Duration::from_millis(180));
        // RTTVAR = 3/4 * 50 + 1/4 * 80 = 57.5; SRTT = 7/8 * 100 + 1/8 * 180 = 110
        assert_eq!(e.srtt(), Some(Duration::from_millis(110)));
        assert_eq!(e.rttvar(), Duration::from_micros(57_500));
        assert_eq!(e.min(), Some(Duration::from_millis(100)));
        assert_eq!(e.latest(), Duration::from_millis(180));
    }

    #[test]
    fn timeout_is_floored_doubled_on_backoff_and_capped() {
        let mut e = est();
        e.on_sample(Duration::from_millis(10));
        assert_eq!(e.rto(), Duration::from_millis(200), "min_rto floor");
        e.back_off();
        assert_eq!(e.rto(), Duration::from_millis(400));
        for _ in 0..20 {
            e.back_off();
        }
        assert_eq!(e.rto(), Duration::from_secs(60), "max_rto cap");
        e.on_sample(Duration::from_millis(10));
        assert_eq!(e.backoff(), 0);
        assert_eq!(e.rto(), Duration::from_millis(200));
    }

    #[test]
    fn a_cap_bounds_the_backoff_but_never_the_base_timeout() {
        let mut e = RttEstimator::new(
            Duration::from_secs(1),
            Duration::from_millis(200),
            Duration::from_secs(120),
        );
        e.on_sample(Duration::from_millis(40));
        e.set_cap(Some(Duration::from_millis(500)));
        let base = e.rto();
        assert!(!e.at_cap());
        for _ in 0..5 {
            e.back_off();
        }
        assert_eq!(e.rto(), Duration::from_millis(500));
        assert!(e.at_cap());
        e.set_cap(Some(Duration::from_millis(1)));
        assert_eq!(
            e.rto(),
            base,
            "a cap below the base timeout does not lower it"
        );
        e.set_cap(None);
        assert_eq!(e.rto(), base * 32);
    }
}
