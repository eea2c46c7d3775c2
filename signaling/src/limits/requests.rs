//! Request rate limit per connection: a token bucket over every event a socket sends
//! (`--request-rate` per second, `--request-burst` at once). A request beyond it is refused
//! with `rate_limited`. A refusal opens a *streak* that lasts while refusals keep coming
//! (less than [`STREAK_GAP`] apart); a connection whose streak has gone on for
//! [`CUT_AFTER`] with more than `--request-burst` refusals is cut. Why a duration and not a
//! count: a client that fires one big burst gets its `rate_limited` answers (a cut closes
//! the WebSocket at once and takes the queued answers with it), and one that keeps
//! flooding is cut whatever its pace, even when the refill admits a request now and then.
//! Why per connection and over all events: one socket flooding any event (mute, ICE,
//! garbage) costs the node locks and work, and the only event with its own limit was
//! `focus`. Time is passed in (tests use a fake clock).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long refusals must go on before the connection is cut.
pub(crate) const CUT_AFTER: Duration = Duration::from_secs(1);
/// A pause this long between refusals ends a streak.
pub(crate) const STREAK_GAP: Duration = Duration::from_secs(1);

use socketioxide::socket::Sid;

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limit.
    Admit,
    /// Refused; `first` for the first refusal of a streak (log it once).
    Limited { first: bool },
    /// Refused, and the connection kept going for [`CUT_AFTER`]: disconnect it.
    Cut,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    /// The current streak of refusals, if any.
    streak: Option<Streak>,
    /// Already cut: requests still queued on the socket before the disconnect lands are
    /// refused without counting (or logging) another cut. Cleared by `forget`.
    cut: bool,
}

struct Streak {
    start: Instant,
    last: Instant,
    refused: u32,
}

/// The limiter of one node.
pub(crate) struct RequestLimits {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<Sid, Bucket>>,
    limited: AtomicU64,
    cut: AtomicU64,
}

impl RequestLimits {
    /// `rate` requests per second, `burst` at once; a rate of 0 turns the limit off.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        RequestLimits {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
            limited: AtomicU64::new(0),
            cut: AtomicU64::new(0),
        }
    }

    /// One request from `sid` at `now`.
    pub(crate) fn check(&self, sid: Sid, now: Instant) -> Verdict {
        if self.rate <= 0.0 {
            return Verdict::Admit;
        }
        let mut buckets = self.buckets.lock().expect("limits lock");
        let b = buckets.entry(sid).or_insert(Bucket {
            tokens: self.burst,
            at: now,
            streak: None,
            cut: false,
        });
        if b.cut {
            self.limited.fetch_add(1, Ordering::Relaxed);
            return Verdict::Limited { first: false };
        }
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Verdict::Admit;
        }
        self.limited.fetch_add(1, Ordering::Relaxed);
        let streak = match &mut b.streak {
            Some(s) if now.saturating_duration_since(s.last) < STREAK_GAP => s,
            slot => slot.insert(Streak {
                start: now,
                last: now,
                refused: 0,
            }),
        };
        streak.refused += 1;
        streak.last = now;
        if f64::from(streak.refused) > self.burst
            && now.saturating_duration_since(streak.start) >= CUT_AFTER
        {
            self.cut.fetch_add(1, Ordering::Relaxed);
            b.cut = true;
            return Verdict::Cut;
        }
        Verdict::Limited {
            first: streak.refused == 1,
        }
    }

    /// The connection is gone.
    pub(crate) fn forget(&self, sid: Sid) {
        self.buckets.lock().expect("limits lock").remove(&sid);
    }

    /// Connections with a live bucket.
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.lock().expect("limits lock").len()
    }

    /// Requests refused so far.
    pub(crate) fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }

    /// Connections cut so far.
    pub(crate) fn cut(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_and_other_sockets_unaffected() {
        let l = RequestLimits::new(10, 5);
        let (a, b) = (Sid::new(), Sid::new());
        let t = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.check(a, t), Verdict::Admit);
        }
        assert_eq!(l.check(a, t), Verdict::Limited { first: true });
        assert_eq!(l.check(a, t), Verdict::Limited { first: false });
        // Another socket has its own bucket.
        assert_eq!(l.check(b, t), Verdict::Admit);
        // 100 ms later one token came back (10/s).
        assert_eq!(l.check(a, t + Duration::from_millis(100)), Verdict::Admit);
        assert_eq!(l.limited(), 2);
    }

    #[test]
    fn one_big_burst_is_refused_but_not_cut() {
        let l = RequestLimits::new(10, 5);
        let a = Sid::new();
        let t = Instant::now();
        // 3 000 at once: 5 admitted, the rest refused, nobody cut (the streak is 0 s long).
        let cut = (0..3000).filter(|_| l.check(a, t) == Verdict::Cut).count();
        assert_eq!(cut, 0);
        assert_eq!(l.limited(), 2995);
        // After a pause the client is admitted again and a new streak logs again.
        let later = t + STREAK_GAP + Duration::from_millis(500);
        for _ in 0..5 {
            assert_eq!(l.check(a, later), Verdict::Admit);
        }
        assert_eq!(l.check(a, later), Verdict::Limited { first: true });
    }

    #[test]
    fn a_flood_that_goes_on_is_cut_once_even_when_some_requests_pass() {
        let l = RequestLimits::new(10, 5);
        let a = Sid::new();
        let t = Instant::now();
        // 200 requests/s (20 x the rate): every 100 ms one passes, the streak goes on.
        let mut verdicts = Vec::new();
        for ms in (0..2000u64).step_by(5) {
            verdicts.push((ms, l.check(a, t + Duration::from_millis(ms))));
        }
        let admitted_late = verdicts
            .iter()
            .filter(|(ms, v)| *ms > 100 && *v == Verdict::Admit)
            .count();
        assert!(admitted_late > 0, "the refill admits some of the flood");
        let cuts: Vec<u64> = verdicts
            .iter()
            .filter(|(_, v)| *v == Verdict::Cut)
            .map(|(ms, _)| *ms)
            .collect();
        assert_eq!(cuts.len(), 1, "cut once: {cuts:?}");
        assert!(
            cuts[0] >= CUT_AFTER.as_millis() as u64,
            "not before {CUT_AFTER:?}"
        );
        assert!(
            cuts[0] < 1200,
            "about {CUT_AFTER:?} after the first refusal: {}",
            cuts[0]
        );
        assert_eq!(l.cut(), 1);
        // After the cut, requests still queued are refused, never admitted or cut again.
        let after = t + Duration::from_secs(30);
        assert_eq!(l.check(a, after), Verdict::Limited { first: false });
        assert_eq!(l.cut(), 1);
        // Once the connection is gone its state goes with it.
        l.forget(a);
        assert_eq!(l.check(a, after), Verdict::Admit);
    }

    #[test]
    fn rate_zero_is_off() {
        let l = RequestLimits::new(0, 1);
        let s = Sid::new();
        let t = Instant::now();
        for _ in 0..1000 {
            assert_eq!(l.check(s, t), Verdict::Admit);
        }
    }
}
