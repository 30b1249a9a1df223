//! The kernel's side of the WAN lines: what makes each MPTCP subflow leave by its own line.
//!
//! For each line (`--wan IFACE[:backup][:via=ADDR]`), in each address family it has:
//! - a routing table (4201, 4202, ...) with a default route by that line's next hop, and a
//!   policy rule `from <line address> lookup <table>`: a subflow bound to the line's address
//!   leaves by the line, whatever the main table says;
//! - with the in-kernel path manager ([`PmKind::Kernel`]): an MPTCP endpoint `<line address> dev
//!   <iface> subflow [backup]`, so that the kernel opens one subflow per line on every
//!   connection, a backup line's carrying data only when no other subflow can (RFC 8684
//!   §3.3.8), and MPTCP limits large enough for one subflow per line;
//! - with mpbond's path manager ([`PmKind::Mpbond`], the default): `net.mptcp.pm_type=1` instead,
//!   and [`crate::pm`] makes the subflows; a line's address that changes while running gets its
//!   rule and routes moved ([`WanSetup::set_addresses`]).
//!
//! Everything is undone by [`WanSetup::remove`] (also on drop); routes and rules carry the route
//! protocol `mpbond` (77) so that a crashed run's are found again.

use std::io;
use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use tracing::{debug, info, warn};

use crate::netlink::mptcp_pm::{Endpoint, Limits, PathManager, flag};
use crate::netlink::route::{IfAddr, Route, RouteSocket, Rule};
use crate::pm::PmKind;
use crate::sys::if_index;

/// First routing table (and rule priority) of the lines; line *i* (0-based) gets `+ 1 + i`.
pub const TABLE_BASE: u32 = 4200;

/// Undoes what a dead run recorded in the lock file (see [`WanSetup::save_state`]): deletes its
/// endpoints, puts the user's endpoints and the limits back. Routes and rules are found by
/// their protocol instead ([`RouteSocket::remove_leftovers`]).
fn undo_dead_run(lock: &mut std::fs::File, pm: &mut PathManager) {
    use std::io::Read as _;
    let mut text = String::new();
    if lock.read_to_string(&mut text).is_err() || text.trim().is_empty() {
        return;
    }
    // A file written in a namespace that is gone, whose inode this one reuses: nothing of it
    // is here.
    let cookie = crate::host::Netns::current().map_or(0, |n| n.cookie);
    if let Some(theirs) = text.lines().find_map(|l| l.strip_prefix("netns ")) {
        if theirs.trim().parse::<u64>().ok() != Some(cookie) {
            return;
        }
    }
    let existing = pm.endpoints().unwrap_or_default();
    let mut restore = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["endpoint", addr] => {
                if let Some(e) = addr
                    .parse::<IpAddr>()
                    .ok()
                    .and_then(|a| existing.iter().find(|e| e.addr == a))
                {
                    let _ = pm.del_endpoint(e);
                }
            }
            ["limits", s, a] => {
                if let (Ok(subflows), Ok(add_addr_accepted)) = (s.parse(), a.parse()) {
                    let _ = pm.set_limits(Limits {
                        subflows,
                        add_addr_accepted,
                    });
                }
            }
            // Written by earlier versions, which kept these here (now in the host journal).
            ["pm_type", v] => {
                let _ = crate::host::sysctl_set("net.mptcp.pm_type", v);
            }
            ["user", id, addr, flags, dev] => {
                if let (Ok(id), Ok(addr), Ok(flags)) = (id.parse(), addr.parse(), flags.parse()) {
                    restore.push(Endpoint {
                        id,
                        addr,
                        port: 0,
                        flags,
                        ifindex: dev.parse().ok(),
                    });
                }
            }
            _ => {}
        }
    }
    for e in &restore {
        let _ = pm.add_endpoint(e);
    }
    info!("undid the MPTCP endpoints and limits a previous run left");
}

/// Whether `name` can be a Linux interface name that is safe to put in an nftables ruleset:
/// 1 to 15 of `A-Z a-z 0-9 _ . - @`.
#[must_use]
pub fn valid_iface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'@'))
}

