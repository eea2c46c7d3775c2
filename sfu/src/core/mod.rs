//! The sans-IO media core of one shard: its rooms, their participants' transports
//! (one str0m `Rtc` each), producers (incoming tracks) and consumers (a subscriber's view
//! of a producer), and the routing index.
//!
//! # Driving contract
//!
//! The core never reads a clock and never touches a socket. Its owner (the shard thread
//! in `driver`, or a test) must:
//!
//! 1. feed every datagram that arrived on a media port with [`ShardCore::handle_datagram`];
//! 2. after a batch of datagrams, call [`ShardCore::flush`] (it lets each transport that
//!    got packets to send encrypt and emit them once per batch, not once per packet);
//! 3. call [`ShardCore::handle_timeout`] when [`ShardCore::poll_timeout`] is due;
//! 4. drain [`ShardCore::poll_transmit`] (datagrams to send, with the local port they
//!    must leave from) and [`ShardCore::poll_event`] (for signaling) after each of the above.
//!
//! Commands from signaling (`join`, `publish`, ...) are plain methods returning a
//! `Result`. Time always comes in as `now`.
//!
//! # Lifecycle of a participant
//!
//! `join` creates the participant and, with the subscribe grant, its subscriber transport.
//! `publish` creates (first time) the publisher transport and a producer per sending
//! m-line; every other participant gets a consumer for it and a new server offer.
//! `unpublish`/`leave`/consent timeout remove producers (consumers are parked, so a
//! re-publish of the same source continues the subscriber's stream), then transports,
//! routes and the room when it empties. [`ShardCore::counts`] shows it all returns to zero.

pub mod route;
pub mod simulcast;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::PayloadParams;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tracing::{debug, error, info, warn};

use crate::config::SfuConfig;
use crate::error::SfuError;
use crate::ids::{ParticipantId, Role, Source, TrackId, TransportId};
use crate::rewrite::Rewriter;
use route::{MAX_ADDRS_PER_TRANSPORT, RouteDatagramTo, RouteIndex, Unroutable};
use simulcast::{Decision, Layers, Quality, Selection};

/// Largest SDP we accept (an offer with many m-lines is a few KiB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// Housekeeping period: keyframe-request coalescing, consent checks, active speakers.
const TICK: Duration = Duration::from_millis(100);
/// Active-speaker evaluation period.
const SPEAKER_PERIOD: Duration = Duration::from_millis(500);
/// Audio level (dBov, 0 loudest) at or above which a packet counts as speech.
const SPEAKING_DBOV: f32 = -45.0;
/// How long a participant stays an active speaker after its last loud packet.
const SPEAKER_HOLD: Duration = Duration::from_millis(1200);

/// What a participant may do (from its token's grants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grants {
    /// May publish tracks.
    pub publish: bool,
    /// May receive others' tracks.
    pub subscribe: bool,
    /// A proctor: receives learners' cameras and screens (no microphones) and is invisible
    /// to learners, who never receive its tracks.
    pub proctor: bool,
}

/// Whether a subscriber with `sub` grants gets a track of `source` published by someone
/// whose grants are `publisher`.
pub fn may_consume(sub: Grants, publisher: Grants, source: Source) -> bool {
    if sub.proctor {
        source != Source::Microphone
    } else {
        !publisher.proctor
    }
}

/// A track the client says it is sending in its offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRequest {
    /// The m-line's mid in the client's offer.
    pub mid: String,
    /// What it carries.
    pub source: Source,
    /// Starts muted.
    pub muted: bool,
}

/// Description of a published track (for signaling and the room state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// Track id.
    pub id: TrackId,
    /// Publisher.
    pub participant: ParticipantId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Camera, microphone or screen.
    pub source: Source,
    /// Muted by its publisher.
    pub muted: bool,
    /// Negotiated codec name (e.g. `VP8`, `opus`).
    pub codec: String,
}

/// The answer to a `publish`.
#[derive(Debug, Clone)]
pub struct PublishAnswer {
    /// SDP answer for the client's publisher PC.
    pub sdp: String,
    /// Tracks now published from this offer.
    pub tracks: Vec<TrackInfo>,
}

/// One m-line of a server offer and what it will carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedTrack {
    /// The mid in our offer.
    pub mid: String,
    /// The producer currently feeding it (None when the publisher unpublished it).
    pub track: Option<TrackId>,
    /// Whose track it is.
    pub publisher: ParticipantId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Camera, microphone or screen.
    pub source: Source,
}

/// Why a participant was removed by the core itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    /// ICE consent lost (abrupt disconnect).
    ConsentTimeout,
    /// A transport never connected.
    ConnectTimeout,
    /// A transport failed (str0m error).
    TransportFailed,
}

