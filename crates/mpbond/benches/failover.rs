//! Failover benchmark: the longest stall of a transfer through gateway and converter when the
//! line carrying most of it is blackholed, side by side in one run on the same lab (RFC 8684
//! gives no timing; this is what users feel): the kernel stack with mpbond's path manager
//! (`mpbond`) and with the kernel's in-kernel one (`kernel`), and gateway and converter on
//! mpbond's own engine (`user`, `--stack user` at both ends, mpbond's path manager judging the
//! lines). Downloads and uploads; the blackhole comes at a moment drawn for each run between 2
//! and 6 s into the transfer, so no figure holds only for one moment.
//!
//! For mpbond's path manager it also says where the milliseconds go: *detection*, from the
//! blackhole to the gateway's `line stopped working`, and what follows until bytes flow again
//! (the withdrawal reaching the converter, the data in flight on the dead line sent again
//! behind the other line's queue).
//!
//! Needs root (it builds a lab): `sudo cargo bench --bench failover`. Lines: dsl 20 Mbit/s and
//! lte 10 Mbit/s, each with a round trip drawn per run between 20 and 80 ms (and the lab's
//! default queue for it, two one-way delays); dsl, the busier, is blackholed during a 24 MiB
//! transfer. Every contender meets the same lines and the same moment in each round.
//! `MPBOND_BENCH_RUNS` runs per contender and direction (default 5), alternating;
//! `MPBOND_BENCH_CONTENDERS=mpbond,kernel,user` picks the contenders;
//! `MPBOND_BENCH_DIRECTIONS=down,up` picks the directions; `MPBOND_BENCH_KEEP=1` keeps the
//! gateway's log of each run (`MPBOND_TEST_LOG=debug` for the path manager's every step), and
//! `MPBOND_BENCH_CAPTURE=1` captures of the gateway's and the converter's side of the lines next
//! to it. The lab's hosts run CUBIC, Linux's default (this matters to the kernel stack: with BBR
//! hosts it fails over about twice as slowly, docs/path-manager.md);
//! `MPBOND_BENCH_SYSCTL="net.ipv4.tcp_congestion_control=bbr"` (any `KEY=VALUE;...`, set in
//! every namespace of the lab) says otherwise. Prints a Markdown table.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a benchmark program: fail loudly, print floats"
)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mpbond::lab::failover;
use mpbond::lab::testing::{TestLab, skip_unless_root, start_bonding_with};
use mpbond::lab::{LineState, Role};

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");
const PATTERN: &str = "203.0.113.2:8081";
const SINK: &str = "203.0.113.2:8082";
const LEN: u64 = 24 << 20;

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// The longest time without a byte at the receiver, from the blackhole on.
    stall: Duration,
    /// Seconds the transfer took.
    took: f64,
    /// Blackhole to `line stopped working` (mpbond's path manager only).
    detect: Option<Duration>,
    /// From then until the end of the longest stall.
    after: Option<Duration>,
    /// From the blackhole to the start of the longest stall.
    from: Duration,
}

/// A number drawn from `seed` (splitmix64).
fn draw(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// When in the transfer the line is blackholed: between 2 and 6 s, drawn from `seed`.
fn moment(seed: u64) -> Duration {
    Duration::from_millis(2000 + draw(seed) % 4000)
}

/// The one-way delays of dsl and lte for a run, each drawn from `seed` between 10 and 40 ms
/// (round trips of 20 to 80 ms), in 5 ms steps.
fn delays(seed: u64) -> (Duration, Duration) {
    let z = draw(seed ^ 0x5eed);
    let pick = |v: u64| Duration::from_millis(10 + 5 * (v % 7));
    (pick(z), pick(z >> 8))
}

/// Gives line `line` the one-way `delay` and the lab's default queue for it.
fn shape(lab: &TestLab, line: &str, delay: Duration) {
    let queue = mpbond::lab::spec::DirectionSpec::default_queue(delay);
    let settings = [
        format!("delay={}ms", delay.as_millis()),
        format!("queue={}ms", queue.as_millis()),
    ];
    mpbond::lab::set_line(lab.name(), line, &settings).unwrap();
}

/// The time of a log line (`2026-12-03T14:23:53.957866Z ...`, UTC).
fn log_time(line: &str) -> Option<SystemTime> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|v| v.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|v| v.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let nanos = format!("{frac:0<9}")[..9].parse::<u64>().ok()?;
    Some(
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(days * 86_400 + hh * 3600 + mm * 60 + ss)
            + Duration::from_nanos(nanos),
    )
}

