//! `mpbond decode` on captures of the real Linux kernel MPTCP, made here in a lab: two paths,
//! `ADD_ADDR`, `MP_JOIN`, `MP_PRIO`, `REMOVE_ADDR`, DSS checksums, `MP_FASTCLOSE`, IPv4 and IPv6.
//! Every check must pass, and every option must agree with tshark's MPTCP dissection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mpbond::decode::record::{Check, OptionRecord, PacketRecord};
use mpbond::decode::{Summary, decode};
use mpbond::lab::testing::{Capture, TestLab, skip_unless_root};
use mpbond::lab::{Role, netns};
use socket2::{Domain, Protocol, Socket, Type};

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");

fn ip(lab: &TestLab, role: Role, args: &[&str]) {
    let out = Command::new("ip")
        .arg("-n")
        .arg(lab.info().netns(role))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One MPTCP connection from the gateway to the vps at `server`, with the in-kernel path manager
/// joining and announcing the second line; midway the gateway marks its second address backup
/// (`MP_PRIO`) and the vps withdraws its announcement (`REMOVE_ADDR`). With `abort`, the client
/// closes with `SO_LINGER` 0, which makes the kernel send `MP_FASTCLOSE`.
fn connection(lab: &TestLab, server: SocketAddr, prio_id: &str, remove_id: &str, abort: bool) {
    let (vps, gw) = (
        lab.info().netns(Role::Vps).to_owned(),
        lab.info().netns(Role::Gw).to_owned(),
    );
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let srv = std::thread::spawn(move || {
        netns::in_netns(&vps, move || {
            let s = Socket::new(
                Domain::for_address(server),
                Type::STREAM,
                Some(Protocol::MPTCP),
            )
            .unwrap();
            s.set_reuse_address(true).unwrap();
            s.bind(&server.into()).unwrap();
            s.listen(1).unwrap();
            ready_tx.send(()).unwrap();
            let (c, _) = s.accept().unwrap();
            let mut c = std::net::TcpStream::from(c);
            let mut buf = vec![0; 65536];
            let mut total = 0;
            // A reset (MP_FASTCLOSE) ends the connection too.
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
                let _ = c.write_all(&buf[..n.min(100)]);
            }
            total
        })
        .unwrap()
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let client = netns::in_netns(&gw, || {
        let c = Socket::new(
            Domain::for_address(server),
            Type::STREAM,
            Some(Protocol::MPTCP),
        )
        .unwrap();
        c.connect(&server.into()).unwrap();
        c
    })
    .unwrap();
    let mut stream = std::net::TcpStream::from(client);
    let chunk = vec![0x42u8; 20_000];
    let send = |stream: &mut std::net::TcpStream, n: usize| {
        for _ in 0..n {
            stream.write_all(&chunk).unwrap();
            std::thread::sleep(Duration::from_millis(40));
        }
    };
    send(&mut stream, 25);
    ip(
        lab,
        Role::Gw,
        &["mptcp", "endpoint", "change", "id", prio_id, "backup"],
    );
    send(&mut stream, 5);
    ip(
        lab,
        Role::Vps,
        &["mptcp", "endpoint", "delete", "id", remove_id],
    );
    send(&mut stream, 5);
    if abort {
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    } else {
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let _ = stream.read_to_end(&mut Vec::new());
    }
    drop(stream);
    let got = srv.join().unwrap();
    assert!(got > 0);
}

/// Captures kernel MPTCP traffic of both address families into `path`.
fn capture(lab: &TestLab, path: &Path) {
    for role in [Role::Gw, Role::Vps] {
        netns::sysctl(lab.info().netns(role), "net.mptcp.checksum_enabled", "1").unwrap();
        ip(
            lab,
            role,
            &[
                "mptcp",
                "limits",
                "set",
                "subflows",
                "4",
                "add_addr_accepted",
                "4",
            ],
        );
    }
    ip(
        lab,
        Role::Vps,
        &[
            "mptcp", "endpoint", "add", "10.2.0.1", "dev", "b", "signal", "id", "2",
        ],
    );
    ip(
        lab,
        Role::Vps,
        &[
            "mptcp",
            "endpoint",
            "add",
            "fd00:2::1",
            "dev",
            "b",
            "signal",
            "id",
            "3",
        ],
    );
    ip(
        lab,
        Role::Gw,
        &[
            "mptcp", "endpoint", "add", "10.2.0.2", "dev", "b", "subflow", "id", "2",
        ],
    );
    ip(
        lab,
        Role::Gw,
        &[
            "mptcp",
            "endpoint",
            "add",
            "fd00:2::2",
            "dev",
            "b",
            "subflow",
            "id",
            "3",
        ],
    );

    let capture = Capture::start(lab, Role::Gw, "tcp", path);
    connection(lab, "10.1.0.1:5001".parse().unwrap(), "2", "2", true);
    connection(lab, "[fd00:1::1]:5002".parse().unwrap(), "3", "3", false);
    capture.stop();
}

fn decode_file(path: &Path) -> (Vec<PacketRecord>, Summary) {
    let mut records = Vec::new();
    let summary = decode(std::fs::File::open(path).unwrap(), |r| {
        records.push(r.clone());
    })
    .unwrap();
    (records, summary)
}

/// tshark's MPTCP options per frame: `-T json --no-duplicate-keys` gives each option its object.
fn tshark_options(path: &Path) -> BTreeMap<u64, Vec<serde_json::Value>> {
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(path)
        .args(["-T", "json", "--no-duplicate-keys", "-J", "frame tcp"])
        .output()
        .expect("tshark (install tshark)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packets: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut by_frame = BTreeMap::new();
    for p in packets {
        let layers = &p["_source"]["layers"];
        let frame: u64 = layers["frame"]["frame.number"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let options = match &layers["tcp"]["tcp.options_tree"]["mptcp"] {
            serde_json::Value::Array(a) => a.clone(),
            serde_json::Value::Null => Vec::new(),
            one => vec![one.clone()],
        };
        by_frame.insert(frame, options);
    }
    by_frame
}

/// A tshark field as an integer (decimal or `0x` hex).
fn num(o: &serde_json::Value, field: &str) -> Option<u64> {
    let s = o.get(field)?.as_str()?;
    Some(s.strip_prefix("0x").map_or_else(
        || s.parse().unwrap(),
        |h| u64::from_str_radix(h, 16).unwrap(),
    ))
}

fn flag(o: &serde_json::Value, field: &str) -> Option<bool> {
    let tree = o.get("tcp.options.mptcp.flags_tree").unwrap_or(o);
    tree.get(field)
        .or_else(|| o.get(field))
        .and_then(|v| v.as_str())
        .map(|v| v == "1" || v == "True")
}

fn hex_num(h: Option<&impl ToString>) -> Option<u64> {
    h.map(|h| u64::from_str_radix(&h.to_string(), 16).unwrap())
}

/// One option of ours against tshark's dissection of it.
#[expect(clippy::too_many_lines, reason = "one arm per MPTCP subtype")]
fn agree(frame: u64, ours: &OptionRecord, t: &serde_json::Value) {
    let ctx = format!("frame {frame}: ours {ours:?}\ntshark {t}");
    assert_eq!(
        num(t, "tcp.option_len"),
        Some(u64::from(ours.length)),
        "length: {ctx}"
    );
    let sub = num(t, "tcp.options.mptcp.subtype").unwrap();
    assert_eq!(
        mptcp_proto::wire::mptcp::subtype_name(u8::try_from(sub).unwrap()),
        ours.subtype,
        "{ctx}"
    );
    let key = |k: &Option<mpbond::decode::record::Hex<16>>| hex_num(k.as_ref());
    match ours.subtype {
        "MP_CAPABLE" => {
            assert_eq!(
                num(t, "tcp.options.mptcp.version"),
                ours.version.map(u64::from),
                "{ctx}"
            );
            assert_eq!(
                num(t, "tcp.options.mptcp.sendkey"),
                key(&ours.sender_key),
                "{ctx}"
            );
            assert_eq!(
                num(t, "tcp.options.mptcp.recvkey"),
                key(&ours.receiver_key),
                "{ctx}"
            );
            assert_eq!(
                num(t, "tcp.options.mptcp.datalvllen"),
                ours.data_len.map(u64::from),
                "{ctx}"
            );
            assert_eq!(
                flag(t, "tcp.options.mptcp.checksumreq.flags"),
                ours.checksum_required,
                "{ctx}"
            );
        }
        "MP_JOIN" => {
            assert_eq!(
                num(t, "tcp.options.mptcp.addrid"),
                ours.address_id.map(u64::from),
                "{ctx}"
            );
            assert_eq!(
                num(t, "tcp.options.mptcp.recvtok"),
                hex_num(ours.token.as_ref()),
                "{ctx}"
            );
            assert_eq!(
                num(t, "tcp.options.mptcp.sendrand"),
                hex_num(ours.nonce.as_ref()),
                "{ctx}"
            );
            if ours.form != Some("ack") {
                assert_eq!(
                    flag(t, "tcp.options.mptcp.backup.flag"),
                    ours.backup,
                    "backup: {ctx}"
                );
            }
            match ours.form {
                Some("synack") => assert_eq!(
                    num(t, "tcp.options.mptcp.sendtrunchmac"),
                    hex_num(ours.hmac.as_ref()),
                    "{ctx}"
                ),
                Some("ack") => {
                    let theirs = t["tcp.options.mptcp.sendhmac"]
                        .as_str()
                        .unwrap()
                        .replace(':', "");
                    assert_eq!(
                        Some(theirs),
                        ours.hmac.as_ref().map(ToString::to_string),
                        "{ctx}"
                    );
                }
                _ => {}
            }
        }
        "DSS" => {
            assert_eq!(
                flag(t, "tcp.options.mptcp.datafin.flag"),
                ours.data_fin,
                "{ctx}"
            );
            assert_eq!(
                num(t, "tcp.options.mptcp.rawdataack"),
                ours.data_ack,
                "{ctx}"
            );
            assert_eq!(num(t, "tcp.options.mptcp.rawdataseqno"), ours.dsn, "{ctx}");
            assert_eq!(
                num(t, "tcp.options.mptcp.subflowseqno"),
                ours.ssn.map(u64::from),
                "{ctx}"
            );
            assert_eq!(
                num(t, "tcp.options.mptcp.datalvllen"),
                ours.data_len.map(u64::from),
                "{ctx}"
            );
            // Wireshark 4.0 does not show a DSS checksum field (the length, compared above,
            // accounts for it); compare it where tshark has it.
            if let Some(theirs) = num(t, "tcp.options.mptcp.checksum") {
                assert_eq!(Some(theirs), hex_num(ours.checksum.as_ref()), "{ctx}");
            }
        }
        "ADD_ADDR" => {
            assert_eq!(flag(t, "tcp.options.mptcp.echo"), ours.echo, "{ctx}");
            assert_eq!(
                num(t, "tcp.options.mptcp.addrid"),
                ours.address_id.map(u64::from),
                "{ctx}"
            );
            let addr = t
                .get("tcp.options.mptcp.ipv4")
                .or_else(|| t.get("tcp.options.mptcp.ipv6"));
            assert_eq!(
                addr.and_then(|a| a.as_str())
                    .map(|a| a.parse::<IpAddr>().unwrap()),
                ours.address,
                "{ctx}"
            );
            assert_eq!(
                num(t, "tcp.options.mptcp.port"),
                ours.port.map(u64::from),
                "{ctx}"
            );
            assert_eq!(
                num(t, "tcp.options.mptcp.addaddrtrunchmac"),
                hex_num(ours.hmac.as_ref()),
                "{ctx}"
            );
        }
        "REMOVE_ADDR" => {
            let theirs: Vec<u64> = match &t["tcp.options.mptcp.addrid"] {
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|v| v.as_str().unwrap().parse().unwrap())
                    .collect(),
                v => vec![v.as_str().unwrap().parse().unwrap()],
            };
            let ours: Vec<u64> = ours
                .address_ids
                .as_ref()
                .unwrap()
                .iter()
                .map(|&i| u64::from(i))
                .collect();
            assert_eq!(theirs, ours, "{ctx}");
        }
        "MP_PRIO" => assert_eq!(
            flag(t, "tcp.options.mptcp.backup.flag"),
            ours.backup,
            "{ctx}"
        ),
        "MP_FASTCLOSE" => assert_eq!(
            num(t, "tcp.options.mptcp.recvkey"),
            key(&ours.receiver_key),
            "{ctx}"
        ),
        "MP_TCPRST" => assert_eq!(
            num(t, "tcp.options.mptcp.rst_reason"),
            ours.reason.map(u64::from),
            "{ctx}"
        ),
        other => panic!("unexpected {other}: {ctx}"),
    }
}

#[test]
fn kernel_captures_decode_with_every_check_true_and_agree_with_tshark() {
    if skip_unless_root("kernel_captures_decode_with_every_check_true_and_agree_with_tshark") {
        return;
    }
    let lab = TestLab::up(EXE, &["a:unlimited:2ms", "b:unlimited:2ms"]);
    let dir = std::env::temp_dir().join(format!("mpbond-decode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kernel.pcap");
    capture(&lab, &path);
    let (records, summary) = decode_file(&path);
    let tshark = tshark_options(&path);
    std::fs::remove_dir_all(&dir).ok();

    // Every check the keys allow passes, and none is left unmade.
    eprintln!(
        "{} TCP packets, checks: {} passed, {} failed, {} unchecked",
        summary.tcp_packets, summary.checks.passed, summary.checks.failed, summary.checks.unchecked
    );
    assert_eq!(summary.checks.failed, 0, "{:?}", summary.checks.failures);
    assert_eq!(summary.checks.unchecked, 0, "checks left unmade");
    assert!(summary.malformed.is_empty(), "{:?}", summary.malformed);
    assert_eq!(summary.connections.len(), 2, "{:?}", summary.connections);
    for c in &summary.connections {
        assert!(c.checksums && c.subflows.len() >= 2, "{c:?}");
    }
    assert_every_kind_is_there(&records);
    assert_agrees_with_tshark(&records, &tshark);
}

/// The capture holds every kind of option the test is about, each with its check passed.
fn assert_every_kind_is_there(records: &[PacketRecord]) {
    let options: Vec<(&PacketRecord, &OptionRecord)> = records
        .iter()
        .flat_map(|r| r.mptcp.iter().map(move |o| (r, o)))
        .collect();
    let seen = |f: &dyn Fn(&OptionRecord) -> bool| options.iter().any(|(_, o)| f(o));
    assert!(
        seen(&|o| o.subtype == "MP_CAPABLE" && o.checksum_ok == Check::Checked(true)),
        "MP_CAPABLE with a checked data checksum"
    );
    for form in ["syn", "synack", "ack"] {
        assert!(
            seen(&|o| o.form == Some(form)
                && (o.token_ok == Check::Checked(true) || o.hmac_ok == Check::Checked(true))),
            "MP_JOIN {form}"
        );
    }
    assert!(
        seen(&|o| o.subtype == "ADD_ADDR" && o.hmac_ok == Check::Checked(true)),
        "ADD_ADDR with a checked HMAC"
    );
    assert!(
        seen(&|o| o.subtype == "ADD_ADDR" && o.echo == Some(true)),
        "ADD_ADDR echo"
    );
    assert!(
        seen(&|o| o.subtype == "ADD_ADDR" && o.address.is_some_and(|a| a.is_ipv6())),
        "IPv6 ADD_ADDR"
    );
    assert!(seen(&|o| o.subtype == "REMOVE_ADDR"), "REMOVE_ADDR");
    assert!(
        seen(&|o| o.subtype == "MP_PRIO" && o.backup == Some(true)),
        "MP_PRIO"
    );
    assert!(
        seen(&|o| o.subtype == "MP_FASTCLOSE" && o.key_ok == Check::Checked(true)),
        "MP_FASTCLOSE with the right key"
    );
    assert!(
        options
            .iter()
            .filter(|(_, o)| o.subtype == "DSS" && o.checksum_ok == Check::Checked(true))
            .count()
            > 50
    );
    assert!(options.iter().any(|(r, _)| r.src.is_ipv6()), "IPv6 packets");
}

/// Every MPTCP option agrees with tshark's dissection of the same file.
fn assert_agrees_with_tshark(
    records: &[PacketRecord],
    tshark: &BTreeMap<u64, Vec<serde_json::Value>>,
) {
    let mut compared = 0;
    for r in records {
        let theirs = tshark.get(&r.frame).map_or(&[][..], Vec::as_slice);
        assert_eq!(
            theirs.len(),
            r.mptcp.len(),
            "frame {}: {} options for tshark, {} for us",
            r.frame,
            theirs.len(),
            r.mptcp.len()
        );
        for (o, t) in r.mptcp.iter().zip(theirs) {
            agree(r.frame, o, t);
            compared += 1;
        }
    }
    eprintln!("{compared} MPTCP options agree with tshark");
    assert!(compared > 500);
}
