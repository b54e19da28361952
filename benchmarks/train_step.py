"""Train-step throughput on CPU: heph_jax's real step vs a dense-matmul peak and transformers/torch.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/train_step.py [--config configs/bench_50m.py]
        [--config.model.remat_policy=full ...] [--steps 5] [--warmup 2] [--torch=false]

Prints one JSON line (keys in benchmarks/README.md). The heph_jax step is built exactly as
heph_jax/train.py builds it (make_optimizer, state_shardings, create_state, jit with shardings and
donation on the config's mesh, here 1 CPU device). Timing runs in rounds - one heph_jax step,
three matmuls, one torch step per round - so that load from other processes on a shared machine
hits all three alike; each figure is the median over rounds.
"""
from __future__ import annotations

import os
import sys

# glibc malloc hands each large buffer back to the kernel when freed, so the next call page-faults
# it in afresh (~0.1 s per 256 MB, counted as system time). Keeping freed memory in one heap for
# reuse keeps the short peak matmul free of that (its measured peak is ~5-10 % higher, so
# fraction_of_peak is the more conservative); the original heph_jax step also ran ~10 % faster,
# today's heph_jax and torch steps time the same either way. These are read at process start, so
# the script re-executes itself once with them set; HEPH_BENCH_MALLOC=default keeps glibc's.
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "2147483647", "MALLOC_ARENA_MAX": "1"}
if __name__ == "__main__" and os.environ.get("HEPH_BENCH_MALLOC") != "default" and any(
    os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
  os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})

# Before jax is imported: the real CPU cores as one device (tests/conftest.py simulates 8 devices,
# which splits the same threads 8 ways). No XLA:CPU flag measured faster than the defaults
# (benchmarks/README.md); flags set by the caller are kept.
import bench_env  # noqa: E402  (after the re-exec above, before jax)

bench_env.real_devices()
os.environ["JAX_PLATFORMS"] = "cpu"  # a CPU benchmark, also on a TPU VM

import json
import statistics
import time

from absl import app, flags
from ml_collections import config_flags

from synthetic import synthetic_batch

_REPO = bench_env.REPO

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", os.path.join(_REPO, "configs", "bench_50m.py"),
                                "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_integer("steps", 5, "Timed rounds (each: one heph_jax step, 3 matmuls, one torch step).")
flags.DEFINE_integer("warmup", 2, "Untimed steps of each kind first (the first also compiles).")
flags.DEFINE_integer("matmul_size", 2048, "n of the n x n x n matmul that measures the peak.")
flags.DEFINE_bool("torch", True, "Also time transformers.LlamaForCausalLM + torch AdamW.")
flags.DEFINE_bool("allow_loaded", False, "Measure even when the machine is busy (the line says idle: false).")


def build_heph_step(config):
  """The jitted train step exactly as heph_jax/train.py builds it, on one synthetic batch.

  Returns (run_one_step, model_cfg, batch_size, host_batch); run_one_step() -> loss.
  """
  import flax.linen as nn
  import jax
  from heph_jax import config as config_lib
  from heph_jax.parallel.mesh import batch_sharding, make_mesh, rules_tuple
  from heph_jax.training import optimizer, state as state_lib, step as step_lib

  model_cfg = config_lib.model_config(config)
  mesh = make_mesh(config.mesh)
  rules = config.logical_axis_rules
  batch_size = config_lib.global_batch_size(config, jax.device_count())
  tx, _ = optimizer.make_optimizer(config.optimizer, config.num_train_steps)
  shardings = state_lib.state_shardings(model_cfg, tx, mesh, rules)
  in_batch = batch_sharding(mesh, rules)
  host_batch = synthetic_batch(batch_size, config.seq_len, model_cfg.vocab_size, config.seed)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules_tuple(rules)):
    train_step = jax.jit(step_lib.make_train_step(model_cfg, tx, config.grad_accum_steps,
                                                  config.loss_chunk_size),
                         in_shardings=(shardings, in_batch), out_shardings=(shardings, None),
                         donate_argnums=0)
    state = state_lib.create_state(model_cfg, tx, jax.random.PRNGKey(config.seed), shardings)
  batch = {k: jax.device_put(v, in_batch) for k, v in host_batch.items()}
  holder = {"state": state}

  def run_one_step():
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules_tuple(rules)):
      holder["state"], metrics = train_step(holder["state"], batch)
    jax.block_until_ready((holder["state"], metrics))
    return float(metrics["loss"])

  return run_one_step, model_cfg, batch_size, host_batch


