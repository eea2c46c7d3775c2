//! The media core's one error enum. Each variant maps to a protocol error code
//! (`docs/protocol.md`) so signaling can answer the client without guessing.

use thiserror::Error;

/// Errors returned by the media core to its caller (signaling).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SfuError {
    /// The participant is not (or no longer) in the core.
    #[error("participant is not joined")]
    NotJoined,
    /// The participant id is already in use.
    #[error("participant already joined")]
    AlreadyJoined,
    /// The participant's grants do not allow this.
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    /// The SDP could not be parsed or negotiated.
    #[error("bad SDP: {0}")]
    BadSdp(String),
    /// The track does not exist or belongs to someone else.
    #[error("unknown track")]
    UnknownTrack,
    /// An answer arrived with no offer outstanding.
    #[error("no offer pending")]
    NoOfferPending,
    /// A payload field is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The room reached its participant limit.
    #[error("room is full")]
    RoomFull,
    /// The shard owning the room is gone (shutting down) — a server-side failure.
    #[error("media shard unavailable")]
    ShardGone,
}

impl SfuError {
    /// The protocol error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            SfuError::NotJoined => "not_joined",
            SfuError::AlreadyJoined => "already_joined",
            SfuError::Forbidden(_) => "forbidden",
            SfuError::BadSdp(_) => "bad_sdp",
            SfuError::UnknownTrack => "unknown_track",
            SfuError::NoOfferPending => "no_offer_pending",
            SfuError::BadRequest(_) => "bad_request",
            SfuError::RoomFull => "room_full",
            SfuError::ShardGone => "internal",
        }
    }
}
