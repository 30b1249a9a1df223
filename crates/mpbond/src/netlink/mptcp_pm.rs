//! The kernel's MPTCP path manager over generic netlink (family `mptcp_pm`, version 1): the
//! endpoints and limits of the in-kernel path manager, typed. Constants are those of the
//! kernel's uapi `linux/mptcp_pm.h` (6.7+; the same values in older kernels' `linux/mptcp.h`).
//!
//! An endpoint is a local address the in-kernel path manager may use: with `subflow` it opens an
//! extra subflow from it on each connection (what a gateway needs per WAN line), with `signal`
//! it announces it (`ADD_ADDR`, what a server with several addresses does), with `backup` its
//! subflows carry data only when no other subflow can (`MP_PRIO`, RFC 8684 §3.3.8).
//!
//! With `net.mptcp.pm_type=1` the kernel leaves every connection of the network namespace to a
//! userspace path manager, which drives each connection by its token: [`PathManager::announce`]
//! (`ADD_ADDR`), [`PathManager::remove`] (`REMOVE_ADDR`), [`PathManager::subflow_create`]
//! (`MP_JOIN`), [`PathManager::subflow_destroy`] and [`PathManager::set_backup`] (`MP_PRIO`). The
//! events it acts on are in [`super::pm_event`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLM_F_DUMP, Nla, NlaBuffer, NlasIterator, Parseable,
    ParseableParametrized,
};
use netlink_packet_generic::ctrl::nlas::{GenlCtrlAttrs, McastGrpAttrs};
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::protocols::NETLINK_GENERIC;

use super::Netlink;

/// Commands (`MPTCP_PM_CMD_*`).
pub mod cmd {
    /// Adds an endpoint.
    pub const ADD_ADDR: u8 = 1;
    /// Removes an endpoint.
    pub const DEL_ADDR: u8 = 2;
    /// Gets one endpoint, or dumps them all.
    pub const GET_ADDR: u8 = 3;
    /// Removes every endpoint.
    pub const FLUSH_ADDRS: u8 = 4;
    /// Sets the limits.
    pub const SET_LIMITS: u8 = 5;
    /// Gets the limits.
    pub const GET_LIMITS: u8 = 6;
    /// Changes an endpoint's flags (or a subflow's backup flag).
    pub const SET_FLAGS: u8 = 7;
    /// Userspace PM: announces a local address on a connection (`ADD_ADDR`).
    pub const ANNOUNCE: u8 = 8;
    /// Userspace PM: withdraws a local address id from a connection (`REMOVE_ADDR`).
    pub const REMOVE: u8 = 9;
    /// Userspace PM: opens a subflow (`MP_JOIN`).
    pub const SUBFLOW_CREATE: u8 = 10;
    /// Userspace PM: closes a subflow.
    pub const SUBFLOW_DESTROY: u8 = 11;
}

/// Endpoint flags (`MPTCP_PM_ADDR_FLAG_*`).
pub mod flag {
    /// Announce the address (`ADD_ADDR`).
    pub const SIGNAL: u32 = 1;
    /// Open a subflow from the address.
    pub const SUBFLOW: u32 = 2;
    /// Subflows from it are backups (`MP_PRIO`).
    pub const BACKUP: u32 = 4;
    /// A subflow to every address the peer announced.
    pub const FULLMESH: u32 = 8;
    /// Created by the kernel for an address in use.
    pub const IMPLICIT: u32 = 16;
}

/// Top-level attributes (`MPTCP_PM_ATTR_*`).
mod attr {
    pub const ADDR: u16 = 1;
    pub const RCV_ADD_ADDRS: u16 = 2;
    pub const SUBFLOWS: u16 = 3;
    pub const TOKEN: u16 = 4;
    pub const LOC_ID: u16 = 5;
    pub const ADDR_REMOTE: u16 = 6;
}

