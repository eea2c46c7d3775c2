//! Scalable video (VP9 and AV1 SVC): one RTP stream carries several spatial layers
//! (resolutions) and temporal layers (frame rates); a consumer forwards only those at or
//! below its target. Where a packet's layers come from depends on the codec: VP9's payload
//! descriptor (`vp9.rs`), AV1's dependency descriptor header extension (`av1_dd.rs`, with
//! the per-stream template structure in `av1_svc.rs`); both become a [`LayerFrame`], and
//! everything below is the same for both. The simulcast counterpart is `simulcast.rs`:
//! there each layer is its own stream.
//!
//! - [`SvcLayers`] (per producer): bitrate per (spatial, temporal) layer, and the *ladder*
//!   the stream allocator picks from, lowest first: the temporal layers of spatial layer 0
//!   (fewer frames of the smallest picture before no video at all), then each further
//!   spatial layer at the full frame rate. A step's bitrate is everything it forwards (all
//!   layers at or below it), so the allocator compares like with like.
//! - [`SvcSelection`] (per consumer): what it forwards now. Changes take effect at a picture
//!   start: down at any picture, temporal up at a switching point (U bit) or key frame,
//!   spatial up only where the upper layer's frame is not inter-picture predicted (VP9's
//!   P = 0, or an AV1 frame whose references all lie in the same picture: it needs only
//!   the lower layer of the same picture), which for Chromium's `L3T3_KEY` means a key
//!   picture. The last packet of the highest forwarded spatial layer
//!   gets the marker bit: for the subscriber that is the end of the picture.
//!
//! Dropped packets leave no hole in the consumer's sequence numbers (`Rewriter::skip`), or
//! the subscriber would NACK them.

use std::time::{Duration, Instant};

use super::simulcast::{LAYER_TIMEOUT, Quality};

/// Layer indices are 3 bits.
const MAX: usize = 8;
/// Bitrate window.
const WINDOW: Duration = Duration::from_millis(500);

/// (spatial, temporal) layer indices.
pub type SvcLayer = (u8, u8);

/// Per-producer SVC layer statistics.
#[derive(Debug, Default)]
pub struct SvcLayers {
    window_bytes: [[u64; MAX]; MAX],
    window_start: Option<Instant>,
    /// Bits per second per [spatial][temporal] over the last closed window.
    bps: [[u64; MAX]; MAX],
    /// When each spatial / temporal layer last sent.
    spatial_seen: [Option<Instant>; MAX],
    temporal_seen: [Option<Instant>; MAX],
    /// The allocator's ladder (recomputed when a window closes or a layer appears).
    ladder: Vec<SvcLayer>,
}

impl SvcLayers {
    /// Account one packet of layer (`sid`, `tid`).
    pub fn observe(&mut self, sid: u8, tid: u8, bytes: usize, now: Instant) {
        let (s, t) = (usize::from(sid) % MAX, usize::from(tid) % MAX);
        let new_layer = self.spatial_seen[s].is_none() || self.temporal_seen[t].is_none();
        self.spatial_seen[s] = Some(now);
        self.temporal_seen[t] = Some(now);
        self.window_bytes[s][t] += bytes as u64;
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= WINDOW {
            let us = (elapsed.as_micros() as u64).max(1);
            for (rates, bytes) in self.bps.iter_mut().zip(self.window_bytes.iter_mut()) {
                for (r, b) in rates.iter_mut().zip(bytes.iter_mut()) {
                    *r = *b * 8 * 1_000_000 / us;
                    *b = 0;
                }
            }
            self.window_start = Some(now);
            self.rebuild(now);
        } else if new_layer {
            self.rebuild(now);
        }
    }

    /// A scalability structure (sent with key pictures) declares `n` spatial layers: they
    /// count as flowing from now, so a consumer starting at this key picture targets them
    /// before their first packets arrive (and ends the picture at the right layer).
    pub fn declare_spatial(&mut self, n: u8, now: Instant) {
        let mut grew = false;
        for s in self.spatial_seen.iter_mut().take(usize::from(n)) {
            grew |= s.is_none();
            *s = Some(s.map_or(now, |at| at.max(now)));
        }
        if grew {
            self.rebuild(now);
        }
    }

