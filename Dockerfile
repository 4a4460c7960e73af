# syntax=docker/dockerfile:1
# Multi-stage build. Targets (docs/operations.md):
#   runtime       (default, last stage)  CPU image: oneDNN build, debian slim
#   runtime-cuda                         NVIDIA GPU image: `cuda` feature, CUDA 12.4 + cuDNN
#
#   docker build -t translation-worker:0.1.0 .
#   docker build --target runtime-cuda -t translation-worker:0.1.0-cuda .
#
# Both runtimes hold the binary and the default config only, run as uid 10001 and
# serve /healthz, /readyz and /metrics on :9090. Models are mounted at run time
# (model.path, TW_MODEL__PATH), never baked in.

# The one Rust toolchain both builders use (the CUDA builder copies it from here).
FROM rust:1.95-bookworm AS rust-toolchain

# ---------------------------------------------------------------- CPU builder
FROM rust-toolchain AS builder
# Debian's own versions of the build tools are what we want: pinning exact package
# versions of a rolling security-patched suite only breaks the build later.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# oneDNN first: its layer survives source changes.
COPY scripts/install-onednn.sh scripts/
RUN bash scripts/install-onednn.sh
COPY . .
# The registry and target caches survive between builds (BuildKit); the binary is
# copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,id=tw-target-cpu,target=/src/target \
    cargo build --release --locked \
 && install -m 0755 target/release/translation-worker /usr/local/bin/translation-worker

# --------------------------------------------------------------- CUDA builder
FROM nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04 AS builder-cuda
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# rustup, cargo and the toolchain exactly as the official rust image installed them.
COPY --from=rust-toolchain /usr/local/rustup /usr/local/rustup
COPY --from=rust-toolchain /usr/local/cargo /usr/local/cargo
# GPU architectures to compile kernels for (CTranslate2 CUDA_ARCH_LIST): Turing (T4),
# Ampere (A10/A100/A30), Ada (L4/L40S), Hopper (H100/H200). Fewer = faster build.
ARG CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0"
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH \
    CUDA_TOOLKIT_ROOT_DIR=/usr/local/cuda \
    CUDA_ARCH_LIST=${CUDA_ARCH_LIST}
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,id=tw-target-cuda,target=/src/target \
    cargo build --release --locked --no-default-features --features cuda \
 && install -m 0755 target/release/translation-worker /usr/local/bin/translation-worker

# --------------------------------------------------------------- CUDA runtime
# cudnn-runtime: the CUDA runtime libraries and cuDNN (linked dynamically); cuBLAS
# is linked statically. The driver comes from the node (NVIDIA container toolkit).
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 AS runtime-cuda
RUN groupadd --system --gid 10001 translation \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin translation
COPY --from=builder-cuda /usr/local/bin/translation-worker /usr/local/bin/translation-worker
COPY config/default.toml /etc/translation-worker/config.toml
# CUDA_CACHE_PATH: the PTX JIT cache, in the writable /tmp (read-only root in k8s).
ENV TW_MODEL__PATH=/models/model \
    TW_MODEL__DEVICE=cuda \
    TW_LOG__FORMAT=json \
    CUDA_CACHE_PATH=/tmp/cuda-cache
USER 10001:10001
EXPOSE 9090
# Liveness only (no curl in the image: bash's /dev/tcp, grep and head are in it).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["translation-worker"]
CMD ["serve", "--config", "/etc/translation-worker/config.toml"]

# ---------------------------------------------------------------- CPU runtime
# Last stage: what `docker build .` (no --target) produces.
FROM debian:bookworm-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libstdc++6 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 translation \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin translation
# Same path as in the builder: the binary's rpath points here.
COPY --from=builder /opt/translation-worker/onednn-2023.2.0/lib/libdnnl.so.3 \
     /opt/translation-worker/onednn-2023.2.0/lib/libdnnl.so.3
COPY --from=builder /usr/local/bin/translation-worker /usr/local/bin/translation-worker
COPY config/default.toml /etc/translation-worker/config.toml
ENV TW_MODEL__PATH=/models/model \
    TW_LOG__FORMAT=json
USER 10001:10001
EXPOSE 9090
# Liveness only (no curl in the image: bash's /dev/tcp, grep and head are in it).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["translation-worker"]
CMD ["serve", "--config", "/etc/translation-worker/config.toml"]
