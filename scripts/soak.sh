#!/usr/bin/env bash
# Soak test: the worker binary at ~80 % of its calibrated capacity for a while, with
# its RSS and job latency compared between the first interval after warm-up and the
# last (tests/soak.rs says how and why). Prints `SOAK {json}` lines.
#
#   scripts/soak.sh [SECONDS]    # default 1800 (30 minutes); not run by CI
#
# Release build: the figures then match what a deployment runs. Needs RabbitMQ and
# Redis on 127.0.0.1 (started here when absent, as scripts/test.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh
TW_SOAK_SECS="${1:-1800}" cargo test --locked --release "${features[@]}" --test soak -- --ignored --nocapture
