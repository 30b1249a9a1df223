//! One TCP connection (RFC 9293) as a sans-IO state machine, used on its own as a plain TCP
//! socket and, by the MPTCP layer, as a subflow.
//!
//! What it does, and where:
//! - states, handshake (also simultaneous open and close), TIME-WAIT: [`connection`];
//! - MSS, window scaling and timestamps (RFC 7323, with PAWS), SACK (RFC 2018): negotiated in
//!   [`connection`], SACK blocks kept by [`recv_buffer`];
//! - loss recovery: SACK-based (RFC 6675) with RACK-TLP loss detection (RFC 8985) over the
//!   retransmission queue ([`sent`]), or NewReno's (RFC 6582) without SACK; retransmission
//!   timeout with Karn's rule and backoff (RFC 6298, [`rtt`]);
//! - congestion control behind a trait: NewReno and CUBIC with HyStart++ ([`congestion`]);
//!   pacing ([`pacing`]);
//! - delayed ACKs, receive-window auto-tuning, silly-window avoidance, zero-window probes,
//!   keep-alive, RST and SYN validation (RFC 5961), ISNs per RFC 6528 ([`isn`]);
//! - hooks for MPTCP: option space reserved on every segment and filled by a [`SegmentHook`],
//!   incoming segments' options seen by the endpoint's caller, RTT and window readable in
//!   [`Stats`].
//!
//! Positions inside the engine are 64-bit offsets from the initial sequence numbers, so only
//! the wire sees 32-bit wrapping [`SeqNumber`](crate::wire::tcp::SeqNumber)s.

pub mod congestion;
pub(crate) mod connection;
pub mod fast_open;
pub mod isn;
pub mod pacing;
pub mod recv_buffer;
pub mod rtt;
pub mod rtt_cache;
pub mod send_buffer;
pub mod sent;
pub mod timer;

use core::time::Duration;

pub use connection::{Connection, NoHook, OutgoingSegment, SegmentHook};

use crate::wire::mptcp::MptcpOption;

/// Settings of a TCP connection. The defaults are those of a Linux host.
#[derive(Debug, Clone)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent options a host turns on or off"
)]
pub struct Config {
    /// Largest IP packet (path MTU): gives the MSS we announce and the largest segment we send.
    pub mtu: usize,
    /// Send buffer at the start, bytes; it grows to twice the congestion window.
    pub send_buffer: usize,
    /// Largest send buffer.
    pub send_buffer_max: usize,
    /// Receive buffer at the start, bytes; grown by auto-tuning.
    pub recv_buffer: usize,
    /// Largest receive buffer auto-tuning may reach (and the window scale chosen for it).
    pub recv_buffer_max: usize,
    /// Initial congestion window in segments (RFC 6928: 10).
    pub initial_window: u64,
    /// Congestion control.
    pub congestion: congestion::Algorithm,
    /// Offer SACK (RFC 2018).
    pub sack: bool,
    /// Offer timestamps (RFC 7323).
    pub timestamps: bool,
    /// Offer window scaling (RFC 7323).
    pub window_scaling: bool,
    /// Nagle's algorithm (RFC 9293 §3.7.4): hold a small segment while data is unacknowledged.
    pub nagle: bool,
    /// Pace segments over the round trip.
    pub pacing: bool,
    /// Longest an acknowledgment is delayed (RFC 9293 §3.8.6.3: at most 0.5 s).
    pub delayed_ack: Duration,
    /// RTO before the first RTT sample (RFC 6298 §2.1).
    pub initial_rto: Duration,
    /// Floor of the RTO (RFC 6298 says 1 s; Linux and this engine use 200 ms).
    pub min_rto: Duration,
    /// Ceiling of the RTO (RFC 6298 §2.5: at least 60 s).
    pub max_rto: Duration,
    /// SYN retransmissions before giving up.
    pub syn_retries: u32,
    /// Retransmissions of the same data (or unanswered zero-window probes) before giving up.
    pub max_retransmissions: u32,
    /// Give up when data stays unacknowledged this long (RFC 5482), whatever the count.
    pub user_timeout: Option<Duration>,
    /// Keep-alive probes (off by default, RFC 9293 §3.8.4).
    pub keepalive: Option<Keepalive>,
    /// Length of TIME-WAIT (2 MSL).
    pub time_wait: Duration,
    /// How long FIN-WAIT-2 waits for the peer's FIN once the application has released the
    /// connection.
    pub fin_wait_2: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mtu: 1500,
            send_buffer: 1 << 20,
            send_buffer_max: 16 << 20,
            recv_buffer: 128 << 10,
            recv_buffer_max: 16 << 20,
            initial_window: 10,
            congestion: congestion::Algorithm::Cubic,
            sack: true,
            timestamps: true,
            window_scaling: true,
            nagle: true,
            pacing: true,
            delayed_ack: Duration::from_millis(40),
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(60),
            syn_retries: 6,
            max_retransmissions: 15,
            user_timeout: None,
            keepalive: None,
            time_wait: Duration::from_secs(60),
            fin_wait_2: Duration::from_secs(60),
        }
    }
}

/// Keep-alive settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between unanswered probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is given up.
    pub count: u32,
}

