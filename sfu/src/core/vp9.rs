//! The VP9 RTP payload descriptor (RFC 9628, formerly draft-ietf-payload-vp9), read so a
//! consumer can forward only the spatial and temporal layers of an SVC stream at or below
//! its target (`svc.rs`). Chromium sends SVC (`scalabilityMode: 'L3T3_KEY'`, `'L1T3'`) as
//! one RTP stream: every spatial layer of a picture is its own frame (B..E) under the
//! picture's timestamp, and the marker bit ends the picture.
//!
//! ```text
//!  I|P|L|F|B|E|V|Z           first byte
//!  M|PICTURE ID (7 or 15)    if I
//!  TID(3)|U|SID(3)|D         if L
//!  TL0PICIDX                 if L and not F (non-flexible mode)
//!  P_DIFF(7)|N  (up to 3)    if F and P (flexible mode reference list)
//!  scalability structure     if V
//! ```
//!
//! Every field comes from the network: lengths are checked and a short or inconsistent
//! descriptor is an error (fuzzed: `fuzz/fuzz_targets/vp9_descriptor.rs`); the core
//! then forwards the packet as it came, outside the SVC path.

use super::svc::LayerFrame;

/// Why a VP9 payload descriptor could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vp9Error {
    /// The payload ends inside the descriptor.
    Truncated,
    /// A flexible-mode reference list longer than the three the format allows.
    TooManyReferences,
}

impl std::fmt::Display for Vp9Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Vp9Error::Truncated => "VP9 payload ends inside its descriptor",
            Vp9Error::TooManyReferences => "VP9 descriptor lists more than 3 references",
        })
    }
}

impl std::error::Error for Vp9Error {}

/// Layer indices of a packet (the descriptor's L byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerIndex {
    /// Temporal layer.
    pub tid: u8,
    /// Switching up point: from here on a decoder on a lower temporal layer may add this one.
    pub switch_up: bool,
    /// Spatial layer.
    pub sid: u8,
    /// Inter-layer dependency: this frame uses the spatial layer below.
    pub inter_layer: bool,
}

/// One packet's VP9 payload descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Picture ID (7 or 15 bits), when present.
    pub picture_id: Option<u16>,
    /// P: the frame references earlier pictures (inter-picture predicted).
    pub inter_picture: bool,
    /// Layer indices, when present (an SVC stream always sends them).
    pub layer: Option<LayerIndex>,
    /// F: flexible mode.
    pub flexible: bool,
    /// B: the packet starts a (layer) frame.
    pub begin: bool,
    /// E: the packet ends a (layer) frame.
    pub end: bool,
    /// Z: this frame is not used by the upper spatial layers.
    pub not_upper_ref: bool,
    /// TL0PICIDX (non-flexible mode).
    pub tl0_pic_idx: Option<u8>,
    /// Resolutions of the spatial layers from the scalability structure (V), lowest first.
    pub resolutions: Vec<(u16, u16)>,
    /// Number of spatial layers the scalability structure declares (V), if present.
    pub spatial_layers: Option<u8>,
    /// Descriptor length in bytes (the VP9 frame data follows).
    pub len: usize,
}

impl Descriptor {
    /// Spatial layer (0 without layer indices).
    pub fn sid(&self) -> u8 {
        self.layer.map_or(0, |l| l.sid)
    }

    /// Temporal layer (0 without layer indices).
    pub fn tid(&self) -> u8 {
        self.layer.map_or(0, |l| l.tid)
    }

    /// This packet starts a picture a decoder can start from: the first packet of spatial
    /// layer 0 of a key frame.
    pub fn starts_keyframe(&self) -> bool {
        self.begin && !self.inter_picture && self.sid() == 0
    }

    /// This packet starts a new picture (its lowest spatial layer's first packet).
    pub fn starts_picture(&self) -> bool {
        self.begin && self.sid() == 0
    }

    /// What the SVC code needs (`svc.rs`), when the descriptor has layer indices (an SVC
    /// stream always sends them).
    pub fn layer_frame(&self) -> Option<LayerFrame> {
        let l = self.layer?;
        Some(LayerFrame {
            sid: l.sid,
            tid: l.tid,
            begin: self.begin,
            end: self.end,
            switch_up: l.switch_up,
            inter_picture: self.inter_picture,
            declares_spatial: self.spatial_layers,
        })
    }
}

