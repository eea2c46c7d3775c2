//! Deterministic tests of the media core with simulated peers and network (see
//! `common/mod.rs`): forwarding, keyframe-request throttling, NACK repair, rewriting on
//! re-publish, cleanup, consent timeout, and garbage input.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{Link, Sim};
use sfu::core::{Counts, Grants, RemovalReason, SfuEvent};
use sfu::{MediaKind, ParticipantId, Source};

const BOTH: Grants = Grants {
    publish: true,
    subscribe: true,
    proctor: false,
};

/// Per (receiver m-line): the publisher counters found in payloads, and the output
/// sequence numbers, in arrival order.
/// (payload counters, output sequence numbers, SSRCs seen) of one receiver m-line.
type Received = (Vec<u32>, Vec<u64>, HashSet<u32>);

fn by_mid(got: &[common::Got]) -> BTreeMap<String, Received> {
    let mut m: BTreeMap<String, Received> = BTreeMap::new();
    for g in got {
        let e = m.entry(g.mid.to_string()).or_default();
        let n = u32::from_be_bytes([g.payload[2], g.payload[3], g.payload[4], g.payload[5]]);
        e.0.push(n);
        e.1.push(g.seq);
        e.2.insert(g.ssrc);
    }
    m
}

#[test]
fn forwards_every_packet_to_every_subscriber() {
    let mut sim = Sim::new(1);
    let a = sim.join(BOTH);
    let b = sim.join(BOTH);
    let c = sim.join(BOTH);
    let tracks = sim.publish(
        a,
        &[
            (MediaKind::Video, Source::Camera),
            (MediaKind::Audio, Source::Microphone),
        ],
    );
    assert_eq!(tracks.len(), 2);
    // Track.codec: the MIME subtype in lower case, for every codec (docs/protocol.md).
    assert_eq!(tracks[0].codec, "vp8");
    assert_eq!(tracks[1].codec, "opus");
    sim.connect_all();
    let (nv, na) = sim.stream(a, Some(0), Some(1), Duration::from_secs(2));
    sim.run_for(Duration::from_millis(300));
    for sub in [b, c] {
        let m = by_mid(&sim.clients[sub].received);
        assert_eq!(
            m.len(),
            2,
            "two m-lines (video, audio) at subscriber {sub}: {:?}",
            m.keys()
        );
        let mut counts: Vec<usize> = m.values().map(|v| v.0.len()).collect();
        counts.sort();
        assert_eq!(
            counts,
            vec![na as usize, nv as usize],
            "every packet arrives once"
        );
        for (mid, (ctr, seqs, ssrcs)) in &m {
            assert_eq!(ssrcs.len(), 1, "one SSRC per subscriber m-line {mid}");
            // Payload counters arrive complete and in order; output sequence numbers are
            // contiguous.
            assert!(
                ctr.windows(2).all(|w| w[1] == w[0] + 1),
                "payload order on {mid}"
            );
            assert!(
                seqs.windows(2).all(|w| w[1] == w[0] + 1),
                "contiguous seq on {mid}"
            );
        }
    }
    // The publisher receives nothing of its own.
    assert!(sim.clients[a].received.is_empty());
    let st = sim.core.stats();
    assert_eq!(st.rtp_forwarded, 2 * u64::from(nv + na));
}

#[test]
fn keyframe_requests_are_forwarded_and_throttled() {
    let mut sim = Sim::new(2);
    let a = sim.join(BOTH);
    let subs: Vec<usize> = (0..4).map(|_| sim.join(BOTH)).collect();
    sim.publish(a, &[(MediaKind::Video, Source::Camera)]);
    sim.connect_all();
    sim.stream(a, Some(0), None, Duration::from_millis(500));
    let before = sim.clients[a].keyframe_requests;
    // Four subscribers each ask for a keyframe every 10 ms for 2 s: 800 requests.
    let until = sim.now + Duration::from_secs(2);
    let mut last = sim.now;
    let subs2 = subs.clone();
    sim.run_until(until, |s| {
        if s.now >= last + Duration::from_millis(10) {
            last = s.now;
            for &i in &subs2 {
                s.request_keyframes(i);
            }
        }
    });
    sim.run_for(Duration::from_millis(600));
    let got = sim.clients[a].keyframe_requests - before;
    // 500 ms interval over ~2.6 s: a handful reach the publisher, never hundreds.
    assert!(got >= 3, "keyframe requests reach the publisher ({got})");
    assert!(got <= 7, "keyframe requests are throttled ({got})");
    assert!(sim.core.stats().keyframe_requests_throttled > 50);
}

