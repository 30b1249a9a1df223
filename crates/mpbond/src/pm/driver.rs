//! The path manager's thread: it feeds [`Health`] and [`Manager`] with what the kernel says
//! (MPTCP events, link and address changes, probe replies) and carries out their commands
//! over generic netlink. One thread with `poll(2)`: the work is a few messages per second, and
//! a thread of its own keeps its timing (failover within a few hundred milliseconds) free of
//! the relays' load on the async runtime.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use netlink_sys::protocols::NETLINK_ROUTE;
use tracing::{debug, info, warn};

use super::cost::ProbeMeter;
use super::health::{Health, Pace, ProbeConfig, Verdict};
use super::manager::{Command, ConnStatus, Counters, LineConfig, Manager};
use super::probe::Prober;
use crate::netlink::mptcp_pm::PathManager;
use crate::netlink::pm_event::EventSocket;
use crate::netlink::route::{IfAddr, RouteSocket};

/// `RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR |
/// RTMGRP_IPV6_ROUTE`: a default route that comes after its address (DHCP) is seen too.
const RTNL_GROUPS: u32 = 0x1 | 0x10 | 0x40 | 0x100 | 0x400;

/// How often the lines' packet counters are read (a sign of life between probes, and whether
/// a line is in use).
const RX_POLL: Duration = super::health::COUNTER_PERIOD;

/// How often a line that is up but silent has its unresolved neighbours flushed.
const NEIGH_FLUSH: Duration = Duration::from_millis(200);

/// What the path manager is started with.
#[derive(Debug, Clone)]
pub struct PmConfig {
    /// The WAN lines.
    pub lines: Vec<LineConfig>,
    /// Peers whose connections get subflows (empty: every connection we opened).
    pub peers: Vec<IpAddr>,
    /// Where probes go (`None`: no probes).
    pub probe_target: Option<IpAddr>,
    /// Probe timing.
    pub probe: ProbeConfig,
    /// What connections we accepted are told of our addresses.
    pub announce: super::manager::Announce,
}

/// One line, for `mpbond status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LineStatus {
    /// Its name.
    pub name: String,
    /// A backup line.
    pub backup: bool,
    /// Health.
    pub state: Verdict,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// Smoothed probe round-trip time, milliseconds.
    pub probe_rtt_ms: Option<f64>,
    /// Probes sent.
    pub probes_sent: u64,
    /// Probes answered.
    pub probes_answered: u64,
    /// Subflows asked for on it.
    pub subflows_created: u64,
    /// Times it stopped working.
    pub failures: u64,
    /// Bytes its interface received and sent (all traffic, probes included).
    pub bytes: (u64, u64),
    /// How it is probed now.
    #[serde(default)]
    pub probe_pace: Pace,
    /// IP bytes of its probes sent and of their answers received.
    #[serde(default)]
    pub probe_bytes: (u64, u64),
    /// Both at the rate of the last minute, over a day (`None` in its first seconds).
    #[serde(default)]
    pub probe_bytes_per_day: Option<u64>,
}

/// What the path manager knows, for `mpbond status` and metrics.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PmStatus {
    /// The lines.
    pub lines: Vec<LineStatus>,
    /// The MPTCP connections and their subflows.
    pub connections: Vec<ConnStatus>,
    /// Counters.
    pub counters: Counters,
}

/// Called with a line's index and its addresses whenever they change, before the manager
/// uses them (the gateway routes a new address out of its line here).
pub type OnAddresses = Box<dyn FnMut(usize, &[IfAddr]) + Send>;

/// A data plane other than the kernel's MPTCP (mpbond's engine) that the path manager tells
/// what it learns of the lines; the subflows are then the plane's own business.
pub trait LineSink: Send {
    /// Line `line` works (`true`: link up, and answering probes if the peer answers any) or
    /// stopped working.
    fn set_usable(&mut self, line: usize, usable: bool);
    /// Line `line`'s addresses are now `addrs`: called at start and whenever links, addresses
    /// or routes changed (the line's routing may need a look even when its addresses are
    /// the same: a default route that came after its address, a link that went down and up).
    fn set_addresses(&mut self, line: usize, addrs: &[IfAddr]);
}

/// The running path manager; stopped when dropped.
#[derive(Debug)]
pub struct PmHandle {
    stop: Arc<AtomicBool>,
    wake: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
    status: Arc<Mutex<PmStatus>>,
}

