//! MPTCP (RFC 8684) between two engine stacks in the simulator: handshakes, joins, data over
//! several paths, a path dying, fallback. Each test pins one behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
#![allow(
    clippy::similar_names,
    clippy::items_after_statements,
    reason = "sent/send for a sender and its state"
)]

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::cell::RefCell;
use std::rc::Rc;

use mptcp_proto::mptcp::{ConnState, Path, Stack};
use mptcp_sim::Sim;
use mptcp_sim::apps::mptcp::{MpSend, MpSendState, MpSink, MpSinkState};
use mptcp_sim::link::LinkParams;
use mptcp_sim::link::PacketInfo;

fn paths(sim: &Sim<Stack>, h: usize) -> Vec<Path> {
    sim.paths(h)
}

fn server_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::from([10, 9, 9, 9]), 80)
}

#[test]
fn one_path_handshake_agrees_on_keys_and_carries_data_intact() {
    let total = 2_000_000;
    let mut r = start("mptcp-one-path", &[path(10.0, 20)], &[false], total);
    r.until_done(Duration::from_secs(20));
    assert!(r.got.borrow().intact(total));
    assert!(
        !r.sent.borrow().fell_back,
        "MPTCP fell back on a clean path"
    );
    let (cid, sid) = (r.sent.borrow().conn.unwrap(), r.got.borrow().conn.unwrap());
    let server = 1 - r.c;
    let (c_local, c_remote) = r.sim.endpoint(r.c).tokens(cid).expect("client tokens");
    let (s_local, s_remote) = r.sim.endpoint(server).tokens(sid).expect("server tokens");
    assert_eq!((c_local, c_remote), (s_remote, s_local), "tokens disagree");
    // Both sides end: DATA_FINs exchanged.
    let c = r.c;
    assert!(
        r.sim.run_until(
            |sim| matches!(
                sim.endpoint(c).state(cid),
                Some(ConnState::Closed(_)) | None
            ),
            Duration::from_secs(10)
        ),
        "the client never saw the end: {:?}",
        r.sim.endpoint(c).state(cid)
    );
}

#[test]
fn two_paths_join_and_both_carry_data() {
    let total = 10_000_000;
    let mut r = start(
        "mptcp-two-paths",
        &[path(10.0, 20), path(10.0, 40)],
        &[false, false],
        total,
    );
    r.until_done(Duration::from_secs(30));
    assert!(r.got.borrow().intact(total));
    assert_eq!(
        r.sent.borrow().joins,
        1,
        "the second path's subflow did not come up"
    );
    let a = r.sim.link_stats(r.links[0], 0).delivered_bytes;
    let b = r.sim.link_stats(r.links[1], 0).delivered_bytes;
    assert!(
        a > total / 5 && b > total / 5,
        "one path carried little: {a} vs {b}"
    );
    // 20 Mbit/s in all: well under the 8 s one path would need.
    assert!(
        r.sim.elapsed() < Duration::from_secs(6),
        "took {:?}",
        r.sim.elapsed()
    );
}

#[test]
fn two_paths_through_one_bottleneck_share_it_and_deliver_every_byte() {
    let total = 6_000_000;
    let mut sim = Sim::new_mptcp("mptcp-shared-bottleneck");
    // Two 20 Mbit/s access lines that meet at a 10 Mbit/s uplink toward the server.
    let uplink = path(10.0, 20);
    let mut b = None;
    let st = start_with(
        &mut sim,
        &[path(20.0, 20), path(20.0, 40)],
        &[false, false],
        total,
        |sim, links| b = Some(sim.bottleneck(uplink, &[(links[0], 0), (links[1], 0)])),
    );
    let b = b.expect("bottleneck made");
    let mut r = st.finish(sim);
    r.until_done(Duration::from_secs(60));
    assert!(r.got.borrow().intact(total));
    let shared = r.sim.bottleneck_stats(b);
    let own: u64 = (0..2)
        .map(|k| r.sim.link_stats(r.links[k], 0).delivered)
        .sum();
    assert_eq!(
        shared.offered, own,
        "every packet of both lines went through it"
    );
    for k in 0..2 {
        assert!(
            r.sim.link_stats(r.links[k], 0).delivered_bytes > total / 10,
            "line {k} carried little"
        );
    }
    // No faster than the uplink: 6 MB at 10 Mbit/s take 4.8 s.
    assert!(
        r.sim.elapsed() > Duration::from_millis(4_800),
        "took {:?}",
        r.sim.elapsed()
    );
    assert!(shared.queue_drops > 0, "the uplink's queue never filled");
}

/// A transfer of `total` bytes from the client over `params` (one path each) with `setup`
/// changing the simulation first; returns the simulation, hosts, links and both states.
struct Run {
    sim: Sim<Stack>,
    c: usize,
    links: Vec<usize>,
    sent: Rc<RefCell<MpSendState>>,
    got: Rc<RefCell<MpSinkState>>,
}

fn start(name: &str, params: &[LinkParams], backup: &[bool], total: u64) -> Run {
    let mut sim = Sim::new_mptcp(name);
    start_in(&mut sim, params, backup, total).finish(sim)
}

struct Started {
    c: usize,
    links: Vec<usize>,
    sent: Rc<RefCell<MpSendState>>,
    got: Rc<RefCell<MpSinkState>>,
}

