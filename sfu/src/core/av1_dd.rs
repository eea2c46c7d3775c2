//! The AV1 *dependency descriptor* RTP header extension (AV1 RTP specification, appendix
//! "Dependency Descriptor RTP Header Extension"), read so a consumer can forward only the
//! spatial and temporal layers of an AV1 SVC stream at or below its target (`svc.rs`).
//! Unlike VP9, the AV1 payload says nothing about layers: the descriptor does, by naming
//! a *template* of a structure sent earlier (on key frames), and each template carries the
//! frame's spatial and temporal id, its decode target indications and its references.
//!
//! ```text
//!  start_of_frame(1) end_of_frame(1) frame_dependency_template_id(6) frame_number(16)
//!  if longer than 3 bytes:
//!    structure_present(1) active_decode_targets_present(1)
//!    custom_dtis(1) custom_fdiffs(1) custom_chains(1)
//!    template dependency structure          if structure_present
//!    active_decode_targets_bitmask(DtCnt)   if active_decode_targets_present
//!  frame dtis (2 bits per decode target)   if custom_dtis
//!  frame fdiffs (2-bit size, 4/8/12 bits)  if custom_fdiffs
//!  frame chain fdiffs (8 bits per chain)   if custom_chains
//!  zero padding
//! ```
//!
//! The parser is sans-IO and keeps no state: the caller passes the structure last seen on
//! the stream (`av1_svc.rs` remembers it per producer). Every field comes from the network:
//! a descriptor that ends early, names a template the structure lacks, or declares more
//! than the format allows is an error, never a panic (fuzzed:
//! `fuzz/fuzz_targets/av1_dd.rs`).

use std::sync::Arc;

/// The header extension's URI (SDP `a=extmap`).
pub const URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/// Decode targets a structure may declare (`dt_cnt_minus_one` is 5 bits).
pub const MAX_DECODE_TARGETS: usize = 32;
/// Templates a structure may declare (template ids are 6 bits).
pub const MAX_TEMPLATES: usize = 64;
/// Spatial and temporal ids the SFU handles (the SVC code keeps 3-bit layer indices).
pub const MAX_LAYER_ID: u8 = 7;

/// Why a dependency descriptor could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdError {
    /// The extension ends inside a field (or is shorter than the 3 mandatory bytes).
    Truncated,
    /// No template structure in this descriptor and none seen before on the stream.
    NoStructure,
    /// The frame's template id names no template of the structure.
    UnknownTemplate,
    /// A structure with more than 64 templates.
    TooManyTemplates,
    /// A template with a spatial or temporal id above 7.
    LayerOutOfRange,
}

impl std::fmt::Display for DdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DdError::Truncated => "dependency descriptor ends inside a field",
            DdError::NoStructure => "dependency descriptor without a known template structure",
            DdError::UnknownTemplate => "dependency descriptor names an unknown template",
            DdError::TooManyTemplates => "dependency descriptor structure has over 64 templates",
            DdError::LayerOutOfRange => "dependency descriptor template layer id above 7",
        })
    }
}

impl std::error::Error for DdError {}

/// Decode target indication of a frame for one decode target (2 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dti {
    /// The frame is not in this decode target.
    NotPresent,
    /// In it, and no later frame of it depends on this one.
    Discardable,
    /// In it, and a decoder may start decoding the target here (a switch point).
    Switch,
    /// In it, and needed by later frames of it.
    Required,
}

impl Dti {
    fn from_bits(b: u32) -> Dti {
        match b & 3 {
            0 => Dti::NotPresent,
            1 => Dti::Discardable,
            2 => Dti::Switch,
            _ => Dti::Required,
        }
    }
}

/// Decode target indications, 2 bits per decode target (target 0 in the low bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dtis(u64);

impl Dtis {
    /// The indication for decode target `dt`.
    pub fn get(&self, dt: usize) -> Dti {
        if dt >= MAX_DECODE_TARGETS {
            return Dti::NotPresent;
        }
        Dti::from_bits((self.0 >> (2 * dt)) as u32)
    }

    fn set(&mut self, dt: usize, bits: u32) {
        self.0 |= u64::from(bits & 3) << (2 * dt);
    }

    /// Whether any decode target may be switched to at this frame.
    pub fn any_switch(&self, targets: usize) -> bool {
        (0..targets).any(|dt| self.get(dt) == Dti::Switch)
    }
}

