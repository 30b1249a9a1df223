//! `mpbond decode FILE.pcap|FILE.pcapng [--json]`: every TCP packet of a capture with its MPTCP
//! options in the RFC's words, following each connection to check tokens, HMACs and DSS
//! checksums wherever the keys in the capture allow, and a summary at the end.
//!
//! Pipeline: [`capture`] reads frames, [`link`] finds the IP packet, `mptcp-proto` parses IP,
//! TCP and the options, [`track`] follows connections and computes the checks, [`record`] holds
//! the result per packet. A record is printed as soon as nothing about it is pending; only a DSS
//! checksum whose mapping continues in later segments holds it back, in a bounded queue.

pub mod capture;
pub mod link;
pub mod mapping;
pub mod record;
pub mod track;

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::Path;

use mptcp_proto::wire::ipv4::Ipv4Packet;
use mptcp_proto::wire::ipv6::Ipv6Packet;
use mptcp_proto::wire::mptcp::{
    AddAddrForm, DataSeqField, MpCapableKeys, MpJoin, MptcpOption, ResetReason, subtype_name,
};
use mptcp_proto::wire::tcp::TcpPacket;
use mptcp_proto::wire::tcp_option::{TcpOption, TcpOptions, mptcp_subtype};
use serde::Serialize;

use self::capture::{CaptureError, Frame};
use self::link::Payload;
use self::record::{Check, Hex, HexBytes, OptionRecord, PacketRecord};
use self::track::{Endpoint, Resolution, Segment, SubflowKind, Tracker};

/// Records held back at most, waiting for multi-segment checksums; past this the oldest
/// pending checks are given up (reported `null`).
const MAX_HELD_RECORDS: usize = 100_000;

/// An option that could not be read, for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Malformed {
    /// Frame number.
    pub frame: u64,
    /// Subtype name, or `TCP` for a TCP option framing error.
    pub subtype: &'static str,
    /// Option length byte (0 if absent).
    pub length: u8,
    /// What is wrong.
    pub error: String,
}

/// A check that failed, for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Frame number.
    pub frame: u64,
    /// Subtype name.
    pub subtype: &'static str,
    /// `token_ok`, `hmac_ok`, `checksum_ok` or `key_ok`.
    pub check: &'static str,
}

/// Totals of the checks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Checks {
    /// Checks that passed.
    pub passed: u64,
    /// Checks that failed.
    pub failed: u64,
    /// Checks that could not be made (`null`).
    pub unchecked: u64,
    /// Every failure.
    pub failures: Vec<Failure>,
}

/// A subflow in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct SubflowSummary {
    /// Number.
    pub id: usize,
    /// `MP_CAPABLE`, `MP_JOIN`, or `unknown` (handshake not captured).
    pub kind: &'static str,
    /// The end that opened it.
    pub initiator: String,
    /// The other end.
    pub responder: String,
    /// `MP_JOIN`: the initiator's address ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_id: Option<u8>,
    /// `MP_JOIN`: the initiator asked for a backup subflow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<bool>,
    /// TCP packets seen.
    pub packets: u64,
    /// First frame.
    pub first_frame: u64,
}

/// A connection in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionSummary {
    /// Number.
    pub id: usize,
    /// MPTCP version.
    pub version: u8,
    /// DSS checksums negotiated.
    pub checksums: bool,
    /// Client's key.
    pub client_key: Option<Hex<16>>,
    /// Client's token.
    pub client_token: Option<Hex<8>>,
    /// Server's key.
    pub server_key: Option<Hex<16>>,
    /// Server's token.
    pub server_token: Option<Hex<8>>,
    /// Its subflows.
    pub subflows: Vec<SubflowSummary>,
}

/// Frames that carried no TCP packet.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Skipped {
    /// Not IP (ARP, ...).
    pub not_ip: u64,
    /// IP, not TCP.
    pub not_tcp: u64,
    /// IP fragments after the first.
    pub fragments: u64,
    /// Link or IP headers cut short or malformed.
    pub bad_headers: u64,
    /// Link types this decoder does not read.
    pub unknown_linktypes: BTreeSet<i32>,
}

