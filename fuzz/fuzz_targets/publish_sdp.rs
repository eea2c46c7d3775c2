//! Arbitrary SDP offers (and track lists) through `publish`: errors, never panics.
#![no_main]
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sfu::core::{Grants, ShardCore, TrackRequest};
use sfu::{ParticipantId, SfuConfig, Source};

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    let now = Instant::now();
    let mut core = ShardCore::new(
        SfuConfig::default(),
        vec![40000],
        Arc::new(AtomicU64::new(0)),
    );
    let g = Grants {
        publish: true,
        subscribe: true,
        proctor: false,
    };
    core.join(now, ParticipantId(1), "r", g, 0.0).unwrap();
    core.join(now, ParticipantId(2), "r", g, 0.0).unwrap();
    let tracks = [
        TrackRequest {
            mid: "0".into(),
            source: Source::Microphone,
            muted: false,
        },
        TrackRequest {
            mid: "1".into(),
            source: Source::Camera,
            muted: false,
        },
    ];
    let _ = core.publish(now, ParticipantId(1), sdp, &tracks);
    let _ = core.subscriber_answer(now, ParticipantId(2), sdp);
    while core.poll_event().is_some() {}
});
