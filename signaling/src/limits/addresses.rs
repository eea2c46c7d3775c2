//! Connections and joins per client address.
//!
//! Why: a token proves who may join a room, not how often; one machine (or one script)
//! opening thousands of Socket.IO connections costs the node a handshake, a token check
//! and a session each, whatever the tokens say. So every handshake takes a token from
//! its address's connect bucket (`--address-connect-rate` / `--address-connect-burst`),
//! an address holds at most `--max-connections-per-address` live connections, and each
//! `join`/`resume` takes a token from the address's join bucket (`--address-join-rate` /
//! `--address-join-burst`). There is no separate cap on joins in total: a connection joins
//! at most once (`already_joined`), so the connection cap bounds them.
//!
//! The defaults are generous on purpose: learners of one school often share one public
//! address (NAT), and the project's own load tests run a thousand clients from one
//! machine (BENCHMARKS.md). They stop a runaway script, not a class.
//!
//! Address: the TCP peer, or behind a reverse proxy the header it sets
//! (`--trusted-proxy-header`, off by default: a client could otherwise claim any address).
//! IPv6 addresses count per /64 (one subscriber holds a whole /64). Entries of addresses
//! with no live connection and full buckets are swept, so the table holds the addresses
//! that are connected or were busy in the last few seconds. Time is passed in.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::HeaderName;
use axum::http::request::Parts;

use super::bucket::{Bucket, Rate};

/// How often idle entries are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// A pause this long between refusals ends a streak.
const STREAK_GAP: Duration = Duration::from_secs(1);

/// Record a refusal at `now`; true if it starts a streak.
fn streak_starts(last: &mut Option<Instant>, now: Instant) -> bool {
    let first = last.is_none_or(|t| now.saturating_duration_since(t) >= STREAK_GAP);
    *last = Some(now);
    first
}

/// Why a handshake was refused (both are `too_many_connections` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectRefused {
    /// Past the address's connect rate.
    TooFast,
    /// The address already holds `--max-connections-per-address` connections.
    TooMany,
}

/// A refusal, and whether it starts a streak: the address had no refusal for
/// [`STREAK_GAP`] (log that one, not every refusal of a flood).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused<Why> {
    pub(crate) why: Why,
    pub(crate) first: bool,
}

struct Entry {
    connects: Bucket,
    joins: Bucket,
    live: u32,
    /// Last refusals, for logging once per streak.
    connect_refused_at: Option<Instant>,
    join_refused_at: Option<Instant>,
}

struct Table {
    // SipHash (std): the keys are addresses an attacker chooses.
    by_addr: HashMap<IpAddr, Entry>,
    swept: Option<Instant>,
}

/// The per-address limits of one node.
pub(crate) struct AddressLimits {
    connect: Rate,
    join: Rate,
    /// Live connections per address (0: no cap).
    max_connections: u32,
    table: Mutex<Table>,
    refused_too_fast: AtomicU64,
    refused_too_many: AtomicU64,
    refused_joins: AtomicU64,
}

/// The address a limit applies to: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(a) => {
            let s = a.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The client's address for a handshake request: the last address in `trusted_header`
