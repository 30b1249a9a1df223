//! Congestion control of a connection's subflows: uncoupled (each subflow its own TCP
//! algorithm, as Linux does) or coupled (RFC 6356's goals: a multipath connection takes no more
//! than one TCP flow would on its best path at a shared bottleneck, and moves its traffic away
//! from congested paths).
//!
//! - `cubic`, `reno`, `bbr`, `auto`: each subflow runs CUBIC, NewReno or BBR on its own (the
//!   default is CUBIC). BBR is for lines whose loss is not congestion (LTE, Wi-Fi): it keeps
//!   their rate where a loss-based window would shrink to `1.2 / sqrt(p)` segments; it does not
//!   share a bottleneck fairly. `auto` runs CUBIC and gives a subflow BBR once its line's
//!   losses come without a queue ([`crate::tcp::congestion::Auto`]).
//! - [`lia`] (RFC 6356), [`olia`] (Khalili et al.) and [`balia`] (Peng et al.): coupled
//!   increase in congestion avoidance; slow start stays per subflow and uncoupled (RFC 6356
//!   §3 couples only the increase), and a retransmission timeout is TCP's on that subflow.
//!   Their subflows are not paced: they send as ACKs open their windows, as the unpaced TCP
//!   flows they share a bottleneck with do. A paced flow loses fewer packets at a full
//!   drop-tail queue than the bursts of an unpaced one, so paced coupled subflows took twice a
//!   competing Linux CUBIC flow's share in the lab (`mpbond bench --scenario
//!   shared-bottleneck`, 2.0 ×), against 1.04 × unpaced.
//!
//! The coupled controllers of one connection share a [`Coupling`]: every subflow's controller
//! writes its window, smoothed RTT and loss distance there on each event and reads its siblings'
//! when it grows or shrinks. The connection says which subflows count (those that may carry data
//! now: a backup idling next to working regular subflows, or a stalled subflow, does not hold
//! the others back).

pub mod balia;
pub mod lia;
pub mod olia;

use core::fmt;
use core::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arrayvec::ArrayVec;

use crate::tcp::congestion::{Ack, Algorithm, Controller, HyStart, half_flight, slow_start};

/// A subflow as the coupled algorithms see it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Member {
    /// Congestion window, bytes.
    pub cwnd: f64,
    /// Smoothed RTT, seconds.
    pub srtt: f64,
    /// OLIA's `ℓ`: bytes acknowledged between its last two losses or since the last one,
    /// whichever is more.
    pub inter_loss: f64,
}

/// The congestion control of a connection's subflows, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Congestion {
    /// CUBIC on each subflow, uncoupled (RFC 9438; Linux's default).
    #[default]
    Cubic,
    /// NewReno on each subflow, uncoupled (RFC 5681, RFC 6582).
    Reno,
    /// BBR (v1) on each subflow, uncoupled.
    Bbr,
    /// CUBIC on each subflow, BBR on those whose line's losses are not congestion.
    Auto,
    /// [`lia`].
    Lia,
    /// [`olia`].
    Olia,
    /// [`balia`].
    Balia,
}

impl Congestion {
    /// Every algorithm, the default first.
    pub const ALL: [Congestion; 7] = [
        Congestion::Cubic,
        Congestion::Reno,
        Congestion::Bbr,
        Congestion::Auto,
        Congestion::Lia,
        Congestion::Olia,
        Congestion::Balia,
    ];

    /// Its name on the command line and in the config file.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Congestion::Cubic => "cubic",
            Congestion::Reno => "reno",
            Congestion::Bbr => "bbr",
            Congestion::Auto => "auto",
            Congestion::Lia => "lia",
            Congestion::Olia => "olia",
            Congestion::Balia => "balia",
        }
    }

    /// Whether the subflows' windows are coupled.
    #[must_use]
    pub fn is_coupled(self) -> bool {
        matches!(self, Congestion::Lia | Congestion::Olia | Congestion::Balia)
    }

    /// The TCP algorithm each subflow runs on its own, for the uncoupled ones.
    #[must_use]
    pub fn uncoupled(self) -> Option<Algorithm> {
        match self {
            Congestion::Cubic => Some(Algorithm::Cubic),
            Congestion::Reno => Some(Algorithm::NewReno),
            Congestion::Bbr => Some(Algorithm::Bbr),
            Congestion::Auto => Some(Algorithm::Auto),
            _ => None,
        }
    }
}

