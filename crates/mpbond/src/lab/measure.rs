//! Measuring a lab's lines from inside its hosts: TCP goodput of one kernel flow, UDP round-trip
//! times, and a timestamped UDP stream (for loss and outage timing). Each side runs on its own
//! thread inside its host's namespace, so no external tool is needed. Also the CPU time a
//! process spent (benchmarks' cost figures).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::emulator::packet_socket::{CmsgSpace, clock_ns, timestamp};
use super::netns::in_netns;
use super::plan::{LabInfo, Role};
use crate::units::Rate;

/// Share of a line's rate that TCP payload can use with 1500-byte frames: Ethernet (14), IP
/// (20 or 40), TCP (20) and timestamp option (12) bytes ride along with every segment.
#[must_use]
pub fn tcp_payload_share(ipv6: bool) -> f64 {
    let ip = if ipv6 { 40.0 } else { 20.0 };
    (1500.0 - ip - 20.0 - 12.0) / 1514.0
}

/// The goodput one TCP flow can reach on a line of rate `rate`, bit/s.
#[must_use]
pub fn expected_goodput(rate: Rate, ipv6: bool) -> f64 {
    rate.bps() as f64 * tcp_payload_share(ipv6)
}

/// Result of [`tcp_goodput`].
#[derive(Debug, Clone, Copy)]
pub struct Goodput {
    /// Goodput in the measured window, bit/s: the least-squares slope of bytes received over
    /// time. Unlike (bytes at end − bytes at start) / time, the slope is barely moved by a burst
    /// at the window's edge, such as out-of-order data released when a loss recovery ends just
    /// after the warm-up mark.
    pub bps: f64,
    /// Length of the measured window.
    pub window: Duration,
    /// Payload bytes received in all.
    pub total_bytes: u64,
}

impl Goodput {
    /// Bits per second in the measured window.
    #[must_use]
    pub fn bps(&self) -> f64 {
        self.bps
    }
}

/// Least-squares slope of `(seconds, bytes)` samples, in bit/s.
fn slope_bps(samples: &[(f64, f64)]) -> f64 {
    if samples.len() < 2 {
        return 0.0;
    }
    let n = samples.len() as f64;
    let (sx, sy) = samples
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = samples.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den > 0.0 { 8.0 * num / den } else { 0.0 }
}

/// Clock ticks per second of `/proc`'s CPU times.
fn clock_ticks() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&hz| hz > 0)
}

fn ticks_to_duration(ticks: u64, hz: u64) -> Duration {
    Duration::from_micros(ticks.saturating_mul(1_000_000) / hz)
}

/// CPU time (user + system) process `pid` has used so far, from `/proc/PID/stat` (the
/// scheduler's run time split by tick samples; all its threads, also those that ended).
#[must_use]
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_cpu(&stat, clock_ticks()?)
}

/// utime + stime of a `/proc/PID/stat` line.
fn parse_process_cpu(stat: &str, hz: u64) -> Option<Duration> {
    // The command name (field 2) may hold spaces and parentheses: fields are counted after the
    // last `)`. utime and stime are fields 14 and 15, the 12th and 13th after it.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ticks_to_duration(utime + stime, hz))
}

