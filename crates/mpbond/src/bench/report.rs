//! The figures of `mpbond bench`: from the raw measurements of each run to what the JSON, the
//! table and the charts show: goodput, aggregation efficiency, longest stall, completion-time
//! percentiles, bytes per line, CPU time per GB, ratios between contenders, and the targets the
//! benchmark is there to show.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::contender::Contender;
use super::scenario::{Scenario, Sizes};
use super::svg;

/// What one run of one contender measured (one round).
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    /// Goodput of the download (bulk: after the warm-up; requests: all bytes over the time the
    /// requests took), bit/s.
    pub goodput_bps: f64,
    /// Longest time without a byte (bulk: after the warm-up; requests: within a response).
    pub longest_stall: Duration,
    /// Completion time of each short request, from before its connection to its last byte.
    pub completions: Vec<Duration>,
    /// Frame bytes each line carried during the measured transfer: `(downstream, upstream)`,
    /// in the lab's line order.
    pub line_bytes: Vec<(u64, u64)>,
    /// Payload bytes received during the measured transfer (a competitor's included: the CPU
    /// time was spent on them too).
    pub payload_bytes: u64,
    /// CPU time of the processes doing the contender's work during the measured transfer:
    /// this one (client, server and competitor threads) and the contender's daemons.
    pub work_cpu: Duration,
    /// The link emulator's CPU time during it.
    pub emulator_cpu: Duration,
    /// The contender's daemons' CPU time during it (relayed contenders only).
    pub daemons_cpu: Option<Duration>,
    /// Goodput of the competing plain TCP flow, bit/s (shared-bottleneck only).
    pub competitor_bps: Option<f64>,
    /// Every byte of every transfer arrived once and in order.
    pub intact: bool,
    /// Throughput per line over the whole run.
    pub series: Series,
}

/// Throughput of each line over time, from the emulator's counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    /// End of each interval, seconds since the contender's run started.
    pub t_s: Vec<f64>,
    /// Per line, in the lab's order: downstream throughput in each interval (frames as
    /// they cross the line, everything that crossed it), bit/s.
    pub lines: Vec<LineSeries>,
}

/// One line's throughput over time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LineSeries {
    /// Line name.
    pub line: String,
    /// Downstream bit/s in each interval of [`Series::t_s`].
    pub downstream_bps: Vec<f64>,
}

impl Series {
    /// Builds a series from cumulative downstream byte counters sampled at `(seconds, bytes
    /// per line)`.
    #[must_use]
    pub fn from_counters(lines: &[String], samples: &[(f64, Vec<u64>)]) -> Self {
        let mut s = Series {
            t_s: Vec::new(),
            lines: lines
                .iter()
                .map(|l| LineSeries {
                    line: l.clone(),
                    downstream_bps: Vec::new(),
                })
                .collect(),
        };
        for w in samples.windows(2) {
            let ((t0, b0), (t1, b1)) = (&w[0], &w[1]);
            let dt = t1 - t0;
            if dt <= 0.0 {
                continue;
            }
            s.t_s.push(*t1);
            for (k, line) in s.lines.iter_mut().enumerate() {
                let (Some(a), Some(b)) = (b0.get(k), b1.get(k)) else {
                    continue;
                };
                line.downstream_bps
                    .push(b.saturating_sub(*a) as f64 * 8.0 / dt);
            }
        }
        s
    }
}

/// Completion-time percentiles, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Requests measured.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// The `p`-th percentile (0 < p ≤ 100) of `sorted` by the nearest-rank method: the smallest
/// value with at least p % of the values at or below it.
#[must_use]
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a rank between 1 and the number of samples"
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

impl Percentiles {
    /// Percentiles of `samples` (any order).
    #[must_use]
    pub fn of(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let ms = |p| percentile(&sorted, p).map_or(0.0, |d| d.as_secs_f64() * 1e3);
        Percentiles {
            count: sorted.len(),
            p50_ms: ms(50.0),
            p95_ms: ms(95.0),
            p99_ms: ms(99.0),
        }
    }
}

/// The median of `values` (the mean of the two middle ones for an even count).
#[must_use]
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

