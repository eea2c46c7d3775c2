//! AV1 SVC: where the dependency descriptor (`av1_dd.rs`) meets str0m and the SVC code.
//!
//! - **Negotiation**: str0m 0.25 does not know the extension; an `Extension::with_serializer`
//!   entry in every transport's extension map ([`extension`], id [`EXTMAP_ID`]) makes it
//!   answer a publisher's `a=extmap` for the URI (str0m moves our id to the offer's) and
//!   offer it to subscribers on video m-lines. Chromium offers it on every video m-line.
//! - **Carrying**: the serializer ([`DependencyDescriptorExt`]) keeps the raw bytes of a
//!   received descriptor in the packet's `ExtensionValues::user_values` ([`DdBytes`]) and
//!   writes them back out on a forwarded packet. The forwarder passes them on unchanged
//!   for AV1 streams without simulcast; for other codecs and simulcast layers it removes
//!   them (see `forward.rs`), so what those subscribers get is what it was before.
//! - **Layers**: [`Av1Stream`] (per producer) remembers the template structure last sent
//!   (on key frames) and turns each packet's descriptor into a `LayerFrame`, including
//!   whether the frame references an earlier picture (the spatial up-switch rule).
//!
//! Why forwarding the descriptor unchanged works when layers are dropped: every frame's
//! own references stay in the layers at or below it (that is what the layers mean), the
//! receiver builds its frame references from the descriptor's frame numbers and fdiffs,
//! and gaps in frame numbers are not losses to it (sequence numbers are what it NACKs,
//! and those stay gapless). Chromium decodes such a stream (tests/e2e/browser-av1-svc.test.js).

use std::sync::Arc;

use str0m::rtp::{Extension, ExtensionSerializer, ExtensionValues};

use super::av1_dd::{self, DdError, Structure};
use super::svc::LayerFrame;

/// Our extmap id for the dependency descriptor (free in str0m's standard map; a
/// publisher's offer moves it to the browser's id).
pub const EXTMAP_ID: u8 = 12;

/// Longest descriptor carried (the two-byte header form's limit).
const MAX_LEN: usize = 255;

/// A received dependency descriptor, as it came (the extension's bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdBytes(pub Vec<u8>);

/// str0m serializer for the dependency descriptor: raw bytes in, raw bytes out.
#[derive(Debug)]
pub struct DependencyDescriptorExt;

impl ExtensionSerializer for DependencyDescriptorExt {
    fn write_to(&self, buf: &mut [u8], ev: &ExtensionValues) -> usize {
        match ev.user_values.get::<DdBytes>() {
            Some(DdBytes(b)) if b.len() <= buf.len() && !b.is_empty() => {
                buf[..b.len()].copy_from_slice(b);
                b.len()
            }
            _ => 0,
        }
    }

    fn parse_value(&self, buf: &[u8], ev: &mut ExtensionValues) -> bool {
        // Three bytes of mandatory fields at least; anything else is not a descriptor.
        if buf.len() < 3 || buf.len() > MAX_LEN {
            return false;
        }
        ev.user_values.set(DdBytes(buf.to_vec()));
        true
    }

    fn is_video(&self) -> bool {
        true
    }

    fn is_audio(&self) -> bool {
        false
    }

    fn requires_two_byte_form(&self, ev: &ExtensionValues) -> bool {
        // The one-byte form holds 1..=16 bytes; a descriptor with a structure is longer.
        ev.user_values
            .get::<DdBytes>()
            .is_some_and(|DdBytes(b)| b.len() > 16)
    }
}

/// The extension-map entry for the dependency descriptor.
pub fn extension() -> Extension {
    Extension::with_serializer(av1_dd::URI, DependencyDescriptorExt)
}

/// Per-producer state of an AV1 stream's descriptors.
#[derive(Debug, Default)]
pub struct Av1Stream {
    /// The template structure in force (the last one a descriptor carried).
    structure: Option<Arc<Structure>>,
    /// Frame number of the current picture's first frame (spatial layer 0's).
    picture_start: Option<u16>,
}