/// One `--wan` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WanSpec {
    /// Interface name.
    pub iface: String,
    /// Used only when no other line works.
    pub backup: bool,
    /// Next hop, per family, when the main table has no default route by this interface.
    pub via: Vec<IpAddr>,
    /// Probe interval while the line carries something (`probe=DURATION`), if not the default.
    pub probe: Option<std::time::Duration>,
    /// Probe interval while the line is idle (`probe-idle=DURATION`), if not the default.
    pub probe_idle: Option<std::time::Duration>,
}

impl std::str::FromStr for WanSpec {
    type Err = String;

    /// `IFACE[:backup][:via=ADDR][:probe=DURATION][:probe-idle=DURATION]...`, like `eth1`,
    /// `wwan0:backup:probe-idle=10s`, `eth2:via=192.0.2.1`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(':');
        let iface = parts.next().unwrap_or("").to_owned();
        if !valid_iface_name(&iface) {
            return Err(format!(
                "`{s}`: expected IFACE[:backup][:via=ADDR][:probe=DURATION][:probe-idle=DURATION], like eth1:backup"
            ));
        }
        let mut w = Self {
            iface,
            backup: false,
            via: Vec::new(),
            probe: None,
            probe_idle: None,
        };
        // IPv6 next hops contain colons: `via=` takes the rest when it does not parse alone.
        let rest: Vec<&str> = parts.collect();
        let mut i = 0;
        while i < rest.len() {
            let p = rest[i];
            if p == "backup" {
                w.backup = true;
            } else if let Some(t) = p.strip_prefix("probe=") {
                w.probe = Some(probe_interval(s, "probe", t)?);
            } else if let Some(t) = p.strip_prefix("probe-idle=") {
                w.probe_idle = Some(probe_interval(s, "probe-idle", t)?);
            } else if let Some(addr) = p.strip_prefix("via=") {
                let joined = rest[i..].join(":");
                let joined = joined.strip_prefix("via=").unwrap_or(&joined);
                if let Ok(ip) = addr.parse() {
                    w.via.push(ip);
                } else if let Ok(ip) = joined.parse() {
                    w.via.push(ip);
                    i = rest.len();
                    continue;
                } else {
                    return Err(format!("`{s}`: `{addr}` is not an IP address"));
                }
            } else {
                return Err(format!(
                    "`{s}`: unknown part `{p}` (use backup, via=ADDR, probe=DURATION or probe-idle=DURATION)"
                ));
            }
            i += 1;
        }
        Ok(w)
    }
}

/// A per-line probe interval: at least 10 ms (the path manager reads the lines' counters every
/// 25 ms) and at most an hour.
fn probe_interval(spec: &str, key: &str, t: &str) -> Result<std::time::Duration, String> {
    let d = crate::units::parse_duration(t).map_err(|e| format!("`{spec}`: {key}={t}: {e}"))?;
    if d < std::time::Duration::from_millis(10) || d > std::time::Duration::from_secs(3600) {
        return Err(format!(
            "`{spec}`: {key}={t}: between 10ms and 1h (use a long probe-idle for a line that must cost little)"
        ));
    }
    Ok(d)
}

/// A line as configured: what [`WanSetup::set_addresses`] needs to route a new address.
#[derive(Debug, Clone)]
pub struct ConfiguredLine {
    /// What was asked.
    pub spec: WanSpec,
    /// The interface index.
    pub index: u32,
    /// Its routing table.
    pub table: u32,
}

/// What was installed, to be removed.
#[derive(Debug, Default)]
pub struct WanSetup {
    /// Rules and routes, with the address they are for.
    rules: Vec<(IpAddr, Rule)>,
    routes: Vec<(IpAddr, Route)>,
    endpoints: Vec<Endpoint>,
    /// Endpoints that were there for our addresses before: put back on removal.
    replaced: Vec<Endpoint>,
    /// The MPTCP limits raised for the kernel's path manager (put back when dropped).
    limits: Option<crate::host::Change>,
    /// `net.mptcp.pm_type=1` for mpbond's path manager (put back when dropped).
    pm_type: Option<crate::host::Change>,
    /// Which path manager makes the subflows.
    kind: PmKind,
    /// Lines configured: (interface, addresses).
    pub lines: Vec<(String, Vec<IpAddr>)>,
    /// Every line asked for, in order, also those without an address yet (mpbond's path
    /// manager uses them when one comes).
    pub configured: Vec<ConfiguredLine>,
    /// The network namespace's WAN lock, held for the life of this setup.
    lock: Option<std::fs::File>,
}

