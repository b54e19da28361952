"""Train-step MFU on whatever accelerator JAX finds (TPU, GPU; CPU works, for trying the script).

    .venv/bin/python benchmarks/accelerator_step.py [--config configs/bench_1b.py]
        [--config.model.attention_impl=pallas ...] [--steps 10] [--warmup 2]

Builds the step exactly as heph_jax/train.py does (training/build.py, the config's mesh over all
local devices) on a synthetic packed batch, times --steps steps after --warmup, and prints one JSON
line: step time (median and range), tokens/s, model FLOPs per step (ModelConfig.flops_per_token),
MFU against the devices' published dense bf16 peak, and, measured in the same process, a large
bf16 matmul's TFLOP/s (the peak this device really reaches) with the step's fraction of it.
"""
from __future__ import annotations

import os

import bench_env

bench_env.real_devices()

import json
import time

from absl import app, flags
from ml_collections import config_flags

from synthetic import synthetic_batch

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", os.path.join(bench_env.REPO, "configs", "bench_1b.py"),
                                "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_integer("steps", 10, "Timed steps.")
flags.DEFINE_integer("warmup", 2, "Untimed steps first (the first compiles).")
flags.DEFINE_integer("matmul_size", 8192, "n of the bf16 n x n x n matmul that measures the peak.")
flags.DEFINE_float("peak_tflops", 0.0, "Per-device dense bf16 peak; 0 = from the device kind.")

# Published dense bf16 peaks per device (TFLOP/s): NVIDIA's datasheets (SXM), Google Cloud's.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "TPU v4": 275.0, "TPU v5 lite": 197.0,
               "TPU v5": 459.0, "TPU v6 lite": 918.0}


def published_peak(device_kind: str) -> float:
  matches = [name for name in PEAK_TFLOPS if name in device_kind]
  # The longest name that matches ("TPU v5 lite" before "TPU v5").
  return PEAK_TFLOPS[max(matches, key=len)] if matches else 0.0


def _time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def matmul_tflops(n: int) -> float:
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
  matmul = jax.jit(lambda a, b: a @ b)
  jax.block_until_ready(matmul(a, a))
  seconds = min(_time(lambda: jax.block_until_ready(matmul(a, a)), 5))
  return 2 * n ** 3 / seconds / 1e12


def main(argv):
  del argv
  import flax.linen as nn
  import jax
  from heph_jax import config as config_lib
  from heph_jax.parallel.mesh import make_mesh, rules_tuple
  from heph_jax.training import build, state as state_lib

  config = FLAGS.config
  config_lib.validate(config, jax.device_count(), jax.process_count(), check_data=False,
                      platform=jax.default_backend())
  config_lib.build_kernels(config)
  mesh = make_mesh(config.mesh)
  program = build.build_train_step(config, mesh)
  model_cfg, batch_size = program.model_cfg, program.batch_size
  host = synthetic_batch(batch_size, config.seq_len, model_cfg.vocab_size, config.seed)
  rules = rules_tuple(config.logical_axis_rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = state_lib.create_state(model_cfg, program.tx, jax.random.PRNGKey(config.seed),
                                   program.shardings)
    batch = {k: jax.device_put(v, program.batch_sharding) for k, v in host.items()}
    holder = {"state": state}

    def step():
      holder["state"], metrics = program.train_step(holder["state"], batch)
      jax.block_until_ready(metrics)
      return float(metrics["loss"])

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(max(FLAGS.warmup - 1, 0)):
      step()
    times = _time(step, FLAGS.steps)
  device = jax.devices()[0]
  peak = FLAGS.peak_tflops or published_peak(device.device_kind)
  tokens = batch_size * config.seq_len
  flops = model_cfg.flops_per_token(config.seq_len) * tokens
  spread = bench_env.spread(times)
  achieved = flops / spread["median"] / jax.device_count() / 1e12
  measured_peak = matmul_tflops(FLAGS.matmul_size)
  line = {
      "benchmark": "accelerator_step", "platform": jax.default_backend(),
      "device_kind": device.device_kind, "devices": jax.device_count(),
      "params": model_cfg.num_params(), "seq_len": config.seq_len, "global_batch_size": batch_size,
      "attention_impl": model_cfg.attention_impl,
      "attention_block_sizes": list(model_cfg.attention_block_sizes),
      "remat_policy": model_cfg.remat_policy, "first_step_seconds": round(first, 2),
      "step_seconds": spread, "tokens_per_second": tokens / spread["median"],
      "model_flops_per_step": flops, "achieved_tflops_per_device": round(achieved, 2),
      "published_peak_tflops": peak or None, "mfu": round(achieved / peak, 4) if peak else None,
      "matmul_tflops": round(measured_peak, 2),
      "fraction_of_matmul_peak": round(achieved / measured_peak, 4),
      "load": bench_env.machine_load(),
  }
  print(json.dumps(line), flush=True)


if __name__ == "__main__":
  app.run(main)
