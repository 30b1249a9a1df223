//! Network namespaces and the few system operations the lab needs in them: running `ip`,
//! entering a namespace from a thread, writing sysctls, switching offloads off, and finding and
//! stopping the processes that live in a namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// A system command that failed.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed: {message}")]
pub struct CommandError {
    /// The command line.
    pub command: String,
    /// Its error output (first line) or the reason it could not run.
    pub message: String,
}

/// Runs `program args...`, returning its standard output, or an error carrying the first line
/// of its error output.
pub fn run(program: &str, args: &[&str]) -> Result<String, CommandError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| CommandError {
            command: command.clone(),
            message: if e.kind() == io::ErrorKind::NotFound {
                format!("`{program}` is not installed")
            } else {
                e.to_string()
            },
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no error output")
        .trim()
        .to_owned();
    Err(CommandError {
        command,
        message: format!("{message} ({})", out.status),
    })
}

/// Runs `ip -n NETNS args...`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<(), CommandError> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all).map(drop)
}

/// The file of namespace `name`.
#[must_use]
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Whether namespace `name` exists.
#[must_use]
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Names of all named namespaces.
#[must_use]
pub fn list() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Creates namespace `name`.
pub fn add(name: &str) -> Result<(), CommandError> {
    run("ip", &["netns", "add", name]).map(drop)
}

/// Deletes namespace `name` (its interfaces go with it once no process uses it).
pub fn delete(name: &str) -> Result<(), CommandError> {
    run("ip", &["netns", "delete", name]).map(drop)
}

/// Moves the calling thread into namespace `name`. Threads it starts afterwards inherit it.
pub fn enter(name: &str) -> io::Result<()> {
    let f = File::open(path(name))
        .map_err(|e| io::Error::new(e.kind(), format!("network namespace {name}: {e}")))?;
    // SAFETY: `f` is an open namespace file for the duration of the call.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("entering network namespace {name}: {e}"),
        ));
    }
    Ok(())
}

/// Runs `f` on a new thread inside namespace `name` and returns its result. The calling thread
/// stays where it is; a panic in `f` propagates.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            enter(name)?;
            Ok(f())
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Writes sysctl `key` (dotted, like `net.ipv4.ip_forward`) in namespace `ns`.
pub fn sysctl(ns: &str, key: &str, value: &str) -> io::Result<()> {
    let file = Path::new("/proc/sys").join(key.replace('.', "/"));
    in_netns(ns, || std::fs::write(&file, value))?
        .map_err(|e| io::Error::new(e.kind(), format!("sysctl {key}={value} in {ns}: {e}")))
}

/// Feature names (as the kernel's `ETH_SS_FEATURES` string set spells them) that
/// [`offloads_off`] clears: TSO of every kind, GSO, UDP segmentation, GRO/LRO, and tx/rx
/// checksumming. A `*` matches any run of characters, as in ethtool's own feature patterns, so
/// features added by newer kernels (`tx-tcp-accecn-segmentation`) are covered too.
const OFFLOAD_PATTERNS: &[&str] = &[
    "tx-tcp*-segmentation",
    "tx-generic-segmentation",
    "tx-udp-segmentation",
    "tx-checksum-*",
    "rx-checksum",
    "rx-gro",
    "rx-gro-hw",
    "rx-gro-list",
    "rx-udp-gro-forwarding",
    "rx-lro",
];

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.len() >= head.len() + tail.len() && name.starts_with(head) && name.ends_with(tail)
        }
    }
}