/// Takes the WAN lock of the calling thread's network namespace: one mpbond at a time (a
/// gateway, or a `connect --wan`) configures its lines, and routes and rules of ours found
/// while holding it are a dead run's leftovers, safe to remove. The lock file also holds the
/// running setup's state (see [`WanSetup::save_state`]), empty once it was removed cleanly.
pub(crate) fn lock_netns() -> Result<std::fs::File> {
    let path = lock_path_of_this_netns();
    std::fs::create_dir_all(crate::host::RUN_DIR)
        .with_context(|| format!("creating {}", crate::host::RUN_DIR))?;
    crate::host::remove_files_of_dead_namespaces(&[(LOCK_PREFIX, LOCK_SUFFIX)]);
    match crate::host::lock_file(&path, false) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => bail!(
            "another mpbond (a gateway, or a connect --wan) is configuring this host's WAN lines; run one at a time ({} is locked)",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("opening {}", path.display())),
    }
}

/// Gives the WAN lock back, nothing being left to undo: the file goes (removed while still
/// locked, see `host::lock_file`), so that none piles up per namespace.
pub(crate) fn unlock_netns(lock: std::fs::File) {
    let _ = std::fs::remove_file(lock_path_of_this_netns());
    drop(lock);
}

/// `/run/mpbond/wan-<netns inode>.lock`.
const LOCK_PREFIX: &str = "wan-";
const LOCK_SUFFIX: &str = ".lock";

/// The WAN lock file of the calling thread's network namespace.
fn lock_path_of_this_netns() -> std::path::PathBuf {
    let ns = crate::host::Netns::current().map_or(0, |n| n.inode);
    std::path::Path::new(crate::host::RUN_DIR).join(format!("{LOCK_PREFIX}{ns}{LOCK_SUFFIX}"))
}

/// One WAN line being configured.
struct Line<'a> {
    spec: &'a WanSpec,
    index: u32,
    table: u32,
}

/// The next hop of the line `spec` (interface `index`) for its address `addr`: from `via=`,
/// else the main table's default route by the line (`Some(None)`: on the link, no next hop).
/// `Err`, with a warning, when there is neither.
fn next_hop(
    spec: &WanSpec,
    index: u32,
    addr: IpAddr,
    defaults: &[crate::netlink::route::DefaultRoute],
) -> Result<Option<IpAddr>, NoNextHop> {
    let v6 = addr.is_ipv6();
    let via = spec.via.iter().find(|g| g.is_ipv6() == v6).copied();
    let found = defaults
        .iter()
        .filter(|d| d.oif == index && d.v6 == v6)
        .min_by_key(|d| d.metric);
    match (via, found) {
        (Some(g), _) => Ok(Some(g)),
        (None, Some(d)) => Ok(d.gateway),
        (None, None) => {
            warn!(
                "WAN {} ({addr}): no default route by it in the main table; give its next hop with --wan {}:via=ADDR",
                spec.iface, spec.iface
            );
            Err(NoNextHop)
        }
    }
}

/// A line's address has no next hop (see [`next_hop`]).
#[derive(Debug)]
struct NoNextHop;

/// Whether a line's address can carry subflows (not loopback, link-local or unspecified).
pub(crate) fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_loopback() && !a.is_link_local() && !a.is_unspecified(),
        IpAddr::V6(a) => !a.is_loopback() && !a.is_unicast_link_local() && !a.is_unspecified(),
    }
}

