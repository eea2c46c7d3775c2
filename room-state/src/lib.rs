//! Room state: who is in which room, with which tracks, which node hosts each room, and
//! which nodes are alive.
//!
//! [`RoomStore`] is the contract. Two implementations:
//! - [`MemoryStore`] (one node, the default when no `REDIS_URL` is configured). Its own
//!   methods are synchronous (`&mut self`) so signaling can use it under a plain lock on
//!   paths that must never wait; the async contract is implemented for
//!   `std::sync::Mutex<MemoryStore>`.
//! - [`RedisStore`] (several nodes sharing one Redis): keys under `studyroom:`, multi-key
//!   updates are Lua scripts so they are atomic (e.g. "claim the room's host if it has
//!   none, or if its host is dead").
//!
//! **Time is passed in** (`now_ms`, milliseconds since the epoch) to everything that
//! depends on it: a node is alive while `now_ms < its last heartbeat + ttl`. The contract
//! tests therefore drive both implementations with the same fake clock, and a node's
//! expiry is decided by the clocks of the nodes (NTP-synchronised; a skew shortens or
//! lengthens a TTL by that much), not by Redis key expiry.
//!
//! **Chat history** (the last [`CHAT_HISTORY_MAX`] messages of a room) is stored too: in
//! memory on a lone node (at most `MemoryStore`'s room bound, the oldest room's history
//! dropped first), and in a Redis list per room capped with `LTRIM` (a week's TTL, renewed
//! by every message) when nodes share Redis, so a room that moves to another node keeps it.
//!
//! The store is a *view* for signaling (join acks, participant lists, placement of rooms
//! on nodes); the media core keeps its own forwarding state.

mod memory;
mod redis_store;

#[cfg(test)]
mod contract;

use std::future::Future;

use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
pub use redis_store::RedisStore;

/// A published track as the rest of the platform sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Codec: the MIME subtype in lower case (`opus`, `vp8`, `h264`, ...).
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
    /// Node hosting the participant (its node id).
    #[serde(skip)]
    pub node: String,
    /// Join time, ms since the epoch.
    pub joined_at: u64,
    /// Published tracks, in track-id order.
    pub tracks: Vec<TrackRecord>,
}

/// A node of the deployment, as it advertises itself in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// Node id (unique per process lifetime).
    pub id: String,
    /// Signaling URL clients connect to (`http(s)://host:port`).
    pub url: String,
    /// IP advertised in this node's ICE candidates.
    pub media_ip: String,
    /// Load used to place new rooms: participants on the node.
    pub load: u64,
    /// Rooms with participants on the node.
    pub rooms: u64,
    /// Start time, ms since the epoch.
    pub started_at: u64,
}

