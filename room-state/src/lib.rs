//! Room state: who is in which room, with which tracks.
//!
//! [`RoomStore`] is the contract; [`MemoryStore`] is the default implementation used when
//! no `REDIS_URL` is configured (one node). The Redis implementation and the node registry
//! belong to the multi-node work and implement the same trait.
//!
//! The store is a *view* for signaling (join acks, participant lists); the media core keeps
//! its own forwarding state. Signaling updates the store from the core's events.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// A published track as the rest of the platform sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackRecord {
    /// Track id (`TR..`).
    pub id: String,
    /// Publisher participant id (`P..`).
    pub participant_id: String,
    /// `audio` or `video`.
    pub kind: String,
    /// `camera`, `microphone` or `screen`.
    pub source: String,
    /// Muted by the publisher.
    pub muted: bool,
    /// Codec name.
    pub codec: String,
}

/// One participant in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantRecord {
    /// Participant id (`P..`), unique per session.
    pub id: String,
    /// Identity (the token's `sub`).
    pub identity: String,
    /// Display name.
    pub name: String,
    /// `learner` or `proctor`.
    pub role: String,
    /// Node hosting the participant.
    #[serde(skip)]
    pub node: String,
    /// Join time, ms since the epoch.
    pub joined_at: u64,
    /// Published tracks.
    pub tracks: Vec<TrackRecord>,
}

/// The contract every room-state backend implements.
pub trait RoomStore: Send {
    /// Add a participant to a room (creating the room).
    fn add_participant(&mut self, room: &str, p: ParticipantRecord);
    /// Remove a participant; returns it if it was there. An empty room is removed.
    fn remove_participant(&mut self, room: &str, id: &str) -> Option<ParticipantRecord>;
    /// Participants of a room, in join order.
    fn participants(&self, room: &str) -> Vec<ParticipantRecord>;
    /// Find a participant of a room by identity.
    fn find_identity(&self, room: &str, identity: &str) -> Option<ParticipantRecord>;
    /// Add or replace a track of a participant.
    fn upsert_track(&mut self, room: &str, track: TrackRecord);
    /// Remove a track.
    fn remove_track(&mut self, room: &str, participant_id: &str, track_id: &str);
    /// Set a track's muted flag.
    fn set_muted(&mut self, room: &str, participant_id: &str, track_id: &str, muted: bool);
    /// Names of rooms with participants.
    fn rooms(&self) -> Vec<String>;
}

/// In-memory store (single node).
#[derive(Debug, Default)]
pub struct MemoryStore {
    rooms: HashMap<String, BTreeMap<u64, ParticipantRecord>>,
    seq: u64,
    index: HashMap<(String, String), u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn get_mut(&mut self, room: &str, id: &str) -> Option<&mut ParticipantRecord> {
        let k = *self.index.get(&(room.to_owned(), id.to_owned()))?;
        self.rooms.get_mut(room)?.get_mut(&k)
    }
}

impl RoomStore for MemoryStore {
    fn add_participant(&mut self, room: &str, p: ParticipantRecord) {
        self.seq += 1;
        self.index.insert((room.to_owned(), p.id.clone()), self.seq);
        self.rooms
            .entry(room.to_owned())
            .or_default()
            .insert(self.seq, p);
    }

    fn remove_participant(&mut self, room: &str, id: &str) -> Option<ParticipantRecord> {
        let k = self.index.remove(&(room.to_owned(), id.to_owned()))?;
        let r = self.rooms.get_mut(room)?;
        let p = r.remove(&k);
        if r.is_empty() {
            self.rooms.remove(room);
        }
        p
    }

    fn participants(&self, room: &str) -> Vec<ParticipantRecord> {
        self.rooms
            .get(room)
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default()
    }

    fn find_identity(&self, room: &str, identity: &str) -> Option<ParticipantRecord> {
        self.rooms
            .get(room)?
            .values()
            .find(|p| p.identity == identity)
            .cloned()
    }

    fn upsert_track(&mut self, room: &str, track: TrackRecord) {
        if let Some(p) = self.get_mut(room, &track.participant_id.clone()) {
            p.tracks.retain(|t| t.id != track.id);
            p.tracks.push(track);
        }
    }

    fn remove_track(&mut self, room: &str, participant_id: &str, track_id: &str) {
        if let Some(p) = self.get_mut(room, participant_id) {
            p.tracks.retain(|t| t.id != track_id);
        }
    }

    fn set_muted(&mut self, room: &str, participant_id: &str, track_id: &str, muted: bool) {
        if let Some(p) = self.get_mut(room, participant_id) {
            for t in p.tracks.iter_mut().filter(|t| t.id == track_id) {
                t.muted = muted;
            }
        }
    }

    fn rooms(&self) -> Vec<String> {
        let mut v: Vec<String> = self.rooms.keys().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, identity: &str) -> ParticipantRecord {
        ParticipantRecord {
            id: id.into(),
            identity: identity.into(),
            name: identity.into(),
            role: "learner".into(),
            node: "n1".into(),
            joined_at: 1,
            tracks: vec![],
        }
    }

    fn track(id: &str, pid: &str) -> TrackRecord {
        TrackRecord {
            id: id.into(),
            participant_id: pid.into(),
            kind: "video".into(),
            source: "camera".into(),
            muted: false,
            codec: "VP8".into(),
        }
    }

    /// The contract, written against the trait so every backend runs it.
    pub fn contract(store: &mut dyn RoomStore) {
        store.add_participant("r", p("P1", "alice"));
        store.add_participant("r", p("P2", "bob"));
        store.add_participant("other", p("P3", "carol"));
        let ids: Vec<String> = store.participants("r").into_iter().map(|p| p.id).collect();
        assert_eq!(ids, ["P1", "P2"], "join order kept");
        assert_eq!(
            store.find_identity("r", "bob").map(|p| p.id),
            Some("P2".into())
        );
        store.upsert_track("r", track("TR1", "P1"));
        store.set_muted("r", "P1", "TR1", true);
        assert!(store.participants("r")[0].tracks[0].muted);
        store.remove_track("r", "P1", "TR1");
        assert!(store.participants("r")[0].tracks.is_empty());
        assert_eq!(
            store.remove_participant("r", "P1").map(|p| p.identity),
            Some("alice".into())
        );
        assert!(store.remove_participant("r", "P1").is_none());
        store.remove_participant("r", "P2");
        assert_eq!(store.rooms(), ["other"], "empty room removed");
        store.remove_participant("other", "P3");
        assert!(store.rooms().is_empty());
    }

    #[test]
    fn memory_store_contract() {
        contract(&mut MemoryStore::new());
    }
}
