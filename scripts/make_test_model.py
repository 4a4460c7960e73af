#!/usr/bin/env python3
"""Build a tiny *real* CTranslate2 translation model that copies its input.

The model is a genuine Marian-style post-norm Transformer: it is written as a
Marian ``.npz`` checkpoint (config under ``special:model.yml``, exactly like
OPUS-MT releases) and converted with CTranslate2's own ``MarianConverter``.
Its weights are not trained but hand-wired so that the translation of any
SentencePiece-tokenized text is the text itself ("copy model").  That gives
integration tests an exact, predictable oracle while exercising the real
runtime (encoder, decoder, beam search, batching, padding, quantization).

How the copy works (all vectors live in ``d_model`` dimensions):

* A Sylvester-Hadamard basis provides ``d_model - 1`` orthonormal directions
  that all have zero mean (the all-ones column is dropped).  Zero mean matters
  because a LayerNorm with gamma=1, beta=0 then only rescales a vector to norm
  ``sqrt(d_model)`` and never mixes directions.
* ``dp = d_model / heads`` directions form the *position subspace*: the
  learned position table ``Wpos`` holds a nearly-orthogonal unit code per
  position there.  The remaining directions form the *token subspace*: each
  vocabulary entry gets a nearly-orthogonal unit code there (``Wemb``, shared
  by encoder, decoder and the tied output projection).
* Every other block adds nothing, so the post-norm LayerNorms just
  renormalise: attention blocks have zero value projections (random
  query/key/output weights), FFNs have a large negative first-layer bias so
  swish() outputs ~1e-16 (random weights in both layers).  All blocks keep
  their full, realistic compute cost, and no two weight matrices are equal
  (the converter would store equal tensors once, shrinking the model).
* Exception: the last decoder layer's cross-attention.  Its query and key read
  only the position subspace (copied into every head and scaled up, so the
  attention is one-hot), its value/output projections carry the token
  subspace back (with a large gain so it dominates the residual, which holds
  the previously emitted token).
* CTranslate2 starts Marian decoders from a zero embedding at position 0, so
  decoder step ``t`` sits at position ``t`` and attends to source position
  ``t``: it emits source token ``t`` and finally the source's ``</s>``.  The
  tied output projection turns the copied token code back into its id.

Usage::

    python3 scripts/make_test_model.py --out tests/fixtures/copy-model \\
        --variant tiny --quantization int8
    python3 scripts/make_test_model.py --out /tmp/opus-copy --variant opus

The output directory contains ``model.bin``, ``config.json``, the vocabulary
written by the converter, and ``source.spm`` / ``target.spm`` (identical
SentencePiece models, OPUS-MT layout).  Everything is deterministic.
"""

import argparse
import io
import json
import os
import random
import sys
import tempfile
from typing import Dict, List, Tuple

import numpy as np
import sentencepiece as spm
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_sentences  # noqa: E402  (sibling script)

SEED = 1234

# Model shapes.  "spm_vocab" is the requested SentencePiece size (byte pieces
# and special pieces included); "vocab_size" pads the model vocabulary with
# unused entries (OPUS-MT models have ~32k-60k entries).
VARIANTS: Dict[str, Dict] = {
    "tiny": dict(d_model=128, heads=4, enc_layers=2, dec_layers=2, ffn=256,
                 spm_vocab=1000, split_digits=True, vocab_size=None, ko_lines=20000, en_lines=8000,
                 all_hangul=False, max_len=1024),
    "opus": dict(d_model=512, heads=8, enc_layers=6, dec_layers=6, ffn=2048,
                 spm_vocab=8000, split_digits=False, vocab_size=32000, ko_lines=40000, en_lines=15000,
                 all_hangul=True, max_len=1024),
}

EOS, UNK, PAD = "</s>", "<unk>", "<pad>"

