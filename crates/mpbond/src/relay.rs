//! Relaying one connection's bytes both ways between two sockets until both sides are done.
//!
//! - A FIN is passed on as a FIN (half-close): each direction ends on its own, and the relay ends
//!   when both have (RFC 8803 §4.2 asks converters to relay FINs both ways).
//! - An error or reset on either side resets the other (§4.2: "a reset on one side resets the
//!   other"; for MPTCP the kernel sends `MP_FASTCLOSE`).
//! - A connection that moves no byte either way for the idle timeout is closed.
//! - A relayed connection never ends in an orderly close unless both directions did: while it
//!   is relayed both sockets are armed to reset when closed ([`kernel::reset_on_close`]), and
//!   only a relay that ended with both FINs passed on disarms them. So a process that stops,
//!   crashes or is killed mid-transfer resets its connections (RST, `MP_FASTCLOSE`): a
//!   truncated download never looks complete to the client.
//! - Memory: a buffer is taken from a shared pool only while bytes are moving, so an idle
//!   connection holds no buffer at all (`cargo bench --bench relay`: 8 KiB per idle connection
//!   in the gateway, 7 KiB in the converter).
//! - Two stalls of Linux 6.18's MPTCP under heavy loss are worked around here: an MPTCP side
//!   that stays silent is checked for a receive buffer jammed by out-of-order data
//!   ([`kernel::unjam_receive`]), and an MPTCP side is closed (`DATA_FIN`) only once all data
//!   sent on it is acknowledged on every subflow, so that its `DATA_FIN` travels alone
//!   ([`kernel::wait_quiet_for_data_fin`]).
//! - Copying, not `splice(2)`: Linux 6.18 splices from MPTCP sockets too, but a relay that moved
//!   every byte socket → pipe → socket measured the same as this one on the relay benchmark
//!   (2265 vs 2253 Mbit/s unshaped, 2.29 vs 2.22 s of CPU per GB; 2-core VM, 2026-11-25): MPTCP's
//!   receive side copies into the pipe anyway. It does not pay, and costs two pipes (four
//!   descriptors) per connection, so it is not used.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::stack::conn::Conn;
use crate::stack::kernel;

/// Bytes per read.
pub const BUF_LEN: usize = 64 * 1024;
/// Silence on an MPTCP side after which it is first checked for a receive jam.
const JAM_CHECK_FIRST: Duration = Duration::from_secs(1);
/// The longest time between such checks while the side stays silent.
const JAM_CHECK_MAX: Duration = Duration::from_secs(8);
/// Buffers kept in the pool when idle: enough for the busy connections of a home gateway.
const POOL_KEEP: usize = 64;

/// Buffers shared by every relay of a process.
#[derive(Debug, Default)]
pub struct BufPool(Mutex<Vec<Box<[u8]>>>);

impl BufPool {
    fn take(&self) -> Box<[u8]> {
        self.0
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_else(|| vec![0; BUF_LEN].into_boxed_slice())
    }

    fn give(&self, buf: Box<[u8]>) {
        if let Ok(mut v) = self.0.lock() {
            if v.len() < POOL_KEEP {
                v.push(buf);
            }
        }
    }
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Both sides sent FIN; everything was delivered.
    Closed,
    /// One side failed or reset; the other was reset.
    Reset,
    /// Nothing moved for the idle timeout.
    Idle,
}

/// Bytes moved and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// From `a` to `b`.
    pub a_to_b: u64,
    /// From `b` to `a`.
    pub b_to_a: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The first error, when it ended by one.
    pub error: Option<io::ErrorKind>,
}

/// When bytes last moved, as milliseconds since the relay started (atomic so that the relay's
/// future stays `Send`).
struct Clock {
    start: Instant,
    last_ms: AtomicU64,
}

impl Clock {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Relaxed))
    }
}

/// Waits for a socket to be readable; an MPTCP one is looked at when it stays silent, for the
/// receive jam that Linux 6.18 can get into (see [`kernel::unjam_receive`]): first after a
/// second of silence, then less and less often while it stays silent.
#[derive(Debug)]
pub struct JamWatch(Option<Duration>);

impl JamWatch {
    /// Watches `stream` if it is MPTCP.
    pub fn new(stream: &TcpStream) -> Self {
        Self(kernel::is_mptcp(stream).then_some(JAM_CHECK_FIRST))
    }

    /// Watches nothing (a connection that cannot jam so).
    #[must_use]
    pub const fn off() -> Self {
        Self(None)
    }

    /// Returns when `stream` is readable (or failed).
    ///
    /// # Errors
    /// The socket's error.
    pub async fn readable(&mut self, stream: &TcpStream) -> io::Result<()> {
        loop {
            let Some(after) = self.0 else {
                return stream.readable().await;
            };
            if let Ok(r) = tokio::time::timeout(after, stream.readable()).await {
                self.0 = Some(JAM_CHECK_FIRST);
                return r;
            }
            self.0 = Some((after * 2).min(JAM_CHECK_MAX));
            if let Some(rcvbuf) = kernel::unjam_receive(stream) {
                tracing::info!(
                    peer = ?stream.peer_addr().ok(),
                    rcvbuf,
                    "MPTCP receive side jammed by out-of-order data (a Linux bug): receive buffer grown"
                );
                self.0 = Some(JAM_CHECK_FIRST);
            }
        }
    }
}

