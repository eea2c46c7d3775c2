//! A consumer's per-packet work, in two steps (LiveKit's forwarder/downtrack split):
//!
//! - **decide** ([`Consumer::decide`]): whether this consumer gets this packet at all —
//!   negotiated and fed by this producer, and for simulcast the layer it is on or moving
//!   to (switches happen at key frames); for VP9 or AV1 SVC the spatial/temporal layers
//!   at or below its target (`svc.rs`), with the marker bit moved to the end of the
//!   highest forwarded layer. Bandwidth allocation and adaptive stream (the subscriber's view
//!   of the video) plug in here: they only change what the consumer wants, never how
//!   packets are written.
//! - **apply** ([`Consumer::write`]): map the payload type to the subscriber's, rewrite
//!   sequence number and timestamp (and a VP8 picture ID) for continuity, and hand the
//!   packet to str0m. A RED packet goes out as RED when the subscriber accepted `red`,
//!   else as its primary block (plain Opus, same sequence number: one RED packet
//!   carries one primary frame).

use std::ops::Range;
use std::time::{Duration, Instant};

use str0m::Rtc;
use str0m::format::{Codec, PayloadParams};
use str0m::media::Rid;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo, Vp8Descriptor, Vp8Patch};
use tracing::{debug, info};

use super::Consumer;
use super::allocator::Target;
use super::red;
use super::simulcast::{Decision, Layers};
use super::svc::{LayerFrame, SvcDecision, SvcLayers};
use crate::ids::{ParticipantId, TrackId};

/// How long a forwarded packet stays in its stream's retransmission cache.
pub(super) const RTX_CACHE_AGE: Duration = Duration::from_secs(1);
/// The cache's packet cap (time bounds it first: 1 s of a 2.5 Mbit/s camera is ~250).
const RTX_CACHE_PACKETS: usize = 1000;
/// str0m's default: resends are dropped when they exceed 15 % of what is sent.
const RTX_RATIO_CAP: Option<f32> = Some(0.15);

/// What the forwarder knows about one incoming packet, computed once for all consumers.
pub(super) struct Incoming {
    pub(super) track: TrackId,
    /// Simulcast layer (None: not simulcast).
    pub(super) rid: Option<Rid>,
    /// Starts a key frame (video).
    pub(super) keyframe: bool,
    /// The producer's codec (for a RED packet, the codec RED wraps).
    pub(super) in_params: PayloadParams,
    /// A RED packet: where its primary block's data sits in the payload.
    pub(super) red_primary: Option<Range<usize>>,
    /// Its SVC layers: from a VP9 packet's payload descriptor or an AV1 packet's
    /// dependency descriptor (None: not SVC, or unreadable).
    pub(super) svc: Option<LayerFrame>,
    pub(super) is_video: bool,
    pub(super) clock_rate: u32,
    /// Header extensions to pass on (mid/rid/transport-cc cleared: they are per hop).
    pub(super) ext: ExtensionValues,
}

/// A consumer's decision for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Forward; `end_of_picture`: with the marker bit set (the last forwarded SVC layer).
    Send {
        end_of_picture: bool,
    },
    Skip,
    /// An SVC layer above the target: skipped, and the rewriter closes its gap.
    SkipLayer,
    /// Skipped, and the layer it waits for needs a key frame.
    SkipWantKeyframe,
}

impl Consumer {
    /// Whether this consumer gets the packet (see the module docs).
    pub(super) fn decide(&mut self, pkt: &Incoming, layers: &Layers, svc: &SvcLayers) -> Verdict {
        if !self.active || self.producer != Some(pkt.track) {
            return Verdict::Skip;
        }
        let mut cap = match self.target {
            Target::Paused if pkt.is_video => return Verdict::Skip,
            Target::Paused => usize::MAX,
            Target::Layer(l) => l,
        };
        if let Some(view) = self.view
            && pkt.is_video
        {
            // Adaptive stream: nothing for a video nobody sees, and no layer larger than
            // its element (`adaptive.rs`).
            if !view.visible {
                return Verdict::Skip;
            }
            if pkt.rid.is_some() {
                cap = cap.min(layers.index_for_view((view.width, view.height)));
            }
        }
        // (SVC drops its upper layers at the next picture anyway.)
        let hard_down = std::mem::take(&mut self.hard_down);
        // VP9 with layer indices or AV1 with a dependency descriptor: the SVC path, even
        // while only one layer was seen (the first picture reveals its layers one by one).
        // Not for a simulcast layer (VP9 simulcast with temporal layers): there the RID
        // picks the stream.
        if pkt.rid.is_none()
            && let Some(d) = pkt.svc.as_ref()
        {
            if self.await_keyframe {
                // A resume: start from a key frame (`SvcSelection` waits for one).
                self.await_keyframe = false;
                self.svc.current = None;
            }
            let Some(want) = svc.pick_capped(self.sel.quality, cap) else {
                return Verdict::Skip;
            };
            let before = self.svc.current;
            let verdict = self.svc.decide(d, want);
            if self.svc.current != before {
                debug!(mid = %self.mid, from = ?before, to = ?self.svc.current, ?want, "svc layers");
            }
            return match verdict {
                SvcDecision::Forward { end_of_picture } => Verdict::Send { end_of_picture },
                SvcDecision::DropLayer => Verdict::SkipLayer,
                SvcDecision::DropWantKeyframe => Verdict::SkipWantKeyframe,
            };
        }
        let Some(r) = pkt.rid else {
            // Without simulcast, only a resume after a pause waits (for a key frame).
            if self.await_keyframe {
                if !pkt.keyframe {
                    return Verdict::SkipWantKeyframe;
                }
                self.await_keyframe = false;
            }
            return Verdict::Send {
                end_of_picture: false,
            };
        };
        self.await_keyframe = false;
        // A move down for congestion: the layer it was on does not fit the link, and going
        // on sending it until the lower layer's key frame arrives keeps the bottleneck's
        // queue full, so that key frame is late or lost (seconds in Chromium behind a
        // 300 kbit/s cap). Stop it now; the picture holds until the key frame comes.
        let before = self.sel.current;
        if hard_down
            && let Some(cur) = self.sel.current
            && layers.rank_of(cur).is_some_and(|i| i > cap)
        {
            self.sel.current = None;
        }
        let decision = self
            .sel
            .decide(r, pkt.keyframe, layers.pick_capped(self.sel.quality, cap));
        if self.sel.current != before {
            debug!(mid = %self.mid, from = ?before, to = ?self.sel.current, hard_down, "simulcast layer");
        }
        match decision {
            Decision::Forward => Verdict::Send {
                end_of_picture: false,
            },
            Decision::Drop => Verdict::Skip,
            Decision::DropWantKeyframe => Verdict::SkipWantKeyframe,
        }
    }

