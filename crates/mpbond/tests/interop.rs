//! mpbond's own MPTCP (`--stack user`) against the Linux kernel's, in the lab, in both roles,
//! judged as the kernel's `mptcp_join.sh` judges: by the kernel's own MIB counters (`nstat`,
//! `MPTcpExt*`). Over the lab's two lines (dsl 20 Mbit/s + 10 ms, lte 10 Mbit/s + 40 ms),
//! 64 MiB each way intact, both lines carrying data, and no counter of a protocol error
//! moving. A capture of one run in each role must check out in `mpbond decode` (every token,
//! HMAC and checksum right) and raise no MPTCP warning in tshark's analysis. Needs root
//! (skipped otherwise).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use mpbond::lab::Role;
use mpbond::lab::testing::{
    Capture, TSHARK_MPTCP_WARNINGS, TempDir, TestLab, skip_unless_root, tshark_count,
    write_random_file,
};
use mpbond::lab::transfer::{Direction, Transfer, file_sha256, transfer};
use mptcp_proto::mptcp::Congestion;

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");
const LEN: usize = 64 << 20;
/// The uploads whose lines are cut.
const SIZE: usize = 24 << 20;

/// The kernel's MPTCP counters in `role`'s namespace (`nstat -az`: absolute values).
fn mptcp_mib(lab: &TestLab, role: Role) -> HashMap<String, u64> {
    let out = lab
        .cmd(role, "nstat")
        .args(["-az", "--json"])
        .output()
        .expect("nstat (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    // {"kernel":{"IpInReceives":1,...}}: flat enough to read without a JSON parser.
    text.split([',', '{', '}'])
        .filter_map(|kv| {
            let (k, v) = kv.split_once(':')?;
            let k = k.trim().trim_matches('"');
            k.starts_with("MPTcpExt")
                .then(|| Some((k.to_owned(), v.trim().parse().ok()?)))
                .flatten()
        })
        .collect()
}

/// The counters that moved, and by how much.
fn moved(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> Vec<(String, u64)> {
    after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, v)| {
            (
                k.trim_start_matches("MPTcpExt").to_owned(),
                v - before.get(k).unwrap_or(&0),
            )
        })
        .collect()
}

fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>, k: &str) -> u64 {
    let key = format!("MPTcpExt{k}");
    after.get(&key).copied().unwrap_or(0) - before.get(&key).copied().unwrap_or(0)
}

/// Counters of protocol errors: none may move.
const ERRORS: [&str; 6] = [
    "DSSNotMatching",
    "DataCsumErr",
    "InfiniteMapRx",
    "MPFailRx",
    "MPRstRx",
    "DSSNoMatchTCP",
];

