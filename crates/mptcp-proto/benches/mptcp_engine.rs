//! What the MPTCP engine costs: two stacks on one core, a client with two subflows (two local
//! addresses) and a server, exchanging every packet through memory with no I/O, no loss and
//! no delay, while the client's application writes and the server's reads as fast as they
//! can; the same with MPTCP off (one plain TCP connection) for comparison in the same run.
//! The clock moves 1 µs per round of packets, and jumps to the next timer when nothing moves
//! (a paced subflow waiting for its next slot), as a driver sleeps until `poll_timeout`.
//! Reported as bytes of application data per second for 1500-byte packets, for each scheduler
//! (`redundant` sends every byte on both subflows, so it moves half as much for the same
//! work) and for each congestion control with the default scheduler (the coupled ones read
//! their siblings' windows on every ACK). Run with `cargo bench -p mptcp-proto --bench mptcp_engine`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark program: fail loudly"
)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mptcp_proto::mptcp::{Congestion, ConnId, Path, SchedulerKind, Stack, StackConfig};

struct Pair {
    a: Stack,
    b: Stack,
    ca: ConnId,
    cb: ConnId,
    now: Instant,
    buf: Vec<u8>,
    chunk: Vec<u8>,
    sink: Vec<u8>,
}

impl Pair {
    fn new(mptcp: bool, scheduler: SchedulerKind, congestion: Congestion) -> Self {
        let now = Instant::now();
        let cfg = |seed| {
            let mut c = StackConfig::default();
            c.endpoint.seed = seed;
            c.endpoint.tcp.recv_buffer = 4 << 20;
            c.endpoint.tcp.recv_buffer_max = 4 << 20;
            c.endpoint.tcp.send_buffer = 4 << 20;
            c.conn.send_buffer = 8 << 20;
            c.conn.recv_buffer = 8 << 20;
            c.conn.scheduler = scheduler;
            c.conn.congestion = congestion;
            c.no_mptcp = !mptcp;
            c
        };
        let mut a = Stack::new(cfg(1), now);
        let mut b = Stack::new(cfg(2), now);
        let server: SocketAddr = "10.9.9.9:80".parse().unwrap();
        b.listen(server).unwrap();
        let paths: Vec<Path> = ["10.0.0.1", "10.0.1.1"]
            .iter()
            .take(if mptcp { 2 } else { 1 })
            .map(|s| Path {
                local: s.parse::<IpAddr>().unwrap(),
                backup: false,
            })
            .collect();
        let ca = a.connect(now, &paths, server).unwrap();
        let mut p = Pair {
            a,
            b,
            ca,
            cb: ca,
            now,
            buf: vec![0; 65_536],
            chunk: vec![7; 256 * 1024],
            sink: vec![0; 256 * 1024],
        };
        for _ in 0..50 {
            p.pump();
            p.now += Duration::from_millis(1);
            p.a.handle_timeout(p.now);
            p.b.handle_timeout(p.now);
        }
        p.cb = p.b.accept(server).expect("accepted");
        p
    }

    /// Moves packets both ways until neither side has anything to send; returns whether any
    /// moved.
    fn pump(&mut self) -> bool {
        let mut any = false;
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit(self.now, &mut self.buf) {
                let _ = self.b.handle_packet(self.now, &self.buf[..t.len]);
                moved = true;
            }
            while let Some(t) = self.b.poll_transmit(self.now, &mut self.buf) {
                let _ = self.a.handle_packet(self.now, &self.buf[..t.len]);
                moved = true;
            }
            self.now += Duration::from_micros(1);
            if !moved {
                return any;
            }
            any = true;
        }
    }

    /// Nothing moved: the clock jumps to the earliest timer of either side (a pacer's next
    /// segment, a delayed ACK), as a driver sleeps until then; idle polling is not the
    /// engine's cost.
    fn wait(&mut self) {
        let next = [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        if let Some(t) = next.filter(|t| *t > self.now) {
            self.now = t;
        }
    }

    fn transfer(&mut self, total: usize) {
        let (mut written, mut read) = (0, 0);
        while read < total {
            let mut progress = false;
            if written < total {
                let want = (total - written).min(self.chunk.len());
                if let Ok(k) = self.a.write(self.ca, &self.chunk[..want]) {
                    written += k;
                    progress |= k > 0;
                }
            }
            progress |= self.pump();
            while let Ok(k) = self.b.read(self.cb, &mut self.sink) {
                if k == 0 {
                    break;
                }
                read += k;
                progress = true;
            }
            if !progress {
                self.wait();
            }
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
        }
    }
}

fn engine(c: &mut Criterion) {
    const PER_ITER: usize = 16 << 20;
    let mut g = c.benchmark_group("mptcp-engine");
    g.throughput(Throughput::Bytes(PER_ITER as u64));
    let cases = SchedulerKind::ALL
        .into_iter()
        .map(|k| (format!("two-subflows/{k}"), true, k, Congestion::default()))
        .chain(
            Congestion::ALL
                .into_iter()
                .filter(|&k| k != Congestion::default())
                .map(|k| {
                    let name = format!("two-subflows/{}+{k}", SchedulerKind::default());
                    (name, true, SchedulerKind::default(), k)
                }),
        )
        .chain([(
            "plain-tcp-through-the-stack".to_owned(),
            false,
            SchedulerKind::default(),
            Congestion::default(),
        )]);
    for (name, mptcp, scheduler, congestion) in cases {
        let mut p = Pair::new(mptcp, scheduler, congestion);
        assert_eq!(p.a.subflows(p.ca).len(), if mptcp { 2 } else { 1 });
        g.bench_function(&name, |b| b.iter(|| p.transfer(PER_ITER)));
    }
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
