# syntax=docker/dockerfile:1
# Minimal multi-stage image for studyroom (the operations issue adds the dev stage,
# healthcheck, labels and hardening).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin studyroom && cp target/release/studyroom /studyroom

FROM debian:bookworm-slim AS prod
COPY --from=build /studyroom /usr/local/bin/studyroom
USER 10001:10001
EXPOSE 5002/tcp 40000-40100/udp
ENV STUDYROOM_HTTP=0.0.0.0:5002
ENTRYPOINT ["/usr/local/bin/studyroom"]
