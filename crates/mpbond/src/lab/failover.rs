//! Measuring what a line failure does to a transfer: a server on the web host that sends a
//! checkable byte pattern, and a client on the LAN host that reads it with a timestamp per read
//! while scheduled actions (a line blackholed, taken down, brought back) happen at set times;
//! for an upload, the same the other way round (the client sends, a sink on the web host reads).
//! From the [`Timeline`]: whether every byte arrived once and in order, the longest stall, and
//! goodput in any window. Used by the path manager's tests, its benchmark and `mpbond bench`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::netns;

/// Word `w` (bytes `8w..8w+8`) of pattern `seed`: splitmix64 of the seed and the word index.
fn pattern_word(seed: u64, w: u64) -> [u8; 8] {
    let mut z = seed.wrapping_add(w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z.to_le_bytes()
}

/// Byte `i` of pattern `seed`: splitmix64 of the seed and the 8-byte word index, so a byte
/// lost, repeated or moved is seen.
#[must_use]
pub fn pattern_byte(seed: u64, i: u64) -> u8 {
    pattern_word(seed, i / 8)[usize::try_from(i % 8).unwrap_or(0)]
}

/// Fills `buf` with the pattern from offset `from`, a word at a time: both ends of a benchmark
/// run this on every byte, and its CPU time counts in the benchmark's CPU figures.
pub fn fill(seed: u64, from: u64, buf: &mut [u8]) {
    let mut pos = from;
    let mut rest = buf;
    while !rest.is_empty() {
        let word = pattern_word(seed, pos / 8);
        let off = usize::try_from(pos % 8).unwrap_or(0);
        let n = (8 - off).min(rest.len());
        let (head, tail) = rest.split_at_mut(n);
        head.copy_from_slice(&word[off..off + n]);
        pos += n as u64;
        rest = tail;
    }
}

/// How a pattern client and server talk: plain TCP or MPTCP (`IPPROTO_MPTCP`, which falls back
/// to TCP when the peer has no MPTCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// Multipath TCP.
    Mptcp,
}

impl Transport {
    fn protocol(self) -> Option<socket2::Protocol> {
        match self {
            Transport::Tcp => None,
            Transport::Mptcp => Some(socket2::Protocol::MPTCP),
        }
    }
}

/// Connects to `addr` over `transport` from the calling thread's namespace.
///
/// # Errors
/// If the socket cannot be made or the connection fails within `timeout`.
pub fn connect(addr: SocketAddr, transport: Transport, timeout: Duration) -> io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        transport.protocol(),
    )?;
    s.connect_timeout(&addr.into(), timeout)?;
    Ok(s.into())
}

/// A listening socket for a pattern server in the calling thread's namespace.
fn pattern_listener(addr: SocketAddr, transport: Transport) -> io::Result<TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        transport.protocol(),
    )?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(TcpListener::from(s))
}

/// Starts the pattern server in host netns `ns` on `addr`, for the life of the process. A
/// client sends 16 bytes (length and seed, little-endian u64; length `u64::MAX`: until the
/// client closes) and gets that much of the pattern.
///
/// # Errors
/// If the namespace or the port cannot be had.
pub fn serve_pattern(ns: &str, addr: SocketAddr) -> io::Result<()> {
    let ns = ns.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let l = netns::enter(&ns).and_then(|()| pattern_listener(addr, Transport::Tcp));
        let l = match l {
            Ok(l) => {
                let _ = tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        for c in l.incoming().flatten() {
            std::thread::spawn(move || send_pattern(c, None));
        }
    });
    rx.recv()
        .unwrap_or_else(|_| Err(io::Error::other("pattern server thread died")))
}

/// A pattern server (see [`serve_pattern`]) that stops when dropped: for a program that builds
/// and removes many labs, where a server per lab living as long as the process would pile up.
#[derive(Debug)]
pub struct PatternServer {
    stop: Arc<AtomicBool>,
    listener: Arc<TcpListener>,
    thread: Option<JoinHandle<()>>,
}

impl PatternServer {
    /// Starts serving the pattern in host netns `ns` on `addr` over `transport`.
    ///
    /// # Errors
    /// If the namespace or the port cannot be had.
    pub fn start(ns: &str, addr: SocketAddr, transport: Transport) -> io::Result<Self> {
        Self::start_with(ns, addr, transport, None)
    }

