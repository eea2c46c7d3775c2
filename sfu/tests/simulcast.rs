//! Simulcast layer switching in the media core (see `common/mod.rs` for the simulated
//! peers and network): a publisher sends its camera as three layers (RIDs q, h, f) and a
//! subscriber moves between them with `set_quality`. It receives one layer at a time,
//! moves to another only at a key frame of that layer (which the core asks the publisher
//! for), never in the middle of a frame, and its m-line's sequence numbers run on without
//! a gap across every switch.

mod common;

use std::time::Duration;

use common::{BOTH, OwedKeyframes, Sim};
use sfu::{Quality, Source};

/// The publisher's layers, lowest first.
const LAYERS: [&str; 3] = ["q", "h", "f"];
/// Bytes per packet of each layer: bitrates rank the layers as their names do.
const SIZES: [usize; 3] = [200, 500, 1100];
const PACKETS_PER_FRAME: u8 = 3;
const FRAME_INTERVAL: Duration = Duration::from_millis(33);
/// An encoder answers a key-frame request with a later frame, not the next one: until
/// then the wanted layer's delta frames must not reach the subscriber.
const KEYFRAME_DELAY: Duration = Duration::from_millis(100);

/// One packet's payload: a VP8 payload descriptor (S bit at a frame's first packet, PID 0)
/// and frame header (P bit clear on key frames), which is what the core reads to find key
/// frames; then the tag the test reads: layer, frame number, packet index in the frame.
fn payload(layer: usize, frame: u32, k: u8, key: bool) -> Vec<u8> {
    let descriptor = if k == 0 { 0x10 } else { 0x00 };
    let header = if key { 0x00 } else { 0x01 };
    let mut p = vec![descriptor, header, layer as u8];
    p.extend_from_slice(&frame.to_be_bytes());
    p.push(k);
    p.resize(SIZES[layer], 0xAB);
    p
}

/// A received packet's tag (see `payload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag {
    layer: usize,
    frame: u32,
    k: u8,
    keyframe_start: bool,
}

fn tag(p: &[u8]) -> Tag {
    Tag {
        layer: usize::from(p[2]),
        frame: u32::from_be_bytes([p[3], p[4], p[5], p[6]]),
        k: p[7],
        keyframe_start: p[0] & 0x10 != 0 && p[1] & 0x01 == 0,
    }
}

/// The simulcast publisher: every frame on every layer, key frames at the start and
/// `KEYFRAME_DELAY` after a request for their layer.
struct Publisher {
    idx: usize,
    frame: u32,
    /// Per layer: when the key frame a request asked for is due.
    owed: OwedKeyframes,
    /// Packets written so far (orders key frames and `set_quality` calls).
    written: u64,
    /// Every key frame sent: (layer, frame, packets written before it).
    keyframes: Vec<(usize, u32, u64)>,
}

impl Publisher {
    /// Sends one frame on every layer (q, h, f: each frame's packets together, as an
    /// encoder's packetizer emits them), delivering every packet before the next is
    /// written; `between(sim, layer, k)` runs after each packet.
    fn send_frame(&mut self, sim: &mut Sim, mut between: impl FnMut(&mut Sim, usize, u8)) {
        self.owed.note_requests(sim, self.idx);
        assert_eq!(self.owed.unnamed, 0, "key-frame requests name a layer");
        let ts = self.frame * 3000;
        for (layer, rid) in LAYERS.iter().enumerate() {
            let key = self.owed.is_key(layer, self.frame, sim.now);
            if key {
                self.keyframes.push((layer, self.frame, self.written));
            }
            for k in 0..PACKETS_PER_FRAME {
                let last = k == PACKETS_PER_FRAME - 1;
                sim.send_rtp_layer(
                    self.idx,
                    0,
                    rid,
                    ts,
                    last,
                    payload(layer, self.frame, k, key),
                );
                self.written += 1;
                sim.run_for(Duration::ZERO);
                between(sim, layer, k);
            }
        }
        self.frame += 1;
        sim.run_for(FRAME_INTERVAL);
    }
}

