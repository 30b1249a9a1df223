//! Every byte on every working subflow: the connection hands new bytes to the subflow this
//! scheduler picks (the lowest RTT with room) and the same bytes to each other subflow as it
//! gets room, as long as the peer has not acknowledged them at the data level. The first copy
//! to arrive is delivered; the receiver drops the others (RFC 8684 §3.3.6 allows the same data
//! on several subflows). For latency-critical traffic on lossy lines (games, voice, control
//! links): a loss on one line costs nothing while another delivers. It costs the sum of the
//! lines for the throughput of the best one.

use super::{Candidate, Context, Scheduler, fastest};

/// See the module.
#[derive(Debug, Clone, Copy, Default)]
pub struct Redundant;

impl Scheduler for Redundant {
    fn pick(&mut self, candidates: &[Candidate], _ctx: &Context) -> Option<(usize, u64)> {
        fastest(candidates, true).map(|c| (c.index, c.room))
    }

    fn redundant(&self) -> bool {
        true
    }
}
