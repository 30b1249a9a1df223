//! TCP Fast Open (RFC 7413): data in the SYN, once the client holds a cookie from the server.
//!
//! A server answers a SYN that asks for a cookie (an empty Fast Open option) with a cookie in
//! its SYN-ACK: a keyed hash of the client's address ([`make_cookie`], §4.1.2), so that it
//! keeps no state per client. A client caches the cookie per pair of its own address and the
//! server's ([`CookieCache`], §4.1.3: a cookie is good for the client address it was given to,
//! so a multihomed client keeps one per address) with the server's MSS, and the SYN of its
//! next connection from that address carries the
//! cookie and as much of the data already written as one segment holds (§4.1.3). The server
//! takes that data when the cookie checks (§4.2.2): its SYN-ACK acknowledges it, and the
//! application reads it at once. Otherwise the SYN-ACK acknowledges the SYN only, and the
//! client sends the data again after the handshake (§4.2.2), as on any connection.
//!
//! Data in a SYN can be replayed (a duplicated SYN reaches a server that lost its state,
//! §6.1): only applications that tolerate it ask for Fast Open.

use core::net::IpAddr;
use core::time::Duration;
use std::collections::HashMap;
use std::time::Instant;

use arrayvec::ArrayVec;

use super::isn::Secret;
use crate::crypto::hmac_sha256_raw;

/// A Fast Open cookie: 4 to 16 bytes, an even number (§4.1.1).
pub type Cookie = ArrayVec<u8, 16>;

/// The length of the cookies this engine gives out (Linux's too).
pub const COOKIE_LEN: usize = 8;

/// The cookie a server gives to client `client` (§4.1.2: a MAC of the client's address
/// under a server secret; Linux uses AES over the same).
#[must_use]
pub fn make_cookie(secret: &Secret, client: IpAddr) -> Cookie {
    let mut msg = ArrayVec::<u8, 20>::new();
    let _ = msg.try_extend_from_slice(b"tfo:");
    match client {
        IpAddr::V4(v4) => {
            let _ = msg.try_extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            let _ = msg.try_extend_from_slice(&v6.octets()[..16]);
        }
    }
    let h = hmac_sha256_raw(secret, &msg);
    h[..COOKIE_LEN].iter().copied().collect()
}

/// Whether `cookie`, from client `client`'s SYN, is the one this server gave it (compared in
/// constant time).
#[must_use]
pub fn check_cookie(secret: &Secret, client: IpAddr, cookie: &[u8]) -> bool {
    let good = make_cookie(secret, client);
    good.len() == cookie.len() && good.iter().zip(cookie).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
}

/// What a client remembers of a server (§4.1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedCookie {
    /// The cookie.
    pub cookie: Cookie,
    /// The MSS the server announced, so that the SYN's data fits one segment.
    pub mss: u16,
}

/// A client address and a server address: what a cookie is good for (RFC 7413 §4.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pair {
    /// The client's address the SYN leaves from.
    pub client: IpAddr,
    /// The server's address.
    pub server: IpAddr,
}

/// Cookies of the servers a client talked to, per client address (a multihomed client, such
/// as one with a line per address, holds one per line: RFC 7413 §4.1.3), bounded; and the
/// pairs on which SYNs with data got lost, held back from Fast Open for a while (§4.1.3.1: a
/// middlebox on that path may drop such SYNs).
#[derive(Debug, Default)]
pub struct CookieCache {
    entries: HashMap<Pair, CachedCookie>,
    held_back: HashMap<Pair, HeldBack>,
}

/// A server whose SYNs with data got lost.
#[derive(Debug, Clone, Copy)]
struct HeldBack {
    /// Losses in a row (the hold doubles with each).
    losses: u32,
    /// No Fast Open to it before this.
    until: Instant,
}

/// How long a first lost SYN with data holds a server back from Fast Open; it doubles with
/// each loss in a row, up to [`HOLD_BACK_MAX`]. One lost SYN on a lossy line costs a minute of
/// Fast Open; a middlebox that drops every SYN with data, one connection an hour.
pub const HOLD_BACK_FIRST: Duration = Duration::from_secs(60);
/// The longest hold.
pub const HOLD_BACK_MAX: Duration = Duration::from_secs(3600);

/// Pairs a cache remembers at most (an arbitrary one is forgotten past it).
const CACHE_MAX: usize = 4096;

impl CookieCache {
    /// The cookie the server of `pair` gave its client, if one is held.
    #[must_use]
    pub fn get(&self, pair: Pair) -> Option<&CachedCookie> {
        self.entries.get(&pair)
    }

