//! The pre-authentication limit on Allocate requests, per source address.
//!
//! Why: an Allocate without valid credentials costs us HMACs and a 401 challenge that is
//! larger than the request, so a flood of them (possibly with a spoofed UDP source) burns
//! CPU and reflects traffic at whoever the source claims to be. Credentials cannot help
//! here: the request is refused *before* we know who sent it.
//!
//! How: a token bucket per source address (IPv4 address, IPv6 /64: one subscriber holds a
//! whole /64), `rate` per second and `burst` at once. Every Allocate first asks
//! [`AllocateGate::open`] (no HMAC is computed for a refused one); only an Allocate that then
//! fails authentication (no MESSAGE-INTEGRITY, stale nonce, wrong key) takes a token
//! ([`AllocateGate::charge`]). A browser's allocation costs one token per TURN URL (its
//! first, credential-less request); an authenticated Allocate costs none.
//!
//! Memory is bounded: an address whose bucket is full again is forgotten
//! ([`AllocateGate::sweep`]), and beyond [`MAX_TRACKED`] addresses the newcomers share one
//! overflow bucket, so even a flood from many spoofed sources gets `rate` answers per
//! second in total from it. Time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Most source addresses tracked one by one.
pub(crate) const MAX_TRACKED: usize = 65_536;

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Refused since it was last full: a new streak is logged once, not per request.
    refusing: bool,
}

/// What [`AllocateGate::open`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Look at the request.
    Open,
    /// Refuse it unread; `first` for the first refusal since the source was last quiet
    /// long enough to fill its bucket (log that one).
    Closed { first: bool },
}

impl Bucket {
    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }
}

/// Per-source token buckets for unauthenticated Allocate requests.
pub(crate) struct AllocateGate {
    rate: f64,
    burst: f64,
    // SipHash (std): the keys are addresses an attacker chooses.
    by_source: HashMap<IpAddr, Bucket>,
    overflow: Option<Bucket>,
}

