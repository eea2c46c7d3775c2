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

mod adaptive;
mod allocator;
mod api;
pub mod av1_dd;
pub mod av1_svc;
mod bandwidth;
mod consumer;
mod datapath;
mod dynacast;
mod forward;
pub mod frame_size;
mod loss_estimate;
mod negotiate;
pub mod red;
pub mod rewrite;
pub mod route;
mod sdp_text;
mod session;
pub mod simulcast;
mod span;
mod speakers;
mod stats;
pub mod stun;
pub mod svc;
mod vp8_ids;
pub mod vp9;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use str0m::Rtc;
use str0m::change::SdpPendingOffer;
use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::RtpPacket;

use tracing::debug;

use crate::config::SfuConfig;
use crate::ids::{ParticipantId, Source, TrackId, TransportId};
use rewrite::Rewriter;
use route::RouteIndex;
use simulcast::{Layers, Selection};

pub use api::{
    Grants, LayerActive, OfferedTrack, PublishAnswer, RemovalReason, SfuEvent, TrackInfo,
    TrackRequest, TrackView, Transmit, may_consume,
};
pub use span::PeerMsg;
pub use stats::{Counts, LATENCY_BUCKETS_US, ShardStats};

/// Largest SDP we accept (an offer with many m-lines is a few KiB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Housekeeping period: keyframe-request coalescing, consent checks, active speakers.
const TICK: Duration = Duration::from_millis(100);

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

/// Where a producer's packets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A publisher transport of this shard, and the m-line in it.
    Local(TransportId, Mid),
    /// A mirror: the producer lives on that shard, which relays its packets (`span.rs`).
    Remote(usize),
}

struct Producer {
    info: TrackInfo,
    room: Arc<str>,
    origin: Origin,
    /// The publisher's grants (who may consume it: [`may_consume`]).
    owner: Grants,
    clock_rate: u32,
    /// The codec the publisher sends (the first of our answer), as the publisher
    /// transport negotiated it; None when the m-line has no codec we forward.
    params: Option<PayloadParams>,
    /// Subscriber transports with a consumer fed by this producer.
    consumers: Vec<TransportId>,
    last_keyframe_request: Option<Instant>,
    keyframe_pending: bool,
    /// Simulcast layers seen (empty: not simulcast).
    layers: Layers,
    /// SVC layers seen in a VP9 or AV1 stream (`svc.rs`; not scalable until two layers
    /// were seen).
    svc: svc::SvcLayers,
    /// An AV1 stream's dependency descriptor state (`av1_svc.rs`).
    av1: av1_svc::Av1Stream,
    /// Loudest audio level (linear 0..1) since the last active-speaker evaluation.
    peak: f32,
    /// Level reported with the speaker (decaying peak).
    level: f32,
    /// Last packet at or above the speaking threshold: a speaker stays active for
    /// `SPEAKER_HOLD` after it, so short pauses and periodic sounds do not flap.
    last_loud_at: Option<Instant>,
    /// Incoming bitrate (all layers), for the allocator.
    rate: RateMeter,
    /// Which of its layers the publisher was told to encode (`dynacast.rs`).
    dynacast: dynacast::Dynacast,
    /// A local producer of a spanning room: what each other shard's subscribers want of
    /// it, as that shard last reported (`span.rs`; no entry: nothing).
    shard_wants: Vec<(usize, dynacast::LayerWant)>,
    /// A local producer of a spanning room: the layers last declared to its mirrors.
    declared: Vec<(Rid, Option<(u32, u32)>)>,
    /// A mirror: what this shard's subscribers want of it, as last reported to the
    /// producer's shard (None: not yet).
    reported_want: Option<dynacast::LayerWant>,
    /// The loss its publisher's link had (our receiver reports; the highest of its layers
    /// in the last stats round): subtracted from what its subscribers report, so a gap
    /// the publisher left does not read as a subscriber's congestion (`loss_estimate.rs`).
    upstream_loss: UpstreamLoss,
}

/// A producer's upstream loss, per stats round (all of a transport's layers report at
/// the same instant).
#[derive(Debug, Default, Clone, Copy)]
struct UpstreamLoss {
    round: Option<Instant>,
    loss: f32,
}

impl UpstreamLoss {
    fn observe(&mut self, round: Instant, loss: f32) {
        if self.round == Some(round) {
            self.loss = self.loss.max(loss);
        } else {
            self.round = Some(round);
            self.loss = loss;
        }
    }
}

impl Producer {
    fn new(
        info: TrackInfo,
        room: Arc<str>,
        origin: Origin,
        owner: Grants,
        clock_rate: u32,
        params: Option<PayloadParams>,
    ) -> Self {
        Producer {
            info,
            room,
            origin,
            owner,
            clock_rate,
            params,
            consumers: Vec::new(),
            last_keyframe_request: None,
            keyframe_pending: false,
            layers: Layers::default(),
            svc: Default::default(),
            av1: Default::default(),
            peak: 0.0,
            level: 0.0,
            last_loud_at: None,
            rate: RateMeter::default(),
            dynacast: Default::default(),
            shard_wants: Vec::new(),
            declared: Vec::new(),
            reported_want: None,
            upstream_loss: UpstreamLoss::default(),
        }
    }
}