/// One line's share of a contender's traffic.
#[derive(Debug, Clone, Serialize)]
pub struct LineBytes {
    /// Line name.
    pub line: String,
    /// Frame bytes downstream (vps → gw), summed over the rounds.
    pub downstream_bytes: u64,
    /// Frame bytes upstream (gw → vps).
    pub upstream_bytes: u64,
    /// This line's part of all lines' downstream bytes.
    pub downstream_share: f64,
}

/// A contender's figures against another contender's in the same scenario.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratio {
    /// Goodput over the other's (also the ratio of aggregation efficiencies).
    pub goodput: f64,
    /// Short-request p95 completion time over the other's (below 1: faster).
    pub completion_p95: f64,
}

/// The competing plain TCP flow in the shared-bottleneck scenario.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Competitor {
    /// Its goodput, bit/s (median over the rounds).
    pub goodput_bps: f64,
    /// The contender's goodput over the competitor's: 1 is an even split of the bottleneck.
    pub ratio: f64,
}

/// Everything measured for one contender in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ContenderResult {
    /// Which contender.
    pub contender: Contender,
    /// Runs measured (interleaved with the other contenders').
    pub rounds: usize,
    /// Goodput, bit/s: the median over the rounds.
    pub goodput_bps: f64,
    /// Goodput of each round, bit/s.
    pub goodput_bps_runs: Vec<f64>,
    /// Goodput over the scenario's capacity (`capacity_bps`).
    pub efficiency: f64,
    /// Longest time without a byte, ms: the median over the rounds.
    pub longest_stall_ms: f64,
    /// Completion times of the short requests of every round.
    pub completion: Percentiles,
    /// Per line, in the lab's order.
    pub bytes_per_line: Vec<LineBytes>,
    /// CPU seconds per GB (10^9 bytes) of payload of the processes doing the contender's work:
    /// the benchmark's client and server threads and the contender's daemons.
    pub cpu_s_per_gb: f64,
    /// The link emulator's CPU seconds per GB.
    pub emulator_cpu_s_per_gb: f64,
    /// The gateway's and converter's CPU seconds per GB (relayed contenders only).
    pub daemons_cpu_s_per_gb: Option<f64>,
    /// The competing plain TCP flow (shared-bottleneck only).
    pub competitor: Option<Competitor>,
    /// Against each other contender of the scenario, by id.
    pub ratios: BTreeMap<&'static str, Ratio>,
    /// Every byte of every transfer arrived once and in order.
    pub intact: bool,
    /// Throughput per line over time, from the round whose goodput is the median.
    pub series: Series,
}

fn per_gb(cpu: Duration, bytes: u64) -> f64 {
    if bytes == 0 {
        0.0
    } else {
        cpu.as_secs_f64() / (bytes as f64 / 1e9)
    }
}

