#!/usr/bin/env bash
# What an idle node keeps after a crowd: starts `studyroom --dev`, samples /metrics (heap
# counters) and /proc (RSS, per-mapping RSS) idle, runs a 204-participant churn, and samples
# again 20 s and 60 s after the last participant left. BENCHMARKS.md section 12 has runs.
#
#   STUDYROOM_BIN=target/release/studyroom bash scripts/netns_run.sh bash scripts/idle-memory.sh OUT_DIR
#
# Env: SECONDS_OF_CHURN (120), MALLOC_CONF (passed to jemalloc as _RJEM_MALLOC_CONF).
# The allocator's full statistics at idle land in OUT_DIR/server.log (debug target
# studyroom::heap).
set -euo pipefail
out=${1:?usage: idle-memory.sh OUT_DIR}
mkdir -p "$out"
bin=${STUDYROOM_BIN:?set STUDYROOM_BIN}
lg=${LOADTEST_BIN:-$(dirname "$bin")/studyroom-loadtest}
_RJEM_MALLOC_CONF="${MALLOC_CONF:-}" STUDYROOM_LOG="info,studyroom::heap=debug" \
  "$bin" --dev > "$out/server.log" 2>&1 &
sp=$!
trap 'kill $sp 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:5002/healthz > /dev/null && break; sleep 0.2; done
here=$(cd "$(dirname "$0")" && pwd)
sample() {
  echo "== $1"
  curl -s http://127.0.0.1:9100/metrics | grep -E '^studyroom_heap|^studyroom_participants ' || true
  grep VmRSS "/proc/$sp/status"
  python3 "$here/lib/smaps_summary.py" "$sp"
}
sample "idle before" > "$out/samples.txt"
"$lg" churn --rooms 34 --per-room 6 --stay 30 --ramp 5 --seconds "${SECONDS_OF_CHURN:-120}" \
  --video-kbps 100 --fps 10 --server-pid "$sp" > "$out/churn.txt" 2>&1
sleep 20
sample "idle, 20 s after the last left" >> "$out/samples.txt"
sleep 40
sample "idle, 60 s after the last left" >> "$out/samples.txt"
cat "$out/samples.txt"
