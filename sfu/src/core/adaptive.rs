//! Adaptive stream and dynacast, wired into the core.
//!
//! **Adaptive stream**: a subscriber's client reports how it displays each remote video
//! ([`ShardCore::set_views`], the `trackView` request): the size of the largest element
//! showing it and whether anyone can see it. `Consumer::decide` applies it per packet,
//! with or without a bandwidth estimate: a hidden video gets no packets, a visible one at
//! most the smallest layer that fills its element ([`Layers::index_for_view`]); the stream
//! allocator (`bandwidth.rs`) spends no budget above that layer nor on hidden videos. A
//! video shown again restarts at once from a key frame the publisher is asked for. Hidden
//! videos are not announced with `videoPaused`: the client hid them itself.
//!
//! **Dynacast**: every [`ALLOCATION_PERIOD`](super::bandwidth) the core works out, per
//! published video, the highest layer any of its consumers wants (by `setQuality`, by its
//! view, the lowest for one paused for bandwidth, none when hidden), lets `dynacast.rs`
//! decide (off after a debounce, on at once), and tells the publisher
//! ([`SfuEvent::PublisherLayers`]) which layers to encode.
//!
//! **A room spanning shards** (`span.rs`): the publisher's shard sees only its own
//! subscribers, so every other shard works out the same "highest layer wanted" over its
//! consumers of each mirror and reports it to the producer's shard (`Wants`, a
//! [`LayerWant`], only when it changed: at most one message per mirror and allocation
//! period, none in a steady room). The producer's shard keeps the last report per shard
//! and decides on the highest of them and its own. A shard's reports are forgotten when
//! it leaves the room's span (its last participant of the room went, whatever the way)
//! and with the producer; a shard whose subscribers all went reports `Nothing`. The
//! mirrors are told the producer's layers (`Track`, again when they change), so a layer
//! that was off before a shard joined the span can still be wanted there.

use std::time::Instant;

use str0m::media::MediaKind;
use tracing::debug;

use super::allocator::Target;
use super::dynacast::LayerWant;
use super::simulcast::Layers;
use super::*;
use crate::error::SfuError;
use crate::ids::{ParticipantId, TrackId};

impl Consumer {
    /// How many of `layers`' known layers (lowest first) this consumer wants encoded
    /// (for a video without simulcast: 1 or 0).
    fn wanted_layers(&self, layers: &Layers) -> usize {
        if self.hidden() {
            return 0;
        }
        if layers.is_empty() {
            return 1;
        }
        if self.target == Target::Paused {
            // Paused for bandwidth: it resumes on the lowest layer.
            return 1;
        }
        let mut top = layers.known_index_for(self.sel.quality);
        if let Some(v) = self.view {
            top = top.min(layers.known_index_for_view((v.width, v.height)));
        }
        top + 1
    }
}

impl ShardCore {
    /// Subscriber `subscriber` displays these videos so (see the module docs). Returns
    /// the tracks it does not receive (unpublished meanwhile, or never its own): not an
    /// error, a view report may cross an unpublish.
    pub fn set_views(
        &mut self,
        now: Instant,
        subscriber: ParticipantId,
        views: &[(TrackId, TrackView)],
    ) -> Result<Vec<TrackId>, SfuError> {
        let part = self
            .participants
            .get(&subscriber)
            .ok_or(SfuError::NotJoined)?;
        let Some(sub) = part.subscriber else {
            return Ok(views.iter().map(|(t, _)| *t).collect());
        };
        let mut unknown = Vec::new();
        let mut shown_again = Vec::new();
        {
            let Some(t) = self.transports.get_mut(&sub) else {
                return Ok(views.iter().map(|(t, _)| *t).collect());
            };
            let TransportKind::Subscriber { consumers, .. } = &mut t.kind else {
                return Ok(views.iter().map(|(t, _)| *t).collect());
            };
            for (track, view) in views {
                let Some(c) = consumers
                    .values_mut()
                    .find(|c| c.producer == Some(*track) && c.kind == MediaKind::Video)
                else {
                    unknown.push(*track);
                    continue;
                };
                let was_hidden = c.hidden();
                c.view = Some(*view);
                debug!(%subscriber, %track, visible = view.visible, width = view.width, height = view.height, "track view");
                if was_hidden && view.visible && c.target != Target::Paused {
                    // Start clean from a key frame, as after a bandwidth pause.
                    c.sel.current = None;
                    c.await_keyframe = true;
                    c.rewriter.switch_source();
                    shown_again.push(*track);
                }
            }
        }
        for track in shown_again {
            // Dynacast may have stopped its layers: turn them on now, then the key frame.
            self.dynacast(track, now);
            self.request_keyframe(track, now);
        }
        Ok(unknown)
    }

    /// Dynacast for every video of this shard: decided here for a local producer,
    /// reported to the producer's shard for a mirror.
    pub(super) fn dynacast_all(&mut self, now: Instant) {
        let videos: Vec<TrackId> = self
            .producers
            .iter()
            .filter(|(_, p)| p.info.kind == MediaKind::Video)
            .map(|(id, _)| *id)
            .collect();
        for track in videos {
            self.dynacast(track, now);
        }
    }

