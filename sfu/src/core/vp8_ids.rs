//! VP8 picture-ID and TL0PICIDX continuity for one consumer.
//!
//! Why: a receiver's VP8 reference finder orders frames by the payload descriptor's
//! picture ID, and drops frames whose ID it takes for older than what it already has. A
//! simulcast publisher numbers each layer on its own; Chromium keeps the layers' IDs in
//! step only while every layer sends every frame. Once dynacast stopped a layer and started
//! it again, that layer's IDs lag the others' by the frames it skipped: a subscriber
//! switched onto it saw the key frame, two or three frames, then nothing more (H.264, which
//! has no picture ID, was fine). So, as with sequence numbers (`rewrite.rs`), each new
//! source is re-based: its first picture ID follows the last one this consumer sent, and
//! TL0PICIDX likewise. RFC 7741 §4.2 has the descriptor. The new values go out as a
//! str0m `Vp8Patch` on the write: the payload, shared by every consumer, is not copied.

/// Per-consumer state: the offset applied to the current source's IDs.
#[derive(Debug, Default)]
pub struct Vp8Ids {
    /// SSRC of the source the offsets belong to.
    ssrc: Option<u32>,
    /// Added to the source's picture ID (mod 2^15) and TL0PICIDX (mod 2^8).
    pid_offset: u16,
    tl0_offset: u8,
    /// Last written picture ID (15-bit space) and TL0PICIDX.
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
}

impl Vp8Ids {
    /// The picture ID and TL0PICIDX to write for a VP8 `payload` of source `ssrc` (None
    /// for a field the descriptor lacks; both None when nothing changes: a payload without
    /// them or too short, or IDs that pass as they are).
    pub fn next(&mut self, ssrc: u32, payload: &[u8]) -> (Option<u16>, Option<u8>) {
        let none = (None, None);
        let Some(&b0) = payload.first() else {
            return none;
        };
        if b0 & 0x80 == 0 || payload.len() < 2 {
            return none; // no X byte: no picture ID, no TL0PICIDX
        }
        let x = payload[1];
        let mut i = 2;
        let pid_at = if x & 0x80 != 0 {
            let Some(&p) = payload.get(i) else {
                return none;
            };
            let long = p & 0x80 != 0;
            let at = (i, long);
            i += if long { 2 } else { 1 };
            Some(at)
        } else {
            None
        };
        let tl0_at = (x & 0x40 != 0).then_some(i);
        if pid_at.is_some_and(|(at, long)| payload.len() < at + if long { 2 } else { 1 })
            || tl0_at.is_some_and(|at| payload.len() <= at)
        {
            return none;
        }
        let new_source = self.ssrc != Some(ssrc);
        self.ssrc = Some(ssrc);
        let mut out_pid = None;
        let mut out_tl0 = None;
        if let Some((at, long)) = pid_at {
            let pid = if long {
                u16::from_be_bytes([payload[at] & 0x7f, payload[at + 1]])
            } else {
                u16::from(payload[at])
            };
            if new_source {
                let next = self.last_pid.map_or(pid, |l| l.wrapping_add(1) & 0x7fff);
                self.pid_offset = next.wrapping_sub(pid) & 0x7fff;
            }
            let out = pid.wrapping_add(self.pid_offset) & 0x7fff;
            self.last_pid = Some(out);
            out_pid = Some(if long { out } else { out & 0x7f });
        }
        if let Some(at) = tl0_at {
            let tl0 = payload[at];
            if new_source {
                let next = self.last_tl0.map_or(tl0, |l| l.wrapping_add(1));
                self.tl0_offset = next.wrapping_sub(tl0);
            }
            let out = tl0.wrapping_add(self.tl0_offset);
            self.last_tl0 = Some(out);
            out_tl0 = Some(out);
        }
        if self.pid_offset == 0 && self.tl0_offset == 0 {
            // The IDs pass as they are (one source so far, or one in step): nothing to
            // patch, the common case costs a few byte reads.
            return none;
        }
        (out_pid, out_tl0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor with X, I (15-bit picture ID) and L (TL0PICIDX), then one byte.
    fn pkt(pid: u16, tl0: u8) -> Vec<u8> {
        let [hi, lo] = pid.to_be_bytes();
        vec![0x90, 0xc0, 0x80 | hi, lo, tl0, 0x55]
    }

    fn ids(p: &[u8]) -> (u16, u8) {
        (u16::from_be_bytes([p[2] & 0x7f, p[3]]), p[4])
    }

    impl Vp8Ids {
        /// `next`, written back into `p` (15-bit picture ID at 2, TL0PICIDX at 4, as
        /// `pkt` makes them), as str0m's patch does.
        fn rewrite(&mut self, ssrc: u32, p: &mut [u8]) {
            match self.next(ssrc, p) {
                (Some(pid), Some(tl0)) if p.len() >= 5 && p[2] & 0x80 != 0 => {
                    let [hi, lo] = pid.to_be_bytes();
                    p[2] = 0x80 | hi;
                    p[3] = lo;
                    p[4] = tl0;
                }
                (Some(pid), None) if p[2] & 0x80 == 0 => p[2] = pid as u8,
                (None, None) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn a_new_source_continues_the_ids_and_one_source_keeps_its_steps() {
        let mut v = Vp8Ids::default();
        for (pid, tl0) in [(100, 7), (100, 7), (101, 7), (102, 8)] {
            let mut p = pkt(pid, tl0);
            v.rewrite(1, &mut p);
            assert_eq!(ids(&p), (pid, tl0), "the first source passes unchanged");
        }
        // Another layer whose IDs lag (it was stopped for a while): re-based after 102/8.
        let mut p = pkt(40, 200);
        v.rewrite(2, &mut p);
        assert_eq!(ids(&p), (103, 9));
        let mut p = pkt(42, 201);
        v.rewrite(2, &mut p);
        assert_eq!(ids(&p), (105, 10), "its own steps are kept");
        // Wrapping at 2^15 and 2^8; the other bytes untouched.
        let mut v = Vp8Ids::default();
        let mut p = pkt(0x7fff, 255);
        v.rewrite(1, &mut p);
        let mut p = pkt(5, 3);
        v.rewrite(2, &mut p);
        assert_eq!(ids(&p), (0, 0));
        assert_eq!((p[0], p[1], p[5]), (0x90, 0xc0, 0x55));
    }

    #[test]
    fn payloads_without_ids_or_truncated_are_left_alone() {
        let mut v = Vp8Ids::default();
        for p in [
            vec![0x10, 0x00],
            vec![0x90],
            vec![0x90, 0x80],
            vec![0x90, 0x80, 0x81],
            vec![],
        ] {
            let mut q = p.clone();
            v.rewrite(1, &mut q);
            assert_eq!(p, q);
        }
        // 7-bit picture ID.
        let mut p = vec![0x90, 0x80, 0x05, 0x00];
        v.rewrite(1, &mut p);
        let mut q = vec![0x90, 0x80, 0x70, 0x00];
        v.rewrite(2, &mut q);
        assert_eq!(q[2], 0x06);
    }
}
