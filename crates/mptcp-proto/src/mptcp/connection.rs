//! One MPTCP connection (RFC 8684): the data-level sequence space over its subflows.
//!
//! The connection owns the data-level send and receive buffers. Its scheduler hands each
//! subflow bytes only as far as the subflow's congestion window has room, each run of bytes
//! written with one DSS mapping, so nothing waits long in a subflow that may die; what a dead
//! or stalled subflow had in flight is sent again on another (§3.3.6). Received bytes are read
//! out of each subflow in order and put at their data offset by the peer's mappings, so
//! duplicates across subflows fall away in the data-level reassembly.

use core::net::SocketAddr;
use core::time::Duration;
use std::collections::VecDeque;
use std::time::Instant;

use arrayvec::ArrayVec;

use super::congestion::{Congestion, Coupling};
use super::mapping::{
    MAX_MAPPING, MappingError, RecvMapping, RecvMappings, SendMapping, SendMappings, expand32,
};
use super::scheduler::{Candidate, Context, Scheduler, SchedulerKind};
use super::{ConnEvent, Role};
use crate::crypto;
use crate::endpoint::{ConnHandle, Endpoint};
use crate::tcp::recv_buffer::RecvBuffer;
use crate::tcp::send_buffer::SendBuffer;
use crate::tcp::{CloseReason, OutgoingSegment, ReadError, State, WriteError};
use crate::wire::mptcp::{
    AddAddr, AddAddrForm, DataSeqField, Dss, DssMapping, MpCapable, MpCapableFlags, MpCapableKeys,
    MpFail, MpFastclose, MpJoin, MpPrio, MpTcpRst, MptcpOption, RemoveAddr,
};
use crate::wire::tcp::{TcpFlags, TcpRepr};

/// Option bytes every subflow reserves: a DSS with 64-bit `DATA_ACK`, 64-bit mapping and a
/// checksum (28), which also covers `MP_CAPABLE` with data (24) and the `MP_JOIN` ACK (24).
pub(crate) const OPTION_SPACE: usize = 28;

/// Segments a hand-out to a subflow whose segments go bare waits for ([`room_of`]): a mapping
/// of that many sends all but its first segment bare.
const BARE_RUN: u64 = 3;

/// How often at most a stalled subflow probes its line while other subflows carry its data.
const STALLED_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// A signal for the peer that rides on a pure ACK: an address announced or its echo, an
/// address removed (§3.4), a subflow's priority (§3.3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// `ADD_ADDR` of one of our addresses (kept until the peer echoes it).
    Announce { id: u8, addr: SocketAddr },
    /// The echo of the peer's `ADD_ADDR`.
    Echo { id: u8, addr: SocketAddr },
    /// `REMOVE_ADDR` of one of our address IDs.
    Remove { id: u8 },
    /// `MP_PRIO` on subflow `sf`.
    Prio { sf: usize, backup: bool },
}

/// An address we announced and the peer has not echoed yet.
#[derive(Debug, Clone, Copy)]
struct Announced {
    id: u8,
    addr: SocketAddr,
    rtx_at: Instant,
    tries: u32,
}

/// Every address ID, for `REMOVE_ADDR` options that borrow their list.
static ADDRESS_IDS: [u8; 256] = {
    let mut ids = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        #[expect(clippy::cast_possible_truncation, reason = "i < 256")]
        {
            ids[i] = i as u8;
        }
        i += 1;
    }
    ids
};

/// Announcements sent again before giving up.
const ANNOUNCE_TRIES: u32 = 5;

/// Longest a join in its handshake holds back our `DATA_FIN`.
const JOIN_HOLDS_DATA_FIN: Duration = Duration::from_secs(2);

/// How a subflow stands in MPTCP's eyes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubflowState {
    /// The TCP or MPTCP handshake is under way.
    Handshake,
    /// An `MP_JOIN` initiator whose third ACK is not acknowledged yet (§3.2: no data until
    /// the fourth ACK).
    JoinAckPending,
    /// Carries data.
    Active,
    /// Ended (closed, reset or timed out).
    Closed,
}

/// One subflow of a connection.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about one subflow"
)]
pub(crate) struct Subflow {
    /// When it was opened.
    pub started: Instant,
    pub handle: ConnHandle,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: SubflowState,
    /// The first subflow (the one of `MP_CAPABLE`).
    pub initial: bool,
    /// Our address ID and the peer's for this subflow.
    pub local_id: u8,
    pub remote_id: u8,
    /// We asked for it to be a backup; the peer asked (`MP_JOIN` B bit or `MP_PRIO`).
    pub backup: bool,
    pub peer_backup: bool,
    /// `MP_JOIN` random numbers.
    pub local_nonce: u32,
    pub remote_nonce: u32,
    /// When the `MP_JOIN` third ACK is sent again if no fourth ACK came.
    pub join_rtx_at: Option<Instant>,
    /// Bytes written into the subflow (its next stream offset).
    pub written: u64,
    pub send_maps: SendMappings,
    /// Bytes read out of the subflow.
    pub read: u64,
    pub recv_maps: RecvMappings,
    /// With checksums: the bytes of the mapping being read, checked once complete.
    pub pending: Vec<u8>,
    /// The subflow's retransmission timeouts when last looked at, and whether it is stalled
    /// since (its data was reinjected; no new data goes to it until it makes progress).
    pub timeouts_seen: u64,
    pub acked_seen: u64,
    pub stale: bool,
    /// Its peer has been silent longer than the ACK clock explains (RFC 7829's "potentially
    /// failed"): while another subflow works, its data goes to that one and it gets no new
    /// data until it hears from the peer again.
    pub silent: bool,
    /// Its retransmission timeout is capped (it is stale and another subflow works).
    pub rto_capped: bool,
    /// Payload bytes handed to the subflow and read out of it (for `status`).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// An `MP_TCPRST` to put on this subflow's reset.
    pub reset_reason: Option<MpTcpRst>,
    /// The data sequence number of a mapping whose checksum failed: the reset carries it in
    /// an `MP_FAIL` (§3.7).
    pub fail_dsn: Option<u64>,
    /// Every byte written into it was the data stream's at the same offset (what a fall back
    /// to TCP needs).
    pub contiguous: bool,
    /// The peer sent a `DATA_ACK` on it: it has our key, and options get through. (A Fast
    /// Open server's pure ACKs before it has our key carry no option at all.)
    pub peer_data_ack: bool,
    /// Mappings that came before the peer's key.
    pub early_maps: Vec<(bool, DssMapping, Option<u64>)>,
    /// Its slot in the connection's coupled congestion control, if coupled.
    pub cc_slot: Option<usize>,
    /// What the last DSS on one of its data segments said besides its mapping: a data segment
    /// inside a mapping goes bare while it still holds and has arrived ([`MpConn::goes_bare`]).
    pub dss_said: Option<DssSaid>,
}

/// The `DATA_ACK` and data-level window edge a DSS said on a subflow's data segment, and whether
/// the peer has that segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DssSaid {
    /// `(DATA_ACK, window edge)`, as [`MpConn::dss_stamp`] makes it.
    pub stamp: (u64, u64),
    /// The subflow stream offset just past the segment that carried it.
    pub end: u64,
    /// The peer acknowledged that segment (and so read the DSS on it).
    pub arrived: bool,
}

impl Subflow {
    pub fn new(
        now: Instant,
        handle: ConnHandle,
        local: SocketAddr,
        remote: SocketAddr,
        initial: bool,
    ) -> Self {
        Self {
            started: now,
            handle,
            local,
            remote,
            state: SubflowState::Handshake,
            initial,
            local_id: 0,
            remote_id: 0,
            backup: false,
            peer_backup: false,
            local_nonce: 0,
            remote_nonce: 0,
            join_rtx_at: None,
            written: 0,
            send_maps: SendMappings::default(),
            read: 0,
            recv_maps: RecvMappings::default(),
            pending: Vec::new(),
            timeouts_seen: 0,
            acked_seen: 0,
            stale: false,
            silent: false,
            rto_capped: false,
            bytes_sent: 0,
            bytes_received: 0,
            reset_reason: None,
            fail_dsn: None,
            contiguous: true,
            peer_data_ack: false,
            early_maps: Vec::new(),
            cc_slot: None,
            dss_said: None,
        }
    }

    fn is_backup(&self) -> bool {
        self.backup || self.peer_backup
    }
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// The first subflow's handshake is under way.
    Connecting,
    /// MPTCP is in use.
    Established,
    /// Plain TCP on the first subflow: the peer or the path did not keep MPTCP (§3.7).
    Fallback,
    /// Ended.
    Closed(CloseReason),
}

/// Why a connection is plain TCP (RFC 8684 §3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackCause {
    /// The handshake ended without both keys: the peer has no MPTCP, or something on the path
    /// removed `MP_CAPABLE` (§3.1).
    NotOffered,
    /// A pure ACK of the peer came without any MPTCP option once the peer had sent a
    /// `DATA_ACK` (or acknowledged our first data): something on the path strips them. (Data
    /// without options is fine inside a mapping, §3.3.1; outside one it is
    /// [`FallbackCause::UnmappedData`].)
    OptionsStripped,
    /// Data came without a mapping (an implied infinite mapping).
    UnmappedData,
    /// The peer sent an infinite mapping: it fell back itself.
    InfiniteMapping,
}

impl core::fmt::Display for FallbackCause {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotOffered => {
                "the handshake ended without MPTCP: the peer has none, or something on the path removed the option"
            }
            Self::OptionsStripped => {
                "the peer's segments lost their MPTCP options on the way (a middlebox strips them)"
            }
            Self::UnmappedData => {
                "data came without its DSS mapping (a middlebox strips or rewrites the options)"
            }
            Self::InfiniteMapping => "the peer fell back itself (an infinite mapping)",
        })
    }
}

/// Settings of a connection.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Ask for DSS checksums (flag A); they are used if either side asks.
    pub checksums: bool,
    /// Data-level send buffer, bytes.
    pub send_buffer: usize,
    /// Data-level receive buffer, bytes (the connection-level window, §3.3.4).
    pub recv_buffer: usize,
    /// Most subflows of one connection (joins beyond are refused, §3.2).
    pub max_subflows: usize,
    /// Interval before an unacknowledged `DATA_FIN` or `MP_JOIN` third ACK is sent again,
    /// before any RTT is known.
    pub initial_rto: Duration,
    /// How long a connection outlives its last subflow, waiting for a new one
    /// (break-before-make: a client joins again from its lines, a server takes a join). Zero
    /// ends it with its last subflow.
    pub no_subflow_timeout: Duration,
    /// Which subflow carries the next bytes (see [`super::scheduler`]).
    pub scheduler: SchedulerKind,
    /// The subflows' congestion control, coupled or not (see [`super::congestion`]).
    pub congestion: Congestion,
    /// A server whose client's SYN carried data it took (TCP Fast Open) answers before the
    /// handshake's last ACK, as RFC 8684 appendix B shows (a DSS with a mapping and no
    /// `DATA_ACK`, the client's key being unknown yet). Off by default: Linux 6.18 clients fall
    /// back to TCP on such a segment (`MPCapableDataFallback`); this engine's clients take it.
    pub early_answer: bool,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            checksums: false,
            send_buffer: 4 << 20,
            recv_buffer: 8 << 20,
            max_subflows: 8,
            initial_rto: Duration::from_secs(1),
            no_subflow_timeout: Duration::from_secs(30),
            scheduler: SchedulerKind::MinRtt,
            congestion: Congestion::Cubic,
            early_answer: false,
        }
    }
}

/// What handing bytes to a subflow came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handed {
    /// It took this many.
    Wrote(u64),
    /// It took none (no room).
    Full,
    /// The bytes are no longer in the send buffer (acknowledged meanwhile).
    Gone,
}

/// A connection whose subflows are all gone, waiting for a new one.
#[derive(Debug, Clone, Copy)]
struct Orphan {
    /// Why the last subflow ended: the connection's end if none comes.
    reason: CloseReason,
    deadline: Instant,
    /// Client: when to open joins again, and the wait after that.
    rejoin_at: Instant,
    backoff: Duration,
}

/// Client: a subflow that ended while the connection went on, to be made again from the same
/// line to the same peer address (a middlebox's reset, a timeout), with a backoff that doubles
/// while the subflows made again do not last [`REJOIN_CALM`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rejoin {
    pub local: core::net::IpAddr,
    /// The peer's address ID and address (ID 0: its first address).
    pub remote: (u8, SocketAddr),
    /// When to open it (`None`: opened, waiting to see whether it lasts).
    pub at: Option<Instant>,
    backoff: Duration,
}

/// The first wait before a subflow that ended is made again.
const REJOIN_FIRST: Duration = Duration::from_secs(1);
/// The longest.
const REJOIN_MAX: Duration = Duration::from_secs(32);
/// A subflow that was established and lasted this long resets the backoff.
const REJOIN_CALM: Duration = Duration::from_secs(30);

/// At most this many mappings are looked at per round for opportunistic reinjection.
const HOL_STEPS: usize = 64;

/// Bytes queued to go again on another subflow (RFC 8684 §3.3.6).
#[derive(Debug, Clone, Copy)]
struct Reinjection {
    /// Data-level range.
    start: u64,
    end: u64,
    /// The subflow that holds them.
    from: usize,
    /// An opportunistic copy of bytes a slower subflow holds up: only a faster subflow takes
    /// it. Otherwise the lowest-RTT subflow but `from` (or `from` itself, when it is the only
    /// one with room).
    only_faster: bool,
}

/// One MPTCP connection.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent protocol flags of RFC 8684"
)]
pub(crate) struct MpConn {
    pub role: Role,
    pub state: ConnState,
    pub cfg: ConnConfig,
    pub local_key: u64,
    pub local_token: u32,
    local_idsn: u64,
    pub remote_key: Option<u64>,
    pub remote_token: u32,
    remote_idsn: u64,
    /// TCP Fast Open: bytes of ours the peer took from our SYN (RFC 8684 appendix B, as
    /// Linux does): they precede the data sequence space, whose first byte (`IDSN + 1`) is
    /// our data offset `local_prefix`, and the initial subflow's relative sequence numbers
    /// count from after them.
    local_prefix: u64,
    /// The same for the peer's SYN data that we took.
    peer_prefix: u64,
    /// DSS checksums in use (either side set A).
    pub checksums: bool,
    /// The peer set C: no joins to its initial address.
    pub peer_no_join_to_source: bool,
    /// Client: a DSS came from the server, so it has our third ACK's keys (§3.1).
    pub fully_established: bool,
    pub subflows: Vec<Subflow>,

