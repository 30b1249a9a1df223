//! Plays a packetdrill script against the engine's [`Stack`], the way packetdrill plays it
//! against the kernel: `<` packets are built (with the script's keys, the engine's keys as
//! learned from its own packets, HMACs and tokens worked out, relative sequence numbers and
//! DSNs made absolute) and handed to the stack; `>` packets must come out of it, in order, at
//! their time (within the script's tolerance), with the same flags, relative sequence and
//! acknowledgment numbers, payload length and MPTCP options (every field: keys, tokens,
//! HMACs, DSN, SSN, data-level length, `DATA_FIN`, addresses, reasons).
//!
//! What is not compared: TCP options other than MPTCP's (MSS, SACK, timestamps, window
//! scale) and the window: they are TCP's business, and the engine's TCP is judged elsewhere.
//! `PSH` is not compared either.
//!
//! Where the engine does what the RFC allows but Linux does not, the run notes a
//! *deviation* instead of failing, and the test pins the list of deviations of every script:
//! - a pure ACK the script does not list, carrying nothing but a `DATA_ACK` (or nothing at
//!   all), and a retransmission the script does not list (timers are each stack's own);
//! - a packet sent later than the script says (the engine's timers are not Linux's);
//! - an address ID other than Linux's (address IDs are the sender's local names, §3.4.1);
//! - a `DATA_ACK` on a packet where Linux sends none.
//!
//! Anything else that differs is a failure, and the run stops there, as packetdrill does.
#![expect(
    clippy::many_single_char_names,
    reason = "p: the script's packet, s: what the engine sent, f: a flow, e and o: an expected \
              and a sent option, throughout"
)]

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use mptcp_proto::crypto;
use mptcp_proto::mptcp::{ConnId, ConnState, Path, Stack, StackConfig, StackEvent};
use mptcp_proto::tcp::{CloseReason, WriteError};
use mptcp_proto::wire::ip::PROTOCOL_TCP;
use mptcp_proto::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use mptcp_proto::wire::mptcp::{
    AddAddr, AddAddrForm, DataSeqField, Dss, DssMapping, MpCapable, MpCapableFlags, MpCapableKeys,
    MpFail, MpFastclose, MpJoin, MpPrio, MpTcpRst, MptcpOption, RemoveAddr,
};
use mptcp_proto::wire::tcp::{SeqNumber, TcpFlags, TcpPacket, TcpRepr};

use super::script::{Addr, Dir, Event, Field, KeyRef, Line, MpOpt, Opt, Packet, Syscall};

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// The first difference that is not allowed, if any (the run stopped there).
    pub failure: Option<String>,
    /// Differences the RFC allows, each with its line.
    pub deviations: Vec<String>,
}

/// The script's tolerance (`--tolerance_usecs=100000` in every upstream script).
const TOLERANCE: f64 = 0.1;
/// How much later than the script says a packet may come before it counts as never sent.
const MAX_LATE: f64 = 5.0;
/// The listening (or connected-to) port.
const PORT: u16 = 8080;

fn addr_of(server: bool, n: u8) -> IpAddr {
    if server {
        IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1 + n))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + n))
    }
}

#[derive(Debug, Clone)]
struct Flow {
    /// The client's address and port (unknown until the engine, as client, sends its SYN).
    client: Option<SocketAddr>,
    server: SocketAddr,
    our_isn: Option<u32>,
    peer_isn: u32,
    our_nonce: Option<u32>,
    peer_nonce: u32,
    /// The script answered the engine's SYN (client role).
    answered: bool,
    /// The latest `TSval` the script sent on this flow.
    peer_ts: u32,
}

#[derive(Debug, Clone)]
struct Sent {
    at: f64,
    src: SocketAddr,
    dst: SocketAddr,
    /// The TCP segment.
    tcp: Vec<u8>,
}

impl Sent {
    fn seg(&self) -> TcpRepr<'_> {
        let p = TcpPacket::new_checked(&self.tcp[..]).unwrap_or_else(|e| panic!("{e}"));
        TcpRepr::parse(&p, self.src.ip(), self.dst.ip(), true)
            .unwrap_or_else(|e| panic!("the engine sent a segment it cannot read back: {e}"))
    }
}

/// What a successful comparison learned.
#[derive(Debug, Default)]
struct Bind {
    client: Option<SocketAddr>,
    our_isn: Option<u32>,
    our_key: Option<u64>,
    our_nonce: Option<u32>,
}

struct Runner {
    base: Instant,
    now: f64,
    last: f64,
    st: Option<Stack>,
    server_role: Option<bool>,
    flows: Vec<Flow>,
    current: Option<usize>,
    queue: VecDeque<Sent>,
    history: Vec<Sent>,
    ckey: Option<u64>,
    skey: Option<u64>,
    fds: HashMap<i64, ConnId>,
    endpoints: HashMap<u8, IpAddr>,
    /// Addresses announced before the socket existed.
    pending: Vec<IpAddr>,
    /// Connections ready to be accepted (`StackEvent::Incoming` not yet taken).
    incoming: usize,
    listen_fd: Option<i64>,
    report: Report,
    line: usize,
}

/// Plays `lines`.
pub fn run(lines: &[Line]) -> Report {
    let mut r = Runner {
        base: Instant::now(),
        now: 0.0,
        last: 0.0,
        st: None,
        server_role: None,
        flows: Vec::new(),
        current: None,
        queue: VecDeque::new(),
        history: Vec::new(),
        ckey: None,
        skey: None,
        fds: HashMap::new(),
        endpoints: HashMap::new(),
        pending: Vec::new(),
        incoming: 0,
        listen_fd: None,
        report: Report::default(),
        line: 0,
    };
    for l in lines {
        r.line = l.number;
        let base = if l.time.relative { r.last } else { 0.0 };
        let lo = base + l.time.start;
        let hi = base + l.time.end.unwrap_or(l.time.start);
        let res = match &l.event {
            Event::Packet(p) if p.dir == Dir::Out => r.expect(p, lo, hi),
            Event::Packet(p) => {
                r.advance_to(lo);
                r.inject(p)
            }
            Event::Syscall(s) => {
                r.advance_to(lo);
                r.syscall(s)
            }
            Event::Shell(c) => {
                r.advance_to(lo);
                r.shell(c)
            }
        };
        if let Err(e) = res {
            r.report.failure = Some(format!("line {}: {e}", l.number));
            return r.report;
        }
    }
    // What was sent and never matched.
    if let Err(e) = r.flush() {
        r.report.failure = Some(format!("after the last line: {e}"));
    }
    r.report
}

impl Runner {
    fn instant(&self, t: f64) -> Instant {
        self.base + Duration::from_secs_f64(t)
    }

    fn stack(&mut self) -> Result<&mut Stack, String> {
        self.st.as_mut().ok_or_else(|| "no socket yet".to_owned())
    }

    fn server(&self) -> bool {
        self.server_role.unwrap_or(true)
    }

    fn our_key(&self) -> Option<u64> {
        if self.server() { self.skey } else { self.ckey }
    }

    fn peer_key(&self) -> Option<u64> {
        if self.server() { self.ckey } else { self.skey }
    }

    fn keys(&self) -> Result<(u64, u64), String> {
        Ok((
            self.our_key().ok_or("the engine's key is not known yet")?,
            self.peer_key().ok_or("the script's key is not known yet")?,
        ))
    }

