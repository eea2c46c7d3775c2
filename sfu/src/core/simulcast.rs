//! Simulcast: a publisher sends the same video as several encodings ("layers", told apart
//! by RID: e.g. `q` quarter, `h` half, `f` full resolution) and each subscriber must get
//! exactly one of them. Forwarding all layers into one outgoing stream (what an SFU that
//! ignores RIDs does) interleaves three resolutions and breaks the receiver's decoder.
//!
//! Here a producer keeps per-layer statistics ([`Layers`]): bitrate over a short window and
//! when the layer last sent. Layers are ranked by their RID names when the names follow a
//! known scheme (`q`/`h`/`f`, `l`/`m`/`h`, `low`/`mid`/`high`, `0`/`1`/`2`: what clients,
//! ours included, declare with `sendEncodings`), and by measured bitrate only when they do
//! not. Why not bitrate always: an encoder's per-layer bitrate is not a stable statement of
//! its size. Chromium on a busy machine was seen sending more bytes on its 160x120 layer
//! than on its 320x240 one for seconds after start (key frames, the higher layer's ramp),
//! which swapped `low` and `high` back and forth under a subscriber. A consumer has a
//! wanted [`Quality`] (low/medium/high, set by the subscriber) and the layer it currently
//! receives ([`Selection`]); it moves to another layer only on a key frame of that layer,
//! so the decoder never sees a frame that references another layer's pictures. A layer that
//! stops (the publisher's encoder drops its top layer when its bandwidth estimate falls)
//! leaves the ranking after [`LAYER_TIMEOUT`], so its consumers fall back to the best layer
//! still flowing.
//!
//! Key frames are recognised from the payload (VP8, VP9, H.264, AV1): in RTP mode str0m
//! hands us packets, not frames.

use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::Rid;

/// A layer that sent nothing for this long is not offered to consumers.
pub const LAYER_TIMEOUT: Duration = Duration::from_millis(1500);
/// Bitrate window.
const WINDOW: Duration = Duration::from_millis(500);
/// How often the ranking is recomputed.
const RANK_EVERY: Duration = Duration::from_millis(250);

/// What a subscriber asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Quality {
    /// The lowest layer.
    Low = 0,
    /// The middle layer (or the nearest below).
    Medium = 1,
    /// The highest layer flowing.
    #[default]
    High = 2,
}

impl std::str::FromStr for Quality {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "low" => Ok(Quality::Low),
            "medium" => Ok(Quality::Medium),
            "high" => Ok(Quality::High),
            _ => Err(()),
        }
    }
}

impl Quality {
    /// `low`, `medium`, `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Low => "low",
            Quality::Medium => "medium",
            Quality::High => "high",
        }
    }
}

#[derive(Debug)]
struct Layer {
    rid: Rid,
    window_bytes: u64,
    window_start: Instant,
    /// Bits per second over the last closed window (0 before one closed).
    bitrate: u64,
    /// None: declared by the publisher's shard (`Layers::declare`), no packet seen here.
    last_packet: Option<Instant>,
    last_keyframe_request: Option<Instant>,
    /// Picture size read from its last key frame (VP8, VP9, H.264: `frame_size.rs`).
    size: Option<(u32, u32)>,
}

/// Per-producer layer statistics and ranking.
#[derive(Debug, Default)]
pub struct Layers {
    layers: Vec<Layer>,
    /// Active layers, lowest quality first (recomputed every `RANK_EVERY`).
    ranked: Vec<Rid>,
    /// Picture size of each of `ranked` (measured or estimated, see [`Layers::known_sizes`]).
    ranked_sizes: Vec<(u32, u32)>,
    /// Every layer seen, flowing or not, lowest quality first: what the publisher can
    /// send (dynacast turns these on and off).
    known: Vec<Rid>,
    next_rank: Option<Instant>,
}

/// Whether `rid` is one of the names [`name_rank`] knows.
fn known_name(rid: &str) -> bool {
    matches!(
        rid,
        "q" | "h" | "f" | "l" | "m" | "low" | "mid" | "high" | "hi" | "0" | "1" | "2"
    )
}

/// Rank of a RID by its name alone (lower = lower quality), for before bitrates exist.
fn name_rank(rid: &str, all: &[&str]) -> u8 {
    let qhf = all.iter().any(|r| *r == "q" || *r == "f");
    match rid {
        "q" | "l" | "low" | "0" => 0,
        "h" if qhf => 1,
        "m" | "mid" | "1" => 1,
        "h" | "f" | "high" | "hi" | "2" => 2,
        _ => 1,
    }
}

