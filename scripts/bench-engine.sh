#!/usr/bin/env bash
# Engine backend comparison: raw `translate_batch` throughput of the same model,
# sentences, threads and options, for the official CTranslate2 wheel and for
# translation-worker's builds (default: oneDNN; optional: ruy). Every
# leg runs in this one invocation, interleaved, and the script prints ratios to the
# wheel's default threading, not absolute times (the machine is shared and noisy).
#
#   scripts/bench-engine.sh [--limit N] [--repeat R] [--rounds K] [--ruy]
#
# Needs: a release build (cargo build --release), pip packages ctranslate2==4.8.5,
# sentencepiece, numpy, pyyaml (installed when missing), and the OPUS-MT-shaped copy
# model, generated into bench-out/opus-copy when absent.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=150 REPEAT=2 ROUNDS=2 RUY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --limit) LIMIT=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --ruy) RUY=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/translation-worker/target}"
python3 -c "import ctranslate2, sentencepiece, numpy, yaml" 2>/dev/null \
  || python3 -m pip install --quiet ctranslate2==4.8.5 sentencepiece numpy pyyaml
[ -f bench-out/opus-copy/model.bin ] \
  || python3 scripts/make_test_model.py --out bench-out/opus-copy --variant opus >/dev/null
cargo build --release --locked
BIN="$CARGO_TARGET_DIR/release/translation-worker"
RUY_BIN="${RUY_TARGET_DIR:-$HOME/.cache/translation-worker/target-ruy}/release/translation-worker"
if [ "$RUY" = 1 ]; then
  CARGO_TARGET_DIR="${RUY_TARGET_DIR:-$HOME/.cache/translation-worker/target-ruy}" \
    cargo build --release --locked --no-default-features --features ruy
fi
M=bench-out/opus-copy S=benches/data/sentences.ko.txt
OUT=$(mktemp)
for round in $(seq 1 "$ROUNDS"); do
  for t in "1 2" "2 1"; do
    set -- $t
    python3 scripts/bench_engine_wheel.py --model $M --sentences $S --limit "$LIMIT" \
      --repeat "$REPEAT" --inter-threads "$1" --intra-threads "$2" | sed "s/^/wheel $1x$2 /" >>"$OUT"
    # The wheel held to oneDNN (it picks oneMKL on Intel CPUs): the same backend as ours.
    CT2_USE_MKL=0 python3 scripts/bench_engine_wheel.py --model $M --sentences $S --limit "$LIMIT" \
      --repeat "$REPEAT" --inter-threads "$1" --intra-threads "$2" | sed "s/^/wheel-dnnl $1x$2 /" >>"$OUT"
    "$BIN" bench-engine --model $M --sentences $S --limit "$LIMIT" --repeat "$REPEAT" \
      --replicas "$1" --threads-per-replica "$2" | sed "s/^/dnnl $1x$2 /" >>"$OUT"
    # ruy is ~8x slower: measured in the first round only, to keep the run short.
    if [ "$RUY" = 1 ] && [ "$round" = 1 ]; then
      "$RUY_BIN" bench-engine --model $M --sentences $S --limit "$LIMIT" --repeat "$REPEAT" \
        --replicas "$1" --threads-per-replica "$2" | sed "s/^/ruy $1x$2 /" >>"$OUT"
    fi
  done
done
python3 - "$OUT" <<'PY'
import json, sys, collections, platform
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, cfg, js = line.split(" ", 2)
    rows[(name, cfg)].append(json.loads(js)["sentences_per_sec"])
best = {k: max(v) for k, v in rows.items()}
base = best[("wheel", "1x2")]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"CPU: {cpu}")
print(f"{'build':<11} {'replicas x threads':<19} {'sent/s (best)':>13} {'vs wheel 1x2':>13} {'vs wheel same':>14}")
for (name, cfg), v in sorted(best.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    same = best.get(("wheel", cfg), float("nan"))
    print(f"{name:<11} {cfg:<19} {v:>13.2f} {v / base:>12.2f}x {v / same:>13.2f}x")
PY
rm -f "$OUT"
