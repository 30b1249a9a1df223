//! The endpoint: IP packets in, IP packets out, for many TCP connections.
//!
//! It demultiplexes segments by their 4-tuple, answers SYNs on listening addresses (a backlog
//! of half-open connections, SYN cookies once it is full, RFC 4987), opens connections with
//! ephemeral ports (RFC 6056: a random start, then the next free one), sends RSTs for
//! segments that belong to no connection (RFC 9293 §3.10.7.1), and hands connections their
//! segments, the time and the buffer to write into.
//!
//! ```text
//! endpoint.handle_packet(now, bytes)          // an IP packet arrived
//! endpoint.poll_transmit(now, &mut buf)       // an IP packet to send, until None
//! endpoint.poll_timeout()                     // when to call handle_timeout
//! endpoint.handle_timeout(now)
//! endpoint.conn_mut(h).write(..) / read(..) / close()
//! endpoint.poll_event()                       // Incoming, Connected, Readable, Closed, ...
//! ```

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::collections::VecDeque;
use std::time::Instant;

use rand_core::{Rng, SeedableRng};

use crate::deadline::CachedDeadline;
use crate::keyed_map::{KeyedMap, keyed_map};
use rand_xoshiro::Xoshiro256PlusPlus;

use arrayvec::ArrayVec;

use crate::tcp::connection::{OutgoingSegment, PeerSyn, Reaction, SegmentHook, wscale_for};
use crate::tcp::fast_open::{self, CookieCache, CookieNews, Pair};
use crate::tcp::isn::{self, Secret};
use crate::tcp::rtt_cache::{PathRtt, RttCache};
use crate::tcp::{Config, Connection, Event, State};
use crate::wire::ip::PROTOCOL_TCP;
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::ipv6::{self, Ipv6Packet, Ipv6Repr};
use crate::wire::mptcp::MptcpOption;
use crate::wire::tcp::{SeqNumber, TcpFlags, TcpPacket, TcpRepr};

/// Settings of an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Settings of every connection.
    pub tcp: Config,
    /// Key of ISNs and SYN cookies: random, secret, per host.
    pub secret: Secret,
    /// Seed of the endpoint's random choices (ports, timestamp offsets); the driver gives
    /// a random one, the simulator a reproducible one.
    pub seed: u64,
    /// Ephemeral ports, inclusive (RFC 6056 recommends 1024–65535; Linux uses 32768–60999).
    pub ephemeral_ports: (u16, u16),
    /// Half-open plus not-yet-accepted connections per listener before SYN cookies are used.
    pub syn_backlog: usize,
    /// TTL / hop limit of sent packets.
    pub ttl: u8,
    /// Listeners take TCP Fast Open (RFC 7413): they give cookies to the clients that ask,
    /// and take the data of SYNs whose cookie checks. Data in a SYN can be replayed (§6.1):
    /// only for applications that tolerate it.
    pub fast_open: bool,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            tcp: Config::default(),
            secret: [0; 32],
            seed: 0,
            ephemeral_ports: (32768, 60999),
            syn_backlog: 128,
            ttl: 64,
            fast_open: false,
        }
    }
}

/// A connection of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnHandle {
    index: u32,
    generation: u32,
}

/// What happened, for the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointEvent {
    /// A connection to this listening address completed its handshake: `accept` it.
    Incoming(SocketAddr),
    /// Something happened on a connection.
    Connection(ConnHandle, Event),
}

/// An IP packet written by [`Endpoint::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Its source address (which line it must leave by).
    pub src: IpAddr,
    /// Its destination.
    pub dst: IpAddr,
    /// Its length in the buffer.
    pub len: usize,
}

/// Why a packet was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Not a well-formed IPv4/IPv6 + TCP packet, or a bad checksum.
    #[error("malformed packet: {0}")]
    Malformed(#[from] crate::wire::Error),
    /// Not TCP.
    #[error("not TCP (protocol {0})")]
    NotTcp(u8),
}

/// Why `connect` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The 4-tuple is taken.
    #[error("address in use")]
    AddrInUse,
    /// No ephemeral port is free for this destination.
    #[error("no free ephemeral port")]
    NoPorts,
    /// Local and remote addresses of different families, or an unspecified remote.
    #[error("invalid address")]
    InvalidAddress,
}

/// Why `listen` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// Something listens there already.
    #[error("already listening on that address")]
    AddrInUse,
}

/// Counters of an endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Packets handed in.
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Packets dropped as malformed.
    pub malformed: u64,
    /// RSTs sent for segments of no connection.
    pub resets_sent: u64,
    /// SYN-ACKs sent as cookies (backlog full).
    pub syn_cookies_sent: u64,
    /// Connections rebuilt from a valid cookie.
    pub syn_cookies_accepted: u64,
    /// Stateless replies dropped because too many were queued.
    pub replies_dropped: u64,
    /// TCP Fast Open cookies given to clients (listener).
    pub fast_open_cookies_sent: u64,
    /// SYNs whose data a listener took (a valid Fast Open cookie).
    pub fast_open_accepted: u64,
    /// SYNs with a Fast Open cookie that did not check (their data waits for the handshake).
    pub fast_open_refused: u64,
    /// Client: SYNs with data whose data the server took (0-RTT).
    pub fast_open_data_taken: u64,
    /// Client: SYNs with data whose data the server did not take (sent again after the
    /// handshake; the cookie replaced or forgotten).
    pub fast_open_data_refused: u64,
    /// Client: SYNs with data that got no answer in time, after which that pair of addresses
    /// is held back from Fast Open for a while (RFC 7413 §4.1.3.1). An answer that comes
    /// after all (to the retry) also counts in [`Self::fast_open_data_taken`] or
    /// [`Self::fast_open_data_refused`], and ends the hold.
    pub fast_open_syns_lost: u64,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    conn: Option<Box<Connection>>,
    /// `conn`'s earliest timer, forgotten whenever `conn` is handed out mutably.
    deadline: CachedDeadline,
    dirty: bool,
    /// The listener of a passive connection until it is established.
    half_open_of: Option<SocketAddr>,
    /// A passive connection the hook took ([`SynDecision::Accept`]), until it is established.
    hook_half_open: bool,
}

#[derive(Debug)]
struct Listener {
    addr: SocketAddr,
    half_open: usize,
    ready: VecDeque<ConnHandle>,
}

/// A segment the endpoint sends on no connection's behalf: a RST or a SYN-cookie SYN-ACK.
#[derive(Debug, Clone)]
struct Reply {
    local: SocketAddr,
    remote: SocketAddr,
    seq: SeqNumber,
    ack: Option<SeqNumber>,
    flags: u16,
    window: u16,
    mss: Option<u16>,
    window_scale: Option<u8>,
    sack: bool,
    timestamps: Option<(u32, u32)>,
    /// The hook's options ([`EndpointHook::reply_options`]).
    options: ArrayVec<MptcpOption<'static>, 2>,
}

/// Most stateless replies held at once; more are dropped (a flood must not grow memory).
const MAX_REPLIES: usize = 256;

/// Many TCP connections over one IP interface.
#[derive(Debug)]
pub struct Endpoint {
    cfg: EndpointConfig,
    epoch: Instant,
    rng: Xoshiro256PlusPlus,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_tuple: KeyedMap<(SocketAddr, SocketAddr), ConnHandle>,
    listeners: Vec<Listener>,
    replies: VecDeque<Reply>,
    /// Until when ACKs to a listener may carry a cookie: two cookie periods after the last
    /// one sent. A bare ACK is never taken for a cookie otherwise (no blind guessing).
    cookies_until: Option<Instant>,
    dirty: VecDeque<ConnHandle>,
    touched: Vec<ConnHandle>,
    /// Connections whose timers ran ([`Endpoint::drain_fired`]).
    fired: Vec<ConnHandle>,
    events: VecDeque<EndpointEvent>,
    ip_ident: u16,
    stats: EndpointStats,
    /// Connections the hook took that are not established yet ([`SynDecision::Accept`]).
    hook_half_open: usize,
    /// TCP Fast Open cookies of the servers we connected to.
    cookies: CookieCache,
    /// What recent connections measured of their paths, for new connections' first timeout.
    rtts: RttCache,
}

/// Most half-open connections the hook may take ([`SynDecision::Accept`]) at once: they have
/// no listener's backlog to bound them.
const MAX_HOOK_ACCEPTED_HALF_OPEN: usize = 1024;

impl Endpoint {
    /// An endpoint whose clock starts at `now`.
    #[must_use]
    pub fn new(cfg: EndpointConfig, now: Instant) -> Self {
        let rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
        let secret = cfg.secret;
        Self {
            cfg,
            epoch: now,
            rng,
            slots: Vec::new(),
            free: Vec::new(),
            by_tuple: keyed_map(&secret, "endpoint 4-tuples"),
            rtts: RttCache::new(&secret),
            listeners: Vec::new(),
            replies: VecDeque::new(),
            cookies_until: None,
            dirty: VecDeque::new(),
            touched: Vec::new(),
            fired: Vec::new(),
            events: VecDeque::new(),
            ip_ident: 0,
            stats: EndpointStats::default(),
            hook_half_open: 0,
            cookies: CookieCache::default(),
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// Live connections (TIME-WAIT included).
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.slots.iter().filter(|s| s.conn.is_some()).count()
    }

    fn since_epoch(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch)
    }

