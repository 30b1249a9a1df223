//! Failover benchmark: the longest stall of a LAN download through gateway and converter when
//! the line carrying most of it is blackholed, with mpbond's path manager and with the kernel's
//! in-kernel one, side by side in one run on the same lab (RFC 8684 gives no timing; this is
//! what users feel).
//!
//! Needs root (it builds a lab): `sudo cargo bench --bench failover`. Lines: dsl 20mbit/10ms
//! (RTT 20 ms) and lte 10mbit/40ms (RTT 80 ms); dsl is blackholed 3 s into a 24 MiB download.
//! `MPBOND_BENCH_RUNS` runs per path manager (default 3), alternating. Prints a Markdown table.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "a benchmark program: fail loudly, print floats"
)]

use std::path::PathBuf;
use std::time::Duration;

use mpbond::lab::failover;
use mpbond::lab::testing::{TestLab, skip_unless_root, start_bonding};
use mpbond::lab::{LineState, Role};

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");
const PATTERN: &str = "203.0.113.2:8081";
const LEN: u64 = 24 << 20;

/// One blackhole run with `--pm pm`: the longest stall after the blackhole, and the seconds
/// the download took.
fn run(lab: &TestLab, dir: &std::path::Path, pm: &str, seed: u64) -> (Duration, f64) {
    let (gateway, _converter) = start_bonding(lab, EXE, dir, &["dsl", "lte"], &["--pm", pm]);
    let at = Duration::from_secs(3);
    let name = lab.name().to_owned();
    let blackhole: Box<dyn FnOnce() + Send> = Box::new(move || {
        mpbond::lab::set_line_state(&name, "dsl", LineState::Blackhole).unwrap();
    });
    let t = failover::download(
        lab.info().netns(Role::Lan),
        PATTERN.parse().unwrap(),
        LEN,
        seed,
        None,
        vec![(at, blackhole)],
    )
    .unwrap();
    assert!(t.intact(LEN), "--pm {pm}: {}", gateway.problems());
    drop(gateway);
    lab.set_state("dsl", LineState::Up);
    (t.longest_stall(at).1, t.elapsed.as_secs_f64())
}

fn main() {
    if skip_unless_root("failover benchmark") {
        return;
    }
    let runs: u64 = std::env::var("MPBOND_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let lab = TestLab::up(EXE, &["dsl:20mbit:10ms", "lte:10mbit:40ms"]);
    failover::serve_pattern(lab.info().netns(Role::Web), PATTERN.parse().unwrap()).unwrap();
    let dir = PathBuf::from(format!("/run/mpbond/bench-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pms = ["mpbond", "kernel"];
    let mut results: Vec<Vec<(Duration, f64)>> = vec![Vec::new(); pms.len()];
    for r in 0..runs {
        for (i, pm) in pms.iter().enumerate() {
            let got = run(&lab, &dir, pm, r * 10 + i as u64);
            eprintln!(
                "run {r}: --pm {pm}: stall {:.0} ms, {:.1} s",
                got.0.as_secs_f64() * 1e3,
                got.1
            );
            results[i].push(got);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("| path manager | longest stall, median (min–max) of {runs} | 24 MiB took, median |");
    println!("|---|---|---|");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut medians = Vec::new();
    for (pm, res) in pms.iter().zip(&mut results) {
        res.sort_by_key(|r| r.0);
        let median = res[res.len() / 2];
        medians.push(median.0);
        let mut secs: Vec<f64> = res.iter().map(|r| r.1).collect();
        secs.sort_by(f64::total_cmp);
        println!(
            "| {pm} | **{:.0} ms** ({:.0}–{:.0}) | {:.1} s |",
            ms(median.0),
            ms(res[0].0),
            ms(res[res.len() - 1].0),
            secs[secs.len() / 2]
        );
    }
    println!(
        "\nmpbond's median stall is {:.2}× the in-kernel path manager's.",
        medians[0].as_secs_f64() / medians[1].as_secs_f64()
    );
}
