//! `--stack user` against the real Linux kernel's TCP in the lab: `mpbond connect --stack user
//! --no-mptcp` downloads and uploads 64 MiB from and to a kernel TCP peer over an emulated
//! 50 Mbit/s line with 20 ms each way, `mpbond listen --stack user` serves a kernel client both
//! ways, every byte checked with SHA-256; and the host is left as it was (no TUN, no nftables
//! table, forwarding as before). Needs root (skipped otherwise).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::path::Path;

use mpbond::lab::Role;
use mpbond::lab::testing::{TempDir, TestLab, skip_unless_root, write_random_file};
use mpbond::lab::transfer::{Direction, file_sha256, transfer};

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");
const LEN: usize = 64 << 20;
/// The vps's address on the line.
const VPS: &str = "10.1.0.1";
/// The gw's address on the line.
const GW: &str = "10.1.0.2";

fn sh(lab: &TestLab, role: Role, cmd: &str) -> String {
    let out = lab.cmd(role, "sh").args(["-c", cmd]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// No TUN of the user stack and no table of it remain in `role`.
fn assert_clean(lab: &TestLab, role: Role) {
    let links = sh(lab, role, "ip -o link show");
    assert!(!links.contains("mpbu"), "a TUN was left:\n{links}");
    let tables = sh(lab, role, "nft list tables");
    assert!(!tables.contains("mpbu"), "a table was left:\n{tables}");
}

#[test]
fn connect_and_listen_on_the_user_stack_carry_64_mib_both_ways_with_a_kernel_peer() {
    if skip_unless_root(
        "connect_and_listen_on_the_user_stack_carry_64_mib_both_ways_with_a_kernel_peer",
    ) {
        return;
    }
    let lab = TestLab::up(EXE, &["wan:50mbit:20ms"]);
    let dir = TempDir::new("user-both-ways");
    let file = dir.path("data");
    write_random_file(&file, LEN, 7);
    let (want, _) = file_sha256(&file).unwrap();
    let exe = Path::new(EXE);
    let kernel_listen = ["--stack", "kernel", "--tcp", "0.0.0.0:5000"];
    let user_connect = ["--stack", "user", "--no-mptcp"];
    let cases: [Case<'_>; 4] = [
        (
            "connect-download",
            Role::Vps,
            &kernel_listen,
            Role::Gw,
            with(&user_connect, VPS),
            Direction::Download,
        ),
        (
            "connect-upload",
            Role::Vps,
            &kernel_listen,
            Role::Gw,
            with(&user_connect, VPS),
            Direction::Upload,
        ),
        (
            "listen-upload",
            Role::Gw,
            &["--stack", "user", "--no-mptcp", "0.0.0.0:5000"],
            Role::Vps,
            with(&["--stack", "kernel", "--tcp"], GW),
            Direction::Upload,
        ),
        (
            "listen-download",
            Role::Gw,
            &["--stack", "user", "--no-mptcp", "0.0.0.0:5000"],
            Role::Vps,
            with(&["--stack", "kernel", "--tcp"], GW),
            Direction::Download,
        ),
    ];
    for (name, server, listen_args, client, connect_args, direction) in cases {
        let out = dir.path(name);
        let args: Vec<&str> = connect_args.iter().map(String::as_str).collect();
        let t = transfer(
            lab.info(),
            exe,
            server,
            listen_args,
            client,
            &args,
            direction,
            &file,
            &out,
        )
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(t.bytes, LEN as u64, "{name}: every byte arrived");
        assert_eq!(t.sha256, want, "{name}: what arrived is what was sent");
        eprintln!(
            "{name}: {:.1} Mbit/s over the whole transfer",
            t.bps() / 1e6
        );
        let _ = std::fs::remove_file(&out);
        assert_clean(&lab, Role::Gw);
    }
}

/// A transfer: its name, the `listen` host and arguments, the `connect` host and arguments,
/// and which way the file goes.
type Case<'a> = (&'a str, Role, &'a [&'a str], Role, Vec<String>, Direction);

/// `connect_args` then the target `host:5000`.
fn with(connect_args: &[&str], host: &str) -> Vec<String> {
    let mut v: Vec<String> = connect_args.iter().map(|s| (*s).to_owned()).collect();
    v.push(format!("{host}:5000"));
    v
}

