#!/usr/bin/env bash
# TURN relay benchmark, run in a loopback-only netns: the same turnutils_uclient load
# against coturn (turnserver) and against `studyroom turn`, one after the other, reporting
# relayed throughput, loss and server CPU seconds (utime+stime from /proc) for each.
# Then the in-process hand-over: uclient relays to the SFU's media port of a full
# `studyroom --dev` with and without --turn-no-handover; server CPU per relayed packet.
#
# Usage: bash scripts/bench-turn.sh [CLIENTS] [MSGS] [LEN] [INTERVAL_MS]
#   env STUDYROOM_BIN (default: $CARGO_TARGET_DIR/release/studyroom or target/release/studyroom)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${IN_NETNS:-}" ]; then
  exec env IN_NETNS=1 bash scripts/netns_run.sh bash "$0" "$@"
fi
M=${1:-50}; N=${2:-1000}; L=${3:-1200}; Z=${4:-10}
BIN=${STUDYROOM_BIN:-${CARGO_TARGET_DIR:-target}/release/studyroom}
TMP=$(mktemp -d)
HZ=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
wait_udp() { for _ in $(seq 100); do ss -lun | grep -q "127.0.0.1:$1 \|0.0.0.0:$1 " && return 0; sleep 0.1; done; return 1; }

# load NAME PID [uclient extra args...]: prints one result line.
load() {
  local name=$1 pid=$2; shift 2
  local c0 c1 t0 t1
  c0=$(cpu "$pid"); t0=$(date +%s.%N)
  turnutils_uclient -u user -w pass -m "$M" -n "$N" -l "$L" -z "$Z" -c -X "$@" 127.0.0.1 > "$TMP/$name.log" 2>&1 || true
  t1=$(date +%s.%N); c1=$(cpu "$pid")
  local tot sent recv lost
  tot=$(grep -E 'tot_send_msgs=[0-9]+, tot_recv_msgs=[0-9]+$' "$TMP/$name.log" | tail -1 | sed 's/.*tot_send_msgs=\([0-9]*\), tot_recv_msgs=\([0-9]*\)/\1 \2/')
  sent=${tot% *}; recv=${tot#* }
  lost=$(grep -oE 'Total lost packets [0-9]+ \([0-9.]+%\)' "$TMP/$name.log" | tail -1 || true)
  local wall cpus
  wall=$(echo "$t1 - $t0" | bc -l); cpus=$(echo "($c1 - $c0) / $HZ" | bc -l)
  printf '%-28s sent=%-7s recv=%-7s wall=%6.2fs server_cpu=%6.2fs cpu_per_1k_relayed=%6.3fs  %s\n' \
    "$name" "${sent:-?}" "${recv:-?}" "$wall" "$cpus" \
    "$(echo "$cpus * 1000 / (${sent:-1} + ${recv:-0})" | bc -l)" "$lost"
}

# load_udp_tcp NAME PID: once the server listens on 3478, the client-to-client load over
# UDP, then over TCP; then stops the server.
load_udp_tcp() {
  local name=$1 pid=$2
  wait_udp 3478
  load "$name-udp" "$pid" -y -e 127.0.0.1
  load "$name-tcp" "$pid" -y -t -e 127.0.0.1
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "== load: $M clients x $N messages of $L bytes every $Z ms, client-to-client (-y) through the relay, UDP"
turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --listening-port=3478 \
  --lt-cred-mech --user=user:pass --realm=bench --fingerprint --no-tls --no-dtls --no-cli \
  --allow-loopback-peers --min-port=49160 --max-port=49999 --log-file=stdout --simple-log \
  > "$TMP/coturn.log" 2>&1 &
load_udp_tcp coturn $!

"$BIN" turn --turn-listen 127.0.0.1:3478 --node-ip 127.0.0.1 --turn-user user:pass \
  --turn-allow-peer 127.0.0.0/8 --turn-user-quota 100000 --turn-relay-ports 49160-49999 \
  > "$TMP/studyroom-turn.log" 2>&1 &
load_udp_tcp studyroom $!

echo "== hand-over: uclient relays to the SFU's media port 40000 of a full studyroom --dev (the SFU drops the payload; one direction)"
for mode in handover no-handover; do
  extra=()
  [ "$mode" = no-handover ] && extra=(--turn-no-handover)
  "$BIN" --dev --turn-user user:pass --turn-user-quota 100000 "${extra[@]}" > "$TMP/studyroom-$mode.log" 2>&1 &
  SP=$!
  wait_udp 3478
  sleep 0.5
  load "sfu-$mode" "$SP" -e 127.0.0.1 -r 40000
  kill "$SP"; wait "$SP" 2>/dev/null || true
done
echo "(logs in $TMP)"