fn sh(lab: &TestLab, role: Role, cmd: &str) -> String {
    let out = lab.cmd(role, "sh").args(["-c", cmd]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A lab with `lines` (the default ones when empty) whose vps's kernel takes joins and
/// announced addresses (four of each).
fn lab_taking_joins(lines: &[&str]) -> TestLab {
    let lab = TestLab::up(EXE, lines);
    sh(
        &lab,
        Role::Vps,
        "ip mptcp limits set subflows 4 add_addr_accepted 4",
    );
    lab
}

/// Bytes each line delivered upstream (gw → vps) and downstream since `before`.
fn line_bytes(lab: &TestLab, before: &mpbond::lab::LabStats, upstream: bool) -> Vec<(String, u64)> {
    let after = lab.stats();
    after
        .lines
        .iter()
        .map(|l| {
            let pick = |x: &mpbond::lab::emulator::stats::LineStats| {
                if upstream {
                    x.upstream.delivered_bytes
                } else {
                    x.downstream.delivered_bytes
                }
            };
            let b = before
                .lines
                .iter()
                .find(|x| x.name == l.name)
                .map_or(0, pick);
            (l.name.clone(), pick(l) - b)
        })
        .collect()
}

/// Asserts the kernel counted none of [`ERRORS`] between `before` and `after`, but those of
/// `allowed` (resets, where a test takes a line down).
fn assert_no_error(
    name: &str,
    before: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
    allowed: &[&str],
) {
    for k in ERRORS.iter().filter(|k| !allowed.contains(k)) {
        assert_eq!(delta(before, after, k), 0, "{name}: the kernel counted {k}");
    }
}

/// Asserts transfer `t` of run `name` brought the `SIZE` bytes whose SHA-256 is `want`, prints
/// its rate, `lines` (what each line carried, when given) and the kernel counters that moved
/// since `before`, and returns the counters now.
fn intact(
    lab: &TestLab,
    name: &str,
    t: &Transfer,
    want: &str,
    before: &HashMap<String, u64>,
    lines: Option<&[(String, u64)]>,
) -> HashMap<String, u64> {
    assert_eq!(t.bytes, SIZE as u64, "{name}: every byte arrived");
    assert_eq!(t.sha256, want, "{name}: what arrived is what was sent");
    let after = mptcp_mib(lab, Role::Vps);
    eprintln!(
        "{name}: {:.1} Mbit/s over the whole transfer; lines {lines:?}; kernel counters moved: {:?}",
        t.bps() / 1e6,
        moved(before, &after)
    );
    after
}

/// What every 64 MiB run must show: the kernel counted each of `counted`, none of
/// [`ERRORS`], and each line carried more than a tenth.
fn check_run(
    name: &str,
    before: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
    lines: &[(String, u64)],
    counted: &[&str],
) {
    for k in counted {
        assert!(
            delta(before, after, k) >= 1,
            "{name}: the kernel counted no {k}"
        );
    }
    assert_no_error(name, before, after, &[]);
    for (line, bytes) in lines {
        assert!(
            *bytes > (LEN as u64) / 10,
            "{name}: line {line} carried only {bytes} bytes"
        );
    }
}

#[test]
fn our_client_against_a_kernel_server_carries_64_mib_each_way_over_both_lines() {
    if skip_unless_root(
        "our_client_against_a_kernel_server_carries_64_mib_each_way_over_both_lines",
    ) {
        return;
    }
    // The kernel server takes up to 4 subflows per connection.
    let lab = lab_taking_joins(&[]);
    // The kernel announces its lte address (ADD_ADDR), which our client joins too.
    let vps_lte = lab.info().vps_line_addr("lte", false).unwrap();
    sh(
        &lab,
        Role::Vps,
        &format!("ip mptcp endpoint add {vps_lte} signal"),
    );
    let dir = TempDir::new("interop-client");
    let file = dir.path("data");
    write_random_file(&file, LEN, 7);
    let (want, _) = file_sha256(&file).unwrap();
    let vps = lab.info().vps_line_addr("dsl", false).unwrap();
    let target = format!("{vps}:5000");
    // The last run with DSS checksums: the kernel asks for them (flag A), so both sides
    // compute and check them; one we got wrong would show as DataCsumErr or MPFailRx.
    for (direction, checksums) in [
        (Direction::Download, false),
        (Direction::Upload, false),
        (Direction::Upload, true),
    ] {
        sh(
            &lab,
            Role::Vps,
            &format!(
                "sysctl -qw net.mptcp.checksum_enabled={}",
                u8::from(checksums)
            ),
        );
        let name = format!(
            "{}{}",
            format!("{direction:?}").to_lowercase(),
            if checksums { "-checksums" } else { "" }
        );
        let before = mptcp_mib(&lab, Role::Vps);
        let stats_before = lab.stats();
        let out = dir.path(&name);
        let t = transfer(
            lab.info(),
            Path::new(EXE),
            Role::Vps,
            &["--stack", "kernel", "0.0.0.0:5000"],
            Role::Gw,
            &["--stack", "user", "--wan", "dsl", "--wan", "lte", &target],
            direction,
            &file,
            &out,
        )
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(t.bytes, LEN as u64, "{name}: every byte arrived");
        assert_eq!(t.sha256, want, "{name}: what arrived is what was sent");
        let after = mptcp_mib(&lab, Role::Vps);
        let lines = line_bytes(&lab, &stats_before, direction == Direction::Upload);
        eprintln!(
            "{name}: {:.1} Mbit/s; lines {lines:?}; kernel counters moved: {:?}",
            t.bps() / 1e6,
            moved(&before, &after)
        );
        check_run(
            &name,
            &before,
            &after,
            &lines,
            &[
                "MPCapableSYNRX",
                "MPCapableACKRX",
                "MPJoinSynRx",
                "MPJoinAckRx",
                "AddAddrTx",
                "EchoAdd",
            ],
        );
        // Joins from our second line and to the address the kernel announced.
        assert!(
            delta(&before, &after, "MPJoinAckRx") >= 2,
            "{name}: the kernel took {} joins",
            delta(&before, &after, "MPJoinAckRx")
        );
        let _ = std::fs::remove_file(&out);
    }
}

#[test]
fn a_kernel_client_against_our_server_carries_64_mib_each_way_over_both_lines() {
    if skip_unless_root(
        "a_kernel_client_against_our_server_carries_64_mib_each_way_over_both_lines",
    ) {
        return;
    }
    let lab = TestLab::up(EXE, &[]);
    let dir = TempDir::new("interop-server");
    let file = dir.path("data");
    write_random_file(&file, LEN, 9);
    let (want, _) = file_sha256(&file).unwrap();
    let gw_dsl = lab.info().gw_line_addr("dsl", false).unwrap();
    let gw_lte = lab.info().gw_line_addr("lte", false).unwrap();
    let target = format!("{gw_dsl}:5000");
    // The kernel client (mpbond's path manager over the kernel's MPTCP) joins from its lte
    // address too.
    let dsl = format!("dsl:via={gw_dsl}");
    let lte = format!("lte:via={gw_lte}");
    for direction in [Direction::Download, Direction::Upload] {
        let name = format!("{direction:?}").to_lowercase();
        let before = mptcp_mib(&lab, Role::Vps);
        let stats_before = lab.stats();
        let out = dir.path(&name);
        let t = transfer(
            lab.info(),
            Path::new(EXE),
            Role::Gw,
            &["--stack", "user", "0.0.0.0:5000"],
            Role::Vps,
            &["--stack", "kernel", "--wan", &dsl, "--wan", &lte, &target],
            direction,
            &file,
            &out,
        )
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(t.bytes, LEN as u64, "{name}: every byte arrived");
        assert_eq!(t.sha256, want, "{name}: what arrived is what was sent");
        let after = mptcp_mib(&lab, Role::Vps);
        // The client is on the vps: its uploads go downstream (vps → gw).
        let lines = line_bytes(&lab, &stats_before, direction == Direction::Download);
        eprintln!(
            "{name}: {:.1} Mbit/s; lines {lines:?}; kernel counters moved: {:?}",
            t.bps() / 1e6,
            moved(&before, &after)
        );
        check_run(
            &name,
            &before,
            &after,
            &lines,
            &["MPCapableSYNACKRX", "MPJoinSynAckRx"],
        );
        let _ = std::fs::remove_file(&out);
    }
}

#[test]
fn our_client_loses_no_byte_when_a_line_is_blackholed_mid_upload() {
    if skip_unless_root("our_client_loses_no_byte_when_a_line_is_blackholed_mid_upload") {
        return;
    }
    let lab = lab_taking_joins(&[]);
    let dir = TempDir::new("interop-blackhole");
    let file = dir.path("data");
    write_random_file(&file, SIZE, 11);
    let (want, _) = file_sha256(&file).unwrap();
    let vps = lab.info().vps_line_addr("dsl", false).unwrap();
    let target = format!("{vps}:5000");
    // Each line, at several moments: dsl carries the first subflow and most of the data.
    for (line, eighths) in [("dsl", 2u64), ("lte", 4), ("dsl", 6), ("lte", 1)] {
        let name = format!("{line} cut after {eighths}/8");
        let before = mptcp_mib(&lab, Role::Vps);
        let start = lab.stats();
        let out = dir.path("upload");
        let done = std::sync::atomic::AtomicBool::new(false);
        let t = std::thread::scope(|s| {
            let cutter = s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let up: u64 = line_bytes(&lab, &start, true).iter().map(|l| l.1).sum();
                    if up > (SIZE as u64) * eighths / 8 {
                        lab.set_state(line, mpbond::lab::LineState::Blackhole);
                        return true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                false
            });
            let t = transfer(
                lab.info(),
                Path::new(EXE),
                Role::Vps,
                &["--stack", "kernel", "0.0.0.0:5000"],
                Role::Gw,
                &["--stack", "user", "--wan", "dsl", "--wan", "lte", &target],
                Direction::Upload,
                &file,
                &out,
            );
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(
                cutter.join().unwrap(),
                "{name}: the transfer ended before the cut"
            );
            t
        })
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        lab.set_state(line, mpbond::lab::LineState::Up);
        let lines = line_bytes(&lab, &start, true);
        let after = intact(&lab, &name, &t, &want, &before, Some(&lines));
        assert_no_error(&name, &before, &after, &[]);
        // The path manager gave the line up, and our client withdrew its address on the
        // other line (REMOVE_ADDR, §3.4.2), since no reset of ours could reach the kernel on
        // the blackholed one: the kernel counted it (`RmAddr` counts each address ID a
        // REMOVE_ADDR names; `RmSubflow` counts only the kernel's own removals).
        assert!(
            delta(&before, &after, "RmAddr") >= 1,
            "{name}: the kernel counted no REMOVE_ADDR"
        );
        let _ = std::fs::remove_file(&out);
    }
}

/// Every scheduler of our client uploads to a kernel server over both lines, intact and with
/// no protocol error counted. With `redundant` the kernel judges the copies: it counted
/// duplicate data (`DuplicateData`) for much of the upload, and the lines carried well over
/// one copy of it.
/// What [`upload_to_kernel_server`] saw.
struct Upload {
    transfer: Transfer,
    /// Bytes each line carried upstream.
    lines: Vec<(String, u64)>,
    /// The kernel's counters before and after.
    before: HashMap<String, u64>,
    after: HashMap<String, u64>,
}

/// An upload of `file` (SHA-256 `want`) from our client on the gw (`--stack user`, `tuning`,
/// both lines) to a kernel server on the vps, checked whole (every byte, no kernel error).
fn upload_to_kernel_server(
    lab: &TestLab,
    dir: &TempDir,
    file: &Path,
    want: &str,
    name: &str,
    tuning: &[&str],
) -> Upload {
    let vps = lab.info().vps_line_addr("dsl", false).unwrap();
    let target = format!("{vps}:5000");
    let before = mptcp_mib(lab, Role::Vps);
    let start = lab.stats();
    let out = dir.path("upload");
    let mut args = vec!["--stack", "user"];
    args.extend_from_slice(tuning);
    args.extend_from_slice(&["--wan", "dsl", "--wan", "lte", &target]);
    let t = transfer(
        lab.info(),
        Path::new(EXE),
        Role::Vps,
        &["--stack", "kernel", "0.0.0.0:5000"],
        Role::Gw,
        &args,
        Direction::Upload,
        file,
        &out,
    )
    .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let lines = line_bytes(lab, &start, true);
    let after = intact(lab, name, &t, want, &before, Some(&lines));
    assert_no_error(name, &before, &after, &[]);
    let _ = std::fs::remove_file(&out);
    Upload {
        transfer: t,
        lines,
        before,
        after,
    }
}

#[test]
fn our_client_uploads_intact_to_a_kernel_server_with_every_scheduler() {
    if skip_unless_root("our_client_uploads_intact_to_a_kernel_server_with_every_scheduler") {
        return;
    }
    let lab = lab_taking_joins(&[]);
    let dir = TempDir::new("interop-schedulers");
    let file = dir.path("data");
    write_random_file(&file, SIZE, 13);
    let (want, _) = file_sha256(&file).unwrap();
    for scheduler in ["redundant", "blest", "ecf", "round-robin"] {
        let Upload {
            lines,
            before,
            after,
            ..
        } = upload_to_kernel_server(
            &lab,
            &dir,
            &file,
            &want,
            scheduler,
            &["--scheduler", scheduler],
        );
        let carried: u64 = lines.iter().map(|l| l.1).sum();
        if scheduler == "redundant" {
            // Segments of up to 1448 bytes: a quarter of the upload came twice at least.
            let dup = delta(&before, &after, "DuplicateData");
            assert!(
                dup > (SIZE as u64) / 1448 / 4,
                "redundant: the kernel counted {dup} duplicate segments"
            );
            assert!(
                carried > (SIZE as u64) * 5 / 4,
                "redundant: the lines carried {carried} bytes for {SIZE}"
            );
        } else {
            assert!(
                lines.iter().all(|l| l.1 > (SIZE as u64) / 20),
                "{scheduler}: both lines carried data: {lines:?}"
            );
        }
    }
}

/// Over DSL and a lossy LTE line (`mpbond bench`'s `dsl-lte`), our client uploads to a kernel
/// server with `cubic`, `bbr` and `auto` (the daemons' default): every byte arrives, the
/// kernel counts no error, and BBR, or `auto` once it has handed the lossy line to BBR, moves
/// at least half as much again as CUBIC, whose window on LTE is what 0.5 % loss lets it be.
#[test]
fn our_client_keeps_a_lossy_lines_rate_with_bbr_and_auto_against_a_kernel_server() {
    let name = "our_client_keeps_a_lossy_lines_rate_with_bbr_and_auto_against_a_kernel_server";
    if skip_unless_root(name) {
        return;
    }
    let lab = lab_taking_joins(&["dsl:16mbit:10ms", "lte:40mbit:30ms:loss=0.5"]);
    let dir = TempDir::new("interop-bbr");
    let file = dir.path("data");
    write_random_file(&file, SIZE, 17);
    let (want, _) = file_sha256(&file).unwrap();
    let mut rate = HashMap::new();
    for congestion in ["cubic", "bbr", "auto"] {
        let up = upload_to_kernel_server(
            &lab,
            &dir,
            &file,
            &want,
            congestion,
            &["--congestion", congestion],
        );
        rate.insert(congestion, up.transfer.bps());
    }
    for k in ["bbr", "auto"] {
        assert!(
            rate[k] >= 1.5 * rate["cubic"],
            "{k}: {:.1} Mbit/s against cubic's {:.1}",
            rate[k] / 1e6,
            rate["cubic"] / 1e6
        );
    }
}

/// The size of each captured run.
const CAPTURED: usize = 8 << 20;

/// What a capture of `runs` multipath runs with DSS checksums must show: `mpbond decode`
/// finds every token, HMAC and checksum right, tshark's MPTCP analysis no warning.
fn check_capture(pcap: &Path, runs: usize) {
    let summary = mpbond::decode::decode(std::fs::File::open(pcap).unwrap(), |_| {}).unwrap();
    assert!(!summary.truncated_capture, "the capture was cut short");
    assert!(summary.malformed.is_empty(), "{:?}", summary.malformed);
    let busy: Vec<_> = summary
        .connections
        .iter()
        .filter(|c| c.subflows.len() >= 2)
        .collect();
    assert!(
        busy.len() >= runs,
        "one multipath connection per run: {:?}",
        summary.connections
    );
    assert!(
        busy.iter().all(|c| c.checksums),
        "the kernel asked for checksums: {busy:?}"
    );
    assert_eq!(summary.checks.failed, 0, "{:?}", summary.checks.failures);
    assert!(summary.checks.passed > 1000, "{:?}", summary.checks);
    eprintln!(
        "capture: {} frames, {} MPTCP options, {} connections, {} checks passed",
        summary.frames,
        summary.mptcp_options,
        summary.connections.len(),
        summary.checks.passed
    );
    let count = |filter| tshark_count(pcap, filter).expect("tshark (scripts/test.sh installs it)");
    assert!(
        count("tcp.options.mptcp.subtype == 2") > 1000,
        "tshark sees the DSS options"
    );
    assert_eq!(
        count(TSHARK_MPTCP_WARNINGS),
        0,
        "tshark warns about MPTCP ({TSHARK_MPTCP_WARNINGS})"
    );
}

#[test]
fn captures_of_both_roles_check_out_in_mpbond_decode_and_tshark() {
    if skip_unless_root("captures_of_both_roles_check_out_in_mpbond_decode_and_tshark") {
        return;
    }
    let lab = lab_taking_joins(&[]);
    let vps_lte = lab.info().vps_line_addr("lte", false).unwrap();
    sh(
        &lab,
        Role::Vps,
        &format!("ip mptcp endpoint add {vps_lte} signal"),
    );
    // DSS checksums asked for by the kernel: decode checks every one of them.
    sh(&lab, Role::Vps, "sysctl -qw net.mptcp.checksum_enabled=1");
    let dir = TempDir::new("interop-capture");
    let file = dir.path("data");
    write_random_file(&file, CAPTURED, 13);
    let (want, _) = file_sha256(&file).unwrap();
    let pcap = dir.path("interop.pcap");
    // On the vps, which has no TUN: every packet is seen once, on the line it came by.
    let capture = Capture::start(&lab, Role::Vps, "tcp port 5000", &pcap);
    let vps = lab.info().vps_line_addr("dsl", false).unwrap();
    let gw_dsl = lab.info().gw_line_addr("dsl", false).unwrap();
    let gw_lte = lab.info().gw_line_addr("lte", false).unwrap();
    let (to_vps, to_gw) = (format!("{vps}:5000"), format!("{gw_dsl}:5000"));
    let (dsl, lte) = (format!("dsl:via={gw_dsl}"), format!("lte:via={gw_lte}"));
    let ours = ["--stack", "user", "--wan", "dsl", "--wan", "lte", &to_vps];
    let kernels = ["--stack", "kernel", "--wan", &dsl, "--wan", &lte, &to_gw];
    // Our client downloads from a kernel server; a kernel client uploads to our server, and
    // downloads from it (our data segments, most of them bare: the mapping rides on the first
    // segment it covers, RFC 8684 §3.3.1).
    let runs = [
        (
            Role::Vps,
            ["--stack", "kernel", "0.0.0.0:5000"],
            Role::Gw,
            &ours,
            Direction::Download,
        ),
        (
            Role::Gw,
            ["--stack", "user", "0.0.0.0:5000"],
            Role::Vps,
            &kernels,
            Direction::Upload,
        ),
        (
            Role::Gw,
            ["--stack", "user", "0.0.0.0:5000"],
            Role::Vps,
            &kernels,
            Direction::Download,
        ),
    ];
    for (server, server_args, client, client_args, direction) in runs {
        let out = dir.path("out");
        let t = transfer(
            lab.info(),
            Path::new(EXE),
            server,
            &server_args,
            client,
            client_args,
            direction,
            &file,
            &out,
        )
        .unwrap_or_else(|e| panic!("{direction:?}: {e:#}"));
        assert_eq!(
            t.bytes, CAPTURED as u64,
            "{direction:?}: every byte arrived"
        );
        assert_eq!(
            t.sha256, want,
            "{direction:?}: what arrived is what was sent"
        );
        let _ = std::fs::remove_file(&out);
    }
    capture.stop();
    check_capture(&pcap, 3);
    let ours = format!("(ip.src == {gw_dsl} || ip.src == {gw_lte}) && tcp.len > 0");
    let count = |filter: &str| tshark_count(&pcap, filter).expect("tshark");
    let (data, bare, slim) = (
        count(&ours),
        count(&format!("{ours} && !tcp.options.mptcp.subtype")),
        count(&format!(
            "{ours} && tcp.options.mptcp.subtype == 2 && tcp.options.mptcp.dataackpresent.flag == 0 \
             && tcp.options.mptcp.dseqn8.flag == 0 && tcp.options.mptcp.datalvllen > 0"
        )),
    );
    eprintln!("our data segments: {data}, bare: {bare}, with the mapping alone: {slim}");
    // Each mapping's first segment carries it, and hand-outs are of three segments or more
    // (4292 of 5711 went bare when this was written).
    assert!(
        bare * 2 >= data,
        "half of our data segments or more go bare: {bare} of {data}"
    );
    // The first segment of such a run carries the mapping alone, with a 32-bit data sequence
    // number and no DATA_ACK (a slim DSS); the kernel took every byte of it above.
    assert!(
        slim * 2 >= data - bare,
        "half of our DSS-carrying data segments or more carry the mapping alone: {slim} of {}",
        data - bare
    );
}

/// Our client's session that fails (its standard output is closed mid-download) is reset with
/// `MP_FASTCLOSE` (§3.5): the kernel server counts it and no protocol error.
#[test]
fn our_client_aborting_mid_download_sends_an_mp_fastclose_the_kernel_counts() {
    use std::io::Read;
    if skip_unless_root("our_client_aborting_mid_download_sends_an_mp_fastclose_the_kernel_counts")
    {
        return;
    }
    let lab = TestLab::up(EXE, &[]);
    let dir = TempDir::new("interop-fastclose");
    let file = dir.path("data");
    write_random_file(&file, SIZE, 17);
    let before = mptcp_mib(&lab, Role::Vps);
    let mut server = mpbond::lab::bonding::Daemon::start_with_stdio(
        lab.info(),
        Role::Vps,
        Path::new(EXE),
        &["listen", "--stack", "kernel", "0.0.0.0:5000"],
        dir.path("listen.log"),
        "listening",
        Some(&file),
        None,
    )
    .unwrap();
    let vps = lab.info().vps_line_addr("dsl", false).unwrap();
    let target = format!("{vps}:5000");
    let mut client = lab
        .cmd(Role::Gw, EXE)
        .args(["connect", "--stack", "user", "--wan", "dsl", "--wan", "lte"])
        .arg(&target)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read 2 MiB of the download, then close the pipe: the client's next write fails.
    let mut out = client.stdout.take().unwrap();
    let mut buf = vec![0u8; 2 << 20];
    out.read_exact(&mut buf).unwrap();
    // Meanwhile `mpbond status` shows the engine's connection, its subflows and their lines.
    let sock = Path::new(mpbond::status::DIR).join(format!("connect-{}.sock", client.id()));
    let status = mpbond::status::query(&sock).unwrap();
    eprintln!("status: {status:?}");
    let conn = status
        .connections
        .iter()
        .find(|c| c.remote.port() == 5000)
        .expect("the engine's connection in mpbond status");
    assert_ne!(conn.token, 0, "an MPTCP token");
    assert!(!conn.fallback);
    let lines: Vec<_> = conn
        .subflows
        .iter()
        .filter_map(|s| s.line.clone())
        .collect();
    assert!(
        lines.contains(&"dsl".to_owned()) && lines.contains(&"lte".to_owned()),
        "a subflow on each line: {:?}",
        conn.subflows
    );
    assert!(
        conn.subflows
            .iter()
            .any(|s| s.bytes_received > 0 && s.rtt_ms > 0.0)
    );
    drop(out);
    let status = client.wait().unwrap();
    let mut err = String::new();
    client
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        !status.success(),
        "a session cut short must fail: {status}; {err}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.exited() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let after = mptcp_mib(&lab, Role::Vps);
    eprintln!(
        "client: {status}; kernel counters moved: {:?}",
        moved(&before, &after)
    );
    assert!(
        delta(&before, &after, "MPFastcloseRx") >= 1,
        "the kernel counted no MP_FASTCLOSE; client said: {err}"
    );
    assert_no_error("MP_FASTCLOSE", &before, &after, &["MPRstRx"]);
}

/// Runs `transfer` while a thread takes line `line` down once `share` of `size` bytes went by
/// (upstream or downstream) and brings it back `down_for` later; returns the transfer and
/// whether the line was cut.
#[expect(
    clippy::too_many_arguments,
    reason = "a transfer and the cut it suffers"
)]
fn transfer_with_outage(
    lab: &TestLab,
    server: (Role, &[&str]),
    client: (Role, &[&str]),
    direction: Direction,
    file: &Path,
    out: &Path,
    line: &str,
    upstream: bool,
    at: u64,
    down_for: std::time::Duration,
) -> Transfer {
    let start = lab.stats();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let cutter = s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let moved: u64 = line_bytes(lab, &start, upstream).iter().map(|l| l.1).sum();
                if moved > at {
                    lab.set_state(line, mpbond::lab::LineState::Down);
                    std::thread::sleep(down_for);
                    lab.set_state(line, mpbond::lab::LineState::Up);
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            false
        });
        let t = transfer(
            lab.info(),
            Path::new(EXE),
            server.0,
            server.1,
            client.0,
            client.1,
            direction,
            file,
            out,
        );
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(cutter.join().unwrap(), "the transfer ended before the cut");
        t.unwrap_or_else(|e| panic!("{e:#}"))
    })
}

