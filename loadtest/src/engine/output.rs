//! What a peer connection puts out: its str0m output drained (datagrams sent, received
//! RTP measured, key-frame requests answered), publishers' media written, and the reports.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use str0m::media::{ExtensionValues, MediaKind};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Event, IceConnectionState, Output, Rtc};

use super::*;
use crate::gaps::GapTracker;
use crate::payload::{self, Stamp};

impl Sinks {
    /// Poll `pc` until its next timeout: send datagrams, account events.
    pub(super) fn drain(&mut self, pc: &mut Pc, now: Instant) {
        let Sinks {
            live,
            parts,
            gap_mark,
            latency,
            send_drops,
        } = self;
        loop {
            match pc.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    pc.next_timeout = t;
                    return;
                }
                Err(_) => {
                    // A broken connection: look again in a while rather than spin.
                    pc.next_timeout = now + Duration::from_millis(100);
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    if t.source != pc.local {
                        // Sent from the address a rebind took away (the old session's
                        // path): that network is gone, so is the datagram.
                        continue;
                    }
                    if pc.sock.send_to(&t.contents, t.destination).is_err() {
                        *send_drops += 1;
                    }
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected if !pc.connected => {
                        pc.connected = true;
                        live.connected.fetch_add(1, Ordering::Relaxed);
                        let r = &mut parts.entry(pc.pid).or_default().report;
                        if pc.subscriber {
                            r.sub_connected = true;
                        } else {
                            r.pub_connected = true;
                        }
                    }
                    Event::IceConnectionStateChange(state) => {
                        if let Some(sw) = pc.switch.as_mut() {
                            match state {
                                IceConnectionState::Checking => sw.restarted = true,
                                IceConnectionState::Connected | IceConnectionState::Completed
                                    if sw.restarted =>
                                {
                                    let back = ms_since(sw.at, now);
                                    let r = &mut parts.entry(pc.pid).or_default().report;
                                    if pc.subscriber {
                                        r.sub_ice_back_ms = Some(back);
                                    } else {
                                        r.pub_ice_back_ms = Some(back);
                                    }
                                    pc.switch = None;
                                }
                                _ => {}
                            }
                        }
                    }
                    Event::KeyframeRequest(req) => {
                        if let Some(ps) = pc.publisher.as_mut()
                            && req.mid == ps.video_mid
                        {
                            ps.key_due = true;
                            live.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                            parts.entry(pc.pid).or_default().report.keyframe_requests += 1;
                        }
                    }
                    Event::RtpPacket(p) => {
                        let arrived = Instant::now();
                        let part = parts.entry(pc.pid).or_default();
                        let r = &mut part.report;
                        if r.first_media.is_none() {
                            r.first_media = Some(arrived);
                        }
                        r.rx_packets += 1;
                        r.rx_bytes += p.payload.len() as u64;
                        live.rx_packets.fetch_add(1, Ordering::Relaxed);
                        live.rx_bytes
                            .fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                        let seq = *p.seq_no;
                        let st = match pc.streams.get_mut(&p.header.ssrc) {
                            Some(st) => st,
                            None => {
                                let mid = pc
                                    .rtc
                                    .direct_api()
                                    .stream_rx(&p.header.ssrc)
                                    .map(|s| s.mid());
                                let video = mid
                                    .and_then(|m| pc.rtc.media(m))
                                    .is_some_and(|m| m.kind() == MediaKind::Video);
                                if let Some(m) = mid {
                                    r.mids_with_media.insert(m.to_string());
                                }
                                r.rx_expected += 1;
                                if video {
                                    r.video_rx_expected += 1;
                                }
                                live.rx_expected.fetch_add(1, Ordering::Relaxed);
                                pc.streams.entry(p.header.ssrc).or_insert(RxStream {
                                    video,
                                    mid,
                                    layer: None,
                                    max_seq: seq,
                                    received: 0,
                                    jitter_us: 0.0,
                                    last_transit: None,
                                })
                            }
                        };
                        st.received += 1;
                        if st.video {
                            r.video_rx_packets += 1;
                            if let Some(mid) = st.mid {
                                part.gaps
                                    .entry(mid)
                                    .or_insert_with(|| GapTracker::new(*gap_mark))
                                    .packet(arrived);
                            }
                        }
                        if seq > st.max_seq {
                            let gap = seq - st.max_seq;
                            st.max_seq = seq;
                            r.rx_expected += gap;
                            if st.video {
                                r.video_rx_expected += gap;
                            }
                            live.rx_expected.fetch_add(gap, Ordering::Relaxed);
                        }
                        let key = st.video && payload::vp8_is_keyframe_start(&p.payload);
                        if key {
                            r.keyframes_rx += 1;
                        }
                        if let Some(s) = payload::read_stamp(&p.payload) {
                            if st.layer.is_some_and(|l| l != s.layer) {
                                if key {
                                    r.layer_switches += 1;
                                } else {
                                    r.layer_switches_mid_frame += 1;
                                }
                            }
                            st.layer = Some(s.layer);
                            let now_us = payload::micros(arrived);
                            latency.record(now_us.saturating_sub(s.sent_us));
                            let transit = now_us as i64 - s.sent_us as i64;
                            if let Some(last) = st.last_transit {
                                let d = (transit - last).abs() as f64;
                                st.jitter_us += (d - st.jitter_us) / 16.0;
                            }
                            st.last_transit = Some(transit);
                        }
                    }
                    _ => {}
                },
            }
        }
    }
}