/// The gateway's and the converter's extra arguments for contender `who`.
fn arguments(who: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match who {
        "mpbond" => (&["--pm", "mpbond"], &[]),
        "kernel" => (&["--pm", "kernel"], &[]),
        "user" => (&["--stack", "user"], &["--stack", "user"]),
        other => panic!("MPBOND_BENCH_CONTENDERS: `{other}` is not mpbond, kernel or user"),
    }
}

/// One blackhole run of contender `pm` ([`arguments`]), `up` or down.
fn run(lab: &TestLab, dir: &std::path::Path, pm: &str, up: bool, seed: u64) -> Run {
    let (dsl, lte) = delays(seed);
    shape(lab, "dsl", dsl);
    shape(lab, "lte", lte);
    let (gateway_args, converter_args) = arguments(pm);
    let (gateway, _converter) =
        start_bonding_with(lab, EXE, dir, &["dsl", "lte"], gateway_args, converter_args);
    let at = moment(seed);
    let name = lab.name().to_owned();
    let cut = Arc::new(Mutex::new(None));
    let cut2 = Arc::clone(&cut);
    let blackhole: Box<dyn FnOnce() + Send> = Box::new(move || {
        *cut2.lock().unwrap() = Some(SystemTime::now());
        mpbond::lab::set_line_state(&name, "dsl", LineState::Blackhole).unwrap();
    });
    let schedule = vec![(at, blackhole)];
    let (lan, web) = (lab.info().netns(Role::Lan), lab.info().netns(Role::Web));
    // MPBOND_BENCH_CAPTURE=1: the gateway's WAN side of the run (tcpdump), to follow the
    // failover segment by segment with tshark.
    let capture: Vec<std::process::Child> = if std::env::var_os("MPBOND_BENCH_CAPTURE").is_some() {
        let captures = [Role::Gw, Role::Vps].map(|role| {
            let pcap = dir.join(format!(
                "{role}-{pm}-{}-{seed}.pcap",
                if up { "up" } else { "down" }
            ));
            std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    lab.info().netns(role),
                    "tcpdump",
                    "-q",
                    "-i",
                    "any",
                ])
                .args(["-s", "200", "-w"])
                .arg(&pcap)
                .args(["tcp", "port", "7000", "or", "icmp"])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(300));
        captures.into()
    } else {
        Vec::new()
    };
    let t = if up {
        failover::upload(lan, web, SINK.parse().unwrap(), LEN, seed, schedule)
    } else {
        failover::download(lan, PATTERN.parse().unwrap(), LEN, seed, None, schedule)
    }
    .unwrap();
    assert!(t.intact(LEN), "{pm}: {}", gateway.problems());
    let captured = !capture.is_empty();
    for mut c in capture {
        let _ = c.kill();
        let _ = c.wait();
    }
    if captured {
        // The converter's MPTCP counters after the run (nstat keeps none between namespaces).
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                lab.info().netns(Role::Vps),
                "nstat",
                "-az",
                "MPTcp*",
            ])
            .output()
            .unwrap();
        let name = format!("vps-{pm}-{}-{seed}.nstat", if up { "up" } else { "down" });
        std::fs::write(dir.join(name), out.stdout).unwrap();
    }
    let (start, stall) = t.longest_stall(at);
    let cut = cut.lock().unwrap().expect("the blackhole happened");
    let detect = gateway
        .log_text()
        .lines()
        .find(|l| l.contains("line stopped working") && l.contains("dsl"))
        .and_then(log_time)
        .and_then(|t| t.duration_since(cut).ok());
    // From the line given up to the end of the longest stall: the withdrawal and the data sent
    // again (zero when that stall was over by then).
    let after = detect.map(|d| (start + stall).saturating_sub(at + d));
    if std::env::var_os("MPBOND_BENCH_KEEP").is_some() {
        let log = dir.join(format!(
            "gateway-{pm}-{}-{seed}.log",
            if up { "up" } else { "down" }
        ));
        std::fs::write(&log, gateway.log_text()).unwrap();
    }
    drop(gateway);
    lab.set_state("dsl", LineState::Up);
    Run {
        stall,
        took: t.elapsed.as_secs_f64(),
        detect,
        after,
        from: start.saturating_sub(at),
    }
}

/// The `p` quantile (nearest rank) of `v`, sorted here.
fn quantile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

