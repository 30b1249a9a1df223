//! Running one scenario: its lab, its pattern servers, and each contender in turn (interleaved
//! over the rounds), measuring the download at the client, the lines at the link emulator and
//! the CPU time of the benchmark's own threads, the emulator and the daemons.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::contender::{Contender, Running, VPS_MPTCP_PORT, VPS_TCP_PORT, WEB_ADDR, WEB_PORT};
use super::progress::Progress;
use super::report::{ContenderResult, LineJson, RunFigures, ScenarioResult, Series};
use super::scenario::{Scenario, Sizes, WARMUP, request_sizes};
use crate::lab::failover::{PatternServer, Scheduled, Timeline, Transport, download_over, fetch};
use crate::lab::measure::process_cpu_time;
use crate::lab::{self, LabGuard, LabInfo, LabStats, LineState, Role, netns};

/// How often the link emulator's counters are read for the charts.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// Pause between two runs, so one run's queues have drained before the next starts.
const SETTLE: Duration = Duration::from_millis(500);

/// What every run of a benchmark shares.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// The `mpbond` binary (emulator and daemons).
    pub exe: &'a Path,
    /// `--quick` or full.
    pub sizes: Sizes,
    /// Set by Ctrl-C: stop after the current run.
    pub interrupted: &'a AtomicBool,
    /// Seed of the labs' random loss, the patterns and the request sizes.
    pub seed: u64,
    /// Where to keep the daemons' logs of each run (`--logs`).
    pub logs: Option<&'a Path>,
    /// The kernel congestion control set in every lab host (`None`: the host's default).
    pub congestion: Option<&'a str>,
}

impl Env<'_> {
    fn check(&self) -> Result<()> {
        if self.interrupted.load(Ordering::Relaxed) {
            bail!("interrupted (the lab and the daemons were removed)");
        }
        Ok(())
    }
}

/// The lab's hosts as every contender expects them: the congestion control asked for, and a
/// vps that accepts a subflow per line for the end-to-end MPTCP contender, whatever ran
/// before (a converter raises the same limits while it runs).
fn prepare_hosts(info: &LabInfo, env: Env<'_>) -> Result<()> {
    if let Some(c) = env.congestion {
        lab::congestion::set(info, c)
            .with_context(|| format!("congestion control {c} in the lab's hosts"))?;
    }
    netns::ip_in(
        info.netns(Role::Vps),
        &[
            "mptcp",
            "limits",
            "set",
            "subflows",
            "8",
            "add_addr_accepted",
            "8",
        ],
    )?;
    Ok(())
}

/// Runs `scenario` for `contenders` (all of which can run) and returns its results.
///
/// # Errors
/// If the lab cannot be built or a run fails (a transfer breaks, a daemon does not start).
pub fn scenario(
    s: &Scenario,
    contenders: &[Contender],
    env: Env<'_>,
    progress: &mut Progress,
) -> Result<ScenarioResult> {
    let lab_name = format!("bench{}", std::process::id());
    let spec = s.lab_spec(&lab_name, env.seed)?;
    let guard =
        LabGuard::up(&spec, env.exe).with_context(|| format!("building the lab of {}", s.name))?;
    let info = &guard.info;
    prepare_hosts(info, env)?;
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let _servers = [
        PatternServer::start(
            info.netns(Role::Web),
            SocketAddr::new(IpAddr::V4(WEB_ADDR), WEB_PORT),
            Transport::Tcp,
        )?,
        PatternServer::start(
            info.netns(Role::Vps),
            SocketAddr::new(any, VPS_TCP_PORT),
            Transport::Tcp,
        )?,
        PatternServer::start(
            info.netns(Role::Vps),
            SocketAddr::new(any, VPS_MPTCP_PORT),
            Transport::Mptcp,
        )?,
    ];
    let dir = lab::run_dir(&lab_name).join("daemons");
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let best = s.best_line()?.name;
    let sizes = request_sizes(s.requests(env.sizes), env.seed);
    let line_names: Vec<String> = info.lines.iter().map(|l| l.name.clone()).collect();
    let capacity = s.capacity_bps()?;

    let mut runs: BTreeMap<Contender, Vec<RunFigures>> = BTreeMap::new();
    let rounds = env.sizes.rounds.max(1);
    for round in 0..rounds {
        // Each round starts with another contender, so none always runs first or last.
        for k in 0..contenders.len() {
            env.check()?;
            let c = contenders[(k + round) % contenders.len()];
            let round_note = if rounds > 1 {
                format!(" (round {}/{rounds})", round + 1)
            } else {
                String::new()
            };
            progress.start(&format!("{}: {}{round_note}", s.name, c.id()));
            let seed = env.seed.wrapping_add(round as u64);
            // Ctrl-C also stops the daemons (same process group), which breaks the transfer:
            // say why it broke.
            let fig = contender_run(info, s, c, &best, env, &dir, &sizes, seed);
            keep_logs(
                env.logs,
                &dir,
                &format!("{}-{}-{}", s.name, c.id(), round + 1),
            );
            let fig = fig
                .and_then(|f| env.check().map(|()| f))
                .or_else(|e| env.check().and(Err(e)))
                .with_context(|| format!("{}: {}", s.name, c.id()))?;
            progress.done(&format!(
                "{}: {:<17} {:>7.2} Mbit/s, efficiency {:.3}, longest stall {:>4.0} ms{}",
                s.name,
                c.id(),
                fig.goodput_bps / 1e6,
                fig.goodput_bps / capacity,
                fig.longest_stall.as_secs_f64() * 1e3,
                if fig.intact { "" } else { ", BYTES DAMAGED" }
            ));
            runs.entry(c).or_default().push(fig);
            std::thread::sleep(SETTLE);
        }
    }
    let results = contenders
        .iter()
        .filter_map(|c| {
            runs.get(c)
                .map(|r| ContenderResult::from_runs(*c, r, capacity, &line_names))
        })
        .collect();
    let lines = spec
        .lines
        .iter()
        .map(|l| LineJson {
            name: l.name.clone(),
            rate_bps: l.downstream.rate.bps(),
            delay_ms: l.downstream.delay.as_secs_f64() * 1e3,
            loss_pct: l.downstream.loss,
            share: l.share.clone(),
        })
        .collect();
    Ok(ScenarioResult::new(
        s, env.sizes, lines, capacity, best, results,
    ))
}

