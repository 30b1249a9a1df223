//! RFC 6356's bounds on the coupled algorithms, for any windows and RTTs: no subflow grows
//! faster than a TCP flow on its own path would (LIA's cap), the subflows together grow no
//! faster than one TCP flow on the best path would (goal 1, for LIA and BALIA), OLIA's `α`s
//! are zero or cancel across the paths' sets, and BALIA keeps between a quarter and a half of
//! a window after a loss. Every figure is finite.
#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use mptcp_proto::mptcp::congestion::{Member, balia, lia, olia};
use proptest::prelude::*;

fn members() -> impl Strategy<Value = Vec<Member>> {
    prop::collection::vec(
        (2_000.0f64..4e6, 1e-3f64..2.0, 0.0f64..1e8).prop_map(|(cwnd, srtt, inter_loss)| Member {
            cwnd,
            srtt,
            inter_loss,
        }),
        1..8,
    )
}

const MSS: f64 = 1448.0;

proptest! {
    #[test]
    fn lia_never_beats_tcp_on_its_own_path_nor_on_the_best(ms in members()) {
        for (i, m) in ms.iter().enumerate() {
            let inc = lia::increase(i, &ms, m.cwnd, MSS);
            prop_assert!(inc.is_finite() && inc >= 0.0);
            // One window acknowledged: at most one MSS (TCP's increase on its path).
            prop_assert!(inc <= MSS * (1.0 + 1e-9), "{inc}");
        }
        // Goal 1: a window's growth per RTT on each subflow is a rate's growth per second of
        // growth / rtt²; summed over the subflows, no more than one TCP flow's on the path
        // with the shortest RTT (MSS / rtt²).
        let best = ms.iter().map(|m| MSS / (m.srtt * m.srtt)).fold(0.0, f64::max);
        let rate_growth: f64 = ms
            .iter()
            .enumerate()
            .map(|(i, m)| lia::increase(i, &ms, m.cwnd, MSS) / (m.srtt * m.srtt))
            .sum();
        prop_assert!(rate_growth <= best * (1.0 + 1e-6), "{rate_growth} > {best}");
    }

    #[test]
    fn olia_alphas_cancel_or_vanish(ms in members()) {
        let alphas: Vec<f64> = (0..ms.len()).map(|i| olia::alpha(i, &ms)).collect();
        let sum: f64 = alphas.iter().sum();
        prop_assert!(sum.abs() < 1e-9, "{alphas:?}");
        for (i, m) in ms.iter().enumerate() {
            prop_assert!(olia::increase(i, &ms, m.cwnd, MSS).is_finite());
        }
    }

    #[test]
    fn balia_backs_off_between_a_quarter_and_a_half(ms in members()) {
        for (i, m) in ms.iter().enumerate() {
            let kept = balia::kept_after_loss(i, &ms);
            prop_assert!((0.25..=0.5).contains(&kept), "{kept}");
            let inc = balia::increase(i, &ms, m.cwnd, MSS);
            prop_assert!(inc.is_finite() && inc >= 0.0);
        }
    }
}
