//! `auto`: CUBIC until the line shows that its losses are not congestion, then BBR.
//!
//! A tail-drop queue loses packets only when it is full, and a full queue shows in the round
//! trip. So a loss that comes while the smoothed round trip is within a quarter (and 2 ms) of
//! the smallest one of the last ten to twenty seconds was not this flow's queue overflowing:
//! it was the line (a radio link's residual loss, a policer's random drop). On such a line
//! CUBIC's window settles at `1.2 / sqrt(p)` segments whatever the line's rate (17 at 0.5 %
//! loss: 3.3 Mbit/s on a 60 ms line). After [`QUIET_LOSSES`] such losses in a row, with no queue seen in the
//! round trip between them either (the window never reached the line's capacity: the losses
//! hold it down), the connection hands its window to [`Bbr`], which paces at the rate it
//! measures and does not take a random loss for congestion, and keeps it.
//!
//! Only losses in congestion avoidance count. In slow start (also the one after a
//! retransmission timeout) the window is still below what the line holds, so the queue is
//! empty whatever ends it: a burst the window doubled into a shallow buffer on the way (a
//! switch, a modem, a packet socket), or segments sent again after an outage. A line whose
//! loss is random keeps losing once slow start is over. And a clean line that drops a packet
//! now and then without a queue (in the lab, a link emulator short of CPU) does not hold
//! CUBIC's window down: between two such drops the window grows until the queue shows, which
//! starts the count again. Without that, `mpbond bench`'s clean `three-lines` moved 73.9
//! Mbit/s in three runs of four (BBR's figure) instead of CUBIC's 76.1. The idea of telling random loss from
//! congestion by the queue the round trip shows is TCP Veno's (Fu and Liew, IEEE JSAC 2003);
//! Veno only reduced less on such losses, here the line gets a controller built for it.
//!
//! Where the queue is shallower than a quarter of the round trip, or an AQM drops early, a
//! congestion loss looks like a random one and the line gets BBR: it then shares that
//! bottleneck as BBR v1 does (it keeps its share of the rate, it does not yield to loss).
//! A line whose round trip jitters by more than the margin stays on CUBIC.

use core::time::Duration;
use std::time::Instant;

use super::bbr::MIN_RTT_WINDOW;
use super::{Ack, Bbr, Controller, Cubic, Delivery};

/// Losses in a row without a queue before the line is given BBR.
pub const QUIET_LOSSES: u32 = 3;
/// A round trip this close to the smallest one shows no queue: a quarter of it and this.
const QUEUE_SLACK: Duration = Duration::from_millis(2);

/// CUBIC, then BBR on a line whose losses come without a queue.
#[derive(Debug, Clone)]
pub struct Auto {
    cubic: Cubic,
    bbr: Option<Bbr>,
    /// Losses in a row that came without a queue.
    quiet_losses: u32,
    srtt: Option<Duration>,
    /// The smallest round trip of the last one or two [`MIN_RTT_WINDOW`]s: the line's base
    /// round trip may grow (a new route, an LTE cell change), and a queue is judged against
    /// what it is now.
    min_rtt: WindowedMin,
}

/// The smallest of the round trip samples of the current period of [`MIN_RTT_WINDOW`] and of
/// the period before it (a windowed minimum in two buckets): it follows a longer path within
/// two periods, and when a period ends it is the smallest sample of the last one, not
/// whichever sample came first after it, which at a queue that other flows keep full was the
/// top of that queue and made every loss look like one without a queue.
#[derive(Debug, Clone, Copy, Default)]
struct WindowedMin {
    /// The current period's smallest sample and when the period began.
    current: Option<(Duration, Instant)>,
    /// The previous period's smallest sample.
    previous: Option<Duration>,
}

impl WindowedMin {
    fn update(&mut self, now: Instant, rtt: Duration) {
        match &mut self.current {
            Some((m, began)) if now.saturating_duration_since(*began) <= MIN_RTT_WINDOW => {
                *m = (*m).min(rtt);
            }
            _ => {
                self.previous = self.current.map(|(m, _)| m);
                self.current = Some((rtt, now));
            }
        }
    }

