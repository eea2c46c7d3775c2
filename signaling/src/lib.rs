//! studyroom signaling: Socket.IO (namespace `/study`) on axum, the dev token endpoint,
//! the demo page, and the glue between clients and the media core.
//!
//! Flow: a client connects with a JWT (checked by the namespace middleware), `join`s,
//! then publishes/subscribes by SDP through the SFU handle ([`sfu::Sfu`]). The media
//! core's events ([`sfu::SfuEvent`]) are pumped back out as Socket.IO events by
//! [`pump`]. The wire contract is `docs/protocol.md`.

pub mod auth;
pub mod config;
mod focus;
mod handlers;
mod health;
mod http;
mod metrics;
mod pump;
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
        store: Mutex::new(MemoryStore::new()),
        sessions: Mutex::new(Sessions::default()),
        next_participant: AtomicU64::new(0),
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
    if let Some(url) = cfg.nats_url.clone() {
        // One connection for health and the JetStream publisher.
        let (health, focus) = (state.0.health.clone(), state.0.focus.clone());
        tokio::spawn(async move {
            let client = health::connect_nats(&url).await;
            tokio::spawn(health::watch_nats(client.clone(), health));
            focus::publish_to_nats(client, focus).await;
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
    let listener = tokio::net::TcpListener::bind(cfg.http)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.http))?;
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
    let _ = state.0.drain.set((until, redirect.clone()));
    state.0.draining.store(true, Ordering::Relaxed);
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
