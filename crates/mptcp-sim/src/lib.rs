//! mptcp-sim: a deterministic discrete-event network simulator that drives `mptcp-proto`.
//!
//! Hosts run the sans-IO [`Endpoint`] and an [`App`]; links between them have a rate, a
//! tail-drop queue, delay, jitter, seeded random loss and outages ([`link`]). Time is virtual:
//! the simulator jumps from one event (a packet arriving, a timer) to the next, so a run of
//! minutes takes milliseconds and the same seed gives the same run, packet for packet.
//!
//! The seed comes from `MPTCP_SIM_SEED` when set (else from the simulation's name); a
//! simulation that is dropped while its thread panics prints its seed, so a failure can be
//! replayed exactly. With `MPTCP_SIM_PCAP=DIR` every simulation writes its packets to
//! `DIR/NAME-SEED.pcap` ([`pcap`]).
//!
//! ```
//! use std::time::Duration;
//! use mptcp_sim::{Sim, apps::{BulkSend, Sink}, link::LinkParams};
//!
//! let mut sim = Sim::new("doc");
//! let (a, b) = sim.pair(LinkParams::bdp_queue(10.0, Duration::from_millis(20)));
//! let sink = Sink::listen(sim.addr(b, 80));
//! let got = sink.state();
//! sim.set_app(b, sink);
//! let to = sim.addr(b, 80);
//! sim.set_app(a, BulkSend::new(sim.addr(a, 0), to, 100_000, 1));
//! sim.run_until(|_| got.borrow().finished, Duration::from_secs(10));
//! assert!(got.borrow().intact(100_000));
//! ```

pub mod apps;
pub mod link;
pub mod pcap;

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::time::Instant;

use mptcp_proto::endpoint::{Endpoint, EndpointConfig, Transmit};
use mptcp_proto::mptcp::{Stack, StackConfig};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use link::{Direction, DirectionStats, DropFilter, LinkParams};
use pcap::PcapWriter;

/// A host of the simulation.
pub type HostId = usize;

/// The sans-IO network stack a host runs: a TCP [`Endpoint`], or an MPTCP [`Stack`].
pub trait Node: Sized {
    /// Its settings.
    type Config: Clone + core::fmt::Debug;

    /// A node with settings `cfg`, random seed `seed` and secret `secret`.
    fn build(cfg: &Self::Config, seed: u64, secret: [u8; 32], now: Instant) -> Self;
    /// An IP packet arrived.
    fn handle_packet(&mut self, now: Instant, packet: &[u8]);
    /// The next IP packet to send.
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit>;
    /// When it wants `handle_timeout`.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Its timers.
    fn handle_timeout(&mut self, now: Instant);
}

impl Node for Endpoint {
    type Config = EndpointConfig;

    fn build(cfg: &EndpointConfig, seed: u64, secret: [u8; 32], now: Instant) -> Self {
        let mut cfg = cfg.clone();
        cfg.seed = seed;
        cfg.secret = secret;
        Endpoint::new(cfg, now)
    }
    fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        let _ = Endpoint::handle_packet(self, now, packet);
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        Endpoint::poll_transmit(self, now, buf)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Endpoint::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Endpoint::handle_timeout(self, now);
    }
}

impl Node for Stack {
    type Config = StackConfig;

    fn build(cfg: &StackConfig, seed: u64, secret: [u8; 32], now: Instant) -> Self {
        let mut cfg = cfg.clone();
        cfg.endpoint.seed = seed;
        cfg.endpoint.secret = secret;
        Stack::new(cfg, now)
    }
    fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        let _ = Stack::handle_packet(self, now, packet);
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        Stack::poll_transmit(self, now, buf)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Stack::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Stack::handle_timeout(self, now);
    }
}

/// What runs on a host above its node: it accepts, reads, writes and closes.
pub trait App<N = Endpoint> {
    /// Called after anything happened at the host (a packet, a timer, the start).
    fn poll(&mut self, now: Instant, ep: &mut N);

    /// When the application wants to be polled even if nothing happens.
    fn next_wake(&self) -> Option<Instant> {
        None
    }
}

/// An application made of a closure.
pub struct FnApp<F>(pub F);

impl<N, F: FnMut(Instant, &mut N)> App<N> for FnApp<F> {
    fn poll(&mut self, now: Instant, ep: &mut N) {
        (self.0)(now, ep);
    }
}

