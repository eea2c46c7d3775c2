//! Bandwidth estimation and the stream allocator in the media core (issue 12), on the
//! simulated network of `common/mod.rs` with a real bottleneck: a subscriber's downlink is
//! a token bucket with a short drop-tail queue, and the allocator picks each consumer's
//! layer from an estimate: by default the loss-based one (the subscriber's receiver
//! reports, `core/loss_estimate.rs`), with `--bwe` str0m's send-side estimator reading the
//! subscriber's transport-cc feedback.
//!
//! What is judged is what the subscriber receives (the layer tag in each payload, audio
//! packets, `VideoPaused`/`VideoResumed` events), on a virtual clock: deterministic, and
//! the time limits below are virtual seconds, not wall-clock. `BW_DEBUG=1` prints a
//! timeline (layers received, bottleneck drops, estimates) every half second.

mod common;

use std::time::{Duration, Instant};

use common::{BOTH, Link, OwedKeyframes, Sim};
use sfu::core::SfuEvent;
use sfu::{MediaKind, SfuConfig, Source};

/// The publisher's layers, lowest first.
const LAYERS: [&str; 3] = ["q", "h", "f"];
/// Packets per frame and bytes per packet of each layer at 30 frames/s: about 150, 500
/// and 1 200 kbit/s, the shape of a browser's 3-layer simulcast.
const SHAPE: [(u8, usize); 3] = [(1, 625), (2, 1040), (5, 1000)];
const FRAME_INTERVAL: Duration = Duration::from_millis(33);
const KEYFRAME_DELAY: Duration = Duration::from_millis(60);

/// One packet's payload: a VP8 payload descriptor (S bit at a frame's first packet) and
/// frame header (P bit clear on key frames), then the layer tag and the frame number the
/// test reads.
fn payload(layer: usize, k: u8, key: bool, size: usize, frame: u32) -> Vec<u8> {
    let descriptor = if k == 0 { 0x10 } else { 0x00 };
    let header = if key { 0x00 } else { 0x01 };
    let mut p = vec![descriptor, header, layer as u8, k];
    p.extend_from_slice(&frame.to_be_bytes());
    p.resize(size, 0xAB);
    p
}

/// The frame number of a video packet (see [`payload`]).
fn frame_of(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(4..8)?.try_into().ok()?))
}

/// A simulcast camera (and optionally a microphone) that answers key-frame requests.
struct Publisher {
    idx: usize,
    /// The video m-line's index among the publisher's m-lines, and the audio one's.
    video: usize,
    audio: Option<usize>,
    frame: u32,
    owed: OwedKeyframes,
    next_audio: Option<Instant>,
}

impl Publisher {
    fn new(idx: usize, video: usize, audio: Option<usize>) -> Self {
        Publisher {
            idx,
            video,
            audio,
            frame: 0,
            owed: OwedKeyframes::new(&LAYERS, KEYFRAME_DELAY),
            next_audio: None,
        }
    }

    /// One frame on every layer, audio every 20 ms, then time moves one frame on.
    fn send_frame(&mut self, sim: &mut Sim) {
        if std::env::var("BW_DEBUG").is_ok() && self.frame.is_multiple_of(15) {
            let t = (sim.now - sim.start).as_millis();
            let l: Vec<Option<usize>> = (0..sim.clients.len())
                .map(|i| current_layer(sim, i))
                .collect();
            let d: Vec<usize> = sim.clients.iter().map(|c| c.down_queue.dropped).collect();
            let e: Vec<Option<u64>> = sim
                .clients
                .iter()
                .map(|c| sim.cores[0].subscriber_estimate(c.id).map(|b| b / 1000))
                .collect();
            eprintln!("t={t} layers={l:?} dropped={d:?} est_kbps={e:?}");
        }
        self.owed.note_requests(sim, self.idx);
        let ts = self.frame * 3000;
        for (layer, rid) in LAYERS.iter().enumerate() {
            let key = self.owed.is_key(layer, self.frame, sim.now);
            let (packets, size) = SHAPE[layer];
            for k in 0..packets {
                let last = k == packets - 1;
                sim.send_rtp_layer(
                    self.idx,
                    self.video,
                    rid,
                    ts,
                    last,
                    payload(layer, k, key, size, self.frame),
                );
            }
        }
        self.frame += 1;
        let until = sim.now + FRAME_INTERVAL;
        while sim.now < until {
            if let Some(a) = self.audio
                && self.next_audio.is_none_or(|t| sim.now >= t)
            {
                let at = self.next_audio.unwrap_or(sim.now);
                let ts = (at.duration_since(sim.start).as_millis() as u32) * 48;
                let mut p = vec![0xFF, 0xFF];
                p.resize(120, 0xCD);
                sim.send_rtp(self.idx, a, ts, false, p);
                self.next_audio = Some(at + Duration::from_millis(20));
            }
            let step = (sim.now + Duration::from_millis(5)).min(until);
            sim.run_until(step, |_| {});
        }
    }

