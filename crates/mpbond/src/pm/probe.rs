//! Probes, the I/O: ICMP echo requests (RFC 792, RFC 4443 §4) to the peer, sent out of one WAN
//! line (a raw socket bound to the line's interface and address) and the matching replies.
//! Small (8 bytes of payload) and answered by any host that answers `ping`; a peer that does
//! not leaves the lines' health to links and addresses (see [`super::health`]).

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The payload of our probes: tells them from other programs' pings.
const MAGIC: &[u8; 8] = b"mpbondPM";

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0xffff)
}

/// An echo request with identifier `ident` and sequence number `seq`. The `ICMPv6` checksum
/// is left to the kernel (it covers a pseudo-header only it knows).
#[must_use]
pub fn echo_request(v6: bool, ident: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 }, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(MAGIC);
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// The sequence number of an echo reply to one of our probes with `ident`, from what a raw
/// socket received (`IPv4`: with the IP header; `IPv6`: the ICMP message alone). Anything else
/// is `None`.
#[must_use]
pub fn parse_reply(v6: bool, data: &[u8], ident: u16) -> Option<u16> {
    let icmp = if v6 {
        data
    } else {
        let ihl = usize::from(data.first()? & 0x0f) * 4;
        if data.first()? >> 4 != 4 || ihl < 20 {
            return None;
        }
        data.get(ihl..)?
    };
    let want = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    if icmp.len() < 16 || icmp[0] != want || icmp[1] != 0 || &icmp[8..16] != MAGIC {
        return None;
    }
    if u16::from_be_bytes([icmp[4], icmp[5]]) != ident {
        return None;
    }
    Some(u16::from_be_bytes([icmp[6], icmp[7]]))
}

/// A probe socket for one line.
#[derive(Debug)]
pub struct Prober {
    socket: Socket,
    target: SockAddr,
    target_ip: IpAddr,
    ident: u16,
    /// The source address it is bound to.
    pub source: IpAddr,
}

impl Prober {
    /// A raw ICMP socket bound to `iface` and `source`, probing `target` (needs
    /// `CAP_NET_RAW`).
    pub fn open(iface: &str, source: IpAddr, target: IpAddr, ident: u16) -> io::Result<Self> {
        let v6 = target.is_ipv6();
        let (domain, proto) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        let socket = Socket::new(domain, Type::RAW, Some(proto))?;
        socket.bind_device(Some(iface.as_bytes()))?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            target: SocketAddr::new(target, 0).into(),
            target_ip: target,
            ident,
            source,
        })
    }

    /// Sends probe `seq`.
    pub fn send(&self, seq: u16) -> io::Result<()> {
        let p = echo_request(self.target_ip.is_ipv6(), self.ident, seq);
        self.socket.send_to(&p, &self.target).map(drop)
    }

    /// The IP bytes of one probe (and of its answer): the header and 16 bytes of ICMP.
    #[must_use]
    pub fn ip_len(&self) -> u64 {
        if self.target_ip.is_ipv6() {
            40 + 16
        } else {
            20 + 16
        }
    }

    /// The sequence numbers of the replies waiting.
    #[must_use]
    pub fn recv(&self) -> Vec<u16> {
        let mut out = Vec::new();
        let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            if from.as_socket().map(|a| a.ip()) != Some(self.target_ip) {
                continue;
            }
            // SAFETY: recv_from initialised the first `n` bytes.
            let data: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
            if let Some(seq) = parse_reply(self.target_ip.is_ipv6(), data, self.ident) {
                out.push(seq);
            }
        }
        out
    }
}

impl std::os::fd::AsRawFd for Prober {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_reply_v4(req: &[u8]) -> Vec<u8> {
        let mut ip = vec![
            0x45, 0, 0, 36, 0, 0, 0, 0, 64, 1, 0, 0, 198, 51, 100, 1, 10, 1, 0, 2,
        ];
        let mut icmp = req.to_vec();
        icmp[0] = ECHO_REPLY_V4;
        ip.extend(icmp);
        ip
    }

    #[test]
    fn a_request_has_a_valid_checksum_and_its_reply_gives_the_sequence_back() {
        let req = echo_request(false, 0x4242, 7);
        assert_eq!(checksum(&req), 0, "a correct checksum sums to zero");
        assert_eq!(parse_reply(false, &as_reply_v4(&req), 0x4242), Some(7));
        assert_eq!(
            parse_reply(false, &as_reply_v4(&req), 0x4243),
            None,
            "other ident"
        );
        assert_eq!(parse_reply(false, &req, 0x4242), None, "not an IP packet");
        let mut v6 = echo_request(true, 1, 9);
        assert_eq!(v6[0], ECHO_REQUEST_V6);
        v6[0] = ECHO_REPLY_V6;
        assert_eq!(parse_reply(true, &v6, 1), Some(9));
        v6[10] ^= 1;
        assert_eq!(parse_reply(true, &v6, 1), None, "someone else's ping");
    }

    #[test]
    fn a_probe_on_loopback_is_answered() {
        crate::lab::testing::in_private_netns("a_probe_on_loopback_is_answered", || {
            for (addr, ident, seq) in [("127.0.0.1", 77, 3), ("::1", 78, 4)] {
                let lo: IpAddr = addr.parse().unwrap();
                let p = Prober::open("lo", lo, lo, ident).unwrap();
                p.send(seq).unwrap();
                let mut got = Vec::new();
                for _ in 0..100 {
                    got.extend(p.recv());
                    if !got.is_empty() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                assert_eq!(got, vec![seq], "{addr}");
            }
        });
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(v6: bool, data: Vec<u8>, ident: u16) {
            let _ = parse_reply(v6, &data, ident);
        }

        #[test]
        fn every_request_round_trips(ident: u16, seq: u16) {
            let req = echo_request(false, ident, seq);
            proptest::prop_assert_eq!(checksum(&req), 0);
            proptest::prop_assert_eq!(parse_reply(false, &as_reply_v4(&req), ident), Some(seq));
        }
    }
}
