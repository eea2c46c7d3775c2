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
//! ([`SfuEvent::PublisherLayers`]) which layers to encode. Only for rooms on one shard:
//! there the consumers seen here are all the subscribers there are. A room spanning
//! shards (`span.rs`) keeps every layer on (its other shards' wants do not cross yet).

use std::time::Instant;

use str0m::media::MediaKind;
use tracing::debug;

use super::allocator::Target;
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

    /// Dynacast for every video published on this shard (a mirror's is its own shard's).
    pub(super) fn dynacast_all(&mut self, now: Instant) {
        let videos: Vec<TrackId> = self
            .producers
            .iter()
            .filter(|(_, p)| {
                p.info.kind == MediaKind::Video && matches!(p.origin, Origin::Local(..))
            })
            .map(|(id, _)| *id)
            .collect();
        for track in videos {
            self.dynacast(track, now);
        }
    }

    /// Dynacast for one published video (see the module docs).
    fn dynacast(&mut self, track: TrackId, now: Instant) {
        let Some(p) = self.producers.get(&track) else {
            return;
        };
        if !matches!(p.origin, Origin::Local(..)) {
            return; // a mirror: its own shard tells its publisher
        }
        if p.rate.window_start.is_none() {
            return; // nothing received yet: whether it is simulcast is not known
        }
        let key = (p.info.participant, p.info.source);
        let known = if p.layers.is_empty() {
            1
        } else {
            p.layers.known().len()
        };
        // A room spanning shards: the other shards' subscribers are not seen from here
        // (their wants do not cross yet), so every layer stays on.
        let spans = self
            .spans
            .get(&p.room)
            .is_some_and(|others| !others.is_empty());
        let wanted = if spans {
            known
        } else {
            p.consumers
                .iter()
                .filter_map(|sub| self.transports.get(sub))
                .filter_map(|t| match &t.kind {
                    TransportKind::Subscriber { consumers, .. } => consumers.get(&key),
                    TransportKind::Publisher { .. } => None,
                })
                .filter(|c| c.producer == Some(track))
                .map(|c| c.wanted_layers(&p.layers))
                .max()
                .unwrap_or(0)
        };
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
