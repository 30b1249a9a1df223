//! Each subflow with room in turn, one mapping each: for tests that want every subflow used
//! whatever its RTT.

use super::{Candidate, Context, Scheduler};

/// See the module.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobin {
    /// The subflow served last.
    last: Option<usize>,
}

impl Scheduler for RoundRobin {
    fn pick(&mut self, candidates: &[Candidate], _ctx: &Context) -> Option<(usize, u64)> {
        let with_room = || candidates.iter().filter(|c| c.room > 0);
        let next = with_room()
            .filter(|c| self.last.is_none_or(|l| c.index > l))
            .min_by_key(|c| c.index)
            .or_else(|| with_room().min_by_key(|c| c.index))?;
        self.last = Some(next.index);
        Some((next.index, next.room.min(next.mss.max(1))))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::cand;
    use super::*;

    #[test]
    fn subflows_take_turns_a_segment_each_skipping_full_ones() {
        let ctx = Context::default();
        let mut s = RoundRobin::default();
        let c = [
            cand(0, 80, 10, 5000),
            cand(1, 20, 10, 5000),
            cand(2, 40, 10, 0),
        ];
        let order: Vec<_> = (0..4).map(|_| s.pick(&c, &ctx).unwrap()).collect();
        assert_eq!(order, [(0, 1400), (1, 1400), (0, 1400), (1, 1400)]);
    }
}
