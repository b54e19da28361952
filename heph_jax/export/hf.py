"""Hugging Face Llama/Mistral checkpoints <-> heph_jax params (safetensors only, no torch).

    cfg, params = hf.load("/ckpt/Meta-Llama-3-8B", shardings=shardings)  # tensor by tensor
    params = hf.load_params_for(model_config, "/ckpt/Meta-Llama-3-8B", shardings)  # init_from="hf:..."
    hf.save(cfg, params, "/out/my-model", tokenizer=tok, dtype="bfloat16")  # from_pretrained loads it

Names and layouts come from one table (hf_table.py); config.json from hf_config.py. With
`shardings`, each device reads only its own slice of each tensor from the memory-mapped
safetensors file, so no host ever holds the whole model.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from safetensors import safe_open
from safetensors.numpy import save as save_bytes

from heph_jax.export.hf_config import (HFCheckpointError, check_matches, check_sliding_window,
                                       config_from_hf, generation_config_dict, hf_config_dict)
from heph_jax.export.hf_table import (IGNORED_SUFFIXES, TensorMapping, get_path,
                                      hf_names_in_order, tensor_table)
from heph_jax.model.config import ModelConfig

__all__ = ["HFCheckpointError", "config_from_hf", "hf_config_dict", "load", "load_params_for",
           "save"]

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
_FLOAT_DTYPES = ("F32", "BF16", "F16", "F64")
_EXPORT_DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # transformers' default shard size ("5GB")


# ---- reading ----------------------------------------------------------------------------------
def _weight_map(hf_dir: str) -> dict[str, str]:
  """HF tensor name -> safetensors file path, from the index or the single file."""
  index_path = os.path.join(hf_dir, INDEX_FILE)
  if os.path.exists(index_path):
    try:
      with open(index_path, encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise HFCheckpointError(f"{index_path}: not a safetensors index (expected {{'weight_map': "
                              f"{{name: file}}}}): {e!r}") from None
    files = {name: os.path.join(hf_dir, file) for name, file in weight_map.items()}
    for file in sorted(set(files.values())):
      if not os.path.exists(file):
        raise HFCheckpointError(f"{index_path} names {os.path.basename(file)}, which is missing "
                                f"from {hf_dir}")
    return files
  single = os.path.join(hf_dir, SINGLE_FILE)
  if os.path.exists(single):
    with safe_open(single, framework="numpy") as f:
      return {name: single for name in f.keys()}
  pickles = sorted(os.path.basename(p) for pattern in _PICKLE_PATTERNS
                   for p in glob.glob(os.path.join(hf_dir, pattern)))
  if pickles:
    raise HFCheckpointError(
        f"{hf_dir}: only pickle checkpoint files ({', '.join(pickles)}); heph_jax reads safetensors "
        f"only (pickles can run code when loaded). Convert once with torch + transformers:\n"
        f"  python -c \"from transformers import AutoModelForCausalLM as M; "
        f"M.from_pretrained('{hf_dir}').save_pretrained('{hf_dir.rstrip('/')}-safetensors')\""
        f" (then copy its tokenizer files next to the new model files)")
  raise HFCheckpointError(f"{hf_dir}: no {SINGLE_FILE} or {INDEX_FILE}")


class _Reader:
  """Open safetensors files of one checkpoint; reads boxes of tensors (memory-mapped)."""

  def __init__(self, hf_dir: str, stack: contextlib.ExitStack):
    self.hf_dir = hf_dir
    self.files = _weight_map(hf_dir)
    self._stack = stack
    self._open = {}

  def _handle(self, file: str):
    if file not in self._open:
      self._open[file] = self._stack.enter_context(safe_open(file, framework="numpy"))
    return self._open[file]

  def where(self, name: str) -> str:
    return os.path.relpath(self.files[name], self.hf_dir)

  def check(self, mapping: TensorMapping, layer: Optional[int]) -> None:
    name = mapping.name(layer)
    if name not in self.files:
      source = INDEX_FILE if os.path.exists(os.path.join(self.hf_dir, INDEX_FILE)) else SINGLE_FILE
      raise HFCheckpointError(f"{os.path.join(self.hf_dir, source)}: tensor {name!r} is missing "
                              f"(expected shape {list(mapping.hf_shape)})")
    tensor = self._handle(self.files[name]).get_slice(name)
    shape, dtype = tuple(tensor.get_shape()), tensor.get_dtype()
    file = os.path.join(self.hf_dir, self.where(name))
    if shape != mapping.hf_shape:
      raise HFCheckpointError(f"{file}: tensor {name!r} has shape {list(shape)}, expected "
                              f"{list(mapping.hf_shape)} from config.json")
    if dtype not in _FLOAT_DTYPES:
      raise HFCheckpointError(f"{file}: tensor {name!r} has dtype {dtype}; expected one of "
                              f"{_FLOAT_DTYPES}")

  def read(self, name: str, slices: tuple[slice, ...]) -> np.ndarray:
    return _read_slice(self._handle(self.files[name]), name, slices)


def _read_slice(handle, name: str, slices: tuple[slice, ...]) -> np.ndarray:
  """One box of one tensor (module-level so that tests can watch what is read)."""
  return handle.get_slice(name)[slices]


def _check_names(reader: _Reader, cfg: ModelConfig) -> None:
  expected = {m.name(layer) for m, layer in hf_names_in_order(cfg)}
  for mapping, layer in hf_names_in_order(cfg):
    reader.check(mapping, layer)
  extra = sorted(name for name in reader.files if name not in expected
                 and not name.endswith(IGNORED_SUFFIXES)
                 and not (cfg.tie_word_embeddings and name == "lm_head.weight"))
  if extra:
    shown = ", ".join(repr(name) for name in extra[:5]) + (" ..." if len(extra) > 5 else "")
    raise HFCheckpointError(
        f"{reader.hf_dir}: {len(extra)} tensor(s) heph_jax's {cfg.architecture} has no place for: "
        f"{shown} (in {reader.where(extra[0])}); does config.json describe this checkpoint?")


def _normalize(index, shape) -> tuple[slice, ...]:
  out = []
  for s, size in zip(index, shape):
    start, stop, step = s.indices(size)
    if step != 1:
      raise ValueError(f"strided shard index {index} is not supported")
    out.append(slice(start, stop))
  return tuple(out)


def _load_tensor(reader: _Reader, mapping: TensorMapping, cfg: ModelConfig, dtype, sharding):
  shape = mapping.our_shape(cfg.num_hidden_layers)
  cache = {}

  def block(index):
    index = _normalize(index, shape)
    key = tuple((s.start, s.stop) for s in index)
    if key not in cache:  # replicas of one shard read it once
      if mapping.stacked:
        layers = range(index[0].start, index[0].stop)
        parts = [mapping.read_block(lambda sl, i=i: reader.read(mapping.name(i), sl), index[1:])
                 for i in layers]
        value = np.stack(parts) if parts else np.zeros((0,) + mapping.layer_shape)
      else:
        value = mapping.read_block(lambda sl: reader.read(mapping.name(), sl), index)
      cache[key] = np.ascontiguousarray(value.astype(dtype))
    return cache[key]

  if sharding is None:
    return jnp.asarray(block(tuple(slice(None) for _ in shape)))
  return jax.make_array_from_callback(shape, sharding, block)


def _load_params(cfg: ModelConfig, hf_dir: str, shardings, dtype) -> dict:
  dtype = jnp.dtype(dtype)
  params: dict[str, Any] = {}
  with contextlib.ExitStack() as stack:
    reader = _Reader(hf_dir, stack)
    _check_names(reader, cfg)
    for mapping in tensor_table(cfg):
      sharding = None
      if shardings is not None:
        try:
          sharding = get_path(shardings, mapping.path)
        except (KeyError, TypeError):
          raise ValueError(f"shardings has no entry {'/'.join(mapping.path)}; it must have the "
                           f"structure of the params (heph_jax.model.logical_axes)") from None
      node = params
      for key in mapping.path[:-1]:
        node = node.setdefault(key, {})
      node[mapping.path[-1]] = _load_tensor(reader, mapping, cfg, dtype, sharding)
  return params


def load(hf_dir: str, shardings=None, dtype=None) -> tuple[ModelConfig, dict]:
  """(ModelConfig, params) of an HF Llama/Mistral directory. `dtype`: of the params (default
  float32). `shardings`: a pytree of NamedSharding shaped like the params."""
  cfg = config_from_hf(hf_dir)
  return cfg, _load_params(cfg, hf_dir, shardings, dtype or cfg.param_dtype)


def load_params_for(model_config: ModelConfig, hf_dir: str, shardings=None,
                    seq_len: Optional[int] = None) -> dict:
  """Params for `model_config` from an HF checkpoint (config init_from="hf:DIR").

  Raises ConfigError naming the config key when the checkpoint's shapes differ. With `seq_len`,
  warns when a Mistral sliding window is shorter than the training sequences.
  """
  hf_cfg = config_from_hf(hf_dir)
  check_matches(model_config, hf_cfg, hf_dir)
  if seq_len is not None:  # the checkpoint was trained with its window, whatever the config says
    check_sliding_window(hf_cfg, seq_len, source=os.path.join(hf_dir, "config.json"))
  return _load_params(model_config, hf_dir, shardings, model_config.param_dtype)


# ---- writing ----------------------------------------------------------------------------------
def _to_host(x) -> np.ndarray:
  """A (possibly sharded, possibly multi-host) array as one numpy array on every process."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def _check_params(cfg: ModelConfig, params) -> None:
  for mapping in tensor_table(cfg):
    try:
      value = get_path(params, mapping.path)
    except (KeyError, TypeError):
      raise ValueError(f"params has no {'/'.join(mapping.path)} (needed for {mapping.hf_name!r}); "
                       f"is tie_word_embeddings={cfg.tie_word_embeddings} right?") from None
    expected = mapping.our_shape(cfg.num_hidden_layers)
    if tuple(value.shape) != expected:
      raise ValueError(f"params {'/'.join(mapping.path)} has shape {list(value.shape)}, expected "
                       f"{list(expected)} from the model config")


