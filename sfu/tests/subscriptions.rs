//! Who receives what (see `common/mod.rs` for the simulated peers and network): grants
//! (listeners publish nothing, proctors see learners' video, learners never see proctors)
//! and codecs (a track is only sent to a subscriber that negotiated its codec; each
//! subscriber m-line offers only its producer's codec).

mod common;

use std::collections::BTreeMap;
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
    let err = sim.cores[0]
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

/// The payload types of each `m=` line of `sdp`, by mid, with their `a=rtpmap` names.
fn offered_codecs(sdp: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for section in sdp.split("\r\nm=").skip(1) {
        let lines: Vec<&str> = section.lines().collect();
        let mid = lines
            .iter()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .expect("a=mid")
            .to_string();
        let names = lines[0]
            .split(' ')
            .skip(3)
            .map(|pt| {
                lines
                    .iter()
                    .find_map(|l| l.strip_prefix(&format!("a=rtpmap:{pt} ")))
                    .unwrap_or("?")
                    .split('/')
                    .next()
                    .unwrap_or("?")
                    .to_ascii_lowercase()
            })
            .collect();
        out.insert(mid, names);
    }
    out
}

#[test]
fn a_subscriber_mline_offers_only_its_producers_codec_even_when_recycled() {
    let mut sim = Sim::new(31);
    let cam = [
        (MediaKind::Video, Source::Camera),
        (MediaKind::Audio, Source::Microphone),
    ];
    let sub = sim.join(BOTH);
    let vp8 = sim.join(BOTH);
    let tracks = sim.publish(vp8, &cam);
    assert_eq!(tracks[0].codec, "vp8");
    let offer = sim.clients[sub].offer_sdps.last().expect("offer").clone();
    let mid_of = |sim: &Sim, p: usize, kind: MediaKind| {
        let id = sim.clients[p].id;
        sim.clients[sub]
            .offer_tracks
            .iter()
            .find(|t| t.publisher == id && t.kind == kind)
            .map(|t| t.mid.clone())
            .expect("mapped")
    };
    let vmid = mid_of(&sim, vp8, MediaKind::Video);
    let amid = mid_of(&sim, vp8, MediaKind::Audio);
    let codecs = offered_codecs(&offer);
    assert_eq!(codecs[&vmid], ["vp8", "rtx"], "{offer}");
    assert_eq!(codecs[&amid], ["opus"], "{offer}");

    // (Connected before it leaves: `connect_all` waits for every client ever joined.)
    sim.connect_all();
    // The VP8 publisher leaves; an H264 publisher comes: the free VP8 m-line cannot carry
    // H264, so it gets a new one, offering H264 alone; its media reaches the subscriber.
    sim.cores[0].leave(sim.clients[vp8].id).expect("leave");
    sim.pump_events();
    let h264 = sim.join_h264_only(BOTH);
    let tracks = sim.publish(h264, &cam);
    assert_eq!(tracks[0].codec, "h264");
    let offer = sim.clients[sub].offer_sdps.last().expect("offer").clone();
    let hmid = mid_of(&sim, h264, MediaKind::Video);
    let codecs = offered_codecs(&offer);
    assert_ne!(
        hmid, vmid,
        "an m-line negotiated for VP8 was given an H264 producer"
    );
    assert_eq!(codecs[&hmid], ["h264", "rtx"], "{offer}");
    // Audio is Opus on both sides: the departed publisher's audio m-line is reused.
    assert_eq!(mid_of(&sim, h264, MediaKind::Audio), amid);

    // A VP8 publisher again: it takes over the free VP8 m-line, still offering VP8 alone.
    let vp8b = sim.join(BOTH);
    sim.publish(vp8b, &cam);
    let offer = sim.clients[sub].offer_sdps.last().expect("offer").clone();
    assert_eq!(mid_of(&sim, vp8b, MediaKind::Video), vmid);
    assert_eq!(offered_codecs(&offer)[&vmid], ["vp8", "rtx"], "{offer}");

    sim.connect_all();
    let sent = sim.stream_all(&[h264, vp8b], Duration::from_secs(1));
    sim.run_for(Duration::from_millis(300));
    let got = &sim.clients[sub].received;
    for (p, mid) in [(h264, hmid), (vp8b, vmid)] {
        let n = got.iter().filter(|g| g.mid.to_string() == mid).count() as u32;
        assert_eq!(n, sent[&p].0, "video of publisher {p} on mid {mid}");
    }
}
