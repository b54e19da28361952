"""Trains a SentencePiece tokenizer on a corpus and writes it as a Hugging Face directory.

    python -m heph_jax.data.train_tokenizer --input 'data/forge/*.jsonl' --output data/tokenizer \\
        --vocab_size 4000

Inputs: Forge JSONL (train-split records, rendered with the Forge template, so the template's
markers get their own pieces), or any other file as plain text (a `.jsonl` that is not Forge
contributes its "text" fields). Output: DIR/tokenizer.model plus tokenizer_config.json and
special_tokens_map.json, so `load_tokenizer("sp:DIR/tokenizer.model")`, `load_tokenizer("hf:DIR")`
and `transformers.AutoTokenizer.from_pretrained(DIR)` all give the same ids.

The model is laid out like Mistral's: BPE with byte fallback, <unk> 0, <s> 1, </s> 2, no pad
token, no normalization (NFKC would make ids differ from transformers' LlamaTokenizer, which
does not normalize). Whitespace-only pieces are off: with them, sentencepiece and transformers
split runs of spaces differently.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Iterable, Iterator, Sequence

from absl import flags

from heph_jax.data import forge
from heph_jax.data.forge.schema import ForgeDataError
from heph_jax import cli

# Sentences longer than this many bytes are cut at line ends (sentencepiece skips longer ones).
MAX_SENTENCE_BYTES = 8192


def _looks_like_forge(path: str) -> bool:
  for _, first in forge.iter_json_objects(path, on_error="skip"):
    return "type" in first and "id" in first
  return False


def iter_documents(paths: Sequence[str]) -> Iterator[str]:
  """Documents of the input files: rendered Forge train records, "text" fields, or whole files."""
  for path in paths:
    if path.endswith(".jsonl") and _looks_like_forge(path):
      for record in forge.iter_records(path):
        if forge.is_train(record):
          yield forge.render_text(record)
    elif path.endswith(".jsonl"):
      for line_no, value in forge.iter_json_objects(path):
        text = value.get("text")
        if not isinstance(text, str):
          raise ForgeDataError(f"{path}:{line_no}: expected a Forge record or an object with a "
                               "string 'text' field")
        yield text
    else:
      with open(path, encoding="utf-8", errors="replace") as f:
        yield f.read()


def iter_sentences(documents: Iterable[str], max_chars: int | None = None) -> Iterator[str]:
  """Cuts documents into sentencepiece 'sentences' of whole lines (newlines kept inside)."""
  total = 0
  for doc in documents:
    chunk, size = [], 0
    for line in doc.splitlines(keepends=True):
      n = len(line.encode("utf-8"))
      if chunk and size + n > MAX_SENTENCE_BYTES:
        yield "".join(chunk)
        chunk, size = [], 0
      if n > MAX_SENTENCE_BYTES:
        line = line.encode("utf-8")[:MAX_SENTENCE_BYTES].decode("utf-8", "ignore")
        n = len(line.encode("utf-8"))
      chunk.append(line)
      size += n
    if chunk:
      yield "".join(chunk)
    total += len(doc)
    if max_chars is not None and total >= max_chars:
      return


def expand_inputs(patterns: Sequence[str]) -> list[str]:
  paths = []
  for pattern in patterns:
    matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    matches = [m for m in matches if os.path.isfile(m)]
    if not matches:
      raise ForgeDataError(f"--input {pattern!r}: no such file")
    paths += matches
  return paths


def _drop_output_path(model_path: str) -> None:
  """The model records its output path; keep only the name, so equal inputs give equal bytes."""
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
  proto = sentencepiece_model_pb2.ModelProto()
  with open(model_path, "rb") as f:
    proto.ParseFromString(f.read())
  proto.trainer_spec.model_prefix = "tokenizer"
  with open(model_path, "wb") as f:
    f.write(proto.SerializeToString())


def train(paths: Sequence[str], output_dir: str, vocab_size: int, model_type: str = "bpe",
          max_chars: int | None = 50_000_000, character_coverage: float = 0.9995) -> dict:
  """Trains, writes the HF directory (bpe), and returns a summary."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  from heph_jax.data import tokenizers as tokenizer_lib  # pylint: disable=g-import-not-at-top
  sentences = list(iter_sentences(iter_documents(paths), max_chars))
  if not sentences:
    raise ForgeDataError(f"no text in {', '.join(paths)}")
  os.makedirs(output_dir, exist_ok=True)
  prefix = os.path.join(output_dir, "tokenizer")
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_prefix=prefix, vocab_size=vocab_size,
      model_type=model_type, byte_fallback=True, character_coverage=character_coverage,
      normalization_rule_name="identity", remove_extra_whitespaces=False,
      add_dummy_prefix=True, split_digits=True, split_by_whitespace=True,
      allow_whitespace_only_pieces=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
      max_sentence_length=MAX_SENTENCE_BYTES * 2, num_threads=1, minloglevel=2,
      input_sentence_size=0, shuffle_input_sentence=False)
  os.remove(prefix + ".vocab")  # the pieces are in the model; the .vocab listing is not needed
  _drop_output_path(prefix + ".model")
  for stale in ("tokenizer.json", "chat_template.jinja", "tokenizer_config.json",
                "special_tokens_map.json"):  # from an earlier, different tokenizer
    if os.path.exists(os.path.join(output_dir, stale)):
      os.remove(os.path.join(output_dir, stale))
  tok = tokenizer_lib.load_tokenizer("sp:" + prefix + ".model")
  if model_type == "bpe":  # transformers' LlamaTokenizer is BPE: a unigram model stays sp: only
    tokenizer_lib.write_sp_hf_config(output_dir, tok)
  return {"output": output_dir, "files": len(paths), "sentences": len(sentences),
          "chars": sum(len(s) for s in sentences), "vocab_size": tok.vocab_size,
          "model_type": model_type, "model_bytes": os.path.getsize(prefix + ".model"),
          "fingerprint": tok.fingerprint()}


def define_flags(values, argv):
  del argv
  flags.DEFINE_multi_string("input", None, "files or globs: Forge JSONL, JSONL with 'text', or plain "
                            "text (repeatable)", flag_values=values)
  flags.DEFINE_string("output", None, "directory to write the tokenizer into", flag_values=values)
  flags.DEFINE_integer("vocab_size", 4000, "vocabulary size; at least 300 (259 ids go to <unk>, <s>, "
                       "</s> and bytes)", lower_bound=300, flag_values=values)
  flags.DEFINE_enum("model_type", "bpe", ["bpe", "unigram"],
                    "bpe (default) exports to HF as a LlamaTokenizer; unigram is sp: only",
                    flag_values=values)
  flags.DEFINE_integer("max_chars", 50_000_000, "stop reading input after this many characters",
                       flag_values=values)
  for name in ("input", "output"):
    flags.mark_flag_as_required(name, flag_values=values)


def _train(args, positional) -> int:
  paths = expand_inputs(args.input + positional)  # positional: a shell-expanded glob's other files
  print(json.dumps(train(paths, args.output, args.vocab_size, args.model_type, args.max_chars)))
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run("heph_jax.data.train_tokenizer", define_flags, _train, argv)
