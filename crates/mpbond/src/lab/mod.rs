//! `mpbond lab`: network-namespace testbeds with emulated lines.
//!
//! ```text
//!  NAME-lan ── NAME-gw ══ line 1..N ══ NAME-emu ══ line 1..N ══ NAME-vps ── NAME-web
//! ```
//!
//! [`up`] builds a lab from a [`LabSpec`] (namespaces, veth links with offloads off, addresses,
//! routes, forwarding) and starts its link [`emulator`] in `NAME-emu`; [`down`] removes
//! everything, including what a crashed run left behind. A lab's state lives in
//! `/run/mpbond/lab/NAME/` (`lab.json`, the emulator's pid, control socket and log).
//!
//! Tests build labs with [`testing::TestLab`], which always tears them down.

pub mod bench;
pub mod bonding;
pub mod congestion;
pub mod emulator;
pub mod failover;
pub mod measure;
pub mod netns;
pub mod plan;
pub mod spec;
pub mod testing;
pub mod transfer;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use self::emulator::control::{self, ControlError, Request};
pub use self::emulator::stats::{LabStats, LineState};
use self::netns::CommandError;
pub use self::plan::{LabInfo, Role};
pub use self::spec::{LabSpec, LineSpec};

/// Where labs keep their state.
pub const RUN_BASE: &str = "/run/mpbond/lab";

/// The state directory of lab `name`.
#[must_use]
pub fn run_dir(name: &str) -> PathBuf {
    Path::new(RUN_BASE).join(name)
}

/// Environment variable that makes [`up`] fail on purpose after building the links, so tests can
/// check that a failed build leaves nothing behind.
pub const FAULT_ENV: &str = "MPBOND_LAB_INJECT_FAULT";

/// Why a lab operation failed. Every message fits on one line.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Not running as root.
    #[error("mpbond lab needs root (it creates network namespaces and links); run it with sudo")]
    NotRoot,
    /// A lab (or a leftover of one) already has this name.
    #[error("lab `{0}` already exists (remove it with `mpbond lab down {0}`)")]
    Exists(String),
    /// No lab has this name.
    #[error("no lab named `{0}` (`mpbond lab list` shows the labs)")]
    NotFound(String),
    /// The lab description is wrong.
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    /// A system command failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A system call or file operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The emulator could not be started or reached.
    #[error("link emulator: {0}")]
    Emulator(String),
    /// The emulator refused or failed a request.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A request that makes no sense.
    #[error("{0}")]
    Usage(String),
}

fn require_root() -> Result<(), LabError> {
    if netns::is_root() {
        Ok(())
    } else {
        Err(LabError::NotRoot)
    }
}

/// An exclusive lock serialising lab creation and removal across processes.
struct Lock(File);

