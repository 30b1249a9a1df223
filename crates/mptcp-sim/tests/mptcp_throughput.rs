//! The MPTCP throughput table: one connection over 2 or 3 paths, balanced and unbalanced, with
//! and without loss, as a fraction of the sum of the paths' payload rates (what 1500-byte
//! packets with timestamps and a 28-byte DSS leave: 1420 of 1500 bytes). Goodput is the
//! slope of bytes delivered between 3 s and 13 s (slow start over). The cases of the Linux
//! selftest `simult_flows.sh` (10+10 and 10+3 Mbit/s) must reach 0.95 without loss (Linux's
//! own bar is 0.85).
//!
//! The table is kept in `tests/snapshots/mptcp_throughput.txt`: the simulation is
//! deterministic, so any change in the engine's behaviour shows as a diff
//! (`UPDATE_SNAPSHOTS=1` rewrites it after a change that is meant).
#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use mptcp_sim::Sim;
use mptcp_sim::apps::mptcp::{MpSend, MpSink};
use mptcp_sim::link::LinkParams;

/// Payload bytes of a 1500-byte packet: 20 IP, 20 TCP, 12 timestamps, 28 DSS.
const PAYLOAD_SHARE: f64 = 1420.0 / 1500.0;

/// A case: its name, its paths as (Mbit/s, RTT ms), and the loss on every path.
type Case = (&'static str, &'static [(f64, u64)], f64);

const CASES: [Case; 8] = [
    ("10+10", &[(10.0, 20), (10.0, 20)], 0.0),
    ("10+3", &[(10.0, 20), (3.0, 20)], 0.0),
    ("10+10 rtt 10/80", &[(10.0, 10), (10.0, 80)], 0.0),
    ("20+10 dsl/lte", &[(20.0, 20), (10.0, 80)], 0.0),
    ("10+10+10", &[(10.0, 20), (10.0, 30), (10.0, 40)], 0.0),
    ("10+5+2", &[(10.0, 20), (5.0, 40), (2.0, 60)], 0.0),
    ("10+10 loss 0.5%", &[(10.0, 20), (10.0, 20)], 0.005),
    ("10+3 loss 1%", &[(10.0, 20), (3.0, 20)], 0.01),
];

fn run(paths: &[(f64, u64)], loss: f64) -> (f64, f64) {
    let mut sim = Sim::mptcp_with_seed("mptcp-throughput", 42);
    let params: Vec<LinkParams> = paths
        .iter()
        .map(|&(mbit, rtt)| {
            let mut p = LinkParams::bdp_queue(mbit, Duration::from_millis(rtt));
            p.loss = loss;
            p
        })
        .collect();
    let (c, s, _) = sim.multipath(&params);
    let to = SocketAddr::new(IpAddr::from([10, 9, 9, 9]), 80);
    let sink = MpSink::listen(to, 5);
    let got = sink.state();
    sim.set_app(s, sink);
    let ps = sim.paths(c);
    sim.set_app(c, MpSend::new(ps, to, 1 << 40, 5));
    let start = sim.now();
    sim.run_for(Duration::from_secs(13));
    let g = got.borrow();
    let (from, to) = (
        start + Duration::from_secs(3),
        start + Duration::from_secs(13),
    );
    let bytes = g.bytes_at(to) - g.bytes_at(from);
    let goodput = bytes as f64 * 8.0 / 10.0;
    let sum: f64 = paths.iter().map(|p| p.0 * 1e6).sum::<f64>() * PAYLOAD_SHARE;
    (goodput, goodput / sum)
}

#[test]
fn mptcp_throughput_table_matches_its_snapshot_and_fills_the_paths() {
    let mut table = String::from("case                  goodput Mbit/s   of the paths' sum\n");
    let mut short = Vec::new();
    for (name, paths, loss) in CASES {
        let (goodput, share) = run(paths, loss);
        writeln!(
            table,
            "{name:<20} {:>10.2}      {share:>6.3}",
            goodput / 1e6
        )
        .unwrap();
        if loss == 0.0 && (name == "10+10" || name == "10+3") && share < 0.95 {
            short.push(format!("{name}: {share:.3}"));
        }
    }
    eprintln!("{table}");
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/mptcp_throughput.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() || !path.exists() {
        std::fs::write(&path, &table).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        table, want,
        "the table changed (UPDATE_SNAPSHOTS=1 rewrites it if meant)"
    );
    assert!(short.is_empty(), "below 0.95 of the paths: {short:?}");
}
