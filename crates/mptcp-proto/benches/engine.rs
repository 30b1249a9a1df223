//! What the TCP engine itself costs: two endpoints on one core, a sender and a receiver,
//! exchanging every packet through memory with no I/O, no loss and no delay (a loopback-like
//! link), while the sender's application writes and the receiver's reads as fast as they
//! can. Reported as bytes of application data per second, for 1500-byte packets and for
//! loopback's 64 KiB ones. Run with `cargo bench -p mptcp-proto --bench engine`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark program: fail loudly"
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mptcp_proto::endpoint::{ConnHandle, Endpoint, EndpointConfig};

/// A connected pair and a virtual clock that moves 1 µs per packet exchanged.
struct Pair {
    a: Endpoint,
    b: Endpoint,
    ca: ConnHandle,
    cb: ConnHandle,
    now: Instant,
    buf: Vec<u8>,
    chunk: Vec<u8>,
    sink: Vec<u8>,
}

impl Pair {
    fn new(mtu: usize) -> Self {
        let now = Instant::now();
        let cfg = |seed| {
            let mut c = EndpointConfig::default();
            c.tcp.mtu = mtu;
            c.seed = seed;
            c.tcp.recv_buffer = 4 << 20;
            c.tcp.recv_buffer_max = 4 << 20;
            c.tcp.send_buffer = 4 << 20;
            c
        };
        let mut a = Endpoint::new(cfg(1), now);
        let mut b = Endpoint::new(cfg(2), now);
        let (la, lb): (SocketAddr, SocketAddr) = (
            "10.0.0.1:0".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        );
        b.listen(lb).unwrap();
        let ca = a.connect(now, la, lb).unwrap();
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
        p.pump();
        p.cb = p.b.accept(lb).expect("accepted");
        p
    }

    /// Moves packets both ways until neither side has anything to send.
    fn pump(&mut self) -> usize {
        let mut n = 0;
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit(self.now, &mut self.buf) {
                let _ = self.b.handle_packet(self.now, &self.buf[..t.len]);
                moved = true;
                n += 1;
            }
            while let Some(t) = self.b.poll_transmit(self.now, &mut self.buf) {
                let _ = self.a.handle_packet(self.now, &self.buf[..t.len]);
                moved = true;
                n += 1;
            }
            self.now += Duration::from_micros(1);
            if !moved {
                return n;
            }
        }
    }

    /// Sends `total` bytes from a to b; returns when b's application has read them.
    fn transfer(&mut self, total: usize) {
        let (mut written, mut read) = (0, 0);
        while read < total {
            if written < total {
                let want = (total - written).min(self.chunk.len());
                if let Ok(k) = self.a.conn_mut(self.ca).unwrap().write(&self.chunk[..want]) {
                    written += k;
                }
            }
            self.pump();
            while let Ok(k) = self.b.conn_mut(self.cb).unwrap().read(&mut self.sink) {
                read += k;
            }
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
        }
    }
}

fn engine(c: &mut Criterion) {
    const PER_ITER: usize = 16 << 20;
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Bytes(PER_ITER as u64));
    for (name, mtu) in [("mtu-1500", 1500), ("mtu-65535-loopback", 65_535)] {
        let mut p = Pair::new(mtu);
        g.bench_function(name, |b| b.iter(|| p.transfer(PER_ITER)));
    }
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
