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
