//! Session resume: a participant outlives a dropped socket for the resume window.
//!
//! Why: phones change networks, laptops sleep, proxies cut idle WebSockets. Before, any
//! socket drop removed the participant at once; the room saw it leave and join again, its
//! media was torn down and renegotiated. Now a socket that drops without `leave` (transport
//! closed or lost, ping timeout) only *detaches* its participant: media keeps flowing, and
//! every push meant for it (offers, room events) waits in a bounded queue. A new socket of
//! the same identity and room sends `resume {resumeToken}` and continues the same
//! participant: it gets an ack like `join`'s and then the queued pushes, in order.
//!
//! Lifecycle of a detached participant (all under the sessions lock):
//! - **detached**: its socket dropped; a timer runs for `--resume-window-secs`.
//! - **claimed**: a `resume` was accepted on a new socket; pushes still queue until the ack
//!   is on the wire, so the client always sees the ack first. If that socket drops too, the
//!   participant is detached again with a fresh window.
//! - **attached** again ([`after_resume_ack`]): the socket joins the Socket.IO rooms and the
//!   queue is flushed, both under the lock that room broadcasts take too
//!   ([`crate::delivery`]), so no push is lost or delivered twice.
//! - **removed** when the window passes, the queue overflows ([`MAX_QUEUED`]), the node
//!   drains, the identity joins afresh, or the platform removes it: as before, through
//!   `handlers::remove_participant`.
//!
//! Resume tokens are 256 random bits from the OS, single-use (each resume issues the next
//! one), and only good for the identity and room of the token they were issued under.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use sfu::ParticipantId;
use socketioxide::extract::SocketRef;
use socketioxide::socket::{DisconnectReason, Sid};
use tracing::{info, warn};

use crate::auth::{RoleClaim, unix_now};
use crate::departure::Departure;
use crate::handlers::{self, ApiError};
use crate::{AppState, NAMESPACE, Sessions};

/// Most pushes kept for one detached participant; one more gives up its resume (it is
/// removed, as a socket drop was before resume existed). `activeSpeakers` does not count:
/// only its latest value is kept.
pub(crate) const MAX_QUEUED: usize = 1000;

/// A participant without a socket, waiting for `resume`.
pub(crate) struct Detached {
    pub(crate) room: String,
    identity: String,
    pub(crate) proctor: bool,
    /// Its token allows chat (it hears `message`).
    pub(crate) chat: bool,
    queue: VecDeque<(&'static str, Value)>,
    /// The latest `activeSpeakers`: older ones are stale, so only this one is replayed.
    speakers: Option<Value>,
    /// Which detach this is: a timer of an earlier detach must not remove a participant that
    /// resumed and dropped again since.
    generation: u64,
    since: Instant,
    /// The socket whose `resume` was accepted and whose ack is being sent.
    claimed_by: Option<Sid>,
}

/// Resume bookkeeping, part of the session table (`Sessions::parked`).
#[derive(Default)]
pub(crate) struct Parked {
    detached: HashMap<ParticipantId, Detached>,
    tokens: HashMap<String, ParticipantId>,
    token_of: HashMap<ParticipantId, String>,
    /// The last subscriber offer pushed to each participant and not yet answered, with its
    /// sequence number: sent again on resume when the old socket may have swallowed it (the
    /// server offers nothing more until it is answered).
    unanswered: HashMap<ParticipantId, (u64, Value)>,
    seq: u64,
}

/// Which participants of a room a broadcast is for (see `delivery::Audience`).
#[derive(Clone, Copy)]
pub(crate) enum Hears {
    /// Everyone.
    Room,
    /// Proctors.
    Proctors,
    /// Participants allowed to chat.
    Chat,
}

/// What a push to a detached participant did.
pub(crate) enum Queued {
    Kept,
    /// The queue was full: the participant was taken out of the table and must be removed.
    Overflow(String),
}

impl Parked {
    /// A fresh resume token for `p` (its previous one stops working).
    pub(crate) fn issue_token(&mut self, p: ParticipantId) -> String {
        self.revoke_token(p);
        let mut bytes = [0u8; 32];
        // Invariant: the OS random source is available on every platform we run on; without
        // it no secret can be made and continuing would hand out guessable tokens.
        getrandom::fill(&mut bytes).expect("OS random source");
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        self.tokens.insert(token.clone(), p);
        self.token_of.insert(p, token.clone());
        token
    }

