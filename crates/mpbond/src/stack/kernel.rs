//! The kernel data plane: `IPPROTO_MPTCP` sockets (Linux ≥ 5.6), falling back to TCP where the
//! kernel has no MPTCP, and what the kernel tells about a connection.
//!
//! Socket options used here (values from the kernel's uapi headers; `libc` lacks some):
//! - `TCP_FASTOPEN_CONNECT` on the client: the first write goes in the SYN once the server gave
//!   a cookie (RFC 7413), so a Convert message costs no round trip;
//! - `TCP_FASTOPEN` on the converter's listener: it hands out cookies and accepts data in a SYN
//!   that carries one. Not `TCP_FASTOPEN_NO_COOKIE`, although RFC 8803 would have converters
//!   accept data without a cookie: a Linux listener in no-cookie mode issues no cookies, so
//!   clients would have to send data without one, and a client that does so to a server that
//!   does not take it loses MPTCP (the kernel falls back to TCP). With cookies, the first
//!   connection from a gateway address costs one round trip and the following ones none;
//! - `TCP_IS_MPTCP`: 1 while an MPTCP socket really speaks MPTCP, 0 once it fell back to TCP
//!   (a peer or a middlebox without MPTCP).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use crate::sys::{self, Plain as _};

const TCP_FASTOPEN: libc::c_int = 23;
const TCP_FASTOPEN_CONNECT: libc::c_int = 30;
const TCP_IS_MPTCP: libc::c_int = 43;
/// `tcpi_options` bit: the SYN's data was acknowledged (sent or received in the SYN).
const TCPI_OPT_SYN_DATA: u8 = 32;

/// Which protocol a socket was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// `IPPROTO_MPTCP`.
    Mptcp,
    /// Plain TCP: the kernel has no MPTCP or it is disabled (`net.mptcp.enabled=0`).
    Tcp,
}

fn setsockopt_int(
    fd: &impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    sys::setsockopt_int(fd.as_fd().as_raw_fd(), level, name, value)
}

fn getsockopt_int(
    fd: &impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    sys::getsockopt_int(fd.as_fd().as_raw_fd(), level, name)
}

/// A non-blocking stream socket for `addr`'s family: MPTCP when `mptcp` is asked and the kernel
/// allows it, else TCP. The second value says why MPTCP was not used, if it was asked.
pub fn stream_socket(
    addr: &SocketAddr,
    mptcp: bool,
) -> io::Result<(Socket, Proto, Option<io::Error>)> {
    let domain = Domain::for_address(*addr);
    let mut why = None;
    if mptcp {
        match Socket::new(domain, Type::STREAM, Some(Protocol::MPTCP)) {
            Ok(s) => {
                s.set_nonblocking(true)?;
                return Ok((s, Proto::Mptcp, None));
            }
            // ENOPROTOOPT: net.mptcp.enabled=0; EPROTONOSUPPORT/EINVAL: no MPTCP in the kernel.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOPROTOOPT | libc::EPROTONOSUPPORT | libc::EINVAL)
                ) =>
            {
                why = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    Ok((s, Proto::Tcp, why))
}

/// Whether a connected socket speaks MPTCP now (false: plain TCP, or MPTCP that fell back).
#[must_use]
pub fn is_mptcp(stream: &impl AsFd) -> bool {
    getsockopt_int(stream, libc::IPPROTO_TCP, TCP_IS_MPTCP).is_ok_and(|v| v == 1)
}

/// Why an MPTCP connection is plain TCP (see [`fallback_cause`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The MPTCP SYN went unanswered and was sent again; since Linux 6.12 the kernel's last
    /// tries carry no `MP_CAPABLE` (`net.mptcp.syn_retrans_before_tcp_fallback`), and one of
    /// those was answered: loss on the way, not a path without MPTCP.
    SynLost {
        /// SYNs sent again.
        retransmits: u32,
    },
    /// The peer answered the MPTCP SYN without `MP_CAPABLE`: it has no MPTCP, or something on
    /// the path removed the option.
    NotOffered,
    /// The connection started as MPTCP and fell back later (RFC 8684 §3.7: a middlebox
    /// changed the stream, or the peer signalled a fallback).
    Later,
    /// Not known: the connection's first data rode in its SYN (TCP Fast Open), so it was not
    /// looked at between the handshake and the data.
    Unknown,
    /// On the engine (`--stack user`), which knows why it fell back.
    Engine(mptcp_proto::mptcp::FallbackCause),
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SynLost { retransmits } => write!(
                f,
                "its MPTCP SYN was lost and sent {retransmits} more time(s), and Linux makes its last tries without MPTCP (net.mptcp.syn_retrans_before_tcp_fallback): loss or congestion on the line, not a path without MPTCP"
            ),
            Self::NotOffered => f.write_str(
                "the peer answered without MPTCP: it has none, or something on the path strips the option",
            ),
            Self::Later => f.write_str(
                "it fell back after it started (RFC 8684 §3.7: something on the path changed the stream)",
            ),
            Self::Unknown => f.write_str(
                "the cause is not known (its first data rode in the SYN, TCP Fast Open)",
            ),
            Self::Engine(cause) => write!(f, "it fell back: {cause} (RFC 8684 §3.7)"),
        }
    }
}

