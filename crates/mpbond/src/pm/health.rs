//! Line health, sans-IO: which WAN lines work now, from link events and from active probes
//! (ICMP echo to the peer, sent out of each line; the I/O is in [`super::probe`]).
//!
//! A line is usable when its link is up, it has an address, and, once the peer has answered
//! probes on any line (so that it answers them at all: a converter behind a firewall that drops
//! ICMP leaves every line "unknown", judged by link and address only), it has been heard from
//! within [`ProbeConfig::dead_after`] (or one probe interval plus twice its smallest probe RTT,
//! if longer: a satellite line is not judged by a fibre's clock).
//! Heard means a probe answered or any packet received on the interface: a busy line whose
//! queue drops some probes is not silent, and an idle one has its probes. A silent line is
//! given up within that time (two thirds of it when the line was busy: its packets came every
//! few milliseconds), well before TCP's own retransmission timeout would notice; it is
//! usable again after [`ProbeConfig::recover_after`] answers in a row. A line given up and back
//! within a second was probably only slow: its allowance doubles (up to 8 times), and halves
//! again after each minute without such a false alarm.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How lines are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// One probe per line this often (0: no probes; links and addresses only).
    pub interval: Duration,
    /// A line that has not answered for this long is dead.
    pub dead_after: Duration,
    /// Answers in a row that bring a dead line back.
    pub recover_after: u32,
    /// One probe per line this often while the line carries nothing: no packet but probes sent
    /// on it for [`IDLE_AFTER`] (a backup line, a line at night). A dead idle line is found
    /// within three of these; the first packet sent on it brings back `interval` at once.
    pub idle_interval: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(50),
            dead_after: Duration::from_millis(150),
            recover_after: 2,
            idle_interval: Duration::from_secs(1),
        }
    }
}

/// Packets received between two readings of the counter that show a line carries traffic.
pub const RX_BUSY: u64 = 4;

/// How often the driver reads the lines' packet counters.
pub const COUNTER_PERIOD: Duration = Duration::from_millis(25);

/// A line that received a burst of packets this recently is busy: its traffic proves it works,
/// and it is not probed. The first reading without a burst ends it (and sends a probe at once).
const BUSY_WINDOW: Duration = Duration::from_millis(30);

/// The shortest spacing of probes while a busy line's traffic pauses.
const MIN_PAUSE_SPACING: Duration = Duration::from_millis(5);

/// A line that sent nothing but probes for this long is idle, and probed at the idle pace.
pub const IDLE_AFTER: Duration = Duration::from_secs(10);

/// A line dead (or never answering) for this long is probed at the idle pace: a line without
/// coverage for hours costs little, one back within a minute is found within `interval`s.
const DEAD_FAST: Duration = Duration::from_secs(60);

/// How long a line that never answered gets for its first answer.
const FIRST_ANSWER: Duration = Duration::from_secs(1);
/// A line back this soon after it was given up was a false alarm.
const FALSE_ALARM: Duration = Duration::from_secs(1);
/// At most 2^3 = 8 times the allowance.
const MAX_PENALTY: u32 = 3;
/// A minute without a false alarm halves the allowance again.
const FORGIVE: Duration = Duration::from_secs(60);

/// Probes kept waiting for an answer per line (older ones are forgotten).
const OUTSTANDING: usize = 64;

/// One line's probing.
#[derive(Debug, Clone)]
struct LineProbe {
    link_up: bool,
    /// A probe can be sent (the line has an address of the peer's family).
    probing: bool,
    seq: u16,
    next: Instant,
    sent: VecDeque<(u16, Instant)>,
    last_reply: Option<Instant>,
    /// When the interface's received-packet counter last grew by a burst.
    last_rx: Option<Instant>,
    /// Its received and sent packets at the last reading (the first reading only sets them),
    /// and the probes sent by then.
    counters: Option<(u64, u64)>,
    probes_at_reading: u64,
    /// When the line last sent something other than probes.
    active_at: Option<Instant>,
    /// When an idle line began to send: it is judged by the fast pace's allowance from then,
    /// not from its last answer at the idle pace.
    woke_at: Option<Instant>,
    /// When the last probe went.
    last_probe: Option<Instant>,
    /// When probing (re)started: a line never answering is judged from here.
    since: Instant,
    srtt: Option<Duration>,
    rttvar: Duration,
    min_rtt: Option<Duration>,
    /// This line's probe interval while it carries something, and while it is idle.
    interval: Duration,
    idle_interval: Duration,
    /// Packets (probes aside) it must send in one reading to count as in use: 1, or for a
    /// backup line a burst (its subflows' handshakes and closes are no use of it).
    wake_after: u64,
    /// The allowance is doubled this many times (false alarms).
    penalty: u32,
    /// When it was last given up, and when the penalty last changed.
    died_at: Option<Instant>,
    penalty_at: Instant,
    in_row: u32,
    alive: bool,
    probes_sent: u64,
    replies: u64,
}

/// What [`Health`] says of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Link up, answering probes.
    Up,
    /// Link up, the peer answers no probes anywhere (or probes are off): assumed to work.
    Unknown,
    /// Link down, no address, or silent.
    Down,
}

