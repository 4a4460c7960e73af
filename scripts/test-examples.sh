#!/usr/bin/env bash
# Runs the client examples (examples/python with pika, examples/node with amqplib)
# against a real worker serving the bundled copy model on a random queue and exchange,
# and checks that each prints exactly the expected translations (the copy model's
# translation is its input) and fails on a pair no worker serves.
#
# Needs: python3 (with venv), node + npm, cargo, RabbitMQ on TW_AMQP__URL (default
# 127.0.0.1:5672) and Redis on 127.0.0.1:6379 (scripts/services.sh starts both).
# The Python venv lives in ~/.cache/translation-worker/examples-venv; node modules in
# examples/node/node_modules (installed with `npm ci` from the lock file).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/translation-worker/target}"
AMQP_URL="${TW_AMQP__URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
VENV="$HOME/.cache/translation-worker/examples-venv"

die() {
  echo "test-examples: FAILED: $*" >&2
  exit 1
}

for tool in python3 node npm cargo; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

echo "test-examples: Python venv at $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || die "cannot create the venv (install python3-venv)"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r examples/python/requirements.txt ||
  die "pip install -r examples/python/requirements.txt"
PY="$VENV/bin/python"

echo "test-examples: npm ci in examples/node"
(cd examples/node && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in examples/node"

echo "test-examples: building the worker (debug)"
cargo build --locked --quiet || die "cargo build"
BIN="$CARGO_TARGET_DIR/debug/translation-worker"
[ -x "$BIN" ] || die "$BIN was not built"

ID=$("$PY" -c 'import uuid; print(uuid.uuid4().hex)')
QUEUE="tw-examples-$ID.jobs"
EXCHANGE="tw-examples-$ID"
DEAD="tw-examples-$ID.dead"
LOG=$(mktemp)
WORKER=

cleanup() {
  local rc=$?
  if [ -n "$WORKER" ] && kill -0 "$WORKER" 2>/dev/null; then
    kill -TERM "$WORKER"
    wait "$WORKER" || true
  fi
  # Remove this run's queues and exchanges from the shared broker.
  "$PY" - "$AMQP_URL" "$QUEUE" "$DEAD" "$EXCHANGE" <<'PY' || true
import sys, pika
url, queue, dead, exchange = sys.argv[1:]
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
for q in (queue, dead):
    ch.queue_delete(q)
for e in (exchange, dead):
    ch.exchange_delete(e)
conn.close()
PY
  if [ "$rc" -ne 0 ]; then
    echo "test-examples: worker log:" >&2
    tail -n 50 "$LOG" >&2 || true
  fi
  rm -f "$LOG"
}
trap cleanup EXIT

echo "test-examples: starting the worker on queue $QUEUE"
TW_AMQP__URL="$AMQP_URL" \
  TW_AMQP__QUEUE="$QUEUE" \
  TW_AMQP__EXCHANGE="$EXCHANGE" \
  TW_AMQP__DEAD_LETTER="$DEAD" \
  TW_REDIS__KEY_PREFIX="tw-examples-$ID" \
  TW_REDIS__TTL_SECS=600 \
  TW_MODEL__PATH="$ROOT/tests/fixtures/copy-model" \
  TW_MODEL__SOURCE=ko \
  TW_MODEL__TARGET=en \
  TW_MODEL__THREADS=2 \
  TW_HTTP__LISTEN= \
  TW_LOG__FORMAT=json \
  "$BIN" serve >"$LOG" 2>&1 &
WORKER=$!

# Ready when the job queue has a consumer (the worker declares it, then consumes).
"$PY" - "$AMQP_URL" "$QUEUE" "$WORKER" <<'PY' || die "the worker did not start consuming"
import os, sys, time, pika
url, queue, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("worker exited")
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ok = conn.channel().queue_declare(queue, passive=True).method.consumer_count > 0
    except pika.exceptions.ChannelClosedByBroker:
        ok = False
    finally:
        if conn.is_open:
            conn.close()
    if ok:
        sys.exit(0)
    time.sleep(0.2)
sys.exit("timed out")
PY

TEXTS=("회의는 오전 10시에 본사 3층 회의실에서 열립니다." "감사합니다." "" "Mixed 한국어 and English, 12,345.67 😀")
EXPECTED=$(printf '%s\n' "${TEXTS[@]}")
COMMON=(--url "$AMQP_URL" --exchange "$EXCHANGE" --source ko --target en --timeout 60)

check() {
  local name=$1
  shift
  local got
  got=$("$@") || die "$name exited with an error"
  [ "$got" == "$EXPECTED" ] || die "$name printed:
$got
expected:
$EXPECTED"
  echo "test-examples: $name: ok (${#TEXTS[@]} translations)"
}

check_unroutable() {
  local name=$1
  shift
  local err
  if err=$("$@" 2>&1 >/dev/null); then
    die "$name succeeded for a pair no worker serves"
  fi
  [[ $err == *"no worker serves ko-xx"* ]] || die "$name: unexpected error: $err"
  echo "test-examples: $name: unserved pair refused: ok"
}

check "python (arguments)" "$PY" examples/python/translate_client.py "${COMMON[@]}" "${TEXTS[@]}"
check "python (stdin)" "$PY" examples/python/translate_client.py "${COMMON[@]}" <<<"$EXPECTED"
check "node (arguments)" node examples/node/translate_client.js "${COMMON[@]}" "${TEXTS[@]}"
check "node (stdin)" node examples/node/translate_client.js "${COMMON[@]}" <<<"$EXPECTED"
check_unroutable "python" "$PY" examples/python/translate_client.py --url "$AMQP_URL" \
  --exchange "$EXCHANGE" --source ko --target xx --timeout 60 x
check_unroutable "node" node examples/node/translate_client.js --url "$AMQP_URL" \
  --exchange "$EXCHANGE" --source ko --target xx --timeout 60 x

echo "test-examples: all examples passed"
