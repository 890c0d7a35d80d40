# syntax=docker/dockerfile:1
#
# The `fleetlog` binary in a small runtime image:
#
#   docker build -t fleetlog .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=postgres://... -e ADMIN_TOKEN=... fleetlog
#
# The locked dependencies need Rust 1.89 or newer (the workspace's rust-version says so too).
# Set RUST_VERSION to build with another toolchain.
ARG RUST_VERSION=1.89

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# The caches keep downloaded crates and build output between image builds; the binary is copied
# out of the cached target folder in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p fleetlog \
    && install -m 0755 target/release/fleetlog /usr/local/bin/fleetlog

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 fleetlog \
    && useradd --system --uid 10001 --gid fleetlog --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin fleetlog
COPY --from=builder /usr/local/bin/fleetlog /usr/local/bin/fleetlog
USER fleetlog:fleetlog
ENV LISTEN_ADDRESS=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["fleetlog"]
CMD ["serve"]
