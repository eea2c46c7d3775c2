#!/usr/bin/env bash
# The soak's short form for CI (about 3 minutes): 5 rooms of 6 churning (stays of ~30 s, so
# every slot turns over several times), the server sampled every 10 s, then judged by
# scripts/soak.py: after the first half nothing grows (RSS, fds, threads, tokio tasks) and,
# 25 s after everyone left, every live object and signaling map is back to 0 and RSS is
# within the bound of its idle start. The 1-hour form and its figures: BENCHMARKS.md "Soak".
# Run inside the loopback-only namespace:
#   STUDYROOM_BIN=target/release/studyroom bash scripts/netns_run.sh bash scripts/soak-ci.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${STUDYROOM_BIN:?set STUDYROOM_BIN}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
python3 scripts/soak.py --duration 130 --rooms 5 --per-room 6 --stay 30 --ramp 10 \
  --idle-before 10 --idle-after 25 --csv "$out/soak.csv" \
  --max-rss-slope 4 --max-idle-rss-growth 16