fn timeout_err(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

/// Sends data over one TCP connection from host `from` to a listener in host `to` at `dst` for
/// `duration`, and measures the receiver's goodput after the first `warmup` (slow start).
pub fn tcp_goodput(
    info: &LabInfo,
    from: Role,
    to: Role,
    dst: IpAddr,
    duration: Duration,
    warmup: Duration,
) -> io::Result<Goodput> {
    let (from_ns, to_ns) = (info.netns(from).to_owned(), info.netns(to).to_owned());
    let (port_tx, port_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let receiver = s.spawn(move || {
            in_netns(&to_ns, move || -> io::Result<Goodput> {
                let listener = TcpListener::bind((dst, 0))?;
                let _ = port_tx.send(listener.local_addr()?.port());
                let (mut conn, _) = accept_timeout(&listener, Duration::from_secs(10))?;
                conn.set_read_timeout(Some(Duration::from_secs(10)))?;
                // Small reads keep the receiver caught up, so bytes that arrived before the warm-up mark
                // are not counted after it.
                let mut buf = vec![0u8; 16 * 1024];
                let mut total = 0u64;
                let mut start: Option<Instant> = None;
                let mut samples: Vec<(f64, f64)> = Vec::new();
                loop {
                    let n = conn.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    let now = Instant::now();
                    total += n as u64;
                    let since = now.duration_since(*start.get_or_insert(now));
                    if since >= warmup {
                        samples.push((since.as_secs_f64(), total as f64));
                    }
                }
                let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
                    return Err(timeout_err("transfer ended before the warm-up did"));
                };
                let window = Duration::from_secs_f64(last.0 - first.0);
                Ok(Goodput {
                    bps: slope_bps(&samples),
                    window,
                    total_bytes: total,
                })
            })?
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| timeout_err("receiver did not start"))?;
        let sender = s.spawn(move || {
            in_netns(&from_ns, move || -> io::Result<()> {
                let mut conn = TcpStream::connect_timeout(
                    &SocketAddr::new(dst, port),
                    Duration::from_secs(10),
                )?;
                conn.set_write_timeout(Some(Duration::from_secs(10)))?;
                let chunk = vec![0x5au8; 64 * 1024];
                let start = Instant::now();
                while start.elapsed() < duration {
                    conn.write_all(&chunk)?;
                }
                conn.shutdown(Shutdown::Write)?;
                // Wait for the receiver to close, so the measurement covers the whole transfer.
                let _ = conn.read(&mut [0u8; 1]);
                Ok(())
            })?
        });
        let sent = sender
            .join()
            .map_err(|_| io::Error::other("sender panicked"))?;
        let got = receiver
            .join()
            .map_err(|_| io::Error::other("receiver panicked"))?;
        sent?;
        got
    })
}

/// Runs [`tcp_goodput`] over every line at once, one flow per line: downstream (vps → gw) or
/// upstream (gw → vps), each flow to the other end's address on its line. Results are in the
/// order of `info.lines`.
pub fn tcp_goodput_per_line(
    info: &LabInfo,
    upstream: bool,
    duration: Duration,
    warmup: Duration,
) -> io::Result<Vec<Goodput>> {
    std::thread::scope(|s| {
        let flows: Vec<_> = info
            .lines
            .iter()
            .map(|l| {
                s.spawn(move || {
                    let missing =
                        || io::Error::other(format!("line {} has no IPv4 address", l.name));
                    let (from, to, dst) = if upstream {
                        (
                            Role::Gw,
                            Role::Vps,
                            info.vps_line_addr(&l.name, false).ok_or_else(missing)?,
                        )
                    } else {
                        (
                            Role::Vps,
                            Role::Gw,
                            info.gw_line_addr(&l.name, false).ok_or_else(missing)?,
                        )
                    };
                    tcp_goodput(info, from, to, dst, duration, warmup).map_err(|e| {
                        io::Error::new(e.kind(), format!("TCP flow over {}: {e}", l.name))
                    })
                })
            })
            .collect();
        flows
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| io::Error::other("flow thread panicked"))?
            })
            .collect()
    })
}

/// A UDP socket on an ephemeral port of the right family, connected to `dst`.
fn connected_udp(dst: IpAddr, port: u16) -> io::Result<UdpSocket> {
    let unspecified: IpAddr = if dst.is_ipv4() {
        [0, 0, 0, 0].into()
    } else {
        [0u16; 8].into()
    };
    let sock = UdpSocket::bind((unspecified, 0))?;
    sock.connect((dst, port))?;
    Ok(sock)
}

