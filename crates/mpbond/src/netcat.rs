//! `mpbond connect` / `mpbond listen`: a multipath netcat. Standard input goes to the connection
//! and the connection to standard output, over MPTCP when both ends have it, else plain TCP with
//! a warning. `connect --via` goes through a converter (usable as ssh `ProxyCommand`).
//!
//! Half-close is kept: end of standard input sends FIN and the other direction goes on, and the
//! peer's FIN ends standard output while standard input still goes out; the program ends when
//! both directions have ended (standard output flushed). The exit status is 0 when both ended
//! cleanly, 1 otherwise (connection refused or reset, ...).

use std::io;
use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::convert::auth::Signer;
use crate::convert::client::{self, ClientOptions};
use crate::gateway::wan::WanSpec;
use crate::stack::kernel::{self, ConnectOptions, ListenOptions, Proto};

/// How long `connect` and `listen` wait, after their input ended, for the peer to acknowledge
/// the last bytes.
const DELIVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// How long a new MPTCP connection holds back its FIN so that the kernel can add subflows.
const JOIN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Resolves `HOST:PORT` (names through the system resolver), preferring the first answer.
pub async fn resolve(target: &str) -> Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("cannot resolve {target} (expected HOST:PORT)"))?;
    addrs
        .next()
        .with_context(|| format!("{target} has no address"))
}

/// Says once, on standard error, that a connection is not multipath, and why (`cause`: as read
/// right after its handshake, when known).
fn warn_if_not_multipath(
    stream: &TcpStream,
    proto: Proto,
    why: Option<&io::Error>,
    peer: &str,
    cause: Option<kernel::Fallback>,
) {
    match (proto, why) {
        (Proto::Tcp, Some(e)) => {
            warn!("this kernel has no usable MPTCP ({e}); using plain TCP to {peer}");
        }
        (Proto::Tcp, None) => {}
        (Proto::Mptcp, _) if !kernel::is_mptcp(stream) => {
            let cause = cause
                .or_else(|| kernel::fallback_cause(stream))
                .unwrap_or(kernel::Fallback::NotOffered);
            warn!("plain TCP to {peer}, not multipath: {cause}");
        }
        (Proto::Mptcp, _) => debug!("MPTCP to {peer}"),
    }
}

/// Copies standard input to `stream` (then FIN) and `stream` to standard output (until the peer's
/// FIN), each direction on its own. `gate` runs before anything is copied to standard output.
async fn pipe_stdio<F>(stream: &TcpStream, gate: F) -> Result<()>
where
    F: Future<Output = Result<()>>,
{
    let started = tokio::time::Instant::now();
    let (peer_done_tx, mut peer_done) = tokio::sync::watch::channel(false);
    let up = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stdin
                .read(&mut buf)
                .await
                .context("reading standard input")?;
            if n == 0 {
                // Linux refuses new subflows once a connection's client has received the
                // DATA_FIN: a receive-only side (stdin at its end at once) that sent its FIN
                // straight away would keep the whole transfer on one path. So a young MPTCP
                // connection's FIN waits for the joins (or for the peer's own end).
                if kernel::is_mptcp(stream) {
                    let grace = tokio::time::sleep_until(started + JOIN_GRACE);
                    tokio::select! {
                        () = grace => {}
                        _ = peer_done.wait_for(|done| *done) => {}
                    }
                }
                if kernel::is_mptcp(stream) {
                    // The DATA_FIN goes alone, after the data (see `relay::pump`).
                    let _ = kernel::wait_quiet_for_data_fin(stream, DELIVERY_TIMEOUT).await;
                }
                SockRef::from(stream)
                    .shutdown(std::net::Shutdown::Write)
                    .context("sending FIN")?;
                // Success means the peer has it all (and lines set up by `--wan` stay until then).
                kernel::wait_data_acked(stream, DELIVERY_TIMEOUT)
                    .await
                    .context("waiting for the peer to acknowledge the end of the data")?;
                return Ok::<(), anyhow::Error>(());
            }
            kernel::write_all(stream, &buf[..n])
                .await
                .context("sending")?;
        }
    };
    let down = async {
        gate.await?;
        let mut stdout = tokio::io::stdout();
        let mut buf = vec![0u8; 64 * 1024];
        let mut watch = crate::relay::JamWatch::new(stream);
        loop {
            watch.readable(stream).await?;
            match stream.try_read(&mut buf) {
                Ok(0) => {
                    let _ = peer_done_tx.send(true);
                    stdout.flush().await?;
                    return Ok::<(), anyhow::Error>(());
                }
                Ok(n) => stdout
                    .write_all(&buf[..n])
                    .await
                    .context("writing standard output")?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("receiving"),
            }
        }
    };
    // Each direction ends on its own (half-close); the first error ends both. Until both ended
    // in order, closing resets the connection, also when this process is killed: the peer must
    // not take an interrupted session for a complete one.
    kernel::reset_on_close(stream);
    let r = tokio::try_join!(up, down).map(drop);
    if r.is_ok() {
        kernel::close_gracefully(stream);
    }
    r
}