impl fmt::Display for Congestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A congestion-control name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown congestion control {0:?} (one of: cubic, reno, bbr, auto, lia, olia, balia)")]
pub struct UnknownCongestion(pub String);

impl FromStr for Congestion {
    type Err = UnknownCongestion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownCongestion(s.to_owned()))
    }
}

/// One subflow's entry in its connection's [`Coupling`].
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// A controller holds it.
    taken: bool,
    /// The connection counts it (it may carry data now).
    counted: bool,
    /// Its controller has an RTT sample.
    measured: bool,
    member: Member,
}

/// What the coupled controllers of one connection share.
#[derive(Debug, Clone)]
pub struct Coupling {
    kind: Congestion,
    slots: Arc<Mutex<Vec<Slot>>>,
}

impl Coupling {
    /// The sharing of a coupled algorithm; `None` for an uncoupled one.
    #[must_use]
    pub fn new(kind: Congestion) -> Option<Self> {
        kind.is_coupled().then(|| Self {
            kind,
            slots: Arc::default(),
        })
    }

    /// A controller for one more subflow and its slot (for [`Coupling::set_counted`]). The
    /// slot is free again when the controller is dropped.
    #[must_use]
    pub fn controller(&self) -> (usize, Box<dyn Controller>) {
        let mut slots = self.lock();
        let slot = slots.iter().position(|s| !s.taken).unwrap_or_else(|| {
            slots.push(Slot::default());
            slots.len() - 1
        });
        slots[slot] = Slot {
            taken: true,
            counted: true,
            ..Slot::default()
        };
        drop(slots);
        let cc = Coupled {
            kind: self.kind,
            shared: self.clone(),
            slot,
            cwnd: 0,
            ssthresh: u64::MAX,
            growth: 0.0,
            since_loss: 0,
            between_losses: 0,
            mss: 1460,
            hystart: HyStart::default(),
        };
        (slot, Box::new(cc))
    }

    /// Which slots count in the coupled sums: those of the subflows that may carry data now.
    pub fn set_counted(&self, counted: impl Fn(usize) -> bool) {
        for (k, s) in self.lock().iter_mut().enumerate() {
            s.counted = s.taken && counted(k);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        // A panic elsewhere while the lock was held leaves numbers that are still numbers.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `slot`'s member and returns the members that count (it among them) and its
    /// index there.
    fn update(&self, slot: usize, member: Member, measured: bool) -> (ArrayVec<Member, 16>, usize) {
        let mut slots = self.lock();
        if let Some(s) = slots.get_mut(slot) {
            s.member = member;
            s.measured |= measured;
        }
        let mut out = ArrayVec::new();
        let mut me = 0;
        for (k, s) in slots.iter().enumerate() {
            if k == slot {
                me = out.len();
            } else if !(s.taken && s.counted && s.measured) {
                continue;
            }
            if out.try_push(s.member).is_err() {
                break;
            }
        }
        (out, me)
    }
}

/// A byte count from a float (Rust's cast saturates; NaN gives 0).
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the cast saturates at 0 and u64::MAX, as a window should"
)]
fn to_bytes(x: f64) -> u64 {
    x as u64
}

/// A subflow's coupled controller: NewReno's slow start and timeouts (with HyStart++), the
/// coupled algorithm's increase in congestion avoidance and its decrease on a loss.
#[derive(Debug)]
struct Coupled {
    kind: Congestion,
    shared: Coupling,
    slot: usize,
    cwnd: u64,
    ssthresh: u64,
    /// Growth not yet a whole byte (negative: shrinking, OLIA).
    growth: f64,
    /// Bytes acknowledged since the last loss, and between the two before (OLIA's `ℓ`).
    since_loss: u64,
    between_losses: u64,
    mss: u64,
    hystart: HyStart,
}

impl Coupled {
    fn member(&self, srtt: Option<f64>) -> Member {
        Member {
            cwnd: self.cwnd as f64,
            srtt: srtt.unwrap_or(0.1).max(1e-4),
            inter_loss: self.since_loss.max(self.between_losses) as f64,
        }
    }

