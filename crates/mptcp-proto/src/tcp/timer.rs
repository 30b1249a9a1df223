//! A connection's timers: a fixed table indexed by [`Timer`], the next deadline is the
//! smallest (as in quinn-proto). No wheel, no callbacks.

use std::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Retransmission timeout (RFC 6298), also for SYN and FIN.
    Retransmit = 0,
    /// A delayed acknowledgment is due (RFC 9293 §3.8.6.3).
    DelayedAck = 1,
    /// Zero-window probe (RFC 9293 §3.8.6.1).
    Persist = 2,
    /// Keep-alive probe or give-up (RFC 9293 §3.8.4).
    Keepalive = 3,
    /// End of TIME-WAIT (2 MSL) or of a FIN-WAIT-2 that waits too long.
    Close = 4,
    /// The pacer lets the next segment go.
    Pacing = 5,
    /// A segment RACK holds for the reordering window is due to be judged (RFC 8985 §6.3).
    Reorder = 6,
    /// Tail loss probe (RFC 8985 §7).
    TailProbe = 7,
    /// The peer has been silent longer than its ACK clock explains, with data outstanding
    /// ([`super::Connection::watch_silence`]).
    Silence = 8,
}

const COUNT: usize = 9;

impl Timer {
    const ALL: [Timer; COUNT] = [
        Timer::Retransmit,
        Timer::DelayedAck,
        Timer::Persist,
        Timer::Keepalive,
        Timer::Close,
        Timer::Pacing,
        Timer::Reorder,
        Timer::TailProbe,
        Timer::Silence,
    ];
}

/// One optional deadline per [`Timer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TimerTable {
    at: [Option<Instant>; COUNT],
}

impl TimerTable {
    /// Sets (or moves) a timer.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer as usize] = Some(at);
    }

    /// Stops a timer.
    pub fn stop(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    /// When a timer fires, if it is set.
    #[must_use]
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer as usize]
    }

    /// Whether a timer is set.
    #[must_use]
    pub fn is_set(&self, timer: Timer) -> bool {
        self.at[timer as usize].is_some()
    }

    /// The earliest deadline.
    #[must_use]
    pub fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Stops and returns a timer that is due at `now`, earliest first.
    pub fn expire(&mut self, now: Instant) -> Option<Timer> {
        let t = Timer::ALL
            .into_iter()
            .filter(|&t| self.at[t as usize].is_some_and(|at| at <= now))
            .min_by_key(|&t| self.at[t as usize])?;
        self.stop(t);
        Some(t)
    }

    /// Stops every timer.
    pub fn stop_all(&mut self) {
        self.at = [None; COUNT];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn the_next_deadline_is_the_earliest_and_expiry_goes_in_order() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Retransmit, t0 + Duration::from_millis(300));
        t.set(Timer::DelayedAck, t0 + Duration::from_millis(40));
        t.set(Timer::Keepalive, t0 + Duration::from_secs(7200));
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(40)));
        assert_eq!(t.expire(t0), None);
        let now = t0 + Duration::from_millis(500);
        assert_eq!(t.expire(now), Some(Timer::DelayedAck));
        assert_eq!(t.expire(now), Some(Timer::Retransmit));
        assert_eq!(t.expire(now), None);
        assert!(t.is_set(Timer::Keepalive));
        t.stop_all();
        assert_eq!(t.next(), None);
    }
}