/// Why a connected MPTCP socket is plain TCP now; `None` while it speaks MPTCP. Read right
/// after the handshake, before anything was sent, `Later` does not occur.
#[must_use]
pub fn fallback_cause(stream: &impl AsFd) -> Option<Fallback> {
    if is_mptcp(stream) {
        return None;
    }
    let info = tcp_info(stream)?;
    // After the handshake and before data, the only retransmissions are of the SYN. Only the
    // tries after `syn_retrans_before_tcp_fallback` go without MP_CAPABLE (Linux 6.12 on; before,
    // every try carries it, and the sysctl does not exist): an answer to an earlier one without
    // MP_CAPABLE is the peer's or the path's doing.
    let plain_after = crate::host::sysctl_get("net.mptcp.syn_retrans_before_tcp_fallback")
        .ok()
        .and_then(|v| v.parse::<u32>().ok());
    if info.tcpi_bytes_acked <= 1 && plain_after.is_some_and(|n| info.tcpi_total_retrans >= n) {
        return Some(Fallback::SynLost {
            retransmits: info.tcpi_total_retrans,
        });
    }
    if info.tcpi_bytes_acked <= 1 {
        return Some(Fallback::NotOffered);
    }
    Some(Fallback::Later)
}

/// The largest receive buffer [`unjam_receive`] grows a connection to.
const UNJAM_MAX_RCVBUF: u32 = 64 << 20;

/// Frees an MPTCP connection whose receive side Linux has jammed, and says how.
///
/// Seen on Linux 6.18 under heavy loss: data that arrived out of order at the connection level
/// fills the receive buffer (`rmem_alloc >= rcvbuf`), and then the in-order data that would fill
/// the hole before it is dropped on every arrival: TCP acknowledges it on its subflow, MPTCP
/// never does (`DATA_ACK` stuck), the sender resends it for ever and nothing ever becomes
/// readable (the subflows meanwhile hold megabytes of copies). Plain TCP prunes its
/// out-of-order queue in that case; MPTCP's connection-level queue is not pruned, and its
/// buffer had not grown past the initial 128 KiB when it happened.
///
/// When `stream` is in that state (buffer full, nothing to read), its receive buffer is raised
/// to `net.ipv4.tcp_rmem`'s maximum, or doubled if it is there already (`SO_RCVBUFFORCE`, needs
/// `CAP_NET_ADMIN`; this also stops the kernel's auto-tuning of it), so the next copy of the
/// missing data is taken, and the new size is returned. `None` when
/// the connection is not jammed or the buffer cannot grow.
#[must_use]
pub fn unjam_receive(stream: &impl AsFd) -> Option<u32> {
    let fd = stream.as_fd().as_raw_fd();
    let mem = sys::meminfo(fd).ok()?;
    let (rmem, rcvbuf) = (mem[0], mem[1]);
    if rcvbuf == 0 || rmem < rcvbuf || sys::readable_bytes(fd).ok()? > 0 {
        return None;
    }
    // Setting the size stops the kernel's auto-tuning of it for good, so the connection gets
    // at once what auto-tuning could have given it (`net.ipv4.tcp_rmem`'s maximum), or twice
    // what it has if that is more: a jam must not leave a fast connection with a small window.
    let target = (2 * u64::from(rcvbuf))
        .max(tcp_rmem_max().unwrap_or(0))
        .min(u64::from(UNJAM_MAX_RCVBUF));
    if target <= u64::from(rcvbuf) {
        return None;
    }
    // The kernel doubles what it is given (room for its overhead).
    let val = libc::c_int::try_from(target / 2).ok()?;
    sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, val).ok()?;
    sys::meminfo(fd).ok().map(|m| m[1])
}

