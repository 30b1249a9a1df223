//! Hash maps on the packet path: a fast keyed hash (`aHash`) instead of the standard `SipHash`,
//! keyed by HMAC-SHA-256 of the host's secret, so lookups stay cheap per segment while an
//! attacker who picks addresses and ports cannot aim collisions (the keys come from nothing
//! that goes on the wire), and a simulation run stays the same run for the same secret.

use std::collections::HashMap;

use crate::tcp::isn::Secret;

/// A hash map with secret keys.
pub(crate) type KeyedMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// An empty map whose hash keys derive from `secret` and `purpose` (two maps of one stack do
/// not share keys).
pub(crate) fn keyed_map<K, V>(secret: &Secret, purpose: &str) -> KeyedMap<K, V> {
    let k = derive(secret, purpose.as_bytes());
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&k[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    HashMap::with_hasher(ahash::RandomState::with_seeds(
        word(0),
        word(1),
        word(2),
        word(3),
    ))
}

/// 32 bytes for `purpose` from `secret`: HMAC-SHA-256 of the purpose.
pub(crate) fn derive(secret: &Secret, purpose: &[u8]) -> [u8; 32] {
    crate::crypto::hmac_sha256_raw(secret, purpose)
}
