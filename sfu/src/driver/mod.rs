//! The I/O shell around [`ShardCore`]: shard threads, their sockets, and the async
//! handle signaling talks to.
//!
//! - The media port range is split across shards: shard `i` of `n` owns ports
//!   `port_min + i, port_min + i + n, ...`. Each shard binds its own sockets, so no
//!   socket, lock or room is shared between threads.
//! - A room lives on one shard (the least loaded when the room starts), so forwarding
//!   never crosses threads. Commands reach the shard over a channel plus a `mio::Waker`;
//!   replies come back on oneshot channels; events on one unbounded channel.
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
use crate::core::{Counts, Grants, PublishAnswer, SfuEvent, ShardCore, ShardStats, TrackRequest};
use crate::error::SfuError;
use crate::ids::{ParticipantId, Role, Source, TrackId};
use batch::{RecvBatch, SendBatch};

const WAKER: Token = Token(usize::MAX);
/// Most datagrams read from one socket per loop turn before moving on.
const READ_BUDGET: usize = 256;
/// Most commands handled per loop turn.
const COMMAND_BUDGET: usize = 64;

type Reply<T> = oneshot::Sender<Result<T, SfuError>>;

enum Command {
    Join {
        participant: ParticipantId,
        room: String,
        grants: Grants,
        impair_loss: f32,
        reply: Reply<()>,
    },
    Publish {
        participant: ParticipantId,
        offer: String,
        tracks: Vec<TrackRequest>,
        reply: Reply<PublishAnswer>,
    },
    Answer {
        participant: ParticipantId,
        answer: String,
        reply: Reply<()>,
    },
    RestartIce {
        participant: ParticipantId,
        reply: Reply<()>,
    },
    Candidate {
        participant: ParticipantId,
        role: Role,
        candidate: String,
        reply: Reply<()>,
    },
    Mute {
        participant: ParticipantId,
        track: TrackId,
        muted: bool,
        reply: Reply<()>,
    },
    SetQuality {
        subscriber: ParticipantId,
        publisher: ParticipantId,
        source: Source,
        quality: Quality,
        reply: Reply<()>,
    },
    Unpublish {
        participant: ParticipantId,
        track: TrackId,
        reply: Reply<()>,
    },
    Leave {
        participant: ParticipantId,
        reply: Reply<()>,
    },
    Counts {
        reply: oneshot::Sender<Counts>,
    },
    /// A datagram handed over in process (see [`Sfu::inject`]).
    Inject {
        port_idx: usize,
        from: SocketAddr,
        data: Vec<u8>,
    },
    /// Add (`Some`) or remove a virtual remote.
    Virtual {
        addr: SocketAddr,
        out: Option<VirtualOut>,
    },
    Shutdown,
}

/// Where datagrams for a virtual remote go: `(destination, our source address, data)`.
pub type VirtualOut = tmpsc::Sender<(SocketAddr, SocketAddr, Vec<u8>)>;

/// The lock-free path into one shard for injected datagrams.
struct InjectPath {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    /// Set by injectors, cleared by the shard before it drains its commands: one
    /// wake-up per burst instead of one per datagram.
    pending: Arc<AtomicBool>,
}

struct ShardHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    stats: Arc<Mutex<SharedStats>>,
    rooms: usize,
}

/// Summed counters of all shards (refreshed by each shard every ~100 ms).
pub type SfuStats = ShardStats;

/// What a shard publishes for scrapes: its counters and (mean loss, samples).
type SharedStats = (ShardStats, Option<(f32, usize)>);

