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
use str0m::change::SdpPendingOffer;
use str0m::media::{Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::Ssrc;
use str0m::{Candidate, Input, Rtc};
use tokio::sync::oneshot;

mod negotiate;
mod output;

use output::{mean_jitter_ms, send_media};

use crate::gaps::{GapReport, GapTracker};
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
        cert,
        pcs: Vec::new(),
        free: Vec::new(),
        by_key: HashMap::new(),
        sinks: Sinks {
            live,
            parts: HashMap::new(),
            gap_mark: None,
            latency: Histogram::default(),
            send_drops: 0,
        },
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

/// Where every connection's output is accounted: what draining a connection writes to,
/// kept apart from the connection table so that a connection (borrowed from `pcs`) and
/// the sinks can be borrowed mutably at once.
struct Sinks {
    live: Arc<Live>,
    parts: HashMap<u64, Part>,
    /// The last [`Cmd::MarkGaps`] (trackers created later count from it).
    gap_mark: Option<Instant>,
    latency: Histogram,
    send_drops: u64,
}

struct Engine {
    poll: Poll,
    rx: std::sync::mpsc::Receiver<Cmd>,
    cfg: MediaCfg,
    bind_ip: IpAddr,
    cert: Option<str0m::config::DtlsCert>,
    pcs: Vec<Option<Pc>>,
    free: Vec<usize>,
    by_key: HashMap<(u64, bool), usize>,
    sinks: Sinks,
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
                    self.sinks.gap_mark = Some(at);
                    for part in self.sinks.parts.values_mut() {
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
        self.sinks.parts.entry(pid).or_default();
        Ok(i)
    }

    fn close_slot(&mut self, i: usize) {
        if let Some(mut pc) = self.pcs[i].take() {
            if let Some(j) = mean_jitter_ms(&pc) {
                self.sinks.parts.entry(pc.pid).or_default().report.jitter_ms = Some(j);
            }
            pc.rtc.disconnect();
            let _ = self.poll.registry().deregister(&mut pc.sock);
            if pc.connected {
                self.sinks.live.connected.fetch_sub(1, Ordering::Relaxed);
            }
            self.free.push(i);
        }
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
            self.sinks.drain(pc, now);
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
                let part = self.sinks.parts.entry(pc.pid).or_default();
                wrote = send_media(
                    &self.cfg,
                    &mut pc.rtc,
                    ps,
                    now,
                    &self.sinks.live,
                    &mut part.report,
                );
                next = next.min(ps.next_audio).min(ps.next_video);
            }
            if wrote || now >= pc.next_timeout {
                if pc.rtc.handle_input(Input::Timeout(now)).is_err() {
                    continue;
                }
                self.sinks.drain(pc, now);
            }
            next = next.min(pc.next_timeout);
        }
        next
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod rebind_tests;
