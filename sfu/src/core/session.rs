//! Session work: what signaling asks of a shard. Joining and leaving, publishing (the
//! publisher's offer answered, its m-lines made producers), the subscriber's answers,
//! trickled candidates, mute/unpublish, quality choices, and freeing a participant's
//! transports, producers and routes when it goes.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::PayloadParams;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::rtp::Extension;
use str0m::{Candidate, Input, Rtc};
use tracing::{debug, warn};

use super::simulcast::Quality;
use super::*;
use crate::error::SfuError;
use crate::ids::{ParticipantId, Role, Source, TrackId, TransportId};

/// A sending m-line of a publisher's offer that the client named as a track.
struct SendingMline {
    mid: Mid,
    source: Source,
    muted: bool,
    kind: MediaKind,
    /// Negotiated codec name ([`codec_name`]: `vp8`, `opus`, ...).
    codec: String,
    clock_rate: u32,
    params: Option<PayloadParams>,
}

/// Where a subscriber's bandwidth estimate starts: a camera's usual top layer and audio, so
/// a new listener sees video at once; on a slower link the estimate falls within a few
/// seconds and the allocator moves down (never to a pause on its first allocation).
const INITIAL_ESTIMATE_BPS: u64 = 1_500_000;

impl ShardCore {
    /// The participant, or `NotJoined`.
    fn joined(&self, participant: ParticipantId) -> Result<&Participant, SfuError> {
        self.participants
            .get(&participant)
            .ok_or(SfuError::NotJoined)
    }

    /// A participant joins `room`. With the subscribe grant it gets a subscriber transport
    /// and consumers for every track already in the room.
    pub fn join(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        room: &str,
        grants: Grants,
        impair_loss: f32,
    ) -> Result<(), SfuError> {
        if self.participants.contains_key(&participant) {
            return Err(SfuError::AlreadyJoined);
        }
        let room: Arc<str> = match self.rooms.get_key_value(room) {
            Some((k, r)) => {
                if r.participants.len() >= self.cfg.max_participants_per_room {
                    return Err(SfuError::RoomFull);
                }
                k.clone()
            }
            None => Arc::from(room),
        };
        let impair_loss = if self.cfg.allow_impairment {
            impair_loss.clamp(0.0, 0.9)
        } else {
            0.0
        };
        let port_idx = self.ensure_room(&room);
        self.rooms
            .get_mut(&room)
            .expect("just ensured")
            .participants
            .push(participant);
        self.participants.insert(
            participant,
            Participant {
                room: room.clone(),
                grants,
                publisher: None,
                subscriber: None,
                impair_loss,
            },
        );
        if grants.subscribe {
            let tid = self.new_transport(now, participant, Role::Subscriber, impair_loss, port_idx);
            // Invariant: inserted just above.
            self.participants
                .get_mut(&participant)
                .expect("just inserted")
                .subscriber = Some(tid);
            let producers = self.rooms[&room].producers.clone();
            for p in producers {
                let allowed = self
                    .producers
                    .get(&p)
                    .is_some_and(|pr| may_consume(grants, pr.owner, pr.info.source));
                if allowed {
                    self.attach_consumer(p, tid);
                }
            }
            self.negotiate(tid);
        }
        debug!(%participant, room = %room, "joined");
        Ok(())
    }