    // Data-level send sequence space (data offsets; DSN = local IDSN + 1 + offset).
    send: SendBuffer,
    snd_una: u64,
    /// Next new data offset to hand a subflow.
    snd_nxt: u64,
    /// The peer's window's right edge (§3.3.4).
    snd_edge: u64,
    fin_queued: bool,
    /// The subflow that carries our `DATA_FIN` next, and when it is sent again.
    fin_on: Option<usize>,
    fin_rtx_at: Option<Instant>,
    fin_rto: Duration,
    fin_sent: bool,
    /// Data ranges to send again on another subflow (§3.3.6), and the subflow they left.
    reinject: VecDeque<Reinjection>,
    /// Picks the subflow for new bytes.
    scheduler: Box<dyn Scheduler>,
    /// What the subflows' coupled controllers share (coupled congestion control only), and
    /// the slots last counted in its sums (bit per slot).
    coupling: Option<Coupling>,
    coupled_counted: u64,
    /// With a redundant scheduler: data ranges to send on one more subflow, and which.
    copies: VecDeque<(u64, u64, usize)>,
    /// Data offset up to which head-of-line bytes were sent again on a faster subflow.
    hol_reinjected: u64,
    write_blocked: bool,

    // Data-level receive sequence space.
    recv: RecvBuffer,
    /// Data offset of the peer's `DATA_FIN`.
    peer_fin: Option<u64>,
    peer_fin_seen_in_order: bool,
    readable_signalled: bool,
    /// `MP_FASTCLOSE` to send on the resets of our subflows.
    fastclose: bool,
    pub events: VecDeque<ConnEvent>,
    pub stats: ConnStats,
    /// Mappings to take once the peer's key is known (subflow, `DATA_FIN`, mapping).
    pending_maps: Vec<(usize, bool, DssMapping, Option<u64>)>,
    /// Nagle's algorithm off on every subflow.
    pub nodelay: bool,
    /// Our `DATA_FIN` waits for joins in their handshake until then.
    fin_hold_until: Option<Instant>,
    /// The latest time this connection was told (what happens where no `now` is passed).
    clock: Option<Instant>,
    orphan: Option<Orphan>,
    /// Client: subflows to make again.
    pub rejoins: Vec<Rejoin>,
    /// The peer withdrew its first address (`REMOVE_ADDR` of ID 0, §3.4.2): no join goes
    /// there again.
    pub peer_removed_first: bool,
    /// The scheduler's copy of the bytes it hands a subflow, and the bytes read out of
    /// subflows (kept between calls).
    scratch: Vec<u8>,
    rx_scratch: Vec<u8>,
    /// Client: joins will be opened once MPTCP is fully established.
    pub expect_joins: bool,
    /// Plain TCP on the first subflow (from the start, or since a fall back); stays so once
    /// the connection ended, so that what the subflow received can still be read.
    fallen_back: bool,
    /// Why it fell back, if it did after the handshake began.
    fallback_cause: Option<FallbackCause>,
    /// Signals waiting for a pure ACK.
    signals: VecDeque<Signal>,
    /// A signal went on an ACK and more wait for theirs ([`MpConn::signal_next`]).
    pub signals_left: bool,
    /// Our announcements not echoed yet.
    announced: Vec<Announced>,
    /// Addresses the peer announced (ID, address), and whether we joined them.
    pub remote_addrs: Vec<(u8, SocketAddr, bool)>,
}

/// Data-level counters of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Bytes the application wrote.
    pub bytes_written: u64,
    /// Bytes acknowledged by `DATA_ACK`.
    pub bytes_acked: u64,
    /// Bytes the application read.
    pub bytes_read: u64,
    /// Bytes sent again on another subflow.
    pub bytes_reinjected: u64,
    /// Times a subflow's peer went silent with data outstanding while another subflow worked
    /// (its data was sent again on the others).
    pub silences: u64,
    /// Bytes a redundant scheduler sent on more than one subflow (the extra copies).
    pub bytes_redundant: u64,
    /// Bytes received twice at data level (duplicates across subflows).
    pub duplicate_bytes: u64,
    /// The most bytes held out of order at the data level at once (waiting for a hole to
    /// fill: head-of-line blocking).
    pub peak_out_of_order: u64,
    /// Mappings that did not match earlier ones (subflow reset).
    pub mapping_conflicts: u64,
    /// DSS checksums that failed.
    pub checksum_failures: u64,
    /// Bytes that TCP Fast Open carried in a SYN and the other side took.
    pub fast_open_bytes: u64,
    /// `MP_FAIL`s the peer sent (a checksum of ours failed there, §3.7).
    pub mp_fail_received: u64,
    /// `ADD_ADDR` announcements whose HMAC was wrong (ignored).
    pub bad_add_addr: u64,
}

impl MpConn {
    pub fn new(role: Role, cfg: ConnConfig, local_key: u64) -> Self {
        let (local_token, local_idsn) = crypto::token_and_idsn(local_key);
        let send = SendBuffer::new(cfg.send_buffer);
        let recv = RecvBuffer::new(cfg.recv_buffer);
        let scheduler = cfg.scheduler.build();
        let coupling = Coupling::new(cfg.congestion);
        Self {
            role,
            state: ConnState::Connecting,
            checksums: cfg.checksums,
            fin_rto: cfg.initial_rto,
            cfg,
            local_key,
            local_token,
            local_idsn,
            remote_key: None,
            remote_token: 0,
            remote_idsn: 0,
            local_prefix: 0,
            peer_prefix: 0,
            peer_no_join_to_source: false,
            fully_established: false,
            subflows: Vec::new(),
            send,
            snd_una: 0,
            snd_nxt: 0,
            snd_edge: 0,
            fin_queued: false,
            fin_on: None,
            fin_rtx_at: None,
            fin_sent: false,
            reinject: VecDeque::new(),
            scheduler,
            coupling,
            coupled_counted: 0,
            copies: VecDeque::new(),
            hol_reinjected: 0,
            write_blocked: false,
            recv,
            peer_fin: None,
            peer_fin_seen_in_order: false,
            readable_signalled: false,
            fastclose: false,
            events: VecDeque::new(),
            stats: ConnStats::default(),
            pending_maps: Vec::new(),
            nodelay: false,
            fin_hold_until: None,
            clock: None,
            orphan: None,
            rejoins: Vec::new(),
            peer_removed_first: false,
            scratch: Vec::new(),
            rx_scratch: Vec::new(),
            expect_joins: false,
            fallen_back: false,
            fallback_cause: None,
            signals: VecDeque::new(),
            signals_left: false,
            announced: Vec::new(),
            remote_addrs: Vec::new(),
        }
    }

    /// Plain TCP from the start (no `MP_CAPABLE` offered, or none in the peer's SYN).
    pub fn start_as_tcp(&mut self) {
        self.state = ConnState::Fallback;
        self.fallen_back = true;
    }

    /// The peer's key is known (from the SYN/ACK, or the third ACK).
    pub fn set_remote_key(&mut self, key: u64) {
        let (token, idsn) = crypto::token_and_idsn(key);
        self.remote_key = Some(key);
        self.remote_token = token;
        self.remote_idsn = idsn;
    }

    pub fn subflow_of(&self, h: ConnHandle) -> Option<usize> {
        self.subflows.iter().position(|s| s.handle == h)
    }

    fn mp_capable_flags(&self) -> MpCapableFlags {
        let mut f = MpCapableFlags::HMAC_SHA;
        if self.checksums {
            f |= MpCapableFlags::CHECKSUM_REQUIRED;
        }
        MpCapableFlags(f)
    }

    fn is_mptcp(&self) -> bool {
        !self.fallen_back
    }

    /// Plain TCP on the first subflow (from the start or since a fall back).
    pub fn is_tcp(&self) -> bool {
        self.fallen_back
    }

    /// Why it fell back to TCP after its handshake began (`None` if it did not, or if it
    /// started as TCP).
    pub fn fallback_cause(&self) -> Option<FallbackCause> {
        self.fallback_cause
    }

    // --- the application's side ----------------------------------------------------------

    pub fn write(&mut self, ep: &mut Endpoint, data: &[u8]) -> Result<usize, WriteError> {
        if let ConnState::Closed(r) = self.state {
            return Err(if r == CloseReason::Finished {
                WriteError::Finished
            } else {
                WriteError::Closed(r)
            });
        }
        if self.fin_queued {
            return Err(WriteError::Finished);
        }
        if self.fallen_back {
            // Bytes staged at the fall back go first, in order.
            self.flush_fallback(ep);
            if self.send.is_empty() {
                let h = self.subflows[0].handle;
                let r = ep
                    .conn_mut(h)
                    .ok_or(WriteError::Closed(CloseReason::Aborted))?
                    .write(data);
                if let Ok(n) = r {
                    self.stats.bytes_written += n as u64;
                }
                return r;
            }
        }
        let n = self.send.write(data);
        self.stats.bytes_written += n as u64;
        if n < data.len() {
            self.write_blocked = true;
        }
        if n == 0 && !data.is_empty() {
            return Err(WriteError::Blocked);
        }
        Ok(n)
    }

    pub fn readable(&self, ep: &Endpoint) -> usize {
        if self.fallen_back {
            return self.recv.readable()
                + ep.conn(self.subflows[0].handle)
                    .map_or(0, crate::tcp::Connection::readable);
        }
        self.recv.readable()
    }

    pub fn read(&mut self, ep: &mut Endpoint, buf: &mut [u8]) -> Result<usize, ReadError> {
        if self.fallen_back && self.recv.readable() == 0 {
            let h = self.subflows[0].handle;
            let r = ep
                .conn_mut(h)
                .ok_or(ReadError::Closed(CloseReason::Aborted))?
                .read(buf);
            if let Ok(n) = r {
                self.stats.bytes_read += n as u64;
            }
            return r;
        }
        let n = self.recv.read(buf);
        if n > 0 {
            self.stats.bytes_read += n as u64;
            if self.fallen_back {
                return Ok(n);
            }
            self.drain(ep);
            self.update_windows(ep);
            return Ok(n);
        }
        if buf.is_empty() && self.recv.readable() > 0 {
            return Ok(0);
        }
        self.readable_signalled = false;
        if self.peer_fin_seen_in_order {
            return Err(ReadError::Finished);
        }
        match self.state {
            ConnState::Closed(r) => Err(ReadError::Closed(r)),
            _ => Err(ReadError::Blocked),
        }
    }

    /// Whether the peer acknowledged every byte and the end of the data.
    pub fn all_acked(&self, ep: &Endpoint) -> bool {
        if self.fallen_back {
            return self.send.is_empty()
                && self
                    .subflows
                    .first()
                    .and_then(|s| ep.conn(s.handle))
                    .is_none_or(|c| {
                        matches!(c.state(), State::FinWait2 | State::TimeWait | State::Closed)
                            && c.send_buffered() == 0
                    });
        }
        self.fin_queued && self.snd_una > self.send.end()
    }

    /// No more data from us: a `DATA_FIN` follows the last byte (§3.3.3).
    pub fn close(&mut self, ep: &mut Endpoint) {
        if self.fin_queued || matches!(self.state, ConnState::Closed(_)) {
            return;
        }
        self.fin_queued = true;
        if self.fallen_back {
            self.flush_fallback(ep);
        }
    }

    /// Ends the connection at once: `MP_FASTCLOSE` on resets of every subflow (§3.5).
    pub fn abort(&mut self, ep: &mut Endpoint) {
        if matches!(self.state, ConnState::Closed(_)) {
            return;
        }
        self.fastclose = self.is_mptcp() && self.remote_key.is_some();
        self.abort_subflows(ep);
        self.finish(CloseReason::Aborted);
    }

    /// Resets every subflow at once (an abort, or the peer's `MP_FASTCLOSE`).
    fn abort_subflows(&mut self, ep: &mut Endpoint) {
        for sf in &mut self.subflows {
            if sf.state == SubflowState::Closed {
                continue;
            }
            if let Some(c) = ep.conn_mut(sf.handle) {
                c.abort();
            }
            sf.state = SubflowState::Closed;
        }
    }

    fn finish(&mut self, reason: CloseReason) {
        self.orphan = None;
        if !matches!(self.state, ConnState::Closed(_)) {
            self.state = ConnState::Closed(reason);
            self.events.push_back(ConnEvent::Closed(reason));
        }
    }

    // --- options on our segments ---------------------------------------------------------

    fn data_ack(&self) -> u64 {
        let next = self.recv.next() + u64::from(self.peer_fin_seen_in_order);
        self.remote_idsn
            .wrapping_add(1)
            .wrapping_add(next)
            .wrapping_sub(self.peer_prefix)
    }

    fn dsn(&self, data_off: u64) -> u64 {
        self.local_idsn
            .wrapping_add(1)
            .wrapping_add(data_off)
            .wrapping_sub(self.local_prefix)
    }

    /// The relative subflow sequence number of offset `sf_off` of subflow `i` that we send:
    /// on the initial subflow, counted after the data our SYN carried (appendix B).
    fn send_ssn(&self, i: usize, sf_off: u64) -> u32 {
        let prefix = self
            .subflows
            .get(i)
            .filter(|s| s.initial)
            .map_or(0, |_| self.local_prefix);
        rel_ssn(sf_off.saturating_sub(prefix))
    }

    /// The subflow prefix of subflow `i`'s receive side (the peer's SYN data we took).
    fn recv_prefix(&self, i: usize) -> u64 {
        self.subflows
            .get(i)
            .filter(|s| s.initial)
            .map_or(0, |_| self.peer_prefix)
    }

    /// A client's initial subflow got an `MP_CAPABLE` SYN-ACK: what it took of our SYN's data.
    fn on_syn_ack(&mut self, ep: &Endpoint, i: usize) {
        let Some(sf) = self.subflows.get(i).filter(|s| s.initial) else {
            return;
        };
        if self.role == Role::Client {
            let taken = ep
                .conn(sf.handle)
                .map_or(0, crate::tcp::Connection::syn_data);
            self.on_syn_data_taken(i, taken);
        }
    }

