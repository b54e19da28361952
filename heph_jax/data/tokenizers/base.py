"""Tokenizer interface shared by both engines: offsets -> loss weights, BOS/EOS, SeqIO adapter.

See heph_jax/data/tokenizers/__init__.py for the whole picture."""
from __future__ import annotations

import abc
import hashlib
import os
import re
from typing import Iterable, Sequence

import numpy as np
from heph_jax.errors import HephError

# Part of every fingerprint: bump it when a change here changes the ids of some text.
ENCODER_VERSION = "heph_jax.tokenizer/2"  # 2: sp:PATH keeps SentencePiece's dummy prefix before whitespace

# Files of a Hugging Face tokenizer directory, in the order we look at them.
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                      "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                      "chat_template.json", "vocab.json", "merges.txt")


class TokenizerError(HephError, ValueError):
  """A tokenizer spec or file that cannot be used; the message names it."""


def _read_json(path: str) -> dict:
  from heph_jax.data.forge.io import read_json_object
  return read_json_object(path, TokenizerError)


def _token_content(value) -> str | None:
  """A special-token entry of tokenizer_config.json: "<s>" or {"content": "<s>", ...}."""
  if value is None or isinstance(value, str):
    return value
  if isinstance(value, dict) and isinstance(value.get("content"), str):
    return value["content"]
  return None


def _extra_named(config: dict) -> dict[str, str]:
  named = {}
  for key in ("sep_token", "cls_token", "mask_token"):
    value = _token_content(config.get(key))
    if value is not None:
      named[key] = value
  return named


def _char_index_of_bytes(text: str) -> np.ndarray:
  """Maps each UTF-8 byte offset of `text` (and the end) to its character offset."""
  raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
  starts = (raw & 0xC0) != 0x80  # lead bytes start a character
  index = np.empty(len(raw) + 1, dtype=np.int64)
  index[:-1] = np.cumsum(starts) - 1
  index[-1] = len(text)
  return index


def weights_from_offsets(pieces: Sequence[tuple[str, bool]],
                         offsets: Sequence[tuple[int, int]]) -> list[int]:
  """Per-token loss weight: 1 when the token covers any character of a piece marked True.

  A token that straddles a prompt/answer boundary emits answer text, so it is trained. A token
  with an empty span (a prefix "▁") takes the weight of the character it precedes.
  """
  if not len(offsets):
    return []
  lengths = np.array([len(text) for text, _ in pieces], np.int64)
  char_weight = np.repeat(np.array([1 if done else 0 for _, done in pieces], np.int64), lengths)
  n = len(char_weight)
  cum = np.concatenate([[0], np.cumsum(char_weight)])
  spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
  start, end = np.clip(spans[:, 0], 0, n), np.clip(spans[:, 1], 0, n)
  covered = (cum[end] - cum[start]) > 0
  empty = end <= start
  if n:
    covered = np.where(empty, char_weight[np.minimum(start, n - 1)] > 0, covered)
  return covered.astype(np.int64).tolist()