struct Interface {
    addr: IpAddr,
    link: usize,
    /// Which direction of the link this host sends on.
    dir: usize,
}

/// A simulated host.
pub struct Host<N = Endpoint> {
    /// Its name.
    pub name: String,
    /// Its TCP endpoint or MPTCP stack.
    pub endpoint: N,
    interfaces: Vec<Interface>,
    app: Option<Box<dyn App<N>>>,
    wake: Option<Instant>,
}

struct Link {
    dirs: [Direction; 2],
    /// The host at the receiving end of each direction.
    to: [HostId; 2],
    /// The shared bottleneck each direction goes through next, if any.
    via: [Option<usize>; 2],
}

enum What {
    Deliver {
        host: HostId,
        packet: Vec<u8>,
    },
    /// Through a link, on to a shared bottleneck before the host.
    Forward {
        bottleneck: usize,
        host: HostId,
        packet: Vec<u8>,
    },
    Wake {
        host: HostId,
    },
}

struct Scheduled {
    at: Instant,
    seq: u64,
    what: What,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A simulation.
pub struct Sim<N: Node = Endpoint> {
    name: String,
    seed: u64,
    start: Instant,
    now: Instant,
    rng: Xoshiro256PlusPlus,
    hosts: Vec<Host<N>>,
    links: Vec<Link>,
    /// Queues several link directions share ([`Sim::bottleneck`]).
    bottlenecks: Vec<Direction>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    trace: Option<PcapWriter<BufWriter<File>>>,
    buf: Vec<u8>,
    events: u64,
    /// Endpoint (or stack) settings for hosts added after this is changed.
    pub endpoint_config: N::Config,
    /// Packets a host sent from an address none of its interfaces has (dropped).
    pub unroutable: u64,
}

impl<N: Node> core::fmt::Debug for Sim<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sim")
            .field("name", &self.name)
            .field("seed", &self.seed)
            .field("elapsed", &self.elapsed())
            .finish_non_exhaustive()
    }
}

/// The seed for simulation `name`: `MPTCP_SIM_SEED` if set, else a hash of the name.
#[must_use]
pub fn seed_for(name: &str) -> u64 {
    if let Some(s) = std::env::var("MPTCP_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return s;
    }
    // FNV-1a: stable across runs and platforms.
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Sim<Endpoint> {
    /// A simulation of TCP hosts named `name` (for messages and traces), seeded by
    /// [`seed_for`].
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self::with_seed(name, seed_for(name))
    }

    /// A simulation of TCP hosts with a given seed.
    #[must_use]
    pub fn with_seed(name: &str, seed: u64) -> Self {
        Self::build(name, seed, EndpointConfig::default())
    }
}

impl Sim<Stack> {
    /// A simulation of MPTCP hosts named `name`, seeded by [`seed_for`].
    #[must_use]
    pub fn new_mptcp(name: &str) -> Self {
        Self::mptcp_with_seed(name, seed_for(name))
    }

    /// A simulation of MPTCP hosts with a given seed.
    #[must_use]
    pub fn mptcp_with_seed(name: &str, seed: u64) -> Self {
        Self::build(name, seed, StackConfig::default())
    }

    /// Every address of host `h` as a regular (not backup) path, in the order of its links.
    #[must_use]
    pub fn paths(&self, h: HostId) -> Vec<mptcp_proto::mptcp::Path> {
        self.addrs(h)
            .into_iter()
            .map(|local| mptcp_proto::mptcp::Path {
                local,
                backup: false,
            })
            .collect()
    }
}

impl<N: Node> Sim<N> {
    /// A simulation whose hosts run nodes with settings `config`.
    #[must_use]
    pub fn build(name: &str, seed: u64, config: N::Config) -> Self {
        let start = Instant::now();
        let mut sim = Self {
            name: name.to_owned(),
            seed,
            start,
            now: start,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            hosts: Vec::new(),
            links: Vec::new(),
            bottlenecks: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            trace: None,
            buf: vec![0; 65_536],
            events: 0,
            endpoint_config: config,
            unroutable: 0,
        };
        if let Ok(dir) = std::env::var("MPTCP_SIM_PCAP") {
            let safe: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let path = Path::new(&dir).join(format!("{safe}-{seed}.pcap"));
            let _ = sim.trace_to(&path);
        }
        sim
    }

