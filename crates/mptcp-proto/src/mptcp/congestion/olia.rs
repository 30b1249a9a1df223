//! OLIA, the Opportunistic Linked Increases Algorithm (Khalili, Gast, Popovic, Le Boudec,
//! "MPTCP Is Not Pareto-Optimal", IEEE/ACM `ToN` 2013): like LIA it is no more aggressive than
//! one TCP flow on the best path, but it also moves traffic towards the paths that lose least
//! (LIA keeps sending on a congested path as long as its window is large).
//!
//! Per acknowledged segment on subflow `r` (windows `w` in segments):
//! `w_r += (w_r / rtt_r²) / (Σ_p w_p / rtt_p)² + α_r / w_r`, where, with `ℓ_p` the bytes a
//! path carried between its last two losses (or since the last, if more), the best paths `B`
//! maximise `ℓ_p / rtt_p²` and `M` are the paths with the largest window: if some best paths
//! are not in `M`, each of those gets `α = 1 / (|R| |B \ M|)` and each path in `M` gets
//! `α = −1 / (|R| |M|)`; otherwise every `α` is 0. (The Linux implementation of the
//! multipath-tcp.org kernel ranks paths by the same `ℓ / rtt²`.) Losses halve a window as TCP.

use super::Member;

/// OLIA's `α_r` for subflow `me`.
#[must_use]
pub fn alpha(me: usize, members: &[Member]) -> f64 {
    let n = members.len() as f64;
    let max_cwnd = members.iter().map(|m| m.cwnd).fold(0.0, f64::max);
    let quality = |m: &Member| m.inter_loss / (m.srtt * m.srtt);
    let best = members.iter().map(quality).fold(0.0, f64::max);
    let in_m = |m: &Member| m.cwnd >= max_cwnd;
    // A path counts as best when within a part in a million of the best (float equality).
    let is_best = |m: &Member| quality(m) >= best * (1.0 - 1e-6);
    let m_count = members.iter().filter(|m| in_m(m)).count() as f64;
    let collected = members.iter().filter(|m| is_best(m) && !in_m(m)).count() as f64;
    if collected == 0.0 {
        return 0.0;
    }
    let mine = &members[me];
    if in_m(mine) {
        -1.0 / (n * m_count)
    } else if is_best(mine) {
        1.0 / (n * collected)
    } else {
        0.0
    }
}

/// Bytes subflow `me` grows by (negative: shrinks) for `acked` bytes acknowledged in
/// congestion avoidance: the per-segment increase above, times the segments acknowledged, in
/// bytes.
#[must_use]
pub fn increase(me: usize, members: &[Member], acked: f64, mss: f64) -> f64 {
    let own = members[me].cwnd;
    let sum: f64 = members.iter().map(|m| m.cwnd / m.srtt).sum();
    if own <= 0.0 || sum <= 0.0 {
        return 0.0;
    }
    let rtt = members[me].srtt;
    let coupled = (own / (rtt * rtt)) / (sum * sum);
    acked * mss * (coupled + alpha(me, members) / own)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::member as m;

    #[test]
    fn one_subflow_grows_as_reno() {
        let one = [m(20_000.0, 0.05, 1e6)];
        assert!(alpha(0, &one).abs() < 1e-12);
        assert!((increase(0, &one, 20_000.0, 1000.0) - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn two_equal_subflows_together_grow_as_one_reno_flow() {
        let two = [m(10_000.0, 0.05, 1e6), m(10_000.0, 0.05, 1e6)];
        // Both have the largest window: no best path outside M, alpha 0.
        assert!(alpha(0, &two).abs() < 1e-12);
        assert!((increase(0, &two, 10_000.0, 1000.0) - 250.0).abs() < 1e-9);
    }

    #[test]
    fn traffic_moves_to_the_path_that_loses_less() {
        // Path 0 has the larger window but loses often; path 1 is the best (fewer losses).
        let two = [m(40_000.0, 0.05, 1e5), m(10_000.0, 0.05, 1e6)];
        assert!((alpha(0, &two) - -0.5).abs() < 1e-12);
        assert!((alpha(1, &two) - 0.5).abs() < 1e-12);
        let a0 = increase(0, &two, 1000.0, 1000.0);
        let a1 = increase(1, &two, 1000.0, 1000.0);
        assert!(a1 > a0, "the better path grows faster: {a1} vs {a0}");
    }

    #[test]
    fn when_the_largest_window_is_the_best_path_nothing_shifts() {
        let two = [m(40_000.0, 0.05, 1e6), m(10_000.0, 0.05, 1e5)];
        assert!(alpha(0, &two).abs() < 1e-12);
        assert!(alpha(1, &two).abs() < 1e-12);
    }
}
