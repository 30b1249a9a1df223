//! `mpbond gateway`: carries the LAN's TCP connections over MPTCP, across every WAN line, to a
//! converter (RFC 8803), which talks plain TCP to the destinations.
//!
//! - [`wan`]: per-line routing tables, rules and MPTCP endpoints, so each subflow uses its line;
//! - [`nft`]: transparent capture of forwarded LAN TCP (TPROXY), and the optional QUIC block;
//! - [`socks`]: a SOCKS5 listener for devices that are not routed through the gateway.
//!
//! Each captured connection: open an MPTCP connection to the converter whose first bytes (in the
//! SYN when TFO allows) are the Convert message for the original destination; relay the LAN
//! client's bytes at once, and the converter's bytes once its reply said the destination
//! answered; a refusal resets the LAN connection.

pub mod nft;
pub mod socks;
pub mod wan;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::convert::auth::Signer;
use crate::convert::client::{self, ClientError, ClientOptions, Upstream};
use crate::relay::{self, BufPool};
use crate::stack::kernel::{self, ListenOptions};
use crate::stack::user::{Tuning, UserStack, UserStackConfig};
use crate::stack::{AnyConn, Conn as _, Stack};
pub use socks::SocksAuth;
pub use wan::WanSpec;

/// SOCKS5 sessions open at most; more are closed at once (a LAN host cannot exhaust the
/// gateway's descriptors through it).
const MAX_SOCKS_SESSIONS: usize = 4096;

/// SOCKS5 users: name → password. Its `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct SocksUsers(pub HashMap<String, String>);

impl std::fmt::Debug for SocksUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Everything `mpbond gateway` is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The converter, `HOST:PORT`.
    pub converter: String,
    /// This gateway's key file.
    pub key: PathBuf,
    /// WAN lines; empty: leave the kernel's MPTCP and routing configuration alone.
    pub wan: Vec<WanSpec>,
    /// LAN interfaces whose TCP is captured (empty: all but `lo` and the WANs).
    pub lan: Vec<String>,
    /// Port of the transparent listener (`None`: no transparent capture).
    pub transparent: Option<u16>,
    /// SOCKS5 listener.
    pub socks: Option<SocketAddr>,
    /// SOCKS5 users (name → password); required unless the listener is on loopback.
    pub socks_users: SocksUsers,
    /// Reject UDP/443 from the LAN so browsers fall back from QUIC to TCP.
    pub block_quic: bool,
    /// Destinations never captured, besides the converter.
    pub bypass: Vec<IpNet>,
    /// Put the Convert message in the SYN (TCP Fast Open) when possible (off by default: see
    /// [`ClientOptions::fast_open`]).
    pub fast_open: bool,
    /// A relayed connection that moves no byte for this long is closed.
    pub idle_timeout: Duration,
    /// Which path manager makes the subflows over the WAN lines.
    pub pm: crate::pm::PmKind,
    /// How mpbond's path manager probes the lines.
    pub probe: crate::pm::ProbeConfig,
    /// Serve Prometheus metrics here.
    pub metrics: Option<SocketAddr>,
    /// The data plane that carries the connections to the converter.
    pub stack: Stack,
    /// With [`Stack::User`]: the engine's scheduler and congestion control.
    pub tuning: Tuning,
}

impl Config {
    /// Defaults for a converter and a key.
    #[must_use]
    pub fn new(converter: String, key: PathBuf) -> Self {
        Self {
            converter,
            key,
            wan: Vec::new(),
            lan: Vec::new(),
            transparent: None,
            socks: None,
            socks_users: SocksUsers::default(),
            block_quic: false,
            bypass: nft::default_bypass(),
            fast_open: false,
            idle_timeout: Duration::from_secs(2 * 3600),
            pm: crate::pm::PmKind::default(),
            probe: crate::pm::ProbeConfig::default(),
            metrics: None,
            stack: Stack::Kernel,
            tuning: Tuning::default(),
        }
    }
}

