//! The `switch` scenario: one participant of a meeting changes networks mid-call.
//!
//! Issue 11 asks that a client whose address and port change mid-call (Wi-Fi to a
//! hotspot, a NAT rebinding) comes back through an ICE restart, as the same participant,
//! with a video gap under a second for everyone watching it. Browsers cannot be moved
//! between networks in CI, but our simulated one can: its peer connections get new
//! sockets on new ports ([`crate::engine::EngineHandle::rebind`]), the old ones are
//! closed, and it restarts ICE through the protocol exactly as `studyroom.js` does:
//!
//! - publisher PC: a new offer with new ICE credentials, sent as the usual `publish` with
//!   the same `tracks`; the answer carries the server's new credentials;
//! - subscriber PC: `restartIce` `{}`, then the server's next `offer` (new credentials)
//!   is answered as usual.
//!
//! The restart starts at once by default, as when the client hears of the network change
//! (the OS's event) and restarts before ICE even notices; `--restart-after-ms` delays it to
//! model a client that waits for ICE to report `disconnected` first. The participant's
//! signaling loop waits with it.
//!
//! `restartIce` is sent first and the publisher's `publish` right after (one Socket.IO
//! request at a time on our client); the server's restart offer is answered once that
//! `publish` is done, so the subscriber's figure includes one publish round trip.
//!
//! What it measures, from the gap trackers marked at the switch ([`crate::gaps`]): for
//! every other participant, the freeze of the video from the one that switched (the
//! longest interval without a packet that begins by 1 s after the switch; later stalls
//! of a busy machine are reported apart); for the switcher, the same for the video of
//! each of the others;
//! whether media came back after that gap; and the protocol facts that make it "the same
//! call": no `participantLeft` in the window, the others' offers still map its video to
//! the same participant id, and the restart `publish` kept its track ids.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::{Value, json};

use super::{Ctx, Outcome, ms};
use crate::engine::{EngineHandle, EngineReport};
use crate::sio::SioClient;

/// How long to wait for the `restartIce` ack (a server without ICE restart may never
/// answer it; the media gap then says what happened).
const RESTART_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Which of the switcher's peer connections move to a new socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SwitchPc {
    /// Both (a real network change moves every socket).
    Both,
    /// Only the publisher connection.
    Publisher,
    /// Only the subscriber connection.
    Subscriber,
}

impl SwitchPc {
    fn name(self) -> &'static str {
        match self {
            SwitchPc::Both => "both",
            SwitchPc::Publisher => "publisher",
            SwitchPc::Subscriber => "subscriber",
        }
    }
}

/// The network switch of a `switch` run.
#[derive(Debug, Clone)]
pub struct SwitchCfg {
    /// Seconds into the measured window.
    pub at: f64,
    /// Connections that switch.
    pub pc: SwitchPc,
    /// The switching participant's number (1 = the first to join).
    pub switcher: u64,
    /// Delay between the rebind and the start of the ICE restart.
    pub restart_after: std::time::Duration,
}

/// What the switching participant did and saw.
#[derive(Debug, Default)]
pub(super) struct SwitchOutcome {
    at: Option<Instant>,
    /// Why the switch could not be carried out (rebind or signaling failure).
    error: Option<String>,
    /// The `restartIce` ack (or the error text).
    restart_ice_ack: Option<Value>,
    /// Sent `restartIce`, waiting for the next offer.
    restart_ice_sent: Option<Instant>,
    /// From `restartIce` until the server's next offer was answered.
    subscriber_restart_ms: Option<f64>,
    /// From the switch until the restart `publish` answer was applied.
    publisher_restart_ms: Option<f64>,
    /// The restart `publish` ack listed the same track ids as the first.
    track_ids_kept: Option<bool>,
}

impl SwitchOutcome {
    /// The participant answered an offer: the first after `restartIce` completes the
    /// subscriber's restart.
    pub(super) fn offer_answered(&mut self) {
        if let Some(t) = self.restart_ice_sent.take() {
            self.subscriber_restart_ms = Some(ms(t.elapsed()));
        }
    }
}

