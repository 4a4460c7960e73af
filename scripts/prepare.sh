# Sourced by run.sh and test.sh: installs what is missing, starts RabbitMQ and Redis,
# and sets the build environment (target directory, backend features).
bash scripts/setup.sh
bash scripts/services.sh
# Outside the clone and at a fixed path: CTranslate2's CMake cache inside the target
# directory records absolute paths, and a warm build saves many minutes.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/translation-worker/target}"
features=()
if [ "${TW_BACKEND:-default}" = "ruy" ]; then
  features=(--no-default-features --features ruy)
fi
