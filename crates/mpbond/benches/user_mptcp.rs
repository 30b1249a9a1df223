//! mpbond's own MPTCP against the kernel's, side by side in one run over the lab's two lines
//! (dsl 20 Mbit/s + 10 ms, lte 10 Mbit/s + 40 ms): `mpbond connect --stack user --wan dsl
//! --wan lte` and `mpbond connect --stack kernel --wan dsl --wan lte` (the kernel's MPTCP with
//! mpbond's path manager) each download and upload 64 MiB from and to a kernel MPTCP listener,
//! alternating, `MPBOND_BENCH_RUNS` times (default 3). Goodput is over the whole transfer
//! (handshake, joins and slow start included; the user stack also creates its TUN and NAT in
//! that time). Prints a Markdown table with the medians and the ratio (target: 0.95).
//!
//! Needs root (it builds a lab): `sudo cargo bench --bench user_mptcp`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "a benchmark program: fail loudly, print floats"
)]

use std::path::{Path, PathBuf};

use mpbond::bench::report::median;
use mpbond::lab::Role;
use mpbond::lab::testing::{TestLab, skip_unless_root, write_random_file};
use mpbond::lab::transfer::{Direction, file_sha256, transfer};

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");
const LEN: usize = 64 << 20;

fn main() {
    if skip_unless_root("user-space MPTCP benchmark") {
        return;
    }
    let runs: usize = std::env::var("MPBOND_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let lab = TestLab::up(EXE, &[]);
    let dir = PathBuf::from(format!(
        "/run/mpbond/bench-user-mptcp-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("data");
    write_random_file(&file, LEN, 5);
    let (want, _) = file_sha256(&file).unwrap();
    let vps = lab.info().vps_line_addr("dsl", false).unwrap();
    let target = format!("{vps}:5000");
    let stacks = [("kernel", "kernel"), ("user", "user")];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); 4];
    for r in 0..runs {
        for (d, direction) in [Direction::Download, Direction::Upload]
            .into_iter()
            .enumerate()
        {
            for (s, (name, stack)) in stacks.iter().enumerate() {
                let t = transfer(
                    lab.info(),
                    Path::new(EXE),
                    Role::Vps,
                    &["--stack", "kernel", "0.0.0.0:5000"],
                    Role::Gw,
                    &["--stack", stack, "--wan", "dsl", "--wan", "lte", &target],
                    direction,
                    &file,
                    &dir.join("out"),
                )
                .unwrap();
                assert_eq!(t.sha256, want, "{name} {direction:?}: bytes intact");
                eprintln!("run {r}: {name} {direction:?}: {:.2} Mbit/s", t.bps() / 1e6);
                results[d * 2 + s].push(t.bps());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "| 64 MiB over dsl 20 Mbit/s + 10 ms and lte 10 Mbit/s + 40 ms | kernel MPTCP | mpbond --stack user | user / kernel |"
    );
    println!("|---|---|---|---|");
    for (d, what) in ["download", "upload"].iter().enumerate() {
        let k = median(&results[d * 2]);
        let u = median(&results[d * 2 + 1]);
        println!(
            "| {what} (median of {runs}) | {:.2} Mbit/s | {:.2} Mbit/s | **{:.1} %** |",
            k / 1e6,
            u / 1e6,
            100.0 * u / k
        );
    }
}