fn accept_timeout(
    listener: &TcpListener,
    timeout: Duration,
) -> io::Result<(TcpStream, SocketAddr)> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((c, a)) => {
                c.set_nonblocking(false)?;
                return Ok((c, a));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(timeout_err("no connection came"));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Measures `count` UDP round trips from host `from` to an echo server in host `to` at `dst`, one
/// every `interval`. `None` marks a probe with no answer within a second.
pub fn udp_rtt(
    info: &LabInfo,
    from: Role,
    to: Role,
    dst: IpAddr,
    count: usize,
    interval: Duration,
) -> io::Result<Vec<Option<Duration>>> {
    let (from_ns, to_ns) = (info.netns(from).to_owned(), info.netns(to).to_owned());
    let (port_tx, port_rx) = mpsc::channel();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let stop = &stop;
        let echo = s.spawn(move || {
            in_netns(&to_ns, move || -> io::Result<()> {
                let sock = UdpSocket::bind((dst, 0))?;
                sock.set_read_timeout(Some(Duration::from_millis(50)))?;
                let _ = port_tx.send(sock.local_addr()?.port());
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    match sock.recv_from(&mut buf) {
                        Ok((n, peer)) => {
                            sock.send_to(&buf[..n], peer)?;
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })?
        });
        let result = (|| {
            let port = port_rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| timeout_err("echo server did not start"))?;
            in_netns(&from_ns, || -> io::Result<Vec<Option<Duration>>> {
                let sock = connected_udp(dst, port)?;
                let mut samples = Vec::with_capacity(count);
                let mut buf = [0u8; 64];
                for seq in 0..count as u64 {
                    let sent = Instant::now();
                    sock.send(&seq.to_be_bytes())?;
                    let mut sample = None;
                    while sent.elapsed() < Duration::from_secs(1) {
                        sock.set_read_timeout(Some(
                            Duration::from_secs(1)
                                .saturating_sub(sent.elapsed())
                                .max(Duration::from_millis(1)),
                        ))?;
                        match sock.recv(&mut buf) {
                            Ok(8) if buf[..8] == seq.to_be_bytes() => {
                                sample = Some(sent.elapsed());
                                break;
                            }
                            Ok(_) => {}
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                                ) =>
                            {
                                break;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    samples.push(sample);
                    if let Some(rest) = interval.checked_sub(sent.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
                Ok(samples)
            })?
        })();
        stop.store(true, Ordering::Relaxed);
        let echoed = echo
            .join()
            .map_err(|_| io::Error::other("echo server panicked"))?;
        let samples = result?;
        echoed?;
        Ok(samples)
    })
}

/// What a [`UdpStream`] saw.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    /// `CLOCK_REALTIME` ns at which each datagram was sent, indexed by sequence number.
    pub sent_at: Vec<u64>,
    /// `(sequence, kernel receive time in CLOCK_REALTIME ns)` of each datagram received.
    pub received: Vec<(u64, u64)>,
}

impl StreamReport {
    /// Datagrams sent and never received.
    #[must_use]
    pub fn lost(&self) -> usize {
        self.sent_at.len().saturating_sub(self.received.len())
    }
}

/// A steady stream of sequence-numbered UDP datagrams from one host to another, running in the
/// background while a test changes the lab; [`UdpStream::stop`] returns what was sent and what
/// arrived, with kernel receive timestamps.
///
/// Dropping it without [`UdpStream::stop`] (a test that failed) still stops both threads, so
/// none lingers in a removed lab's namespace.
#[derive(Debug)]
pub struct UdpStream {
    stop: Arc<AtomicBool>,
    sender: Option<JoinHandle<io::Result<Vec<u64>>>>,
    receiver: Option<JoinHandle<io::Result<Received>>>,
}

/// `(sequence, kernel receive time)` of each datagram a [`UdpStream`] received.
type Received = Vec<(u64, u64)>;

impl Drop for UdpStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl UdpStream {
    /// Starts sending `size`-byte datagrams every `interval` from `from` to `to` at `dst`, at most
    /// `limit` of them.
    pub fn start(
        info: &LabInfo,
        from: Role,
        to: Role,
        dst: IpAddr,
        interval: Duration,
        size: usize,
        limit: u64,
    ) -> io::Result<Self> {
        let (from_ns, to_ns) = (info.netns(from).to_owned(), info.netns(to).to_owned());
        let stop = Arc::new(AtomicBool::new(false));
        let (port_tx, port_rx) = mpsc::channel();
        let rx_stop = Arc::clone(&stop);
        let receiver = std::thread::spawn(move || {
            in_netns(&to_ns, move || -> io::Result<Vec<(u64, u64)>> {
                let sock = UdpSocket::bind((dst, 0))?;
                let one: libc::c_int = 1;
                // SAFETY: valid socket, option value lives for the call.
                unsafe {
                    libc::setsockopt(
                        sock.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_TIMESTAMPNS,
                        std::ptr::from_ref(&one).cast(),
                        4,
                    )
                };
                sock.set_read_timeout(Some(Duration::from_millis(20)))?;
                let _ = port_tx.send(sock.local_addr()?.port());
                let mut got = Vec::new();
                let mut drain_until = None;
                loop {
                    if drain_until.is_none() && rx_stop.load(Ordering::Relaxed) {
                        // Keep reading briefly for datagrams still on the wire.
                        drain_until = Some(Instant::now() + Duration::from_millis(600));
                    }
                    if drain_until.is_some_and(|t| Instant::now() > t) {
                        break;
                    }
                    match recv_stamped(&sock) {
                        Ok(Some((seq, at))) => got.push((seq, at)),
                        Ok(None) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(got)
            })?
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| timeout_err("receiver did not start"))?;
        let tx_stop = Arc::clone(&stop);
        let sender = std::thread::spawn(move || {
            in_netns(&from_ns, move || -> io::Result<Vec<u64>> {
                let sock = connected_udp(dst, port)?;
                let mut payload = vec![0u8; size.max(8)];
                let mut sent_at = Vec::new();
                let start = Instant::now();
                for seq in 0..limit {
                    if tx_stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let due = start + interval * u32::try_from(seq).unwrap_or(u32::MAX);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    payload[..8].copy_from_slice(&seq.to_be_bytes());
                    sent_at.push(clock_ns(libc::CLOCK_REALTIME));
                    // A line that is down may refuse the send; the datagram is simply lost.
                    let _ = sock.send(&payload);
                }
                Ok(sent_at)
            })?
        });
        Ok(UdpStream {
            stop,
            sender: Some(sender),
            receiver: Some(receiver),
        })
    }

    /// Waits until the sender has sent everything it was allowed to (or `stop` is called).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.sender.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops sending, waits for datagrams still in flight, and reports.
    pub fn stop(mut self) -> io::Result<StreamReport> {
        self.stop.store(true, Ordering::Relaxed);
        let gone = || io::Error::other("stream already stopped");
        let tx = self.sender.take().ok_or_else(gone)?;
        let rx = self.receiver.take().ok_or_else(gone)?;
        let sent_at = tx
            .join()
            .map_err(|_| io::Error::other("sender panicked"))??;
        let received = rx
            .join()
            .map_err(|_| io::Error::other("receiver panicked"))??;
        Ok(StreamReport { sent_at, received })
    }
}

/// Reads one datagram: its sequence number and kernel receive time. `None` on timeout.
fn recv_stamped(sock: &UdpSocket) -> io::Result<Option<(u64, u64)>> {
    let mut buf = [0u8; 2048];
    let mut control = CmsgSpace::default();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len();
    // SAFETY: `msg` points at live buffers of the lengths given.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(None),
            _ => Err(e),
        };
    }
    if n < 8 {
        return Ok(None);
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&buf[..8]);
    let at = timestamp(&msg).unwrap_or_else(|| clock_ns(libc::CLOCK_REALTIME));
    Ok(Some((u64::from_be_bytes(seq), at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_ignores_a_step_at_the_window_edge() {
        // 1 MB/s for 5 s, with 100 kB released in a burst just after the start.
        let mut samples: Vec<(f64, f64)> = (0..=500)
            .map(|i| (f64::from(i) * 0.01, f64::from(i) * 10_000.0))
            .collect();
        for s in samples.iter_mut().skip(1) {
            s.1 += 100_000.0;
        }
        let naive = 8.0 * (samples[500].1 - samples[0].1) / 5.0;
        let slope = slope_bps(&samples);
        assert!((naive / 8e6 - 1.02).abs() < 1e-9);
        assert!((slope / 8e6 - 1.0).abs() < 0.002, "{slope}");
    }

    #[test]
    fn cpu_times_are_read_from_proc() {
        let stat = "4242 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(parse_process_cpu(stat, 100), Some(Duration::from_secs(3)));
        assert!(process_cpu_time(std::process::id()).is_some());
    }

    #[test]
    fn payload_share_accounts_for_every_header() {
        assert!((tcp_payload_share(false) - 1448.0 / 1514.0).abs() < 1e-12);
        assert!((tcp_payload_share(true) - 1428.0 / 1514.0).abs() < 1e-12);
        assert!((expected_goodput(Rate::from_bps(20_000_000), false) - 19_128_137.0).abs() < 1.0);
    }
}
