//! `mpbond status`: what a running gateway, converter or `connect` knows of its MPTCP
//! connections and lines, read from the kernel when asked (the socket tables, as `ss -M` and
//! `ss -ti` show them) and from mpbond's path manager (line health, counters).
//!
//! Each daemon serves its status on a Unix socket, `/run/mpbond/<kind>-<pid>.sock` (root only),
//! removed when it exits; `mpbond status` asks every such socket, or the one given.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::netlink::sock_diag::{self, DiagSocket};
use crate::pm::{PmHandle, driver::LineStatus};

/// Where the daemons' status sockets are.
pub const DIR: &str = "/run/mpbond";

/// One subflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubflowStatus {
    /// The WAN line it leaves by, when known.
    pub line: Option<String>,
    /// Local end.
    pub local: SocketAddr,
    /// Remote end.
    pub remote: SocketAddr,
    /// Local and remote address ids.
    pub ids: (u8, u8),
    /// TCP state (`established`, `syn-sent`, ...).
    pub state: String,
    /// Backup, set by us or by the peer (`MP_PRIO`).
    pub backup: bool,
    /// The `MP_JOIN` (or `MP_CAPABLE`) handshake completed.
    pub fully_established: bool,
    /// Smoothed RTT, milliseconds.
    pub rtt_ms: f64,
    /// Congestion window, segments.
    pub cwnd: u32,
    /// Bytes sent (retransmissions included).
    pub bytes_sent: u64,
    /// Bytes acknowledged by the peer.
    pub bytes_acked: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Segments retransmitted in all.
    pub retransmits: u32,
    /// The congestion control running on it, when the daemon's stack says (the user-space
    /// stack: `auto/cubic`, `auto/bbr`, `lia`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub congestion: Option<String>,
}

/// One MPTCP connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionStatus {
    /// The kernel's local token.
    pub token: u32,
    /// Local end of its first subflow.
    pub local: SocketAddr,
    /// Remote end of its first subflow.
    pub remote: SocketAddr,
    /// The connection fell back to plain TCP.
    pub fallback: bool,
    /// Subflows besides the first, as the kernel counts them.
    pub extra_subflows: u8,
    /// Its subflows.
    pub subflows: Vec<SubflowStatus>,
}

/// What one daemon says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `gateway`, `converter` or `connect`.
    pub kind: String,
    /// Its process id.
    pub pid: u32,
    /// Its lines, with mpbond's path manager (empty otherwise).
    pub lines: Vec<LineStatus>,
    /// Its path manager's counters, if it runs one.
    pub counters: Option<crate::pm::manager::Counters>,
    /// The MPTCP connections of its network namespace.
    pub connections: Vec<ConnectionStatus>,
}

fn tcp_state(s: u8) -> &'static str {
    match s {
        1 => "established",
        2 => "syn-sent",
        3 => "syn-recv",
        4 => "fin-wait-1",
        5 => "fin-wait-2",
        6 => "time-wait",
        7 => "close",
        8 => "close-wait",
        9 => "last-ack",
        10 => "listen",
        11 => "closing",
        _ => "unknown",
    }
}