    /// A client's SYN-ACK acknowledged `taken` bytes of the data its SYN carried (TCP Fast
    /// Open, RFC 8684 appendix B): the peer has them ahead of the data sequence space.
    fn on_syn_data_taken(&mut self, i: usize, taken: u64) {
        if taken == 0 || self.local_prefix > 0 || self.snd_una > 0 {
            return;
        }
        self.local_prefix = taken;
        self.snd_una = taken;
        self.snd_nxt = self.snd_nxt.max(taken);
        self.send.ack_to(taken);
        self.stats.bytes_acked += taken;
        self.stats.fast_open_bytes += taken;
        // A mapping the SYN carried only in part starts where the SYN's data ended: its
        // first byte is the data sequence space's first (normally the SYN takes it all).
        let checksums = self.checksums;
        let mut fix = None;
        if let Some(sf) = self.subflows.get_mut(i) {
            sf.send_maps.prune(taken);
            if let Some(m) = sf.send_maps.iter_mut().next().filter(|m| m.sf_off < taken) {
                let cut = taken - m.sf_off;
                m.sf_off += cut;
                m.data_off += cut;
                m.len -= cut;
                fix = checksums.then_some((m.data_off, m.len));
            }
        }
        if let Some((data_off, len)) = fix {
            #[expect(clippy::cast_possible_truncation, reason = "one mapping, below 64 KiB")]
            let mut bytes = vec![0u8; len as usize];
            let got = self.send.read_at(data_off, &mut bytes);
            let sum = crypto::dss_checksum(
                self.dsn(data_off),
                1,
                u16::try_from(got).unwrap_or(u16::MAX),
                &bytes[..got],
            );
            if let Some(m) = self.subflows[i].send_maps.iter_mut().next() {
                m.checksum = Some(sum);
            }
        }
    }

    /// A server took the `len` bytes the peer's SYN carried (TCP Fast Open): they are the
    /// first the application reads, ahead of the data sequence space (appendix B).
    pub fn take_syn_data(&mut self, len: u64) {
        let Some(sf) = self.subflows.first_mut() else {
            return;
        };
        if len == 0 || self.peer_prefix > 0 || sf.read > 0 || self.role != Role::Server {
            return;
        }
        self.peer_prefix = len;
        self.stats.fast_open_bytes += len;
        let _ = sf.recv_maps.insert(RecvMapping {
            sf_off: 0,
            data_off: 0,
            len,
            checksum: None,
            dsn: 0,
            ssn: 0,
            data_len: u16::try_from(len).unwrap_or(u16::MAX),
        });
    }

    /// A client about to send its SYN: the first `room` bytes written go in it (TCP Fast
    /// Open), on the initial subflow, mapped as the first data in case the server does not
    /// take them.
    pub fn load_syn_data(&mut self, ep: &mut Endpoint, room: usize) {
        if room == 0 || self.snd_nxt > 0 || self.subflows.len() != 1 {
            return;
        }
        let n = (room as u64).min(self.send.end()).min(MAX_MAPPING);
        let mut buf = std::mem::take(&mut self.scratch);
        if let Handed::Wrote(w) = self.hand_out(ep, 0, 0, n, &mut buf) {
            self.snd_nxt = w;
        }
        self.scratch = buf;
    }

