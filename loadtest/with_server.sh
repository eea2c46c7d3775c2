#!/usr/bin/env bash
# Starts `studyroom --dev` (plus $SERVER_ARGS), waits for /healthz, runs the given
# studyroom-loadtest command with `--server-pid` of that server appended, stops the server.
# For benchmarks on one machine, inside the loopback-only namespace:
#   bash scripts/netns_run.sh bash loadtest/with_server.sh \
#     target/release/studyroom-loadtest meeting --rooms 10 --seconds 15 --json m.json
# Env: STUDYROOM_BIN (default: next to the generator binary), SERVER_ARGS (after the
# per-address limits turned off, LOAD_GENERATOR_LIMITS in scripts/lib/dev-server.sh; a
# flag given again in SERVER_ARGS wins).
set -euo pipefail
if [ "$#" -eq 0 ]; then
  echo "usage: $0 STUDYROOM-LOADTEST-BIN SCENARIO [ARGS...]" >&2
  exit 2
fi
BIN=${STUDYROOM_BIN:-$(dirname "$1")/studyroom}
log=$(mktemp)
# shellcheck source=../scripts/lib/dev-server.sh
source "$(dirname "$0")/../scripts/lib/dev-server.sh"
trap 'stop_dev_server; rm -f "$log"' EXIT
# shellcheck disable=SC2086
start_dev_server "$BIN" "$log" "${LOAD_GENERATOR_LIMITS[@]}" ${SERVER_ARGS:-}
rc=0
"$@" --server-pid "$DEV_SERVER_PID" || rc=$?
# CPU per server thread over the whole run (ramp included): how evenly the shard threads
# share a room that spans them (ARCHITECTURE.md "A room across shards").
python3 - "$DEV_SERVER_PID" <<'PY' || true
import os, sys
pid, tick = sys.argv[1], os.sysconf("SC_CLK_TCK")
rows, total = {}, 0.0
for t in os.listdir(f"/proc/{pid}/task"):
    try:
        stat = open(f"/proc/{pid}/task/{t}/stat").read()
    except OSError:
        continue
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    f = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(f[11]) + int(f[12])) / tick
    total += cpu
    key = name if name.startswith("sfu-shard") else "other threads"
    rows[key] = rows.get(key, 0.0) + cpu
print("server CPU by thread (s): " + ", ".join(
    f"{k} {v:.1f} ({100 * v / total:.0f} %)" for k, v in sorted(rows.items())) + f"; total {total:.1f}")
PY
if [ "$rc" -ne 0 ]; then
  echo "---- studyroom log (tail) ----" >&2
  tail -20 "$log" >&2
fi
exit "$rc"
