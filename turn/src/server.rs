//! The sans-IO TURN server (RFC 8656): allocations, permissions, channels, credentials.
//!
//! Driving contract:
//! - Feed every datagram (or TCP frame) a client sends with [`TurnServer::handle_client`],
//!   every datagram a relay socket receives with [`TurnServer::handle_peer`], and a closed
//!   TCP/TLS connection with [`TurnServer::client_gone`].
//! - Call [`TurnServer::handle_timeout`] about once a second: it expires allocations,
//!   permissions and channel bindings. Time is always an argument; the core reads no clock.
//! - Output goes through the [`Io`] the caller passes in: replies and relayed data to
//!   clients, relayed data to peers, and relay sockets to open and close. Nothing is
//!   queued inside, and the relay hot paths (ChannelData, Send and Data) do not allocate.
//!
//! Security model: requests other than Binding need long-term credentials (static users
//! or TURN REST usernames `EXPIRY:identity`); an unauthenticated request costs one HMAC
//! and no state (the nonce is stateless: issue time + HMAC over it and the client IP).
//! Peers must pass the [`PeerPolicy`] (or be one of the node's own media addresses),
//! each user has an allocation quota, each allocation a byte-rate cap. Allocate requests
//! that fail authentication are limited per source address (`allocate_gate.rs`): past the
//! limit a source's Allocates get 508 before any credential work.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

mod allocate_gate;
mod credentials;
mod relay;

use crate::cidr::PeerPolicy;
use crate::codec::{self, ChannelData, Class, Kind, Message, ParseError, Writer, attr, method};
use allocate_gate::{AllocateGate, Gate};
use relay::{allocation_via, may_pass};

/// Transport a client reached us over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Proto {
    fn stream(self) -> bool {
        !matches!(self, Proto::Udp)
    }
}

/// A client's transport address (the 5-tuple, with `conn` telling TCP connections apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client {
    /// Transport.
    pub proto: Proto,
    /// Connection id for TCP/TLS (0 for UDP).
    pub conn: u64,
    /// The client's address as we see it.
    pub addr: SocketAddr,
}