    /// Remembers a cookie the server of `pair` gave its client.
    pub fn insert(&mut self, pair: Pair, c: CachedCookie) {
        if self.entries.len() >= CACHE_MAX && !self.entries.contains_key(&pair) {
            if let Some(k) = self.entries.keys().next().copied() {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(pair, c);
    }

    /// Forgets `pair`'s cookie (it was refused).
    pub fn remove(&mut self, pair: Pair) {
        self.entries.remove(&pair);
    }

    /// A SYN with data on `pair` got no answer at `now`: no Fast Open on it for a while.
    pub fn syn_lost(&mut self, pair: Pair, now: Instant) {
        if self.held_back.len() >= CACHE_MAX && !self.held_back.contains_key(&pair) {
            if let Some(k) = self.held_back.keys().next().copied() {
                self.held_back.remove(&k);
            }
        }
        let losses = self.held_back.get(&pair).map_or(0, |h| h.losses) + 1;
        let hold = HOLD_BACK_FIRST
            .saturating_mul(1 << (losses - 1).min(10))
            .min(HOLD_BACK_MAX);
        self.held_back.insert(
            pair,
            HeldBack {
                losses,
                until: now + hold,
            },
        );
    }

    /// A SYN with data on `pair` was answered: its losses are forgiven.
    pub fn syn_answered(&mut self, pair: Pair) {
        self.held_back.remove(&pair);
    }

    /// Whether a connection on `pair` may use Fast Open at `now` (no SYN with data on it got
    /// lost lately).
    #[must_use]
    pub fn may_open(&self, pair: Pair, now: Instant) -> bool {
        self.held_back.get(&pair).is_none_or(|h| now >= h.until)
    }

    /// How many cookies it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A client connection's Fast Open, from its first SYN to the SYN-ACK.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientOpen {
    /// The cookie to present, with the server's MSS; `None`: ask for one.
    pub cached: Option<CachedCookie>,
    /// Data bytes the first SYN carried (0 until it went, or when it carried none).
    pub syn_data: u64,
    /// The first SYN went (retransmissions carry neither the option nor data, §4.1.3.1).
    pub sent: bool,
    /// The SYN went again: its SYN-ACK says nothing of the cookie.
    pub retried: bool,
}

/// What a client learned from the SYN-ACK, for its endpoint's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieNews {
    /// The server gave this cookie (and announced this MSS) to a SYN that carried no data: a
    /// cookie request, or the retry of a SYN with data.
    Got(CachedCookie),
    /// The server took the SYN's data, perhaps with a fresher cookie (Linux sends its current
    /// one when the client's checked against the previous key).
    Taken(Option<CachedCookie>),
    /// The server did not take the SYN's data (it goes again after the handshake): with a
    /// cookie, use that one next time; without, ask again.
    Refused(Option<CachedCookie>),
    /// The SYN with data got no answer.
    SynLost,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_checks_for_its_client_only() {
        let secret = [7; 32];
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c = make_cookie(&secret, a);
        assert_eq!(c.len(), COOKIE_LEN);
        assert!(check_cookie(&secret, a, &c));
        assert!(!check_cookie(&secret, b, &c));
        assert!(!check_cookie(&[8; 32], a, &c), "another secret");
        assert!(!check_cookie(&secret, a, &c[..4]), "a prefix");
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(check_cookie(&secret, v6, &make_cookie(&secret, v6)));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut cache = CookieCache::default();
        let max = u32::try_from(CACHE_MAX).unwrap();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let pair = |i: u32| Pair {
            client,
            server: IpAddr::from(i.to_be_bytes()),
        };
        for i in 0..max + 10 {
            cache.insert(
                pair(i),
                CachedCookie {
                    cookie: Cookie::new(),
                    mss: 1460,
                },
            );
        }
        assert_eq!(cache.len(), CACHE_MAX);
        let last = pair(max + 9);
        assert!(cache.get(last).is_some(), "the newest is kept");
        cache.remove(last);
        assert!(cache.get(last).is_none());
    }

    #[test]
    fn lost_syns_with_data_hold_a_server_back_longer_each_time_until_one_is_answered() {
        let mut cache = CookieCache::default();
        let s = Pair {
            client: "192.0.2.1".parse().unwrap(),
            server: "198.51.100.1".parse().unwrap(),
        };
        let other_line = Pair {
            client: "203.0.113.1".parse().unwrap(),
            ..s
        };
        let t0 = Instant::now();
        assert!(cache.may_open(s, t0));
        cache.syn_lost(s, t0);
        assert!(!cache.may_open(s, t0 + Duration::from_secs(59)));
        assert!(
            cache.may_open(other_line, t0),
            "the loss was on one path: another client address still may"
        );
        assert!(cache.may_open(s, t0 + HOLD_BACK_FIRST));
        // A second loss in a row: twice as long.
        let t1 = t0 + HOLD_BACK_FIRST;
        cache.syn_lost(s, t1);
        assert!(!cache.may_open(s, t1 + HOLD_BACK_FIRST));
        assert!(cache.may_open(s, t1 + 2 * HOLD_BACK_FIRST));
        // Many: at most an hour.
        for _ in 0..20 {
            cache.syn_lost(s, t1);
        }
        assert!(cache.may_open(s, t1 + HOLD_BACK_MAX));
        cache.syn_answered(s);
        assert!(cache.may_open(s, t1));
        cache.syn_lost(s, t1);
        assert!(
            cache.may_open(s, t1 + HOLD_BACK_FIRST),
            "forgiven: back to a minute"
        );
    }
}
