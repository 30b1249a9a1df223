//! The host side of the user-space stack: the nftables table that masquerades the engine's
//! packets (and maps `listen` ports to it), forwarding, and per-line policy routing.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use tracing::{debug, info, warn};

use super::{Subnet, sysctl_get, sysctl_set};
use crate::gateway::nft::nft;
use crate::gateway::wan::WanSpec;
use crate::netlink::route::{Route, RouteSocket, Rule};

/// First routing table of the user stack's lines: instance `n`, line `i` uses
/// `TABLE_BASE + 16 n + i` (the gateway's tables are 4201–4299).
pub const TABLE_BASE: u32 = 4300;

/// What the host must do for one engine.
#[derive(Debug, Clone, Default)]
pub struct NatConfig {
    /// Ports (with the host address they are for, `None`: every local address) whose
    /// connections go to the engine (`listen`).
    pub listen: Vec<(Option<IpAddr>, u16)>,
    /// Whether the engine speaks IPv6 (turns IPv6 forwarding on).
    pub ipv6: bool,
    /// WAN lines: engine address `i` leaves by line `i`. Empty: the main table decides.
    pub lines: Vec<WanSpec>,
}

/// The nftables ruleset of `subnet`: masquerade, DNAT for `listen`, and a forward chain that
/// lets the engine's traffic through and, when `drop_others`, nothing else.
#[must_use]
pub fn render(subnet: Subnet, cfg: &NatConfig, drop_others: bool) -> String {
    let tun = subnet.ifname();
    let (v4, v6) = (subnet.v4_cidr(), subnet.v6_cidr());
    let mut s = String::new();
    let _ = writeln!(s, "table inet {tun} {{}}");
    let _ = writeln!(s, "delete table inet {tun}");
    let _ = writeln!(s, "table inet {tun} {{");
    let _ = writeln!(
        s,
        "  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(s, "    ip saddr {v4} oifname != \"{tun}\" masquerade");
    let _ = writeln!(s, "    ip6 saddr {v6} oifname != \"{tun}\" masquerade");
    let _ = writeln!(s, "  }}");
    if !cfg.listen.is_empty() {
        for (hook, prio) in [("prerouting", "dstnat"), ("output", "-100")] {
            let _ = writeln!(
                s,
                "  chain {hook} {{ type nat hook {hook} priority {prio}; policy accept;"
            );
            for &(addr, port) in &cfg.listen {
                let (v4_match, v6_match) = match addr {
                    Some(a @ IpAddr::V4(_)) => (Some(format!("ip daddr {a}")), None),
                    Some(a @ IpAddr::V6(_)) => (None, Some(format!("ip6 daddr {a}"))),
                    None => (
                        Some("meta nfproto ipv4 fib daddr type local".to_owned()),
                        Some("meta nfproto ipv6 fib daddr type local".to_owned()),
                    ),
                };
                // Locally originated packets to loopback stay local: the engine is reached
                // by the host's other addresses.
                let not_lo = if hook == "output" {
                    "oifname != \"lo\" "
                } else {
                    ""
                };
                if let Some(m) = v4_match {
                    let _ = writeln!(
                        s,
                        "    {not_lo}{m} tcp dport {port} dnat ip to {}",
                        subnet.engine_v4(0)
                    );
                }
                if let Some(m) = v6_match.filter(|_| cfg.ipv6) {
                    let _ = writeln!(
                        s,
                        "    {not_lo}{m} tcp dport {port} dnat ip6 to {}",
                        subnet.engine_v6(0)
                    );
                }
            }
            let _ = writeln!(s, "  }}");
        }
    }
    let _ = writeln!(
        s,
        "  chain forward {{ type filter hook forward priority filter - 5; policy accept;"
    );
    let _ = writeln!(s, "    iifname \"{tun}\" accept");
    let _ = writeln!(s, "    oifname \"{tun}\" accept");
    if drop_others {
        let _ = writeln!(s, "    drop");
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "}}");
    s
}

/// Where the host's forwarding settings from before any user-stack instance are kept, so the
/// last instance to leave (or the next one, after a crash) puts them back.
fn forwarding_state() -> PathBuf {
    PathBuf::from("/run/mpbond/user-forwarding.state")
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
    rules: Vec<Rule>,
    routes: Vec<Route>,
    /// The WAN lock while lines are configured (one mpbond at a time per namespace).
    wan_lock: Option<std::fs::File>,
}

impl HostSetup {
    /// Sets the host up for the engine of `subnet` (its TUN exists already).
    pub fn install(subnet: Subnet, cfg: &NatConfig) -> Result<Self> {
        std::fs::create_dir_all("/run/mpbond").context("creating /run/mpbond")?;
        remove_leftovers(subnet);
        let mut setup = Self {
            subnet,
            table: false,
            rules: Vec::new(),
            routes: Vec::new(),
            wan_lock: None,
        };
        let drop_others = Self::forwarding_on(cfg.ipv6)?;
        nft(&render(subnet, cfg, drop_others), &["-f", "-"])
            .context("installing the user stack's nftables table")?;
        setup.table = true;
        if !cfg.lines.is_empty() {
            setup.wan_lock = Some(crate::gateway::wan::lock_netns()?);
            setup.route_lines(&cfg.lines, cfg.ipv6)?;
        }
        Ok(setup)
    }

