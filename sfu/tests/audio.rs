//! Audio on lossy links (see `common/mod.rs` for the simulated peers and network): RED
//! forwarded to subscribers that accepted it and stripped to plain Opus for the others,
//! DTX silences that stay one continuous stream, and the Opus options our answers carry.

mod common;

use std::time::{Duration, Instant};

use common::{BOTH, Got, Sim};
use sfu::core::SfuEvent;
use sfu::{MediaKind, Source};
use str0m::change::SdpOffer;
use str0m::media::Direction;
use str0m::{Candidate, Rtc};

/// A RED payload: one redundant block (the previous frame, 960 ticks back), then the primary.
fn red_payload(prev: &[u8], cur: &[u8], pt: u8) -> Vec<u8> {
    let len = prev.len() as u16;
    let off = 960u16;
    let mut v = vec![
        0x80 | pt,
        (off >> 6) as u8,
        (((off & 0x3f) << 2) as u8) | (len >> 8) as u8,
        len as u8,
        pt,
    ];
    v.extend_from_slice(prev);
    v.extend_from_slice(cur);
    v
}

/// The Opus frame of packet `k`: a counter and a length that varies.
fn frame(k: u32) -> Vec<u8> {
    let mut f = k.to_be_bytes().to_vec();
    f.resize(40 + (k % 7) as usize, 0xA5);
    f
}

fn audio_of(got: &[Got]) -> Vec<&Got> {
    got.iter().filter(|g| g.payload.len() < 200).collect()
}

/// A payload type a client's subscriber PC knows by codec name.
fn sub_pt(sim: &Sim, idx: usize, red: bool) -> u8 {
    let rtc = sim.clients[idx].sub_rtc.as_ref().expect("subscriber pc");
    let p = rtc
        .codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == str0m::format::Codec::Opus)
        .expect("opus");
    if red {
        *p.red().expect("red negotiated on the subscriber pc")
    } else {
        *p.pt()
    }
}

#[test]
fn red_goes_as_is_to_red_subscribers_and_as_its_primary_to_the_others() {
    let mut sim = Sim::new(31);
    let a = sim.join_red(BOTH);
    let with_red = sim.join_red(BOTH);
    let without = sim.join(BOTH);
    sim.publish(a, &[(MediaKind::Audio, Source::Microphone)]);
    sim.connect_all();
    // The subscriber offers list RED beside Opus, and only the RED-capable PC kept it.
    for sub in [with_red, without] {
        let offer = sim.clients[sub].offer_sdps.last().expect("an offer");
        assert!(offer.contains(" red/48000/2"), "offer lists red: {offer}");
        assert!(
            offer.contains("useinbandfec=1"),
            "offer asks for FEC: {offer}"
        );
    }
    let opus_in = {
        let rtc = sim.clients[a].pub_rtc.as_ref().expect("publisher");
        let p = rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.red().is_some());
        *p.expect("the publisher negotiated RED (our answer kept it)")
            .pt()
    };
    let n = 50u32;
    let mut sent = Vec::new();
    for k in 0..n {
        let payload = red_payload(&frame(k.saturating_sub(1)), &frame(k), opus_in);
        sent.push(payload.clone());
        sim.send_rtp_red(a, 0, k * 960, payload);
        sim.run_for(Duration::from_millis(20));
    }
    sim.run_for(Duration::from_millis(200));

    let got = audio_of(&sim.clients[with_red].received);
    assert_eq!(
        got.len(),
        n as usize,
        "every RED packet reaches the RED subscriber"
    );
    let red_pt = sub_pt(&sim, with_red, true);
    let opus_out = sub_pt(&sim, with_red, false);
    for (g, s) in got.iter().zip(&sent) {
        assert_eq!(g.pt, red_pt, "forwarded as RED");
        // Block payload types follow the subscriber's Opus payload type.
        let mut expect = s.clone();
        expect[0] = 0x80 | opus_out;
        expect[4] = opus_out;
        assert_eq!(g.payload, expect, "RED payload passed through");
    }

    let got = audio_of(&sim.clients[without].received);
    assert_eq!(
        got.len(),
        n as usize,
        "every packet reaches the plain subscriber"
    );
    let opus_out = sub_pt(&sim, without, false);
    for (k, g) in got.iter().enumerate() {
        assert_eq!(g.pt, opus_out, "stripped to Opus");
        assert_eq!(
            g.payload,
            frame(k as u32),
            "the primary block, nothing else"
        );
    }
    let seqs: Vec<u64> = got.iter().map(|g| g.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence continuous: {seqs:?}"
    );
}

#[test]
fn a_malformed_red_packet_is_dropped_and_the_stream_goes_on() {
    let mut sim = Sim::new(32);
    let a = sim.join_red(BOTH);
    let b = sim.join(BOTH);
    sim.publish(a, &[(MediaKind::Audio, Source::Microphone)]);
    sim.connect_all();
    let rejected = sim.cores[0].stats().rejected;
    // A redundant block claiming 1000 bytes in a 20-byte payload.
    sim.send_rtp_red(a, 0, 0, vec![0x80 | 111, 0, 0x0f, 0xe8, 111, 1, 2, 3]);
    sim.run_for(Duration::from_millis(20));
    sim.send_rtp_red(a, 0, 960, red_payload(&frame(0), &frame(1), 111));
    sim.run_for(Duration::from_millis(200));
    let got = audio_of(&sim.clients[b].received);
    assert_eq!(got.len(), 1, "only the good packet is forwarded");
    assert_eq!(got[0].payload, frame(1));
    assert_eq!(sim.cores[0].stats().rejected, rejected + 1);
}