    /// This simulation's seed.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Writes every packet sent from now on to a pcap file.
    pub fn trace_to(&mut self, path: &Path) -> std::io::Result<()> {
        self.trace = Some(PcapWriter::create(path)?);
        Ok(())
    }

    /// Virtual time now.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the simulation began.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Events processed so far.
    #[must_use]
    pub fn events_processed(&self) -> u64 {
        self.events
    }

    /// Adds a host with the simulation's node settings (its addresses come with its links).
    pub fn add_host(&mut self, name: &str) -> HostId {
        let config = self.endpoint_config.clone();
        self.add_host_with(name, &config)
    }

    /// Adds a host whose node has settings `config` of its own (a plain TCP host among MPTCP
    /// ones, a sender with other congestion control).
    pub fn add_host_with(&mut self, name: &str, config: &N::Config) -> HostId {
        let seed = self.rng.next_u64();
        let mut secret = [0u8; 32];
        for chunk in secret.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        self.hosts.push(Host {
            name: name.to_owned(),
            endpoint: N::build(config, seed, secret, self.now),
            interfaces: Vec::new(),
            app: None,
            wake: None,
        });
        self.hosts.len() - 1
    }

    /// Links host `a` (address `a_addr`) and host `b` (address `b_addr`): `ab` from a to b,
    /// `ba` back. Returns the link's index.
    pub fn link(
        &mut self,
        a: HostId,
        a_addr: IpAddr,
        b: HostId,
        b_addr: IpAddr,
        ab: LinkParams,
        ba: LinkParams,
    ) -> usize {
        let l = self.links.len();
        let seeds = [self.rng.next_u64(), self.rng.next_u64()];
        self.links.push(Link {
            dirs: [Direction::new(ab, seeds[0]), Direction::new(ba, seeds[1])],
            to: [b, a],
            via: [None, None],
        });
        self.hosts[a].interfaces.push(Interface {
            addr: a_addr,
            link: l,
            dir: 0,
        });
        self.hosts[b].interfaces.push(Interface {
            addr: b_addr,
            link: l,
            dir: 1,
        });
        l
    }

    /// Two hosts, `a` (10.0.0.1) and `b` (10.0.0.2), joined by one link with `params` both
    /// ways.
    pub fn pair(&mut self, params: LinkParams) -> (HostId, HostId) {
        let a = self.add_host("a");
        let b = self.add_host("b");
        self.link(
            a,
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            b,
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            params.clone(),
            params,
        );
        (a, b)
    }

    /// Like [`Sim::pair`] over IPv6 (`fd00::1`, `fd00::2`).
    pub fn pair_v6(&mut self, params: LinkParams) -> (HostId, HostId) {
        let a = self.add_host("a");
        let b = self.add_host("b");
        self.link(
            a,
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
            b,
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
            params.clone(),
            params,
        );
        (a, b)
    }