/// `connect --via`: the converter and this client's key.
#[derive(Debug)]
pub struct Via {
    /// The converter, `HOST:PORT`.
    pub converter: String,
    /// The key.
    pub signer: Signer,
    /// Where the key came from, for messages.
    pub key_file: std::path::PathBuf,
}

/// What `mpbond connect` was asked.
#[derive(Debug)]
pub struct ConnectArgs {
    /// `HOST:PORT` to reach.
    pub target: String,
    /// Through a converter.
    pub via: Option<Via>,
    /// Use MPTCP (false: `--tcp`).
    pub mptcp: bool,
    /// Lines to configure for the connection (`--wan`); empty: leave the kernel as it is.
    pub wan: Vec<WanSpec>,
    /// Convert message in the SYN (`--fast-open`).
    pub fast_open: bool,
    /// Which path manager makes the subflows over `wan`.
    pub pm: crate::pm::PmKind,
    /// How mpbond's path manager probes the lines.
    pub probe: crate::pm::ProbeConfig,
    /// The data plane.
    pub stack: crate::stack::Stack,
    /// The user-space stack's scheduler and congestion control.
    pub tuning: crate::stack::user::Tuning,
}

/// `mpbond connect`. SIGINT and SIGTERM end it through the normal path, so that lines set up
/// by `--wan` are removed.
pub async fn connect(args: ConnectArgs) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    if args.stack == crate::stack::Stack::User {
        // The stack (its TUN, NAT and routes) is removed when this future ends or is dropped.
        return tokio::select! {
            r = connect_user(args) => r,
            _ = term.recv() => bail!("terminated"),
            _ = int.recv() => bail!("interrupted"),
        };
    }
    // Undone when this guard drops, whichever way the connection ends. The lines are set up
    // for the peer the connection goes to: the converter with `--via`, else the target.
    let bonding = if args.wan.is_empty() {
        None
    } else {
        let peer = match &args.via {
            Some(v) => resolve(&v.converter).await?,
            None => resolve(&args.target).await?,
        };
        Some(crate::pm::Bonding::start(
            &args.wan,
            args.pm,
            peer.ip(),
            args.probe,
        )?)
    };
    let _status = crate::status::serve("connect", bonding.as_ref().and_then(|b| b.pm()))
        .map_err(|e| debug!("no status socket: {e:#}"))
        .ok();
    tokio::select! {
        r = connect_to(args) => r,
        _ = term.recv() => bail!("terminated"),
        _ = int.recv() => bail!("interrupted"),
    }
}

async fn connect_to(args: ConnectArgs) -> Result<()> {
    let dest = resolve(&args.target).await?;
    if let Some(Via {
        converter: via,
        signer,
        key_file,
    }) = args.via
    {
        let converter = resolve(&via).await?;
        let mut opts = ClientOptions::new(converter);
        opts.mptcp = args.mptcp;
        opts.fast_open = args.fast_open;
        let up = client::open(dest, &signer, &opts).await?;
        // `opts.user` is not set: the kernel's socket.
        let Ok(stream) = up.stream.into_kernel() else {
            bail!("--via: the connection to {via} is not the kernel's");
        };
        let gate = async {
            let reply = match client::read_reply(&stream, opts.reply_timeout).await {
                Ok(r) => r,
                Err(e) => {
                    let what = match e.gateway_refusal() {
                        Some(reason) => client::advice(reason, signer.name(), &key_file),
                        None => e.to_string(),
                    };
                    bail!("{} through {via}: {what}", args.target);
                }
            };
            debug!(?reply, "converter connected");
            warn_if_not_multipath(
                &stream,
                up.proto,
                up.mptcp_unavailable.as_ref(),
                &via,
                up.fallback.or(Some(if up.deferred {
                    kernel::Fallback::Unknown
                } else {
                    kernel::Fallback::Later
                })),
            );
            Ok(())
        };
        return pipe_stdio(&stream, gate).await;
    }
    let conn = kernel::connect(
        dest,
        &ConnectOptions {
            mptcp: args.mptcp,
            ..ConnectOptions::default()
        },
    )
    .await
    .with_context(|| format!("cannot connect to {}", args.target))?;
    warn_if_not_multipath(
        &conn.stream,
        conn.proto,
        conn.mptcp_unavailable.as_ref(),
        &args.target,
        None,
    );
    pipe_stdio(&conn.stream, async { Ok(()) }).await
}