    // --- application calls ------------------------------------------------------------

    /// Listens on `addr` (an unspecified IP listens on every address of its family).
    pub fn listen(&mut self, addr: SocketAddr) -> Result<(), ListenError> {
        if self.listeners.iter().any(|l| l.addr == addr) {
            return Err(ListenError::AddrInUse);
        }
        self.listeners.push(Listener {
            addr,
            half_open: 0,
            ready: VecDeque::new(),
        });
        Ok(())
    }

    /// Stops listening on `addr`; connections not yet accepted are reset.
    pub fn unlisten(&mut self, now: Instant, addr: SocketAddr) {
        let Some(i) = self.listeners.iter().position(|l| l.addr == addr) else {
            return;
        };
        let l = self.listeners.remove(i);
        let half_open: Vec<ConnHandle> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.conn.is_some() && s.half_open_of == Some(addr))
            .map(|(i, s)| ConnHandle {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                generation: s.generation,
            })
            .collect();
        for h in l.ready.into_iter().chain(half_open) {
            if let Some(s) = self.slot_mut(h) {
                s.half_open_of = None;
            }
            if let Some(c) = self.conn_mut(h) {
                c.abort();
            }
            self.release(now, h);
        }
    }

    /// The next established connection to listener `addr`.
    pub fn accept(&mut self, addr: SocketAddr) -> Option<ConnHandle> {
        self.listeners
            .iter_mut()
            .find(|l| l.addr == addr)?
            .ready
            .pop_front()
    }

    /// Opens a connection from `local` (port 0: an ephemeral port) to `remote`; the SYN
    /// goes out at the next [`Endpoint::poll_transmit`].
    pub fn connect(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<ConnHandle, ConnectError> {
        if local.is_ipv4() != remote.is_ipv4()
            || local.ip().is_unspecified()
            || remote.ip().is_unspecified()
            || remote.port() == 0
        {
            return Err(ConnectError::InvalidAddress);
        }
        let local = if local.port() == 0 {
            self.ephemeral(local.ip(), remote)?
        } else {
            local
        };
        if self.by_tuple.contains_key(&(local, remote)) {
            return Err(ConnectError::AddrInUse);
        }
        let iss =
            isn::initial_sequence_number(&self.cfg.secret, local, remote, self.since_epoch(now));
        #[expect(clippy::cast_possible_truncation, reason = "a random 32-bit offset")]
        let ts_offset = self.rng.next_u64() as u32;
        let mut conn =
            Connection::connect(&self.cfg.tcp, self.epoch, local, remote, iss, ts_offset);
        self.seed_rtt(&mut conn);
        Ok(self.insert(conn, None))
    }

    /// [`Endpoint::connect`] with TCP Fast Open (RFC 7413): with a cookie from `remote`'s
    /// host, the SYN carries it and the data written before it goes (see
    /// [`Connection::syn_data_room`]); without one, the SYN asks for one. The data may reach
    /// the server twice (§6.1): only for applications that tolerate it.
    pub fn connect_fast_open(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<ConnHandle, ConnectError> {
        let h = self.connect(now, local, remote)?;
        // Not to a server whose SYNs with data from this address got lost lately (a plain SYN
        // then). A cookie is good for the address it was given to (RFC 7413 §4.1.3).
        let pair = Pair {
            client: local.ip(),
            server: remote.ip(),
        };
        if self.cookies.may_open(pair, now) {
            let cached = self.cookies.get(pair).cloned();
            if let Some(c) = self.conn_mut(h) {
                c.set_fast_open(cached);
            }
        }
        Ok(h)
    }

    /// The TCP Fast Open cookies this endpoint holds, by client and server address.
    #[must_use]
    pub fn fast_open_cookies(&self) -> &CookieCache {
        &self.cookies
    }

    /// RFC 6056 §3.3.2 (Algorithm 2's random start): the first free port from a random one.
    fn ephemeral(&mut self, ip: IpAddr, remote: SocketAddr) -> Result<SocketAddr, ConnectError> {
        let (lo, hi) = self.cfg.ephemeral_ports;
        let span = u64::from(hi.saturating_sub(lo)) + 1;
        let start = self.rng.next_u64() % span;
        for k in 0..span {
            let port = u16::try_from(u64::from(lo) + (start + k) % span).unwrap_or(lo);
            let cand = SocketAddr::new(ip, port);
            let listening = self.listeners.iter().any(|l| l.addr.port() == port);
            if !listening && !self.by_tuple.contains_key(&(cand, remote)) {
                return Ok(cand);
            }
        }
        Err(ConnectError::NoPorts)
    }

    fn insert(&mut self, conn: Connection, half_open_of: Option<SocketAddr>) -> ConnHandle {
        let tuple = (conn.local(), conn.remote());
        let h = if let Some(i) = self.free.pop() {
            let slot = &mut self.slots[i as usize];
            slot.generation = slot.generation.wrapping_add(1);
            slot.conn = Some(Box::new(conn));
            slot.deadline.forget();
            slot.dirty = false;
            slot.half_open_of = half_open_of;
            slot.hook_half_open = false;
            ConnHandle {
                index: i,
                generation: slot.generation,
            }
        } else {
            let index = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
            self.slots.push(Slot {
                generation: 0,
                conn: Some(Box::new(conn)),
                deadline: CachedDeadline::default(),
                dirty: false,
                half_open_of,
                hook_half_open: false,
            });
            ConnHandle {
                index,
                generation: 0,
            }
        };
        self.by_tuple.insert(tuple, h);
        self.mark_dirty(h);
        h
    }

    fn slot(&self, h: ConnHandle) -> Option<&Slot> {
        self.slots
            .get(h.index as usize)
            .filter(|s| s.generation == h.generation && s.conn.is_some())
    }

    /// A slot to change: its connection's deadline is asked again next time.
    fn slot_mut(&mut self, h: ConnHandle) -> Option<&mut Slot> {
        let s = self
            .slots
            .get_mut(h.index as usize)
            .filter(|s| s.generation == h.generation && s.conn.is_some())?;
        s.deadline.forget();
        Some(s)
    }

    /// The connection of a 4-tuple.
    #[must_use]
    pub fn lookup(&self, local: SocketAddr, remote: SocketAddr) -> Option<ConnHandle> {
        self.by_tuple.get(&(local, remote)).copied()
    }

    /// A connection, to look at.
    #[must_use]
    pub fn conn(&self, h: ConnHandle) -> Option<&Connection> {
        self.slot(h).and_then(|s| s.conn.as_deref())
    }

    /// A connection, to write, read or close; it is polled for output and events afterwards.
    pub fn conn_mut(&mut self, h: ConnHandle) -> Option<&mut Connection> {
        self.slot(h)?;
        self.mark_dirty(h);
        self.touched.push(h);
        self.slot_mut(h).and_then(|s| s.conn.as_deref_mut())
    }

    /// The application is done with a connection: it is closed gracefully (FIN) if it was
    /// not, and forgotten once it has ended (after TIME-WAIT).
    pub fn release(&mut self, now: Instant, h: ConnHandle) {
        if let Some(c) = self.conn_mut(h) {
            c.close();
            c.release(now);
        }
        self.reap(h);
    }

    fn mark_dirty(&mut self, h: ConnHandle) {
        if let Some(s) = self.slot_mut(h) {
            if !s.dirty {
                s.dirty = true;
                self.dirty.push_back(h);
            }
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        for h in std::mem::take(&mut self.touched) {
            self.collect_events(h);
        }
        self.events.pop_front()
    }

    fn collect_events(&mut self, h: ConnHandle) {
        let Some(c) = self.slot_mut(h).and_then(|s| s.conn.as_deref_mut()) else {
            return;
        };
        let mut evs = Vec::new();
        let mut measure = false;
        while let Some(e) = c.poll_event() {
            // The handshake's round trip, and the whole connection's at its end.
            measure |= matches!(e, Event::Connected | Event::Closed(_));
            evs.push(EndpointEvent::Connection(h, e));
        }
        if let Some(srtt) = c.srtt().filter(|_| measure) {
            let rtt = PathRtt {
                srtt,
                rttvar: c.rttvar(),
            };
            let (local, remote) = (c.local().ip(), c.remote().ip());
            self.rtts.note(local, remote, rtt);
        }
        self.events.extend(evs);
    }

    /// Seeds a new connection's first timeout with what the last connection between the same
    /// two addresses measured (RFC 9040 §4.2).
    fn seed_rtt(&self, conn: &mut Connection) {
        if let Some(r) = self.rtts.get(conn.local().ip(), conn.remote().ip()) {
            conn.seed_rtt(r.srtt, r.rttvar);
        }
    }

    /// Forgets a connection that ended, if nobody needs it any more.
    fn reap(&mut self, h: ConnHandle) {
        let Some(slot) = self.slot(h) else { return };
        let Some(c) = slot.conn.as_deref() else {
            return;
        };
        if c.state() != State::Closed || c.reset_pending() {
            // Its RST goes out first (`poll_transmit` reaps it afterwards).
            return;
        }
        let tuple = (c.local(), c.remote());
        let released = c.is_released();
        let half_open_of = slot.half_open_of;
        if slot.hook_half_open {
            self.hook_half_open = self.hook_half_open.saturating_sub(1);
            if let Some(s) = self.slot_mut(h) {
                s.hook_half_open = false;
            }
        }
        if self.by_tuple.get(&tuple) == Some(&h) {
            self.by_tuple.remove(&tuple);
        }
        if let Some(l) = half_open_of {
            if let Some(li) = self.listeners.iter_mut().find(|x| x.addr == l) {
                li.half_open = li.half_open.saturating_sub(1);
            }
        }
        if released || half_open_of.is_some() {
            self.collect_events(h);
            if let Some(s) = self.slot_mut(h) {
                s.conn = None;
                s.half_open_of = None;
                s.dirty = false;
                self.free.push(h.index);
            }
        }
    }

    // --- packets ------------------------------------------------------------------------

    /// Handles an IP packet (IPv4 or IPv6 carrying TCP); returns the connection that took it.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        packet: &[u8],
    ) -> Result<Option<ConnHandle>, PacketError> {
        self.handle_packet_with(now, packet, &mut NoOptions)
    }

    /// Like [`Endpoint::handle_packet`], with `hook` ([`Endpoint::handle_segment_with`]).
    pub fn handle_packet_with(
        &mut self,
        now: Instant,
        packet: &[u8],
        hook: &mut dyn EndpointHook,
    ) -> Result<Option<ConnHandle>, PacketError> {
        self.stats.packets_in += 1;
        let r = parse_packet(packet).and_then(|(src, dst, tcp)| {
            let p = TcpPacket::new_checked(tcp)?;
            let seg = TcpRepr::parse(&p, src, dst, true)?;
            Ok(self.handle_segment_with(now, src, dst, &seg, hook))
        });
        if r.is_err() {
            self.stats.malformed += 1;
        }
        r.map_err(PacketError::Malformed)
    }

    /// Counts a packet its caller could not parse (as [`Endpoint::handle_packet`] does).
    pub(crate) fn count_malformed(&mut self) {
        self.stats.packets_in += 1;
        self.stats.malformed += 1;
    }

    /// Counts a packet its caller parsed itself before [`Endpoint::handle_segment_with`].
    pub(crate) fn count_packet_in(&mut self) {
        self.stats.packets_in += 1;
    }

    /// Handles a parsed segment from `src` to `dst` (for callers that read its options
    /// first: the MPTCP layer). Returns the connection that took it.
    pub fn handle_segment(
        &mut self,
        now: Instant,
        src: IpAddr,
        dst: IpAddr,
        seg: &TcpRepr<'_>,
    ) -> Option<ConnHandle> {
        self.handle_segment_with(now, src, dst, seg, &mut NoOptions)
    }

    /// Like [`Endpoint::handle_segment`], with `hook` deciding what becomes of a SYN that opens
    /// a connection ([`EndpointHook::on_syn`]) and adding options to the replies the endpoint
    /// makes itself: resets and SYN cookies' SYN-ACKs ([`EndpointHook::reply_options`]). The
    /// connection a SYN opened is returned too, so the hook can attach its state to it.
    pub fn handle_segment_with(
        &mut self,
        now: Instant,
        src: IpAddr,
        dst: IpAddr,
        seg: &TcpRepr<'_>,
        hook: &mut dyn EndpointHook,
    ) -> Option<ConnHandle> {
        let known = self.lookup(
            SocketAddr::new(dst, seg.dst_port),
            SocketAddr::new(src, seg.src_port),
        );
        self.handle_segment_of(now, src, dst, seg, hook, known)
    }

    /// [`Endpoint::handle_segment_with`] for a caller that looked the segment's connection up
    /// already (`known`: [`Endpoint::lookup`] of its addresses).
    pub(crate) fn handle_segment_of(
        &mut self,
        now: Instant,
        src: IpAddr,
        dst: IpAddr,
        seg: &TcpRepr<'_>,
        hook: &mut dyn EndpointHook,
        known: Option<ConnHandle>,
    ) -> Option<ConnHandle> {
        let local = SocketAddr::new(dst, seg.dst_port);
        let remote = SocketAddr::new(src, seg.src_port);
        if let Some(h) = known {
            let (reaction, news) = {
                let slot = self.slot_mut(h)?;
                let conn = slot.conn.as_deref_mut()?;
                let r = conn.handle_segment(now, seg);
                (r, conn.take_cookie_news())
            };
            self.note_cookie(local.ip(), remote.ip(), news, now);
            self.mark_dirty(h);
            match reaction {
                Reaction::None | Reaction::Forget => {}
                Reaction::Reset(seq) => {
                    let options = hook.reply_options(ReplyKind::Reset, local, remote, seg);
                    self.queue_reset(local, remote, seq, None, options);
                }
                Reaction::Established => {
                    if self
                        .slot_mut(h)
                        .is_some_and(|s| std::mem::take(&mut s.hook_half_open))
                    {
                        self.hook_half_open = self.hook_half_open.saturating_sub(1);
                    }
                    if let Some(l) = self.slot_mut(h).and_then(|s| s.half_open_of.take()) {
                        if let Some(li) = self.listeners.iter_mut().find(|x| x.addr == l) {
                            li.half_open = li.half_open.saturating_sub(1);
                            li.ready.push_back(h);
                            self.events.push_back(EndpointEvent::Incoming(l));
                        }
                    }
                }
            }
            self.collect_events(h);
            self.reap(h);
            return Some(h);
        }
        let flags = seg.flags;
        if flags.contains(TcpFlags::RST) {
            return None;
        }
        let listener = self.listener_for(local);
        let opening = flags.contains(TcpFlags::SYN) && seg.ack_number.is_none();
        if opening {
            match hook.on_syn(local, remote, seg) {
                SynDecision::Listener => {}
                SynDecision::Accept => return self.on_syn(now, None, local, remote, seg, hook),
                SynDecision::Reset => {
                    self.reset_for(local, remote, seg, hook);
                    return None;
                }
                SynDecision::Drop => return None,
            }
        }
        match (listener, opening, seg.ack_number) {
            (Some(l), true, None) => return self.on_syn(now, Some(l), local, remote, seg, hook),
            (Some(l), false, Some(ack)) if self.cookies_until.is_some_and(|t| now < t) => {
                return self.on_cookie_ack(now, l, local, remote, seg, ack, hook);
            }
            // RFC 9293 §3.10.7.2: without SYN or ACK, a listener drops it.
            (Some(_), false, None) => {}
            _ => self.reset_for(local, remote, seg, hook),
        }
        None
    }

    /// What a SYN-ACK (or a lost SYN with data) said of a server's cookie.
    fn note_cookie(
        &mut self,
        client: IpAddr,
        server: IpAddr,
        news: Option<CookieNews>,
        now: Instant,
    ) {
        let pair = Pair { client, server };
        match news {
            Some(CookieNews::Got(c)) => self.cookies.insert(pair, c),
            Some(CookieNews::Taken(c)) => {
                self.stats.fast_open_data_taken += 1;
                self.cookies.syn_answered(pair);
                if let Some(c) = c {
                    self.cookies.insert(pair, c);
                }
            }
            Some(CookieNews::Refused(c)) => {
                // Answered: the path carries SYNs with data (Linux forgives its losses too).
                self.stats.fast_open_data_refused += 1;
                self.cookies.syn_answered(pair);
                match c {
                    Some(c) => self.cookies.insert(pair, c),
                    None => self.cookies.remove(pair),
                }
            }
            Some(CookieNews::SynLost) => {
                self.stats.fast_open_syns_lost += 1;
                self.cookies.syn_lost(pair, now);
            }
            None => {}
        }
    }

    fn listener_for(&self, local: SocketAddr) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.addr == local)
            .or_else(|| {
                self.listeners.iter().find(|l| {
                    l.addr.port() == local.port()
                        && l.addr.ip().is_unspecified()
                        && l.addr.is_ipv4() == local.is_ipv4()
                })
            })
            .map(|l| l.addr)
    }

    /// RFC 9293 §3.10.7.1: a RST for a segment that belongs to nothing, with the hook's
    /// options (an `MP_TCPRST` saying why, RFC 8684 §3.6).
    fn reset_for(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        seg: &TcpRepr<'_>,
        hook: &mut dyn EndpointHook,
    ) {
        let options = hook.reply_options(ReplyKind::Reset, local, remote, seg);
        if let Some(ack) = seg.ack_number {
            self.queue_reset(local, remote, ack, None, options);
        } else {
            let len = seg.payload.len()
                + usize::from(seg.flags.contains(TcpFlags::SYN))
                + usize::from(seg.flags.contains(TcpFlags::FIN));
            let ack = seg.seq_number.wrapping_add(u32::try_from(len).unwrap_or(0));
            self.queue_reset(local, remote, SeqNumber(0), Some(ack), options);
        }
    }

    fn queue_reset(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        seq: SeqNumber,
        ack: Option<SeqNumber>,
        options: ArrayVec<MptcpOption<'static>, 2>,
    ) {
        self.stats.resets_sent += 1;
        self.queue_reply(Reply {
            local,
            remote,
            seq,
            ack,
            flags: TcpFlags::RST,
            window: 0,
            mss: None,
            window_scale: None,
            sack: false,
            timestamps: None,
            options,
        });
    }

    fn queue_reply(&mut self, r: Reply) {
        if self.replies.len() >= MAX_REPLIES {
            self.stats.replies_dropped += 1;
        } else {
            self.replies.push_back(r);
        }
    }

    /// A SYN opening a connection: to `listener` (queued for `accept` once established), or,
    /// with `None`, one the hook took ([`SynDecision::Accept`]), which no listener sees.
    fn on_syn(
        &mut self,
        now: Instant,
        listener: Option<SocketAddr>,
        local: SocketAddr,
        remote: SocketAddr,
        seg: &TcpRepr<'_>,
        hook: &mut dyn EndpointHook,
    ) -> Option<ConnHandle> {
        let syn = PeerSyn::from_repr(seg);
        if let Some(listener) = listener {
            let l = self.listeners.iter().find(|x| x.addr == listener)?;
            if l.half_open + l.ready.len() >= self.cfg.syn_backlog {
                let options = hook.reply_options(ReplyKind::CookieSynAck, local, remote, seg);
                self.send_cookie(now, local, remote, &syn, options);
                return None;
            }
        } else if self.hook_half_open >= MAX_HOOK_ACCEPTED_HALF_OPEN {
            // Connections the hook takes have no listener's backlog: a bound of their own.
            return None;
        }
        let iss =
            isn::initial_sequence_number(&self.cfg.secret, local, remote, self.since_epoch(now));
        #[expect(clippy::cast_possible_truncation, reason = "a random 32-bit offset")]
        let ts_offset = self.rng.next_u64() as u32;
        let mut conn = Connection::accept(
            &self.cfg.tcp,
            self.epoch,
            local,
            remote,
            iss,
            ts_offset,
            &syn,
            now,
        );
        self.seed_rtt(&mut conn);
        let fast_open = listener.is_some() && self.fast_open_syn(&mut conn, remote, seg);
        match listener {
            // A SYN whose data was taken is ready for the application at once (RFC 7413
            // §4.2.2): it need not wait for the handshake's last ACK.
            Some(listener) if fast_open => {
                let h = self.insert(conn, None);
                if let Some(li) = self.listeners.iter_mut().find(|x| x.addr == listener) {
                    li.ready.push_back(h);
                    self.events.push_back(EndpointEvent::Incoming(listener));
                }
                return Some(h);
            }
            Some(listener) => {
                if let Some(li) = self.listeners.iter_mut().find(|x| x.addr == listener) {
                    li.half_open += 1;
                }
            }
            None => self.hook_half_open += 1,
        }
        let h = self.insert(conn, listener);
        if listener.is_none() {
            if let Some(s) = self.slot_mut(h) {
                s.hook_half_open = true;
            }
        }
        Some(h)
    }

    /// A listener's TCP Fast Open (RFC 7413 §4.2): a SYN with a valid cookie has its data
    /// taken (returns true); one that asks for a cookie, or presents a wrong one, gets one in
    /// the SYN-ACK (its data, if any, waits for the handshake).
    fn fast_open_syn(
        &mut self,
        conn: &mut Connection,
        remote: SocketAddr,
        seg: &TcpRepr<'_>,
    ) -> bool {
        if !self.cfg.fast_open {
            return false;
        }
        let Some(cookie) = seg.fast_open else {
            return false;
        };
        if !cookie.is_empty() && fast_open::check_cookie(&self.cfg.secret, remote.ip(), cookie) {
            if seg.payload.is_empty() {
                return false;
            }
            conn.take_syn_data(seg.payload);
            self.stats.fast_open_accepted += 1;
            return conn.syn_data() > 0;
        }
        if !cookie.is_empty() {
            self.stats.fast_open_refused += 1;
        }
        conn.offer_cookie(fast_open::make_cookie(&self.cfg.secret, remote.ip()));
        self.stats.fast_open_cookies_sent += 1;
        false
    }

    /// A stateless SYN-ACK whose ISN is a cookie (RFC 4987 §3.6).
    fn send_cookie(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        syn: &PeerSyn,
        options: ArrayVec<MptcpOption<'static>, 2>,
    ) {
        let since = self.since_epoch(now);
        let peer_mss = syn.mss.unwrap_or(if local.is_ipv4() { 536 } else { 1220 });
        let cookie = isn::make_cookie(&self.cfg.secret, local, remote, syn.isn, peer_mss, since);
        let tcp = &self.cfg.tcp;
        // Window scaling and SACK can be remembered only in an echoed timestamp.
        let ts = syn.tsval.filter(|_| tcp.timestamps).map(|tsval| {
            #[expect(clippy::cast_possible_truncation, reason = "the clock wraps by design")]
            let clock = since.as_millis() as u32;
            let ws = syn.wscale.filter(|_| tcp.window_scaling);
            (
                isn::encode_ts_options(clock, ws, syn.sack && tcp.sack),
                tsval,
            )
        });
        let ip = if local.is_ipv4() { 20 } else { 40 };
        let our_mss = u16::try_from(tcp.mtu.saturating_sub(ip + 20)).unwrap_or(u16::MAX);
        self.stats.syn_cookies_sent += 1;
        self.cookies_until = Some(now + Duration::from_secs(128));
        self.queue_reply(Reply {
            local,
            remote,
            seq: cookie,
            ack: Some(syn.isn.wrapping_add(1)),
            flags: TcpFlags::SYN,
            window: u16::try_from(tcp.recv_buffer.min(65_535)).unwrap_or(u16::MAX),
            mss: Some(our_mss),
            window_scale: ts
                .and(syn.wscale)
                .and(tcp.window_scaling.then(|| wscale_for(tcp.recv_buffer_max))),
            sack: ts.is_some() && syn.sack && tcp.sack,
            timestamps: ts,
            options,
        });
    }

    /// The last ACK of a handshake whose SYN-ACK was a cookie.
    #[expect(
        clippy::too_many_arguments,
        reason = "one segment, where it goes, and the hook that adds options to a reset"
    )]
    fn on_cookie_ack(
        &mut self,
        now: Instant,
        listener: SocketAddr,
        local: SocketAddr,
        remote: SocketAddr,
        seg: &TcpRepr<'_>,
        ack: SeqNumber,
        hook: &mut dyn EndpointHook,
    ) -> Option<ConnHandle> {
        // A full accept queue takes no more connections (Linux drops the ACK too): a flood of
        // completed handshakes must not grow memory without the application accepting.
        if self
            .listeners
            .iter()
            .find(|x| x.addr == listener)
            .is_some_and(|l| l.ready.len() >= self.cfg.syn_backlog)
        {
            return None;
        }
        let cookie = SeqNumber(ack.0.wrapping_sub(1));
        let peer_isn = SeqNumber(seg.seq_number.0.wrapping_sub(1));
        let Some(data) = isn::check_cookie(
            &self.cfg.secret,
            local,
            remote,
            peer_isn,
            cookie,
            self.since_epoch(now),
        ) else {
            self.reset_for(local, remote, seg, hook);
            return None;
        };
        let (ws, sack, ts) = match seg.timestamps {
            Some((tsval, tsecr)) if self.cfg.tcp.timestamps => {
                let (ws, sack) = isn::decode_ts_options(tsecr);
                (ws, sack, Some((tsval, tsecr)))
            }
            _ => (None, false, None),
        };
        self.stats.syn_cookies_accepted += 1;
        let conn = Connection::from_cookie(
            &self.cfg.tcp,
            self.epoch,
            local,
            remote,
            cookie,
            peer_isn,
            data.mss,
            ws,
            sack,
            ts,
            now,
        );
        let h = self.insert(conn, None);
        if let Some(li) = self.listeners.iter_mut().find(|x| x.addr == listener) {
            li.ready.push_back(h);
        }
        self.events.push_back(EndpointEvent::Incoming(listener));
        // The ACK may carry data (and its window): let the connection take it.
        if let Some(c) = self.slot_mut(h).and_then(|s| s.conn.as_deref_mut()) {
            let _ = c.handle_segment(now, seg);
        }
        self.collect_events(h);
        Some(h)
    }

    /// Writes the next IP packet to send into `buf` (at least the MTU long). Worth calling
    /// again, until it returns `None`, after every other call.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.poll_transmit_with(now, buf, &mut NoOptions)
    }

    /// Like [`Endpoint::poll_transmit`], with `hook` adding options to connections'
    /// segments (the MPTCP layer).
    pub fn poll_transmit_with(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        hook: &mut dyn EndpointHook,
    ) -> Option<Transmit> {
        let mtu = self.cfg.tcp.mtu.min(buf.len());
        if let Some(r) = self.replies.pop_front() {
            let ip_len = ip_header_len(r.local.ip());
            let n = emit_reply(&r, &mut buf[ip_len..mtu]);
            return Some(self.finish_packet(buf, r.local.ip(), r.remote.ip(), n));
        }
        while let Some(h) = self.dirty.pop_front() {
            let Some(slot) = self.slot_mut(h) else {
                continue;
            };
            let Some(conn) = slot.conn.as_deref_mut() else {
                continue;
            };
            let (src, dst) = (conn.local().ip(), conn.remote().ip());
            let ip_len = ip_header_len(src);
            let out = &mut buf[ip_len..mtu];
            let n = conn.poll_transmit(now, out, &mut ForConnection { hook, conn: h });
            if let Some(n) = n {
                // More may follow: keep it in the round.
                self.dirty.push_back(h);
                self.collect_events(h);
                self.reap(h);
                return Some(self.finish_packet(buf, src, dst, n));
            }
            if let Some(s) = self.slot_mut(h) {
                s.dirty = false;
            }
            self.collect_events(h);
            self.reap(h);
        }
        None
    }

    fn finish_packet(
        &mut self,
        buf: &mut [u8],
        src: IpAddr,
        dst: IpAddr,
        tcp_len: usize,
    ) -> Transmit {
        self.stats.packets_out += 1;
        let len = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                self.ip_ident = self.ip_ident.wrapping_add(1);
                Ipv4Repr {
                    src_addr: s,
                    dst_addr: d,
                    protocol: PROTOCOL_TCP,
                    payload_len: tcp_len,
                    ttl: self.cfg.ttl,
                    tos: 0,
                    ident: self.ip_ident,
                    dont_frag: true,
                }
                .emit(buf);
                ipv4::HEADER_LEN + tcp_len
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                Ipv6Repr {
                    src_addr: s,
                    dst_addr: d,
                    next_header: PROTOCOL_TCP,
                    payload_len: tcp_len,
                    hop_limit: self.cfg.ttl,
                    traffic_class: 0,
                    flow_label: 0,
                }
                .emit(buf);
                ipv6::HEADER_LEN + tcp_len
            }
            // Connections are never made across families (`connect` refuses it).
            _ => 0,
        };
        Transmit { src, dst, len }
    }

    /// The earliest timer of any connection.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| {
                let c = s.conn.as_deref()?;
                s.deadline.get(|| c.poll_timeout())
            })
            .min()
    }

    /// The connections whose timers ran in the last [`Endpoint::handle_timeout`] (a layer
    /// above looks at what they did).
    pub(crate) fn drain_fired(&mut self) -> std::vec::Drain<'_, ConnHandle> {
        self.fired.drain(..)
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.fired.clear();
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            let Some(c) = slot.conn.as_deref_mut() else {
                continue;
            };
            if slot
                .deadline
                .get(|| c.poll_timeout())
                .is_some_and(|t| t <= now)
            {
                slot.deadline.forget();
                c.handle_timeout(now);
                if let Some(news) = c.take_cookie_news() {
                    let (client, server) = (c.local().ip(), c.remote().ip());
                    self.note_cookie(client, server, Some(news), now);
                }
                let slot = &self.slots[i];
                let h = ConnHandle {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    generation: slot.generation,
                };
                self.fired.push(h);
                self.mark_dirty(h);
                self.collect_events(h);
                self.reap(h);
            }
        }
    }
}

