//! Property tests of the Convert codec (RFC 8803 §6): every message round-trips through emit and
//! parse, and no input makes the parser panic or read past what it was given.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use mpbond::convert::auth::{Auth, Key, Name};
use mpbond::convert::message::{self, Connect, ErrorCode, ErrorTlv, Message, ParseError};
use proptest::prelude::*;

fn remote() -> impl Strategy<Value = SocketAddr> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        // IPv4-mapped IPv6 addresses are IPv4 on the wire, so they parse back as IPv4.
        any::<[u8; 16]>().prop_map(|a| {
            let v6 = Ipv6Addr::from(a);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }),
    ];
    (ip, any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

/// Well-framed TCP options: NOPs and kind/length/value options (no EOL, which starts padding).
fn tcp_options() -> impl Strategy<Value = Vec<u8>> {
    let one = prop_oneof![
        Just(vec![1u8]),
        (2u8..=254, proptest::collection::vec(any::<u8>(), 0..12)).prop_map(|(kind, data)| {
            let mut o = vec![kind, u8::try_from(data.len() + 2).unwrap()];
            o.extend(data);
            o
        }),
    ];
    proptest::collection::vec(one, 0..5).prop_map(|v| v.concat())
}

fn error_tlv() -> impl Strategy<Value = ErrorTlv> {
    (
        any::<u8>(),
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(code, first, mut rest)| {
            // Zero bytes after the first that end the TLV are padding (see `ErrorTlv::value`).
            while rest.last() == Some(&0) {
                rest.pop();
            }
            let mut value = vec![first];
            value.extend(rest);
            ErrorTlv {
                code: ErrorCode::from(code),
                value,
            }
        })
}

fn auth() -> impl Strategy<Value = Auth> {
    (
        "[A-Za-z0-9._-]{1,64}",
        any::<u64>(),
        any::<[u8; 16]>(),
        any::<[u8; 32]>(),
        any::<bool>(),
    )
        .prop_map(|(name, timestamp, nonce, hmac, early_answer)| Auth {
            name: Name::new(&name).unwrap(),
            timestamp,
            nonce,
            hmac,
            early_answer,
        })
}

prop_compose! {
    fn any_message()(
        info in any::<bool>(),
        connect in proptest::option::of((remote(), tcp_options())
            .prop_map(|(remote, tcp_options)| Connect { remote, tcp_options })),
        extended_tcp_header in proptest::option::of(tcp_options()),
        supported_tcp_extensions in proptest::option::of(
            proptest::collection::vec(1u8..=255, 0..10)),
        cookie in proptest::option::of(
            proptest::collection::vec(any::<[u8; 4]>(), 0..6).prop_map(|w| w.concat())),
        error in proptest::option::of(error_tlv()),
        auth in proptest::option::of(auth()),
    ) -> Message {
        Message {
            info, connect, extended_tcp_header, supported_tcp_extensions, cookie, error, auth,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_message_round_trips(msg in any_message()) {
        let bytes = msg.emit().expect("these messages fit 1020 bytes");
        prop_assert_eq!(bytes.len() % 4, 0);
        prop_assert_eq!(message::message_len(&bytes), Ok(bytes.len()));
        prop_assert_eq!(Message::parse(&bytes), Ok(msg));
    }

    #[test]
    fn any_bytes_parse_or_fail_cleanly(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        mpbond::convert::fuzz_message(&data);
        // With a valid header in front, the TLV walk sees the arbitrary bytes too.
        let mut framed = vec![1, 0, 0x22, 0x63];
        framed.extend_from_slice(&data[..data.len() / 4 * 4]);
        framed[1] = u8::try_from(framed.len() / 4).unwrap_or(255);
        mpbond::convert::fuzz_message(&framed);
        if let Err(e) = Message::parse(&framed) {
            // Every error names an RFC 8803 code to answer with, in the validation range.
            prop_assert!(u8::from(e.error_code()) <= 2);
        }
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_shorter_message(
        msg in any_message(),
        cut in 1usize..64,
    ) {
        let bytes = msg.emit().unwrap();
        let end = bytes.len().saturating_sub(cut);
        let r = Message::parse(&bytes[..end]);
        let truncated = matches!(r, Err(ParseError::Truncated { .. }));
        prop_assert!(truncated, "{:?}", r);
    }

    #[test]
    fn the_hmac_binds_every_connect_field(
        a in remote(),
        b in remote(),
        opts in tcp_options(),
        nonce in any::<[u8; 16]>(),
    ) {
        let key = Key::from_bytes([3; 32]);
        let name = Name::new("gw").unwrap();
        let ca = Connect { remote: a, tcp_options: Vec::new() };
        let auth = Auth::sign(&key, &name, 1_000, nonce, &ca);
        prop_assert!(auth.verify(&key, &ca));
        let cb = Connect { remote: b, tcp_options: opts };
        prop_assert_eq!(auth.verify(&key, &cb), ca == cb);
    }
}