    /// Like [`PatternServer::start`], but each connection is reset (RST) after `after` bytes of
    /// the pattern: a server that fails mid-transfer.
    ///
    /// # Errors
    /// If the namespace or the port cannot be had.
    pub fn start_resetting(
        ns: &str,
        addr: SocketAddr,
        transport: Transport,
        after: u64,
    ) -> io::Result<Self> {
        Self::start_with(ns, addr, transport, Some(after))
    }

    fn start_with(
        ns: &str,
        addr: SocketAddr,
        transport: Transport,
        reset_after: Option<u64>,
    ) -> io::Result<Self> {
        let listener = Arc::new(netns::in_netns(ns, || pattern_listener(addr, transport))??);
        let stop = Arc::new(AtomicBool::new(false));
        let (l, flag) = (Arc::clone(&listener), Arc::clone(&stop));
        // The listening socket belongs to the namespace it was made in; the threads that
        // serve its connections need not be there.
        let thread = std::thread::spawn(move || {
            for c in l.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(c) = c {
                    std::thread::spawn(move || send_pattern(c, reset_after));
                }
            }
        });
        Ok(Self {
            stop,
            listener,
            thread: Some(thread),
        })
    }
}

impl Drop for PatternServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Shutting a listening socket down wakes its blocked `accept` with an error.
        // SAFETY: the listener is open for as long as `self.listener` lives.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn send_pattern(mut c: TcpStream, reset_after: Option<u64>) -> io::Result<()> {
    let mut req = [0u8; 16];
    c.read_exact(&mut req)?;
    let mut len = u64::from_le_bytes(req[..8].try_into().unwrap_or_default());
    if let Some(after) = reset_after {
        len = len.min(after);
        // Closing with SO_LINGER 0 sends a RST (what was sent and not yet delivered is lost).
        socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO))?;
    }
    let seed = u64::from_le_bytes(req[8..].try_into().unwrap_or_default());
    write_pattern(&mut c, seed, len)
}

/// Writes `len` bytes of pattern `seed` to `c`.
fn write_pattern(c: &mut TcpStream, seed: u64, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < len {
        let n = usize::try_from((len - sent).min(buf.len() as u64)).unwrap_or(buf.len());
        fill(seed, sent, &mut buf[..n]);
        c.write_all(&buf[..n])?;
        sent += n as u64;
    }
    Ok(())
}

/// Runs each `schedule` action at its time after `t0`, on a thread of its own.
fn run_schedule(t0: Instant, schedule: Vec<Scheduled>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut schedule = schedule;
        schedule.sort_by_key(|s| s.0);
        for (at, f) in schedule {
            std::thread::sleep(at.saturating_sub(t0.elapsed()));
            f();
        }
    })
}

/// What a client read, when.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// `(time since the request, bytes so far)` after each read.
    pub samples: Vec<(Duration, u64)>,
    /// Bytes read in all.
    pub bytes: u64,
    /// The first byte that differed from the pattern, if any.
    pub first_bad: Option<u64>,
    /// Time from the request to the end.
    pub elapsed: Duration,
}

impl Timeline {
    /// Every byte arrived once, in order, and there were `len` of them.
    #[must_use]
    pub fn intact(&self, len: u64) -> bool {
        self.first_bad.is_none() && self.bytes == len
    }

    /// The longest time without a byte between `from` and the last byte: `(when it began,
    /// how long)`.
    #[must_use]
    pub fn longest_stall(&self, from: Duration) -> (Duration, Duration) {
        self.samples
            .windows(2)
            .filter(|w| w[1].0 >= from)
            .map(|w| (w[0].0, w[1].0.saturating_sub(w[0].0)))
            .max_by_key(|&(_, gap)| gap)
            .unwrap_or_default()
    }

    /// Bytes received by time `t`.
    #[must_use]
    pub fn bytes_at(&self, t: Duration) -> u64 {
        match self.samples.binary_search_by(|s| s.0.cmp(&t)) {
            Ok(i) => self.samples[i].1,
            Err(0) => 0,
            Err(i) => self.samples[i - 1].1,
        }
    }

