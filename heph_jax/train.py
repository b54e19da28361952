"""Entry point: python -m heph_jax.train --config configs/X.py [--config.a.b=v] --workdir DIR.

Wires the rooms together and runs the loop; re-running the same command on the same workdir
resumes from the newest checkpoint (state, data iterator and step exactly where they were).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow serves only the input pipeline here
import signal
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from heph_jax.errors import ConfigError, HephError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, TensorBoard events.")
flags.DEFINE_string("coordinator_address", "", "Multi-process: host:port of process 0.")
flags.DEFINE_integer("num_processes", 0, "Multi-process: number of processes.")
flags.DEFINE_integer("process_id", -1, "Multi-process: this process's index.")


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


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (or resumes) to config.num_train_steps; returns the final step and eval losses."""
  from heph_jax.parallel import distributed
  distributed.initialize(config.distributed)

  import jax
  import numpy as np
  from heph_jax import config as config_lib
  from heph_jax.data.pipeline import DataPipeline
  from heph_jax.data.tokenizers import load_tokenizer
  from heph_jax.parallel.mesh import make_mesh, rules_tuple
  from heph_jax.training import build, checkpoint, metrics as metrics_lib, state as state_lib

  _resolve_tokenizer(config)
  config_lib.validate(config, jax.device_count(), jax.process_count(), platform=jax.default_backend())
  model_cfg = config_lib.model_config(config)
  primary = jax.process_index() == 0
  log = metrics_lib.MetricsLogger(workdir, config.num_train_steps, enabled=primary)
  tokenizer = load_tokenizer(config.data.tokenizer)
  if tokenizer.vocab_size > model_cfg.vocab_size:
    raise ConfigError(f"config.model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's "
                      f"{tokenizer.vocab_size} ids (config.data.tokenizer={config.data.tokenizer!r})")

  mesh = make_mesh(config.mesh)
  rules = config.logical_axis_rules
  program = build.build_train_step(config, mesh)
  batch_size, tx, schedule = program.batch_size, program.tx, program.schedule
  shardings, in_batch = program.shardings, program.batch_sharding
  log.info(f"heph_jax: {model_cfg.num_params() / 1e6:.2f}M params, mesh {dict(mesh.shape)}, "
           f"{jax.process_count()} process(es), batch {batch_size} x {config.seq_len} tokens")

  pipeline = DataPipeline(config, tokenizer, workdir, jax.process_index(), jax.process_count(),
                          log=log.info)
  train_iter = pipeline.train_iterator(batch_size)
  eval_sets = pipeline.eval_batches(batch_size, config.eval_batches) if config.eval_batches else {}

  def to_global(local):
    # Rows [B/P] of this process, or (data.process_sharding="rows") the whole global batch [B], of
    # which each process's devices take their rows.
    return {k: jax.make_array_from_process_local_data(in_batch, v, (batch_size,) + v.shape[1:])
            for k, v in local.items()}

  with jax.set_mesh(mesh):
    import flax.linen as nn
    with nn.logical_axis_rules(rules_tuple(rules)):
      train_step, eval_step = program.train_step, program.eval_step

      manager = checkpoint.make_manager(workdir, config.keep_checkpoints, config.async_checkpointing)
      start = manager.latest_step()
      if start is not None:
        abstract = state_lib.abstract_state(model_cfg, tx, shardings)
        state = checkpoint.restore(manager, start, abstract, train_iter)
        log.info(f"resumed from {checkpoint.checkpoint_dir(workdir)}/{start}")
      else:
        start = 0
        params = _init_params(config, model_cfg, shardings["params"]) if config.init_from else None
        state = state_lib.create_state(model_cfg, tx, jax.random.PRNGKey(config.seed), shardings, params)

      def run_eval():
        out = {}
        for task, batches in eval_sets.items():
          sums = [eval_step(state["params"], to_global(b)) for b in batches]
          total, count = (float(sum(np.asarray(s[i]) for s in sums)) for i in (0, 1))
          out[f"eval_loss/{task}"] = total / max(count, 1.0)
        return out

      from heph_jax.evaluate.in_loop import FunctionCallingEval
      fc_eval = FunctionCallingEval(config, model_cfg, tokenizer, workdir, log, in_batch)
      preemption = _Preemption()
      flops = model_cfg.flops_per_token(config.seq_len)
      tokens_per_step = batch_size * config.seq_len
      throughput = metrics_lib.Throughput()
      step, eval_losses, t_start = start, {}, time.perf_counter()
      while step < config.num_train_steps:
        state, step_metrics = train_step(state, to_global(next(train_iter)))
        step += 1
        throughput.add(tokens_per_step)
        last = step == config.num_train_steps
        if step % config.log_every_steps == 0 or last:
          values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
          rate, step_time = throughput.report()
          values.update(learning_rate=float(schedule(step - 1)), tokens_per_second=rate,
                        tflops_per_device=rate * flops / jax.device_count() / 1e12)
          values.pop("tokens", None)
          log.write(step, values, eta_seconds=step_time * (config.num_train_steps - step))
        if (config.eval_every_steps and step % config.eval_every_steps == 0) or last:
          if eval_sets:
            eval_losses = run_eval()
            log.write(step, eval_losses)
        fc_eval.maybe_run(step, state["params"], last)
        if config.hf_export_every_steps and (step % config.hf_export_every_steps == 0 or last):
          from heph_jax.export import hf
          hf.save(model_cfg, state["params"], os.path.join(workdir, "hf", f"step_{step}"), tokenizer=tokenizer)
        stop = _any_process(preemption.requested)
        if (config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0) or last or stop:
          checkpoint.save(manager, step, state, train_iter, config, force=True)
        if stop:
          log.info(f"SIGTERM: checkpoint for step {step} written; exiting cleanly")
          break
      manager.wait_until_finished()
      manager.close()
  log.info(f"done: step {step} in {time.perf_counter() - t_start:.1f}s")
  log.close()
  return {"step": step, "eval_loss": {k.split("/", 1)[1]: v for k, v in eval_losses.items()},
          "params": model_cfg.num_params(), "preempted": step < config.num_train_steps}


def _any_process(flag: bool) -> bool:
  import jax
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  import numpy as np
  return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # library INFO lines (Orbax) would drown the progress line
  from heph_jax.parallel.distributed import is_tpu_vm
  if not is_tpu_vm():  # libtpu (test extra) probes for a TPU pod on any machine: keep it quiet
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  config = FLAGS.config
  if config is None or not FLAGS.workdir:
    raise app.UsageError("both --config and --workdir are required")
  with config.unlocked():
    if FLAGS.coordinator_address:
      config.distributed.coordinator_address = FLAGS.coordinator_address
    if FLAGS.num_processes:
      config.distributed.num_processes = FLAGS.num_processes
    if FLAGS.process_id >= 0:
      config.distributed.process_id = FLAGS.process_id
  from heph_jax.parallel.distributed import EXIT_CODE_INIT_TIMEOUT, DistributedInitError
  try:
    train_and_evaluate(config, FLAGS.workdir)
  except ConfigError as e:
    print(f"heph_jax.train: configuration error: {e}", file=sys.stderr)
    sys.exit(2)
  except DistributedInitError as e:  # the peers never formed one system (not a config mistake)
    print(f"heph_jax.train: {e}", file=sys.stderr)
    sys.exit(EXIT_CODE_INIT_TIMEOUT)
  except HephError as e:  # bad input data, tokenizer, checkpoint: named in the message
    print(f"heph_jax.train: {e}", file=sys.stderr)
    sys.exit(2)


def cli():
  app.run(main)


if __name__ == "__main__":
  cli()
