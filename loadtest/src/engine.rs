//! The media engine: many simulated WebRTC peers driven by one thread.
//!
//! Each engine thread owns a `mio::Poll` and a table of peer connections. A peer
//! connection is a str0m [`Rtc`] (ICE, DTLS, SRTP, RTCP: receiver reports, NACK
//! generation, RTX answers to NACKs from its cache) plus its own non-blocking UDP socket
//! bound on `--bind-ip`. One socket per peer connection is deliberate: the SFU routes
//! datagrams by 4-tuple, so every simulated browser needs its own source port anyway, and
//! a socket per connection makes "which `Rtc` is this for" a token lookup instead of
//! demultiplexing by ICE ufrag or address. The cost is a file descriptor per connection
//! (two per participant that publishes and subscribes).
//!
//! The loop: wait in `poll` until the earliest deadline (str0m timeouts, the next audio
//! or video frame of any publisher), read every readable socket to `WouldBlock`, feeding
//! each datagram to its `Rtc`, then give due connections their timeout and their due
//! media, draining `poll_output` until `Timeout` after every input (str0m's contract).
//! Commands (create a publisher offer, apply answers and subscriber offers, close, report)
//! come from the async signaling side over a channel plus a `mio::Waker`; replies go back
//! on oneshot channels.
//!
//! str0m runs in RTP mode: we packetize ourselves ([`crate::payload`]) so the sequence
//! numbers, markers and key frames are exactly what a browser would send, and receivers
//! see every RTP packet (loss, jitter and end-to-end latency are per packet).
//! Publishers answer PLI (str0m `KeyframeRequest`) with a key frame on the next frame;
//! video is written `nackable`, so str0m's RTX cache answers NACKs.
//!
//! A network switch ([`EngineHandle::rebind`]) gives a connection a new socket on a new
//! port, as a laptop moving from Wi-Fi to a phone's hotspot gets a new address: the old
//! socket is closed (whatever the SFU still sends there is lost) and its host candidate
//! invalidated, so the old ICE session has no path left and only an ICE restart through
//! the signaling brings the media back. The new host candidate joins the restarted
//! session, never the old one: otherwise the old session could find the new path by
//! itself and the restart would not be what is measured. Every received video m-line
//! keeps interarrival gaps around a mark ([`crate::gaps`]) so the scenario can say how
//! long the others' view froze.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::SimulcastLayer;
use str0m::media::{Direction, ExtensionValues, MediaKind, Mid, Pt, Rid, Simulcast};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::oneshot;

use crate::gaps::{GapReport, GapTracker};
use crate::payload::{self, Stamp};
use crate::stats::Histogram;

/// Synthetic media settings for publishers.
#[derive(Debug, Clone)]
pub struct MediaCfg {
    /// Video bitrate (kbit/s) of the top layer.
    pub video_kbps: u32,
    /// Frames per second.
    pub fps: u32,
    /// Key frame every this often (also on PLI).
    pub keyframe_interval: Duration,
    /// Opus packet size (bytes per 20 ms).
    pub audio_bytes: usize,
    /// Offer three simulcast layers (rids q, h, f at 1/16, 1/4, 1 of the bitrate).
    pub simulcast: bool,
}

/// Counters the progress line reads while the run goes on.
#[derive(Default)]
pub struct Live {
    /// RTP packets written by publishers.
    pub tx_packets: AtomicU64,
    /// RTP packets received by subscribers.
    pub rx_packets: AtomicU64,
    /// RTP payload bytes written by publishers.
    pub tx_bytes: AtomicU64,
    /// RTP payload bytes received by subscribers.
    pub rx_bytes: AtomicU64,
    /// Packets expected by subscribers (sequence span of each received stream).
    pub rx_expected: AtomicU64,
    /// Peer connections connected (ICE + DTLS).
    pub connected: AtomicU64,
    /// Key frame requests (PLI/FIR) received by publishers.
    pub keyframe_requests: AtomicU64,
}

