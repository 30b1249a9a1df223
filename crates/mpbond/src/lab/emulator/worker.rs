//! The real-time loop of one line: reads frames from both ends, asks the [`LinkModel`] of their
//! direction what to do, holds accepted frames until their delivery time, and sends them out of
//! the other end.
//!
//! One thread per line, so a busy line cannot delay another line's deliveries. The thread sleeps
//! in `ppoll` until a frame arrives, the next delivery is due, or the control thread changes the
//! line (an eventfd). Arrival times are the kernel's receive timestamps, so a late wake-up of
//! this thread delays frames but does not distort the rate or delay they are given.

use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::model::{DropReason, LinkModel, Serialiser, Verdict};
use super::packet_socket::{BATCH, MAX_FRAME, PacketSocket, RecvBatch, clock_ns, monotonic_ns};
use super::stats::{DirCounters, LineState};
use crate::lab::spec::{DirectionSpec, LineSpec};

/// Longest sleep without looking at the shutdown flag.
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// How often the kernel's overrun counters are collected.
const OVERRUN_POLL_NS: u64 = 100_000_000;

/// Batches read from one socket before deliveries get a turn: one, so that a burst on one side
/// never holds back deliveries that are due.
const MAX_READ_BATCHES: usize = 1;

/// Frames held per direction before new ones are refused, whatever the settings: bounds the
/// emulator's memory to 256 Ki × 2 KiB = 512 MiB per direction in the worst case.
const MAX_HELD_FRAMES: usize = 256 * 1024;

/// Free frame buffers kept for reuse (32 MiB).
const MAX_POOLED: usize = 16 * 1024;

/// Desired settings of a line, written by the control thread.
#[derive(Debug, Clone)]
pub struct LineControl {
    /// Up, down or blackholed.
    pub state: LineState,
    /// Upstream (index 0) and downstream (index 1) settings.
    pub params: [DirectionSpec; 2],
}

/// What a line's worker and the control thread share.
#[derive(Debug)]
pub struct LineShared {
    /// Line name.
    pub name: String,
    /// Desired settings.
    pub control: Mutex<LineControl>,
    /// Bumped after every change of `control`.
    pub generation: AtomicU64,
    /// Last generation the worker has applied, with a condvar to wait for it.
    pub applied: Mutex<u64>,
    applied_cv: Condvar,
    /// Wakes the worker.
    wake: OwnedFd,
    /// Upstream (0) and downstream (1) counters.
    pub counters: [DirCounters; 2],
}

impl LineShared {
    /// Shared state for `line`, up.
    pub fn new(line: &LineSpec) -> io::Result<Self> {
        // SAFETY: plain system call with constant arguments.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LineShared {
            name: line.name.clone(),
            control: Mutex::new(LineControl {
                state: LineState::Up,
                params: [line.upstream.clone(), line.downstream.clone()],
            }),
            generation: AtomicU64::new(0),
            applied: Mutex::new(0),
            applied_cv: Condvar::new(),
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
            counters: [DirCounters::default(), DirCounters::default()],
        })
    }

    /// Changes the desired settings with `f`, wakes the worker and waits until it has applied
    /// them, so that when this returns the line already behaves the new way.
    pub fn update(&self, f: impl FnOnce(&mut LineControl)) -> io::Result<()> {
        let generation = {
            let mut c = self
                .control
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut c);
            self.generation.fetch_add(1, Ordering::AcqRel) + 1
        };
        self.poke();
        let applied = self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (applied, timeout) = self
            .applied_cv
            .wait_timeout_while(applied, Duration::from_secs(2), |a| *a < generation)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if timeout.timed_out() && *applied < generation {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the line's worker did not respond",
            ));
        }
        Ok(())
    }

    /// Wakes the worker out of its sleep.
    pub fn poke(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A full counter (EAGAIN) means a
        // wake-up is already pending, which is all we want.
        unsafe { libc::write(self.wake.as_raw_fd(), std::ptr::from_ref(&one).cast(), 8) };
    }

    fn clear_wake(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN when nothing was pending is fine.
        unsafe { libc::read(self.wake.as_raw_fd(), std::ptr::from_mut(&mut v).cast(), 8) };
    }

    fn mark_applied(&self, generation: u64) {
        let mut a = self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *a = generation;
        self.applied_cv.notify_all();
    }
}

