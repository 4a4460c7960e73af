#!/usr/bin/env python3
"""Build tiny random Hugging Face translation models, convert them with CTranslate2's
own converter, and record what the Python pipeline answers: the fixtures of
``tests/converted.rs``.

Three models, laid out as their real counterparts are on the Hugging Face hub:

* ``marian``: a ``MarianMTModel`` (512 positions, sinusoidal) with its own
  ``source.spm`` / ``target.spm`` / ``vocab.json``, as Helsinki-NLP's OPUS-MT repos;
* ``m2m100``: an ``M2M100ForConditionalGeneration`` with ``vocab.json`` and
  ``sentencepiece.bpe.model`` (the ``M2M100Tokenizer``: ``__ko__``-style codes);
* ``nllb``: an ``M2M100ForConditionalGeneration`` with an NLLB ``tokenizer.json``
  (FLORES-200 codes such as ``kor_Hang``), as facebook/nllb-200-*.

Each is converted exactly as the README tells users to convert the real ones
(``ct2-transformers-converter ... --quantization int8 --copy_files ...``). Then the
reference outputs come from the pipeline CTranslate2's documentation gives for each
model type (the ctranslate2 wheel and the model's own Hugging Face tokenizer):
``convert_ids_to_tokens(encode(text))`` as the source, the target language token as
the target prefix for the multilingual ones, and ``decode(convert_tokens_to_ids(out))``
of the output (without the prefix). ``max_input_length`` is the model's position
limit, as a Python user must set it for such a model (CTranslate2's default, 1024,
fails on longer texts).

Weights are random. At the default init std every input decodes to one repeated
token; std 0.5 gives varied output, so a wrong token anywhere shows. Outputs are
long (up to ``MAX_DECODING_LENGTH``) because a random model rarely ends a sentence.

Needs torch, transformers, sentencepiece, protobuf and ctranslate2 (not run by CI;
the outputs are committed)::

    python3 -m venv /tmp/convert-venv
    /tmp/convert-venv/bin/pip install torch transformers sentencepiece protobuf \\
        ctranslate2==4.8.5
    PATH=/tmp/convert-venv/bin:$PATH \\
        python3 scripts/make_converted_fixtures.py --out tests/fixtures/converted

Deterministic for the same package versions (recorded in each references.json).

**Pinned kernels.** CTranslate2 runs int8 GEMM in oneDNN (or oneMKL), which picks its
kernels by CPU: with AVX-512 VNNI the u8 x s8 products are summed exactly, while the
AVX2 kernel (``vpmaddubsw``) saturates pairs of them at 16 bits. A random model at std
0.5 lives on such near-ties, so the outputs recorded on an Intel Xeon did not hold on
an AMD EPYC (AVX2 only). The references are therefore recorded, and the test checks
them, with the same pins on every x86-64 CPU: ``CT2_USE_MKL=0`` (oneDNN, the worker's
backend) and ``ONEDNN_MAX_CPU_ISA=AVX2`` (CTranslate2's own kernels default to AVX2
everywhere). ``tests/converted.rs`` sets the same two variables (``PINNED_KERNELS``).

``--references-only`` re-records ``references.json`` of the committed fixtures without
rebuilding them (needs only ctranslate2, transformers, sentencepiece, protobuf; no
torch): each model's tokenizer is rebuilt from the files beside it::

    /tmp/convert-venv/bin/pip install transformers sentencepiece protobuf \\
        ctranslate2==4.8.5
    /tmp/convert-venv/bin/python3 scripts/make_converted_fixtures.py \\
        --out tests/fixtures/converted --references-only
"""

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_sentences  # noqa: E402  (sibling script)

# The same pins as `PINNED_KERNELS` in tests/converted.rs, set before CTranslate2 and
# oneDNN read them (see the module doc).
PINNED_KERNELS = {"CT2_USE_MKL": "0", "ONEDNN_MAX_CPU_ISA": "AVX2"}
os.environ.update(PINNED_KERNELS)

import ctranslate2  # noqa: E402
import sentencepiece as spm  # noqa: E402
import transformers  # noqa: E402

# Long enough to tell outputs apart, short enough to keep references small and
# tests quick. The worker's test config sets the same `model.max_decoding_length`.
MAX_DECODING_LENGTH = 24
D_MODEL = 16
INIT_STD = 0.5