#[test]
fn nack_repairs_downstream_loss_from_the_sfu_cache() {
    let mut sim = Sim::new(3);
    let a = sim.join(BOTH);
    let b = sim.join(BOTH);
    sim.publish(a, &[(MediaKind::Video, Source::Camera)]);
    sim.connect_all();
    sim.clients[b].down = Link {
        loss: 0.10,
        delay: Duration::from_millis(15),
        jitter: Duration::from_millis(10),
    };
    sim.clients[a].up = Link {
        loss: 0.0,
        delay: Duration::from_millis(5),
        jitter: Duration::ZERO,
    };
    let (nv, _) = sim.stream(a, Some(0), None, Duration::from_secs(3));
    sim.run_for(Duration::from_secs(1));
    let m = by_mid(&sim.clients[b].received);
    let (ctr, _, _) = m.values().next().expect("video received");
    let unique: HashSet<u32> = ctr.iter().copied().collect();
    // Without repair ~10 % would be missing; NACK + retransmission from the SFU's cache
    // (the publisher's link was lossless, so nothing else could resend) brings it back.
    let missing = nv as usize - unique.len();
    assert!(
        missing * 100 <= nv as usize,
        "{missing} of {nv} packets still missing"
    );
    assert!(ctr.len() >= unique.len());
}

#[test]
fn forwarding_survives_upstream_loss_jitter_and_reordering() {
    let mut sim = Sim::new(4);
    let a = sim.join(BOTH);
    let b = sim.join(BOTH);
    sim.publish(
        a,
        &[
            (MediaKind::Video, Source::Camera),
            (MediaKind::Audio, Source::Microphone),
        ],
    );
    sim.connect_all();
    sim.clients[a].up = Link {
        loss: 0.05,
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(40), // far more than the packet spacing: reorders
    };
    let (nv, _) = sim.stream(a, Some(0), Some(1), Duration::from_secs(3));
    sim.run_for(Duration::from_secs(1));
    let m = by_mid(&sim.clients[b].received);
    let video = m.values().find(|v| v.0.len() > 200).expect("video m-line");
    let unique: HashSet<u32> = video.0.iter().copied().collect();
    // The SFU NACKs the publisher (str0m's receive side) and forwards repairs.
    assert!(
        unique.len() * 100 >= nv as usize * 98,
        "{} of {nv}",
        unique.len()
    );
}