/// The publisher offer for `publish`.
pub struct PublishOffer {
    /// SDP offer.
    pub sdp: String,
    /// Camera m-line.
    pub video_mid: String,
    /// Microphone m-line.
    pub audio_mid: String,
}

/// Media results of one participant.
#[derive(Debug, Clone, Default)]
pub struct PartReport {
    /// When the first RTP packet arrived on its subscriber connection.
    pub first_media: Option<Instant>,
    /// RTP packets sent (publisher).
    pub tx_packets: u64,
    /// RTP payload bytes sent.
    pub tx_bytes: u64,
    /// RTP packets received (subscriber).
    pub rx_packets: u64,
    /// RTP payload bytes received.
    pub rx_bytes: u64,
    /// Packets expected from the received streams' sequence spans.
    pub rx_expected: u64,
    /// Video packets received (video is NACK-repaired, audio is not).
    pub video_rx_packets: u64,
    /// Video packets expected.
    pub video_rx_expected: u64,
    /// Mids (subscriber m-lines) that carried media.
    pub mids_with_media: HashSet<String>,
    /// Mean interarrival jitter over its received streams (ms, RFC 3550 style, from the
    /// payload's send stamp).
    pub jitter_ms: Option<f64>,
    /// Key frames received (first packets of VP8 key frames).
    pub keyframes_rx: u64,
    /// Key frame requests received as a publisher.
    pub keyframe_requests: u64,
    /// Simulcast layer changes in received streams that start on a key frame (the SFU
    /// switching a subscriber's layer cleanly).
    pub layer_switches: u64,
    /// Layer changes on a packet that is not a key-frame start: layers interleaved in one
    /// stream, which a decoder cannot follow (0 when the SFU selects layers correctly).
    pub layer_switches_mid_frame: u64,
    /// Publisher connection connected.
    pub pub_connected: bool,
    /// Subscriber connection connected.
    pub sub_connected: bool,
    /// Video gaps per received m-line (mid), as of the report (see [`crate::gaps`]).
    pub video_gaps: HashMap<String, GapReport>,
    /// After a rebind: ms from the rebind until the publisher connection's restarted ICE
    /// session was connected again.
    pub pub_ice_back_ms: Option<f64>,
    /// The same for the subscriber connection.
    pub sub_ice_back_ms: Option<f64>,
}

/// All media results of one engine.
#[derive(Default)]
pub struct EngineReport {
    /// Per participant.
    pub parts: HashMap<u64, PartReport>,
    /// End-to-end latency (µs) of every received stamped packet.
    pub latency_us: Histogram,
    /// Datagrams dropped because a socket's send buffer was full.
    pub send_drops: u64,
}

enum Cmd {
    Publish {
        pid: u64,
        reply: oneshot::Sender<anyhow::Result<PublishOffer>>,
    },
    PublishAnswer {
        pid: u64,
        sdp: String,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    SubscribeOffer {
        pid: u64,
        sdp: String,
        reply: oneshot::Sender<anyhow::Result<String>>,
    },
    Close {
        pid: u64,
    },
    Rebind {
        pid: u64,
        publisher: bool,
        subscriber: bool,
        reply: oneshot::Sender<anyhow::Result<Option<String>>>,
    },
    MarkGaps {
        at: Instant,
    },
    Report {
        reply: oneshot::Sender<EngineReport>,
    },
    Stop,
}

/// Handle to one engine thread (cheap to clone).
#[derive(Clone)]
pub struct EngineHandle {
    tx: std::sync::mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
}

const WAKER: Token = Token(usize::MAX);

impl EngineHandle {
    fn send(&self, c: Cmd) -> anyhow::Result<()> {
        self.tx
            .send(c)
            .map_err(|_| anyhow!("media engine stopped"))?;
        self.waker.wake().context("wake media engine")?;
        Ok(())
    }

