"""Config helpers: loading config files, validation with messages that name the key."""
from __future__ import annotations

import importlib.util
import os
from typing import Any

import ml_collections

from heph_jax.errors import ConfigError
from heph_jax.model.config import ModelConfig


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Runs `get_config()` of a config file given by path (the same thing `--config` does)."""
  if not os.path.isfile(path):
    raise ConfigError(f"--config: no config file at {path!r}")
  name = "heph_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"--config: {path} has no get_config() function")
  return module.get_config()


def sibling(config_file: str, name: str) -> ml_collections.ConfigDict:
  """`get_config()` of another config file in the same folder: `sibling(__file__, "base")`."""
  return load_config_file(os.path.join(os.path.dirname(os.path.abspath(config_file)), name + ".py"))


def override(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """Sets dotted keys ("model.hidden_size": 64) in place, as --config.KEY=VALUE flags do; returns it."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
  return ModelConfig.from_dict(config.model.to_dict())


def _fail(key: str, msg: str):
  raise ConfigError(f"config.{key}: {msg}")


def _positive_int(config, key, allow_zero=False):
  value = config
  for part in key.split("."):
    value = value[part]
  if not isinstance(value, int) or isinstance(value, bool) or value < 0 or (value == 0 and not allow_zero):
    _fail(key, f"must be a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}")


def global_batch_size(config: ml_collections.ConfigDict, num_devices: int) -> int:
  """Sequences per optimizer step. per_device_batch_size > 0 takes precedence (x device count)."""
  if config.per_device_batch_size > 0:
    return config.per_device_batch_size * num_devices
  return config.global_batch_size


def validate(config: ml_collections.ConfigDict, num_devices: int, num_processes: int = 1,
             check_data: bool = True, platform: str | None = None) -> None:
  """Checks everything that can be checked before compiling; raises ConfigError naming the key.

  check_data=False skips the data files and tokenizer (heph_jax.aot compiles without them).
  platform ("cpu", "tpu", "gpu"), when given, is checked against model.attention_impl.
  """
  for key in ("num_train_steps", "log_every_steps", "seq_len", "grad_accum_steps"):
    _positive_int(config, key)
  for key in ("checkpoint_every_steps", "eval_every_steps", "eval_batches", "keep_checkpoints",
              "hf_export_every_steps", "global_batch_size", "per_device_batch_size",
              "loss_chunk_size", "skip_nonfinite_steps"):
    _positive_int(config, key, allow_zero=True)
  if config.per_device_batch_size > 0 and config.global_batch_size > 0:
    _fail("per_device_batch_size", "set either per_device_batch_size or global_batch_size, not both "
          f"(got {config.per_device_batch_size} and {config.global_batch_size}); set the other to 0")
  batch = global_batch_size(config, num_devices)
  if batch <= 0:
    _fail("global_batch_size", "one of global_batch_size / per_device_batch_size must be > 0")
  model_cfg = model_config(config)
  if config.seq_len > model_cfg.max_position_embeddings:
    _fail("seq_len", f"{config.seq_len} exceeds model.max_position_embeddings="
          f"{model_cfg.max_position_embeddings}")
  from heph_jax.parallel.mesh import mesh_shape  # late: avoids importing jax for config-only use
  from heph_jax.parallel.rules import batch_shards
  shape = mesh_shape(config.mesh, num_devices)
  shards, axes = batch_shards(shape, config.logical_axis_rules)
  if batch % (config.grad_accum_steps * shards):
    split = " x ".join(f"{a}={shape[a]}" for a in axes) or "none"
    _fail("global_batch_size", f"{batch} sequences must split into grad_accum_steps="
          f"{config.grad_accum_steps} microbatches, each divisible by the {shards} batch shards "
          f"of the mesh ({split}: the 'batch' rule of logical_axis_rules)")
  if batch % num_processes:
    _fail("global_batch_size", f"{batch} is not divisible by the {num_processes} processes")
  tensor = shape["tensor"]
  if model_cfg.num_key_value_heads % tensor and model_cfg.num_attention_heads % tensor:
    _fail("mesh.tensor", f"{tensor} divides neither model.num_attention_heads="
          f"{model_cfg.num_attention_heads} nor num_key_value_heads={model_cfg.num_key_value_heads}")
  if platform is not None:
    _check_attention_impl(model_cfg.attention_impl, platform)
  if model_cfg.attention_impl == "pallas" and model_cfg.attention_block_sizes:
    from heph_jax.kernels.flash_attention import resolve_block_sizes  # late: imports jax
    resolve_block_sizes(model_cfg.attention_block_sizes, device_kind="", seq_len=config.seq_len,
                        head_dim=model_cfg.head_dim, itemsize=2 if model_cfg.dtype != "float32" else 4)
  opt = config.optimizer
  if opt.schedule not in ("cosine", "wsd", "constant", "linear"):
    _fail("optimizer.schedule", f"must be 'cosine', 'wsd', 'linear' or 'constant', got {opt.schedule!r}")
  if not isinstance(opt.warmup_steps, int) or opt.warmup_steps < 0:
    _fail("optimizer.warmup_steps", f"must be a non-negative integer, got {opt.warmup_steps!r}")
  if not 0.0 <= opt.min_lr_ratio <= 1.0:
    _fail("optimizer.min_lr_ratio", f"must lie in [0, 1], got {opt.min_lr_ratio}")
  if config.init_from and not str(config.init_from).startswith(("hf:", "ckpt:")):
    _fail("init_from", f"must start with 'hf:' (Hugging Face directory) or 'ckpt:' (heph_jax workdir "
          f"or checkpoint step directory), got {config.init_from!r}")
  from heph_jax.evaluate.in_loop import validate_config as validate_eval_config
  validate_eval_config(config)
  if check_data:
    from heph_jax.data.pipeline.config import validate_data_config  # late: keeps this module light
    validate_data_config(config.data)


def _check_attention_impl(impl: str, platform: str) -> None:
  if impl == "cpu" and platform != "cpu":
    _fail("model.attention_impl", f"'cpu' is a kernel for CPU devices and this run is on {platform!r}; "
          "use 'pallas' (TPU/GPU) or 'xla'")


def build_kernels(config: ml_collections.ConfigDict) -> None:
  """Builds what the config's attention kernel needs before anything compiles (run start, after
  validate): the C++ kernel of attention_impl="cpu" is compiled once per machine and cached, and a
  build failure is reported here, naming the key, not in the middle of tracing the model."""
  if config.model.attention_impl != "cpu":
    return
  from heph_jax.kernels import cpu_attention  # late: imports jax
  try:
    cpu_attention.build()
  except cpu_attention.KernelBuildError as e:
    _fail("model.attention_impl", str(e))
