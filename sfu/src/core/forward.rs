//! Forwarding one RTP packet from a producer to its consumers, and key-frame requests
//! going the other way (subscriber PLI/FIR to the publisher, throttled and coalesced).

use std::time::Instant;

use str0m::format::{Codec, PayloadParams};
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::rtp::RtpPacket;
use tracing::debug;

use super::av1_svc::DdBytes;
use super::consumer::{Incoming, Verdict};
use super::span::Relayed;
use super::*;
use super::{red, vp9};
use crate::ids::{TrackId, TransportId};

impl ShardCore {
    /// Forward one RTP packet from publisher transport `from` to every consumer.
    pub(super) fn forward(&mut self, from: TransportId, pkt: RtpPacket, now: Instant) {
        let Some(t) = self.transports.get_mut(&from) else {
            return;
        };
        let TransportKind::Publisher { by_mid } = &t.kind else {
            return;
        };
        let ssrc = pkt.header.ssrc;
        let Some((mid, rid)) = t
            .rtc
            .direct_api()
            .stream_rx(&ssrc)
            .map(|s| (s.mid(), s.rid()))
        else {
            return;
        };
        let Some(&track) = by_mid.get(&mid) else {
            return; // an m-line the client did not name as a track
        };
        let in_pt = pkt.header.payload_type;
        let in_params: Option<PayloadParams> = t
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.pt() == in_pt || p.red() == Some(in_pt))
            .copied();
        let Some(in_params) = in_params else {
            return;
        };
        // RED (RFC 2198) around the producer's codec: read its block headers once, for
        // the subscribers that get the primary block alone (`Consumer::write`).
        let red_primary = if in_params.red() == Some(in_pt) {
            match red::blocks(&pkt.payload) {
                // Invariant: `blocks` returns at least the primary on success.
                Ok(b) => Some(b.last().expect("primary block").data.clone()),
                Err(e) => {
                    debug!(transport = from.0, "bad RED payload dropped: {e}");
                    self.stats.rejected += 1;
                    return;
                }
            }
        } else {
            None
        };
        let Some(p) = self.producers.get_mut(&track) else {
            return;
        };
        let is_video = p.info.kind == MediaKind::Video;
        let clock_rate = p.clock_rate;
        // Whether this packet starts a key frame decides where consumers may switch layers.
        let keyframe =
            is_video && simulcast::is_keyframe_start(in_params.spec().codec, &pkt.payload);
        // SVC layers, read once for all consumers. VP9: the payload descriptor's layer
        // indices. AV1 (one stream, no RID): the dependency descriptor header extension,
        // read against the producer's last template structure (`av1_svc.rs`). A packet
        // without a readable descriptor (padding, garbage, no structure yet) is forwarded
        // as before, outside the SVC path: dropping it would leave a hole every
        // subscriber NACKs.
        let mut ext = pkt.header.ext_vals.clone();
        let codec = in_params.spec().codec;
        let dd = ext.user_values.get::<DdBytes>().map(|b| &b.0[..]);
        let svc = match (codec, dd) {
            (Codec::Vp9, _) if !pkt.payload.is_empty() => match vp9::parse(&pkt.payload) {
                Ok(d) => d.layer_frame(),
                Err(e) => {
                    debug!(
                        transport = from.0,
                        "VP9 payload without a readable descriptor: {e}"
                    );
                    None
                }
            },
            (Codec::Av1, Some(dd)) if rid.is_none() => match p.av1.frame(dd) {
                Ok(f) => Some(f),
                Err(e) => {
                    debug!(transport = from.0, "AV1 dependency descriptor: {e}");
                    None
                }
            },
            _ => None,
        };
        // The dependency descriptor goes on only with an AV1 stream that is not simulcast:
        // its frame numbers are the stream's own, and a VP8/VP9 receiver that got them
        // would switch from the payload's descriptor to these (untested ground).
        if codec != Codec::Av1 || rid.is_some() {
            ext.user_values.remove::<DdBytes>();
        }
        ext.mid = None;
        ext.rid = None;
        ext.rid_repair = None;
        ext.transport_cc = None;
        let incoming = Incoming {
            track,
            rid,
            keyframe,
            in_params,
            red_primary,
            svc,
            is_video,
            clock_rate,
            ext,
        };
        p.observe(&incoming, &pkt, now);
        let room = p.room.clone();
        self.fan_out(&incoming, &pkt, now);
        // A room spanning shards: the others fan it out to their own subscribers.
        self.relay(&room, Relayed { incoming, pkt });
    }

    /// Forward one packet of producer `pkt.track` (local or a mirror) to this shard's
    /// consumers of it.
    pub(super) fn fan_out(&mut self, incoming: &Incoming, pkt: &RtpPacket, now: Instant) {
        let track = incoming.track;
        let Some(p) = self.producers.get(&track) else {
            return;
        };
        let key = (p.info.participant, p.info.source);
        let mut want_keyframe = false;
        for &sub in &p.consumers {
            let Some(st) = self.transports.get_mut(&sub) else {
                continue;
            };
            if st.ice_interrupted {
                // Its path is down (ICE disconnected, or restarting): sending into the void
                // would only leave a hole the browser NACKs for seconds after it is back.
                continue;
            }
            let TransportKind::Subscriber { consumers, .. } = &mut st.kind else {
                continue;
            };
            let Some(c) = consumers.get_mut(&key) else {
                continue;
            };
            // Decide: does this consumer get this packet? (The allocator's side.)
            let verdict = c.decide(incoming, &p.layers, &p.svc);
            if std::mem::take(&mut c.svc.wants_keyframe) {
                want_keyframe = true;
            }
            let end_of_picture = match verdict {
                Verdict::Send { end_of_picture } => end_of_picture,
                Verdict::Skip => continue,
                Verdict::SkipLayer => {
                    c.rewriter.skip(*pkt.header.ssrc, *pkt.seq_no);
                    continue;
                }
                Verdict::SkipWantKeyframe => {
                    want_keyframe = true;
                    continue;
                }
            };
            // Apply: translate (payload type, sequence, timestamp) and write.
            let marker = pkt.header.marker || end_of_picture;
            if c.write(&mut st.rtc, st.participant, incoming, pkt, marker, now) {
                self.stats.rtp_forwarded += 1;
                if !st.dirty {
                    st.dirty = true;
                    self.dirty.push(sub);
                }
            }
        }
        if want_keyframe {
            match incoming.rid {
                Some(r) => self.request_layer_keyframe(track, r, now),
                None => self.request_keyframe(track, now),
            }
        }
    }

    pub(super) fn on_keyframe_request(&mut self, sub: TransportId, mid: Mid, now: Instant) {
        let Some(t) = self.transports.get(&sub) else {
            return;
        };
        let TransportKind::Subscriber {
            consumers, by_mid, ..
        } = &t.kind
        else {
            return;
        };
        let Some(c) = by_mid.get(&mid).and_then(|k| consumers.get(k)) else {
            return;
        };
        match (c.producer, c.sel.current) {
            (Some(p), Some(layer)) => self.request_layer_keyframe(p, layer, now),
            (Some(p), None) => self.request_keyframe(p, now),
            _ => {}
        }
    }

    /// Ask the publisher of `producer` for a keyframe, at most once per interval.
    pub(super) fn request_keyframe(&mut self, producer: TrackId, now: Instant) {
        let interval = self.cfg.keyframe_request_interval;
        let Some(p) = self.producers.get_mut(&producer) else {
            return;
        };
        if p.info.kind != MediaKind::Video {
            return;
        }
        if p.last_keyframe_request
            .is_some_and(|at| now < at + interval)
        {
            p.keyframe_pending = true;
            self.stats.keyframe_requests_throttled += 1;
            return;
        }
        p.last_keyframe_request = Some(now);
        p.keyframe_pending = false;
        if !p.layers.is_empty() {
            let rids: Vec<Rid> = p.layers.rids().collect();
            for r in rids {
                self.request_layer_keyframe(producer, r, now);
            }
            return;
        }
        let (tid, mid) = match p.origin {
            Origin::Local(tid, mid) => (tid, mid),
            Origin::Remote(shard) => {
                self.request_remote_keyframe(shard, producer, None);
                return;
            }
        };
        if let Some(t) = self.transports.get_mut(&tid) {
            if let Some(rx) = t.rtc.direct_api().stream_rx_by_mid(mid, None) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                self.stats.keyframe_requests += 1;
                self.mark_dirty(tid);
            } else {
                // No packet seen yet: try again next tick.
                p.keyframe_pending = true;
                p.last_keyframe_request = None;
            }
        }
    }

    /// A key frame on one simulcast layer (throttled per layer).
    pub(super) fn request_layer_keyframe(&mut self, producer: TrackId, rid: Rid, now: Instant) {
        let interval = self.cfg.keyframe_request_interval;
        let Some(p) = self.producers.get_mut(&producer) else {
            return;
        };
        if !p.layers.may_request_keyframe(rid, interval, now) {
            self.stats.keyframe_requests_throttled += 1;
            return;
        }
        let (tid, mid) = match p.origin {
            Origin::Local(tid, mid) => (tid, mid),
            Origin::Remote(shard) => {
                self.request_remote_keyframe(shard, producer, Some(rid));
                return;
            }
        };
        if let Some(t) = self.transports.get_mut(&tid)
            && let Some(rx) = t.rtc.direct_api().stream_rx_by_mid(mid, Some(rid))
        {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            self.stats.keyframe_requests += 1;
            self.mark_dirty(tid);
        }
    }
}