impl WanSetup {
    /// Configures the kernel for `lines`, for the path manager `kind`. Lines without an address
    /// or a next hop are skipped with a warning (mpbond's path manager takes them up when they
    /// get one); no usable line at all is an error.
    pub fn apply(lines: &[WanSpec], kind: PmKind) -> Result<Self> {
        let lock = lock_netns()?;
        crate::host::recover();
        let mut rt = RouteSocket::open().context("netlink (route)")?;
        let mut pm = PathManager::open()
            .context("the kernel's MPTCP path manager (is MPTCP enabled? net.mptcp.enabled)")?;
        let leftovers = rt
            .remove_leftovers()
            .context("removing a previous run's routes")?;
        if leftovers > 0 {
            info!("removed {leftovers} routes and rules left by a previous run");
        }
        let addrs = rt.addresses().context("reading addresses")?;
        let defaults = rt.default_routes().context("reading routes")?;
        let mut lock = lock;
        undo_dead_run(&mut lock, &mut pm);
        let mut setup = Self::default();
        setup.kind = kind;
        setup.lock = Some(lock);
        let existing = pm.endpoints().context("reading MPTCP endpoints")?;
        for (i, w) in lines.iter().enumerate() {
            let table = TABLE_BASE + 1 + u32::try_from(i).unwrap_or(0);
            let index = if_index(&w.iface)
                .with_context(|| format!("--wan {}: no such interface", w.iface))?;
            setup.configured.push(ConfiguredLine {
                spec: w.clone(),
                index,
                table,
            });
            let mine: Vec<(IpAddr, u8)> = addrs
                .iter()
                .filter(|a| a.index == index && usable(&a.addr))
                .map(|a| (a.addr, a.prefix))
                .collect();
            if mine.is_empty() {
                warn!("WAN {} has no address: not used", w.iface);
                continue;
            }
            let mut used = Vec::new();
            for (addr, prefix) in &mine {
                let Ok(gateway) = next_hop(w, index, *addr, &defaults) else {
                    continue;
                };
                let line = Line {
                    spec: w,
                    index,
                    table,
                };
                setup.add_address(
                    &mut rt,
                    Some(&mut pm),
                    &existing,
                    &line,
                    (*addr, *prefix),
                    gateway,
                )?;
                used.push(*addr);
            }
            if !used.is_empty() {
                info!(
                    wan = %w.iface,
                    backup = w.backup,
                    table,
                    addresses = ?used,
                    "WAN line configured"
                );
                setup.lines.push((w.iface.clone(), used));
            }
        }
        if setup.lines.is_empty() {
            setup.remove();
            bail!("no usable WAN line (each needs an address and a next hop)");
        }
        setup.hand_over()?;
        setup.save_state();
        Ok(setup)
    }

    /// Hands the lines to the path manager: mpbond's (`pm_type` 1) or the kernel's (limits for
    /// one subflow per line). Both are recorded in the host journal and put back on removal.
    fn hand_over(&mut self) -> Result<()> {
        if self.kind == PmKind::Mpbond {
            self.pm_type = Some(
                crate::netlink::userspace_pm()
                    .context("handing MPTCP path management to mpbond (net.mptcp.pm_type=1)")?,
            );
            return Ok(());
        }
        let n = u32::try_from(self.lines.len()).unwrap_or(8);
        let change = crate::host::Change::apply(crate::host::Setting::MptcpLimits, |now| {
            let old = crate::host::parse_limits(now)?;
            let want = Limits {
                subflows: old.subflows.max((2 * n).min(8)),
                add_addr_accepted: old.add_addr_accepted.max(n.min(8)),
            };
            Some(format!("{} {}", want.subflows, want.add_addr_accepted))
        })
        .context("setting MPTCP limits")?;
        debug!(old = %change.original, new = %change.value, "MPTCP limits");
        self.limits = Some(change);
        Ok(())
    }

