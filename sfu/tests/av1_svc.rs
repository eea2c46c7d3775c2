//! AV1 SVC layer dropping in the media core, by the dependency descriptor header extension
//! (see `common/mod.rs` for the simulated peers and network; `svc.rs` is the VP9
//! counterpart). A publisher sends L3T3 (three spatial layers, three temporal layers, one
//! RTP stream) with a descriptor on every packet and the template structure on each key
//! picture's first packet, as Chromium does. A subscriber that asked for `low` gets spatial
//! layer 0 alone, with the marker bit on its last packet of each picture and the
//! descriptors as sent; one that asked for `high` gets everything; both see sequence
//! numbers without a gap. Moving `low` -> `high` waits for a key frame (which the core asks
//! the publisher for). Frame numbers start near the 16-bit wrap and cross it. Packets whose
//! descriptor cannot be read are forwarded whole; a VP9 stream's descriptor is not
//! forwarded at all.

mod common;

use std::time::Duration;

use common::{BOTH, Got, Sim};
use sfu::core::av1_dd::{self, BitWriter};
use sfu::core::av1_svc::DdBytes;
use sfu::{MediaKind, Quality, Source};
use str0m::rtp::ExtensionValues;

const SPATIAL: u8 = 3;
/// Temporal layer of picture n: the L1T3 pattern 0, 2, 1, 2.
const TID: [u8; 4] = [0, 2, 1, 2];
const PACKETS_PER_LAYER: u8 = 2;
/// Template ids count from here (modulo 64).
const OFFSET: u32 = 60;
/// Frame number of picture 0's spatial layer 0 (3 frames per picture: wraps at picture 12).
const FIRST_FRAME: u16 = 65500;

/// Template index of a frame: per spatial layer, [key picture, T0, T1, T2].
fn template(sid: u8, tid: u8, key: bool) -> u32 {
    u32::from(sid) * 4 + if key { 0 } else { 1 + u32::from(tid) }
}

/// The L3T3_KEY structure: for each spatial layer a key-picture template (S0: no
/// references; S1, S2: the layer below, 1 frame back), then T0, T1, T2 referencing the
/// same layer 4, 2 and 1 pictures back (12, 6, 3 frames). Nine decode targets (S x T),
/// every frame a switch point of the targets it is in; no chains; resolutions 160x120 up.
fn structure(w: &mut BitWriter) {
    w.put(6, OFFSET).put(5, 9 - 1);
    for sid in 0..SPATIAL {
        // key T0, T0, T1, T2: "same layer", "next temporal" x2, then "next spatial"/"end"
        w.put(2, 0).put(2, 1).put(2, 1);
        w.put(2, if sid == SPATIAL - 1 { 3 } else { 2 });
    }
    for sid in 0..SPATIAL {
        for tid in [0, 0, 1, 2] {
            for dt in 0..9u8 {
                let (ds, dtt) = (dt / 3, dt % 3);
                w.put(2, if sid <= ds && tid <= dtt { 2 } else { 0 });
            }
        }
    }
    for sid in 0..SPATIAL {
        match sid {
            0 => w.put(1, 0),
            _ => w.put(1, 1).put(4, 0).put(1, 0),
        };
        for fdiff in [12, 6, 3] {
            w.put(1, 1).put(4, fdiff - 1).put(1, 0);
        }
    }
    w.put(3, 0); // ns(10) = 0: no chains
    w.put(1, 1);
    for s in 0..SPATIAL {
        w.put(16, (160 << s) - 1).put(16, (120 << s) - 1);
    }
}

/// One packet's descriptor: the mandatory fields, and the structure on a key picture's
/// first packet.
fn descriptor(picture: u16, sid: u8, tid: u8, k: u8, key: bool) -> Vec<u8> {
    let mut w = BitWriter::default();
    let frame = FIRST_FRAME.wrapping_add(picture * 3 + u16::from(sid));
    w.put(1, u32::from(k == 0))
        .put(1, u32::from(k == PACKETS_PER_LAYER - 1))
        .put(6, (OFFSET + template(sid, tid, key)) % 64)
        .put(16, u32::from(frame));
    if key && sid == 0 && k == 0 {
        w.put(5, 0b10000);
        structure(&mut w);
    }
    w.finish()
}

/// One packet's payload: an AV1 aggregation header byte, then the tag the test reads
/// (picture, spatial layer, packet), padded to a size per layer.
fn payload(picture: u16, sid: u8, k: u8, key: bool) -> Vec<u8> {
    let mut p = vec![if key && sid == 0 && k == 0 {
        0x18
    } else {
        0x10
    }];
    p.extend_from_slice(&picture.to_be_bytes());
    p.push(sid);
    p.push(k);
    p.resize(300 * (usize::from(sid) + 1), 0xAB);
    p
}

