# syntax=docker/dockerfile:1
# studyroom container image. Three targets:
#   dev   - rust toolchain; docker-compose.dev.yml mounts the source at /src and
#           deploy/docker/dev-watch.sh rebuilds and restarts the server on every change.
#   build - `cargo build --release --bin studyroom`; the workspace's dependencies are built
#           in their own layer, so a source-only change rebuilds only our crates.
#   prod  - (default) debian slim, the binary and nothing else: UID 10001, no writes
#           anywhere (runs with a read-only root filesystem), HEALTHCHECK on /healthz.
#
#   docker build -t studyroom .                      # prod
#   docker compose -f docker-compose.yml -f docker-compose.dev.yml up   # dev
#
# Base images: the platform pins them by digest. debian's digest below is the one
# docker-library publishes for that dated tag. The rust image is pinned by its exact
# version (1.95.0, the toolchain the project builds and tests with) but not yet by digest:
# no authoritative digest for it could be looked up without a registry. Before a release
# build, resolve and append it (then keep both in step when bumping):
#   docker buildx imagetools inspect rust:1.95.0-bookworm --format '{{json .Manifest.Digest}}'
# and write FROM rust:1.95.0-bookworm@sha256:... in the two stages that use it.

# ---------------------------------------------------------------------------------------
FROM rust:1.95.0-bookworm AS dev
# Build output and the cargo registry live in volumes (see docker-compose.dev.yml); the
# directories exist here, owned by the unprivileged user, so fresh volumes inherit that.
ENV CARGO_TARGET_DIR=/target \
    STUDYROOM_HTTP=0.0.0.0:5002
RUN groupadd --gid 10001 studyroom \
    && useradd --uid 10001 --gid 10001 --create-home --shell /bin/bash studyroom \
    && mkdir -p /src /target "$CARGO_HOME/registry" \
    && chown 10001:10001 /target "$CARGO_HOME/registry"
COPY --chmod=0755 deploy/docker/dev-watch.sh /usr/local/bin/dev-watch
COPY --chmod=0755 deploy/docker/healthcheck.sh /usr/local/bin/studyroom-healthcheck
USER 10001:10001
WORKDIR /src
EXPOSE 5002/tcp 40000-40100/udp
ENTRYPOINT ["/usr/local/bin/dev-watch"]
CMD ["--dev"]

# ---------------------------------------------------------------------------------------
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
# 1. Dependencies only: the workspace manifests, the lock file and empty stand-ins for
#    every target the manifests declare. This layer is rebuilt only when a Cargo.toml or
#    Cargo.lock changes. A new workspace member, [[bin]] or [[bench]] needs a line here:
#    until it has one, cargo stops with "failed to load manifest" or "can't find ...".
COPY Cargo.toml Cargo.lock ./
COPY sfu/Cargo.toml sfu/
COPY signaling/Cargo.toml signaling/
COPY turn/Cargo.toml turn/
COPY room-state/Cargo.toml room-state/
COPY loadtest/Cargo.toml loadtest/
RUN set -eux; \
    mkdir -p sfu/src sfu/benches signaling/src turn/src room-state/src loadtest/src; \
    for lib in sfu signaling turn room-state; do \
        printf '//! placeholder for the dependency layer\n' > "$lib/src/lib.rs"; \
    done; \
    for main in signaling/src/main.rs loadtest/src/main.rs sfu/benches/forward.rs sfu/benches/join.rs; do \
        printf 'fn main() {}\n' > "$main"; \
    done; \
    cargo build --release --locked --bin studyroom; \
    rm -rf sfu signaling turn room-state loadtest
# 2. Our sources. COPY keeps the files' own mtimes, which can be older than the stand-ins
#    built above; touching them makes cargo rebuild our crates for sure. The debug line
#    tables (profile.release has debug = 1, for useful backtraces) stay, compressed:
#    about 127 MB -> 34 MB.
COPY . .
RUN set -eux; \
    find sfu signaling turn room-state loadtest -name '*.rs' -exec touch {} +; \
    cargo build --release --locked --bin studyroom; \
    objcopy --compress-debug-sections=zlib target/release/studyroom /studyroom; \
    /studyroom --version

# ---------------------------------------------------------------------------------------
FROM debian:bookworm-20260803-slim@sha256:abd67ffcfa541b485a3dff59865ab629aa048a6c613e639d36e7456b0b229241 AS prod
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="studyroom" \
      org.opencontainers.image.description="WebRTC SFU with Socket.IO signaling for study rooms" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-20260803-slim"
# A named user for `ps` and logs; the server itself never looks it up.
RUN groupadd --gid 10001 studyroom \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin studyroom
# CA roots for future TLS clients (rediss://, NATS over TLS) without an apt layer.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /studyroom /usr/local/bin/studyroom
COPY --chmod=0755 deploy/docker/healthcheck.sh /usr/local/bin/studyroom-healthcheck
ENV STUDYROOM_HTTP=0.0.0.0:5002 \
    STUDYROOM_METRICS=0.0.0.0:9100
USER 10001:10001
# 5002 HTTP + Socket.IO; 40000-40100 media; 3478 and 5349 TURN (embedded relay), 49160-49999 its relay ports;
# 9100 metrics (operations issue). Ports above 1024 only: no capability is needed.
EXPOSE 5002/tcp 40000-40100/udp 3478/udp 3478/tcp 5349/tcp 49160-49999/udp 9100/tcp
# bash /dev/tcp probe, see deploy/docker/healthcheck.sh for why not curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/studyroom-healthcheck", "/healthz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/studyroom"]
