//! Property tests of the wire layer: every option and header round-trips through emit and
//! parse, and no parser panics on arbitrary bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use mptcp_proto::fuzzing;
use mptcp_proto::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use mptcp_proto::wire::ipv6::{Ipv6Packet, Ipv6Repr};
use mptcp_proto::wire::mptcp::{
    AddAddr, AddAddrForm, DataSeqField, Dss, DssMapping, MpCapable, MpCapableFlags, MpCapableKeys,
    MpFail, MpFastclose, MpJoin, MpPrio, MpTcpRst, MptcpOption, RemoveAddr,
};
use mptcp_proto::wire::tcp::{SeqNumber, TcpFlags, TcpPacket, TcpRepr};
use mptcp_proto::wire::tcp_option::{SackBlocks, TcpOption};
use proptest::prelude::*;

fn ip_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

fn seq_field() -> impl Strategy<Value = DataSeqField> {
    prop_oneof![
        any::<u32>().prop_map(DataSeqField::Short),
        any::<u64>().prop_map(DataSeqField::Long)
    ]
}

fn mp_capable() -> impl Strategy<Value = MpCapable> {
    let keys = prop_oneof![
        Just(MpCapableKeys::None),
        any::<u64>().prop_map(|sender_key| MpCapableKeys::Sender { sender_key }),
        (any::<u64>(), any::<u64>()).prop_map(|(sender_key, receiver_key)| MpCapableKeys::Both {
            sender_key,
            receiver_key
        }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u16>(),
            any::<Option<u16>>()
        )
            .prop_map(|(sender_key, receiver_key, data_len, checksum)| {
                MpCapableKeys::WithData {
                    sender_key,
                    receiver_key,
                    data_len,
                    checksum,
                }
            }),
    ];
    (1u8..16, any::<u8>(), keys).prop_map(|(version, flags, keys)| MpCapable {
        version,
        flags: MpCapableFlags(flags),
        keys,
    })
}

fn mp_join() -> impl Strategy<Value = MpJoin> {
    prop_oneof![
        (any::<bool>(), any::<u8>(), any::<u32>(), any::<u32>()).prop_map(
            |(backup, address_id, token, nonce)| MpJoin::Syn {
                backup,
                address_id,
                token,
                nonce
            }
        ),
        (any::<bool>(), any::<u8>(), any::<u64>(), any::<u32>()).prop_map(
            |(backup, address_id, hmac, nonce)| MpJoin::SynAck {
                backup,
                address_id,
                hmac,
                nonce
            }
        ),
        any::<[u8; 20]>().prop_map(|hmac| MpJoin::Ack { hmac }),
    ]
}

fn dss() -> impl Strategy<Value = Dss> {
    let mapping = (
        seq_field(),
        any::<u32>(),
        any::<u16>(),
        any::<Option<u16>>(),
    )
        .prop_map(|(dsn, ssn, data_len, checksum)| DssMapping {
            dsn,
            ssn,
            data_len,
            checksum,
        });
    (
        any::<bool>(),
        proptest::option::of(seq_field()),
        proptest::option::of(mapping),
    )
        .prop_map(|(data_fin, data_ack, mapping)| Dss {
            data_fin,
            data_ack,
            mapping,
        })
}

fn add_addr() -> impl Strategy<Value = AddAddr> {
    let form = prop_oneof![
        any::<u64>().prop_map(|hmac| AddAddrForm::Announce { hmac }),
        Just(AddAddrForm::Echo),
        Just(AddAddrForm::V0)
    ];
    (any::<u8>(), ip_addr(), any::<Option<u16>>(), form).prop_map(
        |(address_id, address, port, form)| AddAddr {
            address_id,
            address,
            port,
            form,
        },
    )
}

/// An owned stand-in for options that borrow (`REMOVE_ADDR`'s list, unknown subtypes).
#[derive(Debug, Clone)]
enum Opt {
    Borrowed(MptcpOption<'static>),
    RemoveAddr(Vec<u8>),
    Unknown(u8, Vec<u8>),
}

impl Opt {
    fn get(&self) -> MptcpOption<'_> {
        match self {
            Opt::Borrowed(o) => o.clone(),
            Opt::RemoveAddr(ids) => MptcpOption::RemoveAddr(RemoveAddr { address_ids: ids }),
            Opt::Unknown(subtype, data) => MptcpOption::Unknown {
                subtype: *subtype,
                data,
            },
        }
    }
}

