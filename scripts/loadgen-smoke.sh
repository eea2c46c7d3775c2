#!/usr/bin/env bash
# Smoke run of the WebRTC load generator (`studyroom-loadtest meeting|lecture|churn|
# proctoring`) against a fresh `studyroom --dev`: a few seconds each, small counts. It
# asserts that the generator works, not speed: every join acked, every leave acked, no
# participant error, every receiver got media (and, outside churn, every offered stream
# carried media), proctors got every focus event, the server's metrics and /proc figures
# were read; with 5 % of datagrams dropped towards the listeners (test impairment), NACK +
# retransmission repairs the video (audio is not retransmitted, as in browsers); with
# simulcast, receivers change layers only at key frames (never interleaved); after a network
# switch (one participant's peers move to new UDP ports and restart ICE), video from and to
# it resumes, it stays the same participant (no participantLeft, same id in the others'
# offers, same track ids) and the server counted both restarts. Run it inside the loopback-only namespace:
#   STUDYROOM_BIN=target/release/studyroom LOADTEST_BIN=target/release/studyroom-loadtest \
#     bash scripts/netns_run.sh bash scripts/loadgen-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${STUDYROOM_BIN:?set STUDYROOM_BIN}
LG=${LOADTEST_BIN:-$(dirname "$BIN")/studyroom-loadtest}
OUT=$(mktemp -d)
log=$OUT/studyroom.log
# shellcheck source=lib/dev-server.sh
source scripts/lib/dev-server.sh
trap 'stop_dev_server; rm -rf "$OUT"' EXIT
start_dev_server "$BIN" "$log" --allow-impairment
pid=$DEV_SERVER_PID

# run NAME ARGS...: runs the generator, then checks its JSON summary.
run() {
  local name=$1; shift
  echo "== loadgen $name: studyroom-loadtest $*"
  if ! timeout 120 "$LG" "$@" --server-pid "$pid" --json "$OUT/$name.json" >"$OUT/$name.txt" 2>"$OUT/$name.err"; then
    cat "$OUT/$name.txt" "$OUT/$name.err"
    echo "---- studyroom log ----"; tail -30 "$log"
    echo "FAIL $name: the generator exited non-zero" >&2
    return 1
  fi
  python3 - "$OUT/$name.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
j, m = s["joins"], s["media_result"]
name = s["scenario"]
problems = []
if j["attempted"] == 0:
    problems.append("no join attempted")
if j["acked"] != j["attempted"]:
    problems.append(f"joins acked {j['acked']} != attempted {j['attempted']}")
if j["errors"]:
    problems.append(f"{j['errors']} participant errors: {j['first_errors']}")
if j["left_ok"] != j["attempted"]:
    problems.append(f"leaves acked {j['left_ok']} != {j['attempted']}")
if m["published"] != m["publishers"]:
    problems.append(f"published {m['published']} != publishers {m['publishers']}")
want_receivers = {
    "meeting": s["rooms"] * s["per_room"],
    "lecture": s["rooms"] * s["per_room"],
    "proctoring": s["rooms"] * (s["per_room"] + 1),
}.get(name)
if want_receivers is not None and m["receivers"] != want_receivers:
    problems.append(f"receivers {m['receivers']} != {want_receivers}")
if m["receivers"] == 0 or m["receivers_with_media"] != m["receivers"]:
    problems.append(f"receivers with media {m['receivers_with_media']} of {m['receivers']}")
if name != "churn" and m["streams_with_media"] != m["streams_offered"]:
    problems.append(f"streams with media {m['streams_with_media']} of {m['streams_offered']} offered")
if m["packets_received"] == 0 or m["e2e_latency_ms"]["n"] == 0:
    problems.append("no stamped packet received")
if name == "proctoring":
    f = s["focus"]
    if f["sent"] == 0 or f["acked"] != f["sent"] or f["received_by_proctors"] != f["acked"]:
        problems.append(f"focus events: {f}")
if s.get("impair_loss_pct"):
    if m["video_loss"] > 0.01:
        problems.append(f"video loss after NACK/RTX {m['video_loss']:.4f} with {s['impair_loss_pct']} % dropped")
    if m["audio_loss"] < 0.01:
        problems.append(f"audio loss {m['audio_loss']:.4f}: the impairment did not happen")
    if not s["server_window"]["nacks_received"]:
        problems.append("the server received no NACK")
if s["media"].get("simulcast"):
    if m["simulcast_layer_switches_mid_frame"]:
        problems.append(f"simulcast layers interleaved: {m['simulcast_layer_switches_mid_frame']} mid-frame layer changes")
if name == "switch":
    w = s.get("switch") or {}
    if not w.get("performed") or w.get("error"):
        problems.append(f"switch not performed: {w.get('error')}")
    ack = w.get("restart_ice_ack")
    if not (isinstance(ack, dict) and ack.get("ok") is True):
        problems.append(f"restartIce ack: {ack}")
    if not w.get("watchers"):
        problems.append("no watcher gap measured")
    for row in w.get("watchers", []) + w.get("own_receive", []):
        if row["gap_ms"] is None:
            problems.append(f"no gap measured for {row['from']} -> participant {row['pid']}")
        elif not row["resumed"] or row["packets_after_gap"] < 30:
            problems.append(f"video {row['from']} -> participant {row['pid']} did not resume after the switch "
                            f"(gap {row['gap_ms']:.0f} ms, {row['packets_after_gap']} packets after it)")
    if w.get("participant_left_in_window"):
        problems.append(f"participantLeft during the window: {w['participant_left_in_window']}")
    if w.get("same_participant_in_offers") is not True:
        problems.append("the others' offers no longer map the switcher's video to its participant id")
    if w.get("track_ids_kept") is not True:
        problems.append(f"the restart publish changed the track ids: {w.get('track_ids_kept')}")
    for pc in ("publisher", "subscriber"):
        if w.get("ice_back_ms", {}).get(pc) is None:
            problems.append(f"the switcher's {pc} connection did not reconnect through an ICE restart")
    if (s["server_window"].get("ice_restarts") or 0) < 2:
        problems.append(f"studyroom_ice_restarts_total rose by {s['server_window'].get('ice_restarts')}, want >= 2")
    if not problems:
        print(f"ok switch: watcher gap max {w['max_watcher_gap_ms']:.0f} ms, switcher's own max "
              f"{w['max_own_gap_ms']:.0f} ms, ICE back pub/sub {w['ice_back_ms']['publisher']:.0f}/"
              f"{w['ice_back_ms']['subscriber']:.0f} ms")
srv, sw = s["server"], s["server_window"]
if not srv or srv["cpu_seconds"] is None or not srv["peak_rss_mib"]:
    problems.append(f"server /proc figures missing: {srv}")
if not sw["forwarded_packets"]:
    problems.append(f"no forwarded packets in the server's metrics: {sw}")
if problems:
    print(f"FAIL {name}: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"ok {name}: {j['acked']} joins acked (p95 {j['join_ack_ms']['p95']:.1f} ms), "
      f"{m['receivers_with_media']}/{m['receivers']} receivers got media, "
      f"{m['streams_with_media']}/{m['streams_offered']} streams, loss {m['loss']*100:.2f} %, "
      f"(video {m['video_loss']*100:.2f} %, audio {m['audio_loss']*100:.2f} %), "
      f"e2e p50 {m['e2e_latency_ms']['p50']} ms")
PY
}