/// The running SFU: shard threads plus the routing of commands to them.
pub struct Sfu {
    shards: Mutex<Vec<ShardHandle>>,
    rooms: Mutex<HashMap<String, (usize, usize)>>,
    participants: Mutex<HashMap<ParticipantId, (usize, String)>>,
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
            let core = ShardCore::new(cfg.clone(), ports.clone(), track_ids.clone());
            let pending = Arc::new(AtomicBool::new(false));
            inject.push(InjectPath {
                tx: tx.clone(),
                waker: waker.clone(),
                pending: pending.clone(),
            });
            let shard = ShardThread {
                index: i,
                core,
                poll,
                sockets,
                rx,
                events: ev_tx.clone(),
                stats: stats.clone(),
                advertise_ip: cfg.advertise_ip,
                ports: ports.clone(),
                virtuals: HashMap::new(),
                pending,
            };
            let handle = std::thread::Builder::new()
                .name(format!("sfu-shard-{i}"))
                .spawn(move || shard.run())?;
            threads.push(handle);
            all_ports.push(ports);
            shards.push(ShardHandle {
                tx,
                waker,
                stats,
                rooms: 0,
            });
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
                rooms: Mutex::new(HashMap::new()),
                participants: Mutex::new(HashMap::new()),
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
            .send(Command::Inject {
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
            let _ = p.tx.send(Command::Virtual {
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
        let mut waits = Vec::new();
        {
            let shards = self.shards.lock().expect("shards lock");
            for h in shards.iter() {
                let (tx, rx) = oneshot::channel();
                if h.tx.send(Command::Counts { reply: tx }).is_ok() {
                    let _ = h.waker.wake();
                    waits.push(rx);
                }
            }
        }
        let mut c = Counts::default();
        for w in waits {
            if let Ok(x) = w.await {
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

    /// Join `participant` to `room` (placing the room on the least-loaded shard if new).
    pub async fn join(
        &self,
        participant: ParticipantId,
        room: &str,
        grants: Grants,
        impair_loss: f32,
    ) -> Result<(), SfuError> {
        let shard = {
            let mut rooms = self.rooms.lock().expect("rooms lock");
            let mut shards = self.shards.lock().expect("shards lock");
            let entry = rooms.entry(room.to_owned()).or_insert_with(|| {
                let (i, _) = shards
                    .iter()
                    .enumerate()
                    .min_by_key(|(i, h)| (h.rooms, *i))
                    .expect("at least one shard");
                shards[i].rooms += 1;
                (i, 0)
            });
            entry.1 += 1;
            entry.0
        };
        self.participants
            .lock()
            .expect("participants lock")
            .insert(participant, (shard, room.to_owned()));
        let r = self
            .call(shard, |reply| Command::Join {
                participant,
                room: room.to_owned(),
                grants,
                impair_loss,
                reply,
            })
            .await;
        if r.is_err() {
            self.forget(participant);
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
        let shard = self.shard_of(participant)?;
        self.call(shard, |reply| Command::Publish {
            participant,
            offer,
            tracks,
            reply,
        })
        .await
    }

    /// Apply the subscriber PC's answer.
    pub async fn answer(&self, participant: ParticipantId, answer: String) -> Result<(), SfuError> {
        let shard = self.shard_of(participant)?;
        self.call(shard, |reply| Command::Answer {
            participant,
            answer,
            reply,
        })
        .await
    }

    /// Restart ICE on the participant's subscriber transport (a new offer follows).
    pub async fn restart_ice(&self, participant: ParticipantId) -> Result<(), SfuError> {
        let shard = self.shard_of(participant)?;
        self.call(shard, |reply| Command::RestartIce { participant, reply })
            .await
    }

    /// Add a trickled remote candidate.
    pub async fn candidate(
        &self,
        participant: ParticipantId,
        role: Role,
        candidate: String,
    ) -> Result<(), SfuError> {
        let shard = self.shard_of(participant)?;
        self.call(shard, |reply| Command::Candidate {
            participant,
            role,
            candidate,
            reply,
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
        let shard = self.shard_of(participant)?;
        self.call(shard, |reply| Command::Mute {
            participant,
            track,
            muted,
            reply,
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
        let shard = self.shard_of(subscriber)?;
        self.call(shard, |reply| Command::SetQuality {
            subscriber,
            publisher,
            source,
            quality,
            reply,
        })
        .await
    }

    /// Unpublish a track.
    pub async fn unpublish(
        &self,
        participant: ParticipantId,
        track: TrackId,
    ) -> Result<(), SfuError> {
        let shard = self.shard_of(participant)?;
        self.call(shard, |reply| Command::Unpublish {
            participant,
            track,
            reply,
        })
        .await
    }

    /// Remove a participant and everything it owns.
    pub async fn leave(&self, participant: ParticipantId) -> Result<(), SfuError> {
        let shard = self.shard_of(participant)?;
        let r = self
            .call(shard, |reply| Command::Leave { participant, reply })
            .await;
        self.forget(participant);
        r
    }

    /// The core removed a participant by itself (consent timeout): forget our mapping.
    pub fn forget(&self, participant: ParticipantId) {
        let Some((shard, room)) = self
            .participants
            .lock()
            .expect("participants lock")
            .remove(&participant)
        else {
            return;
        };
        let mut rooms = self.rooms.lock().expect("rooms lock");
        if let Some(e) = rooms.get_mut(&room) {
            e.1 -= 1;
            if e.1 == 0 {
                rooms.remove(&room);
                self.shards.lock().expect("shards lock")[shard].rooms -= 1;
            }
        }
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

    fn shard_of(&self, participant: ParticipantId) -> Result<usize, SfuError> {
        self.participants
            .lock()
            .expect("participants lock")
            .get(&participant)
            .map(|(s, _)| *s)
            .ok_or(SfuError::NotJoined)
    }

    async fn call<T>(
        &self,
        shard: usize,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, SfuError> {
        let (tx, rx) = oneshot::channel();
        {
            let shards = self.shards.lock().expect("shards lock");
            let h = &shards[shard];
            h.tx.send(make(tx)).map_err(|_| SfuError::ShardGone)?;
            let _ = h.waker.wake();
        }
        rx.await.map_err(|_| SfuError::ShardGone)?
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
    events: tmpsc::UnboundedSender<SfuEvent>,
    stats: Arc<Mutex<SharedStats>>,
    advertise_ip: IpAddr,
    ports: Vec<u16>,
    /// Virtual remotes (hand-over to the co-located TURN relay); owned by this thread.
    virtuals: HashMap<SocketAddr, VirtualOut>,
    pending: Arc<AtomicBool>,
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
        loop {
            let now = Instant::now();
            let busy = readable.iter().any(|r| *r);
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
                for _ in 0..COMMAND_BUDGET {
                    match self.rx.try_recv() {
                        Ok(Command::Shutdown) => {
                            info!(shard = self.index, "shard stopping");
                            return;
                        }
                        Ok(cmd) => self.command(now, cmd),
                        Err(_) => break,
                    }
                }
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
            // Commands arriving while busy are picked up above; drain the rest cheaply.
            while let Ok(cmd) = self.rx.try_recv() {
                if matches!(cmd, Command::Shutdown) {
                    info!(shard = self.index, "shard stopping");
                    return;
                }
                self.command(Instant::now(), cmd);
            }
            self.core.flush(Instant::now());
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
                let _ = self.events.send(ev);
            }
            if last_stats.elapsed() >= Duration::from_millis(100) {
                last_stats = Instant::now();
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
        let core = &mut self.core;
        match cmd {
            Command::Join {
                participant,
                room,
                grants,
                impair_loss,
                reply,
            } => {
                let _ = reply.send(core.join(now, participant, &room, grants, impair_loss));
            }
            Command::Publish {
                participant,
                offer,
                tracks,
                reply,
            } => {
                let _ = reply.send(core.publish(now, participant, &offer, &tracks));
            }
            Command::Answer {
                participant,
                answer,
                reply,
            } => {
                let _ = reply.send(core.subscriber_answer(now, participant, &answer));
            }
            Command::RestartIce { participant, reply } => {
                let _ = reply.send(core.restart_ice(now, participant));
            }
            Command::Candidate {
                participant,
                role,
                candidate,
                reply,
            } => {
                let _ = reply.send(core.remote_candidate(now, participant, role, &candidate));
            }
            Command::Mute {
                participant,
                track,
                muted,
                reply,
            } => {
                let _ = reply.send(core.mute(participant, track, muted));
            }
            Command::SetQuality {
                subscriber,
                publisher,
                source,
                quality,
                reply,
            } => {
                let _ = reply.send(core.set_quality(now, subscriber, publisher, source, quality));
            }
            Command::Unpublish {
                participant,
                track,
                reply,
            } => {
                let _ = reply.send(core.unpublish(participant, track));
            }
            Command::Leave { participant, reply } => {
                let _ = reply.send(core.leave(participant));
            }
            Command::Counts { reply } => {
                let _ = reply.send(core.counts());
            }
            Command::Inject {
                port_idx,
                from,
                data,
            } => core.handle_datagram(now, port_idx, from, &data),
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
}
