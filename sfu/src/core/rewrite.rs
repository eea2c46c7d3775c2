//! Sequence-number and timestamp rewriting for one consumer.
//!
//! A subscriber's m-line has one outgoing SSRC for its whole life (str0m allocates it), but
//! what feeds it changes: the publisher re-publishes (new SSRC, new random sequence and
//! timestamp bases) or the consumer is switched to another source. The receiver must
//! still see one continuous stream — sequence numbers that go up by one, timestamps that
//! advance with wall time — or its jitter buffer and decoder stall. The `Rewriter` keeps
//! the output continuous across such switches: on a new source it re-bases so the first
//! packet follows the last one sent, with a timestamp gap equal to the wall-clock gap.
//!
//! Within one source, packets the consumer drops on purpose (SVC layers above its target)
//! are [`Rewriter::skip`]ped: later packets move down to close the gap, so the receiver
//! sees no loss to NACK. Only in-order drops are closed; a dropped packet that arrives
//! after a later one was sent leaves the hole it already was.

use std::collections::VecDeque;
use std::time::Instant;

/// Largest distance (in packets) an input may lag behind the newest one and still be
/// forwarded (a late or retransmitted packet). Older ones are dropped.
const MAX_LATE: u64 = 1_000;

/// Per-consumer output state.
#[derive(Debug)]
pub struct Rewriter {
    source: Option<Source>,
    /// Last output extended sequence number and timestamp, and when it was sent.
    last_out: Option<(u64, u32, Instant)>,
    start_seq: u64,
}

#[derive(Debug)]
struct Source {
    ssrc: u32,
    /// Input extended seq that maps to `base_out_seq`.
    base_in_seq: u64,
    base_out_seq: u64,
    base_in_ts: u32,
    base_out_ts: u32,
    highest_in_seq: u64,
    /// Input seqs skipped within `MAX_LATE` of the newest, ascending.
    skipped: VecDeque<u64>,
    /// All skipped since `base_in_seq` (those in `skipped` included).
    skipped_total: u64,
}

/// One rewritten packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Output extended sequence number.
    pub seq: u64,
    /// Output RTP timestamp.
    pub ts: u32,
}

impl Rewriter {
    /// A rewriter whose first output sequence number is `start_seq` (kept below 2^15 so the
    /// SRTP rollover counter starts at zero, which receivers assume).
    pub fn new(start_seq: u16) -> Self {
        Rewriter {
            source: None,
            last_out: None,
            start_seq: u64::from(start_seq & 0x7fff),
        }
    }

    /// Forget the current source: the next packet, whatever its SSRC, starts a new
    /// segment that continues the output. Call when the consumer is re-attached.
    pub fn switch_source(&mut self) {
        self.source = None;
    }

    /// Input packet `seq` of `ssrc` is dropped on purpose: close its gap (see the module
    /// docs). Ignored before the source's first forwarded packet, for another source, and
    /// for a packet older than the newest seen.
    pub fn skip(&mut self, ssrc: u32, seq: u64) {
        let Some(src) = self.source.as_mut().filter(|s| s.ssrc == ssrc) else {
            return;
        };
        if seq <= src.highest_in_seq {
            return;
        }
        src.highest_in_seq = seq;
        src.skipped.push_back(seq);
        src.skipped_total += 1;
        while src.skipped.front().is_some_and(|s| s + MAX_LATE < seq) {
            src.skipped.pop_front();
        }
    }