/// `net.ipv4.tcp_rmem`'s maximum in the calling thread's network namespace.
fn tcp_rmem_max() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
        .ok()?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Whether the data sent or received in this connection's SYN was accepted (TCP Fast Open).
#[must_use]
pub fn syn_data_acked(stream: &impl AsFd) -> bool {
    tcp_info(stream).is_some_and(|i| i.tcpi_options & TCPI_OPT_SYN_DATA != 0)
}

/// The kernel's `TCP_INFO` for a TCP socket (for an MPTCP socket: its first subflow's).
#[must_use]
pub fn tcp_info(stream: &impl AsFd) -> Option<libc::tcp_info> {
    sys::getsockopt(
        stream.as_fd().as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_INFO,
    )
    .ok()
}

/// `SOL_MPTCP` and its `MPTCP_INFO` option (uapi `linux/mptcp.h`).
const SOL_MPTCP: libc::c_int = 284;
const MPTCP_INFO: libc::c_int = 1;
/// `mptcpi_flags`: the connection fell back to TCP.
const MPTCP_INFO_FLAG_FALLBACK: u32 = 1;
/// `MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED`: the peer's key arrived.
const MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED: u32 = 2;

/// The head of the kernel's `struct mptcp_info` (uapi `linux/mptcp.h`), as far as mpbond reads
/// it; the kernel copies no more than the length it is given.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MptcpInfo {
    /// Subflows besides the first.
    pub subflows: u8,
    /// `ADD_ADDR` sent.
    pub add_addr_signal: u8,
    /// `ADD_ADDR` accepted.
    pub add_addr_accepted: u8,
    /// Limit of subflows.
    pub subflows_max: u8,
    /// Limit of `ADD_ADDR` signalled.
    pub add_addr_signal_max: u8,
    /// Limit of `ADD_ADDR` accepted.
    pub add_addr_accepted_max: u8,
    /// `MPTCP_INFO_FLAG_*`.
    pub flags: u32,
    /// The local token.
    pub token: u32,
    /// Data sequence number of the next byte written.
    pub write_seq: u64,
    /// Oldest data sequence number not acknowledged at the connection level.
    pub snd_una: u64,
    /// Next data sequence number expected.
    pub rcv_nxt: u64,
}

/// The connection-level view of an MPTCP socket; `None` for plain TCP sockets and on kernels
/// without `MPTCP_INFO` (before 5.16).
#[must_use]
pub fn mptcp_info(stream: &impl AsFd) -> Option<MptcpInfo> {
    sys::getsockopt(stream.as_fd().as_raw_fd(), SOL_MPTCP, MPTCP_INFO).ok()
}

/// Bytes written but not yet acknowledged by the peer (`SIOCOUTQ`), for TCP sockets.
fn unacked_bytes(stream: &impl AsFd) -> Option<usize> {
    sys::ioctl_count(stream.as_fd().as_raw_fd(), libc::TIOCOUTQ).ok()
}

/// `tcpi_state` of an established connection (`TCP_ESTABLISHED` in the kernel's `tcp_states.h`).
const TCP_ESTABLISHED: u8 = 1;

/// `MPTCP_TCPINFO`: the `tcp_info` of each subflow.
const MPTCP_TCPINFO: libc::c_int = 2;
/// The most subflows [`subflows_unacked`] looks at.
const MAX_SUBFLOWS: usize = 16;

