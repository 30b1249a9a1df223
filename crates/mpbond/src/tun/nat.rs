//! The host side of the user-space stack: the nftables table that masquerades the engine's
//! packets (and maps `listen` ports to it), forwarding, and per-line policy routing.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use tracing::{debug, info, warn};

use super::Subnet;
use crate::gateway::wan::WanSpec;
use crate::host::nft;
use crate::host::{sysctl_get, sysctl_set};
use crate::netlink::route::{Route, RouteSocket, Rule};

/// First routing table of the user stack's lines: instance `n`, line `i` uses
/// `TABLE_BASE + 16 n + i` (the gateway's tables are 4201–4299).
pub const TABLE_BASE: u32 = 4300;

/// Turning `ip_forward` on or off also sets these (Linux's `inet_forward_change` clears
/// ICMP-redirect acceptance on a router): saved and put back with it.
const FORWARDING_KEYS: [&str; 3] = [
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.accept_redirects",
    "net.ipv4.conf.default.accept_redirects",
];

/// What the host must do for one engine.
#[derive(Debug, Clone, Default)]
pub struct NatConfig {
    /// Ports (with the host address they are for, `None`: every local address) whose
    /// connections go to the engine (`listen`).
    pub listen: Vec<(Option<IpAddr>, u16)>,
    /// WAN lines: engine address `i` leaves by line `i`. Empty: the main table decides.
    pub lines: Vec<WanSpec>,
}

/// The nftables ruleset of `subnet`: masquerade, DNAT for `listen`, and a forward chain that
/// lets the engines' traffic through and, when `drop_others`, nothing else.
#[must_use]
pub fn render(subnet: Subnet, cfg: &NatConfig, drop_others: bool) -> String {
    let tun = subnet.ifname();
    let all_tuns = format!("{}*", super::NAME_PREFIX);
    let v4 = subnet.v4_cidr();
    let engine = subnet.engine_v4(0);
    let mut s = String::new();
    let _ = writeln!(s, "table inet {tun} {{}}");
    let _ = writeln!(s, "delete table inet {tun}");
    let _ = writeln!(s, "table inet {tun} {{");
    let _ = writeln!(
        s,
        "  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(s, "    ip saddr {v4} oifname != \"{tun}\" masquerade");
    let _ = writeln!(s, "  }}");
    if !cfg.listen.is_empty() {
        // `prerouting` takes connections from elsewhere, `output` those the host itself opens
        // to its own addresses (but not to loopback, which stays the host's).
        for (hook, prio) in [("prerouting", "dstnat"), ("output", "-100")] {
            let _ = writeln!(
                s,
                "  chain {hook} {{ type nat hook {hook} priority {prio}; policy accept;"
            );
            for &(addr, port) in &cfg.listen {
                let m = match addr {
                    Some(a @ IpAddr::V4(_)) => format!("ip daddr {a}"),
                    Some(IpAddr::V6(_)) => continue,
                    None => {
                        "meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local".to_owned()
                    }
                };
                let _ = writeln!(s, "    {m} tcp dport {port} dnat ip to {engine}");
            }
            let _ = writeln!(s, "  }}");
        }
    }
    let _ = writeln!(
        s,
        "  chain forward {{ type filter hook forward priority filter - 5; policy accept;"
    );
    // The engine's packets routed anywhere but its TUN: the TUN went with a killed instance
    // (this table stays until the next one removes it). A reset tells the peer at once that
    // the connection is gone, instead of its retransmitting into the default route for
    // minutes: its application sees a reset, not a hang.
    let _ = writeln!(
        s,
        "    ip daddr {v4} oifname != \"{tun}\" meta l4proto tcp reject with tcp reset"
    );
    // Every instance's TUN: with two running, one's guard must not drop the other's packets.
    let _ = writeln!(s, "    iifname \"{all_tuns}\" accept");
    let _ = writeln!(s, "    oifname \"{all_tuns}\" accept");
    if drop_others {
        let _ = writeln!(s, "    meta nfproto ipv4 drop");
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "}}");
    s
}

/// Where the host's forwarding settings from before any user-stack instance are kept, so the
/// last instance to leave (or the next one, after a crash) puts them back. One file per
/// network namespace: the settings are per namespace.
fn forwarding_state() -> PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    let ns = std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino());
    PathBuf::from(format!("/run/mpbond/user-forwarding-{ns}.state"))
}

