//! `mpbond demo`: the one-command tour. It builds a lab with two emulated lines, measures each
//! line on its own, starts a converter and a gateway, and downloads from the web host to the LAN
//! host through them while a small text chart shows each line's throughput live; halfway the
//! fast line is blackholed, later it comes back. It ends with three lines: bonded against the
//! best single line, the stall at the failover, and whether every byte arrived intact. The lab
//! is removed at the end, also after an error or Ctrl-C.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cli::DemoArgs;
use crate::lab::failover::{PatternServer, Scheduled, Timeline, Transport, download};
use crate::lab::measure::tcp_goodput_per_line;
use crate::lab::spec::LabSpec;
use crate::lab::{self, LabGuard, LabInfo, LineState, Role, netns};

const LAB: &str = "demo";
/// Marks the demo's lab, so the demo never removes a user's lab that happens to share its name.
const OWNER: &str = "demo";
/// The pattern server on the web host (see docs/lab.md for the address).
const WEB: &str = "203.0.113.2:8080";
/// One column of the live chart.
const TICK: Duration = Duration::from_millis(500);
/// Block characters of the chart, from nothing to the line's full rate.
const BLOCKS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<ExitCode> {
    if !netns::is_root() {
        bail!("mpbond demo needs root (it builds network namespaces); run it with sudo");
    }
    let started = Instant::now();
    // Ctrl-C also reaches the gateway and the converter (same process group), which end the
    // download by exiting; the demo then stops and the lab is removed.
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted))?;
    }
    let stop_if_interrupted = || {
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted (the lab was removed)");
        }
        Ok(())
    };
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
    println!("mpbond demo: a lab with two emulated lines\n");
    let exe = std::env::current_exe().context("locating the mpbond binary")?;
    let guard = LabGuard::up(&spec, &exe)?;
    let info = &guard.info;
    println!("  lan ── gw ══ dsl: 20 Mbit/s, 10 ms each way ══ emu ══ vps ── web");
    println!("              ══ lte: 10 Mbit/s, 40 ms each way ══\n");

    let best = best_alone(info)?;
    stop_if_interrupted()?;
    let seconds = args.seconds;
    let fail_at = Duration::from_secs(seconds) / 2;
    let back_at = Duration::from_secs(seconds) * 3 / 4;
    let fast = best.0.clone();
    let (stack, plane) = stack_names(args.stack);
    println!(
        "  Now through mpbond ({plane}): converter on vps, gateway on gw, one plain TCP download \
         from web to lan,\n  {seconds} s; {fast} is blackholed at {} s and back at {} s. Live, a \
         column per half second,\n  █ = the line's full rate:\n",
        fail_at.as_secs(),
        back_at.as_secs()
    );
    let web: SocketAddr = WEB.parse().context("web address")?;
    let _server = PatternServer::start(info.netns(Role::Web), web, Transport::Tcp)?;
    let t = {
        let on = ["--stack", stack];
        let _daemons = lab::bonding::start_with(
            info,
            &exe,
            &lab::run_dir(&info.name),
            &["dsl", "lte"],
            &on,
            &on,
        )?;
        let schedule = outage(info, &fast, fail_at, back_at);
        let events = [
            (fail_at, format!("{fast} blackholed")),
            (back_at, format!("{fast} back")),
        ];
        live(info, &events, || {
            download(
                info.netns(Role::Lan),
                web,
                u64::MAX,
                7,
                Some(Duration::from_secs(seconds)),
                schedule,
            )
            .context("the download through the gateway")
        })
    };
    stop_if_interrupted()?;
    let t = t?;
    println!();
    for line in summary(&t, (&best.0, best.1), &fast, fail_at, back_at) {
        println!("  {line}");
    }
    drop(guard);
    println!(
        "\n  lab removed; the demo took {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(if t.first_bad.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Line `fast` blackholed at `fail_at` and up again at `back_at`, for the download.
fn outage(info: &LabInfo, fast: &str, fail_at: Duration, back_at: Duration) -> Vec<Scheduled> {
    [(fail_at, LineState::Blackhole), (back_at, LineState::Up)]
        .into_iter()
        .map(|(at, state)| {
            let (lab, line) = (info.name.clone(), fast.to_owned());
            let f: Box<dyn FnOnce() + Send> = Box::new(move || {
                if let Err(e) = lab::set_line_state(&lab, &line, state) {
                    tracing::warn!("line {line} {state}: {e}");
                }
            });
            (at, f)
        })
        .collect()
}

/// The `--stack` value for the daemons, and what it is in words.
fn stack_names(stack: crate::stack::Stack) -> (&'static str, &'static str) {
    match stack {
        crate::stack::Stack::Kernel => ("kernel", "Linux's MPTCP"),
        crate::stack::Stack::User => ("user", "mpbond's own MPTCP engine"),
    }
}

/// Measures each line on its own (one TCP download per line, both at once) and returns the
/// best: its name and goodput, bit/s.
fn best_alone(info: &LabInfo) -> Result<(String, f64)> {
    println!("  Each line on its own: one TCP download per line, both at once, 4 s ...");
    let alone = tcp_goodput_per_line(info, false, Duration::from_secs(4), Duration::from_secs(1))?;
    let mut best = (String::new(), 0.0);
    let mut text = String::from("   ");
    for (l, g) in info.lines.iter().zip(&alone) {
        let _ = write!(text, " {} {:.1} Mbit/s ", l.name, g.bps() / 1e6);
        if g.bps() > best.1 {
            best = (l.name.clone(), g.bps());
        }
    }
    println!("{text}\n");
    Ok(best)
}

/// The three closing lines: bonded against the best single line, the stall at the failover,
/// and whether the bytes are intact.
fn summary(
    t: &Timeline,
    best: (&str, f64),
    fast: &str,
    fail_at: Duration,
    back_at: Duration,
) -> [String; 3] {
    let second = Duration::from_secs(1);
    let bonded = t.goodput(second, fail_at);
    let (_, stall) = t.longest_stall(fail_at);
    let without = t.goodput(fail_at + second, back_at);
    [
        format!(
            "Bonded: {:.1} Mbit/s over both lines, {:.2} × the best single line ({} alone: {:.1} Mbit/s).",
            bonded / 1e6,
            if best.1 > 0.0 { bonded / best.1 } else { 0.0 },
            best.0,
            best.1 / 1e6
        ),
        format!(
            "Failover: {fast} blackholed at {} s; the download stalled {:.0} ms at most, then went on at {:.1} Mbit/s without it.",
            fail_at.as_secs(),
            stall.as_secs_f64() * 1e3,
            without / 1e6
        ),
        match t.first_bad {
            None => format!(
                "Bytes intact: all {} MB arrived once and in order (every byte checked).",
                t.bytes / 1_000_000
            ),
            Some(at) => format!("Bytes DAMAGED: the first wrong byte is at offset {at}."),
        },
    ]
}

/// Runs `f` while drawing each line's downstream throughput as a growing text chart, one
/// column per [`TICK`], with `events` marked under it.
fn live<T>(info: &LabInfo, events: &[(Duration, String)], f: impl FnOnce() -> T) -> T {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let done = &done;
        let drawer = s.spawn(move || draw(info, events, done));
        let r = f();
        done.store(true, Ordering::Relaxed);
        let _ = drawer.join();
        r
    })
}

