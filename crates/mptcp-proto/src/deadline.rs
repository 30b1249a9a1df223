//! A connection's earliest timer, remembered between changes.
//!
//! The endpoint and the MPTCP stack answer `poll_timeout` with the earliest timer of all their
//! connections, once per round of the driver. Asking every connection each time costs a walk of
//! its timers per connection: with a thousand connections opened in a burst, that walk was a
//! fifth of the daemons' CPU. A connection's timers change only while the layer holding it has
//! it mutably, so the layer forgets the remembered deadline whenever it hands the connection out
//! mutably ([`CachedDeadline::forget`]) and asks the connection again only then.

use core::cell::Cell;
use std::time::Instant;

/// What is remembered of one connection's timers.
#[derive(Debug, Clone, Copy, Default)]
enum Known {
    /// Nothing: the connection may have changed since it was asked.
    #[default]
    Unknown,
    /// Its earliest timer, or that it has none.
    Deadline(Option<Instant>),
}

/// The remembered earliest timer of one connection; `poll_timeout` takes `&self`, hence the
/// `Cell`.
#[derive(Debug, Default)]
pub(crate) struct CachedDeadline(Cell<Known>);

impl CachedDeadline {
    /// The remembered deadline, or `compute`'s, remembered until the next [`Self::forget`].
    pub(crate) fn get(&self, compute: impl FnOnce() -> Option<Instant>) -> Option<Instant> {
        if let Known::Deadline(at) = self.0.get() {
            return at;
        }
        let at = compute();
        self.0.set(Known::Deadline(at));
        at
    }

    /// The connection may have changed: ask it next time.
    pub(crate) fn forget(&mut self) {
        *self.0.get_mut() = Known::Unknown;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn asks_once_until_forgotten() {
        let t0 = Instant::now();
        let mut d = CachedDeadline::default();
        let asked = Cell::new(0);
        let ask = |at| {
            asked.set(asked.get() + 1);
            at
        };
        assert_eq!(d.get(|| ask(Some(t0))), Some(t0));
        assert_eq!(d.get(|| ask(None)), Some(t0), "remembered");
        assert_eq!(asked.get(), 1);
        d.forget();
        let later = t0 + Duration::from_millis(5);
        assert_eq!(d.get(|| ask(Some(later))), Some(later));
        assert_eq!(d.get(|| ask(None)), Some(later));
        assert_eq!(asked.get(), 2);
        d.forget();
        assert_eq!(d.get(|| ask(None)), None, "no timer is remembered too");
        assert_eq!(d.get(|| ask(Some(t0))), None);
        assert_eq!(asked.get(), 3);
    }
}