    /// The options of segment `seg` of subflow `i`.
    #[expect(
        clippy::too_many_lines,
        reason = "one decision per form of option, in the order of RFC 8684 §3"
    )]
    pub fn outgoing_options(
        &self,
        i: usize,
        seg: &OutgoingSegment,
    ) -> ArrayVec<MptcpOption<'static>, 4> {
        let mut out = ArrayVec::new();
        let Some(sf) = self.subflows.get(i) else {
            return out;
        };
        if self.fallen_back {
            return out;
        }
        let syn = seg.flags.contains(TcpFlags::SYN);
        let ack = seg.flags.contains(TcpFlags::ACK);
        if seg.flags.contains(TcpFlags::RST) {
            if self.fastclose {
                if let Some(key) = self.remote_key {
                    out.push(MptcpOption::MpFastclose(MpFastclose { receiver_key: key }));
                }
            } else if let Some(r) = sf.reset_reason {
                out.push(MptcpOption::MpTcpRst(r));
                if let Some(dsn) = sf.fail_dsn {
                    out.push(MptcpOption::MpFail(MpFail { dsn }));
                }
            }
            return out;
        }
        if sf.initial {
            if syn && !ack {
                out.push(MptcpOption::MpCapable(MpCapable {
                    version: 1,
                    flags: self.mp_capable_flags(),
                    keys: MpCapableKeys::None,
                }));
                return out;
            }
            if syn {
                out.push(MptcpOption::MpCapable(MpCapable {
                    version: 1,
                    flags: self.mp_capable_flags(),
                    keys: MpCapableKeys::Sender {
                        sender_key: self.local_key,
                    },
                }));
                return out;
            }
            // §3.1: the client repeats its keys on the third ACK, and on the first data,
            // until a DSS from the server shows they arrived. A pure ACK that has something
            // else to say (our DATA_FIN when we close without having sent a byte, an
            // ADD_ADDR echo) says it instead, as Linux does: the server may send nothing
            // until it has heard it.
            let other_news = seg.payload_len == 0
                && (!self.signals.is_empty() || (self.fin_queued && self.send.end() == 0));
            if self.role == Role::Client
                && !self.fully_established
                && seg.stream_offset == self.local_prefix
                && !other_news
            {
                if let Some(remote) = self.remote_key {
                    let keys = if seg.payload_len > 0 {
                        let m = sf.send_maps.find(self.local_prefix);
                        MpCapableKeys::WithData {
                            sender_key: self.local_key,
                            receiver_key: remote,
                            data_len: m.map_or(0, |m| u16::try_from(m.len).unwrap_or(u16::MAX)),
                            checksum: m.and_then(|m| m.checksum),
                        }
                    } else {
                        MpCapableKeys::Both {
                            sender_key: self.local_key,
                            receiver_key: remote,
                        }
                    };
                    out.push(MptcpOption::MpCapable(MpCapable {
                        version: 1,
                        flags: self.mp_capable_flags(),
                        keys,
                    }));
                    return out;
                }
            }
        } else {
            match sf.state {
                SubflowState::Handshake if syn && !ack => {
                    out.push(MptcpOption::MpJoin(MpJoin::Syn {
                        backup: sf.backup,
                        address_id: sf.local_id,
                        token: self.remote_token,
                        nonce: sf.local_nonce,
                    }));
                    return out;
                }
                SubflowState::Handshake if syn => {
                    let remote_key = self.remote_key.unwrap_or(0);
                    out.push(MptcpOption::MpJoin(MpJoin::SynAck {
                        backup: sf.backup,
                        address_id: sf.local_id,
                        hmac: crypto::join_truncated_hmac(
                            self.local_key,
                            remote_key,
                            sf.local_nonce,
                            sf.remote_nonce,
                        ),
                        nonce: sf.local_nonce,
                    }));
                    return out;
                }
                SubflowState::JoinAckPending => {
                    let remote_key = self.remote_key.unwrap_or(0);
                    out.push(MptcpOption::MpJoin(MpJoin::Ack {
                        hmac: crypto::join_hmac_160(
                            self.local_key,
                            remote_key,
                            sf.local_nonce,
                            sf.remote_nonce,
                        ),
                    }));
                    return out;
                }
                _ => {}
            }
        }
        if self.remote_key.is_none() {
            // A Fast Open server's early data: the mapping alone, no DATA_ACK (RFC 8684
            // appendix B, erratum 6609) since the peer's IDSN is not known yet.
            if let Some(m) = sf
                .send_maps
                .find(seg.stream_offset)
                .filter(|_| self.early_send() && seg.payload_len > 0)
            {
                out.push(MptcpOption::Dss(Dss {
                    data_fin: false,
                    data_ack: None,
                    mapping: Some(DssMapping {
                        dsn: DataSeqField::Long(self.dsn(m.data_off)),
                        ssn: self.send_ssn(i, m.sf_off),
                        data_len: u16::try_from(m.len).unwrap_or(u16::MAX),
                        checksum: if self.checksums { m.checksum } else { None },
                    }),
                }));
            }
            return out;
        }
        if let Some(sig) = self.signal_for(i, seg) {
            out.push(self.signal_option(sig));
        }
        // A DSS: the DATA_ACK always, the mapping of the payload, or a DATA_FIN on its own.
        let mut dss = Dss {
            data_fin: false,
            data_ack: Some(DataSeqField::Long(self.data_ack())),
            mapping: None,
        };
        if seg.payload_len > 0 {
            if let Some(m) = sf.send_maps.find(seg.stream_offset) {
                let slim = self.slim(i, m, seg.stream_offset);
                let dsn = self.dsn(m.data_off);
                if slim {
                    dss.data_ack = None;
                }
                dss.mapping = Some(DssMapping {
                    #[expect(
                        clippy::cast_possible_truncation,
                        reason = "a slim DSS carries the lower 32 bits (§3.3.1)"
                    )]
                    dsn: if slim {
                        DataSeqField::Short(dsn as u32)
                    } else {
                        DataSeqField::Long(dsn)
                    },
                    ssn: self.send_ssn(i, m.sf_off),
                    data_len: u16::try_from(m.len).unwrap_or(u16::MAX),
                    checksum: if self.checksums { m.checksum } else { None },
                });
            }
        } else if self.fin_on == Some(i)
            && self.fin_queued
            && self.snd_nxt == self.send.end()
            && self.snd_una <= self.send.end()
        {
            let dsn = self.dsn(self.send.end());
            dss.data_fin = true;
            dss.mapping = Some(DssMapping {
                dsn: DataSeqField::Long(dsn),
                ssn: 0,
                data_len: 1,
                checksum: self.checksums.then(|| crypto::dss_checksum(dsn, 0, 1, &[])),
            });
        }
        out.push(MptcpOption::Dss(dss));
        out
    }

    /// The signal that segment `seg` of subflow `i` carries: the first one waiting, on a pure
    /// ACK of an active subflow (an `MP_PRIO` only on its own subflow).
    fn signal_for(&self, i: usize, seg: &OutgoingSegment) -> Option<Signal> {
        let plain_ack = seg.payload_len == 0
            && !seg.flags.contains(TcpFlags::SYN)
            && !seg.flags.contains(TcpFlags::RST)
            && !seg.flags.contains(TcpFlags::FIN);
        if !plain_ack || self.subflows.get(i)?.state != SubflowState::Active {
            return None;
        }
        let (_, sig) = self.next_signal()?;
        match sig {
            Signal::Prio { sf, .. } if sf != i => None,
            _ => Some(sig),
        }
    }

    /// The first queued signal that can still go, and its place in the queue: an `MP_PRIO`
    /// whose subflow closed before it went never can, and must not hold up those behind it.
    fn next_signal(&self) -> Option<(usize, Signal)> {
        let dead = |sig: &Signal| match sig {
            Signal::Prio { sf, .. } => self
                .subflows
                .get(*sf)
                .is_none_or(|s| s.state == SubflowState::Closed),
            _ => false,
        };
        self.signals
            .iter()
            .enumerate()
            .find(|(_, sig)| !dead(sig))
            .map(|(k, sig)| (k, *sig))
    }

    fn signal_option(&self, sig: Signal) -> MptcpOption<'static> {
        let remote_key = self.remote_key.unwrap_or(0);
        let port = |addr: SocketAddr| (addr.port() != 0).then_some(addr.port());
        match sig {
            Signal::Announce { id, addr } => MptcpOption::AddAddr(AddAddr {
                address_id: id,
                address: addr.ip(),
                port: port(addr),
                form: AddAddrForm::Announce {
                    hmac: crypto::add_addr_hmac(
                        self.local_key,
                        remote_key,
                        id,
                        addr.ip(),
                        port(addr),
                    ),
                },
            }),
            Signal::Echo { id, addr } => MptcpOption::AddAddr(AddAddr {
                address_id: id,
                address: addr.ip(),
                port: port(addr),
                form: AddAddrForm::Echo,
            }),
            Signal::Remove { id } => MptcpOption::RemoveAddr(RemoveAddr {
                // The option borrows its list: a 'static one-element slice per ID.
                address_ids: &ADDRESS_IDS[usize::from(id)..=usize::from(id)],
            }),
            Signal::Prio { backup, .. } => MptcpOption::MpPrio(MpPrio {
                backup,
                address_id: None,
            }),
        }
    }

    /// Queues a signal and asks an active subflow (its own, for `MP_PRIO`) for an ACK.
    pub fn signal(&mut self, ep: &mut Endpoint, sig: Signal) {
        self.signals.push_back(sig);
        self.ask_to_signal(ep, sig);
    }

    /// One signal went and others wait: asks for the ACK that carries the next.
    pub fn signal_next(&mut self, ep: &mut Endpoint) {
        if std::mem::take(&mut self.signals_left) {
            if let Some((_, sig)) = self.next_signal() {
                self.ask_to_signal(ep, sig);
            }
        }
    }

    /// Asks the subflow that can carry `sig` for a pure ACK.
    fn ask_to_signal(&self, ep: &mut Endpoint, sig: Signal) {
        let sf = if let Signal::Prio { sf, .. } = sig {
            Some(sf)
        } else {
            let live = |s: &Subflow| s.state == SubflowState::Active && !s.stale;
            let subflows = &self.subflows;
            subflows
                .iter()
                .position(|s| live(s) && !s.silent)
                .or_else(|| subflows.iter().position(live))
        };
        if let Some(c) = sf
            .and_then(|i| self.subflows.get(i))
            .and_then(|s| ep.conn_mut(s.handle))
        {
            c.request_pure_ack();
        }
    }

    /// No longer announces address `id`: a `REMOVE_ADDR` goes instead (§3.4.2), and the
    /// subflows on it are reset.
    pub fn remove_address(&mut self, ep: &mut Endpoint, id: u8, ip: core::net::IpAddr) {
        self.announced.retain(|a| a.id != id);
        self.signals
            .retain(|s| !matches!(s, Signal::Announce { id: x, .. } | Signal::Echo { id: x, .. } if *x == id));
        for j in 0..self.subflows.len() {
            if self.subflows[j].local.ip() == ip && self.subflows[j].state != SubflowState::Closed {
                self.reset_subflow(ep, j, 0);
            }
        }
        self.signal(ep, Signal::Remove { id });
    }

    /// Client: tells the peer that our address IDs `ids` are gone (`REMOVE_ADDR`, §3.4.2), on
    /// a subflow that still works; with none left, on the first join that comes up
    /// (break-before-make: until then the peer's data waits on the dead subflow, and the
    /// withdrawal frees it at once). A join from one of these IDs cancels its withdrawal
    /// ([`MpConn::cancel_withdrawal`]).
    pub fn withdraw_own(&mut self, ep: &mut Endpoint, ids: &[u8]) {
        if !self.is_mptcp() || self.fallen_back {
            return;
        }
        for &id in ids {
            self.signal(ep, Signal::Remove { id });
        }
    }

    /// Drops a queued `REMOVE_ADDR` of ID `id` (a subflow from that ID is made again).
    pub fn cancel_withdrawal(&mut self, id: u8) {
        self.signals
            .retain(|s| !matches!(s, Signal::Remove { id: x } if *x == id));
    }

    /// Announces our address `addr` (port 0: the connection's) as ID `id` (§3.4.1).
    pub fn announce(&mut self, ep: &mut Endpoint, id: u8, addr: SocketAddr) {
        if self.fallen_back || self.announced.iter().any(|a| a.id == id) {
            return;
        }
        self.signal(ep, Signal::Announce { id, addr });
    }

    /// Segment `seg` of subflow `i` left (with the options in `included`).
    pub fn on_sent(&mut self, now: Instant, i: usize, seg: &OutgoingSegment, included: u8) {
        if included == 0 {
            return;
        }
        let sig = self.signal_for(i, seg);
        let dss_bit = if sig.is_some() { 2 } else { 1 };
        if let Some(sig) = sig.filter(|_| included & 1 != 0) {
            // It went, and so did the dead ones before it.
            if let Some((k, _)) = self.next_signal() {
                self.signals.drain(..=k);
            }
            self.signals_left = self.next_signal().is_some();
            if let Signal::Announce { id, addr } = sig {
                let rto = self.cfg.initial_rto;
                match self.announced.iter_mut().find(|a| a.id == id) {
                    Some(a) => {
                        a.tries += 1;
                        a.rtx_at = now + rto * (1 << a.tries.min(6));
                    }
                    None => self.announced.push(Announced {
                        id,
                        addr,
                        rtx_at: now + rto,
                        tries: 0,
                    }),
                }
            }
        }
        if included & dss_bit == 0 {
            return;
        }
        // Only a data segment's DSS counts: TCP sends it again until it arrives, while a
        // pure ACK that is lost is gone (its news then go on the next data segment).
        let data = seg.payload_len > 0
            && !seg.flags.contains(TcpFlags::SYN)
            && !seg.flags.contains(TcpFlags::RST);
        if data && self.dss_ready() {
            let stamp = self.dss_stamp();
            if let Some(sf) = self
                .subflows
                .get_mut(i)
                .filter(|sf| sf.state == SubflowState::Active)
            {
                if sf.dss_said.is_none_or(|d| d.stamp != stamp) {
                    sf.dss_said = Some(DssSaid {
                        stamp,
                        end: seg.stream_offset + seg.payload_len as u64,
                        arrived: false,
                    });
                }
            }
        }
        let fin_carried = self.fin_on == Some(i)
            && seg.payload_len == 0
            && !seg.flags.contains(TcpFlags::SYN)
            && !seg.flags.contains(TcpFlags::RST)
            && self.fin_queued
            && self.snd_nxt == self.send.end()
            && self.snd_una <= self.send.end()
            && self.remote_key.is_some();
        if fin_carried {
            self.fin_sent = true;
            self.fin_rtx_at = Some(now + self.fin_rto);
        }
    }

    /// Whether our segments carry a DSS with a `DATA_ACK` (rather than `MP_CAPABLE` with
    /// keys, or a Fast Open server's early mapping alone): the peer has our key, and (client)
    /// showed it with a DSS of its own.
    fn dss_ready(&self) -> bool {
        !self.fallen_back
            && self.remote_key.is_some()
            && (self.role == Role::Server || self.fully_established)
    }

    /// What a DSS would say now besides its mapping: the `DATA_ACK`, and the data-level
    /// window's right edge (§3.3.4: the window is relative to the `DATA_ACK`).
    fn dss_stamp(&self) -> (u64, u64) {
        let ack = self.data_ack();
        (ack, ack.wrapping_add(self.recv.window() as u64))
    }

    /// Whether subflow `i`'s data segments inside a mapping go bare now (without any MPTCP
    /// option): RFC 8684 §3.3.1 lets a mapping ride on its first segment only ("a data
    /// sequence mapping does not need to be included in every MPTCP packet, as long as the
    /// subflow sequence space in that packet is covered by a mapping known at the receiver"),
    /// and the 28 bytes a DSS takes then carry payload: 1448 bytes a segment instead of
    /// 1420 on a 1500-byte MTU, 2 % more goodput. Only on an active subflow whose peer's
    /// `DATA_ACK`s show that options get through, while a DSS on one of its data segments
    /// said what a new one would (`DATA_ACK`, window edge) and that segment arrived: Linux
    /// learns both only from a DSS (its MPTCP-level send window too), so news go on every data
    /// segment until one of them is acknowledged. Linux takes bare segments (its
    /// `get_mapping_status` uses the mapping in force for a segment without one).
    fn goes_bare(&self, i: usize) -> bool {
        self.said_now(i).is_some_and(|d| d.arrived)
    }

    /// The DSS said on subflow `i` when it still says what a new one would, on a subflow that
    /// may go bare at all ([`MpConn::may_go_bare`]).
    fn said_now(&self, i: usize) -> Option<DssSaid> {
        let sf = self.subflows.get(i)?;
        let d = sf.dss_said?;
        (self.may_go_bare(sf) && d.stamp == self.dss_stamp()).then_some(d)
    }

    /// Whether `sf` may send bare segments at all: our segments carry a DSS with a
    /// `DATA_ACK` ([`MpConn::dss_ready`]), and it is active with options that get through.
    fn may_go_bare(&self, sf: &Subflow) -> bool {
        self.dss_ready() && sf.state == SubflowState::Active && sf.peer_data_ack
    }

    /// Whether the data segment of subflow `i` from `sf_off`, inside a mapping but not its first
    /// segment (which carries it), goes bare ([`MpConn::goes_bare`]). A retransmission inside
    /// a mapping goes bare while the last DSS still says what a new one would, to fit where
    /// the original went, unless it is (or comes before) the segment that carried that DSS and
    /// the DSS has not arrived: its original may be what was lost, and a bare copy acknowledged
    /// would pass for the DSS's arrival ([`MpConn::note_dss_arrivals`]) while the peer never
    /// had it.
    fn bare_inside(&self, i: usize, sf_off: u64, retransmission: bool) -> bool {
        if retransmission {
            self.said_now(i)
                .is_some_and(|d| d.arrived || sf_off >= d.end)
        } else {
            self.goes_bare(i)
        }
    }

    /// Whether the data segment of subflow `i` from `sf_off`, in mapping `m`, carries its
    /// mapping alone (a *slim* DSS, [`MpConn::slim_len`] bytes): the first segment of a mapping
    /// longer than a segment (`SendMapping::run`) on a subflow whose segments inside a mapping
    /// go bare ([`MpConn::goes_bare`]). A `DATA_ACK` would say what the peer has already had
    /// (RFC 8684 §3.3: a DSS need not carry one), and a 32-bit data sequence number is enough
    /// (§3.3.1: the receiver takes the upper half from the data it has; Linux's
    /// `mptcp_expand_seq`, our `expand32`), so it takes 14 bytes instead of 28 and the segment
    /// carries 16 more payload bytes after the timestamps.
    fn slim(&self, i: usize, m: &SendMapping, sf_off: u64) -> bool {
        m.run && m.sf_off == sf_off && self.goes_bare(i)
    }

    /// Bytes of a slim DSS ([`MpConn::slim`]): a 32-bit data sequence number, the subflow
    /// sequence number and the length (14), and the checksum where one is used.
    fn slim_len(&self) -> usize {
        if self.checksums { 16 } else { 14 }
    }

    /// Option bytes on the data segment of subflow `i` from `sf_off`
    /// ([`crate::tcp::SegmentHook::data_option_len`]), its mapping looked up once: none when
    /// it goes bare inside its mapping ([`MpConn::bare_inside`]), a slim DSS on a mapping's
    /// first segment ([`MpConn::slim`]), all that is reserved otherwise.
    pub fn data_option_len(&self, i: usize, sf_off: u64, retransmission: bool) -> usize {
        let Some(m) = self
            .subflows
            .get(i)
            .and_then(|sf| sf.send_maps.find(sf_off))
        else {
            return usize::MAX;
        };
        if m.sf_off < sf_off {
            if self.bare_inside(i, sf_off, retransmission) {
                return 0;
            }
        } else if self.slim(i, m, sf_off) {
            return self.slim_len();
        }
        usize::MAX
    }

    /// Notes which subflows' peers have the data segment that carried their last DSS.
    fn note_dss_arrivals(&mut self, ep: &Endpoint) {
        for sf in &mut self.subflows {
            let Some(d) = sf.dss_said.as_mut().filter(|d| !d.arrived) else {
                continue;
            };
            if ep.conn(sf.handle).is_some_and(|c| c.acked_to() >= d.end) {
                d.arrived = true;
            }
        }
    }

    /// How many payload bytes from `sf_off` a segment of subflow `i` may carry.
    pub fn segment_limit(&self, i: usize, sf_off: u64, len: usize) -> usize {
        if self.fallen_back {
            return len;
        }
        self.subflows
            .get(i)
            .map_or(len, |sf| sf.send_maps.limit(sf_off, len))
    }

    // --- segments from the peer ----------------------------------------------------------

    /// The MPTCP options of `seg`, which subflow `i` just took (the TCP layer has processed
    /// it). Returns whether the subflow must be reset.
    pub fn on_segment(
        &mut self,
        now: Instant,
        ep: &mut Endpoint,
        i: usize,
        seg: &TcpRepr<'_>,
        payload_at: Option<u64>,
    ) {
        self.clock = Some(now);
        let nodelay = self.nodelay;
        if self.fallen_back || matches!(self.state, ConnState::Closed(_)) {
            return;
        }
        let mut saw_dss = false;
        let mut saw_data_ack = false;
        let mut saw_mpc = false;
        let mut fail_on_ack = false;
        for o in &seg.mptcp {
            match o {
                // An MP_CAPABLE we cannot use is no MP_CAPABLE (§3.1).
                MptcpOption::MpCapable(mpc) if mpc.is_usable() => {
                    saw_mpc = true;
                    self.on_mp_capable(i, seg, mpc, payload_at);
                }
                MptcpOption::MpJoin(j) => self.on_mp_join(now, ep, i, j),
                MptcpOption::Dss(dss) => {
                    saw_dss = true;
                    saw_data_ack |= dss.data_ack.is_some();
                    self.on_dss(now, ep, i, seg, dss, payload_at);
                }
                MptcpOption::MpFastclose(fc) if fc.receiver_key == self.local_key => {
                    self.on_fastclose(ep, i, seg);
                    return;
                }
                // RFC 8684's MP_PRIO has no address ID (§3.3.8); the RFC 6824 form with one is
                // ignored, as Linux ignores it.
                MptcpOption::MpPrio(p) if p.address_id.is_none() => {
                    if let Some(sf) = self.subflows.get_mut(i) {
                        sf.peer_backup = p.backup;
                    }
                }
                MptcpOption::MpFail(_) => {
                    // A checksum of ours failed at the peer (§3.7). On a RST the peer closed
                    // the subflow itself; on an ACK it asks for a fall back by an infinite
                    // mapping, which this engine does not do: the subflow is reset, and the
                    // data goes again on another subflow (or a new one).
                    self.stats.mp_fail_received += 1;
                    if !seg.flags.contains(TcpFlags::RST) {
                        fail_on_ack = true;
                    }
                }
                MptcpOption::AddAddr(a) => self.on_add_addr(ep, i, a),
                MptcpOption::RemoveAddr(r) => self.on_remove_addr(ep, r.address_ids),
                _ => {}
            }
        }
        for (j, fin, m, at) in std::mem::take(&mut self.pending_maps) {
            self.on_mapping(ep, j, fin, m, at);
        }
        if fail_on_ack {
            self.reset_subflow(ep, i, 6);
            return;
        }
        if saw_mpc && seg.flags.contains(TcpFlags::SYN) && seg.ack_number.is_some() {
            self.on_syn_ack(ep, i);
        }
        let Some(sf) = self.subflows.get(i) else {
            return;
        };
        let synchronized = ep
            .conn(sf.handle)
            .is_some_and(|c| c.state().is_synchronized());
        if sf.initial && self.state == ConnState::Connecting && synchronized {
            // The first subflow's handshake completed: with keys both ways, MPTCP; without
            // them, plain TCP (§3.1, §3.7).
            if self.remote_key.is_some() && (saw_mpc || self.role == Role::Client) {
                self.state = ConnState::Established;
                self.subflows[i].state = SubflowState::Active;
                if let Some(c) = ep.conn_mut(self.subflows[i].handle) {
                    c.set_option_space(OPTION_SPACE);
                    c.set_nagle(!nodelay);
                    // Until a DATA_ACK says otherwise, the handshake's window (§3.3.4).
                    self.snd_edge = self.snd_edge.max(c.stats().snd_wnd);
                    if self.role == Role::Server {
                        // A DSS at once tells the client its keys arrived (§3.1), so it can
                        // stop repeating them and open its joins.
                        c.request_ack();
                    }
                }
                self.events.push_back(ConnEvent::Connected);
            } else if self.role == Role::Server && saw_dss && !saw_mpc {
                // The third ACK (or the first data with our keys) was lost and later data came
                // first: the client does MPTCP and sends its keys again with the first data.
                // Wait for them rather than fall back (the kernel falls back here).
            } else if !self.fall_back(ep, FallbackCause::NotOffered) {
                self.reset_subflow(ep, i, 6);
            }
        }
        // A DATA_ACK shows that the server has our key (§3.1; Linux's
        // `check_fully_established` asks for one too): a Fast Open server's early mappings
        // come without one, before our key reached it, and do not count.
        if saw_data_ack && self.role == Role::Client {
            self.fully_established = true;
        }
        if let Some(sf) = self.subflows.get_mut(i) {
            sf.peer_data_ack |= saw_data_ack;
        }
        if self.options_stripped(ep, i, seg) {
            // The peer's options no longer arrive: a middlebox strips them (§3.7).
            if !self.fall_back(ep, FallbackCause::OptionsStripped) {
                self.reset_subflow(ep, i, 6);
            }
            return;
        }
        self.drain(ep);
        self.update_windows(ep);
    }

    /// Whether `seg`, which came on active subflow `i` without any MPTCP option, shows that
    /// something strips them (§3.7): a pure ACK, when the peer sent a `DATA_ACK` on the
    /// subflow before, or (client) the server acknowledged our first data after the SYN's.
    /// (Data without options is judged when it is read in order: a mapping may cover it.)
    /// A Fast Open server's pure ACKs before our key reached it carry no option, as Linux's
    /// (it has no `DATA_ACK` to make), and acknowledge no more than the SYN's data.
    fn options_stripped(&self, ep: &Endpoint, i: usize, seg: &TcpRepr<'_>) -> bool {
        let Some(sf) = self.subflows.get(i) else {
            return false;
        };
        if !seg.mptcp.is_empty()
            || sf.state != SubflowState::Active
            || seg.flags.contains(TcpFlags::RST)
            || seg.flags.contains(TcpFlags::SYN)
        {
            return false;
        }
        let first_data_acked = ep
            .conn(sf.handle)
            .is_some_and(|c| c.stats().bytes_acked > self.local_prefix);
        // Data without options is judged when it is read in order ([`MpConn::drain`]): a
        // mapping the peer sent before may cover it (§3.3.1).
        seg.payload.is_empty()
            && (sf.peer_data_ack || (self.role == Role::Client && sf.initial && first_data_acked))
    }

    /// `MP_FASTCLOSE` with our key on subflow `i`: every remaining subflow is reset (§3.5),
    /// saying so with `MP_TCPRST` (reason 0, unspecified: what Linux sends), and the
    /// connection ends.
    fn on_fastclose(&mut self, ep: &mut Endpoint, i: usize, seg: &TcpRepr<'_>) {
        for sf in &mut self.subflows {
            sf.reset_reason = Some(MpTcpRst {
                flags: 0,
                reason: 0,
            });
        }
        if seg.flags.contains(TcpFlags::RST) {
            // This subflow the peer's RST closed: no reset answers a reset.
            self.subflows[i].state = SubflowState::Closed;
        }
        self.abort_subflows(ep);
        self.finish(CloseReason::Reset);
    }

    /// `REMOVE_ADDR` (§3.4.2): the subflows using a removed address are closed.
    fn on_remove_addr(&mut self, ep: &mut Endpoint, ids: &[u8]) {
        for &id in ids {
            self.remote_addrs.retain(|x| x.0 != id);
            self.rejoins.retain(|r| r.remote.0 != id);
            self.peer_removed_first |= id == 0;
            for j in 0..self.subflows.len() {
                let sf = &self.subflows[j];
                // ID 0 is the peer's first address: its subflows go too, as Linux does.
                if sf.remote_id == id && sf.state != SubflowState::Closed {
                    self.reset_subflow(ep, j, 0);
                }
            }
        }
    }

    /// `ADD_ADDR` (§3.4.1): an announcement with a good HMAC is echoed and its address kept
    /// for the path manager; an echo ends the retransmission of our announcement.
    fn on_add_addr(&mut self, ep: &mut Endpoint, i: usize, a: &AddAddr) {
        let port = a
            .port
            .or_else(|| self.subflows.get(i).map(|s| s.remote.port()))
            .unwrap_or(0);
        let addr = SocketAddr::new(a.address, port);
        match a.form {
            AddAddrForm::Echo => {
                self.announced.retain(|x| x.id != a.address_id);
            }
            AddAddrForm::Announce { hmac } => {
                let Some(remote_key) = self.remote_key else {
                    return;
                };
                let want = crypto::add_addr_hmac(
                    remote_key,
                    self.local_key,
                    a.address_id,
                    a.address,
                    a.port,
                );
                if want != hmac {
                    self.stats.bad_add_addr += 1;
                    return;
                }
                self.signal(
                    ep,
                    Signal::Echo {
                        id: a.address_id,
                        addr: SocketAddr::new(a.address, a.port.unwrap_or(0)),
                    },
                );
                if !self.remote_addrs.iter().any(|x| x.0 == a.address_id) {
                    self.remote_addrs.push((a.address_id, addr, false));
                    self.events.push_back(ConnEvent::AddressAdded { addr });
                }
            }
            AddAddrForm::V0 => {}
        }
    }

    fn on_mp_capable(
        &mut self,
        i: usize,
        seg: &TcpRepr<'_>,
        mpc: &MpCapable,
        payload_at: Option<u64>,
    ) {
        if !mpc.is_usable() {
            return;
        }
        if mpc.flags.checksum_required() {
            self.checksums = true;
        }
        if seg.flags.contains(TcpFlags::SYN) {
            if self.role == Role::Client {
                if let Some(k) = mpc.sender_key() {
                    self.set_remote_key(k);
                    self.peer_no_join_to_source = mpc.flags.no_new_subflows_to_source();
                }
            }
            return;
        }
        if self.role == Role::Server && self.subflows.get(i).is_some_and(|s| s.initial) {
            // The third ACK (or the first data) with both keys; ours must be the one we sent.
            if mpc.receiver_key() == Some(self.local_key) || self.remote_key.is_none() {
                if let Some(k) = mpc.sender_key() {
                    if self.remote_key.is_none() {
                        self.set_remote_key(k);
                        if let Some(sf) = self.subflows.get_mut(i) {
                            for (fin, m, at) in std::mem::take(&mut sf.early_maps) {
                                self.pending_maps.push((i, fin, m, at));
                            }
                        }
                    }
                }
            }
            let prefix = self.recv_prefix(i);
            if let (
                MpCapableKeys::WithData {
                    data_len, checksum, ..
                },
                Some(at),
            ) = (mpc.keys, payload_at)
            {
                if at != prefix {
                    return;
                }
                // The first data: DSN IDSN + 1, subflow sequence number 1 (§3.1), after
                // what the SYN carried (appendix B).
                let m = RecvMapping {
                    sf_off: prefix,
                    data_off: prefix,
                    len: u64::from(data_len),
                    checksum,
                    dsn: self.remote_idsn.wrapping_add(1),
                    ssn: 1,
                    data_len,
                };
                let _ = self.subflows[i].recv_maps.insert(m);
            }
        }
    }

    fn on_mp_join(&mut self, now: Instant, ep: &mut Endpoint, i: usize, j: &MpJoin) {
        let nodelay = self.nodelay;
        let Some(remote_key) = self.remote_key else {
            return;
        };
        let local_key = self.local_key;
        let Some(sf) = self.subflows.get_mut(i) else {
            return;
        };
        let mut bad_hmac = false;
        match *j {
            MpJoin::SynAck {
                backup,
                address_id,
                hmac,
                nonce,
            } if sf.state == SubflowState::Handshake && !sf.initial => {
                sf.remote_nonce = nonce;
                sf.remote_id = address_id;
                sf.peer_backup = backup;
                let want =
                    crypto::join_truncated_hmac(remote_key, local_key, nonce, sf.local_nonce);
                if want == hmac {
                    sf.state = SubflowState::JoinAckPending;
                    sf.join_rtx_at = Some(now + self.cfg.initial_rto);
                } else {
                    bad_hmac = true;
                }
            }
            MpJoin::Ack { .. } if sf.state == SubflowState::Active && !sf.initial => {
                // The initiator did not get our fourth ACK: again (§3.2).
                if let Some(c) = ep.conn_mut(sf.handle) {
                    c.request_ack();
                }
            }
            MpJoin::Ack { hmac } if sf.state == SubflowState::Handshake && !sf.initial => {
                let want =
                    crypto::join_hmac_160(remote_key, local_key, sf.remote_nonce, sf.local_nonce);
                if want == hmac {
                    sf.state = SubflowState::Active;
                    if let Some(c) = ep.conn_mut(sf.handle) {
                        c.set_option_space(OPTION_SPACE);
                        c.set_nagle(!nodelay);
                        // The fourth ACK (§3.2).
                        c.request_ack();
                    }
                    let (local, remote) = (sf.local, sf.remote);
                    self.events
                        .push_back(ConnEvent::SubflowUp { local, remote });
                    self.orphan = None;
                } else {
                    bad_hmac = true;
                }
            }
            _ => {}
        }
        if bad_hmac {
            // §3.2: a join whose HMAC is wrong is reset (MPTCP-specific error).
            self.reset_subflow(ep, i, 1);
        }
    }

    fn on_dss(
        &mut self,
        now: Instant,
        ep: &mut Endpoint,
        i: usize,
        seg: &TcpRepr<'_>,
        dss: &Dss,
        payload_at: Option<u64>,
    ) {
        let nodelay = self.nodelay;
        // A DSS on a join initiator's subflow is the fourth ACK's sign: the peer took it.
        if let Some(sf) = self.subflows.get_mut(i) {
            if sf.state == SubflowState::JoinAckPending {
                sf.state = SubflowState::Active;
                sf.join_rtx_at = None;
                if let Some(c) = ep.conn_mut(sf.handle) {
                    c.set_option_space(OPTION_SPACE);
                    c.set_nagle(!nodelay);
                }
                let (local, remote) = (sf.local, sf.remote);
                self.events
                    .push_back(ConnEvent::SubflowUp { local, remote });
                self.orphan = None;
                // Signals that waited for a working subflow (a withdrawal) go now.
                self.signals_left |= !self.signals.is_empty();
            }
        }
        if let Some(ack) = dss.data_ack {
            self.on_data_ack(now, ep, i, seg, ack);
        }
        if let Some(m) = dss.mapping {
            if self.remote_key.is_none() {
                // Its DSN is relative to a key not known yet: kept until it comes (§3.1).
                if let Some(sf) = self.subflows.get_mut(i) {
                    if sf.early_maps.len() < 64 {
                        sf.early_maps.push((dss.data_fin, m, payload_at));
                    }
                }
                return;
            }
            self.on_mapping(ep, i, dss.data_fin, m, payload_at);
        }
    }

    fn on_data_ack(
        &mut self,
        now: Instant,
        ep: &Endpoint,
        i: usize,
        seg: &TcpRepr<'_>,
        ack: DataSeqField,
    ) {
        let base = self
            .local_idsn
            .wrapping_add(1)
            .wrapping_sub(self.local_prefix);
        let full = match ack {
            DataSeqField::Long(v) => v,
            DataSeqField::Short(v) => expand32(v, base.wrapping_add(self.snd_una)),
        };
        let off = full.wrapping_sub(base);
        let fin_sent_end = self.send.end() + u64::from(self.fin_sent);
        if off > fin_sent_end.max(self.snd_nxt) || off < self.snd_una.saturating_sub(1 << 31) {
            return; // acknowledges what was never sent, or far behind: ignore
        }
        if off > self.snd_una {
            let acked_data = off.min(self.send.end());
            self.stats.bytes_acked += acked_data.saturating_sub(self.snd_una.min(self.send.end()));
            self.snd_una = off;
            self.send.ack_to(acked_data);
            self.snd_nxt = self.snd_nxt.max(acked_data);
            self.fin_rto = self.cfg.initial_rto;
            if self.write_blocked && self.send.free() > 0 {
                self.write_blocked = false;
                self.events.push_back(ConnEvent::Writable);
            }
            if self.fin_sent && off > self.send.end() {
                self.fin_rtx_at = None;
            }
        }
        // The connection-level window: right edge DATA_ACK + window (§3.3.4).
        let shift = self
            .subflows
            .get(i)
            .and_then(|sf| ep.conn(sf.handle))
            .and_then(|c| c.negotiated().2)
            .map_or(0, |w| w.0);
        let wnd = if seg.flags.contains(TcpFlags::SYN) {
            u64::from(seg.window_len)
        } else {
            u64::from(seg.window_len) << shift
        };
        self.snd_edge = self.snd_edge.max(off + wnd);
        let _ = now;
    }

    fn on_mapping(
        &mut self,
        ep: &mut Endpoint,
        i: usize,
        data_fin: bool,
        m: DssMapping,
        payload_at: Option<u64>,
    ) {
        let base = self
            .remote_idsn
            .wrapping_add(1)
            .wrapping_sub(self.peer_prefix);
        let dsn = match m.dsn {
            DataSeqField::Long(v) => v,
            DataSeqField::Short(v) => expand32(v, base.wrapping_add(self.recv.next())),
        };
        let data_off = dsn.wrapping_sub(base);
        if data_off > self.recv.next() + (1 << 40) {
            return; // behind the stream, or absurdly far ahead
        }
        if m.data_len == 0 {
            // An infinite mapping (§3.7) maps the data it comes with: on a segment without
            // (new) data it maps nothing and is ignored, as Linux ignores it.
            if payload_at.is_none() {
                return;
            }
            // The peer fell back on this subflow.
            if !self.fall_back(ep, FallbackCause::InfiniteMapping) {
                self.reset_subflow(ep, i, 6);
            }
            return;
        }
        let len = u64::from(m.data_len) - u64::from(data_fin);
        if data_fin {
            let fin_at = data_off + len;
            if self.peer_fin.is_none_or(|f| f == fin_at) {
                self.peer_fin = Some(fin_at);
            }
        }
        if len == 0 {
            return; // a DATA_FIN on its own (subflow sequence number 0)
        }
        let prefix = self.recv_prefix(i);
        let Some(sf) = self.subflows.get_mut(i) else {
            return;
        };
        let sf_off = expand32(m.ssn.wrapping_sub(1), sf.read.saturating_sub(prefix)) + prefix;
        // A mapping counts only with data of its own that the subflow takes, and only if it
        // covers that data's first byte (§3.3.1): one that came with data the subflow
        // dropped, or that points elsewhere, could map bytes it never carried.
        if !payload_at.is_some_and(|at| sf_off <= at && at < sf_off + len) {
            return;
        }
        let r = sf.recv_maps.insert(RecvMapping {
            sf_off,
            data_off,
            len,
            checksum: m.checksum,
            dsn,
            ssn: m.ssn,
            data_len: m.data_len,
        });
        if r == Err(MappingError::Conflict) {
            self.stats.mapping_conflicts += 1;
        }
    }

    /// Falls back to plain TCP on the first subflow (§3.7): possible while it is the only
    /// subflow and its bytes are the data stream itself in both directions (no data of
    /// another subflow was sent on it, none is missing before what it received). Returns
    /// whether it did.
    fn fall_back(&mut self, ep: &mut Endpoint, cause: FallbackCause) -> bool {
        if self.fallen_back {
            return true;
        }
        let was_connecting = self.state == ConnState::Connecting;
        let live = self
            .subflows
            .iter()
            .filter(|s| s.state != SubflowState::Closed)
            .count();
        let Some(sf) = self.subflows.first() else {
            return false;
        };
        let in_step = sf.contiguous
            && sf.written == self.snd_nxt
            && sf.read == self.recv.next()
            && self.recv.held() == 0
            && sf.pending.is_empty();
        if live > 1 || !sf.initial || sf.state == SubflowState::Closed || !in_step {
            return false;
        }
        self.state = ConnState::Fallback;
        self.fallen_back = true;
        self.fallback_cause = Some(cause);
        let h = sf.handle;
        // The data-level buffer now only stages what the subflow has not taken yet: bytes the
        // subflow has are its to deliver (as plain TCP), what the peer acknowledged at data
        // level is gone.
        self.send.ack_to(self.snd_nxt.max(self.send.start()));
        if let Some(c) = ep.conn_mut(h) {
            c.set_shared_window(None);
            // No MPTCP option goes out any more: full segments again.
            c.set_option_space(0);
        }
        self.flush_fallback(ep);
        self.subflows[0].state = SubflowState::Active;
        self.events.push_back(ConnEvent::Fallback);
        if was_connecting {
            self.events.push_back(ConnEvent::Connected);
        }
        if self.recv.readable() > 0 || ep.conn(h).is_some_and(|c| c.readable() > 0) {
            self.events.push_back(ConnEvent::Readable);
        }
        true
    }

    /// After a fall back: staged bytes go into the subflow as it takes them, and then the FIN.
    fn flush_fallback(&mut self, ep: &mut Endpoint) {
        let Some(c) = ep.conn_mut(self.subflows[0].handle) else {
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        while !self.send.is_empty() {
            let n = self.send.read_at(self.send.start(), &mut buf);
            match c.write(&buf[..n]) {
                Ok(w) if w > 0 => self.send.ack_to(self.send.start() + w as u64),
                _ => break,
            }
        }
        if self.send.is_empty() && self.fin_queued {
            c.close();
        }
        if self.write_blocked && self.send.free() > 0 && c.send_capacity_left() > 0 {
            self.write_blocked = false;
            self.events.push_back(ConnEvent::Writable);
        }
    }

    // --- moving bytes --------------------------------------------------------------------

    /// Reads what subflows received in order into the data-level buffer, by their mappings.
    pub fn drain(&mut self, ep: &mut Endpoint) {
        if !self.is_mptcp() {
            return;
        }
        let before = self.recv.readable();
        let mut buf = std::mem::take(&mut self.rx_scratch);
        buf.resize(16 * 1024, 0);
        for i in 0..self.subflows.len() {
            loop {
                let sf = &mut self.subflows[i];
                if sf.state == SubflowState::Closed && ep.conn(sf.handle).is_none() {
                    break;
                }
                let Some(c) = ep.conn(sf.handle) else { break };
                let readable = c.readable() as u64;
                if readable == 0 {
                    break;
                }
                let Some(m) = sf.recv_maps.covering(sf.read) else {
                    // Bytes without a mapping: the options were stripped (§3.7).
                    self.on_unmapped(ep, i);
                    break;
                };
                let into = sf.read - m.sf_off;
                let data_off = m.data_off + into;
                let in_map = m.len - into;
                let room = if self.checksums {
                    in_map
                } else {
                    (self.recv.next() + self.recv.capacity() as u64).saturating_sub(data_off)
                };
                let n = readable.min(in_map).min(room);
                if n == 0 {
                    break;
                }
                let handle = sf.handle;
                if !self.checksums {
                    // In place: from the subflow's buffer straight into the data level's.
                    let Some(c) = ep.conn_mut(handle) else { break };
                    #[expect(clippy::cast_possible_truncation, reason = "at most `readable`")]
                    let n = n as usize;
                    let (head, tail) = c.peek();
                    let k = n.min(head.len());
                    self.insert(data_off, &head[..k]);
                    if n > k {
                        self.insert(data_off + k as u64, &tail[..n - k]);
                    }
                    c.consume(n);
                    let sf = &mut self.subflows[i];
                    sf.read += n as u64;
                    sf.bytes_received += n as u64;
                    sf.recv_maps.prune(sf.read);
                    continue;
                }
                #[expect(clippy::cast_possible_truncation, reason = "at most the buffer")]
                let n = n.min(buf.len() as u64) as usize;
                let got = ep
                    .conn_mut(handle)
                    .and_then(|c| c.read(&mut buf[..n]).ok())
                    .unwrap_or(0);
                if got == 0 {
                    break;
                }
                sf.read += got as u64;
                sf.bytes_received += got as u64;
                sf.pending.extend_from_slice(&buf[..got]);
                if sf.pending.len() as u64 == m.len {
                    let pending = std::mem::take(&mut sf.pending);
                    let ok = m.checksum.is_none_or(|c| {
                        crypto::dss_checksum(m.dsn, m.ssn, m.data_len, &pending) == c
                    });
                    if ok {
                        self.insert(m.data_off, &pending);
                    } else {
                        self.on_checksum_failure(ep, i, m.dsn);
                        break;
                    }
                }
                let sf = &mut self.subflows[i];
                sf.recv_maps.prune(sf.read);
            }
        }
        self.rx_scratch = buf;
        if let Some(fin) = self.peer_fin {
            if !self.peer_fin_seen_in_order && self.recv.next() == fin {
                self.peer_fin_seen_in_order = true;
                self.ack_all(ep);
            }
        }
        if (self.recv.readable() > before || self.peer_fin_seen_in_order)
            && !self.readable_signalled
        {
            self.readable_signalled = true;
            self.events.push_back(ConnEvent::Readable);
        }
    }

    fn insert(&mut self, data_off: u64, bytes: &[u8]) {
        let r = self.recv.insert(data_off, bytes);
        if r.duplicate {
            self.stats.duplicate_bytes += bytes.len() as u64;
        }
        self.stats.peak_out_of_order = self.stats.peak_out_of_order.max(self.recv.held() as u64);
    }

    fn on_unmapped(&mut self, ep: &mut Endpoint, i: usize) {
        let alone = self
            .subflows
            .iter()
            .filter(|s| s.state != SubflowState::Closed)
            .count()
            == 1;
        // Data without a mapping: a middlebox strips the options. The only subflow falls
        // back to TCP (an implied infinite mapping, §3.7); another one is reset.
        if !(alone && self.fall_back(ep, FallbackCause::UnmappedData)) {
            self.reset_subflow(ep, i, 6);
        }
    }

    /// The mapping at `dsn` that subflow `i` carried failed its checksum (§3.7): its bytes
    /// are dropped and the subflow is reset with `MP_FAIL` (the mapping's data sequence
    /// number) and `MP_TCPRST` (middlebox interference), as Linux does; the peer sends the
    /// data again on another subflow, or on a new one when this was the only one. (The
    /// single-subflow fall back to TCP by an infinite mapping is not done: the data would
    /// have to be resent on the same subflow from `dsn` on.)
    fn on_checksum_failure(&mut self, ep: &mut Endpoint, i: usize, dsn: u64) {
        self.stats.checksum_failures += 1;
        self.subflows[i].fail_dsn = Some(dsn);
        self.reset_subflow(ep, i, 6);
    }

    pub fn reset_subflow(&mut self, ep: &mut Endpoint, i: usize, reason: u8) {
        let sf = &mut self.subflows[i];
        sf.reset_reason = Some(MpTcpRst { flags: 0, reason });
        if let Some(c) = ep.conn_mut(sf.handle) {
            c.abort();
        }
        self.on_subflow_closed(ep, i, CloseReason::Aborted);
    }

    /// Asks every live subflow for an ACK (a `DATA_ACK` the peer is waiting for).
    fn ack_all(&self, ep: &mut Endpoint) {
        for sf in self
            .subflows
            .iter()
            .filter(|s| s.state == SubflowState::Active)
        {
            if let Some(c) = ep.conn_mut(sf.handle) {
                c.request_ack();
            }
        }
    }

    /// Advertises the data-level window on every subflow (§3.3.4).
    pub fn update_windows(&self, ep: &mut Endpoint) {
        if !self.is_mptcp() {
            return;
        }
        let free = self.recv.window() as u64;
        for sf in self
            .subflows
            .iter()
            .filter(|s| s.state == SubflowState::Active)
        {
            if let Some(c) = ep.conn_mut(sf.handle) {
                c.set_shared_window(Some(free));
            }
        }
    }

    /// A subflow ended: what it had in flight goes to the others.
    pub fn on_subflow_closed(&mut self, ep: &mut Endpoint, i: usize, reason: CloseReason) {
        let Some(sf) = self.subflows.get_mut(i) else {
            return;
        };
        let was_active = sf.state == SubflowState::Active;
        let join_refused =
            !sf.initial && sf.state == SubflowState::Handshake && reason == CloseReason::Refused;
        sf.state = SubflowState::Closed;
        let (local, remote) = (sf.local, sf.remote);
        if let Some(o) = self.orphan.filter(|_| join_refused) {
            // A join of a connection without subflows was reset: the peer no longer knows
            // the connection (it was restarted, or gave up on it). Waiting longer is pointless.
            self.finish(o.reason);
        }
        self.reinject_from(i);
        if self.fin_on == Some(i) {
            self.fin_on = None;
        }
        if was_active {
            self.events
                .push_back(ConnEvent::SubflowDown { local, remote });
        }
        if matches!(self.state, ConnState::Closed(_)) {
            return;
        }
        let live = self
            .subflows
            .iter()
            .any(|s| s.state != SubflowState::Closed);
        if live {
            // A join the peer refused stays refused (its limits, its policy): only a line
            // that comes back tries again.
            if self.role == Role::Client && !self.fallen_back && !join_refused {
                let sf = &self.subflows[i];
                let lasted = self.clock.map_or(Duration::ZERO, |now| {
                    now.saturating_duration_since(sf.started)
                });
                self.plan_rejoin(local.ip(), (sf.remote_id, remote), was_active, lasted);
            }
            return;
        }
        let finished =
            self.fin_queued && self.snd_una > self.send.end() && self.peer_fin_seen_in_order;
        if self.fallen_back || finished || self.state == ConnState::Connecting {
            let r = if self.fallen_back {
                ep.conn(self.subflows[0].handle)
                    .and_then(crate::tcp::Connection::close_reason)
                    .unwrap_or(reason)
            } else if finished {
                CloseReason::Finished
            } else {
                reason
            };
            self.finish(r);
        } else if let Some(now) = self
            .clock
            .filter(|_| !self.cfg.no_subflow_timeout.is_zero())
        {
            // Every subflow is gone, the connection is not: it waits for a new one (the
            // client joins again, the server takes a join), as Linux keeps an MPTCP socket
            // whose subflows were reset. Its data waits meanwhile.
            self.orphan = Some(Orphan {
                reason,
                deadline: now + self.cfg.no_subflow_timeout,
                rejoin_at: now,
                backoff: Duration::from_secs(1),
            });
        } else {
            self.finish(reason);
        }
    }

    /// Client: subflow `local` → `remote` ended while others carry the connection: it is made
    /// again after a backoff ([`Rejoin`]).
    fn plan_rejoin(
        &mut self,
        local: core::net::IpAddr,
        remote: (u8, SocketAddr),
        established: bool,
        lasted: Duration,
    ) {
        let Some(now) = self.clock else {
            return;
        };
        let calm = established && lasted >= REJOIN_CALM;
        match self
            .rejoins
            .iter_mut()
            .find(|r| r.local == local && r.remote.1 == remote.1)
        {
            Some(r) => {
                r.backoff = if calm {
                    REJOIN_FIRST
                } else {
                    (r.backoff * 2).min(REJOIN_MAX)
                };
                r.remote = remote;
                r.at = Some(now + r.backoff);
            }
            None => self.rejoins.push(Rejoin {
                local,
                remote,
                at: Some(now + REJOIN_FIRST),
                backoff: REJOIN_FIRST,
            }),
        }
    }

    /// Client: the subflows due to be made again now (their wait ends; a later end starts the
    /// next one). The peer's addresses it withdrew meanwhile are left out.
    pub fn rejoins_due(&mut self, now: Instant) -> Vec<(core::net::IpAddr, (u8, SocketAddr))> {
        let mut due = Vec::new();
        for r in &mut self.rejoins {
            if r.at.is_some_and(|t| t <= now) {
                r.at = None;
                due.push((r.local, r.remote));
            }
        }
        let known = |rid: u8, addr: SocketAddr| {
            (rid == 0 && !self.peer_removed_first)
                || self.remote_addrs.iter().any(|x| x.0 == rid && x.1 == addr)
        };
        due.retain(|(_, (rid, addr))| known(*rid, *addr));
        due
    }

    /// Forgets the subflows waiting to be made again from `local` (its line went down, or
    /// came back and was joined at once).
    pub fn forget_rejoins(&mut self, local: core::net::IpAddr) {
        self.rejoins.retain(|r| r.local != local);
    }

    /// Notes the time (for what happens where no `now` is passed).
    pub fn tick(&mut self, now: Instant) {
        self.clock = Some(now);
    }

    /// Client without a subflow: whether to open joins now (then not again before a backoff
    /// that doubles up to 8 s).
    pub fn rejoin_due(&mut self, now: Instant) -> bool {
        if self.role != Role::Client {
            return false;
        }
        match &mut self.orphan {
            Some(o) if o.rejoin_at <= now => {
                o.rejoin_at = now + o.backoff;
                o.backoff = (o.backoff * 2).min(Duration::from_secs(8));
                true
            }
            _ => false,
        }
    }

    /// Queues the data subflow `i` sent and the peer has not acknowledged at data level for
    /// another subflow (§3.3.6).
    fn reinject_from(&mut self, i: usize) {
        let una = self.snd_una;
        let sf = &mut self.subflows[i];
        for m in sf.send_maps.iter_mut() {
            if m.reinjected || m.data_end() <= una {
                continue;
            }
            m.reinjected = true;
            let start = m.data_off.max(una);
            self.reinject.push_back(Reinjection {
                start,
                end: m.data_end(),
                from: i,
                only_faster: false,
            });
        }
    }

    #[expect(
        clippy::too_many_lines,
        reason = "reinjections, new data and the DATA_FIN share one pass over the subflows"
    )]
    /// Hands subflows the data they have room for, one mapping per run of bytes; sends the
    /// `DATA_FIN` once everything is out; spots stalled subflows.
    pub fn schedule(&mut self, now: Instant, ep: &mut Endpoint) {
        if self.fallen_back {
            self.flush_fallback(ep);
            return;
        }
        if self.early_send() {
            self.schedule_early(ep);
            return;
        }
        if self.state != ConnState::Established {
            return;
        }
        self.check_stalls(ep);
        self.note_dss_arrivals(ep);
        self.cap_stalled_timeouts(ep);
        self.reinject_head_of_line(ep);
        let mut buf = std::mem::take(&mut self.scratch);
        self.send_copies(ep, &mut buf);
        loop {
            // Reinjections first (to the lowest RTT but the subflow that lost them), then new
            // data (where the scheduler says).
            let (start, end, from) = if let Some(&r) = self.reinject.front() {
                let s = r.start.max(self.snd_una);
                if s >= r.end {
                    self.reinject.pop_front();
                    continue;
                }
                (s, r.end, Some(r))
            } else {
                let end = self.send.end().min(self.snd_edge.max(self.snd_una + 1));
                if self.snd_nxt >= end {
                    break;
                }
                (self.snd_nxt, end, None)
            };
            let picked = match from {
                Some(r) if r.only_faster => {
                    let faster = self.pick_faster(ep, r.from);
                    if faster.is_none() {
                        // Only copies: the slower lines still carry these bytes. No faster
                        // line takes them now, so they go, lest they hold up what is queued
                        // behind them (a dead subflow's data, new bytes); a later round may
                        // queue them again.
                        self.hol_reinjected = self.hol_reinjected.min(start);
                        self.reinject.retain(|q| !q.only_faster);
                        continue;
                    }
                    faster
                }
                Some(r) => self.pick_lowest_rtt(ep, Some(r.from)),
                None => self.pick_new(ep),
            };
            let Some((i, room)) = picked else {
                break;
            };
            match self.hand_out(ep, i, start, (end - start).min(room), &mut buf) {
                Handed::Wrote(w) => {
                    if from.is_some() {
                        self.stats.bytes_reinjected += w;
                        if let Some(front) = self.reinject.front_mut() {
                            front.start = start + w;
                        }
                    } else {
                        self.snd_nxt = start + w;
                        self.copy_to_others(i, start, start + w);
                    }
                }
                // A reinjection acknowledged meanwhile.
                Handed::Gone if from.is_some() => {
                    self.reinject.pop_front();
                }
                Handed::Gone | Handed::Full => break,
            }
        }
        self.send_copies(ep, &mut buf);
        self.scratch = buf;
        // The `DATA_FIN`, once every byte was handed out (§3.3.3), and once the joins just
        // opened are through their handshakes: Linux refuses joins to a connection the peer
        // has half-closed, so a client that sends nothing would otherwise never get its
        // second line for a download.
        let joins_to_come = self.expect_joins && !self.fully_established;
        self.fin_hold_until = self
            .subflows
            .iter()
            .filter(|s| {
                (s.initial && joins_to_come)
                    || (!s.initial
                        && matches!(
                            s.state,
                            SubflowState::Handshake | SubflowState::JoinAckPending
                        ))
            })
            .map(|s| s.started + JOIN_HOLDS_DATA_FIN)
            .filter(|t| *t > now)
            .min()
            .filter(|_| self.fin_queued && !self.fin_sent);
        let joining = self.fin_hold_until.is_some();
        if self.fin_queued
            && !joining
            && self.snd_nxt == self.send.end()
            && self.snd_una <= self.send.end()
        {
            let due = !self.fin_sent || self.fin_rtx_at.is_some_and(|t| now >= t);
            if due {
                if self.fin_sent {
                    // Sent again on the next live subflow: a DATA_FIN rides on a pure ACK,
                    // which TCP does not retransmit, so a subflow whose line died silently
                    // (nothing else outstanding on it) would never notice and take every try.
                    self.fin_on = self.next_live_after(self.fin_on);
                } else if self.fin_on.is_none_or(|i| {
                    self.subflows
                        .get(i)
                        .is_none_or(|s| s.state != SubflowState::Active)
                }) {
                    self.fin_on = self.pick_lowest_rtt(ep, None).map(|(i, _)| i).or_else(|| {
                        self.subflows
                            .iter()
                            .position(|s| s.state == SubflowState::Active)
                    });
                }
                if self.fin_sent {
                    self.fin_rto = (self.fin_rto * 2).min(Duration::from_secs(30));
                    self.fin_rtx_at = Some(now + self.fin_rto);
                }
                if let Some(i) = self.fin_on {
                    if let Some(c) = ep.conn_mut(self.subflows[i].handle) {
                        c.request_pure_ack();
                    }
                }
            }
        }
        // Both DATA_FINs are through: the connection is done and its subflows close
        // (§3.3.3).
        if self.fin_queued && self.snd_una > self.send.end() && self.peer_fin_seen_in_order {
            self.finish(CloseReason::Finished);
            for sf in &self.subflows {
                if sf.state != SubflowState::Closed {
                    if let Some(c) = ep.conn_mut(sf.handle) {
                        c.close();
                    }
                }
            }
        }
    }

    /// Writes up to `n` bytes from data offset `start` into subflow `i` as one mapping (fewer
    /// if the subflow takes fewer, or the first data of a client still needs `MP_CAPABLE`).
    fn hand_out(
        &mut self,
        ep: &mut Endpoint,
        i: usize,
        start: u64,
        n: u64,
        buf: &mut Vec<u8>,
    ) -> Handed {
        let mss = ep
            .conn(self.subflows[i].handle)
            .map_or(1400, |c| c.send_mss().max(1));
        let mut cap = MAX_MAPPING;
        if self.role == Role::Client && !self.fully_established && self.subflows[i].initial {
            cap = mss; // the first data rides with MP_CAPABLE: one segment's worth
        }
        let n = n.min(cap);
        if n == 0 {
            return Handed::Full;
        }
        #[expect(clippy::cast_possible_truncation, reason = "at most one mapping")]
        let n = n as usize;
        // What a checksum sums besides the bytes: the mapping's DSN and relative SSN.
        let (dsn, ssn) = (self.dsn(start), self.send_ssn(i, self.subflows[i].written));
        let sf = &mut self.subflows[i];
        let (first, second) = self.send.slices_at(start, n);
        if first.is_empty() {
            return Handed::Gone;
        }
        let Some(c) = ep.conn_mut(sf.handle) else {
            return Handed::Full;
        };
        // New bytes that follow a mapping none of whose bytes went yet join it: a mapping per
        // write would end a segment at each write's end, since no segment straddles two
        // mappings. (Not with checksums, which sum a mapping whole, nor for the client's first
        // data, which rides with MP_CAPABLE.)
        let unsent = c.sent_to();
        let joinable = !self.checksums && cap == MAX_MAPPING;
        // The bytes go from the connection's buffer to the subflow's in place; with
        // checksums they are gathered first, to sum what the subflow took.
        let (w, checksum) = if self.checksums {
            let got = first.len() + second.len();
            if buf.len() < got {
                buf.resize(got, 0);
            }
            buf[..first.len()].copy_from_slice(first);
            buf[first.len()..got].copy_from_slice(second);
            let Ok(w) = c.write(&buf[..got]) else {
                return Handed::Full;
            };
            let sum =
                crypto::dss_checksum(dsn, ssn, u16::try_from(w).unwrap_or(u16::MAX), &buf[..w]);
            (w, Some(sum))
        } else {
            let Ok(w) = c.write(first) else {
                return Handed::Full;
            };
            let more = if w == first.len() && !second.is_empty() {
                c.write(second).unwrap_or(0)
            } else {
                0
            };
            (w + more, None)
        };
        if w == 0 {
            return Handed::Full;
        }
        sf.contiguous &= sf.written == start;
        let w64 = w as u64;
        if let Some(last) = sf.send_maps.last_mut().filter(|m| {
            joinable
                && m.sf_end() == sf.written
                && m.data_end() == start
                && m.sf_off >= unsent
                && !m.reinjected
                && m.len + w64 <= MAX_MAPPING
        }) {
            last.len += w64;
            last.run |= last.len > c.send_mss();
            sf.written += w64;
            sf.bytes_sent += w64;
            return Handed::Wrote(w64);
        }
        sf.send_maps.push(SendMapping {
            sf_off: sf.written,
            data_off: start,
            len: w as u64,
            checksum,
            reinjected: false,
            run: w64 > c.send_mss(),
        });
        sf.written += w as u64;
        sf.bytes_sent += w as u64;
        Handed::Wrote(w as u64)
    }

    /// A server whose client's SYN carried data it took (TCP Fast Open) answers before the
    /// handshake's last ACK brings the client's key (RFC 7413 §4.2.2, RFC 8684 appendix B):
    /// on the initial subflow, mapped, without a `DATA_ACK` until the key comes; only with
    /// [`ConnConfig::early_answer`].
    fn early_send(&self) -> bool {
        self.cfg.early_answer
            && self.role == Role::Server
            && self.state == ConnState::Connecting
            && self.peer_prefix > 0
            && self.remote_key.is_none()
    }

    /// [`MpConn::schedule`] before the handshake ended ([`MpConn::early_send`]): new bytes to
    /// the initial subflow as far as its window has room ([`room_of`]), not its whole send
    /// buffer: what it holds beyond, the subflows that join later could carry.
    fn schedule_early(&mut self, ep: &mut Endpoint) {
        let mut buf = std::mem::take(&mut self.scratch);
        while self.snd_nxt < self.send.end() {
            let room = self
                .subflows
                .first()
                .and_then(|s| ep.conn(s.handle))
                .map_or(0, |c| room_of(c, None));
            if room == 0 {
                break;
            }
            let n = (self.send.end() - self.snd_nxt).min(room);
            match self.hand_out(ep, 0, self.snd_nxt, n, &mut buf) {
                Handed::Wrote(w) => self.snd_nxt += w,
                Handed::Full | Handed::Gone => break,
            }
        }
        self.scratch = buf;
    }

    /// With a redundant scheduler: the new bytes `start..end` just handed to subflow `i` go
    /// to every other subflow that may carry data too.
    fn copy_to_others(&mut self, i: usize, start: u64, end: u64) {
        if !self.scheduler.redundant() {
            return;
        }
        let usable = self.usable_class();
        for (j, s) in self.subflows.iter().enumerate() {
            if j != i && usable(s) {
                self.copies.push_back((start, end, j));
            }
        }
    }

    /// Sends what [`Self::copy_to_others`] queued, as far as each subflow has room; copies the
    /// peer acknowledged meanwhile, or whose subflow stopped working, are dropped.
    fn send_copies(&mut self, ep: &mut Endpoint, buf: &mut Vec<u8>) {
        let mut next = 0;
        while next < self.copies.len() {
            let (from, to, sf) = self.copies[next];
            let from = from.max(self.snd_una);
            let usable = self.usable_class();
            if from >= to || !self.subflows.get(sf).is_some_and(usable) {
                self.copies.remove(next);
                continue;
            }
            let room = self
                .candidates(ep)
                .iter()
                .find(|c| c.index == sf)
                .map_or(0, |c| c.room);
            match self.hand_out(ep, sf, from, (to - from).min(room), buf) {
                Handed::Wrote(w) => {
                    self.stats.bytes_redundant += w;
                    if from + w >= to {
                        self.copies.remove(next);
                    } else {
                        self.copies[next].0 = from + w;
                        next += 1;
                    }
                }
                Handed::Gone => {
                    self.copies.remove(next);
                }
                Handed::Full => next += 1,
            }
        }
    }

    /// Queues for a faster subflow the bytes the peer waits for next when the scheduler asks for
    /// it, nothing new can be handed out (all sent, or the peer's window is full), and only
    /// slower subflows hold those bytes: from `snd_una` on, every run of bytes that only slower
    /// subflows hold, as much as the faster one has room for (the tail of a transfer then
    /// arrives within one of its round trips instead of one mapping per round trip); each byte
    /// once, and only into room that would stay idle.
    fn reinject_head_of_line(&mut self, ep: &Endpoint) {
        let una = self.snd_una;
        let new_data = self.snd_nxt < self.send.end().min(self.snd_edge.max(una + 1));
        if !self.scheduler.reinjects_head_of_line()
            || new_data
            || !self.reinject.is_empty()
            || self.hol_reinjected.max(una) >= self.snd_nxt
        {
            return;
        }
        // The fastest subflow, if it has room now.
        let Some(fast) = self
            .candidates(ep)
            .into_iter()
            .min_by_key(|c| c.srtt)
            .filter(|c| c.room > 0)
        else {
            return;
        };
        // The working subflows and their RTTs (what a stalled or closed one holds goes again
        // as an ordinary reinjection).
        let working: ArrayVec<(usize, Duration), 16> = self
            .subflows
            .iter()
            .enumerate()
            .filter(|(_, sf)| sf.state == SubflowState::Active && !sf.stale)
            .map(|(i, sf)| {
                let rtt = ep
                    .conn(sf.handle)
                    .and_then(crate::tcp::Connection::srtt)
                    .unwrap_or(Duration::from_millis(100));
                (i, rtt)
            })
            .take(16)
            .collect();
        let mut budget = fast.room;
        let mut at = una.max(self.hol_reinjected);
        // A bound on the mappings looked at per call: the rest waits for the next round.
        let mut steps = 0;
        while at < self.snd_nxt && budget > 0 && steps < HOL_STEPS {
            steps += 1;
            // The fastest working subflow holding the byte at `at`, and where its mapping ends.
            let mut holder: Option<(Duration, usize, u64)> = None;
            for &(i, rtt) in &working {
                let Some(m) = self.subflows[i]
                    .send_maps
                    .iter()
                    .find(|m| m.data_off <= at && at < m.data_end())
                else {
                    continue;
                };
                if holder.is_none_or(|h| rtt < h.0) {
                    holder = Some((rtt, i, m.data_end()));
                }
            }
            let Some((rtt, i, end)) = holder else {
                // No working subflow holds these bytes any more: its subflow delivered them,
                // or they go again as an ordinary reinjection. On to the next bytes a working
                // subflow still holds.
                match working
                    .iter()
                    .flat_map(|&(i, _)| self.subflows[i].send_maps.iter())
                    .map(|m| m.data_off)
                    .filter(|&off| off > at)
                    .min()
                {
                    Some(next) if at != una => {
                        at = next;
                        continue;
                    }
                    _ => break,
                }
            };
            if rtt <= fast.srtt || i == fast.index {
                if at == una {
                    // The next bytes come over the fastest line anyway.
                    return;
                }
                at = end;
                continue;
            }
            let end = end.min(at + budget).min(at + MAX_MAPPING);
            self.reinject.push_back(Reinjection {
                start: at,
                end,
                from: i,
                only_faster: true,
            });
            budget -= end - at;
            at = end;
        }
        self.hol_reinjected = at;
    }

    /// Which subflows may carry data now: active, not stalled, not silent unless all are, and
    /// regular ones while any works, else the backups.
    fn usable_class(&self) -> impl Fn(&Subflow) -> bool + use<> {
        let live = |s: &Subflow| s.state == SubflowState::Active && !s.stale;
        let any_awake = self.subflows.iter().any(|s| live(s) && !s.silent);
        let usable = move |s: &Subflow| live(s) && (!s.silent || !any_awake);
        let regular = self.subflows.iter().any(|s| usable(s) && !s.is_backup());
        move |s: &Subflow| usable(s) && s.is_backup() != regular
    }

    /// The subflows that may carry data now, as the scheduler sees them (those without room
    /// too: a scheduler may wait for one).
    fn candidates(&self, ep: &Endpoint) -> ArrayVec<Candidate, 16> {
        let usable = self.usable_class();
        let mut out = ArrayVec::new();
        for (i, s) in self.subflows.iter().enumerate() {
            if !usable(s) {
                continue;
            }
            let Some(c) = ep.conn(s.handle) else { continue };
            if !matches!(c.state(), State::Established | State::CloseWait) {
                continue;
            }
            let queued = c.send_undelivered();
            let bare = self.goes_bare(i).then(|| Bare {
                unsent: s.written.saturating_sub(c.sent_to()),
                first: c.send_mss_with(self.slim_len()),
            });
            let room = room_of(c, bare);
            let cand = Candidate {
                index: i,
                srtt: c.srtt().unwrap_or(Duration::from_millis(100)),
                rttvar: c.rttvar(),
                cwnd: c.cwnd(),
                mss: c.send_mss(),
                queued,
                room,
                acked: c.progress().1,
            };
            if out.try_push(cand).is_err() {
                break;
            }
        }
        out
    }

    /// The subflow for the next new bytes and how many, as the scheduler decides.
    fn pick_new(&mut self, ep: &Endpoint) -> Option<(usize, u64)> {
        let candidates = self.candidates(ep);
        self.count_coupled(&candidates);
        let ctx = Context {
            unsent: self.send.end().saturating_sub(self.snd_nxt),
            window: self.snd_edge.saturating_sub(self.snd_una),
        };
        self.scheduler.pick(&candidates, &ctx)
    }

    /// Coupled congestion control counts the subflows that may carry data now (a backup next
    /// to working regular subflows, or a stalled subflow, does not hold the others back).
    fn count_coupled(&mut self, candidates: &[Candidate]) {
        let Some(coupling) = &self.coupling else {
            return;
        };
        let mut counted = 0u64;
        for c in candidates {
            if let Some(slot) = self.subflows[c.index].cc_slot.filter(|&k| k < 64) {
                counted |= 1 << slot;
            }
        }
        if counted != self.coupled_counted {
            self.coupled_counted = counted;
            coupling.set_counted(|k| k < 64 && counted & (1 << k) != 0);
        }
    }

    /// Adds subflow `sf` whose TCP connection is `tc`: MPTCP's option space on its segments,
    /// and the connection's congestion control.
    pub(crate) fn attach(&mut self, mut sf: Subflow, tc: Option<&mut crate::tcp::Connection>) {
        if let Some(tc) = tc {
            tc.set_option_space(OPTION_SPACE);
            tc.watch_silence(true);
            if let Some(coupling) = &self.coupling {
                let (slot, cc) = coupling.controller();
                sf.cc_slot = Some(slot);
                tc.set_controller(cc);
            } else if let Some(alg) = self.cfg.congestion.uncoupled() {
                if tc.congestion_algorithm() != alg.name() {
                    tc.set_controller(alg.build(0));
                }
            }
        }
        self.subflows.push(sf);
    }

    /// The lowest-RTT subflow with room if it is faster than subflow `than`: an opportunistic
    /// copy on the same or a slower line only adds to its queue.
    fn pick_faster(&self, ep: &Endpoint, than: usize) -> Option<(usize, u64)> {
        let candidates = self.candidates(ep);
        let slow = candidates.iter().find(|c| c.index == than).map(|c| c.srtt);
        candidates
            .iter()
            .filter(|c| c.room > 0 && c.index != than && slow.is_none_or(|s| c.srtt < s))
            .min_by_key(|c| c.srtt)
            .map(|c| (c.index, c.room))
    }

    /// The lowest-RTT subflow with room other than `avoid` (that one only if no other has
    /// room), and how much room: for reinjections and the `DATA_FIN`, whatever the scheduler.
    fn pick_lowest_rtt(&self, ep: &Endpoint, avoid: Option<usize>) -> Option<(usize, u64)> {
        let candidates = self.candidates(ep);
        let with_room = || candidates.iter().filter(|c| c.room > 0);
        with_room()
            .filter(|c| Some(c.index) != avoid)
            .min_by_key(|c| c.srtt)
            .or_else(|| with_room().min_by_key(|c| c.srtt))
            .map(|c| (c.index, c.room))
    }

    /// A subflow whose retransmission timer fired since it last made progress is stalled: its
    /// data goes to the other subflows and it gets no new data until it makes progress. One
    /// whose peer went silent (well before that timer fires: [`crate::tcp::Connection::watch_silence`])
    /// is treated alike until the peer is heard from again, when another subflow works: a line
    /// that dies holds the data level up for a fraction of a round trip past its ACK clock,
    /// not for the 200 ms floor of the retransmission timeout (RFC 8684 §3.3.6 leaves when to
    /// reinject to the implementation).
    fn check_stalls(&mut self, ep: &Endpoint) {
        for i in 0..self.subflows.len() {
            let sf = &self.subflows[i];
            if sf.state != SubflowState::Active {
                continue;
            }
            let Some(c) = ep.conn(sf.handle) else {
                continue;
            };
            let (timeouts, acked) = c.progress();
            let unacked = c.unacked();
            let silent = c.is_silent();
            let sf_acked = self.subflows[i].written - c.send_buffered() as u64;
            let sf = &mut self.subflows[i];
            sf.send_maps.prune(sf_acked);
            if acked > sf.acked_seen {
                sf.acked_seen = acked;
                sf.stale = false;
                for m in sf.send_maps.iter_mut() {
                    m.reinjected = false;
                }
            }
            let newly = silent && !sf.silent;
            sf.silent = silent;
            if silent && !sf.stale && unacked > 0 {
                let awake = |s: &Subflow| s.state == SubflowState::Active && !s.stale && !s.silent;
                let others = self
                    .subflows
                    .iter()
                    .enumerate()
                    .any(|(j, s)| j != i && awake(s));
                // Once per silence (the mappings remember what was reinjected), also when
                // another subflow starts to work while this one is still silent.
                if others {
                    if newly {
                        self.stats.silences += 1;
                    }
                    self.reinject_from(i);
                }
            }
            let sf = &mut self.subflows[i];
            if timeouts > sf.timeouts_seen {
                sf.timeouts_seen = timeouts;
                if unacked > 0 {
                    sf.stale = true;
                    let others = self
                        .subflows
                        .iter()
                        .enumerate()
                        .any(|(j, s)| j != i && s.state == SubflowState::Active);
                    if others {
                        self.reinject_from(i);
                    }
                }
            }
        }
    }

    /// A stalled subflow whose data other working subflows carry probes its line at least
    /// every [`STALLED_PROBE_INTERVAL`] instead of backing off for minutes, so that a line
    /// that comes back is used again within about that time; with no other working subflow
    /// it backs off as TCP does (and may give up).
    fn cap_stalled_timeouts(&mut self, ep: &mut Endpoint) {
        let working = self
            .subflows
            .iter()
            .filter(|s| s.state == SubflowState::Active && !s.stale)
            .count();
        for sf in &mut self.subflows {
            let want = sf.state == SubflowState::Active && sf.stale && working > 0;
            if want != sf.rto_capped {
                sf.rto_capped = want;
                if let Some(c) = ep.conn_mut(sf.handle) {
                    c.set_rto_cap(want.then_some(STALLED_PROBE_INTERVAL));
                }
            }
        }
    }

    /// The first active subflow after `prev` (cyclically; a stalled one only if no other is
    /// active), or the first active one.
    fn next_live_after(&self, prev: Option<usize>) -> Option<usize> {
        let n = self.subflows.len();
        let start = prev.map_or(0, |p| p + 1);
        let order = (0..n).map(|k| (start + k) % n);
        let active = |i: &usize| self.subflows[*i].state == SubflowState::Active;
        order
            .clone()
            .filter(active)
            .find(|i| !self.subflows[*i].stale)
            .or_else(|| order.clone().find(active))
    }

    /// When this connection wants `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let joins = self.subflows.iter().filter_map(|s| {
            (s.state == SubflowState::JoinAckPending)
                .then_some(s.join_rtx_at)
                .flatten()
        });
        let announces = self
            .announced
            .iter()
            .filter(|a| a.tries < ANNOUNCE_TRIES)
            .map(|a| a.rtx_at);
        let orphan = self.orphan.iter().flat_map(|o| {
            [o.deadline]
                .into_iter()
                .chain((self.role == Role::Client).then_some(o.rejoin_at))
        });
        let rejoins = self
            .rejoins
            .iter()
            .filter(|_| self.role == Role::Client && self.orphan.is_none())
            .filter_map(|r| r.at);
        joins
            .chain(self.fin_rtx_at)
            .chain(self.fin_hold_until)
            .chain(announces)
            .chain(orphan)
            .chain(rejoins)
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant, ep: &mut Endpoint) {
        self.clock = Some(now);
        if let Some(o) = self.orphan.filter(|o| o.deadline <= now) {
            // No subflow came back in time.
            self.orphan = None;
            self.finish(o.reason);
            return;
        }
        // Announcements the peer did not echo go again (§3.4.1).
        let due: Vec<(u8, SocketAddr)> = self
            .announced
            .iter_mut()
            .filter(|a| a.tries < ANNOUNCE_TRIES && a.rtx_at <= now)
            .map(|a| {
                a.rtx_at = now + Duration::from_secs(3600);
                (a.id, a.addr)
            })
            .collect();
        for (id, addr) in due {
            if !self.signals.contains(&Signal::Announce { id, addr }) {
                self.signal(ep, Signal::Announce { id, addr });
            }
        }
        for sf in &mut self.subflows {
            if sf.state == SubflowState::JoinAckPending && sf.join_rtx_at.is_some_and(|t| now >= t)
            {
                // The third ACK again: the fourth did not come (§3.2).
                sf.join_rtx_at = Some(now + self.cfg.initial_rto);
                if let Some(c) = ep.conn_mut(sf.handle) {
                    c.request_ack();
                }
            }
        }
        self.schedule(now, ep);
        if self.fin_hold_until.is_some_and(|t| t <= now) {
            self.fin_hold_until = None;
        }
        // A DATA_FIN that could not go (held for joins, or the connection changed meanwhile)
        // is looked at again later, not at once.
        if self.fin_rtx_at.is_some_and(|t| t <= now) {
            self.fin_rtx_at = (self.state == ConnState::Established
                && self.fin_queued
                && self.snd_una <= self.send.end())
            .then(|| now + self.fin_rto);
        }
    }

    /// Subflow figures for `status`.
    pub fn subflow_info(&self, ep: &Endpoint) -> Vec<super::SubflowInfo> {
        self.subflows
            .iter()
            .map(|s| {
                let st = ep.conn(s.handle).map(crate::tcp::Connection::stats);
                let st = st.filter(|_| s.state != SubflowState::Closed);
                super::SubflowInfo {
                    local: s.local,
                    remote: s.remote,
                    active: s.state == SubflowState::Active,
                    backup: s.is_backup(),
                    stale: s.stale,
                    silent: s.silent,
                    srtt: st.as_ref().and_then(|s| s.srtt),
                    cwnd: st.as_ref().map_or(0, |s| s.cwnd),
                    in_flight: st.as_ref().map_or(0, |s| s.unacked),
                    bytes_sent: s.bytes_sent,
                    bytes_received: s.bytes_received,
                    ids: (s.local_id, s.remote_id),
                    closed: s.state == SubflowState::Closed,
                    tcp: st,
                }
            })
            .collect()
    }
}

