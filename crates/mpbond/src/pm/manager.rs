//! The path manager's decisions, sans-IO: kernel events, line health and address changes in;
//! commands for the kernel out ([`Command`], executed by the driver, which reports each result).
//!
//! On the client side (gateway, `connect`) every established connection gets one subflow per
//! usable line (`MP_JOIN`, RFC 8684 §3.2), backups flagged (`MP_PRIO`, §3.3.8). A subflow that
//! closes while its line works is re-created, with backoff. A line that stops working has its
//! address id withdrawn from each connection that has another subflow (`REMOVE_ADDR`, §3.4.2): the
//! kernel closes our subflows on it and the peer closes its side as soon as the option arrives
//! by another line, reinjecting there what it had in flight, instead of waiting for its
//! retransmission timer. When a line's address goes away and another comes (a laptop moving
//! between networks), subflows from the old one are closed and new ones made from the new one
//! (break-before-make); the old id is withdrawn once a new subflow can carry the option.
//! Joins go to the peer's initial address, or to the first address it announces (`ADD_ADDR`,
//! §3.4.1) for the lines that have no subflow yet then; a peer that set the C flag in its
//! `MP_CAPABLE` (§3.1: "do not join my initial address", a converter behind a load balancer)
//! gets joins only at an address it announced.
//!
//! On the server side (converter, `listen`) it announces the configured extra addresses
//! (`ADD_ADDR`, §3.4.1).

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::netlink::mptcp_pm::{Endpoint, flag};
use crate::netlink::pm_event::{Event, Kind};

/// What the connections we serve are told of our addresses (`ADD_ADDR`, RFC 8684 §3.4.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announce {
    /// Each announced on the connections of its family, unless their first subflow already
    /// reached it.
    pub addrs: Vec<IpAddr>,
    /// Our `MP_CAPABLE` carries the C flag (a converter in a fleet, [`crate::converter::fleet`]):
    /// peers may not join the address their first subflow reached, even when it is one of
    /// `addrs`. Behind a DNAT balancer it is: the first subflow arrives at the instance's own
    /// address. So every address is announced, that one too, and joins can go there.
    pub c_flag: bool,
}

/// A WAN line the manager may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineConfig {
    /// Its name (the interface).
    pub name: String,
    /// The interface index.
    pub ifindex: u32,
    /// Used only while no regular line works.
    pub backup: bool,
    /// Its probe interval while in use, if not the configured one (`probe=`).
    pub probe: Option<Duration>,
    /// Its probe interval while idle, if not the configured one (`probe-idle=`).
    pub probe_idle: Option<Duration>,
}

/// What the kernel is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Open a subflow of `token` from `local` to `remote`.
    Create {
        /// The connection.
        token: u32,
        /// The line it goes out of.
        line: usize,
        /// Local address, id, interface, backup flag.
        local: Endpoint,
        /// The peer.
        remote: SocketAddr,
    },
    /// Withdraw a local address id (closes our subflows from it, tells the peer).
    Remove {
        /// The connection.
        token: u32,
        /// The id.
        loc_id: u8,
    },
    /// Close one subflow.
    Destroy {
        /// The connection.
        token: u32,
        /// Its local end.
        local: SocketAddr,
        /// Its remote end.
        remote: SocketAddr,
    },
    /// Mark a subflow backup (`MP_PRIO`).
    SetBackup {
        /// The connection.
        token: u32,
        /// Its local end.
        local: SocketAddr,
        /// Its remote end.
        remote: SocketAddr,
    },
    /// Announce a local address to the peer.
    Announce {
        /// The connection.
        token: u32,
        /// Address and id.
        local: Endpoint,
    },
}

/// One subflow as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Subflow {
    /// Local address id.
    pub loc_id: u8,
    /// Remote address id.
    pub rem_id: u8,
    /// Local end.
    pub local: SocketAddr,
    /// Remote end.
    pub remote: SocketAddr,
    /// Backup flag.
    pub backup: bool,
    /// The line it goes out of, if it is one of ours.
    pub line: Option<usize>,
}

/// A subflow asked for and not reported yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    line: usize,
    addr: IpAddr,
    since: Instant,
}

/// A subflow to make again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retry {
    /// When to try; `None` once tried (the backoff stays until a subflow is established).
    at: Option<Instant>,
    backoff: Duration,
}

/// One MPTCP connection.
#[derive(Debug, Clone)]
struct Conn {
    server_side: bool,
    /// Whether we make its subflows (client side, and a peer we manage).
    managed: bool,
    /// The peer, as the first subflow reached it.
    remote: SocketAddr,
    /// The peer set the C flag (RFC 8684 §3.1): no subflow to `remote`.
    deny_join_id0: bool,
    /// Addresses the peer announced (`ADD_ADDR`, §3.4.1), by their id, with the port to join
    /// them on.
    announced: Vec<(u8, SocketAddr)>,
    /// The first subflow's local address.
    local: SocketAddr,
    subflows: Vec<Subflow>,
    pending: Vec<Pending>,
    /// Per line: when to try again, and the backoff that led there.
    retry: BTreeMap<usize, Retry>,
    /// Ids whose address is gone while no other subflow could carry `REMOVE_ADDR`.
    stale_ids: Vec<u8>,
    /// Subflows withdrawn and not reported closed yet (a dead line's close can take until it
    /// comes back): no longer counted, so the line gets a new subflow as soon as it works.
    closing: Vec<Subflow>,
    /// Server side with the C flag: when to announce our addresses again while no join has
    /// come, and how many times it was done.
    reannounce: Option<(Instant, u32)>,
}

/// Counters, for metrics and status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Subflows asked for.
    pub subflows_requested: u64,
    /// Subflows established.
    pub subflows_established: u64,
    /// Subflows closed.
    pub subflows_closed: u64,
    /// Address ids withdrawn from connections because their line stopped working.
    pub withdrawals: u64,
    /// Times a line stopped working.
    pub line_failures: u64,
    /// Announcements (`ADD_ADDR`) made again because no join followed ([`REANNOUNCE_FIRST`]).
    #[serde(default)]
    pub reannouncements: u64,
}

