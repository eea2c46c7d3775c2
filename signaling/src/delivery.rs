//! Every push to participants goes through here: emitted to the participant's socket, or
//! queued while it has none (detached, waiting for `resume`, see [`crate::resume`]).
//!
//! Why one place: a push that bypassed the queue would be lost to a participant that
//! resumes, silently (a missing `offer` even stalls its subscriber connection for good).
//! Room broadcasts are emitted *under the sessions lock*, the same lock under which a
//! resuming socket joins its Socket.IO rooms and gets its queue flushed; so every push is
//! either queued (and replayed) or broadcast to the new socket, never both and never
//! neither. socketioxide's local adapter broadcasts synchronously (its future is ready at
//! once), which is what lets us emit without holding the lock across an await.

use futures_util::FutureExt;
use serde_json::Value;
use sfu::ParticipantId;
use socketioxide::extract::SocketRef;

use crate::handlers::{chat_key, proctors_key, room_key};
use crate::resume::{self, Queued};
use crate::{AppState, NAMESPACE};

/// Who in a room hears a broadcast.
#[derive(Clone, Copy)]
pub(crate) enum Audience<'a> {
    /// Everyone in the room (proctors included).
    Room(&'a str),
    /// The room's proctors only (events about proctors, focus events).
    Proctors(&'a str),
    /// The room's participants whose token allows chat (chat messages).
    Chat(&'a str),
}

impl Audience<'_> {
    fn room(&self) -> &str {
        match self {
            Audience::Room(r) | Audience::Proctors(r) | Audience::Chat(r) => r,
        }
    }
    fn detached_filter(&self) -> resume::Hears {
        match self {
            Audience::Room(_) => resume::Hears::Room,
            Audience::Proctors(_) => resume::Hears::Proctors,
            Audience::Chat(_) => resume::Hears::Chat,
        }
    }
    fn key(&self) -> String {
        match self {
            Audience::Room(r) => room_key(r),
            Audience::Proctors(r) => proctors_key(r),
            Audience::Chat(r) => chat_key(r),
        }
    }
}

/// Broadcasts `event` to `to` (but not to `except`, the socket that caused it), and queues
/// it for the audience's detached participants.
pub(crate) fn to_room(
    state: &AppState,
    to: Audience<'_>,
    event: &'static str,
    data: &Value,
    except: Option<&SocketRef>,
) {
    let mut overflowed = Vec::new();
    {
        let mut sessions = state.sessions();
        let detached: Vec<ParticipantId> = sessions
            .parked
            .detached_in(to.room(), to.detached_filter())
            .map(|(p, _)| p)
            .collect();
        for p in detached {
            if let Some(Queued::Overflow(room)) = sessions.parked.queue(p, event, data) {
                overflowed.push((p, room));
            }
        }
        let op = match except {
            Some(s) => Some(s.to(to.key())),
            None => state.io().of(NAMESPACE).map(|op| op.to(to.key())),
        };
        if let Some(op) = op {
            // Local adapter: ready at the first poll (see the module docs).
            let _ = op.emit(event, data).now_or_never();
        }
    }
    for (p, room) in overflowed {
        resume::overflowed(state, p, room);
    }
}

/// A subscriber offer for `p`: remembered until answered (sent again on resume if the
/// dropped socket may have swallowed it), then pushed like any event; an offer produced
/// before `p`'s join ack went out waits for it.
pub(crate) fn offer(state: &AppState, p: ParticipantId, payload: Value) {
    let outcome = {
        let mut guard = state.sessions();
        let sessions = &mut *guard;
        // An offer the media core produced for a participant that has left since (its
        // renegotiation raced the departure) goes nowhere: remembering it would keep an
        // `early_offers` and an unanswered-offer entry for good (found by the soak:
        // scripts/soak.py checks every signaling map is empty once everyone left). Known:
        // attached, joining (handed to the core, not bound to its session yet: the join
        // does not wait for the shard, so its first offer can come first), detached
        // (waiting for a resume), or bound with its join ack not yet sent (the scan only
        // runs for those and for the departed).
        let known = sessions.by_participant.contains_key(&p)
            || sessions.joining.contains(&p)
            || sessions.parked.detached(p).is_some()
            || sessions.by_sid.values().any(|s| s.participant == Some(p));
        if !known {
            tracing::debug!(participant = %p, "offer for a departed participant dropped");
            return;
        }
        sessions.parked.offered(p, &payload);
        let outcome = push_locked(state, sessions, p, "offer", &payload);
        if matches!(outcome, Pushed::Nowhere) {
            sessions.early_offers.insert(p, payload);
        }
        outcome
    };
    if let Pushed::Overflow(room) = outcome {
        resume::overflowed(state, p, room);
    }
}

/// An event for one participant alone (e.g. `videoPaused`), queued while it is detached.
pub(crate) fn to_participant(
    state: &AppState,
    p: ParticipantId,
    event: &'static str,
    data: &Value,
) {
    let outcome = {
        let mut guard = state.sessions();
        push_locked(state, &mut guard, p, event, data)
    };
    if let Pushed::Overflow(room) = outcome {
        resume::overflowed(state, p, room);
    }
}

enum Pushed {
    Sent,
    Queued,
    Overflow(String),
    Nowhere,
}

fn push_locked(
    state: &AppState,
    sessions: &mut crate::Sessions,
    p: ParticipantId,
    event: &'static str,
    data: &Value,
) -> Pushed {
    if let Some(sid) = sessions.by_participant.get(&p) {
        if let Some(s) = state.io().of(NAMESPACE).and_then(|op| op.get_socket(*sid)) {
            let _ = s.emit(event, data);
        }
        return Pushed::Sent;
    }
    match sessions.parked.queue(p, event, data) {
        Some(Queued::Kept) => Pushed::Queued,
        Some(Queued::Overflow(room)) => Pushed::Overflow(room),
        None => Pushed::Nowhere,
    }
}
