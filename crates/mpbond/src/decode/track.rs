//! Following MPTCP connections through a capture, to check what the keys allow checking.
//!
//! A connection is born with an `MP_CAPABLE` handshake, which gives the keys of its client and
//! server (RFC 8684 §3.1); from the keys come tokens and initial data sequence numbers. An
//! `MP_JOIN` subflow names its connection by the token of the receiver's key (§3.2), which tells
//! which side initiated it, so its HMACs can be recomputed. `ADD_ADDR` HMACs are keyed by the
//! sender's and receiver's keys (§3.4.1). A DSS checksum (§3.3.1) covers the mapped data, which
//! may span several segments: the bytes are collected from the subflow until the mapping is
//! complete, then checked.

use std::collections::HashMap;
use std::net::IpAddr;

use mptcp_proto::crypto;
use mptcp_proto::wire::mptcp::{AddAddrForm, DataSeqField, MpCapableKeys, MpJoin, MptcpOption};
use mptcp_proto::wire::tcp::TcpFlags;

use super::mapping::{self, MappingKey};
use super::record::{Check, OptionRecord};

/// One end of a subflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// Address.
    pub addr: IpAddr,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.addr.is_ipv6() {
            write!(f, "[{}]:{}", self.addr, self.port)
        } else {
            write!(f, "{}:{}", self.addr, self.port)
        }
    }
}

/// The two sides of an MPTCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The host that sent the `MP_CAPABLE` SYN.
    Client = 0,
    /// The other.
    Server = 1,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// An MPTCP connection seen in the capture.
#[derive(Debug, Clone)]
pub struct Connection {
    /// 1-based number.
    pub id: usize,
    /// MPTCP version from `MP_CAPABLE`.
    pub version: u8,
    /// Whether either side asked for DSS checksums.
    pub checksums: bool,
    /// Keys by [`Side`].
    pub keys: [Option<u64>; 2],
    /// Its subflows (indexes into the tracker's list).
    pub subflows: Vec<usize>,
    /// Last full 64-bit data sequence number seen from each side, to widen 32-bit ones.
    dsn_ref: [Option<u64>; 2],
}

impl Connection {
    /// Token and IDSN of `side`'s key, with the hash of the connection's version.
    #[must_use]
    pub fn token_idsn(&self, side: Side) -> Option<(u32, u64)> {
        let key = self.keys[side as usize]?;
        Some(if self.version == 0 {
            crypto::v0::token_and_idsn(key)
        } else {
            crypto::token_and_idsn(key)
        })
    }
}

/// How a subflow began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubflowKind {
    /// Its handshake was not in the capture.
    Unknown,
    /// The connection's first subflow.
    Capable,
    /// Joined with `MP_JOIN`.
    Join {
        /// The receiver's token from the SYN.
        token: u32,
        /// Initiator's address ID.
        address_id: u8,
        /// Initiator asked for backup.
        backup: bool,
        /// Initiator's random number.
        nonce_a: u32,
        /// Responder's random number, once seen.
        nonce_b: Option<u32>,
    },
}

/// A subflow seen in the capture.
#[derive(Debug)]
pub struct Subflow {
    /// 1-based number.
    pub id: usize,
    /// The end that sent the SYN (or the first packet seen).
    pub initiator: Endpoint,
    /// The other end.
    pub responder: Endpoint,
    /// Its connection, when known.
    pub conn: Option<usize>,
    /// Which side of the connection the initiator is.
    pub initiator_side: Option<Side>,
    /// How it began.
    pub kind: SubflowKind,
    /// Initial sequence numbers: `[initiator, responder]`.
    isn: [Option<u32>; 2],
    /// Packets seen.
    pub packets: u64,
    /// First frame.
    pub first_frame: u64,
    /// DSS mappings waiting for their data, by direction (`[from initiator, from responder]`).
    mappings: [mapping::Direction; 2],
}

/// A DSS checksum decided after its packet was recorded.
#[derive(Debug, Clone, Copy)]
pub struct Resolution {
    /// The record it belongs to.
    pub record: u64,
    /// The option within it.
    pub option: usize,
    /// The outcome.
    pub check: Check,
}

