"""Entry point: python -m heph_jax.train --config configs/X.py [--config.a.b=v] --workdir DIR.

Wires the rooms together and runs the loop; re-running the same command on the same workdir
resumes from the newest checkpoint (state, data iterator and step exactly where they were).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow serves only the input pipeline here
import dataclasses
import signal
import sys
import time
from typing import Any, Callable

from absl import flags, logging
from ml_collections import config_flags

from heph_jax.errors import ConfigError



def define_flags(values, argv):
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True,
                                  flag_values=values, sys_argv=argv)
  flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, TensorBoard events.",
                      flag_values=values)
  flags.DEFINE_string("coordinator_address", "", "Multi-process: host:port of process 0.",
                      flag_values=values)
  flags.DEFINE_integer("num_processes", 0, "Multi-process: number of processes.", flag_values=values)
  flags.DEFINE_integer("process_id", -1, "Multi-process: this process's index.", flag_values=values)
  for name in ("config", "workdir"):
    flags.mark_flag_as_required(name, flag_values=values)


class _Preemption:
  """SIGTERM (TPU preemption, `kill`) asks the loop to checkpoint and exit cleanly."""

  def __init__(self):
    self.requested = False
    signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    self.requested = True


def _resolve_tokenizer(config):
  if not config.data.tokenizer:
    if str(config.init_from).startswith("hf:"):
      config.data.tokenizer = "hf:" + config.init_from[3:]
    else:
      raise ConfigError("config.data.tokenizer: not set; use 'sp:PATH' or 'hf:DIR' "
                        "(an init_from='hf:DIR' run uses that directory's tokenizer by default)")


def _init_params(config, model_cfg, param_shardings):
  source = str(config.init_from)
  if source.startswith("hf:"):
    from heph_jax.export import hf
    return hf.load_params_for(model_cfg, source[3:], param_shardings, seq_len=config.seq_len)
  from heph_jax.training.checkpoint import restore_params
  _, saved_cfg, params, _ = restore_params(source[5:], shardings=param_shardings)
  for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings"):
    if getattr(saved_cfg, key) != getattr(model_cfg, key):
      raise ConfigError(f"config.model.{key}={getattr(model_cfg, key)!r} but the checkpoint in "
                        f"init_from={source!r} has {getattr(saved_cfg, key)!r}")
  return params


@dataclasses.dataclass
class _Run:
  """What the loop needs, built once by `_setup`."""
  config: Any
  workdir: str
  model_cfg: Any
  tokenizer: Any
  mesh: Any
  program: Any
  train_iter: Any
  eval_sets: dict
  tasks: list  # task names in task-id order
  writer: Any
  say: Callable[[str], None]  # a line on the console, process 0 only

  def to_global(self, local: dict) -> dict:
    """Rows [B/P] of this process, or (data.process_sharding="rows") the whole global batch [B],
    of which each process's devices take their rows."""
    import jax
    batch_size = self.program.batch_size
    return {k: jax.make_array_from_process_local_data(self.program.batch_sharding, v,
                                                      (batch_size,) + v.shape[1:])
            for k, v in local.items()}


def _setup(config, workdir: str) -> _Run:
  import jax
  from heph_jax import config as config_lib
  from heph_jax.data.pipeline import DataPipeline
  from heph_jax.data.tokenizers import check_vocab, load_tokenizer
  from heph_jax.parallel.mesh import make_mesh
  from heph_jax.training import build, metrics as metrics_lib

  _resolve_tokenizer(config)
  config_lib.validate(config, jax.device_count(), jax.process_count(), platform=jax.default_backend())
  config_lib.build_kernels(config)
  model_cfg = config_lib.model_config(config)
  primary = jax.process_index() == 0
  say = (lambda message: print(message, flush=True)) if primary else (lambda message: None)
  tokenizer = load_tokenizer(config.data.tokenizer)
  check_vocab(tokenizer, model_cfg.vocab_size, "config.model.vocab_size", "config.data.tokenizer")
  mesh = make_mesh(config.mesh)
  program = build.build_train_step(config, mesh)
  batch_size = program.batch_size
  say(f"heph_jax: {model_cfg.num_params() / 1e6:.2f}M params, mesh {dict(mesh.shape)}, "
      f"{jax.process_count()} process(es), batch {batch_size} x {config.seq_len} tokens")
  pipeline = DataPipeline(config, tokenizer, workdir, jax.process_index(), jax.process_count(), log=say)
  eval_sets = pipeline.eval_batches(batch_size, config.eval_batches) if config.eval_batches else {}
  writer = metrics_lib.create_writer(workdir, config.num_train_steps, batch_size * config.seq_len,
                                     enabled=primary)
  return _Run(config, workdir, model_cfg, tokenizer, mesh, program,
              pipeline.train_iterator(batch_size), eval_sets, pipeline.tasks, writer, say)


def _restore_or_init(run: _Run, manager) -> tuple[dict, int]:
  """The newest checkpoint's state and step (data iterator restored in place), else a fresh one."""
  import jax
  from heph_jax.training import checkpoint, state as state_lib
  config, shardings = run.config, run.program.shardings
  if manager.latest_step() is not None:
    abstract = state_lib.abstract_state(run.model_cfg, run.program.tx, shardings)
    state, start = checkpoint.restore_newest_good(manager, abstract, run.train_iter, run.say)
    run.say(f"resumed from {checkpoint.checkpoint_dir(run.workdir)}/{start}")
    return state, start
  params = _init_params(config, run.model_cfg, shardings["params"]) if config.init_from else None
  state = state_lib.create_state(run.model_cfg, run.program.tx, jax.random.PRNGKey(config.seed),
                                 shardings, params)
  return state, 0


