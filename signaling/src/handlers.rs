//! Socket.IO event handlers for namespace `/study`. Each handler validates its payload,
//! calls the media core, and acks a result or `{error: {code, message}}`. A request
//! without an ack that fails gets the `error` event instead. Errors reach only the
//! offending socket and are logged with the socket id (never the token).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use room_state::{ParticipantRecord, TrackRecord};
use serde::Deserialize;
use serde_json::{Value, json};
use sfu::{Grants, MediaKind, ParticipantId, SfuError, TrackInfo};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, SocketRef, State, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts};
use socketioxide::socket::{DisconnectReason, Socket};
use tracing::{debug, info, warn};

use crate::auth::{AuthError, Claims, RoleClaim, unix_now};
use crate::delivery::{self, Audience};
use crate::departure::Departure;
use crate::events::{Kind, participant_fields};
use crate::limits::{self, Verdict};
use crate::{AppState, NAMESPACE, Session, resume};

mod leave;
mod media;

pub(crate) use leave::{announce_left, depart, depart_participant, remove_participant};
use media::{answer, ice, mute, publish, restart_ice, set_quality, track_view, unpublish};
pub(crate) use media::{
    parse_answer, parse_ice, parse_mute, parse_publish, parse_quality, parse_track_view,
    parse_unpublish,
};

/// The revision of docs/protocol.md this server speaks, sent as `protocol` in the `join`
/// and `resume` acks. Bumped (with a changelog entry in docs/protocol.md) whenever a client
/// written for the previous revision could misread or miss something; a client refuses a
/// number it does not know. 1 was the unversioned protocol (acks without `protocol`).
pub const PROTOCOL: u32 = 2;

/// A protocol error: `{code, message}`.
#[derive(Debug)]
pub struct ApiError {
    code: &'static str,
    message: String,
    /// Where to go instead (`moved`).
    url: Option<String>,
}

impl ApiError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            url: None,
        }
    }
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new("bad_request", message)
    }
    fn json(&self) -> Value {
        let mut e = json!({ "code": self.code, "message": self.message });
        if let Some(url) = &self.url {
            e["url"] = json!(url);
        }
        json!({ "error": e })
    }
}

/// The code alone: what a refused handshake's `connect_error` carries as its message.
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

