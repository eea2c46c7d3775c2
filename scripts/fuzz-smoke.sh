#!/usr/bin/env bash
# Short runs of every cargo-fuzz target (FUZZ_SECONDS each, default 8): the test suite's
# fuzz step (scripts/test.sh) and a quick local check. Long runs and figures: FUZZING.md.
#
# Targets are found, not listed here: every target `cargo fuzz list` names in every fuzz
# crate (`fuzz/`, which holds all of them today, or a crate's own `<crate>/fuzz/`: a
# Cargo.toml there saying `cargo-fuzz = true`), so a new target runs without editing this
# file. A target is named <fuzz dir>/<target>: fuzz/datagram.
#
# Built without a sanitizer (`-s none`), optimized, with debug assertions and overflow
# checks (cargo-fuzz's default without `-O`); FUZZING.md says why. All fuzz crates build
# into one target dir, FUZZ_TARGET_DIR (default: $CARGO_TARGET_DIR/fuzz), which CI keeps
# between runs. Each target starts from its seeds (<fuzz dir>/seeds/<target>/, if any)
# plus whatever corpus an earlier run left in <fuzz dir>/corpus/<target>/.
#
# A crash, a timeout (one input running FUZZ_INPUT_TIMEOUT s, default 30) or running out of
# memory fails the run after every target ran; the failing input's path (under
# <fuzz dir>/artifacts/<target>/) and its bytes in base64 are printed, so a CI log is
# enough to reproduce it.
#
# Needs cargo-fuzz (scripts/install-deps.sh installs it); the stable toolchain takes
# cargo-fuzz's nightly flags with RUSTC_BOOTSTRAP=1.
#   bash scripts/fuzz-smoke.sh                      # all targets
#   FUZZ_SECONDS=60 bash scripts/fuzz-smoke.sh fuzz/socketio_payload fuzz/datagram
#   bash scripts/fuzz-smoke.sh --list               # what would run
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${FUZZ_SECONDS:-8}
INPUT_TIMEOUT=${FUZZ_INPUT_TIMEOUT:-30}
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-$CARGO_TARGET_DIR/fuzz}
# The same flags for build and run, or `cargo fuzz run` would build again.
BUILD_FLAGS=(-s none --target-dir "$FUZZ_TARGET_DIR")

cargo fuzz --version >/dev/null 2>&1 || { echo "fuzz smoke: cargo-fuzz missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
# Fuzz crates, by their folder relative to the root ("fuzz", "sfu/fuzz").
fuzz_dirs=()
for manifest in fuzz/Cargo.toml */fuzz/Cargo.toml; do
  if [[ -f $manifest ]] && grep -q '^cargo-fuzz *= *true' "$manifest"; then
    fuzz_dirs+=("$(dirname "$manifest")")
  fi
done
# Every target as <fuzz dir>/<name>.
all=()
for dir in "${fuzz_dirs[@]}"; do
  while read -r name; do
    if [[ -n $name ]]; then all+=("$dir/$name"); fi
  done < <(cargo fuzz list --fuzz-dir "$dir")
done
if [[ ${1:-} == --list ]]; then
  printf '%s\n' "${all[@]}"
  exit 0
fi
if [[ $# -gt 0 ]]; then targets=("$@"); else targets=("${all[@]}"); fi
[[ ${#targets[@]} -gt 0 ]] || { echo "fuzz smoke: no fuzz target found" >&2; exit 1; }

# Build each crate's targets in one cargo invocation (its targets compile in parallel).
declare -A built=()
for t in "${targets[@]}"; do
  dir=${t%/*}
  if [[ -n ${built[$dir]:-} ]]; then continue; fi
  [[ -f $dir/Cargo.toml ]] || { echo "fuzz smoke: no fuzz crate in $dir (target $t)" >&2; exit 1; }
  start=$(date +%s)
  cargo fuzz build "${BUILD_FLAGS[@]}" --fuzz-dir "$dir"
  built[$dir]=1
  echo "== fuzz build $dir: $(($(date +%s) - start)) s"
done

failed=()
for t in "${targets[@]}"; do
  dir=${t%/*} name=${t##*/}
  corpus=$ROOT/$dir/corpus/$name
  mkdir -p "$corpus"
  # Seeds kept in the tree (if any) join the working corpus.
  if [[ -d $dir/seeds/$name ]]; then
    cp -n "$dir/seeds/$name"/* "$corpus"/ 2>/dev/null || true
  fi
  echo "== fuzz $t (${SECONDS_EACH} s)"
  if out=$(cargo fuzz run "${BUILD_FLAGS[@]}" --fuzz-dir "$dir" "$name" "$corpus" -- \
      -max_total_time="$SECONDS_EACH" -timeout="$INPUT_TIMEOUT" -rss_limit_mb=2048 2>&1); then
    grep -E '^Done [0-9]+ runs' <<<"$out" || true
  else
    tail -n 60 <<<"$out"
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' <<<"$out" | tail -n 1)
    echo "FAIL fuzz $t: input ${input:-not written (see the output above)}" >&2
    if [[ -n $input && -f $input ]]; then
      echo "  input in base64 ($(stat -c %s "$input") bytes): $(head -c 65536 "$input" | base64 -w0)" >&2
      echo "  reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --fuzz-dir $dir $name $input" >&2
    fi
    failed+=("$t")
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz smoke: ${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz smoke: ${#targets[@]} targets, ${SECONDS_EACH} s each, no crash"
