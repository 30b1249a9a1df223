//! The lab's address plan and its description ([`LabInfo`]), computed from a [`LabSpec`]
//! without touching the system.
//!
//! ```text
//!  lan ── lan0 gw ═ line i ═ (g-LINE emu v-LINE) ═ line i ═ vps web0 ── eth0 web
//! ```
//!
//! ```text
//! link                  IPv4                               IPv6
//! lan — gw              192.168.100.0/24 (gw .1, lan .2)   fd00:100::/64 (gw ::1, lan ::2)
//! line i (1-based)      10.i.0.0/24 (vps .1, gw .2)        fd00:i::/64 (vps ::1, gw ::2)
//! vps — web             203.0.113.0/24 (vps .1, web .2)    2001:db8:113::/64 (vps ::1, web ::2)
//! vps public (on lo)    198.51.100.1                       2001:db8:51::1
//! ```
//!
//! The web and vps public addresses are in documentation ranges rather than private ones, so a
//! converter's default refusal of private destinations does not get in the way of lab traffic.
//! Each line is its own subnet: a flow to the vps's address on line i crosses line i only.
//! The gateway has a default route by every line (metrics 100, 200, ...: the first wins); the
//! vps routes the LAN prefix back through the first line, so plain routed traffic from lan to web
//! works before any bonding is set up.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::spec::{DirectionSpec, LabSpec};
use crate::units::Rate;

/// The five hosts of every lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A LAN client behind the gateway.
    Lan,
    /// The bonding gateway, connected to every line.
    Gw,
    /// Runs the link emulator between the gateway's and the vps's end of every line.
    Emu,
    /// The server side of every line (where a converter runs).
    Vps,
    /// Servers on the Internet side of the vps.
    Web,
}

impl Role {
    /// Every role, in topology order.
    pub const ALL: [Role; 5] = [Role::Lan, Role::Gw, Role::Emu, Role::Vps, Role::Web];

    /// The role's short name, also the namespace suffix.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Lan => "lan",
            Role::Gw => "gw",
            Role::Emu => "emu",
            Role::Vps => "vps",
            Role::Web => "web",
        }
    }

    /// The namespace of this host in lab `lab`.
    #[must_use]
    pub fn netns(self, lab: &str) -> String {
        format!("{lab}-{}", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host name that is not one of the lab's.
#[derive(Debug, thiserror::Error)]
#[error("unknown host `{0}` (hosts: lan, gw, emu, vps, web)")]
pub struct UnknownRole(String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// An interface address with its prefix length, written `10.1.0.2/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IfAddr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length of the subnet.
    pub prefix_len: u8,
}

impl IfAddr {
    fn v4(a: [u8; 4], prefix_len: u8) -> Self {
        IfAddr {
            addr: IpAddr::V4(Ipv4Addr::from(a)),
            prefix_len,
        }
    }

    fn v6(a: [u16; 8], prefix_len: u8) -> Self {
        IfAddr {
            addr: IpAddr::V6(Ipv6Addr::from(a)),
            prefix_len,
        }
    }
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for IfAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected ADDR/LEN"))?;
        let addr: IpAddr = a.parse().map_err(|e| format!("`{s}`: {e}"))?;
        let prefix_len: u8 = p.parse().map_err(|e| format!("`{s}`: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(format!("`{s}`: prefix length over {max}"));
        }
        Ok(IfAddr { addr, prefix_len })
    }
}

impl Serialize for IfAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IfAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One interface of a lab host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name inside the host's namespace.
    pub name: String,
    /// The line this interface belongs to, for line interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// `lan` or `web` for the two plain links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// On the emulator: which side of the line this end faces (`gw` or `vps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faces: Option<Role>,
    /// IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<IfAddr>,
    /// IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<IfAddr>,
    /// IPv4 address of the host at the other end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_ipv4: Option<IpAddr>,
    /// IPv6 address of the host at the other end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_ipv6: Option<IpAddr>,
}

impl Interface {
    fn named(name: &str) -> Self {
        Interface {
            name: name.to_owned(),
            line: None,
            link: None,
            faces: None,
            ipv4: None,
            ipv6: None,
            peer_ipv4: None,
            peer_ipv6: None,
        }
    }
}

/// A route as `ip route add` takes it, with the address family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination prefix or `default`.
    pub to: String,
    /// Next hop.
    pub via: IpAddr,
    /// Route metric (lower wins), if not the kernel's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

/// One host (network namespace) of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Network namespace name (`ip netns exec NETNS ...`).
    pub netns: String,
    /// Interfaces other than `lo`.
    pub interfaces: Vec<Interface>,
    /// Addresses on `lo` (the vps's public addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loopback: Vec<IfAddr>,
    /// Static routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Whether the host forwards packets.
    pub forwarding: bool,
}