def _evaluate(run: _Run, params) -> dict:
  """Mean eval loss per task over the fixed eval batches: {"eval_loss/<task>": loss}."""
  import numpy as np
  out = {}
  for task, batches in run.eval_sets.items():
    sums = [run.program.eval_step(params, run.to_global(b)) for b in batches]
    total, count = (float(sum(np.asarray(s[i]) for s in sums)) for i in (0, 1))
    out[f"eval_loss/{task}"] = total / max(count, 1.0)
  return out


def _every(step: int, every: int, last: bool) -> bool:
  return bool(every) and step % every == 0 or last


def _loop(run: _Run, manager, state: dict, start: int) -> tuple[int, dict]:
  """Steps from `start` to config.num_train_steps (or a SIGTERM); returns (step, eval losses)."""
  import jax
  from heph_jax.training import checkpoint, guard as guard_lib, metrics as metrics_lib
  config, schedule = run.config, run.program.schedule
  preemption = _Preemption()
  progress = metrics_lib.report_progress(run.writer, config.num_train_steps, config.log_every_steps)
  guard = guard_lib.NonFiniteGuard(config.skip_nonfinite_steps, run.say)
  from heph_jax.evaluate.in_loop import FunctionCallingEval
  fc_eval = FunctionCallingEval(config, run.model_cfg, run.tokenizer, run.workdir, run.writer,
                                run.program.batch_sharding)
  step, eval_losses, unchecked = start, {}, None
  while step < config.num_train_steps:
    local = run.train_iter.next_with_tasks()
    mix = guard_lib.task_mix(local.pop("task_ids"), run.tasks)
    state, step_metrics = run.program.train_step(state, run.to_global(local))
    step += 1
    last = step == config.num_train_steps
    if unchecked:  # the previous step's flag, read now that this step is queued
      guard.check(*unchecked)
    unchecked = (step, step_metrics, mix)
    if step == start + 1:
      jax.block_until_ready(state)  # the clock starts after the first step's compile and run
    if _every(step, config.log_every_steps, last):
      values = {k: float(v) for k, v in jax.device_get(step_metrics).items() if k != "tokens"}
      progress(step)  # after the device_get: steps/s counts finished steps, not dispatched ones
      run.writer.write_scalars(step, {**values, "learning_rate": float(schedule(step - 1))})
    else:
      progress(step)  # clu checks it sees every step; it reports only at log steps
    if _every(step, config.eval_every_steps, last) and run.eval_sets:
      eval_losses = _evaluate(run, state["params"])
      run.writer.write_scalars(step, eval_losses)
    fc_eval.maybe_run(step, state["params"], last)
    if config.hf_export_every_steps and _every(step, config.hf_export_every_steps, last):
      from heph_jax.export import hf
      hf.save(run.model_cfg, state["params"], os.path.join(run.workdir, "hf", f"step_{step}"),
              tokenizer=run.tokenizer)
    stop = _any_process(preemption.requested)
    if _every(step, config.checkpoint_every_steps, last) or stop:
      guard.check(*unchecked)  # never save after a step not yet checked
      unchecked = None
      checkpoint.save(manager, step, state, run.train_iter, config, force=True)
    if stop:
      run.say(f"SIGTERM: checkpoint for step {step} written; exiting cleanly")
      break
  if unchecked:
    guard.check(*unchecked)
  return step, eval_losses


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (or resumes) to config.num_train_steps; returns the final step and eval losses."""
  from heph_jax.parallel import distributed
  distributed.initialize(config.distributed)
  import flax.linen as nn
  import jax
  from heph_jax.parallel.mesh import rules_tuple
  from heph_jax.training import checkpoint

  run = _setup(config, workdir)
  t_start = time.perf_counter()
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(rules_tuple(config.logical_axis_rules)):
    manager = checkpoint.make_manager(workdir, config.keep_checkpoints, config.async_checkpointing)
    state, start = _restore_or_init(run, manager)
    step, eval_losses = _loop(run, manager, state, start)
    checkpoint.wait(manager)
    manager.close()
  run.say(f"done: step {step} in {time.perf_counter() - t_start:.1f}s")
  run.writer.close()
  return {"step": step, "eval_loss": {k.split("/", 1)[1]: v for k, v in eval_losses.items()},
          "params": run.model_cfg.num_params(), "preempted": step < config.num_train_steps}


def _any_process(flag: bool) -> bool:
  import jax
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  import numpy as np
  return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def _run(args, positional) -> None:
  del positional
  logging.set_verbosity(logging.WARNING)  # library INFO lines (Orbax) would drown the progress line
  from heph_jax.parallel.distributed import quiet_libtpu_off_tpu
  quiet_libtpu_off_tpu()
  config = args.config
  with config.unlocked():
    if args.coordinator_address:
      config.distributed.coordinator_address = args.coordinator_address
    if args.num_processes:
      config.distributed.num_processes = args.num_processes
    if args.process_id >= 0:
      config.distributed.process_id = args.process_id
  train_and_evaluate(config, args.workdir)


def main(argv=None) -> int:
  """Exit 2: a configuration or input mistake (named); 3: the pod's processes never formed one
  system (DistributedInitError.exit_code); see heph_jax/cli.py."""
  from heph_jax import cli as cli_lib
  return cli_lib.run("heph_jax.train", define_flags, _run, argv)


def cli():
  sys.exit(main())


if __name__ == "__main__":
  cli()
