//! `mpbond converter`: accepts MPTCP connections from gateways, checks their Convert message
//! (RFC 8803) and authentication, connects to the destination with plain TCP, answers, and
//! relays both ways.
//!
//! Per connection (RFC 8803 §4.2):
//! 1. read the client's Convert message, within the handshake timeout; until then the
//!    connection is *pending*, and pending connections are bounded per source and in all, the
//!    oldest of strangers pushed out first ([`admission`]), behind a kernel limit of connections
//!    per source ([`nft`]): idle connections cannot lock gateways out;
//! 2. refuse with an Error TLV anything malformed (§6.2.8 codes 0–2), unauthenticated (32), for a
//!    refused destination (32), or over a limit (64), closing gracefully so the error arrives;
//! 3. connect to the destination; on failure answer 96 (reset), 97 (unreachable) or 65;
//! 4. answer with an Extended TCP Header TLV (and Supported TCP Extensions if asked with Info),
//!    then relay until both sides are closed.

pub mod admission;
pub mod fleet;
pub mod nft;
pub mod policy;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, oneshot};
use tracing::{debug, info, warn};

use self::admission::{Admission, AdmissionConfig, Eviction};
use crate::log_rate::Throttle;

use crate::convert::auth::{self, Name, Verifier};
use crate::convert::client::{self, unix_now};
use crate::convert::exchange::{self, ReadError};
use crate::convert::message::{ErrorCode, Message};
use crate::relay::{self, BufPool};
use crate::stack::kernel::{self, ConnectOptions, ListenOptions, Proto};
use crate::stack::user::{Tuning, UserListener, UserStack, UserStackConfig};
use crate::stack::{AnyConn, Conn as _, Stack};
pub use policy::Policy;

/// TCP option kinds the converter uses towards servers (the kernel's): MSS, window scale,
/// SACK permitted, timestamps. Anything else in an Extended Connect is refused with error 33.
pub const SUPPORTED_TCP_OPTIONS: [u8; 4] = [2, 3, 4, 8];

/// Everything `mpbond converter` is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The gateways' keys file (one `NAME KEY` line per gateway).
    pub keys: PathBuf,
    /// Destination policy.
    pub policy: Policy,
    /// Relayed connections at most, all gateways together.
    pub max_connections: usize,
    /// Relayed connections at most per gateway.
    pub max_per_gateway: usize,
    /// Connections that have not authenticated yet: how many, per source and in all, and for
    /// how long ([`admission`]).
    pub admission: AdmissionConfig,
    /// New connections a second at most per source address (IPv6: per /64), four seconds'
    /// worth at once, enforced by the kernel ([`nft`]); 0: no such limit.
    pub syn_rate_per_source: u32,
    /// Time to connect to a destination.
    pub connect_timeout: Duration,
    /// A relayed connection that moves no byte for this long is closed.
    pub idle_timeout: Duration,
    /// How long open connections are relayed after SIGTERM ([`run`]); zero: reset at once.
    pub drain_timeout: Duration,
    /// Accept the Convert message in the SYN (TCP Fast Open).
    pub fast_open: bool,
    /// Accept MPTCP (false: plain TCP only, for tests).
    pub mptcp: bool,
    /// Serve Prometheus metrics here.
    pub metrics: Option<SocketAddr>,
    /// Extra addresses announced to gateways (`ADD_ADDR`, with mpbond's path manager).
    pub announce: Vec<IpAddr>,
    /// This instance's own address behind a load balancer ([`fleet`]): joins go there.
    pub fleet_address: Option<IpAddr>,
    /// The data plane that takes the gateways' connections (destinations are always reached
    /// with the kernel's TCP).
    pub stack: Stack,
    /// With [`Stack::User`]: the engine's scheduler and congestion control.
    pub tuning: Tuning,
}

impl Config {
    /// Defaults for `listen` and `keys`.
    #[must_use]
    pub fn new(listen: SocketAddr, keys: PathBuf) -> Self {
        Self {
            listen,
            keys,
            policy: Policy::default(),
            max_connections: 10_000,
            max_per_gateway: 2_000,
            admission: AdmissionConfig::default(),
            syn_rate_per_source: 1000,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(2 * 3600),
            drain_timeout: Duration::from_secs(30),
            metrics: None,
            announce: Vec::new(),
            fleet_address: None,
            fast_open: true,
            mptcp: true,
            stack: Stack::Kernel,
            tuning: Tuning::default(),
        }
    }
}

