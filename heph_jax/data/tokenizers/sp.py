"""SentencePiece engine (`sp:PATH`, or an HF directory holding only tokenizer.model)."""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Iterable, Sequence

import numpy as np

from heph_jax.data.tokenizers.base import (Tokenizer, TokenizerError, _SpecialSplitter,
                                          _char_index_of_bytes, _extra_named, _token_content)


def _load_sp_model(path: str, where: str):
  """(processor, processor without dummy prefix, ModelProto) for a SentencePiece model file."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
  try:
    with open(path, "rb") as f:
      blob = f.read()
  except OSError as e:
    raise TokenizerError(f"{where}: cannot read SentencePiece model {path!r} ({e.strerror})") from None
  if blob[:64].lstrip().startswith(b"{") or re.match(rb"^[A-Za-z0-9+/=]+ \d+\n", blob[:200]):
    raise TokenizerError(
        f"{where}: {path!r} is not a SentencePiece model (it looks like JSON or a tiktoken "
        "vocabulary); for Llama-3 use the HF directory with tokenizer.json (hf:DIR)")
  proto = sentencepiece_model_pb2.ModelProto()
  try:
    proto.ParseFromString(blob)
    if not proto.pieces:
      raise ValueError("no pieces")
    processor = spm.SentencePieceProcessor(model_proto=blob)
  except Exception as e:  # pylint: disable=broad-except
    raise TokenizerError(f"{where}: {path!r} is not a readable SentencePiece model ({e})") from None
  # The prefix "▁" is added by us, the way HF's Metaspace adds it (see module doc).
  bare = sentencepiece_model_pb2.ModelProto()
  bare.CopyFrom(proto)
  bare.normalizer_spec.add_dummy_prefix = False
  bare_processor = spm.SentencePieceProcessor(model_proto=bare.SerializeToString())
  return processor, bare_processor, proto


def _piece_byte_length(sp, index: int) -> int:
  """How many input bytes one piece stands for (identity normalization)."""
  if sp.is_control(index) or sp.is_unknown(index):
    return 0
  if sp.is_byte(index):
    return 1
  return len(sp.id_to_piece(index).replace("\u2581", " ").encode("utf-8"))


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model, encoding as transformers' LlamaTokenizer does for the same files."""

  def __init__(self, name: str, model_path: str, config: dict | None = None,
               config_files: Sequence[str] = (), chat_template: str | dict[str, str] | None = None):
    self.name = name
    self._model_path = model_path
    self._config_files = list(config_files)
    config = dict(config or {})
    self._sp, self._sp_bare, proto = _load_sp_model(model_path, name)
    self.model_type = {1: "unigram", 2: "bpe"}.get(proto.trainer_spec.model_type, "other")
    size = self._sp.get_piece_size()
    # Without normalization a piece covers exactly its own bytes, so offsets are a cumulative sum
    # of per-id byte lengths (5x faster than reading sentencepiece's proto output).
    self._piece_bytes = None
    if proto.normalizer_spec.name == "identity" and not proto.normalizer_spec.remove_extra_whitespaces:
      self._piece_bytes = np.array([_piece_byte_length(self._sp, i) for i in range(size)], np.int64)

    def sp_piece(index):
      return self._sp.id_to_piece(index) if index >= 0 else None

    self.unk_token = _token_content(config.get("unk_token", sp_piece(self._sp.unk_id())))
    self.bos_token = _token_content(config.get("bos_token", sp_piece(self._sp.bos_id())))
    self.eos_token = _token_content(config.get("eos_token", sp_piece(self._sp.eos_id())))
    self.pad_token = _token_content(config.get("pad_token", sp_piece(self._sp.pad_id())))
    self._extra_named_tokens = _extra_named(config)
    # Added tokens: those of the config, then the named special tokens (all split out of text).
    specials: dict[str, int] = {}
    for index, entry in (config.get("added_tokens_decoder") or {}).items():
      content = _token_content(entry)
      if content is None:
        raise TokenizerError(f"{name}: added_tokens_decoder[{index!r}] has no string 'content'")
      specials[content] = int(index)
    next_id = max([size - 1] + list(specials.values())) + 1
    for token in (self.unk_token, self.bos_token, self.eos_token, self.pad_token,
                  *self._extra_named_tokens.values()):
      if token is None or token in specials:
        continue
      piece_id = self._sp.piece_to_id(token)
      if self._sp.id_to_piece(piece_id) != token:  # not in the model: appended, as HF does
        piece_id, next_id = next_id, next_id + 1
      specials[token] = piece_id
    self._specials = specials
    self._id_to_special = {v: k for k, v in specials.items()}
    self._splitter = _SpecialSplitter(specials)
    self.vocab_size = max([size - 1] + list(specials.values())) + 1
    self.unk_id = self.token_to_id(self.unk_token) if self.unk_token else None
    self.bos_id = self.token_to_id(self.bos_token) if self.bos_token else None
    self.eos_id = self.token_to_id(self.eos_token) if self.eos_token else None
    # sp:PATH (no HF config) encodes as SentencePiece itself: its dummy prefix "▁" at the start of
    # the text even when the text starts with whitespace (indented code). An HF directory encodes
    # as transformers: add_prefix_space (default True) with legacy=False -> prefix only at the
    # start, and not when the text starts with a space (its Metaspace pre-tokenizer's rule).
    if not config:
      self.prefix_scheme = "sentencepiece"
    elif not config.get("add_prefix_space", True):
      self.prefix_scheme = "never"
    else:
      self.prefix_scheme = "always" if config.get("legacy", False) else "first"
    # Without a config (sp:PATH) we follow Llama/Mistral: BOS yes, EOS no.
    self.add_bos_default = bool(config.get("add_bos_token", not config))
    self.add_eos_default = bool(config.get("add_eos_token", False))
    self.chat_template = chat_template

  def token_to_id(self, token: str) -> int | None:
    if token in self._specials:
      return self._specials[token]
    index = self._sp.piece_to_id(token)
    return index if self._sp.id_to_piece(index) == token else None

  def _segment_text(self, text: str, start: int) -> tuple[str, int]:
    """The text SentencePiece sees for one segment, and how many prefix chars we added."""
    if self.prefix_scheme == "sentencepiece":
      return (" " + text, 1) if start == 0 and text else (text, 0)
    prefix = self.prefix_scheme == "always" or (self.prefix_scheme == "first" and start == 0)
    if prefix and not text.startswith((" ", "\u2581")):
      return " " + text, 1
    return text, 0

  def _encode_plain(self, text: str) -> list[int]:
    ids: list[int] = []
    for start, end, special in self._splitter.split(text):
      if special is not None:
        ids.append(special)
      else:
        ids.extend(self._sp_bare.encode(self._segment_text(text[start:end], start)[0]))
    return ids

  def encode_with_offsets(self, text: str) -> tuple[list[int], np.ndarray]:
    ids: list[int] = []
    spans: list[np.ndarray] = []
    for start, end, special in self._splitter.split(text):
      if special is not None:
        ids.append(special)
        spans.append(np.array([[start, end]], np.int64))
        continue
      segment, added = self._segment_text(text[start:end], start)
      char_of = _char_index_of_bytes(segment)
      segment_ids, begin, end_ = self._byte_spans(segment, len(char_of) - 1)
      ids.extend(segment_ids)
      spans.append(np.maximum(np.stack([char_of[begin], char_of[end_]], axis=1) - added, 0)
                   + start)
    return ids, (np.concatenate(spans) if spans else np.zeros((0, 2), np.int64))

  def _byte_spans(self, segment: str, n_bytes: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Ids of `segment` and each piece's [begin, end) byte span in it."""
    if self._piece_bytes is not None:
      ids = self._sp_bare.encode(segment)
      end = np.cumsum(self._piece_bytes[np.asarray(ids, np.int64)]) if ids else np.zeros(0, np.int64)
      if not len(end) or end[-1] == n_bytes:
        return ids, end - self._piece_bytes[np.asarray(ids, np.int64)], end
    proto = self._sp_bare.encode(segment, out_type="proto")
    ids = [p.id for p in proto.pieces]
    begin = np.array([p.begin for p in proto.pieces], np.int64)
    end = np.array([p.end for p in proto.pieces], np.int64)
    return ids, begin, end

  def decode(self, ids: Iterable[int]) -> str:
    out, run = [], []
    for i in ids:
      i = int(i)
      if i in self._id_to_special:
        if run:
          out.append(self._sp.decode(run))
          run = []
        out.append(self._id_to_special[i])
      else:
        run.append(i)
    if run:
      out.append(self._sp.decode(run))
    return "".join(out)

  def files(self) -> list[str]:
    return [self._model_path] + self._config_files

  def save_hf(self, out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    written = []
    target = os.path.join(out_dir, "tokenizer.model")
    shutil.copyfile(self._model_path, target)
    written.append(target)
    if self._config_files:  # an HF directory: copy its files as they are
      for path in self._config_files:
        target = os.path.join(out_dir, os.path.basename(path))
        shutil.copyfile(path, target)
        written.append(target)
    else:
      written += write_sp_hf_config(out_dir, self, chat_template=self.chat_template)
    return written

  def special_tokens(self) -> dict[str, int]:
    return dict(self._specials)


def write_sp_hf_config(out_dir: str, tok: SentencePieceTokenizer,
                       chat_template: str | None = None) -> list[str]:
  """tokenizer_config.json + special_tokens_map.json for a SentencePiece model (Mistral layout).

  transformers then loads the directory as a LlamaTokenizer that encodes like `tok`.
  """
  if tok.model_type != "bpe":
    raise TokenizerError(
        f"{tok.name}: an HF export of a SentencePiece model needs model_type=bpe (transformers' "
        f"LlamaTokenizer is BPE); this one is {tok.model_type}")
  special_map = {}
  for key, token in (("bos_token", tok.bos_token), ("eos_token", tok.eos_token),
                     ("unk_token", tok.unk_token), ("pad_token", tok.pad_token)):
    if token is not None:
      special_map[key] = token
  added = {}
  for token, index in sorted(tok.special_tokens().items(), key=lambda kv: kv[1]):
    added[str(index)] = {"content": token, "lstrip": False, "normalized": False,
                         "rstrip": False, "single_word": False, "special": True}
  config = {
      "tokenizer_class": "LlamaTokenizer",
      "add_bos_token": True,
      "add_eos_token": False,
      "legacy": tok.prefix_scheme == "always",
      "add_prefix_space": tok.prefix_scheme != "never",
      "clean_up_tokenization_spaces": False,
      "model_max_length": 1 << 30,
      "added_tokens_decoder": added,
      **special_map,
  }
  if chat_template:
    config["chat_template"] = chat_template
  paths = []
  for filename, value in (("tokenizer_config.json", config),
                          ("special_tokens_map.json", special_map)):
    path = os.path.join(out_dir, filename)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(value, f, indent=2, ensure_ascii=False)
      f.write("\n")
    paths.append(path)
  return paths
