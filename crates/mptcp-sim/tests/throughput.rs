//! The engine's throughput table: one TCP flow (CUBIC, SACK, pacing) over a link of 1 to
//! 1000 Mbit/s, 1 to 200 ms round trip and 0 to 2 % random loss, with a queue of one
//! bandwidth-delay product. Goodput is compared with the link rate and, with loss, with the
//! Mathis bound `MSS / RTT · 1.22 / √p`. Goodput is measured after 30 round trips (slow
//! start and its end are over), over 40 more, as the slope of bytes delivered over time.
//!
//! The table is kept in `tests/snapshots/throughput.txt`: the simulation is deterministic, so
//! any change in the engine's behaviour shows as a diff (`UPDATE_SNAPSHOTS=1` rewrites it after
//! a change that is meant). And every loss-free cell that the window allows must reach 95 % of
//! the link rate.
#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use mptcp_sim::Sim;
use mptcp_sim::apps::{BulkSend, Sink};
use mptcp_sim::link::LinkParams;

const RATES_MBIT: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];
const RTTS_MS: [u64; 4] = [1, 10, 50, 200];
const LOSSES: [f64; 3] = [0.0, 0.005, 0.02];
/// Payload of a full segment (1500-byte packets, timestamps on).
const MSS: f64 = 1448.0;
/// The largest receive window (the engine's default `recv_buffer_max`).
const MAX_WINDOW: f64 = (16 << 20) as f64;

struct Cell {
    rate: f64,
    rtt: Duration,
    loss: f64,
    goodput: f64,
}

impl Cell {
    /// What the window allows, bit/s.
    fn window_limit(&self) -> f64 {
        MAX_WINDOW * 8.0 / self.rtt.as_secs_f64()
    }

    fn window_limited(&self) -> bool {
        self.window_limit() < self.rate * 1e6
    }

    /// Mathis et al.: `MSS / RTT · C / √p` with `C = √(3/2)`.
    fn mathis(&self) -> Option<f64> {
        (self.loss > 0.0)
            .then(|| MSS * 8.0 / self.rtt.as_secs_f64() * (1.5f64).sqrt() / self.loss.sqrt())
    }
}

fn run(rate: f64, rtt_ms: u64, loss: f64) -> Cell {
    let rtt = Duration::from_millis(rtt_ms);
    let mut sim = Sim::with_seed("throughput", 42);
    let (a, b) = sim.pair(LinkParams::bdp_queue(rate, rtt));
    // Random loss on the data's way only.
    let mut data = sim.link_params(0, 0).clone();
    data.loss = loss;
    sim.set_link(0, 0, data);
    let sink = Sink::listen(sim.addr(b, 80));
    let got = sink.state();
    sim.set_app(b, sink);
    let to = sim.addr(b, 80);
    sim.set_app(a, BulkSend::new(sim.addr(a, 0), to, u64::MAX / 2, 1));
    // Slow start, the loss that usually ends it and the recovery are over after 30 round
    // trips; then 40 more (and at least 2000 full segments) are measured.
    let warmup = (rtt * 30).max(Duration::from_secs(2));
    let segments = Duration::from_secs_f64(2000.0 * 1500.0 * 8.0 / (rate * 1e6));
    let measure = (rtt * 40).max(Duration::from_secs(4)).max(segments);
    sim.run_for(warmup);
    let from = sim.now();
    sim.run_for(measure);
    let goodput = got.borrow().goodput_slope(from, sim.now());
    Cell {
        rate,
        rtt,
        loss,
        goodput,
    }
}

#[test]
fn throughput_table_matches_its_snapshot_and_fills_the_link() {
    let mut params = Vec::new();
    for &rate in &RATES_MBIT {
        for &rtt in &RTTS_MS {
            for &loss in &LOSSES {
                params.push((rate, rtt, loss));
            }
        }
    }
    // Cells are independent simulations: run them on every core (the results do not depend
    // on which thread ran which).
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut cells: Vec<Option<Cell>> = Vec::new();
    cells.resize_with(params.len(), || None);
    let done = std::sync::Mutex::new(cells);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(rate, rtt, loss)) = params.get(i) else {
                        break;
                    };
                    let c = run(rate, rtt, loss);
                    done.lock().unwrap()[i] = Some(c);
                }
            });
        }
    });
    let cells: Vec<Cell> = done.into_inner().unwrap().into_iter().flatten().collect();
    assert_eq!(cells.len(), params.len());
    let mut table = String::from(
        "| link Mbit/s | RTT ms | loss % | goodput Mbit/s | of link rate | Mathis bound Mbit/s | of Mathis |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut short = Vec::new();
    for c in &cells {
        let of_link = c.goodput / (c.rate * 1e6);
        let mathis = c
            .mathis()
            .map_or_else(|| "—".to_owned(), |m| format!("{:.1}", m / 1e6));
        let of_mathis = c
            .mathis()
            .map_or_else(|| "—".to_owned(), |m| format!("{:.2}", c.goodput / m));
        let note = if c.window_limited() {
            format!(" (window: {:.0})", c.window_limit() / 1e6)
        } else {
            String::new()
        };
        writeln!(
            table,
            "| {:.0} | {} | {:.1} | {:.2} | {:.3}{note} | {mathis} | {of_mathis} |",
            c.rate,
            c.rtt.as_millis(),
            c.loss * 100.0,
            c.goodput / 1e6,
            of_link,
        )
        .unwrap();
        let allowed = (c.rate * 1e6).min(c.window_limit());
        if c.loss == 0.0 && c.goodput < 0.95 * allowed {
            short.push(format!(
                "{} Mbit/s {} ms: {:.1} % of {:.1} Mbit/s",
                c.rate,
                c.rtt.as_millis(),
                100.0 * c.goodput / allowed,
                allowed / 1e6
            ));
        }
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/throughput.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &table).unwrap();
    }
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        short.is_empty(),
        "loss-free cells below 95 % of what the link and window allow: {short:?}\n{table}"
    );
    assert_eq!(
        kept, table,
        "the throughput table changed (run with UPDATE_SNAPSHOTS=1 if that is meant):\n{table}"
    );
}
