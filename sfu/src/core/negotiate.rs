//! Subscriber negotiation: consumers attached to and stopped on a subscriber transport,
//! and the server offers that tell the browser. M-lines are never rejected: a departed
//! publisher's go `inactive` and are recycled for the next consumer of their kind (see
//! [`Slot`]); ICE restarts ride on the same offers.

use str0m::media::{Direction, MediaKind, Mid};
use tracing::info;

use std::collections::HashMap;

use str0m::format::PayloadParams;

use super::allocator;
use super::rewrite::Rewriter;
use super::sdp_text;
use super::simulcast::Selection;
use super::*;
use crate::ids::{ParticipantId, Source, TrackId, TransportId};

impl ShardCore {
    /// Give `producer` a consumer in subscriber transport `sub` (re-using a parked
    /// consumer of the same publisher and source, so the subscriber's stream continues).
    pub(super) fn attach_consumer(&mut self, producer: TrackId, sub: TransportId) {
        let Some(p) = self.producers.get_mut(&producer) else {
            return;
        };
        let Some(t) = self.transports.get_mut(&sub) else {
            return;
        };
        let TransportKind::Subscriber {
            consumers,
            by_mid,
            to_stop,
            ..
        } = &mut t.kind
        else {
            return;
        };
        let key = (p.info.participant, p.info.source);
        // A re-publish with another codec: the consumer's m-line was negotiated for the old
        // one only (each m-line offers its producer's codec), and an m-line's codecs cannot
        // change under str0m 0.25. Retire that m-line; `negotiate` places the consumer on
        // one that offers the new codec.
        let config = t.rtc.codec_config();
        let local_pt =
            |c: Option<PayloadParams>| c.and_then(|c| config.match_params(c)).map(|p| p.pt());
        if let Some(c) = consumers.get_mut(&key)
            && !c.mid.is_empty()
            && local_pt(c.codec) != local_pt(p.params)
            && by_mid.remove(&c.mid).is_some()
        {
            to_stop.push(Slot {
                mid: c.mid,
                kind: c.kind,
                group: c.group,
                rewriter: std::mem::replace(&mut c.rewriter, Rewriter::new(t.rng.u16(1..0x7fff))),
            });
            c.mid = Mid::from("");
            c.active = false;
        }
        let c = consumers.entry(key).or_insert_with(|| Consumer {
            mid: Mid::from(""),
            publisher: p.info.participant,
            source: p.info.source,
            kind: p.info.kind,
            producer: None,
            active: false,
            rewriter: Rewriter::new(t.rng.u16(1..0x7fff)),
            pt_map: Vec::new(),
            red_ok: false,
            warned_codec: false,
            codec: None,
            sel: Selection::default(),
            svc: Default::default(),
            group: p.info.participant,
            target: allocator::Target::Layer(usize::MAX),
            hold_until: None,
            short_since: None,
            last_up: None,
            failed_ups: 0,
            await_keyframe: false,
            hard_down: false,
            tx_configured: None,
            view: None,
            vp8_ids: Default::default(),
        });
        if c.producer != Some(producer) {
            c.view = None; // a new track: its view is reported anew
        }
        c.producer = Some(producer);
        c.codec = p.params;
        c.pt_map.clear();
        c.rewriter.switch_source();
        c.sel.current = None;
        c.svc.current = None;
        let reattached = c.active;
        if !p.consumers.contains(&sub) {
            p.consumers.push(sub);
        }
        if reattached {
            // Already negotiated (a re-publish): the new source needs a keyframe.
            p.keyframe_pending = true;
        }
    }

    pub(super) fn stop_consumers_of(&mut self, sub: TransportId, publisher: ParticipantId) {
        let Some(t) = self.transports.get_mut(&sub) else {
            return;
        };
        let TransportKind::Subscriber {
            consumers,
            by_mid,
            to_stop,
            ..
        } = &mut t.kind
        else {
            return;
        };
        let keys: Vec<_> = consumers
            .keys()
            .filter(|k| k.0 == publisher)
            .copied()
            .collect();
        for k in keys {
            if let Some(c) = consumers.remove(&k)
                && by_mid.remove(&c.mid).is_some()
            {
                to_stop.push(Slot {
                    mid: c.mid,
                    kind: c.kind,
                    group: c.group,
                    rewriter: c.rewriter,
                });
            }
        }
    }

