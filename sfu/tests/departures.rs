//! Departures never hurt the ones who stay (issue 11).
//!
//! Five participants publish camera and microphone and receive each other. One of them
//! vanishes in each of the ways real clients do: its socket goes without `leave`, its
//! transports send a DTLS close_notify, it falls silent (no more datagrams), its answer to
//! a subscriber offer never arrives. Every way is tried by the **first** joiner too (the
//! first m-line of everyone's subscriber SDP is its, the BUNDLE tag) and by a later one.
//! The four others must keep receiving every packet, never be removed, and get offers a
//! str0m client applies, with the BUNDLE tag unchanged and no rejected (port 0) m-line.
//!
//! Also here: m-lines of departed publishers are recycled (a long stayer's SDP stays
//! proportional to the live publishers), and ICE restarts keep every producer, consumer
//! and SSRC, including across a change of the client's address.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::Sim;
use sfu::core::{Grants, RemovalReason};
use sfu::{ParticipantId, Source};
use str0m::media::MediaKind;

const LEARNER: Grants = Grants {
    publish: true,
    subscribe: true,
    proctor: false,
};

const AV: [(MediaKind, Source); 2] = [
    (MediaKind::Video, Source::Camera),
    (MediaKind::Audio, Source::Microphone),
];

/// How a participant vanishes.
#[derive(Debug, Clone, Copy)]
enum Vanish {
    /// The signaling socket is gone without `leave`: signaling calls `leave` for it, and
    /// the peer sends nothing more.
    SocketGone,
    /// The browser closes its peer connections: DTLS close_notify on both transports.
    DtlsClose,
    /// Nothing more arrives from it (power cut, SIGKILL): consent timeout.
    Silence,
    /// It stops answering subscriber offers (a stuck tab) but stays.
    NeverAnswers,
}

/// Five learners in one room, all publishing and connected.
fn room_of_five(seed: u64) -> Sim {
    let mut sim = Sim::new(seed);
    for _ in 0..5 {
        sim.join(LEARNER);
    }
    for i in 0..5 {
        sim.publish(i, &AV);
    }
    sim.connect_all();
    // Let every subscriber's last offer be answered and its consumers go active.
    sim.run_for(Duration::from_millis(200));
    sim
}

/// Packets client `to` received from publisher `from` since `since` (by m-line 0/1).
fn received_from(sim: &Sim, to: usize, from: usize, since: usize) -> (usize, usize) {
    let got = &sim.clients[to].received[since..];
    let v = got
        .iter()
        .filter(|g| g.payload.first() == Some(&(from as u8)) && g.payload.get(1) == Some(&0))
        .count();
    let a = got
        .iter()
        .filter(|g| g.payload.first() == Some(&(from as u8)) && g.payload.get(1) == Some(&1))
        .count();
    (v, a)
}

/// Every survivor receives exactly what every other survivor sent.
fn assert_everyone_gets_everything(sim: &mut Sim, survivors: &[usize], what: &str) {
    let marks: Vec<usize> = sim.clients.iter().map(|c| c.received.len()).collect();
    let sent = sim.stream_all(survivors, Duration::from_secs(1));
    // Let the last packets land.
    sim.run_for(Duration::from_millis(100));
    for &to in survivors {
        for &from in survivors {
            if from == to {
                continue;
            }
            let (v, a) = received_from(sim, to, from, marks[to]);
            let (sv, sa) = sent[&from];
            assert_eq!(
                (v, a),
                (sv as usize, sa as usize),
                "{what}: client {to} got (video, audio) {:?} of {:?} from client {from}",
                (v, a),
                (sv, sa)
            );
        }
    }
}

