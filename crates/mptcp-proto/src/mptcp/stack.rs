//! The MPTCP stack: an endpoint whose TCP connections are subflows of MPTCP connections.
//!
//! ```text
//! stack.handle_packet(now, bytes)       // an IP packet arrived
//! stack.poll_transmit(now, &mut buf)    // an IP packet to send, until None
//! stack.poll_timeout() / handle_timeout(now)
//! stack.connect(now, &paths, remote) / listen(addr) / accept(addr)
//! stack.write(id, ..) / read(id, ..) / close(id) / abort(id) / release(now, id)
//! stack.poll_event()
//! ```

use core::net::{IpAddr, SocketAddr};
use std::collections::VecDeque;
use std::time::Instant;

use arrayvec::ArrayVec;
use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::deadline::CachedDeadline;
use crate::keyed_map::{KeyedMap, derive, keyed_map};

use super::connection::{ConnConfig, ConnState, ConnStats, MpConn, Subflow};
use super::{ConnEvent, Role, SubflowInfo};
use crate::endpoint::{
    ConnHandle, ConnectError, Endpoint, EndpointConfig, EndpointEvent, EndpointHook, ListenError,
    PacketError, ReplyKind, SynDecision, Transmit,
};
use crate::tcp::{Event, OutgoingSegment, ReadError, WriteError};
use crate::wire::mptcp::{MpCapable, MpCapableKeys, MpJoin, MpTcpRst, MptcpOption};
use crate::wire::tcp::{TcpPacket, TcpRepr};

/// Settings of a stack.
#[derive(Debug, Clone, Default)]
pub struct StackConfig {
    /// The endpoint's (and so every subflow's TCP) settings.
    pub endpoint: EndpointConfig,
    /// Every connection's MPTCP settings.
    pub conn: ConnConfig,
    /// Plain TCP only: no `MP_CAPABLE` offered, and SYNs that offer it answered as TCP.
    pub no_mptcp: bool,
}

/// A local line a client opens subflows from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    /// Its address.
    pub local: IpAddr,
    /// A backup: it carries data only when no regular subflow works (§3.2, flag B).
    pub backup: bool,
}

/// A connection of a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

/// What happened, for the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackEvent {
    /// A connection to this listening address is ready: `accept` it.
    Incoming(SocketAddr),
    /// Something happened on a connection.
    Conn(ConnId, ConnEvent),
}

#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about one connection"
)]
struct Slot {
    generation: u32,
    conn: Option<Box<MpConn>>,
    /// `conn`'s earliest timer, forgotten whenever `conn` is handed out mutably.
    deadline: CachedDeadline,
    released: bool,
    dirty: bool,
    /// Client: the lines to open subflows from, and which are up; the peer's address.
    paths: Vec<(Path, bool)>,
    remote: SocketAddr,
    /// Client: the joins of the lines were opened.
    joined: bool,
    /// Server: our addresses were announced.
    announced: bool,
}

/// What the SYN being handled asked for (set by `on_syn`, used once the endpoint made the
/// connection).
#[derive(Debug, Clone, Copy)]
enum PendingSyn {
    MpCapable {
        checksums: bool,
    },
    Join {
        conn: ConnId,
        backup: bool,
        address_id: u8,
        nonce: u32,
    },
    Plain,
    /// Reset with this `MP_TCPRST` reason.
    Refuse(u8),
}

/// Everything but the endpoint: the endpoint's hook.
#[derive(Debug)]
struct Inner {
    cfg: StackConfig,
    now: Instant,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_subflow: KeyedMap<ConnHandle, ConnId>,
    by_token: KeyedMap<u32, ConnId>,
    listeners: Vec<(SocketAddr, VecDeque<ConnId>)>,
    pending: Option<PendingSyn>,
    rng: ChaCha20Rng,
    events: VecDeque<StackEvent>,
    dirty: Vec<ConnId>,
    /// Address IDs of our addresses (0 for none yet: the first subflow's).
    address_ids: KeyedMap<IpAddr, u8>,
    /// The address ID given last ([`Inner::address_id`]).
    last_address_id: u8,
    /// Server: addresses every connection announces.
    announce: Vec<SocketAddr>,
    /// Released connections whose subflows' resets are still to go out.
    reap_later: Vec<ConnId>,
    /// Closed subflows of connections that go on, released once their reset went out.
    release_later: Vec<ConnHandle>,
}

/// TCP and MPTCP connections over one endpoint.
#[derive(Debug)]
pub struct Stack {
    ep: Endpoint,
    inner: Inner,
}

impl Stack {
    /// A stack with `cfg` whose clock starts at `now`.
    #[must_use]
    pub fn new(cfg: StackConfig, now: Instant) -> Self {
        // MPTCP keys and join nonces come from a cryptographic generator keyed by the secret
        // and the seed: nothing the endpoint's own generator lets out (ports, timestamp
        // offsets) says anything about them (RFC 8684 §5: keys must be hard to guess).
        let secret = cfg.endpoint.secret;
        let mut purpose = b"mptcp keys and nonces ".to_vec();
        purpose.extend_from_slice(&cfg.endpoint.seed.to_be_bytes());
        let rng_key = derive(&secret, &purpose);
        Self {
            ep: Endpoint::new(cfg.endpoint.clone(), now),
            inner: Inner {
                cfg,
                now,
                slots: Vec::new(),
                free: Vec::new(),
                by_subflow: keyed_map(&secret, "stack subflows"),
                by_token: keyed_map(&secret, "stack tokens"),
                listeners: Vec::new(),
                pending: None,
                rng: ChaCha20Rng::from_seed(rng_key),
                events: VecDeque::new(),
                dirty: Vec::new(),
                address_ids: keyed_map(&secret, "stack address ids"),
                last_address_id: 0,
                announce: Vec::new(),
                reap_later: Vec::new(),
                release_later: Vec::new(),
            },
        }
    }