    fn run(&mut self, sim: &mut Sim, d: Duration) {
        let until = sim.now + d;
        while sim.now < until {
            self.send_frame(sim);
        }
    }
}

/// A bottleneck of `kbps` with a 100 ms drop-tail queue and 20 ms of delay.
fn capped(kbps: u64) -> Link {
    Link {
        delay: Duration::from_millis(20),
        rate_bps: kbps * 1000,
        queue: Duration::from_millis(100),
        ..Link::default()
    }
}

/// An open link with the same delay.
fn open() -> Link {
    Link {
        delay: Duration::from_millis(20),
        ..Link::default()
    }
}

/// Video packets subscriber `idx` received since `from` (index into `received`), by layer.
fn layers_since(sim: &Sim, idx: usize, from: usize) -> [usize; 3] {
    let mut n = [0; 3];
    for g in &sim.clients[idx].received[from..] {
        if g.payload.len() > 3 && g.payload[0] != 0xFF {
            n[usize::from(g.payload[2]).min(2)] += 1;
        }
    }
    n
}

fn audio_since(sim: &Sim, idx: usize, from: usize) -> usize {
    sim.clients[idx].received[from..]
        .iter()
        .filter(|g| g.payload.first() == Some(&0xFF))
        .count()
}

/// The layer a subscriber is on now: the one of its last received video packet.
fn current_layer(sim: &Sim, idx: usize) -> Option<usize> {
    sim.clients[idx]
        .received
        .iter()
        .rev()
        .find(|g| g.payload.first() != Some(&0xFF))
        .map(|g| usize::from(g.payload[2]))
}

/// Runs until `cond` holds (checked every frame) or `limit` passes; returns how long it took.
fn run_until_cond(
    sim: &mut Sim,
    p: &mut Publisher,
    limit: Duration,
    mut cond: impl FnMut(&Sim) -> bool,
) -> Option<Duration> {
    let start = sim.now;
    while sim.now - start < limit {
        if cond(sim) {
            return Some(sim.now - start);
        }
        p.send_frame(sim);
    }
    None
}

/// Runs until subscriber `idx` is on the top layer (within 10 s), then 2 s more.
fn settle_on_top(sim: &mut Sim, p: &mut Publisher, idx: usize) {
    run_until_cond(sim, p, Duration::from_secs(10), |s| {
        current_layer(s, idx) == Some(2)
    })
    .expect("the listener on the top layer");
    p.run(sim, Duration::from_secs(2));
}

fn paused_events(sim: &Sim, who: usize) -> (usize, usize) {
    let id = sim.clients[who].id;
    let paused = sim
        .events
        .iter()
        .filter(|e| matches!(e, SfuEvent::VideoPaused { participant, .. } if *participant == id))
        .count();
    let resumed = sim
        .events
        .iter()
        .filter(|e| matches!(e, SfuEvent::VideoResumed { participant, .. } if *participant == id))
        .count();
    (paused, resumed)
}

/// Publisher `a` (simulcast camera + microphone), a capped listener `b`, an open one `c`,
/// with str0m's send-side estimator (`--bwe`).
fn room(seed: u64) -> (Sim, Publisher, usize, usize) {
    room_with(
        seed,
        SfuConfig {
            bandwidth_estimation: true,
            ..common::config()
        },
    )
}

