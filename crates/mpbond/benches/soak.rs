//! No-false-alarm soak: both lines fully loaded for minutes, with the faults of real lines —
//! bufferbloat (a 250 ms queue on lte), 1 % loss and jitter on both — and no line failing.
//! A path manager that gives a line up here has raised a false alarm: each one withdraws the
//! line from every connection and stalls them. Runs mpbond's path manager and the in-kernel
//! one, one after the other on the same lab, and reports the lines given up (the gateway's
//! `line stopped working`), the longest time without a byte at the receiver, and the goodput.
//!
//! Needs root (it builds a lab): `sudo cargo bench --bench soak`. `MPBOND_SOAK_SECS` sets the
//! length of each run (default 600), `MPBOND_BENCH_PMS=mpbond` the path managers (default
//! `mpbond,kernel`); `MPBOND_BENCH_KEEP=1` keeps the gateways' logs. Lines:
//! dsl 20 Mbit/s, 10 ms each way, 5 ms jitter, 1 % loss; lte 10 Mbit/s, 40 ms each way, 20 ms
//! jitter, 1 % loss, a 250 ms queue. Prints a Markdown table.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "a benchmark program: fail loudly, print floats"
)]

use std::path::PathBuf;
use std::time::Duration;

use mpbond::lab::Role;
use mpbond::lab::failover;
use mpbond::lab::testing::{TestLab, skip_unless_root, start_bonding};

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");
const PATTERN: &str = "203.0.113.2:8081";
const LINES: [&str; 2] = [
    "dsl:20mbit:10ms:jitter=5ms:loss=1%",
    "lte:10mbit:40ms:jitter=20ms:loss=1%:queue=250ms",
];

fn main() {
    if skip_unless_root("soak benchmark") {
        return;
    }
    let secs: u64 = std::env::var("MPBOND_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let lab = TestLab::up(EXE, &LINES);
    failover::serve_pattern(lab.info().netns(Role::Web), PATTERN.parse().unwrap()).unwrap();
    let dir = PathBuf::from(format!("/run/mpbond/bench-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rows = Vec::new();
    let pms = std::env::var("MPBOND_BENCH_PMS").unwrap_or_else(|_| "mpbond,kernel".into());
    for pm in pms.split(',').map(str::trim) {
        let (gateway, _converter) = start_bonding(&lab, EXE, &dir, &["dsl", "lte"], &["--pm", pm]);
        let t = failover::download(
            lab.info().netns(Role::Lan),
            PATTERN.parse().unwrap(),
            u64::MAX,
            7,
            Some(Duration::from_secs(secs)),
            Vec::new(),
        )
        .unwrap();
        assert!(
            t.first_bad.is_none(),
            "--pm {pm}: byte {:?} differs",
            t.first_bad
        );
        let log = gateway.log_text();
        let alarms = log.matches("line stopped working").count();
        // The first seconds are the connection's start (slow start, the joins).
        let (at, stall) = t.longest_stall(Duration::from_secs(2));
        let goodput = t.goodput(Duration::from_secs(2), t.elapsed);
        eprintln!(
            "--pm {pm}: {alarms} lines given up in {secs} s, longest stall {:.0} ms at {:.1} s, {:.1} Mbit/s",
            stall.as_secs_f64() * 1e3,
            at.as_secs_f64(),
            goodput / 1e6
        );
        if std::env::var_os("MPBOND_BENCH_KEEP").is_some() {
            std::fs::write(dir.join(format!("gateway-{pm}.log")), &log).unwrap();
        }
        rows.push((pm, alarms, stall, goodput));
        drop(gateway);
    }
    if std::env::var_os("MPBOND_BENCH_KEEP").is_some() {
        eprintln!("gateway logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("| path manager | lines given up in {secs} s | longest stall | goodput |");
    println!("|---|---|---|---|");
    for (pm, alarms, stall, goodput) in rows {
        println!(
            "| {pm} | **{alarms}** | {:.0} ms | {:.1} Mbit/s |",
            stall.as_secs_f64() * 1e3,
            goodput / 1e6
        );
    }
}