/// Counters of a running converter.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// ... of which speak MPTCP.
    pub mptcp: AtomicU64,
    /// ... of which fell back to plain TCP (a path without MPTCP, or a TCP-only client).
    pub fallback: AtomicU64,
    /// ... whose Convert message came in the SYN.
    pub syn_data: AtomicU64,
    /// Refused: malformed or unsupported messages.
    pub malformed: AtomicU64,
    /// Refused: authentication failed.
    pub auth_failures: AtomicU64,
    /// Refused: destination not allowed.
    pub refused_destinations: AtomicU64,
    /// Refused: over a limit.
    pub over_limit: AtomicU64,
    /// Closed: no Convert message (or no authentication) within the handshake timeout.
    pub handshake_timeouts: AtomicU64,
    /// Closed (reset) before authenticating, to make room: their source held too many
    /// connections that had not authenticated, or the converter did.
    pub pushed_out: AtomicU64,
    /// The destination could not be reached.
    pub connect_failures: AtomicU64,
    /// Relayed connections now.
    pub active: AtomicU64,
    /// Connections being served now, from their accept to their end (relayed, in their
    /// handshake, being refused).
    pub open: AtomicU64,
    /// Reset at once: they arrived while the converter was draining.
    pub refused_draining: AtomicU64,
    /// Bytes from gateways to destinations.
    pub bytes_up: AtomicU64,
    /// Bytes from destinations to gateways.
    pub bytes_down: AtomicU64,
}

/// A running converter's shared state.
#[derive(Debug)]
pub struct Converter {
    config: Config,
    verifier: Mutex<Verifier>,
    per_gateway: Mutex<HashMap<Name, usize>>,
    /// Connections that have not authenticated yet, each with the way to push it out.
    pending: Mutex<Admission<oneshot::Sender<Eviction>>>,
    /// The nftables table of the kernel's per-source limit, when installed (for its
    /// counter; the table itself belongs to [`run`], which removes it on the way out).
    source_limit: Option<String>,
    relays: Semaphore,
    pool: BufPool,
    /// Stopping (SIGTERM): new connections are reset, open ones relayed to their end.
    draining: AtomicBool,
    /// Counters.
    pub stats: Stats,
}

/// Counts a connection in [`Stats::open`] while it lives.
struct OpenGuard<'a>(&'a AtomicU64);

impl<'a> OpenGuard<'a> {
    fn new(open: &'a AtomicU64) -> Self {
        open.fetch_add(1, Relaxed);
        Self(open)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Holds a gateway's connection slot until dropped.
struct GatewaySlot<'a> {
    conv: &'a Converter,
    name: Name,
}

impl Drop for GatewaySlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.conv.per_gateway.lock() {
            if let Some(n) = m.get_mut(&self.name) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.name);
                }
            }
        }
    }
}

