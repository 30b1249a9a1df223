//! `mpbond decode` against tcpdump's own MPTCP test captures and their expected output
//! (`../shared/conformance/tcpdump-tests/*.out`): every MPTCP option of every frame must agree
//! with tcpdump, field by field, and the checks the keys allow must pass.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use mpbond::decode::record::{Check, OptionRecord, PacketRecord};
use mpbond::decode::{Summary, decode};

/// Where the third-party conformance material is: `$MPBOND_CONFORMANCE`, or a `shared/conformance`
/// next to one of the repository's ancestors (the workplace layout), or `/work/shared/conformance`.
fn conformance_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("MPBOND_CONFORMANCE") {
        return Some(PathBuf::from(d));
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .flat_map(|a| {
            [
                a.join("shared/conformance"),
                a.join("../shared/conformance"),
            ]
        })
        .chain([PathBuf::from("/work/shared/conformance")])
        .find(|p| p.join("tcpdump-tests").is_dir())
}

/// The tcpdump captures, or `None` (with a message on the terminal) where this checkout has no
/// conformance material beside it. `scripts/test.sh` says up front whether it found it.
fn tcpdump_dir() -> Option<PathBuf> {
    use std::io::Write as _;
    let d = conformance_dir().map(|d| d.join("tcpdump-tests"));
    if d.is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: tcpdump conformance captures not found (set MPBOND_CONFORMANCE to the shared/conformance directory)"
        );
    }
    d
}

/// The capture's TCP records and summary.
fn decode_file(path: &std::path::Path) -> (Vec<PacketRecord>, Summary) {
    let mut records = Vec::new();
    let file = std::fs::File::open(path).unwrap();
    let summary = decode(file, |r| records.push(r.clone())).unwrap();
    (records, summary)
}

/// tcpdump's output grouped by frame: frame number to the text of the packet (continuation lines
/// of `-v` joined).
fn tcpdump_packets(out: &str) -> BTreeMap<u64, String> {
    let mut packets = BTreeMap::new();
    let mut current: Option<u64> = None;
    for line in out.lines() {
        let mut words = line.split_whitespace();
        let frame = words.next().and_then(|w| w.parse::<u64>().ok());
        let dated = words
            .next()
            .is_some_and(|w| w.len() == 10 && w.as_bytes()[4] == b'-');
        match (frame, dated) {
            (Some(f), true) => {
                packets.insert(f, line.to_owned());
                current = Some(f);
            }
            _ => {
                if let Some(f) = current {
                    let p: &mut String = packets.get_mut(&f).unwrap();
                    p.push(' ');
                    p.push_str(line.trim());
                }
            }
        }
    }
    packets
}

/// The TCP options of a tcpdump packet line, split at top-level commas.
fn tcpdump_options(packet: &str) -> Vec<String> {
    let Some(start) = packet.find("options [") else {
        return Vec::new();
    };
    let mut depth = 0;
    let mut item = String::new();
    let mut items = Vec::new();
    for c in packet[start + "options [".len()..].chars() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' if depth > 0 => depth -= 1,
            ']' => break,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    items.push(item);
    items.into_iter().map(|s| s.trim().to_owned()).collect()
}

fn hex(s: &str) -> String {
    s.trim_start_matches("0x").to_owned()
}