/// The end of a decode.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Frames in the capture.
    pub frames: u64,
    /// TCP packets.
    pub tcp_packets: u64,
    /// MPTCP options.
    pub mptcp_options: u64,
    /// MPTCP connections.
    pub connections: Vec<ConnectionSummary>,
    /// TCP connections without MPTCP (or whose handshake is not in the capture).
    pub other_subflows: usize,
    /// Outcome of the checks.
    pub checks: Checks,
    /// Options that could not be read.
    pub malformed: Vec<Malformed>,
    /// Frames without a TCP packet.
    pub skipped: Skipped,
    /// The file ends in the middle of a block.
    pub truncated_capture: bool,
}

/// Decodes frames one at a time, handing finished records to `out`.
pub struct Decoder<F: FnMut(&PacketRecord)> {
    tracker: Tracker,
    held: VecDeque<(PacketRecord, usize)>,
    first_held: u64,
    next_record: u64,
    summary: Summary,
    out: F,
}

impl<F: FnMut(&PacketRecord)> Decoder<F> {
    /// A decoder that gives each finished record to `out`.
    pub fn new(out: F) -> Self {
        Decoder {
            tracker: Tracker::default(),
            held: VecDeque::new(),
            first_held: 0,
            next_record: 0,
            summary: Summary::default(),
            out,
        }
    }

    /// Decodes one frame.
    pub fn frame(&mut self, f: &Frame<'_>) {
        self.summary.frames += 1;
        let ip = match link::ip_payload(f.linktype, f.data) {
            Payload::Ip(ip) => ip,
            Payload::NotIp => {
                self.summary.skipped.not_ip += 1;
                return;
            }
            Payload::UnknownLinktype(t) => {
                self.summary.skipped.unknown_linktypes.insert(t);
                return;
            }
            Payload::Truncated => {
                self.summary.skipped.bad_headers += 1;
                return;
            }
        };
        let Some((src, dst, l4, l4_wire_len)) = self.ip(ip) else {
            return;
        };
        self.tcp(f, src, dst, l4, l4_wire_len);
    }

