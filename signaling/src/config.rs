//! Command line and environment. Every flag has an environment variable; `--dev` fills
//! in what a single developer machine needs.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};

/// Fixed secret used by `--dev` (tokens from `/dev/token` are signed with it).
pub const DEV_SECRET: &str = "studyroom-dev-secret-do-not-use-in-production";

/// studyroom: SFU, signaling and TURN for study rooms, in one binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "studyroom",
    version,
    about,
    long_about = "studyroom: SFU, Socket.IO signaling and TURN for study rooms, in one binary.\n\n\
        `studyroom turn [flags]` runs the TURN relay alone (the --turn-* flags, --node-ip, --bind-ip, \
        --turn-secret, --dev apply).\n\n\
        Precedence: command-line flags, then environment variables, then the TOML file given \
        by --config (keys are the long flag names with '_' for '-', e.g. node_ip = \"10.0.0.5\"), \
        then defaults."
)]
pub struct Config {
    /// TOML configuration file (keys: long flag names with '_', e.g. `media_ports = "40000-40100"`).
    #[arg(long, env = "STUDYROOM_CONFIG")]
    pub config: Option<PathBuf>,

    /// Development mode: fixed API secret, `GET /dev/token`, listen on 127.0.0.1.
    #[arg(long, env = "STUDYROOM_DEV")]
    pub dev: bool,

    /// HTTP + Socket.IO listen address.
    #[arg(long, env = "STUDYROOM_HTTP", default_value = "127.0.0.1:5002")]
    pub http: SocketAddr,

    /// IP advertised in ICE candidates (the address browsers reach this node at).
    #[arg(long, env = "STUDYROOM_NODE_IP", default_value = "127.0.0.1")]
    pub node_ip: IpAddr,

    /// IP the media sockets bind to (default: the node IP when it is local, so replies
    /// leave from the address peers sent to; else the wildcard address).
    #[arg(long, env = "STUDYROOM_BIND_IP")]
    pub bind_ip: Option<IpAddr>,

    /// Media UDP port range, `MIN-MAX`.
    #[arg(long, env = "STUDYROOM_MEDIA_PORTS", default_value = "40000-40100", value_parser = parse_range)]
    pub media_ports: (u16, u16),

    /// Media shard threads (0 = one per core).
    #[arg(long, env = "STUDYROOM_SHARDS", default_value_t = 0)]
    pub shards: usize,

    /// HS256 secret for participant tokens (required unless --dev).
    #[arg(long, env = "STUDYROOM_API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,

    /// Shared secret for TURN REST credentials handed out in `join` (the embedded relay
    /// and any --turn-url); default: a random secret per process.
    #[arg(long, env = "STUDYROOM_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,

    /// TURN/STUN URLs handed to clients (repeatable), e.g. `turn:host:3478?transport=udp`.
    #[arg(long = "turn-url", env = "STUDYROOM_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Vec<String>,

    /// Run without the embedded TURN relay.
    #[arg(long, env = "STUDYROOM_NO_TURN")]
    pub no_turn: bool,

    /// Embedded TURN: UDP and TCP listen address.
    #[arg(long, env = "STUDYROOM_TURN_LISTEN", default_value = "0.0.0.0:3478")]
    pub turn_listen: SocketAddr,