impl From<SfuError> for ApiError {
    fn from(e: SfuError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

/// Whether the client asked for an acknowledgement.
pub struct HasAck(bool);

impl<A: Adapter> FromMessageParts<A> for HasAck {
    type Error = std::convert::Infallible;
    fn from_message_parts(
        _: &std::sync::Arc<Socket<A>>,
        _: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        Ok(HasAck(ack_id.is_some()))
    }
}

fn respond(
    socket: &SocketRef,
    event: &str,
    ack: AckSender,
    has_ack: HasAck,
    r: Result<Value, ApiError>,
) {
    match r {
        Ok(v) => {
            if let Err(e) = ack.send(&v) {
                warn!(sid = %socket.id, event, "ack not delivered: {e}");
            }
        }
        Err(e) => {
            // A flood is logged once per streak (`admit`), not per refused request.
            if e.code != "rate_limited" {
                warn!(sid = %socket.id, event, code = e.code, "request refused: {}", e.message);
            }
            if has_ack.0 {
                let _ = ack.send(&e.json());
            } else {
                let _ = socket.emit("error", &e.json()["error"]);
            }
        }
    }
}

/// Register the namespace with its auth middleware.
pub fn register(io: &SocketIo) {
    io.ns(
        NAMESPACE,
        (async |socket: SocketRef, State(state): State<AppState>| {
            // A client that connects to a draining node is sent on at once.
            if let Some(payload) = state.reconnect_payload() {
                let _ = socket.emit("reconnect", &payload);
            }
        })
        .with(authenticate),
    );
}

/// The handshake: the client address's connection limits first (before any token work),
/// then the token. A refusal is the client's `connect_error` with the code as message.
async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(state): State<AppState>,
) -> Result<(), ApiError> {
    let limits = state.limits();
    let addr = limits::client_ip(socket.req_parts(), limits.trusted_header.as_ref())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if let Err(refused) = limits.addresses.connect(addr, Instant::now()) {
        // Logged when an address starts being refused, not per refusal of a flood.
        if refused.first {
            warn!(sid = %socket.id, why = ?refused.why, "connection limit of one client address reached: refusing handshakes with too_many_connections");
        }
        debug!(sid = %socket.id, %addr, why = ?refused.why, "handshake refused: too many connections");
        return Err(ApiError::new(
            "too_many_connections",
            "too many connections from this address",
        ));
    }
    let verified = match auth.ok().as_ref().and_then(|v| v.get("token")) {
        None | Some(Value::Null) => state.keys().verify(""),
        Some(Value::String(s)) => state.keys().verify(s),
        Some(_) => Err(AuthError::Invalid("token is not a string".into())),
    };
    match verified {
        Ok(claims) => {
            debug!(sid = %socket.id, identity = %claims.sub, room = %claims.room, "authenticated");
            let room = claims.room.clone();
            state.sessions().by_sid.insert(
                socket.id,
                Session {
                    claims,
                    participant: None,
                    room,
                    addr,
                },
            );
            register_handlers(&socket);
            Ok(())
        }
        Err(e) => {
            limits.addresses.release(addr);
            warn!(sid = %socket.id, code = e.code(), "handshake refused: {e:?}");
            Err(e.into())
        }
    }
}

/// Called from the auth middleware, not from the connect handler: socketioxide sends the
/// CONNECT packet after the middleware but runs the connect handler in a spawned task, so
/// an event sent the moment the client is connected could arrive before handlers
/// registered there exist and would be dropped silently.
fn register_handlers(socket: &SocketRef) {
    /// A request event whose handler is `async fn(&SocketRef, &AppState, Option<Value>)
    /// -> Result<Value, ApiError>`, admitted by the rate limit and answered through
    /// `respond`. With `then after`, `after(&SocketRef, &AppState)` runs once a success has
    /// been acked (what must reach the client only after its ack: room events for a
    /// `join` or `resume`).
    macro_rules! request {
        ($socket:expr, $event:literal, $handler:path) => {
            request!($socket, $event, $handler, then |_: &SocketRef, _: &AppState| {})
        };
        ($socket:expr, $event:literal, $handler:path, then $after:expr) => {
            $socket.on(
                $event,
                async |socket: SocketRef,
                       State(s): State<AppState>,
                       ack: AckSender,
                       h: HasAck,
                       TryData(d): TryData<Value>| {
                    if let Err(e) = admit(&s, &socket) {
                        return respond(&socket, $event, ack, h, Err(e));
                    }
                    let r = $handler(&socket, &s, d.ok()).await;
                    let done = r.is_ok();
                    respond(&socket, $event, ack, h, r);
                    if done {
                        $after(&socket, &s);
                    }
                },
            )
        };
    }

    request!(socket, "join", join, then after_join_ack);
    request!(socket, "resume", resume::resume, then resume::after_resume_ack);
    request!(socket, "publish", publish);
    request!(socket, "answer", answer);
    request!(socket, "restartIce", restart_ice);
    request!(socket, "ice", ice);
    request!(socket, "mute", mute);
    request!(socket, "unpublish", unpublish);
    request!(socket, "setQuality", set_quality);
    request!(socket, "trackView", track_view);
    socket.on(
        "leave",
        async |socket: SocketRef, State(s): State<AppState>, ack: AckSender, h: HasAck| {
            let was_joined = participant_of(&s, &socket).is_ok();
            // Depart before the ack: a client that closes its socket on the ack must not
            // race the disconnect handler into keeping the participant for a resume.
            if was_joined {
                depart(&s, socket.id, Departure::Left).await;
            }
            respond(&socket, "leave", ack, h, Ok(json!({ "ok": true })));
            let _ = socket.disconnect();
        },
    );
    request!(socket, "focus", focus);
    request!(socket, "message", message);
    request!(socket, "history", history);
    request!(socket, "focusHistory", focus_history);
    socket.on_fallback(
        async |socket: SocketRef,
               State(s): State<AppState>,
               Event(ev): Event,
               ack: AckSender,
               h: HasAck| {
            if let Err(e) = admit(&s, &socket) {
                return respond(&socket, "unknown", ack, h, Err(e));
            }
            let shown: String = ev.chars().take(64).collect();
            respond(
                &socket,
                "unknown",
                ack,
                h,
                Err(ApiError::bad(format!("unknown event '{shown}'"))),
            );
        },
    );
    socket.on_disconnect(
        async |socket: SocketRef, State(s): State<AppState>, reason: DisconnectReason| {
            debug!(sid = %socket.id, ?reason, "disconnected");
            // Dropped without `leave`: kept for a resume; otherwise it leaves now.
            if !resume::detach(&s, socket.id, &reason) {
                depart(&s, socket.id, Departure::Disconnected).await;
            }
            if let Some(gone) = s.sessions().by_sid.remove(&socket.id) {
                s.limits().addresses.release(gone.addr);
            }
            s.limits().requests.forget(socket.id);
        },
    );
}

/// The client address's join rate (`limits/addresses.rs`), for `join` and `resume`.
pub(crate) fn admit_join_from_address(
    state: &AppState,
    socket: &SocketRef,
) -> Result<(), ApiError> {
    let addr = state.sessions().by_sid.get(&socket.id).map(|s| s.addr);
    let Some(addr) = addr else {
        return Ok(());
    };
    match state.limits().addresses.join(addr, Instant::now()) {
        Ok(()) => Ok(()),
        Err(refused) => {
            if refused.first {
                warn!(sid = %socket.id, "join limit of one client address reached: refusing joins with rate_limited");
            }
            Err(ApiError::new(
                "rate_limited",
                "too many joins from this address; slow down",
            ))
        }
    }
}

/// The connection's request rate limit (`limits/requests.rs`): `rate_limited` beyond it, logged once
/// per streak; a connection that keeps going is disconnected after the answer.
fn admit(state: &AppState, socket: &SocketRef) -> Result<(), ApiError> {
    match state.limits().requests.check(socket.id, Instant::now()) {
        Verdict::Admit => Ok(()),
        Verdict::Limited { first } => {
            if first {
                warn!(sid = %socket.id, "request rate limit reached: refusing with rate_limited");
            }
            Err(ApiError::new(
                "rate_limited",
                "too many requests; slow down",
            ))
        }
        Verdict::Cut => {
            warn!(sid = %socket.id, "request flood went on: disconnecting the connection");
            let s = socket.clone();
            tokio::spawn(async move {
                let _ = s.disconnect();
            });
            Err(ApiError::new(
                "rate_limited",
                "too many requests; disconnected",
            ))
        }
    }
}

fn participant_of(
    state: &AppState,
    socket: &SocketRef,
) -> Result<(ParticipantId, String), ApiError> {
    let sessions = state.sessions();
    let s = sessions
        .by_sid
        .get(&socket.id)
        .ok_or_else(|| ApiError::new("not_joined", "not joined"))?;
    let p = s
        .participant
        .ok_or_else(|| ApiError::new("not_joined", "join first"))?;
    Ok((p, s.room.clone()))
}

pub(crate) fn room_key(room: &str) -> String {
    format!("room:{room}")
}

/// The Socket.IO room of a room's participants allowed to chat (`message` pushes).
pub(crate) fn chat_key(room: &str) -> String {
    format!("chat:{room}")
}

/// The Socket.IO room of a room's proctors (events about proctors, focus events).
pub(crate) fn proctors_key(room: &str) -> String {
    format!("proctors:{room}")
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// JSON for a track.
pub fn track_json(t: &TrackInfo) -> Value {
    serde_json::to_value(track_record(t)).unwrap_or(Value::Null)
}

/// Store record for a track.
pub fn track_record(t: &TrackInfo) -> TrackRecord {
    TrackRecord {
        id: t.id.to_string(),
        participant_id: t.participant.to_string(),
        kind: kind_str(t.kind).into(),
        source: t.source.as_str().into(),
        muted: t.muted,
        codec: t.codec.clone(),
    }
}

/// `audio` / `video`.
pub fn kind_str(k: MediaKind) -> &'static str {
    match k {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

pub(crate) fn object(d: Option<Value>) -> Result<Value, ApiError> {
    match d {
        None | Some(Value::Null) => Ok(json!({})),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(_) => Err(ApiError::bad("payload must be an object")),
    }
}

pub(crate) fn parse<T: for<'de> Deserialize<'de>>(d: Option<Value>) -> Result<T, ApiError> {
    let v = object(d)?;
    serde_json::from_value(v).map_err(|e| ApiError::bad(format!("payload: {e}")))
}

/// The session of a socket that has not joined yet (`join` and `resume` start here).
pub(crate) fn unjoined_session<'a>(
    sessions: &'a crate::Sessions,
    socket: &SocketRef,
) -> Result<&'a Session, ApiError> {
    let s = sessions
        .by_sid
        .get(&socket.id)
        .ok_or_else(|| ApiError::new("not_joined", "no session"))?;
    if s.participant.is_some() {
        return Err(ApiError::new(
            "already_joined",
            "this socket already joined",
        ));
    }
    Ok(s)
}

#[tracing::instrument(name = "join", level = "info", skip_all, fields(sid = %socket.id))]
async fn join(socket: &SocketRef, state: &AppState, d: Option<Value>) -> Result<Value, ApiError> {
    debug!(sid = %socket.id, "join");
    // Server-side join time, for benchmarks (`STUDYROOM_LOG=info,join_timing=debug`).
    let started = std::time::Instant::now();
    object(d)?;
    let claims = {
        let sessions = state.sessions();
        let s = unjoined_session(&sessions, socket)?;
        s.claims.clone()
    };
    admit_join_from_address(state, socket)?;
    if claims.exp < unix_now() {
        return Err(ApiError::new("token_expired", "token expired"));
    }
    if state.draining() {
        return Err(ApiError::new(
            "draining",
            "this node is shutting down; connect elsewhere",
        ));
    }
    let room = claims.room.clone();
    // Several nodes: the room lives on one of them; elsewhere the client is sent there.
    if let Some(cluster) = state.cluster().cloned()
        && let crate::cluster::Placement::Moved(url) = cluster.place(state, &room).await
    {
        info!(room = %room, %url, "room hosted by another node: client sent there");
        return Err(ApiError {
            url: Some(url),
            ..ApiError::new(
                "moved",
                "this room is hosted by another node; connect to `url`",
            )
        });
    }
    // The same identity joining again replaces its older session, so many times a minute.
    let (old, present) = {
        let store = state.store();
        (
            store.find_identity(&room, &claims.sub),
            store.participant_count(),
        )
    };
    if old.is_some()
        && !state
            .limits()
            .identities
            .replace(&room, &claims.sub, Instant::now())
    {
        warn!(identity = %claims.sub, room = %room, "identity re-joins too often: refusing the replacement with rate_limited");
        return Err(ApiError::new(
            "rate_limited",
            "this identity replaced its session too often; try again in a minute",
        ));
    }
    // The node's participant cap; the session this join replaces frees its place.
    let Some(_slot) = state
        .limits()
        .node
        .admit(present - usize::from(old.is_some()))
    else {
        warn!(room = %room, max = state.limits().node.max(), "node full: refusing join with server_full");
        return Err(ApiError::new(
            "server_full",
            "this node has no room for more participants; connect elsewhere",
        ));
    };
    if let Some(old) = old
        && let Ok(pid) = old.id.parse::<ParticipantId>()
    {
        debug!(identity = %claims.sub, "identity re-joined: replacing the older session");
        if let Some(sid) = depart_participant(state, pid, Departure::Replaced).await
            && let Some(op) = state.io().of(NAMESPACE)
            && let Some(s) = op.get_socket(sid)
        {
            let _ = s.disconnect();
        }
    }
    let id = ParticipantId(state.next_participant());
    let proctor = claims.role == RoleClaim::Proctor;
    let grants = Grants {
        publish: claims.can_publish(),
        subscribe: claims.can_subscribe(),
        proctor,
    };
    let impair = if state.allow_impairment() {
        claims.impair_loss.unwrap_or(0.0)
    } else {
        0.0
    };
    // Posted to the room's shard, not awaited (`sfu::Sfu::join`): the ack does not wait
    // for a shard thread; later calls for this participant queue behind it there.
    state.sessions().joining.insert(id);
    if let Err(e) = state.sfu().join(id, &room, grants, impair) {
        state.sessions().joining.remove(&id);
        return Err(e.into());
    }
    let record = ParticipantRecord {
        id: id.to_string(),
        identity: claims.sub.clone(),
        name: claims.name.clone(),
        role: claims.role.as_str().into(),
        node: state.node_id().into(),
        joined_at: now_ms(),
        tracks: vec![],
    };
    // Join the broadcast room *before* reading who is already there: a participant joining
    // at the same moment is then either in our list or announced to us (or both; clients
    // de-duplicate by id), never neither.
    socket.join(room_key(&room));
    if proctor {
        socket.join(proctors_key(&room));
    }
    if claims.can_chat() {
        socket.join(chat_key(&room));
    }
    load_chat_history(state, &room).await;
    let others = {
        let mut store = state.store();
        let mut others = store.participants(&room);
        store.add_participant(&room, record.clone());
        // Lifecycle events under the store lock (see `pump::change_track`); a join undone
        // below is announced as left by `announce_left`.
        let lifecycle = &state.lifecycle();
        if others.is_empty() {
            lifecycle.emit(&room, Kind::RoomStarted, record.joined_at, json!({}));
        }
        lifecycle.emit(
            &room,
            Kind::ParticipantJoined,
            record.joined_at,
            json!({ "participant": participant_fields(&record) }),
        );
        // Proctors are invisible to learners.
        if !proctor {
            others.retain(|p| p.role != "proctor");
        }
        others
    };
    let resume_token = {
        let mut sessions = state.sessions();
        sessions.joining.remove(&id);
        match sessions.by_sid.get_mut(&socket.id) {
            Some(s) => {
                s.participant = Some(id);
                Some(sessions.parked.issue_token(id))
            }
            None => None,
        }
    };
    let Some(resume_token) = resume_token else {
        // Disconnected while joining: undo.
        socket.leave(room_key(&room));
        socket.leave(proctors_key(&room));
        socket.leave(chat_key(&room));
        let _ = state.sfu().leave(id).await;
        announce_left(state, id, &room, Departure::Disconnected).await;
        return Err(ApiError::new("not_joined", "disconnected during join"));
    };
    // Only proctors hear about a proctor.
    let audience = if proctor {
        Audience::Proctors(&room)
    } else {
        Audience::Room(&room)
    };
    let joined = serde_json::to_value(&record).unwrap_or_default();
    delivery::to_room(state, audience, "participantJoined", &joined, Some(socket));
    info!(participant = %id, room = %room, role = claims.role.as_str(), "participant joined");
    let mut ack = session_ack(state, &claims, &record, others);
    ack["resumeToken"] = json!(resume_token);
    debug!(target: "join_timing", us = started.elapsed().as_micros() as u64, "join handled");
    Ok(ack)
}

/// What `join` and `resume` acknowledge: the protocol revision, the participant, the
/// others it may see, ICE servers with fresh credentials, the live nodes (several nodes), the focus history
/// (proctors), and how long a dropped socket may be resumed.
pub(crate) fn session_ack(
    state: &AppState,
    claims: &Claims,
    record: &ParticipantRecord,
    others: Vec<ParticipantRecord>,
) -> Value {
    let mut ack = json!({
        "protocol": PROTOCOL,
        "participant": record,
        "participants": others,
        "iceServers": ice_servers(state, &claims.sub),
        "resumeWindowMs": resume::window_ms(state),
    });
    if let Some(c) = &state.cluster() {
        ack["nodes"] = json!(c.live_urls());
    }
    ack["chat"] = json!(claims.can_chat());
    if claims.can_chat() {
        ack["chatHistory"] = Value::Array(chat_history(state, &claims.room));
    }
    if claims.role == RoleClaim::Proctor {
        ack["focusHistory"] =
            serde_json::to_value(state.focus().history(&claims.room, None)).unwrap_or_default();
    }
    ack
}

/// After the join ack is on the wire: route subscriber offers to this socket, sending
/// one that was produced while joining.
fn after_join_ack(socket: &SocketRef, state: &AppState) {
    let mut sessions = state.sessions();
    let Some(p) = sessions.by_sid.get(&socket.id).and_then(|s| s.participant) else {
        return;
    };
    sessions.by_participant.insert(p, socket.id);
    if let Some(offer) = sessions.early_offers.remove(&p) {
        let _ = socket.emit("offer", &offer);
    }
}

fn ice_servers(state: &AppState, identity: &str) -> Value {
    let mut servers = Vec::new();
    // The embedded relay: fresh REST credentials, UDP/TCP/TLS URLs at the node's IP.
    if let Some(t) = &state.turn() {
        let c = turn::rest_credential(t.secret.as_bytes(), identity, unix_now() + 24 * 3600);
        servers.push(json!({ "urls": t.urls, "username": c.username, "credential": c.password }));
    }
    if !state.turn_urls().is_empty() {
        servers.push(match &state.turn_secret() {
            Some(secret) => {
                let c = turn::rest_credential(secret.as_bytes(), identity, unix_now() + 24 * 3600);
                json!({ "urls": state.turn_urls(), "username": c.username, "credential": c.password })
            }
            None => json!({ "urls": state.turn_urls() }),
        });
    }
    Value::Array(servers)
}

#[derive(Deserialize)]
struct FocusReq {
    state: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    at: Option<f64>,
}

/// `focus`'s payload, checked: lost (true) or regained, the reason, the client's time.
pub(crate) fn parse_focus(d: Option<Value>) -> Result<(bool, String, Option<u64>), ApiError> {
    let req: FocusReq = parse(d)?;
    let lost = match req.state.as_str() {
        "lost" => true,
        "regained" => false,
        _ => return Err(ApiError::bad("state must be lost or regained")),
    };
    if req.reason.len() > 64
        || !req
            .reason
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::bad(
            "reason: up to 64 characters of [A-Za-z0-9_-]",
        ));
    }
    let client_at = req
        .at
        .filter(|t| t.is_finite() && *t >= 0.0 && *t < 1e15)
        .map(|t| t as u64);
    Ok((lost, req.reason, client_at))
}

