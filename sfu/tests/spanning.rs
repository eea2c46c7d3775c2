//! A room across shards (`sfu::core::span`, `sfu::placement`), deterministic: two shard
//! cores joined by the harness as the driver joins them (placement, span commands, peer
//! messages delivered in order), simulated clients and network.
//!
//! What must hold: subscribers on either shard get every packet of a publisher on either
//! shard, in order and with contiguous sequence numbers; key-frame requests cross back to
//! the publisher's shard; departures on one shard stop the consumers on the other without
//! removing anyone; a small room never spans; everything returns to zero on both shards;
//! dynacast decides on what the subscribers of every shard want, and forgets a shard's
//! wants when its subscribers vanish, when it leaves the span and with the producer.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::layered::{LAYERS, OFF_AFTER, Publisher, layer_events, layers_since, view};
use common::{BOTH, Sim};
use sfu::core::{RemovalReason, SfuEvent};
use sfu::{MediaKind, SfuConfig, Source, TrackId};

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

/// Runs `step` until client `gone` was removed (its silence noticed: ICE disconnection
/// plus the 10 s consent timeout of the test config); the removal reason.
fn until_removed(sim: &mut Sim, gone: usize, mut step: impl FnMut(&mut Sim)) -> RemovalReason {
    let id = sim.clients[gone].id;
    let until = sim.now + Duration::from_secs(30);
    while sim.now < until {
        step(sim);
        if let Some((_, why)) = sim.removals().into_iter().find(|(x, _)| *x == id) {
            return why;
        }
    }
    panic!("client {gone} was not removed within 30 s of silence");
}

const ALL_ON: [(Option<&str>, bool); 3] = [(Some("q"), true), (Some("h"), true), (Some("f"), true)];
const Q_ONLY: [(Option<&str>, bool); 3] =
    [(Some("q"), true), (Some("h"), false), (Some("f"), false)];
const ALL_OFF: [(Option<&str>, bool); 3] =
    [(Some("q"), false), (Some("h"), false), (Some("f"), false)];

/// The one `PublisherLayers` event for `track` since event `from`, as (rid, active).
fn told_since(sim: &Sim, track: TrackId, from: usize) -> Vec<(Option<String>, bool)> {
    let ev = layer_events(sim, track, from);
    assert_eq!(ev.len(), 1, "one publisherLayers: {ev:?}");
    ev[0].iter().map(|l| (l.rid.clone(), l.active)).collect()
}

fn owned(want: [(Option<&str>, bool); 3]) -> Vec<(Option<String>, bool)> {
    want.iter()
        .map(|(r, a)| (r.map(String::from), *a))
        .collect()
}

