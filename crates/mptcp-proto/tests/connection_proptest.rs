//! The connection fuzz body over random inputs: raw bytes, and a completed handshake followed
//! by random operations (so the later states are reached often).
#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use mptcp_proto::fuzzing;
use proptest::prelude::*;

/// The client's ISN and port, its SYN, its ACK, and the server's `accept` (the encoding of
/// `fuzzing::tcp_connection`).
const HANDSHAKE: &[u8] = &[
    0x12, 0x34, 0x56, 0x78, 0, // ISN, port
    0, 0x02, 2, 0x04, 0x00, 0x0f, 0, 0, 0xff, 0xff, 0x05, 0xb4, 7, 0, 0, 1, 0, 0, 0, 0,
    0, // SYN
    0, 0x10, 3, 0x04, 0x00, 0x04, 0x00, 0x0f, 0, 0, 0xff, 0xff, 0x05, 0xb4, 7, 0, 0, 1, 0, 0, 0, 0,
    0, // ACK
    3, 0, 0, // accept
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzzing::tcp_connection(&data);
    }

    #[test]
    fn arbitrary_operations_on_an_established_connection_never_panic(
        ops in proptest::collection::vec(any::<u8>(), 0..1200),
    ) {
        let mut data = HANDSHAKE.to_vec();
        data.extend_from_slice(&ops);
        fuzzing::tcp_connection(&data);
    }
}
