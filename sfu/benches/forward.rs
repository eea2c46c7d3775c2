//! Hot-path benchmark: one publisher's RTP packet through the core — route (4-tuple
//! lookup), SRTP decrypt, rewrite, SRTP encrypt and queue for every subscriber.
//! Reported per *forwarded* packet: `ns/iter` divided by the subscriber count is printed
//! by criterion as throughput ("elements").
//!
//! Packets are produced by a real str0m publisher outside the timed section (SRTP replay
//! protection would reject re-sent packets), then fed to the core inside it.
#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Sim;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sfu::core::Grants;
use sfu::{MediaKind, Source};
use str0m::format::Codec;
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Input, Output};

const BOTH: Grants = Grants {
    publish: true,
    subscribe: true,
    proctor: false,
};

struct Setup {
    sim: Sim,
    publisher: usize,
    from: SocketAddr,
    port_idx: usize,
    seq: u64,
}

fn setup(subscribers: usize) -> Setup {
    let mut sim = Sim::new(42);
    let publisher = sim.join(Grants {
        publish: true,
        subscribe: false,
        proctor: false,
    });
    for _ in 0..subscribers {
        sim.join(BOTH);
    }
    sim.publish(publisher, &[(MediaKind::Video, Source::Camera)]);
    sim.connect_all();
    sim.stream(publisher, Some(0), None, Duration::from_millis(200));
    sim.run_for(Duration::from_millis(100));
    let a = sim.clients[publisher].addr;
    let from = SocketAddr::new(a.ip(), a.port() + 1);
    Setup {
        sim,
        publisher,
        from,
        port_idx: 0,
        seq: 0,
    }
}

/// Make `n` SRTP datagrams from the publisher (untimed).
fn packets(s: &mut Setup, n: usize) -> Vec<(usize, Vec<u8>)> {
    let now = s.sim.now;
    let c = &mut s.sim.clients[s.publisher];
    let (mid, _, _) = c.pub_mids[0];
    let rtc = c.pub_rtc.as_mut().expect("publisher");
    let pt = rtc
        .codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == Codec::Vp8)
        .expect("vp8")
        .pt();
    // Continue the sequence the warm-up stream used (a jump past 65535 would change the
    // SRTP rollover counter and make every packet undecryptable).
    if s.seq == 0 {
        s.seq = c.seq[&(mid, None)];
    }
    let mut out = Vec::with_capacity(n);
    let mut port_idx = s.port_idx;
    while out.len() < n {
        s.seq += 1;
        let mut api = rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).expect("tx stream");
        tx.write_rtp(
            RtpWrite::new(
                pt,
                SeqNo::from(s.seq),
                (s.seq * 3000) as u32,
                now,
                vec![0x90u8; 1100],
            )
            .nackable(true),
        );
        rtc.handle_input(Input::Timeout(now)).expect("timeout");
        while let Ok(o) = rtc.poll_output() {
            match o {
                Output::Transmit(t) => {
                    port_idx = common::PORTS
                        .iter()
                        .position(|p| *p == t.destination.port())
                        .unwrap_or(0);
                    out.push((port_idx, t.contents.into()));
                }
                Output::Timeout(_) => break,
                Output::Event(_) => {}
            }
        }
    }
    s.port_idx = port_idx;
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward");
    for subs in [1usize, 10, 50] {
        let mut s = setup(subs);
        g.throughput(Throughput::Elements(subs as u64));
        g.bench_function(format!("1_publisher_to_{subs}_subscribers"), |b| {
            b.iter_custom(|iters| {
                let pkts = packets(&mut s, iters as usize);
                let from = s.from;
                let mut now = s.sim.now;
                let before = s.sim.cores[0].stats().rtp_forwarded;
                let t0 = Instant::now();
                for (port_idx, p) in &pkts {
                    now += Duration::from_micros(20);
                    s.sim.cores[0].handle_datagram(now, *port_idx, from, p);
                    s.sim.cores[0].flush(now);
                    while let Some(t) = s.sim.cores[0].poll_transmit() {
                        std::hint::black_box(t);
                    }
                }
                let el = t0.elapsed();
                let forwarded = s.sim.cores[0].stats().rtp_forwarded - before;
                assert!(
                    forwarded >= iters * subs as u64 * 9 / 10,
                    "packets were forwarded ({forwarded})"
                );
                s.sim.now = now;
                while s.sim.cores[0].poll_event().is_some() {}
                // Outside the timed part: let the peers' ICE keepalives and RTCP catch up
                // with the virtual clock, or the SFU would (rightly) call their paths
                // dead after 15 s of virtual time without a check and stop forwarding.
                s.sim.run_for(Duration::from_millis(20));
                el
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
