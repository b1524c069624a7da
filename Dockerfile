# gigachat-proxy as one static binary in an otherwise empty image: for
# `docker run` on any VPS, Railway, Render, Fly, Coolify and Yandex Cloud
# Serverless Containers. Build: `docker build -t gigachat-proxy .`
# Run:   docker run -p 3000:3000 -e GIGACHAT_CREDENTIALS=... gigachat-proxy
# No key is baked in: it is passed at run time. Without one the server
# answers from its built-in emulator (health shows "upstream":"emulator").
# .ci/container-check builds this same file offline (the build stage swapped
# for a binary built on the host the same way) and drives the image.

ARG RUST_VERSION=1.95

# --- build: a static (musl) binary, so the runtime image needs no libc ----
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# .dockerignore admits only the sources the build needs (no target/, .git,
# .env or key files).
COPY . .
# `uname -m`: the same file builds x86_64 and arm64 (aarch64) images. The C
# parts (ring, mimalloc) must be compiled against musl too: Debian names
# its compiler wrapper musl-gcc on every architecture.
RUN target="$(uname -m)-unknown-linux-musl" \
    && rustup target add "$target" \
    && env "CC_${target}=musl-gcc" \
        cargo build --release --locked --target "$target" --bin gigachat-proxy \
    && mkdir -p /out \
    && cp "target/$target/release/gigachat-proxy" /out/gigachat-proxy

# --- runtime: nothing but the binary --------------------------------------
# No shell, package manager or libc to attack or patch. The TLS roots
# GigaChat needs (the Russian Trusted Root CA, plus the public web roots)
# are compiled into the binary, and the HEALTHCHECK is the binary itself.
FROM scratch
COPY --from=build /out/gigachat-proxy /gigachat-proxy
# Numeric (scratch has no /etc/passwd), so `runAsNonRoot` policies can
# verify it; 65532 is the conventional "nonroot" id.
USER 65532:65532
# Platforms that route to a port of their choosing (Railway, Render,
# Yandex Serverless Containers) set PORT, which the server honours. An
# image does not know who will reach it, so it takes a public
# deployment's defaults (rate limits, ownership, the public-page policy,
# same-origin CORS), not the open ones of a developer's `cargo run`.
ENV HOST=0.0.0.0 \
    PORT=3000 \
    GIGACHAT_PROXY_PLATFORM=container
EXPOSE 3000
# Asks the server for /api/gigachat-health at HOST:PORT (never an upstream
# call, so it costs no GigaChat quota); exit 0 on 200.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["/gigachat-proxy", "--check-health"]
# SIGTERM starts a graceful shutdown: no new connections, open streams get
# 10 s to finish (keep the platform's stop timeout above that).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/gigachat-proxy"]