/// A learner's page lost or regained focus.
#[tracing::instrument(name = "focus", level = "info", skip_all, fields(sid = %socket.id))]
async fn focus(socket: &SocketRef, state: &AppState, d: Option<Value>) -> Result<Value, ApiError> {
    let (p, room) = participant_of(state, socket)?;
    let claims = session_claims(state, socket)?;
    if claims.role != RoleClaim::Learner {
        return Err(ApiError::new("forbidden", "only learners report focus"));
    }
    let (lost, reason, client_at) = parse_focus(d)?;
    let ev = state.focus().report(
        &room,
        &p.to_string(),
        &claims.sub,
        &claims.name,
        lost,
        &reason,
        client_at,
        now_ms(),
        std::time::Instant::now(),
    );
    let ev = match ev {
        Ok(ev) => ev,
        Err(crate::focus::Refused::Duplicate) => {
            return Ok(json!({ "ok": true, "duplicate": true }));
        }
        Err(crate::focus::Refused::RateLimited) => {
            return Err(ApiError::new(
                "rate_limited",
                "too many focus events; slow down",
            ));
        }
    };
    info!(participant = %p, room = %room, state = ev.state, reason = %ev.reason, lost_ms = ?ev.lost_ms, "focus");
    if let Ok(ev) = serde_json::to_value(&ev) {
        delivery::to_room(state, Audience::Proctors(&room), "focus", &ev, None);
    }
    if state.nats_url().is_some() {
        state.focus().enqueue(ev.clone());
    }
    // On disk before the ack: an acknowledged focus event reaches the audit log.
    let audit_id = state
        .webhook()
        .map(|w| w.push(&room, ev.at, crate::focus::published_json(&ev)));
    let mut ack = json!({ "ok": true, "event": ev });
    if let Some(id) = audit_id {
        ack["auditId"] = id.into();
    }
    Ok(ack)
}