/// `struct mptcp_subflow_data`, the header of `MPTCP_TCPINFO`'s answer.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
#[expect(clippy::struct_field_names, reason = "the kernel's field names")]
struct SubflowData {
    size_subflow_data: u32,
    num_subflows: u32,
    size_kernel: u32,
    size_user: u32,
}

/// `MPTCP_TCPINFO`'s answer for up to [`MAX_SUBFLOWS`] subflows.
#[repr(C)]
#[derive(Clone, Copy)]
struct SubflowTcpInfo {
    head: SubflowData,
    info: [libc::tcp_info; MAX_SUBFLOWS],
}

// SAFETY: C structs of integers.
unsafe impl sys::Plain for SubflowTcpInfo {}
// SAFETY: as above.
unsafe impl sys::Plain for MptcpInfo {}

/// Segments sent on an MPTCP connection's established subflows and not yet acknowledged there
/// (TCP's `tcpi_unacked`, summed); `None` when the kernel does not say (not MPTCP, fell back).
/// A subflow already closing is left out: one whose address is gone (a handover) keeps its
/// last segments unacknowledged until it times out, minutes later, and must not hold the
/// connection's end that long.
#[must_use]
pub fn subflows_unacked(stream: &impl AsFd) -> Option<u32> {
    let mut data = SubflowTcpInfo::zeroed();
    data.head = SubflowData {
        size_subflow_data: u32::try_from(size_of::<SubflowData>()).ok()?,
        num_subflows: 0,
        size_kernel: 0,
        size_user: u32::try_from(size_of::<libc::tcp_info>()).ok()?,
    };
    sys::getsockopt_into(
        stream.as_fd().as_raw_fd(),
        SOL_MPTCP,
        MPTCP_TCPINFO,
        &mut data,
    )
    .ok()?;
    let n = usize::try_from(data.head.num_subflows)
        .ok()?
        .min(MAX_SUBFLOWS);
    Some(
        data.info[..n]
            .iter()
            .filter(|i| i.tcpi_state == TCP_ESTABLISHED)
            .map(|i| i.tcpi_unacked)
            .sum(),
    )
}

/// Waits, before an MPTCP connection's `DATA_FIN` is sent, until all data written is
/// acknowledged at the connection level *and* no subflow has a segment left to retransmit (at
/// most `limit`; then `TimedOut`). For TCP, until the send queue is empty.
///
/// Linux 6.18 adds a pending `DATA_FIN` to the mapping of any segment a subflow retransmits
/// afterwards, old data included. When that data had already arrived by another subflow, the
/// receiving kernel drops the segment as a duplicate but has recorded the `DATA_FIN` without
/// acting on it, and then ignores every later copy (each a bare ACK): the peer never sees the end
/// of the stream. Seen in the lab as about one connection in 2 000 waiting for ever under a
/// burst of 200 connections into saturated lines with the CPUs busy. With nothing left to
/// retransmit anywhere, the `DATA_FIN` only ever travels alone and is taken.
///
/// # Errors
/// The socket's error, or `TimedOut`.
pub async fn wait_quiet_for_data_fin(stream: &TcpStream, limit: Duration) -> io::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    wait_data_acked(stream, limit).await?;
    poll_until(
        stream,
        deadline,
        || subflows_unacked(stream).is_none_or(|n| n == 0),
        "a subflow still had segments to retransmit",
    )
    .await
}

/// Polls `done` until it holds, `stream` has an error, or `deadline` passes (then `TimedOut`
/// with `what`).
///
/// Every 0.5 ms at first, doubling to 10 ms; past 40 ms, a quarter of the time waited so far
/// (what holds after a round trip is seen within a quarter of it); 100 ms at most. A burst of a
/// thousand connections, each waiting hundreds of milliseconds behind full queues, must not
/// spend the CPUs the burst needs on `getsockopt`: a 400 ms wait takes 18 polls, not 44.
async fn poll_until(
    stream: &TcpStream,
    deadline: tokio::time::Instant,
    mut done: impl FnMut() -> bool,
    what: &'static str,
) -> io::Result<()> {
    let mut pause = Duration::from_micros(500);
    let start = tokio::time::Instant::now();
    loop {
        if done() {
            return Ok(());
        }
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, what));
        }
        tokio::time::sleep(pause).await;
        pause = poll_pause(pause, start.elapsed());
    }
}

