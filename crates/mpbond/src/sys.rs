//! Thin, checked wrappers over the few socket calls that `socket2` does not offer.

use std::io;
use std::os::fd::RawFd;

/// `setsockopt` of an `int` option.
pub(crate) fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` lives for the call and its size is passed; the kernel copies it.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A plain C value: all zeros is one, and so is any sequence of bytes the kernel writes into it.
///
/// # Safety
/// Implement only for integers and `#[repr(C)]` aggregates of them.
pub(crate) unsafe trait Plain: Copy {
    /// The all-zero value.
    fn zeroed() -> Self {
        // SAFETY: the trait's contract.
        unsafe { std::mem::zeroed() }
    }
}

// SAFETY: integers and C structs of integers.
unsafe impl Plain for libc::c_int {}
// SAFETY: as above.
unsafe impl Plain for u64 {}
// SAFETY: as above.
unsafe impl Plain for [u32; 9] {}
// SAFETY: as above.
unsafe impl Plain for libc::tcp_info {}
// SAFETY: as above.
unsafe impl Plain for libc::tpacket_stats {}

/// `getsockopt` into `value`, which may also carry input to the kernel (as `MPTCP_TCPINFO`'s
/// header does); the kernel writes at most `size_of::<T>()` bytes.
pub(crate) fn getsockopt_into<T: Plain>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &mut T,
) -> io::Result<()> {
    let mut len = libc::socklen_t::try_from(size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` and `len` outlive the call; the kernel writes at most `len` bytes, and
    // any bytes make a valid `T` (`Plain`).
    let ret = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            std::ptr::from_mut(value).cast(),
            &raw mut len,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `getsockopt` of an option whose value is a plain C value of type `T`.
pub(crate) fn getsockopt<T: Plain>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<T> {
    let mut value = T::zeroed();
    getsockopt_into(fd, level, name, &mut value)?;
    Ok(value)
}

/// `getsockopt` of an `int` option.
pub(crate) fn getsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    getsockopt(fd, level, name)
}

/// `SO_MEMINFO`: the socket's `sk_meminfo` (`SK_MEMINFO_*` indices: 0 `rmem_alloc`, 1 `rcvbuf`,
/// 2 `wmem_alloc`, 3 `sndbuf`, 4 `fwd_alloc`, 5 `wmem_queued`, 6 `optmem`, 7 `backlog`,
/// 8 `drops`).
pub(crate) fn meminfo(fd: RawFd) -> io::Result<[u32; 9]> {
    getsockopt(fd, libc::SOL_SOCKET, libc::SO_MEMINFO)
}

/// An `ioctl` that writes one `int` (`FIONREAD`, `TIOCOUTQ`, ...), its value as a count.
pub(crate) fn ioctl_count(fd: RawFd, request: libc::Ioctl) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: these requests write one int into `n`, which outlives the call.
    let ret = unsafe { libc::ioctl(fd, request, &raw mut n) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

/// `ioctl(FIONREAD)`: bytes ready to be read (for MPTCP: in order at the connection level).
pub(crate) fn readable_bytes(fd: RawFd) -> io::Result<usize> {
    ioctl_count(fd, libc::FIONREAD)
}

/// The interface index of `name` in the calling thread's network namespace.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index)
    }
}
/// Raises this process's limit of open descriptors to its hard limit (a daemon holds two per
/// relayed connection, and systemd's default soft limit is 1024) and returns the limit now.
///
/// # Errors
/// If the limit cannot be read.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above; raising the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            lim = raised;
        }
    }
    Ok(lim.rlim_cur)
}
