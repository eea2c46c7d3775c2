//! Platform commands by NATS request/reply (`docs/events.md`): list rooms, close a room,
//! remove a participant, mute a track.
//!
//! Every node subscribes to `studyroom.cmd.<command>` in one queue group, so each request
//! is answered once, by whichever node gets it. A command about a room this node does not
//! host is forwarded to the hosting node's own subject `studyroom.node.<node>.cmd.<command>`
//! (found through [`AppState::host_of`]) and its reply relayed. Replies are JSON:
//! `{"ok": true, ...}` or `{"ok": false, "error": {"code", "message"}}`; a bad request never
//! goes unanswered and never reaches the room.

use std::time::Duration;

use futures_util::StreamExt;
use room_state::RoomStore;
use serde::Deserialize;
use serde_json::{Value, json};
use sfu::{ParticipantId, TrackId};
use socketioxide::socket::Sid;
use tracing::{info, warn};

use crate::departure::Departure;
use crate::outbox::subject_token;
use crate::{AppState, NAMESPACE, handlers};

/// Subject prefix of commands.
pub const PREFIX: &str = "studyroom.cmd.";
/// Queue group of all nodes.
pub const QUEUE_GROUP: &str = "studyroom";
/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// How long a forwarded command may take on the hosting node.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Commands answered, by outcome (exported as `studyroom_nats_commands_total`).
#[derive(Default)]
pub struct Counters {
    /// Answered with `ok: true`.
    pub ok: std::sync::atomic::AtomicU64,
    /// Answered with an error.
    pub failed: std::sync::atomic::AtomicU64,
}

/// A command's failure: a code from the documented list and a message.
#[derive(Debug, PartialEq, Eq)]
pub struct CmdError {
    /// `bad_request`, `unknown_command`, `room_not_found`, `participant_not_found`,
    /// `track_not_found`, `node_unreachable`, `internal`.
    pub code: &'static str,
    /// Human-readable.
    pub message: String,
    /// The node that answered, when not this one (a forwarded command).
    pub node: Option<String>,
}

fn err(code: &'static str, message: impl Into<String>) -> CmdError {
    CmdError {
        code,
        message: message.into(),
        node: None,
    }
}

/// The reply JSON for a result. `node` is the node that acted (the room's host); `via`
/// is added when this node (`this`) forwarded the command there.
pub fn reply_json(r: Result<Value, CmdError>, this: &str) -> Value {
    let mut v = match r {
        Ok(Value::Object(mut m)) => {
            m.insert("ok".into(), Value::Bool(true));
            Value::Object(m)
        }
        Ok(v) => json!({ "ok": true, "result": v }),
        Err(e) => json!({
            "ok": false,
            "error": { "code": e.code, "message": e.message },
            "node": e.node,
        }),
    };
    if v["node"].is_null() {
        v["node"] = json!(this);
    } else if v["node"] != json!(this) {
        v["via"] = json!(this);
    }
    v
}