/// Splits an IP packet into source, destination and TCP bytes (for the MPTCP layer, which
/// reads a segment's options around the endpoint's handling of it).
pub(crate) fn parse_ip(packet: &[u8]) -> Result<(IpAddr, IpAddr, &[u8]), crate::wire::Error> {
    parse_packet(packet)
}

/// Splits an IP packet into source, destination and TCP bytes.
fn parse_packet(packet: &[u8]) -> Result<(IpAddr, IpAddr, &[u8]), crate::wire::Error> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let p = Ipv4Packet::new_checked(packet)?;
            let r = Ipv4Repr::parse(&p)?;
            if r.protocol != PROTOCOL_TCP {
                return Err(crate::wire::Error::Unsupported("not TCP"));
            }
            let hl = p.header_len();
            Ok((
                r.src_addr.into(),
                r.dst_addr.into(),
                &packet[hl..hl + r.payload_len],
            ))
        }
        Some(6) => {
            let p = Ipv6Packet::new_checked(packet)?;
            let r = Ipv6Repr::parse(&p)?;
            let (proto, tcp) = p.upper_layer()?;
            if proto != PROTOCOL_TCP {
                return Err(crate::wire::Error::Unsupported("not TCP"));
            }
            // The TCP bytes end where the IPv6 payload does; re-slice the packet there.
            let end = ipv6::HEADER_LEN + r.payload_len;
            let at = end - tcp.len();
            Ok((r.src_addr.into(), r.dst_addr.into(), &packet[at..end]))
        }
        _ => Err(crate::wire::Error::Malformed("not an IP packet")),
    }
}