    /// Create `pid`'s publisher connection (camera + microphone, send-only) and its offer.
    pub async fn publish(&self, pid: u64) -> anyhow::Result<PublishOffer> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Publish { pid, reply })?;
        rx.await.map_err(|_| anyhow!("media engine stopped"))?
    }

    /// Apply the SFU's answer to `pid`'s publisher offer.
    pub async fn publish_answer(&self, pid: u64, sdp: String) -> anyhow::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::PublishAnswer { pid, sdp, reply })?;
        rx.await.map_err(|_| anyhow!("media engine stopped"))?
    }

    /// Apply a subscriber offer (creating the subscriber connection on the first) and
    /// return the answer.
    pub async fn subscribe_offer(&self, pid: u64, sdp: String) -> anyhow::Result<String> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::SubscribeOffer { pid, sdp, reply })?;
        rx.await.map_err(|_| anyhow!("media engine stopped"))?
    }

    /// Network switch of `pid`: give its publisher and/or subscriber connection a new
    /// socket (new local port), drop the old one, and start an ICE restart. Returns the
    /// publisher's restart offer (new ICE credentials, same m-lines) when the publisher
    /// was rebound: send it as the usual `publish` and apply the answer with
    /// [`Self::publish_answer`]. The subscriber's restart completes when the server's
    /// next offer (with new credentials) is applied with [`Self::subscribe_offer`].
    pub async fn rebind(
        &self,
        pid: u64,
        publisher: bool,
        subscriber: bool,
    ) -> anyhow::Result<Option<String>> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Rebind {
            pid,
            publisher,
            subscriber,
            reply,
        })?;
        rx.await.map_err(|_| anyhow!("media engine stopped"))?
    }

    /// Mark every received video m-line's gap tracker at `at` (see [`crate::gaps`]).
    pub fn mark_gaps(&self, at: Instant) {
        let _ = self.send(Cmd::MarkGaps { at });
    }

    /// Close `pid`'s connections (its results are kept for the report).
    pub fn close(&self, pid: u64) {
        let _ = self.send(Cmd::Close { pid });
    }

    /// Everyone's results so far.
    pub async fn report(&self) -> anyhow::Result<EngineReport> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Report { reply })?;
        rx.await.map_err(|_| anyhow!("media engine stopped"))
    }

    /// Stop the thread.
    pub fn stop(&self) {
        let _ = self.send(Cmd::Stop);
    }
}

/// Start an engine thread named `lg-media-{n}`.
pub fn spawn(
    n: usize,
    cfg: MediaCfg,
    bind_ip: IpAddr,
    live: Arc<Live>,
) -> anyhow::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = std::sync::mpsc::channel();
    let cert = str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate();
    let mut engine = Engine {
        poll,
        rx,
        cfg,
        bind_ip,
        live,
        cert,
        pcs: Vec::new(),
        free: Vec::new(),
        by_key: HashMap::new(),
        parts: HashMap::new(),
        gap_mark: None,
        latency: Histogram::default(),
        send_drops: 0,
    };
    let h = std::thread::Builder::new()
        .name(format!("lg-media-{n}"))
        .spawn(move || engine.run())?;
    Ok((EngineHandle { tx, waker }, h))
}

struct Layer {
    rid: Option<Rid>,
    /// Share of the top bitrate.
    scale: usize,
    seq: u64,
}

struct PubState {
    video_mid: Mid,
    audio_mid: Mid,
    pts: Option<(Pt, Pt)>,
    layers: Vec<Layer>,
    aseq: u64,
    frame_no: u32,
    audio_no: u32,
    next_video: Instant,
    next_audio: Instant,
    last_key: Option<Instant>,
    key_due: bool,
}

struct RxStream {
    video: bool,
    /// Its m-line (video gaps are kept per mid).
    mid: Option<Mid>,
    /// Simulcast layer of the last stamped packet.
    layer: Option<u8>,
    max_seq: u64,
    received: u64,
    jitter_us: f64,
    last_transit: Option<i64>,
}

