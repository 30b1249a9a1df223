//! BBR, version 1 (Cardwell, Cheng, Gunn, Hassas Yeganeh, Jacobson, "BBR: Congestion-Based
//! Congestion Control", ACM Queue 2016; draft-cardwell-iccrg-bbr-congestion-control-00; the
//! choices of Linux's `tcp_bbr.c` where the draft leaves one open).
//!
//! BBR models the path by two numbers it measures: the bottleneck bandwidth (the largest
//! delivery rate of the last ten round trips) and the round-trip propagation time (the
//! smallest round trip of the last ten seconds). It paces at the bandwidth times a gain that
//! cycles around 1 to probe for more, and keeps at most twice their product in flight. A loss
//! does not shrink it: on a line that drops packets at random (an LTE or Wi-Fi link's 0.5 %),
//! a loss-based controller holds a window of `1.2 / sqrt(p)` segments (17 at 0.5 %: 3.3
//! Mbit/s on a 60 ms line, whatever the line's rate), BBR the line's rate.
//!
//! The price is BBR v1's: it does not yield to loss-based flows sharing a bottleneck the way
//! they yield to each other, and on a shallow buffer it keeps losing what its probing gain
//! overshoots. It is the choice for lines whose loss is not congestion; where the lines share
//! a bottleneck with other traffic, the coupled algorithms are.
//!
//! Its states (§4.3 of the draft):
//! - **Startup**: pacing gain `2/ln 2`, doubling the rate each round trip until three rounds
//!   in a row grew the bandwidth by less than a quarter (the pipe is full). A loss does not end
//!   it.
//! - **Drain**: the inverse gain, until what is in flight is one bandwidth-delay product.
//! - **`ProbeBW`**: gains 1.25, 0.75, then 1 for six round trips, in turn.
//! - **`ProbeRTT`**: when the smallest round trip is ten seconds old, half a bandwidth-delay
//!   product in flight (at least four segments) for 200 ms and a round trip, so that the queue
//!   drains and the round trip is measured anew. BBR v1 went down to four segments; half a
//!   product is BBR v3's choice (draft-ietf-ccwg-bbr §5.3.4), which drains the queue as well
//!   and costs a 120 ms line 3 % of its rate less. What is sent meanwhile is marked
//!   application-limited: its rate is not the path's.
//!
//! In loss recovery the window is held at what is in flight plus what was delivered for the
//! first round trip (packet conservation), then grows back; after the recovery it is what it
//! was before. After a retransmission timeout it starts from one segment and grows by what is
//! delivered back to its target.

use core::time::Duration;
use std::collections::VecDeque;
use std::time::Instant;

use super::{Ack, Controller, Delivery};

/// Startup's gain, `2 / ln 2`: the smallest that doubles the delivery rate each round trip.
const HIGH_GAIN: f64 = 2.885;
/// `ProbeBW`'s window gain: twice the bandwidth-delay product, room for delayed and aggregated
/// acknowledgments.
const CWND_GAIN: f64 = 2.0;
/// `ProbeBW`'s pacing gains, one per round trip.
const CYCLE: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// The bandwidth filter's length, in round trips.
const BW_ROUNDS: u64 = 10;
/// How long a smallest round trip stands before `ProbeRTT` measures it again (also how long
/// `auto` judges queues against one).
pub(super) const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// How long `ProbeRTT` holds the window at its minimum.
const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
/// The smallest window, in segments.
const MIN_CWND_SEGS: u64 = 4;
/// `ProbeRTT`'s window, in bandwidth-delay products.
const PROBE_RTT_CWND_GAIN: f64 = 0.5;
/// The pipe is full when three round trips in a row grew the bandwidth by less than this.
const FULL_BW_GROWTH: f64 = 1.25;
/// ... that many round trips.
const FULL_BW_ROUNDS: u32 = 3;
/// Pacing stays this much under the estimate, so that the bottleneck's queue drains
/// (Linux's `bbr_pacing_margin_percent`).
const PACING_MARGIN: f64 = 0.99;
/// Segments of window over the target, for the segments held by delayed ACKs and the
/// pacer's bursts (Linux's `3 * tso_segs_goal`).
const QUANTA_SEGS: u64 = 3;

/// BBR's state machine (§4.3 of the draft).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Startup,
    Drain,
    ProbeBw,
    ProbeRtt,
}

