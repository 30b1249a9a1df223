//! Congestion control behind one trait: [`NewReno`] (RFC 5681, RFC 6582) and [`Cubic`]
//! (RFC 9438), both with HyStart++ slow start (RFC 9406), [`Bbr`], which paces at the
//! bottleneck rate it measures and does not take a random loss for congestion, and [`Auto`],
//! CUBIC that hands a line whose losses come without a queue to BBR. MPTCP's
//! coupled algorithms (RFC 6356 LIA, OLIA, BALIA) implement the same trait in
//! [`crate::mptcp::congestion`].
//!
//! The connection tells its controller what happened (data acknowledged outside loss recovery,
//! a loss found by duplicate ACKs or SACK, a retransmission timeout, the end of a recovery) and
//! reads the window back; the controller owns `cwnd` and `ssthresh` and nothing else.

mod auto;
mod bbr;
mod cubic;
mod hystart;
mod new_reno;

use core::fmt;
use core::time::Duration;
use std::time::Instant;

pub use super::sent::RateSample;
pub use auto::Auto;
pub use bbr::Bbr;
pub use cubic::Cubic;
pub use hystart::HyStart;
use hystart::Phase;
pub use new_reno::NewReno;

/// What an acknowledgment of new data tells the controller.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// When it arrived.
    pub now: Instant,
    /// Bytes it newly acknowledged (cumulatively).
    pub acked: u64,
    /// Bytes in flight before it arrived.
    pub in_flight: u64,
    /// Whether the sender used its whole window lately: a window is only grown while it is
    /// what limits the sender (RFC 7661's reasoning; Linux's `tcp_is_cwnd_limited`).
    pub cwnd_limited: bool,
    /// The connection's sending maximum-segment size.
    pub mss: u64,
    /// The sample this acknowledgment gave, if any (Karn's rule may leave none).
    pub rtt_sample: Option<Duration>,
    /// Smoothed round-trip time.
    pub srtt: Duration,
    /// Smallest round-trip time seen.
    pub min_rtt: Duration,
    /// Highest sequence offset acknowledged after this ACK.
    pub acked_to: u64,
    /// Highest sequence offset sent so far: a round of HyStart++ ends when this much is acked.
    pub sent_to: u64,
    /// Whether the connection paces what it sends (segments leave spread over the round trip,
    /// not in bursts as ACKs open the window).
    pub paced: bool,
}

/// What an acknowledgment delivered, for a rate-based controller: every acknowledgment that
/// delivered bytes (cumulatively or by SACK) gives one, in loss recovery too.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// When it arrived.
    pub now: Instant,
    /// Its delivery-rate sample.
    pub sample: RateSample,
    /// Bytes it delivered (acknowledged or SACKed).
    pub acked: u64,
    /// Bytes in flight after it (RFC 6675 `pipe`).
    pub in_flight: u64,
    /// The connection's sending maximum-segment size.
    pub mss: u64,
}

/// A congestion-control algorithm.
pub trait Controller: fmt::Debug + Send {
    /// The congestion window, bytes.
    fn window(&self) -> u64;

    /// The slow-start threshold, bytes (`u64::MAX` before the first loss).
    fn ssthresh(&self) -> u64;

    /// New data was acknowledged outside loss recovery.
    fn on_ack(&mut self, ack: &Ack);

    /// A loss was detected by duplicate ACKs or SACK and fast recovery begins (RFC 5681 §3.2,
    /// RFC 6675 §5): reduce the window once for this recovery.
    fn on_congestion_event(&mut self, now: Instant, in_flight: u64, mss: u64);

    /// The recovery that began with [`Controller::on_congestion_event`] ended (the recovery
    /// point was acknowledged).
    fn on_recovery_end(&mut self, now: Instant, mss: u64);

    /// The retransmission timer expired (RFC 5681 §3.1: `cwnd` falls to the loss window).
    fn on_retransmission_timeout(&mut self, now: Instant, in_flight: u64, mss: u64);

    /// The timer expired again before what the last timeout sent again was acknowledged:
    /// `cwnd` falls to the loss window and `ssthresh` is held (RFC 5681 §3.1: a segment
    /// already retransmitted by the timer leaves `ssthresh` constant; Linux likewise reduces
    /// it once per loss episode). Without this, a line silent for a few timeouts came back
    /// with `ssthresh` at two segments and crawled in congestion avoidance.
    fn on_repeated_timeout(&mut self, now: Instant, mss: u64);

