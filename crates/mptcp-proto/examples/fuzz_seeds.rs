//! Writes the seed corpus of the wire fuzz targets: every MPTCP option form, TCP options fields,
//! TCP segments and IPv4/IPv6 packets built from them, and a few known-bad inputs; and scripts
//! for the connection target (`tcp_connection`): handshakes, data, closes in several orders.
//!
//! `cargo run -p mptcp-proto --example fuzz_seeds -- fuzz/corpus`

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use mptcp_proto::wire::ipv4::Ipv4Repr;
use mptcp_proto::wire::ipv6::Ipv6Repr;
use mptcp_proto::wire::mptcp::{
    AddAddr, AddAddrForm, DataSeqField, Dss, DssMapping, MpCapable, MpCapableFlags, MpCapableKeys,
    MpFail, MpFastclose, MpJoin, MpPrio, MpTcpRst, MptcpOption, RemoveAddr,
};
use mptcp_proto::wire::tcp::{SeqNumber, TcpFlags, TcpRepr};

#[expect(
    clippy::too_many_lines,
    reason = "a table of every option form, one per line"
)]
fn options() -> Vec<MptcpOption<'static>> {
    let v4 = IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1));
    let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 1));
    let cap = |keys| {
        MptcpOption::MpCapable(MpCapable {
            version: 1,
            flags: MpCapableFlags(0x81),
            keys,
        })
    };
    let map = |dsn, checksum| {
        Some(DssMapping {
            dsn,
            ssn: 1,
            data_len: 1428,
            checksum,
        })
    };
    vec![
        cap(MpCapableKeys::None),
        cap(MpCapableKeys::Sender {
            sender_key: 0x29a6_c869_81ad_933c,
        }),
        cap(MpCapableKeys::Both {
            sender_key: 1,
            receiver_key: 2,
        }),
        cap(MpCapableKeys::WithData {
            sender_key: 1,
            receiver_key: 2,
            data_len: 100,
            checksum: None,
        }),
        cap(MpCapableKeys::WithData {
            sender_key: 1,
            receiver_key: 2,
            data_len: 100,
            checksum: Some(7),
        }),
        MptcpOption::MpCapable(MpCapable {
            version: 0,
            flags: MpCapableFlags(0x81),
            keys: MpCapableKeys::Sender { sender_key: 3 },
        }),
        MptcpOption::MpJoin(MpJoin::Syn {
            backup: true,
            address_id: 2,
            token: 0xe47f_0142,
            nonce: 9,
        }),
        MptcpOption::MpJoin(MpJoin::SynAck {
            backup: false,
            address_id: 1,
            hmac: 0x5ab6_80c7_884a_f03d,
            nonce: 8,
        }),
        MptcpOption::MpJoin(MpJoin::Ack { hmac: [0xcb; 20] }),
        MptcpOption::Dss(Dss {
            data_fin: false,
            data_ack: Some(DataSeqField::Short(5)),
            mapping: None,
        }),
        MptcpOption::Dss(Dss {
            data_fin: false,
            data_ack: Some(DataSeqField::Long(5)),
            mapping: map(DataSeqField::Long(9), None),
        }),
        MptcpOption::Dss(Dss {
            data_fin: true,
            data_ack: None,
            mapping: map(DataSeqField::Short(9), Some(0x9e91)),
        }),
        MptcpOption::AddAddr(AddAddr {
            address_id: 1,
            address: v4,
            port: None,
            form: AddAddrForm::Announce { hmac: 1 },
        }),
        MptcpOption::AddAddr(AddAddr {
            address_id: 1,
            address: v6,
            port: Some(8080),
            form: AddAddrForm::Echo,
        }),
        MptcpOption::AddAddr(AddAddr {
            address_id: 1,
            address: v4,
            port: Some(22),
            form: AddAddrForm::V0,
        }),
        MptcpOption::RemoveAddr(RemoveAddr {
            address_ids: &[1, 2, 3],
        }),
        MptcpOption::MpPrio(MpPrio {
            backup: true,
            address_id: None,
        }),
        MptcpOption::MpPrio(MpPrio {
            backup: false,
            address_id: Some(4),
        }),
        MptcpOption::MpFail(MpFail { dsn: 77 }),
        MptcpOption::MpFastclose(MpFastclose {
            receiver_key: 0xd005_b1ab_34ba_d344,
        }),
        MptcpOption::MpTcpRst(MpTcpRst {
            flags: MpTcpRst::TRANSIENT,
            reason: 1,
        }),
        MptcpOption::Unknown {
            subtype: 0xf,
            data: &[0xf0, 1, 2],
        },
    ]
}

fn emit(o: &MptcpOption<'_>) -> Vec<u8> {
    let mut b = vec![0; o.buffer_len()];
    o.emit(&mut b);
    b
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join(name), bytes)
}