    /// Dynacast for one video (see the module docs).
    fn dynacast(&mut self, track: TrackId, now: Instant) {
        match self.producers.get(&track).map(|p| p.origin) {
            Some(Origin::Local(..)) => self.decide_layers(track, now),
            Some(Origin::Remote(shard)) => self.report_want(track, shard),
            None => {}
        }
    }

    /// How many of `p`'s known layers (lowest first) this shard's consumers want.
    fn wanted_here(&self, p: &Producer) -> usize {
        let key = (p.info.participant, p.info.source);
        p.consumers
            .iter()
            .filter_map(|sub| self.transports.get(sub))
            .filter_map(|t| match &t.kind {
                TransportKind::Subscriber { consumers, .. } => consumers.get(&key),
                TransportKind::Publisher { .. } => None,
            })
            .filter(|c| c.producer == Some(p.info.id))
            .map(|c| c.wanted_layers(&p.layers))
            .max()
            .unwrap_or(0)
    }

    /// A mirror: tell the producer's shard what this shard's subscribers want of it,
    /// when that changed.
    fn report_want(&mut self, track: TrackId, shard: usize) {
        let Some(p) = self.producers.get(&track) else {
            return;
        };
        let want = LayerWant::from_count(p.layers.known(), self.wanted_here(p));
        if p.reported_want == Some(want) {
            return;
        }
        debug!(%track, shard, ?want, "dynacast: wants reported");
        if let Some(p) = self.producers.get_mut(&track) {
            p.reported_want = Some(want);
        }
        self.tell_wants(shard, track, want);
    }

    /// Shard `from` reports what its subscribers want of local producer `track`: kept
    /// until it reports again, leaves the room's span (`span_remove`), or the producer
    /// goes; decided at once (a layer wanted again goes on at once).
    pub(super) fn take_shard_want(
        &mut self,
        from: usize,
        track: TrackId,
        want: LayerWant,
        now: Instant,
    ) {
        let Some(p) = self.producers.get_mut(&track) else {
            self.stats.relayed_dropped += 1;
            return;
        };
        // Only from a shard of the room's span: a report sent before that shard left it
        // may arrive after (span changes and peer messages travel apart).
        let in_span = self.spans.get(&p.room).is_some_and(|s| s.contains(&from));
        if !matches!(p.origin, Origin::Local(..)) || !in_span {
            self.stats.relayed_dropped += 1;
            return;
        }
        p.shard_wants.retain(|(s, _)| *s != from);
        if want != LayerWant::Nothing {
            p.shard_wants.push((from, want));
        }
        self.dynacast(track, now);
    }

    /// Dynacast for a video published on this shard: its consumers here and what the
    /// room's other shards reported (see the module docs).
    fn decide_layers(&mut self, track: TrackId, now: Instant) {
        let Some(p) = self.producers.get_mut(&track) else {
            return;
        };
        // The mirrors learn the layers from the packets relayed to them; a layer that
        // is off never reaches a shard that joined the span after, so declare them.
        if !self.spans.get(&p.room).is_none_or(|s| s.is_empty()) {
            let declared = p.layers.declared();
            if declared != p.declared {
                p.declared = declared;
                self.announce_track(track);
            }
        }
        let Some(p) = self.producers.get(&track) else {
            return;
        };
        if p.rate.window_start.is_none() {
            return; // nothing received yet: whether it is simulcast is not known
        }
        let known = if p.layers.is_empty() {
            1
        } else {
            p.layers.known().len()
        };
        let there = p
            .shard_wants
            .iter()
            .map(|(_, w)| w.count(p.layers.known(), known))
            .max()
            .unwrap_or(0);
        let wanted = self.wanted_here(p).max(there);
        let Some(p) = self.producers.get_mut(&track) else {
            return;
        };
        let before = p.dynacast_on(known);
        let Some(on) = p.dynacast.update(known, wanted, now) else {
            return;
        };
        let layers: Vec<LayerActive> = if p.layers.is_empty() {
            vec![LayerActive {
                rid: None,
                active: on > 0,
            }]
        } else {
            p.layers
                .known()
                .iter()
                .enumerate()
                .map(|(i, r)| LayerActive {
                    rid: Some(r.to_string()),
                    active: i < on,
                })
                .collect()
        };
        debug!(publisher = %p.info.participant, %track, on, known, "dynacast");
        self.events.push_back(SfuEvent::PublisherLayers {
            participant: p.info.participant,
            track,
            layers,
        });
        if on > before {
            // The encoder restarts the layers it is told to: ask for the key frame now.
            self.request_keyframe(track, now);
        }
    }
}

impl Producer {
    /// How many layers the publisher encodes now, as far as dynacast told it.
    fn dynacast_on(&self, known: usize) -> usize {
        self.dynacast.on(known)
    }
}
