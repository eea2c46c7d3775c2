//! Who receives what (see `common/mod.rs` for the simulated peers and network): grants
//! (listeners publish nothing, proctors see learners' video, learners never see proctors)
//! and codecs (a track is only sent to a subscriber that negotiated its codec).

mod common;

use std::time::Duration;

use common::{BOTH, Sim};
use sfu::core::Grants;
use sfu::{MediaKind, ParticipantId, Source};

#[test]
fn subscribers_get_only_what_they_negotiated_and_listeners_publish_nothing() {
    let mut sim = Sim::new(6);
    let a = sim.join(BOTH);
    let listener = sim.join(Grants {
        publish: false,
        subscribe: true,
        proctor: false,
    });
    let err = sim
        .core
        .publish(sim.now, ParticipantId(listener as u64 + 1), "v=0", &[])
        .unwrap_err();
    assert_eq!(err.code(), "forbidden");
    sim.publish(a, &[(MediaKind::Audio, Source::Microphone)]);
    sim.connect_all();
    let (_, na) = sim.stream(a, None, Some(0), Duration::from_secs(1));
    sim.run_for(Duration::from_millis(200));
    assert_eq!(sim.clients[listener].received.len(), na as usize);
}

#[test]
fn a_subscriber_without_the_codec_gets_audio_but_no_video() {
    let mut sim = Sim::new(12);
    let a = sim.join(BOTH);
    let vp8 = sim.join(BOTH);
    let h264 = sim.join_h264_only(BOTH);
    sim.publish(
        a,
        &[
            (MediaKind::Video, Source::Camera),
            (MediaKind::Audio, Source::Microphone),
        ],
    );
    sim.connect_all();
    let (nv, na) = sim.stream(a, Some(0), Some(1), Duration::from_secs(1));
    sim.run_for(Duration::from_millis(200));
    assert_eq!(sim.clients[vp8].received.len(), (nv + na) as usize);
    // The VP8 track is not sent to a peer that did not negotiate VP8 (we do not transcode);
    // its audio still flows.
    let got = &sim.clients[h264].received;
    assert_eq!(
        got.len(),
        na as usize,
        "only audio reaches the H264-only subscriber"
    );
    assert!(
        got.iter().all(|g| g.payload.len() == 120),
        "audio payloads only"
    );
}

#[test]
fn proctors_get_learners_video_only_and_learners_never_get_proctors() {
    let mut sim = Sim::new(30);
    let learner = sim.join(BOTH);
    let proctor = sim.join(Grants {
        publish: true,
        subscribe: true,
        proctor: true,
    });
    let other = sim.join(BOTH);
    sim.publish(
        learner,
        &[
            (MediaKind::Video, Source::Camera),
            (MediaKind::Audio, Source::Microphone),
        ],
    );
    // Even a proctor allowed to publish is never offered to learners.
    sim.publish(proctor, &[(MediaKind::Video, Source::Camera)]);
    sim.connect_all();
    let (nv, na) = sim.stream(learner, Some(0), Some(1), Duration::from_secs(1));
    sim.stream(proctor, Some(0), None, Duration::from_millis(500));
    sim.run_for(Duration::from_millis(200));
    let kinds = |i: usize| -> Vec<MediaKind> {
        sim.clients[i].offer_tracks.iter().map(|t| t.kind).collect()
    };
    assert_eq!(
        kinds(proctor),
        vec![MediaKind::Video],
        "proctor: the learner's camera only"
    );
    assert_eq!(sim.clients[proctor].received.len(), nv as usize);
    let learner_id = sim.clients[learner].id;
    assert!(
        sim.clients[other]
            .offer_tracks
            .iter()
            .all(|t| t.publisher == learner_id),
        "a learner is offered nothing of the proctor"
    );
    assert_eq!(sim.clients[other].received.len(), (nv + na) as usize);
    assert!(sim.clients[learner].received.is_empty());
}