impl Layers {
    /// Whether any layer was seen (the producer is simulcast).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Account one packet of layer `rid`.
    pub fn observe(&mut self, rid: Rid, bytes: usize, now: Instant) {
        let l = match self.layers.iter_mut().position(|l| l.rid == rid) {
            Some(i) => &mut self.layers[i],
            None => {
                self.layers.push(Layer {
                    rid,
                    window_bytes: 0,
                    window_start: now,
                    bitrate: 0,
                    last_packet: Some(now),
                    last_keyframe_request: None,
                    size: None,
                });
                self.next_rank = None; // a new layer: rank at once
                self.layers.last_mut().expect("just pushed")
            }
        };
        l.last_packet = Some(now);
        let elapsed = now.saturating_duration_since(l.window_start);
        if elapsed >= WINDOW {
            l.bitrate = l.window_bytes * 8 * 1_000_000 / (elapsed.as_micros() as u64).max(1);
            l.window_bytes = 0;
            l.window_start = now;
        }
        l.window_bytes += bytes as u64;
        if self.next_rank.is_none_or(|t| now >= t) {
            self.rank(now);
        }
    }

    fn rank(&mut self, now: Instant) {
        self.next_rank = Some(now + RANK_EVERY);
        let names: Vec<&str> = self.layers.iter().map(|l| l.rid.as_ref()).collect();
        let mut active: Vec<(u64, u8, Rid)> = self
            .layers
            .iter()
            .filter(|l| {
                l.last_packet
                    .is_some_and(|t| now.saturating_duration_since(t) < LAYER_TIMEOUT)
            })
            .map(|l| (l.bitrate, name_rank(l.rid.as_ref(), &names), l.rid))
            .collect();
        // Names tell the order when every layer has a known, distinct rank.
        let named = names.iter().all(|n| known_name(n)) && {
            let mut ranks: Vec<u8> = active.iter().map(|(_, n, _)| *n).collect();
            ranks.sort_unstable();
            ranks.windows(2).all(|w| w[0] != w[1])
        };
        let all_measured = active.iter().all(|(b, _, _)| *b > 0);
        if all_measured && !named {
            active.sort_by_key(|(b, n, _)| (*b, *n));
        } else {
            active.sort_by_key(|(_, n, _)| *n);
        }
        self.ranked = active.into_iter().map(|(_, _, r)| r).collect();
        // Every layer, stopped ones included, ranked the same way (a stopped layer keeps
        // its last measured bitrate).
        let mut all: Vec<(u64, u8, Rid)> = self
            .layers
            .iter()
            .map(|l| (l.bitrate, name_rank(l.rid.as_ref(), &names), l.rid))
            .collect();
        let all_named = names.iter().all(|n| known_name(n)) && {
            let mut ranks: Vec<u8> = all.iter().map(|(_, n, _)| *n).collect();
            ranks.sort_unstable();
            ranks.windows(2).all(|w| w[0] != w[1])
        };
        if all.iter().all(|(b, _, _)| *b > 0) && !all_named {
            all.sort_by_key(|(b, n, _)| (*b, *n));
        } else {
            all.sort_by_key(|(_, n, _)| *n);
        }
        self.known = all.into_iter().map(|(_, _, r)| r).collect();
        let sizes = self.known_sizes();
        self.ranked_sizes = self
            .ranked
            .iter()
            .map(|r| {
                let i = self.known.iter().position(|k| k == r).unwrap_or(0);
                sizes.get(i).copied().unwrap_or(DEFAULT_TOP_SIZE)
            })
            .collect();
    }

    /// Layers the publisher's shard knows (lowest first, with the sizes it read), for a
    /// mirror (`span.rs`): a layer that was off before this shard mirrored the producer
    /// never reaches it, yet a subscriber here may want it (dynacast turns it on). A
    /// declared layer is known but not active until a packet of it arrives; a size read
    /// here wins over a declared one.
    pub fn declare(&mut self, layers: &[(Rid, Option<(u32, u32)>)], now: Instant) {
        for (rid, size) in layers {
            match self.layers.iter_mut().find(|l| l.rid == *rid) {
                Some(l) => {
                    if l.size.is_none() {
                        l.size = *size;
                    }
                }
                None => self.layers.push(Layer {
                    rid: *rid,
                    window_bytes: 0,
                    window_start: now,
                    bitrate: 0,
                    last_packet: None,
                    last_keyframe_request: None,
                    size: *size,
                }),
            }
        }
        self.rank(now);
    }