#[test]
fn a_subscriber_switches_simulcast_layers_at_key_frames_with_continuous_sequence_numbers() {
    let mut sim = Sim::new(40);
    let a = sim.join(BOTH);
    let b = sim.join(BOTH);
    let tracks = sim.publish_simulcast(a, &LAYERS);
    assert_eq!(tracks.len(), 1);
    sim.connect_all();
    let (pub_id, sub_id) = (sim.clients[a].id, sim.clients[b].id);
    let mut publisher = Publisher {
        idx: a,
        frame: 0,
        owed: OwedKeyframes::new(&LAYERS, KEYFRAME_DELAY),
        written: 0,
        keyframes: Vec::new(),
    };

    // Each change lands in the middle of a frame of the layer being received:
    // (publisher frame, after packet k of layer, quality asked, layer it means).
    let plan = [
        (60, 2, 0, Quality::Low, 0),
        (120, 0, 1, Quality::Medium, 1),
        (180, 1, 1, Quality::High, 2),
    ];
    let mut calls: Vec<(usize, u64)> = Vec::new(); // (target layer, packets written before)
    for frame in 0..240u32 {
        let change = plan.iter().find(|p| p.0 == frame).copied();
        let written_at_frame = publisher.written;
        publisher.send_frame(&mut sim, |sim, layer, k| {
            if let Some((_, at_layer, at_k, quality, target)) = change
                && (layer, k) == (at_layer, at_k)
            {
                let now = sim.now;
                sim.cores[0]
                    .set_quality(now, sub_id, pub_id, Source::Camera, quality)
                    .expect("set_quality");
                let written = written_at_frame + (layer as u64) * 3 + u64::from(k) + 1;
                calls.push((target, written));
            }
        });
    }
    sim.run_for(Duration::from_millis(200));
    assert_eq!(calls.len(), plan.len());

    let got = &sim.clients[b].received;
    assert!(!got.is_empty(), "the subscriber received nothing");
    assert!(
        got.iter()
            .all(|g| g.ssrc == got[0].ssrc && g.mid == got[0].mid),
        "one m-line, one SSRC for every layer"
    );
    // Sequence numbers: continuous across every switch (no gap, nothing twice).
    for w in got.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq + 1,
            "sequence gap at {:?}",
            tag(&w[1].payload)
        );
    }
    let tags: Vec<Tag> = got.iter().map(|g| tag(&g.payload)).collect();

    // One layer at a time. At the start the subscriber (wanting high, the default) climbs as
    // the layers appear in frame 0, q then h then f, each the best one flowing when its key
    // frame comes; then q, h, f as asked.
    let mut segments: Vec<(usize, usize)> = Vec::new(); // (layer, index of its first packet)
    for (i, t) in tags.iter().enumerate() {
        if segments.last().is_none_or(|s| s.0 != t.layer) {
            segments.push((t.layer, i));
        }
    }
    let layers: Vec<usize> = segments.iter().map(|s| s.0).collect();
    assert_eq!(layers, [0, 1, 2, 0, 1, 2], "layers received, in order");
    let startup = 3;

    // Every frame arrives whole: packets 0, 1, 2 together, never a frame cut by a switch.
    let mut i = 0;
    let mut seen = std::collections::HashSet::new();
    while i < tags.len() {
        let (layer, frame) = (tags[i].layer, tags[i].frame);
        let ks: Vec<u8> = tags[i..]
            .iter()
            .take_while(|t| (t.layer, t.frame) == (layer, frame))
            .map(|t| t.k)
            .collect();
        assert_eq!(ks, [0, 1, 2], "frame {frame} of layer {layer} is cut");
        assert!(
            seen.insert((layer, frame)),
            "frame {frame} of layer {layer} twice"
        );
        i += ks.len();
    }

    // Each layer starts at one of its key frames; after a change, at the first key frame
    // of the wanted layer sent after the change (its delta frames before it are dropped).
    for (n, &(layer, first)) in segments.iter().enumerate() {
        let t = tags[first];
        assert!(
            t.keyframe_start,
            "layer {layer} starts at {t:?}, not a key frame"
        );
        assert!(
            publisher
                .keyframes
                .iter()
                .any(|k| (k.0, k.1) == (layer, t.frame)),
            "layer {layer} starts at frame {}, which was no key frame",
            t.frame
        );
        if n < startup {
            assert_eq!(t.frame, 0, "the climb at the start happens in frame 0");
            continue;
        }
        let (target, written) = calls[n - startup];
        assert_eq!(target, layer);
        let due = publisher
            .keyframes
            .iter()
            .find(|k| k.0 == layer && k.2 >= written)
            .expect("the publisher was asked for a key frame on the wanted layer");
        assert_eq!(
            t.frame, due.1,
            "switch to layer {layer}: at the first key frame after the change"
        );
        let change_frame = plan[n - startup].0;
        assert!(
            due.1 > change_frame + 1,
            "the wanted layer's delta frames came first (key frame at {}, change at {change_frame})",
            due.1
        );
    }
    // The last layer is received to the end.
    assert_eq!(tags.last().map(|t| (t.layer, t.frame)), Some((2, 239)));
}
