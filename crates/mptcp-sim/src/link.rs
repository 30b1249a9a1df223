//! A simulated link: per direction a rate (serialisation), a tail-drop queue, a one-way delay
//! with optional jitter, seeded random loss, outages on a schedule, and a drop filter for
//! tests that must lose one particular segment.
//!
//! Each direction draws from a random stream of its own, the same draws for its n-th packet
//! whatever happens elsewhere: two runs that differ only in which packets a sender puts on
//! which line (two schedulers) see the same losses and jitter per line. An outage loses what
//! it finds queued or on the wire, not only what is offered during it.

use core::net::IpAddr;
use core::time::Duration;
use std::collections::VecDeque;
use std::time::Instant;

use mptcp_proto::wire::tcp::{SeqNumber, TcpFlags, TcpPacket};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// The settings of one direction of a link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkParams {
    /// Bits per second on the wire (IP packet bytes); 0: no serialisation delay.
    pub rate_bps: u64,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per packet.
    pub jitter: Duration,
    /// With jitter, may a packet overtake an earlier one?
    pub reorder: bool,
    /// Probability that a packet is lost.
    pub loss: f64,
    /// Queue in bytes before the link (tail drop); 0: unlimited.
    pub queue_bytes: usize,
    /// Times (since the simulation began) when nothing gets through: `[start, end)`.
    pub outages: Vec<(Duration, Duration)>,
}

impl Default for LinkParams {
    fn default() -> Self {
        Self {
            rate_bps: 0,
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            reorder: false,
            loss: 0.0,
            queue_bytes: 0,
            outages: Vec::new(),
        }
    }
}

impl LinkParams {
    /// A link of `mbit` Mbit/s and `rtt` round-trip time (half each way) whose queue holds
    /// one bandwidth-delay product (at least 64 KiB).
    #[must_use]
    pub fn bdp_queue(mbit: f64, rtt: Duration) -> Self {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a positive rate that fits"
        )]
        let rate_bps = (mbit * 1e6) as u64;
        let bdp = rate_bps as f64 / 8.0 * rtt.as_secs_f64();
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a positive size that fits"
        )]
        let queue_bytes = (bdp as usize).max(64 * 1024);
        Self {
            rate_bps,
            delay: rtt / 2,
            queue_bytes,
            ..Self::default()
        }
    }
}

/// What a drop filter sees of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// Index of the packet in this direction of the link (0 for the first).
    pub index: u64,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TCP control bits (0 if the packet is not TCP).
    pub flags: TcpFlags,
    /// TCP sequence number.
    pub seq: SeqNumber,
    /// TCP acknowledgment number (if ACK is set).
    pub ack: Option<SeqNumber>,
    /// TCP payload length.
    pub payload_len: usize,
    /// The MPTCP options it carries: bit `1 << subtype` for each (RFC 8684 §8).
    pub mptcp: u16,
    /// Its DSS has the `DATA_FIN` flag.
    pub data_fin: bool,
    /// The data-level length of the mapping its DSS carries, if it carries one (RFC 8684
    /// §3.3.1; 0 is an infinite mapping).
    pub mapping: Option<u16>,
}

impl PacketInfo {
    /// Reads what a filter needs from an IP packet; `None` if it is not IPv4/IPv6 + TCP.
    #[must_use]
    pub fn read(index: u64, packet: &[u8]) -> Option<Self> {
        let (src, dst, tcp): (IpAddr, IpAddr, &[u8]) = match packet.first()? >> 4 {
            4 => {
                let p = mptcp_proto::wire::ipv4::Ipv4Packet::new_checked(packet).ok()?;
                let hl = p.header_len();
                (p.src_addr().into(), p.dst_addr().into(), packet.get(hl..)?)
            }
            6 => {
                let p = mptcp_proto::wire::ipv6::Ipv6Packet::new_checked(packet).ok()?;
                (p.src_addr().into(), p.dst_addr().into(), packet.get(40..)?)
            }
            _ => return None,
        };
        let t = TcpPacket::new_checked(tcp).ok()?;
        let flags = t.flags();
        let dss =
            mptcp_proto::wire::tcp_option::TcpOptions::new(t.options()).find_map(|o| match o {
                Ok(mptcp_proto::wire::tcp_option::TcpOption::Mptcp(
                    mptcp_proto::wire::mptcp::MptcpOption::Dss(d),
                )) => Some(d),
                _ => None,
            });
        let data_fin = dss.is_some_and(|d| d.data_fin);
        let mapping = dss.and_then(|d| d.mapping).map(|m| m.data_len);
        let mptcp = mptcp_proto::wire::tcp_option::TcpOptions::new(t.options())
            .filter_map(|o| match o {
                Ok(mptcp_proto::wire::tcp_option::TcpOption::Mptcp(m)) => Some(m.subtype()),
                Ok(_) => None,
                Err(bad) => mptcp_proto::wire::tcp_option::mptcp_subtype(bad.bytes),
            })
            .fold(0u16, |m, sub| m | 1 << (sub & 0xf));
        Some(Self {
            index,
            src,
            dst,
            flags,
            seq: t.seq_number(),
            ack: flags.contains(TcpFlags::ACK).then(|| t.ack_number()),
            payload_len: t.payload().len(),
            mptcp,
            data_fin,
            mapping,
        })
    }