    /// Runs the stack's timers up to `t`, collecting what it sends.
    fn advance_to(&mut self, t: f64) {
        self.run_timers(t);
        if t > self.now {
            self.now = t;
        }
    }

    fn run_timers(&mut self, t: f64) {
        loop {
            let Some(st) = self.st.as_mut() else { return };
            let Some(due) = st.poll_timeout() else { break };
            let due = due.saturating_duration_since(self.base).as_secs_f64();
            if due > t {
                break;
            }
            self.now = self.now.max(due);
            let now = self.instant(self.now);
            if let Some(st) = self.st.as_mut() {
                st.handle_timeout(now);
            }
            self.collect();
        }
    }

    /// Takes everything the stack has to send now.
    fn collect(&mut self) {
        let now = self.instant(self.now);
        let mut buf = vec![0u8; 65_536];
        let Some(st) = self.st.as_mut() else { return };
        while let Some(ev) = st.poll_event() {
            if matches!(ev, StackEvent::Incoming(_)) {
                self.incoming += 1;
            }
        }
        while let Some(t) = st.poll_transmit(now, &mut buf) {
            let ip = Ipv4Packet::new_checked(&buf[..t.len])
                .unwrap_or_else(|e| panic!("the engine sent a bad IPv4 packet: {e}"));
            let tcp = buf[ip.header_len()..t.len].to_vec();
            let p = TcpPacket::new_checked(&tcp[..]).unwrap_or_else(|e| panic!("{e}"));
            let sent = Sent {
                at: self.now,
                src: SocketAddr::new(t.src, p.src_port()),
                dst: SocketAddr::new(t.dst, p.dst_port()),
                tcp,
            };
            if std::env::var_os("PACKETDRILL_TRACE").is_some() {
                println!("  {:.3} > {:?}", self.now, sent.seg());
            }
            self.queue.push_back(sent);
        }
    }

    /// Anything sent and not matched before an event that is not an expected packet: an
    /// allowed extra, or a failure.
    fn flush(&mut self) -> Result<(), String> {
        while let Some(s) = self.queue.pop_front() {
            // An answer to the script's last line is beyond what the script checks (a reset of
            // a stray packet, say), as it is for packetdrill.
            let why = if s.at >= self.last {
                format!("unchecked, after the last line: {}", self.show(&s))
            } else {
                self.extra(&s)?
            };
            self.report
                .deviations
                .push(format!("line {}: {why}", self.line));
            self.history.push(s);
        }
        Ok(())
    }

    /// Why an unlisted packet is allowed, or the failure it is.
    fn extra(&self, s: &Sent) -> Result<String, String> {
        let seg = s.seg();
        let pure_ack =
            seg.flags.0 & !TcpFlags::PSH == 0 && seg.ack_number.is_some() && seg.payload.is_empty();
        let only_data_ack = seg
            .mptcp
            .iter()
            .all(|o| matches!(o, MptcpOption::Dss(d) if d.mapping.is_none() && !d.data_fin));
        if pure_ack && only_data_ack {
            return Ok("an extra pure ACK (only a DATA_ACK)".to_owned());
        }
        let announce = seg.mptcp.iter().all(|o| match o {
            MptcpOption::Dss(d) => d.mapping.is_none() && !d.data_fin,
            MptcpOption::AddAddr(a) => matches!(a.form, AddAddrForm::Announce { .. }),
            _ => false,
        });
        if pure_ack && announce {
            // The path manager announces when the connection is established; Linux's does so
            // from a work queue, at a moment of its own.
            return Ok("an ADD_ADDR at another moment".to_owned());
        }
        let again = self.history.iter().any(|h| {
            h.src == s.src && h.dst == s.dst && {
                let o = h.seg();
                o.seq_number == seg.seq_number
                    && o.flags == seg.flags
                    && o.payload.len() == seg.payload.len()
            }
        });
        if again {
            return Ok("an extra retransmission".to_owned());
        }
        Err(format!("unexpected packet {}", self.show(s)))
    }

    fn show(&self, s: &Sent) -> String {
        let seg = s.seg();
        let flow = self.flow_of(s);
        let rel = |isn: Option<u32>, v: u32| isn.map_or(v, |i| v.wrapping_sub(i));
        let (our, peer) = flow.map_or((None, None), |f| {
            (self.flows[f].our_isn, Some(self.flows[f].peer_isn))
        });
        format!(
            "{} > {} {} {}:{}({}) ack {} {:?}",
            s.src,
            s.dst,
            seg.flags.letters(),
            rel(our, seg.seq_number.0),
            rel(our, seg.seq_number.0).wrapping_add(u32::try_from(seg.payload.len()).unwrap_or(0)),
            seg.payload.len(),
            seg.ack_number.map_or(0, |a| rel(peer, a.0)),
            seg.mptcp
        )
    }

    /// The flow a sent packet belongs to.
    fn flow_of(&self, s: &Sent) -> Option<usize> {
        self.flows.iter().position(|f| {
            if self.server() {
                s.src == f.server && Some(s.dst) == f.client
            } else {
                Some(s.src) == f.client && s.dst == f.server
            }
        })
    }

    /// The flow a script line means: its addresses, or the one before.
    fn flow_for(&mut self, p: &Packet) -> Result<usize, String> {
        let names: Vec<&Addr> = p.src.iter().chain(p.dst.iter()).collect();
        let default = [
            Addr::Named {
                server: false,
                n: 0,
            },
            Addr::Named { server: true, n: 0 },
        ];
        // A SYN/ACK the script sends without addresses answers the engine's latest SYN.
        if names.is_empty() && p.dir == Dir::In && p.syn && p.ack_flag {
            if let Some(i) = self
                .flows
                .iter()
                .rposition(|f| f.our_isn.is_some() && !f.answered)
            {
                self.current = Some(i);
                return Ok(i);
            }
        }
        // A line without addresses is on the newest flow (what the upstream scripts assume:
        // after a join, unnamed lines are the join's, even after a line named another flow).
        let names: Vec<&Addr> = match (names.is_empty(), self.flows.len().checked_sub(1)) {
            (true, Some(i)) => return Ok(i),
            // The first line without addresses: the first client and server addresses.
            (true, None) if self.server() => default.iter().collect(),
            (true, None) => default[1..].iter().collect(),
            (false, _) => names,
        };
        let side = |a: &Addr| match a {
            Addr::Named { server, .. } => Ok(*server),
            Addr::Literal(_) => Err("a literal address for a flow".to_owned()),
        };
        let mut client = None;
        let mut server = None;
        for a in names {
            if side(a)? {
                server = Some(resolve(a));
            } else {
                client = Some(resolve(a));
            }
        }
        let server = match (server, self.current) {
            (Some(s), _) => s,
            (None, Some(i)) => self.flows[i].server.ip(),
            (None, None) => return Err("no flow yet".to_owned()),
        };
        // The client side when the line leaves it out: the latest flow to this server, or
        // (the engine as client opening a join) whatever the engine picks.
        let found = self.flows.iter().rposition(|f| {
            f.server.ip() == server && client.is_none_or(|c| f.client.is_some_and(|x| x.ip() == c))
        });
        // A few scripts name a server address their flow does not use (mp_prio_server.pkt
        // writes `saddr1 > caddr1` for the join it made from caddr1 to saddr0): packetdrill's
        // own client address tells the flow.
        let found = found.or_else(|| {
            let c = client.filter(|_| self.server() && (p.ack_flag || !p.syn))?;
            self.flows
                .iter()
                .rposition(|f| f.client.is_some_and(|x| x.ip() == c))
        });
        let client = client.or_else(|| {
            self.current
                .filter(|_| self.server())
                .and_then(|i| self.flows[i].client.map(|c| c.ip()))
        });
        // The engine, as client, opening a subflow: always a new flow.
        let engine_opens = p.dir == Dir::Out && !self.server() && p.syn && !p.ack_flag;
        if let Some(i) = found.filter(|_| !engine_opens) {
            self.current = Some(i);
            return Ok(i);
        }
        let n = u32::try_from(self.flows.len()).unwrap_or(0);
        let client = if self.server() {
            // packetdrill's port: one per client address.
            client.map(|c| SocketAddr::new(c, 40_000 + u16::from(last_octet(c))))
        } else {
            None
        };
        self.flows.push(Flow {
            client,
            server: SocketAddr::new(server, PORT),
            our_isn: None,
            peer_isn: 1_000_000 * (n + 1),
            our_nonce: None,
            peer_nonce: 0x5eed_0000 + n,
            answered: false,
            peer_ts: 1,
        });
        let i = self.flows.len() - 1;
        self.current = Some(i);
        Ok(i)
    }

