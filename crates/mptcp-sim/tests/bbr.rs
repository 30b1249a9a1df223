//! BBR and `auto` in the simulator: a lossy line keeps its rate (where CUBIC holds
//! `1.2 / sqrt(p)` segments), a clean line is filled without a standing queue, and a multipath
//! upload over DSL + lossy LTE moves more than with CUBIC. `auto` is CUBIC on clean lines (to
//! the byte) and BBR on the lossy one.
//!
//! Each run prints its figures (`cargo test -p mptcp-sim --test bbr -- --nocapture`);
//! docs/user-stack.md quotes them.
#![allow(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    reason = "a test fails loudly; figures for a table"
)]

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mptcp_proto::mptcp::{Congestion, ConnConfig, Stack, StackConfig};
use mptcp_proto::tcp::congestion::Algorithm;
use mptcp_sim::Sim;
use mptcp_sim::apps::mptcp::{MpSend, MpSink, MpSinkState};
use mptcp_sim::link::LinkParams;

/// Settings whose connections use `congestion`, on MPTCP and on plain TCP.
fn config(congestion: Congestion, mptcp: bool) -> StackConfig {
    let mut c = StackConfig {
        no_mptcp: !mptcp,
        conn: ConnConfig {
            congestion,
            ..ConnConfig::default()
        },
        ..StackConfig::default()
    };
    if let Some(alg) = congestion.uncoupled() {
        c.endpoint.tcp.congestion = alg;
    }
    c
}

/// A line of `mbit` Mbit/s, `rtt` round trip, a queue of one bandwidth-delay product, and
/// `loss` random loss each way.
fn line(mbit: f64, rtt_ms: u64, loss: f64) -> LinkParams {
    let mut p = LinkParams::bdp_queue(mbit, Duration::from_millis(rtt_ms));
    p.loss = loss;
    p
}

/// An endless upload over `lines` (MPTCP for more than one): the smoothed round trips of its
/// subflows (read when called), and what the server received.
fn upload(
    sim: &mut Sim<Stack>,
    lines: &[LinkParams],
) -> (
    impl Fn(&mut Sim<Stack>) -> Vec<Duration> + use<>,
    Rc<RefCell<MpSinkState>>,
) {
    let (c, s, _) = sim.multipath(lines);
    let to = SocketAddr::new(IpAddr::from([10, 9, 9, 9]), 80);
    let sink = MpSink::listen(to, 3);
    let got = sink.state();
    sim.set_app(s, sink);
    let paths = sim.paths(c);
    let send = MpSend::new(paths, to, u64::MAX / 2, 3);
    let sender = send.state();
    sim.set_app(c, send);
    let srtts = move |sim: &mut Sim<Stack>| {
        let Some(id) = sender.borrow().conn else {
            return Vec::new();
        };
        sim.with_endpoint(c, |_, stack| {
            stack.subflows(id).iter().filter_map(|s| s.srtt).collect()
        })
    };
    (srtts, got)
}

/// Bits per second between `from` and `to` seconds of the run.
fn mbit(got: &RefCell<MpSinkState>, start: Instant, from: u64, to: u64) -> f64 {
    let g = got.borrow();
    let a = g.bytes_at(start + Duration::from_secs(from));
    let b = g.bytes_at(start + Duration::from_secs(to));
    (b - a) as f64 * 8.0 / (to - from) as f64 / 1e6
}

/// Goodput (Mbit/s, from 5 s to 25 s) of an upload over `lines` with `congestion`, and the
/// stream it delivered checked whole and in order.
fn goodput(name: &str, congestion: Congestion, lines: &[LinkParams]) -> f64 {
    let mut sim = Sim::build(name, 1, config(congestion, lines.len() > 1));
    let start = sim.now();
    let (_, got) = upload(&mut sim, lines);
    sim.run_for(Duration::from_secs(25));
    assert_eq!(
        got.borrow().first_bad,
        None,
        "{congestion}: a byte out of pattern"
    );
    mbit(&got, start, 5, 25)
}

/// [`goodput`] with `cubic`, `bbr` and `auto`, in that order.
fn by_algorithm(name: &str, lines: &[LinkParams]) -> (f64, f64, f64) {
    (
        goodput(name, Congestion::Cubic, lines),
        goodput(name, Congestion::Bbr, lines),
        goodput(name, Congestion::Auto, lines),
    )
}

/// One TCP flow over 40 Mbit/s, 60 ms, 0.5 % loss each way: CUBIC's window is what the loss
/// lets it be, BBR's what the line carries.
#[test]
fn a_lossy_line_keeps_its_rate() {
    let lte = [line(40.0, 60, 0.005)];
    let (cubic, bbr, auto) = by_algorithm("bbr-lossy", &lte);
    println!(
        "40 Mbit/s, 60 ms, 0.5 % loss: cubic {cubic:.2} Mbit/s, bbr {bbr:.2} Mbit/s, auto {auto:.2} Mbit/s"
    );
    assert!(bbr >= 0.8 * 40.0, "bbr reached {bbr:.2} Mbit/s");
    assert!(bbr >= 2.0 * cubic, "bbr {bbr:.2} against cubic {cubic:.2}");
    assert!(auto >= 0.95 * bbr, "auto {auto:.2} against bbr {bbr:.2}");
}

