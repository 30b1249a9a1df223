//! Bodies of the fuzz targets in `fuzz/`, here so that `cargo test` can run them over the seed
//! corpus on a stable toolchain (`crates/mptcp-proto/tests/fuzz_corpus.rs`).
//!
//! Each body must not panic on any input, and checks more than that where it can: a value that
//! parses must emit to bytes that parse back to the same value.

use core::net::{IpAddr, Ipv4Addr};

use crate::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use crate::wire::ipv6::{Ipv6Packet, Ipv6Repr};
use crate::wire::mptcp::MptcpOption;
use crate::wire::tcp::{TcpPacket, TcpRepr};
use crate::wire::tcp_option::{TcpOption, TcpOptions};

/// One MPTCP option's bytes.
pub fn mptcp_option(data: &[u8]) {
    if let Ok(o) = MptcpOption::parse(data) {
        let mut out = vec![0; o.buffer_len()];
        o.emit(&mut out);
        assert_eq!(
            MptcpOption::parse(&out).as_ref(),
            Ok(&o),
            "re-parse of {data:?}"
        );
    }
}

/// A TCP options field.
pub fn tcp_options(data: &[u8]) {
    for item in TcpOptions::new(data) {
        let Ok(o) = item else { continue };
        if matches!(o, TcpOption::EndOfList | TcpOption::NoOperation) {
            continue;
        }
        let mut out = vec![0; o.buffer_len()];
        o.emit(&mut out);
        assert_eq!(
            TcpOption::parse(&out).as_ref(),
            Ok(&o),
            "re-parse of {data:?}"
        );
    }
}

/// A TCP segment, with and without checksum verification.
pub fn tcp_segment(data: &[u8]) {
    let src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let dst = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    let Ok(p) = TcpPacket::new_checked(data) else {
        return;
    };
    let _ = (
        p.flags(),
        p.options(),
        p.payload(),
        p.verify_checksum(src, dst),
    );
    for verify in [false, true] {
        if let Ok(r) = TcpRepr::parse(&p, src, dst, verify) {
            if r.options_len() <= crate::wire::tcp::MAX_OPTIONS_LEN {
                let mut out = vec![0; r.buffer_len()];
                r.emit(&mut out, src, dst);
                let q = TcpPacket::new_checked(&out[..])
                    .unwrap_or_else(|e| panic!("emitted segment unreadable: {e}"));
                assert_eq!(TcpRepr::parse(&q, src, dst, true).as_ref(), Ok(&r));
            }
        }
    }
}

/// An IPv4 packet.
pub fn ipv4(data: &[u8]) {
    let Ok(p) = Ipv4Packet::new_checked(data) else {
        return;
    };
    let _ = (p.payload(), p.is_truncated(), p.verify_checksum());
    if let Ok(r) = Ipv4Repr::parse(&p) {
        let mut out = vec![0; r.buffer_len() + r.payload_len];
        r.emit(&mut out);
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_checked(&out[..]).unwrap_or_else(|e| panic!("{e}")))
                .as_ref(),
            Ok(&r)
        );
    }
}

/// An IPv6 packet.
pub fn ipv6(data: &[u8]) {
    let Ok(p) = Ipv6Packet::new_checked(data) else {
        return;
    };
    let _ = (p.payload(), p.upper_layer());
    if let Ok(r) = Ipv6Repr::parse(&p) {
        let mut out = vec![0; r.buffer_len() + r.payload_len];
        r.emit(&mut out);
        assert_eq!(
            Ipv6Repr::parse(&Ipv6Packet::new_checked(&out[..]).unwrap_or_else(|e| panic!("{e}")))
                .as_ref(),
            Ok(&r)
        );
    }
}

/// Reads fuzz input as a sequence of small numbers; past the end, zeros.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the fuzzer, playing the client, knows of the server's connection from what it sent.
#[derive(Default)]
struct PeerView {
    /// The server's next sequence number, as seen.
    srv_nxt: Option<crate::wire::tcp::SeqNumber>,
    /// The server's acknowledgment number (what it expects from us next).
    srv_ack: Option<crate::wire::tcp::SeqNumber>,
    /// The client's ISN.
    isn: u32,
    /// Where the client's stream starts for the server: the acknowledgment of its SYN-ACK
    /// (`IRS + 1`), whatever sequence number the fuzzed SYN had.
    data_base: Option<crate::wire::tcp::SeqNumber>,
}

