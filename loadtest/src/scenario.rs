//! Scenarios: simulated participants speaking docs/protocol.md to a running studyroom.
//!
//! Each participant is one async task on a single-threaded tokio runtime (signaling:
//! token, Socket.IO connect, `join`, `publish`, `answer` to every pushed `offer`, `focus`
//! reports, `leave`) and two peer connections in a media engine thread
//! ([`crate::engine`]): publisher (camera + microphone, we offer) and subscriber (the
//! server offers), as `signaling/web/studyroom.js` does in a browser. Our candidates
//! travel inside the SDP, as the protocol allows, so no `ice` trickle is needed.
//!
//! Timeline of a run: participants start at `--ramp` per second; once all have joined
//! and published (or 15 s after the ramp), the measured window of `--seconds` begins:
//! server CPU, forwarded packets and the generator's own CPU are read at its start and
//! end. Then everyone leaves and the summary is printed (and written with `--json`).
//! The `switch` scenario is a meeting in which one participant changes networks during
//! the window ([`switch`]).

use std::collections::HashSet;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::engine::{self, EngineHandle, EngineReport, Live, MediaCfg};

mod probe;
mod report;
mod switch;

use crate::payload;
use crate::sio::SioClient;
use crate::token::{TokenReq, TokenSource, http_get};
use probe::*;
pub use report::*;
pub use switch::{SwitchCfg, SwitchPc};

/// Which scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Rooms of N, everyone publishes camera + mic and subscribes.
    Meeting,
    /// One publisher, N listeners per room.
    Lecture,
    /// Participants join, stay a while, leave, and are replaced, all run long.
    Churn,
    /// Learners publish, one proctor per room, periodic focus-loss events.
    Proctoring,
    /// A meeting in which one participant switches networks mid-window.
    Switch,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Meeting => "meeting",
            Kind::Lecture => "lecture",
            Kind::Churn => "churn",
            Kind::Proctoring => "proctoring",
            Kind::Switch => "switch",
        }
    }
}

/// Everything a run needs.
pub struct RunCfg {
    /// Scenario.
    pub kind: Kind,
    /// Server base URL.
    pub url: String,
    /// Rooms.
    pub rooms: usize,
    /// Participants per room (lecture: listeners; proctoring: learners).
    pub per_room: usize,
    /// Joins per second during the ramp.
    pub ramp: f64,
    /// Measured seconds after everyone is in.
    pub seconds: f64,
    /// Synthetic media.
    pub media: MediaCfg,
    /// Tokens.
    pub tokens: TokenSource,
    /// Media engine threads.
    pub media_threads: usize,
    /// Local IP for the peers' UDP sockets.
    pub bind_ip: IpAddr,
    /// Churn: mean stay in seconds.
    pub stay: f64,
    /// Proctoring: seconds between a learner's focus changes.
    pub focus_interval: f64,
    /// Room name prefix (rooms are `{prefix}-{scenario}-{i}`).
    pub room_prefix: String,
    /// Server process to measure.
    pub server_pid: Option<u32>,
    /// Server metrics URL (Prometheus text).
    pub metrics_url: String,
    /// Write the summary here.
    pub json: Option<PathBuf>,
    /// Test impairment asked for in every token (percent dropped towards each peer).
    pub impair_loss: Option<f32>,
    /// The `switch` scenario's network switch.
    pub switch: Option<SwitchCfg>,
}

/// What one participant did.
#[derive(Debug, Default)]
struct Outcome {
    pid: u64,
    room: String,
    proctor: bool,
    publish: bool,
    started: Option<Instant>,
    connect_ms: Option<f64>,
    join_ms: Option<f64>,
    publish_ms: Option<f64>,
    publish_req_ms: Option<f64>,
    joined: bool,
    published: bool,
    error: Option<String>,
    offers: u32,
    offered_mids: HashSet<String>,
    focus_sent: u32,
    focus_acked: u32,
    focus_received: u32,
    left_ok: bool,
    /// The server's id for this participant (the `join` ack).
    participant_id: Option<String>,
    /// The `tracks` of its first `publish` (a restart publishes the same).
    publish_tracks: Value,
    /// Track ids in the first `publish` ack, sorted.
    track_ids: Vec<String>,
    /// Subscriber video mids -> (participantId, trackId) from the latest offer.
    video_mids: std::collections::HashMap<String, (String, Option<String>)>,
    /// `participantLeft` ids seen, and when.
    left_seen: Vec<(String, Instant)>,
    /// Its network switch, if it was the one switching.
    switch: Option<switch::SwitchOutcome>,
}