/// Events for signaling.
#[derive(Debug, Clone)]
pub enum SfuEvent {
    /// Send this offer to the participant's subscriber PC.
    SubscriberOffer {
        /// To whom.
        participant: ParticipantId,
        /// The SDP offer.
        sdp: String,
        /// Mapping of every active m-line.
        tracks: Vec<OfferedTrack>,
    },
    /// A track was published.
    TrackPublished {
        /// Room name.
        room: Arc<str>,
        /// The track.
        track: TrackInfo,
    },
    /// A track was unpublished.
    TrackUnpublished {
        /// Room name.
        room: Arc<str>,
        /// Publisher.
        participant: ParticipantId,
        /// The track.
        track: TrackId,
    },
    /// A track was muted or unmuted.
    TrackMuted {
        /// Room name.
        room: Arc<str>,
        /// Publisher.
        participant: ParticipantId,
        /// The track.
        track: TrackId,
        /// New state.
        muted: bool,
    },
    /// The core removed a participant on its own (its state is already freed).
    ParticipantRemoved {
        /// Room name.
        room: Arc<str>,
        /// Who.
        participant: ParticipantId,
        /// Why.
        reason: RemovalReason,
    },
    /// The set of active speakers in a room changed (loudest first, level 0..1).
    ActiveSpeakers {
        /// Room name.
        room: Arc<str>,
        /// Speakers.
        speakers: Vec<(ParticipantId, f32)>,
    },
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    /// Index of the local port (into the shard's port list) to send from.
    pub port_idx: usize,
    /// Destination.
    pub destination: SocketAddr,
    /// Bytes.
    pub data: Vec<u8>,
}

/// Counters (monotonic) of one shard.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShardStats {
    /// Datagrams received on the media ports.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// RTP packets written to subscribers.
    pub rtp_forwarded: u64,
    /// Datagrams no transport claimed.
    pub unroutable: u64,
    /// Datagrams a transport rejected (malformed, wrong state).
    pub rejected: u64,
    /// Keyframe requests forwarded to publishers.
    pub keyframe_requests: u64,
    /// Keyframe requests swallowed by throttling.
    pub keyframe_requests_throttled: u64,
    /// Datagrams dropped by test impairment.
    pub impaired_drops: u64,
    /// ICE restarts (a transport got new local credentials).
    pub ice_restarts: u64,
    /// Bytes received on the media ports.
    pub bytes_in: u64,
    /// Bytes handed to the sockets.
    pub bytes_out: u64,
    /// NACKs received from subscribers (answered from the retransmission caches).
    pub nacks_received: u64,
    /// Datagrams the socket refused (send buffer full): set by the driver.
    pub send_drops: u64,
    /// Forwarding latency (datagram read to its fan-out handed to the kernel), packets per
    /// bucket of [`LATENCY_BUCKETS_US`] (the last bucket is +Inf): set by the driver.
    pub latency_buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of the latencies above, in microseconds.
    pub latency_sum_us: u64,
}

/// Upper bounds (µs) of the forwarding-latency histogram buckets.
pub const LATENCY_BUCKETS_US: [u64; 10] = [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

impl ShardStats {
    /// Add another shard's counters to these.
    pub fn add(&mut self, x: &ShardStats) {
        self.datagrams_in += x.datagrams_in;
        self.datagrams_out += x.datagrams_out;
        self.rtp_in += x.rtp_in;
        self.rtp_forwarded += x.rtp_forwarded;
        self.unroutable += x.unroutable;
        self.rejected += x.rejected;
        self.keyframe_requests += x.keyframe_requests;
        self.keyframe_requests_throttled += x.keyframe_requests_throttled;
        self.impaired_drops += x.impaired_drops;
        self.ice_restarts += x.ice_restarts;
        self.bytes_in += x.bytes_in;
        self.bytes_out += x.bytes_out;
        self.nacks_received += x.nacks_received;
        self.send_drops += x.send_drops;
        for (a, b) in self
            .latency_buckets
            .iter_mut()
            .zip(x.latency_buckets.iter())
        {
            *a += b;
        }
        self.latency_sum_us += x.latency_sum_us;
    }

    /// Record `packets` forwarded with latency `us`.
    pub fn observe_latency(&mut self, us: u64, packets: u64) {
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[i] += packets;
        self.latency_sum_us += us * packets;
    }
}

/// Live object counts; all zero when the shard is idle.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Rooms.
    pub rooms: usize,
    /// Participants.
    pub participants: usize,
    /// Transports (str0m instances).
    pub transports: usize,
    /// Producers.
    pub producers: usize,
    /// Consumers.
    pub consumers: usize,
    /// Routing-index entries (addresses + ufrags).
    pub routes: usize,
    /// Pending timers.
    pub timers: usize,
}

struct Room {
    /// Every transport of the room uses this local port, so one `sendmmsg` carries a
    /// whole fan-out; rooms are spread over the shard's ports instead.
    port_idx: usize,
    participants: Vec<ParticipantId>,
    producers: Vec<TrackId>,
    speakers: Vec<ParticipantId>,
}

struct Participant {
    room: Arc<str>,
    grants: Grants,
    publisher: Option<TransportId>,
    subscriber: Option<TransportId>,
    impair_loss: f32,
}