impl Started {
    fn finish(self, sim: Sim<Stack>) -> Run {
        Run {
            sim,
            c: self.c,
            links: self.links,
            sent: self.sent,
            got: self.got,
        }
    }
}

fn start_in(sim: &mut Sim<Stack>, params: &[LinkParams], backup: &[bool], total: u64) -> Started {
    start_with(sim, params, backup, total, |_, _| {})
}

/// Like [`start_in`], with `setup` given the links before the hosts start.
fn start_with(
    sim: &mut Sim<Stack>,
    params: &[LinkParams],
    backup: &[bool],
    total: u64,
    setup: impl FnOnce(&mut Sim<Stack>, &[usize]),
) -> Started {
    let (c, s, links) = sim.multipath(params);
    setup(sim, &links);
    let sink = MpSink::listen(server_addr(), 11);
    let got = sink.state();
    sim.set_app(s, sink);
    let mut ps = paths(sim, c);
    for (p, b) in ps.iter_mut().zip(backup) {
        p.backup = *b;
    }
    let send = MpSend::new(ps, server_addr(), total, 11);
    let sent = send.state();
    sim.set_app(c, send);
    Started {
        c,
        links,
        sent,
        got,
    }
}

/// `total` bytes over one 10 Mbit/s, 20 ms path, `setup` given the links before the hosts
/// start, run until all of it arrived (at most 30 s).
fn one_path_run(name: &str, total: u64, setup: impl FnOnce(&mut Sim<Stack>, &[usize])) -> Run {
    let mut sim = Sim::new_mptcp(name);
    let st = start_with(&mut sim, &[path(10.0, 20)], &[false], total, setup);
    let mut r = st.finish(sim);
    r.until_done(Duration::from_secs(30));
    r
}

impl Run {
    fn until_done(&mut self, limit: Duration) {
        let got = Rc::clone(&self.got);
        let done = self.sim.run_until(|_| got.borrow().finished, limit);
        let g = self.got.borrow();
        assert!(
            done,
            "received {} bytes, first bad {:?}, ended {:?}",
            g.received, g.first_bad, g.ended
        );
    }

    fn client_stats(&self) -> mptcp_proto::mptcp::ConnStats {
        let id = self.sent.borrow().conn.expect("connected");
        self.sim.endpoint(self.c).stats(id).expect("connection")
    }
}

fn path(mbit: f64, rtt_ms: u64) -> LinkParams {
    LinkParams::bdp_queue(mbit, Duration::from_millis(rtt_ms))
}

#[test]
fn a_path_dying_mid_transfer_loses_no_byte_and_its_data_goes_to_the_other() {
    let total = 6_000_000;
    let mut sim = Sim::new_mptcp("mptcp-path-dies");
    let mut dying = path(10.0, 20);
    dying.outages = vec![(Duration::from_secs(1), Duration::from_secs(3600))];
    let st = start_in(&mut sim, &[path(10.0, 30), dying], &[false, false], total);
    let mut r = st.finish(sim);
    r.until_done(Duration::from_secs(30));
    assert!(r.got.borrow().intact(total));
    let stats = r.client_stats();
    assert!(
        stats.bytes_reinjected > 0,
        "nothing was reinjected: {stats:?}"
    );
    // It finished in about the time the surviving path needs for what was left.
    assert!(
        r.sim.elapsed() < Duration::from_secs(12),
        "took {:?}",
        r.sim.elapsed()
    );
}

#[test]
fn a_path_back_after_an_outage_carries_data_again() {
    let total = 12_000_000;
    let mut sim = Sim::new_mptcp("mptcp-path-returns");
    let mut flaky = path(10.0, 20);
    flaky.outages = vec![(Duration::from_secs(1), Duration::from_secs(3))];
    let st = start_in(&mut sim, &[path(10.0, 30), flaky], &[false, false], total);
    let mut r = st.finish(sim);
    r.sim.run_for(Duration::from_secs(4));
    let mid = r.sim.link_stats(r.links[1], 0).delivered_bytes;
    r.until_done(Duration::from_secs(30));
    assert!(r.got.borrow().intact(total));
    let end = r.sim.link_stats(r.links[1], 0).delivered_bytes;
    assert!(
        end > mid + 1_000_000,
        "the path carried {} bytes after it came back",
        end - mid
    );
}

#[test]
fn a_line_set_down_resets_its_subflows_and_set_up_joins_again() {
    let total = 12_000_000;
    let mut r = start(
        "mptcp-line-down-up",
        &[path(10.0, 20), path(10.0, 20)],
        &[false, false],
        total,
    );
    let line = r.sim.addrs(r.c)[1];
    r.sim.run_for(Duration::from_secs(1));
    assert_eq!(r.sent.borrow().joins, 1);
    r.sim
        .with_endpoint(r.c, |now, st| st.set_path_up(now, line, false));
    r.sim.run_for(Duration::from_secs(1));
    let down = r.sim.link_stats(r.links[1], 0).delivered_bytes;
    r.sim.run_for(Duration::from_secs(1));
    assert!(
        r.sim.link_stats(r.links[1], 0).delivered_bytes - down < 2_000,
        "a line set down still carried data"
    );
    r.sim
        .with_endpoint(r.c, |now, st| st.set_path_up(now, line, true));
    r.until_done(Duration::from_secs(30));
    assert!(r.got.borrow().intact(total));
    assert_eq!(
        r.sent.borrow().joins,
        2,
        "no new subflow on the line that came back"
    );
}

