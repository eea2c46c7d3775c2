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
//!
//! A room spanning shards: each shard holding a mirror of the producer reports what its
//! own subscribers want ([`LayerWant`], only when it changes) and the producer's shard
//! decides on the highest of them and its own.

use std::time::{Duration, Instant};

use str0m::media::Rid;

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

/// What one shard's subscribers want of a producer another shard hosts, as that shard
/// reports it to the producer's (`span.rs`). By layer name rather than by count: the
/// mirror may not know the same layers in the same order as the producer's shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerWant {
    /// Nothing (no consumer there, or every one hidden).
    Nothing,
    /// Every layer up to this one, lowest first.
    UpTo(Rid),
    /// The video as a whole (the mirror knows no simulcast layer of it).
    Whole,
}

impl LayerWant {
    /// `wanted` of the layers `known` (lowest first; empty: a video without simulcast
    /// as far as this shard knows) as a report.
    pub fn from_count(known: &[Rid], wanted: usize) -> Self {
        match (wanted, known.len()) {
            (0, _) => LayerWant::Nothing,
            (_, 0) => LayerWant::Whole,
            (w, n) => LayerWant::UpTo(known[w.min(n) - 1]),
        }
    }

    /// How many of `count` layers, whose names are `known` (lowest first; empty for a
    /// video without simulcast), this report wants. A layer name the producer's shard
    /// does not know (yet) counts as all of them: wanting too much only delays a layer
    /// going off.
    pub fn count(self, known: &[Rid], count: usize) -> usize {
        match self {
            LayerWant::Nothing => 0,
            LayerWant::Whole => count,
            LayerWant::UpTo(r) => known.iter().position(|k| *k == r).map_or(count, |i| i + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shards_want_is_told_by_layer_name() {
        let layers = [Rid::from("q"), Rid::from("h"), Rid::from("f")];
        assert_eq!(LayerWant::from_count(&layers, 0), LayerWant::Nothing);
        assert_eq!(
            LayerWant::from_count(&layers, 2),
            LayerWant::UpTo(layers[1])
        );
        assert_eq!(
            LayerWant::from_count(&layers, 9),
            LayerWant::UpTo(layers[2])
        );
        assert_eq!(LayerWant::from_count(&[], 1), LayerWant::Whole);
        assert_eq!(LayerWant::from_count(&[], 0), LayerWant::Nothing);
        // The producer's shard reads it against its own layers.
        assert_eq!(LayerWant::UpTo(layers[1]).count(&layers, 3), 2);
        assert_eq!(LayerWant::UpTo(layers[0]).count(&layers, 3), 1);
        assert_eq!(LayerWant::Nothing.count(&layers, 3), 0);
        assert_eq!(LayerWant::Whole.count(&layers, 3), 3);
        assert_eq!(LayerWant::Whole.count(&[], 1), 1);
        // A name it does not know: everything.
        assert_eq!(LayerWant::UpTo(Rid::from("x")).count(&layers, 3), 3);
    }

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
