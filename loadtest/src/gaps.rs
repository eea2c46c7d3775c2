//! Video gaps: how long a receiver went without a video packet on one m-line, split at a
//! mark.
//!
//! A network switch (a peer rebinding its socket and restarting ICE, see
//! [`crate::switch`]) is judged by what the others see: the longest stretch without video
//! from the participant that switched. A loss ratio cannot say that (a 2 s freeze and 2 s
//! of scattered drops can lose the same packets), and a fixed "gap longer than X" counter
//! hides how long the freeze was. So each received video m-line keeps the longest
//! interarrival interval before the mark (the normal jitter of this machine, the baseline)
//! and the longest one ending after it (the switch), with how many packets followed that
//! longest gap: a gap that is still open when the report is taken means the media did not
//! come back.
//!
//! Time is an argument everywhere (no clock read here), so the tracker is tested with
//! made-up instants.

use std::time::{Duration, Instant};

/// Interarrival tracking of one received video m-line.
#[derive(Debug, Clone, Default)]
pub struct GapTracker {
    /// Arrival of the last packet.
    last: Option<Instant>,
    /// When the mark was set (None: not yet).
    mark: Option<Instant>,
    /// Longest interval that ended before the mark.
    longest_before: Duration,
    /// Longest interval that ended after the mark, and when it ended.
    longest_after: Option<(Duration, Instant)>,
    /// Packets received after the end of `longest_after`.
    packets_after_longest: u64,
}

/// What [`GapTracker::report`] says.
#[derive(Debug, Clone, PartialEq)]
pub struct GapReport {
    /// Longest interval without a packet before the mark, ms (the baseline).
    pub baseline_ms: f64,
    /// Longest interval without a packet that ended after the mark, or the open interval
    /// since the last packet if that is longer, ms. None before the mark.
    pub gap_ms: Option<f64>,
    /// Where that gap began relative to the mark, ms (negative: before the mark).
    pub gap_start_from_mark_ms: Option<f64>,
    /// Packets received after the gap (0 when the gap is still open: no media came back).
    pub packets_after_gap: u64,
}

impl GapTracker {
    /// A tracker for an m-line whose first packet may arrive after the mark was set
    /// (then the gap is counted from the mark).
    pub fn new(mark: Option<Instant>) -> Self {
        GapTracker {
            mark,
            ..Self::default()
        }
    }

    /// A packet arrived at `at`.
    pub fn packet(&mut self, at: Instant) {
        let since = self.last.or(self.mark);
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
        let Some(since) = since else { return };
        let d = at.saturating_duration_since(since);
        match self.mark {
            Some(m) if at >= m => {
                if self.longest_after.is_none_or(|(l, _)| d > l) {
                    self.longest_after = Some((d, at));
                    self.packets_after_longest = 0;
                } else {
                    self.packets_after_longest += 1;
                }
            }
            _ => self.longest_before = self.longest_before.max(d),
        }
    }

    /// Set the mark at `at` (the switch). A second mark starts a new "after" period and
    /// folds the previous one into the baseline.
    pub fn mark(&mut self, at: Instant) {
        if let Some((l, _)) = self.longest_after.take() {
            self.longest_before = self.longest_before.max(l);
        }
        self.packets_after_longest = 0;
        self.mark = Some(at);
    }

    /// The figures as of `now`.
    pub fn report(&self, now: Instant) -> GapReport {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let baseline_ms = ms(self.longest_before);
        let Some(mark) = self.mark else {
            return GapReport {
                baseline_ms,
                gap_ms: None,
                gap_start_from_mark_ms: None,
                packets_after_gap: 0,
            };
        };
        let since = |start: Instant| {
            if start >= mark {
                ms(start - mark)
            } else {
                -ms(mark - start)
            }
        };
        let open_from = self.last.unwrap_or(mark);
        let open = now.saturating_duration_since(open_from);
        match self.longest_after {
            Some((d, end)) if d >= open => GapReport {
                baseline_ms,
                gap_ms: Some(ms(d)),
                gap_start_from_mark_ms: Some(since(end - d)),
                packets_after_gap: self.packets_after_longest,
            },
            _ => GapReport {
                baseline_ms,
                gap_ms: Some(ms(open)),
                gap_start_from_mark_ms: Some(since(open_from)),
                packets_after_gap: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_gap_across_the_mark_is_measured_and_media_resumed() {
        let t0 = Instant::now();
        let mut g = GapTracker::new(None);
        for t in (0..1000).step_by(33) {
            g.packet(at(t0, t));
        }
        // A 70 ms hiccup before the mark is the baseline.
        g.packet(at(t0, 1060));
        g.mark(at(t0, 1070));
        // Nothing from 1060 to 1500, then packets again.
        for t in (1500..2000).step_by(33) {
            g.packet(at(t0, t));
        }
        let r = g.report(at(t0, 2000));
        assert!((r.baseline_ms - 70.0).abs() < 1e-6, "{r:?}");
        assert_eq!(r.gap_ms, Some(440.0));
        assert_eq!(r.gap_start_from_mark_ms, Some(-10.0));
        assert_eq!(r.packets_after_gap, 15);
    }

    #[test]
    fn an_open_gap_means_media_did_not_come_back() {
        let t0 = Instant::now();
        let mut g = GapTracker::new(None);
        g.packet(at(t0, 0));
        g.mark(at(t0, 10));
        g.packet(at(t0, 40));
        let r = g.report(at(t0, 3040));
        assert_eq!(r.gap_ms, Some(3000.0));
        assert_eq!(r.gap_start_from_mark_ms, Some(30.0));
        assert_eq!(r.packets_after_gap, 0);
    }

    #[test]
    fn a_stream_first_seen_after_the_mark_counts_from_the_mark() {
        let t0 = Instant::now();
        let mut g = GapTracker::new(Some(at(t0, 100)));
        g.packet(at(t0, 400));
        g.packet(at(t0, 420));
        let r = g.report(at(t0, 430));
        assert_eq!(r.gap_ms, Some(300.0));
        assert_eq!(r.packets_after_gap, 1);
        assert_eq!(r.baseline_ms, 0.0);
    }

    #[test]
    fn no_mark_no_gap() {
        let t0 = Instant::now();
        let mut g = GapTracker::new(None);
        g.packet(at(t0, 0));
        g.packet(at(t0, 50));
        let r = g.report(at(t0, 60));
        assert_eq!(r.gap_ms, None);
        assert_eq!(r.baseline_ms, 50.0);
    }
}