/// What the tracker needs of a TCP packet.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Frame number.
    pub frame: u64,
    /// Sender.
    pub src: Endpoint,
    /// Receiver.
    pub dst: Endpoint,
    /// TCP flags.
    pub flags: TcpFlags,
    /// Sequence number.
    pub seq: u32,
    /// Captured payload.
    pub payload: &'a [u8],
    /// Payload length on the wire (more than `payload` when the capture cut it).
    pub wire_len: usize,
    /// Capture time, seconds.
    pub time: f64,
}

/// Connections and subflows of a capture.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Connections, in order of appearance.
    pub connections: Vec<Connection>,
    /// Subflows, in order of appearance.
    pub subflows: Vec<Subflow>,
    by_tuple: HashMap<(Endpoint, Endpoint), usize>,
    by_token: HashMap<u32, (usize, Side)>,
    budget: mapping::Budget,
}

fn tuple(a: Endpoint, b: Endpoint) -> (Endpoint, Endpoint) {
    if a <= b { (a, b) } else { (b, a) }
}

/// Widens a 32-bit data sequence number to the 64-bit one nearest `reference`.
fn widen(v: u32, reference: u64) -> u64 {
    let base = (reference & !0xffff_ffff) | u64::from(v);
    [base.wrapping_sub(1 << 32), base, base.wrapping_add(1 << 32)]
        .into_iter()
        .min_by_key(|c| c.wrapping_sub(reference).min(reference.wrapping_sub(*c)))
        .unwrap_or(base)
}

impl Tracker {
    fn new_connection(&mut self, version: u8, checksums: bool) -> usize {
        let id = self.connections.len() + 1;
        self.connections.push(Connection {
            id,
            version,
            checksums,
            keys: [None, None],
            subflows: Vec::new(),
            dsn_ref: [None, None],
        });
        id - 1
    }

    fn register_tokens(&mut self, c: usize) {
        for side in [Side::Client, Side::Server] {
            if let Some((token, _)) = self.connections[c].token_idsn(side) {
                self.by_token.insert(token, (c, side));
            }
        }
    }

    /// The subflow of `s`, created if new (a SYN starts a fresh one even on a reused 4-tuple,
    /// and the old one's waiting checksums are given up), and whether `s` goes from its
    /// initiator.
    fn subflow_for(&mut self, s: &Segment, resolved: &mut Vec<Resolution>) -> (usize, bool) {
        let key = tuple(s.src, s.dst);
        let fresh_syn = s.flags.contains(TcpFlags::SYN) && !s.flags.contains(TcpFlags::ACK);
        if let Some(&i) = self.by_tuple.get(&key) {
            let sf = &mut self.subflows[i];
            let restarted =
                fresh_syn && sf.packets > 0 && (sf.isn[0] != Some(s.seq) || sf.initiator != s.src);
            if !restarted {
                return (i, sf.initiator == s.src);
            }
            for d in &mut sf.mappings {
                resolved.extend(d.abandon(u64::MAX, &mut self.budget));
            }
        }
        let i = self.subflows.len();
        self.subflows.push(Subflow {
            id: i + 1,
            initiator: s.src,
            responder: s.dst,
            conn: None,
            initiator_side: None,
            kind: SubflowKind::Unknown,
            isn: [None, None],
            packets: 0,
            first_frame: s.frame,
            mappings: [mapping::Direction::default(), mapping::Direction::default()],
        });
        self.by_tuple.insert(key, i);
        (i, true)
    }

