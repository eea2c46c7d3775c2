#!/usr/bin/env bash
# Starts `studyroom --dev` (plus $SERVER_ARGS), waits for /healthz, runs the given
# studyroom-loadtest command with `--server-pid` of that server appended, stops the server.
# For benchmarks on one machine, inside the loopback-only namespace:
#   bash scripts/netns_run.sh bash loadtest/with_server.sh \
#     target/release/studyroom-loadtest meeting --rooms 10 --seconds 15 --json m.json
# Env: STUDYROOM_BIN (default: next to the generator binary), SERVER_ARGS.
set -euo pipefail
if [ "$#" -eq 0 ]; then
  echo "usage: $0 STUDYROOM-LOADTEST-BIN SCENARIO [ARGS...]" >&2
  exit 2
fi
BIN=${STUDYROOM_BIN:-$(dirname "$1")/studyroom}
log=$(mktemp)
# shellcheck disable=SC2086
"$BIN" --dev ${SERVER_ARGS:-} >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT
for _ in $(seq 100); do
  curl -sf -o /dev/null http://127.0.0.1:5002/healthz && break
  sleep 0.1
done
rc=0
"$@" --server-pid "$pid" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "---- studyroom log (tail) ----" >&2
  tail -20 "$log" >&2
fi
exit "$rc"
