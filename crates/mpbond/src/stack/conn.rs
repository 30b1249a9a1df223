//! A connection of either data plane, as the relay and the Convert exchange use it.
//!
//! The gateway and the converter speak Convert (RFC 8803) and relay bytes the same way whether
//! their MPTCP side is a kernel socket ([`TcpStream`] of `IPPROTO_MPTCP`) or a stream of
//! mpbond's engine ([`UserStream`]); their other side is always a kernel TCP socket. [`Conn`]
//! is what they need of a connection, all through `&self` so that one task reads while another
//! writes; [`AnyConn`] is either kind.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::kernel;
use super::user::UserStream;
use crate::relay::JamWatch;

/// The longest a kernel MPTCP side's `DATA_FIN` waits for the data before it to be
/// acknowledged (see [`kernel::wait_quiet_for_data_fin`]).
const DATA_FIN_WAIT: Duration = Duration::from_secs(60);

/// What the relay and the Convert exchange do with a connection.
pub trait Conn: Send + Sync {
    /// Waits until a read would not block (bytes, the peer's FIN, or an error).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// Reads what has arrived: 0 at the peer's FIN, `WouldBlock` when nothing has.
    ///
    /// # Errors
    /// The connection's.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// Sends all of `data`.
    fn write_all(&self, data: &[u8]) -> impl Future<Output = io::Result<()>> + Send;

    /// Sends our FIN (`DATA_FIN`) now: no more data from us.
    ///
    /// # Errors
    /// The connection's.
    fn shutdown_write(&self) -> io::Result<()>;

    /// Ends our direction of a relay: what the data plane needs first, then
    /// [`Conn::shutdown_write`].
    fn finish(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// From now until [`Conn::close_gracefully`], closing the connection resets it
    /// (`MP_FASTCLOSE` or RST): one that ends any other way than in order never looks complete.
    fn reset_on_close(&self);

    /// Closing the connection closes it in order again (the default).
    fn close_gracefully(&self);

    /// Whether it speaks MPTCP (false once it fell back to TCP).
    fn is_mptcp(&self) -> bool;

    /// Why it fell back to TCP, when the data plane knows (the engine does; the kernel's
    /// reasons are read from its counters at the handshake instead).
    fn fallback_cause(&self) -> Option<kernel::Fallback> {
        None
    }

    /// Our address.
    ///
    /// # Errors
    /// When the connection is gone.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// The peer's address.
    ///
    /// # Errors
    /// When the connection is gone.
    fn peer_addr(&self) -> io::Result<SocketAddr>;

    /// How a relay watches this connection while it is silent ([`JamWatch`]: only a kernel
    /// MPTCP socket needs it).
    fn jam_watch(&self) -> JamWatch {
        JamWatch::off()
    }

    /// [`Conn::readable`], with the checks `watch` asks for.
    fn readable_watched(
        &self,
        _watch: &mut JamWatch,
    ) -> impl Future<Output = io::Result<()>> + Send {
        self.readable()
    }

    /// Whether the peer's first data came in its SYN (TCP Fast Open) and was taken.
    fn syn_data_acked(&self) -> bool {
        false
    }
}

impl Conn for TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::readable(self)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }

    fn write_all(&self, data: &[u8]) -> impl Future<Output = io::Result<()>> + Send {
        kernel::write_all(self, data)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        socket2::SockRef::from(self).shutdown(std::net::Shutdown::Write)
    }

    async fn finish(&self) -> io::Result<()> {
        if kernel::is_mptcp(self) {
            // The DATA_FIN goes alone, once nothing before it can be sent again: Linux 6.18
            // can miss one that rides on a retransmitted segment (see the function).
            if let Err(e) = kernel::wait_quiet_for_data_fin(self, DATA_FIN_WAIT).await {
                tracing::debug!("closing before the data was acknowledged: {e}");
            }
        }
        self.shutdown_write()
    }

    fn reset_on_close(&self) {
        kernel::reset_on_close(self);
    }

    fn close_gracefully(&self) {
        kernel::close_gracefully(self);
    }

    fn is_mptcp(&self) -> bool {
        kernel::is_mptcp(self)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::local_addr(self)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::peer_addr(self)
    }

    fn jam_watch(&self) -> JamWatch {
        JamWatch::new(self)
    }

    fn readable_watched(
        &self,
        watch: &mut JamWatch,
    ) -> impl Future<Output = io::Result<()>> + Send {
        watch.readable(self)
    }

    fn syn_data_acked(&self) -> bool {
        kernel::syn_data_acked(self)
    }
}