/// The mids of the BUNDLE group of an SDP, and how many m-lines are rejected (port 0).
fn bundle_and_rejected(sdp: &str) -> (Vec<String>, usize) {
    let bundle = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=group:BUNDLE "))
        .map(|g| g.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let rejected = sdp
        .lines()
        .filter(|l| l.starts_with("m=") && l.split_whitespace().nth(1) == Some("0"))
        .count();
    (bundle, rejected)
}

fn vanish_one(seed: u64, victim: usize, how: Vanish) {
    let mut sim = room_of_five(seed);
    let everyone: Vec<usize> = (0..5).collect();
    assert_everyone_gets_everything(&mut sim, &everyone, "before");
    let first_offers: Vec<String> = sim
        .clients
        .iter()
        .map(|c| c.offer_sdps.last().expect("offered").clone())
        .collect();
    let offers_before: Vec<usize> = sim.clients.iter().map(|c| c.offer_sdps.len()).collect();
    let id = sim.clients[victim].id;
    match how {
        Vanish::SocketGone => {
            sim.cores[0].leave(id).expect("leave");
            sim.clients[victim].silent = true;
        }
        Vanish::DtlsClose => {
            let c = &mut sim.clients[victim];
            for rtc in [c.pub_rtc.as_mut(), c.sub_rtc.as_mut()]
                .into_iter()
                .flatten()
            {
                rtc.close().expect("close");
            }
            // The close_notify goes out and arrives; then the client is gone.
            sim.run_for(Duration::from_millis(200));
            sim.clients[victim].silent = true;
        }
        Vanish::Silence => sim.clients[victim].silent = true,
        Vanish::NeverAnswers => {
            sim.clients[victim].hold_answers = true;
            // Something to offer it: a newcomer publishes.
            let n = sim.join(LEARNER);
            sim.publish(n, &AV);
            sim.connect_all();
        }
    }
    // Past ICE's disconnection plus the consent timeout (10 s in the test config):
    // silence is noticed by then.
    sim.run_for(Duration::from_secs(40));
    let survivors: Vec<usize> = (0..sim.clients.len())
        .filter(|i| *i != victim || matches!(how, Vanish::NeverAnswers))
        .collect();
    let gone = sim.removals();
    for &s in &survivors {
        assert!(
            !gone.iter().any(|(p, _)| *p == sim.clients[s].id),
            "{how:?} of client {victim}: survivor {s} was removed ({gone:?})"
        );
    }
    match how {
        Vanish::DtlsClose => assert_eq!(gone, vec![(id, RemovalReason::TransportFailed)]),
        Vanish::Silence => assert_eq!(gone, vec![(id, RemovalReason::ConsentTimeout)]),
        Vanish::SocketGone | Vanish::NeverAnswers => assert!(gone.is_empty(), "{gone:?}"),
    }
    let receivers: Vec<usize> = survivors
        .iter()
        .copied()
        .filter(|i| !(matches!(how, Vanish::NeverAnswers) && *i == victim))
        .collect();
    assert_everyone_gets_everything(&mut sim, &receivers, &format!("after {how:?} of {victim}"));
    if matches!(how, Vanish::NeverAnswers) {
        // The stuck client still gets what it had negotiated before it got stuck.
        let marks = sim.clients[victim].received.len();
        sim.stream_all(&[1, 2], Duration::from_millis(500));
        sim.run_for(Duration::from_millis(100));
        let others: Vec<usize> = [1, 2].into_iter().filter(|i| *i != victim).collect();
        for from in others {
            assert!(received_from(&sim, victim, from, marks).0 > 0);
        }
        // A late answer is still taken, and then it gets the newcomer too.
        sim.answer_held_offer(victim);
        sim.run_for(Duration::from_millis(300));
        let newcomer = sim.clients.len() - 1;
        let marks = sim.clients[victim].received.len();
        sim.stream_all(&[newcomer], Duration::from_millis(500));
        sim.run_for(Duration::from_millis(100));
        assert!(received_from(&sim, victim, newcomer, marks).0 > 0);
    }
    // Every offer a survivor got after the departure kept the BUNDLE tag and rejected
    // nothing (its first offer's tag; the departed one's m-lines went inactive instead).
    for &s in &receivers {
        let first = first_offers.get(s).unwrap_or(&sim.clients[s].offer_sdps[0]);
        let tag = bundle_and_rejected(first).0[0].clone();
        let since = offers_before.get(s).copied().unwrap_or(0);
        for sdp in &sim.clients[s].offer_sdps[since..] {
            let (bundle, rejected) = bundle_and_rejected(sdp);
            assert_eq!(
                bundle.first(),
                Some(&tag),
                "client {s}: BUNDLE tag moved:\n{sdp}"
            );
            assert_eq!(
                rejected, 0,
                "client {s}: an offer rejected an m-line:\n{sdp}"
            );
        }
    }
}

#[test]
fn first_joiner_socket_gone() {
    vanish_one(11, 0, Vanish::SocketGone);
}

#[test]
fn middle_joiner_socket_gone() {
    vanish_one(12, 2, Vanish::SocketGone);
}

#[test]
fn first_joiner_dtls_close_notify() {
    vanish_one(13, 0, Vanish::DtlsClose);
}

#[test]
fn last_joiner_dtls_close_notify() {
    vanish_one(14, 4, Vanish::DtlsClose);
}

#[test]
fn first_joiner_silence() {
    vanish_one(15, 0, Vanish::Silence);
}

#[test]
fn middle_joiner_silence() {
    vanish_one(16, 3, Vanish::Silence);
}

#[test]
fn first_joiner_never_answers() {
    vanish_one(17, 0, Vanish::NeverAnswers);
}

#[test]
fn middle_joiner_never_answers() {
    vanish_one(18, 2, Vanish::NeverAnswers);
}

/// A listener stays while publishers come and go through a room of six: its subscriber
/// SDP stays proportional to the live publishers (departed m-lines are recycled), every
/// offer applies, and it receives whoever is live at the end.
#[test]
fn long_stayer_sdp_stays_bounded_through_churn() {
    let mut sim = Sim::new(21);
    let listener = sim.join(Grants {
        publish: false,
        subscribe: true,
        proctor: false,
    });
    let mut live: Vec<usize> = Vec::new();
    let mut max_mlines = 0usize;
    for round in 0..30 {
        let n = sim.join(LEARNER);
        sim.publish(n, &AV);
        live.push(n);
        if live.len() > 5 {
            // The oldest leaves: first joiners leave as often as anyone.
            let gone = live.remove(0);
            sim.cores[0].leave(sim.clients[gone].id).expect("leave");
            sim.clients[gone].silent = true;
        }
        sim.run_for(Duration::from_millis(150));
        let sdp = sim.clients[listener]
            .offer_sdps
            .last()
            .expect("offers")
            .clone();
        let mlines = sdp.lines().filter(|l| l.starts_with("m=")).count();
        max_mlines = max_mlines.max(mlines);
        assert!(
            mlines <= 2 * 2 * live.len() + 2,
            "round {round}: {mlines} m-lines for {} live publishers",
            live.len()
        );
        assert_eq!(bundle_and_rejected(&sdp).1, 0, "no rejected m-lines");
    }
    sim.connect_all();
    sim.run_for(Duration::from_millis(300));
    let marks = sim.clients[listener].received.len();
    let sent = sim.stream_all(&live, Duration::from_secs(1));
    sim.run_for(Duration::from_millis(100));
    for &from in &live {
        assert_eq!(
            received_from(&sim, listener, from, marks),
            (sent[&from].0 as usize, sent[&from].1 as usize),
            "listener gets live publisher {from}"
        );
    }
    // Each live publisher's two tracks share one msid stream (lip sync pairs them).
    let sdp = sim.clients[listener].offer_sdps.last().expect("offer");
    let streams = msid_streams_by_mid(sdp);
    let tracks = &sim.clients[listener].offer_tracks;
    let mut by_publisher: BTreeMap<ParticipantId, Vec<String>> = BTreeMap::new();
    for t in tracks.iter().filter(|t| t.track.is_some()) {
        by_publisher
            .entry(t.publisher)
            .or_default()
            .push(streams[&t.mid].clone());
    }
    for (p, s) in by_publisher {
        assert_eq!(s.len(), 2, "{p}: two live tracks");
        assert_eq!(s[0], s[1], "{p}: camera and microphone in one msid stream");
    }
    assert!(max_mlines <= 2 * 2 * 5 + 2, "max m-lines {max_mlines}");
}

fn msid_streams_by_mid(sdp: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut mid = None;
    for l in sdp.lines() {
        if l.starts_with("m=") {
            mid = None;
        }
        if let Some(m) = l.strip_prefix("a=mid:") {
            mid = Some(m.to_owned());
        }
        if let (Some(m), Some(ms)) = (&mid, l.strip_prefix("a=msid:")) {
            out.insert(
                m.clone(),
                ms.split_whitespace().next().unwrap_or("").to_owned(),
            );
        }
    }
    out
}

/// An ICE restart of both transports (the client's address changed): same tracks, same
/// m-lines and SSRCs, media back within a second, and nobody else notices.
#[test]
fn network_switch_with_ice_restart_keeps_everything() {
    let mut sim = room_of_five(31);
    let everyone: Vec<usize> = (0..5).collect();
    assert_everyone_gets_everything(&mut sim, &everyone, "before");
    let mover = 0;
    let tracks_before = sim.clients[1].offer_tracks.clone();
    let ssrcs_before = ssrcs_from(&sim, 1, mover);
    let offers_before = sim.clients[mover].offer_sdps.len();
    let ufrag = |sdp: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            .map(str::to_owned)
    };
    let old_ufrag = ufrag(sim.clients[mover].offer_sdps.last().expect("offer"));
    let restarts_before = sim.cores[0].stats().ice_restarts;
    let keyframes_before = sim.clients[mover].keyframe_requests;
    let switch_at = sim.now;
    sim.switch_network(mover);
    // The restart is one new offer with new credentials and the same m-lines.
    let new_offers = &sim.clients[mover].offer_sdps[offers_before..];
    assert_eq!(new_offers.len(), 1, "one restart offer");
    assert_ne!(ufrag(&new_offers[0]), old_ufrag, "new ICE credentials");
    assert_eq!(sim.cores[0].stats().ice_restarts, restarts_before + 2);
    // Media flows both ways again: the mover sends and receives; measure the gap.
    let marks: Vec<usize> = sim.clients.iter().map(|c| c.received.len()).collect();
    let sent = sim.stream_all(&everyone, Duration::from_secs(2));
    sim.run_for(Duration::from_millis(200));
    let first_back = |sim: &Sim, to: usize, from: usize| {
        sim.clients[to].received[marks[to]..]
            .iter()
            .find(|g| g.payload.first() == Some(&(from as u8)))
            .map(|g| g.at - switch_at)
    };
    for (other, &mark) in marks.iter().enumerate().take(5).skip(1) {
        let gap = first_back(&sim, other, mover).expect("mover's media is back");
        assert!(gap < Duration::from_secs(1), "gap {gap:?} at {other}");
        let gap = first_back(&sim, mover, other).expect("mover receives again");
        assert!(gap < Duration::from_secs(1), "gap {gap:?} at the mover");
        // The others never lost each other.
        for from in 1..5 {
            if from != other {
                assert_eq!(
                    received_from(&sim, other, from, mark).0,
                    sent[&from].0 as usize
                );
            }
        }
    }
    assert!(sim.removals().is_empty());
    // Back on the new path, the SFU asked the mover for a key frame at once (what its
    // subscribers missed cannot be repaired from caches).
    assert!(
        sim.clients[mover].keyframe_requests > keyframes_before,
        "key frame requested from the mover after its reconnection"
    );
    // Nothing was sent into the dead path: the mover's streams continue without a hole
    // in their sequence numbers (a hole is seconds of NACKs before the browser gives up).
    for from in 1..5 {
        let seqs: Vec<u64> = sim.clients[mover]
            .received
            .iter()
            .filter(|g| g.payload.first() == Some(&(from as u8)) && g.payload.get(1) == Some(&0))
            .map(|g| g.seq)
            .collect();
        let holes = seqs.windows(2).filter(|w| w[1] != w[0] + 1).count();
        assert_eq!(holes, 0, "a hole in the mover's stream from {from}");
    }
    // Nothing changed for the others: same mapping, same SSRCs from the mover.
    assert_eq!(sim.clients[1].offer_tracks, tracks_before);
    assert_eq!(ssrcs_from(&sim, 1, mover), ssrcs_before);
}

