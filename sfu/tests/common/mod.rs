//! A deterministic harness for the media core: str0m client peers (publishers and
//! subscribers, full ICE/DTLS/SRTP) and one `ShardCore`, joined by a simulated network
//! with seeded loss, jitter and reordering, on a virtual clock that jumps to the next
//! event. No sockets, no threads, no sleeping: a failing seed replays exactly.
//!
//! One file on purpose: every test file includes it as `mod common`, and the simulated
//! network, the clients and their media writers share one `Sim` state machine. Media
//! sources that several test files drive live beside it (`layered.rs`).

#![allow(dead_code, missing_docs)]

pub mod layered;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use sfu::core::{Grants, RemovalReason, SfuEvent, ShardCore, TrackRequest};
use sfu::placement::{Placement, Span};
use sfu::{ParticipantId, SfuConfig, Source};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, KeyframeRequestKind, MediaKind, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// A learner's grants: publishes and subscribes.
pub const BOTH: Grants = Grants {
    publish: true,
    subscribe: true,
    proctor: false,
};

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const PORTS: [u16; 2] = [40000, 40001];

/// The media ports of shard `i` (shard 0 owns [`PORTS`]).
pub fn shard_ports(i: usize) -> Vec<u16> {
    PORTS.iter().map(|p| p + 2 * i as u16).collect()
}

/// Which shard, and which of its ports, owns media port `port`.
fn port_owner(port: u16, shards: usize) -> Option<(usize, usize)> {
    let off = usize::from(port.checked_sub(PORTS[0])?);
    let (shard, idx) = (off / 2, off % 2);
    (shard < shards).then_some((shard, idx))
}

/// Impairment of one direction of one client's link.
#[derive(Debug, Clone, Copy, Default)]
pub struct Link {
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Base one-way delay.
    pub delay: Duration,
    /// Uniform extra delay 0..jitter (reorders when larger than the packet spacing).
    pub jitter: Duration,
    /// A bottleneck: capacity in bits per second (0: none). Datagrams are serialized at
    /// this rate behind each other (a token bucket with a drop-tail queue), as a home
    /// router's downlink does.
    pub rate_bps: u64,
    /// The bottleneck's queue, as the longest wait it holds: a datagram that would wait
    /// longer is dropped.
    pub queue: Duration,
}

/// What one direction's bottleneck holds (see [`Link::rate_bps`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Queue {
    /// When the bottleneck is free to send the next datagram.
    pub free_at: Option<Instant>,
    /// Datagrams dropped at the full queue.
    pub dropped: usize,
}

/// A received RTP packet as a client saw it.
#[derive(Debug, Clone)]
pub struct Got {
    pub mid: Mid,
    pub ssrc: u32,
    pub seq: u64,
    pub ts: u32,
    pub payload: Vec<u8>,
    pub at: Instant,
    pub pt: u8,
    pub marker: bool,
    /// The AV1 dependency descriptor it carried (clients joined with `join_av1`).
    pub dd: Option<Vec<u8>>,
}

pub struct Client {
    pub id: ParticipantId,
    pub addr: SocketAddr,
    pub pub_rtc: Option<Rtc>,
    pub sub_rtc: Option<Rtc>,
    pub pub_pending: Option<SdpPendingOffer>,
    pub up: Link,
    pub down: Link,
    pub up_queue: Queue,
    pub down_queue: Queue,
    pub received: Vec<Got>,
    pub keyframe_requests: usize,
    /// Every key-frame request the publisher PC got: (m-line, simulcast layer), in order.
    pub keyframe_requests_on: Vec<(Mid, Option<Rid>)>,
    pub offers: usize,
    pub offer_tracks: Vec<sfu::OfferedTrack>,
    pub connected_pub: bool,
    pub connected_sub: bool,
    /// Stop talking entirely (abrupt disconnect).
    pub silent: bool,
    /// Subscriber PC supports only H264 video (and Opus): a browser without VP8.
    pub h264_only: bool,
    /// Both PCs offer RED for Opus (`red/48000/2`), as Chrome does.
    pub red: bool,
    /// The PCs know only VP9 video (and Opus), and the dependency descriptor extension: it
    /// publishes VP9.
    pub vp9: bool,
    /// The PCs know only AV1 video (and Opus), with the dependency descriptor extension
    /// (as Chromium offers it): it publishes AV1.
    pub av1: bool,
    pub pub_mids: Vec<(Mid, MediaKind, Source)>,
    /// Last sequence number written per (m-line, simulcast layer): one RTP stream each.
    pub seq: HashMap<(Mid, Option<Rid>), u64>,
    /// Leave server offers unanswered (a client whose answer never arrives).
    pub hold_answers: bool,
    /// Every subscriber offer received, in order (SDP text).
    pub offer_sdps: Vec<String>,
    /// Local ports that no longer work (the client moved to another network): datagrams
    /// to or from them are lost.
    pub dead_ports: Vec<u16>,
}

