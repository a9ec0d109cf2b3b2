# syntax=docker/dockerfile:1
# One image for everything ringkv runs in Kubernetes: ringkv-node (the storage
# node), ringkv (the CLI; the node's preStop hook runs `ringkv drain`) and
# ringkv-operator. Non-root (uid 10001); data lives in /var/lib/ringkv.
#
#   docker build -t ringkv:dev .
#   docker run --rm ringkv:dev ringkv --help

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# BuildKit caches keep rebuilds incremental; the binaries are copied out of the cache mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release \
      -p ringkv-node -p ringkv-client -p ringkv-operator --features ringkv-client/cli \
      --bin ringkv-node --bin ringkv --bin ringkv-operator \
 && mkdir -p /out \
 && cp target/release/ringkv-node target/release/ringkv target/release/ringkv-operator /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 ringkv \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/ringkv --shell /usr/sbin/nologin ringkv \
 && mkdir -p /var/lib/ringkv \
 && chown 10001:10001 /var/lib/ringkv
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/ringkv
ENV RINGKV_DATA_DIR=/var/lib/ringkv
VOLUME ["/var/lib/ringkv"]
# gossip (udp), internode + admin gRPC, client gRPC, HTTP (API, health, metrics)
EXPOSE 7000/udp 7001 7070 8080
CMD ["ringkv-node"]
