#!/bin/bash
# Entry point of the Dockerfile's `dev` stage: build `studyroom`, run it, and whenever a
# source file changes rebuild it and restart the server (docker-compose.dev.yml mounts the
# repository at /src, read-only).
#
# Why a polling loop and not cargo-watch or inotify: it needs nothing beyond the rust
# image, and polling sees edits on every kind of bind mount (inotify events do not cross
# some Docker Desktop file-sharing layers). A scan of the tree every DEV_WATCH_INTERVAL
# seconds (default 2) costs a few milliseconds.
#
# A failed build keeps the running server (if any) and waits for the next change.
# Arguments are passed to `studyroom` (the dev stage's CMD gives `--dev`).
# SIGTERM / SIGINT stop the server and then this loop.
set -euo pipefail

src=${DEV_WATCH_SRC:-/src}
interval=${DEV_WATCH_INTERVAL:-2}
bin=${CARGO_TARGET_DIR:-$src/target}/debug/studyroom
# A change under any of these triggers a rebuild: the workspace manifests and the crates
# in the binary, with their embedded web assets (signaling/web). Build output, fuzzing and
# node_modules folders are skipped, not even descended into.
watched=(Cargo.toml Cargo.lock sfu signaling turn room-state)

server=
builder=
stamp=$(mktemp)
# The server runs from a copy, so a build never has to replace a running executable.
run_dir=$(mktemp -d)

log() { echo "dev-watch: $*" >&2; }

stop_server() {
  if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  server=
}

on_signal() {
  log "stopping"
  [[ -n $builder ]] && kill -TERM "$builder" 2>/dev/null
  stop_server
  rm -rf "$stamp" "$run_dir"
  exit 0
}
trap on_signal TERM INT

build() {
  log "building"
  # Debug build: a rebuild after an edit takes seconds, not the minutes of --release.
  # In the background, so that a stop signal is handled at once, not after the build.
  (cd "$src" && exec cargo build --locked --bin studyroom) &
  builder=$!
  local rc=0
  wait "$builder" || rc=$?
  builder=
  return "$rc"
}

start_server() {
  cp "$bin" "$run_dir/studyroom"
  "$run_dir/studyroom" "$@" &
  server=$!
  log "server started (pid $server)"
}

changed() {
  local list
  list=$(cd "$src" && find "${watched[@]}" \
    \( -name target -o -name fuzz -o -name node_modules \) -prune \
    -o -type f -newer "$stamp" -print -quit 2>/dev/null) || true
  [[ -n $list ]]
}

cd "$src"
touch "$stamp"
if build; then
  start_server "$@"
else
  log "build failed; waiting for a change"
fi

while true; do
  sleep "$interval" &
  wait $! || true
  if [[ -n $server ]] && ! kill -0 "$server" 2>/dev/null; then
    wait "$server" 2>/dev/null && rc=0 || rc=$?
    log "server exited (status $rc); waiting for a change"
    server=
  fi
  changed || continue
  touch "$stamp"
  if build; then
    stop_server
    start_server "$@"
  else
    log "build failed; keeping the previous server"
  fi
done
