//! Netlink, synchronously: the kernel configuration mpbond does (routes, rules, addresses, MPTCP
//! endpoints and limits) is a handful of request/acknowledge exchanges at start and at exit, and
//! doing them without an async runtime lets cleanup run anywhere, also from `Drop`.
//!
//! - [`route`]: `NETLINK_ROUTE` (routes, policy rules, addresses), with `netlink-packet-route`.
//! - [`mptcp_pm`]: the generic netlink family `mptcp_pm` (endpoints, limits), typed here.

pub mod mptcp_pm;
pub mod route;

use std::fmt::Debug;
use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr};

/// A netlink socket that sends one request at a time and collects its answer.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// A socket of `protocol` (`netlink_sys::protocols::NETLINK_ROUTE`, `NETLINK_GENERIC`).
    pub fn new(protocol: isize) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Ask for extended acknowledgements: the kernel's message for a refused request.
        let _ = socket.set_ext_ack(true);
        Ok(Self { socket, seq: 0 })
    }

    /// Sends `payload` with `flags` (besides `NLM_F_REQUEST`, and `NLM_F_ACK` unless it is a
    /// dump) and returns the messages of the answer. A refusal is the kernel's errno.
    pub fn request<T>(&mut self, payload: T, flags: u16) -> io::Result<Vec<T>>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut rest = &data[..];
            while !rest.is_empty() {
                let reply = NetlinkMessage::<T>::deserialize(rest)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = usize::try_from(reply.header.length).unwrap_or(usize::MAX);
                if len == 0 || len > rest.len() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "netlink length"));
                }
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::mptcp_pm::{Endpoint, Limits, PathManager, flag};
    use super::route::{Route, RouteSocket, Rule};
    use crate::lab::testing::in_private_netns;

    #[test]
    fn endpoints_and_limits_round_trip_through_the_kernel() {
        in_private_netns("endpoints_and_limits_round_trip_through_the_kernel", || {
            let mut pm = PathManager::open().expect("mptcp_pm family");
            assert!(pm.endpoints().unwrap().is_empty());
            let ep = Endpoint {
                id: 7,
                addr: "10.9.9.9".parse().unwrap(),
                port: 0,
                flags: flag::SUBFLOW | flag::BACKUP,
                ifindex: Some(1),
            };
            pm.add_endpoint(&ep).unwrap();
            let v6 = Endpoint {
                id: 0,
                addr: "fd00:9::9".parse().unwrap(),
                port: 0,
                flags: flag::SIGNAL,
                ifindex: None,
            };
            pm.add_endpoint(&v6).unwrap();
            let got = pm.endpoints().unwrap();
            assert_eq!(got.len(), 2, "{got:?}");
            assert!(got.contains(&ep), "{got:?}");
            let got6 = got.iter().find(|e| e.addr == v6.addr).unwrap();
            assert_eq!((got6.flags, got6.ifindex), (flag::SIGNAL, None));
            assert_ne!(got6.id, 0, "the kernel chose an id");
            let dup = pm.add_endpoint(&ep).unwrap_err();
            assert!(
                matches!(dup.raw_os_error(), Some(libc::EEXIST | libc::EBUSY)),
                "{dup}"
            );
            pm.del_endpoint(&ep).unwrap();
            assert_eq!(pm.endpoints().unwrap().len(), 1);

            let l = Limits {
                subflows: 4,
                add_addr_accepted: 3,
            };
            pm.set_limits(l).unwrap();
            assert_eq!(pm.limits().unwrap(), l);
            let too_many = pm.set_limits(Limits {
                subflows: 99,
                add_addr_accepted: 0,
            });
            assert!(too_many.is_err(), "the kernel caps limits at 8");
        });
    }

    #[test]
    fn rules_and_routes_are_added_found_and_removed() {
        in_private_netns("rules_and_routes_are_added_found_and_removed", || {
            let mut rt = RouteSocket::open().unwrap();
            let addrs = rt.addresses().unwrap();
            assert!(addrs.iter().any(|a| a.addr == IpAddr::from([127, 0, 0, 1])));
            let rule = Rule {
                v6: false,
                priority: 4242,
                from: Some(("10.9.9.9".parse().unwrap(), 32)),
                fwmark: None,
                table: 4242,
            };
            let mark = Rule {
                v6: true,
                priority: 4243,
                from: None,
                fwmark: Some(0x4d),
                table: 4243,
            };
            rt.add_rule(&rule).unwrap();
            rt.add_rule(&mark).unwrap();
            let again = rt.add_rule(&rule).unwrap_err();
            assert_eq!(again.raw_os_error(), Some(libc::EEXIST));
            let local = Route {
                v6: false,
                table: 4242,
                gateway: None,
                oif: 1,
                local: true,
                dst: None,
            };
            let local6 = Route {
                v6: true,
                table: 4243,
                ..local
            };
            rt.add_route(&local).unwrap();
            rt.add_route(&local6).unwrap();
            let shown = std::process::Command::new("ip")
                .args(["rule", "show"])
                .output()
                .unwrap();
            let shown = String::from_utf8_lossy(&shown.stdout);
            assert!(
                shown.contains("from 10.9.9.9 lookup 4242 proto 77"),
                "{shown}"
            );
            rt.del_rule(&rule).unwrap();
            // The rest is found by its protocol number, as after a crash.
            assert_eq!(rt.remove_leftovers().unwrap(), 3);
            assert_eq!(rt.remove_leftovers().unwrap(), 0);
        });
    }
}
