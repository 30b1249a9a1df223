//! The scheduler table (issue 15): every scheduler of the engine on the BLEST paper's 3G + WLAN
//! paths, on ECF's very heterogeneous pair, and on the `mpbond bench` lines, in the simulator.
//!
//! For each scheduler and case:
//! - bulk goodput (the slope of bytes delivered between 3 s and 8 s of an endless upload);
//! - the peak of bytes held out of order at the receiver's data level during that upload
//!   (head-of-line blocking), and the bytes sent beyond one copy of the data (TCP
//!   retransmissions, reinjections, redundant copies);
//! - the completion time of 64 KiB, 256 KiB, 1 MiB and 8 MiB objects, each on a new
//!   connection from its first SYN to its last byte delivered, median and worst of three seeds
//!   (with three samples the 95th percentile is the worst), and the peak of bytes held out of
//!   order while each came in (median of the three).
//!
//! And interactive traffic (200-byte writes every 20 ms, as a keyboard over ssh or a game's
//! updates) over two lines, one of them with 1 % loss: the delay of each write from the
//! application's write to the receiver's read, median, 99th percentile and worst of 500.
//!
//! Each case is kept in `tests/snapshots/scheduler_<case>.txt`: the simulation is deterministic,
//! so any change in the engine's behaviour shows as a diff (`UPDATE_SNAPSHOTS=1` rewrites them
//! after a change that is meant). Paths carry their rate and loss both ways, with a queue of one
//! bandwidth-delay product (64 KiB at least).
#![allow(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    reason = "a test fails loudly; figures for a table"
)]

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use mptcp_proto::mptcp::{ConnConfig, SchedulerKind, StackConfig};
use mptcp_sim::Sim;
use mptcp_sim::apps::mptcp::{MpPaced, MpSend, MpSink};
use mptcp_sim::link::LinkParams;

/// A path: Mbit/s, RTT in ms, loss probability.
type PathSpec = (f64, u64, f64);

const OBJECTS: [u64; 4] = [64 << 10, 256 << 10, 1 << 20, 8 << 20];
const SEEDS: [u64; 3] = [1, 2, 3];

/// The receive buffer of the table's connections: the engine's default unless the case says.
fn recv_buffer(case: &str) -> usize {
    if case.ends_with("-256k") {
        256 << 10
    } else {
        ConnConfig::default().recv_buffer
    }
}

/// One simulated world with every connection on `scheduler`.
fn sim(name: &str, seed: u64, scheduler: SchedulerKind) -> Sim<mptcp_proto::mptcp::Stack> {
    let config = StackConfig {
        conn: ConnConfig {
            scheduler,
            recv_buffer: recv_buffer(name),
            ..ConnConfig::default()
        },
        ..StackConfig::default()
    };
    Sim::build(name, seed, config)
}

fn links(paths: &[PathSpec]) -> Vec<LinkParams> {
    paths
        .iter()
        .map(|&(mbit, rtt, loss)| {
            let mut p = LinkParams::bdp_queue(mbit, Duration::from_millis(rtt));
            p.loss = loss;
            p
        })
        .collect()
}

/// What an upload of `total` bytes came to.
struct Upload {
    /// `(time since the start, bytes delivered)` at each read of the receiver.
    samples: Vec<(Duration, u64)>,
    intact: bool,
    peak_out_of_order: u64,
    /// Bytes sent beyond one copy of the data.
    extra: u64,
}

