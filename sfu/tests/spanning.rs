//! A room across shards (`sfu::core::span`, `sfu::placement`), deterministic: two shard
//! cores joined by the harness as the driver joins them (placement, span commands, peer
//! messages delivered in order), simulated clients and network.
//!
//! What must hold: subscribers on either shard get every packet of a publisher on either
//! shard, in order and with contiguous sequence numbers; key-frame requests cross back to
//! the publisher's shard; departures on one shard stop the consumers on the other without
//! removing anyone; a small room never spans; everything returns to zero on both shards.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{BOTH, Sim};
use sfu::core::SfuEvent;
use sfu::{MediaKind, SfuConfig, Source};

fn spanning(after: usize) -> Sim {
    let cfg = SfuConfig {
        room_span_after: after,
        ..common::config()
    };
    Sim::with_shards(7, cfg, 2)
}

/// Per receiver m-line: (payload counters, output sequence numbers).
fn by_mid(got: &[common::Got]) -> BTreeMap<String, (Vec<u32>, Vec<u64>)> {
    let mut m: BTreeMap<String, (Vec<u32>, Vec<u64>)> = BTreeMap::new();
    for g in got {
        let e = m.entry(g.mid.to_string()).or_default();
        e.0.push(u32::from_be_bytes([
            g.payload[2],
            g.payload[3],
            g.payload[4],
            g.payload[5],
        ]));
        e.1.push(g.seq);
    }
    m
}

fn assert_complete(sim: &Sim, sub: usize, nv: u32, na: u32) {
    let m = by_mid(&sim.clients[sub].received);
    let mut counts: Vec<usize> = m.values().map(|v| v.0.len()).collect();
    counts.sort();
    assert_eq!(
        counts,
        vec![na as usize, nv as usize],
        "subscriber {sub} (shard {}) gets every packet once",
        sim.shard_of(sub)
    );
    for (mid, (ctr, seqs)) in &m {
        assert!(
            ctr.windows(2).all(|w| w[1] == w[0] + 1),
            "payload order on {mid} at {sub}"
        );
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "contiguous sequence numbers on {mid} at {sub}"
        );
    }
}

#[test]
fn a_big_room_spans_both_shards_and_everyone_gets_every_packet() {
    let mut sim = spanning(2);
    let ids: Vec<usize> = (0..6).map(|_| sim.join(BOTH)).collect();
    let shards: Vec<usize> = ids.iter().map(|i| sim.shard_of(*i)).collect();
    assert_eq!(shards, vec![0, 0, 1, 1, 0, 1], "placement");
    // One publisher on each shard.
    let (a, b) = (ids[0], ids[2]);
    for p in [a, b] {
        sim.publish(
            p,
            &[
                (MediaKind::Video, Source::Camera),
                (MediaKind::Audio, Source::Microphone),
            ],
        );
    }
    sim.connect_all();
    assert!(sim.all_connected(), "every transport connected");
    let counts = sim.stream_all(&[a, b], Duration::from_secs(2));
    sim.run_for(Duration::from_millis(300));
    for &sub in &ids {
        let mut want = 0usize;
        for &publ in &[a, b] {
            if publ == sub {
                continue;
            }
            want += 1;
            let (nv, na) = counts[&publ];
            let got: Vec<&common::Got> = sim.clients[sub]
                .received
                .iter()
                .filter(|g| g.payload[0] == publ as u8)
                .collect();
            let owned: Vec<common::Got> = got.into_iter().cloned().collect();
            let m = by_mid(&owned);
            let mut c: Vec<usize> = m.values().map(|v| v.0.len()).collect();
            c.sort();
            assert_eq!(
                c,
                vec![na as usize, nv as usize],
                "subscriber {sub} on shard {} gets all of {publ} (shard {})",
                sim.shard_of(sub),
                sim.shard_of(publ)
            );
            for (mid, (ctr, seqs)) in &m {
                assert!(ctr.windows(2).all(|w| w[1] == w[0] + 1), "order {mid}");
                assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "seq {mid}");
            }
        }
        assert!(want > 0);
    }
    let (s0, s1) = (sim.cores[0].stats(), sim.cores[1].stats());
    assert!(s0.relayed_out > 0 && s1.relayed_in > 0, "0 -> 1 relayed");
    assert!(s1.relayed_out > 0 && s0.relayed_in > 0, "1 -> 0 relayed");
    assert_eq!(s0.relayed_dropped + s1.relayed_dropped, 0);
    // Each shard encrypted for its own subscribers only.
    assert!(s0.rtp_forwarded > 0 && s1.rtp_forwarded > 0);
}

