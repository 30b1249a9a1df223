//! The events of the kernel's MPTCP path manager: the multicast group `mptcp_pm_events` of the
//! generic netlink family `mptcp_pm` (uapi `linux/mptcp_pm.h`, `enum mptcp_event_type` and
//! `enum mptcp_event_attr`). A userspace path manager learns from them that a connection was
//! established (and may get subflows), that a subflow came or went, and what the peer announced.
//!
//! [`Event::parse`] reads one event from its attributes and never panics; [`EventSocket`] is the
//! subscribed socket, non-blocking, for a poll loop.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{NetlinkBuffer, NlasIterator};
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_GENERIC;

use super::mptcp_pm::PathManager;

/// The name of the multicast group.
pub const GROUP: &str = "mptcp_pm_events";

/// What happened (`MPTCP_EVENT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A connection was created (its SYN sent or received).
    Created,
    /// A connection is established: it may get subflows.
    Established,
    /// A connection is gone.
    Closed,
    /// The peer announced an address (`ADD_ADDR`).
    Announced,
    /// The peer withdrew an address (`REMOVE_ADDR`).
    Removed,
    /// A subflow is established.
    SubEstablished,
    /// A subflow closed (or failed to open).
    SubClosed,
    /// A subflow's backup flag changed (`MP_PRIO`).
    SubPriority,
    /// A listener for joins was created.
    ListenerCreated,
    /// A listener for joins was closed.
    ListenerClosed,
    /// An event this program does not know.
    Other(u8),
}

impl Kind {
    fn from_cmd(cmd: u8) -> Self {
        match cmd {
            1 => Self::Created,
            2 => Self::Established,
            3 => Self::Closed,
            6 => Self::Announced,
            7 => Self::Removed,
            10 => Self::SubEstablished,
            11 => Self::SubClosed,
            13 => Self::SubPriority,
            15 => Self::ListenerCreated,
            16 => Self::ListenerClosed,
            n => Self::Other(n),
        }
    }
}

/// Event attributes (`MPTCP_ATTR_*`).
mod attr {
    pub const TOKEN: u16 = 1;
    // 2 is the family: that of the addresses, so not read.
    pub const LOC_ID: u16 = 3;
    pub const REM_ID: u16 = 4;
    pub const SADDR4: u16 = 5;
    pub const SADDR6: u16 = 6;
    pub const DADDR4: u16 = 7;
    pub const DADDR6: u16 = 8;
    pub const SPORT: u16 = 9;
    pub const DPORT: u16 = 10;
    pub const BACKUP: u16 = 11;
    pub const ERROR: u16 = 12;
    pub const FLAGS: u16 = 13;
    pub const IF_IDX: u16 = 15;
    pub const SERVER_SIDE: u16 = 18;
}

/// One event, with the attributes the kernel gave (which depend on the kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: Kind,
    /// The connection's local token (0 for listener events).
    pub token: u32,
    /// Local address id (subflow events).
    pub loc_id: Option<u8>,
    /// Remote address id (subflow events, `Announced`, `Removed`).
    pub rem_id: Option<u8>,
    /// Local address and port (`saddr`, `sport`).
    pub local: Option<SocketAddr>,
    /// Remote address and port (`daddr`, `dport`; for `Announced`, the announced address).
    pub remote: Option<SocketAddr>,
    /// The subflow is a backup.
    pub backup: bool,
    /// The subflow's error (`sk_err`), if it closed on one.
    pub error: Option<u32>,
    /// The subflow's interface.
    pub ifindex: Option<u32>,
    /// We are the server side of the connection.
    pub server_side: bool,
    /// The peer set the C flag in its `MP_CAPABLE` (RFC 8684 §3.1): no subflow may be opened to
    /// its initial address and port (`created` and `established`, Linux 6.17 and later).
    pub deny_join_id0: bool,
}

/// `MPTCP_PM_EV_FLAG_DENY_JOIN_ID0` in the `flags` attribute.
const EV_FLAG_DENY_JOIN_ID0: u16 = 1;
/// `MPTCP_PM_EV_FLAG_SERVER_SIDE` in the `flags` attribute.
const EV_FLAG_SERVER_SIDE: u16 = 2;

/// An event that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The attributes are malformed.
    #[error("malformed mptcp_pm event attribute")]
    Malformed,
    /// An attribute is shorter than its type.
    #[error("mptcp_pm event attribute {0} is too short")]
    Short(u16),
}

fn bytes<const N: usize>(kind: u16, v: &[u8]) -> Result<[u8; N], EventError> {
    v.get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or(EventError::Short(kind))
}