    fn top(seen: &[Option<Instant>; MAX], now: Instant) -> Option<u8> {
        seen.iter()
            .rposition(|s| s.is_some_and(|at| now.saturating_duration_since(at) < LAYER_TIMEOUT))
            .map(|i| i as u8)
    }

    fn rebuild(&mut self, now: Instant) {
        let before = std::mem::take(&mut self.ladder);
        if let (Some(s_top), Some(t_top)) = (
            Self::top(&self.spatial_seen, now),
            Self::top(&self.temporal_seen, now),
        ) {
            self.ladder.extend((0..=t_top).map(|t| (0, t)));
            self.ladder.extend((1..=s_top).map(|s| (s, t_top)));
        }
        if self.ladder != before {
            tracing::debug!(ladder = ?self.ladder, "svc ladder");
        }
    }

    /// Whether the stream is scalable (more than one layer seen recently).
    pub fn is_svc(&self) -> bool {
        self.ladder.len() > 1
    }

    /// The ladder, lowest first.
    pub fn ladder(&self) -> &[SvcLayer] {
        &self.ladder
    }

    /// What each ladder step forwards, bits per second (`unmeasured` for a step with no
    /// measured layer yet).
    pub fn ladder_bitrates(&self, unmeasured: u64) -> Vec<u64> {
        self.ladder
            .iter()
            .map(|&(s, t)| {
                let sum: u64 = self.bps[..=usize::from(s)]
                    .iter()
                    .flat_map(|r| r[..=usize::from(t)].iter())
                    .sum();
                if sum > 0 { sum } else { unmeasured }
            })
            .collect()
    }

    /// Index of the ladder step quality `q` means: low = the lowest spatial layer at full
    /// frame rate, medium = the second spatial layer (or the nearest below), high = all.
    pub fn index_for(&self, q: Quality) -> usize {
        let Some(&(_, t_top)) = self.ladder.last() else {
            return 0;
        };
        let s_top = self.ladder.last().map_or(0, |l| l.0);
        let s = match q {
            Quality::Low => 0,
            Quality::Medium => s_top.min(1),
            Quality::High => s_top,
        };
        self.ladder
            .iter()
            .position(|l| *l == (s, t_top))
            .unwrap_or(self.ladder.len() - 1)
    }

    /// The layer a consumer wanting `q`, allowed at most ladder step `cap`, should get.
    pub fn pick_capped(&self, q: Quality, cap: usize) -> Option<SvcLayer> {
        let i = self.index_for(q).min(cap);
        self.ladder.get(i).or(self.ladder.last()).copied()
    }
}

/// What the SVC code needs to know about one packet, whatever the codec said it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerFrame {
    /// Spatial layer (0..8).
    pub sid: u8,
    /// Temporal layer (0..8).
    pub tid: u8,
    /// The packet starts its layer frame.
    pub begin: bool,
    /// The packet ends its layer frame.
    pub end: bool,
    /// A temporal switching point: from here on a decoder on a lower temporal layer may
    /// add this one (VP9's U bit; AV1: a decode target indication "switch").
    pub switch_up: bool,
    /// The frame references earlier pictures (VP9's P bit; AV1: a reference before the
    /// picture's first frame). False: it needs at most the lower layers of its picture.
    pub inter_picture: bool,
    /// Spatial layers a scalability structure sent with this packet declares (a key
    /// picture's: VP9's SS, AV1's template structure).
    pub declares_spatial: Option<u8>,
}

impl LayerFrame {
    /// This packet starts a picture a decoder can start from: the first packet of spatial
    /// layer 0 of a key frame.
    pub fn starts_keyframe(&self) -> bool {
        self.begin && !self.inter_picture && self.sid == 0
    }

    /// This packet starts a new picture (its lowest spatial layer's first packet).
    pub fn starts_picture(&self) -> bool {
        self.begin && self.sid == 0
    }
}