#[test]
fn a_meeting_stays_on_one_shard() {
    let mut sim = spanning(50);
    let ids: Vec<usize> = (0..6).map(|_| sim.join(BOTH)).collect();
    assert!(ids.iter().all(|i| sim.shard_of(*i) == 0));
    sim.publish(ids[0], &[(MediaKind::Video, Source::Camera)]);
    sim.connect_all();
    sim.stream(ids[0], Some(0), None, Duration::from_millis(500));
    assert_eq!(sim.cores[0].stats().relayed_out, 0, "no cross-shard hop");
    assert_eq!(sim.cores[1].counts().participants, 0);
}

#[test]
fn a_late_joiner_on_the_other_shard_gets_the_tracks_already_published() {
    let mut sim = spanning(1);
    let a = sim.join(BOTH); // shard 0
    sim.publish(
        a,
        &[
            (MediaKind::Video, Source::Camera),
            (MediaKind::Audio, Source::Microphone),
        ],
    );
    let late = sim.join(BOTH); // shard 1: the room starts spanning now
    assert_eq!(sim.shard_of(late), 1);
    sim.connect_all();
    let (nv, na) = sim.stream(a, Some(0), Some(1), Duration::from_secs(1));
    sim.run_for(Duration::from_millis(300));
    assert_complete(&sim, late, nv, na);
}

#[test]
fn key_frame_requests_cross_back_to_the_publishers_shard() {
    let mut sim = spanning(1);
    let a = sim.join(BOTH); // shard 0
    let sub = sim.join(BOTH); // shard 1
    assert_eq!(sim.shard_of(sub), 1);
    sim.publish(a, &[(MediaKind::Video, Source::Camera)]);
    sim.connect_all();
    sim.stream(a, Some(0), None, Duration::from_millis(300));
    let before = sim.clients[a].keyframe_requests;
    sim.request_keyframes(sub);
    sim.stream(a, Some(0), None, Duration::from_millis(300));
    assert!(
        sim.clients[a].keyframe_requests > before,
        "a PLI from the subscriber on shard 1 reaches the publisher on shard 0"
    );
}

#[test]
fn departures_across_shards_remove_no_one_and_everything_returns_to_zero() {
    let mut sim = spanning(2);
    let ids: Vec<usize> = (0..5).map(|_| sim.join(BOTH)).collect();
    for &p in &ids {
        sim.publish(
            p,
            &[
                (MediaKind::Video, Source::Camera),
                (MediaKind::Audio, Source::Microphone),
            ],
        );
    }
    sim.connect_all();
    sim.stream_all(&ids, Duration::from_millis(500));
    // The first joiner (shard 0, the room's home) leaves; the others stay.
    sim.leave(ids[0]);
    sim.run_for(Duration::from_millis(300));
    let survivors = &ids[1..];
    let before: Vec<usize> = survivors
        .iter()
        .map(|i| sim.clients[*i].received.len())
        .collect();
    let counts = sim.stream_all(survivors, Duration::from_secs(1));
    sim.run_for(Duration::from_millis(300));
    for (k, &sub) in survivors.iter().enumerate() {
        let got = sim.clients[sub].received.len() - before[k];
        let want: u32 = survivors
            .iter()
            .filter(|p| **p != sub)
            .map(|p| counts[p].0 + counts[p].1)
            .sum();
        assert_eq!(got, want as usize, "survivor {sub} gets everyone left");
        // Its latest offer stopped the leaver's m-lines and was answered.
        assert!(
            !sim.clients[sub]
                .offer_tracks
                .iter()
                .any(|t| t.publisher == sim.clients[ids[0]].id && t.track.is_some()),
            "no live consumer of the leaver at {sub}"
        );
    }
    assert!(
        !sim.events
            .iter()
            .any(|e| matches!(e, SfuEvent::ParticipantRemoved { .. })),
        "nobody removed"
    );
    for &i in survivors {
        sim.leave(i);
    }
    sim.run_for(Duration::from_millis(200));
    for (s, core) in sim.cores.iter().enumerate() {
        let c = core.counts();
        assert_eq!(
            (
                c.rooms,
                c.participants,
                c.transports,
                c.producers,
                c.consumers
            ),
            (0, 0, 0, 0, 0),
            "shard {s} back to zero: {c:?}"
        );
    }
}