impl Lock {
    fn acquire() -> Result<Self, LabError> {
        std::fs::create_dir_all(RUN_BASE)?;
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(Path::new(RUN_BASE).join(".lock"))?;
        // SAFETY: `f` is an open file; flock blocks until the lock is ours.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(Lock(f))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: `self.0` is an open file.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Namespaces of lab `name` that exist now.
pub(crate) fn existing_namespaces(name: &str) -> Vec<String> {
    Role::ALL
        .iter()
        .map(|r| r.netns(name))
        .filter(|ns| netns::exists(ns))
        .collect()
}

/// Builds lab `spec` and starts its emulator, running `exe` (the `mpbond` binary) as
/// `mpbond lab emulate`. On any failure, removes whatever it had built and returns the error.
pub fn up(spec: &LabSpec, exe: &Path) -> Result<LabInfo, LabError> {
    spec.validate()?;
    require_root()?;
    let _lock = Lock::acquire()?;
    let name = &spec.name;
    if run_dir(name).exists() || !existing_namespaces(name).is_empty() {
        return Err(LabError::Exists(name.clone()));
    }
    let dir = run_dir(name);
    std::fs::create_dir_all(&dir)?;
    let mut info = plan::plan(spec, &dir);
    let built = build(&info).and_then(|()| start_emulator(&mut info, exe));
    if let Err(e) = built {
        tracing::debug!("lab {name}: build failed, removing it: {e}");
        if let Err(cleanup) = remove(name) {
            tracing::warn!("lab {name}: cleanup after a failed build: {cleanup}");
        }
        return Err(e);
    }
    Ok(info)
}

/// Creates namespaces, links, addresses and routes of `info`.
fn build(info: &LabInfo) -> Result<(), LabError> {
    let ns = |r: Role| info.netns(r).to_owned();
    for role in Role::ALL {
        netns::add(&ns(role))?;
    }
    // Namespace-wide settings go first: `default` values apply to interfaces created later.
    for role in Role::ALL {
        let n = ns(role);
        for key in ["all", "default"] {
            netns::sysctl(&n, &format!("net.ipv4.conf.{key}.rp_filter"), "0")?;
            netns::sysctl(&n, &format!("net.ipv6.conf.{key}.accept_ra"), "0")?;
            netns::sysctl(&n, &format!("net.ipv6.conf.{key}.accept_dad"), "0")?;
            if role == Role::Emu {
                // The emulator is a wire, not a host: no addresses, no router solicitations.
                netns::sysctl(&n, &format!("net.ipv6.conf.{key}.disable_ipv6"), "1")?;
            }
        }
        let fwd = if info.hosts.get(role).forwarding {
            "1"
        } else {
            "0"
        };
        netns::sysctl(&n, "net.ipv4.ip_forward", fwd)?;
        if role != Role::Emu {
            netns::sysctl(&n, "net.ipv6.conf.all.forwarding", fwd)?;
        }
        netns::ip_in(&n, &["link", "set", "dev", "lo", "up"])?;
    }

    // Veth pairs: (namespace, name) of each end.
    let mut pairs: Vec<((String, String), (String, String))> = vec![(
        (ns(Role::Lan), "eth0".into()),
        (ns(Role::Gw), "lan0".into()),
    )];
    for line in &info.lines {
        pairs.push((
            (ns(Role::Gw), line.name.clone()),
            (ns(Role::Emu), format!("g-{}", line.name)),
        ));
        pairs.push((
            (ns(Role::Vps), line.name.clone()),
            (ns(Role::Emu), format!("v-{}", line.name)),
        ));
    }
    pairs.push((
        (ns(Role::Vps), "web0".into()),
        (ns(Role::Web), "eth0".into()),
    ));
    for ((ns_a, a), (ns_b, b)) in &pairs {
        // Always `name`/`dev` before a name: iproute2 would read a line called `a` as `address`.
        let args = [
            "link", "add", "name", a, "type", "veth", "peer", "name", b, "netns", ns_b,
        ];
        netns::ip_in(ns_a, &args)?;
    }
    for ((ns_a, a), (ns_b, b)) in &pairs {
        for (n, ifname) in [(ns_a, a), (ns_b, b)] {
            netns::in_netns(n, || netns::offloads_off(ifname))??;
        }
    }
    if std::env::var(FAULT_ENV).as_deref() == Ok("after-links") {
        return Err(LabError::Emulator(
            "fault injected after building the links".into(),
        ));
    }

    for role in Role::ALL {
        let host = info.hosts.get(role);
        for a in &host.loopback {
            let fam = if a.addr.is_ipv4() { "-4" } else { "-6" };
            netns::ip_in(
                &host.netns,
                &[fam, "addr", "add", &a.to_string(), "dev", "lo"],
            )?;
        }
        for i in &host.interfaces {
            if let Some(a) = i.ipv4 {
                netns::ip_in(
                    &host.netns,
                    &["-4", "addr", "add", &a.to_string(), "dev", &i.name],
                )?;
            }
            if let Some(a) = i.ipv6 {
                netns::ip_in(
                    &host.netns,
                    &["-6", "addr", "add", &a.to_string(), "dev", &i.name, "nodad"],
                )?;
            }
            netns::ip_in(&host.netns, &["link", "set", "dev", &i.name, "up"])?;
        }
    }
    for role in Role::ALL {
        let host = info.hosts.get(role);
        for r in &host.routes {
            let fam = if r.via.is_ipv4() { "-4" } else { "-6" };
            let via = r.via.to_string();
            let metric = r.metric.map(|m| m.to_string());
            let mut args = vec![fam, "route", "add", &r.to, "via", &via];
            if let Some(m) = &metric {
                args.extend(["metric", m]);
            }
            netns::ip_in(&host.netns, &args)?;
        }
    }
    Ok(())
}

/// Starts the emulator daemon and waits until it answers on its control socket.
fn start_emulator(info: &mut LabInfo, exe: &Path) -> Result<(), LabError> {
    let dir = run_dir(&info.name);
    std::fs::write(
        dir.join("lab.json"),
        serde_json::to_vec_pretty(&info).map_err(std::io::Error::other)?,
    )?;
    let log = File::create(&info.emulator.log)?;
    let status = Command::new(exe)
        .args(["lab", "emulate", &info.name, "--detach"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .map_err(|e| LabError::Emulator(format!("cannot run {}: {e}", exe.display())))?;
    if !status.success() {
        return Err(LabError::Emulator(format!(
            "exited with {status}: {}",
            log_tail(&info.emulator.log)
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match emulator::ping(&info.emulator.control) {
            Ok(pid) => {
                info.emulator.pid = pid;
                break;
            }
            Err(_) if Instant::now() < deadline && !emulator_died(&dir) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(LabError::Emulator(format!(
                    "did not start ({e}): {}",
                    log_tail(&info.emulator.log)
                )));
            }
        }
    }
    std::fs::write(
        dir.join("lab.json"),
        serde_json::to_vec_pretty(&info).map_err(std::io::Error::other)?,
    )?;
    Ok(())
}

/// True when the emulator wrote its pid file and that process is gone.
fn emulator_died(dir: &Path) -> bool {
    read_pid(&dir.join("emulator.pid")).is_some_and(|pid| !netns::alive(pid))
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The last meaningful line of a log, for error messages.
fn log_tail(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "no log output".into())
}

/// What [`down`] removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownReport {
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Processes stopped (the emulator and anything started in the lab's hosts).
    pub processes: Vec<u32>,
    /// Whether a state directory was removed.
    pub state_dir: bool,
}

/// Removes lab `name`: stops its emulator and every process in its namespaces, deletes the
/// namespaces (their links go with them) and the state directory. Works on half-built and
/// crashed labs too.
pub fn down(name: &str) -> Result<DownReport, LabError> {
    spec::validate_lab_name(name)?;
    require_root()?;
    let _lock = Lock::acquire()?;
    if !run_dir(name).exists() && existing_namespaces(name).is_empty() {
        return Err(LabError::NotFound(name.to_owned()));
    }
    remove(name)
}

/// The body of [`down`], also used to undo a failed [`up`] (the caller holds the lock).
fn remove(name: &str) -> Result<DownReport, LabError> {
    let dir = run_dir(name);
    let mut report = DownReport::default();
    // Ask the emulator to stop, and give it a moment to do so cleanly.
    let pid_file = dir.join("emulator.pid");
    let control_path = dir.join("control.sock");
    if control_path.exists()
        && control::request(&control_path, &Request::Shutdown, Duration::from_secs(1)).is_ok()
    {
        let deadline = Instant::now() + Duration::from_secs(1);
        while read_pid(&pid_file).is_some_and(netns::alive) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    if let Some(pid) = read_pid(&pid_file).filter(|&pid| is_emulator_of(pid, name)) {
        report
            .processes
            .extend(netns::stop_processes(&[pid], Duration::from_secs(1)));
    }
    let namespaces = existing_namespaces(name);
    for _ in 0..3 {
        let pids: Vec<u32> = namespaces.iter().flat_map(|ns| netns::pids(ns)).collect();
        if pids.is_empty() {
            break;
        }
        report
            .processes
            .extend(netns::stop_processes(&pids, Duration::from_secs(1)));
    }
    let mut first_error = None;
    for ns in namespaces {
        match netns::delete(&ns) {
            Ok(()) => report.namespaces.push(ns),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
        report.state_dir = true;
    }
    report.processes.sort_unstable();
    report.processes.dedup();
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(report),
    }
}

/// Whether process `pid` is the emulator of lab `name`: its arguments are exactly
/// `... lab emulate NAME ...` and, while the lab's emulator namespace exists, it lives there. A
/// pid file left by a crash may name a process that has since reused the pid.
fn is_emulator_of(pid: u32, name: &str) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
    let argv_matches = args
        .windows(3)
        .any(|w| w[0] == b"lab" && w[1] == b"emulate" && w[2] == name.as_bytes());
    let emu = netns::path(&Role::Emu.netns(name));
    let ns_matches =
        !emu.exists() || netns::same_namespace(&emu, &PathBuf::from(format!("/proc/{pid}/ns/net")));
    argv_matches && ns_matches
}

/// Reads the description of a running lab.
pub fn load(name: &str) -> Result<LabInfo, LabError> {
    spec::validate_lab_name(name)?;
    let path = run_dir(name).join("lab.json");
    let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LabError::NotFound(name.to_owned()),
        _ => e.into(),
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| LabError::Emulator(format!("{}: {e}", path.display())))
}

/// One lab in `mpbond lab list`.
#[derive(Debug, Clone, Serialize)]
pub struct LabSummary {
    /// Lab name.
    pub name: String,
    /// `running`, or `broken` when parts are missing (remove it with `lab down`).
    pub status: &'static str,
    /// Emulator pid when running.
    pub emulator_pid: Option<u32>,
    /// Who made it, when not a user (`test:<pid>`, `demo`, `bench`).
    pub owner: Option<String>,
    /// Line names.
    pub lines: Vec<String>,
    /// Namespaces that exist.
    pub namespaces: Vec<String>,
}

/// Every lab on this machine, including broken leftovers.
#[must_use]
pub fn list() -> Vec<LabSummary> {
    let mut names: Vec<String> = std::fs::read_dir(RUN_BASE)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    // Leftovers without a state directory are recognised by their emulator namespace.
    names.extend(
        netns::list()
            .iter()
            .filter_map(|ns| ns.strip_suffix("-emu"))
            .map(str::to_owned),
    );
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| spec::validate_lab_name(n).is_ok())
        .map(|name| {
            let namespaces = existing_namespaces(&name);
            let info = load(&name).ok();
            let pid = read_pid(&run_dir(&name).join("emulator.pid")).filter(|&p| netns::alive(p));
            let complete = info.is_some() && pid.is_some() && namespaces.len() == Role::ALL.len();
            LabSummary {
                status: if complete { "running" } else { "broken" },
                emulator_pid: pid,
                owner: info.as_ref().and_then(|i| i.owner.clone()),
                lines: info
                    .map(|i| i.lines.into_iter().map(|l| l.name).collect())
                    .unwrap_or_default(),
                namespaces,
                name,
            }
        })
        .collect()
}

/// Replaces this process with `argv` run in host `role` of lab `name` (through `ip netns exec`,
/// which also gives it the namespace's view of `/sys`). Returns only on failure.
#[must_use]
pub fn exec(name: &str, role: Role, argv: &[String]) -> LabError {
    if let Err(e) = spec::validate_lab_name(name) {
        return e.into();
    }
    if let Err(e) = require_root() {
        return e;
    }
    let ns = role.netns(name);
    if !netns::exists(&ns) {
        return LabError::NotFound(name.to_owned());
    }
    if argv.is_empty() {
        return LabError::Usage("nothing to run: give a command after `--`".into());
    }
    let e = Command::new("ip")
        .args(["netns", "exec", &ns])
        .args(argv)
        .exec();
    LabError::Io(std::io::Error::new(
        e.kind(),
        format!("ip netns exec {ns}: {e}"),
    ))
}

/// The control socket of lab `name`. Talking to it takes root, like everything that changes a
/// lab (the socket is root's).
fn control_path(name: &str) -> Result<PathBuf, LabError> {
    let path = load(name)?.emulator.control;
    require_root()?;
    Ok(path)
}

/// Takes line `line` of lab `name` down, up, or blackholes it. Returns once the emulator applies
/// it.
pub fn set_line_state(name: &str, line: &str, state: LineState) -> Result<(), LabError> {
    let req = Request::State {
        line: line.to_owned(),
        state,
    };
    control::request(&control_path(name)?, &req, Duration::from_secs(5))?;
    Ok(())
}

/// Changes settings of line `line` of lab `name` (`rate=.. delay=.. loss=.. jitter=.. queue=..
/// reorder=.. dir=..`). Returns once the emulator applies them.
pub fn set_line(name: &str, line: &str, settings: &[String]) -> Result<(), LabError> {
    control::LineChanges::parse(settings)
        .map_err(|e| LabError::Usage(format!("line `{line}`: {e}")))?;
    let req = Request::Set {
        line: line.to_owned(),
        settings: settings.to_vec(),
    };
    control::request(&control_path(name)?, &req, Duration::from_secs(5))?;
    Ok(())
}

/// The emulator's counters for every line of lab `name`.
pub fn stats(name: &str) -> Result<LabStats, LabError> {
    let r = control::request(
        &control_path(name)?,
        &Request::Stats,
        Duration::from_secs(5),
    )?;
    r.stats
        .ok_or_else(|| LabError::Emulator("no stats in the answer".into()))
}

/// A lab that is removed when this guard is dropped (demo and benchmarks).
#[derive(Debug)]
pub struct LabGuard {
    /// The lab.
    pub info: LabInfo,
}

impl LabGuard {
    /// Builds `spec` (see [`up`]).
    pub fn up(spec: &LabSpec, exe: &Path) -> Result<Self, LabError> {
        Ok(LabGuard {
            info: up(spec, exe)?,
        })
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = down(&self.info.name) {
            tracing::warn!("removing lab {}: {e}", self.info.name);
        }
    }
}