/// The MPTCP connections (not listeners) of this network namespace and their subflows, from
/// the kernel's socket tables; `line_of` names the line of a subflow's local address.
///
/// # Errors
/// If the socket tables cannot be read.
pub fn connections(
    line_of: &dyn Fn(&DiagSocket) -> Option<String>,
) -> Result<Vec<ConnectionStatus>> {
    let msks = sock_diag::mptcp_sockets().context("reading MPTCP sockets (sock_diag)")?;
    let tcp = sock_diag::tcp_sockets().context("reading TCP sockets (sock_diag)")?;
    let mut out: Vec<ConnectionStatus> = msks
        .iter()
        .filter(|m| m.state != 10)
        .map(|m| {
            let info = m.mptcp_info();
            let subflows = tcp
                .iter()
                .filter(|t| t.ulp.is_some_and(|u| u.token_loc == info.token))
                .map(|t| {
                    let ulp = t.ulp.unwrap_or_default();
                    let ti = t.tcp_info();
                    SubflowStatus {
                        line: line_of(t),
                        local: t.local,
                        remote: t.remote,
                        ids: (ulp.id_loc, ulp.id_rem),
                        state: tcp_state(t.state).to_owned(),
                        backup: ulp.flags
                            & (sock_diag::SUBFLOW_FLAG_BKUP_LOC | sock_diag::SUBFLOW_FLAG_BKUP_REM)
                            != 0,
                        fully_established: ulp.flags & sock_diag::SUBFLOW_FLAG_FULLY_ESTABLISHED
                            != 0,
                        rtt_ms: f64::from(ti.tcpi_rtt) / 1e3,
                        cwnd: ti.tcpi_snd_cwnd,
                        bytes_sent: ti.tcpi_bytes_sent,
                        bytes_acked: ti.tcpi_bytes_acked,
                        bytes_received: ti.tcpi_bytes_received,
                        retransmits: ti.tcpi_total_retrans,
                        congestion: None,
                    }
                })
                .collect();
            ConnectionStatus {
                token: info.token,
                local: m.local,
                remote: m.remote,
                fallback: info.flags & 1 != 0,
                extra_subflows: info.subflows,
                subflows,
            }
        })
        .collect();
    out.sort_by_key(|c| c.token);
    Ok(out)
}

/// Builds the status of this process: `kind`, and the path manager's view if it runs one.
///
/// # Errors
/// If the kernel's socket tables cannot be read.
pub fn collect(kind: &str, pm: Option<&crate::pm::PmStatus>) -> Result<Status> {
    let lines = pm.map(|p| p.lines.clone()).unwrap_or_default();
    let by_addr = lines.clone();
    let line_of = move |s: &DiagSocket| {
        by_addr
            .iter()
            .find(|l| l.addresses.contains(&s.local.ip()))
            .map(|l| l.name.clone())
    };
    Ok(Status {
        kind: kind.to_owned(),
        pid: std::process::id(),
        lines,
        counters: pm.map(|p| p.counters.clone()),
        connections: connections(&line_of)?,
    })
}

/// The status socket of a running daemon; removed when dropped.
#[derive(Debug)]
pub struct StatusServer {
    path: PathBuf,
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves this process's status (`kind`, and `pm`'s view if given) on
/// `/run/mpbond/<kind>-<pid>.sock` from a thread of its own. Each client gets one JSON line.
///
/// # Errors
/// If the socket cannot be made.
pub fn serve(kind: &'static str, pm: Option<&PmHandle>) -> Result<StatusServer> {
    serve_with(kind, pm, None)
}

/// The connections of mpbond's own MPTCP engine (`--stack user`), asked for at each query:
/// the kernel's socket tables do not have them.
pub type EngineView = Arc<dyn Fn() -> Vec<ConnectionStatus> + Send + Sync>;

/// Like [`serve`], with the engine's connections listed after the kernel's.
///
/// # Errors
/// If the socket cannot be made.
pub fn serve_with(
    kind: &'static str,
    pm: Option<&PmHandle>,
    engine: Option<EngineView>,
) -> Result<StatusServer> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(DIR).with_context(|| format!("creating {DIR}"))?;
    remove_stale_sockets();
    let path = Path::new(DIR).join(format!("{kind}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("status socket {}", path.display()))?;
    // Connections and addresses are for root (the daemons run as root).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let view = pm.map(PmHandle::status_view);
    let view = Arc::new(view);
    std::thread::Builder::new()
        .name("mpbond-status".into())
        .spawn(move || {
            for c in listener.incoming() {
                let Ok(mut c) = c else { continue };
                let pm = view
                    .as_ref()
                    .as_ref()
                    .and_then(|v| v.lock().ok().map(|s| s.clone()));
                let answer = match collect(kind, pm.as_ref()) {
                    Ok(mut s) => {
                        if let Some(e) = &engine {
                            s.connections.extend(e());
                        }
                        serde_json::to_string(&s).unwrap_or_default()
                    }
                    Err(e) => serde_json::json!({ "error": format!("{e:#}") }).to_string(),
                };
                let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
                if let Err(e) = writeln!(c, "{answer}") {
                    debug!("status client: {e}");
                }
            }
        })
        .context("starting the status thread")?;
    Ok(StatusServer { path })
}

/// The pid in a status socket's name, `<kind>-<pid>.sock`.
fn socket_pid(name: &str) -> Option<u32> {
    name.strip_suffix(".sock")?.rsplit_once('-')?.1.parse().ok()
}

/// Removes the status sockets of daemons that are gone (killed before they could remove their
/// own).
pub fn remove_stale_sockets() {
    for f in std::fs::read_dir(DIR).into_iter().flatten().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if let Some(pid) = socket_pid(&name) {
            if !crate::host::process_alive(pid) {
                let _ = std::fs::remove_file(f.path());
                debug!("removed {name}: its daemon is gone");
            }
        }
    }
}

