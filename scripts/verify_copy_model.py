#!/usr/bin/env python3
"""Check that a copy model made by ``make_test_model.py`` translates text to itself.

For a few hundred strings (Korean business text, English, mixed scripts,
emojis, bidi controls, NUL and other control characters, odd whitespace,
empty and very long strings) the script tokenizes with ``source.spm``,
translates with ``ctranslate2.Translator`` for every combination of compute
type, beam size and "append </s> yourself or not", decodes with
``target.spm`` and requires ``output == input`` exactly.  Texts are
shuffled so that every batch mixes lengths (padding).

Exit status: 0 when everything round-trips, 1 on any mismatch.

Usage::

    python3 scripts/verify_copy_model.py tests/fixtures/copy-model
    python3 scripts/verify_copy_model.py /tmp/opus-copy --compute-types \\
        --bench benches/data/sentences.ko.txt      # speed only
"""

import argparse
import json
import os
import random
import sys
import time
from typing import Dict, List, Tuple

import ctranslate2
import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_sentences  # noqa: E402  (sibling script)

EOS = "</s>"
# SentencePiece turns spaces into U+2581 and back, so a literal U+2581 in the
# input comes back as a space.  This is a tokenizer property, not the model's.
META_SPACE = "\u2581"


def special_strings() -> List[str]:
    """Hand-picked edge cases (none contains U+2581)."""
    controls = "".join(chr(c) for c in range(0x00, 0x20)) + "\x7f" + "\x80\x85\x9f"
    return [
        "", " ", "   ", "\t", "\n", "\r\n", "a", "가", ".", "1", "0",
        "  leading spaces", "trailing spaces   ", "  both  ", "multiple     inner   spaces",
        " \t mixed\twhite \n space \r\n", "\u3000전각 공백\u3000", "no\u00a0break\u00a0space",
        "\u2028line separator\u2029paragraph",
        "NUL in\x00the middle", "\x00", "\x00\x00 \x00", controls, "bell\x07 esc\x1b[31m red\x1b[0m",
        "\ufeffBOM first", "zero\u200bwidth\u200cjoiner\u200d", "soft\u00adhyphen",
        "\u202eRTL override\u202c then normal", "\u202dLTR override\u202c", "\u200f\u200e marks",
        "\u2066isolate\u2069 \u2067rtl isolate\u2069",
        "مرحبا بالعالم 123", "שלום עולם!", "English שלום mixed مرحبا",
        "😀", "👍🏽 thumbs", "👨‍👩‍👧‍👦 family", "🇰🇷🇺🇸 flags", "1️⃣ keycap", "🏳️‍🌈",
        "emoji in 한국어 문장 😀 입니다 🎉🎉",
        "e\u0301 combining, \u1100\u1161\u11a8 conjoining jamo, ㄱㄴㄷ compat jamo",
        "ＦＵＬＬＷＩＤＴＨ ｶﾀｶﾅ", "日本語のテキストと中文混合", "Ελληνικά, русский, ქართული",
        "\U0001d400\U0001d401 math bold", "\U00020000\U0002a6d6 CJK ext B", "\ue000\U000f0000 private use",
        "\ufffd replacement", "\ufffe\uffff noncharacters", "\U0010ffff max scalar",
        "</s>", "<unk>", "<pad>", "<s>", "<0x41>", "literal </s> inside text",
        "a\\b \"quoted\" 'single' `tick` \\x41",
        "계약 금액: 1,250,000원 (VAT 포함) — 2024.03.15 / PO-1234 #ERP@v2.4.1",
        "https://example.com/path?q=값&x=1 user@example.co.kr",
    ]


def random_unicode(rng: random.Random, n: int) -> List[str]:
    """Random strings of valid Unicode scalar values from several planes."""
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x5FF), (0x600, 0x6FF), (0x900, 0x97F),
              (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xE000, 0xF8FF),
              (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0x0, 0x1F)]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(1, 40)):
            lo, hi = rng.choice(ranges)
            c = chr(rng.randint(lo, hi))
            chars.append(" " if c == META_SPACE else c)
        out.append("".join(chars))
    return out