    fn key_value(&self, k: &KeyRef) -> Result<u64, String> {
        k.value
            .or(if k.server { self.skey } else { self.ckey })
            .ok_or_else(|| format!("{} is not known", if k.server { "skey" } else { "ckey" }))
    }

    fn learn_keys(&mut self, p: &Packet) {
        for o in &p.opts {
            if let Opt::Mptcp(MpOpt::Capable { keys, .. }) = o {
                for k in keys {
                    if let Some(v) = k.value {
                        if k.server {
                            self.skey = Some(v);
                        } else {
                            self.ckey = Some(v);
                        }
                    }
                }
            }
        }
    }

    /// Builds a `<` packet and hands it to the stack.
    #[expect(
        clippy::too_many_lines,
        reason = "a packet, field by field, in wire order"
    )]
    fn inject(&mut self, p: &Packet) -> Result<(), String> {
        self.learn_keys(p);
        let fi = self.flow_for(p)?;
        if p.syn && !p.ack_flag && self.flows[fi].our_isn.is_some() {
            // A new connection on a 4-tuple used before: what the engine said is forgotten.
            let f = &mut self.flows[fi];
            f.our_isn = None;
            f.our_nonce = None;
            f.peer_isn = f.peer_isn.wrapping_add(5_000_000);
        }
        if p.syn && p.ack_flag {
            self.flows[fi].answered = true;
        }
        let f = self.flows[fi].clone();
        let client = f.client.ok_or("the engine has not opened this flow yet")?;
        let (src, dst) = if self.server() {
            (client, f.server)
        } else {
            (f.server, client)
        };
        // The history of this flow: the engine's next sequence number and its latest TSval.
        let mine: Vec<&Sent> = self
            .history
            .iter()
            .chain(self.queue.iter())
            .filter(|s| s.src == dst && s.dst == src)
            .collect();
        let our_next = mine
            .iter()
            .map(|s| {
                let seg = s.seg();
                let l = u32::try_from(seg.payload.len()).unwrap_or(0)
                    + u32::from(seg.flags.contains(TcpFlags::SYN))
                    + u32::from(seg.flags.contains(TcpFlags::FIN));
                seg.seq_number.0.wrapping_add(l)
            })
            .max_by_key(|v| v.wrapping_sub(f.our_isn.unwrap_or(0)));
        let our_ts = mine
            .iter()
            .rev()
            .find_map(|s| s.seg().timestamps.map(|t| t.0));
        let mut flags = 0;
        for (on, bit) in [
            (p.syn, TcpFlags::SYN),
            (p.fin, TcpFlags::FIN),
            (p.rst, TcpFlags::RST),
        ] {
            if on {
                flags |= bit;
            }
        }
        let ack_number = if p.ack_flag {
            // (A flow the engine never opened: any number will do, it has no connection.)
            let isn = f.our_isn.unwrap_or(0);
            Some(SeqNumber(match p.ack {
                Some(a) => isn.wrapping_add(a),
                // No `ack N`: packetdrill's ACK number is not written; take the engine's
                // next sequence number (acknowledging nothing new).
                None => our_next.unwrap_or(isn.wrapping_add(1)),
            }))
        } else {
            None
        };
        let payload: Vec<u8> = (0..p.len)
            .map(|i| u8::try_from(i % 251).unwrap_or(0))
            .collect();
        let mut remove_ids: Vec<Vec<u8>> = Vec::new();
        for o in &p.opts {
            if let Opt::Mptcp(MpOpt::RemoveAddr { ids }) = o {
                remove_ids.push(ids.clone());
            }
        }
        let mut seg = TcpRepr {
            src_port: src.port(),
            dst_port: dst.port(),
            flags: TcpFlags(flags),
            seq_number: SeqNumber(f.peer_isn.wrapping_add(p.seq)),
            ack_number,
            window_len: p.win.unwrap_or(65_535),
            ..TcpRepr::default()
        };
        let mut removes = remove_ids.iter();
        for o in &p.opts {
            match o {
                Opt::Mss(m) => seg.max_seg_size = Some(*m),
                Opt::SackOk => seg.sack_permitted = true,
                Opt::Wscale(w) => seg.window_scale = Some(*w),
                Opt::Ts { val, .. } => {
                    seg.timestamps = Some((*val, our_ts.unwrap_or(0)));
                    self.flows[fi].peer_ts = *val;
                }
                Opt::Nop => {}
                Opt::Mptcp(m) => {
                    let o = self.build(m, &f, &mut removes)?;
                    seg.mptcp
                        .try_push(o)
                        .map_err(|_| "more than four MPTCP options")?;
                }
            }
        }
        // Timestamps in use on this flow (the engine sends them after its SYN): the scripts
        // leave them out of some packets, which Linux takes and RFC 7323 §3.2 has the
        // engine's TCP drop; TCP options are not what the scripts test, so one is added.
        let ts_in_use = !p.syn
            && mine
                .iter()
                .any(|s| s.seg().timestamps.is_some() && !s.seg().flags.contains(TcpFlags::SYN));
        if ts_in_use && seg.timestamps.is_none() && !p.rst {
            seg.timestamps = Some((self.flows[fi].peer_ts, our_ts.unwrap_or(0)));
        }
        seg.payload = &payload;
        let mut pkt = vec![0u8; 20 + seg.buffer_len()];
        let (IpAddr::V4(s4), IpAddr::V4(d4)) = (src.ip(), dst.ip()) else {
            return Err("IPv6 flows are not played".to_owned());
        };
        Ipv4Repr {
            src_addr: s4,
            dst_addr: d4,
            protocol: PROTOCOL_TCP,
            payload_len: seg.buffer_len(),
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: true,
        }
        .emit(&mut pkt);
        seg.emit(&mut pkt[20..], src.ip(), dst.ip());
        if std::env::var_os("PACKETDRILL_TRACE").is_some() {
            println!(
                "line {}: {:.3} < {src} > {dst} {seg:?}",
                self.line, self.now
            );
        }
        let now = self.instant(self.now);
        let _ = self.stack()?.handle_packet(now, &pkt);
        self.collect();
        self.last = self.now;
        Ok(())
    }

    fn idsn_rel(long: bool, base: u64, rel: u64) -> DataSeqField {
        let v = base.wrapping_add(rel);
        if long {
            DataSeqField::Long(v)
        } else {
            #[expect(clippy::cast_possible_truncation, reason = "the low 32 bits")]
            DataSeqField::Short(v as u32)
        }
    }

    /// An MPTCP option the script sends.
    #[expect(clippy::too_many_lines, reason = "one arm per option")]
    fn build<'a>(
        &self,
        m: &MpOpt,
        f: &Flow,
        removes: &mut core::slice::Iter<'a, Vec<u8>>,
    ) -> Result<MptcpOption<'a>, String> {
        Ok(match m {
            MpOpt::Capable {
                version,
                flags,
                keys,
                data_len,
            } => {
                let keys = match (keys.as_slice(), data_len) {
                    ([], _) => MpCapableKeys::None,
                    ([k], _) => MpCapableKeys::Sender {
                        sender_key: self.key_value(k)?,
                    },
                    ([_, _], None) => MpCapableKeys::Both {
                        sender_key: self.ckey.ok_or("ckey is not known")?,
                        receiver_key: self.skey.ok_or("skey is not known")?,
                    },
                    ([_, _], Some(n)) => MpCapableKeys::WithData {
                        sender_key: self.ckey.ok_or("ckey is not known")?,
                        receiver_key: self.skey.ok_or("skey is not known")?,
                        data_len: *n,
                        checksum: None,
                    },
                    _ => return Err("more than two keys".to_owned()),
                };
                MptcpOption::MpCapable(MpCapable {
                    version: *version,
                    flags: MpCapableFlags(*flags),
                    keys,
                })
            }
            MpOpt::JoinSyn {
                backup,
                address_id,
                token,
            } => MptcpOption::MpJoin(MpJoin::Syn {
                backup: *backup,
                address_id: address_id.unwrap_or(0),
                token: match token {
                    Some(t) => *t,
                    None => crypto::token(self.skey.ok_or("skey is not known")?),
                },
                nonce: f.peer_nonce,
            }),
            MpOpt::JoinSynAck { backup, address_id } => {
                let (ours, peer) = self.keys()?;
                let our_nonce = f.our_nonce.ok_or("the engine's nonce is not known")?;
                MptcpOption::MpJoin(MpJoin::SynAck {
                    backup: *backup,
                    address_id: address_id.unwrap_or(0),
                    hmac: crypto::join_truncated_hmac(peer, ours, f.peer_nonce, our_nonce),
                    nonce: f.peer_nonce,
                })
            }
            MpOpt::JoinAck => {
                let (ours, peer) = self.keys()?;
                let our_nonce = f.our_nonce.ok_or("the engine's nonce is not known")?;
                MptcpOption::MpJoin(MpJoin::Ack {
                    hmac: crypto::join_hmac_160(peer, ours, f.peer_nonce, our_nonce),
                })
            }
            MpOpt::Dss {
                ack,
                dsn,
                ssn,
                dll,
                fin,
            } => {
                let (ours, peer) = self.keys()?;
                MptcpOption::Dss(Dss {
                    data_fin: *fin,
                    data_ack: ack.map(|a| Self::idsn_rel(a.long, crypto::idsn(ours), a.value)),
                    mapping: dsn.map(|d| DssMapping {
                        dsn: Self::idsn_rel(d.long, crypto::idsn(peer), d.value),
                        ssn: ssn.unwrap_or(0),
                        data_len: dll.unwrap_or(0),
                        checksum: None,
                    }),
                })
            }
            MpOpt::AddAddr {
                address_id,
                addr,
                port,
                echo,
            } => {
                let ip = resolve(addr);
                let id = address_id.unwrap_or(match addr {
                    Addr::Named { n, .. } => *n,
                    Addr::Literal(_) => 1,
                });
                let form = if *echo {
                    AddAddrForm::Echo
                } else {
                    let (ours, peer) = self.keys()?;
                    AddAddrForm::Announce {
                        hmac: crypto::add_addr_hmac(peer, ours, id, ip, *port),
                    }
                };
                MptcpOption::AddAddr(AddAddr {
                    address_id: id,
                    address: ip,
                    port: *port,
                    form,
                })
            }
            MpOpt::RemoveAddr { .. } => MptcpOption::RemoveAddr(RemoveAddr {
                address_ids: removes.next().ok_or("no REMOVE_ADDR ids")?,
            }),
            MpOpt::Prio { backup, address_id } => MptcpOption::MpPrio(MpPrio {
                backup: *backup,
                address_id: *address_id,
            }),
            MpOpt::Fastclose { key } => MptcpOption::MpFastclose(MpFastclose {
                receiver_key: match key {
                    Some(k) => *k,
                    None => self.our_key().ok_or("the engine's key is not known")?,
                },
            }),
            MpOpt::Reset { reason } => MptcpOption::MpTcpRst(MpTcpRst {
                flags: 0,
                reason: *reason,
            }),
            MpOpt::Fail { dsn } => MptcpOption::MpFail(MpFail {
                dsn: crypto::idsn(self.our_key().ok_or("the engine's key is not known")?)
                    .wrapping_add(*dsn),
            }),
        })
    }

    /// A `>` line: the next packet the engine sends must be this one.
    fn expect(&mut self, p: &Packet, lo: f64, hi: f64) -> Result<(), String> {
        self.learn_keys(p);
        let fi = self.flow_for(p)?;
        let deadline = hi + TOLERANCE + MAX_LATE;
        // Order is compared within a subflow only: packets the engine sends on different
        // subflows at one instant have no order on the wire.
        let mut from = 0;
        loop {
            let Some(k) = (from..self.queue.len()).find(|&k| self.on_flow(fi, &self.queue[k]))
            else {
                // Let time run to the stack's next timer, as long as the packet may still come.
                let next = self
                    .st
                    .as_ref()
                    .and_then(Stack::poll_timeout)
                    .map(|d| d.saturating_duration_since(self.base).as_secs_f64());
                match next {
                    Some(t) if t <= deadline => {
                        from = self.queue.len();
                        self.run_timers(t);
                        continue;
                    }
                    _ if self.data_fin_elsewhere(p, fi) => {
                        self.report.deviations.push(format!(
                            "line {}: the DATA_FIN went on another subflow only",
                            self.line
                        ));
                        return Ok(());
                    }
                    _ => {
                        return Err(format!(
                            "the engine never sent the packet (waited until {deadline:.2} s)"
                        ));
                    }
                }
            };
            let s = self.queue.remove(k).unwrap_or_else(|| unreachable!());
            from = k;
            match self.compare(p, fi, &s) {
                Ok((bind, devs)) => {
                    self.apply(fi, &bind);
                    for d in devs {
                        self.report
                            .deviations
                            .push(format!("line {}: {d}", self.line));
                    }
                    if s.at + 1e-9 < lo - TOLERANCE {
                        self.report.deviations.push(format!(
                            "line {}: sent at {:.3} s, earlier than {:.3} s",
                            self.line, s.at, lo
                        ));
                    } else if s.at > hi + TOLERANCE + 1e-9 {
                        self.report.deviations.push(format!(
                            "line {}: sent {:.2} s later than the script says",
                            self.line,
                            s.at - hi
                        ));
                    }
                    self.last = s.at.max(self.last);
                    self.now = self.now.max(s.at);
                    self.history.push(s);
                    return Ok(());
                }
                Err(_) if self.folded(p, fi, &s) => {
                    self.report.deviations.push(format!(
                        "line {}: this ACK went with the engine's next packet",
                        self.line
                    ));
                    self.queue.insert(k, s);
                    return Ok(());
                }
                Err(mismatch) => match self.extra(&s) {
                    Ok(why) => {
                        self.report
                            .deviations
                            .push(format!("line {}: {why}", self.line));
                        self.history.push(s);
                    }
                    Err(_) => {
                        return Err(format!("{mismatch}; the engine sent {}", self.show(&s)));
                    }
                },
            }
        }
    }

    /// Whether expected packet `p` is a pure ACK whose acknowledgments (TCP's and the
    /// `DATA_ACK`) sent packet `s`, the engine's next one on the flow, carries as well.
    fn folded(&self, p: &Packet, fi: usize, s: &Sent) -> bool {
        let pure = !p.syn && !p.fin && !p.rst && p.ack_flag && p.len == 0;
        // Its MPTCP options: DSS with a DATA_ACK and nothing else.
        let mut dacks: Vec<Field> = Vec::new();
        for o in &p.opts {
            match o {
                Opt::Mptcp(MpOpt::Dss {
                    ack: Some(a),
                    dsn: None,
                    fin: false,
                    ..
                }) => dacks.push(*a),
                Opt::Mptcp(_) => return false,
                _ => {}
            }
        }
        let f = &self.flows[fi];
        let seg = s.seg();
        let (Some(peer), Some(a), Some(want)) = (self.peer_key(), seg.ack_number, p.ack) else {
            return false;
        };
        pure && !seg.flags.contains(TcpFlags::RST)
            && a.0.wrapping_sub(f.peer_isn) == want
            && dacks.iter().all(|d| {
                seg.mptcp.iter().any(|o| {
                    matches!(o, MptcpOption::Dss(x)
                    if x.data_ack.is_some_and(|got| {
                        check_field("DATA_ACK", got, crypto::idsn(peer), *d).is_ok()
                    }))
                })
            })
    }

    /// Whether `p` is a bare `DATA_FIN` the engine already sent, with that DSN, on another
    /// subflow: one subflow is enough (§3.3.3: "on any subflow"); Linux sends it on every one.
    fn data_fin_elsewhere(&self, p: &Packet, fi: usize) -> bool {
        let Some(ours) = self.our_key() else {
            return false;
        };
        let fin_dsn = p.opts.iter().find_map(|o| match o {
            Opt::Mptcp(MpOpt::Dss {
                dsn: Some(d),
                fin: true,
                dll: Some(1),
                ..
            }) => Some(*d),
            _ => None,
        });
        let Some(want) = fin_dsn.filter(|_| p.len == 0 && !p.fin && !p.syn && !p.rst) else {
            return false;
        };
        self.history.iter().any(|s| {
            !self.on_flow(fi, s)
                && s.seg().mptcp.iter().any(|o| {
                    matches!(o, MptcpOption::Dss(d) if d.data_fin && d.mapping.is_some_and(|m| {
                        check_field("DSN", m.dsn, crypto::idsn(ours), want).is_ok()
                    }))
                })
        })
    }

    /// Whether a sent packet is on flow `fi` (a flow whose client is not known yet: a
    /// packet of the engine's to that server on no known flow).
    fn on_flow(&self, fi: usize, s: &Sent) -> bool {
        let f = &self.flows[fi];
        match (self.server(), f.client) {
            (true, c) => s.src == f.server && Some(s.dst) == c,
            (false, Some(c)) => s.src == c && s.dst == f.server,
            (false, None) => s.dst == f.server && self.flow_of(s).is_none(),
        }
    }

    fn apply(&mut self, fi: usize, b: &Bind) {
        let f = &mut self.flows[fi];
        if let Some(c) = b.client {
            f.client = Some(c);
        }
        if let Some(i) = b.our_isn {
            f.our_isn = Some(i);
        }
        if let Some(n) = b.our_nonce {
            f.our_nonce = Some(n);
        }
        if let Some(k) = b.our_key {
            if self.server() {
                self.skey = Some(k);
            } else {
                self.ckey = Some(k);
            }
        }
    }

    /// Compares an expected packet with a sent one: what it teaches, and the allowed
    /// differences; or what differs.
    fn compare(&self, p: &Packet, fi: usize, s: &Sent) -> Result<(Bind, Vec<String>), String> {
        let f = &self.flows[fi];
        let seg = s.seg();
        let mut bind = Bind::default();
        let mut devs = Vec::new();
        // The flow.
        let (ours, theirs) = if self.server() {
            (f.server, f.client)
        } else {
            (f.client.unwrap_or(s.src), Some(f.server))
        };
        if s.src.ip() != ours.ip() || Some(s.dst.ip()) != theirs.map(|t| t.ip()) {
            return Err(format!("wrong addresses: {} > {}", s.src, s.dst));
        }
        if f.client.is_none() {
            bind.client = Some(s.src);
        } else if s.src != ours || Some(s.dst) != theirs {
            return Err(format!("wrong ports: {} > {}", s.src, s.dst));
        }
        // Flags.
        let has = |b| seg.flags.contains(b);
        let letters = format!(
            "{}{}",
            seg.flags.letters(),
            if seg.ack_number.is_some() { "." } else { "" }
        );
        if has(TcpFlags::SYN) != p.syn || has(TcpFlags::FIN) != p.fin || has(TcpFlags::RST) != p.rst
        {
            return Err(format!("flags {letters}"));
        }
        if seg.ack_number.is_some() != p.ack_flag {
            if p.rst {
                devs.push(format!("RST with flags {letters}"));
            } else {
                return Err(format!("flags {letters}"));
            }
        }
        // Sequence, length, acknowledgment.
        let our_isn = if p.syn {
            bind.our_isn = Some(seg.seq_number.0.wrapping_sub(p.seq));
            bind.our_isn
        } else {
            f.our_isn
        };
        let rst_alone = p.rst && !p.ack_flag;
        if !rst_alone {
            // A reset answering a SYN has no ISN of ours to be relative to.
            let isn = match our_isn {
                Some(i) => i,
                None if p.rst => 0,
                None => return Err("no SYN from the engine on this flow yet".to_owned()),
            };
            let rel = seg.seq_number.0.wrapping_sub(isn);
            if rel != p.seq {
                return Err(format!("sequence number {rel}, not {}", p.seq));
            }
        }
        if u32::try_from(seg.payload.len()).ok() != Some(p.len) {
            return Err(format!(
                "{} bytes of payload, not {}",
                seg.payload.len(),
                p.len
            ));
        }
        if let (Some(a), Some(want), false) = (seg.ack_number, p.ack, rst_alone) {
            let rel = a.0.wrapping_sub(f.peer_isn);
            if rel != want {
                return Err(format!("ack {rel}, not {want}"));
            }
        }
        // MPTCP options: every expected one present and equal; nothing else but a DATA_ACK.
        let our_key = self.our_key();
        let expected: Vec<&MpOpt> = p
            .opts
            .iter()
            .filter_map(|o| match o {
                Opt::Mptcp(m) => Some(m),
                _ => None,
            })
            .collect();
        let mut used = vec![false; seg.mptcp.len()];
        for e in &expected {
            let found = seg
                .mptcp
                .iter()
                .enumerate()
                .find(|(i, o)| !used[*i] && same_kind(e, o));
            let Some((i, o)) = found else {
                return Err(format!("no {} option", kind_name(e)));
            };
            used[i] = true;
            self.compare_option(e, o, f, our_key, &mut bind, &mut devs)?;
        }
        for (i, o) in seg.mptcp.iter().enumerate() {
            if used[i] {
                continue;
            }
            match o {
                MptcpOption::Dss(d) if d.mapping.is_none() && !d.data_fin => {
                    devs.push("a DATA_ACK where Linux sends none".to_owned());
                }
                _ => return Err(format!("an unexpected option {o:?}")),
            }
        }
        Ok((bind, devs))
    }

    #[expect(clippy::too_many_lines, reason = "one arm per option")]
    fn compare_option(
        &self,
        e: &MpOpt,
        o: &MptcpOption<'_>,
        f: &Flow,
        our_key: Option<u64>,
        bind: &mut Bind,
        devs: &mut Vec<String>,
    ) -> Result<(), String> {
        let peer_key = self.peer_key();
        match (e, o) {
            (
                MpOpt::Capable {
                    version,
                    flags,
                    keys,
                    data_len,
                },
                MptcpOption::MpCapable(m),
            ) => {
                if m.version != *version || m.flags.0 != *flags {
                    return Err(format!(
                        "MP_CAPABLE v{} flags {:#x}, not v{version} {flags:#x}",
                        m.version, m.flags.0
                    ));
                }
                // The keys in the order the option carries them: sender's, then receiver's.
                let (got, got_len): (Vec<u64>, Option<u16>) = match m.keys {
                    MpCapableKeys::None => (vec![], None),
                    MpCapableKeys::Sender { sender_key } => (vec![sender_key], None),
                    MpCapableKeys::Both {
                        sender_key,
                        receiver_key,
                    } => (vec![sender_key, receiver_key], None),
                    MpCapableKeys::WithData {
                        sender_key,
                        receiver_key,
                        data_len,
                        ..
                    } => (vec![sender_key, receiver_key], Some(data_len)),
                };
                if got.len() != keys.len() || got_len != *data_len {
                    return Err(format!("MP_CAPABLE keys {:?}", m.keys));
                }
                // Which key is whose: one key is its sender's (ours); two are the client's
                // then the server's.
                let whose: Vec<bool> = match keys.len() {
                    1 => vec![self.server()],
                    _ => vec![false, true],
                };
                for (v, server) in got.iter().zip(whose) {
                    let mine = server == self.server();
                    let known = if server { self.skey } else { self.ckey };
                    match known.or(if mine { bind.our_key } else { None }) {
                        Some(k) if k != *v => {
                            return Err(format!("MP_CAPABLE key {v:#x}, not {k:#x}"));
                        }
                        Some(_) => {}
                        None if mine => bind.our_key = Some(*v),
                        None => return Err("the script's key is not known".to_owned()),
                    }
                }
            }
            (
                MpOpt::JoinSyn {
                    backup,
                    address_id,
                    token,
                },
                MptcpOption::MpJoin(MpJoin::Syn {
                    backup: b,
                    address_id: a,
                    token: t,
                    nonce,
                }),
            ) => {
                let want = match token {
                    Some(t) => *t,
                    None => crypto::token(self.skey.ok_or("skey is not known")?),
                };
                if *t != want || b != backup {
                    return Err(format!("MP_JOIN SYN token {t:#x} backup {b}"));
                }
                id_check(devs, *address_id, *a, "MP_JOIN");
                bind.our_nonce = Some(*nonce);
            }
            (
                MpOpt::JoinSynAck { backup, address_id },
                MptcpOption::MpJoin(MpJoin::SynAck {
                    backup: b,
                    address_id: a,
                    hmac,
                    nonce,
                }),
            ) => {
                let (ours, peer) = (our_key.ok_or("no key")?, peer_key.ok_or("no key")?);
                let want = crypto::join_truncated_hmac(ours, peer, *nonce, f.peer_nonce);
                if *hmac != want {
                    return Err(format!("MP_JOIN SYN/ACK HMAC {hmac:#x}, not {want:#x}"));
                }
                if b != backup {
                    // The B bit of a SYN/ACK is its sender's own wish (§3.2); the 2021 kernel
                    // of the older scripts mirrored the SYN's, today's does as the engine does.
                    devs.push(format!(
                        "MP_JOIN SYN/ACK backup {b} where this Linux sent {backup}"
                    ));
                }
                id_check(devs, *address_id, *a, "MP_JOIN");
                bind.our_nonce = Some(*nonce);
            }
            (MpOpt::JoinAck, MptcpOption::MpJoin(MpJoin::Ack { hmac })) => {
                let (ours, peer) = (our_key.ok_or("no key")?, peer_key.ok_or("no key")?);
                let n = f.our_nonce.ok_or("our nonce is not known")?;
                if *hmac != crypto::join_hmac_160(ours, peer, n, f.peer_nonce) {
                    return Err("MP_JOIN ACK HMAC is wrong".to_owned());
                }
            }
            (
                MpOpt::Dss {
                    ack,
                    dsn,
                    ssn,
                    dll,
                    fin,
                },
                MptcpOption::Dss(d),
            ) => {
                let ours = our_key.or(bind.our_key).ok_or("no key")?;
                let peer = peer_key.ok_or("no key")?;
                if d.data_fin != *fin {
                    return Err(format!("DATA_FIN {}", d.data_fin));
                }
                if let Some(a) = ack {
                    let got = d.data_ack.ok_or("no DATA_ACK")?;
                    check_field("DATA_ACK", got, crypto::idsn(peer), *a)?;
                }
                match (dsn, d.mapping) {
                    (Some(want), Some(m)) => {
                        check_field("DSN", m.dsn, crypto::idsn(ours), *want)?;
                        if ssn.is_some_and(|s| s != m.ssn) {
                            return Err(format!("SSN {}", m.ssn));
                        }
                        if dll.is_some_and(|l| l != m.data_len) {
                            return Err(format!("data-level length {}", m.data_len));
                        }
                    }
                    (Some(_), None) => return Err("no mapping".to_owned()),
                    (None, Some(m)) => return Err(format!("an unexpected mapping {m:?}")),
                    (None, None) => {}
                }
            }
            (
                MpOpt::AddAddr {
                    address_id,
                    addr,
                    port,
                    echo,
                },
                MptcpOption::AddAddr(a),
            ) => {
                if a.address != resolve(addr) || a.port != *port {
                    return Err(format!("ADD_ADDR of {} port {:?}", a.address, a.port));
                }
                match (echo, a.form) {
                    (true, AddAddrForm::Echo) => {}
                    (false, AddAddrForm::Announce { hmac }) => {
                        let (ours, peer) = (our_key.ok_or("no key")?, peer_key.ok_or("no key")?);
                        let want =
                            crypto::add_addr_hmac(ours, peer, a.address_id, a.address, a.port);
                        if hmac != want {
                            return Err("ADD_ADDR HMAC is wrong".to_owned());
                        }
                    }
                    _ => return Err(format!("ADD_ADDR form {:?}", a.form)),
                }
                // An echo repeats the announcer's id: that one must be right.
                if *echo {
                    if address_id.is_some_and(|w| w != a.address_id) {
                        return Err(format!("ADD_ADDR echo of id {}", a.address_id));
                    }
                } else {
                    id_check(devs, *address_id, a.address_id, "ADD_ADDR");
                }
            }
            (MpOpt::RemoveAddr { ids }, MptcpOption::RemoveAddr(r)) => {
                if r.address_ids != ids.as_slice() {
                    devs.push(format!(
                        "REMOVE_ADDR ids {:?} where Linux uses {ids:?}",
                        r.address_ids
                    ));
                }
            }
            (MpOpt::Prio { backup, .. }, MptcpOption::MpPrio(m)) => {
                if m.backup != *backup {
                    return Err(format!("MP_PRIO backup {}", m.backup));
                }
            }
            (MpOpt::Fastclose { .. }, MptcpOption::MpFastclose(m)) => {
                if Some(m.receiver_key) != peer_key {
                    return Err("MP_FASTCLOSE with a wrong key".to_owned());
                }
            }
            (MpOpt::Reset { reason }, MptcpOption::MpTcpRst(r)) => {
                if r.reason != *reason {
                    return Err(format!("MP_TCPRST reason {}, not {reason}", r.reason));
                }
            }
            (MpOpt::Fail { dsn }, MptcpOption::MpFail(f)) => {
                let want = peer_key.map(|k| crypto::idsn(k).wrapping_add(*dsn));
                if Some(f.dsn) != want {
                    return Err(format!("MP_FAIL at DSN {}", f.dsn));
                }
            }
            _ => return Err(format!("{} differs: {o:?}", kind_name(e))),
        }
        Ok(())
    }

    #[expect(clippy::too_many_lines, reason = "one arm per system call")]
    fn syscall(&mut self, s: &Syscall) -> Result<(), String> {
        let fd = |i: usize| -> Result<i64, String> {
            s.args
                .get(i)
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| format!("{}: bad argument {i}", s.name))
        };
        let now = self.instant(self.now);
        match s.name.as_str() {
            "socket" => {
                let plain = s.args.get(2).is_some_and(|a| a == "IPPROTO_TCP");
                let mut cfg = StackConfig {
                    no_mptcp: plain,
                    ..StackConfig::default()
                };
                cfg.endpoint.seed = 42;
                cfg.endpoint.secret = [7; 32];
                let mut st = Stack::new(cfg, self.base);
                for ip in self.pending.drain(..) {
                    st.announce(now, SocketAddr::new(ip, 0));
                }
                self.st = Some(st);
            }
            "listen" => {
                self.server_role = Some(true);
                self.listen_fd = Some(fd(0)?);
                self.stack()?
                    .listen(SocketAddr::new(addr_of(true, 0), PORT))
                    .map_err(|e| format!("listen: {e}"))?;
            }
            "accept" => {
                let got = self
                    .stack()?
                    .accept(SocketAddr::new(addr_of(true, 0), PORT));
                match (got, s.ret) {
                    (Some(id), r) if r >= 0 => {
                        self.incoming = self.incoming.saturating_sub(1);
                        self.fds.insert(r, id);
                    }
                    (None, r) if r < 0 => {}
                    (Some(_), _) => return Err("accept: a connection was ready".to_owned()),
                    (None, _) => return Err("accept: no connection is ready".to_owned()),
                }
            }
            "connect" => {
                self.server_role = Some(false);
                let paths = [Path {
                    local: addr_of(false, 0),
                    backup: false,
                }];
                let id = self
                    .stack()?
                    .connect(now, &paths, SocketAddr::new(addr_of(true, 0), PORT))
                    .map_err(|e| format!("connect: {e}"))?;
                self.fds.insert(fd(0)?, id);
            }
            "write" | "send" => {
                let id = *self.fds.get(&fd(0)?).ok_or("write: unknown fd")?;
                let n = usize::try_from(fd(2)?).map_err(|_| "write: bad length")?;
                let data: Vec<u8> = (0..n).map(|i| u8::try_from(i % 253).unwrap_or(0)).collect();
                let state = self.stack()?.state(id);
                match (s.errno.as_deref(), state) {
                    (Some("EAGAIN"), Some(ConnState::Connecting)) => {
                        self.report.deviations.push(format!(
                            "line {}: not written: the engine takes data before its handshake \
                             completes (RFC 9293 §3.10.2), where Linux says EAGAIN",
                            self.line
                        ));
                    }
                    (Some(e), _) => match self.stack()?.write(id, &data) {
                        Err(WriteError::Closed(r)) if errno_of(r) == e => {}
                        other => return Err(format!("write returned {other:?}, not {e}")),
                    },
                    (None, _) => {
                        let got = self
                            .stack()?
                            .write(id, &data)
                            .map_err(|e| format!("write: {e}"))?;
                        if i64::try_from(got).ok() != Some(s.ret) {
                            return Err(format!("write took {got} bytes, not {}", s.ret));
                        }
                    }
                }
            }
            "read" if s.ret < 0 => {
                return Err(format!("read failing with {:?} is not played", s.errno));
            }
            "read" => {
                let id = *self.fds.get(&fd(0)?).ok_or("read: unknown fd")?;
                let want = usize::try_from(s.ret).map_err(|_| "read: bad length")?;
                let size = usize::try_from(fd(2)?).map_err(|_| "read: bad size")?;
                let mut buf = vec![0u8; size];
                let mut got = 0;
                while got < size {
                    match self.stack()?.read(id, &mut buf[got..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
                if got != want {
                    return Err(format!("read returned {got} bytes, not {want}"));
                }
            }
            // A read of nothing (what regressions/zero_len_recvmsg.pkt does): it must change
            // nothing, and the script checks the ACKs around it.
            "recvmsg" if s.ret == 0 => {
                let id = *self.fds.get(&fd(0)?).ok_or("recvmsg: unknown fd")?;
                let _ = self.stack()?.read(id, &mut []);
            }
            "getsockopt" if s.args.get(2).is_some_and(|a| a == "SO_ERROR") => {
                let id = *self.fds.get(&fd(0)?).ok_or("getsockopt: unknown fd")?;
                let want = s.args.get(3).map_or("", |a| a.trim_matches(['[', ']']));
                let got = match self.stack()?.state(id) {
                    Some(ConnState::Closed(r)) if r != CloseReason::Finished => errno_of(r),
                    _ => "0",
                };
                if got != want {
                    return Err(format!("SO_ERROR is {got}, not {want}"));
                }
            }
            "poll" => self.poll(s)?,
            "shutdown" => {
                let id = *self.fds.get(&fd(0)?).ok_or("shutdown: unknown fd")?;
                self.stack()?.close(id);
            }
            "close" => {
                let id = *self.fds.get(&fd(0)?).ok_or("close: unknown fd")?;
                self.stack()?.close(id);
            }
            "bind" | "setsockopt" | "getsockopt" | "fcntl" => {}
            other => return Err(format!("system call {other} is not played")),
        }
        self.collect();
        self.last = self.now;
        Ok(())
    }

    /// `poll([{fd=3, events=POLLOUT, revents=POLLOUT}], 1, 0) = 1`: what the engine would
    /// report for that descriptor (a listener: a connection to accept; a connection:
    /// connected, readable, ended with an error).
    fn poll(&mut self, s: &Syscall) -> Result<(), String> {
        let spec = s.args.first().ok_or("poll without descriptors")?;
        let field = |name: &str| {
            spec.split([',', '{', '}', '[', ']'])
                .map(str::trim)
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_owned)
                .ok_or_else(|| format!("poll: no {name}"))
        };
        let fd: i64 = field("fd=")?.parse().map_err(|_| "poll: bad fd")?;
        let set = |l: String| -> Vec<String> {
            l.split('|')
                .map(str::to_owned)
                .filter(|x| x != "0")
                .collect()
        };
        let events = set(field("events=")?);
        let mut want = set(field("revents=")?);
        let mut got = Vec::new();
        if Some(fd) == self.listen_fd {
            if self.incoming > 0 {
                got.push("POLLIN".to_owned());
            }
        } else {
            let id = *self.fds.get(&fd).ok_or("poll: unknown fd")?;
            let st = self.stack()?;
            match st.state(id) {
                Some(ConnState::Established | ConnState::Fallback) => {
                    got.push("POLLOUT".to_owned());
                    if st.readable(id) > 0 {
                        got.push("POLLIN".to_owned());
                    }
                }
                Some(ConnState::Closed(r)) if r != CloseReason::Finished => {
                    got.extend(["POLLOUT", "POLLERR", "POLLHUP"].map(str::to_owned));
                }
                _ => {}
            }
            // Only what was asked for, and errors, which are always reported.
            got.retain(|e| events.contains(e) || e == "POLLERR" || e == "POLLHUP");
        }
        got.sort();
        want.sort();
        if got != want {
            return Err(format!("poll reports {got:?}, not {want:?}"));
        }
        Ok(())
    }

    fn shell(&mut self, c: &str) -> Result<(), String> {
        let now = self.instant(self.now);
        let w: Vec<&str> = c.split_whitespace().collect();
        match w.as_slice() {
            ["../common/defaults.sh" | "../common/client.sh"]
            | ["../common/multi-ep.sh", ..]
            | ["ip", "mptcp", "endpoint", "flush"] => {}
            // The server set-up: a second address, announced.
            ["../common/server.sh"] => self.announce(now, addr_of(true, 1), None),
            ["ip", "mptcp", "endpoint", "add", a, rest @ ..] if rest.ends_with(&["signal"]) => {
                let ip: IpAddr = a.parse().map_err(|_| format!("bad address {a}"))?;
                let id = match rest {
                    ["id", n, "signal"] => Some(n.parse().map_err(|_| format!("bad id {n}"))?),
                    _ => None,
                };
                self.announce(now, ip, id);
            }
            ["ip", "mptcp", "endpoint", "delete", "id", n] => {
                let n: u8 = n.parse().map_err(|_| format!("bad id {n}"))?;
                let ip = *self.endpoints.get(&n).ok_or("no such endpoint")?;
                self.stack()?.withdraw(now, ip);
            }
            _ => return Err(format!("shell command {c:?} is not played")),
        }
        self.collect();
        self.last = self.now;
        Ok(())
    }

    fn announce(&mut self, now: Instant, ip: IpAddr, id: Option<u8>) {
        if let Some(n) = id {
            self.endpoints.insert(n, ip);
        }
        match self.st.as_mut() {
            Some(st) => st.announce(now, SocketAddr::new(ip, 0)),
            // Before the socket: announced once the stack exists.
            None => self.pending.push(ip),
        }
    }
}