/// Counters of a running gateway.
#[derive(Debug, Default)]
pub struct Stats {
    /// LAN connections taken (transparent or SOCKS).
    pub connections: AtomicU64,
    /// ... whose connection to the converter fell back to plain TCP.
    pub fallback: AtomicU64,
    /// ... refused by the converter (Error TLV).
    pub refused: AtomicU64,
    /// ... of which for this gateway's key or clock (not for their destination).
    pub refused_key: AtomicU64,
    /// ... that could not reach the converter.
    pub unreachable: AtomicU64,
    /// Bytes from the LAN.
    pub bytes_up: AtomicU64,
    /// Bytes to the LAN.
    pub bytes_down: AtomicU64,
}

/// A running gateway's shared state.
#[derive(Debug)]
pub struct Gateway {
    signer: Signer,
    /// Where the key came from, for messages.
    key_file: PathBuf,
    client: ClientOptions,
    pool: BufPool,
    idle: Duration,
    /// Counters.
    pub stats: Stats,
}

impl Gateway {
    /// Its counters and the path manager's view `pm`, for the metrics endpoint.
    fn metrics_sample(&self, pm: Option<crate::pm::PmStatus>) -> crate::metrics::Sample {
        let s = &self.stats;
        crate::metrics::Sample {
            pm,
            counters: vec![
                (
                    "connections",
                    "LAN connections taken",
                    s.connections.load(Relaxed),
                ),
                (
                    "fallbacks",
                    "... whose connection to the converter fell back to plain TCP",
                    s.fallback.load(Relaxed),
                ),
                (
                    "refused",
                    "... refused by the converter",
                    s.refused.load(Relaxed),
                ),
                (
                    "refused_key",
                    "... of which for this gateway's key or clock",
                    s.refused_key.load(Relaxed),
                ),
                (
                    "unreachable",
                    "... that could not reach the converter",
                    s.unreachable.load(Relaxed),
                ),
                ("bytes_up", "Bytes from the LAN", s.bytes_up.load(Relaxed)),
                ("bytes_down", "Bytes to the LAN", s.bytes_down.load(Relaxed)),
            ],
            gauges: vec![],
        }
    }

    /// Counts a refusal, and when it is about this gateway's key or clock says so (at most once
    /// a minute), in words the operator can act on.
    fn refused(&self, e: &ClientError) {
        static SAID: crate::log_rate::Throttle =
            crate::log_rate::Throttle::new(Duration::from_secs(60));
        if !matches!(e, ClientError::Refused(_)) {
            return;
        }
        self.stats.refused.fetch_add(1, Relaxed);
        if let Some(reason) = e.gateway_refusal() {
            self.stats.refused_key.fetch_add(1, Relaxed);
            if let Some(n) = SAID.allow() {
                tracing::error!(
                    gateway = %self.signer.name(),
                    refused_since_last = n,
                    "LAN connections refused: {}",
                    client::advice(reason, self.signer.name(), &self.key_file)
                );
            }
        }
    }