fn mptcp_option() -> impl Strategy<Value = Opt> {
    prop_oneof![
        mp_capable().prop_map(|o| Opt::Borrowed(MptcpOption::MpCapable(o))),
        mp_join().prop_map(|o| Opt::Borrowed(MptcpOption::MpJoin(o))),
        dss().prop_map(|o| Opt::Borrowed(MptcpOption::Dss(o))),
        add_addr().prop_map(|o| Opt::Borrowed(MptcpOption::AddAddr(o))),
        proptest::collection::vec(any::<u8>(), 1..30).prop_map(Opt::RemoveAddr),
        (any::<bool>(), any::<Option<u8>>()).prop_map(|(backup, address_id)| Opt::Borrowed(
            MptcpOption::MpPrio(MpPrio { backup, address_id })
        )),
        any::<u64>().prop_map(|dsn| Opt::Borrowed(MptcpOption::MpFail(MpFail { dsn }))),
        any::<u64>().prop_map(|receiver_key| Opt::Borrowed(MptcpOption::MpFastclose(
            MpFastclose { receiver_key }
        ))),
        (0u8..16, any::<u8>()).prop_map(|(flags, reason)| Opt::Borrowed(MptcpOption::MpTcpRst(
            MpTcpRst { flags, reason }
        ))),
        (9u8..16, proptest::collection::vec(any::<u8>(), 1..20)).prop_map(|(sub, mut data)| {
            data[0] = (sub << 4) | (data[0] & 0x0f);
            Opt::Unknown(sub, data)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_mptcp_option_round_trips(o in mptcp_option()) {
        let o = o.get();
        let mut buf = vec![0; o.buffer_len()];
        o.emit(&mut buf);
        prop_assert_eq!(usize::from(buf[1]), buf.len());
        prop_assert_eq!(MptcpOption::parse(&buf).unwrap(), o);
    }

    #[test]
    fn tcp_options_round_trip(o in mptcp_option(), mss in any::<u16>(), ws in any::<u8>(), blocks in proptest::collection::vec((any::<u32>(), any::<u32>()), 1..=4), ts in any::<(u32, u32)>(), cookie in proptest::collection::vec(any::<u8>(), 2..=8)) {
        let cookie: Vec<u8> = cookie.iter().chain(cookie.iter()).copied().collect(); // even length 4..=16
        let blocks: SackBlocks = blocks.into_iter().collect();
        let o = o.get();
        for opt in [
            TcpOption::MaxSegmentSize(mss),
            TcpOption::WindowScale(ws),
            TcpOption::SackPermitted,
            TcpOption::Sack(blocks.clone()),
            TcpOption::Timestamps { tsval: ts.0, tsecr: ts.1 },
            TcpOption::FastOpen(&cookie),
            TcpOption::Mptcp(o.clone()),
        ] {
            let mut buf = vec![0; opt.buffer_len()];
            opt.emit(&mut buf);
            prop_assert_eq!(TcpOption::parse(&buf).unwrap(), opt);
        }
    }

    #[test]
    fn tcp_segments_round_trip(
        ports in any::<(u16, u16)>(), seq in any::<u32>(), ack in any::<Option<u32>>(), flags in 0u16..0x200,
        window in any::<u16>(), mss in any::<Option<u16>>(), ws in any::<Option<u8>>(), ts in any::<Option<(u32, u32)>>(),
        o in proptest::option::of(mptcp_option()), payload in proptest::collection::vec(any::<u8>(), 0..200),
        v6 in any::<bool>(),
    ) {
        let o = o.as_ref().map(Opt::get);
        let mut r = TcpRepr {
            src_port: ports.0,
            dst_port: ports.1,
            flags: TcpFlags(flags & !TcpFlags::ACK),
            seq_number: SeqNumber(seq),
            ack_number: ack.map(SeqNumber),
            window_len: window,
            max_seg_size: mss,
            window_scale: ws,
            timestamps: ts,
            payload: &payload,
            ..TcpRepr::default()
        };
        if let Some(o) = o {
            r.mptcp.push(o);
        }
        prop_assume!(r.options_len() <= 40);
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            ("fd00:1::2".parse().unwrap(), "fd00:1::1".parse().unwrap())
        } else {
            ("10.1.0.2".parse().unwrap(), "10.1.0.1".parse().unwrap())
        };
        let mut buf = vec![0; r.buffer_len()];
        r.emit(&mut buf, src, dst);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        prop_assert!(p.verify_checksum(src, dst));
        prop_assert_eq!(TcpRepr::parse(&p, src, dst, true).unwrap(), r);
    }

    #[test]
    fn ip_headers_round_trip(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), proto in any::<u8>(), len in 0usize..1000, ttl in any::<u8>(), tos in any::<u8>(), ident in any::<u16>(), df in any::<bool>(), tc in any::<u8>(), flow in 0u32..0x10_0000, src6 in any::<[u8; 16]>(), dst6 in any::<[u8; 16]>()) {
        let r4 = Ipv4Repr { src_addr: src.into(), dst_addr: dst.into(), protocol: proto, payload_len: len, ttl, tos, ident, dont_frag: df };
        let mut b = vec![0; 20 + len];
        r4.emit(&mut b);
        prop_assert_eq!(Ipv4Repr::parse(&Ipv4Packet::new_checked(&b[..]).unwrap()).unwrap(), r4);
        let r6 = Ipv6Repr { src_addr: src6.into(), dst_addr: dst6.into(), next_header: proto, payload_len: len, hop_limit: ttl, traffic_class: tc, flow_label: flow };
        let mut b = vec![0; 40 + len];
        r6.emit(&mut b);
        prop_assert_eq!(Ipv6Repr::parse(&Ipv6Packet::new_checked(&b[..]).unwrap()).unwrap(), r6);
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..120)) {
        fuzzing::mptcp_option(&data);
        fuzzing::tcp_options(&data);
        fuzzing::tcp_segment(&data);
        fuzzing::ipv4(&data);
        fuzzing::ipv6(&data);
    }

    #[test]
    fn mptcp_parser_never_panics_on_well_framed_garbage(sub in 0u8..16, rest in proptest::collection::vec(any::<u8>(), 0..40)) {
        // Kind 30 and a matching length, so the subtype parsers themselves get the garbage.
        let mut data = vec![30, u8::try_from(rest.len() + 3).unwrap(), sub << 4];
        data.extend_from_slice(&rest);
        fuzzing::mptcp_option(&data);
        fuzzing::tcp_options(&data);
    }
}
