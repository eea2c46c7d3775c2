//! Garbage datagrams and bad SDP hurt no one (see `common/mod.rs` for the simulated peers
//! and network): refused with a code, and media keeps flowing.

mod common;

use std::time::Duration;

use common::{BOTH, Sim};
use sfu::{MediaKind, Source};

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
        sim.cores[0].handle_datagram(sim.now, i % 2, from, &d);
    }
    let (nv, _) = sim.stream(a, Some(0), None, Duration::from_secs(1));
    sim.run_for(Duration::from_millis(200));
    assert_eq!(
        sim.clients[b].received.len(),
        nv as usize,
        "media still flows"
    );
    assert!(sim.cores[0].stats().unroutable > 1000);
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
        let e = sim.cores[0].publish(sim.now, id, bad, &[]).unwrap_err();
        assert!(
            ["bad_sdp", "bad_request"].contains(&e.code()),
            "{bad:.20}: {e}"
        );
    }
    let e = sim.cores[0]
        .subscriber_answer(sim.now, id, "v=0")
        .unwrap_err();
    assert_eq!(e.code(), "no_offer_pending");
    let e = sim.cores[0].mute(id, sfu::TrackId(999), true).unwrap_err();
    assert_eq!(e.code(), "unknown_track");
    // Still works afterwards.
    let b = sim.join(BOTH);
    sim.publish(a, &[(MediaKind::Audio, Source::Microphone)]);
    sim.connect_all();
    let (_, na) = sim.stream(a, None, Some(0), Duration::from_millis(500));
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.clients[b].received.len(), na as usize);
}
