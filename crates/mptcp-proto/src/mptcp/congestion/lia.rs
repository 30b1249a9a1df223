//! LIA, the Linked Increases Algorithm (RFC 6356): the subflows' windows grow together by no
//! more than one TCP flow's would on the best of their paths (§3, goals 1 and 2), and each by no
//! more than a TCP flow's on its own path (goal 3's cap). Losses halve each subflow's window on
//! its own, as TCP.

use super::Member;

/// RFC 6356 §3: `alpha = cwnd_total * max_i(cwnd_i / rtt_i²) / (Σ_i cwnd_i / rtt_i)²`.
#[must_use]
pub fn alpha(members: &[Member]) -> f64 {
    let total: f64 = members.iter().map(|m| m.cwnd).sum();
    let best = members
        .iter()
        .map(|m| m.cwnd / (m.srtt * m.srtt))
        .fold(0.0, f64::max);
    let sum: f64 = members.iter().map(|m| m.cwnd / m.srtt).sum();
    if sum <= 0.0 {
        return 1.0;
    }
    total * best / (sum * sum)
}

/// Bytes subflow `me` grows by for `acked` bytes acknowledged in congestion avoidance (RFC 6356
/// §3, in bytes): `min(alpha * acked * MSS / cwnd_total, acked * MSS / cwnd_i)`.
#[must_use]
pub fn increase(me: usize, members: &[Member], acked: f64, mss: f64) -> f64 {
    let total: f64 = members.iter().map(|m| m.cwnd).sum();
    let own = members[me].cwnd;
    if total <= 0.0 || own <= 0.0 {
        return 0.0;
    }
    (alpha(members) * acked * mss / total).min(acked * mss / own)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(cwnd: f64, srtt: f64) -> Member {
        super::super::member(cwnd, srtt, 0.0)
    }

    #[test]
    fn one_subflow_grows_as_reno() {
        // One MSS per window's worth of acknowledged bytes.
        let one = [m(20_000.0, 0.05)];
        assert!((alpha(&one) - 1.0).abs() < 1e-12);
        assert!((increase(0, &one, 20_000.0, 1000.0) - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn two_equal_subflows_together_grow_as_one_reno_flow() {
        // alpha = 2w * (w/r²) / (2w/r)² = 1/2: each grows by MSS/4 per own window, the two by
        // MSS/2 per window of 2w, i.e. as one flow of window 2w would (goal 2).
        let two = [m(10_000.0, 0.05), m(10_000.0, 0.05)];
        assert!((alpha(&two) - 0.5).abs() < 1e-12);
        let each = increase(0, &two, 10_000.0, 1000.0);
        assert!((each - 250.0).abs() < 1e-9, "{each}");
    }

    #[test]
    fn never_more_than_reno_on_its_own_path() {
        // A small window next to a large one: the coupled term would exceed the subflow's own
        // Reno increase; RFC 6356 caps it there.
        let two = [m(2_000.0, 0.01), m(100_000.0, 0.2)];
        let inc = increase(0, &two, 2_000.0, 1000.0);
        assert!(inc <= 1000.0 + 1e-9, "{inc}");
    }

    #[test]
    fn the_faster_path_sets_the_aggregate() {
        // Equal windows, RTTs 10 ms and 100 ms: alpha = 2w (w/0.0001) / (w/0.01 + w/0.1)²
        // = 2 * 10000 / 12100.
        let two = [m(10_000.0, 0.01), m(10_000.0, 0.1)];
        assert!((alpha(&two) - 20_000.0 / 12_100.0).abs() < 1e-9);
    }
}
