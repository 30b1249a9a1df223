//! The user-space data plane (`--stack user`): mpbond's own sans-IO engine
//! (`mptcp_proto::mptcp::Stack`: MPTCP, or plain TCP with `--no-mptcp`) driven in real time
//! over a TUN device.
//!
//! One task, the driver, owns the TUN: it hands the engine each packet the TUN gives and the
//! time, sends what the engine has to send, sleeps until the engine's next timer, and wakes the
//! application tasks whose connections became readable, writable, connected or closed. The
//! application side ([`UserStream`], [`UserListener`]) reads and writes through the same
//! engine under a mutex and nudges the driver when it gave the engine something to send.
//!
//! The host around it (TUN, addresses, NAT, forwarding, per-line routing) is set up by
//! [`crate::tun`] and undone when the [`UserStack`] is dropped.

mod lines;
mod stream;
mod tun_io;
mod watch;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use anyhow::{Context as _, Result};
use mptcp_proto::endpoint::EndpointConfig;
use mptcp_proto::mptcp::{ConnEvent, ConnId, Path, Stack, StackConfig, StackEvent};
use tokio::sync::Notify;
use tracing::{debug, trace, warn};

pub use stream::{Delivery, UserListener, UserStream};
use tun_io::TunIo;

use crate::tun::nat::{HostSetup, NatConfig};
use crate::tun::{self, Subnet};

/// The TUN's MTU, and so the engine's largest packet.
const MTU: u16 = 1500;
/// Half-open and not yet accepted connections per listener before SYN cookies.
const SYN_BACKLOG: usize = 4096;

/// Each connection's data-level send buffer (the engine's default is 4 MiB). A loss on one
/// line holds the data-level acknowledgment back while the other lines go on sending, and a
/// buffer full of bytes waiting for it stops every line at once: in `mpbond bench --quick
/// --scenario three-lines` (50 + 20 + 10 Mbit/s) 4 MiB ran out at fibre's first losses, every
/// line carried next to nothing for 200-400 ms, and such rounds moved 73.9 Mbit/s instead of
/// 76.1. Linux's MPTCP socket may hold its subflows' send buffers together, each up to
/// `tcp_wmem`'s 4 MiB. Memory is taken only for bytes the peer has not acknowledged yet.
const SEND_BUFFER: usize = 16 << 20;

/// Settings of a user-space stack.
#[derive(Debug, Clone, Default)]
pub struct UserStackConfig {
    /// Ports the host forwards to the engine (`listen`).
    pub listen: Vec<SocketAddr>,
    /// WAN lines, each with an engine address routed by it (empty: the main table decides).
    /// With MPTCP, a connection has one subflow per line.
    pub lines: Vec<crate::gateway::wan::WanSpec>,
    /// Plain TCP: no `MP_CAPABLE` offered, none accepted.
    pub no_mptcp: bool,
    /// Each connection's scheduler and congestion control.
    pub tuning: Tuning,
    /// Listeners take TCP Fast Open (RFC 7413): they give cookies, and read the data of a SYN
    /// whose cookie checks at once. For servers whose first message tolerates a replay (the
    /// converter: an authentication seen twice is refused).
    pub fast_open: bool,
    /// Where the lines' probes go (the peer: the converter, `connect`'s remote host); `None`:
    /// the lines are judged by their links and addresses alone.
    pub probe_target: Option<IpAddr>,
    /// How the lines are probed (`--probe-*`; per line `--wan IFACE:probe=…`).
    pub probe: crate::pm::ProbeConfig,
}

/// How the engine runs each MPTCP connection: which subflow carries the next bytes, and how
/// the subflows' congestion windows move (on their own or coupled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// `--scheduler`.
    pub scheduler: mptcp_proto::mptcp::SchedulerKind,
    /// `--congestion`.
    pub congestion: mptcp_proto::mptcp::Congestion,
}

impl Default for Tuning {
    /// The engine's scheduler (min-RTT) and mpbond's congestion control
    /// ([`crate::cli::DEFAULT_CONGESTION`]).
    fn default() -> Self {
        Self {
            scheduler: mptcp_proto::mptcp::SchedulerKind::default(),
            congestion: crate::cli::DEFAULT_CONGESTION,
        }
    }
}

/// Who waits for what on one connection.
#[derive(Debug, Default)]
struct Waiters {
    read: Option<Waker>,
    write: Option<Waker>,
    connect: Option<Waker>,
    /// Waits for acknowledgments ([`UserStream::delivered`]): woken by every packet of the
    /// connection.
    acked: Option<Waker>,
}

