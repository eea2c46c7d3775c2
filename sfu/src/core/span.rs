//! A room across shards: the messages one shard's core sends another, and what each
//! side does with them.
//!
//! Why: a room on one shard is capped at one core (a lecture stopped at ~850 listeners
//! while the other shard idled). The placement (`crate::placement`) spreads a big room's
//! participants over the shards; each shard keeps the room's participants it hosts,
//! their transports and consumers, and a **mirror** of every producer another shard
//! hosts. A packet received on its publisher's shard is forwarded there to local
//! consumers, then handed to every other shard of the room as one `Arc` (the payload is
//! never copied and no lock is taken: the driver moves the `Arc` over a channel); each
//! shard rewrites and encrypts it for its own subscribers, exactly as for a local
//! producer ([`ShardCore::fan_out`]). Small rooms never span (no hop for a meeting).
//!
//! What crosses, in the order the sending shard produced it (one FIFO per pair):
//! - `Track`: a producer appeared (or changed: mute) on the sender; the receiver creates
//!   or updates its mirror and gives its local subscribers consumers of it.
//! - `TrackGone` / `Left`: a producer ended / a participant left the sender; the receiver
//!   parks or stops its consumers as for a local departure.
//! - `Keyframe`: a consumer of a mirror wants a key frame; the producer's shard asks the
//!   publisher (its own throttle applies).
//! - `Wants`: which of a mirrored video's layers the sender's subscribers want, when that
//!   changed (dynacast, `adaptive.rs`); the producer's shard keeps it per shard.
//! - `Media`: one RTP packet with what the forwarder computed about it ([`Incoming`]).
//!
//! Who hosts a room (`spans`) changes only through the placement's decisions, applied by
//! the driver as commands (`span_set`, `span_add`, `span_remove`, `span_clear`); messages
//! about a room or track the receiver no longer has are dropped and counted.

use std::sync::Arc;
use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::Rid;
use str0m::rtp::RtpPacket;

use super::consumer::Incoming;
use super::dynacast::LayerWant;
use super::*;
use crate::ids::{ParticipantId, TrackId};

/// A message from one shard's core to another's (opaque outside the core).
pub struct PeerMsg(pub(super) Msg);

impl std::fmt::Debug for PeerMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.0 {
            Msg::Track(_) => "track",
            Msg::TrackGone { .. } => "track_gone",
            Msg::Left { .. } => "left",
            Msg::Keyframe { .. } => "keyframe",
            Msg::Wants { .. } => "wants",
            Msg::Media(_) => "media",
        };
        f.write_str(kind)
    }
}

pub(super) enum Msg {
    Track(Box<MirrorInfo>),
    TrackGone {
        track: TrackId,
    },
    Left {
        room: Arc<str>,
        participant: ParticipantId,
    },
    Keyframe {
        track: TrackId,
        rid: Option<Rid>,
    },
    Wants {
        track: TrackId,
        want: LayerWant,
    },
    Media(Arc<Relayed>),
}

/// What a mirror needs to know about a producer.
pub(super) struct MirrorInfo {
    room: Arc<str>,
    info: TrackInfo,
    owner: Grants,
    clock_rate: u32,
    params: Option<PayloadParams>,
    /// Its simulcast layers as the producer's shard knows them (`Layers::declare`).
    layers: Vec<(Rid, Option<(u32, u32)>)>,
}

/// One forwarded packet, shared by every shard that fans it out.
pub(super) struct Relayed {
    pub(super) incoming: Incoming,
    pub(super) pkt: RtpPacket,
}

impl ShardCore {
    /// This core's index among the shards (for the room's speaker leader; default 0).
    pub fn set_shard_index(&mut self, index: usize) {
        self.shard_index = index;
    }

    /// Next message for another shard: `(shard index, message)`.
    pub fn poll_peer(&mut self) -> Option<(usize, PeerMsg)> {
        self.peer_out.pop_front()
    }

    /// This shard starts hosting `room`, which `others` host already.
    pub fn span_set(&mut self, room: &str, others: Vec<usize>) {
        self.spans.insert(Arc::from(room), others);
    }

    /// `shard` starts hosting `room` too: relay to it, and tell it our producers.
    pub fn span_add(&mut self, room: &str, shard: usize) {
        let key = self.room_key(room);
        let peers = self.spans.entry(key.clone()).or_default();
        if !peers.contains(&shard) {
            peers.push(shard);
        }
        let local: Vec<TrackId> = self
            .rooms
            .get(&key)
            .map(|r| r.producers.clone())
            .unwrap_or_default();
        for track in local {
            if let Some(msg) = self.mirror_info(track) {
                self.peer_out.push_back((shard, PeerMsg(Msg::Track(msg))));
            }
        }
    }

    /// `shard` no longer hosts `room`.
    pub fn span_remove(&mut self, room: &str, shard: usize) {
        let key = self.room_key(room);
        if let Some(peers) = self.spans.get_mut(&key) {
            peers.retain(|s| *s != shard);
        }
        // Its subscribers are gone from the room: so are their wants (dynacast).
        for p in self.producers.values_mut().filter(|p| p.room == key) {
            p.shard_wants.retain(|(s, _)| *s != shard);
        }
        let gone: Vec<TrackId> = self
            .producers
            .values()
            .filter(|p| p.room == key && p.origin == Origin::Remote(shard))
            .map(|p| p.info.id)
            .collect();
        for t in gone {
            self.remove_producer(t);
        }
    }

