//! Netlink, synchronously: the kernel configuration mpbond does (routes, rules, addresses, MPTCP
//! endpoints and limits) is a handful of request/acknowledge exchanges at start and at exit, and
//! doing them without an async runtime lets cleanup run anywhere, also from `Drop`.
//!
//! - [`route`]: `NETLINK_ROUTE` (routes, policy rules, addresses), with `netlink-packet-route`.
//! - [`mptcp_pm`]: the generic netlink family `mptcp_pm` (endpoints, limits, and the userspace
//!   path manager's commands), typed here.
//! - [`pm_event`]: that family's events.
//! - [`sock_diag`]: the kernel's socket tables (what `ss` shows), for `mpbond status`.

pub mod mptcp_pm;
pub mod pm_event;
pub mod route;
pub mod sock_diag;

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

/// Hands MPTCP path management of the calling thread's network namespace to a userspace path
/// manager (`net.mptcp.pm_type=1`) until the returned change is dropped; recorded in the host
/// journal first, so that a crash cannot leave it so ([`crate::host`]).
///
/// # Errors
/// If the sysctl cannot be read or written (no MPTCP, not root).
pub fn userspace_pm() -> io::Result<crate::host::Change> {
    crate::host::Change::apply(crate::host::Setting::sysctl("net.mptcp.pm_type"), |_| {
        Some("1".to_owned())
    })
}

/// Linux's MPTCP blackhole detection turned off for as long as this lives.
///
/// Since Linux 6.12 a client's MPTCP SYN that goes unanswered twice is sent a third time
/// without `MP_CAPABLE` (`net.mptcp.syn_retrans_before_tcp_fallback`), and when that plain SYN
/// is answered the kernel concludes that a middlebox drops MPTCP and stops offering MPTCP on
/// *every* new connection of the network namespace for `net.mptcp.blackhole_timeout` seconds
/// (an hour, doubling on repeats; nstat `MPTcpExtBlackhole`). On a gateway, two SYNs lost to
/// a congested or failing line are common, and that conclusion would silently turn bonding off
/// for an hour. While a gateway runs, the detection is off (the one connection that fell back
/// still does); the previous value is put back on drop, and after a crash by the next mpbond
/// ([`crate::host`]). A kernel without the sysctl is left as it is.
#[derive(Debug)]
pub struct BlackholeDetectionOff(
    #[expect(dead_code, reason = "held: undone when dropped")] Option<crate::host::Change>,
);

impl BlackholeDetectionOff {
    /// Turns the detection off in the calling thread's network namespace.
    #[must_use]
    pub fn apply() -> Self {
        let setting = crate::host::Setting::sysctl("net.mptcp.blackhole_timeout");
        match crate::host::Change::apply(setting, |_| Some("0".to_owned())) {
            Ok(c) => {
                if c.original != "0" {
                    tracing::info!(
                        "net.mptcp.blackhole_timeout {} -> 0 while the gateway runs: lost MPTCP SYNs must not turn MPTCP off for the whole host",
                        c.original
                    );
                }
                Self(Some(c))
            }
            Err(e) => {
                tracing::debug!("net.mptcp.blackhole_timeout left alone: {e}");
                Self(None)
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

    /// The userspace path manager's commands and events, against the kernel on loopback: a
    /// second subflow is created from 127.0.0.2, reported on both sides, and withdrawn with
    /// `REMOVE_ADDR`, which the server side sees as its peer removing that address.
    #[test]
    fn userspace_pm_creates_reports_and_removes_a_subflow() {
        use std::io::{Read as _, Write as _};
        use std::time::{Duration, Instant};

        use super::pm_event::{Event, EventSocket, Kind};
        use crate::stack::kernel::stream_socket;

        in_private_netns("userspace_pm_creates_reports_and_removes_a_subflow", || {
            let pm_type = super::userspace_pm().unwrap();
            assert_eq!(pm_type.original, "0");
            let mut events = EventSocket::open().expect("events");
            let mut pm = PathManager::open().unwrap();
            let server: std::net::SocketAddr = "127.0.0.1:7999".parse().unwrap();
            let (listener, _, _) = stream_socket(&server, true).unwrap();
            listener.set_nonblocking(false).unwrap();
            listener.bind(&server.into()).unwrap();
            listener.listen(8).unwrap();
            let (client, _, _) = stream_socket(&server, true).unwrap();
            client.set_nonblocking(false).unwrap();
            client.connect(&server.into()).unwrap();
            let mut c: std::net::TcpStream = client.into();
            let (accepted, _) = listener.accept().unwrap();
            let mut s: std::net::TcpStream = accepted.into();
            c.write_all(b"hello").unwrap();
            let mut b = [0; 5];
            s.read_exact(&mut b).unwrap();
            s.write_all(b"world").unwrap();
            c.read_exact(&mut b).unwrap();

            let mut seen: Vec<Event> = Vec::new();
            let mut wait_for = |pred: &dyn Fn(&Event) -> bool, what: &str| -> Event {
                let end = Instant::now() + Duration::from_secs(5);
                loop {
                    if let Some(e) = seen.iter().find(|e| pred(e)) {
                        return e.clone();
                    }
                    assert!(Instant::now() < end, "no {what} event in {seen:#?}");
                    seen.extend(events.recv().unwrap());
                    std::thread::sleep(Duration::from_millis(10));
                }
            };
            let client = wait_for(
                &|e| e.kind == Kind::Established && !e.server_side,
                "client established",
            );
            let srv = wait_for(
                &|e| e.kind == Kind::Established && e.server_side,
                "server established",
            );
            assert_eq!(client.remote, Some(server));
            assert_eq!(srv.local, Some(server));

            let local = Endpoint {
                id: 5,
                addr: "127.0.0.2".parse().unwrap(),
                port: 0,
                flags: 0,
                ifindex: None,
            };
            pm.subflow_create(client.token, &local, server).unwrap();
            let sub = wait_for(
                &|e| e.kind == Kind::SubEstablished && e.token == client.token,
                "client subflow",
            );
            assert_eq!(sub.loc_id, Some(5));
            assert_eq!(sub.local.map(|a| a.ip()), Some(local.addr));
            let at_server = wait_for(
                &|e| e.kind == Kind::SubEstablished && e.token == srv.token,
                "server subflow",
            );
            assert_eq!(at_server.rem_id, Some(5));

            pm.set_backup(client.token, sub.local.unwrap(), server, true)
                .unwrap();
            wait_for(
                &|e| e.kind == Kind::SubPriority && e.token == srv.token && e.backup,
                "server sees MP_PRIO",
            );

            pm.remove(client.token, 5).unwrap();
            wait_for(
                &|e| e.kind == Kind::SubClosed && e.token == client.token,
                "client subflow closed",
            );
            wait_for(
                &|e| e.kind == Kind::Removed && e.token == srv.token && e.rem_id == Some(5),
                "server told of REMOVE_ADDR",
            );
            // The connection goes on over the first subflow, and a subflow from the same id
            // can be made again.
            c.write_all(b"again").unwrap();
            s.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"again");
            pm.subflow_create(client.token, &local, server).unwrap();
            let n = |seen: &[Event]| {
                seen.iter()
                    .filter(|e| e.kind == Kind::SubEstablished && e.token == client.token)
                    .count()
            };
            let end = Instant::now() + Duration::from_secs(5);
            while n(&seen) < 2 {
                assert!(Instant::now() < end, "no second subflow: {seen:#?}");
                seen.extend(events.recv().unwrap());
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(pm.remove(0xffff_ffff, 5).is_err(), "unknown token");
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
