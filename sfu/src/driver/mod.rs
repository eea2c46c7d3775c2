//! The I/O shell around [`ShardCore`]: shard threads, their sockets, and the async
//! handle signaling talks to.
//!
//! - The media port range is split across shards: shard `i` of `n` owns ports
//!   `port_min + i, port_min + i + n, ...`. Each shard binds its own sockets, so no
//!   socket, lock or room is shared between threads.
//! - A room lives on one shard (the least loaded when the room starts), so forwarding
//!   never crosses threads. Commands reach the shard over a channel plus a `mio::Waker`;
//!   replies come back on oneshot channels; events on one unbounded channel.
//! - [`Sfu::join`] does not wait for the shard: admission (room size) is decided here,
//!   under the placement lock, and the join is posted. A join ack therefore never waits
//!   for a shard thread to be scheduled (under a join storm on a loaded machine that hop
//!   was most of the server's share of a join: p95 17 ms, BENCHMARKS.md section 10).
//!   Nothing can overtake the posted join: every later call about the participant goes
//!   to the same shard's FIFO channel.
//! - One loop turn: wait (mio) until a socket is readable, a command arrives or the core's
//!   timeout is due; read every readable socket in `recvmmsg` batches (bounded per turn so
//!   one flooded port cannot starve the rest); hand each datagram to the core; `flush`;
//!   run timers; send everything the core produced with `sendmmsg`, grouped per socket.
//! - In-process hand-over (the co-located TURN relay): [`Sfu::inject`] puts a datagram on
//!   a shard's command channel as if it had arrived on one of its sockets, and datagrams
//!   the core sends to a *virtual remote* ([`Sfu::set_virtual_remote`]) go to that
//!   remote's channel instead of `sendmmsg`. The table is the shard's own (filled by
//!   commands), so the send path takes no lock; wake-ups are coalesced with a flag.

pub mod batch;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc as tmpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::config::SfuConfig;
use crate::core::simulcast::Quality;
use crate::core::{
    Counts, Grants, PeerMsg, PublishAnswer, RemovalReason, SfuEvent, ShardCore, ShardStats,
    TrackRequest, TrackView,
};
use crate::error::SfuError;
use crate::ids::{ParticipantId, Role, Source, TrackId};
use crate::placement::{Placement, Span};
use batch::{RecvBatch, SendBatch};

const WAKER: Token = Token(usize::MAX);
/// Most datagrams read from one socket per loop turn before moving on.
const READ_BUDGET: usize = 256;
/// Most commands handled per loop turn.
const COMMAND_BUDGET: usize = 64;
/// Most messages from other shards (relayed packets, mostly) handled per loop turn.
const PEER_BUDGET: usize = 1024;

/// Work for a shard: run on its thread with its core and the current time. Every call
/// from signaling is one of these (the reply channel is inside), so a new command is its
/// `ShardCore` method plus one `Sfu` method, nothing else.
type ShardJob = Box<dyn FnOnce(&mut ShardCore, Instant) + Send>;

enum Command {
    /// A call from signaling.
    Run(ShardJob),
    /// Add (`Some`) or remove a virtual remote.
    Virtual {
        addr: SocketAddr,
        out: Option<VirtualOut>,
    },
    Shutdown,
}

/// Where datagrams for a virtual remote go: `(destination, our source address, data)`.
pub type VirtualOut = tmpsc::Sender<(SocketAddr, SocketAddr, Vec<u8>)>;

/// A datagram handed over in process (see [`Sfu::inject`]).
struct Injected {
    port_idx: usize,
    from: SocketAddr,
    data: Vec<u8>,
}

/// The lock-free path into one shard for injected datagrams: a channel of their own, so a
/// burst of relayed media never queues signaling's commands behind it (nor the reverse),
/// and each loop turn takes at most READ_BUDGET of them, like a socket.
struct InjectPath {
    tx: mpsc::Sender<Injected>,
    /// Commands (virtual remotes) go on the shard's command channel.
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    /// Set by injectors, cleared by the shard before it drains its commands: one
    /// wake-up per burst instead of one per datagram.
    pending: Arc<AtomicBool>,
}