#[test]
fn a_connection_outlives_its_only_line_going_down_and_carries_on_when_it_comes_back() {
    let total = 6_000_000;
    let mut r = start(
        "mptcp-only-line-down-up",
        &[path(10.0, 20)],
        &[false],
        total,
    );
    let line = r.sim.addrs(r.c)[0];
    r.sim.run_for(Duration::from_secs(1));
    r.sim
        .with_endpoint(r.c, |now, st| st.set_path_up(now, line, false));
    r.sim.run_for(Duration::from_secs(5));
    let (cid, sid) = (r.sent.borrow().conn.unwrap(), r.got.borrow().conn.unwrap());
    assert_eq!(
        r.sim.endpoint(r.c).state(cid),
        Some(ConnState::Established),
        "the client's connection ended with its only subflow"
    );
    assert_eq!(
        r.sim.endpoint(1 - r.c).state(sid),
        Some(ConnState::Established),
        "the server's connection ended with its only subflow"
    );
    let before = r.got.borrow().received;
    assert!(
        before < total,
        "the transfer was over before the line went down"
    );
    r.sim
        .with_endpoint(r.c, |now, st| st.set_path_up(now, line, true));
    r.until_done(Duration::from_secs(30));
    assert!(r.got.borrow().intact(total));
    assert_eq!(
        r.sent.borrow().joins,
        1,
        "no subflow joined on the line that came back"
    );
}

#[test]
fn a_connection_without_a_subflow_for_longer_than_its_timeout_ends() {
    let total = 6_000_000;
    let mut r = start("mptcp-only-line-down", &[path(10.0, 20)], &[false], total);
    let line = r.sim.addrs(r.c)[0];
    r.sim.run_for(Duration::from_secs(1));
    r.sim
        .with_endpoint(r.c, |now, st| st.set_path_up(now, line, false));
    r.sim.run_for(Duration::from_secs(25));
    let cid = r.sent.borrow().conn.unwrap();
    assert_eq!(
        r.sim.endpoint(r.c).state(cid),
        Some(ConnState::Established),
        "ended before its no-subflow timeout (30 s)"
    );
    let c = r.c;
    assert!(
        r.sim.run_until(
            |sim| matches!(
                sim.endpoint(c).state(cid),
                Some(ConnState::Closed(_)) | None
            ),
            Duration::from_secs(10)
        ),
        "still open 35 s after its only line went down"
    );
    // The application hears of it.
    r.sim.run_for(Duration::from_millis(100));
    assert!(
        r.sent
            .borrow()
            .ended
            .is_some_and(|e| e != mptcp_proto::tcp::CloseReason::Finished),
        "the end was not reported as an error: {:?}",
        r.sent.borrow().ended
    );
    assert!(
        !r.got.borrow().intact(total),
        "everything arrived regardless"
    );
}

#[test]
fn a_backup_path_carries_nothing_while_a_regular_one_works_and_everything_when_none_does() {
    let total = 8_000_000;
    let mut sim = Sim::new_mptcp("mptcp-backup");
    let mut regular = path(10.0, 20);
    regular.outages = vec![(Duration::from_secs(3), Duration::from_secs(3600))];
    let st = start_in(&mut sim, &[regular, path(10.0, 20)], &[false, true], total);
    let mut r = st.finish(sim);
    r.sim.run_for(Duration::from_millis(2900));
    let before = r.sim.link_stats(r.links[1], 0).delivered_bytes;
    assert!(
        before < 5_000,
        "the backup carried {before} bytes while the regular path worked"
    );
    r.until_done(Duration::from_secs(60));
    assert!(r.got.borrow().intact(total));
    let after = r.sim.link_stats(r.links[1], 0).delivered_bytes;
    assert!(
        after > total / 3,
        "the backup carried only {after} bytes once alone"
    );
}

/// Drops the first packet of direction `dir` of link `link` that `pick` chooses.
fn drop_first(
    sim: &mut Sim<Stack>,
    link: usize,
    dir: usize,
    pick: impl Fn(&PacketInfo) -> bool + 'static,
) -> Rc<RefCell<u32>> {
    let dropped = Rc::new(RefCell::new(0));
    let d = Rc::clone(&dropped);
    sim.set_filter(
        link,
        dir,
        Box::new(move |_, p| {
            if *d.borrow() == 0 && pick(p) {
                *d.borrow_mut() += 1;
                return true;
            }
            false
        }),
    );
    dropped
}