/// A frame held by the emulator.
struct Frame {
    at: u64,
    seq: u64,
    len: u16,
    buf: Box<[u8; MAX_FRAME]>,
}

impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Frame {}
impl PartialOrd for Frame {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Frame {
    // Reversed: BinaryHeap is a max-heap and we want the earliest frame on top.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Frames waiting for their delivery time. Frames that come in order (the common case, and the
/// only one without `reorder`) go to a FIFO; frames that would overtake go to a heap.
#[derive(Default)]
struct DelayLine {
    fifo: VecDeque<Frame>,
    heap: BinaryHeap<Frame>,
    next_seq: u64,
}

impl DelayLine {
    fn len(&self) -> usize {
        self.fifo.len() + self.heap.len()
    }

    fn push(&mut self, at: u64, len: u16, buf: Box<[u8; MAX_FRAME]>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let frame = Frame { at, seq, len, buf };
        if self.fifo.back().is_none_or(|b| b.at <= at) {
            self.fifo.push_back(frame);
        } else {
            self.heap.push(frame);
        }
    }

    fn next_due(&self) -> Option<u64> {
        match (self.fifo.front(), self.heap.peek()) {
            (Some(a), Some(b)) => Some(a.at.min(b.at)),
            (a, b) => a.or(b).map(|f| f.at),
        }
    }

    /// Removes the earliest frame if it is due at `now`.
    fn pop_due(&mut self, now: u64) -> Option<Frame> {
        let from_heap = match (self.fifo.front(), self.heap.peek()) {
            (Some(a), Some(b)) => b.at < a.at,
            (None, Some(_)) => true,
            _ => false,
        };
        if from_heap {
            if self.heap.peek().is_some_and(|f| f.at <= now) {
                return self.heap.pop();
            }
        } else if self.fifo.front().is_some_and(|f| f.at <= now) {
            return self.fifo.pop_front();
        }
        None
    }

    fn drain(&mut self) -> impl Iterator<Item = Frame> + '_ {
        self.fifo.drain(..).chain(self.heap.drain())
    }
}

/// One direction: frames read from one socket go through `model` and out of the other.
struct Direction {
    model: LinkModel,
    line: DelayLine,
}

/// Free frame buffers, boxed so a frame moves between queue and pool without copying 2 KiB.
type Pool = Vec<Box<[u8; MAX_FRAME]>>;

/// A line's worker thread state.
struct Worker<'a> {
    shared: &'a LineShared,
    /// `[0]` faces the gateway, `[1]` the vps.
    sockets: &'a [PacketSocket; 2],
    /// Upstream (reads socket 0, writes socket 1) and downstream (the reverse).
    dirs: [Direction; 2],
    state: LineState,
    applied: u64,
    pool: Pool,
    batch: RecvBatch,
    next_overrun_poll: u64,
}

/// Runs the line until `shutdown` is set. `sockets[0]` faces the gateway, `sockets[1]` the vps;
/// upstream reads 0 and writes 1, downstream the reverse. `serialisers` are the upstream and
/// downstream serialisers this line shares with others (`share=`), if it does.
pub fn run(
    shared: &Arc<LineShared>,
    sockets: &[PacketSocket; 2],
    seeds: [u64; 2],
    serialisers: [Option<Arc<Serialiser>>; 2],
    shutdown: &AtomicBool,
) {
    let [up_serialiser, down_serialiser] = serialisers;
    let (state, params) = {
        let c = shared
            .control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (c.state, c.params.clone())
    };
    realtime_priority(&shared.name);
    let mut w = Worker {
        shared,
        sockets,
        dirs: [
            Direction {
                model: LinkModel::new(&params[0], seeds[0]).sharing(up_serialiser),
                line: DelayLine::default(),
            },
            Direction {
                model: LinkModel::new(&params[1], seeds[1]).sharing(down_serialiser),
                line: DelayLine::default(),
            },
        ],
        state,
        applied: 0,
        pool: Vec::new(),
        batch: RecvBatch::new(),
        next_overrun_poll: 0,
    };
    while !shutdown.load(Ordering::Relaxed) {
        w.apply_control();
        let readable = w.wait();
        for (k, ready) in readable.into_iter().enumerate() {
            if ready {
                w.receive(k);
            }
        }
        let now = monotonic_ns();
        w.deliver_due(now);
        w.collect_overruns(now);
    }
}

