//! Prometheus metrics on their own listener (`--metrics`, default 127.0.0.1:9100).
//!
//! Every value is read at scrape time from where it already lives (the shards' counters,
//! the room store, the session table, service health), so nothing on the media path
//! touches a metrics library. The text exposition format is simple enough to write
//! directly; a registry crate would only copy these values into its own cells.

use std::fmt::Write;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use sfu::core::LATENCY_BUCKETS_US;

use crate::AppState;

/// The metrics router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/cluster", get(crate::cluster::cluster_view))
        .with_state(state)
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Render all metrics.
pub fn render(state: &AppState) -> String {
    let s = state.sfu().stats();
    let (rooms, participants, tracks) = {
        let store = state.store();
        let rooms = store.rooms();
        let mut p = 0usize;
        let mut t = 0usize;
        for r in &rooms {
            for x in store.participants(r) {
                p += 1;
                t += x.tracks.len();
            }
        }
        (rooms.len(), p, t)
    };
    let connections = state.sessions().by_sid.len();
    let mut o = String::with_capacity(4096);
    metric(
        &mut o,
        "studyroom_rooms",
        "gauge",
        "Rooms with participants.",
        rooms,
    );
    metric(
        &mut o,
        "studyroom_participants",
        "gauge",
        "Participants joined.",
        participants,
    );
    metric(
        &mut o,
        "studyroom_tracks",
        "gauge",
        "Published tracks.",
        tracks,
    );
    metric(
        &mut o,
        "studyroom_socketio_connections",
        "gauge",
        "Authenticated Socket.IO connections on /study.",
        connections,
    );
    metric(
        &mut o,
        "studyroom_draining",
        "gauge",
        "1 while the node drains before shutdown.",
        u8::from(state.draining()),
    );
    metric(
        &mut o,
        "studyroom_datagrams_received_total",
        "counter",
        "UDP datagrams received on the media ports.",
        s.datagrams_in,
    );
    metric(
        &mut o,
        "studyroom_datagrams_sent_total",
        "counter",
        "UDP datagrams sent from the media ports.",
        s.datagrams_out,
    );
    metric(
        &mut o,
        "studyroom_bytes_received_total",
        "counter",
        "Bytes received on the media ports.",
        s.bytes_in,
    );
    metric(
        &mut o,
        "studyroom_bytes_sent_total",
        "counter",
        "Bytes sent from the media ports.",
        s.bytes_out,
    );
    metric(
        &mut o,
        "studyroom_rtp_received_total",
        "counter",
        "RTP packets received from publishers.",
        s.rtp_in,
    );
    metric(
        &mut o,
        "studyroom_rtp_forwarded_total",
        "counter",
        "RTP packets forwarded to subscribers.",
        s.rtp_forwarded,
    );
    metric(
        &mut o,
        "studyroom_nacks_received_total",
        "counter",
        "NACKs received from subscribers.",
        s.nacks_received,
    );
    metric(
        &mut o,
        "studyroom_keyframe_requests_total",
        "counter",
        "Keyframe requests (PLI) sent to publishers.",
        s.keyframe_requests,
    );
    metric(
        &mut o,
        "studyroom_keyframe_requests_throttled_total",
        "counter",
        "Subscriber keyframe requests absorbed by throttling.",
        s.keyframe_requests_throttled,
    );
    metric(
        &mut o,
        "studyroom_ice_restarts_total",
        "counter",
        "ICE restarts of media transports (the client's network changed or ICE failed).",
        s.ice_restarts,
    );
    metric(
        &mut o,
        "studyroom_unroutable_datagrams_total",
        "counter",
        "Datagrams no transport claimed.",
        s.unroutable,
    );
    metric(
        &mut o,
        "studyroom_rejected_datagrams_total",
        "counter",
        "Datagrams a transport rejected as malformed.",
        s.rejected,
    );
    metric(
        &mut o,
        "studyroom_send_drops_total",
        "counter",
        "Datagrams dropped because a socket send buffer was full.",
        s.send_drops,
    );
    metric(
        &mut o,
        "studyroom_relayed_packets_out_total",
        "counter",
        "Forwarded packets handed to the other shards of a room spanning shards (one per packet and shard).",
        s.relayed_out,
    );
    metric(
        &mut o,
        "studyroom_relayed_packets_in_total",
        "counter",
        "Packets from another shard of a spanning room, fanned out here.",
        s.relayed_in,
    );
    metric(
        &mut o,
        "studyroom_relayed_packets_dropped_total",
        "counter",
        "Relayed packets for a producer the receiving shard no longer mirrors.",
        s.relayed_dropped,
    );
    metric(
        &mut o,
        "studyroom_subscriber_loss_ratio",
        "gauge",
        "Mean fraction of packets lost as reported by subscribers' receiver reports.",
        state.sfu().subscriber_loss().unwrap_or(0.0),
    );
    // Histogram.
    let name = "studyroom_forwarding_latency_seconds";
    let _ = writeln!(
        o,
        "# HELP {name} Time from reading a datagram to handing its fan-out to the kernel.\n# TYPE {name} histogram"
    );
    let mut cum = 0u64;
    for (i, b) in LATENCY_BUCKETS_US.iter().enumerate() {
        cum += s.latency_buckets[i];
        let _ = writeln!(o, "{name}_bucket{{le=\"{}\"}} {cum}", *b as f64 / 1e6);
    }
    cum += s.latency_buckets[LATENCY_BUCKETS_US.len()];
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {cum}");
    let _ = writeln!(o, "{name}_sum {}", s.latency_sum_us as f64 / 1e6);
    let _ = writeln!(o, "{name}_count {cum}");
    let f = &state.focus();
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    metric(
        &mut o,
        "studyroom_focus_events_total",
        "counter",
        "Focus events accepted from learners.",
        f.accepted.load(relaxed),
    );
    metric(
        &mut o,
        "studyroom_focus_events_dropped_total",
        "counter",
        "Focus events dropped because the NATS queue was full.",
        f.outbox.dropped.load(relaxed),
    );
    metric(
        &mut o,
        "studyroom_focus_events_pending",
        "gauge",
        "Focus events waiting for a JetStream acknowledgement.",
        f.pending(),
    );
    let (spilled, spill_bytes) = f.outbox.spilled();
    metric(
        &mut o,
        "studyroom_focus_events_spilled",
        "gauge",
        "Focus events waiting in the spill file (past --focus-queue-max in memory).",
        spilled,
    );
    metric(
        &mut o,
        "studyroom_focus_spill_bytes",
        "gauge",
        "Size of the focus spill file (bounded by --focus-spill-max-bytes).",
        spill_bytes,
    );
    let (delivered, rejected, retried, dropped, pending, oldest) = match state.webhook() {
        Some(w) => (
            w.counters.delivered.load(relaxed),
            w.counters.rejected.load(relaxed),
            w.counters.retried.load(relaxed),
            w.counters.dropped.load(relaxed),
            w.pending(),
            w.oldest_pending_secs(),
        ),
        None => (0, 0, 0, 0, 0, 0.0),
    };
    let _ = writeln!(
        o,
        "# HELP studyroom_webhook_deliveries_total Audit webhook POSTs by result: delivered (2xx), rejected (4xx, given up), retry (5xx, timeout, unreachable: tried again), dropped (spool bound reached).\n# TYPE studyroom_webhook_deliveries_total counter"
    );
    for (result, n) in [
        ("delivered", delivered),
        ("rejected", rejected),
        ("retry", retried),
        ("dropped", dropped),
    ] {
        let _ = writeln!(
            o,
            "studyroom_webhook_deliveries_total{{result=\"{result}\"}} {n}"
        );
    }
    metric(
        &mut o,
        "studyroom_webhook_pending",
        "gauge",
        "Audit webhook deliveries waiting (an event counts once per endpoint).",
        pending,
    );
    metric(
        &mut o,
        "studyroom_webhook_oldest_pending_seconds",
        "gauge",
        "Age of the oldest event waiting for the audit webhook.",
        oldest,
    );
    metric(
        &mut o,
        "studyroom_chat_messages_total",
        "counter",
        "Chat messages accepted and pushed to their room.",
        state.chat().sent.load(relaxed),
    );
    metric(
        &mut o,
        "studyroom_chat_messages_refused_total",
        "counter",
        "Chat messages refused (not a string, empty, too long, rate limit, chat off).",
        state.chat().refused.load(relaxed),
    );
    let l = &state.lifecycle();
    metric(
        &mut o,
        "studyroom_lifecycle_events_total",
        "counter",
        "Room lifecycle events stamped for NATS.",
        l.emitted(),
    );
    metric(
        &mut o,
        "studyroom_lifecycle_events_dropped_total",
        "counter",
        "Lifecycle events dropped because the NATS queue was full.",
        l.outbox.dropped.load(relaxed),
    );
    metric(
        &mut o,
        "studyroom_lifecycle_events_pending",
        "gauge",
        "Lifecycle events waiting for a JetStream acknowledgement.",
        l.outbox.pending(),
    );
    let c = &state.commands();
    let _ = writeln!(
        o,
        "# HELP studyroom_nats_commands_total Platform commands answered over NATS, by result.\n\
         # TYPE studyroom_nats_commands_total counter\n\
         studyroom_nats_commands_total{{result=\"ok\"}} {}\n\
         studyroom_nats_commands_total{{result=\"error\"}} {}",
        c.ok.load(relaxed),
        c.failed.load(relaxed)
    );
    let d = &state.departures();
    let _ = writeln!(
        o,
        "# HELP studyroom_participant_removals_total Participants removed from their room, by reason.\n\
         # TYPE studyroom_participant_removals_total counter"
    );
    for why in crate::departure::Departure::ALL {
        let _ = writeln!(
            o,
            "studyroom_participant_removals_total{{reason=\"{}\"}} {}",
            why.label(),
            d.removals(why)
        );
    }
    metric(
        &mut o,
        "studyroom_requests_rate_limited_total",
        "counter",
        "Requests refused with rate_limited (--request-rate / --request-burst per connection).",
        state.limits().requests.limited(),
    );
    metric(
        &mut o,
        "studyroom_connections_cut_total",
        "counter",
        "Connections disconnected for flooding requests past their rate limit.",
        state.limits().requests.cut(),
    );
    let (too_fast, too_many) = state.limits().addresses.refused_connects();
    let _ = writeln!(
        o,
        "# HELP studyroom_address_connections_refused_total Handshakes refused with too_many_connections: past the address's connect rate (--address-connect-rate/-burst) or its live-connection cap (--max-connections-per-address).\n\
         # TYPE studyroom_address_connections_refused_total counter\n\
         studyroom_address_connections_refused_total{{reason=\"rate\"}} {too_fast}\n\
         studyroom_address_connections_refused_total{{reason=\"live_cap\"}} {too_many}"
    );
    metric(
        &mut o,
        "studyroom_address_joins_refused_total",
        "counter",
        "Joins and resumes refused with rate_limited for the client address's join rate (--address-join-rate/-burst).",
        state.limits().addresses.refused_joins(),
    );
    metric(
        &mut o,
        "studyroom_address_limit_entries",
        "gauge",
        "Client addresses the per-address limits currently track (connected or busy in the last seconds).",
        state.limits().addresses.tracked(),
    );
    metric(
        &mut o,
        "studyroom_identity_replacements_refused_total",
        "counter",
        "Joins refused with rate_limited: the identity replaced its own session too often (--identity-replacements-per-minute).",
        state.limits().identities.refused(),
    );
    metric(
        &mut o,
        "studyroom_joins_refused_server_full_total",
        "counter",
        "Joins refused with server_full: the node holds --max-participants.",
        state.limits().node.refused(),
    );
    metric(
        &mut o,
        "studyroom_session_resumes_total",
        "counter",
        "Participants that continued on a new socket with `resume` after theirs dropped.",
        d.resumes(),
    );
    metric(
        &mut o,
        "studyroom_turn_allocations",
        "gauge",
        "Live allocations on the embedded TURN relay.",
        state
            .turn()
            .as_ref()
            .map_or(0, |t| t.relay.stats().allocations),
    );
    metric(
        &mut o,
        "studyroom_turn_allocations_rate_limited_total",
        "counter",
        "TURN Allocate requests refused with 508 by the pre-authentication limit per source address (--turn-allocate-rate/-burst).",
        state
            .turn()
            .as_ref()
            .map_or(0, |t| t.relay.stats().allocate_rate_limited),
    );
    let (to_sfu, from_sfu) = state
        .turn()
        .as_ref()
        .map_or((0, 0), |t| t.relay.handover_packets());
    metric(
        &mut o,
        "studyroom_turn_handover_to_sfu_total",
        "counter",
        "Relayed datagrams handed to the SFU in process (no socket round trip).",
        to_sfu,
    );
    metric(
        &mut o,
        "studyroom_turn_handover_from_sfu_total",
        "counter",
        "SFU datagrams handed to the TURN relay in process.",
        from_sfu,
    );
    if state.redis_url().is_some() {
        metric(
            &mut o,
            "studyroom_redis_up",
            "gauge",
            "1 when Redis answers PING.",
            u8::from(state.health().redis()),
        );
    }
    if let Some(c) = state.cluster() {
        let (nodes, unsynced) = c.gauges();
        metric(
            &mut o,
            "studyroom_cluster_nodes",
            "gauge",
            "Live nodes of the deployment in this node's last registry view.",
            nodes,
        );
        metric(
            &mut o,
            "studyroom_cluster_rooms_unsynced",
            "gauge",
            "Rooms of this node waiting to be written to Redis (grows while Redis is away).",
            unsynced,
        );
    }
    if state.nats_url().is_some() {
        metric(
            &mut o,
            "studyroom_nats_up",
            "gauge",
            "1 when connected to NATS.",
            u8::from(state.health().nats()),
        );
    }
    o
}

