//! Log lines an attacker or a fault can repeat thousands of times a second (refusals, timeouts)
//! are written at a bounded rate: the first at once, then at most one per interval, saying how
//! many were left out meanwhile. The counters in the metrics count every one.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// One kind of log line, written at most once per interval.
#[derive(Debug)]
pub struct Throttle {
    interval_ms: u64,
    /// When the last line was written, in milliseconds after [`epoch`], plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

/// The process's reference instant for [`Throttle`].
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Throttle {
    /// At most one line per `interval`.
    #[must_use]
    pub const fn new(interval: Duration) -> Self {
        // `as_millis` is not const for u64; intervals are seconds to minutes.
        Self {
            interval_ms: interval.as_secs() * 1000 + interval.subsec_millis() as u64,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were left out since the
    /// last one; `None` (and one more left out) otherwise.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn allow_at(&self, now_ms: u64) -> Option<u64> {
        let stamp = now_ms.saturating_add(1);
        let last = self.last.load(Relaxed);
        let due = last == 0 || stamp.saturating_sub(last) >= self.interval_ms;
        if due
            && self
                .last
                .compare_exchange(last, stamp, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_are_counted() {
        let t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.allow_at(0), Some(0), "the first at once");
        for ms in [1, 500, 9_998] {
            assert_eq!(t.allow_at(ms), None);
        }
        assert_eq!(t.allow_at(10_000), Some(3), "three left out");
        assert_eq!(t.allow_at(10_001), None);
        assert_eq!(t.allow_at(25_000), Some(1));
    }
}
