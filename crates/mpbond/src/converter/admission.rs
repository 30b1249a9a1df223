//! Which connections that have not authenticated yet the converter keeps, so that nobody can
//! lock gateways out by opening connections and sending nothing.
//!
//! Until its Convert message is read and its authentication checked, a connection is
//! *pending*. Pending connections cost little (a socket and a small task) but must be bounded,
//! and the bound must never turn away a gateway:
//!
//! - **per source** (an IPv4 address, an IPv6 /64): a source holds at most
//!   [`AdmissionConfig::per_source`] pending connections; a new one beyond that replaces the
//!   source's oldest. A source that authenticated recently (a gateway's line, or a carrier NAT
//!   address that gateways share) is *known* and gets [`AdmissionConfig::per_known_source`]:
//!   a gateway's bursts are not cut by a stranger's limit. The gateway checks its key when it
//!   starts, so its address is known before its first burst.
//! - **in all**: at most [`AdmissionConfig::max_pending`]; when full, a new connection
//!   replaces the oldest pending one of an unknown source (a known source's only when there is
//!   no other). So a new connection is never refused for want of room: a flood can only push
//!   out its own and other strangers' connections, oldest first, and a gateway's connection
//!   needs only the few milliseconds its Convert message takes.
//! - **time**: a pending connection is closed after [`AdmissionConfig::timeout`], or after
//!   [`AdmissionConfig::timeout_under_pressure`] when it arrived while more than half the
//!   budget was in use.
//!
//! This module decides; the converter acts (it resets what is evicted). It holds no I/O and
//! takes the time as an argument.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Pending connections at most, all sources together.
    pub max_pending: usize,
    /// Pending connections at most per unknown source.
    pub per_source: usize,
    /// Pending connections at most per known source.
    pub per_known_source: usize,
    /// Time a pending connection has to authenticate.
    pub timeout: Duration,
    /// The same, for a connection that arrived while over half the budget was in use.
    pub timeout_under_pressure: Duration,
    /// How long a source stays known after its last authenticated connection.
    pub remember: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_pending: 4096,
            per_source: 32,
            per_known_source: 4096,
            timeout: Duration::from_secs(10),
            timeout_under_pressure: Duration::from_secs(2),
            remember: Duration::from_secs(3600),
        }
    }
}

/// A source of connections: an IPv4 address, or an IPv6 /64 (one customer's prefix: counting
/// single IPv6 addresses would give each attacker 2^64 sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    /// The source of a connection from `ip`.
    #[must_use]
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Self(IpAddr::V4(a)),
            IpAddr::V6(a) => {
                if let Some(v4) = a.to_ipv4_mapped() {
                    return Self(IpAddr::V4(v4));
                }
                let s = a.segments();
                Self(IpAddr::V6(std::net::Ipv6Addr::new(
                    s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                )))
            }
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// Why a pending connection was pushed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Its source opened more pending connections than it may hold.
    SourceFull,
    /// The converter's budget was full and it was the oldest (of an unknown source, if any).
    BudgetFull,
}

/// A pending connection pushed out to make room: the caller resets it.
#[derive(Debug)]
pub struct Evicted<T> {
    /// What the caller gave [`Admission::admit`] for it.
    pub handle: T,
    /// Why.
    pub why: Eviction,
    /// Its source.
    pub source: Source,
}

/// A connection admitted as pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Its id, for [`Admission::finish`].
    pub id: u64,
    /// When it must have authenticated.
    pub deadline: Instant,
}

#[derive(Debug)]
struct Pending<T> {
    source: Source,
    known: bool,
    handle: T,
}

/// The pending connections and the known sources. `T` is what the caller needs to reset a
/// connection that is pushed out (a channel to its task).
#[derive(Debug)]
pub struct Admission<T> {
    config: AdmissionConfig,
    next_id: u64,
    pending: HashMap<u64, Pending<T>>,
    /// Ids by age, oldest first; ids already finished are skipped when met.
    order: VecDeque<u64>,
    /// Each source's pending ids, oldest first.
    per_source: HashMap<Source, VecDeque<u64>>,
    /// Known sources and when they last authenticated.
    known: HashMap<Source, Instant>,
}

impl<T> Admission<T> {
    /// Nothing pending, nobody known.
    #[must_use]
    pub fn new(config: AdmissionConfig) -> Self {
        Self {
            config,
            next_id: 0,
            pending: HashMap::new(),
            order: VecDeque::new(),
            per_source: HashMap::new(),
            known: HashMap::new(),
        }
    }

    /// Pending connections now.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Sources known now.
    #[must_use]
    pub fn known_sources(&self) -> usize {
        self.known.len()
    }

    /// Whether `source` authenticated within [`AdmissionConfig::remember`] of `now`.
    #[must_use]
    pub fn is_known(&self, source: Source, now: Instant) -> bool {
        self.known
            .get(&source)
            .is_some_and(|&t| now.saturating_duration_since(t) < self.config.remember)
    }

