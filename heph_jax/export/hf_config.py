"""Hugging Face config.json <-> ModelConfig, for Llama and Mistral checkpoints.

Reads both layouts transformers has used for rotary settings: v5's `rope_parameters` dict (with
`rope_theta` inside) and the older top-level `rope_theta` + `rope_scaling` ({"type"|"rope_type": ...}).
Writes both, so that transformers v4 and v5 read the exported config the same way.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Mapping, Union

from heph_jax.errors import ConfigError, HephError
from heph_jax.model.config import ModelConfig

# HF class name -> (our architecture, HF model_type).
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral"}
HF_CLASS = {arch: cls for cls, arch in ARCHITECTURES.items()}

# Defaults of transformers' LlamaConfig / MistralConfig for keys a config.json may omit.
_HF_DEFAULTS = {
    "llama": {"max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
              "tie_word_embeddings": False, "initializer_range": 0.02, "bos_token_id": 1,
              "eos_token_id": 2},
    "mistral": {"max_position_embeddings": 4096 * 32, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                "tie_word_embeddings": False, "initializer_range": 0.02, "bos_token_id": 1,
                "eos_token_id": 2},
}
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads")
# Keys that decide parameter shapes: a checkpoint that differs cannot initialize the model.
SHAPE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings")
# Keys that change numerics only: a deliberate change (e.g. a larger rope_theta for long context)
# is allowed, with a warning.
NUMERIC_KEYS = ("rms_norm_eps", "rope_theta", "rope_scaling", "sliding_window", "architecture")


class HFCheckpointError(HephError, ValueError):
  """A Hugging Face checkpoint directory that heph_jax cannot read; the message names the file."""


def read_config_json(hf_dir: str) -> dict:
  path = os.path.join(hf_dir, "config.json")
  if not os.path.isdir(hf_dir):
    raise HFCheckpointError(f"{hf_dir}: no such directory (expected a Hugging Face model directory)")
  if not os.path.exists(path):
    raise HFCheckpointError(f"{path}: missing; a Hugging Face model directory needs its config.json")
  from heph_jax.data.forge.io import read_json_object
  return read_json_object(path, HFCheckpointError)


def _architecture(values: Mapping[str, Any], source: str) -> str:
  classes = values.get("architectures") or []
  model_type = values.get("model_type")
  if classes:
    if len(classes) != 1 or classes[0] not in ARCHITECTURES:
      raise HFCheckpointError(
          f"{source}: architectures={classes} is not supported; heph_jax reads "
          f"{sorted(ARCHITECTURES)}")
    arch = ARCHITECTURES[classes[0]]
    if model_type is not None and model_type != arch:
      raise HFCheckpointError(f"{source}: model_type={model_type!r} does not match "
                              f"architectures={classes} (expected {arch!r})")
    return arch
  if model_type in HF_CLASS:
    return model_type
  raise HFCheckpointError(f"{source}: unknown architecture (architectures={classes}, "
                          f"model_type={model_type!r}); heph_jax reads {sorted(ARCHITECTURES)}")


def _rope(values: Mapping[str, Any], defaults: Mapping[str, Any], source: str):
  """(rope_theta, rope_scaling or None) from either config layout."""
  if values.get("rope_parameters"):
    params = dict(values["rope_parameters"])
    theta = params.pop("rope_theta", values.get("rope_theta", defaults["rope_theta"]))
  else:
    params = dict(values.get("rope_scaling") or {})
    theta = values.get("rope_theta", defaults["rope_theta"])
  if "type" in params:  # the oldest spelling
    params.setdefault("rope_type", params.pop("type"))
  rope_type = params.get("rope_type", "default")
  if rope_type == "default":
    return float(theta), None
  if rope_type not in ("linear", "llama3"):
    raise HFCheckpointError(f"{source}: rope_type {rope_type!r} is not supported; heph_jax implements "
                            f"'default', 'linear' and 'llama3'")
  return float(theta), params


def config_from_hf(hf_dir_or_dict: Union[str, Mapping[str, Any]], **overrides) -> ModelConfig:
  """ModelConfig of an HF Llama/Mistral config.json (a directory, or the dict itself).

  `overrides` set heph_jax-only fields (dtype, attention_impl, scan_layers, ...).
  """
  if isinstance(hf_dir_or_dict, Mapping):
    values, source = dict(hf_dir_or_dict), "config.json"
  else:
    values, source = read_config_json(hf_dir_or_dict), os.path.join(hf_dir_or_dict, "config.json")
  arch = _architecture(values, source)
  defaults = _HF_DEFAULTS[arch]
  missing = [key for key in _REQUIRED if values.get(key) is None]
  if missing:
    raise HFCheckpointError(f"{source}: missing required key(s) {missing}")
  hidden_act = values.get("hidden_act", "silu")
  if hidden_act != "silu":
    raise HFCheckpointError(f"{source}: hidden_act={hidden_act!r}; heph_jax's MLP is SwiGLU ('silu')")
  for key in ("attention_bias", "mlp_bias"):
    if values.get(key):
      raise HFCheckpointError(f"{source}: {key}=true; heph_jax's Llama has no biases")
  theta, scaling = _rope(values, defaults, source)
  special = {}
  for key in ("bos_token_id", "eos_token_id"):
    value = values.get(key, defaults[key])
    if isinstance(value, (list, tuple)):
      if len(value) > 1:
        warnings.warn(f"{source}: {key}={list(value)}; heph_jax keeps only the first, {value[0]}")
      value = value[0] if value else None
    special[key] = value
  heads = values["num_attention_heads"]
  fields = dict(
      vocab_size=values["vocab_size"],
      hidden_size=values["hidden_size"],
      intermediate_size=values["intermediate_size"],
      num_hidden_layers=values["num_hidden_layers"],
      num_attention_heads=heads,
      num_key_value_heads=values.get("num_key_value_heads") or heads,
      head_dim=values.get("head_dim") or values["hidden_size"] // heads,
      rms_norm_eps=float(values.get("rms_norm_eps", defaults["rms_norm_eps"])),
      rope_theta=theta,
      rope_scaling=scaling,
      max_position_embeddings=values.get("max_position_embeddings",
                                         defaults["max_position_embeddings"]),
      tie_word_embeddings=bool(values.get("tie_word_embeddings", defaults["tie_word_embeddings"])),
      initializer_range=float(values.get("initializer_range", defaults["initializer_range"])),
      architecture=arch,
      sliding_window=values.get("sliding_window") if arch == "mistral" else None,
      **special,
  )
  fields.update(overrides)
  try:
    return ModelConfig(**fields)
  except ConfigError as e:
    raise HFCheckpointError(f"{source}: {e}") from None


def hf_config_dict(cfg: ModelConfig, dtype: str = "float32") -> dict:
  """config.json contents for `cfg` (what transformers' save_pretrained would write)."""
  scaling = dict(cfg.rope_scaling) if cfg.rope_scaling else None
  rope_parameters = {"rope_type": "default", **(scaling or {}), "rope_theta": cfg.rope_theta}
  values = {
      "architectures": [HF_CLASS[cfg.architecture]],
      "model_type": cfg.architecture,
      "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.hidden_size,
      "intermediate_size": cfg.intermediate_size,
      "num_hidden_layers": cfg.num_hidden_layers,
      "num_attention_heads": cfg.num_attention_heads,
      "num_key_value_heads": cfg.num_key_value_heads,
      "head_dim": cfg.head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": cfg.max_position_embeddings,
      "initializer_range": cfg.initializer_range,
      "rms_norm_eps": cfg.rms_norm_eps,
      "rope_parameters": rope_parameters,  # transformers v5
      "rope_theta": cfg.rope_theta,  # transformers v4
      "rope_scaling": scaling,
      "tie_word_embeddings": cfg.tie_word_embeddings,
      "bos_token_id": cfg.bos_token_id,
      "eos_token_id": cfg.eos_token_id,
      "attention_dropout": 0.0,
      "use_cache": True,
      "dtype": dtype,
  }
  if cfg.architecture == "llama":
    values.update(attention_bias=False, mlp_bias=False, pretraining_tp=1)
  else:
    values["sliding_window"] = cfg.sliding_window
  return values


def generation_config_dict(cfg: ModelConfig) -> dict:
  return {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}


def check_matches(model_config: ModelConfig, hf_config: ModelConfig, hf_dir: str,
                  prefix: str = "model") -> None:
  """Raises ConfigError on a shape mismatch (naming the config key); warns on numeric ones."""
  for key in SHAPE_KEYS:
    ours, theirs = getattr(model_config, key), getattr(hf_config, key)
    if ours != theirs:
      raise ConfigError(f"config.{prefix}.{key}={ours!r}: the HF checkpoint at {hf_dir} has {theirs!r}")
  for key in NUMERIC_KEYS:
    ours, theirs = getattr(model_config, key), getattr(hf_config, key)
    if ours != theirs:
      warnings.warn(f"config.{prefix}.{key}={ours!r} differs from the HF checkpoint at {hf_dir} "
                    f"({theirs!r}); training with {ours!r}")


def check_sliding_window(cfg: ModelConfig, seq_len: int, source: str = "config.model") -> None:
  """Warns when Mistral's sliding window is shorter than the sequences (we attend to all)."""
  if cfg.sliding_window is not None and cfg.sliding_window < seq_len:
    warnings.warn(f"{source}: sliding_window={cfg.sliding_window} is shorter than the sequence length "
                  f"{seq_len}; heph_jax attends over the full causal context, so tokens farther "
                  f"apart than the window see each other (unlike the HF model)")
