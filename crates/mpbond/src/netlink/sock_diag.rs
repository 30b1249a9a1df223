//! The kernel's socket tables over `NETLINK_SOCK_DIAG` (uapi `linux/inet_diag.h`), what `ss`
//! reads: MPTCP connections with their `struct mptcp_info` (`ss -M`), and TCP sockets with their
//! `struct tcp_info` and, for MPTCP subflows, the `mptcp` ULP attributes that tie each to its
//! connection (token, address ids, flags; `ss -ti`).
//!
//! [`parse_dump`] reads the answer and never panics on any bytes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_packet_core::{NetlinkBuffer, NlasIterator};
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

use crate::stack::kernel::MptcpInfo;

/// `SOCK_DIAG_BY_FAMILY`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `IPPROTO_MPTCP`: too big for the request's `u8`, so sent as `INET_DIAG_REQ_PROTOCOL`.
const IPPROTO_MPTCP: u32 = 262;
/// Request attribute `INET_DIAG_REQ_PROTOCOL`.
const REQ_PROTOCOL: u16 = 3;
/// Answer attributes.
const INET_DIAG_INFO: u16 = 2;
const INET_DIAG_ULP_INFO: u16 = 19;
/// In `INET_DIAG_ULP_INFO`.
const INET_ULP_INFO_NAME: u16 = 1;
const INET_ULP_INFO_MPTCP: u16 = 3;
/// In `INET_ULP_INFO_MPTCP` (`MPTCP_SUBFLOW_ATTR_*`).
const SUBFLOW_TOKEN_REM: u16 = 1;
const SUBFLOW_TOKEN_LOC: u16 = 2;
const SUBFLOW_FLAGS: u16 = 8;
const SUBFLOW_ID_REM: u16 = 9;
const SUBFLOW_ID_LOC: u16 = 10;

/// `MPTCP_SUBFLOW_FLAG_BKUP_LOC`: we flagged the subflow backup.
pub const SUBFLOW_FLAG_BKUP_LOC: u32 = 1 << 5;
/// `MPTCP_SUBFLOW_FLAG_BKUP_REM`: the peer did.
pub const SUBFLOW_FLAG_BKUP_REM: u32 = 1 << 4;
/// `MPTCP_SUBFLOW_FLAG_FULLY_ESTABLISHED`.
pub const SUBFLOW_FLAG_FULLY_ESTABLISHED: u32 = 1 << 6;

/// The `mptcp` ULP attributes of a subflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubflowUlp {
    /// The connection's local token.
    pub token_loc: u32,
    /// The peer's token.
    pub token_rem: u32,
    /// Local address id.
    pub id_loc: u8,
    /// Remote address id.
    pub id_rem: u8,
    /// `MPTCP_SUBFLOW_FLAG_*`.
    pub flags: u32,
}

/// One socket of a dump.
#[derive(Debug, Clone)]
pub struct DiagSocket {
    /// TCP state (`TCP_ESTABLISHED` is 1).
    pub state: u8,
    /// Local end.
    pub local: SocketAddr,
    /// Remote end.
    pub remote: SocketAddr,
    /// Bound interface (0: none).
    pub ifindex: u32,
    /// Inode of the socket.
    pub inode: u32,
    /// `INET_DIAG_INFO`, raw: a `struct tcp_info` or a `struct mptcp_info`.
    pub info: Vec<u8>,
    /// For MPTCP subflows.
    pub ulp: Option<SubflowUlp>,
}

impl DiagSocket {
    /// The `struct tcp_info` of a TCP socket (fields the kernel did not send are zero).
    #[must_use]
    pub fn tcp_info(&self) -> libc::tcp_info {
        // SAFETY: all-zero is a valid tcp_info; we copy at most its size from our buffer.
        unsafe {
            let mut t: libc::tcp_info = std::mem::zeroed();
            let n = self.info.len().min(size_of::<libc::tcp_info>());
            std::ptr::copy_nonoverlapping(self.info.as_ptr(), (&raw mut t).cast::<u8>(), n);
            t
        }
    }

    /// The `struct mptcp_info` head of an MPTCP socket.
    #[must_use]
    pub fn mptcp_info(&self) -> MptcpInfo {
        let mut m = MptcpInfo::default();
        let n = self.info.len().min(size_of::<MptcpInfo>());
        // SAFETY: MptcpInfo is plain old data; we copy at most its size from our buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(self.info.as_ptr(), (&raw mut m).cast::<u8>(), n);
        }
        m
    }
}