fn handshake_loss(name: &str, on_join_path: bool, dir: usize, pick: fn(&PacketInfo) -> bool) {
    let total = 3_000_000;
    let mut sim = Sim::new_mptcp(name);
    let (c, s, links) = sim.multipath(&[path(10.0, 20), path(10.0, 20)]);
    let link = links[usize::from(on_join_path)];
    let dropped = drop_first(&mut sim, link, dir, pick);
    let sink = MpSink::listen(server_addr(), 11);
    let got = sink.state();
    sim.set_app(s, sink);
    let send = MpSend::new(paths(&sim, c), server_addr(), total, 11);
    let sent = send.state();
    sim.set_app(c, send);
    let g = Rc::clone(&got);
    assert!(
        sim.run_until(|_| g.borrow().finished, Duration::from_secs(60)),
        "{name}: not done"
    );
    assert!(got.borrow().intact(total), "{name}: bytes differ");
    assert_eq!(*dropped.borrow(), 1, "{name}: the packet was never seen");
    assert!(!sent.borrow().fell_back, "{name}: fell back");
    assert_eq!(sent.borrow().joins, 1, "{name}: the join did not come up");
}

use mptcp_proto::wire::mptcp::subtype::{ADD_ADDR, DSS, MP_CAPABLE, MP_FAIL, MP_JOIN, MP_TCPRST};
use mptcp_proto::wire::tcp::TcpFlags;

fn syn(p: &PacketInfo) -> bool {
    p.flags.contains(TcpFlags::SYN) && !p.flags.contains(TcpFlags::ACK)
}
fn syn_ack(p: &PacketInfo) -> bool {
    p.flags.contains(TcpFlags::SYN) && p.flags.contains(TcpFlags::ACK)
}

#[test]
fn each_lost_handshake_packet_is_sent_again() {
    handshake_loss("lost-mpc-syn", false, 0, |p| {
        syn(p) && p.has_mptcp(MP_CAPABLE)
    });
    handshake_loss("lost-mpc-synack", false, 1, |p| {
        syn_ack(p) && p.has_mptcp(MP_CAPABLE)
    });
    handshake_loss("lost-mpc-ack-and-data", false, 0, |p| {
        !p.flags.contains(TcpFlags::SYN) && p.has_mptcp(MP_CAPABLE) && p.payload_len > 0
    });
    handshake_loss("lost-join-syn", true, 0, |p| syn(p) && p.has_mptcp(MP_JOIN));
    handshake_loss("lost-join-synack", true, 1, |p| {
        syn_ack(p) && p.has_mptcp(MP_JOIN)
    });
    handshake_loss("lost-join-ack", true, 0, |p| {
        !p.flags.contains(TcpFlags::SYN) && p.has_mptcp(MP_JOIN)
    });
    handshake_loss("lost-join-fourth-ack", true, 1, |p| {
        !p.flags.contains(TcpFlags::SYN) && p.has_mptcp(DSS)
    });
}

#[test]
fn a_lost_data_fin_is_sent_again() {
    let total = 500_000;
    let mut dropped = None;
    let r = one_path_run("mptcp-lost-data-fin", total, |sim, links| {
        dropped = Some(drop_first(sim, links[0], 0, |p| p.data_fin));
    });
    let dropped = dropped.expect("filter set");
    assert!(r.got.borrow().intact(total));
    assert_eq!(*dropped.borrow(), 1);
}

/// A segment that carries a mapping for more than itself (the first of a run, RFC 8684
/// §3.3.1: a mapping rides on one segment only), lost mid-transfer, is sent again with its
/// mapping: without it the receiver could place none of the run's bytes. Every byte arrives,
/// and nothing falls back to TCP.
#[test]
fn a_lost_segment_that_carries_a_run_s_mapping_is_sent_again_with_it() {
    #[derive(Default)]
    struct Seen {
        /// The subflow sequence number of the segment dropped, and its mapping's length.
        dropped: Option<(mptcp_proto::wire::tcp::SeqNumber, u16)>,
        /// Later segments from that sequence number, with a mapping and without.
        again_mapped: u32,
        again_bare: u32,
    }
    let total = 2_000_000;
    let seen = Rc::new(RefCell::new(Seen::default()));
    let s = Rc::clone(&seen);
    let r = one_path_run("mptcp-lost-mapping", total, |sim, links| {
        sim.set_filter(
            links[0],
            0,
            Box::new(move |_, p| {
                let mut s = s.borrow_mut();
                match (s.dropped, p.mapping) {
                    // Past the handshake and slow start's first rounds, a run's first
                    // segment whose mapping covers more than it does.
                    (None, Some(len)) if p.index >= 200 && usize::from(len) > p.payload_len => {
                        s.dropped = Some((p.seq, len));
                        true
                    }
                    (Some((seq, _)), m) if p.seq == seq && p.payload_len > 0 => {
                        if m.is_some() {
                            s.again_mapped += 1;
                        } else {
                            s.again_bare += 1;
                        }
                        false
                    }
                    _ => false,
                }
            }),
        );
    });
    assert!(r.got.borrow().intact(total), "bytes differ");
    assert!(!r.sent.borrow().fell_back, "fell back to TCP");
    let s = seen.borrow();
    let (_, len) = s
        .dropped
        .expect("no segment carried a mapping for more than itself");
    assert!(
        s.again_mapped >= 1 && s.again_bare == 0,
        "the {len}-byte mapping's segment went again {} times with a mapping, {} without",
        s.again_mapped,
        s.again_bare
    );
}

fn strip_run(name: &str, dir: usize, pick: impl FnMut(Duration, &PacketInfo) -> bool + 'static) {
    let total = 2_000_000;
    let r = one_path_run(name, total, |sim, links| {
        sim.set_middlebox(links[0], dir, Box::new(pick));
    });
    assert!(r.got.borrow().intact(total), "{name}: bytes differ");
    assert!(r.sent.borrow().fell_back, "{name}: no fallback was seen");
}

