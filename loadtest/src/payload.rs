//! Synthetic media that looks like the real thing to an SFU and carries what we measure.
//!
//! - Audio: one Opus packet per 20 ms (a TOC byte, then filler), RTP clock 48 kHz.
//! - Video: VP8 frames split into RTP packets the way RFC 7741 does it: a one-byte payload
//!   descriptor with S=1 on the first packet of the frame, the VP8 frame tag at the start
//!   of the frame (key frames: bit 0 of the tag clear plus the start code 9d 01 2a and the
//!   dimensions, which is what str0m's, libwebrtc's and our SFU's keyframe detection read),
//!   the RTP marker bit on the last packet, one RTP timestamp per frame (90 kHz).
//!
//! Every packet carries a [`Stamp`] (magic, send time in µs on the generator's clock,
//! frame/packet sequence) right after the codec headers, so a receiver in the same process
//! gets end-to-end latency and jitter from the payload alone, whatever the SFU rewrote in
//! the RTP header.

use std::sync::OnceLock;
use std::time::Instant;

/// Marks our stamp inside a payload.
pub const MAGIC: [u8; 4] = *b"SRLG";
/// Bytes of a stamp: magic, send µs (u64 BE), simulcast layer (u8), sequence (u24 BE).
pub const STAMP_LEN: usize = 16;
/// Largest RTP payload we produce (room for SRTP, header extensions, IP/UDP under 1280).
pub const MAX_PAYLOAD: usize = 1100;
/// VP8 payload descriptor: S bit (start of a partition), partition id 0.
const VP8_DESC_START: u8 = 0x10;
/// Synthetic picture size written in key frames.
const WIDTH: u16 = 640;
const HEIGHT: u16 = 360;

/// What a receiver reads back from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Send time, µs since [`epoch`].
    pub sent_us: u64,
    /// Simulcast layer index (0 without simulcast), so a receiver can tell whether the
    /// SFU switched layers cleanly (at key frames) or interleaved them.
    pub layer: u8,
    /// Frame number (video) or packet number (audio), modulo 2^24.
    pub seq: u32,
}

/// The generator's clock origin (first use).
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// µs since [`epoch`] at `t`.
pub fn micros(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_micros() as u64
}

fn put_stamp(out: &mut Vec<u8>, s: Stamp) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&s.sent_us.to_be_bytes());
    out.push(s.layer);
    out.extend_from_slice(&s.seq.to_be_bytes()[1..]);
}

/// Find our stamp near the start of a payload (after at most 16 bytes of codec headers).
pub fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    let window = payload.len().min(16 + STAMP_LEN);
    let at = payload[..window].windows(4).position(|w| w == MAGIC)?;
    let b = payload.get(at + 4..at + STAMP_LEN)?;
    Some(Stamp {
        sent_us: u64::from_be_bytes(b[..8].try_into().ok()?),
        layer: b[8],
        seq: u32::from_be_bytes([0, b[9], b[10], b[11]]),
    })
}

/// One Opus packet of `size` bytes (at least a TOC byte and a stamp).
pub fn opus_packet(size: usize, stamp: Stamp) -> Vec<u8> {
    let mut p = Vec::with_capacity(size.max(1 + STAMP_LEN));
    // TOC: config 31 (CELT FB 20 ms), mono, one frame.
    p.push(0xf8);
    put_stamp(&mut p, stamp);
    p.resize(size.max(p.len()), 0x55);
    p
}

/// A VP8 frame of about `frame_bytes` bytes as RTP payloads (marker on the last one).
pub fn vp8_frame(frame_bytes: usize, key: bool, stamp: Stamp) -> Vec<Vec<u8>> {
    let room = MAX_PAYLOAD - 1 - STAMP_LEN;
    let n = frame_bytes.div_ceil(room).max(1);
    let per = frame_bytes / n;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut p = Vec::with_capacity(MAX_PAYLOAD);
        if i == 0 {
            p.push(VP8_DESC_START);
            // Frame tag: bit 0 = 0 for a key frame; version 0; show_frame (bit 4).
            p.push(if key { 0x10 } else { 0x11 });
            p.push(0);
            p.push(0);
            if key {
                p.extend_from_slice(&[0x9d, 0x01, 0x2a]);
                p.extend_from_slice(&WIDTH.to_le_bytes());
                p.extend_from_slice(&HEIGHT.to_le_bytes());
            }
        } else {
            p.push(0x00);
        }
        put_stamp(&mut p, stamp);
        p.resize(per.clamp(p.len(), MAX_PAYLOAD), 0x90);
        out.push(p);
    }
    out
}

/// Is this RTP payload the first packet of a VP8 key frame?
pub fn vp8_is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&d) = payload.first() else {
        return false;
    };
    // No extension bits (X) in what we send; handle them anyway for other senders.
    let mut at = 1;
    if d & 0x80 != 0 {
        let Some(&x) = payload.get(1) else {
            return false;
        };
        at += 1;
        if x & 0x80 != 0 {
            at += if payload.get(at).is_some_and(|b| b & 0x80 != 0) {
                2
            } else {
                1
            };
        }
        if x & 0x40 != 0 {
            at += 1;
        }
        if x & 0x30 != 0 {
            at += 1;
        }
    }
    let start = d & 0x10 != 0 && d & 0x07 == 0;
    start && payload.get(at).is_some_and(|b| b & 0x01 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_frames_are_split_marked_and_stamped() {
        let s = Stamp {
            sent_us: 123_456_789,
            layer: 2,
            seq: 42,
        };
        let key = vp8_frame(5000, true, s);
        assert!(key.len() >= 5, "5000 bytes need several packets");
        assert!(key.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let total: usize = key.iter().map(Vec::len).sum();
        assert!((4900..=5100).contains(&total), "frame size kept: {total}");
        assert!(vp8_is_keyframe_start(&key[0]));
        assert!(!vp8_is_keyframe_start(&key[1]), "only the first has S=1");
        assert!(key.iter().all(|p| read_stamp(p) == Some(s)));
        let delta = vp8_frame(800, false, s);
        assert_eq!(delta.len(), 1);
        assert!(!vp8_is_keyframe_start(&delta[0]));
        assert_eq!(read_stamp(&delta[0]), Some(s));
    }

    #[test]
    fn opus_is_stamped() {
        let s = Stamp {
            sent_us: 7,
            layer: 0,
            seq: 9,
        };
        let p = opus_packet(80, s);
        assert_eq!(p.len(), 80);
        assert_eq!(read_stamp(&p), Some(s));
        assert_eq!(read_stamp(&[0u8; 40]), None);
        assert_eq!(read_stamp(b"SRLG"), None, "a cut stamp is no stamp");
    }
}
