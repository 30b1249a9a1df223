//! Relay benchmark: what gateway + converter cost against a direct kernel MPTCP connection over
//! the same two lab lines (unshaped, then 500 Mbit/s each), measured side by side in one run,
//! with both daemons on the kernel's MPTCP, then on mpbond's engine (`--stack user`), then on the
//! engine with the TUN's offloads off (`MPBOND_TUN_OFFLOAD=0`: one packet per read and write);
//! the memory an idle relayed connection takes in the two daemons on each, and the daemons'
//! `read`/`write` calls on files and devices per full segment relayed (what limits the engine:
//! the TUN device; `/proc/PID/io` does not count socket calls, so the kernel stack's relay,
//! which only has sockets, shows none).
//!
//! Needs root (it builds a lab): `sudo cargo bench --bench relay`. Prints a Markdown table.
//! Each contender downloads for `MPBOND_BENCH_SECONDS` (default 8) seconds, twice, alternating;
//! the better of the two runs counts (the machine is shared and noisy).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "a benchmark program: fail loudly, print floats"
)]

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mpbond::lab::testing::{TestLab, skip_unless_root, start_bonding_with};
use mpbond::lab::{Role, netns};
use socket2::{Domain, Protocol, Socket, Type};

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");
const VPS: &str = "198.51.100.1";
const WEB: &str = "203.0.113.2";
const IDLE_CONNECTIONS: usize = 1000;

/// A server in host `ns` at `addr`: each connection gets zeros until it closes (`send`), or is
/// held open and idle (`!send`). Runs until the process ends.
fn server(ns: &str, addr: SocketAddr, mptcp: bool, send: bool) {
    let ns = ns.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        netns::enter(&ns).unwrap();
        let proto = mptcp.then_some(Protocol::MPTCP);
        let s = Socket::new(Domain::IPV4, Type::STREAM, proto).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&addr.into()).unwrap();
        s.listen(4096).unwrap();
        let l: TcpListener = s.into();
        tx.send(()).unwrap();
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut c = c;
                if send {
                    let buf = vec![0u8; 256 * 1024];
                    while c.write_all(&buf).is_ok() {}
                } else {
                    let _ = c.read(&mut [0u8; 1]);
                }
            });
        }
    });
    rx.recv().unwrap();
}

/// Downloads from `addr` in host `ns` for `secs` seconds; goodput in bit/s after a 1 s warm-up.
fn download(ns: &str, addr: SocketAddr, mptcp: bool, secs: f64) -> f64 {
    netns::in_netns(ns, || {
        let proto = mptcp.then_some(Protocol::MPTCP);
        let s = Socket::new(Domain::IPV4, Type::STREAM, proto).unwrap();
        s.connect_timeout(&addr.into(), Duration::from_secs(10))
            .unwrap();
        let mut c: TcpStream = s.into();
        let mut buf = vec![0u8; 256 * 1024];
        let start = Instant::now();
        let warm = Duration::from_secs(1);
        let mut counted = 0u64;
        while start.elapsed() < warm {
            if c.read(&mut buf).unwrap() == 0 {
                break;
            }
        }
        let t0 = Instant::now();
        while t0.elapsed().as_secs_f64() < secs {
            counted += c.read(&mut buf).unwrap() as u64;
        }
        let bps = counted as f64 * 8.0 / t0.elapsed().as_secs_f64();
        let _ = c.shutdown(Shutdown::Both);
        bps
    })
    .unwrap()
}

/// Resident memory of a process, bytes.
fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb * 1024
}

/// User + system CPU time of a process, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / hz as f64
}

/// `read`/`write`-class calls on files and devices a process made so far (`syscr` + `syscw`
/// of `/proc/PID/io`: the TUN device, eventfd wake-ups; not socket calls, nor `epoll_wait`).
fn io_syscalls(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    s.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k, "syscr" | "syscw").then(|| v.trim().parse::<u64>().ok())?
        })
        .sum()
}

/// What one data plane of gateway + converter measured.
struct Plane {
    /// Per line shape: relayed goodput (bit/s), CPU of both daemons per GB, and their reads
    /// and writes of files and devices per 1448 payload bytes relayed.
    relayed: Vec<(f64, f64, f64)>,
    /// Resident memory per idle relayed connection: gateway, converter (KiB).
    idle_kib: (f64, f64),
}

/// The line shapes measured, each as the lab's `set` arguments.
const SHAPES: [(&str, &str); 2] = [
    ("2 × unshaped", "rate=unlimited"),
    ("2 × 500 Mbit/s", "rate=500mbit"),
];