/// With `--wan lte:backup`, our client's lte subflow is a backup (the join's B flag); when dsl,
/// the only regular line, goes down, our client tells the kernel server with `MP_PRIO` that
/// lte is regular now, and again that it is a backup once dsl is back (§3.3.8). The kernel
/// counts both; the upload loses no byte.
#[test]
fn our_client_makes_its_backup_line_regular_with_mp_prio_while_the_regular_one_is_down() {
    if skip_unless_root(
        "our_client_makes_its_backup_line_regular_with_mp_prio_while_the_regular_one_is_down",
    ) {
        return;
    }
    let lab = lab_taking_joins(&[]);
    let dir = TempDir::new("interop-prio");
    let file = dir.path("data");
    write_random_file(&file, SIZE, 19);
    let (want, _) = file_sha256(&file).unwrap();
    let vps = lab.info().vps_line_addr("dsl", false).unwrap();
    let target = format!("{vps}:5000");
    let before = mptcp_mib(&lab, Role::Vps);
    let out = dir.path("out");
    let t = transfer_with_outage(
        &lab,
        (Role::Vps, &["--stack", "kernel", "0.0.0.0:5000"]),
        (
            Role::Gw,
            &[
                "--stack",
                "user",
                "--wan",
                "dsl",
                "--wan",
                "lte:backup",
                &target,
            ],
        ),
        Direction::Upload,
        &file,
        &out,
        "dsl",
        true,
        (SIZE as u64) / 4,
        std::time::Duration::from_secs(3),
    );
    let after = intact(&lab, "MP_PRIO", &t, &want, &before, None);
    assert!(
        delta(&before, &after, "MPPrioRx") >= 2,
        "the kernel counted {} MP_PRIO (lte made regular, then a backup again)",
        delta(&before, &after, "MPPrioRx")
    );
    // A line that goes down resets subflows: MPRstRx may move, nothing else.
    assert_no_error("MP_PRIO", &before, &after, &["MPRstRx"]);
}