/// RFC 9293 §3.3.2 connection states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// No connection.
    Closed,
    /// Our SYN is out.
    SynSent,
    /// The peer's SYN arrived and our SYN-ACK is out.
    SynReceived,
    /// Data flows both ways.
    Established,
    /// We sent FIN; it is not acknowledged yet.
    FinWait1,
    /// Our FIN is acknowledged; waiting for the peer's.
    FinWait2,
    /// The peer sent FIN; we may still send.
    CloseWait,
    /// Both sent FIN at once; ours is not acknowledged yet.
    Closing,
    /// The peer finished first and our FIN is not acknowledged yet.
    LastAck,
    /// Both finished; waiting 2 MSL for stray segments.
    TimeWait,
}

impl State {
    /// Whether the handshake completed (RFC 9293's "synchronized" states).
    #[must_use]
    pub fn is_synchronized(self) -> bool {
        !matches!(self, Self::Closed | Self::SynSent | Self::SynReceived)
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// Both sides sent all their data and a FIN, and both FINs were acknowledged.
    #[error("closed")]
    Finished,
    /// The peer refused the connection (RST in answer to our SYN).
    #[error("connection refused")]
    Refused,
    /// The peer reset the connection.
    #[error("connection reset by peer")]
    Reset,
    /// The peer stopped answering (retransmissions, zero-window or keep-alive probes).
    #[error("connection timed out")]
    TimedOut,
    /// This side aborted it.
    #[error("connection aborted")]
    Aborted,
}

/// What the application learns from a connection (`poll_event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed.
    Connected,
    /// Data, or the peer's end of data, can be read.
    Readable,
    /// The send buffer has room again after a write was refused.
    Writable,
    /// The connection ended; nothing more will happen.
    Closed(CloseReason),
}

/// Why `read` returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No data now; wait for [`Event::Readable`].
    #[error("no data yet")]
    Blocked,
    /// The peer finished sending (FIN) and everything before it was read.
    #[error("the peer finished sending")]
    Finished,
    /// The connection ended abnormally.
    #[error("{0}")]
    Closed(CloseReason),
}

/// Why `write` took nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The send buffer is full; wait for [`Event::Writable`].
    #[error("send buffer full")]
    Blocked,
    /// `close` was called: no more data may be written.
    #[error("the connection was closed for writing")]
    Finished,
    /// The connection ended.
    #[error("{0}")]
    Closed(CloseReason),
}

/// Counters and estimates of one connection (what `ss -ti` shows for a kernel socket).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Segments sent.
    pub segs_out: u64,
    /// Segments received.
    pub segs_in: u64,
    /// Payload bytes sent, retransmissions included.
    pub bytes_sent: u64,
    /// Payload bytes retransmitted.
    pub bytes_retransmitted: u64,
    /// Payload bytes the peer acknowledged.
    pub bytes_acked: u64,
    /// Payload bytes received in order.
    pub bytes_received: u64,
    /// Retransmitted segments.
    pub retransmits: u64,
    /// Fast recoveries entered.
    pub fast_recoveries: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Segments dropped by PAWS (RFC 7323 §5).
    pub paws_drops: u64,
    /// Zero-window probes sent.
    pub zero_window_probes: u64,
    /// Keep-alive probes sent.
    pub keepalive_probes: u64,
    /// Challenge ACKs sent (RFC 5961).
    pub challenge_acks: u64,
    /// Smoothed RTT.
    pub srtt: Option<Duration>,
    /// RTT variation.
    pub rttvar: Duration,
    /// Smallest RTT seen.
    pub min_rtt: Option<Duration>,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Slow-start threshold, bytes.
    pub ssthresh: u64,
    /// Current retransmission timeout.
    pub rto: Duration,
    /// The peer's receive window, bytes.
    pub snd_wnd: u64,
    /// Our receive buffer's capacity, bytes.
    pub rcv_buffer: usize,
    /// Payload bytes of a full segment we send.
    pub send_mss: u64,
    /// Bytes sent and not yet acknowledged.
    pub unacked: u64,
    /// Pacing rate, bytes per second.
    pub pacing_rate: Option<f64>,
    /// The congestion control running now ([`congestion::Controller::running`]).
    pub congestion: &'static str,
}

/// Where a connection stands in both sequence spaces, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence {
    /// `SND.UNA`.
    pub snd_una: crate::wire::tcp::SeqNumber,
    /// `SND.NXT`.
    pub snd_nxt: crate::wire::tcp::SeqNumber,
    /// `RCV.NXT`.
    pub rcv_nxt: crate::wire::tcp::SeqNumber,
    /// The window last advertised, bytes.
    pub rcv_wnd: u64,
    /// The timestamp to echo (`TS.Recent`), when timestamps are on.
    pub ts_recent: Option<u32>,
}

/// Options the MPTCP layer adds to a segment must fit in what it reserved: the largest MPTCP
/// option it ever sends on a data segment (a DSS with 64-bit acknowledgment and mapping and a
/// checksum is 28 bytes).
#[must_use]
pub fn options_len(options: &[MptcpOption<'_>]) -> usize {
    options.iter().map(MptcpOption::buffer_len).sum()
}