#[test]
fn mp_capable_stripped_from_the_syn_or_the_syn_ack_falls_back_to_tcp() {
    strip_run("strip-syn", 0, |_, p| syn(p));
    strip_run("strip-synack", 1, |_, p| syn_ack(p));
}

#[test]
fn options_stripped_mid_connection_fall_back_to_tcp_with_no_byte_lost() {
    // From 300 ms on, every packet both ways loses its MPTCP options.
    let total = 2_000_000;
    let r = one_path_run("strip-mid", total, |sim, links| {
        for dir in 0..2 {
            sim.set_middlebox(
                links[0],
                dir,
                Box::new(|t, _| t >= Duration::from_millis(300)),
            );
        }
    });
    assert!(r.got.borrow().intact(total));
}

#[test]
fn checksums_when_asked_for_carry_data_intact() {
    let total = 3_000_000;
    let mut sim = Sim::new_mptcp("mptcp-checksums");
    sim.endpoint_config.conn.checksums = true;
    let st = start_in(
        &mut sim,
        &[path(10.0, 20), path(10.0, 40)],
        &[false, false],
        total,
    );
    let mut r = st.finish(sim);
    r.until_done(Duration::from_secs(30));
    assert!(r.got.borrow().intact(total));
    assert_eq!(r.client_stats().checksum_failures, 0);
}

/// Payload lengths of the full-size data segments that went client to server on `link`:
/// (bare, with a DSS) as `(length, count)`, most common first.
type Sizes = Rc<RefCell<std::collections::BTreeMap<(bool, usize), u64>>>;

fn count_sizes(sim: &mut Sim<Stack>, link: usize) -> Sizes {
    let sizes: Sizes = Rc::default();
    let s = Rc::clone(&sizes);
    sim.set_filter(
        link,
        0,
        Box::new(move |_, p| {
            if p.payload_len >= 1000 {
                *s.borrow_mut()
                    .entry((p.has_mptcp(DSS), p.payload_len))
                    .or_default() += 1;
            }
            false
        }),
    );
    sizes
}

/// In a bulk transfer each hand-out is a run of segments under one mapping: the segments after
/// the first go bare, and the first carries the mapping alone (a slim DSS: no `DATA_ACK`, whose
/// news the peer has, and a 32-bit data sequence number, RFC 8684 §3.3.1), 14 bytes (16 with a
/// checksum) instead of 28, so it holds 16 (12) more payload bytes than a segment with a full
/// DSS; all intact. Interop with Linux: `interop.rs`'s capture test.
fn runs_start_with_a_slim_dss(checksums: bool) {
    let total = 4_000_000;
    let name = if checksums {
        "slim-dss-checksums"
    } else {
        "slim-dss"
    };
    let mut sim = Sim::new_mptcp(name);
    sim.endpoint_config.conn.checksums = checksums;
    let mut sizes = None;
    let st = start_with(
        &mut sim,
        &[path(10.0, 20), path(10.0, 40)],
        &[false, false],
        total,
        |sim, links| sizes = Some(count_sizes(sim, links[0])),
    );
    let mut r = st.finish(sim);
    r.until_done(Duration::from_secs(30));
    assert!(r.got.borrow().intact(total));
    let sizes = sizes.expect("filter set").borrow().clone();
    let bare = sizes
        .iter()
        .filter(|((dss, _), _)| !dss)
        .max_by_key(|(_, n)| **n)
        .map(|((_, len), _)| *len)
        .expect("bare segments");
    let slim = bare - if checksums { 16 } else { 12 };
    let full = bare - 28;
    let count = |dss: bool, len: usize| sizes.get(&(dss, len)).copied().unwrap_or(0);
    println!("{name}: segment sizes (with a DSS, payload): count {sizes:?}");
    assert!(
        count(true, slim) > 10 * count(true, full),
        "{name}: a run's first segment carries {slim} bytes, not {full}: {sizes:?}"
    );
    assert!(
        count(false, bare) > 2 * count(true, slim),
        "{name}: the rest of each run goes bare: {sizes:?}"
    );
}

#[test]
fn a_run_of_segments_starts_with_a_slim_dss() {
    runs_start_with_a_slim_dss(false);
}

#[test]
fn a_run_of_segments_starts_with_a_slim_dss_with_checksums() {
    runs_start_with_a_slim_dss(true);
}

