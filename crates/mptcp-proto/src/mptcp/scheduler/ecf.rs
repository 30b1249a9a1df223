//! ECF, the earliest-completion-first scheduler (Lim, Nahum, Towsley, Gibbens: "ECF: An MPTCP
//! Path Scheduler to Manage Heterogeneous Paths", `CoNEXT` 2017).
//!
//! While the fastest subflow has room it gets the bytes. When it has none, ECF asks whether
//! waiting for it finishes sooner than using the slower one. With `k` bytes waiting at the
//! connection level, the fast subflow needs `n = 1 + k / CWND_f` of its round trips for them;
//! the slow one delivers its first bytes after `RTT_s + δ` (`δ` the larger RTT variation).
//! If `n · RTT_f < (1 + w·β) · (RTT_s + δ)` and the slow subflow would need at least
//! `2 · RTT_f + δ` for its share (`k / CWND_s · RTT_s`), ECF waits (`w` becomes 1: hysteresis
//! `β` keeps it from flapping); otherwise it uses the slow subflow (`w` back to 0).
//!
//! A slow subflow that never carried data is taken to deliver one segment per round trip,
//! not `CWND_s`: its RTT comes from its handshake, which does not show how long a window of
//! full segments takes to cross its line. Believing `CWND_s / RTT_s` there gave a 0.3 Mbit/s
//! line the last 6 kB of a 256 KiB object "to finish in 28 ms"; they took 200 ms.

use core::time::Duration;

use super::{Candidate, Context, Scheduler, fast_or_slower};

/// The hysteresis of the waiting decision (the paper's β).
const BETA: f64 = 0.25;

/// See the module.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ecf {
    /// It waited for the fast subflow last time (the paper's `waiting`).
    waiting: bool,
    /// Times it waited (for tests and statistics).
    pub waits: u64,
}

impl Ecf {
    /// Whether to wait for `fast` rather than send on `slow`.
    #[expect(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
    fn wait_for_fast(&self, fast: &Candidate, slow: &Candidate, ctx: &Context) -> bool {
        let secs = Duration::as_secs_f64;
        let (rtt_f, rtt_s) = (secs(&fast.srtt), secs(&slow.srtt));
        let delta = secs(&fast.rttvar.max(slow.rttvar));
        let k = ctx.unsent as f64;
        let n = 1.0 + k / fast.cwnd.max(1) as f64;
        let w = if self.waiting { 1.0 } else { 0.0 };
        let slow_window = if slow.acked == 0 { slow.mss } else { slow.cwnd };
        n * rtt_f < (1.0 + w * BETA) * (rtt_s + delta)
            && k / slow_window.max(1) as f64 * rtt_s >= 2.0 * rtt_f + delta
    }
}

impl Scheduler for Ecf {
    fn pick(&mut self, candidates: &[Candidate], ctx: &Context) -> Option<(usize, u64)> {
        let (fast, slow) = match fast_or_slower(candidates)? {
            Ok(fast) => return Some(fast),
            Err(pair) => pair,
        };
        self.waiting = self.wait_for_fast(&fast, &slow, ctx);
        if self.waiting {
            self.waits += 1;
            return None;
        }
        Some((slow.index, slow.room))
    }

    fn reinjects_head_of_line(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::cand;
    use super::*;

    /// ECF's very heterogeneous pair (8.6 and 0.3 Mbit/s): a little data waiting goes faster
    /// through the fast subflow alone; a lot of it uses both.
    #[test]
    fn it_waits_for_the_fast_subflow_when_that_finishes_sooner() {
        let (fast, slow) = (cand(0, 20, 15, 0), cand(1, 300, 4, 2800));
        let mut s = Ecf::default();
        // 64 KiB waiting: n = 1 + 65536 / 21000 ≈ 4.1 round trips of 20 ms = 83 ms, before
        // the slow one's first bytes at about 340 ms.
        let little = Context {
            unsent: 64 * 1024,
            window: 1 << 22,
        };
        assert_eq!(s.pick(&[fast, slow], &little), None);
        assert_eq!(s.waits, 1);
        // 4 MiB waiting: n ≈ 200 round trips = 4 s: the slow one helps.
        let lots = Context {
            unsent: 4 << 20,
            window: 1 << 22,
        };
        assert_eq!(s.pick(&[fast, slow], &lots), Some((1, 2800)));
    }

    /// Once waiting, it keeps waiting a little longer (β): no flapping at the boundary.
    #[test]
    fn waiting_has_hysteresis() {
        let (fast, slow) = (cand(0, 20, 10, 0), cand(1, 100, 10, 2800));
        // n · 20 ms against 100 ms + δ (12.5 ms): the boundary is n ≈ 5.6, k ≈ 64 kB.
        let ctx = Context {
            unsent: 70_000,
            window: 1 << 22,
        };
        let mut fresh = Ecf::default();
        assert_eq!(
            fresh.pick(&[fast, slow], &ctx),
            Some((1, 2800)),
            "not waiting yet"
        );
        let mut waiting = Ecf {
            waiting: true,
            waits: 0,
        };
        assert_eq!(waiting.pick(&[fast, slow], &ctx), None, "already waiting");
    }

    /// The end of a 256 KiB object on ECF's pair: 6 kB left, the fast subflow's window full.
    /// A slow subflow with data behind it would deliver them within `2 · RTT_f + δ` by its
    /// window; one that never carried data has shown no such rate, and ECF waits.
    #[test]
    fn a_slow_subflow_that_never_carried_data_is_not_trusted_with_its_window() {
        let fast = cand(0, 56, 89, 0);
        let proven = cand(1, 64, 10, 14_000);
        let unproven = Candidate { acked: 0, ..proven };
        let ctx = Context {
            unsent: 6220,
            window: 1 << 22,
        };
        assert_eq!(
            Ecf::default().pick(&[fast, proven], &ctx),
            Some((1, 14_000))
        );
        assert_eq!(Ecf::default().pick(&[fast, unproven], &ctx), None);
    }
}