impl Client {
    /// Every published m-line as a track request (a full re-publish of the same tracks).
    fn track_requests(&self) -> Vec<TrackRequest> {
        self.pub_mids
            .iter()
            .map(|(mid, _, source)| TrackRequest {
                mid: mid.to_string(),
                source: *source,
                muted: false,
            })
            .collect()
    }
}

struct InFlight {
    to_server: bool,
    client: usize,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

pub struct Sim {
    pub now: Instant,
    pub start: Instant,
    /// The shards' cores (one unless built with [`Sim::with_shards`]); shard `i` owns
    /// media ports [`shard_ports`]`(i)`.
    pub cores: Vec<ShardCore>,
    /// Where participants live (the driver's rules: `sfu::placement`).
    pub placement: Placement,
    pub clients: Vec<Client>,
    pub events: Vec<SfuEvent>,
    rng: fastrand::Rng,
    flight: BinaryHeap<Reverse<(Instant, u64)>>,
    packets: HashMap<u64, InFlight>,
    next_pkt: u64,
    room: String,
    pending_h264_only: Option<usize>,
    pending_red: Option<usize>,
    pending_vp9: Option<usize>,
    pending_av1: Option<usize>,
}

pub fn config() -> SfuConfig {
    SfuConfig {
        advertise_ip: IpAddr::V4(SERVER_IP),
        consent_timeout: Duration::from_secs(10),
        ..SfuConfig::default()
    }
}

fn client_rtc(now: Instant, addr: SocketAddr) -> Rtc {
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
    rtc
}

/// The codecs a client's PCs know (see the `join_*` constructors).
#[derive(Clone, Copy)]
struct PeerKind {
    h264_only: bool,
    red: bool,
    vp9: bool,
    av1: bool,
}

impl Client {
    fn peer_kind(&self) -> PeerKind {
        PeerKind {
            h264_only: self.h264_only,
            red: self.red,
            vp9: self.vp9,
            av1: self.av1,
        }
    }
}

/// A client PC as its client was configured (H264-only or the default codecs).
fn peer_rtc(kind: PeerKind, now: Instant, addr: SocketAddr) -> Rtc {
    let PeerKind {
        h264_only,
        red,
        vp9,
        av1,
    } = kind;
    if h264_only {
        h264_rtc(now, addr)
    } else if av1 {
        // The dependency descriptor at Chromium's id (13), not the server's (12).
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_av1(true)
            .set_extension(13, sfu::core::av1_svc::extension())
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        rtc
    } else if vp9 {
        // With the dependency descriptor, as Chromium offers it on every video m-line.
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp9(true)
            .set_extension(13, sfu::core::av1_svc::extension())
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        rtc
    } else if red {
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .enable_opus(true, true)
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        rtc
    } else {
        client_rtc(now, addr)
    }
}

/// The peer connections of every client still talking (not `silent`).
fn live_rtcs(clients: &mut [Client]) -> impl Iterator<Item = &mut Rtc> {
    clients.iter_mut().filter(|c| !c.silent).flat_map(|c| {
        [c.pub_rtc.as_mut(), c.sub_rtc.as_mut()]
            .into_iter()
            .flatten()
    })
}

/// A client PC that knows only Opus and H264 (publishes H264, cannot receive VP8).
fn h264_rtc(now: Instant, addr: SocketAddr) -> Rtc {
    let mut rtc = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_h264(true)
        .build(now);
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
    rtc
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        Self::with_config(seed, config())
    }

    pub fn with_config(seed: u64, cfg: SfuConfig) -> Sim {
        Self::with_shards(seed, cfg, 1)
    }

    /// A simulation of `n` shards, placed and spanning by the driver's rules.
    pub fn with_shards(seed: u64, cfg: SfuConfig, n: usize) -> Sim {
        let now = Instant::now();
        let ids = Arc::new(AtomicU64::new(0));
        let span_after = cfg.room_span_after;
        let cores = (0..n)
            .map(|i| {
                let mut c = ShardCore::new(cfg.clone(), shard_ports(i), ids.clone());
                c.set_shard_index(i);
                c
            })
            .collect();
        Sim {
            now,
            start: now,
            cores,
            placement: Placement::new(n, span_after),
            clients: Vec::new(),
            events: Vec::new(),
            rng: fastrand::Rng::with_seed(seed),
            flight: BinaryHeap::new(),
            packets: HashMap::new(),
            next_pkt: 0,
            room: "room1".into(),
            pending_h264_only: None,
            pending_red: None,
            pending_vp9: None,
            pending_av1: None,
        }
    }

    /// Add a participant whose PCs lack VP8 (H264 and Opus only): it publishes H264.
    pub fn join_h264_only(&mut self, grants: Grants) -> usize {
        // Marked before the join: the first offer may come from `join` itself.
        self.pending_h264_only = Some(self.clients.len());
        self.join(grants)
    }