/// Writes `o` in a segment with a little payload, and that segment in IPv4 and IPv6 packets.
fn write_packets(dir: &Path, i: usize, o: &MptcpOption<'_>) -> std::io::Result<()> {
    let (src4, dst4) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
    let (src6, dst6) = (
        Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2),
        Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1),
    );
    let mut r = TcpRepr {
        src_port: 40000,
        dst_port: 443,
        flags: TcpFlags(TcpFlags::PSH),
        seq_number: SeqNumber(1000),
        ack_number: Some(SeqNumber(2000)),
        window_len: 512,
        timestamps: Some((1, 2)),
        payload: b"seed",
        ..TcpRepr::default()
    };
    r.mptcp.push(o.clone());
    if r.options_len() > 40 {
        return Ok(());
    }
    let mut seg = vec![0; r.buffer_len()];
    r.emit(&mut seg, src4.into(), dst4.into());
    write(dir, "tcp_segment", &format!("segment-{i:02}"), &seg)?;
    let ip4 = Ipv4Repr {
        src_addr: src4,
        dst_addr: dst4,
        protocol: 6,
        payload_len: seg.len(),
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
    };
    let mut p = vec![0; 20 + seg.len()];
    ip4.emit(&mut p);
    p[20..].copy_from_slice(&seg);
    write(dir, "ipv4", &format!("packet-{i:02}"), &p)?;
    let ip6 = Ipv6Repr {
        src_addr: src6,
        dst_addr: dst6,
        next_header: 6,
        payload_len: seg.len(),
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 1,
    };
    let mut p = vec![0; 40 + seg.len()];
    ip6.emit(&mut p);
    p[40..].copy_from_slice(&seg);
    write(dir, "ipv6", &format!("packet-{i:02}"), &p)
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".to_owned());
    let dir = Path::new(&dir);
    for (i, o) in options().iter().enumerate() {
        let bytes = emit(o);
        write(dir, "mptcp_option", &format!("option-{i:02}"), &bytes)?;
        // The same option in an options field, after a timestamp and padding.
        let mut field = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        field.extend_from_slice(&bytes);
        write(dir, "tcp_options", &format!("field-{i:02}"), &field)?;
        write_packets(dir, i, o)?;
    }
    // Known-bad inputs: the DSS of tcpdump's mptcp-dss-oobr.pcap (length 3), a length byte
    // running past the end, an IPv6 routing header claiming more than there is.
    write(dir, "mptcp_option", "bad-dss-length-3", &[30, 3, 0x20])?;
    write(
        dir,
        "tcp_options",
        "bad-dss-length-3",
        &[30, 3, 0x20, 1, 4, 2],
    )?;
    write(dir, "tcp_options", "bad-length-past-end", &[2, 40, 5, 180])?;
    let mut p = vec![0x60, 0, 0, 0, 0, 8, 43, 64];
    p.extend_from_slice(&[0; 32]);
    p.extend_from_slice(&[6, 200, 0, 0, 0, 0, 0, 0]);
    write(dir, "ipv6", "bad-routing-header", &p)?;
    for (name, script) in connection_scripts() {
        write(dir, "tcp_connection", name, &script)?;
    }
    Ok(())
}

/// Ops of `mptcp_proto::fuzzing::tcp_connection`, as its input encodes them.
struct Script(Vec<u8>);

impl Script {
    fn new() -> Self {
        // The client's ISN and port.
        Script(vec![0x12, 0x34, 0x56, 0x78, 0])
    }
    /// A segment with sequence and acknowledgment numbers where the server expects them
    /// (`delta` added to both), timestamps and `len` payload bytes.
    fn seg(mut self, flags: u16, delta: u16, len: u16) -> Self {
        // A SYN carries the client's ISN; other segments sit where the server expects them.
        let syn = flags & TcpFlags::SYN != 0;
        self.0.push(0);
        self.0.push(u8::try_from(flags).unwrap_or(0));
        self.0.push(if syn { 2 } else { 3 });
        if !syn {
            self.0
                .extend_from_slice(&(1024u16.wrapping_add(delta)).to_be_bytes());
        }
        self.0
            .extend_from_slice(&(1024u16.wrapping_add(delta)).to_be_bytes());
        // Options: MSS, window scale, SACK-permitted, timestamps.
        self.0.push(0x0f);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(&65535u16.to_be_bytes()); // window
        self.0.extend_from_slice(&1460u16.to_be_bytes()); // MSS
        self.0.push(7); // window scale
        self.0.extend_from_slice(&[0, 0, 1, 0, 0, 0, 0, 0]); // TSval, TSecr
        self
    }
    fn op(mut self, op: u8, arg: &[u8]) -> Self {
        self.0.push(op);
        self.0.extend_from_slice(arg);
        self
    }
}

fn connection_scripts() -> Vec<(&'static str, Vec<u8>)> {
    let syn = TcpFlags::SYN;
    let ack = TcpFlags::ACK;
    let fin = TcpFlags::FIN | TcpFlags::ACK;
    let rst = TcpFlags::RST;
    let established = || Script::new().seg(syn, 0, 0).seg(ack, 0, 0).op(3, &[0, 0]);
    vec![
        ("handshake", established().0),
        (
            "data-both-ways-then-client-close",
            established()
                .seg(ack, 0, 1000)
                .op(3, &[0x10, 0])
                .op(4, &[])
                .seg(ack, 0, 0)
                .seg(fin, 0, 0)
                .op(5, &[0])
                .seg(ack, 0, 0)
                .op(2, &[200])
                .0,
        ),
        (
            "server-closes-first-and-times-out",
            established().op(5, &[0]).op(2, &[255]).op(2, &[255]).0,
        ),
        (
            "out-of-order-and-sack",
            established()
                .seg(ack, 2000, 500)
                .seg(ack, 0, 1000)
                .op(3, &[0x40, 0])
                .seg(ack, 0, 0)
                .0,
        ),
        (
            "reset-in-window",
            established().seg(rst, 100, 0).seg(rst, 0, 0).0,
        ),
        (
            "zero-window-then-probes",
            established()
                .op(3, &[0x4e, 0x20])
                .op(2, &[50])
                .op(2, &[50])
                .op(6, &[0])
                .0,
        ),
        ("syn-flood", {
            let mut s = Script::new();
            for _ in 0..8 {
                s = s.seg(syn, 0, 0).op(2, &[1]);
            }
            s.0
        }),
    ]
}