/// The five hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hosts {
    /// LAN client.
    pub lan: Host,
    /// Gateway.
    pub gw: Host,
    /// Link emulator.
    pub emu: Host,
    /// Server end of the lines.
    pub vps: Host,
    /// Internet servers.
    pub web: Host,
}

impl Hosts {
    /// The host playing `role`.
    #[must_use]
    pub fn get(&self, role: Role) -> &Host {
        match role {
            Role::Lan => &self.lan,
            Role::Gw => &self.gw,
            Role::Emu => &self.emu,
            Role::Vps => &self.vps,
            Role::Web => &self.web,
        }
    }
}

/// One direction of a line, with the derived numbers machines want.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectionInfo {
    /// The settings.
    #[serde(flatten)]
    pub spec: DirectionSpec,
    /// Rate in bit/s (0 = unlimited).
    pub rate_bps: u64,
    /// Queue size in bytes at the rate (absent when unlimited).
    pub queue_bytes: Option<u64>,
}

impl From<&DirectionSpec> for DirectionInfo {
    fn from(spec: &DirectionSpec) -> Self {
        DirectionInfo {
            spec: spec.clone(),
            rate_bps: spec.rate.bps(),
            queue_bytes: spec.queue_bytes(),
        }
    }
}

/// One line as built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineInfo {
    /// Line name.
    pub name: String,
    /// 1-based index (the `i` of the address plan).
    pub index: u8,
    /// The line's nominal settings (those of its downstream direction).
    #[serde(flatten)]
    pub nominal: DirectionInfo,
    /// Gateway → vps.
    pub upstream: DirectionInfo,
    /// Vps → gateway.
    pub downstream: DirectionInfo,
    /// The line whose serialiser this one shares (`share=NAME`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
}

impl LineInfo {
    /// Line `line`, number `index` (1-based) of its lab.
    fn new(line: &super::spec::LineSpec, index: u8) -> Self {
        LineInfo {
            name: line.name.clone(),
            index,
            nominal: DirectionInfo::from(&line.downstream),
            upstream: DirectionInfo::from(&line.upstream),
            downstream: DirectionInfo::from(&line.downstream),
            share: line.share.clone(),
        }
    }
}

/// Where the lab's link emulator can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmulatorInfo {
    /// Process id of the emulator (0 until it runs).
    pub pid: u32,
    /// Its control socket.
    pub control: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

/// Everything about a built lab; `mpbond lab up` prints it as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabInfo {
    /// Lab name.
    pub name: String,
    /// Seed of the emulator's random decisions.
    pub seed: u64,
    /// The hosts.
    pub hosts: Hosts,
    /// The lines, in order.
    pub lines: Vec<LineInfo>,
    /// The link emulator.
    pub emulator: EmulatorInfo,
    /// Who made the lab, when not a user (see [`LabSpec::owner`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl LabInfo {
    /// The line called `name`.
    #[must_use]
    pub fn line(&self, name: &str) -> Option<&LineInfo> {
        self.lines.iter().find(|l| l.name == name)
    }

    /// The interface of `role` on line `line`.
    #[must_use]
    pub fn line_interface(&self, role: Role, line: &str) -> Option<&Interface> {
        self.hosts
            .get(role)
            .interfaces
            .iter()
            .find(|i| i.line.as_deref() == Some(line))
    }

    /// The namespace of `role`.
    #[must_use]
    pub fn netns(&self, role: Role) -> &str {
        &self.hosts.get(role).netns
    }

    /// The vps's address on line `line` (IPv4 or IPv6): traffic to it crosses that line only.
    #[must_use]
    pub fn vps_line_addr(&self, line: &str, v6: bool) -> Option<IpAddr> {
        let i = self.line_interface(Role::Vps, line)?;
        (if v6 { i.ipv6 } else { i.ipv4 }).map(|a| a.addr)
    }

    /// The gateway's address on line `line`.
    #[must_use]
    pub fn gw_line_addr(&self, line: &str, v6: bool) -> Option<IpAddr> {
        let i = self.line_interface(Role::Gw, line)?;
        (if v6 { i.ipv6 } else { i.ipv4 }).map(|a| a.addr)
    }

    /// The first address of `role` (IPv4 or IPv6) on its first interface with one.
    #[must_use]
    pub fn addr(&self, role: Role, v6: bool) -> Option<IpAddr> {
        self.hosts
            .get(role)
            .interfaces
            .iter()
            .find_map(|i| if v6 { i.ipv6 } else { i.ipv4 })
            .map(|a| a.addr)
    }
}

