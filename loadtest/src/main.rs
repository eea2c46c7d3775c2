//! `studyroom-loadtest`: load generation for studyroom.
//!
//! - `meeting`, `lecture`, `churn`, `proctoring`, `switch`: simulated browsers against a running
//!   studyroom, through the real protocol (Socket.IO `/study`, two str0m peer connections
//!   each, synthetic Opus + VP8 carrying send stamps). See [`scenario`] for the timeline
//!   and [`engine`] for how many peers share a thread.
//! - `fanout`, `udp-baseline`: the media core's in-process benchmarks ([`fanout`]).

mod engine;
mod fanout;
mod gaps;
mod payload;
mod scenario;
mod sio;
mod stats;
mod token;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};

/// Kernel clock ticks per second for /proc times: 100 on every Linux architecture we
/// run on (`getconf CLK_TCK`); reading it would need an unsafe `sysconf` call.
pub(crate) const CLK_TCK: f64 = 100.0;

#[derive(Parser)]
#[command(name = "studyroom-loadtest", about = "Load generator for studyroom")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Options shared by the protocol scenarios.
#[derive(Args, Clone)]
struct Common {
    /// Server base URL (HTTP + Socket.IO).
    #[arg(long, default_value = "http://127.0.0.1:5002")]
    url: String,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Participants per room (lecture: listeners; proctoring: learners; meeting default 6,
    /// switch 3).
    #[arg(long, visible_alias = "participants")]
    per_room: Option<usize>,
    /// Joins per second while ramping up.
    #[arg(long, default_value_t = 20.0)]
    ramp: f64,
    /// Seconds measured once everyone is in.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Camera bitrate, kbit/s (top layer with --simulcast).
    #[arg(long, default_value_t = 500)]
    video_kbps: u32,
    /// Camera frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Seconds between key frames (plus one on every PLI).
    #[arg(long, default_value_t = 5.0)]
    keyframe_interval: f64,
    /// Opus bytes per 20 ms packet (80 = 32 kbit/s).
    #[arg(long, default_value_t = 80)]
    audio_bytes: usize,
    /// Simulcast layers to offer: 1 (off) or 3 (rids q/h/f at 1/16, 1/4, 1 of the bitrate).
    /// Fails at publish if the SFU's answer drops simulcast. The SFU forwards one layer per
    /// subscriber (`high` by default); the summary's "simulcast layers mixed in a stream"
    /// must read 1.
    #[arg(long, default_value_t = 1)]
    simulcast: u8,
    /// Mint tokens with this HS256 secret (else GET /dev/token from a --dev server).
    #[arg(long, env = "STUDYROOM_API_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Media engine threads (each drives many peers).
    #[arg(long, default_value_t = 1)]
    media_threads: usize,
    /// Local IP the peers' UDP sockets bind to.
    #[arg(long, default_value = "127.0.0.1")]
    bind_ip: IpAddr,
    /// Room name prefix.
    #[arg(long, default_value = "lg")]
    room_prefix: String,
    /// PID of the studyroom server on this machine: report its CPU, peak RSS and CPU per
    /// forwarded packet over the measured window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server's Prometheus metrics URL.
    #[arg(long, default_value = "http://127.0.0.1:9100/metrics")]
    metrics_url: String,
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Ask the server to drop this percent of media datagrams towards every simulated
    /// peer (token claim; only a server started with --allow-impairment honours it).
    /// Exercises NACK + retransmission: the loss reported is what is left after repair.
    #[arg(long)]
    impair_loss: Option<f32>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Rooms of 6 (--per-room), everyone publishes camera + mic and subscribes to all.
    Meeting(Common),
    /// One publisher and --per-room listeners per room.
    Lecture(Common),
    /// Continuous join/leave: every slot rejoins as a new participant after a stay.
    Churn {
        #[command(flatten)]
        common: Common,
        /// Mean seconds a participant stays (uniform 0.5x..1.5x).
        #[arg(long, default_value_t = 5.0)]
        stay: f64,
    },
    /// Learners publish, one proctor per room watches; learners lose and regain focus.
    Proctoring {
        #[command(flatten)]
        common: Common,
        /// Seconds between a learner's focus changes (lost, regained, ...).
        #[arg(long, default_value_t = 3.0)]
        focus_interval: f64,
    },
    /// A meeting (default 3) in which one participant switches networks mid-window: its
    /// peer connections move to new UDP ports and restart ICE (`publish` again, and
    /// `restartIce`). Reports the video gap every watcher saw, and the switcher's.
    Switch {
        #[command(flatten)]
        common: Common,
        /// Seconds into the measured window (--seconds) at which it switches.
        #[arg(long, default_value_t = 4.0)]
        switch_at: f64,
        /// Which of its peer connections move.
        #[arg(long, value_enum, default_value_t = scenario::SwitchPc::Both)]
        switch_pc: scenario::SwitchPc,
        /// Who switches: the n-th participant to join (1 = the first).
        #[arg(long, default_value_t = 1)]
        switcher: u64,
        /// Milliseconds between the new sockets and the ICE restart (0: the client hears
        /// of the network change at once; a client that waits for ICE `disconnected`
        /// restarts later).
        #[arg(long, default_value_t = 0)]
        restart_after_ms: u64,
    },
    /// One publisher to N subscribers through an in-process SFU; SFU CPU per forwarded packet.
    Fanout {
        /// Subscribers.
        #[arg(long, default_value_t = 50)]
        subscribers: usize,
        /// Seconds of media (after everyone connected).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Video packets per second from the publisher (1200-byte payloads).
        #[arg(long, default_value_t = 200)]
        video_pps: u32,
        /// SFU shard threads.
        #[arg(long, default_value_t = 1)]
        shards: usize,
        /// First media port of the in-process SFU.
        #[arg(long, default_value_t = 41000)]
        port: u16,
        /// Turn on the SFU's bandwidth estimation and stream allocator (its CPU price).
        #[arg(long)]
        bwe: bool,
        /// Write the result as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Kernel baseline: CPU per datagram of plain `sendmmsg` fan-out (1200 bytes) to N
    /// loopback sockets, no WebRTC at all. The floor under `fanout`'s figure.
    UdpBaseline {
        /// Receiving sockets.
        #[arg(long, default_value_t = 50)]
        receivers: usize,
        /// Datagrams to send in total.
        #[arg(long, default_value_t = 500_000)]
        packets: usize,
    },
}

fn run_cfg(
    kind: scenario::Kind,
    c: Common,
    stay: f64,
    focus_interval: f64,
) -> anyhow::Result<scenario::RunCfg> {
    let per_room = c.per_room.unwrap_or(match kind {
        scenario::Kind::Meeting | scenario::Kind::Proctoring => 6,
        scenario::Kind::Lecture => 50,
        scenario::Kind::Churn => 4,
        scenario::Kind::Switch => 3,
    });
    if !matches!(c.simulcast, 1 | 3) {
        bail!("--simulcast takes 1 or 3");
    }
    if c.fps == 0 || c.fps > 120 {
        bail!("--fps must be 1..=120");
    }
    if c.ramp <= 0.0 || c.seconds < 0.0 {
        bail!("--ramp must be > 0 and --seconds >= 0");
    }
    let tokens = match c.secret {
        Some(s) => token::TokenSource::Secret(s),
        None => token::TokenSource::Dev(c.url.clone()),
    };
    Ok(scenario::RunCfg {
        kind,
        url: c.url,
        rooms: c.rooms,
        per_room,
        ramp: c.ramp,
        seconds: c.seconds,
        media: engine::MediaCfg {
            video_kbps: c.video_kbps,
            fps: c.fps,
            keyframe_interval: Duration::from_secs_f64(c.keyframe_interval.max(0.1)),
            audio_bytes: c.audio_bytes.clamp(20, 1000),
            simulcast: c.simulcast == 3,
        },
        tokens,
        media_threads: c.media_threads,
        bind_ip: c.bind_ip,
        stay,
        focus_interval,
        room_prefix: c.room_prefix,
        server_pid: c.server_pid,
        metrics_url: c.metrics_url,
        json: c.json,
        impair_loss: c.impair_loss,
        switch: None,
    })
}

fn scenario_main(cfg: scenario::RunCfg) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let json_path = cfg.json.clone();
    let summary = rt.block_on(scenario::run(cfg))?;
    println!("{}", scenario::table(&summary));
    if summary["switch"].is_object() {
        println!("{}", serde_json::to_string_pretty(&summary["switch"])?);
    }
    if let Some(p) = json_path {
        std::fs::write(&p, serde_json::to_vec_pretty(&summary)?)?;
        eprintln!("summary written to {}", p.display());
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Meeting(c) => scenario_main(run_cfg(scenario::Kind::Meeting, c, 0.0, 0.0)?),
        Cmd::Lecture(c) => scenario_main(run_cfg(scenario::Kind::Lecture, c, 0.0, 0.0)?),
        Cmd::Churn { common, stay } => {
            scenario_main(run_cfg(scenario::Kind::Churn, common, stay, 0.0)?)
        }
        Cmd::Proctoring {
            common,
            focus_interval,
        } => scenario_main(run_cfg(
            scenario::Kind::Proctoring,
            common,
            0.0,
            focus_interval,
        )?),
        Cmd::Switch {
            common,
            switch_at,
            switch_pc,
            switcher,
            restart_after_ms,
        } => {
            let mut cfg = run_cfg(scenario::Kind::Switch, common, 0.0, 0.0)?;
            if !(switch_at > 0.0 && switch_at < cfg.seconds) {
                bail!("--switch-at must be inside the window: 0 < switch-at < --seconds");
            }
            if cfg.rooms != 1 || switcher == 0 || switcher as usize > cfg.per_room {
                bail!("switch: one room (--rooms 1), --switcher between 1 and --per-room");
            }
            cfg.switch = Some(scenario::SwitchCfg {
                at: switch_at,
                pc: switch_pc,
                switcher,
                restart_after: Duration::from_millis(restart_after_ms),
            });
            scenario_main(cfg)
        }
        Cmd::UdpBaseline { receivers, packets } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&fanout::udp_baseline(receivers, packets)?)?
            );
            Ok(())
        }
        Cmd::Fanout {
            subscribers,
            seconds,
            video_pps,
            shards,
            port,
            bwe,
            json,
        } => {
            let r = fanout::fanout(subscribers, seconds, video_pps, shards, port, bwe)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            if let Some(path) = json {
                std::fs::write(path, serde_json::to_vec_pretty(&r)?)?;
            }
            Ok(())
        }
    }
}
