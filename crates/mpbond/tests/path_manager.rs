//! mpbond's path manager against the kernel's, in the lab: a LAN download through gateway and
//! converter while a line is blackholed, or goes down and comes back; a backup line; an ssh-like
//! stream moving from one line's address to another's.
//!
//! Every test here needs root (network namespaces, nftables, routes); without it each says so and
//! passes. Lines: dsl 20mbit/10ms (RTT 20 ms) and lte 10mbit/40ms (RTT 80 ms).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "a test fails loudly on the first surprise"
)]

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mpbond::lab::failover::{self, Timeline};
use mpbond::lab::testing::{Daemon, TestLab, skip_unless_root, start_bonding, start_bonding_with};
use mpbond::lab::{LineState, Role};

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");
const LINES: [&str; 2] = ["dsl:20mbit:10ms", "lte:10mbit:40ms"];
/// The sum of the line rates, bit/s.
const SUM_RATES: f64 = 30e6;
/// The pattern server on the web host.
const PATTERN: &str = "203.0.113.2:8081";

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("mpbond-pm-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lab() -> TestLab {
    let lab = TestLab::up(EXE, &LINES);
    failover::serve_pattern(lab.info().netns(Role::Web), PATTERN.parse().unwrap()).unwrap();
    lab
}

/// Converter and gateway with `--pm pm` (and `extra`) for `f`, then stopped.
fn with_bonding<T>(lab: &TestLab, tag: &str, extra: &[&str], f: impl FnOnce(&Daemon) -> T) -> T {
    let dir = TempDir::new(tag);
    let wan: Vec<&str> = if extra.contains(&"lte:backup") {
        vec!["dsl"]
    } else {
        vec!["dsl", "lte"]
    };
    let (gateway, _converter) = start_bonding(lab, EXE, &dir.0, &wan, extra);
    f(&gateway)
}

/// A download from the LAN host through the bond with `schedule` applied to lines.
fn download(
    lab: &TestLab,
    len: u64,
    seed: u64,
    duration: Option<Duration>,
    schedule: &[(Duration, &str, LineState)],
) -> Timeline {
    let schedule = schedule
        .iter()
        .map(|&(at, line, state)| {
            let name = lab.name().to_owned();
            let line = line.to_owned();
            let f: Box<dyn FnOnce() + Send> = Box::new(move || {
                mpbond::lab::set_line_state(&name, &line, state).unwrap();
            });
            (at, f)
        })
        .collect();
    failover::download(
        lab.info().netns(Role::Lan),
        PATTERN.parse().unwrap(),
        len,
        seed,
        duration,
        schedule,
    )
    .unwrap()
}

/// A download of `seed`'s pattern from the LAN host for `duration`, in the background.
fn download_for(lab: &TestLab, seed: u64, duration: Duration) -> std::thread::JoinHandle<Timeline> {
    let ns = lab.info().netns(Role::Lan).to_owned();
    std::thread::spawn(move || {
        failover::download(
            &ns,
            PATTERN.parse().unwrap(),
            u64::MAX,
            seed,
            Some(duration),
            vec![],
        )
        .unwrap()
    })
}

/// The Must-show of failover: the busiest line (dsl) blackholed 3 s into a download. With both
/// path managers, in one run, every byte arrives once and in order; mpbond's longest stall is
/// shorter than the kernel's (the figures themselves come from `cargo bench --bench failover`,
/// since a shared machine's timing is no test threshold).
#[test]
fn blackholing_the_busiest_line_loses_nothing_and_stalls_less_than_the_kernel_pm() {
    if skip_unless_root(
        "blackholing_the_busiest_line_loses_nothing_and_stalls_less_than_the_kernel_pm",
    ) {
        return;
    }
    let lab = lab();
    let len = 24 << 20;
    let at = Duration::from_secs(3);
    let mut stalls = Vec::new();
    for (seed, pm) in [(1, "mpbond"), (2, "kernel")] {
        let t = with_bonding(&lab, pm, &["--pm", pm], |gw| {
            let t = download(&lab, len, seed, None, &[(at, "dsl", LineState::Blackhole)]);
            assert!(
                t.intact(len),
                "--pm {pm}: {} of {len} bytes, first bad at {:?}\n{}",
                t.bytes,
                t.first_bad,
                gw.problems()
            );
            t
        });
        lab.set_state("dsl", LineState::Up);
        let (when, stall) = t.longest_stall(at);
        eprintln!(
            "--pm {pm}: dsl blackholed at 3 s: longest stall {:.0} ms (from {:.2} s), {len} bytes intact in {:.1} s",
            stall.as_secs_f64() * 1e3,
            when.as_secs_f64(),
            t.elapsed.as_secs_f64()
        );
        stalls.push(stall);
    }
    assert!(
        stalls[0] < stalls[1],
        "mpbond's stall {:?} is shorter than the in-kernel path manager's {:?}",
        stalls[0],
        stalls[1]
    );
}