/// One run of contender `c`: starts what it needs, downloads (bulk, then short requests; or
/// only requests), measures, stops it.
#[expect(
    clippy::too_many_arguments,
    reason = "one run of one contender needs all of the scenario's context"
)]
fn contender_run(
    info: &LabInfo,
    s: &Scenario,
    c: Contender,
    best: &str,
    env: Env<'_>,
    dir: &Path,
    sizes: &[u64],
    seed: u64,
) -> Result<RunFigures> {
    // Where the lines share a bottleneck with a TCP flow, the engine couples its subflows.
    let running = c.start(info, env.exe, dir, s.competitor)?;
    let server = c.server(info, best)?;
    let client = info.netns(c.client()).to_owned();
    let mut fig = RunFigures {
        intact: true,
        ..RunFigures::default()
    };
    let result = (|| -> Result<()> {
        if let Some(bulk) = s.bulk(env.sizes) {
            let competitor = s
                .competitor
                .then(|| Competitor::start(info, best, bulk, seed))
                .transpose()?;
            let meter = Meter::start(info, &running)?;
            let sampler = Sampler::start(&info.name);
            let t = download_over(
                c.transport(),
                &client,
                server,
                u64::MAX,
                seed,
                Some(bulk),
                outage_schedule(&info.name, s),
            );
            let series = sampler.stop(info);
            if let Some(o) = s.outage {
                lab::set_line_state(&info.name, o.line, LineState::Up)?;
            }
            let t = t.context("bulk download")?;
            fig.goodput_bps = t.goodput(WARMUP, t.elapsed);
            fig.longest_stall = t.longest_stall(WARMUP).1;
            fig.intact &= t.first_bad.is_none() && t.bytes > 0;
            let mut payload = t.bytes;
            if let Some(comp) = competitor {
                let ct = comp.finish()?;
                fig.competitor_bps = Some(ct.goodput(WARMUP, ct.elapsed));
                payload += ct.bytes;
            }
            meter.finish(&mut fig, payload)?;
            fig.series = series;
            std::thread::sleep(SETTLE);
            let r = requests(&client, server, c.transport(), sizes, seed, env)?;
            fig.completions = r.completions;
            fig.intact &= r.intact;
        } else {
            let meter = Meter::start(info, &running)?;
            let sampler = Sampler::start(&info.name);
            let r = requests(&client, server, c.transport(), sizes, seed, env);
            fig.series = sampler.stop(info);
            let r = r?;
            fig.goodput_bps = r.bytes as f64 * 8.0 / r.wall.as_secs_f64().max(1e-9);
            fig.longest_stall = r.longest_stall;
            fig.intact &= r.intact;
            fig.completions = r.completions;
            meter.finish(&mut fig, r.bytes)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(fig),
        Err(e) => {
            let problems = running.problems();
            if problems.trim().is_empty() {
                Err(e)
            } else {
                Err(e.context(problems))
            }
        }
    }
}

/// Copies the daemons' logs of the run just ended from `dir` into `logs` (if asked), named
/// `<run>-gateway.log` and `<run>-converter.log`.
fn keep_logs(logs: Option<&Path>, dir: &Path, run: &str) {
    let Some(logs) = logs else { return };
    for name in ["gateway.log", "converter.log"] {
        let from = dir.join(name);
        if from.exists() {
            let to = logs.join(format!("{run}-{name}"));
            if let Err(e) = std::fs::copy(&from, &to) {
                tracing::warn!("keeping {}: {e}", to.display());
            }
            let _ = std::fs::remove_file(&from);
        }
    }
}

/// The outage of scenario `s` as actions on lab `lab` during the download.
fn outage_schedule(lab: &str, s: &Scenario) -> Vec<Scheduled> {
    let Some(o) = s.outage else {
        return Vec::new();
    };
    [(o.at, LineState::Blackhole), (o.back, LineState::Up)]
        .into_iter()
        .map(|(at, state)| {
            let lab = lab.to_owned();
            let action: Box<dyn FnOnce() + Send> = Box::new(move || {
                if let Err(e) = lab::set_line_state(&lab, o.line, state) {
                    tracing::warn!("line {} {state}: {e}", o.line);
                }
            });
            (at, action)
        })
        .collect()
}

/// What a run of short requests measured.
struct Requests {
    completions: Vec<Duration>,
    longest_stall: Duration,
    bytes: u64,
    intact: bool,
    wall: Duration,
}

/// Fetches `sizes` one after another from `server`, each on a new connection from host netns
/// `ns`.
fn requests(
    ns: &str,
    server: SocketAddr,
    transport: Transport,
    sizes: &[u64],
    seed: u64,
    env: Env<'_>,
) -> Result<Requests> {
    netns::in_netns(ns, || -> Result<Requests> {
        let started = Instant::now();
        let mut r = Requests {
            completions: Vec::with_capacity(sizes.len()),
            longest_stall: Duration::ZERO,
            bytes: 0,
            intact: true,
            wall: Duration::ZERO,
        };
        for (i, &len) in sizes.iter().enumerate() {
            env.check()?;
            let t = fetch(server, transport, len, seed.wrapping_add(i as u64))
                .with_context(|| format!("request {} of {len} bytes", i + 1))?;
            r.completions.push(t.elapsed);
            r.longest_stall = r.longest_stall.max(t.longest_stall(Duration::ZERO).1);
            r.bytes += t.bytes;
            r.intact &= t.intact(len);
        }
        r.wall = started.elapsed();
        Ok(r)
    })?
}

/// The plain TCP flow that competes with each download of the shared-bottleneck scenario: gw
/// to the vps on the best line, for as long as the download.
struct Competitor(JoinHandle<std::io::Result<Timeline>>);

impl Competitor {
    fn start(info: &LabInfo, line: &str, duration: Duration, seed: u64) -> Result<Self> {
        let addr = info
            .vps_line_addr(line, false)
            .with_context(|| format!("no vps address on line {line}"))?;
        let ns = info.netns(Role::Gw).to_owned();
        Ok(Self(std::thread::spawn(move || {
            download_over(
                Transport::Tcp,
                &ns,
                SocketAddr::new(addr, VPS_TCP_PORT),
                u64::MAX,
                seed ^ 0x00c0_ffee,
                Some(duration),
                Vec::new(),
            )
        })))
    }

    fn finish(self) -> Result<Timeline> {
        self.0
            .join()
            .map_err(|_| anyhow::anyhow!("the competing flow's thread panicked"))?
            .context("competing TCP flow")
    }
}

/// Counters and CPU times at the start of a measured transfer.
struct Meter {
    lab: String,
    stats: LabStats,
    emulator_pid: u32,
    emulator: Duration,
    pids: Vec<u32>,
    daemons: Option<Duration>,
    work: Duration,
}

/// CPU time of `pids` together; `None` without pids or when one cannot be read.
fn cpu_of(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| process_cpu_time(p)).sum()
}

/// CPU time of this process (the client and server threads) and of `daemons`.
fn work_cpu(daemons: &[u32]) -> Duration {
    let own = process_cpu_time(std::process::id()).unwrap_or_default();
    own + cpu_of(daemons).unwrap_or_default()
}

impl Meter {
    fn start(info: &LabInfo, running: &Running) -> Result<Self> {
        let pids = running.pids();
        Ok(Self {
            lab: info.name.clone(),
            stats: lab::stats(&info.name)?,
            emulator_pid: info.emulator.pid,
            emulator: process_cpu_time(info.emulator.pid).unwrap_or_default(),
            daemons: cpu_of(&pids),
            work: work_cpu(&pids),
            pids,
        })
    }

    /// Fills in the lines' bytes and the CPU times since the start; `payload` bytes arrived.
    fn finish(self, fig: &mut RunFigures, payload: u64) -> Result<()> {
        let emulator = process_cpu_time(self.emulator_pid).unwrap_or_default();
        let daemons = cpu_of(&self.pids);
        let work = work_cpu(&self.pids);
        let stats = lab::stats(&self.lab)?;
        fig.line_bytes = line_bytes(&self.stats, &stats);
        fig.payload_bytes = payload;
        fig.work_cpu = work.saturating_sub(self.work);
        fig.emulator_cpu = emulator.saturating_sub(self.emulator);
        fig.daemons_cpu = daemons
            .zip(self.daemons)
            .map(|(after, before)| after.saturating_sub(before));
        Ok(())
    }
}

/// Frame bytes each line delivered between two snapshots: `(downstream, upstream)`.
fn line_bytes(before: &LabStats, after: &LabStats) -> Vec<(u64, u64)> {
    after
        .lines
        .iter()
        .map(|l| {
            let b = before.line(&l.name);
            let down = b.map_or(0, |b| b.downstream.delivered_bytes);
            let up = b.map_or(0, |b| b.upstream.delivered_bytes);
            (
                l.downstream.delivered_bytes.saturating_sub(down),
                l.upstream.delivered_bytes.saturating_sub(up),
            )
        })
        .collect()
}

/// Reads every line's downstream byte counter every [`SAMPLE_EVERY`] until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(f64, Vec<u64>)>>,
}

