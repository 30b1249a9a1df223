//! The gateway's nftables table (`inet mpbond`): transparent capture of the LAN's TCP with TPROXY,
//! and optionally the QUIC block. Applied atomically with `nft -f -` on start, deleted on exit.
//!
//! TPROXY needs, besides the rule, a policy route that delivers the marked packets locally:
//! `fwmark MARK lookup TABLE` and `local default dev lo table TABLE` (both families), which
//! [`Capture`] installs with netlink.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use ipnet::IpNet;

use crate::netlink::route::{Route, RouteSocket, Rule};

/// The nftables table.
pub const TABLE: &str = "mpbond";
/// The firewall mark of diverted packets (the Convert magic number).
pub const MARK: u32 = 0x2263;
/// Routing table (and rule priority) that delivers marked packets to the local listener.
pub const LOCAL_TABLE: u32 = super::wan::TABLE_BASE;

/// What to capture.
#[derive(Debug, Clone)]
pub struct Ruleset {
    /// LAN interfaces whose TCP is captured; empty: every interface except `lo` and the WANs.
    pub lan: Vec<String>,
    /// WAN interfaces (never captured from).
    pub wan: Vec<String>,
    /// The port of the transparent listener; `None`: no capture.
    pub port: Option<u16>,
    /// Destinations never captured: the converter, and ranges routed on the LAN side.
    pub bypass: Vec<IpNet>,
    /// Reject UDP port 443 from the LAN so that browsers use TCP (and so the bonded path).
    pub block_quic: bool,
}

fn iface_set(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("{{ {} }}", quoted.join(", "))
}

impl Ruleset {
    fn lan_match(&self) -> String {
        if self.lan.is_empty() {
            let mut not = self.wan.clone();
            not.push("lo".into());
            format!("iifname != {}", iface_set(&not))
        } else {
            format!("iifname {}", iface_set(&self.lan))
        }
    }

    /// The ruleset as `nft -f` reads it: creating the table first makes deleting it safe, so the
    /// whole replaces any older table of the same name in one transaction.
    #[must_use]
    pub fn render(&self) -> String {
        let lan = self.lan_match();
        let mut s =
            format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
        if let Some(port) = self.port {
            let (v4, v6): (Vec<&IpNet>, Vec<&IpNet>) =
                self.bypass.iter().partition(|n| n.addr().is_ipv4());
            let _ = writeln!(s, "  chain divert {{");
            let _ = writeln!(
                s,
                "    type filter hook prerouting priority mangle; policy accept;"
            );
            // Packets of connections the listener already accepted (not the listener itself:
            // `wildcard 0`), from the LAN: deliver them to it.
            let _ = writeln!(
                s,
                "    {lan} meta l4proto tcp socket transparent 1 socket wildcard 0 meta mark set {MARK:#x} accept"
            );
            let _ = writeln!(s, "    {lan} meta l4proto tcp fib daddr type local return");
            if !v4.is_empty() {
                let list: Vec<String> = v4.iter().map(ToString::to_string).collect();
                let _ = writeln!(s, "    {lan} ip daddr {{ {} }} return", list.join(", "));
            }
            if !v6.is_empty() {
                let list: Vec<String> = v6.iter().map(ToString::to_string).collect();
                let _ = writeln!(s, "    {lan} ip6 daddr {{ {} }} return", list.join(", "));
            }
            let _ = writeln!(
                s,
                "    {lan} meta nfproto ipv4 meta l4proto tcp tproxy ip to :{port} meta mark set {MARK:#x} accept"
            );
            let _ = writeln!(
                s,
                "    {lan} meta nfproto ipv6 meta l4proto tcp tproxy ip6 to :{port} meta mark set {MARK:#x} accept"
            );
            let _ = writeln!(s, "  }}");
        }
        if self.block_quic {
            let _ = writeln!(s, "  chain block_quic {{");
            let _ = writeln!(
                s,
                "    type filter hook forward priority filter; policy accept;"
            );
            let _ = writeln!(s, "    {lan} udp dport 443 reject");
            let _ = writeln!(s, "  }}");
        }
        s.push_str("}\n");
        s
    }
}

