//! The bytes an application wrote that the peer has not yet acknowledged.
//!
//! Positions are 64-bit stream offsets (byte 0 is the first byte written), so nothing here
//! wraps; the connection maps them to sequence numbers.

use std::collections::VecDeque;

/// Written, unacknowledged bytes, from offset [`SendBuffer::start`] on.
#[derive(Debug, Clone)]
pub struct SendBuffer {
    data: VecDeque<u8>,
    /// Stream offset of `data[0]`.
    start: u64,
    capacity: usize,
}

impl SendBuffer {
    /// An empty buffer that holds at most `capacity` bytes.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            data: VecDeque::new(),
            start: 0,
            capacity,
        }
    }

    /// Appends as much of `bytes` as fits; returns how much.
    pub fn write(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.free());
        self.data.extend(&bytes[..n]);
        n
    }

    /// Room left.
    #[must_use]
    pub fn free(&self) -> usize {
        self.capacity.saturating_sub(self.data.len())
    }

    /// Bytes held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Offset of the first byte held.
    #[must_use]
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Offset just past the last byte written.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }

    /// The most it will hold.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Changes the most it will hold (never dropping what it holds).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }

    /// Drops everything before offset `to` (acknowledged).
    pub fn ack_to(&mut self, to: u64) {
        let n = usize::try_from(to.saturating_sub(self.start))
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        self.data.drain(..n);
        self.start += n as u64;
    }

    /// Up to `len` bytes from stream offset `from`, in place: the ring's two runs (either may
    /// be empty; both are for bytes not acknowledged and already written).
    #[must_use]
    pub fn slices_at(&self, from: u64, len: usize) -> (&[u8], &[u8]) {
        let Some(skip) = from
            .checked_sub(self.start)
            .and_then(|s| usize::try_from(s).ok())
            .filter(|s| *s < self.data.len())
        else {
            return (&[], &[]);
        };
        let n = len.min(self.data.len() - skip);
        let (a, b) = self.data.as_slices();
        if skip < a.len() {
            let first = n.min(a.len() - skip);
            (&a[skip..skip + first], &b[..n - first])
        } else {
            let at = skip - a.len();
            (&b[at..at + n], &[])
        }
    }

    /// Copies bytes from offset `from` into `out`; returns how many (fewer at the end of the
    /// data, none before [`SendBuffer::start`]).
    #[must_use]
    pub fn read_at(&self, from: u64, out: &mut [u8]) -> usize {
        let Some(skip) = from
            .checked_sub(self.start)
            .and_then(|s| usize::try_from(s).ok())
        else {
            return 0;
        };
        if skip >= self.data.len() {
            return 0;
        }
        let n = out.len().min(self.data.len() - skip);
        let (a, b) = self.data.as_slices();
        if skip < a.len() {
            let first = n.min(a.len() - skip);
            out[..first].copy_from_slice(&a[skip..skip + first]);
            out[first..n].copy_from_slice(&b[..n - first]);
        } else {
            let at = skip - a.len();
            out[..n].copy_from_slice(&b[at..at + n]);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_stop_at_capacity_and_acks_make_room() {
        let mut b = SendBuffer::new(10);
        assert_eq!(b.write(b"hello world"), 10);
        assert_eq!(b.free(), 0);
        b.ack_to(6);
        assert_eq!((b.start(), b.end(), b.free()), (6, 10, 6));
        assert_eq!(b.write(b"!!"), 2);
        let mut out = [0u8; 8];
        assert_eq!(b.read_at(6, &mut out), 6);
        assert_eq!(&out[..6], b"worl!!");
    }

    #[test]
    fn reads_across_the_ring_wrap_and_outside_the_data() {
        let mut b = SendBuffer::new(8);
        b.write(b"abcdefgh");
        b.ack_to(5);
        b.write(b"ijkl");
        let mut out = [0u8; 7];
        assert_eq!(b.read_at(5, &mut out), 7);
        assert_eq!(&out, b"fghijkl");
        assert_eq!(b.read_at(4, &mut out), 0, "already acknowledged");
        assert_eq!(b.read_at(12, &mut out), 0, "not written yet");
        assert_eq!(b.read_at(10, &mut out[..1]), 1);
        assert_eq!(out[0], b'k');
        let (x, y) = b.slices_at(6, 10);
        assert_eq!([x, y].concat(), b"ghijkl", "in place, across the wrap");
        assert_eq!(b.slices_at(11, 3), (&b"l"[..], &b""[..]));
        assert_eq!(b.slices_at(12, 3), (&b""[..], &b""[..]), "not written yet");
        assert_eq!(
            b.slices_at(4, 3),
            (&b""[..], &b""[..]),
            "already acknowledged"
        );
        b.ack_to(100);
        assert!(b.is_empty());
        assert_eq!(b.start(), 12, "acks beyond the data stop at its end");
    }
}
