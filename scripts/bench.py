#!/usr/bin/env python3
"""The project benchmark: is the worker as fast as the engine beneath it?

One run, every leg side by side on the same model, sentences, options and 2 CPU
threads, and ratios printed (never absolute times alone: the machine is shared).
Run it through scripts/bench.sh, which builds the binary and prepares the model and
the Python wheel; see docs/benchmarks.md for the figures and what they mean.

Legs (all against the real RabbitMQ and Redis on this machine):
  ceiling     `translation-worker bench-engine`, one call over all sentences, which
              CTranslate2 sorts by length before cutting batches; 2 replicas x 1
              thread (the worker's threading): the sorted ceiling. Each run of (a),
              (b), (c) and (d) is also preceded and followed by a pass of its ceiling, and
              its headline ratio is against the mean of those two (the machine's
              speed drifts over minutes); the ratio to the first ceiling is printed too.
  window W    (d) bench-engine --window W: the worker's batching policy holding only
              W sentences at a time, its batches run straight on the engine: the most
              a batcher can do that sees W texts.
  in_order    bench-engine --in-order: unsorted batches of the worker's size.
  wheel       (e) the official CTranslate2 wheel, raw translate_batch, 1 x 2 (its
              default) and 2 x 1.
  closed      (a) the worker end to end, 1 sentence a job, 64 in flight, all misses.
  backlog     (b) every job published at once (a backlog), 1 sentence a job.
  documents   (c) 20-sentence documents, split: sentences, 8 in flight, against its
              own ceiling: bench-engine --document-size 20, the same documents cut by
              the worker's segmenter, in one sorted call; and (d) over 8 whole
              documents (--window 160 --document-size 20), each replaced once done.
  peer        (f) scripts/peer_worker.py (pika + wheel + redis-py, micro-batches of
              up to 32) under (a), at 1 x 2 and 2 x 1.
  beam4       (g) leg (a) with beam 4, against the sorted ceiling at beam 4.
  baseline    leg (a) with --baseline-bin (an earlier build), for latency.
  worker1     1 in flight (batching gain).
  hits64      the worker with every text cached, 64 in flight; echo64: `echo`, the
              broker round trip with no model.
  lone        one job at a time on an idle worker, cache off, vs the engine on
              the same sentence alone (idle latency overhead).
  two1x1      two worker processes of 1 thread each on one queue vs one of 2.
  lanes       priority lanes: a backlog of --lane-docs bulk documents of
              --doc-sentences sentences (split: sentences) with interactive
              one-sentence jobs at 2 per second alongside: their p50/p99 against the
              idle latency of one + 2 batch durations (the worker's mean
              inference_seconds while the backlog ran alone), and the backlog's
              throughput against the same backlog with no interactive load; the
              5 slowest interactive jobs with when they were sent.
              `--lanes-only` runs this leg alone.

`--backlog-only` runs leg (b) alone (with `--in-flight 64`, leg (a)), --repeat
rounds, each run between two ceiling passes; each `--variant KEY=VALUE[,KEY=VALUE]`
(worker environment, e.g. TW_BATCH__SETTLE_GAP_MS=5) and each `--variant-bin PATH`
(another build of the binary, e.g. the commit before a batcher change) adds a run per
round, alternating with the default's, so batcher settings and builds are compared
within one sitting. With `--engine-window W` the runs are `bench-engine --window W`
(leg (d): the policy over the engine alone, no broker) instead of the worker, which
isolates the batching policy from the broker's noise (binary variants only: the
engine bench does not read the worker's environment); with `--and-engine-window W`
they are one more variant of each round, beside the worker's runs, so the engine's
speed per cost unit inside the worker (`scripts/batch_log.py` on the worker's log) and
alone (printed here) are compared within one sitting. Each worker run also prints the
CPU-seconds spent during it: the worker's inference (wall time, from its /metrics) and
the rest of its CPU time, RabbitMQ, Redis, the load generator, and the machine's idle
and stolen time.
"""
import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
import uuid