impl Waiters {
    fn wake(slot: &mut Option<Waker>) {
        if let Some(w) = slot.take() {
            w.wake();
        }
    }
}

/// The engine and its waiters, shared by the driver and the application tasks.
struct Inner {
    ep: Stack,
    /// Whether each line's link runs, as [`watch`] last saw it (all up until it looks).
    lines_up: Vec<bool>,
    waiters: HashMap<ConnId, Waiters>,
    accept_waiters: HashMap<SocketAddr, Waker>,
    /// The driver stopped (the TUN failed): every operation fails.
    dead: Option<String>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Set when the application gave the engine something to send (or read, which may open
    /// the window): the driver polls the engine again.
    kick: Notify,
    /// Counts the driver's rounds that ended with nothing left to send ([`UserStack::close`]).
    drained: std::sync::atomic::AtomicU64,
    drained_notify: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the engine in an unknown state; the process
        // is going down anyway, so carry on with what is there.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// mpbond's TCP engine running on a TUN device of its own.
pub struct UserStack {
    shared: Arc<Shared>,
    subnet: Subnet,
    lines: usize,
    /// Which lines are backups.
    backups: Vec<bool>,
    driver: tokio::task::JoinHandle<()>,
    /// mpbond's path manager for the lines ([`lines`]): stopped before the host setup goes.
    pm: Option<crate::pm::PmHandle>,
    /// Follows the links of announced addresses (and of the lines, if the path manager
    /// could not start).
    watch: Option<tokio::task::JoinHandle<()>>,
    _host: Arc<Mutex<HostSetup>>,
}

impl std::fmt::Debug for UserStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStack")
            .field("tun", &self.subnet.ifname())
            .finish_non_exhaustive()
    }
}