/// Errors of a store backend. The in-memory store never fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or refused the command.
    #[error("room store unavailable: {0}")]
    Unavailable(String),
    /// The backend did not answer in time.
    #[error("room store did not answer within {0} ms")]
    Timeout(u64),
    /// A stored record could not be read back.
    #[error("room store record unreadable: {0}")]
    Corrupt(String),
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The contract every room-state backend implements (see `contract.rs` for the tests both
/// implementations pass). Participant ids are unique within a room; room names are
/// `[A-Za-z0-9_.-]{1,64}` (never contain `:` or `/`).
pub trait RoomStore: Send + Sync {
    /// Add (or replace) a participant in a room, creating the room.
    fn add_participant(
        &self,
        room: &str,
        p: &ParticipantRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Remove a participant; returns it (with its tracks) if it was there. An empty room
    /// is removed.
    fn remove_participant(
        &self,
        room: &str,
        id: &str,
    ) -> impl Future<Output = StoreResult<Option<ParticipantRecord>>> + Send;
    /// Participants of a room, in join order.
    fn participants(
        &self,
        room: &str,
    ) -> impl Future<Output = StoreResult<Vec<ParticipantRecord>>> + Send;
    /// Find a participant of a room by identity (both backends: a scan of
    /// [`Self::participants`], rooms are small).
    fn find_identity(
        &self,
        room: &str,
        identity: &str,
    ) -> impl Future<Output = StoreResult<Option<ParticipantRecord>>> + Send {
        async move {
            Ok(self
                .participants(room)
                .await?
                .into_iter()
                .find(|p| p.identity == identity))
        }
    }
    /// Add or replace a track of a participant (ignored if the participant is not there).
    fn upsert_track(
        &self,
        room: &str,
        track: &TrackRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Remove a track.
    fn remove_track(
        &self,
        room: &str,
        participant_id: &str,
        track_id: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Set a track's muted flag.
    fn set_muted(
        &self,
        room: &str,
        participant_id: &str,
        track_id: &str,
        muted: bool,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Names of rooms with participants, sorted.
    fn rooms(&self) -> impl Future<Output = StoreResult<Vec<String>>> + Send;

    /// Make `node` the room's host unless a *live* node already hosts it; returns the
    /// host after the call. Taking a room from a dead host drops the dead host's
    /// participants of that room. Atomic: of two nodes claiming at once, one wins.
    fn claim_room(
        &self,
        room: &str,
        node: &str,
        now_ms: u64,
    ) -> impl Future<Output = StoreResult<String>> + Send;
    /// Move the room from `from` (known dead by other means, e.g. a failed liveness
    /// check) to `to`, dropping `from`'s participants of the room; a no-op returning the
    /// current host if the host is no longer `from`. Returns the host after the call.
    fn take_over_room(
        &self,
        room: &str,
        from: &str,
        to: &str,
        now_ms: u64,
    ) -> impl Future<Output = StoreResult<String>> + Send;
    /// The room's host node, if any.
    fn room_host(&self, room: &str) -> impl Future<Output = StoreResult<Option<String>>> + Send;
    /// Release the room's host claim if `node` holds it; returns whether it did.
    fn release_room(
        &self,
        room: &str,
        node: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Write `node`'s whole view of one room (resync): claim the room as in
    /// [`RoomStore::claim_room`] and, if `node` is then its host, replace `node`'s
    /// participants of the room with `participants` (with their tracks). With no
    /// participants, `node`'s participants are removed and its claim released. Returns the
    /// host after the call (`None` when released and nobody else holds it); a live other
    /// host means nothing was written and the caller's participants belong elsewhere.
    fn sync_room(
        &self,
        room: &str,
        node: &str,
        participants: &[ParticipantRecord],
        now_ms: u64,
    ) -> impl Future<Output = StoreResult<Option<String>>> + Send;

    /// Record a heartbeat: `node` is alive until `now_ms + ttl_ms`. Returns `true` when
    /// the store did not know the node (first beat, or the store lost its data: the node
    /// should then write all its rooms again).
    fn heartbeat(
        &self,
        node: &NodeRecord,
        now_ms: u64,
        ttl_ms: u64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Live nodes, least loaded first (then by id).
    fn nodes(&self, now_ms: u64) -> impl Future<Output = StoreResult<Vec<NodeRecord>>> + Send;
    /// Remove a node (graceful shutdown): its registry entry, its participants and its
    /// room claims.
    fn remove_node(&self, id: &str) -> impl Future<Output = StoreResult<()>> + Send;
    /// Clean up every node whose heartbeat expired (as [`RoomStore::remove_node`]);
    /// returns their ids. Any node may call it; concurrent calls are safe.
    fn reap(&self, now_ms: u64) -> impl Future<Output = StoreResult<Vec<String>>> + Send;

    /// Append one chat message (opaque JSON text) to the room's history, keeping only the
    /// last `keep`. The history outlives the room's participants (a room that empties and
    /// fills again, or moves to another node, still has it).
    fn push_chat(
        &self,
        room: &str,
        message: &str,
        keep: usize,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// The room's chat history, oldest first.
    fn chat_history(&self, room: &str) -> impl Future<Output = StoreResult<Vec<String>>> + Send;
}

/// Chat messages kept per room (the join ack's `chatHistory`).
pub const CHAT_HISTORY_MAX: usize = 100;

/// Track order of [`ParticipantRecord::tracks`]: by the number in the id (`TR2` before
/// `TR10`), which is publication order for ids from one node.
pub(crate) fn sort_tracks(tracks: &mut [TrackRecord]) {
    tracks.sort_by(|a, b| (a.id.len(), &a.id).cmp(&(b.id.len(), &b.id)));
}

/// Live nodes ordered for placement: least loaded first, then by id.
pub(crate) fn sort_nodes(nodes: &mut [NodeRecord]) {
    nodes.sort_by(|a, b| (a.load, &a.id).cmp(&(b.load, &b.id)));
}