/// `mpbond listen`: accepts one connection, then pipes it like `connect`.
pub async fn listen(
    addr: &str,
    mptcp: bool,
    announce: Vec<std::net::IpAddr>,
    stack: crate::stack::Stack,
    tuning: crate::stack::user::Tuning,
) -> Result<()> {
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => resolve(addr).await?,
    };
    if stack == crate::stack::Stack::User {
        use tokio::signal::unix::{SignalKind, signal};
        if !announce.is_empty() && !mptcp {
            bail!("--announce needs MPTCP (drop --tcp)");
        }
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        return tokio::select! {
            r = listen_user(addr, mptcp, announce, tuning) => r,
            _ = term.recv() => bail!("terminated"),
            _ = int.recv() => bail!("interrupted"),
        };
    }
    // Announces the extra addresses while the connection lasts.
    let _announcer = if announce.is_empty() {
        None
    } else {
        Some(crate::pm::Announcer::start(crate::pm::Announce {
            addrs: announce,
            c_flag: false,
        })?)
    };
    let l = kernel::listen(
        addr,
        &ListenOptions {
            mptcp,
            ..ListenOptions::default()
        },
    )
    .with_context(|| format!("cannot listen on {addr}"))?;
    if let Some(e) = &l.mptcp_unavailable {
        warn!("this kernel has no usable MPTCP ({e}); listening with plain TCP");
    }
    info!(%addr, "listening");
    let (stream, peer) = l.listener.accept().await.context("accept")?;
    // The listener stays open: the kernel takes the peer's additional subflows (MP_JOIN SYNs)
    // through it. Other connections are refused as they come.
    let refuse = async {
        loop {
            match l.listener.accept().await {
                Ok((other, from)) => {
                    debug!(%from, "refused: already connected");
                    kernel::reset_on_close(&other);
                }
                // EMFILE and the like: wait instead of spinning.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    };
    if mptcp && !kernel::is_mptcp(&stream) {
        warn!("{peer} connected with plain TCP (no MPTCP on its side or on the way)");
    } else {
        debug!(%peer, "connected");
    }
    tokio::select! {
        r = pipe_stdio(&stream, async { Ok(()) }) => r,
        () = refuse => unreachable!("the refusing loop never ends"),
    }
}

/// `connect --stack user`: a TUN of its own, mpbond's TCP engine on it.
async fn connect_user(args: ConnectArgs) -> Result<()> {
    use crate::stack::user::{UserStack, UserStackConfig};
    if args.via.is_some() {
        bail!("--via with --stack user is not built yet; use --stack kernel");
    }
    let dest = resolve(&args.target).await?;
    let names: Vec<String> = args.wan.iter().map(|w| w.iface.clone()).collect();
    if args.pm == crate::pm::PmKind::Kernel {
        warn!(
            "--pm kernel: the kernel's path manager serves the kernel's MPTCP only; the engine's lines are managed by mpbond's"
        );
    }
    let stack = UserStack::start(&UserStackConfig {
        listen: Vec::new(),
        lines: args.wan,
        no_mptcp: !args.mptcp,
        tuning: args.tuning,
        fast_open: false,
        probe_target: Some(dest.ip()),
        probe: args.probe,
    })?;
    debug!(tun = %stack.ifname(), "user-space stack");
    // `mpbond status` lists the lines and the engine's connections (the kernel's tables do
    // not have them).
    let _status = crate::status::serve_with("connect", stack.pm(), Some(stack.status_view(names)))
        .map_err(|e| debug!("no status socket: {e:#}"));
    let stream = stack
        .connect(dest)
        .await
        .with_context(|| format!("cannot connect to {}", args.target))?;
    let r = pipe_user(stream, args.mptcp).await;
    stack.close().await;
    r
}

/// `listen --stack user`: the host's port goes to the engine; one connection is served.
async fn listen_user(
    addr: SocketAddr,
    mptcp: bool,
    announce: Vec<std::net::IpAddr>,
    tuning: crate::stack::user::Tuning,
) -> Result<()> {
    use crate::stack::user::{UserStack, UserStackConfig};
    if addr.is_ipv6() {
        bail!(
            "the user-space stack listens on IPv4 only so far (IPv6 forwarding would make the host drop the routes its router advertised); use 0.0.0.0:{} or --stack kernel",
            addr.port()
        );
    }
    let mut stack = UserStack::start(&UserStackConfig {
        listen: vec![addr],
        lines: Vec::new(),
        no_mptcp: !mptcp,
        tuning,
        ..UserStackConfig::default()
    })?;
    let l = stack
        .listen(addr.port())
        .with_context(|| format!("cannot listen on {addr}"))?;
    // The host's own addresses are announced (the engine's 198.18.x ones never are): the
    // host maps the port on every address of its own to the engine.
    if let Some(ip) = announce.iter().find(|ip| ip.is_ipv6()) {
        bail!("--announce {ip}: the user-space stack reaches IPv4 peers only so far");
    }
    // Withdrawn while their interface is down.
    stack.announce_watched(announce);
    info!(%addr, tun = %stack.ifname(), "listening");
    let _status = crate::status::serve_with("listen", None, Some(stack.status_view(Vec::new())))
        .map_err(|e| debug!("no status socket: {e:#}"));
    let (stream, peer) = l.accept().await.context("accept")?;
    debug!(%peer, "connected");
    // Later connections get a reset: one session at a time, as with the kernel stack.
    let refuse = async {
        loop {
            match l.accept().await {
                Ok((other, from)) => {
                    debug!(%from, "refused: already connected");
                    other.abort();
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    };
    let r = tokio::select! {
        r = pipe_user(stream, mptcp) => r,
        () = refuse => unreachable!("the refusing loop never ends"),
    };
    drop(l);
    stack.close().await;
    r
}

/// Standard input to the user-space stream (then FIN, then waiting until the peer has it
/// all), the stream to standard output (until the peer's FIN), each direction on its own.
async fn pipe_user(stream: crate::stack::user::UserStream, mptcp: bool) -> Result<()> {
    stream.set_nodelay(true);
    let started = tokio::time::Instant::now();
    let (peer_done_tx, mut peer_done) = tokio::sync::watch::channel(false);
    let delivery = stream.delivery();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let up = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stdin
                .read(&mut buf)
                .await
                .context("reading standard input")?;
            if n == 0 {
                // As with the kernel stack (`pipe_stdio`): Linux takes no join once it has our
                // DATA_FIN, so a young connection's end waits for the joins or the peer's end.
                if mptcp {
                    tokio::select! {
                        () = tokio::time::sleep_until(started + JOIN_GRACE) => {}
                        _ = peer_done.wait_for(|done| *done) => {}
                    }
                }
                wr.shutdown().await.context("sending FIN")?;
                tokio::time::timeout(DELIVERY_TIMEOUT, delivery.wait())
                    .await
                    .context("waiting for the peer to acknowledge the end of the data")?
                    .context("waiting for the peer to acknowledge the end of the data")?;
                return Ok::<(), anyhow::Error>(());
            }
            wr.write_all(&buf[..n]).await.context("sending")?;
        }
    };
    let down = async {
        let mut stdout = tokio::io::stdout();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = rd.read(&mut buf).await.context("receiving")?;
            if n == 0 {
                let _ = peer_done_tx.send(true);
                stdout.flush().await?;
                return Ok::<(), anyhow::Error>(());
            }
            stdout
                .write_all(&buf[..n])
                .await
                .context("writing standard output")?;
        }
    };
    let r = tokio::try_join!(up, down).map(drop);
    // A session that failed is reset, not closed as if it were complete (as with the kernel
    // stack, see `pipe_stdio`).
    if r.is_err() {
        rd.unsplit(wr).abort();
    }
    r
}

/// Reads a gateway key file (one `NAME KEY` line).
pub fn load_signer(path: &std::path::Path) -> Result<Signer> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("key file {}", path.display()))?;
    let signer = Signer::from_key_file_text(&text).with_context(|| {
        format!(
            "key file {} (expected one line from `mpbond keygen NAME`)",
            path.display()
        )
    })?;
    if signer.name().as_str().is_empty() {
        bail!("key file {} has no name", path.display());
    }
    Ok(signer)
}
