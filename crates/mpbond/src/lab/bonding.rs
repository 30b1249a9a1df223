//! Converter and gateway as processes in a lab's hosts, for the tests, the benchmarks and the
//! demo: one key, the gateway on every line, their logs in a directory, both stopped (SIGTERM,
//! so the gateway removes what it installed) when dropped.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::{LabInfo, Role};

/// A process of the lab (a converter, a gateway), stopped with SIGTERM (then SIGKILL) when
/// dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `exe args` in host `role` of the lab with its standard error in `log`, and waits
    /// (at most 20 s) until the log says `ready`. `RUST_LOG` is `MPBOND_TEST_LOG`, else `info`.
    ///
    /// # Errors
    /// When it cannot start, exits, or is not ready in time (the log is in the message).
    pub fn start(
        info: &LabInfo,
        role: Role,
        exe: &Path,
        args: &[&str],
        log: PathBuf,
        ready: &str,
    ) -> Result<Self> {
        Self::start_with_stdio(info, role, exe, args, log, ready, None, None)
    }

    /// Like [`Daemon::start`], with standard input read from `stdin` and standard output
    /// written to `stdout` (else both null).
    ///
    /// # Errors
    /// As [`Daemon::start`], and when a file cannot be opened.
    #[expect(clippy::too_many_arguments, reason = "a process and its three streams")]
    pub fn start_with_stdio(
        info: &LabInfo,
        role: Role,
        exe: &Path,
        args: &[&str],
        log: PathBuf,
        ready: &str,
        stdin: Option<&Path>,
        stdout: Option<&Path>,
    ) -> Result<Self> {
        Self::spawn(info.netns(role), exe, args, log, ready, stdin, stdout)
    }

    /// Like [`Daemon::start`], in network namespace `netns`, which need not be one of a lab's
    /// hosts (a test's extra hosts: the instances of a converter fleet).
    ///
    /// # Errors
    /// As [`Daemon::start`].
    pub fn start_in(
        netns: &str,
        exe: &Path,
        args: &[&str],
        log: PathBuf,
        ready: &str,
    ) -> Result<Self> {
        Self::spawn(netns, exe, args, log, ready, None, None)
    }

    fn spawn(
        netns: &str,
        exe: &Path,
        args: &[&str],
        log: PathBuf,
        ready: &str,
        stdin: Option<&Path>,
        stdout: Option<&Path>,
    ) -> Result<Self> {
        let file = File::create(&log).with_context(|| format!("{}", log.display()))?;
        let input = match stdin {
            Some(p) => Stdio::from(File::open(p).with_context(|| format!("{}", p.display()))?),
            None => Stdio::null(),
        };
        let output = match stdout {
            Some(p) => Stdio::from(File::create(p).with_context(|| format!("{}", p.display()))?),
            None => Stdio::null(),
        };
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(exe)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("MPBOND_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(input)
            .stdout(output)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let mut d = Self { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if d.log_text().contains(ready) {
                return Ok(d);
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                bail!("{args:?} exited ({st}) before `{ready}`:\n{}", d.log_text());
            }
            if Instant::now() >= deadline {
                bail!("{args:?}: no `{ready}` in 20 s:\n{}", d.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
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

    /// Waits (at most `within`) until it exits by itself: its exit status, or `None` if it is
    /// still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits (at most 10 s, then SIGKILL) and returns whether it exited
    /// successfully. A converter drains its connections on SIGTERM: after a second it gets a
    /// second SIGTERM, which stops it at once.
    pub fn stop(&mut self) -> bool {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return false;
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let again = Instant::now() + Duration::from_secs(1);
        let mut signalled_again = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            if !signalled_again && Instant::now() > again {
                signalled_again = true;
                // SAFETY: as above; the child has not been waited for.
                unsafe { libc::kill(pid, libc::SIGTERM) };
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

/// Writes `line` as the whole of a new file only root may read (a key file).
///
/// # Errors
/// When the file cannot be written.
pub fn write_secret(path: &Path, line: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("{}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("{}", path.display()))
}

/// Where [`start`] puts the converter: the vps's public address, port 7000.
pub const CONVERTER: &str = "198.51.100.1:7000";

/// Starts a converter on the vps (at [`CONVERTER`]) and a gateway on the gw host with WAN lines
/// `wan` (`--wan` syntax) capturing `lan0`, with `extra` on the gateway's command line, both
/// from the `mpbond` binary `exe`. They share a fresh key, `dir/home.key` (gateway `home`);
/// logs go to `dir`. Returns the gateway and the converter.
///
/// # Errors
/// When a key cannot be written or either daemon does not start.
pub fn start(
    info: &LabInfo,
    exe: &Path,
    dir: &Path,
    wan: &[&str],
    extra: &[&str],
) -> Result<(Daemon, Daemon)> {
    start_with(info, exe, dir, wan, extra, &[])
}

/// [`start`], with `converter_extra` on the converter's command line (`--stack user`, say).
///
/// # Errors
/// As [`start`].
pub fn start_with(
    info: &LabInfo,
    exe: &Path,
    dir: &Path,
    wan: &[&str],
    extra: &[&str],
    converter_extra: &[&str],
) -> Result<(Daemon, Daemon)> {
    use crate::convert::auth::{Key, Name, key_line};
    let key = dir.join("home.key");
    let line = key_line(&Name::new("home")?, &Key::generate()?);
    let keys = dir.join("converter.keys");
    for path in [&key, &keys] {
        write_secret(path, &line)?;
    }
    let keys = keys.to_string_lossy().into_owned();
    let mut args = vec!["converter", "--listen", CONVERTER, "--keys", &keys];
    args.extend_from_slice(converter_extra);
    let converter = Daemon::start(
        info,
        Role::Vps,
        exe,
        &args,
        dir.join("converter.log"),
        "converter ready",
    )?;
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
        info,
        Role::Gw,
        exe,
        &args,
        dir.join("gateway.log"),
        "gateway ready",
    )?;
    Ok((gateway, converter))
}