/// A middlebox changes the payload of one data segment (TCP's checksum made right again) on
/// the last of `paths`, 1 s in: the server's DSS checksum catches it, resets that subflow with
/// `MP_FAIL` and `MP_TCPRST`, and the data arrives intact all the same.
fn corrupt_run(name: &str, paths: &[LinkParams]) -> Run {
    let total = 4_000_000;
    let mut sim = Sim::new_mptcp(name);
    sim.endpoint_config.conn.checksums = true;
    let resets = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&resets);
    let st = start_with(
        &mut sim,
        paths,
        &vec![false; paths.len()],
        total,
        |sim, links| {
            let last = *links.last().expect("a path");
            let mut done = false;
            sim.set_corrupter(
                last,
                0,
                Box::new(move |t, p| {
                    let pick = !done && t >= Duration::from_secs(1) && p.has_data();
                    done |= pick;
                    pick
                }),
            );
            // Watches the server's resets on that path (drops nothing).
            sim.set_filter(
                last,
                1,
                Box::new(move |_, p| {
                    if p.flags.contains(TcpFlags::RST) {
                        seen.borrow_mut()
                            .push((p.has_mptcp(MP_FAIL), p.has_mptcp(MP_TCPRST)));
                    }
                    false
                }),
            );
        },
    );
    let mut r = st.finish(sim);
    r.until_done(Duration::from_secs(60));
    assert!(r.got.borrow().intact(total), "{name}: bytes differ");
    let server = 1 - r.c;
    let sid = r.got.borrow().conn.expect("accepted");
    let s = r
        .sim
        .endpoint(server)
        .stats(sid)
        .expect("server connection");
    assert_eq!(s.checksum_failures, 1, "{name}: {s:?}");
    assert_eq!(
        resets.borrow().first(),
        Some(&(true, true)),
        "{name}: the reset carries MP_FAIL and MP_TCPRST: {:?}",
        resets.borrow()
    );
    assert_eq!(r.client_stats().mp_fail_received, 1, "{name}");
    r
}

#[test]
fn a_checksum_mismatch_resets_its_subflow_with_mp_fail_and_loses_no_byte() {
    let r = corrupt_run("mptcp-corrupt-two", &[path(10.0, 20), path(10.0, 40)]);
    assert!(r.client_stats().bytes_reinjected > 0);
}

#[test]
fn a_checksum_mismatch_on_the_only_subflow_is_survived_by_joining_again() {
    let r = corrupt_run("mptcp-corrupt-one", &[path(10.0, 20)]);
    // The connection went on over a new subflow on the same line.
    assert!(r.sent.borrow().joins >= 1, "no join after the reset");
}

#[test]
fn an_abort_reaches_the_peer_as_mp_fastclose() {
    let total = 50_000_000;
    let mut r = start(
        "mptcp-fastclose",
        &[path(10.0, 20), path(10.0, 20)],
        &[false, false],
        total,
    );
    r.sim.run_for(Duration::from_secs(1));
    // Each subflow's RST carries MP_FASTCLOSE (§3.5, the RST form: on every subflow).
    let fastcloses: Vec<Rc<RefCell<u32>>> = r
        .links
        .clone()
        .into_iter()
        .map(|l| {
            let n = Rc::new(RefCell::new(0));
            let seen = Rc::clone(&n);
            r.sim.set_filter(
                l,
                0,
                Box::new(move |_, p| {
                    if p.flags.contains(TcpFlags::RST) && p.mptcp & (1 << 7) != 0 {
                        *seen.borrow_mut() += 1;
                    }
                    false
                }),
            );
            n
        })
        .collect();
    let id = r.sent.borrow().conn.expect("connected");
    r.sim.with_endpoint(r.c, |_, st| st.abort(id));
    // The application lets go of it at once, as a driver does after an abort.
    r.sim.with_endpoint(r.c, |now, st| st.release(now, id));
    let got = Rc::clone(&r.got);
    assert!(
        r.sim
            .run_until(|_| got.borrow().ended.is_some(), Duration::from_secs(5))
    );
    assert_eq!(
        r.got.borrow().ended,
        Some(mptcp_proto::tcp::CloseReason::Reset)
    );
    for (i, n) in fastcloses.iter().enumerate() {
        assert_eq!(*n.borrow(), 1, "path {i}: RSTs with MP_FASTCLOSE");
    }
}

/// A client with one address on two links and a server with one address on each: the server
/// announces its second address.
fn announce_topology(sim: &mut Sim<Stack>) -> (usize, usize, Vec<usize>, SocketAddr) {
    let c = sim.add_host("client");
    let s = sim.add_host("server");
    let a = IpAddr::from([10, 0, 0, 1]);
    let s0 = IpAddr::from([10, 9, 9, 9]);
    let s1 = IpAddr::from([10, 9, 9, 10]);
    let l0 = sim.link(c, a, s, s0, path(10.0, 20), path(10.0, 20));
    let l1 = sim.link(c, a, s, s1, path(10.0, 30), path(10.0, 30));
    (c, s, vec![l0, l1], SocketAddr::new(s1, 0))
}

fn announce_run(name: &str, total: u64, setup: impl FnOnce(&mut Sim<Stack>, &[usize])) -> Run {
    let mut sim = Sim::new_mptcp(name);
    let (c, s, links, second) = announce_topology(&mut sim);
    setup(&mut sim, &links);
    let sink = MpSink::listen(server_addr(), 11);
    let got = sink.state();
    sim.set_app(s, sink);
    sim.with_endpoint(s, |now, st| st.announce(now, second));
    let send = MpSend::new(paths(&sim, c)[..1].to_vec(), server_addr(), total, 11);
    let sent = send.state();
    sim.set_app(c, send);
    Run {
        sim,
        c,
        links,
        sent,
        got,
    }
}

