#!/usr/bin/env bash
# The whole test suite: installs missing tools, starts RabbitMQ and Redis when they
# are absent, then runs unit and integration tests (real broker, Redis and model).
# Both crates of the workspace (the worker and translation-client). Extra arguments go
# to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh
# The third-party LibreTranslate clients tests/libretranslate_clients.rs runs (PyPI and
# npm, pinned; cached, so a no-op when warm). Fails the run when they cannot be had.
bash scripts/lt-clients.sh
cargo test --locked --workspace "${features[@]}" "$@"
