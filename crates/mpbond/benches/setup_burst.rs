//! Connection setup benchmark: a burst of concurrent short requests from the LAN host through
//! gateway and converter, all opened at once (issue 12: "1000 concurrent 10 KB downloads took
//! 12.7 s"). For each request, the *setup time* is from `connect()` to its first byte of answer
//! (the LAN client's connection captured, the MPTCP connection to the converter opened and
//! authenticated, the converter connected to the server, the first byte back); the rate is the
//! requests divided by the time until the last one had its first byte.
//!
//! Needs root (it builds a lab): `sudo cargo bench --bench setup_burst`. Lines: dsl
//! 20mbit/10ms and lte 10mbit/40ms. Settings:
//! - `MPBOND_BENCH_BURST`: requests per burst (default 1000);
//! - `MPBOND_BENCH_ANSWERS`: answer sizes, one burst each (default `1024,10000`);
//! - `MPBOND_BENCH_BEFORE=/path/to/old/mpbond`: that binary's gateway and converter first, in
//!   the same lab, for a before/after table;
//! - `MPBOND_BENCH_STACKS`: the data planes this build's daemons run on, one burst series each
//!   (default `kernel,user`: the kernel's MPTCP, then mpbond's engine at both ends, whose
//!   Convert message rides in the SYN once the gateway holds a Fast Open cookie);
//! - `MPBOND_BENCH_KEEP=1`: keep the daemons' logs (`MPBOND_TEST_LOG=debug` for a line per
//!   connection);
//! - `MPBOND_BENCH_PERF=FILE`: `perf record` of the whole machine during each burst through the
//!   daemons, to `FILE.<answer size>`;
//! - `MPBOND_BENCH_CAPTURE=FILE`: tcpdump of the gateway's side of the lines during each burst
//!   through the daemons, to `FILE.<answer size>.pcap` (with `MPBOND_BENCH_BURST=1`, a relayed
//!   request frame by frame).
//!
//! Prints Markdown, with what explains the figures: frames the lines' queues dropped, segments
//! the hosts retransmitted, and how busy the machine's CPUs were (on a small machine the lab's
//! emulator, the hosts' kernels, the client and the server share the CPUs with the daemons).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a benchmark program: fail loudly, print floats"
)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mpbond::lab::failover;
use mpbond::lab::testing::{Capture, TestLab, skip_unless_root, start_bonding_with};
use mpbond::lab::{Role, netns};

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");
const PATTERN: &str = "203.0.113.2:8081";

/// One request's times since its `connect()`: first byte, last byte; `None` if it failed.
type Times = Option<(Duration, Duration)>;

/// `n` requests of `len` bytes each, opened at once from the LAN host (one thread, epoll: the
/// client must cost little next to what it measures).
fn burst(lab: &TestLab, n: usize, len: u64) -> Vec<Times> {
    let addr: SocketAddr = PATTERN.parse().unwrap();
    netns::in_netns(lab.info().netns(Role::Lan), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let tasks: Vec<_> = (0..n)
                .map(|i| tokio::spawn(request(addr, len, i as u64)))
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        })
    })
    .unwrap()
}

