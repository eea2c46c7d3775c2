//! The SDP side of a simulated browser: the publisher offer and the answer to it, the
//! subscriber answer to the server's offers, and a network switch (new socket, ICE restart).

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use mio::{Interest, Token};
use str0m::Candidate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::SimulcastLayer;
use str0m::media::{Direction, MediaKind, Rid, Simulcast};

use super::*;

impl Engine {
    /// See [`EngineHandle::rebind`].
    pub(super) fn rebind(
        &mut self,
        pid: u64,
        publisher: bool,
        subscriber: bool,
    ) -> anyhow::Result<Option<String>> {
        let mut offer = None;
        for sub in [false, true] {
            if !(if sub { subscriber } else { publisher }) {
                continue;
            }
            let i = *self
                .by_key
                .get(&(pid, sub))
                .with_context(|| format!("participant {pid} has no such connection"))?;
            let (mut sock, local) = self.bind_socket()?;
            let registry = self.poll.registry();
            let pc = self.pcs[i].as_mut().context("closed")?;
            registry.register(&mut sock, Token(i), Interest::READABLE)?;
            let mut old = std::mem::replace(&mut pc.sock, sock);
            let _ = registry.deregister(&mut old);
            // Closing it is the point: the old address is gone with the old network.
            drop(old);
            let old_candidate = Candidate::host(pc.local, "udp").context("host candidate")?;
            pc.rtc.direct_api().invalidate_candidate(&old_candidate);
            pc.local = local;
            pc.switch = Some(Switch {
                at: Instant::now(),
                candidate: Some(Candidate::host(local, "udp").context("host candidate")?),
                restarted: false,
            });
            if !sub {
                // New credentials, no candidates kept: the new host candidate is added
                // once the answer has restarted the session (`publisher_answer`). An
                // ICE-lite server needs none in the offer, it answers our checks.
                let mut api = pc.rtc.sdp_api();
                api.ice_restart(false);
                let (o, pending) = api.apply().context("no ICE restart offer")?;
                pc.pending = Some(pending);
                offer = Some(o.to_sdp_string());
            }
        }
        Ok(offer)
    }

    pub(super) fn create_publisher(&mut self, pid: u64) -> anyhow::Result<PublishOffer> {
        if self.by_key.contains_key(&(pid, false)) {
            return Err(anyhow!("participant {pid} already publishes"));
        }
        let i = self.new_pc(pid, false)?;
        let simulcast = self.cfg.simulcast.then(|| Simulcast {
            send: ["q", "h", "f"]
                .into_iter()
                .map(SimulcastLayer::new)
                .collect(),
            recv: vec![],
        });
        let pc = self.pcs[i].as_mut().expect("just created");
        let mut api = pc.rtc.sdp_api();
        let video_mid = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            Some("lg".into()),
            Some("camera".into()),
            simulcast,
        );
        let audio_mid = api.add_media(
            MediaKind::Audio,
            Direction::SendOnly,
            Some("lg".into()),
            Some("mic".into()),
            None,
        );
        let (offer, pending) = api.apply().context("no offer")?;
        pc.pending = Some(pending);
        let now = Instant::now();
        // Spread frames of different publishers over the frame interval.
        let jitter = Duration::from_micros(fastrand::u64(0..20_000));
        let layers = if self.cfg.simulcast {
            [("q", 16), ("h", 4), ("f", 1)]
                .into_iter()
                .map(|(r, scale)| Layer {
                    rid: Some(Rid::from(r)),
                    scale,
                    seq: fastrand::u64(1..30_000),
                })
                .collect()
        } else {
            vec![Layer {
                rid: None,
                scale: 1,
                seq: fastrand::u64(1..30_000),
            }]
        };
        pc.publisher = Some(PubState {
            video_mid,
            audio_mid,
            pts: None,
            layers,
            aseq: fastrand::u64(1..30_000),
            frame_no: 0,
            audio_no: 0,
            next_video: now + jitter,
            next_audio: now + jitter,
            last_key: None,
            key_due: true,
        });
        Ok(PublishOffer {
            sdp: offer.to_sdp_string(),
            video_mid: video_mid.to_string(),
            audio_mid: audio_mid.to_string(),
        })
    }

    pub(super) fn publisher_answer(&mut self, pid: u64, sdp: &str) -> anyhow::Result<()> {
        let i = *self
            .by_key
            .get(&(pid, false))
            .context("no publisher connection")?;
        let pc = self.pcs[i].as_mut().context("closed")?;
        let pending = pc.pending.take().context("no offer pending")?;
        if self.cfg.simulcast && !sdp.contains("a=simulcast") {
            return Err(anyhow!(
                "--simulcast: the SFU's answer has no a=simulcast line, it did not accept the layers"
            ));
        }
        let answer = SdpAnswer::from_sdp_string(sdp).context("parse answer")?;
        pc.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .context("accept answer")?;
        let ufrag = ice_ufrag(sdp);
        if ufrag != pc.remote_ufrag
            && let Some(c) = pc.switch.as_mut().and_then(|s| s.candidate.take())
        {
            // New remote credentials: the answer restarted the session without local
            // candidates, the new socket's address is its only one. (An answer with the
            // old credentials restarted nothing; the candidate then stays out of the
            // old session, see the module docs.)
            pc.rtc.add_local_candidate(c);
        }
        pc.remote_ufrag = ufrag;
        let params = pc.rtc.codec_config().params().to_vec();
        let vpt = params.iter().find(|p| p.spec().codec == Codec::Vp8);
        let apt = params.iter().find(|p| p.spec().codec == Codec::Opus);
        if let (Some(v), Some(a), Some(ps)) = (vpt, apt, pc.publisher.as_mut()) {
            ps.pts = Some((v.pt(), a.pt()));
        } else {
            return Err(anyhow!("the answer has no VP8 or no Opus"));
        }
        let now = Instant::now();
        self.sinks.drain(pc, now);
        Ok(())
    }

    pub(super) fn subscriber_offer(&mut self, pid: u64, sdp: &str) -> anyhow::Result<String> {
        let i = match self.by_key.get(&(pid, true)) {
            Some(&i) => i,
            None => self.new_pc(pid, true)?,
        };
        let pc = self.pcs[i].as_mut().context("closed")?;
        let offer = SdpOffer::from_sdp_string(sdp).context("parse offer")?;
        let ufrag = ice_ufrag(sdp);
        if pc.remote_ufrag.is_some()
            && ufrag != pc.remote_ufrag
            && let Some(c) = pc.switch.as_mut().and_then(|s| s.candidate.take())
        {
            // New remote credentials: str0m restarts ICE inside `accept_offer`, keeping
            // the local candidates (the old one is invalidated), so the new one is added
            // just before: it belongs to the restarted session and is in our answer. No
            // poll happens in between, so the old session never uses it.
            pc.rtc.add_local_candidate(c);
        }
        let answer = pc
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .context("accept offer")?;
        pc.remote_ufrag = ufrag;
        let now = Instant::now();
        self.sinks.drain(pc, now);
        Ok(answer.to_sdp_string())
    }
}

/// The first `a=ice-ufrag:` of an SDP.
pub(super) fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
}