struct ShardHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    stats: Arc<Mutex<SharedStats>>,
}

/// Where rooms and participants live ([`Placement`]), and the shards' command paths so
/// span changes are posted while its lock is held. Shared with the shard threads: a shard
/// that removes a participant by itself (consent timeout, transport failure) forgets it
/// before the event leaves, so signaling never keeps the driver's counts right by hand.
struct Places {
    placement: Mutex<Placement>,
    posters: Vec<Poster>,
}

/// One shard's command path.
struct Poster {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
}

impl Places {
    fn lock(&self) -> std::sync::MutexGuard<'_, Placement> {
        self.placement.lock().expect("placement lock")
    }

    fn post(&self, shard: usize, job: ShardJob) -> Result<(), SfuError> {
        let p = self.posters.get(shard).ok_or(SfuError::ShardGone)?;
        p.tx.send(Command::Run(job))
            .map_err(|_| SfuError::ShardGone)?;
        let _ = p.waker.wake();
        Ok(())
    }

    /// Tell the shards concerned that a room spans one shard more or less. Called with
    /// the placement lock held, so every shard sees span changes in the placement's order.
    fn apply(&self, span: Span) {
        match span {
            Span::Joined {
                room,
                shard,
                others,
            } => {
                let (r, o) = (room.clone(), others.clone());
                let _ = self.post(shard, Box::new(move |core, _| core.span_set(&r, o)));
                for other in others {
                    let r = room.clone();
                    let _ = self.post(other, Box::new(move |core, _| core.span_add(&r, shard)));
                }
                debug!(room = %room, shard, "room spans one more shard");
            }
            Span::Left {
                room,
                shard,
                others,
            } => {
                let r = room.clone();
                let _ = self.post(shard, Box::new(move |core, _| core.span_clear(&r)));
                for other in others {
                    let r = room.clone();
                    let _ = self.post(other, Box::new(move |core, _| core.span_remove(&r, shard)));
                }
            }
        }
    }

    /// The participant is gone: forget it, and post the span change if any.
    fn forget(&self, participant: ParticipantId) {
        let mut pl = self.lock();
        if let Some(span) = pl.forget(participant) {
            self.apply(span);
        }
    }
}

/// A shard's path for messages from the other shards of a spanning room (`core::span`):
/// a channel of its own (media must not queue behind commands, nor the reverse), with
/// wake-ups coalesced like [`InjectPath`]'s.
struct PeerPath {
    tx: mpsc::Sender<(usize, PeerMsg)>,
    waker: Arc<Waker>,
    pending: Arc<AtomicBool>,
}

/// Summed counters of all shards (refreshed by each shard every ~100 ms).
pub type SfuStats = ShardStats;

/// What a shard publishes for scrapes: its counters and (mean loss, samples).
type SharedStats = (ShardStats, Option<(f32, usize)>);

/// The running SFU: shard threads plus the routing of commands to them.
pub struct Sfu {
    shards: Mutex<Vec<ShardHandle>>,
    places: Arc<Places>,
    /// The room-size limit ([`SfuConfig::max_participants_per_room`]), checked at
    /// admission in [`Sfu::join`].
    max_per_room: usize,
    /// The events channel, for a posted join the shard refuses (see [`Sfu::join`]).
    events: tmpsc::UnboundedSender<SfuEvent>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    ports: Vec<Vec<u16>>,
    port_min: u16,
    inject: Vec<InjectPath>,
}

