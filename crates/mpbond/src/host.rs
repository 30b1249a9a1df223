//! Host settings that mpbond changes while it runs, and how they are always put back.
//!
//! Every change to a setting the host had before mpbond started (a sysctl such as
//! `net.mptcp.blackhole_timeout`, the kernel's MPTCP limits) goes through [`Change::apply`]:
//! the original value is written to a journal *before* the setting is changed, and the change
//! is undone when the last mpbond process that needed it stops. A process that was killed
//! cannot undo anything, so every mpbond that starts in the network namespace first puts back
//! what dead processes left ([`recover`]).
//!
//! - One journal per network namespace (settings are per namespace):
//!   `/run/mpbond/host-<netns inode>.json`. It also holds the namespace's cookie
//!   (`SO_NETNS_COOKIE`, never reused, unlike inode numbers), so a journal left by a namespace
//!   that is gone is never applied to a new one that got the same inode.
//! - Each entry has its owners (pid and start time, so a reused pid is not taken for its owner;
//!   a process holding the setting twice is listed twice).
//!   Several mpbond processes may need one setting (a gateway and a `connect --wan`, two
//!   converters): the first records the original, the last one out puts it back.
//! - A setting that somebody else changed meanwhile (neither the original nor mpbond's value)
//!   is left as it is, with a warning.
//! - The journal file is locked (`flock`) for every read-modify-write and removed when empty.
//!
//! The same module keeps the other files of `/run/mpbond` tidy: [`lock_file`] (a lock file that
//! can be removed safely), [`remove_files_of_dead_namespaces`] and [`process_alive`].

use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

/// Where mpbond keeps its runtime files.
pub const RUN_DIR: &str = "/run/mpbond";

/// A host setting mpbond may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// A sysctl of the calling thread's network namespace, by its dotted name
    /// (`net.mptcp.blackhole_timeout`).
    Sysctl(String),
    /// The kernel's MPTCP limits (`ip mptcp limits`): `subflows add_addr_accepted`.
    MptcpLimits,
    /// An nftables table of family `inet` that mpbond installs: `present` or `absent`. Writing
    /// `present` does nothing (the owner installs its ruleset right after recording the
    /// change); writing `absent` deletes it.
    NftTable(String),
}

impl Setting {
    /// A sysctl by its dotted name.
    #[must_use]
    pub fn sysctl(name: &str) -> Self {
        Self::Sysctl(name.to_owned())
    }

    /// The journal's key for it.
    fn key(&self) -> String {
        match self {
            Self::Sysctl(n) => format!("sysctl {n}"),
            Self::MptcpLimits => "mptcp-limits".to_owned(),
            Self::NftTable(t) => format!("nft-table inet {t}"),
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        match key.split_once(' ') {
            Some(("sysctl", name)) if valid_sysctl_name(name) => Some(Self::sysctl(name)),
            Some(("nft-table", rest)) => rest
                .strip_prefix("inet ")
                .filter(|t| valid_table_name(t))
                .map(|t| Self::NftTable(t.to_owned())),
            _ if key == "mptcp-limits" => Some(Self::MptcpLimits),
            _ => None,
        }
    }

    /// Its value now, as text.
    ///
    /// # Errors
    /// If it cannot be read (no such sysctl, no MPTCP).
    pub fn read(&self) -> io::Result<String> {
        match self {
            Self::Sysctl(n) => sysctl_get(n),
            Self::MptcpLimits => {
                let mut pm = crate::netlink::mptcp_pm::PathManager::open()?;
                let l = pm.limits()?;
                Ok(format!("{} {}", l.subflows, l.add_addr_accepted))
            }
            Self::NftTable(t) => {
                let listed = std::process::Command::new("nft")
                    .args(["list", "table", "inet", t])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()?;
                Ok(if listed.success() {
                    "present"
                } else {
                    "absent"
                }
                .to_owned())
            }
        }
    }

    /// Sets it.
    ///
    /// # Errors
    /// If it cannot be written (not root) or the value is not one it takes.
    pub fn write(&self, value: &str) -> io::Result<()> {
        match self {
            Self::Sysctl(n) => sysctl_set(n, value),
            Self::MptcpLimits => {
                let limits = parse_limits(value).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("limits {value:?}"))
                })?;
                crate::netlink::mptcp_pm::PathManager::open()?.set_limits(limits)
            }
            Self::NftTable(_) if value == "present" => Ok(()),
            Self::NftTable(t) => nft("", &["delete", "table", "inet", t])
                .map_err(|e| io::Error::other(format!("{e:#}"))),
        }
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sysctl(n) => f.write_str(n),
            Self::MptcpLimits => f.write_str("the MPTCP limits (ip mptcp limits)"),
            Self::NftTable(t) => write!(f, "the nftables table inet {t}"),
        }
    }
}

