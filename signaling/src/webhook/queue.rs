//! The delivery queue: which event goes to which endpoint next, and when a failed one is
//! tried again. Sans-IO: no clock, no sockets. Time is an argument (`now_ms`, ms since the
//! epoch, the same clock that stamps events), so the retry and ordering rules are tested
//! with a fake clock.
//!
//! Driving contract: [`DeliveryQueue::push`] each new event; take what is due with
//! [`DeliveryQueue::poll_attempts`] and send it; report each result with
//! [`DeliveryQueue::handle_result`]; sleep until [`DeliveryQueue::poll_timeout`] (or until
//! a push or result arrives) and poll again.
//!
//! Rules (docs/events.md, "Audit-log webhook"):
//! - **In order per room, per endpoint**: a room has at most one event in flight to an
//!   endpoint, and the next one waits until the head is delivered or given up. Rooms do not
//!   wait for each other, and endpoints do not wait for each other.
//! - **Retry** (`Retry`: 5xx, 408, 429, timeout, connection refused) after a backoff of
//!   `base * 2^(failures-1)`, capped; the room's head keeps its place, so order holds.
//! - **Give up** only on a refusal (`Rejected`: other 4xx): that event is done for that
//!   endpoint (logged and counted by the driver); the room moves on.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// One event waiting for delivery.
#[derive(Debug)]
pub struct Pending {
    /// Local order of arrival (spool and queue agree on it).
    pub seq: u64,
    /// Event id (the idempotency key the receiver sees).
    pub id: String,
    /// The room: events of one room are delivered in order.
    pub room: String,
    /// When the event was made (ms since the epoch): the age metric.
    pub created_ms: u64,
    /// The JSON body, exactly as signed and sent.
    pub body: Arc<[u8]>,
}

/// One POST to make.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Index of the endpoint (the `--audit-webhook-url` order).
    pub endpoint: usize,
    /// The event.
    pub event: Arc<Pending>,
    /// 1 for the first try.
    pub try_no: u32,
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Delivered,
    /// A refusal that retrying will not change (4xx other than 408/429, 3xx): given up.
    Rejected,
    /// 5xx, 408, 429, timeout, connection error: tried again later.
    Retry,
}

/// What the caller must do after [`DeliveryQueue::handle_result`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The event is done for this endpoint; `all` when no endpoint still needs it (the
    /// spool may forget it).
    Done {
        /// No endpoint still needs the event.
        all: bool,
    },
    /// It will be tried again at `at_ms`.
    RetryAt(u64),
    /// The result is for an event the queue no longer holds (dropped meanwhile): ignore.
    Stale,
}

/// Backoff settings.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base_ms: u64,
    /// Largest delay.
    pub cap_ms: u64,
}

impl Backoff {
    /// Delay before try number `failures + 1`.
    pub fn delay(&self, failures: u32) -> u64 {
        let shift = failures.saturating_sub(1).min(32);
        self.base_ms.saturating_mul(1u64 << shift).min(self.cap_ms)
    }
}

#[derive(Default)]
struct RoomLine {
    events: VecDeque<Arc<Pending>>,
    in_flight: bool,
    /// Failed tries of the head event.
    failures: u32,
    /// The head may not be tried before this.
    not_before_ms: u64,
}

#[derive(Default)]
struct Endpoint {
    rooms: HashMap<String, RoomLine>,
    in_flight: usize,
    pending: usize,
}

/// Per-endpoint, per-room ordered queues with retry timers.
pub struct DeliveryQueue {
    endpoints: Vec<Endpoint>,
    backoff: Backoff,
    max_in_flight: usize,
    /// Endpoints still needing each event, by id.
    remaining: HashMap<String, usize>,
}

impl DeliveryQueue {
    /// A queue for `endpoints` receivers; at most `max_in_flight` requests per endpoint.
    pub fn new(endpoints: usize, backoff: Backoff, max_in_flight: usize) -> Self {
        DeliveryQueue {
            endpoints: (0..endpoints).map(|_| Endpoint::default()).collect(),
            backoff,
            max_in_flight: max_in_flight.max(1),
            remaining: HashMap::new(),
        }
    }

    /// Queue an event for the given endpoints (all of them for a new event; after a
    /// restart, those the spool says have not had it yet).
    pub fn push(&mut self, ev: Arc<Pending>, endpoints: impl IntoIterator<Item = usize>) {
        let mut n = 0;
        for i in endpoints {
            let Some(ep) = self.endpoints.get_mut(i) else {
                continue;
            };
            ep.rooms
                .entry(ev.room.clone())
                .or_default()
                .events
                .push_back(ev.clone());
            ep.pending += 1;
            n += 1;
        }
        if n > 0 {
            self.remaining.insert(ev.id.clone(), n);
        }
    }