/// The relative subflow sequence number of subflow offset `sf_off` (§3.3.1: relative to the
/// initial sequence number, so the first payload byte is 1).
#[expect(
    clippy::cast_possible_truncation,
    reason = "it wraps at 2^32 by definition"
)]
fn rel_ssn(sf_off: u64) -> u32 {
    (sf_off + 1) as u32
}

/// A subflow whose segments inside a mapping go bare ([`room_of`]).
#[derive(Debug, Clone, Copy)]
struct Bare {
    /// Bytes it has unsent.
    unsent: u64,
    /// Payload bytes of a mapping's first segment, which carries the mapping alone.
    first: u64,
}

/// What subflow `c` may be handed now: enough to fill its congestion window and a little more,
/// so that it stays limited by its window (or it will not grow it) without holding much that a
/// dying line would take with it. In whole segments: a mapping ends a segment (its DSS
/// describes one mapping), so a hand-out of odd size leaves a short segment at its end, and a
/// third of them were short before this was rounded. What the peer SACKed does not count: it
/// was delivered, and TCP sends new data in its place while a hole waits for its
/// retransmission; counting it left the subflow with nothing to send for most of a round trip
/// after each loss, and its line idle once its queue drained. `bare`: the subflow's segments
/// inside a mapping go bare ([`MpConn::goes_bare`]) and it has that many bytes unsent; whole
/// segments are then one with the mapping alone (`first` bytes, [`MpConn::slim`]) and the rest
/// a bare segment's size, and it may hold
/// [`BARE_RUN`] + 1 segments beyond its window rather than 2, but takes nothing while it has
/// room for fewer than [`BARE_RUN`] and still a segment to send: a short hand-out would be a
/// short mapping, whose first segment carries the DSS, and the line does not wait for it.
fn room_of(c: &crate::tcp::Connection, bare: Option<Bare>) -> u64 {
    let queued = c.send_undelivered();
    let mss = c.send_mss().max(1);
    let ahead = if bare.is_some() { BARE_RUN + 1 } else { 2 };
    let want = (c.cwnd() + ahead * mss).saturating_sub(queued);
    let room = if let Some(Bare { unsent, first }) = bare {
        // The first segment carries the mapping, the others go bare and carry more.
        let full = c.send_mss_bare().max(mss);
        if want < BARE_RUN * full && unsent >= mss {
            return 0;
        }
        (want.div_ceil(full) * full).saturating_sub(full - first.clamp(mss, full))
    } else {
        want.div_ceil(mss) * mss
    };
    room.min(c.send_capacity_left() as u64)
}
