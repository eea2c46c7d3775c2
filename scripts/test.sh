#!/usr/bin/env bash
# The whole test suite. Installs what the tests need on a fresh Debian machine (root),
# then runs: formatting and lints, the Rust tests (deterministic media-core tests among
# them), a few seconds of every fuzz target, and the end-to-end tests (headless Chromium,
# socket.io-client, aiortc) inside a loopback-only network namespace against a real
# `studyroom` binary.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

bash scripts/install-deps.sh

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
echo "== cargo fmt / clippy"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check   # the fuzz crate is its own workspace
cargo clippy --workspace --all-targets -- -D warnings

echo "== client SDK types: studyroom.d.ts against the typed and React examples (tsc --noEmit)"
(cd tests/types && npx --no-install tsc --noEmit -p .)

echo "== cargo test"
cargo test --workspace

# Every cargo-fuzz target (found by `cargo fuzz list`) for a few seconds from its seeds,
# built without a sanitizer into $CARGO_TARGET_DIR/fuzz; a crash prints its input and fails.
# Build times and why no sanitizer here: FUZZING.md.
echo "== fuzz smoke: every fuzz target for 6 s (scripts/fuzz-smoke.sh)"
FUZZ_SECONDS=6 bash scripts/fuzz-smoke.sh

echo "== build the server for end-to-end tests"
cargo build --release -p studyroom-signaling -p studyroom-loadtest
export STUDYROOM_BIN=$CARGO_TARGET_DIR/release/studyroom

# Includes the TURN relay tests: turn-relay.test.js (coturn's turnutils_uclient, apt coturn)
# and browser-turn.test.js (relay-only Chromium over UDP/TCP/TLS).
echo "== end-to-end: socket.io-client and headless Chromium (loopback-only netns)"
bash scripts/netns_run.sh node --test --test-concurrency=1 tests/e2e/

echo "== interop: aiortc (an independent WebRTC stack) publishes and subscribes"
NETNS_LO2=1 bash scripts/netns_run.sh python3 tests/interop/aiortc_interop.py

echo "== load-test tools: k6 signaling scripts (smoke), WebRTC load generator scenarios (smoke), media fan-out (smoke)"
bash scripts/netns_run.sh bash scripts/k6-smoke.sh
bash scripts/netns_run.sh bash scripts/loadgen-smoke.sh
echo "== soak (3 min): churn with the server sampled every 10 s; nothing grows, idle returns to idle (scripts/soak.py)"
bash scripts/netns_run.sh bash scripts/soak-ci.sh
"$CARGO_TARGET_DIR"/release/studyroom-loadtest fanout --subscribers 5 --seconds 2 --video-pps 100 --port 45000 >/dev/null

echo "== deploy files: Dockerfile (hadolint), compose (docker-compose config, schema), k8s (schemas)"
bash scripts/validate-deploy.sh

echo "ALL TESTS PASSED"