fn ip_header_len(ip: IpAddr) -> usize {
    if ip.is_ipv4() {
        ipv4::HEADER_LEN
    } else {
        ipv6::HEADER_LEN
    }
}

fn emit_reply(r: &Reply, buf: &mut [u8]) -> usize {
    let mut repr = TcpRepr {
        src_port: r.local.port(),
        dst_port: r.remote.port(),
        flags: TcpFlags(r.flags),
        seq_number: r.seq,
        ack_number: r.ack,
        window_len: r.window,
        max_seg_size: r.mss,
        window_scale: r.window_scale,
        sack_permitted: r.sack,
        timestamps: r.timestamps,
        ..TcpRepr::default()
    };
    for o in &r.options {
        if repr.options_len() + o.buffer_len() <= crate::wire::tcp::MAX_OPTIONS_LEN {
            let _ = repr.mptcp.try_push(o.clone());
        }
    }
    repr.emit_with(buf, r.local.ip(), r.remote.ip(), 0, |_| {})
}

/// Adds options to the segments of the connections of an endpoint (the MPTCP layer).
pub trait EndpointHook {
    /// The options for segment `seg` of connection `conn`.
    fn outgoing_options(
        &mut self,
        conn: ConnHandle,
        seg: &OutgoingSegment,
    ) -> ArrayVec<MptcpOption<'_>, 4>;