impl ContenderResult {
    /// Combines the rounds of `contender` (at least one) in a scenario of `capacity_bps` with
    /// lines `lines`. Ratios are filled in by [`ScenarioResult::new`].
    #[must_use]
    pub fn from_runs(
        contender: Contender,
        runs: &[RunFigures],
        capacity_bps: f64,
        lines: &[String],
    ) -> Self {
        let goodputs: Vec<f64> = runs.iter().map(|r| r.goodput_bps).collect();
        let goodput = median(&goodputs);
        let stalls: Vec<f64> = runs
            .iter()
            .map(|r| r.longest_stall.as_secs_f64() * 1e3)
            .collect();
        let completions: Vec<Duration> = runs
            .iter()
            .flat_map(|r| r.completions.iter().copied())
            .collect();
        let mut bytes = vec![(0u64, 0u64); lines.len()];
        for r in runs {
            for (sum, (down, up)) in bytes.iter_mut().zip(&r.line_bytes) {
                sum.0 += down;
                sum.1 += up;
            }
        }
        let all_down: u64 = bytes.iter().map(|b| b.0).sum();
        let payload: u64 = runs.iter().map(|r| r.payload_bytes).sum();
        let work: Duration = runs.iter().map(|r| r.work_cpu).sum();
        let emulator: Duration = runs.iter().map(|r| r.emulator_cpu).sum();
        let daemons: Option<Duration> = runs.iter().map(|r| r.daemons_cpu).sum();
        let competitor = runs
            .iter()
            .map(|r| r.competitor_bps)
            .collect::<Option<Vec<f64>>>()
            .filter(|v| !v.is_empty())
            .map(|v| {
                let bps = median(&v);
                Competitor {
                    goodput_bps: bps,
                    ratio: if bps > 0.0 { goodput / bps } else { 0.0 },
                }
            });
        // The chart shows the round that is the median: not the luckiest, not the unluckiest.
        let series = runs
            .iter()
            .min_by(|a, b| {
                (a.goodput_bps - goodput)
                    .abs()
                    .total_cmp(&(b.goodput_bps - goodput).abs())
            })
            .map(|r| r.series.clone())
            .unwrap_or_default();
        ContenderResult {
            contender,
            rounds: runs.len(),
            goodput_bps: goodput,
            goodput_bps_runs: goodputs,
            efficiency: if capacity_bps > 0.0 {
                goodput / capacity_bps
            } else {
                0.0
            },
            longest_stall_ms: median(&stalls),
            completion: Percentiles::of(&completions),
            bytes_per_line: lines
                .iter()
                .zip(&bytes)
                .map(|(l, &(down, up))| LineBytes {
                    line: l.clone(),
                    downstream_bytes: down,
                    upstream_bytes: up,
                    downstream_share: if all_down == 0 {
                        0.0
                    } else {
                        down as f64 / all_down as f64
                    },
                })
                .collect(),
            cpu_s_per_gb: per_gb(work, payload),
            emulator_cpu_s_per_gb: per_gb(emulator, payload),
            daemons_cpu_s_per_gb: daemons.map(|d| per_gb(d, payload)),
            competitor,
            ratios: BTreeMap::new(),
            intact: runs.iter().all(|r| r.intact),
            series,
        }
    }
}

/// A line of a scenario as the JSON shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LineJson {
    /// Line name.
    pub name: String,
    /// Downstream rate, bit/s.
    pub rate_bps: u64,
    /// One-way delay, ms.
    pub delay_ms: f64,
    /// Random loss, percent.
    pub loss_pct: f64,
    /// The line whose link this one shares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
}

/// The outage of a failover scenario.
#[derive(Debug, Clone, Serialize)]
pub struct OutageJson {
    /// The line blackholed.
    pub line: String,
    /// When, seconds after the download started.
    pub at_s: f64,
    /// When it came back.
    pub back_s: f64,
}

/// One scenario with every contender's results.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Scenario name.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Its lines.
    pub lines: Vec<LineJson>,
    /// What TCP payload can carry over its links, bit/s (see `definitions.capacity_bps`).
    pub capacity_bps: f64,
    /// The line of the `tcp` contender.
    pub best_line: String,
    /// Length of the bulk download, s (none: requests only).
    pub bulk_s: Option<f64>,
    /// Short requests per contender and round.
    pub requests: usize,
    /// A line outage during the bulk download.
    pub outage: Option<OutageJson>,
    /// Whether a plain TCP flow competed with each download.
    pub competitor: bool,
    /// One entry per contender that ran.
    pub results: Vec<ContenderResult>,
}

impl ScenarioResult {
    /// The results of `scenario` (with `lines` as the lab built them), filling in each
    /// contender's ratios to every other.
    #[must_use]
    pub fn new(
        scenario: &Scenario,
        sizes: Sizes,
        lines: Vec<LineJson>,
        capacity_bps: f64,
        best_line: String,
        mut results: Vec<ContenderResult>,
    ) -> Self {
        let others: Vec<(Contender, f64, f64)> = results
            .iter()
            .map(|r| (r.contender, r.goodput_bps, r.completion.p95_ms))
            .collect();
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        for r in &mut results {
            r.ratios = others
                .iter()
                .filter(|o| o.0 != r.contender)
                .map(|&(c, goodput, p95)| {
                    (
                        c.id(),
                        Ratio {
                            goodput: ratio(r.goodput_bps, goodput),
                            completion_p95: ratio(r.completion.p95_ms, p95),
                        },
                    )
                })
                .collect();
        }
        ScenarioResult {
            name: scenario.name.to_owned(),
            description: scenario.description.to_owned(),
            lines,
            capacity_bps,
            best_line,
            bulk_s: scenario.bulk(sizes).map(|d| d.as_secs_f64()),
            requests: scenario.requests(sizes),
            outage: scenario.outage.map(|o| OutageJson {
                line: o.line.to_owned(),
                at_s: o.at.as_secs_f64(),
                back_s: o.back.as_secs_f64(),
            }),
            competitor: scenario.competitor,
            results,
        }
    }