    /// The TCP bytes of an IP packet: `(src, dst, captured segment, segment length on the wire)`.
    fn ip<'a>(&mut self, ip: &'a [u8]) -> Option<(IpAddr, IpAddr, &'a [u8], usize)> {
        let skipped = &mut self.summary.skipped;
        match ip.first().map(|b| b >> 4) {
            Some(4) => {
                let Ok(p) = Ipv4Packet::new_checked(ip) else {
                    skipped.bad_headers += 1;
                    return None;
                };
                if p.is_fragment() {
                    // First fragments too: their TCP payload is incomplete.
                    skipped.fragments += 1;
                    return None;
                }
                if p.protocol() != 6 {
                    skipped.not_tcp += 1;
                    return None;
                }
                let wire = usize::from(p.total_len()) - p.header_len();
                let payload: &'a [u8] =
                    &ip[p.header_len()..(usize::from(p.total_len())).min(ip.len())];
                Some((p.src_addr().into(), p.dst_addr().into(), payload, wire))
            }
            Some(6) => {
                let Ok(p) = Ipv6Packet::new_checked(ip) else {
                    skipped.bad_headers += 1;
                    return None;
                };
                let (src, dst) = (p.src_addr().into(), p.dst_addr().into());
                match p.upper_layer() {
                    Ok((6, _)) => {}
                    Ok(_) => {
                        skipped.not_tcp += 1;
                        return None;
                    }
                    Err(mptcp_proto::wire::Error::Unsupported(_)) => {
                        skipped.fragments += 1;
                        return None;
                    }
                    Err(_) => {
                        skipped.bad_headers += 1;
                        return None;
                    }
                }
                // Re-slice from the original buffer so the segment borrows `ip`, not `p`.
                let total = (40 + usize::from(p.payload_len())).min(ip.len());
                let (_, tcp) = p.upper_layer().ok()?;
                let start = total - tcp.len();
                let ext = start - 40;
                Some((
                    src,
                    dst,
                    &ip[start..total],
                    usize::from(p.payload_len()).saturating_sub(ext),
                ))
            }
            _ => {
                self.summary.skipped.bad_headers += 1;
                None
            }
        }
    }

    fn tcp(&mut self, f: &Frame<'_>, src: IpAddr, dst: IpAddr, l4: &[u8], l4_wire_len: usize) {
        self.summary.tcp_packets += 1;
        let be16 = |at: usize| {
            l4.get(at..at + 2)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
        };
        let mut rec = PacketRecord {
            frame: f.number,
            time: f.time,
            src,
            dst,
            sport: be16(0),
            dport: be16(2),
            flags: String::new(),
            seq: 0,
            ack: 0,
            len: 0,
            connection: None,
            subflow: None,
            mptcp: Vec::new(),
            error: None,
        };
        let tcp = match TcpPacket::new_checked(l4) {
            Ok(t) => t,
            Err(e) => {
                rec.error = Some(format!("TCP header: {e}"));
                self.push(rec, 0);
                return;
            }
        };
        rec.flags = tcp.flags().letters();
        rec.seq = tcp.seq_number().0;
        rec.ack = tcp.ack_number().0;
        let wire_payload = l4_wire_len.saturating_sub(tcp.header_len());
        rec.len = u32::try_from(wire_payload).unwrap_or(u32::MAX);
        let mut parsed: Vec<(usize, MptcpOption<'_>)> = Vec::new();
        for item in TcpOptions::new(tcp.options()) {
            match item {
                Ok(TcpOption::Mptcp(o)) => {
                    let length = u8::try_from(o.buffer_len()).unwrap_or(u8::MAX);
                    rec.mptcp.push(describe(&o, length));
                    parsed.push((rec.mptcp.len() - 1, o));
                }
                Ok(_) => {}
                Err(bad) => {
                    let length = bad.bytes.get(1).copied().unwrap_or(0);
                    if let Some(sub) = mptcp_subtype(bad.bytes) {
                        rec.mptcp.push(OptionRecord {
                            subtype: subtype_name(sub),
                            length,
                            error: Some(bad.error.to_string()),
                            raw: Some(HexBytes(bad.bytes.to_vec())),
                            ..OptionRecord::default()
                        });
                    } else {
                        rec.error = Some(format!("TCP option kind {}: {}", bad.kind, bad.error));
                        self.summary.malformed.push(Malformed {
                            frame: f.number,
                            subtype: "TCP",
                            length,
                            error: bad.error.to_string(),
                        });
                    }
                }
            }
        }
        let captured = tcp.payload();
        let segment = Segment {
            frame: f.number,
            src: Endpoint {
                addr: src,
                port: rec.sport,
            },
            dst: Endpoint {
                addr: dst,
                port: rec.dport,
            },
            flags: tcp.flags(),
            seq: rec.seq,
            payload: captured,
            wire_len: wire_payload,
            time: f.time,
        };
        let id = self.next_record;
        let (resolved, waiting, conn, subflow) =
            self.tracker.segment(id, &segment, &parsed, &mut rec.mptcp);
        rec.connection = conn;
        rec.subflow = Some(subflow);
        drop(parsed);
        self.push(rec, waiting);
        self.apply(&resolved);
        self.flush(false);
    }

    fn push(&mut self, rec: PacketRecord, waiting: usize) {
        if self.held.is_empty() {
            self.first_held = self.next_record;
        }
        self.next_record += 1;
        self.held.push_back((rec, waiting));
        if waiting == 0 {
            self.flush(false);
        }
        if self.held.len() > MAX_HELD_RECORDS {
            let cutoff = self.first_held + (MAX_HELD_RECORDS / 2) as u64;
            let expired = self.tracker.expire_before(cutoff);
            self.apply(&expired);
            self.flush(false);
        }
    }

    fn apply(&mut self, resolved: &[Resolution]) {
        for r in resolved {
            let Some(i) = r
                .record
                .checked_sub(self.first_held)
                .and_then(|i| usize::try_from(i).ok())
            else {
                continue;
            };
            if let Some((rec, waiting)) = self.held.get_mut(i) {
                if let Some(o) = rec.mptcp.get_mut(r.option) {
                    o.checksum_ok = r.check;
                }
                *waiting = waiting.saturating_sub(1);
            }
        }
    }

    /// Hands out the records at the front that wait for nothing (all of them with `all`).
    fn flush(&mut self, all: bool) {
        while let Some((_, waiting)) = self.held.front() {
            if *waiting > 0 && !all {
                break;
            }
            let Some((rec, _)) = self.held.pop_front() else {
                break;
            };
            self.first_held += 1;
            self.account(&rec);
            (self.out)(&rec);
        }
    }

    fn account(&mut self, rec: &PacketRecord) {
        let s = &mut self.summary;
        for o in &rec.mptcp {
            s.mptcp_options += 1;
            if let Some(e) = &o.error {
                s.malformed.push(Malformed {
                    frame: rec.frame,
                    subtype: o.subtype,
                    length: o.length,
                    error: e.clone(),
                });
            }
            for (name, c) in [
                ("token_ok", o.token_ok),
                ("hmac_ok", o.hmac_ok),
                ("checksum_ok", o.checksum_ok),
                ("key_ok", o.key_ok),
            ] {
                match c {
                    Check::Checked(true) => s.checks.passed += 1,
                    Check::Checked(false) => {
                        s.checks.failed += 1;
                        s.checks.failures.push(Failure {
                            frame: rec.frame,
                            subtype: o.subtype,
                            check: name,
                        });
                    }
                    Check::Unknown => s.checks.unchecked += 1,
                    Check::NotApplicable => {}
                }
            }
        }
    }

    /// Finishes: pending checksums whose data never came stay `null`; returns the summary.
    pub fn finish(mut self) -> Summary {
        let expired = self.tracker.expire_before(u64::MAX);
        self.apply(&expired);
        self.flush(true);
        let t = &self.tracker;
        for c in &t.connections {
            let token = |side: track::Side| c.token_idsn(side).map(|(tok, _)| Hex(u64::from(tok)));
            self.summary.connections.push(ConnectionSummary {
                id: c.id,
                version: c.version,
                checksums: c.checksums,
                client_key: c.keys[0].map(Hex),
                client_token: token(track::Side::Client),
                server_key: c.keys[1].map(Hex),
                server_token: token(track::Side::Server),
                subflows: c
                    .subflows
                    .iter()
                    .map(|&i| {
                        let sf = &t.subflows[i];
                        let (kind, address_id, backup) = match sf.kind {
                            SubflowKind::Capable => ("MP_CAPABLE", None, None),
                            SubflowKind::Join {
                                address_id, backup, ..
                            } => ("MP_JOIN", Some(address_id), Some(backup)),
                            SubflowKind::Unknown => ("unknown", None, None),
                        };
                        SubflowSummary {
                            id: sf.id,
                            kind,
                            initiator: sf.initiator.to_string(),
                            responder: sf.responder.to_string(),
                            address_id,
                            backup,
                            packets: sf.packets,
                            first_frame: sf.first_frame,
                        }
                    })
                    .collect(),
            });
        }
        self.summary.other_subflows = t.subflows.iter().filter(|s| s.conn.is_none()).count();
        self.summary
    }
}