struct Producer {
    info: TrackInfo,
    room: Arc<str>,
    transport: TransportId,
    mid: Mid,
    clock_rate: u32,
    /// Subscriber transports with a consumer fed by this producer.
    consumers: Vec<TransportId>,
    last_keyframe_request: Option<Instant>,
    keyframe_pending: bool,
    /// Simulcast layers seen (empty: not simulcast).
    layers: Layers,
    /// Loudest audio level (linear 0..1) since the last active-speaker evaluation.
    peak: f32,
    /// Level reported with the speaker (decaying peak).
    level: f32,
    /// Last packet at or above the speaking threshold: a speaker stays active for
    /// `SPEAKER_HOLD` after it, so short pauses and periodic sounds do not flap.
    last_loud_at: Option<Instant>,
}

struct Consumer {
    mid: Mid,
    publisher: ParticipantId,
    source: Source,
    kind: MediaKind,
    producer: Option<TrackId>,
    /// In an accepted answer: packets may flow.
    active: bool,
    rewriter: Rewriter,
    /// Cache of publisher pt -> our pt (None: the subscriber lacks the codec).
    pt_map: Vec<(Pt, Option<Pt>)>,
    warned_codec: bool,
    /// Simulcast layer wanted and forwarded.
    sel: Selection,
    /// The msid stream of its m-line (see [`Slot::group`]).
    group: ParticipantId,
}

enum TransportKind {
    Publisher {
        by_mid: HashMap<Mid, TrackId>,
    },
    Subscriber {
        consumers: HashMap<(ParticipantId, Source), Consumer>,
        by_mid: HashMap<Mid, (ParticipantId, Source)>,
        pending_offer: Option<SdpPendingOffer>,
        renegotiate: bool,
        /// M-lines of departed publishers' consumers, to go `inactive` at the next
        /// negotiation.
        to_stop: Vec<Slot>,
        /// M-lines that went `inactive` in the offer now outstanding: free once answered.
        stopping: Vec<Slot>,
        /// Inactive m-lines (answered) that a new consumer of the same kind can take over.
        free: Vec<Slot>,
        /// The next offer restarts ICE (new ufrag/pwd), asked for by the client.
        ice_restart: bool,
    },
}

/// An m-line of a subscriber transport that no consumer uses, kept for reuse.
///
/// Why not reject it (port 0): the first m-line of the offer is the BUNDLE tag, and a
/// browser that sees its tag rejected moves the whole bundle to a new transport (Chromium
/// does; the old one's DTLS is closed). Rejected m-lines also stay in every later SDP,
/// so a long-lived subscriber's SDP grows with every departure. An `inactive` m-line stays
/// in the bundle and is taken over by the next consumer of the same kind (RFC 8829 lets
/// a transceiver whose direction went inactive be reused).
struct Slot {
    mid: Mid,
    kind: MediaKind,
    /// The m-line's msid stream (its first publisher): slots of one stream are handed to
    /// one publisher together, so the browser's audio/video sync pairs the right tracks.
    group: ParticipantId,
    /// Sequence/timestamp continuity on the m-line's SSRC carries over to the next source.
    rewriter: Rewriter,
}

struct Transport {
    participant: ParticipantId,
    rtc: Rtc,
    port_idx: usize,
    ufrag: String,
    /// The ufrag of an ICE restart we offered, routed already, taken when answered.
    next_ufrag: Option<String>,
    addrs: Vec<(u16, SocketAddr)>,
    created: Instant,
    connected: bool,
    disconnected_since: Option<Instant>,
    next_timeout: Option<Instant>,
    dirty: bool,
    kind: TransportKind,
    rng: fastrand::Rng,
    impair_loss: f32,
    /// Last cumulative NACK count per sent mid (str0m's egress stats).
    egress: HashMap<Mid, u64>,
    /// Latest fraction lost reported by this subscriber's receiver reports.
    loss: Option<f32>,
}

/// The sans-IO core of one shard.
pub struct ShardCore {
    cfg: SfuConfig,
    advertise: IpAddr,
    ports: Vec<u16>,
    port_load: Vec<u32>,
    track_ids: Arc<AtomicU64>,
    next_transport: u32,
    rooms: HashMap<Arc<str>, Room>,
    participants: HashMap<ParticipantId, Participant>,
    transports: HashMap<TransportId, Transport>,
    producers: HashMap<TrackId, Producer>,
    index: RouteIndex,
    timers: BinaryHeap<Reverse<(Instant, TransportId)>>,
    dirty: Vec<TransportId>,
    forward_buf: Vec<RtpPacket>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SfuEvent>,
    next_tick: Option<Instant>,
    next_speakers: Option<Instant>,
    stats: ShardStats,
    /// One DTLS certificate for every transport of the shard (as mediasoup has one per
    /// worker): generating an EC key per transport dominated the cost of a join.
    dtls_cert: Option<str0m::config::DtlsCert>,
}