/// Our server announces the gateway's lte address; when lte's link goes down it withdraws it
/// (`REMOVE_ADDR`, §3.4.2), and announces it again when lte is back. The kernel client counts
/// both; the upload loses no byte.
#[test]
fn our_server_withdraws_an_announced_address_whose_link_goes_down() {
    if skip_unless_root("our_server_withdraws_an_announced_address_whose_link_goes_down") {
        return;
    }
    let lab = TestLab::up(EXE, &[]);
    let dir = TempDir::new("interop-rmaddr");
    let file = dir.path("data");
    write_random_file(&file, SIZE, 23);
    let (want, _) = file_sha256(&file).unwrap();
    let gw_dsl = lab.info().gw_line_addr("dsl", false).unwrap();
    let gw_lte = lab.info().gw_line_addr("lte", false).unwrap();
    let target = format!("{gw_dsl}:5000");
    let (dsl, lte) = (format!("dsl:via={gw_dsl}"), format!("lte:via={gw_lte}"));
    let announce = gw_lte.to_string();
    let before = mptcp_mib(&lab, Role::Vps);
    let out = dir.path("out");
    let t = transfer_with_outage(
        &lab,
        (
            Role::Gw,
            &["--stack", "user", "--announce", &announce, "0.0.0.0:5000"],
        ),
        (
            Role::Vps,
            &["--stack", "kernel", "--wan", &dsl, "--wan", &lte, &target],
        ),
        Direction::Upload,
        &file,
        &out,
        "lte",
        false,
        (SIZE as u64) / 4,
        std::time::Duration::from_secs(3),
    );
    let after = intact(&lab, "REMOVE_ADDR", &t, &want, &before, None);
    assert!(
        delta(&before, &after, "RmAddr") >= 1,
        "the kernel counted no REMOVE_ADDR"
    );
    assert!(
        delta(&before, &after, "AddAddr") >= 2,
        "the kernel counted {} ADD_ADDR (announced, then again after the outage)",
        delta(&before, &after, "AddAddr")
    );
    assert_no_error("REMOVE_ADDR", &before, &after, &["MPRstRx"]);
}