/// How a line is probed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    /// Not probed (no address, link down, or probes off).
    #[default]
    Off,
    /// Its received traffic says it works: no probe.
    Busy,
    /// In use (or dead, or not answering yet): one probe per interval.
    Fast,
    /// Carrying nothing: one probe per idle interval.
    Idle,
}

/// The lines' health.
#[derive(Debug, Clone)]
pub struct Health {
    cfg: ProbeConfig,
    lines: Vec<LineProbe>,
    /// The peer has answered a probe on some line.
    peer_answers: bool,
    /// The verdicts last reported by [`Health::poll_change`].
    reported: Vec<bool>,
}

/// Smoothed RTT per RFC 6298 §2 (alpha 1/8, beta 1/4).
fn smooth(srtt: Option<Duration>, rttvar: Duration, sample: Duration) -> (Duration, Duration) {
    match srtt {
        None => (sample, sample / 2),
        Some(s) => {
            let err = s.abs_diff(sample);
            (s * 7 / 8 + sample / 8, rttvar * 3 / 4 + err / 4)
        }
    }
}

impl Health {
    /// `n` lines, all with link up and not probing yet.
    #[must_use]
    pub fn new(cfg: ProbeConfig, n: usize, now: Instant) -> Self {
        let line = LineProbe {
            link_up: true,
            probing: false,
            seq: 0,
            next: now,
            sent: VecDeque::new(),
            last_reply: None,
            last_rx: None,
            counters: None,
            probes_at_reading: 0,
            active_at: None,
            woke_at: None,
            last_probe: None,
            since: now,
            srtt: None,
            rttvar: Duration::ZERO,
            min_rtt: None,
            interval: cfg.interval,
            idle_interval: cfg.idle_interval.max(cfg.interval),
            wake_after: 1,
            penalty: 0,
            died_at: None,
            penalty_at: now,
            in_row: 0,
            alive: true,
            probes_sent: 0,
            replies: 0,
        };
        Self {
            cfg,
            lines: vec![line; n],
            peer_answers: false,
            reported: vec![true; n],
        }
    }

    /// The link of `line` went up or down (rtnetlink). Down is final at once.
    pub fn set_link(&mut self, now: Instant, line: usize, up: bool) {
        if let Some(l) = self.lines.get_mut(line) {
            if l.link_up != up {
                l.link_up = up;
                l.since = now;
                l.in_row = 0;
                l.sent.clear();
                // Up again: if the peer answers probes, the line must answer too; if it answers
                // none, nothing better than the link is known.
                l.alive = up && !self.peer_answers;
            }
        }
    }

    /// Whether `line` can be probed now (it has an address of the peer's family). Starting
    /// to probe gives the line [`ProbeConfig::dead_after`] to answer.
    pub fn set_probing(&mut self, now: Instant, line: usize, probing: bool) {
        if let Some(l) = self.lines.get_mut(line) {
            if l.probing != probing {
                l.probing = probing;
                l.since = now;
                l.next = now;
                l.sent.clear();
                l.in_row = 0;
            }
        }
    }

    /// Probes `line` every `interval` while it carries something and every `idle` while it is
    /// idle, instead of the configured ones (per-line settings).
    pub fn set_intervals(&mut self, line: usize, interval: Duration, idle: Duration) {
        if let Some(l) = self.lines.get_mut(line) {
            l.interval = interval.max(Duration::from_millis(1));
            l.idle_interval = idle.max(l.interval);
        }
    }

    /// `line` is a backup line: it counts as in use only when it sends a burst of packets
    /// ([`RX_BUSY`] in one reading), as when it takes over, not for the handshakes and closes of
    /// the backup subflows every connection has on it.
    pub fn set_backup(&mut self, line: usize, backup: bool) {
        if let Some(l) = self.lines.get_mut(line) {
            l.wake_after = if backup { RX_BUSY } else { 1 };
        }
    }

    fn probes_on(&self) -> bool {
        !self.cfg.interval.is_zero()
    }

    /// Whether `l` is probed at its fast pace now: it sent something lately, it is dead or
    /// never answered (for [`DEAD_FAST`]), or it has no idle pace of its own.
    fn fast(l: &LineProbe, now: Instant) -> bool {
        let recent = |t: Option<Instant>, within: Duration| {
            t.is_some_and(|t| now.saturating_duration_since(t) < within)
        };
        if l.idle_interval <= l.interval || recent(l.active_at, IDLE_AFTER) {
            return true;
        }
        if !l.alive || l.replies == 0 {
            // Dead since it was given up; never answered since probing began.
            let from = if l.replies == 0 {
                Some(l.since)
            } else {
                l.died_at
            };
            return from.is_none_or(|d| now.saturating_duration_since(d) < DEAD_FAST);
        }
        false
    }

    /// When the next probe of `l` is due, if it is probed at all.
    fn probe_due(&self, l: &LineProbe, now: Instant) -> Option<Instant> {
        if !(l.link_up && l.probing) {
            return None;
        }
        let Some(last) = l.last_probe else {
            return Some(l.next);
        };
        if let Some(rx) = l.last_rx.filter(|&rx| l.alive && rx > last) {
            // Busy (a burst since the last probe): its traffic says it works. Asked at once
            // when the traffic stops, whether it still works.
            return Some((rx + BUSY_WINDOW).max(l.next));
        }
        let spacing = if Self::paused(l) {
            self.pause_spacing(l)
        } else {
            Self::pace_interval(l, now)
        };
        Some((last + spacing).max(l.next))
    }