impl Event {
    /// Reads an event from its command (`cmd` of the generic netlink header) and the
    /// attributes that follow the header. Addresses and ports are in network order, the other
    /// integers in host order, as the kernel puts them.
    pub fn parse(cmd: u8, attrs: &[u8]) -> Result<Self, EventError> {
        let mut e = Self {
            kind: Kind::from_cmd(cmd),
            token: 0,
            loc_id: None,
            rem_id: None,
            local: None,
            remote: None,
            backup: false,
            error: None,
            ifindex: None,
            server_side: false,
            deny_join_id0: false,
        };
        let (mut saddr, mut daddr, mut sport, mut dport) = (None, None, 0u16, 0u16);
        for nla in NlasIterator::new(attrs) {
            let nla = nla.map_err(|_| EventError::Malformed)?;
            let k = nla.kind() & 0x3fff;
            let v = nla.value();
            match k {
                attr::TOKEN => e.token = u32::from_ne_bytes(bytes(k, v)?),
                attr::LOC_ID => e.loc_id = Some(bytes::<1>(k, v)?[0]),
                attr::REM_ID => e.rem_id = Some(bytes::<1>(k, v)?[0]),
                attr::SADDR4 => saddr = Some(IpAddr::V4(Ipv4Addr::from(bytes::<4>(k, v)?))),
                attr::SADDR6 => saddr = Some(IpAddr::V6(Ipv6Addr::from(bytes::<16>(k, v)?))),
                attr::DADDR4 => daddr = Some(IpAddr::V4(Ipv4Addr::from(bytes::<4>(k, v)?))),
                attr::DADDR6 => daddr = Some(IpAddr::V6(Ipv6Addr::from(bytes::<16>(k, v)?))),
                attr::SPORT => sport = u16::from_be_bytes(bytes(k, v)?),
                attr::DPORT => dport = u16::from_be_bytes(bytes(k, v)?),
                attr::BACKUP => e.backup = bytes::<1>(k, v)?[0] != 0,
                // One byte (`sk_err` as u8) in the kernels that send it; four are read too.
                attr::ERROR => {
                    e.error = Some(match v.len() {
                        0 => return Err(EventError::Short(k)),
                        1..=3 => u32::from(v[0]),
                        _ => u32::from_ne_bytes(bytes(k, v)?),
                    });
                }
                attr::IF_IDX => {
                    e.ifindex = u32::try_from(i32::from_ne_bytes(bytes(k, v)?))
                        .ok()
                        .filter(|&i| i != 0);
                }
                attr::SERVER_SIDE => e.server_side |= bytes::<1>(k, v)?[0] != 0,
                // A u16 of flags; a kernel that sends one byte is read too.
                attr::FLAGS => {
                    let flags = match v.len() {
                        0 => return Err(EventError::Short(k)),
                        1 => u16::from(v[0]),
                        _ => u16::from_ne_bytes(bytes(k, v)?),
                    };
                    e.deny_join_id0 |= flags & EV_FLAG_DENY_JOIN_ID0 != 0;
                    e.server_side |= flags & EV_FLAG_SERVER_SIDE != 0;
                }
                // The family is that of the addresses; the rest is not used here.
                _ => {}
            }
        }
        // A dual-stack listener's IPv4 peers come as v4-mapped IPv6: use their IPv4 form.
        e.local = saddr.map(|a| SocketAddr::new(a.to_canonical(), sport));
        e.remote = daddr.map(|a| SocketAddr::new(a.to_canonical(), dport));
        Ok(e)
    }
}

/// Reads the events out of one datagram of the group: each netlink message of it in turn,
/// skipping what is not an event of `family`.
#[must_use]
pub fn parse_datagram(family: u16, mut data: &[u8]) -> Vec<Result<Event, EventError>> {
    let mut out = Vec::new();
    while let Ok(buf) = NetlinkBuffer::new_checked(data) {
        let len = usize::try_from(buf.length()).unwrap_or(usize::MAX);
        if buf.message_type() == family {
            // The generic netlink header: cmd, version, reserved (4 bytes).
            let payload = buf.payload();
            match payload.get(4..) {
                Some(attrs) => out.push(Event::parse(payload[0], attrs)),
                None => out.push(Err(EventError::Malformed)),
            }
        }
        match data.get(len.next_multiple_of(4)..) {
            Some(rest) if len > 0 => data = rest,
            _ => break,
        }
    }
    out
}

/// A socket subscribed to the path manager's events, non-blocking.
#[derive(Debug)]
pub struct EventSocket {
    socket: Socket,
    family: u16,
}

impl EventSocket {
    /// Subscribes (needs `CAP_NET_ADMIN`).
    pub fn open() -> io::Result<Self> {
        let (family, group) = PathManager::open()?.ids();
        let group = group.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no mptcp_pm_events multicast group",
            )
        })?;
        let mut socket = Socket::new(NETLINK_GENERIC)?;
        socket.bind_auto()?;
        // A burst of connections makes a burst of events: room for a few thousand.
        let _ = socket.set_rx_buf_sz(4 << 20);
        socket.add_membership(group)?;
        socket.set_non_blocking(true)?;
        Ok(Self { socket, family })
    }

    /// The events received so far (none: nothing waiting). `Err` with `ENOBUFS` means the
    /// kernel dropped events because we were too slow.
    pub fn recv(&mut self) -> io::Result<Vec<Event>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match self.socket.recv(&mut &mut buf[..], 0) {
                Ok(n) => {
                    for e in parse_datagram(self.family, &buf[..n.min(buf.len())]) {
                        match e {
                            Ok(e) => out.push(e),
                            Err(err) => tracing::debug!("mptcp_pm event: {err}"),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => return Ok(out),
            }
        }
    }
}

