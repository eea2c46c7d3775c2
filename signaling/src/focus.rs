//! Proctoring focus events: a learner's page reports losing or regaining focus; the server
//! stamps its own time, computes how long focus was lost, drops repeats, rate-limits, keeps
//! the room's recent history (for late proctors and the HTTP log), and hands each event to
//! the JetStream publisher when NATS is configured.
//!
//! Events go to JetStream through an [`Outbox`] (bounded, ordered, each acknowledged; see
//! `outbox.rs`), on `studyroom.proctoring.<room>.focus`; past `--focus-queue-max` in memory
//! they spill to a file (`spill.rs`) so a long NATS outage loses none.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::outbox::{Message, Outbox, subject_token};
use crate::spill::SpillFile;

/// Events kept per room.
const HISTORY_PER_ROOM: usize = 1000;
/// Rooms whose history is kept (the oldest room's history goes first).
const HISTORY_ROOMS: usize = 1000;
/// Rate limit: at most this many events per participant per window.
const RATE_MAX: usize = 20;
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Events waiting for NATS in memory at most (`--focus-queue-max`'s default).
pub const QUEUE_MAX: usize = 10_000;

/// One focus change, as proctors and NATS see it (`docs/events.md`).
#[derive(Debug, Clone, Serialize)]
pub struct FocusEvent {
    /// Schema version.
    pub v: u32,
    /// Room.
    pub room: String,
    /// Session participant id (`P..`).
    #[serde(rename = "participantId")]
    pub participant_id: String,
    /// Identity (token `sub`).
    pub participant: String,
    /// Display name.
    pub name: String,
    /// `lost` or `regained`.
    pub state: &'static str,
    /// What the browser saw.
    pub reason: String,
    /// Server time, ms since the epoch.
    pub at: u64,
    /// Client time, ms since the epoch.
    pub client_at: Option<u64>,
    /// On `regained`: how long focus was lost (server clock).
    pub lost_ms: Option<u64>,
    /// Per-participant sequence number (for NATS de-duplication).
    #[serde(skip)]
    pub seq: u64,
}

/// The JSON published to NATS (the documented subset).
#[derive(Serialize)]
struct NatsFocus<'a> {
    v: u32,
    room: &'a str,
    participant: &'a str,
    name: &'a str,
    state: &'a str,
    reason: &'a str,
    at: u64,
    client_at: Option<u64>,
    lost_ms: Option<u64>,
}

fn published(ev: &FocusEvent) -> NatsFocus<'_> {
    NatsFocus {
        v: ev.v,
        room: &ev.room,
        participant: &ev.participant,
        name: &ev.name,
        state: ev.state,
        reason: &ev.reason,
        at: ev.at,
        client_at: ev.client_at,
        lost_ms: ev.lost_ms,
    }
}

/// The event as NATS and the audit webhook see it (the webhook adds its `id`).
pub fn published_json(ev: &FocusEvent) -> serde_json::Value {
    serde_json::to_value(published(ev)).unwrap_or_default()
}

/// Why a focus report was not turned into an event.
pub enum Refused {
    /// Same state as the last one.
    Duplicate,
    /// Too many events in the window.
    RateLimited,
}

#[derive(Default)]
struct Learner {
    lost: bool,
    lost_at_ms: Option<u64>,
    recent: VecDeque<Instant>,
    seq: u64,
}

/// Focus state of the node.
pub struct Focus {
    inner: Mutex<Inner>,
    /// Events accepted.
    pub accepted: AtomicU64,
    /// The JetStream queue (`STUDYROOM_PROCTORING`).
    pub outbox: Outbox,
}

impl Default for Focus {
    fn default() -> Self {
        Focus::new(QUEUE_MAX, None)
    }
}

impl Focus {
    /// At most `queue_max` events wait for NATS in memory; past that they go to `spill`
    /// (when given), else the oldest is dropped.
    pub fn new(queue_max: usize, spill: Option<SpillFile>) -> Self {
        let outbox = Outbox::new(
            "focus events",
            "STUDYROOM_PROCTORING",
            "studyroom.proctoring.>",
            queue_max,
        );
        Focus {
            inner: Mutex::default(),
            accepted: AtomicU64::new(0),
            outbox: match spill {
                Some(s) => outbox.with_spill(s),
                None => outbox,
            },
        }
    }
}

#[derive(Default)]
struct Inner {
    learners: HashMap<(String, String), Learner>,
    history: HashMap<String, VecDeque<FocusEvent>>,
    room_order: VecDeque<String>,
}