/// Where the window stands with respect to loss recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    Open,
    /// A loss was found: the next delivery sets the window to what is in flight.
    Entering,
    /// Packet conservation until the round trip that started at the loss ends.
    Conserving {
        round: u64,
    },
    /// Conservation is over; the window grows back to its target until recovery ends.
    Growing,
}

/// The largest delivery rate of each of the last [`BW_ROUNDS`] round trips.
#[derive(Debug, Clone, Default)]
struct MaxBw {
    rounds: VecDeque<(u64, f64)>,
}

impl MaxBw {
    fn update(&mut self, round: u64, bw: f64) {
        while self
            .rounds
            .front()
            .is_some_and(|&(r, _)| r + BW_ROUNDS <= round)
        {
            self.rounds.pop_front();
        }
        match self.rounds.back_mut() {
            Some((r, b)) if *r == round => *b = b.max(bw),
            _ => self.rounds.push_back((round, bw)),
        }
    }

    fn get(&self) -> f64 {
        self.rounds.iter().map(|&(_, b)| b).fold(0.0, f64::max)
    }
}

/// BBR v1.
#[derive(Debug, Clone)]
pub struct Bbr {
    mode: Mode,
    cwnd: u64,
    /// The window before a recovery or `ProbeRTT`, restored after it.
    prior_cwnd: u64,
    initial_window: u64,
    mss: u64,
    bw: MaxBw,
    min_rtt: Option<Duration>,
    min_rtt_at: Option<Instant>,
    /// Round trips counted by delivery: one ends when a segment sent after it began is
    /// delivered.
    round: u64,
    next_round_delivered: u64,
    round_start: bool,
    full_bw: f64,
    full_bw_rounds: u32,
    filled_pipe: bool,
    cycle_index: usize,
    cycle_start: Option<Instant>,
    probe_rtt_done: Option<Instant>,
    probe_rtt_round_done: bool,
    pacing_gain: f64,
    cwnd_gain: f64,
    pacing_rate: Option<f64>,
    recovery: Recovery,
    /// Bytes delivered so far (for the first window's growth).
    delivered: u64,
}

impl Bbr {
    /// BBR in Startup with an initial window of `initial_window` bytes.
    #[must_use]
    pub fn new(initial_window: u64) -> Self {
        Self {
            mode: Mode::Startup,
            cwnd: initial_window,
            prior_cwnd: 0,
            initial_window,
            mss: 1,
            bw: MaxBw::default(),
            min_rtt: None,
            min_rtt_at: None,
            round: 0,
            next_round_delivered: 0,
            round_start: false,
            full_bw: 0.0,
            full_bw_rounds: 0,
            filled_pipe: false,
            cycle_index: 0,
            cycle_start: None,
            probe_rtt_done: None,
            probe_rtt_round_done: false,
            pacing_gain: HIGH_GAIN,
            cwnd_gain: HIGH_GAIN,
            pacing_rate: None,
            recovery: Recovery::Open,
            delivered: 0,
        }
    }

    /// BBR taking over a flow whose window is `cwnd` bytes (from another controller): in
    /// Startup from that window, which its first round trips measure.
    #[must_use]
    pub fn taking_over(cwnd: u64) -> Self {
        let mut b = Self::new(cwnd);
        b.initial_window = 0;
        b
    }

    /// The bottleneck bandwidth estimate, bytes per second.
    #[must_use]
    pub fn bandwidth(&self) -> f64 {
        self.bw.get()
    }