/// Checks one tcpdump MPTCP option text (`mptcp 26 dss ack ... len 8192`) against ours.
#[allow(clippy::too_many_lines, reason = "one arm per tcpdump option format")]
fn check_option(frame: u64, text: &str, ours: &OptionRecord) {
    let ctx = format!("frame {frame}: tcpdump `{text}` vs ours {ours:?}");
    let mut words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(words.remove(0), "mptcp", "{ctx}");
    let length: u8 = words.remove(0).parse().unwrap();
    assert_eq!(length, ours.length, "length: {ctx}");
    let name = words.remove(0);
    let rest = words.join(" ");
    let key_hex = |v: Option<mpbond::decode::record::Hex<16>>| v.map(|k| k.to_string());
    let s = |v: &str| Some(v.to_owned());
    match name {
        "dss[bad" => {
            assert_eq!(ours.subtype, "DSS", "{ctx}");
            assert!(ours.error.is_some(), "malformed option not reported: {ctx}");
        }
        "capable" => {
            assert_eq!(ours.subtype, "MP_CAPABLE", "{ctx}");
            let version: u8 = words[0].trim_start_matches('v').parse().unwrap();
            assert_eq!(ours.version, Some(version), "{ctx}");
            let flags = rest
                .split('[')
                .nth(1)
                .and_then(|f| f.split(']').next())
                .unwrap();
            assert_eq!(ours.flags.as_deref(), Some(flags), "flags: {ctx}");
            assert_eq!(
                ours.checksum_required,
                Some(rest.contains(" csum") || flags.contains('A')),
                "{ctx}"
            );
            let inner: Vec<&str> = rest
                .split('{')
                .nth(1)
                .map_or(vec![], |b| b.trim_end_matches('}').split(',').collect());
            assert_eq!(
                key_hex(ours.sender_key),
                inner.first().map(|k| hex(k)),
                "sender key: {ctx}"
            );
            assert_eq!(
                key_hex(ours.receiver_key),
                inner.get(1).filter(|k| k.starts_with("0x")).map(|k| hex(k)),
                "receiver key: {ctx}"
            );
            let data_len = inner
                .iter()
                .find_map(|w| w.strip_prefix("data_len="))
                .map(|v| v.parse().unwrap());
            assert_eq!(ours.data_len, data_len, "data_len: {ctx}");
            let csum = inner
                .iter()
                .find_map(|w| w.strip_prefix("csum="))
                .map(|v| format!("{:0>4}", hex(v)));
            assert_eq!(ours.checksum.map(|c| c.to_string()), csum, "csum: {ctx}");
        }
        "join" => {
            assert_eq!(ours.subtype, "MP_JOIN", "{ctx}");
            let mut it = words.iter().peekable();
            let mut backup = false;
            while let Some(w) = it.next() {
                match *w {
                    "backup" => backup = true,
                    "id" => assert_eq!(
                        ours.address_id,
                        Some(it.next().unwrap().parse().unwrap()),
                        "{ctx}"
                    ),
                    "token" => assert_eq!(
                        ours.token.map(|t| t.to_string()),
                        s(&hex(it.next().unwrap())),
                        "{ctx}"
                    ),
                    "nonce" => assert_eq!(
                        ours.nonce.map(|t| t.to_string()),
                        s(&hex(it.next().unwrap())),
                        "{ctx}"
                    ),
                    "hmac" => assert_eq!(
                        ours.hmac.as_ref().map(ToString::to_string),
                        s(&hex(it.next().unwrap())),
                        "{ctx}"
                    ),
                    other => panic!("unexpected `{other}`: {ctx}"),
                }
            }
            if ours.form != Some("ack") {
                assert_eq!(ours.backup, Some(backup), "{ctx}");
            }
        }
        "dss" => {
            assert_eq!(ours.subtype, "DSS", "{ctx}");
            assert_eq!(ours.data_fin, Some(words.contains(&"fin")), "{ctx}");
            let field = |k: &str| words.iter().position(|w| *w == k).map(|i| words[i + 1]);
            assert_eq!(
                ours.data_ack,
                field("ack").map(|v| v.parse().unwrap()),
                "ack: {ctx}"
            );
            assert_eq!(
                ours.dsn,
                field("seq").map(|v| v.parse().unwrap()),
                "dsn: {ctx}"
            );
            assert_eq!(
                ours.ssn,
                field("subseq").map(|v| v.parse().unwrap()),
                "ssn: {ctx}"
            );
            assert_eq!(
                ours.data_len,
                field("len").map(|v| v.parse().unwrap()),
                "len: {ctx}"
            );
            assert_eq!(
                ours.checksum.map(|c| c.to_string()),
                field("csum").map(|v| format!("{:0>4}", hex(v))),
                "csum: {ctx}"
            );
        }
        "add-addr" => {
            assert_eq!(ours.subtype, "ADD_ADDR", "{ctx}");
            let (version, echo) = match words[0] {
                "v1" => (1, false),
                "v1-echo" => (1, true),
                "v0-ip4" | "v0-ip6" => (0, false),
                other => panic!("add-addr `{other}`: {ctx}"),
            };
            assert_eq!(
                (ours.version, ours.echo),
                (Some(version), Some(echo)),
                "{ctx}"
            );
            assert_eq!(words[1], "id", "{ctx}");
            assert_eq!(ours.address_id, Some(words[2].parse().unwrap()), "{ctx}");
            let (addr, port) = match words[3].rsplit_once(':') {
                Some((a, p)) if !words[3].contains("::") || words[3].matches(':').count() == 1 => {
                    (a, Some(p.parse().unwrap()))
                }
                _ => (words[3], None),
            };
            assert_eq!(ours.address, Some(addr.parse().unwrap()), "{ctx}");
            assert_eq!(ours.port, port, "{ctx}");
            let hmac = words
                .iter()
                .position(|w| *w == "hmac")
                .map(|i| hex(words[i + 1]));
            assert_eq!(ours.hmac.as_ref().map(ToString::to_string), hmac, "{ctx}");
        }
        "rem-addr" => {
            assert_eq!(ours.subtype, "REMOVE_ADDR", "{ctx}");
            assert_eq!(words[0], "id", "{ctx}");
            let ids: Vec<u8> = words[1..].iter().map(|w| w.parse().unwrap()).collect();
            assert_eq!(ours.address_ids.as_deref(), Some(&ids[..]), "{ctx}");
        }
        "prio" => {
            assert_eq!(ours.subtype, "MP_PRIO", "{ctx}");
            assert_eq!(ours.backup, Some(words[0] == "backup"), "{ctx}");
            let id = words
                .iter()
                .position(|w| *w == "id")
                .map(|i| words[i + 1].parse().unwrap());
            assert_eq!(ours.address_id, id, "{ctx}");
        }
        "fail" => {
            assert_eq!(ours.subtype, "MP_FAIL", "{ctx}");
            assert_eq!(ours.dsn, Some(words[1].parse().unwrap()), "{ctx}");
        }
        "fast-close" => {
            assert_eq!(ours.subtype, "MP_FASTCLOSE", "{ctx}");
            assert_eq!(key_hex(ours.receiver_key), s(&hex(words[1])), "{ctx}");
        }
        "tcprst" => {
            assert_eq!(ours.subtype, "MP_TCPRST", "{ctx}");
            let flags = rest
                .split('[')
                .nth(1)
                .and_then(|f| f.split(']').next())
                .unwrap();
            assert_eq!(
                ours.flags.as_deref(),
                Some(if flags == "none" { "" } else { flags }),
                "{ctx}"
            );
            let reason = rest.split("reason ").nth(1).unwrap();
            assert_eq!(ours.reason_text, Some(reason), "{ctx}");
        }
        other => panic!("tcpdump option `{other}` not understood by this test: {ctx}"),
    }
}