#[test]
fn a_host_that_did_not_forward_gets_its_forwarding_back_and_forwards_nothing_else_meanwhile() {
    if skip_unless_root(
        "a_host_that_did_not_forward_gets_its_forwarding_back_and_forwards_nothing_else_meanwhile",
    ) {
        return;
    }
    // The LAN host is an end host: it does not forward.
    let lab = TestLab::up(EXE, &["wan:50mbit:20ms"]);
    let before = sh(&lab, Role::Lan, "sysctl -n net.ipv4.ip_forward");
    assert_eq!(before.trim(), "0");
    let dir = TempDir::new("user-forwarding");
    let file = dir.path("data");
    write_random_file(&file, 1 << 20, 3);
    let (want, _) = file_sha256(&file).unwrap();
    let out = dir.path("out");
    let mut listener = mpbond::lab::bonding::Daemon::start_with_stdio(
        lab.info(),
        Role::Lan,
        Path::new(EXE),
        &["listen", "--stack", "user", "--no-mptcp", "0.0.0.0:5000"],
        dir.path("listen.log"),
        "listening",
        None,
        Some(&out),
    )
    .unwrap();
    // While it runs: forwarding on, and the table drops every other forwarded packet.
    assert_eq!(
        sh(&lab, Role::Lan, "sysctl -n net.ipv4.ip_forward").trim(),
        "1"
    );
    let table = sh(&lab, Role::Lan, "nft list table inet mpbu0");
    assert!(table.contains("meta nfproto ipv4 drop"), "{table}");
    // A kernel client on the web host reaches the LAN host's port, served by the engine.
    let status = lab
        .cmd(Role::Web, EXE)
        .args([
            "connect",
            "--stack",
            "kernel",
            "--tcp",
            "192.168.100.2:5000",
        ])
        .stdin(std::fs::File::open(&file).unwrap())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{}", listener.log_text());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !listener.exited() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(listener.exited(), "{}", listener.log_text());
    assert_eq!(file_sha256(&out).unwrap().0, want);
    assert_eq!(
        sh(&lab, Role::Lan, "sysctl -n net.ipv4.ip_forward").trim(),
        "0"
    );
    assert_clean(&lab, Role::Lan);
}

#[test]
fn with_wan_lines_the_engine_leaves_by_its_line_whatever_the_main_table_says() {
    if skip_unless_root("with_wan_lines_the_engine_leaves_by_its_line_whatever_the_main_table_says")
    {
        return;
    }
    // Two lines; the main table sends 10.1.0.0/24 (the vps's dsl side) by dsl.
    let lab = TestLab::up(EXE, &[]);
    let dir = TempDir::new("user-wan");
    let file = dir.path("data");
    write_random_file(&file, 4 << 20, 9);
    let (want, _) = file_sha256(&file).unwrap();
    let before = lab.stats();
    let t = transfer(
        lab.info(),
        Path::new(EXE),
        Role::Vps,
        &["--stack", "kernel", "--tcp", "0.0.0.0:5000"],
        Role::Gw,
        &[
            "--stack",
            "user",
            "--no-mptcp",
            "--wan",
            "lte",
            "10.1.0.1:5000",
        ],
        Direction::Upload,
        &file,
        &dir.path("out"),
    )
    .unwrap();
    assert_eq!(t.sha256, want);
    let after = lab.stats();
    let up = |name: &str| {
        let pick = |s: &mpbond::lab::LabStats| {
            s.lines
                .iter()
                .find(|l| l.name == name)
                .map_or(0, |l| l.upstream.delivered_bytes)
        };
        pick(&after) - pick(&before)
    };
    assert!(
        up("lte") > 4 << 20,
        "the upload went by lte: {} bytes",
        up("lte")
    );
    assert!(up("dsl") < 64 << 10, "and not by dsl: {} bytes", up("dsl"));
    let rules = sh(&lab, Role::Gw, "ip rule show");
    assert!(
        !rules.contains("lookup 43"),
        "the line's rule was removed:\n{rules}"
    );
    assert_clean(&lab, Role::Gw);
}
