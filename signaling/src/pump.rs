//! The media core's events, turned into Socket.IO events and room-state updates.

use serde_json::{Value, json};
use sfu::{RemovalReason, SfuEvent};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, info};

use crate::delivery::{self, Audience};
use crate::departure::Departure;
use crate::events::Kind;
use crate::handlers::{announce_left, kind_str, now_ms, track_json, track_record};
use crate::{AppState, NAMESPACE};

/// Run until the core's event channel closes.
pub async fn run(state: AppState, mut events: UnboundedReceiver<SfuEvent>) {
    while let Some(ev) = events.recv().await {
        handle(&state, ev).await;
    }
    debug!("event pump finished");
}

/// Events about a participant's tracks: a proctor's go to proctors only (invisible to
/// learners).
fn about(state: &AppState, room: &str, participant: &str, event: &'static str, data: &Value) {
    let proctor = state
        .store()
        .participants(room)
        .iter()
        .any(|p| p.id == participant && p.role == "proctor");
    let to = if proctor {
        Audience::Proctors(room)
    } else {
        Audience::Room(room)
    };
    delivery::to_room(state, to, event, data, None);
}

/// Change a participant's track in the store and stamp the lifecycle event (`track.*`)
/// under the same lock: the store's order is the events' order, so a track's events never
/// overtake its participant's `participant.left` (stamped by `announce_left` under this
/// lock too). `change` returns the track as stored after the change, or `None` when there is
/// nothing to announce (e.g. the participant already left).
fn change_track(
    state: &AppState,
    room: &str,
    participant: &str,
    kind: Kind,
    change: impl FnOnce(&mut room_state::MemoryStore) -> Option<Value>,
) {
    let mut store = state.store();
    let identity = store
        .participants(room)
        .into_iter()
        .find(|p| p.id == participant)
        .map(|p| p.identity);
    if let Some(track) = change(&mut store) {
        state.lifecycle().emit(
            room,
            kind,
            now_ms(),
            json!({ "participant": { "id": participant, "identity": identity }, "track": track }),
        );
    }
}

async fn handle(state: &AppState, ev: SfuEvent) {
    match ev {
        SfuEvent::SubscriberOffer {
            participant,
            sdp,
            tracks,
        } => {
            let payload = json!({
                "sdp": sdp,
                "tracks": tracks.iter().map(|t| json!({
                    "mid": t.mid,
                    "trackId": t.track.map(|x| x.to_string()),
                    "participantId": t.publisher.to_string(),
                    "kind": kind_str(t.kind),
                    "source": t.source.as_str(),
                })).collect::<Vec<_>>(),
            });
            delivery::offer(state, participant, payload);
        }
        SfuEvent::VideoPaused { participant, track } => {
            debug!(%participant, %track, "video paused for bandwidth");
            delivery::to_participant(
                state,
                participant,
                "videoPaused",
                &json!({ "trackId": track.to_string(), "reason": "bandwidth" }),
            );
        }
        SfuEvent::PublisherLayers {
            participant,
            track,
            layers,
        } => {
            debug!(%participant, %track, ?layers, "dynacast: publisher layers");
            delivery::to_participant(
                state,
                participant,
                "publisherLayers",
                &json!({
                    "trackId": track.to_string(),
                    "layers": layers.iter().map(|l| json!({ "rid": l.rid, "active": l.active })).collect::<Vec<_>>(),
                }),
            );
        }
        SfuEvent::VideoResumed { participant, track } => {
            debug!(%participant, %track, "video resumed");
            delivery::to_participant(
                state,
                participant,
                "videoResumed",
                &json!({ "trackId": track.to_string(), "reason": "bandwidth" }),
            );
        }
        SfuEvent::TrackPublished { room, track } => {
            info!(track = %track.id, participant = %track.participant, source = track.source.as_str(), codec = %track.codec, "track published");
            change_track(
                state,
                &room,
                &track.participant.to_string(),
                Kind::TrackPublished,
                |store| {
                    store.upsert_track(&room, track_record(&track));
                    Some(track_json(&track))
                },
            );
            about(
                state,
                &room,
                &track.participant.to_string(),
                "trackPublished",
                &track_json(&track),
            );
        }
        SfuEvent::TrackUnpublished {
            room,
            participant,
            track,
        } => {
            // A leaving participant's tracks are announced by `announce_left` (before it
            // leaves); only a track still in the store is news here.
            let (pid, tid) = (participant.to_string(), track.to_string());
            change_track(state, &room, &pid, Kind::TrackUnpublished, |store| {
                let stored = store
                    .participants(&room)
                    .into_iter()
                    .find(|p| p.id == pid)
                    .and_then(|p| p.tracks.into_iter().find(|t| t.id == tid));
                store.remove_track(&room, &pid, &tid);
                stored.and_then(|t| serde_json::to_value(t).ok())
            });
            about(
                state,
                &room,
                &participant.to_string(),
                "trackUnpublished",
                &json!({ "id": track.to_string(), "participantId": participant.to_string() }),
            );
        }
        SfuEvent::TrackMuted {
            room,
            participant,
            track,
            muted,
        } => {
            let (pid, tid) = (participant.to_string(), track.to_string());
            let kind = if muted {
                Kind::TrackMuted
            } else {
                Kind::TrackUnmuted
            };
            change_track(state, &room, &pid, kind, |store| {
                store.set_muted(&room, &pid, &tid, muted);
                store
                    .participants(&room)
                    .into_iter()
                    .flat_map(|p| p.tracks)
                    .find(|t| t.id == tid)
                    .and_then(|t| serde_json::to_value(t).ok())
            });
            about(
                state,
                &room,
                &participant.to_string(),
                "trackMuted",
                &json!({ "id": track.to_string(), "participantId": participant.to_string(), "muted": muted }),
            );
        }
        SfuEvent::ParticipantRemoved {
            room,
            participant,
            reason,
        } => {
            // Attached, resuming or detached: its session goes (a detached one has no
            // socket to tell).
            let sid = state
                .sessions()
                .unbind(participant)
                .and_then(|(sid, _)| sid);
            let (why, code, message) = match reason {
                RemovalReason::ConsentTimeout | RemovalReason::ConnectTimeout => (
                    Departure::Timeout,
                    "media_timeout",
                    "media connection lost; rejoin",
                ),
                RemovalReason::TransportFailed => (
                    Departure::TransportFailed,
                    "media_closed",
                    "the media connection was closed; rejoin",
                ),
                // A bug (logged by the SFU); the client sees a closed media connection.
                RemovalReason::JoinRefused => (
                    Departure::TransportFailed,
                    "media_closed",
                    "the media connection could not be set up; rejoin",
                ),
            };
            announce_left(state, participant, &room, why).await;
            if let Some(s) =
                sid.and_then(|sid| state.io().of(NAMESPACE).and_then(|op| op.get_socket(sid)))
            {
                let _ = s.emit("error", &json!({ "code": code, "message": message }));
                let _ = s.disconnect();
            }
        }
        SfuEvent::ActiveSpeakers { room, speakers } => {
            let list: Vec<Value> = speakers
                .iter()
                .map(|(p, l)| json!({ "id": p.to_string(), "level": (*l * 100.0).round() / 100.0 }))
                .collect();
            delivery::to_room(
                state,
                Audience::Room(&room),
                "activeSpeakers",
                &json!({ "speakers": list }),
                None,
            );
        }
    }
}