/// One frame template of a structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Spatial id of frames using it.
    pub spatial: u8,
    /// Temporal id of frames using it.
    pub temporal: u8,
    /// Decode target indications.
    pub dtis: Dtis,
    /// Frame number differences of the frames it references (1..=16 each).
    pub fdiffs: Vec<u16>,
}

/// A template dependency structure (sent on key frames; valid until the next).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure {
    /// The template id of template 0 (ids count on from it modulo 64).
    pub template_id_offset: u8,
    /// Number of decode targets.
    pub decode_targets: usize,
    /// The templates, in the order the structure lists them.
    pub templates: Vec<Template>,
    /// Number of chains (0: none).
    pub chains: usize,
    /// Render resolution per spatial layer (width, height), lowest first, when sent.
    pub resolutions: Vec<(u32, u32)>,
}

impl Structure {
    /// Spatial layers the structure declares (highest template spatial id + 1).
    pub fn spatial_layers(&self) -> u8 {
        self.templates
            .iter()
            .map(|t| t.spatial)
            .max()
            .map_or(0, |s| s + 1)
    }

    /// The template a frame's template id names.
    pub fn template(&self, template_id: u8) -> Result<&Template, DdError> {
        let i = (usize::from(template_id) + MAX_TEMPLATES - usize::from(self.template_id_offset))
            % MAX_TEMPLATES;
        self.templates.get(i).ok_or(DdError::UnknownTemplate)
    }
}

/// One packet's dependency descriptor, its template resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The packet starts a frame.
    pub start_of_frame: bool,
    /// The packet ends a frame.
    pub end_of_frame: bool,
    /// The template id (6 bits).
    pub template_id: u8,
    /// Frame number (16 bits, wrapping; one per frame, each spatial layer's frame its own).
    pub frame_number: u16,
    /// The structure this descriptor carried (a key frame's), if any.
    pub structure: Option<Arc<Structure>>,
    /// Active decode targets (bit i: target i), when this descriptor says.
    pub active_decode_targets: Option<u32>,
    /// Spatial id of the frame (from its template).
    pub spatial: u8,
    /// Temporal id of the frame (from its template).
    pub temporal: u8,
    /// The frame's decode target indications (the template's, or the custom ones).
    pub dtis: Dtis,
    /// Number of decode targets of the structure in force.
    pub decode_targets: usize,
    /// Frame number differences of the frames this frame references.
    pub fdiffs: Vec<u16>,
}

/// A bit cursor over the extension bytes (most significant bit first).
struct Bits<'a> {
    b: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn f(&mut self, n: usize) -> Result<u32, DdError> {
        debug_assert!(n <= 32);
        if self.at + n > self.b.len() * 8 {
            return Err(DdError::Truncated);
        }
        let mut v: u64 = 0;
        for _ in 0..n {
            let bit = (self.b[self.at / 8] >> (7 - self.at % 8)) & 1;
            v = (v << 1) | u64::from(bit);
            self.at += 1;
        }
        // At most 32 bits were read.
        Ok(v as u32)
    }

    fn flag(&mut self) -> Result<bool, DdError> {
        Ok(self.f(1)? == 1)
    }

    /// `ns(n)`: a value in 0..n with the non-symmetric (truncated binary) code.
    fn ns(&mut self, n: u32) -> Result<u32, DdError> {
        let w = 32 - n.leading_zeros() as usize; // bits to write n
        if w == 0 {
            return Ok(0);
        }
        let m = (1u32 << w) - n;
        let v = self.f(w - 1)?;
        if v < m {
            return Ok(v);
        }
        let extra = self.f(1)?;
        Ok((v << 1) - m + extra)
    }
}

