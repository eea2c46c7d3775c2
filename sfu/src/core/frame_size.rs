//! The picture size a video RTP payload announces, for adaptive stream: a consumer is
//! capped at the smallest simulcast layer that fills its subscriber's element, and RTP
//! does not say how large a layer is. The bitstream does, at key frames:
//!
//! - **VP8**: the key frame header (RFC 6386 §9.1), read in `simulcast.rs`;
//! - **H.264**: the sequence parameter set (ITU-T H.264 §7.3.2.1.1) that precedes every
//!   IDR picture (Chromium sends it in the key frame's first packet: a STAP-A with the SPS
//!   and PPS). Read in a single NAL unit, in a STAP-A, or at the start of an FU-A. The
//!   coded size is in macroblocks, so most sizes need the frame cropping rectangle
//!   (320x180 is coded as 320x192 with 12 rows cropped), whose units depend on the chroma
//!   format that the High profiles carry;
//! - **VP9**: the uncompressed header of a frame (VP9 bitstream specification §6.2): a
//!   key frame and an intra-only frame carry their size, an inter frame carries it unless
//!   it takes a reference's. Every spatial layer of an SVC picture is its own frame with
//!   its own header. When the payload descriptor's scalability structure lists the
//!   spatial layers' resolutions, the top one is what a receiver of the whole stream
//!   (a simulcast layer) shows.
//!
//! Sans-IO and allocation-free; every byte comes from the network, so every read is
//! checked: a short or out-of-range header is a [`FrameSizeError`], never a panic (fuzzed:
//! `fuzz/fuzz_targets/frame_size.rs`). Only key frames are read (the core calls this for a
//! layer's key-frame start), so the cost is nothing per ordinary packet.

use str0m::format::Codec;

use super::vp9::{self, Vp9Error};

/// Why a payload's picture size could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSizeError {
    /// The payload ends inside the header (or inside an aggregation unit).
    Truncated,
    /// An Exp-Golomb code longer than 32 bits (H.264).
    BadExpGolomb,
    /// A field outside what the specification allows; names the field.
    OutOfRange(&'static str),
    /// Not a VP9 frame: wrong frame marker or sync code.
    NotVp9,
    /// The VP9 payload descriptor is unreadable.
    Vp9Descriptor(Vp9Error),
}

impl std::fmt::Display for FrameSizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameSizeError::Truncated => f.write_str("payload ends inside the frame header"),
            FrameSizeError::BadExpGolomb => f.write_str("H.264 Exp-Golomb code over 32 bits"),
            FrameSizeError::OutOfRange(field) => write!(f, "{field} out of range"),
            FrameSizeError::NotVp9 => f.write_str("not a VP9 frame (marker or sync code)"),
            FrameSizeError::Vp9Descriptor(e) => write!(f, "VP9 descriptor: {e}"),
        }
    }
}

impl std::error::Error for FrameSizeError {}

impl From<Vp9Error> for FrameSizeError {
    fn from(e: Vp9Error) -> Self {
        FrameSizeError::Vp9Descriptor(e)
    }
}

/// A picture size, width x height in pixels.
pub type Size = (u32, u32);

/// The picture size an RTP payload of `codec` announces: `Ok(None)` when this packet
/// carries none (not a key frame's first packet, an IDR slice without its SPS, a VP9
/// frame that takes a reference's size, a codec without sizes here).
pub fn frame_size(codec: Codec, payload: &[u8]) -> Result<Option<Size>, FrameSizeError> {
    match codec {
        Codec::Vp8 => Ok(super::simulcast::vp8_frame_size(payload)),
        Codec::H264 => h264_payload(payload),
        Codec::Vp9 => vp9_payload(payload),
        _ => Ok(None),
    }
}