fail=0
run meeting meeting --rooms 1 --per-room 6 --ramp 50 --seconds 2 || fail=1
run meeting-simulcast meeting --rooms 1 --per-room 4 --ramp 50 --seconds 2 --simulcast 3 || fail=1
run lecture lecture --rooms 1 --per-room 8 --ramp 50 --seconds 2 || fail=1
run churn churn --rooms 2 --per-room 3 --ramp 50 --stay 2.5 --seconds 5 || fail=1
run lecture-impaired lecture --rooms 1 --per-room 4 --ramp 50 --seconds 3 --impair-loss 5 || fail=1
run proctoring proctoring --rooms 1 --per-room 3 --ramp 50 --focus-interval 0.5 --seconds 2 || fail=1
run switch switch --participants 3 --ramp 50 --seconds 4 --switch-at 1.5 || fail=1

# Rooms spanning both shards (ARCHITECTURE.md "A room across shards"): the same checks with
# a server that spreads a room over its two shards from its third participant on, so
# packets, key-frame requests, simulcast and departures cross between shard threads.
stop_dev_server
start_dev_server "$BIN" "$log" --shards 2 --room-span-after 2
pid=$DEV_SERVER_PID
run span-lecture lecture --rooms 1 --per-room 8 --ramp 50 --seconds 2 || fail=1
run span-meeting-simulcast meeting --rooms 1 --per-room 6 --ramp 50 --seconds 2 --simulcast 3 || fail=1
run span-churn churn --rooms 1 --per-room 6 --ramp 50 --stay 2.5 --seconds 5 || fail=1
relayed=$(curl -sf http://127.0.0.1:9100/metrics | awk '$1 == "studyroom_relayed_packets_in_total" {print $2}')
if [ "${relayed:-0}" -le 0 ]; then
  echo "FAIL span: no packet was relayed between shards (studyroom_relayed_packets_in_total=${relayed:-missing})" >&2
  fail=1
else
  echo "ok span: $relayed packets relayed between shards"
fi
if [ "$fail" -ne 0 ]; then
  echo "loadgen smoke: FAILED" >&2
  exit 1
fi
echo "loadgen smoke: 10 runs passed"