impl UserStack {
    /// Creates the TUN, sets the host up and starts the driver (on the current tokio runtime).
    pub fn start(cfg: &UserStackConfig) -> Result<Self> {
        let subnet = tun::free_subnet()?;
        let dev = tun::create(subnet, MTU)?;
        let nat = NatConfig {
            listen: cfg
                .listen
                .iter()
                .map(|a| ((!a.ip().is_unspecified()).then_some(a.ip()), a.port()))
                .collect(),
            lines: cfg.lines.clone(),
        };
        let host = Arc::new(Mutex::new(HostSetup::install(subnet, &nat)?));
        let mut ecfg = EndpointConfig::default();
        ecfg.tcp.mtu = usize::from(MTU);
        // A converter takes bursts of hundreds of connections at once (a gateway's LAN opening
        // a web page): state for each rather than SYN cookies, which cannot carry MPTCP when
        // the third ACK is lost. Linux's `somaxconn` default.
        ecfg.syn_backlog = SYN_BACKLOG;
        ecfg.fast_open = cfg.fast_open;
        getrandom::fill(&mut ecfg.secret).context("random secret for ISNs and SYN cookies")?;
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).context("random seed")?;
        ecfg.seed = u64::from_le_bytes(seed);
        let scfg = StackConfig {
            endpoint: ecfg,
            conn: mptcp_proto::mptcp::ConnConfig {
                scheduler: cfg.tuning.scheduler,
                congestion: cfg.tuning.congestion,
                send_buffer: SEND_BUFFER,
                ..mptcp_proto::mptcp::ConnConfig::default()
            },
            no_mptcp: cfg.no_mptcp,
        };
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                ep: Stack::new(scfg, Instant::now()),
                lines_up: vec![true; cfg.lines.len()],
                waiters: HashMap::new(),
                accept_waiters: HashMap::new(),
                dead: None,
            }),
            kick: Notify::new(),
            drained: std::sync::atomic::AtomicU64::new(0),
            drained_notify: Notify::new(),
        });
        let driver = tokio::spawn(drive(Arc::clone(&shared), dev));
        debug!(tun = %subnet.ifname(), engine = %subnet.engine_v4(0), "user-space stack up");
        let engine_of = |i: usize| IpAddr::V4(subnet.engine_v4(u8::try_from(i).unwrap_or(u8::MAX)));
        let mut pm = None;
        let mut watch = None;
        if !cfg.lines.is_empty() {
            match start_path_manager(cfg, &shared, &host, engine_of) {
                Ok(h) => pm = Some(h),
                Err(e) => {
                    warn!(
                        "mpbond's path manager cannot run for the engine ({e:#}): lines are judged by their links alone"
                    );
                    let lines: Vec<watch::Line> = cfg
                        .lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| watch::Line {
                            iface: l.iface.clone(),
                            engine: engine_of(i),
                            backup: l.backup,
                        })
                        .collect();
                    watch = Some(tokio::spawn(watch::run(
                        Arc::clone(&shared),
                        lines,
                        Vec::new(),
                    )));
                }
            }
        }
        Ok(Self {
            shared,
            subnet,
            lines: cfg.lines.len().max(1),
            backups: cfg.lines.iter().map(|l| l.backup).collect(),
            driver,
            pm,
            watch,
            _host: host,
        })
    }

    /// mpbond's path manager for the lines, for `mpbond status` and the metrics (`None`
    /// without `--wan` lines).
    #[must_use]
    pub fn pm(&self) -> Option<&crate::pm::PmHandle> {
        self.pm.as_ref()
    }

    /// The engine's address on line `line` (0 without lines).
    #[must_use]
    pub fn local_addr(&self, line: u8) -> IpAddr {
        IpAddr::V4(self.subnet.engine_v4(line))
    }

    /// The TUN's name.
    #[must_use]
    pub fn ifname(&self) -> String {
        self.subnet.ifname()
    }

    /// Opens a connection to `remote`: its first subflow from the first regular line whose
    /// link runs (else the first backup line that does, else the first line) and, with MPTCP,
    /// one more from each other line that runs once MPTCP is up.
    pub async fn connect(&self, remote: SocketAddr) -> io::Result<UserStream> {
        self.open(remote, None).await
    }

    /// [`UserStack::connect`] with TCP Fast Open (RFC 7413): `first` is written at once and,
    /// once the engine holds a cookie from `remote`'s host, rides in the SYN (as much as one
    /// segment holds); without one, the SYN asks for a cookie and `first` follows the
    /// handshake. The SYN's data may reach the server twice (a duplicated SYN): only for a
    /// first message that tolerates it, such as an authenticated Convert message.
    pub async fn connect_with(&self, remote: SocketAddr, first: &[u8]) -> io::Result<UserStream> {
        self.open(remote, Some(first)).await
    }

    async fn open(&self, remote: SocketAddr, syn_data: Option<&[u8]>) -> io::Result<UserStream> {
        if remote.is_ipv6() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the user-space stack reaches IPv4 peers only so far (IPv6 forwarding would make the host drop the routes its router advertised); use --stack kernel",
            ));
        }
        let lines = u8::try_from(self.lines).unwrap_or(u8::MAX);
        let backup = |l: u8| self.backups.get(usize::from(l)).copied().unwrap_or(false);
        let mut rest: &[u8] = &[];
        let h = {
            let mut g = self.shared.lock();
            if let Some(e) = &g.dead {
                return Err(io::Error::other(e.clone()));
            }
            let up = |l: u8| g.lines_up.get(usize::from(l)).copied().unwrap_or(true);
            let first = (0..lines)
                .find(|&l| up(l) && !backup(l))
                .or_else(|| (0..lines).find(|&l| up(l)))
                .unwrap_or(0);
            let down: Vec<IpAddr> = (0..lines)
                .filter(|&l| !up(l))
                .map(|l| self.local_addr(l))
                .collect();
            let paths: Vec<Path> = std::iter::once(first)
                .chain((0..lines).filter(|l| *l != first))
                .map(|l| Path {
                    local: self.local_addr(l),
                    backup: backup(l),
                })
                .collect();
            let now = Instant::now();
            let unavailable = |e| io::Error::new(io::ErrorKind::AddrNotAvailable, e);
            let h = match syn_data {
                Some(data) => {
                    let (h, written) =
                        g.ep.connect_fast_open(now, &paths, remote, data)
                            .map_err(unavailable)?;
                    rest = &data[written..];
                    h
                }
                None => g.ep.connect(now, &paths, remote).map_err(unavailable)?,
            };
            // No join from a line whose link is down until it comes back.
            for ip in down {
                g.ep.set_path_up(now, ip, false);
            }
            g.waiters.insert(h, Waiters::default());
            h
        };
        self.shared.kick.notify_one();
        let stream = UserStream::new(Arc::clone(&self.shared), h);
        // A connection given up before its handshake ends is reset, not closed in order: its
        // peer must not keep an empty connection.
        stream.reset_on_close();
        stream.connected().await?;
        if !rest.is_empty() {
            stream.write_all(rest).await?;
        }
        stream.close_gracefully();
        Ok(stream)
    }

    /// What the metrics count of the engine: `which` of its counters
    /// ([`crate::metrics::engine_client_counters`] or [`crate::metrics::engine_server_counters`]).
    #[must_use]
    pub fn counters_view(
        &self,
        which: fn(&mptcp_proto::endpoint::EndpointStats) -> Vec<(&'static str, &'static str, u64)>,
    ) -> crate::metrics::CounterView {
        let shared = Arc::clone(&self.shared);
        Arc::new(move || {
            let stats = shared.lock().ep.endpoint().stats();
            which(&stats)
        })
    }

    /// What `mpbond status` shows of the engine's connections: tokens, ends, subflows with
    /// their line, address IDs, state, RTT, congestion window and bytes.
    #[must_use]
    pub fn status_view(&self, line_names: Vec<String>) -> crate::status::EngineView {
        let shared = Arc::clone(&self.shared);
        let subnet = self.subnet;
        Arc::new(move || {
            let g = shared.lock();
            let line_of = |ip: IpAddr| {
                (0..u8::try_from(line_names.len()).unwrap_or(u8::MAX))
                    .find(|l| IpAddr::V4(subnet.engine_v4(*l)) == ip)
                    .and_then(|l| line_names.get(usize::from(l)).cloned())
            };
            g.ep.connection_ids()
                .into_iter()
                .filter_map(|id| {
                    let (local, remote) = g.ep.addrs(id)?;
                    let state = g.ep.state(id)?;
                    let subflows: Vec<crate::status::SubflowStatus> = g
                        .ep
                        .subflows(id)
                        .into_iter()
                        .filter(|s| !s.closed)
                        .map(|s| {
                            let tcp = s.tcp.unwrap_or_default();
                            let mss = tcp.send_mss.max(1);
                            crate::status::SubflowStatus {
                                line: line_of(s.local.ip()),
                                local: s.local,
                                remote: s.remote,
                                ids: s.ids,
                                state: if s.active { "established" } else { "syn-sent" }.to_owned(),
                                backup: s.backup,
                                fully_established: s.active,
                                rtt_ms: s.srtt.map_or(0.0, |d| d.as_secs_f64() * 1e3),
                                cwnd: u32::try_from(s.cwnd / mss).unwrap_or(u32::MAX),
                                bytes_sent: tcp.bytes_sent,
                                bytes_acked: tcp.bytes_acked,
                                bytes_received: tcp.bytes_received,
                                retransmits: u32::try_from(tcp.retransmits).unwrap_or(u32::MAX),
                                congestion: (!tcp.congestion.is_empty())
                                    .then(|| tcp.congestion.to_owned()),
                            }
                        })
                        .collect();
                    Some(crate::status::ConnectionStatus {
                        token: g.ep.tokens(id).map_or(0, |t| t.0),
                        local,
                        remote,
                        fallback: state == mptcp_proto::mptcp::ConnState::Fallback,
                        extra_subflows: u8::try_from(subflows.len().saturating_sub(1))
                            .unwrap_or(u8::MAX),
                        subflows,
                    })
                })
                .collect()
        })
    }

    /// Announces the host's address `ip` (`ADD_ADDR`) on every MPTCP connection the engine
    /// serves, with the connection's port.
    pub fn announce(&self, ip: IpAddr) {
        let mut g = self.shared.lock();
        g.ep.announce(Instant::now(), SocketAddr::new(ip, 0));
        drop(g);
        self.shared.kick.notify_one();
    }

    /// Announces the host's addresses `ips` as [`UserStack::announce`] does, and follows their
    /// interfaces: while one is down its address is withdrawn (`REMOVE_ADDR`, RFC 8684
    /// §3.4.2: the peer closes its subflows to it at once rather than after its timeouts),
    /// and announced again when it comes back.
    pub fn announce_watched(&mut self, ips: Vec<IpAddr>) {
        for ip in &ips {
            self.announce(*ip);
        }
        if let Some(w) = self.watch.take() {
            w.abort();
        }
        self.watch = Some(tokio::spawn(watch::run(
            Arc::clone(&self.shared),
            Vec::new(),
            ips,
        )));
    }

    /// Listens on `port` of the engine's addresses (the host maps its own addresses' port
    /// there, see [`UserStackConfig::listen`]).
    pub fn listen(&self, port: u16) -> io::Result<UserListener> {
        let mut g = self.shared.lock();
        let addrs = vec![SocketAddr::new(
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            port,
        )];
        for a in &addrs {
            g.ep.listen(*a)
                .map_err(|e| io::Error::new(io::ErrorKind::AddrInUse, e))?;
        }
        Ok(UserListener::new(Arc::clone(&self.shared), addrs))
    }
}