    fn get(&self) -> Option<Duration> {
        match (self.current.map(|(m, _)| m), self.previous) {
            (Some(c), Some(p)) => Some(c.min(p)),
            (c, p) => c.or(p),
        }
    }
}

impl Auto {
    /// CUBIC with an initial window of `initial_window` bytes.
    #[must_use]
    pub fn new(initial_window: u64) -> Self {
        Self {
            cubic: Cubic::new(initial_window),
            bbr: None,
            quiet_losses: 0,
            srtt: None,
            min_rtt: WindowedMin::default(),
        }
    }

    /// Whether the line was handed to BBR.
    #[must_use]
    pub fn switched(&self) -> bool {
        self.bbr.is_some()
    }

    fn active(&self) -> &dyn Controller {
        match &self.bbr {
            Some(b) => b,
            None => &self.cubic,
        }
    }

    fn active_mut(&mut self) -> &mut dyn Controller {
        match &mut self.bbr {
            Some(b) => b,
            None => &mut self.cubic,
        }
    }

    /// Whether the round trip shows no queue now.
    fn queue_free(&self) -> bool {
        match (self.srtt, self.min_rtt.get()) {
            (Some(srtt), Some(min)) => srtt <= min + min / 4 + QUEUE_SLACK,
            _ => false,
        }
    }
}

impl Controller for Auto {
    fn window(&self) -> u64 {
        self.active().window()
    }

    fn ssthresh(&self) -> u64 {
        self.active().ssthresh()
    }

    fn in_slow_start(&self) -> bool {
        self.active().in_slow_start()
    }

    fn on_ack(&mut self, ack: &Ack) {
        self.srtt = Some(ack.srtt);
        if let Some(rtt) = ack.rtt_sample {
            self.min_rtt.update(ack.now, rtt);
        }
        if !self.queue_free() {
            // The window reached the line's capacity since the last loss: losses do not hold
            // it down, whatever their cause.
            self.quiet_losses = 0;
        }
        self.active_mut().on_ack(ack);
    }

    fn on_delivery(&mut self, delivery: &Delivery) {
        if let Some(b) = &mut self.bbr {
            b.on_delivery(delivery);
        }
    }

    fn pacing_rate(&self) -> Option<f64> {
        self.active().pacing_rate()
    }

    fn paced(&self) -> bool {
        self.active().paced()
    }

    fn holds_back(&self) -> bool {
        self.active().holds_back()
    }

    fn on_congestion_event(&mut self, now: Instant, in_flight: u64, mss: u64) {
        if self.bbr.is_none() && !self.cubic.in_slow_start() {
            if self.queue_free() {
                self.quiet_losses += 1;
            } else {
                self.quiet_losses = 0;
            }
            if self.quiet_losses >= QUIET_LOSSES {
                self.bbr = Some(Bbr::taking_over(self.cubic.window()));
            }
        }
        self.active_mut().on_congestion_event(now, in_flight, mss);
    }

    fn on_recovery_end(&mut self, now: Instant, mss: u64) {
        self.active_mut().on_recovery_end(now, mss);
    }

    fn on_retransmission_timeout(&mut self, now: Instant, in_flight: u64, mss: u64) {
        self.active_mut()
            .on_retransmission_timeout(now, in_flight, mss);
    }

    fn on_repeated_timeout(&mut self, now: Instant, mss: u64) {
        self.active_mut().on_repeated_timeout(now, mss);
    }

