//! The scenarios of `mpbond bench`: the lines of each lab, what happens to them during a run, and
//! the workload and its size (`--quick` or full).
//!
//! Delays are one way, as everywhere in the lab (`10ms` is a 20 ms round trip). Rates count
//! whole Ethernet frames; a scenario's capacity is what TCP payload can use of them
//! ([`expected_goodput`]), summed over its links (lines sharing one link count once).

use std::time::Duration;

use anyhow::{Result, bail};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::lab::measure::expected_goodput;
use crate::lab::spec::{LabSpec, LineSpec};

/// A line outage during the bulk transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// The line that goes silent (blackholed: interfaces stay up, nothing passes).
    pub line: &'static str,
    /// When, after the transfer started.
    pub at: Duration,
    /// When it comes back.
    pub back: Duration,
}

/// What a scenario measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// One long download (goodput, stall, bytes per line, CPU), then a few short requests
    /// (completion times).
    Bulk,
    /// Only short requests, one after another: completion times, and everything else measured
    /// over them.
    Requests,
}

/// One scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// Its name on the command line and in the JSON.
    pub name: &'static str,
    /// One sentence for people.
    pub description: &'static str,
    /// Lines, in `--line` syntax.
    pub lines: &'static [&'static str],
    /// The workload.
    pub workload: Workload,
    /// A line outage during the bulk transfer.
    pub outage: Option<Outage>,
    /// A plain TCP flow on the best line competes with every contender's download
    /// (fairness at a shared bottleneck).
    pub competitor: bool,
}

/// Every scenario, in the order they run.
pub const ALL: [Scenario; 7] = [
    Scenario {
        name: "balanced",
        description: "two equal lines (Linux selftest simult_flows, balanced case)",
        lines: &["dsl:10mbit:10ms", "cable:10mbit:10ms"],
        workload: Workload::Bulk,
        outage: None,
        competitor: false,
    },
    Scenario {
        name: "unbalanced",
        description: "a fast short line and a slow long one (simult_flows, unbalanced case)",
        lines: &["dsl:10mbit:10ms", "lte:3mbit:25ms"],
        workload: Workload::Bulk,
        outage: None,
        competitor: false,
    },
    Scenario {
        name: "dsl-lte",
        description: "DSL and a faster, longer, lossy LTE line (0.5 % random loss)",
        lines: &["dsl:16mbit:10ms", "lte:40mbit:30ms:loss=0.5"],
        workload: Workload::Bulk,
        outage: None,
        competitor: false,
    },
    Scenario {
        name: "three-lines",
        description: "fibre, cable and LTE",
        lines: &["fibre:50mbit:5ms", "cable:20mbit:20ms", "lte:10mbit:60ms"],
        workload: Workload::Bulk,
        outage: None,
        competitor: false,
    },
    Scenario {
        name: "failover",
        description: "the busiest line is blackholed 3 s into the download and back at 8 s",
        lines: &["dsl:20mbit:10ms", "lte:10mbit:40ms"],
        workload: Workload::Bulk,
        outage: Some(Outage {
            line: "dsl",
            at: Duration::from_secs(3),
            back: Duration::from_secs(8),
        }),
        competitor: false,
    },
    Scenario {
        name: "short-flows",
        description: "requests of 10 KiB to 1 MiB one after another",
        lines: &["dsl:20mbit:10ms", "lte:10mbit:40ms"],
        workload: Workload::Requests,
        outage: None,
        competitor: false,
    },
    Scenario {
        name: "shared-bottleneck",
        description: "two paths through one 20 Mbit/s link, shared with a plain TCP flow",
        lines: &["wan1:20mbit:10ms", "wan2:20mbit:10ms:share=wan1"],
        workload: Workload::Bulk,
        outage: None,
        competitor: true,
    },
];