    /// Checks this gateway's key against the converter and says what it found; returns a word
    /// for the ready line. A key that is not accepted is an error worth the operator's eyes.
    async fn check_key(&self) -> &'static str {
        let check = tokio::time::timeout(
            KEY_CHECK_WAIT,
            client::check_key(&self.signer, &self.client),
        );
        match check.await {
            Ok(Ok(())) => {
                info!(gateway = %self.signer.name(), converter = %self.client.converter, "the converter accepts this gateway's key");
                "accepted"
            }
            Ok(Err(e)) => {
                if let Some(reason) = e.gateway_refusal() {
                    tracing::error!(
                        gateway = %self.signer.name(),
                        converter = %self.client.converter,
                        "{}",
                        client::advice(reason, self.signer.name(), &self.key_file)
                    );
                    return "refused";
                }
                if matches!(&e, ClientError::Refused(t) if t.code == crate::convert::message::ErrorCode::NotAuthorized)
                {
                    warn!(
                        converter = %self.client.converter,
                        "the converter refused the key check without saying why: it is an older mpbond (which cannot check keys), or it does not accept this gateway's key; its log says which"
                    );
                } else {
                    warn!(converter = %self.client.converter, "cannot check this gateway's key with the converter: {e}");
                }
                "unchecked"
            }
            Err(_) => {
                warn!(converter = %self.client.converter, "cannot check this gateway's key: the converter did not answer within {KEY_CHECK_WAIT:?}");
                "unchecked"
            }
        }
    }

    /// Opens the converted connection for `dest` (the Convert message is sent; the reply not
    /// yet read).
    async fn open_upstream(&self, dest: SocketAddr, early: &[u8]) -> Result<Upstream, ClientError> {
        self.stats.connections.fetch_add(1, Relaxed);
        let r = client::open_with(dest, &self.signer, &self.client, early).await;
        if r.is_ok() {
            self.stats.bytes_up.fetch_add(early.len() as u64, Relaxed);
        }
        if let Err(e) = &r {
            self.stats.unreachable.fetch_add(1, Relaxed);
            warn!(%dest, "{e}");
        }
        r
    }

    /// Relays between the LAN connection and the converter; `gate` (reading the converter's
    /// reply) runs before anything goes to the LAN.
    async fn relay<F>(&self, lan: &TcpStream, up: &AnyConn, gate: Option<F>, dest: SocketAddr)
    where
        F: Future<Output = io::Result<()>>,
    {
        let peer = lan.peer_addr().ok();
        let upstream = up.local_addr().ok();
        debug!(?peer, %dest, ?upstream, mptcp = up.is_mptcp(), "relaying");
        let report = relay::relay(lan, up, &self.pool, Some(self.idle), gate).await;
        self.stats.bytes_up.fetch_add(report.a_to_b, Relaxed);
        self.stats.bytes_down.fetch_add(report.b_to_a, Relaxed);
        if !up.is_mptcp() && self.client.mptcp {
            self.stats.fallback.fetch_add(1, Relaxed);
        }
        debug!(?peer, %dest, ?upstream, up = report.a_to_b, down = report.b_to_a, outcome = ?report.outcome, "closed");
    }

    /// Serves one transparently captured LAN connection.
    async fn transparent(self: Arc<Self>, lan: TcpStream, peer: SocketAddr) {
        // Until its relay ends in order, the LAN connection is reset if it ends any other way
        // (no converter, refused, the gateway stopped or killed): never closed as if complete.
        kernel::reset_on_close(&lan);
        // TPROXY keeps the original destination as the accepted socket's local address.
        let Ok(dest) = lan.local_addr() else {
            return;
        };
        // TPROXY never diverts traffic for the gateway's own addresses (`fib daddr type local`),
        // so such a connection came straight to the listener's port: relaying it would send the
        // converter back to this listener, round and round.
        if crate::converter::policy::own_addresses_cached().contains(&dest.ip()) {
            debug!(%peer, %dest, "refused: addressed to the gateway itself, not captured");
            return;
        }
        debug!(%peer, %dest, "captured");
        // On the engine, the client's first bytes ride in the SYN with the Convert message.
        let early = if self.client.user.is_some() {
            early_data(&lan).await
        } else {
            Vec::new()
        };
        let Ok(up) = self.open_upstream(dest, &early).await else {
            return;
        };
        let stream = &up.stream;
        let gw = &self;
        // Why it would be plain TCP: known from its handshake, else it happened later.
        let cause = up.fallback.unwrap_or(if up.deferred {
            kernel::Fallback::Unknown
        } else {
            kernel::Fallback::Later
        });
        let gate = async move {
            match client::read_reply(stream, gw.client.reply_timeout).await {
                Ok(_) => {
                    if gw.client.mptcp && !stream.is_mptcp() {
                        warn_fallback(gw, stream.fallback_cause().unwrap_or(cause));
                    }
                    Ok(())
                }
                Err(e) => {
                    gw.refused(&e);
                    let local = stream.local_addr().ok();
                    info!(%peer, %dest, upstream = ?local, "{e}");
                    Err(io::Error::other(e.to_string()))
                }
            }
        };
        self.relay(&lan, stream, Some(gate), dest).await;
    }
}

