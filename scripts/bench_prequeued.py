#!/usr/bin/env python3
"""A/B of batcher settings on a backlog that is already queued when the worker starts
(a scale-up onto a full queue), alternating the settings in one sitting.

For each round and each value of a `TW_...` variable: a worker declares the queue and
stops, `translation-worker loadgen` publishes the jobs (one sentence each, every reply
checked with `--verify-copy`), and once they are queued a fresh worker starts with the
value. Prints one JSON line per round: sentences/s from the worker being ready to the
last reply, and the worker's batch count, padded source tokens and summed inference
seconds (`/metrics`). Run through the bench venv, from the repository root:

    ~/.cache/translation-worker/bench-venv/bin/python scripts/bench_prequeued.py \\
        --bin "$CARGO_TARGET_DIR/release/translation-worker" --model bench-out/opus-copy \\
        --var TW_BATCH__MAX_SETTLE_MS --values 0,100 --rounds 2
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import AMQP, Worker, names, worker_metric  # noqa: E402  (sibling script)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--sentences", default="benches/data/sentences.ko.txt")
    p.add_argument("--jobs", type=int, default=600)
    p.add_argument("--var", required=True, help="the worker's environment variable to vary")
    p.add_argument("--values", required=True, help="comma-separated values, alternated")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--queue-wait", type=float, default=3.0,
                   help="seconds between publishing and starting the worker")
    a = p.parse_args()
    for r in range(a.rounds):
        row = {"round": r}
        for value in a.values.split(","):
            ex, q = names()
            # Declares the queue (and its bindings), so the jobs published next wait in it.
            Worker(a.bin, a.model, ex, q, threads=2).stop()
            cmd = [a.bin, "loadgen", "--amqp-url", AMQP, "--exchange", ex, "--source", "ko",
                   "--target", "en", "--file", a.sentences, "--jobs", str(a.jobs),
                   "--concurrency", str(a.jobs), "--texts-per-job", "1",
                   "--timeout-ms", "600000", "--json", "--verify-copy"]
            gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            time.sleep(a.queue_wait)
            w = Worker(a.bin, a.model, ex, q, threads=2, extra={a.var: value})
            ready = time.time()
            out = gen.communicate()[0]
            wall = time.time() - ready
            try:
                metrics = {k: worker_metric(w, "translation_worker_" + k) for k in (
                    "inference_seconds_count", "batch_padded_tokens_total",
                    "inference_seconds_sum")}
            finally:
                w.stop()
            if gen.returncode != 0:
                print(f"loadgen failed ({gen.returncode})", file=sys.stderr)
                return 1
            report = json.loads(out.strip().splitlines()[-1])
            row[value] = {"sentences_per_sec": round(a.jobs / wall, 2),
                          **{k: report[k] for k in ("lost", "mismatches", "errors")},
                          **metrics}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