/// The scenarios called `names`, in the order of [`ALL`]; every one when `names` is empty.
///
/// # Errors
/// For a name that is no scenario's.
pub fn select(names: &[String]) -> Result<Vec<Scenario>> {
    for n in names {
        if !ALL.iter().any(|s| s.name == n) {
            let known: Vec<&str> = ALL.iter().map(|s| s.name).collect();
            bail!("unknown scenario `{n}` (scenarios: {})", known.join(", "));
        }
    }
    Ok(ALL
        .into_iter()
        .filter(|s| names.is_empty() || names.iter().any(|n| n == s.name))
        .collect())
}

/// How big a run is: `--quick` or full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Length of each bulk download.
    pub bulk: Duration,
    /// Short requests after each bulk download.
    pub requests_after_bulk: usize,
    /// Requests of the `short-flows` scenario.
    pub short_flows: usize,
    /// Runs of each contender in each scenario, interleaved.
    pub rounds: usize,
}

impl Sizes {
    /// `--quick`: every scenario and contender within 10 minutes on a 2-core machine.
    pub const QUICK: Sizes = Sizes {
        bulk: Duration::from_secs(8),
        requests_after_bulk: 20,
        short_flows: 200,
        rounds: 1,
    };

    /// The full run.
    pub const FULL: Sizes = Sizes {
        bulk: Duration::from_secs(20),
        requests_after_bulk: 100,
        short_flows: 1000,
        rounds: 3,
    };
}

/// The bulk download is measured after this much (slow start).
pub const WARMUP: Duration = Duration::from_secs(1);

/// Smallest and largest short request.
pub const REQUEST_SIZES: (u64, u64) = (10 << 10, 1 << 20);

impl Scenario {
    /// The lines as a lab builds them.
    ///
    /// # Errors
    /// If a line does not parse (a bug in [`ALL`]; a unit test parses them all).
    pub fn line_specs(&self) -> Result<Vec<LineSpec>> {
        Ok(self
            .lines
            .iter()
            .map(|l| LineSpec::parse(l))
            .collect::<Result<_, _>>()?)
    }

    /// The lab of one run of this scenario.
    ///
    /// # Errors
    /// If the lines are not a valid lab.
    pub fn lab_spec(&self, lab_name: &str, seed: u64) -> Result<LabSpec> {
        let spec = LabSpec {
            name: lab_name.to_owned(),
            seed,
            lines: self.line_specs()?,
            owner: Some("bench".into()),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// What TCP payload can carry downstream at most, bit/s: the sum over the scenario's links
    /// of their rate × 1448/1514 (a line sharing another's link adds nothing).
    ///
    /// # Errors
    /// If the lines are not a valid lab.
    pub fn capacity_bps(&self) -> Result<f64> {
        let spec = self.lab_spec("capacity", 1)?;
        Ok(spec
            .own_links()
            .map(|l| expected_goodput(l.downstream.rate, false))
            .sum())
    }

    /// The line a single TCP flow does best on: the highest downstream rate, then the shortest
    /// delay, then the first.
    ///
    /// # Errors
    /// If the lines do not parse.
    pub fn best_line(&self) -> Result<LineSpec> {
        let mut lines = self.line_specs()?;
        lines.sort_by(|a, b| {
            b.downstream
                .rate
                .cmp(&a.downstream.rate)
                .then(a.downstream.delay.cmp(&b.downstream.delay))
        });
        lines
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("scenario {} has no lines", self.name))
    }

    /// How many short requests a run makes.
    #[must_use]
    pub fn requests(&self, sizes: Sizes) -> usize {
        match self.workload {
            Workload::Bulk => sizes.requests_after_bulk,
            Workload::Requests => sizes.short_flows,
        }
    }

    /// How long the bulk download lasts (none for [`Workload::Requests`]). An outage scenario
    /// runs at least 4 s past the line's return, to show the recovery.
    #[must_use]
    pub fn bulk(&self, sizes: Sizes) -> Option<Duration> {
        match self.workload {
            Workload::Requests => None,
            Workload::Bulk => Some(match self.outage {
                Some(o) => sizes.bulk.max(o.back + Duration::from_secs(4)),
                None => sizes.bulk,
            }),
        }
    }
}

/// `count` request sizes, log-uniform between [`REQUEST_SIZES`] (as many of 10–100 KiB as of
/// 100 KiB–1 MiB, like web objects), the same for every contender of a run with `seed`.
#[must_use]
pub fn request_sizes(count: usize, seed: u64) -> Vec<u64> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let (lo, hi) = REQUEST_SIZES;
    let ratio = hi as f64 / lo as f64;
    (0..count)
        .map(|_| {
            // 53 random bits: a uniform fraction in [0, 1).
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a positive size between lo and hi"
            )]
            let size = (lo as f64 * ratio.powf(u)) as u64;
            size.clamp(lo, hi)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_builds_a_valid_lab_with_a_capacity() {
        for s in ALL {
            let spec = s.lab_spec("x", 1).unwrap();
            assert!(!spec.lines.is_empty(), "{}", s.name);
            assert!(s.capacity_bps().unwrap() > 0.0, "{}", s.name);
            if let Some(o) = s.outage {
                assert!(spec.lines.iter().any(|l| l.name == o.line), "{}", s.name);
                assert!(s.bulk(Sizes::QUICK).unwrap() > o.back, "{}", s.name);
            }
        }
    }