    /// Every known layer (lowest first) with the size read from its key frames, if any:
    /// what a mirror is told ([`Layers::declare`]).
    pub fn declared(&self) -> Vec<(Rid, Option<(u32, u32)>)> {
        self.known
            .iter()
            .map(|r| {
                (
                    *r,
                    self.layers
                        .iter()
                        .find(|l| l.rid == *r)
                        .and_then(|l| l.size),
                )
            })
            .collect()
    }

    /// Record the picture size a key frame of `rid` announced.
    pub fn observe_size(&mut self, rid: Rid, size: (u32, u32)) {
        if let Some(l) = self.layers.iter_mut().find(|l| l.rid == rid)
            && l.size != Some(size)
        {
            l.size = Some(size);
            self.next_rank = None; // sizes feed the ranking's cache: redo it
        }
    }

    /// The picture size of each known layer (lowest first). RTP does not carry sizes,
    /// so: a layer's size is what its last key frame said (VP8 and VP9 key frames and
    /// H.264's SPS carry it, `frame_size.rs`);
    /// else derived from the nearest layer whose size is known, assuming each layer is
    /// twice the size of the one below (the usual `scaleResolutionDownBy` 4, 2, 1);
    /// else the top layer is taken as [`DEFAULT_TOP_SIZE`] and the others halve below it.
    pub fn known_sizes(&self) -> Vec<(u32, u32)> {
        let measured: Vec<Option<(u32, u32)>> = self
            .known
            .iter()
            .map(|r| {
                self.layers
                    .iter()
                    .find(|l| l.rid == *r)
                    .and_then(|l| l.size)
            })
            .collect();
        let n = measured.len();
        (0..n)
            .map(|i| {
                if let Some(s) = measured[i] {
                    return s;
                }
                let nearest = (0..n)
                    .filter(|j| measured[*j].is_some())
                    .min_by_key(|j| j.abs_diff(i));
                let (base, j) = match nearest {
                    Some(j) => (measured[j].expect("filtered on is_some"), j),
                    None => (DEFAULT_TOP_SIZE, n - 1),
                };
                scale(base, i as i32 - j as i32)
            })
            .collect()
    }

    /// Every layer seen, lowest first (flowing or not).
    pub fn known(&self) -> &[Rid] {
        &self.known
    }

    /// Index among [`Layers::known`] of the layer quality `q` means.
    pub fn known_index_for(&self, q: Quality) -> usize {
        quality_index(q, self.known.len())
    }

    /// Index among [`Layers::known`] of the smallest layer that fills a `view` (width,
    /// height in device pixels), see [`fills`]; the top layer when none does.
    pub fn known_index_for_view(&self, view: (u32, u32)) -> usize {
        let sizes = self.known_sizes();
        sizes
            .iter()
            .position(|s| fills(*s, view))
            .unwrap_or(sizes.len().saturating_sub(1))
    }

    /// Index among the active layers (lowest first) of the smallest that fills `view`;
    /// the top one when none does.
    pub fn index_for_view(&self, view: (u32, u32)) -> usize {
        self.ranked_sizes
            .iter()
            .position(|s| fills(*s, view))
            .unwrap_or(self.ranked.len().saturating_sub(1))
    }

    /// The layer a consumer wanting `q` should receive now.
    pub fn pick(&self, q: Quality) -> Option<Rid> {
        self.pick_capped(q, usize::MAX)
    }

    /// The layer for a consumer wanting `q` whose allocation allows at most layer index
    /// `cap` (lowest first).
    pub fn pick_capped(&self, q: Quality, cap: usize) -> Option<Rid> {
        let n = self.ranked.len();
        if n == 0 {
            return None;
        }
        Some(self.ranked[self.index_for(q).min(cap)])
    }

    /// Index (lowest first) of the layer quality `q` means among the active layers.
    pub fn index_for(&self, q: Quality) -> usize {
        quality_index(q, self.ranked.len())
    }

    /// Bitrates of the active layers, lowest first (`unmeasured` for a layer whose first
    /// window has not closed).
    pub fn ranked_bitrates(&self, unmeasured: u64) -> Vec<u64> {
        self.ranked
            .iter()
            .map(|r| {
                self.layers
                    .iter()
                    .find(|l| l.rid == *r)
                    .map_or(unmeasured, |l| {
                        if l.bitrate > 0 { l.bitrate } else { unmeasured }
                    })
            })
            .collect()
    }