/// The same room with `cfg` (the default one: the loss-based estimate).
fn room_with(seed: u64, cfg: SfuConfig) -> (Sim, Publisher, usize, usize) {
    let mut sim = Sim::with_config(seed, cfg);
    let a = sim.join(BOTH);
    let b = sim.join(BOTH);
    let c = sim.join(BOTH);
    sim.publish_simulcast(a, &LAYERS);
    sim.publish(a, &[(MediaKind::Audio, Source::Microphone)]);
    for i in [a, b, c] {
        sim.clients[i].down = open();
        sim.clients[i].up = open();
    }
    sim.connect_all();
    let audio = sim.clients[a]
        .pub_mids
        .iter()
        .position(|(_, k, _)| *k == MediaKind::Audio);
    (sim, Publisher::new(a, 0, audio), b, c)
}

#[test]
fn a_capacity_drop_moves_the_subscriber_down_and_its_return_moves_it_back_up() {
    let (mut sim, mut p, b, c) = room(7);
    // Uncapped, both listeners' estimates ramp up and they reach the top layer.
    let up = run_until_cond(&mut sim, &mut p, Duration::from_secs(20), |s| {
        [b, c].iter().all(|i| {
            current_layer(s, *i) == Some(2)
                && s.cores[0]
                    .subscriber_estimate(s.clients[*i].id)
                    .is_some_and(|e| e > 1_500_000)
        })
    });
    assert!(
        up.is_some(),
        "both listeners climb to the top layer on an open link"
    );
    p.run(&mut sim, Duration::from_secs(2));

    // b's downlink drops to 1 Mbit/s: the top layer (~1.2 Mbit/s) no longer fits, the
    // middle one (~0.5) does.
    sim.clients[b].down = capped(1000);
    let down = run_until_cond(&mut sim, &mut p, Duration::from_secs(10), |s| {
        current_layer(s, b).is_some_and(|l| l < 2)
    });
    let down = down.expect("the capped listener moves down");
    assert!(
        down <= Duration::from_secs(3),
        "moved down within 3 virtual seconds, took {down:?}"
    );
    // After adapting: steady on a layer that fits, losing (almost) nothing at the queue.
    p.run(&mut sim, Duration::from_secs(2));
    let dropped_before = sim.clients[b].down_queue.dropped;
    let from = sim.clients[b].received.len();
    p.run(&mut sim, Duration::from_secs(5));
    let got = layers_since(&sim, b, from);
    let dropped = sim.clients[b].down_queue.dropped - dropped_before;
    assert_eq!(got[2], 0, "no top-layer packet while capped: {got:?}");
    assert!(
        got[1] > 0,
        "the middle layer flows under a 1 Mbit/s cap: {got:?}"
    );
    let delivered = got.iter().sum::<usize>() + audio_since(&sim, b, from);
    assert!(
        dropped * 100 <= delivered,
        "at most 1 % dropped at the bottleneck once adapted: {dropped} of {delivered}"
    );
    // The open listener is unaffected.
    assert_eq!(current_layer(&sim, c), Some(2));

    // The cap lifts: probing finds the room and b climbs back.
    sim.clients[b].down = open();
    let back = run_until_cond(&mut sim, &mut p, Duration::from_secs(30), |s| {
        current_layer(s, b) == Some(2)
    });
    let back = back.expect("back on the top layer after the cap lifts");
    eprintln!(
        "figures: down {down:?} after the 1 Mbit/s cap; {dropped} of {delivered} dropped once adapted; back on top {back:?} after it lifted"
    );
    assert!(
        back <= Duration::from_secs(15),
        "back on top within 15 virtual seconds, took {back:?}"
    );
}