    /// The endpoint underneath (its subflows, its counters).
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// Connections held.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.inner.slots.iter().filter(|s| s.conn.is_some()).count()
    }

    // --- opening -------------------------------------------------------------------------

    /// Listens on `addr` for MPTCP (and plain TCP) connections.
    pub fn listen(&mut self, addr: SocketAddr) -> Result<(), ListenError> {
        self.ep.listen(addr)?;
        self.inner.listeners.push((addr, VecDeque::new()));
        Ok(())
    }

    /// Stops listening on `addr`: connections not accepted yet are reset.
    pub fn unlisten(&mut self, now: Instant, addr: SocketAddr) {
        let Some(i) = self.inner.listeners.iter().position(|(a, _)| *a == addr) else {
            return;
        };
        let (_, ready) = self.inner.listeners.remove(i);
        self.ep.unlisten(now, addr);
        for id in ready {
            self.abort(id);
            self.release(now, id);
        }
    }

    /// The next connection that arrived on listener `addr`.
    pub fn accept(&mut self, addr: SocketAddr) -> Option<ConnId> {
        self.inner
            .listeners
            .iter_mut()
            .find(|(a, _)| *a == addr)?
            .1
            .pop_front()
    }

    /// Opens a connection to `remote` from the first of `paths`; once MPTCP is up, a subflow
    /// is joined from each of the others.
    pub fn connect(
        &mut self,
        now: Instant,
        paths: &[Path],
        remote: SocketAddr,
    ) -> Result<ConnId, ConnectError> {
        self.open(now, paths, remote, false)
    }

    /// [`Stack::connect`] with TCP Fast Open (RFC 7413, RFC 8684 appendix B): `data` is
    /// written at once, and with a cookie from `remote`'s host the SYN carries the cookie
    /// and as much of it as one segment holds; without one, the SYN asks for a cookie and the
    /// data follows the handshake. The SYN's data may reach the server twice (RFC 7413 §6.1):
    /// only for applications that tolerate it. Returns the connection and how many bytes
    /// of `data` were written.
    pub fn connect_fast_open(
        &mut self,
        now: Instant,
        paths: &[Path],
        remote: SocketAddr,
        data: &[u8],
    ) -> Result<(ConnId, usize), ConnectError> {
        let id = self.open(now, paths, remote, true)?;
        let written = self.write(id, data).unwrap_or(0);
        let Self { ep, inner } = self;
        if let Some(c) = inner.slot_mut(id).and_then(|s| s.conn.as_deref_mut()) {
            // Without MPTCP the subflow has the bytes already, and its SYN takes what it can.
            if !c.is_tcp() {
                let room = c
                    .subflows
                    .first()
                    .and_then(|sf| ep.conn(sf.handle))
                    .map_or(0, crate::tcp::Connection::syn_data_room);
                c.load_syn_data(ep, room);
            }
        }
        Ok((id, written))
    }

    fn open(
        &mut self,
        now: Instant,
        paths: &[Path],
        remote: SocketAddr,
        fast_open: bool,
    ) -> Result<ConnId, ConnectError> {
        let first = paths.first().ok_or(ConnectError::InvalidAddress)?;
        self.inner.now = now;
        let local = SocketAddr::new(first.local, 0);
        let h = if fast_open {
            self.ep.connect_fast_open(now, local, remote)?
        } else {
            self.ep.connect(now, local, remote)?
        };
        let local = self
            .ep
            .conn(h)
            .map_or(remote, crate::tcp::Connection::local);
        let key = self.inner.unique_key();
        let mut conn = MpConn::new(Role::Client, self.inner.cfg.conn.clone(), key);
        conn.expect_joins = paths.len() > 1;
        let mut sf = Subflow::new(now, h, local, remote, true);
        sf.backup = first.backup;
        if self.inner.cfg.no_mptcp {
            conn.subflows.push(sf);
            conn.start_as_tcp();
        } else {
            conn.attach(sf, self.ep.conn_mut(h));
        }
        self.inner.address_ids.entry(first.local).or_insert(0);
        let id = self.inner.insert(conn, h);
        let slot = self.inner.slot_mut(id).unwrap_or_else(|| unreachable!());
        slot.paths = paths.iter().map(|p| (*p, true)).collect();
        slot.remote = remote;
        Ok(id)
    }

    // --- the application's calls ---------------------------------------------------------

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut MpConn> {
        self.inner.slot_mut(id)?.conn.as_deref_mut()
    }

    /// A connection's state.
    #[must_use]
    pub fn state(&self, id: ConnId) -> Option<ConnState> {
        self.inner.slot(id)?.conn.as_ref().map(|c| c.state)
    }

    /// Why a connection fell back to TCP after its handshake began (RFC 8684 §3.7).
    #[must_use]
    pub fn fallback_cause(&self, id: ConnId) -> Option<crate::mptcp::FallbackCause> {
        self.inner.slot(id)?.conn.as_ref()?.fallback_cause()
    }

    /// The addresses of a connection's first subflow (ours, the peer's).
    #[must_use]
    pub fn addrs(&self, id: ConnId) -> Option<(SocketAddr, SocketAddr)> {
        let sf = self.inner.slot(id)?.conn.as_ref()?.subflows.first()?;
        Some((sf.local, sf.remote))
    }

    /// The TCP figures of a connection's first subflow.
    #[must_use]
    pub fn first_subflow_stats(&self, id: ConnId) -> Option<crate::tcp::Stats> {
        let sf = self.inner.slot(id)?.conn.as_ref()?.subflows.first()?;
        self.ep.conn(sf.handle).map(crate::tcp::Connection::stats)
    }

    /// Whether the peer acknowledged everything written and the end of the data (the
    /// `DATA_FIN`, or the FIN without MPTCP).
    #[must_use]
    pub fn all_acked(&self, id: ConnId) -> bool {
        self.inner
            .slot(id)
            .and_then(|s| s.conn.as_deref())
            .is_some_and(|c| c.all_acked(&self.ep))
    }

    /// Lets a connection we accepted answer before its handshake's last ACK brings the
    /// client's key ([`super::ConnConfig::early_answer`]), for a client known to take such an
    /// answer (mpbond's gateway on this engine says so in its Convert message; Linux 6.18
    /// falls back to TCP on it). Nothing changes once the handshake ended.
    pub fn answer_early(&mut self, id: ConnId) {
        if let Some(c) = self.inner.slot_mut(id).and_then(|s| s.conn.as_deref_mut()) {
            c.cfg.early_answer = true;
        }
        self.inner.mark_dirty(id);
    }

    /// Nagle's algorithm off (`TCP_NODELAY`) on every subflow, present and future.
    pub fn set_nodelay(&mut self, id: ConnId, nodelay: bool) {
        let Self { ep, inner } = self;
        if let Some(c) = inner.slot_mut(id).and_then(|s| s.conn.as_deref_mut()) {
            c.nodelay = nodelay;
            for sf in &c.subflows {
                if let Some(tc) = ep.conn_mut(sf.handle) {
                    tc.set_nagle(!nodelay);
                }
            }
        }
    }

    /// A connection's data-level counters.
    #[must_use]
    pub fn stats(&self, id: ConnId) -> Option<ConnStats> {
        self.inner.slot(id)?.conn.as_ref().map(|c| c.stats)
    }

    /// A connection's subflows.
    #[must_use]
    pub fn subflows(&self, id: ConnId) -> Vec<SubflowInfo> {
        self.inner
            .slot(id)
            .and_then(|s| s.conn.as_ref())
            .map(|c| c.subflow_info(&self.ep))
            .unwrap_or_default()
    }

    /// Every connection (for `status`).
    #[must_use]
    pub fn connection_ids(&self) -> Vec<ConnId> {
        self.inner.ids().collect()
    }

    /// Our token and the peer's (`None` before the keys are known, or without MPTCP).
    #[must_use]
    pub fn tokens(&self, id: ConnId) -> Option<(u32, u32)> {
        let c = self.inner.slot(id)?.conn.as_ref()?;
        (c.remote_key.is_some() && !c.is_tcp()).then_some((c.local_token, c.remote_token))
    }

    /// Queues bytes; returns how many were taken.
    pub fn write(&mut self, id: ConnId, data: &[u8]) -> Result<usize, WriteError> {
        let Self { ep, inner } = self;
        let slot = inner.slot_mut(id).ok_or(WriteError::Finished)?;
        let c = slot.conn.as_deref_mut().ok_or(WriteError::Finished)?;
        let r = c.write(ep, data);
        inner.mark_dirty(id);
        r
    }

    /// Bytes readable now.
    #[must_use]
    pub fn readable(&self, id: ConnId) -> usize {
        self.inner
            .slot(id)
            .and_then(|s| s.conn.as_ref())
            .map_or(0, |c| c.readable(&self.ep))
    }

    /// Reads received bytes.
    pub fn read(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, ReadError> {
        let Self { ep, inner } = self;
        let c = inner
            .slot_mut(id)
            .and_then(|s| s.conn.as_deref_mut())
            .ok_or(ReadError::Finished)?;
        let r = c.read(ep, buf);
        inner.collect(id);
        r
    }

    /// No more data from us (a `DATA_FIN`, or a FIN without MPTCP).
    pub fn close(&mut self, id: ConnId) {
        let Self { ep, inner } = self;
        if let Some(c) = inner.slot_mut(id).and_then(|s| s.conn.as_deref_mut()) {
            c.close(ep);
        }
        inner.mark_dirty(id);
    }

    /// Ends the connection at once (`MP_FASTCLOSE`, or a RST without MPTCP).
    pub fn abort(&mut self, id: ConnId) {
        let Self { ep, inner } = self;
        if let Some(c) = inner.slot_mut(id).and_then(|s| s.conn.as_deref_mut()) {
            c.abort(ep);
        }
        inner.collect(id);
    }

    /// The application is done with a connection: it is closed if it was not, and forgotten
    /// once it has ended.
    pub fn release(&mut self, now: Instant, id: ConnId) {
        self.close(id);
        if let Some(s) = self.inner.slot_mut(id) {
            s.released = true;
        }
        self.reap(now, id);
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<StackEvent> {
        self.inner.events.pop_front()
    }

    /// A line of ours went down (`up == false`: its subflows are reset and their data goes to
    /// the others) or came back (subflows are joined again from it).
    pub fn set_path_up(&mut self, now: Instant, local: IpAddr, up: bool) {
        self.inner.now = now;
        let ids: Vec<ConnId> = self.inner.ids().collect();
        let mut renumber = false;
        for id in ids {
            let Self { ep, inner } = self;
            let Some(slot) = inner.slot_mut(id) else {
                continue;
            };
            let mut changed = false;
            for p in &mut slot.paths {
                if p.0.local == local && p.1 != up {
                    p.1 = up;
                    changed = true;
                }
            }
            if !changed {
                continue;
            }
            if let Some(c) = slot.conn.as_deref_mut() {
                c.tick(now);
                c.forget_rejoins(local);
                if !up {
                    let mut ids: Vec<u8> = Vec::new();
                    for i in 0..c.subflows.len() {
                        if c.subflows[i].local.ip() == local
                            && c.subflows[i].state != super::connection::SubflowState::Closed
                        {
                            if !ids.contains(&c.subflows[i].local_id) {
                                ids.push(c.subflows[i].local_id);
                            }
                            c.reset_subflow(ep, i, 0);
                        }
                    }
                    c.forget_rejoins(local);
                    renumber = true;
                    // The reset went out of the dead line: the peer would go on sending on
                    // the subflow until its own timeouts. A REMOVE_ADDR on a line that works
                    // makes it close the subflow at once (§3.4.2); Linux removes the subflows
                    // of ID 0 (the first subflow's) as any other.
                    c.withdraw_own(ep, &ids);
                }
            }
            if up {
                self.open_join(now, id, local, None);
            }
            self.inner.collect(id);
            self.inner.mark_dirty(id);
        }
        if renumber {
            // Its next joins take a new address ID: the withdrawal of the old one may still
            // be on its way (or waiting for a join to carry it), and must not close them.
            self.inner.renumber(local);
        }
    }

    // --- packets and time ----------------------------------------------------------------

    /// Handles an IP packet; returns the connection it was for.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        packet: &[u8],
    ) -> Result<Option<ConnId>, PacketError> {
        self.inner.now = now;
        let (src, dst, tcp) = match crate::endpoint::parse_ip(packet) {
            Ok(x) => x,
            Err(e) => {
                self.ep.count_malformed();
                return Err(PacketError::Malformed(e));
            }
        };
        let seg = TcpPacket::new_checked(tcp)
            .and_then(|p| TcpRepr::parse(&p, src, dst, true))
            .map_err(|e| {
                self.ep.count_malformed();
                PacketError::Malformed(e)
            })?;
        self.ep.count_packet_in();
        self.inner.pending = None;
        // Where the payload lands in its subflow, if the subflow will take it.
        let local = SocketAddr::new(dst, seg.dst_port);
        let remote = SocketAddr::new(src, seg.src_port);
        let known = self.ep.lookup(local, remote);
        let subflow = known.and_then(|h| self.ep.conn(h));
        let payload_at = subflow.and_then(|c| {
            c.acceptable_payload(
                seg.seq_number,
                seg.flags.contains(crate::wire::tcp::TcpFlags::SYN),
                seg.payload.len(),
            )
        });
        // The options of a segment the subflow does not accept are not acted on.
        let options_ok = subflow.is_none_or(|c| c.options_acceptable(&seg));
        let h = self
            .ep
            .handle_segment_of(now, src, dst, &seg, &mut self.inner, known);
        let pending = self.inner.pending.take();
        if let Some(h) = h {
            self.after_segment(now, h, &seg, pending, payload_at, options_ok);
        }
        self.pump(now);
        Ok(h.and_then(|h| self.inner.by_subflow.get(&h).copied()))
    }

    fn after_segment(
        &mut self,
        now: Instant,
        h: ConnHandle,
        seg: &TcpRepr<'_>,
        pending: Option<PendingSyn>,
        payload_at: Option<u64>,
        options_ok: bool,
    ) {
        if let Some(&id) = self.inner.by_subflow.get(&h) {
            let Self { ep, inner } = self;
            if let Some(c) = inner.slot_mut(id).and_then(|s| s.conn.as_deref_mut()) {
                if let Some(i) = c.subflow_of(h).filter(|_| options_ok) {
                    c.on_segment(now, ep, i, seg, payload_at);
                }
            }
            inner.collect(id);
            inner.mark_dirty(id);
            return;
        }
        let Some(conn) = self.ep.conn(h) else { return };
        let (local, remote, syn_data) = (conn.local(), conn.remote(), conn.syn_data());
        match pending {
            Some(PendingSyn::MpCapable { checksums }) => {
                let key = self.inner.unique_key();
                let mut c = MpConn::new(Role::Server, self.inner.cfg.conn.clone(), key);
                c.checksums |= checksums;
                c.attach(
                    Subflow::new(now, h, local, remote, true),
                    self.ep.conn_mut(h),
                );
                // TCP Fast Open: the SYN's data, taken, is read first.
                c.take_syn_data(syn_data);
                self.inner.address_ids.entry(local.ip()).or_insert(0);
                self.inner.insert(c, h);
            }
            Some(PendingSyn::Join {
                conn,
                backup,
                address_id,
                nonce,
            }) => {
                let local_id = self.inner.address_id(local.ip());
                let local_nonce = self.inner.rng.next_u32();
                let Self { ep, inner } = self;
                let Some(c) = inner.slot_mut(conn).and_then(|s| s.conn.as_deref_mut()) else {
                    if let Some(tc) = ep.conn_mut(h) {
                        tc.abort();
                    }
                    return;
                };
                let mut sf = Subflow::new(now, h, local, remote, false);
                sf.peer_backup = backup;
                sf.remote_id = address_id;
                sf.remote_nonce = nonce;
                sf.local_nonce = local_nonce;
                sf.local_id = local_id;
                c.attach(sf, ep.conn_mut(h));
                inner.by_subflow.insert(h, conn);
            }
            Some(PendingSyn::Plain) | None => {
                // Plain TCP, or the ACK of a SYN cookie: with both keys in its MP_CAPABLE,
                // an MPTCP connection whose key we gave in the cookie's SYN/ACK.
                let keys = seg.mptcp.iter().find_map(|o| match o {
                    MptcpOption::MpCapable(m) if m.is_usable() => {
                        m.receiver_key().zip(m.sender_key())
                    }
                    _ => None,
                });
                let mut c;
                if let (Some((ours, theirs)), false, None) =
                    (keys, self.inner.cfg.no_mptcp, pending)
                {
                    c = MpConn::new(Role::Server, self.inner.cfg.conn.clone(), ours);
                    c.set_remote_key(theirs);
                    c.attach(
                        Subflow::new(now, h, local, remote, true),
                        self.ep.conn_mut(h),
                    );
                    let id = self.inner.insert(c, h);
                    let Self { ep, inner } = self;
                    if let Some(c) = inner.slot_mut(id).and_then(|s| s.conn.as_deref_mut()) {
                        c.on_segment(now, ep, 0, seg, payload_at);
                    }
                    inner.collect(id);
                    return;
                }
                let key = self.inner.unique_key();
                c = MpConn::new(Role::Server, self.inner.cfg.conn.clone(), key);
                c.start_as_tcp();
                c.subflows.push(Subflow::new(now, h, local, remote, true));
                self.inner.insert(c, h);
            }
            Some(PendingSyn::Refuse(_)) => {}
        }
    }

    /// Writes the next IP packet to send into `buf` (at least the MTU long).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.inner.now = now;
        self.run_schedules(now);
        let t = self.ep.poll_transmit_with(now, buf, &mut self.inner);
        if t.is_none() {
            for id in std::mem::take(&mut self.inner.reap_later) {
                self.reap(now, id);
            }
            for h in std::mem::take(&mut self.inner.release_later) {
                release_subflow(&mut self.ep, &mut self.inner, now, h);
            }
            self.pump(now);
            if !self.inner.dirty.is_empty() {
                self.run_schedules(now);
                return self.ep.poll_transmit_with(now, buf, &mut self.inner);
            }
        }
        t
    }

    fn run_schedules(&mut self, now: Instant) {
        let dirty = std::mem::take(&mut self.inner.dirty);
        for id in dirty {
            let Some(slot) = self.inner.slot_mut(id) else {
                continue;
            };
            slot.dirty = false;
            // Every subflow gone: joins again from each line that is up, to the peer's first
            // address and those it announced (break-before-make), with a backoff.
            let rejoin = slot.conn.as_deref_mut().is_some_and(|c| c.rejoin_due(now));
            if rejoin {
                let lines: Vec<IpAddr> = slot
                    .paths
                    .iter()
                    .filter(|p| p.1)
                    .map(|p| p.0.local)
                    .collect();
                let remotes: Vec<(u8, SocketAddr)> = slot
                    .conn
                    .as_deref()
                    .map(|c| c.remote_addrs.iter().map(|r| (r.0, r.1)).collect())
                    .unwrap_or_default();
                for l in lines {
                    self.open_join(now, id, l, None);
                    for &r in &remotes {
                        self.open_join(now, id, l, Some(r));
                    }
                }
            }
            // A subflow that ended while the others went on is made again from its line, if
            // the line is up (a line down is joined again when it comes back).
            let due: Vec<(IpAddr, Option<(u8, SocketAddr)>)> = self
                .inner
                .slot_mut(id)
                .and_then(|slot| {
                    let remote = slot.remote;
                    let paths = &slot.paths;
                    let c = slot
                        .conn
                        .as_deref_mut()
                        .filter(|c| c.role == Role::Client)?;
                    Some(
                        c.rejoins_due(now)
                            .into_iter()
                            .filter(|(local, _)| paths.iter().any(|p| p.0.local == *local && p.1))
                            .map(|(local, (rid, addr))| {
                                (local, (rid != 0 || addr != remote).then_some((rid, addr)))
                            })
                            .collect(),
                    )
                })
                .unwrap_or_default();
            for (local, to) in due {
                self.open_join(now, id, local, to);
            }
            let Some(slot) = self.inner.slot_mut(id) else {
                continue;
            };
            if let Some(c) = slot.conn.as_deref_mut() {
                // Joins wait until the server has our key (a DSS came back, §3.1): a join
                // that overtook the third ACK would be refused. They are opened before the
                // data is scheduled, so that a DATA_FIN waits for them.
                let established = c.state == ConnState::Established && c.fully_established;
                let client = c.role == Role::Client;
                if established && client && !slot.joined {
                    slot.joined = true;
                    let lines: Vec<IpAddr> = slot
                        .paths
                        .iter()
                        .skip(1)
                        .filter(|p| p.1)
                        .map(|p| p.0.local)
                        .collect();
                    for l in lines {
                        self.open_join(now, id, l, None);
                    }
                }
                self.path_manager(now, id);
            }
            let Self { ep, inner } = self;
            if let Some(c) = inner.slot_mut(id).and_then(|s| s.conn.as_deref_mut()) {
                c.signal_next(ep);
                c.schedule(now, ep);
            }
            self.inner.collect(id);
            self.reap(now, id);
        }
    }

    /// Client: a subflow from `local` to the peer's address (unless its C flag forbids it).
    /// Client: a subflow from `local` to the peer's initial address (`to: None`, unless its C
    /// flag forbids it) or to an address it announced (`to: Some((id, addr))`).
    fn open_join(
        &mut self,
        now: Instant,
        id: ConnId,
        local: IpAddr,
        to: Option<(u8, SocketAddr)>,
    ) -> bool {
        let Some(slot) = self.inner.slot(id) else {
            return false;
        };
        let (remote_id, remote) = to.unwrap_or((0, slot.remote));
        let Some(path) = slot.paths.iter().find(|p| p.0.local == local).map(|p| p.0) else {
            return false;
        };
        let Some(c) = slot.conn.as_deref() else {
            return false;
        };
        let open = c
            .subflows
            .iter()
            .filter(|s| s.state != super::connection::SubflowState::Closed)
            .count();
        if c.role != Role::Client
            || c.state != ConnState::Established
            || (to.is_none() && (c.peer_no_join_to_source || c.peer_removed_first))
            || open >= c.cfg.max_subflows
            || remote.is_ipv4() != local.is_ipv4()
            || c.subflows.iter().any(|s| {
                s.local.ip() == local
                    && s.remote == remote
                    && s.state != super::connection::SubflowState::Closed
            })
        {
            return false;
        }
        let local_id = self.inner.address_id(local);
        let nonce = self.inner.rng.next_u32();
        let Ok(h) = self.ep.connect(now, SocketAddr::new(local, 0), remote) else {
            return false;
        };
        let local_addr = self
            .ep
            .conn(h)
            .map_or(remote, crate::tcp::Connection::local);
        let mut sf = Subflow::new(now, h, local_addr, remote, false);
        sf.local_nonce = nonce;
        sf.local_id = local_id;
        if let Some(c) = self.inner.slot_mut(id).and_then(|s| s.conn.as_deref_mut()) {
            // A withdrawal of this ID still queued would close the new subflow.
            c.cancel_withdrawal(local_id);
        }
        sf.remote_id = remote_id;
        sf.backup = path.backup;
        let Self { ep, inner } = self;
        if let Some(c) = inner.slot_mut(id).and_then(|s| s.conn.as_deref_mut()) {
            c.attach(sf, ep.conn_mut(h));
        }
        self.inner.by_subflow.insert(h, id);
        true
    }

    /// The rest of the path manager, once a connection is established: a client joins the
    /// addresses the server announced (from its first line); a server announces its
    /// addresses.
    fn path_manager(&mut self, now: Instant, id: ConnId) {
        let Some(slot) = self.inner.slot(id) else {
            return;
        };
        let Some(c) = slot.conn.as_deref() else {
            return;
        };
        if c.state != ConnState::Established {
            return;
        }
        match c.role {
            Role::Client if c.fully_established => {
                let first = slot.paths.iter().find(|p| p.1).map(|p| p.0.local);
                let todo: Vec<(u8, SocketAddr)> = c
                    .remote_addrs
                    .iter()
                    .filter(|r| !r.2)
                    .map(|r| (r.0, r.1))
                    .collect();
                for (rid, addr) in todo {
                    let joined =
                        first.is_some_and(|l| self.open_join(now, id, l, Some((rid, addr))));
                    if let Some(c) = self.conn_mut(id) {
                        if let Some(r) = c.remote_addrs.iter_mut().find(|r| r.0 == rid) {
                            // Tried once; a line coming back tries again.
                            r.2 = true;
                        }
                    }
                    let _ = joined;
                }
            }
            Role::Server if !slot.announced => {
                let local = c.subflows.first().map(|s| s.local);
                let wanted: Vec<SocketAddr> = self
                    .inner
                    .announce
                    .iter()
                    .filter(|a| Some(a.ip()) != local.map(|l| l.ip()))
                    // Port 0: the connection's port, which the option then leaves out
                    // (§3.4.1: a port only when it differs).
                    .map(|a| {
                        let same = local.is_some_and(|l| l.port() == a.port());
                        SocketAddr::new(a.ip(), if same { 0 } else { a.port() })
                    })
                    .collect();
                let addrs: Vec<(u8, SocketAddr)> = wanted
                    .into_iter()
                    .map(|a| (self.inner.address_id(a.ip()), a))
                    .collect();
                let Self { ep, inner } = self;
                if let Some(slot) = inner.slot_mut(id) {
                    slot.announced = true;
                    if let Some(c) = slot.conn.as_deref_mut() {
                        for (aid, addr) in addrs {
                            c.announce(ep, aid, addr);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Server: announces `addr` (`ADD_ADDR`, §3.4.1) on every connection, present and
    /// future (port 0: the connection's port).
    pub fn announce(&mut self, now: Instant, addr: SocketAddr) {
        self.inner.now = now;
        if !self.inner.announce.contains(&addr) {
            self.inner.announce.push(addr);
        }
        let ids: Vec<ConnId> = self.inner.ids().collect();
        for id in ids {
            if let Some(s) = self.inner.slot_mut(id) {
                s.announced = false;
            }
            self.path_manager(now, id);
        }
    }

    /// Server: no longer announces `addr`; connections get a `REMOVE_ADDR` (§3.4.2) and
    /// their subflows on it are reset.
    pub fn withdraw(&mut self, now: Instant, addr: IpAddr) {
        self.inner.now = now;
        self.inner.announce.retain(|a| a.ip() != addr);
        let Some(&aid) = self.inner.address_ids.get(&addr) else {
            return;
        };
        let ids: Vec<ConnId> = self.inner.ids().collect();
        for id in ids {
            let Self { ep, inner } = self;
            if let Some(c) = inner.slot_mut(id).and_then(|s| s.conn.as_deref_mut()) {
                if c.role == Role::Server {
                    c.remove_address(ep, aid, addr);
                }
            }
            inner.collect(id);
        }
    }

    /// Makes the subflows from our address `local` backups or regular ones, and tells the
    /// peer (`MP_PRIO`, §3.3.8).
    pub fn set_backup(&mut self, now: Instant, local: IpAddr, backup: bool) {
        self.inner.now = now;
        let ids: Vec<ConnId> = self.inner.ids().collect();
        for id in ids {
            let Self { ep, inner } = self;
            let Some(slot) = inner.slot_mut(id) else {
                continue;
            };
            for p in &mut slot.paths {
                if p.0.local == local {
                    p.0.backup = backup;
                }
            }
            if let Some(c) = slot.conn.as_deref_mut() {
                for j in 0..c.subflows.len() {
                    let sf = &mut c.subflows[j];
                    if sf.local.ip() == local
                        && sf.backup != backup
                        && sf.state != super::connection::SubflowState::Closed
                    {
                        sf.backup = backup;
                        c.signal(ep, super::connection::Signal::Prio { sf: j, backup });
                    }
                }
            }
            inner.mark_dirty(id);
        }
    }

    /// Hands the endpoint's events to the connections.
    fn pump(&mut self, now: Instant) {
        while let Some(ev) = self.ep.poll_event() {
            match ev {
                EndpointEvent::Incoming(l) => {
                    while let Some(h) = self.ep.accept(l) {
                        let Some(&id) = self.inner.by_subflow.get(&h) else {
                            continue;
                        };
                        if let Some((_, q)) = self.inner.listeners.iter_mut().find(|(a, _)| *a == l)
                        {
                            q.push_back(id);
                            self.inner.events.push_back(StackEvent::Incoming(l));
                        }
                    }
                }
                EndpointEvent::Connection(sub, event) => {
                    let Some(&id) = self.inner.by_subflow.get(&sub) else {
                        continue;
                    };
                    let Self { ep, inner } = self;
                    let Some(conn) = inner.slot_mut(id).and_then(|s| s.conn.as_deref_mut()) else {
                        continue;
                    };
                    let Some(i) = conn.subflow_of(sub) else {
                        continue;
                    };
                    conn.tick(now);
                    let fallback = conn.is_tcp() && i == 0;
                    match event {
                        Event::Connected if fallback && conn.role == Role::Client => {
                            conn.events.push_back(ConnEvent::Connected);
                        }
                        Event::Readable if fallback => conn.events.push_back(ConnEvent::Readable),
                        Event::Readable => conn.drain(ep),
                        Event::Writable if fallback => conn.events.push_back(ConnEvent::Writable),
                        Event::Closed(r) if fallback => {
                            conn.events.push_back(ConnEvent::Readable);
                            conn.on_subflow_closed(ep, i, r);
                        }
                        Event::Closed(r) => {
                            conn.on_subflow_closed(ep, i, r);
                            if !matches!(conn.state, ConnState::Closed(_)) {
                                // The connection goes on without this subflow.
                                release_subflow(ep, inner, now, sub);
                            }
                        }
                        _ => {}
                    }
                    inner.collect(id);
                    inner.mark_dirty(id);
                    self.reap(now, id);
                }
            }
        }
    }

    /// Forgets a released connection that ended.
    fn reap(&mut self, now: Instant, id: ConnId) {
        let Some(slot) = self.inner.slot(id) else {
            return;
        };
        let Some(c) = slot.conn.as_deref() else {
            return;
        };
        if !slot.released || !matches!(c.state, ConnState::Closed(_)) {
            return;
        }
        let handles: Vec<ConnHandle> = c.subflows.iter().map(|s| s.handle).collect();
        // A subflow's RST still to go takes its options from this connection (MP_FASTCLOSE,
        // MP_TCPRST): the connection stays until it went out.
        if handles.iter().any(|h| reset_pending(&self.ep, *h)) {
            if !self.inner.reap_later.contains(&id) {
                self.inner.reap_later.push(id);
            }
            return;
        }
        let token = c.local_token;
        for h in handles {
            self.ep.release(now, h);
            self.inner.by_subflow.remove(&h);
        }
        if self.inner.by_token.get(&token) == Some(&id) {
            self.inner.by_token.remove(&token);
        }
        if let Some(s) = self.inner.slot_mut(id) {
            s.conn = None;
            self.inner.free.push(id.index);
        }
    }

    /// The earliest time `handle_timeout` is wanted.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conns = self.inner.slots.iter().filter_map(|s| {
            let c = s.conn.as_deref()?;
            s.deadline.get(|| c.poll_timeout())
        });
        conns.chain(self.ep.poll_timeout()).min()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.inner.now = now;
        self.ep.handle_timeout(now);
        let Self { ep, inner } = self;
        // A subflow whose timer ran (a retransmission timeout): its connection looks at it
        // (a stalled subflow's data goes to the others).
        for h in ep.drain_fired() {
            if let Some(&id) = inner.by_subflow.get(&h) {
                inner.mark_dirty(id);
            }
        }
        for index in 0..inner.slots.len() {
            let slot = &mut inner.slots[index];
            let Some(c) = slot.conn.as_deref_mut() else {
                continue;
            };
            if slot
                .deadline
                .get(|| c.poll_timeout())
                .is_none_or(|t| t > now)
            {
                continue;
            }
            slot.deadline.forget();
            c.handle_timeout(now, ep);
            let id = ConnId {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                generation: slot.generation,
            };
            // What the timers did (a connection that waited in vain for a subflow ends).
            inner.collect(id);
            inner.mark_dirty(id);
        }
        self.pump(now);
    }
}

/// Connection `id`'s slot among `slots`, if it holds that connection.
/// Its connection's deadline is asked again next time: the caller may change it.
fn slot_in(slots: &mut [Slot], id: ConnId) -> Option<&mut Slot> {
    let s = slots
        .get_mut(id.index as usize)
        .filter(|s| s.generation == id.generation && s.conn.is_some())?;
    s.deadline.forget();
    Some(s)
}

/// Whether subflow `h` still has a RST to send (which takes its MPTCP options from its
/// connection, so the connection must still know it).
fn reset_pending(ep: &Endpoint, h: ConnHandle) -> bool {
    ep.conn(h)
        .is_some_and(crate::tcp::Connection::reset_pending)
}

/// Releases subflow `h` of a connection that goes on, freeing its 4-tuple (a join may come
/// on it); while its RST is still to go out, later ([`Stack::poll_transmit`]).
fn release_subflow(ep: &mut Endpoint, inner: &mut Inner, now: Instant, h: ConnHandle) {
    if reset_pending(ep, h) {
        inner.release_later.push(h);
    } else {
        ep.release(now, h);
        inner.by_subflow.remove(&h);
    }
}

impl Inner {
    fn slot(&self, id: ConnId) -> Option<&Slot> {
        self.slots
            .get(id.index as usize)
            .filter(|s| s.generation == id.generation && s.conn.is_some())
    }

    fn slot_mut(&mut self, id: ConnId) -> Option<&mut Slot> {
        slot_in(&mut self.slots, id)
    }

    fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.conn.as_ref().map(|_| ConnId {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                generation: s.generation,
            })
        })
    }

    fn insert(&mut self, conn: MpConn, h: ConnHandle) -> ConnId {
        let token = conn.local_token;
        let conn = Some(Box::new(conn));
        let id = if let Some(i) = self.free.pop() {
            let s = &mut self.slots[i as usize];
            s.generation = s.generation.wrapping_add(1);
            s.conn = conn;
            s.deadline.forget();
            s.released = false;
            s.dirty = false;
            s.paths.clear();
            s.joined = false;
            s.announced = false;
            ConnId {
                index: i,
                generation: s.generation,
            }
        } else {
            self.slots.push(Slot {
                generation: 0,
                conn,
                deadline: CachedDeadline::default(),
                released: false,
                dirty: false,
                paths: Vec::new(),
                remote: SocketAddr::from(([0, 0, 0, 0], 0)),
                joined: false,
                announced: false,
            });
            ConnId {
                index: u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX),
                generation: 0,
            }
        };
        self.by_subflow.insert(h, id);
        self.by_token.insert(token, id);
        id
    }

    /// A random key whose token no connection of ours has (§3.1).
    fn unique_key(&mut self) -> u64 {
        loop {
            let k = self.rng.next_u64();
            if !self.by_token.contains_key(&crate::crypto::token(k)) {
                return k;
            }
        }
    }

    /// Our address ID of `ip` (§3.4.1), given at first use: the IDs go round 1..=255, skipping
    /// those in use, so that an ID withdrawn from the peer comes back as late as possible.
    fn address_id(&mut self, ip: IpAddr) -> u8 {
        if let Some(&id) = self.address_ids.get(&ip) {
            return id;
        }
        let mut id = self.last_address_id;
        for _ in 0..255 {
            id = if id == 255 { 1 } else { id + 1 };
            if !self.address_ids.values().any(|&x| x == id) {
                break;
            }
        }
        self.last_address_id = id;
        self.address_ids.insert(ip, id);
        id
    }

    /// Gives `ip` a new address ID for what comes next (its old one was withdrawn).
    fn renumber(&mut self, ip: IpAddr) {
        if self.address_ids.remove(&ip).is_some() {
            self.address_id(ip);
        }
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(s) = self.slot_mut(id) {
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// Moves a connection's events to the stack's.
    fn collect(&mut self, id: ConnId) {
        // The slots alone are borrowed, so the stack's events can take the connection's.
        let Some(c) = slot_in(&mut self.slots, id).and_then(|s| s.conn.as_deref_mut()) else {
            return;
        };
        self.events
            .extend(c.events.drain(..).map(|e| StackEvent::Conn(id, e)));
    }

    fn conn_of(&mut self, h: ConnHandle) -> Option<(&mut MpConn, usize)> {
        let id = *self.by_subflow.get(&h)?;
        let c = self.slot_mut(id)?.conn.as_deref_mut()?;
        let i = c.subflow_of(h)?;
        Some((c, i))
    }

    fn listening(&self, local: SocketAddr) -> bool {
        self.listeners.iter().any(|(a, _)| {
            a.port() == local.port() && (a.ip() == local.ip() || a.ip().is_unspecified())
        })
    }
}

impl EndpointHook for Inner {
    fn outgoing_options(
        &mut self,
        conn: ConnHandle,
        seg: &OutgoingSegment,
    ) -> ArrayVec<MptcpOption<'_>, 4> {
        self.conn_of(conn)
            .map(|(c, i)| c.outgoing_options(i, seg))
            .unwrap_or_default()
    }

    fn sent(&mut self, conn: ConnHandle, seg: &OutgoingSegment, included: u8) {
        let now = self.now;
        if let Some((c, i)) = self.conn_of(conn) {
            c.on_sent(now, i, seg, included);
            if c.signals_left {
                if let Some(&id) = self.by_subflow.get(&conn) {
                    self.mark_dirty(id);
                }
            }
        }
    }

    fn segment_limit(&mut self, conn: ConnHandle, stream_offset: u64, len: usize) -> usize {
        self.conn_of(conn)
            .map_or(len, |(c, i)| c.segment_limit(i, stream_offset, len))
    }

    fn data_option_len(
        &mut self,
        conn: ConnHandle,
        stream_offset: u64,
        retransmission: bool,
    ) -> usize {
        self.conn_of(conn).map_or(usize::MAX, |(c, i)| {
            c.data_option_len(i, stream_offset, retransmission)
        })
    }

    fn on_syn(&mut self, local: SocketAddr, _remote: SocketAddr, syn: &TcpRepr<'_>) -> SynDecision {
        for o in &syn.mptcp {
            match o {
                MptcpOption::MpCapable(m)
                    if m.is_usable() && !self.cfg.no_mptcp && self.listening(local) =>
                {
                    self.pending = Some(PendingSyn::MpCapable {
                        checksums: m.flags.checksum_required(),
                    });
                    return SynDecision::Listener;
                }
                MptcpOption::MpJoin(MpJoin::Syn {
                    backup,
                    address_id,
                    token,
                    nonce,
                }) if !self.cfg.no_mptcp => {
                    let ok = self.by_token.get(token).copied().filter(|id| {
                        self.slot(*id)
                            .and_then(|s| s.conn.as_deref())
                            .is_some_and(|c| {
                                let open = c
                                    .subflows
                                    .iter()
                                    .filter(|s| s.state != super::connection::SubflowState::Closed)
                                    .count();
                                c.state == ConnState::Established
                                    && c.remote_key.is_some()
                                    && open < c.cfg.max_subflows
                            })
                    });
                    return if let Some(conn) = ok {
                        self.pending = Some(PendingSyn::Join {
                            conn,
                            backup: *backup,
                            address_id: *address_id,
                            nonce: *nonce,
                        });
                        SynDecision::Accept
                    } else {
                        // §3.2: an unknown token, or no room for another subflow.
                        self.pending =
                            Some(PendingSyn::Refuse(if self.by_token.contains_key(token) {
                                2
                            } else {
                                1
                            }));
                        SynDecision::Reset
                    };
                }
                _ => {}
            }
        }
        self.pending = Some(PendingSyn::Plain);
        SynDecision::Listener
    }

    fn reply_options(
        &mut self,
        kind: ReplyKind,
        _local: SocketAddr,
        _remote: SocketAddr,
        to: &TcpRepr<'_>,
    ) -> ArrayVec<MptcpOption<'static>, 2> {
        let mut out = ArrayVec::new();
        match (kind, self.pending) {
            (ReplyKind::Reset, Some(PendingSyn::Refuse(reason))) => {
                out.push(MptcpOption::MpTcpRst(MpTcpRst { flags: 0, reason }));
            }
            (ReplyKind::CookieSynAck, Some(PendingSyn::MpCapable { checksums })) => {
                // The key comes back in the third ACK (v1 echoes both keys): nothing is kept.
                let _ = to;
                let key = self.unique_key();
                let mut flags = crate::wire::mptcp::MpCapableFlags::HMAC_SHA;
                if checksums || self.cfg.conn.checksums {
                    flags |= crate::wire::mptcp::MpCapableFlags::CHECKSUM_REQUIRED;
                }
                out.push(MptcpOption::MpCapable(MpCapable {
                    version: 1,
                    flags: crate::wire::mptcp::MpCapableFlags(flags),
                    keys: MpCapableKeys::Sender { sender_key: key },
                }));
            }
            _ => {}
        }
        out
    }
}
