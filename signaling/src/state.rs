//! The server's shared state and the only door to it: [`AppState`] holds what every part
//! of signaling shares (the SFU handle, the session table, the local room store, the
//! platform outlets), with private fields, and each part reaches what it needs through
//! a named accessor. `app.rs` (the composition root) builds it; nothing else can.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use room_state::MemoryStore;
use serde_json::Value;
use sfu::{ParticipantId, Sfu};
use socketioxide::SocketIo;
use socketioxide::socket::Sid;

use crate::auth::{Claims, TokenKeys};
use crate::{
    chat, cluster, commands, departure, events, focus, health, limits, resume, turn_relay, webhook,
};

/// Per-connection state.
pub(crate) struct Session {
    pub(crate) claims: Claims,
    pub(crate) participant: Option<ParticipantId>,
    pub(crate) room: String,
    /// The client address the per-address limits count this connection under.
    pub(crate) addr: std::net::IpAddr,
}

#[derive(Default)]
pub(crate) struct Sessions {
    pub(crate) by_sid: HashMap<Sid, Session>,
    pub(crate) by_participant: HashMap<ParticipantId, Sid>,
    /// A subscriber offer produced before the participant's join ack went out; sent
    /// right after the ack so the client always sees the ack first.
    pub(crate) early_offers: HashMap<ParticipantId, Value>,
    /// Participants whose join was handed to the media core but not yet bound to their
    /// session: the core's first subscriber offer can arrive in that window (the join does
    /// not wait for the shard), and must be kept, not dropped as a departed one's.
    pub(crate) joining: HashSet<ParticipantId>,
    /// Participants whose socket dropped, waiting for `resume`; resume tokens.
    pub(crate) parked: resume::Parked,
}

/// Shared server state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What `AppState` is built from (see `app.rs`).
pub(crate) struct Parts {
    pub(crate) sfu: Arc<Sfu>,
    pub(crate) keys: TokenKeys,
    pub(crate) dev: bool,
    pub(crate) allow_impairment: bool,
    pub(crate) store: MemoryStore,
    pub(crate) first_participant: u64,
    pub(crate) turn_secret: Option<String>,
    pub(crate) turn_urls: Vec<String>,
    pub(crate) turn: Option<turn_relay::EmbeddedTurn>,
    pub(crate) redis_url: Option<String>,
    pub(crate) nats_url: Option<String>,
    pub(crate) node_id: String,
    pub(crate) cluster: Option<Arc<cluster::Cluster>>,
    pub(crate) lifecycle: Arc<events::Lifecycle>,
    pub(crate) resume_window: Duration,
    pub(crate) limits: limits::Limits,
    pub(crate) webhook: Option<Arc<webhook::Webhook>>,
    pub(crate) focus: focus::Focus,
}

struct Inner {
    sfu: Arc<Sfu>,
    keys: TokenKeys,
    dev: bool,
    allow_impairment: bool,
    store: Mutex<MemoryStore>,
    sessions: Mutex<Sessions>,
    next_participant: AtomicU64,
    turn_secret: Option<String>,
    turn_urls: Vec<String>,
    /// The embedded TURN relay (None with --no-turn).
    turn: Option<turn_relay::EmbeddedTurn>,
    io: OnceLock<SocketIo>,
    draining: AtomicBool,
    /// Set when draining starts: when it must be over, and where clients should go.
    drain: OnceLock<(tokio::time::Instant, Option<String>)>,
    health: Arc<health::Health>,
    focus: Arc<focus::Focus>,
    chat: chat::Chat,
    redis_url: Option<String>,
    nats_url: Option<String>,
    /// This node's id (`local` when it stands alone).
    node_id: String,
    /// Membership in a multi-node deployment (with `REDIS_URL`).
    cluster: Option<Arc<cluster::Cluster>>,
    lifecycle: Arc<events::Lifecycle>,
    commands: commands::Counters,
    /// How long a participant whose socket dropped is kept for `resume` (zero: not kept).
    resume_window: Duration,
    /// Removals by reason and resumes, for the metrics.
    departures: departure::Counters,
    /// Every limit (per connection, address, identity, node).
    limits: limits::Limits,
    /// The audit-log webhook (None without --audit-webhook-url).
    webhook: Option<Arc<webhook::Webhook>>,
}

impl AppState {
    /// Built once by the composition root.
    pub(crate) fn new(p: Parts) -> AppState {
        AppState(Arc::new(Inner {
            sfu: p.sfu,
            keys: p.keys,
            dev: p.dev,
            allow_impairment: p.allow_impairment,
            store: Mutex::new(p.store),
            sessions: Mutex::new(Sessions::default()),
            next_participant: AtomicU64::new(p.first_participant),
            turn_secret: p.turn_secret,
            turn_urls: p.turn_urls,
            turn: p.turn,
            io: OnceLock::new(),
            draining: AtomicBool::new(false),
            drain: OnceLock::new(),
            health: Arc::new(health::Health::default()),
            focus: Arc::new(p.focus),
            chat: chat::Chat::default(),
            redis_url: p.redis_url,
            nats_url: p.nats_url,
            node_id: p.node_id,
            cluster: p.cluster,
            lifecycle: p.lifecycle,
            commands: commands::Counters::default(),
            resume_window: p.resume_window,
            departures: departure::Counters::default(),
            limits: p.limits,
            webhook: p.webhook,
        }))
    }