/// The address a limit applies to: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(a) => {
            let s = a.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl AllocateGate {
    /// `rate` unauthenticated Allocates per second per source, `burst` at once; rate 0: off.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        AllocateGate {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            by_source: HashMap::new(),
            overflow: None,
        }
    }

    fn bucket(&mut self, ip: IpAddr, now: Instant, create: bool) -> Option<&mut Bucket> {
        let key = source_key(ip);
        let full = Bucket {
            tokens: self.burst,
            at: now,
            refusing: false,
        };
        if self.by_source.contains_key(&key) || (create && self.by_source.len() < MAX_TRACKED) {
            return Some(self.by_source.entry(key).or_insert(full));
        }
        if self.by_source.len() < MAX_TRACKED {
            return None; // Untracked and room left: its bucket is full.
        }
        Some(self.overflow.get_or_insert(full))
    }

    /// May an Allocate from `ip` be looked at now? (Checked before any credential work.)
    pub(crate) fn open(&mut self, now: Instant, ip: IpAddr) -> Gate {
        if self.rate <= 0.0 {
            return Gate::Open;
        }
        let (rate, burst) = (self.rate, self.burst);
        let Some(b) = self.bucket(ip, now, false) else {
            return Gate::Open;
        };
        b.refill(now, rate, burst);
        if b.tokens >= burst {
            b.refusing = false;
        }
        if b.tokens >= 1.0 {
            return Gate::Open;
        }
        Gate::Closed {
            first: !std::mem::replace(&mut b.refusing, true),
        }
    }

    /// An Allocate from `ip` failed authentication: it takes a token.
    pub(crate) fn charge(&mut self, now: Instant, ip: IpAddr) {
        if self.rate <= 0.0 {
            return;
        }
        let (rate, burst) = (self.rate, self.burst);
        if let Some(b) = self.bucket(ip, now, true) {
            b.refill(now, rate, burst);
            b.tokens = (b.tokens - 1.0).max(0.0);
        }
    }

    /// Forget sources whose bucket is full again (called from the server's timer).
    pub(crate) fn sweep(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.by_source.retain(|_, b| {
            b.refill(now, rate, burst);
            b.tokens < burst
        });
        if let Some(b) = &mut self.overflow {
            b.refill(now, rate, burst);
            if b.tokens >= burst {
                self.overflow = None;
            }
        }
    }

    /// Sources tracked one by one.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.by_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_rate_per_source_and_authenticated_requests_are_free() {
        let mut g = AllocateGate::new(10, 5);
        let t = Instant::now();
        let (a, b) = (ip("203.0.113.1"), ip("203.0.113.2"));
        for _ in 0..5 {
            assert_eq!(g.open(t, a), Gate::Open);
            g.charge(t, a);
        }
        assert_eq!(g.open(t, a), Gate::Closed { first: true }, "burst used up");
        assert_eq!(g.open(t, a), Gate::Closed { first: false });
        assert_eq!(
            g.open(t, b),
            Gate::Open,
            "another source has its own bucket"
        );
        // 100 ms: one token back (10/s); taking it and being refused again is the same streak.
        let t1 = t + Duration::from_millis(100);
        assert_eq!(g.open(t1, a), Gate::Open);
        g.charge(t1, a);
        assert_eq!(g.open(t1, a), Gate::Closed { first: false });
        // Quiet until full: a new streak.
        let t2 = t1 + Duration::from_secs(1);
        for _ in 0..5 {
            assert_eq!(g.open(t2, a), Gate::Open);
            g.charge(t2, a);
        }
        assert_eq!(g.open(t2, a), Gate::Closed { first: true });
        // Requests that pass authentication are never charged: an open source stays open.
        for _ in 0..100 {
            assert_eq!(g.open(t, b), Gate::Open);
        }
    }

    #[test]
    fn ipv6_sources_share_their_64_and_mapped_v4_is_v4() {
        let mut g = AllocateGate::new(1, 2);
        let t = Instant::now();
        g.charge(t, ip("2001:db8:1:2::1"));
        g.charge(t, ip("2001:db8:1:2:ffff::9"));
        assert_ne!(g.open(t, ip("2001:db8:1:2::77")), Gate::Open, "same /64");
        assert_eq!(g.open(t, ip("2001:db8:1:3::1")), Gate::Open, "another /64");
        g.charge(t, ip("::ffff:198.51.100.7"));
        g.charge(t, ip("198.51.100.7"));
        assert_ne!(g.open(t, ip("198.51.100.7")), Gate::Open);
    }

    #[test]
    fn full_buckets_are_forgotten_and_many_sources_share_an_overflow_bucket() {
        let mut g = AllocateGate::new(10, 3);
        let t = Instant::now();
        g.charge(t, ip("203.0.113.1"));
        assert_eq!(g.tracked(), 1);
        g.sweep(t + Duration::from_millis(50));
        assert_eq!(g.tracked(), 1, "not yet refilled");
        g.sweep(t + Duration::from_millis(150));
        assert_eq!(g.tracked(), 0, "full again: forgotten");

        // Fill the table, then newcomers share one bucket of `burst`.
        for i in 0..MAX_TRACKED as u32 {
            g.charge(t, IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert_eq!(g.tracked(), MAX_TRACKED);
        let newcomers: Vec<IpAddr> = (0..10u32)
            .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0xc633_6400 + i)))
            .collect();
        let mut admitted = 0;
        for n in &newcomers {
            if g.open(t, *n) == Gate::Open {
                admitted += 1;
                g.charge(t, *n);
            }
        }
        assert_eq!(admitted, 3, "the overflow bucket's burst, shared");
        assert_eq!(g.tracked(), MAX_TRACKED, "no growth past the cap");
    }

    #[test]
    fn rate_zero_is_off() {
        let mut g = AllocateGate::new(0, 1);
        let t = Instant::now();
        for _ in 0..1000 {
            g.charge(t, ip("203.0.113.1"));
            assert_eq!(g.open(t, ip("203.0.113.1")), Gate::Open);
        }
        assert_eq!(g.tracked(), 0);
    }
}
