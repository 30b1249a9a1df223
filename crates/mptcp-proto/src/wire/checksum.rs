//! The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of 16-bit
//! words. Used by IPv4, TCP, and MPTCP's DSS checksum (RFC 8684 §3.3.1).
//!
//! Sums are kept unfolded in a `u64` so that pieces (a pseudo-header, a payload) can be added
//! together in any order and folded once at the end.

/// Adds `data` as big-endian 16-bit words (an odd last byte is padded with zero) to `acc`.
#[must_use]
pub fn add(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        // Two 32-bit words at once: 2^16 ≡ 1 (mod 2^16 - 1), so a 32-bit word adds the same as
        // its two 16-bit halves once folded. The u64 cannot overflow below 16 GiB of data.
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds an accumulated sum to 16 bits (without complementing).
#[must_use]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    #[expect(clippy::cast_possible_truncation, reason = "folded below 0x10000")]
    let folded = acc as u16;
    folded
}

/// The checksum field value for an accumulated sum: `!fold(acc)`.
#[must_use]
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// Checksum of `data` alone.
#[must_use]
pub fn checksum(data: &[u8]) -> u16 {
    finish(add(0, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to 0xddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_lengths_pad_with_zero_and_pieces_add_up() {
        let data: Vec<u8> = (0..=200).map(|i: u32| (i * 7 % 251) as u8).collect();
        let whole = fold(add(0, &data));
        // Split at an even offset: the sums of the pieces add up to the whole.
        let (a, b) = data.split_at(64);
        assert_eq!(fold(add(add(0, a), b)), whole);
        assert_eq!(fold(add(0, &[0xab])), 0xab00);
        // A buffer with its own checksum appended sums to 0xffff.
        let mut with = data[..200].to_vec();
        let c = checksum(&with);
        with.extend_from_slice(&c.to_be_bytes());
        assert_eq!(fold(add(0, &with)), 0xffff);
    }
}