    /// Embedded TURN: TLS listen address (needs --turn-tls-cert/--turn-tls-key, or --dev
    /// for a self-signed certificate; otherwise TLS is off).
    #[arg(
        long,
        env = "STUDYROOM_TURN_TLS_LISTEN",
        default_value = "0.0.0.0:5349"
    )]
    pub turn_tls_listen: SocketAddr,

    /// Embedded TURN: TLS certificate chain (PEM).
    #[arg(long, env = "STUDYROOM_TURN_TLS_CERT")]
    pub turn_tls_cert: Option<PathBuf>,

    /// Embedded TURN: TLS private key (PEM).
    #[arg(long, env = "STUDYROOM_TURN_TLS_KEY")]
    pub turn_tls_key: Option<PathBuf>,

    /// Embedded TURN: relay UDP port range, `MIN-MAX`.
    #[arg(long, env = "STUDYROOM_TURN_RELAY_PORTS", default_value = "49160-49999", value_parser = parse_range)]
    pub turn_relay_ports: (u16, u16),

    /// Embedded TURN: peer range allowed despite the default deny list (repeatable CIDR,
    /// e.g. `127.0.0.0/8` for tests).
    #[arg(
        long = "turn-allow-peer",
        env = "STUDYROOM_TURN_ALLOW_PEERS",
        value_delimiter = ','
    )]
    pub turn_allow_peers: Vec<turn::Cidr>,

    /// Embedded TURN: static user `name:password` (repeatable).
    #[arg(long = "turn-user", env = "STUDYROOM_TURN_USERS", value_delimiter = ',', value_parser = parse_user, hide_env_values = true)]
    pub turn_users: Vec<(String, String)>,

    /// Embedded TURN: realm.
    #[arg(long, env = "STUDYROOM_TURN_REALM", default_value = "studyroom")]
    pub turn_realm: String,

    /// Embedded TURN: most live allocations per username.
    #[arg(long, env = "STUDYROOM_TURN_USER_QUOTA", default_value_t = 10)]
    pub turn_user_quota: usize,

    /// Embedded TURN: per-allocation cap in bytes per second (0 = none).
    #[arg(long, env = "STUDYROOM_TURN_BANDWIDTH", default_value_t = 4_000_000)]
    pub turn_bandwidth: u64,

    /// Embedded TURN: Allocate requests that fail authentication per second from one
    /// source address (IPv6: per /64); beyond, that source's Allocates get 508 before any
    /// credential check. 0 turns it off.
    #[arg(long, env = "STUDYROOM_TURN_ALLOCATE_RATE", default_value_t = 50)]
    pub turn_allocate_rate: u32,

    /// Embedded TURN: unauthenticated Allocates one source may send at once before
    /// --turn-allocate-rate applies.
    #[arg(long, env = "STUDYROOM_TURN_ALLOCATE_BURST", default_value_t = 500)]
    pub turn_allocate_burst: u32,

    /// Embedded TURN: relay to our own SFU through real sockets instead of the
    /// in-process hand-over (benchmarks, debugging).
    #[arg(long, env = "STUDYROOM_TURN_NO_HANDOVER")]
    pub turn_no_handover: bool,

    /// Most participants in one room.
    #[arg(long, env = "STUDYROOM_MAX_ROOM_SIZE", default_value_t = 500)]
    pub max_room_size: usize,

    /// Seconds without ICE consent before a participant is dropped.
    #[arg(long, env = "STUDYROOM_CONSENT_TIMEOUT", default_value_t = 15)]
    pub consent_timeout_secs: u64,

    /// Seconds a participant whose socket dropped without `leave` is kept (media flowing,
    /// pushes queued) for the client to `resume` on a new socket; 0 removes it at once.
    #[arg(long, env = "STUDYROOM_RESUME_WINDOW_SECS", default_value_t = 15)]
    pub resume_window_secs: u64,

    /// Requests per second one connection may send, over all events (beyond: `rate_limited`;
    /// refused for a second on end, more than --request-burst times: disconnected); 0 turns it off.
    #[arg(long, env = "STUDYROOM_REQUEST_RATE", default_value_t = 50)]
    pub request_rate: u32,

    /// Requests one connection may send at once before --request-rate applies.
    #[arg(long, env = "STUDYROOM_REQUEST_BURST", default_value_t = 200)]
    pub request_burst: u32,

    /// Per-subscriber send-side bandwidth estimation (str0m's, from transport-cc feedback,
    /// with probing) instead of the default loss-based adaptation. Off by default: it costs
    /// a pacer pass per forwarded packet, and on a loaded machine its estimate of an open
    /// loopback link was seen swinging enough to flap layers (BENCHMARKS.md §10).
    #[arg(long, env = "STUDYROOM_BWE")]
    pub bwe: bool,

    /// No per-subscriber adaptation at all: every subscriber gets the layers it asked for
    /// whatever its downlink. By default a subscriber whose receiver reports show sustained
    /// heavy loss is moved down (or its video paused, `videoPaused` reason `bandwidth`)
    /// and back up when the loss is gone (ARCHITECTURE.md "Bandwidth").
    #[arg(long, env = "STUDYROOM_NO_ADAPTATION", conflicts_with = "bwe")]
    pub no_adaptation: bool,

    /// A room spreads over the media shards once it holds this many participants (a
    /// lecture's listeners are encrypted for on every core); smaller rooms live on one
    /// shard. 0: never spread.
    #[arg(long, env = "STUDYROOM_ROOM_SPAN_AFTER", default_value_t = 50)]
    pub room_span_after: usize,

    /// Socket.IO handshakes per second from one client address (beyond:
    /// `too_many_connections`); 0 turns it off.
    #[arg(long, env = "STUDYROOM_ADDRESS_CONNECT_RATE", default_value_t = 200)]
    pub address_connect_rate: u32,

    /// Handshakes one client address may make at once before --address-connect-rate applies.
    #[arg(long, env = "STUDYROOM_ADDRESS_CONNECT_BURST", default_value_t = 1000)]
    pub address_connect_burst: u32,

    /// Live Socket.IO connections one client address may hold (beyond:
    /// `too_many_connections`); 0 = no cap.
    #[arg(
        long,
        env = "STUDYROOM_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 2000
    )]
    pub max_connections_per_address: u32,

    /// `join`s (and `resume`s) per second from one client address (beyond: `rate_limited`);
    /// 0 turns it off.
    #[arg(long, env = "STUDYROOM_ADDRESS_JOIN_RATE", default_value_t = 200)]
    pub address_join_rate: u32,

    /// Joins one client address may make at once before --address-join-rate applies.
    #[arg(long, env = "STUDYROOM_ADDRESS_JOIN_BURST", default_value_t = 1000)]
    pub address_join_burst: u32,

    /// Behind a reverse proxy: the request header holding the client address (its last
    /// entry), e.g. `X-Forwarded-For`. Only set it when every client comes through a
    /// proxy that sets the header: otherwise clients choose their address. Default: off
    /// (the TCP peer address).
    #[arg(long, env = "STUDYROOM_TRUSTED_PROXY_HEADER")]
    pub trusted_proxy_header: Option<axum::http::HeaderName>,

    /// How many times per minute one identity may replace its own live session in a room
    /// by joining again (beyond: `rate_limited`, the live session stays); 0 turns it off.
    #[arg(
        long,
        env = "STUDYROOM_IDENTITY_REPLACEMENTS_PER_MINUTE",
        default_value_t = 10
    )]
    pub identity_replacements_per_minute: u32,

    /// Most participants on this node, all rooms (beyond: `server_full`); 0 = no cap.
    #[arg(long, env = "STUDYROOM_MAX_PARTICIPANTS", default_value_t = 5000)]
    pub max_participants: usize,

    /// Tests only: honour `loss` impairment in dev tokens.
    #[arg(long, env = "STUDYROOM_ALLOW_IMPAIRMENT")]
    pub allow_impairment: bool,

    /// Log as JSON lines.
    #[arg(long, env = "STUDYROOM_LOG_JSON")]
    pub log_json: bool,

    /// Prometheus metrics listen address (`/metrics`).
    #[arg(long, env = "STUDYROOM_METRICS", default_value = "127.0.0.1:9100")]
    pub metrics: SocketAddr,

    /// On SIGTERM: seconds to wait for clients to move away before exiting.
    #[arg(long, env = "STUDYROOM_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,

    /// On SIGTERM: the URL clients are told to reconnect to (default: the same address,
    /// for a load balancer to route to a live node).
    #[arg(long, env = "STUDYROOM_DRAIN_REDIRECT_URL")]
    pub drain_redirect_url: Option<String>,

    /// Redis URL: several nodes sharing it form one deployment (shared room state, node
    /// registry, rooms placed on nodes). Without it the node stands alone.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// With Redis: seconds to wait for Redis at startup before giving up (0: fail at once).
    #[arg(long, env = "STUDYROOM_REDIS_WAIT_SECS", default_value_t = 0)]
    pub redis_wait_secs: u64,

    /// With Redis: this node's id in the registry (default: random, new per process).
    #[arg(long, env = "STUDYROOM_NODE_ID")]
    pub node_id: Option<String>,

    /// With Redis: the signaling URL other nodes send clients to (default:
    /// `http://<node-ip>:<http port>`).
    #[arg(long, env = "STUDYROOM_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// With Redis: heartbeat period in milliseconds.
    #[arg(long, env = "STUDYROOM_HEARTBEAT_MS", default_value_t = 1000)]
    pub heartbeat_ms: u64,

    /// With Redis: a node whose last heartbeat is older than this (ms) is dead; its rooms
    /// move and its records are cleaned up.
    #[arg(long, env = "STUDYROOM_NODE_TTL_MS", default_value_t = 3000)]
    pub node_ttl_ms: u64,

    /// NATS URL (room lifecycle and focus events on JetStream, platform commands).
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,

    /// Focus events held in memory while NATS is away; past this they go to the spill file.
    #[arg(long, env = "STUDYROOM_FOCUS_QUEUE_MAX", default_value_t = 10_000)]
    pub focus_queue_max: usize,

    /// Spill file for focus events past --focus-queue-max (replayed in order when NATS is
    /// back, and by the next run). Default: `studyroom-focus-<http port>.spill` in the
    /// system's temporary directory.
    #[arg(long, env = "STUDYROOM_FOCUS_SPILL_PATH")]
    pub focus_spill_path: Option<PathBuf>,

    /// Size bound of the focus spill file in bytes (past it the newest events are dropped
    /// and counted); 0 turns spilling off (the oldest event in memory is dropped instead).
    #[arg(long, env = "STUDYROOM_FOCUS_SPILL_MAX_BYTES", default_value_t = 256 << 20)]
    pub focus_spill_max_bytes: u64,

    /// Audit-log webhook: POST every focus event, signed, to this URL (repeatable; each
    /// URL gets every event). See docs/events.md.
    #[arg(
        long = "audit-webhook-url",
        env = "STUDYROOM_AUDIT_WEBHOOK_URLS",
        value_delimiter = ','
    )]
    pub audit_webhook_urls: Vec<String>,

    /// Audit-log webhook: HMAC-SHA256 key for `X-Studyroom-Signature` (required with a URL,
    /// at least 16 characters).
    #[arg(long, env = "STUDYROOM_AUDIT_WEBHOOK_SECRET", hide_env_values = true)]
    pub audit_webhook_secret: Option<String>,

    /// Audit-log webhook: spool file keeping undelivered events across restarts (without
    /// it they are kept in memory only).
    #[arg(long, env = "STUDYROOM_AUDIT_WEBHOOK_SPOOL")]
    pub audit_webhook_spool: Option<PathBuf>,

    /// Audit-log webhook: largest spool file in bytes; beyond it the oldest undelivered
    /// events are dropped (counted, logged).
    #[arg(
        long,
        env = "STUDYROOM_AUDIT_WEBHOOK_SPOOL_MAX_BYTES",
        default_value_t = 64 << 20
    )]
    pub audit_webhook_spool_max_bytes: u64,

    /// Audit-log webhook: per-request timeout in milliseconds (a timeout is retried).
    #[arg(
        long,
        env = "STUDYROOM_AUDIT_WEBHOOK_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub audit_webhook_timeout_ms: u64,

    /// Audit-log webhook: largest delay between retries in milliseconds (the delay starts
    /// at 500 ms and doubles).
    #[arg(
        long,
        env = "STUDYROOM_AUDIT_WEBHOOK_MAX_BACKOFF_MS",
        default_value_t = 30_000
    )]
    pub audit_webhook_max_backoff_ms: u64,

    /// OpenTelemetry: send traces (OTLP over HTTP/protobuf) to this collector base URL,
    /// e.g. `http://otel-collector:4318`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Parse flags, environment and the optional TOML file, in that order of precedence.
