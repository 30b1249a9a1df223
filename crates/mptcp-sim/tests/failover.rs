//! Failover in the engine (issue 15): a path blackholed mid-transfer, on lines of 20 to 80 ms
//! RTT, at several moments: the longest time the receiver waits for data, and whether the
//! path carries data again soon after it returns.
#![allow(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    reason = "a test fails loudly; figures for a table"
)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mptcp_proto::mptcp::Stack;
use mptcp_sim::Sim;
use mptcp_sim::apps::mptcp::{MpSend, MpSink};
use mptcp_sim::link::LinkParams;

/// What one blackout came to.
#[derive(Debug)]
struct Blackout {
    /// The longest time without new data at the receiver, from just before the blackout to
    /// 3 s after it began.
    longest_gap: Duration,
    /// How long after its return the blackholed path delivered 20 kB again, more than a
    /// probe (`None`: not within 10 s).
    back_in_use: Option<Duration>,
    /// Retransmission timeouts of its subflow in the 2 s after that (a second drop).
    timeouts_after: u64,
}

/// Two lines (`fast` Mbit/s and `rtt_fast` ms; 10 Mbit/s and `rtt_slow` ms), an endless
/// upload; line 0 (the busier) is blackholed from `at` for `length`.
fn blackout(name: &str, rtt_fast: u64, rtt_slow: u64, at: Duration, length: Duration) -> Blackout {
    let mut sim: Sim<Stack> = Sim::new_mptcp(name);
    let mut busy = LinkParams::bdp_queue(20.0, Duration::from_millis(rtt_fast));
    busy.outages = vec![(at, at + length)];
    let other = LinkParams::bdp_queue(10.0, Duration::from_millis(rtt_slow));
    let (c, s, links) = sim.multipath(&[busy, other]);
    let to = SocketAddr::new(IpAddr::from([10, 9, 9, 9]), 80);
    let sink = MpSink::listen(to, 5);
    let got = sink.state();
    sim.set_app(s, sink);
    let paths = sim.paths(c);
    sim.set_app(c, MpSend::new(paths, to, u64::MAX / 2, 5));
    let start = sim.now();
    sim.run_for(at + length);
    let back = sim.link_stats(links[0], 0).delivered_bytes;
    let mut back_in_use = None;
    for k in 1..=200 {
        sim.run_for(Duration::from_millis(50));
        if sim.link_stats(links[0], 0).delivered_bytes > back + 20_000 {
            back_in_use = Some(Duration::from_millis(50 * k));
            break;
        }
    }
    let timeouts = |sim: &Sim<Stack>| {
        let st = sim.endpoint(c);
        let id = st.connection_ids()[0];
        st.subflows(id)
            .first()
            .and_then(|s| s.tcp.as_ref())
            .map_or(0, |t| t.timeouts)
    };
    let before = timeouts(&sim);
    sim.run_for(Duration::from_secs(2));
    let timeouts_after = timeouts(&sim) - before;
    let g = got.borrow();
    let (from, to) = (
        start + at.saturating_sub(Duration::from_millis(500)),
        start + at + Duration::from_secs(3),
    );
    let times: Vec<_> = g
        .samples
        .iter()
        .map(|s| s.0)
        .filter(|&t| t >= from && t <= to)
        .collect();
    let longest_gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::MAX);
    assert!(g.first_bad.is_none());
    Blackout {
        longest_gap,
        back_in_use,
        timeouts_after,
    }
}

/// Issue 15's targets: the line that comes back carries data again within a second, with no
/// second drop; and a longest gap of 300 ms. Met: no second drop, and the line used again
/// 0.6-0.8 s after blackouts of 1.3 s and 4 s. Not yet: 1.1-1.25 s after a 9 s blackout, and
/// gaps of 250-400 ms; both are kept here from getting worse (see docs/user-stack.md).
#[test]
fn a_blackholed_path_stalls_delivery_briefly_and_is_used_again_soon_after_it_returns() {
    for (fast, slow) in [(20, 40), (40, 80), (80, 20), (20, 20)] {
        for (at_ms, length_ms) in [(3_000, 4_000), (3_137, 1_300), (4_450, 9_000)] {
            let b = blackout(
                "failover-blackhole",
                fast,
                slow,
                Duration::from_millis(at_ms),
                Duration::from_millis(length_ms),
            );
            println!(
                "rtt {fast}/{slow} ms, blackout {length_ms} ms at {at_ms} ms: longest gap {:?}, path back in use after {:?}, {} timeouts after",
                b.longest_gap, b.back_in_use, b.timeouts_after
            );
            let case = format!("rtt {fast}/{slow}, {length_ms} ms at {at_ms} ms");
            assert!(
                b.longest_gap < Duration::from_millis(450),
                "{case}: delivery stopped for {:?}",
                b.longest_gap
            );
            assert!(
                b.back_in_use
                    .is_some_and(|t| t <= Duration::from_millis(1_500)),
                "{case}: the path was used again after {:?}",
                b.back_in_use
            );
            assert_eq!(b.timeouts_after, 0, "{case}: the path dropped again");
        }
    }
}