    /// This shard no longer hosts `room`: drop the mirrors and the span.
    pub fn span_clear(&mut self, room: &str) {
        let key = self.room_key(room);
        self.spans.remove(&key);
        for p in self.producers.values_mut().filter(|p| p.room == key) {
            p.shard_wants.clear();
        }
        let mirrors: Vec<TrackId> = self
            .producers
            .values()
            .filter(|p| p.room == key && matches!(p.origin, Origin::Remote(_)))
            .map(|p| p.info.id)
            .collect();
        for t in mirrors {
            self.remove_producer(t);
        }
        if self
            .rooms
            .get(&key)
            .is_some_and(|r| r.participants.is_empty() && r.producers.is_empty())
        {
            self.rooms.remove(&key);
        }
    }

    /// A message from shard `from`.
    pub fn handle_peer(&mut self, now: Instant, from: usize, msg: PeerMsg) {
        match msg.0 {
            Msg::Media(r) => self.fan_out_relayed(&r, now),
            Msg::Track(m) => self.upsert_mirror(from, *m, now),
            Msg::TrackGone { track } => {
                if self
                    .producers
                    .get(&track)
                    .is_some_and(|p| p.origin == Origin::Remote(from))
                {
                    self.remove_producer(track);
                }
            }
            Msg::Left { room, participant } => self.forget_in_room(&room, participant),
            Msg::Keyframe { track, rid } => {
                if self
                    .producers
                    .get(&track)
                    .is_some_and(|p| matches!(p.origin, Origin::Local(..)))
                {
                    match rid {
                        Some(r) => self.request_layer_keyframe(track, r, now),
                        None => self.request_keyframe(track, now),
                    }
                }
            }
            Msg::Wants { track, want } => self.take_shard_want(from, track, want, now),
        }
    }

    /// Other shards hosting `room` (empty for a room on this shard alone).
    pub(super) fn peers_of(&self, room: &str) -> &[usize] {
        self.spans.get(room).map_or(&[], |v| v.as_slice())
    }

    /// Tell the room's other shards about local producer `track` (new or changed).
    pub(super) fn announce_track(&mut self, track: TrackId) {
        let Some(room) = self.producers.get(&track).map(|p| p.room.clone()) else {
            return;
        };
        let peers = self.peers_of(&room).to_vec();
        for s in peers {
            if let Some(m) = self.mirror_info(track) {
                self.peer_out.push_back((s, PeerMsg(Msg::Track(m))));
            }
        }
    }

    /// Tell the room's other shards that something of `room` happened.
    pub(super) fn tell_peers(&mut self, room: &str, msg: impl Fn() -> Msg) {
        let peers = self.peers_of(room).to_vec();
        for s in peers {
            self.peer_out.push_back((s, PeerMsg(msg())));
        }
    }

    /// Hand a forwarded packet to the room's other shards (one `Arc`, no copy).
    pub(super) fn relay(&mut self, room: &str, relayed: Relayed) {
        let Some(peers) = self.spans.get(room) else {
            return;
        };
        if peers.is_empty() {
            return;
        }
        let shared = Arc::new(relayed);
        for &s in peers {
            self.peer_out
                .push_back((s, PeerMsg(Msg::Media(shared.clone()))));
        }
        self.stats.relayed_out += peers.len() as u64;
    }

    /// Ask the shard of mirror `track` for a key frame.
    pub(super) fn request_remote_keyframe(
        &mut self,
        shard: usize,
        track: TrackId,
        rid: Option<Rid>,
    ) {
        self.peer_out
            .push_back((shard, PeerMsg(Msg::Keyframe { track, rid })));
    }

    /// Tell the shard of mirror `track` what this shard's subscribers want of it.
    pub(super) fn tell_wants(&mut self, shard: usize, track: TrackId, want: LayerWant) {
        self.peer_out
            .push_back((shard, PeerMsg(Msg::Wants { track, want })));
    }

    fn mirror_info(&self, track: TrackId) -> Option<Box<MirrorInfo>> {
        let p = self.producers.get(&track)?;
        if !matches!(p.origin, Origin::Local(..)) {
            return None;
        }
        Some(Box::new(MirrorInfo {
            room: p.room.clone(),
            info: p.info.clone(),
            owner: p.owner,
            clock_rate: p.clock_rate,
            params: p.params,
            layers: p.layers.declared(),
        }))
    }

    fn room_key(&self, room: &str) -> Arc<str> {
        self.rooms
            .get_key_value(room)
            .map(|(k, _)| k.clone())
            .or_else(|| self.spans.get_key_value(room).map(|(k, _)| k.clone()))
            .unwrap_or_else(|| Arc::from(room))
    }

    fn upsert_mirror(&mut self, from: usize, m: MirrorInfo, now: Instant) {
        let id = m.info.id;
        if let Some(p) = self.producers.get_mut(&id) {
            p.info.muted = m.info.muted;
            if !m.layers.is_empty() {
                p.layers.declare(&m.layers, now);
            }
            return;
        }
        let room = self.room_key(&m.room);
        let owner = m.owner;
        self.ensure_room(&room);
        let mut mirror = Producer::new(
            m.info,
            room.clone(),
            Origin::Remote(from),
            owner,
            m.clock_rate,
            m.params,
        );
        if !m.layers.is_empty() {
            mirror.layers.declare(&m.layers, now);
        }
        self.producers.insert(id, mirror);
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        r.producers.push(id);
        self.subscribe_room_to(id);
    }

    fn fan_out_relayed(&mut self, r: &Relayed, now: Instant) {
        let track = r.incoming.track;
        let Some(p) = self.producers.get_mut(&track) else {
            self.stats.relayed_dropped += 1;
            return;
        };
        if !matches!(p.origin, Origin::Remote(_)) {
            self.stats.relayed_dropped += 1;
            return;
        }
        self.stats.relayed_in += 1;
        p.observe(&r.incoming, &r.pkt, now);
        self.fan_out(&r.incoming, &r.pkt, now);
    }
}