/// A line down for 5 s comes back: its subflow is made again and the download goes back to
/// (at least 80 % of) the sum of the lines within a second (1.5 s checked, for a loaded
/// machine; 0.5-0.75 s measured).
#[test]
fn a_line_down_for_five_seconds_carries_again_within_a_second_of_its_return() {
    if skip_unless_root("a_line_down_for_five_seconds_carries_again_within_a_second_of_its_return")
    {
        return;
    }
    let lab = lab();
    let (down, up) = (Duration::from_secs(3), Duration::from_secs(8));
    with_bonding(&lab, "recreate", &[], |gw| {
        let before = lab.stats();
        let t = download(
            &lab,
            u64::MAX,
            3,
            Some(Duration::from_secs(14)),
            &[(down, "dsl", LineState::Down), (up, "dsl", LineState::Up)],
        );
        assert!(t.first_bad.is_none(), "byte {:?} differs", t.first_bad);
        // Back: the first quarter of a second that carries 80 % of the lines. The issue's
        // target is a second; the bound checked is looser, for a loaded machine.
        let target = 0.8 * SUM_RATES;
        let quarter = Duration::from_millis(250);
        let back = t.recovers(up, quarter, target);
        let ramp: Vec<String> = (0..12)
            .map(|k| {
                let from = up + quarter * k;
                format!("{:.0}", t.goodput(from, from + quarter) / 1e6)
            })
            .collect();
        eprintln!("Mbit/s per 250 ms after dsl came back: {}", ramp.join(" "));
        let during = t.goodput(down + Duration::from_secs(1), up);
        let after = t.goodput(up + Duration::from_secs(3), t.elapsed);
        let back =
            back.unwrap_or_else(|| panic!("never back to {target} bit/s\n{}", gw.problems()));
        // A second drop: the lowest quarter of a second in the three seconds after.
        let low = t.lowest(back, back + Duration::from_secs(3), quarter);
        eprintln!(
            "dsl down 3..8 s: {:.1} Mbit/s while down, {:.1} Mbit/s from 11 s; back to 80 % of the lines ({:.1} Mbit/s for 250 ms) {:?} after it came back, then at least {:.1} Mbit/s per 250 ms",
            during / 1e6,
            after / 1e6,
            target / 1e6,
            back.saturating_sub(up),
            low / 1e6
        );
        assert!(
            back.saturating_sub(up) <= Duration::from_millis(1500),
            "back after {:?}\n{}",
            back.saturating_sub(up),
            gw.problems()
        );
        let dsl = lab.stats().line("dsl").unwrap().downstream.delivered_bytes
            - before.line("dsl").unwrap().downstream.delivered_bytes;
        assert!(dsl > 10 << 20, "dsl carries again: {dsl} bytes");
        assert!(
            gw.log_text().contains("line works again"),
            "{}",
            gw.log_text()
        );
    });
}