    /// The smoothed RTT last written to the slot.
    fn last_srtt(&self) -> Option<f64> {
        self.shared
            .lock()
            .get(self.slot)
            .filter(|s| s.measured)
            .map(|s| s.member.srtt)
    }

    /// A loss: the window to go down to, and the loss distances moved on.
    fn after_loss(&mut self, in_flight: u64, mss: u64) -> u64 {
        self.mss = mss;
        self.between_losses = self.since_loss;
        self.since_loss = 0;
        self.growth = 0.0;
        let srtt = self.last_srtt();
        let (members, me) = self.shared.update(self.slot, self.member(srtt), false);
        match self.kind {
            Congestion::Balia => {
                let kept = balia::kept_after_loss(me, &members);
                to_bytes(in_flight as f64 * kept).max(2 * mss)
            }
            _ => half_flight(in_flight, mss),
        }
    }
}

impl Drop for Coupled {
    fn drop(&mut self) {
        if let Some(s) = self.shared.lock().get_mut(self.slot) {
            *s = Slot::default();
        }
    }
}

impl Controller for Coupled {
    fn window(&self) -> u64 {
        self.cwnd
    }

    /// Unpaced (the module's documentation says why).
    fn paced(&self) -> bool {
        false
    }

    fn ssthresh(&self) -> u64 {
        self.ssthresh
    }

    fn on_ack(&mut self, ack: &Ack) {
        self.mss = ack.mss;
        self.since_loss += ack.acked;
        let srtt = ack.srtt.as_secs_f64();
        if !ack.cwnd_limited {
            self.shared.update(self.slot, self.member(Some(srtt)), true);
            return;
        }
        if self.cwnd < self.ssthresh {
            // Slow start is each subflow's own (RFC 6356 §3).
            slow_start(&mut self.hystart, &mut self.cwnd, &mut self.ssthresh, ack);
            self.shared.update(self.slot, self.member(Some(srtt)), true);
            return;
        }
        let (members, me) = self.shared.update(self.slot, self.member(Some(srtt)), true);
        let (acked, mss) = (ack.acked as f64, ack.mss as f64);
        self.growth += match self.kind {
            Congestion::Olia => olia::increase(me, &members, acked, mss),
            Congestion::Balia => balia::increase(me, &members, acked, mss),
            _ => lia::increase(me, &members, acked, mss),
        };
        let whole = self.growth.trunc();
        self.growth -= whole;
        let floor = 2 * ack.mss;
        self.cwnd = to_bytes(self.cwnd as f64 + whole).max(floor);
    }

    fn on_congestion_event(&mut self, _now: Instant, in_flight: u64, mss: u64) {
        self.ssthresh = self.after_loss(in_flight, mss);
        self.cwnd = self.ssthresh;
    }

    fn on_recovery_end(&mut self, _now: Instant, _mss: u64) {
        // RFC 6582 §3.2 (3): deflate the window to ssthresh.
        self.cwnd = self.ssthresh;
    }

    fn on_retransmission_timeout(&mut self, _now: Instant, in_flight: u64, mss: u64) {
        self.ssthresh = half_flight(in_flight, mss);
        self.after_loss(in_flight, mss);
        self.cwnd = mss;
        self.hystart.reset();
    }

    fn on_repeated_timeout(&mut self, _now: Instant, mss: u64) {
        self.cwnd = mss;
        self.growth = 0.0;
        self.hystart.reset();
    }

    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn restart(&mut self, initial_window: u64) {
        self.cwnd = initial_window;
        self.ssthresh = u64::MAX;
        self.growth = 0.0;
        self.since_loss = 0;
        self.between_losses = 0;
        self.hystart.reset();
    }
}