    /// Turns forwarding on (IPv4, and IPv6 when asked), remembering the host's own settings
    /// for the last instance to restore. Returns whether the host did not forward before (then
    /// nothing but the engine's traffic may be forwarded).
    fn forwarding_on(ipv6: bool) -> Result<bool> {
        let keys: &[&str] = if ipv6 {
            &["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"]
        } else {
            &["net.ipv4.ip_forward"]
        };
        let path = forwarding_state();
        let mut saved = std::fs::read_to_string(&path).unwrap_or_default();
        let mut was_off = false;
        for key in keys {
            let old = sysctl_get(key).with_context(|| format!("reading {key}"))?;
            let recorded = saved
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} ")).map(str::to_owned));
            let original = recorded.clone().unwrap_or(old.clone());
            was_off |= original == "0";
            if recorded.is_none() {
                let _ = writeln!(saved, "{key} {old}");
            }
            if old != "1" {
                sysctl_set(key, "1").with_context(|| format!("turning {key} on"))?;
                info!("{key} on while the user-space stack runs (it was {old})");
            }
        }
        std::fs::write(&path, saved).with_context(|| format!("writing {}", path.display()))?;
        Ok(was_off)
    }

    /// Line `i`'s engine address leaves by line `i`: a table with a default route by its next
    /// hop, and a rule from the address.
    fn route_lines(&mut self, lines: &[WanSpec], ipv6: bool) -> Result<()> {
        let mut rt = RouteSocket::open().context("netlink (route)")?;
        let defaults = rt.default_routes().context("reading routes")?;
        for (i, w) in lines.iter().enumerate() {
            let i8 = u8::try_from(i).unwrap_or(u8::MAX);
            let table = TABLE_BASE + 16 * u32::from(self.subnet.n) + u32::from(i8);
            let index = crate::sys::if_index(&w.iface)
                .with_context(|| format!("--wan {}: no such interface", w.iface))?;
            for v6 in [false, true] {
                if v6 && !ipv6 {
                    continue;
                }
                let via = w.via.iter().find(|g| g.is_ipv6() == v6).copied();
                let hop = via.or_else(|| {
                    defaults
                        .iter()
                        .filter(|d| d.oif == index && d.v6 == v6)
                        .min_by_key(|d| d.metric)
                        .and_then(|d| d.gateway)
                });
                let route = Route {
                    v6,
                    table,
                    gateway: hop,
                    oif: index,
                    local: false,
                    dst: None,
                };
                rt.add_route(&route).with_context(|| {
                    format!("--wan {}: default route in table {table}", w.iface)
                })?;
                self.routes.push(route);
                let from = if v6 {
                    IpAddr::V6(self.subnet.engine_v6(i8))
                } else {
                    IpAddr::V4(self.subnet.engine_v4(i8))
                };
                let rule = Rule {
                    v6,
                    priority: table,
                    from: Some((from, if v6 { 128 } else { 32 })),
                    fwmark: None,
                    table,
                };
                rt.add_rule(&rule)
                    .with_context(|| format!("--wan {}: rule from {from}", w.iface))?;
                self.rules.push(rule);
                debug!(line = %w.iface, %from, table, "engine address routed by its line");
            }
        }
        Ok(())
    }

    /// Undoes everything (idempotent).
    pub fn remove(&mut self) {
        if let Ok(mut rt) = RouteSocket::open() {
            for r in self.rules.drain(..) {
                let _ = rt.del_rule(&r);
            }
            for r in self.routes.drain(..) {
                let _ = rt.del_route(&r);
            }
        }
        if std::mem::take(&mut self.table) {
            let _ = nft("", &["delete", "table", "inet", &self.subnet.ifname()]);
            if !other_instances(self.subnet) {
                restore_forwarding();
            }
        }
    }
}

impl Drop for HostSetup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Puts back the forwarding settings recorded before the first instance changed them.
fn restore_forwarding() {
    let path = forwarding_state();
    let Ok(saved) = std::fs::read_to_string(&path) else {
        return;
    };
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
        let ours_or_alive =
            name == ours.ifname() || std::path::Path::new("/sys/class/net").join(name).exists();
        if name.starts_with(super::NAME_PREFIX) && !ours_or_alive {
            let _ = nft("", &["delete", "table", "inet", name]);
            info!("removed the nftables table {name} a killed run left");
        }
    }
    if !other_instances(ours) && forwarding_state().exists() {
        restore_forwarding();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_masquerades_maps_listen_ports_and_guards_forwarding() {
        let cfg = NatConfig {
            listen: vec![(None, 9000), (Some("192.0.2.7".parse().unwrap()), 22)],
            ipv6: true,
            lines: Vec::new(),
        };
        let r = render(Subnet { n: 2 }, &cfg, true);
        assert!(r.starts_with("table inet mpbu2 {}\ndelete table inet mpbu2\n"));
        assert!(r.contains("ip saddr 198.18.2.0/24 oifname != \"mpbu2\" masquerade"));
        assert!(r.contains("ip6 saddr fd6d:7062:2::/64 oifname != \"mpbu2\" masquerade"));
        assert!(r.contains(
            "meta nfproto ipv4 fib daddr type local tcp dport 9000 dnat ip to 198.18.2.2"
        ));
        assert!(r.contains("ip daddr 192.0.2.7 tcp dport 22 dnat ip to 198.18.2.2"));
        assert!(r.contains("dnat ip6 to fd6d:7062:2::2"));
        assert!(r.contains("oifname != \"lo\" ip daddr 192.0.2.7"));
        assert!(r.contains("    drop\n"));
        let open = render(Subnet { n: 2 }, &NatConfig::default(), false);
        assert!(
            !open.contains("drop"),
            "a host that forwarded before keeps forwarding"
        );
        assert!(!open.contains("dnat"));
        assert_eq!(r.matches('{').count(), r.matches('}').count());
    }
}
