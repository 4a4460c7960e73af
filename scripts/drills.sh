#!/usr/bin/env bash
# Fault drills of issue 3 (tests/drills.rs): worker SIGKILL, broker restart, Redis
# outage and hang, engine failure, dead/full/slow reply queues; and the cluster drills
# of issue 17 (tests/cluster.rs): a private 3-node RabbitMQ cluster whose nodes are
# SIGKILLed under the worker and the gateway. Each drill pushes >= 2,000 jobs (or a
# stream of HTTP requests) through the real broker with the copy test model and
# prints one `DRILL {json}` line; this script runs them and tabulates those lines.
#
#   scripts/drills.sh                 # debug test build (what CI runs)
#   scripts/drills.sh --release       # optimised build
#   scripts/drills.sh [--release] NAME --test-threads=1   # extra args go to the test binary
#
# Uses the local RabbitMQ/Redis (started if absent, never restarted) plus private
# RabbitMQ/Redis instances (and clusters) on free ports for the drills that stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh
profile=()
if [ "${1:-}" = "--release" ]; then
  profile=(--release)
  shift
fi
log="${TMPDIR:-/tmp}/translation-worker-drills-$(date +%Y%m%d-%H%M%S).log"
# Worker processes log JSON lines to stderr: keep them in the log, off the terminal.
set +e
cargo test --locked "${profile[@]}" "${features[@]}" --test drills --test cluster \
  -- --nocapture --include-ignored "$@" 2>&1 \
  | tee "$log" | grep -v '^{"timestamp'
status=${PIPESTATUS[0]}
set -e
echo
echo "full output: $log"
python3 - "$log" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    i = line.find("DRILL {")
    if i >= 0:
        rows.append(json.loads(line[i + len("DRILL "):]))
cols = ["drill", "sent", "answered", "duplicates", "lost", "recovery_ms", "elapsed_ms"]
if not rows:
    print("no DRILL lines (did the drills build and run?)")
    sys.exit(0)
def cell(v):
    return "-" if v is None else str(v)
print("| " + " | ".join(cols) + " | details |")
print("|" + "---|" * (len(cols) + 1))
for r in sorted(rows, key=lambda r: r["drill"]):
    details = ", ".join(f"{k}={cell(v)}" for k, v in sorted(r.items()) if k not in cols)
    print("| " + " | ".join(cell(r.get(c)) for c in cols) + f" | {details} |")
PY
exit "$status"