    /// Whether a key frame may be requested on `rid` now (at most one per `interval`);
    /// records the request when it may.
    pub fn may_request_keyframe(&mut self, rid: Rid, interval: Duration, now: Instant) -> bool {
        let Some(l) = self.layers.iter_mut().find(|l| l.rid == rid) else {
            return false;
        };
        if l.last_keyframe_request.is_some_and(|t| now < t + interval) {
            return false;
        }
        l.last_keyframe_request = Some(now);
        true
    }

    /// Index (lowest first) of `rid` among the active layers.
    pub fn rank_of(&self, rid: Rid) -> Option<usize> {
        self.ranked.iter().position(|r| *r == rid)
    }

    /// Known layers.
    pub fn rids(&self) -> impl Iterator<Item = Rid> + '_ {
        self.layers.iter().map(|l| l.rid)
    }
}

/// The top layer's assumed size when no key frame told any layer's (720p: what a
/// simulcast camera's full layer usually is; layers below halve).
pub const DEFAULT_TOP_SIZE: (u32, u32) = (1280, 720);

fn quality_index(q: Quality, n: usize) -> usize {
    match q {
        Quality::Low => 0,
        Quality::Medium => n.saturating_sub(1).min(1),
        Quality::High => n.saturating_sub(1),
    }
}

/// `size` scaled by 2^`steps` (halved for negative steps).
fn scale(size: (u32, u32), steps: i32) -> (u32, u32) {
    let f = |v: u32| {
        if steps >= 0 {
            v.saturating_mul(1 << steps.min(16))
        } else {
            v >> (-steps).min(31)
        }
    };
    (f(size.0), f(size.1))
}

/// Whether a picture of `layer` size fills a `view` (both in pixels) without upscaling:
/// at least as wide **and** as tall. Conservative on purpose: it is exact for
/// `object-fit: cover` (the demo's camera tiles: the picture covers the element), and
/// for `contain` it may pick one layer more than the letterboxed picture needs.
pub fn fills(layer: (u32, u32), view: (u32, u32)) -> bool {
    layer.0 >= view.0 && layer.1 >= view.1
}

/// The picture size (width, height) a VP8 key frame's first packet carries (RFC 6386
/// §9.1: after the 3-byte frame tag, the start code 9d 01 2a and two 14-bit sizes), or
/// None when `payload` is not one. Other codecs: `frame_size.rs`.
pub(super) fn vp8_frame_size(payload: &[u8]) -> Option<(u32, u32)> {
    if !vp8_keyframe(payload) {
        return None;
    }
    let i = vp8_header_at(payload)?;
    let h = payload.get(i..i + 10)?;
    if h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u32::from(u16::from_le_bytes([h[6], h[7]]) & 0x3fff);
    let ht = u32::from(u16::from_le_bytes([h[8], h[9]]) & 0x3fff);
    (w > 0 && ht > 0).then_some((w, ht))
}

/// What to do with one packet of a simulcast layer for one consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forward it (possibly after switching to its layer).
    Forward,
    /// Not this consumer's layer.
    Drop,
    /// Not this consumer's layer yet: it is the wanted one, but we need a key frame on it.
    DropWantKeyframe,
}

/// A consumer's layer state.
#[derive(Debug, Default)]
pub struct Selection {
    /// Wanted quality.
    pub quality: Quality,
    /// Layer being forwarded.
    pub current: Option<Rid>,
}

impl Selection {
    /// Decide for a packet of layer `rid` (`keyframe`: it starts a key frame), given the
    /// layer this consumer should get now (`want`).
    pub fn decide(&mut self, rid: Rid, keyframe: bool, want: Option<Rid>) -> Decision {
        if self.current == Some(rid) {
            return Decision::Forward;
        }
        if want != Some(rid) {
            return Decision::Drop;
        }
        if keyframe {
            self.current = Some(rid);
            Decision::Forward
        } else {
            Decision::DropWantKeyframe
        }
    }

    /// Whether the consumer is on a layer other than the one it should get.
    pub fn wants_switch(&self, want: Option<Rid>) -> bool {
        want.is_some() && self.current != want
    }
}