#[test]
fn a_dtx_silence_is_not_a_dead_stream() {
    let mut sim = Sim::new(33);
    let a = sim.join(BOTH);
    let b = sim.join(BOTH);
    sim.publish(a, &[(MediaKind::Audio, Source::Microphone)]);
    sim.connect_all();
    sim.events.clear();
    let talk = |sim: &mut Sim, from: u32, ts0: u32| {
        for k in 0..50u32 {
            let ext = str0m::rtp::ExtensionValues {
                audio_level: Some(-20),
                voice_activity: Some(true),
                ..Default::default()
            };
            sim.send_rtp_ext(a, 0, ts0 + k * 960, false, frame(from + k), ext);
            sim.run_for(Duration::from_millis(20));
        }
    };
    talk(&mut sim, 0, 0);
    // DTX: 12 s without a packet (Opus sends nothing during silence but a rare comfort
    // frame); the next packet's timestamp has advanced by the silence, its sequence number
    // by one.
    let gap = Duration::from_secs(12);
    sim.run_for(gap);
    let resumed_at: Instant = sim.now;
    let ts_after = 50 * 960 + 12 * 48_000;
    talk(&mut sim, 50, ts_after);
    sim.run_for(Duration::from_millis(200));

    let got = audio_of(&sim.clients[b].received);
    assert_eq!(got.len(), 100, "both talk spurts forwarded");
    let seqs: Vec<u64> = got.iter().map(|g| g.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no hole in the sequence across the silence: {seqs:?}"
    );
    let dts = got[50].ts.wrapping_sub(got[49].ts);
    assert_eq!(
        dts,
        960 + 12 * 48_000,
        "timestamps keep the silence's length"
    );
    assert!(
        got[50].at < resumed_at + Duration::from_millis(100),
        "forwarding resumes with the first packet after the silence"
    );
    for e in &sim.events {
        assert!(
            !matches!(
                e,
                SfuEvent::ParticipantRemoved { .. } | SfuEvent::TrackUnpublished { .. }
            ),
            "nothing is torn down over a silence: {e:?}"
        );
    }
    // The speaker is a speaker again after the silence.
    let last_speakers = sim.events.iter().rev().find_map(|e| match e {
        SfuEvent::ActiveSpeakers { speakers, .. } => Some(speakers.clone()),
        _ => None,
    });
    let ids: Vec<_> = last_speakers
        .expect("speaker events")
        .iter()
        .map(|s| s.0)
        .collect();
    assert_eq!(ids, vec![sim.clients[a].id]);
}

/// A publisher's offer (from a str0m PC with RED) with its Opus fmtp edited by `edit`.
fn offer_text(edit: impl Fn(&str) -> String) -> String {
    let now = Instant::now();
    let mut rtc = Rtc::builder()
        .set_rtp_mode(true)
        .enable_opus(true, true)
        .build(now);
    let addr = "10.9.9.9:5000".parse().expect("addr");
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, _) = api.apply().expect("offer");
    let text = edit(&offer.to_sdp_string());
    SdpOffer::from_sdp_string(&text).expect("edited offer parses");
    text
}

fn publish_answer(offer: &str) -> String {
    let mut sim = Sim::new(34);
    let a = sim.join(BOTH);
    let reqs = [sfu::core::TrackRequest {
        mid: offer
            .lines()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .expect("mid")
            .trim()
            .to_string(),
        source: Source::Microphone,
        muted: false,
    }];
    let id = sim.clients[a].id;
    let now = sim.now;
    sim.core_of(id)
        .publish(now, id, offer, &reqs)
        .expect("publish")
        .sdp
}

fn m_audio(sdp: &str) -> String {
    sdp.lines()
        .find(|l| l.starts_with("m=audio"))
        .expect("m=audio")
        .to_string()
}

#[test]
fn the_publisher_answer_follows_the_offer_for_red_order_fec_and_dtx() {
    // str0m offers RED first (as a page that preferred audio/red does).
    let red_first = offer_text(|s| s.replace("useinbandfec=1", "useinbandfec=1;usedtx=1"));
    assert!(m_audio(&red_first).ends_with(" 63 111"), "{red_first}");
    let answer = publish_answer(&red_first);
    assert!(
        m_audio(&answer).ends_with(" 63 111"),
        "RED kept first: {answer}"
    );
    assert!(answer.contains("a=rtpmap:63 red/48000/2"), "{answer}");
    let opus_fmtp = answer
        .lines()
        .find(|l| l.starts_with("a=fmtp:111 "))
        .expect("opus fmtp");
    assert!(opus_fmtp.contains("useinbandfec=1"), "{opus_fmtp}");
    assert!(opus_fmtp.contains("usedtx=1"), "DTX mirrored: {opus_fmtp}");

    // Chrome's default order (Opus, then RED) and no DTX: the publisher sends plain Opus.
    let opus_first = offer_text(|s| s.replace(" 63 111", " 111 63"));
    let answer = publish_answer(&opus_first);
    assert!(
        m_audio(&answer).ends_with(" 111 63"),
        "Opus first: {answer}"
    );
    assert!(!answer.contains("usedtx"), "{answer}");
}