def build_texts(sp: spm.SentencePieceProcessor, max_pieces: int) -> List[str]:
    """The full test set; every text fits in ``max_pieces`` source pieces."""
    rng = random.Random(99)
    ko = make_sentences.generate(160, seed=4242, lang="ko")
    en = make_sentences.generate(40, seed=4242, lang="en")
    texts = special_strings() + ko + en
    texts += ["%s %s" % (a, b) for a, b in zip(ko[:30], en[:30])]
    texts += ["  " + s.replace(" ", "  ") + " " for s in ko[30:40]]
    syllables = "".join(chr(c) for c in range(0xAC00, 0xD7A4))
    texts += [" ".join("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))
                       for _ in range(rng.randint(1, 12))) for _ in range(20)]
    texts += random_unicode(rng, 60)
    # Long texts: ~100-200 pieces, and one exactly at the model's limit.
    long_texts = [" ".join(ko[i:i + k]) for i, k in ((50, 3), (60, 5), (70, 8), (80, 10))]
    texts += [t for t in long_texts if len(sp.encode(t)) <= 200]
    texts.append(fit_pieces(sp, " ".join(ko), 200))
    texts.append(fit_pieces(sp, " ".join(ko), max_pieces))
    return [t for t in texts if len(sp.encode(t)) <= max_pieces]


def fit_pieces(sp: spm.SentencePieceProcessor, text: str, n: int) -> str:
    """The longest prefix of ``text`` that encodes to exactly ``n`` pieces (or fewer)."""
    pieces = sp.encode(text, out_type=str)[:n]
    prefix = sp.decode_pieces(pieces)
    while len(sp.encode(prefix)) > n:
        prefix = prefix[:-1]
    return prefix


def run_case(translator: ctranslate2.Translator, sp: spm.SentencePieceProcessor,
             texts: List[str], beam: int, append_eos: bool, max_pos: int,
             batch_size: int = 16) -> List[Tuple[str, str]]:
    """Translate ``texts`` in batches; return the (input, output) pairs that differ.

    Each batch gets max_decoding_length = longest source + 2, capped by the
    position table: beam search keeps decoding until beam_size hypotheses
    have finished, and the runner-up beams of a copy model do not stop at the
    source's end, so a larger limit would run past the learned positions.
    """
    bad = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        tokens = [sp.encode(t, out_type=str) + ([EOS] if append_eos else []) for t in batch]
        limit = min(max_pos, max(map(len, tokens)) + 2)
        results = translator.translate_batch(tokens, beam_size=beam,
                                             max_decoding_length=limit)
        outputs = [sp.decode_pieces(r.hypotheses[0]) for r in results]
        bad += [(t, o) for t, o in zip(batch, outputs) if t != o]
    return bad


def limit_probe(translator: ctranslate2.Translator, sp: spm.SentencePieceProcessor,
                max_len: int) -> Dict[str, str]:
    """What happens at and past the limit (informational, never fails the run)."""
    probes = {}
    ko = " ".join(make_sentences.generate(400, seed=5, lang="ko"))
    for n in (max_len - 2, max_len - 1, max_len, max_len + 50):
        text = fit_pieces(sp, ko, n)
        for append_eos in (True, False):
            tokens = sp.encode(text, out_type=str) + ([EOS] if append_eos else [])
            key = "%d pieces%s" % (len(sp.encode(text)), " + </s>" if append_eos else "")
            try:
                r = translator.translate_batch([tokens], beam_size=1,
                                               max_decoding_length=min(n + 2, max_len))[0]
                probes[key] = "ok, output == input: %s" % (sp.decode_pieces(r.hypotheses[0]) == text)
            except Exception as exc:  # noqa: BLE001 - report whatever the runtime says
                probes[key] = "%s: %s" % (type(exc).__name__, exc)
    return probes