/// A process group started in the background, killed (all of it) when dropped, also when a
/// test fails.
struct Background(std::process::Child);

impl Background {
    fn start(lab: &TestLab, role: Role, script: &str) -> Self {
        use std::os::unix::process::CommandExt;
        let child = lab
            .cmd(role, "sh")
            .args(["-c", script])
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
        let _ = self.0.wait();
    }
}

/// Waits until something listens on TCP `port` in `role`'s namespace.
fn wait_listening(lab: &TestLab, role: Role, port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let out = sh(lab, role, "ss -Hltn");
        if out.contains(&format!(":{port} ")) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("nothing listens on port {port}");
}

/// Goodput of our client's upload (two subflows, `--congestion congestion`) and of a plain
/// kernel TCP upload, both from the gateway to the vps at once, through the lab's one shared
/// 20 Mbit/s link: bytes per second the two servers received from 10 s to 100 s (shorter
/// windows swing: one flow can hold most of the link for 10 s and more).
fn shared_bottleneck_rates(
    lab: &TestLab,
    dir: &TempDir,
    congestion: &str,
    port: u16,
) -> (f64, f64) {
    let vps = lab.info().vps_line_addr("wan1", false).unwrap();
    let (mp_out, tcp_out) = (
        dir.path(&format!("{congestion}-mptcp")),
        dir.path(&format!("{congestion}-tcp")),
    );
    let _mp_server = Background::start(
        lab,
        Role::Vps,
        &format!(
            "exec {EXE} listen --stack kernel 0.0.0.0:{port} > {}",
            mp_out.display()
        ),
    );
    let _tcp_server = Background::start(
        lab,
        Role::Vps,
        &format!(
            "exec {EXE} listen --tcp --stack kernel 0.0.0.0:{} > {}",
            port + 1,
            tcp_out.display()
        ),
    );
    wait_listening(lab, Role::Vps, port);
    wait_listening(lab, Role::Vps, port + 1);
    let _mp = Background::start(
        lab,
        Role::Gw,
        &format!(
            "cat /dev/zero | {EXE} connect --stack user --congestion {congestion} --wan wan1 --wan wan2 {vps}:{port} 2> {}",
            dir.path(&format!("{congestion}-client.log")).display()
        ),
    );
    let _tcp = Background::start(
        lab,
        Role::Gw,
        &format!(
            "cat /dev/zero | {EXE} connect --tcp --stack kernel {vps}:{}",
            port + 1
        ),
    );
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    std::thread::sleep(std::time::Duration::from_secs(10));
    let from = (size(&mp_out), size(&tcp_out));
    std::thread::sleep(std::time::Duration::from_secs(90));
    let to = (size(&mp_out), size(&tcp_out));
    ((to.0 - from.0) as f64 / 90.0, (to.1 - from.1) as f64 / 90.0)
}

