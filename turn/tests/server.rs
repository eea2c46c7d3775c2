//! The TURN core driven with virtual time and a recording I/O: every rule that refuses
//! something is shown refusing, and every relay path is shown relaying.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use turn::codec::{self, ChannelData, Class, Message, Writer, attr, method};
use turn::{Client, Io, PeerPolicy, Proto, ServerConfig, TurnServer};

const SECRET: &[u8] = b"rest-secret";
const T0_UNIX: u64 = 1_800_000_000;

#[derive(Default)]
struct Rec {
    next_port: u16,
    capacity: usize,
    open: Vec<SocketAddr>,
    released: Vec<SocketAddr>,
    to_client: Vec<(Client, Vec<u8>)>,
    to_peer: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
}

impl Io for Rec {
    fn bind_relay(&mut self) -> Option<SocketAddr> {
        if self.open.len() >= self.capacity {
            return None;
        }
        self.next_port += 1;
        let a: SocketAddr = format!("198.51.100.1:{}", 50000 + self.next_port)
            .parse()
            .unwrap();
        self.open.push(a);
        Some(a)
    }
    fn release_relay(&mut self, relayed: SocketAddr) {
        self.open.retain(|a| *a != relayed);
        self.released.push(relayed);
    }
    fn to_client(&mut self, client: &Client, data: &[u8]) {
        self.to_client.push((*client, data.to_vec()));
    }
    fn to_peer(&mut self, relayed: SocketAddr, peer: SocketAddr, data: &[u8]) {
        self.to_peer.push((relayed, peer, data.to_vec()));
    }
}

struct World {
    srv: TurnServer,
    io: Rec,
    t0: Instant,
    now: Instant,
}

fn cfg() -> ServerConfig {
    ServerConfig {
        realm: "test.realm".into(),
        rest_secret: Some(SECRET.to_vec()),
        users: HashMap::from([("static".to_string(), "pw".to_string())]),
        nonce_key: [9; 32],
        user_quota: 2,
        bandwidth: 0,
        ..ServerConfig::default()
    }
}