def bench(model_dir: str, sp: spm.SentencePieceProcessor, path: str, n: int) -> Dict[str, float]:
    """Sentences/s, int8, greedy, on the first ``n`` lines of ``path``."""
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f][:n]
    tokens = [sp.encode(t, out_type=str) for t in lines]
    out = {"sentences": len(lines), "mean_pieces": sum(map(len, tokens)) / len(tokens)}
    for inter, intra in ((1, 2), (2, 1)):
        tr = ctranslate2.Translator(model_dir, compute_type="int8",
                                    inter_threads=inter, intra_threads=intra)
        tr.translate_batch(tokens[:4], beam_size=1, max_decoding_length=512)  # warm-up
        start = time.perf_counter()
        results = tr.translate_batch(tokens, beam_size=1, max_batch_size=16,
                                     max_decoding_length=512)
        elapsed = time.perf_counter() - start
        ok = all(sp.decode_pieces(r.hypotheses[0]) == t for r, t in zip(results, lines))
        key = "inter%d_intra%d" % (inter, intra)
        out[key + "_batched16_sent_per_s"] = round(len(lines) / elapsed, 1)
        out[key + "_all_copied"] = ok
        if inter == 1:
            start = time.perf_counter()
            for t in tokens[:100]:
                tr.translate_batch([t], beam_size=1, max_decoding_length=512)
            out[key + "_one_by_one_sent_per_s"] = round(100 / (time.perf_counter() - start), 1)
        del tr
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Verify a CTranslate2 copy model.")
    parser.add_argument("model_dir")
    parser.add_argument("--compute-types", nargs="*", default=["int8", "float32"],
                        help="compute types to check (none: only --bench)")
    parser.add_argument("--beams", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--max-len", type=int, default=1024,
                        help="the --max-len the model was generated with (default 1024)")
    parser.add_argument("--threads", type=int, default=1, help="intra_threads for the checks")
    parser.add_argument("--bench", metavar="SENTENCES", help="also measure speed on this file")
    parser.add_argument("--bench-n", type=int, default=300)
    args = parser.parse_args(argv)

    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.model_dir, "source.spm"))
    with open(os.path.join(args.model_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    # Learned positions: the encoder input must fit in the table.  With
    # add_source_eos=true CTranslate2 appends </s> itself, *also* when the
    # caller already did, so appending it by hand costs one more position.
    max_pos = args.max_len
    runtime_eos = bool(config.get("add_source_eos"))
    max_pieces = max_pos - 1 - int(runtime_eos)
    texts = build_texts(sp, max_pieces)
    random.Random(7).shuffle(texts)  # mix lengths inside each batch
    lengths = [len(sp.encode(t)) for t in texts]
    print("texts: %d, pieces min/max: %d/%d, add_source_eos in config: %s"
          % (len(texts), min(lengths), max(lengths), config.get("add_source_eos")))

    failures = 0
    total = 0
    for compute_type in args.compute_types:
        translator = ctranslate2.Translator(args.model_dir, compute_type=compute_type,
                                            intra_threads=args.threads)
        for beam in args.beams:
            for append_eos in (True, False):
                bad = run_case(translator, sp, texts, beam, append_eos, max_pos)
                total += len(texts)
                failures += len(bad)
                print("%-8s beam=%d append </s>=%-5s : %d/%d exact"
                      % (compute_type, beam, append_eos, len(texts) - len(bad), len(texts)))
                for text, out in bad[:5]:
                    print("   MISMATCH %r -> %r" % (text[:80], out[:80]))
        if compute_type == args.compute_types[0]:
            meta = run_case(translator, sp, ["a" + META_SPACE + "b"], 1, True, 16)
            print("known tokenizer limit: literal U+2581 round-trips: %s" % (not meta))
            for key, value in limit_probe(translator, sp, max_pos).items():
                print("beyond the limit (%s): %s" % (key, value))
        del translator

    if total:
        print("TOTAL: %d/%d exact (%.2f%%)" % (total - failures, total,
                                             100.0 * (total - failures) / total))
    if args.bench:
        print("bench:", json.dumps(bench(args.model_dir, sp, args.bench, args.bench_n)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