AMQP = os.environ.get("TW_AMQP__URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
BIN = "translation-worker"  # set from --bin in main()


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """A `translation-worker serve` child process on its own queue and cache prefix."""

    def __init__(self, binary, model, exchange, queue, threads, replicas=0, cache=True,
                 prefix=None, extra=None):
        self.port = free_port()
        env = dict(os.environ)
        env.update({
            "TW_AMQP__URL": AMQP,
            "TW_AMQP__EXCHANGE": exchange,
            "TW_AMQP__QUEUE": queue,
            "TW_AMQP__DEAD_LETTER": queue + ".dead",
            "TW_REDIS__ENABLED": "true" if cache else "false",
            "TW_REDIS__KEY_PREFIX": prefix or ("twb-" + uuid.uuid4().hex[:12]),
            "TW_REDIS__TTL_SECS": "3600",
            "TW_MODEL__PATH": model,
            "TW_MODEL__THREADS": str(threads),
            "TW_MODEL__REPLICAS": str(replicas),
            "TW_HTTP__LISTEN": f"127.0.0.1:{self.port}",
            "TW_LOG__FORMAT": "json",
            # BENCH_WORKER_LOG=F: the workers' JSON logs appended to F, at
            # BENCH_WORKER_RUST_LOG (default warn); e.g. the batcher's per-cut events with
            # BENCH_WORKER_RUST_LOG=warn,translation_worker::translate::batcher=debug.
            "RUST_LOG": os.environ.get("BENCH_WORKER_RUST_LOG", "warn"),
        })
        env.update(extra or {})
        logfile = os.environ.get("BENCH_WORKER_LOG")
        out = open(logfile, "a") if logfile else subprocess.DEVNULL
        self.proc = subprocess.Popen([binary, "serve"], env=env, stdout=out)
        deadline = time.time() + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"worker exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("worker never became ready")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_json(cmd) -> dict:
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def loadgen(binary, exchange, sentences, jobs, concurrency, verify=True, extra=()):
    cmd = [binary, "loadgen", "--amqp-url", AMQP, "--exchange", exchange,
           "--source", "ko", "--target", "en", "--file", sentences,
           "--jobs", str(jobs), "--concurrency", str(concurrency),
           "--texts-per-job", "1", "--timeout-ms", "600000", "--json", *extra]
    if verify:
        cmd.append("--verify-copy")
    return run_json(cmd)


def engine(binary, model, sentences, limit, replicas, threads, repeat, batch=32, in_order=False,
           window=0, tokens=None, beam=1, min_batch=None, document=1):
    cmd = [binary, "bench-engine", "--model", model, "--sentences", sentences,
           "--limit", str(limit), "--repeat", str(repeat), "--replicas",
           str(replicas), "--threads-per-replica", str(threads),
           "--max-batch-size", str(batch), "--beam-size", str(beam)]
    if in_order:
        cmd.append("--in-order")
    if window:
        cmd += ["--window", str(window)]
    # Every mode, the one sorted call too (the ceiling over the documents' segments).
    # Until 2026-12-01 this was inside the window branch, so (c)'s "ceiling over the
    # same segments" was the ceiling over the 600 lines (docs/benchmarks.md).
    if document > 1:
        cmd += ["--document-size", str(document)]
    if tokens:
        cmd += ["--max-batch-tokens", str(tokens)]
    if min_batch:
        cmd += ["--min-batch-size", str(min_batch)]
    return run_json(cmd)


def wheel(python, model, sentences, limit, repeat, inter, intra, beam=1):
    return run_json([python, "scripts/bench_engine_wheel.py", "--model", model,
                     "--sentences", sentences, "--limit", str(limit), "--repeat", str(repeat),
                     "--inter-threads", str(inter), "--intra-threads", str(intra),
                     "--beam-size", str(beam)])


def peer(python, model, sentences, jobs, inter, intra):
    """(f): the Python peer worker under leg (a)'s load."""
    ex, q = names()
    ready = os.path.join(tempfile.mkdtemp(prefix="twpeer-"), "ready")
    proc = subprocess.Popen([python, "scripts/peer_worker.py", "--amqp-url", AMQP,
                             "--exchange", ex, "--queue", q, "--model", model,
                             "--inter-threads", str(inter), "--intra-threads", str(intra),
                             "--key-prefix", "twb-peer-" + uuid.uuid4().hex[:12],
                             "--ready-file", ready])
    try:
        deadline = time.time() + 120
        while not os.path.exists(ready):
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit("peer worker never became ready")
            time.sleep(0.1)
        return loadgen(BIN, ex, sentences, jobs, 64)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def names():
    tag = uuid.uuid4().hex[:10]
    return f"twb-{tag}", f"twb-{tag}.jobs"


def best(runs, key="segments_per_sec"):
    return max(runs, key=lambda x: x[key])


def worker_leg(a, label, jobs, concurrency, sentences=None, extra=(), env=None, binary=None,
               per_run=None, bracket=None):
    """Best of --repeat runs of loadgen against a fresh worker (fresh cache prefix).

    With `bracket` (a function measuring the leg's ceiling, sentences/s), the ceiling is
    measured before the first run and after every run, and each run gets
    `ceiling_around`: the mean of the passes just before and just after it. This
    machine's speed drifts by up to 20 % over minutes, so a worker run divided by a
    ceiling measured a quarter of an hour earlier measures the drift as much as the
    worker; the ceilings around a run were measured within seconds of it."""
    def one_run():
        ex, q = names()
        w = Worker(binary or a.bin, a.model, ex, q, threads=2, extra=env)
        try:
            r = loadgen(a.bin, ex, sentences or SENTS, jobs, concurrency, extra=extra)
            if per_run:
                per_run(r, ex)
            return r
        finally:
            w.stop()

    repeats = [one_run] * max(1, a.repeat)
    runs = bracketed(bracket, repeats) if bracket else [run() for run in repeats]
    log(f"{label}: " + ", ".join(f"{x['segments_per_sec']:.2f}" for x in runs) + " seg/s"
        + ("" if not bracket else "; ceilings around them " + ", ".join(
            f"{x['ceilings'][0]:.2f}/{x['ceilings'][1]:.2f}" for x in runs)))
    return runs


def bracketed(ceiling, runs):
    """Calls each of `runs` (each returns a result dict) between passes of `ceiling` (a
    function returning sentences/s), one pass before the first and one after each, and
    gives every result `ceilings` (the passes just before and after it) and
    `ceiling_around` (their mean)."""
    out = []
    before = ceiling()
    for run in runs:
        x = run()
        after = ceiling()
        x["ceilings"], x["ceiling_around"] = [before, after], (before + after) / 2
        out.append(x)
        before = after
    return out


def ceiling_passes(runs):
    """The ceiling passes around `runs` (bracketed), in the order they were measured."""
    return [runs[0]["ceilings"][0]] + [x["ceilings"][1] for x in runs]


def around(runs, key="segments_per_sec"):
    """The best run's figure against the ceiling measured around that run, best of runs."""
    return max(x[key] / x["ceiling_around"] for x in runs)


SENTS = ""


def main() -> None:
    global BIN, SENTS
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--baseline-bin", help="an earlier build: leg (a) again, for latency")
    p.add_argument("--model", required=True)
    p.add_argument("--sentences", required=True)
    p.add_argument("--jobs", type=int, default=600, help="sentences in the throughput legs")
    p.add_argument("--jobs-c1", type=int, default=40, help="jobs in the 1-in-flight leg")
    p.add_argument("--hit-jobs", type=int, default=3000, help="jobs in the cache-hit/echo legs")
    p.add_argument("--lone", type=int, default=20, help="lone jobs in the idle-latency leg")
    p.add_argument("--doc-sentences", type=int, default=20)
    p.add_argument("--windows", default="64,160,600",
                   help="window sizes of leg (d); 0 or 'none' skips it")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--skip", default="", help="comma-separated legs to skip: "
                   "wheel,peer,beam4,lone,hits,two1x1,worker1,windows,lanes")
    p.add_argument("--lane-docs", type=int, default=0,
                   help="bulk documents in the lanes leg (0: 200, or 20 when --jobs < 200, "
                        "as --tiny runs)")
    p.add_argument("--lane-rate", type=float, default=2.0,
                   help="interactive jobs per second in the lanes leg")
    p.add_argument("--lanes-only", action="store_true",
                   help="run the lanes leg alone (no ceiling or throughput legs)")
    p.add_argument("--backlog-only", action="store_true",
                   help="leg (b) alone, --repeat runs each between passes of its ceiling "
                        "(for tuning the batcher)")
    p.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="with --backlog-only: also run (b) on a worker with these "
                        "environment settings (e.g. TW_BATCH__SETTLE_GAP_MS=5), its runs "
                        "alternating with the default's; repeatable")
    p.add_argument("--variant-bin", action="append", default=[], metavar="PATH",
                   help="with --backlog-only: also run another build of the binary (the "
                        "worker, or bench-engine with --engine-window), its runs "
                        "alternating with the default's; repeatable")
    p.add_argument("--engine-window", type=int, default=0, metavar="W",
                   help="with --backlog-only: run leg (d), bench-engine --window W (the "
                        "policy over the engine alone), instead of the worker")
    p.add_argument("--and-engine-window", type=int, default=0, metavar="W",
                   help="with --backlog-only: also run leg (d), bench-engine --window W, "
                        "as one more variant of each round, beside the worker's runs")
    p.add_argument("--in-flight", type=int, default=0,
                   help="with --backlog-only: jobs in flight instead of all at once "
                        "(64: leg (a), the closed loop)")
    p.add_argument("--python", default=sys.executable, help="interpreter with ctranslate2")
    p.add_argument("--json-out", help="write every leg's raw result here")
    p.add_argument("--curve", action="store_true",
                   help="only the engine's efficiency curve: sentences/s against batch size "
                        "(sorted and unsorted) and token budget, 2 replicas x 1 thread")
    a = p.parse_args()
    BIN = a.bin
    if a.curve:
        return curve(a)
    skip = set(filter(None, a.skip.split(",")))

    with open(a.sentences, encoding="utf-8") as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]
    if len(lines) < a.jobs:
        raise SystemExit(f"{a.sentences} has {len(lines)} sentences, fewer than --jobs {a.jobs}")
    tmp = tempfile.mkdtemp(prefix="twbench-")
    SENTS = os.path.join(tmp, "sentences.txt")
    with open(SENTS, "w", encoding="utf-8") as f:
        f.write("\n".join(lines[: a.jobs]) + "\n")
    sents = SENTS
    lone_file = os.path.join(tmp, "lone.txt")
    # A sentence of median length stands for "a lone job".
    lone_sentence = sorted(lines[: a.jobs], key=len)[a.jobs // 2]
    with open(lone_file, "w", encoding="utf-8") as f:
        f.write(lone_sentence + "\n")
    # The worker's batching settings, as `check-config` resolves them (its defaults,
    # or TW_BATCH__* from the environment, which the worker children inherit): the
    # window legs run the same policy.
    settings = tomllib.loads(subprocess.run([a.bin, "check-config"], check=True,
                                            stdout=subprocess.PIPE, text=True).stdout)["batch"]
    batch, min_batch = settings["max_batch_size"], settings["min_batch_size"]
    tokens = settings["max_batch_tokens"]
    r = {"batch": batch, "min_batch": min_batch, "tokens": tokens}

    if a.lanes_only:
        # The lanes leg alone (its ratios need no ceiling): for tuning the lanes.
        x = lanes(a, sents)
        lat = x["interactive"]["latency_ms"]
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                    if l.startswith("model name")), "?")
        print(f"CPU: {cpu}; model: {a.model}; lanes leg only")
        for name, value in (
                ("lanes: interactive p99 / (idle p50 + 2 bulk batch durations)",
                 lat["p99"] / x["bound_ms"]),
                ("  interactive p50 / the same", lat["p50"] / x["bound_ms"]),
                ("lanes: bulk throughput with interactive load / without",
                 x["bulk_loaded"]["segments_per_sec"] / x["bulk_alone"]["segments_per_sec"])):
            print(f"{name:<64} {value:8.3f}")
        if a.json_out:
            with open(a.json_out, "w", encoding="utf-8") as f:
                json.dump({"lanes": x}, f, indent=1)
        return

    if a.backlog_only:
        return backlog_only(a, sents, r)

    log("ceiling: bench-engine, one sorted call, 2 replicas x 1 thread")
    r["ceiling32"] = engine(a.bin, a.model, sents, a.jobs, 2, 1, a.repeat, batch=32)
    r["ceiling"] = r["ceiling32"]
    if batch != 32:
        r["ceiling_b"] = engine(a.bin, a.model, sents, a.jobs, 2, 1, a.repeat, batch=batch)
        r["ceiling"] = best([r["ceiling32"], r["ceiling_b"]], "sentences_per_sec")
    ceiling = r["ceiling"]["sentences_per_sec"]
    # The batch size of the better ceiling, for the passes measured around each run of
    # legs (a) to (c) (warm-up and one timed pass each).
    ceiling_batch = 32 if r["ceiling"] is r["ceiling32"] else batch

    def line_ceiling():
        return engine(a.bin, a.model, sents, a.jobs, 2, 1, 1,
                      batch=ceiling_batch)["sentences_per_sec"]

    def segment_ceiling():
        return engine(a.bin, a.model, sents, a.jobs, 2, 1, 1, batch=ceiling_batch,
                      document=a.doc_sentences)["sentences_per_sec"]

    log(f"engine: unsorted batches of {batch} in file order")
    r["in_order"] = engine(a.bin, a.model, sents, a.jobs, 2, 1, a.repeat, batch=batch,
                           in_order=True)
    r["windows"] = {}
    if "windows" not in skip and a.windows not in ("", "0", "none"):
        # Bracketed by ceiling passes as the worker's runs are, so that (d) and the
        # worker legs it bounds are compared on the same footing.
        def window_run(w):
            def run():
                log(f"(d) the policy over a window of {w}, batches run on the engine")
                return engine(a.bin, a.model, sents, a.jobs, 2, 1, a.repeat, batch=batch,
                              window=w, tokens=tokens, min_batch=min_batch)
            return run

        ws = [int(x) for x in a.windows.split(",")]
        r["windows"] = dict(zip(ws, bracketed(line_ceiling, [window_run(w) for w in ws])))
    if "wheel" not in skip:
        log("(e) wheel raw 1 x 2 (its default) and 2 x 1")
        r["wheel12"] = wheel(a.python, a.model, sents, a.jobs, a.repeat, 1, 2)
        r["wheel21"] = wheel(a.python, a.model, sents, a.jobs, a.repeat, 2, 1)

    log("(a) closed loop: 64 in flight, one sentence a job, all misses")
    hits = {}

    def hits_after(run, ex):
        # Every sentence is now cached: the hit path, from a repeat pool of them.
        if "hits" not in skip and "hits64" not in hits:
            hits["hits64"] = loadgen(a.bin, ex, sents, a.hit_jobs, 64)

    r["closed_runs"] = worker_leg(a, "(a)", a.jobs, 64, per_run=hits_after,
                                  bracket=line_ceiling)
    r["closed"] = best(r["closed_runs"])
    r.update(hits)
    log("(b) backlog: every job published at once")
    r["backlog_runs"] = worker_leg(a, "(b)", a.jobs, a.jobs, bracket=line_ceiling)
    r["backlog"] = best(r["backlog_runs"])
    docs = a.jobs // a.doc_sentences
    # (c)'s own ceiling: the documents cut into segments by the worker's segmenter, as
    # the worker receives them, in one sorted call (a line with a '!' inside is two
    # segments, so the line ceiling is not what the worker translates).
    log(f"ceiling over the segments of {docs} documents of {a.doc_sentences} lines")
    r["ceiling_docs"] = best([engine(a.bin, a.model, sents, a.jobs, 2, 1, a.repeat, batch=b,
                                     document=a.doc_sentences) for b in sorted({32, batch})],
                             "sentences_per_sec")
    if "windows" not in skip:
        log(f"(d) the policy over 8 documents of {a.doc_sentences} lines, each replaced once "
            "all its segments are done, batches run on the engine")
        r["doc_window"] = bracketed(segment_ceiling, [lambda: engine(
            a.bin, a.model, sents, a.jobs, 2, 1, a.repeat, batch=batch,
            window=8 * a.doc_sentences, tokens=tokens, min_batch=min_batch,
            document=a.doc_sentences)])[0]
    log(f"(c) documents: {docs} of {a.doc_sentences} sentences, split: sentences, 8 in flight")
    r["documents_runs"] = worker_leg(a, "(c)", docs, 8,
                                     extra=("--document-sentences", str(a.doc_sentences)),
                                     bracket=segment_ceiling)
    for x in r["documents_runs"]:
        # The corpus lines sent, per second (the segmenter may cut a line further).
        x["lines_per_sec"] = x["answered"] * a.doc_sentences / x["elapsed_s"]
    r["documents"] = best(r["documents_runs"], "lines_per_sec")
    if a.baseline_bin:
        log("baseline: leg (a) against --baseline-bin")
        r["baseline_runs"] = worker_leg(a, "baseline (a)", a.jobs, 64, binary=a.baseline_bin)
        r["baseline"] = best(r["baseline_runs"])
    if "peer" not in skip:
        log("(f) the Python peer worker under (a), 1 x 2 and 2 x 1")
        r["peer12"] = peer(a.python, a.model, sents, a.jobs, 1, 2)
        r["peer21"] = peer(a.python, a.model, sents, a.jobs, 2, 1)
    if "beam4" not in skip:
        log("(g) leg (a) with beam 4, and the sorted ceiling at beam 4")
        r["ceiling_beam4"] = engine(a.bin, a.model, sents, a.jobs, 2, 1, 1, batch=32, beam=4)
        runs = worker_leg(a, "(g)", a.jobs, 64, extra=("--beam-size", "4"))
        r["beam4"] = best(runs)

    if "worker1" not in skip:
        log("worker: 1 in flight, all misses")
        ex, q = names()
        w = Worker(a.bin, a.model, ex, q, threads=2)
        try:
            r["worker1"] = loadgen(a.bin, ex, sents, min(a.jobs_c1, a.jobs), 1)
        finally:
            w.stop()

    if "hits" not in skip:
        log("echo: broker round trip with no model, 64 in flight")
        ex, q = names()
        echo = subprocess.Popen([a.bin, "echo", "--amqp-url", AMQP, "--exchange", ex,
                                 "--queue", q, "--dead-letter", q + ".dead", "--pair", "ko-en"],
                                stdout=subprocess.DEVNULL)
        try:
            time.sleep(1.0)
            r["echo64"] = loadgen(a.bin, ex, sents, a.hit_jobs, 64)
        finally:
            echo.send_signal(signal.SIGTERM)
            echo.wait(timeout=30)

    if "lone" not in skip:
        log("lone job latency on an idle worker (cache off) vs the engine alone")
        # The engine legs run before and after the worker's, and their runs are pooled:
        # a difference of a few ms out of ~200 must not come from the machine's drift.
        before = engine(a.bin, a.model, lone_file, 1, 2, 1, a.lone, batch=1)
        ex, q = names()
        w = Worker(a.bin, a.model, ex, q, threads=2, cache=False)
        try:
            # The worker's own account, immune to the machine's drift: per job, its
            # time from delivery to reply less the engine call inside it.
            jobs0 = worker_metric(w, "translation_worker_job_duration_seconds_sum")
            infer0 = worker_metric(w, "translation_worker_inference_seconds_sum")
            r["lone_worker"] = loadgen(a.bin, ex, lone_file, a.lone, 1)
            r["lone_worker"]["outside_engine_ms"] = 1000 * (
                worker_metric(w, "translation_worker_job_duration_seconds_sum") - jobs0
                - worker_metric(w, "translation_worker_inference_seconds_sum") + infer0
            ) / a.lone
        finally:
            w.stop()
        after = engine(a.bin, a.model, lone_file, 1, 2, 1, a.lone, batch=1)
        r["lone_engine"] = {"runs": before["runs"] + after["runs"]}

    if "two1x1" not in skip:
        log("scaling: two worker processes of 1 thread each on one queue")
        ex, q = names()
        prefix = "twb-" + uuid.uuid4().hex[:12]
        ws = [Worker(a.bin, a.model, ex, q, threads=1, prefix=prefix) for _ in range(2)]
        try:
            r["two1x1"] = loadgen(a.bin, ex, sents, a.jobs, 64)
        finally:
            for w in ws:
                w.stop()

    if "lanes" not in skip:
        r["lanes"] = lanes(a, sents)

    if a.json_out:
        with open(a.json_out, "w", encoding="utf-8") as f:
            json.dump(r, f, indent=2)
    report(a, r, ceiling)