/// Endpoint attributes (`MPTCP_PM_ADDR_ATTR_*`), nested in [`attr::ADDR`].
mod addr_attr {
    pub const FAMILY: u16 = 1;
    pub const ID: u16 = 2;
    pub const ADDR4: u16 = 3;
    pub const ADDR6: u16 = 4;
    pub const PORT: u16 = 5;
    pub const FLAGS: u16 = 6;
    pub const IF_IDX: u16 = 7;
}

/// An endpoint of the in-kernel path manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its id (0: let the kernel choose).
    pub id: u8,
    /// The local address.
    pub addr: IpAddr,
    /// Port (0: any).
    pub port: u16,
    /// [`flag`] bits.
    pub flags: u32,
    /// The interface subflows from it are bound to (`dev`).
    pub ifindex: Option<u32>,
}

/// The in-kernel path manager's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Extra subflows per connection (kernel maximum 8).
    pub subflows: u32,
    /// Addresses announced by the peer that are used per connection (kernel maximum 8).
    pub add_addr_accepted: u32,
}

/// One nested endpoint attribute.
#[derive(Debug, Clone)]
enum AddrAttr {
    Family(u16),
    Id(u8),
    Addr4(Ipv4Addr),
    Addr6(Ipv6Addr),
    Port(u16),
    Flags(u32),
    IfIdx(i32),
}

impl Nla for AddrAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Id(_) => 1,
            Self::Family(_) | Self::Port(_) => 2,
            Self::Addr4(_) | Self::Flags(_) | Self::IfIdx(_) => 4,
            Self::Addr6(_) => 16,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Family(_) => addr_attr::FAMILY,
            Self::Id(_) => addr_attr::ID,
            Self::Addr4(_) => addr_attr::ADDR4,
            Self::Addr6(_) => addr_attr::ADDR6,
            Self::Port(_) => addr_attr::PORT,
            Self::Flags(_) => addr_attr::FLAGS,
            Self::IfIdx(_) => addr_attr::IF_IDX,
        }
    }

    fn emit_value(&self, b: &mut [u8]) {
        // Integers in host order; addresses in network order, as the kernel's policy says.
        match self {
            Self::Family(v) | Self::Port(v) => b[..2].copy_from_slice(&v.to_ne_bytes()),
            Self::Id(v) => b[0] = *v,
            Self::Addr4(a) => b[..4].copy_from_slice(&a.octets()),
            Self::Addr6(a) => b[..16].copy_from_slice(&a.octets()),
            Self::Flags(v) => b[..4].copy_from_slice(&v.to_ne_bytes()),
            Self::IfIdx(v) => b[..4].copy_from_slice(&v.to_ne_bytes()),
        }
    }
}

impl Endpoint {
    fn attrs(&self, with_flags: bool) -> Vec<AddrAttr> {
        let mut v = vec![];
        match self.addr {
            IpAddr::V4(a) => {
                v.push(AddrAttr::Family(u16::try_from(libc::AF_INET).unwrap_or(2)));
                v.push(AddrAttr::Addr4(a));
            }
            IpAddr::V6(a) => {
                v.push(AddrAttr::Family(
                    u16::try_from(libc::AF_INET6).unwrap_or(10),
                ));
                v.push(AddrAttr::Addr6(a));
            }
        }
        if self.id != 0 {
            v.push(AddrAttr::Id(self.id));
        }
        if self.port != 0 {
            v.push(AddrAttr::Port(self.port));
        }
        if with_flags {
            v.push(AddrAttr::Flags(self.flags));
            if let Some(i) = self.ifindex {
                v.push(AddrAttr::IfIdx(i32::try_from(i).unwrap_or(0)));
            }
        }
        v
    }