/// Address IDs are the sender's local names (§3.4.1): another one than Linux's is allowed.
fn id_check(devs: &mut Vec<String>, want: Option<u8>, got: u8, what: &str) {
    if want.is_some_and(|w| w != got) {
        devs.push(format!(
            "{what} address id {got} where Linux uses {}",
            want.unwrap_or(0)
        ));
    }
}

/// The `errno` a socket reports for a connection that ended so.
fn errno_of(r: CloseReason) -> &'static str {
    match r {
        CloseReason::Refused => "ECONNREFUSED",
        CloseReason::TimedOut => "ETIMEDOUT",
        _ => "ECONNRESET",
    }
}

fn resolve(a: &Addr) -> IpAddr {
    match a {
        Addr::Named { server, n } => addr_of(*server, *n),
        Addr::Literal(ip) => *ip,
    }
}

fn last_octet(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    }
}

#[expect(clippy::cast_possible_truncation, reason = "the low 32 bits")]
fn check_field(what: &str, got: DataSeqField, base: u64, want: Field) -> Result<(), String> {
    let rel = got.value().wrapping_sub(base);
    let ok = if got.is_long() && want.long {
        rel == want.value
    } else {
        // Four octets on either side: the low 32 bits.
        (got.value() as u32).wrapping_sub(base as u32) == want.value as u32
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {rel} (relative), not {}", want.value))
    }
}