impl Sampler {
    fn start(lab: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, lab) = (Arc::clone(&stop), lab.to_owned());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            let mut next = started;
            loop {
                if let Ok(stats) = lab::stats(&lab) {
                    let bytes = stats
                        .lines
                        .iter()
                        .map(|l| l.downstream.delivered_bytes)
                        .collect();
                    samples.push((started.elapsed().as_secs_f64(), bytes));
                }
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                next += SAMPLE_EVERY;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            samples
        });
        Self { stop, thread }
    }

    fn stop(self, info: &LabInfo) -> Series {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().unwrap_or_default();
        let names: Vec<String> = info.lines.iter().map(|l| l.name.clone()).collect();
        Series::from_counters(&names, &samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::emulator::stats::{DirCounters, LineStats};
    use crate::lab::spec::{DirectionSpec, LineSpec};

    fn stats(bytes: &[(&str, u64, u64)]) -> LabStats {
        LabStats {
            lab: "x".into(),
            uptime_s: 1.0,
            lines: bytes
                .iter()
                .map(|&(name, down, up)| {
                    let spec = LineSpec::new(name, crate::units::Rate::UNLIMITED, Duration::ZERO);
                    let dir = |n: u64, d: &DirectionSpec| {
                        let c = DirCounters::default();
                        c.delivered_bytes.store(n, Ordering::Relaxed);
                        c.snapshot(d.clone())
                    };
                    LineStats {
                        name: name.into(),
                        state: LineState::Up,
                        upstream: dir(up, &spec.upstream),
                        downstream: dir(down, &spec.downstream),
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn line_bytes_are_the_counters_growth_per_line() {
        let before = stats(&[("dsl", 100, 10), ("lte", 50, 5)]);
        let after = stats(&[("dsl", 1100, 60), ("lte", 50, 5)]);
        assert_eq!(line_bytes(&before, &after), [(1000, 50), (0, 0)]);
    }

    #[test]
    fn a_failover_scenario_schedules_the_outage_and_the_return() {
        let failover = super::super::scenario::ALL
            .into_iter()
            .find(|s| s.outage.is_some())
            .unwrap();
        let schedule = outage_schedule("x", &failover);
        let times: Vec<Duration> = schedule.iter().map(|s| s.0).collect();
        assert_eq!(times, [Duration::from_secs(3), Duration::from_secs(8)]);
        let balanced = super::super::scenario::ALL[0];
        assert!(outage_schedule("x", &balanced).is_empty());
    }
}