/// Issue 15's fairness in the lab: two subflows of our client through one 20 Mbit/s link next
/// to one plain kernel TCP flow (CUBIC). Coupled (`lia`, `olia`, `balia`) the
/// connection should take at most 1.2 times what the TCP flow gets, and still a real share;
/// uncoupled (`cubic`, `reno`) is reported.
///
/// A measurement run by hand (`cargo test -p mpbond --test interop -- --ignored coupled
/// --nocapture`, 8 minutes; `MPBOND_TEST_CONGESTION=olia,balia` for some), too long for CI.
/// On 2026-12-04, beside CUBIC: `lia` 0.58, `olia` 0.53, `balia` 0.53; uncoupled `reno` 1.49
/// and `cubic` 0.95 (the simulator: 0.66-0.79 coupled, 1.71 uncoupled). On 2026-12-06, coupled
/// subflows unpaced: `lia` 0.55, `olia` 0.45, `balia` 0.34; uncoupled (paced) `cubic` 8.03.
#[test]
#[ignore = "a measurement of 8 minutes: run by hand"]
fn coupled_congestion_control_shares_a_bottleneck_fairly_with_kernel_tcp() {
    if skip_unless_root("coupled_congestion_control_shares_a_bottleneck_fairly_with_kernel_tcp") {
        return;
    }
    let lab = lab_taking_joins(&["wan1:20mbit:10ms", "wan2:20mbit:10ms:share=wan1"]);
    // The competitor runs Linux's default, CUBIC, whatever this host's default is (a lab's
    // namespaces inherit it; BBR would make another comparison). A namespace may only pick
    // an algorithm of the host's allowed list (else EPERM, which hid for a while that the
    // competitor was this host's BBR): CUBIC joins the list for the test.
    let _allowed = mpbond::lab::congestion::Allowed::with("cubic").unwrap();
    sh(
        &lab,
        Role::Gw,
        "sysctl -qw net.ipv4.tcp_congestion_control=cubic",
    );
    assert_eq!(
        sh(&lab, Role::Gw, "sysctl -n net.ipv4.tcp_congestion_control").trim(),
        "cubic",
        "the competitor's congestion control"
    );
    // ... with nothing cached from the flow before.
    sh(&lab, Role::Gw, "sysctl -qw net.ipv4.tcp_no_metrics_save=1");
    let dir = TempDir::new("interop-coupled");
    // MPBOND_TEST_CONGESTION=olia,balia: only those.
    let only = std::env::var("MPBOND_TEST_CONGESTION").unwrap_or_default();
    for (k, congestion) in ["cubic", "reno", "lia", "olia", "balia"]
        .into_iter()
        .enumerate()
        .filter(|(_, c)| only.is_empty() || only.split(',').any(|o| o == *c))
    {
        let port = 5100 + 2 * u16::try_from(k).unwrap();
        let (mp, tcp) = shared_bottleneck_rates(&lab, &dir, congestion, port);
        let ratio = mp / tcp;
        println!(
            "{congestion}: {:.2} Mbit/s next to kernel TCP's {:.2} Mbit/s, ratio {ratio:.2}",
            mp * 8e-6,
            tcp * 8e-6
        );
        assert!(
            tcp > 0.0 && mp > 0.0,
            "{congestion}: a flow did not move: {}",
            std::fs::read_to_string(dir.path(&format!("{congestion}-client.log")))
                .unwrap_or_default()
        );
        if congestion == "cubic" {
            continue;
        }
        if Congestion::from_str(congestion).unwrap().is_coupled() {
            assert!(
                (0.3..=1.2).contains(&ratio),
                "{congestion}: took {ratio:.2} times the TCP flow's goodput"
            );
        }
    }
}