/// One request: its first and last byte's times since `connect()`.
async fn request(addr: SocketAddr, len: u64, seed: u64) -> Times {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t0 = Instant::now();
    let mut c = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .ok()?
    .ok()?;
    let mut req = len.to_le_bytes().to_vec();
    req.extend_from_slice(&seed.to_le_bytes());
    c.write_all(&req).await.ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut got = 0u64;
    let mut first = None;
    while got < len {
        let k = tokio::time::timeout(Duration::from_secs(60), c.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if k == 0 {
            return None;
        }
        first.get_or_insert_with(|| t0.elapsed());
        got += k as u64;
    }
    Some((first?, t0.elapsed()))
}

/// A pattern server (the protocol of [`failover::serve_pattern`]) on tokio in the web host, for
/// the life of the process.
fn serve_pattern(lab: &TestLab) {
    let ns = lab.info().netns(Role::Web).to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        netns::enter(&ns).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_reuseaddr(true).unwrap();
            sock.bind(PATTERN.parse().unwrap()).unwrap();
            let l = sock.listen(4096).unwrap();
            tx.send(()).unwrap();
            loop {
                let Ok((mut c, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut req = [0u8; 16];
                    c.read_exact(&mut req).await.ok()?;
                    let len = u64::from_le_bytes(req[..8].try_into().ok()?);
                    let seed = u64::from_le_bytes(req[8..].try_into().ok()?);
                    let mut buf = vec![0u8; usize::try_from(len).ok()?.min(1 << 20)];
                    failover::fill(seed, 0, &mut buf);
                    c.write_all(&buf).await.ok()?;
                    c.shutdown().await.ok()
                });
            }
        });
    });
    rx.recv().unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The gateway's Prometheus counter `name`.
fn gateway_metric(lab: &TestLab, name: &str) -> u64 {
    netns::in_netns(lab.info().netns(Role::Gw), || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9478").ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut t = String::new();
        s.read_to_string(&mut t).ok()?;
        t.lines()
            .find(|l| l.starts_with(&format!("mpbond_{name} ")))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
    })
    .ok()
    .flatten()
    .unwrap_or(0)
}

/// The counters `names` of `/proc/net/snmp` and `/proc/net/netstat` (`Tcp:` and `TcpExt:` rows)
/// in the lab host `role`'s namespace.
fn kernel_counters(lab: &TestLab, role: Role, names: &[&str]) -> Vec<u64> {
    netns::in_netns(lab.info().netns(role), || {
        let mut all = std::collections::HashMap::new();
        for file in ["snmp", "netstat"] {
            let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))?;
            let lines: Vec<&str> = text.lines().collect();
            for pair in lines.chunks(2) {
                let [head, values] = pair else { continue };
                for (k, v) in head
                    .split_whitespace()
                    .zip(values.split_whitespace())
                    .skip(1)
                {
                    all.insert(k.to_owned(), v.parse::<u64>().unwrap_or(0));
                }
            }
        }
        Ok::<_, std::io::Error>(
            names
                .iter()
                .map(|n| all.get(*n).copied().unwrap_or(0))
                .collect(),
        )
    })
    .ok()
    .and_then(Result::ok)
    .unwrap_or_else(|| vec![0; names.len()])
}

/// The machine's busy and total CPU time so far (`/proc/stat`'s first line, in clock ticks).
fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    let total: u64 = ticks.iter().take(8).sum();
    (total - idle, total)
}

/// What explains a burst's figures, counted before and after it.
struct Counters {
    /// Frames the lines' queues dropped, both directions of every line.
    queue_drops: u64,
    /// Frames that reached the lines, both directions of every line.
    line_frames: u64,
    /// Bytes that reached each line towards the LAN (its name, the bytes).
    down_bytes: Vec<(String, u64)>,
    /// Segments retransmitted by every lab host but the emulator's.
    retrans: u64,
    /// Of which SYNs.
    syn_retrans: u64,
    /// The machine's busy and total CPU time.
    machine: (u64, u64),
}

impl Counters {
    fn take(lab: &TestLab) -> Self {
        let lines = lab.stats().lines;
        let mut c = Counters {
            queue_drops: lines
                .iter()
                .map(|l| l.upstream.dropped.queue + l.downstream.dropped.queue)
                .sum(),
            line_frames: lines
                .iter()
                .map(|l| l.upstream.arrived_packets + l.downstream.arrived_packets)
                .sum(),
            down_bytes: lines
                .iter()
                .map(|l| (l.name.clone(), l.downstream.arrived_bytes))
                .collect(),
            retrans: 0,
            syn_retrans: 0,
            machine: machine_cpu(),
        };
        for role in [Role::Lan, Role::Gw, Role::Vps, Role::Web] {
            let k = kernel_counters(lab, role, &["RetransSegs", "TCPSynRetrans"]);
            c.retrans += k[0];
            c.syn_retrans += k[1];
        }
        c
    }