struct Pc {
    pid: u64,
    subscriber: bool,
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    next_timeout: Instant,
    connected: bool,
    pending: Option<SdpPendingOffer>,
    publisher: Option<PubState>,
    streams: HashMap<Ssrc, RxStream>,
    /// The `a=ice-ufrag` of the last remote description applied: a new one in a server
    /// offer is an ICE restart.
    remote_ufrag: Option<String>,
    /// Set by a rebind until the restarted session is connected.
    switch: Option<Switch>,
}

/// A connection's network switch in progress.
struct Switch {
    at: Instant,
    /// The new socket's host candidate, for the restarted session (None once added).
    candidate: Option<Candidate>,
    /// The ICE agent restarted (it went back to checking).
    restarted: bool,
}

#[derive(Default)]
struct Part {
    report: PartReport,
    /// Per received video mid.
    gaps: HashMap<Mid, GapTracker>,
}

struct Engine {
    poll: Poll,
    rx: std::sync::mpsc::Receiver<Cmd>,
    cfg: MediaCfg,
    bind_ip: IpAddr,
    live: Arc<Live>,
    cert: Option<str0m::config::DtlsCert>,
    pcs: Vec<Option<Pc>>,
    free: Vec<usize>,
    by_key: HashMap<(u64, bool), usize>,
    parts: HashMap<u64, Part>,
    /// The last [`Cmd::MarkGaps`] (trackers created later count from it).
    gap_mark: Option<Instant>,
    latency: Histogram,
    send_drops: u64,
}