impl UserStack {
    /// Lets the driver send what the engine still has to send (the last ACK of a closing
    /// connection, say); waits 200 ms at most.
    pub async fn flush(&self) {
        use std::sync::atomic::Ordering;
        let shared = &self.shared;
        let start = shared.drained.load(Ordering::Acquire);
        shared.kick.notify_one();
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
            loop {
                let next = shared.drained_notify.notified();
                // Two rounds: the one under way may have taken its packets before our last
                // call (an abort's resets, say); the next one starts after it.
                if shared.drained.load(Ordering::Acquire) >= start + 2 {
                    return;
                }
                next.await;
            }
        })
        .await;
    }

    /// [`UserStack::flush`], then the stack goes.
    pub async fn close(self) {
        self.flush().await;
        drop(self);
    }

    /// Resets every connection of the engine (`MP_FASTCLOSE`, or RST without MPTCP) and lets
    /// the driver send the resets: for a daemon that stops with connections open, whose peers
    /// must not take what they got for complete. Returns how many there were.
    /// The stack takes no new work afterwards: every operation fails.
    pub async fn abort_all(&self) -> usize {
        let n = {
            let mut g = self.shared.lock();
            let ids = g.ep.connection_ids();
            for id in &ids {
                g.ep.abort(*id);
            }
            g.dead = Some("the user-space stack is stopping".to_owned());
            wake_everyone(&mut g);
            ids.len()
        };
        self.flush().await;
        n
    }
}