    /// `gain` bandwidth-delay products, bytes; the initial window before both are measured.
    fn bdp(&self, gain: f64) -> u64 {
        let bw = self.bw.get();
        match self.min_rtt {
            Some(rtt) if bw > 0.0 => {
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "a positive byte count far below u64::MAX"
                )]
                let b = (gain * bw * rtt.as_secs_f64()) as u64;
                b
            }
            _ => self.initial_window,
        }
    }

    /// The window to come back to after a recovery or `ProbeRTT` (Linux's `bbr_save_cwnd`).
    fn save_cwnd(&mut self) {
        self.prior_cwnd = if self.recovery == Recovery::Open && self.mode != Mode::ProbeRtt {
            self.cwnd
        } else {
            self.prior_cwnd.max(self.cwnd)
        };
    }

    fn min_cwnd(&self) -> u64 {
        MIN_CWND_SEGS * self.mss
    }

    fn probe_rtt_cwnd(&self) -> u64 {
        self.bdp(PROBE_RTT_CWND_GAIN).max(self.min_cwnd())
    }

    fn enter_probe_bw(&mut self, now: Instant, seed: u64) {
        self.mode = Mode::ProbeBw;
        self.cwnd_gain = CWND_GAIN;
        // A phase other than the draining one, picked from the delivery count (Linux draws
        // it at random) so that flows started together do not probe in step.
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a value below the cycle's length"
        )]
        let pick = (seed % (CYCLE.len() as u64 - 1)) as usize;
        self.cycle_index = if pick >= 1 { pick + 1 } else { pick };
        self.cycle_start = Some(now);
        self.pacing_gain = CYCLE[self.cycle_index];
    }

    /// §4.3.4.3: the next phase once this one has lasted a round trip; the probing phase
    /// also waits until its extra is in flight (or a loss says there is no room for it), the
    /// draining one ends early once the extra is gone.
    fn advance_cycle(&mut self, d: &Delivery, loss: bool) {
        if self.mode != Mode::ProbeBw {
            return;
        }
        let now = d.now;
        let elapsed = self
            .cycle_start
            .is_none_or(|s| now.saturating_duration_since(s) > self.min_rtt.unwrap_or_default());
        let gain = self.pacing_gain;
        let next = if gain > 1.0 {
            elapsed && (loss || d.in_flight + d.acked >= self.bdp(gain))
        } else if gain < 1.0 {
            elapsed || d.in_flight <= self.bdp(1.0)
        } else {
            elapsed
        };
        if next {
            self.cycle_index = (self.cycle_index + 1) % CYCLE.len();
            self.cycle_start = Some(now);
            self.pacing_gain = CYCLE[self.cycle_index];
        }
    }

    /// §4.3.2.2: the pipe is full when three round trips grew the bandwidth by less than a
    /// quarter. Application-limited rounds say nothing.
    fn check_full_pipe(&mut self, app_limited: bool) {
        if self.filled_pipe || !self.round_start || app_limited {
            return;
        }
        let bw = self.bw.get();
        if bw >= self.full_bw * FULL_BW_GROWTH {
            self.full_bw = bw;
            self.full_bw_rounds = 0;
            return;
        }
        self.full_bw_rounds += 1;
        if self.full_bw_rounds >= FULL_BW_ROUNDS {
            self.filled_pipe = true;
        }
    }

    fn check_drain(&mut self, now: Instant, in_flight: u64) {
        if self.mode == Mode::Startup && self.filled_pipe {
            self.mode = Mode::Drain;
            self.pacing_gain = 1.0 / HIGH_GAIN;
            self.cwnd_gain = HIGH_GAIN;
        }
        if self.mode == Mode::Drain && in_flight <= self.bdp(1.0) {
            self.enter_probe_bw(now, self.delivered / self.mss.max(1));
        }
    }

    /// §4.3.3: `ProbeRTT` when the smallest round trip is [`MIN_RTT_WINDOW`] old.
    fn check_probe_rtt(&mut self, now: Instant, in_flight: u64, expired: bool) {
        if expired && self.mode != Mode::ProbeRtt {
            self.mode = Mode::ProbeRtt;
            self.pacing_gain = 1.0;
            self.cwnd_gain = 1.0;
            self.save_cwnd();
            self.probe_rtt_done = None;
        }
        if self.mode != Mode::ProbeRtt {
            return;
        }
        match self.probe_rtt_done {
            None if in_flight <= self.probe_rtt_cwnd() => {
                self.probe_rtt_done = Some(now + PROBE_RTT_TIME);
                self.probe_rtt_round_done = false;
                self.next_round_delivered = self.delivered;
            }
            None => {}
            Some(done) => {
                if self.round_start {
                    self.probe_rtt_round_done = true;
                }
                if self.probe_rtt_round_done && now >= done {
                    self.min_rtt_at = Some(now);
                    self.cwnd = self.cwnd.max(self.prior_cwnd);
                    if self.filled_pipe {
                        self.enter_probe_bw(now, self.delivered / self.mss.max(1));
                    } else {
                        self.mode = Mode::Startup;
                        self.pacing_gain = HIGH_GAIN;
                        self.cwnd_gain = HIGH_GAIN;
                    }
                }
            }
        }
    }

    fn set_pacing_rate(&mut self) {
        let bw = self.bw.get();
        if bw <= 0.0 {
            return;
        }
        let rate = self.pacing_gain * bw * PACING_MARGIN;
        // In Startup the rate only grows: a sample from a flight that was not yet full says
        // nothing of the path.
        if self.filled_pipe || self.pacing_rate.is_none_or(|r| rate > r) {
            self.pacing_rate = Some(rate);
        }
    }

    /// §4.2.3.4–4.2.3.6: the window toward `cwnd_gain` bandwidth-delay products.
    fn set_cwnd(&mut self, d: &Delivery) {
        let acked = d.acked;
        let target = self
            .bdp(self.cwnd_gain)
            .saturating_add(QUANTA_SEGS * self.mss);
        match self.recovery {
            Recovery::Entering => {
                self.cwnd = d.in_flight + acked;
                // A round trip starts now (Linux's `bbr_set_cwnd_to_recover_or_restore`), so
                // conservation lasts a whole one.
                self.next_round_delivered = self.delivered;
                self.recovery = Recovery::Conserving { round: self.round };
                return self.clamp_cwnd();
            }
            Recovery::Conserving { round } if self.round <= round => {
                self.cwnd = self.cwnd.max(d.in_flight + acked);
                return self.clamp_cwnd();
            }
            Recovery::Conserving { .. } => self.recovery = Recovery::Growing,
            Recovery::Open | Recovery::Growing => {}
        }
        if self.filled_pipe {
            self.cwnd = (self.cwnd + acked).min(target);
        } else if self.cwnd < target || self.delivered < self.initial_window {
            self.cwnd += acked;
        }
        self.clamp_cwnd();
    }

    fn clamp_cwnd(&mut self) {
        self.cwnd = self.cwnd.max(self.min_cwnd());
        if self.mode == Mode::ProbeRtt {
            self.cwnd = self.cwnd.min(self.probe_rtt_cwnd());
        }
    }
}