    /// Every attempt due at `now_ms` (each room's head, not in flight, backoff passed).
    pub fn poll_attempts(&mut self, now_ms: u64) -> Vec<Attempt> {
        let mut out = Vec::new();
        for (i, ep) in self.endpoints.iter_mut().enumerate() {
            for line in ep.rooms.values_mut() {
                if ep.in_flight >= self.max_in_flight {
                    break;
                }
                if line.in_flight || line.not_before_ms > now_ms {
                    continue;
                }
                if let Some(head) = line.events.front() {
                    line.in_flight = true;
                    ep.in_flight += 1;
                    out.push(Attempt {
                        endpoint: i,
                        event: head.clone(),
                        try_no: line.failures + 1,
                    });
                }
            }
        }
        out
    }

    /// Record the result of an attempt made at or before `now_ms`.
    pub fn handle_result(&mut self, a: &Attempt, outcome: Outcome, now_ms: u64) -> Resolution {
        let Some(ep) = self.endpoints.get_mut(a.endpoint) else {
            return Resolution::Stale;
        };
        let Some(line) = ep.rooms.get_mut(&a.event.room) else {
            return Resolution::Stale;
        };
        if line.in_flight {
            line.in_flight = false;
            ep.in_flight -= 1;
        }
        if line.events.front().is_none_or(|h| h.id != a.event.id) {
            if line.events.is_empty() {
                ep.rooms.remove(&a.event.room);
            }
            return Resolution::Stale;
        }
        match outcome {
            Outcome::Retry => {
                line.failures += 1;
                line.not_before_ms = now_ms + self.backoff.delay(line.failures);
                Resolution::RetryAt(line.not_before_ms)
            }
            Outcome::Delivered | Outcome::Rejected => {
                line.events.pop_front();
                line.failures = 0;
                line.not_before_ms = 0;
                ep.pending -= 1;
                if line.events.is_empty() {
                    ep.rooms.remove(&a.event.room);
                }
                let all = match self.remaining.get_mut(&a.event.id) {
                    Some(n) if *n > 1 => {
                        *n -= 1;
                        false
                    }
                    _ => {
                        self.remaining.remove(&a.event.id);
                        true
                    }
                };
                Resolution::Done { all }
            }
        }
    }

    /// Forget an event everywhere (the spool's bound was reached and it was the oldest).
    /// A result for it that comes later is `Stale`.
    pub fn drop_event(&mut self, ev: &Pending) {
        if self.remaining.remove(&ev.id).is_none() {
            return;
        }
        for ep in &mut self.endpoints {
            let Some(line) = ep.rooms.get_mut(&ev.room) else {
                continue;
            };
            let was_head = line.events.front().is_some_and(|h| h.id == ev.id);
            let before = line.events.len();
            line.events.retain(|e| e.id != ev.id);
            if line.events.len() < before {
                ep.pending -= 1;
                if was_head {
                    line.failures = 0;
                    line.not_before_ms = 0;
                }
                if line.events.is_empty() && !line.in_flight {
                    ep.rooms.remove(&ev.room);
                }
            }
        }
    }