/// Counters for the progress line (signaling side).
#[derive(Default)]
struct Progress {
    attempted: AtomicU64,
    /// Joined and (if publishing) published.
    ready: AtomicU64,
    joined: AtomicU64,
    errors: AtomicU64,
}

struct Ctx {
    cfg: RunCfg,
    engines: Vec<EngineHandle>,
    progress: Progress,
    /// Turns true when the switching participant should switch networks.
    switch_go: watch::Receiver<bool>,
}

const REQ_TIMEOUT: Duration = Duration::from_secs(15);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn participant(
    ctx: Arc<Ctx>,
    pid: u64,
    room: String,
    proctor: bool,
    publish: bool,
    stay: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let mut o = Outcome {
        pid,
        room: room.clone(),
        proctor,
        publish,
        ..Outcome::default()
    };
    ctx.progress.attempted.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = participant_inner(&ctx, &mut o, stay, &mut stop).await {
        ctx.progress.errors.fetch_add(1, Ordering::Relaxed);
        o.error = Some(format!("{e:#}"));
    }
    ctx.engines[pid as usize % ctx.engines.len()].close(pid);
    o
}

async fn participant_inner(
    ctx: &Ctx,
    o: &mut Outcome,
    stay: Option<Duration>,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let engine = &ctx.engines[o.pid as usize % ctx.engines.len()];
    let identity = format!("lg{}", o.pid);
    let token = ctx
        .cfg
        .tokens
        .token(&TokenReq {
            room: &o.room,
            identity: &identity,
            proctor: o.proctor,
            publish: o.publish,
            loss_pct: ctx.cfg.impair_loss,
        })
        .await?;
    let t0 = Instant::now();
    o.started = Some(t0);
    let (mut sio, mut events) = SioClient::connect(
        &ctx.cfg.url,
        "/study",
        &json!({ "token": token }),
        REQ_TIMEOUT,
    )
    .await
    .context("connect")?;
    let t1 = Instant::now();
    o.connect_ms = Some(ms(t1 - t0));
    let ack = sio.request("join", &json!({}), REQ_TIMEOUT).await?;
    if let Some(e) = ack.get("error") {
        bail!("join refused: {e}");
    }
    o.join_ms = Some(ms(t1.elapsed()));
    o.joined = true;
    o.participant_id = ack["participant"]["id"].as_str().map(str::to_owned);
    ctx.progress.joined.fetch_add(1, Ordering::Relaxed);
    if o.publish {
        let t = Instant::now();
        let offer = engine.publish(o.pid).await?;
        let t_req = Instant::now();
        o.publish_tracks = json!([
            {"mid": offer.video_mid, "source": "camera"},
            {"mid": offer.audio_mid, "source": "microphone"},
        ]);
        let res = sio
            .request(
                "publish",
                &json!({ "sdp": offer.sdp, "tracks": o.publish_tracks }),
                REQ_TIMEOUT,
            )
            .await?;
        if let Some(e) = res.get("error") {
            bail!("publish refused: {e}");
        }
        o.publish_req_ms = Some(ms(t_req.elapsed()));
        o.track_ids = switch::track_ids(&res);
        let sdp = res["sdp"].as_str().context("publish ack without sdp")?;
        engine.publish_answer(o.pid, sdp.to_owned()).await?;
        o.publish_ms = Some(ms(t.elapsed()));
        o.published = true;
    }
    ctx.progress.ready.fetch_add(1, Ordering::Relaxed);
    let until = stay.map(|s| Instant::now() + s);
    let focus_every = (!o.proctor && ctx.cfg.kind == Kind::Proctoring)
        .then(|| Duration::from_secs_f64(ctx.cfg.focus_interval.max(0.1)));
    let far = Instant::now() + Duration::from_secs(365 * 86400);
    let mut next_focus = focus_every
        .map(|f| Instant::now() + f.mul_f64(0.5 + fastrand::f64()))
        .unwrap_or(far);
    let mut lost = false;
    let switcher = ctx.cfg.switch.as_ref().is_some_and(|s| s.switcher == o.pid);
    let mut switch_go = ctx.switch_go.clone();
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            ev = events.recv() => {
                let Some((name, data)) = ev else {
                    bail!("disconnected by the server");
                };
                match name.as_str() {
                    "offer" => {
                        o.offers += 1;
                        o.video_mids.clear();
                        for t in data["tracks"].as_array().into_iter().flatten() {
                            if let (Some(mid), false) = (t["mid"].as_str(), t["trackId"].is_null()) {
                                o.offered_mids.insert(mid.to_owned());
                            }
                            if let (Some(mid), Some(owner), Some("video")) =
                                (t["mid"].as_str(), t["participantId"].as_str(), t["kind"].as_str())
                            {
                                let track = t["trackId"].as_str().map(str::to_owned);
                                o.video_mids.insert(mid.to_owned(), (owner.to_owned(), track));
                            }
                        }
                        let sdp = data["sdp"].as_str().context("offer without sdp")?;
                        let answer = engine.subscribe_offer(o.pid, sdp.to_owned()).await?;
                        let res = sio.request("answer", &json!({"sdp": answer}), REQ_TIMEOUT).await?;
                        if let Some(e) = res.get("error") {
                            bail!("answer refused: {e}");
                        }
                        if let Some(sw) = o.switch.as_mut() {
                            sw.offer_answered();
                        }
                    }
                    "participantLeft" => {
                        if let Some(id) = data["id"].as_str() {
                            o.left_seen.push((id.to_owned(), Instant::now()));
                        }
                    }
                    "focus" => o.focus_received += 1,
                    "error" => bail!("server error event: {data}"),
                    "_protocol_error" => bail!("{data}"),
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(next_focus.into()) => {
                lost = !lost;
                let (state, reason) = if lost { ("lost", "hidden") } else { ("regained", "visible") };
                o.focus_sent += 1;
                let res = sio.request("focus", &json!({"state": state, "reason": reason}), REQ_TIMEOUT).await?;
                if res.get("ok").and_then(Value::as_bool) == Some(true) {
                    o.focus_acked += 1;
                }
                next_focus = Instant::now() + focus_every.unwrap_or(Duration::from_secs(3600));
            }
            _ = tokio::time::sleep_until(until.unwrap_or(far).into()) => break,
            Ok(()) = switch_go.changed(), if switcher && o.switch.is_none() => {
                switch::perform(ctx, engine, &mut sio, o).await;
            }
            _ = stop.changed() => {}
        }
    }
    let res = sio.request("leave", &json!({}), REQ_TIMEOUT).await;
    o.left_ok = matches!(&res, Ok(v) if v.get("ok").and_then(Value::as_bool) == Some(true));
    sio.close();
    Ok(())
}

