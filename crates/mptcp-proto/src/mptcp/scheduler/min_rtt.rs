//! The lowest-RTT scheduler: of the subflows with room, the one with the lowest smoothed RTT
//! (Linux's default, `net/mptcp/protocol.c`'s `mptcp_subflow_get_send`, which also weighs the
//! subflows' pacing rates).

use super::{Candidate, Context, Scheduler, fastest};

/// See the module.
#[derive(Debug, Clone, Copy, Default)]
pub struct MinRtt;

impl Scheduler for MinRtt {
    fn pick(&mut self, candidates: &[Candidate], _ctx: &Context) -> Option<(usize, u64)> {
        fastest(candidates, true).map(|c| (c.index, c.room))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::cand;
    use super::*;

    #[test]
    fn the_fastest_with_room_goes_first() {
        let ctx = Context::default();
        let mut s = MinRtt;
        let c = [cand(0, 80, 10, 5000), cand(1, 20, 10, 3000)];
        assert_eq!(s.pick(&c, &ctx), Some((1, 3000)));
        let c = [cand(0, 80, 10, 5000), cand(1, 20, 10, 0)];
        assert_eq!(s.pick(&c, &ctx), Some((0, 5000)), "the fast one is full");
    }
}