/// Track ids of a `publish` ack, sorted.
pub(super) fn track_ids(ack: &Value) -> Vec<String> {
    let ids: BTreeSet<String> = ack["tracks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect();
    ids.into_iter().collect()
}

/// Switch `o`'s networks now and restart ICE; failures are recorded, not raised, so the
/// participant stays and the summary shows what the others saw.
pub(super) async fn perform(
    ctx: &Ctx,
    engine: &EngineHandle,
    sio: &mut SioClient,
    o: &mut Outcome,
) {
    let Some(cfg) = &ctx.cfg.switch else { return };
    let at = Instant::now();
    let publisher = o.published && cfg.pc != SwitchPc::Subscriber;
    let subscriber = cfg.pc != SwitchPc::Publisher;
    let mut sw = SwitchOutcome {
        at: Some(at),
        ..SwitchOutcome::default()
    };
    if let Err(e) = restart(
        engine,
        sio,
        o,
        &mut sw,
        (publisher, subscriber),
        cfg.restart_after,
    )
    .await
    {
        sw.error = Some(format!("{e:#}"));
    }
    o.switch = Some(sw);
}

async fn restart(
    engine: &EngineHandle,
    sio: &mut SioClient,
    o: &Outcome,
    sw: &mut SwitchOutcome,
    (publisher, subscriber): (bool, bool),
    restart_after: std::time::Duration,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let offer = engine.rebind(o.pid, publisher, subscriber).await?;
    tokio::time::sleep(restart_after).await;
    if subscriber {
        let sent = Instant::now();
        match sio
            .request("restartIce", &json!({}), RESTART_ACK_TIMEOUT)
            .await
        {
            Ok(ack) => {
                if ack.get("error").is_none() {
                    sw.restart_ice_sent = Some(sent);
                }
                sw.restart_ice_ack = Some(ack);
            }
            Err(e) => sw.restart_ice_ack = Some(json!(e.to_string())),
        }
    }
    if let Some(sdp) = offer {
        let res = sio
            .request(
                "publish",
                &json!({ "sdp": sdp, "tracks": o.publish_tracks }),
                super::REQ_TIMEOUT,
            )
            .await?;
        if let Some(e) = res.get("error") {
            anyhow::bail!("restart publish refused: {e}");
        }
        sw.track_ids_kept = Some(track_ids(&res) == o.track_ids);
        let answer = res["sdp"].as_str().context("publish ack without sdp")?;
        engine.publish_answer(o.pid, answer.to_owned()).await?;
        sw.publisher_restart_ms = sw.at.map(|t| ms(t.elapsed()));
    }
    Ok(())
}

fn gap_json(pid: u64, from: &str, mid: &str, rep: &EngineReport) -> Value {
    let g = rep.parts.get(&pid).and_then(|p| p.video_gaps.get(mid));
    json!({
        "pid": pid,
        "from": from,
        "mid": mid,
        "gap_ms": g.and_then(|g| g.gap_ms),
        "baseline_gap_ms": g.map(|g| g.baseline_ms),
        "gap_start_from_switch_ms": g.and_then(|g| g.gap_start_from_mark_ms),
        "packets_after_gap": g.map_or(0, |g| g.packets_after_gap),
        "longest_gap_after_switch_ms": g.and_then(|g| g.longest_after_mark_ms),
        "resumed": g.is_some_and(|g| g.packets_after_gap > 0),
    })
}

fn max_gap(rows: &[Value]) -> Option<f64> {
    rows.iter()
        .filter_map(|r| r["gap_ms"].as_f64())
        .max_by(f64::total_cmp)
}

/// The `switch` block of the summary: gaps per watcher and for the switcher, from the
/// engines' report taken at the window's end (`window_end`), the switch at `switched_at`.
pub(super) fn summarize(
    cfg: &SwitchCfg,
    outs: &[Outcome],
    rep: &EngineReport,
    switched_at: Instant,
    window_end: Instant,
) -> Value {
    let Some(me) = outs.iter().find(|o| o.pid == cfg.switcher) else {
        return json!({ "error": "the switching participant did not run" });
    };
    let my_id = me.participant_id.clone().unwrap_or_default();
    let mut watchers = Vec::new();
    let mut still_mapped = true;
    for o in outs.iter().filter(|o| o.pid != me.pid && o.joined) {
        let mine: Vec<(&String, &Option<String>)> = o
            .video_mids
            .iter()
            .filter(|(_, (owner, _))| *owner == my_id)
            .map(|(mid, (_, track))| (mid, track))
            .collect();
        if mine.is_empty() || mine.iter().any(|(_, t)| t.is_none()) {
            still_mapped = false;
        }
        for (mid, _) in mine {
            watchers.push(gap_json(o.pid, &my_id, mid, rep));
        }
    }
    let mut own = Vec::new();
    for (mid, (owner, _)) in &me.video_mids {
        own.push(gap_json(me.pid, owner, mid, rep));
    }
    let left: BTreeSet<&str> = outs
        .iter()
        .flat_map(|o| &o.left_seen)
        .filter(|(_, t)| *t < window_end)
        .map(|(id, _)| id.as_str())
        .collect();
    let r = rep.parts.get(&me.pid);
    let sw = me.switch.as_ref();
    let resumed = |rows: &[Value]| {
        !rows.is_empty() && rows.iter().all(|r| r["resumed"].as_bool() == Some(true))
    };
    json!({
        "switcher": {
            "pid": me.pid,
            "participant_id": my_id,
            "connections": cfg.pc.name(),
        },
        "at_s_into_window": cfg.at,
        "restart_after_ms": cfg.restart_after.as_secs_f64() * 1000.0,
        "window_after_switch_s": window_end.saturating_duration_since(switched_at).as_secs_f64(),
        "performed": sw.is_some_and(|s| s.at.is_some()),
        "error": sw.and_then(|s| s.error.clone()),
        "restart_ice_ack": sw.and_then(|s| s.restart_ice_ack.clone()),
        "publisher_restart_ms": sw.and_then(|s| s.publisher_restart_ms),
        "subscriber_restart_ms": sw.and_then(|s| s.subscriber_restart_ms),
        "ice_back_ms": {
            "publisher": r.and_then(|r| r.pub_ice_back_ms),
            "subscriber": r.and_then(|r| r.sub_ice_back_ms),
        },
        "track_ids_kept": sw.and_then(|s| s.track_ids_kept),
        "same_participant_in_offers": still_mapped,
        "participant_left_in_window": left,
        "watchers": watchers,
        "max_watcher_gap_ms": max_gap(&watchers),
        "watchers_resumed": resumed(&watchers),
        "own_receive": own,
        "max_own_gap_ms": max_gap(&own),
        "own_resumed": resumed(&own),
    })
}

/// Rows for the human table.
pub(super) fn table_rows(sw: &Value) -> Vec<(String, String)> {
    let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.0}"));
    let mut rows = vec![
        (
            "switch: watcher gap ms max".to_owned(),
            format!(
                "{} (all resumed: {})",
                f(&sw["max_watcher_gap_ms"]),
                sw["watchers_resumed"]
            ),
        ),
        (
            "switch: own receive gap ms max".to_owned(),
            format!(
                "{} (all resumed: {})",
                f(&sw["max_own_gap_ms"]),
                sw["own_resumed"]
            ),
        ),
        (
            "switch: ICE back ms pub / sub".to_owned(),
            format!(
                "{} / {}",
                f(&sw["ice_back_ms"]["publisher"]),
                f(&sw["ice_back_ms"]["subscriber"])
            ),
        ),
        (
            "switch: restartIce ack".to_owned(),
            sw["restart_ice_ack"].to_string(),
        ),
    ];
    if let Some(e) = sw["error"].as_str() {
        rows.push(("switch: error".to_owned(), e.to_owned()));
    }
    rows
}