    /// Bytes per request towards the LAN on each line since `before`, for `n` requests.
    fn down_per_request(&self, before: &Counters, n: usize) -> String {
        let per: Vec<String> = self
            .down_bytes
            .iter()
            .zip(&before.down_bytes)
            .map(|((name, a), (_, b))| format!("{name} {:.0}", (a - b) as f64 / n as f64))
            .collect();
        per.join(", ")
    }

    /// The share of the machine's CPU time that was busy since `before`.
    fn busy_since(&self, before: &Counters) -> f64 {
        (self.machine.0 - before.machine.0) as f64
            / (self.machine.1 - before.machine.1).max(1) as f64
    }
}

/// `perf record` of the whole machine while it lives, when `MPBOND_BENCH_PERF` asks for it.
struct Perf(std::process::Child);

impl Perf {
    fn start(len: u64) -> Option<Perf> {
        let out = std::env::var("MPBOND_BENCH_PERF").ok()?;
        let child = std::process::Command::new("perf")
            .args(["record", "-a", "-g", "-F", "999", "-o"])
            .arg(format!("{out}.{len}"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("perf record");
        Some(Perf(child))
    }
}

/// tcpdump of the gateway's side of the lines, when `MPBOND_BENCH_CAPTURE` asks for it.
fn capture(lab: &TestLab, len: u64) -> Option<Capture> {
    let out = std::env::var("MPBOND_BENCH_CAPTURE").ok()?;
    let pcap = std::path::PathBuf::from(format!("{out}.{len}.pcap"));
    Some(Capture::start(lab, Role::Gw, "tcp port 7000", &pcap))
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) of our own child, which has not been waited for yet.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let _ = self.0.wait();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One series of bursts, one per answer size: plain TCP on dsl (`exe` none), or through the
/// gateway and converter of `exe` on `stack`; a row each.
fn series(
    lab: &TestLab,
    dir: &std::path::Path,
    label: &str,
    exe: Option<(&str, &str)>,
    n: usize,
    answers: &[u64],
) {
    let gateway = exe.map(|(exe, stack)| {
        start_bonding_with(
            lab,
            exe,
            dir,
            &["dsl", "lte"],
            &["--metrics", "127.0.0.1:9478", "--stack", stack],
            &["--stack", stack],
        )
    });
    let cpu = || {
        gateway.as_ref().map_or(Duration::ZERO, |(g, c)| {
            [g.pid(), c.pid()]
                .into_iter()
                .filter_map(mpbond::lab::measure::process_cpu_time)
                .sum()
        })
    };
    // One request first, as a running gateway has made before any burst: the daemons are
    // warm and, on the engine, the gateway holds its converter's Fast Open cookie.
    assert!(
        burst(lab, 1, 1024)[0].is_some(),
        "{label}: the warm-up request failed"
    );
    for &len in answers {
        let fell_back = gateway_metric(lab, "fallbacks_total");
        let cpu_before = cpu();
        let before = Counters::take(lab);
        let perf = exe.and_then(|_| Perf::start(len));
        let pcap = exe.and_then(|_| capture(lab, len));
        let times = burst(lab, n, len);
        drop(perf);
        // The connections' ends too.
        std::thread::sleep(Duration::from_secs(2 * u64::from(pcap.is_some())));
        drop(pcap);
        let busy = Counters::take(lab).busy_since(&before);
        let fell_back = gateway_metric(lab, "fallbacks_total").saturating_sub(fell_back);
        // The connections' ends (FIN, DATA_FIN) are the daemons' work too.
        std::thread::sleep(Duration::from_secs(2));
        let cpu_per = cpu().saturating_sub(cpu_before).as_secs_f64() * 1e6 / n as f64;
        let after = Counters::take(lab);
        let frames = (after.line_frames - before.line_frames) as f64 / n as f64;
        let down = after.down_per_request(&before, n);
        let (drops, retrans, syn_retrans) = (
            after.queue_drops - before.queue_drops,
            after.retrans - before.retrans,
            after.syn_retrans - before.syn_retrans,
        );
        let ok: Vec<(Duration, Duration)> = times.iter().flatten().copied().collect();
        let mut setup: Vec<Duration> = ok.iter().map(|t| t.0).collect();
        let mut done: Vec<Duration> = ok.iter().map(|t| t.1).collect();
        setup.sort();
        done.sort();
        let last = setup.last().copied().unwrap_or_default();
        println!(
            "| {label} | {len} B | {n} | {:.2} s | {:.0}/s | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {} | {fell_back} | {cpu_per:.0} µs | {frames:.1} | {down} | {drops} | {retrans} ({syn_retrans}) | {:.0} % |",
            last.as_secs_f64(),
            ok.len() as f64 / last.as_secs_f64().max(1e-3),
            ms(percentile(&setup, 0.5)),
            ms(percentile(&setup, 0.99)),
            ms(percentile(&done, 0.5)),
            ms(percentile(&done, 0.99)),
            n - ok.len(),
            busy * 100.0,
        );
    }
    drop(gateway);
}

/// `MPBOND_BENCH_STACKS`: the data planes to run this build's daemons on.
fn stacks() -> Vec<String> {
    std::env::var("MPBOND_BENCH_STACKS")
        .unwrap_or_else(|_| "kernel,user".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .inspect(|s| {
            assert!(
                s == "kernel" || s == "user",
                "MPBOND_BENCH_STACKS: `{s}` is not kernel or user"
            );
        })
        .collect()
}

fn main() {
    if skip_unless_root("setup burst benchmark") {
        return;
    }
    let _ = mpbond::sys::raise_nofile_limit();
    let n: usize = std::env::var("MPBOND_BENCH_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let answers: Vec<u64> = std::env::var("MPBOND_BENCH_ANSWERS").map_or_else(
        |_| vec![1024, 10_000],
        |v| {
            v.split(',')
                .map(|a| {
                    a.trim()
                        .parse()
                        .expect("MPBOND_BENCH_ANSWERS: a list of byte counts")
                })
                .collect()
        },
    );
    let lab = TestLab::up(EXE, &["dsl:20mbit:10ms", "lte:10mbit:40ms"]);
    serve_pattern(&lab);
    let dir = std::path::PathBuf::from(format!("/run/mpbond/bench-setup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stacks = stacks();
    let mut exes = Vec::new();
    if let Ok(before) = std::env::var("MPBOND_BENCH_BEFORE") {
        exes.push(("before".to_owned(), before, "kernel"));
    }
    for stack in &stacks {
        exes.push((
            format!("this build, --stack {stack}"),
            EXE.to_owned(),
            stack.as_str(),
        ));
    }
    println!(
        "| mpbond | answer | requests | all first bytes after | rate | setup p50 | setup p99 | complete p50 | complete p99 | failed | fell back to TCP | daemons' CPU per request | frames on the lines per request | bytes per request towards the LAN, per line | frames dropped by the lines' queues | segments retransmitted (SYNs) | machine's CPUs busy during the burst |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    // The floor: the same requests straight over the dsl line, without gateway and converter.
    let mut runs: Vec<(&str, Option<(&str, &str)>)> = vec![("none: plain TCP on dsl", None)];
    runs.extend(
        exes.iter()
            .map(|(l, e, stack)| (l.as_str(), Some((e.as_str(), *stack)))),
    );
    for (label, exe) in runs {
        series(&lab, &dir, label, exe, n, &answers);
    }
    if std::env::var_os("MPBOND_BENCH_KEEP").is_some() {
        eprintln!("daemons' logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