def backlog_only(a, sents, r) -> None:
    """Leg (b) alone (with --in-flight N, a closed loop of N jobs), for tuning:
    --repeat rounds, each a run of the default worker and one per --variant, every run
    between two passes of the sorted ceiling at the worker's batch size, so variants
    are compared within one sitting on this noisy machine."""
    if a.engine_window and a.variant:
        sys.exit("--engine-window runs bench-engine, which does not read --variant's "
                 "environment: compare builds with --variant-bin")
    if a.engine_window and a.and_engine_window:
        sys.exit("--engine-window and --and-engine-window: choose one")
    # (name, worker environment, binary, bench-engine window: 0 runs the worker)
    variants = [("default", {}, a.bin, a.engine_window)]
    for v in a.variant:
        variants.append((v, dict(kv.split("=", 1) for kv in v.split(",")), a.bin, 0))
    for b in a.variant_bin:
        variants.append((f"bin {b}", {}, b, a.engine_window))
    if a.and_engine_window:
        variants.append((f"engine W={a.and_engine_window}", {}, a.bin, a.and_engine_window))

    def one_run(env, binary, window):
        def run():
            if window:
                x = engine(binary, a.model, sents, a.jobs, 2, 1, 1, batch=r["batch"],
                           window=window, tokens=r["tokens"],
                           min_batch=r["min_batch"])
                x["segments_per_sec"] = x["sentences_per_sec"]
                return x
            ex, q = names()
            w = Worker(binary, a.model, ex, q, threads=2, extra=env)
            try:
                # Where the two cores went during the run: the engine inside the
                # worker, the rest of the worker, and what shares the machine with it.
                before = cpu_seconds(w)
                x = loadgen(a.bin, ex, sents, a.jobs, a.in_flight or a.jobs)
                after = cpu_seconds(w)
                x["cpu_seconds"] = {k: after[k] - before[k] for k in before}
                return x
            finally:
                w.stop()
        return run

    def ceiling():
        return engine(a.bin, a.model, sents, a.jobs, 2, 1, 1,
                      batch=r["batch"])["sentences_per_sec"]

    order = [v for _ in range(max(1, a.repeat)) for v in variants]
    runs = bracketed(ceiling, [one_run(env, binary, window) for _, env, binary, window in order])
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    if a.engine_window:
        label = f"(d) W={a.engine_window}"
        leg = f"{label}, engine only"
    else:
        label = f"{a.in_flight} in flight" if a.in_flight else "(b)"
        leg = f"(a)-like, {label}" if a.in_flight else label
    print(f"CPU: {cpu}; model: {a.model}; leg {leg} only, {a.jobs} jobs, "
          f"ceiling batch {r['batch']}")
    for (name, *_), x in zip(order, runs):
        print(f"  {name:<40} {label} {x['segments_per_sec']:7.2f} seg/s  ceilings "
              f"{x['ceilings'][0]:.2f}/{x['ceilings'][1]:.2f}  ratio "
              f"{x['segments_per_sec'] / x['ceiling_around']:.3f}{timeline_note(x)}")
        if "cpu_seconds" in x:
            print("      CPU-seconds during the run: " + ", ".join(
                f"{k} {v:.2f}" for k, v in x["cpu_seconds"].items()))
    for name, *_ in variants:
        ratios = [x["segments_per_sec"] / x["ceiling_around"]
                  for (n, *_), x in zip(order, runs) if n == name]
        print(f"{name:<40} {label} / ceiling around the run: mean {statistics.mean(ratios):.3f}, "
              f"min {min(ratios):.3f}, max {max(ratios):.3f}")
    if a.json_out:
        with open(a.json_out, "w", encoding="utf-8") as f:
            json.dump({"backlog_only": [dict(x, variant=n) for (n, *_), x in zip(order, runs)]},
                      f, indent=1)