    /// Make a new server offer for subscriber transport `tid` if something changed and
    /// no offer is outstanding.
    ///
    /// New consumers take over free (inactive, answered) m-lines of their kind before new
    /// m-lines are added; departed publishers' m-lines go `inactive` and become free once
    /// this offer is answered, so one offer never both retires and reuses an m-line (the
    /// client sees the old track end before a new one starts on that mid).
    pub(super) fn negotiate(&mut self, tid: TransportId) {
        let Some(t) = self.transports.get_mut(&tid) else {
            return;
        };
        let participant = t.participant;
        let TransportKind::Subscriber {
            consumers,
            by_mid,
            pending_offer,
            renegotiate,
            to_stop,
            stopping,
            free,
            ice_restart,
        } = &mut t.kind
        else {
            return;
        };
        if pending_offer.is_some() {
            *renegotiate = true;
            return;
        }
        *renegotiate = false;
        // Each consumer's m-line offers only its producer's codec, that codec's RTX and RED:
        // `pts[mid]`, our payload types. str0m 0.25 cannot be told so (the codec
        // configuration is fixed when the `Rtc` is built, and a new m-line offers every
        // codec of its kind), so the offer text is narrowed (`sdp_text`); the browser's
        // answer then lists only that codec, and str0m narrows the m-line to the answer
        // for good. A free m-line is therefore reused only by a consumer of a codec it
        // still carries; another codec gets a new m-line.
        let config = t.rtc.codec_config();
        let pts: HashMap<(ParticipantId, Source), (Pt, Vec<u8>)> = consumers
            .iter()
            .filter_map(|(k, c)| {
                let p = config.match_params(c.codec?)?;
                let all = [Some(p.pt()), p.resend(), p.red()].into_iter().flatten();
                Some((*k, (p.pt(), all.map(|pt| *pt).collect())))
            })
            .collect();
        let carries: HashMap<Mid, Vec<Pt>> = free
            .iter()
            .filter_map(|s| Some((s.mid, t.rtc.media(s.mid)?.remote_pts().to_vec())))
            .collect();
        let mut api = t.rtc.sdp_api();
        let mut keys: Vec<_> = consumers
            .iter()
            .filter(|(_, c)| c.mid.is_empty())
            .map(|(k, _)| *k)
            .collect();
        keys.sort();
        for k in keys {
            let (own, busy): (Vec<_>, Vec<_>) = {
                let placed = consumers.iter().filter(|(_, c)| !c.mid.is_empty());
                let own = placed
                    .clone()
                    .filter(|(ck, _)| ck.0 == k.0)
                    .map(|(_, c)| c.group)
                    .collect();
                (own, placed.map(|(_, c)| c.group).collect())
            };
            let c = consumers.get_mut(&k).expect("key from the map");
            let fits = |s: &Slot| match pts.get(&k) {
                Some((pt, _)) => carries.get(&s.mid).is_some_and(|m| m.contains(pt)),
                None => true,
            };
            match take_slot(free, c.kind, &own, &busy, fits) {
                Some(slot) => {
                    c.mid = slot.mid;
                    c.group = slot.group;
                    c.rewriter = slot.rewriter;
                    c.rewriter.switch_source();
                    api.set_direction(slot.mid, Direction::SendOnly);
                }
                None => {
                    let stream = format!("{}", c.publisher);
                    let track = format!("{}-{}", c.publisher, c.source.as_str());
                    c.mid =
                        api.add_media(c.kind, Direction::SendOnly, Some(stream), Some(track), None);
                }
            }
            by_mid.insert(c.mid, k);
        }
        for slot in to_stop.drain(..) {
            api.set_direction(slot.mid, Direction::Inactive);
            stopping.push(slot);
        }
        let restart_ufrag = std::mem::take(ice_restart).then(|| api.ice_restart(true).ufrag);
        if !api.has_changes() {
            // Nothing to tell the client: what was to stop is free already.
            free.append(stopping);
            return;
        }
        let Some((offer, pending)) = api.apply() else {
            free.append(stopping);
            return;
        };
        *pending_offer = Some(pending);
        let keep: HashMap<String, Vec<u8>> = consumers
            .iter()
            .filter(|(_, c)| !c.mid.is_empty())
            .filter_map(|(k, c)| Some((c.mid.to_string(), pts.get(k)?.1.clone())))
            .collect();
        let mut tracks: Vec<OfferedTrack> = consumers
            .values()
            .map(|c| OfferedTrack {
                mid: c.mid.to_string(),
                track: c.producer,
                publisher: c.publisher,
                kind: c.kind,
                source: c.source,
            })
            .collect();
        tracks.sort_by(|a, b| a.mid.cmp(&b.mid));
        self.events.push_back(SfuEvent::SubscriberOffer {
            participant,
            sdp: sdp_text::offer_only_payload_types(&offer.to_sdp_string(), &keep),
            tracks,
        });
        if let Some(ufrag) = restart_ufrag {
            // str0m takes the new credentials when the answer arrives, but the browser
            // checks with them as soon as it has applied the offer: route them now.
            self.index.add_ufrag(&ufrag, tid);
            if let Some(t) = self.transports.get_mut(&tid)
                && let Some(old) = t.next_ufrag.replace(ufrag)
            {
                self.index.remove_ufrag(&old);
            }
        }
    }

    /// After an ICE restart (ours or the client's) the transport has a new local ufrag:
    /// route STUN naming it to the transport. Learned addresses stay valid.
    pub(super) fn reindex_ufrag(&mut self, tid: TransportId) {
        let Some(t) = self.transports.get_mut(&tid) else {
            return;
        };
        let ufrag = t.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag == t.ufrag {
            return;
        }
        self.index.remove_ufrag(&t.ufrag);
        if let Some(next) = t.next_ufrag.take()
            && next != ufrag
        {
            self.index.remove_ufrag(&next);
        }
        self.index.add_ufrag(&ufrag, tid);
        info!(transport = tid.0, participant = %t.participant, "ICE restarted");
        t.ufrag = ufrag;
        t.ice_interrupted = true;
        self.stats.ice_restarts += 1;
    }
}

/// Take a free m-line of `kind` that `fits` (carries the consumer's codec) for a new
/// consumer. Preferred: one of the msid stream the publisher's other consumers already use
/// (`own`), then one of a stream no live consumer uses (`busy` lists the streams in use),
/// then the oldest free one.
pub(super) fn take_slot(
    free: &mut Vec<Slot>,
    kind: MediaKind,
    own: &[ParticipantId],
    busy: &[ParticipantId],
    fits: impl Fn(&Slot) -> bool,
) -> Option<Slot> {
    let ok = |s: &Slot| s.kind == kind && fits(s);
    let pos = free
        .iter()
        .position(|s| ok(s) && own.contains(&s.group))
        .or_else(|| free.iter().position(|s| ok(s) && !busy.contains(&s.group)))
        .or_else(|| free.iter().position(ok))?;
    Some(free.remove(pos))
}
