#!/usr/bin/env python3
"""Summarises the worker's batcher log, one line per worker run.

Run a worker (or `scripts/bench.sh`) with the batcher at debug level and JSON logs:

    BENCH_WORKER_LOG=/tmp/w.log \
    BENCH_WORKER_RUST_LOG=warn,translation_worker::translate::batcher=debug \
      scripts/bench.sh --backlog-only --repeat 2
    python3 scripts/batch_log.py /tmp/w.log [--cuts N[,N...]]

A run starts at each worker's first cut (the one whose texts are logged as batch 1:
each bench leg starts a fresh worker). Per run: its length from first cut to last
answer, batches (and how many under 16 texts), replica time in inference and its
share of the run, padded source tokens (texts x longest, summed over cuts), the cuts'
estimated cost (`batch_cost` units, summed), how long the replica that finished first
then idled, and the engine's speed in those units per millisecond over batches of 8
or more texts: the median batch's, and all their cost over all their time (compare the
latter with `bench.py`'s "units/ms" of an engine-only run, `--and-engine-window`).
`--cuts` lists every cut and answer of the runs named, with the cost and the busy
replicas' work left the drain was told of.
"""
import argparse
import json
from datetime import datetime

def events(path):
    for line in open(path, encoding="utf-8"):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("message") in ("batch cut", "batch done", "text batched"):
            e["t"] = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
            yield e


def runs(evs):
    out = [[]]
    first = False
    for e in evs:
        if e["message"] == "text batched":
            # The cut just logged is a new worker's first: move it to a new run.
            if e.get("batch_id") == 1 and not first and out[-1]:
                cut = out[-1].pop()
                out.append([cut])
            first = e.get("batch_id") == 1
            continue
        out[-1].append(e)
    return [r for r in out if r]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("log")
    p.add_argument("--cuts", default="", help="comma-separated run numbers to list in full")
    a = p.parse_args()
    show = {int(x) for x in a.cuts.split(",") if x}
    for i, r in enumerate(runs(events(a.log))):
        t0, t1 = r[0]["t"], r[-1]["t"]
        cuts = [e for e in r if e["message"] == "batch cut"]
        done = [e for e in r if e["message"] == "batch done"]
        busy = sum(e["elapsed_ms"] for e in done) / 1000
        padded = sum(e["size"] * e["width"] for e in cuts)
        cost = sum(e.get("cost") or 0 for e in cuts)
        last = {}
        for e in done:
            last[e["replica"]] = e["t"]
        idle = max(last.values()) - min(last.values()) if len(last) > 1 else 0.0
        # Each answer's cost: the last cut on its replica (one batch at a time each).
        cost_of, speeds, units, ms = {}, [], 0, 0
        for e in r:
            if e["message"] == "batch cut":
                cost_of[e["replica"]] = e.get("cost")
            elif e["size"] >= 8 and cost_of.get(e["replica"]):
                speeds.append(cost_of[e["replica"]] / max(1, e["elapsed_ms"]))
                units += cost_of[e["replica"]]
                ms += max(1, e["elapsed_ms"])
        speeds.sort()
        small = sum(1 for e in cuts if e["size"] < 16)
        replicas = max(1, len(last))
        speed = (f"{speeds[len(speeds) // 2]:.0f} (min {speeds[0]:.0f}, max {speeds[-1]:.0f}; "
                 f"all together {units / ms:.0f})" if speeds else "-")
        print(f"run {i}: {t1 - t0:.2f} s, {len(cuts)} batches ({small} under 16 texts), "
              f"inference {busy:.2f} replica-s ({busy / max(1e-9, replicas * (t1 - t0)):.2f} "
              f"of {replicas}), padded {padded}, cost {cost}, one replica idle at the end {idle * 1000:.0f} ms, "
              f"units/ms {speed}")
        if i in show:
            for e in r:
                if e["message"] == "batch cut":
                    print(f"  {e['t'] - t0:8.3f} cut  r{e['replica']} {e['size']} x {e['width']}"
                          f"  held {e.get('queued_bulk', 0)}  cost {e.get('cost', '-')}"
                          f"  busy left {e.get('busy_left', '-')}")
                else:
                    print(f"  {e['t'] - t0:8.3f} done r{e['replica']} {e['size']} x {e['longest']}"
                          f"  {e['elapsed_ms']} ms")


if __name__ == "__main__":
    main()