/// A bit reader, most significant bit first; for H.264 it drops emulation prevention
/// bytes (the 0x03 after two zero bytes, §7.4.1) as it goes.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    cur: u8,
    left: u8,
    zeros: u8,
    unescape: bool,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8], unescape: bool) -> Self {
        Bits {
            data,
            pos: 0,
            cur: 0,
            left: 0,
            zeros: 0,
            unescape,
        }
    }

    fn next_byte(&mut self) -> Result<u8, FrameSizeError> {
        let b = *self.data.get(self.pos).ok_or(FrameSizeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn bit(&mut self) -> Result<bool, FrameSizeError> {
        if self.left == 0 {
            let mut b = self.next_byte()?;
            if self.unescape && self.zeros >= 2 && b == 0x03 {
                self.zeros = 0;
                b = self.next_byte()?;
            }
            self.zeros = if b == 0 {
                self.zeros.saturating_add(1)
            } else {
                0
            };
            self.cur = b;
            self.left = 8;
        }
        self.left -= 1;
        Ok((self.cur >> self.left) & 1 == 1)
    }

    /// `n` bits (at most 32) as an unsigned number.
    fn bits(&mut self, n: u8) -> Result<u32, FrameSizeError> {
        debug_assert!(n <= 32);
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | u32::from(self.bit()?);
        }
        Ok(v)
    }

    /// ue(v): unsigned Exp-Golomb (H.264 §9.1).
    fn ue(&mut self) -> Result<u32, FrameSizeError> {
        let mut zeros = 0u8;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return Err(FrameSizeError::BadExpGolomb);
            }
        }
        let rest = self.bits(zeros)?;
        // At most 2^31 - 1 + 2^31 - 1: fits.
        Ok(((1u32 << zeros) - 1) + rest)
    }

    /// ue(v) that must not exceed `max` (the field's range in the specification).
    fn ue_max(&mut self, max: u32, field: &'static str) -> Result<u32, FrameSizeError> {
        let v = self.ue()?;
        if v > max {
            return Err(FrameSizeError::OutOfRange(field));
        }
        Ok(v)
    }

    /// se(v): signed Exp-Golomb; only skipped here, its value is never needed.
    fn skip_se(&mut self) -> Result<(), FrameSizeError> {
        self.ue().map(|_| ())
    }
}

/// The SPS in an H.264 RTP payload (RFC 6184: a single NAL unit, a STAP-A, or the first
/// fragment of an FU-A), read to its picture size; `Ok(None)` when the packet has none.
pub fn h264_payload(payload: &[u8]) -> Result<Option<Size>, FrameSizeError> {
    let &b0 = payload.first().ok_or(FrameSizeError::Truncated)?;
    match b0 & 0x1f {
        7 => h264_sps(&payload[1..]).map(Some),
        24 => {
            // STAP-A: (16-bit size, NAL unit)...
            let mut rest = &payload[1..];
            while !rest.is_empty() {
                let [hi, lo, ..] = *rest else {
                    return Err(FrameSizeError::Truncated);
                };
                let size = usize::from(u16::from_be_bytes([hi, lo]));
                if size == 0 {
                    return Err(FrameSizeError::OutOfRange("STAP-A unit size"));
                }
                let unit = rest.get(2..2 + size).ok_or(FrameSizeError::Truncated)?;
                if unit[0] & 0x1f == 7 {
                    return h264_sps(&unit[1..]).map(Some);
                }
                rest = &rest[2 + size..];
            }
            Ok(None)
        }
        28 => {
            // FU-A: indicator, then S|E|R|type; the start fragment holds the SPS's head,
            // which is where the size is.
            let &fu = payload.get(1).ok_or(FrameSizeError::Truncated)?;
            if fu & 0x80 != 0 && fu & 0x1f == 7 {
                h264_sps(&payload[2..]).map(Some)
            } else {
                Ok(None)
            }
        }
        _ => Ok(None),
    }
}