/// The vps's public IPv4 address (on its `lo`).
pub const VPS_PUBLIC_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The vps's public IPv6 address (on its `lo`).
pub const VPS_PUBLIC_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 1);

/// The two ends of a plain link: `(a, b)` with `a` at `.1`/`::1` facing `b` at `.2`/`::2`.
fn link_pair(
    link: &str,
    (name_a, name_b): (&str, &str),
    v4: [u8; 3],
    v6: [u16; 4],
) -> (Interface, Interface) {
    let ip4 = |h: u8| IfAddr::v4([v4[0], v4[1], v4[2], h], 24);
    let ip6 = |h: u16| IfAddr::v6([v6[0], v6[1], v6[2], v6[3], 0, 0, 0, h], 64);
    let mut a = Interface::named(name_a);
    let mut b = Interface::named(name_b);
    for (i, me, peer) in [(&mut a, 1, 2), (&mut b, 2, 1)] {
        i.link = Some(link.to_owned());
        i.ipv4 = Some(ip4(me));
        i.ipv6 = Some(ip6(u16::from(me)));
        i.peer_ipv4 = Some(ip4(peer).addr);
        i.peer_ipv6 = Some(ip6(u16::from(peer)).addr);
    }
    (a, b)
}

/// A default route (IPv4 and IPv6) towards the peer of `i`, with `metric`.
fn default_routes(i: &Interface, metric: Option<u32>) -> Vec<Route> {
    [i.peer_ipv4, i.peer_ipv6]
        .into_iter()
        .flatten()
        .map(|via| Route {
            to: "default".into(),
            via,
            metric,
        })
        .collect()
}

/// The gateway's, vps's and emulator's interfaces for line number `i`.
fn line_interfaces(name: &str, i: u8) -> (Interface, Interface, [Interface; 2]) {
    let (mut vps, mut gw) = link_pair("", (name, name), [10, i, 0], [0xfd00, u16::from(i), 0, 0]);
    for end in [&mut vps, &mut gw] {
        end.link = None;
        end.line = Some(name.to_owned());
    }
    let emu = [("g", Role::Gw), ("v", Role::Vps)].map(|(prefix, faces)| {
        let mut e = Interface::named(&format!("{prefix}-{name}"));
        e.line = Some(name.to_owned());
        e.faces = Some(faces);
        e
    });
    (gw, vps, emu)
}