impl Drop for UserStack {
    fn drop(&mut self) {
        // The path manager's thread holds the host setup: it stops first.
        drop(self.pm.take());
        if let Some(w) = &self.watch {
            w.abort();
        }
        self.driver.abort();
    }
}

/// Starts mpbond's path manager for the engine's lines: health from links, addresses and
/// probes to `cfg.probe_target`, verdicts handed to the engine ([`lines::EngineLines`]).
fn start_path_manager(
    cfg: &UserStackConfig,
    shared: &Arc<Shared>,
    host: &Arc<Mutex<HostSetup>>,
    engine_of: impl Fn(usize) -> IpAddr,
) -> Result<crate::pm::PmHandle> {
    let mut lines = Vec::new();
    for l in &cfg.lines {
        lines.push(crate::pm::LineConfig {
            name: l.iface.clone(),
            ifindex: crate::sys::if_index(&l.iface)
                .with_context(|| format!("--wan {}: no such interface", l.iface))?,
            backup: l.backup,
            probe: l.probe,
            probe_idle: l.probe_idle,
        });
    }
    let pm_cfg = crate::pm::PmConfig {
        lines,
        peers: Vec::new(),
        probe_target: cfg
            .probe_target
            .filter(|t| t.is_ipv4() && !cfg.probe.interval.is_zero()),
        probe: cfg.probe,
        announce: crate::pm::Announce::default(),
    };
    let engine_lines = cfg
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| lines::Line {
            engine: engine_of(i),
            backup: l.backup,
        })
        .collect();
    let sink = lines::EngineLines::new(Arc::clone(shared), Arc::clone(host), engine_lines);
    crate::pm::driver::start_for(pm_cfg, Box::new(sink))
}

/// Most packets taken from the TUN in one round before the engine's answers go out: the
/// lock is not held for long, and ACKs keep flowing under a flood.
const BATCH: usize = 64;