    /// Admits a new connection from `ip` as pending, with `handle` to push it out later; returns
    /// its ticket and the connections pushed out to make room for it (to be reset).
    pub fn admit(&mut self, ip: IpAddr, now: Instant, handle: T) -> (Ticket, Vec<Evicted<T>>) {
        let source = Source::of(ip);
        let known = self.is_known(source, now);
        let mut evicted = Vec::new();
        let limit = if known {
            self.config.per_known_source
        } else {
            self.config.per_source
        }
        .max(1);
        while self.per_source.get(&source).map_or(0, VecDeque::len) >= limit {
            match self
                .per_source
                .get(&source)
                .and_then(|q| q.front().copied())
            {
                Some(id) => evicted.extend(self.remove(id, Eviction::SourceFull)),
                None => break,
            }
        }
        while self.pending.len() >= self.config.max_pending.max(1) {
            let id = self.oldest(|p| !p.known).or_else(|| self.oldest(|_| true));
            match id {
                Some(id) => evicted.extend(self.remove(id, Eviction::BudgetFull)),
                None => break,
            }
        }
        let under_pressure = self.pending.len() * 2 > self.config.max_pending;
        let timeout = if under_pressure {
            self.config.timeout_under_pressure.min(self.config.timeout)
        } else {
            self.config.timeout
        };
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(
            id,
            Pending {
                source,
                known,
                handle,
            },
        );
        self.order.push_back(id);
        self.per_source.entry(source).or_default().push_back(id);
        (
            Ticket {
                id,
                deadline: now + timeout,
            },
            evicted,
        )
    }

    /// A pending connection is done with (authenticated, refused, timed out or gone); when it
    /// authenticated its source becomes known. An id already pushed out is ignored.
    pub fn finish(&mut self, id: u64, authenticated: bool, now: Instant) {
        let Some(p) = self.take(id) else {
            return;
        };
        if authenticated {
            self.know(p.source, now);
        }
    }

    /// A connection from `ip` authenticated: its source is known from now on, before the
    /// connection is done with (a key check lingers for its client's FIN while the gateway's
    /// first burst may already be arriving).
    pub fn authenticated(&mut self, ip: IpAddr, now: Instant) {
        self.know(Source::of(ip), now);
    }

    fn know(&mut self, source: Source, now: Instant) {
        self.known.insert(source, now);
        if self.known.len() > 4 * self.config.max_pending.max(1024) {
            let remember = self.config.remember;
            self.known
                .retain(|_, &mut t| now.saturating_duration_since(t) < remember);
        }
    }

    /// The oldest pending connection that `f` selects.
    fn oldest(&mut self, f: impl Fn(&Pending<T>) -> bool) -> Option<u64> {
        while self
            .order
            .front()
            .is_some_and(|id| !self.pending.contains_key(id))
        {
            self.order.pop_front();
        }
        self.order
            .iter()
            .copied()
            .find(|id| self.pending.get(id).is_some_and(&f))
    }

    fn remove(&mut self, id: u64, why: Eviction) -> Option<Evicted<T>> {
        let p = self.take(id)?;
        Some(Evicted {
            handle: p.handle,
            why,
            source: p.source,
        })
    }