impl Sfu {
    /// Bind the media ports and start the shard threads. Events for signaling arrive on
    /// the returned receiver.
    pub fn start(cfg: SfuConfig) -> io::Result<(Arc<Sfu>, tmpsc::UnboundedReceiver<SfuEvent>)> {
        if cfg.port_max < cfg.port_min {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "media port range is empty",
            ));
        }
        let nports = usize::from(cfg.port_max - cfg.port_min) + 1;
        let want = if cfg.shards == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            cfg.shards
        };
        let nshards = want.clamp(1, nports);
        let (ev_tx, ev_rx) = tmpsc::unbounded_channel();
        let track_ids = Arc::new(AtomicU64::new(0));
        let mut shards = Vec::new();
        let mut threads = Vec::new();
        let mut all_ports = Vec::new();
        let mut inject = Vec::new();
        let bind_ip = match cfg.bind_ip {
            Some(ip) => ip,
            None => {
                // Is the advertised address ours? Binding it is the test.
                let probe = std::net::UdpSocket::bind(SocketAddr::new(cfg.advertise_ip, 0));
                if probe.is_ok() {
                    cfg.advertise_ip
                } else {
                    info!(advertise = %cfg.advertise_ip, "advertised IP is not local (NAT/container): binding media on the wildcard address");
                    if cfg.advertise_ip.is_ipv4() {
                        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                    } else {
                        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                    }
                }
            }
        };
        // First every shard's channels, so each thread can be handed all the others'.
        struct Parts {
            ports: Vec<u16>,
            sockets: Vec<UdpSocket>,
            poll: Poll,
            rx: mpsc::Receiver<Command>,
            inject_rx: mpsc::Receiver<Injected>,
            peer_rx: mpsc::Receiver<(usize, PeerMsg)>,
            pending: Arc<AtomicBool>,
            stats: Arc<Mutex<SharedStats>>,
        }
        let mut parts = Vec::new();
        let mut posters = Vec::new();
        let mut peer_paths = Vec::new();
        for i in 0..nshards {
            let ports: Vec<u16> = (cfg.port_min..=cfg.port_max)
                .skip(i)
                .step_by(nshards)
                .collect();
            let mut sockets = Vec::new();
            for &port in &ports {
                sockets.push(bind_media_socket(SocketAddr::new(bind_ip, port))?);
            }
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (tx, rx) = mpsc::channel();
            let stats = Arc::new(Mutex::new((ShardStats::default(), None)));
            let pending = Arc::new(AtomicBool::new(false));
            let (inject_tx, inject_rx) = mpsc::channel();
            let (peer_tx, peer_rx) = mpsc::channel();
            inject.push(InjectPath {
                tx: inject_tx,
                commands: tx.clone(),
                waker: waker.clone(),
                pending: pending.clone(),
            });
            peer_paths.push(PeerPath {
                tx: peer_tx,
                waker: waker.clone(),
                pending: pending.clone(),
            });
            posters.push(Poster {
                tx: tx.clone(),
                waker: waker.clone(),
            });
            shards.push(ShardHandle {
                tx,
                waker,
                stats: stats.clone(),
            });
            parts.push(Parts {
                ports,
                sockets,
                poll,
                rx,
                inject_rx,
                peer_rx,
                pending,
                stats,
            });
        }
        let places = Arc::new(Places {
            placement: Mutex::new(Placement::new(nshards, cfg.room_span_after)),
            posters,
        });
        let peer_paths = Arc::new(peer_paths);
        for (i, part) in parts.into_iter().enumerate() {
            let mut core = ShardCore::new(cfg.clone(), part.ports.clone(), track_ids.clone());
            core.set_shard_index(i);
            let shard = ShardThread {
                index: i,
                core,
                poll: part.poll,
                sockets: part.sockets,
                rx: part.rx,
                injected: part.inject_rx,
                peer_rx: part.peer_rx,
                peers: peer_paths.clone(),
                events: ev_tx.clone(),
                places: places.clone(),
                stats: part.stats,
                advertise_ip: cfg.advertise_ip,
                ports: part.ports.clone(),
                virtuals: HashMap::new(),
                pending: part.pending,
                on_idle: cfg.on_thread_idle,
            };
            let handle = std::thread::Builder::new()
                .name(format!("sfu-shard-{i}"))
                .spawn(move || shard.run())?;
            threads.push(handle);
            all_ports.push(part.ports);
        }
        info!(
            shards = nshards,
            ports = %format!("{}-{}", cfg.port_min, cfg.port_max),
            advertise = %cfg.advertise_ip,
            bind = %bind_ip,
            "media listening on UDP"
        );
        Ok((
            Arc::new(Sfu {
                shards: Mutex::new(shards),
                places,
                max_per_room: cfg.max_participants_per_room,
                events: ev_tx,
                threads: Mutex::new(threads),
                ports: all_ports,
                port_min: cfg.port_min,
                inject,
            }),
            ev_rx,
        ))
    }

    /// Number of shard threads.
    pub fn shard_count(&self) -> usize {
        self.ports.len()
    }

    /// Hand a datagram to the shard owning media port `to_port`, as if it had arrived
    /// there from `from`. False when the port is not ours or the shard is gone.
    pub fn inject(&self, to_port: u16, from: SocketAddr, data: Vec<u8>) -> bool {
        let n = self.inject.len();
        let Some(off) = to_port.checked_sub(self.port_min).map(usize::from) else {
            return false;
        };
        let (shard, port_idx) = (off % n, off / n);
        let Some(p) = self.inject.get(shard) else {
            return false;
        };
        if port_idx >= self.ports[shard].len() {
            return false;
        }
        if p.tx
            .send(Injected {
                port_idx,
                from,
                data,
            })
            .is_err()
        {
            return false;
        }
        if !p.pending.swap(true, Ordering::AcqRel) {
            let _ = p.waker.wake();
        }
        true
    }

    /// Make `addr` a virtual remote on every shard (`Some`): what the SFU sends there
    /// goes to `out`; `None` removes it.
    pub fn set_virtual_remote(&self, addr: SocketAddr, out: Option<VirtualOut>) {
        for p in &self.inject {
            let _ = p.commands.send(Command::Virtual {
                addr,
                out: out.clone(),
            });
            if !p.pending.swap(true, Ordering::AcqRel) {
                let _ = p.waker.wake();
            }
        }
    }

    /// Summed counters.
    pub fn stats(&self) -> SfuStats {
        let shards = self.shards.lock().expect("shards lock");
        let mut s = ShardStats::default();
        for h in shards.iter() {
            s.add(&h.stats.lock().expect("stats lock").0);
        }
        s
    }

    /// Mean fraction lost reported by subscribers' receiver reports (refreshed every ~100 ms).
    pub fn subscriber_loss(&self) -> Option<f32> {
        let shards = self.shards.lock().expect("shards lock");
        let (sum, n) = shards
            .iter()
            .filter_map(|h| h.stats.lock().expect("stats lock").1)
            .fold((0.0f32, 0usize), |(s, n), (l, k)| (s + l * k as f32, n + k));
        (n > 0).then(|| sum / n as f32)
    }

    /// Live object counts summed over shards.
    pub async fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for shard in 0..self.shard_count() {
            if let Ok(x) = self.on_shard(shard, |core, _| Ok(core.counts())).await {
                c.rooms += x.rooms;
                c.participants += x.participants;
                c.transports += x.transports;
                c.producers += x.producers;
                c.consumers += x.consumers;
                c.routes += x.routes;
                c.timers += x.timers;
            }
        }
        c
    }

    /// Join `participant` to `room` (placing the room on the shard with fewest rooms if new).
    ///
    /// Returns once the join is admitted and posted to the shard, without waiting for it
    /// (see the module docs): `RoomFull` is decided here, from the placement counts. The
    /// shard can then only refuse what cannot happen (the id joined twice, a count that
    /// disagrees); it logs that, forgets the placement and reports
    /// [`SfuEvent::ParticipantRemoved`] with [`RemovalReason::JoinRefused`].
    pub fn join(
        &self,
        participant: ParticipantId,
        room: &str,
        grants: Grants,
        impair_loss: f32,
    ) -> Result<(), SfuError> {
        let room_name: Arc<str> = Arc::from(room);
        let places = self.places.clone();
        let events = self.events.clone();
        let job: ShardJob = Box::new(move |core, now| {
            if let Err(e) = core.join(now, participant, &room_name, grants, impair_loss) {
                error!(%participant, room = %room_name, "shard refused an admitted join: {e}");
                places.forget(participant);
                let _ = events.send(SfuEvent::ParticipantRemoved {
                    room: room_name,
                    participant,
                    reason: RemovalReason::JoinRefused,
                });
            }
        });
        // Decided and posted under the placement lock: a span change reaches the shards
        // before this join, and before any later placement's changes.
        let mut placement = self.places.lock();
        if placement.room_size(room) >= self.max_per_room {
            return Err(SfuError::RoomFull);
        }
        let placed = placement.place(participant, room);
        if let Some(span) = placed.span {
            self.places.apply(span);
        }
        let r = self.places.post(placed.shard, job);
        if r.is_err()
            && let Some(span) = placement.forget(participant)
        {
            self.places.apply(span);
        }
        r
    }

    /// Accept a publisher offer.
    pub async fn publish(
        &self,
        participant: ParticipantId,
        offer: String,
        tracks: Vec<TrackRequest>,
    ) -> Result<PublishAnswer, SfuError> {
        self.on_participant(participant, move |core, now| {
            core.publish(now, participant, &offer, &tracks)
        })
        .await
    }

    /// Apply the subscriber PC's answer.
    pub async fn answer(&self, participant: ParticipantId, answer: String) -> Result<(), SfuError> {
        self.on_participant(participant, move |core, now| {
            core.subscriber_answer(now, participant, &answer)
        })
        .await
    }

    /// Restart ICE on the participant's subscriber transport (a new offer follows).
    pub async fn restart_ice(&self, participant: ParticipantId) -> Result<(), SfuError> {
        self.on_participant(participant, move |core, now| {
            core.restart_ice(now, participant)
        })
        .await
    }

    /// Add a trickled remote candidate.
    pub async fn candidate(
        &self,
        participant: ParticipantId,
        role: Role,
        candidate: String,
    ) -> Result<(), SfuError> {
        self.on_participant(participant, move |core, now| {
            core.remote_candidate(now, participant, role, &candidate)
        })
        .await
    }

    /// Mute or unmute a track.
    pub async fn mute(
        &self,
        participant: ParticipantId,
        track: TrackId,
        muted: bool,
    ) -> Result<(), SfuError> {
        self.on_participant(participant, move |core, _| {
            core.mute(participant, track, muted)
        })
        .await
    }

    /// The simulcast layer quality `subscriber` wants for `publisher`'s `source`.
    pub async fn set_quality(
        &self,
        subscriber: ParticipantId,
        publisher: ParticipantId,
        source: Source,
        quality: Quality,
    ) -> Result<(), SfuError> {
        self.on_participant(subscriber, move |core, now| {
            core.set_quality(now, subscriber, publisher, source, quality)
        })
        .await
    }

    /// How `subscriber` displays remote videos (adaptive stream, see `core/adaptive.rs`);
    /// returns the tracks it does not receive.
    pub async fn set_views(
        &self,
        subscriber: ParticipantId,
        views: Vec<(TrackId, TrackView)>,
    ) -> Result<Vec<TrackId>, SfuError> {
        self.on_participant(subscriber, move |core, now| {
            core.set_views(now, subscriber, &views)
        })
        .await
    }

    /// Unpublish a track.
    pub async fn unpublish(
        &self,
        participant: ParticipantId,
        track: TrackId,
    ) -> Result<(), SfuError> {
        self.on_participant(participant, move |core, _| {
            core.unpublish(participant, track)
        })
        .await
    }

    /// Remove a participant and everything it owns.
    pub async fn leave(&self, participant: ParticipantId) -> Result<(), SfuError> {
        let r = self
            .on_participant(participant, move |core, _| core.leave(participant))
            .await;
        self.places.forget(participant);
        r
    }

    /// Stop all shard threads and wait for them.
    pub fn shutdown(&self) {
        {
            let shards = self.shards.lock().expect("shards lock");
            for h in shards.iter() {
                let _ = h.tx.send(Command::Shutdown);
                let _ = h.waker.wake();
            }
        }
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Run `job` on the shard hosting `participant` and wait for its result.
    async fn on_participant<T: Send + 'static>(
        &self,
        participant: ParticipantId,
        job: impl FnOnce(&mut ShardCore, Instant) -> Result<T, SfuError> + Send + 'static,
    ) -> Result<T, SfuError> {
        let shard = self
            .places
            .lock()
            .shard_of(participant)
            .ok_or(SfuError::NotJoined)?;
        self.on_shard(shard, job).await
    }

    /// Run `job` on shard `shard` and wait for its result.
    async fn on_shard<T: Send + 'static>(
        &self,
        shard: usize,
        job: impl FnOnce(&mut ShardCore, Instant) -> Result<T, SfuError> + Send + 'static,
    ) -> Result<T, SfuError> {
        let (tx, rx) = oneshot::channel();
        let run: ShardJob = Box::new(move |core, now| {
            let _ = tx.send(job(core, now));
        });
        self.post(shard, run)?;
        rx.await.map_err(|_| SfuError::ShardGone)?
    }

    /// Queue `job` on shard `shard` and wake it; does not wait for it to run.
    fn post(&self, shard: usize, job: ShardJob) -> Result<(), SfuError> {
        let shards = self.shards.lock().expect("shards lock");
        let h = shards.get(shard).ok_or(SfuError::ShardGone)?;
        h.tx.send(Command::Run(job))
            .map_err(|_| SfuError::ShardGone)?;
        let _ = h.waker.wake();
        Ok(())
    }
}