/// The chart as it is drawn: a row per line and one for all lines, each with its current rate.
#[derive(Debug, Default)]
struct LiveChart {
    names: Vec<String>,
    /// Each line's rate, bit/s: a full block.
    full: Vec<f64>,
    /// Columns so far: bit/s per line.
    columns: Vec<Vec<f64>>,
}

impl LiveChart {
    fn block(bps: f64, full: f64) -> char {
        if full <= 0.0 {
            return BLOCKS[0];
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a block index between 0 and 8"
        )]
        let i = ((bps / full) * 8.0).round().clamp(0.0, 8.0) as usize;
        BLOCKS[i]
    }

    /// The rows: one per line, then all lines.
    fn rows(&self) -> Vec<String> {
        let mut rows = Vec::new();
        let total_full: f64 = self.full.iter().sum();
        for (k, name) in self.names.iter().enumerate() {
            let bar: String = self
                .columns
                .iter()
                .map(|c| Self::block(c.get(k).copied().unwrap_or(0.0), self.full[k]))
                .collect();
            let now = self.columns.last().and_then(|c| c.get(k)).copied();
            rows.push(format!(
                "  {name:<4} {bar:<48} {:>5.1} Mbit/s",
                now.unwrap_or(0.0) / 1e6
            ));
        }
        let bar: String = self
            .columns
            .iter()
            .map(|c| Self::block(c.iter().sum(), total_full))
            .collect();
        let now: f64 = self.columns.last().map_or(0.0, |c| c.iter().sum());
        rows.push(format!(
            "  {:<4} {bar:<48} {:>5.1} Mbit/s",
            "both",
            now / 1e6
        ));
        rows
    }
}

