//! A consumer's per-packet work, in two steps (LiveKit's forwarder/downtrack split):
//!
//! - **decide** ([`Consumer::decide`]): whether this consumer gets this packet at all —
//!   negotiated and fed by this producer, and for simulcast the layer it is on or moving
//!   to (switches happen at key frames). Bandwidth allocation plugs in here: it only
//!   changes what the consumer wants, never how packets are written.
//! - **apply** ([`Consumer::write`]): map the payload type to the subscriber's, rewrite
//!   sequence number and timestamp for continuity, and hand the packet to str0m.

use std::time::{Duration, Instant};

use str0m::Rtc;
use str0m::format::PayloadParams;
use str0m::media::{Pt, Rid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo};
use tracing::info;

use super::Consumer;
use super::allocator::Target;
use super::simulcast::{Decision, Layers};
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
    pub(super) in_pt: Pt,
    pub(super) in_params: PayloadParams,
    pub(super) is_video: bool,
    pub(super) clock_rate: u32,
    /// Header extensions to pass on (mid/rid/transport-cc cleared: they are per hop).
    pub(super) ext: ExtensionValues,
}

/// A consumer's decision for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Send,
    Skip,
    /// Skipped, and the layer it waits for needs a key frame.
    SkipWantKeyframe,
}

impl Consumer {
    /// Whether this consumer gets the packet (see the module docs).
    pub(super) fn decide(&mut self, pkt: &Incoming, layers: &Layers) -> Verdict {
        if !self.active || self.producer != Some(pkt.track) {
            return Verdict::Skip;
        }
        let cap = match self.target {
            Target::Paused if pkt.is_video => return Verdict::Skip,
            Target::Paused => usize::MAX,
            Target::Layer(l) => l,
        };
        let Some(r) = pkt.rid else {
            // Without simulcast, only a resume after a pause waits (for a key frame).
            if self.await_keyframe {
                if !pkt.keyframe {
                    return Verdict::SkipWantKeyframe;
                }
                self.await_keyframe = false;
            }
            return Verdict::Send;
        };
        self.await_keyframe = false;
        match self
            .sel
            .decide(r, pkt.keyframe, layers.pick_capped(self.sel.quality, cap))
        {
            Decision::Forward => Verdict::Send,
            Decision::Drop => Verdict::Skip,
            Decision::DropWantKeyframe => Verdict::SkipWantKeyframe,
        }
    }

    /// Translate and write the packet on this consumer's m-line of `rtc` (the subscriber's
    /// transport). False when it could not be written (codec missing, stream gone).
    pub(super) fn write(
        &mut self,
        rtc: &mut Rtc,
        subscriber: ParticipantId,
        pkt: &Incoming,
        rtp: &RtpPacket,
        now: Instant,
    ) -> bool {
        let out_pt = match self.pt_map.iter().find(|(i, _)| *i == pkt.in_pt) {
            Some((_, o)) => *o,
            None => {
                let o = rtc
                    .codec_config()
                    .match_params(pkt.in_params)
                    .map(|p| p.pt());
                self.pt_map.push((pkt.in_pt, o));
                o
            }
        };
        let Some(out_pt) = out_pt else {
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
        if self.tx_configured != Some(tx.ssrc()) {
            self.tx_configured = Some(tx.ssrc());
            // Forwarded media is not paced. The stream allocator keeps each subscriber
            // under its estimate instead, as LiveKit's pass-through pacer and mediasoup do.
            // str0m's pacer sends at 1.1 x the estimate: at a few hundred kbit/s a
            // forwarded key frame waited up to a second in it, the browser's delay gradient
            // read that as congestion, and the estimate collapsed.
            tx.set_unpaced(true);
            // The retransmission cache is bounded by time: a NACK for a packet older than
            // a second comes too late for the receiver's jitter buffer, and str0m's default
            // (3 s) made this cache the largest part of a participant's memory.
            tx.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, RTX_RATIO_CAP);
        }
        let write = RtpWrite::new(
            out_pt,
            SeqNo::from(rw.seq),
            rw.ts,
            rtp.timestamp,
            rtp.payload.clone(),
        )
        .marker(rtp.header.marker)
        .ext_vals(pkt.ext.clone())
        .nackable(pkt.is_video);
        tx.write_rtp(write);
        true
    }
}