    /// Whether it carries an MPTCP option of `subtype`.
    #[must_use]
    pub fn has_mptcp(&self, subtype: u8) -> bool {
        self.mptcp & (1 << (subtype & 0xf)) != 0
    }

    /// Whether it carries data (or SYN/FIN): occupies sequence space.
    #[must_use]
    pub fn has_data(&self) -> bool {
        self.payload_len > 0
    }
}

/// A test's choice of packets to lose, given the time since the simulation began and the
/// packet (it sees every packet offered, before outages and loss): `true` drops it.
pub type DropFilter = Box<dyn FnMut(Duration, &PacketInfo) -> bool>;

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Packets offered to the link.
    pub offered: u64,
    /// Packets that arrived.
    pub delivered: u64,
    /// IP bytes that arrived.
    pub delivered_bytes: u64,
    /// Lost to random loss.
    pub lost: u64,
    /// Dropped because the queue was full.
    pub queue_drops: u64,
    /// Dropped during an outage.
    pub outage_drops: u64,
    /// Dropped by the test's filter.
    pub filtered: u64,
    /// Packets whose MPTCP options a middlebox stripped.
    pub stripped: u64,
    /// Packets whose payload a middlebox changed.
    pub corrupted: u64,
}

/// One direction of a link.
pub(crate) struct Direction {
    pub(crate) params: LinkParams,
    rng: Xoshiro256PlusPlus,
    /// The start of the last outage whose loss of the queue was applied.
    flushed: Option<Duration>,
    busy_until: Option<Instant>,
    /// Departure time and size of the packets still in the queue.
    queued: VecDeque<(Instant, usize)>,
    queued_bytes: usize,
    last_arrival: Option<Instant>,
    pub(crate) filter: Option<DropFilter>,
    /// Picks packets whose MPTCP options a middlebox strips.
    pub(crate) strip: Option<DropFilter>,
    /// Picks packets whose payload a middlebox changes.
    pub(crate) corrupt: Option<DropFilter>,
    pub(crate) stats: DirectionStats,
}

impl core::fmt::Debug for Direction {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Direction")
            .field("params", &self.params)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Direction {
    /// A direction with `params` whose random stream starts from `seed`.
    pub(crate) fn new(params: LinkParams, seed: u64) -> Self {
        Self {
            params,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            flushed: None,
            busy_until: None,
            queued: VecDeque::new(),
            queued_bytes: 0,
            last_arrival: None,
            filter: None,
            strip: None,
            corrupt: None,
            stats: DirectionStats::default(),
        }
    }

    /// Offers a packet at `now` (time since the start: `elapsed`); returns its arrival time at
    /// the other end, or `None` if it is lost.
    pub(crate) fn offer(
        &mut self,
        now: Instant,
        elapsed: Duration,
        packet: &[u8],
    ) -> Option<Instant> {
        let index = self.stats.offered;
        self.stats.offered += 1;
        // This packet's draws, taken whatever becomes of it.
        let lose = self.params.loss > 0.0 && unit(&mut self.rng) < self.params.loss;
        let jitter = if self.params.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.params.jitter.mul_f64(unit(&mut self.rng))
        };
        self.flush_outages(now, elapsed);
        if let Some(f) = self.filter.as_mut() {
            if PacketInfo::read(index, packet).is_some_and(|info| f(elapsed, &info)) {
                self.stats.filtered += 1;
                return None;
            }
        }
        if self
            .params
            .outages
            .iter()
            .any(|&(s, e)| s <= elapsed && elapsed < e)
        {
            self.stats.outage_drops += 1;
            return None;
        }
        if lose {
            self.stats.lost += 1;
            return None;
        }
        while let Some(&(depart, len)) = self.queued.front() {
            if depart > now {
                break;
            }
            self.queued.pop_front();
            self.queued_bytes -= len;
        }
        let len = packet.len();
        if self.params.queue_bytes > 0 && self.queued_bytes + len > self.params.queue_bytes {
            self.stats.queue_drops += 1;
            return None;
        }
        let start = self.busy_until.map_or(now, |b| b.max(now));
        let serialisation = (len as u64 * 8 * 1_000_000_000)
            .checked_div(self.params.rate_bps)
            .unwrap_or(0);
        let depart = start + Duration::from_nanos(serialisation);
        self.busy_until = Some(depart);
        self.queued.push_back((depart, len));
        self.queued_bytes += len;
        let mut arrival = depart + self.params.delay + jitter;
        if !self.params.reorder {
            if let Some(last) = self.last_arrival {
                arrival = arrival.max(last);
            }
        }
        self.last_arrival = Some(arrival);
        // An outage that begins while the packet waits in the queue or travels loses it.
        let arrives = elapsed + arrival.saturating_duration_since(now);
        if self
            .params
            .outages
            .iter()
            .any(|&(s, e)| s < e && elapsed < s && s < arrives)
        {
            self.stats.outage_drops += 1;
            return None;
        }
        self.stats.delivered += 1;
        self.stats.delivered_bytes += len as u64;
        Some(arrival)
    }

