//! `fanout` and `udp-baseline`: the media core's in-process benchmarks.
//!
//! `fanout` starts the real SFU driver in-process (shard threads, UDP sockets on
//! loopback, `recvmmsg`/`sendmmsg`) and real str0m peers (ICE, DTLS, SRTP) on their own
//! UDP sockets in a client thread: one publisher sending video and audio to N
//! subscribers. Signaling is the SFU's API called directly, so the figure isolates the
//! media path. It reports the SFU shard threads' CPU time per forwarded packet (read
//! from /proc), the forwarding rate, and loss seen by the subscribers.
//! `udp-baseline` is the kernel floor under it: plain `sendmmsg` fan-out, no WebRTC.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sfu::core::{Grants, TrackRequest};
use sfu::{ParticipantId, Sfu, SfuConfig, SfuEvent, Source};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::CLK_TCK;

pub fn udp_baseline(receivers: usize, packets: usize) -> anyhow::Result<serde_json::Value> {
    use std::os::fd::AsRawFd;
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    tx.set_nonblocking(true)?;
    let mut rx = Vec::new();
    for _ in 0..receivers {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.set_nonblocking(true)?;
        rx.push(s);
    }
    let dests: Vec<SocketAddr> = rx
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?;
    // Receivers drain on their own thread so only the send side is charged to this one
    // (on loopback the kernel still does delivery work inside the sender's syscall, as it
    // does for the SFU's shard threads).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 2048];
        let mut n = 0usize;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let mut idle = true;
            for r in &rx {
                while r.recv_from(&mut buf).is_ok() {
                    n += 1;
                    idle = false;
                }
            }
            if idle {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        n
    });
    let payload = vec![0x42u8; 1200];
    let mut batch = sfu::driver::batch::SendBatch::default();
    let mut sent = 0usize;
    let cpu0 = thread_self_cpu();
    let t0 = Instant::now();
    while sent < packets {
        let items: Vec<(SocketAddr, &[u8])> =
            dests.iter().map(|d| (*d, payload.as_slice())).collect();
        let (n, _) = batch.send(tx.as_raw_fd(), &items);
        sent += n;
        // Pace to ~200k/s so receive buffers do not overflow.
        std::thread::sleep(Duration::from_micros(200));
    }
    let cpu = thread_self_cpu() - cpu0;
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let received = drain
        .join()
        .map_err(|_| anyhow::anyhow!("drain thread panicked"))?;
    Ok(serde_json::json!({
        "scenario": "udp-baseline",
        "receivers": receivers,
        "sent": sent,
        "received": received,
        "sender_cpu_seconds": cpu,
        "cpu_us_per_datagram": cpu * 1e6 / sent as f64,
        "wall_seconds": t0.elapsed().as_secs_f64(),
    }))
}

fn thread_self_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map(|x| x.1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ut: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0);
    let st: u64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
    (ut + st) as f64 / CLK_TCK
}

struct Peer {
    id: ParticipantId,
    rtc: Rtc,
    sock: UdpSocket,
    addr: SocketAddr,
    connected: bool,
    received: u64,
    per_mid: HashMap<Mid, (u64, u64)>, // (first seq, highest seq)
}

impl Peer {
    fn new(id: ParticipantId, now: Instant) -> anyhow::Result<Peer> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_nonblocking(true)?;
        let addr = sock.local_addr()?;
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").context("candidate")?);
        Ok(Peer {
            id,
            rtc,
            sock,
            addr,
            connected: false,
            received: 0,
            per_mid: HashMap::new(),
        })
    }

    /// Drain output: send transmits, record events.
    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(Output::Transmit(t)) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => self.connected = true,
                Ok(Output::Event(Event::RtpPacket(p))) => {
                    self.received += 1;
                    let mid = self
                        .rtc
                        .direct_api()
                        .stream_rx(&p.header.ssrc)
                        .map(|s| s.mid());
                    if let Some(mid) = mid {
                        let e = self.per_mid.entry(mid).or_insert((*p.seq_no, *p.seq_no));
                        e.1 = e.1.max(*p.seq_no);
                    }
                }
                Ok(Output::Event(_)) => {}
            }
        }
    }

    fn pump(&mut self, buf: &mut [u8]) {
        let now = Instant::now();
        while let Ok((n, from)) = self.sock.recv_from(buf) {
            if let Ok(r) = Receive::new(Protocol::Udp, from, self.addr, &buf[..n]) {
                let _ = self.rtc.handle_input(Input::Receive(now, r));
            }
            self.drain();
        }
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        self.drain();
    }
}

