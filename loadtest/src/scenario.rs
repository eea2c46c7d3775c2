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

mod switch;
use crate::payload;
use crate::sio::SioClient;
use crate::stats::{Histogram, percentile};
use crate::token::{TokenReq, TokenSource, http_get};
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

/// Process CPU seconds (utime + stime) of `/proc/{pid}/stat` (or a task's).
fn proc_cpu(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some((ut + st) as f64 / crate::CLK_TCK)
}

/// CPU seconds of a process's threads whose name starts with `prefix`.
fn threads_cpu(pid: u32, prefix: &str) -> f64 {
    let mut total = 0.0;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in dir.flatten() {
            let p = e.path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            if comm.trim().starts_with(prefix) {
                total += proc_cpu(&p.join("stat").to_string_lossy()).unwrap_or(0.0);
            }
        }
    }
    total
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
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

struct Snapshot {
    at: Instant,
    tx: u64,
    rx: u64,
    tx_bytes: u64,
    rx_bytes: u64,
    expected: u64,
    self_cpu: f64,
    server_cpu: Option<f64>,
    shard_cpu: Option<f64>,
    metrics: Option<Value>,
    udp: Option<Vec<(String, u64)>>,
}

/// The kernel's UDP counters of this network namespace (`/proc/net/snmp`): receive
/// buffer overflows say which side could not keep up when both run here.
fn udp_counters() -> Option<Vec<(String, u64)>> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names = lines.next()?.split_whitespace().skip(1);
    let values = lines.next()?.split_whitespace().skip(1);
    Some(
        names
            .zip(values)
            .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
            .collect(),
    )
}

/// Datagrams the kernel dropped on UDP sockets still open, split into this process's
/// sockets (the simulated peers) and everyone else's in the namespace (the server), from
/// the `drops` column of `/proc/net/udp` and our own `/proc/self/fd` socket inodes.
fn socket_drops() -> Option<(u64, u64)> {
    let mut ours = HashSet::new();
    for e in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        if let Ok(l) = std::fs::read_link(e.path())
            && let Some(i) = l
                .to_str()
                .and_then(|x| x.strip_prefix("socket:["))
                .and_then(|x| x.strip_suffix(']'))
        {
            ours.insert(i.to_owned());
        }
    }
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    let (mut mine, mut others) = (0u64, 0u64);
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(inode), Some(drops)) = (f.get(9), f.get(12).and_then(|d| d.parse::<u64>().ok()))
        else {
            continue;
        };
        if ours.contains(*inode) {
            mine += drops;
        } else {
            others += drops;
        }
    }
    Some((mine, others))
}

