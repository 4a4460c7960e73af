#!/usr/bin/env bash
# Installs what building and testing translation-worker needs on a Debian/Ubuntu
# machine: CMake and a C++ toolchain (CTranslate2 and SentencePiece are C++),
# RabbitMQ and Redis (the tests use the real ones), Python's pip (fetches the
# prebuilt oneDNN from PyPI), and oneDNN itself. Idempotent: installs only what is
# missing. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v c++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v python3 >/dev/null || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v redis-server >/dev/null || need+=(redis-server)
command -v rabbitmq-server >/dev/null || [ -x /usr/sbin/rabbitmq-server ] || need+=(rabbitmq-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  command -v apt-get >/dev/null || { echo "setup: apt-get not found; install ${need[*]} yourself" >&2; exit 1; }
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found: install the Rust toolchain (https://rustup.rs), then re-run" >&2
  exit 1
fi

# oneDNN for the default build (skip with TW_BACKEND=ruy).
if [ "${TW_BACKEND:-default}" != "ruy" ]; then
  $SUDO env ${ONEDNN_DIR:+ONEDNN_DIR="$ONEDNN_DIR"} bash scripts/install-onednn.sh
fi
echo "setup: ok"