/// An option's fields in the RFC's words (checks are filled in by the tracker).
#[must_use]
pub fn describe(o: &MptcpOption<'_>, length: u8) -> OptionRecord {
    let mut r = OptionRecord {
        subtype: subtype_name(o.subtype()),
        length,
        ..OptionRecord::default()
    };
    match o {
        MptcpOption::MpCapable(c) => {
            r.version = Some(c.version);
            r.flags = Some(c.flags.letters());
            r.checksum_required = Some(c.flags.checksum_required());
            r.sender_key = c.sender_key().map(Hex);
            r.receiver_key = c.receiver_key().map(Hex);
            if let MpCapableKeys::WithData {
                data_len, checksum, ..
            } = c.keys
            {
                r.data_len = Some(data_len);
                r.checksum = checksum.map(|c| Hex(u64::from(c)));
            }
        }
        MptcpOption::MpJoin(j) => match *j {
            MpJoin::Syn {
                backup,
                address_id,
                token,
                nonce,
            } => {
                r.form = Some("syn");
                r.backup = Some(backup);
                r.address_id = Some(address_id);
                r.token = Some(Hex(u64::from(token)));
                r.nonce = Some(Hex(u64::from(nonce)));
            }
            MpJoin::SynAck {
                backup,
                address_id,
                hmac,
                nonce,
            } => {
                r.form = Some("synack");
                r.backup = Some(backup);
                r.address_id = Some(address_id);
                r.hmac = Some(HexBytes(hmac.to_be_bytes().to_vec()));
                r.nonce = Some(Hex(u64::from(nonce)));
            }
            MpJoin::Ack { hmac } => {
                r.form = Some("ack");
                r.hmac = Some(HexBytes(hmac.to_vec()));
            }
        },
        MptcpOption::Dss(d) => {
            r.data_fin = Some(d.data_fin);
            if let Some(a) = d.data_ack {
                r.data_ack = Some(a.value());
                r.data_ack_bits = Some(if a.is_long() { 64 } else { 32 });
            }
            if let Some(m) = d.mapping {
                r.dsn = Some(m.dsn.value());
                r.dsn_bits = Some(if matches!(m.dsn, DataSeqField::Long(_)) {
                    64
                } else {
                    32
                });
                r.ssn = Some(m.ssn);
                r.data_len = Some(m.data_len);
                r.checksum = m.checksum.map(|c| Hex(u64::from(c)));
            }
        }
        MptcpOption::AddAddr(a) => {
            r.version = Some(u8::from(a.form != AddAddrForm::V0));
            r.address_id = Some(a.address_id);
            r.address = Some(a.address);
            r.port = a.port;
            r.echo = Some(a.form == AddAddrForm::Echo);
            if let AddAddrForm::Announce { hmac } = a.form {
                r.hmac = Some(HexBytes(hmac.to_be_bytes().to_vec()));
            }
        }
        MptcpOption::RemoveAddr(ra) => r.address_ids = Some(ra.address_ids.to_vec()),
        MptcpOption::MpPrio(p) => {
            r.backup = Some(p.backup);
            r.address_id = p.address_id;
        }
        MptcpOption::MpFail(f) => r.dsn = Some(f.dsn),
        MptcpOption::MpFastclose(f) => r.receiver_key = Some(Hex(f.receiver_key)),
        MptcpOption::MpTcpRst(t) => {
            r.flags = Some(t.letters());
            r.reason = Some(t.reason);
            r.reason_text = Some(
                ResetReason::from_code(t.reason).map_or("unassigned", ResetReason::description),
            );
        }
        MptcpOption::Unknown { .. } => {}
    }
    r
}

