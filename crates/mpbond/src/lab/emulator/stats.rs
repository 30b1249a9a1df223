//! Counters of one direction of a line, written by its worker thread and read by the control
//! thread, and their JSON form (`mpbond lab stats`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use crate::lab::spec::DirectionSpec;

/// Buckets of the lateness histogram: bucket `b` counts deliveries late by
/// `[2^b, 2^(b+1))` µs (bucket 0 also takes everything under 1 µs).
pub const LATE_BUCKETS: usize = 24;

/// Live counters of one direction.
#[derive(Debug, Default)]
pub struct DirCounters {
    /// Frames that reached the emulator.
    pub arrived_packets: AtomicU64,
    /// Their bytes (Ethernet frame, no FCS).
    pub arrived_bytes: AtomicU64,
    /// Frames handed to the far side.
    pub delivered_packets: AtomicU64,
    /// Their bytes.
    pub delivered_bytes: AtomicU64,
    /// Dropped by configured random loss.
    pub dropped_loss: AtomicU64,
    /// Dropped by the tail-drop queue.
    pub dropped_queue: AtomicU64,
    /// Dropped because the line was down or blackholed.
    pub dropped_down: AtomicU64,
    /// Dropped because the emulator failed to send them, or they were too long.
    pub dropped_error: AtomicU64,
    /// Dropped by the kernel before the emulator could read them (socket buffer full): an
    /// emulator that keeps up has none.
    pub dropped_overrun: AtomicU64,
    /// Refused because the emulator already held its limit of frames for this direction.
    pub dropped_memory: AtomicU64,
    /// Frames waiting in the queue or on the wire right now.
    pub in_flight_packets: AtomicU64,
    /// Queueing delay a frame arriving now would see, ns.
    pub backlog_ns: AtomicU64,
    /// Sum of delivery lateness (delivered after its due time), ns.
    pub late_sum_ns: AtomicU64,
    /// Largest lateness, ns.
    pub late_max_ns: AtomicU64,
    /// Lateness histogram.
    pub late_hist: [AtomicU64; LATE_BUCKETS],
}

/// The histogram bucket of a lateness in ns.
#[must_use]
pub fn late_bucket(late_ns: u64) -> usize {
    let us = late_ns / 1000;
    if us < 2 {
        0
    } else {
        (us.ilog2() as usize).min(LATE_BUCKETS - 1)
    }
}

impl DirCounters {
    /// Records one delivery `late_ns` after its due time.
    pub fn record_lateness(&self, late_ns: u64) {
        self.late_sum_ns.fetch_add(late_ns, Relaxed);
        self.late_max_ns.fetch_max(late_ns, Relaxed);
        self.late_hist[late_bucket(late_ns)].fetch_add(1, Relaxed);
    }

    /// A consistent-enough copy for reporting.
    #[must_use]
    pub fn snapshot(&self, settings: DirectionSpec) -> DirectionStats {
        let hist: Vec<u64> = self.late_hist.iter().map(|b| b.load(Relaxed)).collect();
        let delivered = self.delivered_packets.load(Relaxed);
        let quantile = |q: f64| -> u64 {
            let total: u64 = hist.iter().sum();
            if total == 0 {
                return 0;
            }
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "q in (0, 1]: the product is a count no larger than `total`"
            )]
            let rank = ((total as f64) * q).ceil() as u64;
            let mut seen = 0;
            for (b, n) in hist.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return 1 << (b + 1);
                }
            }
            1 << LATE_BUCKETS
        };
        DirectionStats {
            settings,
            arrived_packets: self.arrived_packets.load(Relaxed),
            arrived_bytes: self.arrived_bytes.load(Relaxed),
            delivered_packets: delivered,
            delivered_bytes: self.delivered_bytes.load(Relaxed),
            dropped: Dropped {
                loss: self.dropped_loss.load(Relaxed),
                queue: self.dropped_queue.load(Relaxed),
                down: self.dropped_down.load(Relaxed),
                error: self.dropped_error.load(Relaxed),
                overrun: self.dropped_overrun.load(Relaxed),
                memory: self.dropped_memory.load(Relaxed),
                egress: 0,
            },
            in_flight_packets: self.in_flight_packets.load(Relaxed),
            backlog_us: self.backlog_ns.load(Relaxed) / 1000,
            lateness: Lateness {
                mean_us: if delivered == 0 {
                    0.0
                } else {
                    self.late_sum_ns.load(Relaxed) as f64 / delivered as f64 / 1000.0
                },
                p50_us_below: quantile(0.5),
                p99_us_below: quantile(0.99),
                p999_us_below: quantile(0.999),
                max_us: self.late_max_ns.load(Relaxed) / 1000,
            },
        }
    }
}