/// How an upload from the gateway fared when its busier line was blackholed.
struct Cut {
    /// The longest time the receiver's output did not grow, from the cut on.
    stall: std::time::Duration,
    /// How long after the cut that stall began.
    from: std::time::Duration,
    transfer: Transfer,
}

/// An upload of `file` from the gateway (`connect` with `stack_args`) to a kernel `listen` on
/// the vps, dsl blackholed once `at` bytes crossed the lines; the receiver's output is
/// watched every 2 ms for the longest stall from the cut on.
fn upload_with_blackhole(
    lab: &TestLab,
    stack_args: &[&str],
    file: &Path,
    out: &Path,
    at: u64,
) -> Cut {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    let vps = lab.info().vps_line_addr("dsl", false).unwrap();
    let target = format!("{vps}:5000");
    let mut args: Vec<&str> = stack_args.to_vec();
    args.extend(["--wan", "dsl", "--wan", "lte", &target]);
    let start = lab.stats();
    let done = AtomicBool::new(false);
    let _ = std::fs::remove_file(out);
    let (t, cut_at, growth) = std::thread::scope(|s| {
        let cutter = s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let up: u64 = line_bytes(lab, &start, true).iter().map(|l| l.1).sum();
                if up > at {
                    lab.set_state("dsl", mpbond::lab::LineState::Blackhole);
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        });
        let watcher = s.spawn(|| {
            let mut growth: Vec<(Instant, u64)> = Vec::new();
            let mut last = 0;
            while !done.load(Ordering::Relaxed) {
                let len = std::fs::metadata(out).map_or(0, |m| m.len());
                if len > last {
                    growth.push((Instant::now(), len));
                    last = len;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            growth
        });
        let t = transfer(
            lab.info(),
            Path::new(EXE),
            Role::Vps,
            &["--stack", "kernel", "0.0.0.0:5000"],
            Role::Gw,
            &args,
            Direction::Upload,
            file,
            out,
        );
        done.store(true, Ordering::Relaxed);
        let cut_at = cutter.join().unwrap();
        (t, cut_at, watcher.join().unwrap())
    });
    lab.set_state("dsl", mpbond::lab::LineState::Up);
    let t = t.unwrap_or_else(|e| panic!("{stack_args:?}: {e:#}"));
    let cut_at = cut_at.expect("the upload ended before the cut");
    // The last growth before the cut, then every growth after it.
    let before = growth
        .iter()
        .rev()
        .find(|g| g.0 <= cut_at)
        .map_or(cut_at, |g| g.0);
    let mut times: Vec<Instant> = vec![before];
    times.extend(growth.iter().filter(|g| g.0 > cut_at).map(|g| g.0));
    let (from, stall) = times
        .windows(2)
        .map(|w| (w[0], w[1] - w[0]))
        .max_by_key(|x| x.1)
        .unwrap_or((cut_at, Duration::ZERO));
    if std::env::var_os("MPBOND_TEST_GROWTH").is_some() {
        for g in growth
            .iter()
            .filter(|g| g.0 + Duration::from_millis(300) > cut_at)
        {
            eprintln!(
                "  +{:>6.0} ms {}",
                (g.0.saturating_duration_since(cut_at)).as_secs_f64() * 1e3,
                g.1
            );
        }
    }
    Cut {
        stall,
        from: from.saturating_duration_since(cut_at),
        transfer: t,
    }
}

/// Issue 15's lab failover: our client and the kernel's (under mpbond's path manager) upload
/// over both lines in one run, dsl (the busier) blackholed at the same moments; every byte
/// arrives, and our client's longest stall is reported next to the kernel's. Run by hand
/// (`cargo test --test interop -- --ignored failover`; `MPBOND_TEST_ROUNDS` rounds of four
/// moments, default 1): the figures go in the note and docs/user-stack.md.
#[test]
#[ignore = "a measurement, about a minute a round: run by hand"]
fn our_client_fails_over_side_by_side_with_the_kernel_when_the_busier_line_is_blackholed() {
    if skip_unless_root(
        "our_client_fails_over_side_by_side_with_the_kernel_when_the_busier_line_is_blackholed",
    ) {
        return;
    }
    let lab = lab_taking_joins(&[]);
    let dir = TempDir::new("interop-failover");
    let file = dir.path("data");
    write_random_file(&file, SIZE, 13);
    let (want, _) = file_sha256(&file).unwrap();
    let rounds: u64 = std::env::var("MPBOND_TEST_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut stalls: HashMap<&str, Vec<std::time::Duration>> = HashMap::new();
    for round in 0..rounds {
        let moments: Vec<u64> = std::env::var("MPBOND_TEST_EIGHTHS").map_or_else(
            |_| vec![1, 3, 5, 7],
            |v| v.split(',').filter_map(|x| x.parse().ok()).collect(),
        );
        for eighths in moments {
            // A moment that differs a little from round to round.
            let at = (SIZE as u64) * eighths / 8 + round * 333_333 % (SIZE as u64 / 16);
            for (name, stack) in [
                ("user", ["--stack", "user"]),
                ("kernel", ["--stack", "kernel"]),
            ] {
                if std::env::var("MPBOND_TEST_STACK").is_ok_and(|s| s != name) {
                    continue;
                }
                let out = dir.path("upload");
                let c = upload_with_blackhole(&lab, &stack, &file, &out, at);
                assert_eq!(c.transfer.bytes, SIZE as u64, "{name}: every byte arrived");
                assert_eq!(
                    c.transfer.sha256, want,
                    "{name}: what arrived is what was sent"
                );
                eprintln!(
                    "round {round}, cut after {at} bytes: --stack {name}: longest stall {:.0} ms from +{:.0} ms; {:.1} Mbit/s",
                    c.stall.as_secs_f64() * 1e3,
                    c.from.as_secs_f64() * 1e3,
                    c.transfer.bps() / 1e6
                );
                stalls.entry(name).or_default().push(c.stall);
            }
        }
    }
    for (name, v) in &mut stalls {
        v.sort();
        let q = |pct: usize| v[(v.len() * pct).div_ceil(100).clamp(1, v.len()) - 1];
        eprintln!(
            "--stack {name}: longest stall p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms over {} cuts",
            q(50).as_secs_f64() * 1e3,
            q(95).as_secs_f64() * 1e3,
            q(100).as_secs_f64() * 1e3,
            v.len()
        );
    }
}