/// `subflows add_addr_accepted` as [`Setting::MptcpLimits`] writes them.
#[must_use]
pub fn parse_limits(text: &str) -> Option<crate::netlink::mptcp_pm::Limits> {
    let mut it = text.split_whitespace().map(str::parse::<u32>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(subflows)), Some(Ok(add_addr_accepted)), None) => {
            Some(crate::netlink::mptcp_pm::Limits {
                subflows,
                add_addr_accepted,
            })
        }
        _ => None,
    }
}

/// Whether `name` is a dotted sysctl name that maps to a file under `/proc/sys` and nowhere
/// else (no `..`, no slashes): a journal entry cannot make mpbond write anywhere else.
fn valid_sysctl_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|p| {
            !p.is_empty()
                && p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        })
}

/// Whether `name` is an nftables table name mpbond could have made.
fn valid_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Reads `/proc/sys/<name>` (dots as slashes) of the calling thread's network namespace.
///
/// # Errors
/// If there is no such sysctl.
pub fn sysctl_get(name: &str) -> io::Result<String> {
    let path = Path::new("/proc/sys").join(name.replace('.', "/"));
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

/// Writes `/proc/sys/<name>`.
///
/// # Errors
/// If there is no such sysctl, the value is refused, or we may not (not root).
pub fn sysctl_set(name: &str, value: &str) -> io::Result<()> {
    let path = Path::new("/proc/sys").join(name.replace('.', "/"));
    std::fs::write(&path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{name}={value}: {e}")))
}

/// A process, told apart from a later one that got the same pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Start time, in clock ticks after boot (`/proc/PID/stat` field 22).
    pub start: u64,
}

impl Owner {
    /// No process (pid 0 is never a user process): owns an entry left to be put back later.
    const NOBODY: Self = Self { pid: 0, start: 0 };

    /// This process.
    #[must_use]
    pub fn me() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// Whether it still runs.
    #[must_use]
    pub fn alive(&self) -> bool {
        start_time(self.pid).is_some_and(|s| s == self.start)
    }
}

/// A running process's start time (`/proc/PID/stat` field 22); `None` when there is no such
/// process or it has exited and waits to be reaped (a zombie holds nothing any more).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything: count after the last.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?;
    if matches!(state, "Z" | "X" | "x") {
        return None;
    }
    rest.nth(18)?.parse().ok()
}

/// Whether process `pid` runs (and is not a zombie).
#[must_use]
pub fn process_alive(pid: u32) -> bool {
    start_time(pid).is_some()
}

/// One changed setting in the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    key: String,
    original: String,
    /// Every value mpbond set it to, the last one last: a value found there is mpbond's to
    /// put back (an owner may have been killed between recording a value and writing it).
    set: Vec<String>,
    owners: Vec<Owner>,
}

/// A namespace's journal.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Journal {
    netns_cookie: u64,
    entries: Vec<Entry>,
}

/// The calling thread's network namespace: its inode (for file names) and its cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Netns {
    /// Inode of `/proc/thread-self/ns/net`.
    pub inode: u64,
    /// `SO_NETNS_COOKIE` (0 where the kernel has none, before 5.14).
    pub cookie: u64,
}

