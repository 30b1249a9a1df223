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