impl Producer {
    /// Account one incoming packet: audio level for the speakers, simulcast or SVC layer
    /// and rate for layer ranking and the allocator. Run where the packet is fanned out (a
    /// mirror keeps its own figures from the relayed packets).
    fn observe(&mut self, pkt: &consumer::Incoming, rtp: &RtpPacket, now: Instant) {
        if let Some(level) = rtp.header.ext_vals.audio_level {
            // dBov (0 loudest, -127 silence); decided over the whole window, not sampled.
            let dbov = f32::from(level.min(0));
            let lin = 10f32.powf(dbov / 20.0);
            self.peak = self.peak.max(lin);
            if dbov >= speakers::SPEAKING_DBOV {
                self.last_loud_at = Some(now);
            }
        }
        if let Some(r) = pkt.rid {
            self.layers.observe(r, rtp.payload.len(), now);
            if pkt.keyframe {
                // Layer sizes for adaptive stream (a key frame's first packet says it).
                match frame_size::frame_size(pkt.in_params.spec().codec, &rtp.payload) {
                    Ok(Some(size)) => self.layers.observe_size(r, size),
                    Ok(None) => {}
                    Err(e) => {
                        debug!(track = %self.info.id, rid = %r, "layer size unreadable: {e}")
                    }
                }
            }
        }
        // VP9 or AV1 SVC (one stream, no RID): the layers and the key pictures' declared
        // spatial layers feed the SVC ladder.
        if let Some(f) = pkt.svc.filter(|_| pkt.rid.is_none()) {
            if let Some(n) = f.declares_spatial {
                self.svc.declare_spatial(n, now);
            }
            self.svc.observe(f.sid, f.tid, rtp.payload.len(), now);
        }
        self.rate.add(rtp.payload.len(), now);
    }
}

/// Bits per second over fixed windows, for the allocator (which needs what a track costs).
#[derive(Debug, Default)]
struct RateMeter {
    window_start: Option<Instant>,
    window_bytes: u64,
    bps: u64,
}

impl RateMeter {
    const WINDOW: Duration = Duration::from_millis(1000);

    fn add(&mut self, bytes: usize, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= Self::WINDOW {
            self.bps = self.window_bytes * 8 * 1_000_000 / (elapsed.as_micros() as u64).max(1);
            self.window_bytes = 0;
            self.window_start = Some(now);
        }
        self.window_bytes += bytes as u64;
    }
}

/// A consumer's payload type for a producer's codec, and its RED payload type when the
/// subscriber accepted RED for it.
type OutPt = (Pt, Option<Pt>);

struct Consumer {
    mid: Mid,
    publisher: ParticipantId,
    source: Source,
    kind: MediaKind,
    producer: Option<TrackId>,
    /// In an accepted answer: packets may flow.
    active: bool,
    rewriter: Rewriter,
    /// Cache of publisher (primary) pt -> our pt and our RED pt for it (None: the
    /// subscriber lacks the codec).
    pt_map: Vec<(Pt, Option<OutPt>)>,
    /// Its m-line's answer accepted `red`: a publisher's RED is forwarded as is, else
    /// stripped to the primary (`red.rs`).
    red_ok: bool,
    /// The codec of the producer feeding it (or that last fed it): its m-line offers only
    /// this codec, its RTX and its RED (see `negotiate`).
    codec: Option<PayloadParams>,
    warned_codec: bool,
    /// Simulcast layer wanted and forwarded (`sel.quality` also caps SVC layers).
    sel: Selection,
    /// SVC layers forwarded (`svc.rs`).
    svc: svc::SvcSelection,
    /// The msid stream of its m-line (see [`Slot::group`]).
    group: ParticipantId,
    /// What the stream allocator gives it (`allocator.rs`); `Layer(usize::MAX)` until the
    /// subscriber's transport has an estimate: whatever the subscriber asked for.
    target: allocator::Target,
    /// No move up before this (`allocator::hold_after`).
    hold_until: Option<Instant>,
    /// Since when its lowest layer has not fit its subscriber's estimate.
    short_since: Option<Instant>,
    /// Its last move up, and how many moves up in a row were undone soon after (each
    /// doubles the hold after the next move down, at most 8 x).
    last_up: Option<Instant>,
    failed_ups: u32,
    /// After a pause (video without simulcast): forward from the next key frame on.
    await_keyframe: bool,
    /// The allocator moved it down because its subscriber's link is congested: stop the
    /// simulcast layer it is on at once if that is above the new one (`consumer.rs`).
    hard_down: bool,
    /// The outgoing stream (by SSRC) whose retransmission cache and pacing were set up
    /// (`Consumer::write`); None until the first packet.
    tx_configured: Option<str0m::rtp::Ssrc>,
    /// How the subscriber displays it (adaptive stream; None: never reported, so shown,
    /// at any size).
    view: Option<TrackView>,
    /// VP8 picture-ID continuity across the sources it forwards (`vp8_ids.rs`).
    vp8_ids: vp8_ids::Vp8Ids,
}

