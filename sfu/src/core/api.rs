//! The core's public vocabulary: grants, tracks, offers, events and transmits, as
//! signaling and the driver see them.

use std::net::SocketAddr;
use std::sync::Arc;

use str0m::media::MediaKind;

use crate::ids::{ParticipantId, Source, TrackId};

/// What a participant may do (from its token's grants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grants {
    /// May publish tracks.
    pub publish: bool,
    /// May receive others' tracks.
    pub subscribe: bool,
    /// A proctor: receives learners' cameras and screens (no microphones) and is invisible
    /// to learners, who never receive its tracks.
    pub proctor: bool,
}

/// Whether a subscriber with `sub` grants gets a track of `source` published by someone
/// whose grants are `publisher`.
pub fn may_consume(sub: Grants, publisher: Grants, source: Source) -> bool {
    if sub.proctor {
        source != Source::Microphone
    } else {
        !publisher.proctor
    }
}

/// A track the client says it is sending in its offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRequest {
    /// The m-line's mid in the client's offer.
    pub mid: String,
    /// What it carries.
    pub source: Source,
    /// Starts muted.
    pub muted: bool,
}

/// Description of a published track (for signaling and the room state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// Track id.
    pub id: TrackId,
    /// Publisher.
    pub participant: ParticipantId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Camera, microphone or screen.
    pub source: Source,
    /// Muted by its publisher.
    pub muted: bool,
    /// Negotiated codec: the MIME subtype in lower case (`opus`, `vp8`, `vp9`, `h264`, `av1`).
    pub codec: String,
}

/// The answer to a `publish`.
#[derive(Debug, Clone)]
pub struct PublishAnswer {
    /// SDP answer for the client's publisher PC.
    pub sdp: String,
    /// Tracks now published from this offer.
    pub tracks: Vec<TrackInfo>,
}

/// One m-line of a server offer and what it will carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedTrack {
    /// The mid in our offer.
    pub mid: String,
    /// The producer currently feeding it (None when the publisher unpublished it).
    pub track: Option<TrackId>,
    /// Whose track it is.
    pub publisher: ParticipantId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Camera, microphone or screen.
    pub source: Source,
}

/// How a subscriber displays one remote video (adaptive stream, reported by the client
/// with `trackView`): the allocator never sends a layer larger than this, and a video
/// nobody sees is not sent at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackView {
    /// Shown somewhere: in a visible tab, on screen, with a non-zero size.
    pub visible: bool,
    /// Width of the largest element showing it, in device pixels.
    pub width: u32,
    /// Height of that element, in device pixels.
    pub height: u32,
}

/// Whether one simulcast layer (or a video sent without simulcast) of a published track
/// should be encoded (dynacast, see [`SfuEvent::PublisherLayers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerActive {
    /// The layer's RID; None for a video sent without simulcast.
    pub rid: Option<String>,
    /// Encode it.
    pub active: bool,
}

/// Why a participant was removed by the core itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    /// ICE consent lost (abrupt disconnect).
    ConsentTimeout,
    /// A transport never connected.
    ConnectTimeout,
    /// A transport failed (str0m error).
    TransportFailed,
    /// The shard refused a join the driver had admitted and posted ([`crate::Sfu::join`]);
    /// a bug, logged as an error.
    JoinRefused,
}

/// Events for signaling.
#[derive(Debug, Clone)]
pub enum SfuEvent {
    /// Send this offer to the participant's subscriber PC.
    SubscriberOffer {
        /// To whom.
        participant: ParticipantId,
        /// The SDP offer.
        sdp: String,
        /// Mapping of every active m-line.
        tracks: Vec<OfferedTrack>,
    },
    /// A track was published.
    TrackPublished {
        /// Room name.
        room: Arc<str>,
        /// The track.
        track: TrackInfo,
    },
    /// A track was unpublished.
    TrackUnpublished {
        /// Room name.
        room: Arc<str>,
        /// Publisher.
        participant: ParticipantId,
        /// The track.
        track: TrackId,
    },
    /// A track was muted or unmuted.
    TrackMuted {
        /// Room name.
        room: Arc<str>,
        /// Publisher.
        participant: ParticipantId,
        /// The track.
        track: TrackId,
        /// New state.
        muted: bool,
    },
    /// The core removed a participant on its own (its state is already freed).
    ParticipantRemoved {
        /// Room name.
        room: Arc<str>,
        /// Who.
        participant: ParticipantId,
        /// Why.
        reason: RemovalReason,
    },
    /// A subscriber's video of `track` stopped because its downlink cannot carry even
    /// the lowest layer (the stream allocator paused it; audio keeps flowing).
    VideoPaused {
        /// The subscriber.
        participant: ParticipantId,
        /// The paused track.
        track: TrackId,
    },
    /// The video paused for bandwidth flows again.
    VideoResumed {
        /// The subscriber.
        participant: ParticipantId,
        /// The resumed track.
        track: TrackId,
    },
    /// Dynacast: which layers of one of `participant`'s published videos some subscriber
    /// wants. The publisher's client stops encoding the inactive ones
    /// (`RTCRtpSender.setParameters`) and starts them again when told. Layers not listed
    /// (never seen by the server) are left as they are.
    PublisherLayers {
        /// The publisher.
        participant: ParticipantId,
        /// Its track.
        track: TrackId,
        /// Every layer seen, lowest first.
        layers: Vec<LayerActive>,
    },
    /// The set of active speakers in a room changed (loudest first, level 0..1).
    ActiveSpeakers {
        /// Room name.
        room: Arc<str>,
        /// Speakers.
        speakers: Vec<(ParticipantId, f32)>,
    },
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    /// Index of the local port (into the shard's port list) to send from.
    pub port_idx: usize,
    /// Destination.
    pub destination: SocketAddr,
    /// Bytes.
    pub data: Vec<u8>,
}
