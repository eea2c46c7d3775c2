//! Request rate limit per connection: a token bucket over every event a socket sends
//! (`--request-rate` per second, `--request-burst` at once). A request beyond it is refused
//! with `rate_limited`; a connection that goes on after `--request-burst` refusals in a row
//! is cut. Why per connection and over all events: one socket flooding any event (mute,
//! ICE, garbage) costs the node locks and work, and the only event with its own limit was
//! `focus`. Time is passed in (tests use a fake clock).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use socketioxide::socket::Sid;

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limit.
    Admit,
    /// Refused; `first` for the first refusal of a streak (log it once).
    Limited { first: bool },
    /// Refused, and the connection kept going: disconnect it.
    Cut,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Refusals in a row.
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
            refused: 0,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.refused = 0;
            return Verdict::Admit;
        }
        b.refused += 1;
        self.limited.fetch_add(1, Ordering::Relaxed);
        if f64::from(b.refused) > self.burst {
            self.cut.fetch_add(1, Ordering::Relaxed);
            buckets.remove(&sid);
            return Verdict::Cut;
        }
        Verdict::Limited {
            first: b.refused == 1,
        }
    }

    /// The connection is gone.
    pub(crate) fn forget(&self, sid: Sid) {
        self.buckets.lock().expect("limits lock").remove(&sid);
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
    use std::time::Duration;

    #[test]
    fn burst_then_rate_then_cut_and_other_sockets_unaffected() {
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
        // Going on: refused, then cut after `burst` refusals in a row.
        let t2 = t + Duration::from_millis(100);
        let verdicts: Vec<Verdict> = (0..6).map(|_| l.check(a, t2)).collect();
        assert_eq!(verdicts.last(), Some(&Verdict::Cut));
        assert_eq!(l.cut(), 1);
        assert!(l.limited() >= 8);
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