impl Controller for Bbr {
    fn window(&self) -> u64 {
        self.cwnd
    }

    fn ssthresh(&self) -> u64 {
        if self.filled_pipe {
            self.bdp(CWND_GAIN)
        } else {
            u64::MAX
        }
    }

    fn in_slow_start(&self) -> bool {
        self.mode == Mode::Startup
    }

    fn on_ack(&mut self, _ack: &Ack) {
        // Everything is done on the delivery: BBR also acts in loss recovery.
    }

    fn on_delivery(&mut self, d: &Delivery) {
        let now = d.now;
        let rs = &d.sample;
        self.mss = d.mss.max(1);
        self.delivered = rs.delivered;
        // §4.1.1.3: a round trip ends when a segment sent after it began is delivered. A
        // sample without a rate counts no round (Linux's `bbr_update_bw` returns first).
        self.round_start = rs.valid && rs.prior_delivered >= self.next_round_delivered;
        if self.round_start {
            self.next_round_delivered = rs.delivered;
            self.round += 1;
        }
        // §4.1.1.5: an application-limited sample counts only if it shows more.
        if let Some(rate) = rs.rate() {
            if !rs.app_limited || rate >= self.bw.get() {
                self.bw.update(self.round, rate);
            }
        }
        // §4.1.2.3: the smallest round trip of the last ten seconds.
        let expired = self
            .min_rtt_at
            .is_some_and(|at| now.saturating_duration_since(at) > MIN_RTT_WINDOW);
        if let Some(rtt) = rs.rtt {
            if self.min_rtt.is_none_or(|m| rtt <= m) || expired {
                self.min_rtt = Some(rtt);
                self.min_rtt_at = Some(now);
            }
        }
        // Linux uses the segments this ACK marked lost; in loss recovery is the same signal
        // for every ACK of the recovery, not only its first.
        let loss = self.recovery != Recovery::Open;
        self.advance_cycle(d, loss);
        self.check_full_pipe(rs.app_limited);
        self.check_drain(now, d.in_flight);
        self.check_probe_rtt(now, d.in_flight, expired);
        self.set_pacing_rate();
        self.set_cwnd(d);
    }

    fn pacing_rate(&self) -> Option<f64> {
        self.pacing_rate
    }

    /// Linux's `bbr_update_min_rtt`: what `ProbeRTT`'s four segments deliver says nothing of
    /// the path. On a short line `ProbeRTT`'s 200 ms are more round trips than the bandwidth
    /// filter holds, and without this the estimate fell to `ProbeRTT`'s rate and the window
    /// took a second to grow back.
    fn holds_back(&self) -> bool {
        self.mode == Mode::ProbeRtt
    }

