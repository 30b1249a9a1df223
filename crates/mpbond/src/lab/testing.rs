//! Labs for tests: each [`TestLab`] gets a unique name, holds a machine-wide lock so that labs of
//! concurrent tests (threads or processes) do not measure each other's load, and is always torn
//! down when dropped, including when the test panics. Labs left by a test process that was
//! killed are removed by the next one.
//!
//! ```no_run
//! use mpbond::lab::testing::{TestLab, skip_unless_root};
//!
//! // In an integration test, `mpbond_exe` is `env!("CARGO_BIN_EXE_mpbond")`.
//! fn line_answers_pings(mpbond_exe: &str) {
//!     if skip_unless_root("line_answers_pings") {
//!         return;
//!     }
//!     let lab = TestLab::up(mpbond_exe, &["dsl:20mbit:10ms"]);
//!     let out = lab.cmd(mpbond::lab::Role::Gw, "ping").args(["-c1", "10.1.0.1"]).output().unwrap();
//!     assert!(out.status.success());
//! } // the lab is removed here, also if an assertion failed
//! ```

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::spec::{LabSpec, LineSpec};
use super::{LabInfo, LabStats, LineState, Role, netns};

/// Prefix of test lab names: `t<pid>-<n>`.
const PREFIX: char = 't';

