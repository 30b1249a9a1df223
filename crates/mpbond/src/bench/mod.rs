//! `mpbond bench`: every contender side by side on the same emulated lines, in the same run.
//!
//! This module owns the benchmark: its [`scenario`]s (lines, outages, workloads, quick and full
//! sizes), its [`contender`]s (plain TCP on the best line, kernel MPTCP with the in-kernel path
//! manager, mpbond's gateway and converter with either path manager, and later mpbond's own
//! stack), running them ([`run`]), the figures and their JSON and text forms ([`report`]), and
//! the charts ([`svg`]). The emulator-only capacity benchmark is `mpbond lab bench`
//! ([`crate::lab::bench`]). docs/benchmarks.md has the latest figures and what each one means.

pub mod contender;
mod progress;
pub mod report;
pub mod run;
pub mod scenario;
pub mod svg;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};

use self::contender::Contender;
use self::progress::Progress;
use self::report::{ContenderInfo, DEFINITIONS, Machine, Report};
use self::scenario::Sizes;
use crate::cli::BenchArgs;
use crate::lab::netns;

/// The kernel congestion control of the lab's hosts: Linux's default.
const LAB_CONGESTION: &str = "cubic";

/// Lets the lab's hosts run [`LAB_CONGESTION`] (the kernel's flows run Linux's default
/// whatever this machine's default is, see `lab::congestion`) while the guard lives; `None`,
/// with a warning, where it cannot: the report then names the host's default.
fn allow_lab_congestion() -> Option<crate::lab::congestion::Allowed> {
    crate::lab::congestion::Allowed::with(LAB_CONGESTION)
        .map_err(|e| {
            eprintln!(
                "warning: cannot allow {LAB_CONGESTION} for the lab ({e}): the kernel's flows run this host's default congestion control"
            );
        })
        .ok()
}

/// This host's default congestion control.
fn host_congestion() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Runs `mpbond bench`: prints a table per scenario and the targets, writes the JSON (after
/// every scenario, so an interrupted run keeps what it measured) and the charts.
pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    if !netns::is_root() {
        bail!("mpbond bench needs root (it builds network namespaces); run it with sudo");
    }
    let scenarios = scenario::select(&args.scenario)?;
    let wanted: Vec<Contender> = if args.contender.is_empty() {
        Contender::ALL.to_vec()
    } else {
        args.contender
            .iter()
            .map(|id| Contender::from_id(id))
            .collect::<Result<_>>()?
    };
    let infos: Vec<ContenderInfo> = wanted
        .iter()
        .map(|c| {
            let availability = c.availability();
            ContenderInfo {
                id: c.id(),
                description: c.description(),
                available: availability.is_ok(),
                reason: availability.err(),
            }
        })
        .collect();
    let contenders: Vec<Contender> = wanted
        .into_iter()
        .filter(|c| c.availability().is_ok())
        .collect();
    if contenders.is_empty() {
        bail!("none of the contenders asked for can run in this build");
    }
    let mut sizes = if args.quick {
        Sizes::QUICK
    } else {
        Sizes::FULL
    };
    if let Some(r) = args.rounds {
        sizes.rounds = r.max(1);
    }
    for dir in [&args.svg, &args.logs].into_iter().flatten() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Ctrl-C ends the benchmark after the current run; the lab and the daemons go with it.
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted))?;
    }
    let exe = std::env::current_exe().context("locating the mpbond binary")?;
    let started = Instant::now();
    let date = crate::units::utc_timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    let allowed = allow_lab_congestion();
    let congestion = allowed.as_ref().map(|_| LAB_CONGESTION);
    let env = run::Env {
        exe: &exe,
        sizes,
        interrupted: &interrupted,
        seed: 1,
        logs: args.logs.as_deref(),
        congestion,
    };
    let total = scenarios.len() * contenders.len() * sizes.rounds;
    let mut progress = Progress::new(total as u64);
    let mut report = Report {
        version: env!("CARGO_PKG_VERSION"),
        date,
        machine: Machine {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            tcp_congestion: congestion.map_or_else(host_congestion, str::to_owned),
        },
        quick: args.quick,
        duration_s: 0.0,
        definitions: DEFINITIONS,
        contenders: infos,
        scenarios: Vec::new(),
        targets: Vec::new(),
        user_targets: Vec::new(),
    };
    for s in &scenarios {
        let result = run::scenario(s, &contenders, env, &mut progress)?;
        report.scenarios.push(result);
        report.targets = report::targets(&report.scenarios);
        report.user_targets = report::user_targets(&report.scenarios);
        report.duration_s = started.elapsed().as_secs_f64();
        write_outputs(&report, args.json.as_deref(), args.svg.as_deref())?;
    }
    drop(progress);
    print!("{}", report::table(&report));
    println!(
        "\n{} scenarios x {} contenders in {:.0} s",
        report.scenarios.len(),
        contenders.len(),
        report.duration_s
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the JSON report and one chart per scenario.
fn write_outputs(report: &Report, json: Option<&Path>, svg: Option<&Path>) -> Result<()> {
    if let Some(path) = json {
        let mut text = serde_json::to_string_pretty(report)?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = svg {
        for s in &report.scenarios {
            let path = dir.join(format!("{}.svg", s.name));
            std::fs::write(&path, report::chart(s).render())
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}
