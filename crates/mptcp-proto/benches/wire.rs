//! Parsing speed of the wire layer. Run with `cargo bench -p mptcp-proto`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mptcp_proto::wire::mptcp::{DataSeqField, Dss, DssMapping, MptcpOption};
use mptcp_proto::wire::tcp_option::{TcpOption, TcpOptions};

fn options_field() -> Vec<u8> {
    // What a data segment of a Linux MPTCP connection carries: NOP, NOP, timestamps, DSS with
    // 8-byte data ACK and 8-byte mapping.
    let dss = MptcpOption::Dss(Dss {
        data_fin: false,
        data_ack: Some(DataSeqField::Long(14_413_541_604_287_230_030)),
        mapping: Some(DssMapping {
            dsn: DataSeqField::Long(11_713_449_205_243_392_242),
            ssn: 1,
            data_len: 1428,
            checksum: None,
        }),
    });
    let mut out = vec![1, 1];
    let ts = TcpOption::Timestamps { tsval: 1, tsecr: 2 };
    let mut b = vec![0; ts.buffer_len()];
    ts.emit(&mut b);
    out.extend_from_slice(&b);
    let mut b = vec![0; dss.buffer_len()];
    dss.emit(&mut b);
    out.extend_from_slice(&b);
    out
}

fn bench(c: &mut Criterion) {
    let field = options_field();
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tcp options with DSS", |b| {
        b.iter(|| {
            let mut n = 0;
            for o in TcpOptions::new(std::hint::black_box(&field)) {
                if let Ok(TcpOption::Mptcp(MptcpOption::Dss(d))) = o {
                    n += usize::from(d.mapping.is_some());
                }
            }
            n
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
