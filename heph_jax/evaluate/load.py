"""(model config, params, tokenizer) from a heph_jax run directory or an HF Llama/Mistral directory."""
from __future__ import annotations

from typing import Optional

from heph_jax.errors import HephError


class ModelSourceError(HephError):
  pass


def define_model_flags(values) -> None:
  """The flags that pick the model `load` reads (evaluate and generate share them)."""
  from absl import flags
  define = dict(flag_values=values)
  flags.DEFINE_string("workdir", None, "heph_jax run directory (its newest checkpoint unless --step).", **define)
  flags.DEFINE_integer("step", None, "Checkpoint step of --workdir.", **define)
  flags.DEFINE_string("hf", None, "Hugging Face Llama/Mistral directory (instead of --workdir).", **define)
  flags.DEFINE_string("tokenizer", None, "sp:PATH or hf:DIR; default: the run's / the HF directory's.", **define)


def _run_tokenizer(config) -> str:
  spec = config.data.get("tokenizer") if "data" in config else None
  if not spec and str(config.get("init_from", "")).startswith("hf:"):
    spec = "hf:" + config.init_from[3:]
  if not spec:
    raise ModelSourceError("the run's config names no data.tokenizer; pass --tokenizer")
  return spec


def load(workdir: Optional[str] = None, step: Optional[int] = None, hf_dir: Optional[str] = None,
         tokenizer: Optional[str] = None, dtype: str = "float32"):
  """Returns (model_cfg, params, tokenizer, step); step None for HF directories."""
  from heph_jax.data.tokenizers import load_tokenizer
  if bool(workdir) == bool(hf_dir):
    raise ModelSourceError("give exactly one of --workdir and --hf")
  if hf_dir:
    from heph_jax.export import hf
    model_cfg, params = hf.load(hf_dir)
    return model_cfg.replace(dtype=dtype), params, load_tokenizer(tokenizer or f"hf:{hf_dir}"), None
  from heph_jax.training.checkpoint import restore_params
  try:
    config, model_cfg, params, step = restore_params(workdir, step)
  except FileNotFoundError as e:
    raise ModelSourceError(str(e)) from None
  return model_cfg.replace(dtype=dtype), params, load_tokenizer(tokenizer or _run_tokenizer(config)), step