/// A backup line carries nothing while the regular one works, takes over when it is blackholed,
/// and is released when it comes back.
#[test]
fn a_backup_line_takes_over_only_while_the_regular_line_is_dead() {
    if skip_unless_root("a_backup_line_takes_over_only_while_the_regular_line_is_dead") {
        return;
    }
    let lab = lab();
    with_bonding(&lab, "backup", &["--wan", "lte:backup"], |gw| {
        let lte = |lab: &TestLab| lab.stats().line("lte").unwrap().downstream.delivered_bytes;
        let l0 = lte(&lab);
        let len = 8 << 20;
        let t = download(&lab, len, 4, None, &[]);
        assert!(t.intact(len));
        let l1 = lte(&lab);
        assert!(l1 - l0 < 64 * 1024, "backup carried {} bytes", l1 - l0);
        // dsl blackholed from 2 to 6 s of a 12 s download.
        let t = download(
            &lab,
            u64::MAX,
            5,
            Some(Duration::from_secs(12)),
            &[
                (Duration::from_secs(2), "dsl", LineState::Blackhole),
                (Duration::from_secs(6), "dsl", LineState::Up),
            ],
        );
        assert!(t.first_bad.is_none());
        let during = t.goodput(Duration::from_secs(3), Duration::from_secs(6));
        assert!(
            during > 0.5 * 10e6,
            "lte carried the download while dsl was dead: {during} bit/s\n{}",
            gw.problems()
        );
        // Released: once dsl is back, the backup carries (almost) nothing again.
        std::thread::sleep(Duration::from_secs(1));
        let l2 = lte(&lab);
        let len = 8 << 20;
        let t = download(&lab, len, 6, None, &[]);
        assert!(t.intact(len));
        let l3 = lte(&lab);
        eprintln!(
            "backup lte: {} B with dsl up, {:.1} Mbit/s while dsl was dead, {} B after it came back",
            l1 - l0,
            during / 1e6,
            l3 - l2
        );
        assert!(
            l3 - l2 < 256 * 1024,
            "backup released: carried {} bytes",
            l3 - l2
        );
    });
}

/// `mpbond status --json` of the gateway: what it says, and its text.
fn status_json(lab: &TestLab, gw: &Daemon) -> (Vec<mpbond::status::Status>, String) {
    lab.gateway_status(gw.pid())
}

/// The gateway's lines as `mpbond status --json` shows them.
fn line_status(lab: &TestLab, gw: &Daemon) -> Vec<mpbond::pm::driver::LineStatus> {
    status_json(lab, gw).0.pop().unwrap().lines
}