#[test]
fn dynacast_decides_on_what_the_subscribers_of_every_shard_want() {
    let mut sim = spanning(1);
    let a = sim.join(BOTH); // shard 0: the publisher
    let b = sim.join(BOTH); // shard 1
    let c = sim.join(BOTH); // shard 0
    assert_eq!([a, b, c].map(|i| sim.shard_of(i)), [0, 1, 0]);
    let track = sim.publish_simulcast(a, &LAYERS)[0].id;
    sim.connect_all();
    let mut publisher = Publisher::new(a);
    publisher.send_for(&mut sim, Duration::from_secs(1));
    assert!(
        layer_events(&sim, track, 0).is_empty(),
        "every layer is wanted at first"
    );

    // Nobody on the publisher's shard sees it (c hides it); b, on the other shard,
    // shows it small: the lowest layer stays on, the others go off after the debounce.
    view(&mut sim, c, track, false, 0, 0);
    view(&mut sim, b, track, true, 150, 100);
    let from = sim.events.len();
    publisher.send_for(&mut sim, OFF_AFTER - Duration::from_millis(300));
    assert!(
        layer_events(&sim, track, from).is_empty(),
        "not before the debounce"
    );
    publisher.send_for(&mut sim, Duration::from_millis(800));
    assert_eq!(told_since(&sim, track, from), owned(Q_ONLY));

    // b enlarges it: its shard reports at once, the layer goes on at once, with a key
    // frame asked of the publisher.
    let from = sim.events.len();
    let requests = sim.clients[a].keyframe_requests_on.len();
    view(&mut sim, b, track, true, 300, 200);
    sim.run_for(Duration::from_millis(250));
    assert_eq!(
        told_since(&sim, track, from),
        owned([(Some("q"), true), (Some("h"), true), (Some("f"), false)])
    );
    assert!(sim.clients[a].keyframe_requests_on.len() > requests);

    // c, on the publisher's shard, shows it large: the top too.
    let from = sim.events.len();
    view(&mut sim, c, track, true, 600, 400);
    sim.run_for(Duration::from_millis(250));
    assert_eq!(told_since(&sim, track, from), owned(ALL_ON));

    // b hides it, c shows it small: the highest of both shards' wants is q.
    let from = sim.events.len();
    view(&mut sim, b, track, false, 300, 200);
    view(&mut sim, c, track, true, 150, 100);
    publisher.send_for(&mut sim, OFF_AFTER + Duration::from_millis(500));
    assert_eq!(told_since(&sim, track, from), owned(Q_ONLY));
    let dropped = sim.cores[0].stats().relayed_dropped + sim.cores[1].stats().relayed_dropped;
    assert_eq!(dropped, 0, "no report about a track or span that is gone");
}

#[test]
fn a_shard_joining_the_span_later_can_want_a_layer_that_was_off_before() {
    let mut sim = spanning(2);
    let a = sim.join(BOTH); // shard 0: the publisher
    let c = sim.join(BOTH); // shard 0
    let track = sim.publish_simulcast(a, &LAYERS)[0].id;
    sim.connect_all();
    // The publisher does what it is told, as studyroom.js does.
    let mut publisher = Publisher::obeying(a, &sim);
    publisher.send_for(&mut sim, Duration::from_secs(1));
    view(&mut sim, c, track, true, 150, 100);
    publisher.send_for(&mut sim, OFF_AFTER + Duration::from_millis(500));
    assert_eq!(
        publisher.sending(),
        [true, false, false],
        "only q is encoded"
    );

    // A third participant: the room spans now, b is on the other shard, whose mirror of
    // the video never saw h or f. It shows the video in full: the top layer goes on.
    let b = sim.join(BOTH);
    assert_eq!(sim.shard_of(b), 1);
    let from = sim.events.len();
    sim.connect_all();
    publisher.send_for(&mut sim, Duration::from_millis(500));
    assert_eq!(told_since(&sim, track, from), owned(ALL_ON));
    assert_eq!(publisher.sending(), [true; 3]);
    let n = sim.clients[b].received.len();
    publisher.send_for(&mut sim, Duration::from_millis(500));
    let got = layers_since(&sim, b, n);
    assert!(got.len() > 20, "video flows to b");
    assert!(got.iter().all(|l| *l == 2), "b gets the top layer: {got:?}");
}

