//! The in-memory store: the default for one node, and each node's own local view when
//! several nodes share Redis (signaling mirrors it to Redis in the background, see
//! [`MemoryStore::take_changed_rooms`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use crate::{
    NodeRecord, ParticipantRecord, RoomStore, StoreResult, TrackRecord, sort_nodes, sort_tracks,
};

/// In-memory store. Synchronous methods; `Mutex<MemoryStore>` implements [`RoomStore`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    rooms: HashMap<String, BTreeMap<u64, ParticipantRecord>>,
    seq: u64,
    index: HashMap<(String, String), u64>,
    /// Room -> host node id.
    hosts: HashMap<String, String>,
    /// Node id -> (record, alive until ms).
    nodes: HashMap<String, (NodeRecord, u64)>,
    /// Rooms whose participants or tracks changed since the last `take_changed_rooms`
    /// (recorded only when tracking is on, so a lone node collects nothing).
    changed: HashSet<String>,
    track_changes: bool,
    /// Room -> chat messages (JSON), oldest first.
    chats: HashMap<String, VecDeque<String>>,
    /// Rooms with chat history, in order of their first message (the bound drops the oldest).
    chat_rooms: VecDeque<String>,
}

/// Rooms whose chat history a memory store keeps.
pub const CHAT_ROOMS_MAX: usize = 1000;

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that records which rooms change, for [`MemoryStore::take_changed_rooms`].
    pub fn with_change_tracking() -> Self {
        MemoryStore {
            track_changes: true,
            ..Self::default()
        }
    }

    fn mark(&mut self, room: &str) {
        if self.track_changes {
            self.changed.insert(room.to_owned());
        }
    }

    fn get_mut(&mut self, room: &str, id: &str) -> Option<&mut ParticipantRecord> {
        let k = *self.index.get(&(room.to_owned(), id.to_owned()))?;
        self.rooms.get_mut(room)?.get_mut(&k)
    }

    /// Append a chat message to the room's history, keeping the last `keep`.
    pub fn push_chat(&mut self, room: &str, message: String, keep: usize) {
        if !self.chats.contains_key(room) {
            self.chat_rooms.push_back(room.to_owned());
            if self.chat_rooms.len() > CHAT_ROOMS_MAX
                && let Some(old) = self.chat_rooms.pop_front()
            {
                self.chats.remove(&old);
            }
        }
        let h = self.chats.entry(room.to_owned()).or_default();
        h.push_back(message);
        while h.len() > keep {
            h.pop_front();
        }
    }

    /// Replace the room's chat history (seeded from a shared store), keeping the last `keep`.
    pub fn set_chat(&mut self, room: &str, messages: Vec<String>, keep: usize) {
        self.chats.remove(room);
        self.chat_rooms.retain(|r| r != room);
        for m in messages {
            self.push_chat(room, m, keep);
        }
    }

    /// Whether the room has any chat history here.
    pub fn has_chat(&self, room: &str) -> bool {
        self.chats.contains_key(room)
    }

    /// The room's chat history, oldest first.
    pub fn chat_history(&self, room: &str) -> Vec<String> {
        self.chats
            .get(room)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Rooms changed (participants or tracks) since the last call; used to mirror this
    /// node's rooms to a shared store.
    pub fn take_changed_rooms(&mut self) -> Vec<String> {
        let mut v: Vec<String> = self.changed.drain().collect();
        v.sort();
        v
    }

    /// Participants over all rooms.
    pub fn participant_count(&self) -> usize {
        self.rooms.values().map(BTreeMap::len).sum()
    }

    /// Add (or replace) a participant in a room (creating the room).
    pub fn add_participant(&mut self, room: &str, p: ParticipantRecord) {
        self.remove_participant(room, &p.id);
        self.seq += 1;
        self.index.insert((room.to_owned(), p.id.clone()), self.seq);
        self.rooms
            .entry(room.to_owned())
            .or_default()
            .insert(self.seq, p);
        self.mark(room);
    }

    /// Remove a participant; returns it if it was there. An empty room is removed.
    pub fn remove_participant(&mut self, room: &str, id: &str) -> Option<ParticipantRecord> {
        let k = self.index.remove(&(room.to_owned(), id.to_owned()))?;
        let r = self.rooms.get_mut(room)?;
        let mut p = r.remove(&k);
        if r.is_empty() {
            self.rooms.remove(room);
        }
        self.mark(room);
        if let Some(p) = p.as_mut() {
            sort_tracks(&mut p.tracks);
        }
        p
    }

    /// Participants of a room, in join order.
    pub fn participants(&self, room: &str) -> Vec<ParticipantRecord> {
        self.rooms
            .get(room)
            .map(|r| {
                r.values()
                    .cloned()
                    .map(|mut p| {
                        sort_tracks(&mut p.tracks);
                        p
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Find a participant of a room by identity.
    pub fn find_identity(&self, room: &str, identity: &str) -> Option<ParticipantRecord> {
        self.participants(room)
            .into_iter()
            .find(|p| p.identity == identity)
    }

    /// Add or replace a track of a participant.
    pub fn upsert_track(&mut self, room: &str, track: TrackRecord) {
        if let Some(p) = self.get_mut(room, &track.participant_id.clone()) {
            p.tracks.retain(|t| t.id != track.id);
            p.tracks.push(track);
            self.mark(room);
        }
    }

    /// Remove a track.
    pub fn remove_track(&mut self, room: &str, participant_id: &str, track_id: &str) {
        if let Some(p) = self.get_mut(room, participant_id) {
            p.tracks.retain(|t| t.id != track_id);
            self.mark(room);
        }
    }

    /// Set a track's muted flag.
    pub fn set_muted(&mut self, room: &str, participant_id: &str, track_id: &str, muted: bool) {
        if let Some(p) = self.get_mut(room, participant_id) {
            for t in p.tracks.iter_mut().filter(|t| t.id == track_id) {
                t.muted = muted;
            }
            self.mark(room);
        }
    }

    /// Names of rooms with participants, sorted.
    pub fn rooms(&self) -> Vec<String> {
        let mut v: Vec<String> = self.rooms.keys().cloned().collect();
        v.sort();
        v
    }

    fn live(&self, node: &str, now_ms: u64) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|(_, until)| now_ms < *until)
    }

    fn drop_node_in_room(&mut self, room: &str, node: &str) {
        let ids: Vec<String> = self
            .participants(room)
            .into_iter()
            .filter(|p| p.node == node)
            .map(|p| p.id)
            .collect();
        for id in ids {
            self.remove_participant(room, &id);
        }
    }

    /// See [`RoomStore::claim_room`].
    pub fn claim_room(&mut self, room: &str, node: &str, now_ms: u64) -> String {
        if let Some(host) = self.hosts.get(room).cloned()
            && host != node
        {
            if self.live(&host, now_ms) {
                return host;
            }
            self.drop_node_in_room(room, &host);
        }
        self.hosts.insert(room.to_owned(), node.to_owned());
        node.to_owned()
    }

    /// See [`RoomStore::take_over_room`].
    pub fn take_over_room(&mut self, room: &str, from: &str, to: &str) -> String {
        match self.hosts.get(room).cloned() {
            Some(host) if host != from => host,
            host => {
                if host.is_some() {
                    self.drop_node_in_room(room, from);
                }
                self.hosts.insert(room.to_owned(), to.to_owned());
                to.to_owned()
            }
        }
    }

    /// The room's host node.
    pub fn room_host(&self, room: &str) -> Option<String> {
        self.hosts.get(room).cloned()
    }

    /// See [`RoomStore::release_room`].
    pub fn release_room(&mut self, room: &str, node: &str) -> bool {
        if self.hosts.get(room).is_some_and(|h| h == node) {
            self.hosts.remove(room);
            true
        } else {
            false
        }
    }

    /// See [`RoomStore::sync_room`].
    pub fn sync_room(
        &mut self,
        room: &str,
        node: &str,
        participants: &[ParticipantRecord],
        now_ms: u64,
    ) -> Option<String> {
        if participants.is_empty() {
            self.drop_node_in_room(room, node);
            self.release_room(room, node);
            return self.room_host(room);
        }
        let host = self.claim_room(room, node, now_ms);
        if host != node {
            return Some(host);
        }
        self.drop_node_in_room(room, node);
        for p in participants {
            self.add_participant(room, p.clone());
        }
        Some(host)
    }

    /// See [`RoomStore::heartbeat`].
    pub fn heartbeat(&mut self, node: &NodeRecord, now_ms: u64, ttl_ms: u64) -> bool {
        self.nodes
            .insert(node.id.clone(), (node.clone(), now_ms + ttl_ms))
            .is_none()
    }

    /// See [`RoomStore::nodes`].
    pub fn nodes(&self, now_ms: u64) -> Vec<NodeRecord> {
        let mut v: Vec<NodeRecord> = self
            .nodes
            .values()
            .filter(|(_, until)| now_ms < *until)
            .map(|(n, _)| n.clone())
            .collect();
        sort_nodes(&mut v);
        v
    }

    /// See [`RoomStore::remove_node`].
    pub fn remove_node(&mut self, id: &str) {
        for room in self.rooms() {
            self.drop_node_in_room(&room, id);
        }
        self.hosts.retain(|_, h| h != id);
        self.nodes.remove(id);
    }

    /// See [`RoomStore::reap`].
    pub fn reap(&mut self, now_ms: u64) -> Vec<String> {
        let mut dead: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, (_, until))| now_ms >= *until)
            .map(|(id, _)| id.clone())
            .collect();
        dead.sort();
        for id in &dead {
            self.remove_node(id);
        }
        dead
    }
}

fn lock(m: &Mutex<MemoryStore>) -> std::sync::MutexGuard<'_, MemoryStore> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RoomStore for Mutex<MemoryStore> {
    async fn add_participant(&self, room: &str, p: &ParticipantRecord) -> StoreResult<()> {
        lock(self).add_participant(room, p.clone());
        Ok(())
    }
    async fn remove_participant(
        &self,
        room: &str,
        id: &str,
    ) -> StoreResult<Option<ParticipantRecord>> {
        Ok(lock(self).remove_participant(room, id))
    }
    async fn participants(&self, room: &str) -> StoreResult<Vec<ParticipantRecord>> {
        Ok(lock(self).participants(room))
    }
    async fn upsert_track(&self, room: &str, track: &TrackRecord) -> StoreResult<()> {
        lock(self).upsert_track(room, track.clone());
        Ok(())
    }
    async fn remove_track(
        &self,
        room: &str,
        participant_id: &str,
        track_id: &str,
    ) -> StoreResult<()> {
        lock(self).remove_track(room, participant_id, track_id);
        Ok(())
    }
    async fn set_muted(
        &self,
        room: &str,
        participant_id: &str,
        track_id: &str,
        muted: bool,
    ) -> StoreResult<()> {
        lock(self).set_muted(room, participant_id, track_id, muted);
        Ok(())
    }
    async fn rooms(&self) -> StoreResult<Vec<String>> {
        Ok(lock(self).rooms())
    }
    async fn claim_room(&self, room: &str, node: &str, now_ms: u64) -> StoreResult<String> {
        Ok(lock(self).claim_room(room, node, now_ms))
    }
    async fn take_over_room(
        &self,
        room: &str,
        from: &str,
        to: &str,
        _now_ms: u64,
    ) -> StoreResult<String> {
        Ok(lock(self).take_over_room(room, from, to))
    }
    async fn room_host(&self, room: &str) -> StoreResult<Option<String>> {
        Ok(lock(self).room_host(room))
    }
    async fn release_room(&self, room: &str, node: &str) -> StoreResult<bool> {
        Ok(lock(self).release_room(room, node))
    }
    async fn sync_room(
        &self,
        room: &str,
        node: &str,
        participants: &[ParticipantRecord],
        now_ms: u64,
    ) -> StoreResult<Option<String>> {
        Ok(lock(self).sync_room(room, node, participants, now_ms))
    }
    async fn heartbeat(&self, node: &NodeRecord, now_ms: u64, ttl_ms: u64) -> StoreResult<bool> {
        Ok(lock(self).heartbeat(node, now_ms, ttl_ms))
    }
    async fn nodes(&self, now_ms: u64) -> StoreResult<Vec<NodeRecord>> {
        Ok(lock(self).nodes(now_ms))
    }
    async fn remove_node(&self, id: &str) -> StoreResult<()> {
        lock(self).remove_node(id);
        Ok(())
    }
    async fn push_chat(&self, room: &str, message: &str, keep: usize) -> StoreResult<()> {
        lock(self).push_chat(room, message.to_owned(), keep);
        Ok(())
    }
    async fn chat_history(&self, room: &str) -> StoreResult<Vec<String>> {
        Ok(lock(self).chat_history(room))
    }
    async fn reap(&self, now_ms: u64) -> StoreResult<Vec<String>> {
        Ok(lock(self).reap(now_ms))
    }
}
