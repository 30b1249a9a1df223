//! One file through `mpbond listen` in one lab host and `mpbond connect` in another, with
//! whatever data plane each is given: how long it took and the SHA-256 of what arrived. Used
//! by the user-space stack's tests and its benchmark against the kernel's TCP.

use std::fs::File;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use sha2::{Digest as _, Sha256};

use super::bonding::Daemon;
use super::{LabInfo, Role};

/// Which way the file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the `connect` side to the `listen` side.
    Upload,
    /// From the `listen` side to the `connect` side.
    Download,
}

/// What a transfer did.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// SHA-256 of what arrived, hex.
    pub sha256: String,
    /// Bytes that arrived.
    pub bytes: u64,
    /// From starting `connect` to its exit (the handshake and slow start included).
    pub elapsed: Duration,
}

impl Transfer {
    /// Goodput over the whole transfer, bit/s.
    #[must_use]
    pub fn bps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64()
    }
}

/// SHA-256 of a file, hex.
pub fn file_sha256(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    let hex = h.finalize().iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    });
    Ok((hex, n))
}

/// Runs `mpbond listen <listen_args>` in host `server` and, once it listens, `mpbond connect
/// <connect_args>` in host `client`; `file` goes the `dir` way, what arrives is written to
/// `out`. Logs go next to `out`.
#[expect(clippy::too_many_arguments, reason = "both ends of one transfer")]
pub fn transfer(
    info: &LabInfo,
    exe: &Path,
    server: Role,
    listen_args: &[&str],
    client: Role,
    connect_args: &[&str],
    dir: Direction,
    file: &Path,
    out: &Path,
) -> Result<Transfer> {
    let log_dir = out.parent().unwrap_or(Path::new("/tmp"));
    let stem = out
        .file_name()
        .map_or_else(|| "transfer".into(), |s| s.to_string_lossy().into_owned());
    let (server_in, server_out, client_in, client_out) = match dir {
        Direction::Upload => (None, Some(out), Some(file), None),
        Direction::Download => (Some(file), None, None, Some(out)),
    };
    let mut args = vec!["listen"];
    args.extend_from_slice(listen_args);
    let mut listener = Daemon::start_with_stdio(
        info,
        server,
        exe,
        &args,
        log_dir.join(format!("{stem}.listen.log")),
        "listening",
        server_in,
        server_out,
    )?;
    let stdin = match client_in {
        Some(f) => Stdio::from(File::open(f).with_context(|| format!("{}", f.display()))?),
        None => Stdio::null(),
    };
    let stdout = match client_out {
        Some(f) => Stdio::from(File::create(f).with_context(|| format!("{}", f.display()))?),
        None => Stdio::null(),
    };
    let clog = log_dir.join(format!("{stem}.connect.log"));
    let t0 = Instant::now();
    let status = Command::new("ip")
        .args(["netns", "exec", info.netns(client)])
        .arg(exe)
        .arg("connect")
        .args(connect_args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(stdin)
        .stdout(stdout)
        .stderr(File::create(&clog)?)
        .status()
        .context("running mpbond connect")?;
    let elapsed = t0.elapsed();
    if !status.success() {
        bail!(
            "mpbond connect {connect_args:?} failed ({status}):\n{}\nlisten:\n{}",
            std::fs::read_to_string(&clog).unwrap_or_default(),
            listener.log_text()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !listener.exited() {
        if Instant::now() > deadline {
            bail!("mpbond listen did not end:\n{}", listener.log_text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (sha256, bytes) = file_sha256(out)?;
    Ok(Transfer {
        sha256,
        bytes,
        elapsed,
    })
}