/// A few counters from the server's Prometheus text.
async fn scrape(url: &str) -> Option<Value> {
    let (base, path) = match url.find("://").map(|i| i + 3) {
        Some(i) => match url[i..].find('/') {
            Some(j) => (&url[..i + j], &url[i + j..]),
            None => (url, "/metrics"),
        },
        None => return None,
    };
    let (status, body) = http_get(base, path, Duration::from_secs(5)).await.ok()?;
    if status != 200 {
        return None;
    }
    let mut m = serde_json::Map::new();
    for line in body.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once(' ')
            && let Some(name) = k.strip_prefix("studyroom_")
            && !k.contains('{')
            && let Ok(x) = v.trim().parse::<f64>()
        {
            m.insert(name.to_owned(), json!(x));
        }
    }
    Some(Value::Object(m))
}

async fn snapshot(ctx: &Ctx, live: &Live) -> Snapshot {
    let pid = ctx.cfg.server_pid;
    Snapshot {
        at: Instant::now(),
        tx: live.tx_packets.load(Ordering::Relaxed),
        rx: live.rx_packets.load(Ordering::Relaxed),
        tx_bytes: live.tx_bytes.load(Ordering::Relaxed),
        rx_bytes: live.rx_bytes.load(Ordering::Relaxed),
        expected: live.rx_expected.load(Ordering::Relaxed),
        self_cpu: proc_cpu("/proc/self/stat").unwrap_or(0.0),
        server_cpu: pid.and_then(|p| proc_cpu(&format!("/proc/{p}/stat"))),
        shard_cpu: pid.map(|p| threads_cpu(p, "sfu-shard")),
        metrics: scrape(&ctx.cfg.metrics_url).await,
        udp: udp_counters(),
    }
}