    /// The media core.
    pub(crate) fn sfu(&self) -> &Arc<Sfu> {
        &self.0.sfu
    }

    /// The session table (sockets, participants, parked sessions). Hold it briefly: never
    /// across an `.await`.
    pub(crate) fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.0.sessions.lock().expect("sessions lock")
    }

    /// This node's view of its rooms (mirrored to Redis with several nodes).
    pub(crate) fn store(&self) -> MutexGuard<'_, MemoryStore> {
        self.0.store.lock().expect("store lock")
    }

    /// Token verification.
    pub(crate) fn keys(&self) -> &TokenKeys {
        &self.0.keys
    }

    /// `--dev`.
    pub(crate) fn dev(&self) -> bool {
        self.0.dev
    }

    /// `--allow-impairment`.
    pub(crate) fn allow_impairment(&self) -> bool {
        self.0.allow_impairment
    }

    /// The next participant id.
    pub(crate) fn next_participant(&self) -> u64 {
        self.0.next_participant.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// External TURN REST secret (`--turn-secret`).
    pub(crate) fn turn_secret(&self) -> Option<&str> {
        self.0.turn_secret.as_deref()
    }

    /// External TURN/STUN URLs (`--turn-url`).
    pub(crate) fn turn_urls(&self) -> &[String] {
        &self.0.turn_urls
    }

    /// The embedded TURN relay, if on.
    pub(crate) fn turn(&self) -> Option<&turn_relay::EmbeddedTurn> {
        self.0.turn.as_ref()
    }

    /// Redis/NATS health, watched in the background.
    pub(crate) fn health(&self) -> &Arc<health::Health> {
        &self.0.health
    }

    /// Focus events (history, rate limits, NATS outbox).
    pub(crate) fn focus(&self) -> &Arc<focus::Focus> {
        &self.0.focus
    }

    /// Configured Redis URL.
    pub(crate) fn redis_url(&self) -> Option<&str> {
        self.0.redis_url.as_deref()
    }

    /// Configured NATS URL.
    pub(crate) fn nats_url(&self) -> Option<&str> {
        self.0.nats_url.as_deref()
    }

    /// Lifecycle events to NATS.
    pub(crate) fn lifecycle(&self) -> &Arc<events::Lifecycle> {
        &self.0.lifecycle
    }

    /// NATS command counters.
    pub(crate) fn commands(&self) -> &commands::Counters {
        &self.0.commands
    }

    /// How long a dropped participant is kept for `resume`.
    pub(crate) fn resume_window(&self) -> Duration {
        self.0.resume_window
    }

    /// Removals by reason and resumes.
    pub(crate) fn departures(&self) -> &departure::Counters {
        &self.0.departures
    }

    /// The limits on every door (`limits/`).
    pub(crate) fn limits(&self) -> &limits::Limits {
        &self.0.limits
    }

    /// Room chat (rate limits, counters).
    pub(crate) fn chat(&self) -> &chat::Chat {
        &self.0.chat
    }

    /// The audit-log webhook, when configured.
    pub(crate) fn webhook(&self) -> Option<&Arc<webhook::Webhook>> {
        self.0.webhook.as_ref()
    }

    /// Sets the Socket.IO handle (once, by the composition root).
    pub(crate) fn set_io(&self, io: SocketIo) {
        let _ = self.0.io.set(io);
    }

    /// Starts draining: until when, and where clients should go.
    pub(crate) fn start_drain(&self, until: tokio::time::Instant, redirect: Option<String>) {
        let _ = self.0.drain.set((until, redirect));
        self.0.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the node is draining (shutting down gracefully).
    pub fn draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }

    /// The `reconnect` payload while draining (deadline counted from now).
    pub fn reconnect_payload(&self) -> Option<serde_json::Value> {
        let (until, url) = self.0.drain.get()?;
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        Some(
            serde_json::json!({ "reason": "draining", "url": url, "deadlineMs": left.as_millis() as u64 }),
        )
    }

    /// This node's id in the deployment (`local` without Redis). Participant records carry
    /// it (`ParticipantRecord::node`).
    pub fn node_id(&self) -> &str {
        &self.0.node_id
    }

    /// The multi-node membership, when `REDIS_URL` is set: the shared store
    /// (`cluster.store()`: rooms, participants, hosts, nodes of the whole deployment), the
    /// live nodes and this node's URL.
    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        self.0.cluster.as_ref()
    }

    /// Whether `room` has participants on this node (then its media and sessions are here:
    /// act on it through this node's SFU handle and sessions).
    pub fn hosts_locally(&self, room: &str) -> bool {
        !self
            .0
            .store
            .lock()
            .expect("store lock")
            .participants(room)
            .is_empty()
    }

    /// The node hosting `room`: this node when it has the room's participants, else the
    /// host recorded in Redis (`None`: nobody hosts it, or Redis is unreachable).
    pub async fn host_of(&self, room: &str) -> Option<String> {
        if self.hosts_locally(room) {
            return Some(self.0.node_id.clone());
        }
        match &self.0.cluster {
            Some(c) => c.host_of(room).await,
            None => None,
        }
    }

    pub(crate) fn io(&self) -> &SocketIo {
        // Invariant: set in `run` before any handler or the pump can run.
        self.0.io.get().expect("SocketIo initialised")
    }
}
