//! A participant's departure, however it comes (leave, disconnect, removal by the core
//! or the platform, a resume window that ran out): SFU state freed, the room told, the
//! session table and the room store updated, NATS events stamped.

use serde_json::json;
use sfu::ParticipantId;
use tracing::{debug, info};

use crate::delivery::{self, Audience};
use crate::departure::Departure;
use crate::events::{Kind, participant_fields};
use crate::{AppState, NAMESPACE};

use super::*;

/// The participant on socket `sid` leaves (leave, disconnect, replaced, sent away): free
/// media state, update the store, tell the room. Idempotent.
pub(crate) async fn depart(state: &AppState, sid: socketioxide::socket::Sid, why: Departure) {
    let (p, room) = {
        let mut sessions = state.sessions();
        let Some(s) = sessions.by_sid.get_mut(&sid) else {
            return;
        };
        let Some(p) = s.participant.take() else {
            return;
        };
        let room = s.room.clone();
        sessions.unbind(p);
        (p, room)
    };
    // The leaver is not told about itself.
    if let Some(s) = state.io().of(NAMESPACE).and_then(|op| op.get_socket(sid)) {
        s.leave(room_key(&room));
        s.leave(proctors_key(&room));
        s.leave(crate::handlers::chat_key(&room));
    }
    remove_participant(state, p, &room, why).await;
}

/// Participant `p` leaves, whether it has a socket or is detached (waiting for a resume).
/// Returns the socket it had, for the caller to disconnect.
pub(crate) async fn depart_participant(
    state: &AppState,
    p: ParticipantId,
    why: Departure,
) -> Option<socketioxide::socket::Sid> {
    let (sid, detached_room) = {
        let mut sessions = state.sessions();
        let sid = sessions
            .by_participant
            .get(&p)
            .copied()
            .or_else(|| sessions.parked.claimed_by(p));
        match sid {
            Some(sid) => (Some(sid), None),
            None => match sessions.parked.detached(p).map(|d| d.room.clone()) {
                Some(room) => {
                    sessions.unbind(p);
                    (None, Some(room))
                }
                None => return None,
            },
        }
    };
    if let Some(sid) = sid {
        depart(state, sid, why).await;
    } else if let Some(room) = detached_room {
        remove_participant(state, p, &room, why).await;
    }
    sid
}

/// Frees `p`'s media state and announces it gone (the session table is already done).
pub(crate) async fn remove_participant(
    state: &AppState,
    p: ParticipantId,
    room: &str,
    why: Departure,
) {
    if let Err(e) = state.sfu().leave(p).await {
        debug!(participant = %p, "leave: {e}");
    }
    announce_left(state, p, room, why).await;
}

/// Remove a participant from the store and tell its room.
pub(crate) async fn announce_left(state: &AppState, p: ParticipantId, room: &str, why: Departure) {
    let reason = why.reason();
    // Store change and lifecycle events under one lock: see `pump::change_track`.
    let removed = {
        let mut store = state.store();
        let removed = store.remove_participant(room, &p.to_string());
        if let Some(r) = &removed {
            let at = now_ms();
            let lifecycle = &state.lifecycle();
            // Its tracks end with it: unpublished first, then the participant leaves.
            for t in &r.tracks {
                lifecycle.emit(
                    room,
                    Kind::TrackUnpublished,
                    at,
                    json!({ "participant": { "id": r.id, "identity": r.identity }, "track": t }),
                );
            }
            lifecycle.emit(
                room,
                Kind::ParticipantLeft,
                at,
                json!({ "participant": participant_fields(r), "reason": reason }),
            );
            if store.participants(room).is_empty() {
                lifecycle.emit(room, Kind::RoomEnded, at, json!({}));
            }
        }
        removed
    };
    if removed.is_some() {
        state.departures().removed(why);
    }
    state.focus().forget(room, &p.to_string());
    state.chat().forget(room, &p.to_string());
    info!(participant = %p, room, reason, removal = why.label(), "participant left");
    let proctor = removed.is_some_and(|r| r.role == "proctor");
    let audience = if proctor {
        Audience::Proctors(room)
    } else {
        Audience::Room(room)
    };
    delivery::to_room(
        state,
        audience,
        "participantLeft",
        &json!({ "id": p.to_string(), "reason": reason }),
        None,
    );
}