/// Whether another instance's TUN exists.
fn other_instances(ours: Subnet) -> bool {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .any(|n| n.starts_with(super::NAME_PREFIX) && n != ours.ifname())
}

/// What [`HostSetup::install`] changed, undone on drop.
#[derive(Debug)]
pub struct HostSetup {
    subnet: Subnet,
    table: bool,
    /// Forwarding was turned on by this instance (or was already recorded as changed).
    forwarding: bool,
    rules: Vec<Rule>,
    /// Per line: its spec, and the default route of its table (`None`: none yet, the line
    /// has no next hop; [`HostSetup::route_line`] tries again when its addresses change).
    routes: Vec<(WanSpec, Option<Route>)>,
    /// The WAN lock while lines are configured (one mpbond at a time per namespace).
    wan_lock: Option<std::fs::File>,
}

impl HostSetup {
    /// Sets the host up for the engine of `subnet` (its TUN exists already). What was done
    /// before a failure is undone.
    pub fn install(subnet: Subnet, cfg: &NatConfig) -> Result<Self> {
        std::fs::create_dir_all("/run/mpbond").context("creating /run/mpbond")?;
        remove_leftovers(subnet);
        let mut setup = Self {
            subnet,
            table: false,
            forwarding: false,
            rules: Vec::new(),
            routes: Vec::new(),
            wan_lock: None,
        };
        // The table first, so that forwarding is never on without its guard.
        let was_off = original_forwarding()? == "0";
        nft(&render(subnet, cfg, was_off), &["-f", "-"])
            .context("installing the user stack's nftables table")?;
        setup.table = true;
        setup.forwarding_on()?;
        if !cfg.lines.is_empty() {
            setup.wan_lock = Some(crate::gateway::wan::lock_netns()?);
            setup.route_lines(&cfg.lines)?;
        }
        warn_about_other_firewalls(subnet);
        Ok(setup)
    }

    /// Turns IPv4 forwarding on, having recorded the host's own settings for the last
    /// instance to restore.
    fn forwarding_on(&mut self) -> Result<()> {
        let path = forwarding_state();
        if !path.exists() {
            let mut saved = String::new();
            for key in FORWARDING_KEYS {
                let v = sysctl_get(key).with_context(|| format!("reading {key}"))?;
                let _ = writeln!(saved, "{key} {v}");
            }
            std::fs::write(&path, saved).with_context(|| format!("writing {}", path.display()))?;
        }
        self.forwarding = true;
        let old = sysctl_get(FORWARDING_KEYS[0])?;
        if old != "1" {
            sysctl_set(FORWARDING_KEYS[0], "1")
                .with_context(|| format!("turning {} on", FORWARDING_KEYS[0]))?;
            info!(
                "{} on while the user-space stack runs (it was {old}); nothing but the stack's traffic is forwarded",
                FORWARDING_KEYS[0]
            );
        }
        Ok(())
    }

