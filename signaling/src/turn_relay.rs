//! The embedded TURN relay: its settings from the `--turn-*` flags, the in-process
//! hand-over to our own SFU, the `iceServers` entry `join` hands out, and the
//! `studyroom turn` mode that runs the relay alone.
//!
//! Why embedded: learners behind UDP-blocking networks reach the SFU only through TURN
//! over TCP/TLS. With the relay in the same process, a relayed datagram for one of the
//! SFU's media addresses is handed to the SFU shard directly ([`SfuHandover`]) instead
//! of crossing the kernel twice (relay socket -> media socket and back).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use sfu::Sfu;
use sfu::driver::VirtualOut;
use tokio::sync::mpsc;
use tracing::{info, warn};
use turn::driver::{Handover, RelayConfig, TlsIdentity, TurnRelay};
use turn::{PeerPolicy, ServerConfig};

use crate::config::Config;

/// The running relay and what clients are told about it.
pub struct EmbeddedTurn {
    /// The relay.
    pub relay: TurnRelay,
    /// `turn:`/`turns:` URLs (UDP, TCP, TLS when on) at the node's advertised IP.
    pub urls: Vec<String>,
    /// REST secret the relay checks credentials with.
    pub secret: String,
}

/// The TURN REST secret: the configured one, else random for this process (credentials
/// handed out by `join` are then valid for this node only, until it restarts).
pub fn secret(cfg: &Config) -> String {
    match cfg.turn_secret.as_ref().filter(|s| !s.is_empty()) {
        Some(s) => s.clone(),
        None => {
            let bytes: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
        }
    }
}

/// Datagrams between the relay and the SFU, without sockets.
struct SfuHandover {
    sfu: Arc<Sfu>,
    ip: IpAddr,
    ports: (u16, u16),
    out: VirtualOut,
}

impl Handover for SfuHandover {
    fn owns(&self, peer: SocketAddr) -> bool {
        peer.ip() == self.ip && (self.ports.0..=self.ports.1).contains(&peer.port())
    }
    fn deliver(&self, relayed: SocketAddr, peer: SocketAddr, data: &[u8]) {
        self.sfu.inject(peer.port(), relayed, data.to_vec());
    }
    fn attach(&self, relayed: SocketAddr) {
        self.sfu.set_virtual_remote(relayed, Some(self.out.clone()));
    }
    fn detach(&self, relayed: SocketAddr) {
        self.sfu.set_virtual_remote(relayed, None);
    }
}

fn local_or_wildcard(ip: IpAddr) -> IpAddr {
    // Is the advertised address ours? Binding it is the test (as for the media ports).
    if std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok() {
        ip
    } else if ip.is_ipv4() {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    }
}

/// Start the relay; `sfu` enables the hand-over to it.
pub async fn start(
    cfg: &Config,
    secret: String,
    sfu: Option<Arc<Sfu>>,
) -> anyhow::Result<EmbeddedTurn> {
    let tls = match (&cfg.turn_tls_cert, &cfg.turn_tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity::Files {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) if cfg.dev => Some(TlsIdentity::SelfSigned(vec![
            "localhost".into(),
            cfg.node_ip.to_string(),
        ])),
        (None, None) => {
            warn!("TURN over TLS is off: give --turn-tls-cert and --turn-tls-key (or --dev)");
            None
        }
        _ => anyhow::bail!("--turn-tls-cert and --turn-tls-key go together"),
    };
    let server = ServerConfig {
        realm: cfg.turn_realm.clone(),
        rest_secret: Some(secret.clone().into_bytes()),
        users: cfg.turn_users.iter().cloned().collect(),
        policy: PeerPolicy {
            allowed: cfg.turn_allow_peers.clone(),
            ..PeerPolicy::default()
        },
        own_peers: vec![(cfg.node_ip, cfg.media_ports.0..=cfg.media_ports.1)],
        user_quota: cfg.turn_user_quota.max(1),
        bandwidth: cfg.turn_bandwidth,
        allocate_rate: cfg.turn_allocate_rate,
        allocate_burst: cfg.turn_allocate_burst,
        nonce_key: std::array::from_fn(|_| fastrand::u8(..)),
        ..ServerConfig::default()
    };
    let relay_cfg = RelayConfig {
        server,
        udp: Some(cfg.turn_listen),
        tcp: Some(cfg.turn_listen),
        tls: tls.map(|id| (cfg.turn_tls_listen, id)),
        relay_ip: cfg.node_ip,
        relay_bind_ip: cfg
            .bind_ip
            .unwrap_or_else(|| local_or_wildcard(cfg.node_ip)),
        relay_ports: cfg.turn_relay_ports,
    };
    let handover = match sfu {
        Some(sfu) if !cfg.turn_no_handover => {
            let (tx, rx) = mpsc::channel(8192);
            let h: Arc<dyn Handover> = Arc::new(SfuHandover {
                sfu,
                ip: cfg.node_ip,
                ports: cfg.media_ports,
                out: tx,
            });
            Some((h, rx))
        }
        _ => None,
    };
    let with_tls = relay_cfg.tls.is_some();
    let relay = TurnRelay::start(relay_cfg, handover)
        .await
        .context("starting the TURN relay (use --no-turn to run without it)")?;
    let host = match cfg.node_ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let port = cfg.turn_listen.port();
    let mut urls = vec![
        format!("turn:{host}:{port}?transport=udp"),
        format!("turn:{host}:{port}?transport=tcp"),
    ];
    if with_tls {
        urls.push(format!(
            "turns:{host}:{}?transport=tcp",
            cfg.turn_tls_listen.port()
        ));
    }
    Ok(EmbeddedTurn {
        relay,
        urls,
        secret,
    })
}

/// `studyroom turn`: the relay alone until `shutdown`.
pub async fn run_alone(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    if cfg.turn_secret.is_none() && cfg.turn_users.is_empty() {
        warn!(
            "no --turn-secret and no --turn-user: only REST credentials made with a random secret would work, i.e. none"
        );
    }
    let t = start(&cfg, secret(&cfg), None).await?;
    info!(urls = ?t.urls, "TURN relay running alone");
    shutdown.await;
    t.relay.shutdown();
    Ok(())
}