/// The media core's live object counts, one gauge each. Why: a soak run (scripts/soak.py)
/// must tell a leak of transports/consumers/timers from allocator retention, and these are
/// the per-structure counts that go back to 0 when every room has emptied.
async fn render_core_counts(state: &AppState, o: &mut String) {
    let c = state.sfu().counts().await;
    for (name, help, v) in [
        ("studyroom_sfu_rooms", "Rooms in the media core.", c.rooms),
        (
            "studyroom_sfu_participants",
            "Participants in the media core.",
            c.participants,
        ),
        (
            "studyroom_sfu_transports",
            "Live transports (peer connections) in the media core.",
            c.transports,
        ),
        (
            "studyroom_sfu_producers",
            "Live producers (incoming tracks).",
            c.producers,
        ),
        (
            "studyroom_sfu_consumers",
            "Live consumers (one subscriber's view of a producer).",
            c.consumers,
        ),
        (
            "studyroom_sfu_routes",
            "Routing-index entries (addresses + ICE ufrags).",
            c.routes,
        ),
        (
            "studyroom_sfu_timers",
            "Pending timers in the media core.",
            c.timers,
        ),
    ] {
        metric(o, name, "gauge", help, v);
    }
    // Signaling's per-connection and per-participant maps: what is left after everyone has
    // gone shows a map that misses its removal.
    let mut maps: Vec<(&str, usize)> = Vec::new();
    {
        let s = state.sessions();
        maps.push(("sessions_by_sid", s.by_sid.len()));
        maps.push(("sessions_by_participant", s.by_participant.len()));
        maps.push(("early_offers", s.early_offers.len()));
        maps.push(("joining", s.joining.len()));
        maps.extend(s.parked.sizes());
    }
    maps.push(("rate_limit_buckets", state.limits().requests.tracked()));
    let (learners, histories) = state.focus().sizes();
    maps.push(("focus_learners", learners));
    maps.push(("focus_histories", histories));
    let _ = writeln!(
        o,
        "# HELP studyroom_signaling_entries Entries in signaling's per-connection / per-participant maps.\n# TYPE studyroom_signaling_entries gauge"
    );
    for (name, n) in maps {
        let _ = writeln!(o, "studyroom_signaling_entries{{map=\"{name}\"}} {n}");
    }
    metric(
        o,
        "studyroom_tokio_alive_tasks",
        "gauge",
        "Live tokio tasks (per-connection tasks among them): flat when nothing leaks.",
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
    );
    if let Some(h) = crate::heap::stats() {
        metric(
            o,
            "studyroom_heap_allocated_bytes",
            "gauge",
            "Bytes of heap the process holds (jemalloc stats.allocated): live data only.",
            h.allocated,
        );
        metric(
            o,
            "studyroom_heap_resident_bytes",
            "gauge",
            "Bytes of heap pages resident (jemalloc stats.resident): live data, allocator metadata, pages not yet returned.",
            h.resident,
        );
        metric(
            o,
            "studyroom_heap_active_bytes",
            "gauge",
            "Bytes in pages holding live allocations (jemalloc stats.active); minus allocated: fragmentation.",
            h.active,
        );
        metric(
            o,
            "studyroom_heap_metadata_bytes",
            "gauge",
            "Bytes of the allocator's own metadata (jemalloc stats.metadata).",
            h.metadata,
        );
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = render(&state);
    render_core_counts(&state, &mut body).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