/// (picture, spatial layer, packet index) of a received packet.
fn tag(g: &Got) -> (u16, u8, u8) {
    let p = &g.payload;
    (u16::from_be_bytes([p[1], p[2]]), p[3], p[4])
}

/// Send `n` pictures from `first` (33 ms apart); a key picture first if `key_first`, and
/// at the first picture after each key-frame request the publisher PC got. Returns the
/// key pictures.
fn send_pictures(
    sim: &mut Sim,
    publisher: usize,
    (first, n): (u16, u16),
    key_first: bool,
    requests: &mut usize,
) -> Vec<u16> {
    let mut keys = Vec::new();
    for pic in first..first + n {
        let key =
            (key_first && pic == first) || sim.clients[publisher].keyframe_requests > *requests;
        if key {
            *requests = sim.clients[publisher].keyframe_requests;
            keys.push(pic);
        }
        let tid = if key { 0 } else { TID[usize::from(pic) % 4] };
        let ts = u32::from(pic) * 3000;
        for sid in 0..SPATIAL {
            for k in 0..PACKETS_PER_LAYER {
                let marker = sid == SPATIAL - 1 && k == PACKETS_PER_LAYER - 1;
                let mut ext = ExtensionValues::default();
                ext.user_values
                    .set(DdBytes(descriptor(pic, sid, tid, k, key)));
                sim.send_rtp_ext(publisher, 0, ts, marker, payload(pic, sid, k, key), ext);
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
fn av1_layers_above_the_target_are_dropped_by_the_dependency_descriptor() {
    let mut sim = Sim::new(51);
    let publisher = sim.join_av1(BOTH);
    let low = sim.join_av1(BOTH);
    let high = sim.join_av1(BOTH);
    let tracks = sim.publish(publisher, &[(MediaKind::Video, Source::Camera)]);
    assert_eq!(tracks[0].codec, "av1");
    sim.connect_all();
    // Negotiated both ways: the subscriber offers carry the extension.
    assert!(
        sim.clients[low]
            .offer_sdps
            .iter()
            .any(|o| o.contains(av1_dd::URI)),
        "the subscriber offer names the dependency descriptor"
    );
    let pub_id = sim.clients[publisher].id;
    let low_id = sim.clients[low].id;
    let now = sim.now;
    sim.core_of(low_id)
        .set_quality(now, low_id, pub_id, Source::Camera, Quality::Low)
        .expect("set quality");
    let mut requests = sim.clients[publisher].keyframe_requests;
    let keys = send_pictures(&mut sim, publisher, (0, 40), true, &mut requests);
    sim.run_for(Duration::from_millis(300));

    // `high`: every packet, markers and descriptors as the publisher sent them.
    let got: Vec<&Got> = sim.clients[high].received.iter().collect();
    assert_eq!(got.len(), 40 * 3 * 2, "high gets every packet");
    assert!(contiguous(&got));
    for g in &got {
        let (pic, sid, k) = tag(g);
        assert_eq!(
            g.marker,
            sid == 2 && k == 1,
            "high: marker at the picture end"
        );
        let key = keys.contains(&pic);
        let tid = if key { 0 } else { TID[usize::from(pic) % 4] };
        assert_eq!(
            g.dd.as_deref(),
            Some(&descriptor(pic, sid, tid, k, key)[..]),
            "the descriptor arrives as sent"
        );
    }

    // `low`: spatial layer 0 only, all temporal layers, marker on its last packet, its
    // descriptors (the structure on the first) as sent.
    let got: Vec<&Got> = sim.clients[low].received.iter().collect();
    assert_eq!(
        got.len(),
        40 * 2,
        "low gets spatial layer 0 of every picture"
    );
    let first = got[0].dd.as_deref().expect("a descriptor");
    let structure = av1_dd::parse(first, None)
        .expect("the key picture's descriptor parses")
        .structure
        .expect("and carries the structure");
    assert_eq!(structure.spatial_layers(), 3);
    for g in &got {
        let (_, sid, k) = tag(g);
        assert_eq!(sid, 0, "only spatial layer 0");
        let d = av1_dd::parse(g.dd.as_deref().expect("descriptor"), Some(&structure))
            .expect("each forwarded descriptor parses");
        assert_eq!(d.spatial, 0);
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

    // `low` -> `high`: layers 1 and 2 join at a key picture, not before; still no hole.
    let before = sim.clients[low].received.len();
    let now = sim.now;
    sim.core_of(low_id)
        .set_quality(now, low_id, pub_id, Source::Camera, Quality::High)
        .expect("set quality");
    let keys = send_pictures(&mut sim, publisher, (40, 30), false, &mut requests);
    sim.run_for(Duration::from_millis(300));
    let first_key = *keys
        .first()
        .expect("the core asked the publisher for a key frame");
    let got: Vec<&Got> = sim.clients[low].received.iter().collect();
    assert!(contiguous(&got), "no hole across the switch");
    for g in &got[before..] {
        let (pic, sid, k) = tag(g);
        if pic < first_key {
            assert_eq!(
                sid, 0,
                "picture {pic}: upper layers only from the key {first_key}"
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
        "layer 2 of every picture from the key picture"
    );
}

#[test]
fn av1_packets_whose_descriptor_cannot_be_read_are_forwarded_whole() {
    // Before any structure (the key picture's first packet lost for good) the descriptors
    // name templates nobody knows: the core cannot pick layers and forwards everything
    // rather than leave holes; from the next key picture on, it drops layers again.
    let mut sim = Sim::new(52);
    let publisher = sim.join_av1(BOTH);
    let low = sim.join_av1(BOTH);
    sim.publish(publisher, &[(MediaKind::Video, Source::Camera)]);
    sim.connect_all();
    let (pub_id, low_id) = (sim.clients[publisher].id, sim.clients[low].id);
    let now = sim.now;
    sim.core_of(low_id)
        .set_quality(now, low_id, pub_id, Source::Camera, Quality::Low)
        .expect("set quality");
    for pic in 1..5u16 {
        for sid in 0..SPATIAL {
            for k in 0..PACKETS_PER_LAYER {
                let mut ext = ExtensionValues::default();
                let tid = TID[usize::from(pic) % 4];
                ext.user_values
                    .set(DdBytes(descriptor(pic, sid, tid, k, false)));
                let marker = sid == SPATIAL - 1 && k == 1;
                let ts = u32::from(pic) * 3000;
                sim.send_rtp_ext(publisher, 0, ts, marker, payload(pic, sid, k, false), ext);
            }
        }
        sim.run_for(Duration::from_millis(33));
    }
    sim.run_for(Duration::from_millis(200));
    assert_eq!(
        sim.clients[low].received.len(),
        4 * 3 * 2,
        "no structure: forwarded whole"
    );
    let mut requests = sim.clients[publisher].keyframe_requests;
    let before = sim.clients[low].received.len();
    // Picture 10 is a key picture (its first packet carries the structure).
    send_pictures(&mut sim, publisher, (10, 8), true, &mut requests);
    sim.run_for(Duration::from_millis(200));
    let got: Vec<&Got> = sim.clients[low].received[before..].iter().collect();
    assert_eq!(got.len(), 8 * 2, "with the structure, spatial layer 0 only");
    assert!(got.iter().all(|g| tag(g).1 == 0));
    let all: Vec<&Got> = sim.clients[low].received.iter().collect();
    assert!(contiguous(&all));
}

#[test]
fn a_vp9_streams_dependency_descriptor_is_not_forwarded() {
    // libwebrtc may send the descriptor with other codecs once it is negotiated. For VP9 the
    // payload descriptor does the work, and a receiver handed both would build its frame
    // references from the other one: the server passes it on with AV1 only.
    let mut sim = Sim::new(53);
    let publisher = sim.join_vp9(BOTH);
    let viewer = sim.join_vp9(BOTH);
    let tracks = sim.publish(publisher, &[(MediaKind::Video, Source::Camera)]);
    assert_eq!(tracks[0].codec, "vp9");
    sim.connect_all();
    for pic in 0..10u16 {
        let mut ext = ExtensionValues::default();
        ext.user_values
            .set(DdBytes(descriptor(pic, 0, 0, 0, pic == 0)));
        // VP9 descriptor: B and E, a key frame first (P = 0), then P = 1.
        let b0 = if pic == 0 { 0x0C } else { 0x4C };
        let ts = u32::from(pic) * 3000;
        sim.send_rtp_ext(publisher, 0, ts, true, vec![b0, 0xAB, 0xCD], ext);
        sim.run_for(Duration::from_millis(33));
    }
    sim.run_for(Duration::from_millis(200));
    let got = &sim.clients[viewer].received;
    assert_eq!(got.len(), 10, "every packet arrives");
    assert!(got.iter().all(|g| g.dd.is_none()), "without the descriptor");
}
