//! Arbitrary bytes into the STUN/ChannelData parsers and into a TURN server (as a UDP
//! and a TCP client, and as a peer datagram): nothing may panic.
#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use turn::codec::{self, ChannelData, Message};
use turn::{Client, Io, Proto, ServerConfig, TurnServer};

struct Sink;

impl Io for Sink {
    fn bind_relay(&mut self) -> Option<SocketAddr> {
        Some("192.0.2.1:50000".parse().unwrap())
    }
    fn release_relay(&mut self, _: SocketAddr) {}
    fn to_client(&mut self, _: &Client, data: &[u8]) {
        // What we send must parse back.
        if codec::kind(data) == codec::Kind::Stun {
            assert!(Message::parse(data).is_ok());
        }
    }
    fn to_peer(&mut self, _: SocketAddr, _: SocketAddr, _: &[u8]) {}
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let _ = m.attrs().count();
        let _ = m.check_integrity(b"key");
        let _ = m.xor_addrs(codec::attr::XOR_PEER_ADDRESS).count();
        let _ = codec::error_code(&m);
    }
    let _ = ChannelData::parse(data);
    let _ = codec::stream_frame_len(data);
    let now = Instant::now();
    let cfg = ServerConfig {
        users: [("u".to_string(), "p".to_string())].into(),
        ..ServerConfig::default()
    };
    let mut srv = TurnServer::new(cfg, now, 1_800_000_000);
    let addr: SocketAddr = "203.0.113.1:1000".parse().unwrap();
    for proto in [Proto::Udp, Proto::Tcp] {
        let c = Client {
            proto,
            conn: 1,
            addr,
        };
        srv.handle_client(now, c, data, &mut Sink);
    }
    srv.handle_peer(
        now,
        "192.0.2.1:50000".parse().unwrap(),
        addr,
        data,
        &mut Sink,
    );
    srv.handle_timeout(now, &mut Sink);
});
