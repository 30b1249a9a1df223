//! The round-trip times of recent connections, by pair of addresses (RFC 9040 §4.2, temporal
//! sharing of the TCP control block).
//!
//! A new connection knows nothing of its path, so RFC 6298 times its SYN out after a whole
//! second. Between two addresses that other connections used a moment ago the path is known:
//! the endpoint notes each connection's `SRTT` and `RTTVAR` when its handshake completes and
//! when it ends, and seeds the next connection's first timeout with them
//! ([`RttEstimator::seed`](super::rtt::RttEstimator::seed)). A burst of connections into full
//! queues, where some SYNs are lost, then waits a few round trips for those, not a second.
//!
//! Keyed by local and remote address (not port): a gateway's lines each have their own
//! address and their own round-trip time. Bounded: past [`RttCache::CAPACITY`] pairs, one
//! pair is forgotten for each new one.

use core::net::IpAddr;
use core::time::Duration;

use crate::keyed_map::{KeyedMap, keyed_map};
use crate::tcp::isn::Secret;

/// What the latest connection between two addresses measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRtt {
    /// Its smoothed round-trip time.
    pub srtt: Duration,
    /// Its RTT variation.
    pub rttvar: Duration,
}

/// The latest [`PathRtt`] of each pair of addresses.
#[derive(Debug)]
pub struct RttCache {
    paths: KeyedMap<(IpAddr, IpAddr), PathRtt>,
}

impl RttCache {
    /// The most pairs remembered.
    pub const CAPACITY: usize = 4096;

    pub(crate) fn new(secret: &Secret) -> Self {
        Self {
            paths: keyed_map(secret, "endpoint path round-trip times"),
        }
    }

    /// Remembers what a connection from `local` to `remote` measured.
    pub(crate) fn note(&mut self, local: IpAddr, remote: IpAddr, rtt: PathRtt) {
        if self.paths.len() >= Self::CAPACITY && !self.paths.contains_key(&(local, remote)) {
            if let Some(&old) = self.paths.keys().next() {
                self.paths.remove(&old);
            }
        }
        self.paths.insert((local, remote), rtt);
    }

    /// What the latest connection from `local` to `remote` measured, if any.
    #[must_use]
    pub fn get(&self, local: IpAddr, remote: IpAddr) -> Option<PathRtt> {
        self.paths.get(&(local, remote)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtt(ms: u64) -> PathRtt {
        PathRtt {
            srtt: Duration::from_millis(ms),
            rttvar: Duration::from_millis(ms / 2),
        }
    }

    #[test]
    fn the_latest_figure_per_pair_and_a_bounded_size() {
        let secret: Secret = [7; 32];
        let mut c = RttCache::new(&secret);
        let (a, b, l) = (
            IpAddr::from([10, 0, 0, 1]),
            IpAddr::from([10, 0, 1, 1]),
            IpAddr::from([198, 51, 100, 1]),
        );
        assert_eq!(c.get(a, l), None);
        c.note(a, l, rtt(20));
        c.note(b, l, rtt(80));
        c.note(a, l, rtt(30));
        assert_eq!(c.get(a, l), Some(rtt(30)), "the latest");
        assert_eq!(c.get(b, l), Some(rtt(80)), "each line its own");
        assert_eq!(c.get(l, a), None, "the pair is ordered");
        for i in 0..2 * RttCache::CAPACITY {
            let ip = IpAddr::from(u32::try_from(i).unwrap().to_be_bytes());
            c.note(ip, l, rtt(10));
        }
        assert_eq!(c.paths.len(), RttCache::CAPACITY);
    }
}