    fn name(&self) -> &'static str {
        "auto"
    }

    fn running(&self) -> &'static str {
        if self.switched() {
            "auto/bbr"
        } else {
            "auto/cubic"
        }
    }

    fn restart(&mut self, initial_window: u64) {
        *self = Self::new(initial_window);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::ack;
    use super::*;

    /// An ACK with a 60 ms round trip sample and a smoothed round trip of `srtt_ms`.
    fn on_rtt(a: &mut Auto, now: Instant, srtt_ms: u64) {
        on_rtts(a, now, 60, srtt_ms);
    }

    fn on_rtts(a: &mut Auto, now: Instant, sample_ms: u64, srtt_ms: u64) {
        let mut k = ack(now, 1000, 10_000);
        k.rtt_sample = Some(Duration::from_millis(sample_ms));
        k.srtt = Duration::from_millis(srtt_ms);
        a.on_ack(&k);
    }

    /// A loss found and repaired at `now`.
    fn lose(a: &mut Auto, now: Instant) {
        a.on_congestion_event(now, a.window(), 1000);
        a.on_recovery_end(now, 1000);
    }

    /// An ACK with a smoothed round trip of `srtt_ms`, then a loss.
    fn loss(a: &mut Auto, now: Instant, srtt_ms: u64) {
        on_rtt(a, now, srtt_ms);
        lose(a, now);
    }

    #[test]
    fn losses_without_a_queue_hand_the_line_to_bbr() {
        let now = Instant::now();
        let mut a = Auto::new(10_000);
        // The loss that ends slow start does not count.
        loss(&mut a, now, 62);
        for k in 0..QUIET_LOSSES {
            assert!(!a.switched(), "after {k} quiet losses");
            loss(&mut a, now, 62);
        }
        assert!(a.switched());
        assert_eq!((a.name(), a.running()), ("auto", "auto/bbr"));
    }

    #[test]
    fn a_loss_with_a_queue_starts_the_count_again() {
        let now = Instant::now();
        let mut a = Auto::new(10_000);
        for _ in 0..10 {
            for srtt in [62, 62, 120] {
                loss(&mut a, now, srtt);
            }
        }
        assert!(!a.switched(), "every third loss came with a full queue");
        // And CUBIC reduced its window for each.
        assert!(a.window() < 10_000);
    }

    #[test]
    fn a_queue_seen_between_losses_starts_the_count_again() {
        let now = Instant::now();
        let mut a = Auto::new(10_000);
        loss(&mut a, now, 62);
        for _ in 0..10 {
            for _ in 0..QUIET_LOSSES - 1 {
                loss(&mut a, now, 62);
            }
            // The window grew until the queue showed, without a loss.
            on_rtt(&mut a, now, 100);
        }
        assert!(!a.switched());
    }

    #[test]
    fn the_smallest_round_trip_follows_a_longer_path_within_two_windows() {
        let t0 = Instant::now();
        let mut a = Auto::new(10_000);
        on_rtt(&mut a, t0, 60);
        loss(&mut a, t0, 62);
        // The path is 100 ms long from now: at first that looks like a queue ...
        on_rtts(&mut a, t0 + Duration::from_secs(1), 100, 102);
        assert!(!a.queue_free());
        // ... still in the next period, which remembers the last one's 60 ms ...
        on_rtts(&mut a, t0 + Duration::from_secs(12), 100, 102);
        assert!(!a.queue_free());
        // ... and after two periods it is the path.
        let later = t0 + Duration::from_secs(23);
        for _ in 0..QUIET_LOSSES {
            on_rtts(&mut a, later, 100, 102);
            lose(&mut a, later);
        }
        assert!(a.switched());
    }

    /// At a queue that other flows keep from draining, the smallest round trip of the last
    /// period is its lowest point, not the first sample after the period ended (the top of
    /// the queue, against which a loss at the top looked like one without a queue).
    #[test]
    fn a_new_period_keeps_the_smallest_round_trip_of_the_last() {
        let t0 = Instant::now();
        let mut a = Auto::new(10_000);
        loss(&mut a, t0, 62);
        let mut at = t0;
        for _ in 0..=QUIET_LOSSES {
            // Each loss drains a part of the queue, which then fills again for 10.5 s, and the
            // next loss comes at its top, in a new period.
            on_rtts(&mut a, at + Duration::from_millis(100), 48, 50);
            at += Duration::from_millis(10_500);
            on_rtts(&mut a, at, 70, 70);
            lose(&mut a, at);
        }
        assert!(
            !a.switched(),
            "every loss came 22 ms above the queue's lowest point"
        );
    }

    #[test]
    fn losses_in_slow_start_do_not_count() {
        let now = Instant::now();
        let mut a = Auto::new(10_000);
        loss(&mut a, now, 62);
        for _ in 0..10 {
            // After a timeout the window starts again from one segment, below `ssthresh`,
            // and a loss comes before it is back.
            a.on_retransmission_timeout(now, 20_000, 1000);
            assert!(a.in_slow_start());
            lose(&mut a, now);
        }
        assert!(!a.switched());
    }
}
