//! The connection state machine: RFC 9293 §3.10's event processing, with RFC 7323
//! (timestamps, PAWS, window scaling), RFC 2018 / RFC 6675 (SACK and SACK-based recovery),
//! RFC 8985 (RACK-TLP loss detection),
//! RFC 6582 (NewReno recovery without SACK), RFC 6298 (RTO) and RFC 5961 (RST, SYN and ACK
//! validation).
//!
//! Sequence positions are 64-bit offsets from the initial sequence numbers: on the send side
//! our SYN is offset 0, written byte `k` is offset `1 + k` and our FIN follows the last byte;
//! on the receive side the same from the peer's ISN. Only [`Connection::snd_seq`] and
//! [`Connection::rcv_seq`] (and their inverses) touch 32-bit sequence numbers.

#![expect(
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "offsets are far below 2^63; signed distances between them are the point"
)]

use core::net::SocketAddr;
use core::time::Duration;
use std::collections::VecDeque;
use std::time::Instant;

use arrayvec::ArrayVec;

use super::congestion::{Ack, Controller, Delivery};
use super::fast_open::{CachedCookie, ClientOpen, Cookie, CookieNews};
use super::pacing::Pacer;
use super::recv_buffer::RecvBuffer;
use super::rtt::RttEstimator;
use super::send_buffer::SendBuffer;
use super::sent::SentQueue;
use super::timer::{Timer, TimerTable};
use super::{CloseReason, Config, Event, ReadError, State, Stats, WriteError};
use crate::wire::mptcp::MptcpOption;
use crate::wire::tcp::{HEADER_LEN, MAX_OPTIONS_LEN, SeqNumber, TcpFlags, TcpRepr};
use crate::wire::tcp_option::SackBlocks;

/// The default MSS when the peer sends none (RFC 9293 §3.7.1; RFC 8200 for IPv6).
const DEFAULT_MSS_V4: u64 = 536;
const DEFAULT_MSS_V6: u64 = 1220;

/// Largest window scale (RFC 7323 §2.3).
const MAX_WSCALE: u8 = 14;

/// Challenge ACKs a connection may send per second (RFC 5961 §7).
const CHALLENGE_ACKS_PER_SECOND: u32 = 10;

/// The least silence [`Connection::watch_silence`] reports: scheduling hiccups of a busy host
/// stay below it.
pub const SILENCE_FLOOR: Duration = Duration::from_millis(40);

/// How long a late ACK widens the silence that [`Connection::watch_silence`] allows (between
/// one and two of these).
const LATENESS_WINDOW: Duration = Duration::from_secs(5);

/// A segment about to be sent, as the MPTCP layer sees it when it adds its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutgoingSegment {
    /// Control bits (ACK is on whenever an acknowledgment number is sent).
    pub flags: TcpFlags,
    /// Stream offset of the first payload byte (meaningful when `payload_len > 0`).
    pub stream_offset: u64,
    /// Payload length.
    pub payload_len: usize,
    /// Whether this is a retransmission.
    pub retransmission: bool,
}

/// Adds options to outgoing segments: how the MPTCP layer puts its options on a subflow's
/// segments. The options must fit in the space reserved with
/// [`Connection::set_option_space`] (SYNs have room for up to 20 bytes more); that space wins
/// over SACK blocks, which are fewer on a segment that carries the hook's options (as Linux
/// does for MPTCP).
pub trait SegmentHook {
    /// The options for `seg`.
    fn outgoing_options(&mut self, seg: &OutgoingSegment) -> ArrayVec<MptcpOption<'_>, 4>;

    /// `seg` left with the options of [`SegmentHook::outgoing_options`] whose bit is set in
    /// `included` (bit `i`: the `i`-th option); an option left out did not fit in the 40 bytes
    /// of options, which only happens when the hook asked for more than it reserved.
    fn sent(&mut self, seg: &OutgoingSegment, included: u8) {
        let _ = (seg, included);
    }

    /// How many of the `len` payload bytes from stream offset `stream_offset` one segment may
    /// carry: the MPTCP layer stops a segment at the end of a DSS mapping, so that no segment
    /// straddles two mappings (RFC 8684 §3.3.1), also when a retransmission covers several.
    /// At least 1 when `len > 0`; all of them by default.
    fn segment_limit(&mut self, stream_offset: u64, len: usize) -> usize {
        let _ = stream_offset;
        len
    }

    /// Option bytes the hook's options take on the data segment from stream offset
    /// `stream_offset` (a retransmission when `retransmission`), at most the space reserved for
    /// them ([`Connection::set_option_space`]): the rest of that space carries payload. All of
    /// it by default. The MPTCP layer says 0 (the segment goes *bare*) inside a DSS mapping
    /// whose first segment carries it, when a DSS would have nothing new to say (RFC 8684
    /// §3.3.1: a mapping need not ride on every segment it covers), and the size of the
    /// mapping alone on that first segment then.
    fn data_option_len(&mut self, stream_offset: u64, retransmission: bool) -> usize {
        let _ = (stream_offset, retransmission);
        usize::MAX
    }
}

/// A hook that adds nothing: plain TCP.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHook;

impl SegmentHook for NoHook {
    fn outgoing_options(&mut self, _seg: &OutgoingSegment) -> ArrayVec<MptcpOption<'_>, 4> {
        ArrayVec::new()
    }
}

/// What the endpoint must do after a segment was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reaction {
    /// Nothing more.
    None,
    /// Answer with a RST carrying this sequence number (an unacceptable ACK in SYN-SENT or
    /// SYN-RECEIVED, RFC 9293 §3.10.7.3–4).
    Reset(SeqNumber),
    /// A passive open completed: hand the connection to its listener.
    Established,
    /// A half-open passive connection was reset: forget it (RFC 9293: back to LISTEN).
    Forget,
}

/// Where loss recovery stands (RFC 6675 §5, RFC 5681 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// No loss outstanding.
    Open,
    /// Fast recovery after a loss found by SACK, RACK or duplicate ACKs, until the recovery
    /// point (`SND.MAX` when it began) is acknowledged; the window was reduced once.
    Fast { point: u64 },
    /// After a retransmission timeout, until what was outstanding then is acknowledged
    /// (slow start meanwhile).
    Loss { point: u64 },
}

/// An empty probe to send (zero-window or keep-alive): `SEQ = SND.UNA − 1`, no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    ZeroWindow,
    Keepalive,
}

/// The receive-buffer auto-tuning's measurement (Linux's `rcvq_space`).
#[derive(Debug, Clone, Copy)]
struct RcvSpace {
    mark: Option<Instant>,
    consumed_at_mark: u64,
    space: u64,
}

/// One TCP connection. Created by the [`Endpoint`](crate::endpoint::Endpoint), which feeds it
/// segments and the time and asks it for segments to send.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent protocol flags of RFC 9293"
)]
pub struct Connection {
    local: SocketAddr,
    remote: SocketAddr,
    state: State,
    cfg: Config,
    /// The endpoint's clock origin, for timestamp values.
    epoch: Instant,

    // Send sequence space.
    iss: SeqNumber,
    snd_una: u64,
    /// Highest offset sent plus one (`SND.NXT` of RFC 9293: retransmissions go to lost
    /// segments of [`SentQueue`] instead of moving it back).
    snd_max: u64,
    /// Send offset just past the last data segment shorter than a full one (Linux's
    /// `snd_sml`): Nagle holds a small segment only while such a one is unacknowledged.
    snd_sml: u64,
    /// Our SYN (or SYN-ACK) is to be sent (again).
    syn_due: bool,
    snd_wnd: u64,
    max_snd_wnd: u64,
    snd_wl1: SeqNumber,
    snd_wl2: u64,
    send: SendBuffer,
    fin_queued: bool,

    // Receive sequence space.
    irs: SeqNumber,
    rcv_nxt: u64,
    /// The right edge of the window last advertised.
    rcv_adv: u64,
    recv: RecvBuffer,
    /// Offset of the peer's FIN once seen (it may arrive before the data preceding it).
    peer_fin: Option<u64>,
    fin_consumed: bool,
    /// Bytes the application has read.
    consumed: u64,

    // Negotiated options.
    /// The peer's MSS (from its SYN).
    peer_mss: u64,
    snd_wscale: u8,
    rcv_wscale: u8,
    sack_ok: bool,
    ts_ok: bool,
    ts_recent: u32,
    ts_offset: u32,
    last_ack_sent: u64,
    /// Option bytes reserved on every segment for a [`SegmentHook`].
    option_space: usize,
    /// Free bytes of a receive buffer shared with other connections, which the window
    /// advertises instead of this connection's own (MPTCP's connection-level window).
    shared_window: Option<u64>,
    /// The window scale our SYN offers (`None`: scaling off).
    offered_wscale: Option<u8>,
    /// Both sides offered window scaling (RFC 7323 §2.2).
    ws_ok: bool,

    // Timing and congestion.
    rtt: RttEstimator,
    /// RTT seen by a receiver from the timestamps the peer echoes.
    rcv_rtt: Option<Duration>,
    /// Segments sent and not acknowledged, with their fate.
    queue: SentQueue,
    cc: Box<dyn Controller>,
    pacer: Pacer,
    recovery: Recovery,
    /// Duplicate ACKs in a row (without SACK: what starts NewReno's fast retransmit).
    dupacks: u32,
    /// A tail loss probe is due (RFC 8985 §7).
    tlp_due: bool,
    /// The tail loss probe in flight: `SND.MAX` after it, and whether it was a
    /// retransmission.
    tlp: Option<(u64, bool)>,
    cwnd_limited: bool,
    timers: TimerTable,
    /// When the current run of timeouts began (for the user timeout).
    stalled_since: Option<Instant>,
    /// Whether [`Timer::Silence`] is kept ([`Connection::watch_silence`]).
    silence_watch: bool,
    /// The peer stayed silent past [`Timer::Silence`]; its next ACK clears it.
    silent: bool,
    /// When the peer's last acknowledgment came.
    last_heard: Option<Instant>,
    /// How late the peer's ACKs came lately, past when they were due (the most in this
    /// [`LATENESS_WINDOW`] and the one before): what jitter and lost ACKs do to this path.
    lateness: [Duration; 2],
    lateness_since: Option<Instant>,

    // Acknowledgments owed.
    ack_now: bool,
    unacked_segments: u32,
    challenge_tokens: u32,
    challenge_refill: Option<Instant>,
    probe: Option<Probe>,
    persist_probes: u32,
    keepalive_probes: u32,
    rcv_space: RcvSpace,
    rst_due: bool,
    /// A pure ACK is to go out before any data ([`Connection::request_pure_ack`]).
    pure_ack_due: bool,

    // Application side.
    events: VecDeque<Event>,
    readable_signalled: bool,
    write_blocked: bool,
    close_reason: Option<CloseReason>,
    released: bool,
    stats: Stats,

    // TCP Fast Open (RFC 7413).
    /// A client's Fast Open (cookie to present or to ask for, data its SYN carried).
    fo_client: Option<ClientOpen>,
    /// What the SYN-ACK taught a client about its server's cookie, for the endpoint.
    fo_news: Option<CookieNews>,
    /// A server's cookie for its SYN-ACK (the client asked for one).
    fo_cookie_out: Option<Cookie>,
    /// Bytes of data our SYN carried that the peer acknowledged (client), or that the
    /// peer's SYN carried and we took (server).
    syn_data: u64,
}

/// The settings of an incoming SYN that the connection adopts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerSyn {
    pub isn: SeqNumber,
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack: bool,
    pub tsval: Option<u32>,
    pub window: u16,
}

impl PeerSyn {
    pub(crate) fn from_repr(seg: &TcpRepr<'_>) -> Self {
        Self {
            isn: seg.seq_number,
            mss: seg.max_seg_size,
            wscale: seg.window_scale,
            sack: seg.sack_permitted,
            tsval: seg.timestamps.map(|t| t.0),
            window: seg.window_len,
        }
    }
}

