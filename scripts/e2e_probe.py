#!/usr/bin/env python3
"""Informal end-to-end probe: publishes N single-text jobs (unique, from the sentence
file) to a running worker's queue, waits for every reply, checks each against its
input (copy model), and prints jobs/s. Not the project benchmark: the loadgen with
latency percentiles is still to come.

    pip install pika
    TW_MODEL__PATH=bench-out/opus-copy TW_AMQP__QUEUE=tw-e2e translation-worker serve &
    python3 scripts/e2e_probe.py --jobs 200 --queue tw-e2e
"""
import argparse
import json
import time
import uuid

import pika


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--queue", default="translation.jobs")
    p.add_argument("--sentences", default="benches/data/sentences.ko.txt")
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    p.add_argument("--tag", default=None,
                   help="suffix making texts unique; repeat a run's tag to measure cache hits")
    a = p.parse_args()
    with open(a.sentences, encoding="utf-8") as f:
        lines = [l.rstrip("\n") for l in f if l.strip()][: a.jobs]
    # Unique per run unless given, so nothing is served from the cache.
    tag = a.tag or uuid.uuid4().hex[:6]
    texts = [f"{s} [{tag}]" for s in lines]
    conn = pika.BlockingConnection(pika.URLParameters(a.url))
    ch = conn.channel()
    reply_q = ch.queue_declare("", exclusive=True).method.queue
    t0 = time.perf_counter()
    for i, t in enumerate(texts):
        ch.basic_publish("", a.queue, json.dumps({"text": t}),
                         pika.BasicProperties(reply_to=reply_q, correlation_id=str(i),
                                              content_type="application/json"))
    got = ok = 0
    for _, props, body in ch.consume(reply_q, auto_ack=True, inactivity_timeout=60):
        if props is None:
            break
        r = json.loads(body)
        got += 1
        ok += r["status"] == "ok" and r["translations"][0] == texts[int(props.correlation_id)]
        if got == len(texts):
            break
    secs = time.perf_counter() - t0
    print(json.dumps({"jobs": len(texts), "answered": got, "correct": ok, "secs": secs,
                      "jobs_per_sec": len(texts) / secs}))


if __name__ == "__main__":
    main()