/// Byte `offset` of the client's stream.
fn stream_byte(offset: u32) -> u8 {
    offset.wrapping_mul(0x9e37_79b1).to_be_bytes()[0]
}

/// The client's segment that the input describes: numbers near what the server expects (or
/// raw), options, and a payload of up to 1599 bytes.
fn client_segment<'p>(
    input: &mut Bytes<'_>,
    peer: &PeerView,
    ports: (u16, u16),
    payload: &'p mut Vec<u8>,
) -> TcpRepr<'p> {
    use crate::wire::tcp::{SeqNumber, TcpFlags};
    let flags = u16::from(input.u8()) & 0x3f;
    let near = input.u8();
    // Bit 0 of `near`: the sequence number is near what the server expects (else the ISN for a
    // SYN, else raw); bit 1: the acknowledgment near what it sent.
    let seq = if near & 1 != 0 {
        let base = peer.srv_ack.unwrap_or(SeqNumber(peer.isn));
        base.wrapping_add(u32::from(input.u16()).wrapping_sub(1024))
    } else if flags & TcpFlags::SYN != 0 {
        SeqNumber(peer.isn)
    } else {
        SeqNumber(input.u32())
    };
    let ack = if near & 2 != 0 {
        let base = peer.srv_nxt.unwrap_or_default();
        base.wrapping_add(u32::from(input.u16()).wrapping_sub(1024))
    } else {
        SeqNumber(input.u32())
    };
    let opts = input.u8();
    let mut sack = crate::wire::tcp_option::SackBlocks::new();
    if opts & 0x10 != 0 {
        let base = peer.srv_nxt.unwrap_or(ack);
        for _ in 0..=(opts >> 6) {
            let l = base.wrapping_add(u32::from(input.u16()).wrapping_sub(30000));
            sack.push((l.0, l.wrapping_add(u32::from(input.u16())).0));
        }
    }
    let len = usize::from(input.u16() % 1600);
    // The bytes are those of the client's stream at that place, whatever the segment: any
    // reassembly that puts a byte where it does not belong shows when the server reads.
    let base = peer.data_base.map_or(peer.isn.wrapping_add(1), |b| b.0);
    let data_start = seq
        .0
        .wrapping_add(u32::from(flags & TcpFlags::SYN != 0))
        .wrapping_sub(base);
    payload.clear();
    payload.extend(
        (0..u32::try_from(len).unwrap_or(0)).map(|i| stream_byte(data_start.wrapping_add(i))),
    );
    TcpRepr {
        src_port: ports.0,
        dst_port: ports.1,
        flags: TcpFlags(flags & !TcpFlags::ACK),
        seq_number: seq,
        ack_number: (flags & TcpFlags::ACK != 0).then_some(ack),
        window_len: input.u16(),
        max_seg_size: (opts & 1 != 0).then(|| input.u16()),
        window_scale: (opts & 2 != 0).then(|| input.u8()),
        sack_permitted: opts & 4 != 0,
        timestamps: (opts & 8 != 0).then(|| (input.u32(), input.u32())),
        sack_blocks: sack,
        payload,
        ..TcpRepr::default()
    }
}

/// Sends everything the endpoint has to send, checks each packet, and aims the client's view.
fn drain(
    ep: &mut crate::endpoint::Endpoint,
    now: std::time::Instant,
    buf: &mut [u8],
    peer: &mut PeerView,
) {
    use crate::wire::tcp::TcpFlags;
    let mut sent = 0;
    while let Some(t) = ep.poll_transmit(now, buf) {
        sent += 1;
        assert!(sent < 10_000, "poll_transmit does not run dry");
        let p = Ipv4Packet::new_checked(&buf[..t.len])
            .unwrap_or_else(|e| panic!("the endpoint sent an unreadable IPv4 packet: {e}"));
        let tcp = &buf[p.header_len()..t.len];
        let q = TcpPacket::new_checked(tcp).unwrap_or_else(|e| panic!("unreadable: {e}"));
        let seg = TcpRepr::parse(&q, t.src, t.dst, true)
            .unwrap_or_else(|e| panic!("the endpoint sent a bad segment: {e}"));
        let seq_len = seg.payload.len()
            + usize::from(seg.flags.contains(TcpFlags::SYN))
            + usize::from(seg.flags.contains(TcpFlags::FIN));
        let end = seg
            .seq_number
            .wrapping_add(u32::try_from(seq_len).unwrap_or(0));
        peer.srv_nxt = Some(peer.srv_nxt.map_or(end, |n| if end > n { end } else { n }));
        if let Some(a) = seg.ack_number {
            peer.srv_ack = Some(a);
            if seg.flags.contains(TcpFlags::SYN) {
                peer.data_base = Some(a);
            }
        }
    }
    while ep.poll_event().is_some() {}
}