impl Engine {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 2048];
        let mut deadline = Instant::now() + Duration::from_millis(50);
        loop {
            let now = Instant::now();
            let wait = deadline
                .saturating_duration_since(now)
                .min(Duration::from_millis(50));
            if let Err(e) = self.poll.poll(&mut events, Some(wait))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                eprintln!("media engine: poll: {e}");
                return;
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    if !self.commands() {
                        return;
                    }
                    // New connections want their first timeout now.
                    deadline = Instant::now();
                    continue;
                }
                if let Some(t) = self.read(ev.token().0, &mut buf) {
                    deadline = deadline.min(t);
                }
            }
            // The walk over every connection only when something is due: with many
            // peers, packets wake us far more often than timers do.
            let now = Instant::now();
            if now >= deadline {
                deadline = self.tick(now);
            }
        }
    }

    /// Handle queued commands; false on Stop.
    fn commands(&mut self) -> bool {
        while let Ok(c) = self.rx.try_recv() {
            match c {
                Cmd::Publish { pid, reply } => {
                    let _ = reply.send(self.create_publisher(pid));
                }
                Cmd::PublishAnswer { pid, sdp, reply } => {
                    let _ = reply.send(self.publisher_answer(pid, &sdp));
                }
                Cmd::SubscribeOffer { pid, sdp, reply } => {
                    let _ = reply.send(self.subscriber_offer(pid, &sdp));
                }
                Cmd::Close { pid } => {
                    for sub in [false, true] {
                        if let Some(i) = self.by_key.remove(&(pid, sub)) {
                            self.close_slot(i);
                        }
                    }
                }
                Cmd::Rebind {
                    pid,
                    publisher,
                    subscriber,
                    reply,
                } => {
                    let _ = reply.send(self.rebind(pid, publisher, subscriber));
                }
                Cmd::MarkGaps { at } => {
                    self.gap_mark = Some(at);
                    for part in self.parts.values_mut() {
                        for g in part.gaps.values_mut() {
                            g.mark(at);
                        }
                    }
                }
                Cmd::Report { reply } => {
                    let _ = reply.send(self.report());
                }
                Cmd::Stop => return false,
            }
        }
        true
    }

    /// A non-blocking UDP socket on `--bind-ip`, a port of the kernel's choice.
    fn bind_socket(&self) -> anyhow::Result<(UdpSocket, SocketAddr)> {
        let std_sock = std::net::UdpSocket::bind(SocketAddr::new(self.bind_ip, 0))
            .context("bind a client UDP socket")?;
        std_sock.set_nonblocking(true)?;
        let local = std_sock.local_addr()?;
        Ok((UdpSocket::from_std(std_sock), local))
    }

    fn new_pc(&mut self, pid: u64, subscriber: bool) -> anyhow::Result<usize> {
        let now = Instant::now();
        let (mut sock, local) = self.bind_socket()?;
        // The SFU's DTLS provider: one validated DTLS config for all peers instead of a
        // crypto self-test per peer connection (sfu/src/dtls.rs).
        let mut b = Rtc::builder()
            .set_rtp_mode(true)
            .set_crypto_provider(sfu::dtls::crypto_provider());
        if let Some(c) = &self.cert {
            b = b.set_dtls_cert(c.clone());
        }
        let mut rtc = b.build(now);
        rtc.add_local_candidate(Candidate::host(local, "udp").context("host candidate")?);
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.pcs.push(None);
                self.pcs.len() - 1
            }
        };
        self.poll
            .registry()
            .register(&mut sock, Token(i), Interest::READABLE)?;
        self.pcs[i] = Some(Pc {
            pid,
            subscriber,
            rtc,
            sock,
            local,
            next_timeout: now,
            connected: false,
            pending: None,
            publisher: None,
            streams: HashMap::new(),
            remote_ufrag: None,
            switch: None,
        });
        self.by_key.insert((pid, subscriber), i);
        self.parts.entry(pid).or_default();
        Ok(i)
    }

    fn close_slot(&mut self, i: usize) {
        if let Some(mut pc) = self.pcs[i].take() {
            if let Some(j) = mean_jitter_ms(&pc) {
                self.parts.entry(pc.pid).or_default().report.jitter_ms = Some(j);
            }
            pc.rtc.disconnect();
            let _ = self.poll.registry().deregister(&mut pc.sock);
            if pc.connected {
                self.live.connected.fetch_sub(1, Ordering::Relaxed);
            }
            self.free.push(i);
        }
    }

    /// See [`EngineHandle::rebind`].
    fn rebind(
        &mut self,
        pid: u64,
        publisher: bool,
        subscriber: bool,
    ) -> anyhow::Result<Option<String>> {
        let mut offer = None;
        for sub in [false, true] {
            if !(if sub { subscriber } else { publisher }) {
                continue;
            }
            let i = *self
                .by_key
                .get(&(pid, sub))
                .with_context(|| format!("participant {pid} has no such connection"))?;
            let (mut sock, local) = self.bind_socket()?;
            let registry = self.poll.registry();
            let pc = self.pcs[i].as_mut().context("closed")?;
            registry.register(&mut sock, Token(i), Interest::READABLE)?;
            let mut old = std::mem::replace(&mut pc.sock, sock);
            let _ = registry.deregister(&mut old);
            // Closing it is the point: the old address is gone with the old network.
            drop(old);
            let old_candidate = Candidate::host(pc.local, "udp").context("host candidate")?;
            pc.rtc.direct_api().invalidate_candidate(&old_candidate);
            pc.local = local;
            pc.switch = Some(Switch {
                at: Instant::now(),
                candidate: Some(Candidate::host(local, "udp").context("host candidate")?),
                restarted: false,
            });
            if !sub {
                // New credentials, no candidates kept: the new host candidate is added
                // once the answer has restarted the session (`publisher_answer`). An
                // ICE-lite server needs none in the offer, it answers our checks.
                let mut api = pc.rtc.sdp_api();
                api.ice_restart(false);
                let (o, pending) = api.apply().context("no ICE restart offer")?;
                pc.pending = Some(pending);
                offer = Some(o.to_sdp_string());
            }
        }
        Ok(offer)
    }

    fn create_publisher(&mut self, pid: u64) -> anyhow::Result<PublishOffer> {
        if self.by_key.contains_key(&(pid, false)) {
            return Err(anyhow!("participant {pid} already publishes"));
        }
        let i = self.new_pc(pid, false)?;
        let simulcast = self.cfg.simulcast.then(|| Simulcast {
            send: ["q", "h", "f"]
                .into_iter()
                .map(SimulcastLayer::new)
                .collect(),
            recv: vec![],
        });
        let pc = self.pcs[i].as_mut().expect("just created");
        let mut api = pc.rtc.sdp_api();
        let video_mid = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            Some("lg".into()),
            Some("camera".into()),
            simulcast,
        );
        let audio_mid = api.add_media(
            MediaKind::Audio,
            Direction::SendOnly,
            Some("lg".into()),
            Some("mic".into()),
            None,
        );
        let (offer, pending) = api.apply().context("no offer")?;
        pc.pending = Some(pending);
        let now = Instant::now();
        // Spread frames of different publishers over the frame interval.
        let jitter = Duration::from_micros(fastrand::u64(0..20_000));
        let layers = if self.cfg.simulcast {
            [("q", 16), ("h", 4), ("f", 1)]
                .into_iter()
                .map(|(r, scale)| Layer {
                    rid: Some(Rid::from(r)),
                    scale,
                    seq: fastrand::u64(1..30_000),
                })
                .collect()
        } else {
            vec![Layer {
                rid: None,
                scale: 1,
                seq: fastrand::u64(1..30_000),
            }]
        };
        pc.publisher = Some(PubState {
            video_mid,
            audio_mid,
            pts: None,
            layers,
            aseq: fastrand::u64(1..30_000),
            frame_no: 0,
            audio_no: 0,
            next_video: now + jitter,
            next_audio: now + jitter,
            last_key: None,
            key_due: true,
        });
        Ok(PublishOffer {
            sdp: offer.to_sdp_string(),
            video_mid: video_mid.to_string(),
            audio_mid: audio_mid.to_string(),
        })
    }

    fn publisher_answer(&mut self, pid: u64, sdp: &str) -> anyhow::Result<()> {
        let i = *self
            .by_key
            .get(&(pid, false))
            .context("no publisher connection")?;
        let pc = self.pcs[i].as_mut().context("closed")?;
        let pending = pc.pending.take().context("no offer pending")?;
        if self.cfg.simulcast && !sdp.contains("a=simulcast") {
            return Err(anyhow!(
                "--simulcast: the SFU's answer has no a=simulcast line, it did not accept the layers"
            ));
        }
        let answer = SdpAnswer::from_sdp_string(sdp).context("parse answer")?;
        pc.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .context("accept answer")?;
        let ufrag = ice_ufrag(sdp);
        if ufrag != pc.remote_ufrag
            && let Some(c) = pc.switch.as_mut().and_then(|s| s.candidate.take())
        {
            // New remote credentials: the answer restarted the session without local
            // candidates, the new socket's address is its only one. (An answer with the
            // old credentials restarted nothing; the candidate then stays out of the
            // old session, see the module docs.)
            pc.rtc.add_local_candidate(c);
        }
        pc.remote_ufrag = ufrag;
        let params = pc.rtc.codec_config().params().to_vec();
        let vpt = params.iter().find(|p| p.spec().codec == Codec::Vp8);
        let apt = params.iter().find(|p| p.spec().codec == Codec::Opus);
        if let (Some(v), Some(a), Some(ps)) = (vpt, apt, pc.publisher.as_mut()) {
            ps.pts = Some((v.pt(), a.pt()));
        } else {
            return Err(anyhow!("the answer has no VP8 or no Opus"));
        }
        let now = Instant::now();
        Self::drain(
            pc,
            &self.live,
            &mut self.latency,
            &mut self.send_drops,
            &mut self.parts,
            self.gap_mark,
            now,
        );
        Ok(())
    }

    fn subscriber_offer(&mut self, pid: u64, sdp: &str) -> anyhow::Result<String> {
        let i = match self.by_key.get(&(pid, true)) {
            Some(&i) => i,
            None => self.new_pc(pid, true)?,
        };
        let pc = self.pcs[i].as_mut().context("closed")?;
        let offer = SdpOffer::from_sdp_string(sdp).context("parse offer")?;
        let ufrag = ice_ufrag(sdp);
        if pc.remote_ufrag.is_some()
            && ufrag != pc.remote_ufrag
            && let Some(c) = pc.switch.as_mut().and_then(|s| s.candidate.take())
        {
            // New remote credentials: str0m restarts ICE inside `accept_offer`, keeping
            // the local candidates (the old one is invalidated), so the new one is added
            // just before: it belongs to the restarted session and is in our answer. No
            // poll happens in between, so the old session never uses it.
            pc.rtc.add_local_candidate(c);
        }
        let answer = pc
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .context("accept offer")?;
        pc.remote_ufrag = ufrag;
        let now = Instant::now();
        Self::drain(
            pc,
            &self.live,
            &mut self.latency,
            &mut self.send_drops,
            &mut self.parts,
            self.gap_mark,
            now,
        );
        Ok(answer.to_sdp_string())
    }

    /// Read one socket dry; returns its connection's next timeout.
    fn read(&mut self, i: usize, buf: &mut [u8]) -> Option<Instant> {
        let pc = self.pcs.get_mut(i)?.as_mut()?;
        loop {
            let (n, from) = match pc.sock.recv_from(buf) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            };
            let now = Instant::now();
            let Ok(r) = Receive::new(Protocol::Udp, from, pc.local, &buf[..n]) else {
                continue;
            };
            if pc.rtc.handle_input(Input::Receive(now, r)).is_err() {
                continue;
            }
            Self::drain(
                pc,
                &self.live,
                &mut self.latency,
                &mut self.send_drops,
                &mut self.parts,
                self.gap_mark,
                now,
            );
        }
        Some(pc.next_timeout)
    }

    /// Timeouts and media for every connection; returns the next deadline.
    fn tick(&mut self, now: Instant) -> Instant {
        let mut next = now + Duration::from_millis(50);
        for slot in self.pcs.iter_mut() {
            let Some(pc) = slot.as_mut() else { continue };
            let mut wrote = false;
            if pc.connected
                && let Some(ps) = pc.publisher.as_mut()
                && ps.pts.is_some()
            {
                let part = self.parts.entry(pc.pid).or_default();
                wrote = send_media(
                    &self.cfg,
                    &mut pc.rtc,
                    ps,
                    now,
                    &self.live,
                    &mut part.report,
                );
                next = next.min(ps.next_audio).min(ps.next_video);
            }
            if wrote || now >= pc.next_timeout {
                if pc.rtc.handle_input(Input::Timeout(now)).is_err() {
                    continue;
                }
                Self::drain(
                    pc,
                    &self.live,
                    &mut self.latency,
                    &mut self.send_drops,
                    &mut self.parts,
                    self.gap_mark,
                    now,
                );
            }
            next = next.min(pc.next_timeout);
        }
        next
    }

    /// Poll `pc` until its next timeout: send datagrams, account events.
    fn drain(
        pc: &mut Pc,
        live: &Live,
        latency: &mut Histogram,
        send_drops: &mut u64,
        parts: &mut HashMap<u64, Part>,
        gap_mark: Option<Instant>,
        now: Instant,
    ) {
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
                                    .or_insert_with(|| GapTracker::new(gap_mark))
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

    fn report(&self) -> EngineReport {
        let now = Instant::now();
        let mut parts: HashMap<u64, PartReport> = self
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
            latency_us: self.latency.clone(),
            send_drops: self.send_drops,
        }
    }
}

