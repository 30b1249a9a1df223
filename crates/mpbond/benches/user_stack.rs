//! The user-space stack against the kernel's TCP, side by side in one run on the same lab
//! line (50 Mbit/s, 20 ms each way): `mpbond connect --stack user --no-mptcp` and `mpbond
//! connect --stack kernel --tcp` each download and upload 64 MiB from and to a kernel TCP
//! peer, alternating, `MPBOND_BENCH_RUNS` times (default 3). Goodput is over the whole
//! transfer (handshake and slow start included; the user stack also creates its TUN and NAT
//! in that time). Prints a Markdown table with the medians and the ratio.
//!
//! Needs root (it builds a lab): `sudo cargo bench --bench user_stack`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "a benchmark program: fail loudly, print floats"
)]

use std::io::Write as _;
use std::path::{Path, PathBuf};

use mpbond::bench::report::median;
use mpbond::lab::Role;
use mpbond::lab::testing::{TestLab, skip_unless_root};
use mpbond::lab::transfer::{Direction, file_sha256, transfer};

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");
const LEN: usize = 64 << 20;

fn main() {
    if skip_unless_root("user-stack benchmark") {
        return;
    }
    let runs: usize = std::env::var("MPBOND_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let lab = TestLab::up(EXE, &["wan:50mbit:20ms"]);
    let dir = PathBuf::from(format!("/run/mpbond/bench-user-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("data");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..LEN / 8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f.write_all(&x.to_le_bytes()).unwrap();
        }
    }
    let (want, _) = file_sha256(&file).unwrap();
    let stacks = [
        ("kernel", &["--stack", "kernel", "--tcp"]),
        ("user", &["--stack", "user", "--tcp"]),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); 4];
    for r in 0..runs {
        for (d, direction) in [Direction::Download, Direction::Upload]
            .into_iter()
            .enumerate()
        {
            for (s, (name, args)) in stacks.iter().enumerate() {
                let mut a: Vec<&str> = args.to_vec();
                a.push("10.1.0.1:5000");
                let t = transfer(
                    lab.info(),
                    Path::new(EXE),
                    Role::Vps,
                    &["--stack", "kernel", "--tcp", "0.0.0.0:5000"],
                    Role::Gw,
                    &a,
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
        "| 64 MiB over 50 Mbit/s, 20 ms each way | kernel TCP | mpbond --stack user | user / kernel |"
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