def corpus() -> List[str]:
    """Korean business text and English text: what the vocabulary is trained on."""
    ko = make_sentences.generate(400, seed=11, lang="ko")
    en = make_sentences.generate(400, seed=11, lang="en")
    return ko + en


def train_spm(lines: List[str], **ids) -> bytes:
    """A small unigram model with SentencePiece's default normalisation (NFKC, runs
    of spaces collapsed, a word-start mark in front) and no byte fallback, as the
    real OPUS-MT, M2M-100 and NLLB models have: characters outside its vocabulary
    become ``<unk>``."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        model_type="unigram",
        vocab_size=400,
        hard_vocab_limit=False,
        character_coverage=0.9995,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=1,
        minloglevel=2,
        **ids,
    )
    return buf.getvalue()


def inputs() -> List[str]:
    """At least 30 varied inputs: Korean and English sentences, blanks, control
    characters, emoji, other scripts, NFKC-sensitive characters, and one text over
    the position limit."""
    ko = make_sentences.generate(12, seed=99, lang="ko")
    en = make_sentences.generate(4, seed=99, lang="en")
    odd = [
        "",
        " ",
        "   \t  ",
        "\n",
        "회의는 오전 10시에 시작합니다.",
        "감사합니다!",
        "  leading and trailing spaces  ",
        "many     spaces    inside",
        "tab\tand\nnewline",
        "control \x01\x02\x07 characters",
        "NUL \x00 inside",
        "emoji 😀👍🏽 and 👨‍👩‍👧 family",
        "会議資料は前日までに共有してください。",
        "مرحبا بالعالم",
        "RTL \u202eoverride\u202c here",
        "ＦＵＬＬＷＩＤＴＨ ① ﬁ ㈜",
        "e\u0301 combining é",
        "price: $1,234.56 (USD) — 50% off!!!",
        "ALL CAPS SHOUTING",
        "x",
        "한빛전자 " * 200,
    ]
    return ko + en + odd


def hf_tokens(tok, text: str) -> List[str]:
    return tok.convert_ids_to_tokens(tok.encode(text))


def positions(config) -> int:
    """The model's source positions, from its Hugging Face config."""
    return int(config.max_position_embeddings)


class Pipeline:
    """The Python pipeline of CTranslate2's documentation for one converted model.

    ``src_lang`` maps a client code to what the tokenizer's ``src_lang`` takes,
    ``prefix`` to the target token (both ``None`` for a one-pair model)."""

    def __init__(self, ct2_dir: str, tok, limit: int, src_lang=None, prefix=None):
        self.translator = ctranslate2.Translator(ct2_dir, device="cpu", inter_threads=1)
        self.tok = tok
        self.limit = limit
        self.src_lang = src_lang
        self.prefix = prefix

    def translate(self, text: str, source: str, target: str) -> Tuple[str, bool]:
        """The translation, and whether the source had more tokens than the model has
        positions (CTranslate2 then reads only its start)."""
        if self.src_lang is not None:
            self.tok.src_lang = self.src_lang(source)
        src = hf_tokens(self.tok, text)
        prefix = [[self.prefix(target)]] if self.prefix is not None else None
        out = self.translator.translate_batch(
            [src],
            target_prefix=prefix,
            beam_size=1,
            max_decoding_length=MAX_DECODING_LENGTH,
            max_input_length=self.limit,
        )[0].hypotheses[0]
        if prefix is not None:
            out = out[1:]
        return self.tok.decode(self.tok.convert_tokens_to_ids(out)), len(src) > self.limit