#[test]
fn below_the_lowest_layer_video_pauses_audio_keeps_flowing_and_video_resumes() {
    let (mut sim, mut p, b, _c) = room(11);
    run_until_cond(&mut sim, &mut p, Duration::from_secs(20), |s| {
        current_layer(s, b) == Some(2)
    })
    .expect("top layer on an open link");
    p.run(&mut sim, Duration::from_secs(2));

    // 100 kbit/s: not even the 150 kbit/s layer fits; audio (~50 kbit/s) does.
    sim.clients[b].down = capped(100);
    // Paused after 6.6-10.8 s of virtual time (the estimate must stay below the lowest
    // layer for PAUSE_AFTER; since retransmission caches hold 1 s instead of 3 s, fewer
    // late repairs crowd the link and the estimate takes longer to fall that far).
    let paused = run_until_cond(&mut sim, &mut p, Duration::from_secs(15), |s| {
        paused_events(s, b).0 == 1
    })
    .expect("the video is paused for bandwidth");
    eprintln!("figures: paused {paused:?} after the 100 kbit/s cap");
    p.run(&mut sim, Duration::from_secs(3));
    let from = sim.clients[b].received.len();
    p.run(&mut sim, Duration::from_secs(4));
    let video = layers_since(&sim, b, from).iter().sum::<usize>();
    let audio = audio_since(&sim, b, from);
    // Only repairs (retransmissions the receiver asked for) of frames from before the pause
    // may still trickle in: no newer frame.
    let last_before = sim.clients[b].received[..from]
        .iter()
        .filter(|g| g.payload.first() != Some(&0xFF))
        .map(|g| g.ts)
        .max()
        .expect("video before the pause");
    let new_frames = sim.clients[b].received[from..]
        .iter()
        .filter(|g| g.payload.first() != Some(&0xFF) && g.ts > last_before)
        .count();
    assert_eq!(
        new_frames,
        0,
        "no new video frame while paused ({video} repairs; paused/resumed {:?})",
        paused_events(&sim, b)
    );
    // 4 s of 20 ms packets: 200 sent; the odd one may die in the queue.
    assert!(
        audio >= 190,
        "audio keeps flowing while video is paused: {audio}"
    );

    sim.clients[b].down = open();
    let resumed = run_until_cond(&mut sim, &mut p, Duration::from_secs(30), |s| {
        paused_events(s, b).1 == 1
    })
    .expect("the video resumes when the link allows");
    eprintln!("figures: resumed {resumed:?} after the 100 kbit/s cap lifted");
    let from = sim.clients[b].received.len();
    p.run(&mut sim, Duration::from_secs(2));
    assert!(
        layers_since(&sim, b, from).iter().sum::<usize>() > 0,
        "video flows again"
    );
    // A resume starts at a key frame (the first video packet after it is one).
    let first = sim.clients[b].received[from..]
        .iter()
        .find(|g| g.payload.first() != Some(&0xFF));
    assert!(first.is_some());
}

/// Whether subscriber `idx`'s transport is allocated (it showed congestion once).
fn adapted(sim: &Sim, idx: usize) -> bool {
    sim.cores[0]
        .subscriber_estimate(sim.clients[idx].id)
        .is_some()
}

/// Packets dropped at subscriber `idx`'s bottleneck and delivered to it while `p` runs `d`.
fn dropped_and_delivered(
    sim: &mut Sim,
    p: &mut Publisher,
    idx: usize,
    d: Duration,
) -> (usize, usize) {
    let dropped_before = sim.clients[idx].down_queue.dropped;
    let from = sim.clients[idx].received.len();
    p.run(sim, d);
    let delivered =
        layers_since(sim, idx, from).iter().sum::<usize>() + audio_since(sim, idx, from);
    (
        sim.clients[idx].down_queue.dropped - dropped_before,
        delivered,
    )
}