/// when that is configured and present (the one our proxy appended), else the TCP peer.
pub(crate) fn client_ip(parts: &Parts, trusted_header: Option<&HeaderName>) -> Option<IpAddr> {
    if let Some(name) = trusted_header {
        // Several header lines count as one list, in order.
        let last = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|s| !s.is_empty());
        if let Some(ip) = last.and_then(parse_ip) {
            return Some(ip);
        }
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

impl AddressLimits {
    pub(crate) fn new(connect: Rate, max_connections: u32, join: Rate) -> Self {
        AddressLimits {
            connect,
            join,
            max_connections,
            table: Mutex::new(Table {
                by_addr: HashMap::new(),
                swept: None,
            }),
            refused_too_fast: AtomicU64::new(0),
            refused_too_many: AtomicU64::new(0),
            refused_joins: AtomicU64::new(0),
        }
    }

    fn with_entry<R>(&self, ip: IpAddr, now: Instant, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut t = self.table.lock().expect("address limits lock");
        if t.swept
            .is_none_or(|s| now.saturating_duration_since(s) >= SWEEP_EVERY)
        {
            let (connect, join) = (self.connect, self.join);
            t.by_addr.retain(|_, e| {
                e.live > 0 || !e.connects.is_full(connect, now) || !e.joins.is_full(join, now)
            });
            t.swept = Some(now);
        }
        let e = t.by_addr.entry(address_key(ip)).or_insert_with(|| Entry {
            connects: Bucket::full(self.connect, now),
            joins: Bucket::full(self.join, now),
            live: 0,
            connect_refused_at: None,
            join_refused_at: None,
        });
        f(e)
    }

    /// A handshake from `ip`: admitted (and counted as live until [`release`]) or refused.
    ///
    /// [`release`]: AddressLimits::release
    pub(crate) fn connect(&self, ip: IpAddr, now: Instant) -> Result<(), Refused<ConnectRefused>> {
        let (connect, max) = (self.connect, self.max_connections);
        let r = self.with_entry(ip, now, |e| {
            let why = if !connect.off() && !e.connects.take(connect, now) {
                ConnectRefused::TooFast
            } else if max > 0 && e.live >= max {
                ConnectRefused::TooMany
            } else {
                e.live += 1;
                return Ok(());
            };
            let first = streak_starts(&mut e.connect_refused_at, now);
            Err(Refused { why, first })
        });
        if let Err(refused) = r {
            match refused.why {
                ConnectRefused::TooFast => &self.refused_too_fast,
                ConnectRefused::TooMany => &self.refused_too_many,
            }
            .fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// A connection admitted by [`connect`](AddressLimits::connect) is gone (or its
    /// handshake failed later).
    pub(crate) fn release(&self, ip: IpAddr) {
        let mut t = self.table.lock().expect("address limits lock");
        if let Some(e) = t.by_addr.get_mut(&address_key(ip)) {
            e.live = e.live.saturating_sub(1);
        }
    }

    /// A `join` or `resume` from `ip`: within the address's join rate?
    pub(crate) fn join(&self, ip: IpAddr, now: Instant) -> Result<(), Refused<()>> {
        if self.join.off() {
            return Ok(());
        }
        let join = self.join;
        let r = self.with_entry(ip, now, |e| {
            if e.joins.take(join, now) {
                return Ok(());
            }
            let first = streak_starts(&mut e.join_refused_at, now);
            Err(Refused { why: (), first })
        });
        if r.is_err() {
            self.refused_joins.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Handshakes refused: (past the connect rate, past the live-connection cap).
    pub(crate) fn refused_connects(&self) -> (u64, u64) {
        (
            self.refused_too_fast.load(Ordering::Relaxed),
            self.refused_too_many.load(Ordering::Relaxed),
        )
    }

    /// Joins refused for the address's join rate.
    pub(crate) fn refused_joins(&self) -> u64 {
        self.refused_joins.load(Ordering::Relaxed)
    }

    /// Addresses in the table.
    pub(crate) fn tracked(&self) -> usize {
        self.table
            .lock()
            .expect("address limits lock")
            .by_addr
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(rate: f64, burst: u32, max: u32) -> AddressLimits {
        AddressLimits::new(Rate::new(rate, burst), max, Rate::new(2.0, 3))
    }

    #[test]
    fn connect_rate_then_live_cap_per_address_others_unaffected() {
        let l = limits(10.0, 5, 7);
        let t = Instant::now();
        let a = ip("198.51.100.1");
        for _ in 0..5 {
            assert_eq!(l.connect(a, t), Ok(()));
        }
        let refused = |why, first| Err(Refused { why, first });
        assert_eq!(l.connect(a, t), refused(ConnectRefused::TooFast, true));
        assert_eq!(l.connect(a, t), refused(ConnectRefused::TooFast, false));
        assert_eq!(l.connect(ip("198.51.100.2"), t), Ok(()), "another address");
        // A flood at the refill pace: one admitted now and then, still one streak.
        let t_half = t + Duration::from_millis(100);
        assert_eq!(l.connect(a, t_half), Ok(()));
        assert_eq!(
            l.connect(a, t_half),
            refused(ConnectRefused::TooFast, false)
        );
        l.release(a);
        // Over a second later the bucket is full again, but the live cap (7) holds.
        let t1 = t_half + STREAK_GAP;
        assert_eq!(l.connect(a, t1), Ok(()));
        assert_eq!(l.connect(a, t1), Ok(()));
        assert_eq!(
            l.connect(a, t1),
            refused(ConnectRefused::TooMany, true),
            "a second after the last refusal: a new streak"
        );
        assert_eq!(l.connect(a, t1), refused(ConnectRefused::TooMany, false));
        l.release(a);
        assert_eq!(l.connect(a, t1), Ok(()), "a connection left: room for one");
        assert_eq!(l.refused_connects(), (3, 2));
    }

    #[test]
    fn joins_have_their_own_bucket() {
        let l = limits(100.0, 100, 0);
        let t = Instant::now();
        let a = ip("198.51.100.1");
        assert!(l.join(a, t).is_ok() && l.join(a, t).is_ok() && l.join(a, t).is_ok());
        assert_eq!(
            l.join(a, t),
            Err(Refused {
                why: (),
                first: true
            })
        );
        assert!(l.join(ip("198.51.100.9"), t).is_ok());
        assert!(
            l.join(a, t + Duration::from_millis(500)).is_ok(),
            "2/s: one back"
        );
        assert_eq!(l.refused_joins(), 1);
    }

    #[test]
    fn ipv6_counts_per_64_and_idle_entries_are_swept() {
        let l = limits(1.0, 2, 0);
        let t = Instant::now();
        assert_eq!(l.connect(ip("2001:db8:0:1::1"), t), Ok(()));
        assert_eq!(l.connect(ip("2001:db8:0:1::2"), t), Ok(()));
        assert_eq!(
            l.connect(ip("2001:db8:0:1:abcd::3"), t),
            Err(Refused {
                why: ConnectRefused::TooFast,
                first: true
            })
        );
        assert_eq!(l.connect(ip("2001:db8:0:2::1"), t), Ok(()));
        assert_eq!(l.tracked(), 2);
        // Live connections keep their entry; idle full ones go at the next sweep.
        l.release(ip("2001:db8:0:2::1"));
        let later = t + SWEEP_EVERY + Duration::from_secs(5);
        assert_eq!(l.connect(ip("198.51.100.1"), later), Ok(()));
        assert_eq!(l.tracked(), 2, "the busy /64 stays, the idle one went");
    }

    #[test]
    fn zero_turns_each_part_off() {
        let l = AddressLimits::new(Rate::new(0.0, 1), 0, Rate::new(0.0, 1));
        let t = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(l.connect(ip("198.51.100.1"), t), Ok(()));
            assert!(l.join(ip("198.51.100.1"), t).is_ok());
        }
    }

    #[test]
    fn client_ip_from_peer_or_the_trusted_header_only() {
        let req = |xff: Option<&str>| {
            let mut b = axum::http::Request::builder().uri("/socket.io/");
            if let Some(v) = xff {
                b = b.header("x-forwarded-for", v);
            }
            let (mut parts, ()) = b.body(()).unwrap().into_parts();
            parts
                .extensions
                .insert(ConnectInfo::<SocketAddr>("10.0.0.5:5555".parse().unwrap()));
            parts
        };
        let h = HeaderName::from_static("x-forwarded-for");
        let p = req(Some("203.0.113.9, 198.51.100.7"));
        assert_eq!(
            client_ip(&p, None),
            Some(ip("10.0.0.5")),
            "not trusted: peer"
        );
        assert_eq!(
            client_ip(&p, Some(&h)),
            Some(ip("198.51.100.7")),
            "the address our proxy appended (the last)"
        );
        assert_eq!(
            client_ip(&req(Some("[2001:db8::7]:443")), Some(&h)),
            Some(ip("2001:db8::7"))
        );
        assert_eq!(
            client_ip(&req(Some("garbage")), Some(&h)),
            Some(ip("10.0.0.5")),
            "unreadable: the peer"
        );
        assert_eq!(client_ip(&req(None), Some(&h)), Some(ip("10.0.0.5")));
    }
}
