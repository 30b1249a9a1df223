//! Applications for simulated hosts: a bulk sender of a checkable byte pattern and a sink that
//! checks it, each sharing its state with the test through an `Rc<RefCell<_>>`.

use core::net::SocketAddr;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use mptcp_proto::endpoint::{ConnHandle, Endpoint, EndpointEvent};
use mptcp_proto::tcp::{CloseReason, Event, ReadError, WriteError};

use crate::App;

/// Byte `i` of pattern `seed` (splitmix64 of the seed and the 8-byte word index), so a byte
/// lost, repeated or moved is seen.
#[must_use]
pub fn pattern_byte(seed: u64, i: u64) -> u8 {
    let mut z = seed.wrapping_add(i / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z.to_le_bytes()[usize::try_from(i % 8).unwrap_or(0)]
}

/// Fills `buf` with the pattern from offset `from`.
pub fn fill_pattern(seed: u64, from: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(seed, from + k as u64);
    }
}

/// What a [`BulkSend`] did.
#[derive(Debug, Clone, Default)]
pub struct SendState {
    /// Its connection.
    pub conn: Option<ConnHandle>,
    /// When the handshake completed.
    pub connected_at: Option<Instant>,
    /// Bytes the connection took.
    pub written: u64,
    /// Whether it closed its sending side.
    pub closed: bool,
    /// How the connection ended.
    pub ended: Option<CloseReason>,
    /// Bytes it read from the peer (it reads and checks nothing, only counts).
    pub received: u64,
}

/// Connects and sends `total` bytes of a pattern, then closes its sending side.
#[derive(Debug)]
pub struct BulkSend {
    local: SocketAddr,
    remote: SocketAddr,
    total: u64,
    seed: u64,
    chunk: usize,
    close_when_done: bool,
    state: Rc<RefCell<SendState>>,
    buf: Vec<u8>,
}

impl BulkSend {
    /// Sends `total` bytes of pattern `seed` from `local` (port 0: ephemeral) to `remote`.
    #[must_use]
    pub fn new(local: SocketAddr, remote: SocketAddr, total: u64, seed: u64) -> Self {
        Self {
            local,
            remote,
            total,
            seed,
            chunk: 64 * 1024,
            close_when_done: true,
            state: Rc::default(),
            buf: Vec::new(),
        }
    }

    /// Writes at most `chunk` bytes per call.
    #[must_use]
    pub fn chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// Leaves the connection open after the last byte.
    #[must_use]
    pub fn keep_open(mut self) -> Self {
        self.close_when_done = false;
        self
    }

    /// The state shared with the test.
    #[must_use]
    pub fn state(&self) -> Rc<RefCell<SendState>> {
        Rc::clone(&self.state)
    }
}

impl App for BulkSend {
    fn poll(&mut self, now: Instant, ep: &mut Endpoint) {
        let mut st = self.state.borrow_mut();
        let h = match st.conn {
            Some(h) => h,
            None => match ep.connect(now, self.local, self.remote) {
                Ok(h) => {
                    st.conn = Some(h);
                    h
                }
                Err(_) => return,
            },
        };
        while let Some(ev) = ep.poll_event() {
            match ev {
                EndpointEvent::Connection(c, Event::Connected) if c == h => {
                    st.connected_at = Some(now);
                }
                EndpointEvent::Connection(c, Event::Closed(r)) if c == h => st.ended = Some(r),
                _ => {}
            }
        }
        let Some(conn) = ep.conn_mut(h) else { return };
        while st.written < self.total {
            let n = usize::try_from(self.total - st.written)
                .unwrap_or(usize::MAX)
                .min(self.chunk);
            self.buf.resize(n, 0);
            fill_pattern(self.seed, st.written, &mut self.buf);
            match conn.write(&self.buf) {
                Ok(k) => st.written += k as u64,
                Err(WriteError::Blocked | WriteError::Finished | WriteError::Closed(_)) => break,
            }
        }
        if st.written == self.total && self.close_when_done && !st.closed {
            conn.close();
            st.closed = true;
        }
        let mut sink = [0u8; 4096];
        while let Ok(n) = conn.read(&mut sink) {
            st.received += n as u64;
        }
    }
}

/// What a [`Sink`] (or an MPTCP sink, with a `ConnId`) received.
#[derive(Debug, Clone)]
pub struct SinkState<C = ConnHandle> {
    /// The connection it accepted.
    pub conn: Option<C>,
    /// Bytes read.
    pub received: u64,
    /// The first byte that was not the pattern's.
    pub first_bad: Option<u64>,
    /// The peer finished (FIN) and every byte before it was read.
    pub finished: bool,
    /// How the connection ended, if it did.
    pub ended: Option<CloseReason>,
    /// `(time, bytes so far)` after each read.
    pub samples: Vec<(Instant, u64)>,
}

