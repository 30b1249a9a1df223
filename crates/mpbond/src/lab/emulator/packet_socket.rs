//! `AF_PACKET` sockets bound to one interface, read with `recvmmsg` and written with `sendmmsg`,
//! in batches, with the kernel's receive timestamp of every frame.
//!
//! This is the only module of the emulator that talks to the kernel with raw system calls;
//! every `unsafe` block states what it relies on.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "C structures take narrower integer types; every value cast here is a small \
              constant, an interface-name byte, or a length bounded by BATCH or MAX_FRAME"
)]

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use crate::sys::setsockopt_int;

/// Largest frame the emulator carries: a 1500-byte MTU plus Ethernet and VLAN headers fits, and
/// anything longer (a jumbo MTU set by hand) is counted as an error and dropped.
pub const MAX_FRAME: usize = 2048;

/// Frames read or written per system call.
pub const BATCH: usize = 64;

/// Room for one `SCM_TIMESTAMPNS` control message (and some slack for others).
const CMSG_ROOM: usize = 64;

/// A control-message buffer, aligned as `cmsghdr` requires (the `CMSG_*` walk makes references
/// to headers inside it).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct CmsgSpace(pub(crate) [u8; CMSG_ROOM]);

impl Default for CmsgSpace {
    fn default() -> Self {
        CmsgSpace([0; CMSG_ROOM])
    }
}

/// Socket buffer size asked for: a few milliseconds of a 10 Gbit/s burst, so a scheduling
/// hiccup of the emulator does not become loss.
const SOCKET_BUFFER: libc::c_int = 32 << 20;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub use crate::sys::if_index;

/// A raw packet socket that sees every frame arriving on one interface and sends frames out of
/// it unchanged.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifname: String,
}