    fn revoke_token(&mut self, p: ParticipantId) {
        if let Some(t) = self.token_of.remove(&p) {
            self.tokens.remove(&t);
        }
    }

    /// Entries per map (`detached`, `tokens`, `token_of`, `unanswered`), for the metrics.
    pub(crate) fn sizes(&self) -> [(&'static str, usize); 4] {
        [
            ("parked_detached", self.detached.len()),
            ("parked_tokens", self.tokens.len()),
            ("parked_token_of", self.token_of.len()),
            ("parked_unanswered", self.unanswered.len()),
        ]
    }

    /// Drops everything kept for `p`; returns its detached entry if it had one.
    pub(crate) fn forget(&mut self, p: ParticipantId) -> Option<Detached> {
        self.revoke_token(p);
        self.unanswered.remove(&p);
        self.detached.remove(&p)
    }

    /// The detached entry of `p`, if its socket is gone (claimed or not).
    pub(crate) fn detached(&self, p: ParticipantId) -> Option<&Detached> {
        self.detached.get(&p)
    }

    /// The socket resuming `p` right now, if any.
    pub(crate) fn claimed_by(&self, p: ParticipantId) -> Option<Sid> {
        self.detached.get(&p).and_then(|d| d.claimed_by)
    }

    /// Detached participants of `room` that hear a broadcast to `who`.
    pub(crate) fn detached_in<'a>(
        &'a self,
        room: &'a str,
        who: Hears,
    ) -> impl Iterator<Item = (ParticipantId, &'a str)> + 'a {
        self.detached
            .iter()
            .filter(move |(_, d)| {
                d.room == room
                    && match who {
                        Hears::Room => true,
                        Hears::Proctors => d.proctor,
                        Hears::Chat => d.chat,
                    }
            })
            .map(|(p, d)| (*p, d.identity.as_str()))
    }

    /// Queues a push for a detached participant (`None`: `p` is not detached).
    pub(crate) fn queue(
        &mut self,
        p: ParticipantId,
        event: &'static str,
        data: &Value,
    ) -> Option<Queued> {
        let d = self.detached.get_mut(&p)?;
        if event == "activeSpeakers" {
            d.speakers = Some(data.clone());
            return Some(Queued::Kept);
        }
        // A claimed participant is attached within moments: never give up on it.
        if d.queue.len() >= MAX_QUEUED && d.claimed_by.is_none() {
            let room = d.room.clone();
            self.forget(p);
            return Some(Queued::Overflow(room));
        }
        d.queue.push_back((event, data.clone()));
        Some(Queued::Kept)
    }

    /// Remembers the offer just pushed to `p` until it is answered.
    pub(crate) fn offered(&mut self, p: ParticipantId, offer: &Value) {
        self.seq += 1;
        self.unanswered.insert(p, (self.seq, offer.clone()));
    }

    /// Which offer of `p` an `answer` arriving now answers (see [`Parked::answered`]).
    pub(crate) fn offer_seq(&self, p: ParticipantId) -> Option<u64> {
        self.unanswered.get(&p).map(|(s, _)| *s)
    }

    /// `p` answered offer `seq`: nothing to send again (a newer offer stays remembered).
    pub(crate) fn answered(&mut self, p: ParticipantId, seq: Option<u64>) {
        if seq.is_some() && self.offer_seq(p) == seq {
            self.unanswered.remove(&p);
        }
    }

    /// Detached participants nobody is resuming (drain removes them at once).
    fn unclaimed(&self) -> Vec<(ParticipantId, String)> {
        self.detached
            .iter()
            .filter(|(_, d)| d.claimed_by.is_none())
            .map(|(p, d)| (*p, d.room.clone()))
            .collect()
    }
}

/// A joined socket dropped. Returns true when its participant was detached (kept for a
/// resume); false when it must be removed now, as before: resume switched off, draining,
/// a deliberate disconnect (the client's namespace DISCONNECT, or ours after `leave`,
/// `removed`, ...), or a socket that never got its join ack.
pub(crate) fn detach(state: &AppState, sid: Sid, reason: &DisconnectReason) -> bool {
    let window = state.resume_window();
    let dropped = matches!(
        reason,
        DisconnectReason::TransportClose
            | DisconnectReason::TransportError
            | DisconnectReason::HeartbeatTimeout
    );
    if window.is_zero() || state.draining() || !dropped {
        return false;
    }
    let (p, room, generation) = {
        let mut guard = state.sessions();
        let sessions = &mut *guard;
        let Some(s) = sessions.by_sid.get_mut(&sid) else {
            return false;
        };
        let Some(p) = s.participant else {
            return false;
        };
        let attached = sessions.by_participant.get(&p) == Some(&sid);
        let claimed = sessions.parked.claimed_by(p) == Some(sid);
        if !attached && !claimed {
            return false;
        }
        s.participant = None;
        let (room, identity) = (s.room.clone(), s.claims.sub.clone());
        let proctor = s.claims.role == RoleClaim::Proctor;
        let chat = s.claims.can_chat();
        sessions.by_participant.remove(&p);
        sessions.parked.seq += 1;
        let generation = sessions.parked.seq;
        let d = sessions
            .parked
            .detached
            .entry(p)
            .or_insert_with(|| Detached {
                room: room.clone(),
                identity,
                proctor,
                chat,
                queue: VecDeque::new(),
                speakers: None,
                generation,
                since: Instant::now(),
                claimed_by: None,
            });
        d.claimed_by = None;
        d.generation = generation;
        (p, room, generation)
    };
    info!(participant = %p, room = %room, ?reason, window_ms = window.as_millis() as u64,
        "socket dropped without leave: participant kept for resume");
    let st = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(window).await;
        expire(&st, p, generation).await;
    });
    true
}