/// How long a captured connection waits for its client's first bytes, to send them in the SYN
/// to the converter: a client that speaks first (HTTP, TLS) has sent them by the time its
/// handshake with the gateway ended; one whose server speaks first loses this much.
const EARLY_DATA_WAIT: Duration = Duration::from_millis(3);
/// The most of a client's first bytes that go with the Convert message (the SYN holds about
/// 1400 bytes; what does not fit follows the handshake).
const EARLY_DATA_MAX: usize = 1024;

/// The client's first bytes, if they come within [`EARLY_DATA_WAIT`].
async fn early_data(lan: &TcpStream) -> Vec<u8> {
    if tokio::time::timeout(EARLY_DATA_WAIT, lan.readable())
        .await
        .is_err()
    {
        return Vec::new();
    }
    let mut buf = vec![0u8; EARLY_DATA_MAX];
    match lan.try_read(&mut buf) {
        Ok(n) => buf.truncate(n),
        Err(_) => buf.clear(),
    }
    buf
}

/// How long the gateway waits for the converter's answer to its key check at start.
const KEY_CHECK_WAIT: Duration = Duration::from_secs(5);
/// How often a key that was refused or could not be checked is checked again.
const KEY_RECHECK: Duration = Duration::from_secs(30);

/// Checks the key again every [`KEY_RECHECK`] until the converter accepts it (then says so).
async fn recheck_key(gw: Arc<Gateway>) {
    loop {
        tokio::time::sleep(KEY_RECHECK).await;
        if let Ok(Ok(())) =
            tokio::time::timeout(KEY_CHECK_WAIT, client::check_key(&gw.signer, &gw.client)).await
        {
            info!(gateway = %gw.signer.name(), "the converter accepts this gateway's key now");
            return;
        }
    }
}

/// Warns, at most once a minute, that a connection to the converter is not multipath, and why.
fn warn_fallback(gw: &Gateway, why: kernel::Fallback) {
    static SAID: crate::log_rate::Throttle =
        crate::log_rate::Throttle::new(Duration::from_secs(60));
    if let Some(n) = SAID.allow() {
        warn!(
            converter = %gw.client.converter,
            others_since = n,
            "a connection to the converter is plain TCP, not bonded: {why}"
        );
    }
}

/// The transparent (both families) and SOCKS5 listeners; `true` marks transparent ones.
fn open_listeners(config: &Config) -> Result<Vec<(tokio::net::TcpListener, bool)>> {
    let mut listeners = Vec::new();
    if let Some(port) = config.transparent {
        for addr in [
            SocketAddr::from(([0, 0, 0, 0], port)),
            SocketAddr::from(([0u16; 8], port)),
        ] {
            let l = kernel::listen(
                addr,
                &ListenOptions {
                    transparent: true,
                    v6_only: true,
                    ..ListenOptions::default()
                },
            )
            .with_context(|| format!("transparent listener on {addr}"))?;
            listeners.push((l.listener, true));
        }
    }
    if let Some(addr) = config.socks {
        let l = kernel::listen(addr, &ListenOptions::default())
            .with_context(|| format!("SOCKS5 listener on {addr}"))?;
        listeners.push((l.listener, false));
    }
    Ok(listeners)
}

