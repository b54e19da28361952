"""Orbax checkpoints under WORKDIR/checkpoints: train state + data-iterator state + config.

Each step directory holds three items: `state` (sharded arrays, async), `data` (each process's
iterator state, written synchronously at save time so it matches the step exactly) and `config`
(JSON). Orbax writes into a temporary folder and renames it on commit, so a run killed at any moment
leaves either a complete step or nothing; the next run resumes from the newest complete step.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath


# ---- data-iterator item ----------------------------------------------------------------------
class DataIteratorHandler(ocp.CheckpointHandler):
  """Saves `iterator.save(dir)` per process (each host reads its own shard of the data)."""

  def save(self, directory: epath.Path, args: "DataIteratorSave"):
    args.iterator.save(os.fspath(directory / f"process_{jax.process_index()}"))

  def restore(self, directory: epath.Path, args: "DataIteratorRestore"):
    path = directory / f"process_{jax.process_index()}"
    if not path.exists() and getattr(args.iterator, "same_on_every_process", False):
      path = directory / "process_0"  # every host read the same stream: any host's state will do
    if not path.exists():
      raise FileNotFoundError(f"{directory} has no data-iterator state for process {jax.process_index()}: "
                              "was this checkpoint written by a different number of processes?")
    args.iterator.restore(os.fspath(path))
    return args.iterator


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
  iterator: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
  iterator: Any


# ---- manager ---------------------------------------------------------------------------------
def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir) if "://" not in workdir else workdir, "checkpoints")


def make_manager(workdir: str, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep or None, enable_async_checkpointing=async_save, create=True,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(
      checkpoint_dir(workdir), options=options, item_names=("state", "data", "config"),
      item_handlers={"state": ocp.StandardCheckpointHandler(), "data": DataIteratorHandler(),
                     "config": ocp.JsonCheckpointHandler()})


def save(manager, step: int, state, iterator, config: ml_collections.ConfigDict, force=False) -> bool:
  args = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(config.to_dict())}
  if iterator is not None:
    args["data"] = DataIteratorSave(iterator)
  return manager.save(step, args=ocp.args.Composite(**args), force=force)


def restore(manager, step: int, abstract_state, iterator=None):
  args = {"state": ocp.args.StandardRestore(abstract_state)}
  if iterator is not None:
    args["data"] = DataIteratorRestore(iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**args))
  return restored["state"]


def _resolve_step_dir(path: str) -> tuple[str, int | None]:
  """'WORKDIR', 'WORKDIR@STEP' or a step directory -> (checkpoints dir, step or None for newest).

  epath, not os.path: a workdir may be on gs://.
  """
  step = None
  if "@" in path.rstrip("/").rsplit("/", 1)[-1]:
    path, step_text = path.rsplit("@", 1)
    step = int(step_text)
  root = epath.Path(path if "://" in path else os.path.abspath(path))  # Orbax wants absolute paths
  if (root / "checkpoints").is_dir():
    return str(root / "checkpoints"), step
  if root.name.isdigit():
    return str(root.parent), int(root.name)
  return str(root), step


def restore_params(workdir: str, step: int | None = None, shardings=None):
  """(config, model_config, params, step) of a run's checkpoint (newest unless `step`).

  Restores the params item only; optimizer state stays on disk. `workdir` may also be
  'WORKDIR@STEP' or a step directory. With `shardings` (pytree of NamedSharding) params land sharded.
  """
  from heph_jax.config import model_config as make_model_config
  from heph_jax.model import llama
  directory, at_step = _resolve_step_dir(workdir)
  step = step if step is not None else at_step
  if not epath.Path(directory).is_dir():
    raise FileNotFoundError(f"no heph_jax checkpoints at {workdir!r} (expected {directory})")
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True),
      item_names=("state", "config"),
      # PyTree handler: it reads StandardSave output and accepts the partial PyTreeRestore below.
      item_handlers={"state": ocp.PyTreeCheckpointHandler(), "config": ocp.JsonCheckpointHandler()})
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f"{directory} holds no complete checkpoint")
  step = max(steps) if step is None else step
  if step not in steps:
    raise FileNotFoundError(f"{directory} has no checkpoint for step {step}; it has {sorted(steps)}")
  config_dict = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
  config = ml_collections.ConfigDict(config_dict)
  model_cfg = make_model_config(config)
  abstract_params = jax.eval_shape(lambda: llama.init(model_cfg, jax.random.PRNGKey(0)))
  if shardings is None:
    replicated = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: replicated, abstract_params)
  target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        abstract_params, shardings)
  # Partial restore: only the params subtree of the saved {step, params, opt_state}.
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(item={"params": target},
                                   restore_args=ocp.checkpoint_utils.construct_restore_args({"params": target}),
                                   partial_restore=True)))
  manager.close()
  return config, model_cfg, restored["state"]["params"], step