/// The room's chat history as the join ack and `history` carry it, oldest first.
fn chat_history(state: &AppState, room: &str) -> Vec<Value> {
    state
        .store()
        .chat_history(room)
        .iter()
        .filter_map(|m| serde_json::from_str(m).ok())
        .collect()
}

/// Several nodes: a room this node has no chat history for (it starts hosting it, maybe
/// taking it over from a node that died) reads the room's history from Redis once, within
/// the store's timeout; without an answer it starts with none.
async fn load_chat_history(state: &AppState, room: &str) {
    let Some(cluster) = state.cluster().cloned() else {
        return;
    };
    {
        let store = state.store();
        if store.has_chat(room) || !store.participants(room).is_empty() {
            return;
        }
    }
    match room_state::RoomStore::chat_history(cluster.store(), room).await {
        Ok(h) if !h.is_empty() => {
            let mut store = state.store();
            if !store.has_chat(room) {
                store.set_chat(room, h, room_state::CHAT_HISTORY_MAX);
            }
        }
        Ok(_) => {}
        Err(e) => warn!(room = %room, "chat history not read from Redis: {e}"),
    }
}

/// A chat message to the room.
#[tracing::instrument(name = "message", level = "info", skip_all, fields(sid = %socket.id))]
async fn message(
    socket: &SocketRef,
    state: &AppState,
    d: Option<Value>,
) -> Result<Value, ApiError> {
    let r = send_message(socket, state, d);
    if let Err(e) = &r {
        state.chat().refuse();
        info!(code = e.code, "chat message refused: {}", e.message);
    }
    r
}

