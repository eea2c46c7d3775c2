#!/usr/bin/env bash
# Short runs of every cargo-fuzz target (FUZZ_SECONDS each, default 8), from their seed
# corpora plus whatever corpus an earlier run left; a crash fails the run and leaves its
# input in <crate>/fuzz/artifacts/<target>/. Long runs and their figures: FUZZING.md.
# Needs cargo-fuzz (scripts/install-deps.sh installs it); the stable toolchain takes
# cargo-fuzz's nightly flags with RUSTC_BOOTSTRAP=1.
#   bash scripts/fuzz-smoke.sh            # all targets
#   FUZZ_SECONDS=60 bash scripts/fuzz-smoke.sh signaling/socketio_payload
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${FUZZ_SECONDS:-8}
export RUSTC_BOOTSTRAP=1
ALL="sfu/stun_username sfu/datagram sfu/publish_sdp sfu/keyframe sfu/red sfu/vp9_descriptor turn/turn_message
signaling/socketio_payload signaling/nats_command loadtest/sio_frame"
targets=${*:-$ALL}
for t in $targets; do
  crate=${t%%/*} name=${t#*/}
  corpus=$ROOT/$crate/fuzz/corpus/$name
  mkdir -p "$corpus"
  # Seeds kept in the tree (if any) join the working corpus.
  if [ -d "$ROOT/$crate/fuzz/seeds/$name" ]; then cp -n "$ROOT/$crate/fuzz/seeds/$name"/* "$corpus"/ 2>/dev/null || true; fi
  echo "== fuzz $t (${SECONDS_EACH}s)"
  out=$(cd "$crate" && cargo fuzz run -O "$name" "$corpus" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 2>&1) || {
    echo "$out" | tail -40
    echo "FAIL fuzz $t: crash (input under $crate/fuzz/artifacts/$name/)" >&2
    exit 1
  }
  echo "$out" | grep -E '^Done [0-9]+ runs' || true
done
echo "fuzz smoke: $(echo "$targets" | wc -w) targets, no crash"
