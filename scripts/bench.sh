#!/usr/bin/env bash
# The project benchmark: the worker end to end (closed loop, backlog, documents, beam
# 4) against the sorted ceiling of the engine beneath it, the policy over windows of W
# texts, the official CTranslate2 wheel, a Python peer worker, the previous build
# (--baseline-bin), the cache-hit path, idle latency and scaling. One run, ratios
# printed (scripts/bench.py lists the legs). Needs RabbitMQ and Redis (started by
# scripts/prepare.sh).
#
#   scripts/bench.sh            full run: release build, OPUS-MT-shaped copy model
#   scripts/bench.sh --curve    the engine's efficiency curve (batch size, token budget)
#   scripts/bench.sh --tiny     CI smoke run: the bundled tiny model, a few jobs
#                               (the figures mean nothing; it keeps the script working)
#
# Extra arguments go to scripts/bench.py (e.g. --jobs 300 --json-out out.json).
set -euo pipefail
cd "$(dirname "$0")/.."
TINY=0
if [ "${1:-}" = "--tiny" ]; then TINY=1; shift; fi
source scripts/prepare.sh
# The wheel leg and the model generator need the ctranslate2 wheel: a pinned venv
# outside the clone, created once.
VENV="$HOME/.cache/translation-worker/bench-venv"
if ! "$VENV/bin/python" -c "import ctranslate2, sentencepiece, numpy, yaml, pika, redis" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet -r scripts/bench-requirements.txt
fi
if [ "$TINY" = 1 ]; then
  cargo build --locked "${features[@]}"
  exec "$VENV/bin/python" scripts/bench.py --bin "$CARGO_TARGET_DIR/debug/translation-worker" \
    --python "$VENV/bin/python" --model tests/fixtures/copy-model \
    --sentences benches/data/sentences.ko.txt \
    --jobs 40 --jobs-c1 5 --hit-jobs 200 --lone 3 --repeat 1 "$@"
fi
[ -f bench-out/opus-copy/model.bin ] \
  || "$VENV/bin/python" scripts/make_test_model.py --out bench-out/opus-copy --variant opus >/dev/null
cargo build --release --locked "${features[@]}"
exec "$VENV/bin/python" scripts/bench.py --bin "$CARGO_TARGET_DIR/release/translation-worker" \
  --python "$VENV/bin/python" --model bench-out/opus-copy \
  --sentences benches/data/sentences.ko.txt "$@"