#[test]
fn republish_continues_the_subscriber_stream() {
    let mut sim = Sim::new(5);
    let a = sim.join(BOTH);
    let b = sim.join(BOTH);
    sim.publish(a, &[(MediaKind::Video, Source::Camera)]);
    sim.connect_all();
    sim.stream(a, Some(0), None, Duration::from_secs(1));
    sim.run_for(Duration::from_millis(100));
    let offers_before = sim.clients[b].offers;
    let first: Vec<common::Got> = sim.clients[b].received.clone();
    let last = first.last().expect("received before").clone();
    // Re-publish the camera on a fresh m-line (new SSRC, new sequence and timestamp
    // bases), dropping the old one.
    let answer = sim
        .publish_raw(
            a,
            &[(MediaKind::Video, Source::Camera)],
            vec![(1, Source::Camera)],
        )
        .expect("re-publish");
    assert_eq!(answer.tracks.len(), 1);
    assert!(
        sim.events
            .iter()
            .any(|e| matches!(e, SfuEvent::TrackUnpublished { .. }))
    );
    sim.connect_all();
    sim.run_for(Duration::from_millis(200));
    sim.stream(a, Some(1), None, Duration::from_secs(1));
    sim.run_for(Duration::from_millis(200));
    assert_eq!(
        sim.clients[b].offers, offers_before,
        "no renegotiation for the subscriber"
    );
    let after: Vec<&common::Got> = sim.clients[b].received[first.len()..].iter().collect();
    assert!(
        after.len() > 50,
        "the new source is forwarded ({})",
        after.len()
    );
    let next = after[0];
    assert_eq!(next.ssrc, last.ssrc, "same outgoing SSRC");
    assert_eq!(next.mid, last.mid, "same m-line");
    assert_eq!(next.seq, last.seq + 1, "sequence continues");
    let gap = next.ts.wrapping_sub(last.ts);
    assert!(
        (9_000..90_000).contains(&gap),
        "timestamp advances with wall time ({gap})"
    );
    assert!(after.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

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
fn many_joins_and_leaves_free_everything() {
    let mut sim = Sim::new(7);
    for round in 0..5 {
        let ids: Vec<usize> = (0..6).map(|_| sim.join(BOTH)).collect();
        for &i in &ids[..3] {
            sim.publish(
                i,
                &[
                    (MediaKind::Video, Source::Camera),
                    (MediaKind::Audio, Source::Microphone),
                ],
            );
        }
        sim.connect_all();
        sim.stream(ids[0], Some(0), Some(1), Duration::from_millis(300));
        let c = sim.core.counts();
        assert_eq!(c.participants, 6);
        assert_eq!(c.producers, 6);
        // Publishers consume the 2 other publishers' 2 tracks; the rest all 3 publishers'.
        assert_eq!(
            c.consumers,
            3 * 4 + 3 * 6,
            "each subscriber consumes the others' tracks"
        );
        // Leave in a scrambled order.
        for k in [3usize, 0, 5, 1, 4, 2] {
            let i = ids[k];
            sim.core.leave(sim.clients[i].id).expect("leave");
            sim.clients[i].silent = true;
            sim.run_for(Duration::from_millis(10));
        }
        sim.run_for(Duration::from_millis(50));
        assert_eq!(
            sim.core.counts(),
            Counts::default(),
            "round {round}: all state freed"
        );
    }
}

#[test]
fn abrupt_disconnect_is_noticed_by_consent_timeout() {
    let mut sim = Sim::new(8);
    let a = sim.join(BOTH);
    let b = sim.join(BOTH);
    sim.publish(a, &[(MediaKind::Video, Source::Camera)]);
    sim.connect_all();
    sim.stream(a, Some(0), None, Duration::from_millis(500));
    // b vanishes without a word.
    sim.clients[b].silent = true;
    sim.events.clear();
    sim.run_for(Duration::from_secs(40));
    let removed: Vec<_> = sim
        .events
        .iter()
        .filter_map(|e| match e {
            SfuEvent::ParticipantRemoved {
                participant,
                reason,
                ..
            } => Some((*participant, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        removed,
        vec![(sim.clients[b].id, RemovalReason::ConsentTimeout)]
    );
    let c = sim.core.counts();
    assert_eq!(c.participants, 1);
    assert_eq!(c.consumers, 0);
    assert_eq!(
        c.transports, 2,
        "a's publisher and subscriber transports remain"
    );
}

#[test]
fn garbage_datagrams_hurt_no_one() {
    let mut sim = Sim::new(9);
    let a = sim.join(BOTH);
    let b = sim.join(BOTH);
    sim.publish(a, &[(MediaKind::Video, Source::Camera)]);
    sim.connect_all();
    let mut rng = fastrand::Rng::with_seed(99);
    let known = sim.clients[a].addr;
    let known_pub = std::net::SocketAddr::new(known.ip(), known.port() + 1);
    for i in 0..5_000 {
        let len = rng.usize(0..1500);
        let mut d: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        // Some look like RTP/RTCP, DTLS or STUN to reach deeper parsers.
        match i % 4 {
            0 if len > 0 => d[0] = 0x80,
            1 if len > 0 => d[0] = 22,
            2 if len > 8 => {
                d[0] = 0;
                d[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
            }
            _ => {}
        }
        let from = if i % 2 == 0 {
            known_pub
        } else {
            "203.0.113.9:1234".parse().unwrap()
        };
        sim.core.handle_datagram(sim.now, i % 2, from, &d);
    }
    let (nv, _) = sim.stream(a, Some(0), None, Duration::from_secs(1));
    sim.run_for(Duration::from_millis(200));
    assert_eq!(
        sim.clients[b].received.len(),
        nv as usize,
        "media still flows"
    );
    assert!(sim.core.stats().unroutable > 1000);
}

#[test]
fn bad_sdp_is_refused_with_a_code() {
    let mut sim = Sim::new(10);
    let a = sim.join(BOTH);
    let id = sim.clients[a].id;
    for bad in [
        "",
        "garbage",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n",
        &"a".repeat(70_000),
    ] {
        let e = sim.core.publish(sim.now, id, bad, &[]).unwrap_err();
        assert!(
            ["bad_sdp", "bad_request"].contains(&e.code()),
            "{bad:.20}: {e}"
        );
    }
    let e = sim.core.subscriber_answer(sim.now, id, "v=0").unwrap_err();
    assert_eq!(e.code(), "no_offer_pending");
    let e = sim.core.mute(id, sfu::TrackId(999), true).unwrap_err();
    assert_eq!(e.code(), "unknown_track");
    // Still works afterwards.
    let b = sim.join(BOTH);
    sim.publish(a, &[(MediaKind::Audio, Source::Microphone)]);
    sim.connect_all();
    let (_, na) = sim.stream(a, None, Some(0), Duration::from_millis(500));
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.clients[b].received.len(), na as usize);
}

#[test]
fn active_speakers_follow_audio_levels() {
    let mut sim = Sim::new(11);
    let a = sim.join(BOTH);
    let b = sim.join(BOTH);
    sim.publish(a, &[(MediaKind::Audio, Source::Microphone)]);
    sim.publish(b, &[(MediaKind::Audio, Source::Microphone)]);
    sim.connect_all();
    sim.events.clear();
    // a talks (-20 dBov), b is silent (-127 dBov), for 2 s of 20 ms packets.
    for k in 0..100u32 {
        for (who, level) in [(a, -20i8), (b, -127i8)] {
            let ext = str0m::rtp::ExtensionValues {
                audio_level: Some(level),
                voice_activity: Some(level > -50),
                ..Default::default()
            };
            sim.send_rtp_ext(who, 0, k * 960, false, vec![1; 80], ext);
        }
        sim.run_for(Duration::from_millis(20));
    }
    let speakers = |sim: &Sim| -> Vec<Vec<ParticipantId>> {
        sim.events
            .iter()
            .filter_map(|e| match e {
                SfuEvent::ActiveSpeakers { speakers, .. } => {
                    Some(speakers.iter().map(|s| s.0).collect())
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        speakers(&sim),
        vec![vec![sim.clients[a].id]],
        "a, and only a, is speaking"
    );
    // Now a goes quiet: the set empties.
    sim.events.clear();
    for k in 100..200u32 {
        let ext = str0m::rtp::ExtensionValues {
            audio_level: Some(-127),
            voice_activity: Some(false),
            ..Default::default()
        };
        sim.send_rtp_ext(a, 0, k * 960, false, vec![1; 80], ext);
        sim.run_for(Duration::from_millis(20));
    }
    assert_eq!(speakers(&sim), vec![Vec::<ParticipantId>::new()]);
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
fn a_periodic_beep_is_one_steady_speaker_whatever_its_phase() {
    // Chromium's fake microphone: ~30 ms loud every 500 ms, silence between. The decision
    // must not depend on where the beep falls relative to the evaluation period.
    for offset_ms in [0u32, 100, 200, 300, 400] {
        let mut sim = Sim::new(20 + u64::from(offset_ms));
        let a = sim.join(BOTH);
        let _b = sim.join(BOTH);
        sim.publish(a, &[(MediaKind::Audio, Source::Microphone)]);
        sim.connect_all();
        sim.run_for(Duration::from_millis(u64::from(offset_ms)));
        sim.events.clear();
        for k in 0..200u32 {
            let loud = (k % 25) < 2; // 2 of every 25 packets (40 ms of each 500 ms)
            let ext = str0m::rtp::ExtensionValues {
                audio_level: Some(if loud { -10 } else { -127 }),
                voice_activity: Some(loud),
                ..Default::default()
            };
            sim.send_rtp_ext(a, 0, k * 960, false, vec![1; 80], ext);
            sim.run_for(Duration::from_millis(20));
        }
        let sets: Vec<Vec<ParticipantId>> = sim
            .events
            .iter()
            .filter_map(|e| match e {
                SfuEvent::ActiveSpeakers { speakers, .. } => {
                    Some(speakers.iter().map(|s| s.0).collect())
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            sets,
            vec![vec![sim.clients[a].id]],
            "offset {offset_ms} ms: one event, a speaking"
        );
    }
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
    sim.core.leave(sim.clients[vp8].id).expect("leave");
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
    let got = by_mid(&sim.clients[sub].received);
    for (p, mid) in [(h264, hmid), (vp8b, vmid)] {
        assert_eq!(
            got.get(&mid).map(|r| r.0.len() as u32),
            Some(sent[&p].0),
            "video of publisher {p} on mid {mid}"
        );
    }
}
