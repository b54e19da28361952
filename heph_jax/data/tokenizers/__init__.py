"""The base model's tokenizer behind one interface (SeqIO vocabulary included).

    tok = load_tokenizer("sp:data/tokenizer/tokenizer.model")   # a SentencePiece model
    tok = load_tokenizer("hf:/ckpt/Meta-Llama-3-8B")              # a Hugging Face directory
    ids, weights = tok.encode_pieces([("prompt", False), ("answer", True)])

Two engines, both encoding exactly as `transformers.AutoTokenizer` does for the same files:
- `tokenizer.json` (Llama-3's 128k byte-level BPE, Mistral's converted SentencePiece, ...) runs
  through the `tokenizers` library, with the special tokens and BOS/EOS settings of
  tokenizer_config.json applied the way transformers applies them (BOS/EOS flags when the config
  has them, else the file's post-processor). For tokenizer_class LlamaTokenizer (Mistral-7B),
  transformers 5 keeps only the vocabulary and merges and sets its own "▁" pre-tokenizer; so do we.
- `tokenizer.model` (SentencePiece; `sp:PATH`, or an HF directory that has only this file) runs
  through `sentencepiece`, with the two behaviours transformers adds on top: special-token strings
  in the text ("<s>", "</s>", added tokens) become their ids, and the "▁" prefix is added the way
  the HF Metaspace pre-tokenizer adds it ("legacy": false -> only at the start of the text, not
  after a special token; "legacy": true -> at each segment; never when it starts with a space).
  Exact for BPE models without normalization (Llama-2, Mistral, ours from train_tokenizer).
- `sp:PATH` alone (no tokenizer_config.json) is SentencePiece's own encoding, as Mistral's
  reference library (mistral-common) calls it: the dummy prefix "▁" is added at the start of the
  text even when the text starts with whitespace. There transformers differs: for "    x = 1"
  (indented code) SentencePiece gives "▁▁▁▁▁x", transformers "▁▁▁▁x" (no prefix before a space).
  Both facts are tested (tests/data/test_tokenizer.py). An HF export of an sp: run's tokenizer
  loads in transformers as a LlamaTokenizer, so it shares that difference: the exported model sees
  texts that start with whitespace with one "▁" fewer than training did.

Limits: as in transformers, a special-token string inside raw text ("</s>" in HTML) becomes the
special token. Other tokenizer classes that transformers 5 re-builds from tokenizer.json
(e.g. GPT2Tokenizer, Qwen2Tokenizer) are read as the file says; check parity before relying on it.

Tokenization happens once, when Forge JSONL is prepared into shards of token ids; the tf.data
pipeline reads only ints, so its iterator stays checkpointable and tokenizer-agnostic.

BOS/EOS (`encode_pieces(add_bos=True, add_eos=True)`): a document becomes BOS + text + EOS:
Llama-3 `<|begin_of_text|> ... <|end_of_text|>`, Mistral / ours `<s> ... </s>`. BOS is not added
twice when the text already starts with it (a chat template that renders `bos_token`). `pad_id`
is the tokenizer's pad token, else EOS (Llama-3 and Mistral have none); packing uses segment ids,
so it never needs to be distinct from real tokens (id 0 is Llama-3's "!").
"""
from __future__ import annotations

import os
import time
from typing import Sequence

from heph_jax.data.tokenizers.base import (ENCODER_VERSION, HF_TOKENIZER_FILES, Tokenizer,  # noqa: F401
                                          TokenizerError, weights_from_offsets)
from heph_jax.data.tokenizers.hf import HFJsonTokenizer, _load_hf_dir  # noqa: F401
from heph_jax.data.tokenizers.sp import SentencePieceTokenizer, write_sp_hf_config  # noqa: F401
from heph_jax.errors import ConfigError


def load_tokenizer(spec: str) -> Tokenizer:
  """`sp:PATH` (SentencePiece model) or `hf:DIR` (Hugging Face directory); paths from the cwd."""
  if not isinstance(spec, str) or ":" not in spec:
    raise TokenizerError(f"data.tokenizer: expected 'sp:PATH' or 'hf:DIR', got {spec!r}")
  kind, _, path = spec.partition(":")
  if not path:
    raise TokenizerError(f"data.tokenizer: {spec!r} names no path after '{kind}:'")
  path = os.path.abspath(os.path.expanduser(path))
  if kind == "sp":
    if os.path.isdir(path):
      raise TokenizerError(f"tokenizer {spec!r}: {path!r} is a directory; sp: names a "
                           "tokenizer.model file (use hf:DIR for a directory)")
    if not os.path.isfile(path):
      raise TokenizerError(f"tokenizer {spec!r}: no such file {path!r}")
    tok = SentencePieceTokenizer(spec, path)
  elif kind == "hf":
    tok = _load_hf_dir(spec, path)
  else:
    raise TokenizerError(f"data.tokenizer: unknown kind {kind!r} in {spec!r}; "
                         "expected 'sp:PATH' or 'hf:DIR'")
  tok.fingerprint()  # of the files as they were loaded
  return tok


def tokenizer_spec(data_tokenizer: str | None, init_from: str | None, default: str) -> str:
  """The spec to use: data.tokenizer when set, else init_from's HF directory, else `default`."""
  if data_tokenizer:
    return data_tokenizer
  if init_from and init_from.startswith("hf:"):
    return init_from
  return default


def check_vocab(tokenizer: Tokenizer, model_vocab_size: int, key: str = "model.vocab_size",
                tokenizer_key: str = "data.tokenizer") -> None:
  """Fails when the model's embedding table cannot hold every id the tokenizer produces.

  A larger table is allowed (padded vocabularies, or a small demo tokenizer in a bigger model).
  """
  if tokenizer.vocab_size > model_vocab_size:
    raise ConfigError(
        f"{key}={model_vocab_size} is smaller than the vocabulary of {tokenizer_key}="
        f"{tokenizer.name!r} ({tokenizer.vocab_size} ids): set {key} >= {tokenizer.vocab_size}, "
        f"or {tokenizer_key} to the base model's own tokenizer")


def measure_tokens_per_second(tokenizer: Tokenizer, texts: Sequence[str],
                              with_offsets: bool = True, batch_size: int = 0) -> dict:
  """Encodes `texts` once; returns {"tokens", "chars", "seconds", "tokens_per_s", ...}.

  with_offsets=True times `encode_pieces` (what data preparation does), else plain `encode`;
  batch_size > 0 times `encode_pieces_batch` on batches of that many texts.
  """
  start = time.perf_counter()
  tokens = 0
  if batch_size:
    for i in range(0, len(texts), batch_size):
      docs = [[(text, True)] for text in texts[i:i + batch_size]]
      tokens += sum(len(ids) for ids, _ in tokenizer.encode_pieces_batch(docs))
  else:
    for text in texts:
      if with_offsets:
        tokens += len(tokenizer.encode_pieces([(text, True)])[0])
      else:
        tokens += len(tokenizer.encode(text))
  seconds = max(time.perf_counter() - start, 1e-9)
  chars = sum(len(t) for t in texts)
  return {"tokenizer": tokenizer.name, "texts": len(texts), "tokens": tokens, "chars": chars,
          "seconds": round(seconds, 4), "tokens_per_s": round(tokens / seconds, 1),
          "chars_per_token": round(chars / max(tokens, 1), 3),
          "with_offsets": with_offsets or bool(batch_size), "batch_size": batch_size}