    /// The participant's publisher PC offers; we answer. `tracks` names what each sending
    /// m-line carries; sending m-lines not named, and tracks no longer sending, are
    /// unpublished.
    pub fn publish(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        offer: &str,
        tracks: &[TrackRequest],
    ) -> Result<PublishAnswer, SfuError> {
        let p = self.joined(participant)?;
        if !p.grants.publish {
            return Err(SfuError::Forbidden("publish"));
        }
        if offer.len() > MAX_SDP_BYTES {
            return Err(SfuError::BadRequest("sdp too large".into()));
        }
        if tracks.len() > 16 {
            return Err(SfuError::BadRequest("too many tracks".into()));
        }
        let offer_text = offer;
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let room = p.room.clone();
        let impair = p.impair_loss;
        let tid = match p.publisher {
            Some(t) => t,
            None => {
                let port_idx = self.rooms.get(&room).map(|r| r.port_idx).unwrap_or(0);
                let t = self.new_transport(now, participant, Role::Publisher, impair, port_idx);
                // Invariant: checked present at the top of this function.
                self.participants
                    .get_mut(&participant)
                    .expect("present")
                    .publisher = Some(t);
                t
            }
        };
        let t = self
            .transports
            .get_mut(&tid)
            .expect("publisher transport exists");
        let answer = match t.rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => return Err(SfuError::BadSdp(e.to_string())),
        };
        // An offer with new ICE credentials is the client's ICE restart (its network
        // changed): str0m answers with new credentials of ours; route them.
        self.reindex_ufrag(tid);
        let t = self
            .transports
            .get_mut(&tid)
            .expect("publisher transport exists");
        // Which tracks does this offer carry now?
        let mut wanted: Vec<SendingMline> = Vec::new();
        for req in tracks {
            let mid = Mid::from(req.mid.as_str());
            let Some(media) = t.rtc.media(mid) else {
                return Err(SfuError::BadRequest(format!(
                    "no m-line with mid {}",
                    req.mid
                )));
            };
            if !matches!(media.direction(), Direction::RecvOnly | Direction::SendRecv) {
                continue;
            }
            let kind = media.kind();
            if kind.is_audio() != req.source.is_audio() {
                return Err(SfuError::BadRequest(format!(
                    "mid {} is {kind:?} but source {} is not",
                    req.mid,
                    req.source.as_str()
                )));
            }
            // The codec the client sends: the first our answer lists. str0m writes the
            // answer in our configuration's order, narrowed to the offer's payload types,
            // and an offerer sends the answer's first codec (libwebrtc does), whatever the
            // order of its own offer.
            let params = t
                .rtc
                .codec_config()
                .params()
                .iter()
                .find(|p| media.remote_pts().contains(&p.pt()))
                .copied();
            let (codec, rate) = params
                .map(|p| (codec_name(&p), p.spec().clock_rate.get()))
                .unwrap_or_else(|| ("unknown".into(), 90_000));
            wanted.push(SendingMline {
                mid,
                source: req.source,
                muted: req.muted,
                kind,
                codec,
                clock_rate: rate,
                params,
            });
        }
        let TransportKind::Publisher { by_mid } = &t.kind else {
            unreachable!("publisher transport has publisher kind")
        };
        let existing: Vec<(Mid, TrackId)> = by_mid.iter().map(|(m, t)| (*m, *t)).collect();
        // Unpublish what is gone or changed source.
        for (mid, track) in existing {
            let keep = wanted.iter().any(|w| {
                w.mid == mid
                    && self
                        .producers
                        .get(&track)
                        .is_some_and(|p| p.info.source == w.source)
            });
            if !keep {
                self.remove_producer(track);
            }
        }
        let mut infos = Vec::new();
        for SendingMline {
            mid,
            source,
            muted,
            kind,
            codec,
            clock_rate,
            params,
        } in wanted
        {
            let t = self
                .transports
                .get_mut(&tid)
                .expect("publisher transport exists");
            let TransportKind::Publisher { by_mid } = &mut t.kind else {
                unreachable!()
            };
            if let Some(track) = by_mid.get(&mid) {
                infos.push(self.producers[track].info.clone());
                continue;
            }
            let id = TrackId(self.track_ids.fetch_add(1, Ordering::Relaxed) + 1);
            by_mid.insert(mid, id);
            let info = TrackInfo {
                id,
                participant,
                kind,
                source,
                muted,
                codec,
            };
            let owner = self.participants[&participant].grants;
            self.producers.insert(
                id,
                Producer::new(
                    info.clone(),
                    room.clone(),
                    Origin::Local(tid, mid),
                    owner,
                    clock_rate,
                    params,
                ),
            );
            if let Some(r) = self.rooms.get_mut(&room) {
                r.producers.push(id);
            }
            self.events.push_back(SfuEvent::TrackPublished {
                room: room.clone(),
                track: info.clone(),
            });
            infos.push(info);
            self.announce_track(id);
            self.subscribe_room_to(id);
        }
        self.kick(tid, now);
        // str0m 0.25 writes the feedback of our codec configuration, not the intersection
        // with the offer's, and its configuration is fixed when the transport is built (one
        // transport answers every later offer of this client). Removing the `a=rtcp-fb`
        // lines the offer did not list is the minimal fix: it only deletes lines, so the
        // answer stays one str0m produced, and feedback is optional per payload type.
        // RED and DTX follow the publisher's offer (see `sdp_text`).
        let sdp =
            super::sdp_text::answer_feedback_within_offer(offer_text, &answer.to_sdp_string());
        let sdp = super::sdp_text::answer_red_order_as_offered(offer_text, &sdp);
        let sdp = super::sdp_text::answer_dtx_as_offered(offer_text, &sdp);
        Ok(PublishAnswer { sdp, tracks: infos })
    }

    /// The subscriber PC's answer to our last offer.
    pub fn subscriber_answer(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        answer: &str,
    ) -> Result<(), SfuError> {
        let p = self.joined(participant)?;
        let tid = p.subscriber.ok_or(SfuError::Forbidden("subscribe"))?;
        if answer.len() > MAX_SDP_BYTES {
            return Err(SfuError::BadRequest("sdp too large".into()));
        }
        let t = self
            .transports
            .get_mut(&tid)
            .expect("subscriber transport exists");
        let TransportKind::Subscriber {
            pending_offer,
            stopping,
            free,
            ..
        } = &mut t.kind
        else {
            unreachable!()
        };
        if pending_offer.is_none() {
            return Err(SfuError::NoOfferPending);
        }
        let parsed =
            SdpAnswer::from_sdp_string(answer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        // Invariant: checked just above.
        let pending = pending_offer.take().expect("pending offer");
        // The m-lines this offer made inactive are ours to reuse either way: their direction
        // is already inactive locally, and the next offer restates every m-line.
        free.append(stopping);
        if let Err(e) = t.rtc.sdp_api().accept_answer(pending, parsed) {
            // The offer is spent either way; the next change makes a fresh one.
            return Err(SfuError::BadSdp(e.to_string()));
        }
        self.reindex_ufrag(tid);
        let Some(t) = self.transports.get_mut(&tid) else {
            return Ok(());
        };
        let TransportKind::Subscriber { consumers, .. } = &mut t.kind else {
            unreachable!()
        };
        // Which m-lines accepted RED: they get a publisher's RED as is, the others its
        // primary Opus (`Consumer::write`).
        let red_mids = super::sdp_text::mids_with_codec(answer, "red");
        let mut wake = Vec::new();
        for c in consumers.values_mut() {
            let red_ok = red_mids.iter().any(|m| *m == *c.mid);
            if red_ok != c.red_ok {
                c.red_ok = red_ok;
                c.pt_map.clear();
            }
            if !c.active {
                c.active = true;
                c.pt_map.clear();
                if let Some(p) = c.producer {
                    wake.push(p);
                }
            }
        }
        for p in wake {
            self.request_keyframe(p, now);
        }
        self.negotiate(tid);
        self.kick(tid, now);
        Ok(())
    }

    /// A trickled remote ICE candidate (`candidate:...` line, as a browser sends it).
    pub fn remote_candidate(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        role: Role,
        candidate: &str,
    ) -> Result<(), SfuError> {
        let p = self.joined(participant)?;
        let tid = match role {
            Role::Publisher => p.publisher,
            Role::Subscriber => p.subscriber,
        }
        .ok_or_else(|| SfuError::BadRequest("no such transport yet".into()))?;
        let line = candidate.strip_prefix("a=").unwrap_or(candidate);
        let c = Candidate::from_sdp_string(line)
            .map_err(|e| SfuError::BadRequest(format!("candidate: {e}")))?;
        let t = self.transports.get_mut(&tid).expect("transport exists");
        t.rtc.add_remote_candidate(c);
        self.drive(tid, now);
        Ok(())
    }

    /// The client asks for an ICE restart of its subscriber transport (its network changed
    /// or its ICE state went `disconnected`/`failed`): the next offer carries new ICE
    /// credentials and otherwise the same m-lines, consumers and SSRCs. With an offer
    /// outstanding, the restart rides on the next one (sent when the answer arrives).
    pub fn restart_ice(
        &mut self,
        now: Instant,
        participant: ParticipantId,
    ) -> Result<(), SfuError> {
        let p = self.joined(participant)?;
        let tid = p.subscriber.ok_or(SfuError::Forbidden("subscribe"))?;
        let t = self
            .transports
            .get_mut(&tid)
            .expect("subscriber transport exists");
        let TransportKind::Subscriber { ice_restart, .. } = &mut t.kind else {
            unreachable!("subscriber transport has subscriber kind")
        };
        *ice_restart = true;
        self.negotiate(tid);
        self.kick(tid, now);
        Ok(())
    }

    /// Mute or unmute one of the participant's tracks. Media keeps flowing (the browser
    /// sends silence/black); the flag is for everyone's UI.
    pub fn mute(
        &mut self,
        participant: ParticipantId,
        track: TrackId,
        muted: bool,
    ) -> Result<(), SfuError> {
        let p = self
            .producers
            .get_mut(&track)
            .ok_or(SfuError::UnknownTrack)?;
        if p.info.participant != participant {
            return Err(SfuError::UnknownTrack);
        }
        if p.info.muted != muted {
            p.info.muted = muted;
            self.events.push_back(SfuEvent::TrackMuted {
                room: p.room.clone(),
                participant,
                track,
                muted,
            });
            self.announce_track(track);
        }
        Ok(())
    }

    /// Stop publishing one track.
    pub fn unpublish(
        &mut self,
        participant: ParticipantId,
        track: TrackId,
    ) -> Result<(), SfuError> {
        match self.producers.get(&track) {
            Some(p) if p.info.participant == participant => {
                self.remove_producer(track);
                Ok(())
            }
            _ => Err(SfuError::UnknownTrack),
        }
    }

    /// The participant leaves (or its signaling connection died): free everything.
    pub fn leave(&mut self, participant: ParticipantId) -> Result<(), SfuError> {
        let p = self
            .participants
            .remove(&participant)
            .ok_or(SfuError::NotJoined)?;
        // Producers first: their consumers are parked, then stopped below.
        let tracks: Vec<TrackId> = self
            .producers
            .values()
            .filter(|pr| pr.info.participant == participant)
            .map(|pr| pr.info.id)
            .collect();
        for t in tracks {
            self.remove_producer(t);
        }
        for tid in [p.publisher, p.subscriber].into_iter().flatten() {
            self.remove_transport(tid);
        }
        let peers_told = p.room.clone();
        self.tell_peers(&peers_told, || span::Msg::Left {
            room: peers_told.clone(),
            participant,
        });
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.participants.retain(|x| *x != participant);
        }
        self.forget_in_room(&p.room, participant);
        // A spanning room stays while it has mirrors or the span lasts: a join already
        // posted here must find them (see `span.rs`).
        if !self.spans.contains_key(&p.room)
            && self
                .rooms
                .get(&p.room)
                .is_some_and(|r| r.participants.is_empty() && r.producers.is_empty())
        {
            self.rooms.remove(&p.room);
        }
        debug!(%participant, "left");
        Ok(())
    }

    /// The simulcast quality `subscriber` wants for `publisher`'s `source` (switched at the
    /// next key frame of the chosen layer; no effect on tracks without simulcast).
    pub fn set_quality(
        &mut self,
        now: Instant,
        subscriber: ParticipantId,
        publisher: ParticipantId,
        source: Source,
        quality: Quality,
    ) -> Result<(), SfuError> {
        let part = self
            .participants
            .get(&subscriber)
            .ok_or(SfuError::NotJoined)?;
        let sub = part.subscriber.ok_or(SfuError::UnknownTrack)?;
        let Some(t) = self.transports.get_mut(&sub) else {
            return Err(SfuError::UnknownTrack);
        };
        let TransportKind::Subscriber { consumers, .. } = &mut t.kind else {
            return Err(SfuError::UnknownTrack);
        };
        let c = consumers
            .get_mut(&(publisher, source))
            .ok_or(SfuError::UnknownTrack)?;
        if c.sel.quality == quality {
            return Ok(());
        }
        c.sel.quality = quality;
        debug!(%subscriber, %publisher, source = source.as_str(), quality = quality.as_str(), "simulcast quality");
        // Ask for a key frame on the new layer now instead of at its next natural one.
        if let Some(track) = c.producer
            && let Some(layer) = self
                .producers
                .get(&track)
                .and_then(|p| p.layers.pick(quality))
        {
            self.request_layer_keyframe(track, layer, now);
        }
        Ok(())
    }

    /// `participant` (of this shard or another) left `room`: it is no longer a speaker, and
    /// this shard's subscribers in the room drop their consumers of it (their m-lines go
    /// `inactive` at the next offer).
    pub(super) fn forget_in_room(&mut self, room: &str, participant: ParticipantId) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.speakers.retain(|x| *x != participant);
        let subs: Vec<TransportId> = r
            .participants
            .iter()
            .filter_map(|x| self.participants.get(x).and_then(|x| x.subscriber))
            .collect();
        for s in subs {
            self.stop_consumers_of(s, participant);
            self.negotiate(s);
        }
    }

    /// Every other participant of the producer's room on this shard that may receive it
    /// gets a consumer of it (and a new offer): a new local producer or a new mirror.
    pub(super) fn subscribe_room_to(&mut self, track: TrackId) {
        let Some(p) = self.producers.get(&track) else {
            return;
        };
        let (publisher, owner, source) = (p.info.participant, p.owner, p.info.source);
        let Some(room) = self.rooms.get(&p.room) else {
            return;
        };
        let subs: Vec<TransportId> = room
            .participants
            .iter()
            .filter(|x| **x != publisher)
            .filter_map(|x| self.participants.get(x))
            .filter(|x| may_consume(x.grants, owner, source))
            .filter_map(|x| x.subscriber)
            .collect();
        for s in subs {
            self.attach_consumer(track, s);
            self.negotiate(s);
        }
    }

    /// The room's entry, created on the least loaded local port if new; its port index.
    pub(super) fn ensure_room(&mut self, room: &Arc<str>) -> usize {
        let least_loaded = (0..self.ports.len())
            .min_by_key(|i| (self.port_load[*i], *i))
            .expect("at least one port");
        self.rooms
            .entry(room.clone())
            .or_insert_with(|| Room {
                port_idx: least_loaded,
                participants: Vec::new(),
                producers: Vec::new(),
                speakers: Vec::new(),
            })
            .port_idx
    }

    pub(super) fn remove_participant(&mut self, participant: ParticipantId, reason: RemovalReason) {
        let Some(room) = self.participants.get(&participant).map(|p| p.room.clone()) else {
            return;
        };
        warn!(%participant, ?reason, "removing participant: its own transport failed");
        let _ = self.leave(participant);
        self.events.push_back(SfuEvent::ParticipantRemoved {
            room,
            participant,
            reason,
        });
    }

    pub(super) fn new_transport(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        role: Role,
        impair_loss: f32,
        port_idx: usize,
    ) -> TransportId {
        self.next_transport = self.next_transport.wrapping_add(1);
        let tid = TransportId(self.next_transport);
        self.port_load[port_idx] += 1;
        let mut builder = Rtc::builder().set_crypto_provider(crate::dtls::crypto_provider());
        if let Some(cert) = &self.dtls_cert {
            builder = builder.set_dtls_cert(cert.clone());
        }
        if role == Role::Subscriber && self.cfg.bandwidth_estimation {
            // Send-side bandwidth estimation (transport-cc feedback from the browser,
            // probing with padding) feeds the stream allocator (allocator.rs).
            builder = builder.enable_bwe(Some(str0m::bwe::Bitrate::bps(INITIAL_ESTIMATE_BPS)));
        } else if role == Role::Subscriber {
            // Without the estimator nothing reads transport-cc feedback, yet with the
            // extension negotiated str0m stamps every packet sent and keeps 1,000 send
            // records per transport for it (~90 KiB: heaptrack's largest item for a
            // listener), and the browser sends feedback every few tens of milliseconds.
            // The standard map without it (same ids, so nothing else changes).
            builder = builder
                .clear_extension_map()
                .set_extension(1, Extension::AudioLevel)
                .set_extension(2, Extension::AbsoluteSendTime)
                .set_extension(4, Extension::RtpMid)
                .set_extension(10, Extension::RtpStreamId)
                .set_extension(11, Extension::RepairedRtpStreamId)
                .set_extension(13, Extension::VideoOrientation);
        }
        // AV1 SVC: the dependency descriptor, answered to publishers that offer it and
        // offered to subscribers (`av1_svc.rs`).
        builder = builder.set_extension(av1_svc::EXTMAP_ID, av1_svc::extension());
        let mut rtc = builder
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            // RED folded onto Opus: kept in an answer only when the offer has it too
            // (str0m's negotiation), forwarded or stripped per subscriber (`red.rs`).
            .enable_opus(true, true)
            .enable_vp8(true)
            .enable_vp9(true)
            .enable_h264(true)
            .enable_av1(true)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);
        let addr = SocketAddr::new(self.advertise, self.ports[port_idx]);
        // Invariant: a host candidate for a concrete address and "udp" always builds.
        let cand = Candidate::host(addr, "udp").expect("valid host candidate");
        rtc.add_local_candidate(cand);
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        self.index.add_ufrag(&ufrag, tid);
        let kind = match role {
            Role::Publisher => TransportKind::Publisher {
                by_mid: HashMap::new(),
            },
            Role::Subscriber => TransportKind::Subscriber {
                consumers: HashMap::new(),
                by_mid: HashMap::new(),
                pending_offer: None,
                renegotiate: false,
                to_stop: Vec::new(),
                stopping: Vec::new(),
                free: Vec::new(),
                ice_restart: false,
            },
        };
        self.transports.insert(
            tid,
            Transport {
                participant,
                rtc: Box::new(rtc),
                port_idx,
                ufrag,
                next_ufrag: None,
                addrs: Vec::new(),
                created: now,
                connected: false,
                disconnected_since: None,
                next_timeout: None,
                dirty: false,
                kind,
                rng: fastrand::Rng::with_seed(participant.0 ^ u64::from(tid.0) << 32),
                impair_loss: if role == Role::Subscriber {
                    impair_loss
                } else {
                    0.0
                },
                egress: HashMap::new(),
                loss_estimate: Default::default(),
                loss: None,
                estimate: None,
                ice_interrupted: false,
            },
        );
        // Drive once so the instance reports its first timeout.
        if let Some(t) = self.transports.get_mut(&tid) {
            let _ = t.rtc.handle_input(Input::Timeout(now));
        }
        self.drive(tid, now);
        tid
    }

    pub(super) fn remove_transport(&mut self, tid: TransportId) {
        if let Some(t) = self.transports.remove(&tid) {
            self.index.remove(&t.ufrag, &t.addrs);
            if let Some(next) = &t.next_ufrag {
                self.index.remove_ufrag(next);
            }
            self.port_load[t.port_idx] -= 1;
        }
        // Heap entries for this transport go stale and are skipped; purge them now so
        // counts reach zero without waiting for their deadlines.
        self.timers.retain(|Reverse((_, t))| *t != tid);
    }

    pub(super) fn remove_producer(&mut self, track: TrackId) {
        let Some(p) = self.producers.remove(&track) else {
            return;
        };
        if let Origin::Local(tid, mid) = p.origin
            && let Some(t) = self.transports.get_mut(&tid)
            && let TransportKind::Publisher { by_mid } = &mut t.kind
        {
            by_mid.remove(&mid);
        }
        for sub in &p.consumers {
            if let Some(t) = self.transports.get_mut(sub)
                && let TransportKind::Subscriber { consumers, .. } = &mut t.kind
                && let Some(c) = consumers.get_mut(&(p.info.participant, p.info.source))
                && c.producer == Some(track)
            {
                c.producer = None;
            }
        }
        if let Some(r) = self.rooms.get_mut(&p.room) {
            r.producers.retain(|x| *x != track);
        }
        if matches!(p.origin, Origin::Remote(_)) {
            // A mirror: its own shard tells signaling.
            return;
        }
        self.tell_peers(&p.room, || span::Msg::TrackGone { track });
        self.events.push_back(SfuEvent::TrackUnpublished {
            room: p.room.clone(),
            participant: p.info.participant,
            track,
        });
    }
}

/// `Track.codec` (docs/protocol.md): the codec's MIME subtype in lower case (`opus`, `vp8`,
/// `vp9`, `h264`, `av1`). MIME subtypes are case-insensitive and stacks spell them
/// differently in SDP (`VP8` next to `opus`); one normalised form lets clients, the NATS
/// consumers and the metrics compare with `==`.
pub(super) fn codec_name(p: &PayloadParams) -> String {
    p.spec().codec.to_string().to_ascii_lowercase()
}