/// The server application reads everything readable and checks it is the client's stream.
fn read_and_check(
    ep: &mut crate::endpoint::Endpoint,
    accepted: &[crate::endpoint::ConnHandle],
    read_offsets: &mut [u32],
    scratch: &mut [u8],
) {
    for (&h, read) in accepted.iter().zip(read_offsets.iter_mut()) {
        if let Some(c) = ep.conn_mut(h) {
            while let Ok(n) = c.read(scratch) {
                let mut at = *read;
                for &b in &scratch[..n] {
                    assert_eq!(b, stream_byte(at), "byte {at} of the stream is wrong");
                    at = at.wrapping_add(1);
                }
                *read = at;
            }
        }
    }
}

/// A TCP connection (server side, behind a listener) fed arbitrary segments from a fuzzed
/// client, interleaved with time passing and the application accepting, writing, reading,
/// closing, aborting and releasing. No input may make it panic, loop, or hold more memory than
/// its buffers allow.
pub fn tcp_connection(data: &[u8]) {
    use crate::endpoint::{Endpoint, EndpointConfig};
    use core::net::SocketAddr;
    use core::time::Duration;

    const RECV: usize = 4096;
    const SEND: usize = 8192;
    let server = SocketAddr::new([10, 0, 0, 2].into(), 80);
    let mut cfg = EndpointConfig::default();
    cfg.tcp.recv_buffer = RECV;
    cfg.tcp.recv_buffer_max = RECV;
    cfg.tcp.send_buffer = SEND;
    cfg.tcp.send_buffer_max = SEND;
    cfg.syn_backlog = 2;
    cfg.seed = 7;
    cfg.secret = [9; 32];
    let mut now = std::time::Instant::now();
    let mut ep = Endpoint::new(cfg, now);
    let _ = ep.listen(server);
    let mut input = Bytes(data);
    let mut peer = PeerView {
        isn: input.u32(),
        ..PeerView::default()
    };
    let client = SocketAddr::new([10, 0, 0, 1].into(), 40000 + u16::from(input.u8() % 4));
    let (mut accepted, mut buf, mut scratch, mut payload) =
        (Vec::new(), vec![0u8; 2048], vec![0u8; 4096], Vec::new());
    let mut read_offsets: Vec<u32> = Vec::new();
    let mut steps = 0;
    while !input.is_empty() && steps < 4096 {
        steps += 1;
        match input.u8() % 8 {
            0 | 1 => {
                let seg = client_segment(
                    &mut input,
                    &peer,
                    (client.port(), server.port()),
                    &mut payload,
                );
                if seg.options_len() <= crate::wire::tcp::MAX_OPTIONS_LEN {
                    let _ = ep.handle_segment(now, client.ip(), server.ip(), &seg);
                }
            }
            2 => {
                now += Duration::from_millis(u64::from(input.u8()) * 20);
                ep.handle_timeout(now);
                // Every timer due was handled: the next one lies ahead.
                assert!(
                    ep.poll_timeout().is_none_or(|t| t > now),
                    "a timer is still due after handle_timeout"
                );
            }
            3 => {
                if let Some(h) = ep.accept(server) {
                    accepted.push(h);
                    read_offsets.push(0u32);
                }
                let n = usize::from(input.u16()) % scratch.len();
                for &h in &accepted {
                    if let Some(c) = ep.conn_mut(h) {
                        let _ = c.write(&scratch[..n]);
                    }
                }
            }
            4 => read_and_check(&mut ep, &accepted, &mut read_offsets, &mut scratch),
            5 => {
                let abort = input.u8() & 1 == 1;
                for &h in &accepted {
                    if let Some(c) = ep.conn_mut(h) {
                        if abort {
                            c.abort();
                        } else {
                            c.close();
                        }
                    }
                }
            }
            6 => {
                let which = usize::from(input.u8());
                if let Some(&h) = accepted.get(which % accepted.len().max(1)) {
                    ep.release(now, h);
                }
            }
            _ => {}
        }
        drain(&mut ep, now, &mut buf, &mut peer);
        // Memory stays within the buffers' bounds.
        assert!(ep.connection_count() <= 64, "connections pile up");
        for &h in &accepted {
            if let Some(c) = ep.conn(h) {
                assert!(c.readable() <= RECV + 1024, "receive buffer overrun");
                assert!(c.send_buffered() <= SEND, "send buffer overrun");
                assert!(
                    c.stats().unacked <= SEND as u64 + 2,
                    "unacknowledged beyond the data"
                );
            }
        }
    }
}

