//! Media requests of a joined participant: publish (offer/answer), the subscriber's
//! answers, ICE (trickle and restart), mute, unpublish, simulcast quality. Each checks its
//! payload and hands it to the SFU.

use serde::Deserialize;
use serde_json::{Value, json};
use sfu::core::MAX_SDP_BYTES;
use sfu::{ParticipantId, Quality, Role, Source, TrackId, TrackRequest};
use socketioxide::extract::SocketRef;

use crate::AppState;

use super::*;

#[derive(Deserialize)]
pub(super) struct PublishReq {
    sdp: String,
    tracks: Vec<TrackReq>,
}

#[derive(Deserialize)]
pub(super) struct TrackReq {
    mid: String,
    source: String,
    #[serde(default)]
    muted: bool,
}

pub(super) fn check_sdp(sdp: &str) -> Result<(), ApiError> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(ApiError::new(
            "payload_too_large",
            format!("SDP is {} bytes; the limit is {MAX_SDP_BYTES}", sdp.len()),
        ));
    }
    if sdp.is_empty() {
        return Err(ApiError::new("bad_sdp", "empty SDP"));
    }
    Ok(())
}

/// `publish`'s payload, checked: the SDP and the tracks (pure; fuzzed by `fuzz/`).
pub(crate) fn parse_publish(d: Option<Value>) -> Result<(String, Vec<TrackRequest>), ApiError> {
    let req: PublishReq = parse(d)?;
    check_sdp(&req.sdp)?;
    let mut tracks = Vec::new();
    for t in req.tracks {
        let source: Source = t
            .source
            .parse()
            .map_err(|_| ApiError::bad("track source must be camera, microphone or screen"))?;
        if t.mid.is_empty() || t.mid.len() > 32 {
            return Err(ApiError::bad("bad mid"));
        }
        tracks.push(TrackRequest {
            mid: t.mid,
            source,
            muted: t.muted,
        });
    }
    Ok((req.sdp, tracks))
}

#[tracing::instrument(name = "publish", level = "info", skip_all, fields(sid = %socket.id))]
pub(super) async fn publish(
    socket: &SocketRef,
    state: &AppState,
    d: Option<Value>,
) -> Result<Value, ApiError> {
    let (p, _) = participant_of(state, socket)?;
    let (sdp, tracks) = parse_publish(d)?;
    let a = state.sfu().publish(p, sdp, tracks).await?;
    Ok(json!({ "sdp": a.sdp, "tracks": a.tracks.iter().map(track_json).collect::<Vec<_>>() }))
}

#[derive(Deserialize)]
pub(super) struct AnswerReq {
    sdp: String,
}

/// `answer`'s payload, checked: the SDP.
pub(crate) fn parse_answer(d: Option<Value>) -> Result<String, ApiError> {
    let req: AnswerReq = parse(d)?;
    check_sdp(&req.sdp)?;
    Ok(req.sdp)
}

#[tracing::instrument(name = "answer", level = "info", skip_all, fields(sid = %socket.id))]
pub(super) async fn answer(
    socket: &SocketRef,
    state: &AppState,
    d: Option<Value>,
) -> Result<Value, ApiError> {
    let (p, _) = participant_of(state, socket)?;
    let sdp = parse_answer(d)?;
    let seq = state.sessions().parked.offer_seq(p);
    state.sfu().answer(p, sdp).await?;
    // Answered: nothing to send again on a resume (unless a newer offer went out meanwhile).
    state.sessions().parked.answered(p, seq);
    Ok(json!({ "ok": true }))
}

/// The client's subscriber PC lost ICE (or its network changed): the server restarts ICE
/// on that transport and pushes a new `offer` (new ufrag/pwd, same m-lines).
#[tracing::instrument(name = "restartIce", level = "info", skip_all, fields(sid = %socket.id))]
pub(super) async fn restart_ice(
    socket: &SocketRef,
    state: &AppState,
    d: Option<Value>,
) -> Result<Value, ApiError> {
    object(d)?;
    let (p, _) = participant_of(state, socket)?;
    state.sfu().restart_ice(p).await?;
    Ok(json!({ "ok": true }))
}

#[derive(Deserialize)]
pub(super) struct IceReq {
    target: String,
    candidate: Option<IceCandidate>,
}

#[derive(Deserialize)]
pub(super) struct IceCandidate {
    candidate: String,
}

