//! How often one identity may replace its own live session.
//!
//! A second `join` with the same identity (token `sub`) in the same room replaces the first
//! session (the old socket is disconnected, the room sees it leave with reason `replaced`): a
//! learner who opens the room in a new tab, or whose old tab hangs, gets in at once. Kept.
//! What is limited is how often: two tabs (or two machines sharing a token) that keep
//! re-joining would throw each other out forever, each round a departure and a join for
//! the whole room to see. Each replacement takes a token from the identity's bucket
//! (`--identity-replacements-per-minute` N: N at once, N per minute); past it the new
//! `join` is refused with `rate_limited` and the live session stays. A first join (no
//! live session) costs nothing. Full buckets are swept. Time is passed in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::bucket::{Bucket, Rate};

const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Buckets by (room, identity), and when idle ones were last swept.
struct Table {
    // SipHash (std): identities come from tokens, but keep attacker-proof hashing anyway.
    buckets: HashMap<(String, String), Bucket>,
    swept: Option<Instant>,
}

/// Replacement budget per (room, identity).
pub(crate) struct ReplacementLimits {
    rate: Rate,
    table: Mutex<Table>,
    refused: AtomicU64,
}

impl ReplacementLimits {
    /// `per_minute` replacements per identity and room (at once and per minute); 0: off.
    pub(crate) fn new(per_minute: u32) -> Self {
        ReplacementLimits {
            rate: Rate::new(f64::from(per_minute) / 60.0, per_minute),
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                swept: None,
            }),
            refused: AtomicU64::new(0),
        }
    }

    /// May `identity` replace its live session in `room` now?
    pub(crate) fn replace(&self, room: &str, identity: &str, now: Instant) -> bool {
        if self.rate.off() {
            return true;
        }
        let rate = self.rate;
        let mut t = self.table.lock().expect("replacement limits lock");
        if t.swept
            .is_none_or(|s| now.saturating_duration_since(s) >= SWEEP_EVERY)
        {
            t.buckets.retain(|_, b| !b.is_full(rate, now));
            t.swept = Some(now);
        }
        let ok = t
            .buckets
            .entry((room.to_owned(), identity.to_owned()))
            .or_insert_with(|| Bucket::full(rate, now))
            .take(rate, now);
        if !ok {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Joins refused for replacing too often.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_per_minute_per_identity_and_room() {
        let l = ReplacementLimits::new(3);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(l.replace("r1", "ann", t));
        }
        assert!(!l.replace("r1", "ann", t));
        assert!(l.replace("r1", "bob", t), "another identity");
        assert!(l.replace("r2", "ann", t), "another room");
        assert!(!l.replace("r1", "ann", t + Duration::from_secs(19)));
        assert!(
            l.replace("r1", "ann", t + Duration::from_secs(21)),
            "3/min: one back after 20 s"
        );
        assert_eq!(l.refused(), 2);
        // Swept once full again.
        assert!(l.replace("r9", "x", t + Duration::from_secs(200)));
        assert_eq!(l.table.lock().unwrap().buckets.len(), 1);
    }

    #[test]
    fn zero_is_off() {
        let l = ReplacementLimits::new(0);
        let t = Instant::now();
        assert!((0..1000).all(|_| l.replace("r", "ann", t)));
    }
}
