//! Multipath TCP (RFC 8684) over the engine's TCP: connections made of subflows.
//!
//! [`Stack`] owns an [`Endpoint`](crate::endpoint::Endpoint) whose TCP connections are the
//! subflows, and is the endpoint's hook: it decides what every opening SYN becomes (a new MPTCP
//! connection, a join, plain TCP, a reset), puts the MPTCP options on every segment and reads
//! them off every segment. The data-level sequence space of each connection lives in
//! [`connection`]; DSS mappings in [`mapping`].
//!
//! What is built: `MP_CAPABLE` v1 in both roles (SYN, SYN/ACK, third ACK, first data with
//! `MP_CAPABLE`; flags A and H; C read), fallback to TCP when the peer does not answer with
//! `MP_CAPABLE` (§3.7) and an implied infinite mapping when mappings vanish on the only
//! subflow; `MP_JOIN` in both roles with HMACs checked, the fourth ACK awaited and the third
//! ACK sent again; DSS with 64-bit DSN and `DATA_ACK` (4-octet ones read), checksums when
//! negotiated, `DATA_FIN` sent again until acknowledged; the connection-level window (§3.3.4);
//! reinjection of what a dead or stalled subflow had in flight (§3.3.6); schedulers chosen per
//! connection ([`scheduler`]: lowest RTT, BLEST, ECF, redundant, round robin) with backups used
//! only when no regular subflow works; congestion control per connection ([`congestion`]:
//! CUBIC or NewReno per subflow, or coupled LIA, OLIA, BALIA); `MP_FASTCLOSE` and
//! `MP_TCPRST`; `ADD_ADDR` (sent until echoed, echoed, joined), `REMOVE_ADDR` and `MP_PRIO`.
//! Options on a segment outside the subflow's receive window are not acted on. A connection
//! outlives its last subflow for a while (break-before-make). Not yet: `MP_FAIL`.
//!
//! The upstream packetdrill MPTCP scripts are played against it in
//! `tests/packetdrill.rs`.

pub mod congestion;
pub mod connection;
pub(crate) mod mapping;
pub mod scheduler;
mod stack;

use core::net::SocketAddr;
use core::time::Duration;

pub use congestion::Congestion;
pub use connection::{ConnConfig, ConnState, ConnStats, FallbackCause};
pub use scheduler::SchedulerKind;
pub use stack::{ConnId, Path, Stack, StackConfig, StackEvent};

use crate::tcp::CloseReason;

/// Which end of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We sent the first SYN.
    Client,
    /// We answered it.
    Server,
}

/// What happened on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnEvent {
    /// The first subflow's handshake completed (with MPTCP, or fallen back to TCP).
    Connected,
    /// The connection fell back to plain TCP (§3.7).
    Fallback,
    /// A subflow joined and carries data.
    SubflowUp {
        /// Our address.
        local: SocketAddr,
        /// The peer's.
        remote: SocketAddr,
    },
    /// The peer announced an address (`ADD_ADDR`).
    AddressAdded {
        /// The address (with the connection's port when it gave none).
        addr: SocketAddr,
    },
    /// A subflow ended.
    SubflowDown {
        /// Our address.
        local: SocketAddr,
        /// The peer's.
        remote: SocketAddr,
    },
    /// Data, or the end of the peer's data, can be read.
    Readable,
    /// The send buffer has room again.
    Writable,
    /// The connection ended.
    Closed(CloseReason),
}

/// One subflow, for `status`.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about one subflow"
)]
pub struct SubflowInfo {
    /// Our address.
    pub local: SocketAddr,
    /// The peer's.
    pub remote: SocketAddr,
    /// It carries data.
    pub active: bool,
    /// It is a backup (ours or the peer's choice).
    pub backup: bool,
    /// Its retransmission timer fired and its data went to other subflows.
    pub stale: bool,
    /// Its peer has not acknowledged anything for longer than the ACK clock explains
    /// ([`crate::tcp::Connection::is_silent`]): other subflows carry its data until it does.
    pub silent: bool,
    /// Smoothed RTT.
    pub srtt: Option<Duration>,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Bytes in flight.
    pub in_flight: u64,
    /// Payload bytes handed to it.
    pub bytes_sent: u64,
    /// Payload bytes read from it.
    pub bytes_received: u64,
    /// Our address ID and the peer's.
    pub ids: (u8, u8),
    /// It ended.
    pub closed: bool,
    /// TCP figures of the subflow (`None` once it ended and was forgotten).
    pub tcp: Option<crate::tcp::Stats>,
}