    fn parse(value: &[u8]) -> Result<Self, DecodeError> {
        let mut ep = Self {
            id: 0,
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            flags: 0,
            ifindex: None,
        };
        for nla in NlasIterator::new(value) {
            let nla = nla?;
            let v = nla.value();
            let arr = |n: usize| -> Result<&[u8], DecodeError> {
                v.get(..n)
                    .ok_or_else(|| DecodeError::from("short mptcp_pm attribute"))
            };
            match nla.kind() {
                addr_attr::ID => ep.id = arr(1)?[0],
                addr_attr::ADDR4 => {
                    let b: [u8; 4] = arr(4)?.try_into().unwrap_or_default();
                    ep.addr = IpAddr::V4(Ipv4Addr::from(b));
                }
                addr_attr::ADDR6 => {
                    let b: [u8; 16] = arr(16)?.try_into().unwrap_or_default();
                    ep.addr = IpAddr::V6(Ipv6Addr::from(b));
                }
                addr_attr::PORT => {
                    ep.port = u16::from_ne_bytes(arr(2)?.try_into().unwrap_or_default());
                }
                addr_attr::FLAGS => {
                    ep.flags = u32::from_ne_bytes(arr(4)?.try_into().unwrap_or_default());
                }
                addr_attr::IF_IDX => {
                    let i = i32::from_ne_bytes(arr(4)?.try_into().unwrap_or_default());
                    ep.ifindex = u32::try_from(i).ok().filter(|&i| i != 0);
                }
                _ => {}
            }
        }
        Ok(ep)
    }
}

/// A top-level attribute.
#[derive(Debug, Clone)]
enum PmAttr {
    /// An endpoint (nested), with or without its flags.
    Addr(Vec<AddrAttr>),
    /// The remote end of a subflow (nested).
    Remote(Vec<AddrAttr>),
    U32(u16, u32),
    U8(u16, u8),
    Other(DefaultNla),
}

impl Nla for PmAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Addr(v) | Self::Remote(v) => v.as_slice().buffer_len(),
            Self::U32(..) => 4,
            Self::U8(..) => 1,
            Self::Other(a) => a.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Addr(_) => attr::ADDR,
            Self::Remote(_) => attr::ADDR_REMOTE,
            Self::U32(k, _) | Self::U8(k, _) => *k,
            Self::Other(a) => a.kind(),
        }
    }

    fn is_nested(&self) -> bool {
        matches!(self, Self::Addr(_) | Self::Remote(_))
    }

    fn emit_value(&self, b: &mut [u8]) {
        match self {
            Self::Addr(v) | Self::Remote(v) => v.as_slice().emit(b),
            Self::U32(_, x) => b[..4].copy_from_slice(&x.to_ne_bytes()),
            Self::U8(_, x) => b[0] = *x,
            Self::Other(a) => a.emit_value(b),
        }
    }
}

/// A `mptcp_pm` message.
#[derive(Debug, Clone)]
pub struct PmMessage {
    cmd: u8,
    attrs: Vec<PmAttr>,
}

impl GenlFamily for PmMessage {
    fn family_name() -> &'static str {
        "mptcp_pm"
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        1
    }
}

impl Emitable for PmMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, b: &mut [u8]) {
        self.attrs.as_slice().emit(b);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for PmMessage {
    fn parse_with_param(b: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let mut attrs = Vec::new();
        for nla in NlasIterator::new(b) {
            let nla: NlaBuffer<&[u8]> = nla?;
            attrs.push(PmAttr::Other(DefaultNla::parse(&nla)?));
        }
        Ok(Self {
            cmd: header.cmd,
            attrs,
        })
    }
}

impl PmMessage {
    fn endpoint(&self) -> Option<Result<Endpoint, DecodeError>> {
        self.attrs.iter().find_map(|a| match a {
            PmAttr::Other(n) if n.kind() & 0x3fff == attr::ADDR => {
                let mut v = vec![0; n.value_len()];
                n.emit_value(&mut v);
                Some(Endpoint::parse(&v))
            }
            _ => None,
        })
    }

