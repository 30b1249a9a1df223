//! BLEST, the blocking-estimation scheduler (Ferlin, Alay, Mehani, Boreli: "BLEST: Blocking
//! Estimation-based MPTCP Scheduler for Heterogeneous Networks", IFIP Networking 2016).
//!
//! While the fastest subflow has room it gets the bytes. When it has none, a slower subflow
//! would take them — but those bytes arrive late and hold the peer's connection-level window
//! while the fast subflow could have sent more. BLEST estimates what the fast subflow sends
//! during one round trip of the slow one, its window growing by a segment per round trip:
//!
//! `X = MSS_f · (CWND_f + (RTT_s / RTT_f − 1) / 2) · RTT_s / RTT_f`
//!
//! and leaves the slow subflow alone when `λ · X` does not fit into the window left after the
//! slow subflow's own bytes and one more segment: the connection waits for the fast one.
//!
//! The paper adapts λ to the head-of-line blocking it observes; here λ is fixed at 1 (its
//! starting value), which the paper found close to the adaptive one on its 3G + WLAN paths.

use super::{Candidate, Context, Scheduler, fast_or_slower};

/// The scale of the estimate (the paper's λ).
const LAMBDA: f64 = 1.0;

/// See the module.
#[derive(Debug, Clone, Copy, Default)]
pub struct Blest {
    /// Times it left a slower subflow alone (for tests and statistics).
    pub waits: u64,
}

impl Blest {
    /// Whether sending on `slow` would block the window the fast subflow needs.
    #[expect(
        clippy::cast_precision_loss,
        reason = "window sizes far below 2^52 bytes"
    )]
    fn blocks(fast: &Candidate, slow: &Candidate, ctx: &Context) -> bool {
        let rtt_f = fast.srtt.as_secs_f64().max(1e-6);
        let ratio = slow.srtt.as_secs_f64() / rtt_f;
        let cwnd_f = fast.cwnd as f64 / fast.mss.max(1) as f64;
        let x = fast.mss as f64 * (cwnd_f + (ratio - 1.0) / 2.0) * ratio;
        let space = ctx.window.saturating_sub(slow.queued + slow.mss) as f64;
        x * LAMBDA > space
    }
}

impl Scheduler for Blest {
    fn pick(&mut self, candidates: &[Candidate], ctx: &Context) -> Option<(usize, u64)> {
        let (fast, slow) = match fast_or_slower(candidates)? {
            Ok(fast) => return Some(fast),
            Err(pair) => pair,
        };
        if Self::blocks(&fast, &slow, ctx) {
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

    /// WLAN 25 ms and 3G 65 ms: with a small window the 3G subflow is left alone while the
    /// WLAN one is full; with a window big enough for both it is used.
    #[test]
    fn a_slow_subflow_is_used_only_when_the_window_has_room_for_what_the_fast_one_sends_meanwhile()
    {
        let (fast, slow) = (cand(0, 25, 20, 0), cand(1, 65, 10, 5600));
        let mut s = Blest::default();
        // X = 1400 · (20 + 0.8) · 2.6 ≈ 75.7 kB.
        let small = Context {
            unsent: 1 << 20,
            window: 64 * 1024,
        };
        assert_eq!(s.pick(&[fast, slow], &small), None);
        assert_eq!(s.waits, 1);
        let big = Context {
            unsent: 1 << 20,
            window: 1 << 20,
        };
        assert_eq!(s.pick(&[fast, slow], &big), Some((1, 5600)));
        // The fast one with room is always first.
        let fast = cand(0, 25, 20, 1400);
        assert_eq!(s.pick(&[fast, slow], &small), Some((0, 1400)));
    }
}