fn bind_media_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Big buffers absorb bursts (a keyframe fanned out to many subscribers).
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind media port {addr}: {e}")))?;
    Ok(UdpSocket::from_std(s.into()))
}

struct ShardThread {
    index: usize,
    core: ShardCore,
    poll: Poll,
    sockets: Vec<UdpSocket>,
    rx: mpsc::Receiver<Command>,
    injected: mpsc::Receiver<Injected>,
    /// Messages from the other shards of spanning rooms.
    peer_rx: mpsc::Receiver<(usize, PeerMsg)>,
    /// Every shard's peer path (this one's included, unused).
    peers: Arc<Vec<PeerPath>>,
    events: tmpsc::UnboundedSender<SfuEvent>,
    places: Arc<Places>,
    stats: Arc<Mutex<SharedStats>>,
    advertise_ip: IpAddr,
    ports: Vec<u16>,
    /// Virtual remotes (hand-over to the co-located TURN relay); owned by this thread.
    virtuals: HashMap<SocketAddr, VirtualOut>,
    pending: Arc<AtomicBool>,
    /// `SfuConfig::on_thread_idle`.
    on_idle: Option<fn()>,
}

impl ShardThread {
    fn run(mut self) {
        for (i, s) in self.sockets.iter_mut().enumerate() {
            if let Err(e) = self
                .poll
                .registry()
                .register(s, Token(i), Interest::READABLE)
            {
                error!(shard = self.index, "register socket: {e}");
                return;
            }
        }
        let mut events = Events::with_capacity(256);
        let mut readable = vec![true; self.sockets.len()];
        let mut recv = RecvBatch::default();
        let mut send = SendBatch::default();
        let mut out: Vec<Vec<(SocketAddr, Vec<u8>)>> = vec![Vec::new(); self.sockets.len()];
        let mut last_stats = Instant::now();
        let mut send_drops: u64 = 0;
        let mut total_send_drops: u64 = 0;
        let mut latency = ShardStats::default();
        let mut forwarded_before = 0u64;
        // Commands left over from the last turn (more than COMMAND_BUDGET were queued).
        let mut commands_left = false;
        // Injected datagrams left over from the last turn.
        let mut injected_left = false;
        // Messages from other shards left over from the last turn.
        let mut peer_left = false;
        loop {
            let now = Instant::now();
            let busy = commands_left || injected_left || peer_left || readable.iter().any(|r| *r);
            let timeout = if busy {
                Duration::ZERO
            } else {
                self.core
                    .poll_timeout()
                    .map(|t| t.saturating_duration_since(now))
                    .unwrap_or(Duration::from_millis(100))
                    .min(Duration::from_millis(100))
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                error!(shard = self.index, "poll: {e}");
            }
            let mut wake = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    wake = true;
                } else if let Some(r) = readable.get_mut(ev.token().0) {
                    *r = true;
                }
            }
            let now = Instant::now();
            let turn_start = now;
            if wake || busy {
                // Cleared before draining: an injector arriving after this wakes us again.
                self.pending.store(false, Ordering::Release);
                match self.drain_commands(COMMAND_BUDGET) {
                    Ok(left) => commands_left = left,
                    Err(()) => return,
                }
                injected_left = self.drain_injected(now, READ_BUDGET);
                peer_left = self.drain_peers(now, PEER_BUDGET);
            }
            #[allow(clippy::needless_range_loop)] // `i` indexes sockets, flags and the core's ports
            for i in 0..self.sockets.len() {
                if !readable[i] {
                    continue;
                }
                let fd = self.sockets[i].as_raw_fd();
                let mut read = 0;
                loop {
                    match recv.recv(fd) {
                        Ok(n) => {
                            for k in 0..n {
                                if let Some((from, data)) = recv.get(k) {
                                    self.core.handle_datagram(now, i, from, data);
                                }
                            }
                            read += n;
                            if n < batch::BATCH {
                                readable[i] = false;
                                break;
                            }
                            if read >= READ_BUDGET {
                                break; // still readable; next turn
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            readable[i] = false;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            // ICMP errors surface here (ECONNREFUSED); not fatal.
                            debug!(shard = self.index, "recv: {e}");
                            break;
                        }
                    }
                }
            }
            self.core.flush(now);
            self.core.handle_timeout(Instant::now());
            // Commands that arrived while we read: a second budgeted helping, so joins are
            // not delayed by a turn under load; whatever is left waits for the next turn.
            if !commands_left {
                match self.drain_commands(COMMAND_BUDGET) {
                    Ok(left) => commands_left = left,
                    Err(()) => return,
                }
            }
            self.core.flush(Instant::now());
            self.send_to_peers();
            while let Some(tx) = self.core.poll_transmit() {
                if !self.virtuals.is_empty()
                    && let Some(v) = self.virtuals.get(&tx.destination)
                {
                    let src = SocketAddr::new(self.advertise_ip, self.ports[tx.port_idx]);
                    if v.try_send((tx.destination, src, tx.data)).is_err() {
                        send_drops += 1;
                        total_send_drops += 1;
                    }
                    continue;
                }
                out[tx.port_idx].push((tx.destination, tx.data));
            }
            for (i, q) in out.iter_mut().enumerate() {
                if q.is_empty() {
                    continue;
                }
                let items: Vec<(SocketAddr, &[u8])> =
                    q.iter().map(|(a, d)| (*a, d.as_slice())).collect();
                let (n, err) = send.send(self.sockets[i].as_raw_fd(), &items);
                if n < items.len() {
                    send_drops += (items.len() - n) as u64;
                    total_send_drops += (items.len() - n) as u64;
                    debug!(
                        shard = self.index,
                        dropped = items.len() - n,
                        "send: {:?}",
                        err
                    );
                }
                q.clear();
            }
            // Forwarding latency: from the start of this turn (datagrams read) to the
            // fan-out handed to the kernel, weighted by the packets forwarded this turn.
            let forwarded = self.core.stats().rtp_forwarded;
            if forwarded > forwarded_before {
                let us = turn_start.elapsed().as_micros() as u64;
                latency.observe_latency(us, forwarded - forwarded_before);
                forwarded_before = forwarded;
            }
            while let Some(ev) = self.core.poll_event() {
                if let SfuEvent::ParticipantRemoved { participant, .. } = &ev {
                    self.places.forget(*participant);
                }
                let _ = self.events.send(ev);
            }
            if last_stats.elapsed() >= Duration::from_millis(100) {
                last_stats = Instant::now();
                if self.core.is_idle() {
                    // The send queues grew to the busiest turn's size; an idle shard
                    // gives that back (core::compact_map says why).
                    for q in &mut out {
                        crate::core::compact_vec(q);
                    }
                    if let Some(hook) = self.on_idle {
                        hook();
                    }
                }
                let mut st = self.core.stats();
                st.send_drops = total_send_drops;
                st.latency_buckets = latency.latency_buckets;
                st.latency_sum_us = latency.latency_sum_us;
                let loss = self.core.subscriber_loss();
                if let Ok(mut s) = self.stats.lock() {
                    *s = (st, loss);
                }
                if send_drops > 0 {
                    warn!(
                        shard = self.index,
                        send_drops, "socket send buffer full: datagrams dropped"
                    );
                    send_drops = 0;
                }
            }
        }
    }

    fn command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Run(job) => job(&mut self.core, now),
            Command::Virtual { addr, out } => match out {
                Some(o) => {
                    self.virtuals.insert(addr, o);
                }
                None => {
                    self.virtuals.remove(&addr);
                }
            },
            Command::Shutdown => {}
        }
    }

    /// Feed up to `budget` messages from other shards to the core; true when some are left.
    fn drain_peers(&mut self, now: Instant, budget: usize) -> bool {
        for _ in 0..budget {
            match self.peer_rx.try_recv() {
                Ok((from, msg)) => self.core.handle_peer(now, from, msg),
                Err(_) => return false,
            }
        }
        true
    }

    /// Hand what the core has for other shards to their peer paths (one wake-up per
    /// burst per shard).
    fn send_to_peers(&mut self) {
        while let Some((to, msg)) = self.core.poll_peer() {
            let Some(p) = self.peers.get(to) else {
                continue;
            };
            if p.tx.send((self.index, msg)).is_ok() && !p.pending.swap(true, Ordering::AcqRel) {
                let _ = p.waker.wake();
            }
        }
    }

    /// Feed up to `budget` injected datagrams to the core; true when some are left.
    fn drain_injected(&mut self, now: Instant, budget: usize) -> bool {
        for _ in 0..budget {
            match self.injected.try_recv() {
                Ok(d) => self.core.handle_datagram(now, d.port_idx, d.from, &d.data),
                Err(_) => return false,
            }
        }
        true
    }

    /// Handle up to `budget` queued commands. `Err(())` on shutdown; `Ok(true)` when
    /// commands are left for the next loop turn.
    fn drain_commands(&mut self, budget: usize) -> Result<bool, ()> {
        for _ in 0..budget {
            match self.rx.try_recv() {
                Ok(Command::Shutdown) => {
                    info!(shard = self.index, "shard stopping");
                    return Err(());
                }
                Ok(cmd) => self.command(Instant::now(), cmd),
                Err(_) => return Ok(false),
            }
        }
        Ok(true)
    }
}