/// The first `a=ice-ufrag:` of an SDP.
fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
}

fn ms_since(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

/// Mean interarrival jitter of a connection's received streams, ms.
fn mean_jitter_ms(pc: &Pc) -> Option<f64> {
    if pc.streams.is_empty() {
        return None;
    }
    let sum: f64 = pc.streams.values().map(|s| s.jitter_us).sum();
    Some(sum / pc.streams.len() as f64 / 1000.0)
}

/// Write the due audio packet and video frame of one publisher; true if anything was
/// written.
fn send_media(
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

#[cfg(test)]
mod tests {
    //! The engine's peers against the real SFU driver in-process (signaling through the
    //! SFU's API, media over loopback UDP): publish, subscribe, stamped media arrives,
    //! key frame requests reach the publisher and key frames reach the subscriber.

    use super::*;
    use sfu::core::{Grants, TrackRequest};
    use sfu::{ParticipantId, Sfu, SfuConfig, SfuEvent, Source};

    #[test]
    fn peers_publish_and_subscribe_through_the_sfu() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A port range of our own (tests of other crates may run at the same time).
        let port = 46_000 + (std::process::id() % 400) as u16 * 10;
        let (sfu, mut events) = Sfu::start(SfuConfig {
            port_min: port,
            port_max: port + 9,
            shards: 1,
            ..SfuConfig::default()
        })
        .unwrap();
        let live = Arc::new(Live::default());
        let cfg = MediaCfg {
            video_kbps: 300,
            fps: 30,
            keyframe_interval: Duration::from_secs(600),
            audio_bytes: 80,
            simulcast: false,
        };
        let (eng, thread) = spawn(0, cfg, "127.0.0.1".parse().unwrap(), live.clone()).unwrap();
        let grants = Grants {
            publish: true,
            subscribe: true,
            proctor: false,
        };
        let report = rt.block_on(async {
            for id in [1, 2] {
                sfu.join(ParticipantId(id), "t", grants, 0.0).await.unwrap();
            }
            let offer = eng.publish(1).await.unwrap();
            let answer = sfu
                .publish(
                    ParticipantId(1),
                    offer.sdp,
                    vec![
                        TrackRequest {
                            mid: offer.video_mid,
                            source: Source::Camera,
                            muted: false,
                        },
                        TrackRequest {
                            mid: offer.audio_mid,
                            source: Source::Microphone,
                            muted: false,
                        },
                    ],
                )
                .await
                .unwrap();
            eng.publish_answer(1, answer.sdp).await.unwrap();
            // Participant 2 gets media; then participant 3 arrives long after the first
            // key frame (the next periodic one is 10 minutes away), so the key frame it
            // sees can only be the publisher's answer to the SFU's PLI.
            let mut joined3 = false;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "within 30 s: participant 2 media and participant 3 a key frame (joined 3: {joined3})"
                );
                while let Ok(ev) = events.try_recv() {
                    if let SfuEvent::SubscriberOffer {
                        participant, sdp, ..
                    } = ev
                    {
                        let a = eng.subscribe_offer(participant.0, sdp).await.unwrap();
                        sfu.answer(participant, a).await.unwrap();
                    }
                }
                let r = eng.report().await.unwrap();
                let sub = r.parts.get(&2).cloned().unwrap_or_default();
                if !joined3 && sub.rx_packets > 200 && sub.mids_with_media.len() == 2 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    sfu.join(ParticipantId(3), "t", grants, 0.0).await.unwrap();
                    joined3 = true;
                }
                let late = r.parts.get(&3).cloned().unwrap_or_default();
                if joined3 && late.keyframes_rx > 0 && late.rx_packets > 100 {
                    break r;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        eng.stop();
        thread.join().unwrap();
        sfu.shutdown();
        let publisher = &report.parts[&1];
        let sub = &report.parts[&2];
        assert!(publisher.pub_connected && sub.sub_connected);
        assert!(publisher.tx_packets >= sub.rx_packets / 2);
        assert!(
            publisher.keyframe_requests > 0,
            "the SFU asked the publisher for a key frame for the late subscriber"
        );
        assert!(sub.keyframes_rx > 0);
        assert!(sub.video_rx_packets > 0 && sub.video_rx_packets < sub.rx_packets);
        assert!(
            report.latency_us.count() >= sub.rx_packets,
            "every packet is stamped"
        );
        assert_eq!(sub.layer_switches_mid_frame, 0);
        assert!(sub.jitter_ms.is_some() || !sub.mids_with_media.is_empty());
        assert!(
            live.rx_packets.load(Ordering::Relaxed) >= sub.rx_packets
                && live.tx_packets.load(Ordering::Relaxed) >= publisher.tx_packets
        );
    }
}

#[cfg(test)]
mod rebind_tests;