/// What the core needs from its driver.
pub trait Io {
    /// Open a relay socket; returns the relayed transport address clients are told
    /// (`None`: no port free -> 508).
    fn bind_relay(&mut self) -> Option<SocketAddr>;
    /// Close the relay socket of `relayed`.
    fn release_relay(&mut self, relayed: SocketAddr);
    /// Send bytes to a client.
    fn to_client(&mut self, client: &Client, data: &[u8]);
    /// Send `data` from the relay socket of `relayed` to `peer`.
    fn to_peer(&mut self, relayed: SocketAddr, peer: SocketAddr, data: &[u8]);
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// REALM.
    pub realm: String,
    /// TURN REST shared secret (coturn's `static-auth-secret`), if REST usernames are accepted.
    pub rest_secret: Option<Vec<u8>>,
    /// Static users: name -> password.
    pub users: HashMap<String, String>,
    /// Which peers may be reached.
    pub policy: PeerPolicy,
    /// The node's own media addresses (IP, port range): always reachable, whatever the
    /// policy says, because relaying into our SFU is the point.
    pub own_peers: Vec<(IpAddr, RangeInclusive<u16>)>,
    /// Allocation lifetime when the client asks for less (RFC: 600 s).
    pub default_lifetime: Duration,
    /// Longest allocation lifetime granted (3600 s).
    pub max_lifetime: Duration,
    /// Permission lifetime (RFC: 300 s).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (RFC: 600 s).
    pub channel_lifetime: Duration,
    /// How long a nonce stays fresh (then 438 Stale Nonce).
    pub nonce_lifetime: Duration,
    /// Most live allocations per username (486 beyond).
    pub user_quota: usize,
    /// Per-allocation cap in bytes per second, both directions summed (0 = none).
    pub bandwidth: u64,
    /// Allocate requests that fail authentication, per second per source address (IPv6:
    /// per /64) before that source's Allocates are refused with 508 unread (0 = no limit).
    pub allocate_rate: u32,
    /// ... and at once.
    pub allocate_burst: u32,
    /// Key for the stateless nonces.
    pub nonce_key: [u8; 32],
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            realm: "studyroom".into(),
            rest_secret: None,
            users: HashMap::new(),
            policy: PeerPolicy::default(),
            own_peers: Vec::new(),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            user_quota: 10,
            bandwidth: 4_000_000,
            allocate_rate: 50,
            allocate_burst: 500,
            nonce_key: [0; 32],
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnStats {
    /// Live allocations.
    pub allocations: u64,
    /// Datagrams relayed client -> peer.
    pub to_peer_packets: u64,
    /// Datagrams relayed peer -> client.
    pub to_client_packets: u64,
    /// Bytes relayed (payload, both directions).
    pub relayed_bytes: u64,
    /// Requests refused for credentials (401/438/441).
    pub auth_refused: u64,
    /// Datagrams dropped: not TURN, no allocation, no permission, over the cap.
    pub dropped: u64,
    /// Allocate requests refused (508) by the pre-authentication limit per source.
    pub allocate_rate_limited: u64,
}

struct Permission {
    expires: Instant,
    /// Allowed only because the IP is one of our own media addresses: check the port too.
    own_only: bool,
}

struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

struct Allocation {
    client: Client,
    relayed: SocketAddr,
    username: String,
    key: [u8; 16],
    expires: Instant,
    txid: [u8; 12],
    lifetime: u32,
    perms: HashMap<IpAddr, Permission>,
    channels: HashMap<u16, Channel>,
    channel_of: HashMap<SocketAddr, u16>,
    tokens: f64,
    refilled: Instant,
}

/// An authenticated TURN request, told apart once from the STUN method so the dispatch
/// below is exhaustive (a new method cannot fall through to another's handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Allocate,
    Refresh,
    CreatePermission,
    ChannelBind,
}

impl Request {
    fn from_method(m: u16) -> Option<Request> {
        match m {
            method::ALLOCATE => Some(Request::Allocate),
            method::REFRESH => Some(Request::Refresh),
            method::CREATE_PERMISSION => Some(Request::CreatePermission),
            method::CHANNEL_BIND => Some(Request::ChannelBind),
            _ => None,
        }
    }
}

/// The TURN server state machine.
pub struct TurnServer {
    cfg: ServerConfig,
    start: Instant,
    start_unix: u64,
    next_id: u64,
    allocs: HashMap<u64, Allocation>,
    by_client: HashMap<Client, u64>,
    by_relay: HashMap<SocketAddr, u64>,
    per_user: HashMap<String, usize>,
    /// Unauthenticated Allocates per source address.
    gate: AllocateGate,
    buf: Vec<u8>,
    stats: TurnStats,
}