impl Focus {
    /// Record a report from participant `pid` (identity `identity`) of `room`.
    #[allow(clippy::too_many_arguments)]
    pub fn report(
        &self,
        room: &str,
        pid: &str,
        identity: &str,
        name: &str,
        lost: bool,
        reason: &str,
        client_at: Option<u64>,
        now_ms: u64,
        now: Instant,
    ) -> Result<FocusEvent, Refused> {
        let mut g = self.inner.lock().expect("focus lock");
        let l = g
            .learners
            .entry((room.to_owned(), pid.to_owned()))
            .or_default();
        if l.lost == lost && (lost || l.seq > 0) {
            return Err(Refused::Duplicate);
        }
        if !lost && l.seq == 0 {
            // "regained" before any "lost": nothing was lost.
            return Err(Refused::Duplicate);
        }
        while l
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > RATE_WINDOW)
        {
            l.recent.pop_front();
        }
        if l.recent.len() >= RATE_MAX {
            return Err(Refused::RateLimited);
        }
        l.recent.push_back(now);
        l.lost = lost;
        l.seq += 1;
        let lost_ms = if lost {
            l.lost_at_ms = Some(now_ms);
            None
        } else {
            l.lost_at_ms.take().map(|t| now_ms.saturating_sub(t))
        };
        let ev = FocusEvent {
            v: 1,
            room: room.to_owned(),
            participant_id: pid.to_owned(),
            participant: identity.to_owned(),
            name: name.to_owned(),
            state: if lost { "lost" } else { "regained" },
            reason: reason.to_owned(),
            at: now_ms,
            client_at,
            lost_ms,
            seq: l.seq,
        };
        if !g.history.contains_key(room) {
            g.room_order.push_back(room.to_owned());
            if g.room_order.len() > HISTORY_ROOMS
                && let Some(old) = g.room_order.pop_front()
            {
                g.history.remove(&old);
            }
        }
        let h = g.history.entry(room.to_owned()).or_default();
        h.push_back(ev.clone());
        if h.len() > HISTORY_PER_ROOM {
            h.pop_front();
        }
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(ev)
    }

    /// A participant left: forget its live state (its history stays).
    pub fn forget(&self, room: &str, pid: &str) {
        let mut g = self.inner.lock().expect("focus lock");
        g.learners.remove(&(room.to_owned(), pid.to_owned()));
    }

    /// The room's history, oldest first; one participant's (by id or identity) when given.
    pub fn history(&self, room: &str, who: Option<&str>) -> Vec<FocusEvent> {
        let g = self.inner.lock().expect("focus lock");
        g.history
            .get(room)
            .map(|h| {
                h.iter()
                    .filter(|e| who.is_none_or(|w| e.participant_id == w || e.participant == w))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Queue an event for NATS (only when NATS is configured).
    pub fn enqueue(&self, ev: FocusEvent) {
        let body = serde_json::to_vec(&published(&ev)).unwrap_or_default();
        self.outbox.push(Message {
            subject: format!("studyroom.proctoring.{}.focus", subject_token(&ev.room)),
            msg_id: format!("{}/{}/{}/{}", ev.room, ev.participant_id, ev.at, ev.seq),
            body,
        });
    }

    /// Learners with live focus state, and rooms with a history (for the metrics).
    pub fn sizes(&self) -> (usize, usize) {
        let g = self.inner.lock().expect("focus lock");
        (g.learners.len(), g.history.len())
    }

    /// Events waiting for NATS.
    pub fn pending(&self) -> usize {
        self.outbox.pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupes_measures_and_rate_limits() {
        let f = Focus::default();
        let t0 = Instant::now();
        let r = |lost: bool, ms: u64, at: Instant| {
            f.report("r", "P1", "ann", "Ann", lost, "hidden", Some(ms), ms, at)
        };
        assert!(
            matches!(r(false, 1_000, t0), Err(Refused::Duplicate)),
            "regained before any loss"
        );
        let lost = r(true, 1_000, t0).ok().unwrap();
        assert_eq!((lost.state, lost.lost_ms), ("lost", None));
        assert!(matches!(r(true, 1_100, t0), Err(Refused::Duplicate)));
        let back = r(false, 6_230, t0).ok().unwrap();
        assert_eq!((back.state, back.lost_ms), ("regained", Some(5_230)));
        // 20 events per 10 s: 2 used, 18 more accepted, then refused.
        for i in 0..18 {
            assert!(r(i % 2 == 0, 7_000 + i, t0).is_ok(), "event {i}");
        }
        assert!(matches!(r(true, 9_000, t0), Err(Refused::RateLimited)));
        // After the window, accepted again.
        assert!(r(true, 20_000, t0 + RATE_WINDOW + Duration::from_secs(1)).is_ok());
        let h = f.history("r", Some("ann"));
        assert_eq!(h.len(), 21);
        assert!(h.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
        assert!(f.history("r", Some("bob")).is_empty());
        assert!(f.history("other", None).is_empty());
    }

    #[test]
    fn queue_is_bounded_and_counts_drops() {
        let f = Focus::default();
        let t0 = Instant::now();
        for i in 0..(QUEUE_MAX as u64 + 5) {
            let pid = format!("P{i}");
            let ev = f
                .report("r", &pid, &pid, "x", true, "blur", None, i, t0)
                .ok()
                .unwrap();
            f.enqueue(ev);
        }
        assert_eq!(f.pending(), QUEUE_MAX);
        assert_eq!(f.outbox.dropped.load(Ordering::Relaxed), 5);
    }
}