    fn on_congestion_event(&mut self, _now: Instant, _in_flight: u64, _mss: u64) {
        self.save_cwnd();
        self.recovery = Recovery::Entering;
    }

    fn on_recovery_end(&mut self, _now: Instant, _mss: u64) {
        self.recovery = Recovery::Open;
        if self.mode != Mode::ProbeRtt {
            self.cwnd = self.cwnd.max(self.prior_cwnd);
        }
    }

    fn on_retransmission_timeout(&mut self, _now: Instant, _in_flight: u64, mss: u64) {
        self.mss = mss.max(1);
        // The loss window (RFC 5681 §3.1); the growth back to the target is by delivery, and
        // a new round starts with the next delivery.
        self.cwnd = self.mss;
        self.recovery = Recovery::Open;
        self.prior_cwnd = 0;
        self.full_bw = 0.0;
        self.full_bw_rounds = 0;
        self.next_round_delivered = self.delivered;
    }

    fn on_repeated_timeout(&mut self, _now: Instant, mss: u64) {
        self.mss = mss.max(1);
        self.cwnd = self.mss;
    }

    fn name(&self) -> &'static str {
        "bbr"
    }

    fn restart(&mut self, initial_window: u64) {
        *self = Self::new(initial_window);
    }
}

#[cfg(test)]
mod tests {
    use super::super::RateSample;
    use super::*;

    const MSS: u64 = 1000;

    /// A path of `bw` bytes per second and `rtt`, delivering one segment per call: the
    /// flow's clock, delivered bytes and what is in flight.
    struct Path {
        now: Instant,
        delivered: u64,
        bw: f64,
        rtt: Duration,
        /// Queueing delay in the round trips sampled.
        queue: Duration,
    }