    /// The result of `contender`, if it ran.
    #[must_use]
    pub fn result(&self, contender: Contender) -> Option<&ContenderResult> {
        self.results.iter().find(|r| r.contender == contender)
    }
}

/// A contender as the report lists it: whether it ran, and why not.
#[derive(Debug, Clone, Serialize)]
pub struct ContenderInfo {
    /// Its id.
    pub id: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Whether it ran.
    pub available: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The machine the benchmark ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Kernel release.
    pub kernel: String,
    /// CPUs available.
    pub cpus: usize,
    /// The kernel's TCP congestion control in the lab's hosts: CUBIC, Linux's default, when
    /// the bench could set it; else the host's default, which it names.
    pub tcp_congestion: String,
}

/// What each figure means, in the JSON itself.
#[derive(Debug, Clone, Serialize)]
pub struct Definitions {
    /// Capacity.
    pub capacity_bps: &'static str,
    /// Goodput.
    pub goodput_bps: &'static str,
    /// Efficiency.
    pub efficiency: &'static str,
    /// Stall.
    pub longest_stall_ms: &'static str,
    /// Completion times.
    pub completion: &'static str,
    /// Bytes per line.
    pub bytes_per_line: &'static str,
    /// CPU.
    pub cpu_s_per_gb: &'static str,
    /// Ratios.
    pub ratios: &'static str,
    /// Competitor.
    pub competitor: &'static str,
}

/// The definitions every report carries.
pub const DEFINITIONS: Definitions = Definitions {
    capacity_bps: "sum over the scenario's links (lines sharing a link count once) of the \
        downstream rate x 1448/1514: the TCP payload one flow with timestamps carries in \
        1514-byte frames (lab::measure::expected_goodput)",
    goodput_bps: "payload bytes the client received and checked, per second: bulk downloads \
        from 1 s after the start to the end; short-flows: all bytes over the time the requests \
        took one after another; median over the rounds",
    efficiency: "goodput_bps / capacity_bps",
    longest_stall_ms: "longest time between two reads of the client: bulk downloads after the \
        first second (the outage of failover included); short-flows within a response",
    completion: "short requests of 10 KiB to 1 MiB (log-uniform, the same sizes for every \
        contender), one after another, each on a new connection: time from before connect() \
        to the last byte; nearest-rank percentiles over every round",
    bytes_per_line: "Ethernet frame bytes the link emulator delivered on each line during \
        the measured transfer (bulk download or short-flows requests), everything that crossed \
        it (a competitor's too)",
    cpu_s_per_gb: "utime+stime (/proc/PID/stat) during the measured transfer of the processes \
        doing the contender's work: the benchmark process (client, server and competitor \
        threads, a 200 ms counter sampler) and the gateway and converter, per 10^9 payload \
        bytes received (a competitor's included). The kernel charges a process the network \
        stack work, softirq included, that runs in its context; frames the link emulator \
        delivers are received in the emulator's context and are not counted, nor is softirq \
        work the kernel deferred to its ksoftirqd threads. emulator_cpu_s_per_gb and \
        daemons_cpu_s_per_gb: those processes alone. At access-line rates fixed costs (timers, \
        line probes, the sampler) weigh: compare contenders within a scenario",
    ratios: "this contender's goodput (and short-request p95) over the other contender's in \
        the same scenario and run",
    competitor: "shared-bottleneck: a plain TCP flow gw to vps on wan1 runs alongside each \
        download; ratio = contender goodput / competitor goodput (1 = an even split). \
        mpbond-user runs coupled congestion control there (--congestion lia), its default \
        elsewhere (auto: CUBIC, BBR on a line whose losses come without a queue)",
};

/// What adds a target of scenario `s` to `out`: (target, value, against, met).
fn adder<'a>(
    out: &'a mut Vec<Target>,
    s: &'a ScenarioResult,
) -> impl FnMut(String, f64, f64, bool) + 'a {
    move |target, value, against, met| {
        out.push(Target {
            scenario: s.name.clone(),
            target,
            value,
            against,
            met,
        });
    }
}

