//! The engine's peers against the real SFU driver in-process (signaling through the
//! SFU's API, media over loopback UDP): publish, subscribe, stamped media arrives,
//! key frame requests reach the publisher and key frames reach the subscriber.

use super::*;
use sfu::core::{Grants, TrackRequest};
use sfu::{ParticipantId, Sfu, SfuConfig, SfuEvent, Source};

#[test]
fn peers_publish_and_subscribe_through_the_sfu() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A port range of our own (tests of other crates may run at the same time).
    let port = 46_000 + (std::process::id() % 400) as u16 * 10;
    let (sfu, mut events) = Sfu::start(SfuConfig {
        port_min: port,
        port_max: port + 9,
        shards: 1,
        ..SfuConfig::default()
    })
    .unwrap();
    let live = Arc::new(Live::default());
    let cfg = MediaCfg {
        video_kbps: 300,
        fps: 30,
        keyframe_interval: Duration::from_secs(600),
        audio_bytes: 80,
        simulcast: false,
    };
    let (eng, thread) = spawn(0, cfg, "127.0.0.1".parse().unwrap(), live.clone()).unwrap();
    let grants = Grants {
        publish: true,
        subscribe: true,
        proctor: false,
    };
    let report = rt.block_on(async {
        for id in [1, 2] {
            sfu.join(ParticipantId(id), "t", grants, 0.0).unwrap();
        }
        let offer = eng.publish(1).await.unwrap();
        let answer = sfu
            .publish(
                ParticipantId(1),
                offer.sdp,
                vec![
                    TrackRequest {
                        mid: offer.video_mid,
                        source: Source::Camera,
                        muted: false,
                    },
                    TrackRequest {
                        mid: offer.audio_mid,
                        source: Source::Microphone,
                        muted: false,
                    },
                ],
            )
            .await
            .unwrap();
        eng.publish_answer(1, answer.sdp).await.unwrap();
        // Participant 2 gets media; then participant 3 arrives long after the first
        // key frame (the next periodic one is 10 minutes away), so the key frame it
        // sees can only be the publisher's answer to the SFU's PLI.
        let mut joined3 = false;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                Instant::now() < deadline,
                "within 30 s: participant 2 media and participant 3 a key frame (joined 3: {joined3})"
            );
            while let Ok(ev) = events.try_recv() {
                if let SfuEvent::SubscriberOffer {
                    participant, sdp, ..
                } = ev
                {
                    let a = eng.subscribe_offer(participant.0, sdp).await.unwrap();
                    sfu.answer(participant, a).await.unwrap();
                }
            }
            let r = eng.report().await.unwrap();
            let sub = r.parts.get(&2).cloned().unwrap_or_default();
            if !joined3 && sub.rx_packets > 200 && sub.mids_with_media.len() == 2 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                sfu.join(ParticipantId(3), "t", grants, 0.0).unwrap();
                joined3 = true;
            }
            let late = r.parts.get(&3).cloned().unwrap_or_default();
            if joined3 && late.keyframes_rx > 0 && late.rx_packets > 100 {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    eng.stop();
    thread.join().unwrap();
    sfu.shutdown();
    let publisher = &report.parts[&1];
    let sub = &report.parts[&2];
    assert!(publisher.pub_connected && sub.sub_connected);
    assert!(publisher.tx_packets >= sub.rx_packets / 2);
    assert!(
        publisher.keyframe_requests > 0,
        "the SFU asked the publisher for a key frame for the late subscriber"
    );
    assert!(sub.keyframes_rx > 0);
    assert!(sub.video_rx_packets > 0 && sub.video_rx_packets < sub.rx_packets);
    assert!(
        report.latency_us.count() >= sub.rx_packets,
        "every packet is stamped"
    );
    assert_eq!(sub.layer_switches_mid_frame, 0);
    assert!(sub.jitter_ms.is_some() || !sub.mids_with_media.is_empty());
    assert!(
        live.rx_packets.load(Ordering::Relaxed) >= sub.rx_packets
            && live.tx_packets.load(Ordering::Relaxed) >= publisher.tx_packets
    );
}