impl World {
    fn new(cfg: ServerConfig) -> Self {
        let t0 = Instant::now();
        World {
            srv: TurnServer::new(cfg, t0, T0_UNIX),
            io: Rec {
                capacity: 100,
                ..Rec::default()
            },
            t0,
            now: t0,
        }
    }
    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.srv.handle_timeout(self.now, &mut self.io);
    }
    fn send(&mut self, c: &User, data: &[u8]) -> Option<Vec<u8>> {
        self.io.to_client.clear();
        self.srv
            .handle_client(self.now, c.client, data, &mut self.io);
        self.io.to_client.pop().map(|(_, d)| d)
    }
    /// A request with credentials (after learning the nonce from a 401 challenge).
    fn request(
        &mut self,
        c: &mut User,
        m: u16,
        build: impl Fn(&mut Writer<'_>),
    ) -> (Class, Option<u16>, Vec<u8>) {
        for _ in 0..2 {
            let mut buf = Vec::new();
            let txid: [u8; 12] = std::array::from_fn(|_| fastrand::u8(..));
            {
                let mut w = Writer::new(&mut buf, m, Class::Request, &txid);
                build(&mut w);
                if let Some(n) = &c.nonce {
                    w.attr(attr::USERNAME, c.user.as_bytes())
                        .attr(attr::REALM, b"test.realm")
                        .attr(attr::NONCE, n.as_bytes())
                        .integrity(&codec::long_term_key(&c.user, "test.realm", &c.pass));
                }
                w.fingerprint();
            }
            let reply = self.send(c, &buf).expect("a reply");
            let r = Message::parse(&reply).expect("valid reply");
            assert_eq!(r.txid, txid);
            let code = codec::error_code(&r);
            if matches!(code, Some(401) | Some(438)) && c.nonce.is_none() {
                c.nonce = Some(r.text(attr::NONCE).expect("nonce").to_string());
                continue;
            }
            return (r.class, code, reply.clone());
        }
        panic!("challenge loop")
    }
    fn allocate(&mut self, c: &mut User) -> Result<SocketAddr, u16> {
        let (class, code, raw) = self.request(c, method::ALLOCATE, |w| {
            w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        match class {
            Class::Success => {
                let m = Message::parse(&raw).unwrap();
                assert!(m.check_integrity(&codec::long_term_key(&c.user, "test.realm", &c.pass)));
                Ok(m.xor_addr(attr::XOR_RELAYED_ADDRESS).unwrap().unwrap())
            }
            _ => Err(code.unwrap()),
        }
    }
    fn permit(&mut self, c: &mut User, peer: SocketAddr) -> Result<(), u16> {
        let (class, code, _) = self.request(c, method::CREATE_PERMISSION, |w| {
            w.xor_addr(attr::XOR_PEER_ADDRESS, peer);
        });
        if class == Class::Success {
            Ok(())
        } else {
            Err(code.unwrap())
        }
    }
    fn bind(&mut self, c: &mut User, ch: u16, peer: SocketAddr) -> Result<(), u16> {
        let (class, code, _) = self.request(c, method::CHANNEL_BIND, |w| {
            w.attr(attr::CHANNEL_NUMBER, &[(ch >> 8) as u8, ch as u8, 0, 0])
                .xor_addr(attr::XOR_PEER_ADDRESS, peer);
        });
        if class == Class::Success {
            Ok(())
        } else {
            Err(code.unwrap())
        }
    }
    fn send_indication(&mut self, c: &User, peer: SocketAddr, data: &[u8]) {
        let mut buf = Vec::new();
        Writer::new(&mut buf, method::SEND, Class::Indication, &[3; 12])
            .xor_addr(attr::XOR_PEER_ADDRESS, peer)
            .attr(attr::DATA, data);
        assert!(self.send(c, &buf).is_none(), "indications get no answer");
    }
}

struct User {
    client: Client,
    user: String,
    pass: String,
    nonce: Option<String>,
}

fn rest_user(port: u16, expiry: u64) -> User {
    let c = turn::rest_credential(SECRET, "alice", expiry);
    User {
        client: Client {
            proto: Proto::Udp,
            conn: 0,
            addr: format!("203.0.113.9:{port}").parse().unwrap(),
        },
        user: c.username,
        pass: c.password,
        nonce: None,
    }
}

fn peer() -> SocketAddr {
    "192.0.2.200:7000".parse().unwrap()
}

#[test]
fn unauthenticated_allocate_is_challenged_without_state() {
    let mut w = World::new(cfg());
    let c = rest_user(1000, T0_UNIX + 60);
    let mut buf = Vec::new();
    Writer::new(&mut buf, method::ALLOCATE, Class::Request, &[1; 12])
        .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .fingerprint();
    let r = w.send(&c, &buf).unwrap();
    let m = Message::parse(&r).unwrap();
    assert_eq!(codec::error_code(&m), Some(401));
    assert_eq!(m.text(attr::REALM), Some("test.realm"));
    assert_eq!(m.text(attr::NONCE).unwrap().len(), 24);
    assert_eq!(w.srv.stats().allocations, 0);
    assert!(w.io.open.is_empty());
}

#[test]
fn full_relay_path_send_data_and_channels() {
    let mut w = World::new(cfg());
    let mut c = rest_user(1000, T0_UNIX + 60);
    let relayed = w.allocate(&mut c).unwrap();
    assert_eq!(w.io.open, [relayed]);

    // No permission yet: Send is dropped, peer data too.
    w.send_indication(&c, peer(), b"early");
    assert!(w.io.to_peer.is_empty());
    w.srv.handle_peer(w.now, relayed, peer(), b"in", &mut w.io);
    assert!(w.io.to_client.is_empty());

    w.permit(&mut c, peer()).unwrap();
    w.send_indication(&c, peer(), b"hello");
    assert_eq!(w.io.to_peer, [(relayed, peer(), b"hello".to_vec())]);

    // Peer -> client as a Data indication.
    w.srv
        .handle_peer(w.now, relayed, peer(), b"back", &mut w.io);
    let (to, d) = w.io.to_client.pop().unwrap();
    assert_eq!(to, c.client);
    let m = Message::parse(&d).unwrap();
    assert_eq!((m.method, m.class), (method::DATA, Class::Indication));
    assert_eq!(m.get(attr::DATA), Some(&b"back"[..]));
    assert_eq!(m.xor_addr(attr::XOR_PEER_ADDRESS), Some(Some(peer())));

    // Channel: both directions as ChannelData.
    w.bind(&mut c, 0x4001, peer()).unwrap();
    let mut cd = Vec::new();
    ChannelData::write(&mut cd, 0x4001, b"via channel", false);
    w.io.to_peer.clear();
    assert!(w.send(&c, &cd).is_none());
    assert_eq!(w.io.to_peer, [(relayed, peer(), b"via channel".to_vec())]);
    w.srv.handle_peer(w.now, relayed, peer(), b"xyz", &mut w.io);
    let (_, d) = w.io.to_client.pop().unwrap();
    let back = ChannelData::parse(&d).unwrap();
    assert_eq!((back.channel, back.data), (0x4001, &b"xyz"[..]));
    // Unbound channel number: dropped.
    ChannelData::write(&mut cd, 0x4002, b"nope", false);
    w.io.to_peer.clear();
    w.send(&c, &cd);
    assert!(w.io.to_peer.is_empty());
    // The same channel for another peer, or another channel for the same peer: 400.
    let other: SocketAddr = "192.0.2.201:7000".parse().unwrap();
    assert_eq!(w.bind(&mut c, 0x4001, other), Err(400));
    assert_eq!(w.bind(&mut c, 0x4003, peer()), Err(400));
    assert_eq!(w.bind(&mut c, 0x3FFF, other), Err(400));

    // Refresh with lifetime 0 deletes the allocation and frees its socket.
    let (class, _, raw) = w.request(&mut c, method::REFRESH, |w| {
        w.u32(attr::LIFETIME, 0);
    });
    assert_eq!(class, Class::Success);
    assert_eq!(Message::parse(&raw).unwrap().u32(attr::LIFETIME), Some(0));
    assert_eq!(w.io.released, [relayed]);
    assert_eq!(w.srv.stats().allocations, 0);
    assert_eq!(w.permit(&mut c, peer()), Err(437));
}

#[test]
fn channel_data_to_stream_clients_is_padded() {
    let mut w = World::new(cfg());
    let mut c = rest_user(1000, T0_UNIX + 60);
    c.client.proto = Proto::Tcp;
    c.client.conn = 7;
    let relayed = w.allocate(&mut c).unwrap();
    w.bind(&mut c, 0x4000, peer()).unwrap();
    w.srv
        .handle_peer(w.now, relayed, peer(), b"12345", &mut w.io);
    let (_, d) = w.io.to_client.pop().unwrap();
    assert_eq!(d.len(), 12, "4 header + 5 data padded to 8");
    assert_eq!(codec::stream_frame_len(&d), Ok(Some(12)));
    // The connection closing ends the allocation.
    w.srv.client_gone(c.client, &mut w.io);
    assert_eq!(w.io.released, [relayed]);
}

#[test]
fn credentials_wrong_expired_and_static() {
    let mut w = World::new(cfg());
    let mut bad = rest_user(1000, T0_UNIX + 60);
    bad.pass = "wrong".into();
    assert_eq!(w.allocate(&mut bad), Err(401));
    let mut expired = rest_user(1001, T0_UNIX - 1);
    assert_eq!(w.allocate(&mut expired), Err(401));
    let mut s = rest_user(1002, 0);
    s.user = "static".into();
    s.pass = "pw".into();
    assert!(w.allocate(&mut s).is_ok());
    assert_eq!(w.srv.stats().allocations, 1);
    assert!(w.srv.stats().auth_refused >= 2);

    // A REST credential valid now is refused once the clock passes its expiry.
    let mut soon = rest_user(1003, T0_UNIX + 30);
    w.advance(Duration::from_secs(31));
    assert_eq!(w.allocate(&mut soon), Err(401));
}

#[test]
fn nonce_goes_stale_and_is_bound_to_the_client_ip() {
    let mut w = World::new(ServerConfig {
        nonce_lifetime: Duration::from_secs(300),
        ..cfg()
    });
    let mut c = rest_user(1000, T0_UNIX + 7200);
    let relayed = w.allocate(&mut c).unwrap();
    w.advance(Duration::from_secs(301));
    // The old nonce: 438 with a fresh one; the client retries and succeeds.
    let old = c.nonce.clone();
    let (class, code, raw) = w.request(&mut c, method::CREATE_PERMISSION, |w| {
        w.xor_addr(attr::XOR_PEER_ADDRESS, peer());
    });
    assert_eq!((class, code), (Class::Error, Some(438)));
    let fresh = Message::parse(&raw)
        .unwrap()
        .text(attr::NONCE)
        .unwrap()
        .to_string();
    assert_ne!(Some(fresh.clone()), old);
    c.nonce = Some(fresh.clone());
    w.permit(&mut c, peer()).unwrap();
    // Another IP cannot reuse this nonce.
    let mut thief = rest_user(1000, T0_UNIX + 7200);
    thief.client.addr = "203.0.113.10:1000".parse().unwrap();
    thief.nonce = Some(fresh);
    let (_, code, _) = w.request(&mut thief, method::ALLOCATE, |w| {
        w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(code, Some(438));
    assert_eq!(w.io.open, [relayed]);
}

#[test]
fn denied_peers_allow_list_and_own_media_ports() {
    let own: SocketAddr = "10.0.0.5:40000".parse().unwrap();
    let mut w = World::new(ServerConfig {
        own_peers: vec![(own.ip(), 40000..=40100)],
        ..cfg()
    });
    let mut c = rest_user(1000, T0_UNIX + 60);
    w.allocate(&mut c).unwrap();
    for denied in [
        "127.0.0.1:9",
        "10.1.1.1:9",
        "192.168.0.1:9",
        "169.254.0.1:9",
        "224.0.0.1:9",
        "0.0.0.0:9",
    ] {
        assert_eq!(
            w.permit(&mut c, denied.parse().unwrap()),
            Err(403),
            "{denied}"
        );
        assert_eq!(
            w.bind(&mut c, 0x4100, denied.parse().unwrap()),
            Err(403),
            "{denied}"
        );
    }
    assert_eq!(
        w.permit(&mut c, "[2001:db8::1]:9".parse().unwrap()),
        Err(443)
    );
    // Our own SFU address is reachable on its media ports only.
    w.permit(&mut c, own).unwrap();
    w.io.to_peer.clear();
    w.send_indication(&c, own, b"media");
    w.send_indication(&c, "10.0.0.5:22".parse().unwrap(), b"ssh");
    assert_eq!(w.io.to_peer.len(), 1);
    assert_eq!(w.io.to_peer[0].1, own);
    assert_eq!(
        w.bind(&mut c, 0x4200, "10.0.0.5:22".parse().unwrap()),
        Err(403)
    );

    let mut w = World::new(ServerConfig {
        policy: PeerPolicy {
            allowed: vec!["127.0.0.0/8".parse().unwrap()],
            ..PeerPolicy::default()
        },
        ..cfg()
    });
    let mut c = rest_user(1000, T0_UNIX + 60);
    w.allocate(&mut c).unwrap();
    assert_eq!(w.permit(&mut c, "127.0.0.1:9".parse().unwrap()), Ok(()));
    assert_eq!(w.permit(&mut c, "10.0.0.1:9".parse().unwrap()), Err(403));
}

#[test]
fn quota_capacity_mismatch_and_retransmission() {
    let mut w = World::new(cfg());
    let mut a = rest_user(1000, T0_UNIX + 60);
    let mut b = rest_user(1001, T0_UNIX + 60);
    let mut c = rest_user(1002, T0_UNIX + 60);
    w.allocate(&mut a).unwrap();
    w.allocate(&mut b).unwrap();
    assert_eq!(w.allocate(&mut c), Err(486), "quota of 2 per user");
    // Another allocate from an allocated 5-tuple with a new transaction: 437.
    assert_eq!(w.allocate(&mut a), Err(437));

    // Retransmission: same transaction id gets the same answer.
    let mut w = World::new(cfg());
    let mut u = rest_user(1000, T0_UNIX + 60);
    w.allocate(&mut u).unwrap(); // learn the nonce
    w.srv.client_gone(u.client, &mut w.io);
    let mut buf = Vec::new();
    Writer::new(&mut buf, method::ALLOCATE, Class::Request, &[5; 12])
        .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .attr(attr::USERNAME, u.user.as_bytes())
        .attr(attr::REALM, b"test.realm")
        .attr(attr::NONCE, u.nonce.clone().unwrap().as_bytes())
        .integrity(&codec::long_term_key(&u.user, "test.realm", &u.pass));
    let r1 = w.send(&u, &buf).unwrap();
    let r2 = w.send(&u, &buf).unwrap();
    assert_eq!(r1, r2);
    assert_eq!(w.io.open.len(), 1);

    // No relay port free: 508. Wrong transport: 442. Missing transport: 400.
    let mut w = World::new(cfg());
    w.io.capacity = 0;
    let mut u = rest_user(1000, T0_UNIX + 60);
    assert_eq!(w.allocate(&mut u), Err(508));
    let (_, code, _) = w.request(&mut u, method::ALLOCATE, |w| {
        w.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
    });
    assert_eq!(code, Some(442));
    let (_, code, _) = w.request(&mut u, method::ALLOCATE, |_| {});
    assert_eq!(code, Some(400));
}

#[test]
fn lifetimes_expire_with_virtual_time() {
    let mut w = World::new(cfg());
    let mut c = rest_user(1000, T0_UNIX + 7200);
    let relayed = w.allocate(&mut c).unwrap();
    w.permit(&mut c, peer()).unwrap();
    w.advance(Duration::from_secs(299));
    w.send_indication(&c, peer(), b"a");
    assert_eq!(w.io.to_peer.len(), 1);
    w.advance(Duration::from_secs(2));
    w.send_indication(&c, peer(), b"b");
    assert_eq!(w.io.to_peer.len(), 1, "permission expired after 300 s");
    // Refresh keeps the allocation past its first 600 s; lifetime is capped at 3600.
    let (class, _, raw) = w.request(&mut c, method::REFRESH, |w| {
        w.u32(attr::LIFETIME, 100_000);
    });
    assert_eq!(
        class,
        Class::Success,
        "{:?}",
        codec::error_code(&Message::parse(&raw).unwrap())
    );
    assert_eq!(
        Message::parse(&raw).unwrap().u32(attr::LIFETIME),
        Some(3600)
    );
    w.advance(Duration::from_secs(3599));
    assert!(w.io.released.is_empty());
    w.advance(Duration::from_secs(2));
    assert_eq!(w.io.released, [relayed]);
    assert_eq!(w.srv.stats().allocations, 0);
    assert!(w.now - w.t0 > Duration::from_secs(3600));
}

#[test]
fn bandwidth_cap_drops_excess() {
    let mut w = World::new(ServerConfig {
        bandwidth: 10_000,
        ..cfg()
    });
    let mut c = rest_user(1000, T0_UNIX + 60);
    w.allocate(&mut c).unwrap();
    w.permit(&mut c, peer()).unwrap();
    for _ in 0..20 {
        w.send_indication(&c, peer(), &[0u8; 1000]);
    }
    assert_eq!(w.io.to_peer.len(), 10, "one second of burst");
    w.advance(Duration::from_millis(500));
    for _ in 0..20 {
        w.send_indication(&c, peer(), &[0u8; 1000]);
    }
    assert_eq!(w.io.to_peer.len(), 15, "refilled at 10 kB/s");
}

#[test]
fn garbage_is_dropped_or_answered_400_never_panics() {
    let mut w = World::new(cfg());
    let c = rest_user(1000, T0_UNIX + 60);
    fastrand::seed(7);
    for n in 0..5000 {
        let len = fastrand::usize(0..200);
        let mut d: Vec<u8> = (0..len).map(|_| fastrand::u8(..)).collect();
        if n % 2 == 0 && d.len() >= 20 {
            // Make it look like STUN so the attribute parser is exercised.
            d[0] &= 0x3F;
            d[4..8].copy_from_slice(&codec::MAGIC.to_be_bytes());
            let l = ((d.len() - 20) & !3) as u16;
            d.truncate(20 + l as usize);
            d[2..4].copy_from_slice(&l.to_be_bytes());
        }
        w.srv.handle_client(w.now, c.client, &d, &mut w.io);
    }
    assert!(w.io.open.is_empty());
    // A request with a broken attribute gets 400.
    let mut buf = Vec::new();
    Writer::new(&mut buf, method::ALLOCATE, Class::Request, &[1; 12]).attr(attr::USERNAME, b"abcd");
    buf[23] = 99;
    let r = w.send(&c, &buf).unwrap();
    assert_eq!(codec::error_code(&Message::parse(&r).unwrap()), Some(400));
    // An unknown comprehension-required attribute: 420.
    Writer::new(&mut buf, method::ALLOCATE, Class::Request, &[1; 12]).attr(0x7777, b"x");
    let r = w.send(&c, &buf).unwrap();
    let m = Message::parse(&r).unwrap();
    assert_eq!(codec::error_code(&m), Some(420));
    assert_eq!(m.get(attr::UNKNOWN_ATTRIBUTES), Some(&[0x77, 0x77][..]));
    // Binding works without credentials.
    Writer::new(&mut buf, method::BINDING, Class::Request, &[2; 12]);
    let r = w.send(&c, &buf).unwrap();
    let m = Message::parse(&r).unwrap();
    assert_eq!(
        m.xor_addr(attr::XOR_MAPPED_ADDRESS),
        Some(Some(c.client.addr))
    );
}

/// A credential-less Allocate from `addr` (what a flood sends); returns the error code.
fn bare_allocate(w: &mut World, addr: &str, n: u32) -> Option<u16> {
    let c = User {
        client: Client {
            proto: Proto::Udp,
            conn: 0,
            addr: addr.parse().unwrap(),
        },
        user: String::new(),
        pass: String::new(),
        nonce: None,
    };
    let mut buf = Vec::new();
    let mut txid = [7u8; 12];
    txid[..4].copy_from_slice(&n.to_be_bytes());
    Writer::new(&mut buf, method::ALLOCATE, Class::Request, &txid)
        .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .fingerprint();
    let r = w.send(&c, &buf).expect("every Allocate is answered");
    codec::error_code(&Message::parse(&r).unwrap())
}

#[test]
fn an_unauthenticated_allocate_flood_from_one_source_gets_508_while_others_allocate() {
    let mut w = World::new(ServerConfig {
        allocate_rate: 10,
        allocate_burst: 20,
        ..cfg()
    });
    // 1 000 at once from one source: the burst is challenged (401), the rest refused
    // with 508 before any credential work.
    let codes: Vec<Option<u16>> = (0..1000)
        .map(|n| bare_allocate(&mut w, "203.0.113.66:4000", n))
        .collect();
    let challenged = codes.iter().filter(|c| **c == Some(401)).count();
    let refused = codes.iter().filter(|c| **c == Some(508)).count();
    assert_eq!((challenged, refused), (20, 980));
    assert_eq!(w.srv.stats().allocate_rate_limited, 980);
    // The refusal carries no NONCE/REALM (nothing to retry with) and no integrity.
    let r = {
        let mut buf = Vec::new();
        Writer::new(&mut buf, method::ALLOCATE, Class::Request, &[5; 12])
            .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .fingerprint();
        let c = rest_user(4000, T0_UNIX + 60);
        let c = User {
            client: Client {
                addr: "203.0.113.66:4001".parse().unwrap(),
                ..c.client
            },
            ..c
        };
        w.send(&c, &buf).unwrap()
    };
    let m = Message::parse(&r).unwrap();
    assert_eq!(codec::error_code(&m), Some(508));
    assert!(m.text(attr::NONCE).is_none() && m.text(attr::REALM).is_none());

    // Meanwhile a client at another address is challenged and allocates as usual, and
    // its authenticated requests cost it nothing: it can allocate again and again.
    let mut alice = rest_user(1000, T0_UNIX + 60);
    assert!(w.allocate(&mut alice).is_ok());
    for port in 0..30 {
        let mut again = rest_user(2000 + port, T0_UNIX + 60);
        again.nonce = alice.nonce.clone();
        // Same address, other ports: authenticated, never limited (quota aside).
        let r = w.allocate(&mut again);
        assert!(matches!(r, Ok(_) | Err(486)), "{r:?}");
    }

    // The flooding source gets tokens back with time (10/s).
    w.advance(Duration::from_millis(500));
    let after: Vec<Option<u16>> = (0..10)
        .map(|n| bare_allocate(&mut w, "203.0.113.66:4000", 5000 + n))
        .collect();
    assert_eq!(after.iter().filter(|c| **c == Some(401)).count(), 5);
}

#[test]
fn a_source_that_stops_is_forgotten_and_served_again() {
    let mut w = World::new(ServerConfig {
        allocate_rate: 10,
        allocate_burst: 5,
        ..cfg()
    });
    for n in 0..10 {
        bare_allocate(&mut w, "203.0.113.67:4000", n);
    }
    assert_eq!(bare_allocate(&mut w, "203.0.113.67:4000", 99), Some(508));
    w.advance(Duration::from_secs(2));
    for n in 0..5 {
        assert_eq!(
            bare_allocate(&mut w, "203.0.113.67:4000", 100 + n),
            Some(401)
        );
    }
}