/// The SSRCs on which client `to` receives client `from`'s media.
fn ssrcs_from(sim: &Sim, to: usize, from: usize) -> Vec<u32> {
    let mut v: Vec<u32> = sim.clients[to]
        .received
        .iter()
        .filter(|g| g.payload.first() == Some(&(from as u8)))
        .map(|g| g.ssrc)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// After a crowd has come and gone, the shard gives back the room its maps and queues
/// grew for: capacities fall to the floor instead of staying at the crowd's size (the
/// idle node kept 20 MiB of such capacity after the 1-hour soak). A shrink that never
/// happened, or one that fired while the crowd was still there, fails this.
#[test]
fn capacity_is_given_back_after_everyone_leaves() {
    let mut sim = Sim::new(33);
    let crowd: Vec<usize> = (0..16).map(|_| sim.join(LEARNER)).collect();
    for &i in &crowd {
        sim.publish(i, &AV);
    }
    sim.connect_all();
    sim.run_for(Duration::from_millis(300));
    sim.stream_all(&crowd, Duration::from_millis(300));
    let (transports, producers, participants, _) = sim.cores[0].capacities();
    assert!(
        transports >= 48 && producers >= 48 && participants >= 24,
        "the crowd is in: capacities {transports}/{producers}/{participants}"
    );
    // Half leave: the maps still hold the other half, and shrink only by hysteresis.
    for &i in &crowd[..8] {
        sim.leave(i);
    }
    sim.run_for(Duration::from_millis(300));
    let (t_half, _, _, _) = sim.cores[0].capacities();
    assert!(
        t_half >= 16,
        "8 participants keep their 16 transports: {t_half}"
    );
    for &i in &crowd[8..] {
        sim.leave(i);
    }
    sim.run_for(Duration::from_millis(300));
    assert_eq!(sim.cores[0].counts().transports, 0);
    let (t, p, pa, tx) = sim.cores[0].capacities();
    assert!(
        t <= 28 && p <= 28 && pa <= 28 && tx <= 32,
        "capacity given back after everyone left: transports {t}, producers {p}, participants {pa}, transmits {tx}"
    );
}