/// Asks the daemon at `path`.
///
/// # Errors
/// If it does not answer or answers something else than a status.
pub fn query(path: &Path) -> Result<Status> {
    let c = UnixStream::connect(path).with_context(|| format!("{}", path.display()))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line)?;
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            bail!("{}: {e}", path.display());
        }
    }
    serde_json::from_str(&line).with_context(|| format!("{}: not a status", path.display()))
}

/// The status sockets in [`DIR`] of daemons that run.
#[must_use]
pub fn sockets() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                // A killed daemon's socket answers nothing: not worth a warning.
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| socket_pid(&n.to_string_lossy()))
                        .is_none_or(crate::host::process_alive)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A human-readable table of `s`.
#[must_use]
pub fn render(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "{} (pid {})", s.kind, s.pid);
    for l in &s.lines {
        let _ = writeln!(
            o,
            "  line {:<8} {:<8}{} rtt {} addresses {:?} failures {} probes {} ({})",
            l.name,
            format!("{:?}", l.state).to_lowercase(),
            if l.backup { " backup" } else { "" },
            l.probe_rtt_ms
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.1} ms")),
            l.addresses,
            l.failures,
            format!("{:?}", l.probe_pace).to_lowercase(),
            l.probe_bytes_per_day.map_or_else(
                || "cost not known yet".to_owned(),
                |b| format!("{} a day", crate::units::format_bytes(b))
            ),
        );
    }
    for c in &s.connections {
        let _ = writeln!(
            o,
            "  {} -> {} token {:08x}{}",
            c.local,
            c.remote,
            c.token,
            if c.fallback { " FALLBACK to TCP" } else { "" }
        );
        for f in &c.subflows {
            let _ = writeln!(
                o,
                "    {:<6} {} -> {} id {}/{} {}{} rtt {:.1} ms cwnd {}{} sent {} acked {} received {}",
                f.line.as_deref().unwrap_or("-"),
                f.local,
                f.remote,
                f.ids.0,
                f.ids.1,
                f.state,
                if f.backup { " backup" } else { "" },
                f.rtt_ms,
                f.cwnd,
                f.congestion
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default(),
                f.bytes_sent,
                f.bytes_acked,
                f.bytes_received
            );
        }
    }
    o
}

/// `mpbond status [--json] [--socket PATH]`.
///
/// # Errors
/// When no daemon answers.
pub fn run(json: bool, socket: Option<&Path>) -> Result<()> {
    let paths = match socket {
        Some(p) => vec![p.to_path_buf()],
        None => sockets(),
    };
    if paths.is_empty() {
        bail!("no running mpbond gateway, converter or connect ({DIR} has no status socket)");
    }
    let mut all = Vec::new();
    for p in &paths {
        match query(p) {
            Ok(s) => all.push(s),
            Err(e) if socket.is_some() => return Err(e),
            Err(e) => warn!("{e:#}"),
        }
    }
    if all.is_empty() {
        bail!("no mpbond daemon answered");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for s in &all {
            print!("{}", render(s));
        }
    }
    Ok(())
}
