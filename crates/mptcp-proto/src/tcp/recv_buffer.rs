//! Received bytes: those in order wait for the application, those beyond a hole wait for the
//! hole to fill (and are reported to the sender as SACK blocks, RFC 2018).
//!
//! Positions are 64-bit stream offsets. The connection admits only bytes inside the window it
//! advertised, so what is held never exceeds the capacity.

use std::collections::{BTreeMap, VecDeque};

/// What one [`RecvBuffer::insert`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inserted {
    /// In-order bytes it made readable (including held bytes a filled hole released).
    pub readable: usize,
    /// Bytes it stored beyond a hole.
    pub out_of_order: usize,
    /// It filled (part of) a hole before data already held.
    pub filled_hole: bool,
    /// Nothing in it was new.
    pub duplicate: bool,
}

/// In-order and out-of-order received bytes.
#[derive(Debug, Clone)]
pub struct RecvBuffer {
    ready: VecDeque<u8>,
    /// Stream offset of the next in-order byte (`RCV.NXT` as an offset).
    next: u64,
    /// Bytes beyond `next`, by offset; never overlapping, none at or before `next`.
    held: BTreeMap<u64, Vec<u8>>,
    held_bytes: usize,
    /// Offsets of the latest out-of-order arrivals, newest first: the first SACK block is the
    /// one holding the newest (RFC 2018 §4).
    recent: [Option<u64>; 4],
    capacity: usize,
}

