//! The token bucket the per-address and per-identity limits share: `rate` tokens per
//! second up to `burst`, time passed in.

use std::time::Instant;

/// How fast tokens come back and how many a bucket holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    /// Tokens per second (0: the limit is off).
    pub(crate) per_sec: f64,
    /// Most tokens held.
    pub(crate) burst: f64,
}

impl Rate {
    pub(crate) fn new(per_sec: f64, burst: u32) -> Self {
        Rate {
            per_sec,
            burst: f64::from(burst.max(1)),
        }
    }

    pub(crate) fn off(&self) -> bool {
        self.per_sec <= 0.0
    }
}

/// One bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn full(rate: Rate, now: Instant) -> Self {
        Bucket {
            tokens: rate.burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.at = now;
    }

    /// Take one token if there is one.
    pub(crate) fn take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Full again at `now` (nothing to remember about it).
    pub(crate) fn is_full(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= rate.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let r = Rate::new(10.0, 3);
        let t = Instant::now();
        let mut b = Bucket::full(r, t);
        assert!(b.take(r, t) && b.take(r, t) && b.take(r, t));
        assert!(!b.take(r, t));
        assert!(!b.is_full(r, t + Duration::from_millis(200)));
        assert!(b.take(r, t + Duration::from_millis(200)));
        assert!(b.is_full(r, t + Duration::from_secs(1)));
    }
}