/// The targets `mpbond` and `mpbond-user` share: a failover stall of at most `stall_ms`, and
/// a short-flow p95 no worse than one TCP flow on the best line.
fn stall_and_short_flows(
    add: &mut impl FnMut(String, f64, f64, bool),
    s: &ScenarioResult,
    r: &ContenderResult,
    stall_ms: f64,
) {
    if s.outage.is_some() {
        add(
            format!("failover stall <= {stall_ms} ms"),
            r.longest_stall_ms,
            stall_ms,
            r.longest_stall_ms <= stall_ms,
        );
    }
    if s.name == "short-flows" {
        if let Some(t) = s.result(Contender::Tcp) {
            add(
                "short-flow p95 no worse than one TCP flow on the best line".into(),
                r.completion.p95_ms,
                t.completion.p95_ms,
                r.completion.p95_ms <= t.completion.p95_ms,
            );
        }
    }
}

/// The targets of mpbond's engine at both ends (`mpbond-user`): goodput at least kernel
/// MPTCP's in every bulk scenario and 1.02 times it on `dsl-lte` and `three-lines`, a failover
/// stall of at most 300 ms, a short-flow p95 no worse than one TCP flow on the best line (0-RTT),
/// and at most 1.2 times the competing TCP flow at a shared bottleneck (coupled congestion
/// control). A target whose contenders did not run is left out.
#[must_use]
pub fn user_targets(scenarios: &[ScenarioResult]) -> Vec<Target> {
    let mut out = Vec::new();
    for s in scenarios {
        let Some(u) = s.result(Contender::MpbondUser) else {
            continue;
        };
        let mut add = adder(&mut out, s);
        let bulk = s.name != "short-flows" && s.name != "shared-bottleneck";
        if let Some(k) = s.result(Contender::MptcpKernel).filter(|_| bulk) {
            let factor = if matches!(s.name.as_str(), "dsl-lte" | "three-lines") {
                1.02
            } else {
                1.0
            };
            add(
                format!("goodput >= {factor} x kernel MPTCP"),
                u.goodput_bps / k.goodput_bps.max(1.0),
                factor,
                u.goodput_bps >= factor * k.goodput_bps,
            );
        }
        stall_and_short_flows(&mut add, s, u, 300.0);
        if let Some(c) = u.competitor {
            add(
                "at most 1.2 x the competing TCP flow (--congestion lia)".into(),
                c.ratio,
                1.2,
                c.ratio <= 1.2,
            );
        }
    }
    out
}

/// A target of issue 7 and whether mpbond meets it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The scenario.
    pub scenario: String,
    /// The target in words.
    pub target: String,
    /// mpbond's figure.
    pub value: f64,
    /// What it is compared with.
    pub against: f64,
    /// Met or not.
    pub met: bool,
}

/// Checks the benchmark's targets on `scenarios` for the `mpbond` contender: aggregation
/// efficiency (0.93 on balanced, unbalanced and three-lines, 0.88 on dsl-lte), a goodput above
/// kernel MPTCP's with the in-kernel path manager in every scenario, a failover stall of at most
/// 500 ms, a short-flow p95 no worse than one TCP flow on the best line, and a shared-bottleneck
/// ratio for every contender. A target whose contenders did not run is left out.
#[must_use]
pub fn targets(scenarios: &[ScenarioResult]) -> Vec<Target> {
    let mut out = Vec::new();
    for s in scenarios {
        let Some(m) = s.result(Contender::Mpbond) else {
            continue;
        };
        let mut add = adder(&mut out, s);
        let floor = match s.name.as_str() {
            "balanced" | "unbalanced" | "three-lines" => Some(0.93),
            "dsl-lte" => Some(0.88),
            _ => None,
        };
        if let Some(floor) = floor {
            add(
                format!("aggregation efficiency >= {floor}"),
                m.efficiency,
                floor,
                m.efficiency >= floor,
            );
        }
        if let Some(k) = s.result(Contender::MptcpKernel) {
            add(
                "goodput above kernel MPTCP with the in-kernel path manager".into(),
                m.goodput_bps,
                k.goodput_bps,
                m.goodput_bps > k.goodput_bps,
            );
        }
        stall_and_short_flows(&mut add, s, m, 500.0);
        if s.competitor {
            let reported = s.results.iter().all(|r| r.competitor.is_some());
            add(
                "ratio to the competing plain TCP flow reported for each contender".into(),
                m.competitor.map_or(0.0, |c| c.ratio),
                1.0,
                reported,
            );
        }
    }
    out
}

