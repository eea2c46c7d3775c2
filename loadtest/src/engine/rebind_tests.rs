//! A network switch against a bare str0m ICE-lite peer (what the SFU is to our peers),
//! without the SFU: the engine's side of an ICE restart on its own. The publisher's
//! restart offer, answered with new credentials, brings its media back from the new
//! socket; the subscriber, handed an offer with new credentials, answers and reconnects.
//! Without the restart neither could: the old socket is closed and its candidate gone.

use std::net::UdpSocket as StdUdpSocket;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind};
use str0m::{Event, Output};

use super::*;

/// The far side: one ICE-lite `Rtc` on its own loopback socket, pumped by the test.
struct Far {
    rtc: Rtc,
    sock: StdUdpSocket,
    local: SocketAddr,
    rtp_packets: u64,
    /// Sources of datagrams seen since the last `take_sources`.
    sources: HashSet<SocketAddr>,
}

impl Far {
    fn new() -> Far {
        let sock = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap();
        let local = sock.local_addr().unwrap();
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_crypto_provider(sfu::dtls::crypto_provider())
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        Far {
            rtc,
            sock,
            local,
            rtp_packets: 0,
            sources: HashSet::new(),
        }
    }

    /// Feed everything that arrived (until the socket is quiet for its 2 ms read timeout)
    /// and the timeout, send what str0m wants sent. Reading the socket dry matters: one
    /// datagram per pump falls behind the engine's media on a loaded machine, and a
    /// backlog from before a rebind would then count as arriving after it.
    fn pump(&mut self) {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            self.sources.insert(from);
            if let Ok(r) = Receive::new(Protocol::Udp, from, self.local, &buf[..n]) {
                let _ = self.rtc.handle_input(Input::Receive(Instant::now(), r));
            }
            self.send_output();
        }
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        self.send_output();
    }

    /// Poll str0m until its timeout (its contract after every input).
    fn send_output(&mut self) {
        while let Ok(o) = self.rtc.poll_output() {
            match o {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Output::Event(Event::RtpPacket(_)) => self.rtp_packets += 1,
                Output::Event(_) => {}
            }
        }
    }
}

/// Pump both far peers until `done` holds, at most 10 s.
fn pump_until(fars: &mut [&mut Far], what: &str, mut done: impl FnMut(&[&mut Far]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(fars) {
        assert!(Instant::now() < deadline, "within 10 s: {what}");
        for f in fars.iter_mut() {
            f.pump();
        }
    }
}

#[test]
fn rebound_peers_come_back_through_an_ice_restart() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let live = Arc::new(Live::default());
    let cfg = MediaCfg {
        video_kbps: 300,
        fps: 30,
        keyframe_interval: Duration::from_secs(1),
        audio_bytes: 80,
        simulcast: false,
    };
    let (eng, thread) = spawn(0, cfg, "127.0.0.1".parse().unwrap(), live).unwrap();
    let mut publ = Far::new();
    let mut subs = Far::new();

    // Publisher: we offer, the far side answers.
    let offer = rt.block_on(eng.publish(1)).unwrap();
    let offer = SdpOffer::from_sdp_string(&offer.sdp).unwrap();
    let answer = publ.rtc.sdp_api().accept_offer(offer).unwrap();
    rt.block_on(eng.publish_answer(1, answer.to_sdp_string()))
        .unwrap();
    // Subscriber: the far side offers a video m-line, we answer.
    let mut api = subs.rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let answer = rt
        .block_on(eng.subscribe_offer(1, offer.to_sdp_string()))
        .unwrap();
    subs.rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    pump_until(&mut [&mut publ, &mut subs], "both connected, media", |f| {
        f[0].rtc.is_connected() && f[1].rtc.is_connected() && f[0].rtp_packets > 30
    });
    let first_source = *publ.sources.iter().next().unwrap();

    // The switch: new sockets, old ones closed.
    let restart = rt.block_on(eng.rebind(1, true, true)).unwrap();
    let restart = SdpOffer::from_sdp_string(&restart.expect("a publisher restart offer")).unwrap();
    // What is queued now was sent before the rebind: read it before counting.
    publ.pump();
    // Half a second on the dead path: nothing gets through.
    let before = publ.rtp_packets;
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        publ.pump();
        subs.pump();
    }
    assert!(
        publ.rtp_packets - before < 10,
        "media stopped with the old socket ({} packets after the rebind)",
        publ.rtp_packets - before
    );
    let creds_before = publ.rtc.direct_api().local_ice_credentials();
    let answer = publ.rtc.sdp_api().accept_offer(restart).unwrap();
    assert_ne!(
        publ.rtc.direct_api().local_ice_credentials(),
        creds_before,
        "the far side saw new credentials: an ICE restart"
    );
    rt.block_on(eng.publish_answer(1, answer.to_sdp_string()))
        .unwrap();
    let mut api = subs.rtc.sdp_api();
    api.ice_restart(true);
    let (offer, pending) = api.apply().unwrap();
    let answer = rt
        .block_on(eng.subscribe_offer(1, offer.to_sdp_string()))
        .unwrap();
    assert!(
        answer.contains("a=candidate"),
        "the restart answer carries the new socket's candidate"
    );
    subs.rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    publ.sources.clear();
    let resumed_from = publ.rtp_packets;
    pump_until(
        &mut [&mut publ, &mut subs],
        "media back after the restart",
        |f| f[0].rtp_packets > resumed_from + 30 && f[1].rtc.is_connected(),
    );
    assert!(
        !publ.sources.contains(&first_source),
        "media comes from the new socket only"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        assert!(Instant::now() < deadline, "within 10 s: ICE back on both");
        let r = rt.block_on(eng.report()).unwrap();
        let p = r.parts[&1].clone();
        if p.pub_ice_back_ms.is_some() && p.sub_ice_back_ms.is_some() {
            break p;
        }
        subs.pump();
        publ.pump();
    };
    assert!(report.pub_ice_back_ms.unwrap() >= 500.0);
    eng.stop();
    thread.join().unwrap();
}