/// Read a dependency descriptor. `known`: the structure last seen on the stream (used when
/// this descriptor carries none).
pub fn parse(ext: &[u8], known: Option<&Arc<Structure>>) -> Result<Descriptor, DdError> {
    if ext.len() < 3 {
        return Err(DdError::Truncated);
    }
    let mut r = Bits { b: ext, at: 0 };
    let start_of_frame = r.flag()?;
    let end_of_frame = r.flag()?;
    let template_id = r.f(6)? as u8;
    let frame_number = r.f(16)? as u16;
    let (mut custom_dtis, mut custom_fdiffs, mut custom_chains) = (false, false, false);
    let mut structure = None;
    let mut active_decode_targets = None;
    if ext.len() > 3 {
        let structure_present = r.flag()?;
        let active_present = r.flag()?;
        custom_dtis = r.flag()?;
        custom_fdiffs = r.flag()?;
        custom_chains = r.flag()?;
        if structure_present {
            let s = read_structure(&mut r)?;
            active_decode_targets = Some(mask(s.decode_targets));
            structure = Some(Arc::new(s));
        }
        if active_present {
            let dts = structure
                .as_ref()
                .or(known)
                .ok_or(DdError::NoStructure)?
                .decode_targets;
            active_decode_targets = Some(r.f(dts)?);
        }
    }
    let s = structure.as_ref().or(known).ok_or(DdError::NoStructure)?;
    let t = s.template(template_id)?;
    let dtis = if custom_dtis {
        let mut d = Dtis::default();
        for dt in 0..s.decode_targets {
            d.set(dt, r.f(2)?);
        }
        d
    } else {
        t.dtis
    };
    let fdiffs = if custom_fdiffs {
        let mut v = Vec::new();
        loop {
            let size = r.f(2)? as usize;
            if size == 0 {
                break;
            }
            // Up to 12 bits + 1: fits u16. The loop is bounded by the extension's length.
            v.push(r.f(4 * size)? as u16 + 1);
        }
        v
    } else {
        t.fdiffs.clone()
    };
    if custom_chains {
        for _ in 0..s.chains {
            r.f(8)?;
        }
    }
    Ok(Descriptor {
        start_of_frame,
        end_of_frame,
        template_id,
        frame_number,
        active_decode_targets,
        spatial: t.spatial,
        temporal: t.temporal,
        dtis,
        decode_targets: s.decode_targets,
        fdiffs,
        structure,
    })
}

fn mask(n: usize) -> u32 {
    if n >= 32 { u32::MAX } else { (1u32 << n) - 1 }
}

fn read_structure(r: &mut Bits<'_>) -> Result<Structure, DdError> {
    let template_id_offset = r.f(6)? as u8;
    let decode_targets = r.f(5)? as usize + 1;
    // Template layers: each template is the previous one's layer, the next temporal layer,
    // or the next spatial layer (temporal 0), until "no more templates".
    let mut layers = Vec::new();
    let (mut spatial, mut temporal) = (0u8, 0u8);
    loop {
        if spatial > MAX_LAYER_ID || temporal > MAX_LAYER_ID {
            return Err(DdError::LayerOutOfRange);
        }
        if layers.len() == MAX_TEMPLATES {
            return Err(DdError::TooManyTemplates);
        }
        layers.push((spatial, temporal));
        match r.f(2)? {
            0 => {}
            1 => temporal += 1,
            2 => {
                temporal = 0;
                spatial += 1;
            }
            _ => break,
        }
    }
    let mut templates: Vec<Template> = layers
        .into_iter()
        .map(|(spatial, temporal)| Template {
            spatial,
            temporal,
            dtis: Dtis::default(),
            fdiffs: Vec::new(),
        })
        .collect();
    for t in &mut templates {
        for dt in 0..decode_targets {
            t.dtis.set(dt, r.f(2)?);
        }
    }
    for t in &mut templates {
        while r.flag()? {
            t.fdiffs.push(r.f(4)? as u16 + 1);
        }
    }
    // Chains: how many, which chain protects each decode target, and each template's
    // chain fdiffs (4 bits each; read past, the SFU does not use chains).
    let chains = r.ns(decode_targets as u32 + 1)? as usize;
    if chains > 0 {
        for _ in 0..decode_targets {
            r.ns(chains as u32)?;
        }
        for _ in 0..templates.len() * chains {
            r.f(4)?;
        }
    }
    let mut resolutions = Vec::new();
    if r.flag()? {
        let top = templates.iter().map(|t| t.spatial).max().unwrap_or(0);
        for _ in 0..=top {
            let w = r.f(16)? + 1;
            let h = r.f(16)? + 1;
            resolutions.push((w, h));
        }
    }
    Ok(Structure {
        template_id_offset,
        decode_targets,
        templates,
        chains,
        resolutions,
    })
}

/// Bits to write descriptors in tests (and the fuzz target's seeds): the same layout
/// read back. Kept here so tests build descriptors from the format, not from bytes copied
/// out of a capture.
#[derive(Default)]
pub struct BitWriter {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    /// Append the low `n` bits of `v`, most significant first.
    pub fn put(&mut self, n: usize, v: u32) -> &mut Self {
        for i in (0..n).rev() {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if (v >> i) & 1 == 1 {
                let last = self.bytes.len() - 1;
                self.bytes[last] |= 0x80 >> (self.bits % 8);
            }
            self.bits += 1;
        }
        self
    }