    /// The latest outage that has begun by `elapsed` emptied the queue and the wire when it
    /// began (the packets were counted lost when offered): later packets do not wait behind
    /// them.
    fn flush_outages(&mut self, now: Instant, elapsed: Duration) {
        let Some(start) = self
            .params
            .outages
            .iter()
            .filter(|o| o.0 < o.1 && o.0 <= elapsed)
            .map(|o| o.0)
            .max()
        else {
            return;
        };
        if self.flushed.is_some_and(|f| f >= start) {
            return;
        }
        self.flushed = Some(start);
        let Some(began) = now.checked_sub(elapsed.saturating_sub(start)) else {
            return;
        };
        while let Some(&(depart, len)) = self.queued.back() {
            if depart <= began {
                break;
            }
            self.queued.pop_back();
            self.queued_bytes -= len;
        }
        if self.busy_until.is_some_and(|b| b > began) {
            self.busy_until = Some(began);
        }
        if self.last_arrival.is_some_and(|a| a > began) {
            self.last_arrival = Some(began);
        }
    }
}

/// A uniform number in `[0, 1)`.
pub(crate) fn unit(rng: &mut Xoshiro256PlusPlus) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs `edit` on the TCP segment of the IP packet `packet` (header and payload) and, if it
/// says it changed something, puts the TCP checksum right again, as a middlebox that rewrites
/// segments does. Returns whether it changed anything.
fn rewrite_tcp(packet: &mut [u8], edit: impl FnOnce(&mut [u8]) -> bool) -> bool {
    use mptcp_proto::wire::checksum;
    let Some(&first) = packet.first() else {
        return false;
    };
    let (ip_len, pseudo): (usize, Vec<u8>) = match first >> 4 {
        4 => {
            let hl = usize::from(first & 0xf) * 4;
            if packet.len() < hl.max(20) + 20 {
                return false;
            }
            let mut p = packet[12..20].to_vec();
            p.extend_from_slice(&[0, 6]);
            let tcp_len = u16::try_from(packet.len() - hl).unwrap_or(0);
            p.extend_from_slice(&tcp_len.to_be_bytes());
            (hl, p)
        }
        6 => {
            if packet.len() < 60 {
                return false;
            }
            let mut p = packet[8..40].to_vec();
            let tcp_len = u32::try_from(packet.len() - 40).unwrap_or(0);
            p.extend_from_slice(&tcp_len.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 6]);
            (40, p)
        }
        _ => return false,
    };
    let tcp = &mut packet[ip_len..];
    let data_off = usize::from(tcp[12] >> 4) * 4;
    if data_off < 20 || data_off > tcp.len() || !edit(tcp) {
        return false;
    }
    tcp[16..18].fill(0);
    let sum = checksum::finish(checksum::add(checksum::add(0, &pseudo), tcp));
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    true
}

/// Rewrites every MPTCP option of the IP packet `packet` into NOPs and fixes the TCP checksum,
/// as a middlebox that strips unknown options does. Returns whether it changed anything.
pub fn strip_mptcp(packet: &mut [u8]) -> bool {
    rewrite_tcp(packet, |tcp| {
        let data_off = usize::from(tcp[12] >> 4) * 4;
        let mut i = 20;
        let mut changed = false;
        while i < data_off {
            match tcp[i] {
                0 => break,
                1 => i += 1,
                kind => {
                    let Some(&len) = tcp.get(i + 1) else { break };
                    let len = usize::from(len);
                    if len < 2 || i + len > data_off {
                        break;
                    }
                    if kind == mptcp_proto::wire::mptcp::KIND {
                        tcp[i..i + len].fill(1);
                        changed = true;
                    }
                    i += len;
                }
            }
        }
        changed
    })
}

