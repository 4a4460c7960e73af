#!/usr/bin/env bash
# Runs the worker against local RabbitMQ and Redis with the bundled copy test model
# (installing and starting what is missing). Point it at a real model with
# TW_MODEL__PATH=/models/opus-mt-ko-en-ct2 (see README). Extra arguments go to `serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh
exec cargo run --release --locked "${features[@]}" -- serve --config config/default.toml "$@"