/// Probe cost (issue 14): a line whose download proves it works is not probed; an idle backup
/// line is probed once a second, its backup subflows' handshakes notwithstanding; blackholed
/// while idle, it is given up at the idle pace's allowance. Prints the bytes a day of each.
#[test]
fn probes_cost_nothing_on_a_busy_line_and_little_on_an_idle_backup_line() {
    if skip_unless_root("probes_cost_nothing_on_a_busy_line_and_little_on_an_idle_backup_line") {
        return;
    }
    let lab = lab();
    with_bonding(&lab, "probe-cost", &["--wan", "lte:backup"], |gw| {
        let probes = |name: &str| {
            let l = line_status(&lab, gw);
            let l = l.iter().find(|l| l.name == name).unwrap();
            (l.probes_sent, l.probe_pace)
        };
        // The backup line settles at the idle pace once the gateway's start is 10 s behind.
        let t0 = Instant::now();
        while probes("lte").1 != mpbond::pm::health::Pace::Idle {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "lte never idle: {:?}",
                line_status(&lab, gw)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        // A 12 s download on dsl: from its 2nd to its 10th second, count both lines' probes.
        let download = download_for(&lab, 8, Duration::from_secs(12));
        std::thread::sleep(Duration::from_secs(2));
        let (dsl0, lte0) = (probes("dsl"), probes("lte"));
        let window = Duration::from_secs(8);
        std::thread::sleep(window);
        let (dsl1, lte1) = (probes("dsl"), probes("lte"));
        let t = download.join().unwrap();
        assert!(t.first_bad.is_none());
        let per_day = |n: u64| n as f64 * 72.0 * 86_400.0 / window.as_secs_f64() / 1e6;
        let (busy, idle) = (dsl1.0 - dsl0.0, lte1.0 - lte0.0);
        eprintln!(
            "probes in {window:?}: busy dsl {busy} ({:.2} MB a day), idle backup lte {idle} ({:.1} MB a day); at the fast pace: 160 (124.4 MB a day)",
            per_day(busy),
            per_day(idle)
        );
        assert_eq!(dsl1.1, mpbond::pm::health::Pace::Busy);
        assert!(busy <= 8, "a busy line is not probed: {busy} probes");
        assert_eq!(lte1.1, mpbond::pm::health::Pace::Idle);
        assert!(
            (4..=12).contains(&idle),
            "an idle backup line is probed once a second: {idle} probes"
        );
        // Blackholed while idle: given up within three idle seconds (and a reading or two).
        mpbond::lab::set_line_state(lab.name(), "lte", LineState::Blackhole).unwrap();
        let t0 = Instant::now();
        while line_status(&lab, gw)
            .iter()
            .any(|l| l.name == "lte" && l.state != mpbond::pm::health::Verdict::Down)
        {
            assert!(
                t0.elapsed() < Duration::from_secs(8),
                "an idle dead line is given up within 3 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "idle backup lte blackholed: given up after {:?}",
            t0.elapsed()
        );
        mpbond::lab::set_line_state(lab.name(), "lte", LineState::Up).unwrap();
    });
}

/// The IPv4 address (with prefix) of `line` on the gateway host.
fn addr_of(lab: &TestLab, line: &str) -> String {
    let out = lab
        .cmd(Role::Gw, "ip")
        .args(["-4", "-o", "addr", "show", "dev", line])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no address on {line}: {text}"))
        .to_owned()
}

/// Reads lines from `r` until it ends: the lines and the longest gap between two.
fn collect_lines(
    r: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<(Vec<String>, Duration)> {
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut last = Instant::now();
        let mut longest = Duration::ZERO;
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if !lines.is_empty() {
                longest = longest.max(last.elapsed());
            }
            last = Instant::now();
            lines.push(l);
        }
        (lines, longest)
    })
}

/// What [`handover`] does to the gateway's addresses, by the index of the line written.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// dsl's address is deleted.
    DelDsl,
    /// lte gets its address (and a default route).
    AddLte,
    /// dsl gets another address of its subnet, then loses its first one (a new DHCP lease on
    /// the same line).
    MoveDsl,
}

/// `ip ARGS` on the gateway host.
fn gw_ip(lab: &TestLab, args: &str) {
    let ok = lab
        .cmd(Role::Gw, "ip")
        .args(args.split(' '))
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip {args}");
}

/// Carries out one [`Step`] on the gateway host.
fn take_step(lab: &TestLab, step: Step, dsl_addr: &str, lte_addr: &str, lte_gw: &str) {
    match step {
        Step::DelDsl => gw_ip(lab, &format!("addr del {dsl_addr} dev dsl")),
        Step::MoveDsl => {
            let (host, prefix) = dsl_addr.split_once('/').unwrap();
            let (net, last) = host.rsplit_once('.').unwrap();
            let other = if last == "77" { "78" } else { "77" };
            // The new address must outlive the old one (Linux deletes the secondary addresses
            // with their primary unless told to promote them).
            let ok = lab
                .cmd(Role::Gw, "sysctl")
                .args(["-qw", "net.ipv4.conf.dsl.promote_secondaries=1"])
                .status()
                .unwrap()
                .success();
            assert!(ok, "promote_secondaries");
            gw_ip(lab, &format!("addr add {net}.{other}/{prefix} dev dsl"));
            gw_ip(lab, &format!("addr del {dsl_addr} dev dsl"));
        }
        Step::AddLte => {
            gw_ip(lab, &format!("addr add {lte_addr} dev lte"));
            gw_ip(
                lab,
                &format!("route add default via {lte_gw} dev lte metric 200"),
            );
        }
    }
}