impl RecvBuffer {
    /// An empty buffer of `capacity` bytes whose next expected byte is offset 0.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            ready: VecDeque::new(),
            next: 0,
            held: BTreeMap::new(),
            held_bytes: 0,
            recent: [None; 4],
            capacity,
        }
    }

    /// The next in-order offset expected.
    #[must_use]
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Bytes the application can read now.
    #[must_use]
    pub fn readable(&self) -> usize {
        self.ready.len()
    }

    /// Bytes held beyond a hole.
    #[must_use]
    pub fn held(&self) -> usize {
        self.held_bytes
    }

    /// The most it holds.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Grows (or shrinks, never below what is readable) the capacity.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }

    /// Room for new bytes counted from [`RecvBuffer::next`]: the window to advertise.
    #[must_use]
    pub fn window(&self) -> usize {
        self.capacity.saturating_sub(self.ready.len())
    }

    /// Moves readable bytes into `out`; returns how many.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.ready.len());
        let (a, b) = self.ready.as_slices();
        let first = n.min(a.len());
        out[..first].copy_from_slice(&a[..first]);
        out[first..n].copy_from_slice(&b[..n - first]);
        self.ready.drain(..n);
        n
    }

    /// The bytes in order, in place (the ring's two runs), for a reader that copies them
    /// elsewhere and then `consume`s them.
    #[must_use]
    pub fn peek(&self) -> (&[u8], &[u8]) {
        self.ready.as_slices()
    }

    /// Drops the first `n` bytes in order (at most those there are); returns how many.
    pub fn consume(&mut self, n: usize) -> usize {
        let n = n.min(self.ready.len());
        self.ready.drain(..n);
        n
    }

    /// Stores `data` received at stream offset `offset`.
    pub fn insert(&mut self, offset: u64, data: &[u8]) -> Inserted {
        let mut r = Inserted::default();
        let end = offset + data.len() as u64;
        if end <= self.next {
            r.duplicate = !data.is_empty();
            return r;
        }
        let skip = usize::try_from(self.next.saturating_sub(offset)).unwrap_or(usize::MAX);
        let (offset, data) = (offset.max(self.next), &data[skip.min(data.len())..]);
        if offset == self.next {
            r.filled_hole = !self.held.is_empty();
            self.ready.extend(data);
            self.next = end;
            r.readable = data.len() + self.release();
            return r;
        }
        r.out_of_order = self.hold(offset, data);
        r.duplicate = r.out_of_order == 0;
        if !r.duplicate {
            self.recent.copy_within(0..3, 1);
            self.recent[0] = Some(offset);
        }
        r
    }

    /// Moves held bytes that now follow `next` into the readable queue.
    fn release(&mut self) -> usize {
        let mut moved = 0;
        while let Some(entry) = self.held.first_entry() {
            let start = *entry.key();
            if start > self.next {
                break;
            }
            let bytes = entry.remove();
            self.held_bytes -= bytes.len();
            let end = start + bytes.len() as u64;
            if end > self.next {
                let skip = usize::try_from(self.next - start).unwrap_or(0);
                self.ready.extend(&bytes[skip..]);
                moved += bytes.len() - skip;
                self.next = end;
            }
        }
        moved
    }

    /// Stores the parts of `data` at `offset` (> `next`) that are not held yet; returns how
    /// many bytes were new.
    fn hold(&mut self, mut offset: u64, mut data: &[u8]) -> usize {
        let mut added = 0;
        // Trim what the block before already covers.
        if let Some((&s, b)) = self.held.range(..=offset).next_back() {
            let e = s + b.len() as u64;
            if e >= offset + data.len() as u64 {
                return 0;
            }
            if e > offset {
                let cut = usize::try_from(e - offset).unwrap_or(0);
                data = &data[cut..];
                offset = e;
            }
        }
        while !data.is_empty() {
            let end = offset + data.len() as u64;
            let next_block = self
                .held
                .range(offset..end)
                .next()
                .map(|(&s, b)| (s, s + b.len() as u64));
            let piece_end = next_block.map_or(end, |(s, _)| s);
            let n = usize::try_from(piece_end - offset).unwrap_or(0);
            if n > 0 && self.put(offset, &data[..n]) {
                added += n;
            }
            match next_block {
                Some((_, block_end)) if block_end < end => {
                    let cut = usize::try_from(block_end - offset).unwrap_or(0);
                    data = &data[cut..];
                    offset = block_end;
                }
                _ => break,
            }
        }
        added
    }

    /// Most separate pieces held beyond holes: each costs a map entry and an allocation, so
    /// a peer sending tiny segments around holes must not multiply them (legitimate traffic
    /// has one piece per hole, far fewer).
    fn max_pieces(&self) -> usize {
        (self.capacity / 1024).max(64)
    }

    /// Stores new bytes, appending to the block that ends where they begin; `false` if they
    /// would start one piece too many (they are dropped, to come again).
    fn put(&mut self, offset: u64, data: &[u8]) -> bool {
        if let Some((&s, b)) = self.held.range_mut(..offset).next_back() {
            if s + b.len() as u64 == offset {
                b.extend_from_slice(data);
                self.held_bytes += data.len();
                return true;
            }
        }
        if self.held.len() >= self.max_pieces() {
            return false;
        }
        self.held_bytes += data.len();
        self.held.insert(offset, data.to_vec());
        true
    }

    /// The held ranges `[start, end)` as SACK blocks, at most `max`: the newest arrival's
    /// block first, then the other recent ones, then the rest from the lowest (RFC 2018 §4).
    #[must_use]
    pub fn sack_blocks(&self, max: usize) -> arrayvec::ArrayVec<(u64, u64), 4> {
        let mut merged: arrayvec::ArrayVec<(u64, u64), 4> = arrayvec::ArrayVec::new();
        let max = max.min(4);
        let ranges = self.ranges();
        let mut push = |r: (u64, u64)| {
            if merged.len() < max && !merged.contains(&r) {
                merged.push(r);
            }
        };
        for off in self.recent.iter().flatten() {
            if let Some(&r) = ranges.iter().find(|(s, e)| s <= off && off < e) {
                push(r);
            }
        }
        for &r in &ranges {
            push(r);
        }
        merged
    }

    /// Held ranges, adjacent blocks merged, lowest first.
    fn ranges(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (&s, b) in &self.held {
            let e = s + b.len() as u64;
            match out.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => out.push((s, e)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(b: &mut RecvBuffer) -> Vec<u8> {
        let mut out = vec![0; b.readable()];
        let n = b.read(&mut out);
        out.truncate(n);
        out
    }

    #[test]
    fn in_order_bytes_are_readable_at_once() {
        let mut b = RecvBuffer::new(100);
        let r = b.insert(0, b"hello");
        assert_eq!(r.readable, 5);
        assert_eq!(b.window(), 95);
        assert_eq!(read_all(&mut b), b"hello");
        assert_eq!(b.window(), 100);
        assert!(b.insert(2, b"llo").duplicate);
    }

    #[test]
    fn peeked_bytes_stay_until_consumed() {
        let mut b = RecvBuffer::new(8);
        b.insert(0, b"abcdef");
        assert_eq!(b.consume(4), 4);
        b.insert(6, b"ghij"); // wraps the ring
        let (x, y) = b.peek();
        assert_eq!([x, y].concat(), b"efghij");
        assert_eq!(b.readable(), 6, "peeking takes nothing");
        assert_eq!(b.consume(10), 6, "at most what is there");
        assert_eq!((b.readable(), b.window()), (0, 8));
    }

    #[test]
    fn a_hole_holds_later_bytes_until_it_fills() {
        let mut b = RecvBuffer::new(100);
        b.insert(0, b"ab");
        let r = b.insert(5, b"fgh");
        assert_eq!((r.readable, r.out_of_order), (0, 3));
        assert_eq!(b.sack_blocks(4).as_slice(), &[(5, 8)]);
        b.insert(10, b"kl");
        assert_eq!(
            b.sack_blocks(4).as_slice(),
            &[(10, 12), (5, 8)],
            "newest first"
        );
        let r = b.insert(2, b"cdefghij"); // overlaps the held block, fills both holes
        assert!(r.filled_hole);
        assert_eq!(r.readable, 10);
        assert_eq!(read_all(&mut b), b"abcdefghijkl");
        assert_eq!((b.next(), b.held()), (12, 0));
        assert!(b.sack_blocks(4).is_empty());
    }

    #[test]
    fn overlapping_out_of_order_pieces_are_stored_once() {
        let mut b = RecvBuffer::new(100);
        b.insert(10, b"KLMN");
        b.insert(20, b"UV");
        // Covers 8..24: new bytes are 8..10, 14..20 and 22..24.
        let r = b.insert(8, b"IJKLMNOPQRSTUVWX");
        assert_eq!(r.out_of_order, 2 + 6 + 2);
        assert_eq!(b.held(), 16);
        assert_eq!(b.sack_blocks(4).as_slice(), &[(8, 24)]);
        assert!(b.insert(12, b"MN").duplicate);
        b.insert(0, b"ABCDEFGH");
        assert_eq!(read_all(&mut b), b"ABCDEFGHIJKLMNOPQRSTUVWX");
    }

    #[test]
    fn a_peer_cannot_multiply_the_pieces_held_beyond_holes() {
        let mut b = RecvBuffer::new(4096);
        // One-byte segments two bytes apart: each would be a piece of its own.
        let mut stored = 0;
        for i in 0..1000u64 {
            stored += b.insert(10 + 2 * i, b"x").out_of_order;
        }
        assert_eq!(stored, 64, "the 64 first pieces, no more");
        assert_eq!(b.held(), 64);
        // A segment that extends a held piece is still taken.
        assert_eq!(b.insert(11, b"y").out_of_order, 1);
    }

    #[test]
    fn sack_blocks_are_limited_and_unique() {
        let mut b = RecvBuffer::new(1000);
        for i in 0..6u64 {
            b.insert(10 + i * 10, b"x");
        }
        let blocks = b.sack_blocks(3);
        assert_eq!(blocks.as_slice(), &[(60, 61), (50, 51), (40, 41)]);
    }
}
