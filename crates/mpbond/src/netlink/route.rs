//! Routes, policy rules and addresses over `NETLINK_ROUTE`.
//!
//! What mpbond adds carries the route protocol [`PROTO_MPBOND`] (routes and rules alike), so that
//! it can find and remove its own leftovers after a crash without touching anything else.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use super::Netlink;

/// The route protocol number of what mpbond installs (`ip route show proto 77`; unassigned in
/// iproute2's `rt_protos`).
pub const PROTO_MPBOND: u8 = 77;

/// The main routing table.
const RT_TABLE_MAIN: u32 = 254;

/// One address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    /// Interface index.
    pub index: u32,
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
}

/// An interface's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    /// Interface index.
    pub index: u32,
    /// Up, with carrier.
    pub running: bool,
    /// Packets received since it was created.
    pub rx_packets: u64,
    /// Bytes received since it was created.
    pub rx_bytes: u64,
    /// Packets sent since it was created.
    pub tx_packets: u64,
    /// Bytes sent since it was created.
    pub tx_bytes: u64,
}

/// A default route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRoute {
    /// Output interface.
    pub oif: u32,
    /// Next hop, if any (a point-to-point link has none).
    pub gateway: Option<IpAddr>,
    /// Metric (lower wins).
    pub metric: u32,
    /// IPv6 (else IPv4).
    pub v6: bool,
}

/// What a rule matches and where it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Priority (lower runs first; the main table's rule is 32766).
    pub priority: u32,
    /// Source prefix to match.
    pub from: Option<(IpAddr, u8)>,
    /// Firewall mark to match.
    pub fwmark: Option<u32>,
    /// The table to look up.
    pub table: u32,
}

/// A route mpbond installs in one of its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// The table.
    pub table: u32,
    /// Next hop (none: directly on the link).
    pub gateway: Option<IpAddr>,
    /// Output interface.
    pub oif: u32,
    /// `local` route (deliver to this host: what TPROXY needs), else unicast route.
    pub local: bool,
    /// Destination prefix; `None`: the default route.
    pub dst: Option<(IpAddr, u8)>,
}