def build_matmul(n: int, dtype: str):
  import jax
  import jax.numpy as jnp
  keys = jax.random.split(jax.random.PRNGKey(0))
  a, b = (jax.random.normal(k, (n, n), jnp.float32).astype(dtype) for k in keys)
  matmul = jax.jit(lambda a, b: a @ b)

  def run():
    matmul(a, b).block_until_ready()
  return run, 2.0 * n ** 3


def build_torch_step(config, model_cfg, host_batch, threads: int):
  """One forward + backward + AdamW step of transformers.LlamaForCausalLM of the same shape."""
  try:
    import torch
    import transformers
  except ImportError as e:
    raise SystemExit(f"benchmarks/train_step.py: the transformers baseline needs torch and "
                     f"transformers ({e}); install them or pass --torch=false")
  torch.set_num_threads(threads)
  torch.manual_seed(config.seed)
  hf_cfg = transformers.LlamaConfig(
      vocab_size=model_cfg.vocab_size, hidden_size=model_cfg.hidden_size,
      intermediate_size=model_cfg.intermediate_size, num_hidden_layers=model_cfg.num_hidden_layers,
      num_attention_heads=model_cfg.num_attention_heads,
      num_key_value_heads=model_cfg.num_key_value_heads, head_dim=model_cfg.head_dim,
      max_position_embeddings=model_cfg.max_position_embeddings, rms_norm_eps=model_cfg.rms_norm_eps,
      rope_theta=model_cfg.rope_theta, tie_word_embeddings=model_cfg.tie_word_embeddings,
      attn_implementation="sdpa")
  model = transformers.LlamaForCausalLM(hf_cfg).train()
  opt = config.optimizer
  # fused=True: what transformers.Trainer uses by default with torch >= 2.8 (adamw_torch_fused).
  adamw = torch.optim.AdamW(model.parameters(), lr=opt.learning_rate, betas=(opt.b1, opt.b2),
                            eps=opt.eps, weight_decay=opt.weight_decay, fused=True)
  tokens = torch.from_numpy(host_batch["tokens"]).long()
  autocast = model_cfg.dtype != "float32"
  dtype = getattr(torch, model_cfg.dtype)

  def run_one_step():
    with torch.autocast("cpu", dtype=dtype, enabled=autocast):
      loss = model(input_ids=tokens, labels=tokens).loss
    loss.backward()
    if opt.grad_clip_norm > 0:
      torch.nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip_norm)
    adamw.step()
    adamw.zero_grad(set_to_none=True)
    return float(loss.detach())

  return run_one_step, torch.__version__, transformers.__version__