impl Connection {
    fn new(
        cfg: &Config,
        epoch: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        iss: SeqNumber,
        ts_offset: u32,
    ) -> Self {
        let rcv_wscale = if cfg.window_scaling {
            wscale_for(cfg.recv_buffer_max)
        } else {
            0
        };
        let mut c = Self {
            local,
            remote,
            state: State::Closed,
            cfg: cfg.clone(),
            epoch,
            iss,
            snd_una: 0,
            snd_max: 0,
            snd_sml: 0,
            syn_due: true,
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: SeqNumber(0),
            snd_wl2: 0,
            send: SendBuffer::new(cfg.send_buffer),
            fin_queued: false,
            irs: SeqNumber(0),
            rcv_nxt: 0,
            rcv_adv: 0,
            recv: RecvBuffer::new(cfg.recv_buffer.min(cfg.recv_buffer_max)),
            peer_fin: None,
            fin_consumed: false,
            consumed: 0,
            peer_mss: if local.is_ipv4() {
                DEFAULT_MSS_V4
            } else {
                DEFAULT_MSS_V6
            },
            snd_wscale: 0,
            rcv_wscale,
            sack_ok: false,
            ts_ok: false,
            ts_recent: 0,
            ts_offset,
            last_ack_sent: 0,
            option_space: 0,
            shared_window: None,
            offered_wscale: cfg.window_scaling.then_some(rcv_wscale),
            ws_ok: false,
            rtt: RttEstimator::new(cfg.initial_rto, cfg.min_rto, cfg.max_rto),
            rcv_rtt: None,
            queue: SentQueue::default(),
            cc: cfg.congestion.build(cfg.initial_window * 1460),
            pacer: Pacer::default(),
            recovery: Recovery::Open,
            dupacks: 0,
            tlp_due: false,
            tlp: None,
            cwnd_limited: false,
            timers: TimerTable::default(),
            stalled_since: None,
            silence_watch: false,
            silent: false,
            last_heard: None,
            lateness: [Duration::ZERO; 2],
            lateness_since: None,
            ack_now: false,
            unacked_segments: 0,
            challenge_tokens: CHALLENGE_ACKS_PER_SECOND,
            challenge_refill: None,
            probe: None,
            persist_probes: 0,
            keepalive_probes: 0,
            rcv_space: RcvSpace {
                mark: None,
                consumed_at_mark: 0,
                space: 0,
            },
            rst_due: false,
            pure_ack_due: false,
            events: VecDeque::new(),
            readable_signalled: false,
            write_blocked: false,
            close_reason: None,
            released: false,
            stats: Stats::default(),
            fo_client: None,
            fo_news: None,
            fo_cookie_out: None,
            syn_data: 0,
        };
        c.reset_cc();
        c
    }

    /// The congestion controller restarted with an initial window of `initial_window`
    /// segments of the current MSS (RFC 6928).
    fn reset_cc(&mut self) {
        let iw = self.cfg.initial_window * self.smss();
        self.cc.restart(iw);
    }

    /// Replaces the congestion controller (the MPTCP layer gives each subflow the algorithm of
    /// its connection); it is restarted with the initial window at once, and again when the
    /// handshake fixes the MSS.
    pub fn set_controller(&mut self, mut cc: Box<dyn Controller>) {
        cc.restart(self.cfg.initial_window * self.smss());
        self.cc = cc;
    }

    /// Caps the backed-off retransmission timeout at `cap` (`None`: RFC 6298's maximum), and
    /// stops counting timeouts toward giving up once it is reached (Linux's `TCP_RTO_MAX_MS`
    /// lowers the cap likewise): the MPTCP layer sets it on a subflow whose line went silent
    /// while another subflow carries its data, so that the line is probed often and used again
    /// soon after it returns. It takes effect from the next expiry.
    pub fn set_rto_cap(&mut self, cap: Option<Duration>) {
        self.rtt.set_cap(cap);
    }

    /// Watches the peer's silence (the MPTCP layer does, on every subflow): with data
    /// outstanding, the peer's next ACK is due one smoothed RTT after the first segment (in
    /// sequence) it has not reported was last sent (one known lost counts once it is sent
    /// again; a retransmission's time stands for it, which errs toward later), and no sooner than
    /// two ACK spacings after its last ACK while its ACK clock runs; when none comes within a
    /// margin (four RTT variations, twice the latest that ACKs came in the last 5-10 s, at
    /// least [`SILENCE_FLOOR`]; plus the delayed-ACK time, as the peer may hold the ACK of the
    /// last segment it got before a pause or a loss),
    /// [`Connection::is_silent`] says so until an ACK comes. It is a suspicion, not a loss:
    /// nothing is sent again and the congestion window is untouched; RFC 7829 calls such a
    /// path "potentially failed", and another subflow may carry its data meanwhile. It fires
    /// usually well before the retransmission timeout, whose 200 ms floor allows for delayed ACKs
    /// that a running ACK clock does not have.
    pub fn watch_silence(&mut self, on: bool) {
        self.silence_watch = on;
        if !on {
            self.silent = false;
        }
        self.arm_silence();
    }

    /// The peer stayed silent with data outstanding longer than expected
    /// ([`Connection::watch_silence`]), and has not acknowledged anything since.
    #[must_use]
    pub fn is_silent(&self) -> bool {
        self.silent
    }

    /// When the peer's next ACK is due, with data outstanding: see
    /// [`Connection::watch_silence`].
    fn ack_due(&self) -> Option<Instant> {
        let oldest = self.queue.oldest_in_flight()?.sent_at;
        let expected = oldest + self.rtt.srtt()?;
        Some(self.last_heard.map_or(expected, |h| h.max(expected)))
    }

    /// Notes how late an ACK that came at `now` was (`due`: when it was due, before it was
    /// processed): jitter and lost ACKs. It counts for at most one smoothed RTT: a longer
    /// silence was an outage, and would blunt the next one's detection.
    fn note_lateness(&mut self, now: Instant, due: Option<Instant>) {
        if !self.silence_watch {
            return;
        }
        let since = *self.lateness_since.get_or_insert(now);
        let age = now.saturating_duration_since(since);
        if age >= LATENESS_WINDOW * 2 {
            self.lateness = [Duration::ZERO; 2];
            self.lateness_since = Some(now);
        } else if age >= LATENESS_WINDOW {
            self.lateness = [Duration::ZERO, self.lateness[0]];
            self.lateness_since = Some(now);
        }
        if let (Some(due), Some(srtt)) = (due, self.rtt.srtt()) {
            let late = now.saturating_duration_since(due).min(srtt);
            self.lateness[0] = self.lateness[0].max(late);
        }
    }

    /// Sets (or stops) [`Timer::Silence`]: see [`Connection::watch_silence`].
    fn arm_silence(&mut self) {
        match self.silence_due() {
            Some(at) => self.timers.set(Timer::Silence, at),
            None => self.timers.stop(Timer::Silence),
        }
    }

    /// When the peer is silent if nothing comes before, as things stand now (`None`: not
    /// watched, already silent, or nothing is in flight): see [`Connection::watch_silence`].
    fn silence_due(&self) -> Option<Instant> {
        let watched = self.silence_watch && !self.silent && self.state.is_synchronized();
        let oldest = self.queue.oldest_in_flight().map(|s| s.sent_at);
        let (true, Some(srtt), Some(oldest)) = (watched, self.rtt.srtt(), oldest) else {
            return None;
        };
        let late = self.lateness[0].max(self.lateness[1]);
        let mss = self.smss();
        let in_flight = self.in_flight().max(1);
        // The peer delays its ACK of the last segment it got before a pause or a loss (RFC 5681
        // §4.2): whether the segment after ours was lost, we cannot tell.
        let margin =
            (self.rtt.rttvar() * 4).max(late * 2).max(SILENCE_FLOOR) + self.cfg.delayed_ack;
        // The oldest segment's ACK is due a round trip after it was sent ...
        let mut at = oldest + srtt + margin;
        if let Some(heard) = self.last_heard {
            // ... and while the ACK clock runs, the next ACK soon after the last: the peer
            // acknowledges at least every second full segment.
            let spacing_ns = srtt.as_nanos() * u128::from(2 * mss) / u128::from(in_flight);
            let spacing = Duration::from_nanos(u64::try_from(spacing_ns).unwrap_or(u64::MAX));
            at = at.max(heard + margin.max(spacing.min(srtt) * 2));
        }
        Some(at)
    }

    /// Sends an acknowledgment at the next [`Connection::poll_transmit`] even if nothing else
    /// is due: the MPTCP layer's signals (`ADD_ADDR`, `REMOVE_ADDR`, `MP_PRIO`, a connection-level
    /// window update, a third ACK again) ride on one.
    pub fn request_ack(&mut self) {
        if !matches!(self.state, State::Closed | State::SynSent | State::TimeWait) {
            self.ack_now = true;
        }
    }

    /// Like [`Connection::request_ack`], but the ACK goes out on its own, without data and
    /// before any data segment: an option that needs the space of a pure ACK (`ADD_ADDR`
    /// next to a DSS, a `DATA_FIN` with its own mapping) rides on it even while data flows.
    pub fn request_pure_ack(&mut self) {
        if self.state.is_synchronized() && self.state != State::TimeWait {
            self.pure_ack_due = true;
        }
    }

    /// An active open: the SYN goes out at the next `poll_transmit` (RFC 9293 §3.10.1).
    pub(crate) fn connect(
        cfg: &Config,
        epoch: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        iss: SeqNumber,
        ts_offset: u32,
    ) -> Self {
        let mut c = Self::new(cfg, epoch, local, remote, iss, ts_offset);
        c.state = State::SynSent;
        c
    }