    /// Picture ID and TL0PICIDX continuous across the sources this consumer forwards
    /// (`vp8_ids.rs`), as a patch str0m applies when it writes the packet.
    fn vp8_patch(&mut self, ssrc: u32, payload: &[u8]) -> Option<Vp8Patch> {
        let (pid, tl0) = self.vp8_ids.next(ssrc, payload);
        if pid.is_none() && tl0.is_none() {
            return None;
        }
        let mut b = Vp8Descriptor::parse(payload).ok()?.patch();
        if let Some(pid) = pid {
            b = b.picture_id(pid);
        }
        if let Some(tl0) = tl0 {
            b = b.tl0_pic_idx(tl0);
        }
        b.build().ok()
    }

    /// Translate and write the packet on this consumer's m-line of `rtc` (the subscriber's
    /// transport). False when it could not be written (codec missing, stream gone).
    pub(super) fn write(
        &mut self,
        rtc: &mut Rtc,
        subscriber: ParticipantId,
        pkt: &Incoming,
        rtp: &RtpPacket,
        marker: bool,
        now: Instant,
    ) -> bool {
        let in_pt = pkt.in_params.pt();
        let out = match self.pt_map.iter().find(|(i, _)| *i == in_pt) {
            Some((_, o)) => *o,
            None => {
                let o = rtc
                    .codec_config()
                    .match_params(pkt.in_params)
                    .map(|p| (p.pt(), p.red().filter(|_| self.red_ok)));
                self.pt_map.push((in_pt, o));
                o
            }
        };
        let Some((out_pt, out_red)) = out else {
            if !self.warned_codec {
                self.warned_codec = true;
                info!(%subscriber, "subscriber lacks codec {:?}; track not forwarded", pkt.in_params.spec().codec);
            }
            return false;
        };
        let Some(rw) = self.rewriter.rewrite(
            *rtp.header.ssrc,
            *rtp.seq_no,
            rtp.header.timestamp,
            pkt.clock_rate,
            now,
        ) else {
            return false;
        };
        let mut api = rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(self.mid, None) else {
            return false;
        };
        // Forwarded media is not paced (a field store, made every time: str0m may rebuild
        // a stream under the same SSRC, and a paced forwarded stream changes what the
        // estimator sees). The stream allocator keeps each subscriber under its estimate
        // instead, as LiveKit's pass-through pacer and mediasoup do. str0m's pacer sends
        // at 1.1 x the estimate: at a few hundred kbit/s a forwarded key frame waited up
        // to a second in it, the browser's delay gradient read that as congestion, and the
        // estimate collapsed.
        tx.set_unpaced(true);
        if self.tx_configured != Some(tx.ssrc()) {
            self.tx_configured = Some(tx.ssrc());
            // The retransmission cache is bounded by time: a NACK for a packet older than
            // a second comes too late for the receiver's jitter buffer, and str0m's default
            // (3 s) made this cache the largest part of a participant's memory.
            tx.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, RTX_RATIO_CAP);
        }
        let (pt, payload) = match (&pkt.red_primary, out_red) {
            (None, _) => (out_pt, rtp.payload.clone()),
            (Some(_), Some(red_pt)) if in_pt == out_pt => (red_pt, rtp.payload.clone()),
            // Checked in `forward`: the block headers parse.
            (Some(_), Some(red_pt)) => match red::map_block_pt(&rtp.payload, *in_pt, *out_pt) {
                Ok(p) => (red_pt, p.into()),
                Err(_) => return false,
            },
            (Some(primary), None) => (out_pt, rtp.payload[primary.clone()].into()),
        };
        let mut write = RtpWrite::new(pt, SeqNo::from(rw.seq), rw.ts, rtp.timestamp, payload)
            .marker(marker)
            .ext_vals(pkt.ext.clone())
            .nackable(pkt.is_video);
        if pkt.in_params.spec().codec == Codec::Vp8
            && let Some(patch) = self.vp8_patch(*rtp.header.ssrc, &rtp.payload)
        {
            write = write.vp8_patch(patch);
        }
        tx.write_rtp(write);
        true
    }
}
