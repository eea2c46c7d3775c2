//! Adaptive stream and dynacast in the media core (see `common/mod.rs` for the simulated
//! peers and network), without a bandwidth estimate (the default): a subscriber's view of
//! a video (`set_views`) caps the simulcast layer it gets at the smallest that fills its
//! element (with VP8 picture IDs running on across each switch), a hidden video gets no packets and comes back from a key frame the publisher
//! is asked for at once, and the publisher is told (`SfuEvent::PublisherLayers`) to stop
//! the layers nobody wants after a debounce and to start them again at once.

mod common;

use std::time::Duration;

use common::{BOTH, OwedKeyframes, Sim};
use sfu::{LayerActive, MediaKind, SfuEvent, Source, TrackId, TrackView};

const LAYERS: [&str; 3] = ["q", "h", "f"];
/// Picture sizes the layers' key frames announce.
const SIZES: [(u16, u16); 3] = [(160, 120), (320, 240), (640, 480)];
const FRAME_INTERVAL: Duration = Duration::from_millis(33);
const KEYFRAME_DELAY: Duration = Duration::from_millis(60);
/// Dynacast's debounce (`core/dynacast.rs`), as the protocol documents it.
const OFF_AFTER: Duration = Duration::from_millis(2500);

/// One packet: a VP8 payload descriptor (S bit on a frame's first packet; a 15-bit
/// picture ID, numbered per layer from far apart bases as a publisher whose layers were
/// stopped and restarted numbers them), a VP8 frame header (key frames: P bit clear, start
/// code and picture size, RFC 6386 §9.1), then the tag the test reads: layer, frame number,
/// packet index.
fn payload(layer: usize, frame: u32, k: u8, key: bool) -> Vec<u8> {
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
const PID_BASE: [u16; 3] = [100, 9_000, 20_000];

/// (layer, frame, starts a key frame) of a received packet.
fn tag(p: &[u8]) -> (usize, u32, bool) {
    (
        usize::from(p[14]),
        u32::from_be_bytes([p[15], p[16], p[17], p[18]]),
        p[0] & 0x10 != 0 && p[4] & 0x01 == 0,
    )
}

/// The picture ID of a received packet.
fn picture_id(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[2] & 0x7f, p[3]])
}

/// A simulcast publisher answering key-frame requests, as `simulcast.rs`'s.
struct Publisher {
    idx: usize,
    frame: u32,
    owed: OwedKeyframes,
}

impl Publisher {
    fn new(idx: usize) -> Self {
        Publisher {
            idx,
            frame: 0,
            owed: OwedKeyframes::new(&LAYERS, KEYFRAME_DELAY),
        }
    }

    fn send_frame(&mut self, sim: &mut Sim) {
        self.owed.note_requests(sim, self.idx);
        let ts = self.frame * 3000;
        for (layer, rid) in LAYERS.iter().enumerate() {
            let key = self.owed.is_key(layer, self.frame, sim.now);
            for k in 0..3u8 {
                sim.send_rtp_layer(
                    self.idx,
                    0,
                    rid,
                    ts,
                    k == 2,
                    payload(layer, self.frame, k, key),
                );
                sim.run_for(Duration::ZERO);
            }
        }
        self.frame += 1;
        sim.run_for(FRAME_INTERVAL);
    }

    fn send_for(&mut self, sim: &mut Sim, d: Duration) {
        let until = sim.now + d;
        while sim.now < until {
            self.send_frame(sim);
        }
    }
}

/// Publisher 0 (simulcast camera) and subscriber 1, connected, media flowing for a second.
fn setup(seed: u64) -> (Sim, Publisher, TrackId) {
    let mut sim = Sim::new(seed);
    let a = sim.join(BOTH);
    let _b = sim.join(BOTH);
    let tracks = sim.publish_simulcast(a, &LAYERS);
    sim.connect_all();
    let mut publisher = Publisher::new(a);
    publisher.send_for(&mut sim, Duration::from_secs(1));
    (sim, publisher, tracks[0].id)
}

