//! The composition root: `run` builds every part of a node from its configuration (the
//! SFU, the TURN relay, the cluster membership, NATS outlets, the metrics and HTTP
//! listeners), wires them into one [`AppState`], and drains it on shutdown. The rest of
//! signaling reaches the parts only through `AppState`'s accessors.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use room_state::MemoryStore;
use sfu::{Sfu, SfuConfig};
use socketioxide::SocketIo;
use tracing::info;

use crate::auth::TokenKeys;
use crate::config::Config;
use crate::state::{AppState, Parts};
use crate::{
    NAMESPACE, cluster, commands, events, handlers, health, http, metrics, pump, resume,
    turn_relay, webhook,
};

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
        bandwidth_estimation: cfg.bwe,
        loss_adaptation: !cfg.no_adaptation,
        room_span_after: cfg.room_span_after,
        on_thread_idle: Some(crate::heap::on_thread_idle),
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
    // Before anything listens: a bad webhook setting or an unreadable spool stops the start.
    let webhook = if cfg.audit_webhook_urls.is_empty() {
        None
    } else {
        Some(Arc::new(webhook::Webhook::new(webhook::WebhookConfig {
            urls: cfg.audit_webhook_urls.clone(),
            secret: cfg.audit_webhook_secret.clone().unwrap_or_default(),
            spool: cfg.audit_webhook_spool.clone(),
            spool_max_bytes: cfg.audit_webhook_spool_max_bytes,
            timeout: Duration::from_millis(cfg.audit_webhook_timeout_ms.max(1)),
            max_backoff: Duration::from_millis(cfg.audit_webhook_max_backoff_ms),
        })?))
    };
    let turn = if cfg.no_turn {
        None
    } else {
        let secret = turn_relay::secret(&cfg);
        Some(turn_relay::start(&cfg, secret, Some(sfu.clone())).await?)
    };

    let focus = focus_state(&cfg)?;
    let state = AppState::new(Parts {
        sfu: sfu.clone(),
        keys: TokenKeys::new(secret.as_bytes()),
        dev: cfg.dev,
        allow_impairment: cfg.allow_impairment,
        // With other nodes, the room's records are mirrored to Redis: track what changes.
        store: if cluster.is_some() {
            MemoryStore::with_change_tracking()
        } else {
            MemoryStore::new()
        },
        // Participant ids must not collide across nodes (a room can move between them).
        first_participant: if cluster.is_some() {
            fastrand::u64(1..1 << 40) << 12
        } else {
            0
        },
        turn_secret: cfg.turn_secret.clone(),
        turn_urls: cfg.turn_urls.clone(),
        turn,
        redis_url: cfg.redis_url.clone(),
        nats_url: cfg.nats_url.clone(),
        node_id,
        cluster: cluster.clone(),
        lifecycle,
        resume_window: Duration::from_secs(cfg.resume_window_secs),
        limits: crate::limits::Limits::from_config(&cfg),
        webhook: webhook.clone(),
        focus,
    });
    if let Some(w) = webhook {
        tokio::spawn(w.run());
    }
    let (layer, io) = SocketIo::builder()
        .max_payload(1 << 20)
        // Per-socket outgoing queue: a big room leaving at once sends each remaining
        // client hundreds of events; the default (128) dropped acks under that burst.
        .max_buffer_size(4096)
        .ping_interval(Duration::from_secs(10))
        .ping_timeout(Duration::from_secs(10))
        .with_state(state.clone())
        .build_layer();
    state.set_io(io.clone());
    handlers::register(&io);
    tokio::spawn(pump::run(state.clone(), events));
    tokio::spawn(crate::idle_trim::run(state.clone()));

    if let Some(url) = cfg.redis_url.clone() {
        tokio::spawn(health::watch_redis(url, state.health().clone()));
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
            tokio::spawn(health::watch_nats(client.clone(), st.health().clone()));
            let (focus, lifecycle) = (st.focus().clone(), st.lifecycle().clone());
            let c = client.clone();
            let f = focus.clone();
            tokio::spawn(async move { f.outbox.sync_loop().await });
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
    // The peer address goes into each request (`ConnectInfo`): the per-address limits
    // read it from the Socket.IO handshake.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(graceful)
    .await?;
    if let Some(t) = &state.turn() {
        t.relay.shutdown();
    }
    // Focus events NATS has not acknowledged yet go to the spill file for the next run.
    state.focus().outbox.persist();
    info!("shutting down media core");
    tokio::task::spawn_blocking(move || sfu.shutdown()).await?;
    Ok(())
}

/// The focus events' state: with NATS, an outbox with a spill file (unless
/// --focus-spill-max-bytes is 0). A spill file that cannot be opened stops the start: the
/// operator asked for events not to be lost.
fn focus_state(cfg: &Config) -> anyhow::Result<crate::focus::Focus> {
    let max = cfg.focus_queue_max.max(1);
    if cfg.nats_url.is_none() || cfg.focus_spill_max_bytes == 0 {
        return Ok(crate::focus::Focus::new(max, None));
    }
    let path = cfg.focus_spill_path.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("studyroom-focus-{}.spill", cfg.http.port()))
    });
    let spill = crate::spill::SpillFile::open(&path, cfg.focus_spill_max_bytes)
        .context("--focus-spill-path")?;
    Ok(crate::focus::Focus::new(max, Some(spill)))
}

/// Graceful drain: turn unready, refuse new joins, tell every client to reconnect
/// elsewhere, wait until they left or the timeout passed, then disconnect the rest.
async fn drain(state: &AppState, timeout: Duration, redirect: Option<String>) {
    let until = tokio::time::Instant::now() + timeout;
    // In a deployment: send clients to another live node unless told where, and leave the
    // registry so no room is placed here any more.
    let mut redirect = redirect;
    if let Some(c) = &state.cluster()
        && redirect.is_none()
    {
        redirect = c.other_node_url();
    }
    state.start_drain(until, redirect.clone());
    if let Some(c) = &state.cluster() {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.leave()).await;
    }
    // Participants waiting for a resume cannot come back here: they leave now.
    resume::drop_all(state).await;
    info!(timeout_secs = timeout.as_secs(), redirect = ?redirect, "draining: telling clients to reconnect elsewhere");
    if let (Some(op), Some(payload)) = (state.io().of(NAMESPACE), state.reconnect_payload()) {
        let _ = op.emit("reconnect", &payload).await;
    }
    loop {
        let left = state.sessions().by_sid.len();
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