    /// Add a participant whose PCs know only VP9 video: it publishes VP9 (write its
    /// payloads, descriptor included, with `send_rtp`).
    pub fn join_vp9(&mut self, grants: Grants) -> usize {
        self.pending_vp9 = Some(self.clients.len());
        self.join(grants)
    }

    /// Add a participant whose PCs know only AV1 video, with the dependency descriptor: it
    /// publishes AV1 (descriptors go in `send_rtp_ext`'s extension values, `DdBytes`).
    pub fn join_av1(&mut self, grants: Grants) -> usize {
        self.pending_av1 = Some(self.clients.len());
        self.join(grants)
    }

    /// Add a participant whose PCs offer RED for Opus (a Chrome-like peer).
    pub fn join_red(&mut self, grants: Grants) -> usize {
        self.pending_red = Some(self.clients.len());
        self.join(grants)
    }

    /// Add a participant that joins the room (subscribing). Returns its index.
    pub fn join(&mut self, grants: Grants) -> usize {
        let idx = self.clients.len();
        let id = ParticipantId(idx as u64 + 1);
        let addr = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(
                10,
                0,
                (idx / 250) as u8,
                (idx % 250) as u8 + 1,
            )),
            5000,
        );
        let room = self.room.clone();
        let placed = self.placement.place(id, &room);
        if let Some(span) = placed.span {
            self.apply_span(span);
        }
        self.cores[placed.shard]
            .join(self.now, id, &room, grants, 0.0)
            .expect("join");
        self.clients.push(Client {
            id,
            addr,
            pub_rtc: None,
            sub_rtc: None,
            pub_pending: None,
            up: Link::default(),
            down: Link::default(),
            up_queue: Queue::default(),
            down_queue: Queue::default(),
            received: Vec::new(),
            keyframe_requests: 0,
            keyframe_requests_on: Vec::new(),
            offers: 0,
            offer_tracks: Vec::new(),
            connected_pub: false,
            connected_sub: false,
            silent: false,
            h264_only: false,
            red: false,
            vp9: false,
            av1: false,
            pub_mids: Vec::new(),
            seq: HashMap::new(),
            hold_answers: false,
            offer_sdps: Vec::new(),
            dead_ports: Vec::new(),
        });
        if self.pending_h264_only.take() == Some(idx) {
            self.clients[idx].h264_only = true;
        }
        if self.pending_red.take() == Some(idx) {
            self.clients[idx].red = true;
        }
        if self.pending_vp9.take() == Some(idx) {
            self.clients[idx].vp9 = true;
        }
        if self.pending_av1.take() == Some(idx) {
            self.clients[idx].av1 = true;
        }
        self.pump_events();
        idx
    }

    /// The client offers `tracks` (kind, source) on its publisher PC; the core answers.
    pub fn publish(&mut self, idx: usize, tracks: &[(MediaKind, Source)]) -> Vec<sfu::TrackInfo> {
        self.publish_with(idx, tracks, None)
    }

    /// The client offers its camera as simulcast, one encoding per RID in `rids` (as a
    /// browser's `a=simulcast:send q;h;f`); the core answers. Write with `send_rtp_layer`.
    pub fn publish_simulcast(&mut self, idx: usize, rids: &[&str]) -> Vec<sfu::TrackInfo> {
        let mut simulcast = Simulcast::new();
        for rid in rids {
            simulcast.add_send_layer(SimulcastLayer::new(rid));
        }
        self.publish_with(idx, &[(MediaKind::Video, Source::Camera)], Some(simulcast))
    }

    fn publish_with(
        &mut self,
        idx: usize,
        tracks: &[(MediaKind, Source)],
        simulcast: Option<Simulcast>,
    ) -> Vec<sfu::TrackInfo> {
        let now = self.now;
        let addr = self.clients[idx].addr;
        let c = &mut self.clients[idx];
        let kind = c.peer_kind();
        // The publisher PC uses another local port than the subscriber PC.
        let rtc = c.pub_rtc.get_or_insert_with(|| {
            peer_rtc(kind, now, SocketAddr::new(addr.ip(), addr.port() + 1))
        });
        let mut api = rtc.sdp_api();
        let mut mids = Vec::new();
        for (kind, source) in tracks {
            let sc = if *kind == MediaKind::Video {
                simulcast.clone()
            } else {
                None
            };
            let mid = api.add_media(*kind, Direction::SendOnly, None, None, sc);
            mids.push((mid, *kind, *source));
        }
        let (offer, pending) = api.apply().expect("offer");
        for (mid, kind, source) in &mids {
            c.pub_mids.push((*mid, *kind, *source));
        }
        let reqs = c.track_requests();
        let id = c.id;
        let answer = self
            .core_of(id)
            .publish(now, id, &offer.to_sdp_string(), &reqs)
            .expect("publish");
        self.accept_publish_answer(idx, pending, &answer.sdp);
        self.pump_events();
        answer.tracks
    }

    /// Apply the core's answer on the client's publisher PC.
    fn accept_publish_answer(&mut self, idx: usize, pending: SdpPendingOffer, sdp: &str) {
        let now = self.now;
        let rtc = self.clients[idx].pub_rtc.as_mut().expect("pub rtc");
        rtc.sdp_api()
            .accept_answer(
                pending,
                SdpAnswer::from_sdp_string(sdp).expect("answer parses"),
            )
            .expect("accept answer");
        rtc.handle_input(Input::Timeout(now)).expect("timeout");
    }

    /// Publish with an explicit track list for the whole current offer (re-publish).
    pub fn publish_raw(
        &mut self,
        idx: usize,
        add: &[(MediaKind, Source)],
        tracks: Vec<(usize, Source)>,
    ) -> Result<sfu::PublishAnswer, sfu::SfuError> {
        let now = self.now;
        let c = &mut self.clients[idx];
        let rtc = c.pub_rtc.as_mut().expect("pub rtc");
        let mut api = rtc.sdp_api();
        for (kind, source) in add {
            let mid = api.add_media(*kind, Direction::SendOnly, None, None, None);
            c.pub_mids.push((mid, *kind, *source));
        }
        let (offer, pending) = api.apply().expect("offer");
        let reqs: Vec<TrackRequest> = tracks
            .iter()
            .map(|(i, s)| TrackRequest {
                mid: c.pub_mids[*i].0.to_string(),
                source: *s,
                muted: false,
            })
            .collect();
        let id = c.id;
        let r = self
            .core_of(id)
            .publish(now, id, &offer.to_sdp_string(), &reqs);
        if let Ok(a) = &r {
            self.accept_publish_answer(idx, pending, &a.sdp);
        }
        self.pump_events();
        r
    }

    /// The core of the shard hosting participant `id`.
    pub fn core_of(&mut self, id: ParticipantId) -> &mut ShardCore {
        let shard = self.placement.shard_of(id).expect("placed participant");
        &mut self.cores[shard]
    }

    /// Which shard hosts client `idx`.
    pub fn shard_of(&self, idx: usize) -> usize {
        self.placement
            .shard_of(self.clients[idx].id)
            .expect("placed participant")
    }

    /// What the driver does with a span change: tell the shards concerned.
    fn apply_span(&mut self, span: Span) {
        match span {
            Span::Joined {
                room,
                shard,
                others,
            } => {
                self.cores[shard].span_set(&room, others.clone());
                for o in others {
                    self.cores[o].span_add(&room, shard);
                }
            }
            Span::Left {
                room,
                shard,
                others,
            } => {
                self.cores[shard].span_clear(&room);
                for o in others {
                    self.cores[o].span_remove(&room, shard);
                }
            }
        }
    }

    /// Client `idx` leaves (as the driver's `leave`: the core, then the placement).
    pub fn leave(&mut self, idx: usize) {
        let id = self.clients[idx].id;
        self.core_of(id).leave(id).expect("leave");
        if let Some(span) = self.placement.forget(id) {
            self.apply_span(span);
        }
        self.pump_events();
    }

    /// Deliver messages between shards (in order, at once: the driver's channels).
    fn pump_peers(&mut self) {
        loop {
            let mut moved = false;
            for from in 0..self.cores.len() {
                while let Some((to, msg)) = self.cores[from].poll_peer() {
                    moved = true;
                    let now = self.now;
                    self.cores[to].handle_peer(now, from, msg);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Hand core events to clients (offers get answered at once).
    pub fn pump_events(&mut self) {
        // One event at a time, as before: answering an offer can make the core emit the
        // next one, which must be seen in order.
        loop {
            self.pump_peers();
            let Some(ev) = self.cores.iter_mut().find_map(|c| c.poll_event()) else {
                return;
            };
            if let SfuEvent::ParticipantRemoved { participant, .. } = &ev
                && let Some(span) = self.placement.forget(*participant)
            {
                self.apply_span(span);
            }
            if let SfuEvent::SubscriberOffer {
                participant,
                sdp,
                tracks,
            } = &ev
            {
                let idx = (participant.0 - 1) as usize;
                let c = &mut self.clients[idx];
                c.offers += 1;
                c.offer_tracks = tracks.clone();
                c.offer_sdps.push(sdp.clone());
                if !(c.hold_answers || c.silent) {
                    self.answer_offer(idx, sdp);
                }
            }
            self.events.push(ev);
        }
    }

    fn schedule(
        &mut self,
        to_server: bool,
        client: usize,
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    ) {
        let link = if to_server {
            self.clients[client].up
        } else {
            self.clients[client].down
        };
        if link.loss > 0.0 && self.rng.f64() < link.loss {
            return;
        }
        let jitter = if link.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_micros(self.rng.u64(0..link.jitter.as_micros() as u64))
        };
        let mut at = self.now + link.delay + jitter;
        let bits = data.len() as u64 * 8;
        if let Some(nanos) = (bits * 1_000_000_000).checked_div(link.rate_bps) {
            let now = self.now;
            let q = if to_server {
                &mut self.clients[client].up_queue
            } else {
                &mut self.clients[client].down_queue
            };
            let start = q.free_at.unwrap_or(now).max(now);
            if start - now > link.queue {
                q.dropped += 1;
                return;
            }
            let done = start + Duration::from_nanos(nanos);
            q.free_at = Some(done);
            at = done + link.delay + jitter;
        }
        self.next_pkt += 1;
        self.packets.insert(
            self.next_pkt,
            InFlight {
                to_server,
                client,
                from,
                to,
                data,
            },
        );
        self.flight.push(Reverse((at, self.next_pkt)));
    }

    /// Drain every output (clients and core) at the current time.
    fn drain(&mut self) {
        loop {
            let mut progressed = false;
            for i in 0..self.clients.len() {
                for which in [true, false] {
                    loop {
                        let c = &mut self.clients[i];
                        if c.silent {
                            break;
                        }
                        let rtc = if which {
                            c.pub_rtc.as_mut()
                        } else {
                            c.sub_rtc.as_mut()
                        };
                        let Some(rtc) = rtc else { break };
                        match rtc.poll_output() {
                            Ok(Output::Timeout(_)) => break,
                            Ok(Output::Transmit(t)) => {
                                let (src, dst) = (t.source, t.destination);
                                let data: Vec<u8> = t.contents.into();
                                if !c.dead_ports.contains(&src.port()) {
                                    self.schedule(true, i, src, dst, data);
                                }
                                progressed = true;
                            }
                            Ok(Output::Event(e)) => {
                                progressed = true;
                                match e {
                                    Event::Connected => {
                                        if which {
                                            c.connected_pub = true
                                        } else {
                                            c.connected_sub = true
                                        }
                                    }
                                    Event::RtpPacket(p) => {
                                        let ssrc = p.header.ssrc;
                                        let mid = c
                                            .sub_rtc
                                            .as_mut()
                                            .and_then(|r| {
                                                r.direct_api().stream_rx(&ssrc).map(|s| s.mid())
                                            })
                                            .unwrap_or_else(|| Mid::from("?"));
                                        c.received.push(Got {
                                            mid,
                                            ssrc: *ssrc,
                                            seq: *p.seq_no,
                                            ts: p.header.timestamp,
                                            payload: p.payload.to_vec(),
                                            at: self.now,
                                            pt: *p.header.payload_type,
                                            marker: p.header.marker,
                                            dd: p
                                                .header
                                                .ext_vals
                                                .user_values
                                                .get::<sfu::core::av1_svc::DdBytes>()
                                                .map(|b| b.0.clone()),
                                        });
                                    }
                                    Event::KeyframeRequest(r) => {
                                        c.keyframe_requests += 1;
                                        c.keyframe_requests_on.push((r.mid, r.rid));
                                    }
                                    _ => {}
                                }
                            }
                            Err(e) => panic!("client {i} failed: {e}"),
                        }
                    }
                }
            }
            self.pump_peers();
            for shard in 0..self.cores.len() {
                while let Some(t) = self.cores[shard].poll_transmit() {
                    progressed = true;
                    let Some(i) = self
                        .clients
                        .iter()
                        .position(|c| c.addr.ip() == t.destination.ip())
                    else {
                        continue;
                    };
                    let from =
                        SocketAddr::new(IpAddr::V4(SERVER_IP), shard_ports(shard)[t.port_idx]);
                    self.schedule(false, i, from, t.destination, t.data);
                }
            }
            self.pump_events();
            if !progressed {
                break;
            }
        }
    }

    fn next_time(&mut self) -> Instant {
        let mut t = self
            .cores
            .iter()
            .filter_map(|c| c.poll_timeout())
            .min()
            .unwrap_or(self.now + Duration::from_millis(100));
        if let Some(Reverse((at, _))) = self.flight.peek() {
            t = t.min(*at);
        }
        for rtc in live_rtcs(&mut self.clients) {
            if let Ok(Output::Timeout(at)) = rtc.poll_output() {
                t = t.min(at);
            }
        }
        t.max(self.now)
    }

    /// Run the simulation until `until` (virtual), calling `each` at every step.
    pub fn run_until(&mut self, until: Instant, mut each: impl FnMut(&mut Sim)) {
        loop {
            self.drain();
            each(self);
            self.drain();
            let next = self.next_time().min(until);
            // Never stall: media writers in `each` need steps at least every millisecond.
            let next = next.min(self.now + Duration::from_millis(1)).max(self.now);
            self.now = next.max(self.now);
            // Deliver due datagrams.
            while let Some(Reverse((at, id))) = self.flight.peek().copied() {
                if at > self.now {
                    break;
                }
                self.flight.pop();
                let p = self.packets.remove(&id).expect("packet");
                if p.to_server {
                    let Some((shard, port_idx)) = port_owner(p.to.port(), self.cores.len()) else {
                        continue;
                    };
                    self.cores[shard].handle_datagram(self.now, port_idx, p.from, &p.data);
                } else {
                    let c = &mut self.clients[p.client];
                    if c.silent || c.dead_ports.contains(&p.to.port()) {
                        continue;
                    }
                    let rtc = if p.to.port() == c.addr.port() || p.to.port() == c.addr.port() + 2 {
                        c.sub_rtc.as_mut()
                    } else {
                        c.pub_rtc.as_mut()
                    };
                    if let Some(rtc) = rtc {
                        let r = Receive::new(Protocol::Udp, p.from, p.to, &p.data).expect("parse");
                        rtc.handle_input(Input::Receive(self.now, r))
                            .expect("client input");
                    }
                    // str0m (RTP mode) holds one received packet until the next poll:
                    // drain before the next datagram.
                    self.drain();
                }
            }
            for core in &mut self.cores {
                core.flush(self.now);
                core.handle_timeout(self.now);
            }
            let now = self.now;
            for rtc in live_rtcs(&mut self.clients) {
                rtc.handle_input(Input::Timeout(now))
                    .expect("client timeout");
            }
            if self.now >= until {
                self.drain();
                return;
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until, |_| {});
    }

    /// Write one RTP packet on the publisher's `n`-th published m-line.
    pub fn send_rtp(&mut self, idx: usize, n: usize, ts: u32, marker: bool, payload: Vec<u8>) {
        self.send_rtp_ext(idx, n, ts, marker, payload, ExtensionValues::default());
    }

    /// Like `send_rtp`, with header extension values (e.g. audio level).
    pub fn send_rtp_ext(
        &mut self,
        idx: usize,
        n: usize,
        ts: u32,
        marker: bool,
        payload: Vec<u8>,
        ext: ExtensionValues,
    ) {
        self.write_rtp(idx, n, None, ts, marker, payload, ext, false);
    }

    /// Write one RTP packet with the RED payload type of the Opus m-line `n` (the client
    /// joined with `join_red`); `payload` is the RED payload (block headers and blocks).
    pub fn send_rtp_red(&mut self, idx: usize, n: usize, ts: u32, payload: Vec<u8>) {
        let ext = ExtensionValues::default();
        self.write_rtp(idx, n, None, ts, false, payload, ext, true);
    }

    /// Write one RTP packet of simulcast layer `rid` on the publisher's `n`-th m-line (one
    /// published with `publish_simulcast`). Each layer is its own stream (SSRC, sequence).
    pub fn send_rtp_layer(
        &mut self,
        idx: usize,
        n: usize,
        rid: &str,
        ts: u32,
        marker: bool,
        payload: Vec<u8>,
    ) {
        let rid = Some(Rid::from(rid));
        self.write_rtp(
            idx,
            n,
            rid,
            ts,
            marker,
            payload,
            ExtensionValues::default(),
            false,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn write_rtp(
        &mut self,
        idx: usize,
        n: usize,
        rid: Option<Rid>,
        ts: u32,
        marker: bool,
        payload: Vec<u8>,
        ext: ExtensionValues,
        red: bool,
    ) {
        let now = self.now;
        let c = &mut self.clients[idx];
        let (mid, kind, _) = c.pub_mids[n];
        let seq = c.seq.entry((mid, rid)).or_insert(1);
        *seq += 1;
        let seq_no = *seq;
        let rtc = c.pub_rtc.as_mut().expect("publisher");
        let want = if kind == MediaKind::Audio {
            Codec::Opus
        } else if c.h264_only {
            Codec::H264
        } else if c.vp9 {
            Codec::Vp9
        } else if c.av1 {
            Codec::Av1
        } else {
            Codec::Vp8
        };
        let params = *rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == want)
            .expect("codec negotiated");
        let pt = if red {
            params.red().expect("RED negotiated")
        } else {
            params.pt()
        };
        let mut api = rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, rid) else {
            return;
        };
        tx.write_rtp(
            RtpWrite::new(pt, SeqNo::from(seq_no), ts, now, payload)
                .marker(marker)
                .ext_vals(ext)
                .nackable(kind == MediaKind::Video),
        );
    }

    /// Subscriber `idx` asks for a keyframe on every video m-line it receives.
    pub fn request_keyframes(&mut self, idx: usize) {
        let c = &mut self.clients[idx];
        let mids: Vec<Mid> = c
            .offer_tracks
            .iter()
            .filter(|t| t.kind == MediaKind::Video)
            .map(|t| Mid::from(t.mid.as_str()))
            .collect();
        if let Some(rtc) = c.sub_rtc.as_mut() {
            for mid in mids {
                if let Some(rx) = rtc.direct_api().stream_rx_by_mid(mid, None) {
                    rx.request_keyframe(KeyframeRequestKind::Pli);
                }
            }
        }
    }

    pub fn all_connected(&self) -> bool {
        self.clients.iter().all(|c| {
            (c.pub_rtc.is_none() || c.connected_pub) && (c.sub_rtc.is_none() || c.connected_sub)
        })
    }

    /// Run until every client is connected (panics after 5 virtual seconds).
    pub fn connect_all(&mut self) {
        let deadline = self.now + Duration::from_secs(5);
        while !self.all_connected() {
            assert!(self.now < deadline, "peers did not connect");
            self.run_for(Duration::from_millis(20));
        }
    }

    /// Send `secs` of synthetic media from publisher `idx`: one video frame of 3 packets
    /// every 33 ms on m-line `video`, one audio packet every 20 ms on `audio`. Payloads
    /// carry (publisher, m-line, counter) so receivers can check integrity.
    pub fn stream(
        &mut self,
        idx: usize,
        video: Option<usize>,
        audio: Option<usize>,
        dur: Duration,
    ) -> (u32, u32) {
        let until = self.now + dur;
        let mut next_v = self.now;
        let mut next_a = self.now;
        let (mut nv, mut na) = (0u32, 0u32);
        let base = self.now;
        while self.now < until {
            if let Some(v) = video
                && self.now >= next_v
            {
                let ts = ((self.now - base).as_micros() as u64 * 90 / 1000) as u32;
                for k in 0..3u32 {
                    let mut payload = vec![idx as u8, v as u8];
                    payload.extend_from_slice(&(nv * 3 + k).to_be_bytes());
                    payload.resize(1000, 0xAB);
                    self.send_rtp(idx, v, ts, k == 2, payload);
                }
                nv += 1;
                next_v += Duration::from_millis(33);
            }
            if let Some(a) = audio
                && self.now >= next_a
            {
                let ts = ((self.now - base).as_micros() as u64 * 48 / 1000) as u32;
                let mut payload = vec![idx as u8, a as u8];
                payload.extend_from_slice(&na.to_be_bytes());
                payload.resize(120, 0xCD);
                self.send_rtp(idx, a, ts, false, payload);
                na += 1;
                next_a += Duration::from_millis(20);
            }
            let step = self.now + Duration::from_millis(1);
            self.run_until(step, |_| {});
        }
        (nv * 3, na)
    }

    /// Send `dur` of synthetic media from every publisher in `idxs` at once (m-line 0:
    /// video, 1: audio, as `publish(.., &[(Video, Camera), (Audio, Microphone)])` made them).
    /// Payloads carry (publisher, m-line, counter) as in `stream`.
    pub fn stream_all(&mut self, idxs: &[usize], dur: Duration) -> HashMap<usize, (u32, u32)> {
        let until = self.now + dur;
        let base = self.now;
        let mut next_v = self.now;
        let mut next_a = self.now;
        let mut sent: HashMap<usize, (u32, u32)> = idxs.iter().map(|i| (*i, (0, 0))).collect();
        while self.now < until {
            if self.now >= next_v {
                let ts = ((self.now - base).as_micros() as u64 * 90 / 1000) as u32;
                for &i in idxs {
                    let nv = sent[&i].0;
                    for k in 0..3u32 {
                        let mut payload = vec![i as u8, 0];
                        payload.extend_from_slice(&(nv + k).to_be_bytes());
                        payload.resize(1000, 0xAB);
                        self.send_rtp(i, 0, ts, k == 2, payload);
                    }
                    sent.get_mut(&i).expect("present").0 += 3;
                }
                next_v += Duration::from_millis(33);
            }
            if self.now >= next_a {
                let ts = ((self.now - base).as_micros() as u64 * 48 / 1000) as u32;
                for &i in idxs {
                    let na = sent[&i].1;
                    let mut payload = vec![i as u8, 1];
                    payload.extend_from_slice(&na.to_be_bytes());
                    payload.resize(120, 0xCD);
                    self.send_rtp(i, 1, ts, false, payload);
                    sent.get_mut(&i).expect("present").1 += 1;
                }
                next_a += Duration::from_millis(20);
            }
            let step = self.now + Duration::from_millis(1);
            self.run_until(step, |_| {});
        }
        sent
    }

    /// Every participant removal among the events so far, with its reason, in order.
    pub fn removals(&self) -> Vec<(ParticipantId, RemovalReason)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                SfuEvent::ParticipantRemoved {
                    participant,
                    reason,
                    ..
                } => Some((*participant, *reason)),
                _ => None,
            })
            .collect()
    }

    /// Answer the last held offer of client `idx` now (its answer was late).
    pub fn answer_held_offer(&mut self, idx: usize) {
        let c = &mut self.clients[idx];
        c.hold_answers = false;
        let sdp = c.offer_sdps.last().expect("an offer").clone();
        self.answer_offer(idx, &sdp);
        self.pump_events();
    }

    /// Client `idx` answers a subscriber offer (creating its subscriber PC on the first).
    fn answer_offer(&mut self, idx: usize, sdp: &str) {
        let now = self.now;
        let c = &mut self.clients[idx];
        let (kind, addr) = (c.peer_kind(), c.addr);
        let rtc = c.sub_rtc.get_or_insert_with(|| peer_rtc(kind, now, addr));
        let answer = rtc
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(sdp).expect("offer parses"))
            .expect("accept offer");
        rtc.handle_input(Input::Timeout(now)).expect("timeout");
        let id = c.id;
        self.core_of(id)
            .subscriber_answer(now, id, &answer.to_sdp_string())
            .expect("answer accepted");
    }

    /// Client `idx` moves to another network: its old ports stop working, its peer
    /// connections get host candidates on new ports (old port + 2), the publisher PC
    /// restarts ICE with a new offer (same m-lines and tracks) and the subscriber PC asks
    /// the server for an ICE restart, as the browser library does.
    pub fn switch_network(&mut self, idx: usize) {
        let now = self.now;
        let c = &mut self.clients[idx];
        let (sub_port, pub_port) = (c.addr.port(), c.addr.port() + 1);
        c.dead_ports.extend([sub_port, pub_port]);
        let ip = c.addr.ip();
        if let Some(rtc) = c.sub_rtc.as_mut() {
            rtc.add_local_candidate(
                Candidate::host(SocketAddr::new(ip, sub_port + 2), "udp").expect("candidate"),
            );
        }
        let id = c.id;
        if let Some(rtc) = c.pub_rtc.as_mut() {
            // A restart without the old candidates (they are gone with the old network);
            // the new one is added after, as a browser gathers anew.
            let mut api = rtc.sdp_api();
            api.ice_restart(false);
            let (offer, pending) = api.apply().expect("restart offer");
            let reqs = c.track_requests();
            let answer = self
                .core_of(id)
                .publish(now, id, &offer.to_sdp_string(), &reqs)
                .expect("publish with ICE restart");
            self.accept_publish_answer(idx, pending, &answer.sdp);
            // str0m drops the old local candidates when the answer completes the restart.
            let rtc = self.clients[idx].pub_rtc.as_mut().expect("pub rtc");
            rtc.add_local_candidate(
                Candidate::host(SocketAddr::new(ip, pub_port + 2), "udp").expect("candidate"),
            );
            rtc.handle_input(Input::Timeout(now)).expect("timeout");
        }
        self.core_of(id).restart_ice(now, id).expect("restart_ice");
        self.pump_events();
    }
}