impl Consumer {
    /// Its subscriber said nobody sees it (tab hidden, off-screen, no element).
    fn hidden(&self) -> bool {
        self.view.is_some_and(|v| !v.visible)
    }
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
    /// Boxed: str0m's `Rtc` is tens of KiB, and inline it made every slot of the
    /// transports map (and its growth slack) that size, kept after everyone left.
    rtc: Box<Rtc>,
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
    /// Last cumulative counts per sent mid (str0m's egress stats).
    egress: HashMap<Mid, EgressSeen>,
    /// The default, loss-based downlink estimate (subscriber transports, without `--bwe`;
    /// `loss_estimate.rs`); feeds `estimate` once it caps.
    loss_estimate: loss_estimate::LossEstimate,
    /// Latest fraction lost reported by this subscriber's receiver reports.
    loss: Option<f32>,
    /// Downlink estimate the allocator spends (subscriber transports), bits per second:
    /// str0m's send-side estimate with `--bwe`, else the loss-based one once a subscriber
    /// showed congestion. None: not allocated (consumers get what was asked for).
    estimate: Option<u64>,
    /// The media path broke (ICE disconnected or restarted) and has not come back yet.
    ice_interrupted: bool,
}

/// What str0m's egress stats said last for one sent mid (its counters are cumulative).
#[derive(Debug, Default, Clone, Copy)]
struct EgressSeen {
    nacks: u64,
    bytes: u64,
    packets: u64,
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
    next_allocation: Option<Instant>,
    stats: ShardStats,
    /// This shard's index (see `span.rs`).
    shard_index: usize,
    /// Rooms that span shards: the other shards hosting each (`span.rs`).
    spans: HashMap<Arc<str>, Vec<usize>>,
    /// Messages for other shards, drained by the driver ([`ShardCore::poll_peer`]).
    peer_out: VecDeque<(usize, PeerMsg)>,
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
            next_allocation: None,
            stats: ShardStats::default(),
            shard_index: 0,
            spans: HashMap::new(),
            peer_out: VecDeque::new(),
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
}

/// Capacity a container keeps however empty it gets: below this, shrinking is not worth
/// a reallocation.
const COMPACT_FLOOR: usize = 16;

/// Shrinks a map to twice its length once it uses a quarter of its capacity or less.
///
/// Why: a hash map (and a vector) never gives back capacity on its own; after a 200-person
/// exam the shard's maps kept room for 200 at every size (20 MiB of live heap on an
/// idle node, measured with heaptrack and jemalloc's `stats.allocated` after the soak in
/// BENCHMARKS.md). The quarter/twice hysteresis makes each shrink O(len) paid once per
/// halving, so a room that fills and empties does not rehash on every tick.
pub(crate) fn compact_map<K: Eq + std::hash::Hash, V>(m: &mut HashMap<K, V>) {
    if m.capacity() > COMPACT_FLOOR && m.len() <= m.capacity() / 4 {
        m.shrink_to((m.len() * 2).max(COMPACT_FLOOR));
    }
}

/// [`compact_map`] for a vector.
pub(crate) fn compact_vec<T>(v: &mut Vec<T>) {
    if v.capacity() > COMPACT_FLOOR && v.len() <= v.capacity() / 4 {
        v.shrink_to((v.len() * 2).max(COMPACT_FLOOR));
    }
}

/// [`compact_map`] for a double-ended queue.
pub(crate) fn compact_deque<T>(v: &mut VecDeque<T>) {
    if v.capacity() > COMPACT_FLOOR && v.len() <= v.capacity() / 4 {
        v.shrink_to((v.len() * 2).max(COMPACT_FLOOR));
    }
}

impl ShardCore {
    /// Gives back capacity the shard's containers no longer use (see [`compact_map`]).
    /// Called every housekeeping tick; costs a few comparisons when nothing shrinks.
    pub(super) fn compact(&mut self) {
        compact_map(&mut self.rooms);
        compact_map(&mut self.participants);
        compact_map(&mut self.transports);
        compact_map(&mut self.producers);
        compact_map(&mut self.spans);
        self.index.compact();
        if self.timers.capacity() > COMPACT_FLOOR && self.timers.len() <= self.timers.capacity() / 4
        {
            self.timers
                .shrink_to((self.timers.len() * 2).max(COMPACT_FLOOR));
        }
        // Per-turn buffers are empty between turns whatever the load, so they are only
        // shrunk once the shard has nobody left (else they would regrow every turn).
        if self.transports.is_empty() {
            compact_vec(&mut self.dirty);
            compact_vec(&mut self.forward_buf);
            compact_deque(&mut self.transmits);
            compact_deque(&mut self.events);
            compact_deque(&mut self.peer_out);
        }
    }

    /// No transport on this shard (its per-turn buffers may be given back).
    pub fn is_idle(&self) -> bool {
        self.transports.is_empty()
    }

    /// Capacity of the shard's largest containers, for tests of [`ShardCore::compact`].
    pub fn capacities(&self) -> (usize, usize, usize, usize) {
        (
            self.transports.capacity(),
            self.producers.capacity(),
            self.participants.capacity(),
            self.transmits.capacity(),
        )
    }
}