/// Accepts on `l` for ever: transparent captures, or SOCKS5 clients (at most
/// [`MAX_SOCKS_SESSIONS`] at once).
async fn accept_loop(
    gw: Arc<Gateway>,
    l: tokio::net::TcpListener,
    transparent: bool,
    auth: SocksAuth,
    socks_sessions: Arc<tokio::sync::Semaphore>,
) {
    loop {
        match l.accept().await {
            Ok((s, peer)) => {
                let gw = Arc::clone(&gw);
                if transparent {
                    tokio::spawn(gw.transparent(s, peer));
                } else if let Ok(permit) = Arc::clone(&socks_sessions).try_acquire_owned() {
                    let auth = auth.clone();
                    tokio::spawn(async move {
                        socks::serve(gw, s, peer, auth).await;
                        drop(permit);
                    });
                } else {
                    debug!(%peer, "SOCKS5: refused, {MAX_SOCKS_SESSIONS} sessions open");
                }
            }
            Err(e) => {
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Refuses a configuration that cannot work, and says how SOCKS5 clients authenticate.
fn check(config: &Config) -> Result<SocksAuth> {
    if config.transparent.is_some() && config.lan.is_empty() && config.wan.is_empty() {
        bail!(
            "--transparent without --lan would capture from every interface, the WAN ones too: give --lan IFACE (or --wan for each WAN line, which are then left out)"
        );
    }
    if config.transparent.is_none() && config.socks.is_none() {
        bail!(
            "nothing to serve: give --lan (transparent capture), --transparent PORT or --socks ADDR:PORT"
        );
    }
    Ok(match config.socks {
        Some(a) if !a.ip().is_loopback() && config.socks_users.0.is_empty() => {
            bail!(
                "a SOCKS5 listener on {a} (not loopback) needs users: set [socks_users] in the config file"
            )
        }
        Some(a) if !a.ip().is_loopback() => SocksAuth::Users(Arc::new(config.socks_users.clone())),
        _ => SocksAuth::None,
    })
}

/// Runs a gateway until SIGINT or SIGTERM, then removes what it installed.
pub async fn run(config: Config) -> Result<()> {
    // Signals first: one that comes while the kernel is being configured must still lead to
    // the clean-up below, not kill the process with rules and routes left behind.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let signer = crate::netcat::load_signer(&config.key)?;
    let converter = crate::netcat::resolve(&config.converter).await?;
    let socks_auth = check(&config)?;
    if config.stack == Stack::User && converter.is_ipv6() {
        bail!(
            "--stack user reaches IPv4 converters only so far; {converter} is IPv6 (use --stack kernel)"
        );
    }

    // Kernel configuration: undone when these guards drop, on every way out of this function;
    // first what a killed mpbond left.
    crate::host::recover();
    crate::status::remove_stale_sockets();
    if let Ok(n) = crate::sys::raise_nofile_limit() {
        debug!(open_files = n, "descriptor limit");
    }
    let plane = match config.stack {
        Stack::Kernel => Plane::kernel(&config, converter)?,
        Stack::User => Plane::user(&config, converter)?,
    };
    let mut client_opts = ClientOptions::new(converter);
    client_opts.fast_open = config.fast_open;
    client_opts.user = plane.user.as_ref().map(Arc::downgrade);
    let gw = Arc::new(Gateway {
        signer,
        key_file: config.key.clone(),
        client: client_opts,
        pool: BufPool::default(),
        idle: config.idle_timeout,
        stats: Stats::default(),
    });
    let pm = plane
        .bonding
        .as_ref()
        .and_then(|b| b.pm())
        .or_else(|| plane.user.as_ref().and_then(|u| u.pm()));
    let line_names: Vec<String> = config.wan.iter().map(|w| w.iface.clone()).collect();
    let engine = plane.user.as_ref().map(|u| u.status_view(line_names));
    let _status = crate::status::serve_with("gateway", pm, engine.clone())
        .map_err(|e| warn!("no status socket: {e:#}"))
        .ok();
    if let Some(addr) = config.metrics {
        let counters = plane
            .user
            .as_ref()
            .map(|u| u.counters_view(crate::metrics::engine_client_counters));
        serve_metrics(addr, &gw, pm, engine, counters)?;
    }
    nft::remove_leftover_table();
    let mut bypass = config.bypass.clone();
    bypass.push(nft::host_net(converter.ip()));
    let mut never_captured: Vec<String> = config.wan.iter().map(|w| w.iface.clone()).collect();
    // The engine's own packets come from its TUN on their way to the lines.
    never_captured.extend(plane.user.as_ref().map(|u| u.ifname()));
    let ruleset = nft::Ruleset {
        lan: config.lan.clone(),
        wan: never_captured,
        port: config.transparent,
        bypass,
        block_quic: config.block_quic,
    };
    let _capture = nft::Capture::install(&ruleset)?;

    let listeners = open_listeners(&config)?;
    let key = gw.check_key().await;
    if key != "accepted" {
        tokio::spawn(recheck_key(Arc::clone(&gw)));
    }
    info!(
        converter = %converter,
        gateway = %gw.signer.name(),
        key,
        stack = ?config.stack,
        transparent = ?config.transparent,
        socks = ?config.socks,
        "gateway ready"
    );
    let socks_sessions = Arc::new(tokio::sync::Semaphore::new(MAX_SOCKS_SESSIONS));
    let mut tasks = tokio::task::JoinSet::new();
    for (l, transparent) in listeners {
        let gw = Arc::clone(&gw);
        let auth = socks_auth.clone();
        let socks_sessions = Arc::clone(&socks_sessions);
        tasks.spawn(accept_loop(gw, l, transparent, auth, socks_sessions));
    }
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tasks.abort_all();
    info!(
        connections = gw.stats.connections.load(Relaxed),
        refused = gw.stats.refused.load(Relaxed),
        fallback = gw.stats.fallback.load(Relaxed),
        "gateway stopping; removing its kernel configuration"
    );
    if let Some(user) = &plane.user {
        // The relays still open end with a reset, never as if complete.
        let reset = user.abort_all().await;
        debug!(reset, "the engine's connections reset");
    }
    Ok(())
}

/// Serves the Prometheus metrics: the gateway's counters, the lines of mpbond's path manager,
/// and the engine's connections and Fast Opens (`--stack user`).
fn serve_metrics(
    addr: SocketAddr,
    gw: &Arc<Gateway>,
    pm: Option<&crate::pm::PmHandle>,
    engine: Option<crate::status::EngineView>,
    engine_counters: Option<crate::metrics::CounterView>,
) -> Result<()> {
    let g = Arc::clone(gw);
    let pm = pm.map(crate::pm::PmHandle::status_view);
    crate::metrics::serve(
        addr,
        Arc::new(move || {
            let mut s =
                g.metrics_sample(pm.as_ref().and_then(|v| v.lock().ok().map(|s| s.clone())));
            if let Some(e) = &engine {
                s.gauges.extend(crate::metrics::engine_gauges(&e()));
            }
            if let Some(c) = &engine_counters {
                s.counters.extend(c());
            }
            s
        }),
        // A gateway takes LAN connections for as long as it runs.
        Arc::new(|| true),
    )
}

/// What carries the gateway's connections to the converter, and the host configuration it
/// holds (undone when dropped).
struct Plane {
    /// The kernel's MPTCP: mpbond's path manager (or the kernel's) and the lines' routing.
    bonding: Option<crate::pm::Bonding>,
    /// Linux's MPTCP blackhole detection, off while the gateway runs.
    _blackhole: Option<crate::netlink::BlackholeDetectionOff>,
    /// mpbond's engine on a TUN of its own, one engine address routed by each line.
    user: Option<Arc<UserStack>>,
}

impl Plane {
    fn kernel(config: &Config, converter: SocketAddr) -> Result<Self> {
        let blackhole = crate::netlink::BlackholeDetectionOff::apply();
        let bonding = if config.wan.is_empty() {
            None
        } else {
            Some(crate::pm::Bonding::start(
                &config.wan,
                config.pm,
                converter.ip(),
                config.probe,
            )?)
        };
        Ok(Self {
            bonding,
            _blackhole: Some(blackhole),
            user: None,
        })
    }

    fn user(config: &Config, converter: SocketAddr) -> Result<Self> {
        if config.pm == crate::pm::PmKind::Kernel {
            warn!(
                "--pm kernel: the kernel's path manager serves the kernel's MPTCP only; the engine's lines are managed by mpbond's"
            );
        }
        let stack = UserStack::start(&UserStackConfig {
            listen: Vec::new(),
            lines: config.wan.clone(),
            no_mptcp: false,
            tuning: config.tuning,
            // The engine's gateway always offers Fast Open to its converter (the Convert
            // message is made to be replayed safely): `--fast-open` is the kernel stack's.
            fast_open: false,
            probe_target: Some(converter.ip()),
            probe: config.probe,
        })?;
        info!(tun = %stack.ifname(), lines = config.wan.len(), "the connections to the converter run on mpbond's engine");
        Ok(Self {
            bonding: None,
            _blackhole: None,
            user: Some(Arc::new(stack)),
        })
    }
}
