//! How fast `mpbond decode` reads captures: a synthetic capture of one long MPTCP connection
//! (handshake, then data segments carrying timestamps and a DSS with 64-bit data ACK and
//! mapping), decoded end to end (link layer, IP, TCP, options, connection tracking, checks),
//! without printing. Reported in MPTCP options per second.
//!
//! `cargo bench -p mpbond --bench decode`

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mpbond::decode::capture::PcapWriter;
use mpbond::decode::decode;
use mpbond::decode::link::linktype;
use mptcp_proto::crypto;
use mptcp_proto::wire::ipv4::Ipv4Repr;
use mptcp_proto::wire::mptcp::{
    DataSeqField, Dss, DssMapping, MpCapable, MpCapableFlags, MpCapableKeys, MptcpOption,
};
use mptcp_proto::wire::tcp::{SeqNumber, TcpFlags, TcpRepr};

const CLIENT_KEY: u64 = 0x1fdb_5df3_28bc_3def;
const SERVER_KEY: u64 = 0x29a6_c869_81ad_933c;

/// A capture of `segments` data segments of `payload` bytes each (0: empty segments, so only
/// headers and options are decoded), with DSS checksums when `checksums`.
fn capture(segments: u32, payload: usize, checksums: bool) -> Vec<u8> {
    let src = Ipv4Addr::new(10, 1, 0, 2);
    let dst = Ipv4Addr::new(10, 1, 0, 1);
    let mut w = PcapWriter::new(Vec::new(), linktype::RAW).unwrap();
    let data = vec![0x61u8; payload];
    let mut packet =
        |flags: u16, seq: u32, ack: Option<u32>, option: MptcpOption<'_>, body: &[u8], t: f64| {
            let mut tcp = TcpRepr {
                src_port: 40000,
                dst_port: 80,
                flags: TcpFlags(flags),
                seq_number: SeqNumber(seq),
                ack_number: ack.map(SeqNumber),
                window_len: 1000,
                timestamps: Some((1, 2)),
                payload: body,
                ..TcpRepr::default()
            };
            tcp.mptcp.push(option);
            let ip = Ipv4Repr {
                src_addr: src,
                dst_addr: dst,
                protocol: 6,
                payload_len: tcp.buffer_len(),
                ttl: 64,
                tos: 0,
                ident: 0,
                dont_frag: true,
            };
            let mut b = vec![0; 20 + tcp.buffer_len()];
            ip.emit(&mut b);
            tcp.emit(&mut b[20..], IpAddr::V4(src), IpAddr::V4(dst));
            w.write(t, &b).unwrap();
        };
    let flags = MpCapableFlags(if checksums { 0x81 } else { 0x01 });
    let cap = |keys| {
        MptcpOption::MpCapable(MpCapable {
            version: 1,
            flags,
            keys,
        })
    };
    packet(TcpFlags::SYN, 100, None, cap(MpCapableKeys::None), &[], 0.0);
    packet(
        TcpFlags::ACK,
        101,
        Some(1),
        cap(MpCapableKeys::Both {
            sender_key: CLIENT_KEY,
            receiver_key: SERVER_KEY,
        }),
        &[],
        0.0,
    );
    let idsn = crypto::idsn(CLIENT_KEY);
    let len = u16::try_from(payload.max(1)).unwrap();
    for i in 0..segments {
        let ssn = 1 + i * u32::from(len);
        let dsn = idsn.wrapping_add(u64::from(ssn));
        let checksum = checksums.then(|| crypto::dss_checksum(dsn, ssn, len, &data));
        let dss = Dss {
            data_fin: false,
            data_ack: Some(DataSeqField::Long(0x1234_5678_9abc)),
            mapping: Some(DssMapping {
                dsn: DataSeqField::Long(dsn),
                ssn,
                data_len: len,
                checksum,
            }),
        };
        packet(
            TcpFlags::PSH,
            100u32.wrapping_add(ssn),
            Some(1),
            MptcpOption::Dss(dss),
            &data,
            f64::from(i) * 1e-5,
        );
    }
    w.into_inner()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (name, payload, checksums) in [
        ("empty segments", 0, false),
        ("1400-byte payloads, DSS checksums", 1400, true),
    ] {
        let segments = 50_000;
        let file = capture(segments, payload, checksums);
        g.throughput(Throughput::Elements(u64::from(segments) + 2));
        g.bench_function(format!("{name}: MPTCP options"), |b| {
            b.iter(|| {
                let mut options = 0usize;
                let summary = decode(black_box(&file[..]), |r| options += r.mptcp.len()).unwrap();
                assert_eq!(summary.checks.failed, 0);
                options
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