    /// The bytes written (the last one zero-padded).
    pub fn finish(&self) -> Vec<u8> {
        self.bytes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// L2T2: templates S0T0 (key, no refs), S0T0 (refs 2), S0T1 (refs 2), S1T0 (refs 1:
    /// the S0 frame of its picture), S1T1 (refs 1, 2); 4 decode targets, one chain per
    /// spatial layer; resolutions 320x180 and 640x360. Template id offset 5.
    fn l2t2_structure(w: &mut BitWriter) {
        w.put(6, 5).put(5, 3);
        // layers: S0T0, same, next temporal, next spatial, next temporal, end
        w.put(2, 0).put(2, 1).put(2, 2).put(2, 1).put(2, 3);
        // dtis (targets S0T0, S0T1, S1T0, S1T1): 2 = switch, 3 = required, 1 = discardable
        for dtis in [
            [2, 2, 2, 2],
            [3, 3, 3, 3],
            [0, 1, 0, 3],
            [0, 0, 2, 2],
            [0, 0, 0, 1],
        ] {
            for d in dtis {
                w.put(2, d);
            }
        }
        // fdiffs: none | 2 | 2 | 1 | 1, 2
        w.put(1, 0);
        w.put(1, 1).put(4, 1).put(1, 0);
        w.put(1, 1).put(4, 1).put(1, 0);
        w.put(1, 1).put(4, 0).put(1, 0);
        w.put(1, 1).put(4, 0).put(1, 1).put(4, 1).put(1, 0);
        // chains: ns(5) = 2 (3 bits hold 0..=2 as w-1 = 2 bits: 2 -> "10"), then each
        // target's chain with ns(2) (1 bit), then 5 templates x 2 chains x 4 bits
        w.put(2, 2);
        for c in [0, 0, 1, 1] {
            w.put(1, c);
        }
        for _ in 0..10 {
            w.put(4, 1);
        }
        // resolutions
        w.put(1, 1)
            .put(16, 319)
            .put(16, 179)
            .put(16, 639)
            .put(16, 359);
    }

    fn key_descriptor() -> Vec<u8> {
        let mut w = BitWriter::default();
        // start, end, template id 5 (= template 0), frame number 1000
        w.put(1, 1).put(1, 0).put(6, 5).put(16, 1000);
        // structure present, no active mask, no custom fields
        w.put(1, 1).put(1, 0).put(1, 0).put(1, 0).put(1, 0);
        l2t2_structure(&mut w);
        w.finish()
    }

    #[test]
    fn reads_a_key_frame_descriptor_with_its_template_structure() {
        let b = key_descriptor();
        let d = parse(&b, None).unwrap();
        assert!(d.start_of_frame && !d.end_of_frame);
        assert_eq!((d.template_id, d.frame_number), (5, 1000));
        assert_eq!((d.spatial, d.temporal), (0, 0));
        assert!(d.fdiffs.is_empty(), "a key frame references nothing");
        assert_eq!(d.active_decode_targets, Some(0b1111));
        let s = d.structure.expect("structure");
        assert_eq!(s.decode_targets, 4);
        assert_eq!(s.chains, 2);
        assert_eq!(s.spatial_layers(), 2);
        assert_eq!(
            s.templates
                .iter()
                .map(|t| (t.spatial, t.temporal))
                .collect::<Vec<_>>(),
            [(0, 0), (0, 0), (0, 1), (1, 0), (1, 1)]
        );
        assert_eq!(s.templates[4].fdiffs, [1, 2]);
        assert_eq!(s.templates[2].dtis.get(1), Dti::Discardable);
        assert_eq!(s.templates[3].dtis.get(2), Dti::Switch);
        assert_eq!(s.resolutions, [(320, 180), (640, 360)]);
    }

    #[test]
    fn maps_a_later_frame_by_its_template_id_to_its_layers() {
        let s = parse(&key_descriptor(), None).unwrap().structure.unwrap();
        // Mandatory fields only: template id 8 = template 3 (S1T0), frame 1001.
        let mut w = BitWriter::default();
        w.put(1, 1).put(1, 1).put(6, 8).put(16, 1001);
        let d = parse(&w.finish(), Some(&s)).unwrap();
        assert_eq!((d.spatial, d.temporal, d.frame_number), (1, 0, 1001));
        assert_eq!(d.fdiffs, [1]);
        assert!(d.structure.is_none());
        assert!(d.dtis.any_switch(d.decode_targets));
        // Template ids wrap modulo 64 from the offset: 4 is template 63, absent.
        let mut w = BitWriter::default();
        w.put(1, 1).put(1, 1).put(6, 4).put(16, 1002);
        assert_eq!(parse(&w.finish(), Some(&s)), Err(DdError::UnknownTemplate));
    }

    #[test]
    fn reads_extended_fields_without_a_structure() {
        let s = parse(&key_descriptor(), None).unwrap().structure.unwrap();
        let mut w = BitWriter::default();
        // template 6 (S0T1), frame 7; active targets + custom dtis + fdiffs + chains
        w.put(1, 0).put(1, 1).put(6, 7).put(16, 7);
        w.put(1, 0).put(1, 1).put(1, 1).put(1, 1).put(1, 1);
        w.put(4, 0b0011); // only the S0 targets active
        for d in [3, 3, 0, 0] {
            w.put(2, d);
        }
        // fdiffs: 5 (size 1: 4 bits), 300 (size 3: 12 bits), end
        w.put(2, 1).put(4, 4).put(2, 3).put(12, 299).put(2, 0);
        w.put(8, 1).put(8, 2); // two chain fdiffs
        let d = parse(&w.finish(), Some(&s)).unwrap();
        assert!(!d.start_of_frame && d.end_of_frame);
        assert_eq!((d.spatial, d.temporal), (0, 1));
        assert_eq!(d.active_decode_targets, Some(0b0011));
        assert_eq!(d.dtis.get(0), Dti::Required);
        assert_eq!(d.dtis.get(3), Dti::NotPresent);
        assert_eq!(d.fdiffs, [5, 300]);
    }

    #[test]
    fn short_inconsistent_or_garbage_descriptors_are_errors() {
        let s = parse(&key_descriptor(), None).unwrap().structure.unwrap();
        assert_eq!(parse(&[], Some(&s)), Err(DdError::Truncated));
        assert_eq!(parse(&[0x80, 0], Some(&s)), Err(DdError::Truncated));
        // A structure cut anywhere: an error, never a panic.
        let key = key_descriptor();
        for n in 4..key.len() {
            assert!(parse(&key[..n], None).is_err(), "cut at {n}");
        }
        // No structure known, none sent.
        assert_eq!(parse(&[0xC5, 0, 1], None), Err(DdError::NoStructure));
        // Custom fdiffs that never end.
        let mut w = BitWriter::default();
        w.put(1, 1).put(1, 1).put(6, 5).put(16, 1);
        // (35 bits, then a 12-bit fdiff announced 3 bits before the last byte ends)
        w.put(5, 0b00010)
            .put(2, 1)
            .put(4, 0)
            .put(2, 3)
            .put(3, 0b111);
        assert_eq!(parse(&w.finish(), Some(&s)), Err(DdError::Truncated));
        // A structure whose layers climb past temporal id 7.
        let mut w = BitWriter::default();
        w.put(1, 1).put(1, 1).put(6, 0).put(16, 1).put(5, 0b10000);
        w.put(6, 0).put(5, 0);
        for _ in 0..8 {
            w.put(2, 1);
        }
        w.put(2, 3).put(8, 0);
        assert_eq!(parse(&w.finish(), None), Err(DdError::LayerOutOfRange));
        // 64 templates of one layer, then a 65th.
        let mut w = BitWriter::default();
        w.put(1, 1).put(1, 1).put(6, 0).put(16, 1).put(5, 0b10000);
        w.put(6, 0).put(5, 0);
        for _ in 0..64 {
            w.put(2, 0);
        }
        w.put(2, 3);
        assert_eq!(parse(&w.finish(), None), Err(DdError::TooManyTemplates));
        // Deterministic garbage of every length up to 64: no panic, whatever it reads.
        let mut rng = fastrand::Rng::with_seed(7);
        for len in 0..64 {
            for _ in 0..200 {
                let b: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                if let Ok(d) = parse(&b, Some(&s)) {
                    assert!(d.spatial <= MAX_LAYER_ID && d.temporal <= MAX_LAYER_ID);
                }
                let _ = parse(&b, None);
            }
        }
    }

    #[test]
    fn ns_reads_the_truncated_binary_code() {
        // n = 5: w = 3, m = 3; values 0..3 in 2 bits, 3 and 4 as "11" + one bit.
        for (bits, len, want) in [(0b00, 2, 0), (0b10, 2, 2), (0b110, 3, 3), (0b111, 3, 4)] {
            let mut w = BitWriter::default();
            w.put(len, bits).put(8, 0);
            let b = w.finish();
            let mut r = Bits { b: &b, at: 0 };
            assert_eq!(r.ns(5).unwrap(), want);
            assert_eq!(r.at, len);
        }
    }
}
