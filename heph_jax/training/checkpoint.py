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

from heph_jax.errors import HephError


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
  try:
    return manager.save(step, args=ocp.args.Composite(**args), force=force)
  except OSError as e:  # disk full, read-only or vanished workdir: Orbax never committed the step
    raise CheckpointError(f"cannot write checkpoint step {step} under {manager.directory}: "
                          f"{e.strerror or e} ({e.filename or 'a file of the step'}); the earlier "
                          f"steps {sorted(manager.all_steps())} are intact") from e


def wait(manager) -> None:
  """Waits for an async save; an I/O failure there is reported as save() reports it."""
  try:
    manager.wait_until_finished()
  except OSError as e:
    raise CheckpointError(f"cannot finish writing a checkpoint under {manager.directory}: "
                          f"{e.strerror or e} ({e.filename})") from e


class CheckpointError(HephError, RuntimeError):
  """No checkpoint of the run restores; the message names each step tried and why."""


def restore(manager, step: int, abstract_state, iterator=None):
  # The config item is read too: a garbled one marks the step as damaged like a bad array file.
  args = {"state": ocp.args.StandardRestore(abstract_state), "config": ocp.args.JsonRestore()}
  if iterator is not None:
    args["data"] = DataIteratorRestore(iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**args))
  return restored["state"]


def _reason(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def set_aside(directory: str, step: int, reason: str) -> str:
  """Moves a damaged step out of the manager's sight (never deleted): checkpoints/corrupt/<step>-N,
  with the reason written beside it. Process 0 moves; every process waits for it."""
  source = epath.Path(directory) / str(step)
  n = 0
  while (target := epath.Path(directory) / "corrupt" / f"{step}-{n}").exists():
    n += 1
  if jax.process_index() == 0:
    target.parent.mkdir(parents=True, exist_ok=True)
    source.rename(target)
    (target.parent / f"{step}-{n}.reason.txt").write_text(reason + "\n")
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"heph_jax set aside step {step}")
  return str(target)


def restore_newest_good(manager, abstract_state, iterator, say) -> tuple[Any, int | None]:
  """(state, step) of the newest step that restores, setting aside each newer one that does not
  (a truncated array file, a missing item, a garbled config after a storage fault); (None, None)
  when the run has no checkpoint; CheckpointError when it has some and none restores."""
  tried = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return restore(manager, step, abstract_state, iterator), step
    except Exception as e:  # pylint: disable=broad-except  (Orbax/TensorStore raise many types)
      reason = _reason(e)
      aside = set_aside(str(manager.directory), step, reason)
      tried.append(f"step {step}: {reason}")
      say(f"checkpoint step {step} does not restore ({reason}); set aside as {aside}; "
          "trying the previous step")
      manager.reload()
  if tried:
    raise CheckpointError(f"no checkpoint in {manager.directory} restores (damaged steps were moved "
                          "to checkpoints/corrupt/): " + "; ".join(tried))
  return None, None


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
