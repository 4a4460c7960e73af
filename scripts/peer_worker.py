#!/usr/bin/env python3
"""A plain Python peer of translation-worker: what a Python team would write first.

pika consumer, micro-batches of up to --batch texts (collected for at most
--max-wait-ms), the official CTranslate2 wheel, redis-py for the cache (SHA-256 of the
text as key). It speaks wire contract v1 for plain one-text jobs (`texts`/`text`,
`source`, `target`, `id`; no `split`, no `options`) and answers `reply_to` with the
`correlation_id`, acking after the reply is published. Benchmark leg (f) of
scripts/bench.py runs it under the same load as the worker; it is not a product.
"""
import argparse
import hashlib
import json
import math
import os
import time

import ctranslate2
import pika
import redis
import sentencepiece as spm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--amqp-url", required=True)
    p.add_argument("--exchange", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("--pair", default="ko-en")
    p.add_argument("--model", required=True)
    p.add_argument("--inter-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--intra-threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--prefetch", type=int, default=64)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--key-prefix", default="peer")
    p.add_argument("--ready-file", help="created once consuming")
    a = p.parse_args()

    translator = ctranslate2.Translator(a.model, device="cpu", compute_type="int8",
                                        inter_threads=a.inter_threads,
                                        intra_threads=a.intra_threads)
    src = spm.SentencePieceProcessor(model_file=os.path.join(a.model, "source.spm"))
    tgt = spm.SentencePieceProcessor(model_file=os.path.join(a.model, "target.spm"))
    with open(os.path.join(a.model, "config.json"), encoding="utf-8") as f:
        eos = [] if json.load(f).get("add_source_eos") else ["</s>"]
    cache = redis.Redis.from_url(a.redis_url)

    conn = pika.BlockingConnection(pika.URLParameters(a.amqp_url))
    ch = conn.channel()
    ch.exchange_declare(a.exchange, "direct", durable=True)
    ch.queue_declare(a.queue, durable=True)
    ch.queue_bind(a.queue, a.exchange, routing_key=a.pair)
    ch.basic_qos(prefetch_count=a.prefetch)
    pending = []
    ch.basic_consume(a.queue, lambda _ch, method, props, body: pending.append((method, props, body)))
    if a.ready_file:
        open(a.ready_file, "w").close()

    def key(text: str) -> str:
        return f"{a.key_prefix}:{hashlib.sha256(text.encode()).hexdigest()}"

    def handle(batch) -> None:
        jobs = []
        for method, props, body in batch:
            try:
                job = json.loads(body)
                texts = job["texts"] if "texts" in job else [job["text"]]
                jobs.append((method, props, job.get("id"), [str(t) for t in texts], None))
            except (ValueError, KeyError, TypeError) as e:
                jobs.append((method, props, None, [], str(e)))
        texts = [t for j in jobs for t in j[3]]
        keys = [key(t) for t in texts]
        hits = cache.mget(keys) if keys else []
        out = {k: h.decode() for k, h in zip(keys, hits) if h is not None}
        misses = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in out and t))
        if misses:
            tokens = [src.encode(t, out_type=str) + eos for t in misses]
            # max_batch_size splits the call over the inter_threads replicas.
            results = translator.translate_batch(
                tokens, beam_size=1, max_decoding_length=256,
                max_batch_size=math.ceil(len(tokens) / a.inter_threads))
            fresh = {key(t): tgt.decode(r.hypotheses[0]) for t, r in zip(misses, results)}
            cache.mset(fresh)
            out.update(fresh)
        for method, props, job_id, job_texts, error in jobs:
            if error is None:
                reply = {"id": job_id, "status": "ok",
                         "translations": [out.get(key(t), "") for t in job_texts],
                         "cached": [False] * len(job_texts), "model": "peer"}
            else:
                reply = {"id": job_id, "status": "error",
                         "error": {"code": "invalid_request", "message": error}}
            if props.reply_to:
                ch.basic_publish("", props.reply_to, json.dumps(reply).encode(),
                                 pika.BasicProperties(correlation_id=props.correlation_id,
                                                      content_type="application/json",
                                                      delivery_mode=2))
            ch.basic_ack(method.delivery_tag)

    try:
        while True:
            conn.process_data_events(time_limit=1.0 if not pending else 0)
            if not pending:
                continue
            # Micro-batch: more jobs for up to --max-wait-ms, at most --batch of them.
            deadline = time.monotonic() + a.max_wait_ms / 1000
            while len(pending) < a.batch and time.monotonic() < deadline:
                conn.process_data_events(time_limit=max(0.0, deadline - time.monotonic()))
            batch, pending[:] = pending[: a.batch], pending[a.batch:]
            handle(batch)
    except KeyboardInterrupt:
        pass
    finally:
        if conn.is_open:
            conn.close()


if __name__ == "__main__":
    main()