fn family(v6: bool) -> AddressFamily {
    if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

/// The `NETLINK_ROUTE` socket.
#[derive(Debug)]
pub struct RouteSocket(Netlink);

impl RouteSocket {
    /// Opens it.
    pub fn open() -> io::Result<Self> {
        Ok(Self(Netlink::new(NETLINK_ROUTE)?))
    }

    /// Every address of every interface.
    pub fn addresses(&mut self) -> io::Result<Vec<IfAddr>> {
        let msgs = self.0.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            // IPv4 puts the interface's own address in Local (Address is the peer's on a
            // point-to-point link); IPv6 only has Address.
            let local = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = local.or_else(|| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(addr) = addr {
                out.push(IfAddr {
                    index: a.header.index,
                    addr,
                    prefix: a.header.prefix_len,
                });
            }
        }
        Ok(out)
    }

    /// Every interface: its index, whether it runs (administratively up with carrier:
    /// `IFF_UP`, `IFF_RUNNING`, `IFF_LOWER_UP`) and the packets it received so far.
    pub fn links(&mut self) -> io::Result<Vec<LinkState>> {
        use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
        let msgs = self.0.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => {
                    let stats = l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::Stats64(s) => Some(s),
                        _ => None,
                    });
                    Some(LinkState {
                        index: l.header.index,
                        running: l
                            .header
                            .flags
                            .contains(LinkFlags::Up | LinkFlags::Running | LinkFlags::LowerUp),
                        rx_packets: stats.map_or(0, |s| s.rx_packets),
                        rx_bytes: stats.map_or(0, |s| s.rx_bytes),
                        tx_packets: stats.map_or(0, |s| s.tx_packets),
                        tx_bytes: stats.map_or(0, |s| s.tx_bytes),
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Deletes the neighbour entries of interface `index` that are still being resolved or
    /// failed (ARP, NDP), so that the next packet asks afresh at once instead of waiting for
    /// the kernel's retry (a second): for a line whose link just came back. Returns how many.
    pub fn flush_unresolved_neighbours(&mut self, index: u32) -> io::Result<usize> {
        use netlink_packet_route::neighbour::{NeighbourMessage, NeighbourState};
        let mut n = 0;
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = NeighbourMessage::default();
            q.header.family = family;
            let msgs = self
                .0
                .request(RouteNetlinkMessage::GetNeighbour(q), NLM_F_DUMP)?;
            for m in msgs {
                let RouteNetlinkMessage::NewNeighbour(nb) = m else {
                    continue;
                };
                if nb.header.ifindex != index
                    || !matches!(
                        nb.header.state,
                        NeighbourState::Incomplete | NeighbourState::Failed
                    )
                {
                    continue;
                }
                if self
                    .0
                    .request(RouteNetlinkMessage::DelNeighbour(nb), 0)
                    .is_ok()
                {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// The default routes of the main table, both families.
    pub fn default_routes(&mut self) -> io::Result<Vec<DefaultRoute>> {
        self.default_routes_in(RT_TABLE_MAIN)
    }

    /// The default routes of table `table`.
    pub fn default_routes_in(&mut self, table: u32) -> io::Result<Vec<DefaultRoute>> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            let mut q = RouteMessage::default();
            q.header.address_family = family(v6);
            let msgs = self
                .0
                .request(RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP)?;
            for m in msgs {
                let RouteNetlinkMessage::NewRoute(r) = m else {
                    continue;
                };
                if r.header.destination_prefix_length != 0 || r.header.kind != RouteType::Unicast {
                    continue;
                }
                let table_of = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                });
                if table_of.unwrap_or(u32::from(r.header.table)) != table {
                    continue;
                }
                let mut d = DefaultRoute {
                    oif: 0,
                    gateway: None,
                    metric: 0,
                    v6,
                };
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Oif(i) => d.oif = *i,
                        RouteAttribute::Priority(p) => d.metric = *p,
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => {
                            d.gateway = Some(IpAddr::V4(*g));
                        }
                        RouteAttribute::Gateway(RouteAddress::Inet6(g)) => {
                            d.gateway = Some(IpAddr::V6(*g));
                        }
                        _ => {}
                    }
                }
                if d.oif != 0 {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    fn route_message(r: &Route) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = family(r.v6);
        m.header.table = u8::try_from(r.table).unwrap_or(0);
        m.header.protocol = RouteProtocol::from(PROTO_MPBOND);
        if r.local {
            m.header.kind = RouteType::Local;
            m.header.scope = RouteScope::Host;
        } else {
            m.header.kind = RouteType::Unicast;
            m.header.scope = if r.gateway.is_some() {
                RouteScope::Universe
            } else {
                RouteScope::Link
            };
        }
        m.attributes.push(RouteAttribute::Table(r.table));
        if let Some((ip, len)) = r.dst {
            m.header.destination_prefix_length = len;
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(ip)));
        }
        m.attributes.push(RouteAttribute::Oif(r.oif));
        if let Some(g) = r.gateway {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(g)));
        }
        m
    }

    /// Adds (or replaces) a route in a table of mpbond's.
    pub fn add_route(&mut self, r: &Route) -> io::Result<()> {
        let m = Self::route_message(r);
        self.0
            .request(
                RouteNetlinkMessage::NewRoute(m),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
            .map(drop)
    }

    /// Removes it.
    pub fn del_route(&mut self, r: &Route) -> io::Result<()> {
        let m = Self::route_message(r);
        self.0
            .request(RouteNetlinkMessage::DelRoute(m), 0)
            .map(drop)
    }

    fn rule_message(r: &Rule) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = family(r.v6);
        m.header.action = RuleAction::ToTable;
        m.header.table = u8::try_from(r.table).unwrap_or(0);
        m.attributes.push(RuleAttribute::Priority(r.priority));
        m.attributes.push(RuleAttribute::Table(r.table));
        m.attributes
            .push(RuleAttribute::Protocol(RouteProtocol::from(PROTO_MPBOND)));
        if let Some((ip, len)) = r.from {
            m.header.src_len = len;
            m.attributes.push(RuleAttribute::Source(ip));
        }
        if let Some(mark) = r.fwmark {
            m.attributes.push(RuleAttribute::FwMark(mark));
            m.attributes.push(RuleAttribute::FwMask(u32::MAX));
        }
        m
    }

    /// Adds a policy rule (`EEXIST` if the same rule is there).
    pub fn add_rule(&mut self, r: &Rule) -> io::Result<()> {
        self.0
            .request(
                RouteNetlinkMessage::NewRule(Self::rule_message(r)),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map(drop)
    }

    /// Removes a policy rule.
    pub fn del_rule(&mut self, r: &Rule) -> io::Result<()> {
        self.0
            .request(RouteNetlinkMessage::DelRule(Self::rule_message(r)), 0)
            .map(drop)
    }

    /// Removes every rule and every route that carries mpbond's protocol number (what a crashed
    /// run left); returns how many.
    pub fn remove_leftovers(&mut self) -> io::Result<usize> {
        let mut n = 0;
        for v6 in [false, true] {
            let mut q = RuleMessage::default();
            q.header.family = family(v6);
            for m in self
                .0
                .request(RouteNetlinkMessage::GetRule(q), NLM_F_DUMP)?
            {
                let RouteNetlinkMessage::NewRule(r) = m else {
                    continue;
                };
                let ours = r.attributes.iter().any(
                    |a| matches!(a, RuleAttribute::Protocol(p) if u8::from(*p) == PROTO_MPBOND),
                );
                if ours && self.0.request(RouteNetlinkMessage::DelRule(r), 0).is_ok() {
                    n += 1;
                }
            }
            let mut q = RouteMessage::default();
            q.header.address_family = family(v6);
            for m in self
                .0
                .request(RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP)?
            {
                let RouteNetlinkMessage::NewRoute(r) = m else {
                    continue;
                };
                if u8::from(r.header.protocol) == PROTO_MPBOND
                    && self.0.request(RouteNetlinkMessage::DelRoute(r), 0).is_ok()
                {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}
