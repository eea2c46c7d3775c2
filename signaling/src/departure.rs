//! Why a participant stops being part of its room, and how often each reason happened.
//!
//! Every removal goes through `handlers::announce_left` with one [`Departure`]; the enum is
//! the one place that names the reason a client sees (`participantLeft.reason`, NATS
//! `participant.left`) and the label operators see (`studyroom_participant_removals_total`).
//! Keeping them together means a new way to leave cannot be announced without being counted.

use std::sync::atomic::{AtomicU64, Ordering};

/// The reason a participant was removed from its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Departure {
    /// The client sent `leave`.
    Left,
    /// The socket closed on purpose (namespace disconnect), or dropped and was not resumed
    /// within the resume window, or went away while joining.
    Disconnected,
    /// The media core gave up on the transport: ICE consent lost, or never connected.
    Timeout,
    /// The media core closed the transport (DTLS close, str0m error).
    TransportFailed,
    /// The same identity joined the room again.
    Replaced,
    /// The platform removed the participant (NATS `participant.remove`).
    Removed,
    /// The platform closed the room (NATS `room.close`).
    RoomClosed,
}

impl Departure {
    /// Every reason, in the order the metric lists them.
    pub(crate) const ALL: [Departure; 7] = [
        Departure::Left,
        Departure::Disconnected,
        Departure::Timeout,
        Departure::TransportFailed,
        Departure::Replaced,
        Departure::Removed,
        Departure::RoomClosed,
    ];

    /// `participantLeft.reason` and the NATS event's `reason` (docs/protocol.md). A failed
    /// transport is announced as `disconnected`, as it always was.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Departure::Left => "left",
            Departure::Disconnected | Departure::TransportFailed => "disconnected",
            Departure::Timeout => "timeout",
            Departure::Replaced => "replaced",
            Departure::Removed => "removed",
            Departure::RoomClosed => "room_closed",
        }
    }

    /// The `reason` label of `studyroom_participant_removals_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Departure::Left => "left",
            Departure::Disconnected => "disconnected",
            Departure::Timeout => "timeout",
            Departure::TransportFailed => "transport_failed",
            Departure::Replaced => "replaced",
            Departure::Removed => "removed",
            Departure::RoomClosed => "room_closed",
        }
    }

    fn index(self) -> usize {
        match self {
            Departure::Left => 0,
            Departure::Disconnected => 1,
            Departure::Timeout => 2,
            Departure::TransportFailed => 3,
            Departure::Replaced => 4,
            Departure::Removed => 5,
            Departure::RoomClosed => 6,
        }
    }
}

/// Removals and resumes since start, read by the metrics scrape.
#[derive(Default)]
pub(crate) struct Counters {
    removals: [AtomicU64; 7],
    resumes: AtomicU64,
}

impl Counters {
    /// One participant removed for `why`.
    pub(crate) fn removed(&self, why: Departure) {
        self.removals[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Participants removed for `why` so far.
    pub(crate) fn removals(&self, why: Departure) -> u64 {
        self.removals[why.index()].load(Ordering::Relaxed)
    }

    /// One participant continued on a new socket.
    pub(crate) fn resumed(&self) {
        self.resumes.fetch_add(1, Ordering::Relaxed);
    }

    /// Sessions resumed so far.
    pub(crate) fn resumes(&self) -> u64 {
        self.resumes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_and_label() {
        let c = Counters::default();
        for (i, d) in Departure::ALL.iter().enumerate() {
            for _ in 0..=i {
                c.removed(*d);
            }
        }
        for (i, d) in Departure::ALL.iter().enumerate() {
            assert_eq!(c.removals(*d), i as u64 + 1, "{d:?}");
        }
        let labels: std::collections::HashSet<_> =
            Departure::ALL.iter().map(|d| d.label()).collect();
        assert_eq!(labels.len(), Departure::ALL.len());
        assert_eq!(Departure::TransportFailed.reason(), "disconnected");
    }
}