/// The resume window of detach `generation` has passed: remove the participant unless it
/// resumed (or is resuming) since.
async fn expire(state: &AppState, p: ParticipantId, generation: u64) {
    let gone = {
        let mut sessions = state.sessions();
        match sessions.parked.detached.get(&p) {
            Some(d) if d.generation == generation && d.claimed_by.is_none() => sessions.unbind(p),
            _ => return,
        }
    };
    let Some((_, Some(d))) = gone else { return };
    info!(participant = %p, room = %d.room, queued = d.queue.len(),
        "not resumed within the window: participant removed");
    handlers::remove_participant(state, p, &d.room, Departure::Disconnected).await;
}

/// A push overflowed `p`'s queue: give the resume up and remove it (in a task: pushes are
/// made under the sessions lock).
pub(crate) fn overflowed(state: &AppState, p: ParticipantId, room: String) {
    warn!(participant = %p, room = %room, limit = MAX_QUEUED,
        "too many pushes while detached: resume given up, participant removed");
    let st = state.clone();
    tokio::spawn(async move {
        handlers::remove_participant(&st, p, &room, Departure::Disconnected).await;
    });
}

/// Drain: detached participants cannot come back to this node; remove them now.
pub(crate) async fn drop_all(state: &AppState) {
    let gone: Vec<(ParticipantId, String)> = {
        let mut sessions = state.sessions();
        let unclaimed = sessions.parked.unclaimed();
        for (p, _) in &unclaimed {
            sessions.unbind(*p);
        }
        unclaimed
    };
    for (p, room) in gone {
        handlers::remove_participant(state, p, &room, Departure::Disconnected).await;
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResumeReq {
    resume_token: Value,
}

fn failed(message: &str) -> ApiError {
    ApiError::new("resume_failed", message)
}

/// `resume`'s payload, checked: the resume token.
pub(crate) fn parse_resume(d: Option<Value>) -> Result<String, ApiError> {
    let req: ResumeReq = handlers::parse(d)?;
    match req.resume_token {
        Value::String(t) if !t.is_empty() && t.len() <= 128 => Ok(t),
        Value::String(_) => Err(ApiError::bad("resumeToken: 1 to 128 characters")),
        _ => Err(ApiError::bad("resumeToken must be a string")),
    }
}

/// `resume {resumeToken}`: continue a detached participant on this socket. The ack is
/// `join`'s plus `resumed: true` and a new token; [`after_resume_ack`] then attaches the
/// socket and delivers what was queued.
#[tracing::instrument(name = "resume", level = "info", skip_all, fields(sid = %socket.id))]
pub(crate) async fn resume(
    socket: &SocketRef,
    state: &AppState,
    d: Option<Value>,
) -> Result<Value, ApiError> {
    let token = parse_resume(d)?;
    if state.draining() {
        return Err(failed("this node is draining; join elsewhere"));
    }
    handlers::admit_join_from_address(state, socket)?;
    // Claim under the lock: check the token and the identity, take over from a socket the
    // server has not seen die yet, issue the next token.
    let (p, claims, new_token, stale) = {
        let mut guard = state.sessions();
        let sessions = &mut *guard;
        let claims = handlers::unjoined_session(sessions, socket)?.claims.clone();
        if claims.exp < unix_now() {
            return Err(ApiError::new("token_expired", "token expired"));
        }
        let Some(&p) = sessions.parked.tokens.get(&token) else {
            return Err(failed(
                "unknown or used resume token, or the resume window has passed",
            ));
        };
        let stale = sessions.by_participant.get(&p).copied();
        let (identity, room) = match (stale, sessions.parked.detached.get(&p)) {
            (Some(old), _) => match sessions.by_sid.get(&old) {
                Some(o) => (o.claims.sub.clone(), o.room.clone()),
                None => return Err(failed("participant no longer exists")),
            },
            (None, Some(d)) => (d.identity.clone(), d.room.clone()),
            (None, None) => return Err(failed("the participant is still joining")),
        };
        if identity != claims.sub || room != claims.room {
            // Not burnt: the rightful owner may still resume with it.
            return Err(failed(
                "the resume token belongs to another identity or room",
            ));
        }
        if let Some(old) = stale {
            // The old socket is still open to us (its loss not noticed yet): it stops
            // speaking for the participant now, and is closed below.
            if let Some(o) = sessions.by_sid.get_mut(&old) {
                o.participant = None;
            }
            sessions.by_participant.remove(&p);
            sessions.parked.seq += 1;
            let generation = sessions.parked.seq;
            sessions.parked.detached.insert(
                p,
                Detached {
                    room: room.clone(),
                    identity,
                    proctor: claims.role == RoleClaim::Proctor,
                    chat: claims.can_chat(),
                    queue: VecDeque::new(),
                    speakers: None,
                    generation,
                    since: Instant::now(),
                    claimed_by: None,
                },
            );
        }
        if let Some(d) = sessions.parked.detached.get_mut(&p) {
            d.claimed_by = Some(socket.id);
        }
        if let Some(s) = sessions.by_sid.get_mut(&socket.id) {
            s.participant = Some(p);
        }
        let new_token = sessions.parked.issue_token(p);
        (p, claims, new_token, stale)
    };
    if let Some(old) = stale.and_then(|sid| state.io().of(NAMESPACE)?.get_socket(sid)) {
        info!(participant = %p, old_sid = %old.id, "resumed over a socket not yet seen closed: closing it");
        old.leave(handlers::room_key(&claims.room));
        old.leave(handlers::proctors_key(&claims.room));
        old.leave(handlers::chat_key(&claims.room));
        let _ = old.disconnect();
    }
    let proctor = claims.role == RoleClaim::Proctor;
    let (record, others) = {
        let store = state.store();
        let mut all = store.participants(&claims.room);
        let me = all.iter().position(|r| r.id == p.to_string());
        let record = me.map(|i| all.swap_remove(i));
        if !proctor {
            all.retain(|r| r.role != "proctor");
        }
        (record, all)
    };
    let Some(record) = record else {
        // Removed between the claim and now (e.g. its media timed out).
        let mut sessions = state.sessions();
        if let Some(s) = sessions.by_sid.get_mut(&socket.id) {
            s.participant = None;
        }
        return Err(failed("participant no longer exists"));
    };
    let mut ack = handlers::session_ack(state, &claims, &record, others);
    ack["resumeToken"] = json!(new_token);
    ack["resumed"] = json!(true);
    Ok(ack)
}

/// After the resume ack is on the wire: join the socket to its rooms, route pushes to it,
/// and deliver what was queued (the unanswered offer first when the queue has no newer
/// one), all under the sessions lock so that no room broadcast slips between.
pub(crate) fn after_resume_ack(socket: &SocketRef, state: &AppState) {
    let mut guard = state.sessions();
    let sessions = &mut *guard;
    let Some(p) = sessions.by_sid.get(&socket.id).and_then(|s| s.participant) else {
        return;
    };
    if sessions.parked.claimed_by(p) != Some(socket.id) {
        return;
    }
    let Some(d) = sessions.parked.detached.remove(&p) else {
        return;
    };
    socket.join(handlers::room_key(&d.room));
    if d.proctor {
        socket.join(handlers::proctors_key(&d.room));
    }
    if d.chat {
        socket.join(handlers::chat_key(&d.room));
    }
    sessions.by_participant.insert(p, socket.id);
    let replayed = d.queue.len();
    if !d.queue.iter().any(|(ev, _)| *ev == "offer")
        && let Some((_, offer)) = sessions.parked.unanswered.get(&p)
    {
        let _ = socket.emit("offer", offer);
    }
    for (event, data) in &d.queue {
        let _ = socket.emit(*event, data);
    }
    if let Some(speakers) = &d.speakers {
        let _ = socket.emit("activeSpeakers", speakers);
    }
    drop(guard);
    state.departures().resumed();
    info!(participant = %p, room = %d.room, replayed, detached_ms = d.since.elapsed().as_millis() as u64,
        "participant resumed on a new socket");
}

impl Sessions {
    /// Takes `p` out of the session table: its socket binding (attached, or resuming), its
    /// early offer, resume token and detached entry. Returns the socket it was bound to
    /// and the detached entry, or `None` when `p` was not in the table at all.
    pub(crate) fn unbind(&mut self, p: ParticipantId) -> Option<(Option<Sid>, Option<Detached>)> {
        let attached = self.by_participant.remove(&p);
        let early = self.early_offers.remove(&p).is_some();
        let had_token = self.parked.token_of.contains_key(&p);
        let detached = self.parked.forget(p);
        let sid = attached.or(detached.as_ref().and_then(|d| d.claimed_by));
        if let Some(sid) = sid
            && let Some(s) = self.by_sid.get_mut(&sid)
            && s.participant == Some(p)
        {
            s.participant = None;
        }
        (sid.is_some() || detached.is_some() || early || had_token).then_some((sid, detached))
    }
}

/// How long a dropped participant is kept, for the join ack (`resumeWindowMs`).
pub(crate) fn window_ms(state: &AppState) -> u64 {
    state.resume_window().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detached(room: &str, proctor: bool) -> Detached {
        Detached {
            room: room.into(),
            identity: "ada".into(),
            proctor,
            chat: true,
            queue: VecDeque::new(),
            speakers: None,
            generation: 1,
            since: Instant::now(),
            claimed_by: None,
        }
    }

    #[test]
    fn tokens_are_unguessable_single_and_revoked_with_the_participant() {
        let mut k = Parked::default();
        let p = ParticipantId(7);
        let a = k.issue_token(p);
        assert_eq!(a.len(), 43, "256 bits in base64url: {a}");
        let b = k.issue_token(p);
        assert_ne!(a, b);
        assert_eq!(
            k.tokens.get(&a),
            None,
            "a new token revokes the previous one"
        );
        assert_eq!(k.tokens.get(&b), Some(&p));
        k.forget(p);
        assert!(k.tokens.is_empty() && k.token_of.is_empty());
    }

    #[test]
    fn the_queue_keeps_order_coalesces_speakers_and_overflows_once() {
        let mut k = Parked::default();
        let p = ParticipantId(1);
        assert!(
            k.queue(p, "participantJoined", &json!(1)).is_none(),
            "not detached"
        );
        k.detached.insert(p, detached("r", false));
        for i in 0..MAX_QUEUED {
            assert!(matches!(
                k.queue(p, "trackPublished", &json!(i)),
                Some(Queued::Kept)
            ));
            assert!(matches!(
                k.queue(p, "activeSpeakers", &json!(i)),
                Some(Queued::Kept)
            ));
        }
        let d = k.detached(p).unwrap();
        assert_eq!(d.queue.len(), MAX_QUEUED, "activeSpeakers does not count");
        assert_eq!(d.queue[5].1, json!(5));
        assert_eq!(
            d.speakers,
            Some(json!(MAX_QUEUED - 1)),
            "only the latest kept"
        );
        k.issue_token(p);
        match k.queue(p, "trackPublished", &json!("one too many")) {
            Some(Queued::Overflow(room)) => assert_eq!(room, "r"),
            _ => panic!("expected an overflow"),
        }
        assert!(
            k.detached(p).is_none() && k.token_of.is_empty(),
            "resume given up"
        );
    }

    #[test]
    fn a_claimed_participant_is_never_given_up_and_audiences_filter_proctors() {
        let mut k = Parked::default();
        let (learner, proctor) = (ParticipantId(1), ParticipantId(2));
        k.detached.insert(learner, detached("r", false));
        k.detached.insert(proctor, detached("r", true));
        k.detached.get_mut(&learner).unwrap().claimed_by = Some(Sid::new());
        for i in 0..=MAX_QUEUED {
            assert!(matches!(
                k.queue(learner, "offer", &json!(i)),
                Some(Queued::Kept)
            ));
        }
        let all: Vec<_> = k.detached_in("r", Hears::Room).map(|(p, _)| p).collect();
        assert_eq!(all.len(), 2);
        let proctors: Vec<_> = k
            .detached_in("r", Hears::Proctors)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(proctors, vec![proctor]);
        assert_eq!(k.detached_in("other", Hears::Room).count(), 0);
        assert_eq!(k.unclaimed(), vec![(proctor, "r".to_owned())]);
    }

    #[test]
    fn an_answer_clears_only_the_offer_it_answers() {
        let mut k = Parked::default();
        let p = ParticipantId(3);
        k.offered(p, &json!("o1"));
        let seq = k.offer_seq(p);
        k.offered(p, &json!("o2")); // pushed while the answer to o1 was being applied
        k.answered(p, seq);
        assert_eq!(
            k.unanswered.get(&p).map(|(_, o)| o.clone()),
            Some(json!("o2"))
        );
        let seq = k.offer_seq(p);
        k.answered(p, seq);
        assert!(k.unanswered.is_empty());
        k.answered(p, None);
    }
}