impl Av1Stream {
    /// Read one packet's descriptor into the layers it belongs to. An error leaves the
    /// state as it was (the packet is then forwarded outside the SVC path).
    pub fn frame(&mut self, ext: &[u8]) -> Result<LayerFrame, DdError> {
        let d = av1_dd::parse(ext, self.structure.as_ref())?;
        let declares_spatial = d.structure.as_ref().map(|s| s.spatial_layers());
        if let Some(s) = d.structure {
            self.structure = Some(s);
        }
        if d.start_of_frame && d.spatial == 0 {
            self.picture_start = Some(d.frame_number);
        }
        // A reference to a frame before this picture's first one: inter-picture predicted.
        // (Frame numbers wrap at 16 bits; compare within half the range.)
        let inter_picture = match self.picture_start {
            Some(start) => d.fdiffs.iter().any(|&fd| {
                let referenced = d.frame_number.wrapping_sub(fd);
                (start.wrapping_sub(referenced) as i16) > 0
            }),
            None => !d.fdiffs.is_empty(),
        };
        Ok(LayerFrame {
            sid: d.spatial,
            tid: d.temporal,
            begin: d.start_of_frame,
            end: d.end_of_frame,
            switch_up: d.dtis.any_switch(d.decode_targets),
            inter_picture,
            declares_spatial,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use av1_dd::BitWriter;

    /// L2T1 with `L2T1_KEY`-like references: template 0 S0 key (no refs), 1 S0 delta
    /// (ref 2), 2 S1 on a key picture (ref 1: S0 of the picture), 3 S1 delta (ref 2).
    fn key(frame: u16) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.put(1, 1).put(1, 1).put(6, 0).put(16, u32::from(frame));
        w.put(5, 0b10000);
        w.put(6, 0).put(5, 1); // offset 0, 2 decode targets
        w.put(2, 0).put(2, 2).put(2, 0).put(2, 3); // S0, S0, S1, S1
        for dtis in [[2, 2], [3, 3], [0, 2], [0, 3]] {
            for d in dtis {
                w.put(2, d);
            }
        }
        w.put(1, 0); // no refs
        w.put(1, 1).put(4, 1).put(1, 0); // 2
        w.put(1, 1).put(4, 0).put(1, 0); // 1
        w.put(1, 1).put(4, 1).put(1, 0); // 2
        w.put(1, 0); // ns(3) = 0 (one bit): no chains
        w.put(1, 0); // no resolutions
        w.finish()
    }

    fn plain(template: u32, frame: u16) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.put(1, 1)
            .put(1, 1)
            .put(6, template)
            .put(16, u32::from(frame));
        w.finish()
    }

    #[test]
    fn key_pictures_let_the_upper_layer_join_and_delta_pictures_do_not() {
        let mut s = Av1Stream::default();
        assert_eq!(s.frame(&plain(1, 9)), Err(DdError::NoStructure));
        let k = s.frame(&key(65534)).unwrap();
        assert!(k.starts_keyframe());
        assert_eq!(k.declares_spatial, Some(2));
        // S1 of the key picture: references S0 of the same picture (frame numbers wrap).
        let s1 = s.frame(&plain(2, 65535)).unwrap();
        assert_eq!((s1.sid, s1.inter_picture), (1, false));
        // Next picture: S0 and S1 reference the previous picture.
        let s0 = s.frame(&plain(1, 0)).unwrap();
        assert!(s0.starts_picture() && !s0.starts_keyframe() && s0.inter_picture);
        let s1 = s.frame(&plain(3, 1)).unwrap();
        assert_eq!(
            (s1.sid, s1.inter_picture, s1.declares_spatial),
            (1, true, None)
        );
        // A bad descriptor keeps the structure.
        assert!(s.frame(&[0xff]).is_err());
        assert!(s.frame(&plain(0, 2)).is_ok());
    }

    #[test]
    fn the_serializer_carries_the_bytes_and_picks_the_header_form() {
        let mut ev = ExtensionValues::default();
        assert!(!DependencyDescriptorExt.parse_value(&[1, 2], &mut ev));
        let k = key(1);
        assert!(k.len() > 3);
        assert!(DependencyDescriptorExt.parse_value(&k, &mut ev));
        assert_eq!(ev.user_values.get::<DdBytes>(), Some(&DdBytes(k.clone())));
        let mut buf = [0u8; 64];
        assert_eq!(DependencyDescriptorExt.write_to(&mut buf, &ev), k.len());
        assert_eq!(&buf[..k.len()], &k[..]);
        assert!(!DependencyDescriptorExt.requires_two_byte_form(&ev));
        ev.user_values.set(DdBytes(vec![0; 17]));
        assert!(DependencyDescriptorExt.requires_two_byte_form(&ev));
        assert_eq!(DependencyDescriptorExt.write_to(&mut buf[..10], &ev), 0);
    }
}
