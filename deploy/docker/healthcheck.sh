#!/bin/bash
# Container health probe for the studyroom image: GET /healthz (or the path given as $1)
# on 127.0.0.1 and succeed only on an HTTP 200 status line.
#
# Why bash and not curl: the runtime image stays package-free (no apt layer, no libcurl
# and its TLS stack to patch); bash is already in debian:bookworm-slim and its /dev/tcp
# redirection is enough for one plain-HTTP request to ourselves. Docker's HEALTHCHECK
# --timeout bounds it; `read -t` bounds it too when run by hand.
#
# The port follows STUDYROOM_HTTP (ADDR:PORT, as the server reads it), default 5002.
set -euo pipefail

path=${1:-/healthz}
http=${STUDYROOM_HTTP:-0.0.0.0:5002}
port=${http##*:}
case $port in
  '' | *[!0-9]*) echo "healthcheck: cannot read a port from STUDYROOM_HTTP=$http" >&2; exit 2 ;;
esac

{ exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null ||
  { echo "healthcheck: nothing listens on 127.0.0.1:$port" >&2; exit 1; }
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
IFS= read -r -t 3 status <&3 || { echo "healthcheck: no answer on port $port" >&2; exit 1; }
status=${status%$'\r'}
if [[ $status == HTTP/1.[01]\ 200\ * ]]; then
  exit 0
fi
echo "healthcheck: GET $path answered '$status'" >&2
exit 1