    /// The earliest time a waiting head becomes due (None: nothing waits on a timer).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.endpoints
            .iter()
            .filter(|ep| ep.in_flight < self.max_in_flight)
            .flat_map(|ep| ep.rooms.values())
            .filter(|l| !l.in_flight && !l.events.is_empty())
            .map(|l| l.not_before_ms)
            .min()
    }

    /// Deliveries waiting (an event waiting for two endpoints counts twice).
    pub fn pending(&self) -> usize {
        self.endpoints.iter().map(|e| e.pending).sum()
    }

    /// When the oldest waiting event was made.
    pub fn oldest_created_ms(&self) -> Option<u64> {
        self.endpoints
            .iter()
            .flat_map(|ep| ep.rooms.values())
            .filter_map(|l| l.events.front().map(|e| e.created_ms))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base_ms: 500,
        cap_ms: 4_000,
    };

    fn ev(seq: u64, room: &str) -> Arc<Pending> {
        Arc::new(Pending {
            seq,
            id: format!("e{seq}"),
            room: room.into(),
            created_ms: 1_000 + seq,
            body: Arc::from(&b"{}"[..]),
        })
    }

    fn ids(a: &[Attempt]) -> Vec<String> {
        a.iter()
            .map(|a| format!("{}:{}", a.endpoint, a.event.id))
            .collect()
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let d: Vec<u64> = (1..=6).map(|f| B.delay(f)).collect();
        assert_eq!(d, [500, 1_000, 2_000, 4_000, 4_000, 4_000]);
        assert_eq!(B.delay(200), 4_000, "no overflow");
    }

    #[test]
    fn one_in_flight_per_room_and_order_kept_through_retries() {
        let mut q = DeliveryQueue::new(1, B, 16);
        q.push(ev(1, "a"), [0]);
        q.push(ev(2, "a"), [0]);
        q.push(ev(3, "b"), [0]);
        let mut now = 10_000;
        let mut first = q.poll_attempts(now);
        first.sort_by_key(|a| a.event.seq);
        assert_eq!(ids(&first), ["0:e1", "0:e3"], "heads of both rooms");
        assert!(
            q.poll_attempts(now).is_empty(),
            "nothing more until results"
        );
        // Room a's head fails (5xx): e2 must not overtake it.
        assert_eq!(
            q.handle_result(&first[0], Outcome::Retry, now),
            Resolution::RetryAt(now + 500)
        );
        assert_eq!(
            q.handle_result(&first[1], Outcome::Delivered, now),
            Resolution::Done { all: true }
        );
        assert!(q.poll_attempts(now + 499).is_empty());
        assert_eq!(q.poll_timeout(), Some(now + 500));
        // Fails again: 1 s, then 2 s.
        now += 500;
        let a = q.poll_attempts(now);
        assert_eq!((ids(&a), a[0].try_no), (vec!["0:e1".to_owned()], 2));
        q.handle_result(&a[0], Outcome::Retry, now);
        assert!(q.poll_attempts(now + 999).is_empty());
        now += 1_000;
        let a = q.poll_attempts(now);
        q.handle_result(&a[0], Outcome::Delivered, now);
        let a = q.poll_attempts(now);
        assert_eq!((ids(&a), a[0].try_no), (vec!["0:e2".to_owned()], 1));
        q.handle_result(&a[0], Outcome::Delivered, now);
        assert_eq!((q.pending(), q.poll_timeout()), (0, None));
    }

    #[test]
    fn a_refusal_gives_up_and_the_room_moves_on() {
        let mut q = DeliveryQueue::new(1, B, 16);
        q.push(ev(1, "a"), [0]);
        q.push(ev(2, "a"), [0]);
        let a = q.poll_attempts(0);
        assert_eq!(
            q.handle_result(&a[0], Outcome::Rejected, 0),
            Resolution::Done { all: true }
        );
        assert_eq!(ids(&q.poll_attempts(0)), ["0:e2"]);
    }

    #[test]
    fn endpoints_are_independent_and_done_counts_all_of_them() {
        let mut q = DeliveryQueue::new(2, B, 16);
        q.push(ev(1, "a"), [0, 1]);
        q.push(ev(2, "a"), [0, 1]);
        assert_eq!(q.pending(), 4);
        let mut a = q.poll_attempts(0);
        a.sort_by_key(|a| a.endpoint);
        // Endpoint 1 is down; endpoint 0 goes on.
        q.handle_result(&a[1], Outcome::Retry, 0);
        assert_eq!(
            q.handle_result(&a[0], Outcome::Delivered, 0),
            Resolution::Done { all: false }
        );
        assert_eq!(ids(&q.poll_attempts(0)), ["0:e2"]);
        assert_eq!(q.oldest_created_ms(), Some(1_001), "e1 still waits for 1");
        let a = q.poll_attempts(500);
        assert_eq!(ids(&a), ["1:e1"]);
        assert_eq!(
            q.handle_result(&a[0], Outcome::Delivered, 500),
            Resolution::Done { all: true }
        );
    }

    #[test]
    fn in_flight_is_capped_per_endpoint() {
        let mut q = DeliveryQueue::new(1, B, 2);
        for i in 0..5 {
            q.push(ev(i, &format!("r{i}")), [0]);
        }
        let a = q.poll_attempts(0);
        assert_eq!(a.len(), 2);
        assert!(q.poll_attempts(0).is_empty());
        assert_eq!(
            q.poll_timeout(),
            None,
            "full: woken by a result, not a timer"
        );
        q.handle_result(&a[0], Outcome::Delivered, 0);
        assert_eq!(q.poll_attempts(0).len(), 1);
    }

    #[test]
    fn a_dropped_event_makes_its_result_stale() {
        let mut q = DeliveryQueue::new(1, B, 16);
        let e1 = ev(1, "a");
        q.push(e1.clone(), [0]);
        q.push(ev(2, "a"), [0]);
        let a = q.poll_attempts(0);
        q.drop_event(&e1);
        assert_eq!(q.pending(), 1);
        assert_eq!(
            q.handle_result(&a[0], Outcome::Delivered, 0),
            Resolution::Stale
        );
        assert_eq!(ids(&q.poll_attempts(0)), ["0:e2"]);
    }
}