#[tracing::instrument(name = "ice", level = "info", skip_all, fields(sid = %socket.id))]
pub(super) async fn ice(
    socket: &SocketRef,
    state: &AppState,
    d: Option<Value>,
) -> Result<Value, ApiError> {
    let (p, _) = participant_of(state, socket)?;
    let parsed = parse_ice(d)?;
    if let Some((role, candidate)) = parsed {
        state.sfu().candidate(p, role, candidate).await?;
    }
    Ok(json!({ "ok": true }))
}

/// `ice`'s payload, checked: which connection and the candidate (`None`: end of
/// candidates, nothing to do).
pub(crate) fn parse_ice(d: Option<Value>) -> Result<Option<(Role, String)>, ApiError> {
    let req: IceReq = parse(d)?;
    let role = match req.target.as_str() {
        "publisher" => Role::Publisher,
        "subscriber" => Role::Subscriber,
        _ => return Err(ApiError::bad("target must be publisher or subscriber")),
    };
    let Some(c) = req.candidate else {
        return Ok(None);
    };
    if c.candidate.is_empty() {
        return Ok(None);
    }
    if c.candidate.len() > 1024 {
        return Err(ApiError::bad("candidate too long"));
    }
    Ok(Some((role, c.candidate)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MuteReq {
    track_id: String,
    muted: bool,
}

pub(super) fn parse_track(s: &str) -> Result<TrackId, ApiError> {
    s.parse()
        .map_err(|_| ApiError::new("unknown_track", "no such track"))
}

/// `mute`'s payload, checked.
pub(crate) fn parse_mute(d: Option<Value>) -> Result<(TrackId, bool), ApiError> {
    let req: MuteReq = parse(d)?;
    Ok((parse_track(&req.track_id)?, req.muted))
}

#[tracing::instrument(name = "mute", level = "info", skip_all, fields(sid = %socket.id))]
pub(super) async fn mute(
    socket: &SocketRef,
    state: &AppState,
    d: Option<Value>,
) -> Result<Value, ApiError> {
    let (p, _) = participant_of(state, socket)?;
    let (track, muted) = parse_mute(d)?;
    state.sfu().mute(p, track, muted).await?;
    Ok(json!({ "ok": true }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UnpublishReq {
    track_id: String,
}

/// `unpublish`'s payload, checked.
pub(crate) fn parse_unpublish(d: Option<Value>) -> Result<TrackId, ApiError> {
    let req: UnpublishReq = parse(d)?;
    parse_track(&req.track_id)
}

#[tracing::instrument(name = "unpublish", level = "info", skip_all, fields(sid = %socket.id))]
pub(super) async fn unpublish(
    socket: &SocketRef,
    state: &AppState,
    d: Option<Value>,
) -> Result<Value, ApiError> {
    let (p, _) = participant_of(state, socket)?;
    let track = parse_unpublish(d)?;
    state.sfu().unpublish(p, track).await?;
    Ok(json!({ "ok": true }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct QualityReq {
    participant_id: String,
    source: String,
    quality: String,
}

/// Which simulcast layer this subscriber wants of another participant's video.
#[tracing::instrument(name = "setQuality", level = "info", skip_all, fields(sid = %socket.id))]
pub(super) async fn set_quality(
    socket: &SocketRef,
    state: &AppState,
    d: Option<Value>,
) -> Result<Value, ApiError> {
    let (p, _) = participant_of(state, socket)?;
    let (publisher, source, quality) = parse_quality(d)?;
    state
        .sfu()
        .set_quality(p, publisher, source, quality)
        .await?;
    Ok(json!({ "ok": true }))
}

/// `setQuality`'s payload, checked.
pub(crate) fn parse_quality(
    d: Option<Value>,
) -> Result<(ParticipantId, Source, Quality), ApiError> {
    let req: QualityReq = parse(d)?;
    let publisher: ParticipantId = req
        .participant_id
        .parse()
        .map_err(|_| ApiError::new("unknown_track", "no such participant"))?;
    let source: Source = req
        .source
        .parse()
        .map_err(|_| ApiError::bad("source must be camera, microphone or screen"))?;
    let quality: Quality = req
        .quality
        .parse()
        .map_err(|_| ApiError::bad("quality must be low, medium or high"))?;
    Ok((publisher, source, quality))
}