/// Draws the live chart until `done`: redrawn in place on a terminal, a plain line every two
/// seconds otherwise.
fn draw(info: &LabInfo, events: &[(Duration, String)], done: &AtomicBool) {
    let terminal = std::io::stdout().is_terminal();
    let mut chart = LiveChart {
        names: info.lines.iter().map(|l| l.name.clone()).collect(),
        full: info
            .lines
            .iter()
            .map(|l| l.downstream.spec.rate.bps() as f64)
            .collect(),
        columns: Vec::new(),
    };
    let started = Instant::now();
    let mut last: Option<(Instant, Vec<u64>)> = None;
    let mut drawn_rows = 0;
    let mut next = started;
    let mut said = 0;
    while !done.load(Ordering::Relaxed) {
        next += TICK;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        if done.load(Ordering::Relaxed) {
            // The download ended during this column: it would show only its tail.
            break;
        }
        let Ok(stats) = lab::stats(&info.name) else {
            continue;
        };
        let now = Instant::now();
        let bytes: Vec<u64> = stats
            .lines
            .iter()
            .map(|l| l.downstream.delivered_bytes)
            .collect();
        if let Some((then, before)) = &last {
            let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
            chart.columns.push(
                bytes
                    .iter()
                    .zip(before)
                    .map(|(a, b)| a.saturating_sub(*b) as f64 * 8.0 / secs)
                    .collect(),
            );
        }
        last = Some((now, bytes));
        let elapsed = started.elapsed();
        let mut notes = String::new();
        for (at, what) in events.iter().filter(|(at, _)| *at <= elapsed) {
            let _ = write!(notes, "  {} s: {what}.", at.as_secs());
        }
        if terminal {
            let mut out = std::io::stdout().lock();
            if drawn_rows > 0 {
                let _ = write!(out, "\x1b[{drawn_rows}A");
            }
            let mut rows = chart.rows();
            rows.push(format!("  {:>4.0} s{notes}", elapsed.as_secs_f64()));
            for r in &rows {
                let _ = writeln!(out, "\r\x1b[2K{r}");
            }
            drawn_rows = rows.len();
            let _ = out.flush();
        } else if chart.columns.len() % 4 == 0 {
            if let Some(c) = chart.columns.last() {
                let mut line = format!("  {:>4.0} s ", elapsed.as_secs_f64());
                for (name, bps) in chart.names.iter().zip(c) {
                    let _ = write!(line, " {name} {:>5.1}", bps / 1e6);
                }
                let _ = write!(line, "  both {:>5.1} Mbit/s", c.iter().sum::<f64>() / 1e6);
                println!("{line}");
            }
        }
        // On a plain output, each event is said once when it happens.
        if !terminal {
            let happened = events.iter().filter(|(at, _)| *at <= elapsed).count();
            for (at, what) in &events[said..happened] {
                println!("  {:>4} s: {what}", at.as_secs());
            }
            said = happened;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_chart_scales_each_line_to_its_rate() {
        let chart = LiveChart {
            names: vec!["dsl".into(), "lte".into()],
            full: vec![20e6, 10e6],
            columns: vec![vec![20e6, 10e6], vec![10e6, 5e6], vec![0.0, 10e6]],
        };
        let rows = chart.rows();
        assert_eq!(rows.len(), 3);
        assert!(
            rows[0].contains("█▄ ") && rows[0].ends_with("0.0 Mbit/s"),
            "{rows:?}"
        );
        assert!(
            rows[1].contains("█▄█") && rows[1].ends_with("10.0 Mbit/s"),
            "{rows:?}"
        );
        assert!(rows[2].contains("█▄▃"), "{rows:?}");
    }

    #[test]
    fn the_summary_says_bonded_stall_and_intact() {
        let ms = Duration::from_millis;
        // 3 MB/s for 12 s, a 400 ms stall at 12 s, then 1 MB/s.
        let mut samples = Vec::new();
        let mut bytes = 0;
        for i in 1..=120u64 {
            bytes += 300_000;
            samples.push((ms(i * 100), bytes));
        }
        for i in 0..=60u64 {
            bytes += 100_000;
            samples.push((ms(12_400 + i * 100), bytes));
        }
        let t = Timeline {
            samples,
            bytes,
            first_bad: None,
            elapsed: ms(18_400),
        };
        let [bonded, failover, intact] = summary(&t, ("dsl", 12e6), "dsl", ms(12_000), ms(18_000));
        assert!(
            bonded.contains("24.0 Mbit/s") && bonded.contains("2.00 ×"),
            "{bonded}"
        );
        assert!(failover.contains("400 ms"), "{failover}");
        assert!(intact.contains("once and in order"), "{intact}");
    }
}