    fn take(&mut self, id: u64) -> Option<Pending<T>> {
        let p = self.pending.remove(&id)?;
        if let Some(q) = self.per_source.get_mut(&p.source) {
            q.retain(|&i| i != id);
            if q.is_empty() {
                self.per_source.remove(&p.source);
            }
        }
        if self.order.len() > 2 * self.pending.len() + 64 {
            let pending = &self.pending;
            self.order.retain(|id| pending.contains_key(id));
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AdmissionConfig {
        AdmissionConfig {
            max_pending: 8,
            per_source: 2,
            per_known_source: 6,
            timeout: Duration::from_secs(10),
            timeout_under_pressure: Duration::from_secs(2),
            remember: Duration::from_secs(60),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_sources_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            Source::of(ip("2001:db8:1:2:aaaa::1")),
            Source::of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Source::of(ip("::ffff:192.0.2.1")),
            Source::of(ip("192.0.2.1"))
        );
        assert_eq!(
            Source::of(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn a_source_over_its_limit_loses_its_own_oldest_connection() {
        let mut a = Admission::new(config());
        let t0 = Instant::now();
        let (_, e) = a.admit(ip("192.0.2.1"), t0, 1);
        assert!(e.is_empty());
        let (_, e) = a.admit(ip("192.0.2.1"), t0, 2);
        assert!(e.is_empty());
        a.admit(ip("198.51.100.7"), t0, 100);
        let (_, e) = a.admit(ip("192.0.2.1"), t0, 3);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].handle, e[0].why), (1, Eviction::SourceFull));
        assert_eq!(a.pending(), 3, "two of the source's and the other's");
    }

    /// The attack of issue 12: one host holds thousands of idle connections. It never holds
    /// more than its limit, and a gateway's connection is never pushed out by it.
    #[test]
    fn a_flood_from_strangers_never_pushes_out_a_known_gateways_connection() {
        let mut a = Admission::new(config());
        let t0 = Instant::now();
        let gw = ip("203.0.113.9");
        let (t, _) = a.admit(gw, t0, u32::MAX);
        a.finish(t.id, true, t0);
        assert!(a.is_known(Source::of(gw), t0));
        let (gw_ticket, _) = a.admit(gw, t0, u32::MAX);
        let mut pushed_out = Vec::new();
        // Many attackers, each at its limit, far more than the budget.
        for n in 0..200u32 {
            let attacker = IpAddr::from([10, 0, 0, u8::try_from(n).unwrap()]);
            for k in 0..3 {
                let (_, e) = a.admit(attacker, t0, n * 10 + k);
                pushed_out.extend(e.into_iter().map(|e| e.handle));
            }
            assert!(a.pending() <= 8);
        }
        assert!(!pushed_out.contains(&u32::MAX), "the gateway's stays");
        // It is still pending, and authenticates.
        a.finish(gw_ticket.id, true, t0);
        // And a burst of the known gateway is not cut at the strangers' limit.
        let mut evicted_own = 0;
        for _ in 0..6 {
            let (_, e) = a.admit(gw, t0, u32::MAX);
            evicted_own += e.iter().filter(|e| e.handle == u32::MAX).count();
        }
        assert_eq!(evicted_own, 0);
    }

    #[test]
    fn the_timeout_is_shorter_for_connections_that_arrive_under_pressure() {
        let mut a = Admission::new(config());
        let t0 = Instant::now();
        let mut deadlines = Vec::new();
        for n in 0..8u8 {
            let (t, _) = a.admit(IpAddr::from([10, 0, 0, n]), t0, n);
            deadlines.push(t.deadline - t0);
        }
        assert_eq!(deadlines[0], Duration::from_secs(10));
        assert_eq!(deadlines[4], Duration::from_secs(10), "half full");
        assert_eq!(deadlines[5], Duration::from_secs(2), "over half");
    }

    #[test]
    fn a_source_is_known_from_its_authentication_on_not_from_the_end_of_its_connection() {
        let mut a = Admission::new(config());
        let t0 = Instant::now();
        let (check, _) = a.admit(ip("192.0.2.7"), t0, ());
        // The key check authenticated and still lingers; the gateway's burst comes: more than
        // a stranger's limit (2), within a known source's (6).
        a.authenticated(ip("192.0.2.7"), t0);
        let evicted: usize = (0..4)
            .map(|_| a.admit(ip("192.0.2.7"), t0, ()).1.len())
            .sum();
        assert_eq!(
            evicted, 0,
            "a known source's burst is not cut at the stranger limit"
        );
        a.finish(check.id, true, t0);
        let evicted: usize = (0..3)
            .map(|_| a.admit(ip("198.51.100.9"), t0, ()).1.len())
            .sum();
        assert_eq!(evicted, 1, "a stranger still has its limit of 2");
    }

    #[test]
    fn finished_connections_free_their_room_and_known_sources_are_forgotten() {
        let mut a = Admission::new(config());
        let t0 = Instant::now();
        let s = ip("192.0.2.1");
        let (t1, _) = a.admit(s, t0, 1);
        let (t2, _) = a.admit(s, t0, 2);
        a.finish(t1.id, false, t0);
        a.finish(t1.id, false, t0);
        let (_, e) = a.admit(s, t0, 3);
        assert!(e.is_empty(), "room freed by the first");
        a.finish(t2.id, true, t0);
        assert!(a.is_known(Source::of(s), t0 + Duration::from_secs(59)));
        assert!(!a.is_known(Source::of(s), t0 + Duration::from_secs(60)));
    }

    /// Whatever the order of admissions and finishes, the counts stay consistent and within
    /// the bounds.
    #[test]
    fn random_traffic_keeps_the_bounds() {
        let mut a = Admission::new(config());
        let t0 = Instant::now();
        let mut live: Vec<u64> = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let now = t0 + Duration::from_millis(step);
            if x % 3 == 0 && !live.is_empty() {
                let id = live.swap_remove(usize::try_from(x / 3).unwrap() % live.len());
                a.finish(id, x % 5 == 0, now);
            } else {
                let src = IpAddr::from([10, 0, 0, u8::try_from(x % 13).unwrap()]);
                let (t, e) = a.admit(src, now, t0);
                live.push(t.id);
                drop(e);
            }
            assert!(a.pending() <= 8);
            let total: usize = a.per_source.values().map(VecDeque::len).sum();
            assert_eq!(total, a.pending());
            assert!(a.order.len() <= 2 * a.pending() + 65);
        }
    }
}