def proc_cpu(pid) -> float:
    """User + system CPU-seconds of process `pid` so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of proc(5), counted after the command's closing parenthesis.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_named(comm) -> list:
    """Every process whose command name is `comm`."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm", encoding="utf-8") as f:
                    if f.read().strip() == comm:
                        out.append(int(d))
            except OSError:
                pass
    return out


def cpu_seconds(worker) -> dict:
    """CPU-seconds so far of the worker (its inference wall time from /metrics, and
    the rest of its CPU time: negative when inference threads waited off the CPU),
    RabbitMQ, Redis, this script's finished children (the load generator), and the
    machine's idle and stolen seconds (all cores)."""
    inference = worker_metric(worker, "translation_worker_inference_seconds_sum")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open("/proc/stat", encoding="ascii") as f:
        # cpu user nice system idle iowait irq softirq steal ...
        machine = [int(v) / os.sysconf("SC_CLK_TCK") for v in f.readline().split()[1:]]
    return {
        "worker inference": inference,
        "worker other": proc_cpu(worker.proc.pid) - inference,
        "rabbitmq": sum(proc_cpu(p) for p in pids_named("beam.smp")),
        "redis": sum(proc_cpu(p) for p in pids_named("redis-server")),
        "loadgen": children.ru_utime + children.ru_stime,
        # The machine's: cores idle, and time the hypervisor ran something else.
        "idle": machine[3] + machine[4],
        "steal": machine[7],
    }