/// Changes the last payload byte of the IP packet `packet` and fixes the TCP checksum, as a
/// middlebox that rewrites content does (an application-level gateway): TCP cannot tell, the
/// DSS checksum can (RFC 8684 §3.3.1). Returns whether there was a payload to change.
pub fn corrupt_payload(packet: &mut [u8]) -> bool {
    rewrite_tcp(packet, |tcp| {
        let data_off = usize::from(tcp[12] >> 4) * 4;
        match tcp.len().checked_sub(1).filter(|last| *last >= data_off) {
            Some(last) => {
                tcp[last] ^= 0x5a;
                true
            }
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(len: usize) -> Vec<u8> {
        vec![0u8; len]
    }

    /// `d` offered a packet of `len` bytes `at` since the start `t0`.
    fn offer(d: &mut Direction, t0: Instant, at: Duration, len: usize) -> Option<Duration> {
        d.offer(t0 + at, at, &packet(len)).map(|a| a - t0)
    }

    #[test]
    fn serialisation_queue_and_delay() {
        let t0 = Instant::now();
        let mut d = Direction::new(
            LinkParams {
                rate_bps: 8_000_000, // 1 byte per µs
                delay: Duration::from_millis(10),
                queue_bytes: 2500,
                ..LinkParams::default()
            },
            1,
        );
        assert_eq!(offer(&mut d, t0, Duration::ZERO, 1000), Some(ms(11)));
        assert_eq!(
            offer(&mut d, t0, Duration::ZERO, 1000),
            Some(ms(12)),
            "waits for the first"
        );
        assert_eq!(offer(&mut d, t0, Duration::ZERO, 1000), None, "queue full");
        assert_eq!(d.stats.queue_drops, 1);
        // Once the first has left, there is room again.
        assert!(offer(&mut d, t0, ms(1), 1000).is_some());
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nothing_gets_through_an_outage() {
        let t0 = Instant::now();
        let mut d = Direction::new(
            LinkParams {
                outages: vec![(ms(1000), ms(2000))],
                ..LinkParams::default()
            },
            1,
        );
        assert_eq!(offer(&mut d, t0, ms(980), 40), Some(ms(990)));
        assert_eq!(offer(&mut d, t0, ms(1500), 40), None, "offered during it");
        assert_eq!(offer(&mut d, t0, ms(2000), 40), Some(ms(2010)));
        assert_eq!(d.stats.outage_drops, 1);
    }

    #[test]
    fn an_outage_loses_what_is_queued_and_on_the_wire() {
        let t0 = Instant::now();
        let mut d = Direction::new(
            LinkParams {
                rate_bps: 8_000_000, // 1 byte per µs
                delay: ms(10),
                outages: vec![(ms(1000), ms(1020)), (ms(3000), ms(3000))],
                ..LinkParams::default()
            },
            1,
        );
        // Leaves at 990 ms, would arrive at 1000 ms: through just before.
        assert_eq!(offer(&mut d, t0, ms(989), 1000), Some(ms(1000)));
        // On the wire when the line dies.
        assert_eq!(offer(&mut d, t0, ms(995), 1000), None);
        // Queued behind 50 ms of others: still waiting when the line dies.
        for _ in 0..50 {
            let _ = offer(&mut d, t0, ms(996), 1000);
        }
        assert_eq!(d.stats.delivered, 1);
        assert_eq!(d.stats.outage_drops, 51);
        // After the outage nothing waits behind the packets it lost (they would have kept
        // the line busy until 1046 ms).
        assert_eq!(offer(&mut d, t0, ms(1020), 1000), Some(ms(1031)));
        assert_eq!(offer(&mut d, t0, ms(1020), 1000), Some(ms(1032)));
        // An outage of no length loses nothing.
        assert_eq!(offer(&mut d, t0, ms(2995), 1000), Some(ms(3006)));
        assert_eq!(d.stats.outage_drops, 51);
    }

    #[test]
    fn random_loss_matches_its_rate() {
        let t0 = Instant::now();
        let mut d = Direction::new(
            LinkParams {
                loss: 0.05,
                ..LinkParams::default()
            },
            7,
        );
        for _ in 0..20_000 {
            let _ = offer(&mut d, t0, Duration::ZERO, 40);
        }
        assert!((800..1200).contains(&d.stats.lost), "{}", d.stats.lost);
    }

    #[test]
    fn a_direction_draws_the_same_for_its_nth_packet_whatever_is_dropped_before() {
        let t0 = Instant::now();
        let fates = |outages| {
            let mut d = Direction::new(
                LinkParams {
                    loss: 0.3,
                    jitter: ms(5),
                    reorder: true,
                    outages,
                    ..LinkParams::default()
                },
                9,
            );
            (0..300)
                .map(|k| offer(&mut d, t0, ms(k), 40))
                .collect::<Vec<_>>()
        };
        let (all, cut) = (fates(vec![]), fates(vec![(ms(0), ms(100))]));
        assert!(cut[..100].iter().all(Option::is_none));
        assert_eq!(
            all[100..],
            cut[100..],
            "the same losses and delays after the outage"
        );
        assert!(all[100..].iter().any(Option::is_none) && all[100..].iter().any(Option::is_some));
    }
}