    fn u32_attr(&self, kind: u16) -> Option<u32> {
        self.attrs.iter().find_map(|a| match a {
            PmAttr::Other(n) if n.kind() & 0x3fff == kind && n.value_len() >= 4 => {
                let mut v = [0u8; 4];
                n.emit_value(&mut v);
                Some(u32::from_ne_bytes(v))
            }
            _ => None,
        })
    }
}

/// The nested attributes of one end of a subflow: family, address, port (0: any).
fn sockaddr_attrs(addr: SocketAddr) -> Vec<AddrAttr> {
    let mut v = Endpoint {
        id: 0,
        addr: addr.ip(),
        port: addr.port(),
        flags: 0,
        ifindex: None,
    }
    .attrs(false);
    v.retain(|a| !matches!(a, AddrAttr::Id(_)));
    v
}

/// The path manager's netlink socket.
#[derive(Debug)]
pub struct PathManager {
    nl: Netlink,
    family: u16,
    /// The id of the `mptcp_pm_events` multicast group.
    events_group: Option<u32>,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl PathManager {
    /// Opens the socket and resolves the family (`ENOENT`: this kernel has no MPTCP).
    pub fn open() -> io::Result<Self> {
        let mut nl = Netlink::new(NETLINK_GENERIC)?;
        let q = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(
                PmMessage::family_name().to_owned(),
            )],
        });
        let attrs: Vec<GenlCtrlAttrs> = nl
            .request(q, 0)?
            .into_iter()
            .flat_map(|m| m.payload.nlas)
            .collect();
        let family = attrs
            .iter()
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no mptcp_pm family"))?;
        let events_group = attrs.iter().find_map(|a| match a {
            GenlCtrlAttrs::McastGroups(groups) => groups.iter().find_map(|g| {
                let named = g
                    .iter()
                    .any(|x| matches!(x, McastGrpAttrs::Name(n) if n == super::pm_event::GROUP));
                g.iter().find_map(|x| match x {
                    McastGrpAttrs::Id(id) if named => Some(*id),
                    _ => None,
                })
            }),
            _ => None,
        });
        Ok(Self {
            nl,
            family,
            events_group,
        })
    }

    /// The family id and the events group (to subscribe an event socket).
    pub(super) fn ids(&self) -> (u16, Option<u32>) {
        (self.family, self.events_group)
    }

    fn request(&mut self, cmd: u8, attrs: Vec<PmAttr>, flags: u16) -> io::Result<Vec<PmMessage>> {
        let mut m = GenlMessage::from_payload(PmMessage { cmd, attrs });
        m.set_resolved_family_id(self.family);
        Ok(self
            .nl
            .request(m, flags)?
            .into_iter()
            .map(|g| g.payload)
            .collect())
    }

    /// The endpoints.
    pub fn endpoints(&mut self) -> io::Result<Vec<Endpoint>> {
        self.request(cmd::GET_ADDR, vec![], NLM_F_DUMP)?
            .iter()
            .filter_map(PmMessage::endpoint)
            .map(|r| r.map_err(invalid))
            .collect()
    }

    /// Adds an endpoint (`EEXIST` or `EBUSY` if its address or id is taken).
    pub fn add_endpoint(&mut self, ep: &Endpoint) -> io::Result<()> {
        self.request(cmd::ADD_ADDR, vec![PmAttr::Addr(ep.attrs(true))], 0)
            .map(drop)
    }

    /// Removes an endpoint, by id (an id of 0 removes by address).
    pub fn del_endpoint(&mut self, ep: &Endpoint) -> io::Result<()> {
        self.request(cmd::DEL_ADDR, vec![PmAttr::Addr(ep.attrs(false))], 0)
            .map(drop)
    }

    /// The limits.
    pub fn limits(&mut self) -> io::Result<Limits> {
        let m = self.request(cmd::GET_LIMITS, vec![], 0)?;
        let get = |k| m.iter().find_map(|x| x.u32_attr(k)).unwrap_or(0);
        Ok(Limits {
            subflows: get(attr::SUBFLOWS),
            add_addr_accepted: get(attr::RCV_ADD_ADDRS),
        })
    }

    /// Sets the limits.
    pub fn set_limits(&mut self, l: Limits) -> io::Result<()> {
        let attrs = vec![
            PmAttr::U32(attr::RCV_ADD_ADDRS, l.add_addr_accepted),
            PmAttr::U32(attr::SUBFLOWS, l.subflows),
        ];
        self.request(cmd::SET_LIMITS, attrs, 0).map(drop)
    }

    /// Userspace PM: announces `local` (its id, address and optional port) to the peer of the
    /// connection `token` (`ADD_ADDR`, RFC 8684 §3.4.1).
    pub fn announce(&mut self, token: u32, local: &Endpoint) -> io::Result<()> {
        // The kernel wants the `SIGNAL` flag and a non-zero id.
        let ep = Endpoint {
            flags: local.flags | flag::SIGNAL,
            ..local.clone()
        };
        let attrs = vec![
            PmAttr::U32(attr::TOKEN, token),
            PmAttr::Addr(ep.attrs(true)),
        ];
        self.request(cmd::ANNOUNCE, attrs, 0).map(drop)
    }

    /// Userspace PM: withdraws the local address id `loc_id` from the connection `token`: the
    /// kernel closes our subflows from it and sends `REMOVE_ADDR` on another subflow (RFC 8684
    /// §3.4.2), so that the peer closes its side at once and reinjects what it had in flight
    /// there. Id 0 is the address of the initial subflow.
    pub fn remove(&mut self, token: u32, loc_id: u8) -> io::Result<()> {
        let attrs = vec![
            PmAttr::U32(attr::TOKEN, token),
            PmAttr::U8(attr::LOC_ID, loc_id),
        ];
        self.request(cmd::REMOVE, attrs, 0).map(drop)
    }

    /// Userspace PM: opens a subflow of the connection `token` from `local` (its id, address,
    /// interface and `BACKUP` flag) to `remote` (`MP_JOIN`, RFC 8684 §3.2).
    pub fn subflow_create(
        &mut self,
        token: u32,
        local: &Endpoint,
        remote: SocketAddr,
    ) -> io::Result<()> {
        let attrs = vec![
            PmAttr::U32(attr::TOKEN, token),
            PmAttr::Addr(local.attrs(true)),
            PmAttr::Remote(sockaddr_attrs(remote)),
        ];
        self.request(cmd::SUBFLOW_CREATE, attrs, 0).map(drop)
    }

    /// Userspace PM: closes the subflow `local` ↔ `remote` of the connection `token`.
    pub fn subflow_destroy(
        &mut self,
        token: u32,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> io::Result<()> {
        let attrs = vec![
            PmAttr::U32(attr::TOKEN, token),
            PmAttr::Addr(sockaddr_attrs(local)),
            PmAttr::Remote(sockaddr_attrs(remote)),
        ];
        self.request(cmd::SUBFLOW_DESTROY, attrs, 0).map(drop)
    }

    /// Userspace PM: marks the subflow `local` ↔ `remote` of `token` as a backup or not
    /// (`MP_PRIO`, RFC 8684 §3.3.8).
    pub fn set_backup(
        &mut self,
        token: u32,
        local: SocketAddr,
        remote: SocketAddr,
        backup: bool,
    ) -> io::Result<()> {
        let mut ep = sockaddr_attrs(local);
        ep.push(AddrAttr::Flags(if backup { flag::BACKUP } else { 0 }));
        let attrs = vec![
            PmAttr::U32(attr::TOKEN, token),
            PmAttr::Addr(ep),
            PmAttr::Remote(sockaddr_attrs(remote)),
        ];
        self.request(cmd::SET_FLAGS, attrs, 0).map(drop)
    }
}