    /// Segment `seg` of `conn` left with the options whose bit is set in `included`
    /// ([`SegmentHook::sent`]).
    fn sent(&mut self, conn: ConnHandle, seg: &OutgoingSegment, included: u8) {
        let _ = (conn, seg, included);
    }

    /// How many of `len` payload bytes from `stream_offset` one segment of `conn` may carry
    /// ([`SegmentHook::segment_limit`]).
    fn segment_limit(&mut self, conn: ConnHandle, stream_offset: u64, len: usize) -> usize {
        let _ = (conn, stream_offset);
        len
    }

    /// Option bytes the hook's options take on the data segment of `conn` from
    /// `stream_offset` ([`SegmentHook::data_option_len`]): all that is reserved by default.
    fn data_option_len(
        &mut self,
        conn: ConnHandle,
        stream_offset: u64,
        retransmission: bool,
    ) -> usize {
        let _ = (conn, stream_offset, retransmission);
        usize::MAX
    }

    /// What becomes of `syn`, a SYN from `remote` to `local` that belongs to no connection:
    /// the one place where the MPTCP layer decides between a new MPTCP connection, a join of a
    /// known one (accepted on any local address of that connection, not only a listener's), a
    /// reset, or plain TCP (RFC 8684 §3.1, §3.2). Plain TCP by default.
    fn on_syn(&mut self, local: SocketAddr, remote: SocketAddr, syn: &TcpRepr<'_>) -> SynDecision {
        let _ = (local, remote, syn);
        SynDecision::Listener
    }

    /// The options of a segment the endpoint makes without a connection: a reset (an
    /// `MP_TCPRST`), or a SYN cookie's SYN-ACK (an `MP_CAPABLE`, so that MPTCP does not fall
    /// back under a SYN flood); `to` is the segment it answers.
    fn reply_options(
        &mut self,
        kind: ReplyKind,
        local: SocketAddr,
        remote: SocketAddr,
        to: &TcpRepr<'_>,
    ) -> ArrayVec<MptcpOption<'static>, 2> {
        let _ = (kind, local, remote, to);
        ArrayVec::new()
    }
}

/// What the endpoint does with a SYN that opens a connection ([`EndpointHook::on_syn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynDecision {
    /// As plain TCP does: the listener of the address takes it (or a SYN cookie answers it
    /// under load), and without one it is reset.
    Listener,
    /// A new connection, whether or not the address has a listener, which no listener sees:
    /// the caller gets its handle from [`Endpoint::handle_segment_with`] (an MPTCP join).
    Accept,
    /// A reset, with the hook's [`EndpointHook::reply_options`].
    Reset,
    /// Nothing.
    Drop,
}

/// Which segment the endpoint makes without a connection ([`EndpointHook::reply_options`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// A reset.
    Reset,
    /// The SYN-ACK of a SYN cookie.
    CookieSynAck,
}

/// Plain TCP: no options added.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoOptions;

impl EndpointHook for NoOptions {
    fn outgoing_options(
        &mut self,
        _conn: ConnHandle,
        _seg: &OutgoingSegment,
    ) -> ArrayVec<MptcpOption<'_>, 4> {
        ArrayVec::new()
    }
}

/// An [`EndpointHook`] seen by one connection.
struct ForConnection<'a> {
    hook: &'a mut dyn EndpointHook,
    conn: ConnHandle,
}