/// A clean line: BBR fills it as CUBIC does.
#[test]
fn a_clean_line_is_filled() {
    let dsl = [line(16.0, 20, 0.0)];
    let (cubic, bbr, auto) = by_algorithm("bbr-clean", &dsl);
    println!(
        "16 Mbit/s, 20 ms: cubic {cubic:.2} Mbit/s, bbr {bbr:.2} Mbit/s, auto {auto:.2} Mbit/s"
    );
    assert!(bbr >= 0.9 * 16.0, "bbr reached {bbr:.2} Mbit/s");
    assert!(bbr >= 0.97 * cubic, "bbr {bbr:.2} against cubic {cubic:.2}");
    // The queue overflows full: every loss shows it, and auto stays CUBIC.
    assert!(
        (auto - cubic).abs() < 1e-9,
        "auto {auto} against cubic {cubic}"
    );
}

/// `mpbond bench`'s `dsl-lte` lines in an MPTCP upload: with BBR the lossy LTE line carries
/// its rate next to DSL.
#[test]
fn dsl_and_lossy_lte_together() {
    let lines = [line(16.0, 20, 0.0), line(40.0, 60, 0.005)];
    let (cubic, bbr, auto) = by_algorithm("bbr-dsl-lte", &lines);
    println!(
        "dsl 16 Mbit/s 20 ms + lte 40 Mbit/s 60 ms 0.5 % loss: cubic {cubic:.2} Mbit/s, bbr {bbr:.2} Mbit/s, auto {auto:.2} Mbit/s"
    );
    assert!(bbr >= 0.8 * 56.0, "bbr reached {bbr:.2} Mbit/s");
    assert!(bbr >= 1.5 * cubic, "bbr {bbr:.2} against cubic {cubic:.2}");
    assert!(auto >= 0.95 * bbr, "auto {auto:.2} against bbr {bbr:.2}");
}

/// BBR keeps no standing queue: on a clean line with a deep queue (four bandwidth-delay
/// products) the round trips its flow sees stay near the line's, where CUBIC fills the queue.
#[test]
fn no_standing_queue() {
    let mut deep = line(20.0, 40, 0.0);
    deep.queue_bytes = 4 * 100_000;
    let srtt = |congestion: Congestion| {
        let mut sim = Sim::build("bbr-queue", 1, config(congestion, false));
        let start = sim.now();
        let (srtts, got) = upload(&mut sim, std::slice::from_ref(&deep));
        let mut worst = Duration::ZERO;
        // The smoothed round trip every 100 ms from 5 s on.
        sim.run_for(Duration::from_secs(5));
        for _ in 0..200 {
            sim.run_for(Duration::from_millis(100));
            worst = srtts(&mut sim).into_iter().fold(worst, Duration::max);
        }
        (worst, mbit(&got, start, 5, 25))
    };
    let (cubic_rtt, cubic) = srtt(Congestion::Cubic);
    let (bbr_rtt, bbr) = srtt(Congestion::Bbr);
    println!(
        "20 Mbit/s, 40 ms, 160 ms of queue: cubic {cubic:.2} Mbit/s worst srtt {cubic_rtt:?}, bbr {bbr:.2} Mbit/s worst srtt {bbr_rtt:?}"
    );
    assert!(bbr >= 0.9 * 20.0, "bbr reached {bbr:.2} Mbit/s");
    assert!(
        bbr_rtt < Duration::from_millis(100),
        "bbr's smoothed round trip reached {bbr_rtt:?}"
    );
    assert!(cubic_rtt > bbr_rtt, "cubic {cubic_rtt:?}, bbr {bbr_rtt:?}");
}

/// The plain-TCP algorithm is also usable on its own, as a TCP setting.
#[test]
fn bbr_is_a_tcp_algorithm() {
    assert_eq!(Algorithm::Bbr.build(14_600).name(), "bbr");
    assert_eq!(
        "bbr".parse::<Congestion>().unwrap().uncoupled(),
        Some(Algorithm::Bbr)
    );
}

/// `mpbond bench`'s `three-lines` in an MPTCP upload: BBR fills clean lines nearly as CUBIC
/// does (its `ProbeRTT` and its probing cost a percent or two), and `auto` is CUBIC there.
#[test]
fn three_clean_lines() {
    let lines = [
        line(50.0, 10, 0.0),
        line(20.0, 40, 0.0),
        line(10.0, 120, 0.0),
    ];
    let (cubic, bbr, auto) = by_algorithm("bbr-three-lines", &lines);
    println!(
        "three lines, 80 Mbit/s: cubic {cubic:.2} Mbit/s, bbr {bbr:.2} Mbit/s, auto {auto:.2} Mbit/s"
    );
    assert!(bbr >= 0.97 * cubic, "bbr {bbr:.2} against cubic {cubic:.2}");
    assert!(
        (auto - cubic).abs() < 1e-9,
        "auto {auto} against cubic {cubic}"
    );
}
