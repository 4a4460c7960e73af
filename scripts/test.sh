#!/usr/bin/env bash
# The whole test suite: installs missing tools, starts RabbitMQ and Redis when they
# are absent, then runs unit and integration tests (real broker, Redis and model).
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services.sh
# Outside the clone and at a fixed path: CTranslate2's CMake cache inside the target
# directory records absolute paths, and a warm build saves many minutes.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/translation-worker/target}"
features=()
[ "${TW_BACKEND:-default}" = "ruy" ] && features=(--no-default-features --features ruy)
cargo test --locked "${features[@]}" "$@"