/// Reads a keys file; refuses one that others may read (it holds every gateway's secret).
pub fn load_keys(path: &std::path::Path) -> Result<Vec<(Name, auth::Key)>> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).with_context(|| format!("keys file {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        warn!(
            "keys file {} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("keys file {}", path.display()))?;
    auth::parse_key_lines(&text).with_context(|| format!("keys file {}", path.display()))
}

/// The options of the server's SYN/ACK as far as the kernel tells (`TCP_INFO`): the MSS it
/// sends with, SACK permitted, timestamps (values zero: only their use is known) and window
/// scale. Sent in the Extended TCP Header TLV (RFC 8803 §6.2.4).
fn server_options(stream: &TcpStream) -> Vec<u8> {
    const TCPI_OPT_TIMESTAMPS: u8 = 1;
    const TCPI_OPT_SACK: u8 = 2;
    const TCPI_OPT_WSCALE: u8 = 4;
    let Some(info) = kernel::tcp_info(stream) else {
        return Vec::new();
    };
    let mut o = Vec::new();
    let mss = u16::try_from(info.tcpi_snd_mss).unwrap_or(u16::MAX);
    o.extend_from_slice(&[2, 4]);
    o.extend_from_slice(&mss.to_be_bytes());
    if info.tcpi_options & TCPI_OPT_SACK != 0 {
        o.extend_from_slice(&[4, 2]);
    }
    if info.tcpi_options & TCPI_OPT_TIMESTAMPS != 0 {
        o.extend_from_slice(&[8, 10, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
    if info.tcpi_options & TCPI_OPT_WSCALE != 0 {
        // The low four bits are the peer's (send) shift.
        o.extend_from_slice(&[1, 3, 3, info.tcpi_snd_rcv_wscale & 0x0f]);
    }
    o
}

/// The Error TLV for a failed connection to the destination (RFC 8803 §6.2.8), with the ICMP
/// code for Destination Unreachable (RFC 792: 0 net, 1 host, 13 administratively prohibited).
fn connect_error(e: &io::Error) -> (ErrorCode, u8) {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED | libc::ECONNRESET) => (ErrorCode::ConnectionReset, 0),
        Some(libc::ENETUNREACH) => (ErrorCode::DestinationUnreachable, 0),
        Some(libc::EHOSTUNREACH | libc::ETIMEDOUT) => (ErrorCode::DestinationUnreachable, 1),
        Some(libc::EACCES | libc::EPERM) => (ErrorCode::DestinationUnreachable, 13),
        _ if e.kind() == io::ErrorKind::TimedOut => (ErrorCode::DestinationUnreachable, 1),
        _ => (ErrorCode::NetworkFailure, 0),
    }
}

/// How long a refused client gets to read the error before the socket is closed.
const REFUSE_LINGER: Duration = Duration::from_secs(2);

/// How long the answer to a request that came in the SYN waits for the client's key
/// ([`kernel::wait_peer_key`]): a few of the slowest lines' round trips; then it goes anyway.
const PEER_KEY_WAIT: Duration = Duration::from_secs(3);

impl Converter {
    /// Its counters, for the metrics endpoint.
    fn metrics_sample(&self) -> crate::metrics::Sample {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        let g = |a: &AtomicU64| a.load(Relaxed);
        crate::metrics::Sample {
            pm: None,
            counters: vec![
                ("connections", "Connections accepted", g(&s.accepted)),
                ("mptcp_connections", "... of which speak MPTCP", g(&s.mptcp)),
                (
                    "fallbacks",
                    "... of which fell back to plain TCP",
                    g(&s.fallback),
                ),
                (
                    "auth_failures",
                    "Refused: authentication failed",
                    g(&s.auth_failures),
                ),
                (
                    "malformed",
                    "Refused: malformed or unsupported messages",
                    g(&s.malformed),
                ),
                (
                    "refused_destinations",
                    "Refused: destination not allowed",
                    g(&s.refused_destinations),
                ),
                ("over_limit", "Refused: over a limit", g(&s.over_limit)),
                (
                    "refused_draining",
                    "Reset at once: they arrived while the converter was draining",
                    g(&s.refused_draining),
                ),
                (
                    "handshake_timeouts",
                    "Closed: not authenticated within the handshake timeout",
                    g(&s.handshake_timeouts),
                ),
                (
                    "unauthenticated_pushed_out",
                    "Reset before authenticating, to make room for newer connections",
                    g(&s.pushed_out),
                ),
                (
                    "syns_dropped_over_source_rate",
                    "SYNs the kernel dropped: their source opened connections too fast",
                    self.source_limit
                        .as_deref()
                        .and_then(nft::dropped)
                        .unwrap_or(0),
                ),
                (
                    "connect_failures",
                    "Destinations that could not be reached",
                    g(&s.connect_failures),
                ),
                (
                    "bytes_up",
                    "Bytes from gateways to destinations",
                    g(&s.bytes_up),
                ),
                (
                    "bytes_down",
                    "Bytes from destinations to gateways",
                    g(&s.bytes_down),
                ),
            ],
            gauges: vec![
                (
                    "active_connections",
                    "Relayed connections now",
                    i64::try_from(g(&s.active)).unwrap_or(i64::MAX),
                ),
                (
                    "draining",
                    "1 while the converter drains (SIGTERM): no new connection taken",
                    i64::from(self.draining.load(Relaxed)),
                ),
                (
                    "unauthenticated_connections",
                    "Connections that have not authenticated yet",
                    self.pending
                        .lock()
                        .map_or(0, |p| i64::try_from(p.pending()).unwrap_or(i64::MAX)),
                ),
            ],
        }
    }

    /// A converter for `config`, with the keys already loaded.
    #[must_use]
    pub fn new(config: Config, keys: Vec<(Name, auth::Key)>) -> Self {
        Self {
            verifier: Mutex::new(Verifier::new(keys)),
            per_gateway: Mutex::new(HashMap::new()),
            pending: Mutex::new(Admission::new(config.admission)),
            source_limit: None,
            relays: Semaphore::new(config.max_connections),
            pool: BufPool::default(),
            draining: AtomicBool::new(false),
            stats: Stats::default(),
            config,
        }
    }

    /// Re-reads the keys file (SIGHUP): added gateways may connect, removed ones no longer.
    pub fn reload_keys(&self) -> Result<usize> {
        let keys = load_keys(&self.config.keys)?;
        let n = keys.len();
        if let Ok(mut v) = self.verifier.lock() {
            v.set_keys(keys);
        }
        Ok(n)
    }

    fn take_gateway_slot(&self, name: &Name) -> Option<GatewaySlot<'_>> {
        let mut m = self.per_gateway.lock().ok()?;
        let n = m.entry(name.clone()).or_insert(0);
        if *n >= self.config.max_per_gateway {
            return None;
        }
        *n += 1;
        Some(GatewaySlot {
            conv: self,
            name: name.clone(),
        })
    }

    /// Serves one accepted connection to its end.
    pub async fn handle(&self, stream: AnyConn, peer: SocketAddr) {
        let s = &self.stats;
        let _open = OpenGuard::new(&s.open);
        s.accepted.fetch_add(1, Relaxed);
        if stream.is_mptcp() {
            s.mptcp.fetch_add(1, Relaxed);
        } else if self.config.mptcp {
            s.fallback.fetch_add(1, Relaxed);
            debug!(%peer, "plain TCP (MPTCP fell back on the way)");
        }
        if stream.syn_data_acked() {
            s.syn_data.fetch_add(1, Relaxed);
        }
        let (push_out, mut pushed_out) = oneshot::channel();
        let Some(ticket) = self.admit(peer, push_out) else {
            return;
        };
        let read = tokio::select! {
            r = self.read_request(&stream, peer, ticket.deadline) => r,
            _ = &mut pushed_out => {
                // The oldest of too many that have not authenticated: a reset costs nothing.
                stream.reset_on_close();
                return;
            }
        };
        if let Ok(mut p) = self.pending.lock() {
            p.finish(
                ticket.id,
                read.authenticated,
                tokio::time::Instant::now().into_std(),
            );
        }
        let Some(request) = read.request else {
            return;
        };
        let Some(_slot) = self.take_gateway_slot(&request.gateway) else {
            s.over_limit.fetch_add(1, Relaxed);
            if let Some(n) = GATEWAY_FULL.allow() {
                warn!(gateway = %request.gateway, suppressed = n, "refused: gateway at its limit of {} connections", self.config.max_per_gateway);
            }
            exchange::refuse(&stream, ErrorCode::ResourceExceeded, 30, REFUSE_LINGER).await;
            return;
        };
        let Ok(_relay_permit) = self.relays.try_acquire() else {
            s.over_limit.fetch_add(1, Relaxed);
            if let Some(n) = CONVERTER_FULL.allow() {
                warn!(gateway = %request.gateway, suppressed = n, "refused: converter at its limit of {} connections", self.config.max_connections);
            }
            exchange::refuse(&stream, ErrorCode::ResourceExceeded, 30, REFUSE_LINGER).await;
            return;
        };
        self.connect_and_relay(&stream, &request).await;
    }

    /// Admits a new connection from `peer` as pending and resets those pushed out to make room;
    /// `None` if the converter's state is poisoned (a bug elsewhere: refuse rather than crash).
    fn admit(
        &self,
        peer: SocketAddr,
        push_out: oneshot::Sender<Eviction>,
    ) -> Option<admission::Ticket> {
        let now = tokio::time::Instant::now().into_std();
        let (ticket, evicted) = self.pending.lock().ok()?.admit(peer.ip(), now, push_out);
        for e in evicted {
            self.stats.pushed_out.fetch_add(1, Relaxed);
            if let Some(n) = PUSHED_OUT.allow() {
                let why = match e.why {
                    Eviction::SourceFull => "its source holds too many",
                    Eviction::BudgetFull => "too many in all",
                };
                info!(
                    source = %e.source,
                    suppressed = n,
                    "reset a connection that had not authenticated to make room ({why}; see the metrics)"
                );
            }
            let _ = e.handle.send(e.why);
        }
        Some(ticket)
    }

    /// Reads and checks the client's Convert message before `deadline`; answers and returns no
    /// request when refused (or when it only asked what the converter supports, or checked its
    /// key).
    async fn read_request(
        &self,
        stream: &AnyConn,
        peer: SocketAddr,
        deadline: std::time::Instant,
    ) -> ReadRequest {
        let s = &self.stats;
        let mut out = ReadRequest {
            request: None,
            authenticated: false,
        };
        let read = tokio::time::timeout_at(deadline.into(), exchange::read_message(stream));
        let msg = match read.await {
            Err(_) => {
                s.handshake_timeouts.fetch_add(1, Relaxed);
                if let Some(n) = HANDSHAKE_TIMEOUT.allow() {
                    info!(%peer, suppressed = n, "closed: no Convert message within the handshake timeout");
                }
                stream.reset_on_close();
                return out;
            }
            Ok(Err(ReadError::Parse(e))) => {
                s.malformed.fetch_add(1, Relaxed);
                if let Some(n) = MALFORMED.allow() {
                    info!(%peer, suppressed = n, "refused: {e}");
                }
                // Unsupported Version lists the versions we speak (§6.2.8).
                let value = u8::from(e.error_code() == ErrorCode::UnsupportedVersion);
                exchange::refuse(stream, e.error_code(), value, REFUSE_LINGER).await;
                return out;
            }
            Ok(Err(e)) => {
                debug!(%peer, "connection ended before its Convert message: {e}");
                return out;
            }
            Ok(Ok(msg)) => msg,
        };
        let Some(connect) = msg.connect.clone() else {
            if msg.info {
                // An Info TLV alone asks what the converter supports (§6.2.2).
                let _ = exchange::write_message(stream, &supported_reply()).await;
            } else {
                s.malformed.fetch_add(1, Relaxed);
                exchange::refuse(stream, ErrorCode::MalformedMessage, 0, REFUSE_LINGER).await;
            }
            return out;
        };
        let checked = self
            .verifier
            .lock()
            .map_err(|_| auth::AuthError::UnknownName)
            .and_then(|mut v| v.check(msg.auth.as_ref(), &connect, unix_now()));
        let gateway = match checked {
            Ok(name) => name,
            Err(e) => {
                s.auth_failures.fetch_add(1, Relaxed);
                let who = msg.auth.as_ref().map_or("-", |a| a.name.as_str());
                if let Some(n) = AUTH_FAILED.allow() {
                    warn!(%peer, gateway = who, suppressed = n, "refused: authentication failed: {e}");
                }
                let reason = auth::Refusal::from(e);
                exchange::refuse(
                    stream,
                    ErrorCode::NotAuthorized,
                    reason.value(),
                    REFUSE_LINGER,
                )
                .await;
                return out;
            }
        };
        out.authenticated = true;
        if let Ok(mut p) = self.pending.lock() {
            p.authenticated(peer.ip(), tokio::time::Instant::now().into_std());
        }
        let dest = connect.remote;
        if client::is_key_check(&connect) {
            answer_key_check(stream, peer, &gateway).await;
            return out;
        }
        if let Some(kind) = unsupported_option(&connect.tcp_options) {
            s.malformed.fetch_add(1, Relaxed);
            info!(%peer, %gateway, %dest, "refused: TCP option kind {kind} asked");
            exchange::refuse(stream, ErrorCode::UnsupportedTcpOption, kind, REFUSE_LINGER).await;
            return out;
        }
        let own = policy::own_addresses_cached();
        if let Err(why) = self.config.policy.check(dest.ip(), dest.port(), &own) {
            s.refused_destinations.fetch_add(1, Relaxed);
            if let Some(n) = DESTINATION_REFUSED.allow() {
                warn!(%peer, %gateway, %dest, suppressed = n, "refused destination: {why}");
            }
            let reason = auth::Refusal::Destination.value();
            exchange::refuse(stream, ErrorCode::NotAuthorized, reason, REFUSE_LINGER).await;
            return out;
        }
        out.request = Some(Request {
            gateway,
            dest,
            info: msg.info,
            early_answer: msg.auth.as_ref().is_some_and(|a| a.early_answer),
        });
        out
    }

    /// Connects to the destination, answers the client, and relays.
    async fn connect_and_relay(&self, stream: &AnyConn, req: &Request) {
        let s = &self.stats;
        let (gateway, dest) = (&req.gateway, req.dest);
        // A gateway on mpbond's engine takes our answer before the handshake's last ACK: with
        // its request in the SYN (Fast Open), the answer leaves a round trip sooner.
        if let (true, AnyConn::User(u)) = (req.early_answer, stream) {
            u.answer_early();
        }
        let opts = ConnectOptions {
            timeout: Some(self.config.connect_timeout),
            ..ConnectOptions::default()
        };
        let down = match kernel::connect(dest, &opts).await {
            Ok(c) => c.stream,
            Err(e) => {
                s.connect_failures.fetch_add(1, Relaxed);
                let (code, value) = connect_error(&e);
                info!(%gateway, %dest, "cannot connect: {e}; answering {code}");
                exchange::refuse(stream, code, value, REFUSE_LINGER).await;
                return;
            }
        };
        // A kernel MPTCP connection whose request came in the SYN: nothing is written before
        // the client's key arrived, or Linux sends none of it (`kernel::wait_peer_key`).
        if let AnyConn::Kernel(k) = stream {
            if let Err(e) = kernel::wait_peer_key(k, PEER_KEY_WAIT).await {
                debug!(%gateway, %dest, "{e}; answering all the same");
            }
        }
        let reply = Message {
            extended_tcp_header: Some(server_options(&down)),
            supported_tcp_extensions: req.info.then(|| SUPPORTED_TCP_OPTIONS.to_vec()),
            ..Message::default()
        };
        if let Err(e) = exchange::write_message(stream, &reply).await {
            debug!(%gateway, %dest, "gateway gone before the reply: {e}");
            return;
        }
        let peer = stream.peer_addr().ok();
        let outbound = down.local_addr().ok();
        debug!(%gateway, ?peer, %dest, ?outbound, mptcp = stream.is_mptcp(), "relaying");
        s.active.fetch_add(1, Relaxed);
        let report = relay::relay::<std::future::Ready<io::Result<()>>>(
            stream,
            &down,
            &self.pool,
            Some(self.config.idle_timeout),
            None,
        )
        .await;
        s.active.fetch_sub(1, Relaxed);
        s.bytes_up.fetch_add(report.a_to_b, Relaxed);
        s.bytes_down.fetch_add(report.b_to_a, Relaxed);
        debug!(%gateway, ?peer, %dest, ?outbound, up = report.a_to_b, down = report.b_to_a, outcome = ?report.outcome, "closed");
    }
}

/// What reading a Convert message gave.
struct ReadRequest {
    /// A request to relay.
    request: Option<Request>,
    /// The client authenticated (whether or not it is then relayed): its source is a gateway's.
    authenticated: bool,
}

/// Answers a key check that authenticated: it names no destination, the gateway asks whether
/// its key (and clock) are accepted.
async fn answer_key_check(stream: &AnyConn, peer: SocketAddr, gateway: &Name) {
    debug!(%peer, %gateway, "key check: accepted");
    if exchange::write_message(stream, &supported_reply())
        .await
        .is_ok()
    {
        exchange::close_gracefully(stream, REFUSE_LINGER).await;
    }
}

/// The answer to an Info TLV alone, and to a key check (§6.2.2): what the converter supports.
fn supported_reply() -> Message {
    Message {
        supported_tcp_extensions: Some(SUPPORTED_TCP_OPTIONS.to_vec()),
        ..Message::default()
    }
}

/// Log lines that a flood or a fault can repeat: at most one each per 10 s ([`Throttle`]).
static GATEWAY_FULL: Throttle = Throttle::new(Duration::from_secs(10));
static CONVERTER_FULL: Throttle = Throttle::new(Duration::from_secs(10));
static PUSHED_OUT: Throttle = Throttle::new(Duration::from_secs(10));
static HANDSHAKE_TIMEOUT: Throttle = Throttle::new(Duration::from_secs(10));
static MALFORMED: Throttle = Throttle::new(Duration::from_secs(10));
static AUTH_FAILED: Throttle = Throttle::new(Duration::from_secs(10));
static DESTINATION_REFUSED: Throttle = Throttle::new(Duration::from_secs(10));

/// An accepted Convert request.
struct Request {
    gateway: Name,
    dest: SocketAddr,
    info: bool,
    /// The gateway takes an answer before the handshake ends ([`auth::FLAG_EARLY_ANSWER`]).
    early_answer: bool,
}

/// The first TCP option kind in an Extended Connect that the converter cannot use.
fn unsupported_option(options: &[u8]) -> Option<u8> {
    let mut i = 0;
    while i < options.len() {
        let kind = options[i];
        if kind == 1 {
            i += 1;
            continue;
        }
        if !SUPPORTED_TCP_OPTIONS.contains(&kind) {
            return Some(kind);
        }
        i += usize::from(options.get(i + 1).copied().unwrap_or(2)).max(2);
    }
    None
}

/// Extra subflows per connection the converter accepts at least (the kernel's maximum). The
/// kernel's default, 2, refuses the joins of a gateway's fourth line and beyond.
const MIN_SUBFLOWS: u32 = 8;

/// Raises the kernel's MPTCP subflow limit to [`MIN_SUBFLOWS`] when it is lower, until the
/// returned change is dropped (recorded in the host journal: a crash cannot leave it raised).
/// Without the right to (not root), says what to run instead.
fn raise_subflow_limit() -> Option<crate::host::Change> {
    let raised = crate::host::Change::apply(crate::host::Setting::MptcpLimits, |now| {
        let l = crate::host::parse_limits(now)?;
        Some(format!(
            "{} {}",
            l.subflows.max(MIN_SUBFLOWS),
            l.add_addr_accepted
        ))
    });
    match raised {
        Ok(c) => {
            if c.changed() {
                info!(
                    "MPTCP limits (subflows, add_addr_accepted) {} -> {}",
                    c.original, c.value
                );
            }
            Some(c)
        }
        Err(e) => {
            warn!(
                "cannot raise the MPTCP subflow limit ({e}); gateways with more than two lines need `ip mptcp limits set subflows {MIN_SUBFLOWS}`"
            );
            None
        }
    }
}

/// Runs a converter until SIGINT or SIGTERM; SIGHUP reloads the keys file.
///
/// SIGTERM drains first (for a load balancer's rolling restart, `systemctl stop`): the
/// converter says it is not ready (`/readyz` answers 503), resets new connections at once
/// (the listener stays open, so that joins of open connections still arrive), and relays the
/// open ones until they end or [`Config::drain_timeout`] passes; then it stops, resetting what
/// is left. A second SIGTERM, or SIGINT, stops at once.
pub async fn run(mut config: Config) -> Result<()> {
    let keys = load_keys(&config.keys)?;
    crate::host::recover();
    crate::status::remove_stale_sockets();
    fit_descriptors(&mut config);
    let plane = match config.stack {
        Stack::Kernel => Plane::kernel(&mut config)?,
        Stack::User => Plane::user(&config)?,
    };
    let engine = plane.user.as_ref().map(|u| u.status_view(Vec::new()));
    let engine_counters = plane
        .user
        .as_ref()
        .map(|u| u.counters_view(crate::metrics::engine_server_counters));
    let _status = crate::status::serve_with(
        "converter",
        plane.announcer.as_ref().and_then(|a| a.pm()),
        engine.clone(),
    )
    .map_err(|e| warn!("no status socket: {e:#}"))
    .ok();
    let source_limit = (config.syn_rate_per_source > 0 && config.stack == Stack::Kernel)
        .then(|| nft::SourceLimit::install(config.listen.port(), config.syn_rate_per_source))
        .transpose()
        .map_err(|e| {
            warn!(
                "no kernel limit of connections per source ({e:#}); the converter's own limits of unauthenticated connections still apply"
            );
        })
        .ok()
        .flatten();
    let metrics = config.metrics;
    let gateways = keys.len();
    let mut conv = Converter::new(config, keys);
    conv.source_limit = source_limit.as_ref().map(|l| l.table().to_owned());
    let conv = Arc::new(conv);
    if let Some(addr) = metrics {
        let c = Arc::clone(&conv);
        let r = Arc::clone(&conv);
        crate::metrics::serve(
            addr,
            Arc::new(move || {
                let mut s = c.metrics_sample();
                if let Some(e) = &engine {
                    s.gauges.extend(crate::metrics::engine_gauges(&e()));
                }
                if let Some(n) = &engine_counters {
                    s.counters.extend(n());
                }
                s
            }),
            Arc::new(move || !r.draining.load(Relaxed)),
        )?;
    }
    info!(
        listen = %conv.config.listen,
        gateways,
        stack = ?conv.config.stack,
        proto = ?plane.proto,
        fast_open = plane.fast_open,
        "converter ready"
    );
    let served = serve(&conv, &plane.listener).await;
    // Relayed connections still open are reset as the process ends (their sockets are armed,
    // see `relay`; the engine's are reset here): none is closed as if it were complete.
    if let Some(user) = &plane.user {
        user.abort_all().await;
    }
    served?;
    info!(
        accepted = conv.stats.accepted.load(Relaxed),
        auth_failures = conv.stats.auth_failures.load(Relaxed),
        relayed_now = conv.stats.active.load(Relaxed),
        "converter stopped; connections still relayed are reset"
    );
    Ok(())
}

/// Where the gateways' connections arrive: a kernel socket, or mpbond's engine.
enum Listener {
    Kernel(tokio::net::TcpListener),
    User(UserListener),
}

impl Listener {
    async fn accept(&self) -> io::Result<(AnyConn, SocketAddr)> {
        match self {
            Self::Kernel(l) => l.accept().await.map(|(s, a)| (AnyConn::Kernel(s), a)),
            Self::User(l) => l.accept().await.map(|(s, a)| {
                // A relay writes what it read at once: Nagle would hold the tail of each
                // answer for a round trip.
                s.set_nodelay(true);
                (AnyConn::User(s), a)
            }),
        }
    }
}

/// The data plane of a running converter and the host configuration it holds (undone when
/// dropped).
struct Plane {
    listener: Listener,
    proto: Proto,
    fast_open: bool,
    /// mpbond's path manager announcing extra addresses (kernel stack).
    announcer: Option<crate::pm::Announcer>,
    // Dropped in this order: the reverse of their making.
    _fleet: Option<crate::host::Change>,
    _limit: Option<crate::host::Change>,
    _fast_open: Option<crate::host::Change>,
    /// mpbond's engine (`--stack user`), the host's port mapped to it.
    user: Option<Arc<UserStack>>,
}

impl Plane {
    fn kernel(config: &mut Config) -> Result<Self> {
        let limit = config.mptcp.then(raise_subflow_limit).flatten();
        let fleet = match config.fleet_address {
            Some(addr) if config.mptcp => Some(fleet::join_here(config, addr)?),
            _ => None,
        };
        let fast_open_sysctl = if config.fast_open {
            match kernel::enable_tcp_fastopen(2) {
                Ok(c) => {
                    debug!("net.ipv4.tcp_fastopen = {}", c.value);
                    Some(c)
                }
                Err(e) => {
                    warn!(
                        "cannot enable TCP Fast Open for servers (net.ipv4.tcp_fastopen): {e}; Convert messages will take one more round trip"
                    );
                    None
                }
            }
        } else {
            None
        };
        let l = kernel::listen(
            config.listen,
            &ListenOptions {
                mptcp: config.mptcp,
                fast_open: config.fast_open,
                ..ListenOptions::default()
            },
        )
        .with_context(|| format!("listen on {}", config.listen))?;
        if let Some(e) = &l.mptcp_unavailable {
            warn!("this kernel cannot accept MPTCP ({e}): serving plain TCP only, no bonding");
        }
        let announcer = if config.announce.is_empty() {
            None
        } else {
            Some(crate::pm::Announcer::start(crate::pm::Announce {
                addrs: config.announce.clone(),
                c_flag: fleet.is_some(),
            })?)
        };
        Ok(Self {
            listener: Listener::Kernel(l.listener),
            proto: l.proto,
            fast_open: l.fast_open,
            announcer,
            _limit: limit,
            _fleet: fleet,
            _fast_open: fast_open_sysctl,
            user: None,
        })
    }

    fn user(config: &Config) -> Result<Self> {
        if config.fleet_address.is_some() {
            bail!("--fleet-address with --stack user is not built yet; use --stack kernel");
        }
        if config.listen.ip().is_ipv6() && !config.listen.ip().is_unspecified() {
            bail!(
                "--stack user listens on IPv4 only so far: use 0.0.0.0:{port} or [::]:{port} (its IPv4 part), or --stack kernel",
                port = config.listen.port()
            );
        }
        if config.announce.iter().any(IpAddr::is_ipv6) {
            bail!("--announce: --stack user announces IPv4 addresses only so far");
        }
        let mut stack = UserStack::start(&UserStackConfig {
            listen: vec![config.listen],
            lines: Vec::new(),
            no_mptcp: !config.mptcp,
            tuning: config.tuning,
            fast_open: config.fast_open,
            ..UserStackConfig::default()
        })?;
        let l = stack
            .listen(config.listen.port())
            .with_context(|| format!("listen on {}", config.listen))?;
        // Withdrawn while their interface is down.
        stack.announce_watched(config.announce.clone());
        if config.syn_rate_per_source > 0 {
            debug!(
                "--syn-rate-per-source is a kernel (nftables) limit of the kernel stack; with --stack user the converter's own limits of unauthenticated connections apply"
            );
        }
        info!(tun = %stack.ifname(), "the gateways' connections run on mpbond's engine");
        Ok(Self {
            listener: Listener::User(l),
            proto: if config.mptcp {
                Proto::Mptcp
            } else {
                Proto::Tcp
            },
            fast_open: config.fast_open,
            announcer: None,
            _limit: None,
            _fleet: None,
            _fast_open: None,
            user: Some(Arc::new(stack)),
        })
    }
}

/// Takes connections from `listener` until the converter stops: SIGINT, or SIGTERM and its
/// drain (see [`run`]); SIGHUP reloads the keys.
async fn serve(conv: &Arc<Converter>, listener: &Listener) -> Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // The end of the drain, once the first SIGTERM came.
    let mut drain_until: Option<tokio::time::Instant> = None;
    // While draining, the kernel refuses new connections at their SYN (joins pass).
    let mut _refusing: Option<nft::Drain> = None;
    let mut check = tokio::time::interval(DRAIN_CHECK);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if drain_until.is_some() => {
                    // Accepted before the drain table came, or without one: a reset sends the
                    // client elsewhere at once. The listener stays open for the joins of the
                    // connections that drain.
                    conv.stats.refused_draining.fetch_add(1, Relaxed);
                    debug!(%peer, "reset: draining");
                    stream.reset_on_close();
                }
                Ok((stream, peer)) => {
                    let conv = Arc::clone(conv);
                    tokio::spawn(async move { conv.handle(stream, peer).await });
                }
                Err(e) => {
                    // EMFILE and the like: wait instead of spinning.
                    warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = hup.recv() => match conv.reload_keys() {
                Ok(n) => info!(gateways = n, "keys reloaded"),
                Err(e) => warn!("keys not reloaded, keeping the old ones: {e:#}"),
            },
            _ = term.recv() => {
                let open = conv.stats.open.load(Relaxed);
                if drain_until.is_some() || open == 0 || conv.config.drain_timeout.is_zero() {
                    break;
                }
                // Refusing first: once /readyz says 503, no new connection is accepted. The
                // engine's connections arrive forwarded, past the table's input hook: those
                // are reset once accepted.
                if matches!(listener, Listener::Kernel(_)) {
                    _refusing = nft::Drain::install(conv.config.listen.port())
                        .map_err(|e| warn!("draining: new connections are reset once accepted, not refused at their SYN: {e:#}"))
                        .ok();
                }
                conv.draining.store(true, Relaxed);
                drain_until = Some(tokio::time::Instant::now() + conv.config.drain_timeout);
                info!(
                    open,
                    drain_timeout = ?conv.config.drain_timeout,
                    "draining: not ready, new connections refused, open ones relayed to their end (SIGTERM again to stop now)"
                );
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = check.tick(), if drain_until.is_some() => {
                if conv.stats.open.load(Relaxed) == 0 {
                    info!("drained: every connection ended");
                    break;
                }
                if drain_until.is_some_and(|t| tokio::time::Instant::now() >= t) {
                    info!(
                        open = conv.stats.open.load(Relaxed),
                        "drain time over"
                    );
                    break;
                }
            }
        }
    }
    Ok(())
}