/// A malformed answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiagError {
    /// A message or attribute is cut short.
    #[error("sock_diag: truncated message")]
    Truncated,
    /// The kernel refused the request.
    #[error("sock_diag: the kernel answered errno {0}")]
    Refused(i32),
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn ne32(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

/// `struct inet_diag_sockid`'s address at `b` (16 bytes) for `family`.
fn addr(family: u8, b: &[u8]) -> IpAddr {
    if i32::from(family) == libc::AF_INET6 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

fn parse_ulp(value: &[u8]) -> Option<SubflowUlp> {
    let mut is_mptcp = false;
    let mut ulp = SubflowUlp::default();
    for nla in NlasIterator::new(value) {
        let nla = nla.ok()?;
        match nla.kind() & 0x3fff {
            INET_ULP_INFO_NAME => is_mptcp = nla.value().starts_with(b"mptcp"),
            INET_ULP_INFO_MPTCP => {
                for a in NlasIterator::new(nla.value()) {
                    let a = a.ok()?;
                    let v = a.value();
                    match a.kind() & 0x3fff {
                        SUBFLOW_TOKEN_REM if v.len() >= 4 => ulp.token_rem = ne32(v),
                        SUBFLOW_TOKEN_LOC if v.len() >= 4 => ulp.token_loc = ne32(v),
                        SUBFLOW_FLAGS if v.len() >= 4 => ulp.flags = ne32(v),
                        SUBFLOW_ID_REM if !v.is_empty() => ulp.id_rem = v[0],
                        SUBFLOW_ID_LOC if !v.is_empty() => ulp.id_loc = v[0],
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    is_mptcp.then_some(ulp)
}

/// One `struct inet_diag_msg` (72 bytes) and its attributes.
fn parse_socket(p: &[u8]) -> Result<DiagSocket, DiagError> {
    if p.len() < 72 {
        return Err(DiagError::Truncated);
    }
    let family = p[0];
    let id = &p[4..52];
    let mut s = DiagSocket {
        state: p[1],
        local: SocketAddr::new(addr(family, &id[4..20]), be16(&id[0..2])),
        remote: SocketAddr::new(addr(family, &id[20..36]), be16(&id[2..4])),
        ifindex: ne32(&id[36..40]),
        inode: ne32(&p[68..72]),
        info: Vec::new(),
        ulp: None,
    };
    for nla in NlasIterator::new(&p[72..]) {
        let nla = nla.map_err(|_| DiagError::Truncated)?;
        match nla.kind() & 0x3fff {
            INET_DIAG_INFO => s.info = nla.value().to_vec(),
            INET_DIAG_ULP_INFO => s.ulp = parse_ulp(nla.value()),
            _ => {}
        }
    }
    Ok(s)
}

/// The sockets in one datagram of a dump's answer, and whether the dump is done.
///
/// # Errors
/// A truncated message, or the kernel's refusal.
pub fn parse_dump(mut data: &[u8]) -> Result<(Vec<DiagSocket>, bool), DiagError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let buf = NetlinkBuffer::new_checked(data).map_err(|_| DiagError::Truncated)?;
        let len = usize::try_from(buf.length()).unwrap_or(usize::MAX);
        match buf.message_type() {
            NLMSG_DONE => return Ok((out, true)),
            NLMSG_ERROR => {
                let code = buf
                    .payload()
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap_or_default()));
                if code != 0 {
                    return Err(DiagError::Refused(-code));
                }
            }
            SOCK_DIAG_BY_FAMILY => out.push(parse_socket(buf.payload())?),
            _ => {}
        }
        data = data.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok((out, false))
}

/// A dump request for `family` and `protocol` asking for `INET_DIAG_INFO`, every state.
fn request(family: u8, protocol: u32, seq: u32) -> Vec<u8> {
    let mut req = Vec::with_capacity(16 + 56 + 8);
    let proto_u8 = u8::try_from(protocol).unwrap_or(0);
    // struct inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed sockid.
    let mut body = vec![family, proto_u8, 1 << (INET_DIAG_INFO - 1), 0];
    body.extend_from_slice(&u32::MAX.to_ne_bytes());
    body.extend_from_slice(&[0u8; 48]);
    if proto_u8 == 0 {
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&REQ_PROTOCOL.to_ne_bytes());
        body.extend_from_slice(&protocol.to_ne_bytes());
    }
    let len = u32::try_from(16 + body.len()).unwrap_or(0);
    req.extend_from_slice(&len.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = u16::try_from(libc::NLM_F_REQUEST | libc::NLM_F_DUMP).unwrap_or(0x301);
    req.extend_from_slice(&flags.to_ne_bytes());
    req.extend_from_slice(&seq.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&body);
    req
}

fn dump(protocol: u32) -> io::Result<Vec<DiagSocket>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    let mut out = Vec::new();
    for (seq, family) in [(1, libc::AF_INET), (2, libc::AF_INET6)] {
        let family = u8::try_from(family).unwrap_or(2);
        socket.send(&request(family, protocol, seq), 0)?;
        loop {
            let (data, _) = socket.recv_from_full()?;
            let (socks, done) = parse_dump(&data)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            out.extend(socks);
            if done || data.is_empty() {
                break;
            }
        }
    }
    Ok(out)
}

/// Every MPTCP connection (listeners included), with its `struct mptcp_info`: what `ss -M`
/// shows.
///
/// # Errors
/// If the dump fails (no `mptcp_diag` module: `EINVAL` or `ENOENT`).
pub fn mptcp_sockets() -> io::Result<Vec<DiagSocket>> {
    dump(IPPROTO_MPTCP)
}

/// Every TCP socket, with its `struct tcp_info` and, for MPTCP subflows, their ULP attributes
/// (those need `CAP_NET_ADMIN`): what `ss -ti` shows.
///
/// # Errors
/// If the dump fails.
pub fn tcp_sockets() -> io::Result<Vec<DiagSocket>> {
    dump(u32::try_from(libc::IPPROTO_TCP).unwrap_or(6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subflows_of_a_loopback_connection_are_found_with_their_token() {
        use std::io::{Read as _, Write as _};
        crate::lab::testing::in_private_netns(
            "the_subflows_of_a_loopback_connection_are_found_with_their_token",
            || {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let server = l.local_addr().unwrap();
                drop(l);
                let (ls, _, _) = crate::stack::kernel::stream_socket(&server, true).unwrap();
                ls.set_nonblocking(false).unwrap();
                ls.bind(&server.into()).unwrap();
                ls.listen(4).unwrap();
                let (cs, _, _) = crate::stack::kernel::stream_socket(&server, true).unwrap();
                cs.set_nonblocking(false).unwrap();
                cs.connect(&server.into()).unwrap();
                let mut c: std::net::TcpStream = cs.into();
                let (acc, _) = ls.accept().unwrap();
                let mut s: std::net::TcpStream = acc.into();
                c.write_all(&[7; 5000]).unwrap();
                let mut b = vec![0; 5000];
                s.read_exact(&mut b).unwrap();
                let token = crate::stack::kernel::mptcp_info(&c).unwrap().token;

                let msks = mptcp_sockets().unwrap();
                let mine = msks
                    .iter()
                    .find(|m| m.state == 1 && m.mptcp_info().token == token)
                    .unwrap_or_else(|| panic!("token {token:x} not in {msks:?}"));
                assert_eq!(mine.remote, server);
                let subs: Vec<_> = tcp_sockets()
                    .unwrap()
                    .into_iter()
                    .filter(|t| t.ulp.is_some_and(|u| u.token_loc == token))
                    .collect();
                assert_eq!(subs.len(), 1, "{subs:?}");
                let info = subs[0].tcp_info();
                assert!(info.tcpi_bytes_acked >= 5000, "{}", info.tcpi_bytes_acked);
                assert!(info.tcpi_snd_cwnd > 0 && info.tcpi_rtt > 0);
            },
        );
    }

    #[test]
    fn a_refusal_and_a_truncated_message_are_errors() {
        let mut err = vec![0u8; 20];
        err[..4].copy_from_slice(&20u32.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-22i32).to_ne_bytes());
        assert_eq!(parse_dump(&err).unwrap_err(), DiagError::Refused(22));
        let mut short = vec![0u8; 40];
        short[..4].copy_from_slice(&40u32.to_ne_bytes());
        short[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        assert_eq!(parse_dump(&short).unwrap_err(), DiagError::Truncated);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(data: Vec<u8>) {
            let _ = parse_dump(&data);
            let _ = parse_ulp(&data);
        }
    }
}