impl Worker<'_> {
    /// Applies settings changed by the control thread since the last look.
    fn apply_control(&mut self) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation == self.applied {
            return;
        }
        let c = self
            .shared
            .control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let now = monotonic_ns();
        for (d, p) in self.dirs.iter_mut().zip(&c.params) {
            d.model.set_params(p);
        }
        if c.state != LineState::Up {
            // The line is cut: what was queued or on the wire is lost with it.
            for (d, counters) in self.dirs.iter_mut().zip(&self.shared.counters) {
                d.model.flush(now);
                let mut n = 0;
                for f in d.line.drain() {
                    self.pool.push(f.buf);
                    n += 1;
                }
                counters.dropped_down.fetch_add(n, Ordering::Relaxed);
                counters.in_flight_packets.store(0, Ordering::Relaxed);
            }
        }
        self.state = c.state;
        self.applied = generation;
        self.shared.mark_applied(generation);
    }

    /// Sleeps until a frame arrives, the next delivery is due, or the control thread pokes us.
    /// Returns which sockets are readable.
    fn wait(&mut self) -> [bool; 2] {
        let now = monotonic_ns();
        let max_sleep = u64::try_from(MAX_SLEEP.as_nanos()).unwrap_or(u64::MAX);
        let next_due = self.dirs.iter().filter_map(|d| d.line.next_due()).min();
        let sleep_ns = next_due
            .map_or(max_sleep, |t| t.saturating_sub(now))
            .min(max_sleep);
        let mut fds = [
            libc::pollfd {
                fd: self.sockets[0].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.sockets[1].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.shared.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // A zero timeout (something is due already) only looks at what is readable.
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(sleep_ns / 1_000_000_000).unwrap_or(0),
            tv_nsec: libc::c_long::try_from(sleep_ns % 1_000_000_000).unwrap_or(0),
        };
        // SAFETY: `fds` is a live array of 3 pollfds and `ts` a valid timespec.
        unsafe { libc::ppoll(fds.as_mut_ptr(), 3, &raw const ts, std::ptr::null()) };
        if fds[2].revents != 0 {
            self.shared.clear_wake();
        }
        [fds[0].revents != 0, fds[1].revents != 0]
    }

    /// Reads what socket `k` has and runs it through direction `k`'s model.
    fn receive(&mut self, k: usize) {
        let counters = &self.shared.counters[k];
        for _ in 0..MAX_READ_BATCHES {
            let n = match self.sockets[k].recv_batch(&mut self.batch) {
                Ok(n) => n,
                // A link that went down reports ENETDOWN once; nothing is lost by it.
                Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => 0,
                Err(e) => {
                    tracing::warn!(line = %self.shared.name, socket = self.sockets[k].ifname(), "receive: {e}");
                    0
                }
            };
            if n == 0 {
                break;
            }
            // Kernel timestamps are CLOCK_REALTIME; map them onto CLOCK_MONOTONIC.
            let mono = monotonic_ns();
            let offset = clock_ns(libc::CLOCK_REALTIME).wrapping_sub(mono);
            let dir = &mut self.dirs[k];
            for i in 0..n {
                let frame = self.batch.get(i);
                let len = frame.data.len();
                counters.arrived_packets.fetch_add(1, Ordering::Relaxed);
                counters
                    .arrived_bytes
                    .fetch_add(len as u64, Ordering::Relaxed);
                if frame.truncated {
                    counters.dropped_error.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if self.state != LineState::Up {
                    counters.dropped_down.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if dir.line.len() >= MAX_HELD_FRAMES {
                    counters.dropped_memory.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let arrival = frame
                    .realtime_ns
                    .map_or(mono, |t| t.wrapping_sub(offset).min(mono));
                match dir.model.on_arrival(arrival, len) {
                    Verdict::Drop(DropReason::Loss) => {
                        counters.dropped_loss.fetch_add(1, Ordering::Relaxed);
                    }
                    Verdict::Drop(DropReason::QueueFull) => {
                        counters.dropped_queue.fetch_add(1, Ordering::Relaxed);
                    }
                    Verdict::Deliver(at) => {
                        let mut buf = self.pool.pop().unwrap_or_else(|| Box::new([0; MAX_FRAME]));
                        buf[..len].copy_from_slice(frame.data);
                        #[expect(clippy::cast_possible_truncation, reason = "len ≤ MAX_FRAME")]
                        dir.line.push(at, len as u16, buf);
                    }
                }
            }
            if n < BATCH {
                break;
            }
        }
    }

    /// Sends what is due in both directions and publishes the gauges.
    fn deliver_due(&mut self, now: u64) {
        for (k, (dir, counters)) in self.dirs.iter_mut().zip(&self.shared.counters).enumerate() {
            deliver(dir, &self.sockets[1 - k], counters, now, &mut self.pool);
            counters
                .in_flight_packets
                .store(dir.line.len() as u64, Ordering::Relaxed);
            counters
                .backlog_ns
                .store(dir.model.backlog_ns(now), Ordering::Relaxed);
        }
    }

    /// Adds the kernel's count of frames it dropped for want of room in our sockets.
    fn collect_overruns(&mut self, now: u64) {
        if now < self.next_overrun_poll {
            return;
        }
        self.next_overrun_poll = now + OVERRUN_POLL_NS;
        for (socket, counters) in self.sockets.iter().zip(&self.shared.counters) {
            if let Ok(drops) = socket.take_drops() {
                counters
                    .dropped_overrun
                    .fetch_add(u64::from(drops), Ordering::Relaxed);
            }
        }
    }
}

/// Sends every frame of `dir` that is due at `now`.
fn deliver(
    dir: &mut Direction,
    tx: &PacketSocket,
    counters: &DirCounters,
    now: u64,
    pool: &mut Pool,
) {
    if dir.line.next_due().is_none_or(|t| t > now) {
        return;
    }
    let mut due: Vec<Frame> = Vec::with_capacity(BATCH);
    loop {
        while due.len() < BATCH {
            match dir.line.pop_due(now) {
                Some(f) => due.push(f),
                None => break,
            }
        }
        if due.is_empty() {
            return;
        }
        let mut failed = [false; BATCH];
        {
            let slices: Vec<&[u8]> = due.iter().map(|f| &f.buf[..usize::from(f.len)]).collect();
            let mut next = 0;
            while next < slices.len() {
                match tx.send_batch(&slices[next..]) {
                    Ok(0) => {
                        failed[next..slices.len()].fill(true);
                        break;
                    }
                    Ok(n) => next += n,
                    Err(e) => {
                        // This frame is lost (the link went down under it, say); go on.
                        if e.raw_os_error() != Some(libc::ENETDOWN) {
                            tracing::debug!(socket = tx.ifname(), "send: {e}");
                        }
                        failed[next] = true;
                        next += 1;
                    }
                }
            }
        }
        for (f, failed) in due.iter().zip(failed) {
            if failed {
                counters.dropped_error.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.record_lateness(now.saturating_sub(f.at));
                counters.delivered_packets.fetch_add(1, Ordering::Relaxed);
                counters
                    .delivered_bytes
                    .fetch_add(u64::from(f.len), Ordering::Relaxed);
            }
        }
        pool.extend(due.drain(..).map(|f| f.buf));
        pool.truncate(MAX_POOLED);
    }
}

/// Real-time priority of the line threads: above every normal process, so a busy host in the
/// lab cannot delay deliveries, and low among real-time priorities. The kernel's real-time
/// throttling (`sched_rt_runtime_us`) still leaves 5 % of each CPU to everyone else.
const REALTIME_PRIORITY: libc::c_int = 10;

/// Puts the calling thread in `SCHED_FIFO` at [`REALTIME_PRIORITY`], or says why not.
fn realtime_priority(line: &str) {
    let param = libc::sched_param {
        sched_priority: REALTIME_PRIORITY,
    };
    // SAFETY: `param` is valid for the call; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) } != 0 {
        tracing::warn!(
            line,
            "no real-time priority ({}); deliveries may be late under load",
            io::Error::last_os_error()
        );
    }
}