/// A bad value fails naming its flag, environment variable or file key.
pub fn load() -> Result<Config, String> {
    load_from(std::env::args_os().collect())
}

/// [`load`] with explicit arguments (tests).
pub fn load_from(args: Vec<std::ffi::OsString>) -> Result<Config, String> {
    let cmd = Config::command().args_override_self(true);
    let matches = cmd
        .clone()
        .try_get_matches_from(&args)
        .map_err(|e| e.render().to_string())?;
    let first = Config::from_arg_matches(&matches).map_err(|e| e.render().to_string())?;
    let Some(path) = first.config.clone() else {
        return Ok(first);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    // File values become arguments placed *before* the real ones, for every key that the
    // command line or the environment did not set.
    let mut file_args: Vec<std::ffi::OsString> =
        vec![args.first().cloned().unwrap_or_else(|| "studyroom".into())];
    for (key, value) in &table {
        let id = key.replace('-', "_");
        let Some(arg) = cmd.get_arguments().find(|a| {
            let long = a.get_long().map(|l| l.replace('-', "_"));
            (a.get_id().as_str() == id || long.as_deref() == Some(id.as_str())) && id != "config"
        }) else {
            return Err(format!(
                "config file {}: unknown key `{key}`",
                path.display()
            ));
        };
        let explicit = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
        );
        if explicit {
            continue;
        }
        let flag = format!("--{}", arg.get_long().unwrap_or(&id));
        let values: Vec<String> = match value {
            toml::Value::String(s) => vec![s.clone()],
            toml::Value::Integer(i) => vec![i.to_string()],
            toml::Value::Boolean(b) => {
                if *b {
                    file_args.push(flag.into());
                }
                continue;
            }
            toml::Value::Array(a) => a
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(format!(
                        "config file {}: key `{key}`: expected strings, got {other}",
                        path.display()
                    )),
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(format!(
                    "config file {}: key `{key}`: unsupported value {other}",
                    path.display()
                ));
            }
        };
        for v in values {
            // Validate alone first so the error names the key.
            let one = vec![
                std::ffi::OsString::from("studyroom"),
                flag.clone().into(),
                v.clone().into(),
            ];
            if let Err(e) = Config::command().try_get_matches_from(one) {
                let msg = e.render().to_string();
                let msg = msg.lines().next().unwrap_or("invalid value");
                return Err(format!(
                    "config file {}: key `{key}`: {msg}",
                    path.display()
                ));
            }
            file_args.push(flag.clone().into());
            file_args.push(v.into());
        }
    }
    file_args.extend(args.into_iter().skip(1));
    let matches = cmd
        .try_get_matches_from(file_args)
        .map_err(|e| e.render().to_string())?;
    Config::from_arg_matches(&matches).map_err(|e| e.render().to_string())
}