/// Decodes the capture read from `reader`, giving each packet's record to `out`.
pub fn decode<R: Read + Send>(
    reader: R,
    out: impl FnMut(&PacketRecord),
) -> Result<Summary, CaptureError> {
    let mut d = Decoder::new(out);
    let outcome = capture::for_each_frame(reader, |f| d.frame(&f))?;
    let mut summary = d.finish();
    summary.truncated_capture = outcome.truncated;
    Ok(summary)
}

/// The fuzz target's body: any bytes, as a capture, must decode and print without panicking.
#[doc(hidden)]
pub fn fuzz_capture(data: &[u8]) {
    let mut sink = Vec::new();
    let result = decode(io::Cursor::new(data), |r| {
        let _ = serde_json::to_writer(&mut sink, r);
        let _ = write!(sink, "{r}");
        sink.clear();
    });
    if let Ok(summary) = result {
        let _ = serde_json::to_string(&summary);
        let _ = summary_text(&summary);
    }
}

/// The summary for people.
#[must_use]
pub fn summary_text(s: &Summary) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n{} frames, {} TCP packets, {} MPTCP options, {} MPTCP connections{}",
        s.frames,
        s.tcp_packets,
        s.mptcp_options,
        s.connections.len(),
        if s.truncated_capture {
            " (the capture ends mid-packet)"
        } else {
            ""
        }
    );
    for c in &s.connections {
        let key = |k: Option<Hex<16>>, tok: Option<Hex<8>>| match (k, tok) {
            (Some(k), Some(t)) => format!("key {k} token {t}"),
            _ => "key unknown".to_owned(),
        };
        let _ = writeln!(
            t,
            "  connection {} (v{}, checksums {}): client {}; server {}",
            c.id,
            c.version,
            if c.checksums { "on" } else { "off" },
            key(c.client_key, c.client_token),
            key(c.server_key, c.server_token)
        );
        for sf in &c.subflows {
            let extra = match (sf.address_id, sf.backup) {
                (Some(id), Some(b)) => {
                    format!(" address id {id}{}", if b { ", backup" } else { "" })
                }
                _ => String::new(),
            };
            let _ = writeln!(
                t,
                "    subflow {}: {} {} -> {}{}, {} packets from frame {}",
                sf.id, sf.kind, sf.initiator, sf.responder, extra, sf.packets, sf.first_frame
            );
        }
    }
    if s.other_subflows > 0 {
        let _ = writeln!(
            t,
            "  {} TCP connections without a captured MPTCP handshake",
            s.other_subflows
        );
    }
    let _ = writeln!(
        t,
        "checks: {} passed, {} failed, {} could not be made",
        s.checks.passed, s.checks.failed, s.checks.unchecked
    );
    for f in &s.checks.failures {
        let _ = writeln!(t, "  FAILED: frame {} {} {}", f.frame, f.subtype, f.check);
    }
    for m in &s.malformed {
        let _ = writeln!(
            t,
            "  MALFORMED: frame {} {} (length {}): {}",
            m.frame, m.subtype, m.length, m.error
        );
    }
    let k = &s.skipped;
    if k.not_ip + k.not_tcp + k.fragments + k.bad_headers > 0 || !k.unknown_linktypes.is_empty() {
        let _ = writeln!(
            t,
            "skipped: {} not IP, {} not TCP, {} fragments, {} bad headers{}",
            k.not_ip,
            k.not_tcp,
            k.fragments,
            k.bad_headers,
            if k.unknown_linktypes.is_empty() {
                String::new()
            } else {
                format!(", link types {:?} not read", k.unknown_linktypes)
            }
        );
    }
    t
}