impl Engine {
    pub(super) fn report(&self) -> EngineReport {
        let now = Instant::now();
        let mut parts: HashMap<u64, PartReport> = self
            .sinks
            .parts
            .iter()
            .map(|(k, v)| {
                let mut r = v.report.clone();
                r.video_gaps = v
                    .gaps
                    .iter()
                    .map(|(mid, g)| (mid.to_string(), g.report(now)))
                    .collect();
                (*k, r)
            })
            .collect();
        // Jitter lives on the open connections' streams.
        for pc in self.pcs.iter().flatten() {
            if let (Some(j), Some(r)) = (mean_jitter_ms(pc), parts.get_mut(&pc.pid)) {
                r.jitter_ms = Some(j);
            }
        }
        EngineReport {
            parts,
            latency_us: self.sinks.latency.clone(),
            send_drops: self.sinks.send_drops,
        }
    }
}

pub(super) fn ms_since(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

/// Mean interarrival jitter of a connection's received streams, ms.
pub(super) fn mean_jitter_ms(pc: &Pc) -> Option<f64> {
    if pc.streams.is_empty() {
        return None;
    }
    let sum: f64 = pc.streams.values().map(|s| s.jitter_us).sum();
    Some(sum / pc.streams.len() as f64 / 1000.0)
}

/// Write the due audio packet and video frame of one publisher; true if anything was
/// written.
pub(super) fn send_media(
    cfg: &MediaCfg,
    rtc: &mut Rtc,
    ps: &mut PubState,
    now: Instant,
    live: &Live,
    r: &mut PartReport,
) -> bool {
    let Some((vpt, apt)) = ps.pts else {
        return false;
    };
    let mut wrote = false;
    let sent_us = payload::micros(now);
    let mut packets = 0u64;
    let mut bytes = 0u64;
    if now >= ps.next_audio {
        ps.audio_no = ps.audio_no.wrapping_add(1);
        ps.aseq += 1;
        let data = payload::opus_packet(
            cfg.audio_bytes,
            Stamp {
                sent_us,
                layer: 0,
                seq: ps.audio_no,
            },
        );
        let ext = ExtensionValues {
            audio_level: Some(-50),
            voice_activity: Some(false),
            ..Default::default()
        };
        let mut api = rtc.direct_api();
        if let Some(tx) = api.stream_tx_by_mid(ps.audio_mid, None) {
            bytes += data.len() as u64;
            packets += 1;
            tx.write_rtp(
                RtpWrite::new(
                    apt,
                    SeqNo::from(ps.aseq),
                    ps.audio_no.wrapping_mul(960),
                    now,
                    data,
                )
                .ext_vals(ext),
            );
        }
        ps.next_audio += Duration::from_millis(20);
        if ps.next_audio < now {
            ps.next_audio = now + Duration::from_millis(20);
        }
        wrote = true;
    }
    if now >= ps.next_video {
        ps.frame_no = ps.frame_no.wrapping_add(1);
        let key = ps.key_due
            || ps
                .last_key
                .is_none_or(|t| now.duration_since(t) >= cfg.keyframe_interval);
        if key {
            ps.key_due = false;
            ps.last_key = Some(now);
        }
        let fps = cfg.fps.max(1);
        let frame_bytes = (cfg.video_kbps as usize * 1000 / 8) / fps as usize;
        let rtp_ts = ps.frame_no.wrapping_mul(90_000 / fps);
        for (li, layer) in ps.layers.iter_mut().enumerate() {
            let stamp = Stamp {
                sent_us,
                layer: li as u8,
                seq: ps.frame_no,
            };
            let size = (frame_bytes / layer.scale).max(64);
            // Key frames are about 4x a delta frame, as with real encoders.
            let size = if key { size * 4 } else { size };
            let pkts = payload::vp8_frame(size, key, stamp);
            let mut api = rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(ps.video_mid, layer.rid) else {
                continue;
            };
            let last = pkts.len() - 1;
            for (k, p) in pkts.into_iter().enumerate() {
                layer.seq += 1;
                bytes += p.len() as u64;
                packets += 1;
                // MID and RID header extensions, as browsers send them: how the SFU tells
                // simulcast layers apart.
                let ext = ExtensionValues {
                    mid: Some(ps.video_mid),
                    rid: layer.rid,
                    ..Default::default()
                };
                tx.write_rtp(
                    RtpWrite::new(vpt, SeqNo::from(layer.seq), rtp_ts, now, p)
                        .marker(k == last)
                        .ext_vals(ext)
                        .nackable(true),
                );
            }
        }
        ps.next_video += Duration::from_micros(1_000_000 / u64::from(fps));
        if ps.next_video < now {
            ps.next_video = now + Duration::from_micros(1_000_000 / u64::from(fps));
        }
        wrote = true;
    }
    r.tx_packets += packets;
    r.tx_bytes += bytes;
    live.tx_packets.fetch_add(packets, Ordering::Relaxed);
    live.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
    wrote
}
