//! The data path's driving half: datagrams in (routed, handed to the transport's str0m
//! instance), each transport's output drained (`drive`: transmits, events, RTP to
//! forward), batching (`flush`), timers and housekeeping (keyframe coalescing, consent
//! and connect timeouts).

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::media::Mid;
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output};
use tracing::{debug, error, info, trace, warn};

use super::bandwidth::ALLOCATION_PERIOD;
use super::route::{MAX_ADDRS_PER_TRANSPORT, RouteDatagramTo, Unroutable};
use super::speakers::SPEAKER_PERIOD;
use super::*;
use crate::ids::{TrackId, TransportId};

/// Shortest wait for str0m's delay-based estimator timer.
///
/// Why: str0m 0.25's delay controller, when no transport-cc report came for a while (a
/// subscriber whose media paused), re-arms itself `min(smoothed RTT, 25 ms)` ahead. With a
/// near-zero RTT (loopback, the simulated network) that is "now" again: the transport is
/// due at once, forever, and a shard spins (the deterministic harness stopped its clock).
/// The timer only re-checks whether feedback arrived; serving it a millisecond late
/// changes no estimate.
const BWE_TIMER_FLOOR: Duration = Duration::from_millis(1);

fn bwe_timer_floor(at: Instant, reason: str0m::Reason, now: Instant) -> Instant {
    if reason == str0m::Reason::BweDelayControl {
        at.max(now + BWE_TIMER_FLOOR)
    } else {
        at
    }
}

/// One stats round of a subscriber transport, summed over its m-lines for the
/// loss-based estimate: loss weighted by the packets each m-line sent, less its producer's
/// upstream loss.
#[derive(Debug, Default)]
struct LossReport {
    seen: bool,
    sent_bytes: u64,
    loss_weighted: f64,
    loss_packets: u64,
    /// The round trip of the last receiver report of the m-line that sent the most bytes
    /// (video: the one whose queue matters; audio sends more packets, fewer bytes, and
    /// browsers report on it only every few seconds).
    rtt: Option<Duration>,
    rtt_bytes: u64,
}

impl LossReport {
    fn observe(
        &mut self,
        loss: Option<f32>,
        upstream: f32,
        sent_bytes: u64,
        packets: u64,
        rtt: Option<Duration>,
    ) {
        self.seen = true;
        if rtt.is_some() && (self.rtt.is_none() || sent_bytes > self.rtt_bytes) {
            self.rtt = rtt;
            self.rtt_bytes = sent_bytes;
        }
        self.sent_bytes += sent_bytes;
        if let Some(l) = loss {
            let weight = packets.max(1);
            self.loss_weighted += f64::from((l - upstream).max(0.0)) * weight as f64;
            self.loss_packets += weight;
        }
    }

    /// Mean loss over the m-lines that had a receiver report (None: none had).
    fn loss(&self) -> Option<f32> {
        (self.loss_packets > 0).then(|| (self.loss_weighted / self.loss_packets as f64) as f32)
    }
}