    /// Line `i`'s engine address leaves by line `i`: a table with a default route by its next
    /// hop, and a rule from the address. A line without a next hop yet (no address, no
    /// default route) gets its route when it has one ([`HostSetup::route_line`]).
    fn route_lines(&mut self, lines: &[WanSpec]) -> Result<()> {
        let mut rt = RouteSocket::open().context("netlink (route)")?;
        for (i, w) in lines.iter().enumerate() {
            let i8 = u8::try_from(i)
                .ok()
                .filter(|&i| i < super::MAX_LINES)
                .with_context(|| format!("at most {} --wan lines", super::MAX_LINES))?;
            crate::sys::if_index(&w.iface)
                .with_context(|| format!("--wan {}: no such interface", w.iface))?;
            let table = self.table_of(i8);
            self.routes.push((w.clone(), None));
            if !self.route_line(i) {
                warn!(line = %w.iface, "no next hop by the line yet (no address or default route by it): the engine uses it once it has one; give --wan {}:via=ADDR if its router is known", w.iface);
            }
            let from = IpAddr::V4(self.subnet.engine_v4(i8));
            let rule = Rule {
                v6: false,
                priority: table,
                from: Some((from, 32)),
                fwmark: None,
                table,
            };
            // Our instance number is ours now: a rule already there is a killed run's.
            if let Err(e) = rt.add_rule(&rule) {
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e).with_context(|| format!("--wan {}: rule from {from}", w.iface));
                }
                let _ = rt.del_rule(&rule);
                rt.add_rule(&rule)
                    .with_context(|| format!("--wan {}: rule from {from}", w.iface))?;
            }
            self.rules.push(rule);
            debug!(line = %w.iface, %from, table, "engine address routed by its line");
        }
        Ok(())
    }

    fn table_of(&self, line: u8) -> u32 {
        TABLE_BASE + 16 * u32::from(self.subnet.n) + u32::from(line)
    }

    /// Keeps line `i`'s table right: a default route by its next hop (`via=`, else the main
    /// table's default route by its interface, as [`crate::gateway::wan`] finds it). Called at
    /// start and whenever the links, addresses or routes change: nothing is written when all is
    /// in place (a write would be one more change), and a line without a next hop yet gets its
    /// route when one comes. Returns whether the line has its route.
    pub fn route_line(&mut self, i: usize) -> bool {
        let Some((spec, old)) = self.routes.get(i).cloned() else {
            return false;
        };
        let Ok(line) = u8::try_from(i) else {
            return false;
        };
        let table = self.table_of(line);
        let (Ok(mut rt), Ok(index)) = (RouteSocket::open(), crate::sys::if_index(&spec.iface))
        else {
            return old.is_some();
        };
        let via = spec.via.iter().find(|g| g.is_ipv4()).copied();
        let found = rt
            .default_routes()
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d.oif == index && !d.v6)
            .min_by_key(|d| d.metric);
        let hop = match (via, found) {
            (Some(g), _) => Some(g),
            // A point-to-point line's default route has no gateway.
            (None, Some(d)) => d.gateway,
            (None, None) => {
                if old.is_none() {
                    debug!(line = %spec.iface, "no default route by the line yet: the engine's route waits for one (or give --wan {}:via=ADDR)", spec.iface);
                }
                return old.is_some() && !Self::next_hops_in(&mut rt, table, index).is_empty();
            }
        };
        let route = Route {
            v6: false,
            table,
            gateway: hop,
            oif: index,
            local: false,
            dst: None,
        };
        let present = Self::next_hops_in(&mut rt, table, index).contains(&hop);
        if present && old == Some(route) {
            return true;
        }
        // Replaces whatever default the table had.
        match rt.add_route(&route) {
            Ok(()) => {
                match old {
                    Some(o) if o.gateway != hop => {
                        info!(line = %spec.iface, next_hop = ?hop, "the engine's route by the line follows its new next hop");
                    }
                    _ => {
                        info!(line = %spec.iface, next_hop = ?hop, "the engine's route by the line is made");
                    }
                }
                self.routes[i].1 = Some(route);
                true
            }
            Err(e) => {
                debug!(line = %spec.iface, next_hop = ?hop, "no route by the line yet: {e}");
                self.routes[i].1 = None;
                false
            }
        }
    }

    /// The next hops of `table`'s default routes by interface `index` (`None`: one without a
    /// gateway, as on a point-to-point line).
    fn next_hops_in(rt: &mut RouteSocket, table: u32, index: u32) -> Vec<Option<IpAddr>> {
        rt.default_routes_in(table)
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d.oif == index)
            .map(|d| d.gateway)
            .collect()
    }

    /// Undoes everything (idempotent).
    pub fn remove(&mut self) {
        if let Ok(mut rt) = RouteSocket::open() {
            for r in self.rules.drain(..) {
                let _ = rt.del_rule(&r);
            }
            for (_, r) in self.routes.drain(..) {
                if let Some(r) = r {
                    let _ = rt.del_route(&r);
                }
            }
        }
        if let Some(lock) = self.wan_lock.take() {
            crate::gateway::wan::unlock_netns(lock);
        }
        if std::mem::take(&mut self.forwarding) && !other_instances(self.subnet) {
            restore_forwarding();
        }
        if std::mem::take(&mut self.table) {
            let _ = nft("", &["delete", "table", "inet", &self.subnet.ifname()]);
        }
    }
}