#[test]
fn every_option_of_every_capture_agrees_with_tcpdump() {
    let Some(dir) = tcpdump_dir() else { return };
    let mut captures = 0;
    let mut options = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("pcap") {
            continue;
        }
        captures += 1;
        let expected = std::fs::read_to_string(path.with_extension("out")).unwrap();
        let (records, _) = decode_file(&path);
        let ours: BTreeMap<u64, &PacketRecord> = records.iter().map(|r| (r.frame, r)).collect();
        for (frame, packet) in tcpdump_packets(&expected) {
            let theirs: Vec<String> = tcpdump_options(&packet)
                .into_iter()
                .filter(|o| o.starts_with("mptcp"))
                .collect();
            if theirs.is_empty() {
                // No MPTCP option for tcpdump: none for us either (if it is a TCP packet at all).
                if let Some(rec) = ours.get(&frame) {
                    assert!(
                        rec.mptcp.is_empty(),
                        "{}: frame {frame}: spurious {:?}",
                        path.display(),
                        rec.mptcp
                    );
                }
                continue;
            }
            let rec = ours
                .get(&frame)
                .unwrap_or_else(|| panic!("{}: frame {frame} not decoded", path.display()));
            assert_eq!(
                rec.mptcp.len(),
                theirs.len(),
                "{}: frame {frame}: {:?} vs {theirs:?}",
                path.display(),
                rec.mptcp
            );
            for (t, o) in theirs.iter().zip(&rec.mptcp) {
                check_option(frame, t, o);
                options += 1;
            }
        }
    }
    eprintln!("{captures} captures, {options} MPTCP options agree with tcpdump");
    assert_eq!(captures, 7, "expected the seven tcpdump MPTCP captures");
    assert!(options > 300);
}

#[test]
fn checks_pass_wherever_the_keys_allow() {
    let Some(dir) = tcpdump_dir() else { return };
    // mptcp-v0.pcap: a join (token and both HMACs, SHA-1) and checksummed DSS mappings.
    let (records, summary) = decode_file(&dir.join("mptcp-v0.pcap"));
    assert_eq!(summary.checks.failed, 0, "{:?}", summary.checks.failures);
    assert!(summary.checks.passed > 100, "{}", summary.checks.passed);
    let join: Vec<&OptionRecord> = records
        .iter()
        .flat_map(|r| &r.mptcp)
        .filter(|o| o.subtype == "MP_JOIN")
        .collect();
    assert_eq!(join.len(), 3);
    assert_eq!(join[0].token_ok, Check::Checked(true));
    assert_eq!(join[1].hmac_ok, Check::Checked(true));
    assert_eq!(join[2].hmac_ok, Check::Checked(true));
    assert_eq!(summary.connections.len(), 1);
    assert_eq!(summary.connections[0].subflows.len(), 2);

    // mptcp-fclose.pcap: checksummed DSS and the MP_FASTCLOSE key.
    let (records, summary) = decode_file(&dir.join("mptcp-fclose.pcap"));
    assert_eq!(summary.checks.failed, 0);
    let fastclose = records
        .iter()
        .flat_map(|r| &r.mptcp)
        .find(|o| o.subtype == "MP_FASTCLOSE")
        .unwrap();
    assert_eq!(fastclose.key_ok, Check::Checked(true));
    assert!(
        records
            .iter()
            .flat_map(|r| &r.mptcp)
            .filter(|o| o.checksum_ok == Check::Checked(true))
            .count()
            >= 2
    );

    // mptcp-aa-v1.pcap: the ADD_ADDR HMAC is the leftmost 64 bits (Linux early 2020), which
    // RFC 8684 §3.4.1 makes the rightmost: reported as failed, and recognised.
    let (records, summary) = decode_file(&dir.join("mptcp-aa-v1.pcap"));
    let add = records
        .iter()
        .flat_map(|r| &r.mptcp)
        .find(|o| o.subtype == "ADD_ADDR")
        .unwrap();
    assert_eq!(add.hmac_ok, Check::Checked(false));
    assert_eq!(add.hmac_leftmost, Some(true));
    assert_eq!(summary.checks.failed, 1);
}