    #[test]
    fn capacity_is_the_tcp_payload_share_of_each_link_counted_once() {
        let find = |n: &str| ALL.into_iter().find(|s| s.name == n).unwrap();
        let share = 1448.0 / 1514.0;
        let close = |a: f64, b: f64| (a - b).abs() < 1.0;
        assert!(close(
            find("balanced").capacity_bps().unwrap(),
            20e6 * share
        ));
        assert!(close(
            find("three-lines").capacity_bps().unwrap(),
            80e6 * share
        ));
        // Two paths through one 20 Mbit/s link: 20, not 40.
        assert!(close(
            find("shared-bottleneck").capacity_bps().unwrap(),
            20e6 * share
        ));
    }

    #[test]
    fn the_best_line_is_the_fastest_then_the_shortest() {
        let find = |n: &str| ALL.into_iter().find(|s| s.name == n).unwrap();
        assert_eq!(find("dsl-lte").best_line().unwrap().name, "lte");
        assert_eq!(find("three-lines").best_line().unwrap().name, "fibre");
        assert_eq!(find("failover").best_line().unwrap().name, "dsl");
        assert_eq!(find("shared-bottleneck").best_line().unwrap().name, "wan1");
    }

    #[test]
    fn scenarios_are_selected_by_name_in_run_order() {
        let all = select(&[]).unwrap();
        assert_eq!(all.len(), ALL.len());
        let two = select(&["failover".into(), "balanced".into()]).unwrap();
        let names: Vec<&str> = two.iter().map(|s| s.name).collect();
        assert_eq!(names, ["balanced", "failover"]);
        let e = select(&["nope".into()]).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("short-flows"), "{e}");
    }

    #[test]
    fn request_sizes_are_log_uniform_and_repeatable() {
        let sizes = request_sizes(2000, 7);
        assert_eq!(sizes, request_sizes(2000, 7));
        assert_ne!(sizes, request_sizes(2000, 8));
        let (lo, hi) = REQUEST_SIZES;
        assert!(sizes.iter().all(|&s| (lo..=hi).contains(&s)));
        // The geometric middle (about 101 KiB) splits them in halves.
        let below = sizes.iter().filter(|&&s| s < 103_600).count();
        assert!((900..1100).contains(&below), "{below}");
    }

    #[test]
    fn quick_runs_are_shorter_and_outages_run_past_the_return() {
        let failover = ALL.into_iter().find(|s| s.name == "failover").unwrap();
        assert_eq!(failover.bulk(Sizes::QUICK), Some(Duration::from_secs(12)));
        assert_eq!(failover.bulk(Sizes::FULL), Some(Duration::from_secs(20)));
        let short = ALL.into_iter().find(|s| s.name == "short-flows").unwrap();
        assert_eq!(short.bulk(Sizes::QUICK), None);
        assert_eq!(short.requests(Sizes::QUICK), 200);
        assert_eq!(short.requests(Sizes::FULL), 1000);
    }
}
