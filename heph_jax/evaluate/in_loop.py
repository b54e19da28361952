"""Function-calling eval during training (config.eval.function_calling).

Every `every_steps` steps (and at the last step) all processes decode the same BFCL questions on
the training mesh with the live params; process 0 logs fc_accuracy/<category> (metrics.jsonl and
TensorBoard) and writes the generations to WORKDIR/eval/step_N.jsonl.
"""
from __future__ import annotations

import os

import ml_collections
import numpy as np

from heph_jax.errors import ConfigError

_KEY = "config.eval.function_calling"


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(function_calling=ml_collections.ConfigDict(dict(
      bfcl="",               # bfcl-eval wheel / directory / BFCL_v*_<category>.json; "" = off
      categories=["simple", "multiple", "parallel", "parallel_multiple", "irrelevance"],
      num_questions=20,      # per category (the first ones in file order)
      every_steps=0,         # 0 = off
      max_new_tokens=128,
      batch_size=8,          # rounded up to a multiple of the mesh's batch shards
  ))))


def validate_config(config) -> None:
  """ConfigError naming the key for a bad config.eval.function_calling (absent = off)."""
  if "eval" not in config or "function_calling" not in config.eval:
    return
  from heph_jax.evaluate.data import CATEGORIES
  fc = config.eval.function_calling
  for key in ("num_questions", "every_steps", "max_new_tokens", "batch_size"):
    value = fc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "every_steps" else 1):
      raise ConfigError(f"{_KEY}.{key}: must be a {'non-negative' if key == 'every_steps' else 'positive'} "
                        f"integer, got {value!r}")
  categories = list(fc.get("categories") or [])
  bad = [c for c in categories if c not in CATEGORIES]
  if bad or not categories:
    raise ConfigError(f"{_KEY}.categories: {bad or categories!r}: expected a non-empty list of {CATEGORIES}")
  if fc.every_steps and not fc.bfcl:
    raise ConfigError(f"{_KEY}.bfcl: every_steps={fc.every_steps} but no BFCL data is named")
  if fc.bfcl and not os.path.exists(fc.bfcl):
    raise ConfigError(f"{_KEY}.bfcl: {fc.bfcl!r} does not exist")


def batch_shards(sharding) -> int:
  """How many ways a NamedSharding of [batch, ...] splits the batch axis (1 without one)."""
  if sharding is None or not sharding.spec:
    return 1
  axes = sharding.spec[0]
  axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
  return int(np.prod([sharding.mesh.shape[a] for a in axes]))


class FunctionCallingEval:
  """Built once before the loop (reads the questions); `maybe_run` at every step."""

  def __init__(self, config, model_cfg, tokenizer, workdir, writer, batch_sharding=None):
    fc = config.eval.function_calling if "eval" in config and "function_calling" in config.eval else None
    self.every = fc.every_steps if fc is not None and fc.bfcl else 0
    if not self.every:
      return
    from heph_jax.evaluate import data
    self.fc, self.model_cfg, self.tokenizer, self.workdir = fc, model_cfg, tokenizer, workdir
    self.writer = writer  # a clu MetricWriter (heph_jax.training.metrics.create_writer)
    self.questions = data.load(fc.bfcl, list(fc.categories), fc.num_questions)
    shards = batch_shards(batch_sharding)
    self.batch_size = -(-fc.batch_size // shards) * shards

  def due(self, step: int, last: bool) -> bool:
    return bool(self.every) and (step % self.every == 0 or last)

  def maybe_run(self, step: int, params, last: bool = False):
    if not self.due(step, last):
      return None
    import jax
    from heph_jax.evaluate import run
    records, acc = run.evaluate(self.model_cfg, params, self.tokenizer, self.questions,
                                self.fc.max_new_tokens, self.batch_size)
    if jax.process_index() == 0:
      run.write_jsonl(os.path.join(self.workdir, "eval", f"step_{step}.jsonl"), records)
      self.writer.write_scalars(step, {f"fc_accuracy/{c}": a for c, a in acc.items()})
    return acc
