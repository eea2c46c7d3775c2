#!/usr/bin/env bash
# The k6 signaling smoke run against a fresh `studyroom --dev` (run it inside the
# loopback-only namespace: scripts/netns_run.sh bash scripts/k6-smoke.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${STUDYROOM_BIN:?set STUDYROOM_BIN}
log=$(mktemp)
"$BIN" --dev >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do
  curl -sf -o /dev/null http://127.0.0.1:5002/healthz && break
  sleep 0.1
done
if ! bash loadtest/k6/run_smoke.sh; then
  echo "---- studyroom log ----"; tail -50 "$log"
  exit 1
fi
