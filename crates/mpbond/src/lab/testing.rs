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
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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

/// A process of the lab (a converter, a gateway), stopped with SIGTERM (then SIGKILL) when
/// dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `exe args` in host `role` with its standard error in `log`, and waits (at most
    /// 20 s) until the log says `ready`. `RUST_LOG` is `MPBOND_TEST_LOG`, else `info`.
    ///
    /// # Panics
    /// When it cannot start, exits, or is not ready in time (the log is in the message).
    #[must_use]
    pub fn start(
        lab: &TestLab,
        role: Role,
        exe: &str,
        args: &[&str],
        log: PathBuf,
        ready: &str,
    ) -> Self {
        let file = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = lab
            .cmd(role, exe)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("MPBOND_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{exe}: {e}"));
        let mut d = Self { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if d.log_text().contains(ready) {
                return d;
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("{args:?} exited ({st}) before `{ready}`:\n{}", d.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{args:?}: no `{ready}` in 20 s:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything it logged so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's warnings and errors (at most 30 lines), for a failure message; the whole log
    /// is copied next to the test binary (`target/debug/mpbond-test-logs/`).
    #[must_use]
    pub fn problems(&self) -> String {
        let text = self.log_text();
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|p| p.join("mpbond-test-logs")))
        {
            let _ = std::fs::create_dir_all(&dir);
            if let Some(name) = self.log.file_name() {
                let _ = std::fs::write(dir.join(name), &text);
            }
        }
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(30)
            .collect();
        lines.join("\n")
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits (at most 10 s, then SIGKILL) and returns whether it exited
    /// successfully.
    pub fn stop(&mut self) -> bool {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return false;
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

/// Where [`start_bonding`] puts the converter: the vps's public address, port 7000.
pub const CONVERTER: &str = "198.51.100.1:7000";

/// Starts a converter on the vps (at [`CONVERTER`]) and a gateway on the gw host with WAN lines
/// `wan` (`--wan` syntax) capturing `lan0`, with `extra` on the gateway's command line. They
/// share a fresh key, `dir/home.key` (gateway `home`); logs go to `dir`. Returns the gateway
/// and the converter.
///
/// # Panics
/// When a key cannot be made or either daemon does not start.
#[must_use]
pub fn start_bonding(
    lab: &TestLab,
    exe: &str,
    dir: &Path,
    wan: &[&str],
    extra: &[&str],
) -> (Daemon, Daemon) {
    use crate::convert::auth::{Key, Name, key_line};
    use std::os::unix::fs::OpenOptionsExt as _;
    let key = dir.join("home.key");
    let line = key_line(
        &Name::new("home").unwrap_or_else(|e| panic!("{e}")),
        &Key::generate().unwrap_or_else(|e| panic!("key: {e}")),
    );
    let keys = dir.join("converter.keys");
    for path in [&key, &keys] {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        writeln!(f, "{line}").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let keys = keys.to_string_lossy().into_owned();
    let converter = Daemon::start(
        lab,
        Role::Vps,
        exe,
        &["converter", "--listen", CONVERTER, "--keys", &keys],
        dir.join("converter.log"),
        "converter ready",
    );
    let key = key.to_string_lossy().into_owned();
    let mut args = vec![
        "gateway",
        "--converter",
        CONVERTER,
        "--key",
        &key,
        "--lan",
        "lan0",
    ];
    for w in wan {
        args.extend_from_slice(&["--wan", w]);
    }
    args.extend_from_slice(extra);
    let gateway = Daemon::start(
        lab,
        Role::Gw,
        exe,
        &args,
        dir.join("gateway.log"),
        "gateway ready",
    );
    (gateway, converter)
}