/// With the C flag, a connection whose peer has not joined this long after our `ADD_ADDR` gets
/// it again, then after twice as long, and so on, [`REANNOUNCE_TIMES`] times (31 s in all).
/// An `ADD_ADDR` rides a pure ACK, which a full queue drops like any packet; Linux sends it
/// four times within about a second (its retransmissions follow the subflow's RTO), and a
/// fleet's peer may join nowhere else (the C flag): measured in the lab with a hundred new
/// connections filling a line, all four were lost for a few of them, which stayed on one path
/// for their whole life. Asking again makes the kernel send it at once, and retransmit it anew.
const REANNOUNCE_FIRST: Duration = Duration::from_secs(1);
/// How many times an announcement is made again at most.
const REANNOUNCE_TIMES: u32 = 5;

/// The first retry delay; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A subflow asked for and still unreported after this is given up (the kernel's SYN
/// retries take longer only on a dead line, which health will have caught).
const PENDING_TIMEOUT: Duration = Duration::from_secs(10);

/// The state of one line as the manager sees it.
#[derive(Debug, Clone)]
struct Line {
    cfg: LineConfig,
    usable: bool,
    addrs: Vec<IpAddr>,
    /// Counters per line: subflows created and failovers.
    created: u64,
    failures: u64,
}

/// The path manager.
#[derive(Debug, Clone)]
pub struct Manager {
    lines: Vec<Line>,
    conns: BTreeMap<u32, Conn>,
    /// Peers whose connections we give subflows (empty: every client-side connection).
    peers: Vec<IpAddr>,
    /// Addresses announced on server-side connections.
    announce: Announce,
    /// Local address ids, one per address for the life of the manager.
    ids: BTreeMap<IpAddr, u8>,
    commands: VecDeque<Command>,
    counters: Counters,
}

impl Manager {
    /// A manager for `lines`, making subflows for connections to `peers` (empty: all) and
    /// announcing `announce` on connections it serves.
    #[must_use]
    pub fn new(lines: Vec<LineConfig>, peers: Vec<IpAddr>, announce: Announce) -> Self {
        Self {
            lines: lines
                .into_iter()
                .map(|cfg| Line {
                    cfg,
                    usable: true,
                    addrs: Vec::new(),
                    created: 0,
                    failures: 0,
                })
                .collect(),
            conns: BTreeMap::new(),
            peers,
            announce,
            ids: BTreeMap::new(),
            commands: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    /// The id of local address `addr` (allocated on first use, never 0: that is the first
    /// subflow's).
    fn id_of(&mut self, addr: IpAddr) -> u8 {
        if let Some(&id) = self.ids.get(&addr) {
            return id;
        }
        let used: Vec<u8> = self.ids.values().copied().collect();
        let id = (1..=255u8).find(|i| !used.contains(i)).unwrap_or(255);
        self.ids.insert(addr, id);
        id
    }

    fn line_of(&self, addr: IpAddr, ifindex: Option<u32>) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| l.addrs.contains(&addr))
            .or_else(|| ifindex.and_then(|i| self.lines.iter().position(|l| l.cfg.ifindex == i)))
    }

