#!/usr/bin/env python3
"""Raw translate_batch throughput of the official CTranslate2 Python wheel.

The counterpart of `translation-worker bench-engine`: same model, same sentences,
same tokenization (source.spm, one "</s>"), same options; prints one JSON line with
the best sentences/s over the timed repetitions (after one warm-up run).
"""
import argparse
import json
import time

import ctranslate2
import sentencepiece as spm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--sentences", required=True)
    p.add_argument("--limit", type=int, default=300)
    p.add_argument("--inter-threads", type=int, default=1)
    p.add_argument("--intra-threads", type=int, default=2)
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--compute-type", default="int8")
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()

    with open(a.sentences, encoding="utf-8") as f:
        sentences = [l.rstrip("\n") for l in f if l.strip()][: a.limit]
    sp = spm.SentencePieceProcessor(model_file=f"{a.model}/source.spm")
    # Exactly one </s>, as the worker does: CTranslate2 adds it itself when the model's
    # config.json says add_source_eos.
    with open(f"{a.model}/config.json", encoding="utf-8") as f:
        eos = [] if json.load(f).get("add_source_eos") else ["</s>"]
    sources = [sp.encode(s, out_type=str) + eos for s in sentences]
    tr = ctranslate2.Translator(
        a.model,
        device="cpu",
        compute_type=a.compute_type,
        inter_threads=a.inter_threads,
        intra_threads=a.intra_threads,
    )
    kw = dict(max_batch_size=a.max_batch_size, beam_size=a.beam_size, max_decoding_length=256)
    tr.translate_batch(sources, **kw)
    runs, best_tokens = [], 0.0
    for _ in range(max(1, a.repeat)):
        t = time.perf_counter()
        out = tr.translate_batch(sources, **kw)
        secs = time.perf_counter() - t
        sps = len(sources) / secs
        if all(r < sps for r in runs):
            best_tokens = sum(len(r.hypotheses[0]) for r in out) / secs
        runs.append(sps)
    print(json.dumps({
        "backend": f"wheel-{ctranslate2.__version__}",
        "sentences": len(sources),
        "sentences_per_sec": max(runs),
        "tokens_per_sec": best_tokens,
        "runs": runs,
        "replicas": a.inter_threads,
        "threads_per_replica": a.intra_threads,
    }))


if __name__ == "__main__":
    main()