    /// Goodput between `from` and `to`, bit/s.
    #[must_use]
    pub fn goodput(&self, from: Duration, to: Duration) -> f64 {
        let secs = to.saturating_sub(from).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        (self.bytes_at(to).saturating_sub(self.bytes_at(from))) as f64 * 8.0 / secs
    }

    /// The first time at or after `from` from which the goodput over the next `window` is at
    /// least `bps`: when a transfer was back to that rate.
    #[must_use]
    pub fn recovers(&self, from: Duration, window: Duration, bps: f64) -> Option<Duration> {
        self.samples
            .iter()
            .map(|s| s.0)
            .filter(|&t| t >= from && t + window <= self.elapsed)
            .find(|&t| self.goodput(t, t + window) >= bps)
    }

    /// The lowest goodput of the `bin`-long spans from `from` to `to`, bit/s.
    #[must_use]
    pub fn lowest(&self, from: Duration, to: Duration, bin: Duration) -> f64 {
        let mut t = from;
        let mut low = f64::INFINITY;
        while t + bin <= to && !bin.is_zero() {
            low = low.min(self.goodput(t, t + bin));
            t += bin;
        }
        low
    }
}

/// An action at a time after the download started.
pub type Scheduled = (Duration, Box<dyn FnOnce() + Send>);

/// From host netns `ns`, downloads `len` bytes of pattern `seed` from a [`serve_pattern`]
/// server at `addr` (`len` `u64::MAX`: for `duration`), running each `schedule` action at its
/// time. Reads time out after 60 s.
///
/// # Errors
/// If the connection fails or a read times out.
pub fn download(
    ns: &str,
    addr: SocketAddr,
    len: u64,
    seed: u64,
    duration: Option<Duration>,
    schedule: Vec<Scheduled>,
) -> io::Result<Timeline> {
    download_over(Transport::Tcp, ns, addr, len, seed, duration, schedule)
}

/// [`download`] over `transport`.
///
/// # Errors
/// If the connection fails or a read times out.
pub fn download_over(
    transport: Transport,
    ns: &str,
    addr: SocketAddr,
    len: u64,
    seed: u64,
    duration: Option<Duration>,
    schedule: Vec<Scheduled>,
) -> io::Result<Timeline> {
    netns::in_netns(ns, move || -> io::Result<Timeline> {
        let mut c = connect(addr, transport, Duration::from_secs(20))?;
        c.set_read_timeout(Some(Duration::from_secs(60)))?;
        request(&mut c, len, seed)?;
        let t0 = Instant::now();
        let actions = run_schedule(t0, schedule);
        let t = receive(&mut c, t0, len, seed, duration);
        drop(c);
        let _ = actions.join();
        t
    })?
}

/// From host netns `ns`, uploads `len` bytes of pattern `seed` to a sink that this call starts
/// on `sink` in host netns `sink_ns`, running each `schedule` action at its time. The sink checks
/// every byte and keeps the timeline: stalls are seen where the bytes arrive. Reads and writes
/// time out after 60 s.
///
/// # Errors
/// If the sink cannot listen, the connection fails, or a read or write times out.
pub fn upload(
    ns: &str,
    sink_ns: &str,
    sink: SocketAddr,
    len: u64,
    seed: u64,
    schedule: Vec<Scheduled>,
) -> io::Result<Timeline> {
    let listener = netns::in_netns(sink_ns, || pattern_listener(sink, Transport::Tcp))??;
    let t0 = Instant::now();
    let receiver = std::thread::spawn(move || -> io::Result<Timeline> {
        let (mut c, _) = listener.accept()?;
        c.set_read_timeout(Some(Duration::from_secs(60)))?;
        let t = receive(&mut c, t0, len, seed, None)?;
        // The end: the sender waits for it, so its close cannot cut what is still in flight.
        c.shutdown(std::net::Shutdown::Write)?;
        Ok(t)
    });
    let sent = netns::in_netns(ns, move || -> io::Result<()> {
        let mut c = connect(sink, Transport::Tcp, Duration::from_secs(20))?;
        c.set_write_timeout(Some(Duration::from_secs(60)))?;
        c.set_read_timeout(Some(Duration::from_secs(60)))?;
        let actions = run_schedule(t0, schedule);
        write_pattern(&mut c, seed, len)?;
        c.shutdown(std::net::Shutdown::Write)?;
        let _ = c.read(&mut [0u8; 1])?;
        let _ = actions.join();
        Ok(())
    })?;
    let got = receiver
        .join()
        .map_err(|_| io::Error::other("the sink thread panicked"))?;
    sent?;
    got
}