    /// A kernel event.
    pub fn on_event(&mut self, now: Instant, e: &Event) {
        match e.kind {
            Kind::Established => self.on_established(now, e),
            Kind::Closed => {
                self.conns.remove(&e.token);
            }
            Kind::SubEstablished => self.on_sub_established(now, e),
            Kind::SubClosed => self.on_sub_closed(now, e),
            Kind::Announced => self.on_announced(now, e),
            Kind::Removed => {
                if let Some(c) = self.conns.get_mut(&e.token) {
                    c.announced.retain(|&(id, _)| Some(id) != e.rem_id);
                }
                // Its subflows close (the kernel's doing); the lines get new ones elsewhere.
                self.reconcile(now, e.token);
            }
            Kind::SubPriority => {
                if let Some(c) = self.conns.get_mut(&e.token) {
                    for s in &mut c.subflows {
                        if Some(s.local) == e.local && Some(s.remote) == e.remote {
                            s.backup = e.backup;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn on_established(&mut self, now: Instant, e: &Event) {
        let (Some(local), Some(remote)) = (e.local, e.remote) else {
            return;
        };
        let managed =
            !e.server_side && (self.peers.is_empty() || self.peers.contains(&remote.ip()));
        let line = self.line_of(local.ip(), None);
        let first = Subflow {
            loc_id: 0,
            rem_id: 0,
            local,
            remote,
            backup: false,
            line,
        };
        self.conns.insert(
            e.token,
            Conn {
                server_side: e.server_side,
                managed,
                remote,
                deny_join_id0: e.deny_join_id0,
                announced: Vec::new(),
                local,
                subflows: vec![first],
                pending: Vec::new(),
                retry: BTreeMap::new(),
                stale_ids: Vec::new(),
                closing: Vec::new(),
                reannounce: None,
            },
        );
        // The first subflow went by the main routing table: on a backup line it is flagged as
        // the joins from backup lines are.
        if managed && line.is_some_and(|l| self.lines[l].cfg.backup) {
            self.commands.push_back(Command::SetBackup {
                token: e.token,
                local,
                remote,
            });
        }
        if e.server_side && self.announce_to(e.token, local.ip()) && self.announce.c_flag {
            if let Some(c) = self.conns.get_mut(&e.token) {
                c.reannounce = Some((now + REANNOUNCE_FIRST, 0));
            }
        }
        self.reconcile(now, e.token);
    }

    /// Announces our addresses on server-side connection `token`, whose first subflow reached
    /// `local`: those of its family, and `local` itself only with the C flag. Whether there
    /// was any.
    fn announce_to(&mut self, token: u32, local: IpAddr) -> bool {
        let announce: Vec<IpAddr> = self
            .announce
            .addrs
            .iter()
            .copied()
            .filter(|a| a.is_ipv6() == local.is_ipv6() && (self.announce.c_flag || *a != local))
            .collect();
        for &addr in &announce {
            let id = self.id_of(addr);
            self.commands.push_back(Command::Announce {
                token,
                local: Endpoint {
                    id,
                    addr,
                    port: 0,
                    flags: flag::SIGNAL,
                    ifindex: None,
                },
            });
        }
        !announce.is_empty()
    }

    /// The peer announced an address (`ADD_ADDR`): the subflows our lines still lack go there
    /// (a converter behind a load balancer announces its own address, and forbids joins to the
    /// balanced one with the C flag).
    fn on_announced(&mut self, now: Instant, e: &Event) {
        let (Some(addr), Some(id)) = (e.remote, e.rem_id) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&e.token) else {
            return;
        };
        // No port in the option: the initial subflow's (§3.4.1).
        let port = if addr.port() == 0 {
            c.remote.port()
        } else {
            addr.port()
        };
        c.announced.retain(|&(i, _)| i != id);
        c.announced.push((id, SocketAddr::new(addr.ip(), port)));
        self.reconcile(now, e.token);
    }

    fn on_sub_established(&mut self, now: Instant, e: &Event) {
        let (Some(local), Some(remote)) = (e.local, e.remote) else {
            return;
        };
        let line = self.line_of(local.ip(), e.ifindex);
        self.counters.subflows_established += 1;
        let Some(c) = self.conns.get_mut(&e.token) else {
            return;
        };
        c.pending.retain(|p| p.addr != local.ip());
        if let Some(l) = line {
            c.retry.remove(&l);
        }
        // A join came: the peer has our announcement.
        c.reannounce = None;
        if !c
            .subflows
            .iter()
            .any(|s| s.local == local && s.remote == remote)
        {
            c.subflows.push(Subflow {
                loc_id: e.loc_id.unwrap_or(0),
                rem_id: e.rem_id.unwrap_or(0),
                local,
                remote,
                backup: e.backup,
                line,
            });
        }
        // A subflow can now carry the withdrawal of addresses that went away.
        for id in std::mem::take(&mut c.stale_ids) {
            self.commands.push_back(Command::Remove {
                token: e.token,
                loc_id: id,
            });
        }
        if line.is_none_or(|l| self.lines.get(l).is_none_or(|l| l.usable)) {
            self.withdraw_dead(e.token);
        }
        self.reconcile(now, e.token);
    }

    fn on_sub_closed(&mut self, now: Instant, e: &Event) {
        self.counters.subflows_closed += 1;
        let Some(c) = self.conns.get_mut(&e.token) else {
            return;
        };
        let same = |s: &Subflow| Some(s.local) == e.local && Some(s.remote) == e.remote;
        if c.closing.iter().any(same) {
            // One we withdrew: expected, nothing to make again.
            c.closing.retain(|s| !same(s));
            return;
        }
        let before = c.subflows.len();
        c.subflows
            .retain(|s| !(Some(s.local) == e.local && Some(s.remote) == e.remote));
        let closed_sub = c.subflows.len() < before;
        let failed = e.local.and_then(|l| {
            let i = c.pending.iter().position(|p| p.addr == l.ip())?;
            Some(c.pending.remove(i))
        });
        if closed_sub || failed.is_some() {
            let line = failed
                .map(|p| p.line)
                .or_else(|| e.local.and_then(|l| self.line_of(l.ip(), e.ifindex)));
            if let Some(line) = line {
                self.schedule_retry(now, e.token, line);
            }
        }
        self.reconcile(now, e.token);
    }

    fn schedule_retry(&mut self, now: Instant, token: u32, line: usize) {
        let Some(c) = self.conns.get_mut(&token).filter(|c| c.managed) else {
            return;
        };
        let backoff = c
            .retry
            .get(&line)
            .map_or(FIRST_BACKOFF, |r| (r.backoff * 2).min(MAX_BACKOFF));
        c.retry.insert(
            line,
            Retry {
                at: Some(now + backoff),
                backoff,
            },
        );
    }

    /// The result of a command. A subflow that could not be asked for is tried again later;
    /// a withdrawal the kernel refused falls back to closing the subflows one by one.
    pub fn on_result(&mut self, now: Instant, cmd: &Command, result: Result<(), i32>) {
        let Err(errno) = result else {
            return;
        };
        match cmd {
            &Command::Create {
                token,
                line,
                ref local,
                ..
            } => {
                tracing::debug!(token, line, %local.addr, "subflow refused: errno {errno}");
                if let Some(c) = self.conns.get_mut(&token) {
                    c.pending.retain(|p| p.addr != local.addr);
                }
                self.schedule_retry(now, token, line);
            }
            &Command::Remove { token, loc_id } => {
                // A connection we manage has its side closed after every withdrawal already.
                let Some(c) = self.conns.get(&token).filter(|c| !c.managed) else {
                    return;
                };
                let subs: Vec<_> = c
                    .subflows
                    .iter()
                    .chain(&c.closing)
                    .filter(|s| s.loc_id == loc_id)
                    .map(|s| (s.local, s.remote))
                    .collect();
                for (local, remote) in subs {
                    self.commands.push_back(Command::Destroy {
                        token,
                        local,
                        remote,
                    });
                }
            }
            Command::Destroy { .. } | Command::SetBackup { .. } | Command::Announce { .. } => {}
        }
    }

    /// Line `line` became usable or not.
    pub fn set_line_usable(&mut self, now: Instant, line: usize, usable: bool) {
        let Some(l) = self.lines.get_mut(line) else {
            return;
        };
        if l.usable == usable {
            return;
        }
        l.usable = usable;
        if usable {
            let tokens: Vec<u32> = self.conns.keys().copied().collect();
            for t in tokens {
                if let Some(c) = self.conns.get_mut(&t) {
                    c.retry.remove(&line);
                }
                self.reconcile(now, t);
            }
        } else {
            l.failures += 1;
            self.counters.line_failures += 1;
            self.withdraw_line(line, false, |s| s.line == Some(line));
        }
    }

    /// Withdraws, from every connection, the subflows `matches` picks, by id, where a subflow
    /// on a working line remains to tell the peer (the others are withdrawn by
    /// [`Manager::reconcile`] once they have one). With `address_gone` the subflows can never
    /// work again: where nothing can carry the withdrawal they are closed in place, their id
    /// kept to withdraw later (break-before-make).
    fn withdraw_line(
        &mut self,
        line: usize,
        address_gone: bool,
        matches: impl Fn(&Subflow) -> bool,
    ) {
        let usable: Vec<bool> = self.lines.iter().map(|l| l.usable).collect();
        for (&token, c) in &mut self.conns {
            c.pending.retain(|p| p.line != line);
            let (gone, kept): (Vec<&Subflow>, Vec<&Subflow>) =
                c.subflows.iter().partition(|s| matches(s));
            if gone.is_empty() {
                continue;
            }
            let mut ids: Vec<u8> = gone.iter().map(|s| s.loc_id).collect();
            ids.sort_unstable();
            ids.dedup();
            let carrier = kept.iter().any(|s| {
                s.line
                    .is_none_or(|l| usable.get(l).copied().unwrap_or(true))
            });
            if carrier {
                self.counters.withdrawals += ids.len() as u64;
                Self::withdraw(&mut self.commands, token, c.managed, &ids, &gone);
                Self::set_closing(c, &ids);
            } else if address_gone && c.managed {
                for s in &gone {
                    self.commands.push_back(Command::Destroy {
                        token,
                        local: s.local,
                        remote: s.remote,
                    });
                }
                Self::set_closing(c, &ids);
                c.stale_ids.extend(ids);
            }
        }
    }

    /// Withdraws the subflows of connection `token` that are on dead lines, now that it has a
    /// subflow on a working one.
    fn withdraw_dead(&mut self, token: u32) {
        let usable: Vec<bool> = self.lines.iter().map(|l| l.usable).collect();
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let on_dead = |s: &Subflow| {
            s.line
                .is_some_and(|l| !usable.get(l).copied().unwrap_or(true))
        };
        if !c.subflows.iter().any(|s| !on_dead(s)) {
            return;
        }
        let mut ids: Vec<u8> = c
            .subflows
            .iter()
            .filter(|s| on_dead(s))
            .map(|s| s.loc_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        self.counters.withdrawals += ids.len() as u64;
        let gone: Vec<&Subflow> = c.subflows.iter().filter(|s| on_dead(s)).collect();
        Self::withdraw(&mut self.commands, token, c.managed, &ids, &gone);
        Self::set_closing(c, &ids);
    }

    /// Withdraws address ids `ids` from connection `token`: `REMOVE_ADDR` makes the peer close
    /// its side of their subflows and send again at once what it had in flight there. For a
    /// connection we manage, our side of the `gone` subflows is closed too, so that our kernel
    /// sends again at once what *we* had in flight on them (Linux re-injects a closed
    /// subflow's unacknowledged data); without it an upload waits for the peer's reset, which
    /// cannot come over the dead line (Linux never closes its side of the first subflow for a
    /// `REMOVE` of id 0): measured 1.2–1.6 s without a byte.
    ///
    /// Id 0 (the first subflow) is closed *before* it is withdrawn: Linux sends the
    /// `REMOVE_ADDR` on the first active subflow of the connection, which is the dead one while
    /// it is open, and the peer would never hear of it. Other ids are withdrawn first, since
    /// Linux withdraws only an address that a subflow still uses (and closes those itself).
    fn withdraw(
        commands: &mut VecDeque<Command>,
        token: u32,
        managed: bool,
        ids: &[u8],
        gone: &[&Subflow],
    ) {
        for &id in ids {
            let close =
                gone.iter()
                    .filter(|s| managed && s.loc_id == id)
                    .map(|s| Command::Destroy {
                        token,
                        local: s.local,
                        remote: s.remote,
                    });
            let remove = Command::Remove { token, loc_id: id };
            if id == 0 {
                commands.extend(close);
                commands.push_back(remove);
            } else {
                commands.push_back(remove);
                commands.extend(close);
            }
        }
    }

    /// Moves the subflows of `ids` from the live list to the closing one.
    fn set_closing(c: &mut Conn, ids: &[u8]) {
        let (gone, live): (Vec<Subflow>, Vec<Subflow>) = std::mem::take(&mut c.subflows)
            .into_iter()
            .partition(|s| ids.contains(&s.loc_id));
        c.subflows = live;
        c.closing.extend(gone);
    }

    /// The addresses of `line` now. Subflows from an address that went away are withdrawn;
    /// new addresses get subflows.
    pub fn set_addresses(&mut self, now: Instant, line: usize, addrs: Vec<IpAddr>) {
        let Some(l) = self.lines.get_mut(line) else {
            return;
        };
        if l.addrs == addrs {
            return;
        }
        let gone: Vec<IpAddr> = l
            .addrs
            .iter()
            .filter(|a| !addrs.contains(a))
            .copied()
            .collect();
        let back: Vec<u8> = addrs.iter().map(|&a| self.id_of(a)).collect();
        self.lines[line].addrs = addrs;
        if !gone.is_empty() {
            self.withdraw_line(line, true, |s| gone.contains(&s.local.ip()));
        }
        // An address that came back keeps its id: a withdrawal still queued for it would close
        // its new subflow.
        for c in self.conns.values_mut() {
            c.stale_ids.retain(|id| !back.contains(id));
        }
        self.free_ids();
        for c in self.conns.values_mut() {
            for s in &mut c.subflows {
                if s.line.is_none() && self.lines[line].addrs.contains(&s.local.ip()) {
                    s.line = Some(line);
                }
            }
        }
        let tokens: Vec<u32> = self.conns.keys().copied().collect();
        for t in tokens {
            self.reconcile(now, t);
        }
    }

    /// Forgets the ids of addresses no line has and no subflow uses, so that ids (255 at most)
    /// last however often addresses change.
    fn free_ids(&mut self) {
        let lines = &self.lines;
        let conns = &self.conns;
        self.ids.retain(|addr, id| {
            lines.iter().any(|l| l.addrs.contains(addr))
                || conns.values().any(|c| {
                    c.subflows.iter().chain(&c.closing).any(|s| s.loc_id == *id)
                        || c.stale_ids.contains(id)
                })
        });
    }

    /// Asks for the subflows connection `token` lacks.
    fn reconcile(&mut self, now: Instant, token: u32) {
        let Some(c) = self.conns.get(&token) else {
            return;
        };
        if !c.managed || c.server_side {
            return;
        }
        let v6 = c.remote.is_ipv6();
        // Where joins go: the first address the peer announced (of the family of the
        // connection), else its initial address unless the C flag forbids it.
        let target = c
            .announced
            .iter()
            .map(|&(_, a)| a)
            .find(|a| a.is_ipv6() == v6)
            .or((!c.deny_join_id0).then_some(c.remote));
        let Some(remote) = target else {
            return;
        };
        let mut wanted = Vec::new();
        for (i, l) in self.lines.iter().enumerate() {
            if !l.usable {
                continue;
            }
            let Some(&addr) = l.addrs.iter().find(|a| a.is_ipv6() == v6) else {
                continue;
            };
            let has = c
                .subflows
                .iter()
                .any(|s| s.line == Some(i) && l.addrs.contains(&s.local.ip()))
                || c.pending.iter().any(|p| p.line == i);
            let waiting = c
                .retry
                .get(&i)
                .and_then(|r| r.at)
                .is_some_and(|at| at > now);
            if !has && !waiting {
                wanted.push((i, addr));
            }
        }
        for (line, addr) in wanted {
            // The first subflow's address keeps id 0 in the kernel: a subflow from it again
            // would clash with it, so it gets its own id only once the first one is gone.
            let id = self.id_of(addr);
            let l = &self.lines[line];
            let local = Endpoint {
                id,
                addr,
                port: 0,
                flags: if l.cfg.backup { flag::BACKUP } else { 0 },
                ifindex: Some(l.cfg.ifindex),
            };
            self.lines[line].created += 1;
            self.counters.subflows_requested += 1;
            if let Some(c) = self.conns.get_mut(&token) {
                c.pending.push(Pending {
                    line,
                    addr,
                    since: now,
                });
                if let Some(r) = c.retry.get_mut(&line) {
                    r.at = None;
                }
            }
            self.commands.push_back(Command::Create {
                token,
                line,
                local,
                remote,
            });
        }
    }

    /// The next command for the kernel.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// Retries that are due, and subflows asked for that never came.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        let mut lapsed = Vec::new();
        let mut reannounce = Vec::new();
        for (&t, c) in &mut self.conns {
            if let Some((at, n)) = c.reannounce
                && at <= now
            {
                reannounce.push((t, c.local.ip()));
                c.reannounce = (n + 1 < REANNOUNCE_TIMES)
                    .then(|| (now + REANNOUNCE_FIRST * 2u32.pow(n + 1), n + 1));
            }
            // A subflow asked for and never reported: try again later.
            c.pending.retain(|p| {
                let keep = now.saturating_duration_since(p.since) < PENDING_TIMEOUT;
                if !keep {
                    lapsed.push((t, p.line));
                }
                keep
            });
            if c.retry.values().any(|r| r.at.is_some_and(|at| at <= now)) {
                due.push(t);
            }
        }
        for (t, local) in reannounce {
            self.counters.reannouncements += 1;
            self.announce_to(t, local);
        }
        for (t, line) in lapsed {
            self.schedule_retry(now, t, line);
        }
        for t in due {
            self.reconcile(now, t);
            // A retry whose line cannot be used now is spent: the line's return brings the
            // subflow back, not a timer.
            if let Some(c) = self.conns.get_mut(&t) {
                for r in c.retry.values_mut() {
                    if r.at.is_some_and(|at| at <= now) {
                        r.at = None;
                    }
                }
            }
        }
    }

    /// When [`Manager::handle_timeout`] has something to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .values()
            .flat_map(|c| {
                c.retry
                    .values()
                    .filter_map(|r| r.at)
                    .chain(c.pending.iter().map(|p| p.since + PENDING_TIMEOUT))
                    .chain(c.reannounce.map(|(at, _)| at))
            })
            .min()
    }

    /// The counters.
    #[must_use]
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Connections and their subflows, for status.
    #[must_use]
    pub fn connections(&self) -> Vec<ConnStatus> {
        self.conns
            .iter()
            .map(|(&token, c)| ConnStatus {
                token,
                server_side: c.server_side,
                managed: c.managed,
                local: c.local,
                remote: c.remote,
                subflows: c.subflows.clone(),
            })
            .collect()
    }

    /// Per line: name, usable, addresses, subflows created, failures.
    #[must_use]
    pub fn lines(&self) -> Vec<(LineConfig, bool, Vec<IpAddr>, u64, u64)> {
        self.lines
            .iter()
            .map(|l| {
                (
                    l.cfg.clone(),
                    l.usable,
                    l.addrs.clone(),
                    l.created,
                    l.failures,
                )
            })
            .collect()
    }
}

/// One connection as the path manager knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnStatus {
    /// The kernel's local token.
    pub token: u32,
    /// We accepted it.
    pub server_side: bool,
    /// We make its subflows.
    pub managed: bool,
    /// The first subflow's local end.
    pub local: SocketAddr,
    /// The first subflow's remote end.
    pub remote: SocketAddr,
    /// Its subflows.
    pub subflows: Vec<Subflow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "198.51.100.1:7000";

    fn lines() -> Vec<LineConfig> {
        vec![
            LineConfig {
                name: "dsl".into(),
                ifindex: 2,
                backup: false,
                probe: None,
                probe_idle: None,
            },
            LineConfig {
                name: "lte".into(),
                ifindex: 3,
                backup: false,
                probe: None,
                probe_idle: None,
            },
            LineConfig {
                name: "sat".into(),
                ifindex: 4,
                backup: true,
                probe: None,
                probe_idle: None,
            },
        ]
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn event(kind: Kind, token: u32, local: &str, loc_id: u8) -> Event {
        Event {
            kind,
            token,
            loc_id: Some(loc_id),
            rem_id: Some(0),
            local: Some(local.parse().unwrap()),
            remote: Some(PEER.parse().unwrap()),
            backup: false,
            error: None,
            ifindex: None,
            server_side: false,
            deny_join_id0: false,
        }
    }

    /// A manager with dsl 10.1.0.2, lte 10.2.0.2, sat 10.3.0.2 and one connection on dsl.
    fn setup(now: Instant) -> Manager {
        let mut m = Manager::new(lines(), vec![ip("198.51.100.1")], Announce::default());
        m.set_addresses(now, 0, vec![ip("10.1.0.2")]);
        m.set_addresses(now, 1, vec![ip("10.2.0.2")]);
        m.set_addresses(now, 2, vec![ip("10.3.0.2")]);
        m.on_event(now, &event(Kind::Established, 9, "10.1.0.2:40000", 0));
        m
    }

    fn drain(m: &mut Manager) -> Vec<Command> {
        std::iter::from_fn(|| m.poll_command()).collect()
    }

    fn creates(cmds: &[Command]) -> Vec<(usize, u8, bool)> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Create { line, local, .. } => {
                    Some((*line, local.id, local.flags & flag::BACKUP != 0))
                }
                _ => None,
            })
            .collect()
    }

    /// Answers each create with the subflow's establishment.
    fn establish(m: &mut Manager, now: Instant, cmds: &[Command]) {
        for (i, c) in cmds.iter().enumerate() {
            if let Command::Create {
                token,
                local,
                remote,
                ..
            } = c
            {
                let port = 41000 + u16::try_from(i).unwrap();
                let mut e = event(
                    Kind::SubEstablished,
                    *token,
                    &format!("{}:{port}", local.addr),
                    local.id,
                );
                e.remote = Some(*remote);
                e.backup = local.flags & flag::BACKUP != 0;
                m.on_event(now, &e);
            }
        }
    }

    #[test]
    fn an_established_connection_gets_a_subflow_per_other_line_backups_flagged() {
        let now = Instant::now();
        let mut m = setup(now);
        let cmds = drain(&mut m);
        assert_eq!(creates(&cmds), vec![(1, 2, false), (2, 3, true)]);
        // Asked for once: nothing more while they are pending.
        m.handle_timeout(now + Duration::from_secs(1));
        assert!(drain(&mut m).is_empty());
        establish(&mut m, now, &cmds);
        assert_eq!(m.connections()[0].subflows.len(), 3);
        assert!(drain(&mut m).is_empty());
    }

    fn announced(token: u32, id: u8, addr: &str) -> Event {
        let mut e = event(Kind::Announced, token, "0.0.0.0:0", 0);
        e.loc_id = None;
        e.local = None;
        e.rem_id = Some(id);
        e.remote = Some(addr.parse().unwrap());
        e
    }

    fn remotes(cmds: &[Command]) -> Vec<SocketAddr> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Create { remote, .. } => Some(*remote),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_peer_that_forbids_joins_to_its_first_address_is_joined_where_it_announces() {
        let now = Instant::now();
        let mut m = Manager::new(lines(), vec![ip("198.51.100.1")], Announce::default());
        m.set_addresses(now, 0, vec![ip("10.1.0.2")]);
        m.set_addresses(now, 1, vec![ip("10.2.0.2")]);
        m.set_addresses(now, 2, vec![ip("10.3.0.2")]);
        let mut e = event(Kind::Established, 9, "10.1.0.2:40000", 0);
        e.deny_join_id0 = true;
        m.on_event(now, &e);
        assert!(
            remotes(&drain(&mut m)).is_empty(),
            "C flag: no join to the balanced address"
        );
        // The instance's own address, without a port: the first subflow's port.
        m.on_event(now, &announced(9, 1, "192.0.2.7:0"));
        let cmds = drain(&mut m);
        assert_eq!(
            remotes(&cmds),
            vec!["192.0.2.7:7000".parse().unwrap(); 2],
            "lte and sat join the announced address"
        );
        assert_eq!(
            creates(&cmds).iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![1, 2]
        );
        // Withdrawn by the peer: nowhere left to join.
        establish(&mut m, now, &cmds);
        let mut gone = event(Kind::Removed, 9, "0.0.0.0:0", 0);
        gone.rem_id = Some(1);
        m.on_event(now, &gone);
        for line in ["10.2.0.2:41000", "10.3.0.2:41001"] {
            let mut closed = event(Kind::SubClosed, 9, line, 1);
            closed.remote = Some("192.0.2.7:7000".parse().unwrap());
            m.on_event(now, &closed);
        }
        m.handle_timeout(now + Duration::from_secs(60));
        assert!(remotes(&drain(&mut m)).is_empty());
    }

    #[test]
    fn without_the_c_flag_joins_go_to_the_first_address_and_later_ones_to_an_announced_one() {
        let now = Instant::now();
        let mut m = setup(now);
        let cmds = drain(&mut m);
        assert_eq!(remotes(&cmds), vec![PEER.parse().unwrap(); 2]);
        establish(&mut m, now, &cmds);
        m.on_event(now, &announced(9, 1, "192.0.2.7:7001"));
        assert!(
            remotes(&drain(&mut m)).is_empty(),
            "every line has its subflow"
        );
        // lte's subflow closes on a working line: made again, at the announced address.
        let mut closed = event(Kind::SubClosed, 9, "10.2.0.2:41000", 1);
        closed.remote = Some(PEER.parse().unwrap());
        m.on_event(now, &closed);
        m.handle_timeout(now + Duration::from_secs(1));
        assert_eq!(
            remotes(&drain(&mut m)),
            vec!["192.0.2.7:7001".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn connections_to_other_peers_and_server_side_ones_are_left_alone() {
        let now = Instant::now();
        let mut m = setup(now);
        drain(&mut m);
        let mut other = event(Kind::Established, 10, "10.1.0.2:40001", 0);
        other.remote = Some("203.0.113.9:22".parse().unwrap());
        m.on_event(now, &other);
        let mut served = event(Kind::Established, 11, "10.1.0.2:7000", 0);
        served.server_side = true;
        m.on_event(now, &served);
        assert!(drain(&mut m).is_empty());
    }

    /// A withdrawal of address id `loc_id` from connection `token`: `REMOVE_ADDR` for the peer,
    /// and our side of its subflow from `local` closed (first, for id 0: see `withdraw`).
    fn withdrawal(token: u32, loc_id: u8, local: &str) -> Vec<Command> {
        let mut v = vec![
            Command::Remove { token, loc_id },
            Command::Destroy {
                token,
                local: local.parse().unwrap(),
                remote: PEER.parse().unwrap(),
            },
        ];
        if loc_id == 0 {
            v.reverse();
        }
        v
    }

    #[test]
    fn a_dead_line_is_withdrawn_by_id_and_comes_back_when_it_recovers() {
        let t = Instant::now();
        let mut m = setup(t);
        let cmds = drain(&mut m);
        establish(&mut m, t, &cmds);
        // lte dies.
        m.set_line_usable(t, 1, false);
        // Withdrawn for the peer (REMOVE_ADDR), and closed on our side.
        assert_eq!(drain(&mut m), withdrawal(9, 2, "10.2.0.2:41000"));
        m.on_event(t, &event(Kind::SubClosed, 9, "10.2.0.2:41000", 2));
        assert!(drain(&mut m).is_empty(), "no retry while the line is dead");
        // The first subflow's line (dsl) dies: withdrawn as id 0.
        m.set_line_usable(t, 0, false);
        assert_eq!(drain(&mut m), withdrawal(9, 0, "10.1.0.2:40000"));
        m.on_event(t, &event(Kind::SubClosed, 9, "10.1.0.2:40000", 0));
        assert_eq!(
            m.connections()[0].subflows.len(),
            1,
            "only the backup is left"
        );
        // lte comes back: a new subflow at once.
        m.set_line_usable(t, 1, true);
        assert_eq!(creates(&drain(&mut m)), vec![(1, 2, false)]);
        m.set_line_usable(t, 0, true);
        assert_eq!(creates(&drain(&mut m)), vec![(0, 1, false)]);
        assert_eq!(m.counters().line_failures, 2);
    }

    #[test]
    fn a_subflow_that_dies_on_a_working_line_is_recreated_with_backoff() {
        let t = Instant::now();
        let mut m = setup(t);
        let cmds = drain(&mut m);
        establish(&mut m, t, &cmds);
        let mut delays = Vec::new();
        let mut now = t;
        for _ in 0..4 {
            m.on_event(now, &event(Kind::SubClosed, 9, "10.2.0.2:41000", 2));
            assert!(drain(&mut m).is_empty(), "not at once");
            let at = m.poll_timeout().unwrap();
            delays.push(at - now);
            now = at;
            m.handle_timeout(now);
            assert_eq!(creates(&drain(&mut m)), vec![(1, 2, false)]);
            // The join fails (say, refused): the closed event names the address.
        }
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000].map(Duration::from_millis).to_vec()
        );
        // Once it works the backoff starts over.
        m.on_event(now, &event(Kind::SubEstablished, 9, "10.2.0.2:41001", 2));
        m.on_event(now, &event(Kind::SubClosed, 9, "10.2.0.2:41001", 2));
        assert_eq!(m.poll_timeout().unwrap() - now, FIRST_BACKOFF);
    }

    #[test]
    fn an_address_change_moves_the_connection_break_before_make() {
        let t = Instant::now();
        let mut m = Manager::new(lines()[..2].to_vec(), vec![], Announce::default());
        m.set_addresses(t, 0, vec![ip("10.1.0.2")]);
        m.on_event(t, &event(Kind::Established, 9, "10.1.0.2:40000", 0));
        assert!(drain(&mut m).is_empty(), "lte has no address yet");
        // dsl loses its address: the only subflow is closed where it is.
        m.set_addresses(t, 0, vec![]);
        assert_eq!(
            drain(&mut m),
            vec![Command::Destroy {
                token: 9,
                local: "10.1.0.2:40000".parse().unwrap(),
                remote: PEER.parse().unwrap()
            }]
        );
        m.on_event(t, &event(Kind::SubClosed, 9, "10.1.0.2:40000", 0));
        assert!(drain(&mut m).is_empty());
        // lte gets one: a subflow from it, then id 0 is withdrawn through it.
        m.set_addresses(t, 1, vec![ip("10.2.0.2")]);
        let cmds = drain(&mut m);
        assert_eq!(creates(&cmds), vec![(1, 1, false)], "dsl's id, freed");
        establish(&mut m, t, &cmds);
        assert_eq!(
            drain(&mut m),
            vec![Command::Remove {
                token: 9,
                loc_id: 0
            }]
        );
    }

    #[test]
    fn a_dead_line_that_carries_all_is_withdrawn_once_another_subflow_exists() {
        let t = Instant::now();
        let mut m = setup(t);
        let cmds = drain(&mut m);
        // dsl dies before the joins complete: nothing can tell the peer, nothing is closed.
        m.set_line_usable(t, 0, false);
        assert!(drain(&mut m).is_empty());
        establish(&mut m, t, &cmds[..1]);
        assert_eq!(drain(&mut m), withdrawal(9, 0, "10.1.0.2:40000"));
    }

    #[test]
    fn a_line_back_before_its_old_subflow_closed_gets_a_new_one_at_once() {
        let t = Instant::now();
        let mut m = setup(t);
        let cmds = drain(&mut m);
        establish(&mut m, t, &cmds);
        m.set_line_usable(t, 1, false);
        drain(&mut m);
        // The close of the withdrawn subflow is not reported before the line works again.
        m.set_line_usable(t, 1, true);
        assert_eq!(creates(&drain(&mut m)), vec![(1, 2, false)]);
        // Its late close changes nothing and schedules no retry.
        m.on_event(t, &event(Kind::SubClosed, 9, "10.2.0.2:41000", 2));
        assert!(drain(&mut m).is_empty());
        assert_eq!(m.poll_timeout(), Some(t + PENDING_TIMEOUT));
    }

    #[test]
    fn a_retry_due_while_its_line_is_dead_is_spent_not_spun() {
        let t = Instant::now();
        let mut m = setup(t);
        let cmds = drain(&mut m);
        establish(&mut m, t, &cmds);
        m.on_event(t, &event(Kind::SubClosed, 9, "10.2.0.2:41000", 2));
        m.set_line_usable(t, 1, false);
        drain(&mut m);
        let due = t + FIRST_BACKOFF;
        m.handle_timeout(due);
        assert!(drain(&mut m).is_empty());
        assert!(
            m.poll_timeout().is_none_or(|at| at > due),
            "{:?}",
            m.poll_timeout()
        );
        m.set_line_usable(due, 1, true);
        assert_eq!(creates(&drain(&mut m)), vec![(1, 2, false)]);
    }

    #[test]
    fn a_first_subflow_on_a_backup_line_is_flagged_backup() {
        let t = Instant::now();
        let mut m = Manager::new(lines(), vec![], Announce::default());
        m.set_addresses(t, 2, vec![ip("10.3.0.2")]);
        m.on_event(t, &event(Kind::Established, 4, "10.3.0.2:40000", 0));
        assert_eq!(
            drain(&mut m),
            vec![Command::SetBackup {
                token: 4,
                local: "10.3.0.2:40000".parse().unwrap(),
                remote: PEER.parse().unwrap()
            }]
        );
    }

    #[test]
    fn an_address_back_before_its_withdrawal_keeps_its_new_subflow() {
        let t = Instant::now();
        let mut m = Manager::new(lines()[..2].to_vec(), vec![], Announce::default());
        m.set_addresses(t, 0, vec![ip("10.1.0.2")]);
        m.set_addresses(t, 1, vec![ip("10.2.0.2")]);
        m.on_event(t, &event(Kind::Established, 9, "10.1.0.2:40000", 0));
        let cmds = drain(&mut m);
        establish(&mut m, t, &cmds);
        // dsl's address goes (withdrawn over lte), then lte's: nothing can carry its
        // REMOVE_ADDR, so its id is kept to withdraw later.
        m.set_addresses(t, 0, vec![]);
        assert_eq!(drain(&mut m), withdrawal(9, 0, "10.1.0.2:40000"));
        m.set_addresses(t, 1, vec![]);
        assert!(matches!(drain(&mut m)[..], [Command::Destroy { .. }]));
        // The same address comes back: a subflow with the same id, which no stale withdrawal
        // closes.
        m.set_addresses(t, 1, vec![ip("10.2.0.2")]);
        let cmds = drain(&mut m);
        assert_eq!(creates(&cmds), vec![(1, 2, false)]);
        establish(&mut m, t, &cmds);
        assert_eq!(drain(&mut m), vec![]);
    }

    #[test]
    fn a_refused_withdrawal_of_an_unmanaged_connection_closes_its_subflows_one_by_one() {
        let t = Instant::now();
        let mut m = setup(t);
        // A connection to another peer: no subflows of ours, but its first is on lte.
        let mut other = event(Kind::Established, 10, "10.2.0.2:40001", 0);
        other.remote = Some("192.0.2.9:443".parse().unwrap());
        m.on_event(t, &other);
        // ... and a second subflow, on dsl, that someone else made.
        let mut second = event(Kind::SubEstablished, 10, "10.1.0.2:40002", 1);
        second.remote = other.remote;
        m.on_event(t, &second);
        drain(&mut m);
        m.set_line_usable(t, 1, false);
        let cmds = drain(&mut m);
        let rm = cmds
            .iter()
            .find(|c| matches!(c, Command::Remove { token: 10, .. }))
            .expect("withdrawn")
            .clone();
        assert!(
            !cmds
                .iter()
                .any(|c| matches!(c, Command::Destroy { token: 10, .. })),
            "{cmds:?}"
        );
        m.on_result(t, &rm, Err(libc::EINVAL));
        assert_eq!(
            drain(&mut m),
            vec![Command::Destroy {
                token: 10,
                local: "10.2.0.2:40001".parse().unwrap(),
                remote: "192.0.2.9:443".parse().unwrap()
            }]
        );
    }

    #[test]
    fn a_refused_withdrawal_of_a_managed_connection_adds_nothing_to_closing_our_side() {
        let t = Instant::now();
        let mut m = setup(t);
        let cmds = drain(&mut m);
        establish(&mut m, t, &cmds);
        m.set_line_usable(t, 1, false);
        let cmds = drain(&mut m);
        assert_eq!(cmds.len(), 2, "{cmds:?}");
        m.on_result(t, &cmds[0], Err(libc::EINVAL));
        assert_eq!(drain(&mut m), vec![]);
    }

    #[test]
    fn the_server_side_announces_its_extra_addresses_of_the_same_family() {
        let t = Instant::now();
        let mut m = Manager::new(
            vec![],
            vec![],
            Announce {
                addrs: vec![ip("198.51.100.1"), ip("198.51.100.2"), ip("2001:db8::2")],
                c_flag: false,
            },
        );
        let mut e = event(Kind::Established, 5, PEER, 0);
        e.remote = Some("10.1.0.2:40000".parse().unwrap());
        e.server_side = true;
        m.on_event(t, &e);
        let cmds = drain(&mut m);
        assert_eq!(cmds.len(), 1, "{cmds:?}");
        assert!(
            matches!(&cmds[0], Command::Announce { token: 5, local } if local.addr == ip("198.51.100.2") && local.id != 0)
        );
        m.on_event(t, &event(Kind::Closed, 5, PEER, 0));
        assert!(m.connections().is_empty());
    }

    /// A converter with `--fleet-address 198.51.100.11`, behind a DNAT balancer.
    fn fleet_instance() -> Manager {
        Manager::new(
            vec![],
            vec![],
            Announce {
                addrs: vec![ip("198.51.100.11")],
                c_flag: true,
            },
        )
    }

    /// Connection `token` from `peer`, reaching the instance's own address.
    fn served(token: u32, peer: &str) -> Event {
        let mut e = event(Kind::Established, token, "198.51.100.11:7000", 0);
        e.remote = Some(peer.parse().unwrap());
        e.server_side = true;
        e
    }

    #[test]
    fn a_fleet_instance_announces_even_the_address_its_first_subflow_reached() {
        // Behind a DNAT balancer the first subflow arrives at the instance's own address; with
        // the C flag set, peers may join only what is announced, so that address is announced.
        let t = Instant::now();
        let mut m = fleet_instance();
        m.on_event(t, &served(5, "10.1.0.2:40000"));
        let cmds = drain(&mut m);
        assert!(
            matches!(&cmds[..], [Command::Announce { token: 5, local }] if local.addr == ip("198.51.100.11") && local.id != 0),
            "{cmds:?}"
        );
    }

    #[test]
    fn a_fleet_instance_announces_again_until_a_join_comes() {
        let t = Instant::now();
        let mut m = fleet_instance();
        m.on_event(t, &served(5, "10.1.0.2:40000"));
        assert_eq!(drain(&mut m).len(), 1, "announced once");
        // Nothing due before a second; then again after 1 s, 2 s more, 4 s more... and no more.
        assert_eq!(m.poll_timeout(), Some(t + REANNOUNCE_FIRST));
        let mut at = t;
        for wait in [1, 2, 4, 8, 16] {
            at += Duration::from_secs(wait);
            m.handle_timeout(at.checked_sub(Duration::from_millis(1)).unwrap());
            assert_eq!(drain(&mut m), vec![], "not yet at {wait} s");
            m.handle_timeout(at);
            let cmds = drain(&mut m);
            assert!(
                matches!(&cmds[..], [Command::Announce { token: 5, local }] if local.addr == ip("198.51.100.11")),
                "{cmds:?}"
            );
        }
        assert_eq!(m.poll_timeout(), None, "five times at most");
        assert_eq!(m.counters().reannouncements, 5);

        // Another connection, joined in time: announced once only.
        m.on_event(at, &served(6, "10.1.0.2:40002"));
        assert_eq!(drain(&mut m).len(), 1);
        let mut join = event(Kind::SubEstablished, 6, "198.51.100.11:7000", 1);
        join.remote = Some("10.2.0.2:40003".parse().unwrap());
        m.on_event(at + Duration::from_millis(300), &join);
        assert_eq!(m.poll_timeout(), None, "a join came: nothing to repeat");
        m.handle_timeout(at + Duration::from_secs(10));
        assert_eq!(drain(&mut m), vec![]);
    }
}
