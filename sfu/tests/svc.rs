//! VP9 SVC layer dropping in the media core (see `common/mod.rs` for the simulated peers
//! and network): a publisher sends L3T3 (three spatial layers, three temporal layers, one
//! RTP stream); a subscriber that asked for `low` gets spatial layer 0 alone with the
//! marker bit on its last packet of each picture, one that asked for `high` everything as
//! sent, and both see sequence numbers without a gap. Moving `low` -> `high` waits for a
//! key frame (which the core asks the publisher for).

mod common;

use std::time::Duration;

use common::{BOTH, Got, Link, Sim};
use sfu::core::vp9;
use sfu::{MediaKind, Quality, SfuConfig, Source};

const SPATIAL: u8 = 3;
/// Temporal layer of picture n: the L1T3 pattern 0, 2, 1, 2.
const TID: [u8; 4] = [0, 2, 1, 2];
const PACKETS_PER_LAYER: u8 = 2;

/// One packet: a non-flexible VP9 descriptor (I with a 15-bit picture id, P, L, B, E; the
/// scalability structure with the layer count and sizes on a key picture's first packet,
/// as Chromium sends it), then the tag the test reads (picture, spatial layer, packet).
fn payload(picture: u16, sid: u8, tid: u8, k: u8, key: bool) -> Vec<u8> {
    let begin = k == 0;
    let end = k == PACKETS_PER_LAYER - 1;
    let ss = key && sid == 0 && begin;
    let b0 = 0x80
        | if key { 0 } else { 0x40 }
        | 0x20
        | if begin { 0x08 } else { 0 }
        | if end { 0x04 } else { 0 }
        | if ss { 0x02 } else { 0 };
    let layer = (tid << 5) | 0x10 | (sid << 1) | u8::from(key && sid > 0);
    let mut p = vec![b0, 0x80 | (picture >> 8) as u8, picture as u8, layer, 0];
    if ss {
        p.push(((SPATIAL - 1) << 5) | 0x10);
        for s in 0..u16::from(SPATIAL) {
            p.extend_from_slice(&(160u16 << s).to_be_bytes());
            p.extend_from_slice(&(120u16 << s).to_be_bytes());
        }
    }
    p.extend_from_slice(&picture.to_be_bytes());
    p.push(sid);
    p.push(k);
    p.resize(300 * (usize::from(sid) + 1), 0xAB);
    p
}

/// (picture, spatial layer, packet index, descriptor) of a received packet.
fn tag(g: &Got) -> (u16, u8, u8, vp9::Descriptor) {
    let d = vp9::parse(&g.payload).expect("a VP9 descriptor arrives intact");
    let at = d.len;
    let picture = u16::from_be_bytes([g.payload[at], g.payload[at + 1]]);
    (picture, g.payload[at + 2], g.payload[at + 3], d)
}

/// Send `n` pictures from `first` (33 ms apart); a key frame at picture 0 and at the first
/// picture after each key-frame request the publisher PC got.
fn send_pictures(
    sim: &mut Sim,
    publisher: usize,
    first: u16,
    n: u16,
    requests: &mut usize,
) -> Vec<u16> {
    let mut keys = Vec::new();
    for pic in first..first + n {
        let key = pic == 0 || sim.clients[publisher].keyframe_requests > *requests;
        if key {
            *requests = sim.clients[publisher].keyframe_requests;
            keys.push(pic);
        }
        let tid = if key { 0 } else { TID[usize::from(pic) % 4] };
        let ts = u32::from(pic) * 3000;
        for sid in 0..SPATIAL {
            for k in 0..PACKETS_PER_LAYER {
                let marker = sid == SPATIAL - 1 && k == PACKETS_PER_LAYER - 1;
                sim.send_rtp(publisher, 0, ts, marker, payload(pic, sid, tid, k, key));
            }
        }
        sim.run_for(Duration::from_millis(33));
    }
    keys
}

fn contiguous(got: &[&Got]) -> bool {
    got.windows(2).all(|w| w[1].seq == w[0].seq + 1)
}