    /// Routes `addr`'s traffic out of its line (table + source rule) and gives the kernel an
    /// MPTCP endpoint for it.
    fn add_address(
        &mut self,
        rt: &mut RouteSocket,
        pm: Option<&mut PathManager>,
        existing: &[Endpoint],
        line: &Line<'_>,
        (addr, prefix): (IpAddr, u8),
        gateway: Option<IpAddr>,
    ) -> Result<()> {
        let v6 = addr.is_ipv6();
        let route = Route {
            v6,
            table: line.table,
            gateway,
            oif: line.index,
            local: false,
            dst: None,
        };
        rt.add_route(&route)
            .with_context(|| format!("route for WAN {} ({addr})", line.spec.iface))?;
        self.routes.push((addr, route));
        // The line's own subnet, on the link: traffic from this address to a neighbour on the
        // line (its modem, say) stays off the default route.
        if let Ok(net) = ipnet::IpNet::new(addr, prefix) {
            if net.prefix_len() < net.max_prefix_len() {
                let subnet = Route {
                    gateway: None,
                    dst: Some((net.trunc().addr(), prefix)),
                    ..route
                };
                rt.add_route(&subnet)
                    .with_context(|| format!("subnet route for WAN {} ({net})", line.spec.iface))?;
                self.routes.push((addr, subnet));
            }
        }
        let rule = Rule {
            v6,
            priority: line.table,
            from: Some((addr, if v6 { 128 } else { 32 })),
            fwmark: None,
            table: line.table,
        };
        match rt.add_rule(&rule) {
            Ok(()) => self.rules.push((addr, rule)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => self.rules.push((addr, rule)),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("rule for WAN {} ({addr})", line.spec.iface));
            }
        }
        let Some(pm) = pm.filter(|_| self.kind == PmKind::Kernel) else {
            return Ok(());
        };
        // Our endpoint replaces one the user had for the same address.
        if let Some(prev) = existing.iter().find(|e| e.addr == addr) {
            warn!(
                "replacing the MPTCP endpoint of {addr} (id {}) until exit",
                prev.id
            );
            if pm.del_endpoint(prev).is_ok() {
                self.replaced.push(prev.clone());
            }
        }
        let mut ep = Endpoint {
            id: 0,
            addr,
            port: 0,
            flags: flag::SUBFLOW | if line.spec.backup { flag::BACKUP } else { 0 },
            ifindex: Some(line.index),
        };
        pm.add_endpoint(&ep)
            .with_context(|| format!("MPTCP endpoint for WAN {} ({addr})", line.spec.iface))?;
        // Learn the id the kernel gave it, to remove exactly this one later.
        if let Some(e) = pm.endpoints()?.into_iter().find(|e| e.addr == addr) {
            ep.id = e.id;
        }
        self.endpoints.push(ep);
        Ok(())
    }

    /// Writes into the lock file what a later run must undo should this process die without
    /// removing it: our endpoints, the limits to put back, the user's endpoints to restore.
    fn save_state(&mut self) {
        use std::fmt::Write as _;
        use std::io::{Seek as _, Write as _};
        let mut text = String::new();
        let cookie = crate::host::Netns::current().map_or(0, |n| n.cookie);
        let _ = writeln!(text, "netns {cookie}");
        for e in &self.endpoints {
            let _ = writeln!(text, "endpoint {}", e.addr);
        }
        for e in &self.replaced {
            let dev = e.ifindex.map_or_else(|| "-".to_owned(), |i| i.to_string());
            let _ = writeln!(text, "user {} {} {} {dev}", e.id, e.addr, e.flags);
        }
        if let Some(f) = &mut self.lock {
            let written = f
                .set_len(0)
                .and_then(|()| f.rewind())
                .and_then(|()| f.write_all(text.as_bytes()));
            if let Err(e) = written {
                warn!("cannot record the WAN setup for clean-up after a crash: {e}");
            }
        }
    }

    /// Undoes everything; errors are logged, not returned (the thing may be gone already).
    pub fn remove(&mut self) {
        if let Ok(mut pm) = PathManager::open() {
            for ep in self.endpoints.drain(..) {
                if let Err(e) = pm.del_endpoint(&ep) {
                    debug!("removing endpoint {}: {e}", ep.addr);
                }
            }
            for ep in self.replaced.drain(..) {
                if let Err(e) = pm.add_endpoint(&ep) {
                    warn!("could not restore the MPTCP endpoint of {}: {e}", ep.addr);
                }
            }
        }
        drop(self.limits.take());
        drop(self.pm_type.take());
        if let Ok(mut rt) = RouteSocket::open() {
            for (_, r) in self.rules.drain(..) {
                ignore_gone(rt.del_rule(&r));
            }
            for (_, r) in self.routes.drain(..) {
                ignore_gone(rt.del_route(&r));
            }
        }
        if let Some(f) = self.lock.take() {
            unlock_netns(f);
        }
    }
}

