# syntax=docker/dockerfile:1
# Multi-stage build: a builder with CMake and the C++ toolchain (CTranslate2 and
# SentencePiece are C++), and a slim runtime with the binary, the default config and
# the shared oneDNN library. Models are mounted at run time, never baked in.

FROM rust:1.95-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# oneDNN first: its layer survives source changes.
COPY scripts/install-onednn.sh scripts/
RUN bash scripts/install-onednn.sh
COPY . .
RUN cargo build --release --locked \
 && install -m 0755 target/release/translation-worker /usr/local/bin/translation-worker

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libstdc++6 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home translation
# Same path as in the builder: the binary's rpath points here.
COPY --from=builder /opt/translation-worker/onednn-2023.2.0/lib/libdnnl.so.3 \
     /opt/translation-worker/onednn-2023.2.0/lib/libdnnl.so.3
COPY --from=builder /usr/local/bin/translation-worker /usr/local/bin/translation-worker
COPY config/default.toml /etc/translation-worker/config.toml
ENV TW_MODEL__PATH=/models/model \
    TW_LOG__FORMAT=json
USER 10001
ENTRYPOINT ["translation-worker"]
CMD ["serve", "--config", "/etc/translation-worker/config.toml"]