impl Netns {
    /// The calling thread's.
    ///
    /// # Errors
    /// If `/proc/thread-self/ns/net` cannot be read.
    pub fn current() -> io::Result<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let inode = std::fs::metadata("/proc/thread-self/ns/net")?.ino();
        Ok(Self {
            inode,
            cookie: netns_cookie().unwrap_or(0),
        })
    }
}

/// `SO_NETNS_COOKIE` of a socket made in the calling thread's namespace.
fn netns_cookie() -> io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::DGRAM, None)?;
    crate::sys::getsockopt::<u64>(s.as_raw_fd(), libc::SOL_SOCKET, SO_NETNS_COOKIE)
}

/// Opens `path` (creating it) and takes its `flock`, waiting for it when `wait`, else failing
/// with `WouldBlock`. The file may be removed by whoever holds the lock (that is how lock files
/// go away when done): a lock taken on a file that was removed meanwhile is retried on the new
/// one, so two processes never both think they hold it.
///
/// # Errors
/// If the file cannot be opened, or (without `wait`) another process holds it.
pub fn lock_file(path: &Path, wait: bool) -> io::Result<File> {
    use std::os::unix::fs::MetadataExt as _;
    loop {
        let f = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        let op = if wait {
            libc::LOCK_EX
        } else {
            libc::LOCK_EX | libc::LOCK_NB
        };
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let same =
            std::fs::metadata(path).is_ok_and(|m| m.ino() == f.metadata().map_or(0, |n| n.ino()));
        if same {
            return Ok(f);
        }
    }
}

/// The journal of the calling thread's namespace, locked while this lives: `host-<inode>.lock`
/// is held (`flock`) and `host-<inode>.json` is replaced whole on every save (written aside,
/// then renamed over it), so a kill in the middle of a save never leaves a torn journal.
struct Locked {
    _lock: File,
    lock_path: PathBuf,
    path: PathBuf,
    netns: Netns,
    journal: Journal,
}

impl Locked {
    fn open() -> io::Result<Self> {
        std::fs::create_dir_all(RUN_DIR)?;
        let netns = Netns::current()?;
        let base = Path::new(RUN_DIR).join(format!("host-{}", netns.inode));
        let lock_path = base.with_extension("lock");
        let path = base.with_extension("json");
        let lock = lock_file(&lock_path, true)?;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let journal = match serde_json::from_str::<Journal>(&text) {
            Ok(j) if j.netns_cookie == netns.cookie => j,
            Ok(j) => {
                debug!(
                    file = %path.display(),
                    entries = j.entries.len(),
                    "host journal of a network namespace that is gone (same inode, other cookie): ignored"
                );
                Journal::default()
            }
            Err(e) if !text.trim().is_empty() => {
                // Kept for a person to look at; never applied.
                let bad = base.with_extension("json.bad");
                let _ = std::fs::rename(&path, &bad);
                warn!(
                    "host journal {} unreadable ({e}): kept as {}, ignored",
                    path.display(),
                    bad.display()
                );
                Journal::default()
            }
            Err(_) => Journal::default(),
        };
        Ok(Self {
            _lock: lock,
            lock_path,
            path,
            netns,
            journal,
        })
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.journal.entries.iter().position(|e| e.key == key)
    }

    /// Puts back the settings whose owners are all gone; an entry whose setting could not be
    /// put back (the kernel refused, `nft` failed) stays for the next try.
    fn restore_orphans(&mut self) {
        for e in &mut self.journal.entries {
            let before = e.owners.len();
            e.owners.retain(Owner::alive);
            if e.owners.is_empty() && before > 0 {
                let done =
                    Setting::from_key(&e.key).is_none_or(|s| restore(&s, e, "a killed mpbond"));
                if !done {
                    // Kept under an owner that is never alive: tried again next time.
                    e.owners.push(Owner::NOBODY);
                }
            }
        }
        self.journal.entries.retain(|e| !e.owners.is_empty());
    }