impl ShardCore {
    /// A core owning `ports` (its share of the media port range). `track_ids` is shared
    /// by all shards so track ids are unique in the process.
    pub fn new(cfg: SfuConfig, ports: Vec<u16>, track_ids: Arc<AtomicU64>) -> Self {
        assert!(!ports.is_empty(), "a shard needs at least one port");
        ShardCore {
            advertise: cfg.advertise_ip,
            port_load: vec![0; ports.len()],
            ports,
            cfg,
            track_ids,
            next_transport: 0,
            rooms: HashMap::new(),
            participants: HashMap::new(),
            transports: HashMap::new(),
            producers: HashMap::new(),
            index: RouteIndex::default(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            forward_buf: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_tick: None,
            next_speakers: None,
            stats: ShardStats::default(),
            dtls_cert: str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate(),
        }
    }

    /// The local ports this core owns, in port-index order.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Counters.
    pub fn stats(&self) -> ShardStats {
        self.stats
    }

    /// Mean fraction lost reported by subscribers (receiver reports), if any reported.
    pub fn subscriber_loss(&self) -> Option<(f32, usize)> {
        let (sum, n) = self
            .transports
            .values()
            .filter_map(|t| t.loss)
            .fold((0.0f32, 0usize), |(s, n), l| (s + l, n + 1));
        (n > 0).then(|| (sum / n as f32, n))
    }

    /// Live object counts.
    pub fn counts(&self) -> Counts {
        let consumers = self
            .transports
            .values()
            .map(|t| match &t.kind {
                TransportKind::Subscriber { consumers, .. } => consumers.len(),
                TransportKind::Publisher { .. } => 0,
            })
            .sum();
        let (a, u) = self.index.len();
        Counts {
            rooms: self.rooms.len(),
            participants: self.participants.len(),
            transports: self.transports.len(),
            producers: self.producers.len(),
            consumers,
            routes: a + u,
            timers: self.timers.len(),
        }
    }

    // ------------------------------------------------------------------ commands

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
        let least_loaded = (0..self.ports.len())
            .min_by_key(|i| (self.port_load[*i], *i))
            .expect("at least one port");
        let port_idx = self.rooms.entry(room.clone()).or_insert_with(|| Room {
            port_idx: least_loaded,
            participants: Vec::new(),
            producers: Vec::new(),
            speakers: Vec::new(),
        });
        port_idx.participants.push(participant);
        let port_idx = port_idx.port_idx;
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
                let allowed = self.producers.get(&p).is_some_and(|pr| {
                    let owner = self
                        .participants
                        .get(&pr.info.participant)
                        .map(|x| x.grants);
                    owner.is_some_and(|o| may_consume(grants, o, pr.info.source))
                });
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
        let p = self
            .participants
            .get(&participant)
            .ok_or(SfuError::NotJoined)?;
        if !p.grants.publish {
            return Err(SfuError::Forbidden("publish"));
        }
        if offer.len() > MAX_SDP_BYTES {
            return Err(SfuError::BadRequest("sdp too large".into()));
        }
        if tracks.len() > 16 {
            return Err(SfuError::BadRequest("too many tracks".into()));
        }
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
        let mut wanted: Vec<(Mid, Source, bool, MediaKind, String, u32)> = Vec::new();
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
            let params = media
                .remote_pts()
                .first()
                .and_then(|pt| t.rtc.codec_config().params().iter().find(|p| p.pt() == *pt))
                .map(|p| (codec_name(p), p.spec().clock_rate.get()));
            let (codec, rate) = params.unwrap_or_else(|| ("unknown".into(), 90_000));
            wanted.push((mid, req.source, req.muted, kind, codec, rate));
        }
        let TransportKind::Publisher { by_mid } = &t.kind else {
            unreachable!("publisher transport has publisher kind")
        };
        let existing: Vec<(Mid, TrackId)> = by_mid.iter().map(|(m, t)| (*m, *t)).collect();
        // Unpublish what is gone or changed source.
        for (mid, track) in existing {
            let keep = wanted.iter().any(|w| {
                w.0 == mid
                    && self
                        .producers
                        .get(&track)
                        .is_some_and(|p| p.info.source == w.1)
            });
            if !keep {
                self.remove_producer(track);
            }
        }
        let mut infos = Vec::new();
        for (mid, source, muted, kind, codec, clock_rate) in wanted {
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
            self.producers.insert(
                id,
                Producer {
                    info: info.clone(),
                    room: room.clone(),
                    transport: tid,
                    mid,
                    clock_rate,
                    consumers: Vec::new(),
                    last_keyframe_request: None,
                    keyframe_pending: false,
                    layers: Layers::default(),
                    peak: 0.0,
                    level: 0.0,
                    last_loud_at: None,
                },
            );
            if let Some(r) = self.rooms.get_mut(&room) {
                r.producers.push(id);
            }
            self.events.push_back(SfuEvent::TrackPublished {
                room: room.clone(),
                track: info.clone(),
            });
            infos.push(info);
            // Every other subscriber in the room gets a consumer.
            let owner = self.participants[&participant].grants;
            let subs: Vec<TransportId> = self.rooms[&room]
                .participants
                .iter()
                .filter(|p| **p != participant)
                .filter_map(|p| self.participants.get(p))
                .filter(|p| may_consume(p.grants, owner, source))
                .filter_map(|p| p.subscriber)
                .collect();
            for s in subs {
                self.attach_consumer(id, s);
                self.negotiate(s);
            }
        }
        self.kick(tid, now);
        Ok(PublishAnswer {
            sdp: answer.to_sdp_string(),
            tracks: infos,
        })
    }

    /// The subscriber PC's answer to our last offer.
    pub fn subscriber_answer(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        answer: &str,
    ) -> Result<(), SfuError> {
        let p = self
            .participants
            .get(&participant)
            .ok_or(SfuError::NotJoined)?;
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
        let mut wake = Vec::new();
        for c in consumers.values_mut() {
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
        let p = self
            .participants
            .get(&participant)
            .ok_or(SfuError::NotJoined)?;
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
        let p = self
            .participants
            .get(&participant)
            .ok_or(SfuError::NotJoined)?;
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
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.participants.retain(|x| *x != participant);
            room.speakers.retain(|x| *x != participant);
            if room.participants.is_empty() {
                self.rooms.remove(&p.room);
            } else {
                // Everyone else drops their consumers of this participant.
                let subs: Vec<TransportId> = room
                    .participants
                    .iter()
                    .filter_map(|x| self.participants.get(x).and_then(|x| x.subscriber))
                    .collect();
                for s in subs {
                    self.stop_consumers_of(s, participant);
                    self.negotiate(s);
                }
            }
        }
        debug!(%participant, "left");
        Ok(())
    }

    // ------------------------------------------------------------------ network input

    /// One datagram arrived on local port index `port_idx` from `remote`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        port_idx: usize,
        remote: SocketAddr,
        data: &[u8],
    ) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        let Some(&port) = self.ports.get(port_idx) else {
            return;
        };
        let (tid, new_addr) = match self.index.route(port, remote, data) {
            RouteDatagramTo::Transport(t) => (t, false),
            RouteDatagramTo::NewAddress(t) => (t, true),
            RouteDatagramTo::Nowhere(why) => {
                self.stats.unroutable += 1;
                if why != Unroutable::UnknownAddress {
                    debug!(?why, "unroutable datagram");
                }
                return;
            }
        };
        let Some(t) = self.transports.get_mut(&tid) else {
            return;
        };
        if t.port_idx != port_idx {
            // A peer must use the port its candidate named.
            self.stats.unroutable += 1;
            return;
        }
        let destination = SocketAddr::new(self.advertise, port);
        let recv = match Receive::new(Protocol::Udp, remote, destination, data) {
            Ok(r) => r,
            Err(_) => {
                self.stats.rejected += 1;
                return;
            }
        };
        // str0m promises never to panic on input, and says a panic is a bug; should one
        // happen anyway, only this participant is lost, not the shard with all its rooms.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.rtc.handle_input(Input::Receive(now, recv))
        }));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.stats.rejected += 1;
                debug!(transport = tid.0, "input rejected: {e}");
                return;
            }
            Err(_) => {
                error!(
                    transport = tid.0,
                    "str0m panicked on input; dropping the participant"
                );
                let p = t.participant;
                self.remove_participant(p, RemovalReason::TransportFailed);
                return;
            }
        }
        if new_addr && t.addrs.len() < MAX_ADDRS_PER_TRANSPORT {
            t.addrs.push((port, remote));
            self.index.learn(port, remote, tid);
            self.drive(tid, now);
            return;
        }
        let queued = self.transmits.len();
        self.drive(tid, now);
        if new_addr {
            // Table full: a client that keeps changing networks (Wi-Fi, LTE, Wi-Fi...) still
            // gets its new address routed, replacing the oldest one, but only once str0m
            // answered the check (valid MESSAGE-INTEGRITY), so a stranger who guessed the
            // ufrag cannot push the peer's working address out.
            let answered = self
                .transmits
                .iter()
                .skip(queued)
                .any(|x| x.destination == remote);
            if answered && let Some(t) = self.transports.get_mut(&tid) {
                let (p, a) = t.addrs.remove(0);
                self.index.forget(p, a);
                t.addrs.push((port, remote));
                self.index.learn(port, remote, tid);
            }
        }
    }

    /// Let every transport that was written to since the last flush emit its packets.
    pub fn flush(&mut self, now: Instant) {
        while !self.dirty.is_empty() {
            let dirty = std::mem::take(&mut self.dirty);
            for tid in dirty {
                if let Some(t) = self.transports.get_mut(&tid) {
                    t.dirty = false;
                    if let Err(e) = t.rtc.handle_input(Input::Timeout(now)) {
                        debug!(transport = tid.0, "timeout input failed: {e}");
                    }
                    self.drive(tid, now);
                }
            }
        }
    }

    /// Time passes: run due transport timers and housekeeping.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, tid))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(t) = self.transports.get_mut(&tid) else {
                continue;
            };
            if t.next_timeout != Some(at) {
                continue; // stale heap entry
            }
            t.next_timeout = None;
            if let Err(e) = t.rtc.handle_input(Input::Timeout(now)) {
                debug!(transport = tid.0, "timeout input failed: {e}");
            }
            self.drive(tid, now);
        }
        if self.next_tick.is_none_or(|t| t <= now) {
            self.next_tick = Some(now + TICK);
            self.housekeeping(now);
        }
        self.flush(now);
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = self.timers.peek().map(|Reverse((at, _))| *at);
        match (t, self.next_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front();
        if t.is_some() {
            self.stats.datagrams_out += 1;
        }
        t
    }

    /// Next event for signaling.
    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    // ------------------------------------------------------------------ internals

    fn new_transport(
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
        let mut rtc = builder
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
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
                rtc,
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
                loss: None,
            },
        );
        // Drive once so the instance reports its first timeout.
        if let Some(t) = self.transports.get_mut(&tid) {
            let _ = t.rtc.handle_input(Input::Timeout(now));
        }
        self.drive(tid, now);
        tid
    }

    fn remove_transport(&mut self, tid: TransportId) {
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

    /// Give `producer` a consumer in subscriber transport `sub` (re-using a parked
    /// consumer of the same publisher and source, so the subscriber's stream continues).
    fn attach_consumer(&mut self, producer: TrackId, sub: TransportId) {
        let Some(p) = self.producers.get_mut(&producer) else {
            return;
        };
        let Some(t) = self.transports.get_mut(&sub) else {
            return;
        };
        let TransportKind::Subscriber { consumers, .. } = &mut t.kind else {
            return;
        };
        let key = (p.info.participant, p.info.source);
        let c = consumers.entry(key).or_insert_with(|| Consumer {
            mid: Mid::from(""),
            publisher: p.info.participant,
            source: p.info.source,
            kind: p.info.kind,
            producer: None,
            active: false,
            rewriter: Rewriter::new(t.rng.u16(1..0x7fff)),
            pt_map: Vec::new(),
            warned_codec: false,
            sel: Selection::default(),
            group: p.info.participant,
        });
        c.producer = Some(producer);
        c.pt_map.clear();
        c.rewriter.switch_source();
        c.sel.current = None;
        let reattached = c.active;
        if !p.consumers.contains(&sub) {
            p.consumers.push(sub);
        }
        if reattached {
            // Already negotiated (a re-publish): the new source needs a keyframe.
            p.keyframe_pending = true;
        }
    }

    fn stop_consumers_of(&mut self, sub: TransportId, publisher: ParticipantId) {
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

    fn remove_producer(&mut self, track: TrackId) {
        let Some(p) = self.producers.remove(&track) else {
            return;
        };
        if let Some(t) = self.transports.get_mut(&p.transport)
            && let TransportKind::Publisher { by_mid } = &mut t.kind
        {
            by_mid.remove(&p.mid);
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
        self.events.push_back(SfuEvent::TrackUnpublished {
            room: p.room.clone(),
            participant: p.info.participant,
            track,
        });
    }

    /// Make a new server offer for subscriber transport `tid` if something changed and
    /// no offer is outstanding.
    ///
    /// New consumers take over free (inactive, answered) m-lines of their kind before new
    /// m-lines are added; departed publishers' m-lines go `inactive` and become free once
    /// this offer is answered, so one offer never both retires and reuses an m-line (the
    /// client sees the old track end before a new one starts on that mid).
    fn negotiate(&mut self, tid: TransportId) {
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
            match take_slot(free, c.kind, &own, &busy) {
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
            sdp: offer.to_sdp_string(),
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
    fn reindex_ufrag(&mut self, tid: TransportId) {
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
        self.stats.ice_restarts += 1;
    }

    /// Ask the publisher of `producer` for a keyframe, at most once per interval.
    fn request_keyframe(&mut self, producer: TrackId, now: Instant) {
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
        let (tid, mid) = (p.transport, p.mid);
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
    fn request_layer_keyframe(&mut self, producer: TrackId, rid: Rid, now: Instant) {
        let interval = self.cfg.keyframe_request_interval;
        let Some(p) = self.producers.get_mut(&producer) else {
            return;
        };
        if !p.layers.may_request_keyframe(rid, interval, now) {
            self.stats.keyframe_requests_throttled += 1;
            return;
        }
        let (tid, mid) = (p.transport, p.mid);
        if let Some(t) = self.transports.get_mut(&tid)
            && let Some(rx) = t.rtc.direct_api().stream_rx_by_mid(mid, Some(rid))
        {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            self.stats.keyframe_requests += 1;
            self.mark_dirty(tid);
        }
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

    /// After an SDP exchange: the browser starts ICE checks the moment it has our SDP, often
    /// before we know its credentials; str0m queues those requests and answers one per
    /// timeout. Answer them all now instead of one per timer tick, so ICE (and DTLS, which
    /// waits for nomination) is not delayed by hundreds of milliseconds.
    fn kick(&mut self, tid: TransportId, now: Instant) {
        for _ in 0..MAX_ADDRS_PER_TRANSPORT * 2 {
            let Some(t) = self.transports.get_mut(&tid) else {
                return;
            };
            if t.rtc.handle_input(Input::Timeout(now)).is_err() {
                break;
            }
            self.drive(tid, now);
        }
    }

    fn mark_dirty(&mut self, tid: TransportId) {
        if let Some(t) = self.transports.get_mut(&tid)
            && !t.dirty
        {
            t.dirty = true;
            self.dirty.push(tid);
        }
    }

    /// Drain one transport's output: transmits, events, next timeout. Forwards the RTP
    /// packets it produced.
    fn drive(&mut self, tid: TransportId, now: Instant) {
        let mut forward = std::mem::take(&mut self.forward_buf);
        let mut keyframe_requests: Vec<Mid> = Vec::new();
        let mut failed = false;
        {
            let Some(t) = self.transports.get_mut(&tid) else {
                self.forward_buf = forward;
                return;
            };
            loop {
                let out =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.rtc.poll_output()));
                let Ok(out) = out else {
                    error!(
                        transport = tid.0,
                        "str0m panicked in poll_output; dropping the participant"
                    );
                    failed = true;
                    break;
                };
                match out {
                    Ok(Output::Timeout(at)) => {
                        if t.next_timeout != Some(at) {
                            t.next_timeout = Some(at);
                            self.timers.push(Reverse((at, tid)));
                        }
                        break;
                    }
                    Ok(Output::Transmit(tx)) => {
                        let data: Vec<u8> = tx.contents.into();
                        // Test-only impairment: drop a share of SRTP towards this peer.
                        if t.impair_loss > 0.0
                            && data.first().is_some_and(|b| (128..192).contains(b))
                            && t.rng.f32() < t.impair_loss
                        {
                            self.stats.impaired_drops += 1;
                            continue;
                        }
                        self.stats.bytes_out += data.len() as u64;
                        self.transmits.push_back(Transmit {
                            port_idx: t.port_idx,
                            destination: tx.destination,
                            data,
                        });
                    }
                    Ok(Output::Event(ev)) => match ev {
                        Event::RtpPacket(pkt) => forward.push(pkt),
                        Event::KeyframeRequest(req) => keyframe_requests.push(req.mid),
                        Event::IceConnectionStateChange(s) => {
                            debug!(transport = tid.0, ?s, "ice state");
                            match s {
                                IceConnectionState::Disconnected => {
                                    t.disconnected_since.get_or_insert(now);
                                }
                                IceConnectionState::Connected | IceConnectionState::Completed => {
                                    t.disconnected_since = None;
                                }
                                _ => {}
                            }
                        }
                        Event::Connected => {
                            t.connected = true;
                            info!(transport = tid.0, participant = %t.participant, "media connected");
                        }
                        Event::Closed => {
                            warn!(transport = tid.0, participant = %t.participant, "transport closed by its peer (DTLS close_notify)");
                            failed = true;
                        }
                        Event::MediaEgressStats(st) => {
                            let last = t.egress.entry(st.mid).or_insert(0);
                            self.stats.nacks_received += st.nacks.saturating_sub(*last);
                            *last = st.nacks;
                            if let Some(l) = st.loss {
                                t.loss = Some(l);
                            }
                        }
                        _ => {}
                    },
                    Err(e) => {
                        warn!(transport = tid.0, "transport failed: {e}");
                        failed = true;
                        break;
                    }
                }
            }
        }
        if !forward.is_empty() {
            self.stats.rtp_in += forward.len() as u64;
            for pkt in forward.drain(..) {
                self.forward(tid, pkt, now);
            }
        }
        self.forward_buf = forward;
        for mid in keyframe_requests {
            self.on_keyframe_request(tid, mid, now);
        }
        if failed && let Some(p) = self.transports.get(&tid).map(|t| t.participant) {
            self.remove_participant(p, RemovalReason::TransportFailed);
        }
    }

    /// Forward one RTP packet from publisher transport `from` to every consumer.
    fn forward(&mut self, from: TransportId, pkt: RtpPacket, now: Instant) {
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
            .find(|p| p.pt() == in_pt)
            .copied();
        let Some(in_params) = in_params else {
            return;
        };
        let Some(p) = self.producers.get_mut(&track) else {
            return;
        };
        if let Some(level) = pkt.header.ext_vals.audio_level {
            // dBov (0 loudest, -127 silence); decided over the whole window, not sampled.
            let dbov = f32::from(level.min(0));
            let lin = 10f32.powf(dbov / 20.0);
            p.peak = p.peak.max(lin);
            if dbov >= SPEAKING_DBOV {
                p.last_loud_at = Some(now);
            }
        }
        let is_video = p.info.kind == MediaKind::Video;
        let clock_rate = p.clock_rate;
        // Simulcast: account the layer; whether this packet starts a key frame decides
        // where consumers may switch layers.
        let keyframe = match rid {
            Some(r) => {
                p.layers.observe(r, pkt.payload.len(), now);
                is_video && simulcast::is_keyframe_start(in_params.spec().codec, &pkt.payload)
            }
            None => false,
        };
        let mut want_keyframe = false;
        let mut ext = pkt.header.ext_vals.clone();
        ext.mid = None;
        ext.rid = None;
        ext.rid_repair = None;
        ext.transport_cc = None;
        let wallclock = pkt.timestamp;
        let key = (p.info.participant, p.info.source);
        for &sub in &p.consumers {
            let Some(st) = self.transports.get_mut(&sub) else {
                continue;
            };
            let TransportKind::Subscriber { consumers, .. } = &mut st.kind else {
                continue;
            };
            let Some(c) = consumers.get_mut(&key) else {
                continue;
            };
            if !c.active || c.producer != Some(track) {
                continue;
            }
            if let Some(r) = rid {
                match c.sel.decide(r, keyframe, p.layers.pick(c.sel.quality)) {
                    Decision::Forward => {}
                    Decision::Drop => continue,
                    Decision::DropWantKeyframe => {
                        want_keyframe = true;
                        continue;
                    }
                }
            }
            let out_pt = match c.pt_map.iter().find(|(i, _)| *i == in_pt) {
                Some((_, o)) => *o,
                None => {
                    let o = st
                        .rtc
                        .codec_config()
                        .match_params(in_params)
                        .map(|p| p.pt());
                    c.pt_map.push((in_pt, o));
                    o
                }
            };
            let Some(out_pt) = out_pt else {
                if !c.warned_codec {
                    c.warned_codec = true;
                    info!(subscriber = %st.participant, "subscriber lacks codec {:?}; track not forwarded", in_params.spec().codec);
                }
                continue;
            };
            let Some(rw) =
                c.rewriter
                    .rewrite(*ssrc, *pkt.seq_no, pkt.header.timestamp, clock_rate, now)
            else {
                continue;
            };
            let mut api = st.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(c.mid, None) else {
                continue;
            };
            let write = RtpWrite::new(
                out_pt,
                SeqNo::from(rw.seq),
                rw.ts,
                wallclock,
                pkt.payload.clone(),
            )
            .marker(pkt.header.marker)
            .ext_vals(ext.clone())
            .nackable(is_video);
            tx.write_rtp(write);
            self.stats.rtp_forwarded += 1;
            if !st.dirty {
                st.dirty = true;
                self.dirty.push(sub);
            }
        }
        if want_keyframe && let Some(r) = rid {
            self.request_layer_keyframe(track, r, now);
        }
    }

    fn on_keyframe_request(&mut self, sub: TransportId, mid: Mid, now: Instant) {
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

    fn remove_participant(&mut self, participant: ParticipantId, reason: RemovalReason) {
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

    fn housekeeping(&mut self, now: Instant) {
        // Coalesced keyframe requests whose throttle window has passed.
        let pending: Vec<TrackId> = self
            .producers
            .values()
            .filter(|p| p.keyframe_pending)
            .map(|p| p.info.id)
            .collect();
        for p in pending {
            self.request_keyframe(p, now);
        }
        // Consent / connect timeouts.
        let mut dead = Vec::new();
        for t in self.transports.values() {
            if let Some(since) = t.disconnected_since {
                if now.saturating_duration_since(since) >= self.cfg.consent_timeout {
                    dead.push((t.participant, RemovalReason::ConsentTimeout));
                }
            } else if !t.connected
                && now.saturating_duration_since(t.created) >= self.cfg.connect_timeout
            {
                // Only a transport that had something to connect: a subscriber that
                // never got an offer is idle, not dead.
                let idle_subscriber = matches!(&t.kind, TransportKind::Subscriber { consumers, .. } if consumers.is_empty());
                if !idle_subscriber {
                    dead.push((t.participant, RemovalReason::ConnectTimeout));
                }
            }
        }
        for (p, why) in dead {
            self.remove_participant(p, why);
        }
        // Active speakers.
        if self.next_speakers.is_none_or(|t| t <= now) {
            self.next_speakers = Some(now + SPEAKER_PERIOD);
            self.update_speakers(now);
        }
    }

    fn update_speakers(&mut self, now: Instant) {
        for (name, room) in self.rooms.iter_mut() {
            let mut speaking: Vec<(ParticipantId, f32)> = Vec::new();
            for id in &room.producers {
                let Some(p) = self.producers.get_mut(id) else {
                    continue;
                };
                if p.info.kind != MediaKind::Audio {
                    continue;
                }
                p.level = p.peak.max(p.level * 0.5);
                p.peak = 0.0;
                let active = !p.info.muted
                    && p.last_loud_at
                        .is_some_and(|at| now.saturating_duration_since(at) < SPEAKER_HOLD);
                if active {
                    speaking.push((p.info.participant, p.level.min(1.0)));
                }
            }
            speaking.sort_by(|a, b| b.1.total_cmp(&a.1));
            let mut ids: Vec<ParticipantId> = speaking.iter().map(|s| s.0).collect();
            let mut old = room.speakers.clone();
            // The set (not its order, which follows momentary loudness) decides whether to tell.
            ids.sort();
            old.sort();
            if ids != old {
                room.speakers = speaking.iter().map(|s| s.0).collect();
                self.events.push_back(SfuEvent::ActiveSpeakers {
                    room: name.clone(),
                    speakers: speaking,
                });
            }
        }
    }
}

fn codec_name(p: &PayloadParams) -> String {
    format!("{}", p.spec().codec)
}

/// Take a free m-line of `kind` for a new consumer. Preferred: one of the msid stream the
/// publisher's other consumers already use (`own`), then one of a stream no live consumer
/// uses (`busy` lists the streams in use), then the oldest free one.
fn take_slot(
    free: &mut Vec<Slot>,
    kind: MediaKind,
    own: &[ParticipantId],
    busy: &[ParticipantId],
) -> Option<Slot> {
    let pos = free
        .iter()
        .position(|s| s.kind == kind && own.contains(&s.group))
        .or_else(|| {
            free.iter()
                .position(|s| s.kind == kind && !busy.contains(&s.group))
        })
        .or_else(|| free.iter().position(|s| s.kind == kind))?;
    Some(free.remove(pos))
}