impl<C> Default for SinkState<C> {
    fn default() -> Self {
        Self {
            conn: None,
            received: 0,
            first_bad: None,
            finished: false,
            ended: None,
            samples: Vec::new(),
        }
    }
}

impl<C> SinkState<C> {
    /// Takes `data`, the next bytes read at `now`, checking them against pattern `seed`
    /// (`scratch` at least as long).
    pub fn take(&mut self, now: Instant, seed: u64, data: &[u8], scratch: &mut [u8]) {
        let n = data.len();
        if self.first_bad.is_none() {
            fill_pattern(seed, self.received, &mut scratch[..n]);
            if let Some(k) = data.iter().zip(&scratch[..n]).position(|(a, b)| a != b) {
                self.first_bad = Some(self.received + k as u64);
            }
        }
        self.received += n as u64;
        self.samples.push((now, self.received));
    }

    /// Exactly the `len` bytes of the pattern arrived, in order, then the FIN.
    #[must_use]
    pub fn intact(&self, len: u64) -> bool {
        self.first_bad.is_none() && self.received == len && self.finished
    }

    /// Bytes received by time `t`.
    #[must_use]
    pub fn bytes_at(&self, t: Instant) -> u64 {
        let i = self.samples.partition_point(|s| s.0 <= t);
        if i == 0 { 0 } else { self.samples[i - 1].1 }
    }

    /// Goodput between `from` and `to`, bit/s: the least-squares slope of bytes over time,
    /// which a burst at either edge (held data released when a hole fills) barely moves.
    #[must_use]
    pub fn goodput_slope(&self, from: Instant, to: Instant) -> f64 {
        let pts: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.0 >= from && s.0 <= to)
            .map(|s| (s.0.duration_since(from).as_secs_f64(), s.1 as f64))
            .collect();
        if pts.len() < 2 {
            return 0.0;
        }
        let n = pts.len() as f64;
        let (mx, my) = pts
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
        let (num, den) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
            (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
        });
        if den > 0.0 { 8.0 * num / den } else { 0.0 }
    }

    /// Goodput between `from` and `to`, bit/s: bytes received in that time.
    #[must_use]
    pub fn goodput(&self, from: Instant, to: Instant) -> f64 {
        let secs = to.saturating_duration_since(from).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        (self.bytes_at(to) - self.bytes_at(from)) as f64 * 8.0 / secs
    }
}

/// Listens, accepts one connection, reads and checks a pattern, and closes when the peer did.
#[derive(Debug)]
pub struct Sink {
    addr: SocketAddr,
    seed: u64,
    listening: bool,
    paused_until: Option<Instant>,
    state: Rc<RefCell<SinkState>>,
    buf: Vec<u8>,
    expect: Vec<u8>,
}

impl Sink {
    /// A sink of pattern 1 on `addr`.
    #[must_use]
    pub fn listen(addr: SocketAddr) -> Self {
        Self {
            addr,
            seed: 1,
            listening: false,
            paused_until: None,
            state: Rc::default(),
            buf: vec![0; 64 * 1024],
            expect: vec![0; 64 * 1024],
        }
    }

    /// Checks pattern `seed`.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Reads at most `n` bytes at a time.
    #[must_use]
    pub fn read_chunk(mut self, n: usize) -> Self {
        self.buf = vec![0; n.max(1)];
        self.expect = vec![0; n.max(1)];
        self
    }

    /// Reads nothing until `t` (so its receive window fills up and closes).
    #[must_use]
    pub fn pause_until(mut self, t: Instant) -> Self {
        self.paused_until = Some(t);
        self
    }

    /// The state shared with the test.
    #[must_use]
    pub fn state(&self) -> Rc<RefCell<SinkState>> {
        Rc::clone(&self.state)
    }
}