    /// Whether `l` carried traffic and has been quiet since, without answering a probe: the
    /// traffic paused (a sender waiting for its timeout after a loss, the end of a transfer)
    /// or the line died. It is judged by the busy allowance ([`Health::busy_allowance`]).
    fn paused(l: &LineProbe) -> bool {
        l.alive && l.last_rx.is_some_and(|r| Some(r) > l.last_reply)
    }

    /// How long a busy line may be quiet: its probe sent when the traffic stopped gets its
    /// round trip and half of one more, or, on a line whose round trip varies (jitter, a
    /// queue), as long as TCP would wait for it (smoothed round trip and four deviations,
    /// RFC 6298); two thirds of the configured allowance at least. With the smallest round
    /// trip alone, a jittery 80 ms line was given up every minute or two in a soak, for pauses
    /// of its traffic.
    fn busy_allowance(&self, l: &LineProbe) -> Duration {
        let min = l.min_rtt.unwrap_or_default() * 3 / 2;
        let smoothed = l.srtt.map_or(min, |s| (s * 3 / 2).max(s + 4 * l.rttvar));
        (self.cfg.dead_after * 2 / 3).max(BUSY_WINDOW + min.max(smoothed))
    }

    /// The probe spacing while a busy line is quiet ([`Health::paused`]): three probes whose
    /// answers, a smoothed round trip later, come within the busy allowance (never slower than
    /// the line's pace, never faster than every [`MIN_PAUSE_SPACING`]). A pause is when a
    /// lost probe costs most: with one probe per interval, the loss of the one probe sent when
    /// the traffic stopped (1 % loss each way: one pause in fifty) gave a working line up.
    fn pause_spacing(&self, l: &LineProbe) -> Duration {
        let rtt = l.srtt.or(l.min_rtt).unwrap_or_default();
        let allowance = self.busy_allowance(l);
        let slowest = l.interval.max(MIN_PAUSE_SPACING);
        (allowance.saturating_sub(BUSY_WINDOW + rtt) / 2).clamp(MIN_PAUSE_SPACING, slowest)
    }

    /// The probe interval of `l` at `now`: its fast one or its idle one.
    fn pace_interval(l: &LineProbe, now: Instant) -> Duration {
        if Self::fast(l, now) {
            l.interval
        } else {
            l.idle_interval
        }
    }