fn upload(
    case: &str,
    paths: &[PathSpec],
    scheduler: SchedulerKind,
    seed: u64,
    total: u64,
    run_for: Duration,
) -> Upload {
    let mut sim = sim(case, seed, scheduler);
    let (c, s, _) = sim.multipath(&links(paths));
    let to = SocketAddr::new(IpAddr::from([10, 9, 9, 9]), 80);
    let sink = MpSink::listen(to, seed);
    let got = sink.state();
    sim.set_app(s, sink);
    let ps = sim.paths(c);
    let client = MpSend::new(ps, to, total, seed);
    let sent = client.state();
    sim.set_app(c, client);
    let start = sim.now();
    sim.run_for(run_for);
    let id = sent.borrow().conn.unwrap();
    let (stats, subflows) = sim.with_endpoint(c, |_, st| {
        (st.stats(id).unwrap_or_default(), st.subflows(id))
    });
    let rtx: u64 = subflows
        .iter()
        .filter_map(|s| s.tcp.as_ref())
        .map(|t| t.bytes_retransmitted)
        .sum();
    let sink_id = got.borrow().conn;
    let peak_out_of_order = sink_id
        .and_then(|sid| sim.with_endpoint(s, |_, st| st.stats(sid)))
        .map_or(0, |st| st.peak_out_of_order);
    let g = got.borrow();
    Upload {
        samples: g
            .samples
            .iter()
            .map(|&(t, b)| (t.duration_since(start), b))
            .collect(),
        intact: g.first_bad.is_none(),
        peak_out_of_order,
        extra: rtx + stats.bytes_reinjected + stats.bytes_redundant,
    }
}

/// When the last of `len` bytes arrived.
fn completion(u: &Upload, len: u64) -> Option<Duration> {
    u.samples.iter().find(|s| s.1 >= len).map(|s| s.0)
}

/// One scheduler's row, and its figures for the checks.
struct Row {
    goodput: f64,
    peak_out_of_order: u64,
    extra: u64,
    /// Per object size: median and worst completion, seconds.
    objects: Vec<(f64, f64)>,
    /// Per object size: the median over seeds of the peak of bytes held out of order at the
    /// receiver's data level while the object came in.
    objects_out_of_order: Vec<u64>,
}

fn row(case: &str, paths: &[PathSpec], scheduler: SchedulerKind) -> Row {
    let bulk = upload(case, paths, scheduler, 42, 1 << 40, Duration::from_secs(8));
    assert!(bulk.intact, "{case} {scheduler}: bulk data intact");
    let at = |secs| Duration::from_secs(secs);
    let bytes_at = |t: Duration| {
        bulk.samples
            .iter()
            .take_while(|s| s.0 <= t)
            .last()
            .map_or(0, |s| s.1)
    };
    let goodput = (bytes_at(at(8)) - bytes_at(at(3))) as f64 * 8.0 / 5.0;
    let (objects, objects_out_of_order) = OBJECTS
        .iter()
        .map(|&len| {
            let (mut times, mut held): (Vec<f64>, Vec<u64>) = SEEDS
                .iter()
                .map(|&seed| {
                    let u = upload(case, paths, scheduler, seed, len, Duration::from_secs(60));
                    assert!(u.intact, "{case} {scheduler} {len}: intact");
                    let t = completion(&u, len)
                        .unwrap_or_else(|| panic!("{case} {scheduler} {len}: not done in 60 s"))
                        .as_secs_f64();
                    (t, u.peak_out_of_order)
                })
                .unzip();
            times.sort_by(f64::total_cmp);
            held.sort_unstable();
            (
                (times[times.len() / 2], times[times.len() - 1]),
                held[held.len() / 2],
            )
        })
        .unzip();
    Row {
        goodput,
        peak_out_of_order: bulk.peak_out_of_order,
        extra: bulk.extra,
        objects,
        objects_out_of_order,
    }
}

/// The table of one case, checked against its snapshot; the rows by scheduler.
fn table(case: &str, paths: &[PathSpec]) -> Vec<(SchedulerKind, Row)> {
    let mut out = format!("{case}: paths (Mbit/s, RTT ms, loss) {paths:?}\n");
    out.push_str(
        "scheduler     goodput  peak OOO   extra   completion s, median/worst of 3: 64K  256K  1M  8M\n",
    );
    out.push_str("              Mbit/s        kB      kB\n");
    let mut rows = Vec::new();
    for k in SchedulerKind::ALL {
        let r = row(case, paths, k);
        write!(
            out,
            "{:<12} {:>8.2} {:>9.0} {:>7.0}  ",
            k.name(),
            r.goodput / 1e6,
            r.peak_out_of_order as f64 / 1e3,
            r.extra as f64 / 1e3
        )
        .unwrap();
        for (p50, worst) in &r.objects {
            write!(out, " {p50:.3}/{worst:.3}").unwrap();
        }
        out.push('\n');
        rows.push((k, r));
    }
    out.push_str("scheduler     peak out-of-order kB while each object came in, median of 3: 64K  256K  1M  8M\n");
    for (k, r) in &rows {
        write!(out, "{:<12}", k.name()).unwrap();
        for held in &r.objects_out_of_order {
            write!(out, " {:>7.0}", *held as f64 / 1e3).unwrap();
        }
        out.push('\n');
    }
    snapshot(case, &out);
    rows
}