/// Profiles whose SPS carries chroma_format_idc, bit depths and scaling matrices (§7.3.2.1.1).
const HIGH_PROFILES: [u32; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// The largest width or height in macroblocks accepted (16,384 pixels; level 6.2 allows
/// 139,264 macroblocks per frame, about 8,192 pixels on the longer side).
const MAX_MBS: u32 = 1024;

/// The picture size (after cropping) an H.264 sequence parameter set gives; `rbsp` is the
/// NAL unit after its one-byte header, emulation prevention bytes included.
pub fn h264_sps(rbsp: &[u8]) -> Result<Size, FrameSizeError> {
    let mut r = Bits::new(rbsp, true);
    let profile_idc = r.bits(8)?;
    r.bits(8)?; // constraint_set flags, reserved_zero_2bits
    r.bits(8)?; // level_idc
    r.ue_max(31, "seq_parameter_set_id")?;
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if HIGH_PROFILES.contains(&profile_idc) {
        chroma_format_idc = r.ue_max(3, "chroma_format_idc")?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()?;
        }
        r.ue_max(6, "bit_depth_luma_minus8")?;
        r.ue_max(6, "bit_depth_chroma_minus8")?;
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? {
            // seq_scaling_matrix_present_flag: each list present is skipped.
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue_max(12, "log2_max_frame_num_minus4")?;
    match r.ue_max(2, "pic_order_cnt_type")? {
        0 => {
            r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")?;
        }
        1 => {
            r.bit()?; // delta_pic_order_always_zero_flag
            r.skip_se()?; // offset_for_non_ref_pic
            r.skip_se()?; // offset_for_top_to_bottom_field
            let n = r.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle")?;
            for _ in 0..n {
                r.skip_se()?; // offset_for_ref_frame
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue_max(MAX_MBS - 1, "pic_width_in_mbs_minus1")? + 1;
    let height_units = r.ue_max(MAX_MBS - 1, "pic_height_in_map_units_minus1")? + 1;
    let frame_mbs_only = r.bit()?;
    if !frame_mbs_only {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    // Fields (not frame_mbs_only) code a frame as two map units high.
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let width = width_mbs * 16;
    let height = height_units * 16 * field_factor;
    if !r.bit()? {
        return Ok((width, height));
    }
    // frame_cropping_flag: offsets in chroma sample units (§7.4.2.1.1).
    let (left, right, top, bottom) = (
        u64::from(r.ue()?),
        u64::from(r.ue()?),
        u64::from(r.ue()?),
        u64::from(r.ue()?),
    );
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (sub_width, sub_height) = match chroma_array_type {
        1 => (2, 2), // 4:2:0
        2 => (2, 1), // 4:2:2
        _ => (1, 1), // monochrome, 4:4:4, separate planes
    };
    let unit_x = if chroma_array_type == 0 { 1 } else { sub_width };
    let unit_y = if chroma_array_type == 0 {
        field_factor
    } else {
        sub_height * field_factor
    };
    let crop_w = unit_x * (left + right);
    let crop_h = u64::from(unit_y) * (top + bottom);
    if crop_w >= u64::from(width) || crop_h >= u64::from(height) {
        return Err(FrameSizeError::OutOfRange("frame cropping"));
    }
    // Both below width/height (u32) after the check above.
    Ok((width - crop_w as u32, height - crop_h as u32))
}

/// scaling_list() of `size` entries (§7.3.2.1.1.1), skipped.
fn skip_scaling_list(r: &mut Bits<'_>, size: usize) -> Result<(), FrameSizeError> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let k = i64::from(r.ue()?);
            let delta = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
            if !(-128..=127).contains(&delta) {
                return Err(FrameSizeError::OutOfRange("delta_scale"));
            }
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// The picture size a VP9 RTP payload announces (RFC 9628 descriptor, then the frame):
/// the top spatial layer's resolution when the scalability structure lists them, else
/// the frame header's when the packet starts a frame (see [`vp9_frame`]).
pub fn vp9_payload(payload: &[u8]) -> Result<Option<Size>, FrameSizeError> {
    let d = vp9::parse(payload)?;
    if let Some(&(w, h)) = d.resolutions.last()
        && w > 0
        && h > 0
    {
        return Ok(Some((u32::from(w), u32::from(h))));
    }
    if !d.begin {
        return Ok(None);
    }
    vp9_frame(payload.get(d.len..).ok_or(FrameSizeError::Truncated)?)
}

/// The size a VP9 frame's uncompressed header gives (VP9 bitstream §6.2): key frames and
/// intra-only frames always; inter frames unless they take a reference frame's size
/// (`Ok(None)`, as for a frame that re-shows an earlier one).
pub fn vp9_frame(frame: &[u8]) -> Result<Option<Size>, FrameSizeError> {
    let mut r = Bits::new(frame, false);
    if r.bits(2)? != 2 {
        return Err(FrameSizeError::NotVp9); // frame_marker
    }
    let low = r.bits(1)?;
    let profile = (r.bits(1)? << 1) | low;
    if profile == 3 && r.bit()? {
        return Err(FrameSizeError::OutOfRange("reserved_zero"));
    }
    if r.bit()? {
        return Ok(None); // show_existing_frame: no header follows
    }
    let key = !r.bit()?; // frame_type: 0 is a key frame
    let show_frame = r.bit()?;
    let error_resilient = r.bit()?;
    if key {
        sync_code(&mut r)?;
        color_config(&mut r, profile)?;
        return vp9_size(&mut r).map(Some);
    }
    let intra_only = if show_frame { false } else { r.bit()? };
    if !error_resilient {
        r.bits(2)?; // reset_frame_context
    }
    if intra_only {
        sync_code(&mut r)?;
        if profile > 0 {
            color_config(&mut r, profile)?;
        }
        r.bits(8)?; // refresh_frame_flags
        return vp9_size(&mut r).map(Some);
    }
    r.bits(8)?; // refresh_frame_flags
    for _ in 0..3 {
        r.bits(4)?; // ref_frame_idx (3), ref_frame_sign_bias (1)
    }
    // frame_size_with_refs: a found_ref takes that reference's size.
    for _ in 0..3 {
        if r.bit()? {
            return Ok(None);
        }
    }
    vp9_size(&mut r).map(Some)
}

fn sync_code(r: &mut Bits<'_>) -> Result<(), FrameSizeError> {
    if r.bits(24)? != 0x49_83_42 {
        return Err(FrameSizeError::NotVp9);
    }
    Ok(())
}

/// color_config() (§6.2.2), skipped.
fn color_config(r: &mut Bits<'_>, profile: u32) -> Result<(), FrameSizeError> {
    if profile >= 2 {
        r.bit()?; // ten_or_twelve_bit
    }
    let color_space = r.bits(3)?;
    let odd_profile = profile == 1 || profile == 3;
    if color_space != 7 {
        r.bit()?; // color_range
        if odd_profile {
            r.bits(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if odd_profile {
        r.bit()?; // reserved_zero (CS_RGB)
    }
    Ok(())
}

/// frame_size(): 16-bit width and height, each minus 1.
fn vp9_size(r: &mut Bits<'_>) -> Result<Size, FrameSizeError> {
    let w = r.bits(16)? + 1;
    let h = r.bits(16)? + 1;
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).expect("hex"))
            .collect()
    }

    // Captured from Chromium 156's OpenH264 encoder (constrained baseline), the first key
    // frame of a canvas track of the size named (the encoded frame's Annex B bytes, read
    // with an encoded transform; Chromium first sends 1920x1080 at 480x270).
    const SPS_640X480: &str = "67 42 c0 1f 8c 8d 40 50 1e d3 70 10 d0 10 78 44 23 50";
    const SPS_320X180: &str = "67 42 c0 15 8c 8d 40 a0 cb cf 37 01 0d 01 07 84 42 35";
    const SPS_480X270: &str = "67 42 c0 1e 8c 8d 40 f0 47 f5 37 01 0d 01 07 84 42 35";
    const SPS_160X90: &str = "67 42 c0 0c 8c 8d 41 46 bc 93 70 10 d0 10 78 44 23 50";
    const PPS: &str = "68 ce 3c 80";

    #[test]
    fn h264_sizes_from_chromium_sps_alone_in_a_stap_a_and_in_an_fu_a() {
        for (sps, size) in [
            (SPS_640X480, (640, 480)),
            (SPS_320X180, (320, 180)),
            (SPS_480X270, (480, 270)),
            (SPS_160X90, (160, 90)),
        ] {
            let sps = hex(sps);
            // A single NAL unit packet.
            assert_eq!(h264_payload(&sps), Ok(Some(size)));
            // STAP-A (NRI 3): SPS, PPS; and PPS, SPS.
            let pps = hex(PPS);
            for units in [[&sps, &pps], [&pps, &sps]] {
                let mut stap = vec![0x78];
                for u in units {
                    stap.extend_from_slice(&(u.len() as u16).to_be_bytes());
                    stap.extend_from_slice(u);
                }
                assert_eq!(h264_payload(&stap), Ok(Some(size)), "{stap:02x?}");
            }
            // FU-A start of the SPS (indicator NRI 3 type 28, header S type 7).
            let mut fu = vec![0x7c, 0x87];
            fu.extend_from_slice(&sps[1..]);
            assert_eq!(h264_payload(&fu), Ok(Some(size)));
        }
        // Packets without an SPS: an IDR slice, its FU-A start, a STAP-A of PPS alone.
        assert_eq!(h264_payload(&hex("65 b8 00 04")), Ok(None));
        assert_eq!(h264_payload(&hex("7c 85 b8 00 04")), Ok(None));
        assert_eq!(h264_payload(&hex("78 00 04 68 ce 3c 80")), Ok(None));
        assert_eq!(
            frame_size(Codec::H264, &hex(SPS_320X180)),
            Ok(Some((320, 180)))
        );
    }

    /// Bits written MSB first, with Exp-Golomb codes: builds the headers the captures
    /// lack (High profiles, cropping in other chroma formats, fields, VP9 inter frames).
    #[derive(Default)]
    struct W {
        bits: Vec<bool>,
    }

    impl W {
        fn u(&mut self, n: u32, v: u64) -> &mut Self {
            for i in (0..n).rev() {
                self.bits.push((v >> i) & 1 == 1);
            }
            self
        }
        fn ue(&mut self, v: u64) -> &mut Self {
            let x = v + 1;
            let len = 64 - x.leading_zeros();
            self.u(len - 1, 0).u(len, x)
        }
        fn se(&mut self, v: i64) -> &mut Self {
            let k = if v > 0 { 2 * v - 1 } else { -2 * v };
            self.ue(k as u64)
        }
        fn bytes(&self) -> Vec<u8> {
            let mut out = vec![0u8; self.bits.len().div_ceil(8) + 1];
            for (i, b) in self.bits.iter().enumerate() {
                if *b {
                    out[i / 8] |= 0x80 >> (i % 8);
                }
            }
            // rbsp_stop_one_bit
            let n = self.bits.len();
            out[n / 8] |= 0x80 >> (n % 8);
            out
        }
    }

    /// A High-profile SPS (4:2:2 or 4:4:4 or monochrome, optional scaling lists, picture
    /// order type 1, fields) with a cropping window.
    fn high_sps(
        chroma: u64,
        scaling: bool,
        frame_mbs_only: bool,
        mbs: (u64, u64),
        crop: [u64; 4],
    ) -> Vec<u8> {
        let mut w = W::default();
        w.u(8, 122).u(8, 0).u(8, 40).ue(0);
        w.ue(chroma);
        if chroma == 3 {
            w.u(1, 0);
        }
        w.ue(2).ue(2).u(1, 0);
        w.u(1, u64::from(scaling));
        if scaling {
            let lists = if chroma == 3 { 12 } else { 8 };
            for i in 0..lists {
                // Lists 0 and 6 present: a few deltas, then 0 ends (next_scale 0).
                if i == 0 || i == 6 {
                    w.u(1, 1).se(5).se(-3).se(-10);
                } else {
                    w.u(1, 0);
                }
            }
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(1).u(1, 0).se(-2).se(3).ue(2).se(1).se(-1); // pic_order_cnt_type 1
        w.ue(4).u(1, 0);
        w.ue(mbs.0 - 1).ue(mbs.1 - 1);
        w.u(1, u64::from(frame_mbs_only));
        if !frame_mbs_only {
            w.u(1, 1);
        }
        w.u(1, 1);
        w.u(1, 1);
        for c in crop {
            w.ue(c);
        }
        w.bytes()
    }

    #[test]
    fn h264_high_profiles_chroma_formats_scaling_lists_and_fields_crop_right() {
        // 4:2:0 1920x1080: 120x68 macroblocks, 8 rows cropped = 4 units of 2.
        let sps = high_sps(1, true, true, (120, 68), [0, 0, 0, 4]);
        assert_eq!(h264_sps(&sps), Ok((1920, 1080)));
        // 4:2:2: vertical unit 1, horizontal 2.
        let sps = high_sps(2, false, true, (20, 12), [1, 1, 0, 12]);
        assert_eq!(h264_sps(&sps), Ok((316, 180)));
        // 4:4:4 with its 12 scaling lists: units of 1.
        let sps = high_sps(3, true, true, (20, 12), [0, 3, 0, 12]);
        assert_eq!(h264_sps(&sps), Ok((317, 180)));
        // Monochrome: units of 1 (and 2 rows for fields).
        let sps = high_sps(0, false, true, (20, 12), [2, 0, 0, 5]);
        assert_eq!(h264_sps(&sps), Ok((318, 187)));
        // Fields (interlaced): map units are field macroblock pairs, 4:2:0 crops 4 rows
        // per unit.
        let sps = high_sps(1, false, false, (45, 17), [0, 0, 0, 2]);
        assert_eq!(h264_sps(&sps), Ok((720, 536)));
        // A cropping window as large as the picture.
        let sps = high_sps(1, false, true, (20, 12), [80, 80, 0, 0]);
        assert_eq!(
            h264_sps(&sps),
            Err(FrameSizeError::OutOfRange("frame cropping"))
        );
    }

    #[test]
    fn h264_emulation_prevention_bytes_are_skipped() {
        // profile_idc 0 and constraint flags 0 then level 1: an encoder writes 00 00 03 01.
        let mut w = W::default();
        w.u(8, 0).u(8, 0).u(8, 1);
        w.ue(0).ue(0).ue(0).ue(0).ue(0).u(1, 0); // id, frame num, POC type 0 and lsb, refs
        w.ue(15).ue(0).u(1, 1).u(1, 1).u(1, 0);
        let raw = w.bytes();
        let mut escaped = raw[..2].to_vec();
        escaped.push(0x03);
        escaped.extend_from_slice(&raw[2..]);
        assert_eq!(h264_sps(&raw), Ok((256, 16)));
        assert_eq!(h264_sps(&escaped), Ok((256, 16)), "the 0x03 is dropped");
    }

    #[test]
    fn h264_garbage_is_an_error_never_a_panic() {
        // Cut anywhere: short of the cropping flag it is truncated, past it complete.
        let sps = hex(SPS_640X480);
        for n in 1..sps.len() {
            match h264_payload(&sps[..n]) {
                Err(FrameSizeError::Truncated) => assert!(n < 10, "cut at {n}"),
                Ok(Some(size)) => assert_eq!(size, (640, 480), "cut at {n}"),
                other => panic!("cut at {n}: {other:?}"),
            }
        }
        assert_eq!(h264_payload(&[]), Err(FrameSizeError::Truncated));
        assert_eq!(h264_payload(&[0x78, 0x00]), Err(FrameSizeError::Truncated));
        assert_eq!(
            h264_payload(&[0x78, 0x00, 0x00, 0x67]),
            Err(FrameSizeError::OutOfRange("STAP-A unit size"))
        );
        assert_eq!(
            h264_payload(&[0x78, 0x00, 0x09, 0x67, 0x42]),
            Err(FrameSizeError::Truncated)
        );
        // 40 zero bits: no Exp-Golomb code ends.
        assert_eq!(
            h264_sps(&[0x42, 0, 0, 0, 0, 0, 0, 0, 0x80]),
            Err(FrameSizeError::BadExpGolomb)
        );
        // chroma_format_idc 4 in a High profile.
        let mut w = W::default();
        w.u(8, 100).u(8, 0).u(8, 0).ue(0).ue(4);
        assert_eq!(
            h264_sps(&w.bytes()),
            Err(FrameSizeError::OutOfRange("chroma_format_idc"))
        );
        // Every byte string of a fixed pseudo-random sequence: some answer.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len % 40)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = h264_payload(&bytes);
            let _ = vp9_payload(&bytes);
            let _ = vp9_frame(&bytes);
        }
    }

    // Captured from Chromium's libvpx VP9 encoder (profile 0), the first key frame's
    // leading bytes (320x180, 320x240).
    const VP9_KEY_320X180: &str = "82 49 83 42 00 13 f0 0b 34 0e 38 24 1c 18 a2 00";
    const VP9_KEY_320X240: &str = "82 49 83 42 00 13 f0 0e f4 10 38 24 1c 18 c4 00";

    #[test]
    fn vp9_key_frame_sizes_from_chromium_and_through_the_descriptor() {
        assert_eq!(vp9_frame(&hex(VP9_KEY_320X180)), Ok(Some((320, 180))));
        assert_eq!(vp9_frame(&hex(VP9_KEY_320X240)), Ok(Some((320, 240))));
        // In an RTP payload: descriptor I|L|B (15-bit picture id, layer byte, TL0PICIDX).
        let mut p = hex("a8 80 05 00 07");
        p.extend(hex(VP9_KEY_320X240));
        assert_eq!(vp9_payload(&p), Ok(Some((320, 240))));
        assert_eq!(frame_size(Codec::Vp9, &p), Ok(Some((320, 240))));
        // Not a frame start (B clear): nothing to read.
        p[0] = 0xa0;
        assert_eq!(vp9_payload(&p), Ok(None));
        // A scalability structure listing resolutions (V; N_S = 2 spatial layers, Y, no G):
        // the top one.
        let mut ss = hex("8a 80 05 30 00 a0 00 78 01 40 00 f0");
        ss.extend(hex(VP9_KEY_320X240));
        assert_eq!(vp9_payload(&ss), Ok(Some((320, 240))));
    }

    #[test]
    fn vp9_intra_only_and_inter_frames_sizes_per_spatial_layer() {
        // An upper spatial layer of an SVC key picture is an inter frame predicted from
        // the layer below (another size): its header has no found_ref and its own size.
        let inter = |profile: u64, found: usize, w: u64, h: u64| {
            let mut b = W::default();
            b.u(2, 2).u(1, profile & 1).u(1, profile >> 1);
            if profile == 3 {
                b.u(1, 0);
            }
            b.u(1, 0).u(1, 1).u(1, 1).u(1, 0); // not existing, inter, shown, not resilient
            b.u(2, 0).u(8, 1);
            for i in 0..3 {
                b.u(3, i).u(1, 0);
            }
            for i in 0..3 {
                b.u(1, u64::from(i == found));
            }
            b.u(16, w - 1).u(16, h - 1);
            b.bytes()
        };
        assert_eq!(vp9_frame(&inter(0, 9, 640, 360)), Ok(Some((640, 360))));
        assert_eq!(vp9_frame(&inter(3, 9, 1280, 720)), Ok(Some((1280, 720))));
        assert_eq!(
            vp9_frame(&inter(0, 1, 640, 360)),
            Ok(None),
            "a reference's size"
        );
        // Intra-only (not shown), profile 1: sync code, colour config, refresh flags.
        let mut b = W::default();
        b.u(2, 2).u(1, 1).u(1, 0).u(1, 0).u(1, 1).u(1, 0).u(1, 0);
        b.u(1, 1).u(2, 0).u(24, 0x49_83_42);
        b.u(3, 1).u(1, 0).u(3, 0); // colour space, range, subsampling x/y, reserved
        b.u(8, 0xff).u(16, 159).u(16, 89);
        assert_eq!(vp9_frame(&b.bytes()), Ok(Some((160, 90))));
        // show_existing_frame: no header.
        assert_eq!(vp9_frame(&[0x88]), Ok(None));
    }

    #[test]
    fn vp9_garbage_is_an_error_never_a_panic() {
        let key = hex(VP9_KEY_320X180);
        for n in 0..9 {
            assert_eq!(
                vp9_frame(&key[..n]),
                Err(FrameSizeError::Truncated),
                "cut at {n}"
            );
        }
        assert_eq!(vp9_frame(&[0x42, 0x49]), Err(FrameSizeError::NotVp9));
        let mut bad_sync = key.clone();
        bad_sync[2] = 0x84;
        assert_eq!(vp9_frame(&bad_sync), Err(FrameSizeError::NotVp9));
        assert_eq!(
            vp9_payload(&[0x88]),
            Err(FrameSizeError::Vp9Descriptor(Vp9Error::Truncated))
        );
        assert_eq!(vp9_payload(&[0x08]), Err(FrameSizeError::Truncated));
    }
}