    /// The next probe to send, if one is due: `(line, sequence number)`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(usize, u16)> {
        if !self.probes_on() {
            return None;
        }
        let i = (0..self.lines.len()).find(|&i| {
            self.probe_due(&self.lines[i], now)
                .is_some_and(|d| d <= now)
        })?;
        let l = &mut self.lines[i];
        l.seq = l.seq.wrapping_add(1);
        l.last_probe = Some(now);
        if l.sent.len() == OUTSTANDING {
            l.sent.pop_front();
        }
        l.sent.push_back((l.seq, now));
        l.probes_sent += 1;
        Some((i, l.seq))
    }

    /// The interface of `line` has received `rx_packets` and sent `tx_packets` so far (read
    /// every [`COUNTER_PERIOD`]).
    ///
    /// Received: growth is a sign of life (but does not bring a dead line back: only answers
    /// do). Only growth of at least [`RX_BUSY`] packets since the last reading counts: a line
    /// whose uplink is dead still receives a trickle (ARP, router adverts, the modem's ICMP
    /// errors for each probe), a line carrying traffic receives far more.
    ///
    /// Sent, probes aside: the line is in use, and probed at its fast pace; an idle line that
    /// starts to send gets a probe at once.
    pub fn on_counters(&mut self, now: Instant, line: usize, rx_packets: u64, tx_packets: u64) {
        let Some(l) = self.lines.get_mut(line) else {
            return;
        };
        if let Some((rx, tx)) = l.counters {
            if rx_packets.saturating_sub(rx) >= RX_BUSY {
                l.last_rx = Some(now);
            }
            let probes = l.probes_sent - l.probes_at_reading;
            let sent = tx_packets.saturating_sub(tx).saturating_sub(probes);
            if sent >= l.wake_after {
                if !Self::fast(l, now) {
                    l.woke_at = Some(now);
                }
                l.active_at = Some(now);
            }
        }
        l.counters = Some((rx_packets, tx_packets));
        l.probes_at_reading = l.probes_sent;
    }

    /// An answer to probe `seq` of `line` arrived. Unknown or repeated numbers are ignored.
    pub fn on_reply(&mut self, now: Instant, line: usize, seq: u16) {
        let recover = self.cfg.recover_after.max(1);
        let Some(l) = self.lines.get_mut(line) else {
            return;
        };
        let Some(pos) = l.sent.iter().position(|&(s, _)| s == seq) else {
            return;
        };
        let (_, sent_at) = l.sent[pos];
        // Older probes still waiting are lost: only this and newer ones can count.
        l.sent.drain(..=pos);
        let sample = now.saturating_duration_since(sent_at);
        let (srtt, rttvar) = smooth(l.srtt, l.rttvar, sample);
        l.min_rtt = Some(l.min_rtt.map_or(sample, |m| m.min(sample)));
        l.srtt = Some(srtt);
        l.rttvar = rttvar;
        l.last_reply = Some(now);
        l.replies += 1;
        l.in_row += 1;
        self.peer_answers = true;
        if !l.alive && l.link_up && l.in_row >= recover {
            l.alive = true;
            if l.died_at
                .is_some_and(|d| now.saturating_duration_since(d) < FALSE_ALARM)
            {
                l.penalty = (l.penalty + 1).min(MAX_PENALTY);
                l.penalty_at = now;
            }
        }
        if l.penalty > 0 && now.saturating_duration_since(l.penalty_at) > FORGIVE {
            l.penalty -= 1;
            l.penalty_at = now;
        }
    }

    /// When `l` was last heard from.
    fn heard(l: &LineProbe) -> Instant {
        [l.last_reply, l.last_rx, l.woke_at]
            .into_iter()
            .flatten()
            .fold(l.since, Instant::max)
    }

    /// How long `l` may stay silent at `now`.
    fn dead_after(&self, l: &LineProbe, now: Instant) -> Duration {
        let interval = Self::pace_interval(l, now);
        // Three probes' worth at the configured pace; slower paces scale it.
        let paced = self
            .cfg
            .dead_after
            .mul_f64(interval.as_secs_f64() / self.cfg.interval.as_secs_f64().max(1e-3));
        // Until a line has answered once its RTT is unknown, and its first packets may wait for
        // address resolution or a radio waking up: a second.
        let path = l.min_rtt.map_or(FIRST_ANSWER, |m| interval + 2 * m);
        // A line that was carrying traffic (the last sign of life was a burst of packets, not
        // a probe answer) and goes quiet is dead sooner: packets came every few milliseconds.
        let base = if Self::paused(l) {
            self.busy_allowance(l)
        } else {
            paced.max(path)
        };
        base * (1 << l.penalty)
    }

    /// Judges silent lines at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.peer_answers || !self.probes_on() {
            return;
        }
        for i in 0..self.lines.len() {
            let l = &self.lines[i];
            if !(l.alive && l.link_up && l.probing) {
                continue;
            }
            let heard = Self::heard(l);
            if now.saturating_duration_since(heard) > self.dead_after(l, now) {
                let l = &mut self.lines[i];
                l.alive = false;
                l.in_row = 0;
                l.died_at = Some(now);
            }
        }
    }

    /// When [`Health::handle_timeout`] or [`Health::poll_transmit`] has something to do.
    #[must_use]
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if !self.probes_on() {
            return None;
        }
        self.lines
            .iter()
            .filter(|l| l.link_up && l.probing)
            .flat_map(|l| {
                let heard = Self::heard(l);
                let judge = (self.peer_answers && l.alive)
                    .then(|| heard + self.dead_after(l, now) + Duration::from_millis(1));
                [self.probe_due(l, now), judge]
            })
            .flatten()
            .min()
    }

    /// Whether `line` is usable now.
    #[must_use]
    pub fn usable(&self, line: usize) -> bool {
        self.verdict(line) != Verdict::Down
    }

    /// What is said of `line`.
    #[must_use]
    pub fn verdict(&self, line: usize) -> Verdict {
        match self.lines.get(line) {
            Some(l) if !l.link_up => Verdict::Down,
            Some(l) if !self.peer_answers || !self.probes_on() || !l.probing => {
                if l.alive || !l.probing {
                    Verdict::Unknown
                } else {
                    Verdict::Down
                }
            }
            Some(l) if l.alive => Verdict::Up,
            _ => Verdict::Down,
        }
    }

    /// A line whose usability changed since last asked: `(line, usable)`.
    pub fn poll_change(&mut self) -> Option<(usize, bool)> {
        for i in 0..self.lines.len() {
            let now = self.usable(i);
            if self.reported[i] != now {
                self.reported[i] = now;
                return Some((i, now));
            }
        }
        None
    }

    /// Whether the link of `line` is up.
    #[must_use]
    pub fn link_up(&self, line: usize) -> bool {
        self.lines.get(line).is_some_and(|l| l.link_up)
    }

    /// The smoothed probe RTT of `line`.
    #[must_use]
    pub fn rtt(&self, line: usize) -> Option<Duration> {
        self.lines.get(line).and_then(|l| l.srtt)
    }

    /// How `line` is probed at `now`.
    #[must_use]
    pub fn pace(&self, line: usize, now: Instant) -> Pace {
        match self.lines.get(line) {
            Some(l) if self.probes_on() && l.link_up && l.probing => {
                if l.alive && l.last_rx.is_some_and(|r| now < r + BUSY_WINDOW) {
                    Pace::Busy
                } else if Self::fast(l, now) {
                    Pace::Fast
                } else {
                    Pace::Idle
                }
            }
            _ => Pace::Off,
        }
    }

    /// Probes sent and answered on `line`.
    #[must_use]
    pub fn counts(&self, line: usize) -> (u64, u64) {
        self.lines
            .get(line)
            .map_or((0, 0), |l| (l.probes_sent, l.replies))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Round numbers: a probe every 100 ms, silent for 250 ms is dead; no idle pace of its own
    /// (the idle pace has tests of its own).
    fn cfg() -> ProbeConfig {
        ProbeConfig {
            interval: 100 * MS,
            dead_after: 250 * MS,
            recover_after: 2,
            idle_interval: 100 * MS,
        }
    }

    /// Runs `h` from `t` for `dur` in 1 ms steps; probes of lines in `answering` are answered
    /// after `rtt`. Returns the time each usability change was seen.
    fn run(
        h: &mut Health,
        t: &mut Instant,
        dur: Duration,
        answering: &[usize],
        rtt: Duration,
        inflight: &mut Vec<(Instant, usize, u16)>,
    ) -> Vec<(Duration, usize, bool)> {
        run_counted(h, t, dur, answering, rtt, inflight, None)
    }

    /// The lines' packet counters, read every [`COUNTER_PERIOD`]: probes and answers count in
    /// them, and `traffic(line)` adds what else a line received and sent since the last reading.
    struct Counters<'a> {
        totals: Vec<(u64, u64)>,
        traffic: &'a mut dyn FnMut(usize) -> (u64, u64),
    }

    /// [`run`], with the lines' counters read as the driver reads them.
    fn run_counted(
        h: &mut Health,
        t: &mut Instant,
        dur: Duration,
        answering: &[usize],
        rtt: Duration,
        inflight: &mut Vec<(Instant, usize, u16)>,
        mut counters: Option<&mut Counters<'_>>,
    ) -> Vec<(Duration, usize, bool)> {
        let start = *t;
        let mut changes = Vec::new();
        while *t < start + dur {
            *t += MS;
            let now = *t;
            inflight.retain(|&(at, line, seq)| {
                if at <= now {
                    h.on_reply(now, line, seq);
                    if let Some(c) = counters.as_deref_mut() {
                        c.totals[line].0 += 1;
                    }
                    false
                } else {
                    true
                }
            });
            if let Some(c) = counters.as_deref_mut() {
                if (now - start).as_millis() % COUNTER_PERIOD.as_millis() == 0 {
                    for line in 0..c.totals.len() {
                        let (rx, tx) = (c.traffic)(line);
                        c.totals[line].0 += rx;
                        c.totals[line].1 += tx;
                        h.on_counters(now, line, c.totals[line].0, c.totals[line].1);
                    }
                }
            }
            h.handle_timeout(now);
            while let Some((line, seq)) = h.poll_transmit(now) {
                if let Some(c) = counters.as_deref_mut() {
                    c.totals[line].1 += 1;
                }
                if answering.contains(&line) {
                    inflight.push((now + rtt, line, seq));
                }
            }
            while let Some((line, up)) = h.poll_change() {
                changes.push((now - start, line, up));
            }
        }
        changes
    }

    /// Lines at the default paces (50 ms, dead after 150 ms; idle: 1 s), every one probing,
    /// their probes answered after `rtt` and their counters read as the driver reads them.
    struct Rig {
        h: Health,
        t: Instant,
        rtt: Duration,
        inflight: Vec<(Instant, usize, u16)>,
        totals: Vec<(u64, u64)>,
    }

    impl Rig {
        fn new(lines: usize, rtt: Duration) -> Self {
            let t = Instant::now();
            let mut h = Health::new(ProbeConfig::default(), lines, t);
            for line in 0..lines {
                h.set_probing(t, line, true);
            }
            Self {
                h,
                t,
                rtt,
                inflight: Vec::new(),
                totals: vec![(0, 0); lines],
            }
        }

        /// Runs for `dur`, the probes of `answering` answered; `traffic(line)` is what else a
        /// line received and sent per reading. Returns the usability changes.
        fn run(
            &mut self,
            dur: Duration,
            answering: &[usize],
            mut traffic: impl FnMut(usize) -> (u64, u64),
        ) -> Vec<(Duration, usize, bool)> {
            let mut c = Counters {
                totals: std::mem::take(&mut self.totals),
                traffic: &mut traffic,
            };
            let rtt = self.rtt;
            let ch = run_counted(
                &mut self.h,
                &mut self.t,
                dur,
                answering,
                rtt,
                &mut self.inflight,
                Some(&mut c),
            );
            self.totals = c.totals;
            ch
        }

        /// `line` answers nothing from now on (answers on their way are lost too).
        fn silence(&mut self, line: usize) {
            self.inflight.retain(|&(_, l, _)| l != line);
        }

        fn probes(&self, line: usize) -> u64 {
            self.h.counts(line).0
        }

        fn pace(&self, line: usize) -> Pace {
            self.h.pace(line, self.t)
        }
    }

    /// Nothing but probes on any line.
    fn quiet(_: usize) -> (u64, u64) {
        (0, 0)
    }

    fn lines_of(ch: &[(Duration, usize, bool)]) -> Vec<(usize, bool)> {
        ch.iter().map(|c| (c.1, c.2)).collect()
    }

    #[test]
    fn a_silent_line_is_dead_within_dead_after_and_back_after_two_answers() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut h = Health::new(cfg(), 2, t0);
        h.set_probing(t0, 0, true);
        h.set_probing(t0, 1, true);
        let mut inflight = Vec::new();
        let c = run(&mut h, &mut t, 2000 * MS, &[0, 1], 40 * MS, &mut inflight);
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(h.verdict(0), Verdict::Up);
        assert_eq!(h.rtt(0), Some(40 * MS));
        // Line 0 goes silent (replies in flight are lost too).
        inflight.retain(|&(_, l, _)| l != 0);
        let c = run(&mut h, &mut t, 1000 * MS, &[1], 40 * MS, &mut inflight);
        assert_eq!(c.len(), 1, "{c:?}");
        let (at, line, up) = c[0];
        assert_eq!((line, up), (0, false));
        // The last answer came at most one interval before the silence.
        assert!(at > 150 * MS && at <= 251 * MS, "dead after {at:?}");
        assert_eq!(h.verdict(0), Verdict::Down);
        // It answers again: usable after the second answer.
        let c = run(&mut h, &mut t, 1000 * MS, &[0, 1], 40 * MS, &mut inflight);
        assert_eq!(c.len(), 1, "{c:?}");
        let (at, line, up) = c[0];
        assert_eq!((line, up), (0, true));
        assert!(at >= 140 * MS && at <= 241 * MS, "back after {at:?}");
    }

    #[test]
    fn a_peer_that_never_answers_leaves_lines_unknown_and_usable() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut h = Health::new(cfg(), 2, t0);
        h.set_probing(t0, 0, true);
        h.set_probing(t0, 1, true);
        let mut inflight = Vec::new();
        let c = run(&mut h, &mut t, 3000 * MS, &[], 40 * MS, &mut inflight);
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(h.verdict(0), Verdict::Unknown);
        assert!(h.usable(1));
        assert_eq!(h.counts(0).0, 30, "one probe per 100 ms");
        // A line that never answers while another does is dead (after a second's grace).
        let c = run(&mut h, &mut t, 1500 * MS, &[1], 40 * MS, &mut inflight);
        assert_eq!(
            c.iter().map(|c| (c.1, c.2)).collect::<Vec<_>>(),
            vec![(0, false)]
        );
    }

    #[test]
    fn link_down_is_final_at_once_and_link_up_waits_for_answers() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut h = Health::new(cfg(), 2, t0);
        h.set_probing(t0, 0, true);
        h.set_probing(t0, 1, true);
        let mut inflight = Vec::new();
        run(&mut h, &mut t, 500 * MS, &[0, 1], 20 * MS, &mut inflight);
        h.set_link(t, 0, false);
        assert_eq!(h.poll_change(), Some((0, false)));
        assert_eq!(h.poll_change(), None);
        let c = run(&mut h, &mut t, 300 * MS, &[0, 1], 20 * MS, &mut inflight);
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(h.counts(0), (5, 5), "no probe while the link is down");
        h.set_link(t, 0, true);
        assert_eq!(h.poll_change(), None, "not before it answers");
        let c = run(&mut h, &mut t, 500 * MS, &[0, 1], 20 * MS, &mut inflight);
        assert_eq!(
            c.iter().map(|c| (c.1, c.2)).collect::<Vec<_>>(),
            vec![(0, true)]
        );
    }

    #[test]
    fn a_slow_line_gets_a_longer_silence_allowance_than_a_fast_one() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut h = Health::new(cfg(), 2, t0);
        h.set_probing(t0, 0, true);
        h.set_probing(t0, 1, true);
        let mut inflight = Vec::new();
        run(&mut h, &mut t, 5000 * MS, &[0, 1], 250 * MS, &mut inflight);
        inflight.clear();
        let c = run(&mut h, &mut t, 2000 * MS, &[], 250 * MS, &mut inflight);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c[0].0 > 400 * MS, "a 250 ms line is given 2 RTT: {c:?}");
    }

    #[test]
    fn a_busy_line_that_drops_probes_but_receives_is_not_dead_and_silence_is() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut h = Health::new(cfg(), 2, t0);
        h.set_probing(t0, 0, true);
        h.set_probing(t0, 1, true);
        let mut inflight = Vec::new();
        run(&mut h, &mut t, 1000 * MS, &[0, 1], 30 * MS, &mut inflight);
        // Line 0's probes are all dropped for 2 s, but packets keep arriving on it.
        inflight.retain(|&(_, l, _)| l != 0);
        let mut rx = 1000;
        let start = t;
        while t < start + 2000 * MS {
            rx += 10;
            h.on_counters(t, 0, rx, 0);
            let c = run(&mut h, &mut t, 20 * MS, &[1], 30 * MS, &mut inflight);
            assert!(c.is_empty(), "{c:?}");
        }
        // Then nothing at all arrives: dead within dead_after of the last packet.
        let c = run(&mut h, &mut t, 1000 * MS, &[1], 30 * MS, &mut inflight);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!((c[0].1, c[0].2), (0, false));
        assert!(c[0].0 <= 251 * MS, "{c:?}");
    }

    #[test]
    fn a_false_alarm_doubles_the_allowance() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut h = Health::new(cfg(), 2, t0);
        h.set_probing(t0, 0, true);
        h.set_probing(t0, 1, true);
        let mut inflight = Vec::new();
        run(&mut h, &mut t, 1000 * MS, &[0, 1], 20 * MS, &mut inflight);
        let mut silences = Vec::new();
        for _ in 0..2 {
            // Line 0 answers nothing for 300 ms, then again.
            inflight.retain(|&(_, l, _)| l != 0);
            let c = run(&mut h, &mut t, 600 * MS, &[1], 20 * MS, &mut inflight);
            silences.push(c.first().map(|c| c.0));
            run(&mut h, &mut t, 2000 * MS, &[0, 1], 20 * MS, &mut inflight);
        }
        // Given up after about 250 ms the first time; it was back within a second, so the
        // second time it is allowed 500 ms of the 600 ms silence.
        let (a, b) = (silences[0].unwrap(), silences[1].unwrap());
        assert!(a <= 251 * MS && b > 400 * MS, "{silences:?}");
    }

    #[test]
    fn a_trickle_of_packets_does_not_keep_a_dead_line_alive() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut h = Health::new(cfg(), 2, t0);
        h.set_probing(t0, 0, true);
        h.set_probing(t0, 1, true);
        let mut inflight = Vec::new();
        run(&mut h, &mut t, 1000 * MS, &[0, 1], 30 * MS, &mut inflight);
        inflight.retain(|&(_, l, _)| l != 0);
        // An ICMP error from the modem per probe: one packet per 100 ms.
        let mut rx = 1000;
        let mut changes = Vec::new();
        for _ in 0..10 {
            rx += 1;
            h.on_counters(t, 0, rx, 0);
            changes.extend(run(&mut h, &mut t, 100 * MS, &[1], 30 * MS, &mut inflight));
        }
        assert_eq!(
            changes.iter().map(|c| (c.1, c.2)).collect::<Vec<_>>(),
            vec![(0, false)]
        );
    }

    #[test]
    fn without_answers_from_the_peer_a_link_back_up_is_usable_again() {
        let t0 = Instant::now();
        let mut h = Health::new(cfg(), 1, t0);
        h.set_probing(t0, 0, true);
        h.set_link(t0, 0, false);
        assert!(!h.usable(0));
        h.set_link(t0 + 10 * MS, 0, true);
        assert_eq!(h.verdict(0), Verdict::Unknown);
    }

    #[test]
    fn unknown_and_repeated_answers_are_ignored() {
        let t0 = Instant::now();
        let mut h = Health::new(cfg(), 1, t0);
        h.set_probing(t0, 0, true);
        let (_, seq) = h.poll_transmit(t0).unwrap();
        h.on_reply(t0 + 10 * MS, 0, seq.wrapping_add(7));
        h.on_reply(t0 + 10 * MS, 5, seq);
        assert_eq!(h.counts(0), (1, 0));
        h.on_reply(t0 + 10 * MS, 0, seq);
        h.on_reply(t0 + 11 * MS, 0, seq);
        assert_eq!(h.counts(0), (1, 1));
    }

    #[test]
    fn an_idle_line_is_probed_at_the_idle_pace_and_its_first_packet_brings_the_fast_one_back() {
        let mut r = Rig::new(1, 30 * MS);
        // Nothing but probes for 10 s: fast pace (it just started), then idle.
        let ch = r.run(IDLE_AFTER + 500 * MS, &[0], quiet);
        assert!(ch.is_empty(), "{ch:?}");
        assert_eq!(r.pace(0), Pace::Idle);
        let before = r.probes(0);
        let ch = r.run(10_000 * MS, &[0], quiet);
        assert!(ch.is_empty(), "an idle line that answers stays up: {ch:?}");
        let idle_probes = r.probes(0) - before;
        assert!(
            (9..=11).contains(&idle_probes),
            "one a second: {idle_probes}"
        );
        // It sends three packets: a probe goes within one reading, then one per 50 ms.
        let mut once = true;
        let before = r.probes(0);
        let ch = r.run(2 * COUNTER_PERIOD, &[0], |_| {
            (0, if std::mem::take(&mut once) { 3 } else { 0 })
        });
        assert!(r.probes(0) > before, "a probe as soon as it sent");
        assert_eq!(r.pace(0), Pace::Fast);
        let before = r.probes(0);
        let ch2 = r.run(1000 * MS, &[0], quiet);
        // Its last answer at the idle pace was up to a second old: no reason to give it up.
        assert!(ch.is_empty() && ch2.is_empty(), "{ch:?} {ch2:?}");
        let fast = r.probes(0) - before;
        assert!((19..=21).contains(&fast), "fast pace while in use: {fast}");
    }

    #[test]
    fn a_dead_idle_line_that_starts_to_send_is_given_up_within_the_fast_allowance() {
        let mut r = Rig::new(2, 20 * MS);
        r.run(IDLE_AFTER + 2000 * MS, &[0, 1], quiet);
        assert_eq!(r.pace(0), Pace::Idle);
        // Line 0 goes silent; 100 ms later the gateway sends a SYN on it.
        r.silence(0);
        r.run(100 * MS, &[1], quiet);
        let mut syn = true;
        let ch = r.run(1000 * MS, &[1], |line| {
            (0, u64::from(line == 0 && std::mem::take(&mut syn)))
        });
        assert_eq!(lines_of(&ch), vec![(0, false)]);
        // Given up 150 ms (three fast probes) after the reading that saw the SYN, not three
        // idle seconds after its last answer, nor at once for that old answer.
        assert!(
            ch[0].0 > 150 * MS && ch[0].0 <= COUNTER_PERIOD + 152 * MS,
            "{ch:?}"
        );
    }

    #[test]
    fn a_busy_line_is_not_probed_and_is_asked_at_once_when_its_traffic_stops() {
        // A download on an 80 ms line: 40 packets in, 20 out per reading.
        let mut r = Rig::new(1, 80 * MS);
        let download = |_| (40, 20);
        r.run(1000 * MS, &[0], download);
        let before = r.probes(0);
        let ch = r.run(5000 * MS, &[0], download);
        assert!(ch.is_empty(), "{ch:?}");
        assert_eq!(
            r.probes(0),
            before,
            "no probe while its traffic says it works"
        );
        assert_eq!(r.pace(0), Pace::Busy);
        // The download ends: a probe goes at once, and its answer keeps the line up although
        // it comes a round trip later.
        let ch = r.run(2 * COUNTER_PERIOD, &[0], quiet);
        assert!(ch.is_empty(), "{ch:?}");
        assert_eq!(
            r.probes(0),
            before + 1,
            "asked as soon as the traffic stopped"
        );
        let ch = r.run(3000 * MS, &[0], quiet);
        assert!(ch.is_empty(), "the end of a download is no failure: {ch:?}");
    }

    #[test]
    fn a_busy_line_whose_round_trip_varies_is_not_given_up_when_its_traffic_pauses() {
        // A line whose probes come back in 45 ms at best and in 120 ms at times (jitter, a
        // queue), as a loaded LTE line's do.
        let mut r = Rig::new(1, 45 * MS);
        let sending = |_| (0, 5);
        r.run(1000 * MS, &[0], sending);
        r.rtt = 120 * MS;
        let ch = r.run(2000 * MS, &[0], sending);
        assert!(ch.is_empty(), "{ch:?}");
        // Busy, then its traffic pauses (a sender waiting for a timeout after a loss): the
        // probe sent then takes the slow round trip, and the line is still up.
        r.run(1000 * MS, &[0], |_| (40, 20));
        let ch = r.run(1000 * MS, &[0], sending);
        assert!(ch.is_empty(), "a pause is no failure: {ch:?}");
        // Blackholed after the same pattern, it is given up all the same.
        r.run(1000 * MS, &[0], |_| (40, 20));
        r.silence(0);
        let ch = r.run(1000 * MS, &[], sending);
        assert_eq!(lines_of(&ch), vec![(0, false)], "{ch:?}");
    }

    #[test]
    fn a_busy_line_whose_pause_probe_is_lost_is_not_given_up() {
        // A loaded 40 ms line (1 % loss each way, as in the soak benchmark).
        let mut r = Rig::new(1, 40 * MS);
        r.run(1000 * MS, &[0], |_| (0, 5));
        r.run(1000 * MS, &[0], |_| (40, 20));
        // Its traffic pauses (the sender waits for a timeout), and the probe sent then is lost;
        // the next ones are answered.
        let before = r.probes(0);
        let ch = r.run(BUSY_WINDOW + MS, &[], quiet);
        assert!(ch.is_empty(), "{ch:?}");
        assert_eq!(r.probes(0), before + 1, "the pause's first probe");
        let ch = r.run(1000 * MS, &[0], quiet);
        assert!(ch.is_empty(), "one lost probe is no failure: {ch:?}");
        // Blackholed at the same moment, it is given up as fast as before: two thirds of
        // the configured allowance after its last burst.
        r.run(1000 * MS, &[0], |_| (40, 20));
        r.silence(0);
        let ch = r.run(1000 * MS, &[], quiet);
        assert_eq!(lines_of(&ch), vec![(0, false)], "{ch:?}");
        assert!(ch[0].0 <= 101 * MS, "{ch:?}");
    }

    #[test]
    fn a_busy_line_that_goes_silent_is_given_up_without_a_probe_in_flight_before() {
        let mut r = Rig::new(2, 20 * MS);
        r.run(3000 * MS, &[0, 1], |line| {
            if line == 0 { (40, 20) } else { (0, 0) }
        });
        // Blackholed: nothing arrives on line 0 any more; our side keeps sending.
        r.silence(0);
        let ch = r.run(
            1000 * MS,
            &[1],
            |line| {
                if line == 0 { (0, 5) } else { (0, 0) }
            },
        );
        assert_eq!(lines_of(&ch), vec![(0, false)]);
        // 100 ms (two thirds of 150) after its last burst.
        assert!(ch[0].0 <= 101 * MS, "{ch:?}");
    }

    #[test]
    fn a_backup_line_stays_idle_through_its_subflows_handshakes_and_wakes_when_it_takes_over() {
        let mut r = Rig::new(1, 30 * MS);
        r.h.set_backup(0, true);
        // Every 100 ms a connection opens a backup subflow on it: SYN, then ACK.
        let mut n = 0u64;
        r.run(IDLE_AFTER + 500 * MS, &[0], |_| {
            n += 1;
            (u64::from(n % 4 == 1), u64::from(n % 4 < 2))
        });
        assert_eq!(r.pace(0), Pace::Idle, "joins are no use of a backup line");
        // It takes over: a burst of sent packets brings the fast pace at once.
        r.run(COUNTER_PERIOD, &[0], |_| (40, 20));
        assert_ne!(r.pace(0), Pace::Idle);
    }
}