#[test]
fn an_announced_address_is_echoed_and_joined() {
    let total = 8_000_000;
    let mut r = announce_run("mptcp-add-addr", total, |_, _| {});
    r.until_done(Duration::from_secs(30));
    assert!(r.got.borrow().intact(total));
    assert_eq!(r.sent.borrow().joins, 1, "no join to the announced address");
    let b = r.sim.link_stats(r.links[1], 0).delivered_bytes;
    assert!(b > total / 5, "the announced address carried {b} bytes");
}

#[test]
fn a_lost_add_addr_is_sent_again_until_echoed() {
    let total = 8_000_000;
    let mut dropped = None;
    let mut r = announce_run("mptcp-add-addr-lost", total, |sim, links| {
        dropped = Some(drop_first(sim, links[0], 1, |p| p.has_mptcp(ADD_ADDR)));
    });
    r.until_done(Duration::from_secs(30));
    assert!(r.got.borrow().intact(total));
    assert_eq!(
        *dropped.expect("filter").borrow(),
        1,
        "no ADD_ADDR was seen"
    );
    assert_eq!(
        r.sent.borrow().joins,
        1,
        "no join after the ADD_ADDR was sent again"
    );
}

#[test]
fn a_removed_address_closes_its_subflows_and_the_rest_carries_on() {
    let total = 12_000_000;
    let mut r = announce_run("mptcp-remove-addr", total, |_, _| {});
    r.sim.run_for(Duration::from_secs(1));
    assert_eq!(r.sent.borrow().joins, 1);
    let server = 1 - r.c;
    r.sim.with_endpoint(server, |now, st| {
        st.withdraw(now, IpAddr::from([10, 9, 9, 10]));
    });
    r.sim.run_for(Duration::from_millis(500));
    let at = r.sim.link_stats(r.links[1], 0).delivered_bytes;
    r.until_done(Duration::from_secs(30));
    assert!(r.got.borrow().intact(total));
    let after = r.sim.link_stats(r.links[1], 0).delivered_bytes - at;
    assert!(
        after < 2_000,
        "the removed address still carried {after} bytes"
    );
    let id = r.sent.borrow().conn.expect("connected");
    assert!(
        r.sim
            .endpoint(r.c)
            .subflows(id)
            .iter()
            .filter(|s| s.active)
            .count()
            <= 1,
        "the subflow to the removed address is still active"
    );
}

#[test]
fn mp_prio_makes_a_subflow_a_backup_at_the_peer_too() {
    let total = 12_000_000;
    let mut r = start(
        "mptcp-mp-prio",
        &[path(10.0, 20), path(10.0, 20)],
        &[false, false],
        total,
    );
    r.sim.run_for(Duration::from_secs(1));
    let line = r.sim.addrs(r.c)[1];
    r.sim
        .with_endpoint(r.c, |now, st| st.set_backup(now, line, true));
    r.sim.run_for(Duration::from_millis(300));
    let at = r.sim.link_stats(r.links[1], 0).delivered_bytes;
    r.sim.run_for(Duration::from_secs(1));
    let during = r.sim.link_stats(r.links[1], 0).delivered_bytes - at;
    assert!(
        during < 5_000,
        "the backup line carried {during} bytes in a second"
    );
    let server = 1 - r.c;
    let sid = r.got.borrow().conn.expect("accepted");
    assert!(
        r.sim
            .endpoint(server)
            .subflows(sid)
            .iter()
            .any(|s| s.backup),
        "the server did not learn the subflow is a backup"
    );
    r.until_done(Duration::from_secs(30));
    assert!(r.got.borrow().intact(total));
}

/// Signals wait in one queue, and an `MP_PRIO` goes only on its own subflow: one queued for a
/// subflow that closed before it went must not hold up the signals behind it (here another
/// subflow's `MP_PRIO`, which the server must still learn).
#[test]
fn an_mp_prio_for_a_subflow_that_closed_holds_up_no_signal_behind_it() {
    let total = 12_000_000;
    let mut r = start(
        "mptcp-mp-prio-dead",
        &[path(10.0, 20), path(10.0, 20)],
        &[false, false],
        total,
    );
    r.sim.run_for(Duration::from_secs(1));
    let addrs = r.sim.addrs(r.c);
    let (first, second) = (addrs[0], addrs[1]);
    r.sim.with_endpoint(r.c, |now, st| {
        // Queued, then its subflow reset before any packet left.
        st.set_backup(now, second, true);
        st.set_path_up(now, second, false);
        st.set_backup(now, first, true);
    });
    r.sim.run_for(Duration::from_millis(500));
    let server = 1 - r.c;
    let sid = r.got.borrow().conn.expect("accepted");
    let subflows = r.sim.endpoint(server).subflows(sid);
    assert!(
        subflows
            .iter()
            .any(|s| !s.closed && s.backup && s.remote.ip() == first),
        "the server did not learn that the first subflow is a backup: {subflows:?}"
    );
    r.until_done(Duration::from_secs(30));
    assert!(r.got.borrow().intact(total));
}

