//! Which subflow carries a connection's next bytes.
//!
//! RFC 8684 leaves the choice to the implementation (§3.3.8 asks only that backup subflows carry
//! data when no regular one can). The connection builds the [`Candidate`]s — the subflows that
//! may carry data now, regular ones or, when none works, the backups — and asks its
//! [`Scheduler`]; reinjections (§3.3.6) always go to the lowest-RTT subflow other than the one
//! that lost them, whatever the scheduler. With `blest` and `ecf` the connection also sends
//! again, once, the bytes the peer waits for next when only slower subflows hold them and a
//! faster one has room it would not use otherwise (nothing new to send, or the window is full):
//! the tail of a transfer no longer waits for a slow line's queue ("opportunistic
//! retransmission", Raiciu et al., NSDI 2012).
//!
//! - [`min_rtt`]: the lowest smoothed RTT with room (Linux's default).
//! - [`blest`]: min-RTT, but a slower subflow is left alone when the fast one would send more
//!   in the meantime than the peer's window has room for (head-of-line blocking, Ferlin et al.,
//!   IFIP Networking 2016).
//! - [`ecf`]: min-RTT, but it waits for the fast subflow when that finishes what is queued
//!   sooner than the slow one would deliver its share (Lim et al., `CoNEXT` 2017).
//! - [`redundant`]: every byte on every working subflow, for latency-critical traffic.
//! - [`round_robin`]: each subflow in turn (for tests).

pub mod blest;
pub mod ecf;
pub mod min_rtt;
pub mod redundant;
pub mod round_robin;

use core::fmt;
use core::str::FromStr;
use core::time::Duration;

/// One subflow that may carry data now, as a scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The subflow's index in the connection.
    pub index: usize,
    /// Smoothed RTT (100 ms before the first sample).
    pub srtt: Duration,
    /// RTT variation.
    pub rttvar: Duration,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Payload bytes of a full segment.
    pub mss: u64,
    /// Bytes handed to the subflow and not yet delivered on it (queued or in flight; not what
    /// the peer SACKed).
    pub queued: u64,
    /// Bytes it takes now without holding more than its window and two segments (0: full).
    pub room: u64,
    /// Payload bytes the peer acknowledged on it so far (0: it never carried data, so its
    /// RTT comes from its handshake and says nothing of how long a window takes to cross it).
    pub acked: u64,
}

/// What the connection knows beyond its subflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Context {
    /// New bytes waiting at the connection level to be handed to a subflow.
    pub unsent: u64,
    /// The peer's connection-level receive window, bytes from its `DATA_ACK` (§3.3.4).
    pub window: u64,
}

/// Picks the subflow for a connection's next bytes.
pub trait Scheduler: fmt::Debug + Send {
    /// The subflow (an index into the connection's subflows) for the next new bytes and at most
    /// how many it gets (no more than its room), or `None` to send nothing now: no candidate
    /// has room, or the scheduler waits for a better subflow to have some.
    fn pick(&mut self, candidates: &[Candidate], ctx: &Context) -> Option<(usize, u64)>;

    /// Whether what one subflow got is to be sent on every other working subflow too.
    fn redundant(&self) -> bool {
        false
    }

    /// Whether bytes a slow subflow holds up are sent again on a faster one that would
    /// otherwise stay idle (the connection's head-of-line reinjection).
    fn reinjects_head_of_line(&self) -> bool {
        false
    }
}

/// The schedulers, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SchedulerKind {
    /// [`min_rtt::MinRtt`].
    #[default]
    MinRtt,
    /// [`blest::Blest`].
    Blest,
    /// [`ecf::Ecf`].
    Ecf,
    /// [`redundant::Redundant`].
    Redundant,
    /// [`round_robin::RoundRobin`].
    RoundRobin,
}

impl SchedulerKind {
    /// Every scheduler, the default first.
    pub const ALL: [SchedulerKind; 5] = [
        SchedulerKind::MinRtt,
        SchedulerKind::Blest,
        SchedulerKind::Ecf,
        SchedulerKind::Redundant,
        SchedulerKind::RoundRobin,
    ];