impl ShardCore {
    /// One datagram arrived on local port index `port_idx` from `remote`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        port_idx: usize,
        remote: SocketAddr,
        data: &[u8],
    ) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        let Some(&port) = self.ports.get(port_idx) else {
            return;
        };
        let (tid, new_addr) = match self.index.route(port, remote, data) {
            RouteDatagramTo::Transport(t) => (t, false),
            RouteDatagramTo::NewAddress(t) => (t, true),
            RouteDatagramTo::Nowhere(why) => {
                self.stats.unroutable += 1;
                if why != Unroutable::UnknownAddress {
                    debug!(?why, "unroutable datagram");
                }
                return;
            }
        };
        let Some(t) = self.transports.get_mut(&tid) else {
            return;
        };
        if t.port_idx != port_idx {
            // A peer must use the port its candidate named.
            self.stats.unroutable += 1;
            return;
        }
        let destination = SocketAddr::new(self.advertise, port);
        let recv = match Receive::new(Protocol::Udp, remote, destination, data) {
            Ok(r) => r,
            Err(_) => {
                self.stats.rejected += 1;
                return;
            }
        };
        // str0m promises never to panic on input, and says a panic is a bug; should one
        // happen anyway, only this participant is lost, not the shard with all its rooms.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.rtc.handle_input(Input::Receive(now, recv))
        }));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.stats.rejected += 1;
                debug!(transport = tid.0, "input rejected: {e}");
                return;
            }
            Err(_) => {
                error!(
                    transport = tid.0,
                    "str0m panicked on input; dropping the participant"
                );
                let p = t.participant;
                self.remove_participant(p, RemovalReason::TransportFailed);
                return;
            }
        }
        if new_addr && t.addrs.len() < MAX_ADDRS_PER_TRANSPORT {
            t.addrs.push((port, remote));
            self.index.learn(port, remote, tid);
            self.drive(tid, now);
            return;
        }
        let queued = self.transmits.len();
        self.drive(tid, now);
        if new_addr {
            // Table full: a client that keeps changing networks (Wi-Fi, LTE, Wi-Fi...) still
            // gets its new address routed, replacing the oldest one, but only once str0m
            // answered the check (valid MESSAGE-INTEGRITY), so a stranger who guessed the
            // ufrag cannot push the peer's working address out.
            let answered = self
                .transmits
                .iter()
                .skip(queued)
                .any(|x| x.destination == remote);
            if answered && let Some(t) = self.transports.get_mut(&tid) {
                let (p, a) = t.addrs.remove(0);
                self.index.forget(p, a);
                t.addrs.push((port, remote));
                self.index.learn(port, remote, tid);
            }
        }
    }

    /// Let every transport that was written to since the last flush emit its packets.
    pub fn flush(&mut self, now: Instant) {
        while !self.dirty.is_empty() {
            let dirty = std::mem::take(&mut self.dirty);
            for tid in dirty {
                if let Some(t) = self.transports.get_mut(&tid) {
                    t.dirty = false;
                    if let Err(e) = t.rtc.handle_input(Input::Timeout(now)) {
                        debug!(transport = tid.0, "timeout input failed: {e}");
                    }
                    self.drive(tid, now);
                }
            }
        }
    }

    /// Time passes: run due transport timers and housekeeping.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, tid))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(t) = self.transports.get_mut(&tid) else {
                continue;
            };
            if t.next_timeout != Some(at) {
                continue; // stale heap entry
            }
            t.next_timeout = None;
            if let Err(e) = t.rtc.handle_input(Input::Timeout(now)) {
                debug!(transport = tid.0, "timeout input failed: {e}");
            }
            self.drive(tid, now);
        }
        if self.next_tick.is_none_or(|t| t <= now) {
            self.next_tick = Some(now + TICK);
            self.housekeeping(now);
        }
        self.flush(now);
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = self.timers.peek().map(|Reverse((at, _))| *at);
        match (t, self.next_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front();
        if t.is_some() {
            self.stats.datagrams_out += 1;
        }
        t
    }

    /// Next event for signaling.
    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    /// After an SDP exchange: the browser starts ICE checks the moment it has our SDP, often
    /// before we know its credentials; str0m queues those requests and answers one per
    /// timeout. Answer them all now instead of one per timer tick, so ICE (and DTLS, which
    /// waits for nomination) is not delayed by hundreds of milliseconds.
    pub(super) fn kick(&mut self, tid: TransportId, now: Instant) {
        for _ in 0..MAX_ADDRS_PER_TRANSPORT * 2 {
            let Some(t) = self.transports.get_mut(&tid) else {
                return;
            };
            if t.rtc.handle_input(Input::Timeout(now)).is_err() {
                break;
            }
            self.drive(tid, now);
        }
    }

    pub(super) fn mark_dirty(&mut self, tid: TransportId) {
        if let Some(t) = self.transports.get_mut(&tid)
            && !t.dirty
        {
            t.dirty = true;
            self.dirty.push(tid);
        }
    }

    /// Drain one transport's output: transmits, events, next timeout. Forwards the RTP
    /// packets it produced.
    pub(super) fn drive(&mut self, tid: TransportId, now: Instant) {
        let mut forward = std::mem::take(&mut self.forward_buf);
        let mut keyframe_requests: Vec<Mid> = Vec::new();
        let mut failed = false;
        let mut reconnected = false;
        let mut first_estimate = false;
        let mut congested = false;
        let loss_based = self.cfg.loss_adaptation && !self.cfg.bandwidth_estimation;
        let mut report = LossReport::default();
        {
            let Some(t) = self.transports.get_mut(&tid) else {
                self.forward_buf = forward;
                return;
            };
            loop {
                let out =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.rtc.poll_output()));
                let Ok(out) = out else {
                    error!(
                        transport = tid.0,
                        "str0m panicked in poll_output; dropping the participant"
                    );
                    failed = true;
                    break;
                };
                match out {
                    Ok(Output::Timeout(at)) => {
                        let at = bwe_timer_floor(at, t.rtc.last_timeout_reason(), now);
                        if t.next_timeout != Some(at) {
                            t.next_timeout = Some(at);
                            self.timers.push(Reverse((at, tid)));
                        }
                        break;
                    }
                    Ok(Output::Transmit(tx)) => {
                        let data: Vec<u8> = tx.contents.into();
                        // Test-only impairment: drop a share of SRTP towards this peer.
                        if t.impair_loss > 0.0
                            && data.first().is_some_and(|b| (128..192).contains(b))
                            && t.rng.f32() < t.impair_loss
                        {
                            self.stats.impaired_drops += 1;
                            continue;
                        }
                        self.stats.bytes_out += data.len() as u64;
                        self.transmits.push_back(Transmit {
                            port_idx: t.port_idx,
                            destination: tx.destination,
                            data,
                        });
                    }
                    Ok(Output::Event(ev)) => match ev {
                        Event::RtpPacket(pkt) => forward.push(pkt),
                        Event::KeyframeRequest(req) => keyframe_requests.push(req.mid),
                        Event::IceConnectionStateChange(s) => {
                            debug!(transport = tid.0, ?s, "ice state");
                            match s {
                                IceConnectionState::Disconnected => {
                                    t.disconnected_since.get_or_insert(now);
                                    t.ice_interrupted = true;
                                }
                                // An ICE restart (ours or the client's) starts over in
                                // Checking: the old path is suspect until a pair is
                                // nominated again.
                                IceConnectionState::Checking if t.connected => {
                                    t.ice_interrupted = true;
                                }
                                IceConnectionState::Connected | IceConnectionState::Completed => {
                                    t.disconnected_since = None;
                                    if std::mem::take(&mut t.ice_interrupted) {
                                        reconnected = true;
                                        t.loss_estimate.path_restored(now);
                                    }
                                }
                                _ => {}
                            }
                        }
                        Event::Connected => {
                            t.connected = true;
                            info!(transport = tid.0, participant = %t.participant, "media connected");
                        }
                        Event::Closed => {
                            warn!(transport = tid.0, participant = %t.participant, "transport closed by its peer (DTLS close_notify)");
                            failed = true;
                        }
                        Event::MediaEgressStats(st) => {
                            let seen = t.egress.entry(st.mid).or_default();
                            self.stats.nacks_received += st.nacks.saturating_sub(seen.nacks);
                            let sent = st.bytes.saturating_sub(seen.bytes);
                            let packets = st.packets.saturating_sub(seen.packets);
                            *seen = EgressSeen {
                                nacks: st.nacks,
                                bytes: st.bytes,
                                packets: st.packets,
                            };
                            if let Some(l) = st.loss {
                                t.loss = Some(l);
                            }
                            if loss_based
                                && let TransportKind::Subscriber {
                                    consumers, by_mid, ..
                                } = &t.kind
                            {
                                let upstream = by_mid
                                    .get(&st.mid)
                                    .and_then(|k| consumers.get(k))
                                    .and_then(|c| c.producer)
                                    .and_then(|p| self.producers.get(&p))
                                    .map_or(0.0, |p| p.upstream_loss.loss);
                                report.observe(st.loss, upstream, sent, packets, st.rtt);
                            }
                        }
                        Event::MediaIngressStats(st) => {
                            if let TransportKind::Publisher { by_mid } = &t.kind
                                && let Some(l) = st.loss
                                && let Some(p) =
                                    by_mid.get(&st.mid).and_then(|p| self.producers.get_mut(p))
                            {
                                p.upstream_loss.observe(st.timestamp, l);
                            }
                        }
                        // Estimates feed the allocator only when it is on (`--bwe`): a
                        // browser's REMB arrives without str0m's estimator too, and taken
                        // as an estimate it paused video nobody asked to adapt.
                        Event::EgressBitrateEstimate(kind) if self.cfg.bandwidth_estimation => {
                            let estimate = match kind {
                                str0m::bwe::BweKind::Twcc { estimate, .. } => Some(estimate),
                                // A browser without transport-cc: its REMB (per m-line,
                                // the receiver's view of the whole session) stands in.
                                str0m::bwe::BweKind::Remb { estimate, .. } => Some(estimate),
                                _ => None,
                            };
                            if let Some(e) = estimate {
                                // The first one (str0m's start value, at connection):
                                // allocate now, before the first layers overshoot it.
                                first_estimate |= t.estimate.is_none();
                                t.estimate = Some(e.as_u64());
                            }
                        }
                        _ => {}
                    },
                    Err(e) => {
                        warn!(transport = tid.0, "transport failed: {e}");
                        failed = true;
                        break;
                    }
                }
            }
            // A stats round (once a second): the loss-based estimate takes its report
            // (not while the path is down: that loss is an outage).
            if report.seen && !t.ice_interrupted && t.disconnected_since.is_none() {
                let loss = report.loss();
                congested = t.loss_estimate.on_report(
                    now,
                    loss,
                    report.loss_packets,
                    report.sent_bytes,
                    report.rtt,
                ) == loss_estimate::Change::Decreased;
                t.estimate = t.loss_estimate.estimate();
                trace!(
                    transport = tid.0,
                    loss = ?loss,
                    packets = report.loss_packets,
                    sent_bytes = report.sent_bytes,
                    rtt_ms = ?report.rtt.map(|r| r.as_millis()),
                    estimate_kbps = ?t.estimate.map(|e| e / 1000),
                    "loss report"
                );
                if congested {
                    debug!(
                        transport = tid.0,
                        participant = %t.participant,
                        loss = ?loss,
                        estimate_kbps = ?t.estimate.map(|e| e / 1000),
                        "loss-based estimate down"
                    );
                }
            }
        }
        if !forward.is_empty() {
            self.stats.rtp_in += forward.len() as u64;
            for pkt in forward.drain(..) {
                self.forward(tid, pkt, now);
            }
        }
        self.forward_buf = forward;
        for mid in keyframe_requests {
            self.on_keyframe_request(tid, mid, now);
        }
        if reconnected {
            self.after_reconnect(tid, now);
        }
        if first_estimate || congested {
            self.allocate(tid, now);
        }
        if failed && let Some(p) = self.transports.get(&tid).map(|t| t.participant) {
            self.remove_participant(p, RemovalReason::TransportFailed);
        }
    }

    /// A transport is back after its path broke (ICE disconnected, or an ICE restart):
    /// what was lost meanwhile cannot be repaired from caches (the receiver asks for
    /// packets the SFU never got, or sent into the void), so ask for key frames now
    /// rather than waiting for the browser's own request seconds later. A subscriber:
    /// every video it receives; a publisher: its own tracks (its subscribers missed them).
    fn after_reconnect(&mut self, tid: TransportId, now: Instant) {
        let Some(t) = self.transports.get(&tid) else {
            return;
        };
        info!(transport = tid.0, participant = %t.participant, "media path back: asking for key frames");
        let Some(t) = self.transports.get_mut(&tid) else {
            return;
        };
        match &mut t.kind {
            TransportKind::Subscriber { consumers, .. } => {
                // Nothing was forwarded while the path was down (see `forward`): continue
                // each stream right after its last packet, so the browser sees no gap to
                // NACK, and switch simulcast layers at the next key frame.
                for c in consumers.values_mut() {
                    c.rewriter.switch_source();
                    c.sel.current = None;
                    c.svc.current = None;
                }
                let mids: Vec<Mid> = consumers
                    .values()
                    .filter(|c| c.active && c.producer.is_some() && c.kind == MediaKind::Video)
                    .map(|c| c.mid)
                    .collect();
                for mid in mids {
                    self.on_keyframe_request(tid, mid, now);
                }
            }
            TransportKind::Publisher { by_mid } => {
                let tracks: Vec<TrackId> = by_mid.values().copied().collect();
                for track in tracks {
                    self.request_keyframe(track, now);
                }
            }
        }
    }

    pub(super) fn housekeeping(&mut self, now: Instant) {
        self.compact();
        // Coalesced keyframe requests whose throttle window has passed.
        let pending: Vec<TrackId> = self
            .producers
            .values()
            .filter(|p| p.keyframe_pending)
            .map(|p| p.info.id)
            .collect();
        for p in pending {
            self.request_keyframe(p, now);
        }
        // Consent / connect timeouts.
        let mut dead = Vec::new();
        for t in self.transports.values() {
            if let Some(since) = t.disconnected_since {
                if now.saturating_duration_since(since) >= self.cfg.consent_timeout {
                    dead.push((t.participant, RemovalReason::ConsentTimeout));
                }
            } else if !t.connected
                && now.saturating_duration_since(t.created) >= self.cfg.connect_timeout
            {
                // Only a transport that had something to connect: a subscriber that
                // never got an offer is idle, not dead.
                let idle_subscriber = matches!(&t.kind, TransportKind::Subscriber { consumers, .. } if consumers.is_empty());
                if !idle_subscriber {
                    dead.push((t.participant, RemovalReason::ConnectTimeout));
                }
            }
        }
        for (p, why) in dead {
            self.remove_participant(p, why);
        }
        // Bandwidth: every subscriber's estimate spent on its consumers.
        if self.next_allocation.is_none_or(|t| t <= now) {
            self.next_allocation = Some(now + ALLOCATION_PERIOD);
            self.allocate_all(now);
            // Dynacast: which layers each publisher should encode.
            self.dynacast_all(now);
        }
        // Active speakers.
        if self.next_speakers.is_none_or(|t| t <= now) {
            self.next_speakers = Some(now + SPEAKER_PERIOD);
            self.update_speakers(now);
        }
    }
}