def _plan_shards(entries, itemsize: int, max_shard_bytes: int) -> list[list]:
  shards, current, size = [], [], 0
  for mapping, layer in entries:
    nbytes = int(np.prod(mapping.hf_shape)) * itemsize
    if current and size + nbytes > max_shard_bytes:
      shards.append(current)
      current, size = [], 0
    current.append((mapping, layer))
    size += nbytes
  if current:
    shards.append(current)
  return shards


# The export writes through etils.epath, so out_dir may be gs:// (or any non-local filesystem).
def _write_json(path, value) -> None:
  epath.Path(path).write_text(json.dumps(value, indent=2, sort_keys=False) + "\n")


def _write_tokenizer(tokenizer, out_dir: str) -> None:
  out = epath.Path(out_dir)
  if hasattr(tokenizer, "save_hf"):  # heph_jax.data.tokenizers.Tokenizer: a complete HF directory
    with tempfile.TemporaryDirectory() as local:  # save_hf writes local files; then copy them over
      tokenizer.save_hf(local)
      for path in sorted(epath.Path(local).iterdir()):
        (out / path.name).write_bytes(path.read_bytes())
    return
  for path in tokenizer.files():
    (out / os.path.basename(path)).write_bytes(epath.Path(path).read_bytes())


def save(model_config: ModelConfig, params, out_dir: str, tokenizer=None, dtype: str = "float32",
         max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
  """Writes an HF model directory that `AutoModelForCausalLM.from_pretrained` loads.

  `params` may be sharded global arrays: each tensor is gathered one layer at a time. On several
  hosts every process must call this (the gathers are collective); only process 0 writes.
  """
  cfg = model_config
  if dtype not in _EXPORT_DTYPES:
    raise ValueError(f"dtype must be one of {_EXPORT_DTYPES}, got {dtype!r}")
  np_dtype = jnp.dtype(dtype)
  _check_params(cfg, params)
  writer = jax.process_index() == 0
  entries = hf_names_in_order(cfg)
  shards = _plan_shards(entries, np_dtype.itemsize, max_shard_bytes)
  if writer:
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Stale files of an earlier export would mix with ours; config.json goes last, so an
    # interrupted export is visibly incomplete.
    stale = [out / name for name in ("config.json", INDEX_FILE, SINGLE_FILE)]
    for path in stale + list(out.glob("model-*-of-*.safetensors")):
      if path.exists():
        path.unlink()
  weight_map, total_bytes = {}, 0
  for number, shard in enumerate(shards, start=1):
    file = SINGLE_FILE if len(shards) == 1 else f"model-{number:05d}-of-{len(shards):05d}.safetensors"
    tensors = {}
    for mapping, layer in shard:
      value = get_path(params, mapping.path)
      host = _to_host(value[layer] if mapping.stacked else value)
      if writer:
        tensors[mapping.name(layer)] = mapping.to_hf_array(host.astype(np_dtype))
        weight_map[mapping.name(layer)] = file
        total_bytes += tensors[mapping.name(layer)].nbytes
    if writer:
      # bytes, then one write: a shard is bounded by max_shard_bytes, and gs:// has no mmap
      (epath.Path(out_dir) / file).write_bytes(save_bytes(tensors, metadata={"format": "pt"}))
  if writer:
    if len(shards) > 1:
      _write_json(epath.Path(out_dir) / INDEX_FILE,
                  {"metadata": {"total_size": total_bytes}, "weight_map": weight_map})
    _write_json(epath.Path(out_dir) / "generation_config.json", generation_config_dict(cfg))
    if tokenizer is not None:
      _write_tokenizer(tokenizer, out_dir)
    _write_json(epath.Path(out_dir) / "config.json", hf_config_dict(cfg, dtype))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"heph_jax.export.hf.save:{out_dir}")