/// Checks `out` against `tests/snapshots/scheduler_<name>.txt` (printed first; written when
/// missing or with `UPDATE_SNAPSHOTS=1`).
fn snapshot(name: &str, out: &str) {
    eprintln!("{out}");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/snapshots/scheduler_{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() || !path.exists() {
        std::fs::write(&path, out).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        out, want,
        "the {name} table changed (UPDATE_SNAPSHOTS=1 rewrites it if meant)"
    );
}

/// The BLEST paper's pair. Issue 15 asks `blest` or `ecf` to finish 256 KiB to 8 MiB objects
/// 10 % sooner than `min-rtt` here. For each size either one of them does, or [`floor`] shows
/// that no scheduler could: 10 % sooner than `min-rtt` would be well under what the two lines
/// carry apart.
#[test]
fn scheduler_table_blest_3g_wlan() {
    let paths = [(25.0, 25, 0.01), (5.0, 65, 0.0)];
    let rows = table("3g-wlan", &paths);
    let floors = floor("3g-wlan", &paths);
    let mut out = format!(
        "3g-wlan floor: each line alone (one path, the same engine), from the same first SYN; \
         when the two together have delivered the object, median of {} seeds\n",
        FLOOR_SEEDS.len()
    );
    out.push_str("object    floor s  min-rtt s  best of blest/ecf s  10 % sooner than min-rtt s\n");
    let (min_rtt, blest, ecf) = (
        of(&rows, SchedulerKind::MinRtt),
        of(&rows, SchedulerKind::Blest),
        of(&rows, SchedulerKind::Ecf),
    );
    for (i, (&len, &bound)) in OBJECTS.iter().zip(&floors).enumerate() {
        let floor = bound.median;
        let m = min_rtt.objects[i].0;
        let quickest = blest.objects[i].0.min(ecf.objects[i].0);
        let sooner = 0.9 * m;
        let verdict = if len < 256 << 10 {
            "not asked"
        } else if quickest <= sooner {
            "met"
        } else if sooner < 0.95 * floor {
            "out of reach: under the floor"
        } else {
            "MISSED"
        };
        writeln!(
            out,
            "{:>5} KiB {floor:>8.3} {m:>10.3} {quickest:>20.3} {sooner:>27.3}  {verdict}",
            len >> 10
        )
        .unwrap();
        // A floor: no scheduler finishes much sooner than the lines carry apart in their
        // fastest seed (a median of three seeds against nine single ones, hence the slack).
        for (k, r) in &rows {
            assert!(
                r.objects[i].0 >= 0.95 * bound.fastest,
                "{k} finished {len} bytes in {:.3} s, under the fastest floor {:.3} s",
                r.objects[i].0,
                bound.fastest
            );
        }
        if len >= 256 << 10 {
            assert_ne!(
                verdict, "MISSED",
                "{len} bytes: best of blest/ecf {quickest:.3} s, min-rtt {m:.3} s, floor {floor:.3} s"
            );
        }
    }
    snapshot("3g-wlan-floor", &out);
}

/// Seeds of [`floor`]: more than the table's three, as its median is the yardstick.
const FLOOR_SEEDS: [u64; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];

/// A lower bound under every scheduler's completion time of each of [`OBJECTS`] over `paths`,
/// over [`FLOOR_SEEDS`] ([`Floor`]): each line carries an endless upload alone, on a connection of
/// its own over the same engine (one path: the TCP, congestion control and loss of a subflow),
/// all starting at the same moment; the object is done when their deliveries add up to it.
/// No scheduler does better: it cannot make a subflow's window grow faster than a flow that
/// always has data to send, nor spare it the line's random loss, and a multipath connection's
/// later subflows start a handshake after its first.
fn floor(case: &str, paths: &[PathSpec]) -> Vec<Floor> {
    let mut per_object: Vec<Vec<f64>> = vec![Vec::new(); OBJECTS.len()];
    for &seed in &FLOOR_SEEDS {
        let alone: Vec<Upload> = paths
            .iter()
            .map(|p| {
                let u = upload(
                    case,
                    std::slice::from_ref(p),
                    SchedulerKind::MinRtt,
                    seed,
                    1 << 40,
                    Duration::from_secs(12),
                );
                assert!(u.intact, "{case} {p:?} alone: intact");
                u
            })
            .collect();
        for (times, &len) in per_object.iter_mut().zip(&OBJECTS) {
            times.push(together(&alone, len).as_secs_f64());
        }
    }
    per_object
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            Floor {
                median: t[t.len() / 2],
                fastest: t[0],
            }
        })
        .collect()
}