impl SegmentHook for ForConnection<'_> {
    fn outgoing_options(&mut self, seg: &OutgoingSegment) -> ArrayVec<MptcpOption<'_>, 4> {
        self.hook.outgoing_options(self.conn, seg)
    }

    fn sent(&mut self, seg: &OutgoingSegment, included: u8) {
        self.hook.sent(self.conn, seg, included);
    }

    fn segment_limit(&mut self, stream_offset: u64, len: usize) -> usize {
        self.hook.segment_limit(self.conn, stream_offset, len)
    }

    fn data_option_len(&mut self, stream_offset: u64, retransmission: bool) -> usize {
        self.hook
            .data_option_len(self.conn, stream_offset, retransmission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mptcp::MpPrio;

    fn pair(mtu: usize) -> (Endpoint, Endpoint, Instant) {
        let now = Instant::now();
        let cfg = |seed| {
            let mut c = EndpointConfig::default();
            c.tcp.mtu = mtu;
            c.seed = seed;
            c
        };
        (Endpoint::new(cfg(1), now), Endpoint::new(cfg(2), now), now)
    }

    fn server() -> SocketAddr {
        "10.0.0.2:80".parse().unwrap()
    }

    /// Moves every packet between the two endpoints until both are quiet; returns them.
    fn pump(a: &mut Endpoint, b: &mut Endpoint, now: Instant) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let mut moved = false;
            while let Some(t) = a.poll_transmit(now, &mut buf) {
                seen.push(buf[..t.len].to_vec());
                b.handle_packet(now, &buf[..t.len]).unwrap();
                moved = true;
            }
            while let Some(t) = b.poll_transmit(now, &mut buf) {
                seen.push(buf[..t.len].to_vec());
                a.handle_packet(now, &buf[..t.len]).unwrap();
                moved = true;
            }
            if !moved {
                return seen;
            }
        }
    }

    /// Puts an `MP_PRIO` on every segment of the connection.
    struct Prio;

    impl EndpointHook for Prio {
        fn outgoing_options(
            &mut self,
            _conn: ConnHandle,
            _seg: &OutgoingSegment,
        ) -> ArrayVec<MptcpOption<'_>, 4> {
            let mut v = ArrayVec::new();
            v.push(MptcpOption::MpPrio(MpPrio {
                backup: true,
                address_id: None,
            }));
            v
        }
    }

    #[test]
    fn a_hook_adds_options_within_the_space_the_connection_reserved() {
        let (mut a, mut b, now) = pair(1500);
        b.listen(server()).unwrap();
        let c = a
            .connect(now, "10.0.0.1:0".parse().unwrap(), server())
            .unwrap();
        pump(&mut a, &mut b, now);
        let mss_before = a.conn(c).unwrap().stats().send_mss;
        a.conn_mut(c).unwrap().set_option_space(4);
        assert_eq!(a.conn(c).unwrap().stats().send_mss, mss_before - 4);
        a.conn_mut(c).unwrap().set_nagle(false);
        a.conn_mut(c).unwrap().write(&[1u8; 5000]).unwrap();
        let mut buf = vec![0u8; 2048];
        let mut data_segments = 0;
        while let Some(t) = a.poll_transmit_with(now, &mut buf, &mut Prio) {
            assert!(t.len <= 1500, "the option fits in the MTU: {}", t.len);
            let (src, dst, tcp) = parse_packet(&buf[..t.len]).unwrap();
            let seg =
                TcpRepr::parse(&TcpPacket::new_checked(tcp).unwrap(), src, dst, true).unwrap();
            assert!(
                seg.mptcp
                    .iter()
                    .any(|o| matches!(o, MptcpOption::MpPrio(p) if p.backup)),
                "the hook's option is on the wire"
            );
            data_segments += usize::from(!seg.payload.is_empty());
            b.handle_packet(now, &buf[..t.len]).unwrap();
        }
        assert!(data_segments >= 4);
    }

    /// Puts a full DSS (`DATA_ACK` and a mapping with a checksum: 28 bytes) on every segment
    /// and counts what was sent.
    #[derive(Default)]
    struct FullDss {
        offered: usize,
        included: usize,
    }

    impl EndpointHook for FullDss {
        fn outgoing_options(
            &mut self,
            _conn: ConnHandle,
            seg: &OutgoingSegment,
        ) -> ArrayVec<MptcpOption<'_>, 4> {
            use crate::wire::mptcp::{DataSeqField, Dss, DssMapping};
            let mut v = ArrayVec::new();
            if !seg.flags.contains(TcpFlags::SYN) {
                v.push(MptcpOption::Dss(Dss {
                    data_fin: false,
                    data_ack: Some(DataSeqField::Long(7)),
                    mapping: Some(DssMapping {
                        dsn: DataSeqField::Long(9),
                        ssn: 1,
                        data_len: 1,
                        checksum: Some(0),
                    }),
                }));
            }
            v
        }

        fn sent(&mut self, _conn: ConnHandle, seg: &OutgoingSegment, included: u8) {
            if !seg.flags.contains(TcpFlags::SYN) {
                self.offered += 1;
                self.included += usize::from(included & 1);
            }
        }
    }

    /// The option space reserved for MPTCP wins over SACK blocks (with timestamps, a 28-byte
    /// DSS leaves no room for one): a receiver holding out-of-order data still puts the DSS on
    /// every ACK, and its hook learns that it went out.
    #[test]
    fn the_hooks_reserved_space_wins_over_sack_blocks() {
        let (mut a, mut b, now) = pair(1500);
        b.listen(server()).unwrap();
        let c = a
            .connect(now, "10.0.0.1:0".parse().unwrap(), server())
            .unwrap();
        pump(&mut a, &mut b, now);
        let s = b.accept(server()).unwrap();
        b.conn_mut(s).unwrap().set_option_space(28);
        a.conn_mut(c).unwrap().set_nagle(false);
        a.conn_mut(c).unwrap().write(&[5u8; 6000]).unwrap();
        let mut buf = vec![0u8; 2048];
        let mut sent = 0;
        // Every other data segment is lost: the receiver holds out-of-order data.
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            sent += 1;
            if sent % 2 == 1 {
                b.handle_packet(now, &buf[..t.len]).unwrap();
            }
        }
        assert!(sent >= 4);
        let mut dss = FullDss::default();
        let mut acks = 0;
        while let Some(t) = b.poll_transmit_with(now, &mut buf, &mut dss) {
            let (src, dst, tcp) = parse_packet(&buf[..t.len]).unwrap();
            let seg =
                TcpRepr::parse(&TcpPacket::new_checked(tcp).unwrap(), src, dst, true).unwrap();
            assert!(seg.timestamps.is_some());
            assert!(
                seg.mptcp.iter().any(|o| matches!(o, MptcpOption::Dss(_))),
                "the DSS is on every ACK"
            );
            assert!(seg.options_len() <= 40);
            acks += 1;
        }
        assert!(acks > 0, "the receiver acknowledged");
        assert_eq!(
            (dss.offered, dss.included),
            (acks, acks),
            "the hook was told"
        );
        assert!(
            b.conn(s).unwrap().readable() > 0 || b.conn(s).unwrap().stats().bytes_received > 0,
            "data arrived"
        );
    }

    /// The MPTCP layer can make a quiet connection send an acknowledgment (to carry a signal)
    /// and give it a congestion controller of its choosing.
    #[test]
    fn an_ack_can_be_asked_for_and_the_congestion_controller_given() {
        use crate::tcp::congestion::{Algorithm, NewReno};
        let (mut a, mut b, now) = pair(1500);
        b.listen(server()).unwrap();
        let c = a
            .connect(now, "10.0.0.1:0".parse().unwrap(), server())
            .unwrap();
        assert_eq!(a.config().tcp.congestion, Algorithm::Cubic);
        a.conn_mut(c)
            .unwrap()
            .set_controller(Box::new(NewReno::new(1)));
        pump(&mut a, &mut b, now);
        let conn = a.conn(c).unwrap();
        assert_eq!(conn.congestion_algorithm(), "newreno");
        assert_eq!(
            conn.cwnd(),
            a.config().tcp.initial_window * conn.stats().send_mss,
            "restarted with the initial window once the MSS is known"
        );
        let mut buf = vec![0u8; 2048];
        assert!(a.poll_transmit(now, &mut buf).is_none(), "quiet");
        a.conn_mut(c).unwrap().request_ack();
        let t = a.poll_transmit(now, &mut buf).expect("an ACK");
        let (src, dst, tcp) = parse_packet(&buf[..t.len]).unwrap();
        let seg = TcpRepr::parse(&TcpPacket::new_checked(tcp).unwrap(), src, dst, true).unwrap();
        assert!(seg.ack_number.is_some() && seg.payload.is_empty());
        drop(seg);
        assert!(a.poll_transmit(now, &mut buf).is_none(), "one");
    }

    /// Decides every SYN the same way, and answers resets and cookies with options.
    struct Decides(SynDecision);

    impl EndpointHook for Decides {
        fn outgoing_options(
            &mut self,
            _conn: ConnHandle,
            _seg: &OutgoingSegment,
        ) -> ArrayVec<MptcpOption<'_>, 4> {
            ArrayVec::new()
        }

        fn on_syn(
            &mut self,
            _local: SocketAddr,
            _remote: SocketAddr,
            _syn: &TcpRepr<'_>,
        ) -> SynDecision {
            self.0
        }

        fn reply_options(
            &mut self,
            kind: ReplyKind,
            _local: SocketAddr,
            _remote: SocketAddr,
            _to: &TcpRepr<'_>,
        ) -> ArrayVec<MptcpOption<'static>, 2> {
            use crate::wire::mptcp::{MpCapable, MpCapableFlags, MpCapableKeys, MpTcpRst};
            let mut v = ArrayVec::new();
            v.push(match kind {
                ReplyKind::Reset => MptcpOption::MpTcpRst(MpTcpRst {
                    flags: 0,
                    reason: 0,
                }),
                ReplyKind::CookieSynAck => MptcpOption::MpCapable(MpCapable {
                    version: 1,
                    flags: MpCapableFlags(MpCapableFlags::HMAC_SHA),
                    keys: MpCapableKeys::Sender { sender_key: 7 },
                }),
            });
            v
        }
    }

    /// Every packet `a` sends, handed to `b` with `hook`; `b`'s answers handed back. Returns
    /// what `b` sent.
    fn exchange(
        a: &mut Endpoint,
        b: &mut Endpoint,
        now: Instant,
        hook: &mut dyn EndpointHook,
    ) -> (Vec<Option<ConnHandle>>, Vec<Vec<u8>>) {
        let mut took = Vec::new();
        let mut back = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let mut moved = false;
            while let Some(t) = a.poll_transmit(now, &mut buf) {
                took.push(b.handle_packet_with(now, &buf[..t.len], hook).unwrap());
                moved = true;
            }
            while let Some(t) = b.poll_transmit(now, &mut buf) {
                back.push(buf[..t.len].to_vec());
                a.handle_packet(now, &buf[..t.len]).unwrap();
                moved = true;
            }
            if !moved {
                return (took, back);
            }
        }
    }

    fn parsed(packet: &[u8]) -> TcpRepr<'_> {
        let (src, dst, tcp) = parse_packet(packet).unwrap();
        TcpRepr::parse(&TcpPacket::new_checked(tcp).unwrap(), src, dst, true).unwrap()
    }

    /// The MPTCP layer takes a SYN for an address nobody listens on (a join): the connection
    /// is made, handed to it, and never queued for `accept`.
    #[test]
    fn a_syn_the_hook_accepts_opens_a_connection_no_listener_sees() {
        let (mut a, mut b, now) = pair(1500);
        let c = a
            .connect(now, "10.0.0.1:0".parse().unwrap(), server())
            .unwrap();
        let (took, _) = exchange(&mut a, &mut b, now, &mut Decides(SynDecision::Accept));
        let h = took[0].expect("the SYN's connection is handed over");
        assert_eq!(b.conn(h).unwrap().state(), State::Established);
        assert_eq!(a.conn(c).unwrap().state(), State::Established);
        assert!(b.accept(server()).is_none());
        assert!(
            !std::iter::from_fn(|| b.poll_event()).any(|e| matches!(e, EndpointEvent::Incoming(_))),
            "no listener was told"
        );
        assert_eq!(b.hook_half_open, 0);
    }

    /// A SYN the hook refuses gets a reset with the hook's `MP_TCPRST`; one it drops, nothing.
    #[test]
    fn a_syn_the_hook_refuses_is_reset_with_its_options_or_dropped() {
        let (mut a, mut b, now) = pair(1500);
        b.listen(server()).unwrap();
        let c = a
            .connect(now, "10.0.0.1:0".parse().unwrap(), server())
            .unwrap();
        let (_, back) = exchange(&mut a, &mut b, now, &mut Decides(SynDecision::Reset));
        assert_eq!(back.len(), 1);
        let rst = parsed(&back[0]);
        assert!(rst.flags.contains(TcpFlags::RST));
        assert!(
            rst.mptcp
                .iter()
                .any(|o| matches!(o, MptcpOption::MpTcpRst(_))),
            "{rst:?}"
        );
        assert_eq!(a.conn(c).unwrap().state(), State::Closed);
        let d = a
            .connect(now, "10.0.0.1:0".parse().unwrap(), server())
            .unwrap();
        let (_, back) = exchange(&mut a, &mut b, now, &mut Decides(SynDecision::Drop));
        assert!(back.is_empty());
        assert_eq!(a.conn(d).unwrap().state(), State::SynSent);
    }

    /// Under SYN load the listener answers with cookies; their SYN-ACK carries the hook's
    /// option (an `MP_CAPABLE`), so MPTCP need not fall back under a flood.
    #[test]
    fn a_syn_cookies_syn_ack_carries_the_hooks_options() {
        let (mut a, mut b, now) = pair(1500);
        b.listen(server()).unwrap();
        for _ in 0..=b.config().syn_backlog {
            a.connect(now, "10.0.0.1:0".parse().unwrap(), server())
                .unwrap();
        }
        let mut buf = vec![0u8; 2048];
        let mut hook = Decides(SynDecision::Listener);
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            b.handle_packet_with(now, &buf[..t.len], &mut hook).unwrap();
        }
        assert!(b.stats().syn_cookies_sent >= 1);
        let mut cookie_options = 0;
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            let seg = parsed(&buf[..t.len]);
            if seg
                .mptcp
                .iter()
                .any(|o| matches!(o, MptcpOption::MpCapable(_)))
            {
                cookie_options += 1;
            }
        }
        assert_eq!(cookie_options, b.stats().syn_cookies_sent);
    }

    fn seg_of(p: &[u8]) -> TcpRepr<'_> {
        let (src, dst, tcp) = parse_packet(p).unwrap();
        TcpRepr::parse(&TcpPacket::new_checked(tcp).unwrap(), src, dst, true).unwrap()
    }

    /// One packet from `from` to `to`; returns it.
    fn one(from: &mut Endpoint, to: &mut Endpoint, now: Instant) -> Vec<u8> {
        let mut buf = vec![0u8; 65_536];
        let t = from.poll_transmit(now, &mut buf).expect("a packet to send");
        to.handle_packet(now, &buf[..t.len]).unwrap();
        buf[..t.len].to_vec()
    }

    fn fast_open_pair() -> (Endpoint, Endpoint, Instant) {
        let (a, mut b, now) = pair(1500);
        b.cfg.fast_open = true;
        b.listen(server()).unwrap();
        (a, b, now)
    }

    fn read_all(ep: &mut Endpoint, h: ConnHandle) -> Vec<u8> {
        let mut out = vec![0u8; 4096];
        let n = ep.conn_mut(h).unwrap().read(&mut out).unwrap_or(0);
        out.truncate(n);
        out
    }

    #[test]
    fn fast_open_a_cookie_asked_then_data_in_the_syn_taken_before_the_handshake_ends() {
        let (mut a, mut b, now) = fast_open_pair();
        let client = "10.0.0.1:0".parse().unwrap();
        // First connection: the SYN asks for a cookie, the SYN-ACK brings it (without
        // timestamps, to leave room for MPTCP's option).
        let c1 = a.connect_fast_open(now, client, server()).unwrap();
        a.conn_mut(c1).unwrap().write(b"early").unwrap();
        let syn = one(&mut a, &mut b, now);
        assert_eq!(seg_of(&syn).fast_open, Some(&[][..]), "a cookie request");
        assert!(seg_of(&syn).payload.is_empty(), "no data without a cookie");
        let syn_ack = one(&mut b, &mut a, now);
        assert_eq!(seg_of(&syn_ack).fast_open.map(<[u8]>::len), Some(8));
        assert!(seg_of(&syn_ack).timestamps.is_none());
        pump(&mut a, &mut b, now);
        let b1 = b.accept(server()).unwrap();
        assert_eq!(read_all(&mut b, b1), b"early");
        pump(&mut a, &mut b, now);
        assert_eq!(a.conn(c1).unwrap().syn_data(), 0);
        assert_eq!(a.fast_open_cookies().len(), 1);
        assert_eq!(b.stats().fast_open_cookies_sent, 1);

        // Second: the SYN carries cookie and data; the server hands the connection over
        // before the handshake's last ACK.
        let c2 = a.connect_fast_open(now, client, server()).unwrap();
        a.conn_mut(c2)
            .unwrap()
            .write(b"GET / HTTP/1.0\r\n\r\n")
            .unwrap();
        let syn = one(&mut a, &mut b, now);
        assert_eq!(seg_of(&syn).payload, b"GET / HTTP/1.0\r\n\r\n");
        let b2 = b.accept(server()).expect("ready at the SYN");
        assert_eq!(b.conn(b2).unwrap().state(), State::SynReceived);
        assert_eq!(read_all(&mut b, b2), b"GET / HTTP/1.0\r\n\r\n");
        let syn_ack = one(&mut b, &mut a, now);
        assert!(seg_of(&syn_ack).fast_open.is_none());
        assert_eq!(
            a.conn(c2).unwrap().syn_data(),
            18,
            "the SYN-ACK acknowledged the data"
        );
        assert_eq!(a.conn(c2).unwrap().send_buffered(), 0);
        // The server's answer and more data go both ways as usual.
        b.conn_mut(b2).unwrap().write(b"200 OK").unwrap();
        a.conn_mut(c2).unwrap().write(b"more").unwrap();
        pump(&mut a, &mut b, now);
        assert_eq!(read_all(&mut a, c2), b"200 OK");
        assert_eq!(read_all(&mut b, b2), b"more");
        assert_eq!(b.stats().fast_open_accepted, 1);
        assert_eq!(
            a.stats().fast_open_data_taken,
            1,
            "the client counts it too"
        );
        assert_eq!(a.stats().fast_open_data_refused, 0);
    }

    #[test]
    fn fast_open_a_wrong_cookie_costs_the_round_trip_only_and_is_replaced() {
        let (mut a, mut b, now) = fast_open_pair();
        let client = "10.0.0.1:0".parse().unwrap();
        a.cookies.insert(
            Pair {
                client: "10.0.0.1".parse().unwrap(),
                server: server().ip(),
            },
            fast_open::CachedCookie {
                cookie: [1u8, 2, 3, 4, 5, 6, 7, 8].into_iter().collect(),
                mss: 1460,
            },
        );
        let c = a.connect_fast_open(now, client, server()).unwrap();
        a.conn_mut(c).unwrap().write(b"hello").unwrap();
        let syn = one(&mut a, &mut b, now);
        assert_eq!(seg_of(&syn).payload, b"hello");
        assert!(b.accept(server()).is_none(), "not taken");
        pump(&mut a, &mut b, now);
        assert_eq!(a.conn(c).unwrap().syn_data(), 0);
        let bc = b.accept(server()).unwrap();
        assert_eq!(
            read_all(&mut b, bc),
            b"hello",
            "sent again after the handshake"
        );
        assert_eq!(b.stats().fast_open_refused, 1);
        assert_eq!(a.stats().fast_open_data_refused, 1);
        assert_eq!(a.stats().fast_open_data_taken, 0);
        let good = fast_open::make_cookie(&b.cfg.secret, "10.0.0.1".parse().unwrap());
        assert_eq!(
            a.fast_open_cookies()
                .get(Pair {
                    client: "10.0.0.1".parse().unwrap(),
                    server: server().ip()
                })
                .unwrap()
                .cookie,
            good
        );
    }

    /// RFC 7413 §4.1.3: a cookie is good for the client address it was given to. A client
    /// with two addresses (a line each) keeps one per address: a connection from the second
    /// asks for its own rather than presenting the first's, which the server would refuse
    /// (losing the SYN's data and the round trip), and the first address's cookie stays.
    #[test]
    fn fast_open_a_multihomed_client_keeps_a_cookie_per_address() {
        let (mut a, mut b, now) = fast_open_pair();
        let (one_addr, other_addr): (SocketAddr, SocketAddr) =
            ("10.0.0.1:0".parse().unwrap(), "10.0.1.1:0".parse().unwrap());
        let open = |a: &mut Endpoint, b: &mut Endpoint, from: SocketAddr, data: &[u8]| {
            let c = a.connect_fast_open(now, from, server()).unwrap();
            a.conn_mut(c).unwrap().write(data).unwrap();
            let syn = one(a, b, now);
            let asked = seg_of(&syn).fast_open == Some(&[][..]);
            let carried = seg_of(&syn).payload.len();
            pump(a, b, now);
            let bc = b.accept(server()).unwrap();
            assert_eq!(read_all(b, bc), data, "every byte arrives");
            (asked, carried, a.conn(c).unwrap().syn_data())
        };
        assert_eq!(open(&mut a, &mut b, one_addr, b"first"), (true, 0, 0));
        assert_eq!(
            open(&mut a, &mut b, other_addr, b"second"),
            (true, 0, 0),
            "the other address asks for its own cookie"
        );
        assert_eq!(a.fast_open_cookies().len(), 2);
        assert_eq!(open(&mut a, &mut b, one_addr, b"third"), (false, 5, 5));
        assert_eq!(open(&mut a, &mut b, other_addr, b"fourth"), (false, 6, 6));
        assert_eq!(b.stats().fast_open_refused, 0, "no wrong cookie presented");
        assert_eq!(b.stats().fast_open_accepted, 2);
        assert_eq!(a.stats().fast_open_data_taken, 2);
    }

    #[test]
    fn fast_open_a_lost_syn_with_data_holds_the_server_back_for_a_while() {
        let (mut a, mut b, now) = fast_open_pair();
        let client = "10.0.0.1:0".parse().unwrap();
        a.cookies.insert(
            Pair {
                client: "10.0.0.1".parse().unwrap(),
                server: server().ip(),
            },
            fast_open::CachedCookie {
                cookie: fast_open::make_cookie(&b.cfg.secret, "10.0.0.1".parse().unwrap()),
                mss: 1460,
            },
        );
        let c = a.connect_fast_open(now, client, server()).unwrap();
        a.conn_mut(c).unwrap().write(b"lost").unwrap();
        let mut buf = vec![0u8; 2048];
        let t = a.poll_transmit(now, &mut buf).unwrap();
        assert_eq!(seg_of(&buf[..t.len]).payload, b"lost", "dropped on the way");
        // The SYN times out: the retry goes without data, and the server is held back.
        let later = now + Duration::from_millis(1100);
        a.handle_timeout(later);
        let t = a.poll_transmit(later, &mut buf).unwrap();
        let retry = seg_of(&buf[..t.len]);
        assert!(retry.payload.is_empty() && retry.fast_open.is_none());
        assert_eq!(a.stats().fast_open_syns_lost, 1);
        b.handle_packet(later, &buf[..t.len]).unwrap();
        pump(&mut a, &mut b, later);
        let bc = b.accept(server()).unwrap();
        assert_eq!(
            read_all(&mut b, bc),
            b"lost",
            "sent again after the handshake"
        );
        // The next connection opens without Fast Open...
        let c2 = a.connect_fast_open(later, client, server()).unwrap();
        a.conn_mut(c2).unwrap().write(b"plain").unwrap();
        let syn = one(&mut a, &mut b, later);
        assert!(seg_of(&syn).fast_open.is_none() && seg_of(&syn).payload.is_empty());
        pump(&mut a, &mut b, later);
        // ... until the hold is over.
        let after = later + fast_open::HOLD_BACK_FIRST;
        let c3 = a.connect_fast_open(after, client, server()).unwrap();
        a.conn_mut(c3).unwrap().write(b"again").unwrap();
        let syn = one(&mut a, &mut b, after);
        assert_eq!(seg_of(&syn).payload, b"again");
    }

    #[test]
    fn fast_open_off_a_listener_ignores_cookies_and_data_waits() {
        let (mut a, mut b, now) = pair(1500);
        b.listen(server()).unwrap();
        a.cookies.insert(
            Pair {
                client: "10.0.0.1".parse().unwrap(),
                server: server().ip(),
            },
            fast_open::CachedCookie {
                cookie: [1u8; 8].into_iter().collect(),
                mss: 1460,
            },
        );
        let c = a
            .connect_fast_open(now, "10.0.0.1:0".parse().unwrap(), server())
            .unwrap();
        a.conn_mut(c).unwrap().write(b"data").unwrap();
        pump(&mut a, &mut b, now);
        let bc = b.accept(server()).unwrap();
        assert_eq!(read_all(&mut b, bc), b"data");
        assert_eq!(a.conn(c).unwrap().syn_data(), 0);
        assert!(
            a.fast_open_cookies().is_empty(),
            "refused without a cookie: forgotten"
        );
        assert_eq!(a.stats().fast_open_data_refused, 1);
    }

    #[test]
    fn a_connection_aborted_and_released_at_once_still_sends_its_reset() {
        let (mut a, mut b, now) = pair(1500);
        b.listen(server()).unwrap();
        let c = a
            .connect(now, "10.0.0.1:0".parse().unwrap(), server())
            .unwrap();
        pump(&mut a, &mut b, now);
        let cb = b.accept(server()).unwrap();
        b.conn_mut(cb).unwrap().abort();
        b.release(now, cb);
        let seen = pump(&mut a, &mut b, now);
        assert!(
            seen.iter().any(|p| {
                let (src, dst, tcp) = parse_packet(p).unwrap();
                let seg =
                    TcpRepr::parse(&TcpPacket::new_checked(tcp).unwrap(), src, dst, true).unwrap();
                seg.flags.contains(TcpFlags::RST)
            }),
            "the RST went out"
        );
        assert_eq!(
            a.conn(c).unwrap().close_reason(),
            Some(crate::tcp::CloseReason::Reset)
        );
        assert_eq!(b.connection_count(), 0, "and then it was forgotten");
    }

    #[test]
    fn ephemeral_ports_differ_for_the_same_destination_and_listeners_keep_theirs() {
        let (mut a, _, now) = pair(1500);
        a.listen("10.0.0.1:33000".parse().unwrap()).unwrap();
        let mut cfg = a.cfg.clone();
        cfg.ephemeral_ports = (33000, 33003);
        a.cfg = cfg;
        let mut ports = Vec::new();
        for _ in 0..3 {
            let c = a
                .connect(now, "10.0.0.1:0".parse().unwrap(), server())
                .unwrap();
            ports.push(a.conn(c).unwrap().local().port());
        }
        ports.sort_unstable();
        assert_eq!(
            ports,
            vec![33001, 33002, 33003],
            "the listener's port is skipped"
        );
        assert_eq!(
            a.connect(now, "10.0.0.1:0".parse().unwrap(), server()),
            Err(ConnectError::NoPorts)
        );
        assert_eq!(
            a.connect(
                now,
                "10.0.0.1:0".parse().unwrap(),
                "[::1]:80".parse().unwrap()
            ),
            Err(ConnectError::InvalidAddress)
        );
    }

    #[test]
    fn a_segment_for_nothing_gets_a_reset_and_malformed_packets_are_counted() {
        let (mut a, mut b, now) = pair(1500);
        // No listener on b: the SYN is answered with RST|ACK, and a's connection is refused.
        let c = a
            .connect(now, "10.0.0.1:0".parse().unwrap(), server())
            .unwrap();
        let seen = pump(&mut a, &mut b, now);
        assert_eq!(seen.len(), 2);
        assert_eq!(b.stats().resets_sent, 1);
        assert_eq!(
            a.conn(c).unwrap().close_reason(),
            Some(crate::tcp::CloseReason::Refused)
        );
        assert!(b.handle_packet(now, &[0x45, 0, 0]).is_err());
        assert_eq!(b.stats().malformed, 1);
    }
}