/// The installed capture: the table and the policy routes; removed on drop.
#[derive(Debug)]
pub struct Capture {
    rules: Vec<Rule>,
    routes: Vec<Route>,
    table: bool,
}

impl Capture {
    /// Installs `ruleset` and, when it captures, its policy routes.
    pub fn install(ruleset: &Ruleset) -> Result<Self> {
        let mut cap = Self {
            rules: Vec::new(),
            routes: Vec::new(),
            table: false,
        };
        if ruleset.port.is_some() {
            let mut rt = RouteSocket::open().context("netlink (route)")?;
            for v6 in [false, true] {
                let rule = Rule {
                    v6,
                    priority: LOCAL_TABLE,
                    from: None,
                    fwmark: Some(MARK),
                    table: LOCAL_TABLE,
                };
                rt.add_rule(&rule)
                    .or_else(|e| {
                        if e.raw_os_error() == Some(libc::EEXIST) {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .context("TPROXY rule")?;
                cap.rules.push(rule);
                let route = Route {
                    v6,
                    table: LOCAL_TABLE,
                    gateway: None,
                    oif: 1,
                    local: true,
                    dst: None,
                };
                rt.add_route(&route).context("TPROXY local route")?;
                cap.routes.push(route);
            }
        }
        if ruleset.port.is_some() || ruleset.block_quic {
            crate::host::nft(&ruleset.render(), &["-f", "-"])?;
            cap.table = true;
        }
        Ok(cap)
    }

    /// Removes everything (idempotent).
    pub fn remove(&mut self) {
        if std::mem::take(&mut self.table) {
            let _ = crate::host::nft("", &["delete", "table", "inet", TABLE]);
        }
        if let Ok(mut rt) = RouteSocket::open() {
            for r in self.rules.drain(..) {
                let _ = rt.del_rule(&r);
            }
            for r in self.routes.drain(..) {
                let _ = rt.del_route(&r);
            }
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Removes a table left by a crashed run (no error if there is none).
pub fn remove_leftover_table() {
    let _ = Command::new("nft")
        .args(["delete", "table", "inet", TABLE])
        .stderr(Stdio::null())
        .status();
}

/// The default bypass: ranges that are not the Internet (the converter would refuse them anyway).
#[must_use]
pub fn default_bypass() -> Vec<IpNet> {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect()
}

/// The converter's address as a bypass range.
#[must_use]
pub fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_captures_lan_tcp_except_local_and_bypassed() {
        let r = Ruleset {
            lan: vec!["lan0".into()],
            wan: vec!["dsl".into()],
            port: Some(7070),
            bypass: vec![
                "198.51.100.1/32".parse().unwrap(),
                "fd00::/8".parse().unwrap(),
            ],
            block_quic: true,
        };
        let t = r.render();
        assert!(
            t.starts_with("table inet mpbond {}\ndelete table inet mpbond\n"),
            "{t}"
        );
        assert!(
            t.contains("iifname { \"lan0\" } meta l4proto tcp fib daddr type local return"),
            "{t}"
        );
        assert!(
            t.contains("iifname { \"lan0\" } ip daddr { 198.51.100.1/32 } return"),
            "{t}"
        );
        assert!(t.contains("ip6 daddr { fd00::/8 } return"), "{t}");
        assert!(
            t.contains("tproxy ip to :7070 meta mark set 0x2263 accept"),
            "{t}"
        );
        assert!(t.contains("tproxy ip6 to :7070"), "{t}");
        assert!(
            t.contains("iifname { \"lan0\" } udp dport 443 reject"),
            "{t}"
        );
        // Bypass comes before the capture.
        assert!(t.find("198.51.100.1").unwrap() < t.find("tproxy").unwrap());
        let any = Ruleset {
            lan: vec![],
            block_quic: false,
            ..r
        };
        let t = any.render();
        assert!(t.contains("iifname != { \"dsl\", \"lo\" }"), "{t}");
        assert!(!t.contains("block_quic"), "{t}");
    }
}