fn send_message(socket: &SocketRef, state: &AppState, d: Option<Value>) -> Result<Value, ApiError> {
    let (p, room) = participant_of(state, socket)?;
    let claims = session_claims(state, socket)?;
    if !claims.can_chat() {
        return Err(ApiError::new(
            "chat_disabled",
            "chat is turned off for this participant's room (token grant)",
        ));
    }
    let payload = object(d)?;
    let text = crate::chat::clean_text(payload.get("text")).map_err(|r| match r {
        crate::chat::Refused::NotText => ApiError::bad("text must be a string"),
        crate::chat::Refused::Empty => ApiError::bad("text is empty"),
        crate::chat::Refused::TooLong(n) => ApiError::new(
            "message_too_long",
            format!(
                "text has {n} characters; at most {}",
                crate::chat::TEXT_MAX_CHARS
            ),
        ),
        crate::chat::Refused::RateLimited => ApiError::new("rate_limited", "slow down"),
    })?;
    let pid = p.to_string();
    state
        .chat()
        .admit(&room, &pid, std::time::Instant::now())
        .map_err(|_| ApiError::new("rate_limited", "too many chat messages; slow down"))?;
    let from = json!({
        "id": pid,
        "identity": claims.sub,
        "name": claims.name,
        "role": claims.role.as_str(),
    });
    let at = now_ms();
    // Numbered, stored and stamped for NATS under the store lock: history order and the
    // event stream's order are both id order (stamped after the lock, two concurrent
    // messages reached JetStream swapped: the chat e2e test caught it).
    let (msg, stored) = {
        let mut store = state.store();
        let msg = state.chat().message(&room, from, text, at);
        let stored = msg.to_string();
        store.push_chat(&room, stored.clone(), room_state::CHAT_HISTORY_MAX);
        state
            .lifecycle()
            .emit(&room, Kind::Message, at, json!({ "message": msg }));
        (msg, stored)
    };
    delivery::to_room(state, Audience::Chat(&room), "message", &msg, Some(socket));
    if let Some(cluster) = state.cluster().cloned() {
        let room = room.clone();
        tokio::spawn(async move {
            if let Err(e) = room_state::RoomStore::push_chat(
                cluster.store(),
                &room,
                &stored,
                room_state::CHAT_HISTORY_MAX,
            )
            .await
            {
                warn!(room = %room, "chat message not mirrored to Redis: {e}");
            }
        });
    }
    debug!(participant = %p, room = %room, "chat message");
    Ok(json!({ "ok": true, "message": msg }))
}