/// A line given up while it is silent (the path manager's verdict): the reset of its subflow
/// is lost with the line, so the client tells the server on the line that works
/// (`REMOVE_ADDR`, RFC 8684 §3.4.2), and the server closes its end at once instead of sending
/// into the dead line until its timeouts. For the first line too (address ID 0).
#[test]
fn a_line_given_up_while_silent_is_withdrawn_at_the_peer_at_once() {
    for dead in 0..2 {
        let total = 12_000_000;
        let mut r = start(
            &format!("mptcp-withdraw-silent-{dead}"),
            &[path(10.0, 20), path(10.0, 20)],
            &[false, false],
            total,
        );
        r.sim.run_for(Duration::from_secs(1));
        let line = r.sim.addrs(r.c)[dead];
        for dir in 0..2 {
            r.sim.set_filter(r.links[dead], dir, Box::new(|_, _| true));
        }
        r.sim.run_for(Duration::from_millis(100));
        r.sim
            .with_endpoint(r.c, |now, st| st.set_path_up(now, line, false));
        r.sim.run_for(Duration::from_millis(200));
        let server = 1 - r.c;
        let sid = r.got.borrow().conn.expect("accepted");
        let subflows = r.sim.endpoint(server).subflows(sid);
        assert!(
            subflows.iter().all(|s| s.closed || s.remote.ip() != line),
            "line {dead}: the server still has a subflow on the line given up 200 ms ago: {subflows:?}"
        );
        assert!(
            subflows.iter().any(|s| !s.closed),
            "line {dead}: the server has no subflow left: {subflows:?}"
        );
        r.until_done(Duration::from_secs(30));
        assert!(r.got.borrow().intact(total), "line {dead}: bytes differ");
    }
}

/// A subflow that a middlebox breaks (here its MPTCP options stripped for a moment, which
/// makes the server reset it, §3.7) while its line still works is made again by the client
/// after a short wait, and carries data again.
#[test]
fn a_subflow_reset_while_its_line_works_is_made_again() {
    let total = 16_000_000;
    let mut sim = Sim::new_mptcp("mptcp-rejoin-after-reset");
    let st = start_with(
        &mut sim,
        &[path(10.0, 20), path(10.0, 20)],
        &[false, false],
        total,
        |sim, links| {
            sim.set_middlebox(
                links[1],
                0,
                Box::new(|t, p| {
                    p.has_data() && t >= Duration::from_secs(1) && t < Duration::from_millis(1100)
                }),
            );
        },
    );
    let mut r = st.finish(sim);
    r.sim.run_for(Duration::from_secs(2));
    let cid = r.sent.borrow().conn.expect("connected");
    let line = r.sim.addrs(r.c)[1];
    let joins_before = r.sent.borrow().joins;
    r.sim.run_for(Duration::from_secs(3));
    let subflows = r.sim.endpoint(r.c).subflows(cid);
    assert!(
        subflows
            .iter()
            .any(|s| !s.closed && s.active && s.local.ip() == line),
        "no working subflow on the second line 3 s after its reset: {subflows:?}"
    );
    assert!(
        r.sent.borrow().joins > joins_before,
        "the subflow was not made again"
    );
    let at = r.sim.link_stats(r.links[1], 0).delivered_bytes;
    r.sim.run_for(Duration::from_secs(1));
    assert!(
        r.sim.link_stats(r.links[1], 0).delivered_bytes - at > 500_000,
        "the second line carries nothing after the subflow was made again"
    );
    r.until_done(Duration::from_secs(30));
    assert!(r.got.borrow().intact(total));
}

/// An address change on a line (the gateway's handover) is the line set down and up at once:
/// the old subflow is withdrawn (`REMOVE_ADDR`) while its reset is lost with the old address,
/// and the new subflow from the same engine address takes a new address ID, so that the
/// withdrawal closes the old one at the peer and not the new one.
#[test]
fn a_line_set_down_and_up_at_once_withdraws_the_old_subflow_and_keeps_the_new_one() {
    let total = 16_000_000;
    let mut r = start(
        "mptcp-line-bounce",
        &[path(10.0, 20), path(10.0, 20)],
        &[false, false],
        total,
    );
    r.sim.run_for(Duration::from_secs(1));
    let line = r.sim.addrs(r.c)[1];
    // The old subflow's resets no longer arrive (the old address is gone): only the
    // withdrawal can close it at the server.
    let cut = r.sim.elapsed();
    r.sim.set_filter(
        r.links[1],
        0,
        Box::new(move |t, p| t >= cut && p.flags.contains(TcpFlags::RST)),
    );
    r.sim.with_endpoint(r.c, |now, st| {
        st.set_path_up(now, line, false);
        st.set_path_up(now, line, true);
    });
    r.sim.run_for(Duration::from_millis(500));
    let server = 1 - r.c;
    let sid = r.got.borrow().conn.expect("accepted");
    let subflows = r.sim.endpoint(server).subflows(sid);
    let on_line: Vec<_> = subflows
        .iter()
        .filter(|s| !s.closed && s.remote.ip() == line)
        .collect();
    assert_eq!(
        on_line.len(),
        1,
        "the server should keep exactly the new subflow on the line: {subflows:?}"
    );
    assert!(on_line[0].active, "{subflows:?}");
    let at = r.sim.link_stats(r.links[1], 0).delivered_bytes;
    r.sim.run_for(Duration::from_secs(1));
    assert!(
        r.sim.link_stats(r.links[1], 0).delivered_bytes - at > 500_000,
        "the line carries nothing after the handover"
    );
    r.until_done(Duration::from_secs(30));
    assert!(r.got.borrow().intact(total));
}