/// The key frames a simulcast publisher owes: each key-frame request it received (for a
/// layer, or for every layer when it names none) makes that layer's next frame at least
/// `delay` later a key frame, as an encoder answers a request with a later frame.
pub struct OwedKeyframes {
    layers: Vec<&'static str>,
    delay: Duration,
    owed: Vec<Option<Instant>>,
    seen: usize,
    /// Requests that named no layer.
    pub unnamed: usize,
}

impl OwedKeyframes {
    pub fn new(layers: &[&'static str], delay: Duration) -> Self {
        OwedKeyframes {
            layers: layers.to_vec(),
            delay,
            owed: vec![None; layers.len()],
            seen: 0,
            unnamed: 0,
        }
    }

    /// Takes in the requests publisher `idx` got since the last call.
    pub fn note_requests(&mut self, sim: &Sim, idx: usize) {
        let requests = &sim.clients[idx].keyframe_requests_on;
        let due = sim.now + self.delay;
        for (_, rid) in &requests[self.seen..] {
            match rid.and_then(|r| self.layers.iter().position(|l| Rid::from(*l) == r)) {
                Some(layer) => {
                    self.owed[layer].get_or_insert(due);
                }
                None => {
                    self.unnamed += 1;
                    for o in &mut self.owed {
                        o.get_or_insert(due);
                    }
                }
            }
        }
        self.seen = requests.len();
    }

    /// Whether `layer`'s frame number `frame` at `now` is a key frame (the first always);
    /// a key frame pays the layer's debt.
    pub fn is_key(&mut self, layer: usize, frame: u32, now: Instant) -> bool {
        let key = frame == 0 || self.owed[layer].is_some_and(|due| now >= due);
        if key {
            self.owed[layer] = None;
        }
        key
    }
}
