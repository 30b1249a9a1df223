//! What probing costs a line: the IP bytes of its probes and their answers, in total and as a
//! rate projected over a day (`mpbond status`, the `mpbond_line_probe_bytes` metrics). On a
//! metered line this is the figure the bill shows; docs/path-manager.md lists what each probe
//! setting costs and the detection time it buys.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The rate is taken over this much of the recent past.
const WINDOW: Duration = Duration::from_secs(60);
/// At most one sample per this long.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// No rate before this much history (a line just started says nothing yet).
const MIN_HISTORY: Duration = Duration::from_secs(5);

/// Seconds in a day.
const DAY: f64 = 86_400.0;

/// One line's probe bytes.
#[derive(Debug, Clone, Default)]
pub struct ProbeMeter {
    /// Probes and answers counted so far.
    counted: (u64, u64),
    /// IP bytes of probes sent and of answers received.
    bytes: (u64, u64),
    /// `(when, total bytes)`, oldest first, over [`WINDOW`].
    samples: VecDeque<(Instant, u64)>,
    /// The latest `(when, total bytes)`.
    latest: Option<(Instant, u64)>,
}

impl ProbeMeter {
    /// The line has sent `probes` and received `answers` so far, each `ip_len` bytes of IP
    /// (36 for IPv4, 56 for IPv6: a header and 16 bytes of ICMP).
    pub fn update(&mut self, now: Instant, probes: u64, answers: u64, ip_len: u64) {
        let sent = probes.saturating_sub(self.counted.0);
        let got = answers.saturating_sub(self.counted.1);
        self.counted = (probes, answers);
        self.bytes.0 += sent * ip_len;
        self.bytes.1 += got * ip_len;
        let total = self.bytes.0 + self.bytes.1;
        if self
            .samples
            .back()
            .is_none_or(|&(t, _)| now.saturating_duration_since(t) >= SAMPLE_EVERY)
        {
            self.samples.push_back((now, total));
        }
        self.latest = Some((now, total));
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| now.saturating_duration_since(t) > WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// IP bytes of probes sent and answers received so far.
    #[must_use]
    pub fn bytes(&self) -> (u64, u64) {
        self.bytes
    }

    /// Both directions' probe bytes at the rate of the last minute, over a day; `None` until
    /// there are a few seconds of history.
    #[must_use]
    pub fn per_day(&self) -> Option<u64> {
        let (&(t0, b0), (t1, b1)) = (self.samples.front()?, self.latest?);
        let span = t1.saturating_duration_since(t0);
        if span < MIN_HISTORY {
            return None;
        }
        #[expect(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a projection in bytes: the rounding is far below its precision"
        )]
        Some(((b1 - b0) as f64 / span.as_secs_f64() * DAY) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_every_50_ms_and_its_answer_cost_124_mb_a_day_on_ipv4() {
        let t0 = Instant::now();
        let mut m = ProbeMeter::default();
        assert_eq!(m.per_day(), None);
        for i in 0..=1200u64 {
            // 20 probes a second for a minute, every one answered.
            m.update(t0 + Duration::from_millis(50 * i), i, i, 36);
        }
        assert_eq!(m.bytes(), (1200 * 36, 1200 * 36));
        let day = m.per_day().unwrap();
        // 20/s * 72 B * 86 400 s = 124 416 000 B.
        assert!((124_000_000..=124_500_000).contains(&day), "{day}");
    }

    #[test]
    fn the_rate_follows_the_last_minute_not_the_whole_past() {
        let t0 = Instant::now();
        let mut m = ProbeMeter::default();
        let mut probes = 0;
        // A busy minute at 20 probes a second, then two idle minutes at one a second.
        let mut t = t0;
        for _ in 0..1200 {
            probes += 1;
            t += Duration::from_millis(50);
            m.update(t, probes, probes, 36);
        }
        for _ in 0..120 {
            probes += 1;
            t += Duration::from_secs(1);
            m.update(t, probes, probes, 36);
        }
        let day = m.per_day().unwrap();
        // 1/s * 72 B * 86 400 s = 6 220 800 B.
        assert!((6_000_000..=6_500_000).contains(&day), "{day}");
    }

    #[test]
    fn unanswered_probes_cost_only_their_own_bytes_and_counters_never_go_back() {
        let t0 = Instant::now();
        let mut m = ProbeMeter::default();
        m.update(t0, 10, 0, 56);
        m.update(t0 + Duration::from_secs(1), 5, 0, 56);
        assert_eq!(m.bytes(), (560, 0));
    }
}
