//! A simulcast publisher for the harness (layers `q`, `h`, `f` whose key frames carry
//! their picture sizes: VP8 key frame headers, or H.264 SPS captured from Chromium;
//! answering key-frame requests a little later as an encoder does, optionally obeying
//! `publisherLayers` as `studyroom.js` does), and the helpers that look at adaptive stream
//! and dynacast: views, received layers, `PublisherLayers` events. Shared by `adaptive.rs`
//! and `spanning.rs`.

use std::time::Duration;

use sfu::{LayerActive, SfuEvent, TrackId, TrackView};

use super::{OwedKeyframes, Sim};

pub const LAYERS: [&str; 3] = ["q", "h", "f"];
/// Picture sizes the layers' key frames announce.
pub const SIZES: [(u16, u16); 3] = [(160, 120), (320, 240), (640, 480)];
pub const FRAME_INTERVAL: Duration = Duration::from_millis(33);
pub const KEYFRAME_DELAY: Duration = Duration::from_millis(60);
/// Dynacast's debounce (`core/dynacast.rs`), as the protocol documents it.
pub const OFF_AFTER: Duration = Duration::from_millis(2500);

/// One packet: a VP8 payload descriptor (S bit on a frame's first packet; a 15-bit
/// picture ID, numbered per layer from far apart bases as a publisher whose layers were
/// stopped and restarted numbers them), a VP8 frame header (key frames: P bit clear, start
/// code and picture size, RFC 6386 §9.1), then the tag the test reads: layer, frame number,
/// packet index.
pub fn payload(layer: usize, frame: u32, k: u8, key: bool) -> Vec<u8> {
    let descriptor = if k == 0 { 0x90 } else { 0x80 };
    let pid = (frame as u16).wrapping_add(PID_BASE[layer]) & 0x7fff;
    let [hi, lo] = pid.to_be_bytes();
    let (w, h) = SIZES[layer];
    let mut p = vec![descriptor, 0x80, 0x80 | hi, lo];
    p.extend_from_slice(&[if key { 0x00 } else { 0x01 }, 0, 0]);
    p.extend_from_slice(&[0x9d, 0x01, 0x2a]);
    p.extend_from_slice(&w.to_le_bytes());
    p.extend_from_slice(&h.to_le_bytes());
    p.push(layer as u8);
    p.extend_from_slice(&frame.to_be_bytes());
    p.push(k);
    p.resize(300 * (layer + 1), 0xAB);
    p
}

/// Each layer's first picture ID.
pub const PID_BASE: [u16; 3] = [100, 9_000, 20_000];

/// (layer, frame, starts a key frame) of a received packet.
pub fn tag(p: &[u8]) -> (usize, u32, bool) {
    (
        usize::from(p[14]),
        u32::from_be_bytes([p[15], p[16], p[17], p[18]]),
        p[0] & 0x10 != 0 && p[4] & 0x01 == 0,
    )
}

/// The picture ID of a received packet.
pub fn picture_id(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[2] & 0x7f, p[3]])
}

/// H.264 layers' sequence parameter sets, captured from Chromium 156's OpenH264 encoder
/// (constrained baseline; `sfu/src/core/frame_size.rs` has them too): 160x90, 320x180
/// and 640x480. Not the halving ladder from 1280x720 the core assumes without sizes.
pub const H264_SPS: [&[u8]; 3] = [
    &[
        0x67, 0x42, 0xc0, 0x0c, 0x8c, 0x8d, 0x41, 0x46, 0xbc, 0x93, 0x70, 0x10, 0xd0, 0x10, 0x78,
        0x44, 0x23, 0x50,
    ],
    &[
        0x67, 0x42, 0xc0, 0x15, 0x8c, 0x8d, 0x40, 0xa0, 0xcb, 0xcf, 0x37, 0x01, 0x0d, 0x01, 0x07,
        0x84, 0x42, 0x35,
    ],
    &[
        0x67, 0x42, 0xc0, 0x1f, 0x8c, 0x8d, 0x40, 0x50, 0x1e, 0xd3, 0x70, 0x10, 0xd0, 0x10, 0x78,
        0x44, 0x23, 0x50,
    ],
];
const H264_PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];

/// One H.264 packet as Chromium packetizes a frame: a key frame starts with a STAP-A of
/// the layer's SPS and the PPS, then the IDR slice in FU-A fragments; a delta frame is a
/// non-IDR slice in FU-A fragments. The tag the test reads is at the end (see [`h264_tag`]).
pub fn h264_payload(layer: usize, frame: u32, k: u8, key: bool) -> Vec<u8> {
    let mut p = if key && k == 0 {
        let mut stap = vec![0x78];
        for unit in [H264_SPS[layer], &H264_PPS] {
            stap.extend_from_slice(&(unit.len() as u16).to_be_bytes());
            stap.extend_from_slice(unit);
        }
        stap
    } else {
        // FU-A (NRI 3); S on the first fragment, E on the last; IDR (5) or non-IDR (1).
        let start = if k == u8::from(key) { 0x80 } else { 0 };
        let end = if k == 2 { 0x40 } else { 0 };
        vec![0x7c, start | end | if key { 5 } else { 1 }]
    };
    p.resize(300 * (layer + 1), 0xAB);
    p.push(layer as u8);
    p.extend_from_slice(&frame.to_be_bytes());
    p.push(k);
    p
}