/// [`floor`] of one object: the median over [`FLOOR_SEEDS`], the yardstick of the table's
/// verdicts, and the fastest seed, the bound no scheduler's median may pass (under random
/// loss one seed differs from the next by a fifth: 5.6 to 7.9 s for 8 MiB on 3g-wlan).
#[derive(Debug, Clone, Copy)]
struct Floor {
    median: f64,
    fastest: f64,
}

/// When `uploads`, side by side, have delivered `len` bytes between them.
fn together(uploads: &[Upload], len: u64) -> Duration {
    let mut reads: Vec<(Duration, usize, u64)> = uploads
        .iter()
        .enumerate()
        .flat_map(|(k, u)| u.samples.iter().map(move |&(t, b)| (t, k, b)))
        .collect();
    reads.sort_by_key(|r| r.0);
    let mut delivered = vec![0; uploads.len()];
    reads
        .into_iter()
        .find(|&(_, k, b)| {
            delivered[k] = b;
            delivered.iter().sum::<u64>() >= len
        })
        .map_or_else(
            || panic!("the lines alone never delivered {len} bytes together"),
            |r| r.0,
        )
}

/// The same with a 256 KiB receive buffer (a small device's): the window, not the paths,
/// limits, and what the slow path holds up blocks the fast one (BLEST's case).
#[test]
fn scheduler_table_blest_3g_wlan_small_window() {
    table("3g-wlan-256k", &[(25.0, 25, 0.01), (5.0, 65, 0.0)]);
}

/// The row of scheduler `k`.
fn of(rows: &[(SchedulerKind, Row)], k: SchedulerKind) -> &Row {
    &rows.iter().find(|r| r.0 == k).unwrap().1
}

/// ECF's pair: ECF finishes 256 KiB to 8 MiB objects at least 10 % sooner than min-rtt (median)
/// and holds no more bytes out of order at the receiver (within 2 %).
#[test]
fn scheduler_table_ecf_pair() {
    let rows = table("ecf-pair", &[(8.6, 20, 0.0), (0.3, 60, 0.0)]);
    let (ecf, min_rtt) = (
        of(&rows, SchedulerKind::Ecf),
        of(&rows, SchedulerKind::MinRtt),
    );
    for (size, (e, m)) in OBJECTS
        .iter()
        .zip(ecf.objects.iter().zip(&min_rtt.objects))
        .skip(1)
    {
        assert!(
            e.0 <= 0.9 * m.0,
            "ecf {size} bytes in {:.3} s, min-rtt {:.3} s",
            e.0,
            m.0
        );
    }
    // Both peaks sit at the receive window here (about 3.5 MB): ECF must not hold noticeably
    // more (it did hold 0.7 % more once mappings stopped ending at each write, with more
    // goodput).
    assert!(
        ecf.peak_out_of_order * 100 <= min_rtt.peak_out_of_order * 102,
        "ecf holds {} bytes out of order, min-rtt {}",
        ecf.peak_out_of_order,
        min_rtt.peak_out_of_order
    );
}

/// Balanced lines: no scheduler but redundant (which sends everything on both) moves less than
/// 98 % of what min-rtt moves.
#[test]
fn scheduler_table_balanced() {
    let rows = table("balanced", &[(10.0, 20, 0.0), (10.0, 20, 0.0)]);
    let min_rtt = of(&rows, SchedulerKind::MinRtt).goodput;
    for (k, r) in rows.iter().filter(|r| r.0 != SchedulerKind::Redundant) {
        assert!(
            r.goodput >= 0.98 * min_rtt,
            "{k}: {:.2} Mbit/s against min-rtt's {:.2}",
            r.goodput / 1e6,
            min_rtt / 1e6
        );
    }
}