/// Computes the hosts, addresses and routes of `spec`. `run_dir` is the lab's state directory
/// (control socket and log live there).
#[must_use]
pub fn plan(spec: &LabSpec, run_dir: &std::path::Path) -> LabInfo {
    let name = &spec.name;
    let (gw_lan, lan_if) = link_pair(
        "lan",
        ("lan0", "eth0"),
        [192, 168, 100],
        [0xfd00, 0x100, 0, 0],
    );
    let (vps_web, web_if) = link_pair(
        "web",
        ("web0", "eth0"),
        [203, 0, 113],
        [0x2001, 0xdb8, 0x113, 0],
    );

    let mut gw_ifs = vec![gw_lan];
    let mut vps_ifs = Vec::new();
    let mut emu_ifs = Vec::new();
    let mut lines = Vec::new();
    for (n, line) in spec.lines.iter().enumerate() {
        let i = u8::try_from(n + 1).unwrap_or(u8::MAX);
        let (g, v, e) = line_interfaces(&line.name, i);
        gw_ifs.push(g);
        vps_ifs.push(v);
        emu_ifs.extend(e);
        lines.push(LineInfo::new(line, i));
    }
    vps_ifs.push(vps_web);

    // The gateway has a default route by every line, with metrics 100, 200, ... as a DHCP
    // client on a multihomed host installs them: traffic leaves by the first line; the others'
    // next hops are there for a gateway to find. The vps routes the LAN back by the first line.
    let gw_routes = gw_ifs
        .iter()
        .skip(1)
        .zip(1u32..)
        .flat_map(|(i, n)| default_routes(i, Some(100 * n)))
        .collect();
    let vps_routes = match gw_ifs.get(1) {
        Some(first) => [
            (first.ipv4, "192.168.100.0/24"),
            (first.ipv6, "fd00:100::/64"),
        ]
        .into_iter()
        .filter_map(|(via, to)| {
            via.map(|via| Route {
                to: to.into(),
                via: via.addr,
                metric: None,
            })
        })
        .collect(),
        None => Vec::new(),
    };
    let host = |role: Role, interfaces, routes, forwarding| Host {
        netns: role.netns(name),
        interfaces,
        loopback: Vec::new(),
        routes,
        forwarding,
    };
    let mut vps = host(Role::Vps, vps_ifs, vps_routes, true);
    vps.loopback = vec![
        IfAddr {
            addr: IpAddr::V4(VPS_PUBLIC_V4),
            prefix_len: 32,
        },
        IfAddr {
            addr: IpAddr::V6(VPS_PUBLIC_V6),
            prefix_len: 128,
        },
    ];
    LabInfo {
        name: name.clone(),
        seed: spec.seed,
        hosts: Hosts {
            lan: host(
                Role::Lan,
                vec![lan_if.clone()],
                default_routes(&lan_if, None),
                false,
            ),
            gw: host(Role::Gw, gw_ifs, gw_routes, true),
            emu: host(Role::Emu, emu_ifs, Vec::new(), false),
            vps,
            web: host(
                Role::Web,
                vec![web_if.clone()],
                default_routes(&web_if, None),
                false,
            ),
        },
        lines,
        emulator: EmulatorInfo {
            pid: 0,
            control: run_dir.join("control.sock"),
            log: run_dir.join("emulator.log"),
        },
        owner: spec.owner.clone(),
    }
}

/// Rate of the fastest line, for sizing measurements.
#[must_use]
pub fn fastest_rate(info: &LabInfo) -> Rate {
    info.lines
        .iter()
        .map(|l| l.nominal.spec.rate)
        .max()
        .unwrap_or(Rate::UNLIMITED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LabSpec {
        LabSpec {
            name: "t".into(),
            seed: 1,
            lines: LabSpec::default_lines(),
            owner: None,
        }
    }

    #[test]
    fn every_line_is_its_own_subnet() {
        let info = plan(&spec(), std::path::Path::new("/run/x"));
        assert_eq!(info.netns(Role::Emu), "t-emu");
        assert_eq!(
            info.vps_line_addr("dsl", false),
            Some("10.1.0.1".parse().unwrap())
        );
        assert_eq!(
            info.gw_line_addr("lte", false),
            Some("10.2.0.2".parse().unwrap())
        );
        assert_eq!(
            info.vps_line_addr("lte", true),
            Some("fd00:2::1".parse().unwrap())
        );
        let emu: Vec<_> = info
            .hosts
            .emu
            .interfaces
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(emu, ["g-dsl", "v-dsl", "g-lte", "v-lte"]);
        // A default route by every line, the first line's preferred.
        let gw: Vec<_> = info
            .hosts
            .gw
            .routes
            .iter()
            .map(|r| (r.via.to_string(), r.metric))
            .collect();
        assert_eq!(
            gw,
            [
                ("10.1.0.1".to_owned(), Some(100)),
                ("fd00:1::1".to_owned(), Some(100)),
                ("10.2.0.1".to_owned(), Some(200)),
                ("fd00:2::1".to_owned(), Some(200)),
            ]
        );
        assert_eq!(info.hosts.vps.routes[0].to, "192.168.100.0/24");
    }

    #[test]
    fn lab_info_json_round_trips() {
        let info = plan(&spec(), std::path::Path::new("/run/x"));
        let json = serde_json::to_string(&info).unwrap();
        let back: LabInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(back, info);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["lines"][0]["rate"], "20mbit");
        assert_eq!(v["lines"][0]["rate_bps"], 20_000_000);
        assert_eq!(v["lines"][1]["delay"], "40ms");
        assert_eq!(v["hosts"]["gw"]["interfaces"][1]["ipv4"], "10.1.0.2/24");
    }

    #[test]
    fn roles_parse_with_a_helpful_error() {
        assert_eq!("vps".parse::<Role>().unwrap(), Role::Vps);
        assert!(
            "server"
                .parse::<Role>()
                .unwrap_err()
                .to_string()
                .contains("lan, gw")
        );
    }
}