/// Waits until the peer has acknowledged every byte written so far — for MPTCP at the
/// connection level (a `DATA_ACK`, which also covers a `DATA_FIN` once sent), for TCP by the
/// send queue (`SIOCOUTQ`) — or `limit` passed (then `TimedOut`).
///
/// Three uses:
/// - After the Convert message, before anything else is written. Until its first data is
///   data-acked, a Linux MPTCP client is not "fully established" (RFC 8684 §3.1). Bytes written
///   in that window can leave in segments that carry no MPTCP option, covered by the first
///   segment's mapping; if that first segment and the third ACK are both lost, the server sees
///   option-less data first and falls back to TCP while the client cannot (it has opened more
///   subflows), and the connection stalls (the kernel counts `MPTcpExtFallbackFailed`).
///   Measured in the lab with 200 connections opened into saturated lines: about 1 in 200
///   stalled. Waiting costs at most one round trip to the converter, overlapped with the
///   converter's own connection to the destination.
/// - Before `mpbond connect` exits: its success means the peer has everything, and the lines
///   it configured (whose removal closes their subflows) must outlive the last retransmission.
/// - Before an MPTCP side is closed: see [`wait_quiet_for_data_fin`].
pub async fn wait_data_acked(stream: &TcpStream, limit: Duration) -> io::Result<()> {
    poll_until(
        stream,
        tokio::time::Instant::now() + limit,
        || match mptcp_info(stream) {
            Some(i) if i.flags & MPTCP_INFO_FLAG_FALLBACK == 0 => i.snd_una >= i.write_seq,
            _ => unacked_bytes(stream).is_none_or(|n| n == 0),
        },
        "the peer did not acknowledge what was sent",
    )
    .await
}

/// Waits until an accepted MPTCP connection holds its client's key (the third ACK, or the first
/// data after it, arrived), or fell back to TCP, or `limit` passed (then `TimedOut`); at once
/// for plain TCP.
///
/// Linux 6.18's MPTCP server whose client sent data in its SYN (TCP Fast Open) and that writes
/// before the third ACK arrives keeps what it wrote queued and sends none of it, not even once
/// the ACK came: seen on 6.18.44 with a converter answering at once (its destination a
/// millisecond away), the connection held 129 kB for 20 s and its subflow had sent nothing.
/// What is written once the key is there goes out. The wait is at most the round trip of the
/// client's handshake, which the converter's own connection to the destination overlaps.
pub async fn wait_peer_key(stream: &TcpStream, limit: Duration) -> io::Result<()> {
    poll_until(
        stream,
        tokio::time::Instant::now() + limit,
        || {
            mptcp_info(stream).is_none_or(|i| {
                i.flags & (MPTCP_INFO_FLAG_FALLBACK | MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED) != 0
            })
        },
        "the client's key did not arrive",
    )
    .await
}

/// [`poll_until`]'s next pause after `pause`, `waited` into the wait.
fn poll_pause(pause: Duration, waited: Duration) -> Duration {
    (pause * 2)
        .min(Duration::from_millis(10))
        .max(waited / 4)
        .min(Duration::from_millis(100))
}

/// How to open a client connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Use MPTCP (else plain TCP).
    pub mptcp: bool,
    /// Ask for TCP Fast Open: the first write may go in the SYN.
    pub fast_open: bool,
    /// Source address to bind first.
    pub bind: Option<SocketAddr>,
    /// Give up after this long (None: the kernel's SYN retries, about 2 minutes).
    pub timeout: Option<Duration>,
}