/// An error answer (code, reason).
type Refusal = (u16, &'static str);

/// The answer to an Allocate refused by the pre-authentication limit.
const RATE_LIMITED: Refusal = (508, "Insufficient Capacity");

impl TurnServer {
    /// A server whose clock reads `start_unix` (seconds since 1970) at `start`.
    pub fn new(cfg: ServerConfig, start: Instant, start_unix: u64) -> Self {
        TurnServer {
            gate: AllocateGate::new(cfg.allocate_rate, cfg.allocate_burst),
            cfg,
            start,
            start_unix,
            next_id: 0,
            allocs: HashMap::new(),
            by_client: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            buf: Vec::with_capacity(2048),
            stats: TurnStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> TurnStats {
        TurnStats {
            allocations: self.allocs.len() as u64,
            ..self.stats
        }
    }

    fn unix(&self, now: Instant) -> u64 {
        self.start_unix + now.saturating_duration_since(self.start).as_secs()
    }

    /// A datagram (or one TCP/TLS frame) from a client.
    pub fn handle_client(&mut self, now: Instant, client: Client, data: &[u8], io: &mut impl Io) {
        match codec::kind(data) {
            Kind::ChannelData => self.client_channel_data(now, client, data, io),
            Kind::Stun => match Message::parse(data) {
                Ok(m) => self.handle_stun(now, client, &m, io),
                Err(ParseError::BadAttributes) => {
                    // A request with broken attributes gets 400 (header still readable).
                    self.stats.dropped += 1;
                    if let Some((m, txid)) = request_header(data) {
                        self.reply_error(client, m, &txid, (400, "Bad Request"), None, io);
                    }
                }
                Err(_) => self.stats.dropped += 1,
            },
            Kind::Other => self.stats.dropped += 1,
        }
    }

    /// A datagram from `peer` on the relay socket of `relayed`.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relayed: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        io: &mut impl Io,
    ) {
        let Some(a) = allocation_via(&self.by_relay, &relayed, &mut self.allocs) else {
            self.stats.dropped += 1;
            return;
        };
        if !may_pass(a, now, peer, data.len(), &self.cfg) {
            self.stats.dropped += 1;
            return;
        }
        let live_channel = a
            .channel_of
            .get(&peer)
            .filter(|ch| a.channels.get(ch).is_some_and(|c| c.expires > now))
            .copied();
        match live_channel {
            Some(ch) => ChannelData::write(&mut self.buf, ch, data, a.client.proto.stream()),
            None => {
                let txid: [u8; 12] = std::array::from_fn(|_| fastrand::u8(..));
                Writer::new(&mut self.buf, method::DATA, Class::Indication, &txid)
                    .xor_addr(attr::XOR_PEER_ADDRESS, peer)
                    .attr(attr::DATA, data);
            }
        }
        self.stats.to_client_packets += 1;
        self.stats.relayed_bytes += data.len() as u64;
        io.to_client(&a.client, &self.buf);
    }

    /// A TCP/TLS client connection closed: its allocation ends with it.
    pub fn client_gone(&mut self, client: Client, io: &mut impl Io) {
        if let Some(id) = self.by_client.get(&client).copied() {
            self.remove(id, io);
        }
    }

    /// Expire allocations, permissions and channel bindings.
    pub fn handle_timeout(&mut self, now: Instant, io: &mut impl Io) {
        self.gate.sweep(now);
        let dead: Vec<u64> = self
            .allocs
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            debug!("allocation expired");
            self.remove(id, io);
        }
        for a in self.allocs.values_mut() {
            a.perms.retain(|_, p| p.expires > now);
            let expired: Vec<u16> = a
                .channels
                .iter()
                .filter(|(_, c)| c.expires <= now)
                .map(|(n, _)| *n)
                .collect();
            for n in expired {
                if let Some(c) = a.channels.remove(&n) {
                    a.channel_of.remove(&c.peer);
                }
            }
        }
    }

    fn remove(&mut self, id: u64, io: &mut impl Io) {
        let Some(a) = self.allocs.remove(&id) else {
            return;
        };
        self.by_client.remove(&a.client);
        self.by_relay.remove(&a.relayed);
        if let Some(n) = self.per_user.get_mut(&a.username) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&a.username);
            }
        }
        io.release_relay(a.relayed);
    }

    fn client_channel_data(&mut self, now: Instant, client: Client, data: &[u8], io: &mut impl Io) {
        let Some(cd) = ChannelData::parse(data) else {
            self.stats.dropped += 1;
            return;
        };
        let peer_of = |a: &Allocation| {
            a.channels
                .get(&cd.channel)
                .filter(|c| c.expires > now)
                .map(|c| c.peer)
        };
        self.relay_to_peer(now, client, peer_of, cd.data, io);
    }

    fn handle_stun(&mut self, now: Instant, client: Client, m: &Message<'_>, io: &mut impl Io) {
        match m.class {
            Class::Indication if m.method == method::SEND => {
                self.send_indication(now, client, m, io)
            }
            Class::Request => {
                let unknown: Vec<u16> = m.unknown_required().collect();
                if !unknown.is_empty() {
                    let mut v = Vec::new();
                    for t in unknown {
                        v.extend_from_slice(&t.to_be_bytes());
                    }
                    Writer::new(&mut self.buf, m.method, Class::Error, &m.txid)
                        .error(420, "Unknown Attribute")
                        .attr(attr::UNKNOWN_ATTRIBUTES, &v)
                        .fingerprint();
                    io.to_client(&client, &self.buf);
                    return;
                }
                if m.method == method::BINDING {
                    Writer::new(&mut self.buf, method::BINDING, Class::Success, &m.txid)
                        .xor_addr(attr::XOR_MAPPED_ADDRESS, client.addr)
                        .fingerprint();
                    io.to_client(&client, &self.buf);
                    return;
                }
                let Some(request) = Request::from_method(m.method) else {
                    self.reply_error(client, m.method, &m.txid, (400, "Bad Request"), None, io);
                    return;
                };
                // Allocate floods are refused before any credential work (allocate_gate.rs).
                // 508, not 486: no username is known yet, and 486 is the per-username quota.
                if request == Request::Allocate
                    && let Gate::Closed { first } = self.gate.open(now, client.addr.ip())
                {
                    if first {
                        warn!(
                            proto = ?client.proto,
                            "unauthenticated Allocate requests from one source past --turn-allocate-rate: refusing them with 508"
                        );
                        debug!(source = %client.addr.ip(), "Allocate limit reached");
                    }
                    self.stats.allocate_rate_limited += 1;
                    self.reply_error(client, m.method, &m.txid, RATE_LIMITED, None, io);
                    return;
                }
                let Some((username, key)) = self.authenticate(now, client, m, io) else {
                    if request == Request::Allocate {
                        self.gate.charge(now, client.addr.ip());
                    }
                    return;
                };
                let r = match request {
                    Request::Allocate => self.allocate(now, client, m, username, key, io),
                    Request::Refresh => self.refresh(now, client, m, &username, io),
                    Request::CreatePermission => self.create_permission(now, client, m, &username),
                    Request::ChannelBind => self.channel_bind(now, client, m, &username),
                };
                match r {
                    // Allocate and Refresh answered themselves (their success carries
                    // attributes); the other two get a bare success.
                    Ok(())
                        if matches!(request, Request::CreatePermission | Request::ChannelBind) =>
                    {
                        Writer::new(&mut self.buf, m.method, Class::Success, &m.txid)
                            .integrity(&key)
                            .fingerprint();
                        io.to_client(&client, &self.buf);
                    }
                    Ok(()) => {}
                    Err(refusal) => {
                        self.reply_error(client, m.method, &m.txid, refusal, Some(&key), io)
                    }
                }
            }
            _ => self.stats.dropped += 1,
        }
    }

    fn reply_error(
        &mut self,
        client: Client,
        method: u16,
        txid: &[u8; 12],
        (code, reason): Refusal,
        key: Option<&[u8; 16]>,
        io: &mut impl Io,
    ) {
        let mut w = Writer::new(&mut self.buf, method, Class::Error, txid);
        w.error(code, reason);
        if let Some(k) = key {
            w.integrity(k);
        }
        w.fingerprint();
        io.to_client(&client, &self.buf);
    }

    fn lifetime(&self, requested: Option<u32>) -> u32 {
        let max = self.cfg.max_lifetime.as_secs() as u32;
        let default = self.cfg.default_lifetime.as_secs() as u32;
        requested
            .map(|r| r.min(max))
            .unwrap_or(default)
            .max(default)
    }
}

/// Method and transaction id of a request whose attributes failed to parse.
fn request_header(data: &[u8]) -> Option<(u16, [u8; 12])> {
    if data.len() < 20 || data[4..8] != codec::MAGIC.to_be_bytes() {
        return None;
    }
    let t = u16::from_be_bytes([data[0], data[1]]);
    if t & 0x0110 != 0 {
        return None; // not a request
    }
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&data[8..20]);
    Some((method, txid))
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}