/// What a consumer does with one packet of an SVC stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvcDecision {
    /// Forward; `end_of_picture`: set the marker bit (last packet of the highest spatial
    /// layer forwarded).
    Forward {
        /// Set the marker bit.
        end_of_picture: bool,
    },
    /// A layer above the target: dropped, and the sequence numbers close the gap.
    DropLayer,
    /// Nothing forwarded yet: waiting for a key frame.
    DropWantKeyframe,
}

/// A consumer's SVC state.
#[derive(Debug, Default)]
pub struct SvcSelection {
    /// The layers forwarded now (None: waiting for a key frame).
    pub current: Option<SvcLayer>,
    /// A spatial layer up is wanted: the next key frame lets it move.
    pub wants_keyframe: bool,
}

impl SvcSelection {
    /// Decide for one packet (`d`: its descriptor) given the target `want`.
    pub fn decide(&mut self, d: &LayerFrame, want: SvcLayer) -> SvcDecision {
        let (ws, wt) = want;
        if d.starts_picture() {
            let key = d.starts_keyframe();
            self.current = match self.current {
                None if key => Some(want),
                None => None,
                Some((cs, ct)) => {
                    let s = if ws < cs || key { ws } else { cs };
                    let up_point = d.switch_up;
                    let t = if wt < ct || key {
                        wt
                    } else if wt > ct && up_point && d.tid > ct {
                        d.tid.min(wt)
                    } else {
                        ct
                    };
                    Some((s, t))
                }
            };
            self.wants_keyframe = self.current.is_none_or(|(s, _)| s < ws);
        }
        let Some((mut cs, ct)) = self.current else {
            return SvcDecision::DropWantKeyframe;
        };
        // Spatial up inside a picture: a layer frame that is not inter-picture predicted
        // needs only the layer below in this picture, which was forwarded (Chromium's key
        // pictures; also how a consumer reaches the top layer when the stream's first
        // picture reveals its layers one by one).
        if d.begin && !d.inter_picture && d.sid == cs + 1 && d.sid <= ws {
            cs = d.sid;
            self.current = Some((cs, ct));
            self.wants_keyframe = cs < ws;
        }
        if d.sid > cs || d.tid > ct {
            return SvcDecision::DropLayer;
        }
        SvcDecision::Forward {
            end_of_picture: d.end && d.sid == cs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(sid: u8, tid: u8, key: bool, begin: bool, end: bool, u: bool) -> LayerFrame {
        LayerFrame {
            sid,
            tid,
            begin,
            end,
            switch_up: u,
            inter_picture: !key,
            declares_spatial: None,
        }
    }

    #[test]
    fn ladder_is_temporal_steps_of_the_base_layer_then_spatial_steps() {
        let t0 = Instant::now();
        let mut l = SvcLayers::default();
        let mut t = t0;
        // L3T3: sizes per spatial layer 100/200/400 bytes, every temporal layer.
        for _ in 0..30 {
            t += Duration::from_millis(33);
            for s in 0..3u8 {
                for tid in 0..3u8 {
                    l.observe(s, tid, 100 << s, t);
                }
            }
        }
        assert!(l.is_svc());
        assert_eq!(l.ladder(), [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2)]);
        let b = l.ladder_bitrates(1);
        assert!(b.windows(2).all(|w| w[0] < w[1]), "cumulative: {b:?}");
        // (1, 2) forwards spatial 0 and 1, all three temporal layers each.
        assert!((b[3] as f64 / b[2] as f64 - 3.0).abs() < 0.1, "{b:?}");
        assert_eq!(l.pick_capped(Quality::Low, usize::MAX), Some((0, 2)));
        assert_eq!(l.pick_capped(Quality::Medium, usize::MAX), Some((1, 2)));
        assert_eq!(l.pick_capped(Quality::High, usize::MAX), Some((2, 2)));
        assert_eq!(l.pick_capped(Quality::High, 0), Some((0, 0)));
        // Spatial layer 2 stops (the publisher's uplink fell): the ladder loses it.
        for _ in 0..60 {
            t += Duration::from_millis(33);
            for s in 0..2u8 {
                for tid in 0..3u8 {
                    l.observe(s, tid, 100 << s, t);
                }
            }
        }
        assert_eq!(l.ladder().last(), Some(&(1, 2)));
        // One layer only: not scalable.
        let mut one = SvcLayers::default();
        one.observe(0, 0, 100, t0);
        assert!(!one.is_svc());
    }

    #[test]
    fn layers_change_at_the_right_pictures() {
        let mut s = SvcSelection::default();
        // Not started: waits for a key frame.
        assert_eq!(
            s.decide(&pkt(0, 0, false, true, true, true), (0, 2)),
            SvcDecision::DropWantKeyframe
        );
        // Key frame: s0 forwarded with the marker on its end, s1/s2 dropped.
        assert_eq!(
            s.decide(&pkt(0, 0, true, true, false, false), (0, 2)),
            SvcDecision::Forward {
                end_of_picture: false
            }
        );
        assert_eq!(
            s.decide(&pkt(0, 0, true, false, true, false), (0, 2)),
            SvcDecision::Forward {
                end_of_picture: true
            }
        );
        assert_eq!(
            s.decide(&pkt(1, 0, true, true, true, false), (0, 2)),
            SvcDecision::DropLayer
        );
        // Target up to spatial 2: not before a key frame (a keyframe is wanted meanwhile).
        let d = s.decide(&pkt(0, 2, false, true, true, true), (2, 2));
        assert_eq!(
            d,
            SvcDecision::Forward {
                end_of_picture: true
            }
        );
        assert!(s.wants_keyframe);
        assert_eq!(
            s.decide(&pkt(2, 2, false, true, true, true), (2, 2)),
            SvcDecision::DropLayer
        );
        s.decide(&pkt(0, 0, true, true, true, false), (2, 2));
        assert_eq!(s.current, Some((2, 2)));
        assert!(!s.wants_keyframe);
        assert_eq!(
            s.decide(&pkt(1, 0, true, true, true, false), (2, 2)),
            SvcDecision::Forward {
                end_of_picture: false
            }
        );
        // Down to (0, 0): at the next picture start, any picture.
        s.decide(&pkt(0, 1, false, true, true, true), (0, 0));
        assert_eq!(s.current, Some((0, 0)));
        assert_eq!(
            s.decide(&pkt(0, 2, false, true, true, true), (0, 0)),
            SvcDecision::DropLayer
        );
        // Temporal up to 2: only at a switching point of a higher temporal layer.
        s.decide(&pkt(0, 0, false, true, true, false), (0, 2));
        assert_eq!(s.current, Some((0, 0)));
        s.decide(&pkt(0, 2, false, true, true, false), (0, 2));
        assert_eq!(s.current, Some((0, 0)), "no U bit: no switch");
        s.decide(&pkt(0, 1, false, true, true, true), (0, 2));
        assert_eq!(s.current, Some((0, 1)), "switch up point of TID 1");
        s.decide(&pkt(0, 2, false, true, true, true), (0, 2));
        assert_eq!(s.current, Some((0, 2)));
    }

    #[test]
    fn a_key_picture_lets_upper_layers_join_inside_the_picture() {
        let mut s = SvcSelection::default();
        // The first picture: only spatial 0 known when it starts.
        s.decide(&pkt(0, 0, true, true, true, false), (0, 0));
        assert_eq!(s.current, Some((0, 0)));
        // Spatial 1 of the same key picture, the target now (1, 0): it joins here.
        assert_eq!(
            s.decide(&pkt(1, 0, true, true, true, false), (1, 0)),
            SvcDecision::Forward {
                end_of_picture: true
            }
        );
        assert_eq!(s.current, Some((1, 0)));
        // Spatial 2 of a delta picture (P = 1) cannot.
        s.decide(&pkt(0, 0, false, true, true, false), (2, 0));
        assert!(s.wants_keyframe);
        assert_eq!(
            s.decide(&pkt(2, 0, false, true, true, false), (2, 0)),
            SvcDecision::DropLayer
        );
    }
}