# Language tokens of the multilingual variant (--language-tokens): NLLB-200's
# FLORES-200 codes and M2M-100's __xx__ codes for a few languages.  As in the real
# models they are single vocabulary entries; the copy wiring copies the source
# token at position t to output position t, so with the target token forced as
# the decoding prefix (position 0) the output is that token followed by the text,
# and without a prefix it would start with the *source* token instead.
LANGUAGE_TOKENS = [
    "kor_Hang", "eng_Latn", "jpn_Jpan", "zho_Hans", "deu_Latn", "fra_Latn", "spa_Latn",
    "__ko__", "__en__", "__ja__", "__zh__", "__de__", "__fr__", "__es__",
]

# Hand-wiring constants.
LOGIT_SCALE = 40.0   # logit of the copied token, roughly tau * sqrt(d_model)
ATTN_MARGIN = 40.0   # score gap between the right source position and any other
COPY_GAIN = 20.0     # copied-token signal vs. the residual (previous token)
FILLER_NORM = 0.01   # relative norm of unused vocabulary rows (never win)
FFN_BIAS = -40.0     # first FFN layer bias: swish(-40 +- a few) ~ 0


# --------------------------------------------------------------------------
# SentencePiece
# --------------------------------------------------------------------------

def ks_x_1001_hangul() -> str:
    """The 2,350 precomposed Hangul syllables of KS X 1001 (the common ones)."""
    chars = []
    for lead in range(0xB0, 0xC9):
        for trail in range(0xA1, 0xFF):
            chars.append(bytes([lead, trail]).decode("euc-kr"))
    return "".join(chars)