fn view(sim: &mut Sim, sub: usize, track: TrackId, visible: bool, width: u32, height: u32) {
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
fn layers_since(sim: &Sim, sub: usize, from: usize) -> Vec<usize> {
    sim.clients[sub].received[from..]
        .iter()
        .map(|g| tag(&g.payload).0)
        .collect()
}

/// The `PublisherLayers` events for `track` from index `from` of `sim.events` on, as
/// (time since start, active flags).
fn layer_events(sim: &Sim, track: TrackId, from: usize) -> Vec<Vec<LayerActive>> {
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

fn actives(layers: &[LayerActive]) -> Vec<(Option<&str>, bool)> {
    layers
        .iter()
        .map(|l| (l.rid.as_deref(), l.active))
        .collect()
}

#[test]
fn a_small_view_gets_the_low_layer_and_a_larger_one_the_layer_that_fills_it() {
    let (mut sim, mut publisher, track) = setup(71);
    // No view reported: the top layer (what `setQuality` high asks for).
    let n = sim.clients[1].received.len();
    publisher.send_for(&mut sim, Duration::from_millis(500));
    assert!(layers_since(&sim, 1, n).iter().all(|l| *l == 2));

    // (view in device pixels, the layer that fills it): a proctor's 150x100 tile gets
    // the 160x120 layer; 300x200 the 320x240 one; anything larger the top.
    for (w, h, want) in [(150, 100, 0), (300, 200, 1), (600, 400, 2), (120, 90, 0)] {
        view(&mut sim, 1, track, true, w, h);
        // The switch waits for a key frame of that layer (asked for at once).
        publisher.send_for(&mut sim, Duration::from_millis(300));
        let n = sim.clients[1].received.len();
        publisher.send_for(&mut sim, Duration::from_millis(700));
        let got = layers_since(&sim, 1, n);
        assert!(got.len() > 50, "video flows at {w}x{h}");
        assert!(
            got.iter().all(|l| *l == want),
            "a {w}x{h} view gets layer {want}, got {:?}",
            got.iter().collect::<std::collections::BTreeSet<_>>()
        );
    }
    // Across every switch the picture IDs run on: the same within a frame, +1 from one
    // frame to the next (the layers' own IDs are thousands apart).
    let got = &sim.clients[1].received;
    for w in got.windows(2) {
        let (a, b) = (picture_id(&w[0].payload), picture_id(&w[1].payload));
        let same_frame = tag(&w[0].payload).1 == tag(&w[1].payload).1
            && tag(&w[0].payload).0 == tag(&w[1].payload).0;
        let step = if same_frame { 0 } else { 1 };
        assert_eq!(
            b,
            a.wrapping_add(step) & 0x7fff,
            "picture ID {a} then {b} at {:?} -> {:?}",
            tag(&w[0].payload),
            tag(&w[1].payload)
        );
    }
}

#[test]
fn a_hidden_video_gets_no_packets_and_comes_back_from_a_key_frame_asked_for_at_once() {
    let (mut sim, mut publisher, track) = setup(72);
    view(&mut sim, 1, track, true, 300, 200);
    publisher.send_for(&mut sim, Duration::from_millis(500));
    view(&mut sim, 1, track, false, 300, 200);
    let n = sim.clients[1].received.len();
    publisher.send_for(&mut sim, Duration::from_secs(2));
    assert_eq!(
        sim.clients[1].received.len(),
        n,
        "a hidden video gets no packets"
    );
    // Hidden is the client's own doing: no videoPaused.
    assert!(
        !sim.events
            .iter()
            .any(|e| matches!(e, SfuEvent::VideoPaused { .. })),
        "no videoPaused for a hidden video"
    );

    // Shown again: a key-frame request reaches the publisher within a round trip, and
    // the video restarts with a key frame of the layer that fills the view.
    let requests = sim.clients[0].keyframe_requests_on.len();
    let shown_at = sim.now;
    view(&mut sim, 1, track, true, 300, 200);
    sim.run_for(Duration::from_millis(20));
    assert!(
        sim.clients[0].keyframe_requests_on.len() > requests,
        "no key-frame request within 20 ms of the video being shown"
    );
    publisher.send_for(&mut sim, Duration::from_millis(500));
    let got = &sim.clients[1].received[n..];
    assert!(got.len() > 20, "the video flows again");
    let (layer, _, key) = tag(&got[0].payload);
    assert!(key, "it restarts at a key frame");
    assert_eq!(layer, 1);
    assert!(
        got[0].at - shown_at < Duration::from_millis(200),
        "back {:?} after being shown",
        got[0].at - shown_at
    );
}

#[test]
fn dynacast_stops_unwanted_layers_after_the_debounce_and_starts_them_at_once() {
    let (mut sim, mut publisher, track) = setup(73);
    assert!(
        layer_events(&sim, track, 0).is_empty(),
        "every layer is wanted at first"
    );
    // The only viewer shows it small: q is enough.
    view(&mut sim, 1, track, true, 150, 100);
    let from = sim.events.len();
    publisher.send_for(&mut sim, OFF_AFTER - Duration::from_millis(300));
    assert!(
        layer_events(&sim, track, from).is_empty(),
        "layers turned off before the debounce"
    );
    publisher.send_for(&mut sim, Duration::from_millis(600));
    let ev = layer_events(&sim, track, from);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        actives(&ev[0]),
        [(Some("q"), true), (Some("h"), false), (Some("f"), false)]
    );

    // A viewer enlarges it: every layer up to the one it needs, at once, with a key frame.
    let from = sim.events.len();
    let requests = sim.clients[0].keyframe_requests_on.len();
    view(&mut sim, 1, track, true, 300, 200);
    sim.run_for(Duration::from_millis(250));
    let ev = layer_events(&sim, track, from);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        actives(&ev[0]),
        [(Some("q"), true), (Some("h"), true), (Some("f"), false)]
    );
    assert!(sim.clients[0].keyframe_requests_on.len() > requests);

    // Hidden: nothing is wanted, everything goes off after the debounce.
    let from = sim.events.len();
    view(&mut sim, 1, track, false, 300, 200);
    publisher.send_for(&mut sim, OFF_AFTER + Duration::from_millis(300));
    let ev = layer_events(&sim, track, from);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(ev[0].iter().all(|l| !l.active), "{ev:?}");
}

#[test]
fn a_publisher_nobody_receives_is_told_to_stop_and_to_start_when_someone_comes() {
    let mut sim = Sim::new(74);
    let a = sim.join(BOTH);
    let tracks = sim.publish(a, &[(MediaKind::Video, Source::Camera)]);
    let track = tracks[0].id;
    sim.connect_all();
    sim.stream(a, Some(0), None, Duration::from_millis(500));
    let from = sim.events.len();
    sim.stream(a, Some(0), None, OFF_AFTER + Duration::from_millis(300));
    let ev = layer_events(&sim, track, from);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        actives(&ev[0]),
        [(None, false)],
        "a video without simulcast: one encoding, off"
    );

    // Someone joins: its consumer wants the video, which is turned on at once.
    let from = sim.events.len();
    let _b = sim.join(BOTH);
    sim.run_for(Duration::from_millis(250));
    let ev = layer_events(&sim, track, from);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(actives(&ev[0]), [(None, true)]);
}
