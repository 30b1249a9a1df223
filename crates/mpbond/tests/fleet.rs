//! A converter as one instance of a fleet behind a load balancer (issue 17), in the lab: with
//! `--fleet-address` it sets the C flag in its `MP_CAPABLE` and announces its own address
//! (RFC 8684 §3.1, §3.4.1), and the gateway joins only that address, never the balanced one.
//! Read on the wire by mpbond's decoder from a capture made in the test.
//!
//! Needs root (network namespaces); without it the test says so and passes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mpbond::decode::decode;
use mpbond::decode::record::PacketRecord;
use mpbond::lab::failover::{self, PatternServer, Transport};
use mpbond::lab::testing::{
    CONVERTER, Capture, Daemon, TempDir, TestLab, skip_unless_root, start_bonding,
};
use mpbond::lab::{Role, netns};

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");
const PATTERN: &str = "203.0.113.2:9000";
/// The instance's own address (on the vps's `lo`, next to the balanced one, 198.51.100.1).
const OWN: &str = "198.51.100.7";

fn sysctl(lab: &TestLab, name: &str) -> String {
    let out = lab
        .cmd(Role::Vps, "sysctl")
        .args(["-n", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Downloads `len` bytes of the pattern from the LAN host through the gateway: whether every
/// byte came, in order.
fn download(lab: &TestLab, len: u64) -> bool {
    let addr: SocketAddr = PATTERN.parse().unwrap();
    netns::in_netns(lab.info().netns(Role::Lan), move || {
        let mut c = failover::connect(addr, Transport::Tcp, Duration::from_secs(20)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut req = len.to_le_bytes().to_vec();
        req.extend_from_slice(&3u64.to_le_bytes());
        c.write_all(&req).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        let mut want = vec![0u8; got.len()];
        failover::fill(3, 0, &mut want);
        got.len() as u64 == len && got == want
    })
    .unwrap()
}

#[test]
fn a_fleet_converter_sets_the_c_flag_and_the_gateway_joins_only_its_own_address() {
    if skip_unless_root(
        "a_fleet_converter_sets_the_c_flag_and_the_gateway_joins_only_its_own_address",
    ) {
        return;
    }
    let lab = TestLab::up(EXE, &["dsl:20mbit:10ms", "lte:10mbit:40ms"]);
    let web = lab.info().netns(Role::Web).to_owned();
    let _pattern = PatternServer::start(&web, PATTERN.parse().unwrap(), Transport::Tcp).unwrap();
    let ok = Command::new("ip")
        .args(["-n", lab.info().netns(Role::Vps), "addr", "add"])
        .args([&format!("{OWN}/32"), "dev", "lo"])
        .status()
        .unwrap();
    assert!(ok.success());
    let dir = TempDir::new("fleet");
    let (gateway, mut first) = start_bonding(&lab, EXE, &dir.0, &["dsl", "lte"], &[]);
    assert!(first.stop());
    let before = sysctl(&lab, "net.mptcp.allow_join_initial_addr_port");
    let keys = dir.path("converter.keys").to_string_lossy().into_owned();
    let port = CONVERTER.parse::<SocketAddr>().unwrap().port();
    let listen = format!("0.0.0.0:{port}");
    let mut converter = Daemon::start(
        lab.info(),
        Role::Vps,
        Path::new(EXE),
        &[
            "converter",
            "--listen",
            &listen,
            "--keys",
            &keys,
            "--fleet-address",
            OWN,
        ],
        dir.path("converter.log"),
        "converter ready",
    )
    .unwrap();
    assert_eq!(sysctl(&lab, "net.mptcp.allow_join_initial_addr_port"), "0");

    let pcap = dir.path("vps.pcap");
    let capture = Capture::start(&lab, Role::Vps, &format!("tcp port {port}"), &pcap);
    assert!(download(&lab, 4_000_000), "the download arrives intact");
    capture.stop();

    let mut packets: Vec<PacketRecord> = Vec::new();
    decode(std::fs::File::open(&pcap).unwrap(), |p| {
        packets.push(p.clone());
    })
    .unwrap();
    let balanced: IpAddr = CONVERTER.parse::<SocketAddr>().unwrap().ip();
    let own: IpAddr = OWN.parse().unwrap();
    let has = |p: &PacketRecord, subtype: &str| p.mptcp.iter().any(|o| o.subtype == subtype);
    let c_flag = packets.iter().any(|p| {
        p.src == balanced
            && p.flags.contains('S')
            && p.mptcp.iter().any(|o| {
                o.subtype == "MP_CAPABLE" && o.flags.as_deref().is_some_and(|f| f.contains('C'))
            })
    });
    assert!(c_flag, "the SYN/ACK's MP_CAPABLE carries the C flag");
    let announced = packets.iter().any(|p| {
        p.mptcp
            .iter()
            .any(|o| o.subtype == "ADD_ADDR" && o.address == Some(own))
    });
    assert!(announced, "ADD_ADDR {OWN} on the wire");
    let join_syns: Vec<&PacketRecord> = packets
        .iter()
        .filter(|p| p.flags == "S" && has(p, "MP_JOIN"))
        .collect();
    eprintln!(
        "joins: {:?}",
        join_syns
            .iter()
            .map(|p| (p.src, p.dst, p.dport))
            .collect::<Vec<_>>()
    );
    assert!(!join_syns.is_empty(), "the gateway joined");
    for p in &join_syns {
        assert_eq!(
            p.dst, own,
            "every join goes to the instance's own address: {p:?}"
        );
    }
    // Once the converter is gone, the sysctl is as it was.
    assert!(converter.stop());
    assert_eq!(
        sysctl(&lab, "net.mptcp.allow_join_initial_addr_port"),
        before
    );
    drop(gateway);
}
