//! Join cost in the media core: `ShardCore::join` for one participant (publisher and
//! subscriber transports: ICE agent, DTLS instance, codec config) and `leave`, on a core
//! that already holds a room of 50. This is the shard's share of a join ack; under a join
//! storm the shard threads serialise it, so it bounds joins per second per core.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use sfu::core::{Grants, ShardCore};
use sfu::{ParticipantId, SfuConfig};

const GRANTS: Grants = Grants {
    publish: true,
    subscribe: true,
    proctor: false,
};

fn join_leave(c: &mut Criterion) {
    let cfg = SfuConfig {
        advertise_ip: "127.0.0.1".parse().expect("ip"),
        ..SfuConfig::default()
    };
    let mut core = ShardCore::new(cfg, vec![40000], Arc::new(AtomicU64::new(0)));
    let now = Instant::now();
    for i in 1..=50 {
        core.join(now, ParticipantId(i), "bench", GRANTS, 0.0)
            .expect("join");
    }
    let mut next = 1000u64;
    c.bench_function("join+leave (room of 50)", |b| {
        b.iter(|| {
            next += 1;
            core.join(now, ParticipantId(next), "bench", GRANTS, 0.0)
                .expect("join");
            core.leave(ParticipantId(next)).expect("leave");
        })
    });
}

criterion_group!(benches, join_leave);
criterion_main!(benches);
