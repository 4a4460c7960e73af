#!/usr/bin/env python3
"""Translate texts through translation-worker (wire contract v1), with pika.

    translate_client.py [--url URL] [--exchange translation] [--source ko] [--target en]
                        [--timeout 30] [TEXT ...]

Texts come from the arguments, else one per line from stdin. Prints one translation
per line. Exits 1 on an error reply, a text that failed, a pair no worker serves, or
no reply in time.

What it shows: publish to the exchange with routing key "<source>-<target>",
mandatory=True and publisher confirms (an unserved pair fails at once instead of
timing out), an exclusive server-named reply queue, a unique correlation_id, and
a wait with a timeout that ignores replies to other (earlier) calls.
"""

import argparse
import json
import sys
import time
import uuid

import pika
from pika.exceptions import NackError, UnroutableError


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    p.add_argument("--exchange", default="translation")
    p.add_argument("--source", default="ko")
    p.add_argument("--target", default="en")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds")
    p.add_argument("texts", nargs="*")
    args = p.parse_args()
    texts = args.texts or sys.stdin.read().splitlines()
    if not texts:
        return 0

    conn = pika.BlockingConnection(pika.URLParameters(args.url))
    try:
        ch = conn.channel()
        # Publisher confirms: basic_publish now waits for the broker and raises
        # UnroutableError when a mandatory job is returned (no queue bound to the pair).
        ch.confirm_delivery()
        # Exclusive, server-named: only this connection reads it; deleted with it.
        reply_queue = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue

        corr = str(uuid.uuid4())
        replies = []

        def on_reply(_ch, _method, props, body):
            # Replies to calls we no longer wait for (late, or a duplicate after a
            # redelivery) carry another correlation_id: ignore them.
            if props.correlation_id == corr:
                replies.append(body)

        ch.basic_consume(reply_queue, on_reply, auto_ack=True)

        job = {
            "texts": texts,
            "source": args.source,
            "target": args.target,
            # Past this the worker answers deadline_exceeded instead of translating.
            "deadline_ms": int(time.time() * 1000 + args.timeout * 1000),
        }
        try:
            ch.basic_publish(
                exchange=args.exchange,
                routing_key=f"{args.source}-{args.target}",
                body=json.dumps(job).encode(),
                properties=pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=2,
                    correlation_id=corr,
                    reply_to=reply_queue,
                ),
                mandatory=True,
            )
        except UnroutableError:
            print(
                f"error: no worker serves {args.source}-{args.target} "
                f"on exchange {args.exchange!r}",
                file=sys.stderr,
            )
            return 1
        except NackError:
            print("error: the broker refused the job", file=sys.stderr)
            return 1

        deadline = time.monotonic() + args.timeout
        while not replies:
            left = deadline - time.monotonic()
            if left <= 0:
                print(f"error: no reply within {args.timeout} s", file=sys.stderr)
                return 1
            conn.process_data_events(time_limit=min(left, 0.5))

        reply = json.loads(replies[0])
        if reply.get("status") != "ok":
            err = reply.get("error", {})
            print(f"error: {err.get('code')}: {err.get('message')}", file=sys.stderr)
            return 1
        for t in reply["translations"]:
            print(t)
        # Present only when some texts were cut at the model's input limit, or failed
        # while others were translated (their translation is then "").
        for i, cut in enumerate(reply.get("truncated") or []):
            if cut:
                print(f"warning: text {i} was truncated", file=sys.stderr)
        failed = [(i, e) for i, e in enumerate(reply.get("errors") or []) if e]
        for i, e in failed:
            print(f"error: text {i}: {e['code']}: {e['message']}", file=sys.stderr)
        return 1 if failed else 0
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
