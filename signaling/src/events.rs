//! Room lifecycle events for the rest of the platform (`docs/events.md`): room
//! started/ended, participant joined/left, track published/unpublished/muted/unmuted,
//! published as versioned JSON on `studyroom.room.<room>.<type>` when NATS is configured.
//!
//! Events are stamped here, in the order signaling observes them, with a per-node sequence
//! number (`seq`, gap-free unless the outbox overflowed: consumers can detect loss), and
//! handed to an [`Outbox`] that publishes them to the JetStream stream `STUDYROOM_EVENTS`
//! one at a time, in order, each acknowledged. A NATS outage delays events and never blocks
//! a handler; what does not fit in the bound is dropped, counted and logged.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::outbox::{Message, Outbox, subject_token};

/// Schema version of every lifecycle event.
pub const SCHEMA_VERSION: u32 = 1;
/// Events waiting for NATS at most.
pub const QUEUE_MAX: usize = 10_000;

/// Kinds of lifecycle event (the last tokens of the subject, and `type` in the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// First participant of a room on this node joined.
    RoomStarted,
    /// Last participant left (or the room was closed).
    RoomEnded,
    /// A participant joined.
    ParticipantJoined,
    /// A participant left (`reason` says why).
    ParticipantLeft,
    /// A track was published.
    TrackPublished,
    /// A track was unpublished.
    TrackUnpublished,
    /// A track was muted.
    TrackMuted,
    /// A track was unmuted.
    TrackUnmuted,
    /// A chat message was sent (subject `studyroom.room.<room>.message`).
    Message,
}

impl Kind {
    /// `room.started`, `participant.joined`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RoomStarted => "room.started",
            Kind::RoomEnded => "room.ended",
            Kind::ParticipantJoined => "participant.joined",
            Kind::ParticipantLeft => "participant.left",
            Kind::TrackPublished => "track.published",
            Kind::TrackUnpublished => "track.unpublished",
            Kind::TrackMuted => "track.muted",
            Kind::TrackUnmuted => "track.unmuted",
            Kind::Message => "message",
        }
    }
}

/// The node's lifecycle event publisher.
pub struct Lifecycle {
    node: String,
    /// Distinguishes this process from an earlier one with the same node id, so message
    /// ids of a restarted node are not taken for duplicates.
    boot: u64,
    seq: AtomicU64,
    enabled: bool,
    /// The JetStream queue (`STUDYROOM_EVENTS`).
    pub outbox: Outbox,
}

impl Lifecycle {
    /// Events of node `node`; `enabled` when NATS is configured (otherwise `emit` is a no-op).
    pub fn new(node: String, boot: u64, enabled: bool) -> Self {
        Lifecycle {
            node,
            boot,
            seq: AtomicU64::new(0),
            enabled,
            outbox: Outbox::new(
                "lifecycle events",
                "STUDYROOM_EVENTS",
                "studyroom.room.>",
                QUEUE_MAX,
            ),
        }
    }

    /// Events stamped so far.
    pub fn emitted(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// Stamp and queue one event; `fields` (an object) are merged into the payload.
    pub fn emit(&self, room: &str, kind: Kind, at_ms: u64, fields: Value) {
        if !self.enabled {
            return;
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut body = json!({
            "v": SCHEMA_VERSION,
            "type": kind.as_str(),
            "room": room,
            "node": self.node,
            "seq": seq,
            "at": at_ms,
        });
        if let (Some(b), Value::Object(f)) = (body.as_object_mut(), fields) {
            b.extend(f);
        }
        self.outbox.push(Message {
            subject: subject(room, kind),
            msg_id: format!("{}/{:x}/{seq}", self.node, self.boot),
            body: serde_json::to_vec(&body).unwrap_or_default(),
        });
    }
}

/// The `participant` object of an event.
pub fn participant_fields(p: &room_state::ParticipantRecord) -> Value {
    json!({
        "id": p.id,
        "identity": p.identity,
        "name": p.name,
        "role": p.role,
        "joinedAt": p.joined_at,
    })
}

/// `studyroom.room.<room>.<kind>`.
pub fn subject(room: &str, kind: Kind) -> String {
    format!("studyroom.room.{}.{}", subject_token(room), kind.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_in_order_with_the_documented_envelope() {
        let l = Lifecycle::new("n1".into(), 0xab, true);
        l.emit(
            "exam.1",
            Kind::ParticipantJoined,
            5,
            json!({ "participant": { "id": "P1" } }),
        );
        l.emit(
            "exam.1",
            Kind::ParticipantLeft,
            6,
            json!({ "reason": "left" }),
        );
        let q = l.outbox.snapshot();
        assert_eq!(q.len(), 2);
        let first: Value = serde_json::from_slice(&q[0].body).unwrap();
        assert_eq!(q[0].subject, "studyroom.room.exam%2E1.participant.joined");
        assert_eq!(q[0].msg_id, "n1/ab/1");
        assert_eq!(first["v"], 1);
        assert_eq!(first["type"], "participant.joined");
        assert_eq!(first["room"], "exam.1");
        assert_eq!(first["seq"], 1);
        assert_eq!(first["participant"]["id"], "P1");
        assert_eq!(l.emitted(), 2);
    }

    #[test]
    fn disabled_is_a_no_op() {
        let l = Lifecycle::new("n1".into(), 1, false);
        l.emit("r", Kind::RoomStarted, 1, json!({}));
        assert_eq!((l.outbox.pending(), l.emitted()), (0, 0));
    }
}