#[test]
fn svc_layers_above_the_target_are_dropped_without_holes() {
    let mut sim = Sim::new(41);
    let publisher = sim.join_vp9(BOTH);
    let low = sim.join(BOTH);
    let high = sim.join(BOTH);
    let tracks = sim.publish(publisher, &[(MediaKind::Video, Source::Camera)]);
    assert_eq!(tracks[0].codec, "vp9");
    sim.connect_all();
    let pub_id = sim.clients[publisher].id;
    let low_id = sim.clients[low].id;
    let now = sim.now;
    sim.core_of(low_id)
        .set_quality(now, low_id, pub_id, Source::Camera, Quality::Low)
        .expect("set quality");
    let mut requests = sim.clients[publisher].keyframe_requests;
    send_pictures(&mut sim, publisher, 0, 40, &mut requests);
    sim.run_for(Duration::from_millis(300));

    // `high`: every packet, the publisher's markers (end of spatial layer 2) untouched.
    let got: Vec<&Got> = sim.clients[high].received.iter().collect();
    assert_eq!(got.len(), 40 * 3 * 2, "high gets every packet");
    assert!(contiguous(&got));
    for g in &got {
        let (_, sid, k, _) = tag(g);
        assert_eq!(
            g.marker,
            sid == 2 && k == 1,
            "high: marker at the end of the picture"
        );
    }

    // `low`: spatial layer 0 only, all temporal layers, marker on its last packet.
    let got: Vec<&Got> = sim.clients[low].received.iter().collect();
    assert_eq!(
        got.len(),
        40 * 2,
        "low gets spatial layer 0 of every picture"
    );
    for g in &got {
        let (_, sid, k, d) = tag(g);
        assert_eq!(sid, 0, "only spatial layer 0");
        assert_eq!(d.sid(), 0);
        assert_eq!(g.marker, k == 1, "low: marker at the end of layer 0");
    }
    assert!(
        contiguous(&got),
        "no hole where layers 1 and 2 were dropped"
    );
    let pictures: Vec<u16> = got.iter().map(|g| tag(g).0).collect();
    assert_eq!(
        pictures.iter().step_by(2).copied().collect::<Vec<_>>(),
        (0..40).collect::<Vec<_>>()
    );

    // `low` -> `high`: layers 1 and 2 join at a key frame, not before; still no hole.
    let before = sim.clients[low].received.len();
    let now = sim.now;
    sim.core_of(low_id)
        .set_quality(now, low_id, pub_id, Source::Camera, Quality::High)
        .expect("set quality");
    let keys = send_pictures(&mut sim, publisher, 40, 30, &mut requests);
    sim.run_for(Duration::from_millis(300));
    let first_key = *keys
        .first()
        .expect("the core asked the publisher for a key frame");
    let got: Vec<&Got> = sim.clients[low].received.iter().collect();
    assert!(contiguous(&got), "no hole across the switch");
    for g in &got[before..] {
        let (pic, sid, k, _) = tag(g);
        if pic < first_key {
            assert_eq!(
                sid, 0,
                "picture {pic}: upper layers only from the key frame {first_key}"
            );
            assert_eq!(g.marker, k == 1);
        } else {
            assert_eq!(
                g.marker,
                sid == 2 && k == 1,
                "picture {pic}: marker at the end"
            );
        }
    }
    let upper = got[before..].iter().filter(|g| tag(g).1 == 2).count();
    assert_eq!(
        upper,
        usize::from(70 - first_key) * 2,
        "layer 2 of every picture from the key frame"
    );
}

/// Packets per layer frame and bytes per packet of each spatial layer (30 pictures/s,
/// temporal pattern 0 2 1 2): spatial 0 ~145 kbit/s, 0+1 ~480, 0+1+2 ~1 250.
const SHAPE: [(u8, usize); 3] = [(1, 600), (2, 700), (4, 800)];

/// An L3T3 publisher with the bitrate shape above that answers key-frame requests with
/// its next picture.
struct SvcPublisher {
    idx: usize,
    picture: u16,
    requests: usize,
}