impl App for Sink {
    fn poll(&mut self, now: Instant, ep: &mut Endpoint) {
        if !self.listening {
            self.listening = ep.listen(self.addr).is_ok();
        }
        let mut st = self.state.borrow_mut();
        while let Some(ev) = ep.poll_event() {
            match ev {
                EndpointEvent::Incoming(l) if st.conn.is_none() => st.conn = ep.accept(l),
                EndpointEvent::Connection(c, Event::Closed(r)) if Some(c) == st.conn => {
                    st.ended = Some(r);
                }
                _ => {}
            }
        }
        match self.paused_until {
            Some(t) if now < t => return,
            Some(_) => self.paused_until = None,
            None => {}
        }
        let Some(h) = st.conn else { return };
        let Some(conn) = ep.conn_mut(h) else { return };
        loop {
            match conn.read(&mut self.buf) {
                Ok(n) => st.take(now, self.seed, &self.buf[..n], &mut self.expect),
                Err(ReadError::Finished) => {
                    if !st.finished {
                        st.finished = true;
                        conn.close();
                    }
                    break;
                }
                Err(ReadError::Blocked | ReadError::Closed(_)) => break,
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        self.paused_until
    }
}

/// Applications over an MPTCP [`Stack`](mptcp_proto::mptcp::Stack): the same pattern sender
/// and checking sink, on MPTCP connections.
pub mod mptcp {
    use core::net::SocketAddr;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Instant;

    use mptcp_proto::mptcp::{ConnEvent, ConnId, Path, Stack, StackEvent};
    use mptcp_proto::tcp::{CloseReason, ReadError};

    use super::fill_pattern;
    use crate::App;

    /// What an [`MpSend`] did.
    #[derive(Debug, Clone, Default)]
    pub struct MpSendState {
        /// Its connection.
        pub conn: Option<ConnId>,
        /// When the first subflow's handshake completed.
        pub connected_at: Option<Instant>,
        /// The connection fell back to TCP.
        pub fell_back: bool,
        /// Bytes the connection took.
        pub written: u64,
        /// Whether it closed its sending side.
        pub closed: bool,
        /// How the connection ended.
        pub ended: Option<CloseReason>,
        /// Subflows that came up after the first.
        pub joins: u32,
    }

    /// Connects over `paths` and sends `total` bytes of pattern `seed`, then closes.
    #[derive(Debug)]
    pub struct MpSend {
        paths: Vec<Path>,
        remote: SocketAddr,
        total: u64,
        seed: u64,
        state: Rc<RefCell<MpSendState>>,
        buf: Vec<u8>,
        start_at: Option<Instant>,
    }

    impl MpSend {
        /// Sends `total` bytes of pattern `seed` to `remote`, the first subflow from
        /// `paths[0]`.
        #[must_use]
        pub fn new(paths: Vec<Path>, remote: SocketAddr, total: u64, seed: u64) -> Self {
            Self {
                paths,
                remote,
                total,
                seed,
                state: Rc::default(),
                buf: Vec::new(),
                start_at: None,
            }
        }

        /// Connects at `t` rather than at once.
        #[must_use]
        pub fn start_at(mut self, t: Instant) -> Self {
            self.start_at = Some(t);
            self
        }

        /// The state shared with the test.
        #[must_use]
        pub fn state(&self) -> Rc<RefCell<MpSendState>> {
            Rc::clone(&self.state)
        }
    }

    impl App<Stack> for MpSend {
        fn poll(&mut self, now: Instant, st_: &mut Stack) {
            if self.start_at.is_some_and(|t| now < t) {
                return;
            }
            let mut st = self.state.borrow_mut();
            let id = match st.conn {
                Some(id) => id,
                None => match st_.connect(now, &self.paths, self.remote) {
                    Ok(id) => {
                        st.conn = Some(id);
                        id
                    }
                    Err(_) => return,
                },
            };
            while let Some(ev) = st_.poll_event() {
                if let StackEvent::Conn(c, e) = ev {
                    if c != id {
                        continue;
                    }
                    match e {
                        ConnEvent::Connected => st.connected_at = Some(now),
                        ConnEvent::Fallback => st.fell_back = true,
                        ConnEvent::SubflowUp { .. } => st.joins += 1,
                        ConnEvent::Closed(r) => st.ended = Some(r),
                        _ => {}
                    }
                }
            }
            while st.written < self.total {
                let n = usize::try_from(self.total - st.written)
                    .unwrap_or(usize::MAX)
                    .min(64 * 1024);
                self.buf.resize(n, 0);
                fill_pattern(self.seed, st.written, &mut self.buf);
                match st_.write(id, &self.buf) {
                    Ok(k) if k > 0 => st.written += k as u64,
                    _ => break,
                }
            }
            if st.written == self.total && !st.closed {
                st_.close(id);
                st.closed = true;
            }
            let mut sink = [0u8; 4096];
            while let Ok(n) = st_.read(id, &mut sink) {
                if n == 0 {
                    break;
                }
            }
        }

        fn next_wake(&self) -> Option<Instant> {
            self.start_at
        }
    }

    /// Interactive traffic: `size` bytes of pattern `seed` every `interval`, `count` times, with
    /// Nagle off (as ssh sets `TCP_NODELAY`); when each write was made is recorded.
    #[derive(Debug)]
    pub struct MpPaced {
        paths: Vec<Path>,
        remote: SocketAddr,
        size: usize,
        interval: core::time::Duration,
        count: usize,
        seed: u64,
        /// The first write, once connected and this long after.
        first_after: core::time::Duration,
        conn: Option<ConnId>,
        next_at: Option<Instant>,
        written_at: Rc<RefCell<Vec<Instant>>>,
        buf: Vec<u8>,
    }

    impl MpPaced {
        /// `count` writes of `size` bytes, `interval` apart, the first `first_after` the
        /// connection is up.
        #[must_use]
        pub fn new(
            paths: Vec<Path>,
            remote: SocketAddr,
            (size, interval, count): (usize, core::time::Duration, usize),
            first_after: core::time::Duration,
            seed: u64,
        ) -> Self {
            Self {
                paths,
                remote,
                size,
                interval,
                count,
                seed,
                first_after,
                conn: None,
                next_at: None,
                written_at: Rc::default(),
                buf: Vec::new(),
            }
        }

        /// When each write was made (shared with the test).
        #[must_use]
        pub fn written_at(&self) -> Rc<RefCell<Vec<Instant>>> {
            Rc::clone(&self.written_at)
        }
    }

    impl App<Stack> for MpPaced {
        fn poll(&mut self, now: Instant, st: &mut Stack) {
            let id = match self.conn {
                Some(id) => id,
                None => match st.connect(now, &self.paths, self.remote) {
                    Ok(id) => {
                        st.set_nodelay(id, true);
                        self.conn = Some(id);
                        id
                    }
                    Err(_) => return,
                },
            };
            while let Some(ev) = st.poll_event() {
                if let StackEvent::Conn(c, ConnEvent::Connected) = ev {
                    if c == id && self.next_at.is_none() {
                        self.next_at = Some(now + self.first_after);
                    }
                }
            }
            let mut written = self.written_at.borrow_mut();
            while written.len() < self.count && self.next_at.is_some_and(|t| now >= t) {
                let from = (written.len() * self.size) as u64;
                self.buf.resize(self.size, 0);
                fill_pattern(self.seed, from, &mut self.buf);
                match st.write(id, &self.buf) {
                    Ok(n) if n == self.size => {}
                    // A full buffer: the write waits (and so does its delay's start).
                    _ => break,
                }
                written.push(now);
                self.next_at = self.next_at.map(|t| t + self.interval);
            }
            let mut sink = [0u8; 4096];
            while let Ok(n) = st.read(id, &mut sink) {
                if n == 0 {
                    break;
                }
            }
        }

        fn next_wake(&self) -> Option<Instant> {
            self.next_at
                .filter(|_| self.written_at.borrow().len() < self.count)
        }
    }

    /// What an [`MpSink`] received.
    pub type MpSinkState = super::SinkState<ConnId>;

    /// Listens, accepts one connection, reads and checks pattern `seed`, closes at the end.
    #[derive(Debug)]
    pub struct MpSink {
        addr: SocketAddr,
        seed: u64,
        listening: bool,
        state: Rc<RefCell<MpSinkState>>,
        buf: Vec<u8>,
        expect: Vec<u8>,
    }

    impl MpSink {
        /// A sink of pattern `seed` on `addr`.
        #[must_use]
        pub fn listen(addr: SocketAddr, seed: u64) -> Self {
            Self {
                addr,
                seed,
                listening: false,
                state: Rc::default(),
                buf: vec![0; 64 * 1024],
                expect: vec![0; 64 * 1024],
            }
        }

        /// The state shared with the test.
        #[must_use]
        pub fn state(&self) -> Rc<RefCell<MpSinkState>> {
            Rc::clone(&self.state)
        }
    }

    impl App<Stack> for MpSink {
        fn poll(&mut self, now: Instant, stack: &mut Stack) {
            if !self.listening {
                self.listening = stack.listen(self.addr).is_ok();
            }
            let mut st = self.state.borrow_mut();
            while let Some(ev) = stack.poll_event() {
                match ev {
                    StackEvent::Incoming(l) if st.conn.is_none() => st.conn = stack.accept(l),
                    StackEvent::Conn(c, ConnEvent::Closed(r)) if Some(c) == st.conn => {
                        st.ended = Some(r);
                    }
                    _ => {}
                }
            }
            let Some(id) = st.conn else { return };
            loop {
                match stack.read(id, &mut self.buf) {
                    Ok(n) if n > 0 => st.take(now, self.seed, &self.buf[..n], &mut self.expect),
                    Err(ReadError::Finished) => {
                        if !st.finished {
                            st.finished = true;
                            stack.close(id);
                        }
                        break;
                    }
                    Ok(_) | Err(ReadError::Blocked | ReadError::Closed(_)) => break,
                }
            }
        }
    }
}
