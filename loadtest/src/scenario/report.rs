//! A run's summary: percentiles and histograms of what the peers measured, the server's
//! side from its metrics and /proc, as JSON, and the table printed at the end.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::stats::{Histogram, percentile};

pub(super) fn pcts(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    json!({
        "n": v.len(),
        "p50": percentile(&v, 0.5),
        "p95": percentile(&v, 0.95),
        "p99": percentile(&v, 0.99),
        "max": v.last(),
    })
}

pub(super) fn hist_ms(h: &Histogram) -> Value {
    let q = |x| h.quantile(x).map(|u| u as f64 / 1000.0);
    json!({"n": h.count(), "p50": q(0.5), "p95": q(0.95), "p99": q(0.99)})
}

#[allow(clippy::too_many_arguments)]
pub(super) fn summarize(
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

pub(super) fn f(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
        None => "-".into(),
    }
}

/// `p50 / p95 / p99` of a percentile object.
fn percentiles(v: &Value) -> String {
    format!("{} / {} / {}", f(&v["p50"]), f(&v["p95"]), f(&v["p99"]))
}

/// Two fractions as `a % / b %` (missing counts as 0).
fn percent_pair(a: &Value, b: &Value) -> String {
    let pct = |v: &Value| v.as_f64().unwrap_or(0.0) * 100.0;
    format!("{:.3} % / {:.3} %", pct(a), pct(b))
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
        row(name, percentiles(&j[key]));
    }
    row(
        "time to first media ms p50/p95/p99",
        percentiles(&m["time_to_first_media_ms"]),
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
        percent_pair(&m["loss"], &m["window_loss"]),
    );
    row(
        "loss video / audio (run)",
        percent_pair(&m["video_loss"], &m["audio_loss"]),
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
    row(
        "end-to-end latency ms p50/p95/p99",
        percentiles(&m["e2e_latency_ms"]),
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