impl SvcPublisher {
    fn send_picture(&mut self, sim: &mut Sim) {
        let requests = sim.clients[self.idx].keyframe_requests;
        let key = self.picture == 0 || requests > self.requests;
        self.requests = requests;
        let pic = self.picture;
        let tid = if key { 0 } else { TID[usize::from(pic) % 4] };
        let ts = u32::from(pic) * 3000;
        for sid in 0..SPATIAL {
            let (packets, size) = SHAPE[usize::from(sid)];
            for k in 0..packets {
                let begin = k == 0;
                let end = k == packets - 1;
                let b0 = 0x80
                    | if key { 0 } else { 0x40 }
                    | 0x20
                    | if begin { 0x08 } else { 0 }
                    | if end { 0x04 } else { 0 };
                let layer = (tid << 5) | 0x10 | (sid << 1) | u8::from(key && sid > 0);
                let mut p = vec![b0, 0x80 | (pic >> 8) as u8, pic as u8, layer, 0];
                p.extend_from_slice(&pic.to_be_bytes());
                p.push(sid);
                p.push(k);
                p.resize(size, 0xAB);
                let marker = sid == SPATIAL - 1 && end;
                sim.send_rtp(self.idx, 0, ts, marker, p);
            }
        }
        self.picture = self.picture.wrapping_add(1);
        let until = sim.now + Duration::from_millis(33);
        while sim.now < until {
            let step = (sim.now + Duration::from_millis(5)).min(until);
            sim.run_until(step, |_| {});
        }
    }