/// What the fuzzer, playing an MPTCP client, knows of one of its subflows.
#[derive(Default, Clone)]
struct FuzzSubflow {
    /// Our ISN, and the server's (from its SYN/ACK).
    isn: u32,
    srv_isn: Option<u32>,
    /// The server's `MP_JOIN` random number.
    srv_nonce: u32,
    nonce: u32,
    /// Chunks sent: (relative subflow sequence number, data offset, length). Sent again
    /// with the same mapping and bytes, as a real sender does.
    chunks: Vec<(u32, u64, u16)>,
    /// Next relative subflow sequence number for new data.
    next_ssn: u32,
}

/// An MPTCP server connection fed arbitrary segments on up to three subflows by a fuzzed
/// client, MPTCP options included (`MP_CAPABLE`, `MP_JOIN` with right or wrong HMACs, DSS
/// mappings and acknowledgments, and any option at all from raw bytes), interleaved with time
/// passing and the application reading, writing, closing and aborting. No input may make it
/// panic, loop, or hold more than its buffers allow, and while MPTCP is in use every byte the
/// application reads is the client's byte at that data-level offset.
#[expect(
    clippy::too_many_lines,
    reason = "one interpreter of the fuzz script, op by op"
)]
pub fn mptcp_connection(data: &[u8]) {
    use crate::crypto;
    use crate::mptcp::{ConnEvent, ConnId, Stack, StackConfig, StackEvent};
    use crate::wire::mptcp::{
        DataSeqField, Dss, DssMapping, MpCapable, MpCapableFlags, MpCapableKeys, MpJoin,
    };
    use crate::wire::tcp::{SeqNumber, TcpFlags};
    use core::net::SocketAddr;
    use core::time::Duration;

    let server = SocketAddr::new([10, 0, 0, 2].into(), 80);
    let mut input = Bytes(data);
    let mut cfg = StackConfig::default();
    cfg.endpoint.tcp.recv_buffer = 4096;
    cfg.endpoint.tcp.recv_buffer_max = 4096;
    cfg.endpoint.tcp.send_buffer = 8192;
    cfg.endpoint.tcp.send_buffer_max = 8192;
    cfg.endpoint.seed = 7;
    cfg.endpoint.secret = [9; 32];
    cfg.conn.recv_buffer = 16_384;
    cfg.conn.send_buffer = 16_384;
    cfg.conn.checksums = input.u8() & 1 == 1;
    let mut now = std::time::Instant::now();
    let mut st = Stack::new(cfg, now);
    let _ = st.listen(server);
    let client_key = u64::from(input.u32()) << 32 | u64::from(input.u32()) | 1;
    let client_idsn = crypto::idsn(client_key);
    let mut server_key: Option<u64> = None;
    let mut subs: Vec<FuzzSubflow> = (0..3)
        .map(|_| FuzzSubflow {
            isn: input.u32(),
            nonce: input.u32(),
            ..FuzzSubflow::default()
        })
        .collect();
    let client =
        |k: usize| SocketAddr::new([10, 0, 0, 1].into(), 40000 + u16::try_from(k).unwrap_or(0));
    let mut accepted: Option<ConnId> = None;
    let mut read_at = 0u64;
    let mut fell_back = false;
    let (mut buf, mut scratch, mut payload) = (vec![0u8; 2048], vec![0u8; 4096], Vec::new());
    let mut raw: Vec<u8> = Vec::new();
    let mut steps = 0;
    while !input.is_empty() && steps < 2048 {
        steps += 1;
        let sub = usize::from(input.u8() % 3);
        let op = input.u8() % 10;
        let sf = subs[sub].clone();
        let mut seg = TcpRepr {
            src_port: client(sub).port(),
            dst_port: server.port(),
            flags: TcpFlags(0),
            seq_number: SeqNumber(sf.isn.wrapping_add(1)),
            ack_number: sf.srv_isn.map(|i| SeqNumber(i.wrapping_add(1))),
            window_len: 65_535,
            ..TcpRepr::default()
        };
        payload.clear();
        match op {
            0 => {
                // SYN: MP_CAPABLE on the first subflow, MP_JOIN on the others.
                seg.flags = TcpFlags(TcpFlags::SYN);
                seg.seq_number = SeqNumber(sf.isn);
                seg.ack_number = None;
                let o = if sub == 0 {
                    MptcpOption::MpCapable(MpCapable {
                        version: 1,
                        flags: MpCapableFlags(input.u8() | MpCapableFlags::HMAC_SHA),
                        keys: MpCapableKeys::None,
                    })
                } else {
                    MptcpOption::MpJoin(MpJoin::Syn {
                        backup: input.u8() & 1 == 1,
                        address_id: input.u8(),
                        token: server_key.map_or_else(|| input.u32(), crypto::token),
                        nonce: sf.nonce,
                    })
                };
                let _ = seg.mptcp.try_push(o);
            }
            1 => {
                // The third ACK: both keys, or the MP_JOIN HMAC (right, or wrong).
                seg.flags = TcpFlags(TcpFlags::ACK);
                let o = if sub == 0 {
                    MptcpOption::MpCapable(MpCapable {
                        version: 1,
                        flags: MpCapableFlags(MpCapableFlags::HMAC_SHA),
                        keys: MpCapableKeys::Both {
                            sender_key: client_key,
                            receiver_key: server_key.unwrap_or(0),
                        },
                    })
                } else {
                    let hmac = if input.u8().trailing_zeros() >= 3 {
                        [0x5a; 20]
                    } else {
                        crypto::join_hmac_160(
                            client_key,
                            server_key.unwrap_or(0),
                            sf.nonce,
                            sf.srv_nonce,
                        )
                    };
                    MptcpOption::MpJoin(MpJoin::Ack { hmac })
                };
                let _ = seg.mptcp.try_push(o);
            }
            2 | 3 => {
                // Data with its mapping: new bytes at the subflow's end, or a chunk again.
                seg.flags = TcpFlags(TcpFlags::ACK);
                let again = op == 3 && !sf.chunks.is_empty();
                let (ssn, off, len) = if again {
                    sf.chunks[usize::from(input.u8()) % sf.chunks.len()]
                } else {
                    let off = u64::from(input.u16()) % 60_000;
                    let len = input.u16() % 1400 + 1;
                    let ssn = sf.next_ssn.max(1);
                    subs[sub].chunks.push((ssn, off, len));
                    subs[sub].next_ssn = ssn.wrapping_add(u32::from(len));
                    (ssn, off, len)
                };
                seg.seq_number = SeqNumber(sf.isn.wrapping_add(ssn));
                payload.extend(
                    (0..u32::from(len))
                        .map(|i| stream_byte(u32::try_from(off).unwrap_or(0).wrapping_add(i))),
                );
                let dsn = client_idsn.wrapping_add(1).wrapping_add(off);
                let checksum =
                    (input.u8() & 1 == 1).then(|| crypto::dss_checksum(dsn, ssn, len, &payload));
                let long = input.u8() & 1 == 1;
                let _ = seg.mptcp.try_push(MptcpOption::Dss(Dss {
                    data_fin: false,
                    data_ack: None,
                    mapping: Some(DssMapping {
                        dsn: if long {
                            DataSeqField::Long(dsn)
                        } else {
                            #[expect(clippy::cast_possible_truncation, reason = "low bits")]
                            DataSeqField::Short(dsn as u32)
                        },
                        ssn,
                        data_len: len,
                        checksum,
                    }),
                }));
            }
            4 => {
                // Any option at all, from raw bytes, on a pure ACK.
                seg.flags = TcpFlags(TcpFlags::ACK);
                let n = usize::from(input.u8() % 38) + 2;
                raw.clear();
                raw.extend([crate::wire::mptcp::KIND, u8::try_from(n).unwrap_or(2)]);
                raw.extend((2..n).map(|_| input.u8()));
                if let Ok(o) = MptcpOption::parse(&raw) {
                    let _ = seg.mptcp.try_push(o);
                }
            }
            5 => {
                now += Duration::from_millis(u64::from(input.u8()) * 25);
                st.handle_timeout(now);
                assert!(
                    st.poll_timeout().is_none_or(|t| t > now),
                    "a timer is still due after handle_timeout: ep {:?} stack {:?}",
                    st.endpoint()
                        .poll_timeout()
                        .map(|t| now.saturating_duration_since(t)),
                    st.poll_timeout().map(|t| now.saturating_duration_since(t))
                );
            }
            6 => {
                if accepted.is_none() {
                    accepted = st.accept(server);
                }
                if let Some(id) = accepted {
                    let n = usize::from(input.u16()) % scratch.len();
                    let _ = st.write(id, &scratch[..n]);
                }
            }
            7 => match (input.u8() % 3, accepted) {
                (0, Some(id)) => st.close(id),
                (1, Some(id)) => st.abort(id),
                _ => {}
            },
            _ => {}
        }
        if matches!(op, 0..=4) {
            seg.payload = &payload;
            if seg.options_len() <= crate::wire::tcp::MAX_OPTIONS_LEN {
                let mut pkt = vec![0u8; 20 + seg.buffer_len()];
                let ip = Ipv4Repr {
                    src_addr: [10, 0, 0, 1].into(),
                    dst_addr: [10, 0, 0, 2].into(),
                    protocol: crate::wire::ip::PROTOCOL_TCP,
                    payload_len: seg.buffer_len(),
                    ttl: 64,
                    tos: 0,
                    ident: 0,
                    dont_frag: true,
                };
                ip.emit(&mut pkt);
                seg.emit(&mut pkt[20..], client(sub).ip(), server.ip());
                let _ = st.handle_packet(now, &pkt);
            }
        }
        // What the server sent: learn its ISNs, key and join numbers.
        let mut sent = 0;
        while let Some(t) = st.poll_transmit(now, &mut buf) {
            sent += 1;
            assert!(sent < 10_000, "poll_transmit does not run dry");
            let ip_pkt = Ipv4Packet::new_checked(&buf[..t.len])
                .unwrap_or_else(|e| panic!("the stack sent an unreadable packet: {e}"));
            let tcp_pkt = TcpPacket::new_checked(&buf[ip_pkt.header_len()..t.len])
                .unwrap_or_else(|e| panic!("unreadable: {e}"));
            let seg = TcpRepr::parse(&tcp_pkt, t.src, t.dst, true)
                .unwrap_or_else(|e| panic!("the stack sent a bad segment: {e}"));
            let Some(j) = (0..3).find(|&j| client(j).port() == seg.dst_port) else {
                continue;
            };
            if seg.flags.contains(TcpFlags::SYN) {
                subs[j].srv_isn = Some(seg.seq_number.0);
                for o in &seg.mptcp {
                    match o {
                        MptcpOption::MpCapable(m) => server_key = m.sender_key().or(server_key),
                        MptcpOption::MpJoin(MpJoin::SynAck { nonce, .. }) => {
                            subs[j].srv_nonce = *nonce;
                        }
                        _ => {}
                    }
                }
            }
        }
        while let Some(ev) = st.poll_event() {
            if let StackEvent::Conn(_, ConnEvent::Fallback) = ev {
                fell_back = true;
            }
        }
        // The application reads and checks.
        if let Some(id) = accepted.or_else(|| st.accept(server)) {
            accepted = Some(id);
            while let Ok(n) = st.read(id, &mut scratch) {
                if n == 0 {
                    break;
                }
                // Plain TCP from the start (an MP_CAPABLE it could not use) or since a fall
                // back: the bytes are the subflow's, not the data level's.
                if !fell_back && st.state(id) != Some(crate::mptcp::ConnState::Fallback) {
                    for (i, &b) in scratch[..n].iter().enumerate() {
                        let at = read_at + i as u64;
                        assert_eq!(
                            b,
                            stream_byte(u32::try_from(at).unwrap_or(0)),
                            "data-level byte {at} is wrong"
                        );
                    }
                }
                read_at += n as u64;
            }
        }
        assert!(st.connection_count() <= 8, "connections pile up");
        assert!(st.endpoint().connection_count() <= 16, "subflows pile up");
    }
}
