#!/usr/bin/env bash
# The k6 signaling smoke run against a fresh `studyroom --dev` (run it inside the
# loopback-only namespace: scripts/netns_run.sh bash scripts/k6-smoke.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${STUDYROOM_BIN:?set STUDYROOM_BIN}
# shellcheck source=lib/dev-server.sh
source scripts/lib/dev-server.sh
log=$(mktemp)
trap stop_dev_server EXIT
start_dev_server "$BIN" "$log" "${LOAD_GENERATOR_LIMITS[@]}"
if ! bash loadtest/k6/run_smoke.sh; then
  echo "---- studyroom log ----"; tail -50 "$log"
  exit 1
fi