def convert(hf_dir: str, out_dir: str, copy_files: List[str]) -> None:
    """The converter's own command line, as the README gives it."""
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    cmd = [
        "ct2-transformers-converter",
        "--model", hf_dir,
        "--output_dir", out_dir,
        "--quantization", "int8",
    ]
    if copy_files:
        cmd += ["--copy_files", *copy_files]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def build_marian(work: str, lines: List[str]) -> str:
    d = os.path.join(work, "hf-marian")
    os.makedirs(d)
    model = train_spm(lines, eos_id=0, eos_piece="</s>", unk_id=1, unk_piece="<unk>",
                      bos_id=-1, pad_id=-1)
    for name in ("source.spm", "target.spm"):
        with open(os.path.join(d, name), "wb") as f:
            f.write(model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    vocab = marian_vocab(sp)
    with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    tok = transformers.MarianTokenizer(
        os.path.join(d, "source.spm"), os.path.join(d, "target.spm"),
        os.path.join(d, "vocab.json"))
    cfg = transformers.MarianConfig(
        vocab_size=len(vocab), d_model=D_MODEL, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_position_embeddings=512, pad_token_id=vocab["<pad>"],
        eos_token_id=0, decoder_start_token_id=vocab["<pad>"], init_std=INIT_STD,
        share_encoder_decoder_embeddings=True)
    transformers.MarianMTModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def m2m100_model(vocab_size: int, **extra):
    """A random one-layer M2M-100 transformer (NLLB has the same architecture) with
    fairseq's special-token ids and 256 positions."""
    cfg = transformers.M2M100Config(
        vocab_size=vocab_size, d_model=D_MODEL, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_position_embeddings=256, init_std=INIT_STD,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
        **extra)
    return transformers.M2M100ForConditionalGeneration(cfg)


def build_m2m100(work: str, lines: List[str]) -> str:
    d = os.path.join(work, "hf-m2m100")
    os.makedirs(d)
    model = train_spm(lines, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    with open(os.path.join(d, "sentencepiece.bpe.model"), "wb") as f:
        f.write(model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    vocab = m2m100_vocab(sp)
    with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    from transformers.models.m2m_100 import tokenization_m2m_100
    # The 100 language tokens as additional special tokens, as facebook/m2m100_418M's
    # tokenizer files list them (the converter takes them from there).
    codes = [f"__{c}__" for c in tokenization_m2m_100.FAIRSEQ_LANGUAGE_CODES["m2m100"]]
    tok = transformers.M2M100Tokenizer(
        os.path.join(d, "vocab.json"), os.path.join(d, "sentencepiece.bpe.model"),
        src_lang="ko", tgt_lang="en", additional_special_tokens=codes)
    # The dictionary, the 100 language codes, and fairseq's 8 "madeup words" (as
    # facebook/m2m100_418M: 128,000 + 4 + 100 + 8 = 128,112).
    m2m100_model(len(tok) + tok.num_madeup_words).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def build_nllb(work: str, lines: List[str]) -> str:
    d = os.path.join(work, "hf-nllb")
    os.makedirs(d)
    spm_dir = os.path.join(work, "nllb-spm")
    os.makedirs(spm_dir)
    with open(os.path.join(spm_dir, "sentencepiece.bpe.model"), "wb") as f:
        f.write(train_spm(lines, unk_id=0, bos_id=1, eos_id=2, pad_id=-1))
    with open(os.path.join(spm_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "NllbTokenizer"}, f)
    from transformers.models.nllb import tokenization_nllb
    # Converted from the SentencePiece model to a tokenizer.json with the 202
    # FLORES-200 codes as special tokens, as facebook/nllb-200-* ship it.
    tok = transformers.NllbTokenizer.from_pretrained(
        spm_dir, additional_special_tokens=tokenization_nllb.FAIRSEQ_LANGUAGE_CODES,
        src_lang="kor_Hang", tgt_lang="eng_Latn")
    tok.save_pretrained(d)
    m2m100_model(len(tok), tokenizer_class="NllbTokenizer").save_pretrained(d)
    return d


# Client code -> FLORES-200 code, for the pairs the fixtures use.
NLLB_CODES = {"ko": "kor_Hang", "en": "eng_Latn", "ja": "jpn_Jpan", "de": "deu_Latn"}


def decode_cases(ct2_dir: str, tok, lang: str) -> List[Dict]:
    """Output token sequences a model can write (every token is in CTranslate2's
    vocabulary) with special tokens among ordinary pieces, and how the model's
    tokenizer decodes each: a random model writes few of them."""
    with open(os.path.join(ct2_dir, "shared_vocabulary.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    known = set(vocab)
    words = [t for t in vocab if t.startswith("\u2581") and len(t) > 1][:3]
    inner = [t for t in vocab if t.isalpha() and not t.startswith("<")][:2]
    a, b, c = words
    seqs = [
        [a, inner[0], b], [a, "<unk>", b], ["<unk>"], [a, "<unk>", "<unk>", c],
        [a, "\u2581"], ["\u2581", a], [a, "</s>", b], [a, "<s>", b], [a, "<pad>", b],
        [a, lang, b], [lang], [lang, a], [a, "madeupword0", b], ["madeupword3"],
        [inner[1], a], [],
    ]
    return [
        {"tokens": seq, "text": tok.decode(tok.convert_tokens_to_ids(seq))}
        for seq in seqs
        if all(t in known for t in seq)
    ]


def cpu_model() -> str:
    """The CPU the references were recorded on (Linux), for the record only."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def record(name: str, ct2_dir: str, pipe: Pipeline, cases: List[Dict], limit: int,
           readme: str, torch_version: str, lang: str = "") -> None:
    for case in cases:
        case["translation"], case["truncated"] = pipe.translate(
            case["text"], case["source"], case["target"])
    refs = {
        "model": name,
        "source_positions": limit,
        "max_decoding_length": MAX_DECODING_LENGTH,
        "generated_with": {
            "ctranslate2": ctranslate2.__version__,
            "transformers": transformers.__version__,
            # The weights' maker (unchanged by --references-only).
            "torch": torch_version,
            "sentencepiece": spm.__version__,
            "pinned_kernels": PINNED_KERNELS,
            "cpu": cpu_model(),
        },
        "cases": cases,
        "decode_cases": decode_cases(ct2_dir, pipe.tok, lang),
    }
    with open(os.path.join(ct2_dir, "references.json"), "w", encoding="utf-8") as f:
        json.dump(refs, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(ct2_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(readme)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for marian/, m2m100/, nllb/")
    p.add_argument("--references-only", action="store_true",
                   help="re-record references.json of the fixtures in --out")
    args = p.parse_args()
    if args.references_only:
        return references_only(args.out)
    import torch
    torch.manual_seed(20261130)
    lines = corpus()
    texts = inputs()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        # Marian / OPUS-MT: one pair, no language tokens.
        hf = build_marian(work, lines)
        out = os.path.join(args.out, "marian")
        convert(hf, out, ["source.spm", "target.spm"])
        tok = transformers.AutoTokenizer.from_pretrained(hf)
        limit = 512
        record("marian", out, Pipeline(out, tok, limit),
               [{"text": t, "source": "ko", "target": "en"} for t in texts], limit,
               README.format(kind="MarianMTModel (OPUS-MT layout)", limit=limit,
                             copy="--copy_files source.spm target.spm"),
               torch.__version__)

        # Multilingual: every text to two targets, and a few other pairs.
        cases = []
        for i, t in enumerate(texts):
            for tgt in (("en", "ja") if i % 2 == 0 else ("en", "de")):
                cases.append({"text": t, "source": "ko", "target": tgt})
        for t in texts[12:16]:
            cases.append({"text": t, "source": "en", "target": "ko"})

        hf = build_m2m100(work, lines)
        out = os.path.join(args.out, "m2m100")
        convert(hf, out, ["sentencepiece.bpe.model"])
        tok = transformers.AutoTokenizer.from_pretrained(hf)
        limit = positions(transformers.AutoConfig.from_pretrained(hf))
        # M2M100Tokenizer takes the plain code as src_lang.
        pipe = Pipeline(out, tok, limit, src_lang=lambda c: c,
                        prefix=lambda c: f"__{c}__")
        record("m2m100", out, pipe, [dict(c) for c in cases], limit,
               README.format(kind="M2M100ForConditionalGeneration (M2M100Tokenizer)",
                             limit=limit, copy="--copy_files sentencepiece.bpe.model"),
               torch.__version__, lang="__en__")

        hf = build_nllb(work, lines)
        out = os.path.join(args.out, "nllb")
        convert(hf, out, ["tokenizer.json"])
        tok = transformers.AutoTokenizer.from_pretrained(hf)
        limit = positions(transformers.AutoConfig.from_pretrained(hf))
        pipe = Pipeline(out, tok, limit, src_lang=NLLB_CODES.__getitem__,
                        prefix=NLLB_CODES.__getitem__)
        record("nllb", out, pipe, [dict(c) for c in cases], limit,
               README.format(kind="M2M100ForConditionalGeneration with an NLLB "
                             "tokenizer.json", limit=limit,
                             copy="--copy_files tokenizer.json"),
               torch.__version__, lang="eng_Latn")
    for name in ("marian", "m2m100", "nllb"):
        size = sum(os.path.getsize(os.path.join(args.out, name, f))
                   for f in os.listdir(os.path.join(args.out, name)))
        print(f"{name}: {size} bytes")
    return 0


def marian_vocab(sp) -> Dict[str, int]:
    """MarianTokenizer's vocab.json: the pieces, then ``<pad>``."""
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    vocab["<pad>"] = len(vocab)
    return vocab


def m2m100_vocab(sp) -> Dict[str, int]:
    """fairseq's dictionary: the four specials first, then the pieces."""
    vocab: Dict[str, int] = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for i in range(sp.get_piece_size()):
        vocab.setdefault(sp.id_to_piece(i), len(vocab))
    return vocab


def references_only(out: str) -> int:
    """Re-records each fixture's references.json from its committed files: the
    tokenizer is rebuilt as ``build_*`` made it, the cases and the weights' torch
    version are kept, the translations and decode cases are computed again."""
    from transformers.models.m2m_100 import tokenization_m2m_100
    from transformers.models.nllb import tokenization_nllb

    with tempfile.TemporaryDirectory() as work:
        for name in ("marian", "m2m100", "nllb"):
            ct2_dir = os.path.join(out, name)
            with open(os.path.join(ct2_dir, "references.json"), encoding="utf-8") as f:
                old = json.load(f)
            limit = old["source_positions"]
            cases = [{k: c[k] for k in ("text", "source", "target")} for c in old["cases"]]
            tmp = os.path.join(work, name)
            os.makedirs(tmp)
            if name == "marian":
                src = os.path.join(ct2_dir, "source.spm")
                sp = spm.SentencePieceProcessor(model_file=src)
                with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
                    json.dump(marian_vocab(sp), f, ensure_ascii=False)
                tok = transformers.MarianTokenizer(
                    src, os.path.join(ct2_dir, "target.spm"), os.path.join(tmp, "vocab.json"))
                pipe, lang = Pipeline(ct2_dir, tok, limit), ""
            elif name == "m2m100":
                model = os.path.join(ct2_dir, "sentencepiece.bpe.model")
                sp = spm.SentencePieceProcessor(model_file=model)
                with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
                    json.dump(m2m100_vocab(sp), f, ensure_ascii=False)
                codes = [f"__{c}__"
                         for c in tokenization_m2m_100.FAIRSEQ_LANGUAGE_CODES["m2m100"]]
                tok = transformers.M2M100Tokenizer(
                    os.path.join(tmp, "vocab.json"), model, src_lang="ko", tgt_lang="en",
                    additional_special_tokens=codes)
                pipe = Pipeline(ct2_dir, tok, limit, src_lang=lambda c: c,
                                prefix=lambda c: f"__{c}__")
                lang = "__en__"
            else:
                shutil.copy(os.path.join(ct2_dir, "tokenizer.json"), tmp)
                with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
                    json.dump({"tokenizer_class": "NllbTokenizer"}, f)
                tok = transformers.AutoTokenizer.from_pretrained(
                    tmp, additional_special_tokens=tokenization_nllb.FAIRSEQ_LANGUAGE_CODES,
                    src_lang="kor_Hang", tgt_lang="eng_Latn")
                pipe = Pipeline(ct2_dir, tok, limit, src_lang=NLLB_CODES.__getitem__,
                                prefix=NLLB_CODES.__getitem__)
                lang = "eng_Latn"
            with open(os.path.join(ct2_dir, "README.md"), encoding="utf-8") as f:
                readme = f.read()
            record(name, ct2_dir, pipe, cases, limit, readme,
                   old["generated_with"]["torch"], lang=lang)
            with open(os.path.join(ct2_dir, "references.json"), encoding="utf-8") as f:
                new = json.load(f)
            if new["decode_cases"] != old["decode_cases"]:
                print(f"{name}: the rebuilt tokenizer decodes differently", file=sys.stderr)
                return 1
            changed = sum(a["translation"] != b["translation"]
                          for a, b in zip(old["cases"], new["cases"]))
            print(f"{name}: {changed} of {len(cases)} translations changed")
    return 0


README = """# Converted fixture: a random {kind}

Made by `scripts/make_converted_fixtures.py` (see there): a tiny Hugging Face model
with random weights (std 0.5), converted by CTranslate2's own
`ct2-transformers-converter --quantization int8 {copy}`. Its outputs are gibberish,
but deterministic: `references.json` holds what the Python pipeline (the ctranslate2
wheel and the model's own Hugging Face tokenizer) answers for each input, and
`tests/converted.rs` checks that the worker's replies are byte-identical.
Position limit: {limit} source positions.
"""


if __name__ == "__main__":
    sys.exit(main())