#[test]
fn scheduler_table_unbalanced() {
    table("unbalanced", &[(10.0, 20, 0.0), (3.0, 50, 0.0)]);
}

#[test]
fn scheduler_table_dsl_lte() {
    table("dsl-lte", &[(16.0, 20, 0.0), (40.0, 60, 0.005)]);
}

#[test]
fn scheduler_table_three_lines() {
    table(
        "three-lines",
        &[(50.0, 10, 0.0), (20.0, 40, 0.0), (10.0, 120, 0.0)],
    );
}

/// Delays of the interactive writes over `paths` with `scheduler`: each write's time from the
/// sender's write to the receiver's read, sorted.
fn interactive_delays(paths: &[PathSpec], scheduler: SchedulerKind) -> Vec<Duration> {
    const SIZE: usize = 200;
    const COUNT: usize = 500;
    let mut sim = sim("interactive", 7, scheduler);
    let (c, s, _) = sim.multipath(&links(paths));
    let to = SocketAddr::new(IpAddr::from([10, 9, 9, 9]), 80);
    let sink = MpSink::listen(to, 7);
    let got = sink.state();
    sim.set_app(s, sink);
    let ps = sim.paths(c);
    // The first write a second after the connection is up: the join is through by then.
    let paced = MpPaced::new(
        ps,
        to,
        (SIZE, Duration::from_millis(20), COUNT),
        Duration::from_secs(1),
        7,
    );
    let written = paced.written_at();
    sim.set_app(c, paced);
    sim.run_for(Duration::from_secs(20));
    let g = got.borrow();
    assert!(
        g.first_bad.is_none(),
        "{scheduler}: interactive data intact"
    );
    let written = written.borrow();
    assert_eq!(written.len(), COUNT, "{scheduler}: every write was made");
    let mut delays: Vec<Duration> = written
        .iter()
        .enumerate()
        .map(|(k, &at)| {
            let end = ((k + 1) * SIZE) as u64;
            let read = g
                .samples
                .iter()
                .find(|s| s.1 >= end)
                .unwrap_or_else(|| panic!("{scheduler}: write {k} never arrived"));
            read.0.duration_since(at)
        })
        .collect();
    delays.sort();
    delays
}

/// Redundant gives interactive writes the lowest 99th-percentile delay when one line loses 1 %
/// of its packets: a loss on one line costs nothing while the other delivers the copy.
#[test]
fn scheduler_table_interactive_writes_over_a_lossy_line() {
    let paths: &[PathSpec] = &[(10.0, 20, 0.01), (10.0, 40, 0.0)];
    let mut out = format!(
        "interactive: 500 writes of 200 bytes every 20 ms; paths (Mbit/s, RTT ms, loss) {paths:?}\n"
    );
    out.push_str("scheduler     delay ms: median    p99  worst\n");
    let mut p99s = Vec::new();
    for k in SchedulerKind::ALL {
        let d = interactive_delays(paths, k);
        let ms = |i: usize| d[i].as_secs_f64() * 1e3;
        let p99 = d[d.len() * 99 / 100];
        writeln!(
            out,
            "{:<12} {:>15.1} {:>6.1} {:>6.1}",
            k.name(),
            ms(d.len() / 2),
            ms(d.len() * 99 / 100),
            ms(d.len() - 1)
        )
        .unwrap();
        p99s.push((k, p99));
    }
    eprintln!("{out}");
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/scheduler_interactive.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() || !path.exists() {
        std::fs::write(&path, &out).unwrap();
    }
    let redundant = p99s
        .iter()
        .find(|(k, _)| *k == SchedulerKind::Redundant)
        .unwrap()
        .1;
    for (k, p99) in p99s.iter().filter(|(k, _)| *k != SchedulerKind::Redundant) {
        assert!(
            redundant < *p99,
            "redundant's p99 {redundant:?} is not below {k}'s {p99:?}"
        );
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        out, want,
        "the interactive table changed (UPDATE_SNAPSHOTS=1 rewrites it if meant)"
    );
}
