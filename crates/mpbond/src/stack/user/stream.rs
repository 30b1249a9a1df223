//! Connections and listeners of the user-space stack as tokio streams.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Instant;

use mptcp_proto::mptcp::{ConnId as ConnHandle, ConnState};
use mptcp_proto::tcp::{CloseReason, ReadError, Stats, WriteError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Inner, Shared, Waiters};

fn closed_error(r: CloseReason) -> io::Error {
    let kind = match r {
        CloseReason::Refused => io::ErrorKind::ConnectionRefused,
        CloseReason::Reset => io::ErrorKind::ConnectionReset,
        CloseReason::TimedOut => io::ErrorKind::TimedOut,
        CloseReason::Aborted => io::ErrorKind::ConnectionAborted,
        CloseReason::Finished => io::ErrorKind::NotConnected,
    };
    io::Error::new(kind, r)
}

/// Runs `f` on the engine for connection `h`, unless the stack's driver has died (then its
/// error).
fn with_conn<T>(
    shared: &Shared,
    h: ConnHandle,
    f: impl FnOnce(&mut Inner, ConnHandle) -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    let mut g = shared.lock();
    if let Some(e) = &g.dead {
        return Poll::Ready(Err(io::Error::other(e.clone())));
    }
    f(&mut g, h)
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection is gone")
}

/// A TCP connection of the user-space stack: `AsyncRead` until the peer's FIN, `AsyncWrite`
/// until `shutdown` (which sends our FIN). Dropping it closes the connection gracefully.
pub struct UserStream {
    shared: Arc<Shared>,
    h: ConnHandle,
    /// Dropping it resets the connection (`MP_FASTCLOSE`, or RST) instead of closing it:
    /// see [`UserStream::reset_on_close`].
    reset_on_drop: AtomicBool,
}

impl std::fmt::Debug for UserStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStream")
            .field("h", &self.h)
            .finish_non_exhaustive()
    }
}

impl UserStream {
    pub(super) fn new(shared: Arc<Shared>, h: ConnHandle) -> Self {
        Self {
            shared,
            h,
            reset_on_drop: AtomicBool::new(false),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Inner, ConnHandle) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        with_conn(&self.shared, self.h, f)
    }

    /// Waits for the handshake to complete (or fail).
    pub(super) async fn connected(&self) -> io::Result<()> {
        poll_fn(|cx| {
            self.with(|g, h| {
                match g.ep.state(h).ok_or_else(gone)? {
                    // A connection that already ended in order did connect.
                    ConnState::Closed(CloseReason::Finished)
                    | ConnState::Established
                    | ConnState::Fallback => return Poll::Ready(Ok(())),
                    ConnState::Closed(r) => return Poll::Ready(Err(closed_error(r))),
                    ConnState::Connecting => {}
                }
                g.waiters.entry(h).or_default().connect = Some(cx.waker().clone());
                Poll::Pending
            })
        })
        .await
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        let g = self.shared.lock();
        g.ep.addrs(self.h).map(|a| a.0).ok_or_else(gone)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        let g = self.shared.lock();
        g.ep.addrs(self.h).map(|a| a.1).ok_or_else(gone)
    }

    /// The first subflow's counters and estimates (RTT, window, retransmissions).
    #[must_use]
    pub fn stats(&self) -> Option<Stats> {
        let g = self.shared.lock();
        g.ep.first_subflow_stats(self.h)
    }

    /// Lets this accepted connection answer before its handshake ends (the client takes it:
    /// see [`mptcp_proto::mptcp::Stack::answer_early`]).
    pub fn answer_early(&self) {
        let mut g = self.shared.lock();
        g.ep.answer_early(self.h);
        drop(g);
        self.shared.kick.notify_one();
    }

    /// Turns Nagle's algorithm off (`TCP_NODELAY`), for interactive sessions.
    pub fn set_nodelay(&self, nodelay: bool) {
        let mut g = self.shared.lock();
        g.ep.set_nodelay(self.h, nodelay);
        drop(g);
        self.shared.kick.notify_one();
    }

