//! studyroom signaling: Socket.IO (namespace `/study`) on axum, the dev token endpoint,
//! the demo page, and the glue between clients and the media core.
//!
//! Flow: a client connects with a JWT (checked by the namespace middleware), `join`s,
//! then publishes/subscribes by SDP through the SFU handle ([`sfu::Sfu`]). The media
//! core's events ([`sfu::SfuEvent`]) are pumped back out as Socket.IO events by
//! [`pump`]. The wire contract is `docs/protocol.md`.

pub mod auth;
pub mod cluster;
mod commands;
pub mod config;
mod delivery;
mod departure;
mod events;
mod focus;
mod handlers;
mod health;
mod http;
mod metrics;
mod outbox;
mod pump;
mod resume;
pub mod turn_relay;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use room_state::MemoryStore;
use serde_json::Value;
use sfu::{ParticipantId, Sfu, SfuConfig};
use socketioxide::SocketIo;
use socketioxide::socket::Sid;
use tracing::info;

use auth::{Claims, TokenKeys};
use config::Config;

/// Socket.IO namespace of the protocol.
pub const NAMESPACE: &str = "/study";

/// Per-connection state.
struct Session {
    claims: Claims,
    participant: Option<ParticipantId>,
    room: String,
}

#[derive(Default)]
struct Sessions {
    by_sid: HashMap<Sid, Session>,
    by_participant: HashMap<ParticipantId, Sid>,
    /// A subscriber offer produced before the participant's join ack went out; sent
    /// right after the ack so the client always sees the ack first.
    early_offers: HashMap<ParticipantId, Value>,
    /// Participants whose socket dropped, waiting for `resume`; resume tokens.
    parked: resume::Parked,
}

/// Shared server state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

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
}

impl AppState {
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

    fn io(&self) -> &SocketIo {
        // Invariant: set in `run` before any handler or the pump can run.
        self.0.io.get().expect("SocketIo initialised")
    }
}