#[test]
fn by_default_loss_moves_a_capped_listener_down_and_back_up_and_leaves_the_open_one_alone() {
    let (mut sim, mut p, b, c) = room_with(21, common::config());
    // Open links: nothing adapts, both listeners get the top layer they asked for.
    run_until_cond(&mut sim, &mut p, Duration::from_secs(10), |s| {
        [b, c].iter().all(|i| current_layer(s, *i) == Some(2))
    })
    .expect("both listeners on the top layer");
    p.run(&mut sim, Duration::from_secs(5));
    assert!(
        !adapted(&sim, b) && !adapted(&sim, c),
        "no cap on an open link"
    );

    // b's downlink drops to 800 kbit/s: the top layer (~1.2 Mbit/s) no longer fits, the
    // middle one (~0.5) does.
    sim.clients[b].down = capped(800);
    let down = run_until_cond(&mut sim, &mut p, Duration::from_secs(15), |s| {
        current_layer(s, b).is_some_and(|l| l < 2)
    })
    .expect("the capped listener moves down");
    assert!(
        down <= Duration::from_secs(6),
        "moved down within 6 virtual seconds, took {down:?}"
    );
    // Once adapted, the loss stops.
    p.run(&mut sim, Duration::from_secs(2));
    let (dropped, delivered) = dropped_and_delivered(&mut sim, &mut p, b, Duration::from_secs(4));
    assert!(
        dropped * 100 <= delivered,
        "at most 1 % dropped at the bottleneck once adapted: {dropped} of {delivered}"
    );
    assert_ne!(current_layer(&sim, b), Some(2), "still below the top layer");
    // The open listener was never touched.
    assert_eq!(current_layer(&sim, c), Some(2));
    assert!(!adapted(&sim, c), "the open listener is not capped");

    // The cap lifts: the estimate grows back without loss and b climbs to the top again.
    sim.clients[b].down = open();
    let back = run_until_cond(&mut sim, &mut p, Duration::from_secs(40), |s| {
        current_layer(s, b) == Some(2)
    })
    .expect("back on the top layer after the cap lifts");
    // And stays there: no step down once the link carries it all.
    p.run(&mut sim, Duration::from_secs(2));
    let (dropped, _) = dropped_and_delivered(&mut sim, &mut p, b, Duration::from_secs(10));
    assert_eq!(dropped, 0);
    assert_eq!(current_layer(&sim, b), Some(2), "stays on top");
    eprintln!(
        "figures (loss-based): down {down:?} after the 800 kbit/s cap; back on top {back:?} after it lifted"
    );
}

#[test]
fn by_default_a_move_down_for_loss_stops_the_upper_layer_at_once() {
    // Going on with the layer that does not fit until the lower layer's key frame comes
    // keeps the bottleneck full, and that key frame then waits behind it (or is lost).
    let (mut sim, mut p, b, _c) = room_with(23, common::config());
    settle_on_top(&mut sim, &mut p, b);
    sim.clients[b].down = capped(800);
    run_until_cond(&mut sim, &mut p, Duration::from_secs(15), |s| adapted(s, b))
        .expect("the loss-based estimate caps the listener");
    // Every frame from here on reaches the SFU after the decision.
    let decided_at = p.frame;
    let from = sim.clients[b].received.len();
    p.run(&mut sim, Duration::from_secs(3));
    let top_after: Vec<u32> = sim.clients[b].received[from..]
        .iter()
        .filter(|g| g.payload.first() != Some(&0xFF) && g.payload.get(2) == Some(&2))
        .filter_map(|g| frame_of(&g.payload))
        .filter(|f| *f >= decided_at)
        .collect();
    assert_eq!(
        top_after,
        Vec::<u32>::new(),
        "no top-layer frame captured after the move down is forwarded"
    );
    let middle = layers_since(&sim, b, from)[1];
    assert!(middle > 0, "the middle layer took over");
}