    /// A handle that waits for the peer to acknowledge everything, usable after the stream
    /// was split.
    #[must_use]
    pub fn delivery(&self) -> Delivery {
        Delivery {
            shared: Arc::clone(&self.shared),
            h: self.h,
        }
    }

    /// Whether the connection speaks MPTCP (false once it fell back to TCP, or with
    /// `--no-mptcp`).
    #[must_use]
    pub fn is_mptcp(&self) -> bool {
        let g = self.shared.lock();
        g.ep.tokens(self.h).is_some() && !matches!(g.ep.state(self.h), Some(ConnState::Fallback))
    }

    /// Why the connection fell back to TCP after its handshake began, if it did.
    #[must_use]
    pub fn fallback_cause(&self) -> Option<mptcp_proto::mptcp::FallbackCause> {
        self.shared.lock().ep.fallback_cause(self.h)
    }

    /// Until [`UserStream::close_gracefully`], dropping the stream resets the connection
    /// instead of closing it in order: a relay that ends any other way than with both
    /// directions finished never looks complete to the peer.
    pub fn reset_on_close(&self) {
        self.reset_on_drop.store(true, Relaxed);
    }

    /// Dropping the stream closes the connection in order again (the default).
    pub fn close_gracefully(&self) {
        self.reset_on_drop.store(false, Relaxed);
    }

    /// Waits until a read would not block: bytes have arrived, the peer finished, or the
    /// connection ended.
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| {
            self.with(|g, h| match g.ep.read(h, &mut []) {
                Ok(_) | Err(ReadError::Finished | ReadError::Closed(_)) => Poll::Ready(Ok(())),
                Err(ReadError::Blocked) => {
                    g.waiters.entry(h).or_default().read = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        })
        .await
    }

    /// Reads what has arrived: 0 once the peer finished, `WouldBlock` when nothing has.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let r = {
            let mut g = self.shared.lock();
            if let Some(e) = &g.dead {
                return Err(io::Error::other(e.clone()));
            }
            match g.ep.read(self.h, buf) {
                Ok(n) => Ok(n),
                Err(ReadError::Finished) => Ok(0),
                Err(ReadError::Closed(r)) => Err(closed_error(r)),
                Err(ReadError::Blocked) => Err(io::ErrorKind::WouldBlock.into()),
            }
        };
        if matches!(r, Ok(n) if n > 0) {
            // Reading opens the window: the driver may owe the peer an update.
            self.shared.kick.notify_one();
        }
        r
    }

    /// Queues all of `data` for sending, waiting while the send buffer is full.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = poll_fn(|cx| self.poll_write_shared(cx, data)).await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// No more data from us: a `DATA_FIN` (a FIN without MPTCP) after what was written.
    ///
    /// # Errors
    /// When the connection was reset or aborted, or the stack's driver stopped: nothing
    /// written can reach the peer any more (as `shutdown(2)` fails on a reset socket).
    pub fn shutdown_write(&self) -> io::Result<()> {
        let mut g = self.shared.lock();
        if let Some(e) = &g.dead {
            return Err(io::Error::other(e.clone()));
        }
        if let Some(ConnState::Closed(r)) = g.ep.state(self.h) {
            if r != CloseReason::Finished {
                return Err(closed_error(r));
            }
        }
        g.ep.close(self.h);
        drop(g);
        self.shared.kick.notify_one();
        Ok(())
    }

    fn poll_write_shared(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = self.with(|g, h| match g.ep.write(h, data) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(WriteError::Blocked) => {
                g.waiters.entry(h).or_default().write = Some(cx.waker().clone());
                Poll::Pending
            }
            Err(WriteError::Finished) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the connection was shut down for writing",
            ))),
            Err(WriteError::Closed(r)) => Poll::Ready(Err(closed_error(r))),
        });
        if let Poll::Ready(Ok(_)) = r {
            self.shared.kick.notify_one();
        }
        r
    }

    /// Resets the connection (RST) instead of closing it.
    pub fn abort(&self) {
        let mut g = self.shared.lock();
        g.ep.abort(self.h);
        drop(g);
        self.shared.kick.notify_one();
    }
}