/// Sets the hosts' congestion control to CUBIC, then `MPBOND_BENCH_SYSCTL="KEY=VALUE;..."`, in
/// every namespace of the lab (to compare host settings side by side); returns the congestion
/// control they run.
fn configure_hosts(lab: &TestLab) -> String {
    let sysctl = std::env::var("MPBOND_BENCH_SYSCTL").unwrap_or_default();
    let settings = std::iter::once("net.ipv4.tcp_congestion_control=cubic")
        .chain(sysctl.split(';').map(str::trim).filter(|s| !s.is_empty()));
    for kv in settings {
        for role in Role::ALL {
            let ok = std::process::Command::new("ip")
                .args(["netns", "exec", lab.info().netns(role), "sysctl", "-qw", kv])
                .status()
                .unwrap()
                .success();
            assert!(ok, "sysctl {kv} in {role}");
        }
    }
    let congestion = std::process::Command::new("ip")
        .args(["netns", "exec", lab.info().netns(Role::Vps)])
        .args(["sysctl", "-n", "net.ipv4.tcp_congestion_control"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&congestion.stdout)
        .trim()
        .to_owned()
}

fn main() {
    if skip_unless_root("failover benchmark") {
        return;
    }
    let runs: u64 = std::env::var("MPBOND_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let directions: Vec<bool> = std::env::var("MPBOND_BENCH_DIRECTIONS")
        .unwrap_or_else(|_| "down,up".into())
        .split(',')
        .map(|d| match d.trim() {
            "up" => true,
            "down" => false,
            other => panic!("MPBOND_BENCH_DIRECTIONS: `{other}` is not down or up"),
        })
        .collect();
    let lab = TestLab::up(EXE, &["dsl:20mbit:10ms", "lte:10mbit:40ms"]);
    let congestion = configure_hosts(&lab);
    failover::serve_pattern(lab.info().netns(Role::Web), PATTERN.parse().unwrap()).unwrap();
    let dir = PathBuf::from(format!("/run/mpbond/bench-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let contenders =
        std::env::var("MPBOND_BENCH_CONTENDERS").unwrap_or_else(|_| "mpbond,kernel,user".into());
    let pms: Vec<&str> = contenders.split(',').map(str::trim).collect();
    for pm in &pms {
        let _ = arguments(pm);
    }
    let mut results: Vec<(&str, bool, Vec<Run>)> = Vec::new();
    for &up in &directions {
        for &pm in &pms {
            results.push((pm, up, Vec::new()));
        }
    }
    for r in 0..runs {
        for (pm, up, res) in &mut results {
            // Both path managers meet the same lines and the same moment in a round.
            let seed = r * 10 + u64::from(*up);
            let (dsl, lte) = delays(seed);
            let got = run(&lab, &dir, pm, *up, seed);
            eprintln!(
                "run {r}: {pm} {}: RTT dsl {} ms, lte {} ms; cut at {} ms, stall {} ms from +{} ms, detection {} ms, stall over {} ms later; {:.1} s",
                if *up { "upload" } else { "download" },
                (2 * dsl).as_millis(),
                (2 * lte).as_millis(),
                ms(moment(seed)),
                ms(got.stall),
                ms(got.from),
                got.detect.map_or_else(|| "-".into(), ms),
                got.after.map_or_else(|| "-".into(), ms),
                got.took
            );
            res.push(got);
        }
    }
    if std::env::var_os("MPBOND_BENCH_KEEP").is_some() {
        eprintln!("gateway logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "{runs} runs per contender and direction; the hosts' congestion control: {congestion}\n"
    );
    println!(
        "| contender | transfer | longest stall p50 | p95 | max | detection p50 (p95) | from then to the stall's end, p50 (p95) | 24 MiB took, p50 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (pm, up, res) in &results {
        let mut stalls: Vec<Duration> = res.iter().map(|r| r.stall).collect();
        let mut detect: Vec<Duration> = res.iter().filter_map(|r| r.detect).collect();
        let mut after: Vec<Duration> = res.iter().filter_map(|r| r.after).collect();
        let mut took: Vec<Duration> = res
            .iter()
            .map(|r| Duration::from_secs_f64(r.took))
            .collect();
        let pair = |v: &mut Vec<Duration>| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                format!("{} ({})", ms(quantile(v, 0.5)), ms(quantile(v, 0.95)))
            }
        };
        println!(
            "| {pm} | {} | **{} ms** | {} ms | {} ms | {} | {} | {:.1} s |",
            if *up { "upload" } else { "download" },
            ms(quantile(&mut stalls, 0.5)),
            ms(quantile(&mut stalls, 0.95)),
            ms(quantile(&mut stalls, 1.0)),
            pair(&mut detect),
            pair(&mut after),
            quantile(&mut took, 0.5).as_secs_f64(),
        );
    }
}