#[test]
fn a_shards_wants_end_when_its_subscribers_vanish_and_when_it_leaves_the_span() {
    let mut sim = spanning(1);
    let a = sim.join(BOTH); // shard 0: the publisher
    let b = sim.join(BOTH); // shard 1
    let c = sim.join(BOTH); // shard 0
    let d = sim.join(BOTH); // shard 1
    assert_eq!([a, b, c, d].map(|i| sim.shard_of(i)), [0, 1, 0, 1]);
    let track = sim.publish_simulcast(a, &LAYERS)[0].id;
    sim.connect_all();
    let mut publisher = Publisher::new(a);
    publisher.send_for(&mut sim, Duration::from_secs(1));
    // Only b wants it (in full); c and d hide it.
    view(&mut sim, c, track, false, 0, 0);
    view(&mut sim, d, track, false, 0, 0);
    view(&mut sim, b, track, true, 640, 480);
    publisher.send_for(&mut sim, OFF_AFTER + Duration::from_millis(500));
    assert!(
        layer_events(&sim, track, 0).is_empty(),
        "b wants every layer"
    );

    // b's power goes: once it is removed, its shard (still in the span: d) reports that
    // nobody there wants the video, and every layer goes off after the debounce.
    sim.clients[b].silent = true;
    let from = sim.events.len();
    assert_eq!(
        until_removed(&mut sim, b, |s| publisher.send_frame(s)),
        RemovalReason::ConsentTimeout
    );
    assert_eq!(sim.cores[1].counts().participants, 1, "d stays on shard 1");
    assert!(
        layer_events(&sim, track, from).is_empty(),
        "not before the debounce"
    );
    publisher.send_for(&mut sim, OFF_AFTER + Duration::from_millis(500));
    assert_eq!(told_since(&sim, track, from), owned(ALL_OFF));

    // d shows it: on at once. Then d's socket drops (signaling makes it leave at once),
    // the last of the room on shard 1: the shard leaves the span before it could report
    // anything, and the publisher's shard forgets its wants (every layer off again after
    // the debounce).
    let from = sim.events.len();
    view(&mut sim, d, track, true, 640, 480);
    sim.run_for(Duration::from_millis(250));
    assert_eq!(told_since(&sim, track, from), owned(ALL_ON));
    let from = sim.events.len();
    sim.leave(d);
    sim.clients[d].silent = true;
    assert_eq!(sim.cores[1].counts().rooms, 0, "shard 1 left the span");
    publisher.send_for(&mut sim, OFF_AFTER + Duration::from_millis(500));
    assert_eq!(told_since(&sim, track, from), owned(ALL_OFF));
}

#[test]
fn a_producers_wants_go_with_it_and_its_successor_starts_afresh() {
    let mut sim = spanning(1);
    let a = sim.join(BOTH); // shard 0: the first publisher
    let b = sim.join(BOTH); // shard 1
    let c = sim.join(BOTH); // shard 0
    assert_eq!([a, b, c].map(|i| sim.shard_of(i)), [0, 1, 0]);
    let first = sim.publish_simulcast(a, &LAYERS)[0].id;
    sim.connect_all();
    let mut publisher = Publisher::new(a);
    publisher.send_for(&mut sim, Duration::from_secs(1));
    view(&mut sim, c, first, false, 0, 0);
    view(&mut sim, b, first, true, 640, 480);
    publisher.send_for(&mut sim, Duration::from_millis(500));

    // The publisher vanishes: its producer goes on shard 0, the mirror on shard 1.
    sim.clients[a].silent = true;
    until_removed(&mut sim, a, |s| s.run_for(Duration::from_millis(50)));
    assert_eq!(
        (
            sim.cores[0].counts().producers,
            sim.cores[1].counts().producers
        ),
        (0, 0)
    );

    // A new publisher (on shard 0: a tie goes to the room's home), seen small by b and
    // hidden by c: it is told q only, from b's shard's fresh report.
    let e = sim.join(BOTH);
    assert_eq!(sim.shard_of(e), 0);
    let second = sim.publish_simulcast(e, &LAYERS)[0].id;
    sim.connect_all();
    let mut publisher = Publisher::new(e);
    publisher.send_for(&mut sim, Duration::from_millis(500));
    view(&mut sim, b, second, true, 150, 100);
    view(&mut sim, c, second, false, 0, 0);
    let from = sim.events.len();
    publisher.send_for(&mut sim, OFF_AFTER + Duration::from_millis(500));
    assert_eq!(told_since(&sim, second, from), owned(Q_ONLY));
    let dropped = sim.cores[0].stats().relayed_dropped + sim.cores[1].stats().relayed_dropped;
    assert_eq!(dropped, 0, "no report about a track that is gone");
}
