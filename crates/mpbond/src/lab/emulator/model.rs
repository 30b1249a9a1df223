//! One direction of an emulated line as a pure function of packet arrivals: given when a frame
//! arrived and how long it is, decide whether it is dropped or when it leaves the line.
//!
//! The model is a single serialising server with a tail-drop queue, followed by a propagation
//! delay. It keeps no packets: the link's whole state is the time it becomes idle
//! (`busy_until`), so a queue of *n* packets costs nothing to model, and the queue length at an
//! arrival is simply `busy_until - now` expressed at the line's rate.
//!
//! ```text
//! arrival ─▶ [tail-drop queue] ─▶ serialiser (rate) ─▶ wire: loss, delay ± jitter ─▶ delivery
//! ```
//!
//! Time is nanoseconds of `CLOCK_MONOTONIC` passed in by the caller, which is what makes the model
//! testable without a clock (and the same code runs in the emulator's real-time loop).
//!
//! Lines that share a bottleneck (`share=LINE`) share that state: their models, each run by its
//! own line's thread, take turns on one [`Serialiser`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::lab::spec::DirectionSpec;

/// Why the model refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Random loss on the wire.
    Loss,
    /// The queue in front of the serialiser was full (tail drop).
    QueueFull,
}

/// What happens to an arriving frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver at this time (ns).
    Deliver(u64),
    /// Drop it.
    Drop(DropReason),
}

/// The serialiser of one direction of a bottleneck that several lines share: the time it
/// becomes idle (ns). Lines' worker threads claim time on it without a lock.
#[derive(Debug, Default)]
pub struct Serialiser(AtomicU64);