    /// Whether the window is in slow start.
    fn in_slow_start(&self) -> bool {
        self.window() < self.ssthresh()
    }

    /// An acknowledgment delivered bytes (called after [`Controller::on_ack`], also in
    /// recovery). Only rate-based controllers use it.
    fn on_delivery(&mut self, _delivery: &Delivery) {}

    /// The rate to pace at, bytes per second; `None`: the connection paces from the window
    /// and the smoothed round trip.
    fn pacing_rate(&self) -> Option<f64> {
        None
    }

    /// Whether the connection paces what it sends (when its configuration paces at all);
    /// `false`: segments go as ACKs open the window, as an unpaced TCP sends.
    fn paced(&self) -> bool {
        true
    }

    /// Whether what is sent now should count as application-limited in delivery-rate samples
    /// (the controller holds the sender back on purpose: BBR's `ProbeRTT`).
    fn holds_back(&self) -> bool {
        false
    }

    /// The algorithm's name (`newreno`, `cubic`).
    fn name(&self) -> &'static str;

    /// What runs now, for people: the name, or for an algorithm that hands over to another,
    /// both (`auto/bbr`).
    fn running(&self) -> &'static str {
        self.name()
    }

    /// Starts afresh with an initial window of `initial_window` bytes: the connection calls it
    /// when the handshake has fixed the MSS (RFC 6928's window is in segments), also on a
    /// controller given to it with [`Connection::set_controller`](crate::tcp::Connection::set_controller).
    fn restart(&mut self, initial_window: u64);
}

/// The algorithms this engine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// RFC 5681 with RFC 6582's recovery.
    NewReno,
    /// RFC 9438.
    #[default]
    Cubic,
    /// BBR (version 1).
    Bbr,
    /// CUBIC, then BBR once the line's losses show they are not congestion ([`Auto`]).
    Auto,
}

impl Algorithm {
    /// Its name, as [`Controller::name`] gives it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::NewReno => "newreno",
            Self::Cubic => "cubic",
            Self::Bbr => "bbr",
            Self::Auto => "auto",
        }
    }

    /// A controller of this algorithm with an initial window of `initial_window` bytes.
    #[must_use]
    pub fn build(self, initial_window: u64) -> Box<dyn Controller> {
        match self {
            Self::NewReno => Box::new(NewReno::new(initial_window)),
            Self::Cubic => Box::new(Cubic::new(initial_window)),
            Self::Bbr => Box::new(Bbr::new(initial_window)),
            Self::Auto => Box::new(Auto::new(initial_window)),
        }
    }
}

/// RFC 5681 §3.1 with RFC 3465's `L = 2` and HyStart++: the window after `ack` in slow start
/// (at most two segments more), and `ssthresh` set to it when HyStart++ says slow start is
/// over.
pub fn slow_start(hystart: &mut HyStart, cwnd: &mut u64, ssthresh: &mut u64, ack: &Ack) {
    let grow = ack.acked.min(2 * ack.mss);
    match hystart.on_ack(ack, *cwnd) {
        Phase::SlowStart => *cwnd += grow,
        Phase::Conservative(div) => *cwnd += grow / div,
        Phase::Exit => *ssthresh = *cwnd,
    }
}

/// RFC 5681 §3.1 (3): after a loss, `ssthresh = max(FlightSize / 2, 2 * SMSS)`.
#[must_use]
pub fn half_flight(in_flight: u64, mss: u64) -> u64 {
    (in_flight / 2).max(2 * mss)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::Ack;
    use core::time::Duration;
    use std::time::Instant;

    /// An ACK of `acked` bytes on a 100 ms path while the window is what limits the sender.
    pub fn ack(now: Instant, acked: u64, in_flight: u64) -> Ack {
        Ack {
            now,
            acked,
            in_flight,
            cwnd_limited: true,
            mss: 1000,
            rtt_sample: Some(Duration::from_millis(100)),
            srtt: Duration::from_millis(100),
            min_rtt: Duration::from_millis(100),
            acked_to: 0,
            sent_to: 0,
            paced: true,
        }
    }
}