    /// Writes the journal (aside, then renamed over the old one), or removes it when empty.
    fn save(&mut self) -> io::Result<()> {
        if self.journal.entries.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                r => r,
            };
        }
        self.journal.netns_cookie = self.netns.cookie;
        let text = serde_json::to_string_pretty(&self.journal).map_err(io::Error::other)?;
        let aside = self.path.with_extension("json.new");
        let mut f = File::create(&aside)?;
        f.write_all(text.as_bytes())?;
        f.sync_data()?;
        std::fs::rename(&aside, &self.path)
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // Nothing recorded: the lock file goes too (removed while locked: see `lock_file`).
        if self.journal.entries.is_empty() && !self.path.exists() {
            let _ = std::fs::remove_file(&self.lock_path);
        }
    }
}

/// Puts `setting` back to the entry's original value, unless somebody else changed it since.
/// Returns whether the entry is settled (put back, already back, or somebody else's now);
/// `false` when reading or writing failed and it should be tried again.
fn restore(setting: &Setting, e: &Entry, who: &str) -> bool {
    match setting.read() {
        Ok(now) if now == e.original => true,
        Ok(now) if e.set.contains(&now) => match setting.write(&e.original) {
            Ok(()) => {
                info!("{setting} back to {} (changed by {who})", e.original);
                true
            }
            Err(err) => {
                warn!("could not put {setting} back to {}: {err}", e.original);
                false
            }
        },
        Ok(now) => {
            warn!(
                "{setting} is {now}, neither mpbond's {} nor the original {}: somebody changed it meanwhile; left as it is",
                e.set.last().map_or("", String::as_str),
                e.original
            );
            true
        }
        Err(err) => {
            debug!("{setting} not restored: {err}");
            false
        }
    }
}

/// Puts back what mpbond processes that were killed changed in the calling thread's network
/// namespace. Every daemon calls it as it starts; [`Change::apply`] does it too.
pub fn recover() {
    remove_files_of_dead_namespaces(RUN_FILES);
    match Locked::open() {
        Ok(mut j) => {
            j.restore_orphans();
            if let Err(e) = j.save() {
                warn!("host journal: {e}");
            }
        }
        Err(e) => debug!("no host journal: {e}"),
    }
}

/// mpbond's files in [`RUN_DIR`] that belong to one network namespace: `(prefix, suffix)`
/// around the namespace's inode.
pub const RUN_FILES: &[(&str, &str)] = &[
    ("host-", ".json"),
    ("host-", ".lock"),
    ("wan-", ".lock"),
    ("user-forwarding-", ".state"),
];

/// A setting changed by this process, put back when dropped (unless another mpbond still needs
/// it: then the last one puts it back).
#[derive(Debug)]
pub struct Change {
    setting: Setting,
    /// What it was before, for logs.
    pub original: String,
    /// What it is now.
    pub value: String,
    /// Whether this process owns an entry of the journal (false: nothing was changed).
    owned: bool,
}

impl Change {
    /// Changes `setting` to `new(current)`, when that is `Some` and differs, after recording
    /// the original in the journal. When another mpbond already changed it, `new` sees that
    /// value and this process becomes one more owner of the change.
    ///
    /// # Errors
    /// If the setting cannot be read or written, or the journal cannot be written (then nothing
    /// is changed).
    pub fn apply(setting: Setting, new: impl FnOnce(&str) -> Option<String>) -> io::Result<Self> {
        // Everything below happens under the journal's lock: two mpbond processes changing one
        // setting at once cannot lose its original.
        let mut j = Locked::open()?;
        j.restore_orphans();
        let current = setting.read()?;
        let wanted = new(&current).filter(|v| *v != current);
        let key = setting.key();
        let me = Owner::me();
        let index = match (j.position(&key), &wanted) {
            (Some(i), _) => Some(i),
            (None, Some(_)) => {
                j.journal.entries.push(Entry {
                    key,
                    original: current.clone(),
                    set: Vec::new(),
                    owners: Vec::new(),
                });
                Some(j.journal.entries.len() - 1)
            }
            (None, None) => None,
        };
        let Some(i) = index else {
            // Nothing to change and nobody else changed it: nothing to own.
            j.save()?;
            return Ok(Self {
                setting,
                original: current.clone(),
                value: current,
                owned: false,
            });
        };
        let e = &mut j.journal.entries[i];
        // One owner per holder: a process may hold a setting twice.
        e.owners.push(me);
        if let Some(w) = &wanted {
            if !e.set.contains(w) {
                e.set.push(w.clone());
            }
        }
        let original = e.original.clone();
        // The journal is on disk before the setting changes: a crash in between leaves an
        // entry whose setting still has its earlier value, which restoring handles.
        j.save()?;
        let mut value = current;
        if let Some(w) = wanted {
            if let Err(err) = setting.write(&w) {
                let e = &mut j.journal.entries[i];
                if let Some(k) = e.owners.iter().position(|o| *o == me) {
                    e.owners.remove(k);
                }
                if e.owners.is_empty() {
                    j.journal.entries.remove(i);
                }
                let _ = j.save();
                return Err(err);
            }
            value = w;
        }
        Ok(Self {
            setting,
            original,
            value,
            owned: true,
        })
    }