/// Whether an RTP payload of `codec` starts a key frame (a decoder can start there).
pub fn is_keyframe_start(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8_keyframe(payload),
        Codec::Vp9 => vp9_keyframe(payload),
        Codec::H264 => h264_keyframe(payload),
        Codec::Av1 => av1_keyframe(payload),
        _ => false,
    }
}

/// RFC 7741: payload descriptor, then (at a partition start) the VP8 frame header whose
/// first bit P is 0 on key frames.
fn vp8_keyframe(p: &[u8]) -> bool {
    vp8_header_at(p).is_some_and(|i| p.get(i).is_some_and(|h| h & 0x01 == 0))
}

/// Where the VP8 frame header starts in a packet that starts partition 0 (None: the
/// packet does not, or is truncated).
fn vp8_header_at(p: &[u8]) -> Option<usize> {
    let &b0 = p.first()?;
    let start = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !start || pid != 0 {
        return None;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let &x = p.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            let &pic = p.get(i)?;
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    Some(i)
}

/// draft-ietf-payload-vp9: descriptor byte I|P|L|F|B|E|V|Z; a key frame starts with
/// P = 0 (not inter-predicted) and B = 1 (beginning of a frame).
fn vp9_keyframe(p: &[u8]) -> bool {
    p.first().is_some_and(|b| b & 0x40 == 0 && b & 0x08 != 0)
}

/// RFC 6184: an SPS or the start of an IDR slice, alone, in a STAP-A or in an FU-A.
fn h264_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        5 | 7 => true,
        24 => {
            // STAP-A: [size(2) nal]...
            let mut i = 1;
            while i + 2 < p.len() {
                let size = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                let t = p[i + 2] & 0x1f;
                if t == 5 || t == 7 {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => p.get(1).is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == 5),
        _ => false,
    }
}

/// AV1 RTP: aggregation header Z|Y|W W|N|-; N = 1 starts a new coded video sequence (a key
/// frame), Z = 0 means the packet starts an OBU.
fn av1_keyframe(p: &[u8]) -> bool {
    p.first().is_some_and(|b| b & 0x08 != 0 && b & 0x80 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(s: &str) -> Rid {
        Rid::from(s)
    }

    #[test]
    fn known_names_rank_layers_whatever_their_bitrates_and_layers_time_out() {
        let t0 = Instant::now();
        let mut l = Layers::default();
        for r in ["f", "q", "h"] {
            l.observe(rid(r), 100, t0);
        }
        assert_eq!(l.pick(Quality::Low), Some(rid("q")));
        assert_eq!(l.pick(Quality::Medium), Some(rid("h")));
        assert_eq!(l.pick(Quality::High), Some(rid("f")));
        // Bitrates disagree for a while (as Chromium's do at start on a busy machine: its
        // quarter layer bigger than its half one): the declared order holds.
        let mut t = t0;
        for _ in 0..20 {
            t += Duration::from_millis(50);
            l.observe(rid("q"), 3000, t);
            l.observe(rid("h"), 1000, t);
            l.observe(rid("f"), 300, t);
        }
        assert_eq!(l.pick(Quality::Low), Some(rid("q")));
        assert_eq!(l.pick(Quality::High), Some(rid("f")));
        // "f" stops: after the timeout the top is "h".
        for _ in 0..40 {
            t += Duration::from_millis(50);
            l.observe(rid("q"), 300, t);
            l.observe(rid("h"), 1000, t);
        }
        assert_eq!(l.pick(Quality::High), Some(rid("h")));
        assert_eq!(l.pick(Quality::Medium), Some(rid("h")));
        assert_eq!(l.pick(Quality::Low), Some(rid("q")));
    }

    #[test]
    fn layer_sizes_are_read_from_vp8_key_frames_or_derived_from_their_rank() {
        // A VP8 key frame's first packet: descriptor (X, 15-bit picture id), frame tag,
        // start code, 14-bit width and height (top bits are scaling).
        let key = [
            0x90, 0x80, 0x81, 0x23, 0x10, 0, 0, 0x9d, 0x01, 0x2a, 0x40, 0x41, 0xf0, 0x80,
        ];
        assert_eq!(vp8_frame_size(&key), Some((320, 240)));
        let mut delta = key;
        delta[4] = 0x11;
        assert_eq!(vp8_frame_size(&delta), None);
        assert_eq!(vp8_frame_size(&key[..12]), None, "truncated");

        let t0 = Instant::now();
        let mut l = Layers::default();
        for r in ["q", "h", "f"] {
            l.observe(rid(r), 100, t0);
        }
        // Nothing measured: the top is 1280x720, halving below.
        assert_eq!(l.known_sizes(), vec![(320, 180), (640, 360), (1280, 720)]);
        assert_eq!(l.known_index_for_view((300, 170)), 0);
        assert_eq!(l.known_index_for_view((321, 100)), 1);
        assert_eq!(l.known_index_for_view((4000, 4000)), 2);
        // One measured: the others scale from it.
        l.observe_size(rid("h"), (320, 240));
        l.observe(rid("q"), 100, t0 + RANK_EVERY);
        assert_eq!(l.known_sizes(), vec![(160, 120), (320, 240), (640, 480)]);
        assert_eq!(l.index_for_view((150, 100)), 0);
        assert_eq!(l.index_for_view((300, 200)), 1);
        assert_eq!(l.index_for_view((600, 400)), 2);
    }

    #[test]
    fn unknown_names_rank_layers_by_measured_bitrate() {
        let t0 = Instant::now();
        let mut l = Layers::default();
        let mut t = t0;
        for _ in 0..20 {
            t += Duration::from_millis(50);
            l.observe(rid("a"), 3000, t);
            l.observe(rid("b"), 300, t);
            l.observe(rid("c"), 1000, t);
        }
        assert_eq!(l.pick(Quality::Low), Some(rid("b")));
        assert_eq!(l.pick(Quality::Medium), Some(rid("c")));
        assert_eq!(l.pick(Quality::High), Some(rid("a")));
    }

    #[test]
    fn selection_switches_only_on_keyframes_of_the_wanted_layer() {
        let mut s = Selection::default();
        let (q, f) = (Some(rid("q")), Some(rid("f")));
        assert_eq!(s.decide(rid("f"), false, f), Decision::DropWantKeyframe);
        assert_eq!(s.decide(rid("q"), true, f), Decision::Drop);
        assert_eq!(s.decide(rid("f"), true, f), Decision::Forward);
        assert_eq!(s.decide(rid("f"), false, f), Decision::Forward);
        // Asked for low: keep forwarding "f" until "q" has a key frame.
        assert!(s.wants_switch(q));
        assert_eq!(s.decide(rid("q"), false, q), Decision::DropWantKeyframe);
        assert_eq!(s.decide(rid("f"), false, q), Decision::Forward);
        assert_eq!(s.decide(rid("q"), true, q), Decision::Forward);
        assert_eq!(s.decide(rid("f"), true, q), Decision::Drop);
        assert!(!s.wants_switch(q));
    }

    #[test]
    fn keyframes_are_recognised_per_codec() {
        // VP8: X=1, S=1, PID=0; I=1 with a 15-bit picture id; then P=0.
        assert!(is_keyframe_start(
            Codec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x10]
        ));
        assert!(!is_keyframe_start(
            Codec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x11]
        ));
        assert!(
            !is_keyframe_start(Codec::Vp8, &[0x80, 0x80, 0x81, 0x23, 0x10]),
            "not a partition start"
        );
        assert!(is_keyframe_start(Codec::Vp8, &[0x10, 0x10]));
        assert!(!is_keyframe_start(Codec::Vp8, &[]));
        assert!(!is_keyframe_start(Codec::Vp8, &[0x90, 0x80]), "truncated");
        // VP9: B=1, P=0.
        assert!(is_keyframe_start(Codec::Vp9, &[0x08]));
        assert!(!is_keyframe_start(Codec::Vp9, &[0x48]));
        // H.264: IDR, SPS, STAP-A with SPS, FU-A start of IDR; not a P slice.
        assert!(is_keyframe_start(Codec::H264, &[0x65]));
        assert!(is_keyframe_start(Codec::H264, &[0x67]));
        assert!(is_keyframe_start(
            Codec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42]
        ));
        assert!(is_keyframe_start(Codec::H264, &[0x7c, 0x85]));
        assert!(!is_keyframe_start(Codec::H264, &[0x7c, 0x05]));
        assert!(!is_keyframe_start(Codec::H264, &[0x41]));
        // AV1: N=1, Z=0.
        assert!(is_keyframe_start(Codec::Av1, &[0x18]));
        assert!(!is_keyframe_start(Codec::Av1, &[0x10]));
        assert!(!is_keyframe_start(Codec::Opus, &[0xff]));
    }
}