/// One short request from the calling thread's namespace: connects to a [`serve_pattern`]
/// server at `addr` over `transport` and reads `len` bytes of pattern `seed`. The timeline
/// starts before the connection is made, so `elapsed` is the request's completion time as a
/// user sees it. Reads time out after 30 s.
///
/// # Errors
/// If the connection fails or a read times out.
pub fn fetch(addr: SocketAddr, transport: Transport, len: u64, seed: u64) -> io::Result<Timeline> {
    let t0 = Instant::now();
    let mut c = connect(addr, transport, Duration::from_secs(20))?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    request(&mut c, len, seed)?;
    receive(&mut c, t0, len, seed, None)
}

/// Asks a pattern server for `len` bytes of pattern `seed`.
fn request(c: &mut TcpStream, len: u64, seed: u64) -> io::Result<()> {
    let mut req = len.to_le_bytes().to_vec();
    req.extend_from_slice(&seed.to_le_bytes());
    c.write_all(&req)
}

/// Reads the pattern until `len` bytes, the end of the stream or `duration` after `t0`,
/// checking every byte.
fn receive(
    c: &mut TcpStream,
    t0: Instant,
    len: u64,
    seed: u64,
    duration: Option<Duration>,
) -> io::Result<Timeline> {
    let mut t = Timeline::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut expect = vec![0u8; buf.len()];
    loop {
        if duration.is_some_and(|d| t0.elapsed() >= d) || t.bytes >= len {
            break;
        }
        let n = c.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if t.first_bad.is_none() {
            fill(seed, t.bytes, &mut expect[..n]);
            if let Some(k) = buf[..n].iter().zip(&expect[..n]).position(|(a, b)| a != b) {
                t.first_bad = Some(t.bytes + k as u64);
            }
        }
        t.bytes += n as u64;
        t.samples.push((t0.elapsed(), t.bytes));
    }
    t.elapsed = t0.elapsed();
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_tells_a_moved_byte() {
        let a: Vec<u8> = (0..64).map(|i| pattern_byte(7, i)).collect();
        let b: Vec<u8> = (1..65).map(|i| pattern_byte(7, i)).collect();
        assert_ne!(a, b);
        assert_ne!(pattern_byte(7, 3), pattern_byte(8, 3));
    }

    #[test]
    fn fill_writes_the_pattern_from_any_offset() {
        for from in [0u64, 3, 8, 13] {
            let mut buf = [0u8; 29];
            fill(9, from, &mut buf);
            let want: Vec<u8> = (from..from + 29).map(|i| pattern_byte(9, i)).collect();
            assert_eq!(buf.to_vec(), want, "from {from}");
        }
    }

    #[test]
    fn stalls_and_goodput_are_read_from_the_samples() {
        let ms = Duration::from_millis;
        let t = Timeline {
            samples: vec![
                (ms(0), 0),
                (ms(100), 1000),
                (ms(200), 2000),
                (ms(900), 3000),
                (ms(1000), 4000),
            ],
            bytes: 4000,
            first_bad: None,
            elapsed: ms(1000),
        };
        assert_eq!(t.longest_stall(ms(0)), (ms(200), ms(700)));
        assert_eq!(t.longest_stall(ms(950)), (ms(900), ms(100)));
        assert!((t.goodput(ms(0), ms(1000)) - 32_000.0).abs() < 1e-6);
        assert_eq!(t.bytes_at(ms(150)), 1000);
        assert_eq!(t.recovers(ms(0), ms(100), 80_000.0), Some(ms(0)));
        assert_eq!(t.recovers(ms(300), ms(100), 80_000.0), Some(ms(900)));
        assert_eq!(t.recovers(ms(300), ms(100), 90_000.0), None);
        assert!((t.lowest(ms(0), ms(200), ms(100)) - 80_000.0).abs() < 1e-6);
        assert!(t.lowest(ms(0), ms(1000), ms(100)).abs() < 1e-6);
        assert!(t.intact(4000) && !t.intact(4001));
    }
}