class Tokenizer(abc.ABC):
  """One tokenizer, whatever its files. Ids are those of the base model."""

  name: str  # the spec it was loaded from
  vocab_size: int  # model-facing size: every id it can produce is below it
  bos_id: int | None
  eos_id: int | None
  unk_id: int | None
  bos_token: str | None
  eos_token: str | None
  pad_token: str | None
  chat_template: str | dict[str, str] | None  # Jinja source(s) when the directory ships one
  _extra_named_tokens: dict[str, str] = {}  # sep/cls/mask tokens of an HF config
  add_bos_default: bool  # what transformers' tokenizer(text) adds, for reference
  add_eos_default: bool

  @property
  def pad_id(self) -> int:
    pad = self.token_to_id(self.pad_token) if self.pad_token else None
    if pad is not None:
      return pad
    return self.eos_id if self.eos_id is not None else 0

  @abc.abstractmethod
  def encode_with_offsets(self, text: str) -> tuple[list[int], Sequence[tuple[int, int]]]:
    """Ids (no BOS/EOS added) and each token's [start, end) character span in `text`
    (a list of pairs, or an [N, 2] int array)."""

  def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
    """Ids of `text`; special-token strings in it become their ids, as in transformers.

    add_special_tokens=True adds what transformers' `tokenizer(text)` adds (Llama-3: BOS).
    """
    ids = self._encode_plain(text)
    if add_special_tokens:  # exactly as transformers: BOS even when the text starts with one
      bos = [self.bos_id] if self.add_bos_default and self.bos_id is not None else []
      eos = [self.eos_id] if self.add_eos_default and self.eos_id is not None else []
      ids = bos + ids + eos
    return ids

  def _encode_plain(self, text: str) -> list[int]:
    return self.encode_with_offsets(text)[0]

  @abc.abstractmethod
  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`, special tokens shown (for display; not guaranteed to invert encode)."""

  @abc.abstractmethod
  def token_to_id(self, token: str) -> int | None:
    """Id of one token string (a piece or a special token), None when unknown."""

  @abc.abstractmethod
  def files(self) -> list[str]:
    """The files that define this tokenizer (fingerprinted; `save_hf` exports them)."""

  @abc.abstractmethod
  def save_hf(self, out_dir: str) -> list[str]:
    """Writes a complete HF tokenizer directory (AutoTokenizer loads it); returns the paths."""

  def special_tokens_map(self) -> dict[str, str]:
    """Named special tokens (bos_token, eos_token, ...), as chat templates receive them."""
    named = dict(self._extra_named_tokens)
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
      value = getattr(self, key)
      if value is not None:
        named[key] = value
    return named

  def encode_pieces(self, pieces: Sequence[tuple[str, bool]], add_bos: bool = True,
                    add_eos: bool = True) -> tuple[list[int], list[int]]:
    """Encodes the concatenated pieces once; returns ids and per-token loss weights.

    Weight 1 on tokens inside pieces marked True (see `weights_from_offsets`), 0 on BOS, and EOS
    takes the weight of the last piece. BOS is skipped when the text already starts with it.
    """
    ids, offsets = self.encode_with_offsets("".join(text for text, _ in pieces))
    return self._finish_pieces(pieces, ids, offsets, add_bos, add_eos)

  def encode_pieces_batch(self, documents: Sequence[Sequence[tuple[str, bool]]],
                          add_bos: bool = True, add_eos: bool = True
                          ) -> list[tuple[list[int], list[int]]]:
    """`encode_pieces` for many documents (the tokenizers library encodes them in parallel)."""
    return [self.encode_pieces(pieces, add_bos, add_eos) for pieces in documents]

  def _finish_pieces(self, pieces, ids, offsets, add_bos, add_eos):
    weights = weights_from_offsets(pieces, offsets)
    if add_bos and self.bos_id is not None and not (ids and ids[0] == self.bos_id):
      ids, weights = [self.bos_id] + ids, [0] + weights
    if add_eos and self.eos_id is not None:
      ids, weights = ids + [self.eos_id], weights + [1 if pieces and pieces[-1][1] else 0]
    return ids, weights

  def fingerprint(self) -> str:
    """Short stable hash of the tokenizer files' contents (keys prepared-data caches).

    Taken when the tokenizer is loaded, so it describes what this object encodes with.
    """
    if getattr(self, "_fingerprint", None) is None:
      self._fingerprint = self._hash_files()
    return self._fingerprint

  def _hash_files(self) -> str:
    digest = hashlib.sha256(ENCODER_VERSION.encode() + b"\0")
    for path in self.files():
      digest.update(os.path.basename(path).encode() + b"\0")
      with open(path, "rb") as f:
        digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()[:16]

  def __repr__(self):
    return f"{type(self).__name__}({self.name!r}, vocab_size={self.vocab_size})"


class _SpecialSplitter:
  """Splits text at special-token strings (longest first), as transformers' added tokens do."""

  def __init__(self, specials: dict[str, int]):
    self.specials = dict(specials)
    names = sorted((s for s in self.specials if s), key=len, reverse=True)
    self._pattern = re.compile("|".join(re.escape(s) for s in names)) if names else None

  def split(self, text: str) -> list[tuple[int, int, int | None]]:
    """[(start, end, special_id or None)] covering `text` in order."""
    if self._pattern is None:
      return [(0, len(text), None)] if text else []
    out, pos = [], 0
    for m in self._pattern.finditer(text):
      if m.start() > pos:
        out.append((pos, m.start(), None))
      out.append((m.start(), m.end(), self.specials[m.group()]))
      pos = m.end()
    if pos < len(text):
      out.append((pos, len(text), None))
    return out
