//! BALIA, the Balanced Linked Adaptation algorithm (Peng, Walid, Hwang, Low, "Multipath TCP:
//! Analysis, Design, and Implementation", IEEE/ACM `ToN` 2016): a balance between LIA's
//! friendliness and OLIA's responsiveness. With `x_r = w_r / rtt_r` and
//! `α_r = max_k x_k / x_r`, per acknowledged segment on subflow `r` (windows in segments):
//! `w_r += (x_r / rtt_r) / (Σ_k x_k)² · (1 + α_r) / 2 · (4 + α_r) / 5`, and on a loss
//! `w_r −= w_r / 2 · min(α_r, 1.5)`: a path much slower than the best backs off further.

use super::Member;

/// `α_r = max_k x_k / x_r` for subflow `me`.
#[must_use]
pub fn alpha(me: usize, members: &[Member]) -> f64 {
    let rate = |m: &Member| m.cwnd / m.srtt;
    let best = members.iter().map(rate).fold(0.0, f64::max);
    let own = rate(&members[me]);
    if own <= 0.0 { 1.0 } else { best / own }
}

/// Bytes subflow `me` grows by for `acked` bytes acknowledged in congestion avoidance.
#[must_use]
pub fn increase(me: usize, members: &[Member], acked: f64, mss: f64) -> f64 {
    let sum: f64 = members.iter().map(|m| m.cwnd / m.srtt).sum();
    let m = &members[me];
    if sum <= 0.0 || m.cwnd <= 0.0 {
        return 0.0;
    }
    let x = m.cwnd / m.srtt;
    let a = alpha(me, members);
    acked * mss * (x / m.srtt) / (sum * sum) * (1.0 + a) / 2.0 * (4.0 + a) / 5.0
}

/// The part of its window subflow `me` keeps after a loss: `1 − min(α_r, 1.5) / 2`.
#[must_use]
pub fn kept_after_loss(me: usize, members: &[Member]) -> f64 {
    1.0 - alpha(me, members).min(1.5) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(cwnd: f64, srtt: f64) -> Member {
        super::super::member(cwnd, srtt, 0.0)
    }

    #[test]
    fn one_subflow_is_reno() {
        let one = [m(20_000.0, 0.05)];
        assert!((increase(0, &one, 20_000.0, 1000.0) - 1000.0).abs() < 1e-9);
        assert!((kept_after_loss(0, &one) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn two_equal_subflows_together_grow_as_one_reno_flow() {
        let two = [m(10_000.0, 0.05), m(10_000.0, 0.05)];
        assert!((increase(0, &two, 10_000.0, 1000.0) - 250.0).abs() < 1e-9);
    }

    #[test]
    fn a_slow_path_backs_off_further_and_grows_more() {
        let two = [m(40_000.0, 0.05), m(5_000.0, 0.05)];
        assert!((alpha(1, &two) - 8.0).abs() < 1e-12);
        assert!(
            (kept_after_loss(1, &two) - 0.25).abs() < 1e-12,
            "min(α, 1.5)"
        );
        assert!((kept_after_loss(0, &two) - 0.5).abs() < 1e-12);
    }
}