impl AsRawFd for EventSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, v: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + v.len()).unwrap();
        let mut b = [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
        b.extend_from_slice(v);
        b.resize(b.len().next_multiple_of(4), 0);
        b
    }

    #[test]
    fn a_subflow_event_is_read_with_network_order_addresses() {
        let mut a = Vec::new();
        a.extend(nla(attr::TOKEN, &0xdead_beef_u32.to_ne_bytes()));
        a.extend(nla(2, &2u16.to_ne_bytes()));
        a.extend(nla(attr::LOC_ID, &[3]));
        a.extend(nla(attr::REM_ID, &[0]));
        a.extend(nla(attr::SADDR4, &[10, 1, 0, 2]));
        a.extend(nla(attr::DADDR4, &[198, 51, 100, 1]));
        a.extend(nla(attr::SPORT, &40000u16.to_be_bytes()));
        a.extend(nla(attr::DPORT, &7000u16.to_be_bytes()));
        a.extend(nla(attr::BACKUP, &[1]));
        a.extend(nla(attr::IF_IDX, &5i32.to_ne_bytes()));
        a.extend(nla(attr::ERROR, &[110]));
        let e = Event::parse(11, &a).unwrap();
        assert_eq!(e.kind, Kind::SubClosed);
        assert_eq!(e.token, 0xdead_beef);
        assert_eq!((e.loc_id, e.rem_id), (Some(3), Some(0)));
        assert_eq!(e.local, Some("10.1.0.2:40000".parse().unwrap()));
        assert_eq!(e.remote, Some("198.51.100.1:7000".parse().unwrap()));
        assert!(e.backup && !e.server_side);
        assert_eq!((e.ifindex, e.error), (Some(5), Some(110)));
    }

    #[test]
    fn the_c_flag_and_the_server_side_are_read_from_the_flags() {
        let mut a = nla(attr::TOKEN, &7u32.to_ne_bytes());
        a.extend(nla(attr::FLAGS, &1u16.to_ne_bytes()));
        let e = Event::parse(2, &a).unwrap();
        assert!(e.deny_join_id0 && !e.server_side);
        let e = Event::parse(2, &nla(attr::FLAGS, &2u16.to_ne_bytes())).unwrap();
        assert!(!e.deny_join_id0 && e.server_side);
        let e = Event::parse(2, &nla(attr::TOKEN, &7u32.to_ne_bytes())).unwrap();
        assert!(!e.deny_join_id0, "no flags, no C flag");
        assert_eq!(
            Event::parse(2, &nla(attr::FLAGS, &[])),
            Err(EventError::Short(attr::FLAGS))
        );
    }

    #[test]
    fn v4_mapped_addresses_are_read_as_ipv4() {
        let mut a = nla(
            attr::SADDR6,
            &"::ffff:198.51.100.1".parse::<Ipv6Addr>().unwrap().octets(),
        );
        a.extend(nla(attr::SPORT, &7000u16.to_be_bytes()));
        let e = Event::parse(2, &a).unwrap();
        assert_eq!(e.local, Some("198.51.100.1:7000".parse().unwrap()));
    }

    #[test]
    fn short_and_malformed_attributes_are_errors() {
        assert_eq!(
            Event::parse(2, &nla(attr::TOKEN, &[1, 2])),
            Err(EventError::Short(attr::TOKEN))
        );
        assert_eq!(
            Event::parse(2, &nla(attr::SADDR6, &[0; 8])),
            Err(EventError::Short(attr::SADDR6))
        );
        assert!(Event::parse(2, &[200, 0, 1, 0, 0]).is_err());
        let e = Event::parse(99, &[]).unwrap();
        assert_eq!(e.kind, Kind::Other(99));
    }

    #[test]
    fn a_datagram_of_two_messages_gives_two_events() {
        let family: u16 = 0x1c;
        let mut d = Vec::new();
        for (cmd, token) in [(2u8, 7u32), (3, 8)] {
            let attrs = nla(attr::TOKEN, &token.to_ne_bytes());
            let len = u32::try_from(16 + 4 + attrs.len()).unwrap();
            d.extend(len.to_ne_bytes());
            d.extend(family.to_ne_bytes());
            d.extend([0u8; 10]);
            d.extend([cmd, 1, 0, 0]);
            d.extend(attrs);
        }
        let got: Vec<_> = parse_datagram(family, &d)
            .into_iter()
            .map(|e| e.map(|e| (e.kind, e.token)))
            .collect();
        assert_eq!(got, vec![Ok((Kind::Established, 7)), Ok((Kind::Closed, 8))]);
        assert!(parse_datagram(family + 1, &d).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(cmd: u8, data: Vec<u8>) {
            let _ = Event::parse(cmd, &data);
            let _ = parse_datagram(0x1c, &data);
        }
    }
}
