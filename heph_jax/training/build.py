"""The sharded, jitted train and eval steps as a run uses them, built in one place.

heph_jax/train.py runs what this builds and heph_jax/aot.py compiles it for a TPU topology, so the
AOT memory check sees exactly the program training will run. Tracing happens on the first call or
`.lower()`, which must sit inside `jax.set_mesh(mesh)` and the logical-axis-rules context.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from heph_jax import config as config_lib
from heph_jax.model.config import ModelConfig
from heph_jax.parallel.mesh import batch_sharding
from heph_jax.training import optimizer, state as state_lib, step as step_lib


def _with_attention_blocks(model_cfg: ModelConfig, seq_len: int, mesh) -> ModelConfig:
  """Pallas attention gets the block sizes of the mesh's TPU generation unless the config sets them."""
  if model_cfg.attention_impl != "pallas":
    return model_cfg
  from heph_jax.kernels.flash_attention import resolve_block_sizes
  blocks = resolve_block_sizes(model_cfg.attention_block_sizes,
                               device_kind=mesh.devices.flat[0].device_kind, seq_len=seq_len,
                               head_dim=model_cfg.head_dim, itemsize=2 if model_cfg.dtype != "float32" else 4)
  return model_cfg.replace(attention_block_sizes=blocks.values())


@dataclasses.dataclass(frozen=True)
class TrainProgram:
  model_cfg: ModelConfig
  tx: Any                 # optax GradientTransformation
  schedule: Callable      # step -> learning rate
  shardings: dict         # {"step", "params", "opt_state"} -> NamedSharding pytrees
  batch_sharding: Any     # NamedSharding of every [B, S] input array
  batch_size: int         # global sequences per optimizer step
  train_step: Callable    # jitted (state, batch) -> (state, metrics); donates state
  eval_step: Callable     # jitted (params, batch) -> (loss sum, weight sum)


def build_train_step(config, mesh) -> TrainProgram:
  model_cfg = _with_attention_blocks(config_lib.model_config(config), config.seq_len, mesh)
  rules = config.logical_axis_rules
  tx, schedule = optimizer.make_optimizer(config.optimizer, config.num_train_steps)
  shardings = state_lib.state_shardings(model_cfg, tx, mesh, rules)
  in_batch = batch_sharding(mesh, rules)
  step_fn = step_lib.make_train_step(model_cfg, tx, config.grad_accum_steps, config.loss_chunk_size)
  train_step = jax.jit(step_fn, in_shardings=(shardings, in_batch), out_shardings=(shardings, None),
                       donate_argnums=0)
  eval_step = jax.jit(step_lib.make_eval_step(model_cfg, config.loss_chunk_size),
                      in_shardings=(shardings["params"], in_batch))
  return TrainProgram(model_cfg, tx, schedule, shardings, in_batch,
                      config_lib.global_batch_size(config, mesh.size), train_step, eval_step)