/// Waits for a connection's data to be acknowledged ([`UserStream::delivery`]).
pub struct Delivery {
    shared: Arc<Shared>,
    h: ConnHandle,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("h", &self.h)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Waits until the peer acknowledged everything written and the FIN (after `shutdown`);
    /// fails if the connection ends otherwise.
    pub async fn wait(&self) -> io::Result<()> {
        poll_fn(|cx| {
            with_conn(&self.shared, self.h, |g, h| {
                let state = g.ep.state(h).ok_or_else(gone)?;
                if g.ep.all_acked(h) {
                    return Poll::Ready(Ok(()));
                }
                match state {
                    ConnState::Closed(CloseReason::Finished) => return Poll::Ready(Ok(())),
                    ConnState::Closed(r) => return Poll::Ready(Err(closed_error(r))),
                    _ => {}
                }
                g.waiters.entry(h).or_default().acked = Some(cx.waker().clone());
                Poll::Pending
            })
        })
        .await
    }
}

impl AsyncRead for UserStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let r = self.with(|g, h| match g.ep.read(h, buf.initialize_unfilled()) {
            Ok(n) => {
                buf.advance(n);
                Poll::Ready(Ok(true))
            }
            Err(ReadError::Finished) => Poll::Ready(Ok(false)),
            Err(ReadError::Closed(r)) => Poll::Ready(Err(closed_error(r))),
            Err(ReadError::Blocked) => {
                g.waiters.entry(h).or_default().read = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        if let Poll::Ready(Ok(true)) = r {
            // Reading opens the window: the driver may owe the peer an update.
            self.shared.kick.notify_one();
        }
        r.map_ok(drop)
    }
}

impl AsyncWrite for UserStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_shared(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are with the engine already; it sends them as the windows allow.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = self.with(|g, h| {
            g.ep.close(h);
            Poll::Ready(Ok(()))
        });
        self.shared.kick.notify_one();
        r
    }
}

impl Drop for UserStream {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        if self.reset_on_drop.load(Relaxed) {
            g.ep.abort(self.h);
        }
        g.waiters.remove(&self.h);
        g.ep.release(Instant::now(), self.h);
        drop(g);
        self.shared.kick.notify_one();
    }
}

/// Listening sockets of the user-space stack (one per family, on the engine's addresses).
pub struct UserListener {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
}

impl std::fmt::Debug for UserListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserListener")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl UserListener {
    pub(super) fn new(shared: Arc<Shared>, addrs: Vec<SocketAddr>) -> Self {
        Self { shared, addrs }
    }

    /// The next connection that completed its handshake.
    pub async fn accept(&self) -> io::Result<(UserStream, SocketAddr)> {
        let h = poll_fn(|cx| {
            let mut g = self.shared.lock();
            if let Some(e) = &g.dead {
                return Poll::Ready(Err(io::Error::other(e.clone())));
            }
            for a in &self.addrs {
                if let Some(h) = g.ep.accept(*a) {
                    g.waiters.insert(h, Waiters::default());
                    return Poll::Ready(Ok(h));
                }
            }
            for a in &self.addrs {
                g.accept_waiters.insert(*a, cx.waker().clone());
            }
            Poll::Pending
        })
        .await?;
        let s = UserStream::new(Arc::clone(&self.shared), h);
        let peer = s.peer_addr()?;
        Ok((s, peer))
    }
}

impl Drop for UserListener {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        for a in &self.addrs {
            g.accept_waiters.remove(a);
            g.ep.unlisten(Instant::now(), *a);
        }
        drop(g);
        // Connections not accepted were reset: the driver sends the RSTs.
        self.shared.kick.notify_one();
    }
}
