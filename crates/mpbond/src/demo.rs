//! `mpbond demo`: the one-command tour. It builds a lab with two emulated lines, measures each
//! line's round-trip time and TCP goodput from inside the lab against the lines' settings, then
//! starts a converter and a gateway and sends one plain TCP connection from the LAN host through
//! them, with live per-line throughput: one connection, both lines. (The full demo with a line
//! failing halfway comes with `mpbond bench`.)

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cli::DemoArgs;
use crate::lab::measure::{Goodput, expected_goodput, tcp_goodput, tcp_goodput_per_line, udp_rtt};
use crate::lab::spec::LabSpec;
use crate::lab::{self, LabGuard, Role, netns};
use crate::units::format_duration;

const LAB: &str = "demo";
/// Marks the demo's lab, so the demo never removes a user's lab that happens to share its name.
const OWNER: &str = "demo";

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<ExitCode> {
    if !netns::is_root() {
        bail!("mpbond demo needs root (it builds network namespaces); run it with sudo");
    }
    // Ctrl-C ends the demo after the current step, so the lab is always removed.
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted))?;
    }
    if let Some(old) = lab::list().into_iter().find(|l| l.name == LAB) {
        if old.owner.as_deref() != Some(OWNER) {
            bail!(
                "a lab named `{LAB}` exists and is not the demo's; remove it with `mpbond lab down {LAB}`"
            );
        }
        println!("removing the lab `{LAB}` left by an earlier run of the demo");
        lab::down(LAB)?;
    }
    let spec = LabSpec {
        name: LAB.into(),
        seed: 1,
        lines: LabSpec::default_lines(),
        owner: Some(OWNER.into()),
    };
    println!("mpbond demo: building a lab with two emulated lines\n");
    let exe = std::env::current_exe().context("locating the mpbond binary")?;
    let guard = LabGuard::up(&spec, &exe)?;
    let info = &guard.info;
    println!("  lan ── gw ══ dsl: 20mbit, 10 ms each way ══ emu ══ vps ── web");
    println!("              ══ lte: 10mbit, 40 ms each way ══\n");

    print_rtts(info, &interrupted)?;

    println!(
        "\n  one TCP download per line, both at once, {} s:",
        args.seconds
    );
    let goodputs = per_line(info, args.seconds.max(2))?;
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted (the lab was removed)");
    }
    println!(
        "\n  {:<5} {:>12} {:>14} {:>12} {:>10}",
        "line", "configured", "goodput", "expected", "measured"
    );
    for (l, g) in info.lines.iter().zip(&goodputs) {
        let rate = l.downstream.spec.rate;
        let expected = expected_goodput(rate, false);
        println!(
            "  {:<5} {:>12} {:>9.2} Mb/s {:>7.2} Mb/s {:>9.1}%",
            l.name,
            rate.to_string(),
            g / 1e6,
            expected / 1e6,
            100.0 * g / expected
        );
    }
    let total: f64 = goodputs.iter().sum();
    let best = goodputs.iter().copied().fold(0.0, f64::max);
    println!(
        "\n  Each line on its own: best {:.1} Mb/s; both side by side {:.1} Mb/s.",
        best / 1e6,
        total / 1e6
    );
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted (the lab was removed)");
    }

    println!(
        "\n  Now through mpbond: converter on vps, gateway on gw, one plain TCP upload from lan to web, {} s:",
        args.seconds
    );
    let bonded = {
        let _daemons =
            lab::bonding::start(info, &exe, &lab::run_dir(&info.name), &["dsl", "lte"], &[])?;
        bonded_upload(info, args.seconds.max(2))?
    };
    println!(
        "\n  One TCP connection through gateway and converter: {:.1} Mb/s, {:.0} % of both lines side by side, {:.2} × the best line alone.",
        bonded / 1e6,
        100.0 * bonded / total,
        bonded / best
    );
    drop(guard);
    println!("  lab removed.");
    Ok(ExitCode::SUCCESS)
}

/// Each line's median round trip (20 UDP probes) against its setting.
fn print_rtts(info: &lab::LabInfo, interrupted: &AtomicBool) -> Result<()> {
    for l in &info.lines {
        let dst = info.vps_line_addr(&l.name, false).context("line address")?;
        let samples = udp_rtt(
            info,
            Role::Gw,
            Role::Vps,
            dst,
            20,
            Duration::from_millis(20),
        )?;
        let mut got: Vec<Duration> = samples.into_iter().flatten().collect();
        got.sort();
        let median = got.get(got.len() / 2).copied();
        println!(
            "  {:<4} round trip: {} (configured: 2 × {})",
            l.name,
            median.map_or_else(
                || "no answer".into(),
                |d| format!("{:.1} ms", d.as_secs_f64() * 1e3)
            ),
            format_duration(l.downstream.spec.delay)
        );
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
    }
    Ok(())
}

/// One TCP upload from the LAN host to the web host through the gateway, live; bit/s.
fn bonded_upload(info: &lab::LabInfo, seconds: u64) -> Result<f64> {
    let web = info.addr(Role::Web, false).context("web address")?;
    live(info, true, || {
        tcp_goodput(
            info,
            Role::Lan,
            Role::Web,
            web,
            Duration::from_secs(seconds),
            Duration::from_secs(1),
        )
        .map(|g| g.bps())
        .context("upload through the gateway")
    })
}

/// Runs `f` while showing each line's throughput (upstream or downstream) twice a second.
fn live<T>(info: &lab::LabInfo, upstream: bool, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let done = &done;
        let shower = s.spawn(move || show_live(&info.name, upstream, done));
        let r = f();
        done.store(true, Ordering::Relaxed);
        let _ = shower.join();
        r
    })
}

/// One TCP download per line, all at once, showing live throughput; returns goodputs (bit/s).
fn per_line(info: &lab::LabInfo, seconds: u64) -> Result<Vec<f64>> {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<Vec<f64>> {
        let done = &done;
        let live = s.spawn(move || show_live(&info.name, false, done));
        let result = tcp_goodput_per_line(
            info,
            false,
            Duration::from_secs(seconds),
            Duration::from_secs(1),
        );
        done.store(true, Ordering::Relaxed);
        let _ = live.join();
        Ok(result?.iter().map(Goodput::bps).collect())
    })
}

/// Prints each line's throughput (upstream or downstream) twice a second from the emulator's
/// counters.
fn show_live(lab_name: &str, upstream: bool, done: &AtomicBool) {
    let mut last: Option<Vec<u64>> = None;
    let interval = Duration::from_millis(500);
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(interval);
        let Ok(stats) = lab::stats(lab_name) else {
            continue;
        };
        let bytes: Vec<u64> = stats
            .lines
            .iter()
            .map(|l| {
                if upstream {
                    l.upstream.delivered_bytes
                } else {
                    l.downstream.delivered_bytes
                }
            })
            .collect();
        if let Some(prev) = &last {
            let mut line = String::from("\r ");
            for (l, (now, before)) in stats.lines.iter().zip(bytes.iter().zip(prev)) {
                let mbps = (now - before) as f64 * 8.0 / interval.as_secs_f64() / 1e6;
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "bar length from a small positive rate"
                )]
                let bar = "█".repeat((mbps.clamp(0.0, 40.0)) as usize);
                let _ = write!(line, " {:<4} {:<22} {:>5.1} Mb/s ", l.name, bar, mbps);
            }
            if std::io::stdout().is_terminal() {
                print!("{line}");
                let _ = std::io::stdout().flush();
            } else {
                println!("{}", line.trim_start_matches('\r'));
            }
        }
        last = Some(bytes);
    }
    println!();
}