    /// For tests: what a crash of the owner leaves: the journal entry stays, owned by a process
    /// that is gone, and nothing is put back.
    #[cfg(test)]
    pub(crate) fn crash(self) {
        if self.owned {
            let mut j = Locked::open().expect("journal");
            let key = self.setting.key();
            let me = Owner::me();
            for e in j.journal.entries.iter_mut().filter(|e| e.key == key) {
                if let Some(o) = e.owners.iter_mut().find(|o| **o == me) {
                    *o = Owner {
                        pid: u32::MAX - 1,
                        start: 1,
                    };
                }
            }
            j.save().expect("journal");
        }
        std::mem::forget(self);
    }

    /// Whether the setting differs from what it was before any mpbond changed it.
    #[must_use]
    pub fn changed(&self) -> bool {
        self.value != self.original
    }
}

impl Drop for Change {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let mut j = match Locked::open() {
            Ok(j) => j,
            Err(e) => {
                warn!("{} not put back (host journal: {e})", self.setting);
                return;
            }
        };
        let key = self.setting.key();
        let me = Owner::me();
        if let Some(i) = j.position(&key) {
            let e = &mut j.journal.entries[i];
            if let Some(mine) = e.owners.iter().position(|o| *o == me) {
                e.owners.remove(mine);
            }
            e.owners.retain(Owner::alive);
            if e.owners.is_empty() {
                if restore(&self.setting, e, "this mpbond") {
                    j.journal.entries.remove(i);
                } else {
                    // Left for the next mpbond to try again.
                    e.owners.push(Owner::NOBODY);
                }
            }
        }
        j.restore_orphans();
        if let Err(e) = j.save() {
            warn!("host journal: {e}");
        }
    }
}

/// Runs `nft ARGS` with `input` on its standard input (a ruleset for `-f -`).
///
/// # Errors
/// If `nft` is missing or refuses, with the first line it printed.
pub fn nft(input: &str, args: &[&str]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (install nftables: apt install nftables)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .context("writing to nft")?;
    }
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or("").trim();
        anyhow::bail!("nft refused the ruleset: {first}");
    }
    Ok(())
}

/// The inodes of every network namespace in use: those of every thread of every process, and
/// those bound under `/run/netns`.
fn live_namespaces() -> std::collections::HashSet<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = std::collections::HashSet::new();
    let procs = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    for p in procs.filter(|p| {
        p.file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
    }) {
        let tasks = std::fs::read_dir(p.path().join("task"))
            .into_iter()
            .flatten()
            .flatten();
        for t in tasks {
            if let Ok(m) = std::fs::metadata(t.path().join("ns/net")) {
                out.insert(m.ino());
            }
        }
    }
    for dir in ["/run/netns", "/var/run/netns"] {
        for n in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Ok(m) = std::fs::metadata(n.path()) {
                out.insert(m.ino());
            }
        }
    }
    out
}

