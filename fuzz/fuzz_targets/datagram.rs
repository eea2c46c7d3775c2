//! Any datagram on a media port, from a known peer's address or a stranger's, against a
//! core with a live room: must never panic.
#![no_main]
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sfu::core::{Grants, ShardCore};
use sfu::{ParticipantId, SfuConfig};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut core = ShardCore::new(
        SfuConfig::default(),
        vec![40000],
        Arc::new(AtomicU64::new(0)),
    );
    let g = Grants {
        publish: true,
        subscribe: true,
        proctor: false,
    };
    core.join(now, ParticipantId(1), "r", g, 0.0).unwrap();
    let from: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    core.handle_datagram(now, 0, from, data);
    core.flush(now);
    core.handle_timeout(now);
    while core.poll_transmit().is_some() {}
});