impl Config {
    /// The API secret in effect.
    pub fn secret(&self) -> Result<String, String> {
        let secret = self.api_secret.as_ref().filter(|s| !s.is_empty());
        match (secret, self.dev) {
            (Some(s), _) if s.len() >= 16 => Ok(s.clone()),
            (Some(_), _) => {
                Err("STUDYROOM_API_SECRET (--api-secret) must be at least 16 characters".into())
            }
            (None, true) => Ok(DEV_SECRET.into()),
            (None, false) => {
                Err("STUDYROOM_API_SECRET (--api-secret) is required unless --dev is given".into())
            }
        }
    }
}

fn parse_user(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((u, p)) if !u.is_empty() && !p.is_empty() => Ok((u.to_owned(), p.to_owned())),
        _ => Err("expected NAME:PASSWORD".into()),
    }
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or("expected MIN-MAX, e.g. 40000-40100")?;
    let a: u16 = a.trim().parse().map_err(|e| format!("bad MIN: {e}"))?;
    let b: u16 = b.trim().parse().map_err(|e| format!("bad MAX: {e}"))?;
    if a == 0 || b < a {
        return Err("need 0 < MIN <= MAX".into());
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<std::ffi::OsString> {
        a.iter().map(|s| s.into()).collect()
    }

    #[test]
    fn file_values_apply_below_flags_and_bad_keys_are_named() {
        let dir = std::env::temp_dir().join(format!("studyroom-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.toml");
        std::fs::write(
            &f,
            "node_ip = \"10.1.2.3\"\nshards = 3\ndev = true\nturn_url = [\"turn:a\", \"turn:b\"]\n\
             audit_webhook_url = [\"http://a/x\", \"https://b/y\"]\n",
        )
        .unwrap();
        let c = load_from(args(&[
            "studyroom",
            "--config",
            f.to_str().unwrap(),
            "--shards",
            "5",
        ]))
        .unwrap();
        assert_eq!(c.node_ip.to_string(), "10.1.2.3", "file value used");
        assert_eq!(c.shards, 5, "flag beats file");
        assert!(c.dev);
        assert_eq!(c.turn_urls, ["turn:a", "turn:b"]);
        assert_eq!(c.audit_webhook_urls, ["http://a/x", "https://b/y"]);
        std::fs::write(&f, "node_ip = \"not-an-ip\"\n").unwrap();
        let e = load_from(args(&["studyroom", "--config", f.to_str().unwrap()])).unwrap_err();
        assert!(e.contains("key `node_ip`"), "{e}");
        std::fs::write(&f, "nodeip = \"1.2.3.4\"\n").unwrap();
        let e = load_from(args(&["studyroom", "--config", f.to_str().unwrap()])).unwrap_err();
        assert!(e.contains("unknown key `nodeip`"), "{e}");
        std::fs::write(&f, "media_ports = \"9-1\"\n").unwrap();
        let e = load_from(args(&["studyroom", "--config", f.to_str().unwrap()])).unwrap_err();
        assert!(e.contains("key `media_ports`"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parses_defaults_and_rejects_bad_ranges() {
        let c = Config::try_parse_from(["studyroom", "--dev"]).unwrap();
        assert_eq!(c.media_ports, (40000, 40100));
        assert_eq!(c.secret().unwrap(), DEV_SECRET);
        assert!(Config::try_parse_from(["studyroom", "--media-ports", "5-1"]).is_err());
        assert!(Config::try_parse_from(["studyroom", "--media-ports", "x"]).is_err());
        let c = Config::try_parse_from(["studyroom"]).unwrap();
        assert!(c.secret().is_err(), "production needs a secret");
    }

    #[test]
    fn limit_defaults_and_the_proxy_header() {
        let c = Config::try_parse_from(["studyroom"]).unwrap();
        assert_eq!(
            (c.address_connect_rate, c.address_connect_burst),
            (200, 1000)
        );
        assert_eq!(c.max_connections_per_address, 2000);
        assert_eq!((c.address_join_rate, c.address_join_burst), (200, 1000));
        assert_eq!(c.identity_replacements_per_minute, 10);
        assert_eq!(c.max_participants, 5000);
        assert_eq!((c.turn_allocate_rate, c.turn_allocate_burst), (50, 500));
        assert!(c.trusted_proxy_header.is_none(), "off by default");
        let c = Config::try_parse_from(["studyroom", "--trusted-proxy-header", "X-Forwarded-For"])
            .unwrap();
        assert_eq!(c.trusted_proxy_header.unwrap().as_str(), "x-forwarded-for");
        assert!(
            Config::try_parse_from(["studyroom", "--trusted-proxy-header", "bad header"]).is_err()
        );
    }
}