    /// Rewrite one input packet (`seq` is str0m's extended sequence number for the input
    /// stream). Returns `None` for packets too old to forward.
    pub fn rewrite(
        &mut self,
        ssrc: u32,
        seq: u64,
        ts: u32,
        clock_rate: u32,
        now: Instant,
    ) -> Option<Rewritten> {
        let same_source = self.source.as_ref().is_some_and(|s| s.ssrc == ssrc);
        if !same_source {
            let (base_out_seq, base_out_ts) = match self.last_out {
                None => (self.start_seq, ts),
                Some((out_seq, out_ts, at)) => {
                    let gap = now.saturating_duration_since(at);
                    let ticks = (gap.as_micros() as u64 * u64::from(clock_rate) / 1_000_000).max(1);
                    (out_seq + 1, out_ts.wrapping_add(ticks as u32))
                }
            };
            self.source = Some(Source {
                ssrc,
                base_in_seq: seq,
                base_out_seq,
                base_in_ts: ts,
                base_out_ts,
                highest_in_seq: seq,
                skipped: VecDeque::new(),
                skipped_total: 0,
            });
        }
        // Invariant: set just above when absent.
        let src = self.source.as_mut().expect("source set");
        if seq < src.base_in_seq || seq + MAX_LATE < src.highest_in_seq {
            return None;
        }
        src.highest_in_seq = src.highest_in_seq.max(seq);
        // Skipped packets before this one (a late packet: fewer than the total).
        let later = src.skipped.iter().rev().take_while(|s| **s > seq).count() as u64;
        let out_seq = src.base_out_seq + (seq - src.base_in_seq) - (src.skipped_total - later);
        let out_ts = src
            .base_out_ts
            .wrapping_add(ts.wrapping_sub(src.base_in_ts));
        let newest = self.last_out.is_none_or(|(s, _, _)| out_seq > s);
        if newest {
            self.last_out = Some((out_seq, out_ts, now));
        }
        Some(Rewritten {
            seq: out_seq,
            ts: out_ts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn continuous_across_republish() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(100);
        // First source: seq 5000.., ts 90000 + 3000 per packet (one per 33 ms frame).
        for i in 0..10u64 {
            let o = r
                .rewrite(
                    0xAAAA,
                    5000 + i,
                    90_000 + 3000 * i as u32,
                    90_000,
                    t0 + Duration::from_millis(33 * i),
                )
                .unwrap();
            assert_eq!(o.seq, 100 + i);
            assert_eq!(o.ts, 90_000 + 3000 * i as u32);
        }
        // Re-publish 1 s later: brand new SSRC with unrelated bases.
        let t1 = t0 + Duration::from_millis(33 * 9 + 1000);
        let o = r.rewrite(0xBBBB, 42, 7, 90_000, t1).unwrap();
        assert_eq!(o.seq, 110, "sequence continues by one");
        assert_eq!(
            o.ts,
            90_000 + 3000 * 9 + 90_000,
            "timestamp advances by the wall-clock gap"
        );
        let o = r.rewrite(0xBBBB, 43, 3007, 90_000, t1).unwrap();
        assert_eq!((o.seq, o.ts), (111, 90_000 + 3000 * 10 + 90_000));
    }

    #[test]
    fn late_and_reordered_packets() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(0);
        r.rewrite(1, 10, 0, 48_000, t0).unwrap();
        r.rewrite(1, 12, 960 * 2, 48_000, t0).unwrap();
        // Reordered 11 still maps in place.
        assert_eq!(r.rewrite(1, 11, 960, 48_000, t0).unwrap().seq, 1);
        // Older than the segment start: dropped.
        assert_eq!(r.rewrite(1, 9, 0, 48_000, t0), None);
        // Far too old: dropped.
        r.rewrite(1, 5_000, 0, 48_000, t0).unwrap();
        assert_eq!(r.rewrite(1, 3_000, 0, 48_000, t0), None);
    }

    #[test]
    fn timestamps_wrap() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(1);
        let a = r.rewrite(1, 1, u32::MAX - 10, 90_000, t0).unwrap();
        let b = r.rewrite(1, 2, 20, 90_000, t0).unwrap();
        assert_eq!(b.ts.wrapping_sub(a.ts), 31);
    }

    #[test]
    fn explicit_switch_rebases_even_with_same_ssrc() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(0);
        r.rewrite(1, 100, 0, 90_000, t0).unwrap();
        r.switch_source();
        let o = r
            .rewrite(1, 7, 0, 90_000, t0 + Duration::from_millis(10))
            .unwrap();
        assert_eq!(o.seq, 1);
        assert_eq!(o.ts, 900);
    }

    #[test]
    fn skipped_packets_leave_no_hole() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(10);
        let ssrc = 7;
        // Before anything was forwarded a skip is nothing to close.
        r.skip(ssrc, 99);
        assert_eq!(r.rewrite(ssrc, 100, 0, 90_000, t0).unwrap().seq, 10);
        r.skip(ssrc, 101);
        r.skip(ssrc, 102);
        assert_eq!(r.rewrite(ssrc, 103, 0, 90_000, t0).unwrap().seq, 11);
        r.skip(ssrc, 104);
        assert_eq!(
            r.rewrite(ssrc, 106, 0, 90_000, t0).unwrap().seq,
            13,
            "105 lost: a hole"
        );
        // 105 arrives late: it takes the place it would have had.
        assert_eq!(r.rewrite(ssrc, 105, 0, 90_000, t0).unwrap().seq, 12);
        // A late skip (older than the newest) changes nothing.
        r.skip(ssrc, 104);
        assert_eq!(r.rewrite(ssrc, 107, 0, 90_000, t0).unwrap().seq, 14);
        // Another source's skip is ignored.
        r.skip(8, 108);
        assert_eq!(r.rewrite(ssrc, 108, 0, 90_000, t0).unwrap().seq, 15);
        // Many skips: the history stays bounded, the count exact.
        for s in 109..5_109 {
            r.skip(ssrc, s);
        }
        assert_eq!(r.rewrite(ssrc, 5_109, 0, 90_000, t0).unwrap().seq, 16);
    }
}
