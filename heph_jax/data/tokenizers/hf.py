"""tokenizer.json engine (the `tokenizers` library) and Hugging Face directory loading."""
from __future__ import annotations

import json
import os
import shutil
from typing import Iterable, Sequence

from heph_jax.data.tokenizers.base import (HF_TOKENIZER_FILES, Tokenizer, TokenizerError, _extra_named,
                                          _read_json, _token_content)
from heph_jax.data.tokenizers.sp import SentencePieceTokenizer


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
