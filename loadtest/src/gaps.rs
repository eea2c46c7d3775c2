//! Video gaps: how long a receiver went without a video packet on one m-line, around a
//! mark.
//!
//! A network switch (a peer rebinding its socket and restarting ICE, see the `switch`
//! scenario) is judged by what the others see: how long the video from the participant
//! that switched froze. A loss ratio cannot say that (a 2 s freeze and 2 s of scattered
//! drops can lose the same packets), and a fixed "gap longer than X" counter hides how
//! long the freeze was. So each received video m-line keeps:
//!
//! - the baseline: the longest interarrival interval before the mark (this machine's
//!   normal jitter and stalls);
//! - the switch gap: the longest interval that ends after the mark and *begins* no later
//!   than [`SWITCH_GAP_START_WITHIN`] after it. The old path dies at the mark, so the
//!   freeze it causes begins with the last packet that made it through, at most a little
//!   after the mark; a stall that begins seconds later (a busy machine descheduling the
//!   generator) is not the switch's doing and must not be charged to it;
//! - how many packets followed the switch gap (none: it is still open, media never came
//!   back);
//! - the longest interval anywhere after the mark, so a later stall is visible too.
//!
//! Time is an argument everywhere (no clock read here), so the tracker is tested with
//! made-up instants.

use std::time::{Duration, Instant};

/// A gap that begins later than this after the mark is not the switch's.
pub const SWITCH_GAP_START_WITHIN: Duration = Duration::from_secs(1);

/// Interarrival tracking of one received video m-line.
#[derive(Debug, Clone, Default)]
pub struct GapTracker {
    /// Arrival of the last packet.
    last: Option<Instant>,
    /// When the mark was set (None: not yet).
    mark: Option<Instant>,
    /// Longest interval that ended before the mark.
    longest_before: Duration,
    /// Longest interval that ended after the mark.
    longest_after: Duration,
    /// The switch gap so far, and when it ended.
    switch_gap: Option<(Duration, Instant)>,
    /// Packets received after the end of `switch_gap`.
    packets_after_switch_gap: u64,
}

/// What [`GapTracker::report`] says.
#[derive(Debug, Clone, PartialEq)]
pub struct GapReport {
    /// Longest interval without a packet before the mark, ms (the baseline).
    pub baseline_ms: f64,
    /// The switch gap, ms (still open: up to the report); None before the mark.
    pub gap_ms: Option<f64>,
    /// Where that gap began relative to the mark, ms (negative: before the mark).
    pub gap_start_from_mark_ms: Option<f64>,
    /// Packets received after the switch gap (0 when it is still open).
    pub packets_after_gap: u64,
    /// Longest interval (or open one) anywhere after the mark, ms.
    pub longest_after_mark_ms: Option<f64>,
}

impl GapTracker {
    /// A tracker for an m-line whose first packet may arrive after the mark was set
    /// (then its first interval is counted from the mark).
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
                self.longest_after = self.longest_after.max(d);
                let switch_made = since <= m + SWITCH_GAP_START_WITHIN;
                if switch_made && self.switch_gap.is_none_or(|(l, _)| d > l) {
                    self.switch_gap = Some((d, at));
                    self.packets_after_switch_gap = 0;
                } else if self.switch_gap.is_some() {
                    self.packets_after_switch_gap += 1;
                }
            }
            _ => self.longest_before = self.longest_before.max(d),
        }
    }

    /// Set the mark at `at` (the switch). A second mark starts over and folds what came
    /// after the first into the baseline.
    pub fn mark(&mut self, at: Instant) {
        self.longest_before = self.longest_before.max(self.longest_after);
        self.longest_after = Duration::ZERO;
        self.switch_gap = None;
        self.packets_after_switch_gap = 0;
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
                longest_after_mark_ms: None,
            };
        };
        let from_mark = |start: Instant| {
            if start >= mark {
                ms(start - mark)
            } else {
                -ms(mark - start)
            }
        };
        let open_from = self.last.unwrap_or(mark);
        let open = now.saturating_duration_since(open_from);
        let longest_after_mark_ms = Some(ms(self.longest_after.max(open)));
        let open_is_switch_gap = open_from <= mark + SWITCH_GAP_START_WITHIN
            && self.switch_gap.is_none_or(|(d, _)| open > d);
        match self.switch_gap {
            Some((d, end)) if !open_is_switch_gap => GapReport {
                baseline_ms,
                gap_ms: Some(ms(d)),
                gap_start_from_mark_ms: Some(from_mark(end - d)),
                packets_after_gap: self.packets_after_switch_gap,
                longest_after_mark_ms,
            },
            _ => GapReport {
                baseline_ms,
                gap_ms: Some(ms(open)),
                gap_start_from_mark_ms: Some(from_mark(open_from)),
                packets_after_gap: 0,
                longest_after_mark_ms,
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
    fn a_later_stall_is_not_the_switch_gap() {
        let t0 = Instant::now();
        let mut g = GapTracker::new(None);
        g.packet(at(t0, 0));
        g.mark(at(t0, 10));
        // The switch: 100 ms without packets, then steady.
        for t in (100..3000).step_by(33) {
            g.packet(at(t0, t));
        }
        // A 400 ms stall of the machine two seconds later.
        for t in (3400..4000).step_by(33) {
            g.packet(at(t0, t));
        }
        let r = g.report(at(t0, 4000));
        assert_eq!(r.gap_ms, Some(100.0));
        assert_eq!(r.gap_start_from_mark_ms, Some(-10.0));
        assert_eq!(r.longest_after_mark_ms, Some(429.0));
        assert_eq!(r.packets_after_gap, 87 + 19);
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