/// The room's chat history (the join ack has it too).
async fn history(
    socket: &SocketRef,
    state: &AppState,
    d: Option<Value>,
) -> Result<Value, ApiError> {
    object(d)?;
    let (_, room) = participant_of(state, socket)?;
    let claims = session_claims(state, socket)?;
    if !claims.can_chat() {
        return Err(ApiError::new(
            "chat_disabled",
            "chat is turned off for this participant's room (token grant)",
        ));
    }
    Ok(json!({ "messages": chat_history(state, &room) }))
}

/// `focusHistory`'s payload, checked: whose history (all when `None`).
pub(crate) fn parse_focus_history(d: Option<Value>) -> Result<Option<String>, ApiError> {
    let req: FocusHistoryReq = parse(d)?;
    Ok(req.participant_id)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FocusHistoryReq {
    #[serde(default)]
    participant_id: Option<String>,
}

/// A proctor asks for the room's focus history. (Async only to be registered like the
/// other requests: it reads memory and awaits nothing.)
async fn focus_history(
    socket: &SocketRef,
    state: &AppState,
    d: Option<Value>,
) -> Result<Value, ApiError> {
    let who = parse_focus_history(d)?;
    let (_, room) = participant_of(state, socket)?;
    let claims = session_claims(state, socket)?;
    if claims.role != RoleClaim::Proctor {
        return Err(ApiError::new("forbidden", "focus history is for proctors"));
    }
    Ok(json!({ "events": state.focus().history(&room, who.as_deref()) }))
}

fn session_claims(state: &AppState, socket: &SocketRef) -> Result<crate::auth::Claims, ApiError> {
    let sessions = state.sessions();
    sessions
        .by_sid
        .get(&socket.id)
        .map(|s| s.claims.clone())
        .ok_or_else(|| ApiError::new("not_joined", "no session"))
}