    /// A passive open from the peer's SYN: SYN-RECEIVED, the SYN-ACK goes out next.
    #[expect(
        clippy::too_many_arguments,
        reason = "a connection's identity and its SYN"
    )]
    pub(crate) fn accept(
        cfg: &Config,
        epoch: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        iss: SeqNumber,
        ts_offset: u32,
        syn: &PeerSyn,
        now: Instant,
    ) -> Self {
        let mut c = Self::new(cfg, epoch, local, remote, iss, ts_offset);
        c.state = State::SynReceived;
        c.adopt_syn(syn);
        c.snd_wnd = u64::from(syn.window);
        c.max_snd_wnd = c.snd_wnd;
        c.snd_wl1 = syn.isn;
        c.keepalive_touch(now);
        c
    }

    /// A connection rebuilt from a SYN cookie when the handshake's last ACK arrived
    /// (RFC 4987 §3.6): ESTABLISHED at once. `wscale`/`sack` come from the echoed timestamp,
    /// `ts` is `(TSval, TSecr)` of that ACK.
    #[expect(clippy::too_many_arguments, reason = "everything a cookie restores")]
    pub(crate) fn from_cookie(
        cfg: &Config,
        epoch: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        iss: SeqNumber,
        peer_isn: SeqNumber,
        mss: u16,
        wscale: Option<u8>,
        sack: bool,
        ts: Option<(u32, u32)>,
        now: Instant,
    ) -> Self {
        // The cookie's SYN-ACK echoed the peer's timestamp; use the same offset so that our
        // clock goes on where the cookie's `TSval` left it.
        let ts_offset = ts.map_or(0, |(_, ecr)| ecr.wrapping_sub(timestamp_clock(epoch, now)));
        let mut c = Self::new(cfg, epoch, local, remote, iss, ts_offset);
        c.adopt_syn(&PeerSyn {
            isn: peer_isn,
            mss: Some(mss),
            wscale,
            sack,
            tsval: ts.map(|t| t.0),
            window: 0,
        });
        c.snd_una = 1;
        c.snd_max = 1;
        c.syn_due = false;
        // The window-update rule (SND.WL1 < SEG.SEQ) must take the ACK's window.
        c.snd_wl1 = peer_isn;
        c.snd_wl2 = 0;
        // What the cookie's SYN-ACK advertised (unscaled).
        c.rcv_adv = c.rcv_nxt + (c.recv.window() as u64).min(65_535);
        c.state = State::Established;
        c.events.push_back(Event::Connected);
        c.keepalive_touch(now);
        c
    }

    /// Takes the peer's SYN options (RFC 9293 §3.7.1, RFC 7323 §1.3, RFC 2018 §2).
    fn adopt_syn(&mut self, syn: &PeerSyn) {
        self.irs = syn.isn;
        self.rcv_nxt = 1;
        if let Some(m) = syn.mss {
            self.peer_mss = u64::from(m.max(64));
        }
        if let (Some(peer), Some(ours)) = (syn.wscale, self.offered_wscale) {
            self.ws_ok = true;
            self.snd_wscale = peer.min(MAX_WSCALE);
            self.rcv_wscale = ours;
        } else {
            self.ws_ok = false;
            self.snd_wscale = 0;
            self.rcv_wscale = 0;
            // Without scaling the window cannot exceed 64 KiB.
            self.recv.set_capacity(self.recv.capacity().min(65_535));
        }
        self.sack_ok = syn.sack && self.cfg.sack;
        if let (Some(tsval), true) = (syn.tsval, self.cfg.timestamps) {
            self.ts_ok = true;
            self.ts_recent = tsval;
        }
        self.reset_cc();
    }

    /// An active open with TCP Fast Open (RFC 7413 §4.1.3): the first SYN presents `cached`'s
    /// cookie with the data written by then (as much as [`Connection::syn_data_room`] says),
    /// or asks for a cookie when there is none.
    pub(crate) fn set_fast_open(&mut self, cached: Option<CachedCookie>) {
        if self.state != State::SynSent || self.snd_max > 0 {
            return;
        }
        if let Some(c) = &cached {
            // The SYN's data is sized for the server's MSS, remembered with the cookie.
            self.peer_mss = u64::from(c.mss.max(64));
        }
        self.fo_client = Some(ClientOpen {
            cached,
            syn_data: 0,
            sent: false,
            retried: false,
        });
    }

    /// How many bytes of data the first SYN may carry: none without a cookie, else what fits
    /// one segment of the server's remembered MSS whatever options go with it.
    #[must_use]
    pub fn syn_data_room(&self) -> usize {
        match &self.fo_client {
            Some(ClientOpen {
                cached: Some(c),
                sent: false,
                ..
            }) if self.state == State::SynSent => {
                usize::from(c.mss.min(self.advertised_mss())).saturating_sub(MAX_OPTIONS_LEN)
            }
            _ => 0,
        }
    }

    /// Bytes of data carried by the SYN that the handshake delivered: ours the peer
    /// acknowledged in its SYN-ACK (a client), or the peer's that we took (a server).
    #[must_use]
    pub fn syn_data(&self) -> u64 {
        self.syn_data
    }

    /// What the SYN-ACK said about the server's Fast Open cookie, once (for the cache).
    pub(crate) fn take_cookie_news(&mut self) -> Option<CookieNews> {
        self.fo_news.take()
    }

    /// A passive open takes the data of a SYN whose cookie checked (RFC 7413 §4.2.2): the
    /// SYN-ACK acknowledges it and the application may read it at once.
    pub(crate) fn take_syn_data(&mut self, payload: &[u8]) {
        if self.state != State::SynReceived || self.rcv_nxt != 1 || payload.is_empty() {
            return;
        }
        let n = payload.len().min(self.recv.window());
        let _ = self.recv.insert(0, &payload[..n]);
        self.rcv_nxt = 1 + n as u64;
        self.syn_data = n as u64;
        self.stats.bytes_received += n as u64;
        self.signal_readable();
    }

    /// A passive open whose SYN asked for a cookie (or presented a wrong one) gets `cookie` in
    /// the SYN-ACK (RFC 7413 §4.1.2). Timestamps are left out of that SYN-ACK, as Linux does
    /// and RFC 8684 appendix B.1 advises: with an `MP_CAPABLE` there is no room for them.
    pub(crate) fn offer_cookie(&mut self, cookie: Cookie) {
        if self.state != State::SynReceived {
            return;
        }
        self.fo_cookie_out = Some(cookie);
        self.ts_ok = false;
    }

    /// The local address.
    #[must_use]
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The peer's address.
    #[must_use]
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The RFC 9293 state.
    #[must_use]
    pub fn state(&self) -> State {
        self.state
    }

    /// Why the connection ended, once it did.
    #[must_use]
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
    }

    /// Counters and estimates.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.srtt = self.rtt.srtt();
        s.rttvar = self.rtt.rttvar();
        s.min_rtt = self.rtt.min();
        s.cwnd = self.cc.window();
        s.ssthresh = self.cc.ssthresh();
        s.rto = self.rtt.rto();
        s.snd_wnd = self.snd_wnd;
        s.rcv_buffer = self.recv.capacity();
        s.send_mss = self.smss();
        s.unacked = self.snd_max - self.snd_una;
        s.pacing_rate = self.pacer.rate();
        s.congestion = self.cc.running();
        s
    }

    /// The sequence numbers, as on the wire.
    #[must_use]
    pub fn sequence(&self) -> super::Sequence {
        super::Sequence {
            snd_una: self.snd_seq(self.snd_una),
            snd_nxt: self.snd_seq(self.snd_max),
            rcv_nxt: self.rcv_seq(self.rcv_nxt),
            rcv_wnd: self.rcv_adv.saturating_sub(self.rcv_nxt),
            ts_recent: self.ts_ok.then_some(self.ts_recent),
        }
    }

    /// The congestion window, bytes.
    #[must_use]
    pub fn cwnd(&self) -> u64 {
        self.cc.window()
    }

    /// Payload bytes of a full segment we send (without building all of [`Stats`]).
    #[must_use]
    pub fn send_mss(&self) -> u64 {
        self.smss()
    }

    /// Payload bytes of a full bare segment, one without the hook's options
    /// ([`SegmentHook::data_option_len`]).
    #[must_use]
    pub fn send_mss_bare(&self) -> u64 {
        self.smss_bare()
    }

    /// Payload bytes of a full segment whose hook options take `hook_len` bytes
    /// ([`SegmentHook::data_option_len`]).
    #[must_use]
    pub fn send_mss_with(&self, hook_len: usize) -> u64 {
        self.smss_with(hook_len.min(self.option_space))
    }

    /// Retransmission timeouts so far and payload bytes the peer acknowledged: how the MPTCP
    /// layer tells a stalled subflow from a working one, per packet, cheaply.
    #[must_use]
    pub fn progress(&self) -> (u64, u64) {
        (self.stats.timeouts, self.stats.bytes_acked)
    }

    /// Stream offset of the first byte not acknowledged yet.
    #[must_use]
    pub fn acked_to(&self) -> u64 {
        self.snd_una.saturating_sub(1).min(self.send.end())
    }

    /// Stream offset of the first byte never sent yet.
    #[must_use]
    pub fn sent_to(&self) -> u64 {
        self.snd_max.saturating_sub(1).min(self.send.end())
    }

    /// Bytes sent and not yet acknowledged.
    #[must_use]
    pub fn unacked(&self) -> u64 {
        self.snd_max - self.snd_una
    }

    /// The smoothed round-trip time, once measured.
    #[must_use]
    pub fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    /// The RTT variation (`RTTVAR`, RFC 6298).
    #[must_use]
    pub fn rttvar(&self) -> Duration {
        self.rtt.rttvar()
    }

    /// Starts the retransmission timeout from what earlier connections between the same two
    /// addresses measured ([`RttEstimator::seed`](super::rtt::RttEstimator::seed)); before the
    /// SYN or SYN-ACK is sent.
    pub(crate) fn seed_rtt(&mut self, srtt: Duration, rttvar: Duration) {
        self.rtt.seed(srtt, rttvar);
    }

    /// Name of the congestion-control algorithm.
    #[must_use]
    pub fn congestion_algorithm(&self) -> &'static str {
        self.cc.name()
    }

    /// Whether SACK, timestamps and window scaling (`(send, receive)` shifts) were negotiated.
    #[must_use]
    pub fn negotiated(&self) -> (bool, bool, Option<(u8, u8)>) {
        let ws = self.ws_ok.then_some((self.snd_wscale, self.rcv_wscale));
        (self.sack_ok, self.ts_ok, ws)
    }

    /// Reserves option space on every segment for a [`SegmentHook`] (the MPTCP layer); the
    /// MSS shrinks by as much.
    pub fn set_option_space(&mut self, bytes: usize) {
        self.option_space = bytes.min(MAX_OPTIONS_LEN);
    }

    /// Makes the window this connection advertises the free space of a receive buffer it
    /// shares (`Some(free bytes)`, counted from what that buffer acknowledges next) rather
    /// than its own: an MPTCP subflow advertises the connection-level window, relative to the
    /// `DATA_ACK` (RFC 8684 §3.3.4). `None` goes back to the connection's own buffer. The window
    /// never shrinks below what was advertised.
    pub fn set_shared_window(&mut self, free: Option<u64>) {
        let opened = match (self.shared_window, free) {
            (Some(old), Some(new)) => new > old,
            _ => true,
        };
        self.shared_window = free;
        if opened {
            self.maybe_window_update();
        }
    }

    /// Turns Nagle's algorithm on or off (`TCP_NODELAY` is off).
    pub fn set_nagle(&mut self, on: bool) {
        self.cfg.nagle = on;
    }

    /// Sets keep-alive.
    pub fn set_keepalive(&mut self, keepalive: Option<super::Keepalive>, now: Instant) {
        self.cfg.keepalive = keepalive;
        self.keepalive_touch(now);
    }

    /// Bytes written and not yet acknowledged by the peer.
    #[must_use]
    pub fn send_buffered(&self) -> usize {
        self.send.len()
    }

    /// Bytes in the send buffer not delivered yet: unsent or in flight, not what the peer
    /// SACKed (those stay in the buffer until they are acknowledged cumulatively).
    #[must_use]
    pub fn send_undelivered(&self) -> u64 {
        (self.send.len() as u64).saturating_sub(self.queue.sacked())
    }

    /// Room left in the send buffer.
    #[must_use]
    pub fn send_capacity_left(&self) -> usize {
        if self.fin_queued || self.close_reason.is_some() {
            0
        } else {
            self.send.free()
        }
    }

    /// Bytes that can be read now.
    #[must_use]
    pub fn readable(&self) -> usize {
        self.recv.readable()
    }

    /// Queues bytes for sending; returns how many were taken.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        if let Some(r) = self.close_reason.filter(|r| *r != CloseReason::Finished) {
            return Err(WriteError::Closed(r));
        }
        if self.fin_queued || self.state == State::Closed {
            return Err(WriteError::Finished);
        }
        let n = self.send.write(data);
        if n < data.len() {
            self.write_blocked = true;
        }
        if n == 0 && !data.is_empty() {
            return Err(WriteError::Blocked);
        }
        Ok(n)
    }

    /// The received bytes in order, in place (two runs, either may be empty): read them
    /// without a copy, then `consume` what was taken.
    #[must_use]
    pub fn peek(&self) -> (&[u8], &[u8]) {
        self.recv.peek()
    }

    /// Takes the first `n` received bytes in order, as `read` would have (the window opens
    /// as they go); returns how many there were.
    pub fn consume(&mut self, n: usize) -> usize {
        let n = self.recv.consume(n);
        if n > 0 {
            self.consumed += n as u64;
            self.maybe_window_update();
        }
        n
    }

    /// Reads received bytes; `Ok(n)` with `n > 0`.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        let n = self.recv.read(buf);
        if n > 0 {
            self.consumed += n as u64;
            self.maybe_window_update();
            return Ok(n);
        }
        if buf.is_empty() && self.recv.readable() > 0 {
            return Ok(0);
        }
        self.readable_signalled = false;
        if self.fin_consumed {
            return Err(ReadError::Finished);
        }
        match self.close_reason {
            Some(CloseReason::Finished) => Err(ReadError::Finished),
            Some(r) => Err(ReadError::Closed(r)),
            None => Err(ReadError::Blocked),
        }
    }

    /// Ends the sending direction: a FIN follows the data written (a half-close; reading goes
    /// on until the peer's FIN). RFC 9293 §3.10.4.
    pub fn close(&mut self) {
        if self.fin_queued || self.close_reason.is_some() {
            return;
        }
        self.fin_queued = true;
        match self.state {
            State::Established => self.state = State::FinWait1,
            State::CloseWait => self.state = State::LastAck,
            // SYN-SENT and SYN-RECEIVED send the FIN once established.
            _ => {}
        }
    }

    /// Aborts: a RST goes out and the connection is closed (RFC 9293 §3.10.5).
    pub fn abort(&mut self) {
        if self.close_reason.is_some() && self.state == State::Closed {
            return;
        }
        if self.state != State::Closed && self.state != State::TimeWait {
            self.rst_due = self.state != State::SynSent || self.snd_max > 0;
        }
        self.terminate(CloseReason::Aborted);
    }

    /// The application no longer uses the connection; the endpoint forgets it once closed.
    /// A connection in FIN-WAIT-2 then waits [`Config::fin_wait_2`] for the peer's FIN.
    pub fn release(&mut self, now: Instant) {
        self.released = true;
        if self.state == State::FinWait2 {
            self.timers.set(Timer::Close, now + self.cfg.fin_wait_2);
        }
    }

    pub(crate) fn is_released(&self) -> bool {
        self.released
    }

    /// Whether a RST is still to be sent (the endpoint keeps the connection until it is).
    pub(crate) fn reset_pending(&self) -> bool {
        self.rst_due
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Ends the connection for `reason` (timers stop, buffers stay readable).
    fn terminate(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.timers.stop_all();
        if self.close_reason.is_none() {
            self.close_reason = Some(reason);
            self.events.push_back(Event::Closed(reason));
        }
    }

    // --- sequence numbers -------------------------------------------------------------

    /// The wire sequence number of send offset `off`.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "sequence numbers wrap by design"
    )]
    fn snd_seq(&self, off: u64) -> SeqNumber {
        self.iss.wrapping_add(off as u32)
    }

    /// The wire sequence number of receive offset `off`.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "sequence numbers wrap by design"
    )]
    fn rcv_seq(&self, off: u64) -> SeqNumber {
        self.irs.wrapping_add(off as u32)
    }

    /// The send offset an acknowledgment number stands for, relative to `SND.UNA`.
    #[expect(
        clippy::cast_possible_wrap,
        reason = "the signed distance is the point"
    )]
    fn ack_offset(&self, ack: SeqNumber) -> i64 {
        self.snd_una as i64 + i64::from(ack.since(self.snd_seq(self.snd_una)) as i32)
    }

    /// The receive offset a sequence number stands for, relative to `RCV.NXT`.
    #[expect(
        clippy::cast_possible_wrap,
        reason = "the signed distance is the point"
    )]
    /// The stream offset of the first payload byte of a segment at `seq` with `len` bytes,
    /// if some of it falls in the receive window now (what the MPTCP layer asks before the
    /// segment is handled: a mapping counts only on data the subflow takes).
    pub(crate) fn acceptable_payload(&self, seq: SeqNumber, syn: bool, len: usize) -> Option<u64> {
        if len == 0 || !self.state.is_synchronized() && self.state != State::SynReceived {
            return None;
        }
        let start = self.seq_offset(seq) + i64::from(syn);
        let end = start + len as i64;
        let right = self.rcv_adv.max(self.rcv_nxt + self.recv.window() as u64) as i64;
        (end > self.rcv_nxt as i64 && start < right && start >= 1).then(|| (start - 1) as u64)
    }

    fn seq_offset(&self, seq: SeqNumber) -> i64 {
        self.rcv_nxt as i64 + i64::from(seq.since(self.rcv_seq(self.rcv_nxt)) as i32)
    }

    /// Send offset just past the last byte written.
    fn data_end(&self) -> u64 {
        1 + self.send.end()
    }

    /// Send offset just past everything to send (the FIN included once queued).
    fn seq_end(&self) -> u64 {
        self.data_end() + u64::from(self.fin_queued)
    }

    fn fin_acked(&self) -> bool {
        self.fin_queued && self.snd_una > self.data_end()
    }

    /// Payload bytes of a full segment: the peer's MSS (RFC 6691: it excludes options) less
    /// what timestamps and the hook's options take, and what the MTU allows.
    fn smss(&self) -> u64 {
        self.smss_with(self.option_space)
    }

    /// Payload bytes of a full bare segment ([`SegmentHook::data_option_len`]): without the
    /// hook's options.
    fn smss_bare(&self) -> u64 {
        self.smss_with(0)
    }

    /// [`Connection::smss`] with `hook_space` bytes of the hook's options, packed after the
    /// 10 bytes of timestamps as [`Connection::payload_room`] packs them.
    fn smss_with(&self, hook_space: usize) -> u64 {
        let ip = if self.local.is_ipv4() { 20 } else { 40 };
        let opts = (if self.ts_ok { 10 } else { 0 }) + hook_space;
        let by_mtu = (self.cfg.mtu.saturating_sub(ip + HEADER_LEN)) as u64;
        let by_peer = self.peer_mss;
        by_mtu
            .min(by_peer)
            .saturating_sub(opts.div_ceil(4) as u64 * 4)
            .max(64)
    }

    /// Our MSS option: what the MTU allows (RFC 9293 §3.7.1).
    fn advertised_mss(&self) -> u16 {
        let ip = if self.local.is_ipv4() { 20 } else { 40 };
        u16::try_from(self.cfg.mtu.saturating_sub(ip + HEADER_LEN)).unwrap_or(u16::MAX)
    }

    /// The timestamp clock (milliseconds) with this connection's offset.
    fn ts_now(&self, now: Instant) -> u32 {
        timestamp_clock(self.epoch, now).wrapping_add(self.ts_offset)
    }

    // --- timers -----------------------------------------------------------------------

    /// The earliest timer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.timers.expire(now) {
            match t {
                Timer::Retransmit => self.on_retransmission_timeout(now),
                Timer::DelayedAck => self.ack_now = true,
                Timer::Persist => self.on_persist_timeout(now),
                Timer::Keepalive => self.on_keepalive_timeout(now),
                Timer::Close => match self.state {
                    State::TimeWait => {
                        self.state = State::Closed;
                        self.timers.stop_all();
                    }
                    State::FinWait2 => self.terminate(CloseReason::TimedOut),
                    _ => {}
                },
                // The pacer allows the next segment: `poll_transmit` sends it.
                Timer::Pacing => {}
                Timer::Reorder => self.detect_losses(now),
                Timer::TailProbe => {
                    if self.recovery == Recovery::Open && self.snd_max > self.snd_una {
                        self.tlp_due = true;
                    }
                }
                // What is outstanding may have changed since the timer was set without an ACK
                // (segments found lost and not sent again yet, or sent again): the due time
                // with it.
                Timer::Silence => match self.silence_due() {
                    Some(at) if at > now => self.timers.set(Timer::Silence, at),
                    Some(_) => self.silent = true,
                    None => {}
                },
            }
        }
    }

    /// RFC 6298 §5.4–5.7 and RFC 5681 §3.1: everything outstanding that the receiver does not
    /// hold is lost and sent again from `SND.UNA`, in slow start, with the timer backed off.
    fn on_retransmission_timeout(&mut self, now: Instant) {
        let give_up = match self.state {
            // A timeout seeded shorter than the initial one (RFC 9040) tries more often; the
            // handshake is given up no sooner than unseeded (as Linux counts its SYN retries
            // in time from its initial timeout).
            State::SynSent | State::SynReceived => {
                self.rtt.backoff() >= self.cfg.syn_retries
                    && (!self.rtt.is_seeded()
                        || self.stalled_since.is_some_and(|s| {
                            let tries = (1u32 << self.cfg.syn_retries.min(16)) - 1;
                            now.saturating_duration_since(s)
                                >= self.cfg.initial_rto.saturating_mul(tries)
                        }))
            }
            _ => {
                self.rtt.backoff() >= self.cfg.max_retransmissions
                    || self.cfg.user_timeout.is_some_and(|ut| {
                        self.stalled_since
                            .is_some_and(|s| now.saturating_duration_since(s) >= ut)
                    })
            }
        };
        if give_up {
            self.rst_due = self.state.is_synchronized();
            self.terminate(CloseReason::TimedOut);
            return;
        }
        self.stats.timeouts += 1;
        self.stalled_since.get_or_insert(now);
        // A capped timeout that reached its cap stays there, and so does the count that
        // gives up on the connection: it keeps probing while its data goes elsewhere.
        if !self.rtt.at_cap() {
            self.rtt.back_off();
        }
        if matches!(self.state, State::SynSent | State::SynReceived) {
            // The SYN (or SYN-ACK) goes again; RFC 6298 §5.7: the window after a lost SYN
            // is one segment. A SYN with data that got no answer may have met a middlebox
            // that drops such SYNs: the endpoint holds the server back from Fast Open for a
            // while (RFC 7413 §4.1.3.1); this one retries without data.
            if let Some(fo) = self.fo_client.as_mut() {
                if fo.syn_data > 0 && !fo.retried {
                    self.fo_news = Some(CookieNews::SynLost);
                }
                fo.retried = true;
            }
            self.syn_due = true;
            return;
        }
        if self.snd_max == self.snd_una {
            return;
        }
        let in_flight = self.snd_max - self.snd_una;
        if matches!(self.recovery, Recovery::Loss { .. }) {
            self.cc.on_repeated_timeout(now, self.smss());
        } else {
            self.cc
                .on_retransmission_timeout(now, in_flight, self.smss());
        }
        self.recovery = Recovery::Loss {
            point: self.snd_max,
        };
        self.dupacks = 0;
        self.tlp = None;
        self.tlp_due = false;
        self.timers.stop(Timer::TailProbe);
        self.timers.stop(Timer::Reorder);
        // A second timeout in a row: the receiver may have dropped what it SACKed (RFC 2018
        // §8 allows it), so that is sent again too.
        self.queue.mark_all_lost(self.rtt.backoff() >= 2);
        self.timers.set(Timer::Retransmit, now + self.rtt.rto());
    }

    fn on_persist_timeout(&mut self, now: Instant) {
        if self.persist_probes >= self.cfg.max_retransmissions {
            self.rst_due = true;
            self.terminate(CloseReason::TimedOut);
            return;
        }
        self.persist_probes += 1;
        self.probe = Some(Probe::ZeroWindow);
        self.timers
            .set(Timer::Persist, now + self.persist_interval());
    }

    fn persist_interval(&self) -> Duration {
        let shift = self.persist_probes.min(16);
        self.rtt
            .rto()
            .saturating_mul(1 << shift)
            .min(self.cfg.max_rto)
    }

    fn on_keepalive_timeout(&mut self, now: Instant) {
        let Some(ka) = self.cfg.keepalive else { return };
        if !self.state.is_synchronized() || self.state == State::TimeWait {
            return;
        }
        if self.keepalive_probes >= ka.count {
            self.rst_due = true;
            self.terminate(CloseReason::TimedOut);
            return;
        }
        self.keepalive_probes += 1;
        self.probe = Some(Probe::Keepalive);
        self.timers.set(Timer::Keepalive, now + ka.interval);
    }

    /// Something arrived from the peer: keep-alive starts over.
    fn keepalive_touch(&mut self, now: Instant) {
        self.keepalive_probes = 0;
        match self.cfg.keepalive {
            Some(ka) if self.state != State::TimeWait && self.state != State::Closed => {
                self.timers.set(Timer::Keepalive, now + ka.idle);
            }
            _ => self.timers.stop(Timer::Keepalive),
        }
    }

    // --- receiving ----------------------------------------------------------------------

    /// Handles a segment addressed to this connection (RFC 9293 §3.10.7).
    pub(crate) fn handle_segment(&mut self, now: Instant, seg: &TcpRepr<'_>) -> Reaction {
        self.stats.segs_in += 1;
        match self.state {
            State::Closed => return Reaction::None,
            State::SynSent => return self.on_segment_syn_sent(now, seg),
            _ => {}
        }
        let flags = seg.flags;
        let rst = flags.contains(TcpFlags::RST);
        let syn = flags.contains(TcpFlags::SYN);
        let fin = flags.contains(TcpFlags::FIN);

        // RFC 7323 §5.3: PAWS.
        if self.ts_ok && !rst {
            if let Some((tsval, _)) = seg.timestamps {
                let older = (tsval.wrapping_sub(self.ts_recent) as i32) < 0;
                if older {
                    self.stats.paws_drops += 1;
                    self.ack_now = true;
                    return Reaction::None;
                }
            }
        }

        // The peer's SYN again (without ACK) in SYN-RECEIVED: our SYN-ACK was lost (the SYN
        // lies before the window, so it must be caught before the window check). A SYN-ACK
        // here is a simultaneous open's: it goes through the checks below.
        if syn
            && !rst
            && seg.ack_number.is_none()
            && self.state == State::SynReceived
            && seg.seq_number == self.irs
        {
            self.syn_due = true;
            return Reaction::None;
        }

        // RFC 9293 §3.10.7.4, first check: is the segment in the window?
        let seq = self.seq_offset(seg.seq_number);
        let Some(ack_only) = self.acceptable(seg, seq) else {
            return Reaction::None;
        };

        // Second check: RST (RFC 5961 §3.2).
        if rst {
            if seq == self.rcv_nxt as i64 {
                if self.state == State::SynReceived && !self.released {
                    // A passive open goes back to LISTEN: the listener forgets it.
                    self.terminate(CloseReason::Reset);
                    return Reaction::Forget;
                }
                self.terminate(CloseReason::Reset);
            } else {
                self.challenge_ack(now);
            }
            return Reaction::None;
        }

        // Third/fourth check: SYN (RFC 5961 §4).
        if syn {
            self.challenge_ack(now);
            return Reaction::None;
        }

        // Fifth check: ACK.
        let Some(ack) = seg.ack_number else {
            return Reaction::None;
        };
        let ack_off = self.ack_offset(ack);
        let mut reaction = Reaction::None;
        if self.state == State::SynReceived {
            if ack_off < 1 || ack_off > self.snd_max as i64 {
                return Reaction::Reset(ack);
            }
            self.establish(now);
            reaction = Reaction::Established;
        }
        if ack_off > self.snd_max as i64 {
            // Acknowledges something not sent (RFC 9293): ACK and drop.
            self.ack_now = true;
            return reaction;
        }
        // RFC 5961 §5.2: too old to be a valid ACK.
        if ack_off < self.snd_una as i64 - self.max_snd_wnd as i64 {
            self.challenge_ack(now);
            return reaction;
        }
        self.keepalive_touch(now);
        self.update_ts(now, seg, seq);
        #[expect(
            clippy::cast_sign_loss,
            reason = "checked to be at least SND.UNA − window"
        )]
        let ack_off = (ack_off.max(0)) as u64;
        self.on_ack(now, seg, ack_off);
        if self.state == State::Closed {
            return reaction;
        }

        // Seventh: the segment text; eighth: FIN.
        if !ack_only {
            self.on_data(now, seg, seq, fin);
        }
        reaction
    }

    /// RFC 9293 §3.10.7.4's first check for a segment starting at offset `seq`: `None` if
    /// it is not acceptable (an ACK is owed unless it is a RST), `Some(true)` if only its ACK
    /// (and RST) may be taken (a closed window, the segment at `RCV.NXT`), `Some(false)` if
    /// all of it may.
    fn acceptable(&mut self, seg: &TcpRepr<'_>, seq: i64) -> Option<bool> {
        let seg_len = seg.payload.len() as i64
            + i64::from(seg.flags.contains(TcpFlags::SYN))
            + i64::from(seg.flags.contains(TcpFlags::FIN));
        let (acceptable, ack_only) = self.window_check(seg, seq);
        // A zero window still takes the ACK (and RST) of a segment at RCV.NXT; if it carried
        // data (a one-byte zero-window probe, as BSD and Windows send), it is answered with
        // our window.
        if ack_only && seg_len > 0 {
            self.ack_now = true;
        }
        if !acceptable && !ack_only {
            if !seg.flags.contains(TcpFlags::RST) {
                self.ack_now = true;
            }
            return None;
        }
        Some(ack_only)
    }

    /// RFC 9293 §3.10.7.4's acceptability test for a segment at offset `seq`, without
    /// acting on it: (acceptable, only its ACK may be taken).
    fn window_check(&self, seg: &TcpRepr<'_>, seq: i64) -> (bool, bool) {
        let syn = seg.flags.contains(TcpFlags::SYN);
        let fin = seg.flags.contains(TcpFlags::FIN);
        let seg_len = seg.payload.len() as i64 + i64::from(syn) + i64::from(fin);
        let rcv_nxt = self.rcv_nxt as i64;
        let wnd = self.rcv_adv.saturating_sub(self.rcv_nxt) as i64;
        let in_window = |s: i64| rcv_nxt <= s && s < rcv_nxt + wnd;
        let bare_fin = fin && seg.payload.is_empty() && !syn;
        let acceptable = match (seg_len, wnd) {
            (0, 0) => seq == rcv_nxt,
            (0, _) => in_window(seq),
            // A FIN takes no buffer: it is taken at RCV.NXT even by a closed window.
            (_, 0) => bare_fin && seq == rcv_nxt,
            (len, _) => in_window(seq) || in_window(seq + len - 1),
        };
        (acceptable, !acceptable && wnd == 0 && seq == rcv_nxt)
    }

    /// Whether the options of `seg` may be acted on, asked before it is handled: once
    /// synchronized, only those of a segment that passes RFC 9293 §3.10.7.4's test (a RST:
    /// only at `RCV.NXT` exactly, RFC 5961 §3.2). An off-path guess of the sequence number
    /// must not be able to make the MPTCP layer act (`MP_PRIO`, `REMOVE_ADDR` and `MP_TCPRST`
    /// carry no proof), and Linux drops such a segment before reading its options too.
    /// Before synchronization: yes (SYN-SENT and SYN-RECEIVED check what they take).
    pub(crate) fn options_acceptable(&self, seg: &TcpRepr<'_>) -> bool {
        if !self.state.is_synchronized() {
            return true;
        }
        let seq = self.seq_offset(seg.seq_number);
        if seg.flags.contains(TcpFlags::RST) {
            return seq == self.rcv_nxt as i64;
        }
        let (acceptable, ack_only) = self.window_check(seg, seq);
        acceptable || ack_only
    }

    /// SYN-SENT (RFC 9293 §3.10.7.3).
    fn on_segment_syn_sent(&mut self, now: Instant, seg: &TcpRepr<'_>) -> Reaction {
        let rst = seg.flags.contains(TcpFlags::RST);
        let syn = seg.flags.contains(TcpFlags::SYN);
        let mut acked = false;
        // With TCP Fast Open the SYN-ACK may also acknowledge the data our SYN carried.
        let syn_data = self.fo_client.as_ref().map_or(0, |f| f.syn_data);
        let mut ack_off = 1;
        if let Some(ack) = seg.ack_number {
            ack_off = self.ack_offset(ack);
            if !(1..=1 + syn_data as i64).contains(&ack_off) || self.snd_max == 0 {
                return if rst {
                    Reaction::None
                } else {
                    Reaction::Reset(ack)
                };
            }
            acked = true;
        }
        if rst {
            // RFC 5961 §3.2: only a RST that acknowledges our SYN.
            if acked {
                self.terminate(CloseReason::Refused);
            }
            return Reaction::None;
        }
        if !syn {
            return Reaction::None;
        }
        self.adopt_syn(&PeerSyn::from_repr(seg));
        self.snd_wl1 = seg.seq_number;
        self.keepalive_touch(now);
        if acked {
            #[expect(clippy::cast_sign_loss, reason = "checked to be at least 1")]
            let ack_off = ack_off as u64;
            self.on_fast_open_answer(seg, ack_off - 1);
            self.snd_max = self.snd_max.max(ack_off);
            self.snd_wl2 = ack_off;
            self.snd_wnd = u64::from(seg.window_len);
            self.max_snd_wnd = self.snd_wnd;
            self.on_new_ack(now, ack_off);
            self.establish(now);
            self.ack_now = true;
            // Data in the SYN-ACK (TCP Fast Open answers) follows the SYN.
            // Our SYN's window (unscaled) is what the peer may fill.
            self.rcv_adv = self.rcv_nxt + (self.recv.window() as u64).min(65_535);
            let seq = self.seq_offset(seg.seq_number) + 1;
            if !seg.payload.is_empty() || seg.flags.contains(TcpFlags::FIN) {
                self.on_data(now, seg, seq, seg.flags.contains(TcpFlags::FIN));
            }
        } else {
            // Simultaneous open (RFC 9293 §3.5, figure 8): our SYN goes again with an ACK.
            self.state = State::SynReceived;
            self.snd_wnd = u64::from(seg.window_len);
            self.max_snd_wnd = self.snd_wnd;
            self.syn_due = true;
        }
        Reaction::None
    }

    /// A client's SYN-ACK: how much of the SYN's data it took (`taken`), and what it says of
    /// the cookie (RFC 7413 §4.1.3).
    fn on_fast_open_answer(&mut self, seg: &TcpRepr<'_>, taken: u64) {
        let Some(fo) = &self.fo_client else {
            return;
        };
        self.syn_data = taken;
        let cookie = seg
            .fast_open
            .filter(|c| c.len() >= 4)
            .map(|c| CachedCookie {
                cookie: c.iter().copied().collect(),
                mss: seg.max_seg_size.unwrap_or(536),
            });
        self.fo_news = if taken > 0 {
            // The cookie worked (a timeout may have doubted it).
            Some(CookieNews::Taken(cookie))
        } else if fo.syn_data > 0 && !fo.retried {
            // Data refused: a new cookie replaces the old, none means ask again next time.
            Some(CookieNews::Refused(cookie))
        } else {
            // The answer to a cookie request, or to a retry (which carried neither cookie nor
            // data and so says nothing of them).
            cookie.map(CookieNews::Got)
        };
    }

    fn establish(&mut self, _now: Instant) {
        self.state = if self.fin_queued {
            State::FinWait1
        } else {
            State::Established
        };
        self.events.push_back(Event::Connected);
    }

    /// RFC 7323 §4.3: remember the timestamp to echo.
    fn update_ts(&mut self, now: Instant, seg: &TcpRepr<'_>, seq: i64) {
        if !self.ts_ok {
            return;
        }
        if let Some((tsval, tsecr)) = seg.timestamps {
            let newer = (tsval.wrapping_sub(self.ts_recent) as i32) >= 0;
            if newer && seq <= self.last_ack_sent as i64 {
                self.ts_recent = tsval;
            }
            if tsecr != 0 && !seg.payload.is_empty() {
                self.rcv_rtt_sample(now, tsecr);
            }
        }
    }

    /// A receiver's RTT estimate from an echoed timestamp (Linux's `tcp_rcv_rtt_measure_ts`).
    fn rcv_rtt_sample(&mut self, now: Instant, tsecr: u32) {
        let ms = self.ts_now(now).wrapping_sub(tsecr);
        if ms > 60_000 {
            // Not an echo of our clock (or a minute old): no sample.
            return;
        }
        let sample = Duration::from_millis(u64::from(ms.max(1)));
        self.rcv_rtt = Some(self.rcv_rtt.map_or(sample, |r| (r * 7 + sample) / 8));
    }

    /// ACK processing of an acceptable segment (RFC 9293 §3.10.7.4 fifth check), SACK
    /// (RFC 2018) and loss detection (RFC 6675, RFC 8985).
    fn on_ack(&mut self, now: Instant, seg: &TcpRepr<'_>, ack_off: u64) {
        let mss = self.smss();
        let due = self.ack_due();
        let progress = ack_off > self.snd_una;
        let delivered_before = self.queue.delivered();
        // Window update (RFC 9293 SND.WL1/SND.WL2 rule).
        let window = u64::from(seg.window_len) << self.snd_wscale;
        let seq_num = seg.seq_number;
        let wl_ok = self.snd_wl1 < seq_num || (self.snd_wl1 == seq_num && self.snd_wl2 <= ack_off);
        let window_changed = wl_ok && window != self.snd_wnd;
        if wl_ok {
            self.snd_wnd = window;
            self.max_snd_wnd = self.max_snd_wnd.max(window);
            self.snd_wl1 = seq_num;
            self.snd_wl2 = ack_off;
            if window > 0 {
                self.timers.stop(Timer::Persist);
            }
        }
        // A peer that answers our zero-window probes is alive, however long it keeps its
        // window closed (RFC 9293 §3.8.6.1): only unanswered probes count.
        self.persist_probes = 0;
        // SACK blocks (RFC 2018), clipped to what is outstanding.
        let mut newly_sacked = 0;
        if self.sack_ok {
            let min_rtt = self.rtt.min();
            for &(l, r) in &seg.sack_blocks {
                let start = self.ack_offset(SeqNumber(l));
                let end = self.ack_offset(SeqNumber(r));
                if start < end && start >= self.snd_una as i64 {
                    let d = self.queue.sack(start as u64, end as u64, now, min_rtt);
                    newly_sacked += d.bytes;
                    if let Some(rtt) = d.rtt_sample {
                        self.rtt.on_sample(rtt);
                    }
                }
            }
        }
        let mut dupack = false;
        if ack_off > self.snd_una {
            self.on_new_ack(now, ack_off);
        } else if ack_off == self.snd_una && self.snd_max > self.snd_una {
            // RFC 5681 §2: a duplicate ACK (with SACK, one that SACKs new data).
            let dup = if self.sack_ok {
                newly_sacked > 0
            } else {
                seg.payload.is_empty() && !window_changed && !seg.flags.contains(TcpFlags::FIN)
            };
            dupack = dup;
            if dup {
                self.dupacks += 1;
                if !self.sack_ok
                    && u64::from(self.dupacks) == super::sent::DUP_THRESH
                    && self.recovery == Recovery::Open
                {
                    // RFC 6582 §3.2 (2): fast retransmit of the segment at SND.UNA.
                    self.queue.mark_first_lost();
                    self.enter_fast_recovery(now, mss);
                }
            }
        }
        if self.sack_ok {
            self.detect_losses(now);
        }
        if let Some(sample) = self.queue.take_rate_sample(self.rtt.min()) {
            let delivery = Delivery {
                now,
                sample,
                acked: self.queue.delivered() - delivered_before,
                in_flight: self.in_flight(),
                mss,
            };
            self.cc.on_delivery(&delivery);
            if self.cc.holds_back() {
                self.queue.mark_app_limited();
            }
        }
        self.arm_tail_probe(now);
        // The peer heard us: it acknowledged or SACKed new data, or sent a duplicate ACK.
        // Its own data, a window update or an old ACK say nothing of our direction.
        if progress || newly_sacked > 0 || dupack {
            self.note_lateness(now, due);
            self.last_heard = Some(now);
            self.silent = false;
        }
        self.arm_silence();
        self.update_pacer();
    }

    /// New data acknowledged up to `ack_off`.
    fn on_new_ack(&mut self, now: Instant, ack_off: u64) {
        let mss = self.smss();
        let in_flight_before = self.in_flight();
        let acked = ack_off - self.snd_una;
        // Bytes of data acknowledged (the SYN and FIN take sequence space but are not data).
        let data_from = self.snd_una.max(1) - 1;
        let data_to = ack_off.min(self.data_end()).max(1) - 1;
        self.stats.bytes_acked += data_to.saturating_sub(data_from);
        self.send.ack_to(data_to);
        let delivered = self.queue.ack(ack_off, now, self.rtt.min());
        // RFC 6298 §3, Karn: only an acknowledgment of segments sent once gives a sample; one
        // that also covers a retransmission gives none, and a backed-off timeout stays until
        // new data is acknowledged (§5.7). (Its echoed timestamp is no help: after an outage
        // the receiver echoes the segment before it, the retransmission being a duplicate.)
        if let Some(rtt) = delivered.rtt_sample {
            self.rtt.on_sample(rtt);
        }
        self.snd_una = ack_off;
        self.dupacks = 0;
        self.stalled_since = None;
        if let Some((end, retransmission)) = self.tlp {
            if ack_off >= end {
                self.tlp = None;
                // RFC 8985 §7.4: a probe that retransmitted data repaired a loss (without
                // D-SACK we cannot tell it was not needed): respond as to a loss.
                if retransmission && delivered.retransmission && self.recovery == Recovery::Open {
                    self.cc.on_congestion_event(now, in_flight_before, mss);
                    self.cc.on_recovery_end(now, mss);
                }
            }
        }
        // After a timeout, slow start goes on until what was outstanding then is acknowledged.
        if let Recovery::Loss { point } = self.recovery {
            if ack_off >= point {
                self.recovery = Recovery::Open;
            }
        }
        match self.recovery {
            Recovery::Fast { point } if ack_off >= point => {
                // RFC 6675 §5 / RFC 6582 §3.2 (3): recovery ends when the recovery point is
                // acknowledged.
                self.recovery = Recovery::Open;
                self.cc.on_recovery_end(now, mss);
            }
            Recovery::Fast { .. } => {
                // A partial ACK: without SACK, the next hole is at SND.UNA (RFC 6582 §3.2 (4)).
                if !self.sack_ok {
                    self.queue.mark_first_lost();
                }
            }
            Recovery::Loss { .. } | Recovery::Open => {
                let ack = Ack {
                    now,
                    acked,
                    in_flight: in_flight_before,
                    cwnd_limited: self.cwnd_limited,
                    mss,
                    rtt_sample: delivered.rtt_sample,
                    srtt: self.rtt.srtt_or(self.cfg.initial_rto),
                    min_rtt: self.rtt.min().unwrap_or(self.cfg.initial_rto),
                    acked_to: ack_off,
                    sent_to: self.snd_max,
                    paced: self.pacing() && self.pacer.rate().is_some(),
                };
                self.cc.on_ack(&ack);
            }
        }
        self.update_pacer();
        // The send buffer holds twice the window (Linux's `tcp_sndbuf_expand`), so the
        // application can keep the window full.
        let want = self
            .cc
            .window()
            .saturating_mul(2)
            .min(self.cfg.send_buffer_max as u64);
        if want > self.send.capacity() as u64 {
            self.send
                .set_capacity(usize::try_from(want).unwrap_or(usize::MAX));
        }
        if self.write_blocked && self.send.free() > 0 && !self.fin_queued {
            self.write_blocked = false;
            self.events.push_back(Event::Writable);
        }
        // RFC 6298 §5.2–5.3.
        if self.snd_una >= self.snd_max {
            self.timers.stop(Timer::Retransmit);
            self.timers.stop(Timer::Reorder);
        } else {
            self.timers.set(Timer::Retransmit, now + self.rtt.rto());
        }
        // Our FIN acknowledged.
        if self.fin_acked() {
            match self.state {
                State::FinWait1 => {
                    self.state = State::FinWait2;
                    if self.released {
                        self.timers.set(Timer::Close, now + self.cfg.fin_wait_2);
                    }
                }
                State::Closing => self.enter_time_wait(now),
                State::LastAck => {
                    self.terminate(CloseReason::Finished);
                }
                _ => {}
            }
        }
    }

    /// Runs RACK (RFC 8985 §6.2) and RFC 6675's `IsLost` over the queue; a loss starts fast
    /// recovery, a segment not yet overdue sets the reordering timer.
    fn detect_losses(&mut self, now: Instant) {
        let mss = self.smss();
        let in_recovery = self.recovery != Recovery::Open;
        let min_rtt = self.rtt.min().unwrap_or(self.cfg.initial_rto);
        let srtt = self.rtt.srtt_or(self.cfg.initial_rto);
        let reo_wnd = self
            .queue
            .reordering_window(in_recovery, min_rtt, srtt, mss);
        let (rack_lost, timer) = self.queue.detect_rack(now, reo_wnd);
        let dup_lost = self.queue.detect_dupthresh(mss);
        match timer {
            Some(at) => self.timers.set(Timer::Reorder, at),
            None => self.timers.stop(Timer::Reorder),
        }
        if rack_lost + dup_lost > 0 && self.recovery == Recovery::Open {
            self.enter_fast_recovery(now, mss);
        }
    }

    /// RFC 6675 §5 step 4 / RFC 5681 §3.2: a loss was found; reduce the window once for
    /// everything outstanding now.
    fn enter_fast_recovery(&mut self, now: Instant, mss: u64) {
        let in_flight = self.snd_max - self.snd_una;
        self.recovery = Recovery::Fast {
            point: self.snd_max,
        };
        self.stats.fast_recoveries += 1;
        self.tlp = None;
        self.timers.stop(Timer::TailProbe);
        self.cc.on_congestion_event(now, in_flight, mss);
    }

    /// RFC 8985 §7.2: with data outstanding and no loss recovery going on, a probe after two
    /// round trips turns a lost tail into a SACK-visible loss instead of a timeout.
    fn arm_tail_probe(&mut self, now: Instant) {
        let eligible = self.sack_ok
            && self.recovery == Recovery::Open
            && self.tlp.is_none()
            && self.snd_max > self.snd_una
            && self.state.is_synchronized();
        let (true, Some(srtt)) = (eligible, self.rtt.srtt()) else {
            self.timers.stop(Timer::TailProbe);
            return;
        };
        let mut pto = srtt * 2;
        if self.in_flight() <= self.smss() {
            // One segment out: the peer may delay its ACK.
            pto += self.cfg.delayed_ack;
        }
        let at = now + pto;
        if self
            .timers
            .get(Timer::Retransmit)
            .is_none_or(|rto| at < rto)
        {
            self.timers.set(Timer::TailProbe, at);
        } else {
            self.timers.stop(Timer::TailProbe);
        }
    }

    /// Whether segments are paced: the configuration paces and the congestion controller
    /// wants it ([`Controller::paced`]).
    fn pacing(&self) -> bool {
        self.cfg.pacing && self.cc.paced()
    }

    fn update_pacer(&mut self) {
        if !self.pacing() {
            return;
        }
        if let Some(rate) = self.cc.pacing_rate() {
            self.pacer.set_rate(rate, self.smss());
        } else {
            self.pacer.update(
                self.cc.window(),
                self.rtt.srtt(),
                self.cc.in_slow_start(),
                self.smss(),
            );
        }
    }

    /// Bytes believed in the network (RFC 6675 `pipe`); without SACK, each duplicate ACK
    /// stands for a segment that left it (RFC 5681 §3.2).
    fn in_flight(&self) -> u64 {
        let pipe = self.queue.in_flight();
        if self.sack_ok {
            pipe
        } else {
            pipe.saturating_sub(u64::from(self.dupacks) * self.smss())
        }
    }

    /// The segment text and FIN of an acceptable segment whose first sequence number is at
    /// offset `seq` (RFC 9293 §3.10.7.4, seventh and eighth checks).
    fn on_data(&mut self, now: Instant, seg: &TcpRepr<'_>, seq: i64, fin: bool) {
        let receiving = matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2 | State::SynReceived
        );
        let payload = seg.payload;
        if !payload.is_empty() && receiving && !self.fin_consumed {
            // Trim to the window: nothing before RCV.NXT (the buffer drops it) or beyond the
            // right edge advertised.
            let edge = self.rcv_adv as i64;
            let end = (seq + payload.len() as i64).min(edge);
            if end > seq && seq >= 1 {
                let take = usize::try_from(end - seq).unwrap_or(0);
                let stream_at = (seq - 1) as u64;
                let r = self.recv.insert(stream_at, &payload[..take]);
                let before = self.rcv_nxt;
                self.rcv_nxt = 1 + self.recv.next();
                self.stats.bytes_received += r.readable as u64;
                if r.readable > 0 {
                    self.signal_readable();
                }
                if r.out_of_order > 0 || r.filled_hole || r.duplicate || take < payload.len() {
                    // RFC 5681 §4.2: out of order or filling a hole: ACK at once.
                    self.ack_now = true;
                } else if self.rcv_nxt > before {
                    self.unacked_segments += 1;
                    if self.unacked_segments >= 2 {
                        self.ack_now = true;
                    } else if !self.timers.is_set(Timer::DelayedAck) {
                        self.timers
                            .set(Timer::DelayedAck, now + self.delayed_ack_timeout());
                    }
                }
                self.autotune(now);
            } else {
                self.ack_now = true;
            }
        }
        if fin && !self.fin_consumed {
            let fin_at = seq + payload.len() as i64;
            if fin_at >= self.rcv_nxt as i64 && fin_at <= self.rcv_adv.max(self.rcv_nxt) as i64 {
                self.peer_fin = Some(fin_at as u64);
            }
            self.ack_now = true;
        }
        if let Some(at) = self.peer_fin {
            if at == self.rcv_nxt && !self.fin_consumed {
                self.consume_fin(now);
            }
        }
    }

    /// The peer's FIN is next in sequence: the receiving direction ends.
    fn consume_fin(&mut self, now: Instant) {
        self.fin_consumed = true;
        self.rcv_nxt += 1;
        self.ack_now = true;
        self.signal_readable();
        match self.state {
            State::SynReceived | State::Established => self.state = State::CloseWait,
            State::FinWait1 => {
                if self.fin_acked() {
                    self.enter_time_wait(now);
                } else {
                    self.state = State::Closing;
                }
            }
            State::FinWait2 => self.enter_time_wait(now),
            _ => {}
        }
    }

    fn enter_time_wait(&mut self, now: Instant) {
        self.state = State::TimeWait;
        self.timers.stop_all();
        self.timers.set(Timer::Close, now + self.cfg.time_wait);
        if self.close_reason.is_none() {
            self.close_reason = Some(CloseReason::Finished);
            self.events.push_back(Event::Closed(CloseReason::Finished));
        }
    }

    fn signal_readable(&mut self) {
        if !self.readable_signalled {
            self.readable_signalled = true;
            self.events.push_back(Event::Readable);
        }
    }

    fn delayed_ack_timeout(&self) -> Duration {
        self.cfg.delayed_ack
    }

    /// Receive-buffer auto-tuning (Linux's `tcp_rcv_space_adjust`): once per round trip, let
    /// the buffer hold twice what the application read in the last one, so the window never
    /// limits a sender that the application keeps up with.
    fn autotune(&mut self, now: Instant) {
        let rtt = self
            .rtt
            .srtt()
            .or(self.rcv_rtt)
            .unwrap_or(Duration::from_millis(100));
        let mark = *self.rcv_space.mark.get_or_insert(now);
        if now.saturating_duration_since(mark) < rtt {
            return;
        }
        let copied = self.consumed - self.rcv_space.consumed_at_mark;
        if copied > self.rcv_space.space {
            self.rcv_space.space = copied;
            let mss = usize::try_from(self.smss()).unwrap_or(1460);
            let want = usize::try_from(copied.saturating_mul(2))
                .unwrap_or(usize::MAX)
                .saturating_add(16 * mss);
            // Without window scaling no window beyond 64 KiB can be advertised.
            let limit = if self.ws_ok {
                self.cfg.recv_buffer_max
            } else {
                self.cfg.recv_buffer_max.min(65_535)
            };
            let cap = want.min(limit).max(self.recv.capacity());
            self.recv.set_capacity(cap);
        }
        self.rcv_space.mark = Some(now);
        self.rcv_space.consumed_at_mark = self.consumed;
    }

    /// After the application read: announce a window that grew a lot (RFC 9293 §3.8.6.2.2,
    /// Linux's "window at least doubled").
    fn maybe_window_update(&mut self) {
        if !self.state.is_synchronized() || self.fin_consumed {
            return;
        }
        let advertised = self.rcv_adv.saturating_sub(self.rcv_nxt);
        let now_free = self.shared_window.unwrap_or(self.recv.window() as u64);
        let threshold = (self.recv.capacity() as u64 / 2).min(2 * self.smss());
        if now_free >= 2 * advertised && now_free - advertised >= threshold {
            self.ack_now = true;
        }
    }

    /// A challenge ACK (RFC 5961 §3.2, §4.2, §5.2), at most a few per second.
    fn challenge_ack(&mut self, now: Instant) {
        let refill = *self.challenge_refill.get_or_insert(now);
        if now.saturating_duration_since(refill) >= Duration::from_secs(1) {
            self.challenge_tokens = CHALLENGE_ACKS_PER_SECOND;
            self.challenge_refill = Some(now);
        }
        if self.challenge_tokens > 0 {
            self.challenge_tokens -= 1;
            self.stats.challenge_acks += 1;
            self.ack_now = true;
        }
    }

    // --- sending ------------------------------------------------------------------------

    /// The window to advertise now and the right edge it stands for (RFC 7323 §2.3; never
    /// shrinking, RFC 9293 §3.8.6.2.2's silly-window avoidance).
    fn window_to_advertise(&self, syn: bool) -> (u16, u64) {
        let free = self.shared_window.unwrap_or(self.recv.window() as u64);
        let mut edge = self.rcv_nxt + free;
        let step = (self.recv.capacity() as u64 / 2).min(self.smss());
        if edge < self.rcv_adv || (edge - self.rcv_adv < step && self.rcv_adv > self.rcv_nxt) {
            edge = self.rcv_adv.max(self.rcv_nxt);
        }
        let wnd = edge - self.rcv_nxt;
        if syn {
            let w = wnd.min(65_535);
            return (u16::try_from(w).unwrap_or(u16::MAX), self.rcv_nxt + w);
        }
        let shift = u32::from(self.rcv_wscale);
        let scaled = wnd.div_ceil(1 << shift).min(65_535);
        (
            u16::try_from(scaled).unwrap_or(u16::MAX),
            self.rcv_nxt + (scaled << shift),
        )
    }

    /// Writes the next segment to send into `buf` (the TCP segment only: the endpoint adds
    /// the IP header); returns its length. Worth calling again after every `handle_segment`,
    /// `handle_timeout`, `write`, `read` or `close`, until it returns `None`.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        hook: &mut dyn SegmentHook,
    ) -> Option<usize> {
        if self.rst_due {
            self.rst_due = false;
            let flags = TcpFlags(TcpFlags::RST);
            return Some(self.emit(now, buf, hook, flags, self.snd_max, 0, false));
        }
        match self.state {
            State::Closed => return None,
            State::SynSent => {
                if self.syn_due {
                    return Some(self.emit_syn(now, buf, hook, false));
                }
                return None;
            }
            State::SynReceived if self.syn_due => {
                return Some(self.emit_syn(now, buf, hook, true));
            }
            _ => {}
        }
        if std::mem::take(&mut self.pure_ack_due) && self.state.is_synchronized() {
            return Some(self.emit(now, buf, hook, TcpFlags(0), self.snd_max, 0, false));
        }
        if let Some(n) = self.poll_data(now, buf, hook) {
            return Some(n);
        }
        if let Some(probe) = self.probe.take() {
            match probe {
                Probe::ZeroWindow => self.stats.zero_window_probes += 1,
                Probe::Keepalive => self.stats.keepalive_probes += 1,
            }
            let seq = self.snd_una.saturating_sub(1);
            return Some(self.emit(now, buf, hook, TcpFlags(0), seq, 0, false));
        }
        if self.ack_now {
            return Some(self.emit(now, buf, hook, TcpFlags(0), self.snd_max, 0, false));
        }
        None
    }

    /// Our SYN (or SYN-ACK), with the options we offer or accept.
    fn emit_syn(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        hook: &mut dyn SegmentHook,
        ack: bool,
    ) -> usize {
        let mut flags = TcpFlags::SYN;
        if ack {
            flags |= TcpFlags::ACK;
        }
        let retransmission = self.snd_max > 0;
        self.syn_due = false;
        // TCP Fast Open on the first SYN only (RFC 7413 §4.1.3): the cookie and the data
        // written so far, or a cookie request.
        let mut data_len = 0;
        let room = self.syn_data_room();
        let mut option = None;
        if let Some(fo) = self.fo_client.as_mut().filter(|f| !ack && !f.sent) {
            fo.sent = true;
            match &fo.cached {
                Some(c) => {
                    data_len = room.min(self.send.len());
                    if data_len > 0 {
                        option = Some(c.cookie.clone());
                    }
                }
                None => option = Some(Cookie::new()),
            }
        } else if ack {
            option.clone_from(&self.fo_cookie_out);
        }
        let n = self.emit_with(
            now,
            buf,
            hook,
            TcpFlags(flags),
            (0, data_len, retransmission),
            option.as_deref(),
        );

        if !self.timers.is_set(Timer::Retransmit) {
            self.timers.set(Timer::Retransmit, now + self.rtt.rto());
        }
        n
    }

    /// What to send next, `(start, length, retransmission)` in sequence offsets: the first
    /// lost segment (RFC 6675 `NextSeg` rule 1, also after a timeout), else new data from
    /// `SND.MAX` (rule 2) as far as the windows and Nagle allow, or a tail loss probe.
    fn next_range(&mut self, now: Instant) -> Option<(u64, u64, bool)> {
        let mss = self.smss();
        let in_flight = self.in_flight();
        let room = self.cc.window().saturating_sub(in_flight);
        if let Some(lost) = self.queue.first_lost() {
            let len = lost.end - lost.start;
            if in_flight == 0 || room >= len.min(mss) {
                return Some((lost.start, len, true));
            }
            self.cwnd_limited = true;
            return None;
        }
        let end = self.seq_end();
        let by_window = (self.snd_una + self.snd_wnd).saturating_sub(self.snd_max);
        let avail = end.saturating_sub(self.snd_max);
        if self.tlp_due {
            // RFC 8985 §7.3: new data if the peer's window allows, else the last segment
            // again, whatever the congestion window.
            self.tlp_due = false;
            self.timers.set(Timer::Retransmit, now + self.rtt.rto());
            if avail > 0 && by_window > 0 {
                let len = avail.min(mss).min(by_window);
                self.tlp = Some((self.snd_max + len, false));
                return Some((self.snd_max, len, false));
            }
            if let Some(last) = self.queue.last().copied() {
                self.tlp = Some((self.snd_max, true));
                return Some((last.start, last.end - last.start, true));
            }
        }
        if avail == 0 {
            self.cwnd_limited = false;
            if room > 0 {
                self.queue.mark_app_limited();
            }
            return None;
        }
        // Up to a full bare segment: the hook may let it go without its options (the segment
        // is cut to what its header leaves room for when not).
        let mut len = avail.min(self.smss_bare()).min(by_window);
        if len == 0 {
            if avail == 1 && self.fin_queued {
                // A bare FIN needs no window.
                len = 1;
            } else {
                // The peer's window is closed: probe it until it opens (RFC 9293 §3.8.6.1).
                // It is the window, not the congestion window, that limits now.
                self.cwnd_limited = false;
                if self.snd_max == self.snd_una && !self.timers.is_set(Timer::Persist) {
                    self.persist_probes = 0;
                    self.timers
                        .set(Timer::Persist, now + self.persist_interval());
                }
                return None;
            }
        }
        // A segment fits when a full one with the hook's options would: a bare one, a few
        // bytes longer, may pass the window by those bytes.
        if in_flight > 0 && len.min(mss) > room {
            self.cwnd_limited = true;
            return None;
        }
        // Nagle (RFC 9293 §3.7.4) with Minshall's refinement, as Linux: a small segment waits
        // while an earlier small one is unacknowledged, unless it ends the stream. The tail of
        // a large write goes at once instead of a round trip (and a delayed ACK) later; many
        // small writes still coalesce. (An unacknowledged SYN-ACK is no data: a Fast Open
        // server answers at once.)
        let ends_stream = self.fin_queued && self.snd_max + len >= end;
        let small_unacked = self.snd_sml > self.snd_una.max(1);
        if self.cfg.nagle && len < mss && small_unacked && !ends_stream {
            self.cwnd_limited = false;
            return None;
        }
        Some((self.snd_max, len, false))
    }

    /// A data segment (or FIN) if the windows, the pacer and Nagle allow one.
    fn poll_data(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        hook: &mut dyn SegmentHook,
    ) -> Option<usize> {
        let fast_open_server = self.state == State::SynReceived && self.syn_data > 0;
        if !matches!(
            self.state,
            State::Established
                | State::CloseWait
                | State::FinWait1
                | State::Closing
                | State::LastAck
        ) && !fast_open_server
        {
            return None;
        }
        let (start, len, retransmission) = self.next_range(now)?;
        if let Some(at) = self.pacing().then(|| self.pacer.delay(now, len)).flatten() {
            self.timers.set(Timer::Pacing, at);
            return None;
        }
        self.timers.stop(Timer::Pacing);
        // Split the range into payload and FIN.
        let data_end = self.data_end();
        let data_len = (start + len).min(data_end).saturating_sub(start);
        let fin = self.fin_queued && start + len > data_end;
        let mut flags = TcpFlags::ACK;
        if fin {
            flags |= TcpFlags::FIN;
        }
        if data_len > 0 && start + data_len == data_end {
            flags |= TcpFlags::PSH;
        }
        Some(self.emit(
            now,
            buf,
            hook,
            TcpFlags(flags),
            start,
            usize::try_from(data_len).unwrap_or(0),
            retransmission,
        ))
    }

    /// Builds and writes one segment at send offset `start` with `data_len` payload bytes
    /// (fewer if the header leaves less room), and records what was sent.
    #[expect(clippy::too_many_arguments, reason = "one segment's description")]
    fn emit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        hook: &mut dyn SegmentHook,
        flags: TcpFlags,
        start: u64,
        data_len: usize,
        retransmission: bool,
    ) -> usize {
        self.emit_with(
            now,
            buf,
            hook,
            flags,
            (start, data_len, retransmission),
            None,
        )
    }

    /// [`Connection::emit`] with a TCP Fast Open option (a SYN's or SYN-ACK's); `range` is
    /// `(start, data_len, retransmission)`. A SYN's data is a copy of the first bytes of the
    /// send buffer: it takes no sequence space until the SYN-ACK acknowledges it.
    fn emit_with(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        hook: &mut dyn SegmentHook,
        flags: TcpFlags,
        range: (u64, usize, bool),
        fast_open: Option<&[u8]>,
    ) -> usize {
        let (start, data_len, retransmission) = range;
        let syn = flags.contains(TcpFlags::SYN);
        let rst = flags.contains(TcpFlags::RST);
        let with_ack = !rst && (self.state != State::SynSent || flags.contains(TcpFlags::ACK));
        let (repr, edge) = self.segment_header(now, flags, start, with_ack);
        let mut repr: TcpRepr<'_> = repr;
        with_fast_open(&mut repr, fast_open);
        let base_opts = repr.options_len();
        // What the hook's options take: all that is reserved for them, less on a data segment
        // whose options the hook makes smaller (none at all: a bare segment).
        let hook_len = if data_len > 0 && !syn && !rst {
            hook.data_option_len(start.saturating_sub(1), retransmission)
                .min(self.option_space)
        } else {
            self.option_space
        };
        let bare = self.option_space > 0 && hook_len == 0;
        let fits = self.payload_room(base_opts, buf.len(), hook_len);
        let mut flags = flags;
        if data_len > fits {
            // The header left less room than planned: the rest (and any FIN) goes later.
            flags = TcpFlags(flags.0 & !(TcpFlags::FIN | TcpFlags::PSH));
        }
        let data_len = data_len.min(fits);
        let data_len = if data_len > 0 {
            let limit = hook.segment_limit(start.saturating_sub(1), data_len).max(1);
            if limit < data_len {
                flags = TcpFlags(flags.0 & !(TcpFlags::FIN | TcpFlags::PSH));
            }
            data_len.min(limit)
        } else {
            data_len
        };
        let seg = OutgoingSegment {
            flags: TcpFlags(flags.0 | if with_ack { TcpFlags::ACK } else { 0 }),
            stream_offset: start.saturating_sub(1),
            payload_len: data_len,
            retransmission,
        };
        // The hook's options must fit in what was reserved for them (a SYN, which carries no
        // payload, may use all the option space): a larger one would push the segment past
        // the MSS.
        let room = if syn {
            MAX_OPTIONS_LEN
        } else {
            (base_opts + hook_len).min(MAX_OPTIONS_LEN)
        };
        let options = if bare {
            ArrayVec::new()
        } else {
            hook.outgoing_options(&seg)
        };
        // The hook's options first: SACK blocks give way to them (the oldest blocks go; the
        // first, the most recent, stays as long as there is room for it, RFC 2018 §4).
        let wanted: usize = options.iter().map(MptcpOption::buffer_len).sum();
        while !repr.sack_blocks.is_empty() && repr.options_len() + wanted > room {
            repr.sack_blocks.pop();
        }
        let mut included = 0u8;
        for (i, o) in options.into_iter().enumerate() {
            if repr.options_len() + o.buffer_len() <= room && repr.mptcp.try_push(o).is_ok() {
                included |= 1 << i;
            }
        }
        let send = &self.send;
        let from = start.saturating_sub(1);
        let n = repr.emit_with(buf, self.local.ip(), self.remote.ip(), data_len, |out| {
            let copied = send.read_at(from, out);
            debug_assert_eq!(copied, out.len(), "payload outside the send buffer");
        });
        drop(repr);
        hook.sent(&seg, included);
        // Bookkeeping.
        self.stats.segs_out += 1;
        if rst {
            return n;
        }
        if with_ack {
            self.ack_now = false;
            self.unacked_segments = 0;
            self.timers.stop(Timer::DelayedAck);
            self.last_ack_sent = self.rcv_nxt;
            self.rcv_adv = edge.max(self.rcv_adv);
        }
        if let Some(fo) = self.fo_client.as_mut().filter(|_| syn && !retransmission) {
            fo.syn_data = data_len as u64;
        }
        let seq_len = if syn {
            1
        } else {
            data_len as u64 + u64::from(flags.contains(TcpFlags::FIN))
        };
        if seq_len == 0 {
            return n;
        }
        self.record_sent(now, start, start + seq_len, data_len, retransmission, syn);
        n
    }

    /// Bookkeeping of a segment that took sequence space `start..end` with `data_len` payload
    /// bytes: the sent queue, the counters, the pacer, and the timers that watch it.
    fn record_sent(
        &mut self,
        now: Instant,
        start: u64,
        end: u64,
        data_len: usize,
        retransmission: bool,
        syn: bool,
    ) {
        self.stats.bytes_sent += data_len as u64;
        if retransmission {
            self.stats.retransmits += 1;
            self.stats.bytes_retransmitted += data_len as u64;
            self.queue.retransmitted(start, end, now);
        } else if end > self.snd_max {
            self.queue.push(start, end, now);
            self.snd_max = end;
        }
        if (data_len as u64) < self.smss() {
            self.snd_sml = self.snd_sml.max(end);
        }
        if self.pacing() && !syn {
            self.pacer.on_send(now, data_len as u64);
        }
        let in_flight = self.in_flight();
        if in_flight + self.smss() > self.cc.window() {
            self.cwnd_limited = true;
        }
        if !self.timers.is_set(Timer::Retransmit) {
            self.timers.set(Timer::Retransmit, now + self.rtt.rto());
        }
        // The first segment out after everything was acknowledged (after idle, or a new
        // subflow's first flight) is watched from now; a retransmission moves the due time.
        if self.silence_watch && (retransmission || !self.timers.is_set(Timer::Silence)) {
            self.arm_silence();
        }
    }

    /// Room for payload in a segment whose options (ours) take `options` bytes, in a buffer of
    /// `buf_len`: the peer's MSS (plus the 20 bytes it excludes) or the buffer, less the header
    /// with its options and the `hook_len` bytes of the hook's options
    /// ([`SegmentHook::data_option_len`]).
    fn payload_room(&self, options: usize, buf_len: usize, hook_len: usize) -> usize {
        let reserved = (options + hook_len).min(MAX_OPTIONS_LEN);
        let header = HEADER_LEN + reserved.div_ceil(4) * 4;
        let limit = usize::try_from(self.peer_mss)
            .unwrap_or(usize::MAX)
            .saturating_add(HEADER_LEN)
            .min(buf_len);
        limit.saturating_sub(header)
    }

    /// The header of a segment at send offset `start`: sequence and acknowledgment numbers,
    /// window, and the options of a SYN (what we offer, or accept of the peer's) or of any
    /// other segment (timestamps, SACK blocks). Also the window's right edge it advertises.
    fn segment_header(
        &self,
        now: Instant,
        flags: TcpFlags,
        start: u64,
        with_ack: bool,
    ) -> (TcpRepr<'static>, u64) {
        let syn = flags.contains(TcpFlags::SYN);
        let rst = flags.contains(TcpFlags::RST);
        let (window, edge) = self.window_to_advertise(syn);
        let mut repr = TcpRepr {
            src_port: self.local.port(),
            dst_port: self.remote.port(),
            flags: TcpFlags(flags.0 & !TcpFlags::ACK),
            seq_number: self.snd_seq(start),
            ack_number: with_ack.then(|| self.rcv_seq(self.rcv_nxt)),
            window_len: if rst { 0 } else { window },
            ..TcpRepr::default()
        };
        if syn {
            repr.max_seg_size = Some(self.advertised_mss());
            let answering = self.state != State::SynSent;
            repr.window_scale = if answering {
                self.ws_ok.then_some(self.rcv_wscale)
            } else {
                self.offered_wscale
            };
            repr.sack_permitted = if answering {
                self.sack_ok
            } else {
                self.cfg.sack
            };
            let ts = self.cfg.timestamps && (!answering || self.ts_ok);
            repr.timestamps =
                ts.then(|| (self.ts_now(now), if answering { self.ts_recent } else { 0 }));
        } else if !rst && self.ts_ok {
            repr.timestamps = Some((self.ts_now(now), self.ts_recent));
        }
        if !syn && !rst && self.sack_ok && self.recv.held() > 0 {
            let max_blocks = if self.ts_ok { 3 } else { 4 };
            let mut blocks = SackBlocks::new();
            for (s, e) in self.recv.sack_blocks(max_blocks) {
                blocks.push((self.rcv_seq(1 + s).0, self.rcv_seq(1 + e).0));
            }
            repr.sack_blocks = blocks;
        }
        (repr, edge)
    }
}

/// Puts TCP Fast Open option `cookie` (a SYN's or SYN-ACK's) on `repr`.
fn with_fast_open<'a>(repr: &mut TcpRepr<'a>, cookie: Option<&'a [u8]>) {
    repr.fast_open = cookie;
    if cookie.is_some_and(|c| c.len() > super::fast_open::COOKIE_LEN) {
        // A long cookie leaves no room for timestamps next to an MPTCP option.
        repr.timestamps = None;
    }
}

/// Milliseconds since `epoch`, the timestamp clock (RFC 7323 §5.4: 1 ms to 1 s per tick).
fn timestamp_clock(epoch: Instant, now: Instant) -> u32 {
    #[expect(clippy::cast_possible_truncation, reason = "the clock wraps by design")]
    let ms = now.saturating_duration_since(epoch).as_millis() as u32;
    ms
}

/// The smallest window scale that lets a 16-bit window field cover `buffer` bytes.
pub(crate) fn wscale_for(buffer: usize) -> u8 {
    let mut s = 0u8;
    while s < MAX_WSCALE && (65_535usize << s) < buffer {
        s += 1;
    }
    s
}
