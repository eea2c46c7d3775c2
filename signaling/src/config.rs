//! Command line and environment. Every flag has an environment variable; `--dev` fills
//! in what a single developer machine needs.

use std::net::{IpAddr, SocketAddr};

use clap::Parser;

/// Fixed secret used by `--dev` (tokens from `/dev/token` are signed with it).
pub const DEV_SECRET: &str = "studyroom-dev-secret-do-not-use-in-production";

/// studyroom: SFU, signaling and TURN for study rooms, in one binary.
#[derive(Debug, Clone, Parser)]
#[command(name = "studyroom", version, about)]
pub struct Config {
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

    /// Shared secret for TURN REST credentials handed out in `join` (with --turn-url).
    #[arg(long, env = "STUDYROOM_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,

    /// TURN/STUN URLs handed to clients (repeatable), e.g. `turn:host:3478?transport=udp`.
    #[arg(long = "turn-url", env = "STUDYROOM_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Vec<String>,

    /// Most participants in one room.
    #[arg(long, env = "STUDYROOM_MAX_ROOM_SIZE", default_value_t = 500)]
    pub max_room_size: usize,

    /// Seconds without ICE consent before a participant is dropped.
    #[arg(long, env = "STUDYROOM_CONSENT_TIMEOUT", default_value_t = 15)]
    pub consent_timeout_secs: u64,

    /// Tests only: honour `loss` impairment in dev tokens.
    #[arg(long, env = "STUDYROOM_ALLOW_IMPAIRMENT")]
    pub allow_impairment: bool,

    /// Log as JSON lines.
    #[arg(long, env = "STUDYROOM_LOG_JSON")]
    pub log_json: bool,
}

impl Config {
    /// The API secret in effect.
    pub fn secret(&self) -> Result<String, String> {
        match (&self.api_secret, self.dev) {
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
}