/// Downloads from the web host through gateway and converter running `stack`, on each of
/// [`SHAPES`], twice each (the better counts), measuring the direct kernel MPTCP transfer in
/// between when `direct` is given; then the memory of idle relayed connections.
fn measure(
    lab: &TestLab,
    dir: &Path,
    stack: &str,
    secs: f64,
    direct: &mut Option<Vec<f64>>,
) -> Plane {
    let args = ["--stack", stack];
    // The kernel-stack gateway also gives the kernel its per-line endpoints, which the direct
    // MPTCP connection uses too: both contenders run on the same two subflows.
    let (gateway, converter) = start_bonding_with(lab, EXE, dir, &["l1", "l2"], &args, &args);
    let info = lab.info();
    let (gw, lan) = (info.netns(Role::Gw), info.netns(Role::Lan));
    let vps_ip: IpAddr = VPS.parse().unwrap();
    let web_ip: IpAddr = WEB.parse().unwrap();
    let mut relayed = Vec::new();
    let mut directs = Vec::new();
    for (_, shape) in SHAPES {
        for line in ["l1", "l2"] {
            lab.set(line, &[shape]);
        }
        let (mut d, mut r, mut cpu_per_gb, mut calls) = (0f64, 0f64, f64::MAX, f64::MAX);
        for _ in 0..2 {
            if direct.is_some() {
                d = d.max(download(gw, (vps_ip, 9100).into(), true, secs));
            }
            let c0 = cpu_seconds(gateway.pid()) + cpu_seconds(converter.pid());
            let s0 = io_syscalls(gateway.pid()) + io_syscalls(converter.pid());
            let t0 = Instant::now();
            let got = download(lan, (web_ip, 9101).into(), false, secs);
            let cpu = cpu_seconds(gateway.pid()) + cpu_seconds(converter.pid()) - c0;
            let sys = io_syscalls(gateway.pid()) + io_syscalls(converter.pid()) - s0;
            let bytes = got * t0.elapsed().as_secs_f64() / 8.0;
            r = r.max(got);
            cpu_per_gb = cpu_per_gb.min(cpu / (bytes / 1e9));
            calls = calls.min(sys as f64 / (bytes / 1448.0));
        }
        directs.push(d);
        relayed.push((r, cpu_per_gb, calls));
    }
    if let Some(v) = direct.as_mut() {
        *v = directs;
    }
    // Memory: idle relayed connections held open by the web host.
    let before = (rss(gateway.pid()), rss(converter.pid()));
    let held = netns::in_netns(lan, || {
        (0..IDLE_CONNECTIONS)
            .map(|_| TcpStream::connect((web_ip, 9102)).unwrap())
            .collect::<Vec<_>>()
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let after = (rss(gateway.pid()), rss(converter.pid()));
    drop(held);
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / IDLE_CONNECTIONS as f64 / 1024.0;
    drop((gateway, converter));
    Plane {
        relayed,
        idle_kib: (per(after.0, before.0), per(after.1, before.1)),
    }
}

fn main() {
    if skip_unless_root("relay benchmark") {
        return;
    }
    let secs: f64 = std::env::var("MPBOND_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8.0);
    let lab = TestLab::up(EXE, &["l1:unlimited:0", "l2:unlimited:0"]);
    let dir = PathBuf::from(format!("/run/mpbond/bench-relay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let info = lab.info();
    let vps_ip: IpAddr = VPS.parse().unwrap();
    let web_ip: IpAddr = WEB.parse().unwrap();
    server(info.netns(Role::Vps), (vps_ip, 9100).into(), true, true);
    server(info.netns(Role::Web), (web_ip, 9101).into(), false, true);
    server(info.netns(Role::Web), (web_ip, 9102).into(), false, false);

    let mut direct = Some(Vec::new());
    let kernel = measure(&lab, &dir, "kernel", secs, &mut direct);
    let user = measure(&lab, &dir, "user", secs, &mut None);
    // The same without the TUN's offloads (one packet per read and write). The daemons inherit
    // the variable; nothing else in this program reads the environment.
    // SAFETY: the server threads only accept and write; no thread reads the environment.
    unsafe { std::env::set_var("MPBOND_TUN_OFFLOAD", "0") };
    let plain = measure(&lab, &dir, "user", secs, &mut None);
    let direct = direct.unwrap_or_default();

    println!(
        "| lines | direct kernel MPTCP (vps → gw) | relayed, kernel stack (web → lan) | relayed, user stack | user stack without TUN offloads | kernel / direct | user / direct | CPU per GB relayed, kernel / user / user without offloads | file/device reads+writes per 1448 B relayed, kernel / user / user without offloads |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, (label, _)) in SHAPES.iter().enumerate() {
        let (d, (k, kcpu, kcalls), (u, ucpu, ucalls), (p, pcpu, pcalls)) = (
            direct[i],
            kernel.relayed[i],
            user.relayed[i],
            plain.relayed[i],
        );
        println!(
            "| {label} | {:.0} Mbit/s | {:.0} Mbit/s | {:.0} Mbit/s | {:.0} Mbit/s | **{:.1} %** | **{:.1} %** | {kcpu:.2} s / {ucpu:.2} s / {pcpu:.2} s | {kcalls:.2} / {ucalls:.2} / {pcalls:.2} |",
            d / 1e6,
            k / 1e6,
            u / 1e6,
            p / 1e6,
            100.0 * k / d,
            100.0 * u / d,
        );
    }
    println!(
        "\nMemory per idle relayed connection ({IDLE_CONNECTIONS} held open), resident: kernel stack: gateway {:.1} KiB, converter {:.1} KiB; user stack: gateway {:.1} KiB, converter {:.1} KiB (without TUN offloads: {:.1}, {:.1})",
        kernel.idle_kib.0,
        kernel.idle_kib.1,
        user.idle_kib.0,
        user.idle_kib.1,
        plain.idle_kib.0,
        plain.idle_kib.1
    );
    let _ = std::fs::remove_dir_all(&dir);
}