fn udp_delta(a: &Snapshot, b: &Snapshot) -> Value {
    let (Some(a), Some(b)) = (&a.udp, &b.udp) else {
        return Value::Null;
    };
    let mut m = serde_json::Map::new();
    for ((n, x), (_, y)) in a.iter().zip(b) {
        if ["InDatagrams", "RcvbufErrors", "SndbufErrors", "InErrors"].contains(&n.as_str()) {
            m.insert(n.clone(), json!(y.saturating_sub(*x)));
        }
    }
    Value::Object(m)
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

fn metric_delta(a: &Snapshot, b: &Snapshot, name: &str) -> Option<f64> {
    Some(b.metrics.as_ref()?[name].as_f64()? - a.metrics.as_ref()?[name].as_f64()?)
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

fn pcts(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    json!({
        "n": v.len(),
        "p50": percentile(&v, 0.5),
        "p95": percentile(&v, 0.95),
        "p99": percentile(&v, 0.99),
        "max": v.last(),
    })
}

fn hist_ms(h: &Histogram) -> Value {
    let q = |x| h.quantile(x).map(|u| u as f64 / 1000.0);
    json!({"n": h.count(), "p50": q(0.5), "p95": q(0.95), "p99": q(0.99)})
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    ctx: &Ctx,
    outs: &[Outcome],
    rep: &EngineReport,
    s0: &Snapshot,
    s1: &Snapshot,
    joined_at: Duration,
    peak_rss_kib: Option<u64>,
    rss_kib: Option<u64>,
) -> Value {
    let cfg = &ctx.cfg;
    let window = (s1.at - s0.at).as_secs_f64().max(1e-3);
    let attempted = outs.len();
    let acked = outs.iter().filter(|o| o.joined).count();
    let errors: Vec<String> = outs
        .iter()
        .filter_map(|o| {
            o.error
                .as_ref()
                .map(|e| format!("participant {}: {e}", o.pid))
        })
        .collect();
    let published = outs.iter().filter(|o| o.published).count();
    let publishers = outs.iter().filter(|o| o.publish).count();
    // Receivers: joined participants whose room had another publisher.
    let mut receivers = 0usize;
    let mut receivers_with_media = 0usize;
    let mut streams_offered = 0usize;
    let mut streams_with_media = 0usize;
    let mut ttfm = Vec::new();
    let mut jitter = Vec::new();
    let (mut tx, mut rx, mut expected, mut txb, mut rxb, mut kf, mut plis) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut switches, mut switches_mid) = (0u64, 0u64);
    let (mut vrx, mut vexp) = (0u64, 0u64);
    for o in outs {
        let r = rep.parts.get(&o.pid).cloned().unwrap_or_default();
        tx += r.tx_packets;
        txb += r.tx_bytes;
        rx += r.rx_packets;
        rxb += r.rx_bytes;
        expected += r.rx_expected;
        kf += r.keyframes_rx;
        plis += r.keyframe_requests;
        switches += r.layer_switches;
        switches_mid += r.layer_switches_mid_frame;
        vrx += r.video_rx_packets;
        vexp += r.video_rx_expected;
        if !o.joined || o.offered_mids.is_empty() {
            continue;
        }
        receivers += 1;
        if let (Some(f), Some(s)) = (r.first_media, o.started) {
            receivers_with_media += 1;
            ttfm.push(ms(f.saturating_duration_since(s)));
        }
        streams_offered += o.offered_mids.len();
        streams_with_media += o
            .offered_mids
            .iter()
            .filter(|m| r.mids_with_media.contains(*m))
            .count();
        if let Some(j) = r.jitter_ms {
            jitter.push(j);
        }
    }
    let loss = if expected > 0 {
        (1.0 - rx as f64 / expected as f64).max(0.0)
    } else {
        0.0
    };
    let loss_of = |got: u64, want: u64| {
        if want > 0 {
            (1.0 - got as f64 / want as f64).max(0.0)
        } else {
            0.0
        }
    };
    let video_loss = loss_of(vrx, vexp);
    let audio_loss = loss_of(rx - vrx, expected - vexp);
    // What the publishers present in the window should send: 50 Opus packets/s plus
    // fps x packets per delta frame per layer (key frames add a little more). A generator
    // or machine that falls behind skips frames (as an encoder would), so a rate below
    // this is saturation, not loss.
    let per_publisher = {
        let m = &cfg.media;
        let frame = (m.video_kbps as usize * 1000 / 8) / m.fps.max(1) as usize;
        let room = payload::MAX_PAYLOAD - 1 - payload::STAMP_LEN;
        let layers: &[usize] = if m.simulcast { &[16, 4, 1] } else { &[1] };
        let video: usize = layers
            .iter()
            .map(|l| (frame / l).max(64).div_ceil(room) * m.fps as usize)
            .sum();
        50.0 + video as f64
    };
    let publishing_in_window = outs
        .iter()
        .filter(|o| o.published && o.started.is_some_and(|t| t < s0.at))
        .count();
    let nominal_pps_out = if cfg.kind == Kind::Churn {
        0.0
    } else {
        per_publisher * publishing_in_window as f64
    };
    let peers = outs.len().max(1);
    let pcs = outs
        .iter()
        .map(|o| usize::from(o.joined) * (1 + usize::from(o.published)))
        .sum::<usize>()
        .max(1);
    let self_cpu = s1.self_cpu - s0.self_cpu;
    let in_window = |outs: &[Outcome]| outs.iter().filter(|o| o.joined).count().max(1);
    let live_peers = if cfg.kind == Kind::Churn {
        cfg.rooms * cfg.per_room
    } else {
        in_window(outs)
    };
    let fwd = metric_delta(s0, s1, "rtp_forwarded_total");
    let window_packets = (s1.tx - s0.tx) + (s1.rx - s0.rx);
    let gen_us_per_packet = (window_packets > 0).then(|| self_cpu * 1e6 / window_packets as f64);
    let server = cfg.server_pid.map(|pid| {
        let cpu = s1.server_cpu.zip(s0.server_cpu).map(|(b, a)| b - a);
        let shard = s1.shard_cpu.zip(s0.shard_cpu).map(|(b, a)| b - a);
        json!({
            "pid": pid,
            "cpu_seconds": cpu,
            "cpu_cores": cpu.map(|c| c / window),
            "shard_threads_cpu_seconds": shard,
            "peak_rss_mib": peak_rss_kib.map(|k| k as f64 / 1024.0),
            "rss_mib": rss_kib.map(|k| k as f64 / 1024.0),
            "cpu_us_per_forwarded_packet": cpu.zip(fwd).filter(|(_, f)| *f > 0.0).map(|(c, f)| c * 1e6 / f),
            "shard_cpu_us_per_forwarded_packet": shard.zip(fwd).filter(|(_, f)| *f > 0.0).map(|(c, f)| c * 1e6 / f),
            "forwarded_pps_per_cpu_core": cpu.zip(fwd).filter(|(c, _)| *c > 0.0).map(|(c, f)| f / c),
        })
    });
    let mut focus = json!(null);
    if cfg.kind == Kind::Proctoring {
        focus = json!({
            "sent": outs.iter().map(|o| u64::from(o.focus_sent)).sum::<u64>(),
            "acked": outs.iter().map(|o| u64::from(o.focus_acked)).sum::<u64>(),
            "received_by_proctors": outs.iter().map(|o| u64::from(o.focus_received)).sum::<u64>(),
        });
    }
    json!({
        "scenario": cfg.kind.name(),
        "url": cfg.url,
        "rooms": cfg.rooms,
        "per_room": cfg.per_room,
        "ramp_per_s": cfg.ramp,
        "impair_loss_pct": cfg.impair_loss,
        "media": {
            "video_kbps": cfg.media.video_kbps,
            "fps": cfg.media.fps,
            "keyframe_interval_s": cfg.media.keyframe_interval.as_secs_f64(),
            "audio_bytes": cfg.media.audio_bytes,
            "simulcast": cfg.media.simulcast,
        },
        "everyone_in_after_s": joined_at.as_secs_f64(),
        "joins_per_s_window": outs.iter().filter(|o| o.started.is_some_and(|t| t >= s0.at && t < s1.at)).count() as f64 / window,
        "window_s": window,
        "joins": {
            "attempted": attempted,
            "acked": acked,
            "errors": errors.len(),
            "first_errors": errors.iter().take(10).collect::<Vec<_>>(),
            "left_ok": outs.iter().filter(|o| o.left_ok).count(),
            "connect_ms": pcts(outs.iter().filter_map(|o| o.connect_ms).collect()),
            "join_ack_ms": pcts(outs.iter().filter_map(|o| o.join_ms).collect()),
            "publish_ms": pcts(outs.iter().filter_map(|o| o.publish_ms).collect()),
            "publish_ack_ms": pcts(outs.iter().filter_map(|o| o.publish_req_ms).collect()),
        },
        "media_result": {
            "publishers": publishers,
            "published": published,
            "receivers": receivers,
            "receivers_with_media": receivers_with_media,
            "streams_offered": streams_offered,
            "streams_with_media": streams_with_media,
            "time_to_first_media_ms": pcts(ttfm),
            "packets_sent": tx,
            "packets_received": rx,
            "packets_expected": expected,
            "loss": loss,
            "video_loss": video_loss,
            "audio_loss": audio_loss,
            "window_loss": if s1.expected > s0.expected { (1.0 - (s1.rx - s0.rx) as f64 / (s1.expected - s0.expected) as f64).max(0.0) } else { 0.0 },
            "window_pps_out": (s1.tx - s0.tx) as f64 / window,
            "nominal_pps_out": nominal_pps_out,
            "send_rate_achieved": if nominal_pps_out > 0.0 { (s1.tx - s0.tx) as f64 / window / nominal_pps_out } else { 0.0 },
            "window_pps_in": (s1.rx - s0.rx) as f64 / window,
            "window_kbps_out": (s1.tx_bytes - s0.tx_bytes) as f64 * 8.0 / 1000.0 / window,
            "window_kbps_in": (s1.rx_bytes - s0.rx_bytes) as f64 * 8.0 / 1000.0 / window,
            "received_bytes": rxb,
            "sent_bytes": txb,
            "jitter_ms": pcts(jitter),
            "e2e_latency_ms": hist_ms(&rep.latency_us),
            "keyframes_received": kf,
            "keyframe_requests_at_publishers": plis,
            "send_drops": rep.send_drops,
            "simulcast_layer_switches": switches,
            "simulcast_layer_switches_mid_frame": switches_mid,
        },
        "focus": focus,
        "generator": {
            "media_threads": cfg.media_threads,
            "cpu_seconds_window": self_cpu,
            "cpu_cores_window": self_cpu / window,
            "participants": peers,
            "peer_connections": pcs,
            "cpu_ms_per_participant_second": self_cpu * 1000.0 / window / live_peers as f64,
            "cpu_ms_per_peer_connection_second": self_cpu * 1000.0 / window / pcs as f64,
            "cpu_us_per_packet_in_or_out": gen_us_per_packet,
        },
        "server": server,
        "kernel_udp_window": udp_delta(s0, s1),
        "server_window": {
            "forwarded_packets": fwd,
            "forwarded_pps": fwd.map(|f| f / window),
            "rtp_received_pps": metric_delta(s0, s1, "rtp_received_total").map(|f| f / window),
            "nacks_received": metric_delta(s0, s1, "nacks_received_total"),
            "keyframe_requests": metric_delta(s0, s1, "keyframe_requests_total"),
            "ice_restarts": metric_delta(s0, s1, "ice_restarts_total"),
            "send_drops": metric_delta(s0, s1, "send_drops_total"),
            "datagrams_sent_pps": metric_delta(s0, s1, "datagrams_sent_total").map(|f| f / window),
        },
    })
}

fn f(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
        None => "-".into(),
    }
}