/// A whole `mpbond bench` run: what `--json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// mpbond's version.
    pub version: &'static str,
    /// When the run started (UTC).
    pub date: String,
    /// The machine.
    pub machine: Machine,
    /// `--quick`.
    pub quick: bool,
    /// How long the whole run took, s.
    pub duration_s: f64,
    /// What each figure means.
    pub definitions: Definitions,
    /// Every contender, with whether it ran.
    pub contenders: Vec<ContenderInfo>,
    /// The scenarios run.
    pub scenarios: Vec<ScenarioResult>,
    /// The targets, for the `mpbond` contender.
    pub targets: Vec<Target>,
    /// The targets of mpbond's engine (`mpbond-user`).
    pub user_targets: Vec<Target>,
}

fn mbps(bps: f64) -> String {
    format!("{:.2}", bps / 1e6)
}

/// The report as text tables, one per scenario, and the targets.
#[must_use]
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    for s in &report.scenarios {
        scenario_table(&mut out, s);
    }
    let skipped: Vec<String> = report
        .contenders
        .iter()
        .filter(|c| !c.available)
        .map(|c| format!("{} ({})", c.id, c.reason.as_deref().unwrap_or("")))
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(out, "\nnot run: {}", skipped.join("; "));
    }
    for (who, targets) in [
        ("mpbond", &report.targets),
        ("mpbond-user", &report.user_targets),
    ] {
        if targets.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\ntargets ({who}):");
        for t in targets {
            let _ = writeln!(
                out,
                "  [{}] {}: {} ({:.3} against {:.3})",
                if t.met { "met" } else { "MISSED" },
                t.scenario,
                t.target,
                t.value,
                t.against
            );
        }
    }
    out
}

/// One scenario's table: its lines, then a row per contender.
fn scenario_table(out: &mut String, s: &ScenarioResult) {
    let lines: Vec<String> = s
        .lines
        .iter()
        .map(|l| {
            let mut t = format!(
                "{} {} Mbit/s {} ms",
                l.name,
                l.rate_bps / 1_000_000,
                l.delay_ms
            );
            if l.loss_pct > 0.0 {
                let _ = write!(t, " {} % loss", l.loss_pct);
            }
            if let Some(o) = &l.share {
                let _ = write!(t, " (shares {o}'s link)");
            }
            t
        })
        .collect();
    let _ = writeln!(
        out,
        "\n{}: {}\n  lines: {}; capacity {} Mbit/s of TCP payload",
        s.name,
        s.description,
        lines.join(", "),
        mbps(s.capacity_bps)
    );
    let _ = writeln!(
        out,
        "  {:<17} {:>8} {:>6} {:>8} {:>20} {:>7} {:>14} {:>7} {:>8}{}",
        "contender",
        "Mbit/s",
        "eff.",
        "stall",
        "p50/p95/p99 ms",
        "CPU/GB",
        "down per line",
        "x tcp",
        "x mptcp",
        if s.competitor { "  x competitor" } else { "" }
    );
    for r in &s.results {
        let shares: Vec<String> = r
            .bytes_per_line
            .iter()
            .map(|b| format!("{:.0}", b.downstream_share * 100.0))
            .collect();
        let ratio = |c: Contender| {
            r.ratios
                .get(c.id())
                .map_or_else(|| "-".to_owned(), |x| format!("{:.2}", x.goodput))
        };
        let _ = writeln!(
            out,
            "  {:<17} {:>8} {:>6.3} {:>5.0} ms {:>20} {:>5.1} s {:>12} % {:>7} {:>8}{}{}",
            r.contender.id(),
            mbps(r.goodput_bps),
            r.efficiency,
            r.longest_stall_ms,
            format!(
                "{:.0}/{:.0}/{:.0}",
                r.completion.p50_ms, r.completion.p95_ms, r.completion.p99_ms
            ),
            r.cpu_s_per_gb,
            shares.join("/"),
            ratio(Contender::Tcp),
            ratio(Contender::MptcpKernel),
            r.competitor
                .map_or_else(String::new, |c| format!("  {:>12.2}", c.ratio)),
            if r.intact { "" } else { "  BYTES DAMAGED" }
        );
    }
}