    impl Path {
        fn new(bw: f64, rtt_ms: u64) -> Self {
            Self {
                now: Instant::now(),
                delivered: 0,
                bw,
                rtt: Duration::from_millis(rtt_ms),
                queue: Duration::ZERO,
            }
        }

        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a test path's product, positive and small"
        )]
        fn bdp(&self) -> u64 {
            (self.bw * self.rtt.as_secs_f64()) as u64
        }

        /// One segment delivered, sent a round trip ago with `in_flight` in the network.
        fn deliver(&mut self, bbr: &mut Bbr, in_flight: u64) {
            self.now += Duration::from_secs_f64(MSS as f64 / self.bw);
            let prior = self.delivered.saturating_sub(self.bdp());
            self.delivered += MSS;
            bbr.on_delivery(&Delivery {
                now: self.now,
                sample: RateSample {
                    delivered: self.delivered,
                    prior_delivered: prior,
                    interval: self.rtt,
                    app_limited: false,
                    rtt: Some(self.rtt + self.queue),
                    valid: true,
                },
                acked: MSS,
                in_flight,
                mss: MSS,
            });
        }

        /// Startup, then Drain down to a product in flight: BBR in `ProbeBW`.
        fn settle(&mut self, bbr: &mut Bbr) {
            self.run(bbr, Duration::from_millis(400), self.bdp() * 3);
            self.run(bbr, Duration::from_millis(100), self.bdp());
            assert_eq!(bbr.mode, Mode::ProbeBw);
        }

        /// Segments for `d` with the window full (at most `cap` in flight).
        fn run(&mut self, bbr: &mut Bbr, d: Duration, cap: u64) {
            let end = self.now + d;
            while self.now < end {
                let in_flight = bbr.window().min(cap);
                self.deliver(bbr, in_flight);
            }
        }
    }

    #[test]
    fn startup_fills_the_pipe_then_drains_to_probe_bw() {
        // 10 MB/s (80 Mbit/s), 20 ms: a product of 200 kB.
        let mut p = Path::new(10e6, 20);
        let mut bbr = Bbr::new(10 * MSS);
        assert_eq!(bbr.mode, Mode::Startup);
        p.run(&mut bbr, Duration::from_millis(400), p.bdp() * 3);
        assert!(bbr.filled_pipe, "three rounds without growth fill the pipe");
        let bw = bbr.bandwidth();
        assert!((bw - 10e6).abs() < 1e5, "bandwidth {bw}");
        // Drain ends once in flight is down to a product.
        p.run(&mut bbr, Duration::from_millis(100), p.bdp());
        assert_eq!(bbr.mode, Mode::ProbeBw);
        let rate = bbr.pacing_rate().unwrap();
        assert!(
            (0.7 * 10e6..=1.3 * 10e6).contains(&rate),
            "pacing at {rate}"
        );
        // The window is two products and a few segments (the estimate a little over the
        // path's: a sample's segments are counted at its end).
        let w = bbr.window();
        assert!(
            (2 * p.bdp()..=2 * p.bdp() * 101 / 100 + 4 * MSS).contains(&w),
            "window {w}"
        );
    }

    #[test]
    fn a_loss_does_not_shrink_the_window_after_recovery() {
        let mut p = Path::new(10e6, 20);
        let mut bbr = Bbr::new(10 * MSS);
        p.settle(&mut bbr);
        p.run(&mut bbr, Duration::from_millis(500), p.bdp() * 2);
        let before = bbr.window();
        bbr.on_congestion_event(p.now, before, MSS);
        // Packet conservation for a round: the window is what is in flight.
        p.deliver(&mut bbr, before - 2 * MSS);
        assert_eq!(bbr.window(), before - MSS);
        p.run(&mut bbr, Duration::from_millis(50), p.bdp() * 2);
        bbr.on_recovery_end(p.now, MSS);
        assert!(bbr.window() >= before, "{} < {before}", bbr.window());
        assert!(bbr.pacing_rate().unwrap() > 0.7 * 10e6);
    }

    #[test]
    fn probe_rtt_every_ten_seconds_then_back() {
        let mut p = Path::new(10e6, 20);
        let mut bbr = Bbr::new(10 * MSS);
        p.settle(&mut bbr);
        // A millisecond of queue from now on: no sample refreshes the smallest round trip.
        p.queue = Duration::from_millis(1);
        p.run(&mut bbr, Duration::from_millis(10_050), p.bdp() * 2);
        // The smallest round trip is ten seconds old.
        assert_eq!(bbr.mode, Mode::ProbeRtt);
        assert!(
            bbr.holds_back(),
            "ProbeRTT's samples are application-limited"
        );
        let w = bbr.window();
        // Half a product at the round trip measured when the old one expired (21 ms).
        assert!(
            (p.bdp() / 2..=p.bdp() * 55 / 100).contains(&w),
            "window {w}"
        );
        let bw = bbr.bandwidth();
        p.run(&mut bbr, Duration::from_millis(300), p.bdp() / 2);
        assert_eq!(
            bbr.mode,
            Mode::ProbeBw,
            "back after 200 ms and a round trip"
        );
        assert!(!bbr.holds_back());
        assert!(bbr.bandwidth() >= bw, "the estimate survived ProbeRTT");
        assert!(bbr.window() >= 2 * p.bdp(), "window {}", bbr.window());
    }

    #[test]
    fn a_timeout_falls_to_one_segment_and_grows_back_by_delivery() {
        let mut p = Path::new(10e6, 20);
        let mut bbr = Bbr::new(10 * MSS);
        p.settle(&mut bbr);
        bbr.on_retransmission_timeout(p.now, bbr.window(), MSS);
        assert_eq!(bbr.window(), MSS);
        p.deliver(&mut bbr, 0);
        assert_eq!(bbr.window(), MIN_CWND_SEGS * MSS);
        p.run(&mut bbr, Duration::from_millis(100), u64::MAX);
        assert!(bbr.window() >= 2 * p.bdp());
    }

    #[test]
    fn application_limited_samples_count_only_when_higher() {
        let mut p = Path::new(10e6, 20);
        let mut bbr = Bbr::new(10 * MSS);
        p.run(&mut bbr, Duration::from_secs(1), p.bdp() * 2);
        let bw = bbr.bandwidth();
        for k in 0..200u64 {
            p.delivered += MSS;
            bbr.on_delivery(&Delivery {
                now: p.now + Duration::from_millis(k),
                sample: RateSample {
                    delivered: p.delivered,
                    prior_delivered: p.delivered - 10 * MSS,
                    interval: p.rtt,
                    app_limited: true,
                    rtt: Some(p.rtt),
                    valid: true,
                },
                acked: MSS,
                in_flight: 10 * MSS,
                mss: MSS,
            });
        }
        assert!(
            (bbr.bandwidth() - bw).abs() < 1.0,
            "an idle sender is no slower path"
        );
    }
}
