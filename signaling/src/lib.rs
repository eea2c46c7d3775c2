//! studyroom signaling: Socket.IO (namespace `/study`) on axum, the dev token endpoint,
//! the demo page, and the glue between clients and the media core.
//!
//! Flow: a client connects with a JWT (checked by the namespace middleware), `join`s,
//! then publishes/subscribes by SDP through the SFU handle ([`sfu::Sfu`]). The media
//! core's events ([`sfu::SfuEvent`]) are pumped back out as Socket.IO events by
//! [`pump`]. The wire contract is `docs/protocol.md`.

pub mod auth;
pub mod config;
mod handlers;
mod http;
mod pump;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
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
    io: OnceLock<SocketIo>,
}

impl AppState {
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
        io: OnceLock::new(),
    }));
    let (layer, io) = SocketIo::builder()
        .max_payload(1 << 20)
        .ping_interval(Duration::from_secs(10))
        .ping_timeout(Duration::from_secs(10))
        .with_state(state.clone())
        .build_layer();
    let _ = state.0.io.set(io.clone());
    handlers::register(&io);
    tokio::spawn(pump::run(state.clone(), events));

    let app = http::router(state.clone()).layer(layer);
    let listener = tokio::net::TcpListener::bind(cfg.http)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.http))?;
    info!(
        http = %cfg.http,
        advertise = %cfg.node_ip,
        media = %format!("{}-{}", cfg.media_ports.0, cfg.media_ports.1),
        dev = cfg.dev,
        "studyroom listening: demo page at http://{}/",
        cfg.http
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    info!("shutting down media core");
    tokio::task::spawn_blocking(move || sfu.shutdown()).await?;
    Ok(())
}