    /// Its name on the command line and in the config file.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::MinRtt => "min-rtt",
            SchedulerKind::Blest => "blest",
            SchedulerKind::Ecf => "ecf",
            SchedulerKind::Redundant => "redundant",
            SchedulerKind::RoundRobin => "round-robin",
        }
    }

    /// A fresh scheduler of this kind for one connection.
    #[must_use]
    pub fn build(self) -> Box<dyn Scheduler> {
        match self {
            SchedulerKind::MinRtt => Box::new(min_rtt::MinRtt),
            SchedulerKind::Blest => Box::new(blest::Blest::default()),
            SchedulerKind::Ecf => Box::new(ecf::Ecf::default()),
            SchedulerKind::Redundant => Box::new(redundant::Redundant),
            SchedulerKind::RoundRobin => Box::new(round_robin::RoundRobin::default()),
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scheduler name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scheduler {0:?} (one of: min-rtt, blest, ecf, redundant, round-robin)")]
pub struct UnknownScheduler(pub String);

impl FromStr for SchedulerKind {
    type Err = UnknownScheduler;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownScheduler(s.to_owned()))
    }
}

/// The candidate with the lowest smoothed RTT among all (`with_room`: among those with room);
/// ties go to the first.
fn fastest(candidates: &[Candidate], with_room: bool) -> Option<&Candidate> {
    candidates
        .iter()
        .filter(|c| !with_room || c.room > 0)
        .min_by_key(|c| c.srtt)
}

/// The fastest candidate when it has room (`Ok`: it and its room); when it has none, the
/// fastest (`Err`: fast, then slow) and the fastest of those with room, for a scheduler to weigh
/// waiting for the first against sending on the second. `None` when no candidate has room.
fn fast_or_slower(
    candidates: &[Candidate],
) -> Option<Result<(usize, u64), (Candidate, Candidate)>> {
    let fast = fastest(candidates, false)?;
    if fast.room > 0 {
        return Some(Ok((fast.index, fast.room)));
    }
    let slow = fastest(candidates, true)?;
    Some(Err((*fast, *slow)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A candidate of `srtt_ms`, window `cwnd` segments of 1400 bytes, `room` bytes free.
    pub(crate) fn cand(index: usize, srtt_ms: u64, cwnd: u64, room: u64) -> Candidate {
        Candidate {
            index,
            srtt: Duration::from_millis(srtt_ms),
            rttvar: Duration::from_millis(srtt_ms / 8),
            cwnd: cwnd * 1400,
            mss: 1400,
            queued: (cwnd * 1400 + 2800).saturating_sub(room),
            room,
            acked: 1 << 20,
        }
    }

    #[test]
    fn names_go_both_ways_and_an_unknown_one_says_what_is_known() {
        for k in SchedulerKind::ALL {
            assert_eq!(k.name().parse::<SchedulerKind>(), Ok(k));
            assert_eq!(k.to_string(), k.name());
        }
        assert_eq!(SchedulerKind::default(), SchedulerKind::MinRtt);
        let e = "fastest".parse::<SchedulerKind>().unwrap_err();
        assert!(e.to_string().contains("min-rtt, blest"), "{e}");
    }

    /// Every scheduler picks only a candidate that has room, never more than its room, and
    /// nothing when none has room.
    #[test]
    fn every_scheduler_keeps_to_the_room_there_is() {
        let ctx = Context {
            unsent: 1 << 20,
            window: 1 << 20,
        };
        for k in SchedulerKind::ALL {
            let mut s = k.build();
            let full = [cand(0, 20, 10, 0), cand(1, 80, 10, 0)];
            assert_eq!(s.pick(&full, &ctx), None, "{k}");
            assert_eq!(s.pick(&[], &ctx), None, "{k}");
            for _ in 0..4 {
                let some = [
                    cand(0, 20, 10, 0),
                    cand(1, 80, 10, 3000),
                    cand(2, 40, 10, 0),
                ];
                if let Some((i, n)) = s.pick(&some, &ctx) {
                    assert_eq!(i, 1, "{k}");
                    assert!(n > 0 && n <= 3000, "{k}: {n}");
                }
            }
        }
    }
}