/// Removes the per-namespace files of `/run/mpbond` (`<prefix><inode><suffix>`, for each
/// `(prefix, suffix)` of `kinds`) whose network namespace no longer exists and that nobody
/// holds locked: what runs in namespaces deleted since (test labs, containers) left. There is
/// nothing left there to restore.
pub fn remove_files_of_dead_namespaces(kinds: &[(&str, &str)]) {
    let Ok(dir) = std::fs::read_dir(RUN_DIR) else {
        return;
    };
    let mut live = None;
    for f in dir.flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        let inode = kinds.iter().find_map(|(pre, suf)| {
            name.strip_prefix(pre)?
                .strip_suffix(suf)?
                .parse::<u64>()
                .ok()
        });
        let Some(inode) = inode else { continue };
        let live = live.get_or_insert_with(live_namespaces);
        if live.contains(&inode) {
            continue;
        }
        // Held by nobody (else it is in use whatever the scan says): remove it locked.
        if let Ok(_held) = lock_file(&f.path(), false) {
            let _ = std::fs::remove_file(f.path());
            debug!("removed {name}: its network namespace is gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::testing::in_private_netns;

    #[test]
    fn setting_keys_round_trip_and_refuse_paths_outside_proc_sys() {
        for s in [
            Setting::sysctl("net.mptcp.blackhole_timeout"),
            Setting::MptcpLimits,
            Setting::NftTable("mpbond_conv_7000".into()),
        ] {
            assert_eq!(Setting::from_key(&s.key()), Some(s));
        }
        for bad in [
            "sysctl ../../etc/passwd",
            "sysctl net/../x",
            "sysctl ",
            "sysctl a..b",
            "other",
            "nft-table inet a; flush ruleset",
            "nft-table ip t",
        ] {
            assert_eq!(Setting::from_key(bad), None, "{bad}");
        }
        assert_eq!(
            parse_limits("8 2"),
            Some(crate::netlink::mptcp_pm::Limits {
                subflows: 8,
                add_addr_accepted: 2
            })
        );
        assert_eq!(parse_limits("8"), None);
        assert_eq!(parse_limits("8 2 1"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_made_up_start_time_is_not() {
        let me = Owner::me();
        assert!(me.alive());
        assert!(
            !Owner {
                start: me.start + 1,
                ..me
            }
            .alive()
        );
        assert!(
            !Owner {
                pid: u32::MAX - 1,
                start: 0
            }
            .alive()
        );
    }

    #[test]
    fn a_process_that_exited_is_not_alive_even_before_it_is_reaped() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_alive(pid) {
            assert!(std::time::Instant::now() < deadline, "`true` still running");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "a zombie until reaped"
        );
        child.wait().unwrap();
    }

    /// A change is recorded, shared by a second owner, put back by the last one, and a change
    /// whose owner died is put back by the next process to look; a setting changed by somebody
    /// else meanwhile is left alone.
    #[test]
    fn changes_are_put_back_by_the_last_owner_and_after_a_crash() {
        in_private_netns(
            "changes_are_put_back_by_the_last_owner_and_after_a_crash",
            || {
                let name = "net.ipv4.tcp_fastopen";
                let setting = Setting::sysctl(name);
                let original = sysctl_get(name).unwrap();
                let base: u32 = original.parse().unwrap();
                let first = Change::apply(setting.clone(), |v| {
                    Some((v.parse::<u32>().unwrap() | 0x400).to_string())
                })
                .unwrap();
                assert!(first.changed());
                let set = sysctl_get(name).unwrap();
                assert_eq!(set, (base | 0x400).to_string());
                // A second owner sees the changed value and needs nothing more.
                let second = Change::apply(setting.clone(), |_| None).unwrap();
                assert_eq!(second.original, original);
                drop(first);
                assert_eq!(sysctl_get(name).unwrap(), set, "still needed by the second");
                drop(second);
                assert_eq!(
                    sysctl_get(name).unwrap(),
                    original,
                    "the last one put it back"
                );
                let ns = Netns::current().unwrap();
                let path = Path::new(RUN_DIR).join(format!("host-{}.json", ns.inode));
                assert!(!path.exists(), "an empty journal is removed");

                // A crash: the owner is a process that is gone.
                Change::apply(setting.clone(), |v| {
                    Some((v.parse::<u32>().unwrap() | 0x400).to_string())
                })
                .unwrap()
                .crash();
                assert_ne!(sysctl_get(name).unwrap(), original, "a crash leaves it");
                recover();
                assert_eq!(
                    sysctl_get(name).unwrap(),
                    original,
                    "put back after the crash"
                );
                assert!(!path.exists());

                // Changed by somebody else after mpbond: left alone.
                let c = Change::apply(setting.clone(), |v| {
                    Some((v.parse::<u32>().unwrap() | 0x400).to_string())
                })
                .unwrap();
                sysctl_set(name, &(base | 0x200).to_string()).unwrap();
                drop(c);
                assert_eq!(sysctl_get(name).unwrap(), (base | 0x200).to_string());
                sysctl_set(name, &original).unwrap();
            },
        );
    }

    /// Two changes of one setting at once (threads here, processes in life) never lose its
    /// original: the journal's lock covers the read, the record and the write.
    #[test]
    fn concurrent_changes_of_one_setting_put_the_original_back() {
        in_private_netns(
            "concurrent_changes_of_one_setting_put_the_original_back",
            || {
                let name = "net.ipv4.tcp_fastopen";
                let original = sysctl_get(name).unwrap();
                // Threads started here are in this namespace too.
                std::thread::scope(|s| {
                    for bit in [0x200u32, 0x400, 0x800, 0x1000] {
                        s.spawn(move || {
                            for _ in 0..20 {
                                let c = Change::apply(Setting::sysctl(name), |v| {
                                    Some((v.parse::<u32>().unwrap() | bit).to_string())
                                })
                                .unwrap();
                                drop(c);
                            }
                        });
                    }
                });
                assert_eq!(sysctl_get(name).unwrap(), original);
            },
        );
    }

    /// An entry whose setting cannot be put back now stays for the next try.
    #[test]
    fn a_setting_that_cannot_be_put_back_stays_in_the_journal() {
        in_private_netns(
            "a_setting_that_cannot_be_put_back_stays_in_the_journal",
            || {
                let mut j = Locked::open().unwrap();
                j.journal.entries.push(Entry {
                    key: "sysctl net.ipv4.no_such_setting".into(),
                    original: "1".into(),
                    set: vec!["0".into()],
                    owners: vec![Owner {
                        pid: u32::MAX - 1,
                        start: 1,
                    }],
                });
                j.save().unwrap();
                drop(j);
                recover();
                let j = Locked::open().unwrap();
                assert_eq!(j.journal.entries.len(), 1, "kept");
                assert_eq!(j.journal.entries[0].owners, vec![Owner::NOBODY]);
                let path = j.path.clone();
                drop(j);
                std::fs::remove_file(path).unwrap();
            },
        );
    }

    /// A journal written in another namespace that had this inode (same name, other cookie) is
    /// never applied here.
    #[test]
    fn a_journal_of_a_namespace_that_is_gone_is_ignored() {
        in_private_netns("a_journal_of_a_namespace_that_is_gone_is_ignored", || {
            let name = "net.ipv4.tcp_fastopen";
            let original = sysctl_get(name).unwrap();
            let ns = Netns::current().unwrap();
            assert_ne!(ns.cookie, 0, "this kernel has SO_NETNS_COOKIE");
            std::fs::create_dir_all(RUN_DIR).unwrap();
            let path = Path::new(RUN_DIR).join(format!("host-{}.json", ns.inode));
            let stale = Journal {
                netns_cookie: ns.cookie + 1,
                entries: vec![Entry {
                    key: format!("sysctl {name}"),
                    original: "0".into(),
                    set: vec![original.clone()],
                    owners: vec![Owner {
                        pid: u32::MAX - 1,
                        start: 1,
                    }],
                }],
            };
            std::fs::write(&path, serde_json::to_string(&stale).unwrap()).unwrap();
            recover();
            assert_eq!(sysctl_get(name).unwrap(), original, "not applied");
            assert!(!path.exists(), "and dropped");
        });
    }
}