/// A cursor over the descriptor bytes.
struct Reader<'a> {
    p: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, Vp9Error> {
        let b = *self.p.get(self.at).ok_or(Vp9Error::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, Vp9Error> {
        Ok((u16::from(self.u8()?) << 8) | u16::from(self.u8()?))
    }

    fn skip(&mut self, n: usize) -> Result<(), Vp9Error> {
        if self.p.len() - self.at < n {
            return Err(Vp9Error::Truncated);
        }
        self.at += n;
        Ok(())
    }
}

/// Read the descriptor at the start of a VP9 RTP payload.
pub fn parse(payload: &[u8]) -> Result<Descriptor, Vp9Error> {
    let mut r = Reader { p: payload, at: 0 };
    let b0 = r.u8()?;
    let bit = |n: u8| b0 & (0x80 >> n) != 0;
    let (i, p, l, f, b, e, v, z) = (
        bit(0),
        bit(1),
        bit(2),
        bit(3),
        bit(4),
        bit(5),
        bit(6),
        bit(7),
    );
    let picture_id = if i {
        let m = r.u8()?;
        Some(if m & 0x80 != 0 {
            (u16::from(m & 0x7f) << 8) | u16::from(r.u8()?)
        } else {
            u16::from(m)
        })
    } else {
        None
    };
    let mut tl0_pic_idx = None;
    let layer = if l {
        let x = r.u8()?;
        if !f {
            tl0_pic_idx = Some(r.u8()?);
        }
        Some(LayerIndex {
            tid: x >> 5,
            switch_up: x & 0x10 != 0,
            sid: (x >> 1) & 0x07,
            inter_layer: x & 0x01 != 0,
        })
    } else {
        None
    };
    if f && p {
        let mut refs = 0;
        loop {
            let d = r.u8()?;
            refs += 1;
            if d & 0x01 == 0 {
                break;
            }
            if refs == 3 {
                return Err(Vp9Error::TooManyReferences);
            }
        }
    }
    let mut resolutions = Vec::new();
    let mut spatial_layers = None;
    if v {
        let s = r.u8()?;
        let n_s = (s >> 5) + 1;
        spatial_layers = Some(n_s);
        if s & 0x10 != 0 {
            for _ in 0..n_s {
                resolutions.push((r.u16()?, r.u16()?));
            }
        }
        if s & 0x08 != 0 {
            let n_g = r.u8()?;
            for _ in 0..n_g {
                let g = r.u8()?;
                let refs = usize::from((g >> 2) & 0x03);
                r.skip(refs)?;
            }
        }
    }
    Ok(Descriptor {
        picture_id,
        inter_picture: p,
        layer,
        flexible: f,
        begin: b,
        end: e,
        not_upper_ref: z,
        tl0_pic_idx,
        resolutions,
        spatial_layers,
        len: r.at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_non_flexible_svc_key_frame_with_its_scalability_structure() {
        // I P L F B E V Z = 1 0 1 0 1 0 1 0; 15-bit picture id 0x1234; TID 0 U 0 SID 0 D 0;
        // TL0PICIDX 7; SS: N_S = 3 layers, Y, G with one group of one reference.
        let p = [
            0b1010_1010,
            0x80 | 0x12,
            0x34,
            0x00,
            7,
            0b0101_1000, // N_S-1 = 2, Y, G
            0,
            160,
            0,
            120,
            1,
            64,
            0,
            240,
            2,
            128,
            1,
            224,
            1,
            0b0001_0100, // TID 0, U, R = 1
            1,
            0xAA, // frame data
        ];
        let d = parse(&p).unwrap();
        assert_eq!(d.picture_id, Some(0x1234));
        assert!(d.starts_keyframe() && d.starts_picture() && !d.end);
        assert_eq!(d.tl0_pic_idx, Some(7));
        assert_eq!(d.spatial_layers, Some(3));
        assert_eq!(d.resolutions, [(160, 120), (320, 240), (640, 480)]);
        assert_eq!(d.len, p.len() - 1);
    }

    #[test]
    fn reads_layer_indices_in_flexible_mode() {
        // I P L F B E = 1 1 1 1 0 1; 7-bit picture id; TID 2 U 1 SID 1 D 1; two P_DIFFs.
        let p = [
            0b1111_0100,
            0x05,
            (2 << 5) | 0x10 | (1 << 1) | 1,
            0x03,
            0x04,
            0xAA,
        ];
        let d = parse(&p).unwrap();
        assert_eq!(d.picture_id, Some(5));
        assert_eq!(
            d.layer,
            Some(LayerIndex {
                tid: 2,
                switch_up: true,
                sid: 1,
                inter_layer: true
            })
        );
        assert!(d.inter_picture && d.end && !d.begin && d.flexible);
        assert_eq!((d.sid(), d.tid(), d.len), (1, 2, 5));
        // Without layer indices: layer 0.
        let d = parse(&[0x08, 0xAA]).unwrap();
        assert_eq!((d.sid(), d.tid(), d.len), (0, 0, 1));
        assert!(d.starts_keyframe());
    }

    #[test]
    fn short_or_inconsistent_descriptors_are_errors() {
        assert_eq!(parse(&[]), Err(Vp9Error::Truncated));
        assert_eq!(
            parse(&[0x80]),
            Err(Vp9Error::Truncated),
            "I without picture id"
        );
        assert_eq!(
            parse(&[0x80, 0x80]),
            Err(Vp9Error::Truncated),
            "M without 2nd byte"
        );
        assert_eq!(
            parse(&[0x20, 0x00]),
            Err(Vp9Error::Truncated),
            "L without TL0PICIDX"
        );
        assert_eq!(
            parse(&[0x50, 0x01, 0x01, 0x01, 0x01]),
            Err(Vp9Error::TooManyReferences)
        );
        assert_eq!(
            parse(&[0x50, 0x01]),
            Err(Vp9Error::Truncated),
            "N set, list cut"
        );
        // SS announcing 8 resolutions with 2 present.
        assert_eq!(
            parse(&[0x02, 0b1111_0000, 0, 1, 0, 1, 0, 2, 0, 2]),
            Err(Vp9Error::Truncated)
        );
        // SS group with references past the end.
        assert_eq!(
            parse(&[0x02, 0b0000_1000, 1, 0b0000_1100, 1]),
            Err(Vp9Error::Truncated)
        );
    }
}