impl WanSetup {
    /// Line `line` (of [`WanSetup::configured`]) has the addresses `addrs` now: the routes and
    /// rule of an address that went away are removed, a new address gets its own (its next hop
    /// from `via=` or the main table's default route by the line, as at start). Errors are
    /// logged: the line stays unused until its next change.
    pub fn set_addresses(&mut self, line: usize, addrs: &[IfAddr]) {
        let Some(l) = self.configured.get(line).cloned() else {
            return;
        };
        let Ok(mut rt) = RouteSocket::open() else {
            return;
        };
        let now: Vec<IpAddr> = addrs.iter().map(|a| a.addr).collect();
        let had: Vec<IpAddr> = self
            .rules
            .iter()
            .filter(|(_, r)| r.table == l.table)
            .map(|(a, _)| *a)
            .collect();
        for gone in had.iter().filter(|a| !now.contains(a)) {
            for (_, r) in self.rules.iter().filter(|(a, _)| a == gone) {
                ignore_gone(rt.del_rule(r));
            }
            // A route another address of the line still has (the line's default route, its
            // subnet) stays.
            for (_, r) in self.routes.iter().filter(|(a, _)| a == gone) {
                let shared = self
                    .routes
                    .iter()
                    .any(|(a, other)| a != gone && now.contains(a) && other == r);
                if !shared {
                    ignore_gone(rt.del_route(r));
                }
            }
            self.rules.retain(|(a, _)| a != gone);
            self.routes.retain(|(a, _)| a != gone);
            info!(wan = %l.spec.iface, address = %gone, "address gone: its routes removed");
        }
        let defaults = rt.default_routes().unwrap_or_default();
        for a in addrs.iter().filter(|a| !had.contains(&a.addr)) {
            let Ok(gateway) = next_hop(&l.spec, l.index, a.addr, &defaults) else {
                continue;
            };
            let line_ref = Line {
                spec: &l.spec,
                index: l.index,
                table: l.table,
            };
            match self.add_address(&mut rt, None, &[], &line_ref, (a.addr, a.prefix), gateway) {
                Ok(()) => {
                    info!(wan = %l.spec.iface, address = %a.addr, ?gateway, "new address routed out of its line");
                }
                Err(e) => {
                    warn!(wan = %l.spec.iface, address = %a.addr, "cannot route the new address: {e:#}");
                }
            }
        }
    }
}

fn ignore_gone(r: io::Result<()>) {
    if let Err(e) = r {
        if !matches!(
            e.raw_os_error(),
            Some(libc::ENOENT | libc::ESRCH | libc::ENODEV)
        ) {
            debug!("cleanup: {e}");
        }
    }
}