/// (layer, frame) of a received packet written by [`h264_payload`].
pub fn h264_tag(p: &[u8]) -> (usize, u32) {
    let t = &p[p.len() - 6..];
    (
        usize::from(t[0]),
        u32::from_be_bytes([t[1], t[2], t[3], t[4]]),
    )
}

/// A simulcast publisher (its first published track, on m-line 0) answering key-frame
/// requests, as `simulcast.rs`'s.
pub struct Publisher {
    idx: usize,
    /// Writes H.264 ([`h264_payload`]) instead of VP8 ([`payload`]).
    h264: bool,
    frame: u32,
    owed: OwedKeyframes,
    /// Which layers it encodes; `Some`: as the `PublisherLayers` events told it, the
    /// index of the next event to read.
    on: [bool; 3],
    obey: Option<usize>,
    /// Layers turned on again: an encoder restarts them with a key frame.
    restart: [bool; 3],
}

impl Publisher {
    /// Client `idx`, sending every layer whatever it is told.
    pub fn new(idx: usize) -> Self {
        Publisher {
            idx,
            h264: false,
            frame: 0,
            owed: OwedKeyframes::new(&LAYERS, KEYFRAME_DELAY),
            on: [true; 3],
            obey: None,
            restart: [false; 3],
        }
    }

    /// Client `idx` (joined with `join_h264_only`), sending H.264.
    pub fn h264(idx: usize) -> Self {
        Publisher {
            h264: true,
            ..Publisher::new(idx)
        }
    }

    /// Client `idx`, stopping and starting layers as `publisherLayers` tells it.
    pub fn obeying(idx: usize, sim: &Sim) -> Self {
        Publisher {
            obey: Some(sim.events.len()),
            ..Publisher::new(idx)
        }
    }

    /// Which layers it sends now.
    pub fn sending(&self) -> [bool; 3] {
        self.on
    }

    fn obey_events(&mut self, sim: &Sim) {
        let Some(from) = self.obey else { return };
        let me = sim.clients[self.idx].id;
        for e in &sim.events[from..] {
            if let SfuEvent::PublisherLayers {
                participant,
                layers,
                ..
            } = e
                && *participant == me
            {
                for l in layers {
                    if let Some(i) = LAYERS.iter().position(|r| Some(*r) == l.rid.as_deref()) {
                        self.restart[i] |= l.active && !self.on[i];
                        self.on[i] = l.active;
                    }
                }
            }
        }
        self.obey = Some(sim.events.len());
    }

    pub fn send_frame(&mut self, sim: &mut Sim) {
        self.obey_events(sim);
        self.owed.note_requests(sim, self.idx);
        let ts = self.frame * 3000;
        for (layer, rid) in LAYERS.iter().enumerate() {
            if !self.on[layer] {
                continue;
            }
            let key = self.owed.is_key(layer, self.frame, sim.now)
                || std::mem::take(&mut self.restart[layer]);
            for k in 0..3u8 {
                let write = if self.h264 { h264_payload } else { payload };
                sim.send_rtp_layer(
                    self.idx,
                    0,
                    rid,
                    ts,
                    k == 2,
                    write(layer, self.frame, k, key),
                );
                sim.run_for(Duration::ZERO);
            }
        }
        self.frame += 1;
        sim.run_for(FRAME_INTERVAL);
    }

    pub fn send_for(&mut self, sim: &mut Sim, d: Duration) {
        let until = sim.now + d;
        while sim.now < until {
            self.send_frame(sim);
        }
    }
}

/// Subscriber `sub` shows `track` so (`trackView`).
pub fn view(sim: &mut Sim, sub: usize, track: TrackId, visible: bool, width: u32, height: u32) {
    let now = sim.now;
    let id = sim.clients[sub].id;
    let unknown = sim
        .core_of(id)
        .set_views(
            now,
            id,
            &[(
                track,
                TrackView {
                    visible,
                    width,
                    height,
                },
            )],
        )
        .expect("set_views");
    assert!(unknown.is_empty(), "the subscriber receives {track}");
    sim.pump_events();
}

/// The layers of the packets subscriber `sub` received from index `from` on.
pub fn layers_since(sim: &Sim, sub: usize, from: usize) -> Vec<usize> {
    sim.clients[sub].received[from..]
        .iter()
        .map(|g| tag(&g.payload).0)
        .collect()
}

/// The `PublisherLayers` events for `track` from index `from` of `sim.events` on, as
/// (time since start, active flags).
pub fn layer_events(sim: &Sim, track: TrackId, from: usize) -> Vec<Vec<LayerActive>> {
    sim.events[from..]
        .iter()
        .filter_map(|e| match e {
            SfuEvent::PublisherLayers {
                track: t, layers, ..
            } if *t == track => Some(layers.clone()),
            _ => None,
        })
        .collect()
}

pub fn actives(layers: &[LayerActive]) -> Vec<(Option<&str>, bool)> {
    layers
        .iter()
        .map(|l| (l.rid.as_deref(), l.active))
        .collect()
}