/// The state of one direction of a line.
#[derive(Debug, Clone)]
pub struct LinkModel {
    rate_bps: u64,
    delay_ns: u64,
    jitter_ns: u64,
    queue_ns: u64,
    reorder: bool,
    /// Loss probability scaled to `u64`: a frame is lost when a random `u64` is below it.
    loss_threshold: u64,
    loss_always: bool,
    /// When the serialiser finishes the last accepted frame.
    busy_until: u64,
    /// The serialiser shared with other lines, used instead of `busy_until` when present.
    shared: Option<Arc<Serialiser>>,
    /// Latest delivery time handed out, to keep order when reordering is off.
    last_delivery: u64,
    rng: Xoshiro256PlusPlus,
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl LinkModel {
    /// A model with `params`, its random decisions drawn from `seed`.
    #[must_use]
    pub fn new(params: &DirectionSpec, seed: u64) -> Self {
        let mut m = LinkModel {
            rate_bps: 0,
            delay_ns: 0,
            jitter_ns: 0,
            queue_ns: 0,
            reorder: false,
            loss_threshold: 0,
            loss_always: false,
            busy_until: 0,
            shared: None,
            last_delivery: 0,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        };
        m.set_params(params);
        m
    }

    /// Makes this model queue its frames on `serialiser`, which other lines' models share. Their
    /// rates and queues are the same (the lab's spec checks it).
    #[must_use]
    pub fn sharing(mut self, serialiser: Option<Arc<Serialiser>>) -> Self {
        self.shared = serialiser;
        self
    }

    /// Changes the settings. Frames already accepted keep their delivery times; with reordering
    /// off, a shorter delay never lets a new frame overtake them.
    pub fn set_params(&mut self, params: &DirectionSpec) {
        self.rate_bps = params.rate.bps();
        self.delay_ns = nanos(params.delay);
        self.jitter_ns = nanos(params.jitter).min(self.delay_ns);
        self.queue_ns = nanos(params.queue);
        self.reorder = params.reorder;
        let p = (params.loss / 100.0).clamp(0.0, 1.0);
        self.loss_always = p >= 1.0;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "p is in [0, 1): the product is in [0, 2^64) and the cast saturates"
        )]
        let threshold = (p * 18_446_744_073_709_551_616.0) as u64;
        self.loss_threshold = threshold;
    }

    /// Serialisation time of a `len`-byte frame, ns.
    fn transmit_ns(&self, len: usize) -> u64 {
        if self.rate_bps == 0 {
            return 0;
        }
        let bits = (len as u128) * 8;
        u64::try_from(bits * 1_000_000_000 / u128::from(self.rate_bps)).unwrap_or(u64::MAX)
    }

    /// Queueing delay (ns) that a frame arriving at `now` would wait before its serialisation
    /// starts: the queue's length in time.
    #[must_use]
    pub fn backlog_ns(&self, now: u64) -> u64 {
        let busy_until = match &self.shared {
            Some(s) => s.0.load(Ordering::Acquire),
            None => self.busy_until,
        };
        busy_until.saturating_sub(now)
    }

    /// Queues a `len`-byte frame arriving at `now` on the serialiser: when it has been sent, or
    /// `None` when the queue is full.
    fn serialise(&mut self, now: u64, len: usize) -> Option<u64> {
        let tx = self.transmit_ns(len);
        let Some(shared) = &self.shared else {
            if self.backlog_ns(now) > self.queue_ns {
                return None;
            }
            self.busy_until = self.busy_until.max(now).saturating_add(tx);
            return Some(self.busy_until);
        };
        let mut busy_until = shared.0.load(Ordering::Acquire);
        loop {
            if busy_until.saturating_sub(now) > self.queue_ns {
                return None;
            }
            let end = busy_until.max(now).saturating_add(tx);
            match shared.0.compare_exchange_weak(
                busy_until,
                end,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(end),
                Err(current) => busy_until = current,
            }
        }
    }

    /// Decides the fate of a `len`-byte frame arriving at `now`.
    ///
    /// A frame is accepted when the queue holds at most `queue` worth of data at its arrival.
    /// Loss is applied on the wire, after serialisation: a lost frame used the line's capacity,
    /// as on a radio link.
    pub fn on_arrival(&mut self, now: u64, len: usize) -> Verdict {
        let finish = if self.rate_bps == 0 {
            now
        } else {
            match self.serialise(now, len) {
                Some(t) => t,
                None => return Verdict::Drop(DropReason::QueueFull),
            }
        };
        if self.loss_always
            || (self.loss_threshold > 0 && self.rng.next_u64() < self.loss_threshold)
        {
            return Verdict::Drop(DropReason::Loss);
        }
        let mut at = finish.saturating_add(self.delay_ns);
        if self.jitter_ns > 0 {
            // Uniform in [-jitter, +jitter]; jitter ≤ delay so `at` stays after `finish`.
            let span = 2 * self.jitter_ns + 1;
            let offset = self.rng.next_u64() % span;
            at = at - self.jitter_ns + offset;
        }
        if !self.reorder {
            at = at.max(self.last_delivery);
        }
        self.last_delivery = self.last_delivery.max(at);
        Verdict::Deliver(at)
    }

    /// Forgets every frame in the queue and on the wire (the line went down at `now`). A
    /// shared serialiser keeps its queue: the other lines' frames are in it too.
    pub fn flush(&mut self, now: u64) {
        self.busy_until = self.busy_until.min(now);
        self.last_delivery = self.last_delivery.min(now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::units::Rate;

    const MS: u64 = 1_000_000;

    fn params(rate: &str, delay_ms: u64) -> DirectionSpec {
        DirectionSpec {
            rate: rate.parse().unwrap(),
            delay: Duration::from_millis(delay_ms),
            jitter: Duration::ZERO,
            loss: 0.0,
            queue: DirectionSpec::default_queue(Duration::from_millis(delay_ms)),
            reorder: false,
        }
    }

    fn deliver(v: Verdict) -> u64 {
        match v {
            Verdict::Deliver(at) => at,
            Verdict::Drop(r) => panic!("dropped: {r:?}"),
        }
    }

    #[test]
    fn idle_line_adds_serialisation_then_delay() {
        let mut m = LinkModel::new(&params("20mbit", 10), 1);
        // 1514 B at 20 Mbit/s = 605.6 µs.
        assert_eq!(deliver(m.on_arrival(1000, 1514)), 1000 + 605_600 + 10 * MS);
    }

    #[test]
    fn back_to_back_frames_leave_at_the_line_rate() {
        let mut m = LinkModel::new(&params("10mbit", 5), 1);
        let tx = 1_211_200; // 1514 B at 10 Mbit/s
        let times: Vec<u64> = (0..10).map(|_| deliver(m.on_arrival(0, 1514))).collect();
        for (k, at) in times.iter().enumerate() {
            assert_eq!(*at, (k as u64 + 1) * tx + 5 * MS);
        }
    }

    #[test]
    fn lines_sharing_a_serialiser_split_its_rate_and_its_queue() {
        let shared = Arc::new(Serialiser::default());
        let mut a = LinkModel::new(&params("10mbit", 5), 1).sharing(Some(Arc::clone(&shared)));
        let mut b = LinkModel::new(&params("10mbit", 20), 2).sharing(Some(Arc::clone(&shared)));
        let tx = 1_211_200; // 1514 B at 10 Mbit/s
        // Frames of both lines arriving together leave one after another, each after its own
        // line's delay: together they get one line's rate.
        let mut finished = Vec::new();
        for k in 0..10u64 {
            let (m, delay) = if k % 2 == 0 {
                (&mut a, 5)
            } else {
                (&mut b, 20)
            };
            finished.push(deliver(m.on_arrival(0, 1514)) - delay * MS);
        }
        let expected: Vec<u64> = (1..=10).map(|k| k * tx).collect();
        assert_eq!(finished, expected);
        // One queue: b sees the backlog a's frames made, and so does a.
        assert_eq!(b.backlog_ns(0), 10 * tx);
        assert_eq!(a.backlog_ns(0), 10 * tx);
        // Past the shared queue's size (50 ms), either line's frame is dropped.
        while a.backlog_ns(0) <= 50 * MS {
            deliver(a.on_arrival(0, 1514));
        }
        assert_eq!(b.on_arrival(0, 1514), Verdict::Drop(DropReason::QueueFull));
        // A line of its own is not slowed by them.
        let mut c = LinkModel::new(&params("10mbit", 5), 3);
        assert_eq!(deliver(c.on_arrival(0, 1514)), tx + 5 * MS);
    }

    #[test]
    fn queue_tail_drops_beyond_its_size() {
        let mut p = params("1mbit", 0);
        p.queue = Duration::from_millis(100);
        let mut m = LinkModel::new(&p, 1);
        // 1000-byte frames take 8 ms each: frame k arrives to a backlog of 8k ms, so frames
        // 0..=12 are accepted (backlog 0, 8, ..., 96 ms ≤ 100 ms) and frame 13 (104 ms) drops.
        let verdicts: Vec<Verdict> = (0..20).map(|_| m.on_arrival(0, 1000)).collect();
        let accepted = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Deliver(_)))
            .count();
        assert_eq!(accepted, 13);
        assert_eq!(verdicts[13], Verdict::Drop(DropReason::QueueFull));
        // Once drained, the line accepts again.
        assert!(matches!(m.on_arrival(200 * MS, 1000), Verdict::Deliver(_)));
    }

    #[test]
    fn unlimited_rate_never_queues() {
        let mut p = params("1mbit", 3);
        p.rate = Rate::UNLIMITED;
        let mut m = LinkModel::new(&p, 1);
        for _ in 0..10_000 {
            assert_eq!(deliver(m.on_arrival(7, 1514)), 7 + 3 * MS);
        }
    }

    #[test]
    fn random_loss_matches_its_rate_and_its_seed() {
        let mut p = params("unlimited", 0);
        p.loss = 5.0;
        let count = |seed| {
            let mut m = LinkModel::new(&p, seed);
            (0..100_000)
                .filter(|_| m.on_arrival(0, 100) == Verdict::Drop(DropReason::Loss))
                .count()
        };
        let n = count(42);
        // Binomial(100000, 0.05): mean 5000, sd 68.9; 5 sd either side.
        assert!((4655..=5345).contains(&n), "{n} losses");
        assert_eq!(count(42), n, "same seed, same decisions");
        assert_ne!(count(43), n, "another seed, other decisions");
        p.loss = 100.0;
        let mut m = LinkModel::new(&p, 1);
        assert!((0..1000).all(|_| m.on_arrival(0, 100) == Verdict::Drop(DropReason::Loss)));
    }

    #[test]
    fn jitter_stays_in_bounds_and_keeps_order_unless_asked() {
        let mut p = params("unlimited", 20);
        p.jitter = Duration::from_millis(5);
        let mut m = LinkModel::new(&p, 7);
        let mut last = 0;
        let mut spread = (u64::MAX, 0);
        for k in 0..10_000u64 {
            let now = k * 100_000; // one frame every 0.1 ms: jitter would reorder them
            let at = deliver(m.on_arrival(now, 100));
            assert!(at >= last, "reordered without `reorder`");
            assert!(at >= now + 15 * MS, "earlier than delay - jitter");
            // Order-keeping may hold a frame back, but only behind an earlier one.
            assert!(
                at <= (now + 25 * MS).max(last),
                "later than delay + jitter and not held back"
            );
            last = at;
            spread = (spread.0.min(at - now), spread.1.max(at - now));
        }
        assert!(
            spread.1 - spread.0 > 5 * MS,
            "jitter had no effect: {spread:?}"
        );

        p.reorder = true;
        let mut m = LinkModel::new(&p, 7);
        let times: Vec<u64> = (0..1000u64)
            .map(|k| deliver(m.on_arrival(k * 100_000, 100)))
            .collect();
        assert!(
            times.windows(2).any(|w| w[1] < w[0]),
            "reorder asked but never happened"
        );
        for (k, at) in times.iter().enumerate() {
            let now = k as u64 * 100_000;
            assert!(*at >= now + 15 * MS && *at <= now + 25 * MS);
        }
    }

    #[test]
    fn new_settings_apply_to_new_frames_without_reordering() {
        let mut m = LinkModel::new(&params("unlimited", 50), 1);
        let first = deliver(m.on_arrival(0, 100));
        m.set_params(&params("unlimited", 10));
        let second = deliver(m.on_arrival(MS, 100));
        assert_eq!(first, 50 * MS);
        assert_eq!(second, 50 * MS, "held back behind the earlier frame");
        let third = deliver(m.on_arrival(100 * MS, 100));
        assert_eq!(third, 110 * MS);
    }

    #[test]
    fn flush_empties_the_queue() {
        let mut m = LinkModel::new(&params("1mbit", 0), 1);
        for _ in 0..5 {
            m.on_arrival(0, 1000);
        }
        assert_eq!(m.backlog_ns(0), 40 * MS);
        m.flush(MS);
        assert_eq!(m.backlog_ns(MS), 0);
        assert_eq!(deliver(m.on_arrival(MS, 1000)), 9 * MS);
    }
}