/// Run a scenario; returns the summary JSON.
pub async fn run(cfg: RunCfg) -> anyhow::Result<Value> {
    payload::epoch();
    let live = Arc::new(Live::default());
    let mut engines = Vec::new();
    let mut threads = Vec::new();
    for n in 0..cfg.media_threads.max(1) {
        let (h, t) = engine::spawn(n, cfg.media.clone(), cfg.bind_ip, live.clone())?;
        engines.push(h);
        threads.push(t);
    }
    // Who joins, in ramp order: room by room.
    let mut plan: Vec<(String, bool, bool)> = Vec::new(); // (room, proctor, publish)
    for r in 0..cfg.rooms {
        let room = format!("{}-{}-{r}", cfg.room_prefix, cfg.kind.name());
        match cfg.kind {
            Kind::Meeting | Kind::Churn | Kind::Switch => {
                plan.extend((0..cfg.per_room).map(|_| (room.clone(), false, true)));
            }
            Kind::Lecture => {
                plan.push((room.clone(), false, true));
                plan.extend((0..cfg.per_room).map(|_| (room.clone(), false, false)));
            }
            Kind::Proctoring => {
                plan.push((room.clone(), true, false));
                plan.extend((0..cfg.per_room).map(|_| (room.clone(), false, true)));
            }
        }
    }
    let total = plan.len();
    let (switch_tx, switch_go) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        cfg,
        engines,
        progress: Progress::default(),
        switch_go,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let t_start = Instant::now();
    eprintln!(
        "studyroom-loadtest {}: {} participants in {} rooms against {}, ramp {}/s, {} s measured",
        ctx.cfg.kind.name(),
        total,
        ctx.cfg.rooms,
        ctx.cfg.url,
        ctx.cfg.ramp,
        ctx.cfg.seconds
    );

    // Progress line.
    let prog = {
        let ctx = ctx.clone();
        let live = live.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let tty = std::io::stderr().is_terminal();
            let (mut tx0, mut rx0, mut ex0) = (0u64, 0u64, 0u64);
            let mut t0 = Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => { if *stop.borrow() { break; } }
                }
                let (tx, rx, ex) = (
                    live.tx_packets.load(Ordering::Relaxed),
                    live.rx_packets.load(Ordering::Relaxed),
                    live.rx_expected.load(Ordering::Relaxed),
                );
                let dt = t0.elapsed().as_secs_f64().max(1e-3);
                let loss = if ex > ex0 {
                    (1.0 - (rx - rx0) as f64 / (ex - ex0) as f64).max(0.0) * 100.0
                } else {
                    0.0
                };
                let line = format!(
                    "[{:>5.1}s] joined {}/{} (attempted {}, errors {}) pc up {} | pps out {:.0} in {:.0} | loss {:.2}% | PLI {}",
                    t_start.elapsed().as_secs_f64(),
                    ctx.progress.joined.load(Ordering::Relaxed),
                    total,
                    ctx.progress.attempted.load(Ordering::Relaxed),
                    ctx.progress.errors.load(Ordering::Relaxed),
                    live.connected.load(Ordering::Relaxed),
                    (tx - tx0) as f64 / dt,
                    (rx - rx0) as f64 / dt,
                    loss,
                    live.keyframe_requests.load(Ordering::Relaxed),
                );
                if tty {
                    eprint!("\r{line}\x1b[K");
                } else {
                    eprintln!("{line}");
                }
                (tx0, rx0, ex0, t0) = (tx, rx, ex, Instant::now());
            }
            if tty {
                eprintln!();
            }
        })
    };

    // Ramp.
    let mut tasks = tokio::task::JoinSet::new();
    let gap = Duration::from_secs_f64(1.0 / ctx.cfg.ramp.max(0.001));
    let ramp_start = Instant::now();
    for (i, (room, proctor, publish)) in plan.iter().cloned().enumerate() {
        tokio::time::sleep_until((ramp_start + gap.mul_f64(i as f64)).into()).await;
        let pid = i as u64 + 1;
        let ctx2 = ctx.clone();
        let stop = stop_rx.clone();
        if ctx.cfg.kind == Kind::Churn {
            // A churn slot: one participant after another until stopped.
            let first = pid * 1_000_000;
            tasks.spawn(async move {
                let mut outs = Vec::new();
                let mut k = 0;
                while !*stop.borrow() {
                    let stay = Duration::from_secs_f64(ctx2.cfg.stay * (0.5 + fastrand::f64()));
                    outs.push(
                        participant(
                            ctx2.clone(),
                            first + k,
                            room.clone(),
                            proctor,
                            publish,
                            Some(stay),
                            stop.clone(),
                        )
                        .await,
                    );
                    k += 1;
                }
                outs
            });
        } else {
            tasks.spawn(async move {
                vec![participant(ctx2, pid, room, proctor, publish, None, stop).await]
            });
        }
    }
    // Wait for everyone to be in (joined, published), then for the number of connected
    // peer connections to hold still for a second (churn: not waited for), at most 15 s.
    let settle_deadline = Instant::now() + Duration::from_secs(15);
    let mut last_connected = (u64::MAX, Instant::now());
    while Instant::now() < settle_deadline {
        let p = &ctx.progress;
        let done = p.ready.load(Ordering::Relaxed) + p.errors.load(Ordering::Relaxed);
        let c = live.connected.load(Ordering::Relaxed);
        if c != last_connected.0 {
            last_connected = (c, Instant::now());
        }
        if done >= total as u64
            && (ctx.cfg.kind == Kind::Churn || last_connected.1.elapsed() >= Duration::from_secs(1))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let joined_at = t_start.elapsed();
    let s0 = snapshot(&ctx, &live).await;
    let window_end = s0.at + Duration::from_secs_f64(ctx.cfg.seconds);
    let mut switched_at = None;
    if let Some(sw) = &ctx.cfg.switch {
        tokio::time::sleep(Duration::from_secs_f64(sw.at)).await;
        let at = Instant::now();
        for e in &ctx.engines {
            e.mark_gaps(at);
        }
        let _ = switch_tx.send(true);
        switched_at = Some(at);
    }
    tokio::time::sleep_until(window_end.into()).await;
    let s1 = snapshot(&ctx, &live).await;
    // The gaps as of the window's end, before anyone leaves.
    let mut at_window_end = EngineReport::default();
    if switched_at.is_some() {
        for e in &ctx.engines {
            at_window_end.parts.extend(e.report().await?.parts);
        }
    }
    let sock_drops = socket_drops();
    let peak_rss_kib = ctx.cfg.server_pid.and_then(|p| status_kib(p, "VmHWM:"));
    let rss_kib = ctx.cfg.server_pid.and_then(|p| status_kib(p, "VmRSS:"));
    let _ = stop_tx.send(true);
    let mut outcomes = Vec::new();
    let leave_deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(Some(r)) = tokio::time::timeout_at(leave_deadline.into(), tasks.join_next()).await
    {
        if let Ok(v) = r {
            outcomes.extend(v);
        }
    }
    tasks.abort_all();
    let _ = prog.await;
    // Let closes reach the engines, then collect.
    let mut rep = EngineReport::default();
    for e in &ctx.engines {
        let r = e.report().await?;
        rep.parts.extend(r.parts);
        rep.latency_us.merge(&r.latency_us);
        rep.send_drops += r.send_drops;
        e.stop();
    }
    for t in threads {
        let _ = t.join();
    }
    let mut summary = summarize(
        &ctx,
        &outcomes,
        &rep,
        &s0,
        &s1,
        joined_at,
        peak_rss_kib,
        rss_kib,
    );
    summary["socket_drops_at_window_end"] = match sock_drops {
        Some((g, o)) => json!({"generator": g, "others": o}),
        None => Value::Null,
    };
    if let (Some(cfg), Some(at)) = (&ctx.cfg.switch, switched_at) {
        summary["switch"] = switch::summarize(cfg, &outcomes, &at_window_end, at, s1.at);
    }
    Ok(summary)
}