def worker_metric(worker, name) -> float:
    """One unlabelled sample of the worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise SystemExit(f"{name} missing from the worker's /metrics")


def lanes(a, sents) -> dict:
    """Priority lanes: a bulk backlog alone, then with interactive jobs alongside."""
    docs = a.lane_docs or (200 if a.jobs >= 200 else 20)
    bulk = ("--document-sentences", str(a.doc_sentences), "--unique")
    out = {"docs": docs, "rate": a.lane_rate}

    log(f"lanes: idle latency of a one-sentence interactive job, then {docs} bulk documents "
        f"of {a.doc_sentences} sentences as a backlog, alone")
    ex, q = names()
    w = Worker(a.bin, a.model, ex, q, threads=2)
    try:
        out["idle"] = loadgen(a.bin, ex, sents, 10, 1,
                              extra=("--lane", "interactive", "--unique"))
        n0 = worker_metric(w, "translation_worker_inference_seconds_count")
        s0 = worker_metric(w, "translation_worker_inference_seconds_sum")
        out["bulk_alone"] = loadgen(a.bin, ex, sents, docs, docs, extra=bulk)
        n1 = worker_metric(w, "translation_worker_inference_seconds_count")
        s1 = worker_metric(w, "translation_worker_inference_seconds_sum")
        # A batch duration of the backlog alone: what the bound counts in.
        out["bulk_batch_s"] = (s1 - s0) / max(1.0, n1 - n0)
    finally:
        w.stop()

    # As many interactive jobs as the backlog alone took seconds at the rate: they
    # cover the loaded run (which should take about as long).
    jobs = max(4, int(out["bulk_alone"]["elapsed_s"] * a.lane_rate))
    log(f"lanes: the same backlog with {jobs} interactive jobs at {a.lane_rate}/s alongside")
    ex, q = names()
    w = Worker(a.bin, a.model, ex, q, threads=2)
    try:
        cmd = [a.bin, "loadgen", "--amqp-url", AMQP, "--exchange", ex, "--source", "ko",
               "--target", "en", "--file", sents, "--jobs", str(docs), "--concurrency",
               str(docs), "--texts-per-job", "1", "--timeout-ms", "600000", "--json",
               "--verify-copy", *bulk]
        backlog = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        # Let the backlog be published and queued first.
        time.sleep(1.0)
        out["interactive"] = loadgen(a.bin, ex, sents, jobs, 16,
                                     extra=("--lane", "interactive", "--unique",
                                            "--rate", str(a.lane_rate)))
        stdout, _ = backlog.communicate(timeout=3600)
        if backlog.returncode != 0:
            raise SystemExit(f"the lanes backlog loadgen failed ({backlog.returncode})")
        out["bulk_loaded"] = json.loads(stdout.strip().splitlines()[-1])
        # Where an interactive text's time goes: its batcher wait (lane_wait) within
        # its job's receipt-to-ack (lane_job_duration), as cumulative buckets.
        with urllib.request.urlopen(f"http://127.0.0.1:{w.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out["interactive_buckets"] = {
            name: {l.split('le="')[1].split('"')[0]: float(l.split()[-1])
                   for l in text.splitlines()
                   if l.startswith(f"translation_worker_{name}_bucket")
                   and 'lane="interactive"' in l}
            for name in ("lane_wait_seconds", "lane_job_duration_seconds")}
        batches = worker_metric(w, "translation_worker_inference_seconds_count")
        seconds = worker_metric(w, "translation_worker_inference_seconds_sum")
        out["batch_s"] = seconds / max(1.0, batches)
        out["batches"] = batches
    finally:
        w.stop()
    # The bound: idle latency + 2 batch durations of the backlog alone. Also kept: the
    # same with the loaded run's mean batch (interactive-led batches are shorter, so
    # this bound is the stricter one).
    out["bound_ms"] = out["idle"]["latency_ms"]["p50"] + 2000.0 * out["bulk_batch_s"]
    out["bound_loaded_ms"] = out["idle"]["latency_ms"]["p50"] + 2000.0 * out["batch_s"]
    log(f"lanes: interactive p50 {out['interactive']['latency_ms']['p50']:.0f} ms, p99 "
        f"{out['interactive']['latency_ms']['p99']:.0f} ms; idle p50 "
        f"{out['idle']['latency_ms']['p50']:.0f} ms; mean batch {1000 * out['bulk_batch_s']:.0f} "
        f"ms alone, {1000 * out['batch_s']:.0f} ms loaded")
    slow = ", ".join(f"{j['latency_ms']:.0f} ms (sent at {j['sent_at_s']:.1f} s, "
                     f"unix ms {j.get('sent_at_unix_ms')})"
                     for j in out["interactive"].get("slowest", []))
    log(f"lanes: slowest interactive jobs: {slow}")
    for name, buckets in out["interactive_buckets"].items():
        log(f"lanes: interactive {name} (le: cumulative count): {buckets}")
    return out


def curve(a) -> None:
    """The engine's efficiency curve, as ratios to the best point of the run."""
    with open(a.sentences, encoding="utf-8") as f:
        lines = [l.rstrip("\n") for l in f if l.strip()][: a.jobs]
    sents = os.path.join(tempfile.mkdtemp(prefix="twcurve-"), "sentences.txt")
    with open(sents, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    rows = []
    for b in (4, 8, 16, 32, 64, 128):
        log(f"curve: batch {b}, sorted and unsorted")
        rows.append((f"sorted, max {b} texts", engine(a.bin, a.model, sents, a.jobs, 2, 1, a.repeat, batch=b)))
        rows.append((f"unsorted, {b} texts", engine(a.bin, a.model, sents, a.jobs, 2, 1, a.repeat, batch=b,
                                                  in_order=True)))
    for t in (512, 1024, 2048, 4096):
        log(f"curve: token budget {t} (sorted, up to 256 texts)")
        rows.append((f"sorted, max {t} padded tokens", engine(a.bin, a.model, sents, a.jobs, 2, 1, a.repeat,
                                                            batch=256, window=len(lines), tokens=t)))
    top = max(x["sentences_per_sec"] for _, x in rows)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    print(f"CPU: {cpu}; model: {a.model}; {len(lines)} sentences; 2 replicas x 1 thread")
    print(f"{'batches':<34} {'vs best':>8} {'batches':>8} {'padded/real':>12}")
    for name, x in rows:
        print(f"{name:<34} {x['sentences_per_sec'] / top:8.3f} {x['batches']:8d} "
              f"{x['padded_tokens'] / max(1, x['source_tokens']):12.3f}")
    print(f"(scale only: best {top:.2f} sentences/s)")
    if a.json_out:
        with open(a.json_out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)


def timeline_note(x) -> str:
    """What a (d) run's batch timeline says (bench-engine --window prints one): how long
    a replica idled at the end, how far the drain's estimate of the busy replicas' work
    was off, and how much the engine's speed per cost unit varied between batches."""
    t = x.get("timeline") or []
    if not t:
        return ""
    run_end = max(b["end_ms"] for b in t)
    last = {}
    for b in t:
        last[b["replica"]] = max(last.get(b["replica"], 0.0), b["end_ms"])
    idle = run_end - min(last.values())
    speeds = [b["cost"] / (b["end_ms"] - b["start_ms"]) for b in t
              if b["end_ms"] > b["start_ms"] and b["cost"] > 0]
    note = (f"; replica idle at the end {idle:.0f} ms of {run_end:.0f}; "
            f"cost {sum(b['cost'] for b in t)}")
    if speeds:
        med = statistics.median(speeds)
        # As scripts/batch_log.py counts the worker's: batches of 8 or more texts.
        big = [b for b in t if b["texts"] >= 8 and b["end_ms"] > b["start_ms"]]
        units = sum(b["cost"] for b in big) / max(1e-9, sum(b["end_ms"] - b["start_ms"]
                                                             for b in big))
        note += (f"; batch speed max/min {max(speeds) / min(speeds):.2f} "
                 f"over {len(speeds)} batches, units/ms {units:.0f}")
        # The estimate the policy was given at each cut against what the other
        # replicas' running batches then had left (in ms at the median speed).
        errs = []
        for b in t:
            if b["busy_left"] <= 0:
                continue
            actual = sum(o["end_ms"] - b["start_ms"] for o in t if o is not b
                         and o["start_ms"] <= b["start_ms"] < o["end_ms"])
            if actual > 0:
                errs.append(b["busy_left"] / med / actual)
        if errs:
            note += (f"; busy estimate / actual median {statistics.median(errs):.2f} "
                     f"(range {min(errs):.2f}-{max(errs):.2f})")
    return note


def report(a, r, ceiling) -> None:
    closed = r["closed"]["segments_per_sec"]
    docs_ceiling = r["ceiling_docs"]["sentences_per_sec"]
    # The ceiling must have translated what the worker did: (c)'s segments, not lines.
    segments = {x.get("segments") for x in r["documents_runs"]}
    if segments != {r["ceiling_docs"]["sentences"]}:
        raise SystemExit(f"FAILED: (c)'s ceiling translated {r['ceiling_docs']['sentences']} "
                         f"texts, the worker {segments}")
    figures = [
        ("(a) closed loop, 64 in flight / sorted ceiling around the run",
         around(r["closed_runs"]), ">= 0.85"),
        ("  (a) / the run's first sorted ceiling", closed / ceiling, "(drift included)"),
        ("(b) backlog / sorted ceiling around the run", around(r["backlog_runs"]), ">= 0.95"),
        ("  (b) / the run's first sorted ceiling", r["backlog"]["segments_per_sec"] / ceiling,
         "(drift included)"),
        ("(c) documents / ceiling over the same segments around the run",
         around(r["documents_runs"]), ">= 0.95"),
        ("  (c) / that ceiling measured before leg (d)",
         r["documents"]["segments_per_sec"] / docs_ceiling, "(drift included)"),
        ("  (c) corpus lines/s / sorted ceiling over the lines",
         r["documents"]["lines_per_sec"] / ceiling, "(lines cut into more segments)"),
    ]
    passes = ceiling_passes(r["closed_runs"]) + ceiling_passes(r["backlog_runs"])
    figures.append(("  drift: slowest / fastest ceiling pass around (a) and (b)",
                    min(passes) / max(passes), "(diagnostic)"))
    for w, x in sorted(r["windows"].items(), key=lambda kv: int(kv[0])):
        figures.append((f"(d) policy over a window of {w} / sorted ceiling around it",
                        x["sentences_per_sec"] / x["ceiling_around"],
                        f"(padded/real tokens {x['padded_tokens'] / max(1, x['source_tokens']):.3f}; "
                        f"/ first ceiling {x['sentences_per_sec'] / ceiling:.3f}"
                        f"{timeline_note(x)})"))
    if "doc_window" in r:
        x = r["doc_window"]
        figures.append((f"(d) over 8 whole documents of {a.doc_sentences} / (c)'s ceiling around it",
                        x["sentences_per_sec"] / x["ceiling_around"],
                        f"(padded/real tokens {x['padded_tokens'] / max(1, x['source_tokens']):.3f}; "
                        f"/ its first ceiling {x['sentences_per_sec'] / docs_ceiling:.3f}"
                        f"{timeline_note(x)})"))
    figures.append(("  unsorted batches of the worker's size / sorted ceiling",
                    r["in_order"]["sentences_per_sec"] / ceiling,
                    f"(padded/real tokens {r['in_order']['padded_tokens'] / max(1, r['in_order']['source_tokens']):.3f})"))
    if "wheel12" in r:
        figures += [
            ("(a) / (e) wheel raw 1 x 2 (its default)", closed / r["wheel12"]["sentences_per_sec"], ">= 1.3"),
            ("(a) / (e) wheel raw 2 x 1", closed / r["wheel21"]["sentences_per_sec"], ""),
        ]
    if "peer12" in r:
        peer_best = max(r["peer12"]["segments_per_sec"], r["peer21"]["segments_per_sec"])
        figures.append(("(a) / (f) Python peer at its best threading", closed / peer_best, ">= 1.8"))
    if "beam4" in r:
        figures.append(("(g) (a) with beam 4 / sorted ceiling at beam 4",
                        r["beam4"]["segments_per_sec"] / r["ceiling_beam4"]["sentences_per_sec"], ""))
    if "baseline" in r:
        figures.append(("p99 latency under (a): this build / baseline",
                        r["closed"]["latency_ms"]["p99"] / r["baseline"]["latency_ms"]["p99"], "<= 1.0"))
        figures.append(("(a) throughput: this build / baseline",
                        closed / r["baseline"]["segments_per_sec"], ""))
    if "hits64" in r and "echo64" in r:
        figures.append(("cache-hit path (worker all hits / echo, jobs/s)",
                        r["hits64"]["jobs_per_sec"] / r["echo64"]["jobs_per_sec"], ">= 0.8"))
    if "worker1" in r:
        figures.append(("batching gain (64 in flight / 1 in flight)",
                        closed / r["worker1"]["segments_per_sec"], ""))
    if "lone_worker" in r:
        lone_engine_ms = min(1000.0 / s for s in r["lone_engine"]["runs"])
        lone_worker_ms = r["lone_worker"]["latency_ms"]["min"]
        lone_engine_p50 = statistics.median(1000.0 / s for s in r["lone_engine"]["runs"])
        lone_worker_p50 = r["lone_worker"]["latency_ms"]["p50"]
        figures += [
            ("idle latency overhead, ms (lone job p50 - engine alone median)",
             lone_worker_p50 - lone_engine_p50, "<= 2 ms"),
            ("  same, fastest of each", lone_worker_ms - lone_engine_ms, "(diagnostic)"),
        ]
        if "outside_engine_ms" in r["lone_worker"]:
            figures.append(("  the worker's own: job duration - inference, ms per lone job",
                            r["lone_worker"]["outside_engine_ms"],
                            "(drift-free; excludes broker and client)"))
    if "two1x1" in r:
        figures.append(("multi-worker scaling (2 processes x 1 thread / 1 x 2 threads)",
                        r["two1x1"]["segments_per_sec"] / closed, ""))
    if "lanes" in r:
        x = r["lanes"]
        lat = x["interactive"]["latency_ms"]
        figures += [
            ("lanes: interactive p99 / (idle p50 + 2 bulk batch durations)",
             lat["p99"] / x["bound_ms"], "<= 1.0"),
            ("  interactive p50 / (idle p50 + 2 bulk batch durations)",
             lat["p50"] / x["bound_ms"], ""),
            ("  interactive p99 / (idle p50 + 2 loaded mean batch durations)",
             lat["p99"] / x["bound_loaded_ms"], "(stricter)"),
            ("lanes: bulk throughput with interactive load / without",
             x["bulk_loaded"]["segments_per_sec"] / x["bulk_alone"]["segments_per_sec"], ">= 0.95"),
            ("  (bulk + interactive segments/s with load) / bulk alone",
             (x["bulk_loaded"]["segments_per_sec"] + x["interactive"]["segments_per_sec"])
             / x["bulk_alone"]["segments_per_sec"], "(diagnostic)"),
        ]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    print(f"CPU: {cpu}; model: {a.model}; sentences: {a.jobs} of {a.sentences}; "
          f"worker batches {r['min_batch']}..{r['batch']} texts, {r['tokens']} tokens")
    scale = [f"ceiling {ceiling:.2f} sent/s (around the runs of (a), (b): "
             + ", ".join(f"{c:.2f}" for c in ceiling_passes(r["closed_runs"])
                         + ceiling_passes(r["backlog_runs"]))
             + "; of (c): " + ", ".join(
                 f"{c:.2f}" for c in ceiling_passes(r["documents_runs"])) + ")",
             f"(a) {closed:.2f}",
             f"(b) {r['backlog']['segments_per_sec']:.2f}",
             f"(c) {r['documents']['segments_per_sec']:.2f} seg/s "
             f"({r['documents']['lines_per_sec']:.2f} lines/s; its ceiling "
             f"{r['ceiling_docs']['sentences_per_sec']:.2f} seg/s)",
             f"unsorted {r['in_order']['sentences_per_sec']:.2f}"]
    for k in ("wheel12", "wheel21"):
        if k in r:
            scale.append(f"{k} {r[k]['sentences_per_sec']:.2f}")
    for k in ("peer12", "peer21", "beam4", "baseline"):
        if k in r:
            scale.append(f"{k} {r[k]['segments_per_sec']:.2f}")
    if "ceiling_beam4" in r:
        scale.append(f"ceiling_beam4 {r['ceiling_beam4']['sentences_per_sec']:.2f}")
    print("(scale only: " + ", ".join(scale) + ")")
    lat = [f"{k} p50 {r[k]['latency_ms']['p50']:.0f} / p99 {r[k]['latency_ms']['p99']:.0f} ms"
           for k in ("closed", "baseline") if k in r]
    if "lanes" in r:
        x = r["lanes"]
        lat.append(f"lanes: {x['docs']} bulk documents, interactive at {x['rate']}/s: "
                   f"p50 {x['interactive']['latency_ms']['p50']:.0f} / p99 "
                   f"{x['interactive']['latency_ms']['p99']:.0f} ms, idle p50 "
                   f"{x['idle']['latency_ms']['p50']:.0f} ms, mean batch "
                   f"{1000 * x['bulk_batch_s']:.0f} ms alone, {1000 * x['batch_s']:.0f} ms "
                   f"loaded; bulk {x['bulk_alone']['segments_per_sec']:.1f} "
                   f"seg/s alone, {x['bulk_loaded']['segments_per_sec']:.1f} loaded")
    print("(latency: " + "; ".join(lat) + ")")
    for name, value, target in figures:
        print(f"{name:<64} {value:8.3f}  {('target ' + target) if target.startswith(('<', '>')) else target}")
    legs = [v for v in r.values() if isinstance(v, dict) and "lost" in v]
    legs += [v for v in r.get("lanes", {}).values() if isinstance(v, dict) and "lost" in v]
    legs += [x for k, v in r.items() if k.endswith("_runs") for x in v]
    lost = sum(v.get("lost", 0) for v in legs)
    bad = sum(v.get("mismatches", 0) for v in legs)
    if lost or bad:
        raise SystemExit(f"FAILED: {lost} jobs lost, {bad} wrong translations")


if __name__ == "__main__":
    main()