/// The owner mark of this test process's labs: `test:<pid>`.
#[must_use]
pub fn test_owner() -> String {
    format!("test:{}", std::process::id())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Returns true, after saying so on the terminal, when the test must be skipped because it is
/// not running as root. The message goes straight to stderr so that `cargo test` shows it even
/// though it captures test output.
#[must_use]
pub fn skip_unless_root(test: &str) -> bool {
    if netns::is_root() {
        return false;
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs root to create network namespaces (CI runs it as root)"
    );
    true
}

/// Runs `f` on a thread of its own in a new, unnamed network namespace that has only a loopback
/// interface (brought up), and returns its result; the namespace vanishes with the thread, so
/// nothing is left behind whatever `f` does. `None`, after saying why, when not root.
///
/// # Panics
/// If the namespace cannot be made or `f` panics (this is a test helper).
pub fn in_private_netns<T: Send>(test: &str, f: impl FnOnce() -> T + Send) -> Option<T> {
    if skip_unless_root(test) {
        return None;
    }
    std::thread::scope(|s| {
        let thread = s.spawn(|| {
            // SAFETY: unshare only changes this thread's namespace membership.
            let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
            let up = Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status();
            assert!(up.is_ok_and(|s| s.success()), "ip link set lo up");
            f()
        });
        match thread.join() {
            Ok(v) => Some(v),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The machine-wide right to run lab tests: held, no other lab test runs. [`TestLab`] takes it;
/// tests that build labs through the command line take it themselves.
#[derive(Debug)]
pub struct Serial(#[expect(dead_code, reason = "held for its lock")] File);

/// Waits for, then takes, the right to run lab tests. Also removes labs left by test processes
/// that were killed.
#[must_use]
pub fn serial() -> Serial {
    let s = Serial(serial_lock());
    remove_stale();
    s
}

/// A lab name no other test uses: `t<pid>-<n>`.
#[must_use]
pub fn unique_name() -> String {
    format!(
        "{PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes lab `.0` when dropped, whether or not it still exists: for tests that build labs
/// through the command line.
#[derive(Debug)]
pub struct DownOnDrop(pub String);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if super::run_dir(&self.0).exists() || !super::existing_namespaces(&self.0).is_empty() {
            if let Err(e) = super::down(&self.0) {
                let _ = writeln!(
                    std::io::stderr(),
                    "warning: removing test lab {}: {e}",
                    self.0
                );
            }
        }
    }
}

/// A lab that exists for the life of a test.
#[derive(Debug)]
pub struct TestLab {
    info: LabInfo,
    exe: PathBuf,
    _serial: Serial,
}

impl TestLab {
    /// Builds a lab with `lines` (`--line` syntax) or the default two lines when empty, running
    /// the emulator from `exe` (pass `env!("CARGO_BIN_EXE_mpbond")`).
    ///
    /// # Panics
    /// When the lab cannot be built: the test cannot go on.
    #[must_use]
    pub fn up(exe: impl AsRef<Path>, lines: &[&str]) -> Self {
        let lines: Vec<LineSpec> = lines
            .iter()
            .map(|l| LineSpec::parse(l).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        Self::with_lines(exe, lines)
    }

    /// Builds a lab with the given lines (the default pair when empty).
    ///
    /// # Panics
    /// When the lab cannot be built.
    #[must_use]
    pub fn with_lines(exe: impl AsRef<Path>, lines: Vec<LineSpec>) -> Self {
        let serial = serial();
        let name = unique_name();
        let lines = if lines.is_empty() {
            LabSpec::default_lines()
        } else {
            lines
        };
        let spec = LabSpec {
            name,
            seed: 1,
            lines,
            owner: Some(test_owner()),
        };
        let info =
            super::up(&spec, exe.as_ref()).unwrap_or_else(|e| panic!("lab up {}: {e}", spec.name));
        TestLab {
            info,
            exe: exe.as_ref().to_owned(),
            _serial: serial,
        }
    }

    /// The lab's description.
    #[must_use]
    pub fn info(&self) -> &LabInfo {
        &self.info
    }

    /// The lab's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// A command that runs `program` in host `role`.
    #[must_use]
    pub fn cmd(&self, role: Role, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.info.netns(role), program]);
        c
    }

    /// What `mpbond status --json` says of the gateway whose process is `pid` (it runs on the
    /// gateway host), and its text.
    ///
    /// # Panics
    /// When the status cannot be had or read.
    #[must_use]
    pub fn gateway_status(&self, pid: u32) -> (Vec<crate::status::Status>, String) {
        let socket = format!("/run/mpbond/gateway-{pid}.sock");
        let out = Command::new("ip")
            .args(["netns", "exec", self.info.netns(Role::Gw)])
            .arg(&self.exe)
            .args(["status", "--json", "--socket", &socket])
            .output()
            .unwrap_or_else(|e| panic!("mpbond status: {e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let status = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("mpbond status --json: {e}: {text}"));
        (status, text)
    }

    /// A command that runs the `mpbond` binary (the one that runs the emulator) with `args`.
    #[must_use]
    pub fn mpbond(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(args);
        c
    }

    /// Takes a line down, up, or blackholes it.
    ///
    /// # Panics
    /// When the emulator refuses.
    pub fn set_state(&self, line: &str, state: LineState) {
        super::set_line_state(self.name(), line, state).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Changes a line's settings (`loss=5`, `rate=10mbit`, ...).
    ///
    /// # Panics
    /// When the emulator refuses.
    pub fn set(&self, line: &str, settings: &[&str]) {
        let s: Vec<String> = settings.iter().map(|s| (*s).to_owned()).collect();
        super::set_line(self.name(), line, &s).unwrap_or_else(|e| panic!("{e}"));
    }

    /// The emulator's counters.
    ///
    /// # Panics
    /// When the emulator does not answer.
    #[must_use]
    pub fn stats(&self) -> LabStats {
        super::stats(self.name()).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if let Err(e) = super::down(&self.info.name) {
            let _ = writeln!(
                std::io::stderr(),
                "warning: removing test lab {}: {e}",
                self.info.name
            );
        }
    }
}

/// Blocks until no other test lab exists on this machine, then holds that right.
fn serial_lock() -> File {
    std::fs::create_dir_all(super::RUN_BASE).unwrap_or_else(|e| panic!("{}: {e}", super::RUN_BASE));
    let path = Path::new(super::RUN_BASE).join(".tests.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // SAFETY: `f` is an open file; flock blocks until the lock is ours.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(
        r,
        0,
        "flock {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    f
}

/// Removes test labs whose test process is gone (it was killed before its labs' `Drop` ran).
/// Only labs marked as a test's (`owner` `test:<pid>`) are touched, never a user's.
fn remove_stale() {
    for lab in super::list() {
        let owner_pid = lab
            .owner
            .as_deref()
            .and_then(|o| o.strip_prefix("test:"))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = owner_pid {
            if pid != std::process::id() && !netns::alive(pid) {
                let _ = super::down(&lab.name);
            }
        }
    }
}

pub use super::bonding::{CONVERTER, Daemon, write_secret};

/// [`super::bonding::start`] for tests: the gateway and the converter, or a panic saying why
/// not. `exe` is the `mpbond` binary, `dir` takes keys and logs.
///
/// # Panics
/// When either daemon does not start.
#[must_use]
pub fn start_bonding(
    lab: &TestLab,
    exe: &str,
    dir: &Path,
    wan: &[&str],
    extra: &[&str],
) -> (Daemon, Daemon) {
    super::bonding::start(lab.info(), Path::new(exe), dir, wan, extra)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// [`start_bonding`], with `converter_extra` on the converter's command line.
///
/// # Panics
/// As [`start_bonding`].
#[must_use]
pub fn start_bonding_with(
    lab: &TestLab,
    exe: &str,
    dir: &Path,
    wan: &[&str],
    extra: &[&str],
    converter_extra: &[&str],
) -> (Daemon, Daemon) {
    super::bonding::start_with(lab.info(), Path::new(exe), dir, wan, extra, converter_extra)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// A directory under the system's temporary directory for one test, removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `mpbond-<tag>-<pid>`, created.
    ///
    /// # Panics
    /// When it cannot be created.
    #[must_use]
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("mpbond-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        Self(p)
    }

    /// A path inside it.
    #[must_use]
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    /// Removes the directory, unless the test failed: then its logs are kept for the reader.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "kept {} (the failed test's files)",
                self.0.display()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `len` bytes of a xorshift stream seeded by `seed` to `path`: incompressible and
/// reproducible test data.
///
/// # Panics
/// When the file cannot be written.
pub fn write_random_file(path: &Path, len: usize, seed: u64) {
    let mut f = std::io::BufWriter::new(
        File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    );
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let n = left.min(buf.len());
        f.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        left -= n;
    }
}

/// tcpdump writing the packets of one namespace to a pcap file, stopped when dropped.
#[derive(Debug)]
pub struct Capture(std::process::Child);

impl Capture {
    /// Starts tcpdump in `role`'s namespace on every interface, whole packets, `filter` (a
    /// pcap filter) into `pcap`; returns once it listens.
    ///
    /// # Panics
    /// When tcpdump cannot be started (`scripts/test.sh` installs it).
    #[must_use]
    pub fn start(lab: &TestLab, role: Role, filter: &str, pcap: &Path) -> Self {
        use std::io::BufRead;
        let mut tcpdump = lab
            .cmd(role, "tcpdump")
            .args(["-i", "any", "-s", "0", "-U", "-w"])
            .arg(pcap)
            .arg(filter)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("tcpdump: {e} (install tcpdump)"));
        let mut err =
            std::io::BufReader::new(tcpdump.stderr.take().unwrap_or_else(|| unreachable!()));
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            let n = err.read_line(&mut line).unwrap_or(0);
            assert!(n > 0, "tcpdump did not start");
        }
        Self(tcpdump)
    }

    /// Stops it once the last packets are written.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        std::thread::sleep(std::time::Duration::from_millis(300));
        if let Ok(pid) = libc::pid_t::try_from(self.0.id()) {
            // SAFETY: a plain signal to our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.0.wait();
    }
}

/// Wireshark's MPTCP warnings (with its mapping and inter-subflow analysis on) as a display
/// filter: a key echoed wrong, no or an unknown crypto algorithm, an infinite mapping, data
/// without a mapping. (Not "no mapping" on a segment whose own DSS maps it whole: tshark says
/// that of a segment it takes for out of order, such as the retransmission of a mapping's
/// only segment that carries it, whose first copy was lost: since mappings ride on their first
/// segment only, RFC 8684 §3.3.1, no other copy was seen.)
pub const TSHARK_MPTCP_WARNINGS: &str = "mptcp.connection.echoed_key_mismatch \
    || mptcp.connection.missing_algorithm || mptcp.connection.unsupported_algorithm \
    || mptcp.dss.infinite_mapping || (mptcp.dss.missing_mapping && tcp.len > 0 \
    && !(tcp.options.mptcp.subflowseqno == tcp.seq && tcp.options.mptcp.datalvllen >= tcp.len))";

/// How many packets of the capture at `pcap` match the display `filter`, with tshark's MPTCP
/// analysis (mappings, inter-subflow retransmissions) on; `None` without tshark.
///
/// # Panics
/// When tshark fails on the file.
#[must_use]
pub fn tshark_count(pcap: &Path, filter: &str) -> Option<usize> {
    tshark_fields(pcap, filter, &["frame.number"]).map(|rows| rows.len())
}

/// The `fields` of each packet of the capture at `pcap` that matches the display `filter`
/// (tab-separated, one line per packet), with the analysis [`tshark_count`] uses; `None`
/// without tshark.
///
/// # Panics
/// When tshark fails on the file.
#[must_use]
pub fn tshark_fields(pcap: &Path, filter: &str, fields: &[&str]) -> Option<Vec<String>> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args([
            "-o",
            "mptcp.analyze_mappings:TRUE",
            "-o",
            "mptcp.intersubflows_retransmission:TRUE",
            "-o",
            "mptcp.analyze_mptcp:TRUE",
            "-Y",
            filter,
            "-T",
            "fields",
        ])
        .args(fields.iter().flat_map(|f| ["-e", f]))
        .output()
        .ok()?;
    assert!(out.status.success(), "tshark failed: {out:?}");
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}