    /// Two hosts joined by one link per entry of `paths` (parameters both ways): the client
    /// has one address per link (`10.0.k.1`), the server one address on all of them
    /// (`10.9.9.9`), as a server behind several access lines of its client sees it. Returns
    /// the client, the server and the links.
    pub fn multipath(&mut self, paths: &[LinkParams]) -> (HostId, HostId, Vec<usize>) {
        let c = self.add_host("client");
        let s = self.add_host("server");
        let server = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9));
        let links = paths
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let k = u8::try_from(k).unwrap_or(u8::MAX);
                let client = IpAddr::V4(Ipv4Addr::new(10, 0, k, 1));
                self.link(c, client, s, server, p.clone(), p.clone())
            })
            .collect();
        (c, s, links)
    }

    /// Host `h`'s addresses, one per link, in the order the links were made.
    #[must_use]
    pub fn addrs(&self, h: HostId) -> Vec<IpAddr> {
        self.hosts[h].interfaces.iter().map(|i| i.addr).collect()
    }

    /// Host `h`'s first address with `port`.
    #[must_use]
    pub fn addr(&self, h: HostId, port: u16) -> SocketAddr {
        SocketAddr::new(self.hosts[h].interfaces[0].addr, port)
    }

    /// A host.
    #[must_use]
    pub fn host(&self, h: HostId) -> &Host<N> {
        &self.hosts[h]
    }

    /// Host `h`'s endpoint, to look at.
    #[must_use]
    pub fn endpoint(&self, h: HostId) -> &N {
        &self.hosts[h].endpoint
    }

    /// Runs `f` on host `h`'s endpoint (to connect, write, close...), then lets the host send
    /// what that produced.
    pub fn with_endpoint<T>(&mut self, h: HostId, f: impl FnOnce(Instant, &mut N) -> T) -> T {
        let now = self.now;
        let r = f(now, &mut self.hosts[h].endpoint);
        self.service(h);
        r
    }

    /// Sets host `h`'s application (and polls it once).
    pub fn set_app(&mut self, h: HostId, app: impl App<N> + 'static) {
        self.hosts[h].app = Some(Box::new(app));
        self.service(h);
    }

    /// Changes a link direction's settings (0: from the first host of [`Sim::link`]).
    pub fn set_link(&mut self, link: usize, dir: usize, params: LinkParams) {
        self.links[link].dirs[dir].params = params;
    }

    /// A link direction's settings.
    #[must_use]
    pub fn link_params(&self, link: usize, dir: usize) -> &LinkParams {
        &self.links[link].dirs[dir].params
    }

    /// Drops the packets of a link direction that `filter` picks.
    pub fn set_filter(&mut self, link: usize, dir: usize, filter: DropFilter) {
        self.links[link].dirs[dir].filter = Some(filter);
    }

    /// Strips the MPTCP options of the packets of a link direction that `pick` chooses, as a
    /// middlebox would (the packets go on, as plain TCP).
    pub fn set_middlebox(&mut self, link: usize, dir: usize, pick: DropFilter) {
        self.links[link].dirs[dir].strip = Some(pick);
    }

    /// Changes the payload of the packets of a link direction that `pick` chooses (and fixes
    /// their TCP checksum), as a middlebox that rewrites content would.
    pub fn set_corrupter(&mut self, link: usize, dir: usize, pick: DropFilter) {
        self.links[link].dirs[dir].corrupt = Some(pick);
    }

    /// A queue that the directions `members` (link, direction) all go through after their
    /// own, with `params` (its rate, queue, delay, loss, outages): several lines that meet at
    /// one bottleneck, as two access lines of one site behind one uplink, or two paths that
    /// share a router. Returns its index.
    pub fn bottleneck(&mut self, params: LinkParams, members: &[(usize, usize)]) -> usize {
        let b = self.bottlenecks.len();
        self.bottlenecks
            .push(Direction::new(params, self.rng.next_u64()));
        for &(link, dir) in members {
            self.links[link].via[dir] = Some(b);
        }
        b
    }

    /// Counters of bottleneck `b`.
    #[must_use]
    pub fn bottleneck_stats(&self, b: usize) -> DirectionStats {
        self.bottlenecks[b].stats
    }

    /// A link direction's counters.
    #[must_use]
    pub fn link_stats(&self, link: usize, dir: usize) -> DirectionStats {
        self.links[link].dirs[dir].stats
    }

    /// The packets on their way to host `h` (survivors of their link's loss and queue, sent
    /// but not delivered yet; one still to cross a shared bottleneck may yet be dropped there).
    pub fn in_transit_to(&self, h: HostId) -> impl Iterator<Item = &[u8]> {
        self.queue
            .iter()
            .filter_map(move |Reverse(ev)| match &ev.what {
                What::Deliver { host, packet } | What::Forward { host, packet, .. }
                    if *host == h =>
                {
                    Some(packet.as_slice())
                }
                _ => None,
            })
    }

    /// Delivers `packet` to host `h` now, as if it came from the network.
    pub fn inject(&mut self, h: HostId, packet: Vec<u8>) {
        self.schedule(self.now, What::Deliver { host: h, packet });
    }

    fn schedule(&mut self, at: Instant, what: What) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            what,
        }));
    }

    /// Lets host `h`'s application act, sends what its endpoint has to send, and sets its
    /// next wake-up.
    fn service(&mut self, h: HostId) {
        let now = self.now;
        {
            let host = &mut self.hosts[h];
            if let Some(app) = host.app.as_mut() {
                app.poll(now, &mut host.endpoint);
            }
        }
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(t) = self.hosts[h].endpoint.poll_transmit(now, &mut buf) {
            self.send(h, t.src, t.dst, &buf[..t.len]);
        }
        self.buf = buf;
        let host = &mut self.hosts[h];
        // An application was just polled: only a wake-up still ahead of it counts.
        let app_wake = host
            .app
            .as_ref()
            .and_then(|a| a.next_wake())
            .filter(|&t| t > now);
        let wake = [host.endpoint.poll_timeout(), app_wake]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.max(now));
        if wake != host.wake {
            host.wake = wake;
            if let Some(at) = wake {
                self.schedule(at, What::Wake { host: h });
            }
        }
    }

    /// Puts a packet from host `h` on the link its source address belongs to.
    fn send(&mut self, h: HostId, src: IpAddr, dst: IpAddr, packet: &[u8]) {
        let elapsed = self.elapsed();
        if let Some(t) = self.trace.as_mut() {
            let _ = t.record(elapsed, packet);
        }
        // A packet leaves by the interface of its source address, as with a routing rule per
        // line (an address on several links: the one whose far end is the destination); one
        // from an address the host does not have goes nowhere.
        let host = &self.hosts[h];
        let far_end = |i: &Interface| {
            let peer = &self.hosts[self.links[i.link].to[i.dir]];
            peer.interfaces
                .iter()
                .any(|p| p.link == i.link && p.addr == dst)
        };
        let mut own = host.interfaces.iter().filter(|i| i.addr == src);
        let Some(&Interface { link, dir, .. }) = host
            .interfaces
            .iter()
            .find(|i| i.addr == src && far_end(i))
            .or_else(|| own.next())
        else {
            self.unroutable += 1;
            return;
        };
        let to = self.links[link].to[dir];
        let now = self.now;
        let mut packet = packet.to_vec();
        let d = &mut self.links[link].dirs[dir];
        if let Some(pick) = d.strip.as_mut() {
            let index = d.stats.offered;
            if link::PacketInfo::read(index, &packet).is_some_and(|i| pick(elapsed, &i))
                && link::strip_mptcp(&mut packet)
            {
                d.stats.stripped += 1;
            }
        }
        if let Some(pick) = d.corrupt.as_mut() {
            let index = d.stats.offered;
            if link::PacketInfo::read(index, &packet).is_some_and(|i| pick(elapsed, &i))
                && link::corrupt_payload(&mut packet)
            {
                d.stats.corrupted += 1;
            }
        }
        if let Some(at) = d.offer(now, elapsed, &packet) {
            let what = match self.links[link].via[dir] {
                Some(bottleneck) => What::Forward {
                    bottleneck,
                    host: to,
                    packet,
                },
                None => What::Deliver { host: to, packet },
            };
            self.schedule(at, what);
        }
    }

    /// Processes the next event; `false` when there is none.
    pub fn step(&mut self) -> bool {
        let Some(Reverse(ev)) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(ev.at);
        self.events += 1;
        match ev.what {
            What::Deliver { host, packet } => {
                let now = self.now;
                self.hosts[host].endpoint.handle_packet(now, &packet);
                self.service(host);
            }
            What::Forward {
                bottleneck,
                host,
                packet,
            } => {
                let (now, elapsed) = (self.now, self.elapsed());
                if let Some(at) = self.bottlenecks[bottleneck].offer(now, elapsed, &packet) {
                    self.schedule(at, What::Deliver { host, packet });
                }
            }
            What::Wake { host } => {
                if self.hosts[host].wake != Some(ev.at) {
                    return true; // superseded
                }
                self.hosts[host].wake = None;
                let now = self.now;
                self.hosts[host].endpoint.handle_timeout(now);
                self.service(host);
            }
        }
        true
    }

    /// Runs until virtual time `d` from now has passed (or nothing is left to happen).
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.queue.peek().is_some_and(|Reverse(e)| e.at <= end) {
            self.step();
        }
        self.now = self.now.max(end);
    }

    /// Runs until `done` holds (checked after every event), for at most `limit` of virtual
    /// time; returns whether `done` held.
    pub fn run_until(&mut self, mut done: impl FnMut(&Self) -> bool, limit: Duration) -> bool {
        let end = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            match self.queue.peek() {
                Some(Reverse(e)) if e.at <= end => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(end);
                    return done(self);
                }
            }
        }
    }
}

impl<N: Node> Drop for Sim<N> {
    fn drop(&mut self) {
        if let Some(t) = self.trace.take() {
            let _ = t.finish();
        }
        if std::thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "mptcp-sim: simulation `{}` failed at {:?} of virtual time with seed {}; \
                 replay it with MPTCP_SIM_SEED={} (MPTCP_SIM_PCAP=DIR writes its packets)",
                self.name,
                self.elapsed(),
                self.seed,
                self.seed
            );
        }
    }
}