/// Copies from `from` to `to` until `from`'s FIN (then sends FIN on `to`).
async fn pump(
    from: &impl Conn,
    to: &impl Conn,
    pool: &BufPool,
    moved: &AtomicU64,
    clock: &Clock,
) -> io::Result<()> {
    let mut watch = from.jam_watch();
    loop {
        from.readable_watched(&mut watch).await?;
        let mut buf = pool.take();
        let n = match from.try_read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pool.give(buf);
                continue;
            }
            Err(e) => {
                pool.give(buf);
                return Err(e);
            }
        };
        if n == 0 {
            pool.give(buf);
            return to.finish().await;
        }
        let written = to.write_all(&buf[..n]).await;
        pool.give(buf);
        written?;
        moved.fetch_add(n as u64, Relaxed);
        clock.touch();
    }
}

/// Relays between `a` and `b` until both directions are closed, one side fails, or nothing
/// moves for `idle` (None: no idle timeout). `b_first`, if given, runs before anything goes from
/// `b` to `a` (the gateway reads the converter's Convert reply there), while `a` to `b` already
/// flows; its error ends the relay like a socket error.
pub async fn relay<F>(
    a: &impl Conn,
    b: &impl Conn,
    pool: &BufPool,
    idle: Option<Duration>,
    b_first: Option<F>,
) -> Report
where
    F: Future<Output = io::Result<()>>,
{
    a.reset_on_close();
    b.reset_on_close();
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let clock = Clock {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let up_fut = pump(a, b, pool, &up, &clock);
    let down_fut = async {
        if let Some(f) = b_first {
            f.await?;
        }
        pump(b, a, pool, &down, &clock).await
    };
    tokio::pin!(up_fut, down_fut);
    let (mut up_done, mut down_done) = (false, false);
    let mut error = None;
    let mut outcome = Outcome::Closed;
    while !(up_done && down_done) {
        let deadline = idle.map(|d| clock.last() + d);
        tokio::select! {
            r = &mut up_fut, if !up_done => {
                up_done = true;
                if let Err(e) = r { error = Some(e.kind()); outcome = Outcome::Reset; break; }
            }
            r = &mut down_fut, if !down_done => {
                down_done = true;
                if let Err(e) = r { error = Some(e.kind()); outcome = Outcome::Reset; break; }
            }
            () = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                if deadline.is_some_and(|_| idle.is_some_and(|d| clock.last() + d <= Instant::now())) {
                    outcome = Outcome::Idle;
                    break;
                }
            }
        }
    }
    if outcome == Outcome::Closed {
        a.close_gracefully();
        b.close_gracefully();
    }
    Report {
        a_to_b: up.load(Relaxed),
        b_to_a: down.load(Relaxed),
        outcome,
        error,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair of loopback TCP streams.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    type NoGate = std::future::Ready<io::Result<()>>;

    #[tokio::test]
    async fn bytes_cross_both_ways_and_half_close_is_passed_on() {
        // client <-> (a | relay | b) <-> server
        let (mut client, a) = pair().await;
        let (b, mut server) = pair().await;
        let pool = BufPool::default();
        let relay = tokio::spawn(async move {
            let r = relay::<NoGate>(&a, &b, &BufPool::default(), None, None).await;
            drop((a, b));
            r
        });
        let up: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&up).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, up, "client's bytes, then its FIN");
        // The other direction still works after the client's half-close.
        server.write_all(b"reply after FIN").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"reply after FIN");
        let report = relay.await.unwrap();
        assert_eq!(report.outcome, Outcome::Closed);
        assert_eq!((report.a_to_b, report.b_to_a), (300_000, 15));
        drop(pool);
    }

    #[tokio::test]
    async fn a_reset_on_one_side_resets_the_other() {
        let (client, a) = pair().await;
        let (b, mut server) = pair().await;
        let relay = tokio::spawn(async move {
            let r = relay::<NoGate>(&a, &b, &BufPool::default(), None, None).await;
            drop((a, b));
            r
        });
        kernel::reset_on_close(&client);
        drop(client);
        let mut buf = [0u8; 8];
        let r = server.read(&mut buf).await;
        assert_eq!(
            r.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset),
            "the server side saw a reset, not a FIN"
        );
        assert_eq!(relay.await.unwrap().outcome, Outcome::Reset);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_after_the_timeout() {
        let (_client, a) = pair().await;
        let (b, _server) = pair().await;
        let r = relay::<NoGate>(
            &a,
            &b,
            &BufPool::default(),
            Some(Duration::from_secs(30)),
            None,
        )
        .await;
        assert_eq!(r.outcome, Outcome::Idle);
    }

    #[tokio::test]
    async fn the_gate_holds_back_only_the_b_to_a_direction() {
        let (mut client, a) = pair().await;
        let (b, mut server) = pair().await;
        let (open, gate) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(async move {
            let gate = async { gate.await.map_err(|_| io::Error::other("gate dropped")) };
            let r = relay(&a, &b, &BufPool::default(), None, Some(gate)).await;
            drop((a, b));
            r
        });
        server.write_all(b"early").await.unwrap();
        client.write_all(b"up").await.unwrap();
        let mut two = [0u8; 2];
        server.read_exact(&mut two).await.unwrap();
        assert_eq!(&two, b"up", "a to b flows while the gate is shut");
        let mut one = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(100), client.read(&mut one)).await;
        assert!(early.is_err(), "b to a held back while the gate is shut");
        open.send(()).unwrap();
        let mut five = [0u8; 5];
        client.read_exact(&mut five).await.unwrap();
        assert_eq!(&five, b"early");
        drop((client, server));
        relay.await.unwrap();
    }
}