impl PacketSocket {
    /// Opens a socket bound to `ifname`. It receives only frames arriving on that interface
    /// (never its own transmissions), bypasses the qdisc when sending, and timestamps every
    /// received frame.
    pub fn bind(ifname: &str) -> io::Result<Self> {
        let index = if_index(ifname)?;
        // Protocol 0 receives nothing until `bind` names the interface, so no frame of another
        // interface slips in between the two calls.
        // SAFETY: plain system call with constant arguments.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
        setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)?;
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if setsockopt_int(raw, libc::SOL_SOCKET, force, SOCKET_BUFFER).is_err() {
                setsockopt_int(raw, libc::SOL_SOCKET, plain, SOCKET_BUFFER)?;
            }
        }
        setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
        // SAFETY: all-zero is a valid `sockaddr_ll`.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::sa_family_t;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = libc::c_int::try_from(index)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `addr` is a valid sockaddr_ll and its exact size is passed.
        cvt(unsafe {
            libc::bind(
                raw,
                ptr::from_ref(&addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(PacketSocket {
            fd,
            ifname: ifname.to_owned(),
        })
    }

    /// The interface this socket is bound to.
    #[must_use]
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Frames the kernel dropped because this socket's buffer was full, since the last call
    /// (reading the counters resets them).
    pub fn take_drops(&self) -> io::Result<u32> {
        let stats: libc::tpacket_stats = crate::sys::getsockopt(
            self.fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
        )?;
        Ok(stats.tp_drops)
    }

    /// Receives up to [`BATCH`] frames into `batch` without blocking. Returns how many arrived
    /// (0 when none was waiting).
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.prepare();
        // SAFETY: `prepare` pointed every header at buffers owned by `batch`, which outlive the
        // call and are not otherwise borrowed; lengths match the buffers.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                batch.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                _ => Err(e),
            };
        }
        let n = usize::try_from(n).unwrap_or(0);
        batch.len = n;
        Ok(n)
    }

    /// Sends `frames` in one system call. Returns how many the kernel took; an error is
    /// returned only when the first frame failed.
    pub fn send_batch(&self, frames: &[&[u8]]) -> io::Result<usize> {
        let n = frames.len().min(BATCH);
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: all-zero `iovec`s and `mmsghdr`s are valid (null pointers, zero lengths).
        let mut iovecs: [libc::iovec; BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, frame) in frames[..n].iter().enumerate() {
            // The kernel only reads from send buffers; the cast to *mut is what iovec requires.
            iovecs[i].iov_base = frame.as_ptr().cast_mut().cast();
            iovecs[i].iov_len = frame.len();
            headers[i].msg_hdr.msg_iov = &raw mut iovecs[i];
            headers[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at one iovec describing a live frame slice; the socket
        // is bound, so no destination address is needed.
        let sent = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                headers.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(usize::try_from(sent).unwrap_or(0))
        }
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Buffers and headers for one `recvmmsg` call, reused across calls.
pub struct RecvBatch {
    buffers: Box<[[u8; MAX_FRAME]]>,
    control: Box<[CmsgSpace]>,
    iovecs: Box<[libc::iovec; BATCH]>,
    headers: Box<[libc::mmsghdr; BATCH]>,
    len: usize,
}

// SAFETY: the raw pointers inside the headers point only into the batch's own boxed buffers,
// which move with it; nothing is shared with another thread.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// One received frame.
#[derive(Debug)]
pub struct Received<'a> {
    /// The frame, from the Ethernet header on.
    pub data: &'a [u8],
    /// The frame did not fit in [`MAX_FRAME`] bytes and was cut.
    pub truncated: bool,
    /// Kernel receive time, `CLOCK_REALTIME` nanoseconds, if the kernel gave one.
    pub realtime_ns: Option<u64>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// Allocates the batch's buffers.
    #[must_use]
    pub fn new() -> Self {
        RecvBatch {
            buffers: vec![[0; MAX_FRAME]; BATCH].into_boxed_slice(),
            control: vec![CmsgSpace::default(); BATCH].into_boxed_slice(),
            // SAFETY: all-zero iovecs and mmsghdrs are valid values.
            iovecs: Box::new(unsafe { zeroed() }),
            // SAFETY: as above.
            headers: Box::new(unsafe { zeroed() }),
            len: 0,
        }
    }

    fn prepare(&mut self) {
        self.len = 0;
        for i in 0..BATCH {
            self.iovecs[i].iov_base = self.buffers[i].as_mut_ptr().cast();
            self.iovecs[i].iov_len = MAX_FRAME;
            let h = &mut self.headers[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = ptr::null_mut();
            h.msg_hdr.msg_namelen = 0;
            h.msg_hdr.msg_iov = &raw mut self.iovecs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.control[i].0.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = CMSG_ROOM;
            h.msg_hdr.msg_flags = 0;
        }
    }

    /// Number of frames received by the last call.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the last call received nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th frame of the last call.
    ///
    /// # Panics
    /// If `i` is not below [`RecvBatch::len`].
    #[must_use]
    pub fn get(&self, i: usize) -> Received<'_> {
        assert!(i < self.len, "frame {i} of a batch of {}", self.len);
        let h = &self.headers[i];
        let len = (h.msg_len as usize).min(MAX_FRAME);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        Received {
            data: &self.buffers[i][..len],
            truncated,
            realtime_ns: timestamp(&h.msg_hdr),
        }
    }
}

/// The `SCM_TIMESTAMPNS` of a message filled by `recvmsg`/`recvmmsg`, if present.
pub(crate) fn timestamp(msg: &libc::msghdr) -> Option<u64> {
    // SAFETY: `msg` was filled by recvmmsg: msg_control points at our buffer and msg_controllen
    // is the length the kernel wrote, so the CMSG_* walk stays inside it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let secs = u64::try_from(ts.tv_sec).ok()?;
                let nanos = u64::try_from(ts.tv_nsec).ok()?;
                return Some(secs * 1_000_000_000 + nanos);
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

/// Current time of `clock` in nanoseconds.
#[must_use]
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    // SAFETY: all-zero is a valid timespec.
    let mut ts: libc::timespec = unsafe { zeroed() };
    // SAFETY: `ts` is valid for writes; CLOCK_MONOTONIC and CLOCK_REALTIME always exist.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// `CLOCK_MONOTONIC`, ns.
#[must_use]
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Sets or clears `IFF_UP` on `ifname` in the calling thread's namespace.
pub fn set_link_up(ifname: &str, up: bool) -> io::Result<()> {
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: plain system call with constant arguments.
    let raw =
        cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name; SIOCGIFFLAGS fills ifru_flags.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) })?;
    // SAFETY: reading the union member the previous ioctl wrote.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let up_flag = libc::IFF_UP as libc::c_short;
    req.ifr_ifru.ifru_flags = if up {
        flags | up_flag
    } else {
        flags & !up_flag
    };
    // SAFETY: as above, with the flags to set.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const req) })?;
    Ok(())
}