/// `mpbond decode`: prints every TCP packet of `path` (`-` for standard input, as in
/// `tcpdump -U -w - | mpbond decode -`) and a summary.
pub fn run(path: &Path, json: bool) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let live = path == Path::new("-");
    let input: Box<dyn Read + Send> = if live {
        Box::new(io::stdin())
    } else {
        Box::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )
    };
    let stdout = io::stdout();
    let mut w = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut write_error: Option<io::Error> = None;
    let summary = decode(io::BufReader::with_capacity(1 << 20, input), |rec| {
        if write_error.is_some() {
            return;
        }
        let mut r = if json {
            serde_json::to_writer(&mut w, rec)
                .map_err(io::Error::from)
                .and_then(|()| w.write_all(b"\n"))
        } else {
            writeln!(w, "{rec}")
        };
        if live {
            // Reading a live capture: show each packet as it comes.
            r = r.and_then(|()| w.flush());
        }
        if let Err(e) = r {
            write_error = Some(e);
        }
    })
    .with_context(|| {
        if live {
            "standard input".to_owned()
        } else {
            path.display().to_string()
        }
    })?;
    if let Some(e) = write_error {
        // `mpbond decode x.pcap | head` is not an error.
        if e.kind() == io::ErrorKind::BrokenPipe {
            return Ok(());
        }
        return Err(e.into());
    }
    let r = if json {
        serde_json::to_writer(&mut w, &serde_json::json!({ "summary": summary }))
            .map_err(io::Error::from)
            .and_then(|()| w.write_all(b"\n"))
    } else {
        w.write_all(summary_text(&summary).as_bytes())
    };
    match r.and_then(|()| w.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
