#!/usr/bin/env bash
# Runs a command in a fresh network namespace where only loopback is up.
#
# Why: Chromium (and other WebRTC stacks) gather ICE candidates on every interface; on a
# normal host they would pick the machine's external address. Inside a loopback-only
# namespace the server (advertising 127.0.0.1) and the browsers can only reach each other,
# nothing leaves the machine, and every test may use the default ports.
#
# NETNS_LO2=1 additionally creates a veth pair (sr0 <-> sr1) inside the namespace with
# 127.0.0.2/32 on sr0, for stacks that skip loopback interfaces when gathering candidates
# (aiortc, libnice, GStreamer).
#
# Usage: [NETNS_LO2=1] bash scripts/netns_run.sh CMD [ARGS...]    (needs root / CAP_SYS_ADMIN)
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: [NETNS_LO2=1] $0 CMD [ARGS...]" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "$0: needs root (unshare -n creates a network namespace)" >&2
  exit 1
fi
for tool in unshare ip; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$0: '$tool' not found (Debian: apt-get install -y util-linux iproute2)" >&2
    exit 1
  fi
done

# The inner script runs inside the new namespace; "$@" is the command to run there.
exec unshare --net -- bash -c '
set -euo pipefail
ip link set dev lo up
if [ -n "${NETNS_LO2:-}" ]; then
  ip link add sr0 type veth peer name sr1
  ip link set dev sr0 addrgenmode none
  ip link set dev sr1 addrgenmode none
  ip addr add 127.0.0.2/32 dev sr0
  ip link set dev sr0 up
  ip link set dev sr1 up
fi
exec "$@"
' netns_run "$@"