/// The human summary table.
pub fn table(s: &Value) -> String {
    let j = &s["joins"];
    let m = &s["media_result"];
    let g = &s["generator"];
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("  {k:<34} {v}\n"));
    row(
        "scenario",
        format!(
            "{} ({} rooms x {})",
            s["scenario"].as_str().unwrap_or(""),
            s["rooms"],
            s["per_room"]
        ),
    );
    row(
        "joins acked / attempted",
        format!(
            "{} / {} (errors {}; {:.1} joins/s in the window)",
            j["acked"],
            j["attempted"],
            j["errors"],
            s["joins_per_s_window"].as_f64().unwrap_or(0.0)
        ),
    );
    for (name, key) in [
        ("connect ms p50/p95/p99", "connect_ms"),
        ("join ack ms p50/p95/p99", "join_ack_ms"),
        ("publish ack ms p50/p95/p99", "publish_ack_ms"),
        ("publish total ms (offer..answer set)", "publish_ms"),
    ] {
        row(
            name,
            format!(
                "{} / {} / {}",
                f(&j[key]["p50"]),
                f(&j[key]["p95"]),
                f(&j[key]["p99"])
            ),
        );
    }
    let t = &m["time_to_first_media_ms"];
    row(
        "time to first media ms p50/p95/p99",
        format!("{} / {} / {}", f(&t["p50"]), f(&t["p95"]), f(&t["p99"])),
    );
    row(
        "receivers with media",
        format!("{} / {}", m["receivers_with_media"], m["receivers"]),
    );
    row(
        "streams with media / offered",
        format!("{} / {}", m["streams_with_media"], m["streams_offered"]),
    );
    row(
        "packets sent / received",
        format!("{} / {}", m["packets_sent"], m["packets_received"]),
    );
    row(
        "loss (run / window)",
        format!(
            "{:.3} % / {:.3} %",
            m["loss"].as_f64().unwrap_or(0.0) * 100.0,
            m["window_loss"].as_f64().unwrap_or(0.0) * 100.0
        ),
    );
    row(
        "loss video / audio (run)",
        format!(
            "{:.3} % / {:.3} %",
            m["video_loss"].as_f64().unwrap_or(0.0) * 100.0,
            m["audio_loss"].as_f64().unwrap_or(0.0) * 100.0
        ),
    );
    row(
        "pps out / in (window)",
        format!(
            "{} / {} (out: {:.1} % of nominal)",
            f(&m["window_pps_out"]),
            f(&m["window_pps_in"]),
            m["send_rate_achieved"].as_f64().unwrap_or(0.0) * 100.0
        ),
    );
    row(
        "kbit/s out / in (window, RTP payload)",
        format!("{} / {}", f(&m["window_kbps_out"]), f(&m["window_kbps_in"])),
    );
    let jt = &m["jitter_ms"];
    row(
        "jitter ms p50/p95 (per participant)",
        format!(
            "{:.2} / {:.2}",
            jt["p50"].as_f64().unwrap_or(f64::NAN),
            jt["p95"].as_f64().unwrap_or(f64::NAN)
        ),
    );
    let l = &m["e2e_latency_ms"];
    row(
        "end-to-end latency ms p50/p95/p99",
        format!("{} / {} / {}", f(&l["p50"]), f(&l["p95"]), f(&l["p99"])),
    );
    row(
        "PLI at publishers / keyframes rx",
        format!(
            "{} / {}",
            m["keyframe_requests_at_publishers"], m["keyframes_received"]
        ),
    );
    if s["media"]["simulcast"].as_bool() == Some(true) {
        row(
            "simulcast layer switches: at key frames / mid-frame",
            format!(
                "{} / {} (mid-frame must be 0: layers interleaved)",
                m["simulcast_layer_switches"], m["simulcast_layer_switches_mid_frame"]
            ),
        );
    }
    if !s["focus"].is_null() {
        let fo = &s["focus"];
        row(
            "focus sent / acked / at proctors",
            format!(
                "{} / {} / {}",
                fo["sent"], fo["acked"], fo["received_by_proctors"]
            ),
        );
    }
    row(
        "generator CPU cores (window)",
        format!("{:.3}", g["cpu_cores_window"].as_f64().unwrap_or(0.0)),
    );
    row(
        "generator CPU ms per participant-s",
        format!(
            "{:.2}",
            g["cpu_ms_per_participant_second"].as_f64().unwrap_or(0.0)
        ),
    );
    row(
        "generator CPU us per packet in/out",
        format!(
            "{:.2}",
            g["cpu_us_per_packet_in_or_out"]
                .as_f64()
                .unwrap_or(f64::NAN)
        ),
    );
    let sw = &s["server_window"];
    row("SFU forwarded pps (window)", f(&sw["forwarded_pps"]));
    let d = &s["socket_drops_at_window_end"];
    if !d.is_null() {
        row(
            "socket drops generator / others",
            format!("{} / {}", d["generator"], d["others"]),
        );
    }
    let k = &s["kernel_udp_window"];
    if !k.is_null() {
        row(
            "kernel UDP rcvbuf / sndbuf drops (window)",
            format!("{} / {}", k["RcvbufErrors"], k["SndbufErrors"]),
        );
    }
    if let Some(sv) = s["server"].as_object() {
        row(
            "server CPU s / cores (window)",
            format!(
                "{:.2} / {:.3}",
                sv["cpu_seconds"].as_f64().unwrap_or(f64::NAN),
                sv["cpu_cores"].as_f64().unwrap_or(0.0)
            ),
        );
        row("server peak RSS MiB", f(&sv["peak_rss_mib"]));
        row(
            "server CPU us / forwarded packet",
            format!(
                "{:.2} (shard threads {:.2})",
                sv["cpu_us_per_forwarded_packet"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                sv["shard_cpu_us_per_forwarded_packet"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            ),
        );
    }
    if s["switch"].is_object() {
        for (k, v) in switch::table_rows(&s["switch"]) {
            out.push_str(&format!("  {k:<34} {v}\n"));
        }
    }
    if let Some(errs) = s["joins"]["first_errors"].as_array()
        && !errs.is_empty()
    {
        out.push_str("  first errors:\n");
        for e in errs {
            out.push_str(&format!("    {}\n", e.as_str().unwrap_or("")));
        }
    }
    out
}
