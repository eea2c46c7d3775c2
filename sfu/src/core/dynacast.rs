//! Dynacast, the decision: how many of a producer's layers (lowest first) its publisher
//! should encode, from how many some subscriber wants. Pure (time comes in as `now`);
//! `adaptive.rs` gathers what the subscribers want and emits
//! [`SfuEvent::PublisherLayers`](super::SfuEvent::PublisherLayers).
//!
//! Why layers go off only after [`OFF_AFTER`] and on at once: a viewer who resizes or
//! scrolls a tile back and forth must not make the encoder stop and restart a layer every
//! few hundred milliseconds (each restart costs a key frame on the publisher's uplink),
//! while a viewer who wants a layer again must not wait for it longer than a round trip.
//!
//! Why "the lowest `n` layers" rather than any set: the layers below the highest wanted
//! one are what the stream allocator falls back to when a subscriber's downlink shrinks,
//! and they are the cheap ones to encode.

use std::time::{Duration, Instant};

/// A layer nobody wants is turned off after this long.
pub const OFF_AFTER: Duration = Duration::from_millis(2500);

/// What a producer's publisher was told.
#[derive(Debug, Default)]
pub struct Dynacast {
    /// (layers on, out of how many known then); None: never told (everything is on).
    told: Option<(usize, usize)>,
    /// Since when fewer layers than are on have been wanted.
    fewer_since: Option<Instant>,
}

impl Dynacast {
    /// `known`: the producer's layers (1 for a video without simulcast); `wanted`: how
    /// many of them, lowest first, some subscriber wants (0: none). Returns the number of
    /// layers to turn on when the publisher must be told, else None.
    pub fn update(&mut self, known: usize, wanted: usize, now: Instant) -> Option<usize> {
        let wanted = wanted.min(known);
        let on = self.on(known);
        if wanted > on {
            self.fewer_since = None;
            self.told = Some((wanted, known));
            return Some(wanted);
        }
        if wanted == on {
            self.fewer_since = None;
            if self.told.is_some_and(|(_, of)| of != known) {
                self.told = Some((on, known));
            }
            return None;
        }
        let since = *self.fewer_since.get_or_insert(now);
        if now.saturating_duration_since(since) < OFF_AFTER {
            return None;
        }
        self.fewer_since = None;
        self.told = Some((wanted, known));
        Some(wanted)
    }
}

impl Dynacast {
    /// How many of `known` layers are on: what the publisher was told, and layers that
    /// appeared since (it was never told otherwise about them).
    pub fn on(&self, known: usize) -> usize {
        match self.told {
            Some((on, of)) if of == known => on,
            Some((on, of)) => on + known.saturating_sub(of),
            None => known,
        }
        .min(known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_after_the_debounce_on_at_once() {
        let t0 = Instant::now();
        let mut d = Dynacast::default();
        // Everything wanted: nothing to say.
        assert_eq!(d.update(3, 3, t0), None);
        // Only the lowest wanted: said after OFF_AFTER, not before.
        assert_eq!(d.update(3, 1, t0), None);
        assert_eq!(d.update(3, 1, t0 + OFF_AFTER / 2), None);
        assert_eq!(d.update(3, 1, t0 + OFF_AFTER), Some(1));
        assert_eq!(d.update(3, 1, t0 + OFF_AFTER * 2), None);
        // Wanted again: at once.
        let t1 = t0 + OFF_AFTER * 3;
        assert_eq!(d.update(3, 2, t1), Some(2));
        // A flapping viewer: down for less than the debounce never turns it off.
        for i in 0..10u32 {
            let at = t1 + OFF_AFTER / 4 * (2 * i + 1);
            assert_eq!(d.update(3, 1, at), None);
            assert_eq!(d.update(3, 2, at + OFF_AFTER / 4), None);
        }
        // Nobody at all: everything off.
        let t2 = t1 + OFF_AFTER * 10;
        assert_eq!(d.update(3, 0, t2), None);
        assert_eq!(d.update(3, 0, t2 + OFF_AFTER), Some(0));
    }

    #[test]
    fn a_layer_seen_after_the_publisher_was_told_counts_as_on() {
        let t0 = Instant::now();
        let mut d = Dynacast::default();
        d.update(1, 0, t0);
        assert_eq!(d.update(1, 0, t0 + OFF_AFTER), Some(0));
        // A second layer shows up (the publisher never heard of it): it is on, and goes
        // off after the debounce like any other.
        let t1 = t0 + OFF_AFTER * 2;
        assert_eq!(d.update(2, 0, t1), None);
        assert_eq!(d.update(2, 0, t1 + OFF_AFTER), Some(0));
    }
}
