//! Adaptive stream and dynacast in the media core (see `common/mod.rs` for the simulated
//! peers and network), without a bandwidth estimate (the default): a subscriber's view of
//! a video (`set_views`) caps the simulcast layer it gets at the smallest that fills its
//! element (with VP8 picture IDs running on across each switch), a hidden video gets no packets and comes back from a key frame the publisher
//! is asked for at once, and the publisher is told (`SfuEvent::PublisherLayers`) to stop
//! the layers nobody wants after a debounce and to start them again at once.

mod common;

use std::time::Duration;

use common::layered::{
    LAYERS, OFF_AFTER, Publisher, actives, h264_tag, layer_events, layers_since, picture_id, tag,
    view,
};
use common::{BOTH, Sim};
use sfu::{MediaKind, SfuEvent, Source, TrackId};

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
fn an_h264_simulcast_view_gets_the_layer_its_sps_sizes_say_fills_it() {
    // H.264 layers of 160x90, 320x180 and 640x480 (their SPS, as Chromium sends them at
    // each key frame). Guessed from 1280x720 down, the layers would be 320x180, 640x360
    // and 1280x720: a 300x170 element would get the lowest and a 600x400 one the middle.
    let mut sim = Sim::new(75);
    let a = sim.join_h264_only(BOTH);
    let _b = sim.join(BOTH);
    let track = sim.publish_simulcast(a, &LAYERS)[0].id;
    sim.connect_all();
    let mut publisher = Publisher::h264(a);
    publisher.send_for(&mut sim, Duration::from_secs(1));
    for (w, h, want) in [(150, 80, 0), (300, 170, 1), (600, 400, 2), (150, 80, 0)] {
        view(&mut sim, 1, track, true, w, h);
        publisher.send_for(&mut sim, Duration::from_millis(300));
        let n = sim.clients[1].received.len();
        publisher.send_for(&mut sim, Duration::from_millis(700));
        let got: Vec<usize> = sim.clients[1].received[n..]
            .iter()
            .map(|g| h264_tag(&g.payload).0)
            .collect();
        assert!(got.len() > 50, "video flows at {w}x{h}");
        assert!(
            got.iter().all(|l| *l == want),
            "a {w}x{h} view gets layer {want}, got {:?}",
            got.iter().collect::<std::collections::BTreeSet<_>>()
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