impl Drop for HostSetup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The host's `ip_forward` from before any instance: the recorded one, else the current one.
fn original_forwarding() -> Result<String> {
    if let Ok(saved) = std::fs::read_to_string(forwarding_state()) {
        if let Some(v) = saved
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{} ", FORWARDING_KEYS[0])))
        {
            return Ok(v.trim().to_owned());
        }
    }
    sysctl_get(FORWARDING_KEYS[0]).with_context(|| format!("reading {}", FORWARDING_KEYS[0]))
}

/// Puts back the forwarding settings recorded before the first instance changed them.
fn restore_forwarding() {
    let path = forwarding_state();
    let Ok(saved) = std::fs::read_to_string(&path) else {
        return;
    };
    // `ip_forward` first: writing it resets the others, which are put back after it.
    for line in saved.lines() {
        if let Some((key, value)) = line.split_once(' ') {
            if let Err(e) = sysctl_set(key, value) {
                warn!("could not restore {key}: {e}");
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Removes what killed instances left: tables of user-stack instances whose TUN is gone, and,
/// with no instance running, the forwarding they turned on.
fn remove_leftovers(ours: Subnet) {
    crate::host::remove_files_of_dead_namespaces(&[("user-forwarding-", ".state")]);
    let Ok(out) = std::process::Command::new("nft")
        .args(["list", "tables", "inet"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.strip_prefix("table inet ") else {
            continue;
        };
        let name = name.trim();
        let alive = std::path::Path::new("/sys/class/net").join(name).exists();
        if name.starts_with(super::NAME_PREFIX) && name != ours.ifname() && !alive {
            let _ = nft("", &["delete", "table", "inet", name]);
            info!("removed the nftables table {name} a killed run left");
        }
    }
    if !other_instances(ours) && forwarding_state().exists() {
        restore_forwarding();
    }
}

/// Warns when another firewall drops forwarded packets by default: its verdict stands
/// whatever this table accepts, and the engine's connections would time out.
fn warn_about_other_firewalls(ours: Subnet) {
    let Ok(out) = std::process::Command::new("nft")
        .args(["-j", "list", "chains"])
        .output()
    else {
        return;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return;
    };
    let chains = v
        .get("nftables")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("chain"));
    for c in chains {
        let field = |k: &str| c.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
        if field("hook") == "forward"
            && field("policy") == "drop"
            && field("table") != ours.ifname()
        {
            warn!(
                "the nftables chain {} {} {} drops forwarded packets by default: let {}* through (iifname/oifname accept) or the user-space stack's connections will time out",
                field("family"),
                field("table"),
                field("name"),
                super::NAME_PREFIX
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_masquerades_maps_listen_ports_and_guards_forwarding() {
        let cfg = NatConfig {
            listen: vec![(None, 9000), (Some("192.0.2.7".parse().unwrap()), 22)],
            lines: Vec::new(),
        };
        let r = render(Subnet { n: 2 }, &cfg, true);
        assert!(r.starts_with("table inet mpbu2 {}\ndelete table inet mpbu2\n"));
        assert!(r.contains("ip saddr 198.18.2.0/24 oifname != \"mpbu2\" masquerade"));
        assert!(r.contains(
            "meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local tcp dport 9000 dnat ip to 198.18.2.2"
        ));
        assert!(r.contains("ip daddr 192.0.2.7 tcp dport 22 dnat ip to 198.18.2.2"));
        assert!(
            r.contains("chain output"),
            "the host's own connections are mapped too"
        );
        assert!(
            r.contains("iifname \"mpbu*\" accept"),
            "every instance's traffic passes"
        );
        assert!(r.contains("    meta nfproto ipv4 drop\n"));
        assert!(
            r.contains(
                "ip daddr 198.18.2.0/24 oifname != \"mpbu2\" meta l4proto tcp reject with tcp reset"
            ),
            "once the TUN is gone, its peers get resets"
        );
        let open = render(Subnet { n: 2 }, &NatConfig::default(), false);
        assert!(
            !open.contains("drop"),
            "a host that forwarded before keeps forwarding"
        );
        assert!(!open.contains("dnat"));
        assert_eq!(r.matches('{').count(), r.matches('}').count());
    }
}