/// How often a draining converter looks whether its connections have ended.
const DRAIN_CHECK: Duration = Duration::from_millis(100);

/// Raises the descriptor limit, and lowers the connection limits to what it allows (two
/// descriptors per relayed connection, one per unauthenticated one, some to spare).
fn fit_descriptors(config: &mut Config) {
    let Ok(limit) = crate::sys::raise_nofile_limit() else {
        return;
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let spare = 64;
    let need = 2 * config.max_connections + config.admission.max_pending + spare;
    if need <= limit {
        return;
    }
    let pending = config.admission.max_pending.min(limit / 4).max(16);
    let relays = (limit.saturating_sub(pending + spare) / 2).max(16);
    warn!(
        "only {limit} open files allowed (ulimit -n; LimitNOFILE= in systemd): at most {relays} relayed and {pending} unauthenticated connections instead of {} and {}",
        config.max_connections, config.admission.max_pending
    );
    config.max_connections = relays;
    config.admission.max_pending = pending;
}

/// For [`Proto`] in logs.
impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mptcp => "MPTCP",
            Self::Tcp => "TCP",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_map_to_rfc_codes() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(
            connect_error(&e(libc::ECONNREFUSED)),
            (ErrorCode::ConnectionReset, 0)
        );
        assert_eq!(
            connect_error(&e(libc::ENETUNREACH)),
            (ErrorCode::DestinationUnreachable, 0)
        );
        assert_eq!(
            connect_error(&e(libc::EHOSTUNREACH)),
            (ErrorCode::DestinationUnreachable, 1)
        );
        assert_eq!(
            connect_error(&io::ErrorKind::TimedOut.into()),
            (ErrorCode::DestinationUnreachable, 1)
        );
        assert_eq!(
            connect_error(&e(libc::EACCES)),
            (ErrorCode::DestinationUnreachable, 13)
        );
        assert_eq!(connect_error(&e(libc::EIO)), (ErrorCode::NetworkFailure, 0));
    }

    #[test]
    fn extended_connect_options_beyond_the_kernels_are_named() {
        assert_eq!(unsupported_option(&[]), None);
        assert_eq!(unsupported_option(&[2, 4, 5, 0xb4, 1, 4, 2, 3, 3, 7]), None);
        assert_eq!(unsupported_option(&[2, 4, 5, 0xb4, 34, 2]), Some(34));
        assert_eq!(unsupported_option(&[30, 4, 0, 0]), Some(30));
    }
}