/// The driver: TUN packets and timers into the engine, the engine's packets out to the TUN,
/// and wake-ups for the application.
async fn drive(shared: Arc<Shared>, dev: tun_rs::AsyncDevice) {
    let mut io = TunIo::new(usize::from(MTU));
    loop {
        let deadline = shared.lock().ep.poll_timeout();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = io.recv(&dev) => match r {
                Ok(n) => {
                    let mut g = shared.lock();
                    let now = Instant::now();
                    take_read(&mut g, now, &io, n);
                    // What else is queued, without waiting: one wake-up, many packets.
                    take_queued(&mut g, now, &mut io, &dev, n);
                }
                Err(e) => {
                    warn!("the TUN device failed: {e}");
                    let mut g = shared.lock();
                    g.dead = Some(format!("the TUN device failed: {e}"));
                    wake_everyone(&mut g);
                    return;
                }
            },
            () = sleep => {
                let mut g = shared.lock();
                let now = Instant::now();
                // What came meanwhile first: after a stall of this host, an ACK waiting in
                // the TUN queue must not let a subflow's line look silent.
                take_queued(&mut g, now, &mut io, &dev, 0);
                g.ep.handle_timeout(now);
            }
            () = shared.kick.notified() => {}
        }
        {
            let mut g = shared.lock();
            let now = Instant::now();
            while io.push_with(|buf| g.ep.poll_transmit(now, buf).map(|t| t.len)) {}
            dispatch(&mut g);
        }
        if let Err(e) = io.flush(&dev).await {
            debug!("TUN send: {e}");
        }
        shared
            .drained
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        shared.drained_notify.notify_waiters();
    }
}

/// Hands the engine the `n` packets of the last TUN read.
fn take_read(g: &mut Inner, now: Instant, io: &TunIo, n: usize) {
    for p in io.packets(n) {
        take_packet(g, now, p);
    }
}

/// Hands the engine what the TUN holds already, without waiting, until [`BATCH`] packets were
/// taken this round (`taken` so far; a merged read counts as the packets it holds).
fn take_queued(
    g: &mut Inner,
    now: Instant,
    io: &mut TunIo,
    dev: &tun_rs::AsyncDevice,
    mut taken: usize,
) {
    while taken < BATCH {
        let Ok(n) = io.try_recv(dev) else { break };
        take_read(g, now, io, n);
        taken += n.max(1);
    }
}

/// Hands a packet from the TUN to the engine; whoever waits for its connection's
/// acknowledgments looks again.
fn take_packet(g: &mut Inner, now: Instant, packet: &[u8]) {
    match g.ep.handle_packet(now, packet) {
        Ok(Some(h)) => {
            if let Some(w) = g.waiters.get_mut(&h) {
                Waiters::wake(&mut w.acked);
            }
        }
        Ok(None) => {}
        Err(e) => trace!("dropped a packet from the TUN: {e}"),
    }
}

/// Wakes the tasks that wait on what the engine's events say changed.
fn dispatch(g: &mut Inner) {
    while let Some(ev) = g.ep.poll_event() {
        match ev {
            StackEvent::Incoming(l) => {
                // A listener on the unspecified address of either family serves both.
                for w in g.accept_waiters.values() {
                    w.wake_by_ref();
                }
                if let Some(w) = g.accept_waiters.remove(&l) {
                    w.wake();
                }
            }
            StackEvent::Conn(h, e) => {
                if matches!(e, ConnEvent::Fallback) {
                    if let Some(cause) = g.ep.fallback_cause(h) {
                        debug!(%cause, "a connection fell back to TCP");
                    }
                }
                let Some(w) = g.waiters.get_mut(&h) else {
                    continue;
                };
                match e {
                    ConnEvent::Connected => Waiters::wake(&mut w.connect),
                    ConnEvent::Readable => Waiters::wake(&mut w.read),
                    ConnEvent::Writable => Waiters::wake(&mut w.write),
                    ConnEvent::Closed(_) => {
                        Waiters::wake(&mut w.connect);
                        Waiters::wake(&mut w.read);
                        Waiters::wake(&mut w.write);
                        Waiters::wake(&mut w.acked);
                    }
                    ConnEvent::Fallback => {}
                    ConnEvent::AddressAdded { addr } => {
                        debug!(%addr, "the peer announced an address");
                    }
                    ConnEvent::SubflowUp { local, remote } => {
                        debug!(%local, %remote, "subflow up");
                    }
                    ConnEvent::SubflowDown { local, remote } => {
                        debug!(%local, %remote, "subflow down");
                    }
                }
            }
        }
    }
}

fn wake_everyone(g: &mut Inner) {
    for w in g.waiters.values_mut() {
        Waiters::wake(&mut w.connect);
        Waiters::wake(&mut w.read);
        Waiters::wake(&mut w.write);
        Waiters::wake(&mut w.acked);
    }
    for (_, w) in g.accept_waiters.drain() {
        w.wake();
    }
}