#[test]
fn by_default_a_step_up_that_fills_a_deep_queue_is_undone_before_anything_is_dropped() {
    // A downlink with a deep buffer (as LTE has): 900 kbit/s behind a 3 s queue. The
    // middle layer fits; the top one does not, and sending it shows as a growing round
    // trip seconds before the queue overflows.
    let (mut sim, mut p, b, c) = room_with(27, common::config());
    settle_on_top(&mut sim, &mut p, b);
    sim.clients[b].down = Link {
        delay: Duration::from_millis(20),
        rate_bps: 900_000,
        queue: Duration::from_secs(3),
        ..Link::default()
    };
    let dropped = sim.clients[b].down_queue.dropped;
    run_until_cond(&mut sim, &mut p, Duration::from_secs(20), |s| {
        current_layer(s, b) == Some(1)
    })
    .expect("moved down for the growing queue");
    assert!(adapted(&sim, b));
    // The queue drains; nothing may be dropped, trials or not.
    let from = sim.clients[b].received.len();
    let mut trials = 0;
    let mut on_top = false;
    let start = sim.now;
    while sim.now - start < Duration::from_secs(40) {
        p.send_frame(&mut sim);
        let top = current_layer(&sim, b) == Some(2);
        if top && !on_top {
            trials += 1;
        }
        on_top = top;
    }
    assert_eq!(
        sim.clients[b].down_queue.dropped - dropped,
        0,
        "neither the first move down nor a trial waited for the queue to overflow"
    );
    assert!(
        layers_since(&sim, b, from)[1] > 0,
        "the middle layer carried the picture"
    );
    // Trials undone before any loss do not lengthen the wait: one every hold (8 s), not
    // 8, 16, 32 s apart.
    assert!(trials >= 3, "trials in 40 s: {trials}");
    assert_eq!(
        current_layer(&sim, c),
        Some(2),
        "the open listener is unaffected"
    );
    eprintln!(
        "figures (loss-based): {trials} trials in 40 s behind a 3 s queue, none dropped a packet"
    );
}

#[test]
fn by_default_below_the_lowest_layer_video_pauses_audio_keeps_flowing_and_resumes() {
    let (mut sim, mut p, b, c) = room_with(23, common::config());
    settle_on_top(&mut sim, &mut p, b);

    // 100 kbit/s: not even the 150 kbit/s layer fits; audio (~50 kbit/s) does.
    sim.clients[b].down = capped(100);
    let paused = run_until_cond(&mut sim, &mut p, Duration::from_secs(20), |s| {
        paused_events(s, b).0 == 1
    })
    .expect("the video is paused for bandwidth");
    p.run(&mut sim, Duration::from_secs(2));
    let from = sim.clients[b].received.len();
    let (dropped, _) = dropped_and_delivered(&mut sim, &mut p, b, Duration::from_secs(4));
    let last_before = sim.clients[b].received[..from]
        .iter()
        .filter(|g| g.payload.first() != Some(&0xFF))
        .map(|g| g.ts)
        .max()
        .expect("video before the pause");
    let new_frames = sim.clients[b].received[from..]
        .iter()
        .filter(|g| g.payload.first() != Some(&0xFF) && g.ts > last_before)
        .count();
    assert_eq!(new_frames, 0, "no new video frame while paused");
    let audio = audio_since(&sim, b, from);
    assert!(
        audio >= 190,
        "audio keeps flowing while video is paused: {audio}"
    );
    assert!(
        dropped <= 2,
        "nothing lost at the bottleneck while paused: {dropped}"
    );
    assert_eq!(
        current_layer(&sim, c),
        Some(2),
        "the open listener is unaffected"
    );
    assert_eq!(paused_events(&sim, c), (0, 0));

    sim.clients[b].down = open();
    let resumed = run_until_cond(&mut sim, &mut p, Duration::from_secs(40), |s| {
        paused_events(s, b).1 >= 1
    })
    .expect("the video resumes when the link allows");
    let from = sim.clients[b].received.len();
    p.run(&mut sim, Duration::from_secs(2));
    assert!(
        layers_since(&sim, b, from).iter().sum::<usize>() > 0,
        "video flows again"
    );
    eprintln!(
        "figures (loss-based): paused {paused:?} after the 100 kbit/s cap; resumed {resumed:?} after it lifted"
    );
}

#[test]
fn with_adaptation_off_a_capped_listener_keeps_what_it_asked_for() {
    let (mut sim, mut p, b, _c) = room_with(
        25,
        SfuConfig {
            loss_adaptation: false,
            ..common::config()
        },
    );
    run_until_cond(&mut sim, &mut p, Duration::from_secs(10), |s| {
        current_layer(s, b) == Some(2)
    })
    .expect("top layer on an open link");
    sim.clients[b].down = capped(800);
    p.run(&mut sim, Duration::from_secs(10));
    assert!(!adapted(&sim, b));
    let from = sim.clients[b].received.len();
    p.run(&mut sim, Duration::from_secs(2));
    let got = layers_since(&sim, b, from);
    assert!(got[2] > 0 && got[1] == 0, "still the top layer: {got:?}");
}