#[test]
fn a_malformed_dss_is_reported_without_reading_past_it() {
    let Some(dir) = tcpdump_dir() else { return };
    let (records, summary) = decode_file(&dir.join("mptcp-dss-oobr.pcap"));
    assert_eq!(records.len(), 1);
    let o = &records[0].mptcp[0];
    assert_eq!((o.subtype, o.length), ("DSS", 3));
    assert!(o.error.as_deref().unwrap().contains("DSS"), "{o:?}");
    assert_eq!(summary.malformed.len(), 1);
    // The JSON form carries the error.
    let json = serde_json::to_value(&records[0]).unwrap();
    assert_eq!(json["mptcp"][0]["subtype"], "DSS");
    assert!(json["mptcp"][0]["error"].is_string());
}

#[test]
fn json_fields_use_the_rfc_words_and_types() {
    let Some(dir) = tcpdump_dir() else { return };
    let (records, _) = decode_file(&dir.join("mptcp-v1.pcap"));
    let v: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    assert_eq!(v[0]["flags"], "S");
    assert_eq!(v[1]["flags"], "SA");
    assert_eq!(v[1]["mptcp"][0]["sender_key"], "29a6c86981ad933c");
    assert_eq!(v[2]["mptcp"][0]["receiver_key"], "29a6c86981ad933c");
    assert_eq!(v[6]["mptcp"][0]["dsn"], 11_713_449_205_243_392_242u64);
    assert_eq!(v[6]["mptcp"][0]["ssn"], 1);
    assert_eq!(v[6]["mptcp"][0]["data_len"], 8192);
    assert!(
        v[6]["mptcp"][0].get("checksum_ok").is_none(),
        "no checksum, no check"
    );
    for (i, r) in v.iter().enumerate() {
        for k in [
            "frame", "src", "dst", "sport", "dport", "flags", "seq", "ack", "len", "mptcp",
        ] {
            assert!(r.get(k).is_some(), "record {i} lacks {k}");
        }
    }
}

/// A capture of the lab's own kernel traffic, kept in the repository as a fuzz seed.
fn own_capture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/capture/ethernet.pcap")
}

#[test]
fn the_command_prints_json_lines_and_a_summary() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mpbond"))
        .args(["decode", "--json"])
        .arg(own_capture())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (summary, packets) = lines.split_last().unwrap();
    assert_eq!(packets.len(), 30);
    assert!(packets.iter().all(|p| p["mptcp"].is_array()));
    assert_eq!(
        summary["summary"]["connections"].as_array().unwrap().len(),
        1
    );
    assert_eq!(summary["summary"]["checks"]["failed"], 0);
    assert!(summary["summary"]["checks"]["passed"].as_u64().unwrap() > 10);
    // Reading standard input gives the same.
    let file = std::fs::File::open(own_capture()).unwrap();
    let piped = std::process::Command::new(env!("CARGO_BIN_EXE_mpbond"))
        .args(["decode", "-"])
        .stdin(file)
        .output()
        .unwrap();
    assert!(piped.status.success());
    let text = String::from_utf8(piped.stdout).unwrap();
    assert!(
        text.contains("MP_CAPABLE") && text.contains("checks: "),
        "{text}"
    );
}

#[test]
fn bad_files_get_a_one_line_error() {
    let run = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mpbond"))
            .arg("decode")
            .arg(path)
            .output()
            .unwrap()
    };
    let dir = std::env::temp_dir().join(format!("mpbond-decode-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("notes.txt");
    std::fs::write(&text, "not a capture at all, just some words").unwrap();
    let empty = dir.join("empty.pcap");
    std::fs::write(&empty, "").unwrap();
    for (path, want) in [
        (dir.join("missing.pcap"), "cannot open"),
        (text, "not a pcap or pcapng file"),
        (empty, "empty"),
    ] {
        let out = run(&path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}", path.display());
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