impl PmHandle {
    /// A snapshot of what it knows.
    #[must_use]
    pub fn status(&self) -> PmStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A shared view of the status, updated by the thread.
    #[must_use]
    pub fn status_view(&self) -> Arc<Mutex<PmStatus>> {
        Arc::clone(&self.status)
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // SAFETY: writing one byte from a valid buffer to a descriptor we own.
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PmHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The thread's state.
struct Driver {
    cfg: PmConfig,
    manager: Manager,
    health: Health,
    /// The kernel's MPTCP (`None`: another data plane, told through `sink`).
    pm: Option<PathManager>,
    rt: RouteSocket,
    events: Option<EventSocket>,
    sink: Option<Box<dyn LineSink>>,
    monitor: netlink_sys::Socket,
    wake: OwnedFd,
    probers: Vec<Option<Prober>>,
    idents: Vec<u16>,
    addrs: Vec<Vec<IfAddr>>,
    /// Per line: interface bytes received and sent.
    bytes: Vec<(u64, u64)>,
    /// Per line: what its probes cost.
    meters: Vec<ProbeMeter>,
    /// Per line: when its unresolved neighbours were last flushed.
    flushed: Vec<Option<Instant>>,
    on_addresses: Option<OnAddresses>,
    status: Arc<Mutex<PmStatus>>,
}

/// Starts the path manager for the calling thread's network namespace (which must have
/// `net.mptcp.pm_type=1`).
///
/// # Errors
/// If the kernel's MPTCP path manager or its events cannot be reached (no MPTCP, not root).
pub fn start(cfg: PmConfig, on_addresses: Option<OnAddresses>) -> Result<PmHandle> {
    let pm = PathManager::open().context("the kernel's MPTCP path manager (mptcp_pm)")?;
    let events = EventSocket::open().context("subscribing to MPTCP path manager events")?;
    launch(cfg, Some((pm, events)), on_addresses, None)
}

/// Starts line health alone for another data plane (mpbond's engine): links, addresses and
/// probes as for the kernel, each verdict and address change handed to `sink`.
///
/// # Errors
/// If netlink (route) cannot be reached.
pub fn start_for(cfg: PmConfig, sink: Box<dyn LineSink>) -> Result<PmHandle> {
    launch(cfg, None, None, Some(sink))
}

fn launch(
    cfg: PmConfig,
    kernel: Option<(PathManager, EventSocket)>,
    on_addresses: Option<OnAddresses>,
    sink: Option<Box<dyn LineSink>>,
) -> Result<PmHandle> {
    let (pm, events) = kernel.unzip();
    let rt = RouteSocket::open().context("netlink (route)")?;
    let mut monitor = netlink_sys::Socket::new(NETLINK_ROUTE).context("netlink (route)")?;
    monitor
        .bind(&netlink_sys::SocketAddr::new(0, RTNL_GROUPS))
        .context("subscribing to link and address changes")?;
    monitor.set_non_blocking(true)?;
    let (wake_r, wake_w) = pipe()?;
    let now = Instant::now();
    let n = cfg.lines.len();
    let mut ident = [0u8; 2];
    let _ = getrandom::fill(&mut ident);
    let base = u16::from_ne_bytes(ident);
    let status = Arc::new(Mutex::new(PmStatus::default()));
    let mut d = Driver {
        manager: Manager::new(cfg.lines.clone(), cfg.peers.clone(), cfg.announce.clone()),
        health: Health::new(cfg.probe, n, now),
        pm,
        rt,
        events,
        sink,
        monitor,
        wake: wake_r,
        probers: (0..n).map(|_| None).collect(),
        idents: (0..n)
            .map(|i| base.wrapping_add(u16::try_from(i).unwrap_or(0)))
            .collect(),
        addrs: vec![Vec::new(); n],
        bytes: vec![(0, 0); n],
        meters: vec![ProbeMeter::default(); n],
        flushed: vec![None; n],
        on_addresses,
        status: Arc::clone(&status),
        cfg,
    };
    // Per-line probe paces (`--wan IFACE:probe=…:probe-idle=…`).
    for (i, l) in d.cfg.lines.iter().enumerate() {
        let interval = l.probe.unwrap_or(d.cfg.probe.interval);
        let idle = l.probe_idle.unwrap_or(d.cfg.probe.idle_interval);
        d.health.set_intervals(i, interval, idle);
        d.health.set_backup(i, l.backup);
    }
    d.refresh(now).context("reading links and addresses")?;
    d.publish(now);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("mpbond-pm".into())
        .spawn(move || d.run(&stop2))
        .context("starting the path manager thread")?;
    Ok(PmHandle {
        stop,
        wake: wake_w,
        thread: Some(thread),
        status,
    })
}

impl Driver {
    fn run(mut self, stop: &AtomicBool) {
        info!(lines = self.cfg.lines.len(), probe_target = ?self.cfg.probe_target, "path manager running");
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let next = [self.health.poll_timeout(now), self.manager.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + RX_POLL)
                .min(now + RX_POLL);
            self.wait(next.saturating_duration_since(now));
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if let Err(e) = self.step(Instant::now()) {
                warn!("path manager: {e:#}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        debug!("path manager stopped");
    }

    fn wait(&self, timeout: Duration) {
        let mut fds: Vec<RawFd> = vec![self.wake.as_raw_fd(), self.monitor.as_raw_fd()];
        fds.extend(self.events.as_ref().map(AsRawFd::as_raw_fd));
        fds.extend(self.probers.iter().flatten().map(AsRawFd::as_raw_fd));
        let mut pfds: Vec<libc::pollfd> = fds
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(1000);
        // SAFETY: pfds is a valid array of pollfd of the given length.
        unsafe {
            libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms);
        }
        let mut b = [0u8; 64];
        // SAFETY: reading into a valid buffer from our non-blocking pipe.
        while unsafe { libc::read(self.wake.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) } > 0 {}
    }

    fn step(&mut self, now: Instant) -> Result<()> {
        // Link and address changes: drain the notifications, then read the state afresh.
        let mut changed = false;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match self.monitor.recv(&mut &mut buf[..], 0) {
                Ok(_) => changed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ENOBUFS: some were lost; reading the state afresh covers them.
                Err(_) => {
                    changed = true;
                    break;
                }
            }
        }
        if changed {
            self.refresh(now)?;
        } else {
            let links = self.rt.links()?;
            for (i, l) in self.cfg.lines.iter().enumerate() {
                if let Some(s) = links.iter().find(|s| s.index == l.ifindex) {
                    self.health.on_counters(now, i, s.rx_packets, s.tx_packets);
                    self.bytes[i] = (s.rx_bytes, s.tx_bytes);
                }
            }
        }
        for (i, p) in self.probers.iter().enumerate() {
            if let Some(p) = p {
                for seq in p.recv() {
                    self.health.on_reply(now, i, seq);
                }
            }
        }
        match self.events.as_mut().map(EventSocket::recv) {
            Some(Ok(evs)) => {
                for e in evs {
                    debug!(?e, "mptcp event");
                    self.manager.on_event(now, &e);
                }
            }
            Some(Err(e)) => {
                warn!("MPTCP events lost ({e}): connections opened meanwhile may lack subflows");
            }
            None => {}
        }
        self.health.handle_timeout(now);
        while let Some((i, seq)) = self.health.poll_transmit(now) {
            if let Some(Err(e)) = self.probers[i].as_ref().map(|p| p.send(seq)) {
                debug!(line = %self.cfg.lines[i].name, "probe: {e}");
            }
        }
        while let Some((i, usable)) = self.health.poll_change() {
            let name = &self.cfg.lines[i].name;
            if usable {
                info!(line = %name, state = ?self.health.verdict(i), "line works again");
            } else {
                warn!(line = %name, "line stopped working: moving its traffic to the others");
            }
            self.manager.set_line_usable(now, i, usable);
            if let Some(s) = self.sink.as_mut() {
                s.set_usable(i, usable);
            }
        }
        self.unstick_neighbours(now);
        self.manager.handle_timeout(now);
        self.execute(now);
        for (i, m) in self.meters.iter_mut().enumerate() {
            let (probes, answers) = self.health.counts(i);
            let ip_len = self.probers[i].as_ref().map_or(36, Prober::ip_len);
            m.update(now, probes, answers, ip_len);
        }
        self.publish(now);
        Ok(())
    }

    /// Reads links and addresses, updates lines, probers and the manager.
    fn refresh(&mut self, now: Instant) -> Result<()> {
        let links = self.rt.links()?;
        let all = self.rt.addresses()?;
        for i in 0..self.cfg.lines.len() {
            let index = self.cfg.lines[i].ifindex;
            let link = links.iter().find(|s| s.index == index);
            let running = link.is_some_and(|s| s.running);
            if let Some(s) = link {
                self.health.on_counters(now, i, s.rx_packets, s.tx_packets);
                self.bytes[i] = (s.rx_bytes, s.tx_bytes);
            }
            let mine: Vec<IfAddr> = all
                .iter()
                .filter(|a| a.index == index && crate::gateway::wan::usable(&a.addr))
                .copied()
                .collect();
            // Every time: an address whose next hop was missing gets routed once it appears.
            if let Some(f) = self.on_addresses.as_mut() {
                f(i, &mine);
            }
            if let Some(s) = self.sink.as_mut() {
                s.set_addresses(i, &mine);
            }
            if mine != self.addrs[i] {
                info!(line = %self.cfg.lines[i].name, addresses = ?mine.iter().map(|a| a.addr).collect::<Vec<_>>(), "line addresses");
                self.addrs[i].clone_from(&mine);
            }
            self.health.set_link(now, i, running);
            self.manager
                .set_addresses(now, i, mine.iter().map(|a| a.addr).collect());
            self.update_prober(now, i);
        }
        Ok(())
    }

    /// A line whose link is up but that does not answer yet may be waiting on a neighbour
    /// resolution that failed while the link came up (the first ARP request lost): every
    /// [`NEIGH_FLUSH`], its unresolved entries are flushed so the next probe asks again.
    fn unstick_neighbours(&mut self, now: Instant) {
        for i in 0..self.cfg.lines.len() {
            if self.health.usable(i) || !self.health.link_up(i) || self.probers[i].is_none() {
                self.flushed[i] = None;
                continue;
            }
            let Some(last) = self.flushed[i] else {
                // Give the first resolution its chance.
                self.flushed[i] = Some(now);
                continue;
            };
            if now.saturating_duration_since(last) >= NEIGH_FLUSH {
                self.flushed[i] = Some(now);
                match self
                    .rt
                    .flush_unresolved_neighbours(self.cfg.lines[i].ifindex)
                {
                    Ok(0) => {}
                    Ok(n) => {
                        debug!(line = %self.cfg.lines[i].name, "flushed {n} unresolved neighbours");
                    }
                    Err(e) => debug!(line = %self.cfg.lines[i].name, "neighbours: {e}"),
                }
            }
        }
    }

    fn update_prober(&mut self, now: Instant, i: usize) {
        let Some(target) = self.cfg.probe_target else {
            return;
        };
        let source = self.addrs[i]
            .iter()
            .map(|a| a.addr)
            .find(|a| a.is_ipv6() == target.is_ipv6());
        if self.probers[i].as_ref().map(|p| p.source) == source {
            return;
        }
        self.probers[i] = source.and_then(|s| {
            Prober::open(&self.cfg.lines[i].name, s, target, self.idents[i])
                .map_err(|e| warn!(line = %self.cfg.lines[i].name, "cannot probe: {e}"))
                .ok()
        });
        self.health.set_probing(now, i, self.probers[i].is_some());
    }

    fn execute(&mut self, now: Instant) {
        let Some(pm) = self.pm.as_mut() else {
            // Another data plane makes its own subflows: the manager has no connection to
            // command (it hears no MPTCP event).
            while self.manager.poll_command().is_some() {}
            return;
        };
        while let Some(cmd) = self.manager.poll_command() {
            let r = match &cmd {
                Command::Create {
                    token,
                    local,
                    remote,
                    ..
                } => pm.subflow_create(*token, local, *remote),
                Command::Remove { token, loc_id } => pm.remove(*token, *loc_id),
                Command::Destroy {
                    token,
                    local,
                    remote,
                } => pm.subflow_destroy(*token, *local, *remote),
                Command::SetBackup {
                    token,
                    local,
                    remote,
                } => pm.set_backup(*token, *local, *remote, true),
                Command::Announce { token, local } => pm.announce(*token, local),
            };
            match &r {
                Ok(()) => debug!(?cmd, "done"),
                Err(e) => debug!(?cmd, "refused: {e}"),
            }
            let r = r.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO));
            self.manager.on_result(now, &cmd, r);
        }
    }

    fn publish(&self, now: Instant) {
        let lines = self
            .manager
            .lines()
            .into_iter()
            .enumerate()
            .map(|(i, (cfg, _, addresses, created, failures))| {
                let (sent, answered) = self.health.counts(i);
                LineStatus {
                    name: cfg.name,
                    backup: cfg.backup,
                    state: self.health.verdict(i),
                    addresses,
                    probe_rtt_ms: self.health.rtt(i).map(|d| d.as_secs_f64() * 1e3),
                    probes_sent: sent,
                    probes_answered: answered,
                    subflows_created: created,
                    failures,
                    bytes: self.bytes[i],
                    probe_pace: self.health.pace(i, now),
                    probe_bytes: self.meters[i].bytes(),
                    probe_bytes_per_day: self.meters[i].per_day(),
                }
            })
            .collect();
        let s = PmStatus {
            lines,
            connections: self.manager.connections(),
            counters: self.manager.counters().clone(),
        };
        if let Ok(mut g) = self.status.lock() {
            *g = s;
        }
    }
}