    /// Follows segment `s`, whose MPTCP options (parsed, at their index in `rec`) are `options`,
    /// filling the checks of `rec` (record number `record_id`). Returns the checksums of earlier
    /// records that this segment completed, and how many checks of `rec` wait for later data.
    pub fn segment(
        &mut self,
        record_id: u64,
        s: &Segment,
        options: &[(usize, MptcpOption<'_>)],
        rec: &mut [OptionRecord],
    ) -> (Vec<Resolution>, usize, Option<usize>, usize) {
        let mut resolved = Vec::new();
        let (sf, from_initiator) = self.subflow_for(s, &mut resolved);
        let dir = usize::from(!from_initiator);
        {
            let sub = &mut self.subflows[sf];
            sub.packets += 1;
            if s.flags.contains(TcpFlags::SYN) {
                sub.isn[dir] = Some(s.seq);
            }
        }
        let mut waiting = 0;
        for (index, option) in options {
            let out = &mut rec[*index];
            match option {
                MptcpOption::MpCapable(o) => self.mp_capable(
                    sf,
                    from_initiator,
                    s,
                    o.version,
                    o.flags.checksum_required(),
                    o.keys,
                    (record_id, *index),
                    out,
                    &mut waiting,
                ),
                MptcpOption::MpJoin(j) => self.mp_join(sf, *j, out),
                MptcpOption::Dss(d) => {
                    self.dss(
                        sf,
                        from_initiator,
                        d,
                        (record_id, *index),
                        s.time,
                        out,
                        &mut waiting,
                    );
                }
                MptcpOption::AddAddr(a) => {
                    if let AddAddrForm::Announce { hmac } = a.form {
                        let keys = self.side_of(sf, from_initiator).map(|(c, side)| {
                            let k = &self.connections[c].keys;
                            (k[side as usize], k[side.other() as usize])
                        });
                        out.hmac_ok = match keys {
                            Some((Some(sender), Some(receiver))) => {
                                let ok = crypto::add_addr_hmac(
                                    sender,
                                    receiver,
                                    a.address_id,
                                    a.address,
                                    a.port,
                                ) == hmac;
                                if !ok
                                    && crypto::add_addr_hmac_leftmost(
                                        sender,
                                        receiver,
                                        a.address_id,
                                        a.address,
                                        a.port,
                                    ) == hmac
                                {
                                    out.hmac_leftmost = Some(true);
                                }
                                Check::Checked(ok)
                            }
                            _ => Check::Unknown,
                        };
                    }
                }
                MptcpOption::MpFastclose(f) => {
                    out.key_ok = Check::from_option(
                        self.side_of(sf, from_initiator)
                            .and_then(|(c, side)| self.connections[c].keys[side.other() as usize])
                            .map(|k| k == f.receiver_key),
                    );
                }
                _ => {}
            }
        }
        let payload_seq = s
            .seq
            .wrapping_add(u32::from(s.flags.contains(TcpFlags::SYN)));
        resolved.extend(self.subflows[sf].mappings[dir].feed(
            payload_seq,
            s.payload,
            s.wire_len,
            s.time,
            &mut self.budget,
        ));
        let conn = self.subflows[sf].conn;
        (resolved, waiting, conn.map(|c| c + 1), sf + 1)
    }

    /// Follows a DSS: widens its DSN, and arranges the check of its checksum.
    #[expect(clippy::too_many_arguments, reason = "one DSS's context")]
    fn dss(
        &mut self,
        sf: usize,
        from_initiator: bool,
        d: &mptcp_proto::wire::mptcp::Dss,
        reporter: (u64, usize),
        now: f64,
        out: &mut OptionRecord,
        waiting: &mut usize,
    ) {
        let Some(m) = d.mapping else { return };
        let Some((conn, side)) = self.side_of(sf, from_initiator) else {
            if m.checksum.is_some() {
                out.checksum_ok = Check::Unknown;
            }
            return;
        };
        let dsn = self.full_dsn(conn, side, m.dsn);
        let Some(c) = m.checksum else { return };
        let Some(dsn) = dsn.filter(|_| m.data_len != 0) else {
            // A 32-bit DSN with nothing to widen it from, or an infinite mapping (fallback):
            // nothing to check against.
            out.checksum_ok = Check::Unknown;
            return;
        };
        let dir = usize::from(!from_initiator);
        let bytes = usize::from(m.data_len).saturating_sub(usize::from(d.data_fin));
        self.expect_mapping(
            sf, dir, reporter, dsn, m.ssn, m.data_len, c, bytes, now, out, waiting,
        );
    }

    /// The connection and the side that sent a segment of subflow `sf`.
    fn side_of(&self, sf: usize, from_initiator: bool) -> Option<(usize, Side)> {
        let sub = &self.subflows[sf];
        let side = sub.initiator_side?;
        Some((sub.conn?, if from_initiator { side } else { side.other() }))
    }

    /// The 64-bit DSN of a mapping field sent by `side`: a 64-bit field as is, a 32-bit one
    /// widened from the last DSN seen from that side or its IDSN; `None` when there is neither.
    fn full_dsn(&mut self, conn: usize, side: Side, field: DataSeqField) -> Option<u64> {
        let c = &mut self.connections[conn];
        let full = match field {
            DataSeqField::Long(v) => v,
            DataSeqField::Short(v) => {
                let reference = c.dsn_ref[side as usize]
                    .or_else(|| c.token_idsn(side).map(|(_, idsn)| idsn.wrapping_add(1)))?;
                widen(v, reference)
            }
        };
        c.dsn_ref[side as usize] = Some(full);
        Some(full)
    }

    #[expect(clippy::too_many_arguments, reason = "one MP_CAPABLE's context")]
    fn mp_capable(
        &mut self,
        sf: usize,
        from_initiator: bool,
        s: &Segment,
        version: u8,
        checksum_required: bool,
        keys: MpCapableKeys,
        reporter: (u64, usize),
        out: &mut OptionRecord,
        waiting: &mut usize,
    ) {
        let syn = s.flags.contains(TcpFlags::SYN);
        let ack = s.flags.contains(TcpFlags::ACK);
        let conn = if let Some(c) = self.subflows[sf].conn {
            c
        } else {
            // The server sends the SYN/ACK; the client the SYN and the ACKs with keys.
            let sender = if syn && ack {
                Side::Server
            } else {
                Side::Client
            };
            let c = self.new_connection(version, checksum_required);
            let sub = &mut self.subflows[sf];
            sub.conn = Some(c);
            sub.kind = SubflowKind::Capable;
            sub.initiator_side = Some(if from_initiator {
                sender
            } else {
                sender.other()
            });
            self.connections[c].subflows.push(sf);
            c
        };
        let Some((_, side)) = self.side_of(sf, from_initiator) else {
            return;
        };
        let c = &mut self.connections[conn];
        c.checksums |= checksum_required;
        // Keys are learnt once; a later option repeating a key must repeat it exactly, or every
        // check built on it would be built on sand: `key_ok` says whether it did.
        let carried: Vec<(Side, u64)> = match keys {
            MpCapableKeys::None => Vec::new(),
            MpCapableKeys::Sender { sender_key } => vec![(side, sender_key)],
            MpCapableKeys::Both {
                sender_key,
                receiver_key,
            }
            | MpCapableKeys::WithData {
                sender_key,
                receiver_key,
                ..
            } => {
                vec![(side, sender_key), (side.other(), receiver_key)]
            }
        };
        let mut compared = Vec::new();
        for (who, key) in carried {
            match c.keys[who as usize] {
                Some(known) => compared.push(known == key),
                None => c.keys[who as usize] = Some(key),
            }
        }
        if matches!(
            keys,
            MpCapableKeys::Both { .. } | MpCapableKeys::WithData { .. }
        ) || !compared.is_empty()
        {
            out.key_ok = if compared.is_empty() {
                Check::Unknown
            } else {
                Check::Checked(compared.iter().all(|&ok| ok))
            };
        }
        self.register_tokens(conn);
        if let MpCapableKeys::WithData {
            data_len,
            checksum: Some(csum),
            ..
        } = keys
        {
            // The first data of the connection: DSN IDSN + 1, subflow sequence number 1.
            let dir = usize::from(!from_initiator);
            match self.connections[conn].token_idsn(side) {
                Some((_, idsn)) => {
                    let dsn = idsn.wrapping_add(1);
                    self.connections[conn].dsn_ref[side as usize] = Some(dsn);
                    self.expect_mapping(
                        sf,
                        dir,
                        reporter,
                        dsn,
                        1,
                        data_len,
                        csum,
                        usize::from(data_len),
                        s.time,
                        out,
                        waiting,
                    );
                }
                None => out.checksum_ok = Check::Unknown,
            }
        }
    }

    fn mp_join(&mut self, sf: usize, j: MpJoin, out: &mut OptionRecord) {
        match j {
            MpJoin::Syn {
                backup,
                address_id,
                token,
                nonce,
            } => {
                let found = self.by_token.get(&token).copied();
                out.token_ok = if found.is_some() {
                    Check::Checked(true)
                } else {
                    Check::Unknown
                };
                let sub = &mut self.subflows[sf];
                sub.kind = SubflowKind::Join {
                    token,
                    address_id,
                    backup,
                    nonce_a: nonce,
                    nonce_b: None,
                };
                if let Some((conn, receiver)) = found {
                    sub.conn = Some(conn);
                    sub.initiator_side = Some(receiver.other());
                    if !self.connections[conn].subflows.contains(&sf) {
                        self.connections[conn].subflows.push(sf);
                    }
                }
            }
            MpJoin::SynAck { hmac, nonce, .. } => {
                if let SubflowKind::Join { nonce_b, .. } = &mut self.subflows[sf].kind {
                    *nonce_b = Some(nonce);
                }
                out.hmac_ok = Check::from_option(
                    self.join_hmac(sf, false)
                        .map(|h| h[..8] == hmac.to_be_bytes()),
                );
            }
            MpJoin::Ack { hmac } => {
                out.hmac_ok = Check::from_option(self.join_hmac(sf, true).map(|h| h[..20] == hmac));
            }
        }
    }

    /// The full HMAC of subflow `sf`'s join handshake, sent by its initiator (`from_a`) or its
    /// responder, when the keys and both random numbers are known.
    fn join_hmac(&self, sf: usize, from_a: bool) -> Option<[u8; 32]> {
        let sub = &self.subflows[sf];
        let SubflowKind::Join {
            nonce_a,
            nonce_b: Some(nonce_b),
            ..
        } = sub.kind
        else {
            return None;
        };
        let c = &self.connections[sub.conn?];
        let a = sub.initiator_side?;
        let (key_a, key_b) = (c.keys[a as usize]?, c.keys[a.other() as usize]?);
        let (sender, receiver, n_s, n_r) = if from_a {
            (key_a, key_b, nonce_a, nonce_b)
        } else {
            (key_b, key_a, nonce_b, nonce_a)
        };
        if c.version == 0 {
            let mut out = [0; 32];
            out[..20].copy_from_slice(&crypto::v0::join_hmac(sender, receiver, n_s, n_r));
            Some(out)
        } else {
            Some(crypto::join_hmac(sender, receiver, n_s, n_r))
        }
    }

    /// Arranges the check of a mapping's checksum: decided now, or waiting for its data.
    #[expect(clippy::too_many_arguments, reason = "one mapping's context")]
    fn expect_mapping(
        &mut self,
        sf: usize,
        dir: usize,
        reporter: (u64, usize),
        dsn: u64,
        ssn: u32,
        data_len: u16,
        checksum: u16,
        bytes: usize,
        now: f64,
        out: &mut OptionRecord,
        waiting: &mut usize,
    ) {
        let sub = &mut self.subflows[sf];
        let Some(isn) = sub.isn[dir] else {
            out.checksum_ok = Check::Unknown;
            return;
        };
        let key = MappingKey {
            start: isn.wrapping_add(ssn),
            dsn,
            ssn,
            data_len,
            checksum,
            bytes,
        };
        if let Some(check) = sub.mappings[dir].announce(key, reporter, now, &mut self.budget) {
            out.checksum_ok = check;
        } else {
            // Decided by a later segment (or this one, in `segment`).
            out.checksum_ok = Check::Unknown;
            *waiting += 1;
        }
    }

    /// Gives up every waiting checksum announced by a record before `record`: they stay `null`.
    pub fn expire_before(&mut self, record: u64) -> Vec<Resolution> {
        let mut out = Vec::new();
        for sub in &mut self.subflows {
            for d in &mut sub.mappings {
                out.extend(d.abandon(record, &mut self.budget));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_picks_the_nearest_64_bit_value() {
        let r = 0x0000_0005_ffff_fff0;
        assert_eq!(widen(0xffff_fff8, r), 0x0000_0005_ffff_fff8);
        assert_eq!(
            widen(0x0000_0010, r),
            0x0000_0006_0000_0010,
            "wrapped forward"
        );
        assert_eq!(
            widen(0xffff_fff0, 0x0000_0006_0000_0010),
            0x0000_0005_ffff_fff0,
            "wrapped back"
        );
    }
}
