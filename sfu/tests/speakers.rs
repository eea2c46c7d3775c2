//! Active speakers from the audio-level header extension (see `common/mod.rs` for the
//! simulated peers and network).

mod common;

use std::time::Duration;

use common::{BOTH, Sim};
use sfu::core::SfuEvent;
use sfu::{MediaKind, ParticipantId, Source};

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