impl Conn for UserStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        UserStream::readable(self)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        UserStream::try_read(self, buf)
    }

    fn write_all(&self, data: &[u8]) -> impl Future<Output = io::Result<()>> + Send {
        UserStream::write_all(self, data)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        UserStream::shutdown_write(self)
    }

    async fn finish(&self) -> io::Result<()> {
        // The engine sends its DATA_FIN once the data before it is sent, and retransmits it
        // as data: nothing to wait for.
        UserStream::shutdown_write(self)
    }

    fn reset_on_close(&self) {
        UserStream::reset_on_close(self);
    }

    fn close_gracefully(&self) {
        UserStream::close_gracefully(self);
    }

    fn is_mptcp(&self) -> bool {
        UserStream::is_mptcp(self)
    }

    fn fallback_cause(&self) -> Option<kernel::Fallback> {
        UserStream::fallback_cause(self).map(kernel::Fallback::Engine)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        UserStream::local_addr(self)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        UserStream::peer_addr(self)
    }
}

/// A connection of the kernel's stack or of mpbond's engine.
#[derive(Debug)]
pub enum AnyConn {
    /// A kernel socket (TCP or MPTCP).
    Kernel(TcpStream),
    /// A connection of the engine (`--stack user`).
    User(UserStream),
}

impl AnyConn {
    /// The kernel socket, if it is one.
    #[must_use]
    pub fn kernel(&self) -> Option<&TcpStream> {
        match self {
            Self::Kernel(s) => Some(s),
            Self::User(_) => None,
        }
    }

    /// The kernel socket, or the connection back if it is the engine's.
    ///
    /// # Errors
    /// When it is the engine's.
    pub fn into_kernel(self) -> Result<TcpStream, Self> {
        match self {
            Self::Kernel(s) => Ok(s),
            other @ Self::User(_) => Err(other),
        }
    }
}

/// Calls `$call` on whichever connection `$self` holds.
macro_rules! either {
    ($self:expr, $s:ident => $call:expr) => {
        match $self {
            AnyConn::Kernel($s) => $call,
            AnyConn::User($s) => $call,
        }
    };
}

impl Conn for AnyConn {
    async fn readable(&self) -> io::Result<()> {
        either!(self, s => Conn::readable(s).await)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        either!(self, s => Conn::try_read(s, buf))
    }

    async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        either!(self, s => Conn::write_all(s, data).await)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        either!(self, s => Conn::shutdown_write(s))
    }

    async fn finish(&self) -> io::Result<()> {
        either!(self, s => Conn::finish(s).await)
    }

    fn reset_on_close(&self) {
        either!(self, s => Conn::reset_on_close(s));
    }

    fn close_gracefully(&self) {
        either!(self, s => Conn::close_gracefully(s));
    }

    fn is_mptcp(&self) -> bool {
        either!(self, s => Conn::is_mptcp(s))
    }

    fn fallback_cause(&self) -> Option<kernel::Fallback> {
        either!(self, s => Conn::fallback_cause(s))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        either!(self, s => Conn::local_addr(s))
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        either!(self, s => Conn::peer_addr(s))
    }

    fn jam_watch(&self) -> JamWatch {
        either!(self, s => Conn::jam_watch(s))
    }

    async fn readable_watched(&self, watch: &mut JamWatch) -> io::Result<()> {
        either!(self, s => Conn::readable_watched(s, watch).await)
    }

    fn syn_data_acked(&self) -> bool {
        either!(self, s => Conn::syn_data_acked(s))
    }
}
