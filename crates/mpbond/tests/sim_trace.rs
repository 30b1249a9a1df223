//! A simulated run's packet trace is a pcap that `mpbond decode` and tshark read: every packet
//! the simulator sent is in it, as TCP, with the retransmission of a segment the link lost.
#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::process::Command;
use std::time::Duration;

use mptcp_sim::Sim;
use mptcp_sim::apps::{BulkSend, Sink};
use mptcp_sim::link::LinkParams;

#[test]
fn a_simulated_trace_reads_in_mpbond_decode_and_tshark() {
    let path = std::env::temp_dir().join(format!("mpbond-sim-trace-{}.pcap", std::process::id()));
    let offered = {
        let mut sim = Sim::with_seed("trace", 5);
        sim.trace_to(&path).unwrap();
        let (a, b) = sim.pair(LinkParams::bdp_queue(10.0, Duration::from_millis(20)));
        // The 10th data segment is lost once.
        let mut data = 0;
        sim.set_filter(
            0,
            0,
            Box::new(move |_, p| {
                if p.payload_len > 0 {
                    data += 1;
                }
                p.payload_len > 0 && data == 10
            }),
        );
        let sink = Sink::listen(sim.addr(b, 80));
        let got = sink.state();
        sim.set_app(b, sink);
        let to = sim.addr(b, 80);
        sim.set_app(a, BulkSend::new(sim.addr(a, 0), to, 200_000, 1));
        assert!(sim.run_until(|_| got.borrow().finished, Duration::from_secs(10)));
        sim.run_for(Duration::from_secs(1));
        assert!(got.borrow().intact(200_000));
        sim.link_stats(0, 0).offered + sim.link_stats(0, 1).offered
    };
    let summary = mpbond::decode::decode(std::fs::File::open(&path).unwrap(), |_| {}).unwrap();
    assert_eq!(summary.frames, offered, "every packet sent is in the trace");
    assert_eq!(summary.tcp_packets, offered);
    assert_eq!(summary.other_subflows, 1, "one plain TCP connection");
    assert!(summary.malformed.is_empty());
    match Command::new("tshark")
        .args(["-r"])
        .arg(&path)
        .args([
            "-T",
            "fields",
            "-e",
            "tcp.analysis.retransmission",
            "-e",
            "tcp.checksum.status",
        ])
        .args(["-o", "tcp.check_checksum:TRUE"])
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                text.lines().count() as u64,
                offered,
                "tshark reads every packet"
            );
            assert!(
                text.lines().any(|l| l.starts_with('1')),
                "tshark sees the retransmission"
            );
            // Wireshark's checksum status: 0 bad, 1 good, 2 unverified.
            assert!(
                text.lines().all(|l| l.ends_with("\t1")),
                "every TCP checksum verifies:\n{text}"
            );
        }
        _ => eprintln!("SKIPPED the tshark half: tshark is not installed"),
    }
    let _ = std::fs::remove_file(&path);
}

/// An MPTCP run of the engine in the simulator — two paths, checksums on, an address
/// announced and joined, a segment lost and sent again — reads in `mpbond decode` with every
/// token, HMAC and checksum right, and tshark's MPTCP analysis (mappings and inter-subflow
/// analysis on) raises no warning.
#[test]
fn a_simulated_mptcp_trace_checks_out_in_mpbond_decode_and_tshark() {
    use mptcp_proto::mptcp::{Path, Stack, StackConfig};
    use mptcp_sim::apps::mptcp::{MpSend, MpSink};
    use std::net::{IpAddr, SocketAddr};

    let path = std::env::temp_dir().join(format!("mpbond-sim-mptcp-{}.pcap", std::process::id()));
    {
        let mut cfg = StackConfig::default();
        cfg.conn.checksums = true;
        let mut sim: Sim<Stack> = Sim::build("mptcp-trace", 5, cfg);
        sim.trace_to(&path).unwrap();
        let c = sim.add_host("client");
        let s = sim.add_host("server");
        let line = |rtt| LinkParams::bdp_queue(10.0, Duration::from_millis(rtt));
        let (a0, a1) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 1, 1]));
        let (s0, s1) = (IpAddr::from([10, 9, 9, 9]), IpAddr::from([10, 9, 9, 10]));
        sim.link(c, a0, s, s0, line(20), line(20));
        sim.link(c, a1, s, s0, line(40), line(40));
        sim.link(c, a0, s, s1, line(30), line(30));
        // The 20th data segment on the first path is lost once.
        let mut data = 0;
        sim.set_filter(
            0,
            0,
            Box::new(move |_, p| {
                if p.payload_len > 0 {
                    data += 1;
                }
                p.payload_len > 0 && data == 20
            }),
        );
        let to = SocketAddr::new(s0, 80);
        let sink = MpSink::listen(to, 3);
        let got = sink.state();
        sim.set_app(s, sink);
        sim.with_endpoint(s, |now, st| st.announce(now, SocketAddr::new(s1, 0)));
        let paths = [a0, a1]
            .into_iter()
            .map(|local| Path {
                local,
                backup: false,
            })
            .collect();
        sim.set_app(c, MpSend::new(paths, to, 2_000_000, 3));
        assert!(sim.run_until(|_| got.borrow().finished, Duration::from_secs(20)));
        sim.run_for(Duration::from_secs(1));
        assert!(got.borrow().intact(2_000_000));
    }
    let summary = mpbond::decode::decode(std::fs::File::open(&path).unwrap(), |_| {}).unwrap();
    assert!(summary.malformed.is_empty(), "{:?}", summary.malformed);
    assert_eq!(summary.connections.len(), 1, "one MPTCP connection");
    let conn = &summary.connections[0];
    assert!(conn.checksums, "checksums negotiated");
    assert!(
        conn.subflows.len() >= 3,
        "the first subflow, a line's join and the announced address's: {:?}",
        conn.subflows
    );
    assert_eq!(summary.checks.failed, 0, "{:?}", summary.checks.failures);
    assert!(summary.checks.passed > 100, "{:?}", summary.checks);
    let count = |filter| mpbond::lab::testing::tshark_count(&path, filter);
    match count("tcp.options.mptcp.subtype == 2") {
        None => eprintln!("SKIPPED the tshark half: tshark is not installed"),
        Some(dss) => {
            assert!(dss > 1000, "tshark sees the DSS options");
            let warnings = mpbond::lab::testing::TSHARK_MPTCP_WARNINGS;
            assert_eq!(
                count(warnings),
                Some(0),
                "tshark warns about MPTCP ({warnings})"
            );
        }
    }
    let _ = std::fs::remove_file(&path);
}