/// An `SIOCETHTOOL` request on interface `ifname`, with `buf` as its command structure.
fn ethtool_ioctl(fd: &std::os::fd::OwnedFd, ifname: &str, buf: &mut [u32]) -> io::Result<()> {
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    req.ifr_ifru.ifru_data = buf.as_mut_ptr().cast();
    // SAFETY: `req` names the interface and points at `buf`, which is large enough for the
    // command it holds (each caller sizes it from the kernel's own counts) and 4-byte aligned.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Switches off, on interface `ifname` of the calling thread's namespace, every offload that
/// would hide real packets from the emulator or from captures (see [`OFFLOAD_PATTERNS`]), so
/// checksums are computed and verified in software and a frame seen on one side is exactly the
/// frame on the wire. Fails if any of them stays on.
pub fn offloads_off(ifname: &str) -> io::Result<()> {
    // include/uapi/linux/ethtool.h
    const ETHTOOL_GSTRINGS: u32 = 0x1b;
    const ETHTOOL_GSSET_INFO: u32 = 0x37;
    const ETHTOOL_GFEATURES: u32 = 0x3a;
    const ETHTOOL_SFEATURES: u32 = 0x3b;
    const ETH_SS_FEATURES: u32 = 4;
    const ETH_GSTRING_LEN: usize = 32;
    let err =
        |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what} of {ifname}: {e}"));
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {ifname} too long"),
        ));
    }
    // SAFETY: plain system call with constant arguments.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };

    // How many feature names there are: struct ethtool_sset_info { cmd, reserved, u64 mask, data[] }.
    let mask = (1u64 << ETH_SS_FEATURES).to_ne_bytes();
    let (lo, hi) = mask.split_at(4);
    let word = |b: &[u8]| u32::from_ne_bytes(b.try_into().unwrap_or_default());
    let mut info = [ETHTOOL_GSSET_INFO, 0, word(lo), word(hi), 0];
    ethtool_ioctl(&fd, ifname, &mut info).map_err(|e| err("feature count", e))?;
    let count = info[4] as usize;
    // Their names: struct ethtool_gstrings { cmd, string_set, len, data[len * 32] }.
    let mut strings = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
    strings[..3].copy_from_slice(&[ETHTOOL_GSTRINGS, ETH_SS_FEATURES, info[4]]);
    ethtool_ioctl(&fd, ifname, &mut strings).map_err(|e| err("feature names", e))?;
    let bytes: Vec<u8> = strings[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
    let names: Vec<String> = bytes
        .chunks(ETH_GSTRING_LEN)
        .map(|c| {
            String::from_utf8_lossy(c.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
        })
        .collect();

    // struct ethtool_gfeatures { cmd, size, blocks[size] { available, requested, active, never_changed } }.
    let get_features = || -> io::Result<Vec<u32>> {
        let mut probe = [ETHTOOL_GFEATURES, 0];
        ethtool_ioctl(&fd, ifname, &mut probe)?;
        let words = probe[1] as usize;
        let mut buf = vec![0u32; 2 + 4 * words];
        buf[..2].copy_from_slice(&[ETHTOOL_GFEATURES, probe[1]]);
        ethtool_ioctl(&fd, ifname, &mut buf)?;
        Ok(buf)
    };
    let features = get_features().map_err(|e| err("features", e))?;
    let words = features[1] as usize;
    let bit = |i: usize, buf: &[u32], field: usize| {
        buf.get(2 + 4 * (i / 32) + field)
            .is_some_and(|w| w & (1 << (i % 32)) != 0)
    };
    let wanted_off: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(i, n)| *i < words * 32 && OFFLOAD_PATTERNS.iter().any(|p| matches(p, n)))
        .map(|(i, _)| i)
        .collect();

    // struct ethtool_sfeatures { cmd, size, blocks[size] { valid, requested } }: clear what can be.
    let mut set = vec![0u32; 2 + 2 * words];
    set[..2].copy_from_slice(&[ETHTOOL_SFEATURES, features[1]]);
    for &i in wanted_off.iter().filter(|&&i| bit(i, &features, 0)) {
        set[2 + 2 * (i / 32)] |= 1 << (i % 32);
    }
    ethtool_ioctl(&fd, ifname, &mut set).map_err(|e| err("switching offloads off", e))?;

    let after = get_features().map_err(|e| err("features", e))?;
    let still_on: Vec<&str> = wanted_off
        .iter()
        .filter(|&&i| bit(i, &after, 2))
        .map(|&i| names[i].as_str())
        .collect();
    if !still_on.is_empty() {
        return Err(io::Error::other(format!(
            "{ifname}: could not switch off {}",
            still_on.join(", ")
        )));
    }
    Ok(())
}

/// The (device, inode) identity of a namespace file.
fn ns_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether two namespace files (a `/run/netns/NAME`, a `/proc/PID/ns/net`) are the same
/// namespace.
#[must_use]
pub fn same_namespace(a: &Path, b: &Path) -> bool {
    matches!((ns_id(a), ns_id(b)), (Some(x), Some(y)) if x == y)
}

/// Processes (other than this one) whose main thread lives in namespace `name`.
#[must_use]
pub fn pids(name: &str) -> Vec<u32> {
    let Some(target) = ns_id(&path(name)) else {
        return Vec::new();
    };
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            ns_id(&Path::new("/proc").join(pid.to_string()).join("ns/net")) == Some(target)
        })
        .collect()
}

/// Whether `pid` is a live (not zombie) process.
#[must_use]
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain spaces.
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                != Some('Z')
        }
        Err(_) => false,
    }
}

/// The command line of `pid`, arguments joined with spaces.
#[must_use]
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Sends SIGTERM to `pids`, waits up to `grace` for them to exit, then SIGKILLs the rest and
/// waits for those too. Returns the pids that were signalled.
#[must_use = "the pids tell what was stopped"]
pub fn stop_processes(pids: &[u32], grace: Duration) -> Vec<u32> {
    let signal = |pid: u32, sig| {
        if let Ok(p) = libc::pid_t::try_from(pid) {
            // SAFETY: plain system call; a vanished pid only yields ESRCH.
            unsafe { libc::kill(p, sig) };
        }
    };
    let live: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    for &p in &live {
        signal(p, libc::SIGTERM);
    }
    for sig in [Some(libc::SIGKILL), None] {
        let deadline = Instant::now() + grace;
        while live.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(sig) = sig {
            for &p in live.iter().filter(|&&p| alive(p)) {
                signal(p, sig);
            }
        }
    }
    live
}

/// True when the process runs with root's effective uid.
#[must_use]
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_patterns_match_like_ethtool() {
        for name in [
            "tx-tcp-segmentation",
            "tx-tcp6-segmentation",
            "tx-tcp-accecn-segmentation",
            "tx-checksum-ipv4",
        ] {
            assert!(OFFLOAD_PATTERNS.iter().any(|p| matches(p, name)), "{name}");
        }
        for name in ["tx-scatter-gather", "rx-gro-foo", "tx-tcp", "highdma"] {
            assert!(!OFFLOAD_PATTERNS.iter().any(|p| matches(p, name)), "{name}");
        }
    }
}
