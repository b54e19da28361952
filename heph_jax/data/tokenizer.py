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

Limits: as in transformers, a special-token string inside raw text ("</s>" in HTML) becomes the
special token. Other tokenizer classes that transformers 5 re-builds from tokenizer.json
(e.g. GPT2Tokenizer, Qwen2Tokenizer) are read as the file says; check parity before relying on it.

Tokenization happens once, when Forge JSONL is prepared into shards of token ids; the tf.data
pipeline reads only ints, so its iterator stays checkpointable and tokenizer-agnostic.
`seqio_vocabulary()` exists for SeqIO output features and for decoding (display only).

BOS/EOS (`encode_pieces(add_bos=True, add_eos=True)`): a document becomes BOS + text + EOS:
Llama-3 `<|begin_of_text|> ... <|end_of_text|>`, Mistral / ours `<s> ... </s>`. BOS is not added
twice when the text already starts with it (a chat template that renders `bos_token`). `pad_id`
is the tokenizer's pad token, else EOS (Llama-3 and Mistral have none); packing uses segment ids,
so it never needs to be distinct from real tokens (id 0 is Llama-3's "!").
"""
from __future__ import annotations

import abc
import hashlib
import json
import os
import re
import shutil
import time
from typing import Iterable, Sequence

import numpy as np

# Part of every fingerprint: bump it when a change here changes the ids of some text.
ENCODER_VERSION = "heph_jax.tokenizer/1"

# Files of a Hugging Face tokenizer directory, in the order we look at them.
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                      "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                      "chat_template.json", "vocab.json", "merges.txt")


class TokenizerError(ValueError):
  """A tokenizer spec or file that cannot be used; the message names it."""


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except json.JSONDecodeError as e:
    raise TokenizerError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(value, dict):
    raise TokenizerError(f"{path}: expected a JSON object, got {type(value).__name__}")
  return value


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

  def seqio_vocabulary(self):
    """A `seqio.Vocabulary` over this tokenizer (imports TensorFlow; display and features)."""
    return _seqio_vocabulary_class()(self)

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
    # transformers: add_prefix_space (default True) with legacy=False -> prefix only at the start.
    if not config.get("add_prefix_space", True):
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


# tokenizer_config.json classes whose tokenizer.json transformers 5 re-builds (see below).
_LLAMA_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast")


class HFJsonTokenizer(Tokenizer):
  """A `tokenizer.json` (tokenizers library), configured as transformers configures it."""

  def __init__(self, name: str, json_path: str, config: dict, config_files: Sequence[str] = (),
               chat_template: str | dict[str, str] | None = None):
    import tokenizers  # pylint: disable=g-import-not-at-top
    self.name = name
    self._json_path = json_path
    self._config_files = list(config_files)
    try:
      self._tok = tokenizers.Tokenizer.from_file(json_path)
    except Exception as e:  # pylint: disable=broad-except
      raise TokenizerError(f"{name}: cannot load {json_path!r} with the tokenizers library "
                           f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    self._tok.no_truncation()
    self._tok.no_padding()
    if config.get("tokenizer_class") in _LLAMA_CLASSES:
      self._as_transformers_llama(config)
    self.bos_token = _token_content(config.get("bos_token"))
    self.eos_token = _token_content(config.get("eos_token"))
    self.unk_token = _token_content(config.get("unk_token"))
    self.pad_token = _token_content(config.get("pad_token"))
    self._extra_named_tokens = _extra_named(config)
    # transformers adds the config's added/special tokens the backend does not know as added.
    known = {t.content for t in self._tok.get_added_tokens_decoder().values()}
    to_add = []
    for index, entry in sorted((config.get("added_tokens_decoder") or {}).items(),
                               key=lambda kv: int(kv[0])):
      content = _token_content(entry)
      if content is None:
        raise TokenizerError(f"{name}: added_tokens_decoder[{index!r}] has no string 'content'")
      if content not in known:
        flags = {k: bool(entry.get(k, d)) for k, d in (("single_word", False), ("lstrip", False),
                                                        ("rstrip", False), ("normalized", False),
                                                        ("special", True))}
        to_add.append(tokenizers.AddedToken(content, **flags))
        known.add(content)
    extra = config.get("additional_special_tokens") or config.get("extra_special_tokens") or []
    for token in [self.bos_token, self.eos_token, self.unk_token, self.pad_token,
                  *self._extra_named_tokens.values(),
                  *map(_token_content, extra if isinstance(extra, list) else [])]:
      if token is not None and token not in known:
        to_add.append(tokenizers.AddedToken(token, special=True, normalized=False))
        known.add(token)
    if to_add:
      self._tok.add_tokens(to_add)
    self.vocab_size = max(self._tok.get_vocab(with_added_tokens=True).values()) + 1
    self.bos_id = self.token_to_id(self.bos_token) if self.bos_token else None
    self.eos_id = self.token_to_id(self.eos_token) if self.eos_token else None
    self.unk_id = self.token_to_id(self.unk_token) if self.unk_token else None
    if "add_bos_token" in config or "add_eos_token" in config:
      # transformers rebuilds the post-processor from these flags.
      self.add_bos_default = bool(config.get("add_bos_token", False))
      self.add_eos_default = bool(config.get("add_eos_token", False))
    else:  # the post-processor of tokenizer.json decides: look at what it adds
      plain = self._tok.encode("a", add_special_tokens=False).ids
      full = self._tok.encode("a").ids
      at = next((i for i in range(len(full) - len(plain) + 1)
                 if full[i:i + len(plain)] == plain), 0)
      self.add_bos_default = self.bos_id is not None and self.bos_id in full[:at]
      self.add_eos_default = self.eos_id is not None and self.eos_id in full[at + len(plain):]
    self.chat_template = chat_template

  def _as_transformers_llama(self, config: dict) -> None:
    """transformers 5 builds a LlamaTokenizer from tokenizer.json's vocabulary and merges only,
    with its own pre-tokenizer: a "▁" prefix as SentencePieceTokenizer adds it (see module doc).
    Mistral-7B's tokenizer.json, which prefixes every segment in its normalizer, encodes
    differently after special tokens without this."""
    import tokenizers  # pylint: disable=g-import-not-at-top
    if json.loads(self._tok.model.__getstate__()).get("type") != "BPE":
      return
    if not config.get("add_prefix_space", True):
      scheme = "never"
    else:
      scheme = "always" if config.get("legacy", False) else "first"
    self._tok.normalizer = None
    self._tok.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme=scheme, split=False)
    steps = [tokenizers.decoders.Replace("\u2581", " "), tokenizers.decoders.ByteFallback(),
             tokenizers.decoders.Fuse()]
    if scheme != "never":
      steps.append(tokenizers.decoders.Strip(content=" ", left=1))
    self._tok.decoder = tokenizers.decoders.Sequence(steps)

  def token_to_id(self, token: str) -> int | None:
    return self._tok.token_to_id(token)

  def _encode_plain(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = self._tok.encode(text, add_special_tokens=False)
    return enc.ids, enc.offsets

  def encode_pieces_batch(self, documents, add_bos=True, add_eos=True):
    texts = ["".join(text for text, _ in pieces) for pieces in documents]
    encodings = self._tok.encode_batch(texts, add_special_tokens=False)
    return [self._finish_pieces(pieces, enc.ids, enc.offsets, add_bos, add_eos)
            for pieces, enc in zip(documents, encodings)]

  def decode(self, ids: Iterable[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def files(self) -> list[str]:
    return [self._json_path] + self._config_files

  def save_hf(self, out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for path in self.files():
      target = os.path.join(out_dir, os.path.basename(path))
      if os.path.abspath(path) != os.path.abspath(target):
        shutil.copyfile(path, target)
      written.append(target)
    return written


def _hf_chat_template(directory: str, config: dict) -> str | dict[str, str] | None:
  """The chat template as transformers finds it: .jinja file, chat_template.json, config."""
  jinja = os.path.join(directory, "chat_template.jinja")
  if os.path.isfile(jinja):
    with open(jinja, encoding="utf-8") as f:
      return f.read()
  as_json = os.path.join(directory, "chat_template.json")
  template = _read_json(as_json).get("chat_template") if os.path.isfile(as_json) else None
  if template is None:
    template = config.get("chat_template")
  if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
    return {t["name"]: t["template"] for t in template
            if isinstance(t, dict) and isinstance(t.get("template"), str)} or None
  return template if isinstance(template, (str, dict)) else None


def _load_hf_dir(spec: str, directory: str) -> Tokenizer:
  if not os.path.isdir(directory):
    raise TokenizerError(f"tokenizer {spec!r}: {directory!r} is not a directory "
                         "(expected a Hugging Face model or tokenizer directory)")
  present = [f for f in HF_TOKENIZER_FILES if os.path.isfile(os.path.join(directory, f))]
  config_path = os.path.join(directory, "tokenizer_config.json")
  config = _read_json(config_path) if os.path.isfile(config_path) else {}
  special_map_path = os.path.join(directory, "special_tokens_map.json")
  if os.path.isfile(special_map_path):
    for key, value in _read_json(special_map_path).items():
      config.setdefault(key, value)
  template = _hf_chat_template(directory, config)
  def others(engine):
    return [os.path.join(directory, f) for f in present if f != engine]
  if "tokenizer.json" in present:
    return HFJsonTokenizer(spec, os.path.join(directory, "tokenizer.json"), config,
                           others("tokenizer.json"), template)
  if "tokenizer.model" in present:
    return SentencePieceTokenizer(spec, os.path.join(directory, "tokenizer.model"), config,
                                  others("tokenizer.model"), template)
  raise TokenizerError(
      f"tokenizer {spec!r}: {directory!r} has neither tokenizer.json nor tokenizer.model "
      f"(found: {', '.join(sorted(os.listdir(directory))) or 'nothing'})")


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
    raise ValueError(
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


_SEQIO_CLASS = None


def _seqio_vocabulary_class():
  """Defined on first use so that importing this module never imports TensorFlow."""
  global _SEQIO_CLASS
  if _SEQIO_CLASS is not None:
    return _SEQIO_CLASS
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class TokenizerVocabulary(seqio.Vocabulary):
    """seqio view of a heph_jax Tokenizer. The TF ops run Python (tf.py_function): they are for
    inspection and output features, never for the training input pipeline (not checkpointable).
    """

    def __init__(self, tokenizer: Tokenizer):
      super().__init__(extra_ids=0)
      self.tokenizer = tokenizer

    @property
    def _base_vocab_size(self):
      return self.tokenizer.vocab_size

    @property
    def bos_id(self):
      return self.tokenizer.bos_id

    @property
    def eos_id(self):
      return self.tokenizer.eos_id

    @property
    def unk_id(self):
      return self.tokenizer.unk_id

    @property
    def pad_id(self):
      return self.tokenizer.pad_id

    def _encode(self, s):
      return self.tokenizer.encode(s)

    def _decode(self, ids):
      ids = [int(i) for i in ids]
      if self.eos_id is not None and self.eos_id in ids:  # seqio decodes through the first EOS
        ids = ids[:ids.index(self.eos_id) + 1]
      return self.tokenizer.decode(ids)

    def _encode_tf(self, s):
      def encode_one(text):
        return np.asarray(self.tokenizer.encode(text.numpy().decode("utf-8")), np.int32)
      ids = tf.py_function(encode_one, [s], tf.int32)
      ids.set_shape([None])
      return ids

    def _decode_tf(self, ids):
      def decode_one(row):
        return self._decode(row.numpy().tolist()).encode("utf-8")
      def decode_row(row):
        text = tf.py_function(decode_one, [row], tf.string)
        text.set_shape([])
        return text
      if ids.shape.rank == 1:
        return decode_row(ids)
      flat = tf.reshape(ids, [-1, tf.shape(ids)[-1]])
      texts = tf.map_fn(decode_row, flat, fn_output_signature=tf.string)
      return tf.reshape(texts, tf.shape(ids)[:-1])

    def __eq__(self, other):
      return (isinstance(other, TokenizerVocabulary)
              and self.tokenizer.fingerprint() == other.tokenizer.fingerprint())

    def __hash__(self):
      return hash(self.tokenizer.fingerprint())

    def __str__(self):
      return f"TokenizerVocabulary({self.tokenizer.name!r})"

  _SEQIO_CLASS = TokenizerVocabulary
  return _SEQIO_CLASS