fn thread_cpu_secs(prefix: &str) -> f64 {
    let mut total = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let p = e.path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            if !comm.trim().starts_with(prefix) {
                continue;
            }
            if let Ok(stat) = std::fs::read_to_string(p.join("stat")) {
                // Fields after the ")" of comm: state is 3rd; utime 14th, stime 15th.
                if let Some(rest) = stat.rsplit_once(')').map(|x| x.1) {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    let ut: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0);
                    let st: u64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
                    total += ut + st;
                }
            }
        }
    }
    total as f64 / CLK_TCK
}

pub fn fanout(
    subscribers: usize,
    seconds: u64,
    video_pps: u32,
    shards: usize,
    port: u16,
    bwe: bool,
) -> anyhow::Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cfg = SfuConfig {
        port_min: port,
        port_max: port + 9,
        shards,
        bandwidth_estimation: bwe,
        ..SfuConfig::default()
    };
    let (sfu, mut events) = Sfu::start(cfg)?;
    let now = Instant::now();
    let grants = Grants {
        publish: true,
        subscribe: true,
        proctor: false,
    };
    let mut subs = Vec::new();
    for i in 0..subscribers {
        let p = Peer::new(ParticipantId(i as u64 + 2), now)?;
        sfu.join(p.id, "bench", grants, 0.0)?;
        subs.push(p);
    }
    let mut publisher = Peer::new(ParticipantId(1), now)?;
    sfu.join(
        publisher.id,
        "bench",
        Grants {
            publish: true,
            subscribe: false,
            proctor: false,
        },
        0.0,
    )?;
    let mut api = publisher.rtc.sdp_api();
    let vmid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let amid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().context("offer")?;
    let answer = rt.block_on(sfu.publish(
        publisher.id,
        offer.to_sdp_string(),
        vec![
            TrackRequest {
                mid: vmid.to_string(),
                source: Source::Camera,
                muted: false,
            },
            TrackRequest {
                mid: amid.to_string(),
                source: Source::Microphone,
                muted: false,
            },
        ],
    ))?;
    publisher
        .rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer.sdp)?)?;
    let mut buf = vec![0u8; 2048];
    let index: HashMap<ParticipantId, usize> =
        subs.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
    // Connect everyone (answering subscriber offers as they come).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        while let Ok(ev) = events.try_recv() {
            if let SfuEvent::SubscriberOffer {
                participant, sdp, ..
            } = ev
            {
                let p = &mut subs[index[&participant]];
                let a = p
                    .rtc
                    .sdp_api()
                    .accept_offer(SdpOffer::from_sdp_string(&sdp)?)?;
                rt.block_on(sfu.answer(participant, a.to_sdp_string()))?;
            }
        }
        publisher.pump(&mut buf);
        for s in &mut subs {
            s.pump(&mut buf);
        }
        if publisher.connected && subs.iter().all(|s| s.connected) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "peers did not connect ({} of {})",
                subs.iter().filter(|s| s.connected).count(),
                subscribers
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let params = publisher.rtc.codec_config().params().to_vec();
    let vpt = params
        .iter()
        .find(|p| p.spec().codec == Codec::Vp8)
        .context("vp8")?
        .pt();
    let apt = params
        .iter()
        .find(|p| p.spec().codec == Codec::Opus)
        .context("opus")?
        .pt();
    // Warm up one second, then measure.
    let mut seq_v = 1u64;
    let mut seq_a = 1u64;
    let start = Instant::now();
    let mut next_v = start;
    let mut next_a = start;
    let v_gap = Duration::from_secs_f64(1.0 / f64::from(video_pps.max(1)));
    let warm = start + Duration::from_secs(1);
    let end = warm + Duration::from_secs(seconds);
    let mut measured: Option<(f64, u64, Instant, u64)> = None;
    let mut sent = 0u64;
    while Instant::now() < end + Duration::from_millis(300) {
        let t = Instant::now();
        if measured.is_none() && t >= warm {
            measured = Some((
                thread_cpu_secs("sfu-shard"),
                sfu.stats().rtp_forwarded,
                t,
                subs.iter().map(|s| s.received).sum(),
            ));
        }
        if t < end {
            let mut wrote = false;
            while next_v <= t {
                seq_v += 1;
                let mut api = publisher.rtc.direct_api();
                if let Some(tx) = api.stream_tx_by_mid(vmid, None) {
                    tx.write_rtp(
                        RtpWrite::new(
                            vpt,
                            SeqNo::from(seq_v),
                            (seq_v * 450) as u32,
                            t,
                            vec![0x90u8; 1200],
                        )
                        .nackable(true),
                    );
                    sent += 1;
                }
                next_v += v_gap;
                wrote = true;
            }
            while next_a <= t {
                seq_a += 1;
                let mut api = publisher.rtc.direct_api();
                if let Some(tx) = api.stream_tx_by_mid(amid, None) {
                    tx.write_rtp(RtpWrite::new(
                        apt,
                        SeqNo::from(seq_a),
                        (seq_a * 960) as u32,
                        t,
                        vec![0x55u8; 100],
                    ));
                    sent += 1;
                }
                next_a += Duration::from_millis(20);
                wrote = true;
            }
            if wrote {
                let _ = publisher.rtc.handle_input(Input::Timeout(t));
                publisher.drain();
            }
        }
        publisher.pump(&mut buf);
        for s in &mut subs {
            s.pump(&mut buf);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let (cpu0, fwd0, t0, rcv0) = measured.context("no measurement window")?;
    let cpu = thread_cpu_secs("sfu-shard") - cpu0;
    let stats = sfu.stats();
    let fwd = stats.rtp_forwarded - fwd0;
    let wall = t0.elapsed().as_secs_f64();
    let received: u64 = subs.iter().map(|s| s.received).sum::<u64>() - rcv0;
    let expected: u64 = subs
        .iter()
        .map(|s| s.per_mid.values().map(|(a, b)| b - a + 1).sum::<u64>())
        .sum();
    let total_received: u64 = subs.iter().map(|s| s.received).sum();
    let loss = if expected > 0 {
        1.0 - total_received as f64 / expected as f64
    } else {
        1.0
    };
    sfu.shutdown();
    if total_received == 0 {
        bail!("no media reached the subscribers");
    }
    let us_per_pkt = if fwd > 0 {
        cpu * 1e6 / fwd as f64
    } else {
        f64::NAN
    };
    Ok(serde_json::json!({
        "scenario": "fanout",
        "subscribers": subscribers,
        "shards": shards,
        "video_pps_in": video_pps,
        "publisher_packets_sent": sent,
        "forwarded_packets": fwd,
        "forwarded_pps": fwd as f64 / wall,
        "received_packets": received,
        "sfu_cpu_seconds": cpu,
        "sfu_cpu_us_per_forwarded_packet": us_per_pkt,
        "forwarded_pps_per_sfu_core": if cpu > 0.0 { fwd as f64 / cpu } else { f64::NAN },
        "subscriber_loss": loss,
        "wall_seconds": wall,
    }))
}
