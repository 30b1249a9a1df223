//! Properties over random seeds and paths: whatever the loss, reordering, rate, delay, window
//! and the sizes of the application's writes and reads, the bytes delivered are exactly the
//! bytes written, in order, followed by the end of the stream. A failing case prints its seed
//! (the simulator does) and proptest shrinks it.
#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::time::Duration;

use mptcp_sim::Sim;
use mptcp_sim::apps::{BulkSend, Sink};
use mptcp_sim::link::LinkParams;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    len: u64,
    rate_mbit: f64,
    rtt_ms: u64,
    loss: f64,
    jitter_ms: u64,
    reorder: bool,
    write_chunk: usize,
    read_chunk: usize,
    recv_buffer: usize,
    sack: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        0u64..300_000,
        prop_oneof![Just(1.0), Just(10.0), Just(100.0)],
        1u64..120,
        prop_oneof![Just(0.0), 0.0..0.05f64],
        0u64..5,
        any::<bool>(),
        1usize..70_000,
        1usize..70_000,
        prop_oneof![Just(4096usize), Just(65_536), Just(1 << 20)],
        prop_oneof![4 => Just(true), 1 => Just(false)],
    )
        .prop_map(
            |(
                seed,
                len,
                rate_mbit,
                rtt_ms,
                loss,
                jitter_ms,
                reorder,
                write_chunk,
                read_chunk,
                recv_buffer,
                sack,
            )| Case {
                seed,
                len,
                rate_mbit,
                rtt_ms,
                loss,
                jitter_ms,
                reorder,
                write_chunk,
                read_chunk,
                recv_buffer,
                sack,
            },
        )
}

fn run(c: &Case) -> Result<(), TestCaseError> {
    let mut sim = Sim::with_seed("property", c.seed);
    sim.endpoint_config.tcp.recv_buffer = c.recv_buffer;
    sim.endpoint_config.tcp.recv_buffer_max = c.recv_buffer.max(1 << 20);
    sim.endpoint_config.tcp.sack = c.sack;
    let mut params = LinkParams::bdp_queue(c.rate_mbit, Duration::from_millis(c.rtt_ms));
    params.loss = c.loss;
    params.jitter = Duration::from_millis(c.jitter_ms);
    params.reorder = c.reorder;
    let (a, b) = sim.pair(params);
    let sink = Sink::listen(sim.addr(b, 80))
        .seed(c.seed)
        .read_chunk(c.read_chunk);
    let got = sink.state();
    sim.set_app(b, sink);
    let to = sim.addr(b, 80);
    sim.set_app(
        a,
        BulkSend::new(sim.addr(a, 0), to, c.len, c.seed).chunk(c.write_chunk),
    );
    let finished = sim.run_until(|_| got.borrow().finished, Duration::from_secs(600));
    let g = got.borrow();
    prop_assert!(
        finished,
        "not finished after 600 s: {} of {} bytes",
        g.received,
        c.len
    );
    prop_assert_eq!(g.first_bad, None, "a byte differs from what was written");
    prop_assert_eq!(g.received, c.len);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_bytes_delivered_are_the_bytes_written_in_order(c in case()) {
        run(&c)?;
    }
}
