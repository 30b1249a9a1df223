//! Hash maps on the packet path: a fast keyed hash (`aHash`) instead of the standard `SipHash`,
//! its keys drawn from the stack's seed, so lookups stay cheap per segment, an attacker who
//! picks addresses and ports cannot aim collisions without the seed, and a simulation run
//! stays the same run for the same seed.

use std::collections::HashMap;

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A hash map keyed by a seed.
pub(crate) type KeyedMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// An empty map whose hash keys derive from `seed` (and `purpose`, so that two maps of one
/// stack do not share keys); the stack's own random stream is left untouched.
pub(crate) fn keyed_map<K, V>(seed: u64, purpose: u64) -> KeyedMap<K, V> {
    let mut rng =
        Xoshiro256PlusPlus::seed_from_u64(seed ^ purpose.rotate_left(32) ^ 0x6d70_626f_6e64);
    HashMap::with_hasher(ahash::RandomState::with_seeds(
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
    ))
}