/// A client connection and how it was made.
#[derive(Debug)]
pub struct Connection {
    /// The stream.
    pub stream: TcpStream,
    /// The protocol of the socket (an MPTCP socket may still fall back: see [`is_mptcp`]).
    pub proto: Proto,
    /// Why MPTCP was asked but not used, for a warning.
    pub mptcp_unavailable: Option<io::Error>,
    /// The connection is deferred until the first write, which goes in the SYN (TFO).
    pub deferred: bool,
}

/// Opens a connection. With `fast_open`, when the kernel holds a TFO cookie for `addr` the
/// connection is *deferred*: nothing is sent until the first write, which rides in the SYN and
/// whose failure then reports connection errors. Without a cookie (the first connection to a
/// server), a normal handshake runs and the kernel asks for a cookie for next time.
pub async fn connect(addr: SocketAddr, opts: &ConnectOptions) -> io::Result<Connection> {
    let (socket, proto, why) = stream_socket(&addr, opts.mptcp)?;
    if let Some(bind) = opts.bind {
        socket.bind(&bind.into())?;
    }
    let mut fast_open = opts.fast_open;
    // EOPNOTSUPP: net.ipv4.tcp_fastopen lacks the client bit; go on without it.
    if fast_open && setsockopt_int(&socket, libc::IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1).is_err() {
        fast_open = false;
    }
    let deferred = match socket.connect(&addr.into()) {
        Ok(()) => fast_open,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => false,
        Err(e) => return Err(e),
    };
    let stream = TcpStream::from_std(socket.into())?;
    if !deferred {
        let wait = stream.writable();
        match opts.timeout {
            Some(t) => tokio::time::timeout(t, wait)
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??,
            None => wait.await?,
        }
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        // Writable without an error can still mean "not connected" on some paths.
        stream.peer_addr()?;
    }
    Ok(Connection {
        stream,
        proto,
        mptcp_unavailable: why,
        deferred,
    })
}

/// Writes all of `buf`, including the first write of a deferred (TFO) connection, which may
/// report `EINPROGRESS` while the handshake runs.
pub async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                // The SYN left without the data (no cookie after all): wait for the handshake.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How to listen.
#[derive(Debug, Clone, Default)]
#[expect(clippy::struct_excessive_bools, reason = "independent socket options")]
pub struct ListenOptions {
    /// Accept MPTCP (an MPTCP listener also accepts plain TCP clients).
    pub mptcp: bool,
    /// Accept data in the SYN (TFO) from clients holding a cookie, and hand out cookies.
    pub fast_open: bool,
    /// `IP_TRANSPARENT`: accept connections to any address that TPROXY diverts here.
    pub transparent: bool,
    /// Only IPv6 on an IPv6 socket (else the IPv6 wildcard also takes IPv4).
    pub v6_only: bool,
    /// Listen backlog.
    pub backlog: i32,
}

/// A listener and what the kernel made of the options.
#[derive(Debug)]
pub struct Listener {
    /// The listener.
    pub listener: TcpListener,
    /// MPTCP or TCP.
    pub proto: Proto,
    /// Why MPTCP was asked but not used.
    pub mptcp_unavailable: Option<io::Error>,
    /// Whether TFO was enabled on it.
    pub fast_open: bool,
}

/// Binds and listens on `addr`.
pub fn listen(addr: SocketAddr, opts: &ListenOptions) -> io::Result<Listener> {
    let (socket, proto, why) = stream_socket(&addr, opts.mptcp)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(opts.v6_only)?;
    }
    if opts.transparent {
        if addr.is_ipv6() {
            socket.set_ip_transparent_v6(true)?;
        } else {
            socket.set_ip_transparent_v4(true)?;
        }
    }
    socket.bind(&addr.into())?;
    let mut fast_open = false;
    if opts.fast_open {
        fast_open = setsockopt_int(&socket, libc::IPPROTO_TCP, TCP_FASTOPEN, 1024).is_ok();
    }
    socket.listen(if opts.backlog > 0 { opts.backlog } else { 1024 })?;
    Ok(Listener {
        listener: TcpListener::from_std(socket.into())?,
        proto,
        mptcp_unavailable: why,
        fast_open,
    })
}