/// The chart of scenario `s`: one panel per contender, one series per line and their total.
#[must_use]
pub fn chart(s: &ScenarioResult) -> svg::Chart {
    let panels = s
        .results
        .iter()
        .map(|r| {
            let mut series: Vec<svg::Series> = r
                .series
                .lines
                .iter()
                .map(|l| svg::Series {
                    name: l.line.clone(),
                    points: r
                        .series
                        .t_s
                        .iter()
                        .zip(&l.downstream_bps)
                        .map(|(&t, &bps)| (t, bps / 1e6))
                        .collect(),
                    dashed: false,
                })
                .collect();
            let total: Vec<(f64, f64)> = r
                .series
                .t_s
                .iter()
                .enumerate()
                .map(|(i, &t)| {
                    let sum: f64 = r
                        .series
                        .lines
                        .iter()
                        .filter_map(|l| l.downstream_bps.get(i))
                        .sum();
                    (t, sum / 1e6)
                })
                .collect();
            series.push(svg::Series {
                name: "all lines".into(),
                points: total,
                dashed: true,
            });
            let marks = s
                .outage
                .iter()
                .flat_map(|o| {
                    [
                        (o.at_s, format!("{} blackholed", o.line)),
                        (o.back_s, format!("{} back", o.line)),
                    ]
                })
                .collect();
            svg::Panel {
                title: format!(
                    "{}: {} Mbit/s goodput, efficiency {:.2}, longest stall {:.0} ms",
                    r.contender.id(),
                    mbps(r.goodput_bps),
                    r.efficiency,
                    r.longest_stall_ms
                ),
                series,
                marks,
            }
        })
        .collect();
    svg::Chart {
        title: format!("mpbond bench: {}", s.name),
        subtitle: format!(
            "{}; throughput per line, downstream, as the link emulator counted it",
            s.description
        ),
        x_label: "seconds".into(),
        y_label: "Mbit/s".into(),
        panels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::scenario::ALL;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).rev().map(ms).collect();
        let p = Percentiles::of(&samples);
        assert_eq!(p.count, 100);
        assert!((p.p50_ms - 50.0).abs() < 1e-9);
        assert!((p.p95_ms - 95.0).abs() < 1e-9);
        assert!((p.p99_ms - 99.0).abs() < 1e-9);
        // Twenty samples: p95 is the 19th, p99 the largest.
        let twenty: Vec<Duration> = (1..=20).map(ms).collect();
        let p = Percentiles::of(&twenty);
        assert!((p.p95_ms - 19.0).abs() < 1e-9 && (p.p99_ms - 20.0).abs() < 1e-9);
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[ms(7)], 1.0), Some(ms(7)));
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-12);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-12);
        assert!(median(&[]).abs() < 1e-12);
    }

    #[test]
    fn series_are_rates_between_counter_samples() {
        let lines = vec!["a".to_owned(), "b".to_owned()];
        let samples = vec![
            (0.0, vec![0, 0]),
            (0.5, vec![625_000, 125_000]),
            (1.0, vec![1_250_000, 125_000]),
        ];
        let s = Series::from_counters(&lines, &samples);
        assert_eq!(s.t_s, [0.5, 1.0]);
        assert_eq!(s.lines[0].downstream_bps, [10e6, 10e6]);
        assert_eq!(s.lines[1].downstream_bps, [2e6, 0.0]);
    }

    fn run(goodput: f64, down: [u64; 2], completions: &[u64]) -> RunFigures {
        RunFigures {
            goodput_bps: goodput,
            longest_stall: ms(40),
            completions: completions.iter().copied().map(ms).collect(),
            line_bytes: vec![(down[0], 10), (down[1], 10)],
            payload_bytes: 2_000_000_000,
            work_cpu: Duration::from_secs(2),
            emulator_cpu: Duration::from_secs(4),
            daemons_cpu: None,
            competitor_bps: None,
            intact: true,
            series: Series::default(),
        }
    }

    #[test]
    fn contender_figures_combine_rounds_into_efficiency_shares_cpu_and_ratios() {
        let lines = vec!["dsl".to_owned(), "lte".to_owned()];
        let scenario = ALL[0];
        let capacity = 20e6;
        let tcp = ContenderResult::from_runs(
            Contender::Tcp,
            &[run(9e6, [3000, 0], &[100, 200])],
            capacity,
            &lines,
        );
        let mut runs = vec![
            run(18e6, [2000, 1000], &[50, 150]),
            run(19e6, [2000, 2000], &[60]),
            run(17e6, [2000, 1000], &[70]),
        ];
        runs[1].daemons_cpu = Some(Duration::from_secs(2));
        let mp = ContenderResult::from_runs(Contender::Mpbond, &runs, capacity, &lines);
        assert!((mp.goodput_bps - 18e6).abs() < 1e-6);
        assert!((mp.efficiency - 0.9).abs() < 1e-12);
        assert_eq!(mp.completion.count, 4);
        assert_eq!(mp.bytes_per_line[1].downstream_bytes, 4000);
        assert!((mp.bytes_per_line[0].downstream_share - 0.6).abs() < 1e-12);
        // 3 rounds × 2 s over 6 GB; the emulator: 3 × 4 s.
        assert!((mp.cpu_s_per_gb - 1.0).abs() < 1e-9);
        assert!((mp.emulator_cpu_s_per_gb - 2.0).abs() < 1e-9);
        // Daemons' time is only known if every round has it.
        assert_eq!(mp.daemons_cpu_s_per_gb, None);

        let s = ScenarioResult::new(
            &scenario,
            Sizes::QUICK,
            Vec::new(),
            capacity,
            "dsl".into(),
            vec![tcp, mp],
        );
        let mp = s.result(Contender::Mpbond).unwrap();
        assert!((mp.ratios["tcp"].goodput - 2.0).abs() < 1e-12);
        assert!((mp.ratios["tcp"].completion_p95 - 0.75).abs() < 1e-12);
        let tcp = s.result(Contender::Tcp).unwrap();
        assert!((tcp.ratios["mpbond"].goodput - 0.5).abs() < 1e-12);
        assert!(!tcp.ratios.contains_key("tcp"));
    }

    #[test]
    fn targets_compare_mpbond_with_the_thresholds_and_the_kernel() {
        let lines = vec!["dsl".to_owned(), "lte".to_owned()];
        let result = |c, goodput| {
            ContenderResult::from_runs(c, &[run(goodput, [1, 1], &[10])], 20e6, &lines)
        };
        let balanced = ScenarioResult::new(
            &ALL[0],
            Sizes::QUICK,
            Vec::new(),
            20e6,
            "dsl".into(),
            vec![
                result(Contender::MptcpKernel, 18.8e6),
                result(Contender::Mpbond, 18.7e6),
            ],
        );
        let t = targets(&[balanced]);
        assert_eq!(t.len(), 2);
        assert!(t[0].target.contains("0.93") && t[0].met, "{t:?}");
        assert!(!t[1].met, "below the kernel's goodput: {t:?}");
    }

    #[test]
    fn the_engines_targets_ask_more_than_the_kernel_on_dsl_lte() {
        let lines = vec!["dsl".to_owned(), "lte".to_owned()];
        let result = |c, goodput| {
            ContenderResult::from_runs(c, &[run(goodput, [1, 1], &[10])], 20e6, &lines)
        };
        let scenario = |name: &str, user: f64| {
            let s = ALL.iter().find(|s| s.name == name).unwrap();
            ScenarioResult::new(
                s,
                Sizes::QUICK,
                Vec::new(),
                20e6,
                "dsl".into(),
                vec![
                    result(Contender::MptcpKernel, 20e6),
                    result(Contender::MpbondUser, user),
                ],
            )
        };
        // 1.01 x the kernel: enough on balanced lines, not on dsl-lte.
        let t = user_targets(&[scenario("balanced", 20.2e6), scenario("dsl-lte", 20.2e6)]);
        assert_eq!(t.len(), 2, "{t:?}");
        assert!(t[0].met, "{t:?}");
        assert!(!t[1].met && (t[1].against - 1.02).abs() < 1e-12, "{t:?}");
        assert!(user_targets(&[scenario("dsl-lte", 20.5e6)])[0].met);
    }
}
