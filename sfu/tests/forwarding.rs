//! Deterministic tests of the media core with simulated peers and network (see
//! `common/mod.rs`): every packet reaches every subscriber in order, NACK repair on either
//! side of the SFU, and a re-publish continuing the subscriber's stream.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{BOTH, Link, Sim};
use sfu::core::SfuEvent;
use sfu::{MediaKind, Source};

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
    let st = sim.cores[0].stats();
    assert_eq!(st.rtp_forwarded, 2 * u64::from(nv + na));
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
        ..Link::default()
    };
    sim.clients[a].up = Link {
        loss: 0.0,
        delay: Duration::from_millis(5),
        jitter: Duration::ZERO,
        ..Link::default()
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
        ..Link::default()
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