def build_corpus(cfg: Dict) -> List[str]:
    """Korean business text, English text, mixed lines (and maybe all syllables)."""
    ko = make_sentences.generate(cfg["ko_lines"], seed=7, lang="ko")
    en = make_sentences.generate(cfg["en_lines"], seed=7, lang="en")
    lines = ko + en
    lines += ["%s %s" % (a, b) for a, b in zip(ko[: len(en) // 4], en[: len(en) // 4])]
    lines += ["  %s   (ref. %d)  " % (s, i) for i, s in enumerate(ko[:500])]
    # Templated text always puts some words next to each other ("주시기
    # 바랍니다"); the unigram trainer only seeds maximal repeated substrings,
    # which cannot cross whitespace, so such words would never become pieces.
    # Word-shuffled copies of the lines break those fixed neighbourhoods.
    rng = random.Random(3)
    for line in lines[: len(lines) // 2]:
        words = line.split(" ")
        rng.shuffle(words)
        lines.append(" ".join(words))
    if cfg["all_hangul"]:
        syllables = ks_x_1001_hangul()
        # Each syllable a few times, in short pseudo-words, so that
        # character_coverage=1.0 keeps every one of them as a piece.
        for rep in range(3):
            for i in range(0, len(syllables), 40):
                chunk = syllables[i:i + 40]
                lines.append(" ".join(chunk[j:j + 2 + rep] for j in range(0, len(chunk), 2 + rep)))
    return lines


def train_sentencepiece(lines: List[str], vocab_size: int, coverage: float,
                        split_digits: bool, symbols: List[str] = ()) -> bytes:
    """Train a byte-fallback unigram model that round-trips any text exactly.

    ``symbols`` become user-defined pieces (always one token each)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=coverage,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        split_digits=split_digits,
        # Marian / OPUS-MT vocabulary layout: </s> = 0, <unk> = 1, no <s>.
        eos_id=0, eos_piece=EOS,
        unk_id=1, unk_piece=UNK,
        bos_id=-1, pad_id=-1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentence_length=1 << 16,
        num_threads=1,
        minloglevel=2,
        **({"user_defined_symbols": list(symbols)} if symbols else {}),
    )
    return model.getvalue()


def yaml_quote(token: str) -> str:
    """Quote a token the way CTranslate2's Marian ``load_vocab`` parses it."""
    return '"%s"' % token.replace("\\", "\\\\").replace('"', '\\"')


def write_vocab(path: str, tokens: List[str]) -> None:
    """Write a Marian ``vocab.yml`` and check the converter reads it back."""
    from ctranslate2.converters.marian import load_vocab

    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, token in enumerate(tokens):
            f.write("%s: %d\n" % (yaml_quote(token), i))
    if load_vocab(path) != tokens:
        raise RuntimeError("vocabulary does not survive the Marian vocab parser")


# --------------------------------------------------------------------------
# Hand-wired weights
# --------------------------------------------------------------------------

def hadamard(n: int) -> np.ndarray:
    """Sylvester Hadamard matrix of order ``n`` (a power of two), entries +-1."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    if h.shape[0] != n:
        raise ValueError("d_model must be a power of two")
    return h


def spherical_code(n: int, dim: int, rng: np.random.Generator,
                   iters: int = 300) -> Tuple[np.ndarray, float]:
    """``n`` unit vectors in ``dim`` dimensions with small pairwise inner products.

    Starts from random directions and pushes the closest pairs apart
    (gradient steps on a soft maximum of the off-diagonal Gram matrix).
    Returns the codes and their largest off-diagonal inner product.
    """
    x = rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    if n * n * dim > 4e9:  # too big to polish cheaply; random is good enough
        iters = 0
    for _ in range(iters):
        gram = x @ x.T
        np.fill_diagonal(gram, -np.inf)
        weights = np.exp(20.0 * (gram - gram.max()))
        grad = weights @ x
        x -= 0.05 * grad / (np.abs(grad).max() + 1e-30)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    coherence = -1.0
    for start in range(0, n, 2048):  # blockwise to bound memory
        block = x[start:start + 2048] @ x.T
        block[np.arange(block.shape[0]), start + np.arange(block.shape[0])] = -1.0
        coherence = max(coherence, float(block.max()))
    return x, coherence


def build_weights(cfg: Dict, n_real: int, vocab_size: int, max_len: int,
                  rng: np.random.Generator) -> Tuple[Dict[str, np.ndarray], Dict]:
    """Marian parameter dict of the copy model, plus some diagnostics.

    ``n_real`` vocabulary entries (the SentencePiece pieces) get distinct
    token codes; the remaining ``vocab_size - n_real`` entries (unused
    fillers and ``<pad>``) get tiny rows that never win the argmax.
    """
    d, heads, ffn = cfg["d_model"], cfg["heads"], cfg["ffn"]
    dh = d // heads
    basis = hadamard(d)[:, 1:] / np.sqrt(d)  # d x (d-1), orthonormal, zero-mean columns
    dp = dh                                   # position subspace fits one head
    dt = d - 1 - dp                           # token subspace
    chunk = -(-dt // heads)                   # token coordinates carried per head
    if chunk > dh:
        raise ValueError("token subspace does not fit into the value heads")
    b_pos, b_tok = basis[:, :dp], basis[:, dp:]

    tok_codes, tok_coh = spherical_code(n_real, dt, rng)
    pos_codes, pos_coh = spherical_code(max_len, dp, rng)

    emb_scale = np.sqrt(d)                 # CTranslate2 multiplies embeddings by sqrt(d)
    tau = LOGIT_SCALE / np.sqrt(d)         # token code norm in Wemb
    pi = emb_scale * tau                   # position code norm: balanced with tokens
    # After any LayerNorm a vector [tokens, positions] of norms (A, P) has norm
    # sqrt(d); the position part then has norm sqrt(d) * P / sqrt(A^2 + P^2).
    rho = np.sqrt(d) * pi / np.hypot(emb_scale * tau, pi)
    # Attention score = (q . k) / sqrt(dh) with q = s * rho * code_t, k = s * rho * code_j.
    kappa = ATTN_MARGIN / (1.0 - pos_coh)
    s = np.sqrt(kappa * np.sqrt(dh)) / rho

    wemb = np.zeros((vocab_size, d))
    wemb[:n_real] = tau * tok_codes @ b_tok.T
    filler = rng.standard_normal((vocab_size - n_real, dt))
    filler *= FILLER_NORM * tau / np.linalg.norm(filler, axis=1, keepdims=True)
    wemb[n_real:] = filler @ b_tok.T
    wpos = pi * pos_codes @ b_pos.T

    w: Dict[str, np.ndarray] = {"Wemb": wemb, "Wpos": wpos,
                                "decoder_ff_logit_out_b": np.zeros((1, vocab_size))}

    def dense(n_in: int, n_out: int) -> np.ndarray:
        return rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)

    def attention(prefix: str) -> None:
        # Random query/key/output weights, zero values: the block's output is
        # exactly zero.  (Zero *output* matrices would work too, but the
        # converter stores identical tensors only once, which would make the
        # model smaller and more cache-friendly than a real one.)
        for name in "qk":
            w["%s_W%s" % (prefix, name)] = dense(d, d)
            w["%s_b%s" % (prefix, name)] = 0.02 * rng.standard_normal((1, d))
        w[prefix + "_Wv"] = np.zeros((d, d))
        w[prefix + "_bv"] = np.zeros((1, d))
        w[prefix + "_Wo"] = dense(d, d)
        w[prefix + "_bo"] = np.zeros((1, d))
        w[prefix + "_Wo_ln_scale"] = np.ones((1, d))
        w[prefix + "_Wo_ln_bias"] = np.zeros((1, d))

    def feed_forward(prefix: str) -> None:
        # Pre-activations are about N(0, 1) + FFN_BIAS, so swish() of them is
        # below 1e-15: the random second layer adds (numerically) nothing.
        w[prefix + "_W1"] = dense(d, ffn)
        w[prefix + "_b1"] = np.full((1, ffn), FFN_BIAS)
        w[prefix + "_W2"] = dense(ffn, d)
        w[prefix + "_b2"] = np.zeros((1, d))
        w[prefix + "_ffn_ln_scale"] = np.ones((1, d))
        w[prefix + "_ffn_ln_bias"] = np.zeros((1, d))

    for i in range(1, cfg["enc_layers"] + 1):
        attention("encoder_l%d_self" % i)
        feed_forward("encoder_l%d_ffn" % i)
    for i in range(1, cfg["dec_layers"] + 1):
        attention("decoder_l%d_self" % i)
        attention("decoder_l%d_context" % i)
        feed_forward("decoder_l%d_ffn" % i)

    # The copy head: last decoder layer, cross-attention (Marian stores W as in x out).
    last = "decoder_l%d_context" % cfg["dec_layers"]
    wq, wk, wv, wo = (np.zeros((d, d)) for _ in range(4))
    for h in range(heads):
        wq[:, h * dh:h * dh + dp] = s * b_pos
        wk[:, h * dh:h * dh + dp] = s * b_pos
        cols = b_tok[:, h * chunk:(h + 1) * chunk]
        wv[:, h * dh:h * dh + cols.shape[1]] = cols
        wo[h * dh:h * dh + cols.shape[1], :] = COPY_GAIN * cols.T
    w.update({last + "_Wq": wq, last + "_Wk": wk, last + "_Wv": wv, last + "_Wo": wo})
    for name in "qkvo":
        w["%s_b%s" % (last, name)] = np.zeros((1, d))

    info = dict(token_coherence=round(tok_coh, 4), position_coherence=round(pos_coh, 4),
                position_dims=dp, token_dims=dt, attention_peak_score=round(kappa, 1))
    return {k: v.astype(np.float32) for k, v in w.items()}, info


def marian_config(cfg: Dict, vocab_size: int, max_len: int) -> Dict:
    """The ``special:model.yml`` of a post-norm OPUS-MT-like Marian transformer."""
    return {
        "type": "transformer",
        "dim-emb": cfg["d_model"],
        "dim-vocabs": [vocab_size, vocab_size],
        "enc-depth": cfg["enc_layers"],
        "dec-depth": cfg["dec_layers"],
        "transformer-heads": cfg["heads"],
        "transformer-dim-ffn": cfg["ffn"],
        "transformer-ffn-activation": "swish",
        "transformer-preprocess": "",
        "transformer-postprocess": "dan",
        "transformer-postprocess-emb": "d",
        "transformer-postprocess-top": "",
        "transformer-decoder-autoreg": "self-attention",
        "transformer-no-projection": False,
        "transformer-guided-alignment-layer": "last",
        "transformer-train-position-embeddings": True,
        "tied-embeddings-all": True,
        "max-length": max_len,
    }


def write_npz(path: str, weights: Dict[str, np.ndarray], config: Dict) -> None:
    """Save a Marian checkpoint: weights plus NUL-terminated YAML config bytes."""
    text = yaml.safe_dump(config, sort_keys=True).encode("utf-8") + b"\0"
    np.savez(path, **weights, **{"special:model.yml": np.frombuffer(text, dtype=np.int8)})


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def make_model(out_dir: str, variant: str, quantization: str, max_len: int,
               language_tokens: bool = False) -> Dict:
    """Generate the model into ``out_dir``; returns a summary dict."""
    import ctranslate2

    cfg = VARIANTS[variant]
    rng = np.random.default_rng(SEED)

    coverage = 1.0 if cfg["all_hangul"] else 0.9995
    symbols = LANGUAGE_TOKENS if language_tokens else []
    spm_bytes = train_sentencepiece(build_corpus(cfg), cfg["spm_vocab"], coverage,
                                    cfg["split_digits"], symbols)
    sp = spm.SentencePieceProcessor(model_proto=spm_bytes)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert pieces[0] == EOS and pieces[1] == UNK, pieces[:3]

    vocab_size = max(cfg["vocab_size"] or 0, len(pieces) + 1)
    fillers = ["<unused%d>" % i for i in range(vocab_size - len(pieces) - 1)]
    tokens = pieces + fillers + [PAD]  # OPUS-MT: <pad> is the last entry

    weights, info = build_weights(cfg, len(pieces), vocab_size, max_len, rng)

    with tempfile.TemporaryDirectory() as tmp:
        vocab_path = os.path.join(tmp, "vocab.yml")
        npz_path = os.path.join(tmp, "model.npz")
        write_vocab(vocab_path, tokens)
        write_npz(npz_path, weights, marian_config(cfg, vocab_size, max_len))
        converter = ctranslate2.converters.MarianConverter(npz_path, [vocab_path, vocab_path])
        converter.convert(out_dir, quantization=quantization, force=True)

    for name in ("source.spm", "target.spm"):
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(spm_bytes)

    size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    info.update(variant=variant, quantization=quantization, spm_pieces=len(pieces),
                language_tokens=list(symbols),
                vocab_size=vocab_size, max_positions=max_len,
                # The encoder input (pieces + </s>) must fit the position table.
                # CTranslate2 appends </s> itself (add_source_eos=true), even when
                # the caller already did: then one piece less fits.
                max_source_pieces=max_len - 1, max_source_pieces_if_caller_appends_eos=max_len - 2,
                pad_id=vocab_size - 1,
                eos_id=0, unk_id=1, dir_bytes=size)
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate a CTranslate2 copy model (translation == input).")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="tiny")
    parser.add_argument("--quantization", choices=["int8", "float32"], default="int8")
    parser.add_argument("--max-len", type=int, default=None,
                        help="number of learned positions (default: 1024).  The encoder input "
                             "(pieces + </s>) and max_decoding_length must both be "
                             "<= max-len")
    parser.add_argument("--language-tokens", action="store_true",
                        help="multilingual variant: NLLB (kor_Hang, ...) and M2M-100 "
                             "(__ko__, ...) language tokens as single pieces")
    args = parser.parse_args(argv)

    max_len = args.max_len or VARIANTS[args.variant]["max_len"]
    if max_len < 2:
        parser.error("--max-len must be at least 2")
    info = make_model(args.out, args.variant, args.quantization, max_len,
                      args.language_tokens)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