impl Drop for WanSetup {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wan_specs_parse_with_backup_and_next_hops() {
        let w: WanSpec = "eth1".parse().unwrap();
        assert_eq!(
            (w.iface.as_str(), w.backup, w.via.len()),
            ("eth1", false, 0)
        );
        let w: WanSpec = "wwan0:backup".parse().unwrap();
        assert!(w.backup);
        let w: WanSpec = "eth2:via=192.0.2.1:backup".parse().unwrap();
        assert_eq!(w.via, ["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert!(w.backup);
        let w: WanSpec = "eth2:via=fe80::1".parse().unwrap();
        assert_eq!(w.via, ["fe80::1".parse::<IpAddr>().unwrap()]);
        let w: WanSpec = "wwan0:backup:probe=200ms:probe-idle=30s".parse().unwrap();
        assert_eq!(
            (w.backup, w.probe, w.probe_idle),
            (
                true,
                Some(std::time::Duration::from_millis(200)),
                Some(std::time::Duration::from_secs(30))
            )
        );
        for bad in [
            "",
            ":backup",
            "eth0:fast",
            "eth0:via=nowhere",
            "a-very-long-interface-name",
            "eth0:probe=1ms",
            "eth0:probe-idle=2h",
            "eth0:probe=soon",
        ] {
            assert!(bad.parse::<WanSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn interface_names_that_could_break_a_ruleset_are_refused() {
        for ok in [
            "eth0",
            "wwan0",
            "br-lan",
            "eth0.100",
            "veth_a@b",
            "a23456789012345",
        ] {
            assert!(valid_iface_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a234567890123456",
            "eth0\"",
            "x; flush ruleset",
            "a b",
            "eth/0",
            "é",
        ] {
            assert!(!valid_iface_name(bad), "{bad}");
            assert!(bad.is_empty() || format!("{bad}:backup").parse::<WanSpec>().is_err());
        }
    }

    #[test]
    fn a_line_is_configured_and_everything_is_undone_including_a_replaced_endpoint() {
        use crate::lab::testing::in_private_netns;
        use crate::netlink::route::RouteSocket;
        in_private_netns("wan_setup_applies_and_undoes", || {
            let ip = |args: &str| {
                let ok = std::process::Command::new("ip")
                    .args(args.split(' '))
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "ip {args}");
            };
            // A veth pair (dummy interfaces are not in every kernel).
            ip("link add d0 type veth peer name d1");
            ip("addr add 10.9.0.2/24 dev d0");
            ip("link set d1 up");
            ip("link set d0 up");
            ip("route add default via 10.9.0.1 dev d0");
            // The user's own endpoint for the line's address, and limits.
            let mut pm = PathManager::open().unwrap();
            let users = Endpoint {
                id: 5,
                addr: "10.9.0.2".parse().unwrap(),
                port: 0,
                flags: flag::SIGNAL,
                ifindex: None,
            };
            pm.add_endpoint(&users).unwrap();
            let limits = pm.limits().unwrap();

            let setup = WanSetup::apply(&["d0".parse().unwrap()], PmKind::Kernel).unwrap();
            assert_eq!(setup.lines.len(), 1);
            let second = WanSetup::apply(&["d0".parse().unwrap()], PmKind::Kernel).unwrap_err();
            assert!(second.to_string().contains("one at a time"), "{second:#}");
            let during = pm.endpoints().unwrap();
            assert_eq!(during.len(), 1, "{during:?}");
            assert_eq!(during[0].flags, flag::SUBFLOW);
            assert!(during[0].ifindex.is_some());
            let mut rt = RouteSocket::open().unwrap();
            let rules = std::process::Command::new("ip")
                .args(["rule"])
                .output()
                .unwrap();
            assert!(String::from_utf8_lossy(&rules.stdout).contains("from 10.9.0.2 lookup 4201"));
            let table = std::process::Command::new("ip")
                .args(["route", "show", "table", "4201"])
                .output()
                .unwrap();
            let table = String::from_utf8_lossy(&table.stdout);
            assert!(
                table.contains("default via 10.9.0.1 dev d0")
                    && table.contains("10.9.0.0/24 dev d0"),
                "{table}"
            );

            // A crash: the process dies (its lock goes with it) without removing anything.
            let mut crashed = setup;
            drop(crashed.lock.take());
            if let Some(c) = crashed.limits.take() {
                c.crash();
            }
            std::mem::forget(crashed);
            assert_eq!(pm.endpoints().unwrap().len(), 1);
            // The next run undoes the dead one's state before configuring the line again.
            let setup = WanSetup::apply(&["d0".parse().unwrap()], PmKind::Kernel).unwrap();
            let during = pm.endpoints().unwrap();
            assert_eq!(during.len(), 1, "{during:?}");
            assert_eq!(during[0].flags, flag::SUBFLOW);

            drop(setup);
            assert_eq!(
                pm.endpoints().unwrap(),
                vec![users],
                "the user's endpoint is back"
            );
            assert_eq!(pm.limits().unwrap(), limits);
            let rules = std::process::Command::new("ip")
                .args(["rule"])
                .output()
                .unwrap();
            assert!(!String::from_utf8_lossy(&rules.stdout).contains("4201"));
            assert_eq!(rt.remove_leftovers().unwrap(), 0, "no route or rule left");
        });
    }
}