/// Frames dropped, by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// Configured random loss.
    pub loss: u64,
    /// Tail drop at the queue.
    pub queue: u64,
    /// Line down or blackholed.
    pub down: u64,
    /// Send errors and oversize frames.
    pub error: u64,
    /// Kernel socket buffer overruns: the emulator did not keep up.
    pub overrun: u64,
    /// Refused at the emulator's own limit of held frames (memory bound).
    pub memory: u64,
    /// Dropped by the egress veth after the emulator sent them (the far host's backlog was
    /// full): counted by the kernel as the veth's `tx_dropped`.
    pub egress: u64,
}

impl Dropped {
    /// Frames lost by the emulator itself rather than by what it emulates: a faithful
    /// emulator keeps this at 0.
    #[must_use]
    pub fn by_emulator(&self) -> u64 {
        self.error + self.overrun + self.memory + self.egress
    }
}

/// How late the emulator delivered frames compared with the model's schedule: the emulator's
/// own error, which should stay far below the delays it emulates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lateness {
    /// Mean, µs.
    pub mean_us: f64,
    /// Half of the frames were less late than this (upper bound of a power-of-two bucket), µs.
    pub p50_us_below: u64,
    /// 99 % of the frames were less late than this (bucket upper bound), µs.
    pub p99_us_below: u64,
    /// 99.9 % of the frames were less late than this (bucket upper bound), µs.
    pub p999_us_below: u64,
    /// The latest frame, µs.
    pub max_us: u64,
}

/// One direction of a line in `mpbond lab stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectionStats {
    /// Current settings.
    pub settings: DirectionSpec,
    /// Frames that reached the emulator.
    pub arrived_packets: u64,
    /// Their bytes.
    pub arrived_bytes: u64,
    /// Frames delivered to the other side.
    pub delivered_packets: u64,
    /// Their bytes.
    pub delivered_bytes: u64,
    /// Drops by cause.
    pub dropped: Dropped,
    /// Frames in the queue or on the wire.
    pub in_flight_packets: u64,
    /// Current queueing delay, µs.
    pub backlog_us: u64,
    /// Emulator lateness.
    pub lateness: Lateness,
}

/// State of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineState {
    /// Carrying traffic.
    Up,
    /// Link down on both ends (no carrier): nothing passes, hosts see the interface go down.
    Down,
    /// Silently drops everything while the interfaces stay up.
    Blackhole,
}

impl std::fmt::Display for LineState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LineState::Up => "up",
            LineState::Down => "down",
            LineState::Blackhole => "blackhole",
        })
    }
}

/// One line in `mpbond lab stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineStats {
    /// Line name.
    pub name: String,
    /// Current state.
    pub state: LineState,
    /// Gateway → vps.
    pub upstream: DirectionStats,
    /// Vps → gateway.
    pub downstream: DirectionStats,
}

/// `mpbond lab stats` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabStats {
    /// Lab name.
    pub lab: String,
    /// Seconds since the emulator started.
    pub uptime_s: f64,
    /// Every line.
    pub lines: Vec<LineStats>,
}

impl LabStats {
    /// The line called `name`.
    #[must_use]
    pub fn line(&self, name: &str) -> Option<&LineStats> {
        self.lines.iter().find(|l| l.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_buckets_are_powers_of_two_microseconds() {
        assert_eq!(late_bucket(0), 0);
        assert_eq!(late_bucket(1_999), 0);
        assert_eq!(late_bucket(2_000), 1);
        assert_eq!(late_bucket(1_000_000), 9);
        assert_eq!(late_bucket(u64::MAX), LATE_BUCKETS - 1);
    }

    #[test]
    fn snapshot_quantiles_bound_the_samples() {
        let c = DirCounters::default();
        for _ in 0..98 {
            c.record_lateness(10_000);
            c.delivered_packets.fetch_add(1, Relaxed);
        }
        for _ in 0..2 {
            c.record_lateness(3_000_000);
            c.delivered_packets.fetch_add(1, Relaxed);
        }
        let spec = crate::lab::spec::LineSpec::new(
            "x",
            crate::units::Rate::UNLIMITED,
            std::time::Duration::ZERO,
        );
        let s = c.snapshot(spec.upstream);
        assert_eq!(s.lateness.p50_us_below, 16);
        assert_eq!(s.lateness.p99_us_below, 4096);
        assert_eq!(s.lateness.max_us, 3000);
        assert!((s.lateness.mean_us - 69.8).abs() < 1e-9);
    }
}
