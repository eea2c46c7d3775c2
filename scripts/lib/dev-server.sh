# Sourced (not run) by the scripts that drive a throwaway `studyroom --dev`: the smoke runs
# (scripts/k6-smoke.sh, scripts/loadgen-smoke.sh), loadtest/with_server.sh and
# loadtest/join_baseline.sh (LOAD_GENERATOR_LIMITS only). Why one
# file: they all start the server the same way and must stop it however they exit.
#
# start_dev_server BIN LOG [ARGS...]: starts `BIN --dev ARGS...` in the background with its
# output in LOG, sets DEV_SERVER_PID, and waits up to 10 s for /healthz on the default port
# (the caller's own requests fail clearly if it never came up).
# stop_dev_server: stops it and waits for it (for the caller's EXIT trap).
#
# LOAD_GENERATOR_LIMITS: the flags that turn off the per-address and per-node limits, for
# servers driven by a load generator: it is one address standing for thousands of clients
# (k6 join_churn alone makes ~400 handshakes and joins a second, past the 200/s default),
# and a benchmark measures the node, not the limits (SECURITY.md has the defaults).
# shellcheck disable=SC2034 # used by the scripts that source this file
LOAD_GENERATOR_LIMITS=(--address-connect-rate 0 --address-join-rate 0 --max-connections-per-address 0 --max-participants 0)

start_dev_server() {
  local bin=$1 log=$2
  shift 2
  "$bin" --dev "$@" >"$log" 2>&1 &
  DEV_SERVER_PID=$!
  for _ in $(seq 100); do
    curl -sf -o /dev/null http://127.0.0.1:5002/healthz && return 0
    sleep 0.1
  done
}

stop_dev_server() {
  [ -n "${DEV_SERVER_PID:-}" ] || return 0
  kill "$DEV_SERVER_PID" 2>/dev/null || true
  wait "$DEV_SERVER_PID" 2>/dev/null || true
}