def _timed(fn) -> tuple[float, float]:
  """(wall seconds, CPU seconds of this process's threads) of one call."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def run_benchmark(config, steps: int, warmup: int, matmul_size: int, with_torch: bool) -> dict:
  import jax
  import numpy as np
  heph_step, model_cfg, batch_size, host_batch = build_heph_step(config)
  matmul, matmul_flops = build_matmul(matmul_size, model_cfg.dtype)
  threads = len(os.sched_getaffinity(0))
  torch_step = None
  if with_torch:
    torch_step, torch_version, transformers_version = build_torch_step(
        config, model_cfg, host_batch, threads)

  for _ in range(warmup):
    loss = heph_step()
    matmul()
    if torch_step:
      torch_step()
  if not np.isfinite(loss):
    raise RuntimeError(f"heph_jax step produced a non-finite loss {loss}")
  times = {"heph": [], "matmul": [], "torch": []}  # (wall, cpu) seconds per round
  for _ in range(steps):
    times["heph"].append(_timed(heph_step))
    # The matmul is short (~0.1 s): several per round keep its median clear of load spikes.
    times["matmul"].extend(_timed(matmul) for _ in range(3))
    if torch_step:
      times["torch"].append(_timed(torch_step))
  wall = {k: statistics.median(t[0] for t in v) for k, v in times.items() if v}
  cpu = {k: statistics.median(t[1] for t in v) for k, v in times.items() if v}
  tokens = batch_size * config.seq_len
  flops_per_token = model_cfg.flops_per_token(config.seq_len)
  achieved = flops_per_token * tokens / wall["heph"] / 1e12
  peak = matmul_flops / wall["matmul"] / 1e12
  result = {
      "tokens_per_second": tokens / wall["heph"],
      "step_seconds": wall["heph"],
      "achieved_tflops": achieved,
      "matmul_peak_tflops": peak,
      "fraction_of_peak": achieved / peak,
      "transformers_step_seconds": None,
      "speedup_vs_transformers": None,
      # The same ratios in CPU seconds of this process: steadier than wall time when other
      # processes compete for the cores (see benchmarks/README.md).
      "fraction_of_peak_cpu_time": (flops_per_token * tokens / cpu["heph"]) / (matmul_flops / cpu["matmul"]),
      "speedup_vs_transformers_cpu_time": None,
      "params": model_cfg.num_params(),
      "flops_per_token": flops_per_token,
      "batch": batch_size, "seq": config.seq_len, "grad_accum_steps": config.grad_accum_steps,
      "layers": model_cfg.num_hidden_layers, "hidden": model_cfg.hidden_size,
      "vocab": model_cfg.vocab_size, "dtype": model_cfg.dtype, "param_dtype": model_cfg.param_dtype,
      "remat": model_cfg.remat_policy, "scan_layers": model_cfg.scan_layers,
      "attention_impl": model_cfg.attention_impl, "matmul_size": matmul_size,
      "devices": jax.device_count(), "cpu_threads": threads,
      "xla_flags": os.environ.get("XLA_FLAGS", ""), "jax": jax.__version__, "rounds": steps,
      "malloc_env": {k: os.environ[k] for k in MALLOC_ENV if k in os.environ},
      "step_seconds_all": [round(t[0], 3) for t in times["heph"]],
      "step_cpu_seconds_all": [round(t[1], 3) for t in times["heph"]],
      "matmul_seconds_all": [round(t[0], 4) for t in times["matmul"]],
      "load_average": os.getloadavg()[0],
      "step_seconds_spread": bench_env.spread(t[0] for t in times["heph"]),
  }
  if torch_step:
    result.update(transformers_step_seconds=wall["torch"],
                  speedup_vs_transformers=wall["torch"] / wall["heph"],
                  speedup_vs_transformers_cpu_time=cpu["torch"] / cpu["heph"],
                  torch=torch_version, transformers=transformers_version,
                  transformers_step_seconds_all=[round(t[0], 3) for t in times["torch"]],
                  transformers_step_seconds_spread=bench_env.spread(t[0] for t in times["torch"]),
                  transformers_step_cpu_seconds_all=[round(t[1], 3) for t in times["torch"]])
  return result


def main(argv):
  del argv
  from heph_jax.errors import ConfigError
  if FLAGS.steps < 1 or FLAGS.warmup < 1:
    raise app.UsageError(f"--steps ({FLAGS.steps}) and --warmup ({FLAGS.warmup}) must be >= 1")
  load = bench_env.machine_load()
  bench_env.refuse_if_loaded(load, FLAGS.allow_loaded, "benchmarks/train_step.py")
  try:
    result = {**run_benchmark(FLAGS.config, FLAGS.steps, FLAGS.warmup, FLAGS.matmul_size, FLAGS.torch),
              "load_at_start": load}
  except ConfigError as e:
    print(f"benchmarks/train_step.py: configuration error: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  app.run(main)
