//! MPTCP properties over random seeds and random path sets: 1–4 paths of random rates and
//! delays, loss up to 5 %, a path cut for good or for a while, a line set down and up; the
//! bytes delivered are exactly the bytes written, in order, then the end of the data. A
//! failing case prints its seed (the simulator does) and proptest shrinks it.
#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::time::Duration;

use mptcp_proto::mptcp::Path;
use mptcp_sim::Sim;
use mptcp_sim::apps::mptcp::{MpSend, MpSink};
use mptcp_sim::link::LinkParams;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct PathCase {
    rate_mbit: f64,
    rtt_ms: u64,
    loss: f64,
    /// An outage: start and length, ms (length 0: none; `u64::MAX`: for good).
    outage: (u64, u64),
    backup: bool,
}

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    len: u64,
    paths: Vec<PathCase>,
    checksums: bool,
}

fn path_case() -> impl Strategy<Value = PathCase> {
    (
        prop_oneof![Just(1.0), Just(5.0), Just(20.0)],
        2u64..150,
        prop_oneof![2 => Just(0.0), 1 => 0.0..0.05f64],
        (
            0u64..4000,
            prop_oneof![2 => Just(0u64), 1 => 100u64..3000, 1 => Just(u64::MAX)],
        ),
        prop_oneof![4 => Just(false), 1 => Just(true)],
    )
        .prop_map(|(rate_mbit, rtt_ms, loss, outage, backup)| PathCase {
            rate_mbit,
            rtt_ms,
            loss,
            outage,
            backup,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        0u64..1_500_000,
        prop::collection::vec(path_case(), 1..=4),
        prop_oneof![3 => Just(false), 1 => Just(true)],
    )
        .prop_map(|(seed, len, mut paths, checksums)| {
            // The first path never dies for good: a connection whose every path is cut
            // cannot finish (that it ends with an error is another test's business).
            if paths[0].outage.1 == u64::MAX {
                paths[0].outage.1 = 1000;
            }
            paths[0].backup = false;
            Case {
                seed,
                len,
                paths,
                checksums,
            }
        })
}

fn run(c: &Case) -> Result<(), TestCaseError> {
    let mut sim = Sim::mptcp_with_seed("mptcp-property", c.seed);
    sim.endpoint_config.conn.checksums = c.checksums;
    let params: Vec<LinkParams> = c
        .paths
        .iter()
        .map(|p| {
            let mut l = LinkParams::bdp_queue(p.rate_mbit, Duration::from_millis(p.rtt_ms));
            l.loss = p.loss;
            if p.outage.1 > 0 {
                let start = Duration::from_millis(p.outage.0);
                let end = start.saturating_add(Duration::from_millis(p.outage.1.min(1 << 40)));
                l.outages = vec![(start, end)];
            }
            l
        })
        .collect();
    let (client, server, _) = sim.multipath(&params);
    let to = std::net::SocketAddr::new(std::net::IpAddr::from([10, 9, 9, 9]), 80);
    let sink = MpSink::listen(to, c.seed);
    let got = sink.state();
    sim.set_app(server, sink);
    let paths: Vec<Path> = sim
        .addrs(client)
        .into_iter()
        .zip(&c.paths)
        .map(|(local, p)| Path {
            local,
            backup: p.backup,
        })
        .collect();
    sim.set_app(client, MpSend::new(paths, to, c.len, c.seed));
    let finished = sim.run_until(|_| got.borrow().finished, Duration::from_secs(900));
    let g = got.borrow();
    if std::env::var_os("MPTCP_PROPERTY_TRACE").is_some() {
        eprintln!(
            "{} bytes over {} paths in {:?}",
            g.received,
            c.paths.len(),
            sim.elapsed()
        );
    }
    prop_assert!(
        finished,
        "not finished after 900 s: {} of {} bytes, ended {:?}",
        g.received,
        c.len,
        g.ended
    );
    prop_assert_eq!(g.first_bad, None, "a byte differs from what was written");
    prop_assert_eq!(g.received, c.len);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_bytes_delivered_are_the_bytes_written_over_any_paths(c in case()) {
        run(&c)?;
    }
}
