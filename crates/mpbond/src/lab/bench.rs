//! `mpbond lab bench`: how much traffic the link emulator carries, and how much error it adds
//! while doing so.
//!
//! One kernel TCP flow per line, all lines at once, first on shaped lines (does every line reach
//! its rate?) and then on unshaped ones (how fast can the emulator go at all?). The emulator's own
//! error is read from its counters: frames the kernel dropped because the emulator fell behind
//! (overruns, send errors, egress drops) and how late frames left compared with the model's
//! schedule.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::measure::{expected_goodput, process_cpu_time, tcp_goodput_per_line};
use super::spec::{DirectionSpec, LabSpec, LineSpec};
use super::{LabGuard, netns};
use crate::cli::LabBenchArgs;
use crate::units::{Rate, format_duration, parse_duration};

/// One line of one run.
#[derive(Debug, Clone, Serialize)]
pub struct LineResult {
    /// Line name.
    pub name: String,
    /// Measured TCP goodput, bit/s.
    pub goodput_bps: f64,
    /// What one TCP flow can reach at the line's rate (absent when unshaped).
    pub expected_bps: Option<f64>,
}

/// One run: every line loaded at once.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Rate of each line.
    pub rate: Rate,
    /// One-way delay of each line.
    pub delay: String,
    /// Per line.
    pub lines: Vec<LineResult>,
    /// Sum of the lines' goodput, bit/s.
    pub aggregate_goodput_bps: f64,
    /// Frames carried by the emulator per second, all lines and directions.
    pub frames_per_second: f64,
    /// Frames lost by the emulator itself: not read in time (overrun), refused at its memory
    /// limit, failed to send, or dropped by the egress veth. A faithful emulator has none.
    pub emulator_drops: u64,
    /// Tail drops at the emulated queues (TCP probing the line: expected on shaped runs).
    pub queue_drops: u64,
    /// 99 % of frames left less than this late, µs.
    pub lateness_p99_us_below: u64,
    /// 99.9 % of frames left less than this late, µs.
    pub lateness_p999_us_below: u64,
    /// Latest frame, µs.
    pub lateness_max_us: u64,
    /// Emulator CPU time over wall time (1.0 = one core).
    pub emulator_cpu: f64,
}

fn measure(exe: &Path, n: u8, rate: Rate, delay: Duration, seconds: u64) -> Result<RunResult> {
    let lines: Vec<LineSpec> = (1..=n)
        .map(|i| {
            let mut l = LineSpec::new(&format!("l{i}"), rate, delay);
            for d in [&mut l.upstream, &mut l.downstream] {
                d.queue = DirectionSpec::default_queue(delay).min(Duration::from_millis(10));
            }
            l
        })
        .collect();
    let spec = LabSpec {
        name: format!("emubench{}", std::process::id() % 100_000),
        seed: 1,
        lines,
        owner: Some("bench".into()),
    };
    let lab = LabGuard::up(&spec, exe)?;
    let info = &lab.info;
    let cpu_before = process_cpu_time(info.emulator.pid).unwrap_or_default();
    let started = std::time::Instant::now();
    let goodputs = tcp_goodput_per_line(
        info,
        false,
        Duration::from_secs(seconds),
        Duration::from_secs(1),
    )?;
    let wall = started.elapsed();
    let cpu = process_cpu_time(info.emulator.pid)
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    let stats = super::stats(&info.name)?;
    let mut result = RunResult {
        rate,
        delay: format_duration(delay),
        lines: Vec::new(),
        aggregate_goodput_bps: 0.0,
        frames_per_second: 0.0,
        emulator_drops: 0,
        queue_drops: 0,
        lateness_p99_us_below: 0,
        lateness_p999_us_below: 0,
        lateness_max_us: 0,
        emulator_cpu: cpu.as_secs_f64() / wall.as_secs_f64(),
    };
    let mut frames = 0;
    for (l, g) in info.lines.iter().zip(goodputs) {
        let g = g.bps();
        result.aggregate_goodput_bps += g;
        result.lines.push(LineResult {
            name: l.name.clone(),
            goodput_bps: g,
            expected_bps: (!rate.is_unlimited()).then(|| expected_goodput(rate, false)),
        });
    }
    for l in &stats.lines {
        for d in [&l.upstream, &l.downstream] {
            frames += d.delivered_packets;
            result.emulator_drops += d.dropped.by_emulator();
            result.queue_drops += d.dropped.queue;
            result.lateness_p99_us_below =
                result.lateness_p99_us_below.max(d.lateness.p99_us_below);
            result.lateness_p999_us_below =
                result.lateness_p999_us_below.max(d.lateness.p999_us_below);
            result.lateness_max_us = result.lateness_max_us.max(d.lateness.max_us);
        }
    }
    result.frames_per_second = frames as f64 / wall.as_secs_f64();
    Ok(result)
}

/// Runs the benchmark and prints its results.
pub fn run(args: &LabBenchArgs) -> Result<()> {
    if !netns::is_root() {
        bail!("mpbond lab bench needs root (it builds network namespaces); run it with sudo");
    }
    let rate: Rate = args.rate.parse()?;
    let delay = parse_duration(&args.delay)?;
    if args.lines == 0 || usize::from(args.lines) > super::spec::MAX_LINES {
        bail!("--lines must be between 1 and {}", super::spec::MAX_LINES);
    }
    let exe = std::env::current_exe().context("locating the mpbond binary")?;
    let mut runs = Vec::new();
    for r in [rate, Rate::UNLIMITED] {
        if !args.json {
            eprintln!(
                "measuring {} lines at {r}, {} each way, {} s ...",
                args.lines, args.delay, args.seconds
            );
        }
        runs.push(measure(&exe, args.lines, r, delay, args.seconds)?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(());
    }
    println!(
        "{:<10} {:>12} {:>8} {:>10} {:>9} {:>10} {:>11} {:>10} {:>8}",
        "rate",
        "aggregate",
        "of rate",
        "kframes/s",
        "emu drops",
        "late p99",
        "late p99.9",
        "late max",
        "emu cpu"
    );
    for r in &runs {
        let expected: Option<f64> = r.lines.iter().map(|l| l.expected_bps).sum();
        println!(
            "{:<10} {:>7.1} Mb/s {:>8} {:>10.1} {:>9} {:>7} µs {:>8} µs {:>7} µs {:>7.0}%",
            r.rate.to_string(),
            r.aggregate_goodput_bps / 1e6,
            expected.map_or_else(
                || "-".to_owned(),
                |e| format!("{:.1}%", 100.0 * r.aggregate_goodput_bps / e)
            ),
            r.frames_per_second / 1000.0,
            r.emulator_drops,
            r.lateness_p99_us_below,
            r.lateness_p999_us_below,
            r.lateness_max_us,
            r.emulator_cpu * 100.0
        );
    }
    Ok(())
}