/// ssh-like, both ways: one small write every 50 ms from `connect --wan dsl --wan lte` (lte with
/// no address at first) to `listen` on the vps, and one back, while dsl's address is deleted
/// and lte gets one as `steps` say. Checks that each stream arrives whole, once, in order, and
/// returns the longest gap between two lines, up and down. (Both directions stay open: Linux
/// refuses a join to a connection whose `DATA_FIN` is still unacknowledged, so a half-closed
/// session could not move.)
fn handover(steps: &[(usize, Step)]) -> (Duration, Duration) {
    handover_on("kernel", steps)
}

/// [`handover`] with `connect --stack STACK` (`kernel`: the kernel's MPTCP under mpbond's path
/// manager; `user`: mpbond's engine under the same path manager's line health).
fn handover_on(stack: &str, steps: &[(usize, Step)]) -> (Duration, Duration) {
    let lab = lab();
    let (dsl_addr, lte_addr) = (addr_of(&lab, "dsl"), addr_of(&lab, "lte"));
    let lte_gw = format!("{}.1", lte_addr.rsplit_once('.').unwrap().0);
    gw_ip(&lab, &format!("addr del {lte_addr} dev lte"));

    let mut listen = lab
        .cmd(Role::Vps, EXE)
        .args(["listen", "198.51.100.1:9001"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let server_got = collect_lines(listen.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let mut connect = lab
        .cmd(Role::Gw, EXE)
        .args([
            "connect",
            "--stack",
            stack,
            "--wan",
            "dsl",
            "--wan",
            &format!("lte:via={lte_gw}"),
            "198.51.100.1:9001",
        ])
        .env(
            "RUST_LOG",
            std::env::var("MPBOND_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client_got = collect_lines(connect.stdout.take().unwrap());
    let mut up = connect.stdin.take().unwrap();
    let mut down = listen.stdin.take().unwrap();
    let n = 160;
    for i in 0..n {
        writeln!(up, "line {i:04} of an interactive session").unwrap();
        writeln!(down, "echo {i:04} from the server").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        for &(_, step) in steps.iter().filter(|(at, _)| *at == i) {
            take_step(&lab, step, &dsl_addr, &lte_addr, &lte_gw);
        }
    }
    drop(up);
    drop(down);
    let c = connect.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&c.stderr).into_owned();
    let (at_server, gap_up) = server_got.join().unwrap();
    let (at_client, gap_down) = client_got.join().unwrap();
    let _ = listen.wait();
    eprintln!(
        "handover dsl -> lte on the {stack} stack {steps:?}: {} and {} of {n} lines, longest gaps {:.0} ms up, {:.0} ms down",
        at_server.len(),
        at_client.len(),
        gap_up.as_secs_f64() * 1e3,
        gap_down.as_secs_f64() * 1e3
    );
    assert!(c.status.success(), "{log}");
    let want_up: Vec<String> = (0..n)
        .map(|i| format!("line {i:04} of an interactive session"))
        .collect();
    let want_down: Vec<String> = (0..n)
        .map(|i| format!("echo {i:04} from the server"))
        .collect();
    assert_eq!(at_server, want_up, "{log}");
    assert_eq!(at_client, want_down, "{log}");
    if steps.iter().any(|(_, s)| matches!(s, Step::AddLte)) {
        let routed = if stack == "user" {
            "the engine's route by the line is made"
        } else {
            "new address routed out of its line"
        };
        assert!(log.contains(routed), "{log}");
    }
    (gap_up, gap_down)
}

/// Break-before-make with a second without any address: the session waits for the new one,
/// then moves over.
#[test]
fn a_session_moves_to_another_line_when_its_address_changes() {
    if skip_unless_root("a_session_moves_to_another_line_when_its_address_changes") {
        return;
    }
    handover(&[(40, Step::DelDsl), (60, Step::AddLte)]);
}

/// Make-before-break: lte's address comes a second before dsl's goes, so the session already
/// has a subflow on lte when dsl's goes, and moves over within a second (the bound;
/// the lab's lines take 20 and 80 ms a round trip, so the margin is wide).
#[test]
fn a_session_moves_over_within_a_second_when_the_new_address_comes_first() {
    if skip_unless_root("a_session_moves_over_within_a_second_when_the_new_address_comes_first") {
        return;
    }
    let (up, down) = handover(&[(40, Step::AddLte), (60, Step::DelDsl)]);
    assert!(up.max(down) < Duration::from_secs(1), "{up:?} {down:?}");
}

/// Break-before-make, the new address 100 ms after the old one went (a DHCP renewal, a laptop
/// moving to another network): still within a second.
#[test]
fn a_session_moves_over_within_a_second_when_the_new_address_comes_right_after() {
    if skip_unless_root(
        "a_session_moves_over_within_a_second_when_the_new_address_comes_right_after",
    ) {
        return;
    }
    let (up, down) = handover(&[(40, Step::DelDsl), (42, Step::AddLte)]);
    assert!(up.max(down) < Duration::from_secs(1), "{up:?} {down:?}");
}

/// The three handovers with `connect --stack user`: mpbond's engine moves the session over
/// within a second too (break-before-make with a second without address: it waits, then
/// moves).
#[test]
fn an_engine_session_moves_over_within_a_second_when_its_address_changes() {
    if skip_unless_root("an_engine_session_moves_over_within_a_second_when_its_address_changes") {
        return;
    }
    let (up, down) = handover_on("user", &[(40, Step::AddLte), (60, Step::DelDsl)]);
    assert!(
        up.max(down) < Duration::from_secs(1),
        "make-before-break: {up:?} {down:?}"
    );
    let (up, down) = handover_on("user", &[(40, Step::DelDsl), (42, Step::AddLte)]);
    assert!(
        up.max(down) < Duration::from_secs(1),
        "break-before-make: {up:?} {down:?}"
    );
    handover_on("user", &[(40, Step::DelDsl), (60, Step::AddLte)]);
}

/// A new address on the session's only line (a new DHCP lease): the masquerade's mapping of
/// the old one is gone, so the engine makes the line's subflow again from the new address
/// (and withdraws the old one at the peer) within a second.
#[test]
fn an_engine_session_follows_a_new_address_on_its_line() {
    if skip_unless_root("an_engine_session_follows_a_new_address_on_its_line") {
        return;
    }
    let (up, down) = handover_on("user", &[(40, Step::MoveDsl)]);
    assert!(
        up.max(down) < Duration::from_secs(1),
        "new address on dsl: {up:?} {down:?}"
    );
}

/// The MPTCP subflows in `ss -tniHe` output: (local token, local end, remote end, local id).
fn ss_subflows(text: &str) -> std::collections::BTreeSet<(String, String, String, u8)> {
    let mut out = std::collections::BTreeSet::new();
    let mut lines = text.lines();
    while let Some(head) = lines.next() {
        let Some(detail) = lines.next() else { break };
        let Some(ulp) = detail.split("tcp-ulp-mptcp").nth(1) else {
            continue;
        };
        let cols: Vec<&str> = head.split_whitespace().collect();
        let tok = ulp
            .split_whitespace()
            .find_map(|w| w.strip_prefix("token:"))
            .unwrap();
        // token:REMOTE(id:R)/LOCAL(id:L)
        let (_, local) = tok.split_once('/').unwrap();
        let (token, id) = local.split_once("(id:").unwrap();
        let id: u8 = id.trim_end_matches(')').parse().unwrap();
        // `ss` shows a socket bound to a device as ADDR%DEV:PORT.
        let strip = |a: &str| match (a.find('%'), a.rfind(':')) {
            (Some(p), Some(c)) if p < c => format!("{}{}", &a[..p], &a[c..]),
            _ => a.to_owned(),
        };
        out.insert((padded_token(token), strip(cols[3]), strip(cols[4]), id));
    }
    out
}

/// A token as `ss` prints it (hex without leading zeros) written as eight hex digits.
fn padded_token(hex: &str) -> String {
    let token = u32::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("token {hex}: {e}"));
    format!("{token:08x}")
}

/// `mpbond status --json` against the kernel's own view while a download runs: the MPTCP
/// connections (`ss -M`) and their subflows (`ss -ti`, by token, addresses and ids) are the
/// same, and the joins the path manager saw established are those the kernel counted (`nstat`:
/// `MPTcpExtMPJoinSynAckRx`). The metrics endpoint shows both lines up and the connection.
#[test]
fn status_json_matches_what_the_kernel_shows() {
    use std::collections::BTreeSet;
    if skip_unless_root("status_json_matches_what_the_kernel_shows") {
        return;
    }
    let lab = lab();
    with_bonding(&lab, "status", &["--metrics", "127.0.0.1:9477"], |gw| {
        let download = download_for(&lab, 7, Duration::from_secs(6));
        std::thread::sleep(Duration::from_secs(3));
        let (status, text) = status_json(&lab, gw);
        let on_gw = |program: &str, args: &[&str]| {
            let o = lab.cmd(Role::Gw, program).args(args).output().unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let msk = on_gw("ss", &["-MniH"]);
        let tcp = on_gw("ss", &["-tniHe"]);
        let nstat = on_gw("nstat", &["-az"]);
        let metrics = on_gw("curl", &["-sf", "http://127.0.0.1:9477/metrics"]);
        let t = download.join().unwrap();
        assert!(t.first_bad.is_none());
        eprintln!("{text}");
        for want in [
            "mpbond_line_state{line=\"dsl\"} 1",
            "mpbond_line_state{line=\"lte\"} 1",
            "mpbond_connections_total 1",
            "mpbond_mptcp_connections 1",
            "mpbond_line_bytes_total{line=\"lte\",direction=\"received\"}",
        ] {
            assert!(metrics.contains(want), "{want} in\n{metrics}");
        }

        let s = &status[0];
        assert_eq!(s.kind, "gateway");
        assert_eq!(s.lines.len(), 2);
        let ours: BTreeSet<String> = s
            .connections
            .iter()
            .map(|c| format!("{:08x}", c.token))
            .collect();
        let kernels: BTreeSet<String> = msk
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("token:"))
            .map(padded_token)
            .collect();
        assert_eq!(ours, kernels, "ss -M:\n{msk}");
        // Subflows: (token, local, remote, local id) from both.
        let mut ours = BTreeSet::new();
        for c in &s.connections {
            for f in &c.subflows {
                ours.insert((
                    format!("{:08x}", c.token),
                    f.local.to_string(),
                    f.remote.to_string(),
                    f.ids.0,
                ));
            }
        }
        let kernels = ss_subflows(&tcp);
        assert!(ours.len() >= 2, "a subflow per line: {ours:?}");
        assert_eq!(ours, kernels, "ss -ti:\n{tcp}");
        let acked: u64 = s
            .connections
            .iter()
            .flat_map(|c| &c.subflows)
            .map(|f| f.bytes_received)
            .sum();
        assert!(acked > 1 << 20, "bytes received over the subflows: {acked}");
        let joins: u64 = nstat
            .lines()
            .find(|l| l.starts_with("MPTcpExtMPJoinSynAckRx"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let counters = s.counters.clone().unwrap();
        assert_eq!(counters.subflows_established, joins, "{nstat}");
    });
}

/// `listen --announce` hands the vps's path management to mpbond for the connection: the peer
/// is told of the extra address (`ADD_ADDR`, counted by the client's kernel), joins from the
/// client's second line are still accepted, the data arrives whole, and `pm_type` is put back.
#[test]
fn a_listener_announces_its_extra_address_and_still_takes_joins() {
    use std::io::Read as _;
    if skip_unless_root("a_listener_announces_its_extra_address_and_still_takes_joins") {
        return;
    }
    let lab = lab();
    let on = |role: Role, program: &str, args: &[&str]| {
        let o = lab.cmd(role, program).args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let counter = |text: &str, name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut listen = lab
        .cmd(Role::Vps, EXE)
        .args(["listen", "198.51.100.1:9002", "--announce", "10.2.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = listen.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        out.read_to_end(&mut got).unwrap();
        got
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        on(Role::Vps, "sysctl", &["-n", "net.mptcp.pm_type"]).trim(),
        "1"
    );
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| failover::pattern_byte(9, u64::from(i)))
        .collect();
    let mut connect = lab
        .cmd(Role::Gw, EXE)
        .args([
            "connect",
            "--wan",
            "dsl",
            "--wan",
            "lte",
            "198.51.100.1:9002",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = connect.stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    drop(stdin);
    let c = connect.wait_with_output().unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let got = reader.join().unwrap();
    let l = listen.wait_with_output().unwrap();
    assert!(got == data, "{} of {} bytes", got.len(), data.len());
    let gw = on(Role::Gw, "nstat", &["-az"]);
    let vps = on(Role::Vps, "nstat", &["-az"]);
    eprintln!(
        "ADD_ADDR received by the client: {}, joins accepted by the listener: {}",
        counter(&gw, "MPTcpExtAddAddr "),
        counter(&vps, "MPTcpExtMPJoinAckRx")
    );
    assert!(counter(&gw, "MPTcpExtAddAddr ") >= 1, "{gw}");
    assert!(
        counter(&vps, "MPTcpExtMPJoinAckRx") >= 1,
        "{vps}\n{}",
        String::from_utf8_lossy(&l.stderr)
    );
    assert_eq!(
        on(Role::Vps, "sysctl", &["-n", "net.mptcp.pm_type"]).trim(),
        "0"
    );
}

/// Measurement, run by hand (`cargo test --test path_manager -- --ignored --nocapture
/// failover_across`): the busier line blackholed during a download at several moments and on
/// several line shapes, gateway and converter on the kernel's MPTCP and on mpbond's engine
/// (both gateways under mpbond's path manager), side by side. Prints the longest stall of each; checks only that
/// every byte arrives once and in order (timings of a shared machine are no test threshold).
#[test]
#[ignore = "a measurement: run by hand"]
fn failover_across_moments_and_line_shapes() {
    if skip_unless_root("failover_across_moments_and_line_shapes") {
        return;
    }
    let shapes: [[&str; 2]; 3] = [
        ["dsl:20mbit:10ms", "lte:10mbit:40ms"],
        ["dsl:30mbit:40ms", "lte:10mbit:10ms"],
        ["dsl:40mbit:20ms", "lte:20mbit:30ms"],
    ];
    let moments = [1500u64, 3700, 6200];
    let mut rows = Vec::new();
    for shape in &shapes {
        let lab = TestLab::up(EXE, shape);
        failover::serve_pattern(lab.info().netns(Role::Web), PATTERN.parse().unwrap()).unwrap();
        for &ms in &moments {
            for stack in ["kernel", "user"] {
                let at = Duration::from_millis(ms);
                let seed = ms + u64::from(stack == "user");
                let dir = TempDir::new(stack);
                let args = ["--stack", stack];
                let (gw, conv) =
                    start_bonding_with(&lab, EXE, &dir.0, &["dsl", "lte"], &args, &args);
                let t = {
                    let t = download(
                        &lab,
                        u64::MAX,
                        seed,
                        Some(Duration::from_secs(9)),
                        &[(at, "dsl", LineState::Blackhole)],
                    );
                    assert!(
                        t.first_bad.is_none(),
                        "{shape:?} {stack} at {ms} ms: byte {:?} differs\n{}",
                        t.first_bad,
                        gw.problems()
                    );
                    t
                };
                drop((gw, conv));
                lab.set_state("dsl", LineState::Up);
                let (_, stall) = t.longest_stall(at);
                let row = format!(
                    "{:<34} cut at {:>4} ms  --stack {:<6} longest stall {:>4.0} ms, {:.1} Mbit/s",
                    shape.join(" "),
                    ms,
                    stack,
                    stall.as_secs_f64() * 1e3,
                    t.bytes as f64 * 8.0 / t.elapsed.as_secs_f64() / 1e6
                );
                eprintln!("{row}");
                rows.push(row);
            }
        }
    }
    eprintln!("\n{}", rows.join("\n"));
}