/// Run the server until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let secret = cfg.secret().map_err(anyhow::Error::msg)?;
    // Before anything listens: a configured Redis that cannot be reached stops the start
    // (or is waited for, --redis-wait-secs).
    let cluster = match cfg.redis_url.as_deref() {
        Some(url) => Some(cluster::Cluster::connect(&cfg, url).await?),
        None => None,
    };
    let sfu_cfg = SfuConfig {
        advertise_ip: cfg.node_ip,
        bind_ip: cfg.bind_ip,
        port_min: cfg.media_ports.0,
        port_max: cfg.media_ports.1,
        shards: cfg.shards,
        consent_timeout: Duration::from_secs(cfg.consent_timeout_secs.max(1)),
        max_participants_per_room: cfg.max_room_size.max(1),
        allow_impairment: cfg.allow_impairment,
        ..SfuConfig::default()
    };
    let (sfu, events) = Sfu::start(sfu_cfg).context("starting the media core")?;
    let node_id = cluster.as_ref().map_or_else(
        || cfg.node_id.clone().unwrap_or_else(|| "local".to_owned()),
        |c| c.node_id().to_owned(),
    );
    let boot = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let lifecycle = Arc::new(events::Lifecycle::new(
        node_id.clone(),
        boot,
        cfg.nats_url.is_some(),
    ));
    let turn = if cfg.no_turn {
        None
    } else {
        let secret = turn_relay::secret(&cfg);
        Some(turn_relay::start(&cfg, secret, Some(sfu.clone())).await?)
    };

    let state = AppState(Arc::new(Inner {
        sfu: sfu.clone(),
        keys: TokenKeys::new(secret.as_bytes()),
        dev: cfg.dev,
        allow_impairment: cfg.allow_impairment,
        // With other nodes, the room's records are mirrored to Redis: track what changes.
        store: Mutex::new(if cluster.is_some() {
            MemoryStore::with_change_tracking()
        } else {
            MemoryStore::new()
        }),
        sessions: Mutex::new(Sessions::default()),
        // Participant ids must not collide across nodes (a room can move between them).
        next_participant: AtomicU64::new(if cluster.is_some() {
            fastrand::u64(1..1 << 40) << 12
        } else {
            0
        }),
        turn_secret: cfg.turn_secret.clone(),
        turn_urls: cfg.turn_urls.clone(),
        turn,
        io: OnceLock::new(),
        draining: AtomicBool::new(false),
        drain: OnceLock::new(),
        health: Arc::new(health::Health::default()),
        focus: Arc::new(focus::Focus::default()),
        redis_url: cfg.redis_url.clone(),
        nats_url: cfg.nats_url.clone(),
        node_id,
        cluster: cluster.clone(),
        lifecycle,
        commands: commands::Counters::default(),
        resume_window: Duration::from_secs(cfg.resume_window_secs),
        departures: departure::Counters::default(),
    }));
    let (layer, io) = SocketIo::builder()
        .max_payload(1 << 20)
        // Per-socket outgoing queue: a big room leaving at once sends each remaining
        // client hundreds of events; the default (128) dropped acks under that burst.
        .max_buffer_size(4096)
        .ping_interval(Duration::from_secs(10))
        .ping_timeout(Duration::from_secs(10))
        .with_state(state.clone())
        .build_layer();
    let _ = state.0.io.set(io.clone());
    handlers::register(&io);
    tokio::spawn(pump::run(state.clone(), events));

    if let Some(url) = cfg.redis_url.clone() {
        tokio::spawn(health::watch_redis(url, state.0.health.clone()));
    }
    if let Some(c) = cluster.clone() {
        tokio::spawn(cluster::heartbeat(state.clone(), c.clone()));
        tokio::spawn(cluster::sync(state.clone(), c));
    }
    if let Some(url) = cfg.nats_url.clone() {
        // One connection for health, the JetStream publishers and the commands.
        let st = state.clone();
        tokio::spawn(async move {
            let client = health::connect_nats(&url).await;
            tokio::spawn(health::watch_nats(client.clone(), st.0.health.clone()));
            let (focus, lifecycle) = (st.0.focus.clone(), st.0.lifecycle.clone());
            let c = client.clone();
            tokio::spawn(async move { focus.outbox.run(c).await });
            let c = client.clone();
            tokio::spawn(async move { lifecycle.outbox.run(c).await });
            commands::serve(st, client).await;
        });
    }
    let metrics_listener = tokio::net::TcpListener::bind(cfg.metrics)
        .await
        .with_context(|| format!("cannot listen for metrics on {}", cfg.metrics))?;
    let metrics_app = metrics::router(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(metrics_listener, metrics_app).await;
    });

    let app = http::router(state.clone()).layer(layer);
    // TCP_NODELAY: an ack pushed right after another frame would otherwise wait for the
    // client's delayed ACK (~40 ms per publish ack, measured with studyroom-loadtest).
    let listener = axum::serve::ListenerExt::tap_io(
        tokio::net::TcpListener::bind(cfg.http)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.http))?,
        |tcp: &mut tokio::net::TcpStream| {
            let _ = tcp.set_nodelay(true);
        },
    );
    info!(
        http = %cfg.http,
        advertise = %cfg.node_ip,
        media = %format!("{}-{}", cfg.media_ports.0, cfg.media_ports.1),
        metrics = %cfg.metrics,
        dev = cfg.dev,
        "studyroom listening: demo page at http://{}/",
        cfg.http
    );
    let drain_state = state.clone();
    let drain_timeout = Duration::from_secs(cfg.drain_timeout_secs);
    let redirect = cfg.drain_redirect_url.clone();
    let graceful = async move {
        shutdown.await;
        drain(&drain_state, drain_timeout, redirect).await;
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(graceful)
        .await?;
    if let Some(t) = &state.0.turn {
        t.relay.shutdown();
    }
    info!("shutting down media core");
    tokio::task::spawn_blocking(move || sfu.shutdown()).await?;
    Ok(())
}

/// Graceful drain: turn unready, refuse new joins, tell every client to reconnect
/// elsewhere, wait until they left or the timeout passed, then disconnect the rest.
async fn drain(state: &AppState, timeout: Duration, redirect: Option<String>) {
    let until = tokio::time::Instant::now() + timeout;
    // In a deployment: send clients to another live node unless told where, and leave the
    // registry so no room is placed here any more.
    let mut redirect = redirect;
    if let Some(c) = &state.0.cluster
        && redirect.is_none()
    {
        redirect = c.other_node_url();
    }
    let _ = state.0.drain.set((until, redirect.clone()));
    state.0.draining.store(true, Ordering::Relaxed);
    if let Some(c) = &state.0.cluster {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.leave()).await;
    }
    // Participants waiting for a resume cannot come back here: they leave now.
    resume::drop_all(state).await;
    info!(timeout_secs = timeout.as_secs(), redirect = ?redirect, "draining: telling clients to reconnect elsewhere");
    if let (Some(op), Some(payload)) = (state.io().of(NAMESPACE), state.reconnect_payload()) {
        let _ = op.emit("reconnect", &payload).await;
    }
    loop {
        let left = state.0.sessions.lock().expect("sessions lock").by_sid.len();
        if left == 0 {
            info!("drained: no clients left");
            break;
        }
        if tokio::time::Instant::now() >= until {
            info!(
                clients = left,
                "drain timeout: disconnecting the remaining clients"
            );
            if let Some(op) = state.io().of(NAMESPACE) {
                let _ = op.disconnect().await;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