/// Serve commands until the connection closes.
pub async fn serve(state: AppState, client: async_nats::Client) {
    let shared = client
        .queue_subscribe(format!("{PREFIX}>"), QUEUE_GROUP.into())
        .await;
    let own = client
        .subscribe(format!(
            "studyroom.node.{}.cmd.>",
            subject_token(state.node_id())
        ))
        .await;
    let (mut shared, mut own) = match (shared, own) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            warn!("NATS commands: cannot subscribe: {e}");
            return;
        }
    };
    info!(node = %state.node_id(), "NATS commands: listening on {PREFIX}>");
    loop {
        let (msg, forwarded) = tokio::select! {
            m = shared.next() => (m, false),
            m = own.next() => (m, true),
        };
        let Some(msg) = msg else { break };
        let (state, client) = (state.clone(), client.clone());
        tokio::spawn(async move {
            let prefix = if forwarded {
                format!("studyroom.node.{}.cmd.", subject_token(state.node_id()))
            } else {
                PREFIX.to_owned()
            };
            let command = msg.subject.as_str().strip_prefix(&prefix).unwrap_or("");
            let r = handle(&state, &client, command, &msg.payload, forwarded).await;
            let counters = &state.commands();
            match &r {
                Ok(_) => {
                    counters
                        .ok
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    info!(command, "NATS command done");
                }
                Err(e) => {
                    counters
                        .failed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!(
                        command,
                        code = e.code,
                        "NATS command refused: {}",
                        e.message
                    );
                }
            }
            if let Some(reply) = msg.reply {
                let body = serde_json::to_vec(&reply_json(r, state.node_id())).unwrap_or_default();
                if let Err(e) = client.publish(reply, body.into()).await {
                    warn!(command, "NATS command: reply not sent: {e}");
                }
            }
        });
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomReq {
    room: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveReq {
    room: String,
    /// Participant id (`P..`) or identity.
    participant: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteReq {
    room: String,
    /// Track id (`TR..`); or `participant` + `source`.
    #[serde(default)]
    track: Option<String>,
    #[serde(default)]
    participant: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default = "yes")]
    muted: bool,
}

fn yes() -> bool {
    true
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, CmdError> {
    if body.len() > MAX_BODY {
        return Err(err("bad_request", "request body too large"));
    }
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| err("bad_request", format!("body: {e}")))
}

fn check_room(room: &str) -> Result<(), CmdError> {
    if crate::auth::valid_room(room) {
        Ok(())
    } else {
        Err(err(
            "bad_request",
            "room: 1-64 characters of [A-Za-z0-9_.-]",
        ))
    }
}

/// A command's subject suffix and body, parsed and checked as [`handle`] does before it
/// touches any state (pure; fuzzed by `fuzz/`).
pub(crate) fn parse_checked(command: &str, body: &[u8]) -> Result<(), CmdError> {
    let room = match Command::parse(command, body)? {
        Command::ListRooms => return Ok(()),
        Command::CloseRoom(r) => r.room,
        Command::RemoveParticipant(r) => r.room,
        Command::MuteTrack(r) => r.room,
    };
    check_room(&room)
}

async fn handle(
    state: &AppState,
    client: &async_nats::Client,
    command: &str,
    body: &[u8],
    forwarded: bool,
) -> Result<Value, CmdError> {
    let cmd = Command::parse(command, body)?;
    let room = match &cmd {
        Command::ListRooms => return list_rooms(state).await,
        Command::CloseRoom(r) => r.room.clone(),
        Command::RemoveParticipant(r) => r.room.clone(),
        Command::MuteTrack(r) => r.room.clone(),
    };
    check_room(&room)?;
    if !forwarded && !hosts_room(state, &room) {
        match state.host_of(&room).await {
            Some(node) if node != state.node_id() => {
                return forward(client, &node, command, body).await;
            }
            _ => return Err(err("room_not_found", format!("no room '{room}'"))),
        }
    }
    match cmd {
        Command::ListRooms => list_rooms(state).await,
        Command::CloseRoom(req) => {
            close_room(state, &req.room, req.reason.as_deref().unwrap_or("closed")).await
        }
        Command::RemoveParticipant(req) => {
            remove_participant(
                state,
                &req.room,
                &req.participant,
                req.reason.as_deref().unwrap_or("removed"),
            )
            .await
        }
        Command::MuteTrack(req) => mute_track(state, req).await,
    }
}

/// A platform command, parsed once from its subject suffix and body; every handler is an
/// arm of an exhaustive match, so a command added here cannot fall through to another's
/// action.
enum Command {
    ListRooms,
    CloseRoom(RoomReq),
    RemoveParticipant(RemoveReq),
    MuteTrack(MuteReq),
}

impl Command {
    fn parse(command: &str, body: &[u8]) -> Result<Command, CmdError> {
        Ok(match command {
            "rooms.list" => {
                parse::<serde::de::IgnoredAny>(body)?;
                Command::ListRooms
            }
            "room.close" => Command::CloseRoom(parse(body)?),
            "participant.remove" => Command::RemoveParticipant(parse(body)?),
            "track.mute" => Command::MuteTrack(parse(body)?),
            _ => {
                let shown: String = command.chars().take(64).collect();
                return Err(err(
                    "unknown_command",
                    format!(
                        "unknown command '{shown}'; known: rooms.list, room.close, participant.remove, track.mute"
                    ),
                ));
            }
        })
    }
}

async fn forward(
    client: &async_nats::Client,
    node: &str,
    command: &str,
    body: &[u8],
) -> Result<Value, CmdError> {
    let subject = format!("studyroom.node.{}.cmd.{command}", subject_token(node));
    let r = tokio::time::timeout(
        FORWARD_TIMEOUT,
        client.request(subject, body.to_vec().into()),
    )
    .await;
    let msg = match r {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return Err(err("node_unreachable", format!("node {node}: {e}"))),
        Err(_) => return Err(err("node_unreachable", format!("node {node}: timed out"))),
    };
    let v: Value = serde_json::from_slice(&msg.payload)
        .map_err(|e| err("internal", format!("node {node} replied: {e}")))?;
    if v["ok"] == Value::Bool(true) {
        Ok(v)
    } else {
        let code = match v["error"]["code"].as_str().unwrap_or("internal") {
            "room_not_found" => "room_not_found",
            "participant_not_found" => "participant_not_found",
            "track_not_found" => "track_not_found",
            "bad_request" => "bad_request",
            _ => "internal",
        };
        Err(CmdError {
            code,
            message: v["error"]["message"].as_str().unwrap_or("").to_owned(),
            node: Some(node.to_owned()),
        })
    }
}

/// Whether participants of `room` are connected to this node.
fn hosts_room(state: &AppState, room: &str) -> bool {
    let sessions = state.sessions();
    sessions
        .by_sid
        .values()
        .any(|s| s.room == room && s.participant.is_some())
        || sessions
            .parked
            .detached_in(room, crate::resume::Hears::Room)
            .next()
            .is_some()
}

/// Every room of the deployment: from Redis when this node is part of one (each room with
/// its host `node`), else this node's own.
async fn list_rooms(state: &AppState) -> Result<Value, CmdError> {
    if let Some(c) = state.cluster() {
        let store = c.store();
        let unreachable = |e| err("internal", format!("room state unreachable: {e}"));
        let names = store.rooms().await.map_err(unreachable)?;
        let mut rooms = Vec::with_capacity(names.len());
        for r in names {
            let participants = store.participants(&r).await.map_err(unreachable)?;
            let node = store.room_host(&r).await.ok().flatten();
            rooms.push(json!({ "room": r, "node": node, "participants": participants }));
        }
        return Ok(json!({ "rooms": rooms }));
    }
    let store = state.store();
    let mut names = store.rooms();
    names.sort();
    let rooms: Vec<Value> = names
        .iter()
        .map(|r| json!({ "room": r, "node": state.node_id(), "participants": store.participants(r) }))
        .collect();
    Ok(json!({ "rooms": rooms }))
}

/// Participants of a room on this node: (participant, identity), those waiting for a
/// resume (no socket) included.
fn members(state: &AppState, room: &str) -> Vec<(ParticipantId, String)> {
    let sessions = state.sessions();
    let mut all: Vec<(ParticipantId, String)> = sessions
        .by_sid
        .values()
        .filter(|s| s.room == room)
        .filter_map(|s| s.participant.map(|p| (p, s.claims.sub.clone())))
        .collect();
    for (p, identity) in sessions
        .parked
        .detached_in(room, crate::resume::Hears::Room)
    {
        if !all.iter().any(|(q, _)| *q == p) {
            all.push((p, identity.to_owned()));
        }
    }
    all
}

/// Tell a client why it is being sent away, take it out of the room, disconnect it (a
/// participant waiting for a resume is just removed: it has no socket to tell).
async fn send_away(
    state: &AppState,
    p: ParticipantId,
    event: &str,
    payload: &Value,
    why: Departure,
) {
    let sid: Option<Sid> = {
        let sessions = state.sessions();
        sessions.by_participant.get(&p).copied()
    };
    let socket = sid.and_then(|sid| state.io().of(NAMESPACE)?.get_socket(sid));
    if let Some(s) = &socket {
        let _ = s.emit(event, payload);
    }
    let bound = handlers::depart_participant(state, p, why).await;
    let socket = socket.or_else(|| bound.and_then(|sid| state.io().of(NAMESPACE)?.get_socket(sid)));
    if let Some(s) = socket {
        let _ = s.disconnect();
    }
}

async fn close_room(state: &AppState, room: &str, reason: &str) -> Result<Value, CmdError> {
    let who = members(state, room);
    if who.is_empty() {
        return Err(err("room_not_found", format!("no room '{room}'")));
    }
    info!(
        room,
        reason,
        participants = who.len(),
        "closing room (NATS command)"
    );
    let payload = json!({ "room": room, "reason": reason });
    for (p, _) in &who {
        send_away(state, *p, "roomClosed", &payload, Departure::RoomClosed).await;
    }
    Ok(json!({ "room": room, "removed": who.len() }))
}

async fn remove_participant(
    state: &AppState,
    room: &str,
    who: &str,
    reason: &str,
) -> Result<Value, CmdError> {
    let target = members(state, room)
        .into_iter()
        .find(|(p, identity)| p.to_string() == who || identity == who);
    let Some((p, identity)) = target else {
        return Err(err(
            "participant_not_found",
            format!("no participant '{who}' in room '{room}'"),
        ));
    };
    info!(room, participant = %p, reason, "removing participant (NATS command)");
    tracing::debug!(participant = %p, identity = %identity, "removed identity");
    send_away(
        state,
        p,
        "removed",
        &json!({ "room": room, "reason": reason }),
        Departure::Removed,
    )
    .await;
    Ok(json!({ "room": room, "participant": p.to_string(), "identity": identity }))
}

async fn mute_track(state: &AppState, req: MuteReq) -> Result<Value, CmdError> {
    let participants = state.store().participants(&req.room);
    let found = match (&req.track, &req.participant, &req.source) {
        (Some(t), None, None) => participants
            .iter()
            .flat_map(|p| p.tracks.iter())
            .find(|x| &x.id == t)
            .cloned(),
        (None, Some(who), Some(source)) => participants
            .iter()
            .filter(|p| &p.id == who || &p.identity == who)
            .flat_map(|p| p.tracks.iter())
            .find(|x| &x.source == source)
            .cloned(),
        _ => {
            return Err(err(
                "bad_request",
                "give either `track`, or `participant` and `source`",
            ));
        }
    };
    let Some(track) = found else {
        return Err(err("track_not_found", "no such track in the room"));
    };
    let (Ok(p), Ok(t)) = (
        track.participant_id.parse::<ParticipantId>(),
        track.id.parse::<TrackId>(),
    ) else {
        return Err(err("internal", "stored track has a malformed id"));
    };
    state
        .sfu()
        .mute(p, t, req.muted)
        .await
        .map_err(|e| err("track_not_found", e.to_string()))?;
    info!(room = %req.room, track = %track.id, muted = req.muted, "track mute set (NATS command)");
    Ok(
        json!({ "room": req.room, "track": track.id, "participant": track.participant_id, "muted": req.muted }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_have_ok_error_codes_and_the_acting_node() {
        assert_eq!(
            reply_json(Ok(json!({ "rooms": [] })), "a"),
            json!({ "ok": true, "rooms": [], "node": "a" })
        );
        assert_eq!(
            reply_json(Err(err("room_not_found", "no room 'x'")), "a"),
            json!({ "ok": false, "error": { "code": "room_not_found", "message": "no room 'x'" }, "node": "a" })
        );
        // Forwarded to the host "b" and relayed by "a".
        assert_eq!(
            reply_json(Ok(json!({ "ok": true, "node": "b" })), "a"),
            json!({ "ok": true, "node": "b", "via": "a" })
        );
        let mut e = err("participant_not_found", "no");
        e.node = Some("b".into());
        assert_eq!(reply_json(Err(e), "a")["via"], "a");
    }

    #[test]
    fn bad_bodies_are_bad_requests() {
        assert_eq!(parse::<RoomReq>(b"{").unwrap_err().code, "bad_request");
        assert_eq!(parse::<RoomReq>(b"{}").unwrap_err().code, "bad_request");
        assert_eq!(
            parse::<RoomReq>(br#"{"room":"a","x":1}"#).unwrap_err().code,
            "bad_request"
        );
        assert!(parse::<RoomReq>(br#"{"room":"a"}"#).is_ok());
        assert_eq!(
            parse::<RoomReq>(&vec![b' '; MAX_BODY + 1])
                .unwrap_err()
                .code,
            "bad_request"
        );
        assert!(parse::<serde::de::IgnoredAny>(b"").is_ok());
        assert_eq!(check_room("../x").unwrap_err().code, "bad_request");
    }
}