/// Resets the connection when the socket is closed (`SO_LINGER` 0) instead of closing it
/// gracefully: used to pass a reset on from the other side (RFC 8803 §4.2), and to arm a
/// relayed connection so that whatever ends the process (a signal, a crash, `kill -9`) resets
/// it rather than closing it as if it were complete. The kernel sends a RST for TCP and an
/// `MP_FASTCLOSE` for MPTCP (RFC 8684 §3.5) also when it closes the sockets of a process that
/// died. Undone by [`close_gracefully`].
pub fn reset_on_close(stream: &impl AsFd) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Closes the connection gracefully again when the socket is closed (the default): for a
/// connection whose every byte has been passed on and whose both directions have ended.
pub fn close_gracefully(stream: &impl AsFd) {
    let _ = SockRef::from(stream).set_linger(None);
}

/// Adds `bits` to `net.ipv4.tcp_fastopen` (1: client, 2: server) of this network namespace
/// until the returned change is dropped (recorded in the host journal first, so a crash cannot
/// leave it changed: [`crate::host`]); needs root in the namespace.
///
/// # Errors
/// If the sysctl cannot be read or written.
pub fn enable_tcp_fastopen(bits: u32) -> io::Result<crate::host::Change> {
    crate::host::Change::apply(
        crate::host::Setting::sysctl("net.ipv4.tcp_fastopen"),
        |now| {
            let now: u32 = now.parse().ok()?;
            Some((now | bits).to_string())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client connection to `l` (MPTCP or not) and its accepted side.
    async fn connected(l: &Listener, mptcp: bool) -> (Connection, TcpStream) {
        let addr = l.listener.local_addr().unwrap();
        let opts = ConnectOptions {
            mptcp,
            ..ConnectOptions::default()
        };
        let c = connect(addr, &opts).await.unwrap();
        let (s, _) = l.listener.accept().await.unwrap();
        (c, s)
    }

    /// The polls of a wait: the first ones quick, then a quarter of the time waited, so that a
    /// long wait costs few; never a pause over 100 ms, nor one past a quarter of the wait plus
    /// 10 ms.
    #[test]
    fn long_waits_cost_few_polls_and_each_is_seen_soon() {
        let polls_for = |wait: Duration| {
            let (mut pause, mut waited, mut polls) =
                (Duration::from_micros(500), Duration::ZERO, 1);
            while waited < wait {
                waited += pause;
                polls += 1;
                let next = poll_pause(pause, waited);
                assert!(next <= Duration::from_millis(100), "{next:?}");
                assert!(
                    next <= waited / 4 + Duration::from_millis(10),
                    "{next:?} at {waited:?}"
                );
                pause = next;
            }
            (polls, waited.saturating_sub(wait))
        };
        let (polls, late) = polls_for(Duration::from_millis(20));
        assert!(
            polls <= 7 && late <= Duration::from_millis(10),
            "{polls} {late:?}"
        );
        let (polls, late) = polls_for(Duration::from_millis(400));
        assert!(
            polls <= 20 && late <= Duration::from_millis(100),
            "{polls} {late:?}"
        );
        let (polls, _) = polls_for(Duration::from_secs(60));
        assert!(polls <= 640, "{polls}");
    }

    /// The subflows' unacknowledged segments are read for MPTCP (none once all is delivered)
    /// and not for TCP; waiting for quiet before a `DATA_FIN` ends when all is acknowledged.
    #[tokio::test]
    async fn subflows_unacked_reads_mptcp_subflows() {
        for mptcp in [true, false] {
            let opts = ListenOptions {
                mptcp,
                ..ListenOptions::default()
            };
            let l = listen("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
            if mptcp && l.proto != Proto::Mptcp {
                eprintln!("SKIPPED subflows_unacked (MPTCP part): this kernel has no MPTCP");
                continue;
            }
            let (c, _s) = connected(&l, mptcp).await;
            write_all(&c.stream, &[1u8; 10_000]).await.unwrap();
            wait_quiet_for_data_fin(&c.stream, Duration::from_secs(10))
                .await
                .unwrap();
            let unacked = subflows_unacked(&c.stream);
            if mptcp {
                assert_eq!(unacked, Some(0), "all delivered on loopback");
            } else {
                assert_eq!(unacked, None, "TCP has no subflows");
            }
        }
    }

    /// A full receive buffer with data to read is a slow reader, not a jam; an idle connection
    /// is not one either. Neither is touched. (The jam itself needs Linux's MPTCP under heavy
    /// loss; the 200-connection gateway lab test is where it shows.)
    #[tokio::test]
    async fn a_full_buffer_with_data_to_read_is_not_a_jam() {
        let l = listen("127.0.0.1:0".parse().unwrap(), &ListenOptions::default()).unwrap();
        let addr = l.listener.local_addr().unwrap();
        let c = connect(addr, &ConnectOptions::default()).await.unwrap();
        let (s, _) = l.listener.accept().await.unwrap();
        let before = sys::meminfo(s.as_raw_fd()).unwrap()[1];
        assert_eq!(unjam_receive(&s), None, "idle");
        // Fill the receiver: write until the sender's buffer is full too.
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while let Ok(Ok(())) =
            tokio::time::timeout(Duration::from_millis(200), c.stream.writable()).await
        {
            match c.stream.try_write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(sent > 0);
        assert!(sys::readable_bytes(s.as_raw_fd()).unwrap() > 0);
        assert_eq!(unjam_receive(&s), None, "full, but readable");
        assert_eq!(
            sys::meminfo(s.as_raw_fd()).unwrap()[1],
            before,
            "the buffer was left alone"
        );
    }

    #[tokio::test]
    async fn mptcp_loopback_speaks_mptcp_and_tcp_clients_fall_back() {
        let opts = ListenOptions {
            mptcp: true,
            ..ListenOptions::default()
        };
        let l = listen("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        if l.proto != Proto::Mptcp {
            eprintln!(
                "SKIPPED mptcp_loopback: this kernel has no MPTCP ({:?})",
                l.mptcp_unavailable
            );
            return;
        }
        for mptcp in [true, false] {
            let (c, s) = connected(&l, mptcp).await;
            write_all(&c.stream, b"x").await.unwrap();
            let mut b = [0u8; 1];
            s.readable().await.unwrap();
            assert_eq!(s.try_read(&mut b).unwrap(), 1);
            assert_eq!(is_mptcp(&c.stream), mptcp, "client, mptcp={mptcp}");
            assert_eq!(is_mptcp(&s), mptcp, "server, mptcp client={mptcp}");
        }
    }

    #[tokio::test]
    async fn mptcp_info_counts_written_and_acked_data() {
        let opts = ListenOptions {
            mptcp: true,
            ..ListenOptions::default()
        };
        let l = listen("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        if l.proto != Proto::Mptcp {
            eprintln!("SKIPPED mptcp_info: this kernel has no MPTCP");
            return;
        }
        let addr = l.listener.local_addr().unwrap();
        let mptcp = ConnectOptions {
            mptcp: true,
            ..ConnectOptions::default()
        };
        let c = connect(addr, &mptcp).await.unwrap();
        let (_s, _) = l.listener.accept().await.unwrap();
        let before = mptcp_info(&c.stream).expect("MPTCP_INFO on an MPTCP socket");
        write_all(&c.stream, &[7u8; 10_000]).await.unwrap();
        wait_data_acked(&c.stream, Duration::from_secs(5))
            .await
            .unwrap();
        let after = mptcp_info(&c.stream).unwrap();
        assert_eq!(after.write_seq.wrapping_sub(before.write_seq), 10_000);
        assert_eq!(after.snd_una, after.write_seq, "all data-acked");
        assert_eq!(after.flags & MPTCP_INFO_FLAG_FALLBACK, 0);
        // A plain TCP socket has no MPTCP_INFO; its send queue empties once acknowledged.
        let tcp = connect(addr, &ConnectOptions::default()).await.unwrap();
        assert!(mptcp_info(&tcp.stream).is_none());
        write_all(&tcp.stream, &[7u8; 10_000]).await.unwrap();
        wait_data_acked(&tcp.stream, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(unacked_bytes(&tcp.stream), Some(0));
    }
}
