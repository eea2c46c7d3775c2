//! Media requests of a joined participant: publish (offer/answer), the subscriber's
//! answers, ICE (trickle and restart), mute, unpublish, simulcast quality, how remote
//! videos are displayed (`trackView`, adaptive stream). Each checks its payload and hands
//! it to the SFU.

use serde::Deserialize;
use serde_json::{Value, json};
use sfu::core::MAX_SDP_BYTES;
use sfu::{ParticipantId, Quality, Role, Source, TrackId, TrackRequest, TrackView};
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

/// Most views one `trackView` may carry (a proctor's grid of a full room fits).
pub(crate) const MAX_VIEWS: usize = 128;
/// Largest width or height a view may report, in device pixels (an 8K screen is 7680).
pub(crate) const MAX_VIEW_PIXELS: u32 = 16_384;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrackViewReq {
    views: Vec<ViewReq>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ViewReq {
    track_id: String,
    visible: bool,
    width: u32,
    height: u32,
}

/// How this subscriber displays remote videos (adaptive stream): the SFU sends each at
/// most the layer its element needs, and nothing of what nobody sees.
#[tracing::instrument(name = "trackView", level = "debug", skip_all, fields(sid = %socket.id))]
pub(super) async fn track_view(
    socket: &SocketRef,
    state: &AppState,
    d: Option<Value>,
) -> Result<Value, ApiError> {
    let (p, _) = participant_of(state, socket)?;
    let views = parse_track_view(d)?;
    let unknown = state.sfu().set_views(p, views).await?;
    Ok(json!({
        "ok": true,
        "unknown": unknown.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
    }))
}

/// `trackView`'s payload, checked: 1..=[`MAX_VIEWS`] views, each a track id, whether it
/// is visible and its size (0..=[`MAX_VIEW_PIXELS`]), no track twice.
pub(crate) fn parse_track_view(d: Option<Value>) -> Result<Vec<(TrackId, TrackView)>, ApiError> {
    let req: TrackViewReq = parse(d)?;
    if req.views.is_empty() || req.views.len() > MAX_VIEWS {
        return Err(ApiError::bad(format!(
            "views must hold 1 to {MAX_VIEWS} entries (got {})",
            req.views.len()
        )));
    }
    let mut out: Vec<(TrackId, TrackView)> = Vec::with_capacity(req.views.len());
    for (i, v) in req.views.into_iter().enumerate() {
        let track: TrackId = v
            .track_id
            .parse()
            .map_err(|_| ApiError::bad(format!("views[{i}].trackId is not a track id")))?;
        if v.width > MAX_VIEW_PIXELS || v.height > MAX_VIEW_PIXELS {
            return Err(ApiError::bad(format!(
                "views[{i}]: width and height must be 0 to {MAX_VIEW_PIXELS}"
            )));
        }
        if out.iter().any(|(t, _)| *t == track) {
            return Err(ApiError::bad(format!(
                "views[{i}]: track {track} is listed twice"
            )));
        }
        out.push((
            track,
            TrackView {
                visible: v.visible,
                width: v.width,
                height: v.height,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<Vec<(TrackId, TrackView)>, ApiError>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) => format!("{}: {}", e.code, e.message),
        }
    }

    #[test]
    fn track_view_accepts_a_batch_of_views() {
        let v = parse_track_view(Some(json!({"views": [
            {"trackId": "TR1", "visible": true, "width": 320, "height": 180},
            {"trackId": "TR2", "visible": false, "width": 0, "height": 0},
        ]})))
        .expect("valid");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0.to_string(), "TR1");
        assert_eq!(
            v[0].1,
            TrackView {
                visible: true,
                width: 320,
                height: 180
            }
        );
        assert!(!v[1].1.visible);
    }

    #[test]
    fn track_view_refuses_bad_input_with_bad_request() {
        let view = |id: Value, visible: Value, w: Value, h: Value| json!({"views": [{"trackId": id, "visible": visible, "width": w, "height": h}]});
        let bad = [
            None,
            Some(json!([1])),
            Some(json!({})),
            Some(json!({"views": []})),
            Some(json!({"views": "TR1"})),
            Some(view(json!("TR1"), json!("yes"), json!(1), json!(1))),
            Some(view(json!("TR1"), json!(true), json!(-1), json!(1))),
            Some(view(json!("TR1"), json!(true), json!(1.5), json!(1))),
            Some(view(json!("TR1"), json!(true), json!(16_385), json!(1))),
            Some(view(json!("TR1"), json!(true), json!(1), json!(1e12))),
            Some(view(json!("nope"), json!(true), json!(1), json!(1))),
            Some(view(json!(7), json!(true), json!(1), json!(1))),
            Some(json!({"views": [{"trackId": "TR1", "visible": true, "width": 1}]})),
            Some(
                json!({"views": [{"trackId": "TR1", "visible": true, "width": 1, "height": 1, "x": 1}]}),
            ),
            Some(json!({"views": [
                {"trackId": "TR1", "visible": true, "width": 1, "height": 1},
                {"trackId": "TR1", "visible": false, "width": 1, "height": 1},
            ]})),
        ];
        for d in bad {
            let r = code(parse_track_view(d.clone()));
            assert!(r.starts_with("bad_request"), "{d:?} -> {r}");
        }
        let many: Vec<Value> = (1..=MAX_VIEWS + 1)
            .map(|i| json!({"trackId": format!("TR{i}"), "visible": true, "width": 1, "height": 1}))
            .collect();
        let r = code(parse_track_view(Some(json!({ "views": many }))));
        assert!(
            r.starts_with("bad_request") && r.contains("1 to 128"),
            "{r}"
        );
    }
}