fn same_kind(e: &MpOpt, o: &MptcpOption<'_>) -> bool {
    matches!(
        (e, o),
        (MpOpt::Capable { .. }, MptcpOption::MpCapable(_))
            | (
                MpOpt::JoinSyn { .. },
                MptcpOption::MpJoin(MpJoin::Syn { .. })
            )
            | (
                MpOpt::JoinSynAck { .. },
                MptcpOption::MpJoin(MpJoin::SynAck { .. })
            )
            | (MpOpt::JoinAck, MptcpOption::MpJoin(MpJoin::Ack { .. }))
            | (MpOpt::Dss { .. }, MptcpOption::Dss(_))
            | (MpOpt::AddAddr { .. }, MptcpOption::AddAddr(_))
            | (MpOpt::RemoveAddr { .. }, MptcpOption::RemoveAddr(_))
            | (MpOpt::Prio { .. }, MptcpOption::MpPrio(_))
            | (MpOpt::Fastclose { .. }, MptcpOption::MpFastclose(_))
            | (MpOpt::Reset { .. }, MptcpOption::MpTcpRst(_))
            | (MpOpt::Fail { .. }, MptcpOption::MpFail(_))
    )
}

fn kind_name(e: &MpOpt) -> &'static str {
    match e {
        MpOpt::Capable { .. } => "MP_CAPABLE",
        MpOpt::JoinSyn { .. } => "MP_JOIN SYN",
        MpOpt::JoinSynAck { .. } => "MP_JOIN SYN/ACK",
        MpOpt::JoinAck => "MP_JOIN ACK",
        MpOpt::Dss { .. } => "DSS",
        MpOpt::AddAddr { .. } => "ADD_ADDR",
        MpOpt::RemoveAddr { .. } => "REMOVE_ADDR",
        MpOpt::Prio { .. } => "MP_PRIO",
        MpOpt::Fastclose { .. } => "MP_FASTCLOSE",
        MpOpt::Reset { .. } => "MP_TCPRST",
        MpOpt::Fail { .. } => "MP_FAIL",
    }
}