    /// Pictures until `cond` holds or `limit` passes; how long it took.
    fn until(
        &mut self,
        sim: &mut Sim,
        limit: Duration,
        cond: impl Fn(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = sim.now;
        while sim.now - start < limit {
            if cond(sim) {
                return Some(sim.now - start);
            }
            self.send_picture(sim);
        }
        None
    }
}

/// The highest (spatial, temporal) layer among packets `from..` of subscriber `idx`.
fn top_layers_since(sim: &Sim, idx: usize, from: usize) -> (Option<u8>, Option<u8>) {
    let got = &sim.clients[idx].received[from..];
    let ds: Vec<vp9::Descriptor> = got.iter().map(|g| tag(g).3).collect();
    (
        ds.iter().map(|d| d.sid()).max(),
        ds.iter().map(|d| d.tid()).max(),
    )
}

fn capped(kbps: u64) -> Link {
    Link {
        delay: Duration::from_millis(20),
        rate_bps: kbps * 1000,
        queue: Duration::from_millis(100),
        ..Link::default()
    }
}

#[test]
fn the_allocator_picks_svc_layers_under_a_bottleneck() {
    let mut sim = Sim::with_config(
        43,
        SfuConfig {
            bandwidth_estimation: true,
            ..common::config()
        },
    );
    let a = sim.join_vp9(BOTH);
    let b = sim.join(BOTH);
    sim.publish(a, &[(MediaKind::Video, Source::Camera)]);
    let open = Link {
        delay: Duration::from_millis(20),
        ..Link::default()
    };
    for i in [a, b] {
        sim.clients[i].down = open;
        sim.clients[i].up = open;
    }
    sim.connect_all();
    let mut p = SvcPublisher {
        idx: a,
        picture: 0,
        requests: sim.clients[a].keyframe_requests,
    };
    let last_sid = |s: &Sim| s.clients[b].received.last().map(|g| tag(g).3.sid());
    p.until(&mut sim, Duration::from_secs(25), |s| {
        last_sid(s) == Some(2)
    })
    .expect("the open link climbs to spatial layer 2");

    // 400 kbit/s: spatial 0+1 (~480 kbit/s) no longer fits, spatial 0 at full rate does.
    sim.clients[b].down = capped(400);
    p.until(&mut sim, Duration::from_secs(5), |s| {
        let n = s.clients[b].received.len();
        n > 30 && top_layers_since(s, b, n - 30).0 == Some(0)
    })
    .expect("moves down to spatial layer 0");
    p.until(&mut sim, Duration::from_secs(2), |_| false);
    let from = sim.clients[b].received.len();
    p.until(&mut sim, Duration::from_secs(4), |_| false);
    let est = sim.cores[0].subscriber_estimate(sim.clients[b].id);
    let (s0, _) = top_layers_since(&sim, b, from);
    assert_eq!(s0, Some(0), "spatial 0 only; estimate {est:?}");
    let got: Vec<&Got> = sim.clients[b].received[from..].iter().collect();
    assert!(
        got.iter().all(|g| g.marker),
        "each picture's one packet ends it"
    );
    assert!(
        contiguous(&got),
        "no hole where spatial layers 1 and 2 were dropped"
    );

    // 100 kbit/s: not even spatial 0 at full rate (~145); its temporal layers 0+1 (~72) fit.
    sim.clients[b].down = capped(100);
    p.until(&mut sim, Duration::from_secs(8), |s| {
        let n = s.clients[b].received.len();
        n > 20 && top_layers_since(s, b, n - 20).1 == Some(1)
    })
    .expect("drops temporal layer 2 under 100 kbit/s");
    let from = sim.clients[b].received.len();
    p.until(&mut sim, Duration::from_secs(3), |_| false);
    let (s, t) = top_layers_since(&sim, b, from);
    let est = sim.cores[0].subscriber_estimate(sim.clients[b].id);
    eprintln!("figures: estimate {est:?} under 100 kbit/s, top layers {s:?}/{t:?}");
    assert_eq!(s, Some(0), "video flows on spatial 0; estimate {est:?}");
    assert!(t.is_some_and(|t| t <= 1), "no temporal layer 2: {t:?}");
    let got: Vec<&Got> = sim.clients[b].received[from..].iter().collect();
    assert!(
        contiguous(&got),
        "no hole where temporal layer 2 was dropped"
    );
    assert!(
        got.windows(2).all(|w| w[1].ts - w[0].ts >= 6000),
        "at most every other picture"
    );

    // The cap lifts: back to the top spatial layer.
    sim.clients[b].down = open;
    p.until(&mut sim, Duration::from_secs(30), |s| {
        last_sid(s) == Some(2)
    })
    .expect("back on spatial layer 2 after the cap lifts");
}

#[test]
fn vp9_simulcast_with_temporal_layers_still_forwards_one_rid() {
    // Each simulcast layer is its own VP9 stream with layer indices (temporal layers,
    // spatial 0): the RID picks the stream, not the SVC path.
    let mut sim = Sim::new(44);
    let a = sim.join_vp9(BOTH);
    let b = sim.join(BOTH);
    sim.publish_simulcast(a, &["q", "h", "f"]);
    sim.connect_all();
    for pic in 0..40u16 {
        let key = pic == 0;
        let tid = if key { 0 } else { TID[usize::from(pic) % 4] };
        for (l, rid) in ["q", "h", "f"].iter().enumerate() {
            let mut p = payload(pic, 0, tid, 0, key);
            p[0] |= 0x04; // one packet per frame: B and E
            let at = vp9::parse(&p).expect("descriptor").len;
            p[at + 2] = l as u8; // the tag's layer field carries the simulcast layer
            sim.send_rtp_layer(a, 0, rid, u32::from(pic) * 3000, true, p);
        }
        sim.run_for(Duration::from_millis(33));
    }
    sim.run_for(Duration::from_millis(300));
    let got: Vec<&Got> = sim.clients[b].received.iter().collect();
    // (Within the first, key picture the consumer moves up as each layer's key frame
    // arrives; after it, one layer.)
    let layers: std::collections::BTreeSet<u8> = got
        .iter()
        .filter(|g| tag(g).0 > 0)
        .map(|g| tag(g).1)
        .collect();
    assert_eq!(
        layers.len(),
        1,
        "one simulcast layer, not all three: {layers:?}"
    );
    assert!(got.len() >= 30, "that layer flows: {}", got.len());
    assert!(contiguous(&got));
}