/// A member of `cwnd` bytes and `srtt` seconds, for tests.
#[cfg(test)]
pub(crate) fn member(cwnd: f64, srtt: f64, inter_loss: f64) -> Member {
    Member {
        cwnd,
        srtt,
        inter_loss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::congestion::test_support::ack;

    #[test]
    fn names_parse_back() {
        for k in Congestion::ALL {
            assert_eq!(k.name().parse::<Congestion>().unwrap(), k);
        }
        let e = "vegas".parse::<Congestion>().unwrap_err();
        assert!(e.to_string().contains("lia"), "{e}");
        assert!(Coupling::new(Congestion::Cubic).is_none());
    }

    /// Coupled subflows send as ACKs open their windows (the module says why); the
    /// uncoupled controllers they sit beside pace.
    #[test]
    fn coupled_subflows_are_not_paced() {
        for k in Congestion::ALL {
            let paced = match (Coupling::new(k), k.uncoupled()) {
                (Some(coupling), _) => coupling.controller().1.paced(),
                (None, Some(algorithm)) => algorithm.build(14_600).paced(),
                (None, None) => unreachable!("{k} is neither coupled nor uncoupled"),
            };
            assert_eq!(paced, !k.is_coupled(), "{k}");
        }
    }

    /// Two coupled subflows of equal paths, past slow start: a window's worth of ACKs on each
    /// adds a quarter segment to each (RFC 6356's `alpha` is 1/2), half a segment to the
    /// pair; each halves on its own loss, so together they take what one TCP flow would.
    #[test]
    fn two_coupled_subflows_together_take_one_flows_share() {
        let now = Instant::now();
        let coupling = Coupling::new(Congestion::Lia).unwrap();
        let (_, mut a) = coupling.controller();
        let (_, mut b) = coupling.controller();
        for c in [&mut a, &mut b] {
            c.restart(10_000);
            c.on_congestion_event(now, 20_000, 1000);
            assert_eq!(c.window(), 10_000);
            // Known to each other (an RTT sample) before either grows.
            let mut idle = ack(now, 0, 0);
            idle.cwnd_limited = false;
            c.on_ack(&idle);
        }
        for _ in 0..10 {
            a.on_ack(&ack(now, 1000, 10_000));
            b.on_ack(&ack(now, 1000, 10_000));
        }
        let grown = a.window() + b.window() - 20_000;
        assert!((480..=502).contains(&grown), "grew {grown} bytes");
    }

    /// A subflow the connection does not count (a backup, a stalled one) does not slow the
    /// others: alone in the sums, a subflow grows as NewReno.
    #[test]
    fn an_uncounted_subflow_is_left_out() {
        let now = Instant::now();
        let coupling = Coupling::new(Congestion::Lia).unwrap();
        let (_, mut a) = coupling.controller();
        let (b_slot, mut b) = coupling.controller();
        for c in [&mut a, &mut b] {
            c.restart(10_000);
            c.on_congestion_event(now, 20_000, 1000);
        }
        b.on_ack(&ack(now, 1000, 10_000));
        coupling.set_counted(|k| k != b_slot);
        for _ in 0..10 {
            a.on_ack(&ack(now, 1000, 10_000));
        }
        // As NewReno, to within the rounding of per-ACK growth.
        assert!((10_940..=11_000).contains(&a.window()), "{}", a.window());
        drop(b);
        assert!(coupling.lock().iter().filter(|s| s.taken).count() == 1);
    }

    #[test]
    fn slow_start_is_uncoupled() {
        let now = Instant::now();
        let coupling = Coupling::new(Congestion::Olia).unwrap();
        let (_, mut a) = coupling.controller();
        let (_, mut b) = coupling.controller();
        a.restart(10_000);
        b.restart(10_000);
        b.on_ack(&ack(now, 1000, 10_000));
        a.on_ack(&ack(now, 1000, 10_000));
        assert_eq!(a.window(), 11_000);
    }

    #[test]
    fn balia_backs_a_slow_path_off_further() {
        let now = Instant::now();
        let coupling = Coupling::new(Congestion::Balia).unwrap();
        let (_, mut fast) = coupling.controller();
        let (_, mut slow) = coupling.controller();
        fast.restart(40_000);
        slow.restart(5_000);
        fast.on_ack(&ack(now, 1000, 40_000));
        slow.on_ack(&ack(now, 1000, 5_000));
        slow.on_congestion_event(now, 12_000, 1000);
        assert_eq!(slow.window(), 3_000, "12000 * (1 - 1.5/2)");
        fast.on_congestion_event(now, 40_000, 1000);
        assert!(fast.window() >= 20_000, "{}", fast.window());
    }
}
